//! Getting a trusted set of manifests out of a registry: resolve the reference to a digest,
//! pull that digest's manifest and content layer (digest and size checked), verify its
//! signature against the trust policy, and unpack it in memory with limits. All registry,
//! signature and parsing work is the `berth` library's; this module only orders the phases
//! and turns their failures into reasons the agent reports.

use std::path::Path;

use berth::artifact::{self, ArtifactError, Limits};
use berth::digest::Digest;
use berth::input::InputError;
use berth::manifests::{self, ManifestError, Rules};
use berth::oci;
use berth::reference::Reference;
use berth::registry::{Registry, RegistryError};
use berth::signature::policy::{self, TrustPolicy, VerifyError};

use crate::budget::PARSED_FACTOR;
use crate::conditions::reason;
use crate::plan::Manifest;

/// Largest content layer the agent downloads, whatever its memory budget: the layer is kept
/// in memory while it is unpacked.
pub const MAX_LAYER_BYTES: u64 = 64 * 1024 * 1024;
/// Files in one layer.
pub const MAX_LAYER_ENTRIES: usize = 20_000;
/// Tags listed when following a semver range.
pub const MAX_SEMVER_TAGS: usize = 10_000;

/// Who vouches for the artifact.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Any one of these keys must have signed the exact digest.
    Keys(TrustPolicy),
    /// Verification explicitly switched off by the user.
    SkipVerify,
}

impl Trust {
    /// A value that changes whenever the policy could judge a signature differently (a key
    /// added, removed or rotated, verification switched on or off, repository matching): the
    /// agent verifies an applied digest again when it changes.
    pub fn fingerprint(&self) -> String {
        match self {
            Trust::SkipVerify => "insecureSkipVerify".to_string(),
            Trust::Keys(policy) => {
                let mut keys: Vec<String> = policy
                    .keys
                    .iter()
                    .map(|k| format!("{} {}", k.fingerprint(), k.source()))
                    .collect();
                keys.sort();
                // Identities and their trusted root judge keyless signatures (none yet come
                // from a Source; the library's policy already carries them).
                let mut identities: Vec<String> =
                    policy.identities().iter().map(|i| i.to_string()).collect();
                identities.sort();
                let root = policy.keyless.as_ref().map(|k| k.root.name().to_string());
                format!(
                    "keys [{}] identities [{}] root {:?} repository {:?}",
                    keys.join(", "),
                    identities.join(", "),
                    root,
                    policy.repository
                )
            }
        }
    }
}

/// A pulled, verified, unpacked artifact: what the controller applies and remembers, and
/// what the one-shot commands apply.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub digest: Digest,
    /// `org.opencontainers.image.revision`, when the artifact has one.
    pub revision: Option<String>,
    /// `org.opencontainers.image.created`, when the artifact has one.
    pub created: Option<String>,
    /// `key sha256:… (source)` of the verifying key, or `unverified`.
    pub signer: String,
    pub manifests: Vec<Manifest>,
}

/// What a caller learns and decides while [`fetch_digest`] runs.
pub trait Observer {
    /// One registry operation (`resolve`, `pull`, `verify`) finished.
    fn request(&self, _operation: &'static str, _ok: bool) {}
    /// The artifact is pulled and its signature verified; refuse it before it is unpacked.
    fn check(&self, _at: &str, _pulled: &Pulled) -> Result<(), FetchError> {
        Ok(())
    }
}

/// Observes nothing and accepts every verified artifact.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unobserved;

impl Observer for Unobserved {}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Registry(#[from] RegistryError),
    #[error("{reference}: no tag matches semver range {range:?} (tags looked at: {looked})")]
    NoSemverMatch {
        reference: String,
        range: String,
        looked: usize,
    },
    #[error("semver range {range:?} is invalid: {message}")]
    InvalidSemver { range: String, message: String },
    #[error("{reference}: {source}")]
    Artifact {
        reference: String,
        source: ArtifactError,
    },
    #[error(
        "{reference}: content layer is {size} bytes, more than the {limit} one artifact may use of the agent's memory (--memory-limit)"
    )]
    LayerTooLarge {
        reference: String,
        size: u64,
        limit: u64,
    },
    #[error(
        "{reference}: {file} would take about {needed} bytes of memory parsed, more than the {limit} left of one artifact's share of the agent's memory (--memory-limit); split the artifact or raise the limit"
    )]
    OverBudget {
        reference: String,
        file: String,
        needed: u64,
        limit: u64,
    },
    #[error("{reference}: {source}")]
    Manifest {
        reference: String,
        source: ManifestError,
    },
    #[error("{reference}: refusing to apply, {source}")]
    Untrusted {
        reference: String,
        source: Box<VerifyError>,
    },
    #[error("{reference}: cannot check signatures: {source}")]
    VerifyUnavailable {
        reference: String,
        source: Box<VerifyError>,
    },
    #[error("{0}")]
    Input(#[from] InputError),
    #[error(
        "{reference}: refusing to go back to an older artifact: it was created {created}, the applied one {applied} (spec.verify.refuseOlder; pin ref.digest to go back on purpose)"
    )]
    Older {
        reference: String,
        created: String,
        applied: String,
    },
}

