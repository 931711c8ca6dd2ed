//! Health of applied objects by kstatus rules (Deployments rolled out, Jobs complete, CRDs
//! established, …) and waiting for it up to a deadline.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Client;
use kube::api::DynamicObject;
use serde_json::Value;

use crate::apply::{AppliedObject, MAX_CONCURRENT_APPLIES};
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

/// Object keys are boxed: unboxed, they would make every `Result` that carries this error
/// (and the sync and reconcile errors around it) large.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("{object} failed: {reason}")]
    Failed {
        object: Box<ObjectKey>,
        reason: String,
    },
    #[error("not healthy within {timeout:?}: {}", pending_list(.pending))]
    Timeout {
        timeout: Duration,
        pending: Vec<(ObjectKey, String)>,
    },
    #[error("reading {object} for its health: {}", crate::api_error::message(.source))]
    Read {
        object: Box<ObjectKey>,
        source: kube::Error,
    },
    /// The object was deleted (by another controller or by hand) while berth waited for it.
    #[error(
        "{object} was deleted while berth waited for it to become healthy (by a controller or by hand); it is applied again at the next reconcile"
    )]
    Gone { object: Box<ObjectKey> },
}

fn pending_list(p: &[(ObjectKey, String)]) -> String {
    let mut s: Vec<String> = p
        .iter()
        .take(MAX_PENDING_SHOWN)
        .map(|(k, r)| format!("{k}: {r}"))
        .collect();
    if p.len() > MAX_PENDING_SHOWN {
        s.push(format!("and {} more", p.len() - MAX_PENDING_SHOWN));
    }
    s.join("; ")
}

fn int(v: &Value, path: &[&str]) -> Option<i64> {
    path.iter()
        .try_fold(v, |v, p| v.get(*p))
        .and_then(Value::as_i64)
}

fn string<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, p| v.get(*p))
        .and_then(Value::as_str)
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

    if let (Some(generation), Some(observed)) = (
        obj.metadata.generation,
        int(status, &["observedGeneration"]),
    ) && observed < generation
    {
        return in_progress(format!(
            "controller has not observed generation {generation} yet"
        ));
    }
    match (group, kind) {
        ("apps", "Deployment") => {
            if let Some(("False", "ProgressDeadlineExceeded", msg)) =
                condition(status, "Progressing")
            {
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
                in_progress(format!(
                    "{} old replicas pending termination",
                    total - updated
                ))
            } else if available < want || ready < want {
                in_progress(format!(
                    "{ready}/{want} replicas ready, {available} available"
                ))
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
            let rolling = string(spec, &["updateStrategy", "type"]).unwrap_or("RollingUpdate")
                == "RollingUpdate";
            if ready < want {
                in_progress(format!("{ready}/{want} replicas ready"))
            } else if rolling
                && (updated < want
                    || string(status, &["currentRevision"]) != string(status, &["updateRevision"]))
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
                in_progress(format!(
                    "{available}/{desired} pods available, {updated} updated"
                ))
            } else {
                Health::Current
            }
        }
        ("batch", "Job") => match (condition(status, "Complete"), condition(status, "Failed")) {
            (_, Some(("True", reason, msg))) => {
                Health::Failed(format!("job failed ({reason}): {msg}"))
            }
            (Some(("True", _, _)), _) => Health::Current,
            _ => in_progress("job not complete".into()),
        },
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            match condition(status, "Established") {
                Some(("True", _, _)) => Health::Current,
                _ => in_progress("not established yet".into()),
            }
        }
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
    applied: &[(&PlannedObject, &AppliedObject)],
    timeout: Duration,
) -> Result<(), HealthError> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<Pending> = Vec::new();
    for (o, a) in applied {
        match assess(&o.key.group, &o.key.kind, &a.object) {
            Health::Current => {}
            Health::Failed(reason) => {
                return Err(HealthError::Failed {
                    object: Box::new(o.key.clone()),
                    reason,
                });
            }
            Health::InProgress(reason) => pending.push(Pending {
                object: o,
                reason,
                seen: a.resource_version.clone(),
                ttl: job_ttl(&a.object),
            }),
        }
    }
    let mut pause = FIRST_POLL_INTERVAL;
    while !pending.is_empty() {
        if Instant::now() >= deadline {
            return Err(HealthError::Timeout {
                timeout,
                pending: pending
                    .into_iter()
                    .map(|p| (p.object.key.clone(), p.reason))
                    .collect(),
            });
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(POLL_INTERVAL);
        let futures: Vec<_> = pending.into_iter().map(|p| poll_one(client, p)).collect();
        let verdicts: Vec<Result<(Pending, Health), HealthError>> = futures::stream::iter(futures)
            .buffered(MAX_CONCURRENT_APPLIES)
            .collect()
            .await;
        let mut still = Vec::new();
        for v in verdicts {
            let (mut p, h) = v?;
            match h {
                Health::Current => {}
                Health::Failed(reason) => {
                    return Err(HealthError::Failed {
                        object: Box::new(p.object.key.clone()),
                        reason,
                    });
                }
                Health::InProgress(reason) => {
                    p.reason = reason;
                    still.push(p);
                }
            }
        }
        pending = still;
    }
    Ok(())
}

