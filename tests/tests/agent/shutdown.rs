//! Graceful shutdown of `berth-agent run` on SIGTERM (what the kubelet sends): idle, it exits
//! at once; in the middle of a rollout that waits for health, it stops taking work, gives the
//! reconcile `--shutdown-grace`, then abandons it cleanly and exits 0.

use std::time::{Duration, Instant};

use crate::common::*;
use berth_e2e::env;

#[test]
fn sigterm_exits_at_once_when_idle_and_after_the_grace_period_mid_rollout() {
    let _measuring = measuring_reaction_time();
    let env = env();
    let (ns, repo, _) = live_source(env, "prod-shutdown", &[("a.yaml", configmap("app", "one"))]);
    let grace = ["--shutdown-grace", "3s"];

    let mut idle = Agent::start(env, "idle", ns.name(), &grace);
    wait_until("v1 applied", Duration::from_secs(90), &[&idle], || {
        configmap_value(env, ns.name(), "app").as_deref() == Some("one")
    });
    std::thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    assert_eq!(
        idle.terminate(Duration::from_secs(20)),
        Some(0),
        "{}",
        idle.log()
    );
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "an idle agent took {:?} to stop",
        t.elapsed()
    );

    // A rollout that never becomes ready: the reconcile waits for health (timeout 1m).
    let v2 = manifests(&[("web.yaml", deployment("web", &env.never_ready_image))]);
    push(env, &env.registry_dist, &repo, "live", v2.path());
    let mut busy = Agent::start(env, "busy", ns.name(), &grace);
    wait_until(
        "the rollout is in flight",
        Duration::from_secs(60),
        &[&busy],
        || get(env, "deployment", ns.name(), "web").is_some(),
    );
    std::thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    assert_eq!(
        busy.terminate(Duration::from_secs(30)),
        Some(0),
        "{}",
        busy.log()
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(10),
        "stopped after {took:?}; grace is 3s\n{}",
        busy.log()
    );
    let log = busy.log();
    assert!(
        log.contains("waiting for those in flight")
            && log.contains("abandoned after the grace period"),
        "{log}"
    );
}
