//! `berth-agent run --metrics-addr`: Prometheus metrics a user can alert on, and the probes
//! the kubelet calls, against the real API server and registry.

use std::time::Duration;

use crate::common::*;
use berth_e2e::env;

/// The value of the first sample line starting with `series` (name and labels).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_count_reconciles_objects_and_digests_and_probes_answer() {
    let env = env();
    let (ns, repo, d1) = live_source(
        env,
        "prod-metrics",
        &[
            ("a.yaml", configmap("app", "one")),
            ("b.yaml", configmap("extra", "x")),
        ],
    );
    // A second Source whose tag does not exist: a failure with a reason.
    kubectl_apply(
        env,
        source_yaml(env, ns.name(), "missing", &repo, "nope", "5s", ""),
    );

    let agent = Agent::start(env, "m", ns.name(), &["--metrics-addr", "127.0.0.1:0"]);
    let addr = agent.metrics_addr(Duration::from_secs(60));
    let shop = format!("source=\"{}/shop\"", ns.name());
    let missing = format!("source=\"{}/missing\"", ns.name());

    wait_until(
        "both Sources reconciled",
        Duration::from_secs(90),
        &[&agent],
        || {
            let (_, m) = http(&addr, "GET", "/metrics", &[], b"");
            // The info is set when the status is recorded, the counter when the reconcile
            // returns: wait for both, or a scrape between the two fails the test.
            m.contains(&format!("berth_source_info{{{shop},digest=\"{d1}\""))
                && m.contains(&format!(
                    "berth_reconciles_total{{{shop},result=\"success\""
                ))
                && m.contains(&format!(
                    "berth_reconciles_total{{{missing},result=\"failure\""
                ))
        },
    );
    let (status, m) = http(&addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(
        sample(
            &m,
            &format!("berth_reconciles_total{{{shop},result=\"success\",reason=\"Succeeded\"}}")
        )
        .map(|v| v >= 1.0),
        Some(true),
        "{m}"
    );
    assert!(
        m.lines().any(|l| l.starts_with(&format!(
            "berth_reconciles_total{{{missing},result=\"failure\",reason=\"ArtifactNotFound\"}}"
        ))),
        "a missing tag is counted with its reason:\n{m}"
    );
    assert_eq!(
        sample(&m, &format!("berth_objects_applied_total{{{shop}}}")),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            &format!("berth_source_info{{{shop},digest=\"{d1}\",revision=\"main@sha1:live\"}}")
        ),
        Some(1.0),
        "{m}"
    );
    assert!(
        sample(
            &m,
            &format!("berth_reconcile_duration_seconds_count{{{shop}}}")
        )
        .unwrap()
            >= 1.0,
        "{m}"
    );
    let last = sample(
        &m,
        &format!("berth_last_applied_timestamp_seconds{{{shop}}}"),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - last).abs() < 120.0,
        "last applied {last} vs now {now}"
    );
    assert!(
        sample(
            &m,
            "berth_registry_requests_total{operation=\"resolve\",result=\"success\"}"
        )
        .unwrap()
            >= 1.0,
        "{m}"
    );
    assert!(
        sample(
            &m,
            "berth_registry_requests_total{operation=\"pull\",result=\"success\"}"
        )
        .unwrap()
            >= 1.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, "berth_leader "),
        Some(1.0),
        "a lone agent leads:\n{m}"
    );

    // A new digest replaces the info series and pruning is counted.
    let v2 = manifests(&[("a.yaml", configmap("app", "two"))]);
    let d2 = push(env, &env.registry_dist, &repo, "live", v2.path());
    wait_until(
        "the new digest exported",
        Duration::from_secs(60),
        &[&agent],
        || http(&addr, "GET", "/metrics", &[], b"").1.contains(&d2),
    );
    let (_, m) = http(&addr, "GET", "/metrics", &[], b"");
    assert!(!m.contains(&d1), "the old digest is still exported:\n{m}");
    assert_eq!(
        sample(&m, &format!("berth_objects_pruned_total{{{shop}}}")),
        Some(1.0),
        "{m}"
    );

    assert_eq!(http(&addr, "GET", "/healthz", &[], b"").0, 200);
    assert_eq!(http(&addr, "GET", "/readyz", &[], b"").0, 200);
    assert_eq!(http(&addr, "GET", "/nothing", &[], b"").0, 404);
    assert_eq!(http(&addr, "POST", "/metrics", &[], b"x").0, 405);
}

#[test]
fn a_follower_reports_leader_zero_and_is_ready() {
    let env = env();
    env.install_source_crd();
    let ns = env.namespace("prod-mfollow");
    let start = |name: &str| {
        let args = [
            "--metrics-addr",
            "127.0.0.1:0",
            "--leader-elect",
            "--lease-name",
            "m",
            "--lease-duration",
            "30s",
        ];
        Agent::start(
            env,
            name,
            ns.name(),
            &[
                &args[..],
                &["--identity", name, "--lease-namespace", ns.name()],
            ]
            .concat(),
        )
    };
    let first = start("one");
    let addr1 = first.metrics_addr(Duration::from_secs(60));
    wait_until("first leads", Duration::from_secs(30), &[&first], || {
        http(&addr1, "GET", "/metrics", &[], b"")
            .1
            .contains("berth_leader 1")
    });
    let second = start("two");
    let addr2 = second.metrics_addr(Duration::from_secs(60));
    wait_until(
        "second ready",
        Duration::from_secs(30),
        &[&first, &second],
        || http(&addr2, "GET", "/readyz", &[], b"").0 == 200,
    );
    assert!(
        http(&addr2, "GET", "/metrics", &[], b"")
            .1
            .contains("berth_leader 0"),
        "a follower is not the leader"
    );
    assert!(
        http(&addr1, "GET", "/metrics", &[], b"")
            .1
            .contains("berth_leader 1")
    );
}
