//! Push-triggered reconciles: a real distribution registry (its own instance, so its
//! notification endpoint can name this test's agent) notifies `berth-agent run
//! --receiver-addr`, and the pushed artifact is applied within seconds although the Source's
//! interval is 10 minutes. Plus the requests the receiver must refuse.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use berth_e2e::{env, free_port, run_ok};

/// What the issue promises: push → applied within this, while the interval is 10 minutes.
const PUSH_TO_APPLIED: Duration = Duration::from_secs(2);
const TOKEN: &str = "e2e-receiver-token-3f9a";
const HMAC: &str = "e2e-hmac-key-81c2";

/// A distribution registry on loopback whose notifications go to `hook`.
struct Registry(Child, #[allow(dead_code)] tempfile::TempDir); // the dir lives as long as the registry

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn registry_with_notifications(port: u16, hook: &str, token: &str) -> Registry {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {root}}}\nhttp:\n  addr: 127.0.0.1:{port}\nnotifications:\n  endpoints:\n    - name: berth-agent\n      url: {hook}\n      headers:\n        Authorization: [\"Bearer {token}\"]\n      timeout: 2s\n      threshold: 3\n      backoff: 1s\n",
        root = dir.path().join("data").display()
    );
    std::fs::write(dir.path().join("config.yml"), config).unwrap();
    let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.path().join("config.yml"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect(
            "docker-registry (Debian package docker-registry) is installed by .ci/install-peers",
        );
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the registry did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Registry(child, dir)
}

