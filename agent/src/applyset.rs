//! The marks berth puts on a set's objects and the order it handles them in: the ApplySet
//! labels and annotations (KEP-3659, spelled as kubectl spells them, so both tools see the same
//! set), berth's own prune opt-out, the `Kind.group` spelling of the annotations, and the
//! [`Stage`] every kind is applied in. Plan, apply, inventory and ownership all read these
//! here; this module imports no other module of the agent.

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

/// Objects carrying this annotation with the value [`PRUNE_DISABLED`] stay in the cluster
/// when they leave the artifact.
pub const PRUNE_ANNOTATION: &str = "berth.dev/prune";
/// Value of [`PRUNE_ANNOTATION`] that opts an object out of prune.
pub const PRUNE_DISABLED: &str = "disabled";

/// Per-object apply policy, set on the object in the artifact; see [`ApplyPolicy`].
pub const APPLY_ANNOTATION: &str = "berth.dev/apply";

/// Annotation berth puts on every Job it applies: a hash of the Job as the artifact states it,
/// so a Job that is gone can be told apart from one whose manifest changed.
pub const JOB_CONTENT_ANNOTATION: &str = "berth.dev/job-content";

/// Parent annotation: the Jobs of the set that completed, as a JSON object
/// `{"<namespace>/<name>": "<job-content hash>"}`. A Job recorded here with its current content
/// is not created again when it is gone (deleted by its TTL or by hand).
pub const FINISHED_JOBS_ANNOTATION: &str = "berth.dev/finished-jobs";

/// How berth treats one object of the artifact (annotation [`APPLY_ANNOTATION`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApplyPolicy {
    /// Server-side apply on every change and every drift (no annotation).
    #[default]
    Apply,
    /// Create the object when it does not exist; never update it afterwards. It is still a
    /// member of the set (pruned when it leaves the artifact, unless opted out).
    IfNotPresent,
    /// Neither applied nor pruned nor waited for: berth leaves the object alone.
    Ignore,
    /// Apply; when the API server refuses a change of an immutable field, delete the object
    /// (background propagation) and create it again.
    Recreate,
}

impl ApplyPolicy {
    /// The values of [`APPLY_ANNOTATION`] berth accepts, as users write them.
    pub const VALUES: [&'static str; 4] = ["Apply", "IfNotPresent", "Ignore", "Recreate"];

    /// The policy named by an object's annotations; `Err` carries the value berth does not know.
    pub fn of(
        annotations: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<ApplyPolicy, String> {
        match annotations
            .and_then(|a| a.get(APPLY_ANNOTATION))
            .map(String::as_str)
        {
            None | Some("Apply") => Ok(ApplyPolicy::Apply),
            Some("IfNotPresent") => Ok(ApplyPolicy::IfNotPresent),
            Some("Ignore") => Ok(ApplyPolicy::Ignore),
            Some("Recreate") => Ok(ApplyPolicy::Recreate),
            Some(other) => Err(other.to_string()),
        }
    }
}

/// The value of the tooling annotation berth writes.
pub fn tooling() -> String {
    format!("{TOOL_NAME}/v{}", env!("CARGO_PKG_VERSION"))
}

/// Whether the tooling annotation `value` names berth, whatever its version.
pub fn is_berth_tooling(value: &str) -> bool {
    value.rsplit_once('/').map_or(value, |(tool, _)| tool) == TOOL_NAME
}

/// Whether an object with these annotations is kept when it leaves the artifact.
pub fn opts_out_of_prune(annotations: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    annotations
        .and_then(|a| a.get(PRUNE_ANNOTATION))
        .is_some_and(|v| v == PRUNE_DISABLED)
}

/// `Kind.group`, or `Kind` for the core group, as the ApplySet annotations and kubectl spell it.
pub fn group_kind(group: &str, kind: &str) -> String {
    if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    }
}

/// `(group, kind)` of a [`group_kind`] spelling (the core group is empty).
pub fn split_group_kind(group_kind: &str) -> (&str, &str) {
    match group_kind.split_once('.') {
        Some((kind, group)) => (group, kind),
        None => ("", group_kind),
    }
}

/// Apply order. Everything in a stage is applied before the next stage starts; prune deletes
/// in the reverse order (workloads before their namespaces, custom resources before CRDs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// First: every other stage may hold objects of the kinds they define.
    CustomResourceDefinitions,
    /// Before anything that lives in them.
    Namespaces,
    /// Everything else that lives in no namespace (RBAC cluster roles, webhooks, APIServices,
    /// storage classes, …).
    ClusterScoped,
    Namespaced,
}

impl Stage {
    /// Every stage, in apply order.
    pub const APPLY_ORDER: [Stage; 4] = [
        Stage::CustomResourceDefinitions,
        Stage::Namespaces,
        Stage::ClusterScoped,
        Stage::Namespaced,
    ];

