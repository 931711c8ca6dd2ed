//! Artifacts the agent must refuse even when they are correctly signed: tarballs with `../`
//! paths or symlinks, decompression bombs, wrong media types, zero objects. Built by hand
//! (Python's tarfile) and pushed with the real `oras`, signed with `berth sign`, so the
//! signature check passes and the unpack rules are what stops them.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests report failure by panicking

use std::path::{Path, PathBuf};

use berth_e2e::{Env, env, run_fail, run_ok};

const FLUX_CONFIG: &str = "application/vnd.cncf.flux.config.v1+json";
const FLUX_CONTENT: &str = "application/vnd.cncf.flux.content.v1.tar+gzip";

/// Runs a Python snippet that writes `layer.tar.gz` into `dir`.
fn build_layer(dir: &Path, script: &str) -> PathBuf {
    let layer = dir.join("layer.tar.gz");
    let prelude = "import io, sys, tarfile, gzip\nout = sys.argv[1]\n";
    run_ok(std::process::Command::new("python3").arg("-c").arg(format!("{prelude}{script}")).arg(&layer));
    layer
}

/// Pushes a one-layer artifact with `oras` (plain HTTP registry) and signs it with `berth`;
/// returns `oci://…@sha256:…` and the public key.
fn push_signed(env: &Env, dir: &Path, layer: &Path, layer_type: &str) -> (String, PathBuf) {
    let repo = env.repo("agent-hostile");
    let config = dir.join("config.json");
    std::fs::write(&config, "{}").unwrap();
    let target = format!("{}/{repo}:v1", env.registry_dist);
    let out = run_ok(
        env.tool(&env.oras)
            .current_dir(dir)
            .args(["push", "--plain-http", "--format", "json", &target, "--config"])
            .arg(format!("config.json:{FLUX_CONFIG}"))
            .arg(format!("{}:{layer_type}", layer.file_name().unwrap().to_string_lossy())),
    );
    let pushed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let digest = pushed["digest"].as_str().unwrap().to_string();
    let (key, public) = env.keypair(dir, "key");
    let at = format!("oci://{}/{repo}@{digest}", env.registry_dist);
    run_ok(env.berth().env("COSIGN_PASSWORD", "e2e").args(["sign", &at, "--insecure", "--key"]).arg(key));
    (at, public)
}

/// A signed one-layer artifact whose layer `script` builds (see [`build_layer`]): `berth-agent
/// apply` of it fails, names the problem (`expect`) and applies nothing.
fn assert_refused(script: &str, layer_type: &str, expect: &str) {
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    let layer = build_layer(dir.path(), script);
    let (at, public) = push_signed(env, dir.path(), &layer, layer_type);
    refused(env, &at, &public, expect);
}

/// `berth-agent apply` of a hostile artifact: fails, names the problem, applies nothing.
fn refused(env: &'static Env, at: &str, public: &Path, expect: &str) {
    let ns = env.namespace("agent-hostile");
    let mut cmd = env.berth_agent();
    cmd.args(["apply", at, "--insecure", "-n", ns.name(), "--name", "h", "--key"]).arg(public);
    let out = run_fail(&mut cmd);
    assert!(out.stderr.contains(expect), "expected {expect:?} in: {}", out.stderr);
    let cms = env.applyset_configmaps(ns.name());
    assert!(cms.trim().is_empty(), "a hostile artifact applied objects: {cms}");
}

const CM: &str = "b'apiVersion: v1\\nkind: ConfigMap\\nmetadata: {name: ok}\\ndata: {a: b}\\n'";

#[test]
fn a_path_escaping_the_artifact_is_refused() {
    assert_refused(
        &format!(
            "with tarfile.open(out, 'w:gz') as t:\n  for name in ['ok.yaml', '../escape.yaml']:\n    data = {CM}\n    i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))\n"
        ),
        FLUX_CONTENT,
        "'..' is not allowed",
    );
}

#[test]
fn a_symlink_in_the_artifact_is_refused() {
    assert_refused(
        &format!(
            "with tarfile.open(out, 'w:gz') as t:\n  data = {CM}\n  i = tarfile.TarInfo('ok.yaml'); i.size = len(data); t.addfile(i, io.BytesIO(data))\n  l = tarfile.TarInfo('link.yaml'); l.type = tarfile.SYMTYPE; l.linkname = '/etc/passwd'; t.addfile(l)\n"
        ),
        FLUX_CONTENT,
        "links are not allowed",
    );
}

#[test]
fn a_decompression_bomb_stops_at_the_limit() {
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    // 1 GiB of zeros in one entry compresses to about 1 MiB.
    let layer = build_layer(
        dir.path(),
        "class Zeros(io.RawIOBase):\n  def __init__(self, n): self.n = n\n  def readable(self): return True\n  def readinto(self, b):\n    k = min(len(b), self.n); b[:k] = bytes(k); self.n -= k; return k\nsize = 1 << 30\nwith tarfile.open(out, 'w:gz', compresslevel=9) as t:\n  i = tarfile.TarInfo('bomb.yaml'); i.size = size; t.addfile(i, io.BufferedReader(Zeros(size), 1 << 20))\n",
    );
    assert!(std::fs::metadata(&layer).unwrap().len() < 8 << 20, "the bomb should be small compressed");
    let (at, public) = push_signed(env, dir.path(), &layer, FLUX_CONTENT);
    refused(env, &at, &public, "exceeds the limit");
}

#[test]
fn a_layer_of_the_wrong_media_type_is_refused() {
    assert_refused(
        &format!(
            "with tarfile.open(out, 'w:gz') as t:\n  data = {CM}\n  i = tarfile.TarInfo('ok.yaml'); i.size = len(data); t.addfile(i, io.BytesIO(data))\n"
        ),
        "application/vnd.example.not-manifests",
        "media type",
    );
}

#[test]
fn an_artifact_without_objects_is_refused() {
    assert_refused(
        "with tarfile.open(out, 'w:gz') as t:\n  data = b'# nothing here\\n'\n  i = tarfile.TarInfo('empty.yaml'); i.size = len(data); t.addfile(i, io.BytesIO(data))\n",
        FLUX_CONTENT,
        "no objects",
    );
}
