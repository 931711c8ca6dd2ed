//! Artifacts the agent must refuse even when they are correctly signed: tarballs with `../`
//! paths or symlinks, decompression bombs, wrong media types, zero objects. Built by hand
//! (Python's tarfile) and pushed with the real `oras`, signed with `berth sign`, so the
//! signature check passes and the unpack rules are what stops them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_e2e::{Env, env, manifests as manifests_dir, run_fail, run_ok};

const FLUX_CONFIG: &str = "application/vnd.cncf.flux.config.v1+json";
const FLUX_CONTENT: &str = "application/vnd.cncf.flux.content.v1.tar+gzip";

/// Runs a Python snippet that writes `layer.tar.gz` into `dir`.
fn build_layer(dir: &Path, script: &str) -> PathBuf {
    let layer = dir.join("layer.tar.gz");
    let prelude = "import io, sys, tarfile, gzip\nout = sys.argv[1]\n";
    run_ok(
        std::process::Command::new("python3")
            .arg("-c")
            .arg(format!("{prelude}{script}"))
            .arg(&layer),
    );
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
            .args([
                "push",
                "--plain-http",
                "--format",
                "json",
                &target,
                "--config",
            ])
            .arg(format!("config.json:{FLUX_CONFIG}"))
            .arg(format!(
                "{}:{layer_type}",
                layer.file_name().unwrap().to_string_lossy()
            )),
    );
    let pushed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let digest = pushed["digest"].as_str().unwrap().to_string();
    let (key, public) = env.keypair(dir, "key");
    let at = format!("oci://{}/{repo}@{digest}", env.registry_dist);
    run_ok(
        env.berth()
            .env("COSIGN_PASSWORD", "e2e")
            .args(["sign", &at, "--insecure", "--key"])
            .arg(key),
    );
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
    cmd.args([
        "apply",
        at,
        "--insecure",
        "-n",
        ns.name(),
        "--name",
        "h",
        "--key",
    ])
    .arg(public);
    let out = run_fail(&mut cmd);
    assert!(
        out.stderr.contains(expect),
        "expected {expect:?} in: {}",
        out.stderr
    );
    let cms = env.applyset_configmaps(ns.name());
    assert!(
        cms.trim().is_empty(),
        "a hostile artifact applied objects: {cms}"
    );
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
    assert!(
        std::fs::metadata(&layer).unwrap().len() < 8 << 20,
        "the bomb should be small compressed"
    );
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

/// Peak resident memory of a process (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB");
    kib.trim().parse::<u64>().unwrap() * 1024
}

/// Writes a gzipped tar by hand: `entries` is Python building `raw` tar bytes in chunks
/// (`put(header)` and `fill(byte, n)`), so headers may declare what Python's tarfile refuses.
fn raw_layer(dir: &Path, name: &str, entries: &str) -> PathBuf {
    // One directory per layer: oras pushes from it, and each push writes its own key pair there.
    let own = dir.join(name.split('.').next().unwrap_or(name));
    std::fs::create_dir_all(&own).unwrap();
    let layer = own.join(name);
    let prelude = "import io, sys, tarfile, gzip\ng = gzip.open(sys.argv[1], 'wb', compresslevel=9)\ndef put(i): g.write(i.tobuf(tarfile.USTAR_FORMAT))\ndef fill(b, n):\n  chunk = b * (1 << 20)\n  while n > 0:\n    k = min(n, len(chunk)); g.write(chunk[:k]); n -= k\n  g.write(b'\\0' * (-n % 512))\n";
    let ok = format!(
        "data = {CM}\nj = tarfile.TarInfo('ok.yaml'); j.size = len(data); put(j); g.write(data + b'\\0' * (-len(data) % 512))\n"
    );
    let script = format!("{prelude}{entries}{ok}g.write(b'\\0' * 1024)\ng.close()\n");
    run_ok(
        std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&layer),
    );
    layer
}

