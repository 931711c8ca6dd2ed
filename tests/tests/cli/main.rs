//! End-to-end tests of the `berth` CLI against the real registries: push, pull and promote,
//! error exits, invalid input, progress output, and interop with flux, oras and cosign. One test
//! binary; each module is one subject, `common` holds what they share.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests report failure by panicking

mod common;

mod cosign_interop;
mod flux_oras_interop;
mod invalid_input;
mod progress;
mod promote;
mod push_pull;
mod registry_errors;
mod registry_rejects;
