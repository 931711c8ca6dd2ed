//! Tenant lockdown on the real API server with RBAC on: two tenants, each applying through
//! its own ServiceAccount, an agent that enforces impersonation, denies cluster-wide RBAC
//! kinds and keeps objects in the Source's namespace. A violating artifact is refused whole:
//! not even its harmless objects are applied.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests report failure by panicking

mod agent_prod_common;

use std::time::Duration;

use agent_prod_common::*;
use berth_e2e::env;

const LOCKDOWN: &[&str] = &[
    "--enforce-impersonation",
    "--deny-kinds",
    "ClusterRoleBinding.rbac.authorization.k8s.io,ClusterRole.rbac.authorization.k8s.io",
    "--source-namespace-only",
];

/// A ServiceAccount `applier` that may edit its own namespace only.
fn tenant_applier(env: &berth_e2e::Env, ns: &str) {
    kubectl_apply(
        env,
        format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: applier, namespace: {ns}}}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: applier-edit, namespace: {ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}}\nsubjects: [{{kind: ServiceAccount, name: applier, namespace: {ns}}}]\n"
        ),
    );
}

fn reason_and_message(env: &berth_e2e::Env, ns: &str, name: &str) -> Option<(String, String)> {
    condition(env, ns, name, "Ready").map(|(_, r, m)| (r, m))
}

#[test]
fn two_tenants_impersonation_enforced_denied_kinds_and_foreign_namespaces_refuse_the_whole_artifact() {
    let env = env();
    env.install_source_crd();
    let ta = env.namespace("prod-tenant-a");
    let tb = env.namespace("prod-tenant-b");
    tenant_applier(env, ta.name());
    tenant_applier(env, tb.name());
    let repo = env.repo("prod-tenant");
    let sa = "  serviceAccountName: applier\n";

    let good = manifests(&[("a.yaml", configmap("a-ok", "1"))]);
    push(env, &env.registry_dist, &repo, "good", good.path());
    let crb = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: esc-{ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}}\nsubjects: [{{kind: ServiceAccount, name: applier, namespace: {ns}}}]\n",
        ns = ta.name()
    );
    let escalate = manifests(&[("cm.yaml", configmap("esc-cm", "1")), ("crb.yaml", crb)]);
    push(env, &env.registry_dist, &repo, "escalate", escalate.path());
    let away = configmap("cross-away", "1").replace("metadata:\n", &format!("metadata:\n  namespace: {}\n", tb.name()));
    let cross = manifests(&[("home.yaml", configmap("cross-home", "1")), ("away.yaml", away)]);
    push(env, &env.registry_dist, &repo, "cross", cross.path());

    kubectl_apply(env, source_yaml(env, ta.name(), "good", &repo, "good", "5s", sa));
    kubectl_apply(env, source_yaml(env, ta.name(), "escalate", &repo, "escalate", "5s", sa));
    kubectl_apply(env, source_yaml(env, ta.name(), "cross", &repo, "cross", "5s", sa));
    kubectl_apply(env, source_yaml(env, tb.name(), "b-good", &repo, "good", "5s", sa));
    kubectl_apply(env, source_yaml(env, tb.name(), "no-sa", &repo, "good", "5s", ""));
    let agent_a = Agent::start(env, "lock-a", ta.name(), LOCKDOWN);
    let agent_b = Agent::start(env, "lock-b", tb.name(), LOCKDOWN);
    let agents = [&agent_a, &agent_b];

    wait_until("both tenants' good Sources applied", Duration::from_secs(90), &agents, || {
        configmap_value(env, ta.name(), "a-ok").is_some() && configmap_value(env, tb.name(), "a-ok").is_some()
    });
    wait_until("the violations recorded", Duration::from_secs(60), &agents, || {
        ["escalate", "cross"]
            .iter()
            .all(|s| reason_and_message(env, ta.name(), s).is_some_and(|(r, _)| r == "LockdownViolation"))
            && reason_and_message(env, tb.name(), "no-sa").is_some_and(|(r, _)| r == "LockdownViolation")
    });

    let (_, m) = reason_and_message(env, ta.name(), "escalate").unwrap();
    assert!(
        m.contains("ClusterRoleBinding.rbac.authorization.k8s.io")
            && m.contains("--deny-kinds")
            && m.contains("crb.yaml"),
        "{m}"
    );
    assert!(
        get(env, "configmap", ta.name(), "esc-cm").is_none(),
        "the harmless part of a refused artifact was applied"
    );
    assert!(
        get(env, "clusterrolebinding", "", &format!("esc-{}", ta.name())).is_none(),
        "a tenant created a ClusterRoleBinding"
    );

    let (_, m) = reason_and_message(env, ta.name(), "cross").unwrap();
    assert!(m.contains(tb.name()) && m.contains("--source-namespace-only"), "{m}");
    assert!(get(env, "configmap", ta.name(), "cross-home").is_none(), "refused whole: nothing applied at home either");
    assert!(get(env, "configmap", tb.name(), "cross-away").is_none(), "tenant a wrote into tenant b");

    let (_, m) = reason_and_message(env, tb.name(), "no-sa").unwrap();
    assert!(m.contains("serviceAccountName"), "{m}");
    assert_eq!(
        condition(env, tb.name(), "no-sa", "Stalled").map(|c| c.0).as_deref(),
        Some("True"),
        "only a spec change helps"
    );
}
