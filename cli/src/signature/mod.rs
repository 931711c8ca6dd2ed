//! Cosign-compatible signatures: key pairs (`keys`), the classic `.sig` tag scheme
//! (`classic`), Sigstore bundles attached as OCI 1.1 referrers (`bundle`), where both live
//! in a registry (`store`), keyless (Sigstore) verification (`keyless`, with `identity` for who
//! may sign, `trust_root` for which Sigstore deployment vouches, `crypto` for the primitives)
//! and the trust policy that decides whether a digest is trusted (`policy`). Signing and
//! verifying never need a cosign binary.

pub mod bundle;
pub mod classic;
pub mod crypto;
pub mod identity;
pub mod keyless;
pub mod keys;
pub mod policy;
pub mod store;
pub mod trust_root;

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::registry::Registry;

pub use identity::{Claim, Identity, IdentityError, Pattern, SignerIdentity};
pub use keyless::{KeylessError, KeylessSigner};
pub use keys::{KeyError, PublicKey, SigningKey};
pub use policy::{
    FoundSignature, KeylessTrust, SignatureStatus, Signer, TrustPolicy, VerifiedSignature,
    VerifyError, examine, verify_artifact,
};
pub use store::{CopiedSignatures, StoreError, copy_signatures};
pub use trust_root::{TrustRoot, TrustRootError};

/// The two ways cosign stores a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `sha256-<hex>.sig` tag with a simple-signing payload (cosign v1/v2).
    Classic,
    /// Sigstore bundle v0.3 attached as a referrer (cosign v3).
    Bundle,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Classic => "classic",
            Format::Bundle => "bundle",
        })
    }
}

/// What `berth sign --format` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FormatChoice {
    Classic,
    Bundle,
    /// Bundle where the registry has the referrers API, classic elsewhere: each reader
    /// then finds the signature the cheapest way its registry allows.
    #[default]
    Auto,
}

impl FromStr for FormatChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<FormatChoice, String> {
        match s {
            "classic" => Ok(FormatChoice::Classic),
            "bundle" => Ok(FormatChoice::Bundle),
            "auto" => Ok(FormatChoice::Auto),
            other => Err(format!(
                "unknown signature format '{other}': use classic, bundle or auto"
            )),
        }
    }
}

/// Errors from signing an artifact. Each names the artifact digest.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot sign {digest}: {source}")]
    Store { digest: Digest, source: StoreError },
    #[error("cannot build the signature of {digest}: {detail}")]
    Build { digest: Digest, detail: String },
}

impl SignError {
    pub fn hint(&self) -> &'static str {
        match self {
            SignError::Store {
                source: StoreError::Registry(e),
                ..
            } => e.hint(),
            SignError::Store { .. } => {
                "the registry holds a malformed signature object for this digest; remove it or sign with another --format"
            }
            SignError::Build { .. } => "this is a bug in berth; please report it",
        }
    }
}

/// A signature just written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedArtifact {
    pub digest: Digest,
    pub format: Format,
    pub key_fingerprint: Digest,
    /// `tag sha256-….sig` or `referrer sha256:…`.
    pub location: String,
}

/// Sign manifest `digest` of `repo` with `key` and store the signature in the registry.
/// The manifest must exist (signing something the registry does not hold is a mistake).
/// `created` is the RFC 3339 time a bundle referrer records (see [`store::signed_at`]).
pub async fn sign_artifact(
    registry: &Registry,
    repo: &str,
    digest: &Digest,
    key: &SigningKey,
    choice: FormatChoice,
    created: &str,
) -> Result<SignedArtifact, SignError> {
    let store_err = |source: StoreError| SignError::Store {
        digest: digest.clone(),
        source,
    };
    let subject = store::subject_descriptor(registry, repo, digest)
        .await
        .map_err(store_err)?;
    let format = match choice {
        FormatChoice::Classic => Format::Classic,
        FormatChoice::Bundle => Format::Bundle,
        FormatChoice::Auto => {
            if store::has_referrers_api(registry, repo, digest)
                .await
                .map_err(store_err)?
            {
                Format::Bundle
            } else {
                Format::Classic
            }
        }
    };
    let location = match format {
        Format::Classic => {
            // cosign names the repository as `host/path` in the payload's identity.
            let docker_reference = format!("{}/{repo}", registry.host());
            let layer = classic::SignatureLayer::sign(key, &docker_reference, digest);
            let tag = store::append_classic(registry, repo, digest, &layer)
                .await
                .map_err(store_err)?;
            format!("tag {tag}")
        }
        Format::Bundle => {
            let bytes = bundle::sign(key, digest).map_err(|e| SignError::Build {
                digest: digest.clone(),
                detail: e.to_string(),
            })?;
            let referrer = store::attach_bundle(registry, repo, &subject, &bytes, created)
                .await
                .map_err(store_err)?;
            format!("referrer {referrer}")
        }
    };
    tracing::info!(%digest, %format, %location, "signed");
    Ok(SignedArtifact {
        digest: digest.clone(),
        format,
        key_fingerprint: key.public_key().fingerprint(),
        location,
    })
}

/// A distinct digest per byte, for the unit tests of the signature formats.
#[cfg(test)]
fn test_digest(byte: u8) -> Digest {
    Digest::of(&[byte])
}
