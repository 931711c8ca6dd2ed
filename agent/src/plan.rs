//! The apply plan: turns parsed manifests into typed, namespaced, labelled objects in
//! dependency order (CRDs, Namespaces, other cluster-scoped, namespaced), resolving every
//! kind through a cached discovery of the API server — or through a CRD in the same set.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kube::Client;
use kube::api::{ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use serde_json::Value;

use crate::inventory::PART_OF_LABEL;

/// Kinds with this annotation value are kept when they leave the artifact.
pub const PRUNE_ANNOTATION: &str = "berth.dev/prune";
/// Value of [`PRUNE_ANNOTATION`] that opts an object out of prune.
pub const PRUNE_DISABLED: &str = "disabled";

/// One manifest as it came out of the artifact: a JSON object and where it was read.
#[derive(Debug, Clone)]
pub struct Desired {
    pub value: Value,
    /// `file:line` (or similar) so errors point at the source.
    pub origin: String,
}

/// Apply order. Everything in a stage is applied before the next stage starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    CustomResourceDefinitions,
    Namespaces,
    ClusterScoped,
    Namespaced,
}

/// Identity of an object in the cluster, independent of API version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    /// `Kind.group` as the ApplySet annotations and kubectl spell it (`Kind` for the core group).
    pub fn group_kind(&self) -> String {
        group_kind(&self.group, &self.kind)
    }
}

/// `Kind.group`, or `Kind` for the core group.
pub fn group_kind(group: &str, kind: &str) -> String {
    if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.group_kind(), ns, self.name),
            None => write!(f, "{} {}", self.group_kind(), self.name),
        }
    }
}

/// An object ready to be sent: its body carries the ApplySet label and its namespace.
#[derive(Debug, Clone)]
pub struct PlannedObject {
    pub key: ObjectKey,
    pub resource: ApiResource,
    pub namespaced: bool,
    pub stage: Stage,
    pub body: DynamicObject,
    pub origin: String,
    /// The kind is defined by a CRD in this same plan and not served yet.
    pub kind_from_plan: bool,
}

/// Objects in apply order.
#[derive(Debug, Clone, Default)]
pub struct ApplyPlan {
    pub objects: Vec<PlannedObject>,
}

impl ApplyPlan {
    pub fn keys(&self) -> BTreeSet<ObjectKey> {
        self.objects.iter().map(|o| o.key.clone()).collect()
    }

    /// `Kind.group` of every object, sorted.
    pub fn group_kinds(&self) -> BTreeSet<String> {
        self.objects.iter().map(|o| o.key.group_kind()).collect()
    }

    /// Namespaces that hold namespaced objects of the plan.
    pub fn namespaces(&self) -> BTreeSet<String> {
        self.objects.iter().filter_map(|o| o.key.namespace.clone()).collect()
    }
}

/// Where namespaced objects go when they do not say.
#[derive(Debug, Clone)]
pub struct NamespaceDefaults {
    /// `spec.targetNamespace`: overrides nothing, fills the gaps.
    pub target: Option<String>,
    /// Used when neither the object nor `target` names one (Source namespace / kubeconfig).
    pub fallback: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{origin}: {problem}; fix the manifest and publish a new artifact")]
    InvalidObject { origin: String, problem: String },
    #[error(
        "{origin}: unknown kind {api_version}/{kind}: the API server does not serve it and no CRD in the artifact defines it; install its CRD or remove the object"
    )]
    UnknownKind { origin: String, api_version: String, kind: String },
    #[error("{object} appears twice ({first} and {second}); each object may appear once")]
    Duplicate { object: ObjectKey, first: String, second: String },
    #[error("{origin}: {object} is cluster-scoped but names namespace {namespace:?}; remove metadata.namespace")]
    NamespaceOnClusterScoped { origin: String, object: ObjectKey, namespace: String },
    #[error("discovery of the API server's resources failed: {}; check the API server is reachable", crate::api_error::message(.source))]
    Discovery { source: kube::Error },
}

impl PlanError {
    /// Whether discovery got no answer from the API server at all.
    pub fn unreachable(&self) -> bool {
        matches!(self, PlanError::Discovery { source } if crate::api_error::is_unreachable(source))
    }
}

