//! Keyless (Sigstore) verification of one signature: a Sigstore bundle — or the classic `.sig`
//! layer's annotations turned into one — is accepted only when its certificate chains to a
//! Fulcio CA of the trust root valid at signing time, its SCT verifies against a CT log of the
//! root (where the root has CT logs), a Rekor entry (inclusion proof and signed checkpoint, or
//! SET) or a TSA timestamp proves it was made while the certificate was valid, the signature
//! covers the artifact, and the certificate's identity is one the caller trusts.
//!
//! The cryptography is the Sigstore project's `sigstore-verify`; this module chooses its policy,
//! names the check that failed in terms a user can act on and matches identities (`identity`).
//! It reads no clock of its own (`sigstore-verify` compares integrated times with the system
//! clock), no environment and no network: the trust root is passed in.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sigstore_verify::bundle::Error as BundleShapeError;
use sigstore_verify::types::bundle::VerificationMaterialContent;
use sigstore_verify::types::{Bundle, DerPublicKey, Sha256Hash};
use sigstore_verify::{
    CertificateError, Error as SigstoreError, PublicKeyVerificationPolicy, VerificationPolicy,
    VerificationResult,
};

use crate::digest::Digest;

use super::identity::{self, Identity, SignerIdentity};
use super::keys::PublicKey;
use super::trust_root::TrustRoot;

/// Layer annotation with the PEM signing certificate of a keyless classic signature.
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// Layer annotation with the PEM chain above it (intermediates and root). Not used: the trust
/// root's certificate authorities are the chain a certificate must reach.
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
/// Layer annotation with the Rekor entry (the "Rekor bundle": SET, body, time, index, log ID).
pub const REKOR_BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
/// Layer annotation with an RFC 3161 timestamp over the signature.
pub const TIMESTAMP_ANNOTATION: &str = "dev.sigstore.cosign/rfc3161timestamp";

/// What is verified: the signed bytes themselves, or their sha256 digest.
#[derive(Debug, Clone, Copy)]
pub enum Artifact<'a> {
    Bytes(&'a [u8]),
    Digest(&'a Digest),
}

/// The step of keyless verification that refused a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The bundle (or the classic annotations) could not be read: malformed JSON, unknown
    /// version, missing or contradictory material.
    Bundle,
    /// The trusted root itself cannot be used.
    TrustRoot,
    /// Certificate chain to a Fulcio CA of the trust root, its validity at signing time.
    Certificate,
    /// The certificate's Signed Certificate Timestamp against the root's CT logs.
    Sct,
    /// The Rekor entry: inclusion proof, checkpoint, SET, integrated time, consistency.
    TransparencyLog,
    /// RFC 3161 timestamps, or no trusted signing time at all.
    Timestamp,
    /// The signature over the artifact (or DSSE envelope) with the certificate's key.
    Signature,
    /// The bundle signs other content than the artifact.
    Artifact,
    /// A managed-key bundle checked for a certificate, or the other way round.
    Material,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Check::Bundle => "bundle",
            Check::TrustRoot => "trusted root",
            Check::Certificate => "certificate",
            Check::Sct => "SCT",
            Check::TransparencyLog => "transparency log",
            Check::Timestamp => "timestamp",
            Check::Signature => "signature",
            Check::Artifact => "artifact",
            Check::Material => "verification material",
        })
    }
}

/// Why a keyless signature was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeylessError {
    /// A verification step failed. `certificate` is what the (unverified) certificate claims,
    /// when there is one to read: it tells the user whose signature this was meant to be.
    #[error("{check} check failed: {detail}{}", claimed(certificate))]
    Failed {
        check: Check,
        detail: String,
        certificate: Option<SignerIdentity>,
    },
    /// Everything verified, but the signer is none of the trusted identities.
    #[error("signed by {found}, which is not a trusted identity: {}", reasons.join("; "))]
    Untrusted {
        found: SignerIdentity,
        reasons: Vec<String>,
    },
}

fn claimed(certificate: &Option<SignerIdentity>) -> String {
    certificate
        .as_ref()
        .map(|c| format!(" (certificate for {c})"))
        .unwrap_or_default()
}

