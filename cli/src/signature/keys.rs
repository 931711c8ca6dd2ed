//! Cosign-compatible key pairs: ECDSA P-256 signing keys stored in cosign's encrypted
//! private-key file (PEM `ENCRYPTED SIGSTORE PRIVATE KEY`, JSON inside: scrypt KDF +
//! NaCl secretbox around a PKCS#8 key) and PEM public keys (`PUBLIC KEY`, PKIX).
//!
//! The file format is go-securesystemslib's `encrypted` package, which `cosign
//! generate-key-pair` writes; keys made here load in cosign and the other way round.
//!
//! Passwords are taken as bytes; where they come from (`COSIGN_PASSWORD`, a prompt) is the
//! caller's business.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::{Key as BoxKey, Nonce as BoxNonce, XSalsa20Poly1305};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, Signature, SigningKey as EcSigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::digest::Digest;

/// PEM label cosign v2+ writes for encrypted private keys.
pub const SIGSTORE_PRIVATE_KEY_PEM_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// PEM label older cosign releases wrote; still accepted when loading.
pub const COSIGN_PRIVATE_KEY_PEM_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";
/// PEM label of a PKIX public key.
pub const PUBLIC_KEY_PEM_LABEL: &str = "PUBLIC KEY";

const KDF_NAME: &str = "scrypt";
const CIPHER_NAME: &str = "nacl/secretbox";
/// go-securesystemslib's salt and key sizes; anything else is not a cosign key file.
const SALT_LEN: usize = 32;
const BOX_KEY_LEN: usize = 32;
const BOX_NONCE_LEN: usize = 24;
/// scrypt cost cosign uses when it writes a key ("standard": N = 2^16, r = 8, p = 1).
const SCRYPT_LOG_N_WRITE: u8 = 16;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
/// scrypt N values go-securesystemslib accepts when reading (legacy 2^15, standard 2^16,
/// OWASP 2^17). Refusing others bounds the memory a hostile key file can make us spend.
const SCRYPT_ACCEPTED_N: &[u64] = &[1 << 15, 1 << 16, 1 << 17];
/// A key file is a few hundred bytes; anything far larger is not one.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// Errors from creating, loading or using keys. Each names the key file when there is one.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path} is larger than {max} bytes; it is not a cosign key")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; pass --force to overwrite it")]
    Exists { path: PathBuf },
    #[error("{path} is a symbolic link; berth does not write keys through links")]
    Symlink { path: PathBuf },
    #[error("{source_name} is not a PEM file with a '{expected}' block ({detail})")]
    NotPem {
        source_name: String,
        expected: String,
        detail: String,
    },
    #[error("{source_name}: unsupported PEM block '{label}', expected '{expected}'")]
    WrongPemLabel {
        source_name: String,
        label: String,
        expected: String,
    },
    #[error("{source_name} is not a valid cosign encrypted key: {detail}")]
    BadEncryptedKey { source_name: String, detail: String },
    #[error("wrong password for private key {source_name} (decryption failed)")]
    WrongPassword { source_name: String },
    #[error("{source_name}: only ECDSA P-256 keys are supported (cosign's default): {detail}")]
    UnsupportedKey { source_name: String, detail: String },
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

/// The JSON document inside the encrypted PEM block (go-securesystemslib `encrypted.data`).
#[derive(Debug, Serialize, Deserialize)]
struct EncryptedKeyFile {
    kdf: KdfSection,
    cipher: CipherSection,
    /// base64 (standard, padded), as Go's encoding/json writes `[]byte`.
    ciphertext: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct KdfSection {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct CipherSection {
    name: String,
    nonce: String,
}

/// A public key that signatures are checked against.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    /// Where it came from (file path or "Secret ns/name key"), for messages.
    source: String,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("source", &self.source)
            .field("fingerprint", &self.fingerprint().to_string())
            .finish()
    }
}

