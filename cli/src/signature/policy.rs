//! The trust policy and the verification of an artifact digest against it: every signature
//! attached to the digest (classic `.sig` layers and Sigstore bundle referrers) is examined,
//! and the artifact is trusted when one of them names exactly that digest AND verifies with a
//! trusted key or, keyless, was made by a trusted identity. This is what the agent calls
//! before it unpacks anything.

use std::fmt;

use crate::digest::Digest;
use crate::registry::Registry;

use super::identity::Identity;
use super::keyless::{self, KeylessSigner};
use super::keys::PublicKey;
use super::store::{self, StoreError};
use super::trust_root::TrustRoot;
use super::{Format, bundle, classic};

/// Who may sign an artifact: any one of the keys, or any one of the keyless identities.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    pub keys: Vec<PublicKey>,
    /// Keyless signers, and the Sigstore root their certificates and log entries must chain to.
    pub keyless: Option<KeylessTrust>,
    /// When set (`host[:port]/repository`), a signature counts only if it names this
    /// repository as the one it was made in (the classic payload's `docker-reference`). This
    /// stops a digest copied with its signature into another repository. A Sigstore bundle
    /// names no repository, so it cannot satisfy this.
    pub repository: Option<String>,
}

/// The keyless half of a trust policy.
#[derive(Debug, Clone)]
pub struct KeylessTrust {
    pub identities: Vec<Identity>,
    pub root: TrustRoot,
}

impl TrustPolicy {
    pub fn new(keys: Vec<PublicKey>) -> TrustPolicy {
        TrustPolicy {
            keys,
            keyless: None,
            repository: None,
        }
    }

    /// The same keys, and also signatures made keylessly by one of `identities`, as vouched
    /// for by `root`.
    pub fn with_identities(mut self, identities: Vec<Identity>, root: TrustRoot) -> TrustPolicy {
        self.keyless = Some(KeylessTrust { identities, root });
        self
    }

    /// The keyless identities trusted (none without a keyless part).
    pub fn identities(&self) -> &[Identity] {
        self.keyless
            .as_ref()
            .map_or(&[], |k| k.identities.as_slice())
    }

    /// Whether nothing at all is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.identities().is_empty()
    }

    /// Every key and identity trusted, for messages (and for telling two policies apart).
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("key {} ({})", k.fingerprint(), k.source()))
            .collect();
        if let Some(keyless) = &self.keyless {
            parts.extend(keyless.identities.iter().map(|i| format!("identity {i}")));
            if !keyless.identities.is_empty() {
                parts.push(format!("trusted root: {}", keyless.root.name()));
            }
        }
        parts.join(", ")
    }

    /// The same keys, and only signatures made in `repository` (`host[:port]/path`).
    pub fn in_repository(mut self, repository: impl Into<String>) -> TrustPolicy {
        self.repository = Some(repository.into());
        self
    }
}

/// Who made a signature that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// A trusted key: sha256 of its DER public key, and where it came from (file, Secret).
    Key { fingerprint: Digest, source: String },
    /// A trusted keyless identity.
    Identity(KeylessSigner),
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signer::Key {
                fingerprint,
                source,
            } => write!(f, "key {fingerprint} ({source})"),
            Signer::Identity(signer) => write!(f, "{signer}"),
        }
    }
}

/// A signature that verified: who signed, in which format, where it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// The artifact digest the signature covers (always the one asked about).
    pub digest: Digest,
    pub format: Format,
    pub signer: Signer,
    /// Where the signature is stored: `tag sha256-….sig, layer sha256:…` or `referrer sha256:…`.
    pub location: String,
}

impl fmt::Display for VerifiedSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} signature of {} verified ({}) at {}",
            self.format, self.digest, self.signer, self.location
        )
    }
}

/// One signature found for a digest and what checking it gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundSignature {
    pub format: Format,
    pub location: String,
    pub status: SignatureStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureStatus {
    /// Made by this trusted signer.
    Verified(Signer),
    /// Not acceptable; the reason says why (no trusted key verifies it, wrong digest, which
    /// keyless check failed or which identity signed, malformed…).
    Rejected { reason: String },
}

/// Why an artifact is not trusted. Each variant names the digest.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("trust policy for {digest} trusts no key and no identity; give at least one")]
    EmptyPolicy { digest: Digest },
    #[error(
        "{digest} has no signatures (looked for cosign tag {tag} and Sigstore bundle referrers)"
    )]
    Unsigned { digest: Digest, tag: String },
    #[error("no signature of {digest} is trusted by the policy ({trusted}):\n  - {}", reasons.join("\n  - "))]
    NoneVerified {
        digest: Digest,
        /// The policy's keys and identities.
        trusted: String,
        reasons: Vec<String>,
    },
    #[error("cannot read the signatures of {digest}: {source}")]
    Store { digest: Digest, source: StoreError },
}

