//! berth-agent with real artifacts: `apply oci://…` with signature verification, and the
//! controller (`berth-agent run`) reconciling a `Source` against the real API server and a
//! real registry — tag moves, drift, and artifacts that must not be applied.

use std::time::Duration;

use crate::common::{
    Agent, configmap, kubectl_apply, push, push_signed, source_status, wait_until,
};
use berth_e2e::{APPLYSET_PART_OF, env, manifests, run, run_fail, run_ok};
use serde_json::Value;

#[test]
fn a_signed_artifact_applies_by_digest_and_the_next_one_prunes() {
    let env = env();
    let ns = env.namespace("agent-oci");
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = env.keypair(keys.path(), "signer");
    let repo = env.repo("agent-oci");
    let v1 = manifests(&[
        ("a.yaml", configmap("alpha", "1")),
        ("b.yaml", configmap("beta", "1")),
    ]);
    let d1 = push_signed(env, &env.registry_dist, &repo, "v1", v1.path(), &key);

    let at = format!("oci://{}/{repo}@{d1}", env.registry_dist);
    let apply = |at: &str| {
        let mut cmd = env.berth_agent();
        cmd.args([
            "apply",
            at,
            "--insecure",
            "--prune",
            "-n",
            ns.name(),
            "--name",
            "app",
            "--key",
        ])
        .arg(&public);
        run(&mut cmd)
    };
    let out = apply(&at);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&d1),
        "reports the digest it applied: {}",
        out.stderr
    );
    assert_eq!(
        env.object("configmap", Some(ns.name()), "alpha").unwrap()["data"]["value"],
        "1"
    );

    let v2 = manifests(&[("a.yaml", configmap("alpha", "2"))]);
    let d2 = push_signed(env, &env.registry_dist, &repo, "v2", v2.path(), &key);
    let out = apply(&format!("oci://{}/{repo}@{d2}", env.registry_dist));
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        env.object("configmap", Some(ns.name()), "alpha").unwrap()["data"]["value"],
        "2"
    );
    assert!(
        env.object("configmap", Some(ns.name()), "beta").is_none(),
        "beta left the artifact but was not pruned"
    );
}

/// A `kind: List` document (what `kubectl get -o yaml` writes) as a v1 List of `items`.
fn list_of(items: &[String]) -> String {
    let indented: String = items
        .iter()
        .map(|item| {
            let mut lines = item.lines();
            let first = lines.next().unwrap_or_default();
            let rest: String = lines.map(|l| format!("\n    {l}")).collect();
            format!("  - {first}{rest}\n")
        })
        .collect();
    format!("apiVersion: v1\nkind: List\nmetadata: {{}}\nitems:\n{indented}")
}

#[test]
fn a_list_document_in_an_artifact_is_applied_as_its_items_and_an_item_that_leaves_is_pruned() {
    let env = env();
    let ns = env.namespace("agent-list");
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = env.keypair(keys.path(), "signer");
    let repo = env.repo("agent-list");
    let web = crate::common::deployment("web", "registry.example/app:1");
    let v1 = manifests(&[(
        "exported.yaml",
        list_of(&[configmap("settings", "1"), web.clone()]),
    )]);
    let d1 = push_signed(env, &env.registry_dist, &repo, "v1", v1.path(), &key);
    let apply = |digest: &str| {
        let mut cmd = env.berth_agent();
        cmd.args([
            "apply",
            &format!("oci://{}/{repo}@{digest}", env.registry_dist),
            "--insecure",
            "--prune",
            "-n",
            ns.name(),
            "--name",
            "exported",
            "--key",
        ])
        .arg(&public);
        run(&mut cmd)
    };
    let out = apply(&d1);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("2 object(s)"),
        "the List counts as its two items: {}",
        out.stderr
    );
    let parent = env.object("secret", Some(ns.name()), "exported").unwrap();
    let id = &parent["metadata"]["labels"]["applyset.kubernetes.io/id"];
    for kind in ["configmap", "deployment"] {
        let name = if kind == "configmap" {
            "settings"
        } else {
            "web"
        };
        let o = env
            .object(kind, Some(ns.name()), name)
            .unwrap_or_else(|| panic!("{kind} {name} of the List was not applied"));
        assert_eq!(
            &o["metadata"]["labels"][APPLYSET_PART_OF], id,
            "{kind} {name} is a member of the set"
        );
    }

    let v2 = manifests(&[("exported.yaml", list_of(&[web]))]);
    let d2 = push_signed(env, &env.registry_dist, &repo, "v2", v2.path(), &key);
    let out = apply(&d2);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains(&format!("pruned ConfigMap {}/settings", ns.name())),
        "{}",
        out.stdout
    );
    assert!(
        env.object("configmap", Some(ns.name()), "settings")
            .is_none(),
        "the item that left the List was not pruned"
    );
    assert!(env.object("deployment", Some(ns.name()), "web").is_some());
}