/// What the API server serves, discovered once and refreshed when a kind is missing
/// (e.g. after this agent applied a CRD).
pub struct Catalog {
    client: Client,
    discovery: Option<Discovery>,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog").field("discovered", &self.discovery.is_some()).finish()
    }
}

impl Catalog {
    pub fn new(client: Client) -> Self {
        Catalog { client, discovery: None }
    }

    /// Forgets what was discovered; the next lookup runs discovery again (e.g. after this
    /// agent applied a CRD).
    pub fn invalidate(&mut self) {
        self.discovery = None;
    }

    async fn ensure(&mut self) -> Result<&Discovery, PlanError> {
        let d = match self.discovery.take() {
            Some(d) => d,
            // Aggregated discovery: two requests for the whole server instead of one per group.
            None => Discovery::new(self.client.clone())
                .run_aggregated()
                .await
                .map_err(|source| PlanError::Discovery { source })?,
        };
        Ok(&*self.discovery.insert(d))
    }

    /// Resource and scope of an exact group/version/kind.
    pub async fn resolve_gvk(&mut self, gvk: &GroupVersionKind) -> Result<Option<(ApiResource, bool)>, PlanError> {
        let d = self.ensure().await?;
        Ok(d.resolve_gvk(gvk).map(|(ar, caps)| (ar, caps.scope == Scope::Namespaced)))
    }

    /// Resource and scope of a group/kind at the server's preferred version (for prune,
    /// where the recorded inventory has no version).
    pub async fn resolve_group_kind(
        &mut self,
        group: &str,
        kind: &str,
    ) -> Result<Option<(ApiResource, bool)>, PlanError> {
        let d = self.ensure().await?;
        Ok(d.get(group).and_then(|g| g.recommended_kind(kind)).map(|(ar, caps)| (ar, caps.scope == Scope::Namespaced)))
    }
}

/// Kind info a CRD in the plan contributes before the server serves it.
struct PlannedKind {
    plural: String,
    namespaced: bool,
    versions: Vec<String>,
}

/// Builds the ordered plan. Fails on the first object that cannot be placed; nothing is
/// sent to the cluster here except discovery.
pub async fn plan(
    manifests: Vec<Desired>,
    catalog: &mut Catalog,
    defaults: &NamespaceDefaults,
    applyset_id: &str,
) -> Result<ApplyPlan, PlanError> {
    let planned_kinds = kinds_defined_by_crds(&manifests);
    let mut seen: BTreeMap<ObjectKey, String> = BTreeMap::new();
    let mut objects = Vec::with_capacity(manifests.len());
    for m in manifests {
        let mut body: DynamicObject = serde_json::from_value(m.value.clone()).map_err(|e| {
            PlanError::InvalidObject { origin: m.origin.clone(), problem: format!("not a Kubernetes object: {e}") }
        })?;
        let invalid =
            |problem: &str| PlanError::InvalidObject { origin: m.origin.clone(), problem: problem.to_string() };
        let types = body.types.clone().ok_or_else(|| invalid("apiVersion and kind are required"))?;
        let gvk =
            GroupVersionKind::try_from(&types).map_err(|_| invalid("apiVersion is not GROUP/VERSION or VERSION"))?;
        let name = body.metadata.name.clone().ok_or_else(|| invalid("metadata.name is required"))?;
        if body.metadata.generate_name.is_some() {
            return Err(invalid("metadata.generateName cannot be applied repeatedly; use metadata.name"));
        }

        let (resource, namespaced, kind_from_plan) = match catalog.resolve_gvk(&gvk).await? {
            Some((ar, namespaced)) => (ar, namespaced, false),
            None => match planned_kinds.get(&(gvk.group.clone(), gvk.kind.clone())) {
                Some(pk) if pk.versions.iter().any(|v| v == &gvk.version) => (
                    ApiResource {
                        group: gvk.group.clone(),
                        version: gvk.version.clone(),
                        api_version: types.api_version.clone(),
                        kind: gvk.kind.clone(),
                        plural: pk.plural.clone(),
                    },
                    pk.namespaced,
                    true,
                ),
                _ => {
                    return Err(PlanError::UnknownKind {
                        origin: m.origin,
                        api_version: types.api_version,
                        kind: types.kind,
                    });
                }
            },
        };

        let namespace = if namespaced {
            let ns = body
                .metadata
                .namespace
                .clone()
                .or_else(|| defaults.target.clone())
                .unwrap_or_else(|| defaults.fallback.clone());
            body.metadata.namespace = Some(ns.clone());
            Some(ns)
        } else {
            if let Some(ns) = body.metadata.namespace.clone().filter(|ns| !ns.is_empty()) {
                return Err(PlanError::NamespaceOnClusterScoped {
                    origin: m.origin,
                    object: ObjectKey { group: gvk.group, kind: gvk.kind, namespace: None, name },
                    namespace: ns,
                });
            }
            body.metadata.namespace = None;
            None
        };

        let labels = body.metadata.labels.get_or_insert_with(Default::default);
        if let Some(existing) = labels.get(PART_OF_LABEL).filter(|v| v.as_str() != applyset_id) {
            return Err(PlanError::InvalidObject {
                origin: m.origin,
                problem: format!("label {PART_OF_LABEL}={existing} is set by the manifest; berth sets it, remove it"),
            });
        }
        labels.insert(PART_OF_LABEL.to_string(), applyset_id.to_string());
        // Server-side apply rejects these; they come from `kubectl get -o yaml` exports.
        body.metadata.resource_version = None;
        body.metadata.uid = None;
        body.metadata.managed_fields = None;
        body.metadata.creation_timestamp = None;

        let key = ObjectKey { group: gvk.group.clone(), kind: gvk.kind.clone(), namespace, name };
        if let Some(first) = seen.get(&key) {
            return Err(PlanError::Duplicate { object: key, first: first.clone(), second: m.origin });
        }
        seen.insert(key.clone(), m.origin.clone());

        let stage = match (gvk.group.as_str(), gvk.kind.as_str(), namespaced) {
            ("apiextensions.k8s.io", "CustomResourceDefinition", _) => Stage::CustomResourceDefinitions,
            ("", "Namespace", _) => Stage::Namespaces,
            (_, _, false) => Stage::ClusterScoped,
            (_, _, true) => Stage::Namespaced,
        };
        objects.push(PlannedObject { key, resource, namespaced, stage, body, origin: m.origin, kind_from_plan });
    }
    // Stable within a stage: the artifact's own order is kept for objects of equal rank.
    objects.sort_by_key(|o| o.stage);
    Ok(ApplyPlan { objects })
}

