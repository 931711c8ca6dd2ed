//! Helpers shared by the CLI tests: the four registries with the flags each needs, independent
//! checks of what a registry holds (through `oras`), and tree comparison.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use berth_e2e::{env, run, run_ok};

/// One of the test registries and how to reach it.
#[derive(Debug, Clone)]
pub struct Reg {
    pub name: &'static str,
    pub host: String,
    pub tls: bool,
}

impl Reg {
    pub fn dist() -> Reg {
        Reg {
            name: "distribution",
            host: env().registry_dist.clone(),
            tls: false,
        }
    }
    pub fn dist_tls() -> Reg {
        Reg {
            name: "distribution-tls-auth",
            host: env().registry_dist_tls.clone(),
            tls: true,
        }
    }
    pub fn oci() -> Reg {
        Reg {
            name: "oci11",
            host: env().registry_oci.clone(),
            tls: false,
        }
    }
    pub fn oci_tls() -> Reg {
        Reg {
            name: "oci11-tls-auth",
            host: env().registry_oci_tls.clone(),
            tls: true,
        }
    }
    pub fn all() -> Vec<Reg> {
        vec![Reg::dist(), Reg::dist_tls(), Reg::oci(), Reg::oci_tls()]
    }

    /// berth's global flags for this registry.
    pub fn berth_flags(&self) -> Vec<String> {
        env().berth_flags(self.tls)
    }

    /// oras flags for this registry.
    pub fn oras_flags(&self) -> Vec<String> {
        env().oras_flags(self.tls)
    }

    /// `oci://host/repo:tag`
    pub fn oci_ref(&self, repo: &str, tag: &str) -> String {
        format!("oci://{}/{repo}:{tag}", self.host)
    }

    /// `berth ARGS… <registry flags>`
    pub fn berth(&self, args: &[&str]) -> Command {
        let mut cmd = env().berth();
        cmd.args(args).args(self.berth_flags());
        cmd
    }

    /// `berth push` of the example app to `repo:tag`; returns the digest berth reports.
    pub fn push_app(&self, repo: &str, tag: &str) -> String {
        let pushed = json(&run_ok(&mut self.berth(&[
            "push",
            &self.oci_ref(repo, tag),
            app().to_str().unwrap(),
            "--output",
            "json",
        ])));
        pushed["digest"].as_str().unwrap().to_string()
    }

    /// The tags of `repo`, asked independently of berth (through oras); empty when the
    /// repository does not exist.
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let env = env();
        let out = run(env
            .tool(&env.oras)
            .args(["repo", "tags", &format!("{}/{repo}", self.host)])
            .args(self.oras_flags()));
        if !out.status.success() {
            return Vec::new();
        }
        out.stdout
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Blob upload sessions the registry logged for `repo` (`POST /v2/<repo>/blobs/uploads/`),
    /// read from the registry's own access log; `None` for a registry that logs no requests.
    pub fn logged_uploads(&self, repo: &str) -> Option<usize> {
        let log = match self.name {
            "distribution" => "registry-dist.log",
            "distribution-tls-auth" => "registry-dist-tls.log",
            "oci11-tls-auth" => "registry-oci-tls.log",
            _ => return None,
        };
        let text = std::fs::read_to_string(env().state.join("logs").join(log)).ok()?;
        Some(
            text.matches(&format!("\"POST /v2/{repo}/blobs/uploads/"))
                .count(),
        )
    }

    /// The digest a tag points to, asked through oras.
    pub fn oras_digest(&self, repo: &str, tag: &str) -> String {
        let env = env();
        run_ok(
            env.tool(&env.oras)
                .args(["resolve", &format!("{}/{repo}:{tag}", self.host)])
                .args(self.oras_flags()),
        )
        .trim()
        .to_string()
    }
}

/// Every regular file under `root`, by relative path, with its bytes.
pub fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let ft = entry.file_type().unwrap();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// Assert two trees hold the same files with the same bytes.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let e = tree(expected);
    let a = tree(actual);
    assert_eq!(
        e.keys().collect::<Vec<_>>(),
        a.keys().collect::<Vec<_>>(),
        "file lists differ between {} and {}",
        expected.display(),
        actual.display()
    );
    for (name, bytes) in &e {
        assert!(
            a[name] == *bytes,
            "{name} differs between {} and {}",
            expected.display(),
            actual.display()
        );
    }
}

/// The JSON printed by `--output json`.
pub fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// The realistic example app.
pub fn app() -> std::path::PathBuf {
    berth_e2e::testdata("app")
}
