//! Health of applied objects by kstatus rules (Deployments rolled out, Jobs complete, CRDs
//! established, …) or by the user's CEL rules for a kind ([`HealthRules`]), and waiting for
//! it up to a deadline.

use std::collections::HashMap;
use std::sync::Arc;
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

/// `what`, then the condition's reason and message where it has them.
fn described(what: &str, reason: &str, message: &str) -> String {
    match (reason, message) {
        ("", "") => what.to_string(),
        (reason, "") => format!("{what} ({reason})"),
        ("", message) => format!("{what}: {message}"),
        (reason, message) => format!("{what} ({reason}): {message}"),
    }
}

/// In progress while the object's controller has not seen its latest spec: a status of an
/// older generation says nothing about this one, whatever rule would read it.
fn unobserved_generation(obj: &DynamicObject) -> Option<Health> {
    let generation = obj.metadata.generation?;
    let observed = int(obj.data.get("status")?, &["observedGeneration"])?;
    (observed < generation).then(|| {
        Health::InProgress(format!(
            "controller has not observed generation {generation} yet"
        ))
    })
}

/// The kstatus rules for the kinds berth knows, and the generic conditions for every kind
/// (`Stalled=True` fails, `Reconciling=True` is in progress, as kstatus reads them before any
/// kind's own rules) plus `Ready` for the rest. Objects without a status (ConfigMaps,
/// Services, RBAC, …) are current once applied.
pub fn assess(group: &str, kind: &str, obj: &DynamicObject) -> Health {
    let null = Value::Null;
    let spec = obj.data.get("spec").unwrap_or(&null);
    let status = obj.data.get("status").unwrap_or(&null);
    let in_progress = |s: String| Health::InProgress(s);

    if let Some(h) = unobserved_generation(obj) {
        return h;
    }
    // Stalled first: a controller that says it gave up is believed over one that also says it
    // is still working.
    if let Some(("True", reason, msg)) = condition(status, "Stalled") {
        return Health::Failed(described("stalled", reason, msg));
    }
    if let Some(("True", reason, msg)) = condition(status, "Reconciling") {
        return in_progress(described("reconciling", reason, msg));
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
        _ => match condition(status, "Ready") {
            Some(("False", reason, msg)) | Some(("Unknown", reason, msg)) => {
                in_progress(described("not ready", reason, msg))
            }
            _ => Health::Current,
        },
    }
}

/// Longest expression quoted in a verdict; the rule's index names it in full.
pub const MAX_EXPRESSION_SHOWN: usize = 100;
/// Longest observed `status` (compact JSON) quoted in a verdict: enough for a phase and a
/// condition or two, short enough for a condition message. Evaluation errors, which may quote
/// the values they met, are cut to the same length.
pub const MAX_STATUS_SHOWN: usize = 200;

/// The text of one user health rule: CEL expressions over an object of one kind, as Flux's
/// `healthCheckExprs` writes them. The caller owns the shape users write (the Source spec,
/// `--health-check` files).
#[derive(Debug, Clone, Copy)]
pub struct RuleText<'a> {
    /// Only the group counts: a rule covers every version of its kind.
    pub api_version: &'a str,
    pub kind: &'a str,
    pub current: &'a str,
    pub failed: Option<&'a str>,
    pub in_progress: Option<&'a str>,
}

/// A rule that cannot be used as written. `index` is its position in the list the user wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[{index}] ({rule}){}: {problem}", .expression.map(|e| format!(" {e}")).unwrap_or_default())]
pub struct RuleError {
    pub index: usize,
    /// `Kind.group` (or what the user wrote, when that is the problem).
    pub rule: String,
    /// `current`, `failed` or `inProgress`, when one expression is at fault.
    pub expression: Option<&'static str>,
    pub problem: String,
}

/// Which verdict an expression gives when it is true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    InProgress,
    Failed,
    Current,
}

struct Expression {
    verdict: Verdict,
    /// The field it came from: `inProgress`, `failed` or `current`.
    field: &'static str,
    text: String,
    program: cel::Program,
}

struct HealthRule {
    group: String,
    kind: String,
    /// In evaluation order: inProgress, failed, current (those given).
    expressions: Vec<Expression>,
}

