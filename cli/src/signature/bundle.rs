//! The Sigstore bundle scheme (cosign v3 default): a bundle v0.3 JSON document holding a DSSE
//! envelope around an in-toto statement whose subject is the signed manifest digest
//! (predicate type `https://sigstore.dev/cosign/sign/v1`), attached to the artifact as an
//! OCI 1.1 referrer manifest (`subject` = artifact, `artifactType` = bundle media type).
//!
//! This module builds and checks bundles and referrer manifests; it does no I/O.
//! Key-signed bundles made offline carry no transparency-log entry or timestamp; berth
//! trusts the key alone, like `cosign verify --key … --insecure-ignore-tlog`.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::oci::{Descriptor, ImageManifest, MEDIA_TYPE_EMPTY, MEDIA_TYPE_IMAGE_MANIFEST};

use super::keys::{PublicKey, SigningKey};

/// Media type of the bundles cosign v3 writes (also the referrer's `artifactType`).
pub const BUNDLE_MEDIA_TYPE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// Every Sigstore bundle media type starts with this; older versions are read too.
pub const BUNDLE_MEDIA_TYPE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";
/// DSSE payload type of an in-toto statement.
pub const INTOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// in-toto statement type cosign v3 writes.
pub const INTOTO_STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// The older statement type, still accepted when reading.
pub const INTOTO_STATEMENT_V01: &str = "https://in-toto.io/Statement/v0.1";
/// Predicate type of a plain `cosign sign` (as opposed to an attestation like an SBOM).
pub const COSIGN_SIGN_PREDICATE_TYPE: &str = "https://sigstore.dev/cosign/sign/v1";
/// Referrer manifest annotations cosign v3 sets.
pub const ANNOTATION_BUNDLE_CONTENT: &str = "dev.sigstore.bundle.content";
pub const ANNOTATION_BUNDLE_PREDICATE_TYPE: &str = "dev.sigstore.bundle.predicateType";
/// The OCI empty JSON blob used as the referrer's config.
pub const EMPTY_JSON: &[u8] = b"{}";
/// A key-signed bundle is about 1 KiB; certificate/tlog ones a few KiB. Bound what we parse.
pub const MAX_BUNDLE_BYTES: u64 = 1024 * 1024;

/// Errors from reading a bundle; each names the bundle (its blob digest) and the artifact.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle {bundle} is not a Sigstore bundle: {detail}")]
    Malformed { bundle: Digest, detail: String },
    #[error("bundle {bundle} has media type '{found}', not a Sigstore bundle")]
    WrongMediaType { bundle: Digest, found: String },
    #[error(
        "bundle {bundle} holds a message signature, not a DSSE envelope; berth reads cosign v3 image signatures (DSSE)"
    )]
    NotDsse { bundle: Digest },
    #[error("bundle {bundle}: DSSE payload type is '{found}', expected '{INTOTO_PAYLOAD_TYPE}'")]
    WrongPayloadType { bundle: Digest, found: String },
    #[error("bundle {bundle}: in-toto statement is invalid: {detail}")]
    BadStatement { bundle: Digest, detail: String },
    #[error(
        "bundle {bundle} is an attestation with predicate type '{found}', not a cosign signature ('{COSIGN_SIGN_PREDICATE_TYPE}')"
    )]
    NotASignature { bundle: Digest, found: String },
    #[error("bundle {bundle} signs {signed}, not {expected}: its subject is another artifact")]
    SubjectMismatch {
        bundle: Digest,
        signed: String,
        expected: Digest,
    },
    #[error("cannot encode the bundle: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A Sigstore bundle (protobuf-specs `Bundle`, JSON form). Unknown fields are ignored so
/// bundles with certificates, tlog entries or timestamps still parse.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    pub media_type: String,
    pub verification_material: VerificationMaterial,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsse_envelope: Option<Envelope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_signature: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationMaterial {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKeyIdentifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509_certificate_chain: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tlog_entries: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_verification_data: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublicKeyIdentifier {
    #[serde(default)]
    pub hint: String,
}

/// A DSSE envelope; `payload` and `sig` are base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub payload: String,
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    pub sig: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keyid: String,
}

