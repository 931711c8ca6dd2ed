//! The real-world corpus: published install bundles of popular projects (pinned in
//! `tests/corpus/bundles`, fetched from their Go modules by `tests/corpus/fetch`). Each one is
//! pushed signed, applied by digest with `--wait`, applied again (nothing may be written), then
//! pushed without three of its objects and applied with `--prune`: exactly those three are
//! deleted and nothing else is touched. Then the set is emptied, which removes the bundle.
//!
//! Bundles hold cluster-scoped objects and fixed namespaces, so they run one after another in
//! one test, each under [`cluster_wide_bundles`] (a file lock in the environment's state
//! directory, which keeps two test processes sharing the environment apart too). Each bundle has
//! one fixed ApplySet parent, so a run that died half-way is converged by the next instead of
//! colliding with what it left, and every case empties its set at the end, also when it failed.
//!
//! No traffic leaves the machine: the bundles' webhooks and the metrics-server APIService name
//! Services whose cluster IPs `tests/env/up` routes to `unreachable` (the API server's dials fail
//! with EHOSTUNREACH on this host), and every case checks that route before applying anything.
//! The backends never answer, so:
//! - no object is applied that a bundle's own webhooks (failurePolicy Fail) must admit: MetalLB's
//!   custom resources are left out of its bundle, and no Ingress exists while ingress-nginx is
//!   installed (the test that applies one holds the same lock);
//! - while metrics-server's APIService is installed it is `Available=False`
//!   (FailedDiscoveryCheck), and the namespace controller deletes no Namespace (its discovery
//!   fails); other tests delete their namespaces without waiting, so the pause of a few seconds
//!   costs them nothing. Its APIService is one of the three objects the prune step removes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{cluster_wide_bundles, push_signed};
use berth_e2e::{Env, Output, env, poll_until, repo_root, run, run_ok};
use serde_json::Value;

/// Namespace of every corpus ApplySet parent (custom resources without a namespace land here).
const PARENT_NAMESPACE: &str = "berth-corpus";

/// Deadline of each apply and its health wait.
const APPLY_TIMEOUT: &str = "4m";

/// How long an earlier case's Namespaces and CRDs may take to disappear. The API server's CRD
/// finalizer retries with backoff while a just-created CRD's storage is still initializing
/// ("storage is (re)initializing" in its log): one of prometheus-operator's took 161 s once.
const GONE_TIMEOUT: Duration = Duration::from_secs(300);

/// One object of a bundle, as `tests/corpus/fetch` lists it.
#[derive(Debug, Clone)]
struct Listed {
    api_version: String,
    kind: String,
    /// `None` when the manifest names none (cluster-scoped, or defaulted by the apply).
    namespace: Option<String>,
    name: String,
}

impl Listed {
    /// berth's key of the object once applied (namespaced objects without a namespace are in
    /// the parent's).
    fn key(&self) -> String {
        key(
            &self.api_version,
            &self.kind,
            self.namespace.as_deref().or(namespaced_default(self)),
            &self.name,
        )
    }

    fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
    }
}

/// The key berth prints for an object (`Kind.group namespace/name`, core kinds without a
/// group, cluster-scoped ones without a namespace).
fn key(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> String {
    let gk = match api_version.rsplit_once('/') {
        Some((group, _)) => format!("{kind}.{group}"),
        None => kind.to_string(),
    };
    match namespace {
        Some(ns) => format!("{gk} {ns}/{name}"),
        None => format!("{gk} {name}"),
    }
}

/// A fetched bundle: `full/` and `reduced/` directories and the object lists beside them.
struct Bundle {
    name: String,
    dir: PathBuf,
    objects: Vec<Listed>,
    dropped: Vec<Listed>,
}

fn read_list(path: &Path) -> Vec<Listed> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 5, "{}: bad line {l:?}", path.display());
            Listed {
                api_version: f[0].to_string(),
                kind: f[1].to_string(),
                namespace: (f[2] != "-").then(|| f[2].to_string()),
                name: f[3].to_string(),
            }
        })
        .collect()
}

