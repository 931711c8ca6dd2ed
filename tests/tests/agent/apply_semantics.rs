//! What real install manifests need from the apply, against the real API server: Jobs that run
//! once (TTL-deleted Jobs are not run again), changes of immutable fields (refused readably,
//! re-created when asked), per-object apply policies (`berth.dev/apply`), objects that vanish
//! during the health wait, prune that meets finalizers, and namespaces being terminated.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_e2e::{APPLYSET_PART_OF, Env, Output, env, manifests, run, run_fail, run_ok};
use serde_json::Value;

use crate::common::{Agent, configmap, get, kubectl_apply, live_source, wait_until};

/// `berth-agent apply --dir DIR` into `ns`, ApplySet Secret `set`.
fn apply(env: &Env, dir: &Path, ns: &str, extra: &[&str]) -> Command {
    let mut cmd = env.berth_agent();
    cmd.args(["apply", "--dir"]).arg(dir).args([
        "--namespace",
        ns,
        "--name",
        "set",
        "--log-format",
        "text",
        "--timeout",
        "90s",
    ]);
    cmd.args(extra);
    cmd
}

fn both(out: &Output) -> String {
    format!("{}\n{}", out.stdout, out.stderr)
}

fn uid(v: &Value) -> String {
    v["metadata"]["uid"].as_str().unwrap().to_string()
}

/// A Job whose Pod never leaves Pending (no node matches it), so the Job stays active.
fn pending_job(name: &str, image: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      nodeSelector: {{berth.dev/no-such-node: \"true\"}}\n      containers:\n        - name: m\n          image: {image}\n"
    )
}

/// A Job kwok runs to completion at once; `ttl` sets `ttlSecondsAfterFinished`.
fn job(name: &str, image: &str, ttl: Option<u32>) -> String {
    let ttl = ttl
        .map(|t| format!("  ttlSecondsAfterFinished: {t}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n{ttl}  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: m\n          image: {image}\n"
    )
}

fn deployment(name: &str, app: &str, annotations: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n{annotations}spec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {app}}}\n  template:\n    metadata:\n      labels: {{app: {app}}}\n    spec:\n      containers:\n        - name: app\n          image: registry.example/app:1\n"
    )
}

fn configmap_with(name: &str, value: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{annotations}data:\n  value: \"{value}\"\n"
    )
}

/// The annotations of the ApplySet parent Secret `set` in `ns`.
fn parent_annotations(env: &Env, ns: &str) -> Value {
    get(env, "secret", ns, "set").expect("the parent exists")["metadata"]["annotations"].clone()
}

