//! Push-triggered reconciles: the HTTP receiver on `--receiver-addr`. It accepts the
//! distribution registry's notification envelope (`POST /hook/registry`) and a plain request
//! naming one Source (`POST /hook/sources/{namespace}/{name}`), authenticates it against a
//! Secret, and asks the controller to reconcile the matching Sources now instead of at their
//! next interval. A trigger only makes the agent look earlier: the reconcile still resolves,
//! verifies and applies exactly as a timed one does, so a forged trigger cannot change what
//! is applied.
//!
//! Authentication, from the Secret `--receiver-secret NAMESPACE/NAME` (kept in memory by a
//! watch of that one Secret, so a rotated Secret applies as soon as the watch delivers it and
//! refusing a request costs the API server nothing):
//! - key `token`: `Authorization: Bearer <token>`, compared in constant time;
//! - key `hmac-key`: `X-Berth-Timestamp: <unix seconds>` and
//!   `X-Berth-Signature: sha256=<hex HMAC-SHA256(key, "<timestamp>.<body>")>`; stale
//!   timestamps and signatures already seen are refused (replays).
//!
//! Every failure before authentication answers 401 whatever the path names, so the receiver
//! never tells an unauthenticated caller which Sources exist.
//!
//! What an unauthenticated caller can make the receiver hold is bounded: the credentials are
//! checked on the headers, before any body byte is read (a token request is settled there;
//! a signed one is refused there when stale, malformed or already seen). Only a signed request
//! needs its body before it can be judged, so only [`MAX_UNVERIFIED_BODIES`] such bodies, each
//! at most its declared length ≤ [`MAX_BODY_BYTES`], are read at once, each within
//! [`BODY_DEADLINE`]. At most [`MAX_CONNECTIONS`] connections are served at once, each head at
//! most [`MAX_HEADER_BYTES`] within `server::HEADER_READ_TIMEOUT`.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::sync::{Semaphore, broadcast};

use crate::runtime::RuntimeState;
use crate::server::{ConnectionLimits, text};
use crate::source::Source;

/// Largest request body read; a registry envelope of one push is a few KiB.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// A body (declared by `Content-Length`) must arrive whole within this, else 408.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);
/// Signed requests whose bodies are read at once (the signature can only be checked on the
/// whole body, so these are the bodies an unauthenticated caller can make the receiver hold:
/// 16 × 256 KiB = 4 MiB at most). More answer 503 at once. A registry sends its notifications
/// one at a time per endpoint; token requests are authenticated first and do not count.
pub const MAX_UNVERIFIED_BODIES: usize = 16;
/// Connections served at once; more wait in the kernel's accept queue until one ends. Each
/// holds at most [`MAX_HEADER_BYTES`] of buffer and a task until it is answered.
pub const MAX_CONNECTIONS: usize = 64;
/// Largest request line and headers; a registry's notification head is under 1 KiB.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Signed requests older (or further in the future) than this are refused.
pub const MAX_SIGNATURE_AGE: Duration = Duration::from_secs(300);
/// Valid signatures remembered at most. Each is kept until its timestamp leaves the
/// ±[`MAX_SIGNATURE_AGE`] window, never dropped earlier (it could be replayed); when this many
/// are remembered, new signed requests answer 429 until the oldest expire. 65 536 in ten
/// minutes is over 100 a second, and costs about 4 MiB.
pub const MAX_REMEMBERED_SIGNATURES: usize = 65_536;
/// Triggers queued for the controller; beyond this the oldest are dropped (the interval
/// still reconciles everything).
pub const TRIGGER_QUEUE: usize = 256;
/// After a registry's push notification, the Sources it names are reconciled at once and
/// again after each of these delays. distribution sends the manifest push event from inside
/// the manifest write, before its handler points the tag at the manifest: a reconcile fired at
/// once can resolve the old digest and, with a long interval, not look again for minutes.
pub const TAG_SETTLE_RECHECKS: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(2)];
/// Secret keys the receiver reads.
pub const TOKEN_KEY: &str = "token";
pub const HMAC_KEY: &str = "hmac-key";

