//! One reconcile of a `Source`, top to bottom: resolve → (unchanged digest: drift check) →
//! pull → verify → unpack → plan/apply/prune/wait (the engine) → record. Also the trust
//! policy and registry access read from the Source's Secrets/ConfigMaps, the status and
//! Events it records, and the retry policy on errors.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use berth::digest::Digest;
use berth::reference::Reference;
use berth::registry::{Registry, RegistryOptions};
use berth::signature::{PublicKey, TrustPolicy};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Config, Resource, ResourceExt};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tracing::Instrument;

use crate::discovery::ApiDiscovery;
use crate::engine::{self, Clients, SyncError, SyncOptions, SyncReport};
use crate::fetch::{self, FetchError, Trust};
use crate::inventory::{ApplySetParent, ParentKind};
use crate::plan::{Manifest, NamespaceDefaults};
use crate::source::{Condition, ObjectCounts, RefKind, Source, SourceStatus, SpecError};

/// Field manager of the status the agent writes.
pub const STATUS_FIELD_MANAGER: &str = "berth-agent";
/// First retry delay after a failed reconcile; doubles per consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest retry delay (also never longer than the Source's interval).
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Largest public key object read from a Secret/ConfigMap entry.
pub const MAX_KEY_BYTES: usize = 16 * 1024;

/// The manifests of the last applied digest of each Source, so an unchanged digest costs one
/// HEAD request and no pull. The entry is only trusted for the Source object (uid) and spec
/// (generation) it was verified for, under the trust policy (fingerprint) that verified it:
/// anything else makes the next reconcile verify the digest again before applying.
#[derive(Debug, Clone)]
struct Cached {
    uid: Option<String>,
    generation: Option<i64>,
    trust: String,
    digest: Digest,
    revision: Option<String>,
    created: Option<String>,
    signer: String,
    manifests: Vec<Manifest>,
    /// The part of the memory budget these manifests hold while cached.
    _grant: Arc<crate::budget::Grant>,
}

impl Cached {
    /// Whether this entry was verified for exactly this Source object, spec and trust policy.
    fn vouched_for(&self, src: &Source, trust: &str) -> bool {
        self.uid == src.metadata.uid && self.generation == src.metadata.generation && self.trust == trust
    }
}

/// Shared state of all reconciles.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub recorder: Recorder,
    cache: Mutex<HashMap<String, Cached>>,
    failures: Mutex<HashMap<String, u32>>,
    /// Private (0700) directory for registry CA bundles read from Secrets.
    scratch: tempfile::TempDir,
    /// Registry client per Source, with a hash of the settings it was built from.
    registries: Mutex<HashMap<String, (String, Arc<Registry>)>>,
    /// Tenant lockdown rules of `berth-agent run` (empty: none).
    pub lockdown: crate::lockdown::Lockdown,
    /// Memory every artifact being fetched or kept in the cache draws from.
    pub budget: crate::budget::MemoryBudget,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(client: Client, config: Config, recorder: Recorder) -> std::io::Result<Self> {
        let scratch = tempfile::Builder::new().prefix("berth-agent-").tempdir()?;
        Ok(Context {
            client,
            config,
            recorder,
            cache: Mutex::default(),
            failures: Mutex::default(),
            scratch,
            registries: Mutex::default(),
            lockdown: crate::lockdown::Lockdown::default(),
            budget: crate::budget::MemoryBudget::for_limit(crate::budget::DEFAULT_MEMORY_LIMIT),
        })
    }
}

impl Context {
    /// Drops the verified artifact remembered for a Source: the next reconcile pulls and
    /// verifies again.
    pub(crate) fn forget(&self, key: &str) {
        if let Ok(mut c) = self.cache.lock() {
            c.remove(key);
        }
    }

    /// Drops one cached artifact to return its memory to the budget (its Source pulls it again
    /// at its next reconcile); false when nothing is cached.
    fn evict_one(&self) -> bool {
        let Ok(mut c) = self.cache.lock() else { return false };
        let Some(victim) = c.keys().next().cloned() else { return false };
        tracing::info!(source = %victim, "memory budget full: dropping a cached artifact");
        c.remove(&victim);
        true
    }

