//! Signatures, both ways, against the real tools: what berth signs, real `cosign verify`
//! (v2 for the classic scheme, v3 for bundles) accepts — and rejects once the tag points at
//! a tampered manifest; what real `cosign sign` (v2 classic, v3 bundle) makes, `berth verify`
//! accepts; and `berth verify` refuses every forgery a registry writer could attempt.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_e2e::{Env, env, run, run_fail, run_ok};

/// Exit code berth documents for "no signature verifies".
const EXIT_VERIFY_FAILED: i32 = 7;
const PASSWORD: &str = "correct horse battery staple";

/// One of the harness registries and how each tool is told to reach it.
#[derive(Clone, Copy)]
struct Registry<'a> {
    env: &'a Env,
    host: &'a str,
    tls: bool,
}

impl<'a> Registry<'a> {
    fn dist(env: &'a Env) -> Self {
        Registry {
            env,
            host: &env.registry_dist,
            tls: false,
        }
    }
    fn dist_tls(env: &'a Env) -> Self {
        Registry {
            env,
            host: &env.registry_dist_tls,
            tls: true,
        }
    }
    fn oci(env: &'a Env) -> Self {
        Registry {
            env,
            host: &env.registry_oci,
            tls: false,
        }
    }
    fn oci_tls(env: &'a Env) -> Self {
        Registry {
            env,
            host: &env.registry_oci_tls,
            tls: true,
        }
    }

    fn berth(&self) -> Command {
        let mut cmd = self.env.berth();
        cmd.args(self.env.berth_flags(self.tls));
        cmd
    }

    fn oras(&self, sub: &[&str]) -> Command {
        let mut cmd = self.env.tool(&self.env.oras);
        cmd.args(sub).args(self.env.oras_flags(self.tls));
        cmd
    }

    fn cosign(&self, bin: &Path, sub: &[&str]) -> Command {
        let mut cmd = self.env.tool(bin);
        cmd.args(sub);
        if self.tls {
            cmd.arg("--registry-cacert").arg(&self.env.ca_file);
            cmd.args(["--registry-username", &self.env.registry_user]);
            cmd.args(["--registry-password", &self.env.registry_password]);
        } else {
            cmd.arg("--allow-http-registry");
        }
        cmd.env("COSIGN_PASSWORD", PASSWORD);
        cmd
    }

    /// `host/repo` as cosign and oras spell it.
    fn name(&self, repo: &str) -> String {
        format!("{}/{repo}", self.host)
    }

    fn oci_url(&self, repo: &str, selector: &str) -> String {
        format!("oci://{}/{repo}{selector}", self.host)
    }

