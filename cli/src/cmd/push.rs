//! `berth push oci://REGISTRY/REPO:TAG PATH`: validate, build, upload, tag (and sign).

use std::path::PathBuf;

use clap::Args;

use berth::input::{self, Input};
use berth::transfer;

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
    // Validate and build everything before the first byte goes to the registry.
    let input = input::collect(&args.path)?;
    // Unlock the signing key up front too: a wrong password must stop the push, not leave
    // an unsigned artifact behind.
    let signer = match &args.sign_key {
        Some(key) => Some(signing::prepare_push_signing(key, &args.sign_format)?),
        None => None,
    };
    let (outcome, registry) = match input {
        Input::Layout(dir) => {
            let registry = global.registry(&reference)?;
            if args.build.has_metadata_flags() {
                return Err(Failure::usage(
                    format!("{} is an OCI image layout: its metadata was fixed by `berth pack`", dir.display()),
                    "pass --source/--revision/--annotation/--created to `berth pack` instead",
                ));
            }
            let (descriptor, _) = berth::layout::read_manifest(&dir)?;
            let progress = progress_bar(global, descriptor.size, "pushing");
            let result =
                transfer::push_layout(&registry, &repo, &tag, &dir, progress.as_ref().map(|p| p.1.clone())).await;
            if let Some((bar, _)) = progress {
                bar.finish_and_clear();
            }
            (result?, registry)
        }
        Input::Files { files, _spool } => {
            let meta = args.build.metadata()?;
            let (path, rules) = (args.path.clone(), args.build.rules());
            // Build on a blocking thread; meanwhile connect, obtain push access and do the
            // registry work that does not need the layer. A failed validation leaves at most
            // the config blob (the same for every berth artifact, referenced by nothing).
            let building = tokio::task::spawn_blocking(move || berth::artifact::build(&files, &path, &meta, rules));
            // The client (TLS roots, credentials) is set up while the build runs; if both
            // fail, the input's error comes first.
            let registry = match global.registry(&reference) {
                Ok(registry) => registry,
                Err(failure) => {
                    if let Ok(Err(invalid)) = building.await {
                        return Err(invalid.into());
                    }
                    return Err(failure);
                }
            };
            let (built, prepared) = tokio::join!(building, transfer::prepare_push(&registry, &repo));
            let built = built.map_err(|e| {
                Failure::new(
                    super::Exit::Generic,
                    format!("the build thread failed: {e}"),
                    "this is a bug in berth; please report it",
                )
            });
            let built = match built.and_then(|b| b.map_err(Failure::from)) {
                Ok(built) => built,
                Err(failure) => {
                    if let Ok(prepared) = prepared {
                        transfer::abandon_push(&registry, &repo, prepared).await;
                    }
                    return Err(failure);
                }
            };
            // A registry problem is reported after validation, as before: bad input comes first.
            let prepared = prepared?;
            drop(_spool);
            let progress = progress_bar(global, built.layer.size, "pushing");
            let result =
                transfer::push_built(&registry, &repo, &tag, &built, prepared, progress.as_ref().map(|p| p.1.clone()))
                    .await;
            if let Some((bar, _)) = progress {
                bar.finish_and_clear();
            }
            (result?, registry)
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
        eprintln!("pushed {} ({} blobs uploaded)", outcome.digest, outcome.uploaded_blobs);
    }
    Ok(())
}