    /// Forgets every Source whose key is not in `live` (deleted Sources): a Source
    /// re-created under the same name never inherits its predecessor's verified artifact.
    pub fn retain_sources(&self, live: &std::collections::HashSet<String>) {
        if let Ok(mut c) = self.cache.lock() {
            c.retain(|k, _| live.contains(k));
        }
        if let Ok(mut r) = self.registries.lock() {
            r.retain(|k, _| live.contains(k));
        }
        if let Ok(mut f) = self.failures.lock() {
            f.retain(|k, _| live.contains(k));
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{0}")]
    Spec(#[from] SpecError),
    #[error("spec.url {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("{what}: {message}")]
    Access { what: String, message: String },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The API server refused objects to the impersonated ServiceAccount. Its own message does
    /// not always name the account (it may report the per-resource impersonation check), so
    /// the condition names it.
    #[error("applying as ServiceAccount {account}: {source}")]
    ForbiddenAs { account: String, source: Box<SyncError> },
    #[error("writing the status of the Source: {0}")]
    Status(kube::Error),
    #[error(transparent)]
    Lockdown(#[from] crate::lockdown::LockdownError),
}

impl ReconcileError {
    /// Condition reason shown in `kubectl get`/`describe`.
    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::Spec(_) | ReconcileError::Url { .. } => "InvalidSpec",
            ReconcileError::Access { .. } => "AccessConfigurationFailed",
            ReconcileError::Fetch(e) => e.reason(),
            ReconcileError::Sync(e) => e.reason(),
            ReconcileError::ForbiddenAs { source, .. } => source.reason(),
            ReconcileError::Status(_) => "StatusWriteFailed",
            ReconcileError::Lockdown(_) => "LockdownViolation",
        }
    }

    /// Errors only a change to the Source can fix (kstatus `Stalled`).
    fn is_stalled(&self) -> bool {
        matches!(
            self,
            ReconcileError::Spec(_)
                | ReconcileError::Url { .. }
                | ReconcileError::Lockdown(crate::lockdown::LockdownError::ServiceAccountRequired { .. })
        )
    }
}

pub(crate) fn key_of(src: &Source) -> String {
    format!("{}/{}", src.namespace().unwrap_or_default(), src.name_any())
}

/// Entry point for the controller.
pub async fn reconcile(src: Arc<Source>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let span = tracing::info_span!("reconcile", source = %key_of(&src), digest = tracing::field::Empty);
    reconcile_inner(src, ctx).instrument(span).await
}

async fn reconcile_inner(src: Arc<Source>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    if src.spec.suspend {
        tracing::info!("suspended; nothing to do");
        return Ok(Action::await_change());
    }
    // With spec.rollback, a digest that failed its health check is not applied again while
    // the ref still points at it: the last good one is kept instead (rollback.rs).
    let hold = crate::rollback::Hold::of(&src);
    let outcome = converge(&src, &ctx, hold.as_ref()).await;
    match outcome {
        Ok((report, fetched)) => {
            if let Ok(mut f) = ctx.failures.lock() {
                f.remove(&key_of(&src));
            }
            match &hold {
                Some(h) if fetched.held => crate::rollback::record_held(&src, &ctx, h, &fetched).await?,
                _ => record_success(&src, &ctx, &report, &fetched).await?,
            }
            Ok(Action::requeue(src.spec.interval().unwrap_or(Duration::from_secs(300))))
        }
        Err((e, attempted)) => {
            match crate::rollback::after_failure(&src, &ctx, &e, attempted.as_ref()).await {
                Some(crate::rollback::Outcome::Done(result)) => return result,
                Some(crate::rollback::Outcome::Recorded) => return Err(e),
                None => {}
            }
            tracing::warn!(reason = e.reason(), error = %e, "reconcile failed");
            record_failure(&src, &ctx, &e, attempted.as_ref()).await?;
            Err(e)
        }
    }
}

/// Retry delay after a failure: exponential per Source, capped by the interval.
pub fn error_policy(src: Arc<Source>, e: &ReconcileError, ctx: Arc<Context>) -> Action {
    if e.is_stalled() {
        // Retrying cannot help; a spec change triggers the next reconcile.
        return Action::await_change();
    }
    let n = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(key_of(&src)).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    let cap = src.spec.interval().unwrap_or(BACKOFF_MAX).min(BACKOFF_MAX);
    Action::requeue(backoff(n, cap))
}

/// `BACKOFF_BASE * 2^(failures-1)`, at most `cap`.
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    let factor = 1u32.checked_shl(failures.saturating_sub(1).min(16)).unwrap_or(u32::MAX);
    BACKOFF_BASE.saturating_mul(factor).min(cap).max(Duration::from_secs(1))
}

/// The artifact applied in this reconcile.
pub(crate) struct Applied {
    pub(crate) digest: Digest,
    pub(crate) revision: Option<String>,
    pub(crate) created: Option<String>,
    pub(crate) signer: String,
    /// The ref resolved to a rolled-back digest and the held one was applied instead.
    pub(crate) held: bool,
}

/// Resolve, fetch and apply. With `hold`, a ref that resolves to the failed digest applies
/// the held (last good) digest instead.
pub(crate) async fn converge(
    src: &Source,
    ctx: &Context,
    hold: Option<&crate::rollback::Hold>,
) -> Result<(SyncReport, Applied), (ReconcileError, Option<Digest>)> {
    let no_digest = |e: ReconcileError| (e, None);
    src.spec.validate().map_err(|e| no_digest(e.into()))?;
    let service_account = ctx.lockdown.service_account(src).map_err(|e| no_digest(e.into()))?;
    let namespace = src.namespace().unwrap_or_default();
    let reference = reference_of(src).map_err(no_digest)?;
    let semver = match src.spec.reference.kind() {
        Ok(RefKind::Semver(s)) => Some(s.to_string()),
        _ => None,
    };
    let registry = registry_for(src, ctx, &reference).await.map_err(no_digest)?;

    // Resolve: one HEAD request (or a tag list for semver).
    let resolution = fetch::resolve(&registry, &reference, semver.as_deref()).await;
    crate::metrics::global().registry_request("resolve", resolution.is_ok());
    let (mut resolved, mut digest) = resolution.map_err(|e| no_digest(e.into()))?;
    let mut held = false;
    if let Some(h) = hold
        && digest == h.failed
    {
        tracing::debug!(failed = %h.failed, "the ref still points at the digest that was rolled back; keeping the last good one");
        resolved = resolved.with_digest(h.good.clone());
        digest = h.good.clone();
        held = true;
    }
    tracing::Span::current().record("digest", tracing::field::display(&digest));
    let with_digest = |e: ReconcileError| (e, Some(digest.clone()));

    let key = key_of(src);
    // The trust policy is read on every reconcile, not only for a new digest: a rotated key,
    // a deleted Secret or insecureSkipVerify switched off must stop the next apply of the
    // digest already in the cluster, not wait for the next push.
    let trust = trust_of(src, ctx).await.map_err(with_digest)?;
    let trust_print = trust.fingerprint();
    let cached = ctx
        .cache
        .lock()
        .ok()
        .and_then(|c| c.get(&key).cloned())
        .filter(|c| c.digest == digest && c.uid == src.metadata.uid);
    // A spec change (namespace, force, identity…) changes the plan even for the same digest:
    // it goes through the dry-run gate again.
    let spec_unchanged = src.status.as_ref().and_then(|s| s.observed_generation) == src.metadata.generation;
    let vouched = cached.as_ref().is_some_and(|c| c.vouched_for(src, &trust_print));
    let drift_check = vouched && spec_unchanged;
    let artifact = match cached {
        Some(c) if vouched => {
            tracing::debug!("digest unchanged; checking for drift");
            c
        }
        Some(c) => {
            // Same digest and manifests, but the spec or the trust policy changed since it
            // was verified: nothing is applied until it verifies again. The entry goes first,
            // so a refusal leaves nothing trusted behind.
            tracing::info!("spec or trust policy changed; verifying the applied digest again");
            ctx.forget(&key);
            let signer = verify_counted(&registry, &resolved, &digest, &trust).await.map_err(with_digest)?;
            Cached { generation: src.metadata.generation, trust: trust_print, signer, ..c }
        }
        None => {
            set_reconciling(src, ctx, &digest).await.map_err(with_digest)?;
            let mut grant = ctx.budget.reserve(|| ctx.evict_one()).await;
            let share = ctx.budget.share();
            let pulled = fetch::pull(&registry, &resolved, &digest, share).await;
            crate::metrics::global().registry_request("pull", pulled.is_ok());
            let pulled = pulled.map_err(|e| with_digest(e.into()))?;
            let signer = verify_counted(&registry, &resolved, &digest, &trust).await.map_err(with_digest)?;
            let at = resolved.with_digest(digest.clone()).to_string();
            if src.spec.verify.refuse_older && !matches!(src.spec.reference.kind(), Ok(RefKind::Digest(_))) {
                let applied = src.status.as_ref().and_then(|s| s.last_applied_created.as_deref());
                fetch::refuse_older(&at, pulled.created.as_deref(), applied).map_err(|e| with_digest(e.into()))?;
            }
            let (manifests, charged) = fetch::unpack(&at, &pulled.layer, share).map_err(|e| with_digest(e.into()))?;
            tracing::info!(signer = %signer, objects = manifests.len(), charged, "artifact verified");
            // The layer is dropped here; the cached manifests keep what they were charged.
            grant.shrink_to(charged);
            Cached {
                uid: src.metadata.uid.clone(),
                generation: src.metadata.generation,
                trust: trust_print,
                digest: digest.clone(),
                revision: pulled.revision,
                created: pulled.created,
                signer,
                manifests,
                _grant: Arc::new(grant),
            }
        }
    };

    let applier = match &service_account {
        Some(sa) => crate::apply::impersonating(&ctx.config, &namespace, sa).map_err(|e| {
            with_digest(ReconcileError::Access {
                what: format!("ServiceAccount {namespace}/{sa}"),
                message: e.to_string(),
            })
        })?,
        None => ctx.client.clone(),
    };
    let clients = Clients { agent: ctx.client.clone(), applier };
    let parent = ApplySetParent { kind: ParentKind::Source, name: src.name_any(), namespace: namespace.clone() };
    let opts = SyncOptions {
        namespaces: NamespaceDefaults { target: src.spec.target_namespace.clone(), fallback: namespace },
        force: src.spec.force,
        prune: src.spec.prune,
        wait: src.spec.wait,
        timeout: src.spec.timeout().map_err(|e| with_digest(e.into()))?,
        allow_empty: false,
        dry_run_gate: !drift_check,
    };
    let mut catalog = ApiDiscovery::new(ctx.client.clone());
    if !ctx.lockdown.is_empty() {
        // The same plan the engine builds (discovery is cached in the catalog), checked whole
        // before the engine dry-runs or applies any of it.
        let plan = crate::plan::plan(artifact.manifests.clone(), &mut catalog, &opts.namespaces, &parent.id())
            .await
            .map_err(|e| with_digest(ReconcileError::Sync(e.into())))?;
        ctx.lockdown.check(&plan, &parent).map_err(|e| with_digest(e.into()))?;
    }
    let report =
        engine::sync(&clients, &mut catalog, &parent, artifact.manifests.clone(), &opts).await.map_err(|e| {
            with_digest(match (&service_account, e) {
                (Some(sa), SyncError::Apply(a)) if a.main_cause() == crate::apply::FailureCause::Forbidden => {
                    ReconcileError::ForbiddenAs {
                        account: format!("{}/{sa}", parent.namespace),
                        source: Box::new(SyncError::Apply(a)),
                    }
                }
                (_, e) => e.into(),
            })
        })?;
    let applied = Applied {
        digest: artifact.digest.clone(),
        revision: artifact.revision.clone(),
        created: artifact.created.clone(),
        signer: artifact.signer.clone(),
        held,
    };
    if let Ok(mut c) = ctx.cache.lock() {
        c.insert(key, artifact);
    }
    Ok((report, applied))
}

/// Phase 3 with its outcome counted in the registry metrics.
async fn verify_counted(
    registry: &Registry,
    resolved: &Reference,
    digest: &Digest,
    trust: &Trust,
) -> Result<String, ReconcileError> {
    let signer = fetch::verify(registry, resolved, digest, trust).await;
    crate::metrics::global().registry_request("verify", signer.is_ok());
    Ok(signer?)
}

pub(crate) fn reference_of(src: &Source) -> Result<Reference, ReconcileError> {
    let url = src.spec.url.trim_end_matches('/');
    let bad = |message: String| ReconcileError::Url { url: src.spec.url.clone(), message };
    let repo: Reference = url.parse().map_err(|e| bad(format!("{e}")))?;
    if repo.tag().is_some() || repo.digest().is_some() {
        return Err(bad("name only the repository; put the tag, digest or semver range in spec.ref".into()));
    }
    Ok(match src.spec.reference.kind()? {
        RefKind::Tag(t) => repo.with_tag(t),
        RefKind::Digest(d) => {
            let digest: Digest = d.parse().map_err(|e| bad(format!("spec.ref.digest: {e}")))?;
            repo.with_digest(digest)
        }
        RefKind::Semver(_) => repo,
    })
}

/// Registry access from `secretRef` (docker config JSON), `caSecretRef` and `insecure`;
/// without `secretRef` anonymous, never the agent's own environment or Docker config.
/// The registry client for a Source, reused while its access settings stay the same so a
/// quiet interval costs one request (the client keeps its bearer token between intervals).
pub(crate) async fn registry_for(
    src: &Source,
    ctx: &Context,
    reference: &Reference,
) -> Result<Arc<Registry>, ReconcileError> {
    let namespace = src.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut options = RegistryOptions { creds: None, ca_file: None, insecure: src.spec.insecure };
    let mut fingerprint = Sha256::new();
    fingerprint.update(format!("{}\0{}\0", reference.registry(), src.spec.insecure));
    if let Some(r) = &src.spec.secret_ref {
        let what = format!("spec.secretRef Secret {namespace}/{}", r.name);
        let s = secrets
            .get(&r.name)
            .await
            .map_err(|e| ReconcileError::Access { what: what.clone(), message: e.to_string() })?;
        let data = s.data.unwrap_or_default();
        let config = data.get(".dockerconfigjson").or_else(|| data.get("config.json")).ok_or_else(|| {
            ReconcileError::Access { what: what.clone(), message: "has no .dockerconfigjson entry".into() }
        })?;
        options.creds = docker_credentials(&config.0, reference.registry())
            .map_err(|message| ReconcileError::Access { what: what.clone(), message })?;
        fingerprint.update(&config.0);
    }
    if let Some(r) = &src.spec.ca_secret_ref {
        let what = format!("spec.caSecretRef Secret {namespace}/{}", r.name);
        let s = secrets
            .get(&r.name)
            .await
            .map_err(|e| ReconcileError::Access { what: what.clone(), message: e.to_string() })?;
        let ca = s
            .data
            .unwrap_or_default()
            .get("ca.crt")
            .map(|b| b.0.clone())
            .ok_or_else(|| ReconcileError::Access { what: what.clone(), message: "has no ca.crt entry".into() })?;
        // The registry layer reads CAs from a file: one per Source in the agent's private dir.
        let path = ctx.scratch.path().join(format!("ca-{}-{}.pem", namespace, src.name_any()));
        fingerprint.update(&ca);
        std::fs::write(&path, ca)
            .map_err(|e| ReconcileError::Access { what, message: format!("writing {}: {e}", path.display()) })?;
        options.ca_file = Some(path);
    }
    // Only a hash of the settings is kept as the key: no credential stays in a map.
    let fingerprint = format!("{:x}", fingerprint.finalize());
    let key = key_of(src);
    if let Some((fp, r)) = ctx.registries.lock().ok().and_then(|m| m.get(&key).cloned())
        && fp == fingerprint
    {
        return Ok(r);
    }
    let registry = Arc::new(Registry::for_reference(reference, &options).map_err(|e| ReconcileError::Access {
        what: format!("registry {}", reference.registry()),
        message: e.to_string(),
    })?);
    if let Ok(mut m) = ctx.registries.lock() {
        m.insert(key, (fingerprint, registry.clone()));
    }
    Ok(registry)
}

/// `(user, password)` for `host` from a docker config JSON, never logged.
fn docker_credentials(config: &[u8], host: &str) -> Result<Option<(String, String)>, String> {
    let v: serde_json::Value = serde_json::from_slice(config).map_err(|e| format!("is not docker config JSON: {e}"))?;
    let Some(entry) = v["auths"].get(host).or_else(|| v["auths"].get(format!("https://{host}"))) else {
        return Ok(None);
    };
    if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
        return Ok(Some((u.to_string(), p.to_string())));
    }
    let Some(auth) = entry["auth"].as_str() else { return Ok(None) };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .map_err(|_| format!("auths.{host}.auth is not base64"))?;
    let text = String::from_utf8(decoded).map_err(|_| format!("auths.{host}.auth is not text"))?;
    match text.split_once(':') {
        Some((u, p)) => Ok(Some((u.to_string(), p.to_string()))),
        None => Err(format!("auths.{host}.auth is not user:password")),
    }
}