impl PublicKey {
    /// Parse a PEM `PUBLIC KEY` block. `source` names it in errors (a path, a Secret…).
    pub fn from_pem(pem: &str, source: &str) -> Result<PublicKey, KeyError> {
        let (label, _) = pem_label(pem, source, PUBLIC_KEY_PEM_LABEL)?;
        if label != PUBLIC_KEY_PEM_LABEL {
            return Err(KeyError::WrongPemLabel {
                source_name: source.to_string(),
                label,
                expected: PUBLIC_KEY_PEM_LABEL.to_string(),
            });
        }
        let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| {
            KeyError::UnsupportedKey {
                source_name: source.to_string(),
                detail: e.to_string(),
            }
        })?;
        Ok(PublicKey {
            key,
            source: source.to_string(),
        })
    }

    /// Read a PEM public key file (`cosign.pub`).
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let text = read_small(path)?;
        PublicKey::from_pem(&text, &path.display().to_string())
    }

    /// The key as PEM (`-----BEGIN PUBLIC KEY-----`), as `cosign.pub` holds it.
    pub fn to_pem(&self) -> String {
        // Encoding a valid in-memory P-256 key cannot fail; fall back to empty rather than panic.
        self.key
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }

    /// DER SubjectPublicKeyInfo, the bytes cosign hashes for its key hint.
    pub fn to_der(&self) -> Vec<u8> {
        self.key
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default()
    }

    /// sha256 of the DER public key: the identity berth reports for a signer.
    pub fn fingerprint(&self) -> Digest {
        Digest::of(&self.to_der())
    }

    /// The hint cosign v3 writes into a bundle's `verificationMaterial.publicKey.hint`:
    /// base64 of the sha256 of the DER public key.
    pub fn bundle_hint(&self) -> String {
        let digest = sha2_bytes(&self.to_der());
        BASE64.encode(digest)
    }

    /// Where this key was loaded from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Check an ASN.1 DER ECDSA-P256-SHA256 signature over `message`.
    pub fn verify(&self, message: &[u8], der_signature: &[u8]) -> bool {
        // cosign writes DER signatures; accept the fixed-size (r||s) form too, as some signers use it.
        if let Ok(sig) = DerSignature::from_bytes(der_signature) {
            return self.key.verify(message, &sig).is_ok();
        }
        match Signature::from_slice(der_signature) {
            Ok(sig) => self.key.verify(message, &sig).is_ok(),
            Err(_) => false,
        }
    }
}

/// A private key that signs, with its public half.
pub struct SigningKey {
    key: EcSigningKey,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh random P-256 key, as `cosign generate-key-pair` makes.
    pub fn generate() -> SigningKey {
        let key = EcSigningKey::random(&mut OsRng);
        SigningKey::from_ec(key, "generated key")
    }

    fn from_ec(key: EcSigningKey, source: &str) -> SigningKey {
        let public = PublicKey {
            key: *key.verifying_key(),
            source: source.to_string(),
        };
        SigningKey { key, public }
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// ECDSA-P256-SHA256 over `message`, ASN.1 DER encoded (what cosign writes).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let sig: DerSignature = self.key.sign(message);
        sig.as_bytes().to_vec()
    }

    /// Load a cosign encrypted private key file with `password`.
    pub fn load(path: &Path, password: &[u8]) -> Result<SigningKey, KeyError> {
        let text = read_small(path)?;
        SigningKey::from_encrypted_pem(&text, password, &path.display().to_string())
    }

