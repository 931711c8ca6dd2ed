//! One reconcile of a `Source`, and only the order of its phases: prepare (spec, lockdown,
//! [`access`](crate::access)) → resolve → the verified artifact (remembered for a drift check,
//! verified again, or pulled → verified → unpacked by [`fetch`]) → plan/apply/prune/wait
//! ([`engine`]) → on a failed health check the [`rollback`] decision → [`status::record`]
//! of the one [`Outcome`]. Also the retry policy on errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth::digest::Digest;
use berth::reference::Reference;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::Instrument;

use crate::access::{self, Access, AccessError};
use crate::conditions::reason;
use crate::context::{Context, Remembered};
use crate::discovery::ApiDiscovery;
use crate::engine::{self, Clients, SyncError, SyncOptions, SyncReport};
use crate::fetch::{self, Artifact, FetchError, Observer, Pulled};
use crate::inventory::{ApplySetParent, ParentKind};
use crate::metrics::Metrics;
use crate::plan::NamespaceDefaults;
use crate::rollback::{self, Hold};
use crate::source::{RefKind, Source, SpecError};
use crate::status::{self, Failure, Outcome};

/// First retry delay after a failed reconcile; doubles per consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest retry delay (also never longer than the Source's interval).
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Interval of a Source whose interval cannot be read (its spec is refused before it is used).
const FALLBACK_INTERVAL: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{0}")]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The API server refused objects to the impersonated ServiceAccount. Its own message does
    /// not always name the account (it may report the per-resource impersonation check), so
    /// the condition names it.
    #[error("applying as ServiceAccount {account}: {source}")]
    ForbiddenAs {
        account: String,
        source: Box<SyncError>,
    },
    #[error("writing the status of the Source: {0}")]
    Status(kube::Error),
    #[error(transparent)]
    Lockdown(#[from] crate::lockdown::LockdownError),
}

impl ReconcileError {
    /// Condition reason shown in `kubectl get`/`describe`.
    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::Spec(_) => reason::INVALID_SPEC,
            ReconcileError::Access(e) => e.reason(),
            ReconcileError::Fetch(e) => e.reason(),
            ReconcileError::Sync(e) => e.reason(),
            ReconcileError::ForbiddenAs { source, .. } => source.reason(),
            ReconcileError::Status(_) => reason::STATUS_WRITE_FAILED,
            ReconcileError::Lockdown(_) => reason::LOCKDOWN_VIOLATION,
        }
    }

    /// Errors only a change to the Source can fix (kstatus `Stalled`).
    fn is_stalled(&self) -> bool {
        match self {
            ReconcileError::Spec(_) => true,
            ReconcileError::Access(e) => e.is_stalled(),
            ReconcileError::Lockdown(e) => {
                matches!(
                    e,
                    crate::lockdown::LockdownError::ServiceAccountRequired { .. }
                )
            }
            _ => false,
        }
    }

    /// A verdict on the applied objects' health, not a health check cut short by losing the
    /// API server.
    fn is_health_verdict(&self) -> bool {
        matches!(self, ReconcileError::Sync(s @ SyncError::Health(_)) if !s.unreachable())
    }

    fn failure(&self) -> Failure {
        Failure {
            reason: self.reason(),
            message: self.to_string(),
            stalled: self.is_stalled(),
        }
    }
}

/// Entry point for the controller: one reconcile inside a span naming the Source (and the
/// digest once resolved), its duration and result counted.
pub async fn reconcile(src: Arc<Source>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let key = src.key();
    let span = tracing::info_span!("reconcile", source = %key, digest = tracing::field::Empty);
    let started = Instant::now();
    let result = reconcile_inner(&src, &ctx).instrument(span).await;
    let reason = match &result {
        Ok(_) => reason::SUCCEEDED,
        Err(e) => e.reason(),
    };
    ctx.metrics
        .reconciled(&key, result.is_ok(), reason, started.elapsed());
    result
}

async fn reconcile_inner(src: &Source, ctx: &Context) -> Result<Action, ReconcileError> {
    if src.spec.suspend {
        tracing::info!("suspended; nothing to do");
        return Ok(Action::await_change());
    }
    let (outcome, error) = run(src, ctx).await;
    status::record(src, ctx, &outcome)
        .await
        .map_err(ReconcileError::Status)?;
    match error {
        Some(e) => Err(e),
        None => {
            ctx.succeeded(&src.key());
            Ok(Action::requeue(
                src.spec.interval().unwrap_or(FALLBACK_INTERVAL),
            ))
        }
    }
}

