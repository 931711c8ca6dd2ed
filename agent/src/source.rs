//! The `Source` custom resource (`berth.dev/v1alpha1`): one per synced artifact. Owns the
//! spec a user writes, the status the agent records, spec validation and the CRD that is
//! generated from these types (never written by hand).

use std::time::Duration;

use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::{self, DurationError};
use crate::health::{HealthRules, RuleError, RuleText};

/// API group of every berth custom resource.
pub const GROUP: &str = "berth.dev";
/// The version this agent serves and stores.
pub const VERSION: &str = "v1alpha1";
/// Kind name, as used in ApplySet group-kind strings and events.
pub const KIND: &str = "Source";

/// How often a Source is reconciled when the spec does not say.
pub const DEFAULT_INTERVAL: &str = "5m";
/// Apply + health deadline when the spec does not say.
pub const DEFAULT_TIMEOUT: &str = "5m";
/// Shortest interval accepted: below this the agent would hammer the registry.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);

/// Desired state: which artifact to keep applied, and how.
// `printcolumn(type_ = "string")` repeats by design of kube's attribute syntax; clippy reads
// the repeated key-value pairs as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema, PartialEq)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "Source",
    namespaced,
    shortname = "bsrc",
    status = "SourceStatus",
    doc = "A signed OCI artifact of Kubernetes manifests that berth-agent keeps applied.",
    // Lets `kubectl apply --applyset=sources.berth.dev/NAME` accept a Source as ApplySet parent.
    label("applyset.kubernetes.io/is-parent-type", "true"),
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
    printcolumn(name = "Digest", type_ = "string", json_path = ".status.lastAppliedDigest"),
    printcolumn(name = "Revision", type_ = "string", json_path = ".status.lastAppliedRevision"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// Repository of the artifact, `oci://host[:port]/repository` (no tag or digest: see `ref`).
    pub url: String,
    /// Which version of the artifact to apply: exactly one of tag, digest or semver.
    #[serde(rename = "ref")]
    pub reference: SourceRef,
    /// How often to resolve the reference and correct drift, e.g. `30s`, `5m`, `1h`.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Trust policy: public keys the artifact must be signed with.
    pub verify: VerifySpec,
    /// Delete objects that left the artifact (default true).
    #[serde(default = "default_true")]
    pub prune: bool,
    /// Namespace for namespaced objects that do not name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// Apply while impersonating this ServiceAccount of the Source's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Deadline for apply and health checks, e.g. `2m` (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Wait for every applied object to become healthy before reporting Ready (default true).
    #[serde(default = "default_true")]
    pub wait: bool,
    /// Stop reconciling; nothing is resolved, applied or pruned while true.
    #[serde(default)]
    pub suspend: bool,
    /// Secret of type kubernetes.io/dockerconfigjson with registry credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// Reach the registry over plain HTTP.
    #[serde(default)]
    pub insecure: bool,
    /// Secret whose `ca.crt` is the CA bundle for the registry's TLS certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<LocalObjectReference>,
    /// Take ownership of fields other field managers own (server-side apply force). Does not
    /// help with immutable fields: see `recreate`.
    #[serde(default)]
    pub force: bool,
    /// When the API server refuses a change because a field cannot change once the object
    /// exists (a Job's pod template, a Deployment's selector), delete the object and create
    /// it again. Off by default: a re-created Deployment restarts all its Pods at once. One
    /// object can opt in with the annotation `berth.dev/apply: Recreate`; finished Jobs are
    /// re-created without either.
    #[serde(default)]
    pub recreate: bool,
    /// `onHealthFailure`: when a new digest fails its health wait, re-apply the last applied
    /// digest (verified again first) and hold there until the ref moves or the annotation
    /// `berth.dev/retry` changes. Off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackPolicy>,
    /// Health rules in CEL for kinds the built-in rules do not understand (the shape of
    /// Flux's `healthCheckExprs`): for objects of a rule's group and kind, the rule decides
    /// instead of the built-in verdict. Checked by the health wait (`wait`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_check_exprs: Vec<HealthCheckExpr>,
}

/// How to tell the health of objects of one kind, in CEL over the object. After a check that
/// the object's controller saw its latest generation, `inProgress`, `failed` and `current`
/// are evaluated in that order and the first that is true decides; none true means in
/// progress. An expression that cannot be evaluated (e.g. a missing field) counts as not true.
#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckExpr {
    /// API version of the kind, e.g. `cert-manager.io/v1`; only the group is matched, so the
    /// rule covers every version of the kind.
    pub api_version: String,
    /// Kind of the objects the rule judges, e.g. `Certificate`.
    pub kind: String,
    /// True once the object is healthy, e.g. `status.phase == 'Ready'`. The object's
    /// top-level fields are the variables: `metadata`, `spec`, `status`, ….
    pub current: String,
    /// True when the object will not become healthy: the health wait fails at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// True while the object is still being worked on (checked first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_progress: Option<String>,
}

