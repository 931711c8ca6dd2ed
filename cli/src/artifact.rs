//! The berth artifact: a reproducible, Flux-compatible OCI artifact built from manifest files
//! (one gzip'd tar layer, Flux config and content media types, OCI annotations), and the
//! safe reading of such layers (no absolute paths, `..`, links or devices; bounded size).
//!
//! Reproducibility: entries sorted by name; fixed mtime (0), uid/gid (0), empty owner names,
//! modes 0644/0755; gzip header without mtime or file name and a fixed OS byte; `created`
//! from the caller (flag or SOURCE_DATE_EPOCH), never the wall clock.
//! Streaming: the layer is written to a temporary file while it is hashed; only a bounded
//! window of manifest files is in memory at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use flate2::Compression;

use crate::digest::{Digest, HashingWriter};
use crate::input::{InputError, InputFile};
use crate::manifests::{self, DuplicateCheck, ManifestError, Rules};
use crate::oci::{self, Descriptor, ImageManifest};

/// `created` when neither `--created` nor `SOURCE_DATE_EPOCH` is given: a fixed epoch keeps
/// artifacts reproducible by default.
pub const DEFAULT_CREATED: &str = "1970-01-01T00:00:00Z";
/// Environment variable of the reproducible-builds convention for a build timestamp.
pub const ENV_SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";
/// The config blob, byte for byte what `flux push artifact` (v2.9) writes: the empty image
/// config of go-containerregistry. Nothing reads it; matching it keeps berth and Flux
/// artifacts of the same files as alike as their tarballs allow.
pub const CONFIG_BYTES: &[u8] =
    br#"{"architecture":"","created":"0001-01-01T00:00:00Z","os":"","rootfs":{"type":"layers","diff_ids":null},"config":{}}"#;
/// Mode of regular files in the layer.
const FILE_MODE: u32 = 0o644;
/// Mode of directories in the layer.
const DIR_MODE: u32 = 0o755;
/// gzip header OS byte: 255 = unknown, the same on every platform.
const GZIP_OS_UNKNOWN: u8 = 255;

/// Default bound on the total decompressed size of a layer when reading it.
pub const MAX_UNPACKED_BYTES: u64 = 1024 * 1024 * 1024;
/// Default bound on the number of tar entries in a layer.
pub const MAX_ENTRIES: usize = 100_000;
/// Largest PAX or GNU long-name extension header read. The `tar` crate would buffer one of
/// any declared size before returning the entry it describes; berth reads the archive raw
/// and refuses larger ones before reading them. Real ones hold a path or a few attributes.
pub const MAX_EXTENSION_BYTES: u64 = 64 * 1024;
/// Files a build worker validates in one go (fewer hand-overs between threads).
const BUILD_CHUNK_FILES: usize = 16;
/// Chunks validated ahead of the one being compressed: bounds memory while building.
const BUILD_WINDOW_CHUNKS: usize = 8;
/// Most worker threads validating files while building.
const MAX_BUILD_THREADS: usize = 8;
/// Largest compressed layer berth downloads.
pub const MAX_LAYER_BYTES: u64 = 512 * 1024 * 1024;