#[test]
fn unsigned_or_wrongly_signed_artifacts_apply_nothing() {
    let env = env();
    let ns = env.namespace("agent-untrusted");
    let keys = tempfile::tempdir().unwrap();
    let (key_a, _) = env.keypair(keys.path(), "a");
    let (_, public_b) = env.keypair(keys.path(), "b");
    let repo = env.repo("agent-untrusted");
    let dir = manifests(&[("a.yaml", configmap("never", "1"))]);

    let unsigned = push(env, &env.registry_oci, &repo, "unsigned", dir.path());
    let mut cmd = env.berth_agent();
    cmd.args([
        "apply",
        &format!("oci://{}/{repo}@{unsigned}", env.registry_oci),
        "--insecure",
        "-n",
        ns.name(),
        "--key",
    ])
    .arg(&public_b);
    let out = run_fail(&mut cmd);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("no signatures"), "{}", out.stderr);

    let wrong = push_signed(env, &env.registry_oci, &repo, "wrong", dir.path(), &key_a);
    let mut cmd = env.berth_agent();
    cmd.args([
        "apply",
        &format!("oci://{}/{repo}@{wrong}", env.registry_oci),
        "--insecure",
        "-n",
        ns.name(),
        "--key",
    ])
    .arg(&public_b);
    let out = run_fail(&mut cmd);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(
        out.stderr.contains(&wrong),
        "names the digest: {}",
        out.stderr
    );
    assert!(
        env.object("configmap", Some(ns.name()), "never").is_none(),
        "an untrusted artifact was applied"
    );
}

fn ready(status: &Value) -> Option<(String, String)> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
            )
        })
}

