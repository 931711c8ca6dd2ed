//! Where signatures live in a registry, for both schemes: reading, writing and copying the
//! classic `sha256-<hex>.sig` tag and Sigstore bundle referrers (OCI 1.1 referrers API,
//! or the referrers tag schema — an index tagged `sha256-<hex>` — where the API is missing).

use std::collections::BTreeMap;

use crate::digest::Digest;
use crate::oci::{self, Descriptor, ImageIndex, ImageManifest};
use crate::registry::{BlobSource, Registry, RegistryError};

use super::bundle;
use super::classic;

/// Most signatures berth examines per artifact and scheme; a registry (or an attacker with
/// push access) could attach thousands, and the agent must not spend unbounded time on them.
pub const MAX_SIGNATURES_PER_SCHEME: usize = 64;

/// Errors reading or writing signature objects; each names the repository and digest.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("signature manifest {repo}:{tag} is malformed: {detail}")]
    BadSignatureManifest {
        repo: String,
        tag: String,
        detail: String,
    },
    #[error("referrers index {repo}:{tag} is malformed: {detail}")]
    BadReferrersIndex {
        repo: String,
        tag: String,
        detail: String,
    },
    #[error("referrer {repo}@{digest} is malformed: {detail}")]
    BadReferrer {
        repo: String,
        digest: Digest,
        detail: String,
    },
    #[error("cannot encode {what}: {detail}")]
    Encode { what: String, detail: String },
}

/// The artifact manifest a signature is about, as a descriptor (the referrer `subject`).
pub async fn subject_descriptor(
    registry: &Registry,
    repo: &str,
    digest: &Digest,
) -> Result<Descriptor, StoreError> {
    let (bytes, media_type) = registry.fetch_manifest(repo, digest).await?;
    Ok(Descriptor {
        media_type,
        digest: digest.clone(),
        size: bytes.len() as u64,
        artifact_type: None,
        annotations: BTreeMap::new(),
    })
}

/// The classic signature manifest of `digest`, if any: the parsed manifest and its tag.
pub async fn classic_manifest(
    registry: &Registry,
    repo: &str,
    digest: &Digest,
) -> Result<Option<ImageManifest>, StoreError> {
    let tag = classic::signature_tag(digest);
    let Some((bytes, _, _)) = registry.fetch_tagged_manifest(repo, &tag).await? else {
        return Ok(None);
    };
    classic::parse_signature_manifest(&bytes, &tag)
        .map(Some)
        .map_err(|e| StoreError::BadSignatureManifest {
            repo: repo.to_string(),
            tag,
            detail: e.to_string(),
        })
}

/// Add `layer` to the `.sig` manifest of `digest`, keeping signatures already there.
/// Returns the tag written.
pub async fn append_classic(
    registry: &Registry,
    repo: &str,
    digest: &Digest,
    layer: &classic::SignatureLayer,
) -> Result<String, StoreError> {
    let tag = classic::signature_tag(digest);
    let mut layers = match classic_manifest(registry, repo, digest).await? {
        Some(existing) => existing.layers,
        None => Vec::new(),
    };
    registry
        .push_blob(
            repo,
            &layer.descriptor.digest,
            layer.descriptor.size,
            BlobSource::Bytes(&layer.payload),
            None,
        )
        .await?;
    layers.push(layer.descriptor.clone());
    write_classic_manifest(registry, repo, &tag, &layers).await?;
    Ok(tag)
}

async fn write_classic_manifest(
    registry: &Registry,
    repo: &str,
    tag: &str,
    layers: &[Descriptor],
) -> Result<(), StoreError> {
    let (manifest, config) =
        classic::signature_manifest(layers).map_err(|e| StoreError::Encode {
            what: format!("signature manifest {repo}:{tag}"),
            detail: e.to_string(),
        })?;
    let config_digest = Digest::of(&config);
    registry
        .push_blob(
            repo,
            &config_digest,
            config.len() as u64,
            BlobSource::Bytes(&config),
            None,
        )
        .await?;
    registry
        .push_manifest(repo, &manifest, oci::MEDIA_TYPE_IMAGE_MANIFEST, tag)
        .await?;
    Ok(())
}

/// Whether the registry serves the OCI 1.1 referrers API for `repo`.
pub async fn has_referrers_api(
    registry: &Registry,
    repo: &str,
    digest: &Digest,
) -> Result<bool, StoreError> {
    Ok(registry.referrers(repo, digest, None).await?.is_some())
}

