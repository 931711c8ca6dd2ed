//! The apply engine shared by the controller and the one-shot commands: given the manifests of
//! one artifact and an ApplySet parent, converge the cluster — plan, dry-run gate, widen the
//! inventory, apply stage by stage, prune, narrow the inventory, wait for health. Also the
//! read-only `diff` of the same set.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::Api;
use serde_json::Value;

use crate::api_error;
use crate::apply::{
    self, Answer, AppliedObject, ApplyError, ConflictPolicy, Mode, ObjectFailure, Unapplied,
};
use crate::applyset::Stage;
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
    let (plan, results, report) = applied;
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
    }
    Ok(report)
}

type Converged = (ApplyPlan, BTreeMap<ObjectKey, AppliedObject>, SyncReport);

async fn converge(
    clients: &Clients,
    discovery: &mut ApiDiscovery,
    parent: &ApplySetParent,
    manifests: Vec<Manifest>,
    opts: &SyncOptions,
) -> Result<Converged, SyncError> {
    let started = Instant::now();
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

    // Members whose live state already holds every desired field and value need no request at
    // all: an apply would be a no-op. Anything else (a missing or different field, a
    // normalised quantity, another API version) is sent, and the server decides.
    let live: BTreeMap<&ObjectKey, &inventory::Member> =
        members.iter().map(|m| (&m.key, m)).collect();
    let mut results: BTreeMap<ObjectKey, AppliedObject> = BTreeMap::new();
    for o in &plan.objects {
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
        elapsed_ms = started.elapsed().as_millis(),
        "objects already as desired"
    );

    // One object, one set: none of the objects this set does not hold yet may belong to
    // another one. Checked before anything is written, whatever `force` says; a quiet
    // interval (every object a member already) sends no request for it.
    let newcomers: Vec<&PlannedObject> = plan
        .objects
        .iter()
        .filter(|o| !live.contains_key(&o.key))
        .collect();
    if !newcomers.is_empty() {
        ownership::check(&clients.agent, &newcomers, &id).await?;
    }

    // Gate: dry-run everything that can be dry-run before anything is written.
    let deferred = if opts.dry_run_gate {
        // Objects already as desired are neither dry-run nor applied: their namespaces exist.
        let pending: Vec<&PlannedObject> = plan
            .objects
            .iter()
            .filter(|o| !results.contains_key(&o.key))
            .collect();
        deferred_objects(&clients.agent, &pending).await?
    } else {
        plan.objects
            .iter()
            .filter(|o| o.kind_from_plan)
            .map(|o| o.key.clone())
            .collect()
    };
    let (later, now): (Vec<&PlannedObject>, Vec<&PlannedObject>) = plan
        .objects
        .iter()
        .filter(|o| !results.contains_key(&o.key))
        .partition(|o| deferred.contains(&o.key));
    if opts.dry_run_gate {
        dry_run(&clients.applier, &now, policy).await?;
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

    let first: Vec<&PlannedObject> = now
        .iter()
        .copied()
        .filter(|o| {
            matches!(
                o.stage,
                Stage::CustomResourceDefinitions | Stage::Namespaces
            )
        })
        .collect();
    // Whole objects back only where health is judged from them: CRDs (waited for before
    // their custom resources), and everything when waiting was asked for.
    let answer_for = |stage: Stage| {
        if opts.wait || stage == Stage::CustomResourceDefinitions {
            Answer::Object
        } else {
            Answer::Metadata
        }
    };
    let (crds, namespaces): (Vec<&PlannedObject>, Vec<&PlannedObject>) = first
        .iter()
        .partition(|o| o.stage == Stage::CustomResourceDefinitions);
    apply_stage(
        &clients.applier,
        &crds,
        policy,
        Answer::Object,
        &mut results,
    )
    .await?;
    apply_stage(
        &clients.applier,
        &namespaces,
        policy,
        answer_for(Stage::Namespaces),
        &mut results,
    )
    .await?;
    tracing::debug!(
        objects = first.len(),
        elapsed_ms = started.elapsed().as_millis(),
        "applied CRDs and Namespaces"
    );

    if !later.is_empty() {
        // The deferred objects need the CRDs just applied to be served.
        let crds: Vec<(&PlannedObject, &AppliedObject)> = plan
            .objects
            .iter()
            .filter(|o| o.stage == Stage::CustomResourceDefinitions)
            .filter_map(|o| results.get(&o.key).map(|a| (o, a)))
            .collect();
        // Built-in rules only: what follows needs the CRDs served (Established), whatever a
        // user's rule for CRDs waits for at the end.
        let builtin = health::HealthRules::default();
        health::wait_healthy(&clients.agent, &crds, opts.timeout, &builtin).await?;
        discovery.invalidate();
        if opts.dry_run_gate {
            dry_run(&clients.applier, &later, policy).await?;
            tracing::debug!(
                objects = later.len(),
                elapsed_ms = started.elapsed().as_millis(),
                "dry-run of the deferred objects passed"
            );
        }
    }

    for stage in Stage::APPLY_ORDER {
        let batch: Vec<&PlannedObject> = plan
            .objects
            .iter()
            .filter(|o| o.stage == stage && !results.contains_key(&o.key))
            .collect();
        apply_stage(
            &clients.applier,
            &batch,
            policy,
            answer_for(stage),
            &mut results,
        )
        .await?;
    }
    tracing::debug!(elapsed_ms = started.elapsed().as_millis(), "applied");

    let changed: Vec<ObjectKey> = plan
        .objects
        .iter()
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
    if opts.prune {
        let doomed = inventory::prune_candidates(&members, &plan.keys());
        pruned = inventory::delete_members(&clients.applier, &doomed).await?;
        let mut narrowed = new.clone();
        narrowed.namespaces.insert(parent.namespace.clone());
        // After the widening the parent holds `widened`, written or not.
        if narrowed != widened {
            inventory::write(&clients.agent, parent, &narrowed).await?;
        }
        tracing::debug!(
            pruned = pruned.len(),
            elapsed_ms = started.elapsed().as_millis(),
            "pruned"
        );
    }
    let report = SyncReport {
        total: plan.objects.len(),
        changed,
        pruned,
    };
    Ok((plan, results, report))
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
pub fn contained(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d
            .iter()
            .all(|(k, v)| l.get(k).is_some_and(|lv| contained(v, lv))),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(a, b)| contained(a, b))
        }
        (a, b) => a == b,
    }
}

