//! What can go wrong talking to a registry, and what the user should do about it: the
//! [`RegistryError`] enum with its hints, and the one judgement of a failed HTTP answer
//! ([`RegistryError::from_answer`]) that both berth's own requests and oci-client's adapt into.

use oci_client::errors::{OciDistributionError, OciEnvelope};

use crate::digest::Digest;
use std::path::PathBuf;

/// Errors talking to a registry. Each names the registry and the object involved.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach registry {registry}: {detail}")]
    Unreachable { registry: String, detail: String },
    #[error("registry {registry} {} {what}: {detail}", refusal.verb())]
    Unauthorized {
        registry: String,
        what: String,
        detail: String,
        refusal: Refusal,
    },
    #[error("{what} not found in registry {registry}")]
    NotFound { registry: String, what: String },
    #[error("registry {registry} rejected {what}: {detail}")]
    Rejected {
        registry: String,
        what: String,
        detail: String,
    },
    #[error("registry {registry} failed on {what}: {detail}")]
    Protocol {
        registry: String,
        what: String,
        detail: String,
    },
    #[error(
        "{what} from registry {registry} does not match its digest: expected {expected}, got {actual}"
    )]
    DigestMismatch {
        registry: String,
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what} from registry {registry} is {actual} bytes, expected {expected}")]
    SizeMismatch {
        registry: String,
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{what} from registry {registry} exceeds the limit of {limit} bytes")]
    TooLarge {
        registry: String,
        what: String,
        limit: u64,
    },
    #[error("cannot read CA file {path}: {detail}")]
    CaFile { path: PathBuf, detail: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {what} failed: {source}")]
    Write {
        what: String,
        source: std::io::Error,
    },
}

impl RegistryError {
    /// A short hint on what the user can do next.
    pub fn hint(&self) -> &'static str {
        match self {
            RegistryError::Unreachable { .. } => {
                "check the registry address and port; for a registry without TLS pass --insecure; for a private CA pass --ca-file"
            }
            RegistryError::Unauthorized { refusal, .. } => refusal.hint(),
            RegistryError::NotFound { .. } => {
                "check the repository, tag or digest (berth list oci://REGISTRY/REPO shows the tags)"
            }
            RegistryError::Rejected { .. } => {
                "the registry refused the content; check its logs and accepted media types"
            }
            RegistryError::Protocol { .. } => "retry; if it persists, check the registry's logs",
            RegistryError::DigestMismatch { .. } | RegistryError::SizeMismatch { .. } => {
                "the registry served content that does not match its digest; do not use it, and check the registry"
            }
            RegistryError::TooLarge { .. } => {
                "the content is larger than berth accepts; check that the reference is a berth artifact"
            }
            RegistryError::CaFile { .. } => {
                "pass a PEM file with the registry's CA certificate(s) to --ca-file"
            }
            RegistryError::Io { .. } | RegistryError::Write { .. } => {
                "check the path and free space"
            }
        }
    }

    /// Whether the failure was the registry not knowing the object (as opposed to an outage).
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound { .. })
    }

    /// Whether the failure is the object itself — missing, larger than allowed, not matching
    /// its digest or size — rather than reaching the registry (an outage, refused access, a
    /// rate limit), where trying again later may give another answer.
    pub fn is_bad_object(&self) -> bool {
        matches!(
            self,
            RegistryError::NotFound { .. }
                | RegistryError::TooLarge { .. }
                | RegistryError::DigestMismatch { .. }
                | RegistryError::SizeMismatch { .. }
        )
    }
}

/// Why a registry refused a request (both are exit code 5, "access").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Credentials missing or not accepted: HTTP 401, a failed token exchange, a 403 on a read.
    Credentials,
    /// A write answered 403 DENIED: read-only registries (olareg `--store-ro`) say this too,
    /// so it does not prove the credentials wrong.
    WriteDenied {
        /// Whether the request carried credentials (Basic or a bearer token).
        authenticated: bool,
    },
    /// The registry named a token service that may not have the credentials (plain HTTP on
    /// another host), so berth did not send them.
    UnsafeTokenService,
}

