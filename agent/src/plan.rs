//! The apply plan: turns parsed manifests into typed, namespaced, labelled objects in
//! dependency order (the [`Stage`]s: CRDs, Namespaces, other cluster-scoped, namespaced),
//! resolving every kind through the API server's discovery — or through a CRD in the same set.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use serde_json::Value;

use crate::applyset::{
    self, APPLY_ANNOTATION, ApplyPolicy, JOB_CONTENT_ANNOTATION, PART_OF_LABEL, Stage,
};
use crate::discovery::{DiscoveryError, ServedKinds, api_for};

/// One manifest as it was read from the artifact (or a directory): a JSON object and where
/// it was read.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub value: Value,
    /// `file:line` (or similar) so errors point at the source.
    pub origin: String,
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
        applyset::group_kind(&self.group, &self.kind)
    }
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
    /// What berth may do to it (annotation `berth.dev/apply`).
    pub policy: ApplyPolicy,
}

impl PlannedObject {
    /// Whether this is a `batch` Job: it runs once, and finished, it may be re-created.
    pub fn is_job(&self) -> bool {
        self.key.group == "batch" && self.key.kind == "Job"
    }

    /// The hash of a Job's manifest that berth stamped on it ([`JOB_CONTENT_ANNOTATION`]).
    pub fn job_content(&self) -> Option<&str> {
        self.body
            .metadata
            .annotations
            .as_ref()?
            .get(JOB_CONTENT_ANNOTATION)
            .map(String::as_str)
    }

    /// The API the object is applied, read and deleted through.
    pub fn api(&self, client: &Client) -> Api<DynamicObject> {
        api_for(client, &self.resource, self.key.namespace.as_deref())
    }
}

#[cfg(test)]
impl PlannedObject {
    /// An object of a served kind as the plan leaves it, read from `<name>.yaml:1`: for tests
    /// of what comes after the plan.
    pub(crate) fn for_test(
        group: &str,
        version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Self {
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let mut body = DynamicObject::new(name, &resource);
        body.metadata.namespace = namespace.map(String::from);
        PlannedObject {
            key: ObjectKey {
                group: group.into(),
                kind: kind.into(),
                namespace: namespace.map(String::from),
                name: name.into(),
            },
            resource,
            namespaced: namespace.is_some(),
            stage: Stage::of(group, kind, namespace.is_some()),
            body,
            origin: format!("{name}.yaml:1"),
            kind_from_plan: false,
            policy: ApplyPolicy::Apply,
        }
    }
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
        self.objects
            .iter()
            .filter_map(|o| o.key.namespace.clone())
            .collect()
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

/// Object keys are boxed: unboxed, they would make every `Result` that carries this error
/// (and the sync and reconcile errors around it) large.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{origin}: {problem}; fix the manifest and publish a new artifact")]
    InvalidObject { origin: String, problem: String },
    #[error(
        "{origin}: unknown kind {api_version}/{kind}: the API server does not serve it and no CRD in the artifact defines it; install its CRD or remove the object"
    )]
    UnknownKind {
        origin: String,
        api_version: String,
        kind: String,
    },
    #[error("{object} appears twice ({first} and {second}); each object may appear once")]
    Duplicate {
        object: Box<ObjectKey>,
        first: String,
        second: String,
    },
    #[error(
        "{origin}: {object} is cluster-scoped but names namespace {namespace:?}; remove metadata.namespace"
    )]
    NamespaceOnClusterScoped {
        origin: String,
        object: Box<ObjectKey>,
        namespace: String,
    },
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
}

