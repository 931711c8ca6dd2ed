//! Moving artifacts between the disk and registries: building and pushing an artifact (the
//! registry work overlapping the build), pushing an OCI layout, pulling an artifact by digest
//! into a directory, and copying a manifest with its blobs between repositories or registries
//! (promote). The agent pulls through here too.

use std::path::Path;

use crate::artifact::{self, ArtifactError, BuiltArtifact, LayerFile, Limits, Metadata};
use crate::digest::Digest;
use crate::input::InputFile;
use crate::layout::{self, LayoutError};
use crate::manifests::Rules;
use crate::oci::{self, Descriptor, ImageIndex, ImageManifest};
use crate::registry::{BlobSource, Progress, Registry, RegistryError, UploadSession};

/// Largest config blob berth reads into memory.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// How deep an index may nest when copying (index → manifest is depth 1).
const MAX_COPY_DEPTH: usize = 2;

/// Errors moving artifacts.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("manifest {digest} has media type '{media_type}', which berth cannot copy")]
    UnsupportedManifest { digest: Digest, media_type: String },
    #[error("the build thread failed: {detail}")]
    BuildThread { detail: String },
}

impl TransferError {
    pub fn hint(&self) -> &'static str {
        match self {
            TransferError::Registry(e) => e.hint(),
            TransferError::Artifact(e) => e.hint(),
            TransferError::Layout(e) => e.hint(),
            TransferError::Io { .. } => "check the path and free space",
            TransferError::UnsupportedManifest { .. } => {
                "berth copies OCI/Docker image manifests and indexes"
            }
            TransferError::BuildThread { .. } => "this is a bug in berth; please report it",
        }
    }
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct PushOutcome {
    pub digest: Digest,
    /// Blobs actually uploaded (0 on a re-push of unchanged content).
    pub uploaded_blobs: usize,
}

/// What [`push_artifact`] builds an artifact from.
#[derive(Debug)]
pub struct BuildInput {
    /// The manifest files, as [`crate::input::collect`] found them.
    pub files: Vec<InputFile>,
    /// Spooled stdin the files live in, if any: kept until the build has read them.
    pub spool: Option<tempfile::TempDir>,
    /// What the user named the input (a path, or `-`), for messages.
    pub name: String,
    /// The metadata the manifest records.
    pub meta: Metadata,
    /// The safety rules the manifests are checked against.
    pub rules: Rules,
}

/// Build `input` into an artifact and push it to `repo` under `tag`, with the registry work
/// done while it builds: `connect` makes the client (credentials, TLS roots) and
/// [`prepare_push`] obtains push access and sends what does not need the layer; then both
/// blobs go up at once, then the manifest. Invalid input is reported before any registry
/// failure (`connect`'s included), and a failed build leaves at most the config blob, which
/// nothing references. `progress` is asked for a callback once the layer size is known.
/// Returns the client, for what the caller does next (signing), with the outcome.
pub async fn push_artifact<E: From<TransferError>>(
    input: BuildInput,
    connect: impl FnOnce() -> Result<Registry, E>,
    repo: &str,
    tag: &str,
    progress: impl FnOnce(u64) -> Option<Progress>,
) -> Result<(Registry, PushOutcome), E> {
    let BuildInput {
        files,
        spool,
        name,
        meta,
        rules,
    } = input;
    let building = tokio::task::spawn_blocking(move || {
        let built = artifact::build(&files, &name, &meta, rules);
        drop(spool);
        built
    });
    let registry = match connect() {
        Ok(registry) => registry,
        Err(failure) => {
            if let Ok(Err(invalid)) = building.await {
                return Err(TransferError::from(invalid).into());
            }
            return Err(failure);
        }
    };
    let (built, prepared) = tokio::join!(building, prepare_push(&registry, repo));
    let built = built.map_err(|e| TransferError::BuildThread {
        detail: e.to_string(),
    });
    let built = match built.and_then(|b| b.map_err(TransferError::from)) {
        Ok(built) => built,
        Err(e) => {
            if let Ok(prepared) = prepared {
                abandon_push(&registry, repo, prepared).await;
            }
            return Err(e.into());
        }
    };
    let prepared = prepared?;
    let outcome = push_built(
        &registry,
        repo,
        tag,
        &built,
        prepared,
        progress(built.layer.size),
    )
    .await?;
    Ok((registry, outcome))
}

