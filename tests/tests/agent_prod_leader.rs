//! Several `berth-agent run --leader-elect` replicas against the real API server: exactly one
//! reconciles; when the leader is SIGKILLed a follower takes the Lease within the lease
//! duration and applies the next change exactly once; SIGTERM hands the Lease over at once.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests report failure by panicking

mod agent_prod_common;

use std::time::{Duration, Instant};

use agent_prod_common::*;
use berth_e2e::env;

/// Short so the test is quick; failover must happen within it (plus a poll's slack).
const LEASE: Duration = Duration::from_secs(6);
/// Polling, process start and a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(3);

fn all(agents: &[Agent]) -> Vec<&Agent> {
    agents.iter().collect()
}

fn replica(env: &'static berth_e2e::Env, name: &str, ns: &str) -> Agent {
    Agent::start(
        env,
        name,
        ns,
        &["--leader-elect", "--lease-name", "agents", "--lease-namespace", ns, "--lease-duration", "6s", "--identity", name],
    )
}

#[test]
fn three_replicas_one_leader_failover_after_sigkill_applies_the_next_change_exactly_once() {
    let env = env();
    install_crd(env);
    let ns = env.namespace("prod-leader");
    let repo = env.repo("prod-leader");
    let v1 = manifests(&[("a.yaml", configmap("app", "one"))]);
    let d1 = push(env, &env.registry_dist, &repo, "live", v1.path());
    kubectl_apply(env, source_yaml(env, ns.name(), "shop", &repo, "live", "5s", ""));

    let mut agents: Vec<Agent> = ["a", "b", "c"].iter().map(|n| replica(env, n, ns.name())).collect();
    wait_until("v1 applied by the leader", Duration::from_secs(90), &all(&agents), || {
        configmap_value(env, ns.name(), "app").as_deref() == Some("one")
    });
    let leader = lease_holder(env, ns.name(), "agents").expect("someone holds the Lease");
    let applied: Vec<usize> = agents.iter().map(|a| a.applied_count(&d1)).collect();
    assert_eq!(applied.iter().sum::<usize>(), 1, "v1 applied exactly once across replicas: {applied:?}\n{}", logs(&all(&agents)));
    let i = agents.iter().position(|a| a.name == leader).unwrap();
    assert_eq!(applied[i], 1, "the Lease holder {leader} is the one that applied");
    // Followers never start reconciling.
    for a in agents.iter().filter(|a| a.name != leader) {
        assert!(!a.log().contains("\"reconcile\""), "follower {} reconciled:\n{}", a.name, a.log());
    }

    // Two rounds: 3 replicas → kill the leader → 2 replicas → kill the leader → 1.
    for (round, value) in [(1, "two"), (2, "three")] {
        let i = agents.iter().position(|a| Some(a.name.clone()) == lease_holder(env, ns.name(), "agents")).unwrap();
        let mut dead = agents.remove(i);
        let killed_at = Instant::now();
        dead.kill9();
        let v = manifests(&[("a.yaml", configmap("app", value))]);
        let d = push(env, &env.registry_dist, &repo, "live", v.path());
        let took = wait_until("a follower takes the Lease", LEASE + SLACK + Duration::from_secs(10), &all(&agents), || {
            lease_holder(env, ns.name(), "agents").is_some_and(|h| h != dead.name)
        });
        let failover = killed_at.elapsed();
        eprintln!("round {round}: failover after SIGKILL took {failover:?} (observed after {took:?})");
        assert!(failover <= LEASE + SLACK, "failover took {failover:?}, lease is {LEASE:?}");
        wait_until(&format!("{value} applied by the new leader"), Duration::from_secs(60), &all(&agents), || {
            configmap_value(env, ns.name(), "app").as_deref() == Some(value)
        });
        // Let a few more intervals pass: nobody applies it again.
        std::thread::sleep(Duration::from_secs(6));
        let applied: Vec<usize> = agents.iter().map(|a| a.applied_count(&d)).collect();
        assert_eq!(applied.iter().sum::<usize>(), 1, "round {round}: {d} applied {applied:?} times\n{}", logs(&all(&agents)));
        let holder = lease_holder(env, ns.name(), "agents").unwrap();
        let j = agents.iter().position(|a| a.name == holder).unwrap();
        assert_eq!(applied[j], 1, "round {round}: the new holder {holder} applied it");
    }
}

#[test]
fn sigterm_releases_the_lease_so_a_follower_takes_over_at_once() {
    let env = env();
    install_crd(env);
    let ns = env.namespace("prod-term");
    let repo = env.repo("prod-term");
    let v1 = manifests(&[("a.yaml", configmap("app", "one"))]);
    push(env, &env.registry_dist, &repo, "live", v1.path());
    kubectl_apply(env, source_yaml(env, ns.name(), "shop", &repo, "live", "5s", ""));
    // A long lease: only a release can explain a quick takeover.
    let long = |name: &str| {
        Agent::start(
            env,
            name,
            ns.name(),
            &["--leader-elect", "--lease-name", "agents", "--lease-namespace", ns.name(), "--lease-duration", "60s", "--identity", name],
        )
    };
    let mut first = long("first");
    wait_until("first leads and applies", Duration::from_secs(90), &[&first], || {
        lease_holder(env, ns.name(), "agents").as_deref() == Some("first") && configmap_value(env, ns.name(), "app").as_deref() == Some("one")
    });
    let second = long("second");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lease_holder(env, ns.name(), "agents").as_deref(), Some("first"), "the follower must not take a live Lease");

    let code = first.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "graceful stop exits 0\n{}", first.log());
    assert!(first.log().contains("released the Lease"), "{}", first.log());
    let took = wait_until("second takes the released Lease", Duration::from_secs(20), &[&first, &second], || {
        lease_holder(env, ns.name(), "agents").as_deref() == Some("second")
    });
    assert!(took < Duration::from_secs(10), "takeover after release took {took:?}; the lease is 60s");

    // The new leader works: a change is applied.
    let v2 = manifests(&[("a.yaml", configmap("app", "two"))]);
    push(env, &env.registry_dist, &repo, "live", v2.path());
    wait_until("second applies the next change", Duration::from_secs(60), &[&second], || {
        configmap_value(env, ns.name(), "app").as_deref() == Some("two")
    });
}
