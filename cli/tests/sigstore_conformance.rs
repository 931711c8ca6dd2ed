//! Sigstore's client conformance suite, offline part: every case of
//! `test/assets/bundle-verify/` verified by berth's keyless code, following the rules of that
//! folder's README exactly, and with both inputs the suite's own harness gives a client (the
//! artifact's bytes, and its sha256 digest).
//!
//! The suite lives outside the repository (read-only, see `../shared/conformance/README.md`);
//! it is copied to a temporary directory first. Set `SIGSTORE_CONFORMANCE` to use another copy.
//! The suite's pytest harness is not used: its fixtures download an identity token at start,
//! and this machine has no route to the public Sigstore instances.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests report failure by panicking

use std::path::{Path, PathBuf};

use berth::digest::Digest;
use berth::signature::PublicKey;
use berth::signature::identity::{Identity, Pattern};
use berth::signature::keyless::{self, Artifact};
use berth::signature::trust_root::TrustRoot;

/// The suite's defaults (`test/client.py`), used when a case has no `identity`/`issuer` file.
const CERTIFICATE_IDENTITY: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const CERTIFICATE_OIDC_ISSUER: &str = "https://token.actions.githubusercontent.com";
/// How many cases the suite holds (and how many must fail), as its README and ours say: a
/// different number means the copy is not the one this test was written for.
const CASES: usize = 70;
const FAILING_CASES: usize = 49;