impl FetchError {
    /// A kstatus-friendly reason users can act on.
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::Registry(e) if e.is_not_found() => reason::ARTIFACT_NOT_FOUND,
            FetchError::Registry(_) | FetchError::VerifyUnavailable { .. } => {
                reason::REGISTRY_UNAVAILABLE
            }
            FetchError::NoSemverMatch { .. } => reason::NO_MATCHING_TAG,
            FetchError::InvalidSemver { .. } => reason::INVALID_SPEC,
            FetchError::Artifact { .. }
            | FetchError::LayerTooLarge { .. }
            | FetchError::OverBudget { .. } => reason::INVALID_ARTIFACT,
            FetchError::Manifest { .. } | FetchError::Input(_) => reason::INVALID_MANIFESTS,
            FetchError::Untrusted { .. } => reason::VERIFICATION_FAILED,
            FetchError::Older { .. } => reason::OLDER_ARTIFACT,
        }
    }
}

/// Phase 1, resolve: the digest a reference points at — the pinned digest as is, a tag with
/// one HEAD request, a semver range by listing tags and resolving the highest match.
pub async fn resolve(
    registry: &Registry,
    reference: &Reference,
    semver: Option<&str>,
) -> Result<(Reference, Digest), FetchError> {
    if let Some(d) = reference.digest() {
        return Ok((reference.clone(), d.clone()));
    }
    let reference = match semver {
        Some(range) => {
            let req = semver::VersionReq::parse(range).map_err(|e| FetchError::InvalidSemver {
                range: range.to_string(),
                message: e.to_string(),
            })?;
            let tags = registry.list_tags(reference.repository()).await?;
            let looked = tags.len().min(MAX_SEMVER_TAGS);
            let best = tags
                .iter()
                .take(MAX_SEMVER_TAGS)
                .filter_map(|t| {
                    semver::Version::parse(t.strip_prefix('v').unwrap_or(t))
                        .ok()
                        .map(|v| (v, t))
                })
                .filter(|(v, _)| req.matches(v))
                .max_by(|a, b| a.0.cmp(&b.0))
                .map(|(_, t)| t.clone())
                .ok_or_else(|| FetchError::NoSemverMatch {
                    reference: reference.to_string(),
                    range: range.to_string(),
                    looked,
                })?;
            reference.with_tag(&best)
        }
        None => reference.clone(),
    };
    let digest = registry.resolve(&reference).await?;
    Ok((reference, digest))
}

/// The artifact manifest and content layer of `digest`, both checked against their digests.
#[derive(Debug)]
pub struct Pulled {
    pub revision: Option<String>,
    /// `org.opencontainers.image.created`, covered by the signature like the whole manifest.
    pub created: Option<String>,
    pub layer: Vec<u8>,
}