impl HealthRule {
    /// `Kind.group`, as objects are named in messages (`Kind` alone for the core group).
    fn name(&self) -> String {
        kind_name(&self.group, &self.kind)
    }
}

fn kind_name(group: &str, kind: &str) -> String {
    if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    }
}

struct Compiled {
    env: Arc<cel::Env>,
    rules: Vec<HealthRule>,
}

/// The user's health rules, compiled: for an object of a kind they name, the rule decides the
/// verdict instead of the built-in one.
///
/// Semantics (the documented contract, see the agent's README):
/// - a rule matches by group and kind; the version of its `apiVersion` is not compared;
/// - an object whose `status.observedGeneration` is behind `metadata.generation` is in
///   progress before any expression is read;
/// - then `inProgress`, `failed`, `current` are evaluated in that order (those given), and the
///   first that is true decides; none true means in progress;
/// - an expression sees the object's top-level fields as variables (`metadata`, `spec`,
///   `status`, `data`, …); `apiVersion`, `kind`, `metadata`, `spec` and `status` are always
///   declared (an empty map when the object has none), so `has(status.phase)` is false
///   rather than an error before a controller writes a status;
/// - an expression that fails to evaluate (a missing field, a type error) or does not return a
///   bool counts as not true; the in-progress message then says why.
#[derive(Clone, Default)]
pub struct HealthRules(Option<Arc<Compiled>>);

impl std::fmt::Debug for HealthRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .0
            .iter()
            .flat_map(|c| c.rules.iter().map(HealthRule::name))
            .collect();
        f.debug_tuple("HealthRules").field(&names).finish()
    }
}

/// The group of an `apiVersion` (`group/version`, or `version` for the core group).
fn group_of(api_version: &str) -> Option<&str> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let well_formed = |s: &str| !s.is_empty() && !s.contains(['/', ' ']);
    (well_formed(version) && (group.is_empty() || well_formed(group))).then_some(group)
}

/// A parse error on one line: CEL's own display spans lines (with a caret under the source),
/// which a condition message cannot show.
fn parse_problem(e: &cel::ParseErrors) -> String {
    let errors: Vec<String> = e
        .errors
        .iter()
        .map(|e| format!("{}:{}: {}", e.pos.0, e.pos.1, e.msg))
        .collect();
    format!("does not parse as CEL: {}", errors.join("; "))
}

impl HealthRules {
    /// Compiles every expression; the first unusable rule is refused, naming it.
    pub fn compile<'a>(
        rules: impl IntoIterator<Item = RuleText<'a>>,
    ) -> Result<HealthRules, RuleError> {
        let env = Arc::new(cel::Env::stdlib());
        let mut compiled: Vec<HealthRule> = Vec::new();
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        for (index, text) in rules.into_iter().enumerate() {
            let error =
                |rule: String, expression: Option<&'static str>, problem: String| RuleError {
                    index,
                    rule,
                    expression,
                    problem,
                };
            let written = format!("{} {}", text.api_version, text.kind);
            let Some(group) = group_of(text.api_version) else {
                return Err(error(
                    written,
                    None,
                    format!(
                        "apiVersion {:?} is not group/version (or v1 for the core group)",
                        text.api_version
                    ),
                ));
            };
            if text.kind.trim().is_empty() {
                return Err(error(written, None, "kind is empty".into()));
            }
            let name = kind_name(group, text.kind);
            // A Secret has no health to judge, and CEL's evaluation errors quote the values
            // they met: a rule's message would carry secret data into the Source's status.
            if group.is_empty() && text.kind == "Secret" {
                return Err(error(
                    name,
                    None,
                    "Secrets cannot have a health rule (they are current once applied, and a rule's messages could show their data)".into(),
                ));
            }
            if let Some(first) = seen.insert((group.to_string(), text.kind.to_string()), index) {
                return Err(error(
                    name,
                    None,
                    format!("rule [{first}] is for the same kind already; merge them into one"),
                ));
            }
            let mut expressions = Vec::new();
            for (verdict, field, source) in [
                (Verdict::InProgress, "inProgress", text.in_progress),
                (Verdict::Failed, "failed", text.failed),
                (Verdict::Current, "current", Some(text.current)),
            ] {
                let Some(source) = source else { continue };
                if source.trim().is_empty() {
                    let problem = if verdict == Verdict::Current {
                        "is empty; it is required (the expression true once the object is healthy)"
                    } else {
                        "is empty; leave the field out instead"
                    };
                    return Err(error(name, Some(field), problem.into()));
                }
                let program = env
                    .compile(source)
                    .map_err(|e| error(name.clone(), Some(field), parse_problem(&e)))?;
                expressions.push(Expression {
                    verdict,
                    field,
                    text: source.to_string(),
                    program,
                });
            }
            compiled.push(HealthRule {
                group: group.to_string(),
                kind: text.kind.to_string(),
                expressions,
            });
        }
        Ok(HealthRules((!compiled.is_empty()).then(|| {
            Arc::new(Compiled {
                env,
                rules: compiled,
            })
        })))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The verdict on `obj`: by the user's rule for its kind if there is one, else by
    /// [`assess`].
    pub fn assess(&self, group: &str, kind: &str, obj: &DynamicObject) -> Health {
        let rule = self.0.as_ref().and_then(|c| {
            c.rules
                .iter()
                .find(|r| r.group == group && r.kind == kind)
                .map(|r| (&c.env, r))
        });
        match rule {
            Some((env, rule)) => {
                unobserved_generation(obj).unwrap_or_else(|| judge(env, rule, obj))
            }
            None => assess(group, kind, obj),
        }
    }
}