fn suite() -> PathBuf {
    match std::env::var_os("SIGSTORE_CONFORMANCE") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/conformance/sigstore-conformance"),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// What one case asks, read as the suite's `BundleMaterials.from_dir` reads it.
struct Case {
    name: String,
    must_fail: bool,
    bundle: Vec<u8>,
    artifact: Vec<u8>,
    key: Option<String>,
    identity: String,
    issuer: String,
    trusted_root: Option<String>,
}

impl Case {
    fn read(dir: &Path, assets: &Path) -> Case {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let text = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
        let artifact = std::fs::read(dir.join("artifact"))
            .unwrap_or_else(|_| std::fs::read(assets.join("a.txt")).unwrap());
        Case {
            must_fail: name.ends_with("_fail"),
            bundle: std::fs::read(dir.join("bundle.sigstore.json")).unwrap(),
            artifact,
            key: text("key.pub"),
            identity: text("identity")
                .map_or(CERTIFICATE_IDENTITY.to_string(), |s| s.trim().to_string()),
            issuer: text("issuer").map_or(CERTIFICATE_OIDC_ISSUER.to_string(), |s| {
                s.trim().to_string()
            }),
            trusted_root: text("trusted_root.json"),
            name,
        }
    }

    /// berth's verdict for one input: `Ok` if it accepts, the refusal otherwise.
    fn verify(&self, artifact: Artifact<'_>, public_good: &TrustRoot) -> Result<(), String> {
        let root = match &self.trusted_root {
            Some(json) => TrustRoot::from_json(json, "the case's trusted_root.json")
                .map_err(|e| e.to_string())?,
            None => public_good.clone(),
        };
        match &self.key {
            Some(pem) => {
                let key = PublicKey::from_pem(pem, "key.pub").map_err(|e| e.to_string())?;
                keyless::verify_bundle_with_key(&self.bundle, artifact, &key, &root)
                    .map_err(|e| e.to_string())
            }
            None => {
                let identity = Identity::new(
                    Pattern::exact("issuer", &self.issuer).map_err(|e| e.to_string())?,
                    Pattern::exact("subject", &self.identity).map_err(|e| e.to_string())?,
                );
                keyless::verify_bundle(&self.bundle, artifact, &[identity], &root)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// A private copy of the suite's `bundle-verify` folder (the original is read-only and shared).
fn copy_of_cases() -> (tempfile::TempDir, PathBuf) {
    let source = suite();
    let assets_source = source.join("test/assets/bundle-verify");
    assert!(
        assets_source.join("README.md").is_file(),
        "Sigstore's conformance suite is not at {} (see ../shared/conformance/README.md); set \
         SIGSTORE_CONFORMANCE to a checkout of github.com/sigstore/sigstore-conformance",
        source.display()
    );
    let copy = tempfile::tempdir().unwrap();
    let assets = copy.path().join("bundle-verify");
    copy_dir(&assets_source, &assets);
    (copy, assets)
}

#[test]
fn bundle_verify_cases_agree_with_the_suite() {
    let (_copy, assets) = copy_of_cases();

    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&assets)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let cases: Vec<Case> = dirs.iter().map(|d| Case::read(d, &assets)).collect();
    assert_eq!(cases.len(), CASES, "cases in {}", suite().display());
    assert_eq!(cases.iter().filter(|c| c.must_fail).count(), FAILING_CASES);

    let public_good = TrustRoot::public_good().unwrap();
    let mut agreeing_cases = 0;
    let mut agreeing_runs = 0;
    let mut disagreements = Vec::new();
    for case in &cases {
        let digest = Digest::of(&case.artifact);
        let runs = [
            (
                "path",
                case.verify(Artifact::Bytes(&case.artifact), &public_good),
            ),
            (
                "digest",
                case.verify(Artifact::Digest(&digest), &public_good),
            ),
        ];
        let mut agrees = true;
        for (input, verdict) in runs {
            let ok = verdict.is_err() == case.must_fail;
            let shown = match &verdict {
                Ok(()) => "accepted".to_string(),
                Err(reason) => format!("refused: {reason}"),
            };
            println!(
                "{} {} [{input}] {shown}",
                if ok { "agree   " } else { "DISAGREE" },
                case.name
            );
            if ok {
                agreeing_runs += 1;
            } else {
                agrees = false;
                disagreements.push(format!("{} [{input}]: {shown}", case.name));
            }
        }
        if agrees {
            agreeing_cases += 1;
        }
    }
    println!(
        "sigstore-conformance bundle-verify: {agreeing_cases}/{} cases agree ({agreeing_runs}/{} verifications, by path and by digest)",
        cases.len(),
        cases.len() * 2
    );
    assert!(
        disagreements.is_empty(),
        "disagreements:\n{}",
        disagreements.join("\n")
    );
}

/// A case's bundle as JSON, to alter before verifying it.
fn case_json(assets: &Path, name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(assets.join(name).join("bundle.sigstore.json")).unwrap())
        .unwrap()
}

/// Drop the inclusion proofs of a v0.1 bundle (its SET remains), so a case can be refused for
/// the reason it was written for rather than for the proof's missing checkpoint.
fn without_inclusion_proofs(mut bundle: serde_json::Value) -> Vec<u8> {
    for entry in bundle["verificationMaterial"]["tlogEntries"]
        .as_array_mut()
        .unwrap()
    {
        entry.as_object_mut().unwrap().remove("inclusionProof");
    }
    serde_json::to_vec(&bundle).unwrap()
}

fn refusal(bundle: &[u8], artifact: &[u8], issuer: &str, subject: &str) -> keyless::KeylessError {
    let identity = Identity::new(
        Pattern::exact("issuer", issuer).unwrap(),
        Pattern::exact("subject", subject).unwrap(),
    );
    let root = TrustRoot::public_good().unwrap();
    keyless::verify_bundle(bundle, Artifact::Bytes(artifact), &[identity], &root).unwrap_err()
}

/// The issue's list of bad input, each refused by the check it is about, with a message that
/// says so (`Check` is what `berth verify` prints first: "<check> check failed: …").
#[test]
fn bad_input_is_refused_naming_the_failed_check() {
    use keyless::Check;
    let (_copy, assets) = copy_of_cases();
    let a_txt = std::fs::read(assets.join("a.txt")).unwrap();
    let read = |name: &str| std::fs::read(assets.join(name).join("bundle.sigstore.json")).unwrap();
    let beacon = |name: &str| {
        refusal(
            &read(name),
            &a_txt,
            CERTIFICATE_OIDC_ISSUER,
            CERTIFICATE_IDENTITY,
        )
    };
    let expect = |case: &str, e: keyless::KeylessError, check: Check, words: &str| {
        let msg = e.to_string();
        assert_eq!(e.check(), Some(check), "{case}: {msg}");
        assert!(
            msg.starts_with(&format!("{check} check failed: ")),
            "{case}: {msg}"
        );
        assert!(msg.contains(words), "{case}: '{words}' not in: {msg}");
    };

    let root_artifact = std::fs::read(assets.join("bundle-with-root-cert_fail/artifact")).unwrap();
    let with_root = case_json(&assets, "bundle-with-root-cert_fail");
    for bundle in [
        read("bundle-with-root-cert_fail"),
        without_inclusion_proofs(with_root),
    ] {
        let e = refusal(
            &bundle,
            &root_artifact,
            "https://github.com/login/oauth",
            "a@tny.town",
        );
        expect(
            "root in chain",
            e,
            Check::Certificate,
            "contains a root certificate ('CN=sigstore,O=sigstore.dev', position 2)",
        );
    }
    let empty = without_inclusion_proofs(case_json(&assets, "bundle-empty-certificate-chain_fail"));
    for bundle in [read("bundle-empty-certificate-chain_fail"), empty] {
        let e = refusal(
            &bundle,
            &a_txt,
            CERTIFICATE_OIDC_ISSUER,
            CERTIFICATE_IDENTITY,
        );
        expect(
            "empty chain",
            e,
            Check::Certificate,
            "certificate chain is empty",
        );
    }
    expect(
        "malformed JSON",
        beacon("bundle-malformed-json_fail"),
        Check::Bundle,
        "not a Sigstore bundle: JSON error: EOF",
    );
    expect(
        "unknown version",
        beacon("bundle-unknown-version_fail"),
        Check::Bundle,
        "Invalid media type: application/vnd.dev.sigstore.bundle+json;version=99.9",
    );
    expect(
        "negative log index",
        beacon("bundle-negative-log-index_fail"),
        Check::Bundle,
        "negative log index: -1",
    );
    expect(
        "checkpoint key hint",
        beacon("checkpoint-bad-keyhint_fail"),
        Check::TransparencyLog,
        "invalid checkpoint: No matching Rekor key",
    );
    expect(
        "checkpoint root hash",
        beacon("checkpoint-wrong-roothash_fail"),
        Check::TransparencyLog,
        "root hash does not match checkpoint root hash",
    );
    expect(
        "SET",
        beacon("set-invalid-signature_fail"),
        Check::TransparencyLog,
        "SET verification failed",
    );
    expect(
        "DSSE signature",
        beacon("dsse-invalid-sig_fail"),
        Check::Signature,
        "DSSE signature verification failed",
    );
    expect(
        "DSSE signature swapped",
        beacon("dsse-mismatch-sig_fail"),
        Check::TransparencyLog,
        "DSSE signature in bundle does not match",
    );
    expect(
        "DSSE payload swapped",
        beacon("dsse-mismatch-envelope_fail"),
        Check::TransparencyLog,
        "DSSE payload hash mismatch",
    );
    // The integrated time (authenticated by the SET) lies after the certificate expired.
    let future = refusal(
        &read("integrated-time-in-future_fail"),
        &a_txt,
        "https://accounts.google.com",
        "untrusted-sa@sigstore-conformance.iam.gserviceaccount.com",
    );
    expect("integrated time", future, Check::Certificate, "CertExpired");
}

/// The gap `keyless::check_chain` closes: sigstore-verify alone accepts a bundle whose chain
/// includes the root. When this starts failing, sigstore-verify refuses such chains itself and
/// berth's own check can go.
#[test]
fn sigstore_verify_alone_accepts_a_root_in_the_chain() {
    berth::signature::crypto::install();
    let (_copy, assets) = copy_of_cases();
    let bundle = without_inclusion_proofs(case_json(&assets, "bundle-with-root-cert_fail"));
    let bundle =
        sigstore_verify::types::Bundle::from_json(std::str::from_utf8(&bundle).unwrap()).unwrap();
    let artifact = std::fs::read(assets.join("bundle-with-root-cert_fail/artifact")).unwrap();
    let root = sigstore_verify::trust_root::TrustedRoot::from_json(
        berth::signature::trust_root::PUBLIC_GOOD_TRUSTED_ROOT,
    )
    .unwrap();
    let policy =
        sigstore_verify::VerificationPolicy::new("a@tny.town", "https://github.com/login/oauth");
    let accepted = sigstore_verify::verify(artifact.as_slice(), &bundle, &policy, &root);
    assert!(
        accepted.is_ok(),
        "sigstore-verify now refuses it: {accepted:?}"
    );
}

/// Identities are berth's to match: found identity and every reason reach the message.
#[test]
fn a_verified_signature_by_another_identity_says_who_signed() {
    let (_copy, assets) = copy_of_cases();
    let bundle = std::fs::read(assets.join("happy-path-v0.3/bundle.sigstore.json")).unwrap();
    let a_txt = std::fs::read(assets.join("a.txt")).unwrap();
    let root = TrustRoot::public_good().unwrap();
    let unanchored = Identity::new(
        Pattern::exact("issuer", CERTIFICATE_OIDC_ISSUER).unwrap(),
        // Would match the beacon's subject if regexes were not anchored.
        Pattern::regex("subject", "extremely-dangerous-public-oidc-beacon").unwrap(),
    );
    let e =
        keyless::verify_bundle(&bundle, Artifact::Bytes(&a_txt), &[unanchored], &root).unwrap_err();
    assert_eq!(e.check(), None);
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("signed by subject '{CERTIFICATE_IDENTITY}' from issuer '{CERTIFICATE_OIDC_ISSUER}', which is not a trusted identity")), "{msg}");
    assert!(
        msg.contains("does not match /extremely-dangerous-public-oidc-beacon/"),
        "{msg}"
    );

    let anchored = Identity::new(
        Pattern::regex("issuer", r"https://token\.actions\.githubusercontent\.com").unwrap(),
        Pattern::regex(
            "subject",
            "https://github.com/sigstore-conformance/.*@refs/heads/main",
        )
        .unwrap(),
    );
    let signer =
        keyless::verify_bundle(&bundle, Artifact::Bytes(&a_txt), &[anchored], &root).unwrap();
    assert_eq!(
        signer.identity.subject.as_deref(),
        Some(CERTIFICATE_IDENTITY)
    );
    assert!(signer.signed_at.is_some());
    assert!(
        signer
            .matched
            .contains("matching /https://github.com/sigstore-conformance/.*@refs/heads/main/")
    );
}