fn fetch(name: &str) -> Bundle {
    let out = run_ok(Command::new(repo_root().join("tests/corpus/fetch")).arg(name));
    let dir = out
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("tests/corpus/fetch printed no directory for {name}: {out}"));
    let dir = PathBuf::from(dir);
    Bundle {
        name: name.to_string(),
        objects: read_list(&dir.join("objects")),
        dropped: read_list(&dir.join("dropped")),
        dir,
    }
}

/// The route `tests/env/up` sets so the API server's dials of webhook and APIService backends
/// fail on this host. Without it, applying a bundle could send traffic off the machine.
fn assert_cluster_networks_unreachable() {
    let out = run_ok(Command::new("ip").args(["route", "show", "10.0.0.0/16"]));
    assert!(
        out.contains("unreachable"),
        "10.0.0.0/16 is not routed to unreachable (ip route: {out:?}); tests/env/up sets that \
         route: without it the bundles' webhooks and APIService would be dialled off this machine"
    );
}

/// What only a write changes: the uid (re-created?), the generation (spec changed?) and berth's
/// own managedFields entries (a field berth owns changed?). For objects without a status, whose
/// resourceVersion no controller moves, the resourceVersion too.
fn marker(v: &Value) -> String {
    let meta = &v["metadata"];
    let berth: Vec<&Value> = meta["managedFields"]
        .as_array()
        .map(|a| a.iter().filter(|m| m["manager"] == "berth").collect())
        .unwrap_or_default();
    let rv = if v.get("status").is_none() {
        meta["resourceVersion"].to_string()
    } else {
        "-".to_string()
    };
    format!(
        "uid {} generation {} rv {rv} berth {}",
        meta["uid"],
        meta["generation"],
        serde_json::to_string(&berth).unwrap()
    )
}

/// The live objects of `objects`, by berth's key: one `kubectl get` per namespace.
fn get_all(env: &Env, objects: &[Listed]) -> BTreeMap<String, Value> {
    let mut by_namespace: BTreeMap<Option<&str>, Vec<String>> = BTreeMap::new();
    for o in objects {
        let (group, version) = match o.api_version.rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => ("", o.api_version.as_str()),
        };
        let resource = if group.is_empty() {
            format!("{}/{}", o.kind, o.name)
        } else {
            format!("{}.{version}.{group}/{}", o.kind, o.name)
        };
        by_namespace
            .entry(o.namespace.as_deref().or(namespaced_default(o)))
            .or_default()
            .push(resource);
    }
    let mut live = BTreeMap::new();
    for (ns, resources) in by_namespace {
        let mut cmd = env.kubectl_cmd();
        cmd.args([
            "get",
            "--ignore-not-found",
            "--show-managed-fields",
            "-o",
            "json",
        ])
        .args(&resources);
        if let Some(ns) = ns {
            cmd.args(["-n", ns]);
        }
        let out = run_ok(&mut cmd);
        if out.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&out).expect("kubectl get prints JSON");
        let items = match v["kind"].as_str() {
            Some("List") => v["items"].as_array().cloned().unwrap_or_default(),
            _ => vec![v],
        };
        for o in items {
            let k = key(
                o["apiVersion"].as_str().unwrap_or(""),
                o["kind"].as_str().unwrap_or(""),
                o["metadata"]["namespace"].as_str(),
                o["metadata"]["name"].as_str().unwrap_or(""),
            );
            live.insert(k, o);
        }
    }
    live
}

/// Why `v` is not healthy, for the kinds whose health the corpus exercises: workloads rolled
/// out on the fake nodes, Jobs complete, CRDs established. `None` when it is.
fn not_healthy(v: &Value) -> Option<String> {
    let status = &v["status"];
    let int = |f: &str| status[f].as_i64().unwrap_or(0);
    let condition = |t: &str| {
        status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == t))
            .map(|c| c["status"].as_str().unwrap_or("").to_string())
    };
    match v["kind"].as_str().unwrap_or("") {
        "DaemonSet" if int("desiredNumberScheduled") == 0 => {
            Some("scheduled on no node".to_string())
        }
        "DaemonSet" if int("numberAvailable") < int("desiredNumberScheduled") => Some(format!(
            "{}/{} available",
            int("numberAvailable"),
            int("desiredNumberScheduled")
        )),
        "Deployment" => {
            let want = v["spec"]["replicas"].as_i64().unwrap_or(1);
            (int("availableReplicas") < want)
                .then(|| format!("{}/{want} available", int("availableReplicas")))
        }
        "Job" => (condition("Complete").as_deref() != Some("True"))
            .then(|| format!("not complete: {status}")),
        "CustomResourceDefinition" => (condition("Established").as_deref() != Some("True"))
            .then(|| "not established".to_string()),
        _ => None,
    }
}

