//! Registry trouble gives one clear line, a hint and the documented exit code:
//! unreachable 4, refused credentials 5, not found 6, tag given to promote 2.

use crate::common::{Reg, app};
use berth_e2e::{env, free_port, run, run_ok};

#[test]
fn unreachable_registry_exits_4() {
    // A port nothing listens on: bind, note it, release it.
    let port = free_port();
    let out = run(env().berth().args([
        "push",
        &format!("oci://127.0.0.1:{port}/e2e/nowhere:v1"),
        app().to_str().unwrap(),
        "--insecure",
    ]));
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("cannot reach registry 127.0.0.1:{port}")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
}

#[test]
fn missing_or_wrong_credentials_exit_5_and_push_nothing() {
    for reg in [Reg::dist_tls(), Reg::oci_tls()] {
        let repo = env().repo("auth");
        let reference = reg.oci_ref(&repo, "v1");
        let anonymous = run(env()
            .berth()
            .args(["push", &reference, app().to_str().unwrap(), "--ca-file"])
            .arg(&env().ca_file));
        assert_eq!(
            anonymous.code,
            Some(5),
            "{}: {}",
            reg.name,
            anonymous.stderr
        );
        assert!(
            anonymous.stderr.contains("--creds"),
            "hint should name --creds: {}",
            anonymous.stderr
        );
        let wrong = run(env()
            .berth()
            .args(["push", &reference, app().to_str().unwrap(), "--ca-file"])
            .arg(&env().ca_file)
            .args([
                "--creds",
                &format!("{}:wrong-password", env().registry_user),
            ]));
        assert_eq!(wrong.code, Some(5), "{}: {}", reg.name, wrong.stderr);
        assert!(
            reg.tags(&repo).is_empty(),
            "{}: pushed despite refused credentials",
            reg.name
        );
    }
}

#[test]
fn credentials_from_environment_variables_work() {
    let reg = Reg::dist_tls();
    let repo = env().repo("auth-env");
    run_ok(
        env()
            .berth()
            .args([
                "push",
                &reg.oci_ref(&repo, "v1"),
                app().to_str().unwrap(),
                "--ca-file",
            ])
            .arg(&env().ca_file)
            .env("BERTH_REGISTRY_USER", &env().registry_user)
            .env("BERTH_REGISTRY_PASSWORD", &env().registry_password),
    );
    assert_eq!(reg.tags(&repo), ["v1"]);
}

#[test]
fn tls_without_the_ca_fails_with_a_hint() {
    let reg = Reg::dist_tls();
    let out = run(env()
        .berth()
        .args(["list", &format!("oci://{}/e2e/whatever", reg.host)]));
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(out.stderr.contains("--ca-file"), "{}", out.stderr);
}

#[test]
fn unknown_tag_and_digest_exit_6() {
    for reg in Reg::all() {
        let repo = env().repo("notfound");
        run_ok(&mut reg.berth(&["push", &reg.oci_ref(&repo, "v1"), app().to_str().unwrap()]));
        let dir = tempfile::tempdir().unwrap();
        let out = run(&mut reg.berth(&[
            "pull",
            &reg.oci_ref(&repo, "no-such-tag"),
            "-o",
            dir.path().to_str().unwrap(),
        ]));
        assert_eq!(out.code, Some(6), "{}: {}", reg.name, out.stderr);
        assert!(out.stderr.contains("not found"), "{}", out.stderr);
        let missing = format!("oci://{}/{repo}@sha256:{}", reg.host, "0".repeat(64));
        let out = run(&mut reg.berth(&["inspect", &missing]));
        assert_eq!(out.code, Some(6), "{}: {}", reg.name, out.stderr);
    }
}

#[test]
fn bad_references_are_usage_errors() {
    for bad in [
        "registry.example/app:v1",
        "oci://127.0.0.1:5000/App:v1",
        "oci://127.0.0.1:5000/app@sha256:abc",
    ] {
        let out = run(env()
            .berth()
            .args(["pull", bad, "-o", "/tmp/unused", "--insecure"]));
        assert_eq!(out.code, Some(2), "{bad}: {}", out.stderr);
        assert!(
            out.stderr.contains(bad),
            "error must name the input: {}",
            out.stderr
        );
    }
}

#[test]
fn plain_http_against_a_tls_registry_says_to_drop_insecure() {
    let reg = Reg::dist_tls();
    let repo = env().repo("insecure-vs-tls");
    let out = run(env().berth().args([
        "push",
        &reg.oci_ref(&repo, "v1"),
        app().to_str().unwrap(),
        "--insecure",
    ]));
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(out.stderr.contains("drop --insecure"), "{}", out.stderr);
}