/// An in-toto statement, reduced to what a signature check needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Statement {
    #[serde(rename = "_type")]
    pub kind: String,
    pub subject: Vec<Subject>,
    pub predicate_type: String,
    #[serde(default)]
    pub predicate: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subject {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

/// DSSE pre-authentication encoding: what is actually signed.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The in-toto statement cosign v3 signs for `digest`.
pub fn statement(digest: &Digest) -> Statement {
    Statement {
        kind: INTOTO_STATEMENT_V1.to_string(),
        subject: vec![Subject {
            name: String::new(),
            digest: BTreeMap::from([(
                crate::digest::ALGORITHM.to_string(),
                digest.hex().to_string(),
            )]),
        }],
        predicate_type: COSIGN_SIGN_PREDICATE_TYPE.to_string(),
        predicate: serde_json::Value::Object(serde_json::Map::new()),
    }
}

/// A key-signed bundle for `digest`, as `cosign sign --key` (v3, no tlog) writes it.
pub fn sign(key: &SigningKey, digest: &Digest) -> Result<Vec<u8>, BundleError> {
    let payload = serde_json::to_vec(&statement(digest))?;
    let signature = key.sign(&pae(INTOTO_PAYLOAD_TYPE, &payload));
    let bundle = Bundle {
        media_type: BUNDLE_MEDIA_TYPE_V03.to_string(),
        verification_material: VerificationMaterial {
            public_key: Some(PublicKeyIdentifier {
                hint: key.public_key().bundle_hint(),
            }),
            ..VerificationMaterial::default()
        },
        dsse_envelope: Some(Envelope {
            payload: BASE64.encode(&payload),
            payload_type: INTOTO_PAYLOAD_TYPE.to_string(),
            signatures: vec![EnvelopeSignature {
                sig: BASE64.encode(signature),
                keyid: String::new(),
            }],
        }),
        message_signature: None,
    };
    Ok(serde_json::to_vec(&bundle)?)
}

/// A bundle read and structurally checked for `expected`: DSSE in-toto statement whose
/// subject is exactly `expected` and whose predicate says it is a cosign signature.
/// The signature itself is checked by [`CheckedBundle::verifies_with`].
#[derive(Debug, Clone)]
pub struct CheckedBundle {
    pae: Vec<u8>,
    signatures: Vec<Vec<u8>>,
    /// The key hint the signer left, if any (base64 sha256 of its DER public key).
    pub hint: Option<String>,
    /// Whether the bundle carries a signing certificate (a keyless signature, for
    /// `keyless` to verify) rather than a key hint.
    pub keyless: bool,
}

impl CheckedBundle {
    /// Whether any envelope signature verifies with `key`.
    pub fn verifies_with(&self, key: &PublicKey) -> bool {
        self.signatures.iter().any(|sig| key.verify(&self.pae, sig))
    }
}

/// Parse the bundle blob `bundle_digest` and check it is a cosign signature of `expected`.
pub fn check(
    bundle_digest: &Digest,
    bytes: &[u8],
    expected: &Digest,
) -> Result<CheckedBundle, BundleError> {
    let malformed = |detail: String| BundleError::Malformed {
        bundle: bundle_digest.clone(),
        detail,
    };
    let bundle: Bundle = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
    if !bundle.media_type.starts_with(BUNDLE_MEDIA_TYPE_PREFIX) {
        return Err(BundleError::WrongMediaType {
            bundle: bundle_digest.clone(),
            found: bundle.media_type,
        });
    }
    let Some(envelope) = bundle.dsse_envelope else {
        return Err(BundleError::NotDsse {
            bundle: bundle_digest.clone(),
        });
    };
    if envelope.payload_type != INTOTO_PAYLOAD_TYPE {
        return Err(BundleError::WrongPayloadType {
            bundle: bundle_digest.clone(),
            found: envelope.payload_type,
        });
    }
    let payload = BASE64
        .decode(envelope.payload.trim())
        .map_err(|e| malformed(format!("payload is not base64: {e}")))?;
    let statement: Statement =
        serde_json::from_slice(&payload).map_err(|e| BundleError::BadStatement {
            bundle: bundle_digest.clone(),
            detail: e.to_string(),
        })?;
    if statement.kind != INTOTO_STATEMENT_V1 && statement.kind != INTOTO_STATEMENT_V01 {
        return Err(BundleError::BadStatement {
            bundle: bundle_digest.clone(),
            detail: format!("unknown statement type '{}'", statement.kind),
        });
    }
    if statement.predicate_type != COSIGN_SIGN_PREDICATE_TYPE {
        return Err(BundleError::NotASignature {
            bundle: bundle_digest.clone(),
            found: statement.predicate_type,
        });
    }
    // Every subject must be the artifact: a statement that also covers other content is
    // not a signature of exactly this digest.
    let subjects: Vec<String> = statement
        .subject
        .iter()
        .map(|s| match s.digest.get(crate::digest::ALGORITHM) {
            Some(hex) => format!("{}:{hex}", crate::digest::ALGORITHM),
            None => format!("{:?}", s.digest),
        })
        .collect();
    if subjects.is_empty() || subjects.iter().any(|s| *s != expected.to_string()) {
        return Err(BundleError::SubjectMismatch {
            bundle: bundle_digest.clone(),
            signed: if subjects.is_empty() {
                "nothing".to_string()
            } else {
                subjects.join(", ")
            },
            expected: expected.clone(),
        });
    }
    let mut signatures = Vec::with_capacity(envelope.signatures.len());
    for s in &envelope.signatures {
        signatures.push(
            BASE64
                .decode(s.sig.trim())
                .map_err(|e| malformed(format!("signature is not base64: {e}")))?,
        );
    }
    let keyless = bundle.verification_material.certificate.is_some()
        || bundle
            .verification_material
            .x509_certificate_chain
            .is_some();
    let hint = bundle
        .verification_material
        .public_key
        .map(|k| k.hint)
        .filter(|h| !h.is_empty());
    Ok(CheckedBundle {
        pae: pae(&envelope.payload_type, &payload),
        signatures,
        hint,
        keyless,
    })
}

/// The referrer manifest attaching bundle blob `bundle` to `subject`, in cosign v3's shape.
/// `created` is an RFC 3339 time for the `org.opencontainers.image.created` annotation.
pub fn referrer_manifest(
    subject: &Descriptor,
    bundle: &[u8],
    created: &str,
) -> Result<Vec<u8>, BundleError> {
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_IMAGE_MANIFEST.to_string()),
        artifact_type: Some(BUNDLE_MEDIA_TYPE_V03.to_string()),
        config: Descriptor {
            media_type: MEDIA_TYPE_EMPTY.to_string(),
            digest: Digest::of(EMPTY_JSON),
            size: EMPTY_JSON.len() as u64,
            // cosign v3 repeats the artifact type on the config descriptor; do the same so
            // tools that look there (older ORAS) classify the referrer alike.
            artifact_type: Some(BUNDLE_MEDIA_TYPE_V03.to_string()),
            annotations: BTreeMap::new(),
        },
        layers: vec![Descriptor {
            media_type: BUNDLE_MEDIA_TYPE_V03.to_string(),
            digest: Digest::of(bundle),
            size: bundle.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }],
        subject: Some(Descriptor {
            media_type: subject.media_type.clone(),
            digest: subject.digest.clone(),
            size: subject.size,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }),
        annotations: BTreeMap::from([
            (
                ANNOTATION_BUNDLE_CONTENT.to_string(),
                "dsse-envelope".to_string(),
            ),
            (
                ANNOTATION_BUNDLE_PREDICATE_TYPE.to_string(),
                COSIGN_SIGN_PREDICATE_TYPE.to_string(),
            ),
            (
                crate::oci::ANNOTATION_CREATED.to_string(),
                created.to_string(),
            ),
        ]),
    };
    Ok(serde_json::to_vec(&manifest)?)
}