    /// Push a small Flux-shaped artifact with real oras; returns its manifest digest.
    fn push_artifact(&self, dir: &Path, repo: &str, tag: &str, content: &str) -> String {
        let file = dir.join(format!("{tag}.yaml"));
        std::fs::write(&file, content).unwrap();
        let target = format!("{}:{tag}", self.name(repo));
        let mut cmd = self.oras(&[
            "push",
            &target,
            "--artifact-type",
            "application/vnd.cncf.flux.config.v1+json",
            "--format",
            "json",
            &format!("{tag}.yaml:application/vnd.cncf.flux.content.v1.tar+gzip"),
        ]);
        cmd.current_dir(dir);
        let out = run_ok(&mut cmd);
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("oras push json: {e}: {out}"));
        v["digest"]
            .as_str()
            .expect("oras push prints the digest")
            .to_string()
    }

    /// Point `tag` at manifest `digest` (real oras).
    fn retag(&self, repo: &str, digest: &str, tag: &str) {
        run_ok(&mut self.oras(&["tag", &format!("{}@{digest}", self.name(repo)), tag]));
    }

    fn manifest(&self, repo: &str, selector: &str) -> serde_json::Value {
        let reference = if selector.starts_with("sha256:") {
            format!("{}@{selector}", self.name(repo))
        } else {
            format!("{}:{selector}", self.name(repo))
        };
        let out = run_ok(&mut self.oras(&["manifest", "fetch", &reference]));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("manifest {reference}: {e}: {out}"))
    }

    /// Push raw manifest JSON under `tag_or_digest`; returns the manifest digest.
    fn put_manifest(
        &self,
        dir: &Path,
        repo: &str,
        tag_or_digest: &str,
        manifest: &serde_json::Value,
    ) -> String {
        let bytes = serde_json::to_vec(manifest).unwrap();
        let file = dir.join(format!("manifest-{}.json", berth_e2e::unique_name("m", 20)));
        std::fs::write(&file, &bytes).unwrap();
        let reference = if tag_or_digest.starts_with("sha256:") {
            format!("{}@{tag_or_digest}", self.name(repo))
        } else {
            format!("{}:{tag_or_digest}", self.name(repo))
        };
        let mut cmd = self.oras(&["manifest", "push", &reference, file.to_str().unwrap()]);
        cmd.args(["--media-type", "application/vnd.oci.image.manifest.v1+json"]);
        run_ok(&mut cmd);
        format!("sha256:{}", sha256_hex(&bytes))
    }

    fn tags(&self, repo: &str) -> Vec<String> {
        let out = run(&mut self.oras(&["repo", "tags", &self.name(repo)]));
        out.stdout.lines().map(str::to_string).collect()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    // The e2e crate has no hashing dependency; sha256sum is in coreutils.
    use std::io::Write as _;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A key pair written by `berth keygen` into `dir` (prefix `name`).
fn berth_keygen(env: &Env, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    run_ok(
        env.berth()
            .args(["keygen", "--output-key-prefix"])
            .arg(&prefix)
            .env("COSIGN_PASSWORD", PASSWORD),
    );
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// A key pair written by real `cosign generate-key-pair` (v3) into `dir`.
fn cosign_keygen(env: &Env, dir: &Path) -> (PathBuf, PathBuf) {
    let mut cmd = env.tool(&env.cosign_v3);
    cmd.arg("generate-key-pair")
        .current_dir(dir)
        .env("COSIGN_PASSWORD", PASSWORD);
    run_ok(&mut cmd);
    (dir.join("cosign.key"), dir.join("cosign.pub"))
}

fn berth_sign(
    reg: Registry<'_>,
    repo: &str,
    digest: &str,
    key: &Path,
    format: &str,
) -> serde_json::Value {
    let mut cmd = reg.berth();
    cmd.args([
        "sign",
        &reg.oci_url(repo, &format!("@{digest}")),
        "--format",
        format,
        "--output",
        "json",
        "--key",
    ])
    .arg(key)
    .env("COSIGN_PASSWORD", PASSWORD);
    let out = run_ok(&mut cmd);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("berth sign --output json: {e}: {out}"))
}

fn berth_verify(reg: Registry<'_>, repo: &str, selector: &str, key: &Path) -> berth_e2e::Output {
    let mut cmd = reg.berth();
    cmd.args([
        "verify",
        &reg.oci_url(repo, selector),
        "--output",
        "json",
        "--key",
    ])
    .arg(key);
    run(&mut cmd)
}

/// An empty Sigstore trusted root. Key-based verification needs no CA or log keys, and
/// passing a local root stops cosign from fetching the public one over the network
/// (cosign v2 also insists on a trusted root before it reads bundles).
/// Written once per process, by rename, so a test never reads it half-written while
/// another test (running in parallel) writes it.
fn empty_trusted_root() -> PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = std::env::temp_dir();
        let path = dir.join("berth-e2e-empty-trusted-root.json");
        let partial = dir.join(format!(
            "berth-e2e-empty-trusted-root.{}.tmp",
            std::process::id()
        ));
        std::fs::write(
            &partial,
            br#"{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}"#,
        )
        .unwrap();
        std::fs::rename(&partial, &path).unwrap();
        path
    })
    .clone()
}

/// `cosign verify --key` the way an offline user runs it (no transparency log).
fn cosign_verify(
    reg: Registry<'_>,
    bin: &Path,
    repo: &str,
    selector: &str,
    key: &Path,
) -> berth_e2e::Output {
    let reference = format!("{}{selector}", reg.name(repo));
    let root = empty_trusted_root();
    let mut cmd = reg.cosign(
        bin,
        &[
            "verify",
            "--insecure-ignore-tlog",
            "--trusted-root",
            root.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            &reference,
        ],
    );
    run(&mut cmd)
}

fn cosign_sign(reg: Registry<'_>, bin: &Path, v3: bool, repo: &str, digest: &str, key: &Path) {
    let reference = format!("{}@{digest}", reg.name(repo));
    let mut args = vec![
        "sign",
        "--key",
        key.to_str().unwrap(),
        "--tlog-upload=false",
        "-y",
    ];
    if v3 {
        // Offline: no TUF signing config (it would be fetched from the internet).
        args.push("--use-signing-config=false");
    }
    args.push(&reference);
    run_ok(&mut reg.cosign(bin, &args));
}

