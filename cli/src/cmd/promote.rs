//! `berth promote oci://SRC@sha256:… oci://DEST[:TAG]`: copy an artifact by digest, keep the
//! digest, copy its signatures.

use std::path::PathBuf;

use clap::Args;

use berth::transfer;

use super::{Failure, Global, parse_reference, print_json, signing};

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// Source artifact by digest: oci://REGISTRY/REPOSITORY@sha256:DIGEST.
    pub source: String,
    /// Destination: oci://REGISTRY/REPOSITORY[:TAG] (without a tag the artifact is stored by digest only).
    pub destination: String,
    /// Accept a tag as the source and promote whatever digest it points to now.
    #[arg(long)]
    pub resolve: bool,
    /// Verify the source's signature with this cosign public key before promoting.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Credentials USER:PASSWORD for the destination registry (default: the same as the source).
    #[arg(long, value_name = "USER:PASSWORD")]
    pub dest_creds: Option<String>,
    /// CA file for the destination registry (default: --ca-file).
    #[arg(long, value_name = "FILE")]
    pub dest_ca_file: Option<PathBuf>,
    /// Plain HTTP for the destination registry: true or false (default: --insecure).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub dest_insecure: Option<bool>,
}

impl PromoteArgs {
    /// The global flags with the destination overrides applied.
    fn destination_global(&self, global: &Global) -> Global {
        let mut dest = global.clone();
        if let Some(creds) = &self.dest_creds {
            dest.creds = Some(creds.clone());
        }
        if let Some(ca) = &self.dest_ca_file {
            dest.ca_file = Some(ca.clone());
        }
        if let Some(insecure) = self.dest_insecure {
            dest.insecure = insecure;
        }
        dest
    }
}

pub async fn run(global: &Global, args: PromoteArgs) -> Result<(), Failure> {
    let source = parse_reference(&args.source)?;
    let destination = parse_reference(&args.destination)?;
    if destination.digest().is_some() {
        return Err(Failure::usage(
            format!("{destination}: the destination takes a tag, not a digest"),
            "the digest is preserved; name the destination repository and optionally a tag",
        ));
    }
    let src = global.registry(&source)?;
    let digest = match (source.digest(), source.tag()) {
        (Some(d), _) => d.clone(),
        (None, Some(_)) if args.resolve => src.resolve(&source).await?,
        (None, Some(tag)) => {
            return Err(Failure::usage(
                format!(
                    "{source} names a tag; promote takes a digest so that what you verified is what you ship"
                ),
                format!(
                    "promote {}@sha256:…, or pass --resolve to promote what tag '{tag}' points to now",
                    source.repository_only()
                ),
            ));
        }
        (None, None) => {
            source.require_tag_or_digest()?;
            unreachable_reference()?
        }
    };
    if let Some(key) = &args.key {
        signing::verify_before_promote(global, &src, source.repository(), &digest, key).await?;
    }
    let dst = args.destination_global(global).registry(&destination)?;
    let outcome = transfer::copy(
        &src,
        source.repository(),
        &digest,
        &dst,
        destination.repository(),
        destination.tag(),
    )
    .await?;
    let signatures = signing::copy_signatures_after_promote(
        global,
        &src,
        source.repository(),
        &dst,
        destination.repository(),
        &digest,
    )
    .await?;
    let url = format!("{destination}@{digest}");
    if global.json() {
        print_json(&serde_json::json!({
            "repository": format!("{}/{}", destination.registry(), destination.repository()),
            "tag": destination.tag(),
            "digest": digest.to_string(),
            "url": url,
            "signatures": signatures,
        }))?;
    } else {
        println!("{url}");
        eprintln!(
            "promoted {digest} ({} blobs uploaded, {signatures} signatures copied)",
            outcome.uploaded_blobs
        );
    }
    Ok(())
}

/// `require_tag_or_digest` already failed for a bare repository; this keeps the match total.
fn unreachable_reference() -> Result<berth::digest::Digest, Failure> {
    Err(Failure::usage(
        "the source needs a digest",
        "write oci://REGISTRY/REPOSITORY@sha256:DIGEST",
    ))
}
