//! Shared by the agent tests that run `berth-agent` as a controller: agents run as child
//! processes against the real API server, their JSON logs, the Source CRD, pushes and small HTTP
//! requests.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

pub use berth_e2e::manifests;
use berth_e2e::{Env, Namespace, Process, poll_until, run_ok};
use serde_json::Value;

/// Keeps the tests that hold the agent to a wall-clock bound (push-to-applied, failover, stepping
/// down, shutdown) apart from the tests that load the machine for a while (the receiver flood,
/// thousands of signed requests, a second kube-apiserver writing 1,500 objects). Each of those
/// ran in a test binary of its own, the flood expressly so, before the agent tests became one
/// binary. Every other test runs beside both kinds.
static TIMING: RwLock<()> = RwLock::new(());

/// Held for the whole of a test that measures how fast the agent reacts: no machine-loading test
/// runs meanwhile (nor another measuring one).
pub fn measuring_reaction_time() -> RwLockWriteGuard<'static, ()> {
    TIMING.write().unwrap_or_else(PoisonError::into_inner)
}

/// Held for the whole of a test that loads the machine: such tests may run beside each other,
/// not beside a measuring one.
pub fn loading_the_machine() -> RwLockReadGuard<'static, ()> {
    TIMING.read().unwrap_or_else(PoisonError::into_inner)
}

/// Held for the whole of a test that installs a real-world bundle (`corpus`), whose cluster-wide
/// objects would intercept other tests' objects (ingress-nginx's admission webhook refuses every
/// Ingress while its backend is unreachable), and by the tests that create such objects. A file
/// lock in the environment's state directory, so it also keeps apart two test processes that
/// share the environment.
pub fn cluster_wide_bundles(env: &Env) -> std::fs::File {
    let lock = std::fs::File::create(env.state.join("corpus.lock")).expect("create corpus lock");
    lock.lock().expect("lock corpus");
    lock
}

pub fn configmap(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{value}\"\n"
    )
}

/// `kubectl get KIND NAME -n NS -o json`, `None` when it does not exist.
pub fn get(env: &Env, kind: &str, ns: &str, name: &str) -> Option<Value> {
    env.object(kind, Some(ns), name)
}

pub fn configmap_value(env: &Env, ns: &str, name: &str) -> Option<String> {
    get(env, "configmap", ns, name).and_then(|c| c["data"]["value"].as_str().map(String::from))
}

pub fn kubectl_apply(env: &Env, yaml: String) {
    let dir = manifests(&[("x.yaml", yaml)]);
    run_ok(
        env.kubectl_cmd()
            .args(["apply", "-f"])
            .arg(dir.path().join("x.yaml")),
    );
}

/// Pushes `dir` unsigned to `oci://REGISTRY/REPO:TAG`; returns the digest.
pub fn push(env: &Env, registry: &str, repo: &str, tag: &str, dir: &Path) -> String {
    let out = run_ok(
        env.berth()
            .args(["push", &format!("oci://{registry}/{repo}:{tag}")])
            .arg(dir)
            .args([
                "--insecure",
                "--output",
                "json",
                "--revision",
                &format!("main@sha1:{tag}"),
            ]),
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    v["digest"].as_str().unwrap().to_string()
}

/// A Source following `tag` of `repo` on the plain-HTTP distribution registry, unsigned.
pub fn source_yaml(
    env: &Env,
    ns: &str,
    name: &str,
    repo: &str,
    tag: &str,
    interval: &str,
    extra: &str,
) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Source\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  url: oci://{reg}/{repo}\n  ref: {{tag: {tag}}}\n  interval: {interval}\n  timeout: 1m\n  insecure: true\n  verify: {{insecureSkipVerify: true}}\n{extra}",
        reg = env.registry_dist
    )
}

/// Where most agent tests start: the Source CRD installed, a fresh namespace and repository
/// (both named after `prefix`), `files` pushed as tag `live`, and a Source `shop` following
/// that tag every 5s. Returns the namespace, the repository and the pushed digest.
pub fn live_source(
    env: &'static Env,
    prefix: &str,
    files: &[(&str, String)],
) -> (Namespace, String, String) {
    env.install_source_crd();
    let ns = env.namespace(prefix);
    let repo = env.repo(prefix);
    let dir = manifests(files);
    let digest = push(env, &env.registry_dist, &repo, "live", dir.path());
    kubectl_apply(
        env,
        source_yaml(env, ns.name(), "shop", &repo, "live", "5s", ""),
    );
    (ns, repo, digest)
}

/// `berth-agent run` flags of a replica competing for the Lease `agents` in `ns`.
pub fn leader_flags<'a>(ns: &'a str, lease_duration: &'a str, identity: &'a str) -> [&'a str; 9] {
    [
        "--leader-elect",
        "--lease-name",
        "agents",
        "--lease-namespace",
        ns,
        "--lease-duration",
        lease_duration,
        "--identity",
        identity,
    ]
}

/// `berth-agent run` as a child process with a JSON log file; SIGKILLed when dropped.
pub struct Agent {
    process: Process,
    pub name: String,
}

impl Agent {
    pub fn start(env: &Env, name: &str, ns: &str, extra: &[&str]) -> Agent {
        Agent::start_with_kubeconfig(env, name, ns, extra, None)
    }

