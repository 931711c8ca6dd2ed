//! Artifact references as users type them: `oci://host[:port]/repo/path(:tag|@sha256:…)`.
//! Owns parsing, validation and display; knows nothing about how registries are reached.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// The scheme every berth reference starts with, as in `flux push artifact`.
pub const SCHEME: &str = "oci://";

/// OCI distribution spec: a tag is at most 128 characters.
const MAX_TAG_LEN: usize = 128;

/// Distribution rejects repository names longer than this (host included it is 255;
/// we apply the limit to the path, which is what the spec's regex governs).
const MAX_REPOSITORY_LEN: usize = 255;

/// Errors from parsing a reference; each names the input.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error(
        "'{input}' is not an OCI reference: it must start with 'oci://' (e.g. oci://registry.example:5000/team/app:v1)"
    )]
    MissingScheme { input: String },
    #[error(
        "'{input}' has no repository: expected oci://HOST[:PORT]/REPOSITORY[:TAG|@sha256:DIGEST]"
    )]
    MissingRepository { input: String },
    #[error("'{input}': registry host '{host}' is not a valid host[:port]")]
    InvalidHost { input: String, host: String },
    #[error(
        "'{input}': repository '{repository}' is invalid: use lowercase letters, digits and separators (. _ __ -) between path components"
    )]
    InvalidRepository { input: String, repository: String },
    #[error(
        "'{input}': tag '{tag}' is invalid: 1-128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'"
    )]
    InvalidTag { input: String, tag: String },
    #[error("'{input}': {source}")]
    InvalidDigest { input: String, source: DigestError },
    #[error("'{input}' needs a tag or digest (e.g. {input}:v1)")]
    NeedsTagOrDigest { input: String },
    #[error("'{input}' must not have a tag or digest here: name only the repository")]
    UnexpectedTagOrDigest { input: String },
}

/// A parsed `oci://` reference. `tag` and `digest` may both be absent (a repository,
/// as `list` takes) or both present (`:tag@sha256:…`; the digest then decides what is fetched).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Build a reference from parts already known to be valid (e.g. from another reference).
    pub fn new(
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<Digest>,
    ) -> Reference {
        Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest,
        }
    }

    /// `host[:port]` of the registry.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry, e.g. `team/app-deploy`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same repository pinned to `digest` (the tag is dropped: a digest reference is exact).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same repository at `tag` (any digest is dropped).
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// The repository alone, without tag or digest.
    pub fn repository_only(&self) -> Reference {
        Reference {
            tag: None,
            digest: None,
            ..self.clone()
        }
    }

    /// What to ask the registry's manifest endpoint for: the digest if known, else the tag.
    pub fn manifest_selector(&self) -> Option<String> {
        match (&self.digest, &self.tag) {
            (Some(d), _) => Some(d.to_string()),
            (None, Some(t)) => Some(t.clone()),
            (None, None) => None,
        }
    }

    /// Error unless the reference names a tag or digest.
    pub fn require_tag_or_digest(&self) -> Result<(), ReferenceError> {
        if self.tag.is_none() && self.digest.is_none() {
            return Err(ReferenceError::NeedsTagOrDigest {
                input: self.to_string(),
            });
        }
        Ok(())
    }

    /// Error if the reference names a tag or digest (for commands that take a repository).
    pub fn require_repository_only(&self) -> Result<(), ReferenceError> {
        if self.tag.is_some() || self.digest.is_some() {
            return Err(ReferenceError::UnexpectedTagOrDigest {
                input: self.to_string(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Reference, ReferenceError> {
        let rest = input
            .strip_prefix(SCHEME)
            .ok_or_else(|| ReferenceError::MissingScheme {
                input: input.to_string(),
            })?;
        let (rest, digest) = match rest.split_once('@') {
            Some((rest, digest)) => {
                let digest = digest
                    .parse()
                    .map_err(|source| ReferenceError::InvalidDigest {
                        input: input.to_string(),
                        source,
                    })?;
                (rest, Some(digest))
            }
            None => (rest, None),
        };
        let (host, path) =
            rest.split_once('/')
                .ok_or_else(|| ReferenceError::MissingRepository {
                    input: input.to_string(),
                })?;
        if !valid_host(host) {
            return Err(ReferenceError::InvalidHost {
                input: input.to_string(),
                host: host.to_string(),
            });
        }
        // A ':' after the last '/' starts the tag; earlier ones cannot occur in a valid path.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
            _ => (path, None),
        };
        if repository.is_empty() {
            return Err(ReferenceError::MissingRepository {
                input: input.to_string(),
            });
        }
        if !valid_repository(repository) {
            return Err(ReferenceError::InvalidRepository {
                input: input.to_string(),
                repository: repository.to_string(),
            });
        }
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(ReferenceError::InvalidTag {
                input: input.to_string(),
                tag: tag.to_string(),
            });
        }
        Ok(Reference {
            registry: host.to_string(),
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }
}

fn valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let name_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok());
    name_ok && port_ok
}

/// Each path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` (OCI distribution spec).
fn valid_repository(repository: &str) -> bool {
    repository.len() <= MAX_REPOSITORY_LEN
        && repository.split('/').all(|component| {
            let bytes = component.as_bytes();
            let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
                return false;
            };
            if !first.is_ascii_lowercase() && !first.is_ascii_digit() {
                return false;
            }
            if !last.is_ascii_lowercase() && !last.is_ascii_digit() {
                return false;
            }
            // Separators: '.', '_', '__', or runs of '-'; never mixed or other characters.
            let mut i = 0;
            while i < bytes.len() {
                let b = bytes[i];
                if b.is_ascii_lowercase() || b.is_ascii_digit() {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < bytes.len()
                    && !(bytes[i].is_ascii_lowercase() || bytes[i].is_ascii_digit())
                {
                    i += 1;
                }
                let sep = &component[start..i];
                let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
                if !ok {
                    return false;
                }
            }
            true
        })
}

fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_host_port_repo_and_tag() {
        let r: Reference = "oci://127.0.0.1:5000/team/app-deploy:v1.2".parse().unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "team/app-deploy");
        assert_eq!(r.tag(), Some("v1.2"));
        assert_eq!(r.digest(), None);
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/team/app-deploy:v1.2");
    }

    #[test]
    fn parses_digest_and_tag_plus_digest() {
        let r: Reference = format!("oci://reg.example/app@sha256:{HEX}")
            .parse()
            .unwrap();
        assert_eq!(r.digest().map(|d| d.hex()), Some(HEX));
        assert_eq!(r.tag(), None);
        let r: Reference = format!("oci://reg.example/app:v1@sha256:{HEX}")
            .parse()
            .unwrap();
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.manifest_selector(), Some(format!("sha256:{HEX}")));
    }

    #[test]
    fn repository_without_tag_is_allowed_for_list() {
        let r: Reference = "oci://reg.example:443/a/b/c".parse().unwrap();
        assert!(r.require_repository_only().is_ok());
        assert!(r.require_tag_or_digest().is_err());
    }

    #[test]
    fn errors_name_the_input() {
        for bad in [
            "reg.example/app:v1",
            "oci://reg.example",
            "oci://reg.example/App:v1",
            "oci://reg.example/app:-bad",
            "oci://reg.example/app@sha256:1234",
            "oci://bad host/app",
            "oci://reg.example:99999/app",
            "oci://reg.example/a//b",
        ] {
            let err = bad.parse::<Reference>().unwrap_err().to_string();
            assert!(err.contains(bad), "error for {bad} does not name it: {err}");
        }
    }
}