/// The object as CEL values: JSON integers are CEL `int` (as Kubernetes' CEL reads them), so
/// `status.replicas + 1` and `== 3` work; only integers beyond i64 become `uint`.
fn cel_value(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            (None, None) => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::from(s.as_str()),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(cel_value).collect())),
        Value::Object(fields) => cel::Value::Map(cel::objects::Map::from(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), cel_value(v)))
                .collect::<HashMap<String, cel::Value>>(),
        )),
    }
}

/// `text` cut to at most `max` characters, marked when cut.
fn shortened(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// What the rule's expressions saw: the object's `status`, compact and shortened.
fn observed(obj: &DynamicObject) -> String {
    match obj.data.get("status") {
        None | Some(Value::Null) => "no status".into(),
        Some(status) => format!(
            "status {}",
            shortened(&status.to_string(), MAX_STATUS_SHOWN)
        ),
    }
}

/// The verdict of `rule` on `obj`, its message naming the rule, the expression that decided
/// (or that is awaited) and what it saw.
fn judge(env: &Arc<cel::Env>, rule: &HealthRule, obj: &DynamicObject) -> Health {
    let about =
        |what: String| format!("health rule for {}: {what}; {}", rule.name(), observed(obj));
    let quoted =
        |e: &Expression| format!("{} {:?}", e.field, shortened(&e.text, MAX_EXPRESSION_SHOWN));
    let object = match serde_json::to_value(obj) {
        Ok(Value::Object(fields)) => fields,
        Ok(_) | Err(_) => {
            return Health::InProgress(about("the object cannot be read as JSON".into()));
        }
    };
    let mut context = cel::Context::with_env(env.clone());
    let empty = || cel::Value::Map(cel::objects::Map::from(HashMap::<String, cel::Value>::new()));
    for name in ["apiVersion", "kind", "metadata", "spec", "status"] {
        context.add_variable_from_value(name, empty());
    }
    for (name, value) in &object {
        context.add_variable_from_value(name.as_str(), cel_value(value));
    }
    let mut errors: Vec<String> = Vec::new();
    for e in &rule.expressions {
        match e.program.execute(&context) {
            Ok(cel::Value::Bool(true)) => {
                let why = about(format!("{} is true", quoted(e)));
                return match e.verdict {
                    Verdict::Current => Health::Current,
                    Verdict::Failed => Health::Failed(why),
                    Verdict::InProgress => Health::InProgress(why),
                };
            }
            Ok(cel::Value::Bool(false)) => {}
            Ok(other) => errors.push(format!(
                "{} returned a {}, not a bool",
                e.field,
                other.type_of()
            )),
            Err(error) => errors.push(format!(
                "{} could not be evaluated: {}",
                e.field,
                shortened(&error.to_string(), MAX_STATUS_SHOWN)
            )),
        }
    }
    let awaited = rule
        .expressions
        .iter()
        .find(|e| e.verdict == Verdict::Current)
        .map(quoted)
        .unwrap_or_default();
    let why = if errors.len() == rule.expressions.len() {
        format!("no expression could be evaluated ({})", errors.join("; "))
    } else if errors.is_empty() {
        format!("{awaited} is not true yet")
    } else {
        format!("{awaited} is not true yet ({})", errors.join("; "))
    };
    Health::InProgress(about(why))
}

/// Waits until every object is current or one fails, up to `timeout`. The apply responses
/// give the first verdict, so only objects not already current are polled.
pub async fn wait_healthy(
    client: &Client,
    applied: &[(&PlannedObject, &AppliedObject)],
    timeout: Duration,
    rules: &HealthRules,
) -> Result<(), HealthError> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<Pending> = Vec::new();
    for (o, a) in applied {
        match rules.assess(&o.key.group, &o.key.kind, &a.object) {
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
        let futures: Vec<_> = pending
            .into_iter()
            .map(|p| poll_one(client, p, rules))
            .collect();
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
    rules: &HealthRules,
) -> Result<(Pending<'a>, Health), HealthError> {
    let o = p.object;
    match o.api(client).get_opt(&o.key.name).await {
        Ok(Some(live)) => {
            p.seen = live.metadata.resource_version.clone();
            let h = rules.assess(&o.key.group, &o.key.kind, &live);
            Ok((p, h))
        }
        Ok(None) => {
            let h = vanished(client, &p, rules).await?;
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
async fn vanished(
    client: &Client,
    p: &Pending<'_>,
    rules: &HealthRules,
) -> Result<Health, HealthError> {
    let o = p.object;
    let gone = || HealthError::Gone {
        object: Box::new(o.key.clone()),
    };
    if !o.is_job() {
        return Err(gone());
    }
    if let Some(last) = last_state(client, p).await {
        return match rules.assess(&o.key.group, &o.key.kind, &last) {
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
        let none = HealthRules::default();
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
            wait_healthy(&client, &[(&cm, &cm_done)], Duration::from_secs(5), &none)
                .await
                .is_ok()
        );
        let e = wait_healthy(
            &client,
            &[(&cm, &cm_done), (&job, &job_failed)],
            Duration::from_secs(5),
            &none,
        )
        .await
        .err();
        assert!(
            matches!(&e, Some(HealthError::Failed { object, .. }) if object.name == "j"),
            "{e:?}"
        );

        let running = applied(&job, json!({}));
        let e = wait_healthy(&client, &[(&job, &running)], Duration::ZERO, &none)
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("not healthy within 0ns: Job.batch a/j: job not complete")
        );
        let e = wait_healthy(&client, &[(&job, &running)], Duration::from_secs(5), &none)
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

    #[test]
    fn reconciling_true_is_in_progress_for_any_kind_and_stalled_wins() {
        let widget = |conditions: Value| {
            verdict(
                "example.com/v1",
                "Widget",
                json!({"metadata": {"name": "w"}, "status": {"conditions": conditions}}),
            )
        };
        let h = widget(json!([{"type": "Ready", "status": "True"},
            {"type": "Reconciling", "status": "True", "reason": "Progressing", "message": "scaling"}]));
        assert_eq!(
            h,
            Health::InProgress("reconciling (Progressing): scaling".into()),
            "Ready=True does not end the wait while the controller still reconciles"
        );
        assert_eq!(
            widget(
                json!([{"type": "Ready", "status": "True"}, {"type": "Reconciling", "status": "False"}])
            ),
            Health::Current
        );
        let h = widget(json!([{"type": "Reconciling", "status": "True"},
            {"type": "Stalled", "status": "True", "reason": "BadSpec"}]));
        assert_eq!(h, Health::Failed("stalled (BadSpec)".into()));
        let d = verdict(
            "apps/v1",
            "Deployment",
            json!({"metadata": {"name": "web", "generation": 1}, "spec": {"replicas": 1},
                "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                           "conditions": [{"type": "Reconciling", "status": "True"}]}}),
        );
        assert_eq!(
            d,
            Health::InProgress("reconciling".into()),
            "kstatus reads it first, for built-in kinds too"
        );
    }

    fn rule<'a>(
        api_version: &'a str,
        kind: &'a str,
        current: &'a str,
        failed: Option<&'a str>,
        in_progress: Option<&'a str>,
    ) -> RuleText<'a> {
        RuleText {
            api_version,
            kind,
            current,
            failed,
            in_progress,
        }
    }

    fn rules(texts: &[RuleText<'_>]) -> HealthRules {
        match HealthRules::compile(texts.iter().copied()) {
            Ok(r) => r,
            Err(e) => panic!("test rules do not compile: {e}"),
        }
    }

    fn refused(texts: &[RuleText<'_>]) -> String {
        match HealthRules::compile(texts.iter().copied()) {
            Ok(r) => panic!("compiled although it should not: {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// The verdict of `rules` on a Widget (example.com/v1) with this status.
    fn widget_by(rules: &HealthRules, status: Value) -> Health {
        let mut o = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "generation": 1}});
        if !status.is_null() {
            o["status"] = status;
        }
        rules.assess("example.com", "Widget", &obj(o))
    }

    fn phases() -> HealthRules {
        rules(&[rule(
            "example.com/v1",
            "Widget",
            "status.phase == 'Ready'",
            Some("status.phase == 'Failed' || status.phase == 'Ready' && has(status.error)"),
            Some("status.phase == 'Ready' && status.replicas < 3"),
        )])
    }

    #[test]
    fn a_rule_decides_in_progress_then_failed_then_current() {
        let r = phases();
        assert_eq!(
            widget_by(&r, json!({"phase": "Ready", "replicas": 3})),
            Health::Current
        );
        let h = widget_by(&r, json!({"phase": "Ready", "replicas": 1, "error": "x"}));
        assert_eq!(
            h,
            Health::InProgress(
                "health rule for Widget.example.com: inProgress \"status.phase == 'Ready' && status.replicas < 3\" is true; \
                 status {\"error\":\"x\",\"phase\":\"Ready\",\"replicas\":1}"
                    .into()
            ),
            "inProgress is read before failed"
        );
        let h = widget_by(&r, json!({"phase": "Ready", "replicas": 3, "error": "x"}));
        assert!(
            matches!(&h, Health::Failed(m) if m.starts_with("health rule for Widget.example.com: failed \"status.phase == 'Failed'")),
            "failed is read before current: {h:?}"
        );
        let h = widget_by(&r, json!({"phase": "Pending", "replicas": 3}));
        assert_eq!(
            h,
            Health::InProgress(
                "health rule for Widget.example.com: current \"status.phase == 'Ready'\" is not true yet; \
                 status {\"phase\":\"Pending\",\"replicas\":3}"
                    .into()
            ),
            "none true: in progress, waiting for current"
        );
    }

    #[test]
    fn a_rule_replaces_the_built_in_verdict_of_its_kind_only() {
        let r = rules(&[rule(
            "example.com/v2",
            "Widget",
            "status.phase == 'Ready'",
            None,
            None,
        )]);
        let ready_by_condition =
            json!({"phase": "Pending", "conditions": [{"type": "Ready", "status": "True"}]});
        assert_eq!(
            assess(
                "example.com",
                "Widget",
                &obj(json!({"apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": "w"}, "status": ready_by_condition.clone()}))
            ),
            Health::Current,
            "built in: Ready=True is current"
        );
        assert!(
            in_progress(
                &widget_by(&r, ready_by_condition.clone()),
                "current \"status.phase == 'Ready'\" is not true yet"
            ),
            "the rule (written for v2, read for v1: only the group counts) decides instead"
        );
        let gadget = obj(
            json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"},
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Pending"}]}}),
        );
        assert_eq!(
            r.assess("example.com", "Gadget", &gadget),
            Health::InProgress("not ready (Pending)".into()),
            "other kinds keep the built-in rules"
        );
        let other_group =
            obj(json!({"apiVersion": "other.io/v1", "kind": "Widget", "metadata": {"name": "w"}}));
        assert_eq!(
            r.assess("other.io", "Widget", &other_group),
            Health::Current
        );
    }

    #[test]
    fn a_rule_waits_for_the_latest_generation_to_be_observed() {
        let r = rules(&[rule("example.com/v1", "Widget", "true", None, None)]);
        let stale = obj(json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "generation": 4}, "status": {"observedGeneration": 3}}));
        assert_eq!(
            r.assess("example.com", "Widget", &stale),
            Health::InProgress("controller has not observed generation 4 yet".into())
        );
    }

    #[test]
    fn an_object_without_status_sees_empty_maps_and_fields_as_variables() {
        let guarded = rules(&[rule(
            "example.com/v1",
            "Widget",
            "has(status.phase) && status.phase == 'Ready' && metadata.name == 'w' && kind == 'Widget'",
            None,
            None,
        )]);
        let h = widget_by(&guarded, Value::Null);
        assert!(
            matches!(&h, Health::InProgress(m) if m.ends_with("is not true yet; no status")),
            "has() on the declared, empty status is false, not an error: {h:?}"
        );
        assert_eq!(
            widget_by(&guarded, json!({"phase": "Ready"})),
            Health::Current
        );
        let counted = rules(&[rule(
            "example.com/v1",
            "Widget",
            "status.readyReplicas + 1 == spec.replicas + 1 && status.ratio > 0.5",
            None,
            None,
        )]);
        let o = obj(
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
            "spec": {"replicas": 3}, "status": {"readyReplicas": 3, "ratio": 0.75}}),
        );
        assert_eq!(
            counted.assess("example.com", "Widget", &o),
            Health::Current,
            "JSON integers are CEL ints: arithmetic with int literals works"
        );
        let optional = rules(&[rule(
            "example.com/v1",
            "Widget",
            "status.?conditions.orValue([]).exists(c, c.type == 'Synced' && c.status == 'True')",
            None,
            None,
        )]);
        assert!(in_progress(
            &widget_by(&optional, json!({})),
            "is not true yet"
        ));
        assert_eq!(
            widget_by(
                &optional,
                json!({"conditions": [{"type": "Synced", "status": "True"}]})
            ),
            Health::Current,
            "Flux's cheatsheet style (optional field selection) works"
        );
    }

    #[test]
    fn an_expression_that_cannot_be_evaluated_is_not_true_and_the_message_says_why() {
        let r = rules(&[rule(
            "example.com/v1",
            "Widget",
            "status.phase == 'Ready'",
            Some("status.failures > 3"),
            None,
        )]);
        let h = widget_by(&r, json!({"phase": "Ready"}));
        assert_eq!(
            h,
            Health::Current,
            "failed errors (no failures field): not true, current decides"
        );
        let h = widget_by(&r, json!({"state": "ok"}));
        let Health::InProgress(m) = &h else {
            panic!("every expression errs: in progress, not failed: {h:?}")
        };
        assert!(m.starts_with("health rule for Widget.example.com: no expression could be evaluated (failed could not be evaluated: "), "{m}");
        assert!(m.contains("current could not be evaluated: "), "{m}");
        assert!(
            m.contains("failures") && m.contains("phase"),
            "names the missing fields: {m}"
        );
        assert!(m.ends_with("; status {\"state\":\"ok\"}"), "{m}");

        let h = widget_by(&r, json!({"phase": "Pending"}));
        assert!(
            matches!(&h, Health::InProgress(m) if m.contains("current \"status.phase == 'Ready'\" is not true yet (failed could not be evaluated: ")),
            "{h:?}"
        );
        let mismatch = rules(&[rule(
            "example.com/v1",
            "Widget",
            "status.spec + 1 == 2",
            None,
            None,
        )]);
        let Health::InProgress(m) =
            widget_by(&mismatch, json!({"spec": {"huge": "x".repeat(5000)}}))
        else {
            panic!("a type mismatch is not true")
        };
        assert!(
            m.len() < 2 * MAX_STATUS_SHOWN + 200,
            "an error quoting a large value is cut: {} bytes: {m}",
            m.len()
        );
        let not_bool = rules(&[rule("example.com/v1", "Widget", "status.phase", None, None)]);
        assert!(
            in_progress(
                &widget_by(&not_bool, json!({"phase": "Ready"})),
                "current returned a string, not a bool"
            ),
            "{:?}",
            widget_by(&not_bool, json!({"phase": "Ready"}))
        );
    }

    #[test]
    fn the_observed_status_is_shortened_in_messages() {
        let r = rules(&[rule(
            "example.com/v1",
            "Widget",
            "status.phase == 'Ready'",
            None,
            None,
        )]);
        let long = "é".repeat(500);
        let Health::InProgress(m) = widget_by(&r, json!({"phase": "Pending", "message": long}))
        else {
            panic!("in progress expected")
        };
        let shown = m
            .split_once("; status ")
            .map(|(_, s)| s)
            .unwrap_or_default();
        assert_eq!(shown.chars().count(), MAX_STATUS_SHOWN + 1, "{shown}");
        assert!(
            shown.starts_with("{\"message\":\"éé") && shown.ends_with('…'),
            "{shown}"
        );
    }

    #[test]
    fn rules_that_cannot_work_are_refused_naming_the_rule_and_expression() {
        let e = refused(&[
            rule("example.com/v1", "Widget", "true", None, None),
            rule(
                "example.com/v1",
                "Gadget",
                "status.phase == 'Ready'",
                Some("status.phase == "),
                None,
            ),
        ]);
        assert!(
            e.starts_with("[1] (Gadget.example.com) failed: does not parse as CEL: 1:"),
            "{e}"
        );
        assert!(!e.contains('\n'), "one line for a condition message: {e}");
        assert_eq!(
            refused(&[rule("v1", "Service", "", None, None)]),
            "[0] (Service) current: is empty; it is required (the expression true once the object is healthy)"
        );
        assert_eq!(
            refused(&[rule("example.com/v1", "Widget", "true", None, Some(" "))]),
            "[0] (Widget.example.com) inProgress: is empty; leave the field out instead"
        );
        assert_eq!(
            refused(&[rule("example.com/", "Widget", "true", None, None)]),
            "[0] (example.com/ Widget): apiVersion \"example.com/\" is not group/version (or v1 for the core group)"
        );
        assert_eq!(
            refused(&[rule("example.com/v1", "", "true", None, None)]),
            "[0] (example.com/v1 ): kind is empty"
        );
        assert_eq!(
            refused(&[
                rule("example.com/v1", "Widget", "true", None, None),
                rule("example.com/v2", "Widget", "false", None, None),
            ]),
            "[1] (Widget.example.com): rule [0] is for the same kind already; merge them into one"
        );
        assert_eq!(
            refused(&[rule("v1", "Secret", "true", None, None)]),
            "[0] (Secret): Secrets cannot have a health rule (they are current once applied, and a rule's messages could show their data)"
        );
        assert!(HealthRules::compile([]).is_ok_and(|r| r.is_empty()));
    }

    #[tokio::test]
    async fn a_wait_that_times_out_on_a_rule_names_it_and_what_it_saw() {
        let client = crate::api_error::dead_server_client();
        let widget = PlannedObject::for_test("example.com", "v1", "Widget", Some("a"), "w");
        let pending = applied(&widget, json!({"phase": "Provisioning"}));
        let r = rules(&[rule(
            "example.com/v1",
            "Widget",
            "status.phase == 'Ready'",
            None,
            None,
        )]);
        let e = wait_healthy(&client, &[(&widget, &pending)], Duration::ZERO, &r)
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "not healthy within 0ns: Widget.example.com a/w: health rule for Widget.example.com: \
                 current \"status.phase == 'Ready'\" is not true yet; status {\"phase\":\"Provisioning\"}"
            )
        );
        let failing = rules(&[rule(
            "example.com/v1",
            "Widget",
            "status.phase == 'Ready'",
            Some("status.phase == 'Provisioning'"),
            None,
        )]);
        let e = wait_healthy(
            &client,
            &[(&widget, &pending)],
            Duration::from_secs(5),
            &failing,
        )
        .await
        .err();
        assert!(
            matches!(&e, Some(HealthError::Failed { reason, .. })
                if reason == "health rule for Widget.example.com: failed \"status.phase == 'Provisioning'\" is true; status {\"phase\":\"Provisioning\"}"),
            "a failed rule ends the wait at once, before any poll: {e:?}"
        );
    }
}
