//! OCI image layout on disk (`oci-layout`, `index.json`, `blobs/sha256/…`): what `berth pack`
//! writes for offline hand-over and what `berth push` reads back, digest for digest.

use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::oci::{self, Descriptor, ImageIndex};

const LAYOUT_FILE: &str = "oci-layout";
const INDEX_FILE: &str = "index.json";
const LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Largest index.json or manifest read from a layout.
const MAX_DOCUMENT_BYTES: u64 = 4 * 1024 * 1024;

/// Errors reading or writing a layout; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid OCI image layout: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error("{path}: the layout holds {count} manifests; berth pushes a layout with exactly one")]
    NotSingle { path: PathBuf, count: usize },
    #[error("{path}: blob {digest} does not match its digest")]
    Corrupt { path: PathBuf, digest: Digest },
}

impl LayoutError {
    pub fn hint(&self) -> &'static str {
        match self {
            LayoutError::Io { .. } => "check the path and permissions",
            _ => "write the layout again with `berth pack PATH -o DIR`",
        }
    }
}

/// Whether `dir` looks like an OCI image layout.
pub fn is_layout(dir: &Path) -> bool {
    dir.join(LAYOUT_FILE).is_file() && dir.join(INDEX_FILE).is_file()
}

/// Path of a blob inside a layout.
pub fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs")
        .join(digest::ALGORITHM_DIR)
        .join(digest.hex())
}

mod digest {
    pub const ALGORITHM_DIR: &str = crate::digest::ALGORITHM;
}

/// Write a layout with one manifest and its blobs. The layer is copied from `layer_path`.
pub fn write(
    dir: &Path,
    manifest: &[u8],
    config: (&Descriptor, &[u8]),
    layer: (&Descriptor, &Path),
) -> Result<Descriptor, LayoutError> {
    let io = |path: &Path, source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    };
    let blobs = dir.join("blobs").join(digest::ALGORITHM_DIR);
    std::fs::create_dir_all(&blobs).map_err(|e| io(&blobs, e))?;
    let manifest_digest = Digest::of(manifest);
    let manifest_path = blob_path(dir, &manifest_digest);
    std::fs::write(&manifest_path, manifest).map_err(|e| io(&manifest_path, e))?;
    let config_path = blob_path(dir, &config.0.digest);
    std::fs::write(&config_path, config.1).map_err(|e| io(&config_path, e))?;
    let layer_path = blob_path(dir, &layer.0.digest);
    std::fs::copy(layer.1, &layer_path).map_err(|e| io(&layer_path, e))?;
    let descriptor = Descriptor {
        media_type: oci::MEDIA_TYPE_IMAGE_MANIFEST.to_string(),
        digest: manifest_digest,
        size: manifest.len() as u64,
        artifact_type: None,
        annotations: Default::default(),
    };
    let mut index = ImageIndex::empty();
    index.manifests.push(descriptor.clone());
    let index_bytes = serde_json::to_vec(&index).map_err(|e| LayoutError::Invalid {
        path: dir.to_path_buf(),
        detail: e.to_string(),
    })?;
    let index_path = dir.join(INDEX_FILE);
    std::fs::write(&index_path, index_bytes).map_err(|e| io(&index_path, e))?;
    let layout_path = dir.join(LAYOUT_FILE);
    std::fs::write(&layout_path, LAYOUT_CONTENT).map_err(|e| io(&layout_path, e))?;
    Ok(descriptor)
}

/// The single manifest of a layout: its descriptor and verified bytes.
pub fn read_manifest(dir: &Path) -> Result<(Descriptor, Vec<u8>), LayoutError> {
    let index_path = dir.join(INDEX_FILE);
    let index_bytes = read_bounded(&index_path)?;
    let index: ImageIndex =
        serde_json::from_slice(&index_bytes).map_err(|e| LayoutError::Invalid {
            path: index_path.clone(),
            detail: e.to_string(),
        })?;
    let [descriptor] = index.manifests.as_slice() else {
        return Err(LayoutError::NotSingle {
            path: index_path,
            count: index.manifests.len(),
        });
    };
    let bytes = read_verified(dir, &descriptor.digest)?;
    Ok((descriptor.clone(), bytes))
}

/// A small blob (manifest, config) of the layout, verified against its digest.
pub fn read_verified(dir: &Path, digest: &Digest) -> Result<Vec<u8>, LayoutError> {
    let path = blob_path(dir, digest);
    let bytes = read_bounded(&path)?;
    if &Digest::of(&bytes) != digest {
        return Err(LayoutError::Corrupt {
            path,
            digest: digest.clone(),
        });
    }
    Ok(bytes)
}

/// Check a large blob of the layout against its digest and size without loading it.
pub fn verify_blob(dir: &Path, descriptor: &Descriptor) -> Result<PathBuf, LayoutError> {
    let path = blob_path(dir, &descriptor.digest);
    let file = std::fs::File::open(&path).map_err(|source| LayoutError::Io {
        path: path.clone(),
        source,
    })?;
    let (digest, size) =
        Digest::of_reader(std::io::BufReader::new(file)).map_err(|source| LayoutError::Io {
            path: path.clone(),
            source,
        })?;
    if digest != descriptor.digest || size != descriptor.size {
        return Err(LayoutError::Corrupt {
            path,
            digest: descriptor.digest.clone(),
        });
    }
    Ok(path)
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, LayoutError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_DOCUMENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| LayoutError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(LayoutError::Invalid {
            path: path.to_path_buf(),
            detail: "document too large".into(),
        });
    }
    Ok(bytes)
}