impl Refusal {
    fn verb(self) -> &'static str {
        match self {
            Refusal::Credentials | Refusal::UnsafeTokenService => "refused access to",
            Refusal::WriteDenied { .. } => "denied the write of",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Refusal::Credentials => {
                "pass --creds USER:PASSWORD, set BERTH_REGISTRY_USER/BERTH_REGISTRY_PASSWORD, or log in with a Docker credential helper"
            }
            Refusal::WriteDenied {
                authenticated: true,
            } => {
                "the registry denied the write despite the credentials: check that the account may push to this repository, and whether the registry is read-only"
            }
            Refusal::UnsafeTokenService => {
                "the registry's token service (the bearer realm) must use HTTPS or be on the registry's own host; fix the registry's auth configuration"
            }
            Refusal::WriteDenied {
                authenticated: false,
            } => {
                "the write was anonymous: if the registry needs an account to push, pass --creds USER:PASSWORD; otherwise check whether it is read-only"
            }
        }
    }
}

/// OCI error codes that mean the registry does not know the object.
const NOT_FOUND_CODES: &[&str] = &[
    "MANIFEST_UNKNOWN",
    "NAME_UNKNOWN",
    "BLOB_UNKNOWN",
    "NOT_FOUND",
];

/// A failed answer from a registry, in the terms [`RegistryError::from_answer`] judges.
#[derive(Debug)]
pub(super) struct FailedAnswer {
    /// The HTTP status, when known (oci-client keeps none for a 4xx with an OCI error body).
    pub status: Option<u16>,
    /// The OCI error codes of the body (`DENIED`, `MANIFEST_UNKNOWN`, …).
    pub codes: Vec<String>,
    /// What the user reads: the status and the registry's own messages, on one line.
    pub detail: String,
}

impl FailedAnswer {
    /// An answer with `status` and `body`: an OCI error envelope, or anything else (an HTML
    /// page, plain text), which is kept as a truncated line.
    pub(super) fn from_body(status: u16, body: &[u8]) -> FailedAnswer {
        #[derive(serde::Deserialize)]
        struct Envelope {
            errors: Vec<EnvelopeError>,
        }
        #[derive(serde::Deserialize)]
        struct EnvelopeError {
            code: String,
            #[serde(default)]
            message: String,
            /// Often the registry's actual reason (olareg: "repository is read-only").
            #[serde(default)]
            detail: serde_json::Value,
        }
        match serde_json::from_slice::<Envelope>(body)
            .ok()
            .filter(|e| !e.errors.is_empty())
        {
            Some(envelope) => {
                let errors = envelope
                    .errors
                    .iter()
                    .map(|e| describe(&e.code, &e.message, &e.detail));
                FailedAnswer {
                    status: Some(status),
                    codes: envelope.errors.iter().map(|e| e.code.clone()).collect(),
                    detail: format!("HTTP {status}: {}", errors.collect::<Vec<_>>().join("; ")),
                }
            }
            None => {
                let status_line = reqwest::StatusCode::from_u16(status)
                    .map_or(status.to_string(), |s| s.to_string());
                FailedAnswer {
                    status: Some(status),
                    codes: Vec::new(),
                    detail: format!(
                        "HTTP {status_line}: {}",
                        truncate(&String::from_utf8_lossy(body))
                    ),
                }
            }
        }
    }

