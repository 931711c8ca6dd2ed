//! `berth-agent run`: the kube-runtime controller over `Source` objects — watches Sources,
//! runs [`crate::reconcile::reconcile`], requeues after each Source's interval and backs off
//! on errors, until SIGTERM/ctrl-c.

use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Config};

use crate::reconcile::{self, Context};
use crate::source::Source;

/// Sources reconciled at the same time: bounds memory (each holds one artifact) and API load.
pub const MAX_CONCURRENT_RECONCILES: u16 = 4;

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("no usable kubeconfig or in-cluster config: {0}")]
    Config(String),
    #[error("the Source CRD is not installed or not readable ({0}); install it: berth-agent crd | kubectl apply -f -")]
    CrdMissing(kube::Error),
}

/// Runs until a shutdown signal.
pub async fn run(watch_namespace: Option<String>) -> Result<(), ControllerError> {
    let config = Config::infer().await.map_err(|e| ControllerError::Config(e.to_string()))?;
    let client = Client::try_from(config.clone()).map_err(|e| ControllerError::Config(e.to_string()))?;
    let sources: Api<Source> = match &watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    sources.list(&ListParams::default().limit(1)).await.map_err(ControllerError::CrdMissing)?;

    let reporter = Reporter { controller: "berth-agent".into(), instance: std::env::var("POD_NAME").ok() };
    let recorder = Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(
        Context::new(client, config, recorder).map_err(|e| ControllerError::Config(format!("creating a private temp dir: {e}")))?,
    );

    tracing::info!(namespace = watch_namespace.as_deref().unwrap_or("(all)"), "controller started");
    // Status and inventory writes also wake the controller; the reconcile they trigger finds
    // the digest unchanged and nothing drifted, writes nothing, and so the chain ends there.
    Controller::new(sources, watcher::Config::default())
        .with_config(ControllerConfig::default().concurrency(MAX_CONCURRENT_RECONCILES))
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(source = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile ended with an error"),
            }
        })
        .await;
    tracing::info!("controller stopped");
    Ok(())
}