#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error(
        "--receiver-secret {0:?}: give NAMESPACE/NAME of a Secret with a `token` and/or `hmac-key` entry"
    )]
    SecretName(String),
    #[error("cannot listen on {addr} ({source}); pick a free address with --receiver-addr")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
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
    pub fn new(
        addr: SocketAddr,
        secret: &str,
        watch_namespace: Option<String>,
    ) -> Result<Self, ReceiverError> {
        match secret.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(ReceiverConfig {
                    addr,
                    secret_namespace: ns.to_string(),
                    secret_name: name.to_string(),
                    watch_namespace,
                })
            }
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
                        tracing::warn!(
                            dropped = n,
                            "push triggers dropped; those Sources wait for their interval"
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    fn fire(&self, src: &Source) {
        self.fire_ref(ObjectRef::from_obj(src));
    }

    fn fire_ref(&self, r: ObjectRef<Source>) {
        // No receiver (a follower, or between terms) is fine: the leader's interval covers it.
        let _ = self.0.send(r);
    }
}

struct Receiver {
    client: Client,
    config: ReceiverConfig,
    triggers: Triggers,
    state: Arc<RuntimeState>,
    credentials: Credentials,
    unverified_bodies: Semaphore,
    seen: Mutex<SeenSignatures>,
}

/// The receiver's Secret as the watch last delivered it.
struct Credentials {
    store: Store<Secret>,
    key: ObjectRef<Secret>,
}

impl Credentials {
    /// Watches the one Secret (a field selector on its name, which RBAC's `resourceNames`
    /// allows for list and watch) in the background, retrying with backoff.
    fn watch(client: Client, namespace: &str, name: &str) -> Credentials {
        let api: Api<Secret> = Api::namespaced(client, namespace);
        let (store, writer) = reflector::store();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let events = reflector::reflector(writer, watcher(api, config)).default_backoff();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                if let Err(e) = event {
                    tracing::warn!(error = %e, "receiver: cannot watch its Secret; requests are refused until it can");
                }
            }
        });
        Credentials {
            store,
            key: ObjectRef::new(name).within(namespace),
        }
    }

    /// The value of `key` in the Secret, if the Secret exists and the entry is not empty.
    fn entry(&self, key: &str) -> Option<Vec<u8>> {
        let secret = self.store.get(&self.key)?;
        let value = secret.data.as_ref()?.get(key)?.0.trim_ascii();
        (!value.is_empty()).then(|| value.to_vec())
    }
}

/// Signatures accepted within the window, by timestamp (to expire them in order) and raw
/// signature. A replay carries the same timestamp, since the signature covers it.
#[derive(Debug, Default)]
struct SeenSignatures(BTreeSet<(u64, [u8; 32])>);

/// What [`SeenSignatures::remember`] made of a valid signature.
#[derive(Debug, PartialEq)]
enum Remembered {
    New,
    Replay,
    /// [`MAX_REMEMBERED_SIGNATURES`] are still inside the window: come back in this many seconds.
    Full {
        retry_after: u64,
    },
}

impl SeenSignatures {
    fn contains(&self, seconds: u64, signature: &[u8; 32]) -> bool {
        self.0.contains(&(seconds, *signature))
    }

    /// Records a signature that matched its body, after forgetting those that left the window.
    fn remember(&mut self, seconds: u64, signature: [u8; 32], now: u64) -> Remembered {
        let window = MAX_SIGNATURE_AGE.as_secs();
        // Timestamps up to `window` in the future are accepted, so an entry expires `window`
        // after its own timestamp, not after its arrival.
        while let Some(&(t, _)) = self.0.first()
            && t.saturating_add(window) < now
        {
            self.0.pop_first();
        }
        if self.contains(seconds, &signature) {
            return Remembered::Replay;
        }
        if let Some(&(oldest, _)) = self.0.first()
            && self.0.len() >= MAX_REMEMBERED_SIGNATURES
        {
            return Remembered::Full {
                retry_after: oldest.saturating_add(window + 1).saturating_sub(now).max(1),
            };
        }
        self.0.insert((seconds, signature));
        Remembered::New
    }
}

