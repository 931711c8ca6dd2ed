//! `berth-agent run`: the kube-runtime controller over `Source` objects — watches Sources,
//! runs [`crate::reconcile::reconcile`], requeues after each Source's interval and backs off
//! on errors, until SIGTERM/ctrl-c; with leader election only while this replica holds the
//! Lease.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Config};
use tokio::sync::watch;

use crate::context::Context;
use crate::leader::{self, Election, ElectionConfig, LeaderError};
use crate::metrics::Metrics;
use crate::receiver::{ReceiverConfig, ReceiverError, Triggers};
use crate::reconcile;
use crate::runtime::RuntimeState;
use crate::server::{Probes, ServeError};
use crate::source::Source;

/// Sources reconciled at the same time: bounds memory (each holds one artifact) and API load.
pub const MAX_CONCURRENT_RECONCILES: u16 = 4;
/// How often what is remembered about deleted Sources is dropped. A Source re-created under
/// the same name is told apart by its uid before then.
const FORGET_DELETED_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("no usable kubeconfig or in-cluster config: {0}")]
    Config(String),
    #[error(
        "the Source CRD is not installed or not readable ({0}); install it: berth-agent crd | kubectl apply -f -"
    )]
    CrdMissing(kube::Error),
    #[error(transparent)]
    Leader(#[from] LeaderError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Receiver(#[from] ReceiverError),
}

/// How `berth-agent run` runs: scope, leader election, metrics, shutdown.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Only watch Sources in this namespace (default: all namespaces).
    pub watch_namespace: Option<String>,
    /// Leader election on a Lease; `None` reconciles unconditionally (a single replica).
    pub election: Option<LeaseOptions>,
    /// Serve `/metrics`, `/healthz` and `/readyz` here.
    pub metrics_addr: Option<SocketAddr>,
    /// Time in-flight reconciles get to finish after SIGTERM before they are abandoned.
    pub shutdown_grace: Duration,
    /// Push-triggered reconciles over HTTP.
    pub receiver: Option<ReceiverConfig>,
    /// Tenant lockdown rules applied to every Source.
    pub lockdown: crate::lockdown::Lockdown,
    /// The container's memory limit in bytes; artifacts share a budget derived from it.
    pub memory_limit: u64,
}

/// The Lease the replicas compete for.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    pub name: String,
    /// Default: `POD_NAMESPACE`, else the kubeconfig's namespace.
    pub namespace: Option<String>,
    pub duration: Duration,
    /// Default: [`leader::default_identity`].
    pub identity: Option<String>,
}

/// Why one leadership term of the controller ended.
#[derive(Debug, PartialEq, Eq)]
enum TermEnd {
    Shutdown,
    LostLease,
}

