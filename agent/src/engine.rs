//! The apply engine shared by the controller and the one-shot commands: given the manifests of
//! one artifact and an ApplySet parent, converge the cluster — plan, dry-run gate, widen the
//! inventory, apply stage by stage, prune, narrow the inventory, wait for health. Also the
//! read-only `diff` of the same set.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DynamicObject};
use serde_json::Value;

use crate::api_error;
use crate::apply::{
    self, Answer, AppliedObject, ApplyError, ConflictPolicy, FailureCause, Mode, ObjectFailure,
    Unapplied,
};
use crate::applyset::{ApplyPolicy, JOB_CONTENT_ANNOTATION, Stage};
use crate::conditions::reason;
use crate::discovery::ApiDiscovery;
use crate::health::{self, HealthError};
use crate::inventory::{self, ApplySetParent, Inventory, InventoryError};
use crate::ownership::{self, OwnershipError};
use crate::plan::{
    self, ApplyPlan, Manifest, NamespaceDefaults, ObjectKey, PlanError, PlannedObject,
};

/// The clients one sync uses: the agent's own identity for discovery and the inventory
/// parent, and the applying identity (possibly an impersonated ServiceAccount) for everything
/// that touches the artifact's objects.
#[derive(Clone)]
pub struct Clients {
    pub agent: Client,
    pub applier: Client,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients").finish_non_exhaustive()
    }
}

/// What one sync should do.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub namespaces: NamespaceDefaults,
    pub force: bool,
    pub prune: bool,
    pub wait: bool,
    /// Deadline for apply and for health, each.
    pub timeout: Duration,
    /// Apply an artifact with no objects. Off by default: with prune on, an empty artifact
    /// deletes everything the set holds.
    pub allow_empty: bool,
    /// Delete and re-create any object whose immutable fields changed (`spec.recreate` /
    /// `--recreate`), as the per-object `berth.dev/apply: Recreate` does for one object.
    pub recreate: bool,
    /// Server-side dry-run of the whole set before anything is written. Always on for new
    /// content; the controller skips it when re-applying a digest that already passed it
    /// (drift correction), which halves the requests of a quiet interval.
    pub dry_run_gate: bool,
    /// The user's health rules for kinds, used by the final health wait.
    pub health: health::HealthRules,
}

/// What a sync did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub total: usize,
    /// Objects created or changed (their resourceVersion moved).
    pub changed: Vec<ObjectKey>,
    pub pruned: Vec<ObjectKey>,
    /// Pruned objects still held by their finalizers, with those finalizers.
    pub terminating: Vec<(ObjectKey, Vec<String>)>,
    /// Objects of the artifact not sent, and why.
    pub skipped: Vec<(ObjectKey, Skip)>,
    /// Objects deleted and created again because an immutable field changed.
    pub recreated: Vec<ObjectKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(
        "the artifact holds no objects; refusing to apply it because prune would delete everything in the set (allow empty artifacts explicitly if that is intended)"
    )]
    Empty,
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// Objects of the artifact are members of another ApplySet; nothing was applied.
    #[error(transparent)]
    Ownership(#[from] OwnershipError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("health: {0}")]
    Health(#[from] HealthError),
    #[error("checking whether namespace {namespace} exists: {}", api_error::message(.source))]
    NamespaceLookup {
        namespace: String,
        source: kube::Error,
    },
    #[error(
        "apply did not finish within {timeout:?} (spec.timeout / --timeout); objects applied so far stay and are part of the set"
    )]
    Timeout { timeout: Duration },
}

impl SyncError {
    /// Whether the sync failed because the API server stopped answering, in whichever stage:
    /// nothing is wrong with the artifact, and the same sync is worth running again.
    pub fn unreachable(&self) -> bool {
        match self {
            SyncError::Plan(e) => e.unreachable(),
            SyncError::Inventory(e) => e.unreachable(),
            SyncError::Ownership(e) => e.unreachable(),
            SyncError::Apply(e) => e.main_cause() == apply::FailureCause::Unreachable,
            SyncError::Health(HealthError::Read { source, .. })
            | SyncError::NamespaceLookup { source, .. } => api_error::is_unreachable(source),
            SyncError::Empty | SyncError::Health(_) | SyncError::Timeout { .. } => false,
        }
    }

    /// A kstatus-friendly reason users can act on.
    pub fn reason(&self) -> &'static str {
        if self.unreachable() {
            return reason::API_SERVER_UNREACHABLE;
        }
        match self {
            SyncError::Plan(PlanError::Discovery(_)) => reason::DISCOVERY_FAILED,
            SyncError::Plan(_) => reason::INVALID_MANIFESTS,
            SyncError::Empty => reason::EMPTY_ARTIFACT,
            SyncError::Inventory(
                InventoryError::OtherTooling { .. } | InventoryError::IdMismatch { .. },
            ) => reason::INVENTORY_CONFLICT,
            SyncError::Inventory(e) if e.is_forbidden() => reason::FORBIDDEN,
            SyncError::Inventory(InventoryError::Delete { .. } | InventoryError::List { .. }) => {
                reason::PRUNE_FAILED
            }
            SyncError::Inventory(_) => reason::INVENTORY_FAILED,
            SyncError::Ownership(OwnershipError::Claimed { .. }) => reason::OWNERSHIP_CONFLICT,
            SyncError::Ownership(e) if e.is_forbidden() => reason::FORBIDDEN,
            SyncError::Ownership(_) => reason::INVENTORY_FAILED,
            SyncError::Apply(e) => match (e, e.main_cause()) {
                (_, apply::FailureCause::Forbidden) => reason::FORBIDDEN,
                (_, apply::FailureCause::Conflict) => reason::FIELD_MANAGER_CONFLICT,
                (ApplyError::DryRunRejected { .. } | ApplyError::DryRunUnfinished { .. }, _) => {
                    reason::DRY_RUN_FAILED
                }
                (ApplyError::ApplyFailed { .. }, _) => reason::APPLY_FAILED,
            },
            SyncError::Health(HealthError::Timeout { .. }) => reason::HEALTH_CHECK_TIMEOUT,
            SyncError::Health(_) => reason::HEALTH_CHECK_FAILED,
            SyncError::NamespaceLookup { .. } => reason::APPLY_FAILED,
            SyncError::Timeout { .. } => reason::APPLY_TIMEOUT,
        }
    }
}

