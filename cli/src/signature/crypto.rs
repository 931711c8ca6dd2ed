//! The cryptography behind Sigstore verification: a `sigstore-crypto` provider made of the
//! RustCrypto crates berth already signs cosign keys with (`p256`, `sha2`), plus `p384`,
//! `ed25519-dalek` and `rsa` for the other keys a trusted root may hold.
//!
//! Why not the provider `sigstore-crypto` ships: it is `aws-lc-rs`, a C library next to the
//! `ring` that TLS already uses, for the same job (see the workspace `Cargo.toml`). Everything
//! verified here is public (certificates, log keys, signatures), so constant-time concerns
//! of private-key code do not arise; this provider verifies and hashes, and signs nothing.

use std::sync::Once;

use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use rsa::pkcs1::DecodeRsaPublicKey as _;
use sha2::Digest as _;
use sigstore_verify::crypto::{
    CryptoProvider, Error as CryptoError, HashContext, Result as CryptoResult, SigningScheme,
};
use sigstore_verify::types::HashAlgorithm;

/// Largest RSA modulus a trusted root may use (what `sigstore-crypto` itself accepts).
const MAX_RSA_BITS: usize = 8192;

/// The provider berth registers with `sigstore-crypto`.
#[derive(Debug)]
pub struct RustCryptoProvider;

static PROVIDER: RustCryptoProvider = RustCryptoProvider;
static INSTALL: Once = Once::new();

/// Make `sigstore-crypto` use [`RustCryptoProvider`]. Idempotent; called before every
/// verification, because `sigstore-crypto` has no provider of its own without `aws-lc-rs`
/// and would panic on its first hash.
pub fn install() {
    INSTALL.call_once(|| {
        // An error means another provider was installed first (only a test could do that);
        // it then does the work, which is as good.
        let _ = sigstore_verify::crypto::install_default_provider(&PROVIDER);
    });
}

struct Sha<D>(D);

impl<D: sha2::Digest + Send + 'static> HashContext for Sha<D> {
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn finalize(self: Box<Self>) -> Vec<u8> {
        self.0.finalize().to_vec()
    }
}

fn invalid(scheme: SigningScheme) -> CryptoError {
    CryptoError::Verification(format!("{} signature invalid", scheme.name()))
}

fn bad_key(scheme: SigningScheme, detail: impl std::fmt::Display) -> CryptoError {
    CryptoError::InvalidKey(format!("{} public key: {detail}", scheme.name()))
}

fn unsupported_hash(algorithm: HashAlgorithm) -> CryptoError {
    CryptoError::UnsupportedAlgorithm(format!("berth does not compute {algorithm} digests"))
}

fn digest_of(algorithm: HashAlgorithm, data: &[u8]) -> CryptoResult<Vec<u8>> {
    Ok(match algorithm {
        HashAlgorithm::Sha2256 => sha2::Sha256::digest(data).to_vec(),
        HashAlgorithm::Sha2384 => sha2::Sha384::digest(data).to_vec(),
        HashAlgorithm::Sha2512 => sha2::Sha512::digest(data).to_vec(),
        other => return Err(unsupported_hash(other)),
    })
}

fn rsa_key(scheme: SigningScheme, pkcs1: &[u8]) -> CryptoResult<rsa::RsaPublicKey> {
    // `from_pkcs1_der` caps the modulus at 4096 bits; trusted roots may use up to 8192.
    let parsed = rsa::pkcs1::RsaPublicKey::try_from(pkcs1).map_err(|e| bad_key(scheme, e))?;
    let n = rsa::BigUint::from_bytes_be(parsed.modulus.as_bytes());
    let e = rsa::BigUint::from_bytes_be(parsed.public_exponent.as_bytes());
    rsa::RsaPublicKey::new_with_max_size(n, e, MAX_RSA_BITS)
        .or_else(|_| rsa::RsaPublicKey::from_pkcs1_der(pkcs1))
        .map_err(|e| bad_key(scheme, e))
}

