//! The prune inventory, kept as a Kubernetes ApplySet (KEP-3659) so kubectl and other tools
//! see the same set: the parent object carries the set's id label and the group-kinds and
//! namespaces it spans; every member carries the `part-of` label. Owns reading and writing
//! the parent and deleting members that left the set.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine as _;
use futures::{StreamExt, TryStreamExt};
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::api_error;
use crate::plan::{Catalog, ObjectKey, PRUNE_ANNOTATION, PRUNE_DISABLED, PlanError, Stage};

/// Label on members, value = the set's id.
pub const PART_OF_LABEL: &str = "applyset.kubernetes.io/part-of";
/// Label on the parent, value = the set's id.
pub const ID_LABEL: &str = "applyset.kubernetes.io/id";
/// Parent annotation naming the tool that owns the set; other tools refuse to touch it.
pub const TOOLING_ANNOTATION: &str = "applyset.kubernetes.io/tooling";
/// Parent annotation: comma-separated `Kind.group` of every member kind.
pub const GROUP_KINDS_ANNOTATION: &str = "applyset.kubernetes.io/contains-group-kinds";
/// Parent annotation: namespaces holding members, other than the parent's own.
pub const ADDITIONAL_NAMESPACES_ANNOTATION: &str = "applyset.kubernetes.io/additional-namespaces";
/// Tool name in the tooling annotation (`<name>/<version>`).
pub const TOOL_NAME: &str = "berth";
/// Field manager for the parent's ApplySet metadata; kubectl uses `<tool>-applyset` too.
pub const INVENTORY_FIELD_MANAGER: &str = "berth-applyset";
/// Page size when listing members: bounds memory per request on large sets.
pub const LIST_PAGE_SIZE: u32 = 500;
/// Deletes in flight at once during prune.
pub const MAX_CONCURRENT_DELETES: usize = 16;

/// The value of the tooling annotation berth writes.
pub fn tooling() -> String {
    format!("{TOOL_NAME}/v{}", env!("CARGO_PKG_VERSION"))
}

/// What kind of object anchors the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentKind {
    /// A `Source` custom resource (the controller).
    Source,
    /// A Secret (one-shot `apply` without a Source), like kubectl's default parent.
    Secret,
}

/// The ApplySet parent: a namespaced object whose identity defines the set id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplySetParent {
    pub kind: ParentKind,
    pub name: String,
    pub namespace: String,
}

impl fmt::Display for ApplySetParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.resource();
        let gr = if r.group.is_empty() { r.plural.clone() } else { format!("{}.{}", r.plural, r.group) };
        write!(f, "{gr}/{} in namespace {}", self.name, self.namespace)
    }
}

impl ParentKind {
    /// The resource parents of this kind are.
    pub fn resource(self) -> ApiResource {
        match self {
            ParentKind::Source => ApiResource {
                group: crate::source::GROUP.into(),
                version: crate::source::VERSION.into(),
                api_version: format!("{}/{}", crate::source::GROUP, crate::source::VERSION),
                kind: crate::source::KIND.into(),
                plural: "sources".into(),
            },
            ParentKind::Secret => ApiResource {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: "Secret".into(),
                plural: "secrets".into(),
            },
        }
    }
}

impl ApplySetParent {
    pub fn resource(&self) -> ApiResource {
        self.kind.resource()
    }

    /// `applyset-<base64url(sha256(<name>.<namespace>.<kind>.<group>))>-v1`, as the spec and
    /// kubectl compute it.
    pub fn id(&self) -> String {
        let r = self.resource();
        let gknn = format!("{}.{}.{}.{}", self.name, self.namespace, r.kind, r.group);
        let hash = Sha256::digest(gknn.as_bytes());
        format!("applyset-{}-v1", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash))
    }
}

/// Group-kinds and namespaces the set spans, as recorded on the parent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub group_kinds: BTreeSet<String>,
    /// Every namespace holding members (the parent's own included).
    pub namespaces: BTreeSet<String>,
}