impl VerifyError {
    /// What the user can do next.
    pub fn hint(&self) -> &'static str {
        match self {
            VerifyError::EmptyPolicy { .. } => {
                "pass --key with the signer's public key (cosign.pub), or --certificate-identity and --certificate-oidc-issuer for a keyless signer"
            }
            VerifyError::Unsigned { .. } => {
                "sign it with `berth sign oci://…@sha256:… --key cosign.key` (or cosign sign)"
            }
            VerifyError::NoneVerified { .. } => {
                "check that the signature was made for this digest, and that the public key, or the identity and trusted root, are the signer's"
            }
            VerifyError::Store { .. } => "check registry access; the signatures could not be read",
        }
    }

    /// Whether the failure is about trust (a verdict) rather than about reaching the registry.
    pub fn is_verdict(&self) -> bool {
        !matches!(self, VerifyError::Store { .. })
    }
}

/// Check every signature of `digest` in `repo` against `policy` and report each one.
/// Registry failures abort (the caller cannot conclude anything); bad signatures do not.
pub async fn examine(
    registry: &Registry,
    repo: &str,
    digest: &Digest,
    policy: &TrustPolicy,
) -> Result<Vec<FoundSignature>, VerifyError> {
    let examination = Examination {
        registry,
        repo,
        digest,
        policy,
    };
    let mut found = examination.classic().await?;
    found.extend(examination.bundles().await?);
    Ok(found)
}

/// The signatures of one digest in one repository, checked against one policy.
struct Examination<'a> {
    registry: &'a Registry,
    repo: &'a str,
    digest: &'a Digest,
    policy: &'a TrustPolicy,
}

impl Examination<'_> {
    /// The classic `.sig` signatures of the digest.
    async fn classic(&self) -> Result<Vec<FoundSignature>, VerifyError> {
        let tag = classic::signature_tag(self.digest);
        let manifest = match store::classic_manifest(self.registry, self.repo, self.digest).await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(Vec::new()),
            Err(e) => return Ok(vec![malformed(Format::Classic, &tag, self.unusable(e)?)]),
        };
        let mut found = Vec::new();
        for layer in manifest
            .layers
            .iter()
            .take(store::MAX_SIGNATURES_PER_SCHEME)
        {
            let location = format!("tag {tag}, layer {}", layer.digest);
            let status = if layer.media_type != classic::SIMPLE_SIGNING_MEDIA_TYPE {
                SignatureStatus::Rejected {
                    reason: format!(
                        "layer media type '{}' is not a simple-signing payload",
                        layer.media_type
                    ),
                }
            } else if layer.size > classic::MAX_PAYLOAD_BYTES {
                SignatureStatus::Rejected {
                    reason: format!(
                        "payload of {} bytes exceeds {}",
                        layer.size,
                        classic::MAX_PAYLOAD_BYTES
                    ),
                }
            } else {
                match self
                    .registry
                    .fetch_blob_bytes(self.repo, &layer.digest, classic::MAX_PAYLOAD_BYTES)
                    .await
                {
                    Ok(payload) => classic_status(layer, &payload, self.digest, self.policy),
                    Err(e) => SignatureStatus::Rejected {
                        reason: self.unusable(e.into())?,
                    },
                }
            };
            found.push(FoundSignature {
                format: Format::Classic,
                location,
                status,
            });
        }
        Ok(found)
    }

    /// The Sigstore bundle referrers of the digest.
    async fn bundles(&self) -> Result<Vec<FoundSignature>, VerifyError> {
        let referrers = match store::bundle_referrers(self.registry, self.repo, self.digest).await {
            Ok(r) => r,
            Err(e) => {
                return Ok(vec![malformed(
                    Format::Bundle,
                    &self.digest.tag_form(),
                    self.unusable(e)?,
                )]);
            }
        };
        let mut found = Vec::new();
        for referrer in referrers.iter().take(store::MAX_SIGNATURES_PER_SCHEME) {
            let location = format!("referrer {}", referrer.digest);
            let status = match store::fetch_bundle(self.registry, self.repo, &referrer.digest).await
            {
                Ok(blob) => bundle_status(&blob.blob, &blob.bytes, self.digest, self.policy),
                Err(e) => SignatureStatus::Rejected {
                    reason: self.unusable(e)?,
                },
            };
            found.push(FoundSignature {
                format: Format::Bundle,
                location,
                status,
            });
        }
        Ok(found)
    }

    /// Why a signature object cannot be used, when the fault is the object's own (malformed,
    /// missing, oversize, not matching its digest): that one signature is rejected and the
    /// others still count, so one bad object cannot hide a valid signature. Not reaching the
    /// registry is about no signature in particular and ends the examination: no verdict.
    fn unusable(&self, e: StoreError) -> Result<String, VerifyError> {
        match e {
            StoreError::Registry(r) if !r.is_bad_object() => {
                Err(self.store_err(StoreError::Registry(r)))
            }
            e => Ok(e.to_string()),
        }
    }

    fn store_err(&self, source: StoreError) -> VerifyError {
        VerifyError::Store {
            digest: self.digest.clone(),
            source,
        }
    }
}

