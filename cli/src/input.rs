//! Collecting what the user wants to ship: a directory (recursive, honouring a gitignore-style
//! `.berthignore`), one file, `-` for stdin, or an OCI image layout written by `berth pack`.
//! Owns which files are included, their names inside the artifact, and the tree-escape rules.
//! File contents are not read here, so a large tree costs memory per file name only.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::manifests;

/// The ignore file berth honours in a directory tree (gitignore syntax, nested files allowed).
pub const IGNORE_FILE: &str = ".berthignore";

/// Name stdin content gets inside the artifact.
pub const STDIN_FILE_NAME: &str = "manifests.yaml";

/// Largest stdin berth accepts; it is spooled to a temporary file, not memory.
pub const MAX_STDIN_BYTES: u64 = 1024 * 1024 * 1024;

/// Errors collecting input; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: no such file or directory")]
    NotFound { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot walk the directory: {detail}")]
    Walk { path: PathBuf, detail: String },
    #[error("{file}: not a manifest (berth ships .yaml, .yml and .json files)")]
    NotAManifest { file: String },
    #[error("{file}: symbolic link points outside the input tree ({target})")]
    SymlinkEscapes { file: String, target: PathBuf },
    #[error("{path}: no manifests found (the input is empty)")]
    Empty { path: String },
    #[error("stdin exceeds the limit of {limit} bytes")]
    StdinTooLarge { limit: u64 },
    #[error(
        "{path}: not a supported input (expected a directory, a file, '-' or an OCI image layout)"
    )]
    Unsupported { path: PathBuf },
}

impl InputError {
    pub fn hint(&self) -> &'static str {
        match self {
            InputError::NotAManifest { .. } => {
                "remove it or list it in .berthignore (gitignore syntax)"
            }
            InputError::SymlinkEscapes { .. } => {
                "copy the target into the tree, or list the link in .berthignore"
            }
            InputError::Empty { .. } => {
                "point berth at the rendered manifests (e.g. the output of kustomize build)"
            }
            _ => "check the path",
        }
    }
}

/// One file to ship: its name inside the artifact and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// `/`-separated path relative to the input root; the tar entry name.
    pub name: String,
    /// Where to read the content from.
    pub path: PathBuf,
}

impl InputFile {
    /// Read the whole file (bounded by [`manifests::MAX_MANIFEST_FILE_BYTES`]).
    pub fn read(&self) -> Result<Vec<u8>, InputError> {
        let file = std::fs::File::open(&self.path).map_err(|source| InputError::Io {
            path: self.path.clone(),
            source,
        })?;
        // Size the buffer from the file's length: growing it while reading would copy the
        // content several times (a measurable share of building a large tree).
        let expected = file
            .metadata()
            .map_or(0, |m| m.len())
            .min(manifests::MAX_MANIFEST_FILE_BYTES);
        let mut bytes = Vec::with_capacity(usize::try_from(expected).unwrap_or(0) + 1);
        file.take(manifests::MAX_MANIFEST_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| InputError::Io {
                path: self.path.clone(),
                source,
            })?;
        if bytes.len() as u64 > manifests::MAX_MANIFEST_FILE_BYTES {
            return Err(InputError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(format!(
                    "larger than {} bytes, too large for a manifest",
                    manifests::MAX_MANIFEST_FILE_BYTES
                )),
            });
        }
        Ok(bytes)
    }
}

/// What the user pointed berth at.
#[derive(Debug)]
pub enum Input {
    /// Manifest files, sorted by name.
    Files {
        files: Vec<InputFile>,
        /// Keeps spooled stdin alive as long as the input.
        _spool: Option<tempfile::TempDir>,
    },
    /// An OCI image layout directory (pushed as is).
    Layout(PathBuf),
}

/// Collect the input named by `arg` (a path or `-`).
pub fn collect(arg: &str) -> Result<Input, InputError> {
    if arg == "-" {
        return collect_stdin();
    }
    let path = PathBuf::from(arg);
    let meta = std::fs::metadata(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => InputError::NotFound { path: path.clone() },
        _ => InputError::Io {
            path: path.clone(),
            source,
        },
    })?;
    if meta.is_dir() {
        if crate::layout::is_layout(&path) {
            return Ok(Input::Layout(path));
        }
        let files = collect_dir(&path)?;
        return Ok(Input::Files {
            files,
            _spool: None,
        });
    }
    if meta.is_file() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| InputError::Unsupported { path: path.clone() })?;
        if !manifests::is_manifest_name(&name) {
            return Err(InputError::NotAManifest { file: name });
        }
        return Ok(Input::Files {
            files: vec![InputFile { name, path }],
            _spool: None,
        });
    }
    Err(InputError::Unsupported { path })
}

