//! `berth pack` as a user runs it, offline: the same manifests give the same digest however
//! the tree was written, metadata changes the digest, and bad input exits 3.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn berth() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.env_remove("SOURCE_DATE_EPOCH");
    cmd
}

fn testdata(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(path)
}

fn pack(dir: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Output {
    let out = tempfile::tempdir().unwrap();
    berth()
        .arg("pack")
        .arg(dir)
        .arg("-o")
        .arg(out.path().join("layout"))
        .args(extra)
        .envs(envs.iter().copied())
        .output()
        .unwrap()
}

fn digest(out: &Output) -> String {
    assert!(
        out.status.success(),
        "pack failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8(out.stdout.clone())
        .unwrap()
        .trim()
        .to_string();
    assert!(
        s.starts_with("sha256:") && s.len() == 71,
        "not a digest: {s}"
    );
    s
}

fn files_of(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// Copy the tree file by file in `order`, with the given mode on every file.
fn copy_tree(
    files: &[(PathBuf, Vec<u8>)],
    order: impl Iterator<Item = usize>,
    mode: u32,
) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for i in order {
        let (rel, bytes) = &files[i];
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    dir
}

#[test]
fn same_manifests_written_differently_pack_to_the_same_digest() {
    let files = files_of(&testdata("app"));
    let forward = copy_tree(&files, 0..files.len(), 0o644);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let backward = copy_tree(&files, (0..files.len()).rev(), 0o600);
    let original = digest(&pack(&testdata("app"), &[], &[]));
    assert_eq!(digest(&pack(forward.path(), &[], &[])), original);
    assert_eq!(digest(&pack(backward.path(), &[], &[])), original);
}

#[test]
fn created_comes_from_the_flag_or_source_date_epoch_never_the_clock() {
    let app = testdata("app");
    let default = digest(&pack(&app, &[], &[]));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(
        digest(&pack(&app, &[], &[])),
        default,
        "the wall clock leaked into the digest"
    );
    let epoch = digest(&pack(&app, &[], &[("SOURCE_DATE_EPOCH", "1714564800")]));
    let flag = digest(&pack(&app, &["--created", "2024-05-01T12:00:00Z"], &[]));
    assert_ne!(epoch, default);
    assert_eq!(
        epoch, flag,
        "SOURCE_DATE_EPOCH and --created of the same instant must agree"
    );
    let revision = digest(&pack(&app, &["--revision", "main@sha1:abc"], &[]));
    assert_ne!(revision, default);
}

#[test]
fn invalid_input_exits_3_with_file_and_hint() {
    for (case, needle) in [
        ("invalid-yaml", "deploy.yaml:14"),
        ("duplicate-object", "first.yaml:1"),
        ("plain-secret", "secret.yaml:1"),
    ] {
        let out = pack(&testdata(&format!("invalid/{case}")), &[], &[]);
        assert_eq!(out.status.code(), Some(3), "{case}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{case}: {stderr}");
        assert!(
            stderr.lines().any(|l| l.starts_with("hint: ")),
            "{case}: {stderr}"
        );
    }
}

#[test]
fn help_documents_exit_codes_and_usage_errors_exit_2() {
    let help = berth().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for code in [
        "3  invalid input",
        "5  authentication",
        "7  verification failed",
    ] {
        assert!(text.contains(code), "--help lacks '{code}'");
    }
    let bad = berth()
        .args(["push", "not-a-reference", "."])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