/// A signature object at `tag` too malformed to read is a rejected signature, not a reason to
/// stop looking: whoever can push garbage to one scheme's tag must not be able to hide a valid
/// signature of the other.
fn malformed(format: Format, tag: &str, reason: String) -> FoundSignature {
    FoundSignature {
        format,
        location: format!("tag {tag}"),
        status: SignatureStatus::Rejected { reason },
    }
}

impl SignatureStatus {
    fn verified_by(key: &PublicKey) -> SignatureStatus {
        SignatureStatus::Verified(Signer::Key {
            fingerprint: key.fingerprint(),
            source: key.source().to_string(),
        })
    }

    fn rejected(reason: impl Into<String>) -> SignatureStatus {
        SignatureStatus::Rejected {
            reason: reason.into(),
        }
    }
}

/// A classic signature counts only if it was made in the policy's repository, when the policy
/// names one (the payload's `docker-reference`).
fn made_in_repository(payload: &[u8], policy: &TrustPolicy) -> Result<(), String> {
    let Some(want) = &policy.repository else {
        return Ok(());
    };
    let signed = classic::signed_reference(payload).unwrap_or_default();
    if signed == *want {
        return Ok(());
    }
    Err(format!(
        "signed in repository '{signed}', not '{want}' (the trust policy requires the repository to match)"
    ))
}

/// A keyless signature the policy has no identities for: say whose certificate it carries,
/// so a user who forgot the identity sees what to trust.
fn no_identities(claimed: Option<super::identity::SignerIdentity>) -> SignatureStatus {
    let whose = claimed.map_or_else(
        || "a keyless signature".to_string(),
        |c| format!("a keyless signature (certificate for {c}, not verified)"),
    );
    SignatureStatus::rejected(format!(
        "{whose}; the trust policy names no keyless identities"
    ))
}

fn classic_status(
    layer: &crate::oci::Descriptor,
    payload: &[u8],
    digest: &Digest,
    policy: &TrustPolicy,
) -> SignatureStatus {
    if keyless::is_keyless_layer(&layer.annotations) {
        return classic_keyless_status(layer, payload, digest, policy);
    }
    for key in &policy.keys {
        match classic::check_layer(layer, payload, digest, key) {
            Ok(classic::LayerCheck::Verified) => {
                if let Err(reason) = made_in_repository(payload, policy) {
                    return SignatureStatus::rejected(reason);
                }
                return SignatureStatus::verified_by(key);
            }
            Ok(classic::LayerCheck::BadSignature) => {}
            Err(e) => {
                return SignatureStatus::Rejected {
                    reason: e.to_string(),
                };
            }
        }
    }
    SignatureStatus::Rejected {
        reason: "signature does not verify with any trusted key".to_string(),
    }
}

/// A classic layer with a Fulcio certificate: the payload must name `digest`, and the
/// certificate, Rekor entry and signature must verify for a trusted identity.
fn classic_keyless_status(
    layer: &crate::oci::Descriptor,
    payload: &[u8],
    digest: &Digest,
    policy: &TrustPolicy,
) -> SignatureStatus {
    match classic::signed_digest(layer, payload) {
        Err(e) => return SignatureStatus::rejected(e.to_string()),
        Ok(signed) if signed != digest.to_string() => {
            let mismatch = classic::ClassicError::DigestMismatch {
                layer: layer.digest.clone(),
                signed,
                expected: digest.clone(),
            };
            return SignatureStatus::rejected(mismatch.to_string());
        }
        Ok(_) => {}
    }
    let Some(trust) = policy.keyless.as_ref().filter(|k| !k.identities.is_empty()) else {
        return no_identities(keyless::claimed_identity_of_layer(&layer.annotations));
    };
    match keyless::verify_classic(&layer.annotations, payload, &trust.identities, &trust.root) {
        Ok(signer) => match made_in_repository(payload, policy) {
            Ok(()) => SignatureStatus::Verified(Signer::Identity(signer)),
            Err(reason) => SignatureStatus::rejected(reason),
        },
        Err(e) => SignatureStatus::rejected(format!("keyless: {e}")),
    }
}