/// Binds now (a taken port fails the start) and serves in the background.
/// Only a leader's triggers reach a running controller: followers answer 503 (`state`).
pub async fn serve(
    client: Client,
    config: ReceiverConfig,
    triggers: Triggers,
    state: Arc<RuntimeState>,
) -> Result<SocketAddr, ReceiverError> {
    let addr = config.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ReceiverError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ReceiverError::Bind { addr, source })?;
    tracing::info!(addr = %bound, secret = %format!("{}/{}", config.secret_namespace, config.secret_name), "receiving push notifications");
    let credentials = Credentials::watch(
        client.clone(),
        &config.secret_namespace,
        &config.secret_name,
    );
    let receiver = Arc::new(Receiver {
        client,
        config,
        triggers,
        state,
        credentials,
        unverified_bodies: Semaphore::new(MAX_UNVERIFIED_BODIES),
        seen: Mutex::default(),
    });
    let limits = ConnectionLimits {
        connections: MAX_CONNECTIONS,
        header_bytes: MAX_HEADER_BYTES,
    };
    tokio::spawn(crate::server::serve_http(
        listener,
        Some(limits),
        move |req| {
            let receiver = receiver.clone();
            async move { Ok::<_, Infallible>(receiver.handle(req).await) }
        },
    ));
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
    /// The Secret does not exist (yet), or the watch has not delivered it.
    NoSecret,
}

/// What the headers prove before the body is read. (No `Debug`: it holds the key.)
enum Claim {
    /// The bearer token matched: authenticated.
    Token,
    /// A well-formed, fresh, unseen signature: authenticated once it matches the body.
    Signed(Signed),
}

struct Signed {
    key: Vec<u8>,
    /// As sent (it is part of what was signed).
    timestamp: String,
    seconds: u64,
    signature: [u8; 32],
}

