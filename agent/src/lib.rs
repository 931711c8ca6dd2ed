//! berth-agent: the cluster-side library. It turns a verified berth artifact into
//! objects in a Kubernetes cluster with server-side apply, prune and health checks.
