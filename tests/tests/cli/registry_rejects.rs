//! A real registry refuses the manifest of `berth push`: private registries started by the
//! test in read-only mode over storage that a writable twin filled first, so the blobs are
//! already there and only the manifest PUT reaches the refusal. berth must exit non-zero
//! naming the registry, the reference and the registry's own reason, and tag nothing.
//! Also the registry errors of the other commands that `registry_errors.rs` does not cover.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::common::{Reg, app, json};
use berth_e2e::{PrivatePeer, env, free_port, run, run_ok, wait_for};

/// `GET /v2/` answers 200: the registry is serving.
fn serving(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

/// A registry process of this test's own on `port`, killed on drop.
struct Private {
    _peer: PrivatePeer,
    host: String,
    port: u16,
    log: std::path::PathBuf,
}

impl Private {
    fn start(name: &str, argv: Vec<String>, port: u16, dir: &Path) -> Private {
        let log = dir.join(format!("{name}.log"));
        let mut peer = PrivatePeer::start(name, &argv, &log);
        wait_for(
            &format!("private {name} on port {port}"),
            Duration::from_secs(30),
            || serving(port),
            || peer.log_tail(30),
        );
        assert!(peer.running(), "{}", peer.log_tail(30));
        Private {
            _peer: peer,
            host: format!("127.0.0.1:{port}"),
            port,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn reg(&self, name: &'static str) -> Reg {
        Reg {
            name,
            host: self.host.clone(),
            tls: false,
        }
    }
}

/// The shared environment's distribution binary (Debian's docker-registry), configured with
/// `storage` and, when `read_only`, distribution's maintenance read-only mode.
fn distribution(dir: &Path, name: &str, storage: &Path, read_only: bool) -> Private {
    let bin = env().peer_command_line("registry-dist").remove(0);
    let port = free_port();
    let config = dir.join(format!("{name}.yml"));
    let maintenance = if read_only {
        "\n  maintenance:\n    readonly: {enabled: true}"
    } else {
        ""
    };
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog: {{level: info}}\nstorage:\n  filesystem: {{rootdirectory: {}}}{maintenance}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        ),
    )
    .unwrap();
    Private::start(
        name,
        vec![bin, "serve".into(), config.display().to_string()],
        port,
        dir,
    )
}

/// The shared environment's olareg binary over `storage`, `--store-ro` when `read_only`.
fn olareg(dir: &Path, name: &str, storage: &Path, read_only: bool) -> Private {
    let bin = env().peer_command_line("registry-oci").remove(0);
    let port = free_port();
    let mut argv = vec![
        bin,
        "serve".into(),
        "--addr".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
    ];
    argv.extend(["--dir".into(), storage.display().to_string()]);
    if read_only {
        argv.push("--store-ro".into());
    }
    Private::start(name, argv, port, dir)
}

/// The digest `berth push` would produce for the example app at `revision` (packing is
/// reproducible, so pack computes it without a registry).
fn packed_digest(revision: &str) -> String {
    let out = tempfile::tempdir().unwrap();
    let stdout = run_ok(
        env()
            .berth()
            .args(["pack", app().to_str().unwrap(), "-o"])
            .arg(out.path())
            .args(["--revision", revision, "--output", "json"]),
    );
    json(&stdout)["digest"]
        .as_str()
        .expect("pack prints the digest")
        .to_string()
}

const SEED_REVISION: &str = "main@sha1:1111111111111111111111111111111111111111";
const NEW_REVISION: &str = "main@sha1:2222222222222222222222222222222222222222";

/// Seeds `repo` through the writable registry (tag `seed`), then pushes the same files with
/// another revision through the read-only one: same layer and config blobs (already
/// there), a new manifest. Returns the failed push's output and the refused digest.
fn push_new_manifest_to_read_only(
    writable: &Private,
    read_only: &Private,
    repo: &str,
) -> (berth_e2e::Output, String) {
    run_ok(&mut writable.reg("writable").berth(&[
        "push",
        &format!("oci://{}/{repo}:seed", writable.host),
        app().to_str().unwrap(),
        "--revision",
        SEED_REVISION,
    ]));
    let refused_digest = packed_digest(NEW_REVISION);
    assert_ne!(
        refused_digest,
        packed_digest(SEED_REVISION),
        "the new revision must make a new manifest"
    );
    let out = run(&mut read_only.reg("read-only").berth(&[
        "push",
        &format!("oci://{}/{repo}:v2", read_only.host),
        app().to_str().unwrap(),
        "--revision",
        NEW_REVISION,
    ]));
    (out, refused_digest)
}

/// Nothing was tagged and the refused manifest is not stored, asked independently (oras)
/// and through berth (`inspect` of the digest answers "not found").
fn assert_nothing_stored(writable: &Private, repo: &str, refused_digest: &str) {
    assert_eq!(
        writable.reg("writable").tags(repo),
        ["seed"],
        "the refused push left a tag behind"
    );
    let inspect = run(&mut writable.reg("writable").berth(&[
        "inspect",
        &format!("oci://{}/{repo}@{refused_digest}", writable.host),
    ]));
    assert_eq!(
        inspect.code,
        Some(6),
        "the refused manifest is stored: {}{}",
        inspect.stdout,
        inspect.stderr
    );
}

#[test]
fn distribution_in_read_only_mode_refuses_the_manifest_and_push_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    std::fs::create_dir(&storage).unwrap();
    let writable = distribution(dir.path(), "distribution-rw", &storage, false);
    let read_only = distribution(dir.path(), "distribution-ro", &storage, true);
    let repo = env().repo("rejects-dist");

    let (out, refused_digest) = push_new_manifest_to_read_only(&writable, &read_only, &repo);
    assert_eq!(out.code, Some(4), "registry errors exit 4: {}", out.stderr);
    let error = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    assert!(
        error.contains(&format!("registry {}", read_only.host)) && error.contains("rejected"),
        "names the registry: {error}"
    );
    assert!(
        error.contains(&format!("manifest {repo}:v2")),
        "names the reference: {error}"
    );
    // distribution in read-only mode has no PUT route for manifests: its answer is 405.
    assert!(
        error.contains("HTTP 405") && error.contains("Method not allowed"),
        "gives the registry's reason: {error}"
    );
    assert!(out.stderr.contains("hint: "), "{}", out.stderr);
    assert!(
        out.stdout.trim().is_empty(),
        "no reference printed for a failed push: {}",
        out.stdout
    );

    // The refusal was the manifest PUT itself: no blob upload was even tried.
    let log = read_only.log();
    assert!(
        log.contains(&format!("\"PUT /v2/{repo}/manifests/v2 HTTP/1.1\" 405")),
        "no refused manifest PUT in the log:\n{log}"
    );
    assert!(
        !log.contains(&format!("/v2/{repo}/blobs/uploads/")),
        "blobs were uploaded although present:\n{log}"
    );
    assert_nothing_stored(&writable, &repo, &refused_digest);
}