/// Descriptors of the Sigstore bundle referrers of `digest`: from the referrers API, or
/// from the referrers tag schema when the registry has no API.
pub async fn bundle_referrers(
    registry: &Registry,
    repo: &str,
    digest: &Digest,
) -> Result<Vec<Descriptor>, StoreError> {
    let index = match registry.referrers(repo, digest, None).await? {
        Some(index) => index,
        None => match fallback_index(registry, repo, digest).await? {
            Some(index) => index,
            None => return Ok(Vec::new()),
        },
    };
    Ok(index
        .manifests
        .into_iter()
        .filter(bundle::is_bundle_referrer)
        .collect())
}

/// The referrers tag-schema index (`sha256-<hex>` tag) of `digest`, if there is one.
async fn fallback_index(
    registry: &Registry,
    repo: &str,
    digest: &Digest,
) -> Result<Option<ImageIndex>, StoreError> {
    let tag = digest.tag_form();
    let Some((bytes, _, _)) = registry.fetch_tagged_manifest(repo, &tag).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::BadReferrersIndex {
            repo: repo.to_string(),
            tag,
            detail: e.to_string(),
        })
}

/// A bundle referrer read back: its manifest's layer descriptor and the bundle bytes.
#[derive(Debug, Clone)]
pub struct BundleBlob {
    /// The referrer manifest's digest (what the referrers API lists).
    pub referrer: Digest,
    /// The bundle blob's digest.
    pub blob: Digest,
    pub bytes: Vec<u8>,
}

/// Fetch the bundle held by referrer manifest `referrer`.
pub async fn fetch_bundle(
    registry: &Registry,
    repo: &str,
    referrer: &Digest,
) -> Result<BundleBlob, StoreError> {
    let (bytes, _) = registry.fetch_manifest(repo, referrer).await?;
    let bad = |detail: String| StoreError::BadReferrer {
        repo: repo.to_string(),
        digest: referrer.clone(),
        detail,
    };
    let manifest: ImageManifest = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let layer = manifest
        .layers
        .iter()
        .find(|l| l.media_type.starts_with(bundle::BUNDLE_MEDIA_TYPE_PREFIX))
        .ok_or_else(|| bad("no Sigstore bundle layer".to_string()))?;
    if layer.size > bundle::MAX_BUNDLE_BYTES {
        return Err(bad(format!(
            "bundle layer is {} bytes, more than {}",
            layer.size,
            bundle::MAX_BUNDLE_BYTES
        )));
    }
    let blob = registry
        .fetch_blob_bytes(repo, &layer.digest, bundle::MAX_BUNDLE_BYTES)
        .await?;
    Ok(BundleBlob {
        referrer: referrer.clone(),
        blob: layer.digest.clone(),
        bytes: blob,
    })
}

/// Attach `bundle_bytes` to `subject` as a referrer; where the registry lacks the referrers
/// API also record it in the tag-schema index. Returns the referrer manifest's digest.
pub async fn attach_bundle(
    registry: &Registry,
    repo: &str,
    subject: &Descriptor,
    bundle_bytes: &[u8],
    created: &str,
) -> Result<Digest, StoreError> {
    registry
        .push_blob(
            repo,
            &Digest::of(bundle::EMPTY_JSON),
            bundle::EMPTY_JSON.len() as u64,
            BlobSource::Bytes(bundle::EMPTY_JSON),
            None,
        )
        .await?;
    registry
        .push_blob(
            repo,
            &Digest::of(bundle_bytes),
            bundle_bytes.len() as u64,
            BlobSource::Bytes(bundle_bytes),
            None,
        )
        .await?;
    let manifest = bundle::referrer_manifest(subject, bundle_bytes, created).map_err(|e| {
        StoreError::Encode {
            what: format!("referrer of {repo}@{}", subject.digest),
            detail: e.to_string(),
        }
    })?;
    push_referrer_manifest(registry, repo, &subject.digest, &manifest).await
}

/// Push a referrer manifest by digest and, where the registry has no referrers API, add it
/// to the tag-schema index so readers without the API find it.
async fn push_referrer_manifest(
    registry: &Registry,
    repo: &str,
    subject: &Digest,
    manifest_bytes: &[u8],
) -> Result<Digest, StoreError> {
    let digest = Digest::of(manifest_bytes);
    registry
        .push_manifest(
            repo,
            manifest_bytes,
            oci::MEDIA_TYPE_IMAGE_MANIFEST,
            &digest.to_string(),
        )
        .await?;
    if has_referrers_api(registry, repo, subject).await? {
        return Ok(digest);
    }
    let manifest: ImageManifest =
        serde_json::from_slice(manifest_bytes).map_err(|e| StoreError::BadReferrer {
            repo: repo.to_string(),
            digest: digest.clone(),
            detail: e.to_string(),
        })?;
    let tag = subject.tag_form();
    let mut index = fallback_index(registry, repo, subject)
        .await?
        .unwrap_or(ImageIndex {
            schema_version: 2,
            media_type: Some(oci::MEDIA_TYPE_IMAGE_INDEX.to_string()),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
        });
    if !index.manifests.iter().any(|d| d.digest == digest) {
        index.manifests.push(Descriptor {
            media_type: oci::MEDIA_TYPE_IMAGE_MANIFEST.to_string(),
            digest: digest.clone(),
            size: manifest_bytes.len() as u64,
            artifact_type: manifest
                .artifact_type
                .clone()
                .or_else(|| Some(manifest.config.media_type.clone())),
            annotations: manifest.annotations.clone(),
        });
        let bytes = serde_json::to_vec(&index).map_err(|e| StoreError::Encode {
            what: format!("referrers index {repo}:{tag}"),
            detail: e.to_string(),
        })?;
        registry
            .push_manifest(repo, &bytes, oci::MEDIA_TYPE_IMAGE_INDEX, &tag)
            .await?;
    }
    Ok(digest)
}

