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
use crate::applyset::{
    self, ADDITIONAL_NAMESPACES_ANNOTATION, FINISHED_JOBS_ANNOTATION, GROUP_KINDS_ANNOTATION,
    ID_LABEL, PART_OF_LABEL, Stage, TOOLING_ANNOTATION, tooling,
};
use crate::discovery::{ApiDiscovery, DiscoveryError, api_for};
use crate::plan::ObjectKey;

/// Field manager for the parent's ApplySet metadata; kubectl uses `<tool>-applyset` too.
pub const INVENTORY_FIELD_MANAGER: &str = "berth-applyset";
/// Page size when listing members: bounds memory per request on large sets.
pub const LIST_PAGE_SIZE: u32 = 500;
/// Deletes in flight at once during prune.
pub const MAX_CONCURRENT_DELETES: usize = 16;

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
        let gr = if r.group.is_empty() {
            r.plural.clone()
        } else {
            format!("{}.{}", r.plural, r.group)
        };
        write!(f, "{gr}/{} in namespace {}", self.name, self.namespace)
    }
}

impl ParentKind {
    /// The resource parents of this kind are.
    pub fn resource(self) -> ApiResource {
        match self {
            ParentKind::Source => ApiResource::erase::<crate::source::Source>(&()),
            ParentKind::Secret => ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&()),
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
        format!(
            "applyset-{}-v1",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash)
        )
    }
}

/// Group-kinds and namespaces the set spans, as recorded on the parent, and the Jobs of the
/// set that finished.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub group_kinds: BTreeSet<String>,
    /// Every namespace holding members (the parent's own included).
    pub namespaces: BTreeSet<String>,
    /// Jobs that completed, by `<namespace>/<name>`, with the content hash they completed
    /// with ([`applyset::FINISHED_JOBS_ANNOTATION`]).
    pub finished_jobs: BTreeMap<String, String>,
}

impl Inventory {
    /// Both sets' kinds and namespaces; the finished Jobs of `self` with those of `other` on
    /// top.
    pub fn union(&self, other: &Inventory) -> Inventory {
        let mut finished_jobs = self.finished_jobs.clone();
        finished_jobs.extend(other.finished_jobs.clone());
        Inventory {
            group_kinds: self
                .group_kinds
                .union(&other.group_kinds)
                .cloned()
                .collect(),
            namespaces: self.namespaces.union(&other.namespaces).cloned().collect(),
            finished_jobs,
        }
    }
}

/// How a Job is named in [`Inventory::finished_jobs`].
pub fn job_record_key(key: &ObjectKey) -> String {
    format!("{}/{}", key.namespace.as_deref().unwrap_or(""), key.name)
}

/// Object keys are boxed: unboxed, they would make every `Result` that carries this error
/// (and the sync and reconcile errors around it) large.
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
    IdMismatch {
        parent: String,
        found: String,
        expected: String,
    },
    #[error("{action} ApplySet parent {parent}: {}", api_error::message(.source))]
    Parent {
        action: &'static str,
        parent: String,
        source: kube::Error,
    },
    #[error("listing members of kind {group_kind} for prune: {}", api_error::message(.source))]
    List {
        group_kind: String,
        source: kube::Error,
    },
    #[error("pruning {object}: {}; it stays in the inventory and prune retries next time", api_error::message(.source))]
    Delete {
        object: Box<ObjectKey>,
        source: kube::Error,
    },
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
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
pub async fn read_recorded(
    client: &Client,
    parent: &ApplySetParent,
) -> Result<Recorded, InventoryError> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &parent.namespace, &parent.resource());
    let obj = match api.get_opt(&parent.name).await {
        Ok(Some(o)) => o,
        Ok(None) if parent.kind == ParentKind::Secret => return Ok(Recorded::default()),
        Ok(None) => {
            return Err(InventoryError::ParentMissing {
                parent: parent.to_string(),
            });
        }
        Err(source) => {
            return Err(InventoryError::Parent {
                action: "reading",
                parent: parent.to_string(),
                source,
            });
        }
    };
    recorded_on(
        parent,
        &obj.metadata.labels.unwrap_or_default(),
        &obj.metadata.annotations.unwrap_or_default(),
    )
}

