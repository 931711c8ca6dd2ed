//! berth artifacts and Flux artifacts are interchangeable, and oras reads berth artifacts:
//! the ecosystem's own tools, real binaries, against the real registries.

use std::process::Command;

use crate::common::{Reg, app, assert_same_tree, json};
use berth_e2e::{env, run, run_ok};

/// `flux` with credentials and the test CA (Go reads SSL_CERT_FILE) for TLS registries,
/// `--insecure-registry` for plain ones.
fn flux(reg: &Reg, args: &[&str]) -> Command {
    let env = env();
    let mut cmd = env.tool(&env.flux);
    cmd.args(args).env("SSL_CERT_FILE", &env.ca_file);
    if reg.tls {
        cmd.args([
            "--creds",
            &format!("{}:{}", env.registry_user, env.registry_password),
        ]);
    } else {
        cmd.arg("--insecure-registry");
    }
    cmd
}

fn flux_pulls_berth_artifact(reg: Reg) {
    let repo = env().repo("interop-flux-pull");
    let reference = reg.oci_ref(&repo, "v1");
    run_ok(&mut reg.berth(&[
        "push",
        &reference,
        app().to_str().unwrap(),
        "--source",
        "https://git.example/shop",
        "--revision",
        "main@sha1:abc",
    ]));
    let out = tempfile::tempdir().unwrap();
    let pulled = run(&mut flux(
        &reg,
        &[
            "pull",
            "artifact",
            &reference,
            "--output",
            out.path().to_str().unwrap(),
        ],
    ));
    assert!(
        pulled.status.success(),
        "flux pull artifact from {} failed:\n{}\n{}",
        reg.name,
        pulled.stdout,
        pulled.stderr
    );
    assert_same_tree(&app(), out.path());
    // Flux reads berth's annotations as its own metadata.
    let said = format!("{}{}", pulled.stdout, pulled.stderr);
    assert!(
        said.contains("main@sha1:abc"),
        "flux did not read the revision: {said}"
    );
}

#[test]
fn flux_pulls_berth_artifact_distribution() {
    flux_pulls_berth_artifact(Reg::dist());
}

#[test]
fn flux_pulls_berth_artifact_oci11_tls_auth() {
    flux_pulls_berth_artifact(Reg::oci_tls());
}

fn berth_pulls_flux_artifact(reg: Reg) {
    let repo = env().repo("interop-flux-push");
    let reference = reg.oci_ref(&repo, "v1");
    let app = app();
    let pushed = run(&mut flux(
        &reg,
        &[
            "push",
            "artifact",
            &reference,
            &format!("--path={}", app.display()),
            "--source=https://git.example/shop",
            "--revision=main@sha1:def",
        ],
    ));
    assert!(
        pushed.status.success(),
        "flux push artifact to {} failed:\n{}\n{}",
        reg.name,
        pushed.stdout,
        pushed.stderr
    );
    let out = tempfile::tempdir().unwrap();
    run_ok(&mut reg.berth(&["pull", &reference, "-o", out.path().to_str().unwrap()]));
    assert_same_tree(&app, out.path());
    let inspected = json(&run_ok(
        &mut reg.berth(&["inspect", &reference, "--output", "json"]),
    ));
    assert_eq!(
        inspected["annotations"]["org.opencontainers.image.revision"],
        "main@sha1:def"
    );
}

/// berth's config blob is the very one Flux uploads, so the two artifacts differ only in
/// their tarball.
#[test]
fn berth_and_flux_artifacts_share_the_config_blob() {
    let reg = Reg::dist();
    let repo = env().repo("interop-config");
    let flux_ref = reg.oci_ref(&repo, "flux");
    let berth_ref = reg.oci_ref(&repo, "berth");
    let app = app();
    run_ok(&mut flux(
        &reg,
        &[
            "push",
            "artifact",
            &flux_ref,
            &format!("--path={}", app.display()),
            "--source=s",
            "--revision=r",
            "--reproducible",
        ],
    ));
    run_ok(&mut reg.berth(&[
        "push",
        &berth_ref,
        app.to_str().unwrap(),
        "--source=s",
        "--revision=r",
    ]));
    let config = |r: &str| {
        json(&run_ok(&mut reg.berth(&["inspect", r, "--output", "json"])))["config"].clone()
    };
    assert_eq!(config(&flux_ref), config(&berth_ref));
}

#[test]
fn berth_pulls_flux_artifact_distribution_tls_auth() {
    berth_pulls_flux_artifact(Reg::dist_tls());
}

#[test]
fn berth_pulls_flux_artifact_oci11() {
    berth_pulls_flux_artifact(Reg::oci());
}

#[test]
fn oras_reads_berth_artifacts() {
    for reg in [Reg::dist(), Reg::oci_tls()] {
        let env = env();
        let repo = env.repo("interop-oras");
        let digest = reg.push_app(&repo, "v1");
        let plain_ref = format!("{}/{repo}:v1", reg.host);
        // oras pull succeeds (it stores only titled layers; Flux-shaped layers carry no title).
        let dir = tempfile::tempdir().unwrap();
        run_ok(
            env.tool(&env.oras)
                .args(["pull", &plain_ref, "-o"])
                .arg(dir.path())
                .args(reg.oras_flags()),
        );
        // The manifest oras sees is the one berth reported, and its layer is our tarball.
        let manifest = run_ok(
            env.tool(&env.oras)
                .args(["manifest", "fetch", &plain_ref])
                .args(reg.oras_flags()),
        );
        let manifest = json(&manifest);
        assert_eq!(
            manifest["layers"][0]["mediaType"],
            "application/vnd.cncf.flux.content.v1.tar+gzip"
        );
        assert_eq!(reg.oras_digest(&repo, "v1"), digest);
        let layer = manifest["layers"][0]["digest"].as_str().unwrap();
        let tarball = dir.path().join("layer.tar.gz");
        run_ok(
            env.tool(&env.oras)
                .args(["blob", "fetch", "--output"])
                .arg(&tarball)
                .arg(format!("{}/{repo}@{layer}", reg.host))
                .args(reg.oras_flags()),
        );
        let unpacked = tempfile::tempdir().unwrap();
        run_ok(
            Command::new("tar")
                .arg("-xzf")
                .arg(&tarball)
                .arg("-C")
                .arg(unpacked.path()),
        );
        assert_same_tree(&app(), unpacked.path());
    }
}