/// Converges the cluster to `manifests`. Nothing is applied unless the dry-run of every object
/// that can be dry-run now passes; objects that depend on CRDs or Namespaces of the same set
/// are dry-run right after those are applied, before any of them is applied.
pub async fn sync(
    clients: &Clients,
    discovery: &mut ApiDiscovery,
    parent: &ApplySetParent,
    manifests: Vec<Manifest>,
    opts: &SyncOptions,
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let applied = tokio::time::timeout(
        opts.timeout,
        converge(clients, discovery, parent, manifests, opts),
    )
    .await
    .map_err(|_| SyncError::Timeout {
        timeout: opts.timeout,
    })??;
    let Converged {
        plan,
        results,
        report,
        recorded,
    } = applied;
    if opts.wait {
        let remaining = opts
            .timeout
            .saturating_sub(started.elapsed())
            .max(health::POLL_INTERVAL);
        let pairs: Vec<(&PlannedObject, &AppliedObject)> = plan
            .objects
            .iter()
            .filter_map(|o| results.get(&o.key).map(|a| (o, a)))
            .collect();
        health::wait_healthy(&clients.applier, &pairs, remaining, &opts.health).await?;
        // Every Job waited for completed: record it, so that once its TTL removes it, it is
        // not run again for the same content.
        let mut done = recorded.clone();
        for (o, _) in pairs.iter().filter(|(o, _)| o.is_job()) {
            if let Some(content) = o.job_content() {
                done.finished_jobs
                    .insert(inventory::job_record_key(&o.key), content.to_string());
            }
        }
        if done != recorded {
            inventory::write(&clients.agent, parent, &done).await?;
        }
    }
    Ok(report)
}

/// What [`converge`] leaves for the health wait and the final record.
struct Converged {
    plan: ApplyPlan,
    results: BTreeMap<ObjectKey, AppliedObject>,
    report: SyncReport,
    /// What the parent records now.
    recorded: Inventory,
}

async fn converge(
    clients: &Clients,
    discovery: &mut ApiDiscovery,
    parent: &ApplySetParent,
    manifests: Vec<Manifest>,
    opts: &SyncOptions,
) -> Result<Converged, SyncError> {
    let started = Instant::now();
    let deadline = started + opts.timeout;
    let id = parent.id();
    let plan = plan::plan(manifests, discovery, &opts.namespaces, &id).await?;
    if plan.objects.is_empty() && !opts.allow_empty {
        return Err(SyncError::Empty);
    }
    let on_parent = inventory::read_recorded(&clients.agent, parent).await?;
    let recorded = &on_parent.inventory;
    let policy = ConflictPolicy { force: opts.force };
    let new = Inventory {
        group_kinds: plan.group_kinds(),
        namespaces: plan.namespaces(),
        finished_jobs: BTreeMap::new(),
    };
    let mut widened = recorded.union(&new);
    widened.namespaces.insert(parent.namespace.clone());

    // What the set holds now: resourceVersions tell changed objects from no-ops afterwards,
    // and the members missing from the plan are what prune deletes. Listing is read-only
    // and done as the agent, so a ServiceAccount needs rights only for what it applies.
    let members = inventory::list_members(&clients.agent, discovery, parent, &widened).await?;
    tracing::debug!(
        members = members.len(),
        elapsed_ms = started.elapsed().as_millis(),
        "planned and listed the set"
    );
    let before: BTreeMap<ObjectKey, String> = members
        .iter()
        .filter_map(|m| m.resource_version.clone().map(|rv| (m.key.clone(), rv)))
        .collect();
    let live: BTreeMap<&ObjectKey, &inventory::Member> =
        members.iter().map(|m| (&m.key, m)).collect();

    let Decisions {
        skipped,
        recreatable,
        finished,
    } = decide(clients, &plan, &live, recorded, opts).await?;
    let gate = Gate {
        plan: &plan,
        live: &live,
        recreatable: &recreatable,
    };

    // Members whose live state already holds every desired field and value need no request at
    // all: an apply would be a no-op. Anything else (a missing or different field, a
    // normalised quantity, another API version) is sent, and the server decides.
    let mut results: BTreeMap<ObjectKey, AppliedObject> = BTreeMap::new();
    for o in plan
        .objects
        .iter()
        .filter(|o| !skipped.contains_key(&o.key))
    {
        // Only compare in the same API version: fields differ between versions.
        let Some(l) = live
            .get(&o.key)
            .filter(|m| m.resource.api_version == o.resource.api_version)
            .map(|m| &m.live)
        else {
            continue;
        };
        let (Ok(mut desired), Ok(current)) =
            (serde_json::to_value(&o.body), serde_json::to_value(l))
        else {
            continue;
        };
        // List items carry no apiVersion/kind; the version was matched above.
        if let Some(d) = desired.as_object_mut() {
            d.remove("apiVersion");
            d.remove("kind");
        }
        if contained(&desired, &current) {
            results.insert(
                o.key.clone(),
                AppliedObject {
                    key: o.key.clone(),
                    resource_version: l.metadata.resource_version.clone(),
                    object: (*l).clone(),
                },
            );
        }
    }
    let unchanged = results.len();
    tracing::debug!(
        unchanged,
        skipped = skipped.len(),
        elapsed_ms = started.elapsed().as_millis(),
        "objects already as desired"
    );
    let to_send =
        |o: &&PlannedObject| !results.contains_key(&o.key) && !skipped.contains_key(&o.key);

    // One object, one set: none of the objects this set does not hold yet may belong to
    // another one. Checked before anything is written, whatever `force` says; a quiet
    // interval (every object a member already) sends no request for it.
    let newcomers: Vec<&PlannedObject> = plan
        .objects
        .iter()
        .filter(|o| !live.contains_key(&o.key) && !skipped.contains_key(&o.key))
        .collect();
    if !newcomers.is_empty() {
        ownership::check(&clients.agent, &newcomers, &id).await?;
    }

    // Gate: dry-run everything that can be dry-run before anything is written.
    let pending: Vec<&PlannedObject> = plan.objects.iter().filter(to_send).collect();
    let deferred = if opts.dry_run_gate {
        // Objects already as desired are neither dry-run nor applied: their namespaces exist.
        deferred_objects(&clients.agent, &pending).await?
    } else {
        pending
            .iter()
            .filter(|o| o.kind_from_plan)
            .map(|o| o.key.clone())
            .collect()
    };
    let (later, now): (Vec<&PlannedObject>, Vec<&PlannedObject>) =
        pending.into_iter().partition(|o| deferred.contains(&o.key));
    if opts.dry_run_gate {
        dry_run(&clients.applier, &now, policy, &gate).await?;
        tracing::debug!(
            objects = now.len(),
            deferred = later.len(),
            elapsed_ms = started.elapsed().as_millis(),
            "dry-run passed"
        );
    }

    // Widen the inventory first, so a crash from here on never loses an applied object. A
    // parent that already records exactly this is not written (a quiet interval writes nothing).
    if !on_parent.holds(&widened) {
        inventory::write(&clients.agent, parent, &widened).await?;
    }

    // Whole objects back only where health is judged from them: CRDs (waited for before
    // their custom resources), and everything when waiting was asked for.
    let answer_for = |stage: Stage| {
        if opts.wait || stage == Stage::CustomResourceDefinitions {
            Answer::Object
        } else {
            Answer::Metadata
        }
    };
    let mut recreated = Vec::new();
    let mut stage = StageRun {
        client: &clients.applier,
        policy,
        gate: &gate,
        deadline,
        results: &mut results,
        recreated: &mut recreated,
    };
    stage
        .apply(
            &in_stage(&now, Stage::CustomResourceDefinitions),
            Answer::Object,
        )
        .await?;
    stage
        .apply(
            &in_stage(&now, Stage::Namespaces),
            answer_for(Stage::Namespaces),
        )
        .await?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis(),
        "applied CRDs and Namespaces"
    );

    if !later.is_empty() {
        // The deferred objects need the CRDs just applied to be served.
        let crds: Vec<(&PlannedObject, &AppliedObject)> = plan
            .objects
            .iter()
            .filter(|o| o.stage == Stage::CustomResourceDefinitions)
            .filter_map(|o| stage.results.get(&o.key).map(|a| (o, a)))
            .collect();
        // Built-in rules only: what follows needs the CRDs served (Established), whatever a
        // user's rule for CRDs waits for at the end.
        let builtin = health::HealthRules::default();
        health::wait_healthy(&clients.agent, &crds, opts.timeout, &builtin).await?;
        discovery.invalidate();
        if opts.dry_run_gate {
            dry_run(&clients.applier, &later, policy, &gate).await?;
            tracing::debug!(
                objects = later.len(),
                elapsed_ms = started.elapsed().as_millis(),
                "dry-run of the deferred objects passed"
            );
        }
    }

    for s in Stage::APPLY_ORDER {
        let batch: Vec<&PlannedObject> = plan
            .objects
            .iter()
            .filter(|o| o.stage == s && !skipped.contains_key(&o.key))
            .filter(|o| !stage.results.contains_key(&o.key))
            .collect();
        stage.apply(&batch, answer_for(s)).await?;
    }
    tracing::debug!(elapsed_ms = started.elapsed().as_millis(), "applied");

    let changed: Vec<ObjectKey> = plan
        .objects
        .iter()
        .filter(|o| !skipped.contains_key(&o.key))
        .filter(|o| {
            let after = results
                .get(&o.key)
                .and_then(|a| a.resource_version.as_deref());
            let was = before.get(&o.key).map(String::as_str);
            was.is_none() || was != after
        })
        .map(|o| o.key.clone())
        .collect();
    for k in &changed {
        tracing::info!(object = %k, "applied");
    }

    let mut pruned = Vec::new();
    let mut record = Inventory {
        finished_jobs: finished,
        ..widened.clone()
    };
    if opts.prune {
        let doomed = inventory::prune_candidates(&members, &plan.keys());
        pruned = inventory::delete_members(&clients.applier, &doomed).await?;
        let mut narrowed = new.clone();
        narrowed.namespaces.insert(parent.namespace.clone());
        // Objects their finalizers keep are still members: the set covers them until gone.
        for p in &pruned {
            if let inventory::Pruned::Terminating { object, .. } = p {
                narrowed.group_kinds.insert(object.group_kind());
                narrowed.namespaces.extend(object.namespace.clone());
            }
        }
        narrowed.finished_jobs = record.finished_jobs;
        record = narrowed;
        tracing::debug!(
            pruned = pruned.len(),
            elapsed_ms = started.elapsed().as_millis(),
            "pruned"
        );
    }
    // After the widening the parent holds `widened`, written or not.
    if record != widened {
        inventory::write(&clients.agent, parent, &record).await?;
    }
    let report = SyncReport {
        total: plan.objects.len(),
        changed,
        pruned: pruned.iter().map(|p| p.key().clone()).collect(),
        terminating: pruned
            .into_iter()
            .filter_map(|p| match p {
                inventory::Pruned::Terminating { object, finalizers } => Some((object, finalizers)),
                inventory::Pruned::Deleted(_) => None,
            })
            .collect(),
        skipped: skipped.into_iter().collect(),
        recreated,
    };
    Ok(Converged {
        plan,
        results,
        report,
        recorded: record,
    })
}