/// Errors building or reading an artifact.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{path}: no Kubernetes objects found (the input is empty)")]
    Empty { path: String },
    #[error("--created '{value}' is not an RFC 3339 timestamp (e.g. 2024-05-01T12:00:00Z)")]
    InvalidCreated { value: String },
    #[error("SOURCE_DATE_EPOCH '{value}' is not a number of seconds since 1970")]
    InvalidSourceDateEpoch { value: String },
    #[error("annotation '{value}' must be KEY=VALUE")]
    InvalidAnnotation { value: String },
    #[error("writing the artifact to {path} failed: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("layer entry '{entry}' is unsafe: {reason}")]
    UnsafeEntry { entry: String, reason: &'static str },
    #[error("{path}: {reason}; refusing to write '{entry}' through it")]
    UnsafeDestination {
        path: PathBuf,
        entry: String,
        reason: &'static str,
    },
    #[error("layer exceeds the limit of {limit} {what}")]
    TooLarge { what: &'static str, limit: u64 },
    #[error("layer entry '{entry}' declares {size} bytes, more than the limit of {limit} {what}")]
    EntryTooLarge {
        entry: String,
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("layer is not a valid tar.gz: {detail}")]
    Corrupt { detail: String },
    #[error("artifact layer has media type '{media_type}'; berth reads {expected}")]
    UnsupportedLayer {
        media_type: String,
        expected: &'static str,
    },
    #[error("artifact manifest is invalid: {detail}")]
    InvalidManifest { detail: String },
}

impl ArtifactError {
    pub fn hint(&self) -> &'static str {
        match self {
            ArtifactError::Input(e) => e.hint(),
            ArtifactError::Manifest(e) => e.hint(),
            ArtifactError::Empty { .. } => {
                "point berth at the rendered manifests (e.g. the output of kustomize build)"
            }
            ArtifactError::InvalidCreated { .. } | ArtifactError::InvalidSourceDateEpoch { .. } => {
                "pass an RFC 3339 time, or unset SOURCE_DATE_EPOCH"
            }
            ArtifactError::InvalidAnnotation { .. } => "write --annotation key=value",
            ArtifactError::Write { .. } => "check the output path and free space",
            ArtifactError::UnsafeEntry { .. }
            | ArtifactError::TooLarge { .. }
            | ArtifactError::EntryTooLarge { .. }
            | ArtifactError::Corrupt { .. } => {
                "the artifact was not produced by berth or flux; do not deploy it"
            }
            ArtifactError::UnsafeDestination { .. } => {
                "remove it from the destination, or pull into a new directory"
            }
            ArtifactError::UnsupportedLayer { .. } | ArtifactError::InvalidManifest { .. } => {
                "check that the reference names a berth or Flux artifact"
            }
        }
    }
}

/// Metadata recorded as manifest annotations.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    pub source: Option<String>,
    pub revision: Option<String>,
    /// RFC 3339 creation time.
    pub created: String,
    /// Extra annotations (`--annotation K=V`).
    pub annotations: BTreeMap<String, String>,
}

impl Metadata {
    /// The manifest annotations: user ones, then the standard ones (which win).
    pub fn to_annotations(&self) -> BTreeMap<String, String> {
        let mut out = self.annotations.clone();
        out.insert(oci::ANNOTATION_CREATED.to_string(), self.created.clone());
        if let Some(s) = &self.source {
            out.insert(oci::ANNOTATION_SOURCE.to_string(), s.clone());
        }
        if let Some(r) = &self.revision {
            out.insert(oci::ANNOTATION_REVISION.to_string(), r.clone());
        }
        out
    }
}

