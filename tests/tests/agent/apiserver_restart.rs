//! The API server dies in the middle of `berth-agent apply`: a private second kube-apiserver
//! (the shared one's binary and flags, its own port, the shared etcd, so it serves the same
//! cluster) is SIGKILLed while the agent writes a large set through it, then restarted on the
//! same port. The interrupted run must fail promptly and say why, the ApplySet inventory must
//! still cover every object the run created, and later runs must converge and prune.
//! It loads the machine, so it never runs beside a test that measures how fast the agent reacts
//! (`common::loading_the_machine`).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_e2e::{Env, PrivateApiServer, env, run, run_ok, wait_for};
use serde_json::Value;

/// Enough ConfigMaps that applying them (after the dry-run of all of them) takes seconds on
/// this machine, so the API server can be killed while the writes are under way.
const OBJECTS: usize = 1500;
/// The interrupted apply runs with a long --timeout; it must give up on a dead API server
/// well before that deadline (failing fast, not hanging until the timeout).
const APPLY_TIMEOUT_FLAG: &str = "3m";
const GIVE_UP_WITHIN: Duration = Duration::from_secs(60);

/// `berth-agent apply --dir DIR` through the private API server.
fn agent_apply(
    api: &PrivateApiServer,
    dir: &Path,
    ns: &str,
    name: &str,
    extra: &[&str],
) -> Command {
    let mut cmd = env().berth_agent();
    cmd.env("KUBECONFIG", &api.kubeconfig)
        .args(["apply", "--dir"])
        .arg(dir)
        .args([
            "--namespace",
            ns,
            "--name",
            name,
            "--log-format",
            "text",
            "--timeout",
            APPLY_TIMEOUT_FLAG,
        ])
        .args(extra);
    cmd
}

/// ConfigMap `cm-NNNN` in `namespaces[i % len]`, one file each, for every `i` in `indices`.
fn configmaps(namespaces: &[&str], indices: impl Iterator<Item = usize>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for i in indices {
        let ns = namespaces[i % namespaces.len()];
        let body = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i:04}\n  namespace: {ns}\ndata:\n  index: \"{i}\"\n"
        );
        std::fs::write(dir.path().join(format!("cm-{i:04}.yaml")), body).unwrap();
    }
    dir
}

fn expected(
    namespaces: &[&str],
    indices: impl Iterator<Item = usize>,
) -> BTreeSet<(String, String)> {
    indices
        .map(|i| {
            (
                namespaces[i % namespaces.len()].to_string(),
                format!("cm-{i:04}"),
            )
        })
        .collect()
}

/// `(namespace, name)` of every ConfigMap carrying the set's `part-of` label, asked of the
/// shared API server (same etcd, so it sees what the private one wrote).
fn members(env: &Env, id: &str) -> BTreeSet<(String, String)> {
    let out = run_ok(env.kubectl_cmd().args([
        "get",
        "configmaps",
        "--all-namespaces",
        "-l",
        &format!("applyset.kubernetes.io/part-of={id}"),
        "-o",
        "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{\"\\n\"}{end}",
    ]));
    out.lines()
        .filter_map(|l| l.split_once('/'))
        .map(|(ns, name)| (ns.to_string(), name.to_string()))
        .collect()
}

