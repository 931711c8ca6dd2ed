//! A CI pipeline pushes rendered manifests and gets them back byte for byte, on every
//! registry flavour; pack and push agree on the digest; a re-push uploads nothing.

use crate::common::{Reg, app, assert_same_tree, json};
use berth_e2e::{env, run, run_ok};

fn push_pull_round_trip(reg: Reg) {
    let repo = env().repo("push-pull");
    let reference = reg.oci_ref(&repo, "v1");
    let app = app();
    let app_path = app.to_str().unwrap();
    let meta = [
        "--source",
        "https://git.example/shop",
        "--revision",
        "main@sha1:0123456789abcdef",
    ];

    let pushed = json(&run_ok(
        reg.berth(&["push", &reference, app_path, "--output", "json"])
            .args(meta),
    ));
    let digest = pushed["digest"].as_str().unwrap().to_string();
    assert!(digest.starts_with("sha256:"), "{pushed}");
    assert_eq!(pushed["tag"], "v1");
    assert_eq!(pushed["repository"], format!("{}/{repo}", reg.host));
    assert_eq!(pushed["url"], format!("{reference}@{digest}"));
    // The registry itself (asked through oras) agrees on the digest.
    assert_eq!(reg.oras_digest(&repo, "v1"), digest, "{}", reg.name);

    // pack (offline) predicts the digest the registry has.
    let layout = tempfile::tempdir().unwrap();
    let packed = run_ok(
        env()
            .berth()
            .args(["pack", app_path, "-o"])
            .arg(layout.path())
            .args(meta),
    );
    assert_eq!(
        packed.trim(),
        digest,
        "pack and push disagree on {}",
        reg.name
    );

    // Pull by tag and by digest: byte-identical files.
    for source in [
        reference.clone(),
        format!("oci://{}/{repo}@{digest}", reg.host),
    ] {
        let out = tempfile::tempdir().unwrap();
        let pulled = run_ok(&mut reg.berth(&["pull", &source, "-o", out.path().to_str().unwrap()]));
        assert_eq!(pulled.trim(), digest);
        assert_same_tree(&app, out.path());
    }

    // Re-push of unchanged content: same digest, no blob uploaded — per berth, and per the
    // registry's own access log where it keeps one.
    let uploads_before = reg.logged_uploads(&repo);
    if let Some(n) = uploads_before {
        assert!(
            n >= 2,
            "{}: the registry log shows {n} uploads for the first push",
            reg.name
        );
    }
    let again = run(reg
        .berth(&["push", &reg.oci_ref(&repo, "v1-again"), app_path])
        .args(meta));
    assert!(again.status.success(), "{}", again.stderr);
    assert!(again.stdout.contains(&digest), "{}", again.stdout);
    assert!(
        again.stderr.contains("(0 blobs uploaded)"),
        "re-push uploaded blobs: {}",
        again.stderr
    );
    assert_eq!(
        reg.logged_uploads(&repo),
        uploads_before,
        "{}: the registry logged uploads for a re-push",
        reg.name
    );

    // list shows both tags with the metadata.
    let listed = json(&run_ok(&mut reg.berth(&[
        "list",
        &format!("oci://{}/{repo}", reg.host),
        "--output",
        "json",
    ])));
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{listed}");
    for row in rows {
        assert_eq!(row["digest"], digest.as_str());
        assert_eq!(row["source"], "https://git.example/shop");
        assert_eq!(row["revision"], "main@sha1:0123456789abcdef");
        assert_eq!(row["created"], "1970-01-01T00:00:00Z");
    }
}

#[test]
fn push_pull_distribution() {
    push_pull_round_trip(Reg::dist());
}

#[test]
fn push_pull_distribution_tls_auth() {
    push_pull_round_trip(Reg::dist_tls());
}

#[test]
fn push_pull_oci11() {
    push_pull_round_trip(Reg::oci());
}

#[test]
fn push_pull_oci11_tls_auth() {
    push_pull_round_trip(Reg::oci_tls());
}

#[test]
fn pushing_a_packed_layout_keeps_its_digest() {
    let reg = Reg::oci_tls();
    let repo = env().repo("push-layout");
    let layout = tempfile::tempdir().unwrap();
    let packed = run_ok(
        env()
            .berth()
            .args(["pack", app().to_str().unwrap(), "-o"])
            .arg(layout.path())
            .args(["--created", "2024-05-01T12:00:00Z"]),
    );
    let pushed = run_ok(&mut reg.berth(&[
        "push",
        &reg.oci_ref(&repo, "offline"),
        layout.path().to_str().unwrap(),
    ]));
    assert!(
        pushed.trim().ends_with(packed.trim()),
        "layout push {pushed} vs pack {packed}"
    );
    assert_eq!(reg.oras_digest(&repo, "offline"), packed.trim());
}

