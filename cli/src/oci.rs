//! The OCI image-spec JSON documents berth reads and writes: descriptors, image manifests
//! and image indexes (incl. the referrers API response), plus the media types berth uses.
//! Field order here is the serialized order, which matters for reproducible digests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const MEDIA_TYPE_IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_IMAGE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Flux's artifact config media type (`flux push artifact`).
pub const MEDIA_TYPE_FLUX_CONFIG: &str = "application/vnd.cncf.flux.config.v1+json";
/// Flux's artifact content layer media type.
pub const MEDIA_TYPE_FLUX_CONTENT: &str = "application/vnd.cncf.flux.content.v1.tar+gzip";
/// Generic gzip-compressed tar layers, as `oras push` or image builds write them.
pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// The OCI 1.1 empty descriptor (`{}`), used as config by artifacts without one.
pub const MEDIA_TYPE_EMPTY: &str = "application/vnd.oci.empty.v1+json";

pub const ANNOTATION_SOURCE: &str = "org.opencontainers.image.source";
pub const ANNOTATION_REVISION: &str = "org.opencontainers.image.revision";
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
/// OCI image layout: the tag a manifest carries inside `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Manifest media types a registry may answer with for the references berth follows.
pub const ACCEPTED_MANIFEST_TYPES: &[&str] = &[
    MEDIA_TYPE_IMAGE_MANIFEST,
    MEDIA_TYPE_IMAGE_INDEX,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
];

/// A content descriptor: what a manifest or index says about a blob or manifest it points to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image manifest (also used for artifacts and signatures).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image index: a list of manifests (also the referrers API's answer and `index.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageIndex {
    /// An empty index with the OCI media type.
    pub fn empty() -> ImageIndex {
        ImageIndex {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_IMAGE_INDEX.to_string()),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }
}

/// The `mediaType` field of a manifest document, if it has one.
pub fn media_type_of(manifest: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
    }
    serde_json::from_slice::<Probe>(manifest)
        .ok()
        .and_then(|p| p.media_type)
}

/// Some registries (olareg) answer an empty referrers list as `"manifests": null`; Go's
/// encoding/json writes nil slices that way. Read `null` as an empty list.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Descriptor>, D::Error> {
    Ok(Option::<Vec<Descriptor>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests report failure by panicking
mod tests {
    use super::*;

    #[test]
    fn empty_referrers_list_written_as_null_parses_as_empty() {
        let index: ImageIndex = serde_json::from_str(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":null}"#,
        )
        .unwrap();
        assert!(index.manifests.is_empty());
    }
}
