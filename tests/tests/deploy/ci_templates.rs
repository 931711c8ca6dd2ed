//! The CI templates in `deploy/ci/` as a pipeline would run them: each parses as YAML, and
//! its scripts — render with kubectl kustomize, `berth push --sign-key` from a CI secret,
//! publish the digest, verify, promote to the branch tag — run as written against the test
//! registry (TLS + basic auth), with only the registry and the manifests path substituted
//! and the CI system's predefined variables and secrets provided.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::deploy_dir;
use berth_e2e::{Env, env, run, run_ok, unique_name};
use serde_json::Value;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const KEY_PASSWORD: &str = "ci-secret-password";

fn parse(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

/// A checkout of a user's repository: manifests under `k8s/` (a kustomization) and the
/// committed public key `cosign.pub`; plus the private key a CI secret would hold.
struct Checkout {
    dir: tempfile::TempDir,
    key: PathBuf,
    /// `berth` and `kubectl` as a CI image provides them.
    bin: PathBuf,
}

fn checkout(env: &Env) -> Checkout {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("k8s")).unwrap();
    std::fs::write(
        root.join("k8s/kustomization.yaml"),
        "resources:\n  - app.yaml\ncommonLabels:\n  app: shop\n",
    )
    .unwrap();
    std::fs::write(
        root.join("k8s/app.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shop-config\ndata:\n  LOG_LEVEL: info\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: shop\nspec:\n  ports:\n    - port: 80\n",
    )
    .unwrap();
    let secrets = root.join(".secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    run_ok(
        env.berth()
            .env("COSIGN_PASSWORD", KEY_PASSWORD)
            .arg("keygen")
            .arg("--output-key-prefix")
            .arg(secrets.join("cosign")),
    );
    std::fs::rename(secrets.join("cosign.pub"), root.join("cosign.pub")).unwrap();
    let bin = root.join(".bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env_berth(env), bin.join("berth")).unwrap();
    std::os::unix::fs::symlink(&env.kubectl, bin.join("kubectl")).unwrap();
    Checkout {
        key: secrets.join("cosign.key"),
        bin,
        dir,
    }
}

/// The `berth` binary the harness built (the tests' Command carries it as its program).
fn env_berth(env: &Env) -> PathBuf {
    PathBuf::from(env.berth().get_program())
}

/// A shell as the CI runner starts it: in the checkout, the CI image's tools first on PATH,
/// the runner's trust store holding the test CA, nothing of the developer's machine.
fn shell(env: &Env, co: &Checkout, vars: &BTreeMap<String, String>) -> Command {
    let mut cmd = env.tool("bash");
    let path = format!(
        "{}:{}",
        co.bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    cmd.current_dir(co.dir.path())
        .env("PATH", path)
        .env("SSL_CERT_FILE", &env.ca_file)
        .env_remove("KUBECONFIG");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

/// Reads `KEY=VALUE` lines (GitHub's $GITHUB_OUTPUT, GitLab's dotenv report).
fn key_values(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// `berth verify REF --key cosign.pub` against the test registry; returns the verified digest.
fn verified_digest(env: &Env, co: &Checkout, reference: &str) -> String {
    let out = run_ok(
        env.berth()
            .args([
                "verify",
                reference,
                "--output",
                "json",
                "--creds",
                &format!("{}:{}", env.registry_user, env.registry_password),
            ])
            .arg("--ca-file")
            .arg(&env.ca_file)
            .arg("--key")
            .arg(co.dir.path().join("cosign.pub")),
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verified"], true, "{out}");
    v["digest"].as_str().unwrap().to_string()
}

/// `${{ … }}` in a GitHub env value, evaluated for the expressions the template may use.
fn github_expr(value: &str, known: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .map(|e| start + e)
            .expect("unterminated ${{");
        let expr = rest[start + 3..end].trim();
        let v = known.get(expr).unwrap_or_else(|| {
            panic!("the template uses ${{{{ {expr} }}}}, which this test does not provide")
        });
        out.push_str(v);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

fn env_map(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_github_actions_workflow_renders_pushes_signs_publishes_the_digest_and_promotes() {
    let env = env();
    let wf = parse(&deploy_dir().join("ci/github-actions.yaml"));
    let co = checkout(env);
    let runner_temp = co.dir.path().join(".runner-temp");
    std::fs::create_dir_all(&runner_temp).unwrap();
    let output = runner_temp.join("github-output");
    let summary = runner_temp.join("step-summary");
    let owner = unique_name("Acme", 20);

    // What the runner provides.
    let mut base: BTreeMap<String, String> = [
        ("GITHUB_SHA", COMMIT.to_string()),
        ("GITHUB_REPOSITORY", format!("{owner}/Shop")),
        ("GITHUB_SERVER_URL", "https://github.com".to_string()),
        ("GITHUB_REF_NAME", "main".to_string()),
        ("GITHUB_OUTPUT", output.display().to_string()),
        ("GITHUB_STEP_SUMMARY", summary.display().to_string()),
        ("RUNNER_TEMP", runner_temp.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in env_map(&wf["env"]) {
        base.insert(k, v);
    }
    // The only substitutions: the test registry and this checkout's manifests.
    assert_eq!(
        base.get("REGISTRY").map(String::as_str),
        Some("ghcr.io"),
        "workflow env REGISTRY"
    );
    base.insert("REGISTRY".into(), env.registry_oci_tls.clone());
    assert!(base.contains_key("MANIFESTS"), "workflow env MANIFESTS");
    base.insert("MANIFESTS".into(), "k8s".into());

    let mut expressions: BTreeMap<String, String> = [
        ("github.actor", env.registry_user.clone()),
        ("secrets.GITHUB_TOKEN", env.registry_password.clone()),
        (
            "secrets.COSIGN_PRIVATE_KEY",
            std::fs::read_to_string(&co.key).unwrap(),
        ),
        ("secrets.COSIGN_PASSWORD", KEY_PASSWORD.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    let job = &wf["jobs"]["artifact"];
    let steps = job["steps"].as_array().expect("jobs.artifact.steps");
    let mut ran = Vec::new();
    for step in steps {
        let Some(script) = step["run"].as_str() else {
            continue;
        };
        let name = step["name"].as_str().unwrap_or("");
        assert!(
            !script.contains("${{"),
            "step {name:?}: expressions belong in env:, not in the script (injection)"
        );
        if name.starts_with("Install") {
            assert!(script.contains("berth"), "the install step installs berth");
            continue; // the CI image's berth is the one under test
        }
        let mut vars = base.clone();
        for (k, v) in env_map(&step["env"]) {
            vars.insert(k, github_expr(&v, &expressions));
        }
        let out = run(shell(env, &co, &vars).args([
            "--noprofile",
            "--norc",
            "-eo",
            "pipefail",
            "-c",
            script,
        ]));
        assert!(
            out.status.success(),
            "step {name:?} failed:\n--- script\n{script}\n--- stdout\n{}\n--- stderr\n{}",
            out.stdout,
            out.stderr
        );
        assert!(
            !out.stderr.contains("BEGIN ENCRYPTED") && !out.stdout.contains(KEY_PASSWORD),
            "step {name:?} printed a secret"
        );
        if let Some(id) = step["id"].as_str() {
            for (k, v) in key_values(&output) {
                expressions.insert(format!("steps.{id}.outputs.{k}"), v);
            }
        }
        ran.push(name.to_string());
    }
    assert!(
        ran.iter().any(|n| n.contains("Render")) && ran.iter().any(|n| n.contains("Push")),
        "ran {ran:?}"
    );

    // Published: the digest and the artifact reference, as step outputs and in the summary.
    let outputs = key_values(&output);
    let digest = outputs.get("digest").expect("digest output").clone();
    let artifact = outputs.get("artifact").expect("artifact output").clone();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "digest output {digest:?}"
    );
    let repo = format!(
        "oci://{}/{}/shop/manifests",
        env.registry_oci_tls,
        owner.to_lowercase()
    );
    assert_eq!(
        artifact,
        format!("{repo}@{digest}"),
        "lower-cased repository (OCI names are lower case)"
    );
    assert!(
        std::fs::read_to_string(&summary).unwrap().contains(&digest),
        "the run summary shows the digest"
    );
    assert!(
        !runner_temp.join("cosign.key").exists(),
        "the private key was left on the runner"
    );
    // The registry holds exactly that, signed, under the commit tag and the branch tag.
    assert_eq!(
        verified_digest(env, &co, &format!("{repo}:{COMMIT}")),
        digest
    );
    assert_eq!(verified_digest(env, &co, &format!("{repo}:main")), digest);
    // The revision and source the cluster will report.
    let inspect = run_ok(
        env.berth()
            .args([
                "inspect",
                &artifact,
                "--output",
                "json",
                "--creds",
                &format!("{}:{}", env.registry_user, env.registry_password),
            ])
            .arg("--ca-file")
            .arg(&env.ca_file),
    );
    assert!(
        inspect.contains(&format!("main@sha1:{COMMIT}")),
        "revision annotation: {inspect}"
    );
    assert!(
        inspect.contains(&format!("https://github.com/{owner}/Shop")),
        "source annotation: {inspect}"
    );
}

#[test]
fn the_gitlab_ci_job_renders_pushes_signs_publishes_the_digest_and_promotes() {
    let env = env();
    let ci = parse(&deploy_dir().join("ci/gitlab-ci.yml"));
    let co = checkout(env);
    let image = format!("{}/{}", env.registry_oci_tls, env.repo("group/shop"));
    let job = &ci["berth-artifact"];
    assert!(job["script"].is_array(), "job berth-artifact has a script");
    assert_eq!(
        job["artifacts"]["reports"]["dotenv"], "berth.env",
        "the digest is published as a dotenv report"
    );

    // GitLab's predefined variables, and the CI/CD variables the template asks for
    // (COSIGN_PRIVATE_KEY is a File variable: its value is a path).
    let mut exports = String::new();
    for (k, v) in [
        ("CI_REGISTRY_IMAGE", image.clone()),
        ("CI_REGISTRY_USER", env.registry_user.clone()),
        ("CI_REGISTRY_PASSWORD", env.registry_password.clone()),
        ("CI_COMMIT_SHA", COMMIT.to_string()),
        ("CI_COMMIT_REF_NAME", "main".to_string()),
        ("CI_COMMIT_REF_SLUG", "main".to_string()),
        ("CI_COMMIT_BRANCH", "main".to_string()),
        ("CI_DEFAULT_BRANCH", "main".to_string()),
        (
            "CI_PROJECT_URL",
            "https://gitlab.example.com/group/shop".to_string(),
        ),
        ("COSIGN_PRIVATE_KEY", co.key.display().to_string()),
        ("COSIGN_PASSWORD", KEY_PASSWORD.to_string()),
    ] {
        exports.push_str(&format!("export {k}='{v}'\n"));
    }
    // Job variables, in order, expanded the way GitLab expands $VAR references in them.
    let mut saw_manifests = false;
    for (k, v) in env_map(&job["variables"]) {
        let v = if k == "MANIFESTS" {
            saw_manifests = true;
            "k8s".to_string() // the only substitution besides the registry
        } else {
            v
        };
        assert!(
            !v.contains('"') && !v.contains('`'),
            "variable {k} needs quoting this test does not do"
        );
        exports.push_str(&format!("export {k}=\"{v}\"\n"));
    }
    assert!(saw_manifests, "job variable MANIFESTS");
    let script: Vec<&str> = job["script"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        script
            .iter()
            .any(|l| l.contains("berth push") && l.contains("--sign-key")),
        "the script pushes and signs"
    );
    let full = format!("{exports}{}\n", script.join("\n"));
    let out = run(shell(env, &co, &BTreeMap::new()).args([
        "--noprofile",
        "--norc",
        "-eo",
        "pipefail",
        "-c",
        &full,
    ]));
    assert!(
        out.status.success(),
        "the job's script failed:\n--- stdout\n{}\n--- stderr\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        !out.stdout.contains(KEY_PASSWORD) && !out.stderr.contains(KEY_PASSWORD),
        "the job printed a secret"
    );

    let report = key_values(&co.dir.path().join("berth.env"));
    let digest = report
        .get("BERTH_DIGEST")
        .expect("BERTH_DIGEST in berth.env")
        .clone();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "digest {digest:?}"
    );
    let repo = format!("oci://{image}/manifests");
    assert_eq!(
        report.get("BERTH_ARTIFACT"),
        Some(&format!("{repo}@{digest}"))
    );
    assert_eq!(
        verified_digest(env, &co, &format!("{repo}:{COMMIT}")),
        digest
    );
    assert_eq!(verified_digest(env, &co, &format!("{repo}:main")), digest);
    assert!(out.stdout.contains(&digest), "the job log shows the digest");
}