    /// The stage objects of `group`/`kind` are applied in.
    pub fn of(group: &str, kind: &str, namespaced: bool) -> Stage {
        match (group, kind, namespaced) {
            ("apiextensions.k8s.io", "CustomResourceDefinition", _) => {
                Stage::CustomResourceDefinitions
            }
            ("", "Namespace", _) => Stage::Namespaces,
            (_, _, false) => Stage::ClusterScoped,
            (_, _, true) => Stage::Namespaced,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_kind_spelling_matches_kubectl() {
        assert_eq!(group_kind("", "ConfigMap"), "ConfigMap");
        assert_eq!(group_kind("apps", "Deployment"), "Deployment.apps");
        assert_eq!(
            group_kind("rbac.authorization.k8s.io", "Role"),
            "Role.rbac.authorization.k8s.io"
        );
        for (group, kind) in [
            ("", "ConfigMap"),
            ("apps", "Deployment"),
            ("rbac.authorization.k8s.io", "Role"),
        ] {
            assert_eq!(split_group_kind(&group_kind(group, kind)), (group, kind));
        }
    }

    #[test]
    fn crds_then_namespaces_then_cluster_kinds_then_namespaced_kinds() {
        let stage = |group, kind, namespaced| Stage::of(group, kind, namespaced);
        assert_eq!(
            stage("apiextensions.k8s.io", "CustomResourceDefinition", false),
            Stage::CustomResourceDefinitions
        );
        assert_eq!(stage("", "Namespace", false), Stage::Namespaces);
        // Webhooks and APIServices get no stage of their own: they go with the other
        // cluster-scoped kinds, after the CRDs and Namespaces and before every namespaced object.
        assert_eq!(
            stage(
                "admissionregistration.k8s.io",
                "ValidatingWebhookConfiguration",
                false
            ),
            Stage::ClusterScoped
        );
        assert_eq!(
            stage("apiregistration.k8s.io", "APIService", false),
            Stage::ClusterScoped
        );
        assert_eq!(
            stage("rbac.authorization.k8s.io", "ClusterRole", false),
            Stage::ClusterScoped
        );
        assert_eq!(stage("", "ConfigMap", true), Stage::Namespaced);
        assert_eq!(
            stage("example.com", "Widget", true),
            Stage::Namespaced,
            "custom resources by their scope"
        );
        // Same kind names in other groups are not special.
        assert_eq!(stage("example.com", "Namespace", true), Stage::Namespaced);
        assert_eq!(
            stage("example.com", "CustomResourceDefinition", false),
            Stage::ClusterScoped
        );
        let mut sorted = Stage::APPLY_ORDER;
        sorted.sort();
        assert_eq!(
            sorted,
            Stage::APPLY_ORDER,
            "the order the stages compare in is the apply order"
        );
    }

    #[test]
    fn only_the_disabled_value_opts_out_of_prune() {
        let with = |v: &str| {
            std::collections::BTreeMap::from([(PRUNE_ANNOTATION.to_string(), v.to_string())])
        };
        assert!(opts_out_of_prune(Some(&with("disabled"))));
        assert!(!opts_out_of_prune(Some(&with("enabled"))));
        assert!(
            !opts_out_of_prune(Some(&with("Disabled"))),
            "values are case-sensitive"
        );
        assert!(!opts_out_of_prune(Some(&Default::default())));
        assert!(!opts_out_of_prune(None));
    }

    #[test]
    fn apply_policies_are_read_from_the_annotation_and_unknown_values_refused() {
        let with = |v: &str| {
            std::collections::BTreeMap::from([(APPLY_ANNOTATION.to_string(), v.to_string())])
        };
        assert_eq!(ApplyPolicy::of(None), Ok(ApplyPolicy::Apply));
        assert_eq!(
            ApplyPolicy::of(Some(&Default::default())),
            Ok(ApplyPolicy::Apply)
        );
        for (value, policy) in ApplyPolicy::VALUES.iter().zip([
            ApplyPolicy::Apply,
            ApplyPolicy::IfNotPresent,
            ApplyPolicy::Ignore,
            ApplyPolicy::Recreate,
        ]) {
            assert_eq!(ApplyPolicy::of(Some(&with(value))), Ok(policy), "{value}");
        }
        assert_eq!(
            ApplyPolicy::of(Some(&with("ifnotpresent"))),
            Err("ifnotpresent".to_string()),
            "values are case-sensitive, like the prune opt-out"
        );
    }

    #[test]
    fn tooling_of_any_berth_version_is_berth() {
        assert!(tooling().starts_with("berth/v"));
        assert!(is_berth_tooling(&tooling()));
        assert!(is_berth_tooling("berth/v0.0.1"));
        assert!(is_berth_tooling("berth"));
        assert!(!is_berth_tooling("kubectl/v1.31.0"));
        assert!(!is_berth_tooling("berth-fork/v1"));
    }
}