fn assert_verified(out: &berth_e2e::Output, format: &str) -> serde_json::Value {
    assert_eq!(
        out.code,
        Some(0),
        "berth verify should succeed:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["verified"], true, "{v}");
    assert!(
        v["signatures"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["verified"] == true && s["format"] == format),
        "expected a verified {format} signature: {v}"
    );
    v
}

fn assert_rejected(out: &berth_e2e::Output, why: &str) {
    assert_eq!(
        out.code,
        Some(EXIT_VERIFY_FAILED),
        "berth verify should fail with exit {EXIT_VERIFY_FAILED}:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stderr.contains(why),
        "error should mention '{why}':\n{}",
        out.stderr
    );
}

#[test]
fn cosign_v2_and_v3_accept_berth_classic_signature_until_the_tag_is_moved() {
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    for reg in [Registry::dist(env), Registry::dist_tls(env)] {
        let repo = env.repo("sign-classic");
        let good = reg.push_artifact(dir.path(), &repo, "v1", "kind: ConfigMap\n");
        let (key, public) = berth_keygen(env, dir.path(), &berth_e2e::unique_name("k", 20));
        let signed = berth_sign(reg, &repo, &good, &key, "classic");
        assert_eq!(signed["format"], "classic");
        assert!(
            reg.tags(&repo)
                .contains(&format!("{}.sig", good.replace(':', "-")))
        );

        for cosign in [&env.cosign_v2, &env.cosign_v3] {
            let out = cosign_verify(reg, cosign, &repo, ":v1", &public);
            assert!(
                out.status.success(),
                "{} verify of berth's signature failed:\n{}",
                cosign.display(),
                out.stderr
            );
            assert!(
                out.stdout.contains(&good),
                "cosign printed the verified payload: {}",
                out.stdout
            );
        }

        // Someone with push access moves the tag to other content: nothing verifies it.
        let tampered = reg.push_artifact(dir.path(), &repo, "evil", "kind: Secret\n");
        reg.retag(&repo, &tampered, "v1");
        for cosign in [&env.cosign_v2, &env.cosign_v3] {
            let out = cosign_verify(reg, cosign, &repo, ":v1", &public);
            assert!(
                !out.status.success(),
                "{} accepted a tampered tag:\n{}",
                cosign.display(),
                out.stdout
            );
        }
        assert_rejected(&berth_verify(reg, &repo, ":v1", &public), &tampered);
        // The signed digest itself still verifies.
        assert_verified(
            &berth_verify(reg, &repo, &format!("@{good}"), &public),
            "classic",
        );
    }
}

#[test]
fn cosign_v3_accepts_berth_bundle_as_referrer_until_the_tag_is_moved() {
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    for reg in [Registry::oci(env), Registry::oci_tls(env)] {
        let repo = env.repo("sign-bundle");
        let good = reg.push_artifact(dir.path(), &repo, "v1", "kind: ConfigMap\n");
        let (key, public) = berth_keygen(env, dir.path(), &berth_e2e::unique_name("k", 20));
        // auto picks the bundle where the registry has the referrers API.
        let signed = berth_sign(reg, &repo, &good, &key, "auto");
        assert_eq!(signed["format"], "bundle", "{signed}");

        // The referrer is found through the real referrers API (oras discover).
        let discovered = run_ok(&mut reg.oras(&[
            "discover",
            "--format",
            "json",
            &format!("{}@{good}", reg.name(&repo)),
        ]));
        assert!(
            discovered.contains("application/vnd.dev.sigstore.bundle.v0.3+json"),
            "{discovered}"
        );

        // cosign v3 reads bundles by default; v2.6 does too once given a trusted root.
        for cosign in [&env.cosign_v3, &env.cosign_v2] {
            let out = cosign_verify(reg, cosign, &repo, ":v1", &public);
            assert!(
                out.status.success(),
                "{} verify of berth's bundle failed:\n{}\n{}",
                cosign.display(),
                out.stdout,
                out.stderr
            );
        }

        let tampered = reg.push_artifact(dir.path(), &repo, "evil", "kind: Secret\n");
        reg.retag(&repo, &tampered, "v1");
        for cosign in [&env.cosign_v3, &env.cosign_v2] {
            let out = cosign_verify(reg, cosign, &repo, ":v1", &public);
            assert!(
                !out.status.success(),
                "{} accepted a tampered tag:\n{}",
                cosign.display(),
                out.stdout
            );
        }
        assert_rejected(&berth_verify(reg, &repo, ":v1", &public), "no signatures");
    }
}

#[test]
fn bundle_on_a_registry_without_referrers_api_uses_the_tag_schema() {
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::dist(env);
    let repo = env.repo("sign-fallback");
    let digest = reg.push_artifact(dir.path(), &repo, "v1", "kind: ConfigMap\n");
    let (key, public) = berth_keygen(env, dir.path(), "fallback");
    let signed = berth_sign(reg, &repo, &digest, &key, "bundle");
    assert_eq!(signed["format"], "bundle");
    // The referrers tag schema: an index tagged sha256-<hex> lists the referrer.
    let index = reg.manifest(&repo, &digest.replace(':', "-"));
    assert_eq!(
        index["manifests"][0]["artifactType"], "application/vnd.dev.sigstore.bundle.v0.3+json",
        "{index}"
    );

    let out = cosign_verify(reg, &env.cosign_v3, &repo, ":v1", &public);
    assert!(
        out.status.success(),
        "cosign v3 did not find berth's bundle via the tag schema:\n{}",
        out.stderr
    );
    assert_verified(&berth_verify(reg, &repo, ":v1", &public), "bundle");
}

#[test]
fn berth_verifies_what_real_cosign_signs() {
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = cosign_keygen(env, dir.path());

    // cosign v2: classic `.sig` tag.
    let reg = Registry::dist_tls(env);
    let repo = env.repo("cosign-v2");
    let digest = reg.push_artifact(dir.path(), &repo, "v1", "kind: ConfigMap\n");
    cosign_sign(reg, &env.cosign_v2, false, &repo, &digest, &key);
    let v = assert_verified(&berth_verify(reg, &repo, ":v1", &public), "classic");
    assert_eq!(v["digest"], digest);

    // cosign v3: Sigstore bundle through the referrers API.
    let reg = Registry::oci(env);
    let repo = env.repo("cosign-v3");
    let digest = reg.push_artifact(dir.path(), &repo, "v1", "kind: ConfigMap\n");
    cosign_sign(reg, &env.cosign_v3, true, &repo, &digest, &key);
    let v = assert_verified(
        &berth_verify(reg, &repo, &format!("@{digest}"), &public),
        "bundle",
    );
    assert_eq!(v["signer"]["format"], "bundle");

    // cosign v3 on a registry without the API (it writes the tag schema).
    let reg = Registry::dist(env);
    let repo = env.repo("cosign-v3-fallback");
    let digest = reg.push_artifact(dir.path(), &repo, "v1", "kind: ConfigMap\n");
    cosign_sign(reg, &env.cosign_v3, true, &repo, &digest, &key);
    assert_verified(&berth_verify(reg, &repo, ":v1", &public), "bundle");

    // A cosign key pair works in berth: berth signs with cosign.key, cosign verifies.
    let repo = env.repo("cosign-key-in-berth");
    let digest = reg.push_artifact(dir.path(), &repo, "v1", "kind: ConfigMap\n");
    berth_sign(reg, &repo, &digest, &key, "classic");
    let out = cosign_verify(reg, &env.cosign_v2, &repo, ":v1", &public);
    assert!(
        out.status.success(),
        "cosign rejected berth's signature made with cosign's key:\n{}",
        out.stderr
    );

    // A berth key pair works in cosign too.
    let (berth_key, berth_pub) = berth_keygen(env, dir.path(), "berth-made");
    let repo = env.repo("berth-key-in-cosign");
    let digest = reg.push_artifact(dir.path(), &repo, "v1", "kind: ConfigMap\n");
    cosign_sign(reg, &env.cosign_v2, false, &repo, &digest, &berth_key);
    assert_verified(&berth_verify(reg, &repo, ":v1", &berth_pub), "classic");
}

#[test]
fn berth_verify_rejects_other_keys_copied_corrupted_and_misdirected_signatures() {
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = berth_keygen(env, dir.path(), "signer");
    let (_, stranger) = berth_keygen(env, dir.path(), "stranger");

    // Classic, on the registry without referrers.
    let reg = Registry::dist(env);
    let repo = env.repo("forgeries-classic");
    let a = reg.push_artifact(dir.path(), &repo, "a", "kind: ConfigMap\nname: a\n");
    let b = reg.push_artifact(dir.path(), &repo, "b", "kind: ConfigMap\nname: b\n");
    berth_sign(reg, &repo, &a, &key, "classic");

    // A different key.
    assert_rejected(
        &berth_verify(reg, &repo, ":a", &stranger),
        "does not verify",
    );
    // Unsigned.
    assert_rejected(&berth_verify(reg, &repo, ":b", &public), "no signatures");
    // A's signature copied onto B: it names A's digest, so it is refused.
    let a_sig = format!("{}.sig", a.replace(':', "-"));
    let b_sig = format!("{}.sig", b.replace(':', "-"));
    reg.retag(
        &repo,
        &reg.put_manifest(dir.path(), &repo, &a_sig, &reg.manifest(&repo, &a_sig)),
        &b_sig,
    );
    assert_rejected(&berth_verify(reg, &repo, ":b", &public), &a);
    // A corrupted signature annotation on A.
    let mut manifest = reg.manifest(&repo, &a_sig);
    let sig = manifest["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"]
        .as_str()
        .unwrap()
        .to_string();
    let mut bytes: Vec<char> = sig.chars().collect();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == 'A' { 'B' } else { 'A' };
    manifest["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"] =
        bytes.into_iter().collect::<String>().into();
    reg.put_manifest(dir.path(), &repo, &a_sig, &manifest);
    assert_rejected(&berth_verify(reg, &repo, ":a", &public), "does not verify");

    // Bundle, on the OCI 1.1 registry: A's bundle attached to B (subject B, statement A).
    let reg = Registry::oci(env);
    let repo = env.repo("forgeries-bundle");
    let a = reg.push_artifact(dir.path(), &repo, "a", "kind: ConfigMap\nname: a\n");
    let b = reg.push_artifact(dir.path(), &repo, "b", "kind: ConfigMap\nname: b\n");
    let signed = berth_sign(reg, &repo, &a, &key, "bundle");
    let referrer = signed["location"]
        .as_str()
        .unwrap()
        .trim_start_matches("referrer ")
        .to_string();
    let mut manifest = reg.manifest(&repo, &referrer);
    let b_descriptor = run_ok(&mut reg.oras(&[
        "manifest",
        "fetch",
        "--descriptor",
        &format!("{}@{b}", reg.name(&repo)),
    ]));
    let b_descriptor: serde_json::Value = serde_json::from_str(&b_descriptor).unwrap();
    manifest["subject"]["digest"] = b.clone().into();
    manifest["subject"]["size"] = b_descriptor["size"].clone();
    let moved = reg.put_manifest(dir.path(), &repo, "moved-bundle", &manifest);
    let discovered = run_ok(&mut reg.oras(&[
        "discover",
        "--format",
        "json",
        &format!("{}@{b}", reg.name(&repo)),
    ]));
    assert!(
        discovered.contains(&moved),
        "the forged referrer is listed for B: {discovered}"
    );
    assert_rejected(
        &berth_verify(reg, &repo, ":b", &public),
        "its subject is another artifact",
    );
    // ... while A still verifies with its genuine bundle.
    assert_verified(&berth_verify(reg, &repo, ":a", &public), "bundle");
}

/// A blob larger than any signature berth reads, and a descriptor of it (of `media_type`) that
/// claims 200 bytes: what anyone with push access can attach so that reading one signature
/// fails. Registries check that a manifest's blobs exist, not their sizes.
fn oversize_blob(reg: Registry<'_>, dir: &Path, repo: &str, media_type: &str) -> serde_json::Value {
    let mut bytes = berth_e2e::unique_name("oversize", 40).into_bytes();
    bytes.resize(1_200_000, b'x');
    let file = dir.join(format!("{}.bin", berth_e2e::unique_name("blob", 20)));
    std::fs::write(&file, &bytes).unwrap();
    run_ok(&mut reg.oras(&["blob", "push", &reg.name(repo), file.to_str().unwrap()]));
    serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{}", sha256_hex(&bytes)), "size": 200})
}

#[test]
fn one_unreadable_signature_does_not_hide_a_valid_one_and_is_named_when_alone() {
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = cosign_keygen(env, dir.path());

    // Classic: real cosign v2 signs; a second layer in the .sig manifest points at an oversize blob.
    let reg = Registry::dist(env);
    let repo = env.repo("broken-classic");
    let signed = reg.push_artifact(
        dir.path(),
        &repo,
        "signed",
        "kind: ConfigMap\nname: signed\n",
    );
    let broken_only = reg.push_artifact(
        dir.path(),
        &repo,
        "broken",
        "kind: ConfigMap\nname: broken\n",
    );
    cosign_sign(reg, &env.cosign_v2, false, &repo, &signed, &key);
    let sig_tag = |digest: &str| format!("{}.sig", digest.replace(':', "-"));
    let mut manifest = reg.manifest(&repo, &sig_tag(&signed));
    let mut broken = oversize_blob(
        reg,
        dir.path(),
        &repo,
        "application/vnd.dev.cosign.simplesigning.v1+json",
    );
    broken["annotations"] = manifest["layers"][0]["annotations"].clone();
    let valid = manifest["layers"][0].clone();
    manifest["layers"] = serde_json::json!([broken.clone(), valid]);
    reg.put_manifest(dir.path(), &repo, &sig_tag(&signed), &manifest);
    assert_verified(&berth_verify(reg, &repo, ":signed", &public), "classic");
    manifest["layers"] = serde_json::json!([broken.clone()]);
    reg.put_manifest(dir.path(), &repo, &sig_tag(&broken_only), &manifest);
    let out = berth_verify(reg, &repo, ":broken", &public);
    assert_rejected(&out, broken["digest"].as_str().unwrap());
    assert!(
        out.stderr.contains("exceeds the limit"),
        "says what is wrong with it:\n{}",
        out.stderr
    );

    // Bundle: real cosign v3 signs; another referrer's bundle blob is oversize.
    let reg = Registry::oci(env);
    let repo = env.repo("broken-bundle");
    let configmap = |name: &str| {
        berth_e2e::manifests(&[(
            "cm.yaml",
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: one\n"
            ),
        )])
    };
    let push = |tag: &str, files: &tempfile::TempDir| {
        let mut cmd = reg.berth();
        cmd.args([
            "push",
            &reg.oci_url(&repo, &format!(":{tag}")),
            files.path().to_str().unwrap(),
        ]);
        let out = run_ok(cmd.args(["--output", "json"]));
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let signed = push("signed", &configmap("signed"));
    let broken_only = push("broken", &configmap("broken"));
    cosign_sign(reg, &env.cosign_v3, true, &repo, &signed, &key);
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, "{}").unwrap();
    run_ok(&mut reg.oras(&["blob", "push", &reg.name(&repo), empty.to_str().unwrap()]));
    let broken = oversize_blob(
        reg,
        dir.path(),
        &repo,
        "application/vnd.dev.sigstore.bundle.v0.3+json",
    );
    let attach_broken = |subject: &str, tag: &str| {
        let descriptor = run_ok(&mut reg.oras(&[
            "manifest",
            "fetch",
            "--descriptor",
            &format!("{}@{subject}", reg.name(&repo)),
        ]));
        let referrer = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": format!("sha256:{}", sha256_hex(b"{}")), "size": 2},
            "layers": [broken.clone()],
            "subject": serde_json::from_str::<serde_json::Value>(&descriptor).unwrap(),
        });
        reg.put_manifest(dir.path(), &repo, tag, &referrer)
    };
    attach_broken(&signed, "broken-referrer-1");
    assert_verified(
        &berth_verify(reg, &repo, &format!("@{signed}"), &public),
        "bundle",
    );
    let referrer = attach_broken(&broken_only, "broken-referrer-2");
    let out = berth_verify(reg, &repo, &format!("@{broken_only}"), &public);
    assert_rejected(&out, broken["digest"].as_str().unwrap());
    assert!(
        out.stderr.contains(&referrer),
        "names the referrer:\n{}",
        out.stderr
    );

    // The agent decides the same way: applies the signed artifact, refuses the other as
    // untrusted (exit 3) rather than as a registry it cannot read.
    let ns = env.namespace("broken-signature");
    let apply = |digest: &str| {
        let mut cmd = env.berth_agent();
        cmd.args([
            "apply",
            &reg.oci_url(&repo, &format!("@{digest}")),
            "--insecure",
            "-n",
            ns.name(),
            "--key",
        ]);
        run(cmd.arg(&public))
    };
    let out = apply(&signed);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(env.object("configmap", Some(ns.name()), "signed").is_some());
    let out = apply(&broken_only);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(
        out.stderr.contains(broken["digest"].as_str().unwrap()),
        "{}",
        out.stderr
    );
    assert!(
        env.object("configmap", Some(ns.name()), "broken").is_none(),
        "an untrusted artifact was applied"
    );
}

