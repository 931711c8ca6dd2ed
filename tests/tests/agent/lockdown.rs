//! Tenant lockdown on the real API server with RBAC on: two tenants, each applying through
//! its own ServiceAccount, an agent that enforces impersonation, denies cluster-wide RBAC
//! kinds and keeps objects in the Source's namespace. A violating artifact is refused whole:
//! not even its harmless objects are applied.

use std::time::Duration;

use crate::common::*;
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
fn two_tenants_impersonation_enforced_denied_kinds_and_foreign_namespaces_refuse_the_whole_artifact()
 {
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
    let away = configmap("cross-away", "1").replace(
        "metadata:\n",
        &format!("metadata:\n  namespace: {}\n", tb.name()),
    );
    let cross = manifests(&[
        ("home.yaml", configmap("cross-home", "1")),
        ("away.yaml", away),
    ]);
    push(env, &env.registry_dist, &repo, "cross", cross.path());

    kubectl_apply(
        env,
        source_yaml(env, ta.name(), "good", &repo, "good", "5s", sa),
    );
    kubectl_apply(
        env,
        source_yaml(env, ta.name(), "escalate", &repo, "escalate", "5s", sa),
    );
    kubectl_apply(
        env,
        source_yaml(env, ta.name(), "cross", &repo, "cross", "5s", sa),
    );
    kubectl_apply(
        env,
        source_yaml(env, tb.name(), "b-good", &repo, "good", "5s", sa),
    );
    kubectl_apply(
        env,
        source_yaml(env, tb.name(), "no-sa", &repo, "good", "5s", ""),
    );
    let agent_a = Agent::start(env, "lock-a", ta.name(), LOCKDOWN);
    let agent_b = Agent::start(env, "lock-b", tb.name(), LOCKDOWN);
    let agents = [&agent_a, &agent_b];

    wait_until(
        "both tenants' good Sources applied",
        Duration::from_secs(90),
        &agents,
        || {
            configmap_value(env, ta.name(), "a-ok").is_some()
                && configmap_value(env, tb.name(), "a-ok").is_some()
        },
    );
    wait_until(
        "the violations recorded",
        Duration::from_secs(60),
        &agents,
        || {
            ["escalate", "cross"].iter().all(|s| {
                reason_and_message(env, ta.name(), s).is_some_and(|(r, _)| r == "LockdownViolation")
            }) && reason_and_message(env, tb.name(), "no-sa")
                .is_some_and(|(r, _)| r == "LockdownViolation")
        },
    );

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
    assert!(
        m.contains(tb.name()) && m.contains("--source-namespace-only"),
        "{m}"
    );
    assert!(
        get(env, "configmap", ta.name(), "cross-home").is_none(),
        "refused whole: nothing applied at home either"
    );
    assert!(
        get(env, "configmap", tb.name(), "cross-away").is_none(),
        "tenant a wrote into tenant b"
    );

    let (_, m) = reason_and_message(env, tb.name(), "no-sa").unwrap();
    assert!(m.contains("serviceAccountName"), "{m}");
    assert_eq!(
        condition(env, tb.name(), "no-sa", "Stalled")
            .map(|c| c.0)
            .as_deref(),
        Some("True"),
        "only a spec change helps"
    );
}

/// Cluster-scoped objects a test may leave behind, deleted (without waiting) when dropped.
struct ClusterObjects<'a> {
    env: &'a berth_e2e::Env,
    objects: Vec<String>,
}

impl Drop for ClusterObjects<'_> {
    fn drop(&mut self) {
        for o in &self.objects {
            let _ = self
                .env
                .kubectl_cmd()
                .args(["delete", o, "--ignore-not-found", "--wait=false"])
                .output();
        }
    }
}

fn cluster_role(name: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: {name}}}\nrules:\n  - apiGroups: [\"\"]\n    resources: [secrets]\n    verbs: [get, list]\n"
    )
}

/// A namespaced CRD of kind Widget in group `group`.
fn widget_crd(group: &str) -> String {
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: widgets.{group}}}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}}\n  versions:\n    - name: v1\n      served: true\n      storage: true\n      schema:\n        openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}\n"
    )
}

fn ready_reason(env: &berth_e2e::Env, ns: &str, name: &str) -> String {
    reason_and_message(env, ns, name)
        .map(|(r, _)| r)
        .unwrap_or_default()
}

