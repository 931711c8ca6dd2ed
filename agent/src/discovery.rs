//! What the API server serves, and how to address it: [`ApiDiscovery`] discovers the
//! server's resources once and keeps them until a kind is missing (e.g. after this agent
//! applied a CRD), and [`api_for`] is the dynamic API of one resource in one namespace or
//! cluster-wide. Knows nothing of plans or sets.

use std::fmt;

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};

use crate::api_error;

/// A resource the server serves, and whether its objects live in namespaces.
pub type Served = (ApiResource, bool);

#[derive(Debug, thiserror::Error)]
#[error("discovery of the API server's resources failed: {}; check the API server is reachable", api_error::message(.source))]
pub struct DiscoveryError {
    pub source: kube::Error,
}

impl DiscoveryError {
    /// Whether discovery got no answer from the API server at all.
    pub fn unreachable(&self) -> bool {
        api_error::is_unreachable(&self.source)
    }
}

/// Where a plan looks up the kinds of its manifests: the API server's discovery, or a fixed
/// table in tests.
pub trait ServedKinds {
    /// Resource and scope of an exact group/version/kind, `None` when it is not served.
    fn resolve_gvk(
        &mut self,
        gvk: &GroupVersionKind,
    ) -> impl Future<Output = Result<Option<Served>, DiscoveryError>> + Send;
}

/// What the API server serves, discovered once and refreshed on demand.
pub struct ApiDiscovery {
    client: Client,
    discovered: Option<Discovery>,
}

impl fmt::Debug for ApiDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiDiscovery")
            .field("discovered", &self.discovered.is_some())
            .finish()
    }
}

impl ApiDiscovery {
    pub fn new(client: Client) -> Self {
        ApiDiscovery {
            client,
            discovered: None,
        }
    }

    /// Forgets what was discovered; the next lookup runs discovery again (e.g. after this
    /// agent applied a CRD).
    pub fn invalidate(&mut self) {
        self.discovered = None;
    }

    async fn ensure(&mut self) -> Result<&Discovery, DiscoveryError> {
        let d = match self.discovered.take() {
            Some(d) => d,
            // Aggregated discovery: two requests for the whole server instead of one per group.
            None => Discovery::new(self.client.clone())
                .run_aggregated()
                .await
                .map_err(|source| DiscoveryError { source })?,
        };
        Ok(&*self.discovered.insert(d))
    }

    /// Resource and scope of a group/kind at the server's preferred version (for prune,
    /// where the recorded inventory has no version).
    pub async fn resolve_group_kind(
        &mut self,
        group: &str,
        kind: &str,
    ) -> Result<Option<Served>, DiscoveryError> {
        let d = self.ensure().await?;
        Ok(d.get(group)
            .and_then(|g| g.recommended_kind(kind))
            .map(|(ar, caps)| (ar, caps.scope == Scope::Namespaced)))
    }
}

impl ServedKinds for ApiDiscovery {
    async fn resolve_gvk(
        &mut self,
        gvk: &GroupVersionKind,
    ) -> Result<Option<Served>, DiscoveryError> {
        let d = self.ensure().await?;
        Ok(d.resolve_gvk(gvk)
            .map(|(ar, caps)| (ar, caps.scope == Scope::Namespaced)))
    }
}

/// The dynamic API of `resource` in `namespace`, or cluster-wide for `None`.
pub fn api_for(
    client: &Client,
    resource: &ApiResource,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    }
}