impl KeylessError {
    /// The check that refused the signature (`None`: the identity did not match).
    pub fn check(&self) -> Option<Check> {
        match self {
            KeylessError::Failed { check, .. } => Some(*check),
            KeylessError::Untrusted { .. } => None,
        }
    }

    fn bundle(detail: impl Into<String>) -> KeylessError {
        KeylessError::Failed {
            check: Check::Bundle,
            detail: detail.into(),
            certificate: None,
        }
    }
}

/// A keyless signature that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeylessSigner {
    /// What the verified certificate says about its holder.
    pub identity: SignerIdentity,
    /// The policy identity it matched, as written in the policy.
    pub matched: String,
    /// The earliest verified signing time (Rekor integrated time or TSA), RFC 3339.
    pub signed_at: Option<String>,
    /// The trusted root that vouched for it.
    pub trust_root: String,
}

impl fmt::Display for KeylessSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "identity {}", self.identity)?;
        if let Some(at) = &self.signed_at {
            write!(f, ", signed {at}")?;
        }
        Ok(())
    }
}

/// Verify a Sigstore bundle (JSON, v0.1 to v0.3) over `artifact`, signed keylessly by one of
/// `identities`, against `root`.
pub fn verify_bundle(
    bundle: &[u8],
    artifact: Artifact<'_>,
    identities: &[Identity],
    root: &TrustRoot,
) -> Result<KeylessSigner, KeylessError> {
    verify_parsed(&parse(bundle)?, artifact, identities, root)
}

/// Verify a bundle signed with a managed key and logged in a transparency log of `root`: what
/// `cosign verify --key` checks without `--insecure-ignore-tlog`. berth's key policies do not
/// require the log (key-signed signatures made offline have none); this is for callers that do.
pub fn verify_bundle_with_key(
    bundle: &[u8],
    artifact: Artifact<'_>,
    key: &PublicKey,
    root: &TrustRoot,
) -> Result<(), KeylessError> {
    let bundle = parse(bundle)?;
    let policy = PublicKeyVerificationPolicy::new(DerPublicKey::new(key.to_der()));
    let policy = if root.has_tlogs() {
        policy
    } else {
        policy.skip_tlog_unsafe()
    };
    let result = match artifact {
        Artifact::Bytes(bytes) => root.verifier().verify(bytes, &bundle, &policy),
        Artifact::Digest(digest) => root.verifier().verify(sha256(digest)?, &bundle, &policy),
    };
    result.map(|_| ()).map_err(|e| failed(e, None, root))
}

/// What the signing certificate of a bundle claims, unverified: for telling a user whose
/// signature a policy without identities refused.
pub fn claimed_identity(bundle: &[u8]) -> Option<SignerIdentity> {
    claimed_by(&parse(bundle).ok()?)
}

/// What the certificate annotation of a classic layer claims, unverified.
pub fn claimed_identity_of_layer(annotations: &BTreeMap<String, String>) -> Option<SignerIdentity> {
    let pem = annotations.get(CERTIFICATE_ANNOTATION)?;
    let der = sigstore_verify::types::DerCertificate::from_pem(pem.trim()).ok()?;
    sigstore_verify::crypto::parse_certificate_info(&der)
        .ok()
        .map(|c| SignerIdentity::of(&c))
}

fn claimed_by(bundle: &Bundle) -> Option<SignerIdentity> {
    let certificate = bundle.signing_certificate()?;
    sigstore_verify::crypto::parse_certificate_info(certificate)
        .ok()
        .map(|c| SignerIdentity::of(&c))
}

fn parse(bytes: &[u8]) -> Result<Bundle, KeylessError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| KeylessError::bundle(format!("bundle is not UTF-8 text: {e}")))?;
    Bundle::from_json(text).map_err(|e| KeylessError::bundle(format!("not a Sigstore bundle: {e}")))
}

fn sha256(digest: &Digest) -> Result<Sha256Hash, KeylessError> {
    Sha256Hash::from_hex(digest.hex())
        .map_err(|e| KeylessError::bundle(format!("digest {digest} is not sha256: {e}")))
}

