//! Bad input never reaches the registry: each case under testdata/invalid/ fails with exit
//! code 3, names the file (and line), and the tag does not exist afterwards.

use crate::common::Reg;
use berth_e2e::{env, run, run_ok, testdata};

/// (case, texts the error must contain)
const CASES: &[(&str, &[&str])] = &[
    ("invalid-yaml", &["deploy.yaml:14", "invalid YAML"]),
    ("missing-apiversion", &["cm.yaml:2", "apiVersion"]),
    ("missing-kind", &["cm.yaml:1", "kind"]),
    ("missing-name", &["cm.yaml:1", "metadata.name"]),
    (
        "generate-name",
        &[
            "migrate.yaml:10",
            "Job object sets metadata.generateName (\"migrate-\")",
            "cannot be applied idempotently",
            "hint: give it metadata.name",
        ],
    ),
    (
        "duplicate-object",
        &["second.yaml:10", "first.yaml:1", "Deployment.apps shop/web"],
    ),
    ("non-manifest", &["README.md", ".berthignore"]),
    ("binary-file", &["logo.png"]),
    (
        "plain-secret",
        &[
            "secret.yaml:1",
            "Secret shop/db-credentials",
            "--allow-secrets",
        ],
    ),
    ("empty", &["no Kubernetes objects"]),
    ("symlink-escape", &["linked-secret.yaml", "outside"]),
    ("not-an-object", &["list.yaml:1"]),
];

#[test]
fn every_bad_input_is_refused_and_nothing_is_pushed() {
    let reg = Reg::dist();
    for (case, expected) in CASES {
        let repo = env().repo(&format!("invalid-{case}"));
        let path = testdata(format!("invalid/{case}"));
        let out = run(&mut reg.berth(&["push", &reg.oci_ref(&repo, "v1"), path.to_str().unwrap()]));
        assert_eq!(
            out.code,
            Some(3),
            "{case}: expected exit 3, got {:?}\n{}",
            out.code,
            out.stderr
        );
        for text in *expected {
            assert!(
                out.stderr.contains(text),
                "{case}: error lacks '{text}':\n{}",
                out.stderr
            );
        }
        assert!(
            out.stderr.contains("hint:"),
            "{case}: no hint:\n{}",
            out.stderr
        );
        assert!(
            out.stdout.is_empty(),
            "{case}: printed a result: {}",
            out.stdout
        );
        assert!(
            reg.tags(&repo).is_empty(),
            "{case}: something was pushed to {repo}"
        );

        // pack refuses the same way, offline.
        let dir = tempfile::tempdir().unwrap();
        let packed = run(env()
            .berth()
            .args(["pack", path.to_str().unwrap(), "-o"])
            .arg(dir.path().join("out")));
        assert_eq!(packed.code, Some(3), "{case}: pack: {}", packed.stderr);
    }
}

#[test]
fn plain_secret_value_never_appears_in_the_error() {
    let out = run(env().berth().args([
        "pack",
        testdata("invalid/plain-secret").to_str().unwrap(),
        "-o",
        "/nonexistent",
    ]));
    assert_eq!(out.code, Some(3));
    assert!(
        !out.stderr.contains("not-a-real-password"),
        "secret value leaked: {}",
        out.stderr
    );
}

#[test]
fn allow_secrets_and_encrypted_secrets_pass() {
    let reg = Reg::dist();
    let repo = env().repo("secrets-ok");
    run_ok(&mut reg.berth(&[
        "push",
        &reg.oci_ref(&repo, "plain"),
        testdata("invalid/plain-secret").to_str().unwrap(),
        "--allow-secrets",
    ]));
    run_ok(&mut reg.berth(&[
        "push",
        &reg.oci_ref(&repo, "encrypted"),
        testdata("encrypted-secrets").to_str().unwrap(),
    ]));
    let mut tags = reg.tags(&repo);
    tags.sort();
    assert_eq!(tags, ["encrypted", "plain"]);
}

#[test]
fn berthignore_lets_a_readme_live_next_to_manifests() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["cm.yaml", "README.md"] {
        std::fs::copy(
            testdata("invalid/non-manifest").join(name),
            dir.path().join(name),
        )
        .unwrap();
    }
    let refused = run(env()
        .berth()
        .args(["pack", dir.path().to_str().unwrap(), "-o"])
        .arg(dir.path().join("out")));
    assert_eq!(refused.code, Some(3));
    std::fs::write(dir.path().join(".berthignore"), "*.md\n/out/\n").unwrap();
    run_ok(
        env()
            .berth()
            .args(["pack", dir.path().to_str().unwrap(), "-o"])
            .arg(dir.path().join("out")),
    );
}