impl HealthCheckExpr {
    pub fn text(&self) -> RuleText<'_> {
        RuleText {
            api_version: &self.api_version,
            kind: &self.kind,
            current: &self.current,
            failed: self.failed.as_deref(),
            in_progress: self.in_progress.as_deref(),
        }
    }
}

// When the agent returns to the last applied digest on its own (documented on the field).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum RollbackPolicy {
    /// The new digest's objects did not become healthy within `timeout`.
    OnHealthFailure,
}

/// Exactly one of `tag`, `digest` or `semver`.
#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema, PartialEq, Default)]
pub struct SourceRef {
    /// Follow a tag: resolved to a digest with one HEAD request per interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Pin a digest (`sha256:…`): tag moves are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Follow the highest tag matching a semver range, e.g. `>=1.2.0 <2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
}

/// The one reference kind a valid `SourceRef` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefKind<'a> {
    Tag(&'a str),
    Digest(&'a str),
    Semver(&'a str),
}

/// Trust policy of a Source.
#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VerifySpec {
    /// Public keys (cosign PEM) from Secrets or ConfigMaps in the Source's namespace.
    #[serde(default)]
    pub keys: Vec<KeySource>,
    /// Apply unsigned artifacts. Must be set explicitly; never the default.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Accept only signatures that name this Source's repository (`host/path` of `url`) as
    /// the one they were made in: a digest copied with its signature into another repository
    /// is refused. Only classic (`.sig`) signatures name a repository; Sigstore bundles do not
    /// and are then refused.
    #[serde(default)]
    pub match_repository: bool,
    /// Refuse an artifact whose `org.opencontainers.image.created` is older than that of the
    /// last applied one (a tag moved back to an older signed digest), unless `ref.digest` pins
    /// it. Needs artifacts pushed with `--created` or `SOURCE_DATE_EPOCH`.
    #[serde(default)]
    pub refuse_older: bool,
}

/// Where one or more public keys come from: exactly one of secretRef or configMapRef.
#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KeySource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<KeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<KeySelector>,
}

/// An object in the Source's namespace and optionally one key of it (default: every `*.pub` key).
#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema, PartialEq, Default)]
pub struct KeySelector {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A reference to an object by name in the Source's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema, PartialEq, Default)]
pub struct LocalObjectReference {
    pub name: String,
}

/// Observed state, kstatus-compatible.
#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Digest of the artifact whose objects are in the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_digest: Option<String>,
    /// `org.opencontainers.image.revision` of the applied artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// `org.opencontainers.image.created` of the applied artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_created: Option<String>,
    /// Digest the last reconcile tried (differs from lastAppliedDigest after a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_digest: Option<String>,
    /// Who signed the applied artifact (key fingerprint), or `unverified` when verification is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<ObjectCounts>,
    /// RFC 3339 time the last reconcile finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reconcile_time: Option<String>,
    /// Digest that failed its health check and was rolled back from; not applied again until
    /// the ref points elsewhere or the `berth.dev/retry` annotation changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_digest: Option<String>,
    /// Value of the `berth.dev/retry` annotation the agent last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_retry: Option<String>,
}

/// How many objects the last reconcile touched.
#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObjectCounts {
    /// Objects in the artifact.
    // i64: the CRD schema format the API server knows (int64); u32 would be "uint32".
    pub total: i64,
    /// Objects created or changed by the last reconcile.
    pub changed: i64,
    /// Objects deleted by prune in the last reconcile.
    pub pruned: i64,
}

/// A kstatus condition (same shape as `metav1.Condition`).
#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A Source spec that cannot work as written; the user must edit it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error(
        "spec.ref must set exactly one of tag, digest or semver (found {found}); edit the Source"
    )]
    RefNotExactlyOne { found: usize },
    #[error(
        "spec.verify lists no keys; add keys or set verify.insecureSkipVerify: true explicitly"
    )]
    NoTrustPolicy,
    #[error("spec.verify.keys[{index}] must set exactly one of secretRef or configMapRef")]
    KeySourceNotExactlyOne { index: usize },
    #[error("spec.{field}: {source}")]
    Duration {
        field: &'static str,
        source: DurationError,
    },
    #[error("spec.interval {interval:?} is shorter than the minimum {min:?}")]
    IntervalTooShort { interval: Duration, min: Duration },
    #[error("spec.healthCheckExprs{0}; edit the Source")]
    HealthCheck(RuleError),
}

fn default_interval() -> String {
    DEFAULT_INTERVAL.to_string()
}

fn default_true() -> bool {
    true
}

impl SourceRef {
    /// The single reference kind, or an error naming how many were set.
    pub fn kind(&self) -> Result<RefKind<'_>, SpecError> {
        match (&self.tag, &self.digest, &self.semver) {
            (Some(t), None, None) => Ok(RefKind::Tag(t)),
            (None, Some(d), None) => Ok(RefKind::Digest(d)),
            (None, None, Some(s)) => Ok(RefKind::Semver(s)),
            _ => Err(SpecError::RefNotExactlyOne {
                found: [
                    self.tag.is_some(),
                    self.digest.is_some(),
                    self.semver.is_some(),
                ]
                .iter()
                .filter(|b| **b)
                .count(),
            }),
        }
    }
}