/// What [`copy_signatures`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopiedSignatures {
    /// Classic signature layers copied (0 when the source had none).
    pub classic: usize,
    /// Bundle referrers copied.
    pub bundles: usize,
}

/// Copy every signature of `digest` (both schemes) from `src` to `dst`, e.g. on promote.
/// The artifact manifest must already be at the destination (a referrer needs its subject
/// on registries that check). Classic signatures already at the destination are kept.
pub async fn copy_signatures(
    src: &Registry,
    src_repo: &str,
    dst: &Registry,
    dst_repo: &str,
    digest: &Digest,
) -> Result<CopiedSignatures, StoreError> {
    let mut copied = CopiedSignatures::default();

    if let Some(source) = classic_manifest(src, src_repo, digest).await? {
        let mut layers = match classic_manifest(dst, dst_repo, digest).await? {
            Some(existing) => existing.layers,
            None => Vec::new(),
        };
        for layer in source.layers.iter().take(MAX_SIGNATURES_PER_SCHEME) {
            if layers
                .iter()
                .any(|l| l.digest == layer.digest && l.annotations == layer.annotations)
            {
                continue;
            }
            let payload = src
                .fetch_blob_bytes(src_repo, &layer.digest, classic::MAX_PAYLOAD_BYTES)
                .await?;
            dst.push_blob(
                dst_repo,
                &layer.digest,
                payload.len() as u64,
                BlobSource::Bytes(&payload),
                None,
            )
            .await?;
            layers.push(layer.clone());
            copied.classic += 1;
        }
        if copied.classic > 0 {
            write_classic_manifest(dst, dst_repo, &classic::signature_tag(digest), &layers).await?;
        }
    }

    let referrers = bundle_referrers(src, src_repo, digest).await?;
    for referrer in referrers.iter().take(MAX_SIGNATURES_PER_SCHEME) {
        let (manifest_bytes, _) = src.fetch_manifest(src_repo, &referrer.digest).await?;
        let manifest: ImageManifest =
            serde_json::from_slice(&manifest_bytes).map_err(|e| StoreError::BadReferrer {
                repo: src_repo.to_string(),
                digest: referrer.digest.clone(),
                detail: e.to_string(),
            })?;
        for blob in std::iter::once(&manifest.config).chain(manifest.layers.iter()) {
            if blob.size > bundle::MAX_BUNDLE_BYTES {
                return Err(StoreError::BadReferrer {
                    repo: src_repo.to_string(),
                    digest: referrer.digest.clone(),
                    detail: format!(
                        "blob {} is {} bytes, more than {}",
                        blob.digest,
                        blob.size,
                        bundle::MAX_BUNDLE_BYTES
                    ),
                });
            }
            let bytes = src
                .fetch_blob_bytes(src_repo, &blob.digest, bundle::MAX_BUNDLE_BYTES)
                .await?;
            dst.push_blob(
                dst_repo,
                &blob.digest,
                bytes.len() as u64,
                BlobSource::Bytes(&bytes),
                None,
            )
            .await?;
        }
        // Same bytes, so the referrer keeps its digest at the destination.
        push_referrer_manifest(dst, dst_repo, digest, &manifest_bytes).await?;
        copied.bundles += 1;
    }
    Ok(copied)
}

/// RFC 3339 UTC time for the referrer's `created` annotation: `source_date_epoch` (seconds,
/// the reproducible-builds `SOURCE_DATE_EPOCH` when the caller honours it) when given and
/// valid, else now. Signatures are records of an act, so the wall clock is the honest default
/// here (unlike artifacts, which must be reproducible).
pub fn signed_at(source_date_epoch: Option<&str>) -> String {
    let secs = source_date_epoch
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    rfc3339(secs)
}

fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests report failure by panicking
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