/// The `created` timestamp: `flag` if given, else `source_date_epoch` (seconds, the value of
/// [`ENV_SOURCE_DATE_EPOCH`] when the caller honours it), else [`DEFAULT_CREATED`].
pub fn created_timestamp(
    flag: Option<&str>,
    source_date_epoch: Option<&str>,
) -> Result<String, ArtifactError> {
    if let Some(value) = flag {
        let parsed = chrono::DateTime::parse_from_rfc3339(value).map_err(|_| {
            ArtifactError::InvalidCreated {
                value: value.to_string(),
            }
        })?;
        return Ok(parsed
            .with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    match source_date_epoch {
        Some(value) if !value.trim().is_empty() => {
            let invalid = || ArtifactError::InvalidSourceDateEpoch {
                value: value.to_string(),
            };
            let secs: i64 = value.trim().parse().map_err(|_| invalid())?;
            let time = chrono::DateTime::from_timestamp(secs, 0).ok_or_else(invalid)?;
            Ok(time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        }
        _ => Ok(DEFAULT_CREATED.to_string()),
    }
}

/// Parse `KEY=VALUE` annotation flags.
pub fn parse_annotations(values: &[String]) -> Result<BTreeMap<String, String>, ArtifactError> {
    let mut out = BTreeMap::new();
    for value in values {
        match value.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(k.trim().to_string(), v.to_string());
            }
            _ => {
                return Err(ArtifactError::InvalidAnnotation {
                    value: value.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// A built artifact: the layer in a temporary file, config and manifest in memory.
#[derive(Debug)]
pub struct BuiltArtifact {
    /// Holds the layer file; deleted on drop.
    pub workdir: tempfile::TempDir,
    pub layer_path: PathBuf,
    pub layer: Descriptor,
    pub config: Descriptor,
    /// The config blob ([`CONFIG_BYTES`]).
    pub config_bytes: Vec<u8>,
    pub manifest: Vec<u8>,
    /// The manifest digest: what the registry will report for the artifact.
    pub digest: Digest,
    /// Number of Kubernetes objects validated.
    pub objects: usize,
    /// Number of files in the layer.
    pub files: usize,
}

/// Validate `files` and build the artifact. Nothing leaves the machine here.
pub fn build(
    files: &[InputFile],
    input_name: &str,
    meta: &Metadata,
    rules: Rules,
) -> Result<BuiltArtifact, ArtifactError> {
    let workdir = tempfile::tempdir().map_err(|source| ArtifactError::Write {
        path: std::env::temp_dir(),
        source,
    })?;
    let layer_path = workdir.path().join("layer.tar.gz");
    let mut sorted: Vec<&InputFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));

    let file = std::fs::File::create(&layer_path).map_err(|source| ArtifactError::Write {
        path: layer_path.clone(),
        source,
    })?;
    let mut layer = LayerWriter::new(file);
    let mut duplicates = DuplicateCheck::default();
    // Reading and parsing (validation) is most of the work and files are independent: worker
    // threads take chunks of files in name order while this thread checks duplicates and
    // writes the tar.gz strictly in name order. Only a bounded window of chunks is in memory.
    validated_in_order(&sorted, rules, |chunk| {
        for (name, bytes, objects) in chunk {
            for object in &objects {
                duplicates.add(object)?;
            }
            layer
                .append(&name, &bytes)
                .map_err(|source| ArtifactError::Write {
                    path: layer_path.clone(),
                    source,
                })?;
        }
        Ok(())
    })?;
    let (layer_digest, layer_size) = layer.finish().map_err(|source| ArtifactError::Write {
        path: layer_path.clone(),
        source,
    })?;
    if duplicates.is_empty() {
        return Err(ArtifactError::Empty {
            path: input_name.to_string(),
        });
    }

    let layer = Descriptor {
        media_type: oci::MEDIA_TYPE_FLUX_CONTENT.to_string(),
        digest: layer_digest,
        size: layer_size,
        artifact_type: None,
        annotations: BTreeMap::new(),
    };
    let config_bytes = CONFIG_BYTES.to_vec();
    let config = Descriptor {
        media_type: oci::MEDIA_TYPE_FLUX_CONFIG.to_string(),
        digest: Digest::of(&config_bytes),
        size: config_bytes.len() as u64,
        artifact_type: None,
        annotations: BTreeMap::new(),
    };
    let manifest = manifest_bytes(&config, &layer, meta.to_annotations())?;
    let digest = Digest::of(&manifest);
    Ok(BuiltArtifact {
        workdir,
        layer_path,
        layer,
        config,
        config_bytes,
        manifest,
        digest,
        objects: duplicates.len(),
        files: sorted.len(),
    })
}

/// One validated file: its name in the artifact, its bytes and the objects it holds
/// (identities only; the parsed content is dropped on the worker thread).
type Validated = (String, Vec<u8>, Vec<manifests::ManifestObject>);

/// Reads and validates `files` on worker threads and hands them to `consume` in chunks,
/// strictly in the order given. The first error in that order wins, so messages do not
/// depend on thread timing; after an error no new chunk is started.
fn validated_in_order(
    files: &[&InputFile],
    rules: Rules,
    mut consume: impl FnMut(Vec<Validated>) -> Result<(), ArtifactError>,
) -> Result<(), ArtifactError> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};

    let chunks = files.len().div_ceil(BUILD_CHUNK_FILES);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_BUILD_THREADS)
        .min(chunks.max(1));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // Finished chunks by index, and the index of the next chunk the consumer takes.
    let state = Mutex::new((
        BTreeMap::<usize, Result<Vec<Validated>, ArtifactError>>::new(),
        0usize,
    ));
    let changed = Condvar::new();
    let lock = || {
        state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };

    let validate_chunk = |index: usize| -> Result<Vec<Validated>, ArtifactError> {
        let range = index * BUILD_CHUNK_FILES..((index + 1) * BUILD_CHUNK_FILES).min(files.len());
        files[range]
            .iter()
            .map(|file| {
                let bytes = file.read()?;
                let objects = manifests::identify_file(&file.name, &bytes, rules)?;
                Ok((file.name.clone(), bytes, objects))
            })
            .collect()
    };

    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= chunks {
                        return;
                    }
                    // Stay within the window ahead of the consumer, so memory stays bounded.
                    let mut guard = lock();
                    while index >= guard.1 + BUILD_WINDOW_CHUNKS && !stop.load(Ordering::Relaxed) {
                        guard = changed
                            .wait(guard)
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                    drop(guard);
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let result = validate_chunk(index);
                    lock().0.insert(index, result);
                    changed.notify_all();
                }
            });
        }
        let outcome = (|| {
            for index in 0..chunks {
                let mut guard = lock();
                let chunk = loop {
                    if let Some(chunk) = guard.0.remove(&index) {
                        break chunk;
                    }
                    guard = changed
                        .wait(guard)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                };
                guard.1 = index + 1;
                drop(guard);
                changed.notify_all();
                consume(chunk?)?;
            }
            Ok(())
        })();
        if outcome.is_err() {
            stop.store(true, Ordering::Relaxed);
            changed.notify_all();
        }
        outcome
    })
}