    /// Decrypt a cosign encrypted private key (PEM text). `source` names it in errors.
    pub fn from_encrypted_pem(
        pem: &str,
        password: &[u8],
        source: &str,
    ) -> Result<SigningKey, KeyError> {
        let (label, body) = pem_label(pem, source, SIGSTORE_PRIVATE_KEY_PEM_LABEL)?;
        if label != SIGSTORE_PRIVATE_KEY_PEM_LABEL && label != COSIGN_PRIVATE_KEY_PEM_LABEL {
            return Err(KeyError::WrongPemLabel {
                source_name: source.to_string(),
                label,
                expected: SIGSTORE_PRIVATE_KEY_PEM_LABEL.to_string(),
            });
        }
        let bad = |detail: String| KeyError::BadEncryptedKey {
            source_name: source.to_string(),
            detail,
        };
        let file: EncryptedKeyFile =
            serde_json::from_slice(&body).map_err(|e| bad(format!("inner JSON: {e}")))?;
        if file.kdf.name != KDF_NAME {
            return Err(bad(format!("unknown kdf '{}'", file.kdf.name)));
        }
        if file.cipher.name != CIPHER_NAME {
            return Err(bad(format!("unknown cipher '{}'", file.cipher.name)));
        }
        let params = &file.kdf.params;
        if !SCRYPT_ACCEPTED_N.contains(&params.n) || params.r != SCRYPT_R || params.p != SCRYPT_P {
            return Err(bad(format!(
                "unsupported scrypt parameters N={} r={} p={}",
                params.n, params.r, params.p
            )));
        }
        let salt = BASE64
            .decode(&file.kdf.salt)
            .map_err(|e| bad(format!("salt: {e}")))?;
        let nonce = BASE64
            .decode(&file.cipher.nonce)
            .map_err(|e| bad(format!("nonce: {e}")))?;
        let ciphertext = BASE64
            .decode(&file.ciphertext)
            .map_err(|e| bad(format!("ciphertext: {e}")))?;
        if nonce.len() != BOX_NONCE_LEN {
            return Err(bad(format!(
                "nonce is {} bytes, expected {BOX_NONCE_LEN}",
                nonce.len()
            )));
        }
        let log_n = params.n.trailing_zeros() as u8;
        let box_key = derive_box_key(password, &salt, log_n)?;
        let cipher = XSalsa20Poly1305::new(BoxKey::from_slice(box_key.as_slice()));
        let plaintext = Zeroizing::new(
            cipher
                .decrypt(BoxNonce::from_slice(&nonce), ciphertext.as_slice())
                .map_err(|_| KeyError::WrongPassword {
                    source_name: source.to_string(),
                })?,
        );
        let key =
            EcSigningKey::from_pkcs8_der(&plaintext).map_err(|e| KeyError::UnsupportedKey {
                source_name: source.to_string(),
                detail: e.to_string(),
            })?;
        Ok(SigningKey::from_ec(key, source))
    }

