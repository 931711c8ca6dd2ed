//! Automatic rollback (`spec.rollback: onHealthFailure`), as decisions the reconcile acts on:
//! whether a failure calls for going back to the last applied digest, and which hold is in
//! force. The reconcile re-verifies the last good digest against today's trust policy,
//! re-applies it and records `RolledBack`; it never loops: while the ref still resolves to the
//! failed digest, reconciles keep the good one; the failed digest is tried again only when the
//! ref points elsewhere or the user changes the `berth.dev/retry` annotation. A last good
//! digest whose signature no longer verifies (the key was rotated) is never re-applied.

use berth::digest::Digest;
use kube::ResourceExt;

use crate::source::Source;

/// Changing this annotation (any new value) asks for one more try of the failed digest.
pub const RETRY_ANNOTATION: &str = "berth.dev/retry";

/// The failed digest and the good one kept in its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub failed: Digest,
    pub good: Digest,
}

impl Hold {
    /// The hold in force for `src`, if rollback is on, a digest was rolled back from and the
    /// user has not asked for a retry since.
    pub fn of(src: &Source) -> Option<Hold> {
        src.spec.rollback?;
        let status = src.status.as_ref()?;
        let failed = status.failed_digest.as_deref()?.parse().ok()?;
        let good = status.last_applied_digest.as_deref()?.parse().ok()?;
        let retry = retry_value(src);
        if retry.is_some() && retry != status.last_handled_retry {
            tracing::info!(failed = %failed, "retry requested with the {RETRY_ANNOTATION} annotation");
            return None;
        }
        Some(Hold { failed, good })
    }

    /// The Ready message while held; the same text on the rollback and on every later
    /// reconcile so the status does not flap.
    pub fn message(&self) -> String {
        format!(
            "{} failed its health check; rolled back to {} and holding there until the ref points elsewhere or the {RETRY_ANNOTATION} annotation changes",
            self.failed, self.good
        )
    }

    /// The `RolledBack` condition's message.
    pub fn summary(&self) -> String {
        format!("rolled back from {} to {}", self.failed, self.good)
    }
}

/// The current value of the retry annotation.
pub fn retry_value(src: &Source) -> Option<String> {
    src.annotations().get(RETRY_ANNOTATION).cloned()
}

/// After a failed reconcile: the hold to roll back to, or `None` to record the failure as it
/// is. Only a verdict on a new digest's health counts (`health_verdict`: not a health check cut
/// short by losing the API server, which would stop the rollback too), and only when there is
/// an older applied digest to return to.
pub fn after_failure(
    src: &Source,
    health_verdict: bool,
    attempted: Option<&Digest>,
) -> Option<Hold> {
    src.spec.rollback?;
    if !health_verdict {
        return None;
    }
    let failed = attempted?.clone();
    let good: Digest = src
        .status
        .as_ref()?
        .last_applied_digest
        .as_deref()?
        .parse()
        .ok()?;
    // The digest that was healthy before is what failed now (drift, a node outage…): there is
    // nothing older to return to.
    (good != failed).then_some(Hold { failed, good })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn source(rollback: bool, status: serde_json::Value, retry: Option<&str>) -> Source {
        let mut spec = serde_json::json!({"url": "oci://r/a", "ref": {"tag": "v1"}, "verify": {"insecureSkipVerify": true}});
        if rollback {
            spec["rollback"] = "onHealthFailure".into();
        }
        let mut metadata = serde_json::json!({"name": "s", "namespace": "ns"});
        if let Some(r) = retry {
            metadata["annotations"] = serde_json::json!({ RETRY_ANNOTATION: r });
        }
        let v = serde_json::json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Source",
            "metadata": metadata, "spec": spec, "status": status});
        match serde_json::from_value(v) {
            Ok(s) => s,
            Err(e) => panic!("test Source does not parse: {e}"),
        }
    }

    fn digest(s: &str) -> Digest {
        match s.parse() {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_failed_health_check_of_a_new_digest_rolls_back_to_the_applied_one() {
        let src = source(true, serde_json::json!({"lastAppliedDigest": A}), None);
        let hold = after_failure(&src, true, Some(&digest(B)));
        assert_eq!(
            hold,
            Some(Hold {
                failed: digest(B),
                good: digest(A)
            })
        );
    }

    #[test]
    fn no_rollback_without_the_policy_a_verdict_or_an_older_digest() {
        let applied = serde_json::json!({"lastAppliedDigest": A});
        assert_eq!(
            after_failure(
                &source(false, applied.clone(), None),
                true,
                Some(&digest(B))
            ),
            None
        );
        // Not a verdict (the API server went away, the registry failed, …).
        assert_eq!(
            after_failure(
                &source(true, applied.clone(), None),
                false,
                Some(&digest(B))
            ),
            None
        );
        // The applied digest itself turned unhealthy: nothing older to go to.
        assert_eq!(
            after_failure(&source(true, applied.clone(), None), true, Some(&digest(A))),
            None
        );
        // Nothing applied yet, or the digest never resolved.
        assert_eq!(
            after_failure(
                &source(true, serde_json::json!({}), None),
                true,
                Some(&digest(B))
            ),
            None
        );
        assert_eq!(
            after_failure(&source(true, applied, None), true, None),
            None
        );
    }

    #[test]
    fn a_hold_lasts_until_the_retry_annotation_changes() {
        let held =
            serde_json::json!({"lastAppliedDigest": A, "failedDigest": B, "lastHandledRetry": "1"});
        let want = Some(Hold {
            failed: digest(B),
            good: digest(A),
        });
        assert_eq!(Hold::of(&source(true, held.clone(), None)), want);
        assert_eq!(Hold::of(&source(true, held.clone(), Some("1"))), want);
        assert_eq!(Hold::of(&source(true, held.clone(), Some("2"))), None);
        assert_eq!(Hold::of(&source(false, held, None)), None);
        assert_eq!(
            Hold::of(&source(
                true,
                serde_json::json!({"lastAppliedDigest": A}),
                None
            )),
            None
        );
    }
}
