//! `deploy/overlays/daemonset` installed for real (under names of this test's own): one agent
//! pod per node, admitted under Pod Security "restricted", and no Deployment beside it.

use crate::common::{ClusterScoped, documents, kustomize, prefixed_install};
use berth_e2e::{env, run, run_ok, unique_name};
use serde_json::Value;

#[test]
fn the_daemonset_overlay_runs_one_hardened_agent_pod_per_node() {
    let env = env();
    let system = env.namespace("berth-ds");
    let id = unique_name("dd", 20);
    let prefix = format!("{id}-");
    let _cluster_scoped = ClusterScoped {
        env,
        label: format!("berth-e2e-run={id}"),
    };
    let scratch = tempfile::tempdir().unwrap();

    let install = prefixed_install(
        &scratch.path().join("install"),
        "overlays/daemonset",
        &prefix,
        system.name(),
        &id,
    );
    let rendered = kustomize(env, &install);
    let docs = documents(&rendered);
    assert!(
        !docs.iter().any(|d| d["kind"] == "Deployment"),
        "the overlay keeps the base Deployment"
    );
    let file = scratch.path().join("install.yaml");
    std::fs::write(&file, &rendered).unwrap();
    let out = run(env
        .kubectl_cmd()
        .args(["apply", "--server-side", "-f"])
        .arg(&file));
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    assert!(
        !out.stderr.contains("PodSecurity"),
        "Pod Security warnings: {}",
        out.stderr
    );

    let ds = format!("daemonset/{prefix}berth-agent");
    run_ok(env.kubectl_cmd().args([
        "rollout",
        "status",
        &ds,
        "-n",
        system.name(),
        "--timeout=120s",
    ]));
    let nodes = run_ok(env.kubectl_cmd().args([
        "get",
        "nodes",
        "-l",
        "kubernetes.io/os=linux",
        "-o",
        "name",
    ]));
    let status: Value = serde_json::from_str(&run_ok(env.kubectl_cmd().args([
        "get",
        &ds,
        "-n",
        system.name(),
        "-o",
        "json",
    ])))
    .unwrap();
    let want = nodes.lines().count() as i64;
    assert!(want > 0, "the test cluster has Linux nodes");
    assert_eq!(
        status["status"]["numberReady"], want,
        "one ready agent pod per node: {}",
        status["status"]
    );
    // The namespace enforces "restricted": had a pod violated it, the DaemonSet could not
    // have created it, and the rollout above would not have finished.
    let labels = run_ok(env.kubectl_cmd().args([
        "get",
        "namespace",
        system.name(),
        "-o",
        "jsonpath={.metadata.labels.pod-security\\.kubernetes\\.io/enforce}",
    ]));
    assert_eq!(labels, "restricted");
}