/// An object not healthy yet, and what berth last saw of it.
struct Pending<'a> {
    object: &'a PlannedObject,
    reason: String,
    /// resourceVersion of the last answer: where a replay of its last changes starts.
    seen: Option<String>,
    /// `spec.ttlSecondsAfterFinished` of a Job: once finished, the TTL controller deletes it.
    ttl: Option<i64>,
}

fn job_ttl(o: &DynamicObject) -> Option<i64> {
    o.data
        .get("spec")
        .and_then(|s| s.get("ttlSecondsAfterFinished"))
        .and_then(Value::as_i64)
}

async fn poll_one<'a>(
    client: &Client,
    mut p: Pending<'a>,
) -> Result<(Pending<'a>, Health), HealthError> {
    let o = p.object;
    match o.api(client).get_opt(&o.key.name).await {
        Ok(Some(live)) => {
            p.seen = live.metadata.resource_version.clone();
            let h = assess(&o.key.group, &o.key.kind, &live);
            Ok((p, h))
        }
        Ok(None) => {
            let h = vanished(client, &p).await?;
            Ok((p, h))
        }
        Err(source) => Err(HealthError::Read {
            object: Box::new(o.key.clone()),
            source,
        }),
    }
}

/// Longest replay of an object's last changes after it vanished.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(5);

/// The verdict on an object that was deleted while berth waited for it. A Job is judged by
/// its last state, which a watch from the last resourceVersion berth saw replays (the delete
/// event carries the object as it was deleted): a Job that completed and was removed by its
/// TTL is current. Without a replay (history compacted, watch forbidden) a Job with a TTL is
/// taken as finished, since the TTL controller deletes only finished Jobs. Anything else that
/// vanished is [`HealthError::Gone`].
async fn vanished(client: &Client, p: &Pending<'_>) -> Result<Health, HealthError> {
    let o = p.object;
    let gone = || HealthError::Gone {
        object: Box::new(o.key.clone()),
    };
    if !o.is_job() {
        return Err(gone());
    }
    if let Some(last) = last_state(client, p).await {
        return match assess(&o.key.group, &o.key.kind, &last) {
            Health::InProgress(_) => Err(gone()),
            verdict => Ok(verdict),
        };
    }
    if p.ttl.is_some() {
        tracing::info!(object = %o.key, "Job is gone and its last state could not be replayed; its TTL deletes only finished Jobs, so it is taken as complete");
        return Ok(Health::Current);
    }
    Err(gone())
}

