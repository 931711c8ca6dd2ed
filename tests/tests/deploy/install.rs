//! Installing berth from `deploy/` on an empty cluster (a second kube-apiserver, so the
//! shipped `berth-system` namespace and a cluster without the CRD are this test's alone):
//! the agent refuses to start without its CRD and says how to install it; every rendering of
//! `deploy/` passes server-side dry-run and Pod Security "restricted"; the shipped CRD is what
//! the agent generates; after `kubectl apply -k deploy/base` the agent starts with a token of
//! the shipped ServiceAccount, takes the leader Lease, and has no access it should not have;
//! with `overlays/simple` on top it applies cluster-scoped objects; its push receiver works
//! with the shipped RBAC; `kubectl delete -k` uninstalls and leaves applied objects in place.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{
    FreshCluster, agent_args, deploy_dir, documents, find, kustomize, push_signed_v1, relative,
    token_kubeconfig, wait_until,
};
use berth_e2e::{Process, env, run, run_ok};
use serde_json::Value;

/// Every kustomization in `deploy/` a user applies, rendered; the tenant one through an
/// overlay that names a namespace, as its instructions say.
fn renderings(env: &berth_e2e::Env, scratch: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for dir in ["base", "overlays/daemonset", "overlays/simple"] {
        out.push((dir.to_string(), kustomize(env, &deploy_dir().join(dir))));
    }
    let tenant = scratch.join("tenant");
    std::fs::create_dir_all(&tenant).unwrap();
    std::fs::write(
        tenant.join("kustomization.yaml"),
        format!(
            "namespace: team-a\nresources:\n  - {}\n",
            relative(&tenant, &deploy_dir().join("tenant"))
        ),
    )
    .unwrap();
    out.push((
        "tenant (namespace team-a)".to_string(),
        kustomize(env, &tenant),
    ));
    out
}

/// The pod template of every Deployment/DaemonSet meets the hardening the README promises.
fn assert_hardened(name: &str, docs: &[Value]) {
    let workloads: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "DaemonSet")
        .collect();
    if name.starts_with("tenant") {
        assert!(
            workloads.is_empty(),
            "{name}: the tenant kustomization runs nothing"
        );
        return;
    }
    assert_eq!(workloads.len(), 1, "{name}: exactly one agent workload");
    for w in workloads {
        let pod = &w["spec"]["template"]["spec"];
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"], true,
            "{name}: runAsNonRoot"
        );
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}: seccomp"
        );
        assert_eq!(
            pod["automountServiceAccountToken"], true,
            "{name}: the agent needs its token"
        );
        for c in pod["containers"].as_array().unwrap() {
            let sc = &c["securityContext"];
            assert_eq!(
                sc["readOnlyRootFilesystem"], true,
                "{name}: read-only root fs"
            );
            assert_eq!(
                sc["allowPrivilegeEscalation"], false,
                "{name}: no privilege escalation"
            );
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{name}: drop ALL"
            );
            assert!(
                c["resources"]["requests"]["memory"].is_string(),
                "{name}: memory request"
            );
            assert!(
                c["resources"]["limits"]["memory"].is_string(),
                "{name}: memory limit"
            );
        }
    }
    let sa = find(docs, "ServiceAccount", "berth-agent");
    assert_eq!(
        sa["automountServiceAccountToken"], false,
        "{name}: no token for other pods of the account"
    );
}