fn verify_parsed(
    bundle: &Bundle,
    artifact: Artifact<'_>,
    identities: &[Identity],
    root: &TrustRoot,
) -> Result<KeylessSigner, KeylessError> {
    // What the certificate claims, read before it is verified: only ever shown as a claim.
    let claimed = claimed_by(bundle);
    check_chain(bundle, &claimed)?;
    // Identities are matched here rather than by sigstore-verify, which knows only exact
    // subjects and issuers: it checks everything else, for any identity.
    let mut policy = VerificationPolicy::any_identity();
    if !root.has_ct_logs() {
        policy = policy.skip_sct();
    }
    if !root.has_tlogs() {
        policy = policy.skip_tlog_unsafe();
    }
    let result = match artifact {
        Artifact::Bytes(bytes) => root.verifier().verify(bytes, bundle, &policy),
        Artifact::Digest(digest) => root.verifier().verify(sha256(digest)?, bundle, &policy),
    }
    .map_err(|e| failed(e, claimed.clone(), root))?;
    signer(&result, identities, root)
}

/// A v0.1/v0.2 bundle's certificate chain must hold the signing certificate and stop below the
/// trust root: a root certificate in it would let the bundle, not the trusted root, say where
/// trust starts. sigstore-verify 0.15.1 accepts such a chain (conformance case
/// `bundle-with-root-cert_fail` is refused by it only because that bundle's inclusion proof
/// also lacks a checkpoint; `tests/sigstore_conformance.rs` shows the gap without that), and
/// reports an empty chain as a missing certificate only after other checks.
fn check_chain(bundle: &Bundle, claimed: &Option<SignerIdentity>) -> Result<(), KeylessError> {
    use x509_cert::der::Decode as _;
    let VerificationMaterialContent::X509CertificateChain { certificates } =
        &bundle.verification_material.content
    else {
        return Ok(());
    };
    if certificates.is_empty() {
        return Err(KeylessError::Failed {
            check: Check::Certificate,
            detail: "the bundle's certificate chain is empty: there is no signing certificate"
                .to_string(),
            certificate: None,
        });
    }
    for (position, certificate) in certificates.iter().enumerate().skip(1) {
        let Ok(parsed) = x509_cert::Certificate::from_der(certificate.raw_bytes.as_bytes()) else {
            continue; // unreadable: the certificate check refuses it with the parser's reason
        };
        let tbs = &parsed.tbs_certificate;
        if tbs.subject == tbs.issuer {
            return Err(KeylessError::Failed {
                check: Check::Certificate,
                detail: format!(
                    "the bundle's certificate chain contains a root certificate ('{}', position {}); a chain must end below the trusted root",
                    tbs.subject,
                    position + 1
                ),
                certificate: claimed.clone(),
            });
        }
    }
    Ok(())
}

fn signer(
    result: &VerificationResult,
    identities: &[Identity],
    root: &TrustRoot,
) -> Result<KeylessSigner, KeylessError> {
    let Some(certificate) = result.certificate() else {
        return Err(KeylessError::Failed {
            check: Check::Material,
            detail: "the bundle carries no certificate".to_string(),
            certificate: None,
        });
    };
    let found = SignerIdentity::of(certificate);
    match identity::find_match(identities, &found) {
        Ok(matched) => Ok(KeylessSigner {
            identity: found,
            matched: matched.to_string(),
            signed_at: result
                .verified_timestamps()
                .iter()
                .min()
                .map(|t| t.to_string()),
            trust_root: root.name().to_string(),
        }),
        Err(reasons) => Err(KeylessError::Untrusted { found, reasons }),
    }
}