/// The parent Secret's ApplySet id and what its annotations record: group-kinds and every
/// namespace (the parent's own plus `additional-namespaces`).
fn inventory(env: &Env, ns: &str, name: &str) -> (String, BTreeSet<String>, BTreeSet<String>) {
    let out = run_ok(
        env.kubectl_cmd()
            .args(["get", "secret", name, "-n", ns, "-o", "json"]),
    );
    let parent: Value = serde_json::from_str(&out).unwrap();
    let id = parent["metadata"]["labels"]["applyset.kubernetes.io/id"]
        .as_str()
        .expect("parent has the id label");
    let ann = &parent["metadata"]["annotations"];
    let list = |key: &str| -> BTreeSet<String> {
        ann[key]
            .as_str()
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut namespaces = list("applyset.kubernetes.io/additional-namespaces");
    namespaces.insert(ns.to_string());
    (
        id.to_string(),
        list("applyset.kubernetes.io/contains-group-kinds"),
        namespaces,
    )
}

/// Every labelled member is covered by the parent's recorded group-kinds and namespaces, so
/// a later prune finds it.
fn assert_inventory_covers(env: &Env, ns: &str, name: &str, live: &BTreeSet<(String, String)>) {
    let (_, group_kinds, namespaces) = inventory(env, ns, name);
    assert!(
        group_kinds.contains("ConfigMap"),
        "the inventory forgot the ConfigMap kind: {group_kinds:?}"
    );
    let uncovered: Vec<&(String, String)> = live
        .iter()
        .filter(|(n, _)| !namespaces.contains(n))
        .collect();
    assert!(
        uncovered.is_empty(),
        "members outside the recorded namespaces {namespaces:?}: {uncovered:?}"
    );
}

#[test]
fn api_server_killed_mid_apply_fails_clearly_keeps_the_inventory_then_converges_and_prunes() {
    let _loading = crate::common::loading_the_machine();
    let env = env();
    let home = env.namespace("apirestart");
    let second = env.namespace("apirestart-b");
    let third = env.namespace("apirestart-c");
    let namespaces = [home.name(), second.name(), third.name()];
    let all = configmaps(&namespaces, 0..OBJECTS);
    let mut api = PrivateApiServer::start(env, &[]);

    // The interrupted run: output to files, so nothing blocks on a full pipe.
    let out_dir = tempfile::tempdir().unwrap();
    let (stdout_path, stderr_path) = (out_dir.path().join("stdout"), out_dir.path().join("stderr"));
    let mut agent = agent_apply(&api, all.path(), home.name(), "big", &[])
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let agent_output = || {
        format!(
            "--- agent stdout\n{}\n--- agent stderr\n{}",
            std::fs::read_to_string(&stdout_path).unwrap_or_default(),
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        )
    };
    // "Started applying" = the first objects of the set exist (the dry-run of all of them
    // and the inventory write come before that).
    let mut finished_early = None;
    wait_for(
        "the first applied ConfigMaps",
        Duration::from_secs(120),
        || {
            finished_early = agent.try_wait().unwrap();
            finished_early.is_some() || {
                let out = run(env.kubectl_cmd().args([
                    "get",
                    "configmaps",
                    "-n",
                    home.name(),
                    "-l",
                    "applyset.kubernetes.io/part-of",
                    "-o",
                    "name",
                ]));
                out.stdout.lines().count() > 0
            }
        },
        agent_output,
    );
    assert!(
        finished_early.is_none(),
        "the apply ended ({finished_early:?}) before the API server was killed\n{}",
        agent_output()
    );
    api.kill9();
    let killed = Instant::now();

    let status = loop {
        if let Some(s) = agent.try_wait().unwrap() {
            break s;
        }
        if killed.elapsed() > GIVE_UP_WITHIN {
            let _ = agent.kill();
            let _ = agent.wait();
            panic!(
                "berth-agent apply still running {GIVE_UP_WITHIN:?} after its API server died (--timeout {APPLY_TIMEOUT_FLAG})\n{}",
                agent_output()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let gave_up_after = killed.elapsed();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    eprintln!(
        "interrupted apply: {status} {gave_up_after:?} after the kill\n{}",
        agent_output()
    );
    // Exit 1 (error), not 4 (the API server rejected objects): it never answered.
    assert_eq!(
        status.code(),
        Some(1),
        "the interrupted apply must fail with exit code 1\n{}",
        agent_output()
    );
    assert!(
        !stderr.contains("panicked"),
        "the agent panicked\n{}",
        agent_output()
    );
    let error_line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line\n{}", agent_output()));
    assert!(
        error_line.contains("API server") && error_line.contains("unreachable"),
        "the error must say the API server is unreachable: {error_line}"
    );
    assert!(
        stderr.contains(&api.url),
        "the error must name the API server {}\n{}",
        api.url,
        agent_output()
    );

    // Nothing the interrupted run created is lost from the inventory.
    let (id, _, _) = inventory(env, home.name(), "big");
    let partial = members(env, &id);
    let everything = expected(&namespaces, 0..OBJECTS);
    assert!(
        !partial.is_empty() && partial.len() < OBJECTS,
        "expected a partial apply, found {} of {OBJECTS}",
        partial.len()
    );
    assert!(
        partial.is_subset(&everything),
        "unexpected members: {:?}",
        partial.difference(&everything).collect::<Vec<_>>()
    );
    assert_inventory_covers(env, home.name(), "big", &partial);

    // While it is down, a new run fails in its first stage (discovery, before any write) the
    // same clear way, not with the client library's raw error.
    let out = run(&mut agent_apply(&api, all.path(), home.name(), "big", &[]));
    assert_eq!(
        out.code,
        Some(1),
        "apply against the dead API server\n{}\n{}",
        out.stdout,
        out.stderr
    );
    let error_line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default();
    assert!(
        error_line.contains(&format!("lost the API server {}", api.url))
            && error_line.contains("unreachable"),
        "planning must report the unreachable API server by name: {}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("ServiceError"),
        "kube's raw error leaked: {}",
        out.stderr
    );

    // Back on the same port: the same apply converges.
    api.restart();
    let out = run(&mut agent_apply(&api, all.path(), home.name(), "big", &[]));
    assert_eq!(
        out.code,
        Some(0),
        "re-run after the restart\n{}\n{}\n{}",
        out.stdout,
        out.stderr,
        api.log_tail(20)
    );
    let converged = members(env, &id);
    assert_eq!(
        converged.len(),
        OBJECTS,
        "missing after the re-run: {:?}",
        everything
            .difference(&converged)
            .take(10)
            .collect::<Vec<_>>()
    );
    assert_eq!(converged, everything);
    assert_inventory_covers(env, home.name(), "big", &converged);
    // The re-run wrote only what the interrupted one had not.
    let written = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("applied "))
        .count();
    assert_eq!(
        written,
        OBJECTS - partial.len(),
        "the re-run should write exactly the objects the interrupted run missed"
    );

    // Half the objects: the other half is pruned, across all three namespaces.
    let half = configmaps(&namespaces, 0..OBJECTS / 2);
    let out = run(&mut agent_apply(
        &api,
        half.path(),
        home.name(),
        "big",
        &["--prune"],
    ));
    assert_eq!(
        out.code,
        Some(0),
        "apply of half with --prune\n{}\n{}",
        out.stdout,
        out.stderr
    );
    let pruned = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("pruned ConfigMap "))
        .count();
    assert_eq!(pruned, OBJECTS - OBJECTS / 2, "{}", out.stderr);
    let kept = members(env, &id);
    assert_eq!(
        kept,
        expected(&namespaces, 0..OBJECTS / 2),
        "prune left or removed the wrong objects"
    );
    for (ns, name) in expected(&namespaces, OBJECTS / 2..OBJECTS).iter().take(3) {
        let gone = run_ok(env.kubectl_cmd().args([
            "get",
            "configmap",
            name,
            "-n",
            ns,
            "--ignore-not-found",
            "-o",
            "name",
        ]));
        assert!(gone.trim().is_empty(), "{ns}/{name} survived the prune");
    }
    assert_inventory_covers(env, home.name(), "big", &kept);
}
