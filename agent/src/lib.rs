//! berth-agent: the cluster-side library. It turns a verified berth artifact into
//! objects in a Kubernetes cluster with server-side apply, prune and health checks.
//!
//! Reading order: [`source`] (the custom resource), [`reconcile`] (the phases of one
//! reconcile), [`engine`] (plan → dry-run → apply → prune → wait over one set of manifests),
//! then the parts it uses: [`plan`], [`apply`], [`inventory`], [`health`], and below them
//! [`applyset`] (the labels, annotations and apply stages they share) and [`discovery`].

pub mod access;
pub mod api_error;
pub mod apply;
pub mod applyset;
pub mod budget;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod discovery;
pub mod duration;
pub mod engine;
pub mod fetch;
pub mod health;
pub mod inventory;
pub mod leader;
pub mod lockdown;
pub mod metrics;
pub mod ownership;
pub mod plan;
pub mod receiver;
pub mod reconcile;
pub mod rollback;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod source;
pub mod status;