fn in_stage<'a>(objects: &[&'a PlannedObject], stage: Stage) -> Vec<&'a PlannedObject> {
    objects
        .iter()
        .copied()
        .filter(|o| o.stage == stage)
        .collect()
}

/// Why an object of the artifact was not sent to the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// `berth.dev/apply: Ignore`.
    Ignored,
    /// `berth.dev/apply: IfNotPresent`, and the object exists.
    Exists,
    /// A Job that completed with this same content and is gone since (its TTL, or by hand):
    /// it ran; it runs again only when its manifest changes.
    Finished,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Skip::Ignored => "ignored (berth.dev/apply: Ignore)",
            Skip::Exists => "exists, left as it is (berth.dev/apply: IfNotPresent)",
            Skip::Finished => {
                "completed with this content and gone since (TTL or deleted): not run again"
            }
        })
    }
}

/// What berth decides about a set before it sends anything.
struct Decisions {
    /// Objects left alone this time, and why.
    skipped: BTreeMap<ObjectKey, Skip>,
    /// Objects that may be deleted and created again when an immutable field changed.
    recreatable: BTreeSet<ObjectKey>,
    /// Jobs known to have completed, with their content ([`Inventory::finished_jobs`]).
    finished: BTreeMap<String, String>,
}

async fn decide(
    clients: &Clients,
    plan: &ApplyPlan,
    live: &BTreeMap<&ObjectKey, &inventory::Member>,
    recorded: &Inventory,
    opts: &SyncOptions,
) -> Result<Decisions, SyncError> {
    let finished = finished_jobs(plan, live, recorded);
    let mut skipped = skipped_objects(plan, live, &finished);
    // An IfNotPresent object this set does not hold yet may still exist, made by someone
    // else: then it is left alone too (not adopted, so never pruned by this set either).
    let unowned: Vec<&PlannedObject> = plan
        .objects
        .iter()
        .filter(|o| {
            o.policy == ApplyPolicy::IfNotPresent
                && !live.contains_key(&o.key)
                && !skipped.contains_key(&o.key)
        })
        .collect();
    for o in unowned {
        let found = apply::live(&clients.applier, o).await.map_err(|f| {
            ApplyError::apply(Unapplied {
                failures: vec![f],
                ..Unapplied::default()
            })
        })?;
        if found.is_some() {
            skipped.insert(o.key.clone(), Skip::Exists);
        }
    }
    for (key, why) in &skipped {
        tracing::debug!(object = %key, "not applied: {why}");
    }
    let recreatable = plan
        .objects
        .iter()
        .filter(|o| recreate_allowed(o, live.get(&o.key).map(|m| &m.live), opts))
        .map(|o| o.key.clone())
        .collect();
    Ok(Decisions {
        skipped,
        recreatable,
        finished,
    })
}

