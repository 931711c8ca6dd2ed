#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Smoke tests: every peer of the test environment is real, running and reachable.
//! If one of these fails, later tests would fail for reasons unrelated to berth.
//! A test binary of its own, not a module of an area's: it tests the environment, not berth,
//! and `cargo test -p berth-e2e --test smoke` alone tells a broken environment from a broken
//! berth.

use berth_e2e::{env, run, run_ok};
use std::fs;
use std::time::{Duration, Instant};

#[test]
fn peer_versions_are_real_and_logged() {
    let env = env();
    let versions = env.peer_versions();
    println!("peer versions:\n{versions}");
    for peer in [
        "kube-apiserver",
        "etcd",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
        "distribution",
        "olareg",
        "cosign-v2",
        "cosign-v3",
        "flux",
        "oras",
        "kubectl",
    ] {
        let line = versions
            .lines()
            .find(|l| l.split_whitespace().next() == Some(peer))
            .unwrap_or_else(|| panic!("{peer} missing from {}", env.peer_versions.display()));
        assert!(
            line.split_whitespace()
                .nth(1)
                .is_some_and(|v| v.chars().any(|c| c.is_ascii_digit())),
            "{peer} has no version: {line:?}"
        );
    }
    // Ask the API server itself, not the file.
    let server = run_ok(env.kubectl_cmd().args(["version", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(&server).expect("kubectl version json");
    let git = v["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default();
    println!("kube-apiserver reports {git}");
    assert!(git.starts_with("v1."), "unexpected server version {git:?}");
}

#[test]
fn configmap_round_trips_through_the_api_server() {
    let env = env();
    let ns = env.namespace("smoke-cm");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cm.yaml");
    fs::write(
        &file,
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello\n  namespace: {}\ndata:\n  greeting: ahoy\n",
            ns.name()
        ),
    )
    .unwrap();
    run_ok(env.kubectl_cmd().arg("apply").arg("-f").arg(&file));
    let got = run_ok(env.kubectl_cmd().args([
        "get",
        "configmap",
        "hello",
        "-n",
        ns.name(),
        "-o",
        "jsonpath={.data.greeting}",
    ]));
    assert_eq!(got, "ahoy");
}

fn deployment(name: &str, ns: &str, image: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
        - name: main
          image: {image}
"#
    )
}

#[test]
fn deployment_becomes_available_and_namespace_deletion_completes() {
    let env = env();
    let ns = env.namespace("smoke-deploy");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deploy.yaml");
    fs::write(
        &file,
        deployment("web", ns.name(), "registry.example/web:1", 2),
    )
    .unwrap();
    run_ok(env.kubectl_cmd().arg("apply").arg("-f").arg(&file));
    run_ok(env.kubectl_cmd().args([
        "wait",
        "deployment/web",
        "-n",
        ns.name(),
        "--for=condition=Available",
        "--timeout=60s",
    ]));
    let ready = run_ok(env.kubectl_cmd().args([
        "get",
        "deployment/web",
        "-n",
        ns.name(),
        "-o",
        "jsonpath={.status.readyReplicas}",
    ]));
    assert_eq!(
        ready, "2",
        "both replicas are scheduled on kwok nodes and Ready"
    );

    // The namespace controller must really finalize the namespace (pods and all).
    run_ok(
        env.kubectl_cmd()
            .args(["delete", "namespace", ns.name(), "--wait=false"]),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = run(env.kubectl_cmd().args(["get", "namespace", ns.name()]));
        if !out.status.success() && out.stderr.contains("NotFound") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "namespace {} still exists after 90 s",
            ns.name()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn never_ready_image_makes_a_rollout_fail() {
    let env = env();
    let ns = env.namespace("smoke-fail");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deploy.yaml");
    fs::write(
        &file,
        deployment("stuck", ns.name(), &env.never_ready_image, 1),
    )
    .unwrap();
    run_ok(env.kubectl_cmd().arg("apply").arg("-f").arg(&file));
    // The pod gets scheduled and runs, but never turns Ready.
    run_ok(env.kubectl_cmd().args([
        "wait",
        "pod",
        "-l",
        "app=stuck",
        "-n",
        ns.name(),
        "--for=jsonpath={.status.phase}=Running",
        "--timeout=60s",
    ]));
    let rollout = run(env.kubectl_cmd().args([
        "rollout",
        "status",
        "deployment/stuck",
        "-n",
        ns.name(),
        "--timeout=8s",
    ]));
    assert!(
        !rollout.status.success(),
        "rollout of a never-ready image must not complete"
    );
}

#[test]
fn job_runs_to_completion() {
    let env = env();
    let ns = env.namespace("smoke-job");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.yaml");
    fs::write(
        &file,
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\n  namespace: {}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: m\n          image: registry.example/migrate:1\n",
            ns.name()
        ),
    )
    .unwrap();
    run_ok(env.kubectl_cmd().arg("apply").arg("-f").arg(&file));
    run_ok(env.kubectl_cmd().args([
        "wait",
        "job/migrate",
        "-n",
        ns.name(),
        "--for=condition=Complete",
        "--timeout=60s",
    ]));
}

#[test]
fn rbac_is_enforced() {
    let env = env();
    let ns = env.namespace("smoke-rbac");
    run_ok(
        env.kubectl_cmd()
            .args(["create", "serviceaccount", "nobody", "-n", ns.name()]),
    );
    let who = format!("system:serviceaccount:{}:nobody", ns.name());
    let out = run(env.kubectl_cmd().args([
        "auth",
        "can-i",
        "create",
        "configmaps",
        "-n",
        ns.name(),
        "--as",
        &who,
    ]));
    assert_eq!(
        out.stdout.trim(),
        "no",
        "a fresh ServiceAccount has no rights: {out:?}"
    );
    // A token issued by the API server's service-account issuer authenticates.
    let token = run_ok(
        env.kubectl_cmd()
            .args(["create", "token", "nobody", "-n", ns.name()]),
    );
    assert!(
        token.trim().split('.').count() == 3,
        "TokenRequest returns a JWT"
    );
}

/// `oras` pushes a file and pulls it back, byte for byte.
fn oras_round_trip(registry: &str, tls: bool) {
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    let content = format!("hello from {registry}\n");
    fs::write(dir.path().join("hello.txt"), &content).unwrap();
    let reference = format!("{registry}/{}:v1", env.repo("smoke-oras"));
    let auth = env.oras_flags(tls);
    run_ok(
        env.tool(&env.oras)
            .current_dir(dir.path())
            .args(["push", &reference, "hello.txt"])
            .args(&auth),
    );
    let out = tempfile::tempdir().unwrap();
    run_ok(
        env.tool(&env.oras)
            .args(["pull", &reference, "-o"])
            .arg(out.path())
            .args(&auth),
    );
    assert_eq!(
        fs::read_to_string(out.path().join("hello.txt")).unwrap(),
        content
    );
    if tls {
        // Without credentials the registry refuses.
        let anon = run(env
            .tool(&env.oras)
            .args(["pull", &reference, "--ca-file"])
            .arg(&env.ca_file)
            .arg("-o")
            .arg(out.path()));
        assert!(
            !anon.status.success(),
            "anonymous pull from {registry} must be refused"
        );
    }
}

#[test]
fn oras_round_trip_distribution() {
    oras_round_trip(&env().registry_dist, false);
}

#[test]
fn oras_round_trip_distribution_tls_auth() {
    oras_round_trip(&env().registry_dist_tls, true);
}

#[test]
fn oras_round_trip_oci11() {
    oras_round_trip(&env().registry_oci, false);
}

#[test]
fn oras_round_trip_oci11_tls_auth() {
    oras_round_trip(&env().registry_oci_tls, true);
}

#[test]
fn only_the_oci11_registry_has_the_referrers_api() {
    let env = env();
    let digest = "sha256:".to_string() + &"0".repeat(64);
    let code = |registry: &str| {
        let url = format!(
            "http://{registry}/v2/{}/referrers/{digest}",
            env.repo("smoke-ref")
        );
        run_ok(
            env.tool("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url]),
        )
    };
    assert_eq!(
        code(&env.registry_oci),
        "200",
        "OCI 1.1 registry answers referrers"
    );
    assert_eq!(
        code(&env.registry_dist),
        "404",
        "distribution 2.8 has no referrers API"
    );
}

#[test]
fn interop_tools_answer() {
    let env = env();
    let v2 = run_ok(env.tool(&env.cosign_v2).arg("version"));
    assert!(v2.contains("v2."), "cosign v2 reports: {v2}");
    let v3 = run_ok(env.tool(&env.cosign_v3).arg("version"));
    assert!(v3.contains("v3."), "cosign v3 reports: {v3}");
    let flux = run_ok(env.tool(&env.flux).arg("--version"));
    assert!(flux.contains("flux version"), "flux reports: {flux}");
    let oras = run_ok(env.tool(&env.oras).arg("version"));
    assert!(oras.contains("Version"), "oras reports: {oras}");
    let kubectl = run_ok(env.kubectl_cmd().args(["version", "--client"]));
    assert!(
        kubectl.contains("Client Version"),
        "kubectl reports: {kubectl}"
    );
}
