//! Multi-tenant least privilege, on the real API server with RBAC: `deploy/base` installed
//! (under names of this test's own, through an overlay in a temp dir) plus `deploy/tenant`
//! for one team namespace; the agent binary runs with a TokenRequest token of the shipped
//! ServiceAccount. It applies a team's Source as the team's applier account; it cannot read
//! Secrets of a namespace that did not opt in; a team cannot escalate through it (a
//! ClusterRoleBinding in an artifact is refused); a Source naming another ServiceAccount gets
//! a condition that says so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{
    ClusterScoped, agent_args, deploy_dir, documents, find, kustomize, prefixed_install,
    push_signed_v1, relative, token_kubeconfig, wait_until,
};
use berth_e2e::{Env, Process, env, run, run_ok, unique_name};
use serde_json::Value;

/// `deploy/base` in `system` under `prefix` (see [`prefixed_install`]) and `deploy/tenant`
/// for `tenant`, its bindings pointed at that agent.
fn write_install(dir: &Path, prefix: &str, system: &str, tenant: &str, run_label: &str) -> PathBuf {
    let sys_dir = dir.join("agent");
    prefixed_install(&sys_dir, "base", prefix, system, run_label);
    let team = dir.join("tenant");
    std::fs::create_dir_all(&team).unwrap();
    let agent = format!("{{kind: ServiceAccount, name: {prefix}berth-agent, namespace: {system}}}");
    std::fs::write(
        team.join("kustomization.yaml"),
        format!(
            "namespace: {tenant}\nresources:\n  - {t}\npatches:\n  - target: {{kind: RoleBinding, name: berth-agent}}\n    patch: |-\n      - {{op: replace, path: /roleRef/name, value: {prefix}berth-agent-tenant}}\n      - {{op: replace, path: /subjects/0, value: {agent}}}\n  - target: {{kind: RoleBinding, name: berth-agent-impersonate}}\n    patch: |-\n      - {{op: replace, path: /subjects/0, value: {agent}}}\n",
            t = relative(&team, &deploy_dir().join("tenant"))
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!("labels:\n  - pairs: {{berth-e2e-run: {run_label}}}\nresources:\n  - agent\n  - tenant\n"),
    )
    .unwrap();
    dir.to_path_buf()
}

fn install_crd(env: &Env) {
    run_ok(
        env.kubectl_cmd()
            .args(["apply", "--server-side", "--force-conflicts", "-f"])
            .arg(deploy_dir().join("base/crd.yaml")),
    );
    run_ok(env.kubectl_cmd().args([
        "wait",
        "--for=condition=Established",
        "crd/sources.berth.dev",
        "--timeout=60s",
    ]));
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, content).unwrap();
    path
}