/// The Jobs of the plan known to have completed, with the content they completed with: the
/// parent's record, and every live member Job that is complete now.
fn finished_jobs(
    plan: &ApplyPlan,
    live: &BTreeMap<&ObjectKey, &inventory::Member>,
    recorded: &Inventory,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for o in plan.objects.iter().filter(|o| o.is_job()) {
        let name = inventory::job_record_key(&o.key);
        let complete_now = live.get(&o.key).and_then(|m| {
            let content = m
                .live
                .metadata
                .annotations
                .as_ref()?
                .get(JOB_CONTENT_ANNOTATION)?;
            (health::assess("batch", "Job", &m.live) == health::Health::Current)
                .then(|| content.clone())
        });
        if let Some(content) = complete_now.or_else(|| recorded.finished_jobs.get(&name).cloned()) {
            out.insert(name, content);
        }
    }
    out
}

/// Objects berth leaves alone this time, by their policy or because they ran already.
fn skipped_objects(
    plan: &ApplyPlan,
    live: &BTreeMap<&ObjectKey, &inventory::Member>,
    finished: &BTreeMap<String, String>,
) -> BTreeMap<ObjectKey, Skip> {
    let mut out = BTreeMap::new();
    for o in &plan.objects {
        let skip = match o.policy {
            ApplyPolicy::Ignore => Some(Skip::Ignored),
            ApplyPolicy::IfNotPresent if live.contains_key(&o.key) => Some(Skip::Exists),
            _ if o.is_job()
                && !live.contains_key(&o.key)
                && o.job_content().is_some()
                && finished
                    .get(&inventory::job_record_key(&o.key))
                    .map(String::as_str)
                    == o.job_content() =>
            {
                Some(Skip::Finished)
            }
            _ => None,
        };
        if let Some(s) = skip {
            out.insert(o.key.clone(), s);
        }
    }
    out
}

/// Whether berth may delete and re-create `o` when the API server refuses a change of its
/// immutable fields: its policy or the Source says so, or it is a Job that finished (it has
/// nothing left to run; re-creating it runs the new content).
fn recreate_allowed(o: &PlannedObject, live: Option<&DynamicObject>, opts: &SyncOptions) -> bool {
    o.policy == ApplyPolicy::Recreate
        || opts.recreate
        || (o.is_job()
            && live.is_some_and(|l| {
                matches!(
                    health::assess("batch", "Job", l),
                    health::Health::Current | health::Health::Failed(_)
                )
            }))
}

/// What the dry-run gate and the stages need to judge refusals: the planned and the live
/// objects, and which objects may be re-created.
struct Gate<'a> {
    plan: &'a ApplyPlan,
    live: &'a BTreeMap<&'a ObjectKey, &'a inventory::Member>,
    recreatable: &'a BTreeSet<ObjectKey>,
}

impl Gate<'_> {
    /// Splits refusals into the immutable-field ones berth may resolve by re-creating the
    /// object, and the rest; the rest get the changed values spelled out.
    fn judge(&self, mut u: Unapplied) -> (Vec<ObjectFailure>, Unapplied) {
        let (again, rest): (Vec<ObjectFailure>, Vec<ObjectFailure>) =
            std::mem::take(&mut u.failures).into_iter().partition(|f| {
                f.cause == FailureCause::Immutable && self.recreatable.contains(&f.object)
            });
        u.failures = rest;
        for f in &mut u.failures {
            if f.cause == FailureCause::Immutable {
                self.explain(f);
            }
        }
        (again, u)
    }

    /// Rewrites an immutable-field refusal as the fields and their two values (the cluster's,
    /// the artifact's) instead of the server's dump of the whole new value.
    fn explain(&self, f: &mut ObjectFailure) {
        let lines = self.changes(f);
        if !lines.is_empty() {
            f.message = format!("immutable field changed: {}", lines.join("; "));
        }
    }

    /// One line per immutable field of the refusal, with what changed under it; empty when
    /// the live object is not known.
    fn changes(&self, f: &ObjectFailure) -> Vec<String> {
        let (Some(desired), Some(live)) = (
            self.plan.objects.iter().find(|o| o.key == f.object),
            self.live.get(&f.object),
        ) else {
            return Vec::new();
        };
        let (Ok(desired), Ok(live)) = (
            serde_json::to_value(&desired.body),
            serde_json::to_value(&live.live),
        ) else {
            return Vec::new();
        };
        f.immutable_fields
            .iter()
            .map(|field| {
                let mut changes = Vec::new();
                differences(
                    field,
                    value_at(&desired, field),
                    value_at(&live, field),
                    &mut changes,
                );
                if changes.is_empty() {
                    format!("{field} cannot change")
                } else {
                    format!("{field} cannot change: {}", changes.join(", "))
                }
            })
            .collect()
    }
}

/// Most differences spelled out under one immutable field.
const MAX_IMMUTABLE_CHANGES_SHOWN: usize = 3;

/// The value at a field path as the API server writes them (`spec.template`,
/// `spec.containers[0].image`).
fn value_at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut at = v;
    for part in path.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        at = at.get(name)?;
        if let Some(i) = index {
            at = at.get(i)?;
        }
    }
    Some(at)
}

/// Where `desired` asks for something `live` does not have, as `path: live -> desired`
/// (desired's fields only: what the server defaulted is not a change).
fn differences(path: &str, desired: Option<&Value>, live: Option<&Value>, out: &mut Vec<String>) {
    if out.len() >= MAX_IMMUTABLE_CHANGES_SHOWN {
        return;
    }
    match (desired, live) {
        (None, _) => {}
        (Some(d), Some(l)) if contained(d, l) => {}
        (Some(Value::Object(d)), Some(Value::Object(l))) => {
            for (k, dv) in d {
                differences(&format!("{path}.{k}"), Some(dv), l.get(k), out);
            }
        }
        (Some(Value::Array(d)), Some(Value::Array(l))) if d.len() == l.len() => {
            for (i, (dv, lv)) in d.iter().zip(l).enumerate() {
                differences(&format!("{path}[{i}]"), Some(dv), Some(lv), out);
            }
        }
        (d, l) => out.push(format!("{path}: {} -> {}", short(l), short(d))),
    }
}

/// One stage's apply, with the re-creation of objects whose immutable fields changed.
struct StageRun<'a> {
    client: &'a Client,
    policy: ConflictPolicy,
    gate: &'a Gate<'a>,
    deadline: Instant,
    results: &'a mut BTreeMap<ObjectKey, AppliedObject>,
    recreated: &'a mut Vec<ObjectKey>,
}