/// Registry work of [`push_built`] done while the artifact still builds: everything that
/// does not need the layer. The config blob is the same for every berth artifact
/// ([`artifact::CONFIG_BYTES`]), so it goes up now. When the repository lacked it, no berth
/// artifact was ever pushed there, so the layer is not expected there either: its upload
/// session is opened now too, and after the build one PUT sends it. Where the config is
/// present, the layer may be as well (a re-push): it is asked for after the build, and a
/// session opened only if it is missing, so unchanged content uploads nothing.
#[derive(Debug)]
struct PushPreparation {
    config: Digest,
    config_uploaded: bool,
    layer_session: Option<UploadSession>,
}

/// Prepare a push of a built artifact to `repo` (see [`PushPreparation`]). Writes at most an
/// unreferenced config blob and an upload session: [`abandon_push`] if the build fails.
async fn prepare_push(registry: &Registry, repo: &str) -> Result<PushPreparation, TransferError> {
    let config = Digest::of(artifact::CONFIG_BYTES);
    if registry.prepare_push(repo, &config).await? {
        return Ok(PushPreparation {
            config,
            config_uploaded: false,
            layer_session: None,
        });
    }
    let size = artifact::CONFIG_BYTES.len() as u64;
    let upload_config = async {
        let session = registry.start_upload(repo).await?;
        registry
            .finish_upload(
                repo,
                session,
                &config,
                size,
                BlobSource::Bytes(artifact::CONFIG_BYTES),
                None,
            )
            .await
    };
    let (_, layer_session) = tokio::try_join!(upload_config, registry.start_upload(repo))?;
    Ok(PushPreparation {
        config,
        config_uploaded: true,
        layer_session: Some(layer_session),
    })
}

/// Give up a prepared push whose artifact could not be built.
async fn abandon_push(registry: &Registry, repo: &str, prepared: PushPreparation) {
    if let Some(session) = prepared.layer_session {
        registry.cancel_upload(repo, session).await;
    }
}

/// Push a built artifact to `repo` under `tag`, after [`prepare_push`].
async fn push_built(
    registry: &Registry,
    repo: &str,
    tag: &str,
    built: &BuiltArtifact,
    prepared: PushPreparation,
    progress: Option<Progress>,
) -> Result<PushOutcome, TransferError> {
    let layer_source = BlobSource::File(&built.layer_path);
    let layer = async {
        match prepared.layer_session {
            Some(session) => registry
                .finish_upload(
                    repo,
                    session,
                    &built.layer.digest,
                    built.layer.size,
                    layer_source,
                    progress,
                )
                .await
                .map(|()| true),
            None => {
                registry
                    .push_blob(
                        repo,
                        &built.layer.digest,
                        built.layer.size,
                        layer_source,
                        progress,
                    )
                    .await
            }
        }
    };
    // The config was uploaded while building, unless the build made another one.
    let config = async {
        if built.config.digest == prepared.config {
            return Ok(prepared.config_uploaded);
        }
        let source = BlobSource::Bytes(&built.config_bytes);
        registry
            .push_blob(repo, &built.config.digest, built.config.size, source, None)
            .await
    };
    // The manifest only once both blobs are there: registries check that they exist.
    let (layer, config) = tokio::try_join!(layer, config)?;
    let uploaded = usize::from(layer) + usize::from(config);
    let digest = registry
        .push_manifest(repo, &built.manifest, oci::MEDIA_TYPE_IMAGE_MANIFEST, tag)
        .await?;
    Ok(PushOutcome {
        digest,
        uploaded_blobs: uploaded,
    })
}

