//! Push-triggered reconciles: the HTTP receiver on `--receiver-addr`. It accepts the
//! distribution registry's notification envelope (`POST /hook/registry`) and a plain request
//! naming one Source (`POST /hook/sources/{namespace}/{name}`), authenticates it against a
//! Secret, and asks the controller to reconcile the matching Sources now instead of at their
//! next interval. A trigger only makes the agent look earlier: the reconcile still resolves,
//! verifies and applies exactly as a timed one does, so a forged trigger cannot change what
//! is applied.
//!
//! Authentication, from the Secret `--receiver-secret NAMESPACE/NAME` (read per request, so a
//! rotated Secret applies at once):
//! - key `token`: `Authorization: Bearer <token>`, compared in constant time;
//! - key `hmac-key`: `X-Berth-Timestamp: <unix seconds>` and
//!   `X-Berth-Signature: sha256=<hex HMAC-SHA256(key, "<timestamp>.<body>")>`; stale
//!   timestamps and signatures already seen are refused (replays).
//!
//! Every failure before authentication answers 401 whatever the path names, so the receiver
//! never tells an unauthenticated caller which Sources exist.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::sync::broadcast;

use crate::metrics::text;
use crate::source::Source;

/// Largest request body read; a registry envelope of one push is a few KiB.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Signed requests older (or further in the future) than this are refused.
pub const MAX_SIGNATURE_AGE: Duration = Duration::from_secs(300);
/// Signatures remembered to refuse replays within [`MAX_SIGNATURE_AGE`].
pub const MAX_REMEMBERED_SIGNATURES: usize = 4096;
/// Triggers queued for the controller; beyond this the oldest are dropped (the interval
/// still reconciles everything).
pub const TRIGGER_QUEUE: usize = 256;
/// Secret keys the receiver reads.
pub const TOKEN_KEY: &str = "token";
pub const HMAC_KEY: &str = "hmac-key";

#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("--receiver-secret {0:?}: give NAMESPACE/NAME of a Secret with a `token` and/or `hmac-key` entry")]
    SecretName(String),
    #[error("cannot listen on {addr} ({source}); pick a free address with --receiver-addr")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Where to listen and which Secret holds the credentials.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub addr: SocketAddr,
    pub secret_namespace: String,
    pub secret_name: String,
    /// Only Sources of this namespace can be triggered (the controller's scope).
    pub watch_namespace: Option<String>,
}

impl ReceiverConfig {
    /// Parses `NAMESPACE/NAME`.
    pub fn new(addr: SocketAddr, secret: &str, watch_namespace: Option<String>) -> Result<Self, ReceiverError> {
        match secret.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Ok(ReceiverConfig {
                addr,
                secret_namespace: ns.to_string(),
                secret_name: name.to_string(),
                watch_namespace,
            }),
            _ => Err(ReceiverError::SecretName(secret.to_string())),
        }
    }
}

/// The channel the receiver feeds and each leadership term of the controller reads.
#[derive(Debug, Clone)]
pub struct Triggers(broadcast::Sender<ObjectRef<Source>>);

impl Default for Triggers {
    fn default() -> Self {
        Triggers(broadcast::channel(TRIGGER_QUEUE).0)
    }
}