/// The objects of the lines of `out` that start with `prefix` ("applied ", "pruned "): the key,
/// without the prefix or a note after it ("(still terminating: waiting on finalizers …)").
fn reported(out: &Output, prefix: &str) -> BTreeSet<String> {
    out.stdout
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|l| l.split_once(" (").map_or(l, |(key, _)| key).to_string())
        .collect()
}

/// Requests the agent sent, by HTTP method (kube's own trace of every request).
fn requests(out: &Output) -> BTreeMap<String, usize> {
    let mut by_method = BTreeMap::new();
    for line in out.stderr.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["fields"]["message"] == "requesting" {
            let method = v["span"]["http.method"].as_str().unwrap_or("?").to_string();
            *by_method.entry(method).or_insert(0) += 1;
        }
    }
    by_method
}

/// One corpus bundle's ApplySet: fixed parent, applies by digest. Emptied when dropped, also
/// when the test failed half-way, so no bundle's webhooks outlive its test.
struct Installation {
    env: &'static Env,
    bundle: Bundle,
    set: String,
    /// The cosign key pair every push is signed with (password "e2e") and apply verifies.
    private_key: PathBuf,
    public_key: PathBuf,
    _keys: tempfile::TempDir,
    repo: String,
    /// Held for the whole case: one bundle at a time in every process using this environment.
    _lock: File,
}

impl Installation {
    fn new(env: &'static Env, name: &str) -> Installation {
        assert_cluster_networks_unreachable();
        let lock = cluster_wide_bundles(env);
        let bundle = fetch(name);
        let out = run(env
            .kubectl_cmd()
            .args(["create", "namespace", PARENT_NAMESPACE]));
        assert!(
            out.status.success() || out.stderr.contains("AlreadyExists"),
            "create namespace {PARENT_NAMESPACE}: {}",
            out.stderr
        );
        let keys = tempfile::tempdir().unwrap();
        let (private_key, public_key) = env.keypair(keys.path(), "corpus");
        let installation = Installation {
            env,
            set: format!("corpus-{name}"),
            repo: env.repo(&format!("corpus-{name}")),
            bundle,
            private_key,
            public_key,
            _keys: keys,
            _lock: lock,
        };
        // What an earlier run left behind goes first, so the first apply below is a real one:
        // its set is emptied, and its Namespaces and CRDs (deleted at its end, finalized by the
        // API server in the background) must be gone.
        if env
            .object("secret", Some(PARENT_NAMESPACE), &installation.set)
            .is_some()
        {
            installation.empty();
        }
        for o in &installation.bundle.objects {
            if matches!(o.kind.as_str(), "Namespace" | "CustomResourceDefinition") {
                installation.wait_gone(o);
            }
        }
        installation
    }

    fn push(&self, tag: &str, dir: &Path) -> String {
        push_signed(
            self.env,
            &self.env.registry_dist,
            &self.repo,
            tag,
            dir,
            &self.private_key,
        )
    }

    /// `berth-agent apply oci://…@DIGEST --prune --wait`, verified with the bundle's key, with
    /// kube's trace of every request in the JSON log.
    fn apply(&self, digest: &str) -> Output {
        let mut cmd = self.env.berth_agent();
        cmd.args([
            "apply",
            &format!("oci://{}/{}@{digest}", self.env.registry_dist, self.repo),
            "--insecure",
            "--prune",
            "--wait",
            "--timeout",
            APPLY_TIMEOUT,
            "-n",
            PARENT_NAMESPACE,
            "--name",
            &self.set,
            "--log-format",
            "json",
            "--key",
        ])
        .arg(&self.public_key)
        .env("RUST_LOG", "info,kube_client::client::builder=debug");
        run(&mut cmd)
    }

