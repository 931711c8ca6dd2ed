//! Automatic rollback (`spec.rollback: onHealthFailure`): when a new digest fails its health
//! wait, the agent re-verifies the last applied digest against today's trust policy,
//! re-applies it, records a `RolledBack` condition naming both digests and a Warning Event,
//! and then holds there. It never loops: while the ref still resolves to the failed digest,
//! reconciles keep the good one; the failed digest is tried again only when the ref points
//! elsewhere or the user changes the `berth.dev/retry` annotation. A last good digest whose
//! signature no longer verifies (the key was rotated) is never re-applied.

use std::time::Duration;

use berth::digest::Digest;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use crate::engine::SyncError;
use crate::fetch;
use crate::reconcile::{self, Applied, Context, ReconcileError};
use crate::source::Source;

/// Condition type set while the Source is held at the last good digest.
pub const CONDITION: &str = "RolledBack";
/// Changing this annotation (any new value) asks for one more try of the failed digest.
pub const RETRY_ANNOTATION: &str = "berth.dev/retry";

/// The failed digest and the good one kept in its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub failed: Digest,
    pub good: Digest,
}

impl Hold {
    /// The hold in force for `src`, if rollback is on, a digest was rolled back from and the
    /// user has not asked for a retry since.
    pub fn of(src: &Source) -> Option<Hold> {
        src.spec.rollback?;
        let status = src.status.as_ref()?;
        let failed = status.failed_digest.as_deref()?.parse().ok()?;
        let good = status.last_applied_digest.as_deref()?.parse().ok()?;
        let retry = retry_value(src);
        if retry.is_some() && retry != status.last_handled_retry {
            tracing::info!(failed = %failed, "retry requested with the {RETRY_ANNOTATION} annotation");
            return None;
        }
        Some(Hold { failed, good })
    }
}

/// The current value of the retry annotation.
pub fn retry_value(src: &Source) -> Option<String> {
    src.annotations().get(RETRY_ANNOTATION).cloned()
}

fn interval(src: &Source) -> Duration {
    src.spec.interval().unwrap_or(Duration::from_secs(300))
}

/// The Ready message while held; the same text on the rollback and on every later reconcile
/// so the status does not flap.
fn held_message(h: &Hold) -> String {
    format!(
        "{} failed its health check; rolled back to {} and holding there until the ref points elsewhere or the {RETRY_ANNOTATION} annotation changes",
        h.failed, h.good
    )
}

/// What rollback did with a failed reconcile.
#[derive(Debug)]
pub enum Outcome {
    /// Rolled back (or the ref moved and applied): the reconcile's result.
    Done(Result<Action, ReconcileError>),
    /// Not rolled back; the failure and why are recorded. The caller returns its error.
    Recorded,
}

/// Called when a reconcile failed. `None` when rollback does not apply: record the failure
/// as usual.
pub(crate) async fn after_failure(
    src: &Source,
    ctx: &Context,
    e: &ReconcileError,
    attempted: Option<&Digest>,
) -> Option<Outcome> {
    src.spec.rollback?;
    // Only a verdict on the new digest's health: not a health check cut short by losing the
    // API server (the rollback could not be applied either).
    if !matches!(e, ReconcileError::Sync(s @ SyncError::Health(_)) if !s.unreachable()) {
        return None;
    }
    let failed = attempted?.clone();
    let good: Digest = src.status.as_ref()?.last_applied_digest.as_deref()?.parse().ok()?;
    if good == failed {
        // The digest that was healthy before is what failed now (drift, a node outage…):
        // there is nothing older to return to.
        return None;
    }
    let hold = Hold { failed, good };
    tracing::warn!(failed = %hold.failed, good = %hold.good, error = %e, "health check failed; rolling back");
    if let Err(why) = reverify(src, ctx, &hold.good).await {
        tracing::warn!(good = %hold.good, error = %why, "not rolling back: the last good digest no longer verifies");
        let note = format!("not rolled back: the last applied digest {} no longer verifies ({why})", hold.good);
        return Some(refused(src, ctx, e, &hold, note).await);
    }
    match reconcile::converge(src, ctx, Some(&hold)).await {
        Ok((_, applied)) if applied.held => {
            let result = record_rolled_back(src, ctx, e, &hold, &applied).await;
            Some(Outcome::Done(result.map(|()| Action::requeue(interval(src)))))
        }
        // The ref moved while we rolled back: the new digest applied cleanly.
        Ok((report, applied)) => {
            let result = reconcile::record_success(src, ctx, &report, &applied).await;
            Some(Outcome::Done(result.map(|()| Action::requeue(interval(src)))))
        }
        Err((rollback_error, _)) => {
            tracing::warn!(error = %rollback_error, "rollback failed");
            let note = format!("rolling back to {} failed too: {rollback_error}", hold.good);
            Some(refused(src, ctx, e, &hold, note).await)
        }
    }
}