#[test]
fn stdin_input_is_pushed_as_one_file() {
    let reg = Reg::dist();
    let repo = env().repo("push-stdin");
    let manifest = std::fs::read(app().join("backend/api.yaml")).unwrap();
    let mut cmd = reg.berth(&["push", &reg.oci_ref(&repo, "v1"), "-"]);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&manifest).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    run_ok(&mut reg.berth(&[
        "pull",
        &reg.oci_ref(&repo, "v1"),
        "-o",
        dir.path().to_str().unwrap(),
    ]));
    assert_eq!(
        std::fs::read(dir.path().join("manifests.yaml")).unwrap(),
        manifest
    );
}

#[test]
fn inspect_and_diff_describe_the_artifact() {
    let reg = Reg::oci();
    let repo = env().repo("inspect-diff");
    let reference = reg.oci_ref(&repo, "v1");
    run_ok(&mut reg.berth(&[
        "push",
        &reference,
        app().to_str().unwrap(),
        "--annotation",
        "team=shop",
    ]));

    let inspected = json(&run_ok(
        &mut reg.berth(&["inspect", &reference, "--output", "json"]),
    ));
    assert_eq!(inspected["annotations"]["team"], "shop");
    assert_eq!(
        inspected["layers"][0]["mediaType"],
        "application/vnd.cncf.flux.content.v1.tar+gzip"
    );
    assert_eq!(
        inspected["config"]["mediaType"],
        "application/vnd.cncf.flux.config.v1+json"
    );
    let files: Vec<&str> = inspected["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(files.contains(&"backend/api.yaml"), "{files:?}");
    assert!(inspected["objects"].as_u64().unwrap() > 5, "{inspected}");

    // Change one object, drop a file, add an object: diff reports each.
    let work = tempfile::tempdir().unwrap();
    for (name, bytes) in crate::common::tree(&app()) {
        let path = work.path().join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let api = work.path().join("backend/api.yaml");
    let text = std::fs::read_to_string(&api).unwrap();
    assert!(
        text.contains("replicas: 2"),
        "testdata/app changed; adapt this test"
    );
    std::fs::write(&api, text.replacen("replicas: 2", "replicas: 7", 1)).unwrap();
    std::fs::remove_file(work.path().join("platform/viewer-rbac.yaml")).unwrap();
    std::fs::write(
        work.path().join("extra.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n  namespace: shop-api\n",
    )
    .unwrap();
    let out = run(&mut reg.berth(&["diff", &reference, work.path().to_str().unwrap()]));
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout.contains("+ added    ConfigMap shop-api/extra"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("- removed  ClusterRole.rbac.authorization.k8s.io"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("~ changed  Deployment.apps shop-api/api"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("-  replicas: 2") && out.stdout.contains("+  replicas: 7"),
        "{}",
        out.stdout
    );
}

#[test]
fn diff_never_prints_secret_values() {
    let reg = Reg::dist();
    let repo = env().repo("diff-secret");
    let reference = reg.oci_ref(&repo, "v1");
    let dir = tempfile::tempdir().unwrap();
    let secret = |value: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: shop\nstringData:\n  password: {value}\n"
        )
    };
    std::fs::write(dir.path().join("secret.yaml"), secret("old-value-1234")).unwrap();
    run_ok(&mut reg.berth(&[
        "push",
        &reference,
        dir.path().to_str().unwrap(),
        "--allow-secrets",
    ]));
    std::fs::write(dir.path().join("secret.yaml"), secret("new-value-5678")).unwrap();
    let out = run(&mut reg.berth(&[
        "diff",
        &reference,
        dir.path().to_str().unwrap(),
        "--allow-secrets",
    ]));
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout.contains("~ changed  Secret shop/db"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Secret content not shown"),
        "{}",
        out.stdout
    );
    for value in ["old-value-1234", "new-value-5678"] {
        assert!(
            !out.stdout.contains(value) && !out.stderr.contains(value),
            "secret value printed: {}",
            out.stdout
        );
    }
}