#[test]
fn under_source_namespace_only_a_cluster_role_or_a_source_in_the_artifact_refuses_it_whole() {
    let env = env();
    env.install_source_crd();
    let ns = env.namespace("prod-lock-cluster");
    let n = ns.name();
    let repo = env.repo("prod-lock-cluster");
    let role = format!("lock-{n}");
    let _cleanup = ClusterObjects {
        env,
        objects: vec![format!("clusterrole/{role}")],
    };

    // The agent applies with its own (admin) rights here: only the lockdown rule stands
    // between the artifact and the cluster, no RBAC of a tenant account.
    let with_role = manifests(&[
        ("cm.yaml", configmap("role-cm", "1")),
        ("role.yaml", cluster_role(&role)),
    ]);
    push(env, &env.registry_dist, &repo, "role", with_role.path());
    // An artifact that carries the Source applying it (under another tag) and a second Source.
    let own = source_yaml(env, n, "selfish", &repo, "other", "5s", "  force: true\n");
    let child = source_yaml(env, n, "child", &repo, "role", "5s", "");
    let with_sources = manifests(&[
        ("cm.yaml", configmap("src-cm", "1")),
        ("own.yaml", own),
        ("child.yaml", child),
    ]);
    push(
        env,
        &env.registry_dist,
        &repo,
        "sources",
        with_sources.path(),
    );

    kubectl_apply(env, source_yaml(env, n, "role", &repo, "role", "5s", ""));
    kubectl_apply(
        env,
        source_yaml(env, n, "selfish", &repo, "sources", "5s", ""),
    );
    let agent = Agent::start(env, "lock-cluster", n, &["--source-namespace-only"]);

    wait_until(
        "both Sources refused",
        Duration::from_secs(60),
        &[&agent],
        || {
            ready_reason(env, n, "role") == "LockdownViolation"
                && ready_reason(env, n, "selfish") == "LockdownViolation"
        },
    );
    let (_, m) = reason_and_message(env, n, "role").unwrap();
    assert!(
        m.contains(&format!(
            "ClusterRole.rbac.authorization.k8s.io {role} (role.yaml:1)"
        )) && m.contains("--source-namespace-only")
            && m.contains("--allow-cluster-kinds"),
        "{m}"
    );
    assert!(
        get(env, "clusterrole", "", &role).is_none(),
        "a Source confined to its namespace created a ClusterRole"
    );
    assert!(
        get(env, "configmap", n, "role-cm").is_none(),
        "refused whole: nothing applied"
    );

    let (_, m) = reason_and_message(env, n, "selfish").unwrap();
    assert!(
        m.contains(&format!("Source.berth.dev {n}/selfish (own.yaml:1)")),
        "names its own Source: {m}"
    );
    assert!(
        m.contains(&format!("Source.berth.dev {n}/child (child.yaml:1)")),
        "names the other Source: {m}"
    );
    assert!(m.contains("--allow-sources"), "says how to allow it: {m}");
    assert!(
        get(env, "sources.berth.dev", n, "child").is_none(),
        "the artifact created a Source"
    );
    let selfish = get(env, "sources.berth.dev", n, "selfish").unwrap();
    assert_eq!(
        selfish["spec"]["ref"]["tag"], "sources",
        "the artifact rewrote its own Source: {selfish}"
    );
    assert!(
        get(env, "configmap", n, "src-cm").is_none(),
        "refused whole: nothing applied"
    );
}

#[test]
fn under_allow_namespaces_a_crd_is_refused_until_its_kind_is_allowed_by_name() {
    let env = env();
    env.install_source_crd();
    let refused = env.namespace("prod-lock-crd-no");
    let allowed = env.namespace("prod-lock-crd-yes");
    let repo = env.repo("prod-lock-crd");
    let group = |ns: &berth_e2e::Namespace| format!("{}.e2e.berth.dev", ns.name());
    let _cleanup = ClusterObjects {
        env,
        objects: [&refused, &allowed]
            .iter()
            .map(|ns| format!("crd/widgets.{}", group(ns)))
            .collect(),
    };
    for ns in [&refused, &allowed] {
        let files = manifests(&[
            ("cm.yaml", configmap("crd-cm", "1")),
            ("crd.yaml", widget_crd(&group(ns))),
        ]);
        push(env, &env.registry_dist, &repo, ns.name(), files.path());
        kubectl_apply(
            env,
            source_yaml(env, ns.name(), "crd", &repo, ns.name(), "5s", ""),
        );
    }
    let agent_no = Agent::start(
        env,
        "lock-crd-no",
        refused.name(),
        &["--allow-namespaces", refused.name()],
    );
    let agent_yes = Agent::start(
        env,
        "lock-crd-yes",
        allowed.name(),
        &[
            "--allow-namespaces",
            allowed.name(),
            "--allow-cluster-kinds",
            "CustomResourceDefinition.apiextensions.k8s.io",
        ],
    );
    let agents = [&agent_no, &agent_yes];

    wait_until(
        "one refused, the other applied",
        Duration::from_secs(60),
        &agents,
        || {
            ready_reason(env, refused.name(), "crd") == "LockdownViolation"
                && ready_reason(env, allowed.name(), "crd") == "Succeeded"
        },
    );
    let (_, m) = reason_and_message(env, refused.name(), "crd").unwrap();
    assert!(
        m.contains(&format!(
            "CustomResourceDefinition.apiextensions.k8s.io widgets.{} (crd.yaml:1)",
            group(&refused)
        )) && m.contains("--allow-namespaces")
            && m.contains("--allow-cluster-kinds CustomResourceDefinition.apiextensions.k8s.io"),
        "{m}"
    );
    assert!(
        get(env, "crd", "", &format!("widgets.{}", group(&refused))).is_none(),
        "the CRD was applied"
    );
    assert!(
        get(env, "configmap", refused.name(), "crd-cm").is_none(),
        "refused whole: nothing applied"
    );

    let crd = get(env, "crd", "", &format!("widgets.{}", group(&allowed)))
        .expect("the allowed CRD is applied");
    assert!(
        crd["metadata"]["labels"][berth_e2e::APPLYSET_PART_OF].is_string(),
        "{crd}"
    );
    assert_eq!(
        configmap_value(env, allowed.name(), "crd-cm").as_deref(),
        Some("1")
    );
}