/// Dry-runs `objects` (`dryRun=All`: admission, validation and field ownership, nothing stored).
async fn dry_run(
    client: &Client,
    objects: &[&PlannedObject],
    policy: ConflictPolicy,
) -> Result<(), ApplyError> {
    apply::apply_all(client, objects, Mode::DryRun, policy, Answer::Metadata)
        .await
        .map(|_| ())
        .map_err(ApplyError::dry_run)
}

async fn apply_stage(
    client: &Client,
    objects: &[&PlannedObject],
    policy: ConflictPolicy,
    answer: Answer,
    results: &mut BTreeMap<ObjectKey, AppliedObject>,
) -> Result<(), ApplyError> {
    if objects.is_empty() {
        return Ok(());
    }
    let ok = apply::apply_all(client, objects, Mode::Apply, policy, answer)
        .await
        .map_err(ApplyError::apply)?;
    results.extend(ok.into_iter().map(|a| (a.key.clone(), a)));
    Ok(())
}

/// What applying the set would do to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create,
    /// Changed fields as `path: old -> new` lines (values shortened).
    Update(Vec<String>),
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
    let all: Vec<&PlannedObject> = plan.objects.iter().collect();
    ownership::check(&clients.agent, &all, &parent.id()).await?;
    let deferred = deferred_objects(&clients.agent, &all).await?;
    let policy = ConflictPolicy { force: opts.force };
    let mut out = Vec::new();
    let (later, now): (Vec<&PlannedObject>, Vec<&PlannedObject>) =
        plan.objects.iter().partition(|o| deferred.contains(&o.key));
    let dry = apply::apply_all(&clients.applier, &now, Mode::DryRun, policy, Answer::Object)
        .await
        .map_err(ApplyError::dry_run)?;
    for (o, mut d) in now.iter().zip(dry) {
        let rejected = |f: ObjectFailure| {
            ApplyError::dry_run(Unapplied {
                failures: vec![f],
                not_sent: 0,
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
    if opts.prune {
        let mut scope = recorded.union(&Inventory {
            group_kinds: plan.group_kinds(),
            namespaces: plan.namespaces(),
        });
        scope.namespaces.insert(parent.namespace.clone());
        let members = inventory::list_members(&clients.agent, discovery, parent, &scope).await?;
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
        };
        let u = Unapplied {
            failures: vec![failure],
            not_sent: 0,
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