#[test]
fn a_job_with_a_zero_ttl_runs_once_and_the_source_stays_ready_over_three_intervals() {
    let env = env();
    let (ns, _repo, digest) = live_source(
        env,
        "ttl-job",
        &[
            (
                "job.yaml",
                job("migrate", "registry.example/migrate:1", Some(0)),
            ),
            ("cm.yaml", configmap("settings", "1")),
        ],
    );
    let agent = Agent::start(env, "ttl", ns.name(), &[]);
    let ready = || {
        let s = get(env, "sources.berth.dev", ns.name(), "shop");
        s.is_some_and(|s| {
            s["status"]["lastAppliedDigest"] == digest.as_str()
                && s["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
    };
    wait_until(
        "the Source is Ready with the Job's digest",
        Duration::from_secs(60),
        &[&agent],
        ready,
    );
    // The TTL controller removes the finished Job.
    wait_until(
        "the TTL controller deleted the Job",
        Duration::from_secs(30),
        &[&agent],
        || get(env, "job", ns.name(), "migrate").is_none(),
    );
    let source = get(env, "sources.berth.dev", ns.name(), "shop").unwrap();
    let record = source["metadata"]["annotations"]["berth.dev/finished-jobs"]
        .as_str()
        .unwrap_or_else(|| panic!("no finished-jobs record on the parent: {source}"));
    assert!(
        record.contains(&format!("{}/migrate", ns.name())),
        "{record}"
    );

    // Three intervals of 5 s: drift checks of the same digest find the Job gone and leave it.
    let logged_before = agent.log();
    std::thread::sleep(Duration::from_secs(16));
    assert!(
        ready(),
        "the Source left Ready: {}",
        source_of(env, ns.name())
    );
    let log = agent.log();
    let applied_job = log
        .lines()
        .filter(|l| l.contains("\"applied\"") && l.contains("Job.batch") && l.contains("migrate"))
        .count();
    assert_eq!(applied_job, 1, "the Job was applied more than once:\n{log}");
    assert!(
        log.len() > logged_before.len() && log.contains("completed with this content"),
        "the drift checks did not run or did not say why the Job is left alone:\n{log}"
    );
    assert!(
        get(env, "job", ns.name(), "migrate").is_none(),
        "the Job was re-created"
    );
    let (_, _, message) =
        crate::common::condition(env, ns.name(), "shop", "Ready").expect("Ready condition");
    assert!(
        message.contains("not applied") && message.contains("migrate"),
        "Ready does not say the Job is left alone: {message}"
    );
}

fn source_of(env: &Env, ns: &str) -> String {
    get(env, "sources.berth.dev", ns, "shop")
        .map(|s| s["status"].to_string())
        .unwrap_or_default()
}

#[test]
fn immutable_changes_are_refused_readably_and_applied_by_recreation_when_asked() {
    let env = env();
    let ns = env.namespace("immutable");
    let v1 = manifests(&[
        (
            "job.yaml",
            pending_job("running", "registry.example/task:1"),
        ),
        ("web.yaml", deployment("web", "web", "")),
    ]);
    run_ok(&mut apply(env, v1.path(), ns.name(), &[]));
    let job_before = get(env, "job", ns.name(), "running").unwrap();
    let web_before = get(env, "deployment", ns.name(), "web").unwrap();

    // A release that changes the running Job's image and the Deployment's selector.
    let v2 = manifests(&[
        (
            "job.yaml",
            pending_job("running", "registry.example/task:2"),
        ),
        ("web.yaml", deployment("web", "web2", "")),
    ]);
    let out = run_fail(&mut apply(env, v2.path(), ns.name(), &[]));
    let text = both(&out);
    assert!(
        text.contains("rejected by the API server's dry-run, nothing was applied"),
        "{text}"
    );
    assert!(
        text.contains(
            "immutable field changed: spec.selector cannot change: spec.selector.matchLabels.app: \"web\" -> \"web2\""
        ),
        "{text}"
    );
    assert!(
        text.contains("spec.template.spec.containers[0].image: \"registry.example/task:1\" -> \"registry.example/task:2\""),
        "{text}"
    );
    assert!(
        text.contains("berth.dev/apply: Recreate") && text.contains("--recreate"),
        "{text}"
    );
    assert!(
        !text.contains("PodTemplateSpec{") && !text.contains("LabelSelector{"),
        "the API server's value dump reached the user: {text}"
    );
    assert_eq!(
        get(env, "job", ns.name(), "running").unwrap()["metadata"]["uid"],
        job_before["metadata"]["uid"]
    );
    assert_eq!(
        get(env, "deployment", ns.name(), "web").unwrap()["spec"]["selector"],
        web_before["spec"]["selector"],
        "nothing was applied"
    );

    // diff with --recreate says what would happen, and writes nothing.
    let diff = run(&mut diff_cmd(env, v2.path(), ns.name(), &["--recreate"]));
    assert_eq!(diff.code, Some(1), "differences: {}", both(&diff));
    assert!(
        diff.stdout.contains(&format!(
            "! Deployment.apps {}/web (delete and re-create",
            ns.name()
        )) && diff
            .stdout
            .contains("spec.selector.matchLabels.app: \"web\" -> \"web2\""),
        "{}",
        both(&diff)
    );
    assert!(
        diff.stdout
            .contains(&format!("! Job.batch {}/running", ns.name())),
        "{}",
        both(&diff)
    );

    // --recreate: both are deleted and created again with the new content.
    let out = run_ok(&mut apply(env, v2.path(), ns.name(), &["--recreate"]));
    assert!(
        out.contains(&format!("re-created Job.batch {}/running", ns.name())),
        "{out}"
    );
    assert!(
        out.contains(&format!("re-created Deployment.apps {}/web", ns.name())),
        "{out}"
    );
    let job_after = get(env, "job", ns.name(), "running").unwrap();
    assert_ne!(uid(&job_after), uid(&job_before));
    assert_eq!(
        job_after["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/task:2"
    );
    let web_after = get(env, "deployment", ns.name(), "web").unwrap();
    assert_eq!(web_after["spec"]["selector"]["matchLabels"]["app"], "web2");
    assert!(
        web_after["metadata"]["labels"][APPLYSET_PART_OF].is_string(),
        "still a member"
    );

    // One object opts in by annotation, without the switch.
    let v3 = manifests(&[
        (
            "job.yaml",
            pending_job("running", "registry.example/task:2"),
        ),
        (
            "web.yaml",
            deployment(
                "web",
                "web3",
                "  annotations: {berth.dev/apply: Recreate}\n",
            ),
        ),
    ]);
    let out = run_ok(&mut apply(env, v3.path(), ns.name(), &[]));
    assert!(
        out.contains(&format!("re-created Deployment.apps {}/web", ns.name())),
        "{out}"
    );
    assert_eq!(
        get(env, "deployment", ns.name(), "web").unwrap()["spec"]["selector"]["matchLabels"]["app"],
        "web3"
    );
    assert_eq!(
        uid(&get(env, "job", ns.name(), "running").unwrap()),
        uid(&job_after),
        "the Job is unchanged"
    );
}

fn diff_cmd(env: &Env, dir: &Path, ns: &str, extra: &[&str]) -> Command {
    let mut cmd = env.berth_agent();
    cmd.args(["diff", "--dir"]).arg(dir).args([
        "--namespace",
        ns,
        "--name",
        "set",
        "--log-format",
        "text",
    ]);
    cmd.args(extra);
    cmd
}

#[test]
fn a_finished_job_whose_manifest_changed_runs_again_without_any_switch() {
    let env = env();
    let ns = env.namespace("job-rerun");
    let v1 = manifests(&[(
        "job.yaml",
        job("migrate", "registry.example/migrate:1", None),
    )]);
    run_ok(&mut apply(env, v1.path(), ns.name(), &["--wait"]));
    let first = get(env, "job", ns.name(), "migrate").unwrap();
    assert!(first["status"]["succeeded"].as_i64() == Some(1), "{first}");

    // Same content again: the completed Job is left as it is.
    let out = run_ok(&mut apply(env, v1.path(), ns.name(), &["--wait"]));
    assert!(!out.contains("applied Job"), "{out}");
    assert_eq!(
        uid(&get(env, "job", ns.name(), "migrate").unwrap()),
        uid(&first)
    );

    // The next release changes the image: the finished Job is re-created and runs again.
    let v2 = manifests(&[(
        "job.yaml",
        job("migrate", "registry.example/migrate:2", None),
    )]);
    let out = run_ok(&mut apply(env, v2.path(), ns.name(), &["--wait"]));
    assert!(
        out.contains(&format!("re-created Job.batch {}/migrate", ns.name())),
        "{out}"
    );
    let second = get(env, "job", ns.name(), "migrate").unwrap();
    assert_ne!(uid(&second), uid(&first));
    assert_eq!(second["status"]["succeeded"].as_i64(), Some(1), "{second}");
    let record = parent_annotations(env, ns.name())["berth.dev/finished-jobs"].clone();
    assert_eq!(
        record.as_str().map(|r| r.contains(
            second["metadata"]["annotations"]["berth.dev/job-content"]
                .as_str()
                .unwrap()
        )),
        Some(true),
        "the record holds the content that ran last: {record}"
    );
}

#[test]
fn if_not_present_objects_are_created_once_and_ignored_objects_never() {
    let env = env();
    let ns = env.namespace("policies");
    let once = "  annotations: {berth.dev/apply: IfNotPresent}\n";
    let ignore = "  annotations: {berth.dev/apply: Ignore}\n";
    // Someone else's ConfigMap of a name the artifact also ships IfNotPresent.
    kubectl_apply(
        env,
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: theirs\n  namespace: {}\ndata:\n  value: \"mine\"\n",
            ns.name()
        ),
    );
    let v1 = manifests(&[
        ("once.yaml", configmap_with("once", "1", once)),
        ("theirs.yaml", configmap_with("theirs", "1", once)),
        ("ignored.yaml", configmap_with("ignored", "1", ignore)),
        ("plain.yaml", configmap("plain", "1")),
    ]);
    let out = run_ok(&mut apply(env, v1.path(), ns.name(), &["--prune"]));
    assert!(
        out.contains(&format!("applied ConfigMap {}/once", ns.name())),
        "{out}"
    );
    assert!(
        out.contains(&format!("skipped ConfigMap {}/ignored: ignored", ns.name())),
        "{out}"
    );
    assert!(
        out.contains(&format!("skipped ConfigMap {}/theirs: exists", ns.name())),
        "{out}"
    );
    assert!(
        get(env, "configmap", ns.name(), "ignored").is_none(),
        "an ignored object was created"
    );
    let theirs = get(env, "configmap", ns.name(), "theirs").unwrap();
    assert_eq!(theirs["data"]["value"], "mine");
    assert!(
        theirs["metadata"]["labels"][APPLYSET_PART_OF].is_null(),
        "adopted: {theirs}"
    );

    // Edited by hand, then a new release: IfNotPresent keeps the edit, the plain one is set back.
    for name in ["once", "plain"] {
        run_ok(env.kubectl_cmd().args([
            "-n",
            ns.name(),
            "patch",
            "configmap",
            name,
            "--type=merge",
            "-p",
            r#"{"data":{"value":"edited"}}"#,
        ]));
    }
    let v2 = manifests(&[
        ("once.yaml", configmap_with("once", "2", once)),
        ("theirs.yaml", configmap_with("theirs", "2", once)),
        ("ignored.yaml", configmap_with("ignored", "2", ignore)),
        ("plain.yaml", configmap("plain", "2")),
    ]);
    let out = run_ok(&mut apply(env, v2.path(), ns.name(), &["--prune"]));
    assert!(
        out.contains(&format!("skipped ConfigMap {}/once: exists", ns.name())),
        "{out}"
    );
    assert_eq!(
        get(env, "configmap", ns.name(), "once").unwrap()["data"]["value"],
        "edited"
    );
    assert_eq!(
        get(env, "configmap", ns.name(), "plain").unwrap()["data"]["value"],
        "2"
    );
    assert_eq!(
        get(env, "configmap", ns.name(), "theirs").unwrap()["data"]["value"],
        "mine"
    );

    // Still a member: pruned when it leaves the artifact; someone else's is never touched.
    let v3 = manifests(&[("plain.yaml", configmap("plain", "2"))]);
    let out = run_ok(&mut apply(env, v3.path(), ns.name(), &["--prune"]));
    assert!(
        out.contains(&format!("pruned ConfigMap {}/once", ns.name())),
        "{out}"
    );
    assert!(get(env, "configmap", ns.name(), "theirs").is_some());

    let bad = manifests(&[(
        "odd.yaml",
        configmap_with("odd", "1", "  annotations: {berth.dev/apply: Sometimes}\n"),
    )]);
    let out = run_fail(&mut apply(env, bad.path(), ns.name(), &[]));
    assert!(
        both(&out).contains("odd.yaml:1: annotation berth.dev/apply: \"Sometimes\" is not one of Apply, IfNotPresent, Ignore, Recreate"),
        "{}",
        both(&out)
    );
}

#[test]
fn prune_does_not_wait_for_finalizers_and_the_set_covers_the_object_until_it_is_gone() {
    let env = env();
    let ns = env.namespace("finalizers");
    let held = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\n".to_string();
    let v1 = manifests(&[("held.yaml", held), ("cm.yaml", configmap("stays", "1"))]);
    run_ok(&mut apply(env, v1.path(), ns.name(), &["--prune"]));
    let v2 = manifests(&[("cm.yaml", configmap("stays", "1"))]);
    let started = std::time::Instant::now();
    let out = run_ok(&mut apply(env, v2.path(), ns.name(), &["--prune"]));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "prune waited on the finalizer"
    );
    assert!(
        out.contains(&format!(
            "pruned ServiceAccount {}/held (still terminating: waiting on finalizers example.com/hold)",
            ns.name()
        )),
        "{out}"
    );
    let gks =
        parent_annotations(env, ns.name())["applyset.kubernetes.io/contains-group-kinds"].clone();
    assert!(
        gks.as_str()
            .is_some_and(|g| g.split(',').any(|k| k == "ServiceAccount")),
        "the set stopped covering an object that still exists: {gks}"
    );
    // Its controller lets go: the next apply finds it gone and narrows the set.
    run_ok(env.kubectl_cmd().args([
        "-n",
        ns.name(),
        "patch",
        "serviceaccount",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]));
    wait_until(
        "the ServiceAccount is gone",
        Duration::from_secs(20),
        &[],
        || get(env, "serviceaccount", ns.name(), "held").is_none(),
    );
    run_ok(&mut apply(env, v2.path(), ns.name(), &["--prune"]));
    let gks =
        parent_annotations(env, ns.name())["applyset.kubernetes.io/contains-group-kinds"].clone();
    assert_eq!(gks, "ConfigMap");
}

#[test]
fn objects_for_a_namespace_being_terminated_are_refused_as_such_then_applied_once_it_is_gone() {
    let env = env();
    let home = env.namespace("terminating-home");
    let doomed = berth_e2e::unique_name("terminating", 63);
    run_ok(env.kubectl_cmd().args(["create", "namespace", &doomed]));
    // A finalizer on an object inside keeps the namespace Terminating.
    kubectl_apply(
        env,
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: anchor\n  namespace: {doomed}\n  finalizers: [example.com/hold]\n"
        ),
    );
    run_ok(
        env.kubectl_cmd()
            .args(["delete", "namespace", &doomed, "--wait=false"]),
    );
    let files = manifests(&[
        (
            "ns.yaml",
            format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {doomed}\n"),
        ),
        (
            "cm.yaml",
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: {doomed}\ndata:\n  value: \"1\"\n"
            ),
        ),
    ]);
    let out = run_fail(&mut apply(env, files.path(), home.name(), &[]));
    let text = both(&out);
    assert!(text.contains("is being terminated"), "{text}");
    assert!(
        text.contains("the namespace is being deleted and takes no new objects"),
        "{text}"
    );
    assert!(
        !text.contains("RBAC"),
        "read as a permission problem: {text}"
    );

    run_ok(env.kubectl_cmd().args([
        "-n",
        &doomed,
        "patch",
        "configmap",
        "anchor",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]));
    wait_until(
        "the namespace is gone",
        Duration::from_secs(60),
        &[],
        || env.object("namespace", None, &doomed).is_none(),
    );
    run_ok(&mut apply(env, files.path(), home.name(), &["--prune"]));
    assert_eq!(
        get(env, "configmap", &doomed, "app").unwrap()["data"]["value"],
        "1"
    );
    run_ok(
        env.kubectl_cmd()
            .args(["delete", "namespace", &doomed, "--wait=false"]),
    );
}

