//! Health of applied objects by kstatus rules (Deployments rolled out, Jobs complete, CRDs
//! established, …) and waiting for it up to a deadline.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Client;
use kube::api::{Api, DynamicObject};
use serde_json::Value;

use crate::apply::{Applied, MAX_CONCURRENT_APPLIES};
use crate::plan::{ObjectKey, PlannedObject};

/// Longest pause between health polls: long enough not to load the API server with GETs of
/// slow rollouts.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// First pause: CRDs are usually Established within a few hundred milliseconds, and a
/// reconcile waiting on them should not sleep for the full interval.
pub const FIRST_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// At most this many unhealthy objects are named in a timeout message.
pub const MAX_PENDING_SHOWN: usize = 5;

/// kstatus verdict for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Current,
    InProgress(String),
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("{object} failed: {reason}")]
    Failed { object: ObjectKey, reason: String },
    #[error("not healthy within {timeout:?}: {}", pending_list(.pending))]
    Timeout { timeout: Duration, pending: Vec<(ObjectKey, String)> },
    #[error("reading {object} for its health: {}", crate::api_error::message(.source))]
    Read { object: ObjectKey, source: kube::Error },
}

fn pending_list(p: &[(ObjectKey, String)]) -> String {
    let mut s: Vec<String> = p.iter().take(MAX_PENDING_SHOWN).map(|(k, r)| format!("{k}: {r}")).collect();
    if p.len() > MAX_PENDING_SHOWN {
        s.push(format!("and {} more", p.len() - MAX_PENDING_SHOWN));
    }
    s.join("; ")
}

fn int(v: &Value, path: &[&str]) -> Option<i64> {
    path.iter().try_fold(v, |v, p| v.get(*p)).and_then(Value::as_i64)
}

fn string<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, p| v.get(*p)).and_then(Value::as_str)
}

/// `(status, reason, message)` of the condition `type_` in `status.conditions`.
fn condition<'a>(status: &'a Value, type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
    status.get("conditions")?.as_array()?.iter().find_map(|c| {
        (c.get("type")?.as_str()? == type_).then(|| {
            (
                c.get("status").and_then(Value::as_str).unwrap_or("Unknown"),
                c.get("reason").and_then(Value::as_str).unwrap_or(""),
                c.get("message").and_then(Value::as_str).unwrap_or(""),
            )
        })
    })
}

/// The kstatus rules for the kinds berth knows, and the generic `Ready`/`Stalled` conditions
/// for the rest. Objects without a status (ConfigMaps, Services, RBAC, …) are current once
/// applied.
pub fn assess(group: &str, kind: &str, obj: &DynamicObject) -> Health {
    let null = Value::Null;
    let spec = obj.data.get("spec").unwrap_or(&null);
    let status = obj.data.get("status").unwrap_or(&null);
    let in_progress = |s: String| Health::InProgress(s);

    if let (Some(generation), Some(observed)) = (obj.metadata.generation, int(status, &["observedGeneration"]))
        && observed < generation
    {
        return in_progress(format!("controller has not observed generation {generation} yet"));
    }
    match (group, kind) {
        ("apps", "Deployment") => {
            if let Some(("False", "ProgressDeadlineExceeded", msg)) = condition(status, "Progressing") {
                return Health::Failed(format!("progress deadline exceeded: {msg}"));
            }
            if status.is_null() || int(status, &["observedGeneration"]).is_none() {
                return in_progress("rollout not observed yet".into());
            }
            let want = int(spec, &["replicas"]).unwrap_or(1);
            let updated = int(status, &["updatedReplicas"]).unwrap_or(0);
            let total = int(status, &["replicas"]).unwrap_or(0);
            let available = int(status, &["availableReplicas"]).unwrap_or(0);
            let ready = int(status, &["readyReplicas"]).unwrap_or(0);
            if updated < want {
                in_progress(format!("{updated}/{want} replicas updated"))
            } else if total > updated {
                in_progress(format!("{} old replicas pending termination", total - updated))
            } else if available < want || ready < want {
                in_progress(format!("{ready}/{want} replicas ready, {available} available"))
            } else {
                Health::Current
            }
        }
        ("apps", "StatefulSet") => {
            if int(status, &["observedGeneration"]).is_none() {
                return in_progress("rollout not observed yet".into());
            }
            let want = int(spec, &["replicas"]).unwrap_or(1);
            let ready = int(status, &["readyReplicas"]).unwrap_or(0);
            let updated = int(status, &["updatedReplicas"]).unwrap_or(0);
            let rolling = string(spec, &["updateStrategy", "type"]).unwrap_or("RollingUpdate") == "RollingUpdate";
            if ready < want {
                in_progress(format!("{ready}/{want} replicas ready"))
            } else if rolling
                && (updated < want || string(status, &["currentRevision"]) != string(status, &["updateRevision"]))
            {
                in_progress(format!("{updated}/{want} replicas updated"))
            } else {
                Health::Current
            }
        }
        ("apps", "DaemonSet") => {
            if int(status, &["observedGeneration"]).is_none() {
                return in_progress("rollout not observed yet".into());
            }
            let desired = int(status, &["desiredNumberScheduled"]).unwrap_or(0);
            let updated = int(status, &["updatedNumberScheduled"]).unwrap_or(0);
            let available = int(status, &["numberAvailable"]).unwrap_or(0);
            if updated < desired || available < desired {
                in_progress(format!("{available}/{desired} pods available, {updated} updated"))
            } else {
                Health::Current
            }
        }
        ("batch", "Job") => match (condition(status, "Complete"), condition(status, "Failed")) {
            (_, Some(("True", reason, msg))) => Health::Failed(format!("job failed ({reason}): {msg}")),
            (Some(("True", _, _)), _) => Health::Current,
            _ => in_progress("job not complete".into()),
        },
        ("apiextensions.k8s.io", "CustomResourceDefinition") => match condition(status, "Established") {
            Some(("True", _, _)) => Health::Current,
            _ => in_progress("not established yet".into()),
        },
        ("", "Namespace") => match string(status, &["phase"]) {
            Some("Active") | None => Health::Current,
            Some(p) => in_progress(format!("phase {p}")),
        },
        ("", "PersistentVolumeClaim") => match string(status, &["phase"]) {
            Some("Bound") => Health::Current,
            Some("Lost") => Health::Failed("claim lost its volume".into()),
            p => in_progress(format!("phase {}", p.unwrap_or("Pending"))),
        },
        ("", "Pod") => match string(status, &["phase"]) {
            Some("Succeeded") => Health::Current,
            Some("Failed") => Health::Failed("pod failed".into()),
            _ => match condition(status, "Ready") {
                Some(("True", _, _)) => Health::Current,
                _ => in_progress("pod not ready".into()),
            },
        },
        _ => {
            if let Some(("True", reason, msg)) = condition(status, "Stalled") {
                return Health::Failed(format!("stalled ({reason}): {msg}"));
            }
            match condition(status, "Ready") {
                Some(("False", reason, msg)) | Some(("Unknown", reason, msg)) => {
                    in_progress(format!("not ready ({reason}): {msg}"))
                }
                _ => Health::Current,
            }
        }
    }
}