/// Phase 2, pull: by digest only, so what is verified next is exactly what was pulled. The
/// layer may take at most `share` bytes (and [`MAX_LAYER_BYTES`]).
pub async fn pull(
    registry: &Registry,
    reference: &Reference,
    digest: &Digest,
    share: u64,
) -> Result<Pulled, FetchError> {
    let at = reference.with_digest(digest.clone()).to_string();
    let (bytes, _media_type) = registry
        .fetch_manifest(reference.repository(), digest)
        .await?;
    let (manifest, layer) =
        artifact::content_layer(&bytes).map_err(|source| FetchError::Artifact {
            reference: at.clone(),
            source,
        })?;
    let limit = MAX_LAYER_BYTES.min(share);
    if layer.size > limit {
        return Err(FetchError::LayerTooLarge {
            reference: at,
            size: layer.size,
            limit,
        });
    }
    let mut content = Vec::with_capacity(usize::try_from(layer.size).unwrap_or(0));
    registry
        .fetch_blob(
            reference.repository(),
            &layer.digest,
            layer.size,
            &mut content,
        )
        .await?;
    Ok(Pulled {
        revision: manifest.annotations.get(oci::ANNOTATION_REVISION).cloned(),
        created: manifest.annotations.get(oci::ANNOTATION_CREATED).cloned(),
        layer: content,
    })
}

/// Phase 3, verify: a signature by a trusted key over exactly `digest`.
pub async fn verify(
    registry: &Registry,
    reference: &Reference,
    digest: &Digest,
    trust: &Trust,
) -> Result<String, FetchError> {
    let keys = match trust {
        Trust::SkipVerify => return Ok("unverified (insecureSkipVerify)".to_string()),
        Trust::Keys(keys) => keys,
    };
    let at = reference.with_digest(digest.clone()).to_string();
    match policy::verify_artifact(registry, reference.repository(), digest, keys).await {
        Ok(sig) => Ok(format!("{} {}", sig.format, sig.signer)),
        Err(source) if source.is_verdict() => Err(FetchError::Untrusted {
            reference: at,
            source: Box::new(source),
        }),
        Err(source) => Err(FetchError::VerifyUnavailable {
            reference: at,
            source: Box::new(source),
        }),
    }
}

/// With `spec.verify.refuseOlder`: the artifact at `reference` may not be older than the one
/// applied last (`created` annotations, RFC 3339). An artifact without a readable `created`
/// cannot show it is not older and is refused too, once something dated was applied.
pub fn refuse_older(
    reference: &str,
    created: Option<&str>,
    applied: Option<&str>,
) -> Result<(), FetchError> {
    let Some(applied) = applied else {
        return Ok(());
    };
    let Ok(applied_at) = applied.parse::<k8s_openapi::jiff::Timestamp>() else {
        return Ok(());
    };
    let older = || FetchError::Older {
        reference: reference.to_string(),
        created: created.unwrap_or("(no created annotation)").to_string(),
        applied: applied.to_string(),
    };
    match created.map(str::parse::<k8s_openapi::jiff::Timestamp>) {
        Some(Ok(at)) if at >= applied_at => Ok(()),
        _ => Err(older()),
    }
}

