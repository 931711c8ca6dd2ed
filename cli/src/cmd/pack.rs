//! `berth pack PATH -o DIR`: validate and write an OCI image layout, offline.

use std::path::PathBuf;

use clap::Args;

use berth::artifact::{self, BuiltArtifact, Metadata};
use berth::input::{self, Input};
use berth::layout;
use berth::manifests::Rules;

use super::{Failure, Global, print_json, source_date_epoch};

/// What an artifact is built from: the input and the metadata recorded in its manifest.
/// Shared by `pack`, `push` and `diff` so they build byte-identical artifacts.
#[derive(Debug, Clone, Args)]
pub struct BuildArgs {
    /// Source of the manifests, recorded as org.opencontainers.image.source (e.g. the Git URL).
    #[arg(long)]
    pub source: Option<String>,
    /// Revision, recorded as org.opencontainers.image.revision (e.g. main@sha1:<commit>).
    #[arg(long)]
    pub revision: Option<String>,
    /// Extra manifest annotation KEY=VALUE (repeatable).
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Creation time (RFC 3339) recorded as org.opencontainers.image.created.
    /// Default: SOURCE_DATE_EPOCH if set, else 1970-01-01T00:00:00Z — never the clock,
    /// so the same files always give the same digest.
    #[arg(long, value_name = "RFC3339")]
    pub created: Option<String>,
    /// Allow Secrets with plain-text data/stringData (SOPS and SealedSecrets always pass).
    #[arg(long)]
    pub allow_secrets: bool,
}

impl BuildArgs {
    pub fn metadata(&self) -> Result<Metadata, Failure> {
        Ok(Metadata {
            source: self.source.clone(),
            revision: self.revision.clone(),
            created: artifact::created_timestamp(
                self.created.as_deref(),
                source_date_epoch().as_deref(),
            )?,
            annotations: artifact::parse_annotations(&self.annotations)?,
        })
    }

    pub fn rules(&self) -> Rules {
        Rules {
            allow_secrets: self.allow_secrets,
        }
    }

    /// Whether any metadata flag was given (they cannot apply to a prebuilt layout).
    pub fn has_metadata_flags(&self) -> bool {
        self.source.is_some()
            || self.revision.is_some()
            || !self.annotations.is_empty()
            || self.created.is_some()
    }
}

/// Build the artifact for `path` (a directory, file or `-`); a layout is refused here.
pub fn build_from_path(path: &str, build: &BuildArgs) -> Result<BuiltArtifact, Failure> {
    match input::collect(path)? {
        Input::Files { files, _spool } => {
            let meta = build.metadata()?;
            Ok(artifact::build(&files, path, &meta, build.rules())?)
        }
        Input::Layout(dir) => Err(Failure::usage(
            format!("{} is an OCI image layout, not manifests", dir.display()),
            "pass the directory with the manifests",
        )),
    }
}

#[derive(Debug, Args)]
pub struct PackArgs {
    /// Manifests to pack: a directory (recursive, honouring .berthignore), a file, or - for stdin.
    pub path: String,
    /// Directory to write the OCI image layout to (created if missing).
    #[arg(short, long, value_name = "DIR")]
    pub output_dir: PathBuf,
    #[command(flatten)]
    pub build: BuildArgs,
}

pub async fn run(global: &Global, args: PackArgs) -> Result<(), Failure> {
    let built = build_from_path(&args.path, &args.build)?;
    let descriptor = layout::write(
        &args.output_dir,
        &built.manifest,
        (&built.config, &built.config_bytes),
        (&built.layer, &built.layer_path),
    )?;
    if global.json() {
        print_json(&serde_json::json!({
            "digest": descriptor.digest.to_string(),
            "layout": args.output_dir.display().to_string(),
            "objects": built.objects,
            "files": built.files,
        }))?;
    } else {
        println!("{}", descriptor.digest);
        eprintln!(
            "packed {} objects from {} files into {}",
            built.objects,
            built.files,
            args.output_dir.display()
        );
    }
    Ok(())
}