/// The trust policy: public keys from the Secrets/ConfigMaps `spec.verify.keys` names.
pub(crate) async fn trust_of(src: &Source, ctx: &Context) -> Result<Trust, ReconcileError> {
    if src.spec.verify.insecure_skip_verify {
        return Ok(Trust::SkipVerify);
    }
    let namespace = src.namespace().unwrap_or_default();
    let mut keys = Vec::new();
    for k in &src.spec.verify.keys {
        let (what, entries): (String, BTreeMap<String, Vec<u8>>) = if let Some(s) = &k.secret_ref {
            let what = format!("Secret {namespace}/{}", s.name);
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
            let obj = api
                .get(&s.name)
                .await
                .map_err(|e| ReconcileError::Access { what: what.clone(), message: e.to_string() })?;
            let data = obj.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
            (what, select(data, s.key.as_deref()))
        } else if let Some(c) = &k.config_map_ref {
            let what = format!("ConfigMap {namespace}/{}", c.name);
            let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
            let obj = api
                .get(&c.name)
                .await
                .map_err(|e| ReconcileError::Access { what: what.clone(), message: e.to_string() })?;
            let data = obj.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
            (what, select(data, c.key.as_deref()))
        } else {
            continue;
        };
        if entries.is_empty() {
            return Err(ReconcileError::Access {
                what,
                message: "holds no public key (*.pub entry or the named key)".into(),
            });
        }
        for (name, bytes) in entries {
            let source = format!("{what} key {name}");
            if bytes.len() > MAX_KEY_BYTES {
                return Err(ReconcileError::Access { what: source, message: "is too large for a public key".into() });
            }
            let pem = String::from_utf8_lossy(&bytes);
            let key = PublicKey::from_pem(&pem, &source)
                .map_err(|e| ReconcileError::Access { what: source.clone(), message: e.to_string() })?;
            keys.push(key);
        }
    }
    let mut policy = TrustPolicy::new(keys);
    if src.spec.verify.match_repository {
        let reference = reference_of(src)?;
        policy = policy.in_repository(format!("{}/{}", reference.registry(), reference.repository()));
    }
    Ok(Trust::Keys(policy))
}

