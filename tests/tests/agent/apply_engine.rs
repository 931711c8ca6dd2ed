//! `berth-agent apply --dir` / `diff` against the real API server: the apply engine (plan,
//! dry-run gate, server-side apply, ApplySet inventory, prune, health) as a user sees it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use berth_e2e::{APPLYSET_PART_OF, Env, Output, env, manifests, run, run_fail, run_ok, testdata};
use serde_json::Value;

fn must_get(env: &Env, kind: &str, ns: Option<&str>, name: &str) -> Value {
    env.object(kind, ns, name)
        .unwrap_or_else(|| panic!("{kind} {name} in {ns:?} does not exist"))
}

fn rv(v: &Value) -> String {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

/// What only a write by berth can change: for objects whose controllers update their status
/// (Deployments), the resourceVersion moves anyway, so compare the spec generation and berth's
/// own managedFields entry; for everything else, the resourceVersion itself.
fn written_by_berth_marker(kind: &str, v: &Value) -> String {
    if kind == "deployment" {
        let berth: Vec<&Value> = v["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["manager"] == "berth")
            .collect();
        format!(
            "generation {} berth fields {}",
            v["metadata"]["generation"],
            serde_json::to_string(&berth).unwrap()
        )
    } else {
        rv(v)
    }
}

/// Managers that own fields of `v` with server-side apply.
fn apply_managers(v: &Value) -> Vec<String> {
    v["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|m| m["operation"] == "Apply")
                .map(|m| m["manager"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn agent_apply(env: &Env, dir: &Path, ns: &str, name: &str, extra: &[&str]) -> Command {
    let mut cmd = env.berth_agent();
    cmd.args(["apply", "--dir"]).arg(dir).args([
        "--namespace",
        ns,
        "--name",
        name,
        "--log-format",
        "text",
    ]);
    cmd.args(extra);
    cmd
}

fn configmap(name: &str, data: &[(&str, &str)]) -> String {
    let mut s = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n");
    for (k, v) in data {
        s.push_str(&format!("  {k}: \"{v}\"\n"));
    }
    s
}

fn deployment(name: &str, replicas: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n        - name: app\n          image: registry.example/app:1\n"
    )
}

/// The ApplySet id the parent Secret carries.
fn applyset_id(env: &Env, ns: &str, name: &str) -> String {
    let parent = must_get(env, "secret", Some(ns), name);
    parent["metadata"]["labels"]["applyset.kubernetes.io/id"]
        .as_str()
        .expect("parent has the id label")
        .to_string()
}

fn stderr_of(out: &Output) -> String {
    format!("{}\n{}", out.stdout, out.stderr)
}

#[test]
fn testdata_app_is_applied_with_berth_field_manager_and_applyset_labels_then_a_reapply_writes_nothing()
 {
    let env = env();
    // Its Ingress would be refused by a corpus bundle's admission webhook (ingress-nginx).
    let _apart = crate::common::cluster_wide_bundles(env);
    // testdata/app has fixed namespaces and cluster-scoped names: only this test applies it.
    let ns = env.namespace("agent-app");
    let dir = testdata("app");
    let out = run_ok(&mut agent_apply(
        env,
        &dir,
        ns.name(),
        "shop",
        &["--wait", "--timeout", "3m"],
    ));
    assert!(
        out.contains("applied Deployment.apps shop-web/web"),
        "stdout: {out}"
    );

    let id = applyset_id(env, ns.name(), "shop");
    assert!(
        id.starts_with("applyset-") && id.ends_with("-v1"),
        "id {id}"
    );
    let parent = must_get(env, "secret", Some(ns.name()), "shop");
    let ann = &parent["metadata"]["annotations"];
    assert!(
        ann["applyset.kubernetes.io/tooling"]
            .as_str()
            .unwrap()
            .starts_with("berth/v")
    );
    let gks = ann["applyset.kubernetes.io/contains-group-kinds"]
        .as_str()
        .unwrap();
    for gk in [
        "ConfigMap",
        "CustomResourceDefinition.apiextensions.k8s.io",
        "Deployment.apps",
        "FeatureFlag.shop.example.com",
        "Namespace",
        "Ingress.networking.k8s.io",
    ] {
        assert!(gks.split(',').any(|g| g == gk), "{gk} missing from {gks}");
    }
    assert_eq!(
        ann["applyset.kubernetes.io/additional-namespaces"],
        "shop-api,shop-web"
    );

    let objects = [
        ("namespace", None, "shop-web"),
        ("namespace", None, "shop-api"),
        (
            "customresourcedefinition",
            None,
            "featureflags.shop.example.com",
        ),
        ("clusterrole", None, "shop-viewer"),
        ("deployment", Some("shop-web"), "web"),
        ("service", Some("shop-web"), "web"),
        ("ingress", Some("shop-web"), "web"),
        ("deployment", Some("shop-api"), "api"),
        ("configmap", Some("shop-api"), "api-config"),
        ("featureflag", Some("shop-api"), "new-checkout"),
    ];
    let mut before = BTreeMap::new();
    for (kind, ns_, name) in objects {
        let o = must_get(env, kind, ns_, name);
        assert_eq!(
            o["metadata"]["labels"][APPLYSET_PART_OF],
            id.as_str(),
            "{kind} {name}"
        );
        assert!(
            apply_managers(&o).contains(&"berth".to_string()),
            "{kind} {name} managers {:?}",
            apply_managers(&o)
        );
        before.insert((kind, name), written_by_berth_marker(kind, &o));
    }
    // Health was waited for: the Deployments are rolled out.
    let web = must_get(env, "deployment", Some("shop-web"), "web");
    assert_eq!(web["status"]["readyReplicas"], 2);

    // Same input again: no object is written, nothing reported as applied.
    let out = run_ok(&mut agent_apply(env, &dir, ns.name(), "shop", &["--prune"]));
    assert!(
        !out.contains("applied "),
        "a no-op re-apply reported changes: {out}"
    );
    for (kind, ns_, name) in objects {
        assert_eq!(
            written_by_berth_marker(kind, &must_get(env, kind, ns_, name)),
            before[&(kind, name)],
            "{kind} {name} was written by a no-op apply"
        );
    }
    assert_eq!(
        rv(&must_get(env, "secret", Some(ns.name()), "shop")),
        rv(&parent),
        "the parent was written by a no-op apply"
    );

    // kubectl's ApplySet support reads the parent and refuses to manage berth's set.
    let other = manifests(&[("cm.yaml", configmap("kubectl-cm", &[("a", "1")]))]);
    let out = run_fail(
        env.kubectl_cmd()
            .env("KUBECTL_APPLYSET", "true")
            .args([
                "apply",
                "--server-side",
                "--prune",
                "--applyset=shop",
                "-n",
                ns.name(),
                "-f",
            ])
            .arg(other.path()),
    );
    assert!(
        out.stderr.contains("managed by tooling \"berth\""),
        "kubectl said: {}",
        out.stderr
    );

    // Clean up the cluster-scoped part so other runs start fresh (prune of an emptied set).
    let empty = tempfile::tempdir().unwrap();
    run_ok(&mut agent_apply(
        env,
        empty.path(),
        ns.name(),
        "shop",
        &["--prune", "--allow-empty"],
    ));
    assert!(
        env.object("clusterrole", None, "shop-viewer").is_none(),
        "prune left the ClusterRole"
    );
    assert!(
        env.object("deployment", Some("shop-web"), "web").is_none(),
        "prune left the Deployment"
    );
}

#[test]
fn new_set_prunes_the_dropped_deployment_and_updates_the_configmap() {
    let env = env();
    let ns = env.namespace("agent-prune");
    let v1 = manifests(&[
        ("cm.yaml", configmap("settings", &[("mode", "one")])),
        ("keep.yaml", deployment("keep", "1")),
        ("drop.yaml", deployment("drop", "1")),
    ]);
    run_ok(&mut agent_apply(
        env,
        v1.path(),
        ns.name(),
        "app",
        &["--prune"],
    ));
    let keep_before = written_by_berth_marker(
        "deployment",
        &must_get(env, "deployment", Some(ns.name()), "keep"),
    );
    assert!(env.object("deployment", Some(ns.name()), "drop").is_some());

    let v2 = manifests(&[
        ("cm.yaml", configmap("settings", &[("mode", "two")])),
        ("keep.yaml", deployment("keep", "1")),
    ]);
    // diff first: it reports exactly the update and the prune, and changes nothing.
    let out = run(env
        .berth_agent()
        .args(["diff", "--dir"])
        .arg(v2.path())
        .args(["-n", ns.name(), "--name", "app", "--prune"]));
    assert_eq!(
        out.code,
        Some(1),
        "diff exits 1 when there are differences: {}",
        stderr_of(&out)
    );
    assert!(
        out.stdout
            .contains(&format!("~ ConfigMap {}/settings (update)", ns.name())),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("data.mode: \"one\" -> \"two\""),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("- Deployment.apps {}/drop (prune)", ns.name())),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("keep"),
        "unchanged objects are not listed: {}",
        out.stdout
    );
    assert!(
        env.object("deployment", Some(ns.name()), "drop").is_some(),
        "diff deleted something"
    );

    let out = run_ok(&mut agent_apply(
        env,
        v2.path(),
        ns.name(),
        "app",
        &["--prune"],
    ));
    assert!(
        out.contains(&format!("pruned Deployment.apps {}/drop", ns.name())),
        "{out}"
    );
    assert!(
        env.object("deployment", Some(ns.name()), "drop").is_none(),
        "the dropped Deployment is still there"
    );
    assert_eq!(
        must_get(env, "configmap", Some(ns.name()), "settings")["data"]["mode"],
        "two"
    );
    assert_eq!(
        written_by_berth_marker(
            "deployment",
            &must_get(env, "deployment", Some(ns.name()), "keep")
        ),
        keep_before,
        "an unchanged Deployment was written"
    );

    // The inventory was narrowed to what the set now holds.
    let parent = must_get(env, "secret", Some(ns.name()), "app");
    assert_eq!(
        parent["metadata"]["annotations"]["applyset.kubernetes.io/contains-group-kinds"],
        "ConfigMap,Deployment.apps"
    );
}

#[test]
fn objects_annotated_prune_disabled_survive_prune() {
    let env = env();
    let ns = env.namespace("agent-keep");
    let kept = configmap("precious", &[("a", "1")]).replace(
        "metadata:\n",
        "metadata:\n  annotations:\n    berth.dev/prune: disabled\n",
    );
    let v1 = manifests(&[
        ("a.yaml", configmap("plain", &[("a", "1")])),
        ("b.yaml", kept),
    ]);
    run_ok(&mut agent_apply(env, v1.path(), ns.name(), "set", &[]));
    let v2 = manifests(&[("c.yaml", configmap("other", &[("a", "1")]))]);
    run_ok(&mut agent_apply(
        env,
        v2.path(),
        ns.name(),
        "set",
        &["--prune"],
    ));
    assert!(env.object("configmap", Some(ns.name()), "plain").is_none());
    assert!(
        env.object("configmap", Some(ns.name()), "precious")
            .is_some(),
        "an opted-out object was pruned"
    );
}

#[test]
fn crd_and_its_custom_resource_apply_in_one_run() {
    let env = env();
    let ns = env.namespace("agent-crd");
    let group = format!("{}.e2e.example.com", ns.name());
    let crd = format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: gadgets.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{kind: Gadget, plural: gadgets, singular: gadget, listKind: GadgetList}}\n  versions:\n    - name: v1\n      served: true\n      storage: true\n      schema:\n        openAPIV3Schema:\n          type: object\n          properties:\n            spec:\n              type: object\n              properties:\n                size: {{type: integer}}\n"
    );
    let cr =
        format!("apiVersion: {group}/v1\nkind: Gadget\nmetadata:\n  name: g1\nspec:\n  size: 3\n");
    // The custom resource sorts first by file name: ordering is the engine's job.
    let dir = manifests(&[("a-gadget.yaml", cr), ("z-crd.yaml", crd)]);
    run_ok(&mut agent_apply(
        env,
        dir.path(),
        ns.name(),
        "gadgets",
        &["--prune"],
    ));
    let g = must_get(env, &format!("gadgets.{group}"), Some(ns.name()), "g1");
    assert_eq!(g["spec"]["size"], 3);

    // Dropping both prunes the custom resource before its CRD.
    let empty = tempfile::tempdir().unwrap();
    run_ok(&mut agent_apply(
        env,
        empty.path(),
        ns.name(),
        "gadgets",
        &["--prune", "--allow-empty"],
    ));
    // A CRD is removed once its custom resources are gone; it must at least be deleting.
    let crd = env.object(
        "customresourcedefinition",
        None,
        &format!("gadgets.{group}"),
    );
    assert!(
        crd.is_none_or(|c| c["metadata"]["deletionTimestamp"].is_string()),
        "the CRD was not pruned"
    );
}

#[test]
fn one_invalid_object_means_nothing_is_applied() {
    let env = env();
    let ns = env.namespace("agent-invalid");
    let dir = manifests(&[
        ("a.yaml", configmap("first", &[("a", "1")])),
        ("b.yaml", deployment("broken", "\"three\"")),
        ("c.yaml", configmap("last", &[("a", "1")])),
    ]);
    let out = run_fail(&mut agent_apply(env, dir.path(), ns.name(), "bad", &[]));
    assert_eq!(out.code, Some(4), "{}", stderr_of(&out));
    assert!(
        out.stderr
            .contains(&format!("Deployment.apps {}/broken", ns.name())),
        "error names the object: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("b.yaml:1"),
        "error names the file and line: {}",
        out.stderr
    );
    assert!(out.stderr.contains("nothing was applied"), "{}", out.stderr);
    assert!(
        env.object("configmap", Some(ns.name()), "first").is_none(),
        "a valid object was applied anyway"
    );
    assert!(
        env.object("configmap", Some(ns.name()), "last").is_none(),
        "a valid object was applied anyway"
    );
    assert!(
        env.object("secret", Some(ns.name()), "bad").is_none(),
        "the inventory was written although nothing applied"
    );
}

/// A misspelt field must not vanish without a word: server-side apply's typed conversion
/// refuses it in the dry-run (the agent asks the server to skip its redundant strict decode),
/// naming each object and its field, before anything is written.
#[test]
fn an_unknown_field_fails_the_dry_run_naming_object_and_field_and_nothing_is_applied() {
    let env = env();
    let ns = env.namespace("agent-unknown-field");
    let typo = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\ndataa:\n  a: \"1\"\n"
        .to_string();
    let dir = manifests(&[
        ("a.yaml", configmap("fine", &[("a", "1")])),
        ("b.yaml", typo),
        (
            "c.yaml",
            deployment("app", "2").replace("  replicas: 2", "  replica: 2"),
        ),
    ]);
    let out = run_fail(&mut agent_apply(env, dir.path(), ns.name(), "unknown", &[]));
    assert_eq!(out.code, Some(4), "{}", stderr_of(&out));
    assert!(
        out.stderr.contains("dry-run") && out.stderr.contains("nothing was applied"),
        "{}",
        out.stderr
    );
    for (object, field) in [
        (format!("ConfigMap {}/typo", ns.name()), ".dataa"),
        (
            format!("Deployment.apps {}/app", ns.name()),
            ".spec.replica",
        ),
    ] {
        // From the object to the next object's origin: its own origin, then the server's message.
        let entry = out
            .stderr
            .find(&object)
            .map(|at| &out.stderr[at..])
            .unwrap_or_default();
        let own_origin_end = entry.find(".yaml:1)").map_or(entry.len(), |e| e + 1);
        let entry = &entry[..entry[own_origin_end..]
            .find(".yaml:1)")
            .map_or(entry.len(), |e| e + own_origin_end)];
        assert!(
            entry.contains(field),
            "the error must name {object} and its field {field}: {}",
            out.stderr
        );
    }
    for (kind, name) in [
        ("configmap", "fine"),
        ("configmap", "typo"),
        ("deployment", "app"),
        ("secret", "unknown"),
    ] {
        assert!(
            env.object(kind, Some(ns.name()), name).is_none(),
            "{kind} {name} was written although the dry-run failed"
        );
    }
}

#[test]
fn fields_of_another_manager_are_not_taken_without_force_but_drift_of_our_own_is_corrected() {
    let env = env();
    let ns = env.namespace("agent-owner");
    run_ok(env.kubectl_cmd().args([
        "create",
        "configmap",
        "shared",
        "--from-literal=mode=theirs",
        "-n",
        ns.name(),
    ]));
    let dir = manifests(&[("cm.yaml", configmap("shared", &[("mode", "ours")]))]);
    let out = run_fail(&mut agent_apply(env, dir.path(), ns.name(), "own", &[]));
    assert_eq!(out.code, Some(4), "{}", stderr_of(&out));
    assert!(
        out.stderr.contains("conflict"),
        "error explains the conflict: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("--force"),
        "error says what to do: {}",
        out.stderr
    );
    assert_eq!(
        must_get(env, "configmap", Some(ns.name()), "shared")["data"]["mode"],
        "theirs"
    );

    run_ok(&mut agent_apply(
        env,
        dir.path(),
        ns.name(),
        "own",
        &["--force"],
    ));
    let cm = must_get(env, "configmap", Some(ns.name()), "shared");
    assert_eq!(cm["data"]["mode"], "ours");

    // Someone edits a field berth owns; the next apply puts it back without --force,
    // because the object is a member of berth's own set.
    run_ok(env.kubectl_cmd().args([
        "patch",
        "configmap",
        "shared",
        "-n",
        ns.name(),
        "-p",
        r#"{"data":{"mode":"edited"}}"#,
    ]));
    let out = run_ok(&mut agent_apply(env, dir.path(), ns.name(), "own", &[]));
    assert!(
        out.contains(&format!("applied ConfigMap {}/shared", ns.name())),
        "{out}"
    );
    assert_eq!(
        must_get(env, "configmap", Some(ns.name()), "shared")["data"]["mode"],
        "ours"
    );
}

#[test]
fn a_service_account_without_rights_gets_a_clear_error_and_nothing_applied() {
    let env = env();
    let ns = env.namespace("agent-sa");
    run_ok(
        env.kubectl_cmd()
            .args(["create", "serviceaccount", "deployer", "-n", ns.name()]),
    );
    let dir = manifests(&[("cm.yaml", configmap("c", &[("a", "1")]))]);
    let out = run_fail(&mut agent_apply(
        env,
        dir.path(),
        ns.name(),
        "sa",
        &["--service-account", "deployer"],
    ));
    assert_eq!(out.code, Some(4), "{}", stderr_of(&out));
    assert!(
        out.stderr
            .contains(&format!("system:serviceaccount:{}:deployer", ns.name())),
        "names the identity: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("RBAC"),
        "says what to do: {}",
        out.stderr
    );
    assert!(env.object("configmap", Some(ns.name()), "c").is_none());

    // With rights in the namespace the same apply goes through as that account.
    run_ok(env.kubectl_cmd().args([
        "create",
        "rolebinding",
        "deployer-edit",
        "--clusterrole=edit",
        &format!("--serviceaccount={}:deployer", ns.name()),
        "-n",
        ns.name(),
    ]));
    // RBAC changes reach the authorizer within moments, not instantly.
    let start = std::time::Instant::now();
    loop {
        let out = run(&mut agent_apply(
            env,
            dir.path(),
            ns.name(),
            "sa",
            &["--service-account", "deployer"],
        ));
        if out.status.success() {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "still refused with rights: {}",
            out.stderr
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(
        must_get(env, "configmap", Some(ns.name()), "c")["data"]["a"],
        "1"
    );
}

#[test]
fn berth_refuses_a_set_that_kubectl_manages() {
    let env = env();
    let ns = env.namespace("agent-kubectl");
    let dir = manifests(&[("cm.yaml", configmap("from-kubectl", &[("a", "1")]))]);
    run_ok(
        env.kubectl_cmd()
            .env("KUBECTL_APPLYSET", "true")
            .args([
                "apply",
                "--server-side",
                "--prune",
                "--applyset=ks",
                "-n",
                ns.name(),
                "-f",
            ])
            .arg(dir.path()),
    );
    let kubectl_id = applyset_id(env, ns.name(), "ks");
    let cm = must_get(env, "configmap", Some(ns.name()), "from-kubectl");
    assert_eq!(
        cm["metadata"]["labels"][APPLYSET_PART_OF],
        kubectl_id.as_str()
    );

    let out = run_fail(&mut agent_apply(
        env,
        dir.path(),
        ns.name(),
        "ks",
        &["--prune"],
    ));
    assert!(
        out.stderr.contains("managed by tooling \"kubectl/"),
        "{}",
        out.stderr
    );
    assert!(
        env.object("configmap", Some(ns.name()), "from-kubectl")
            .is_some()
    );
}

#[test]
fn an_empty_set_is_refused_unless_allowed() {
    let env = env();
    let ns = env.namespace("agent-empty");
    let dir = manifests(&[("cm.yaml", configmap("c", &[("a", "1")]))]);
    run_ok(&mut agent_apply(env, dir.path(), ns.name(), "e", &[]));
    let empty = tempfile::tempdir().unwrap();
    let out = run_fail(&mut agent_apply(
        env,
        empty.path(),
        ns.name(),
        "e",
        &["--prune"],
    ));
    assert!(out.stderr.contains("no objects"), "{}", out.stderr);
    assert!(
        env.object("configmap", Some(ns.name()), "c").is_some(),
        "an empty set pruned objects"
    );
}

#[test]
fn killed_mid_apply_the_next_run_still_prunes_what_the_first_one_created() {
    let env = env();
    let ns = env.namespace("agent-kill");
    // Enough objects that the apply is still running when it is killed.
    const OBJECTS: usize = 400;
    let many: Vec<(String, String)> = (0..OBJECTS)
        .map(|i| {
            (
                format!("cm-{i:04}.yaml"),
                configmap(&format!("cm-{i:04}"), &[("i", &i.to_string())]),
            )
        })
        .collect();
    let refs: Vec<(&str, String)> = many.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    let v1 = manifests(&refs);
    let mut child = agent_apply(env, v1.path(), ns.name(), "crash", &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it (SIGKILL) as soon as the first objects exist.
    let start = std::time::Instant::now();
    loop {
        let out = env.applyset_configmaps(ns.name());
        if out.lines().count() > 0 || start.elapsed() > std::time::Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let created = env.applyset_configmaps(ns.name());
    assert!(
        !created.trim().is_empty(),
        "nothing was applied before the kill"
    );

    // A new, small set with prune: everything the killed run created is found and removed.
    let v2 = manifests(&[("only.yaml", configmap("only", &[("a", "1")]))]);
    run_ok(&mut agent_apply(
        env,
        v2.path(),
        ns.name(),
        "crash",
        &["--prune"],
    ));
    let left = env.applyset_configmaps(ns.name());
    assert_eq!(
        left.trim(),
        "configmap/only",
        "objects of the killed run were forgotten"
    );
}

#[test]
fn a_rollout_that_never_becomes_ready_fails_the_wait_naming_the_deployment() {
    let env = env();
    let ns = env.namespace("agent-health");
    let stuck = deployment("stuck", "1").replace("registry.example/app:1", &env.never_ready_image);
    let dir = manifests(&[
        ("stuck.yaml", stuck),
        ("cm.yaml", configmap("fine", &[("a", "1")])),
    ]);
    let out = run_fail(&mut agent_apply(
        env,
        dir.path(),
        ns.name(),
        "health",
        &["--wait", "--timeout", "15s"],
    ));
    assert_eq!(out.code, Some(5), "{}", stderr_of(&out));
    assert!(
        out.stderr
            .contains(&format!("Deployment.apps {}/stuck", ns.name())),
        "names the workload: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("0/1 replicas ready"),
        "says what is missing: {}",
        out.stderr
    );
}

#[test]
fn an_object_of_another_set_is_refused_even_with_force_and_neither_set_flaps() {
    let env = env();
    let ns = env.namespace("agent-two-sets");
    let n = ns.name();
    let first = manifests(&[
        ("shared.yaml", configmap("shared", &[("owner", "first")])),
        ("only-first.yaml", configmap("only-first", &[("a", "1")])),
    ]);
    run_ok(&mut agent_apply(
        env,
        first.path(),
        n,
        "first",
        &["--prune"],
    ));
    let first_id = applyset_id(env, n, "first");
    let shared_rv = rv(&must_get(env, "configmap", Some(n), "shared"));

    // A second set whose artifact also holds `shared`: both apply as field manager berth, so
    // the API server sees no conflict; berth must.
    let second = manifests(&[
        ("only-second.yaml", configmap("only-second", &[("b", "1")])),
        ("shared.yaml", configmap("shared", &[("owner", "second")])),
    ]);
    for extra in [&["--prune"][..], &["--prune", "--force"]] {
        let out = run_fail(&mut agent_apply(env, second.path(), n, "second", extra));
        assert_eq!(out.code, Some(4), "{extra:?}: {}", stderr_of(&out));
        assert!(
            out.stderr.contains(&format!("ConfigMap {n}/shared ("))
                && out.stderr.contains("shared.yaml:1)"),
            "names the object and where it was read: {}",
            out.stderr
        );
        assert!(
            out.stderr
                .contains(&format!("Secret {n}/first's ApplySet ({first_id})")),
            "names the other set: {}",
            out.stderr
        );
        assert!(out.stderr.contains("nothing was applied"), "{}", out.stderr);
        assert!(
            !out.stderr.contains("only-second"),
            "only the claimed object is named: {}",
            out.stderr
        );
    }
    assert!(
        env.object("configmap", Some(n), "only-second").is_none(),
        "part of the refused artifact was applied"
    );
    let shared = must_get(env, "configmap", Some(n), "shared");
    assert_eq!(
        shared["metadata"]["labels"][APPLYSET_PART_OF],
        first_id.as_str(),
        "relabelled: {shared}"
    );
    assert_eq!(shared["data"]["owner"], "first");
    assert_eq!(rv(&shared), shared_rv, "the refused set wrote the object");

    // The first set's next apply finds everything as it left it: nothing to apply or prune.
    let out = run(&mut agent_apply(
        env,
        first.path(),
        n,
        "first",
        &["--prune"],
    ));
    assert_eq!(out.code, Some(0), "{}", stderr_of(&out));
    assert!(
        out.stderr
            .contains("2 object(s), 0 changed, 2 unchanged, 0 pruned"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(
        rv(&must_get(env, "configmap", Some(n), "shared")),
        shared_rv
    );
}