/// Retry delay after a failure: exponential per Source, capped by the interval.
pub fn error_policy(src: Arc<Source>, e: &ReconcileError, ctx: Arc<Context>) -> Action {
    if e.is_stalled() {
        // Retrying cannot help; a spec change triggers the next reconcile.
        return Action::await_change();
    }
    let n = ctx.failed(&src.key());
    let cap = src.spec.interval().unwrap_or(BACKOFF_MAX).min(BACKOFF_MAX);
    Action::requeue(backoff(n, cap))
}

/// `BACKOFF_BASE * 2^(failures-1)`, at most `cap`.
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1).min(16))
        .unwrap_or(u32::MAX);
    BACKOFF_BASE
        .saturating_mul(factor)
        .min(cap)
        .max(Duration::from_secs(1))
}

/// What a reconcile works with once the Source is read.
struct Prepared {
    access: Access,
    /// The ServiceAccount applies impersonate (the Source's or lockdown's default).
    service_account: Option<String>,
}

/// What one pass of [`resolve_and_apply`] is trying, for the failure it may end in.
#[derive(Debug, Default)]
struct Attempt {
    /// The digest the ref resolved to (the held one when a hold applies).
    digest: Option<Digest>,
}

/// An artifact whose objects are applied.
struct Landed {
    artifact: Arc<Artifact>,
    report: SyncReport,
    /// The ref resolved to a rolled-back digest and the held one was applied instead.
    held: bool,
}

/// The outcome of the reconcile, and its error for the controller's backoff if it failed.
async fn run(src: &Source, ctx: &Context) -> (Outcome, Option<ReconcileError>) {
    let failed = |e: ReconcileError, attempted: Option<Digest>| {
        tracing::warn!(reason = e.reason(), error = %e, "reconcile failed");
        (
            Outcome::Failed {
                failure: e.failure(),
                attempted,
            },
            Some(e),
        )
    };
    let prepared = match prepare(src, ctx).await {
        Ok(p) => p,
        Err(e) => return failed(e, None),
    };
    // With spec.rollback, a digest that failed its health check is not applied again while
    // the ref still points at it: the last good one is kept instead.
    let hold = Hold::of(src);
    let mut attempt = Attempt::default();
    let e = match resolve_and_apply(src, ctx, &prepared, hold.as_ref(), &mut attempt).await {
        Ok(c) => return (outcome_of(c, hold), None),
        Err(e) => e,
    };
    let Some(hold) = rollback::after_failure(src, e.is_health_verdict(), attempt.digest.as_ref())
    else {
        return failed(e, attempt.digest);
    };
    tracing::warn!(failed = %hold.failed, good = %hold.good, error = %e, "health check failed; rolling back");
    let refused = |e: ReconcileError, hold: Hold, note: String| {
        (
            Outcome::RollbackRefused {
                hold,
                failure: e.failure(),
                note,
            },
            Some(e),
        )
    };
    // The last good digest must still verify under the trust policy as it is now, even when
    // its manifests are remembered: a rotated key stops a rollback to content it no longer
    // trusts.
    if let Err(why) = verify(
        &ctx.metrics,
        &prepared.access,
        &prepared.access.reference,
        &hold.good,
    )
    .await
    {
        tracing::warn!(good = %hold.good, error = %why, "not rolling back: the last good digest no longer verifies");
        let note = format!(
            "not rolled back: the last applied digest {} no longer verifies ({why})",
            hold.good
        );
        return refused(e, hold, note);
    }
    match resolve_and_apply(src, ctx, &prepared, Some(&hold), &mut Attempt::default()).await {
        Ok(c) if c.held => (
            Outcome::RolledBack {
                hold,
                artifact: c.artifact,
                cause: e.to_string(),
            },
            None,
        ),
        // The ref moved while we rolled back: the new digest applied cleanly.
        Ok(c) => (outcome_of(c, None), None),
        Err(rollback_error) => {
            tracing::warn!(error = %rollback_error, "rollback failed");
            let note = format!("rolling back to {} failed too: {rollback_error}", hold.good);
            refused(e, hold, note)
        }
    }
}

fn outcome_of(c: Landed, hold: Option<Hold>) -> Outcome {
    match hold {
        Some(hold) if c.held => Outcome::Held {
            hold,
            artifact: c.artifact,
        },
        _ => Outcome::Applied {
            artifact: c.artifact,
            report: c.report,
        },
    }
}

/// Phase 0: the spec, the lockdown's ServiceAccount rule and what the Source names.
async fn prepare(src: &Source, ctx: &Context) -> Result<Prepared, ReconcileError> {
    src.spec.validate()?;
    let service_account = ctx.lockdown.service_account(src)?;
    let access = access::of(src, &ctx.client, &ctx.registries).await?;
    Ok(Prepared {
        access,
        service_account,
    })
}

