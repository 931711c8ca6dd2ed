//! The classic cosign signature scheme (cosign v1/v2 default): a simple-signing JSON
//! payload naming the signed manifest digest, signed with ECDSA, stored as one layer of an
//! OCI image manifest tagged `sha256-<hex>.sig` next to the artifact, the base64 signature
//! in the layer's `dev.cosignproject.cosign/signature` annotation.
//!
//! This module builds and checks payloads and signature manifests; it does no I/O.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::oci::{Descriptor, ImageManifest, MEDIA_TYPE_IMAGE_MANIFEST};

use super::keys::{PublicKey, SigningKey};

/// Media type of a simple-signing payload layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Layer annotation holding the base64 signature over the payload bytes.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of every cosign image signature payload.
pub const COSIGN_SIGNATURE_TYPE: &str = "cosign container image signature";
/// Config media type of cosign's signature manifests (a go-containerregistry image config).
pub const SIGNATURE_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Suffix of the tag cosign stores signatures under: `sha256-<hex>.sig`.
pub const SIGNATURE_TAG_SUFFIX: &str = ".sig";
/// A payload is a few hundred bytes; bound what we parse from a registry.
pub const MAX_PAYLOAD_BYTES: u64 = 64 * 1024;

/// Errors from reading a classic signature; each names the digest involved.
#[derive(Debug, thiserror::Error)]
pub enum ClassicError {
    #[error("signature payload {layer} is not a cosign simple-signing document: {detail}")]
    BadPayload { layer: Digest, detail: String },
    #[error("signature payload {layer} has type '{found}', expected '{COSIGN_SIGNATURE_TYPE}'")]
    WrongType { layer: Digest, found: String },
    #[error("signature {layer} signs {signed}, not {expected}: it was made for another artifact")]
    DigestMismatch {
        layer: Digest,
        signed: String,
        expected: Digest,
    },
    #[error("signature layer {layer} has no '{SIGNATURE_ANNOTATION}' annotation")]
    MissingSignature { layer: Digest },
    #[error("signature layer {layer}: annotation '{SIGNATURE_ANNOTATION}' is not base64: {detail}")]
    BadSignatureEncoding { layer: Digest, detail: String },
    #[error("signature manifest {manifest} is not valid JSON: {detail}")]
    BadManifest { manifest: String, detail: String },
    #[error("cannot encode the signature manifest: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The simple-signing payload (containers/image "atomic container signature" shape,
/// cosign's type). Field order matches cosign's Go structs, so our bytes look like theirs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimpleSigning {
    pub critical: Critical,
    /// cosign's `-a key=value` annotations; `null` when there are none.
    #[serde(default)]
    pub optional: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Critical {
    pub identity: Identity,
    pub image: Image,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

/// The payload bytes for signing `digest`, found in repository `docker_reference`
/// (`host[:port]/repo`, as cosign writes it).
pub fn payload(
    docker_reference: &str,
    digest: &Digest,
    annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    let optional = if annotations.is_empty() {
        None
    } else {
        Some(
            annotations
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        )
    };
    let doc = SimpleSigning {
        critical: Critical {
            identity: Identity {
                docker_reference: docker_reference.to_string(),
            },
            image: Image {
                docker_manifest_digest: digest.to_string(),
            },
            kind: COSIGN_SIGNATURE_TYPE.to_string(),
        },
        optional,
    };
    // Serializing plain strings and maps cannot fail.
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// One signature in a `.sig` manifest: the payload bytes and the layer descriptor that
/// carries its signature annotation.
#[derive(Debug, Clone)]
pub struct SignatureLayer {
    pub descriptor: Descriptor,
    pub payload: Vec<u8>,
}

impl SignatureLayer {
    /// Sign `digest` with `key`: payload + descriptor with the base64 signature annotation.
    pub fn sign(key: &SigningKey, docker_reference: &str, digest: &Digest) -> SignatureLayer {
        let payload = payload(docker_reference, digest, &BTreeMap::new());
        let signature = key.sign(&payload);
        let mut annotations = BTreeMap::new();
        annotations.insert(SIGNATURE_ANNOTATION.to_string(), BASE64.encode(signature));
        SignatureLayer {
            descriptor: Descriptor {
                media_type: SIMPLE_SIGNING_MEDIA_TYPE.to_string(),
                digest: Digest::of(&payload),
                size: payload.len() as u64,
                artifact_type: None,
                annotations,
            },
            payload,
        }
    }
}

/// What checking a classic signature layer against a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerCheck {
    /// The signature verifies with the key and names the expected digest.
    Verified,
    /// The signature does not verify with this key.
    BadSignature,
}

/// Check a `.sig` layer: the payload must be a cosign payload for exactly `expected`,
/// and the annotation's signature must verify over the payload bytes with `key`.
/// The caller has checked that `payload` matches `descriptor.digest`.
pub fn check_layer(
    descriptor: &Descriptor,
    payload: &[u8],
    expected: &Digest,
    key: &PublicKey,
) -> Result<LayerCheck, ClassicError> {
    let signed = signed_digest(descriptor, payload)?;
    if signed != expected.to_string() {
        return Err(ClassicError::DigestMismatch {
            layer: descriptor.digest.clone(),
            signed,
            expected: expected.clone(),
        });
    }
    let signature = layer_signature(descriptor)?;
    Ok(if key.verify(payload, &signature) {
        LayerCheck::Verified
    } else {
        LayerCheck::BadSignature
    })
}

/// The digest a payload claims to sign (checked for type, not for signature).
pub fn signed_digest(descriptor: &Descriptor, payload: &[u8]) -> Result<String, ClassicError> {
    let doc: SimpleSigning =
        serde_json::from_slice(payload).map_err(|e| ClassicError::BadPayload {
            layer: descriptor.digest.clone(),
            detail: e.to_string(),
        })?;
    if doc.critical.kind != COSIGN_SIGNATURE_TYPE {
        return Err(ClassicError::WrongType {
            layer: descriptor.digest.clone(),
            found: doc.critical.kind,
        });
    }
    Ok(doc.critical.image.docker_manifest_digest)
}

/// The repository a payload says it was signed in (`critical.identity.docker-reference`),
/// `None` when the payload is not simple-signing JSON.
pub fn signed_reference(payload: &[u8]) -> Option<String> {
    serde_json::from_slice::<SimpleSigning>(payload)
        .ok()
        .map(|doc| doc.critical.identity.docker_reference)
}

/// The raw signature bytes from a layer's annotation.
pub fn layer_signature(descriptor: &Descriptor) -> Result<Vec<u8>, ClassicError> {
    let b64 = descriptor
        .annotations
        .get(SIGNATURE_ANNOTATION)
        .ok_or_else(|| ClassicError::MissingSignature {
            layer: descriptor.digest.clone(),
        })?;
    BASE64
        .decode(b64.trim())
        .map_err(|e| ClassicError::BadSignatureEncoding {
            layer: descriptor.digest.clone(),
            detail: e.to_string(),
        })
}

/// The tag cosign stores `digest`'s signatures under.
pub fn signature_tag(digest: &Digest) -> String {
    format!("{}{SIGNATURE_TAG_SUFFIX}", digest.tag_form())
}

/// A `.sig` manifest holding `layers`, in the shape cosign writes (OCI manifest whose config
/// is a minimal image config listing the layers as its rootfs). Returns manifest and config bytes.
pub fn signature_manifest(layers: &[Descriptor]) -> Result<(Vec<u8>, Vec<u8>), ClassicError> {
    let config = serde_json::to_vec(&SignatureConfig {
        architecture: "",
        created: "0001-01-01T00:00:00Z",
        history: layers
            .iter()
            .map(|_| History {
                created: "0001-01-01T00:00:00Z",
            })
            .collect(),
        os: "",
        rootfs: RootFs {
            kind: "layers",
            diff_ids: layers.iter().map(|l| l.digest.to_string()).collect(),
        },
        config: Empty {},
    })?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_IMAGE_MANIFEST.to_string()),
        artifact_type: None,
        config: Descriptor {
            media_type: SIGNATURE_CONFIG_MEDIA_TYPE.to_string(),
            digest: Digest::of(&config),
            size: config.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::new(),
        },
        layers: layers.to_vec(),
        subject: None,
        annotations: BTreeMap::new(),
    };
    Ok((serde_json::to_vec(&manifest)?, config))
}

