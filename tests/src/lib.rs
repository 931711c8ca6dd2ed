//! End-to-end test harness: brings the local peers up once per test run (or attaches to
//! the ones already running), builds the `berth` and `berth-agent` binaries, and gives
//! each test its own namespace and repository so tests run in parallel and leave
//! nothing behind.
//!
//! There is no skip path: a test that needs a peer fails loudly when the peer is
//! missing, with the peer's log in the panic message.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a harness reports failure by panicking

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Endpoints and tools of the running test environment, read from the env file that
/// `tests/env/up` writes.
#[derive(Debug)]
pub struct Env {
    pub state: PathBuf,
    pub kubeconfig: PathBuf,
    pub apiserver: String,
    /// Distribution registry, plain HTTP, OCI 1.0 (no referrers API).
    pub registry_dist: String,
    /// Distribution registry, TLS + basic auth.
    pub registry_dist_tls: String,
    /// OCI 1.1 registry with the referrers API, plain HTTP.
    pub registry_oci: String,
    /// OCI 1.1 registry, TLS + basic auth.
    pub registry_oci_tls: String,
    pub registry_user: String,
    pub registry_password: String,
    pub ca_file: PathBuf,
    pub cosign_v2: PathBuf,
    pub cosign_v3: PathBuf,
    pub flux: PathBuf,
    pub oras: PathBuf,
    pub kubectl: PathBuf,
    /// An image name whose pods kwok keeps Running but never Ready.
    pub never_ready_image: String,
    /// File listing `name version` of every peer, as the peers report them.
    pub peer_versions: PathBuf,
    berth_bin: PathBuf,
    agent_bin: PathBuf,
    /// An empty Docker config dir, so tests never read the machine's credentials.
    docker_config: tempfile::TempDir,
}

/// The repository root (the workspace holding `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A file under `testdata/`.
pub fn testdata(path: impl AsRef<Path>) -> PathBuf {
    repo_root().join("testdata").join(path)
}

static ENV: OnceLock<Env> = OnceLock::new();

/// The test environment, brought up on first use in this process.
pub fn env() -> &'static Env {
    ENV.get_or_init(bring_up)
}

