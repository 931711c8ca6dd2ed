//! One object, one ApplySet. Every berth set applies with the same field manager, so
//! server-side apply sees no conflict when a second set sends an object the first one holds:
//! it would relabel the object as its own, the first set would take it back on its next
//! apply, and each would prune it when it left the other. So an object that is a live member
//! of another set (its `part-of` label names another id) is never applied, with or without
//! force. Owns finding such objects before anything is written, and naming the other set's
//! parent for the error.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use futures::{StreamExt, TryStreamExt};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::PartialObjectMeta;

use crate::api_error;
use crate::applyset::{ID_LABEL, PART_OF_LABEL, PRUNE_ANNOTATION, PRUNE_DISABLED};
use crate::discovery::api_for;
use crate::inventory::{LIST_PAGE_SIZE, MAX_CONCURRENT_LISTS, ParentKind};
use crate::plan::{ObjectKey, PlannedObject};

/// Objects of another set spelled out in one error message; the rest are counted.
pub const MAX_CLAIMS_SHOWN: usize = 10;

/// A planned object that is a live member of another ApplySet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub object: ObjectKey,
    pub origin: String,
    /// The other set's id (the object's `part-of` label).
    pub other_set: String,
    /// The other set's parent, e.g. `Source team-a/shop`, when it could be found.
    pub parent: Option<String>,
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}) is a member of ", self.object, self.origin)?;
        match &self.parent {
            Some(p) => write!(f, "{p}'s ApplySet ({})", self.other_set),
            None => write!(f, "ApplySet {}", self.other_set),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error(
        "{} object(s) already belong to another ApplySet, nothing was applied: {}{}; an object belongs to one set only, and force does not change that: remove it from this artifact, or release it from the other set first (drop it from that set with the annotation {PRUNE_ANNOTATION}: {PRUNE_DISABLED}, then remove its label {PART_OF_LABEL})",
        .claims.len(), list(.claims), more(.claims.len())
    )]
    Claimed { claims: Vec<Claim> },
    #[error("checking whether objects of kind {group_kind} belong to another ApplySet: {}", api_error::message(.source))]
    List {
        group_kind: String,
        source: kube::Error,
    },
}

impl OwnershipError {
    /// Whether the API server gave no answer at all.
    pub fn unreachable(&self) -> bool {
        matches!(self, OwnershipError::List { source, .. } if api_error::is_unreachable(source))
    }

    /// Whether the agent may not list the objects it was about to apply.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, OwnershipError::List { source: kube::Error::Api(s), .. } if s.code == 403)
    }
}