impl Inventory {
    pub fn union(&self, other: &Inventory) -> Inventory {
        Inventory {
            group_kinds: self.group_kinds.union(&other.group_kinds).cloned().collect(),
            namespaces: self.namespaces.union(&other.namespaces).cloned().collect(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("ApplySet parent {parent} does not exist")]
    ParentMissing { parent: String },
    #[error(
        "ApplySet parent {parent} is managed by tooling {tooling:?}, not berth; choose another --name or remove that set with its own tool"
    )]
    OtherTooling { parent: String, tooling: String },
    #[error(
        "ApplySet parent {parent} has label {ID_LABEL}={found}, expected {expected}; it belongs to another set, choose another --name"
    )]
    IdMismatch { parent: String, found: String, expected: String },
    #[error("{action} ApplySet parent {parent}: {}", api_error::message(.source))]
    Parent { action: &'static str, parent: String, source: kube::Error },
    #[error("listing members of kind {group_kind} for prune: {}", api_error::message(.source))]
    List { group_kind: String, source: kube::Error },
    #[error("pruning {object}: {}; it stays in the inventory and prune retries next time", api_error::message(.source))]
    Delete { object: ObjectKey, source: kube::Error },
    #[error(transparent)]
    Discovery(#[from] PlanError),
}

impl InventoryError {
    /// Whether the API server refused the request for lack of rights (RBAC), as opposed to
    /// a failure that a retry may mend.
    pub fn is_forbidden(&self) -> bool {
        match self {
            InventoryError::List { source, .. } | InventoryError::Delete { source, .. } => {
                matches!(source, kube::Error::Api(s) if s.code == 403)
            }
            _ => false,
        }
    }

    /// Whether the API server gave no answer at all (reading, writing or listing the set).
    pub fn unreachable(&self) -> bool {
        match self {
            InventoryError::Parent { source, .. }
            | InventoryError::List { source, .. }
            | InventoryError::Delete { source, .. } => api_error::is_unreachable(source),
            InventoryError::Discovery(e) => e.unreachable(),
            _ => false,
        }
    }
}

/// Reads the parent's recorded set. A Secret parent that does not exist yet is an empty set.
pub async fn read(client: &Client, parent: &ApplySetParent) -> Result<Inventory, InventoryError> {
    read_recorded(client, parent).await.map(|r| r.inventory)
}

/// What the parent records, and whether it already carries this berth's tooling and the set's
/// id label (then writing the same inventory again would change nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    pub inventory: Inventory,
    pub labelled: bool,
}

impl Recorded {
    /// Whether writing `inv` would leave the parent as it is: the write can be skipped.
    pub fn holds(&self, inv: &Inventory) -> bool {
        self.labelled && self.inventory == *inv
    }
}

/// Like [`read`], with whether the parent is already labelled and annotated by this berth.
pub async fn read_recorded(client: &Client, parent: &ApplySetParent) -> Result<Recorded, InventoryError> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &parent.namespace, &parent.resource());
    let obj = match api.get_opt(&parent.name).await {
        Ok(Some(o)) => o,
        Ok(None) if parent.kind == ParentKind::Secret => return Ok(Recorded::default()),
        Ok(None) => return Err(InventoryError::ParentMissing { parent: parent.to_string() }),
        Err(source) => return Err(InventoryError::Parent { action: "reading", parent: parent.to_string(), source }),
    };
    let annotations = obj.metadata.annotations.unwrap_or_default();
    let labels = obj.metadata.labels.unwrap_or_default();
    if let Some(tooling) = annotations.get(TOOLING_ANNOTATION) {
        let base = tooling.rsplit_once('/').map(|(b, _)| b).unwrap_or(tooling);
        if base != TOOL_NAME {
            return Err(InventoryError::OtherTooling { parent: parent.to_string(), tooling: tooling.clone() });
        }
    } else if parent.kind == ParentKind::Secret {
        // An unrelated Secret of that name: never adopt it, its data is someone else's.
        return Err(InventoryError::OtherTooling { parent: parent.to_string(), tooling: "(none)".into() });
    }
    if let Some(found) = labels.get(ID_LABEL).filter(|found| **found != parent.id()) {
        return Err(InventoryError::IdMismatch {
            parent: parent.to_string(),
            found: found.clone(),
            expected: parent.id(),
        });
    }
    let labelled =
        annotations.get(TOOLING_ANNOTATION) == Some(&tooling()) && labels.get(ID_LABEL) == Some(&parent.id());
    Ok(Recorded { inventory: parse(&annotations, &parent.namespace), labelled })
}

fn split_list(value: Option<&String>) -> impl Iterator<Item = String> + '_ {
    value.into_iter().flat_map(|v| v.split(',')).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

fn parse(annotations: &BTreeMap<String, String>, parent_namespace: &str) -> Inventory {
    let group_kinds = split_list(annotations.get(GROUP_KINDS_ANNOTATION)).collect();
    let mut namespaces: BTreeSet<String> = split_list(annotations.get(ADDITIONAL_NAMESPACES_ANNOTATION)).collect();
    namespaces.insert(parent_namespace.to_string());
    Inventory { group_kinds, namespaces }
}

