//! End-to-end tests of `berth-agent`: `apply` and `diff`, the controller (`run`) reconciling
//! Sources from real registries, and what it does in production (leader election, metrics,
//! push receiver, rollback, shutdown, lockdown), against the real API server. One test binary;
//! each module is one subject, `common` holds what they share.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests report failure by panicking

mod common;

mod apiserver_restart;
mod apply_engine;
mod apply_semantics;
mod corpus;
mod health_rules;
mod hostile_artifacts;
mod leader_election;
mod lockdown;
mod metrics;
mod receiver;
mod receiver_limits;
mod rollback;
mod shutdown;
mod source_reconcile;
mod trust_changes;