/// A Source of `url:v1`; `service_account` None leaves the choice to the agent's default.
fn source(name: &str, ns: &str, url: &str, service_account: Option<&str>) -> String {
    let sa = service_account
        .map(|sa| format!("  serviceAccountName: {sa}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Source\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  url: {url}\n  ref: {{tag: v1}}\n  interval: 5s\n  timeout: 1m\n  insecure: true\n{sa}  verify:\n    keys:\n      - secretRef: {{name: signing-key}}\n---\n"
    )
}

fn ready(env: &Env, ns: &str, name: &str) -> Option<(String, String, String)> {
    let out =
        run_ok(
            env.kubectl_cmd()
                .args(["get", "sources.berth.dev", name, "-n", ns, "-o", "json"]),
        );
    let v: Value = serde_json::from_str(&out).unwrap();
    let c = v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?
        .clone();
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    Some((s("status"), s("reason"), s("message")))
}

/// `kubectl create -f` of a SubjectAccessReview, as the cluster admin: is `user` allowed?
fn access_review(
    env: &Env,
    dir: &Path,
    user: &str,
    verb: &str,
    group: &str,
    resource: &str,
    ns: Option<&str>,
) -> bool {
    let ns_line = ns
        .map(|n| format!("\n    namespace: {n}"))
        .unwrap_or_default();
    let file = write(
        dir,
        &format!("sar-{}.yaml", unique_name("r", 20)),
        &format!(
            "apiVersion: authorization.k8s.io/v1\nkind: SubjectAccessReview\nspec:\n  user: {user}\n  groups: [system:serviceaccounts, system:authenticated]\n  resourceAttributes:\n    verb: {verb}\n    group: \"{group}\"\n    resource: {resource}{ns_line}\n"
        ),
    );
    let out = run_ok(
        env.kubectl_cmd()
            .args(["create", "-o", "json", "-f"])
            .arg(&file),
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    v["status"]["allowed"] == true
}

#[test]
fn a_tenant_source_applies_as_its_applier_and_the_agent_cannot_read_or_escalate_beyond_it() {
    let env = env();
    install_crd(env);
    let system = env.namespace("berth-sys");
    let tenant = env.namespace("team");
    let other = env.namespace("other-team");
    let id = unique_name("dt", 20);
    let prefix = format!("{id}-");
    let label = format!("berth-e2e-run={id}");
    let _cluster_scoped = ClusterScoped {
        env,
        label: label.clone(),
    };
    let scratch = tempfile::tempdir().unwrap();

    // Install: agent in `system`, `tenant` onboarded; `other` has a Secret and no onboarding.
    let install = write_install(
        &scratch.path().join("install"),
        &prefix,
        system.name(),
        tenant.name(),
        &id,
    );
    let rendered = kustomize(env, &install);
    let docs = documents(&rendered);
    let install_file = write(scratch.path(), "install.yaml", &rendered);
    run_ok(
        env.kubectl_cmd()
            .args(["apply", "--server-side", "-f"])
            .arg(&install_file),
    );
    run_ok(env.kubectl_cmd().args([
        "create",
        "secret",
        "generic",
        "private",
        "-n",
        other.name(),
        "--from-literal=password=hunter2",
    ]));
    // The agent's pods are admitted under Pod Security "restricted" (kwok runs them).
    let deployment_name = format!("{prefix}berth-agent");
    run_ok(env.kubectl_cmd().args([
        "rollout",
        "status",
        &format!("deployment/{deployment_name}"),
        "-n",
        system.name(),
        "--timeout=120s",
    ]));

    // Trust: a key pair; the public half in the team namespace.
    let (key, public) = env.keypair(scratch.path(), "ci");
    run_ok(
        env.kubectl_cmd()
            .args([
                "create",
                "secret",
                "generic",
                "signing-key",
                "-n",
                tenant.name(),
            ])
            .arg(format!("--from-file=cosign.pub={}", public.display())),
    );

    // Artifacts: an app, and an attempt to make the team's applier a cluster admin.
    let escalation = format!("{id}-escalate");
    let app_dir = scratch.path().join("app");
    write(
        &app_dir,
        "config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-config}\ndata: {greeting: hello}\n",
    );
    // A workload too: Ready waits for it to be available, read with the agent's tenant rights.
    write(
        &app_dir,
        "web.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: registry.example.com/web:1}]\n",
    );
    let esc_dir = scratch.path().join("escalate");
    write(
        &esc_dir,
        "crb.yaml",
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: {escalation}, labels: {{berth-e2e-run: {id}}}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}}\nsubjects: [{{kind: ServiceAccount, name: berth-applier, namespace: {t}}}]\n",
            t = tenant.name()
        ),
    );
    let plain_dir = scratch.path().join("plain");
    write(
        &plain_dir,
        "config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain-config}\ndata: {greeting: hi}\n",
    );
    // Its own content: an object of another Source's set would be refused before the identity
    // is tried (one object, one ApplySet).
    let ghost_dir = scratch.path().join("ghost");
    write(
        &ghost_dir,
        "config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ghost-config}\ndata: {greeting: boo}\n",
    );
    let app_url = push_signed_v1(env, &app_dir, &key, "deploy-tenant-app");
    let ghost_url = push_signed_v1(env, &ghost_dir, &key, "deploy-tenant-ghost");
    let esc_url = push_signed_v1(env, &esc_dir, &key, "deploy-tenant-escalate");
    let plain_url = push_signed_v1(env, &plain_dir, &key, "deploy-tenant-plain");
    let sources = [
        source("app", tenant.name(), &app_url, Some("berth-applier")),
        source("escalate", tenant.name(), &esc_url, Some("berth-applier")),
        source("ghost", tenant.name(), &ghost_url, Some("ghost")),
        // Names no account: the shipped --default-service-account applies it as berth-applier.
        source("plain", tenant.name(), &plain_url, None),
    ]
    .concat();
    let sources_file = write(scratch.path(), "sources.yaml", &sources);
    run_ok(env.kubectl_cmd().args(["apply", "-f"]).arg(&sources_file));

    // The agent: the shipped account's token (TokenRequest), the Deployment's arguments;
    // --watch-namespace only keeps it off other tests' Sources.
    let token = run_ok(env.kubectl_cmd().args([
        "create",
        "token",
        &format!("{prefix}berth-agent"),
        "-n",
        system.name(),
        "--duration=1h",
    ]));
    let kubeconfig = token_kubeconfig(
        scratch.path(),
        &env.apiserver,
        &env.ca_file,
        token.trim(),
        system.name(),
    );
    let deployment = find(&docs, "Deployment", &deployment_name);
    let mut args = agent_args(deployment);
    args.extend(["--watch-namespace".to_string(), tenant.name().to_string()]);
    let agent = Process::spawn(
        env.berth_agent()
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAME", format!("{prefix}agent-0"))
            .env("POD_NAMESPACE", system.name())
            .env("RUST_LOG", "info,berth_agent=debug")
            .args(&args),
        scratch.path().join("agent.log"),
    );
    let tenant_ns = tenant.name().to_string();
    let context = |name: &'static str| {
        let agent = &agent;
        let tenant_ns = tenant_ns.clone();
        move || {
            let status = run(env.kubectl_cmd().args([
                "get",
                "sources.berth.dev",
                name,
                "-n",
                &tenant_ns,
                "-o",
                "yaml",
            ]));
            format!(
                "--- Source {name}\n{}\n--- agent log\n{}",
                status.stdout,
                agent.log()
            )
        }
    };

    // The team's Source is applied, as the team's applier.
    wait_until(
        "Source app Ready=True",
        Duration::from_secs(120),
        context("app"),
        || {
            ready(env, tenant.name(), "app")
                .is_some_and(|(s, r, _)| s == "True" && r == "Succeeded")
        },
    );
    let cm = run_ok(env.kubectl_cmd().args([
        "get",
        "configmap",
        "app-config",
        "-n",
        tenant.name(),
        "-o",
        "jsonpath={.data.greeting}",
    ]));
    assert_eq!(cm, "hello");
    let available = run_ok(env.kubectl_cmd().args([
        "get",
        "deployment",
        "web",
        "-n",
        tenant.name(),
        "-o",
        "jsonpath={.status.availableReplicas}",
    ]));
    assert_eq!(
        available, "1",
        "Ready=True only once the Deployment is available"
    );
    // The shipped RBAC lets the agent record Events on the Source.
    wait_until(
        "an Applied Event on Source app",
        Duration::from_secs(30),
        context("app"),
        || {
            let events = run_ok(env.kubectl_cmd().args([
                "get",
                "events.events.k8s.io",
                "-n",
                tenant.name(),
                "--field-selector",
                "regarding.name=app",
                "-o",
                "jsonpath={.items[*].reason}",
            ]));
            events.split_whitespace().any(|r| r == "Applied")
        },
    );
    wait_until(
        "Source plain Ready=True",
        Duration::from_secs(90),
        context("plain"),
        || {
            ready(env, tenant.name(), "plain")
                .is_some_and(|(s, r, _)| s == "True" && r == "Succeeded")
        },
    );
    let managers = run_ok(env.kubectl_cmd().args([
        "get",
        "configmap",
        "plain-config",
        "-n",
        tenant.name(),
        "-o",
        "json",
        "--show-managed-fields",
    ]));
    assert!(
        managers.contains("\"berth\""),
        "applied by berth: {managers}"
    );

    // A Source naming a ServiceAccount that is not the team's applier (here: one that does not
    // exist) is refused, and the condition names the account.
    wait_until(
        "Source ghost Ready=False",
        Duration::from_secs(90),
        context("ghost"),
        || ready(env, tenant.name(), "ghost").is_some_and(|(s, _, _)| s == "False"),
    );
    let (_, reason, message) = ready(env, tenant.name(), "ghost").unwrap();
    assert_eq!(reason, "Forbidden", "{message}");
    assert!(
        message.contains(&format!(
            "applying as ServiceAccount {}/ghost:",
            tenant.name()
        )) && message.contains("impersonate"),
        "the condition names the account: {message}"
    );

    // Escalation through the tenant: the ClusterRoleBinding is refused and never exists.
    wait_until(
        "Source escalate Ready=False",
        Duration::from_secs(90),
        context("escalate"),
        || ready(env, tenant.name(), "escalate").is_some_and(|(s, _, _)| s == "False"),
    );
    let (_, reason, message) = ready(env, tenant.name(), "escalate").unwrap();
    assert_eq!(reason, "Forbidden", "{message}");
    assert!(
        message.contains("clusterrolebindings") && message.contains("forbidden"),
        "{message}"
    );
    assert!(
        !message.contains("Status {"),
        "the condition carries the API server's sentence, not a dump: {message}"
    );
    let crb = run_ok(env.kubectl_cmd().args([
        "get",
        "clusterrolebinding",
        &escalation,
        "--ignore-not-found",
        "-o",
        "name",
    ]));
    assert!(
        crb.trim().is_empty(),
        "the tenant's artifact created a ClusterRoleBinding"
    );

    // By trying, with the agent's own token.
    let as_agent = || {
        let mut cmd = env.kubectl_cmd();
        cmd.env("KUBECONFIG", &kubeconfig);
        cmd
    };
    let out = run(as_agent().args(["get", "secret", "private", "-n", other.name(), "-o", "yaml"]));
    assert!(
        !out.status.success() && out.stderr.contains("forbidden"),
        "read another namespace's Secret: {}{}",
        out.stdout,
        out.stderr
    );
    assert!(
        !out.stdout.contains("aHVudGVyMg"),
        "the Secret's value came back"
    );
    let crb_file = write(
        scratch.path(),
        "crb.yaml",
        &std::fs::read_to_string(esc_dir.join("crb.yaml")).unwrap(),
    );
    let applier = format!("system:serviceaccount:{}:berth-applier", tenant.name());
    let out = run(as_agent()
        .args(["apply", "--server-side", "--as", &applier, "-f"])
        .arg(&crb_file));
    assert!(
        !out.status.success() && out.stderr.contains("forbidden"),
        "applied a ClusterRoleBinding as the applier: {}{}",
        out.stdout,
        out.stderr
    );
    let out = run(as_agent().args([
        "get",
        "configmaps",
        "-n",
        tenant.name(),
        "--as",
        &format!("system:serviceaccount:{}:default", tenant.name()),
    ]));
    assert!(
        !out.status.success() && out.stderr.contains("cannot impersonate"),
        "impersonated another account: {}{}",
        out.stdout,
        out.stderr
    );

    // And by SubjectAccessReview (as the API server's authorizer sees it).
    let agent_user = format!(
        "system:serviceaccount:{}:{prefix}berth-agent",
        system.name()
    );
    let sar_dir = scratch.path().join("sar");
    assert!(
        !access_review(
            env,
            &sar_dir,
            &agent_user,
            "get",
            "",
            "secrets",
            Some(other.name())
        ),
        "agent may read Secrets in {}",
        other.name()
    );
    assert!(
        !access_review(env, &sar_dir, &agent_user, "list", "", "secrets", None),
        "agent may list Secrets cluster-wide"
    );
    assert!(
        !access_review(
            env,
            &sar_dir,
            &applier,
            "create",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            None
        ),
        "the applier may create ClusterRoleBindings"
    );
    // Positive controls, so a "no" above is a real answer.
    assert!(
        access_review(
            env,
            &sar_dir,
            &agent_user,
            "get",
            "",
            "secrets",
            Some(tenant.name())
        ),
        "agent must read the team's trust keys"
    );
    assert!(
        access_review(
            env,
            &sar_dir,
            &applier,
            "create",
            "",
            "configmaps",
            Some(tenant.name())
        ),
        "the applier must write in its namespace"
    );
    assert!(
        !access_review(
            env,
            &sar_dir,
            &applier,
            "create",
            "",
            "configmaps",
            Some(other.name())
        ),
        "the applier may write in another namespace"
    );

    // Uninstalling deletes Sources (with the CRD); what they applied stays, still labelled as
    // a member of its ApplySet, so removing it is a deliberate, separate step.
    let source = run_ok(env.kubectl_cmd().args([
        "get",
        "sources.berth.dev",
        "app",
        "-n",
        tenant.name(),
        "-o",
        "json",
    ]));
    let source: Value = serde_json::from_str(&source).unwrap();
    let set_id = source["metadata"]["labels"]["applyset.kubernetes.io/id"]
        .as_str()
        .expect("ApplySet id label")
        .to_string();
    run_ok(env.kubectl_cmd().args([
        "delete",
        "sources.berth.dev",
        "app",
        "-n",
        tenant.name(),
        "--wait=true",
        "--timeout=60s",
    ]));
    std::thread::sleep(Duration::from_secs(3)); // a reconcile in flight would have finished by now
    let left = run_ok(env.kubectl_cmd().args([
        "get",
        "configmaps",
        "-n",
        tenant.name(),
        "-l",
        &format!("applyset.kubernetes.io/part-of={set_id}"),
        "-o",
        "name",
    ]));
    assert_eq!(
        left.trim(),
        "configmap/app-config",
        "the applied objects outlive their Source"
    );
    drop(agent);
}