/// Writes files, in the order given, as a reproducible tar.gz while hashing it.
struct LayerWriter {
    tar: tar::Builder<flate2::write::GzEncoder<HashingWriter<BufWriter<std::fs::File>>>>,
    dirs_written: BTreeSet<String>,
}

impl LayerWriter {
    fn new(file: std::fs::File) -> Self {
        let gz = flate2::GzBuilder::new()
            .mtime(0)
            .operating_system(GZIP_OS_UNKNOWN)
            .write(
                HashingWriter::new(BufWriter::new(file)),
                Compression::default(),
            );
        let mut tar = tar::Builder::new(gz);
        tar.mode(tar::HeaderMode::Deterministic);
        LayerWriter {
            tar,
            dirs_written: BTreeSet::new(),
        }
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        // Parent directories first, each once, in path order.
        let mut parent = String::new();
        let parts: Vec<&str> = name.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            parent.push_str(part);
            parent.push('/');
            if self.dirs_written.insert(parent.clone()) {
                let mut header = fixed_header(tar::EntryType::Directory, DIR_MODE, 0);
                self.tar.append_data(&mut header, &parent, io::empty())?;
            }
        }
        let mut header = fixed_header(tar::EntryType::Regular, FILE_MODE, bytes.len() as u64);
        self.tar.append_data(&mut header, name, bytes)
    }

    /// Finishes the tar and gzip streams; returns the layer's digest and size.
    fn finish(self) -> io::Result<(Digest, u64)> {
        let gz = self.tar.into_inner()?;
        let hashing = gz.finish()?;
        let (digest, size, mut buffered) = hashing.finish();
        buffered.flush()?;
        Ok((digest, size))
    }
}

fn fixed_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    // Empty owner names; setting them cannot fail for empty strings on a GNU header.
    let _ = header.set_username("");
    let _ = header.set_groupname("");
    header
}

/// The serialized image manifest for a config and one layer.
pub fn manifest_bytes(
    config: &Descriptor,
    layer: &Descriptor,
    annotations: BTreeMap<String, String>,
) -> Result<Vec<u8>, ArtifactError> {
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_TYPE_IMAGE_MANIFEST.to_string()),
        artifact_type: None,
        config: config.clone(),
        layers: vec![layer.clone()],
        subject: None,
        annotations,
    };
    serde_json::to_vec(&manifest).map_err(|e| ArtifactError::InvalidManifest {
        detail: e.to_string(),
    })
}

/// Parse an artifact manifest and return it with its content layer (the first gzip'd tar layer).
pub fn content_layer(manifest: &[u8]) -> Result<(ImageManifest, Descriptor), ArtifactError> {
    let parsed: ImageManifest =
        serde_json::from_slice(manifest).map_err(|e| ArtifactError::InvalidManifest {
            detail: e.to_string(),
        })?;
    let accepted = [
        oci::MEDIA_TYPE_FLUX_CONTENT,
        oci::MEDIA_TYPE_OCI_LAYER_GZIP,
        oci::MEDIA_TYPE_DOCKER_LAYER_GZIP,
    ];
    let layer = parsed
        .layers
        .iter()
        .find(|l| accepted.contains(&l.media_type.as_str()))
        .cloned()
        .ok_or_else(|| ArtifactError::UnsupportedLayer {
            media_type: parsed
                .layers
                .first()
                .map(|l| l.media_type.clone())
                .unwrap_or_else(|| "(no layers)".into()),
            expected: oci::MEDIA_TYPE_FLUX_CONTENT,
        })?;
    Ok((parsed, layer))
}