fn bring_up() -> Env {
    let root = repo_root();
    let state = std::env::var_os("BERTH_ENV_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("tests/env/.state"));
    fs::create_dir_all(&state).expect("create env state dir");

    // Several test binaries may start at once; one of them brings the peers up while
    // the others wait on the lock, then find them healthy and attach.
    let lock = File::create(state.join(".harness.lock")).expect("create harness lock");
    lock.lock().expect("lock harness");
    let up = Command::new(root.join("tests/env/up"))
        .env("BERTH_ENV_STATE", &state)
        .output()
        .expect("run tests/env/up");
    if !up.status.success() {
        panic!(
            "tests/env/up failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            up.status,
            String::from_utf8_lossy(&up.stdout),
            String::from_utf8_lossy(&up.stderr)
        );
    }
    let (berth_bin, agent_bin) = build_binaries();
    lock.unlock().expect("unlock harness");

    let vars = read_env_file(&state.join("env"));
    let var = |name: &str| -> String {
        vars.get(name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing from {}", state.join("env").display()))
    };
    let path = |name: &str| PathBuf::from(var(name));
    Env {
        kubeconfig: path("KUBECONFIG"),
        apiserver: var("BERTH_KUBE_APISERVER"),
        registry_dist: var("BERTH_REGISTRY_DIST"),
        registry_dist_tls: var("BERTH_REGISTRY_DIST_TLS"),
        registry_oci: var("BERTH_REGISTRY_OCI"),
        registry_oci_tls: var("BERTH_REGISTRY_OCI_TLS"),
        registry_user: var("BERTH_REGISTRY_USER"),
        registry_password: var("BERTH_REGISTRY_PASSWORD"),
        ca_file: path("BERTH_CA_FILE"),
        cosign_v2: path("BERTH_COSIGN_V2"),
        cosign_v3: path("BERTH_COSIGN_V3"),
        flux: path("BERTH_FLUX"),
        oras: path("BERTH_ORAS"),
        kubectl: path("BERTH_KUBECTL"),
        never_ready_image: var("BERTH_KWOK_NEVER_READY_IMAGE"),
        peer_versions: path("BERTH_PEER_VERSIONS"),
        state,
        berth_bin,
        agent_bin,
        docker_config: tempfile::tempdir().expect("temp docker config"),
    }
}

/// Reads the `export NAME=value` file by letting bash evaluate it, so quoting rules are
/// bash's own.
fn read_env_file(file: &Path) -> HashMap<String, String> {
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"set -a; source "$1" >/dev/null; env -0"#)
        .arg("_")
        .arg(file)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("source env file");
    assert!(out.status.success(), "cannot source {}", file.display());
    out.stdout
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Builds both binaries (a no-op when they are fresh) and returns their paths, next to
/// this test executable's profile directory.
fn build_binaries() -> (PathBuf, PathBuf) {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(repo_root())
        .args(["build", "--bins", "-p", "berth", "-p", "berth-agent"]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let out = build.output().expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build of the binaries failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (profile_dir.join("berth"), profile_dir.join("berth-agent"))
}

impl Env {
    /// `berth` with an empty Docker config and this environment's kubeconfig.
    pub fn berth(&self) -> Command {
        self.tool(&self.berth_bin)
    }

    /// `berth-agent` with an empty Docker config and this environment's kubeconfig.
    pub fn berth_agent(&self) -> Command {
        self.tool(&self.agent_bin)
    }

    /// `kubectl` against the test API server.
    pub fn kubectl_cmd(&self) -> Command {
        self.tool(&self.kubectl)
    }

    /// Any program, with this environment's kubeconfig and an empty Docker config.
    pub fn tool(&self, program: impl AsRef<Path>) -> Command {
        let mut cmd = Command::new(program.as_ref());
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("DOCKER_CONFIG", self.docker_config.path())
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("BERTH_REGISTRY_USER")
            .env_remove("BERTH_REGISTRY_PASSWORD")
            .env_remove("COSIGN_PASSWORD");
        cmd
    }

    /// A fresh namespace, deleted (without waiting) when the guard drops.
    pub fn namespace(&'static self, prefix: &str) -> Namespace {
        let name = unique_name(prefix, 63);
        run_ok(self.kubectl_cmd().args(["create", "namespace", &name]));
        Namespace { env: self, name }
    }

    /// A repository path no other test uses, e.g. `e2e/push-basic-1a2b3c`.
    pub fn repo(&self, prefix: &str) -> String {
        format!("e2e/{}", unique_name(prefix, 120))
    }

    /// The peers' versions as `name version` lines.
    pub fn peer_versions(&self) -> String {
        fs::read_to_string(&self.peer_versions).expect("read peer versions")
    }

    /// `kubectl get KIND NAME [-n NS] -o json` with managed fields; `None` when it does not exist.
    pub fn object(&self, kind: &str, ns: Option<&str>, name: &str) -> Option<serde_json::Value> {
        let mut cmd = self.kubectl_cmd();
        cmd.args([
            "get",
            kind,
            name,
            "-o",
            "json",
            "--show-managed-fields",
            "--ignore-not-found",
        ]);
        if let Some(ns) = ns {
            cmd.args(["-n", ns]);
        }
        let out = run_ok(&mut cmd);
        if out.trim().is_empty() {
            None
        } else {
            Some(serde_json::from_str(&out).expect("kubectl get prints JSON"))
        }
    }

    /// The ConfigMaps in `ns` that belong to any ApplySet, as `configmap/NAME` lines.
    pub fn applyset_configmaps(&self, ns: &str) -> String {
        run_ok(self.kubectl_cmd().args([
            "get",
            "configmaps",
            "-n",
            ns,
            "-l",
            APPLYSET_PART_OF,
            "-o",
            "name",
        ]))
    }

    /// The Source CRD as `berth-agent crd` prints it, applied and Established.
    pub fn install_source_crd(&self) {
        let crd = run_ok(self.berth_agent().arg("crd"));
        let dir = manifests(&[("crd.yaml", crd)]);
        run_ok(
            self.kubectl_cmd()
                .args(["apply", "--server-side", "--force-conflicts", "-f"])
                .arg(dir.path().join("crd.yaml")),
        );
        run_ok(self.kubectl_cmd().args([
            "wait",
            "--for=condition=Established",
            "crd/sources.berth.dev",
            "--timeout=30s",
        ]));
    }

    /// A cosign key pair written by `berth keygen` (password "e2e") as `DIR/NAME.key`
    /// and `DIR/NAME.pub`; returns (private, public).
    pub fn keypair(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let prefix = dir.join(name);
        run_ok(
            self.berth()
                .env("COSIGN_PASSWORD", "e2e")
                .arg("keygen")
                .arg("--output-key-prefix")
                .arg(&prefix),
        );
        (prefix.with_extension("key"), prefix.with_extension("pub"))
    }

    /// berth's global flags for one of the test registries: the CA and credentials for the TLS
    /// ones, `--insecure` (plain HTTP) for the others.
    pub fn berth_flags(&self, tls: bool) -> Vec<String> {
        if tls {
            vec![
                "--ca-file".into(),
                self.ca_file.display().to_string(),
                "--creds".into(),
                format!("{}:{}", self.registry_user, self.registry_password),
            ]
        } else {
            vec!["--insecure".into()]
        }
    }

    /// oras's flags for one of the test registries: the CA and credentials for the TLS ones,
    /// `--plain-http` for the others.
    pub fn oras_flags(&self, tls: bool) -> Vec<String> {
        if tls {
            vec![
                "--ca-file".into(),
                self.ca_file.display().to_string(),
                "-u".into(),
                self.registry_user.clone(),
                "-p".into(),
                self.registry_password.clone(),
            ]
        } else {
            vec!["--plain-http".into()]
        }
    }
}

/// The label every member of an ApplySet carries (its value is the set's id).
pub const APPLYSET_PART_OF: &str = "applyset.kubernetes.io/part-of";

/// A fresh temp dir holding `files` (name, content), e.g. manifests to apply or push.
pub fn manifests(files: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, content) in files {
        fs::write(dir.path().join(name), content).expect("write manifest");
    }
    dir
}

/// A namespace owned by one test.
#[derive(Debug)]
pub struct Namespace {
    env: &'static Env,
    name: String,
}

impl Namespace {
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self
            .env
            .kubectl_cmd()
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .output();
    }
}

/// `prefix-xxxxxxxx`, lower-case, unique across processes and calls, at most `max` long.
pub fn unique_name(prefix: &str, max: usize) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mix = (nanos as u64) ^ (u64::from(std::process::id()) << 32) ^ (u64::from(n) << 48);
    let suffix = format!(
        "{:08x}",
        (mix ^ (mix >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32
    );
    let prefix: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(max.saturating_sub(suffix.len() + 1))
        .collect();
    format!("{prefix}-{suffix}")
}

/// What a finished command left behind.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    /// The exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion, capturing its output.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(cmd)));
    Output {
        status: out.status,
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    if !out.status.success() {
        panic!(
            "`{}` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            describe(cmd),
            out.status,
            out.stdout,
            out.stderr
        );
    }
    out.stdout
}

/// Runs a command that must fail; returns what it printed.
pub fn run_fail(cmd: &mut Command) -> Output {
    let out = run(cmd);
    if out.status.success() {
        panic!(
            "`{}` succeeded but should have failed:\n--- stdout\n{}\n--- stderr\n{}",
            describe(cmd),
            out.stdout,
            out.stderr
        );
    }
    out
}

impl Env {
    /// The exact command line (program first) the shared environment started `peer` with,
    /// read from the running process (`$STATE/pids/<peer>.pid`), so a test can start a
    /// private twin of it with the same binary and flags.
    pub fn peer_command_line(&self, peer: &str) -> Vec<String> {
        let pid_file = self.state.join("pids").join(format!("{peer}.pid"));
        let text = fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("read {}: {e}", pid_file.display()));
        let pid = text
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("{} is empty", pid_file.display()));
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_else(|e| panic!("peer {peer} (pid {pid}) is not running: {e}"));
        cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    /// The shared admin kubeconfig, pointed at another API server address (`https://…`).
    pub fn kubeconfig_for(&self, server: &str, dest: &Path) {
        let text = fs::read_to_string(&self.kubeconfig).expect("read the shared kubeconfig");
        assert!(
            text.contains(&self.apiserver),
            "{} does not name {}",
            self.kubeconfig.display(),
            self.apiserver
        );
        fs::write(dest, text.replace(&self.apiserver, server)).expect("write kubeconfig");
    }
}

/// A free TCP port on 127.0.0.1: bound, noted and released, for a process the test starts
/// next (the kernel does not hand the same ephemeral port out again soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Polls `check` every 100 ms until it holds; panics naming `what` (and `context()`) after
/// `timeout`. Returns how long it took.
pub fn wait_for(
    what: &str,
    timeout: std::time::Duration,
    check: impl FnMut() -> bool,
    context: impl Fn() -> String,
) -> std::time::Duration {
    poll_until(
        what,
        timeout,
        std::time::Duration::from_millis(100),
        check,
        context,
    )
}

/// Polls `check` every `every` until it holds; panics naming `what` (and `context()`, a log or
/// an object's status) once `timeout` has passed. Only a check begun within `timeout` counts.
/// Returns how long it took.
pub fn poll_until(
    what: &str,
    timeout: std::time::Duration,
    every: std::time::Duration,
    mut check: impl FnMut() -> bool,
    context: impl Fn() -> String,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return start.elapsed();
        }
        std::thread::sleep(every);
    }
    panic!(
        "timed out after {timeout:?} waiting for {what}\n{}",
        context()
    );
}