/// The object as it was deleted, from a watch replay starting at the last version berth saw.
async fn last_state(client: &Client, p: &Pending<'_>) -> Option<DynamicObject> {
    use kube::api::{WatchEvent, WatchParams};
    let o = p.object;
    let since = p.seen.as_deref()?;
    let wp = WatchParams::default()
        .fields(&format!("metadata.name={}", o.key.name))
        .timeout(REPLAY_TIMEOUT.as_secs() as u32);
    let api = o.api(client);
    let replay = async {
        let stream = api.watch(&wp, since).await.ok()?;
        futures::pin_mut!(stream);
        let mut last = None;
        while let Some(event) = stream.next().await {
            match event.ok()? {
                WatchEvent::Deleted(obj) => return Some(obj),
                WatchEvent::Added(obj) | WatchEvent::Modified(obj) => last = Some(obj),
                WatchEvent::Bookmark(_) => {}
                // 410 Gone: the history since `since` is compacted away.
                WatchEvent::Error(_) => return None,
            }
        }
        // No delete event within the replay: the last state it showed is the best evidence.
        last
    };
    tokio::time::timeout(REPLAY_TIMEOUT + Duration::from_secs(1), replay)
        .await
        .ok()
        .flatten()
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
        assert_eq!(
            assess("apps", "Deployment", &obj(d.clone())),
            Health::Current
        );
        d["status"]["observedGeneration"] = json!(1);
        assert!(matches!(
            assess("apps", "Deployment", &obj(d)),
            Health::InProgress(_)
        ));
    }

    #[test]
    fn failed_job_and_unestablished_crd() {
        let j = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
            "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}});
        assert!(
            matches!(assess("batch", "Job", &obj(j)), Health::Failed(r) if r.contains("BackoffLimitExceeded"))
        );
        let c = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "x"}, "status": {}});
        assert!(matches!(
            assess("apiextensions.k8s.io", "CustomResourceDefinition", &obj(c)),
            Health::InProgress(_)
        ));
    }

    #[test]
    fn objects_without_status_are_current() {
        let c = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}});
        assert_eq!(assess("", "ConfigMap", &obj(c)), Health::Current);
    }

    /// The verdict on a `kind` object of `api_version` with these fields (metadata, spec, status).
    fn verdict(api_version: &str, kind: &str, mut fields: Value) -> Health {
        fields["apiVersion"] = json!(api_version);
        fields["kind"] = json!(kind);
        if fields.get("metadata").is_none() {
            fields["metadata"] = json!({"name": "x"});
        }
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        assess(group, kind, &obj(fields))
    }

    fn in_progress(h: &Health, why: &str) -> bool {
        matches!(h, Health::InProgress(r) if r.contains(why))
    }

    #[test]
    fn deployment_rollouts_stuck_waiting_or_done() {
        let d = |spec: Value, status: Value| {
            verdict(
                "apps/v1",
                "Deployment",
                json!({"metadata": {"name": "web", "generation": 1}, "spec": spec, "status": status}),
            )
        };
        let done = json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3});
        assert_eq!(d(json!({"replicas": 3}), done.clone()), Health::Current);
        let h = d(json!({"replicas": 3}), json!({}));
        assert!(in_progress(&h, "rollout not observed yet"), "{h:?}");
        let h = d(
            json!({"replicas": 3}),
            json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 1}),
        );
        assert!(in_progress(&h, "1/3 replicas updated"), "{h:?}");
        let h = d(
            json!({"replicas": 3}),
            json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2}),
        );
        assert!(in_progress(&h, "2/3 replicas ready, 2 available"), "{h:?}");
        let h = d(
            json!({"replicas": 3}),
            json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 3}),
        );
        assert!(
            in_progress(&h, "2/3 replicas ready, 3 available"),
            "available is not enough: {h:?}"
        );
        let h = d(
            json!({"replicas": 3}),
            json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 2}),
        );
        assert!(
            in_progress(&h, "3/3 replicas ready, 2 available"),
            "ready is not enough: {h:?}"
        );
        let h = d(
            json!({}),
            json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1}),
        );
        assert!(
            in_progress(&h, "0/1 replicas ready"),
            "no spec.replicas means one: {h:?}"
        );
        let h = d(json!({"replicas": 0}), json!({"observedGeneration": 1}));
        assert_eq!(h, Health::Current, "scaled to zero");
        let mut stuck = done;
        stuck["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            "message": "ReplicaSet \"web-1\" has timed out progressing."}]);
        let h = d(json!({"replicas": 3}), stuck);
        assert_eq!(
            h,
            Health::Failed(
                "progress deadline exceeded: ReplicaSet \"web-1\" has timed out progressing."
                    .into()
            )
        );
    }

    #[test]
    fn a_status_of_an_older_generation_says_nothing_of_any_kind() {
        let stale = |api_version: &str, kind: &str| {
            verdict(
                api_version,
                kind,
                json!({"metadata": {"name": "x", "generation": 3},
                "status": {"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True"}]}}),
            )
        };
        for (api_version, kind) in [("apps/v1", "StatefulSet"), ("example.com/v1", "Widget")] {
            let h = stale(api_version, kind);
            assert!(
                in_progress(&h, "controller has not observed generation 3 yet"),
                "{kind}: {h:?}"
            );
        }
    }

    #[test]
    fn statefulset_waits_for_ready_replicas_and_the_update_revision() {
        let s = |strategy: &str, status: Value| {
            verdict(
                "apps/v1",
                "StatefulSet",
                json!({"metadata": {"name": "db", "generation": 1},
                "spec": {"replicas": 2, "updateStrategy": {"type": strategy}}, "status": status}),
            )
        };
        let status = |ready: i64, updated: i64, current: &str| {
            json!({"observedGeneration": 1, "readyReplicas": ready, "updatedReplicas": updated,
                   "currentRevision": current, "updateRevision": "db-2"})
        };
        assert_eq!(s("RollingUpdate", status(2, 2, "db-2")), Health::Current);
        assert!(in_progress(
            &s("RollingUpdate", status(1, 2, "db-2")),
            "1/2 replicas ready"
        ));
        assert!(in_progress(
            &s("RollingUpdate", status(2, 2, "db-1")),
            "2/2 replicas updated"
        ));
        assert!(in_progress(
            &s("RollingUpdate", status(2, 1, "db-2")),
            "1/2 replicas updated"
        ));
        assert_eq!(
            s("OnDelete", status(2, 0, "db-1")),
            Health::Current,
            "OnDelete pods update when deleted"
        );
        assert!(in_progress(
            &s("RollingUpdate", json!({})),
            "rollout not observed yet"
        ));
    }

    #[test]
    fn daemonset_waits_for_every_scheduled_pod() {
        let ds = |status: Value| {
            verdict(
                "apps/v1",
                "DaemonSet",
                json!({"metadata": {"name": "agent", "generation": 1}, "status": status}),
            )
        };
        let status = |updated: i64, available: i64| json!({"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": updated, "numberAvailable": available});
        assert_eq!(ds(status(3, 3)), Health::Current);
        assert!(in_progress(
            &ds(status(2, 3)),
            "3/3 pods available, 2 updated"
        ));
        assert!(in_progress(&ds(status(3, 1)), "1/3 pods available"));
        assert!(in_progress(&ds(json!({})), "rollout not observed yet"));
    }

    #[test]
    fn jobs_complete_fail_or_run() {
        let job = |conditions: Value| {
            verdict(
                "batch/v1",
                "Job",
                json!({"metadata": {"name": "j"},
                "status": {"conditions": conditions}}),
            )
        };
        assert_eq!(
            job(json!([{"type": "Complete", "status": "True"}])),
            Health::Current
        );
        assert!(in_progress(&job(json!([])), "job not complete"));
        assert!(in_progress(
            &job(json!([{"type": "Complete", "status": "False"}])),
            "job not complete"
        ));
        let h = job(
            json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "too slow"}]),
        );
        assert_eq!(
            h,
            Health::Failed("job failed (DeadlineExceeded): too slow".into())
        );
    }

    #[test]
    fn crds_namespaces_claims_and_pods_by_their_phase_or_condition() {
        let crd = |status: &str| {
            let status = json!({"conditions": [{"type": "Established", "status": status}]});
            verdict(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                json!({"status": status}),
            )
        };
        assert_eq!(crd("True"), Health::Current);
        assert!(in_progress(&crd("False"), "not established yet"));
        let phased = |kind: &str, phase: Option<&str>| {
            let status = phase.map_or(json!({}), |p| json!({"phase": p}));
            verdict("v1", kind, json!({"status": status}))
        };
        assert_eq!(phased("Namespace", Some("Active")), Health::Current);
        assert_eq!(phased("Namespace", None), Health::Current);
        assert!(in_progress(
            &phased("Namespace", Some("Terminating")),
            "phase Terminating"
        ));
        assert_eq!(
            phased("PersistentVolumeClaim", Some("Bound")),
            Health::Current
        );
        assert_eq!(
            phased("PersistentVolumeClaim", Some("Lost")),
            Health::Failed("claim lost its volume".into())
        );
        assert!(in_progress(
            &phased("PersistentVolumeClaim", None),
            "phase Pending"
        ));
        assert_eq!(phased("Pod", Some("Succeeded")), Health::Current);
        assert_eq!(
            phased("Pod", Some("Failed")),
            Health::Failed("pod failed".into())
        );
        assert!(in_progress(
            &phased("Pod", Some("Running")),
            "pod not ready"
        ));
        let ready =
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        assert_eq!(
            verdict("v1", "Pod", json!({"status": ready})),
            Health::Current
        );
    }

    #[test]
    fn other_kinds_by_the_ready_and_stalled_conditions() {
        let widget = |conditions: Value| {
            verdict(
                "example.com/v1",
                "Widget",
                json!({"metadata": {"name": "w"}, "status": {"conditions": conditions}}),
            )
        };
        assert_eq!(
            widget(json!([{"type": "Ready", "status": "True"}])),
            Health::Current
        );
        assert_eq!(
            widget(json!([])),
            Health::Current,
            "no Ready condition: nothing to wait for"
        );
        let h = widget(
            json!([{"type": "Ready", "status": "False", "reason": "Pending", "message": "waiting"}]),
        );
        assert_eq!(h, Health::InProgress("not ready (Pending): waiting".into()));
        assert!(in_progress(
            &widget(json!([{"type": "Ready", "status": "Unknown"}])),
            "not ready"
        ));
        let h = widget(json!([{"type": "Ready", "status": "True"},
                              {"type": "Stalled", "status": "True", "reason": "BadSpec", "message": "no such image"}]));
        assert_eq!(h, Health::Failed("stalled (BadSpec): no such image".into()));
    }

    fn applied(o: &PlannedObject, status: Value) -> AppliedObject {
        let mut object = o.body.clone();
        object.data = json!({"status": status});
        AppliedObject {
            key: o.key.clone(),
            resource_version: Some("1".into()),
            object,
        }
    }

    #[tokio::test]
    async fn the_apply_answers_are_judged_before_anything_is_polled() {
        // The API server is gone: any poll would fail with a read error.
        let client = crate::api_error::dead_server_client();
        let cm = PlannedObject::for_test("", "v1", "ConfigMap", Some("a"), "c");
        let job = PlannedObject::for_test("batch", "v1", "Job", Some("a"), "j");
        let (cm_done, job_failed) = (
            applied(&cm, json!({})),
            applied(
                &job,
                json!({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}),
            ),
        );
        assert!(
            wait_healthy(&client, &[(&cm, &cm_done)], Duration::from_secs(5))
                .await
                .is_ok()
        );
        let e = wait_healthy(
            &client,
            &[(&cm, &cm_done), (&job, &job_failed)],
            Duration::from_secs(5),
        )
        .await
        .err();
        assert!(
            matches!(&e, Some(HealthError::Failed { object, .. }) if object.name == "j"),
            "{e:?}"
        );

        let running = applied(&job, json!({}));
        let e = wait_healthy(&client, &[(&job, &running)], Duration::ZERO)
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("not healthy within 0ns: Job.batch a/j: job not complete")
        );
        let e = wait_healthy(&client, &[(&job, &running)], Duration::from_secs(5))
            .await
            .err();
        assert!(
            matches!(&e, Some(HealthError::Read { object, .. }) if object.name == "j"),
            "then it is polled: {e:?}"
        );
    }

    #[test]
    fn a_timeout_names_the_first_pending_objects_and_counts_the_rest() {
        let pending: Vec<(ObjectKey, String)> = (0..MAX_PENDING_SHOWN + 2)
            .map(|i| {
                (
                    PlannedObject::for_test("", "v1", "Pod", Some("a"), &format!("p{i}")).key,
                    "pod not ready".into(),
                )
            })
            .collect();
        let e = HealthError::Timeout {
            timeout: Duration::from_secs(60),
            pending,
        }
        .to_string();
        assert!(
            e.starts_with("not healthy within 60s: Pod a/p0: pod not ready; Pod a/p1"),
            "{e}"
        );
        assert!(
            e.ends_with(&format!(
                "Pod a/p{}: pod not ready; and 2 more",
                MAX_PENDING_SHOWN - 1
            )),
            "{e}"
        );
    }
}
