//! The one place a Source's status is decided and written. A reconcile ends in one
//! [`Outcome`]; [`record`] turns it into the Source's status (conditions, digests, counts),
//! its Events and its metrics, together and once. [`record_progress`] is the only other
//! write: `Reconciling` while a new digest is pulled and applied. Which status an outcome
//! gives is a pure function ([`next`]), tested without an API server.

use std::sync::Arc;

use berth::digest::Digest;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::conditions::{self, kind, reason, status};
use crate::context::Context;
use crate::engine::SyncReport;
use crate::fetch::Artifact;
use crate::rollback::{self, Hold};
use crate::source::{ObjectCounts, Source, SourceStatus};

/// Field manager of the status the agent writes.
pub const STATUS_FIELD_MANAGER: &str = "berth-agent";
/// Changed objects named in a `DriftCorrected` Event.
pub const MAX_CORRECTED_SHOWN: usize = 5;

/// Why a reconcile failed, as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The Ready condition's reason.
    pub reason: &'static str,
    pub message: String,
    /// Only a change to the Source can help (kstatus `Stalled`).
    pub stalled: bool,
}

/// How one reconcile ended.
#[derive(Debug)]
pub enum Outcome {
    /// The artifact's objects are applied (new digest, drift corrected, or nothing to do).
    Applied {
        artifact: Arc<Artifact>,
        report: SyncReport,
    },
    /// Held at the last good digest while the ref still points at the rolled-back one.
    Held { hold: Hold, artifact: Arc<Artifact> },
    /// A new digest failed its health check and the last good one was applied again.
    RolledBack {
        hold: Hold,
        artifact: Arc<Artifact>,
        cause: String,
    },
    /// A health failure called for a rollback that could not be done (`note` says why).
    RollbackRefused {
        hold: Hold,
        failure: Failure,
        note: String,
    },
    /// Anything else that went wrong; `attempted` is the digest being applied, if resolved.
    Failed {
        failure: Failure,
        attempted: Option<Digest>,
    },
}

/// An Event to publish about the Source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub action: &'static str,
    pub message: String,
}

impl Note {
    fn normal(reason: &'static str, action: &'static str, message: String) -> Note {
        Note {
            warning: false,
            reason,
            action,
            message,
        }
    }

    fn warning(reason: &'static str, action: &'static str, message: String) -> Note {
        Note {
            warning: true,
            reason,
            action,
            message,
        }
    }
}

/// What an apply left as it was, for the Ready message: objects not sent and why, and pruned
/// objects their finalizers still hold. Empty for a plain apply.
fn report_details(report: &SyncReport) -> String {
    let mut parts = Vec::new();
    if !report.skipped.is_empty() {
        let shown: Vec<String> = report
            .skipped
            .iter()
            .take(MAX_CORRECTED_SHOWN)
            .map(|(k, why)| format!("{k}: {why}"))
            .collect();
        let more = report.skipped.len().saturating_sub(shown.len());
        parts.push(format!(
            "{} not applied ({}{})",
            report.skipped.len(),
            shown.join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            }
        ));
    }
    if !report.terminating.is_empty() {
        let shown: Vec<String> = report
            .terminating
            .iter()
            .take(MAX_CORRECTED_SHOWN)
            .map(|(k, f)| format!("{k} [{}]", f.join(", ")))
            .collect();
        parts.push(format!(
            "{} pruned but held by finalizers ({})",
            report.terminating.len(),
            shown.join("; ")
        ));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("; {}", parts.join("; "))
    }
}