    /// Encrypt this key into cosign's file format (PEM `ENCRYPTED SIGSTORE PRIVATE KEY`).
    pub fn to_encrypted_pem(&self, password: &[u8]) -> Result<Zeroizing<String>, KeyError> {
        let der = self
            .key
            .to_pkcs8_der()
            .map_err(|e| KeyError::Kdf(e.to_string()))?;
        let mut salt = [0u8; SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        let mut nonce = [0u8; BOX_NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let box_key = derive_box_key(password, &salt, SCRYPT_LOG_N_WRITE)?;
        let cipher = XSalsa20Poly1305::new(BoxKey::from_slice(box_key.as_slice()));
        let ciphertext = cipher
            .encrypt(BoxNonce::from_slice(&nonce), der.as_bytes())
            .map_err(|e| KeyError::Kdf(e.to_string()))?;
        let file = EncryptedKeyFile {
            kdf: KdfSection {
                name: KDF_NAME.to_string(),
                params: ScryptParams {
                    n: 1u64 << SCRYPT_LOG_N_WRITE,
                    r: SCRYPT_R,
                    p: SCRYPT_P,
                },
                salt: BASE64.encode(salt),
            },
            cipher: CipherSection {
                name: CIPHER_NAME.to_string(),
                nonce: BASE64.encode(nonce),
            },
            ciphertext: BASE64.encode(ciphertext),
        };
        let json = serde_json::to_vec(&file).map_err(|e| KeyError::Kdf(e.to_string()))?;
        Ok(Zeroizing::new(pem_encode(
            SIGSTORE_PRIVATE_KEY_PEM_LABEL,
            &json,
        )))
    }
}

/// The paths `<prefix>.key` and `<prefix>.pub` a new key pair would be written to, refused
/// when either is a symbolic link, or already exists and `force` is not given. Called before
/// asking for a password too: typing it twice to be told the file exists is no fun.
pub fn key_pair_paths(prefix: &Path, force: bool) -> Result<(PathBuf, PathBuf), KeyError> {
    let paths = (with_suffix(prefix, "key"), with_suffix(prefix, "pub"));
    for path in [&paths.0, &paths.1] {
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(KeyError::Symlink { path: path.clone() });
        }
        if !force && path.exists() {
            return Err(KeyError::Exists { path: path.clone() });
        }
    }
    Ok(paths)
}

/// Write `<prefix>.key` and `<prefix>.pub` for a new key pair; refuses to overwrite either
/// file unless `force`, and refuses symbolic links always. Returns the two paths.
pub fn write_key_pair(
    key: &SigningKey,
    password: &[u8],
    prefix: &Path,
    force: bool,
) -> Result<(PathBuf, PathBuf), KeyError> {
    let (key_path, pub_path) = key_pair_paths(prefix, force)?;
    let private_pem = key.to_encrypted_pem(password)?;
    write_new_file(&key_path, private_pem.as_bytes(), 0o600, force)?;
    write_new_file(
        &pub_path,
        key.public_key().to_pem().as_bytes(),
        0o644,
        force,
    )?;
    Ok((key_path, pub_path))
}

fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Write `bytes` to `path` with exactly `mode` (0600 for a private key, like cosign): into a
/// temporary file in the same directory, then renamed over `path`, so a reader never sees
/// half a key and an existing file's permissions are never inherited. A symbolic link at
/// `path` is refused: following it would put the key wherever the link points. Without
/// `force`, a file that appeared since the caller looked is not replaced either.
fn write_new_file(path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<(), KeyError> {
    use std::io::Write as _;
    let write_error = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(KeyError::Symlink {
            path: path.to_path_buf(),
        });
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Created 0600 (tempfile's default), so the key is never readable by others, not even briefly.
    let mut file = tempfile::Builder::new()
        .prefix(".berth-keygen-")
        .tempfile_in(dir)
        .map_err(write_error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(write_error)?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    file.write_all(bytes).map_err(write_error)?;
    file.as_file().sync_all().map_err(write_error)?;
    let persisted = if force {
        file.persist(path)
    } else {
        file.persist_noclobber(path)
    };
    match persisted {
        Ok(_) => Ok(()),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Err(KeyError::Exists {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(write_error(e.error)),
    }
}

fn read_small(path: &Path) -> Result<String, KeyError> {
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(KeyError::TooLarge {
            path: path.to_path_buf(),
            max: MAX_KEY_FILE_BYTES,
        });
    }
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn derive_box_key(
    password: &[u8],
    salt: &[u8],
    log_n: u8,
) -> Result<Zeroizing<[u8; BOX_KEY_LEN]>, KeyError> {
    let params = scrypt::Params::new(log_n, SCRYPT_R, SCRYPT_P, BOX_KEY_LEN)
        .map_err(|e| KeyError::Kdf(e.to_string()))?;
    let mut out = Zeroizing::new([0u8; BOX_KEY_LEN]);
    scrypt::scrypt(password, salt, &params, out.as_mut_slice())
        .map_err(|e| KeyError::Kdf(e.to_string()))?;
    Ok(out)
}

fn sha2_bytes(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// Find the first PEM block: its label and decoded body. The label is checked by the caller
/// so the error can say which one was expected.
fn pem_label(text: &str, source: &str, expected: &str) -> Result<(String, Vec<u8>), KeyError> {
    let not_pem = |detail: &str| KeyError::NotPem {
        source_name: source.to_string(),
        expected: expected.to_string(),
        detail: detail.to_string(),
    };
    let begin = text
        .find("-----BEGIN ")
        .ok_or_else(|| not_pem("no BEGIN line"))?;
    let rest = &text[begin + "-----BEGIN ".len()..];
    let label_end = rest
        .find("-----")
        .ok_or_else(|| not_pem("malformed BEGIN line"))?;
    let label = rest[..label_end].to_string();
    let body_start = &rest[label_end + "-----".len()..];
    let end_marker = format!("-----END {label}-----");
    let body_end = body_start
        .find(&end_marker)
        .ok_or_else(|| not_pem("no matching END line"))?;
    let b64: String = body_start[..body_end]
        .lines()
        // RFC 1421 headers (e.g. Proc-Type) are not used by cosign; skip any "k: v" lines.
        .filter(|line| !line.contains(':'))
        .flat_map(|line| line.trim().chars())
        .collect();
    let body = BASE64
        .decode(b64.as_bytes())
        .map_err(|e| not_pem(&format!("bad base64: {e}")))?;
    Ok((label, body))
}

/// PEM with 64-column lines, as Go's encoding/pem writes it.
fn pem_encode(label: &str, body: &[u8]) -> String {
    let b64 = BASE64.encode(body);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests report failure by panicking
mod tests {
    use super::*;

    #[test]
    fn encrypted_key_round_trips_and_signatures_verify() {
        let key = SigningKey::generate();
        let pem = key.to_encrypted_pem(b"s3cret").unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
        let loaded = SigningKey::from_encrypted_pem(&pem, b"s3cret", "test.key").unwrap();
        assert_eq!(
            loaded.public_key().fingerprint(),
            key.public_key().fingerprint()
        );
        let sig = loaded.sign(b"payload");
        assert!(key.public_key().verify(b"payload", &sig));
        assert!(!key.public_key().verify(b"payloaD", &sig));
    }

    #[test]
    fn wrong_password_names_the_key_file() {
        let key = SigningKey::generate();
        let pem = key.to_encrypted_pem(b"right").unwrap();
        let err = SigningKey::from_encrypted_pem(&pem, b"wrong", "/ci/cosign.key").unwrap_err();
        assert!(matches!(err, KeyError::WrongPassword { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("/ci/cosign.key") && msg.contains("wrong password"),
            "{msg}"
        );
    }

    #[test]
    fn public_key_pem_round_trips_and_other_keys_do_not_verify() {
        let key = SigningKey::generate();
        let other = SigningKey::generate();
        let pem = key.public_key().to_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        let public = PublicKey::from_pem(&pem, "cosign.pub").unwrap();
        let sig = key.sign(b"m");
        assert!(public.verify(b"m", &sig));
        assert!(!other.public_key().verify(b"m", &sig));
        assert_ne!(public.fingerprint(), other.public_key().fingerprint());
    }

    #[test]
    fn private_key_pem_is_rejected_as_public_key() {
        let key = SigningKey::generate();
        let pem = key.to_encrypted_pem(b"x").unwrap();
        let err = PublicKey::from_pem(&pem, "cosign.key").unwrap_err();
        assert!(
            err.to_string().contains("ENCRYPTED SIGSTORE PRIVATE KEY"),
            "{err}"
        );
    }

    #[test]
    fn hostile_scrypt_parameters_are_refused_before_deriving() {
        let json = br#"{"kdf":{"name":"scrypt","params":{"N":1073741824,"r":8,"p":1},"salt":"AAAA"},"cipher":{"name":"nacl/secretbox","nonce":"AAAA"},"ciphertext":"AAAA"}"#;
        let pem = pem_encode(SIGSTORE_PRIVATE_KEY_PEM_LABEL, json);
        let err = SigningKey::from_encrypted_pem(&pem, b"", "evil.key").unwrap_err();
        assert!(
            err.to_string().contains("unsupported scrypt parameters"),
            "{err}"
        );
    }

    #[test]
    fn keygen_refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("cosign");
        let key = SigningKey::generate();
        write_key_pair(&key, b"pw", &prefix, false).unwrap();
        let err = write_key_pair(&SigningKey::generate(), b"pw", &prefix, false).unwrap_err();
        assert!(matches!(err, KeyError::Exists { .. }), "{err}");
        // The original key is intact.
        let loaded = SigningKey::load(&dir.path().join("cosign.key"), b"pw").unwrap();
        assert_eq!(
            loaded.public_key().fingerprint(),
            key.public_key().fingerprint()
        );
        write_key_pair(&SigningKey::generate(), b"pw", &prefix, true).unwrap();
    }
}