/// Runs until a shutdown signal.
pub async fn run(opts: RunOptions) -> Result<(), ControllerError> {
    let config = Config::infer()
        .await
        .map_err(|e| ControllerError::Config(e.to_string()))?;
    let client =
        Client::try_from(config.clone()).map_err(|e| ControllerError::Config(e.to_string()))?;
    let sources: Api<Source> = match &opts.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    sources
        .list(&ListParams::default().limit(1))
        .await
        .map_err(ControllerError::CrdMissing)?;
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(RuntimeState::default());
    if let Some(addr) = opts.metrics_addr {
        let probes = Probes {
            client: client.clone(),
            state: state.clone(),
            metrics: metrics.clone(),
        };
        crate::server::serve_probes(addr, probes).await?;
    }
    let triggers = Triggers::default();
    if let Some(r) = opts.receiver {
        crate::receiver::serve(client.clone(), r, triggers.clone(), state.clone()).await?;
    }
    let lead = |leading: bool| {
        state.set_leader(leading);
        metrics.set_leader(leading);
    };

    let reporter = Reporter {
        controller: "berth-agent".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let mut ctx = Context::new(client.clone(), config.clone(), recorder, metrics.clone())
        .map_err(|e| ControllerError::Config(format!("creating a private temp dir: {e}")))?;
    if !opts.lockdown.is_empty() {
        tracing::info!(rules = ?opts.lockdown, "tenant lockdown on");
    }
    ctx.lockdown = opts.lockdown;
    ctx.budget = crate::budget::MemoryBudget::for_limit(opts.memory_limit);
    tracing::info!(
        memory_limit = opts.memory_limit,
        artifact_budget = ctx.budget.total(),
        per_artifact = ctx.budget.share(),
        "memory budget"
    );
    let ctx = Arc::new(ctx);
    let mut shutdown = crate::shutdown::on_signal();
    let election = match opts.election {
        Some(l) => {
            let namespace = l
                .namespace
                .or_else(|| {
                    std::env::var("POD_NAMESPACE")
                        .ok()
                        .filter(|n| !n.is_empty())
                })
                .unwrap_or_else(|| config.default_namespace.clone());
            let identity = l.identity.unwrap_or_else(leader::default_identity);
            tracing::info!(lease = %l.name, namespace = %namespace, identity = %identity, "leader election on");
            let cfg = ElectionConfig {
                lease_name: l.name,
                namespace,
                identity,
                lease_duration: l.duration,
            };
            Some(Election::start(client.clone(), cfg).await?)
        }
        None => None,
    };
    state.set_started();

    tracing::info!(
        namespace = opts.watch_namespace.as_deref().unwrap_or("(all)"),
        "controller started"
    );
    match &election {
        None => {
            lead(true);
            run_term(
                sources,
                ctx,
                &state,
                &triggers,
                shutdown,
                None,
                opts.shutdown_grace,
            )
            .await;
        }
        Some(election) => loop {
            lead(false);
            let mut leading = election.subscribe();
            let became_leader = tokio::select! {
                r = async { leading.wait_for(|l| *l).await.is_ok() } => r,
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => false,
            };
            if !became_leader {
                break;
            }
            lead(true);
            if run_term(
                sources.clone(),
                ctx.clone(),
                &state,
                &triggers,
                shutdown.clone(),
                Some(leading),
                opts.shutdown_grace,
            )
            .await
                == TermEnd::Shutdown
            {
                break;
            }
        },
    }
    lead(false);
    if let Some(election) = election {
        election.release().await;
    }
    tracing::info!("controller stopped");
    Ok(())
}

/// Runs the controller while this replica may (for ever without election). Losing the Lease
/// drops the controller at once, which cancels the reconciles in flight at their next API
/// request: a former leader must not apply next to the new one. SIGTERM instead stops new
/// work and gives the in-flight reconciles `grace` to finish.
async fn run_term(
    sources: Api<Source>,
    ctx: Arc<Context>,
    state: &Arc<RuntimeState>,
    triggers: &Triggers,
    mut shutdown: watch::Receiver<bool>,
    leading: Option<watch::Receiver<bool>>,
    grace: Duration,
) -> TermEnd {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // Status and inventory writes also wake the controller; the reconcile they trigger finds
    // the digest unchanged and nothing drifted, writes nothing, and so the chain ends there.
    let controller = Controller::new(sources, watcher::Config::default());
    // /readyz of a leader waits for the Source cache of this term to be filled.
    let store = controller.store();
    // Deleted Sources are forgotten (their verified artifact, registry client, failures).
    let sweeper = {
        let store = store.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FORGET_DELETED_EVERY);
            loop {
                tick.tick().await;
                // Never awaited for long: the readiness channel wakes only its last poller.
                if !matches!(
                    tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready())
                        .await,
                    Ok(Ok(()))
                ) {
                    continue;
                }
                let live = store.state().iter().map(|s| s.key()).collect();
                ctx.retain_sources(&live);
            }
        })
    };
    let _abort_sweeper = AbortOnDrop(sweeper);
    state.set_synced(false);
    let state = state.clone();
    let synced = tokio::spawn(async move {
        // Polled again every half second: the store's readiness is a oneshot channel that
        // wakes only its last poller, and kube-runtime's own scheduler waits on it too.
        loop {
            match tokio::time::timeout(Duration::from_millis(500), store.wait_until_ready()).await {
                Ok(Ok(())) => {
                    tracing::debug!("Source cache synced");
                    state.set_synced(true);
                    break;
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "Source cache never synced");
                    break;
                }
                Err(_) => {}
            }
        }
    });
    let controller = controller
        .with_config(ControllerConfig::default().concurrency(MAX_CONCURRENT_RECONCILES))
        .reconcile_on(triggers.stream())
        .graceful_shutdown_on(async move {
            let _ = stop_rx.await;
        })
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(source = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile ended with an error"),
            }
        });
    tokio::pin!(controller);
    // The task only waits on the store; it must not outlive the term.
    let _abort_sync_wait = AbortOnDrop(synced);
    let lost = async {
        match leading {
            Some(mut l) => {
                let _ = l.wait_for(|v| !*v).await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = &mut controller => return TermEnd::Shutdown,
        _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {}
        _ = lost => {
            tracing::warn!("no longer the leader: abandoning in-flight reconciles");
            return TermEnd::LostLease;
        }
    }
    tracing::info!(grace = ?grace, "shutting down: no new reconciles, waiting for those in flight");
    let _ = stop_tx.send(());
    if tokio::time::timeout(grace, &mut controller).await.is_err() {
        tracing::warn!(
            "in-flight reconciles abandoned after the grace period; the next leader redoes them"
        );
    }
    TermEnd::Shutdown
}

/// Aborts a background task when the term that started it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