const BUNDLE_NAMES_NO_REPOSITORY: &str = "a Sigstore bundle names no repository, and the trust policy requires the signed repository to match (sign with the classic format)";

fn bundle_status(
    blob: &Digest,
    bytes: &[u8],
    digest: &Digest,
    policy: &TrustPolicy,
) -> SignatureStatus {
    match bundle::check(blob, bytes, digest) {
        Ok(checked) if checked.keyless => {
            let Some(trust) = policy.keyless.as_ref().filter(|k| !k.identities.is_empty()) else {
                return no_identities(keyless::claimed_identity(bytes));
            };
            if policy.repository.is_some() {
                return SignatureStatus::rejected(BUNDLE_NAMES_NO_REPOSITORY);
            }
            let artifact = keyless::Artifact::Digest(digest);
            match keyless::verify_bundle(bytes, artifact, &trust.identities, &trust.root) {
                Ok(signer) => SignatureStatus::Verified(Signer::Identity(signer)),
                Err(e) => SignatureStatus::rejected(format!("keyless: {e}")),
            }
        }
        Ok(checked) => match policy.keys.iter().find(|key| checked.verifies_with(key)) {
            Some(_) if policy.repository.is_some() => {
                SignatureStatus::rejected(BUNDLE_NAMES_NO_REPOSITORY)
            }
            Some(key) => SignatureStatus::verified_by(key),
            None => SignatureStatus::Rejected {
                reason: "bundle signature does not verify with any trusted key".to_string(),
            },
        },
        Err(e) => SignatureStatus::Rejected {
            reason: e.to_string(),
        },
    }
}

/// Verify that `digest` in `repo` carries a signature by a key of `policy` that covers
/// exactly `digest`. Returns the first signature that verifies.
pub async fn verify_artifact(
    registry: &Registry,
    repo: &str,
    digest: &Digest,
    policy: &TrustPolicy,
) -> Result<VerifiedSignature, VerifyError> {
    if policy.is_empty() {
        return Err(VerifyError::EmptyPolicy {
            digest: digest.clone(),
        });
    }
    // Classic first: one tag lookup, and when it verifies the referrers are not needed —
    // the agent pays for this on every new digest.
    let examination = Examination {
        registry,
        repo,
        digest,
        policy,
    };
    let mut found = examination.classic().await?;
    if !found
        .iter()
        .any(|f| matches!(f.status, SignatureStatus::Verified(_)))
    {
        found.extend(examination.bundles().await?);
    }
    verdict(digest, policy, found)
}