/// The parent's ApplySet metadata for `inv`, as annotations.
fn annotations(inv: &Inventory, parent_namespace: &str) -> BTreeMap<String, String> {
    let gks: Vec<&str> = inv.group_kinds.iter().map(String::as_str).collect();
    let nss: Vec<&str> = inv.namespaces.iter().map(String::as_str).filter(|ns| *ns != parent_namespace).collect();
    BTreeMap::from([
        (TOOLING_ANNOTATION.to_string(), tooling()),
        (GROUP_KINDS_ANNOTATION.to_string(), gks.join(",")),
        (ADDITIONAL_NAMESPACES_ANNOTATION.to_string(), nss.join(",")),
    ])
}

/// Records `inv` on the parent with server-side apply (a no-op write when unchanged).
pub async fn write(client: &Client, parent: &ApplySetParent, inv: &Inventory) -> Result<(), InventoryError> {
    let r = parent.resource();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &parent.namespace, &r);
    let body = json!({
        "apiVersion": r.api_version,
        "kind": r.kind,
        "metadata": {
            "name": parent.name,
            "namespace": parent.namespace,
            "labels": { ID_LABEL: parent.id() },
            "annotations": annotations(inv, &parent.namespace),
        }
    });
    // Force: the parent's ApplySet fields belong to the set's tool, which is us (checked in read).
    // Ignore: the body is berth's own metadata, no field of it can be unknown; the server's
    // strict second decode would find nothing.
    let pp = PatchParams::apply(INVENTORY_FIELD_MANAGER).force().validation_ignore();
    api.patch(&parent.name, &pp, &Patch::Apply(&body)).await.map(|_| ()).map_err(|source| InventoryError::Parent {
        action: "updating",
        parent: parent.to_string(),
        source,
    })
}

/// A live member of the set, found by listing with the `part-of` label.
#[derive(Debug, Clone)]
pub struct Member {
    pub key: ObjectKey,
    pub resource: ApiResource,
    pub stage: Stage,
    pub resource_version: Option<String>,
    /// Annotated `berth.dev/prune: disabled`.
    pub keep: bool,
    /// The live object as listed (lets the engine skip objects already as desired).
    pub live: DynamicObject,
}

/// Every live member in the group-kinds and namespaces of `scope` (whole objects, paged: one
/// list per kind and namespace instead of one read per object).
/// Kinds no longer served are skipped: no objects of them can exist.
pub async fn list_members(
    client: &Client,
    catalog: &mut Catalog,
    parent: &ApplySetParent,
    scope: &Inventory,
) -> Result<Vec<Member>, InventoryError> {
    let selector = format!("{PART_OF_LABEL}={}", parent.id());
    // Kinds are resolved first (discovery is cached), then every kind × namespace is listed
    // concurrently: a set spanning many namespaces costs one round trip, not one per list.
    let mut lists = Vec::new();
    for gk in &scope.group_kinds {
        let (kind, group) = gk.split_once('.').unwrap_or((gk.as_str(), ""));
        let Some((resource, namespaced)) = catalog.resolve_group_kind(group, kind).await? else {
            tracing::debug!(group_kind = %gk, "kind is not served; it has no members");
            continue;
        };
        let namespaces: Vec<Option<&String>> =
            if namespaced { scope.namespaces.iter().map(Some).collect() } else { vec![None] };
        for ns in namespaces {
            let api: Api<DynamicObject> = match ns {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            let kind = GroupKindOf { group, kind, gk, resource: resource.clone(), namespaced };
            lists.push(list_one(api, kind, &selector));
        }
    }
    let pages: Vec<Vec<Member>> = futures::stream::iter(lists).buffered(MAX_CONCURRENT_LISTS).try_collect().await?;
    Ok(pages.into_iter().flatten().collect())
}

/// Lists requests in flight at once while reading the set.
pub const MAX_CONCURRENT_LISTS: usize = 16;

struct GroupKindOf<'a> {
    group: &'a str,
    kind: &'a str,
    gk: &'a String,
    resource: ApiResource,
    namespaced: bool,
}

/// Members of one kind in one namespace (or cluster-wide), page by page.
async fn list_one(api: Api<DynamicObject>, of: GroupKindOf<'_>, selector: &str) -> Result<Vec<Member>, InventoryError> {
    let mut members = Vec::new();
    let mut lp = ListParams::default().labels(selector).limit(LIST_PAGE_SIZE);
    loop {
        let page = api.list(&lp).await.map_err(|source| InventoryError::List { group_kind: of.gk.clone(), source })?;
        for mut item in page.items {
            let Some(name) = item.metadata.name.clone() else { continue };
            let keep = item
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(PRUNE_ANNOTATION))
                .is_some_and(|v| v == PRUNE_DISABLED);
            // Never compared nor shown, and the bulk of a small object: not kept in memory.
            item.metadata.managed_fields = None;
            members.push(Member {
                key: ObjectKey {
                    group: of.group.to_string(),
                    kind: of.kind.to_string(),
                    namespace: item.metadata.namespace.clone(),
                    name,
                },
                resource: of.resource.clone(),
                stage: stage_of(of.group, of.kind, of.namespaced),
                resource_version: item.metadata.resource_version.clone(),
                keep,
                live: item,
            });
        }
        match page.metadata.continue_.as_deref() {
            Some(token) if !token.is_empty() => lp = lp.continue_token(token),
            _ => break,
        }
    }
    Ok(members)
}