impl StageRun<'_> {
    async fn apply(
        &mut self,
        objects: &[&PlannedObject],
        answer: Answer,
    ) -> Result<(), ApplyError> {
        if objects.is_empty() {
            return Ok(());
        }
        let failed =
            match apply::apply_all(self.client, objects, Mode::Apply, self.policy, answer).await {
                Ok(ok) => {
                    self.results
                        .extend(ok.into_iter().map(|a| (a.key.clone(), a)));
                    return Ok(());
                }
                Err(u) => u,
            };
        let (again, mut rest) = self.gate.judge(failed);
        self.results.extend(
            std::mem::take(&mut rest.applied)
                .into_iter()
                .map(|a| (a.key.clone(), a)),
        );
        if !rest.failures.is_empty() || rest.not_sent > 0 {
            return Err(ApplyError::apply(rest));
        }
        for key in again.into_iter().map(|f| f.object) {
            let Some(o) = objects.iter().find(|o| o.key == key) else {
                continue;
            };
            let undone = |f| {
                ApplyError::apply(Unapplied {
                    failures: vec![f],
                    ..Unapplied::default()
                })
            };
            apply::delete_for_recreate(self.client, o, self.deadline)
                .await
                .map_err(undone)?;
            let made = apply::apply_all(self.client, &[*o], Mode::Apply, self.policy, answer)
                .await
                .map_err(ApplyError::apply)?;
            tracing::info!(object = %o.key, "re-created: an immutable field changed");
            self.results
                .extend(made.into_iter().map(|a| (a.key.clone(), a)));
            self.recreated.push(key);
        }
        Ok(())
    }
}

/// Objects that cannot be dry-run yet: their kind comes from a CRD in this set that is not
/// served, or their namespace is created by this set and does not exist yet.
async fn deferred_objects(
    client: &Client,
    objects: &[&PlannedObject],
) -> Result<BTreeSet<ObjectKey>, SyncError> {
    // Only namespaces the set creates and some of these objects live in need a lookup.
    let used: BTreeSet<&str> = objects
        .iter()
        .filter_map(|o| o.key.namespace.as_deref())
        .collect();
    let planned_namespaces: BTreeSet<&str> = objects
        .iter()
        .filter(|o| o.stage == Stage::Namespaces)
        .map(|o| o.key.name.as_str())
        .filter(|ns| used.contains(ns))
        .collect();
    let api: Api<Namespace> = Api::all(client.clone());
    let lookups: Vec<_> = planned_namespaces
        .iter()
        .map(|ns| {
            let api = api.clone();
            async move {
                match api.get_metadata_opt(ns).await {
                    Ok(found) => Ok((*ns, found.is_none())),
                    Err(source) => Err(SyncError::NamespaceLookup {
                        namespace: ns.to_string(),
                        source,
                    }),
                }
            }
        })
        .collect();
    let answers: Vec<(&str, bool)> = futures::stream::iter(lookups)
        .buffer_unordered(apply::MAX_CONCURRENT_APPLIES)
        .try_collect()
        .await?;
    let missing: BTreeSet<&str> = answers
        .into_iter()
        .filter(|(_, absent)| *absent)
        .map(|(ns, _)| ns)
        .collect();
    Ok(objects
        .iter()
        .filter(|o| {
            o.kind_from_plan
                || o.key
                    .namespace
                    .as_deref()
                    .is_some_and(|ns| missing.contains(ns))
        })
        .map(|o| o.key.clone())
        .collect())
}

/// Whether every field and value of `desired` is present and equal in `live` (lists
/// element by element, same length). True means applying `desired` cannot change `live`.
/// A field `live` lacks counts as present when `desired` gives it its zero value (`0`,
/// `false`, `""`, `[]`, `{}`): the API server omits zero values of most built-in fields
/// (`minReadySeconds: 0` is never read back), so without this such a manifest would be
/// sent again every interval. `null` is not a zero value: it asks for removal.
pub fn contained(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, v)| match l.get(k) {
            Some(lv) => contained(v, lv),
            None => is_zero(v),
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(a, b)| contained(a, b))
        }
        (a, b) => a == b,
    }
}

/// The zero value of its JSON type, as Go's `omitempty` leaves out.
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Null => false,
    }
}

/// Dry-runs `objects` (`dryRun=All`: admission, validation and field ownership, nothing
/// stored). A change of immutable fields passes when the object may be re-created: the apply
/// stage re-creates it.
async fn dry_run(
    client: &Client,
    objects: &[&PlannedObject],
    policy: ConflictPolicy,
    gate: &Gate<'_>,
) -> Result<(), ApplyError> {
    match apply::apply_all(client, objects, Mode::DryRun, policy, Answer::Metadata).await {
        Ok(_) => Ok(()),
        Err(u) => {
            let (_, rest) = gate.judge(u);
            if rest.failures.is_empty() && rest.not_sent == 0 {
                Ok(())
            } else {
                Err(ApplyError::dry_run(rest))
            }
        }
    }
}

/// What applying the set would do to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create,
    /// Changed fields as `path: old -> new` lines (values shortened).
    Update(Vec<String>),
    /// Immutable fields changed and the object may be re-created: it is deleted and created
    /// again. The lines say what changed.
    Recreate(Vec<String>),
    /// Not sent, and why.
    Skip(Skip),
    Unchanged,
    Prune,
}