    /// Prunes the whole set (an empty directory with --allow-empty): every object is deleted,
    /// or terminating on its finalizers (waited for by the next case of the same bundle).
    fn empty(&self) {
        let empty = tempfile::tempdir().unwrap();
        let mut cmd = self.env.berth_agent();
        cmd.args(["apply", "--dir"]).arg(empty.path()).args([
            "--prune",
            "--allow-empty",
            "-n",
            PARENT_NAMESPACE,
            "--name",
            &self.set,
        ]);
        let out = run(&mut cmd);
        assert_eq!(
            out.code,
            Some(0),
            "emptying the set {} failed:\n{}\n{}",
            self.set,
            out.stdout,
            out.stderr
        );
    }

    fn live(&self, o: &Listed) -> Option<Value> {
        let kind = match o.group() {
            "" => o.kind.clone(),
            g => format!("{}.{g}", o.kind),
        };
        let ns = o.namespace.as_deref().or(namespaced_default(o));
        self.env.object(&kind, ns, &o.name)
    }

    fn wait_gone(&self, o: &Listed) {
        poll_until(
            &format!("{} {} to be deleted", o.kind, o.name),
            GONE_TIMEOUT,
            Duration::from_millis(500),
            || self.live(o).is_none(),
            || {
                format!(
                    "still there: {:?}",
                    self.live(o).map(|v| v["metadata"].clone())
                )
            },
        );
    }
}

/// Where a namespaced object without a namespace went: the parent's namespace (the agent's
/// fallback). Cluster-scoped kinds of the corpus are looked up without one.
fn namespaced_default(o: &Listed) -> Option<&'static str> {
    const CLUSTER_SCOPED: &[&str] = &[
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "APIService",
        "IngressClass",
        "GatewayClass",
        "PriorityClass",
    ];
    (!CLUSTER_SCOPED.contains(&o.kind.as_str())).then_some(PARENT_NAMESPACE)
}

impl Drop for Installation {
    fn drop(&mut self) {
        // Runs after a failed assertion too: no bundle outlives its case.
        if !std::thread::panicking() {
            self.empty();
        } else {
            let empty = tempfile::tempdir().unwrap();
            let _ = self
                .env
                .berth_agent()
                .args(["apply", "--dir"])
                .arg(empty.path())
                .args(["--prune", "--allow-empty", "-n", PARENT_NAMESPACE, "--name"])
                .arg(&self.set)
                .output();
        }
    }
}