/// Resolve, get the verified artifact, apply. With `hold`, a ref that resolves to the failed
/// digest applies the held (last good) digest instead.
async fn resolve_and_apply(
    src: &Source,
    ctx: &Context,
    prepared: &Prepared,
    hold: Option<&Hold>,
    attempt: &mut Attempt,
) -> Result<Landed, ReconcileError> {
    let access = &prepared.access;
    // Resolve: one HEAD request (or a tag list for semver).
    let resolution = fetch::resolve(
        &access.registry,
        &access.reference,
        access.semver.as_deref(),
    )
    .await;
    ctx.metrics.registry_request("resolve", resolution.is_ok());
    let (mut resolved, mut digest) = resolution?;
    let mut held = false;
    if let Some(h) = hold
        && digest == h.failed
    {
        tracing::debug!(failed = %h.failed, "the ref still points at the digest that was rolled back; keeping the last good one");
        resolved = resolved.with_digest(h.good.clone());
        digest = h.good.clone();
        held = true;
    }
    tracing::Span::current().record("digest", tracing::field::display(&digest));
    attempt.digest = Some(digest.clone());

    let (entry, drift_check) = artifact_for(src, ctx, access, &resolved, &digest).await?;
    let report = apply(src, ctx, prepared, &entry.artifact, drift_check).await?;
    let artifact = entry.artifact.clone();
    // Remembered only once applied: an artifact that failed is pulled and verified again.
    ctx.remember(src.key(), entry);
    Ok(Landed {
        artifact,
        report,
        held,
    })
}

/// The verified artifact at `digest`, and whether this is a drift check of the artifact the
/// Source already applied (unchanged digest, spec and trust: no dry-run gate needed).
async fn artifact_for(
    src: &Source,
    ctx: &Context,
    access: &Access,
    resolved: &Reference,
    digest: &Digest,
) -> Result<(Remembered, bool), ReconcileError> {
    let key = src.key();
    let trust = access.trust.fingerprint();
    let remembered = ctx
        .remembered(&key)
        .filter(|r| r.artifact.digest == *digest && r.uid == src.metadata.uid);
    // A spec change (namespace, force, identity…) changes the plan even for the same digest:
    // it goes through the dry-run gate again.
    let spec_unchanged =
        src.status.as_ref().and_then(|s| s.observed_generation) == src.metadata.generation;
    let vouched = remembered
        .as_ref()
        .is_some_and(|r| r.vouched_for(src, &trust));
    let entry = match remembered {
        Some(r) if vouched => {
            tracing::debug!("digest unchanged; checking for drift");
            r
        }
        Some(r) => {
            // Same digest and manifests, but the spec or the trust policy changed since it
            // was verified: nothing is applied until it verifies again. The entry goes first,
            // so a refusal leaves nothing trusted behind.
            tracing::info!("spec or trust policy changed; verifying the applied digest again");
            ctx.forget(&key);
            let signer = verify(&ctx.metrics, access, resolved, digest).await?;
            let artifact = Arc::new(Artifact {
                signer,
                ..(*r.artifact).clone()
            });
            Remembered {
                generation: src.metadata.generation,
                trust,
                artifact,
                ..r
            }
        }
        None => {
            status::record_progress(src, ctx, digest)
                .await
                .map_err(ReconcileError::Status)?;
            let mut grant = ctx.budget.reserve(|| ctx.evict_one()).await;
            let share = ctx.budget.share();
            let checks = Checks {
                metrics: &ctx.metrics,
                refuse_older_than: refuse_older_than(src),
            };
            let (artifact, charged) = fetch::fetch_digest(
                &access.registry,
                resolved,
                digest,
                &access.trust,
                share,
                &checks,
            )
            .await?;
            tracing::info!(signer = %artifact.signer, objects = artifact.manifests.len(), charged, "artifact verified");
            // The layer is gone; the remembered manifests keep what they were charged.
            grant.shrink_to(charged);
            Remembered {
                uid: src.metadata.uid.clone(),
                generation: src.metadata.generation,
                trust,
                artifact: Arc::new(artifact),
                grant: Arc::new(grant),
            }
        }
    };
    Ok((entry, vouched && spec_unchanged))
}

/// With `spec.verify.refuseOlder` (and a ref that does not pin a digest): the `created` time
/// of the last applied artifact, which a new one may not be older than.
fn refuse_older_than(src: &Source) -> Option<Option<&str>> {
    let pinned = matches!(src.spec.reference.kind(), Ok(RefKind::Digest(_)));
    (src.spec.verify.refuse_older && !pinned).then(|| {
        src.status
            .as_ref()
            .and_then(|s| s.last_applied_created.as_deref())
    })
}

/// The controller's view of a fetch: registry requests counted, older artifacts refused.
struct Checks<'a> {
    metrics: &'a Metrics,
    refuse_older_than: Option<Option<&'a str>>,
}