/// Waits until every object is current or one fails, up to `timeout`. The apply responses
/// give the first verdict, so only objects not already current are polled.
pub async fn wait_healthy(
    client: &Client,
    applied: &[(&PlannedObject, &Applied)],
    timeout: Duration,
) -> Result<(), HealthError> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<(&PlannedObject, String)> = Vec::new();
    for (o, a) in applied {
        match assess(&o.key.group, &o.key.kind, &a.object) {
            Health::Current => {}
            Health::Failed(reason) => return Err(HealthError::Failed { object: o.key.clone(), reason }),
            Health::InProgress(reason) => pending.push((o, reason)),
        }
    }
    let mut pause = FIRST_POLL_INTERVAL;
    while !pending.is_empty() {
        if Instant::now() >= deadline {
            return Err(HealthError::Timeout {
                timeout,
                pending: pending.into_iter().map(|(o, r)| (o.key.clone(), r)).collect(),
            });
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(POLL_INTERVAL);
        let futures: Vec<_> = pending.iter().map(|(o, _)| poll_one(client, o)).collect();
        let verdicts: Vec<Result<(&PlannedObject, Health), HealthError>> =
            futures::stream::iter(futures).buffered(MAX_CONCURRENT_APPLIES).collect().await;
        let mut still = Vec::new();
        for v in verdicts {
            let (o, h) = v?;
            match h {
                Health::Current => {}
                Health::Failed(reason) => return Err(HealthError::Failed { object: o.key.clone(), reason }),
                Health::InProgress(reason) => still.push((o, reason)),
            }
        }
        pending = still;
    }
    Ok(())
}

async fn poll_one<'a>(client: &Client, o: &'a PlannedObject) -> Result<(&'a PlannedObject, Health), HealthError> {
    let api: Api<DynamicObject> = match &o.key.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &o.resource),
        None => Api::all_with(client.clone(), &o.resource),
    };
    match api.get(&o.key.name).await {
        Ok(live) => Ok((o, assess(&o.key.group, &o.key.kind, &live))),
        Err(source) => Err(HealthError::Read { object: o.key.clone(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> DynamicObject {
        match serde_json::from_value(v) {
            Ok(o) => o,
            Err(e) => panic!("test object: {e}"),
        }
    }

    #[test]
    fn deployment_is_current_only_when_rolled_out() {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "generation": 2},
            "spec": {"replicas": 2},
            "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}});
        assert!(
            matches!(assess("apps", "Deployment", &obj(d.clone())), Health::InProgress(r) if r.contains("old replicas"))
        );
        d["status"]["replicas"] = json!(2);
        assert_eq!(assess("apps", "Deployment", &obj(d.clone())), Health::Current);
        d["status"]["observedGeneration"] = json!(1);
        assert!(matches!(assess("apps", "Deployment", &obj(d)), Health::InProgress(_)));
    }

    #[test]
    fn failed_job_and_unestablished_crd() {
        let j = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
            "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}});
        assert!(matches!(assess("batch", "Job", &obj(j)), Health::Failed(r) if r.contains("BackoffLimitExceeded")));
        let c = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "x"}, "status": {}});
        assert!(matches!(assess("apiextensions.k8s.io", "CustomResourceDefinition", &obj(c)), Health::InProgress(_)));
    }

    #[test]
    fn objects_without_status_are_current() {
        let c = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}});
        assert_eq!(assess("", "ConfigMap", &obj(c)), Health::Current);
    }
}
