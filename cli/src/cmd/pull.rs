//! `berth pull oci://… -o DIR`: fetch by digest, verify, unpack safely.

use std::path::PathBuf;

use clap::Args;

use berth::artifact::Limits;
use berth::digest::Digest;
use berth::reference::Reference;
use berth::registry::Registry;
use berth::transfer;

use super::{Failure, Global, parse_reference, print_json};

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Artifact to pull: oci://REGISTRY/REPOSITORY:TAG or …@sha256:DIGEST.
    pub reference: String,
    /// Directory to unpack the files into (created if missing; existing files are replaced).
    #[arg(short, long, value_name = "DIR")]
    pub output_dir: PathBuf,
    /// Refuse artifacts whose files add up to more than this many bytes once unpacked.
    #[arg(long, value_name = "BYTES", default_value_t = berth::artifact::MAX_UNPACKED_BYTES)]
    pub max_size: u64,
}

/// The digest a reference names: its own, or what its tag points to now (one HEAD request).
pub async fn digest_of(registry: &Registry, reference: &Reference) -> Result<Digest, Failure> {
    reference.require_tag_or_digest()?;
    match reference.digest() {
        Some(d) => Ok(d.clone()),
        None => Ok(registry.resolve(reference).await?),
    }
}

pub async fn run(global: &Global, args: PullArgs) -> Result<(), Failure> {
    let reference = parse_reference(&args.reference)?;
    let registry = global.registry(&reference)?;
    let digest = digest_of(&registry, &reference).await?;
    let limits = Limits { max_bytes: args.max_size, ..Limits::default() };
    let (_artifact, files) = transfer::pull(&registry, reference.repository(), &digest, &args.output_dir, limits).await?;
    if global.json() {
        print_json(&serde_json::json!({
            "digest": digest.to_string(),
            "path": args.output_dir.display().to_string(),
            "files": files.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
        }))?;
    } else {
        println!("{digest}");
        eprintln!("pulled {} files into {}", files.len(), args.output_dir.display());
    }
    Ok(())
}
