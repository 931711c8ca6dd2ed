//! Server-side apply of planned objects: one field manager (`berth`), bounded concurrency,
//! dry-run and real mode, conflict handling, and the impersonating client used when a
//! Source names a ServiceAccount.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::{Client, Config};

use crate::api_error;
use crate::applyset::PART_OF_LABEL;
use crate::plan::{ObjectKey, PlannedObject};

/// The field manager of every object berth applies.
pub const FIELD_MANAGER: &str = "berth";
/// Requests in flight at once. Enough to hide round-trip latency, small enough not to trip
/// the API server's per-client priority-and-fairness limits. 32 and 64 measured no faster
/// (agent/BENCHMARKS.md): the API server's CPU sets the pace, not the round trips.
pub const MAX_CONCURRENT_APPLIES: usize = 16;
/// At most this many failing objects are spelled out in one error message.
pub const MAX_FAILURES_SHOWN: usize = 5;

/// Whether the API server persists the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `dryRun=All`: full admission and validation, nothing stored.
    DryRun,
    Apply,
}

/// What the caller needs back from the API server for each object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The whole object (health checks, diff).
    Object,
    /// Metadata only (`as=PartialObjectMetadata`): enough for resourceVersions, and the server
    /// does not encode spec and status into every answer.
    Metadata,
}

/// How conflicts with other field managers are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConflictPolicy {
    /// Take fields from other managers on every object (`spec.force` / `--force`).
    pub force: bool,
}

/// The server's answer for one applied (or dry-run) object.
#[derive(Debug, Clone)]
pub struct AppliedObject {
    pub key: ObjectKey,
    pub resource_version: Option<String>,
    pub object: DynamicObject,
}

/// Why the server refused an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCause {
    /// 422/400: the object is invalid.
    Invalid,
    /// 409: fields are owned by another field manager.
    Conflict,
    /// 403: the identity applying lacks RBAC rights.
    Forbidden,
    /// 404: e.g. the namespace does not exist.
    NotFound,
    /// 422 because the change touches fields that cannot change once the object exists
    /// (a Job's pod template, a Deployment's selector): only deleting and re-creating the
    /// object applies it.
    Immutable,
    /// 403 from the namespace lifecycle admission: the namespace is being deleted and takes no
    /// new objects until it is gone. Not a permission problem.
    NamespaceTerminating,
    /// No answer at all: the connection to the API server failed or broke (it is down or
    /// restarting). Nothing about the object itself is wrong.
    Unreachable,
    /// Anything else (server errors).
    Other,
}

/// One object the server did not accept.
#[derive(Debug, Clone)]
pub struct ObjectFailure {
    pub object: ObjectKey,
    pub origin: String,
    pub cause: FailureCause,
    pub message: String,
    /// The fields the server named immutable ([`FailureCause::Immutable`] only).
    pub immutable_fields: Vec<String>,
}

impl fmt::Display for ObjectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.object, self.origin, self.message)
    }
}

/// What a batch left undone: the objects the server refused or never answered for, and how
/// many were not sent at all because the API server had already stopped answering.
#[derive(Debug, Clone, Default)]
pub struct Unapplied {
    pub failures: Vec<ObjectFailure>,
    pub not_sent: usize,
    /// What the server did accept in the same batch.
    pub applied: Vec<AppliedObject>,
}

impl Unapplied {
    fn lost_the_server(&self) -> bool {
        self.failures
            .iter()
            .any(|f| f.cause == FailureCause::Unreachable)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{} object(s) rejected by the API server's dry-run, nothing was applied: {}{}", .failures.len(), list(.failures), hint(.failures))]
    DryRunRejected { failures: Vec<ObjectFailure> },
    /// The dry-run lost the API server: no verdict on the objects, and nothing more applied.
    #[error("the dry-run did not finish: {} object(s) failed{}: {}{}", .failures.len(), unsent(*.not_sent), list(.failures), hint(.failures))]
    DryRunUnfinished {
        failures: Vec<ObjectFailure>,
        not_sent: usize,
    },
    #[error("{} object(s) failed to apply{}: {}{}", .failures.len(), unsent(*.not_sent), list(.failures), hint(.failures))]
    ApplyFailed {
        failures: Vec<ObjectFailure>,
        not_sent: usize,
    },
}

impl ApplyError {
    /// A dry-run that did not pass: rejected by the server, or cut short by losing it.
    pub fn dry_run(u: Unapplied) -> Self {
        if u.lost_the_server() {
            ApplyError::DryRunUnfinished {
                failures: u.failures,
                not_sent: u.not_sent,
            }
        } else {
            ApplyError::DryRunRejected {
                failures: u.failures,
            }
        }
    }