/// Name the check a `sigstore-verify` error belongs to.
fn failed(e: SigstoreError, certificate: Option<SignerIdentity>, root: &TrustRoot) -> KeylessError {
    let check = match &e {
        SigstoreError::Certificate(CertificateError::Sct(_)) => Check::Sct,
        SigstoreError::Certificate(_) => Check::Certificate,
        SigstoreError::TransparencyLog(_) => Check::TransparencyLog,
        SigstoreError::Timestamp(_) => Check::Timestamp,
        SigstoreError::SignatureInvalid(_) | SigstoreError::Crypto(_) => Check::Signature,
        SigstoreError::ArtifactMismatch(_) | SigstoreError::UnsupportedArtifact(_) => {
            Check::Artifact
        }
        SigstoreError::InvalidTrustRoot(_)
        | SigstoreError::TrustRoot(_)
        | SigstoreError::TrustedCertificate(_) => Check::TrustRoot,
        SigstoreError::IdentityMismatch { .. } | SigstoreError::IssuerMismatch { .. } => {
            Check::Certificate
        }
        // Structural checks of the bundle that are about its log entry or its time evidence.
        SigstoreError::Bundle(
            BundleShapeError::MissingInclusionPromise(_)
            | BundleShapeError::MissingInclusionProof(_)
            | BundleShapeError::MissingCheckpoint
            | BundleShapeError::LogIndexOutOfRange { .. }
            | BundleShapeError::CheckpointRootMismatch,
        ) => Check::TransparencyLog,
        SigstoreError::Bundle(
            BundleShapeError::MissingSigningTimeEvidence | BundleShapeError::MissingTimestamp,
        ) => Check::Timestamp,
        _ => Check::Bundle,
    };
    let mut detail = e.to_string();
    if matches!(
        check,
        Check::Certificate
            | Check::Sct
            | Check::TransparencyLog
            | Check::Timestamp
            | Check::TrustRoot
    ) {
        detail = format!("{detail} (against {})", root.name());
    }
    KeylessError::Failed {
        check,
        detail,
        certificate,
    }
}

/// Whether a classic `.sig` layer is a keyless signature (it carries a certificate).
pub fn is_keyless_layer(annotations: &BTreeMap<String, String>) -> bool {
    annotations.contains_key(CERTIFICATE_ANNOTATION)
}

/// Verify a keyless classic signature: the simple-signing `payload` of a `.sig` layer and the
/// signature, certificate, Rekor entry and timestamp cosign left in its `annotations`. That
/// the payload names the right digest is the caller's check (`classic`).
pub fn verify_classic(
    annotations: &BTreeMap<String, String>,
    payload: &[u8],
    identities: &[Identity],
    root: &TrustRoot,
) -> Result<KeylessSigner, KeylessError> {
    if root.has_tlogs() && !annotations.contains_key(REKOR_BUNDLE_ANNOTATION) {
        return Err(KeylessError::Failed {
            check: Check::TransparencyLog,
            detail: format!(
                "the signature has no Rekor entry (no '{REKOR_BUNDLE_ANNOTATION}' annotation), and {} has transparency logs, so signatures must be logged in one",
                root.name()
            ),
            certificate: claimed_identity_of_layer(annotations),
        });
    }
    let bundle = classic_bundle(annotations, payload)?;
    verify_parsed(&bundle, Artifact::Bytes(payload), identities, root)
}

/// cosign's Rekor bundle annotation (not to be confused with a Sigstore bundle).
#[derive(serde::Deserialize)]
struct RekorBundle {
    #[serde(rename = "SignedEntryTimestamp")]
    signed_entry_timestamp: String,
    #[serde(rename = "Payload")]
    payload: RekorPayload,
}

#[derive(serde::Deserialize)]
struct RekorPayload {
    body: String,
    #[serde(rename = "integratedTime")]
    integrated_time: i64,
    #[serde(rename = "logIndex")]
    log_index: i64,
    #[serde(rename = "logID")]
    log_id: String,
}

#[derive(serde::Deserialize)]
struct EntryKind {
    kind: String,
    #[serde(rename = "apiVersion")]
    api_version: String,
}

#[derive(serde::Deserialize)]
struct Rfc3161Annotation {
    #[serde(rename = "SignedRFC3161Timestamp")]
    signed_rfc3161_timestamp: String,
}