/// Parse a `.sig` manifest (OCI or Docker media type; cosign has written both).
pub fn parse_signature_manifest(bytes: &[u8], name: &str) -> Result<ImageManifest, ClassicError> {
    serde_json::from_slice(bytes).map_err(|e| ClassicError::BadManifest {
        manifest: name.to_string(),
        detail: e.to_string(),
    })
}

// go-containerregistry's image config, reduced to what an empty image with N layers has.
#[derive(Serialize)]
struct SignatureConfig {
    architecture: &'static str,
    created: &'static str,
    history: Vec<History>,
    os: &'static str,
    rootfs: RootFs,
    config: Empty,
}

#[derive(Serialize)]
struct History {
    created: &'static str,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct Empty {}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests report failure by panicking
mod tests {
    use super::*;
    use crate::signature::test_digest as digest;

    #[test]
    fn payload_has_cosign_shape_and_field_order() {
        let d = digest(1);
        let bytes = payload("127.0.0.1:5000/team/app", &d, &BTreeMap::new());
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"127.0.0.1:5000/team/app"}},"image":{{"docker-manifest-digest":"{d}"}},"type":"cosign container image signature"}},"optional":null}}"#
            )
        );
    }

    #[test]
    fn signed_layer_verifies_for_its_digest_only() {
        let key = SigningKey::generate();
        let d = digest(1);
        let layer = SignatureLayer::sign(&key, "r/app", &d);
        assert_eq!(layer.descriptor.digest, Digest::of(&layer.payload));
        assert_eq!(
            check_layer(&layer.descriptor, &layer.payload, &d, key.public_key()).unwrap(),
            LayerCheck::Verified
        );
        // A signature copied onto another artifact names the digest it really signed.
        let err = check_layer(
            &layer.descriptor,
            &layer.payload,
            &digest(2),
            key.public_key(),
        )
        .unwrap_err();
        assert!(matches!(err, ClassicError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&d.to_string()));
        // Another key does not verify it.
        let other = SigningKey::generate();
        assert_eq!(
            check_layer(&layer.descriptor, &layer.payload, &d, other.public_key()).unwrap(),
            LayerCheck::BadSignature
        );
    }

    #[test]
    fn corrupted_signature_does_not_verify() {
        let key = SigningKey::generate();
        let d = digest(3);
        let mut layer = SignatureLayer::sign(&key, "r/app", &d);
        let mut sig = layer_signature(&layer.descriptor).unwrap();
        let last = sig.len() - 3;
        sig[last] ^= 0x01;
        layer
            .descriptor
            .annotations
            .insert(SIGNATURE_ANNOTATION.into(), BASE64.encode(sig));
        assert_eq!(
            check_layer(&layer.descriptor, &layer.payload, &d, key.public_key()).unwrap(),
            LayerCheck::BadSignature
        );
    }

    #[test]
    fn signature_manifest_lists_every_layer_with_annotations() {
        let key = SigningKey::generate();
        let a = SignatureLayer::sign(&key, "r/app", &digest(1));
        let b = SignatureLayer::sign(&SigningKey::generate(), "r/app", &digest(1));
        let (manifest, config) =
            signature_manifest(&[a.descriptor.clone(), b.descriptor.clone()]).unwrap();
        let parsed = parse_signature_manifest(&manifest, "t").unwrap();
        assert_eq!(parsed.layers.len(), 2);
        assert_eq!(parsed.config.digest, Digest::of(&config));
        assert!(
            parsed
                .layers
                .iter()
                .all(|l| l.annotations.contains_key(SIGNATURE_ANNOTATION))
        );
        let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"][1],
            b.descriptor.digest.to_string()
        );
    }

    #[test]
    fn signature_tag_is_cosign_tag() {
        let d = digest(9);
        assert_eq!(signature_tag(&d), format!("sha256-{}.sig", d.hex()));
    }
}