/// A peer process one test starts for itself (a private API server, a private registry),
/// never one of the shared peers. Output goes to a log file; the process is SIGKILLed and
/// reaped when the guard drops, also when the test panics, and it is started under
/// `setpriv --pdeathsig SIGKILL` so it dies with the test process even if that is killed.
#[derive(Debug)]
pub struct PrivatePeer {
    name: String,
    child: Option<std::process::Child>,
    log: PathBuf,
}

impl PrivatePeer {
    /// Starts `argv` (program first), appending its output to `log`.
    pub fn start(name: &str, argv: &[String], log: &Path) -> PrivatePeer {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open peer log");
        let err = out.try_clone().expect("clone peer log");
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "SIGKILL", "--"])
            .args(argv)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start private {name} ({}): {e}", argv.join(" ")));
        PrivatePeer {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    /// Whether the process is still running (not exited, not killed).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("poll peer").is_none())
    }

    /// SIGKILL, then reap: the process and its sockets are gone when this returns.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The last `lines` lines of the peer's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        format!(
            "--- last lines of private {} log {}\n{}",
            self.name,
            self.log.display(),
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }
}

impl Drop for PrivatePeer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A program a test starts and watches (an agent under test, mostly): its stdout discarded, its
/// stderr in the file `log`, SIGKILLed and reaped when dropped.
#[derive(Debug)]
pub struct Process {
    child: Option<std::process::Child>,
    log: PathBuf,
}

