//! Writes to a registry: blobs (HEAD to skip what is there, then a monolithic upload: POST
//! for a session, PUT with the whole body, streamed from disk) and manifests (PUT). A 403
//! `DENIED` on a write is reported as a refused write, not as bad credentials.

use std::path::Path;
use std::sync::Arc;

use futures_util::TryStreamExt;

use super::auth::Access;
use super::{Refusal, Registry, RegistryError, urlencode};
use crate::digest::Digest;

/// Read buffer when streaming a blob from disk to the registry.
const UPLOAD_BUFFER_BYTES: usize = 1024 * 1024;

/// Where the bytes of a blob to push come from.
#[derive(Debug)]
pub enum BlobSource<'a> {
    /// Small blobs (configs, manifests-as-blobs, signatures) held in memory.
    Bytes(&'a [u8]),
    /// Large blobs streamed from a file, never loaded whole.
    File(&'a Path),
}

/// An upload session a registry opened for one blob: where its bytes go. Opening it is a
/// round trip of its own, so a push opens it before the bytes exist.
#[derive(Debug)]
pub struct UploadSession {
    location: String,
}

/// Called with the number of bytes sent so far, for progress display.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

impl Registry {
    /// Whether `repo` has blob `probe`, asked with push access: opens the connection and
    /// obtains a push token (on token registries) while writing nothing, so a push can do
    /// this while it still builds.
    pub async fn prepare_push(&self, repo: &str, probe: &Digest) -> Result<bool, RegistryError> {
        self.blob_exists_as(repo, probe, Access::Push).await
    }

    /// Upload blob `digest` (`size` bytes) to `repo` unless the registry already has it.
    /// Returns `true` when bytes were uploaded, `false` when the blob was already there.
    /// One HEAD, then a monolithic upload: POST for a session, PUT with the whole body.
    pub async fn push_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        source: BlobSource<'_>,
        progress: Option<Progress>,
    ) -> Result<bool, RegistryError> {
        check_bytes(&self.host, repo, digest, size, &source)?;
        if self.blob_exists_as(repo, digest, Access::Push).await? {
            tracing::debug!(%digest, repo, "blob already present; not uploading");
            if let Some(p) = &progress {
                p(size);
            }
            return Ok(false);
        }
        let session = self.start_upload(repo).await?;
        self.finish_upload(repo, session, digest, size, source, progress)
            .await?;
        Ok(true)
    }

    /// Open an upload session in `repo` (POST), for a blob whose bytes may not exist yet.
    /// Either [`Self::finish_upload`] or [`Self::cancel_upload`] it.
    pub async fn start_upload(&self, repo: &str) -> Result<UploadSession, RegistryError> {
        let what = format!("a new blob in {repo}");
        let start = format!("{}/blobs/uploads/", self.repo_url(repo));
        let response = self
            .send_with_auth(repo, Access::Push, &what, |http| {
                Ok(http.post(&start).header(reqwest::header::CONTENT_LENGTH, 0))
            })
            .await?;
        if response.status() != reqwest::StatusCode::ACCEPTED {
            return Err(self.write_error(repo, what, response).await);
        }
        Ok(UploadSession {
            location: self.upload_location(&response, &what)?,
        })
    }

    /// Send the whole of blob `digest` (`size` bytes) into `session` with one PUT.
    pub async fn finish_upload(
        &self,
        repo: &str,
        session: UploadSession,
        digest: &Digest,
        size: u64,
        source: BlobSource<'_>,
        progress: Option<Progress>,
    ) -> Result<(), RegistryError> {
        check_bytes(&self.host, repo, digest, size, &source)?;
        let what = format!("blob {repo}@{digest}");
        let location = session.location;
        let separator = if location.contains('?') { '&' } else { '?' };
        let target = format!(
            "{location}{separator}digest={}",
            urlencode(&digest.to_string())
        );
        let streamed = matches!(source, BlobSource::File(_)) && size > UPLOAD_BUFFER_BYTES as u64;
        let body = match source {
            BlobSource::Bytes(bytes) => reqwest::Body::from(bytes.to_vec()),
            // No more than one read buffer: read at once, not chunk by chunk through the
            // blocking pool, whose thread hops a small layer would wait on after the build.
            BlobSource::File(path) if !streamed => {
                reqwest::Body::from(std::fs::read(path).map_err(|source| RegistryError::Io {
                    path: path.to_path_buf(),
                    source,
                })?)
            }
            BlobSource::File(path) => {
                let file = std::fs::File::open(path).map_err(|source| RegistryError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                let mut sent: u64 = 0;
                let progress = progress.clone();
                let stream = tokio_util::io::ReaderStream::with_capacity(
                    tokio::fs::File::from_std(file),
                    UPLOAD_BUFFER_BYTES,
                )
                .inspect_ok(move |chunk| {
                    sent += chunk.len() as u64;
                    if let Some(p) = &progress {
                        p(sent);
                    }
                });
                reqwest::Body::wrap_stream(stream)
            }
        };
        let http = self.http()?;
        let mut request = http
            .put(&target)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body);
        request = self.with_credentials(request, repo, Access::Push).await?;
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        if response.status() != reqwest::StatusCode::CREATED {
            return Err(self.write_error(repo, what, response).await);
        }
        if let (false, Some(p)) = (streamed, &progress) {
            p(size);
        }
        Ok(())
    }

    /// Abandon `session` (DELETE), so the registry can drop it now rather than at its
    /// purge interval. Best effort: a registry that refuses only keeps a stale session.
    pub async fn cancel_upload(&self, repo: &str, session: UploadSession) {
        let what = format!("the unused blob upload to {repo}");
        let location = session.location;
        match self
            .send_with_auth(repo, Access::Push, &what, |http| Ok(http.delete(&location)))
            .await
        {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => {
                tracing::debug!(repo, status = %response.status(), "registry kept an unused upload session")
            }
            Err(e) => tracing::debug!(repo, error = %e, "cannot cancel an unused upload session"),
        }
    }

    /// Store `manifest` (of `media_type`) in `repo` under `tag_or_digest` (a tag, or the
    /// manifest's own digest to push it untagged). Returns the manifest's digest.
    pub async fn push_manifest(
        &self,
        repo: &str,
        manifest: &[u8],
        media_type: &str,
        tag_or_digest: &str,
    ) -> Result<Digest, RegistryError> {
        let digest = Digest::of(manifest);
        let what = format!(
            "manifest {repo}{}{tag_or_digest}",
            if tag_or_digest.contains(':') {
                "@"
            } else {
                ":"
            }
        );
        if tag_or_digest.contains(':') && tag_or_digest != digest.to_string() {
            return Err(RegistryError::DigestMismatch {
                registry: self.host.clone(),
                what,
                expected: tag_or_digest.parse().unwrap_or_else(|_| digest.clone()),
                actual: digest,
            });
        }
        let content_type = reqwest::header::HeaderValue::from_str(media_type).map_err(|e| {
            RegistryError::Rejected {
                registry: self.host.clone(),
                what: what.clone(),
                detail: format!("media type '{media_type}': {e}"),
            }
        })?;
        let url = format!("{}/manifests/{tag_or_digest}", self.repo_url(repo));
        let response = self
            .send_with_auth(repo, Access::Push, &what, |http| {
                Ok(http
                    .put(&url)
                    .header(reqwest::header::CONTENT_TYPE, content_type.clone())
                    .body(manifest.to_vec()))
            })
            .await?;
        if response.status() != reqwest::StatusCode::CREATED {
            return Err(self.write_error(repo, what, response).await);
        }
        Ok(digest)
    }

    /// The absolute upload URL from a `Location` header (registries may send a path).
    fn upload_location(
        &self,
        response: &reqwest::Response,
        what: &str,
    ) -> Result<String, RegistryError> {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Protocol {
                registry: self.host.clone(),
                what: what.to_string(),
                detail: "upload session answer has no Location header".into(),
            })?;
        Ok(
            if location.starts_with("http://") || location.starts_with("https://") {
                location.to_string()
            } else {
                format!("{}://{}{location}", self.scheme, self.host)
            },
        )
    }

    /// [`Registry::answer_error`] for a write to `repo`: a 403 DENIED there is the registry
    /// refusing the write (no push permission, read-only mode), not proof of bad credentials.
    async fn write_error(
        &self,
        repo: &str,
        what: String,
        response: reqwest::Response,
    ) -> RegistryError {
        let authenticated = self.authenticated(repo).await;
        self.answer_error(what, response, Refusal::WriteDenied { authenticated })
            .await
    }
}

/// In-memory bytes must be the blob they claim to be; checked before sending, so a caller's
/// mistake reads as a mismatch rather than as the registry's refusal.
fn check_bytes(
    registry: &str,
    repo: &str,
    digest: &Digest,
    size: u64,
    source: &BlobSource<'_>,
) -> Result<(), RegistryError> {
    match source {
        BlobSource::Bytes(bytes) if bytes.len() as u64 != size || &Digest::of(bytes) != digest => {
            Err(RegistryError::DigestMismatch {
                registry: registry.to_string(),
                what: format!("blob {repo}@{digest}"),
                expected: digest.clone(),
                actual: Digest::of(bytes),
            })
        }
        _ => Ok(()),
    }
}