/// Whether a referrer descriptor (from the referrers API or the tag-schema index) is a
/// Sigstore bundle.
pub fn is_bundle_referrer(descriptor: &Descriptor) -> bool {
    descriptor
        .artifact_type
        .as_deref()
        .is_some_and(|t| t.starts_with(BUNDLE_MEDIA_TYPE_PREFIX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests report failure by panicking
mod tests {
    use super::*;
    use crate::signature::test_digest as digest;

    #[test]
    fn pae_matches_dsse_spec_example() {
        // From the DSSE protocol description: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn signed_bundle_checks_for_its_subject_and_key() {
        let key = SigningKey::generate();
        let d = digest(1);
        let bytes = sign(&key, &d).unwrap();
        let bundle_digest = Digest::of(&bytes);
        let checked = check(&bundle_digest, &bytes, &d).unwrap();
        assert!(checked.verifies_with(key.public_key()));
        assert!(!checked.verifies_with(SigningKey::generate().public_key()));
        assert_eq!(
            checked.hint.as_deref(),
            Some(key.public_key().bundle_hint().as_str())
        );

        let err = check(&bundle_digest, &bytes, &digest(2)).unwrap_err();
        assert!(matches!(err, BundleError::SubjectMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&d.to_string()), "{err}");
    }

    #[test]
    fn bundle_json_has_v03_shape() {
        let key = SigningKey::generate();
        let bytes = sign(&key, &digest(1)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["mediaType"], BUNDLE_MEDIA_TYPE_V03);
        assert_eq!(v["dsseEnvelope"]["payloadType"], INTOTO_PAYLOAD_TYPE);
        assert!(v["verificationMaterial"]["publicKey"]["hint"].is_string());
        let payload = BASE64
            .decode(v["dsseEnvelope"]["payload"].as_str().unwrap())
            .unwrap();
        let st: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(st["_type"], INTOTO_STATEMENT_V1);
        assert_eq!(st["predicateType"], COSIGN_SIGN_PREDICATE_TYPE);
        assert_eq!(st["subject"][0]["digest"]["sha256"], digest(1).hex());
    }

    #[test]
    fn tampered_statement_fails_signature() {
        let key = SigningKey::generate();
        let d = digest(1);
        let mut v: serde_json::Value = serde_json::from_slice(&sign(&key, &d).unwrap()).unwrap();
        // Re-point the statement at another digest but keep the old signature.
        let forged = serde_json::to_vec(&statement(&digest(2))).unwrap();
        v["dsseEnvelope"]["payload"] = BASE64.encode(forged).into();
        let bytes = serde_json::to_vec(&v).unwrap();
        let checked = check(&Digest::of(&bytes), &bytes, &digest(2)).unwrap();
        assert!(!checked.verifies_with(key.public_key()));
    }

    #[test]
    fn attestations_are_not_signatures() {
        let key = SigningKey::generate();
        let d = digest(1);
        let mut st = statement(&d);
        st.predicate_type = "https://spdx.dev/Document".into();
        let payload = serde_json::to_vec(&st).unwrap();
        let sig = key.sign(&pae(INTOTO_PAYLOAD_TYPE, &payload));
        let bundle = serde_json::json!({
            "mediaType": BUNDLE_MEDIA_TYPE_V03,
            "verificationMaterial": {"publicKey": {"hint": ""}},
            "dsseEnvelope": {"payload": BASE64.encode(payload), "payloadType": INTOTO_PAYLOAD_TYPE, "signatures": [{"sig": BASE64.encode(sig)}]}
        });
        let bytes = serde_json::to_vec(&bundle).unwrap();
        let err = check(&Digest::of(&bytes), &bytes, &d).unwrap_err();
        assert!(matches!(err, BundleError::NotASignature { .. }), "{err}");
    }

    #[test]
    fn referrer_manifest_points_at_subject() {
        let subject = Descriptor {
            media_type: MEDIA_TYPE_IMAGE_MANIFEST.into(),
            digest: digest(7),
            size: 123,
            artifact_type: None,
            annotations: BTreeMap::new(),
        };
        let bundle = b"{\"mediaType\":\"x\"}";
        let m: ImageManifest = serde_json::from_slice(
            &referrer_manifest(&subject, bundle, "2024-01-01T00:00:00Z").unwrap(),
        )
        .unwrap();
        assert_eq!(m.subject.unwrap().digest, digest(7));
        assert_eq!(m.artifact_type.as_deref(), Some(BUNDLE_MEDIA_TYPE_V03));
        assert_eq!(m.layers[0].digest, Digest::of(bundle));
        assert_eq!(m.config.digest, Digest::of(b"{}"));
    }
}
