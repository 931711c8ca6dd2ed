//! The agent's HTTP serving: the accept loop every listener shares (HTTP/1.1, one task per
//! connection, a header read timeout, optional connection and header limits) and the probe
//! server on `--metrics-addr` (`/metrics`, `/healthz`, `/readyz`). The receiver brings its own
//! routes to the same accept loop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};

use crate::metrics::Metrics;
use crate::runtime::RuntimeState;

/// Longest a `/readyz` probe waits for the API server before answering "not ready".
pub const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection that sends no complete request within this time is dropped (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "cannot listen on {addr} ({source}); pick a free address with --metrics-addr (or port 0)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the probe server reads.
#[derive(Clone)]
pub struct Probes {
    pub client: kube::Client,
    pub state: Arc<RuntimeState>,
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Binds `addr` now (so a taken port fails the start, loudly) and serves the probes and
/// metrics in the background. Returns the bound address (port 0 picks a free one).
pub async fn serve_probes(addr: SocketAddr, probes: Probes) -> Result<SocketAddr, ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    let probes = Arc::new(probes);
    // Probes and scrapes come from the cluster network; no per-listener limits here.
    tokio::spawn(serve_http(listener, None, move |req| {
        let probes = probes.clone();
        async move { Ok::<_, Infallible>(route(req, &probes).await) }
    }));
    Ok(bound)
}

async fn route(req: Request<Incoming>, probes: &Probes) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(probes.metrics.encode())));
            if let Ok(v) = "application/openmetrics-text; version=1.0.0; charset=utf-8".parse() {
                r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
            }
            r
        }
        // Alive while the runtime answers requests.
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if !probes.state.started() {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "starting: Sources not listed yet\n",
                );
            }
            // A follower is ready: it has nothing to reach until it leads. A leader (or a
            // lone agent) needs the API server.
            if probes.state.is_leader() {
                if !probes.state.synced() {
                    return text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "leader: Source cache not synced yet\n",
                    );
                }
                match tokio::time::timeout(READY_PROBE_TIMEOUT, probes.client.apiserver_version())
                    .await
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        return text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            &format!("API server unreachable: {e}\n"),
                        );
                    }
                    Err(_) => {
                        return text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "API server did not answer in time\n",
                        );
                    }
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
pub(crate) async fn serve_http<F, Fut>(
    listener: tokio::net::TcpListener,
    limits: Option<ConnectionLimits>,
    handler: F,
) where
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
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            if let Some(l) = limits {
                builder
                    .max_header_size(l.header_bytes)
                    .max_buf_size(l.header_bytes.max(8192));
            }
            if let Err(e) = builder.serve_connection(io, service).await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
}
