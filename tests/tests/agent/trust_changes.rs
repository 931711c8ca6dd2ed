//! The trust policy is checked on every reconcile, not only when a new digest appears: a key
//! rotated away, verification switched on, or a Source re-created all make the agent verify
//! the digest already in the cluster again before it applies anything. And the two opt-in
//! defences of `spec.verify` against signed content used out of place: a digest copied with
//! its signature into another repository (`matchRepository`) and a tag moved back to an older
//! signed digest (`refuseOlder`).

use std::path::Path;
use std::time::Duration;

use crate::common::{
    Agent, condition, configmap, configmap_value, kubectl_apply, push, wait_until,
};
use berth_e2e::{Env, env, manifests, run_ok};

/// A Source named `name` in `ns` at `reference`, every 5 s, with `verify` as its trust policy;
/// its objects go to namespace `target`.
fn source_into(
    env: &Env,
    ns: &str,
    name: &str,
    repo: &str,
    reference: &str,
    verify: &str,
    target: &str,
) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Source\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  url: oci://{reg}/{repo}\n  ref: {reference}\n  interval: 5s\n  timeout: 30s\n  insecure: true\n  targetNamespace: {target}\n  verify: {verify}\n",
        reg = env.registry_dist
    )
}

/// [`source_into`] its own namespace.
fn source(env: &Env, ns: &str, name: &str, repo: &str, reference: &str, verify: &str) -> String {
    source_into(env, ns, name, repo, reference, verify, ns)
}

/// Creates or replaces Secret `name` holding `public` as `cosign.pub`.
fn trust_secret(env: &Env, ns: &str, name: &str, public: &Path) {
    let yaml = run_ok(
        env.kubectl_cmd()
            .args([
                "create",
                "secret",
                "generic",
                name,
                "-n",
                ns,
                "--dry-run=client",
                "-o",
                "yaml",
            ])
            .arg(format!("--from-file=cosign.pub={}", public.display())),
    );
    kubectl_apply(env, yaml);
}