/// The status `outcome` gives `src` and the Events that go with it.
pub fn next(src: &Source, outcome: &Outcome) -> (SourceStatus, Vec<Note>) {
    let old = src.status.clone().unwrap_or_default();
    let mut st = old.clone();
    let generation = src.metadata.generation;
    let c = &mut st.conditions;
    let mut notes = Vec::new();
    match outcome {
        Outcome::Applied { artifact, report } => {
            let revision = artifact.revision.as_deref().unwrap_or("(no revision)");
            let msg = format!(
                "applied revision {revision} ({}): {} objects{}",
                artifact.digest,
                report.total,
                report_details(report)
            );
            conditions::set(
                c,
                kind::READY,
                status::TRUE,
                reason::SUCCEEDED,
                &msg,
                generation,
            );
            conditions::clear(c, kind::RECONCILING);
            conditions::clear(c, kind::STALLED);
            // A digest that applied cleanly ends any rollback hold.
            conditions::clear(c, kind::ROLLED_BACK);
            st.failed_digest = None;
            st.last_handled_retry = rollback::retry_value(src);
            let digest = artifact.digest.to_string();
            let digest_changed = st.last_applied_digest.as_deref() != Some(digest.as_str());
            st.observed_generation = generation;
            st.last_applied_digest = Some(digest.clone());
            st.last_attempted_digest = Some(digest);
            st.last_applied_revision = artifact.revision.clone();
            st.last_applied_created = artifact.created.clone();
            st.signer = Some(artifact.signer.clone());
            if digest_changed || !report.changed.is_empty() || !report.pruned.is_empty() {
                st.objects = Some(ObjectCounts {
                    total: count(report.total),
                    changed: count(report.changed.len()),
                    pruned: count(report.pruned.len()),
                });
            }
            if digest_changed {
                notes.push(Note::normal(reason::APPLIED, "Apply", msg));
            } else if !report.changed.is_empty() {
                let names: Vec<String> = report
                    .changed
                    .iter()
                    .take(MAX_CORRECTED_SHOWN)
                    .map(ToString::to_string)
                    .collect();
                notes.push(Note::normal(
                    reason::DRIFT_CORRECTED,
                    "Apply",
                    format!("corrected {}", names.join(", ")),
                ));
            }
            if !report.pruned.is_empty() {
                notes.push(Note::normal(
                    reason::PRUNED,
                    "Prune",
                    format!("pruned {} objects", report.pruned.len()),
                ));
            }
        }
        Outcome::Held { hold, artifact } => {
            held(c, hold, generation);
            st.observed_generation = generation;
            st.last_applied_digest = Some(artifact.digest.to_string());
            st.last_handled_retry = rollback::retry_value(src);
        }
        Outcome::RolledBack {
            hold,
            artifact,
            cause,
        } => {
            held(c, hold, generation);
            conditions::clear(c, kind::STALLED);
            st.observed_generation = generation;
            st.last_applied_digest = Some(artifact.digest.to_string());
            st.last_applied_revision = artifact.revision.clone();
            st.last_attempted_digest = Some(hold.failed.to_string());
            st.signer = Some(artifact.signer.clone());
            st.failed_digest = Some(hold.failed.to_string());
            st.last_handled_retry = rollback::retry_value(src);
            notes.push(Note::warning(
                reason::ROLLED_BACK,
                "Rollback",
                format!("{}: {cause}", hold.summary()),
            ));
        }
        Outcome::RollbackRefused {
            hold,
            failure,
            note,
        } => {
            let msg = format!("{}; {note}", failure.message);
            conditions::set(
                c,
                kind::READY,
                status::FALSE,
                failure.reason,
                &msg,
                generation,
            );
            // An earlier RolledBack condition would describe a state that is gone.
            conditions::clear(c, kind::ROLLED_BACK);
            conditions::clear(c, kind::RECONCILING);
            st.observed_generation = generation;
            st.last_attempted_digest = Some(hold.failed.to_string());
            st.failed_digest = None;
            st.last_handled_retry = rollback::retry_value(src);
            if st.conditions != old.conditions {
                notes.push(Note::warning(reason::ROLLBACK_REFUSED, "Rollback", msg));
            }
        }
        Outcome::Failed { failure, attempted } => {
            conditions::set(
                c,
                kind::READY,
                status::FALSE,
                failure.reason,
                &failure.message,
                generation,
            );
            conditions::clear(c, kind::RECONCILING);
            if failure.stalled {
                conditions::set(
                    c,
                    kind::STALLED,
                    status::TRUE,
                    failure.reason,
                    &failure.message,
                    generation,
                );
            } else {
                conditions::clear(c, kind::STALLED);
            }
            st.observed_generation = generation;
            if let Some(d) = attempted {
                st.last_attempted_digest = Some(d.to_string());
            }
            // Only a change is news: a retry that fails the same way publishes nothing.
            if st.conditions != old.conditions {
                notes.push(Note::warning(
                    failure.reason,
                    "Reconcile",
                    failure.message.clone(),
                ));
            }
        }
    }
    (st, notes)
}