#[test]
fn sign_with_a_wrong_password_fails_before_touching_the_registry() {
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::dist(env);
    let repo = env.repo("sign-wrong-password");
    let digest = reg.push_artifact(dir.path(), &repo, "v1", "kind: ConfigMap\n");
    let (key, _) = berth_keygen(env, dir.path(), "pw");
    let mut cmd = reg.berth();
    cmd.args(["sign", &reg.oci_url(&repo, &format!("@{digest}")), "--key"])
        .arg(&key)
        .env("COSIGN_PASSWORD", "not the password");
    let out = run_fail(&mut cmd);
    assert!(
        out.stderr.contains("wrong password") && out.stderr.contains(key.to_str().unwrap()),
        "{}",
        out.stderr
    );
    assert_eq!(
        reg.tags(&repo),
        vec!["v1".to_string()],
        "nothing was pushed"
    );

    // A tag is refused without --resolve, and nothing is pushed either.
    let mut cmd = reg.berth();
    cmd.args(["sign", &reg.oci_url(&repo, ":v1"), "--key"])
        .arg(&key)
        .env("COSIGN_PASSWORD", PASSWORD);
    let out = run_fail(&mut cmd);
    assert!(out.stderr.contains("--resolve"), "{}", out.stderr);
    assert_eq!(reg.tags(&repo), vec!["v1".to_string()]);

    // push --sign-key with a wrong password pushes nothing at all.
    let fresh = env.repo("push-wrong-password");
    let mut cmd = reg.berth();
    cmd.args(["push", &reg.oci_url(&fresh, ":v1")])
        .arg(berth_e2e::testdata("app"))
        .arg("--sign-key")
        .arg(&key)
        .env("COSIGN_PASSWORD", "not the password");
    let out = run_fail(&mut cmd);
    assert!(
        out.stderr.contains("wrong password") && out.stderr.contains("nothing was pushed"),
        "{}",
        out.stderr
    );
    assert!(
        reg.tags(&fresh).is_empty(),
        "the repository stays empty: {:?}",
        reg.tags(&fresh)
    );
}

