//! What every reconcile shares: the API clients, the Event recorder, the metrics, the tenant
//! lockdown rules, the memory budget, the registry clients, the verified artifact remembered
//! per Source and the count of consecutive failures per Source (for the backoff).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use kube::runtime::events::Recorder;
use kube::{Client, Config};

use crate::access::RegistryClients;
use crate::budget::{Grant, MemoryBudget};
use crate::fetch::Artifact;
use crate::lockdown::Lockdown;
use crate::metrics::Metrics;
use crate::source::Source;

/// The artifact last applied for a Source, so an unchanged digest costs one HEAD request and
/// no pull. It is only trusted for the Source object (uid) and spec (generation) it was
/// verified for, under the trust policy (fingerprint) that verified it: anything else makes
/// the next reconcile verify the digest again before applying.
#[derive(Debug, Clone)]
pub struct Remembered {
    pub uid: Option<String>,
    pub generation: Option<i64>,
    pub trust: String,
    pub artifact: Arc<Artifact>,
    /// The part of the memory budget the manifests hold while remembered.
    pub grant: Arc<Grant>,
}

impl Remembered {
    /// Whether this entry was verified for exactly this Source object, spec and trust policy.
    pub fn vouched_for(&self, src: &Source, trust: &str) -> bool {
        self.uid == src.metadata.uid
            && self.generation == src.metadata.generation
            && self.trust == trust
    }
}

/// Shared state of all reconciles.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Tenant lockdown rules of `berth-agent run` (empty: none).
    pub lockdown: Lockdown,
    /// Memory every artifact being fetched or remembered draws from.
    pub budget: MemoryBudget,
    pub registries: RegistryClients,
    remembered: Mutex<HashMap<String, Remembered>>,
    failures: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        client: Client,
        config: Config,
        recorder: Recorder,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        Ok(Context {
            client,
            config,
            recorder,
            metrics,
            lockdown: Lockdown::default(),
            budget: MemoryBudget::for_limit(crate::budget::DEFAULT_MEMORY_LIMIT),
            registries: RegistryClients::new()?,
            remembered: Mutex::default(),
            failures: Mutex::default(),
        })
    }

    /// The artifact remembered for the Source `key`.
    pub fn remembered(&self, key: &str) -> Option<Remembered> {
        self.remembered
            .lock()
            .ok()
            .and_then(|c| c.get(key).cloned())
    }

    pub fn remember(&self, key: String, entry: Remembered) {
        if let Ok(mut c) = self.remembered.lock() {
            c.insert(key, entry);
        }
    }

    /// Drops the verified artifact remembered for a Source: the next reconcile pulls and
    /// verifies again.
    pub fn forget(&self, key: &str) {
        if let Ok(mut c) = self.remembered.lock() {
            c.remove(key);
        }
    }

    /// Drops one remembered artifact to return its memory to the budget (its Source pulls it
    /// again at its next reconcile); false when nothing is remembered.
    pub fn evict_one(&self) -> bool {
        let Ok(mut c) = self.remembered.lock() else {
            return false;
        };
        let Some(victim) = c.keys().next().cloned() else {
            return false;
        };
        tracing::info!(source = %victim, "memory budget full: dropping a cached artifact");
        c.remove(&victim);
        true
    }

    /// Forgets every Source whose key is not in `live` (deleted Sources): a Source
    /// re-created under the same name never inherits its predecessor's verified artifact.
    pub fn retain_sources(&self, live: &HashSet<String>) {
        if let Ok(mut c) = self.remembered.lock() {
            c.retain(|k, _| live.contains(k));
        }
        self.registries.retain(live);
        if let Ok(mut f) = self.failures.lock() {
            f.retain(|k, _| live.contains(k));
        }
    }

    /// One more consecutive failure of the Source `key`; returns the count.
    pub fn failed(&self, key: &str) -> u32 {
        self.failures
            .lock()
            .map(|mut f| {
                let n = f.entry(key.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1)
    }

    /// The Source `key` succeeded: its backoff starts over.
    pub fn succeeded(&self, key: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(key);
        }
    }
}