/// Turn examined signatures into a verdict.
pub fn verdict(
    digest: &Digest,
    policy: &TrustPolicy,
    found: Vec<FoundSignature>,
) -> Result<VerifiedSignature, VerifyError> {
    if found.is_empty() {
        return Err(VerifyError::Unsigned {
            digest: digest.clone(),
            tag: classic::signature_tag(digest),
        });
    }
    let mut reasons = Vec::new();
    for sig in found {
        match sig.status {
            SignatureStatus::Verified(signer) => {
                return Ok(VerifiedSignature {
                    digest: digest.clone(),
                    format: sig.format,
                    signer,
                    location: sig.location,
                });
            }
            SignatureStatus::Rejected { reason } => {
                reasons.push(format!("{} {}: {reason}", sig.format, sig.location))
            }
        }
    }
    Err(VerifyError::NoneVerified {
        digest: digest.clone(),
        trusted: policy.describe(),
        reasons,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests report failure by panicking
mod tests {
    use super::*;
    use crate::signature::keys::SigningKey;

    #[test]
    fn verdict_picks_a_verified_signature_and_explains_rejections() {
        let key = SigningKey::generate();
        let policy = TrustPolicy::new(vec![key.public_key().clone()]);
        let d = Digest::of(b"a");
        let rejected = FoundSignature {
            format: Format::Classic,
            location: "tag x.sig, layer y".into(),
            status: SignatureStatus::Rejected {
                reason: "signs sha256:other".into(),
            },
        };
        let err = verdict(&d, &policy, vec![rejected.clone()]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&d.to_string()) && msg.contains("signs sha256:other"),
            "{msg}"
        );
        assert!(err.is_verdict());

        let ok = FoundSignature {
            format: Format::Bundle,
            location: "referrer z".into(),
            status: SignatureStatus::Verified(Signer::Key {
                fingerprint: key.public_key().fingerprint(),
                source: "cosign.pub".into(),
            }),
        };
        let v = verdict(&d, &policy, vec![rejected, ok]).unwrap();
        assert_eq!(v.format, Format::Bundle);
        assert!(
            matches!(&v.signer, Signer::Key { fingerprint, .. } if *fingerprint == key.public_key().fingerprint())
        );
    }

    #[test]
    fn no_signatures_is_unsigned() {
        let d = Digest::of(b"a");
        let err = verdict(&d, &TrustPolicy::default(), Vec::new()).unwrap_err();
        assert!(matches!(err, VerifyError::Unsigned { .. }));
        assert!(err.to_string().contains(&format!("sha256-{}.sig", d.hex())));
    }

    #[test]
    fn classic_and_bundle_status_check_digest_and_key() {
        let key = SigningKey::generate();
        let other = SigningKey::generate();
        let d = Digest::of(b"artifact");
        let policy = TrustPolicy::new(vec![other.public_key().clone(), key.public_key().clone()]);

        let layer = classic::SignatureLayer::sign(&key, "r/app", &d);
        assert!(
            matches!(classic_status(&layer.descriptor, &layer.payload, &d, &policy), SignatureStatus::Verified(Signer::Key { fingerprint, .. }) if fingerprint == key.public_key().fingerprint())
        );
        let only_other = TrustPolicy::new(vec![other.public_key().clone()]);
        assert!(matches!(
            classic_status(&layer.descriptor, &layer.payload, &d, &only_other),
            SignatureStatus::Rejected { .. }
        ));

        let b = bundle::sign(&key, &d).unwrap();
        assert!(matches!(
            bundle_status(&Digest::of(&b), &b, &d, &policy),
            SignatureStatus::Verified(_)
        ));
        let wrong = Digest::of(b"another");
        assert!(
            matches!(bundle_status(&Digest::of(&b), &b, &wrong, &policy), SignatureStatus::Rejected { reason } if reason.contains("subject"))
        );
    }

    #[test]
    fn repository_match_refuses_signatures_made_elsewhere() {
        let key = SigningKey::generate();
        let d = Digest::of(b"artifact");
        let layer = classic::SignatureLayer::sign(&key, "reg:5000/team/app", &d);
        let keys = TrustPolicy::new(vec![key.public_key().clone()]);
        let here = keys.clone().in_repository("reg:5000/team/app");
        assert!(matches!(
            classic_status(&layer.descriptor, &layer.payload, &d, &here),
            SignatureStatus::Verified(_)
        ));
        let elsewhere = keys.in_repository("reg:5000/other/app");
        assert!(
            matches!(classic_status(&layer.descriptor, &layer.payload, &d, &elsewhere), SignatureStatus::Rejected { reason } if reason.contains("'reg:5000/team/app'"))
        );
        let b = bundle::sign(&key, &d).unwrap();
        assert!(
            matches!(bundle_status(&Digest::of(&b), &b, &d, &here), SignatureStatus::Rejected { reason } if reason.contains("names no repository"))
        );
    }
}

/// berth reading what the real cosign wrote (fixtures in testdata/signatures, see its README).
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests report failure by panicking
mod cosign_fixtures {
    use super::*;
    use crate::signature::keys::SigningKey;

    const SIGNED: &str = "sha256:aaead6d06e9a0ff201d39f8f5f2410c940ae4856b7f4aa19cc1f1af5985ad9a5";
    const PUBLIC: &str = include_str!("../../../testdata/signatures/cosign.pub");
    const PRIVATE: &str = include_str!("../../../testdata/signatures/cosign.key");
    const CLASSIC_MANIFEST: &[u8] =
        include_bytes!("../../../testdata/signatures/cosign-v2-classic.manifest.json");
    const CLASSIC_PAYLOAD: &[u8] =
        include_bytes!("../../../testdata/signatures/cosign-v2-classic.payload.json");
    const BUNDLE: &[u8] = include_bytes!("../../../testdata/signatures/cosign-v3.bundle.json");

    fn policy() -> TrustPolicy {
        TrustPolicy::new(vec![PublicKey::from_pem(PUBLIC, "cosign.pub").unwrap()])
    }

    #[test]
    fn cosign_encrypted_key_loads_and_matches_its_public_key() {
        let key = SigningKey::from_encrypted_pem(PRIVATE, b"pw", "cosign.key").unwrap();
        assert_eq!(
            key.public_key().fingerprint(),
            policy().keys[0].fingerprint()
        );
        let err = SigningKey::from_encrypted_pem(PRIVATE, b"not-pw", "cosign.key").unwrap_err();
        assert!(
            err.to_string()
                .contains("wrong password for private key cosign.key"),
            "{err}"
        );
    }

    #[test]
    fn cosign_v2_classic_signature_verifies_for_its_digest_only() {
        let manifest = classic::parse_signature_manifest(CLASSIC_MANIFEST, "fixture").unwrap();
        let layer = &manifest.layers[0];
        assert_eq!(layer.digest, Digest::of(CLASSIC_PAYLOAD));
        let signed: Digest = SIGNED.parse().unwrap();
        assert!(matches!(
            classic_status(layer, CLASSIC_PAYLOAD, &signed, &policy()),
            SignatureStatus::Verified(_)
        ));
        let other = Digest::of(b"other");
        assert!(
            matches!(classic_status(layer, CLASSIC_PAYLOAD, &other, &policy()), SignatureStatus::Rejected { reason } if reason.contains(SIGNED))
        );
    }

    #[test]
    fn cosign_v3_bundle_verifies_for_its_digest_only() {
        let signed: Digest = SIGNED.parse().unwrap();
        let blob = Digest::of(BUNDLE);
        assert!(matches!(
            bundle_status(&blob, BUNDLE, &signed, &policy()),
            SignatureStatus::Verified(_)
        ));
        let checked = bundle::check(&blob, BUNDLE, &signed).unwrap();
        // cosign's key hint is the one berth computes for the same key.
        assert_eq!(
            checked.hint.as_deref(),
            Some(policy().keys[0].bundle_hint().as_str())
        );
        let stranger = TrustPolicy::new(vec![SigningKey::generate().public_key().clone()]);
        assert!(matches!(
            bundle_status(&blob, BUNDLE, &signed, &stranger),
            SignatureStatus::Rejected { .. }
        ));
        assert!(matches!(
            bundle_status(&blob, BUNDLE, &Digest::of(b"other"), &policy()),
            SignatureStatus::Rejected { .. }
        ));
    }
}

/// Keyless signatures in both cosign layouts, made by a Sigstore instance of our own
/// (testdata/signatures/keyless, see its README): what berth accepts and what it refuses.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests report failure by panicking
mod keyless_fixtures {
    use super::*;
    use crate::oci::{Descriptor, ImageManifest};
    use crate::signature::identity::{Claim, Pattern};

    const SIGNED: &str = "sha256:aaead6d06e9a0ff201d39f8f5f2410c940ae4856b7f4aa19cc1f1af5985ad9a5";
    const ISSUER: &str = "https://token.actions.githubusercontent.com";
    const SUBJECT: &str =
        "https://github.com/acme/shop/.github/workflows/release.yml@refs/heads/main";
    const ROOT: &str = include_str!("../../../testdata/signatures/keyless/trusted_root.json");
    const OTHER_CA: &str =
        include_str!("../../../testdata/signatures/keyless/other-ca.trusted_root.json");
    const CLASSIC_MANIFEST: &[u8] =
        include_bytes!("../../../testdata/signatures/keyless/classic.manifest.json");
    const CLASSIC_PAYLOAD: &[u8] =
        include_bytes!("../../../testdata/signatures/keyless/classic.payload.json");
    const BUNDLE: &[u8] = include_bytes!("../../../testdata/signatures/keyless/bundle.json");
    const COSIGN_PUB: &str = include_str!("../../../testdata/signatures/cosign.pub");
    const COSIGN_V3_BUNDLE: &[u8] =
        include_bytes!("../../../testdata/signatures/cosign-v3.bundle.json");

    fn signed() -> Digest {
        SIGNED.parse().unwrap()
    }

    fn root(json: &str) -> TrustRoot {
        TrustRoot::from_json(json, "the test trusted root").unwrap()
    }

    fn exact(issuer: &str, subject: &str) -> Identity {
        Identity::new(
            Pattern::exact("issuer", issuer).unwrap(),
            Pattern::exact("subject", subject).unwrap(),
        )
    }

    fn trusting(identity: Identity) -> TrustPolicy {
        TrustPolicy::default().with_identities(vec![identity], root(ROOT))
    }

    fn layer() -> Descriptor {
        let manifest: ImageManifest = serde_json::from_slice(CLASSIC_MANIFEST).unwrap();
        manifest.layers[0].clone()
    }

    fn classic(layer: &Descriptor, digest: &Digest, policy: &TrustPolicy) -> SignatureStatus {
        classic_status(layer, CLASSIC_PAYLOAD, digest, policy)
    }

    fn bundle(bytes: &[u8], digest: &Digest, policy: &TrustPolicy) -> SignatureStatus {
        bundle_status(&Digest::of(bytes), bytes, digest, policy)
    }

    fn reason(status: SignatureStatus) -> String {
        match status {
            SignatureStatus::Rejected { reason } => reason,
            verified => panic!("expected a refusal, got {verified:?}"),
        }
    }

    fn identity_of(status: SignatureStatus) -> KeylessSigner {
        match status {
            SignatureStatus::Verified(Signer::Identity(signer)) => signer,
            other => panic!("expected a keyless signer, got {other:?}"),
        }
    }

    #[test]
    fn both_layouts_verify_for_the_right_identity_with_its_claims() {
        let id = exact(ISSUER, SUBJECT)
            .with_claim(
                Claim::SourceRepository,
                Pattern::exact("c", "https://github.com/acme/shop").unwrap(),
            )
            .with_claim(
                Claim::SourceRepositoryRef,
                Pattern::exact("c", "refs/heads/main").unwrap(),
            )
            .with_claim(
                Claim::RunnerEnvironment,
                Pattern::exact("c", "github-hosted").unwrap(),
            );
        let policy = trusting(id);
        let c = identity_of(classic(&layer(), &signed(), &policy));
        assert_eq!(c.identity.subject.as_deref(), Some(SUBJECT));
        assert_eq!(c.identity.issuer.as_deref(), Some(ISSUER));
        assert_eq!(c.signed_at.as_deref(), Some("2026-01-15T12:01:00Z"));
        assert_eq!(
            c.identity.claim(Claim::SourceRepositoryDigest),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
        assert_eq!(c.trust_root, "the test trusted root");
        let b = identity_of(bundle(BUNDLE, &signed(), &policy));
        assert_eq!(b.signed_at.as_deref(), Some("2026-01-15T12:02:00Z"));
        assert_eq!(b.identity, c.identity);
        // The verdict names the identity.
        let found = vec![FoundSignature {
            format: Format::Bundle,
            location: "referrer x".into(),
            status: SignatureStatus::Verified(Signer::Identity(b)),
        }];
        let v = verdict(&signed(), &policy, found).unwrap();
        assert!(
            v.to_string().contains(&format!(
                "identity subject '{SUBJECT}' from issuer '{ISSUER}', signed 2026-01-15T12:02:00Z"
            )),
            "{v}"
        );
    }

    #[test]
    fn another_subject_issuer_or_claim_is_refused_with_the_identity_found() {
        for (policy, why) in [
            (
                exact(
                    ISSUER,
                    "https://github.com/acme/shop/.github/workflows/other.yml@refs/heads/main",
                ),
                format!("subject is '{SUBJECT}', not"),
            ),
            (
                exact("https://accounts.google.com", SUBJECT),
                format!("issuer is '{ISSUER}', not 'https://accounts.google.com'"),
            ),
            (
                exact(ISSUER, SUBJECT).with_claim(
                    Claim::SourceRepositoryRef,
                    Pattern::regex("c", "refs/tags/v.*").unwrap(),
                ),
                "sourceRepositoryRef 'refs/heads/main' does not match /refs/tags/v.*/".to_string(),
            ),
        ] {
            let policy = trusting(policy);
            for refused in [
                reason(classic(&layer(), &signed(), &policy)),
                reason(bundle(BUNDLE, &signed(), &policy)),
            ] {
                assert!(
                    refused.starts_with(&format!(
                        "keyless: signed by subject '{SUBJECT}' from issuer '{ISSUER}', which is not a trusted identity"
                    )),
                    "{refused}"
                );
                assert!(refused.contains(&why), "'{why}' not in {refused}");
            }
        }
    }

    #[test]
    fn a_regex_that_matches_only_unanchored_is_refused() {
        let policy = trusting(Identity::new(
            Pattern::exact("issuer", ISSUER).unwrap(),
            Pattern::regex("subject", "https://github.com/acme/shop").unwrap(),
        ));
        let refused = reason(bundle(BUNDLE, &signed(), &policy));
        assert!(
            refused.contains("does not match /https://github.com/acme/shop/"),
            "{refused}"
        );
        let anchored = trusting(Identity::new(
            Pattern::exact("issuer", ISSUER).unwrap(),
            Pattern::regex("subject", "https://github.com/acme/shop/.*").unwrap(),
        ));
        identity_of(bundle(BUNDLE, &signed(), &anchored));
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused_by_the_certificate_check() {
        let policy =
            TrustPolicy::default().with_identities(vec![exact(ISSUER, SUBJECT)], root(OTHER_CA));
        for refused in [
            reason(classic(&layer(), &signed(), &policy)),
            reason(bundle(BUNDLE, &signed(), &policy)),
        ] {
            assert!(
                refused.starts_with("keyless: certificate check failed: "),
                "{refused}"
            );
            assert!(
                refused.contains("(against the test trusted root)"),
                "{refused}"
            );
            assert!(
                refused.contains(&format!("certificate for subject '{SUBJECT}'")),
                "{refused}"
            );
        }
        // The public-good root knows neither the CA nor the log.
        let public_good = TrustPolicy::default().with_identities(
            vec![exact(ISSUER, SUBJECT)],
            TrustRoot::public_good().unwrap(),
        );
        let refused = reason(bundle(BUNDLE, &signed(), &public_good));
        assert!(refused.contains("check failed"), "{refused}");
    }

    #[test]
    fn an_altered_log_entry_is_refused_by_the_transparency_log_check() {
        let policy = trusting(exact(ISSUER, SUBJECT));
        // Classic: the Rekor bundle's integrated time moved (the SET covers it).
        let mut moved = layer();
        let rekor = moved
            .annotations
            .get_mut(keyless::REKOR_BUNDLE_ANNOTATION)
            .unwrap();
        *rekor = rekor.replace("\"integratedTime\":", "\"integratedTime\":1");
        let refused = reason(classic(&moved, &signed(), &policy));
        assert!(
            refused.starts_with("keyless: transparency log check failed: "),
            "{refused}"
        );
        assert!(refused.contains("SET verification failed"), "{refused}");
        // Bundle: the entry's body no longer is the one the log included and signed.
        let mut json: serde_json::Value = serde_json::from_slice(BUNDLE).unwrap();
        let entry = &mut json["verificationMaterial"]["tlogEntries"][0];
        entry["logIndex"] = "44".into();
        let refused = reason(bundle(
            &serde_json::to_vec(&json).unwrap(),
            &signed(),
            &policy,
        ));
        assert!(
            refused.starts_with("keyless: transparency log check failed: "),
            "{refused}"
        );
    }

    #[test]
    fn a_classic_signature_without_a_log_entry_is_refused_when_the_root_has_logs() {
        let policy = trusting(exact(ISSUER, SUBJECT));
        let mut unlogged = layer();
        unlogged
            .annotations
            .remove(keyless::REKOR_BUNDLE_ANNOTATION);
        let refused = reason(classic(&unlogged, &signed(), &policy));
        assert!(
            refused.starts_with(
                "keyless: transparency log check failed: the signature has no Rekor entry"
            ),
            "{refused}"
        );
    }

    #[test]
    fn another_digest_is_refused_before_any_certificate_is_read() {
        let policy = trusting(exact(ISSUER, SUBJECT));
        let other = Digest::of(b"another artifact");
        let refused = reason(classic(&layer(), &other, &policy));
        assert!(
            refused.contains(&format!("signs {SIGNED}, not {other}")),
            "{refused}"
        );
        let refused = reason(bundle(BUNDLE, &other, &policy));
        assert!(
            refused.contains("its subject is another artifact"),
            "{refused}"
        );
    }

    #[test]
    fn a_key_only_policy_says_whose_keyless_signature_it_refused() {
        let keys = TrustPolicy::new(vec![PublicKey::from_pem(COSIGN_PUB, "cosign.pub").unwrap()]);
        for refused in [
            reason(classic(&layer(), &signed(), &keys)),
            reason(bundle(BUNDLE, &signed(), &keys)),
        ] {
            assert_eq!(
                refused,
                format!(
                    "a keyless signature (certificate for subject '{SUBJECT}' from issuer '{ISSUER}', not verified); the trust policy names no keyless identities"
                )
            );
        }
    }

    #[test]
    fn keys_and_identities_combine_and_either_suffices() {
        let key = PublicKey::from_pem(COSIGN_PUB, "cosign.pub").unwrap();
        let both = TrustPolicy::new(vec![key.clone()])
            .with_identities(vec![exact(ISSUER, SUBJECT)], root(ROOT));
        identity_of(bundle(BUNDLE, &signed(), &both));
        identity_of(classic(&layer(), &signed(), &both));
        assert!(matches!(
            bundle(COSIGN_V3_BUNDLE, &signed(), &both),
            SignatureStatus::Verified(Signer::Key { .. })
        ));
        assert!(
            both.describe().contains("key sha256:") && both.describe().contains("identity subject")
        );
        // Nothing trusted at all is a policy error, not a refusal of each signature.
        assert!(TrustPolicy::default().is_empty());
        assert!(
            TrustPolicy::default()
                .with_identities(Vec::new(), root(ROOT))
                .is_empty()
        );
    }

    #[test]
    fn repository_matching_applies_to_classic_keyless_and_refuses_bundles() {
        let id = || exact(ISSUER, SUBJECT);
        let here = trusting(id()).in_repository("registry.berth.test/team/app");
        identity_of(classic(&layer(), &signed(), &here));
        let elsewhere = trusting(id()).in_repository("registry.berth.test/other/app");
        let refused = reason(classic(&layer(), &signed(), &elsewhere));
        assert!(
            refused.contains("signed in repository 'registry.berth.test/team/app'"),
            "{refused}"
        );
        let refused = reason(bundle(BUNDLE, &signed(), &here));
        assert!(refused.contains("names no repository"), "{refused}");
    }
}