#[test]
fn keygen_refuses_to_overwrite_and_signing_appends() {
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    let (key1, pub1) = berth_keygen(env, dir.path(), "team");
    let before = std::fs::read(&key1).unwrap();
    let mut cmd = env.berth();
    cmd.args(["keygen", "--output-key-prefix"])
        .arg(dir.path().join("team"))
        .env("COSIGN_PASSWORD", PASSWORD);
    let out = run_fail(&mut cmd);
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    assert_eq!(
        std::fs::read(&key1).unwrap(),
        before,
        "the existing key is untouched"
    );

    // cosign decrypts berth's private key and derives the same public key berth wrote.
    for cosign in [&env.cosign_v2, &env.cosign_v3] {
        let mut cmd = env.tool(cosign);
        cmd.args(["public-key", "--key"])
            .arg(&key1)
            .env("COSIGN_PASSWORD", PASSWORD);
        assert_eq!(
            run_ok(&mut cmd),
            std::fs::read_to_string(&pub1).unwrap(),
            "{}",
            cosign.display()
        );
    }

    // Two signers on one artifact: the second classic signature is appended, both verify.
    let (key2, pub2) = berth_keygen(env, dir.path(), "other-team");
    let reg = Registry::dist(env);
    let repo = env.repo("sign-append");
    let digest = reg.push_artifact(dir.path(), &repo, "v1", "kind: ConfigMap\n");
    berth_sign(reg, &repo, &digest, &key1, "classic");
    berth_sign(reg, &repo, &digest, &key2, "classic");
    let manifest = reg.manifest(&repo, &format!("{}.sig", digest.replace(':', "-")));
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        2,
        "{manifest}"
    );
    assert_verified(&berth_verify(reg, &repo, ":v1", &pub1), "classic");
    assert_verified(&berth_verify(reg, &repo, ":v1", &pub2), "classic");
    for cosign in [&env.cosign_v2, &env.cosign_v3] {
        assert!(
            cosign_verify(reg, cosign, &repo, ":v1", &pub2)
                .status
                .success()
        );
    }
}