/// Ready=False naming the hold, and the `RolledBack` condition.
fn held(c: &mut Vec<crate::source::Condition>, hold: &Hold, generation: Option<i64>) {
    conditions::set(
        c,
        kind::READY,
        status::FALSE,
        reason::ROLLED_BACK,
        &hold.message(),
        generation,
    );
    conditions::set(
        c,
        kind::ROLLED_BACK,
        status::TRUE,
        reason::HEALTH_CHECK_FAILED,
        &hold.summary(),
        generation,
    );
    conditions::clear(c, kind::RECONCILING);
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Writes what `outcome` means for `src`: status, then Events and metrics.
pub async fn record(src: &Source, ctx: &Context, outcome: &Outcome) -> Result<(), kube::Error> {
    let (st, notes) = next(src, outcome);
    write(src, ctx, st).await?;
    match outcome {
        Outcome::Applied { artifact, report } => {
            if notes.iter().any(|n| n.reason == reason::APPLIED) {
                tracing::info!(digest = %artifact.digest, objects = report.total, "applied a new digest");
            }
            ctx.metrics.applied(
                &src.key(),
                &artifact.digest.to_string(),
                artifact.revision.as_deref(),
                report.changed.len(),
                report.pruned.len(),
            );
        }
        Outcome::RolledBack { .. } => ctx.metrics.rolled_back(&src.key()),
        Outcome::Held { .. } | Outcome::RollbackRefused { .. } | Outcome::Failed { .. } => {}
    }
    for note in notes {
        publish(ctx, src, note).await;
    }
    Ok(())
}

/// The status while `digest` is being applied, or `None` to leave it: a retry of the digest
/// that just failed keeps the failure visible instead of flapping between Unknown and False
/// on every backoff step.
pub fn progress(src: &Source, digest: &Digest) -> Option<SourceStatus> {
    let mut st = src.status.clone().unwrap_or_default();
    let digest = digest.to_string();
    if st.last_attempted_digest.as_deref() == Some(digest.as_str())
        && conditions::has(&st.conditions, kind::READY, status::FALSE)
    {
        return None;
    }
    let generation = src.metadata.generation;
    let msg = format!("applying {digest}");
    conditions::set(
        &mut st.conditions,
        kind::RECONCILING,
        status::TRUE,
        reason::PROGRESSING,
        &msg,
        generation,
    );
    conditions::set(
        &mut st.conditions,
        kind::READY,
        status::UNKNOWN,
        reason::PROGRESSING,
        &msg,
        generation,
    );
    st.last_attempted_digest = Some(digest);
    Some(st)
}

/// Marks `src` `Reconciling` while `digest` is pulled and applied.
pub async fn record_progress(
    src: &Source,
    ctx: &Context,
    digest: &Digest,
) -> Result<(), kube::Error> {
    match progress(src, digest) {
        Some(st) => write(src, ctx, st).await,
        None => Ok(()),
    }
}

/// Writes `st` with server-side apply unless nothing but the reconcile time changed (a quiet
/// interval then writes nothing at all).
async fn write(src: &Source, ctx: &Context, mut st: SourceStatus) -> Result<(), kube::Error> {
    let old = src.status.clone().unwrap_or_default();
    let mut compare = st.clone();
    compare.last_reconcile_time = old.last_reconcile_time.clone();
    if compare == old {
        return Ok(());
    }
    st.last_reconcile_time = Some(k8s_openapi::jiff::Timestamp::now().to_string());
    let api: Api<Source> =
        Api::namespaced(ctx.client.clone(), &src.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": Source::api_version(&()),
        "kind": Source::kind(&()),
        "status": st,
    });
    api.patch_status(
        &src.name_any(),
        &PatchParams::apply(STATUS_FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
}

async fn publish(ctx: &Context, src: &Source, note: Note) {
    let type_ = if note.warning {
        EventType::Warning
    } else {
        EventType::Normal
    };
    let ev = Event {
        type_,
        reason: note.reason.into(),
        note: Some(note.message),
        action: note.action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &src.object_ref(&())).await {
        tracing::warn!(error = %e, "could not record an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ObjectKey;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn digest(s: &str) -> Digest {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn source(status: serde_json::Value) -> Source {
        let v = serde_json::json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Source",
            "metadata": {"name": "s", "namespace": "ns", "generation": 3},
            "spec": {"url": "oci://r/a", "ref": {"tag": "v1"}, "verify": {"insecureSkipVerify": true}, "rollback": "onHealthFailure"},
            "status": status});
        serde_json::from_value(v).unwrap_or_else(|e| panic!("test Source does not parse: {e}"))
    }

    fn artifact(d: &str) -> Arc<Artifact> {
        Arc::new(Artifact {
            digest: digest(d),
            revision: Some("main@sha1:1".into()),
            created: Some("2026-01-01T00:00:00Z".into()),
            signer: "key sha256:k".into(),
            manifests: Vec::new(),
        })
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: Some("ns".into()),
            name: name.into(),
        }
    }

    fn condition<'a>(st: &'a SourceStatus, type_: &str) -> Option<(&'a str, &'a str)> {
        st.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.as_str(), c.reason.as_str()))
    }

    fn failure(reason: &'static str, stalled: bool) -> Failure {
        Failure {
            reason,
            message: format!("it broke ({reason})"),
            stalled,
        }
    }

    #[test]
    fn a_new_digest_applied_is_ready_and_announced() {
        let src = source(
            serde_json::json!({"lastAppliedDigest": A, "failedDigest": B,
            "conditions": [{"type": "Stalled", "status": "True", "reason": "InvalidSpec", "message": "", "lastTransitionTime": "t"}]}),
        );
        let report = SyncReport {
            total: 3,
            changed: vec![key("a")],
            pruned: vec![key("old")],
            ..SyncReport::default()
        };
        let (st, notes) = next(
            &src,
            &Outcome::Applied {
                artifact: artifact(B),
                report,
            },
        );
        assert_eq!(
            condition(&st, kind::READY),
            Some((status::TRUE, reason::SUCCEEDED))
        );
        assert_eq!(condition(&st, kind::STALLED), None);
        assert_eq!(st.last_applied_digest.as_deref(), Some(B));
        assert_eq!(st.last_attempted_digest.as_deref(), Some(B));
        assert_eq!(st.failed_digest, None, "a clean apply ends the hold");
        assert_eq!(st.observed_generation, Some(3));
        assert_eq!(
            st.objects,
            Some(ObjectCounts {
                total: 3,
                changed: 1,
                pruned: 1
            })
        );
        let reasons: Vec<&str> = notes.iter().map(|n| n.reason).collect();
        assert_eq!(reasons, [reason::APPLIED, reason::PRUNED]);
    }

    #[test]
    fn a_quiet_interval_changes_nothing_and_drift_is_announced_as_corrected() {
        let src = source(serde_json::json!({"lastAppliedDigest": A}));
        let (quiet, notes) = next(
            &src,
            &Outcome::Applied {
                artifact: artifact(A),
                report: SyncReport::default(),
            },
        );
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(quiet.objects, None, "counts of the last change are kept");
        let report = SyncReport {
            total: 1,
            changed: vec![key("a")],
            pruned: Vec::new(),
            ..SyncReport::default()
        };
        let (_, notes) = next(
            &src,
            &Outcome::Applied {
                artifact: artifact(A),
                report,
            },
        );
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].reason, reason::DRIFT_CORRECTED);
        assert!(!notes[0].warning);
    }

    #[test]
    fn a_failure_stalls_only_when_the_spec_must_change_and_is_announced_once() {
        let src = source(serde_json::json!({"lastAppliedDigest": A}));
        let (st, notes) = next(
            &src,
            &Outcome::Failed {
                failure: failure(reason::INVALID_SPEC, true),
                attempted: None,
            },
        );
        assert_eq!(
            condition(&st, kind::READY),
            Some((status::FALSE, reason::INVALID_SPEC))
        );
        assert_eq!(
            condition(&st, kind::STALLED),
            Some((status::TRUE, reason::INVALID_SPEC))
        );
        assert_eq!(notes.len(), 1);
        assert!(notes[0].warning);

        let again = Source {
            status: Some(st),
            ..src.clone()
        };
        let (_, notes) = next(
            &again,
            &Outcome::Failed {
                failure: failure(reason::INVALID_SPEC, true),
                attempted: None,
            },
        );
        assert!(
            notes.is_empty(),
            "the same failure again publishes nothing: {notes:?}"
        );

        let (st, _) = next(
            &again,
            &Outcome::Failed {
                failure: failure(reason::REGISTRY_UNAVAILABLE, false),
                attempted: Some(digest(B)),
            },
        );
        assert_eq!(condition(&st, kind::STALLED), None);
        assert_eq!(st.last_attempted_digest.as_deref(), Some(B));
        assert_eq!(
            st.last_applied_digest.as_deref(),
            Some(A),
            "the last good state stays"
        );
    }

    #[test]
    fn a_rollback_holds_at_the_good_digest_until_a_clean_apply() {
        let src = source(serde_json::json!({"lastAppliedDigest": A}));
        let hold = Hold {
            failed: digest(B),
            good: digest(A),
        };
        let outcome = Outcome::RolledBack {
            hold: hold.clone(),
            artifact: artifact(A),
            cause: "timeout".into(),
        };
        let (st, notes) = next(&src, &outcome);
        assert_eq!(
            condition(&st, kind::READY),
            Some((status::FALSE, reason::ROLLED_BACK))
        );
        assert_eq!(
            condition(&st, kind::ROLLED_BACK),
            Some((status::TRUE, reason::HEALTH_CHECK_FAILED))
        );
        assert_eq!(st.failed_digest.as_deref(), Some(B));
        assert_eq!(st.last_attempted_digest.as_deref(), Some(B));
        assert_eq!(st.last_applied_digest.as_deref(), Some(A));
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].message.ends_with(": timeout"),
            "{}",
            notes[0].message
        );

        let held = Source {
            status: Some(st.clone()),
            ..src.clone()
        };
        let (again, notes) = next(
            &held,
            &Outcome::Held {
                hold: hold.clone(),
                artifact: artifact(A),
            },
        );
        assert_eq!(again.conditions, st.conditions, "holding does not flap");
        assert!(notes.is_empty());

        let refused = Outcome::RollbackRefused {
            hold,
            failure: failure(reason::HEALTH_CHECK_TIMEOUT, false),
            note: "not rolled back".into(),
        };
        let (st, notes) = next(&held, &refused);
        assert_eq!(
            condition(&st, kind::READY),
            Some((status::FALSE, reason::HEALTH_CHECK_TIMEOUT))
        );
        assert_eq!(condition(&st, kind::ROLLED_BACK), None);
        assert_eq!(st.failed_digest, None);
        assert_eq!(notes[0].reason, reason::ROLLBACK_REFUSED);
    }

    #[test]
    fn progress_is_shown_once_per_digest_and_a_failing_retry_keeps_the_failure() {
        let src = source(serde_json::json!({"lastAppliedDigest": A}));
        let st =
            progress(&src, &digest(B)).unwrap_or_else(|| panic!("no progress for a new digest"));
        assert_eq!(
            condition(&st, kind::RECONCILING),
            Some((status::TRUE, reason::PROGRESSING))
        );
        assert_eq!(
            condition(&st, kind::READY),
            Some((status::UNKNOWN, reason::PROGRESSING))
        );
        let (failed, _) = next(
            &Source {
                status: Some(st),
                ..src.clone()
            },
            &Outcome::Failed {
                failure: failure(reason::APPLY_FAILED, false),
                attempted: Some(digest(B)),
            },
        );
        assert_eq!(
            progress(
                &Source {
                    status: Some(failed),
                    ..src
                },
                &digest(B)
            ),
            None
        );
    }
}