impl Source {
    /// `namespace/name`: how the agent names a Source in logs, metrics and its own maps.
    pub fn key(&self) -> String {
        use kube::ResourceExt as _;
        format!(
            "{}/{}",
            self.namespace().unwrap_or_default(),
            self.name_any()
        )
    }
}

impl SourceSpec {
    /// Checks everything about the spec that does not need the cluster or the registry.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.reference.kind()?;
        if self.verify.keys.is_empty() && !self.verify.insecure_skip_verify {
            return Err(SpecError::NoTrustPolicy);
        }
        for (index, k) in self.verify.keys.iter().enumerate() {
            if k.secret_ref.is_some() == k.config_map_ref.is_some() {
                return Err(SpecError::KeySourceNotExactlyOne { index });
            }
        }
        let interval = self.interval()?;
        if interval < MIN_INTERVAL {
            return Err(SpecError::IntervalTooShort {
                interval,
                min: MIN_INTERVAL,
            });
        }
        self.timeout()?;
        self.health_rules()?;
        Ok(())
    }

    /// `healthCheckExprs`, every expression compiled.
    pub fn health_rules(&self) -> Result<HealthRules, SpecError> {
        HealthRules::compile(self.health_check_exprs.iter().map(HealthCheckExpr::text))
            .map_err(SpecError::HealthCheck)
    }

    pub fn interval(&self) -> Result<Duration, SpecError> {
        duration::parse(&self.interval).map_err(|source| SpecError::Duration {
            field: "interval",
            source,
        })
    }

    pub fn timeout(&self) -> Result<Duration, SpecError> {
        duration::parse(self.timeout.as_deref().unwrap_or(DEFAULT_TIMEOUT)).map_err(|source| {
            SpecError::Duration {
                field: "timeout",
                source,
            }
        })
    }
}

/// The CRD generated from the types above, as YAML.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser_error::Error> {
    serde_saphyr::to_string(&Source::crd())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> SourceSpec {
        match serde_json::from_value(v) {
            Ok(s) => s,
            Err(e) => panic!("test spec does not parse: {e}"),
        }
    }

    #[test]
    fn defaults_prune_and_wait_on_and_interval_five_minutes() {
        let s = spec(
            json!({"url": "oci://r/x", "ref": {"tag": "v1"}, "verify": {"insecureSkipVerify": true}}),
        );
        assert!(s.prune);
        assert!(s.wait);
        assert!(!s.force);
        assert_eq!(s.interval().ok(), Some(Duration::from_secs(300)));
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn ref_must_have_exactly_one_kind() {
        let s = spec(
            json!({"url": "oci://r/x", "ref": {"tag": "v1", "digest": "sha256:00"}, "verify": {"insecureSkipVerify": true}}),
        );
        assert_eq!(s.validate(), Err(SpecError::RefNotExactlyOne { found: 2 }));
        let s =
            spec(json!({"url": "oci://r/x", "ref": {}, "verify": {"insecureSkipVerify": true}}));
        assert_eq!(s.validate(), Err(SpecError::RefNotExactlyOne { found: 0 }));
    }

    #[test]
    fn verification_is_required_unless_explicitly_disabled() {
        let s = spec(json!({"url": "oci://r/x", "ref": {"tag": "v1"}, "verify": {}}));
        assert_eq!(s.validate(), Err(SpecError::NoTrustPolicy));
    }

    #[test]
    fn health_check_exprs_are_compiled_when_the_spec_is_validated() {
        let with = |exprs: serde_json::Value| {
            spec(json!({"url": "oci://r/x", "ref": {"tag": "v1"},
                "verify": {"insecureSkipVerify": true}, "healthCheckExprs": exprs}))
        };
        let good = with(
            json!([{"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "current": "status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')",
            "failed": "status.conditions.exists(c, c.type == 'Ready' && c.status == 'False')"}]),
        );
        assert_eq!(good.validate(), Ok(()));
        assert!(good.health_rules().is_ok_and(|r| !r.is_empty()));

        let bad = with(json!([
            {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "current": "true"},
            {"apiVersion": "db.example.com/v1", "kind": "Database", "current": "status.phase == 'Ready'",
             "inProgress": "status.phase in ['Pending'"}]));
        let e = bad
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("spec.healthCheckExprs[1] (Database.db.example.com) inProgress: does not parse as CEL: 1:"),
            "names the rule and the expression: {e}"
        );
        assert!(e.ends_with("; edit the Source"), "{e}");
        assert!(!e.contains('\n'), "a condition message is one line: {e}");
    }

    #[test]
    fn crd_has_short_name_printer_columns_and_applyset_parent_label() {
        let crd = Source::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("sources.berth.dev"));
        assert_eq!(crd.spec.names.short_names, Some(vec!["bsrc".to_string()]));
        let labels = crd.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels
                .get("applyset.kubernetes.io/is-parent-type")
                .map(String::as_str),
            Some("true")
        );
        let cols: Vec<String> = crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(cols, ["URL", "Digest", "Revision", "Ready", "Age"]);
    }
}