/// Bounds applied when reading a layer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sum of the sizes every entry declares (directories and extension headers included).
    pub max_bytes: u64,
    pub max_entries: usize,
    /// Largest single regular file.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: MAX_UNPACKED_BYTES,
            max_entries: MAX_ENTRIES,
            max_file_bytes: MAX_UNPACKED_BYTES,
        }
    }
}

/// A regular file found in a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerFile {
    /// Normalized `/`-separated relative path.
    pub name: String,
    pub size: u64,
}

/// Visit every regular file of a tar.gz layer with its content reader, enforcing the safety
/// rules and limits. Directories are checked and skipped.
pub fn read_layer(
    layer: impl Read,
    limits: Limits,
    mut visit: impl FnMut(&LayerFile, &mut dyn Read) -> Result<(), ArtifactError>,
) -> Result<Vec<LayerFile>, ArtifactError> {
    let corrupt = |e: io::Error| ArtifactError::Corrupt {
        detail: e.to_string(),
    };
    let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(layer));
    let mut files = Vec::new();
    let mut total: u64 = 0;
    let mut count = 0usize;
    // Raw entries: PAX and GNU long-name headers come to berth as entries of their own, so
    // their declared size is checked before anything of them is read (the crate's own
    // handling buffers them whole), and the name they carry is applied here.
    let mut long_name: Option<String> = None;
    for entry in archive.entries().map_err(corrupt)?.raw(true) {
        let mut entry = entry.map_err(corrupt)?;
        count += 1;
        if count > limits.max_entries {
            return Err(ArtifactError::TooLarge {
                what: "entries",
                limit: limits.max_entries as u64,
            });
        }
        let kind = entry.header().entry_type();
        let size = entry.header().size().map_err(corrupt)?;
        // Every declared size counts, whatever the entry type: a directory's or an
        // extension's content is decompressed all the same.
        total = total.saturating_add(size);
        if total > limits.max_bytes {
            return Err(ArtifactError::TooLarge {
                what: "bytes decompressed",
                limit: limits.max_bytes,
            });
        }
        if kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions()
        {
            if size > MAX_EXTENSION_BYTES {
                let entry = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                return Err(ArtifactError::EntryTooLarge {
                    entry,
                    what: "bytes of a PAX/GNU extension header",
                    size,
                    limit: MAX_EXTENSION_BYTES,
                });
            }
            if kind.is_gnu_longname() {
                let mut name = Vec::new();
                entry.read_to_end(&mut name).map_err(corrupt)?;
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                long_name = Some(String::from_utf8_lossy(&name[..end]).into_owned());
            } else if kind.is_pax_local_extensions() {
                for record in entry
                    .pax_extensions()
                    .map_err(corrupt)?
                    .into_iter()
                    .flatten()
                {
                    let record = record.map_err(corrupt)?;
                    match record.key() {
                        Ok("path") => {
                            long_name =
                                Some(String::from_utf8_lossy(record.value_bytes()).into_owned())
                        }
                        // A size record would make the next entry longer than its header
                        // says; berth's and Flux's archives never need one.
                        Ok("size") => {
                            return Err(ArtifactError::Corrupt {
                                detail: "a PAX size record (files over 8 GiB) is not supported"
                                    .to_string(),
                            });
                        }
                        _ => {}
                    }
                }
            }
            continue;
        }
        let raw_name = long_name
            .take()
            .unwrap_or_else(|| String::from_utf8_lossy(&entry.path_bytes()).into_owned());
        let name = safe_name(&raw_name)?;
        match kind {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                return Err(ArtifactError::UnsafeEntry {
                    entry: raw_name,
                    reason: "links are not allowed",
                });
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                return Err(ArtifactError::UnsafeEntry {
                    entry: raw_name,
                    reason: "devices and pipes are not allowed",
                });
            }
            _ => {
                return Err(ArtifactError::UnsafeEntry {
                    entry: raw_name,
                    reason: "unsupported entry type",
                });
            }
        }
        let Some(name) = name else { continue };
        if size > limits.max_file_bytes {
            return Err(ArtifactError::EntryTooLarge {
                entry: name,
                what: "bytes per file",
                size,
                limit: limits.max_file_bytes,
            });
        }
        let file = LayerFile { name, size };
        // Bound the read by the declared size too, in case the header lies.
        let mut bounded = (&mut entry).take(size);
        visit(&file, &mut bounded)?;
        files.push(file);
    }
    Ok(files)
}

