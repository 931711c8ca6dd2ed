//! berth: the CI-side library. It knows OCI references, artifacts, registries and
//! cosign-compatible signatures, and nothing about Kubernetes clusters.

pub mod artifact;
pub mod digest;
pub mod input;
pub mod layout;
pub mod manifests;
pub mod oci;
pub mod reference;
pub mod registry;
pub mod signature;
pub mod transfer;
