//! A release manager promotes a digest across registries; the digest survives the trip, and
//! promoting a tag needs an explicit --resolve.

use crate::common::{Reg, app, assert_same_tree, json};
use berth_e2e::{env, run, run_ok};

#[test]
fn promote_across_registries_keeps_the_digest() {
    for (src, dst) in [
        (Reg::dist(), Reg::oci_tls()),
        (Reg::oci_tls(), Reg::dist()),
        (Reg::dist_tls(), Reg::oci_tls()),
    ] {
        let src_repo = env().repo("promote-src");
        let dst_repo = env().repo("promote-dst");
        let digest = src.push_app(&src_repo, "rc1");
        let source = format!("oci://{}/{src_repo}@{digest}", src.host);
        // Source flags are the globals; the destination gets its own (as skopeo's --dest-*).
        let mut cmd = src.berth(&[
            "promote",
            &source,
            &dst.oci_ref(&dst_repo, "production"),
            "--output",
            "json",
        ]);
        if dst.tls {
            cmd.args([
                "--dest-ca-file",
                env().ca_file.to_str().unwrap(),
                "--dest-insecure=false",
            ])
            .args([
                "--dest-creds",
                &format!("{}:{}", env().registry_user, env().registry_password),
            ]);
        } else {
            cmd.arg("--dest-insecure");
        }
        let out = run(&mut cmd);
        assert!(
            out.status.success(),
            "{} -> {}: {}",
            src.name,
            dst.name,
            out.stderr
        );
        let promoted = json(&out.stdout);
        assert_eq!(promoted["digest"], digest);
        assert_eq!(
            dst.oras_digest(&dst_repo, "production"),
            digest,
            "{} -> {}",
            src.name,
            dst.name
        );
        let dir = tempfile::tempdir().unwrap();
        run_ok(&mut dst.berth(&[
            "pull",
            &dst.oci_ref(&dst_repo, "production"),
            "-o",
            dir.path().to_str().unwrap(),
        ]));
        assert_same_tree(&app(), dir.path());
    }
}

#[test]
fn promote_between_plain_registries_keeps_the_digest() {
    let (src, dst) = (Reg::dist(), Reg::oci());
    let src_repo = env().repo("promote-plain-src");
    let dst_repo = env().repo("promote-plain-dst");
    let digest = src.push_app(&src_repo, "rc1");
    let out = run_ok(&mut src.berth(&[
        "promote",
        &format!("oci://{}/{src_repo}@{digest}", src.host),
        &dst.oci_ref(&dst_repo, "prod"),
    ]));
    assert!(out.trim().ends_with(&digest), "{out}");
    assert_eq!(dst.oras_digest(&dst_repo, "prod"), digest);
}

#[test]
fn promote_from_a_tag_refuses_without_resolve() {
    let reg = Reg::dist();
    let repo = env().repo("promote-tag");
    let dst_repo = env().repo("promote-tag-dst");
    let digest = reg.push_app(&repo, "rc1");
    let refused = run(&mut reg.berth(&[
        "promote",
        &reg.oci_ref(&repo, "rc1"),
        &reg.oci_ref(&dst_repo, "prod"),
    ]));
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("--resolve"), "{}", refused.stderr);
    assert!(
        reg.tags(&dst_repo).is_empty(),
        "promote without --resolve copied something"
    );

    let resolved = run_ok(&mut reg.berth(&[
        "promote",
        &reg.oci_ref(&repo, "rc1"),
        &reg.oci_ref(&dst_repo, "prod"),
        "--resolve",
    ]));
    assert!(resolved.trim().ends_with(&digest), "{resolved}");
    assert_eq!(reg.tags(&dst_repo), ["prod"]);
}