/// Push the single manifest of an OCI layout (as `berth pack` writes it) to `repo` under `tag`.
/// The digest is the layout's: nothing is rebuilt.
pub async fn push_layout(
    registry: &Registry,
    repo: &str,
    tag: &str,
    dir: &Path,
    progress: Option<Progress>,
) -> Result<PushOutcome, TransferError> {
    let (descriptor, manifest_bytes) = layout::read_manifest(dir)?;
    let manifest: ImageManifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| LayoutError::Invalid {
            path: layout::blob_path(dir, &descriptor.digest),
            detail: e.to_string(),
        })?;
    let mut uploaded = 0;
    for layer in &manifest.layers {
        let path = layout::verify_blob(dir, layer)?;
        if registry
            .push_blob(
                repo,
                &layer.digest,
                layer.size,
                BlobSource::File(&path),
                progress.clone(),
            )
            .await?
        {
            uploaded += 1;
        }
    }
    let config = layout::read_verified(dir, &manifest.config.digest)?;
    if registry
        .push_blob(
            repo,
            &manifest.config.digest,
            manifest.config.size,
            BlobSource::Bytes(&config),
            None,
        )
        .await?
    {
        uploaded += 1;
    }
    let media_type = manifest
        .media_type
        .as_deref()
        .unwrap_or(oci::MEDIA_TYPE_IMAGE_MANIFEST);
    let digest = registry
        .push_manifest(repo, &manifest_bytes, media_type, tag)
        .await?;
    Ok(PushOutcome {
        digest,
        uploaded_blobs: uploaded,
    })
}

/// A fetched artifact manifest with its content layer.
#[derive(Debug, Clone)]
pub struct ArtifactManifest {
    pub digest: Digest,
    pub bytes: Vec<u8>,
    pub manifest: ImageManifest,
    pub layer: Descriptor,
}

/// Fetch and parse the artifact manifest `digest` of `repo`.
pub async fn fetch_artifact_manifest(
    registry: &Registry,
    repo: &str,
    digest: &Digest,
) -> Result<ArtifactManifest, TransferError> {
    let (bytes, _media_type) = registry.fetch_manifest(repo, digest).await?;
    let (manifest, layer) = artifact::content_layer(&bytes)?;
    if layer.size > artifact::MAX_LAYER_BYTES {
        return Err(ArtifactError::TooLarge {
            what: "bytes (compressed layer)",
            limit: artifact::MAX_LAYER_BYTES,
        }
        .into());
    }
    Ok(ArtifactManifest {
        digest: digest.clone(),
        bytes,
        manifest,
        layer,
    })
}