/// What an existing parent with these labels and annotations records, or why berth may not
/// use it as this set's parent.
fn recorded_on(
    parent: &ApplySetParent,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Result<Recorded, InventoryError> {
    if let Some(tooling) = annotations.get(TOOLING_ANNOTATION) {
        if !applyset::is_berth_tooling(tooling) {
            return Err(InventoryError::OtherTooling {
                parent: parent.to_string(),
                tooling: tooling.clone(),
            });
        }
    } else if parent.kind == ParentKind::Secret {
        // An unrelated Secret of that name: never adopt it, its data is someone else's.
        return Err(InventoryError::OtherTooling {
            parent: parent.to_string(),
            tooling: "(none)".into(),
        });
    }
    if let Some(found) = labels.get(ID_LABEL).filter(|found| **found != parent.id()) {
        return Err(InventoryError::IdMismatch {
            parent: parent.to_string(),
            found: found.clone(),
            expected: parent.id(),
        });
    }
    let labelled = annotations.get(TOOLING_ANNOTATION) == Some(&tooling())
        && labels.get(ID_LABEL) == Some(&parent.id());
    Ok(Recorded {
        inventory: parse(annotations, &parent.namespace),
        labelled,
    })
}

fn split_list(value: Option<&String>) -> impl Iterator<Item = String> + '_ {
    value
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn parse(annotations: &BTreeMap<String, String>, parent_namespace: &str) -> Inventory {
    let group_kinds = split_list(annotations.get(GROUP_KINDS_ANNOTATION)).collect();
    let mut namespaces: BTreeSet<String> =
        split_list(annotations.get(ADDITIONAL_NAMESPACES_ANNOTATION)).collect();
    namespaces.insert(parent_namespace.to_string());
    // A record berth cannot read (edited by hand) is treated as empty: at worst a finished
    // Job that is gone runs once more.
    let finished_jobs = annotations
        .get(FINISHED_JOBS_ANNOTATION)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default();
    Inventory {
        group_kinds,
        namespaces,
        finished_jobs,
    }
}

/// The parent's ApplySet metadata for `inv`, as annotations.
fn annotations(inv: &Inventory, parent_namespace: &str) -> BTreeMap<String, String> {
    let gks: Vec<&str> = inv.group_kinds.iter().map(String::as_str).collect();
    let nss: Vec<&str> = inv
        .namespaces
        .iter()
        .map(String::as_str)
        .filter(|ns| *ns != parent_namespace)
        .collect();
    let mut out = BTreeMap::from([
        (TOOLING_ANNOTATION.to_string(), tooling()),
        (GROUP_KINDS_ANNOTATION.to_string(), gks.join(",")),
        (ADDITIONAL_NAMESPACES_ANNOTATION.to_string(), nss.join(",")),
    ]);
    // Left out when empty: a set without Jobs keeps the parent kubectl would write.
    if !inv.finished_jobs.is_empty() {
        out.insert(
            FINISHED_JOBS_ANNOTATION.to_string(),
            serde_json::to_string(&inv.finished_jobs).unwrap_or_default(),
        );
    }
    out
}

/// Records `inv` on the parent with server-side apply (a no-op write when unchanged).
pub async fn write(
    client: &Client,
    parent: &ApplySetParent,
    inv: &Inventory,
) -> Result<(), InventoryError> {
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
    let pp = PatchParams::apply(INVENTORY_FIELD_MANAGER)
        .force()
        .validation_ignore();
    api.patch(&parent.name, &pp, &Patch::Apply(&body))
        .await
        .map(|_| ())
        .map_err(|source| InventoryError::Parent {
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
    /// Opted out of prune ([`applyset::PRUNE_ANNOTATION`]).
    pub keep: bool,
    /// The live object as listed (lets the engine skip objects already as desired).
    pub live: DynamicObject,
}

/// Every live member in the group-kinds and namespaces of `scope` (whole objects, paged: one
/// list per kind and namespace instead of one read per object).
/// Kinds no longer served are skipped: no objects of them can exist.
pub async fn list_members(
    client: &Client,
    discovery: &mut ApiDiscovery,
    parent: &ApplySetParent,
    scope: &Inventory,
) -> Result<Vec<Member>, InventoryError> {
    let selector = format!("{PART_OF_LABEL}={}", parent.id());
    // Kinds are resolved first (discovery is cached), then every kind × namespace is listed
    // concurrently: a set spanning many namespaces costs one round trip, not one per list.
    let mut lists = Vec::new();
    for gk in &scope.group_kinds {
        let (group, kind) = applyset::split_group_kind(gk);
        let Some((resource, namespaced)) = discovery.resolve_group_kind(group, kind).await? else {
            tracing::debug!(group_kind = %gk, "kind is not served; it has no members");
            continue;
        };
        let namespaces: Vec<Option<&str>> = if namespaced {
            scope
                .namespaces
                .iter()
                .map(|ns| Some(ns.as_str()))
                .collect()
        } else {
            vec![None]
        };
        for ns in namespaces {
            let api = api_for(client, &resource, ns);
            let kind = GroupKindOf {
                group,
                kind,
                gk,
                resource: resource.clone(),
                namespaced,
            };
            lists.push(list_one(api, kind, &selector));
        }
    }
    let pages: Vec<Vec<Member>> = futures::stream::iter(lists)
        .buffered(MAX_CONCURRENT_LISTS)
        .try_collect()
        .await?;
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

impl GroupKindOf<'_> {
    /// A listed object of this kind as a member of the set (`None` without a name).
    fn member(&self, mut item: DynamicObject) -> Option<Member> {
        let name = item.metadata.name.clone()?;
        // Never compared nor shown, and the bulk of a small object: not kept in memory.
        item.metadata.managed_fields = None;
        Some(Member {
            key: ObjectKey {
                group: self.group.to_string(),
                kind: self.kind.to_string(),
                namespace: item.metadata.namespace.clone(),
                name,
            },
            resource: self.resource.clone(),
            stage: Stage::of(self.group, self.kind, self.namespaced),
            resource_version: item.metadata.resource_version.clone(),
            keep: applyset::opts_out_of_prune(item.metadata.annotations.as_ref()),
            live: item,
        })
    }
}

/// Members of one kind in one namespace (or cluster-wide), page by page.
async fn list_one(
    api: Api<DynamicObject>,
    of: GroupKindOf<'_>,
    selector: &str,
) -> Result<Vec<Member>, InventoryError> {
    let mut members = Vec::new();
    let mut lp = ListParams::default().labels(selector).limit(LIST_PAGE_SIZE);
    loop {
        let page = api.list(&lp).await.map_err(|source| InventoryError::List {
            group_kind: of.gk.clone(),
            source,
        })?;
        members.extend(page.items.into_iter().filter_map(|item| of.member(item)));
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
    let mut doomed: Vec<Member> = members
        .iter()
        .filter(|m| !m.keep && !keep.contains(&m.key))
        .cloned()
        .collect();
    doomed.sort_by(|a, b| b.stage.cmp(&a.stage).then_with(|| a.key.cmp(&b.key)));
    doomed
}

/// What prune did to one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pruned {
    /// Deleted (or already gone).
    Deleted(ObjectKey),
    /// Deleted, but its finalizers keep it in the cluster until their controllers let go.
    /// Prune does not wait for them; the set keeps covering the object until it is gone.
    Terminating {
        object: ObjectKey,
        finalizers: Vec<String>,
    },
}

impl Pruned {
    pub fn key(&self) -> &ObjectKey {
        match self {
            Pruned::Deleted(k) | Pruned::Terminating { object: k, .. } => k,
        }
    }
}

/// Deletes `doomed` stage by stage (namespaced objects first, CRDs last) with background
/// propagation, without waiting for finalizers.
pub async fn delete_members(
    client: &Client,
    doomed: &[Member],
) -> Result<Vec<Pruned>, InventoryError> {
    let mut pruned = Vec::with_capacity(doomed.len());
    for stage in Stage::APPLY_ORDER.into_iter().rev() {
        let futures: Vec<_> = doomed
            .iter()
            .filter(|m| m.stage == stage)
            .map(|m| delete(client, m))
            .collect();
        let done: Vec<Pruned> = futures::stream::iter(futures)
            .buffer_unordered(MAX_CONCURRENT_DELETES)
            .try_collect()
            .await?;
        pruned.extend(done);
    }
    Ok(pruned)
}

async fn delete(client: &Client, m: &Member) -> Result<Pruned, InventoryError> {
    let api = api_for(client, &m.resource, m.key.namespace.as_deref());
    match api.delete(&m.key.name, &DeleteParams::background()).await {
        // The server answers with the object when it still exists: finalizers hold it.
        Ok(answer) => match answer
            .left()
            .map(|o| finalizers(&o))
            .filter(|f| !f.is_empty())
        {
            Some(finalizers) => {
                tracing::info!(object = %m.key, finalizers = %finalizers.join(","), "pruned; waiting on finalizers");
                Ok(Pruned::Terminating {
                    object: m.key.clone(),
                    finalizers,
                })
            }
            None => {
                tracing::info!(object = %m.key, "pruned");
                Ok(Pruned::Deleted(m.key.clone()))
            }
        },
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Pruned::Deleted(m.key.clone())),
        Err(source) => Err(InventoryError::Delete {
            object: Box::new(m.key.clone()),
            source,
        }),
    }
}

fn finalizers(o: &DynamicObject) -> Vec<String> {
    o.metadata.finalizers.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_matches_kubectl_for_a_secret_parent() {
        // Cross-checked with an independent implementation (Python's hashlib + base64).
        let p = ApplySetParent {
            kind: ParentKind::Secret,
            name: "demo".into(),
            namespace: "default".into(),
        };
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
            Ok(o) if o.status.success() => {
                format!("applyset-{}-v1", String::from_utf8_lossy(&o.stdout).trim())
            }
            other => panic!("shell tools for the cross-check failed: {other:?}"),
        }
    }

    #[test]
    fn source_parent_id_uses_group_and_kind() {
        let p = ApplySetParent {
            kind: ParentKind::Source,
            name: "shop".into(),
            namespace: "apps".into(),
        };
        assert_eq!(p.id(), expected_id("shop.apps.Source.berth.dev"));
    }

    #[test]
    fn parent_resources_are_the_source_crd_and_secrets() {
        let r = ParentKind::Source.resource();
        assert_eq!(
            (r.api_version.as_str(), r.kind.as_str(), r.plural.as_str()),
            ("berth.dev/v1alpha1", "Source", "sources")
        );
        let r = ParentKind::Secret.resource();
        assert_eq!(
            (r.api_version.as_str(), r.kind.as_str(), r.plural.as_str()),
            ("v1", "Secret", "secrets")
        );
        let p = ApplySetParent {
            kind: ParentKind::Source,
            name: "shop".into(),
            namespace: "apps".into(),
        };
        assert_eq!(p.to_string(), "sources.berth.dev/shop in namespace apps");
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_parent_of_other_tooling_or_another_set_is_refused() {
        let source = ApplySetParent {
            kind: ParentKind::Source,
            name: "shop".into(),
            namespace: "apps".into(),
        };
        let secret = ApplySetParent {
            kind: ParentKind::Secret,
            ..source.clone()
        };
        let none = BTreeMap::new();
        let kubectl = map(&[(TOOLING_ANNOTATION, "kubectl/v1.31.0")]);
        for parent in [&source, &secret] {
            let e = recorded_on(parent, &none, &kubectl).err();
            assert!(
                matches!(&e, Some(InventoryError::OtherTooling { tooling, .. }) if tooling == "kubectl/v1.31.0"),
                "{e:?}"
            );
            let ours = map(&[(TOOLING_ANNOTATION, "berth/v0.0.1")]);
            let e = recorded_on(parent, &map(&[(ID_LABEL, "applyset-other-v1")]), &ours).err();
            assert!(
                matches!(&e, Some(InventoryError::IdMismatch { found, .. }) if found == "applyset-other-v1"),
                "{e:?}"
            );
        }
        // A Source is the set's parent by its nature; a Secret without berth's tooling is
        // someone else's, and its data is never adopted.
        assert_eq!(
            recorded_on(&source, &none, &none).ok(),
            Some(Recorded {
                inventory: Inventory {
                    group_kinds: BTreeSet::new(),
                    namespaces: ["apps".to_string()].into(),
                    finished_jobs: BTreeMap::new(),
                },
                labelled: false,
            })
        );
        let e = recorded_on(&secret, &none, &none).err();
        assert!(
            matches!(&e, Some(InventoryError::OtherTooling { tooling, .. }) if tooling == "(none)"),
            "{e:?}"
        );
    }

    #[test]
    fn a_parent_is_labelled_only_with_this_version_and_the_set_id() {
        let parent = ApplySetParent {
            kind: ParentKind::Secret,
            name: "demo".into(),
            namespace: "default".into(),
        };
        let inv = Inventory {
            group_kinds: ["ConfigMap".to_string()].into(),
            namespaces: ["default".to_string()].into(),
            ..Inventory::default()
        };
        let id = map(&[(ID_LABEL, &parent.id())]);
        let current = recorded_on(&parent, &id, &annotations(&inv, "default"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(current.labelled && current.holds(&inv));
        let wider = Inventory {
            namespaces: ["default", "shop"].map(String::from).into(),
            ..inv.clone()
        };
        assert!(!current.holds(&wider), "another inventory is written");
        let mut older = annotations(&inv, "default");
        older.insert(TOOLING_ANNOTATION.into(), "berth/v0.0.1".into());
        let old = recorded_on(&parent, &id, &older).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !old.labelled && !old.holds(&inv),
            "an older berth's parent is rewritten"
        );
        let unlabelled = recorded_on(&parent, &BTreeMap::new(), &annotations(&inv, "default"));
        assert!(
            unlabelled.is_ok_and(|r| !r.holds(&inv)),
            "the id label is added"
        );
    }

    fn member(
        group: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        annotations: &[(&str, &str)],
    ) -> Member {
        let gk = applyset::group_kind(group, kind);
        let resource = ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(group, "v1", kind));
        let of = GroupKindOf {
            group,
            kind,
            gk: &gk,
            resource: resource.clone(),
            namespaced: namespace.is_some(),
        };
        let mut live = DynamicObject::new(name, &resource);
        live.metadata.namespace = namespace.map(String::from);
        live.metadata.annotations = Some(map(annotations));
        live.metadata.resource_version = Some("7".into());
        live.metadata.managed_fields = Some(vec![Default::default()]);
        of.member(live)
            .unwrap_or_else(|| panic!("{name} has a name"))
    }

    #[test]
    fn a_listed_member_keeps_its_identity_stage_and_opt_out() {
        let m = member(
            "apps",
            "Deployment",
            Some("shop"),
            "web",
            &[(applyset::PRUNE_ANNOTATION, "disabled")],
        );
        assert_eq!(m.key.to_string(), "Deployment.apps shop/web");
        assert_eq!(
            (m.stage, m.keep, m.resource_version.as_deref()),
            (Stage::Namespaced, true, Some("7"))
        );
        assert!(
            m.live.metadata.managed_fields.is_none(),
            "managedFields are not kept"
        );
        let ns = member(
            "",
            "Namespace",
            None,
            "shop",
            &[(applyset::PRUNE_ANNOTATION, "enabled")],
        );
        assert_eq!((ns.stage, ns.keep), (Stage::Namespaces, false));
        let resource =
            ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk("", "v1", "ConfigMap"));
        let gk = "ConfigMap".to_string();
        let of = GroupKindOf {
            group: "",
            kind: "ConfigMap",
            gk: &gk,
            resource: resource.clone(),
            namespaced: true,
        };
        let mut nameless = DynamicObject::new("", &resource);
        nameless.metadata.name = None;
        assert!(of.member(nameless).is_none());
    }

    #[test]
    fn prune_deletes_what_left_the_artifact_unless_opted_out_workloads_first_crds_last() {
        let opt_out = [(applyset::PRUNE_ANNOTATION, "disabled")];
        let members = [
            member(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                None,
                "widgets.example.com",
                &[],
            ),
            member("", "Namespace", None, "shop", &[]),
            member("", "ConfigMap", Some("shop"), "b", &[]),
            member(
                "rbac.authorization.k8s.io",
                "ClusterRole",
                None,
                "reader",
                &[],
            ),
            member("", "ConfigMap", Some("shop"), "kept", &opt_out),
            member("", "ConfigMap", Some("shop"), "still-there", &[]),
            member("", "ConfigMap", Some("admin"), "z", &[]),
            member("example.com", "Widget", Some("shop"), "w", &[]),
        ];
        let in_artifact: BTreeSet<ObjectKey> = members
            .iter()
            .filter(|m| m.key.name == "still-there")
            .map(|m| m.key.clone())
            .collect();
        let doomed: Vec<String> = prune_candidates(&members, &in_artifact)
            .into_iter()
            .map(|m| m.key.to_string())
            .collect();
        assert_eq!(
            doomed,
            [
                "ConfigMap admin/z",
                "ConfigMap shop/b",
                "Widget.example.com shop/w",
                "ClusterRole.rbac.authorization.k8s.io reader",
                "Namespace shop",
                "CustomResourceDefinition.apiextensions.k8s.io widgets.example.com",
            ]
        );
        assert!(prune_candidates(&members[4..6], &in_artifact).is_empty());
    }

    #[test]
    fn annotations_leave_out_the_parent_namespace_and_sort() {
        let inv = Inventory {
            group_kinds: ["Deployment.apps", "ConfigMap", "Namespace"]
                .map(String::from)
                .into(),
            namespaces: ["shop", "default", "admin"].map(String::from).into(),
            ..Inventory::default()
        };
        let a = annotations(&inv, "default");
        assert_eq!(
            a[GROUP_KINDS_ANNOTATION],
            "ConfigMap,Deployment.apps,Namespace"
        );
        assert_eq!(a[ADDITIONAL_NAMESPACES_ANNOTATION], "admin,shop");
        assert!(a[TOOLING_ANNOTATION].starts_with("berth/v"));
        assert!(
            !a.contains_key(FINISHED_JOBS_ANNOTATION),
            "no Jobs, no record: the parent stays as kubectl would write it"
        );
        assert_eq!(parse(&a, "default"), inv);
    }

    #[test]
    fn finished_jobs_are_recorded_on_the_parent_and_read_back() {
        let inv = Inventory {
            group_kinds: ["Job.batch".to_string()].into(),
            namespaces: ["default".to_string()].into(),
            finished_jobs: BTreeMap::from([("default/migrate".into(), "0123456789abcdef".into())]),
        };
        let mut a = annotations(&inv, "default");
        assert_eq!(
            a[FINISHED_JOBS_ANNOTATION],
            r#"{"default/migrate":"0123456789abcdef"}"#
        );
        assert_eq!(parse(&a, "default"), inv);
        a.insert(FINISHED_JOBS_ANNOTATION.into(), "not json".into());
        assert!(
            parse(&a, "default").finished_jobs.is_empty(),
            "an unreadable record is an empty one"
        );
        let later = Inventory {
            finished_jobs: BTreeMap::from([("default/migrate".into(), "fedcba9876543210".into())]),
            ..Inventory::default()
        };
        assert_eq!(
            inv.union(&later).finished_jobs["default/migrate"],
            "fedcba9876543210",
            "the newer record wins"
        );
    }
}