#[test]
fn the_controller_applies_a_source_follows_its_tag_corrects_drift_and_refuses_unsigned_content() {
    let env = env();
    env.install_source_crd();
    let ns = env.namespace("agent-ctl");
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = env.keypair(keys.path(), "ci");
    run_ok(
        env.kubectl_cmd()
            .args(["create", "secret", "generic", "trusted", "-n", ns.name()])
            .arg(format!("--from-file=cosign.pub={}", public.display())),
    );
    let repo = env.repo("agent-ctl");
    let v1 = manifests(&[
        ("a.yaml", configmap("app", "one")),
        ("b.yaml", configmap("extra", "x")),
    ]);
    let d1 = push_signed(env, &env.registry_dist, &repo, "prod", v1.path(), &key);

    let source = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Source\nmetadata:\n  name: shop\n  namespace: {ns}\nspec:\n  url: oci://{reg}/{repo}\n  ref: {{tag: prod}}\n  interval: 5s\n  timeout: 1m\n  insecure: true\n  verify:\n    keys:\n      - secretRef: {{name: trusted}}\n",
        ns = ns.name(),
        reg = env.registry_dist
    );
    kubectl_apply(env, source);
    let agent = Agent::start(env, "agent", ns.name(), &[]);

    wait_until(
        "Ready=True with the first digest",
        Duration::from_secs(90),
        &[&agent],
        || {
            let s = source_status(env, ns.name(), "shop");
            ready(&s) == Some(("True".into(), "Succeeded".into()))
                && s["lastAppliedDigest"] == d1.as_str()
        },
    );
    let s = source_status(env, ns.name(), "shop");
    assert_eq!(s["lastAppliedRevision"], "main@sha1:prod");
    assert!(
        s["signer"].as_str().unwrap().contains("sha256:"),
        "signer: {}",
        s["signer"]
    );
    // kubectl wait works on the condition, and the printer columns show the digest.
    run_ok(env.kubectl_cmd().args([
        "wait",
        "--for=condition=Ready",
        "source/shop",
        "-n",
        ns.name(),
        "--timeout=10s",
    ]));
    let table = run_ok(env.kubectl_cmd().args(["get", "bsrc", "-n", ns.name()]));
    assert!(table.contains("DIGEST") && table.contains(&d1), "{table}");
    let app = env.object("configmap", Some(ns.name()), "app").unwrap();
    let parent = env
        .object("sources.berth.dev", Some(ns.name()), "shop")
        .unwrap();
    assert_eq!(
        app["metadata"]["labels"][APPLYSET_PART_OF],
        parent["metadata"]["labels"]["applyset.kubernetes.io/id"],
        "members are labelled with the Source's ApplySet id"
    );

    // A quiet interval writes nothing.
    let rv = app["metadata"]["resourceVersion"].clone();
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(
        env.object("configmap", Some(ns.name()), "app").unwrap()["metadata"]["resourceVersion"],
        rv,
        "a no-op interval wrote the object"
    );

    // Drift: an edit is put back within an interval.
    run_ok(env.kubectl_cmd().args([
        "patch",
        "configmap",
        "app",
        "-n",
        ns.name(),
        "-p",
        r#"{"data":{"value":"edited"}}"#,
    ]));
    wait_until(
        "drift corrected",
        Duration::from_secs(30),
        &[&agent],
        || env.object("configmap", Some(ns.name()), "app").unwrap()["data"]["value"] == "one",
    );

    // The tag moves: the new digest is applied and what left the artifact is pruned.
    let v2 = manifests(&[("a.yaml", configmap("app", "two"))]);
    let d2 = push_signed(env, &env.registry_dist, &repo, "prod", v2.path(), &key);
    wait_until(
        "the moved tag applied",
        Duration::from_secs(60),
        &[&agent],
        || source_status(env, ns.name(), "shop")["lastAppliedDigest"] == d2.as_str(),
    );
    assert_eq!(
        env.object("configmap", Some(ns.name()), "app").unwrap()["data"]["value"],
        "two"
    );
    assert!(
        env.object("configmap", Some(ns.name()), "extra").is_none(),
        "extra was not pruned"
    );

    // An unsigned artifact under the tag: nothing applied, the condition says why.
    let v3 = manifests(&[("a.yaml", configmap("app", "three"))]);
    let d3 = push(env, &env.registry_dist, &repo, "prod", v3.path());
    wait_until(
        "VerificationFailed",
        Duration::from_secs(60),
        &[&agent],
        || {
            let s = source_status(env, ns.name(), "shop");
            ready(&s) == Some(("False".into(), "VerificationFailed".into()))
                && s["lastAttemptedDigest"] == d3.as_str()
        },
    );
    let s = source_status(env, ns.name(), "shop");
    assert_eq!(
        s["lastAppliedDigest"],
        d2.as_str(),
        "the last good digest stays recorded"
    );
    assert_eq!(
        env.object("configmap", Some(ns.name()), "app").unwrap()["data"]["value"],
        "two",
        "previous state intact"
    );

    // No secret value and no password in the agent's log.
    let log = agent.log();
    assert!(
        !log.contains("PUBLIC KEY-----\n"),
        "key material in the log"
    );
    drop(agent);
}

