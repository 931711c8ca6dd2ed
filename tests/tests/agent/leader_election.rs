//! Several `berth-agent run --leader-elect` replicas against the real API server: exactly one
//! reconciles; when the leader is SIGKILLed a follower takes the Lease within the lease
//! duration and applies the next change exactly once; SIGTERM hands the Lease over at once.

use std::time::{Duration, Instant};

use crate::common::*;
use berth_e2e::env;

/// Short so the test is quick; failover must happen within it (plus a poll's slack).
const LEASE: Duration = Duration::from_secs(6);
/// Polling, process start and a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(3);

fn all(agents: &[Agent]) -> Vec<&Agent> {
    agents.iter().collect()
}

fn replica(env: &'static berth_e2e::Env, name: &str, ns: &str) -> Agent {
    Agent::start(env, name, ns, &leader_flags(ns, "6s", name))
}

#[test]
fn three_replicas_one_leader_failover_after_sigkill_applies_the_next_change_exactly_once() {
    let _measuring = measuring_reaction_time();
    let env = env();
    let (ns, repo, d1) = live_source(env, "prod-leader", &[("a.yaml", configmap("app", "one"))]);

    let mut agents: Vec<Agent> = ["a", "b", "c"]
        .iter()
        .map(|n| replica(env, n, ns.name()))
        .collect();
    // The "applied" log line comes at the end of the reconcile (after the health wait), a
    // moment after the value is visible: wait for both before counting.
    wait_until(
        "v1 applied by the leader",
        Duration::from_secs(90),
        &all(&agents),
        || {
            configmap_value(env, ns.name(), "app").as_deref() == Some("one")
                && agents.iter().map(|a| a.applied_count(&d1)).sum::<usize>() >= 1
        },
    );
    let leader = lease_holder(env, ns.name(), "agents").expect("someone holds the Lease");
    let applied: Vec<usize> = agents.iter().map(|a| a.applied_count(&d1)).collect();
    assert_eq!(
        applied.iter().sum::<usize>(),
        1,
        "v1 applied exactly once across replicas: {applied:?}\n{}",
        logs(&all(&agents))
    );
    let i = agents.iter().position(|a| a.name == leader).unwrap();
    assert_eq!(
        applied[i], 1,
        "the Lease holder {leader} is the one that applied"
    );
    // Followers never start reconciling.
    for a in agents.iter().filter(|a| a.name != leader) {
        assert!(
            !a.log().contains("\"reconcile\""),
            "follower {} reconciled:\n{}",
            a.name,
            a.log()
        );
    }

    // Two rounds: 3 replicas → kill the leader → 2 replicas → kill the leader → 1.
    for (round, value) in [(1, "two"), (2, "three")] {
        let i = agents
            .iter()
            .position(|a| Some(a.name.clone()) == lease_holder(env, ns.name(), "agents"))
            .unwrap();
        let mut dead = agents.remove(i);
        let killed_at = Instant::now();
        dead.kill9();
        let v = manifests(&[("a.yaml", configmap("app", value))]);
        let d = push(env, &env.registry_dist, &repo, "live", v.path());
        let took = wait_until(
            "a follower takes the Lease",
            LEASE + SLACK + Duration::from_secs(10),
            &all(&agents),
            || lease_holder(env, ns.name(), "agents").is_some_and(|h| h != dead.name),
        );
        let failover = killed_at.elapsed();
        eprintln!(
            "round {round}: failover after SIGKILL took {failover:?} (observed after {took:?})"
        );
        assert!(
            failover <= LEASE + SLACK,
            "failover took {failover:?}, lease is {LEASE:?}"
        );
        wait_until(
            &format!("{value} applied by the new leader"),
            Duration::from_secs(60),
            &all(&agents),
            || configmap_value(env, ns.name(), "app").as_deref() == Some(value),
        );
        // Let a few more intervals pass: nobody applies it again.
        std::thread::sleep(Duration::from_secs(6));
        let applied: Vec<usize> = agents.iter().map(|a| a.applied_count(&d)).collect();
        assert_eq!(
            applied.iter().sum::<usize>(),
            1,
            "round {round}: {d} applied {applied:?} times\n{}",
            logs(&all(&agents))
        );
        let holder = lease_holder(env, ns.name(), "agents").unwrap();
        let j = agents.iter().position(|a| a.name == holder).unwrap();
        assert_eq!(
            applied[j], 1,
            "round {round}: the new holder {holder} applied it"
        );
    }
}