/// The per-object difference between the set and the cluster, computed with server-side
/// dry-run (defaults, webhooks and field ownership included). Writes nothing.
pub async fn diff(
    clients: &Clients,
    discovery: &mut ApiDiscovery,
    parent: &ApplySetParent,
    manifests: Vec<Manifest>,
    opts: &SyncOptions,
) -> Result<Vec<(ObjectKey, Change)>, SyncError> {
    let plan = plan::plan(manifests, discovery, &opts.namespaces, &parent.id()).await?;
    let recorded = inventory::read(&clients.agent, parent).await?;
    let mut scope = recorded.union(&Inventory {
        group_kinds: plan.group_kinds(),
        namespaces: plan.namespaces(),
        finished_jobs: BTreeMap::new(),
    });
    scope.namespaces.insert(parent.namespace.clone());
    let members = inventory::list_members(&clients.agent, discovery, parent, &scope).await?;
    let live: BTreeMap<&ObjectKey, &inventory::Member> =
        members.iter().map(|m| (&m.key, m)).collect();
    let decisions = decide(clients, &plan, &live, &recorded, opts).await?;
    let gate = Gate {
        plan: &plan,
        live: &live,
        recreatable: &decisions.recreatable,
    };
    let all: Vec<&PlannedObject> = plan
        .objects
        .iter()
        .filter(|o| !decisions.skipped.contains_key(&o.key))
        .collect();
    ownership::check(&clients.agent, &all, &parent.id()).await?;
    let deferred = deferred_objects(&clients.agent, &all).await?;
    let policy = ConflictPolicy { force: opts.force };
    let mut out = Vec::new();
    let (later, mut now): (Vec<&PlannedObject>, Vec<&PlannedObject>) =
        all.into_iter().partition(|o| deferred.contains(&o.key));
    let dry = match apply::apply_all(&clients.applier, &now, Mode::DryRun, policy, Answer::Object)
        .await
    {
        Ok(dry) => dry,
        Err(u) => {
            // Objects whose immutable fields changed and that may be re-created are shown as
            // such; everything else must pass the dry-run as the apply would need it to.
            let (again, rest) = gate.judge(u);
            if !rest.failures.is_empty() || rest.not_sent > 0 {
                return Err(ApplyError::dry_run(rest).into());
            }
            for f in &again {
                out.push((f.object.clone(), Change::Recreate(gate.changes(f))));
            }
            now.retain(|o| !again.iter().any(|f| f.object == o.key));
            apply::apply_all(&clients.applier, &now, Mode::DryRun, policy, Answer::Object)
                .await
                .map_err(ApplyError::dry_run)?
        }
    };
    for (o, mut d) in now.iter().zip(dry) {
        let rejected = |f: ObjectFailure| {
            ApplyError::dry_run(Unapplied {
                failures: vec![f],
                ..Unapplied::default()
            })
        };
        let mut live = apply::live(&clients.applier, o).await.map_err(rejected)?;
        // Controllers write objects all the time (a Deployment's revision annotation right
        // after creation): compare a dry-run and a read of the same resourceVersion.
        for _ in 1..MAX_DIFF_ATTEMPTS {
            let live_rv = live
                .as_ref()
                .and_then(|l| l.metadata.resource_version.clone());
            if live_rv.is_none() || live_rv == d.resource_version {
                break;
            }
            let mut again = apply::apply_all(
                &clients.applier,
                &[*o],
                Mode::DryRun,
                policy,
                Answer::Object,
            )
            .await
            .map_err(ApplyError::dry_run)?;
            if let Some(a) = again.pop() {
                d = a;
            }
            live = apply::live(&clients.applier, o).await.map_err(rejected)?;
        }
        let change = match live {
            None => Change::Create,
            Some(live) => {
                let mut fields = changed_fields(&comparable(&live), &comparable(&d.object));
                if o.key.group.is_empty() && o.key.kind == "Secret" {
                    fields = fields.into_iter().map(|f| hide_secret_value(&f)).collect();
                }
                if fields.is_empty() {
                    Change::Unchanged
                } else {
                    Change::Update(fields)
                }
            }
        };
        out.push((o.key.clone(), change));
    }
    out.extend(later.into_iter().map(|o| (o.key.clone(), Change::Create)));
    out.extend(
        decisions
            .skipped
            .iter()
            .map(|(k, why)| (k.clone(), Change::Skip(*why))),
    );
    if opts.prune {
        out.extend(
            inventory::prune_candidates(&members, &plan.keys())
                .into_iter()
                .map(|m| (m.key, Change::Prune)),
        );
    }
    Ok(out)
}

/// Reads and dry-runs of one object tried before a diff is shown as is.
const MAX_DIFF_ATTEMPTS: usize = 3;

/// The object without the fields the server manages on every write.
fn comparable(o: &kube::api::DynamicObject) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "managedFields",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "uid",
        ] {
            meta.remove(f);
        }
    }
    if let Some(obj) = v.as_object_mut() {
        obj.remove("status");
    }
    v
}

/// Longest value shown in a diff line.
const MAX_DIFF_VALUE_CHARS: usize = 80;