#[test]
fn a_pinned_digest_ignores_tag_moves_and_an_unreachable_registry_is_reported() {
    let env = env();
    env.install_source_crd();
    let ns = env.namespace("agent-pin");
    let repo = env.repo("agent-pin");
    let v1 = manifests(&[("a.yaml", configmap("pinned", "one"))]);
    let d1 = push(env, &env.registry_oci, &repo, "live", v1.path());
    // Nothing listens on port 9 of loopback (discard): the registry is "down".
    let sources = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Source\nmetadata: {{name: pinned, namespace: {ns}}}\nspec:\n  url: oci://{reg}/{repo}\n  ref: {{digest: \"{d1}\"}}\n  interval: 5s\n  insecure: true\n  verify: {{insecureSkipVerify: true}}\n---\napiVersion: berth.dev/v1alpha1\nkind: Source\nmetadata: {{name: down, namespace: {ns}}}\nspec:\n  url: oci://127.0.0.1:9/{repo}\n  ref: {{tag: live}}\n  interval: 5s\n  insecure: true\n  verify: {{insecureSkipVerify: true}}\n",
        ns = ns.name(),
        reg = env.registry_oci
    );
    kubectl_apply(env, sources);
    let agent = Agent::start(env, "agent", ns.name(), &[]);

    wait_until(
        "the pinned digest applied",
        Duration::from_secs(60),
        &[&agent],
        || source_status(env, ns.name(), "pinned")["lastAppliedDigest"] == d1.as_str(),
    );
    wait_until(
        "the unreachable registry reported",
        Duration::from_secs(60),
        &[&agent],
        || {
            ready(&source_status(env, ns.name(), "down"))
                == Some(("False".into(), "RegistryUnavailable".into()))
        },
    );
    let down = source_status(env, ns.name(), "down");
    let message = down["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()["message"]
        .clone();
    assert!(
        message.as_str().unwrap().contains("127.0.0.1:9"),
        "the condition names the registry: {message}"
    );

    // The tag moves; the pinned Source stays on its digest.
    let v2 = manifests(&[("a.yaml", configmap("pinned", "two"))]);
    push(env, &env.registry_oci, &repo, "live", v2.path());
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(
        source_status(env, ns.name(), "pinned")["lastAppliedDigest"],
        d1.as_str()
    );
    assert_eq!(
        env.object("configmap", Some(ns.name()), "pinned").unwrap()["data"]["value"],
        "one",
        "a tag move changed a pinned Source"
    );
}