/// Download the content layer of `artifact` into a temporary file (verified), returning it.
pub async fn download_layer(
    registry: &Registry,
    repo: &str,
    artifact: &ArtifactManifest,
) -> Result<tempfile::NamedTempFile, TransferError> {
    let tmp = tempfile::NamedTempFile::new().map_err(|source| TransferError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let file = tokio::fs::File::create(tmp.path())
        .await
        .map_err(|source| TransferError::Io {
            path: tmp.path().to_path_buf(),
            source,
        })?;
    let mut writer = tokio::io::BufWriter::new(file);
    registry
        .fetch_blob(
            repo,
            &artifact.layer.digest,
            artifact.layer.size,
            &mut writer,
        )
        .await?;
    Ok(tmp)
}

/// Pull artifact `digest` of `repo` and unpack it safely into `dest`.
pub async fn pull(
    registry: &Registry,
    repo: &str,
    digest: &Digest,
    dest: &Path,
    limits: Limits,
) -> Result<(ArtifactManifest, Vec<LayerFile>), TransferError> {
    let artifact = fetch_artifact_manifest(registry, repo, digest).await?;
    let layer = download_layer(registry, repo, &artifact).await?;
    let file = std::fs::File::open(layer.path()).map_err(|source| TransferError::Io {
        path: layer.path().to_path_buf(),
        source,
    })?;
    let files = artifact::unpack(std::io::BufReader::new(file), dest, limits)?;
    Ok((artifact, files))
}

/// What a copy did.
#[derive(Debug, Clone)]
pub struct CopyOutcome {
    pub digest: Digest,
    pub uploaded_blobs: usize,
}

/// Copy manifest `digest` (image manifest or index, with everything it references) from
/// `src_repo` on `src` to `dst_repo` on `dst`, then point `dst_tag` at it (or leave it
/// untagged when `dst_tag` is `None`). The digest is preserved byte for byte.
pub async fn copy(
    src: &Registry,
    src_repo: &str,
    digest: &Digest,
    dst: &Registry,
    dst_repo: &str,
    dst_tag: Option<&str>,
) -> Result<CopyOutcome, TransferError> {
    let mut uploaded = 0;
    copy_manifest(
        src,
        src_repo,
        digest,
        dst,
        dst_repo,
        dst_tag,
        0,
        &mut uploaded,
    )
    .await?;
    Ok(CopyOutcome {
        digest: digest.clone(),
        uploaded_blobs: uploaded,
    })
}

#[allow(clippy::too_many_arguments)]
fn copy_manifest<'a>(
    src: &'a Registry,
    src_repo: &'a str,
    digest: &'a Digest,
    dst: &'a Registry,
    dst_repo: &'a str,
    dst_tag: Option<&'a str>,
    depth: usize,
    uploaded: &'a mut usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), TransferError>> + Send + 'a>> {
    Box::pin(async move {
        let (bytes, media_type) = src.fetch_manifest(src_repo, digest).await?;
        let is_index = media_type == oci::MEDIA_TYPE_IMAGE_INDEX
            || media_type == oci::MEDIA_TYPE_DOCKER_MANIFEST_LIST;
        if is_index {
            if depth >= MAX_COPY_DEPTH {
                return Err(TransferError::UnsupportedManifest {
                    digest: digest.clone(),
                    media_type,
                });
            }
            let index: ImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| ArtifactError::InvalidManifest {
                    detail: e.to_string(),
                })?;
            for child in &index.manifests {
                copy_manifest(
                    src,
                    src_repo,
                    &child.digest,
                    dst,
                    dst_repo,
                    None,
                    depth + 1,
                    uploaded,
                )
                .await?;
            }
        } else {
            let manifest: ImageManifest =
                serde_json::from_slice(&bytes).map_err(|e| ArtifactError::InvalidManifest {
                    detail: e.to_string(),
                })?;
            let mut blobs = vec![manifest.config.clone()];
            blobs.extend(manifest.layers.iter().cloned());
            for blob in blobs {
                if copy_blob(src, src_repo, &blob, dst, dst_repo).await? {
                    *uploaded += 1;
                }
            }
        }
        let target = match dst_tag {
            Some(tag) => tag.to_string(),
            None => digest.to_string(),
        };
        dst.push_manifest(dst_repo, &bytes, &media_type, &target)
            .await?;
        Ok(())
    })
}

/// Copy one blob through a temporary file (bounded memory). Returns whether it was uploaded.
async fn copy_blob(
    src: &Registry,
    src_repo: &str,
    blob: &Descriptor,
    dst: &Registry,
    dst_repo: &str,
) -> Result<bool, TransferError> {
    if dst.blob_exists(dst_repo, &blob.digest).await? {
        return Ok(false);
    }
    if blob.size <= MAX_CONFIG_BYTES {
        let bytes = src
            .fetch_blob_bytes(src_repo, &blob.digest, blob.size)
            .await?;
        return Ok(dst
            .push_blob(
                dst_repo,
                &blob.digest,
                blob.size,
                BlobSource::Bytes(&bytes),
                None,
            )
            .await?);
    }
    let tmp = tempfile::NamedTempFile::new().map_err(|source| TransferError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    {
        let file = tokio::fs::File::create(tmp.path())
            .await
            .map_err(|source| TransferError::Io {
                path: tmp.path().to_path_buf(),
                source,
            })?;
        let mut writer = tokio::io::BufWriter::new(file);
        src.fetch_blob(src_repo, &blob.digest, blob.size, &mut writer)
            .await?;
    }
    Ok(dst
        .push_blob(
            dst_repo,
            &blob.digest,
            blob.size,
            BlobSource::File(tmp.path()),
            None,
        )
        .await?)
}