    pub fn apply(u: Unapplied) -> Self {
        ApplyError::ApplyFailed {
            failures: u.failures,
            not_sent: u.not_sent,
        }
    }

    pub fn failures(&self) -> &[ObjectFailure] {
        match self {
            ApplyError::DryRunRejected { failures }
            | ApplyError::DryRunUnfinished { failures, .. }
            | ApplyError::ApplyFailed { failures, .. } => failures,
        }
    }

    /// The most telling cause: an unreachable API server outranks a permission problem
    /// outranks a conflict outranks the rest.
    pub fn main_cause(&self) -> FailureCause {
        let causes: Vec<FailureCause> = self.failures().iter().map(|f| f.cause).collect();
        [
            FailureCause::Unreachable,
            FailureCause::Forbidden,
            FailureCause::Conflict,
            FailureCause::Immutable,
            FailureCause::NamespaceTerminating,
            FailureCause::Invalid,
            FailureCause::NotFound,
        ]
        .into_iter()
        .find(|c| causes.contains(c))
        .unwrap_or(FailureCause::Other)
    }
}

fn unsent(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(", {n} not sent")
    }
}

fn list(failures: &[ObjectFailure]) -> String {
    let mut s: Vec<String> = failures
        .iter()
        .take(MAX_FAILURES_SHOWN)
        .map(ToString::to_string)
        .collect();
    if failures.len() > MAX_FAILURES_SHOWN {
        s.push(format!("and {} more", failures.len() - MAX_FAILURES_SHOWN));
    }
    s.join("; ")
}

fn hint(failures: &[ObjectFailure]) -> &'static str {
    if failures
        .iter()
        .any(|f| f.cause == FailureCause::Unreachable)
    {
        " (the API server could not be reached; what was applied stays recorded in the ApplySet: run the apply again once the API server answers)"
    } else if failures.iter().any(|f| f.cause == FailureCause::Forbidden) {
        " (grant the applying identity RBAC rights for these objects, or apply as another ServiceAccount)"
    } else if failures.iter().any(|f| f.cause == FailureCause::Conflict) {
        " (another field manager owns these fields: set force: true / --force to take them over, or remove them from the manifest)"
    } else if failures.iter().any(|f| f.cause == FailureCause::Immutable) {
        " (fields that cannot change once the object exists changed: annotate the object berth.dev/apply: Recreate, or set recreate: true / --recreate, to delete and re-create it; or give it a new name)"
    } else if failures
        .iter()
        .any(|f| f.cause == FailureCause::NamespaceTerminating)
    {
        " (the namespace is being deleted and takes no new objects: berth applies them once it is gone; `kubectl get namespace NAME -o yaml` shows what it waits for)"
    } else {
        ""
    }
}

/// A client that acts as `system:serviceaccount:<namespace>:<name>`. The API server adds the
/// ServiceAccount groups itself, so RBAC sees exactly what a pod with that account would.
pub fn impersonating(
    config: &Config,
    namespace: &str,
    service_account: &str,
) -> Result<Client, kube::Error> {
    let mut c = config.clone();
    c.auth_info.impersonate = Some(format!(
        "system:serviceaccount:{namespace}:{service_account}"
    ));
    c.auth_info.impersonate_groups = None;
    Client::try_from(c)
}

