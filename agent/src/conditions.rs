//! The vocabulary of a Source's status: condition types, statuses and reasons (the ones
//! `kubectl get`/`describe` and kstatus readers see, and the reasons of its Events), and the
//! two operations on a condition list. Every other module names a type or reason through
//! these constants; only [`crate::status`] decides which ones a reconcile sets.

use crate::source::Condition;

/// Condition types of a Source.
pub mod kind {
    /// The applied artifact is in the cluster and healthy (kstatus' summary condition).
    pub const READY: &str = "Ready";
    /// A new digest is being applied (kstatus abnormal-true; removed when done).
    pub const RECONCILING: &str = "Reconciling";
    /// Only a change to the Source can help (kstatus abnormal-true).
    pub const STALLED: &str = "Stalled";
    /// Held at the last good digest after a failed health check (`spec.rollback`).
    pub const ROLLED_BACK: &str = "RolledBack";
}

/// Condition statuses.
pub mod status {
    pub const TRUE: &str = "True";
    pub const FALSE: &str = "False";
    pub const UNKNOWN: &str = "Unknown";
}

/// Condition and Event reasons. A failure's reason comes from its error (`reason()` of each
/// error enum maps onto these), so the set users can alert on is written down here once.
pub mod reason {
    // The reconcile's own outcomes.
    pub const SUCCEEDED: &str = "Succeeded";
    pub const PROGRESSING: &str = "Progressing";
    pub const ROLLED_BACK: &str = "RolledBack";
    pub const ROLLBACK_REFUSED: &str = "RollbackRefused";
    // Events of a successful reconcile.
    pub const APPLIED: &str = "Applied";
    pub const DRIFT_CORRECTED: &str = "DriftCorrected";
    pub const PRUNED: &str = "Pruned";
    // The Source and what it refers to in the cluster.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const ACCESS_CONFIGURATION_FAILED: &str = "AccessConfigurationFailed";
    pub const STATUS_WRITE_FAILED: &str = "StatusWriteFailed";
    pub const LOCKDOWN_VIOLATION: &str = "LockdownViolation";
    // The registry and the artifact.
    pub const ARTIFACT_NOT_FOUND: &str = "ArtifactNotFound";
    pub const REGISTRY_UNAVAILABLE: &str = "RegistryUnavailable";
    pub const NO_MATCHING_TAG: &str = "NoMatchingTag";
    pub const INVALID_ARTIFACT: &str = "InvalidArtifact";
    pub const INVALID_MANIFESTS: &str = "InvalidManifests";
    pub const VERIFICATION_FAILED: &str = "VerificationFailed";
    pub const OLDER_ARTIFACT: &str = "OlderArtifact";
    // The API server: plan, dry-run, apply, prune, health.
    pub const API_SERVER_UNREACHABLE: &str = "APIServerUnreachable";
    pub const DISCOVERY_FAILED: &str = "DiscoveryFailed";
    pub const EMPTY_ARTIFACT: &str = "EmptyArtifact";
    pub const INVENTORY_CONFLICT: &str = "InventoryConflict";
    pub const INVENTORY_FAILED: &str = "InventoryFailed";
    pub const OWNERSHIP_CONFLICT: &str = "OwnershipConflict";
    pub const FORBIDDEN: &str = "Forbidden";
    pub const FIELD_MANAGER_CONFLICT: &str = "FieldManagerConflict";
    pub const DRY_RUN_FAILED: &str = "DryRunFailed";
    pub const APPLY_FAILED: &str = "ApplyFailed";
    pub const PRUNE_FAILED: &str = "PruneFailed";
    pub const APPLY_TIMEOUT: &str = "ApplyTimeout";
    pub const HEALTH_CHECK_TIMEOUT: &str = "HealthCheckTimeout";
    pub const HEALTH_CHECK_FAILED: &str = "HealthCheckFailed";
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Sets condition `type_`; its transition time moves only when its status does.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let time = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(now);
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time: time,
        observed_generation: generation,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// Removes condition `type_`: kstatus' abnormal-true conditions (`Reconciling`, `Stalled`)
/// are removed rather than set to False, as kstatus and Flux do.
pub fn clear(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// Whether condition `type_` is there with `status`.
pub fn has(conditions: &[Condition], type_: &str, status: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let mut c = vec![Condition {
            type_: kind::READY.into(),
            status: status::TRUE.into(),
            reason: reason::SUCCEEDED.into(),
            message: "old".into(),
            last_transition_time: "2020-01-01T00:00:00Z".into(),
            observed_generation: Some(1),
        }];
        set(
            &mut c,
            kind::READY,
            status::TRUE,
            reason::SUCCEEDED,
            "new",
            Some(2),
        );
        assert_eq!(c[0].last_transition_time, "2020-01-01T00:00:00Z");
        assert_eq!(c[0].message, "new");
        set(
            &mut c,
            kind::READY,
            status::FALSE,
            reason::APPLY_FAILED,
            "x",
            Some(2),
        );
        assert_ne!(c[0].last_transition_time, "2020-01-01T00:00:00Z");
    }

    #[test]
    fn conditions_stay_sorted_by_type_and_clear_removes() {
        let mut c = Vec::new();
        set(
            &mut c,
            kind::STALLED,
            status::TRUE,
            reason::INVALID_SPEC,
            "",
            None,
        );
        set(
            &mut c,
            kind::READY,
            status::FALSE,
            reason::INVALID_SPEC,
            "",
            None,
        );
        let types: Vec<&str> = c.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [kind::READY, kind::STALLED]);
        clear(&mut c, kind::STALLED);
        assert!(!has(&c, kind::STALLED, status::TRUE));
        assert!(has(&c, kind::READY, status::FALSE));
    }
}
