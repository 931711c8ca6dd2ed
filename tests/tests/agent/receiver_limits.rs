//! What an unauthenticated caller can cost the push receiver (`berth-agent run
//! --receiver-addr`): a thousand slow connections that each declare a 256 KiB body and never
//! finish it leave the agent's memory bounded, its probes answering and a real trigger
//! working; a wrong token costs the API server nothing; and a signed request cannot be
//! replayed inside its window however many others were signed since.
//!
//! They load the machine, so they never run beside the receiver's latency test or any other
//! test that measures how fast the agent reacts (`common::loading_the_machine`).

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::*;
use berth_e2e::{env, free_port, run_ok};

const TOKEN: &str = "e2e-limits-token-5d1e";
const HMAC: &str = "e2e-limits-hmac-key-0b7a";

/// Slow connections in the flood.
const SLOW_CONNECTIONS: usize = 1000;
/// The body each one declares: the receiver's limit. It sends all of it but the last byte,
/// the most an unbounded receiver would hold for it.
const DECLARED_BODY: usize = 256 * 1024;
/// Peak resident memory (VmHWM) the agent may reach over its whole life, flood included.
/// The agent under test (debug build) settles at about 32 MiB after its first apply; the
/// receiver's limits let a flood add at most 16 unverified bodies × 256 KiB = 4 MiB plus 64
/// connections × 16 KiB of head buffer (measured: peak 37 MiB). A receiver that buffers every
/// declared body needs 1,000 × 256 KiB = 250 MiB more (measured: peak 305 MiB). 64 MiB leaves
/// room for allocator slack and a reconcile running during the flood.
const MAX_AGENT_PEAK_RSS_KIB: u64 = 64 * 1024;
/// Every slow connection must have been let go by then: the body deadline (10 s) plus slack
/// for a loaded 2-core machine. Counted from when the last one was opened.
const ALL_RELEASED_WITHIN: Duration = Duration::from_secs(14);
/// A valid trigger sent during the flood: its push applied within this (the interval is
/// 10 minutes).
const TRIGGER_UNDER_FLOOD: Duration = Duration::from_secs(10);
/// `/healthz` must answer within this during the flood.
const HEALTHZ_UNDER_FLOOD: Duration = Duration::from_secs(2);
/// Wrong-token requests in the burst whose API-server traffic is counted.
const WRONG_TOKENS: usize = 200;
/// Bytes the agent may send to the API server during that burst: one GET of the Secret is
/// about 120 bytes of TLS, so 200 of them are about 24 KB; anything under this is noise (no
/// request at all is expected: measured 0).
const WRONG_TOKEN_BURST_BUDGET: u64 = 1024;
/// Signed requests sent before the first is replayed: one more than the 4,096 signatures an
/// earlier receiver remembered (it forgot the oldest beyond that, inside the window).
const SIGNED_BEFORE_REPLAY: usize = 4097;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`).
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// What the flood saw of the agent.
#[derive(Debug, Default)]
struct FloodReport {
    connected: usize,
    not_connected: usize,
    /// Status codes the agent answered with, and how often.
    answered: BTreeMap<u16, usize>,
    /// Closed (or reset) by the agent without an answer the flood could read.
    closed: usize,
    /// Still held open by the agent when the flood gave up.
    still_open: usize,
}

struct SlowConnection {
    stream: TcpStream,
    sent: usize,
    done: bool,
}

/// Opens `SLOW_CONNECTIONS` to `addr`, each a POST declaring `DECLARED_BODY` with the
/// headers `credentials(i)` gives, then writes all of each body but the last byte as fast as
/// the agent takes it and watches for the agent letting go, until every connection is done
/// or `ALL_RELEASED_WITHIN` after the last was opened. `opened` is called once all are open.
fn slow_body_flood(
    addr: &str,
    credentials: impl Fn(usize) -> String,
    opened: impl FnOnce(),
) -> FloodReport {
    let target: SocketAddr = addr.parse().unwrap();
    let mut report = FloodReport::default();
    let mut connections = Vec::with_capacity(SLOW_CONNECTIONS);
    for i in 0..SLOW_CONNECTIONS {
        let Ok(mut stream) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
            report.not_connected += 1;
            continue;
        };
        report.connected += 1;
        let head = format!(
            "POST /hook/registry HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {DECLARED_BODY}\r\n{}\r\n",
            credentials(i)
        );
        stream
            .set_write_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let sent =
            stream.write_all(head.as_bytes()).is_ok() && stream.set_nonblocking(true).is_ok();
        connections.push(SlowConnection {
            stream,
            sent: 0,
            done: !sent,
        });
        if !sent {
            report.closed += 1;
        }
    }
    opened();
    let deadline = Instant::now() + ALL_RELEASED_WITHIN;
    let chunk = vec![b'x'; 64 * 1024];
    while Instant::now() < deadline && connections.iter().any(|c| !c.done) {
        for c in connections.iter_mut().filter(|c| !c.done) {
            while c.sent < DECLARED_BODY - 1 {
                let n = chunk.len().min(DECLARED_BODY - 1 - c.sent);
                match c.stream.write(&chunk[..n]) {
                    Ok(k) if k > 0 => c.sent += k,
                    _ => break, // full for now, or closed: the read below tells
                }
            }
            let mut buf = [0u8; 64];
            match c.stream.read(&mut buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Ok(n) if n > 0 => {
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    let status = text
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    *report.answered.entry(status).or_default() += 1;
                    c.done = true;
                }
                _ => {
                    report.closed += 1;
                    c.done = true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    report.still_open = connections.iter().filter(|c| !c.done).count();
    for c in &connections {
        let _ = c.stream.shutdown(Shutdown::Both);
    }
    report
}

#[test]
fn a_thousand_slow_unauthenticated_bodies_leave_memory_bounded_probes_answering_and_triggers_working()
 {
    let _loading = loading_the_machine();
    let env = env();
    env.install_source_crd();
    let ns = env.namespace("prod-flood");
    let repo = env.repo("prod-flood");
    let v0 = manifests(&[("a.yaml", configmap("app", "v0"))]);
    push(env, &env.registry_dist, &repo, "live", v0.path());
    // Ten minutes: only the trigger can apply the next push within the test.
    kubectl_apply(
        env,
        source_yaml(env, ns.name(), "shop", &repo, "live", "10m", ""),
    );
    receiver_secret(env, ns.name(), TOKEN, HMAC);
    let addr = format!("127.0.0.1:{}", free_port());
    let receiver_secret = format!("{}/receiver", ns.name());
    let agent = Agent::start(
        env,
        "flood",
        ns.name(),
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--receiver-addr",
            &addr,
            "--receiver-secret",
            &receiver_secret,
        ],
    );
    let metrics = agent.metrics_addr(Duration::from_secs(60));
    wait_until(
        "the first artifact applied",
        Duration::from_secs(90),
        &[&agent],
        || configmap_value(env, ns.name(), "app").as_deref() == Some("v0"),
    );
    let bearer = format!("Bearer {TOKEN}");
    let shop = format!("/hook/sources/{}/shop", ns.name());
    wait_until(
        "the receiver has its Secret",
        Duration::from_secs(30),
        &[&agent],
        || http(&addr, "POST", &shop, &[("Authorization", &bearer)], b"").0 == 202,
    );
    // Let the reconciles of the start settle before measuring.
    std::thread::sleep(Duration::from_secs(2));
    let rss_before = proc_status_kib(agent.pid(), "VmRSS");

    // A third each: no credentials, a wrong token, a well-formed fresh signature that cannot
    // match (only the body could tell).
    let now = unix_now();
    let credentials = move |i: usize| match i % 3 {
        0 => String::new(),
        1 => format!("Authorization: Bearer wrong-{i}\r\n"),
        _ => format!("X-Berth-Timestamp: {now}\r\nX-Berth-Signature: sha256={i:064x}\r\n"),
    };
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let flood_addr = addr.clone();
    let started = Instant::now();
    let flood = std::thread::spawn(move || {
        slow_body_flood(&flood_addr, credentials, move || {
            let _ = opened_tx.send(());
        })
    });
    opened_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the flood opened its connections");
    let opened_after = started.elapsed();

    // During the flood: the probe answers, and a real trigger gets its push applied.
    let probe = Instant::now();
    let (healthz, _) = http(&metrics, "GET", "/healthz", &[], b"");
    let healthz_took = probe.elapsed();
    let v1 = manifests(&[("a.yaml", configmap("app", "v1"))]);
    push(env, &env.registry_dist, &repo, "live", v1.path());
    let triggered = Instant::now();
    let (trigger, _) = http(&addr, "POST", &shop, &[("Authorization", &bearer)], b"");
    wait_until(
        "the triggered push applied during the flood",
        TRIGGER_UNDER_FLOOD,
        &[&agent],
        || configmap_value(env, ns.name(), "app").as_deref() == Some("v1"),
    );
    let applied_after = triggered.elapsed();
    let report = flood.join().unwrap();
    let flood_took = started.elapsed();
    let peak = proc_status_kib(agent.pid(), "VmHWM");
    let rss_after = proc_status_kib(agent.pid(), "VmRSS");
    eprintln!(
        "flood: {report:?}; opened in {opened_after:?}, over after {flood_took:?}; agent RSS before {rss_before} KiB, \
         after {rss_after} KiB, peak {peak} KiB; /healthz {healthz} in {healthz_took:?}; trigger {trigger}, applied after {applied_after:?}"
    );

    assert_eq!(healthz, 200, "/healthz during the flood\n{}", agent.log());
    assert!(
        healthz_took <= HEALTHZ_UNDER_FLOOD,
        "/healthz took {healthz_took:?} during the flood"
    );
    assert_eq!(
        trigger,
        202,
        "a valid trigger during the flood\n{}",
        agent.log()
    );
    assert!(
        peak <= MAX_AGENT_PEAK_RSS_KIB,
        "the agent's peak RSS {peak} KiB > {MAX_AGENT_PEAK_RSS_KIB} KiB: it holds what unauthenticated callers send ({report:?})"
    );
    assert_eq!(
        report.still_open, 0,
        "the agent still held {} slow connections {ALL_RELEASED_WITHIN:?} after they were opened: {report:?}",
        report.still_open
    );
    assert!(
        report.connected >= SLOW_CONNECTIONS / 2,
        "most of the flood must reach the agent: {report:?}"
    );
    assert!(
        agent.log().contains("request refused"),
        "the flood was refused, not served"
    );
}

/// A TCP relay in front of the API server that counts the bytes the agent sends through it.
struct CountingRelay {
    addr: SocketAddr,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl CountingRelay {
    fn start(upstream: &str) -> CountingRelay {
        let upstream: SocketAddr = upstream
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .parse()
            .expect("API server host:port");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (sent.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let (Ok(client), Ok(server)) = (client, TcpStream::connect(upstream)) else {
                    continue;
                };
                let (client2, server2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let count = count.clone();
                std::thread::spawn(move || relay(client, server, Some(&count)));
                std::thread::spawn(move || relay(server2, client2, None));
            }
        });
        CountingRelay { addr, sent, stop }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

/// Copies `from` to `to` until either side closes, counting the bytes.
fn relay(mut from: TcpStream, mut to: TcpStream, count: Option<&AtomicU64>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(n) if n > 0 && to.write_all(&buf[..n]).is_ok() => {
                if let Some(c) = count {
                    c.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            _ => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

/// `sha256=<hex>` of `<timestamp>.<body>` for each body, from one `openssl` run (an
/// implementation other than the agent's).
fn signatures(timestamp: &str, bodies: &[Vec<u8>]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    for (i, body) in bodies.iter().enumerate() {
        std::fs::write(
            dir.path().join(i.to_string()),
            [timestamp.as_bytes(), b".", body].concat(),
        )
        .unwrap();
    }
    let out = run_ok(
        Command::new("openssl")
            .current_dir(dir.path())
            .args(["dgst", "-sha256", "-hmac", HMAC, "-r"])
            .args((0..bodies.len()).map(|i| i.to_string())),
    );
    let by_file: BTreeMap<usize, String> = out
        .lines()
        .filter_map(|l| {
            let (hex, file) = l.split_once(' ')?;
            Some((
                file.trim_start_matches('*').parse().ok()?,
                format!("sha256={hex}"),
            ))
        })
        .collect();
    (0..bodies.len()).map(|i| by_file[&i].clone()).collect()
}

#[test]
fn a_wrong_token_costs_the_api_server_nothing_and_no_signature_replays_inside_its_window() {
    let _loading = loading_the_machine();
    let env = env();
    env.install_source_crd();
    let ns = env.namespace("prod-replay");
    receiver_secret(env, ns.name(), TOKEN, HMAC);
    let relay = CountingRelay::start(&env.apiserver);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    env.kubeconfig_for(&format!("https://{}", relay.addr), &kubeconfig);
    let addr = format!("127.0.0.1:{}", free_port());
    let receiver_secret = format!("{}/receiver", ns.name());
    let agent = Agent::start_with_kubeconfig(
        env,
        "replay",
        ns.name(),
        &[
            "--receiver-addr",
            &addr,
            "--receiver-secret",
            &receiver_secret,
        ],
        Some(&kubeconfig),
    );
    let bearer = format!("Bearer {TOKEN}");
    let no_push = br#"{"events":[]}"#;
    wait_until(
        "the receiver has its Secret",
        Duration::from_secs(60),
        &[&agent],
        || {
            agent.log().contains("receiving push notifications")
                && http(
                    &addr,
                    "POST",
                    "/hook/registry",
                    &[("Authorization", &bearer)],
                    no_push,
                )
                .0 == 200
        },
    );
    std::thread::sleep(Duration::from_secs(1));

    let before = relay.sent();
    for i in 0..WRONG_TOKENS {
        let wrong = format!("Bearer wrong-{i}");
        assert_eq!(
            http(
                &addr,
                "POST",
                "/hook/registry",
                &[("Authorization", &wrong)],
                no_push
            )
            .0,
            401
        );
    }
    let burst = relay.sent() - before;
    eprintln!("{WRONG_TOKENS} wrong-token requests: {burst} bytes sent to the API server");
    assert!(
        burst < WRONG_TOKEN_BURST_BUDGET,
        "{WRONG_TOKENS} wrong-token requests made the agent send {burst} bytes to the API server: a request each"
    );

    // Many distinct signed requests inside the window, then the first one again.
    let timestamp = unix_now().to_string();
    let bodies: Vec<Vec<u8>> = (0..SIGNED_BEFORE_REPLAY)
        .map(|i| format!(r#"{{"events":[],"n":{i}}}"#).into_bytes())
        .collect();
    let sigs = signatures(&timestamp, &bodies);
    let started = Instant::now();
    for (body, sig) in bodies.iter().zip(&sigs) {
        let signed = [
            ("X-Berth-Timestamp", timestamp.as_str()),
            ("X-Berth-Signature", sig.as_str()),
        ];
        assert_eq!(
            http(&addr, "POST", "/hook/registry", &signed, body).0,
            200,
            "a fresh signed request\n{}",
            agent.log()
        );
    }
    eprintln!(
        "{SIGNED_BEFORE_REPLAY} signed requests in {:?}",
        started.elapsed()
    );
    for i in [0, SIGNED_BEFORE_REPLAY - 1] {
        let signed = [
            ("X-Berth-Timestamp", timestamp.as_str()),
            ("X-Berth-Signature", sigs[i].as_str()),
        ];
        assert_eq!(
            http(&addr, "POST", "/hook/registry", &signed, &bodies[i]).0,
            401,
            "signed request {i} replayed after {} others inside its window",
            SIGNED_BEFORE_REPLAY - 1
        );
    }
}