fn summary(out: &Output) -> String {
    out.stderr
        .lines()
        .filter(|l| l.contains(" object(s), "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn both(out: &Output) -> String {
    format!("--- stdout\n{}\n--- stderr\n{}", out.stdout, out.stderr)
}

/// The whole story for one bundle: install, no-op, prune of three, removal.
fn install_reapply_prune(name: &str) {
    let env = env();
    let inst = Installation::new(env, name);
    let b = &inst.bundle;
    let full = b.dir.join("full");
    let reduced = b.dir.join("reduced");
    assert_eq!(b.dropped.len(), 3, "{}: three objects are dropped", b.name);

    // First apply: every object is created and healthy.
    let d1 = inst.push("full", &full);
    let out = inst.apply(&d1);
    assert_eq!(out.code, Some(0), "{}: first apply\n{}", b.name, both(&out));
    let live = get_all(env, &b.objects);
    assert_eq!(
        live.len(),
        b.objects.len(),
        "{}: kubectl finds {} of the bundle's {} objects: {:?}",
        b.name,
        live.len(),
        b.objects.len(),
        live.keys().collect::<Vec<_>>()
    );
    let all: BTreeSet<String> = live.keys().cloned().collect();
    assert_eq!(
        all,
        b.objects.iter().map(Listed::key).collect(),
        "{}: the objects found are the bundle's",
        b.name
    );
    assert_eq!(
        reported(&out, "applied "),
        all,
        "{}: the first apply reports every object applied",
        b.name
    );
    eprintln!(
        "{}: first apply: {} (requests {:?})",
        b.name,
        summary(&out),
        requests(&out)
    );
    // --wait returned only when everything was healthy: read back what that means per kind.
    for (k, v) in &live {
        if let Some(why) = not_healthy(v) {
            panic!("{}: {k} is not healthy after apply --wait: {why}", b.name);
        }
    }

    // The same digest again: nothing is written, nothing reported.
    let before: BTreeMap<String, String> =
        live.iter().map(|(k, v)| (k.clone(), marker(v))).collect();
    let parent_rv = env
        .object("secret", Some(PARENT_NAMESPACE), &inst.set)
        .map(|p| p["metadata"]["resourceVersion"].clone());
    let out = inst.apply(&d1);
    assert_eq!(out.code, Some(0), "{}: re-apply\n{}", b.name, both(&out));
    let requests_noop = requests(&out);
    eprintln!(
        "{}: no-op re-apply: {} (requests {requests_noop:?})",
        b.name,
        summary(&out)
    );
    assert!(
        reported(&out, "applied ").is_empty(),
        "{}: a no-op re-apply reported changes\n{}",
        b.name,
        both(&out)
    );
    let after: BTreeMap<String, String> = get_all(env, &b.objects)
        .iter()
        .map(|(k, v)| (k.clone(), marker(v)))
        .collect();
    for (k, m) in &before {
        assert_eq!(
            after.get(k),
            Some(m),
            "{}: {k} was written by a no-op re-apply",
            b.name
        );
    }
    assert_eq!(
        env.object("secret", Some(PARENT_NAMESPACE), &inst.set)
            .map(|p| p["metadata"]["resourceVersion"].clone()),
        parent_rv,
        "{}: the ApplySet parent was written by a no-op re-apply",
        b.name
    );

    // Three objects leave the bundle: exactly those are pruned, nothing else is touched.
    let d2 = inst.push("reduced", &reduced);
    let out = inst.apply(&d2);
    assert_eq!(out.code, Some(0), "{}: prune\n{}", b.name, both(&out));
    eprintln!("{}: prune of three: {}", b.name, summary(&out));
    let dropped: BTreeSet<String> = b.dropped.iter().map(Listed::key).collect();
    assert_eq!(
        reported(&out, "pruned "),
        dropped,
        "{}: exactly the three dropped objects are pruned",
        b.name
    );
    assert!(
        reported(&out, "applied ").is_empty(),
        "{}: the objects that stayed were applied again\n{}",
        b.name,
        both(&out)
    );
    // Deleted: gone, or terminating on a finalizer (a CRD's custom-resource cleanup).
    let mut kept = get_all(env, &b.objects);
    for k in &dropped {
        if let Some(v) = kept.remove(k) {
            assert!(
                v["metadata"]["deletionTimestamp"].is_string(),
                "{}: {k} was reported pruned but is neither gone nor being deleted",
                b.name
            );
        }
    }
    let expected: BTreeSet<String> = all.difference(&dropped).cloned().collect();
    assert_eq!(
        kept.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "{}: everything but the three dropped objects is still there",
        b.name
    );
    for (k, v) in &kept {
        assert_eq!(
            marker(v),
            after[k],
            "{}: {k} stayed in the bundle but was written or re-created by the prune",
            b.name
        );
    }
}

/// Every bundle of the corpus, in one test: they must run one after another anyway, and one
/// test holding the lock costs the suite one thread where six waiting ones would cost six.
/// `BERTH_CORPUS=metallb,flannel` runs only those. A bundle that fails does not stop the others;
/// the test fails at the end, naming each failed bundle (its own panic message is above).
#[test]
fn published_install_bundles_apply_reapply_without_writes_and_prune_exactly_what_left() {
    let only = std::env::var("BERTH_CORPUS").ok();
    let names: Vec<String> = run_ok(&mut Command::new(repo_root().join("tests/corpus/fetch")))
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|n| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|x| x.trim() == n))
        })
        .collect();
    assert!(
        !names.is_empty(),
        "no corpus bundle selected (BERTH_CORPUS={only:?})"
    );
    let mut failed = Vec::new();
    for name in &names {
        eprintln!("corpus: {name}");
        if std::panic::catch_unwind(|| install_reapply_prune(name)).is_err() {
            failed.push(name.clone());
        }
    }
    assert!(
        failed.is_empty(),
        "corpus bundles failed: {failed:?} (of {names:?}); each one's message is above"
    );
}