/// Applies `objects` concurrently (order within the slice does not matter: the caller passes
/// one stage at a time). Objects that conflict only with fields berth itself lost to a manual
/// edit (the live object is already in this ApplySet) are re-applied with force: that is drift
/// correction, not stealing. Once a request finds the API server unreachable no new request
/// is started (those in flight finish): the rest would only pile up connection errors.
/// Returns results in input order, or what was left undone.
pub async fn apply_all(
    client: &Client,
    objects: &[&PlannedObject],
    mode: Mode,
    policy: ConflictPolicy,
    answer: Answer,
) -> Result<Vec<AppliedObject>, Unapplied> {
    let lost = AtomicBool::new(false);
    // Futures are built eagerly (not in a stream closure) so the resulting future stays `Send`
    // for the controller's multi-threaded runtime; each starts only when the buffer polls it.
    // Unordered: with an ordered buffer one slow answer at the head holds every later slot,
    // and fewer requests are in flight than allowed.
    let futures: Vec<_> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let lost = &lost;
            async move {
                if lost.load(Ordering::Relaxed) {
                    return (i, None);
                }
                let r = apply_one(client, o, mode, policy, answer).await;
                if matches!(&r, Err(f) if f.cause == FailureCause::Unreachable) {
                    lost.store(true, Ordering::Relaxed);
                }
                (i, Some(r))
            }
        })
        .collect();
    let mut results: Vec<(usize, Option<Result<AppliedObject, ObjectFailure>>)> =
        futures::stream::iter(futures)
            .buffer_unordered(MAX_CONCURRENT_APPLIES)
            .collect()
            .await;
    results.sort_unstable_by_key(|(i, _)| *i);
    let mut ok = Vec::with_capacity(results.len());
    let mut undone = Unapplied::default();
    for (_, r) in results {
        match r {
            Some(Ok(a)) => ok.push(a),
            Some(Err(f)) => undone.failures.push(f),
            None => undone.not_sent += 1,
        }
    }
    if undone.failures.is_empty() {
        Ok(ok)
    } else {
        undone.applied = ok;
        Err(undone)
    }
}

async fn apply_one(
    client: &Client,
    o: &PlannedObject,
    mode: Mode,
    policy: ConflictPolicy,
    answer: Answer,
) -> Result<AppliedObject, ObjectFailure> {
    let api = o.api(client);
    // Server-side apply converts every body to the schema's type and refuses unknown fields
    // whatever the directive (the dry-run names them); duplicate fields cannot occur in the JSON
    // berth serializes. The server's extra strict decode of each body, which Strict and the
    // default Warn both pay for, would check nothing: skip it on both passes.
    let mut pp = PatchParams::apply(FIELD_MANAGER).validation_ignore();
    if mode == Mode::DryRun {
        pp = pp.dry_run();
    }
    if policy.force {
        pp = pp.force();
    }
    let first = patch(&api, o, &pp, answer).await;
    let result = match first {
        Err(kube::Error::Api(s))
            if s.code == 409 && !policy.force && is_own_member(&api, o).await =>
        {
            tracing::info!(object = %o.key, "correcting drift on fields another manager took over");
            patch(&api, o, &pp.clone().force(), answer).await
        }
        other => other,
    };
    match result {
        Ok(mut obj) => {
            // Health and diff never read managedFields, and for small objects they are most of
            // the answer: dropping them keeps a large set's results small.
            obj.metadata.managed_fields = None;
            Ok(AppliedObject {
                key: o.key.clone(),
                resource_version: obj.metadata.resource_version.clone(),
                object: obj,
            })
        }
        Err(e) => Err(failure(o, e)),
    }
}

async fn patch(
    api: &Api<DynamicObject>,
    o: &PlannedObject,
    pp: &PatchParams,
    answer: Answer,
) -> Result<DynamicObject, kube::Error> {
    let body = Patch::Apply(&o.body);
    match answer {
        Answer::Object => api.patch(&o.key.name, pp, &body).await,
        Answer::Metadata => {
            let meta = api.patch_metadata(&o.key.name, pp, &body).await?;
            Ok(DynamicObject {
                types: o.body.types.clone(),
                metadata: meta.metadata,
                data: serde_json::Value::Null,
            })
        }
    }
}

/// Whether the live object already carries this set's `part-of` label, i.e. berth applied it.
async fn is_own_member(api: &Api<DynamicObject>, o: &PlannedObject) -> bool {
    let want = o
        .body
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(PART_OF_LABEL));
    match api.get_metadata_opt(&o.key.name).await {
        Ok(Some(live)) => {
            live.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(PART_OF_LABEL))
                == want
                && want.is_some()
        }
        _ => false,
    }
}

fn failure(o: &PlannedObject, e: kube::Error) -> ObjectFailure {
    let immutable_fields = match &e {
        kube::Error::Api(s) => api_error::immutable_fields(s),
        _ => Vec::new(),
    };
    let cause = match &e {
        kube::Error::Api(_) if !immutable_fields.is_empty() => FailureCause::Immutable,
        kube::Error::Api(s) => match s.code {
            400 | 422 => FailureCause::Invalid,
            // The namespace lifecycle admission also answers 403; that is not RBAC.
            403 if s.message.contains("being terminated") => FailureCause::NamespaceTerminating,
            403 => FailureCause::Forbidden,
            404 => FailureCause::NotFound,
            409 => FailureCause::Conflict,
            _ => FailureCause::Other,
        },
        e if api_error::is_unreachable(e) => FailureCause::Unreachable,
        _ => FailureCause::Other,
    };
    ObjectFailure {
        object: o.key.clone(),
        origin: o.origin.clone(),
        cause,
        message: api_error::message(&e),
        immutable_fields,
    }
}

