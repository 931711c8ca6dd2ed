//! The `berth-agent` binary: runs in the cluster and keeps it in step with signed artifacts.

use clap::Parser;

/// Keep a Kubernetes cluster in step with signed berth artifacts in an OCI registry.
#[derive(Debug, Parser)]
#[command(name = "berth-agent", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
