//! What the agent tells Prometheus: reconcile duration and results by source and reason,
//! objects applied/pruned, last applied time and digest, registry requests, rollbacks and
//! leadership. One [`Metrics`] per controller, handed to the reconciles through their context
//! and to the `/metrics` endpoint ([`crate::server`]); nothing here decides anything.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    source: String,
    result: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    source: String,
    digest: String,
    revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: String,
    result: String,
}

/// Reconcile durations span a no-op interval (tens of ms) to a health wait (minutes).
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

/// Every metric the agent exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconcile_duration: Family<SourceLabel, Histogram, fn() -> Histogram>,
    reconciles: Family<ResultLabels, Counter>,
    objects_applied: Family<SourceLabel, Counter>,
    objects_pruned: Family<SourceLabel, Counter>,
    last_applied: Family<SourceLabel, Gauge<f64, AtomicU64>>,
    info: Family<InfoLabels, Gauge>,
    registry_requests: Family<RequestLabels, Counter>,
    leader: Gauge,
    rollbacks: Family<SourceLabel, Counter>,
    /// The info series currently exported per source, so a new digest replaces the old one.
    current_info: Mutex<HashMap<String, InfoLabels>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("berth");
        let reconcile_duration =
            Family::<SourceLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram as fn() -> Histogram,
            );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile of a Source took",
            reconcile_duration.clone(),
        );
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by Source, result (success/failure) and condition reason",
            reconciles.clone(),
        );
        let objects_applied = Family::<SourceLabel, Counter>::default();
        registry.register(
            "objects_applied",
            "Objects created or changed by server-side apply",
            objects_applied.clone(),
        );
        let objects_pruned = Family::<SourceLabel, Counter>::default();
        registry.register(
            "objects_pruned",
            "Objects deleted because they left the artifact",
            objects_pruned.clone(),
        );
        let last_applied = Family::<SourceLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_applied_timestamp_seconds",
            "Unix time of the last successful reconcile of a Source",
            last_applied.clone(),
        );
        let info = Family::<InfoLabels, Gauge>::default();
        registry.register(
            "source_info",
            "The digest and revision a Source has applied (value 1)",
            info.clone(),
        );
        let registry_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "registry_requests",
            "Registry operations (resolve, pull, verify) by result",
            registry_requests.clone(),
        );
        let rollbacks = Family::<SourceLabel, Counter>::default();
        registry.register(
            "rollbacks",
            "Automatic rollbacks to the last applied digest after a failed health check",
            rollbacks.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the Lease (or runs without leader election)",
            leader.clone(),
        );
        Metrics {
            registry,
            reconcile_duration,
            reconciles,
            objects_applied,
            objects_pruned,
            last_applied,
            info,
            registry_requests,
            leader,
            rollbacks,
            current_info: Mutex::default(),
        }
    }

    /// One finished reconcile: `reason` is the Ready condition's reason (`Succeeded` on success).
    pub fn reconciled(&self, source: &str, success: bool, reason: &str, took: Duration) {
        let label = SourceLabel {
            source: source.to_string(),
        };
        self.reconcile_duration
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        let result = if success { "success" } else { "failure" };
        self.reconciles
            .get_or_create(&ResultLabels {
                source: source.to_string(),
                result: result.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// A successful apply of `digest`: counts, time and the info series.
    pub fn applied(
        &self,
        source: &str,
        digest: &str,
        revision: Option<&str>,
        changed: usize,
        pruned: usize,
    ) {
        let label = SourceLabel {
            source: source.to_string(),
        };
        self.objects_applied
            .get_or_create(&label)
            .inc_by(u64::try_from(changed).unwrap_or(u64::MAX));
        self.objects_pruned
            .get_or_create(&label)
            .inc_by(u64::try_from(pruned).unwrap_or(u64::MAX));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_applied.get_or_create(&label).set(now);
        let info = InfoLabels {
            source: source.to_string(),
            digest: digest.to_string(),
            revision: revision.unwrap_or("").to_string(),
        };
        if let Ok(mut current) = self.current_info.lock()
            && let Some(old) = current.insert(source.to_string(), info.clone())
            && old != info
        {
            self.info.remove(&old);
        }
        self.info.get_or_create(&info).set(1);
    }

    /// One registry operation (`resolve`, `pull`, `verify`).
    pub fn registry_request(&self, operation: &str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.registry_requests
            .get_or_create(&RequestLabels {
                operation: operation.into(),
                result: result.into(),
            })
            .inc();
    }

    pub fn rolled_back(&self, source: &str) {
        self.rollbacks
            .get_or_create(&SourceLabel {
                source: source.to_string(),
            })
            .inc();
    }

    /// Mirrors [`crate::runtime::RuntimeState`]'s leadership for dashboards.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The text exposition (OpenMetrics, which Prometheus reads).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error would only mean a half page.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_digest_replaces_the_info_series() {
        let m = Metrics::new();
        m.applied("ns/app", "sha256:aaa", Some("main@sha1:1"), 2, 0);
        m.applied("ns/app", "sha256:bbb", None, 1, 1);
        let text = m.encode();
        assert!(
            text.contains(
                r#"berth_source_info{source="ns/app",digest="sha256:bbb",revision=""} 1"#
            ),
            "{text}"
        );
        assert!(
            !text.contains("sha256:aaa"),
            "the old digest is still exported: {text}"
        );
        assert!(
            text.contains(r#"berth_objects_applied_total{source="ns/app"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"berth_objects_pruned_total{source="ns/app"} 1"#),
            "{text}"
        );
    }
}
