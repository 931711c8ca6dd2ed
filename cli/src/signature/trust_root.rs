//! Which Sigstore deployment keyless signatures are checked against: a `trusted_root.json`
//! (Fulcio certificate authorities, Rekor logs, CT logs, timestamp authorities, each with the
//! time it was valid), either the public-good root carried inside the binary or one the
//! caller read from a file. Nothing here touches the network: clusters are often air-gapped,
//! and a root fetched at verification time would be trusted on the network's word.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use sigstore_verify::Verifier;
use sigstore_verify::trust_root::TrustedRoot;

use super::crypto;

/// The public-good Sigstore `trusted_root.json` berth ships with: the copy embedded in
/// `sigstore-trust-root` 0.15.1 (refreshed through TUF from tuf-repo-cdn.sigstore.dev for its
/// release of 2026-10-23), byte for byte. Newest entries: Rekor v2 log `log2025-1` (valid
/// from 2025-09-23) and the TSA valid from 2025-07-04.
pub const PUBLIC_GOOD_TRUSTED_ROOT: &str = include_str!("public-good.trusted_root.json");
/// How the embedded root is named in messages.
pub const PUBLIC_GOOD_NAME: &str = "the embedded Sigstore public-good trusted root (2026-10-23)";
/// A trusted root is a few KiB; refuse to read anything far larger.
pub const MAX_TRUSTED_ROOT_BYTES: u64 = 1024 * 1024;

/// Errors from reading a trusted root; each names where it came from.
#[derive(Debug, thiserror::Error)]
pub enum TrustRootError {
    #[error("cannot read trusted root {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "trusted root {path} is larger than {MAX_TRUSTED_ROOT_BYTES} bytes; it is not a trusted_root.json"
    )]
    TooLarge { path: String },
    #[error("{name} is not a Sigstore trusted_root.json: {detail}")]
    Malformed { name: String, detail: String },
    #[error("{name} cannot be used to verify: {detail}")]
    Unusable { name: String, detail: String },
}

impl TrustRootError {
    /// What the user can do next.
    pub fn hint(&self) -> &'static str {
        match self {
            TrustRootError::Read { .. } => "check the path and its permissions",
            _ => {
                "pass the trusted_root.json of your Sigstore deployment (for the public-good instance, leave --trusted-root out)"
            }
        }
    }
}

/// A trusted root, prepared for verification (keys and certificates parsed once).
#[derive(Clone)]
pub struct TrustRoot {
    verifier: Arc<Verifier>,
    has_ct_logs: bool,
    has_tlogs: bool,
    name: String,
}

impl fmt::Debug for TrustRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustRoot")
            .field("name", &self.name)
            .field("has_ct_logs", &self.has_ct_logs)
            .finish()
    }
}

impl TrustRoot {
    /// The public-good Sigstore root carried in the binary.
    pub fn public_good() -> Result<TrustRoot, TrustRootError> {
        TrustRoot::from_json(PUBLIC_GOOD_TRUSTED_ROOT, PUBLIC_GOOD_NAME)
    }

    /// Parse `trusted_root.json` text; `name` says where it came from in messages.
    pub fn from_json(json: &str, name: &str) -> Result<TrustRoot, TrustRootError> {
        crypto::install();
        let root = TrustedRoot::from_json(json).map_err(|e| TrustRootError::Malformed {
            name: name.to_string(),
            detail: e.to_string(),
        })?;
        let verifier = Verifier::new(&root).map_err(|e| TrustRootError::Unusable {
            name: name.to_string(),
            detail: e.to_string(),
        })?;
        Ok(TrustRoot {
            verifier: Arc::new(verifier),
            has_ct_logs: !root.ctlogs.is_empty(),
            has_tlogs: !root.tlogs.is_empty(),
            name: name.to_string(),
        })
    }

    /// Read a `trusted_root.json` file (`--trusted-root`).
    pub fn load(path: &Path) -> Result<TrustRoot, TrustRootError> {
        let shown = path.display().to_string();
        let read = |source| TrustRootError::Read {
            path: shown.clone(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read)?.len();
        if len > MAX_TRUSTED_ROOT_BYTES {
            return Err(TrustRootError::TooLarge { path: shown });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        TrustRoot::from_json(&text, &format!("trusted root {shown}"))
    }

    /// Where this root came from, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the root lists CT logs. Without any, certificates cannot carry a verifiable
    /// SCT (a private Fulcio often runs without a CT log), so none is required.
    pub fn has_ct_logs(&self) -> bool {
        self.has_ct_logs
    }

    /// Whether the root lists transparency logs. When it does, every signature must be
    /// logged in one of them (as `cosign verify` requires); a deployment without a log can
    /// only prove signing time with a timestamp authority.
    pub fn has_tlogs(&self) -> bool {
        self.has_tlogs
    }

    pub(crate) fn verifier(&self) -> &Verifier {
        &self.verifier
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests report failure by panicking
mod tests {
    use super::*;

    #[test]
    fn embedded_public_good_root_is_usable_and_has_ct_logs() {
        let root = TrustRoot::public_good().unwrap();
        assert!(root.has_ct_logs());
        assert!(root.name().contains("public-good"));
        // The copy is the sigstore-trust-root crate's, unchanged.
        assert_eq!(
            PUBLIC_GOOD_TRUSTED_ROOT,
            sigstore_verify::trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT
        );
        for url in [
            "https://fulcio.sigstore.dev",
            "https://rekor.sigstore.dev",
            "https://log2025-1.rekor.sigstore.dev",
            "https://ctfe.sigstore.dev/2022",
        ] {
            assert!(PUBLIC_GOOD_TRUSTED_ROOT.contains(url), "{url}");
        }
    }

    #[test]
    fn malformed_and_missing_roots_say_what_and_where() {
        let err = TrustRoot::from_json("{not json", "trusted root x.json").unwrap_err();
        assert!(matches!(err, TrustRootError::Malformed { .. }));
        assert!(err.to_string().contains("x.json"), "{err}");
        let err = TrustRoot::load(Path::new("/nonexistent/trusted_root.json")).unwrap_err();
        assert!(matches!(err, TrustRootError::Read { .. }), "{err}");
    }

    #[test]
    fn a_root_without_ct_logs_is_usable() {
        let empty = r#"{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}"#;
        let root = TrustRoot::from_json(empty, "empty").unwrap();
        assert!(!root.has_ct_logs());
    }
}
