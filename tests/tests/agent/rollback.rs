//! `spec.rollback: onHealthFailure` against the real API server: a rollout that never becomes
//! ready is rolled back to the last applied digest, once, with a condition and an Event; the
//! failed digest is not retried until asked or until the ref moves; a last good digest whose
//! signature no longer verifies is not rolled back to.

use std::time::Duration;

use crate::common::*;
use berth_e2e::{env, run_ok};

const GOOD_IMAGE: &str = "registry.example/app:1";
const ROLLBACK: &str = "  rollback: onHealthFailure\n";

fn rollbacks_in(agent: &Agent) -> usize {
    agent
        .log()
        .lines()
        .filter(|l| l.contains("health check failed; rolling back"))
        .count()
}

#[test]
fn a_never_ready_rollout_is_rolled_back_once_held_retried_on_request_and_released_by_a_new_ref() {
    let env = env();
    env.install_source_crd();
    let ns = env.namespace("prod-rollback");
    let repo = env.repo("prod-rollback");
    let v1 = manifests(&[
        ("web.yaml", deployment("web", GOOD_IMAGE)),
        ("cm.yaml", configmap("settings", "one")),
    ]);
    let d1 = push(env, &env.registry_dist, &repo, "live", v1.path());
    // timeout bounds the health wait: 15s per failed rollout.
    let source = source_yaml(env, ns.name(), "shop", &repo, "live", "5s", ROLLBACK)
        .replace("timeout: 1m", "timeout: 15s");
    kubectl_apply(env, source);
    let agent = Agent::start(env, "rb", ns.name(), &[]);
    wait_until("v1 ready", Duration::from_secs(90), &[&agent], || {
        let s = source_status(env, ns.name(), "shop");
        s["lastAppliedDigest"] == d1.as_str()
            && condition(env, ns.name(), "shop", "Ready").is_some_and(|c| c.0 == "True")
    });

    let v2 = manifests(&[
        ("web.yaml", deployment("web", &env.never_ready_image)),
        ("cm.yaml", configmap("settings", "two")),
        ("new.yaml", configmap("only-in-v2", "x")),
    ]);
    let d2 = push(env, &env.registry_dist, &repo, "live", v2.path());
    wait_until("RolledBack", Duration::from_secs(90), &[&agent], || {
        condition(env, ns.name(), "shop", "RolledBack").is_some_and(|c| c.0 == "True")
    });
    let (_, reason, message) = condition(env, ns.name(), "shop", "RolledBack").unwrap();
    assert_eq!(reason, "HealthCheckFailed");
    assert!(
        message.contains(&d1) && message.contains(&d2),
        "names both digests: {message}"
    );
    let ready = condition(env, ns.name(), "shop", "Ready").unwrap();
    assert_eq!(
        (ready.0.as_str(), ready.1.as_str()),
        ("False", "RolledBack"),
        "{ready:?}"
    );
    let s = source_status(env, ns.name(), "shop");
    assert_eq!(s["lastAppliedDigest"], d1.as_str());
    assert_eq!(s["failedDigest"], d2.as_str());
    assert_eq!(
        deployment_image(env, ns.name(), "web").as_deref(),
        Some(GOOD_IMAGE),
        "the workload is back on v1"
    );
    assert_eq!(
        configmap_value(env, ns.name(), "settings").as_deref(),
        Some("one")
    );
    assert!(
        get(env, "configmap", ns.name(), "only-in-v2").is_none(),
        "objects only the failed digest had are pruned"
    );
    let events = event_reasons(env, ns.name());
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "RolledBack" && m.contains(&d1) && m.contains(&d2)),
        "a RolledBack Event naming both digests: {events:?}"
    );

    // Never loops: intervals pass, the failed digest is not applied again.
    let generation =
        get(env, "deployment", ns.name(), "web").unwrap()["metadata"]["generation"].clone();
    std::thread::sleep(Duration::from_secs(16));
    assert_eq!(rollbacks_in(&agent), 1, "{}", agent.log());
    assert_eq!(
        get(env, "deployment", ns.name(), "web").unwrap()["metadata"]["generation"],
        generation,
        "the failed digest was re-applied"
    );
    assert_eq!(
        deployment_image(env, ns.name(), "web").as_deref(),
        Some(GOOD_IMAGE)
    );

    // The user asks for one more try: it fails again and is rolled back again, once.
    run_ok(env.kubectl_cmd().args([
        "annotate",
        "--overwrite",
        "sources.berth.dev",
        "shop",
        "-n",
        ns.name(),
        "berth.dev/retry=1",
    ]));
    wait_until(
        "a second rollback after the retry",
        Duration::from_secs(90),
        &[&agent],
        || rollbacks_in(&agent) == 2,
    );
    wait_until("held again", Duration::from_secs(30), &[&agent], || {
        deployment_image(env, ns.name(), "web").as_deref() == Some(GOOD_IMAGE)
            && source_status(env, ns.name(), "shop")["lastHandledRetry"] == "1"
    });
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(
        rollbacks_in(&agent),
        2,
        "a handled retry request is not repeated\n{}",
        agent.log()
    );

    // The ref moves to a healthy digest: applied, and the rollback state is cleared.
    let v3 = manifests(&[
        ("web.yaml", deployment("web", "registry.example/app:3")),
        ("cm.yaml", configmap("settings", "three")),
    ]);
    let d3 = push(env, &env.registry_dist, &repo, "live", v3.path());
    wait_until("v3 ready", Duration::from_secs(90), &[&agent], || {
        source_status(env, ns.name(), "shop")["lastAppliedDigest"] == d3.as_str()
            && condition(env, ns.name(), "shop", "Ready").is_some_and(|c| c.0 == "True")
    });
    assert!(
        condition(env, ns.name(), "shop", "RolledBack").is_none(),
        "RolledBack cleared by a good digest"
    );
    assert!(source_status(env, ns.name(), "shop")["failedDigest"].is_null());
}