impl Receiver {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
        }
        // No Content-Length and no Transfer-Encoding is an empty body; a chunked one has no
        // length to check before reading it, so it is refused.
        match req.body().size_hint().exact() {
            None => return text(StatusCode::LENGTH_REQUIRED, "Content-Length required\n"),
            Some(n) if n > MAX_BODY_BYTES as u64 => {
                return text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n");
            }
            Some(_) => {}
        }
        let path = req.uri().path().to_string();
        let refused = |why: Denied| {
            tracing::warn!(path = %path, reason = ?why, "receiver: request refused");
            text(StatusCode::UNAUTHORIZED, "unauthorized\n")
        };
        let claim = match self.authenticate_headers(req.headers()) {
            Ok(c) => c,
            Err(why) => return refused(why),
        };
        let slot = match claim {
            Claim::Token => None,
            Claim::Signed(_) => match self.unverified_bodies.try_acquire() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    return busy(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too many signed requests in flight; retry\n",
                        1,
                    );
                }
            },
        };
        // hyper ends the body at the declared length; Limited is a second fence.
        let body = match tokio::time::timeout(
            BODY_DEADLINE,
            Limited::new(req.into_body(), MAX_BODY_BYTES).collect(),
        )
        .await
        {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(_)) => return text(StatusCode::BAD_REQUEST, "incomplete body\n"),
            Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "body not received in time\n"),
        };
        if let Claim::Signed(signed) = claim {
            if !signed.matches(&body) {
                return refused(Denied::BadSignature);
            }
            let remembered = match self.seen.lock() {
                Ok(mut seen) => seen.remember(signed.seconds, signed.signature, unix_now()),
                Err(_) => Remembered::Replay,
            };
            match remembered {
                Remembered::New => {}
                Remembered::Replay => return refused(Denied::Replayed),
                Remembered::Full { retry_after } => {
                    tracing::warn!(
                        remembered = MAX_REMEMBERED_SIGNATURES,
                        "receiver: replay memory full; signed requests refused until the oldest leave the window"
                    );
                    return busy(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too many signed requests; retry later\n",
                        retry_after,
                    );
                }
            }
        }
        drop(slot);
        if !self.state.is_leader() {
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

    /// Everything that can be decided from the headers and the cached Secret, without the
    /// body and without a request to the API server.
    fn authenticate_headers(&self, headers: &hyper::HeaderMap) -> Result<Claim, Denied> {
        let bearer = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let signature = headers
            .get("x-berth-signature")
            .and_then(|v| v.to_str().ok());
        let timestamp = headers
            .get("x-berth-timestamp")
            .and_then(|v| v.to_str().ok());
        if bearer.is_none() && signature.is_none() {
            return Err(Denied::NoCredentials);
        }
        if self.credentials.store.get(&self.credentials.key).is_none() {
            return Err(Denied::NoSecret);
        }
        if let Some(given) = bearer {
            let want = self.credentials.entry(TOKEN_KEY).ok_or(Denied::BadToken)?;
            return if bool::from(want.ct_eq(given.as_bytes())) {
                Ok(Claim::Token)
            } else {
                Err(Denied::BadToken)
            };
        }
        let (Some(signature), Some(timestamp)) = (signature, timestamp) else {
            return Err(Denied::BadSignature);
        };
        let key = self
            .credentials
            .entry(HMAC_KEY)
            .ok_or(Denied::BadSignature)?;
        let timestamp = timestamp.trim();
        let seconds: u64 = timestamp.parse().map_err(|_| Denied::Stale)?;
        if unix_now().abs_diff(seconds) > MAX_SIGNATURE_AGE.as_secs() {
            return Err(Denied::Stale);
        }
        let signature = signature
            .trim()
            .strip_prefix("sha256=")
            .and_then(parse_hex32)
            .ok_or(Denied::BadSignature)?;
        // A replay is refused here already, before its body is read; `remember` settles races.
        match self.seen.lock() {
            Ok(seen) if !seen.contains(seconds, &signature) => {}
            _ => return Err(Denied::Replayed),
        }
        Ok(Claim::Signed(Signed {
            key,
            timestamp: timestamp.to_string(),
            seconds,
            signature,
        }))
    }

    fn sources(&self, namespace: Option<&str>) -> Api<Source> {
        match namespace.or(self.config.watch_namespace.as_deref()) {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    async fn named(&self, ns: &str, name: &str) -> Response<Full<Bytes>> {
        if self
            .config
            .watch_namespace
            .as_deref()
            .is_some_and(|w| w != ns)
        {
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
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot read Sources; retry\n",
                )
            }
        }
    }

    async fn registry_event(&self, body: &[u8]) -> Response<Full<Bytes>> {
        let envelope: Envelope = match serde_json::from_slice(body) {
            Ok(e) => e,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("not a registry notification envelope: {e}\n"),
                );
            }
        };
        // Blob pushes come first and change nothing a Source resolves; the manifest push
        // (with its tag) is what moves a reference.
        let repositories: Vec<&str> = envelope
            .events
            .iter()
            .filter(|e| {
                e.action == "push"
                    && (e.target.tag.is_some() || e.target.media_type.contains("manifest"))
            })
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
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot read Sources; retry\n",
                );
            }
        };
        let mut fired = Vec::new();
        for src in &list.items {
            if repositories
                .iter()
                .any(|r| repository_of(&src.spec.url) == Some(*r))
            {
                tracing::info!(source = %src.key(), "receiver: registry push; reconcile requested");
                self.triggers.fire(src);
                fired.push(ObjectRef::from_obj(src));
            }
        }
        tracing::debug!(
            sources = fired.len(),
            "receiver: registry notification handled"
        );
        if !fired.is_empty() {
            let triggers = self.triggers.clone();
            tokio::spawn(async move {
                let mut waited = Duration::ZERO;
                for at in TAG_SETTLE_RECHECKS {
                    tokio::time::sleep(at.saturating_sub(waited)).await;
                    waited = at;
                    for r in &fired {
                        triggers.fire_ref(r.clone());
                    }
                }
            });
        }
        // The same answer whether or not a Source matched: nothing to learn from it.
        text(StatusCode::ACCEPTED, "accepted\n")
    }
}

/// `repo/path` of `oci://host[:port]/repo/path`.
fn repository_of(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("oci://")
        .unwrap_or(url)
        .trim_end_matches('/');
    rest.split_once('/').map(|(_, repo)| repo)
}