fn list(claims: &[Claim]) -> String {
    claims
        .iter()
        .take(MAX_CLAIMS_SHOWN)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn more(total: usize) -> String {
    if total > MAX_CLAIMS_SHOWN {
        format!(" (and {} more)", total - MAX_CLAIMS_SHOWN)
    } else {
        String::new()
    }
}

/// One list request: (group, version, plural, namespace).
type ListScope = (String, String, String, Option<String>);

/// Refuses `objects` if any of them is a live member of a set other than `own_id`. One
/// metadata list per kind and namespace, selecting only members of other sets; objects whose
/// kind is not served yet cannot exist and are skipped. Reads only, as `client`.
pub async fn check(
    client: &Client,
    objects: &[&PlannedObject],
    own_id: &str,
) -> Result<(), OwnershipError> {
    let selector = other_sets_selector(own_id);
    let lists: Vec<_> = by_list(objects)
        .into_values()
        .map(|(resource, planned)| {
            let selector = selector.as_str();
            async move {
                let api = api_for(client, &resource, planned[0].key.namespace.as_deref());
                let foreign =
                    list_foreign(&api, selector)
                        .await
                        .map_err(|source| OwnershipError::List {
                            group_kind: planned[0].key.group_kind(),
                            source,
                        })?;
                Ok::<_, OwnershipError>(claims_in(planned, &foreign))
            }
        })
        .collect();
    let mut claims: Vec<Claim> = futures::stream::iter(lists)
        .buffer_unordered(MAX_CONCURRENT_LISTS)
        .try_collect::<Vec<_>>()
        .await?
        .concat();
    if claims.is_empty() {
        return Ok(());
    }
    claims.sort_by(|a, b| {
        a.origin
            .cmp(&b.origin)
            .then_with(|| a.object.cmp(&b.object))
    });
    let namespaces: BTreeSet<String> = claims
        .iter()
        .filter_map(|c| c.object.namespace.clone())
        .collect();
    let ids: BTreeSet<String> = claims.iter().map(|c| c.other_set.clone()).collect();
    let mut parents = BTreeMap::new();
    for id in ids {
        if let Some(p) = parent_of(client, &id, &namespaces).await {
            parents.insert(id, p);
        }
    }
    for c in &mut claims {
        c.parent = parents.get(&c.other_set).cloned();
    }
    Err(OwnershipError::Claimed { claims })
}

/// Members of any set but `own_id`: objects with a `part-of` label naming another id.
fn other_sets_selector(own_id: &str) -> String {
    format!("{PART_OF_LABEL},{PART_OF_LABEL}!={own_id}")
}

/// `objects` by the list request that finds them: one per resource and namespace. Objects
/// whose kind is not served yet cannot exist, and are left out.
fn by_list<'a>(
    objects: &[&'a PlannedObject],
) -> BTreeMap<ListScope, (ApiResource, Vec<&'a PlannedObject>)> {
    let mut lists: BTreeMap<ListScope, (ApiResource, Vec<&PlannedObject>)> = BTreeMap::new();
    for o in objects.iter().filter(|o| !o.kind_from_plan) {
        let r = &o.resource;
        lists
            .entry((
                r.group.clone(),
                r.version.clone(),
                r.plural.clone(),
                o.key.namespace.clone(),
            ))
            .or_insert_with(|| (r.clone(), Vec::new()))
            .1
            .push(o);
    }
    lists
}

/// Claims on the `planned` objects (of one list) that `foreign` (name → other set's id, from
/// that list) holds.
fn claims_in(planned: Vec<&PlannedObject>, foreign: &BTreeMap<String, String>) -> Vec<Claim> {
    planned
        .into_iter()
        .filter_map(|o| {
            foreign.get(&o.key.name).map(|other| Claim {
                object: o.key.clone(),
                origin: o.origin.clone(),
                other_set: other.clone(),
                parent: None,
            })
        })
        .collect()
}

/// Name → `part-of` value of the objects `api` lists with `selector`, page by page.
async fn list_foreign(
    api: &Api<DynamicObject>,
    selector: &str,
) -> Result<BTreeMap<String, String>, kube::Error> {
    let mut out = BTreeMap::new();
    let mut lp = ListParams::default().labels(selector).limit(LIST_PAGE_SIZE);
    loop {
        let page = api.list_metadata(&lp).await?;
        for item in page.items {
            if let (Some(name), Some(set)) = (
                item.metadata.name,
                item.metadata
                    .labels
                    .and_then(|mut l| l.remove(PART_OF_LABEL)),
            ) {
                out.insert(name, set);
            }
        }
        match page.metadata.continue_.as_deref() {
            Some(token) if !token.is_empty() => lp = lp.continue_token(token),
            _ => break,
        }
    }
    Ok(out)
}

/// The parent of set `id`, found by its id label: a Source anywhere, else a Secret (the
/// parent of `berth-agent apply` and of kubectl's sets) in one of `namespaces`. Best effort:
/// any failure (no rights, no Source CRD) leaves the set named by its id alone.
async fn parent_of(client: &Client, id: &str, namespaces: &BTreeSet<String>) -> Option<String> {
    let lp = ListParams::default()
        .labels(&format!("{ID_LABEL}={id}"))
        .limit(1);
    let sources: Api<DynamicObject> = Api::all_with(client.clone(), &ParentKind::Source.resource());
    let named = |kind: &str, items: Vec<PartialObjectMeta<DynamicObject>>| {
        items.into_iter().next().and_then(|p| {
            Some(format!(
                "{kind} {}/{}",
                p.metadata.namespace.unwrap_or_default(),
                p.metadata.name?
            ))
        })
    };
    if let Ok(found) = sources.list_metadata(&lp).await
        && let Some(p) = named(crate::source::KIND, found.items)
    {
        return Some(p);
    }
    let secret = ParentKind::Secret.resource();
    for ns in namespaces {
        let secrets: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &secret);
        if let Ok(found) = secrets.list_metadata(&lp).await
            && let Some(p) = named("Secret", found.items)
        {
            return Some(p);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(parent: Option<&str>) -> Claim {
        Claim {
            object: ObjectKey {
                group: String::new(),
                kind: "ConfigMap".into(),
                namespace: Some("a".into()),
                name: "x".into(),
            },
            origin: "cm.yaml:1".into(),
            other_set: "applyset-abc-v1".into(),
            parent: parent.map(String::from),
        }
    }

    #[test]
    fn a_claim_names_object_origin_and_the_other_set() {
        assert_eq!(
            claim(Some("Source a/shop")).to_string(),
            "ConfigMap a/x (cm.yaml:1) is a member of Source a/shop's ApplySet (applyset-abc-v1)"
        );
        assert_eq!(
            claim(None).to_string(),
            "ConfigMap a/x (cm.yaml:1) is a member of ApplySet applyset-abc-v1"
        );
        let e = OwnershipError::Claimed {
            claims: vec![claim(None)],
        }
        .to_string();
        assert!(
            e.starts_with(
                "1 object(s) already belong to another ApplySet, nothing was applied: ConfigMap a/x"
            ),
            "{e}"
        );
        assert!(e.contains("force does not change that"), "{e}");
    }

    #[test]
    fn members_of_other_sets_are_selected_by_their_part_of_label() {
        assert_eq!(
            other_sets_selector("applyset-own-v1"),
            "applyset.kubernetes.io/part-of,applyset.kubernetes.io/part-of!=applyset-own-v1"
        );
    }

    #[test]
    fn one_list_per_resource_and_namespace_and_none_for_kinds_not_served_yet() {
        let planned = |group, kind, ns, name| PlannedObject::for_test(group, "v1", kind, ns, name);
        let widget = PlannedObject {
            kind_from_plan: true,
            ..planned("example.com", "Widget", Some("a"), "w")
        };
        let objects = [
            planned("", "ConfigMap", Some("a"), "c1"),
            planned("", "ConfigMap", Some("b"), "c2"),
            planned("", "ConfigMap", Some("a"), "c3"),
            planned("", "Secret", Some("a"), "s"),
            planned("rbac.authorization.k8s.io", "ClusterRole", None, "r"),
            widget,
        ];
        let refs: Vec<&PlannedObject> = objects.iter().collect();
        let lists: Vec<(String, Option<String>, Vec<&str>)> = by_list(&refs)
            .into_iter()
            .map(|((_, _, plural, ns), (_, objects))| {
                (
                    plural,
                    ns,
                    objects.iter().map(|o| o.key.name.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            lists,
            [
                ("configmaps".into(), Some("a".into()), vec!["c1", "c3"]),
                ("configmaps".into(), Some("b".into()), vec!["c2"]),
                ("secrets".into(), Some("a".into()), vec!["s"]),
                ("clusterroles".into(), None, vec!["r"]),
            ]
        );
    }

    #[test]
    fn only_planned_objects_another_set_holds_are_claimed() {
        let mine = PlannedObject::for_test("", "v1", "ConfigMap", Some("a"), "mine");
        let theirs = PlannedObject::for_test("", "v1", "ConfigMap", Some("a"), "theirs");
        let foreign = BTreeMap::from([
            ("theirs".to_string(), "applyset-other-v1".to_string()),
            ("not-planned".to_string(), "applyset-other-v1".to_string()),
        ]);
        assert_eq!(
            claims_in(vec![&mine, &theirs], &foreign),
            [Claim {
                object: theirs.key.clone(),
                origin: "theirs.yaml:1".into(),
                other_set: "applyset-other-v1".into(),
                parent: None,
            }]
        );
        assert!(claims_in(vec![&mine], &foreign).is_empty());
    }
}