#[test]
fn sigterm_releases_the_lease_so_a_follower_takes_over_at_once() {
    let env = env();
    let (ns, repo, _) = live_source(env, "prod-term", &[("a.yaml", configmap("app", "one"))]);
    // A long lease: only a release can explain a quick takeover.
    let long =
        |name: &str| Agent::start(env, name, ns.name(), &leader_flags(ns.name(), "60s", name));
    let mut first = long("first");
    wait_until(
        "first leads and applies",
        Duration::from_secs(90),
        &[&first],
        || {
            lease_holder(env, ns.name(), "agents").as_deref() == Some("first")
                && configmap_value(env, ns.name(), "app").as_deref() == Some("one")
        },
    );
    let second = long("second");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lease_holder(env, ns.name(), "agents").as_deref(),
        Some("first"),
        "the follower must not take a live Lease"
    );

    let code = first.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "graceful stop exits 0\n{}", first.log());
    assert!(
        first.log().contains("released the Lease"),
        "{}",
        first.log()
    );
    let took = wait_until(
        "second takes the released Lease",
        Duration::from_secs(20),
        &[&first, &second],
        || lease_holder(env, ns.name(), "agents").as_deref() == Some("second"),
    );
    assert!(
        took < Duration::from_secs(10),
        "takeover after release took {took:?}; the lease is 60s"
    );

    // The new leader works: a change is applied.
    let v2 = manifests(&[("a.yaml", configmap("app", "two"))]);
    push(env, &env.registry_dist, &repo, "live", v2.path());
    wait_until(
        "second applies the next change",
        Duration::from_secs(60),
        &[&second],
        || configmap_value(env, ns.name(), "app").as_deref() == Some("two"),
    );
}

/// A TCP relay to the API server that can be cut: while cut, open connections are closed and
/// new ones are dropped at once, as when a node loses its route to the control plane.
struct Relay {
    addr: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    fn start(upstream: &str) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::<std::net::TcpStream>::new()));
        let (up2, conns2, upstream) = (up.clone(), conns.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let mut list = conns2.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { addr, up, conns }
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_leader_cut_off_from_the_api_server_for_30s_steps_down_and_never_applies_next_to_the_new_leader()
 {
    let _measuring = measuring_reaction_time();
    let env = env();
    let (ns, repo, _) = live_source(env, "prod-cutoff", &[("a.yaml", configmap("app", "one"))]);

    // The first replica reaches the API server through the relay; the second directly.
    let relay = Relay::start(env.apiserver.trim_start_matches("https://"));
    let kubeconfig = std::fs::read_to_string(&env.kubeconfig)
        .unwrap()
        .replace(&env.apiserver, &format!("https://{}", relay.addr));
    let dir = tempfile::tempdir().unwrap();
    let relayed = dir.path().join("kubeconfig");
    std::fs::write(&relayed, kubeconfig).unwrap();
    let start = |name: &str, kubeconfig: Option<&std::path::Path>| {
        let flags = [
            &leader_flags(ns.name(), "6s", name)[..],
            &["--metrics-addr", "127.0.0.1:0"],
        ]
        .concat();
        Agent::start_with_kubeconfig(env, name, ns.name(), &flags, kubeconfig)
    };
    let cut_off = start("cut-off", Some(&relayed));
    wait_until(
        "the relayed replica leads and applies",
        Duration::from_secs(90),
        &[&cut_off],
        || {
            lease_holder(env, ns.name(), "agents").as_deref() == Some("cut-off")
                && configmap_value(env, ns.name(), "app").as_deref() == Some("one")
        },
    );
    let mut direct = start("direct", None);
    let metrics = cut_off.metrics_addr(Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        lease_holder(env, ns.name(), "agents").as_deref(),
        Some("cut-off")
    );

    relay.cut();
    let cut_at = Instant::now();
    let v2 = manifests(&[("a.yaml", configmap("app", "two"))]);
    let d2 = push(env, &env.registry_dist, &repo, "live", v2.path());
    wait_until(
        "the cut-off leader steps down",
        LEASE,
        &[&cut_off, &direct],
        || {
            http(&metrics, "GET", "/metrics", &[], b"")
                .1
                .contains("berth_leader 0")
        },
    );
    assert!(cut_off.log().contains("stepping down"), "{}", cut_off.log());
    wait_until(
        "the direct replica takes over and applies v2",
        Duration::from_secs(60),
        &[&cut_off, &direct],
        || {
            lease_holder(env, ns.name(), "agents").as_deref() == Some("direct")
                && configmap_value(env, ns.name(), "app").as_deref() == Some("two")
        },
    );
    let remaining = Duration::from_secs(30).saturating_sub(cut_at.elapsed());
    std::thread::sleep(remaining);
    relay.restore();
    // Back online, the old leader finds the Lease taken and stays a follower.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        lease_holder(env, ns.name(), "agents").as_deref(),
        Some("direct")
    );
    assert_eq!(
        cut_off.applied_count(&d2),
        0,
        "the cut-off replica applied next to the leader\n{}",
        cut_off.log()
    );
    assert_eq!(direct.applied_count(&d2), 1);
    assert!(
        http(&metrics, "GET", "/metrics", &[], b"")
            .1
            .contains("berth_leader 0")
    );

    // It resumes: when the other replica dies, it takes over again and applies.
    direct.kill9();
    let v3 = manifests(&[("a.yaml", configmap("app", "three"))]);
    let d3 = push(env, &env.registry_dist, &repo, "live", v3.path());
    wait_until(
        "the recovered replica leads and applies v3",
        Duration::from_secs(60),
        &[&cut_off],
        || {
            configmap_value(env, ns.name(), "app").as_deref() == Some("three")
                && cut_off.applied_count(&d3) >= 1
        },
    );
    assert_eq!(cut_off.applied_count(&d3), 1);
}

