//! What the agent tells Prometheus and the kubelet: the process-wide metrics (reconcile
//! duration and results by source and reason, objects applied/pruned, last applied time and
//! digest, registry requests, leadership) and the small HTTP server on `--metrics-addr` that
//! serves `/metrics`, `/healthz` and `/readyz`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Longest a `/readyz` probe waits for the API server before answering "not ready".
pub const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection that sends no complete request within this time is dropped (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen on {addr} ({source}); pick a free address with --metrics-addr (or port 0)")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

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

/// Every metric the agent exports, registered once per process.
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
    /// Sources listed and the controller started (or following, waiting for the Lease).
    started: AtomicBool,
    /// The leader's Source cache holds the initial list (kube-runtime store ready).
    synced: AtomicBool,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("berth");
        let reconcile_duration = Family::<SourceLabel, Histogram, fn() -> Histogram>::new_with_constructor(
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
        registry.register("objects_pruned", "Objects deleted because they left the artifact", objects_pruned.clone());
        let last_applied = Family::<SourceLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_applied_timestamp_seconds",
            "Unix time of the last successful reconcile of a Source",
            last_applied.clone(),
        );
        let info = Family::<InfoLabels, Gauge>::default();
        registry.register("source_info", "The digest and revision a Source has applied (value 1)", info.clone());
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
            started: AtomicBool::new(false),
            synced: AtomicBool::new(false),
        }
    }

    /// One finished reconcile: `reason` is the Ready condition's reason (`Succeeded` on success).
    pub fn reconciled(&self, source: &str, success: bool, reason: &str, took: Duration) {
        let label = SourceLabel { source: source.to_string() };
        self.reconcile_duration.get_or_create(&label).observe(took.as_secs_f64());
        let result = if success { "success" } else { "failure" };
        self.reconciles
            .get_or_create(&ResultLabels { source: source.to_string(), result: result.into(), reason: reason.into() })
            .inc();
    }

    /// A successful apply of `digest`: counts, time and the info series.
    pub fn applied(&self, source: &str, digest: &str, revision: Option<&str>, changed: usize, pruned: usize) {
        let label = SourceLabel { source: source.to_string() };
        self.objects_applied.get_or_create(&label).inc_by(u64::try_from(changed).unwrap_or(u64::MAX));
        self.objects_pruned.get_or_create(&label).inc_by(u64::try_from(pruned).unwrap_or(u64::MAX));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
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
            .get_or_create(&RequestLabels { operation: operation.into(), result: result.into() })
            .inc();
    }

    pub fn rolled_back(&self, source: &str) {
        self.rollbacks.get_or_create(&SourceLabel { source: source.to_string() }).inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// 1 while leading (or running without election), else 0.
    pub fn leader_value(&self) -> i64 {
        self.leader.get()
    }

    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Release);
    }

    pub fn set_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// The text exposition (OpenMetrics, which Prometheus reads).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error would only mean a half page.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Binds `addr` now (so a taken port fails the start, loudly) and serves the probes and
/// metrics in the background. Returns the bound address (port 0 picks a free one).
pub async fn serve(addr: SocketAddr, client: kube::Client) -> Result<SocketAddr, MetricsError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| MetricsError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| MetricsError::Bind { addr, source })?;
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    let client = Arc::new(client);
    // Probes and scrapes come from the cluster network; no per-listener limits here.
    tokio::spawn(serve_http(listener, None, move |req| {
        let client = client.clone();
        async move { Ok::<_, Infallible>(route(req, &client).await) }
    }));
    Ok(bound)
}

async fn route(req: Request<Incoming>, client: &kube::Client) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(global().encode())));
            if let Ok(v) = "application/openmetrics-text; version=1.0.0; charset=utf-8".parse() {
                r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
            }
            r
        }
        // Alive while the runtime answers requests.
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if !global().started.load(Ordering::Acquire) {
                return text(StatusCode::SERVICE_UNAVAILABLE, "starting: Sources not listed yet\n");
            }
            // A follower is ready: it has nothing to reach until it leads. A leader (or a
            // lone agent) needs the API server.
            if global().leader.get() == 1 {
                if !global().synced.load(Ordering::Acquire) {
                    return text(StatusCode::SERVICE_UNAVAILABLE, "leader: Source cache not synced yet\n");
                }
                match tokio::time::timeout(READY_PROBE_TIMEOUT, client.apiserver_version()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        return text(StatusCode::SERVICE_UNAVAILABLE, &format!("API server unreachable: {e}\n"));
                    }
                    Err(_) => return text(StatusCode::SERVICE_UNAVAILABLE, "API server did not answer in time\n"),
                }
            }
            text(StatusCode::OK, "ok\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

pub(crate) fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r
}

/// What one listener of [`serve_http`] may hold at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    /// Connections served at once; more wait in the kernel's accept queue until one ends.
    pub connections: usize,
    /// Largest request head (request line and headers) read into memory; larger → 431.
    pub header_bytes: usize,
}

/// Accept loop shared by the metrics server and the receiver: HTTP/1.1, one task per
/// connection, header read timeout, and optionally [`ConnectionLimits`].
pub(crate) async fn serve_http<F, Fut>(listener: tokio::net::TcpListener, limits: Option<ConnectionLimits>, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let slots = limits.map(|l| Arc::new(tokio::sync::Semaphore::new(l.connections)));
    loop {
        // Waiting for a slot before accepting leaves the next connections queued in the
        // kernel (served in order as slots free up) instead of costing a task each.
        let slot = match &slots {
            Some(s) => match s.clone().acquire_owned().await {
                Ok(permit) => Some(permit),
                Err(_) => return, // the semaphore is never closed
            },
            None => None,
        };
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and similar: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let io = hyper_util::rt::TokioIo::new(stream);
            let service = hyper::service::service_fn(handler);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
            if let Some(l) = limits {
                builder.max_header_size(l.header_bytes).max_buf_size(l.header_bytes.max(8192));
            }
            if let Err(e) = builder.serve_connection(io, service).await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
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
        assert!(text.contains(r#"berth_source_info{source="ns/app",digest="sha256:bbb",revision=""} 1"#), "{text}");
        assert!(!text.contains("sha256:aaa"), "the old digest is still exported: {text}");
        assert!(text.contains(r#"berth_objects_applied_total{source="ns/app"} 3"#), "{text}");
        assert!(text.contains(r#"berth_objects_pruned_total{source="ns/app"} 1"#), "{text}");
    }
}
