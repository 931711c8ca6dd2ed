//! End-to-end tests of what `deploy/` ships: the kustomizations installed on a real API server
//! (empty cluster, tenants, the DaemonSet overlay) and the CI templates run as written. One test
//! binary; each module is one subject, `common` holds what they share.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests report failure by panicking

mod common;

mod ci_templates;
mod daemonset;
mod install;
mod tenant;