#[test]
fn a_registry_push_is_applied_within_two_seconds_while_the_interval_is_ten_minutes() {
    let _measuring = measuring_reaction_time();
    let env = env();
    env.install_source_crd();
    let ns = env.namespace("prod-push");
    receiver_secret(env, ns.name(), TOKEN, HMAC);
    let (reg_port, hook_port) = (free_port(), free_port());
    let hook = format!("http://127.0.0.1:{hook_port}/hook/registry");
    let _registry = registry_with_notifications(reg_port, &hook, TOKEN);
    let registry = format!("127.0.0.1:{reg_port}");
    let repo = env.repo("prod-push");
    let v0 = manifests(&[("a.yaml", configmap("app", "v0"))]);
    push(env, &registry, &repo, "live", v0.path());
    let source = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Source\nmetadata: {{name: shop, namespace: {ns}}}\nspec:\n  url: oci://{registry}/{repo}\n  ref: {{tag: live}}\n  interval: 10m\n  insecure: true\n  verify: {{insecureSkipVerify: true}}\n",
        ns = ns.name()
    );
    kubectl_apply(env, source);
    let receiver_secret = format!("{}/receiver", ns.name());
    let agent = Agent::start(
        env,
        "push",
        ns.name(),
        &[
            "--receiver-addr",
            &format!("127.0.0.1:{hook_port}"),
            "--receiver-secret",
            &receiver_secret,
        ],
    );
    wait_until(
        "the first artifact applied at start",
        Duration::from_secs(90),
        &[&agent],
        || configmap_value(env, ns.name(), "app").as_deref() == Some("v0"),
    );
    // Let the start-up reconciles (status writes wake the controller) settle.
    std::thread::sleep(Duration::from_secs(3));

    let mut latencies = Vec::new();
    for i in 1..=3 {
        let value = format!("v{i}");
        let dir = manifests(&[("a.yaml", configmap("app", &value))]);
        push(env, &registry, &repo, "live", dir.path());
        let pushed = Instant::now();
        while configmap_value(env, ns.name(), "app").as_deref() != Some(value.as_str()) {
            assert!(
                pushed.elapsed() < Duration::from_secs(30),
                "push {i} never applied (interval is 10m)\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        latencies.push(pushed.elapsed());
    }
    latencies.sort();
    eprintln!("push-to-applied through the receiver: {latencies:?}");
    assert!(
        latencies[1] <= PUSH_TO_APPLIED,
        "median push-to-applied {:?} > {PUSH_TO_APPLIED:?}\n{}",
        latencies[1],
        agent.log()
    );
    assert!(
        agent.log().contains("registry push; reconcile requested"),
        "applied by the receiver, not a timer"
    );
}

fn hmac_hex(key: &str, data: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("data");
    std::fs::write(&f, data).unwrap();
    let out = run_ok(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-hmac", key, "-r"])
            .arg(&f),
    );
    out.split_whitespace().next().unwrap().to_string()
}

#[test]
fn the_receiver_refuses_bad_tokens_unknown_sources_oversized_malformed_and_replayed_requests() {
    let env = env();
    env.install_source_crd();
    let ns = env.namespace("prod-hook");
    receiver_secret(env, ns.name(), TOKEN, HMAC);
    kubectl_apply(
        env,
        source_yaml(
            env,
            ns.name(),
            "shop",
            &env.repo("prod-hook"),
            "live",
            "10m",
            "",
        ),
    );
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let receiver_secret = format!("{}/receiver", ns.name());
    let agent = Agent::start(
        env,
        "hook",
        ns.name(),
        &[
            "--receiver-addr",
            &addr,
            "--receiver-secret",
            &receiver_secret,
        ],
    );
    wait_until(
        "the receiver listens",
        Duration::from_secs(60),
        &[&agent],
        || agent.log().contains("receiving push notifications"),
    );
    let shop = format!("/hook/sources/{}/shop", ns.name());
    let ghost = format!("/hook/sources/{}/ghost", ns.name());
    let bearer = format!("Bearer {TOKEN}");

    // Unauthenticated: the same 401 for a Source that exists and one that does not.
    let a = http(&addr, "POST", &shop, &[], b"");
    let b = http(&addr, "POST", &ghost, &[], b"");
    assert_eq!((a.0, b.0), (401, 401));
    assert_eq!(a.1, b.1, "the answer must not reveal which Sources exist");
    assert_eq!(
        http(
            &addr,
            "POST",
            &shop,
            &[("Authorization", "Bearer wrong")],
            b""
        )
        .0,
        401
    );
    assert_eq!(
        http(
            &addr,
            "POST",
            &ghost,
            &[("Authorization", "Bearer wrong")],
            b""
        )
        .1,
        a.1
    );
    // Authenticated.
    assert_eq!(
        http(&addr, "POST", &shop, &[("Authorization", &bearer)], b"").0,
        202
    );
    assert_eq!(
        http(&addr, "POST", &ghost, &[("Authorization", &bearer)], b"").0,
        404
    );
    assert_eq!(
        http(
            &addr,
            "POST",
            "/hook/sources/other-ns/shop",
            &[("Authorization", &bearer)],
            b""
        )
        .0,
        404,
        "outside the watched namespace"
    );
    // Oversized and malformed bodies.
    let big = vec![b'x'; 300 * 1024];
    assert_eq!(
        http(
            &addr,
            "POST",
            "/hook/registry",
            &[("Authorization", &bearer)],
            &big
        )
        .0,
        413
    );
    assert_eq!(
        http(
            &addr,
            "POST",
            "/hook/registry",
            &[("Authorization", &bearer)],
            b"{not json"
        )
        .0,
        400
    );
    assert_eq!(
        http(
            &addr,
            "POST",
            "/hook/registry",
            &[("Authorization", &bearer)],
            br#"{"events":[]}"#
        )
        .0,
        200
    );

    // HMAC: signed once is accepted, the same request again is a replay.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let body = br#"{"why":"ci"}"#;
    let sig = format!(
        "sha256={}",
        hmac_hex(HMAC, &[now.as_bytes(), b".", body].concat())
    );
    let signed = [
        ("X-Berth-Timestamp", now.as_str()),
        ("X-Berth-Signature", sig.as_str()),
    ];
    assert_eq!(http(&addr, "POST", &shop, &signed, body).0, 202);
    assert_eq!(
        http(&addr, "POST", &shop, &signed, body).0,
        401,
        "a replayed signed request is refused"
    );
    // Tampered body, unsigned, stale.
    let fresh = (now.parse::<u64>().unwrap() + 1).to_string();
    let sig2 = format!(
        "sha256={}",
        hmac_hex(HMAC, &[fresh.as_bytes(), b".", body].concat())
    );
    assert_eq!(
        http(
            &addr,
            "POST",
            &shop,
            &[("X-Berth-Timestamp", &fresh), ("X-Berth-Signature", &sig2)],
            br#"{"why":"evil"}"#
        )
        .0,
        401
    );
    assert_eq!(
        http(&addr, "POST", &shop, &[("X-Berth-Timestamp", &fresh)], body).0,
        401
    );
    let old = (now.parse::<u64>().unwrap() - 3600).to_string();
    let sig3 = format!(
        "sha256={}",
        hmac_hex(HMAC, &[old.as_bytes(), b".", body].concat())
    );
    assert_eq!(
        http(
            &addr,
            "POST",
            &shop,
            &[("X-Berth-Timestamp", &old), ("X-Berth-Signature", &sig3)],
            body
        )
        .0,
        401
    );
    assert!(
        !agent.log().contains(TOKEN) && !agent.log().contains(HMAC),
        "credentials in the log"
    );
}