#[test]
fn semver_picks_the_highest_matching_tag_and_a_service_account_without_rights_is_reported() {
    let env = env();
    env.install_source_crd();
    let ns = env.namespace("agent-semver");
    let repo = env.repo("agent-semver");
    let mut digests = std::collections::BTreeMap::new();
    for tag in ["1.0.0", "1.2.0", "2.0.0", "v1.1.0"] {
        let dir = manifests(&[("a.yaml", configmap("versioned", tag))]);
        digests.insert(tag, push(env, &env.registry_dist, &repo, tag, dir.path()));
    }
    run_ok(
        env.kubectl_cmd()
            .args(["create", "serviceaccount", "nobody", "-n", ns.name()]),
    );
    let other = env.namespace("agent-semver-sa");
    let sources = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Source\nmetadata: {{name: ranged, namespace: {ns}}}\nspec:\n  url: oci://{reg}/{repo}\n  ref: {{semver: \">=1.0.0, <2.0.0\"}}\n  interval: 5s\n  insecure: true\n  verify: {{insecureSkipVerify: true}}\n---\napiVersion: berth.dev/v1alpha1\nkind: Source\nmetadata: {{name: powerless, namespace: {ns}}}\nspec:\n  url: oci://{reg}/{repo}\n  ref: {{tag: \"1.0.0\"}}\n  interval: 5s\n  insecure: true\n  serviceAccountName: nobody\n  targetNamespace: {other}\n  verify: {{insecureSkipVerify: true}}\n",
        ns = ns.name(),
        reg = env.registry_dist,
        // Its own target namespace: both Sources hold the same object, which only one set may own.
        other = other.name()
    );
    kubectl_apply(env, sources);
    let agent = Agent::start(env, "agent", ns.name(), &[]);

    wait_until(
        "the highest 1.x applied",
        Duration::from_secs(60),
        &[&agent],
        || {
            source_status(env, ns.name(), "ranged")["lastAppliedDigest"]
                == digests["1.2.0"].as_str()
        },
    );
    assert_eq!(
        env.object("configmap", Some(ns.name()), "versioned")
            .unwrap()["data"]["value"],
        "1.2.0"
    );

    let mut s = Value::Null;
    wait_until(
        "Forbidden reported",
        Duration::from_secs(60),
        &[&agent],
        || {
            s = source_status(env, ns.name(), "powerless");
            ready(&s) == Some(("False".into(), "Forbidden".into()))
        },
    );
    let message = s["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()["message"]
        .clone();
    assert!(
        message
            .as_str()
            .unwrap()
            .contains(&format!("system:serviceaccount:{}:nobody", ns.name())),
        "the condition names the identity: {message}"
    );
    assert!(
        s["lastAppliedDigest"].is_null(),
        "nothing was applied as the powerless account"
    );
}

#[test]
fn apply_without_credentials_is_anonymous_even_when_the_agent_environment_holds_some() {
    let env = env();
    let ns = env.namespace("agent-anon");
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = env.keypair(keys.path(), "signer");
    let repo = env.repo("agent-anon");
    let reg = &env.registry_dist_tls;
    let creds = format!("{}:{}", env.registry_user, env.registry_password);
    let dir = manifests(&[("a.yaml", configmap("anonymous", "1"))]);
    let pushed = run_ok(
        env.berth()
            .env("COSIGN_PASSWORD", "e2e")
            .args(["push", &format!("oci://{reg}/{repo}:v1")])
            .arg(dir.path())
            .args(["--creds", &creds, "--output", "json", "--sign-key"])
            .arg(&key)
            .arg("--ca-file")
            .arg(&env.ca_file),
    );
    let digest = serde_json::from_str::<Value>(&pushed).unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();

    // Valid credentials for this registry wherever the berth CLI looks without --creds: the
    // environment variables and a Docker config.json.
    use base64::Engine as _;
    let docker = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(&creds);
    std::fs::write(
        docker.path().join("config.json"),
        format!(r#"{{"auths":{{"{reg}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    let ambient = |cmd: &mut std::process::Command| {
        cmd.env("BERTH_REGISTRY_USER", &env.registry_user)
            .env("BERTH_REGISTRY_PASSWORD", &env.registry_password)
            .env("DOCKER_CONFIG", docker.path())
            .arg("--ca-file")
            .arg(&env.ca_file);
    };

    // The CLI uses them: its command layer reads them and hands them to the registry client.
    let mut cmd = env.berth();
    cmd.args(["inspect", &format!("oci://{reg}/{repo}@{digest}")]);
    ambient(&mut cmd);
    run_ok(&mut cmd);
    let mut cmd = env.berth();
    cmd.args(["inspect", &format!("oci://{reg}/{repo}@{digest}")])
        .env("DOCKER_CONFIG", docker.path());
    cmd.arg("--ca-file").arg(&env.ca_file);
    run_ok(&mut cmd);

    // The agent does not: it pulls with what it is given (here nothing), so the registry refuses.
    let mut cmd = env.berth_agent();
    cmd.args([
        "apply",
        &format!("oci://{reg}/{repo}@{digest}"),
        "-n",
        ns.name(),
        "--key",
    ])
    .arg(&public);
    ambient(&mut cmd);
    let out = run_fail(&mut cmd);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("registry {reg} refused access")),
        "{}",
        out.stderr
    );
    assert!(
        env.object("configmap", Some(ns.name()), "anonymous")
            .is_none(),
        "applied with ambient credentials"
    );
}