impl Triggers {
    /// A stream of Sources to reconcile now, for `Controller::reconcile_on`.
    pub fn stream(&self) -> impl futures::Stream<Item = ObjectRef<Source>> + Send + 'static {
        futures::stream::unfold(self.0.subscribe(), |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(r) => return Some((r, rx)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(dropped = n, "push triggers dropped; those Sources wait for their interval");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    fn fire(&self, src: &Source) {
        // No receiver (a follower, or between terms) is fine: the leader's interval covers it.
        let _ = self.0.send(ObjectRef::from_obj(src));
    }
}

struct Receiver {
    client: Client,
    config: ReceiverConfig,
    triggers: Triggers,
    seen: Mutex<SeenSignatures>,
}

/// Signatures seen recently: oldest first (to expire them), and as a set (to look them up).
type SeenSignatures = (VecDeque<(u64, String)>, HashMap<String, u64>);

/// Binds now (a taken port fails the start) and serves in the background.
pub async fn serve(client: Client, config: ReceiverConfig, triggers: Triggers) -> Result<SocketAddr, ReceiverError> {
    let addr = config.addr;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ReceiverError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| ReceiverError::Bind { addr, source })?;
    tracing::info!(addr = %bound, secret = %format!("{}/{}", config.secret_namespace, config.secret_name), "receiving push notifications");
    let receiver = Arc::new(Receiver { client, config, triggers, seen: Mutex::default() });
    tokio::spawn(crate::metrics::serve_http(listener, move |req| {
        let receiver = receiver.clone();
        async move { Ok::<_, Infallible>(receiver.handle(req).await) }
    }));
    Ok(bound)
}

/// The distribution registry's notification envelope (only the fields used).
#[derive(Debug, Deserialize)]
struct Envelope {
    events: Vec<RegistryEvent>,
}

#[derive(Debug, Deserialize)]
struct RegistryEvent {
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: Target,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Target {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    repository: String,
    #[serde(default)]
    tag: Option<String>,
}

/// Why a request was not authenticated (logged, never sent back).
#[derive(Debug, PartialEq)]
enum Denied {
    NoCredentials,
    BadToken,
    BadSignature,
    Stale,
    Replayed,
    SecretUnreadable,
}

impl Receiver {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
        }
        if req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|n| n > MAX_BODY_BYTES)
        {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n");
        }
        let path = req.uri().path().to_string();
        let headers = req.headers().clone();
        let body = match Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
        };
        if let Err(why) = self.authenticate(&headers, &body).await {
            tracing::warn!(path = %path, reason = ?why, "receiver: request refused");
            return text(StatusCode::UNAUTHORIZED, "unauthorized\n");
        }
        if crate::metrics::global().leader_value() != 1 {
            return text(StatusCode::SERVICE_UNAVAILABLE, "not the leader; retry\n");
        }
        if path == "/hook/registry" {
            return self.registry_event(&body).await;
        }
        if let Some(rest) = path.strip_prefix("/hook/sources/")
            && let Some((ns, name)) = rest.split_once('/')
        {
            return self.named(ns, name).await;
        }
        text(StatusCode::NOT_FOUND, "not found\n")
    }

    async fn authenticate(&self, headers: &hyper::HeaderMap, body: &[u8]) -> Result<(), Denied> {
        let bearer = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let signature = headers.get("x-berth-signature").and_then(|v| v.to_str().ok());
        let timestamp = headers.get("x-berth-timestamp").and_then(|v| v.to_str().ok());
        if bearer.is_none() && signature.is_none() {
            return Err(Denied::NoCredentials);
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.config.secret_namespace);
        let secret = api.get(&self.config.secret_name).await.map_err(|e| {
            tracing::warn!(error = %e, "receiver: cannot read its Secret");
            Denied::SecretUnreadable
        })?;
        let data = secret.data.unwrap_or_default();
        if let Some(given) = bearer {
            let Some(want) = data.get(TOKEN_KEY).filter(|t| !t.0.is_empty()) else { return Err(Denied::BadToken) };
            let want = trim_ascii(&want.0);
            return if bool::from(want.ct_eq(given.as_bytes())) { Ok(()) } else { Err(Denied::BadToken) };
        }
        let (Some(signature), Some(timestamp)) = (signature, timestamp) else { return Err(Denied::BadSignature) };
        let Some(key) = data.get(HMAC_KEY).filter(|k| !k.0.is_empty()) else { return Err(Denied::BadSignature) };
        let ts: u64 = timestamp.trim().parse().map_err(|_| Denied::Stale)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        if now.abs_diff(ts) > MAX_SIGNATURE_AGE.as_secs() {
            return Err(Denied::Stale);
        }
        let expected = sign(trim_ascii(&key.0), timestamp.trim(), body);
        let given = signature.trim().strip_prefix("sha256=").unwrap_or("").to_ascii_lowercase();
        if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            return Err(Denied::BadSignature);
        }
        self.remember(ts, now, given)
    }

    /// Records a valid signature; refuses it if it was seen within the window.
    fn remember(&self, ts: u64, now: u64, signature: String) -> Result<(), Denied> {
        let Ok(mut guard) = self.seen.lock() else { return Err(Denied::Replayed) };
        let (order, set) = &mut *guard;
        while let Some((t, s)) = order.front() {
            if now.saturating_sub(*t) > MAX_SIGNATURE_AGE.as_secs() || order.len() >= MAX_REMEMBERED_SIGNATURES {
                set.remove(s);
                order.pop_front();
            } else {
                break;
            }
        }
        if set.contains_key(&signature) {
            return Err(Denied::Replayed);
        }
        set.insert(signature.clone(), ts);
        order.push_back((ts, signature));
        Ok(())
    }

    fn sources(&self, namespace: Option<&str>) -> Api<Source> {
        match namespace.or(self.config.watch_namespace.as_deref()) {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    async fn named(&self, ns: &str, name: &str) -> Response<Full<Bytes>> {
        if self.config.watch_namespace.as_deref().is_some_and(|w| w != ns) {
            return text(StatusCode::NOT_FOUND, "no such source\n");
        }
        match self.sources(Some(ns)).get_opt(name).await {
            Ok(Some(src)) => {
                tracing::info!(source = %format!("{ns}/{name}"), "receiver: reconcile requested");
                self.triggers.fire(&src);
                text(StatusCode::ACCEPTED, "reconcile requested\n")
            }
            Ok(None) => text(StatusCode::NOT_FOUND, "no such source\n"),
            Err(e) => {
                tracing::warn!(error = %e, "receiver: cannot read Sources");
                text(StatusCode::SERVICE_UNAVAILABLE, "cannot read Sources; retry\n")
            }
        }
    }

    async fn registry_event(&self, body: &[u8]) -> Response<Full<Bytes>> {
        let envelope: Envelope = match serde_json::from_slice(body) {
            Ok(e) => e,
            Err(e) => return text(StatusCode::BAD_REQUEST, &format!("not a registry notification envelope: {e}\n")),
        };
        // Blob pushes come first and change nothing a Source resolves; the manifest push
        // (with its tag) is what moves a reference.
        let repositories: Vec<&str> = envelope
            .events
            .iter()
            .filter(|e| e.action == "push" && (e.target.tag.is_some() || e.target.media_type.contains("manifest")))
            .map(|e| e.target.repository.as_str())
            .filter(|r| !r.is_empty())
            .collect();
        if repositories.is_empty() {
            return text(StatusCode::OK, "no manifest push in the envelope\n");
        }
        let list = match self.sources(None).list(&Default::default()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "receiver: cannot list Sources");
                return text(StatusCode::SERVICE_UNAVAILABLE, "cannot read Sources; retry\n");
            }
        };
        let mut fired = 0usize;
        for src in &list.items {
            if repositories.iter().any(|r| repository_of(&src.spec.url) == Some(*r)) {
                tracing::info!(source = %format!("{}/{}", src.namespace().unwrap_or_default(), src.name_any()), "receiver: registry push; reconcile requested");
                self.triggers.fire(src);
                fired += 1;
            }
        }
        tracing::debug!(sources = fired, "receiver: registry notification handled");
        // The same answer whether or not a Source matched: nothing to learn from it.
        text(StatusCode::ACCEPTED, "accepted\n")
    }
}