impl Signed {
    /// Constant-time comparison of the signature with the HMAC of this body.
    fn matches(&self, body: &[u8]) -> bool {
        mac(&self.key, &self.timestamp, body)
            .is_some_and(|m| m.verify_slice(&self.signature).is_ok())
    }
}

/// HMAC-SHA256 of `<timestamp>.<body>` (`None` cannot happen: HMAC takes keys of any length).
fn mac(key: &[u8], timestamp: &str, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// Lowercase hex HMAC-SHA256 of `<timestamp>.<body>`.
pub fn sign(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    let Some(mac) = mac(key, timestamp, body) else {
        return String::new();
    };
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 64 hex digits (either case) as 32 bytes.
fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A refusal the caller should retry after `seconds`.
fn busy(status: StatusCode, body: &str, seconds: u64) -> Response<Full<Bytes>> {
    let mut r = text(status, body);
    r.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from(seconds),
    );
    r
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests report failure by panicking
mod tests {
    use super::*;

    #[test]
    fn repository_is_the_path_after_the_host() {
        assert_eq!(
            repository_of("oci://127.0.0.1:5000/team/app"),
            Some("team/app")
        );
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
    fn signatures_are_remembered_until_they_leave_the_window_never_by_count() {
        let window = MAX_SIGNATURE_AGE.as_secs();
        let now = 1_000_000;
        let mut seen = SeenSignatures::default();
        let first = [1u8; 32];
        assert_eq!(seen.remember(now, first, now), Remembered::New);
        // Far more than the 4 096 an older receiver kept, all inside the window.
        for i in 0..10_000u32 {
            let mut sig = [0u8; 32];
            sig[..4].copy_from_slice(&i.to_be_bytes());
            assert_eq!(seen.remember(now, sig, now), Remembered::New);
        }
        assert_eq!(
            seen.remember(now, first, now + window),
            Remembered::Replay,
            "still inside the window"
        );
        assert_eq!(
            seen.remember(now, first, now + window + 1),
            Remembered::New,
            "left the window"
        );
        // A timestamp from the future stays until `window` after that timestamp.
        let future = [2u8; 32];
        assert_eq!(seen.remember(now + window, future, now), Remembered::New);
        assert_eq!(
            seen.remember(now + window, future, now + 2 * window),
            Remembered::Replay
        );
    }

    #[test]
    fn a_full_replay_memory_refuses_new_signatures_instead_of_forgetting_old_ones() {
        let now = 1_000_000;
        let mut seen = SeenSignatures::default();
        for i in 0..MAX_REMEMBERED_SIGNATURES as u32 {
            let mut sig = [0u8; 32];
            sig[..4].copy_from_slice(&i.to_be_bytes());
            assert_eq!(seen.remember(now - 10, sig, now), Remembered::New);
        }
        let retry_after = MAX_SIGNATURE_AGE.as_secs() - 10 + 1;
        assert_eq!(
            seen.remember(now, [9u8; 32], now),
            Remembered::Full { retry_after }
        );
        assert_eq!(
            seen.remember(now - 10, [0u8; 32], now),
            Remembered::Replay,
            "the oldest is still refused"
        );
        assert_eq!(
            seen.remember(now, [9u8; 32], now + retry_after),
            Remembered::New,
            "once the oldest left"
        );
    }

    #[test]
    fn signatures_are_64_hex_digits() {
        let sig = sign(b"k", "100", b"{}");
        let raw = parse_hex32(&sig).unwrap();
        assert_eq!(parse_hex32(&sig.to_uppercase()), Some(raw));
        assert!(mac(b"k", "100", b"{}").unwrap().verify_slice(&raw).is_ok());
        assert_eq!(parse_hex32(&sig[..62]), None);
        assert_eq!(parse_hex32(&format!("{}zz", &sig[..62])), None);
        assert_eq!(parse_hex32(&format!("{sig}00")), None);
    }

    #[test]
    fn secret_name_must_be_namespace_slash_name() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        assert!(ReceiverConfig::new(addr, "ns/name", None).is_ok());
        assert!(ReceiverConfig::new(addr, "name", None).is_err());
        assert!(ReceiverConfig::new(addr, "a/b/c", None).is_err());
    }
}