#[test]
fn losing_the_lease_mid_rollout_abandons_the_in_flight_reconcile() {
    let env = env();
    // A rollout that never becomes ready keeps the reconcile in flight (health wait, 1m).
    let (ns, _, _) = live_source(
        env,
        "prod-lose",
        &[("web.yaml", deployment("web", &env.never_ready_image))],
    );
    let flags = [
        &leader_flags(ns.name(), "6s", "loser")[..],
        &["--metrics-addr", "127.0.0.1:0"],
    ]
    .concat();
    let agent = Agent::start(env, "loser", ns.name(), &flags);
    wait_until(
        "the rollout is in flight",
        Duration::from_secs(90),
        &[&agent],
        || get(env, "deployment", ns.name(), "web").is_some(),
    );
    let metrics = agent.metrics_addr(Duration::from_secs(10));
    // Another replica (here: kubectl) takes the Lease, as after a partition.
    let now = berth_e2e::run_ok(
        std::process::Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%S.000000Z"]),
    );
    let patch = format!(
        r#"{{"spec":{{"holderIdentity":"intruder","renewTime":"{}","leaseDurationSeconds":600}}}}"#,
        now.trim()
    );
    berth_e2e::run_ok(env.kubectl_cmd().args([
        "patch",
        "lease",
        "agents",
        "-n",
        ns.name(),
        "--type",
        "merge",
        "-p",
        &patch,
    ]));
    wait_until(
        "the in-flight reconcile abandoned",
        Duration::from_secs(10),
        &[&agent],
        || agent.log().contains("abandoning in-flight reconciles"),
    );
    assert!(
        http(&metrics, "GET", "/metrics", &[], b"")
            .1
            .contains("berth_leader 0")
    );
    // It stays off: no reconcile runs while another replica holds the Lease.
    let reconciles = |log: &str| log.lines().filter(|l| l.contains("\"reconcile\"")).count();
    let before = reconciles(&agent.log());
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        reconciles(&agent.log()),
        before,
        "a follower reconciled\n{}",
        agent.log()
    );
    assert_eq!(
        lease_holder(env, ns.name(), "agents").as_deref(),
        Some("intruder")
    );
}
