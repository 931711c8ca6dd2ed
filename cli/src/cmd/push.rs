//! `berth push oci://REGISTRY/REPO:TAG PATH`: validate, build, upload, tag (and sign).

use std::path::PathBuf;

use clap::Args;

use berth::input::{self, Input};
use berth::transfer::{self, BuildInput};

use super::pack::BuildArgs;
use super::{Failure, Global, parse_reference, print_json, progress_bar, signing};

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Destination, with a tag: oci://REGISTRY/REPOSITORY:TAG.
    pub reference: String,
    /// Manifests to push: a directory (recursive, honouring .berthignore), a file, - for stdin,
    /// or an OCI image layout written by `berth pack` (pushed unchanged).
    pub path: String,
    #[command(flatten)]
    pub build: BuildArgs,
    /// Sign the pushed digest with this cosign private key (password from COSIGN_PASSWORD or a prompt).
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
    /// Signature format with --sign-key: classic, bundle, or auto (bundle where the
    /// registry has the referrers API, classic elsewhere).
    #[arg(long, value_name = "FORMAT", default_value = "auto")]
    pub sign_format: String,
}

pub async fn run(global: &Global, args: PushArgs) -> Result<(), Failure> {
    let reference = parse_reference(&args.reference)?;
    let Some(tag) = reference.tag().map(str::to_string) else {
        return Err(Failure::usage(
            format!("{reference} has no tag; push needs one"),
            format!("write {}:TAG", reference.repository_only()),
        ));
    };
    if reference.digest().is_some() {
        return Err(Failure::usage(
            format!("{reference}: push takes a tag, not a digest"),
            "the digest is computed from the content; name only the tag",
        ));
    }
    let repo = reference.repository().to_string();
    // Validate the input before the first byte goes to the registry.
    let input = input::collect(&args.path)?;
    // Unlock the signing key up front too: a wrong password must stop the push, not leave
    // an unsigned artifact behind.
    let signer = match &args.sign_key {
        Some(key) => Some(signing::prepare_push_signing(key, &args.sign_format)?),
        None => None,
    };
    let (registry, outcome) = match input {
        Input::Layout(dir) => {
            let registry = global.registry(&reference)?;
            if args.build.has_metadata_flags() {
                return Err(Failure::usage(
                    format!(
                        "{} is an OCI image layout: its metadata was fixed by `berth pack`",
                        dir.display()
                    ),
                    "pass --source/--revision/--annotation/--created to `berth pack` instead",
                ));
            }
            let (descriptor, _) = berth::layout::read_manifest(&dir)?;
            let bar = progress_bar(global, descriptor.size, "pushing");
            let result = transfer::push_layout(
                &registry,
                &repo,
                &tag,
                &dir,
                bar.as_ref().map(|b| b.1.clone()),
            )
            .await;
            if let Some((bar, _)) = bar {
                bar.finish_and_clear();
            }
            (registry, result?)
        }
        Input::Files {
            files,
            _spool: spool,
        } => {
            let meta = args.build.metadata()?;
            let input = BuildInput {
                files,
                spool,
                name: args.path.clone(),
                meta,
                rules: args.build.rules(),
            };
            // The bar appears once the build knows the layer's size.
            let mut shown = None;
            let result = transfer::push_artifact(
                input,
                || global.registry(&reference),
                &repo,
                &tag,
                |size| {
                    let (bar, progress) = progress_bar(global, size, "pushing")?;
                    shown = Some(bar);
                    Some(progress)
                },
            )
            .await;
            if let Some(bar) = shown {
                bar.finish_and_clear();
            }
            result?
        }
    };
    let pinned = reference.with_tag(&tag);
    let url = format!("{pinned}@{}", outcome.digest);
    if let Some(signer) = &signer {
        signing::sign_after_push(global, &registry, &repo, &outcome.digest, signer).await?;
    }
    if global.json() {
        print_json(&serde_json::json!({
            "repository": format!("{}/{}", reference.registry(), repo),
            "tag": tag,
            "digest": outcome.digest.to_string(),
            "url": url,
        }))?;
    } else {
        println!("{url}");
        eprintln!(
            "pushed {} ({} blobs uploaded)",
            outcome.digest, outcome.uploaded_blobs
        );
    }
    Ok(())
}
