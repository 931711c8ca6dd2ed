//! Tenant lockdown: agent-wide rules an operator sets with flags so that one team's artifact
//! cannot reach beyond what the operator allows, whatever the artifact or the Source says —
//! impersonation of the Source's ServiceAccount (required, or a default), allow/deny lists of
//! kinds and of namespaces, and optionally "only the Source's own namespace". Under any
//! namespace rule, cluster-scoped objects reach past every namespace and are refused unless
//! their kind is allowed by name; under any rule, `Source` objects (which could apply with
//! another identity, or rewrite the Source applying them) are refused unless allowed. The
//! whole planned set is checked before anything is dry-run or applied; one violation refuses
//! all.

use crate::inventory::{ApplySetParent, ParentKind};
use crate::plan::{ApplyPlan, ObjectKey};
use crate::source::Source;

/// Violations listed in one error message; the rest are counted.
pub const MAX_LISTED_VIOLATIONS: usize = 10;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LockdownError {
    #[error(
        "the agent runs with --enforce-impersonation: set spec.serviceAccountName to a ServiceAccount of namespace {namespace} that may apply this Source's objects"
    )]
    ServiceAccountRequired { namespace: String },
    #[error("artifact refused whole by the agent's lockdown rules, nothing was applied: {}{}", .violations.join("; "), more(.total, .violations.len()))]
    Refused {
        violations: Vec<String>,
        total: usize,
    },
    #[error("{flag} {value:?}: {problem}")]
    BadRule {
        flag: &'static str,
        value: String,
        problem: &'static str,
    },
}

fn more(total: &usize, listed: usize) -> String {
    if *total > listed {
        format!(" (and {} more)", total - listed)
    } else {
        String::new()
    }
}

/// `Kind` or `Kind.group` (core group: `Kind` alone, or `Kind.` to mean only the core group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindRule {
    kind: String,
    group: Option<String>,
}

impl KindRule {
    pub fn parse(flag: &'static str, text: &str) -> Result<KindRule, LockdownError> {
        let text = text.trim();
        let bad = |problem| LockdownError::BadRule {
            flag,
            value: text.to_string(),
            problem,
        };
        let (kind, group) = match text.split_once('.') {
            Some((k, g)) => (k, Some(g.to_string())),
            None => (text, None),
        };
        if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(bad(
                "expected Kind or Kind.group, e.g. ClusterRoleBinding.rbac.authorization.k8s.io",
            ));
        }
        Ok(KindRule {
            kind: kind.to_string(),
            group,
        })
    }

    fn matches(&self, key: &ObjectKey) -> bool {
        self.kind == key.kind && self.group.as_ref().is_none_or(|g| *g == key.group)
    }
}

/// A namespace name, or a prefix ending in `*` (`team-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceRule(String);

impl NamespaceRule {
    pub fn parse(flag: &'static str, text: &str) -> Result<NamespaceRule, LockdownError> {
        let text = text.trim();
        let name = text.strip_suffix('*').unwrap_or(text);
        if (name.is_empty() && text != "*")
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(LockdownError::BadRule {
                flag,
                value: text.to_string(),
                problem: "expected a namespace name or a prefix ending in *",
            });
        }
        Ok(NamespaceRule(text.to_string()))
    }

    fn matches(&self, ns: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => ns.starts_with(prefix),
            None => self.0 == ns,
        }
    }
}

/// The rules, from `berth-agent run` flags. Empty allow lists allow everything.
#[derive(Debug, Clone, Default)]
pub struct Lockdown {
    pub enforce_impersonation: bool,
    pub default_service_account: Option<String>,
    pub allow_kinds: Vec<KindRule>,
    pub deny_kinds: Vec<KindRule>,
    pub allow_namespaces: Vec<NamespaceRule>,
    pub deny_namespaces: Vec<NamespaceRule>,
    /// Namespaced objects only in the Source's namespace, and no Namespace objects.
    pub source_namespace_only: bool,
    /// Cluster-scoped kinds an artifact may still contain under a namespace rule (other than
    /// Namespace objects, which the namespace rules judge by their name).
    pub allow_cluster_kinds: Vec<KindRule>,
    /// Artifacts may contain `Source` objects, the Source that applies them included.
    pub allow_sources: bool,
}

