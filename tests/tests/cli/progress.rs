//! Large uploads: on a terminal `berth push` shows a progress bar; without one (CI, pipes)
//! it is silent apart from its summary, and `--output json` is one JSON object and nothing
//! else. The terminal is a real pseudo-terminal (util-linux `script`).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{Reg, json};
use berth_e2e::{env, run, run_ok};

/// Incompressible bytes per ConfigMap (base64 of random data compresses to ~3/4, so the
/// gzip layer ends up several MiB: above berth's 4 MiB bar threshold).
const RANDOM_BYTES_PER_FILE: usize = 768 * 1024;
const FILES: usize = 8;
/// berth shows no bar below this layer size (cli/src/cmd/mod.rs `PROGRESS_MIN_BYTES`).
const PROGRESS_MIN_BYTES: u64 = 4 * 1024 * 1024;

/// A directory of ConfigMaps holding fresh random data (new blobs on every run).
fn large_manifests() -> tempfile::TempDir {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let mut random = std::fs::File::open("/dev/urandom").unwrap();
    for i in 0..FILES {
        let mut bytes = vec![0u8; RANDOM_BYTES_PER_FILE];
        random.read_exact(&mut bytes).unwrap();
        let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
        std::fs::write(
            dir.path().join(format!("blob-{i}.yaml")),
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: blob-{i}\nbinaryData:\n  data: {data}\n"),
        )
        .unwrap();
    }
    dir
}

/// The compressed layer size of the artifact `path` makes (from `berth pack`'s layout).
fn layer_size(path: &Path) -> u64 {
    let out = tempfile::tempdir().unwrap();
    run_ok(
        env()
            .berth()
            .args(["pack", path.to_str().unwrap(), "-o"])
            .arg(out.path()),
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let blob = |d: &str| out.path().join("blobs").join(d.replace(':', "/"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(digest)).unwrap()).unwrap();
    manifest["layers"][0]["size"].as_u64().unwrap()
}

/// Shell-quotes one word for `script -c`.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Runs `cmd` with stdin, stdout and stderr on a fresh pseudo-terminal (`script`), as on a
/// user's terminal; returns the exit code and everything the terminal showed.
fn on_terminal(cmd: &Command) -> (Option<i32>, String) {
    let mut line = quote(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(&a.to_string_lossy()));
    }
    let mut script = Command::new("script");
    script
        .args(["--quiet", "--return", "--command", &line, "/dev/null"])
        .stdin(Stdio::null());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    // A terminal that can redraw a line, as a user's has.
    script.env("TERM", "xterm-256color");
    let out = run(&mut script);
    (out.code, out.stdout + &out.stderr)
}

/// The berth command pushing `dir` to `reference` on the plain distribution registry.
fn push(reference: &str, dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Reg::dist().berth(&["push", reference, dir.to_str().unwrap()]);
    cmd.args(extra);
    cmd
}

#[test]
fn a_large_push_on_a_terminal_shows_a_progress_bar_then_clears_it() {
    let reg = Reg::dist();
    let dir = large_manifests();
    let size = layer_size(dir.path());
    assert!(
        size > PROGRESS_MIN_BYTES + 1024 * 1024,
        "the layer ({size} bytes) must be well above the bar threshold"
    );
    let repo = env().repo("progress-tty");
    let reference = reg.oci_ref(&repo, "v1");

    let (code, screen) = on_terminal(&push(&reference, dir.path(), &[]));
    assert_eq!(code, Some(0), "{screen}");
    let mib = format!("{:.2} MiB", size as f64 / (1024.0 * 1024.0));
    assert!(
        screen.contains("pushing ["),
        "no progress bar on the terminal:\n{screen:?}"
    );
    assert!(
        screen.contains(&format!("/{mib}")),
        "the bar shows the layer's total ({mib}):\n{screen:?}"
    );
    assert!(
        screen.contains(&format!("{mib}/{mib}")),
        "the bar reaches the whole layer:\n{screen:?}"
    );
    // Redrawn in place (carriage return + erase line), and erased before the summary.
    assert!(
        screen.matches("\r\x1b[2K").count() >= 2,
        "the bar is not redrawn in place:\n{screen:?}"
    );
    let summary = screen.find("pushed sha256:").expect("summary line");
    assert!(
        screen[..summary].rfind("\x1b[2K").is_some(),
        "the bar is not cleared before the summary:\n{screen:?}"
    );
    assert!(
        !screen[summary..].contains("pushing ["),
        "the bar is drawn after the summary:\n{screen:?}"
    );
    assert_eq!(reg.tags(&repo), ["v1"]);
}

#[test]
fn a_small_push_or_json_output_on_a_terminal_draws_no_bar() {
    let reg = Reg::dist();
    // Below the threshold: too quick for a bar to help.
    let repo = env().repo("progress-small");
    let (code, screen) = on_terminal(&push(&reg.oci_ref(&repo, "v1"), &crate::common::app(), &[]));
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        !screen.contains("pushing [") && !screen.contains('\x1b'),
        "a bar for a small layer:\n{screen:?}"
    );
    assert!(screen.contains("pushed sha256:"), "{screen:?}");

    // JSON output is for scripts even on a terminal: the screen holds the JSON only.
    let dir = large_manifests();
    let repo = env().repo("progress-tty-json");
    let (code, screen) = on_terminal(&push(
        &reg.oci_ref(&repo, "v1"),
        dir.path(),
        &["--output", "json"],
    ));
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        !screen.contains("pushing [") && !screen.contains('\x1b'),
        "a bar with --output json:\n{screen:?}"
    );
    let v = json(&screen.replace("\r\n", "\n"));
    assert!(v["digest"].as_str().unwrap().starts_with("sha256:"), "{v}");
}

#[test]
fn a_large_push_without_a_terminal_prints_only_its_summary() {
    let reg = Reg::dist();
    let dir = large_manifests();
    assert!(layer_size(dir.path()) > PROGRESS_MIN_BYTES);

    // Text: stdout is the pinned reference, stderr exactly one summary line.
    let repo = env().repo("progress-pipe");
    let reference = reg.oci_ref(&repo, "v1");
    let out = run(&mut push(&reference, dir.path(), &[]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let digest = reg.oras_digest(&repo, "v1");
    assert_eq!(out.stdout, format!("{reference}@{digest}\n"));
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stderr holds more than the summary: {:?}",
        out.stderr
    );
    assert!(
        lines[0].starts_with(&format!("pushed {digest} (")),
        "{:?}",
        out.stderr
    );
    assert!(
        !out.stderr.contains('\x1b') && !out.stderr.contains('\r'),
        "terminal control codes: {:?}",
        out.stderr
    );

    // JSON: stdout is exactly one JSON object, stderr is empty.
    let repo = env().repo("progress-pipe-json");
    let out = run(&mut push(
        &reg.oci_ref(&repo, "v1"),
        dir.path(),
        &["--output", "json"],
    ));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stderr, "", "stderr must be empty with --output json");
    let values: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&out.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        values.len(),
        1,
        "stdout must be one JSON document: {}",
        out.stdout
    );
    let v = &values[0];
    assert!(v.is_object(), "{v}");
    assert_eq!(v["digest"], digest, "same files, same digest");
    assert_eq!(v["tag"], "v1");
    assert_eq!(v["repository"], format!("{}/{repo}", reg.host));
}