#[test]
fn deploy_installs_on_an_empty_cluster_and_the_agent_runs_with_its_own_least_privilege_account() {
    let env = env();
    let fresh = FreshCluster::start(env);
    let scratch = tempfile::tempdir().unwrap();
    let kubectl = || fresh.api.kubectl();

    // 1. The agent started before its CRD is installed stops at once and says what to do —
    //    not a silent crash loop.
    let mut agent = Process::spawn(
        env.berth_agent()
            .env("KUBECONFIG", &fresh.api.kubeconfig)
            .args(["run", "--log-format", "text"]),
        scratch.path().join("no-crd.log"),
    );
    let status = agent.wait_exit(Duration::from_secs(60));
    let log = agent.log();
    let status = status.unwrap_or_else(|| panic!("the agent kept running without its CRD:\n{log}"));
    assert!(
        !status.success(),
        "exit status without the CRD: {status}\n{log}"
    );
    assert!(
        log.contains("CRD") && log.contains("berth-agent crd"),
        "names the CRD and how to install it:\n{log}"
    );
    drop(agent);

    // 2. The CRD shipped in deploy/ is exactly what the agent generates.
    let generated = run_ok(env.berth_agent().arg("crd"));
    let shipped = std::fs::read_to_string(deploy_dir().join("base/crd.yaml")).unwrap();
    assert!(
        generated == shipped,
        "deploy/base/crd.yaml differs from `berth-agent crd`; regenerate it: target/debug/berth-agent crd > deploy/base/crd.yaml"
    );

    // 3. Every rendering passes server-side dry-run and Pod Security "restricted". Dry-run
    //    needs the namespace to exist: create it from the base rendering (for real).
    let all = renderings(env, scratch.path());
    let base_docs = documents(&all[0].1);
    let ns = find(&base_docs, "Namespace", "berth-system");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let ns_file = scratch.path().join("namespace.json");
    std::fs::write(&ns_file, ns.to_string()).unwrap();
    run_ok(
        kubectl()
            .args(["apply", "--server-side", "-f"])
            .arg(&ns_file),
    );
    run_ok(kubectl().args(["create", "namespace", "team-a"]));
    for (name, yaml) in &all {
        let docs = documents(yaml);
        assert_hardened(name, &docs);
        if !name.starts_with("tenant") {
            let crd = find(&docs, "CustomResourceDefinition", "sources.berth.dev");
            let generated_crd = documents(&generated).remove(0);
            assert_eq!(
                crd["spec"], generated_crd["spec"],
                "{name}: the rendered CRD's spec is the generated one"
            );
        }
        let file = scratch
            .path()
            .join(format!("{}.yaml", name.replace(['/', ' ', '(', ')'], "_")));
        std::fs::write(&file, yaml).unwrap();
        let out = run(kubectl()
            .args(["apply", "--server-side", "--dry-run=server", "-f"])
            .arg(&file));
        assert!(
            out.status.success(),
            "{name}: server-side dry-run failed:\n{}\n{}",
            out.stdout,
            out.stderr
        );
        assert!(
            !out.stderr.contains("PodSecurity"),
            "{name}: violates Pod Security restricted:\n{}",
            out.stderr
        );
        let applied = out
            .stdout
            .lines()
            .filter(|l| l.contains("(server dry run)"))
            .count();
        assert_eq!(
            applied,
            docs.len(),
            "{name}: every object dry-run:\n{}",
            out.stdout
        );
    }

    // 4. Install for real, as the README says.
    run_ok(
        kubectl()
            .args(["apply", "--server-side", "-k"])
            .arg(deploy_dir().join("base")),
    );
    run_ok(kubectl().args([
        "wait",
        "--for=condition=Established",
        "crd/sources.berth.dev",
        "--timeout=60s",
    ]));

    // 5. The agent with a token of the shipped ServiceAccount (TokenRequest API), started the
    //    way the Deployment starts it, takes the Lease and serves; no other identity involved.
    let token = run_ok(kubectl().args([
        "create",
        "token",
        "berth-agent",
        "-n",
        "berth-system",
        "--duration=1h",
    ]));
    let sa_kubeconfig = token_kubeconfig(
        scratch.path(),
        &fresh.api.url,
        &env.ca_file,
        token.trim(),
        "berth-system",
    );
    let deployment = find(&base_docs, "Deployment", "berth-agent");
    let args = agent_args(deployment);
    let mut agent = Process::spawn(
        env.berth_agent()
            .env("KUBECONFIG", &sa_kubeconfig)
            .env("POD_NAME", "berth-agent-e2e-0")
            .env("POD_NAMESPACE", "berth-system")
            .args(&args),
        scratch.path().join("agent.log"),
    );
    if args.iter().any(|a| a == "--leader-elect") {
        wait_until(
            "the agent to hold the Lease berth-system/berth-agent",
            Duration::from_secs(60),
            || format!("--- agent log\n{}", agent_log(scratch.path())),
            || {
                let out = run(kubectl().args([
                    "get",
                    "lease",
                    "berth-agent",
                    "-n",
                    "berth-system",
                    "-o",
                    "jsonpath={.spec.holderIdentity}",
                ]));
                out.stdout.trim() == "berth-agent-e2e-0"
            },
        );
    }
    wait_until(
        "the controller to start",
        Duration::from_secs(60),
        || agent.log(),
        || agent.log().contains("controller started"),
    );
    assert!(agent.running(), "the agent exited:\n{}", agent.log());

    // 6. What the shipped account may not do (TokenRequest token, checked by trying).
    let as_agent = || {
        let mut cmd = env.kubectl_cmd();
        cmd.env("KUBECONFIG", &sa_kubeconfig);
        cmd
    };
    let out = run(as_agent().args(["get", "secrets", "-n", "team-a"]));
    assert!(
        !out.status.success() && out.stderr.contains("forbidden"),
        "reads Secrets of a namespace that did not opt in: {}{}",
        out.stdout,
        out.stderr
    );
    let out = run(as_agent().args(["get", "secrets", "-n", "berth-system"]));
    assert!(
        !out.status.success() && out.stderr.contains("forbidden"),
        "reads Secrets in its own namespace: {}{}",
        out.stdout,
        out.stderr
    );
    for (verb, resource, ns) in [
        ("create", "clusterrolebindings", None),
        ("create", "deployments", Some("team-a")),
        ("impersonate", "serviceaccounts", Some("team-a")),
        ("delete", "sources.berth.dev", Some("team-a")),
        ("update", "leases", Some("kube-system")),
    ] {
        let mut cmd = as_agent();
        cmd.args(["auth", "can-i", verb, resource]);
        if let Some(ns) = ns {
            cmd.args(["-n", ns]);
        }
        let out = run(&mut cmd);
        assert_eq!(
            out.stdout.trim(),
            "no",
            "the agent may {verb} {resource} in {ns:?}"
        );
    }
    let out = run(as_agent().args([
        "auth",
        "can-i",
        "get",
        "secrets/signing-key",
        "-n",
        "berth-system",
    ]));
    assert_eq!(
        out.stdout.trim(),
        "no",
        "the agent may read any Secret of its namespace"
    );
    // …and what it needs, so the checks above can tell "no" from a broken token.
    for verb in ["list", "watch"] {
        let out = run(as_agent().args([
            "auth",
            "can-i",
            verb,
            "secrets/berth-receiver",
            "-n",
            "berth-system",
        ]));
        assert_eq!(
            out.stdout.trim(),
            "yes",
            "the agent must {verb} its receiver Secret: {}",
            out.stderr
        );
    }
    let out = run(as_agent().args([
        "auth",
        "can-i",
        "watch",
        "sources.berth.dev",
        "--all-namespaces",
    ]));
    assert_eq!(
        out.stdout.trim(),
        "yes",
        "the agent must watch Sources: {}",
        out.stderr
    );
    assert!(agent.running(), "the agent exited:\n{}", agent.log());

    // 7. One team owns this cluster: overlays/simple on top. A Source in berth-system naming
    //    berth-applier may apply cluster-scoped objects and other namespaces; the running
    //    agent (same token) picks up its new rights without a restart.
    run_ok(
        kubectl()
            .args(["apply", "--server-side", "-k"])
            .arg(deploy_dir().join("overlays/simple")),
    );
    let (key, public) = env.keypair(scratch.path(), "ci");
    run_ok(
        kubectl()
            .args([
                "create",
                "secret",
                "generic",
                "signing-key",
                "-n",
                "berth-system",
            ])
            .arg(format!("--from-file=cosign.pub={}", public.display())),
    );
    let app = scratch.path().join("platform");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("platform.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: platform}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: platform-reader}\nrules: [{apiGroups: [\"\"], resources: [configmaps], verbs: [get]}]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: platform}\ndata: {tier: gold}\n",
    )
    .unwrap();
    let url = push_signed_v1(env, &app, &key, "deploy-simple");
    let source = scratch.path().join("source.yaml");
    std::fs::write(
        &source,
        format!("apiVersion: berth.dev/v1alpha1\nkind: Source\nmetadata: {{name: platform, namespace: berth-system}}\nspec:\n  url: {url}\n  ref: {{tag: v1}}\n  interval: 5s\n  timeout: 1m\n  insecure: true\n  serviceAccountName: berth-applier\n  verify:\n    keys:\n      - secretRef: {{name: signing-key}}\n"),
    )
    .unwrap();
    run_ok(kubectl().args(["apply", "-f"]).arg(&source));
    let waited = run(kubectl().args([
        "wait",
        "--for=condition=Ready",
        "source/platform",
        "-n",
        "berth-system",
        "--timeout=120s",
    ]));
    if !waited.status.success() {
        let status = run(kubectl().args([
            "get",
            "source",
            "platform",
            "-n",
            "berth-system",
            "-o",
            "yaml",
        ]));
        panic!(
            "the platform Source did not become Ready:\n{}\n--- agent log\n{}",
            status.stdout,
            agent.log()
        );
    }
    assert_eq!(
        run_ok(kubectl().args([
            "get",
            "configmap",
            "settings",
            "-n",
            "platform",
            "-o",
            "jsonpath={.data.tier}"
        ])),
        "gold"
    );
    run_ok(kubectl().args(["get", "clusterrole", "platform-reader"]));

    // 8. The push receiver works with the shipped RBAC once its Secret exists, and refuses
    //    anyone without the token.
    if let Some(addr) = receiver_addr(&agent.log()) {
        run_ok(kubectl().args([
            "create",
            "secret",
            "generic",
            "berth-receiver",
            "-n",
            "berth-system",
            "--from-literal=token=e2e-receiver-token",
        ]));
        let post = |token: &str| {
            let out = run_ok(Command::new("curl").args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "POST",
                "--max-time",
                "10",
                "-H",
                &format!("Authorization: Bearer {token}"),
                &format!("http://{addr}/hook/sources/berth-system/platform"),
            ]));
            out.trim().to_string()
        };
        assert_eq!(post("wrong-token"), "401", "a wrong token is refused");
        // The receiver learns of the new Secret through its watch: within a moment, not at once.
        let start = Instant::now();
        while post("e2e-receiver-token") != "202" {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the leader accepts a trigger\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    } else {
        assert!(
            !args.iter().any(|a| a.starts_with("--receiver-addr")),
            "the receiver did not log its address:\n{}",
            agent.log()
        );
    }
    assert!(agent.running(), "the agent exited:\n{}", agent.log());
    drop(agent);

    // 9. Uninstall as the README says: the agent, its RBAC, the CRD and every Source go; what
    //    the Sources applied stays, still labelled as members of their ApplySet.
    run_ok(
        kubectl()
            .args(["delete", "--wait=false", "-k"])
            .arg(deploy_dir().join("overlays/simple")),
    );
    run_ok(kubectl().args([
        "wait",
        "--for=delete",
        "crd/sources.berth.dev",
        "--timeout=60s",
    ]));
    let gone = run(kubectl().args(["get", "clusterrole", "berth-agent"]));
    assert!(
        !gone.status.success(),
        "ClusterRole berth-agent survived the uninstall"
    );
    assert_eq!(
        run_ok(kubectl().args([
            "get",
            "configmap",
            "settings",
            "-n",
            "platform",
            "-o",
            "jsonpath={.data.tier}"
        ])),
        "gold"
    );
    let members = run_ok(kubectl().args([
        "get",
        "clusterrole",
        "platform-reader",
        "-o",
        "jsonpath={.metadata.labels}",
    ]));
    assert!(
        members.contains("applyset.kubernetes.io/part-of"),
        "still labelled as an ApplySet member: {members}"
    );
    drop(fresh);
}

/// The address the receiver logged it listens on (JSON log line).
fn receiver_addr(log: &str) -> Option<String> {
    log.lines()
        .filter(|l| l.contains("receiving push notifications"))
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|v| v["fields"]["addr"].as_str().map(str::to_string))
}

fn agent_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
}