fn collect_stdin() -> Result<Input, InputError> {
    let spool = tempfile::tempdir().map_err(|source| InputError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let path = spool.path().join(STDIN_FILE_NAME);
    let mut out = std::fs::File::create(&path).map_err(|source| InputError::Io {
        path: path.clone(),
        source,
    })?;
    let copied = std::io::copy(
        &mut std::io::stdin().lock().take(MAX_STDIN_BYTES + 1),
        &mut out,
    )
    .map_err(|source| InputError::Io {
        path: PathBuf::from("-"),
        source,
    })?;
    if copied > MAX_STDIN_BYTES {
        return Err(InputError::StdinTooLarge {
            limit: MAX_STDIN_BYTES,
        });
    }
    Ok(Input::Files {
        files: vec![InputFile {
            name: STDIN_FILE_NAME.to_string(),
            path,
        }],
        _spool: Some(spool),
    })
}

/// All manifest files under `root`, sorted by their artifact name.
pub fn collect_dir(root: &Path) -> Result<Vec<InputFile>, InputError> {
    let canonical_root = root.canonicalize().map_err(|source| InputError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    // The walk runs on every core (thousands of entries take milliseconds on one); the
    // entries are then judged in name order, so the error reported does not depend on timing.
    let found: Mutex<Vec<(String, PathBuf, std::fs::FileType)>> = Mutex::new(Vec::new());
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    ignore::WalkBuilder::new(root)
        // Only .berthignore decides: a repository's .gitignore may hide rendered output on purpose.
        .standard_filters(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .follow_links(false)
        .build_parallel()
        .run(|| {
            let (found, failures) = (&found, &failures);
            Box::new(move |entry| {
                match entry {
                    Ok(entry) => {
                        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
                        if let (false, Some(file_type)) =
                            (rel.as_os_str().is_empty(), entry.file_type())
                        {
                            let name = artifact_name(rel);
                            found.lock().unwrap_or_else(PoisonError::into_inner).push((
                                name,
                                entry.into_path(),
                                file_type,
                            ));
                        }
                    }
                    Err(e) => failures
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(e.to_string()),
                }
                ignore::WalkState::Continue
            })
        });
    let mut failures = failures
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    failures.sort();
    if let Some(detail) = failures.into_iter().next() {
        return Err(InputError::Walk {
            path: root.to_path_buf(),
            detail,
        });
    }
    let mut found = found.into_inner().unwrap_or_else(PoisonError::into_inner);
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let mut files = Vec::with_capacity(found.len());
    for (name, path, file_type) in found {
        // Version-control metadata and berth's own ignore file are never content.
        if name.split('/').any(|c| c == ".git") || name.rsplit('/').next() == Some(IGNORE_FILE) {
            continue;
        }
        let content_path = if file_type.is_symlink() {
            let target = path.canonicalize().map_err(|source| InputError::Io {
                path: path.clone(),
                source,
            })?;
            if !target.starts_with(&canonical_root) {
                return Err(InputError::SymlinkEscapes { file: name, target });
            }
            if target.is_dir() {
                // Its files are reached through the real directory inside the tree.
                continue;
            }
            target
        } else if file_type.is_dir() {
            continue;
        } else if file_type.is_file() {
            path
        } else {
            return Err(InputError::NotAManifest { file: name });
        };
        if !manifests::is_manifest_name(&name) {
            return Err(InputError::NotAManifest { file: name });
        }
        files.push(InputFile {
            name,
            path: content_path,
        });
    }
    Ok(files)
}

/// `/`-separated name of a relative path, whatever the platform.
fn artifact_name(rel: &Path) -> String {
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn berthignore_excludes_and_files_are_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::write(root.join("z.yaml"), "").unwrap();
        std::fs::write(root.join("b/c/a.yml"), "").unwrap();
        std::fs::write(root.join("a.json"), "{}").unwrap();
        std::fs::write(root.join("README.md"), "hi").unwrap();
        let err = collect_dir(root).unwrap_err();
        assert!(
            matches!(&err, InputError::NotAManifest { file } if file == "README.md"),
            "{err}"
        );
        std::fs::write(root.join(IGNORE_FILE), "*.md\n").unwrap();
        let names: Vec<String> = collect_dir(root)
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["a.json", "b/c/a.yml", "z.yaml"]);
    }

    #[test]
    fn symlink_outside_the_tree_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.yaml"), "").unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.yaml"),
            dir.path().join("link.yaml"),
        )
        .unwrap();
        let err = collect_dir(dir.path()).unwrap_err();
        assert!(
            matches!(err, InputError::SymlinkEscapes { ref file, .. } if file == "link.yaml"),
            "{err}"
        );
    }

    #[test]
    fn symlink_inside_the_tree_is_shipped_as_its_target() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("real.yaml"), "x").unwrap();
        std::os::unix::fs::symlink("real.yaml", dir.path().join("alias.yaml")).unwrap();
        let files = collect_dir(dir.path()).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].name, "alias.yaml");
        assert!(files[0].path.ends_with("real.yaml"));
    }
}