/// Verify an ECDSA, RSA or Ed25519 signature over the digest `prehash` of the message
/// (`raw` holds the message itself when there is one; Ed25519 needs it).
fn verify(
    scheme: SigningScheme,
    key: &[u8],
    message: Message<'_>,
    signature: &[u8],
) -> CryptoResult<()> {
    use SigningScheme as S;
    let prehash = |algorithm| match message {
        Message::Raw(data) => digest_of(algorithm, data),
        Message::Prehashed(digest) => Ok(digest.to_vec()),
    };
    let ok = match scheme {
        S::EcdsaP256Sha256 | S::EcdsaP256Sha384 => {
            let key =
                p256::ecdsa::VerifyingKey::from_sec1_bytes(key).map_err(|e| bad_key(scheme, e))?;
            let sig = p256::ecdsa::Signature::from_der(signature).map_err(|_| invalid(scheme))?;
            match (scheme, message) {
                (S::EcdsaP256Sha256, Message::Raw(data)) => key.verify(data, &sig).is_ok(),
                (_, _) => key
                    .verify_prehash(&prehash(hash_of(scheme)?)?, &sig)
                    .is_ok(),
            }
        }
        S::EcdsaP384Sha256 | S::EcdsaP384Sha384 => {
            let key =
                p384::ecdsa::VerifyingKey::from_sec1_bytes(key).map_err(|e| bad_key(scheme, e))?;
            let sig = p384::ecdsa::Signature::from_der(signature).map_err(|_| invalid(scheme))?;
            match (scheme, message) {
                (S::EcdsaP384Sha384, Message::Raw(data)) => key.verify(data, &sig).is_ok(),
                (_, _) => key
                    .verify_prehash(&prehash(hash_of(scheme)?)?, &sig)
                    .is_ok(),
            }
        }
        S::Ed25519 => {
            let Message::Raw(data) = message else {
                return Err(CryptoError::UnsupportedAlgorithm(
                    "Ed25519 signs the whole message; it cannot be verified from a digest".into(),
                ));
            };
            let key: [u8; 32] = key
                .try_into()
                .map_err(|_| bad_key(scheme, "not 32 bytes"))?;
            let key =
                ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|e| bad_key(scheme, e))?;
            let sig =
                ed25519_dalek::Signature::from_slice(signature).map_err(|_| invalid(scheme))?;
            key.verify(data, &sig).is_ok()
        }
        S::RsaPkcs1Sha256 | S::RsaPkcs1Sha384 | S::RsaPkcs1Sha512 => {
            let key = rsa_key(scheme, key)?;
            let algorithm = hash_of(scheme)?;
            let padding = match algorithm {
                HashAlgorithm::Sha2256 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                HashAlgorithm::Sha2384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                HashAlgorithm::Sha2512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
                other => return Err(unsupported_hash(other)),
            };
            key.verify(padding, &prehash(algorithm)?, signature).is_ok()
        }
        S::RsaPssSha256 | S::RsaPssSha384 | S::RsaPssSha512 => {
            let key = rsa_key(scheme, key)?;
            let algorithm = hash_of(scheme)?;
            // The salt is as long as the digest, as ring and aws-lc-rs require.
            let padding = match algorithm {
                HashAlgorithm::Sha2256 => rsa::Pss::new::<sha2::Sha256>(),
                HashAlgorithm::Sha2384 => rsa::Pss::new::<sha2::Sha384>(),
                HashAlgorithm::Sha2512 => rsa::Pss::new::<sha2::Sha512>(),
                other => return Err(unsupported_hash(other)),
            };
            key.verify(padding, &prehash(algorithm)?, signature).is_ok()
        }
        other => {
            return Err(CryptoError::UnsupportedAlgorithm(format!(
                "berth does not verify {} signatures",
                other.name()
            )));
        }
    };
    if ok { Ok(()) } else { Err(invalid(scheme)) }
}

#[derive(Clone, Copy)]
enum Message<'a> {
    Raw(&'a [u8]),
    Prehashed(&'a [u8]),
}

fn hash_of(scheme: SigningScheme) -> CryptoResult<HashAlgorithm> {
    scheme.hash_algorithm().ok_or_else(|| {
        CryptoError::UnsupportedAlgorithm(format!("{} has no digest form", scheme.name()))
    })
}

impl CryptoProvider for RustCryptoProvider {
    fn hash(&self, algorithm: HashAlgorithm) -> CryptoResult<Box<dyn HashContext>> {
        Ok(match algorithm {
            HashAlgorithm::Sha2256 => Box::new(Sha(sha2::Sha256::new())),
            HashAlgorithm::Sha2384 => Box::new(Sha(sha2::Sha384::new())),
            HashAlgorithm::Sha2512 => Box::new(Sha(sha2::Sha512::new())),
            other => return Err(unsupported_hash(other)),
        })
    }

    fn sha256(&self, data: &[u8]) -> [u8; 32] {
        sha2::Sha256::digest(data).into()
    }

    fn sha384(&self, data: &[u8]) -> [u8; 48] {
        sha2::Sha384::digest(data).into()
    }

    fn sha512(&self, data: &[u8]) -> [u8; 64] {
        sha2::Sha512::digest(data).into()
    }

    fn verify_raw(
        &self,
        scheme: SigningScheme,
        spki_pubkey_bytes: &[u8],
        data: &[u8],
        signature: &[u8],
    ) -> CryptoResult<()> {
        verify(scheme, spki_pubkey_bytes, Message::Raw(data), signature)
    }

    fn verify_prehashed(
        &self,
        scheme: SigningScheme,
        spki_pubkey_bytes: &[u8],
        digest: &[u8],
        signature: &[u8],
    ) -> CryptoResult<()> {
        verify(
            scheme,
            spki_pubkey_bytes,
            Message::Prehashed(digest),
            signature,
        )
    }
}