    /// oci-client's error envelope, whose status it did not keep.
    fn from_envelope(envelope: &OciEnvelope) -> FailedAnswer {
        // The wire form of a code (`MANIFEST_UNKNOWN`), as berth's own requests see it.
        let code = |e: &oci_client::errors::OciError| match serde_json::to_value(&e.code) {
            Ok(serde_json::Value::String(code)) => code,
            _ => format!("{:?}", e.code),
        };
        FailedAnswer {
            status: None,
            codes: envelope.errors.iter().map(code).collect(),
            detail: envelope
                .errors
                .iter()
                .map(|e| describe(&code(e), &e.message, &e.detail))
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

/// One OCI error of a body: `CODE: message (detail)`.
fn describe(code: &str, message: &str, detail: &serde_json::Value) -> String {
    let detail = match detail {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) if s.is_empty() => String::new(),
        serde_json::Value::String(s) => format!(" ({})", truncate(s)),
        other => format!(" ({})", truncate(&other.to_string())),
    };
    format!("{code}: {message}{detail}")
}

impl RegistryError {
    /// The error for a failed `answer` about `what`: the one place that judges a registry's
    /// status and error codes. `denied` is what a 403 `DENIED` means for the request (for a
    /// write it does not prove the credentials wrong). Over plain HTTP, a bare 400 is a TLS
    /// registry refusing to speak it.
    pub(super) fn from_answer(
        registry: &str,
        what: String,
        answer: FailedAnswer,
        denied: Refusal,
        plain_http: bool,
    ) -> RegistryError {
        let has = |wanted: &[&str]| {
            answer
                .codes
                .iter()
                .any(|c| wanted.iter().any(|w| c.eq_ignore_ascii_case(w)))
        };
        // Without the status, the error codes stand for it.
        let status = answer.status.unwrap_or(if has(&["UNAUTHORIZED"]) {
            401
        } else if has(&["DENIED"]) {
            403
        } else if has(NOT_FOUND_CODES) {
            404
        } else {
            400
        });
        let registry = registry.to_string();
        let detail = answer.detail;
        match status {
            400 if plain_http && answer.codes.is_empty() => RegistryError::Unreachable {
                registry,
                detail: "the registry refused plain HTTP (HTTP 400); it probably speaks TLS: drop --insecure".into(),
            },
            403 if has(&["DENIED"]) => RegistryError::Unauthorized { registry, what, detail, refusal: denied },
            401 | 403 => RegistryError::Unauthorized { registry, what, detail, refusal: Refusal::Credentials },
            404 => RegistryError::NotFound { registry, what },
            400..=499 => RegistryError::Rejected { registry, what, detail },
            _ => RegistryError::Protocol { registry, what, detail },
        }
    }

    /// The error for oci-client's `err` about `what` (oci-client serves reads only): its
    /// failed answers go through [`Self::from_answer`]; the rest is unreachable or protocol.
    pub(super) fn from_oci(
        registry: &str,
        what: String,
        err: OciDistributionError,
        plain_http: bool,
    ) -> RegistryError {
        let judge = |answer| {
            RegistryError::from_answer(
                registry,
                what.clone(),
                answer,
                Refusal::Credentials,
                plain_http,
            )
        };
        let registry = registry.to_string();
        match err {
            OciDistributionError::UnauthorizedError { url } => judge(FailedAnswer {
                status: Some(401),
                codes: Vec::new(),
                detail: format!("HTTP 401 from {url}"),
            }),
            OciDistributionError::RegistryError { envelope, .. } => {
                judge(FailedAnswer::from_envelope(&envelope))
            }
            OciDistributionError::ServerError { code, message, .. } => {
                judge(FailedAnswer::from_body(code, message.as_bytes()))
            }
            OciDistributionError::AuthenticationFailure(detail) => RegistryError::Unauthorized {
                registry,
                what,
                detail,
                refusal: Refusal::Credentials,
            },
            OciDistributionError::ImageManifestNotFoundError(_) => {
                RegistryError::NotFound { registry, what }
            }
            OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
                RegistryError::Unreachable {
                    registry,
                    detail: error_chain(&e),
                }
            }
            OciDistributionError::RequestError(e) => match e.status() {
                Some(status) => judge(FailedAnswer {
                    status: Some(status.as_u16()),
                    codes: Vec::new(),
                    detail: error_chain(&e),
                }),
                None => RegistryError::Protocol {
                    registry,
                    what,
                    detail: error_chain(&e),
                },
            },
            OciDistributionError::DigestError(e) => RegistryError::Protocol {
                registry,
                what,
                detail: e.to_string(),
            },
            other => RegistryError::Protocol {
                registry,
                what,
                detail: other.to_string(),
            },
        }
    }
}

/// The error and its causes on one line: reqwest hides the useful part (refused, TLS) in sources.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Registry error bodies can be whole HTML pages; keep messages to one readable line.
pub(super) fn truncate(s: &str) -> String {
    const MAX: usize = 200;
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > MAX {
        format!("{}…", one_line.chars().take(MAX).collect::<String>())
    } else {
        one_line
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn judge(status: u16, body: &str, denied: Refusal, plain_http: bool) -> RegistryError {
        let answer = FailedAnswer::from_body(status, body.as_bytes());
        RegistryError::from_answer(
            "reg.example",
            "manifest app:v1".into(),
            answer,
            denied,
            plain_http,
        )
    }

    #[test]
    fn a_denied_write_is_not_blamed_on_the_credentials_but_a_denied_read_is() {
        let body = r#"{"errors":[{"code":"DENIED","message":"denied","detail":"repository is read-only"}]}"#;
        let write = judge(
            403,
            body,
            Refusal::WriteDenied {
                authenticated: false,
            },
            false,
        );
        assert!(
            matches!(
                write,
                RegistryError::Unauthorized {
                    refusal: Refusal::WriteDenied { .. },
                    ..
                }
            ),
            "{write:?}"
        );
        assert!(
            write.to_string().contains("repository is read-only"),
            "{write}"
        );
        let read = judge(403, body, Refusal::Credentials, false);
        assert!(
            matches!(
                read,
                RegistryError::Unauthorized {
                    refusal: Refusal::Credentials,
                    ..
                }
            ),
            "{read:?}"
        );
        let bare = judge(
            403,
            "forbidden",
            Refusal::WriteDenied {
                authenticated: true,
            },
            false,
        );
        assert!(
            matches!(
                bare,
                RegistryError::Unauthorized {
                    refusal: Refusal::Credentials,
                    ..
                }
            ),
            "{bare:?}"
        );
    }

    #[test]
    fn statuses_decide_and_error_bodies_stand_in_when_oci_client_dropped_the_status() {
        assert!(judge(404, "", Refusal::Credentials, false).is_not_found());
        assert!(matches!(
            judge(405, "Method not allowed", Refusal::Credentials, false),
            RegistryError::Rejected { .. }
        ));
        assert!(matches!(
            judge(503, "", Refusal::Credentials, false),
            RegistryError::Protocol { .. }
        ));
        let oci = |body: &str| {
            let envelope: OciEnvelope = serde_json::from_str(body).unwrap();
            let err = OciDistributionError::RegistryError {
                envelope,
                url: "https://reg.example/v2/".into(),
            };
            RegistryError::from_oci("reg.example", "manifest app:v1".into(), err, false)
        };
        assert!(
            oci(r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#).is_not_found()
        );
        let denied = oci(r#"{"errors":[{"code":"DENIED","message":"no"}]}"#);
        assert!(
            matches!(
                denied,
                RegistryError::Unauthorized {
                    refusal: Refusal::Credentials,
                    ..
                }
            ),
            "{denied:?}"
        );
        assert!(denied.to_string().contains("DENIED: no"), "{denied}");
        let invalid = oci(r#"{"errors":[{"code":"MANIFEST_INVALID","message":"bad"}]}"#);
        assert!(
            matches!(invalid, RegistryError::Rejected { .. }),
            "{invalid:?}"
        );
        let server = |code| OciDistributionError::ServerError {
            code,
            url: String::new(),
            message: "x".into(),
        };
        assert!(RegistryError::from_oci("r", "w".into(), server(404), false).is_not_found());
        let unavailable = RegistryError::from_oci("r", "w".into(), server(503), false);
        assert!(
            matches!(unavailable, RegistryError::Protocol { .. }),
            "{unavailable:?}"
        );
    }

    #[test]
    fn a_bare_400_over_plain_http_means_the_registry_speaks_tls() {
        let refused = judge(
            400,
            "Client sent an HTTP request to an HTTPS server.",
            Refusal::Credentials,
            true,
        );
        assert!(
            matches!(refused, RegistryError::Unreachable { .. }),
            "{refused:?}"
        );
        assert!(refused.to_string().contains("drop --insecure"), "{refused}");
        // A registry's own 400 (with an OCI error body) is its answer, TLS or not.
        let own = judge(
            400,
            r#"{"errors":[{"code":"MANIFEST_INVALID","message":"bad"}]}"#,
            Refusal::Credentials,
            true,
        );
        assert!(matches!(own, RegistryError::Rejected { .. }), "{own:?}");
        assert!(matches!(
            judge(400, "bad", Refusal::Credentials, false),
            RegistryError::Rejected { .. }
        ));
    }
}