impl PlanError {
    /// Whether discovery got no answer from the API server at all.
    pub fn unreachable(&self) -> bool {
        matches!(self, PlanError::Discovery(e) if e.unreachable())
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
    manifests: Vec<Manifest>,
    kinds: &mut impl ServedKinds,
    defaults: &NamespaceDefaults,
    applyset_id: &str,
) -> Result<ApplyPlan, PlanError> {
    let planned_kinds = kinds_defined_by_crds(&manifests);
    let mut seen: BTreeMap<ObjectKey, String> = BTreeMap::new();
    let mut objects = Vec::with_capacity(manifests.len());
    for m in manifests {
        let mut body: DynamicObject =
            serde_json::from_value(m.value.clone()).map_err(|e| PlanError::InvalidObject {
                origin: m.origin.clone(),
                problem: format!("not a Kubernetes object: {e}"),
            })?;
        let invalid = |problem: &str| PlanError::InvalidObject {
            origin: m.origin.clone(),
            problem: problem.to_string(),
        };
        let types = body
            .types
            .clone()
            .ok_or_else(|| invalid("apiVersion and kind are required"))?;
        let gvk = GroupVersionKind::try_from(&types)
            .map_err(|_| invalid("apiVersion is not GROUP/VERSION or VERSION"))?;
        let name = body
            .metadata
            .name
            .clone()
            .ok_or_else(|| invalid("metadata.name is required"))?;
        if body.metadata.generate_name.is_some() {
            return Err(invalid(
                "metadata.generateName cannot be applied repeatedly; use metadata.name",
            ));
        }

        let (resource, namespaced, kind_from_plan) = match kinds.resolve_gvk(&gvk).await? {
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
                    object: Box::new(ObjectKey {
                        group: gvk.group,
                        kind: gvk.kind,
                        namespace: None,
                        name,
                    }),
                    namespace: ns,
                });
            }
            body.metadata.namespace = None;
            None
        };

        let labels = body.metadata.labels.get_or_insert_with(Default::default);
        if let Some(existing) = labels
            .get(PART_OF_LABEL)
            .filter(|v| v.as_str() != applyset_id)
        {
            return Err(PlanError::InvalidObject {
                origin: m.origin,
                problem: format!(
                    "label {PART_OF_LABEL}={existing} is set by the manifest; berth sets it, remove it"
                ),
            });
        }
        labels.insert(PART_OF_LABEL.to_string(), applyset_id.to_string());
        // Server-side apply rejects these; they come from `kubectl get -o yaml` exports.
        body.metadata.resource_version = None;
        body.metadata.uid = None;
        body.metadata.managed_fields = None;
        body.metadata.creation_timestamp = None;

        let key = ObjectKey {
            group: gvk.group.clone(),
            kind: gvk.kind.clone(),
            namespace,
            name,
        };
        if let Some(first) = seen.get(&key) {
            return Err(PlanError::Duplicate {
                object: Box::new(key),
                first: first.clone(),
                second: m.origin,
            });
        }
        seen.insert(key.clone(), m.origin.clone());

        let policy = ApplyPolicy::of(body.metadata.annotations.as_ref()).map_err(|value| {
            PlanError::InvalidObject {
                origin: m.origin.clone(),
                problem: format!(
                    "annotation {APPLY_ANNOTATION}: {value:?} is not one of {}",
                    ApplyPolicy::VALUES.join(", ")
                ),
            }
        })?;
        if key.group == "batch" && key.kind == "Job" {
            stamp_job_content(&mut body);
        }

        let stage = Stage::of(&gvk.group, &gvk.kind, namespaced);
        objects.push(PlannedObject {
            key,
            resource,
            namespaced,
            stage,
            body,
            origin: m.origin,
            kind_from_plan,
            policy,
        });
    }
    // Stable within a stage: the artifact's own order is kept for objects of equal rank.
    objects.sort_by_key(|o| o.stage);
    Ok(ApplyPlan { objects })
}

/// Stamps a Job with the hash of its manifest as planned (labels included, the stamp itself
/// left out), so berth knows later which content a live Job runs and which content a Job that
/// is gone had finished.
fn stamp_job_content(body: &mut DynamicObject) {
    use sha2::Digest as _;
    if let Some(a) = body.metadata.annotations.as_mut() {
        a.remove(JOB_CONTENT_ANNOTATION);
    }
    // serde_json's maps are sorted (no `preserve_order`): the same manifest always gives the
    // same bytes, whatever order its keys were written in.
    let bytes = serde_json::to_vec(&*body).unwrap_or_default();
    let hash = sha2::Sha256::digest(&bytes);
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    body.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(JOB_CONTENT_ANNOTATION.to_string(), hex);
}