impl Observer for Checks<'_> {
    fn request(&self, operation: &'static str, ok: bool) {
        self.metrics.registry_request(operation, ok);
    }

    fn check(&self, at: &str, pulled: &Pulled) -> Result<(), FetchError> {
        match self.refuse_older_than {
            Some(applied) => fetch::refuse_older(at, pulled.created.as_deref(), applied),
            None => Ok(()),
        }
    }
}

/// The signature of `digest` checked against the Source's trust policy, counted.
async fn verify(
    metrics: &Metrics,
    access: &Access,
    reference: &Reference,
    digest: &Digest,
) -> Result<String, FetchError> {
    let signer = fetch::verify(&access.registry, reference, digest, &access.trust).await;
    metrics.registry_request("verify", signer.is_ok());
    signer
}

/// Plan, (dry-run,) apply, prune and wait with the engine, as the Source's ServiceAccount.
async fn apply(
    src: &Source,
    ctx: &Context,
    prepared: &Prepared,
    artifact: &Artifact,
    drift_check: bool,
) -> Result<SyncReport, ReconcileError> {
    let namespace = src.namespace().unwrap_or_default();
    let applier = match &prepared.service_account {
        Some(sa) => crate::apply::impersonating(&ctx.config, &namespace, sa).map_err(|e| {
            AccessError::Unusable {
                what: format!("ServiceAccount {namespace}/{sa}"),
                message: e.to_string(),
            }
        })?,
        None => ctx.client.clone(),
    };
    let clients = Clients {
        agent: ctx.client.clone(),
        applier,
    };
    let parent = ApplySetParent {
        kind: ParentKind::Source,
        name: src.name_any(),
        namespace: namespace.clone(),
    };
    let opts = SyncOptions {
        namespaces: NamespaceDefaults {
            target: src.spec.target_namespace.clone(),
            fallback: namespace,
        },
        force: src.spec.force,
        recreate: src.spec.recreate,
        prune: src.spec.prune,
        wait: src.spec.wait,
        timeout: src.spec.timeout()?,
        allow_empty: false,
        dry_run_gate: !drift_check,
        health: src.spec.health_rules()?,
    };
    let mut discovery = ApiDiscovery::new(ctx.client.clone());
    if !ctx.lockdown.is_empty() {
        // The same plan the engine builds (discovery answers are kept for it), checked whole
        // before the engine dry-runs or applies any of it.
        let plan = crate::plan::plan(
            artifact.manifests.clone(),
            &mut discovery,
            &opts.namespaces,
            &parent.id(),
        )
        .await
        .map_err(|e| ReconcileError::Sync(e.into()))?;
        ctx.lockdown.check(&plan, &parent)?;
    }
    engine::sync(
        &clients,
        &mut discovery,
        &parent,
        artifact.manifests.clone(),
        &opts,
    )
    .await
    .map_err(|e| match (&prepared.service_account, e) {
        (Some(sa), SyncError::Apply(a))
            if a.main_cause() == crate::apply::FailureCause::Forbidden =>
        {
            ReconcileError::ForbiddenAs {
                account: format!("{}/{sa}", parent.namespace),
                source: Box::new(SyncError::Apply(a)),
            }
        }
        (_, e) => e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let cap = Duration::from_secs(60);
        assert_eq!(backoff(1, cap), Duration::from_secs(5));
        assert_eq!(backoff(2, cap), Duration::from_secs(10));
        assert_eq!(backoff(4, cap), Duration::from_secs(40));
        assert_eq!(backoff(5, cap), cap);
        assert_eq!(backoff(200, cap), cap);
    }

    #[test]
    fn spec_errors_stall_and_registry_errors_retry() {
        let spec = ReconcileError::Spec(SpecError::NoTrustPolicy).failure();
        assert_eq!((spec.reason, spec.stalled), (reason::INVALID_SPEC, true));
        let url = ReconcileError::Access(AccessError::Url {
            url: "x".into(),
            message: "bad".into(),
        })
        .failure();
        assert_eq!((url.reason, url.stalled), (reason::INVALID_SPEC, true));
        let secret = ReconcileError::Access(AccessError::Unusable {
            what: "Secret ns/k".into(),
            message: "gone".into(),
        });
        let f = secret.failure();
        assert_eq!(
            (f.reason, f.stalled, f.message.as_str()),
            (
                reason::ACCESS_CONFIGURATION_FAILED,
                false,
                "Secret ns/k: gone"
            )
        );
        let older = ReconcileError::Fetch(FetchError::Older {
            reference: "r".into(),
            created: "a".into(),
            applied: "b".into(),
        });
        assert_eq!(
            (older.failure().reason, older.failure().stalled),
            (reason::OLDER_ARTIFACT, false)
        );
        assert!(!older.is_health_verdict());
    }
}
