//! berth: the CI-side library. It knows OCI references, artifacts, registries and
//! cosign-compatible signatures, and nothing about Kubernetes clusters.