#[test]
fn a_source_whose_artifact_holds_another_sources_object_is_refused_and_the_owner_does_not_flap() {
    let env = env();
    env.install_source_crd();
    let ns = env.namespace("agent-claim");
    let n = ns.name();
    let repo = env.repo("agent-claim");
    let mine = manifests(&[
        ("shared.yaml", configmap("shared", "a")),
        ("a.yaml", configmap("only-a", "1")),
    ]);
    push(env, &env.registry_dist, &repo, "a", mine.path());
    let theirs = manifests(&[
        ("b.yaml", configmap("only-b", "1")),
        ("shared.yaml", configmap("shared", "b")),
    ]);
    push(env, &env.registry_dist, &repo, "b", theirs.path());
    let source = |name: &str, extra: &str| {
        format!(
            "apiVersion: berth.dev/v1alpha1\nkind: Source\nmetadata: {{name: {name}, namespace: {n}}}\nspec:\n  url: oci://{}/{repo}\n  ref: {{tag: {name}}}\n  interval: 5s\n  timeout: 1m\n  insecure: true\n  verify: {{insecureSkipVerify: true}}\n{extra}",
            env.registry_dist
        )
    };
    kubectl_apply(env, source("a", ""));
    let agent = Agent::start(env, "claim", n, &[]);
    wait_until(
        "Source a applied",
        Duration::from_secs(60),
        &[&agent],
        || ready(&source_status(env, n, "a")).is_some_and(|(s, _)| s == "True"),
    );
    let shared = env.object("configmap", Some(n), "shared").unwrap();
    let a_id = shared["metadata"]["labels"][APPLYSET_PART_OF]
        .as_str()
        .unwrap()
        .to_string();
    let shared_rv = shared["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    // force: true takes fields from other managers; it does not take another set's object.
    kubectl_apply(env, source("b", "  force: true\n"));
    wait_until(
        "Source b refused",
        Duration::from_secs(60),
        &[&agent],
        || ready(&source_status(env, n, "b")).is_some_and(|(s, _)| s == "False"),
    );
    let status = source_status(env, n, "b");
    let reason = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(reason["reason"], "OwnershipConflict", "{status}");
    let m = reason["message"].as_str().unwrap();
    assert!(
        m.contains(&format!(
            "ConfigMap {n}/shared (shared.yaml:1) is a member of Source {n}/a's ApplySet ({a_id})"
        )),
        "{m}"
    );
    assert!(
        env.object("configmap", Some(n), "only-b").is_none(),
        "part of the refused artifact was applied"
    );

    // Several intervals of both Sources: the object stays a's, unwritten, and nothing is pruned.
    std::thread::sleep(Duration::from_secs(12));
    let shared = env.object("configmap", Some(n), "shared").unwrap();
    assert_eq!(
        shared["metadata"]["labels"][APPLYSET_PART_OF],
        a_id.as_str(),
        "relabelled: {shared}"
    );
    assert_eq!(
        shared["metadata"]["resourceVersion"],
        shared_rv.as_str(),
        "the two sets flap: {shared}"
    );
    assert_eq!(shared["data"]["value"], "a");
    assert!(env.object("configmap", Some(n), "only-a").is_some());
    assert_eq!(
        ready(&source_status(env, n, "a")).map(|r| r.0).as_deref(),
        Some("True")
    );
    let log = agent.log();
    let pruned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"message\":\"pruned\"") && l.contains("\"object\""))
        .collect();
    assert!(pruned.is_empty(), "something was pruned: {pruned:?}");
}