/// A tar entry name as a safe relative path; `None` for the root (`./`).
fn safe_name(raw: &str) -> Result<Option<String>, ArtifactError> {
    if raw.starts_with('/') || raw.starts_with('\\') {
        return Err(ArtifactError::UnsafeEntry {
            entry: raw.to_string(),
            reason: "absolute paths are not allowed",
        });
    }
    let mut parts = Vec::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(s) => {
                let s = s.to_string_lossy();
                if s.contains('\\') || s.contains('\0') {
                    return Err(ArtifactError::UnsafeEntry {
                        entry: raw.to_string(),
                        reason: "invalid characters in the path",
                    });
                }
                parts.push(s.into_owned());
            }
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(ArtifactError::UnsafeEntry {
                    entry: raw.to_string(),
                    reason: "'..' is not allowed",
                });
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(ArtifactError::UnsafeEntry {
                    entry: raw.to_string(),
                    reason: "absolute paths are not allowed",
                });
            }
        }
    }
    Ok(if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    })
}

/// Unpack a tar.gz layer into `dest` (created if missing). Files get mode 0644; existing
/// files are replaced; a symlink already in `dest` is never followed.
pub fn unpack(
    layer: impl Read,
    dest: &Path,
    limits: Limits,
) -> Result<Vec<LayerFile>, ArtifactError> {
    let write_err = |path: &Path, source: io::Error| ArtifactError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dest).map_err(|e| write_err(dest, e))?;
    read_layer(layer, limits, |file, content| {
        let mut path = dest.to_path_buf();
        let parts: Vec<&str> = file.name.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            path.push(part);
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(ArtifactError::UnsafeDestination {
                        path: path.clone(),
                        entry: file.name.clone(),
                        reason: "exists in the destination and is not a directory (links are never followed)",
                    });
                }
                Err(_) => std::fs::create_dir(&path).map_err(|e| write_err(&path, e))?,
            }
        }
        path.push(parts[parts.len() - 1]);
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if meta.is_dir() {
                return Err(ArtifactError::UnsafeDestination {
                    path: path.clone(),
                    entry: file.name.clone(),
                    reason: "is a directory in the destination",
                });
            }
            std::fs::remove_file(&path).map_err(|e| write_err(&path, e))?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| write_err(&path, e))?;
        let copied = io::copy(content, &mut out).map_err(|e| ArtifactError::Corrupt {
            detail: e.to_string(),
        })?;
        if copied != file.size {
            return Err(ArtifactError::Corrupt {
                detail: format!("{} is truncated", file.name),
            });
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(FILE_MODE))
                .map_err(|e| write_err(&path, e))?;
        }
        Ok(())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn write_tree(root: &Path, files: &[(&str, &str)]) {
        for (name, content) in files {
            let path = root.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, content).unwrap();
        }
    }

    const A: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n";
    const B: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n  namespace: x\n";

    fn meta() -> Metadata {
        Metadata {
            created: DEFAULT_CREATED.into(),
            ..Default::default()
        }
    }

    fn build_dir(root: &Path) -> BuiltArtifact {
        let files = crate::input::collect_dir(root).unwrap();
        build(&files, "tree", &meta(), Rules::default()).unwrap()
    }

    #[test]
    fn same_tree_written_differently_gives_the_same_digest() {
        let one = tempfile::tempdir().unwrap();
        write_tree(one.path(), &[("a.yaml", A), ("sub/b.yaml", B)]);
        let two = tempfile::tempdir().unwrap();
        // Reverse order, different permissions and mtimes.
        write_tree(two.path(), &[("sub/b.yaml", B)]);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        write_tree(two.path(), &[("a.yaml", A)]);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            two.path().join("a.yaml"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::set_permissions(
            two.path().join("sub"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let a = build_dir(one.path());
        let b = build_dir(two.path());
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.layer.digest, b.layer.digest);
        assert_eq!(
            std::fs::read(&a.layer_path).unwrap(),
            std::fs::read(&b.layer_path).unwrap()
        );
        assert_eq!(a.objects, 2);
    }

    #[test]
    fn errors_are_reported_for_the_first_bad_file_in_name_order_whatever_the_threads_do() {
        // Enough files for many chunks; two bad ones far apart, and a duplicate across chunks.
        let dir = tempfile::tempdir().unwrap();
        let mut files: Vec<(String, String)> = (0..300)
            .map(|i| {
                (
                    format!("f{i:03}.yaml"),
                    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{i}\n"),
                )
            })
            .collect();
        files[250].1 = "kind: [unclosed\n".to_string();
        files[90].1 = "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n".to_string();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(n, c)| (n.as_str(), c.as_str()))
            .collect();
        write_tree(dir.path(), &refs);
        let input = crate::input::collect(dir.path().to_str().unwrap()).unwrap();
        let crate::input::Input::Files { files: list, .. } = input else {
            panic!("not files")
        };
        for _ in 0..20 {
            let err = build(&list, "tree", &meta(), Rules::default())
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("f090.yaml:"), "{err}");
        }

        files[90].1 = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c5\n".to_string();
        files[250].1 = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c250\n".to_string();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(n, c)| (n.as_str(), c.as_str()))
            .collect();
        write_tree(dir.path(), &refs);
        let err = build(&list, "tree", &meta(), Rules::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "f090.yaml:1: duplicate object ConfigMap c5, first defined at f005.yaml:1"
            ),
            "{err}"
        );
    }

    #[test]
    fn content_or_metadata_change_changes_the_digest() {
        let one = tempfile::tempdir().unwrap();
        write_tree(one.path(), &[("a.yaml", A)]);
        let base = build_dir(one.path());
        let files = crate::input::collect_dir(one.path()).unwrap();
        let mut m = meta();
        m.revision = Some("main@sha1:abc".into());
        let other = build(&files, "tree", &m, Rules::default()).unwrap();
        assert_ne!(base.digest, other.digest);
        assert_eq!(base.layer.digest, other.layer.digest);
        write_tree(one.path(), &[("a.yaml", B)]);
        assert_ne!(build_dir(one.path()).layer.digest, base.layer.digest);
    }

    #[test]
    fn layer_has_fixed_entry_metadata_and_round_trips() {
        let one = tempfile::tempdir().unwrap();
        write_tree(one.path(), &[("a.yaml", A), ("sub/b.yaml", B)]);
        let built = build_dir(one.path());
        let bytes = std::fs::read(&built.layer_path).unwrap();
        // gzip header: no mtime (bytes 4..8 zero), OS byte unknown.
        assert_eq!(&bytes[4..8], &[0, 0, 0, 0]);
        assert_eq!(bytes[9], GZIP_OS_UNKNOWN);
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        let mut names = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(h.mtime().unwrap(), 0);
            assert_eq!(h.uid().unwrap(), 0);
            let mode = h.mode().unwrap();
            assert!(mode == 0o644 || mode == 0o755, "mode {mode:o}");
            names.push(String::from_utf8_lossy(&e.path_bytes()).into_owned());
        }
        assert_eq!(names, ["a.yaml", "sub/", "sub/b.yaml"]);
        let out = tempfile::tempdir().unwrap();
        unpack(bytes.as_slice(), out.path(), Limits::default()).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.path().join("sub/b.yaml")).unwrap(),
            B
        );
    }

    #[test]
    fn config_is_the_one_flux_writes() {
        let one = tempfile::tempdir().unwrap();
        write_tree(one.path(), &[("a.yaml", A)]);
        let built = build_dir(one.path());
        assert_eq!(built.config.media_type, oci::MEDIA_TYPE_FLUX_CONFIG);
        assert_eq!(built.config.size, 115);
        assert_eq!(
            built.config.digest.to_string(),
            "sha256:5b943e2b943f6c81dbbd4e2eca5121f4fcc39139e3d1219d6d89bd925b77d9fe",
            "digest of the config `flux push artifact` v2.9.5 uploads"
        );
    }

    #[test]
    fn unpack_never_writes_through_a_link_in_the_destination() {
        let one = tempfile::tempdir().unwrap();
        write_tree(one.path(), &[("sub/b.yaml", B)]);
        let built = build_dir(one.path());
        let outside = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dest.path().join("sub")).unwrap();
        let layer = std::fs::File::open(&built.layer_path).unwrap();
        let err = unpack(layer, dest.path(), Limits::default()).unwrap_err();
        assert!(
            matches!(err, ArtifactError::UnsafeDestination { .. }),
            "{err}"
        );
        assert!(!outside.path().join("b.yaml").exists());
    }

    #[test]
    fn created_comes_from_flag_then_epoch_and_never_the_clock() {
        assert_eq!(
            created_timestamp(Some("2024-05-01T14:00:00+02:00"), Some("0")).unwrap(),
            "2024-05-01T12:00:00Z"
        );
        assert!(created_timestamp(Some("yesterday"), None).is_err());
        assert_eq!(
            created_timestamp(None, Some(" 1700000000 ")).unwrap(),
            "2023-11-14T22:13:20Z"
        );
        assert!(created_timestamp(None, Some("yesterday")).is_err());
        assert_eq!(created_timestamp(None, Some("")).unwrap(), DEFAULT_CREATED);
        assert_eq!(created_timestamp(None, None).unwrap(), DEFAULT_CREATED);
    }

    fn tar_gz(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let raw = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&raw).unwrap();
        gz.finish().unwrap()
    }

    fn raw_entry(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        // set_path refuses '..' and absolute paths, so write the name bytes directly.
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    #[test]
    fn hostile_layers_are_refused() {
        let out = tempfile::tempdir().unwrap();
        for (name, kind) in [
            ("../evil.yaml", tar::EntryType::Regular),
            ("/etc/evil.yaml", tar::EntryType::Regular),
            ("link.yaml", tar::EntryType::Symlink),
            ("hard.yaml", tar::EntryType::Link),
            ("dev", tar::EntryType::Char),
        ] {
            let layer = tar_gz(|b| raw_entry(b, name, kind, b""));
            let err = unpack(layer.as_slice(), out.path(), Limits::default()).unwrap_err();
            assert!(
                matches!(err, ArtifactError::UnsafeEntry { .. }),
                "{name}: {err}"
            );
        }
        assert!(!out.path().parent().unwrap().join("evil.yaml").exists());
        let big = tar_gz(|b| raw_entry(b, "big.yaml", tar::EntryType::Regular, &[b'a'; 2048]));
        let err = unpack(
            big.as_slice(),
            out.path(),
            Limits {
                max_bytes: 1024,
                max_entries: 10,
                ..Limits::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, ArtifactError::TooLarge { .. }), "{err}");
    }

    /// Every file `read_layer` hands out, by name, or the error.
    fn names(layer: &[u8], limits: Limits) -> Result<Vec<String>, ArtifactError> {
        read_layer(layer, limits, |_, _| Ok(()))
            .map(|files| files.into_iter().map(|f| f.name).collect())
    }

    #[test]
    fn long_names_from_gnu_and_pax_headers_apply_to_the_next_entry() {
        let long = format!("{}/deep.yaml", "d".repeat(120));
        let gnu = tar_gz(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            b.append_data(&mut h, &long, &b"a"[..]).unwrap();
        });
        assert_eq!(names(&gnu, Limits::default()).unwrap(), [long.as_str()]);
        let pax = tar_gz(|b| {
            b.append_pax_extensions([("path", long.as_bytes()), ("mtime", b"0".as_slice())])
                .unwrap();
            raw_entry(b, "short.yaml", tar::EntryType::Regular, b"a");
        });
        assert_eq!(names(&pax, Limits::default()).unwrap(), [long]);
    }

    #[test]
    fn every_declared_size_counts_and_is_capped() {
        // A PAX header of 1 MiB is refused before it is read.
        let huge_pax = tar_gz(|b| {
            raw_entry(
                b,
                "PaxHeaders/x",
                tar::EntryType::XHeader,
                &vec![b'a'; 1024 * 1024],
            )
        });
        let err = names(&huge_pax, Limits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                ArtifactError::EntryTooLarge {
                    size: 1_048_576,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("PAX/GNU extension header"),
            "{err}"
        );
        // A directory's declared content counts towards the total like a file's.
        let dir = tar_gz(|b| raw_entry(b, "dir/", tar::EntryType::Directory, &[0; 4096]));
        let err = names(
            &dir,
            Limits {
                max_bytes: 1024,
                ..Limits::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                ArtifactError::TooLarge {
                    what: "bytes decompressed",
                    ..
                }
            ),
            "{err}"
        );
        // One file over the per-file limit is named.
        let file = tar_gz(|b| raw_entry(b, "bomb.yaml", tar::EntryType::Regular, &[b'#'; 4096]));
        let err = names(
            &file,
            Limits {
                max_file_bytes: 1024,
                ..Limits::default()
            },
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("'bomb.yaml' declares 4096 bytes"),
            "{err}"
        );
    }
}