/// `repo/path` of `oci://host[:port]/repo/path`.
fn repository_of(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("oci://").unwrap_or(url).trim_end_matches('/');
    rest.split_once('/').map(|(_, repo)| repo)
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// Lowercase hex HMAC-SHA256 of `<timestamp>.<body>`.
pub fn sign(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    // new_from_slice accepts any key length for HMAC; the error arm cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return String::new() };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_is_the_path_after_the_host() {
        assert_eq!(repository_of("oci://127.0.0.1:5000/team/app"), Some("team/app"));
        assert_eq!(repository_of("oci://reg/app/"), Some("app"));
        assert_eq!(repository_of("oci://reg"), None);
    }

    #[test]
    fn signature_covers_timestamp_and_body() {
        let a = sign(b"k", "100", b"{}");
        assert_eq!(a.len(), 64);
        assert_ne!(a, sign(b"k", "101", b"{}"));
        assert_ne!(a, sign(b"k", "100", b"{ }"));
        assert_ne!(a, sign(b"other", "100", b"{}"));
    }

    #[test]
    fn secret_name_must_be_namespace_slash_name() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        assert!(ReceiverConfig::new(addr, "ns/name", None).is_ok());
        assert!(ReceiverConfig::new(addr, "name", None).is_err());
        assert!(ReceiverConfig::new(addr, "a/b/c", None).is_err());
    }
}