/// Phase 4, unpack: every manifest file of the layer parsed in memory; links, devices,
/// absolute paths and `..` are refused by the library. The layer and its manifests must fit
/// in `share` bytes: the compressed layer plus [`PARSED_FACTOR`] times each manifest file,
/// every declared size of the archive counted before anything is read. Returns the manifests
/// and the bytes charged for them.
pub fn unpack(
    reference: &str,
    layer: &[u8],
    share: u64,
) -> Result<(Vec<Manifest>, u64), FetchError> {
    let room = share.saturating_sub(layer.len() as u64);
    let limits = Limits {
        max_bytes: room,
        max_entries: MAX_LAYER_ENTRIES,
        max_file_bytes: room / PARSED_FACTOR,
    };
    let mut out = Vec::new();
    let mut charged: u64 = 0;
    let mut failure: Option<FetchError> = None;
    artifact::read_layer(layer, limits, |file, content| {
        if !manifests::is_manifest_name(&file.name) || failure.is_some() {
            return Ok(());
        }
        let needed = file.size.saturating_mul(PARSED_FACTOR);
        if charged.saturating_add(needed) > room {
            failure = Some(FetchError::OverBudget {
                reference: reference.to_string(),
                file: file.name.clone(),
                needed,
                limit: room - charged,
            });
            return Ok(());
        }
        charged += needed;
        let mut bytes = Vec::with_capacity(usize::try_from(file.size).unwrap_or(0));
        std::io::Read::read_to_end(content, &mut bytes).map_err(|e| ArtifactError::Corrupt {
            detail: format!("{}: {e}", file.name),
        })?;
        // The pack-time Secret guard is CI's job; an artifact that shipped a Secret on purpose
        // (packed with --allow-secrets) must still apply.
        match manifests::parse_file(
            &file.name,
            &bytes,
            Rules {
                allow_secrets: true,
            },
        ) {
            Ok(objects) => out.extend(objects.into_iter().map(|o| Manifest {
                origin: format!("{}:{}", o.file, o.line),
                value: o.value,
            })),
            Err(source) => {
                failure = Some(FetchError::Manifest {
                    reference: reference.to_string(),
                    source,
                })
            }
        }
        Ok(())
    })
    .map_err(|source| FetchError::Artifact {
        reference: reference.to_string(),
        source,
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok((out, charged))
}

/// Manifests from a local directory (for `apply --dir`), read with the same parser as pack.
pub fn read_dir(dir: &Path) -> Result<Vec<Manifest>, FetchError> {
    let files = berth::input::collect_dir(dir)?;
    let mut out = Vec::new();
    for f in files {
        if !manifests::is_manifest_name(&f.name) {
            continue;
        }
        let bytes = f.read()?;
        let objects = manifests::parse_file(
            &f.name,
            &bytes,
            Rules {
                allow_secrets: true,
            },
        )
        .map_err(|source| FetchError::Manifest {
            reference: dir.display().to_string(),
            source,
        })?;
        out.extend(objects.into_iter().map(|o| Manifest {
            origin: format!("{}:{}", dir.join(&o.file).display(), o.line),
            value: o.value,
        }));
    }
    Ok(out)
}

/// Pull → verify → unpack of one digest, within `share` bytes of memory: the one place these
/// phases are put together, for the controller and the one-shot commands. Returns the
/// artifact and the bytes its manifests were charged (the layer itself is dropped here).
pub async fn fetch_digest(
    registry: &Registry,
    resolved: &Reference,
    digest: &Digest,
    trust: &Trust,
    share: u64,
    observer: &impl Observer,
) -> Result<(Artifact, u64), FetchError> {
    let pulled = pull(registry, resolved, digest, share).await;
    observer.request("pull", pulled.is_ok());
    let pulled = pulled?;
    let signer = verify(registry, resolved, digest, trust).await;
    observer.request("verify", signer.is_ok());
    let signer = signer?;
    let at = resolved.with_digest(digest.clone()).to_string();
    observer.check(&at, &pulled)?;
    let (manifests, charged) = unpack(&at, &pulled.layer, share)?;
    let artifact = Artifact {
        digest: digest.clone(),
        revision: pulled.revision,
        created: pulled.created,
        signer,
        manifests,
    };
    Ok((artifact, charged))
}

/// Resolve, then [`fetch_digest`]: one reference, for the one-shot commands.
pub async fn fetch(
    registry: &Registry,
    reference: &Reference,
    semver: Option<&str>,
    trust: &Trust,
    share: u64,
) -> Result<Artifact, FetchError> {
    let (resolved, digest) = resolve(registry, reference, semver).await?;
    let (artifact, _) =
        fetch_digest(registry, &resolved, &digest, trust, share, &Unobserved).await?;
    Ok(artifact)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests report failure by panicking
mod tests {
    use super::*;

    #[test]
    fn older_artifacts_are_refused_once_something_dated_was_applied() {
        let at = "oci://r/a@sha256:x";
        assert!(refuse_older(at, Some("2026-01-01T00:00:00Z"), None).is_ok());
        assert!(
            refuse_older(
                at,
                Some("2026-01-02T00:00:00Z"),
                Some("2026-01-01T00:00:00Z")
            )
            .is_ok()
        );
        assert!(
            refuse_older(
                at,
                Some("2026-01-01T00:00:00Z"),
                Some("2026-01-01T00:00:00Z")
            )
            .is_ok()
        );
        let e = refuse_older(
            at,
            Some("2025-12-31T23:59:59Z"),
            Some("2026-01-01T00:00:00Z"),
        )
        .unwrap_err();
        assert_eq!(e.reason(), reason::OLDER_ARTIFACT);
        assert!(
            e.to_string()
                .contains("created 2025-12-31T23:59:59Z, the applied one 2026-01-01T00:00:00Z"),
            "{e}"
        );
        assert!(refuse_older(at, None, Some("2026-01-01T00:00:00Z")).is_err());
        assert!(refuse_older(at, Some("yesterday"), Some("2026-01-01T00:00:00Z")).is_err());
    }
}
