//! User health rules in CEL against the real API server: a Source's `healthCheckExprs` decide
//! when a custom resource is healthy (the built-in rules would call it current at once), the
//! conditions say which rule and what it saw, and a rule that cannot compile refuses the
//! Source; `berth-agent apply --health-check FILE` does the same from a workstation.

use std::time::Duration;

use crate::common::*;
use berth_e2e::{Env, env, run, run_ok};

/// A CRD of `Widget` in `group` with a status subresource (so a test writes the status the way
/// a controller would), and a Widget `db`.
fn widget_files(group: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "crd.yaml",
            format!(
                "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: widgets.{group}}}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}}\n  versions:\n    - name: v1\n      served: true\n      storage: true\n      subresources: {{status: {{}}}}\n      schema:\n        openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}\n"
            ),
        ),
        (
            "widget.yaml",
            format!(
                "apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: db\nspec:\n  size: 1\n"
            ),
        ),
        ("cm.yaml", configmap("settings", "1")),
    ]
}

/// The rule list both the Source and the `--health-check` file carry, indented by `indent`.
fn rules_yaml(group: &str, indent: &str) -> String {
    format!(
        "{indent}- apiVersion: {group}/v1\n{indent}  kind: Widget\n{indent}  current: \"status.phase == 'Ready'\"\n{indent}  failed: \"status.phase == 'Failed'\"\n"
    )
}

/// The CRD of the test, deleted (without waiting) when dropped: namespaces go, CRDs stay.
struct WidgetCrd<'a> {
    env: &'a Env,
    group: String,
}

impl Drop for WidgetCrd<'_> {
    fn drop(&mut self) {
        let _ = self
            .env
            .kubectl_cmd()
            .args(["delete", &format!("crd/widgets.{}", self.group)])
            .args(["--ignore-not-found", "--wait=false"])
            .output();
    }
}

/// Writes the Widget's status as its controller would.
fn set_phase(env: &Env, ns: &str, group: &str, phase: &str) {
    run_ok(env.kubectl_cmd().args([
        "patch",
        &format!("widgets.{group}"),
        "db",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        &format!("{{\"status\":{{\"phase\":\"{phase}\"}}}}"),
    ]));
}

#[test]
fn a_rule_that_never_holds_times_out_naming_it_and_what_it_saw_then_a_status_patch_makes_it_ready()
{
    let env = env();
    env.install_source_crd();
    let ns = env.namespace("agent-cel");
    let n = ns.name();
    let group = format!("{n}.e2e.berth.dev");
    let _crd = WidgetCrd {
        env,
        group: group.clone(),
    };
    let repo = env.repo("agent-cel");
    let files = manifests(&widget_files(&group));
    push(env, &env.registry_dist, &repo, "live", files.path());
    // timeout bounds each health wait: 8s per attempt; a failed one is retried after 5s.
    let extra = format!("  healthCheckExprs:\n{}", rules_yaml(&group, "    "));
    let source = source_yaml(env, n, "shop", &repo, "live", "5s", &extra)
        .replace("timeout: 1m", "timeout: 8s");
    kubectl_apply(env, source);
    // The same Source with a rule that does not compile.
    let broken = source_yaml(env, n, "broken", &repo, "live", "5s", "")
        + &format!(
            "  healthCheckExprs:\n    - {{apiVersion: {group}/v1, kind: Widget, current: \"status.phase ==\"}}\n"
        );
    kubectl_apply(env, broken);
    let stored = get(env, "sources.berth.dev", n, "shop").unwrap();
    assert!(
        stored["spec"]["healthCheckExprs"][0]["current"].is_string(),
        "the API server kept the rules (a Source CRD without the field would prune them): {stored}"
    );
    let agent = Agent::start(env, "cel", n, &[]);

    // The agent applies the Widget; its controller (this test) reports it provisioning.
    wait_until(
        "the Widget applied",
        Duration::from_secs(60),
        &[&agent],
        || {
            // Asking for a kind the API server does not serve yet is an error, not an absence.
            let established = get(env, "crd", "", &format!("widgets.{group}")).is_some_and(|c| {
                c["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Established" && c["status"] == "True")
                })
            });
            established && get(env, &format!("widgets.{group}"), n, "db").is_some()
        },
    );
    set_phase(env, n, &group, "Provisioning");
    let saw = "status {\"phase\":\"Provisioning\"}";
    wait_until(
        "Ready=False HealthCheckTimeout with what the rule saw",
        Duration::from_secs(60),
        &[&agent],
        || condition(env, n, "shop", "Ready").is_some_and(|c| c.2.contains(saw)),
    );
    let (status, reason, message) = condition(env, n, "shop", "Ready").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "HealthCheckTimeout"),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "Widget.{group} {n}/db: health rule for Widget.{group}: current \"status.phase == 'Ready'\" is not true yet; {saw}"
        )),
        "names the object, the rule, the expression and the observed status: {message}"
    );
    assert!(
        get(env, "configmap", n, "settings").is_some(),
        "the rest of the artifact is applied"
    );

    // The broken Source is refused on its spec, naming the rule, and nothing waits for it.
    wait_until("broken refused", Duration::from_secs(30), &[&agent], || {
        condition(env, n, "broken", "Ready").is_some()
    });
    let (status, reason, message) = condition(env, n, "broken", "Ready").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "InvalidSpec"),
        "{message}"
    );
    assert!(
        message.starts_with(&format!(
            "spec.healthCheckExprs[0] (Widget.{group}) current: does not parse as CEL: 1:"
        )),
        "{message}"
    );
    assert!(
        condition(env, n, "broken", "Stalled").is_some_and(|c| c.0 == "True"),
        "only an edit can fix it"
    );

    // The failed expression ends the wait at once, without the timeout.
    set_phase(env, n, &group, "Failed");
    wait_until(
        "HealthCheckFailed",
        Duration::from_secs(60),
        &[&agent],
        || condition(env, n, "shop", "Ready").is_some_and(|c| c.1 == "HealthCheckFailed"),
    );
    let (_, _, message) = condition(env, n, "shop", "Ready").unwrap();
    assert!(
        message.contains(&format!(
            "Widget.{group} {n}/db failed: health rule for Widget.{group}: failed \"status.phase == 'Failed'\" is true; status {{\"phase\":\"Failed\"}}"
        )),
        "{message}"
    );

    set_phase(env, n, &group, "Ready");
    wait_until("Ready=True", Duration::from_secs(60), &[&agent], || {
        condition(env, n, "shop", "Ready").is_some_and(|c| c.0 == "True" && c.1 == "Succeeded")
    });
}