#[test]
fn an_object_deleted_during_the_health_wait_is_reported_as_deleted() {
    let env = env();
    let ns = env.namespace("vanish");
    let files = manifests(&[(
        "web.yaml",
        deployment("web", "web", "").replace("registry.example/app:1", &env.never_ready_image),
    )]);
    let mut cmd = apply(env, files.path(), ns.name(), &["--wait"]);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        "the Deployment exists",
        Duration::from_secs(30),
        &[],
        || get(env, "deployment", ns.name(), "web").is_some(),
    );
    std::thread::sleep(Duration::from_secs(1));
    run_ok(env.kubectl_cmd().args([
        "-n",
        ns.name(),
        "delete",
        "deployment",
        "web",
        "--wait=false",
    ]));
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "Deployment.apps {}/web was deleted while berth waited for it to become healthy",
            ns.name()
        )),
        "{text}"
    );
    assert!(
        !text.contains("reading Deployment"),
        "reported as a read error: {text}"
    );
}

/// Serialises the tests that register APIServices: while an aggregated API is unavailable the
/// namespace controller cannot finish deleting any namespace, so each such test removes its
/// APIService again before it ends.
static AGGREGATED_APIS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn an_apiservice_whose_backend_is_not_running_does_not_stop_the_rest_of_the_set() {
    let _one_at_a_time = AGGREGATED_APIS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let env = env();
    let ns = env.namespace("apiservice");
    let group = format!("{}.berth-e2e.example.com", ns.name());
    // The Service has no Pods behind it: the aggregator finds no endpoints and marks the API
    // unavailable, so discovery of its group fails while the set is applied.
    let apiservice = format!(
        "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata:\n  name: v1beta1.{group}\nspec:\n  group: {group}\n  version: v1beta1\n  groupPriorityMinimum: 100\n  versionPriority: 100\n  insecureSkipTLSVerify: true\n  service: {{name: backend, namespace: {ns}, port: 443}}\n",
        ns = ns.name()
    );
    let service = "apiVersion: v1\nkind: Service\nmetadata:\n  name: backend\nspec:\n  clusterIP: None\n  selector: {app: not-running}\n  ports: [{port: 443}]\n".to_string();
    let v1 = manifests(&[
        ("apiservice.yaml", apiservice.clone()),
        ("service.yaml", service.clone()),
        ("a.yaml", configmap("a", "1")),
        ("b.yaml", configmap("b", "1")),
    ]);
    let first = run(&mut apply(
        env,
        v1.path(),
        ns.name(),
        &["--wait", "--prune"],
    ));
    let cleanup = || {
        let _ = run(env.kubectl_cmd().args([
            "delete",
            "apiservice",
            &format!("v1beta1.{group}"),
            "--ignore-not-found",
        ]));
    };
    if !first.status.success() {
        cleanup();
        panic!(
            "the set with an unavailable APIService did not apply: {}",
            both(&first)
        );
    }
    // The aggregated API is unavailable now; the rest of the set still applies and prunes.
    let unavailable = run(env.kubectl_cmd().args([
        "get",
        "apiservice",
        &format!("v1beta1.{group}"),
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Available\")].status}",
    ]));
    let v2 = manifests(&[
        ("apiservice.yaml", apiservice),
        ("service.yaml", service),
        ("a.yaml", configmap("a", "2")),
    ]);
    let second = run(&mut apply(
        env,
        v2.path(),
        ns.name(),
        &["--wait", "--prune"],
    ));
    // Last: the set without the APIService prunes it, which also ends the namespace block.
    let v3 = manifests(&[("a.yaml", configmap("a", "2"))]);
    let third = run(&mut apply(env, v3.path(), ns.name(), &["--prune"]));
    cleanup();
    assert_eq!(
        unavailable.stdout.trim(),
        "False",
        "the APIService was not unavailable"
    );
    assert!(second.status.success(), "{}", both(&second));
    assert!(
        second
            .stdout
            .contains(&format!("pruned ConfigMap {}/b", ns.name())),
        "{}",
        both(&second)
    );
    assert_eq!(
        get(env, "configmap", ns.name(), "a").unwrap()["data"]["value"],
        "2"
    );
    assert!(third.status.success(), "{}", both(&third));
    assert!(
        third.stdout.contains(&format!(
            "pruned APIService.apiregistration.k8s.io v1beta1.{group}"
        )),
        "{}",
        both(&third)
    );
}