/// The Sigstore bundle that a keyless classic layer amounts to. With a Rekor entry it is a
/// v0.1 bundle (the only version that accepts a SET without an inclusion proof, which is all
/// cosign keeps); without one, a v0.3 bundle whose signing time can only come from a timestamp.
fn classic_bundle(
    annotations: &BTreeMap<String, String>,
    payload: &[u8],
) -> Result<Bundle, KeylessError> {
    let annotation = |name: &str| annotations.get(name).map(|v| v.trim());
    let bad = |name: &str, detail: String| {
        KeylessError::bundle(format!("layer annotation '{name}': {detail}"))
    };
    let signature = annotation(super::classic::SIGNATURE_ANNOTATION).ok_or_else(|| {
        KeylessError::bundle(format!(
            "no '{}' annotation",
            super::classic::SIGNATURE_ANNOTATION
        ))
    })?;
    BASE64.decode(signature).map_err(|e| {
        bad(
            super::classic::SIGNATURE_ANNOTATION,
            format!("not base64: {e}"),
        )
    })?;
    let pem = annotation(CERTIFICATE_ANNOTATION)
        .ok_or_else(|| KeylessError::bundle(format!("no '{CERTIFICATE_ANNOTATION}' annotation")))?;
    let certificate = sigstore_verify::types::DerCertificate::from_pem(pem).map_err(|e| {
        bad(
            CERTIFICATE_ANNOTATION,
            format!("not a PEM certificate: {e}"),
        )
    })?;
    let certificate = BASE64.encode(certificate.as_bytes());

    let mut material = serde_json::Map::new();
    let mut tlog_entries = Vec::new();
    if let Some(text) = annotation(REKOR_BUNDLE_ANNOTATION) {
        let rekor: RekorBundle =
            serde_json::from_str(text).map_err(|e| bad(REKOR_BUNDLE_ANNOTATION, e.to_string()))?;
        let body = BASE64
            .decode(rekor.payload.body.trim())
            .map_err(|e| bad(REKOR_BUNDLE_ANNOTATION, format!("body is not base64: {e}")))?;
        let kind: EntryKind = serde_json::from_slice(&body).map_err(|e| {
            bad(
                REKOR_BUNDLE_ANNOTATION,
                format!("body is not a Rekor entry: {e}"),
            )
        })?;
        // A Rekor log ID is the sha256 of the log's public key.
        let log_id = Sha256Hash::from_hex(rekor.payload.log_id.trim()).map_err(|e| {
            bad(
                REKOR_BUNDLE_ANNOTATION,
                format!("logID is not a sha256 in hex: {e}"),
            )
        })?;
        tlog_entries.push(serde_json::json!({
            "logIndex": rekor.payload.log_index.to_string(),
            "logId": {"keyId": BASE64.encode(log_id.as_bytes())},
            "kindVersion": {"kind": kind.kind, "version": kind.api_version},
            "integratedTime": rekor.payload.integrated_time.to_string(),
            "inclusionPromise": {"signedEntryTimestamp": rekor.signed_entry_timestamp},
            "canonicalizedBody": rekor.payload.body.trim(),
        }));
    }
    let media_type = if tlog_entries.is_empty() {
        material.insert(
            "certificate".into(),
            serde_json::json!({"rawBytes": certificate}),
        );
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    } else {
        material.insert(
            "x509CertificateChain".into(),
            serde_json::json!({"certificates": [{"rawBytes": certificate}]}),
        );
        "application/vnd.dev.sigstore.bundle+json;version=0.1"
    };
    material.insert("tlogEntries".into(), serde_json::Value::Array(tlog_entries));
    if let Some(text) = annotation(TIMESTAMP_ANNOTATION) {
        let ts: Rfc3161Annotation =
            serde_json::from_str(text).map_err(|e| bad(TIMESTAMP_ANNOTATION, e.to_string()))?;
        material.insert(
            "timestampVerificationData".into(),
            serde_json::json!({"rfc3161Timestamps": [{"signedTimestamp": ts.signed_rfc3161_timestamp}]}),
        );
    }
    let digest = <sha2::Sha256 as sha2::Digest>::digest(payload);
    let bundle = serde_json::json!({
        "mediaType": media_type,
        "verificationMaterial": material,
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": BASE64.encode(digest)},
            "signature": signature,
        },
    });
    serde_json::from_value(bundle).map_err(|e| {
        KeylessError::bundle(format!(
            "the layer's annotations do not form a Sigstore bundle: {e}"
        ))
    })
}