/// `berth push` with `--created` and a classic signature (the distribution registry has no
/// referrers API); returns the digest.
fn push_dated(env: &Env, repo: &str, tag: &str, dir: &Path, key: &Path, created: &str) -> String {
    let out = run_ok(
        env.berth()
            .env("COSIGN_PASSWORD", "e2e")
            .args(["push", &format!("oci://{}/{repo}:{tag}", env.registry_dist)])
            .arg(dir)
            .args([
                "--insecure",
                "--output",
                "json",
                "--created",
                created,
                "--sign-key",
            ])
            .arg(key),
    );
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn ready(env: &Env, ns: &str, name: &str) -> (String, String, String) {
    condition(env, ns, name, "Ready").unwrap_or_default()
}

fn delete_configmap(env: &Env, ns: &str, name: &str) {
    run_ok(
        env.kubectl_cmd()
            .args(["delete", "configmap", name, "-n", ns, "--wait=true"]),
    );
}

/// Two intervals pass and `name` is still gone: nothing was re-created from the old digest.
fn stays_deleted(env: &Env, ns: &str, name: &str, agent: &Agent) {
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(
        configmap_value(env, ns, name),
        None,
        "re-created from a digest that no longer verifies:\n{}",
        agent.log()
    );
}

#[test]
fn a_key_rotated_away_from_the_applied_digest_stops_it_and_nothing_deleted_comes_back() {
    let env = env();
    env.install_source_crd();
    let ns = env.namespace("trust-rotate");
    let keys = tempfile::tempdir().unwrap();
    let (old_key, old_public) = env.keypair(keys.path(), "old");
    let (_, new_public) = env.keypair(keys.path(), "new");
    trust_secret(env, ns.name(), "trusted", &old_public);
    let repo = env.repo("trust-rotate");
    let dir = manifests(&[("a.yaml", configmap("app", "one"))]);
    let digest = push_dated(
        env,
        &repo,
        "prod",
        dir.path(),
        &old_key,
        "2026-01-01T00:00:00Z",
    );
    kubectl_apply(
        env,
        source(
            env,
            ns.name(),
            "shop",
            &repo,
            "{tag: prod}",
            "{keys: [{secretRef: {name: trusted}}]}",
        ),
    );
    let agent = Agent::start(env, "agent", ns.name(), &[]);
    wait_until(
        "applied with the old key",
        Duration::from_secs(60),
        &[&agent],
        || ready(env, ns.name(), "shop").1 == "Succeeded",
    );

    // The key is rotated: the digest in the cluster was signed by the old one only.
    trust_secret(env, ns.name(), "trusted", &new_public);
    delete_configmap(env, ns.name(), "app");
    wait_until(
        "VerificationFailed for the applied digest",
        Duration::from_secs(30),
        &[&agent],
        || ready(env, ns.name(), "shop").1 == "VerificationFailed",
    );
    let (status, _, message) = ready(env, ns.name(), "shop");
    assert_eq!(status, "False");
    assert!(
        message.contains(&digest),
        "the condition names the digest: {message}"
    );
    stays_deleted(env, ns.name(), "app", &agent);

    // Trusting the old key again puts it back.
    trust_secret(env, ns.name(), "trusted", &old_public);
    wait_until(
        "applied again once trusted",
        Duration::from_secs(30),
        &[&agent],
        || configmap_value(env, ns.name(), "app").as_deref() == Some("one"),
    );
}

#[test]
fn switching_insecure_skip_verify_off_refuses_the_unsigned_digest_already_applied() {
    let env = env();
    env.install_source_crd();
    let ns = env.namespace("trust-skip");
    let keys = tempfile::tempdir().unwrap();
    let (_, public) = env.keypair(keys.path(), "ci");
    trust_secret(env, ns.name(), "trusted", &public);
    let repo = env.repo("trust-skip");
    let dir = manifests(&[("a.yaml", configmap("app", "unsigned"))]);
    push(env, &env.registry_dist, &repo, "prod", dir.path());
    kubectl_apply(
        env,
        source(
            env,
            ns.name(),
            "shop",
            &repo,
            "{tag: prod}",
            "{insecureSkipVerify: true}",
        ),
    );
    let agent = Agent::start(env, "agent", ns.name(), &[]);
    wait_until(
        "the unsigned digest applied while verification is off",
        Duration::from_secs(60),
        &[&agent],
        || ready(env, ns.name(), "shop").1 == "Succeeded",
    );

    kubectl_apply(
        env,
        source(
            env,
            ns.name(),
            "shop",
            &repo,
            "{tag: prod}",
            "{keys: [{secretRef: {name: trusted}}]}",
        ),
    );
    delete_configmap(env, ns.name(), "app");
    wait_until(
        "the unsigned digest refused",
        Duration::from_secs(30),
        &[&agent],
        || ready(env, ns.name(), "shop").1 == "VerificationFailed",
    );
    assert!(
        ready(env, ns.name(), "shop").2.contains("no signatures"),
        "{:?}",
        ready(env, ns.name(), "shop")
    );
    stays_deleted(env, ns.name(), "app", &agent);
}

/// `berth_registry_requests_total{operation="pull",result="success"}` of a running agent.
fn pulls(agent: &Agent) -> u64 {
    let addr = agent.metrics_addr(Duration::from_secs(10));
    let (_, body) = crate::common::http(&addr, "GET", "/metrics", &[], b"");
    body.lines()
        .find(|l| {
            l.starts_with("berth_registry_requests_total{")
                && l.contains("operation=\"pull\"")
                && l.contains("result=\"success\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .map_or(0, |n| n as u64)
}

#[test]
fn a_source_deleted_and_recreated_under_its_name_pulls_and_verifies_afresh() {
    let env = env();
    env.install_source_crd();
    let ns = env.namespace("trust-recreate");
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = env.keypair(keys.path(), "ci");
    trust_secret(env, ns.name(), "trusted", &public);
    let repo = env.repo("trust-recreate");
    let dir = manifests(&[("a.yaml", configmap("app", "one"))]);
    push_dated(env, &repo, "prod", dir.path(), &key, "2026-01-01T00:00:00Z");
    let spec = source(
        env,
        ns.name(),
        "shop",
        &repo,
        "{tag: prod}",
        "{keys: [{secretRef: {name: trusted}}]}",
    );
    kubectl_apply(env, spec.clone());
    let agent = Agent::start(env, "agent", ns.name(), &["--metrics-addr", "127.0.0.1:0"]);
    wait_until("applied", Duration::from_secs(60), &[&agent], || {
        ready(env, ns.name(), "shop").1 == "Succeeded"
    });
    let before = pulls(&agent);
    assert_eq!(before, 1, "one pull for the first apply");

    // The same name, spec and generation: only the object is new.
    run_ok(env.kubectl_cmd().args([
        "delete",
        "sources.berth.dev",
        "shop",
        "-n",
        ns.name(),
        "--wait=true",
    ]));
    kubectl_apply(env, spec);
    wait_until(
        "the re-created Source applied",
        Duration::from_secs(30),
        &[&agent],
        || ready(env, ns.name(), "shop").1 == "Succeeded",
    );
    assert_eq!(
        pulls(&agent),
        before + 1,
        "the re-created Source reused its predecessor's verified artifact"
    );
}

#[test]
fn match_repository_refuses_a_digest_copied_with_its_signature_into_another_repository() {
    let env = env();
    env.install_source_crd();
    let ns = env.namespace("trust-repo");
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = env.keypair(keys.path(), "ci");
    trust_secret(env, ns.name(), "trusted", &public);
    let team = env.repo("trust-repo-team");
    let other = env.repo("trust-repo-other");
    let dir = manifests(&[("a.yaml", configmap("app", "team"))]);
    let digest = push_dated(env, &team, "prod", dir.path(), &key, "2026-01-01T00:00:00Z");
    // Whoever can push to `other` copies the digest and its signature there.
    run_ok(env.berth().args([
        "promote",
        &format!("oci://{}/{team}@{digest}", env.registry_dist),
        &format!("oci://{}/{other}:prod", env.registry_dist),
        "--insecure",
    ]));
    let keys_only = "{keys: [{secretRef: {name: trusted}}]}";
    let matching = "{matchRepository: true, keys: [{secretRef: {name: trusted}}]}";
    // Each Source's objects in a namespace of its own: the three artifacts hold the same object.
    let (unchecked_ns, copied_ns) = (env.namespace("trust-repo-u"), env.namespace("trust-repo-c"));
    kubectl_apply(
        env,
        [
            source_into(
                env,
                ns.name(),
                "copied-unchecked",
                &other,
                "{tag: prod}",
                keys_only,
                unchecked_ns.name(),
            ),
            source_into(
                env,
                ns.name(),
                "copied",
                &other,
                "{tag: prod}",
                matching,
                copied_ns.name(),
            ),
            source(env, ns.name(), "original", &team, "{tag: prod}", matching),
        ]
        .join("---\n"),
    );
    let agent = Agent::start(env, "agent", ns.name(), &[]);
    wait_until(
        "the copy refused, the original applied",
        Duration::from_secs(60),
        &[&agent],
        || {
            ready(env, ns.name(), "copied").1 == "VerificationFailed"
                && ready(env, ns.name(), "original").1 == "Succeeded"
                && ready(env, ns.name(), "copied-unchecked").1 == "Succeeded"
        },
    );
    let message = ready(env, ns.name(), "copied").2;
    assert!(
        message.contains(&format!(
            "signed in repository '{}/{team}', not '{}/{other}'",
            env.registry_dist, env.registry_dist
        )),
        "the refusal names both repositories: {message}"
    );
    assert_eq!(
        configmap_value(env, copied_ns.name(), "app"),
        None,
        "the copied digest was applied"
    );
    assert_eq!(
        configmap_value(env, unchecked_ns.name(), "app").as_deref(),
        Some("team")
    );
}

#[test]
fn refuse_older_keeps_a_tag_moved_back_to_an_older_signed_digest_from_applying_unless_pinned() {
    let env = env();
    env.install_source_crd();
    let ns = env.namespace("trust-older");
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = env.keypair(keys.path(), "ci");
    trust_secret(env, ns.name(), "trusted", &public);
    let repo = env.repo("trust-older");
    let v1 = manifests(&[("a.yaml", configmap("app", "v1"))]);
    let old = push_dated(env, &repo, "v1", v1.path(), &key, "2026-01-01T00:00:00Z");
    let v2 = manifests(&[("a.yaml", configmap("app", "v2"))]);
    let new = push_dated(env, &repo, "prod", v2.path(), &key, "2026-02-01T00:00:00Z");
    let guarded = "{refuseOlder: true, keys: [{secretRef: {name: trusted}}]}";
    kubectl_apply(
        env,
        source(env, ns.name(), "shop", &repo, "{tag: prod}", guarded),
    );
    let agent = Agent::start(env, "agent", ns.name(), &[]);
    wait_until("v2 applied", Duration::from_secs(60), &[&agent], || {
        configmap_value(env, ns.name(), "app").as_deref() == Some("v2")
    });

    // The tag is moved back to the older, validly signed digest.
    run_ok(env.berth().args([
        "promote",
        &format!("oci://{}/{repo}@{old}", env.registry_dist),
        &format!("oci://{}/{repo}:prod", env.registry_dist),
        "--insecure",
    ]));
    wait_until("OlderArtifact", Duration::from_secs(30), &[&agent], || {
        ready(env, ns.name(), "shop").1 == "OlderArtifact"
    });
    let message = ready(env, ns.name(), "shop").2;
    assert!(
        message.contains(&old) && message.contains("2026-02-01T00:00:00Z"),
        "{message}"
    );
    assert_eq!(
        configmap_value(env, ns.name(), "app").as_deref(),
        Some("v2"),
        "the older digest was applied"
    );
    let status = crate::common::source_status(env, ns.name(), "shop");
    assert_eq!(status["lastAppliedDigest"], new.as_str());

    // Going back on purpose: pin the digest.
    kubectl_apply(
        env,
        source(
            env,
            ns.name(),
            "shop",
            &repo,
            &format!("{{digest: \"{old}\"}}"),
            guarded,
        ),
    );
    wait_until(
        "the pinned older digest applied",
        Duration::from_secs(30),
        &[&agent],
        || configmap_value(env, ns.name(), "app").as_deref() == Some("v1"),
    );

    // Without refuseOlder a tag moved back is followed (the default).
    let follower_ns = env.namespace("trust-older-f");
    let keys_only = "{keys: [{secretRef: {name: trusted}}]}";
    kubectl_apply(
        env,
        source_into(
            env,
            ns.name(),
            "follower",
            &repo,
            "{tag: prod}",
            keys_only,
            follower_ns.name(),
        ),
    );
    wait_until(
        "the follower applies the older digest",
        Duration::from_secs(30),
        &[&agent],
        || {
            crate::common::source_status(env, ns.name(), "follower")["lastAppliedDigest"]
                == old.as_str()
        },
    );
}
