//! `berth pull oci://… -o DIR`: fetch by digest, verify, unpack safely.

use std::path::PathBuf;

use clap::Args;

use berth::artifact::Limits;
use berth::digest::Digest;
use berth::reference::Reference;
use berth::registry::Registry;
use berth::transfer;

use berth::artifact::{self, LayerFile};
use berth::manifests::{self, ManifestError, ManifestObject, Rules};

use super::{Exit, Failure, Global, parse_reference, print_json};

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

/// Downloads an artifact's layer and parses every manifest file in it, handing each file's
/// result to `each` (Secrets are allowed: this reads what is already published). Returns the
/// layer's file list. Shared by `inspect` and `diff`.
pub async fn read_remote_manifests(
    registry: &Registry,
    repo: &str,
    artifact: &transfer::ArtifactManifest,
    mut each: impl FnMut(Result<Vec<ManifestObject>, ManifestError>),
) -> Result<Vec<LayerFile>, Failure> {
    let layer = transfer::download_layer(registry, repo, artifact).await?;
    let file = std::fs::File::open(layer.path()).map_err(|e| {
        Failure::new(
            Exit::Generic,
            format!("{}: {e}", layer.path().display()),
            "check free space in the temp dir",
        )
    })?;
    let files = artifact::read_layer(
        std::io::BufReader::new(file),
        Limits::default(),
        |f, content| {
            if !manifests::is_manifest_name(&f.name) || f.size > manifests::MAX_MANIFEST_FILE_BYTES
            {
                return Ok(());
            }
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(content, &mut bytes).map_err(|e| {
                artifact::ArtifactError::Corrupt {
                    detail: e.to_string(),
                }
            })?;
            each(manifests::parse_file(
                &f.name,
                &bytes,
                Rules {
                    allow_secrets: true,
                },
            ));
            Ok(())
        },
    )?;
    Ok(files)
}

pub async fn run(global: &Global, args: PullArgs) -> Result<(), Failure> {
    let reference = parse_reference(&args.reference)?;
    let registry = global.registry(&reference)?;
    let digest = digest_of(&registry, &reference).await?;
    let limits = Limits {
        max_bytes: args.max_size,
        ..Limits::default()
    };
    let (_artifact, files) = transfer::pull(
        &registry,
        reference.repository(),
        &digest,
        &args.output_dir,
        limits,
    )
    .await?;
    if global.json() {
        print_json(&serde_json::json!({
            "digest": digest.to_string(),
            "path": args.output_dir.display().to_string(),
            "files": files.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
        }))?;
    } else {
        println!("{digest}");
        eprintln!(
            "pulled {} files into {}",
            files.len(),
            args.output_dir.display()
        );
    }
    Ok(())
}