impl Process {
    pub fn spawn(cmd: &mut Command, log: PathBuf) -> Process {
        let file = File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(cmd)));
        Process {
            child: Some(child),
            log,
        }
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the process was killed").id()
    }

    /// Still running (not exited, not killed)?
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The exit status if the process ends within `timeout`; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("the process was killed");
        let start = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// SIGKILL, then reap: no chance to release anything, as when a node dies.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A kube-apiserver of one test's own: the shared one's binary and flags (plus `extra` flags)
/// on its own loopback port, with the shared etcd, certificates and service-account keys, as
/// a [`PrivatePeer`] (SIGKILLed when dropped). `kubeconfig` is the shared admin kubeconfig
/// pointed at it.
#[derive(Debug)]
pub struct PrivateApiServer {
    env: &'static Env,
    argv: Vec<String>,
    /// `https://127.0.0.1:PORT`
    pub url: String,
    pub kubeconfig: PathBuf,
    log: PathBuf,
    process: Option<PrivatePeer>,
    _dir: tempfile::TempDir,
}

/// How long a fresh kube-apiserver may take to answer /readyz (the env's own start budget is
/// 20 s; a loaded machine gets more).
const PRIVATE_APISERVER_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);

impl PrivateApiServer {
    /// Starts it and waits until it answers /readyz.
    pub fn start(env: &'static Env, extra: &[String]) -> PrivateApiServer {
        let port = free_port();
        let mut argv = env.peer_command_line("kube-apiserver");
        let i = argv
            .iter()
            .position(|a| a == "--secure-port")
            .expect("the shared apiserver sets --secure-port");
        argv[i + 1] = port.to_string();
        argv.extend_from_slice(extra);
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("https://127.0.0.1:{port}");
        let kubeconfig = dir.path().join("kubeconfig");
        env.kubeconfig_for(&url, &kubeconfig);
        let log = dir.path().join("kube-apiserver.log");
        let mut api = PrivateApiServer {
            env,
            argv,
            url,
            kubeconfig,
            log,
            process: None,
            _dir: dir,
        };
        api.boot();
        api
    }

    /// Starts the process and waits until it answers /readyz.
    fn boot(&mut self) {
        let started = std::time::Instant::now();
        self.process = Some(PrivatePeer::start("kube-apiserver", &self.argv, &self.log));
        loop {
            if self.ready() {
                eprintln!(
                    "private kube-apiserver {} ready in {:?}",
                    self.url,
                    started.elapsed()
                );
                return;
            }
            let p = self.process.as_mut().expect("started above");
            assert!(
                p.running(),
                "the private kube-apiserver exited during start-up\n{}",
                p.log_tail(40)
            );
            assert!(
                started.elapsed() < PRIVATE_APISERVER_READY_TIMEOUT,
                "the private kube-apiserver {} is not ready after {PRIVATE_APISERVER_READY_TIMEOUT:?}\n{}",
                self.url,
                p.log_tail(40)
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    fn ready(&self) -> bool {
        run(self
            .kubectl()
            .args(["get", "--raw", "/readyz", "--request-timeout=2s"]))
        .status
        .success()
    }

    /// The value of `flag` on its command line (the shared one's, or one of `extra`).
    pub fn flag(&self, flag: &str) -> Option<&str> {
        self.argv
            .iter()
            .position(|a| a == flag)
            .and_then(|i| self.argv.get(i + 1))
            .map(String::as_str)
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill9();
        }
    }

    /// Same binary, flags and port again.
    pub fn restart(&mut self) {
        self.kill9();
        self.boot();
    }

    /// `kubectl` as the cluster admin, through this API server.
    pub fn kubectl(&self) -> Command {
        let mut cmd = self.env.kubectl_cmd();
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process
            .as_ref()
            .map(|p| p.log_tail(lines))
            .unwrap_or_default()
    }
}