    /// Like [`Agent::start`], reaching the API server through `kubeconfig` when given.
    pub fn start_with_kubeconfig(
        env: &Env,
        name: &str,
        ns: &str,
        extra: &[&str],
        kubeconfig: Option<&Path>,
    ) -> Agent {
        let log = std::env::temp_dir().join(format!("berth-agent-{ns}-{name}.log"));
        let mut cmd = env.berth_agent();
        cmd.args(["run", "--watch-namespace", ns, "--log-format", "json"])
            .args(extra)
            .env("RUST_LOG", "info,berth_agent=debug");
        if let Some(k) = kubeconfig {
            cmd.env("KUBECONFIG", k);
        }
        Agent {
            process: Process::spawn(&mut cmd, log),
            name: name.to_string(),
        }
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGKILL: no chance to release anything, as when a node dies.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// SIGTERM, as the kubelet sends; returns the exit code after it stopped.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        run_ok(std::process::Command::new("kill").args(["-TERM", &self.pid().to_string()]));
        match self.process.wait_exit(within) {
            Some(status) => status.code(),
            None => {
                self.process.kill9();
                panic!(
                    "agent {} did not stop within {within:?} of SIGTERM\n{}",
                    self.name,
                    self.log()
                );
            }
        }
    }

    /// How many times this agent applied `digest` (its "applied a new digest" log lines).
    pub fn applied_count(&self, digest: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("applied a new digest") && l.contains(digest))
            .count()
    }

    /// The address the agent's metrics server logged (`--metrics-addr 127.0.0.1:0`).
    pub fn metrics_addr(&self, timeout: Duration) -> String {
        let start = Instant::now();
        while start.elapsed() < timeout {
            for line in self.log().lines() {
                if line.contains("serving /metrics")
                    && let Ok(v) = serde_json::from_str::<Value>(line)
                    && let Some(a) = v["fields"]["addr"].as_str()
                {
                    return a.to_string();
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "agent {} never logged its metrics address\n{}",
            self.name,
            self.log()
        );
    }
}

pub fn logs(agents: &[&Agent]) -> String {
    agents
        .iter()
        .map(|a| format!("--- agent {}\n{}", a.name, a.log()))
        .collect()
}

/// Polls `check` every 200 ms; panics with the agents' logs after `timeout`.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    agents: &[&Agent],
    check: impl FnMut() -> bool,
) -> Duration {
    poll_until(what, timeout, Duration::from_millis(200), check, || {
        logs(agents)
    })
}

/// Who holds the Lease `name` in `ns` (None when free or absent).
pub fn lease_holder(env: &Env, ns: &str, name: &str) -> Option<String> {
    get(env, "lease", ns, name)
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
        .filter(|h| !h.is_empty())
}

/// The Secret `receiver` in `ns` that `--receiver-secret NS/receiver` names: the bearer
/// `token` and the `hmac-key` of the push receiver.
pub fn receiver_secret(env: &Env, ns: &str, token: &str, hmac: &str) {
    run_ok(env.kubectl_cmd().args([
        "create",
        "secret",
        "generic",
        "receiver",
        "-n",
        ns,
        &format!("--from-literal=token={token}"),
        &format!("--from-literal=hmac-key={hmac}"),
    ]));
}

/// A minimal HTTP/1.1 request; returns (status, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Pushes `dir` signed with `key` (password "e2e"); returns the digest.
pub fn push_signed(
    env: &Env,
    registry: &str,
    repo: &str,
    tag: &str,
    dir: &Path,
    key: &Path,
) -> String {
    let out = run_ok(
        env.berth()
            .env("COSIGN_PASSWORD", "e2e")
            .args(["push", &format!("oci://{registry}/{repo}:{tag}")])
            .arg(dir)
            .args([
                "--insecure",
                "--output",
                "json",
                "--revision",
                &format!("main@sha1:{tag}"),
            ])
            .arg("--sign-key")
            .arg(key),
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    v["digest"].as_str().unwrap().to_string()
}

/// The condition `type_` of a Source's status, as (status, reason, message).
pub fn condition(
    env: &Env,
    ns: &str,
    source: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let s = get(env, "sources.berth.dev", ns, source)?;
    s["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            let f = |k: &str| c[k].as_str().unwrap_or("").to_string();
            (f("status"), f("reason"), f("message"))
        })
}

pub fn source_status(env: &Env, ns: &str, name: &str) -> Value {
    get(env, "sources.berth.dev", ns, name)
        .map(|s| s["status"].clone())
        .unwrap_or(Value::Null)
}

/// Reasons of the Events recorded about objects in `ns`.
pub fn event_reasons(env: &Env, ns: &str) -> Vec<(String, String)> {
    let out = run_ok(
        env.kubectl_cmd()
            .args(["get", "events", "-n", ns, "-o", "json"]),
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    v["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|e| {
                    (
                        e["reason"].as_str().unwrap_or("").to_string(),
                        e["message"]
                            .as_str()
                            .or(e["note"].as_str())
                            .unwrap_or("")
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn deployment(name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n        - name: app\n          image: {image}\n"
    )
}

pub fn deployment_image(env: &Env, ns: &str, name: &str) -> Option<String> {
    get(env, "deployment", ns, name).and_then(|d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .map(String::from)
    })
}