#[test]
fn keygen_force_writes_a_private_key_only_its_owner_reads_and_never_through_a_link() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let keygen = |name: &str| {
        let mut cmd = env.berth();
        cmd.args(["keygen", "--force", "--output-key-prefix"])
            .arg(dir.path().join(name));
        cmd.env("COSIGN_PASSWORD", PASSWORD);
        cmd
    };

    // An old key file anyone may read is replaced by one only its owner reads.
    let key = dir.path().join("team.key");
    std::fs::write(&key, "old key\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    run_ok(&mut keygen("team"));
    assert_ne!(
        std::fs::read_to_string(&key).unwrap(),
        "old key\n",
        "the key was replaced"
    );
    assert_eq!(mode(&key), 0o600, "private key mode");
    assert_eq!(mode(&dir.path().join("team.pub")), 0o644, "public key mode");
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["team.key", "team.pub"],
        "no temporary file is left behind"
    );

    // A symbolic link where the key goes is refused; the file it points to is untouched.
    let target = dir.path().join("precious.txt");
    std::fs::write(&target, "precious\n").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("linked.key")).unwrap();
    let out = run_fail(&mut keygen("linked"));
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("linked.key is a symbolic link"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    assert!(
        std::fs::symlink_metadata(dir.path().join("linked.key"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        !dir.path().join("linked.pub").exists(),
        "nothing was written"
    );
}

#[test]
fn push_signs_and_promote_carries_both_formats_across_registries() {
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = berth_keygen(env, dir.path(), "release");
    // Both TLS with the harness CA and credentials: berth's registry flags apply to both ends.
    let src = Registry::oci_tls(env);
    let dst = Registry::dist_tls(env);
    let src_repo = env.repo("promote-src");
    let dst_repo = env.repo("promote-dst");

    // CI: push and sign in one step (bundle, since this registry has the referrers API) …
    let mut cmd = src.berth();
    cmd.args([
        "--output",
        "json",
        "push",
        &src.oci_url(&src_repo, ":build-1"),
    ])
    .arg(berth_e2e::testdata("app"))
    .arg("--sign-key")
    .arg(&key)
    .env("COSIGN_PASSWORD", PASSWORD);
    let pushed: serde_json::Value = serde_json::from_str(&run_ok(&mut cmd)).unwrap();
    let digest = pushed["digest"].as_str().unwrap().to_string();
    assert_verified(
        &berth_verify(src, &src_repo, &format!("@{digest}"), &public),
        "bundle",
    );
    // … and a classic signature too, for consumers still on the tag scheme.
    berth_sign(src, &src_repo, &digest, &key, "classic");

    // Release manager: promote to the other registry, verifying first.
    let mut cmd = src.berth();
    cmd.args([
        "--output",
        "json",
        "promote",
        &src.oci_url(&src_repo, &format!("@{digest}")),
        &dst.oci_url(&dst_repo, ":production"),
    ])
    .arg("--key")
    .arg(&public);
    let promoted: serde_json::Value = serde_json::from_str(&run_ok(&mut cmd)).unwrap();
    assert_eq!(promoted["digest"], digest.as_str());
    assert_eq!(promoted["signatures"], 2, "{promoted}");

    // Both formats arrived: berth sees them, and real cosign accepts the destination.
    let out = berth_verify(dst, &dst_repo, ":production", &public);
    assert_verified(&out, "classic");
    assert_verified(&out, "bundle");
    for cosign in [&env.cosign_v2, &env.cosign_v3] {
        let out = cosign_verify(dst, cosign, &dst_repo, ":production", &public);
        assert!(
            out.status.success(),
            "{} rejected the promoted artifact:\n{}",
            cosign.display(),
            out.stderr
        );
    }

    // inspect --key lists both signatures and says each verifies.
    let mut cmd = dst.berth();
    cmd.args([
        "--output",
        "json",
        "inspect",
        &dst.oci_url(&dst_repo, ":production"),
        "--key",
    ])
    .arg(&public);
    let inspected: serde_json::Value = serde_json::from_str(&run_ok(&mut cmd)).unwrap();
    let sigs = inspected["signatures"]
        .as_array()
        .unwrap_or_else(|| panic!("no signatures: {inspected}"));
    assert_eq!(sigs.len(), 2, "{inspected}");
    assert!(sigs.iter().all(|s| s["verified"] == true), "{inspected}");

    // Promote --key refuses an artifact the key did not sign, and copies nothing.
    let (_, stranger) = berth_keygen(env, dir.path(), "stranger");
    let mut cmd = src.berth();
    cmd.args([
        "promote",
        &src.oci_url(&src_repo, &format!("@{digest}")),
        &src.oci_url(&dst_repo, ":refused"),
    ])
    .arg("--key")
    .arg(&stranger);
    let out = run_fail(&mut cmd);
    assert_eq!(out.code, Some(EXIT_VERIFY_FAILED), "{}", out.stderr);
    assert!(!src.tags(&dst_repo).contains(&"refused".to_string()));
}