async fn refused(src: &Source, ctx: &Context, e: &ReconcileError, hold: &Hold, note: String) -> Outcome {
    match record_refused(src, ctx, e, hold, note).await {
        Ok(()) => Outcome::Recorded,
        Err(status_error) => Outcome::Done(Err(status_error)),
    }
}

/// Checks the last good digest's signature against the trust policy as it is now, even when
/// its manifests are cached: a rotated key must stop a rollback to content it no longer trusts.
async fn reverify(src: &Source, ctx: &Context, good: &Digest) -> Result<String, ReconcileError> {
    let reference = reconcile::reference_of(src)?;
    let registry = reconcile::registry_for(src, ctx, &reference).await?;
    let trust = reconcile::trust_of(src, ctx).await?;
    let signer = fetch::verify(&registry, &reference, good, &trust).await;
    ctx.metrics.registry_request("verify", signer.is_ok());
    Ok(signer?)
}

async fn record_rolled_back(
    src: &Source,
    ctx: &Context,
    e: &ReconcileError,
    hold: &Hold,
    applied: &Applied,
) -> Result<(), ReconcileError> {
    let mut status = src.status.clone().unwrap_or_default();
    let generation = src.metadata.generation;
    let conditions = &mut status.conditions;
    reconcile::set_condition(conditions, "Ready", "False", CONDITION, &held_message(hold), generation);
    let msg = format!("rolled back from {} to {}", hold.failed, hold.good);
    reconcile::set_condition(conditions, CONDITION, "True", "HealthCheckFailed", &msg, generation);
    reconcile::clear_condition(conditions, "Reconciling");
    reconcile::clear_condition(conditions, "Stalled");
    status.observed_generation = generation;
    status.last_applied_digest = Some(applied.digest.to_string());
    status.last_applied_revision = applied.revision.clone();
    status.last_attempted_digest = Some(hold.failed.to_string());
    status.signer = Some(applied.signer.clone());
    status.failed_digest = Some(hold.failed.to_string());
    status.last_handled_retry = retry_value(src);
    reconcile::write_status(src, ctx, status).await?;
    let note = format!("{msg}: {e}");
    reconcile::publish(ctx, src, EventType::Warning, CONDITION, "Rollback", note).await;
    ctx.metrics.rolled_back(&reconcile::key_of(src));
    Ok(())
}

/// A reconcile while held: the good digest was re-applied (drift correction); the status
/// says held, and a restart's `Reconciling` is cleared.
pub(crate) async fn record_held(
    src: &Source,
    ctx: &Context,
    hold: &Hold,
    applied: &Applied,
) -> Result<(), ReconcileError> {
    let mut status = src.status.clone().unwrap_or_default();
    let generation = src.metadata.generation;
    reconcile::set_condition(&mut status.conditions, "Ready", "False", CONDITION, &held_message(hold), generation);
    let msg = format!("rolled back from {} to {}", hold.failed, hold.good);
    reconcile::set_condition(&mut status.conditions, CONDITION, "True", "HealthCheckFailed", &msg, generation);
    reconcile::clear_condition(&mut status.conditions, "Reconciling");
    status.observed_generation = generation;
    status.last_applied_digest = Some(applied.digest.to_string());
    status.last_handled_retry = retry_value(src);
    reconcile::write_status(src, ctx, status).await
}

/// No rollback: the failure is recorded as usual, with why, and any earlier `RolledBack`
/// condition is cleared (it would describe a state that is gone).
async fn record_refused(
    src: &Source,
    ctx: &Context,
    e: &ReconcileError,
    hold: &Hold,
    note: String,
) -> Result<(), ReconcileError> {
    let mut status = src.status.clone().unwrap_or_default();
    let generation = src.metadata.generation;
    let msg = format!("{e}; {note}");
    reconcile::set_condition(&mut status.conditions, "Ready", "False", e.reason(), &msg, generation);
    reconcile::clear_condition(&mut status.conditions, CONDITION);
    reconcile::clear_condition(&mut status.conditions, "Reconciling");
    status.observed_generation = generation;
    status.last_attempted_digest = Some(hold.failed.to_string());
    status.failed_digest = None;
    status.last_handled_retry = retry_value(src);
    let changed = src.status.as_ref().map(|s| &s.conditions) != Some(&status.conditions);
    reconcile::write_status(src, ctx, status).await?;
    if changed {
        reconcile::publish(ctx, src, EventType::Warning, "RollbackRefused", "Rollback", msg).await;
    }
    Ok(())
}