/// Pause between reads while an object being re-created is deleted.
const RECREATE_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Deletes the live object so that the next apply creates it anew (a change of immutable
/// fields): background propagation, so a Job's Pods or a Deployment's ReplicaSets go after it
/// on their own, and a uid precondition, so a newer object of that name is never deleted.
/// Returns once the object is gone, or fails at `deadline` naming what holds it.
pub async fn delete_for_recreate(
    client: &Client,
    o: &PlannedObject,
    deadline: std::time::Instant,
) -> Result<(), ObjectFailure> {
    let api = o.api(client);
    let Some(live) = api
        .get_metadata_opt(&o.key.name)
        .await
        .map_err(|e| failure(o, e))?
    else {
        return Ok(());
    };
    // Never delete what cannot be created again: a dry-run create passes admission and
    // validation first, and only then finds the name taken (409 AlreadyExists).
    let pp = kube::api::PostParams {
        dry_run: true,
        field_manager: Some(FIELD_MANAGER.to_string()),
    };
    match api.create(&pp, &o.body).await {
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Ok(_) => {}
        Err(e) => return Err(failure(o, e)),
    }
    let uid = live.metadata.uid.clone();
    let mut dp = kube::api::DeleteParams::background();
    dp.preconditions = Some(kube::api::Preconditions {
        uid: uid.clone(),
        resource_version: None,
    });
    match api.delete(&o.key.name, &dp).await {
        Ok(_) => {}
        // Gone already, or replaced by another object of that name (the uid changed).
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => return Err(failure(o, e)),
    }
    tracing::info!(object = %o.key, "deleted to re-create it: an immutable field changed");
    loop {
        let now = api
            .get_metadata_opt(&o.key.name)
            .await
            .map_err(|e| failure(o, e))?;
        let Some(still) = now.filter(|n| n.metadata.uid == uid) else {
            return Ok(());
        };
        if std::time::Instant::now() >= deadline {
            let finalizers = still.metadata.finalizers.unwrap_or_default();
            return Err(ObjectFailure {
                object: o.key.clone(),
                origin: o.origin.clone(),
                cause: FailureCause::Other,
                message: format!(
                    "deleted to re-create it (an immutable field changed), but it is still there; finalizers: [{}]: it is created again once it is gone",
                    finalizers.join(", ")
                ),
                immutable_fields: Vec::new(),
            });
        }
        tokio::time::sleep(RECREATE_POLL).await;
    }
}

/// Reads the live object (for diff), `None` when it does not exist.
pub async fn live(
    client: &Client,
    o: &PlannedObject,
) -> Result<Option<DynamicObject>, ObjectFailure> {
    o.api(client)
        .get_opt(&o.key.name)
        .await
        .map_err(|e| failure(o, e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests report failure by panicking
mod tests {
    use super::*;

    fn configmap(i: usize) -> PlannedObject {
        PlannedObject::for_test("", "v1", "ConfigMap", Some("default"), &format!("cm-{i}"))
    }

    #[tokio::test]
    async fn no_request_starts_after_the_api_server_refused_one() {
        let client = api_error::dead_server_client();
        let objects: Vec<PlannedObject> = (0..MAX_CONCURRENT_APPLIES * 4).map(configmap).collect();
        let refs: Vec<&PlannedObject> = objects.iter().collect();
        let undone = apply_all(
            &client,
            &refs,
            Mode::Apply,
            ConflictPolicy { force: false },
            Answer::Metadata,
        )
        .await
        .err()
        .unwrap();
        assert!(
            undone
                .failures
                .iter()
                .all(|f| f.cause == FailureCause::Unreachable),
            "{:?}",
            undone.failures
        );
        assert!(
            undone.failures[0]
                .message
                .starts_with("API server unreachable ("),
            "{}",
            undone.failures[0]
        );
        // At most the first window was sent; the rest never left the agent.
        assert!(
            undone.failures.len() <= MAX_CONCURRENT_APPLIES,
            "{} requests sent",
            undone.failures.len()
        );
        assert_eq!(undone.failures.len() + undone.not_sent, objects.len());
        let e = ApplyError::dry_run(undone);
        assert!(matches!(e, ApplyError::DryRunUnfinished { .. }), "{e}");
        assert!(!e.to_string().contains("rejected"), "{e}");
    }

    fn refused(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, "")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn the_servers_answer_decides_the_cause() {
        let o = configmap(0);
        let cause = |e| failure(&o, e).cause;
        assert_eq!(
            cause(refused(422, "spec.replicas: Invalid value")),
            FailureCause::Invalid
        );
        assert_eq!(cause(refused(400, "bad request")), FailureCause::Invalid);
        assert_eq!(
            cause(refused(403, "User \"x\" cannot patch")),
            FailureCause::Forbidden
        );
        assert_eq!(
            cause(refused(403, "namespace shop is being terminated")),
            FailureCause::NamespaceTerminating,
            "namespace lifecycle admission, not RBAC"
        );
        assert_eq!(
            cause(refused(404, "namespaces \"shop\" not found")),
            FailureCause::NotFound
        );
        assert_eq!(
            cause(refused(409, "Apply failed with 1 conflict")),
            FailureCause::Conflict
        );
        assert_eq!(
            cause(refused(500, "etcdserver: request timed out")),
            FailureCause::Other
        );
        let f = failure(&o, refused(409, "Apply failed with 1 conflict"));
        assert_eq!(
            f.to_string(),
            "ConfigMap default/cm-0 (cm-0.yaml:1): Apply failed with 1 conflict"
        );
    }

    fn failed(causes: &[FailureCause]) -> Unapplied {
        let failures = causes
            .iter()
            .enumerate()
            .map(|(i, &cause)| ObjectFailure {
                object: configmap(i).key,
                origin: configmap(i).origin,
                cause,
                message: format!("{cause:?}"),
                immutable_fields: Vec::new(),
            })
            .collect();
        Unapplied {
            failures,
            ..Unapplied::default()
        }
    }

    #[test]
    fn the_most_telling_cause_leads_and_gives_the_hint() {
        use FailureCause::*;
        let main = |causes: &[FailureCause]| ApplyError::apply(failed(causes)).main_cause();
        assert_eq!(
            main(&[Invalid, Conflict, Forbidden, Unreachable]),
            Unreachable
        );
        assert_eq!(main(&[Invalid, Conflict, Forbidden]), Forbidden);
        assert_eq!(main(&[NotFound, Invalid, Conflict]), Conflict);
        assert_eq!(main(&[NotFound, Invalid]), Invalid);
        assert_eq!(main(&[Other, NotFound]), NotFound);
        assert_eq!(main(&[Other]), Other);
        let text = |causes: &[FailureCause]| ApplyError::apply(failed(causes)).to_string();
        assert!(text(&[Conflict, Forbidden]).ends_with(
            "grant the applying identity RBAC rights for these objects, or apply as another ServiceAccount)"
        ));
        assert!(text(&[Conflict]).contains("set force: true / --force to take them over"));
        assert!(
            text(&[Invalid]).ends_with("ConfigMap default/cm-0 (cm-0.yaml:1): Invalid"),
            "no hint for invalid objects"
        );
    }

    #[test]
    fn a_dry_run_that_lost_the_server_is_unfinished_not_rejected() {
        use FailureCause::*;
        assert!(matches!(
            ApplyError::dry_run(failed(&[Invalid, Conflict])),
            ApplyError::DryRunRejected { .. }
        ));
        let e = ApplyError::dry_run(failed(&[Invalid, Unreachable]));
        assert!(matches!(e, ApplyError::DryRunUnfinished { .. }), "{e}");
        let rejected = ApplyError::dry_run(failed(&[Invalid])).to_string();
        assert!(
            rejected.starts_with(
                "1 object(s) rejected by the API server's dry-run, nothing was applied: "
            ),
            "{rejected}"
        );
    }

    #[test]
    fn long_failure_lists_are_cut_and_counted() {
        let mut u = failed(&[FailureCause::Invalid; MAX_FAILURES_SHOWN + 2]);
        u.not_sent = 3;
        let e = ApplyError::apply(u).to_string();
        assert!(
            e.starts_with(&format!(
                "{} object(s) failed to apply, 3 not sent: ",
                MAX_FAILURES_SHOWN + 2
            )),
            "{e}"
        );
        assert!(e.ends_with("; and 2 more"), "{e}");
        assert!(
            e.contains(&format!("cm-{}.yaml", MAX_FAILURES_SHOWN - 1))
                && !e.contains(&format!("cm-{}.yaml", MAX_FAILURES_SHOWN)),
            "{e}"
        );
    }
}