impl Lockdown {
    /// True when no rule is set: the agent behaves as without lockdown. The two allowances
    /// (`allow_cluster_kinds`, `allow_sources`) only relax rules and turn nothing on.
    pub fn is_empty(&self) -> bool {
        !self.enforce_impersonation
            && self.default_service_account.is_none()
            && self.allow_kinds.is_empty()
            && self.deny_kinds.is_empty()
            && self.allow_namespaces.is_empty()
            && self.deny_namespaces.is_empty()
            && !self.source_namespace_only
    }

    /// The ServiceAccount the Source's objects are applied as: its own, else the default,
    /// else none (the agent's identity) unless impersonation is enforced.
    pub fn service_account(&self, src: &Source) -> Result<Option<String>, LockdownError> {
        match src
            .spec
            .service_account_name
            .clone()
            .or_else(|| self.default_service_account.clone())
        {
            Some(sa) => Ok(Some(sa)),
            None if self.enforce_impersonation => Err(LockdownError::ServiceAccountRequired {
                namespace: src.metadata.namespace.clone().unwrap_or_default(),
            }),
            None => Ok(None),
        }
    }

    /// The flag that restricts namespaces, if any: under it cluster-scoped objects are
    /// refused unless their kind is allowed by name.
    fn namespace_rule(&self) -> Option<&'static str> {
        if self.source_namespace_only {
            Some("--source-namespace-only")
        } else if !self.allow_namespaces.is_empty() {
            Some("--allow-namespaces")
        } else if !self.deny_namespaces.is_empty() {
            Some("--deny-namespaces")
        } else {
            None
        }
    }

    /// Every object of the plan against every rule; all violations at once, so one fix round
    /// is enough. `parent` is the set the plan is applied to (its namespace is the Source's).
    pub fn check(&self, plan: &ApplyPlan, parent: &ApplySetParent) -> Result<(), LockdownError> {
        let mut violations = Vec::new();
        for o in &plan.objects {
            if let Some(why) = self.violation(&o.key, parent) {
                violations.push(format!("{} ({}): {why}", o.key, o.origin));
            }
        }
        if violations.is_empty() {
            return Ok(());
        }
        let total = violations.len();
        violations.truncate(MAX_LISTED_VIOLATIONS);
        Err(LockdownError::Refused { violations, total })
    }

    fn violation(&self, key: &ObjectKey, parent: &ApplySetParent) -> Option<String> {
        let source_namespace = parent.namespace.as_str();
        if self.deny_kinds.iter().any(|r| r.matches(key)) {
            return Some(format!(
                "kind {} is denied (--deny-kinds)",
                key.group_kind()
            ));
        }
        if !self.allow_kinds.is_empty() && !self.allow_kinds.iter().any(|r| r.matches(key)) {
            return Some(format!(
                "kind {} is not allowed (--allow-kinds)",
                key.group_kind()
            ));
        }
        if !self.allow_sources
            && key.group == crate::source::GROUP
            && key.kind == crate::source::KIND
        {
            let own = parent.kind == ParentKind::Source
                && key.namespace.as_deref() == Some(source_namespace)
                && key.name == parent.name;
            return Some(if own {
                "the artifact contains the Source that applies it, which could rewrite its own rules (--allow-sources)"
                    .into()
            } else {
                "Source objects are not allowed: one could apply with another ServiceAccount (--allow-sources)".into()
            });
        }
        // The namespace an object lives in, or the one a Namespace object creates.
        let namespace = match (&key.namespace, key.group.as_str(), key.kind.as_str()) {
            (Some(ns), _, _) => ns.as_str(),
            (None, "", "Namespace") => {
                if self.source_namespace_only {
                    return Some(
                        "creating namespaces is not allowed (--source-namespace-only)".into(),
                    );
                }
                key.name.as_str()
            }
            // Cluster-scoped: in no namespace, so it escapes every namespace rule (a
            // ClusterRoleBinding, a webhook, a CRD reach all namespaces).
            _ => {
                let rule = self.namespace_rule()?;
                if self.allow_cluster_kinds.iter().any(|r| r.matches(key)) {
                    return None;
                }
                return Some(format!(
                    "cluster-scoped kind {gk} is not allowed under {rule} (allow it by name with --allow-cluster-kinds {gk})",
                    gk = key.group_kind()
                ));
            }
        };
        if self.source_namespace_only && namespace != source_namespace {
            return Some(format!(
                "namespace {namespace} is not the Source's namespace {source_namespace} (--source-namespace-only)"
            ));
        }
        if self.deny_namespaces.iter().any(|r| r.matches(namespace)) {
            return Some(format!(
                "namespace {namespace} is denied (--deny-namespaces)"
            ));
        }
        if !self.allow_namespaces.is_empty()
            && !self.allow_namespaces.iter().any(|r| r.matches(namespace))
        {
            return Some(format!(
                "namespace {namespace} is not allowed (--allow-namespaces)"
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(group: &str, kind: &str, ns: Option<&str>, name: &str) -> ObjectKey {
        ObjectKey {
            group: group.into(),
            kind: kind.into(),
            namespace: ns.map(String::from),
            name: name.into(),
        }
    }

    /// The Source `shop` in namespace `a`.
    fn home() -> ApplySetParent {
        ApplySetParent {
            kind: ParentKind::Source,
            name: "shop".into(),
            namespace: "a".into(),
        }
    }

    fn kinds(flag: &'static str, text: &str) -> Vec<KindRule> {
        text.split(',')
            .map(|k| KindRule::parse(flag, k).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    fn rules() -> Lockdown {
        Lockdown {
            deny_kinds: vec![
                KindRule::parse(
                    "--deny-kinds",
                    "ClusterRoleBinding.rbac.authorization.k8s.io",
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ],
            deny_namespaces: vec![
                NamespaceRule::parse("--deny-namespaces", "kube-*")
                    .unwrap_or_else(|e| panic!("{e}")),
            ],
            ..Lockdown::default()
        }
    }

    #[test]
    fn denied_kinds_and_namespaces_are_violations() {
        let l = rules();
        assert!(
            l.violation(
                &key("rbac.authorization.k8s.io", "ClusterRoleBinding", None, "x"),
                &home()
            )
            .is_some()
        );
        assert!(
            l.violation(
                &key("rbac.authorization.k8s.io", "RoleBinding", Some("a"), "x"),
                &home()
            )
            .is_none()
        );
        assert!(
            l.violation(&key("", "ConfigMap", Some("kube-system"), "x"), &home())
                .is_some()
        );
        assert!(
            l.violation(&key("", "Namespace", None, "kube-public"), &home())
                .is_some(),
            "creating a denied namespace"
        );
        assert!(
            l.violation(&key("", "ConfigMap", Some("team-a"), "x"), &home())
                .is_none()
        );
    }

    #[test]
    fn source_namespace_only_keeps_objects_home() {
        let l = Lockdown {
            source_namespace_only: true,
            ..Lockdown::default()
        };
        assert!(
            l.violation(&key("", "ConfigMap", Some("a"), "x"), &home())
                .is_none()
        );
        assert!(
            l.violation(&key("", "ConfigMap", Some("b"), "x"), &home())
                .is_some()
        );
        assert!(
            l.violation(&key("", "Namespace", None, "a"), &home())
                .is_some()
        );
    }

    #[test]
    fn allow_lists_are_exclusive_when_set() {
        let l = Lockdown {
            allow_kinds: vec![
                KindRule::parse("--allow-kinds", "ConfigMap").unwrap_or_else(|e| panic!("{e}")),
            ],
            ..Lockdown::default()
        };
        assert!(
            l.violation(&key("", "ConfigMap", Some("a"), "x"), &home())
                .is_none()
        );
        assert!(
            l.violation(&key("", "Secret", Some("a"), "x"), &home())
                .is_some()
        );
    }

    #[test]
    fn cluster_scoped_kinds_are_refused_under_any_namespace_rule_unless_allowed_by_name() {
        let crb = key("rbac.authorization.k8s.io", "ClusterRole", None, "x");
        let crd = key(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            None,
            "widgets.example.com",
        );
        let hook = key(
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration",
            None,
            "x",
        );
        assert!(
            Lockdown::default().violation(&crb, &home()).is_none(),
            "no namespace rule, no restriction"
        );
        let restricted = [
            Lockdown {
                source_namespace_only: true,
                ..Lockdown::default()
            },
            Lockdown {
                allow_namespaces: vec![
                    NamespaceRule::parse("--allow-namespaces", "a")
                        .unwrap_or_else(|e| panic!("{e}")),
                ],
                ..Lockdown::default()
            },
            rules(),
        ];
        for l in restricted {
            for k in [&crb, &crd, &hook] {
                let why = l
                    .violation(k, &home())
                    .unwrap_or_else(|| panic!("{k} passed {l:?}"));
                assert!(
                    why.contains("cluster-scoped") && why.contains("--allow-cluster-kinds"),
                    "{why}"
                );
            }
            let allowed = Lockdown {
                allow_cluster_kinds: kinds(
                    "--allow-cluster-kinds",
                    "CustomResourceDefinition.apiextensions.k8s.io",
                ),
                ..l
            };
            assert!(allowed.violation(&crd, &home()).is_none());
            assert!(
                allowed.violation(&crb, &home()).is_some(),
                "only the kind named is allowed"
            );
        }
    }

    #[test]
    fn namespace_objects_are_judged_by_the_namespace_rules_not_as_cluster_kinds() {
        let l = Lockdown {
            allow_namespaces: vec![
                NamespaceRule::parse("--allow-namespaces", "team-*")
                    .unwrap_or_else(|e| panic!("{e}")),
            ],
            ..Lockdown::default()
        };
        assert!(
            l.violation(&key("", "Namespace", None, "team-x"), &home())
                .is_none()
        );
        assert!(
            l.violation(&key("", "Namespace", None, "other"), &home())
                .is_some()
        );
    }

    #[test]
    fn source_objects_are_refused_unless_allowed() {
        let l = Lockdown {
            enforce_impersonation: true,
            ..Lockdown::default()
        };
        let own = l
            .violation(&key("berth.dev", "Source", Some("a"), "shop"), &home())
            .unwrap_or_default();
        assert!(
            own.contains("the Source that applies it") && own.contains("--allow-sources"),
            "{own}"
        );
        let other = l
            .violation(&key("berth.dev", "Source", Some("a"), "other"), &home())
            .unwrap_or_default();
        assert!(
            other.contains("Source objects are not allowed") && other.contains("--allow-sources"),
            "{other}"
        );
        assert!(
            l.violation(&key("example.com", "Source", Some("a"), "x"), &home())
                .is_none(),
            "another group"
        );
        let allowed = Lockdown {
            allow_sources: true,
            ..l
        };
        assert!(
            allowed
                .violation(&key("berth.dev", "Source", Some("a"), "shop"), &home())
                .is_none()
        );
    }

    #[test]
    fn every_violation_is_listed_with_its_origin() {
        let l = Lockdown {
            source_namespace_only: true,
            ..Lockdown::default()
        };
        let object = |name: &str, origin: &str| crate::plan::PlannedObject {
            origin: origin.into(),
            ..crate::plan::PlannedObject::for_test(
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRole",
                None,
                name,
            )
        };
        let plan = ApplyPlan {
            objects: vec![object("r1", "roles.yaml:1"), object("r2", "roles.yaml:9")],
        };
        let e = l
            .check(&plan, &home())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("ClusterRole.rbac.authorization.k8s.io r1 (roles.yaml:1)"),
            "{e}"
        );
        assert!(
            e.contains("ClusterRole.rbac.authorization.k8s.io r2 (roles.yaml:9)"),
            "{e}"
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(KindRule::parse("--deny-kinds", "").is_err());
        assert!(KindRule::parse("--deny-kinds", "cluster role").is_err());
        assert!(NamespaceRule::parse("--deny-namespaces", "Kube_System").is_err());
    }

    #[test]
    fn a_denied_kind_stays_denied_when_also_allowed() {
        let l = Lockdown {
            allow_kinds: kinds("--allow-kinds", "ConfigMap,Secret"),
            deny_kinds: kinds("--deny-kinds", "Secret"),
            ..Lockdown::default()
        };
        let why = l
            .violation(&key("", "Secret", Some("a"), "x"), &home())
            .unwrap_or_default();
        assert_eq!(why, "kind Secret is denied (--deny-kinds)");
        assert!(
            l.violation(&key("", "ConfigMap", Some("a"), "x"), &home())
                .is_none()
        );
    }

    #[test]
    fn a_kind_rule_without_group_matches_every_group_and_a_trailing_dot_only_the_core_group() {
        let any = kinds("--deny-kinds", "Service");
        let core = kinds("--deny-kinds", "Service.");
        let serving = key("serving.knative.dev", "Service", Some("a"), "x");
        let plain = key("", "Service", Some("a"), "x");
        assert!(any[0].matches(&serving) && any[0].matches(&plain));
        assert!(core[0].matches(&plain) && !core[0].matches(&serving));
        let grouped = kinds("--deny-kinds", "Deployment.apps");
        assert!(grouped[0].matches(&key("apps", "Deployment", Some("a"), "x")));
        assert!(!grouped[0].matches(&key("extensions", "Deployment", Some("a"), "x")));
        assert!(
            !grouped[0].matches(&key("apps", "StatefulSet", Some("a"), "x")),
            "kinds match whole"
        );
    }

    #[test]
    fn namespace_rules_match_a_name_or_a_prefix() {
        let rule = |text| {
            NamespaceRule::parse("--allow-namespaces", text).unwrap_or_else(|e| panic!("{e}"))
        };
        assert!(rule("team-*").matches("team-a") && rule("team-*").matches("team-"));
        assert!(!rule("team-*").matches("teams") && !rule("team-*").matches("other-team-a"));
        assert!(
            rule("shop").matches("shop") && !rule("shop").matches("shop-2"),
            "a name is not a prefix"
        );
        assert!(rule("*").matches("anything"));
    }

    #[test]
    fn the_allowances_alone_turn_no_lockdown_on() {
        assert!(Lockdown::default().is_empty());
        let relaxed = Lockdown {
            allow_sources: true,
            allow_cluster_kinds: kinds("--allow-cluster-kinds", "ClusterRole"),
            ..Lockdown::default()
        };
        assert!(relaxed.is_empty());
        let rules = [
            Lockdown {
                enforce_impersonation: true,
                ..Lockdown::default()
            },
            Lockdown {
                default_service_account: Some("deployer".into()),
                ..Lockdown::default()
            },
            Lockdown {
                allow_kinds: kinds("--allow-kinds", "ConfigMap"),
                ..Lockdown::default()
            },
            Lockdown {
                deny_kinds: kinds("--deny-kinds", "Secret"),
                ..Lockdown::default()
            },
            Lockdown {
                source_namespace_only: true,
                ..Lockdown::default()
            },
            rules(),
        ];
        for l in rules {
            assert!(!l.is_empty(), "{l:?}");
        }
    }

    fn source(service_account: Option<&str>) -> Source {
        let mut spec = serde_json::json!({"url": "oci://registry.example/shop", "ref": {"tag": "1"}, "verify": {}});
        if let Some(sa) = service_account {
            spec["serviceAccountName"] = sa.into();
        }
        let v = serde_json::json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Source",
            "metadata": {"name": "shop", "namespace": "a"}, "spec": spec});
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn objects_are_applied_as_the_sources_account_else_the_default_else_the_agent_unless_enforced()
    {
        let default = Lockdown {
            default_service_account: Some("deployer".into()),
            ..Lockdown::default()
        };
        let enforced = Lockdown {
            enforce_impersonation: true,
            ..Lockdown::default()
        };
        assert_eq!(
            default.service_account(&source(Some("own"))),
            Ok(Some("own".into()))
        );
        assert_eq!(
            default.service_account(&source(None)),
            Ok(Some("deployer".into()))
        );
        assert_eq!(Lockdown::default().service_account(&source(None)), Ok(None));
        assert_eq!(
            enforced.service_account(&source(Some("own"))),
            Ok(Some("own".into()))
        );
        assert_eq!(
            enforced.service_account(&source(None)),
            Err(LockdownError::ServiceAccountRequired {
                namespace: "a".into()
            })
        );
        let both = Lockdown {
            default_service_account: Some("deployer".into()),
            ..enforced
        };
        assert_eq!(
            both.service_account(&source(None)),
            Ok(Some("deployer".into())),
            "a default satisfies enforcement"
        );
    }

    #[test]
    fn long_violation_lists_are_cut_and_counted() {
        let l = Lockdown {
            source_namespace_only: true,
            ..Lockdown::default()
        };
        let plan = ApplyPlan {
            objects: (0..MAX_LISTED_VIOLATIONS + 3)
                .map(|i| {
                    crate::plan::PlannedObject::for_test(
                        "",
                        "v1",
                        "ConfigMap",
                        Some("b"),
                        &format!("c{i}"),
                    )
                })
                .chain([crate::plan::PlannedObject::for_test(
                    "",
                    "v1",
                    "ConfigMap",
                    Some("a"),
                    "home",
                )])
                .collect(),
        };
        match l.check(&plan, &home()) {
            Err(LockdownError::Refused { violations, total }) => {
                assert_eq!(
                    (violations.len(), total),
                    (MAX_LISTED_VIOLATIONS, MAX_LISTED_VIOLATIONS + 3)
                );
                assert_eq!(
                    violations[0],
                    "ConfigMap b/c0 (c0.yaml:1): namespace b is not the Source's namespace a (--source-namespace-only)"
                );
            }
            other => panic!("{other:?}"),
        }
        let e = l
            .check(&plan, &home())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.ends_with(" (and 3 more)"), "{e}");
        let home_only = ApplyPlan {
            objects: plan.objects[MAX_LISTED_VIOLATIONS + 3..].to_vec(),
        };
        assert_eq!(l.check(&home_only, &home()), Ok(()));
    }
}
