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
    rsa::RsaPublicKey::new_with_max_size(n, e, MAX_RSA_BITS).map_err(|e| bad_key(scheme, e))
}

/// Verify an ECDSA, RSA or Ed25519 signature over `message`, given whole or as its digest
/// (Ed25519 needs it whole).
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests report failure by panicking
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::signature::hazmat::PrehashSigner as _;

    const MESSAGE: &[u8] = b"berth verifies RSA";
    // `openssl genrsa 2048`; `openssl rsa -RSAPublicKey_out -outform DER` (the key as a
    // certificate's subjectPublicKey holds it); `openssl dgst -sha256 -sign` and
    // `-sha384 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest` over MESSAGE.
    const RSA_PKCS1: &str = "MIIBCgKCAQEAtc8payI0HMRIWqzs9E3afapNCpsQhFLVuuQYME4+XgY0eUROozuwGL08+8FXjA7S3IQA8pEoejY93Ohce5r5EL9vANr6OxcQmUy+xfDM3zbbpzhczxpoGQpL40GehX2KFqktbv/ya60eHYggpGl8Lu3AdFzvSAeX+ml2ebrkGNKOZXJywU1ulbGPEPJOeFHJqPF40y4tg+EnViyWIwzLXeIu/Irk/4hIECiHKWeHiK12709Zdw1MODQFM5vxcwItlaTBqsrS1gMuBmyWtuaAOuQey1611n/y55LicPxj/eD/ZdoflhDmkaAUi2WAqIlYIi/7KfZtvfh9ox/Fa2MwFwIDAQAB";
    const RSA_PKCS1_SHA256_SIG: &str = "gl9/Q0zoHLjlAsoabhC2kbVmFKFO/lnwJXeYA6YQrppYb5MVUSxBme49Gx2CqWCfVAzR+kc+cK2EhBL5Ek9R5hSoqtoKu2NSNq99wUSlLK3FuiHYxBasWjuqJ3iG7NGzJFoir3aNS+YFZPhatKNGTKWzXk+7Wcn+0IvLaGPtdxZZ0kufaxLGbJfSDWrtdW7j8ebnZp153nTePB34vYalEAev9tQzbP4es/1OIrGcGd7r/0CkD1fKkvE5vfAkRqxllqFrfgj4tIiQQ0zud9YDa/N+6UXDb4Gtcl1Fhz5R23hMZlFcFU/GUy5O8+5M6hRahNW2e1gRQ3OT7ThelY1Xfw==";
    const RSA_PSS_SHA384_SIG: &str = "abe0ImeiYgiFfY1mx7LZSRPd5awHvDOSSSGoXrApi1slvJAF++DSZnTLzflGHYrP5ifP29Ehvyo2Oe6D3qGOTyLJY0hymNrcFAmE75VKY9tzC1aobcLPIKFn0sJrrIsKo5O0OwHboF6925hkVGY6Ck5Sh9nXSEeY116QR0jct9qIrti4TNcJPDslO2ntk/FwpLUUxr5GM3AZObykazMpNGbKecgCvSokCFrWk2MCgKPNCkPr4gsCm4ESdVd60C9PoYgQjp9FaIjI/3gtIn+fzmNBMHhm97SkX/Q70LGfns0e4h8BZQTct2c7kBev4V2ddYGHRiOI2YGCTbeFKxqF1Q==";

    fn b64(s: &str) -> Vec<u8> {
        BASE64.decode(s).unwrap()
    }

    /// Good signature verifies, raw and from its digest; a flipped byte of message or
    /// signature does not.
    fn accepts_only_the_signed(scheme: SigningScheme, key: &[u8], sig: &[u8], message: &[u8]) {
        let p = RustCryptoProvider;
        p.verify_raw(scheme, key, message, sig).unwrap();
        let mut other = message.to_vec();
        other[0] ^= 1;
        assert!(
            p.verify_raw(scheme, key, &other, sig).is_err(),
            "{scheme:?} other message"
        );
        let mut bad = sig.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(
            p.verify_raw(scheme, key, message, &bad).is_err(),
            "{scheme:?} bad signature"
        );
        if let Some(algorithm) = scheme.hash_algorithm() {
            let digest = digest_of(algorithm, message).unwrap();
            p.verify_prehashed(scheme, key, &digest, sig).unwrap();
            let wrong = digest_of(algorithm, &other).unwrap();
            assert!(p.verify_prehashed(scheme, key, &wrong, sig).is_err());
        }
    }

    #[test]
    fn ecdsa_p256_and_p384_verify_with_either_digest() {
        let message = b"a Fulcio leaf signs with P-256, its CA with P-384";
        let k256 = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
        let point = k256.verifying_key().to_encoded_point(false);
        let sig: p256::ecdsa::DerSignature = k256.sign(message);
        accepts_only_the_signed(
            SigningScheme::EcdsaP256Sha256,
            point.as_bytes(),
            sig.as_bytes(),
            message,
        );
        let digest = sha2::Sha384::digest(message);
        let sig: p256::ecdsa::Signature = k256.sign_prehash(&digest).unwrap();
        let der = sig.to_der();
        accepts_only_the_signed(
            SigningScheme::EcdsaP256Sha384,
            point.as_bytes(),
            der.as_bytes(),
            message,
        );

        let k384 = p384::ecdsa::SigningKey::from_slice(&[9; 48]).unwrap();
        let point = k384.verifying_key().to_encoded_point(false);
        let sig: p384::ecdsa::DerSignature = k384.sign(message);
        accepts_only_the_signed(
            SigningScheme::EcdsaP384Sha384,
            point.as_bytes(),
            sig.as_bytes(),
            message,
        );
        let digest = sha2::Sha256::digest(message);
        let sig: p384::ecdsa::Signature = k384.sign_prehash(&digest).unwrap();
        let der = sig.to_der();
        accepts_only_the_signed(
            SigningScheme::EcdsaP384Sha256,
            point.as_bytes(),
            der.as_bytes(),
            message,
        );
        // A P-256 key is not a P-384 key.
        let p256_point = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
        let p256_point = p256_point.verifying_key().to_encoded_point(false);
        assert!(
            RustCryptoProvider
                .verify_raw(
                    SigningScheme::EcdsaP384Sha384,
                    p256_point.as_bytes(),
                    message,
                    sig.to_der().as_bytes()
                )
                .is_err()
        );
    }

    #[test]
    fn ed25519_verifies_whole_messages_only() {
        use ed25519_dalek::Signer as _;
        let message = b"a Rekor v2 checkpoint";
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let sig = key.sign(message);
        accepts_only_the_signed(
            SigningScheme::Ed25519,
            key.verifying_key().as_bytes(),
            &sig.to_bytes(),
            message,
        );
        let err = RustCryptoProvider
            .verify_prehashed(
                SigningScheme::Ed25519,
                key.verifying_key().as_bytes(),
                &[0; 64],
                &sig.to_bytes(),
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("cannot be verified from a digest"),
            "{err}"
        );
    }

    #[test]
    fn rsa_pkcs1_and_pss_signatures_made_by_openssl_verify() {
        let key = b64(RSA_PKCS1);
        accepts_only_the_signed(
            SigningScheme::RsaPkcs1Sha256,
            &key,
            &b64(RSA_PKCS1_SHA256_SIG),
            MESSAGE,
        );
        accepts_only_the_signed(
            SigningScheme::RsaPssSha384,
            &key,
            &b64(RSA_PSS_SHA384_SIG),
            MESSAGE,
        );
        // The padding is part of the scheme: a PKCS#1 v1.5 signature is no PSS signature.
        assert!(
            RustCryptoProvider
                .verify_raw(
                    SigningScheme::RsaPssSha256,
                    &key,
                    MESSAGE,
                    &b64(RSA_PKCS1_SHA256_SIG)
                )
                .is_err()
        );
    }

    #[test]
    fn unsupported_schemes_and_garbage_keys_are_errors_not_panics() {
        let p = RustCryptoProvider;
        assert!(matches!(
            p.verify_raw(SigningScheme::MlDsa65, &[0; 1952], b"m", &[0; 3309]),
            Err(CryptoError::UnsupportedAlgorithm(_))
        ));
        for scheme in [
            SigningScheme::EcdsaP256Sha256,
            SigningScheme::Ed25519,
            SigningScheme::RsaPkcs1Sha256,
        ] {
            assert!(
                p.verify_raw(scheme, b"not a key", b"m", b"sig").is_err(),
                "{scheme:?}"
            );
        }
    }

    #[test]
    fn hashes_are_sha2() {
        let p = RustCryptoProvider;
        let mut streamed = p.hash(HashAlgorithm::Sha2384).unwrap();
        streamed.update(b"ab");
        streamed.update(b"c");
        assert_eq!(streamed.finalize(), sha2::Sha384::digest(b"abc").to_vec());
        assert_eq!(
            p.sha256(b"abc").to_vec(),
            sha2::Sha256::digest(b"abc").to_vec()
        );
        assert_eq!(
            p.sha512(b"abc").to_vec(),
            sha2::Sha512::digest(b"abc").to_vec()
        );
    }
}