/// A Source in `ns` named `name` for the artifact `at` (`oci://host/repo@sha256:…`), trusting
/// `public`.
fn hostile_source(env: &Env, ns: &str, name: &str, at: &str, public: &Path) -> String {
    run_ok(
        env.kubectl_cmd()
            .args(["create", "secret", "generic", name, "-n", ns])
            .arg(format!("--from-file=cosign.pub={}", public.display())),
    );
    let (repo, digest) = at.split_once('@').unwrap();
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Source\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  url: {repo}\n  ref: {{digest: \"{digest}\"}}\n  interval: 5s\n  insecure: true\n  verify: {{keys: [{{secretRef: {{name: {name}}}}}]}}\n---\n"
    )
}

#[test]
fn memory_bombs_from_a_signed_tenant_artifact_are_refused_within_the_agents_memory_limit() {
    use crate::common::{
        Agent, condition, configmap, kubectl_apply, push, source_yaml, wait_until,
    };
    let env = env();
    env.install_source_crd();
    let ns = env.namespace("agent-membomb");
    let dir = tempfile::tempdir().unwrap();
    // 250 MiB of YAML comments in one file: about 250 KB gzipped, nothing to parse.
    let comments = raw_layer(
        dir.path(),
        "comments.tar.gz",
        "i = tarfile.TarInfo('bomb.yaml'); i.size = 250 << 20; put(i); fill(b'# ' + b'x' * 61 + b'\\n', i.size)\n",
    );
    // A PAX extension header declaring 200 MiB: the tar crate would buffer all of it.
    let pax = raw_layer(
        dir.path(),
        "pax.tar.gz",
        "i = tarfile.TarInfo('PaxHeaders/ok.yaml'); i.type = tarfile.XHDTYPE; i.size = 200 << 20; put(i); fill(b'9 a=bcdef\\n', i.size)\n",
    );
    // A directory entry declaring 200 MiB of content.
    let directory = raw_layer(
        dir.path(),
        "dir.tar.gz",
        "i = tarfile.TarInfo('big/'); i.type = tarfile.DIRTYPE; i.size = 200 << 20; put(i); fill(b'\\0', i.size)\n",
    );
    let mut sources = String::new();
    for (name, layer) in [
        ("comments", &comments),
        ("pax", &pax),
        ("directory", &directory),
    ] {
        assert!(
            std::fs::metadata(layer).unwrap().len() < 2 << 20,
            "{name} should be small compressed"
        );
        let (at, public) = push_signed(env, layer.parent().unwrap(), layer, FLUX_CONTENT);
        sources.push_str(&hostile_source(env, ns.name(), name, &at, &public));
    }
    let repo = env.repo("agent-membomb-ok");
    let good = manifests_dir(&[("a.yaml", configmap("fine", "1"))]);
    push(env, &env.registry_dist, &repo, "v1", good.path());
    sources.push_str(&source_yaml(env, ns.name(), "good", &repo, "v1", "5s", ""));
    kubectl_apply(env, sources);

    let limit: u64 = 128 << 20;
    let agent = Agent::start(env, "agent", ns.name(), &["--memory-limit", "128Mi"]);
    let reason = |name: &str| {
        condition(env, ns.name(), name, "Ready")
            .map(|c| c.1)
            .unwrap_or_default()
    };
    wait_until(
        "every hostile Source refused and the good one applied",
        Duration::from_secs(90),
        &[&agent],
        || {
            ["comments", "pax", "directory"]
                .iter()
                .all(|n| reason(n) == "InvalidArtifact")
                && reason("good") == "Succeeded"
        },
    );
    for (name, expect) in [
        ("comments", "bytes decompressed"),
        ("pax", "bytes decompressed"),
        ("directory", "bytes decompressed"),
    ] {
        let (_, _, message) = condition(env, ns.name(), name, "Ready").unwrap();
        assert!(
            message.contains(expect),
            "{name}: expected {expect:?} in {message}"
        );
        assert!(
            env.object("configmap", Some(ns.name()), "ok").is_none(),
            "{name}: part of a refused artifact was applied"
        );
    }
    let peak = peak_rss(agent.pid());
    assert!(
        peak < limit,
        "agent peak RSS {} MiB is over its {} MiB limit",
        peak >> 20,
        limit >> 20
    );
    eprintln!(
        "agent peak RSS {:.1} MiB (limit {} MiB)",
        peak as f64 / 1048576.0,
        limit >> 20
    );
}