#[test]
fn olareg_read_only_store_refuses_the_manifest_and_push_gives_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    std::fs::create_dir(&storage).unwrap();
    let writable = olareg(dir.path(), "olareg-rw", &storage, false);
    let read_only = olareg(dir.path(), "olareg-ro", &storage, true);
    let repo = env().repo("rejects-oci");

    let (out, refused_digest) = push_new_manifest_to_read_only(&writable, &read_only, &repo);
    // olareg answers 403 with the OCI error code DENIED: exit 5 (permission), reported as a
    // denied write with the registry's detail, and a hint that does not blame credentials alone.
    assert_eq!(out.code, Some(5), "{}", out.stderr);
    let error = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    assert!(
        error.contains("denied the write"),
        "says the write was denied: {error}"
    );
    let hint = out
        .stderr
        .lines()
        .find(|l| l.starts_with("hint: "))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    assert!(
        hint.contains("read-only"),
        "the hint names the read-only possibility: {hint}"
    );
    assert!(
        error.contains(&format!("registry {}", read_only.host)),
        "names the registry: {error}"
    );
    assert!(
        error.contains(&format!("manifest {repo}:v2")),
        "names the reference: {error}"
    );
    assert!(
        error.contains("repository is read-only"),
        "gives the registry's reason: {error}"
    );
    assert!(
        out.stdout.trim().is_empty(),
        "no reference printed for a failed push: {}",
        out.stdout
    );
    assert_nothing_stored(&writable, &repo, &refused_digest);
    assert!(
        serving(read_only.port),
        "the refusal took the read-only registry down"
    );
}

#[test]
fn promote_of_an_unknown_digest_exits_6_and_tags_nothing() {
    for reg in [Reg::dist(), Reg::oci_tls()] {
        let repo = env().repo("promote-unknown");
        let missing = format!("oci://{}/{repo}@sha256:{}", reg.host, "0".repeat(64));
        let out = run(&mut reg.berth(&["promote", &missing, &reg.oci_ref(&repo, "production")]));
        assert_eq!(out.code, Some(6), "{}: {}", reg.name, out.stderr);
        assert!(
            out.stderr.contains("not found") && out.stderr.contains(&"0".repeat(64)),
            "{}",
            out.stderr
        );
        assert!(
            reg.tags(&repo).is_empty(),
            "{}: promote of nothing tagged something",
            reg.name
        );
    }
}

#[test]
fn reading_from_an_auth_registry_without_credentials_exits_5() {
    for reg in [Reg::dist_tls(), Reg::oci_tls()] {
        let repo = env().repo("auth-read");
        run_ok(&mut reg.berth(&["push", &reg.oci_ref(&repo, "v1"), app().to_str().unwrap()]));
        let ca = env().ca_file.display().to_string();
        let dest = tempfile::tempdir().unwrap();
        let pull = run(env()
            .berth()
            .args([
                "pull",
                &reg.oci_ref(&repo, "v1"),
                "-o",
                dest.path().to_str().unwrap(),
            ])
            .args(["--ca-file", &ca]));
        assert_eq!(pull.code, Some(5), "{}: {}", reg.name, pull.stderr);
        assert!(
            pull.stderr.contains(&format!("registry {}", reg.host)),
            "{}",
            pull.stderr
        );
        assert!(
            pull.stderr.contains("--creds"),
            "hint should name --creds: {}",
            pull.stderr
        );
        assert!(
            std::fs::read_dir(dest.path()).unwrap().next().is_none(),
            "{}: files pulled without credentials",
            reg.name
        );
        let list = run(env().berth().args([
            "list",
            &format!("oci://{}/{repo}", reg.host),
            "--ca-file",
            &ca,
        ]));
        assert_eq!(list.code, Some(5), "{}: {}", reg.name, list.stderr);
    }
}