/// Kinds that CRDs in this set define, keyed by (group, kind).
fn kinds_defined_by_crds(manifests: &[Manifest]) -> BTreeMap<(String, String), PlannedKind> {
    let mut out = BTreeMap::new();
    for m in manifests {
        let v = &m.value;
        let is_crd = v.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition")
            && v.get("apiVersion")
                .and_then(Value::as_str)
                .is_some_and(|a| a.starts_with("apiextensions.k8s.io/"));
        if !is_crd {
            continue;
        }
        let spec = &v["spec"];
        let (Some(group), Some(kind), Some(plural)) = (
            spec["group"].as_str(),
            spec["names"]["kind"].as_str(),
            spec["names"]["plural"].as_str(),
        ) else {
            // A malformed CRD is reported by the dry-run with the server's own message.
            continue;
        };
        let versions = spec["versions"]
            .as_array()
            .map(|vs| {
                vs.iter()
                    .filter_map(|v| v["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        out.insert(
            (group.to_string(), kind.to_string()),
            PlannedKind {
                plural: plural.to_string(),
                namespaced: spec["scope"].as_str() != Some("Cluster"),
                versions,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Served;
    use serde_json::json;

    /// What the test's API server serves: each kind and whether it is namespaced.
    struct Table(Vec<(GroupVersionKind, bool)>);

    impl ServedKinds for Table {
        async fn resolve_gvk(
            &mut self,
            gvk: &GroupVersionKind,
        ) -> Result<Option<Served>, DiscoveryError> {
            Ok(self
                .0
                .iter()
                .find(|(g, _)| g == gvk)
                .map(|(g, namespaced)| (ApiResource::from_gvk(g), *namespaced)))
        }
    }

    fn served() -> Table {
        let kind = |group, version, kind, namespaced| {
            (GroupVersionKind::gvk(group, version, kind), namespaced)
        };
        Table(vec![
            kind("", "v1", "ConfigMap", true),
            kind("", "v1", "Namespace", false),
            kind("apps", "v1", "Deployment", true),
            kind("rbac.authorization.k8s.io", "v1", "ClusterRole", false),
            kind(
                "admissionregistration.k8s.io",
                "v1",
                "ValidatingWebhookConfiguration",
                false,
            ),
            kind("apiregistration.k8s.io", "v1", "APIService", false),
            kind(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                false,
            ),
        ])
    }

    const ID: &str = "applyset-own-v1";

    fn manifest(api_version: &str, kind: &str, name: &str, namespace: Option<&str>) -> Manifest {
        let mut value =
            json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
        if let Some(ns) = namespace {
            value["metadata"]["namespace"] = json!(ns);
        }
        Manifest {
            value,
            origin: format!("{name}.yaml:1"),
        }
    }

    fn widget_crd(scope: &str) -> Manifest {
        Manifest {
            origin: "crd.yaml:1".into(),
            value: json!({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": "widgets.example.com"},
                "spec": {"group": "example.com", "scope": scope,
                         "names": {"kind": "Widget", "plural": "widgets"},
                         "versions": [{"name": "v1"}]}
            }),
        }
    }

    async fn plan_in(
        manifests: Vec<Manifest>,
        target: Option<&str>,
    ) -> Result<ApplyPlan, PlanError> {
        let defaults = NamespaceDefaults {
            target: target.map(String::from),
            fallback: "default".into(),
        };
        plan(manifests, &mut served(), &defaults, ID).await
    }

    fn shown(plan: &ApplyPlan) -> Vec<String> {
        plan.objects.iter().map(|o| o.key.to_string()).collect()
    }

    #[tokio::test]
    async fn crds_and_namespaces_come_first_then_cluster_kinds_then_the_rest_in_artifact_order() {
        let plan = plan_in(
            vec![
                manifest("apps/v1", "Deployment", "web", Some("shop")),
                manifest(
                    "rbac.authorization.k8s.io/v1",
                    "ClusterRole",
                    "reader",
                    None,
                ),
                manifest("v1", "ConfigMap", "a", None),
                manifest("v1", "Namespace", "shop", None),
                manifest(
                    "admissionregistration.k8s.io/v1",
                    "ValidatingWebhookConfiguration",
                    "hook",
                    None,
                ),
                widget_crd("Namespaced"),
                manifest("v1", "ConfigMap", "b", Some("shop")),
                manifest(
                    "apiregistration.k8s.io/v1",
                    "APIService",
                    "v1.metrics.example.com",
                    None,
                ),
            ],
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            shown(&plan),
            [
                "CustomResourceDefinition.apiextensions.k8s.io widgets.example.com",
                "Namespace shop",
                "ClusterRole.rbac.authorization.k8s.io reader",
                "ValidatingWebhookConfiguration.admissionregistration.k8s.io hook",
                "APIService.apiregistration.k8s.io v1.metrics.example.com",
                "Deployment.apps shop/web",
                "ConfigMap default/a",
                "ConfigMap shop/b",
            ]
        );
        assert_eq!(
            plan.namespaces(),
            ["default", "shop"].map(String::from).into()
        );
        assert!(
            plan.group_kinds()
                .contains("CustomResourceDefinition.apiextensions.k8s.io")
        );
    }

    #[tokio::test]
    async fn namespaced_objects_keep_their_namespace_else_take_the_target_else_the_fallback() {
        let objects = || {
            vec![
                manifest("v1", "ConfigMap", "own", Some("mine")),
                manifest("v1", "ConfigMap", "none", None),
            ]
        };
        let targeted = plan_in(objects(), Some("team"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            shown(&targeted),
            ["ConfigMap mine/own", "ConfigMap team/none"]
        );
        let bodies: Vec<Option<&str>> = targeted
            .objects
            .iter()
            .map(|o| o.body.metadata.namespace.as_deref())
            .collect();
        assert_eq!(
            bodies,
            [Some("mine"), Some("team")],
            "the body sent says the namespace too"
        );
        let untargeted = plan_in(objects(), None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            shown(&untargeted),
            ["ConfigMap mine/own", "ConfigMap default/none"]
        );
    }

    #[tokio::test]
    async fn a_cluster_scoped_object_may_not_name_a_namespace() {
        let e = plan_in(
            vec![manifest(
                "rbac.authorization.k8s.io/v1",
                "ClusterRole",
                "r",
                Some("shop"),
            )],
            Some("team"),
        )
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            e.starts_with("r.yaml:1: ClusterRole.rbac.authorization.k8s.io r is cluster-scoped"),
            "{e}"
        );
        assert!(e.contains("remove metadata.namespace"), "{e}");
        let empty = plan_in(
            vec![manifest(
                "rbac.authorization.k8s.io/v1",
                "ClusterRole",
                "r",
                Some(""),
            )],
            Some("team"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(empty.objects[0].key.namespace, None);
        assert_eq!(
            empty.objects[0].body.metadata.namespace, None,
            "the target namespace is not added"
        );
    }

    #[tokio::test]
    async fn an_object_may_appear_once_however_its_namespace_is_given() {
        let twice = vec![
            manifest("v1", "ConfigMap", "c", Some("default")),
            Manifest {
                origin: "other.yaml:3".into(),
                ..manifest("v1", "ConfigMap", "c", None)
            },
        ];
        match plan_in(twice, None).await {
            Err(PlanError::Duplicate {
                object,
                first,
                second,
            }) => {
                assert_eq!(
                    (object.to_string(), first.as_str(), second.as_str()),
                    ("ConfigMap default/c".into(), "c.yaml:1", "other.yaml:3")
                );
            }
            other => panic!("{other:?}"),
        }
        let apart = vec![
            manifest("v1", "ConfigMap", "c", Some("a")),
            manifest("v1", "ConfigMap", "c", Some("b")),
        ];
        assert_eq!(
            plan_in(apart, None).await.map(|p| p.objects.len()).ok(),
            Some(2),
            "same name, other namespace"
        );
    }

    #[tokio::test]
    async fn custom_resources_of_a_crd_in_the_set_are_planned_from_the_crd() {
        let widget =
            |version: &str| manifest(&format!("example.com/{version}"), "Widget", "w", None);
        let plan = plan_in(vec![widget("v1"), widget_crd("Namespaced")], Some("team"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let w = &plan.objects[1];
        assert_eq!(w.key.to_string(), "Widget.example.com team/w");
        assert!(w.kind_from_plan && w.namespaced && w.stage == Stage::Namespaced);
        assert_eq!(
            (w.resource.plural.as_str(), w.resource.api_version.as_str()),
            ("widgets", "example.com/v1")
        );
        assert!(
            !plan.objects[0].kind_from_plan,
            "the CRD's own kind is served"
        );

        let cluster = plan_in(vec![widget("v1"), widget_crd("Cluster")], None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (
                cluster.objects[1].key.namespace.as_deref(),
                cluster.objects[1].stage
            ),
            (None, Stage::ClusterScoped)
        );

        let e = plan_in(vec![widget("v2"), widget_crd("Namespaced")], None)
            .await
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_ref()
                .is_some_and(|e| e.starts_with("w.yaml:1: unknown kind example.com/v2/Widget")),
            "{e:?}"
        );
        let e = plan_in(vec![widget("v1")], None)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("no CRD in the artifact defines it; install its CRD or remove the object"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn berth_labels_every_object_and_drops_fields_server_side_apply_refuses() {
        let mut exported = manifest("v1", "ConfigMap", "c", None);
        exported.value["metadata"]["resourceVersion"] = json!("12");
        exported.value["metadata"]["uid"] = json!("0b7e");
        exported.value["metadata"]["creationTimestamp"] = json!("2024-01-01T00:00:00Z");
        exported.value["metadata"]["managedFields"] = json!([{"manager": "kubectl"}]);
        exported.value["metadata"]["labels"] = json!({"app": "shop", PART_OF_LABEL: ID});
        let plan = plan_in(vec![exported], None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let meta = &plan.objects[0].body.metadata;
        let labels = meta.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(PART_OF_LABEL).map(String::as_str), Some(ID));
        assert_eq!(labels.get("app").map(String::as_str), Some("shop"));
        assert!(meta.resource_version.is_none() && meta.uid.is_none());
        assert!(meta.creation_timestamp.is_none() && meta.managed_fields.is_none());
        let unlabelled = plan_in(vec![manifest("v1", "ConfigMap", "d", None)], None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let labels = unlabelled.objects[0]
            .body
            .metadata
            .labels
            .clone()
            .unwrap_or_default();
        assert_eq!(labels.get(PART_OF_LABEL).map(String::as_str), Some(ID));

        let mut foreign = manifest("v1", "ConfigMap", "c", None);
        foreign.value["metadata"]["labels"] = json!({PART_OF_LABEL: "applyset-other-v1"});
        let e = plan_in(vec![foreign], None)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("c.yaml:1: label applyset.kubernetes.io/part-of=applyset-other-v1 is set by the manifest"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn objects_berth_cannot_apply_are_refused_with_their_origin() {
        let with = |f: fn(&mut Value)| {
            let mut m = manifest("v1", "ConfigMap", "c", None);
            f(&mut m.value);
            m
        };
        let cases: [(Manifest, &str); 4] = [
            (
                with(|v| v["metadata"] = json!({})),
                "metadata.name is required",
            ),
            (
                with(|v| v["metadata"]["generateName"] = json!("c-")),
                "metadata.generateName cannot be applied repeatedly",
            ),
            (
                with(|v| {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("kind");
                    }
                }),
                "apiVersion and kind are required",
            ),
            (
                with(|v| v["metadata"] = json!("c")),
                "not a Kubernetes object",
            ),
        ];
        for (m, problem) in cases {
            let e = plan_in(vec![m], None)
                .await
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.starts_with("c.yaml:1: ") && e.contains(problem), "{e}");
        }
        let e = plan_in(vec![manifest("example.com/v1", "Gadget", "g", None)], None)
            .await
            .err();
        assert!(
            matches!(&e, Some(PlanError::UnknownKind { kind, .. }) if kind == "Gadget"),
            "{e:?}"
        );
    }

    #[test]
    fn crds_in_the_set_define_kinds_with_scope_and_versions() {
        let crd = Manifest {
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
        assert!(
            k.is_some_and(|k| !k.namespaced && k.plural == "widgets" && k.versions == ["v1", "v2"])
        );
    }
}