/// Kinds that CRDs in this set define, keyed by (group, kind).
fn kinds_defined_by_crds(manifests: &[Desired]) -> BTreeMap<(String, String), PlannedKind> {
    let mut out = BTreeMap::new();
    for m in manifests {
        let v = &m.value;
        let is_crd = v.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition")
            && v.get("apiVersion").and_then(Value::as_str).is_some_and(|a| a.starts_with("apiextensions.k8s.io/"));
        if !is_crd {
            continue;
        }
        let spec = &v["spec"];
        let (Some(group), Some(kind), Some(plural)) =
            (spec["group"].as_str(), spec["names"]["kind"].as_str(), spec["names"]["plural"].as_str())
        else {
            // A malformed CRD is reported by the dry-run with the server's own message.
            continue;
        };
        let versions = spec["versions"]
            .as_array()
            .map(|vs| vs.iter().filter_map(|v| v["name"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        out.insert(
            (group.to_string(), kind.to_string()),
            PlannedKind { plural: plural.to_string(), namespaced: spec["scope"].as_str() != Some("Cluster"), versions },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn group_kind_spelling_matches_kubectl() {
        assert_eq!(group_kind("", "ConfigMap"), "ConfigMap");
        assert_eq!(group_kind("apps", "Deployment"), "Deployment.apps");
    }

    #[test]
    fn crds_in_the_set_define_kinds_with_scope_and_versions() {
        let crd = Desired {
            origin: "crd.yaml:1".into(),
            value: json!({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": "widgets.example.com"},
                "spec": {"group": "example.com", "scope": "Cluster",
                         "names": {"kind": "Widget", "plural": "widgets"},
                         "versions": [{"name": "v1"}, {"name": "v2"}]}
            }),
        };
        let kinds = kinds_defined_by_crds(&[crd]);
        let k = kinds.get(&("example.com".to_string(), "Widget".to_string()));
        assert!(k.is_some_and(|k| !k.namespaced && k.plural == "widgets" && k.versions == ["v1", "v2"]));
    }
}