#[test]
fn apply_with_a_health_check_file_waits_on_the_rule_and_refuses_a_rule_that_does_not_compile() {
    let env = env();
    let ns = env.namespace("agent-cel-cli");
    let n = ns.name();
    let group = format!("{n}.e2e.berth.dev");
    let _crd = WidgetCrd {
        env,
        group: group.clone(),
    };
    let dir = manifests(&widget_files(&group));
    let rules = tempfile::tempdir().unwrap();
    let good = rules.path().join("rules.yaml");
    std::fs::write(&good, rules_yaml(&group, "")).unwrap();
    let bad = rules.path().join("bad.yaml");
    std::fs::write(
        &bad,
        rules_yaml(&group, "").replace("status.phase == 'Failed'", "status.phase =="),
    )
    .unwrap();
    let apply = |rules: &std::path::Path, timeout: &str| {
        let mut cmd = env.berth_agent();
        cmd.args(["apply", "--dir"])
            .arg(dir.path())
            .args(["-n", n, "--name", "widgets", "--wait", "--timeout", timeout])
            .arg("--health-check")
            .arg(rules);
        run(&mut cmd)
    };

    let out = apply(&bad, "5s");
    assert_eq!(out.code, Some(2), "a usage error: {}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "--health-check {}: [0] (Widget.{group}) failed: does not parse as CEL: 1:",
            bad.display()
        )),
        "{}",
        out.stderr
    );
    assert!(
        get(env, "configmap", n, "settings").is_none(),
        "refused before anything was applied"
    );

    // The set applied first without waiting, so that the next apply's deadline (for apply
    // and for health, each) is spent on the health wait alone, however loaded the machine.
    let mut first = env.berth_agent();
    first
        .args(["apply", "--dir"])
        .arg(dir.path())
        .args(["-n", n, "--name", "widgets"]);
    run_ok(&mut first);
    // Built in, a Widget without conditions is current at once; the rule waits for its phase.
    let out = apply(&good, "4s");
    assert_eq!(out.code, Some(5), "unhealthy: {}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "Widget.{group} {n}/db: health rule for Widget.{group}: no expression could be evaluated"
        )) && out.stderr.contains("no status"),
        "no status yet: says why nothing could be evaluated: {}",
        out.stderr
    );

    set_phase(env, n, &group, "Ready");
    let out = apply(&good, "30s");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}