#[test]
fn a_job_removed_by_its_ttl_is_not_created_again_by_apply_and_diff_says_why() {
    let env = env();
    let ns = env.namespace("ttl-oneshot");
    let v1 = manifests(&[("job.yaml", job("seed", "registry.example/seed:1", Some(0)))]);
    run_ok(&mut apply(env, v1.path(), ns.name(), &["--wait"]));
    wait_until(
        "the TTL controller deleted the Job",
        Duration::from_secs(30),
        &[],
        || get(env, "job", ns.name(), "seed").is_none(),
    );
    let out = run_ok(&mut apply(env, v1.path(), ns.name(), &["--wait"]));
    assert!(
        out.contains(&format!(
            "skipped Job.batch {}/seed: completed with this content and gone since",
            ns.name()
        )),
        "{out}"
    );
    assert!(
        get(env, "job", ns.name(), "seed").is_none(),
        "the Job ran again"
    );
    let diff = run(&mut diff_cmd(env, v1.path(), ns.name(), &[]));
    assert_eq!(diff.code, Some(0), "no differences: {}", both(&diff));
    assert!(
        diff.stdout.contains(&format!(
            "= Job.batch {}/seed (completed with this content",
            ns.name()
        )),
        "{}",
        both(&diff)
    );
    // A new manifest runs it again.
    let v2 = manifests(&[("job.yaml", job("seed", "registry.example/seed:2", Some(0)))]);
    let diff = run(&mut diff_cmd(env, v2.path(), ns.name(), &[]));
    assert_eq!(diff.code, Some(1), "{}", both(&diff));
    assert!(
        diff.stdout
            .contains(&format!("+ Job.batch {}/seed (create)", ns.name())),
        "{}",
        both(&diff)
    );
    let out = run_ok(&mut apply(env, v2.path(), ns.name(), &["--wait"]));
    assert!(
        out.contains(&format!("applied Job.batch {}/seed", ns.name())),
        "{out}"
    );
}
