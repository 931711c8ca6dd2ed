//! Helpers shared by the deploy tests: rendering `deploy/` with `kubectl kustomize`
//! (also through overlays generated in a temp dir, so tests can install under unique names),
//! kubeconfigs built from ServiceAccount tokens, and a second, empty kube-apiserver for what
//! must start from a cluster without berth (shipped `berth-system`, no CRD).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_e2e::{Env, PrivateApiServer, poll_until, repo_root, run_ok};
use serde_json::Value;

/// `deploy/` in this checkout.
pub fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

/// Pushes `dir` as tag `v1` of a fresh repository (named after `name`) on the plain-HTTP
/// registry, signed with `key` (password "e2e"); returns the repository URL `oci://…`.
pub fn push_signed_v1(env: &Env, dir: &Path, key: &Path, name: &str) -> String {
    let url = format!("oci://{}/{}", env.registry_dist, env.repo(name));
    run_ok(
        env.berth()
            .env("COSIGN_PASSWORD", "e2e")
            .args(["push", &format!("{url}:v1")])
            .arg(dir)
            .args(["--insecure", "--sign-key"])
            .arg(key),
    );
    url
}

/// `kubectl kustomize DIR`.
pub fn kustomize(env: &Env, dir: &Path) -> String {
    run_ok(env.kubectl_cmd().arg("kustomize").arg(dir))
}

/// Every document of a multi-document YAML stream, as JSON values (empty documents dropped).
pub fn documents(yaml: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in yaml.lines().chain(std::iter::once("---")) {
        if line.trim_end() == "---" {
            if !current.trim().is_empty() {
                let v: Value = serde_saphyr::from_str(&current)
                    .unwrap_or_else(|e| panic!("not valid YAML: {e}\n{current}"));
                if !v.is_null() {
                    docs.push(v);
                }
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs
}

/// The one document of `kind` named `name`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendering"))
}

/// The agent's container arguments from a rendered Deployment/DaemonSet, with every listen
/// address moved to a free loopback port (tests run side by side on one machine).
pub fn agent_args(workload: &Value) -> Vec<String> {
    workload["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("the agent container has args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .map(|a| match a.split_once('=') {
            Some((flag @ ("--metrics-addr" | "--receiver-addr"), _)) => {
                format!("{flag}=127.0.0.1:0")
            }
            _ => a,
        })
        .collect()
}

/// A kustomization in `dir` that installs `deploy/<overlay>` into namespace `system` with
/// every name prefixed by `prefix` and every object labelled `berth-e2e-run=<run_label>`,
/// leaving out the CRD (shared by all tests, installed as is), so tests can install the
/// shipped manifests side by side on one cluster.
pub fn prefixed_install(
    dir: &Path,
    overlay: &str,
    prefix: &str,
    system: &str,
    run_label: &str,
) -> PathBuf {
    let sys = dir.join("system");
    fs::create_dir_all(&sys).unwrap();
    fs::write(
        sys.join("kustomization.yaml"),
        format!(
            "namespace: {system}\nnamePrefix: {prefix}\nresources:\n  - {base}\npatches:\n  - patch: |-\n      $patch: delete\n      apiVersion: apiextensions.k8s.io/v1\n      kind: CustomResourceDefinition\n      metadata:\n        name: sources.berth.dev\n",
            base = relative(&sys, &deploy_dir().join(overlay))
        ),
    )
    .unwrap();
    fs::write(
        dir.join("kustomization.yaml"),
        format!("labels:\n  - pairs: {{berth-e2e-run: {run_label}}}\nresources:\n  - system\n"),
    )
    .unwrap();
    dir.to_path_buf()
}

/// Deletes the cluster-scoped objects labelled `label` when dropped (namespaces go with
/// their own guards).
pub struct ClusterScoped<'a> {
    pub env: &'a Env,
    pub label: String,
}

impl Drop for ClusterScoped<'_> {
    fn drop(&mut self) {
        let _ = self
            .env
            .kubectl_cmd()
            .args([
                "delete",
                "clusterroles,clusterrolebindings",
                "-l",
                &self.label,
                "--ignore-not-found",
                "--wait=false",
            ])
            .output();
    }
}

/// A path to `target` relative to `from` (kustomize refuses absolute resource paths).
pub fn relative(from: &Path, target: &Path) -> String {
    let from = from.canonicalize().unwrap();
    let target = target.canonicalize().unwrap();
    let common = from
        .components()
        .zip(target.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut rel = PathBuf::new();
    for _ in from.components().skip(common) {
        rel.push("..");
    }
    for c in target.components().skip(common) {
        rel.push(c);
    }
    rel.to_string_lossy().into_owned()
}

/// A kubeconfig that authenticates with `token` only (no client certificate), trusting the
/// test CA, with `namespace` as the context's default (as a pod's in-cluster config has).
pub fn token_kubeconfig(
    dir: &Path,
    server: &str,
    ca_file: &Path,
    token: &str,
    namespace: &str,
) -> PathBuf {
    let ca = fs::read(ca_file).unwrap();
    let ca_b64 = base64_encode(&ca);
    let path = dir.join("token.kubeconfig");
    fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca_b64}\nusers:\n- name: sa\n  user:\n    token: {token}\ncontexts:\n- name: sa\n  context:\n    cluster: e2e\n    user: sa\n    namespace: {namespace}\ncurrent-context: sa\n"
        ),
    )
    .unwrap();
    path
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Polls `check` every half second until it holds or `timeout` passes; then panics with
/// `what` and whatever `context` says (a log, an object's status).
pub fn wait_until(
    what: &str,
    timeout: Duration,
    context: impl Fn() -> String,
    check: impl FnMut() -> bool,
) {
    poll_until(what, timeout, Duration::from_millis(500), check, context);
}

/// A second kube-apiserver on the test environment's etcd, under its own key prefix: an
/// empty cluster (no CRDs, no berth-system) with RBAC and the same CA and token signer as
/// the environment's. It has no controller-manager, scheduler or nodes: objects are stored
/// and admitted, nothing runs. Stopped, and its keys deleted from etcd, when dropped.
pub struct FreshCluster {
    pub api: PrivateApiServer,
    prefix: String,
    etcd: String,
}

impl FreshCluster {
    pub fn start(env: &'static Env) -> FreshCluster {
        // The environment's own API server shows how to run one here: same binary and flags,
        // another port and another etcd prefix.
        let prefix = format!("/{}", berth_e2e::unique_name("berth-e2e-fresh", 60));
        let api = PrivateApiServer::start(env, &["--etcd-prefix".into(), prefix.clone()]);
        let etcd = api
            .flag("--etcd-servers")
            .and_then(|s| s.split(',').next())
            .unwrap_or_default()
            .to_string();
        assert!(
            !etcd.is_empty(),
            "the environment's kube-apiserver has no --etcd-servers flag"
        );
        FreshCluster { api, prefix, etcd }
    }
}

impl Drop for FreshCluster {
    fn drop(&mut self) {
        self.api.kill9();
        // Every key under the prefix: [prefix/, prefix0) in etcd's v3 JSON gateway.
        let key = base64_encode(format!("{}/", self.prefix).as_bytes());
        let end = base64_encode(format!("{}0", self.prefix).as_bytes());
        let _ = Command::new("curl")
            .args(["-fsS", "--max-time", "10", "-X", "POST"])
            .arg(format!("{}/v3/kv/deleterange", self.etcd))
            .arg("-d")
            .arg(format!("{{\"key\":\"{key}\",\"range_end\":\"{end}\"}}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