#[test]
fn no_rollback_to_a_digest_whose_signature_no_longer_verifies() {
    let env = env();
    env.install_source_crd();
    let ns = env.namespace("prod-rotated");
    let repo = env.repo("prod-rotated");
    let keys = tempfile::tempdir().unwrap();
    let (old_key, old_pub) = env.keypair(keys.path(), "old");
    let (new_key, new_pub) = env.keypair(keys.path(), "new");
    let trusted = |public: &std::path::Path| {
        let yaml = run_ok(
            env.kubectl_cmd()
                .args([
                    "create",
                    "secret",
                    "generic",
                    "trusted",
                    "-n",
                    ns.name(),
                    "--dry-run=client",
                    "-o",
                    "yaml",
                ])
                .arg(format!("--from-file=cosign.pub={}", public.display())),
        );
        kubectl_apply(env, yaml);
    };
    trusted(&old_pub);
    let v1 = manifests(&[("web.yaml", deployment("web", GOOD_IMAGE))]);
    let d1 = push_signed(env, &env.registry_dist, &repo, "live", v1.path(), &old_key);
    let source = source_yaml(env, ns.name(), "shop", &repo, "live", "5s", ROLLBACK)
        .replace("timeout: 1m", "timeout: 15s")
        .replace(
            "verify: {insecureSkipVerify: true}",
            "verify: {keys: [{secretRef: {name: trusted}}]}",
        );
    kubectl_apply(env, source);
    let agent = Agent::start(env, "rot", ns.name(), &[]);
    wait_until("v1 ready", Duration::from_secs(90), &[&agent], || {
        source_status(env, ns.name(), "shop")["lastAppliedDigest"] == d1.as_str()
    });

    // The key is rotated; the next release, signed with the new key, never becomes ready.
    trusted(&new_pub);
    let v2 = manifests(&[("web.yaml", deployment("web", &env.never_ready_image))]);
    let d2 = push_signed(env, &env.registry_dist, &repo, "live", v2.path(), &new_key);
    wait_until(
        "the refusal recorded",
        Duration::from_secs(90),
        &[&agent],
        || {
            condition(env, ns.name(), "shop", "Ready")
                .is_some_and(|c| c.2.contains("not rolled back"))
        },
    );
    let (status, reason, message) = condition(env, ns.name(), "shop", "Ready").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "HealthCheckTimeout"),
        "{message}"
    );
    assert!(
        message.contains(&d1) && message.contains("no longer verifies"),
        "{message}"
    );
    assert!(
        condition(env, ns.name(), "shop", "RolledBack").is_none(),
        "no RolledBack condition"
    );
    assert_eq!(
        source_status(env, ns.name(), "shop")["lastAttemptedDigest"],
        d2.as_str()
    );
    assert_eq!(
        deployment_image(env, ns.name(), "web").as_deref(),
        Some(env.never_ready_image.as_str()),
        "nothing re-applied from the untrusted digest"
    );
    assert_eq!(rollbacks_in(&agent), 1, "one attempt, refused");
    assert!(
        event_reasons(env, ns.name())
            .iter()
            .any(|(r, _)| r == "RollbackRefused")
    );
}