/// Members that prune would delete: not in `keep` and not opted out, in delete order
/// (workloads before their namespaces, custom resources before CRDs).
pub fn prune_candidates(members: &[Member], keep: &BTreeSet<ObjectKey>) -> Vec<Member> {
    let mut doomed: Vec<Member> = members.iter().filter(|m| !m.keep && !keep.contains(&m.key)).cloned().collect();
    doomed.sort_by(|a, b| b.stage.cmp(&a.stage).then_with(|| a.key.cmp(&b.key)));
    doomed
}

/// Deletes `doomed` stage by stage (namespaced objects first, CRDs last) with background
/// propagation. Returns what was deleted (or was already gone).
pub async fn delete_members(client: &Client, doomed: &[Member]) -> Result<Vec<ObjectKey>, InventoryError> {
    let mut pruned = Vec::with_capacity(doomed.len());
    for stage in [Stage::Namespaced, Stage::ClusterScoped, Stage::Namespaces, Stage::CustomResourceDefinitions] {
        let futures: Vec<_> = doomed.iter().filter(|m| m.stage == stage).map(|m| delete(client, m)).collect();
        let done: Vec<ObjectKey> =
            futures::stream::iter(futures).buffer_unordered(MAX_CONCURRENT_DELETES).try_collect().await?;
        pruned.extend(done);
    }
    Ok(pruned)
}

async fn delete(client: &Client, m: &Member) -> Result<ObjectKey, InventoryError> {
    let api: Api<DynamicObject> = match &m.key.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &m.resource),
        None => Api::all_with(client.clone(), &m.resource),
    };
    match api.delete(&m.key.name, &DeleteParams::background()).await {
        Ok(_) => {
            tracing::info!(object = %m.key, "pruned");
            Ok(m.key.clone())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(m.key.clone()),
        Err(source) => Err(InventoryError::Delete { object: m.key.clone(), source }),
    }
}

/// The apply stage of a kind, for ordering deletes.
pub fn stage_of(group: &str, kind: &str, namespaced: bool) -> Stage {
    match (group, kind, namespaced) {
        ("apiextensions.k8s.io", "CustomResourceDefinition", _) => Stage::CustomResourceDefinitions,
        ("", "Namespace", _) => Stage::Namespaces,
        (_, _, false) => Stage::ClusterScoped,
        (_, _, true) => Stage::Namespaced,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_matches_kubectl_for_a_secret_parent() {
        // Cross-checked with an independent implementation (Python's hashlib + base64).
        let p = ApplySetParent { kind: ParentKind::Secret, name: "demo".into(), namespace: "default".into() };
        assert_eq!(p.id(), expected_id("demo.default.Secret."));
        assert!(p.id().starts_with("applyset-") && p.id().ends_with("-v1"));
        assert!(!p.id().contains('=') && !p.id().contains('+') && !p.id().contains('/'));
    }

    fn expected_id(gknn: &str) -> String {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg("import sys,hashlib,base64;print(base64.urlsafe_b64encode(hashlib.sha256(sys.argv[1].encode()).digest()).decode().rstrip('='))")
            .arg(gknn)
            .output();
        match out {
            Ok(o) if o.status.success() => format!("applyset-{}-v1", String::from_utf8_lossy(&o.stdout).trim()),
            other => panic!("shell tools for the cross-check failed: {other:?}"),
        }
    }

    #[test]
    fn source_parent_id_uses_group_and_kind() {
        let p = ApplySetParent { kind: ParentKind::Source, name: "shop".into(), namespace: "apps".into() };
        assert_eq!(p.id(), expected_id("shop.apps.Source.berth.dev"));
    }

    #[test]
    fn annotations_leave_out_the_parent_namespace_and_sort() {
        let inv = Inventory {
            group_kinds: ["Deployment.apps", "ConfigMap", "Namespace"].map(String::from).into(),
            namespaces: ["shop", "default", "admin"].map(String::from).into(),
        };
        let a = annotations(&inv, "default");
        assert_eq!(a[GROUP_KINDS_ANNOTATION], "ConfigMap,Deployment.apps,Namespace");
        assert_eq!(a[ADDITIONAL_NAMESPACES_ANNOTATION], "admin,shop");
        assert!(a[TOOLING_ANNOTATION].starts_with("berth/v"));
        assert_eq!(parse(&a, "default"), inv);
    }
}