fn short(v: Option<&Value>) -> String {
    let s = match v {
        None => "(absent)".to_string(),
        Some(v) => v.to_string(),
    };
    if s.chars().count() > MAX_DIFF_VALUE_CHARS {
        let cut: String = s.chars().take(MAX_DIFF_VALUE_CHARS).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// A diff line of a Secret without its values (they never reach a terminal or a log).
fn hide_secret_value(line: &str) -> String {
    match line.split_once(": ") {
        Some((path, _)) if path.starts_with("data") || path.starts_with("stringData") => {
            format!("{path}: (value hidden)")
        }
        _ => line.to_string(),
    }
}

/// Paths (dot-separated) whose values differ between `a` and `b`.
pub fn changed_fields(a: &Value, b: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk("", Some(a), Some(b), &mut out);
    out
}

fn walk(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<String>) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(&p, x.get(k), y.get(k), out);
            }
        }
        (Some(x), Some(y)) if x == y => {}
        (x, y) => out.push(format!("{path}: {} -> {}", short(x), short(y))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_names_changed_added_and_removed_fields() {
        let a = json!({"data": {"a": "1", "gone": "x"}, "metadata": {"name": "c"}});
        let b = json!({"data": {"a": "2", "new": "y"}, "metadata": {"name": "c"}});
        assert_eq!(
            changed_fields(&a, &b),
            vec![
                "data.a: \"1\" -> \"2\"",
                "data.gone: \"x\" -> (absent)",
                "data.new: (absent) -> \"y\""
            ]
        );
        assert!(changed_fields(&a, &a).is_empty());
    }

    #[test]
    fn containment_requires_every_desired_field_and_equal_lists() {
        let live = json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}, "resourceVersion": "7"},
                          "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "replicas": 2}});
        assert!(contained(
            &json!({"metadata": {"labels": {"x": "1"}}, "spec": {"ports": [{"port": 80}]}}),
            &live
        ));
        assert!(
            !contained(&json!({"spec": {"replicas": 3}}), &live),
            "a changed value"
        );
        assert!(
            !contained(&json!({"metadata": {"labels": {"z": "1"}}}), &live),
            "a missing field"
        );
        assert!(
            !contained(&json!({"spec": {"ports": []}}), &live),
            "a shorter list"
        );
        assert!(
            !contained(&json!({"metadata": {"annotations": null}}), &live),
            "null asks for removal"
        );
        for zero in [json!(0), json!(false), json!(""), json!([]), json!({})] {
            assert!(
                contained(&json!({"spec": {"minReadySeconds": zero}}), &live),
                "the server omits zero values: {zero} is what it left out"
            );
            assert!(
                !contained(&json!({"spec": {"replicas": zero}}), &live),
                "a zero value where the live object holds another is a change: {zero}"
            );
        }
        assert!(
            !contained(&json!({"spec": {"minReadySeconds": 5}}), &live),
            "a non-zero value the live object lacks"
        );
    }

    /// A planned Job `name` in namespace `jobs`, stamped as the plan stamps it.
    fn job(name: &str, image: &str, policy: ApplyPolicy) -> PlannedObject {
        let mut o = PlannedObject::for_test("batch", "v1", "Job", Some("jobs"), name);
        o.body.data = json!({"spec": {"template": {"spec": {"containers": [{"name": "m", "image": image}]}}}});
        o.body.metadata.annotations = Some(BTreeMap::from([(
            JOB_CONTENT_ANNOTATION.to_string(),
            format!("content-of-{image}"),
        )]));
        o.policy = policy;
        o
    }

    /// A live member as listed, with `status` and the content annotation of `content`.
    fn live_member(o: &PlannedObject, status: Value, content: &str) -> inventory::Member {
        let mut live = o.body.clone();
        live.data["status"] = status;
        live.metadata.annotations = Some(BTreeMap::from([(
            JOB_CONTENT_ANNOTATION.to_string(),
            content.to_string(),
        )]));
        inventory::Member {
            key: o.key.clone(),
            resource: o.resource.clone(),
            stage: o.stage,
            resource_version: Some("1".into()),
            keep: false,
            live,
        }
    }

    fn complete() -> Value {
        json!({"conditions": [{"type": "Complete", "status": "True"}]})
    }

    fn opts(recreate: bool) -> SyncOptions {
        SyncOptions {
            namespaces: NamespaceDefaults {
                target: None,
                fallback: "default".into(),
            },
            force: false,
            recreate,
            prune: true,
            wait: true,
            timeout: Duration::from_secs(60),
            allow_empty: false,
            dry_run_gate: true,
            health: health::HealthRules::default(),
        }
    }

    #[test]
    fn a_finished_job_that_is_gone_is_not_run_again_for_the_same_content() {
        let plan = ApplyPlan {
            objects: vec![
                job("migrate", "busybox:1", ApplyPolicy::Apply),
                job("seed", "busybox:2", ApplyPolicy::Apply),
            ],
        };
        let recorded = Inventory {
            finished_jobs: BTreeMap::from([
                ("jobs/migrate".into(), "content-of-busybox:1".into()),
                // seed completed with other content: its manifest changed since.
                ("jobs/seed".into(), "content-of-busybox:1".into()),
                ("jobs/gone-from-artifact".into(), "x".into()),
            ]),
            ..Inventory::default()
        };
        let live = BTreeMap::new();
        let finished = finished_jobs(&plan, &live, &recorded);
        assert_eq!(
            finished.keys().collect::<Vec<_>>(),
            ["jobs/migrate", "jobs/seed"],
            "Jobs that left the artifact leave the record"
        );
        let skipped = skipped_objects(&plan, &live, &finished);
        assert_eq!(
            skipped.into_iter().collect::<Vec<_>>(),
            vec![(plan.objects[0].key.clone(), Skip::Finished)],
            "seed runs again: its content changed"
        );
    }

    #[test]
    fn a_job_seen_complete_is_recorded_with_the_content_it_ran() {
        let planned = job("migrate", "busybox:2", ApplyPolicy::Apply);
        let plan = ApplyPlan {
            objects: vec![planned.clone()],
        };
        let running = live_member(&planned, json!({"active": 1}), "content-of-busybox:2");
        let live = BTreeMap::from([(&planned.key, &running)]);
        assert!(finished_jobs(&plan, &live, &Inventory::default()).is_empty());
        let done = live_member(&planned, complete(), "content-of-busybox:1");
        let live = BTreeMap::from([(&planned.key, &done)]);
        assert_eq!(
            finished_jobs(&plan, &live, &Inventory::default())["jobs/migrate"],
            "content-of-busybox:1",
            "the content the live Job ran, not the one planned"
        );
        assert!(
            skipped_objects(
                &plan,
                &live,
                &finished_jobs(&plan, &live, &Inventory::default())
            )
            .is_empty(),
            "a Job that is still there is applied (and re-created if its content changed)"
        );
    }

    #[test]
    fn policies_decide_what_is_skipped_and_what_may_be_recreated() {
        let ignored = job("a", "i:1", ApplyPolicy::Ignore);
        let once = job("b", "i:1", ApplyPolicy::IfNotPresent);
        let plan = ApplyPlan {
            objects: vec![ignored.clone(), once.clone()],
        };
        let once_live = live_member(&once, json!({"active": 1}), "content-of-i:1");
        let none = BTreeMap::new();
        let skipped = skipped_objects(&plan, &none, &BTreeMap::new());
        assert_eq!(skipped.get(&ignored.key), Some(&Skip::Ignored));
        assert_eq!(skipped.get(&once.key), None, "absent: it is created");
        let live = BTreeMap::from([(&once.key, &once_live)]);
        assert_eq!(
            skipped_objects(&plan, &live, &BTreeMap::new()).get(&once.key),
            Some(&Skip::Exists)
        );

        let web = PlannedObject::for_test("apps", "v1", "Deployment", Some("a"), "web");
        assert!(!recreate_allowed(&web, None, &opts(false)));
        assert!(recreate_allowed(&web, None, &opts(true)), "spec.recreate");
        let web = PlannedObject {
            policy: ApplyPolicy::Recreate,
            ..web
        };
        assert!(recreate_allowed(&web, None, &opts(false)), "the annotation");
        let running = job("m", "i:1", ApplyPolicy::Apply);
        let running_live = live_member(&running, json!({"active": 1}), "c");
        assert!(
            !recreate_allowed(&running, Some(&running_live.live), &opts(false)),
            "a running Job is not killed to apply a change"
        );
        let done_live = live_member(&running, complete(), "c");
        assert!(recreate_allowed(
            &running,
            Some(&done_live.live),
            &opts(false)
        ));
        let failed_live = live_member(
            &running,
            json!({"conditions": [{"type": "Failed", "status": "True"}]}),
            "c",
        );
        assert!(recreate_allowed(
            &running,
            Some(&failed_live.live),
            &opts(false)
        ));
    }

    #[test]
    fn immutable_changes_are_spelled_out_as_the_fields_and_their_two_values() {
        let desired = json!({"spec": {"selector": {"matchLabels": {"app": "web2"}},
            "template": {"spec": {"containers": [{"name": "m", "image": "busybox:2"}]}}}});
        let live = json!({"spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"defaulted": "x"}},
                "spec": {"containers": [{"name": "m", "image": "busybox:1", "imagePullPolicy": "IfNotPresent"}]}}}});
        let mut out = Vec::new();
        differences(
            "spec.selector",
            value_at(&desired, "spec.selector"),
            value_at(&live, "spec.selector"),
            &mut out,
        );
        assert_eq!(out, ["spec.selector.matchLabels.app: \"web\" -> \"web2\""]);
        let mut out = Vec::new();
        differences(
            "spec.template",
            value_at(&desired, "spec.template"),
            value_at(&live, "spec.template"),
            &mut out,
        );
        assert_eq!(
            out,
            ["spec.template.spec.containers[0].image: \"busybox:1\" -> \"busybox:2\""],
            "defaulted fields are no change"
        );
        assert_eq!(
            value_at(&live, "spec.template.spec.containers[0].image"),
            Some(&json!("busybox:1"))
        );
        assert_eq!(value_at(&live, "spec.nothing"), None);
    }

    #[test]
    fn secret_values_are_hidden_in_diffs() {
        assert_eq!(
            hide_secret_value("data.password: \"czNjcjN0\" -> \"b3RoZXI=\""),
            "data.password: (value hidden)"
        );
        assert_eq!(
            hide_secret_value("data: {\"a\":\"b\"} -> (absent)"),
            "data: (value hidden)"
        );
        assert_eq!(
            hide_secret_value("metadata.labels.x: \"1\" -> \"2\""),
            "metadata.labels.x: \"1\" -> \"2\""
        );
    }

    fn answered(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("refused", "")
                .with_code(code)
                .boxed(),
        )
    }

    fn down() -> kube::Error {
        kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused",
        )))
    }

    fn key() -> ObjectKey {
        ObjectKey {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: Some("a".into()),
            name: "c".into(),
        }
    }

    fn apply_error(dry_run: bool, cause: apply::FailureCause) -> SyncError {
        let failure = ObjectFailure {
            object: key(),
            origin: "c.yaml:1".into(),
            cause,
            message: "no".into(),
            immutable_fields: Vec::new(),
        };
        let u = Unapplied {
            failures: vec![failure],
            ..Unapplied::default()
        };
        SyncError::Apply(if dry_run {
            ApplyError::dry_run(u)
        } else {
            ApplyError::apply(u)
        })
    }

    #[test]
    fn every_failure_has_the_reason_users_see() {
        use apply::FailureCause::*;
        let parent = || "secrets/demo in namespace default".to_string();
        let discovery = |source| crate::discovery::DiscoveryError { source };
        let cases: Vec<(SyncError, &str)> = vec![
            (SyncError::Empty, "EmptyArtifact"),
            (
                PlanError::InvalidObject {
                    origin: "c.yaml:1".into(),
                    problem: "no".into(),
                }
                .into(),
                "InvalidManifests",
            ),
            (
                PlanError::Discovery(discovery(answered(500))).into(),
                "DiscoveryFailed",
            ),
            (
                PlanError::Discovery(discovery(down())).into(),
                "APIServerUnreachable",
            ),
            (
                InventoryError::OtherTooling {
                    parent: parent(),
                    tooling: "kubectl/v1".into(),
                }
                .into(),
                "InventoryConflict",
            ),
            (
                InventoryError::IdMismatch {
                    parent: parent(),
                    found: "x".into(),
                    expected: "y".into(),
                }
                .into(),
                "InventoryConflict",
            ),
            (
                InventoryError::List {
                    group_kind: "ConfigMap".into(),
                    source: answered(403),
                }
                .into(),
                "Forbidden",
            ),
            (
                InventoryError::Delete {
                    object: Box::new(key()),
                    source: answered(403),
                }
                .into(),
                "Forbidden",
            ),
            (
                InventoryError::List {
                    group_kind: "ConfigMap".into(),
                    source: answered(500),
                }
                .into(),
                "PruneFailed",
            ),
            (
                InventoryError::Delete {
                    object: Box::new(key()),
                    source: answered(500),
                }
                .into(),
                "PruneFailed",
            ),
            (
                InventoryError::Delete {
                    object: Box::new(key()),
                    source: down(),
                }
                .into(),
                "APIServerUnreachable",
            ),
            (
                InventoryError::Parent {
                    action: "reading",
                    parent: parent(),
                    source: answered(500),
                }
                .into(),
                "InventoryFailed",
            ),
            (
                InventoryError::Parent {
                    action: "reading",
                    parent: parent(),
                    source: down(),
                }
                .into(),
                "APIServerUnreachable",
            ),
            (
                InventoryError::ParentMissing { parent: parent() }.into(),
                "InventoryFailed",
            ),
            (
                InventoryError::Discovery(discovery(answered(500))).into(),
                "InventoryFailed",
            ),
            (
                InventoryError::Discovery(discovery(down())).into(),
                "APIServerUnreachable",
            ),
            (
                OwnershipError::Claimed { claims: vec![] }.into(),
                "OwnershipConflict",
            ),
            (
                OwnershipError::List {
                    group_kind: "ConfigMap".into(),
                    source: answered(403),
                }
                .into(),
                "Forbidden",
            ),
            (
                OwnershipError::List {
                    group_kind: "ConfigMap".into(),
                    source: answered(500),
                }
                .into(),
                "InventoryFailed",
            ),
            (
                OwnershipError::List {
                    group_kind: "ConfigMap".into(),
                    source: down(),
                }
                .into(),
                "APIServerUnreachable",
            ),
            (apply_error(true, Invalid), "DryRunFailed"),
            (apply_error(true, Forbidden), "Forbidden"),
            (apply_error(true, Conflict), "FieldManagerConflict"),
            (apply_error(true, Unreachable), "APIServerUnreachable"),
            (apply_error(false, Invalid), "ApplyFailed"),
            (apply_error(false, NotFound), "ApplyFailed"),
            (apply_error(false, Forbidden), "Forbidden"),
            (apply_error(false, Unreachable), "APIServerUnreachable"),
            (
                HealthError::Timeout {
                    timeout: Duration::from_secs(1),
                    pending: vec![],
                }
                .into(),
                "HealthCheckTimeout",
            ),
            (
                HealthError::Failed {
                    object: Box::new(key()),
                    reason: "job failed".into(),
                }
                .into(),
                "HealthCheckFailed",
            ),
            (
                HealthError::Read {
                    object: Box::new(key()),
                    source: answered(500),
                }
                .into(),
                "HealthCheckFailed",
            ),
            (
                HealthError::Read {
                    object: Box::new(key()),
                    source: down(),
                }
                .into(),
                "APIServerUnreachable",
            ),
            (
                SyncError::NamespaceLookup {
                    namespace: "a".into(),
                    source: answered(500),
                },
                "ApplyFailed",
            ),
            (
                SyncError::NamespaceLookup {
                    namespace: "a".into(),
                    source: down(),
                },
                "APIServerUnreachable",
            ),
            (
                SyncError::Timeout {
                    timeout: Duration::from_secs(1),
                },
                "ApplyTimeout",
            ),
        ];
        for (e, reason) in cases {
            assert_eq!(e.reason(), reason, "{e}");
            assert_eq!(e.unreachable(), reason == "APIServerUnreachable", "{e}");
        }
    }
}
