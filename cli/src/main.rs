//! The `berth` command line: pack, sign, push and promote Kubernetes configuration.

use clap::Parser;

/// Pack rendered Kubernetes manifests into signed, reproducible OCI artifacts,
/// push them to any registry and promote them by digest.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