fn select(data: BTreeMap<String, Vec<u8>>, key: Option<&str>) -> BTreeMap<String, Vec<u8>> {
    data.into_iter()
        .filter(|(k, _)| match key {
            Some(want) => k == want,
            None => k.ends_with(".pub"),
        })
        .collect()
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// `conditions` with `type_` set; the transition time moves only when the status does.
pub(crate) fn set_condition(
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

/// kstatus' abnormal-true conditions (`Reconciling`, `Stalled`) are removed rather than set
/// to False, as kstatus and Flux do.
pub(crate) fn clear_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// Writes `status` with server-side apply unless nothing but the reconcile time changed
/// (a no-op interval then writes nothing at all).
pub(crate) async fn write_status(src: &Source, ctx: &Context, mut status: SourceStatus) -> Result<(), ReconcileError> {
    let old = src.status.clone().unwrap_or_default();
    let mut compare = status.clone();
    compare.last_reconcile_time = old.last_reconcile_time.clone();
    if compare == old {
        return Ok(());
    }
    status.last_reconcile_time = Some(now());
    let api: Api<Source> = Api::namespaced(ctx.client.clone(), &src.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": Source::api_version(&()),
        "kind": Source::kind(&()),
        "status": status,
    });
    api.patch_status(&src.name_any(), &PatchParams::apply(STATUS_FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map(|_| ())
        .map_err(ReconcileError::Status)
}

async fn set_reconciling(src: &Source, ctx: &Context, digest: &Digest) -> Result<(), ReconcileError> {
    let mut status = src.status.clone().unwrap_or_default();
    // A retry of the digest that just failed keeps the failure visible instead of flapping
    // between Unknown and False on every backoff step.
    if status.last_attempted_digest.as_deref() == Some(digest.to_string().as_str())
        && status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "False")
    {
        return Ok(());
    }
    let generation = src.metadata.generation;
    let msg = format!("applying {digest}");
    set_condition(&mut status.conditions, "Reconciling", "True", "Progressing", &msg, generation);
    set_condition(&mut status.conditions, "Ready", "Unknown", "Progressing", &msg, generation);
    status.last_attempted_digest = Some(digest.to_string());
    write_status(src, ctx, status).await
}

pub(crate) async fn publish(ctx: &Context, src: &Source, type_: EventType, reason: &str, action: &str, note: String) {
    let ev = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
    if let Err(e) = ctx.recorder.publish(&ev, &src.object_ref(&())).await {
        tracing::warn!(error = %e, "could not record an Event");
    }
}

pub(crate) async fn record_success(
    src: &Source,
    ctx: &Context,
    report: &SyncReport,
    applied: &Applied,
) -> Result<(), ReconcileError> {
    let mut status = src.status.clone().unwrap_or_default();
    let generation = src.metadata.generation;
    let revision = applied.revision.clone().unwrap_or_else(|| "(no revision)".into());
    let msg = format!("applied revision {revision} ({}): {} objects", applied.digest, report.total);
    set_condition(&mut status.conditions, "Ready", "True", "Succeeded", &msg, generation);
    clear_condition(&mut status.conditions, "Reconciling");
    clear_condition(&mut status.conditions, "Stalled");
    // A digest that applied cleanly ends any rollback hold.
    clear_condition(&mut status.conditions, crate::rollback::CONDITION);
    status.failed_digest = None;
    status.last_handled_retry = crate::rollback::retry_value(src);
    let digest_changed = status.last_applied_digest.as_deref() != Some(applied.digest.to_string().as_str());
    status.observed_generation = generation;
    status.last_applied_digest = Some(applied.digest.to_string());
    status.last_attempted_digest = Some(applied.digest.to_string());
    status.last_applied_revision = applied.revision.clone();
    status.last_applied_created = applied.created.clone();
    status.signer = Some(applied.signer.clone());
    if digest_changed || !report.changed.is_empty() || !report.pruned.is_empty() {
        status.objects = Some(ObjectCounts {
            total: i64::try_from(report.total).unwrap_or(i64::MAX),
            changed: i64::try_from(report.changed.len()).unwrap_or(i64::MAX),
            pruned: i64::try_from(report.pruned.len()).unwrap_or(i64::MAX),
        });
    }
    write_status(src, ctx, status).await?;
    crate::metrics::global().applied(
        &key_of(src),
        &applied.digest.to_string(),
        applied.revision.as_deref(),
        report.changed.len(),
        report.pruned.len(),
    );
    if digest_changed {
        tracing::info!(digest = %applied.digest, objects = report.total, "applied a new digest");
        publish(ctx, src, EventType::Normal, "Applied", "Apply", msg).await;
    } else if !report.changed.is_empty() {
        let names: Vec<String> = report.changed.iter().take(5).map(ToString::to_string).collect();
        publish(ctx, src, EventType::Normal, "DriftCorrected", "Apply", format!("corrected {}", names.join(", ")))
            .await;
    }
    if !report.pruned.is_empty() {
        publish(ctx, src, EventType::Normal, "Pruned", "Prune", format!("pruned {} objects", report.pruned.len()))
            .await;
    }
    Ok(())
}

async fn record_failure(
    src: &Source,
    ctx: &Context,
    e: &ReconcileError,
    attempted: Option<&Digest>,
) -> Result<(), ReconcileError> {
    let mut status = src.status.clone().unwrap_or_default();
    let generation = src.metadata.generation;
    let msg = e.to_string();
    set_condition(&mut status.conditions, "Ready", "False", e.reason(), &msg, generation);
    clear_condition(&mut status.conditions, "Reconciling");
    if e.is_stalled() {
        set_condition(&mut status.conditions, "Stalled", "True", e.reason(), &msg, generation);
    } else {
        clear_condition(&mut status.conditions, "Stalled");
    }
    status.observed_generation = generation;
    if let Some(d) = attempted {
        status.last_attempted_digest = Some(d.to_string());
    }
    let changed = src.status.as_ref().map(|s| &s.conditions) != Some(&status.conditions);
    write_status(src, ctx, status).await?;
    if changed {
        publish(ctx, src, EventType::Warning, e.reason(), "Reconcile", msg).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let cap = Duration::from_secs(60);
        assert_eq!(backoff(1, cap), Duration::from_secs(5));
        assert_eq!(backoff(2, cap), Duration::from_secs(10));
        assert_eq!(backoff(4, cap), Duration::from_secs(40));
        assert_eq!(backoff(5, cap), cap);
        assert_eq!(backoff(200, cap), cap);
    }

    #[test]
    fn docker_config_credentials_by_host() {
        let auth = base64::engine::general_purpose::STANDARD.encode("u:p:w");
        let cfg =
            format!(r#"{{"auths":{{"reg:5000":{{"auth":"{auth}"}},"other":{{"username":"a","password":"b"}}}}}}"#);
        assert_eq!(docker_credentials(cfg.as_bytes(), "reg:5000"), Ok(Some(("u".into(), "p:w".into()))));
        assert_eq!(docker_credentials(cfg.as_bytes(), "other"), Ok(Some(("a".into(), "b".into()))));
        assert_eq!(docker_credentials(cfg.as_bytes(), "none"), Ok(None));
        assert!(docker_credentials(b"not json", "x").is_err());
    }

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let mut c = vec![Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Succeeded".into(),
            message: "old".into(),
            last_transition_time: "2020-01-01T00:00:00Z".into(),
            observed_generation: Some(1),
        }];
        set_condition(&mut c, "Ready", "True", "Succeeded", "new", Some(2));
        assert_eq!(c[0].last_transition_time, "2020-01-01T00:00:00Z");
        set_condition(&mut c, "Ready", "False", "ApplyFailed", "x", Some(2));
        assert_ne!(c[0].last_transition_time, "2020-01-01T00:00:00Z");
    }
}
