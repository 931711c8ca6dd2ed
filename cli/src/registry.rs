//! The registry layer: one OCI distribution registry, reached with the credentials and TLS
//! settings the caller passes in (it reads no environment or Docker config itself). Knows
//! references, digests, manifests and blobs — nothing about Kubernetes or signatures. Built
//! on `oci-client`; the referrers endpoint is called directly because berth must tell "no
//! referrers API" (404) from "no referrers".
//!
//! Every fetch verifies the digest (and size, when known) of what it received. Credentials go
//! only to the registry they belong to: never to an upload `Location` on another host, and
//! to a token service (bearer realm) only over HTTPS or on the registry's own host.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use sha2::Digest as _;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::digest::Digest;
use crate::oci::{self, ImageIndex};
use crate::reference::Reference;

/// How long to wait for a TCP/TLS connection before calling the registry unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a single read may stall before the transfer is abandoned.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest manifest berth accepts; distribution itself caps manifests at 4 MiB.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// Tags requested per page when listing (registries may return fewer).
const TAGS_PAGE_SIZE: usize = 1000;
/// Upper bound on pages when listing tags, so a misbehaving registry cannot loop us forever.
const MAX_TAG_PAGES: usize = 1000;
/// Read buffer when streaming a blob from disk to the registry.
const UPLOAD_BUFFER_BYTES: usize = 1024 * 1024;

/// Errors talking to a registry. Each names the registry and the object involved.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach registry {registry}: {detail}")]
    Unreachable { registry: String, detail: String },
    #[error("registry {registry} {} {what}: {detail}", refusal.verb())]
    Unauthorized { registry: String, what: String, detail: String, refusal: Refusal },
    #[error("{what} not found in registry {registry}")]
    NotFound { registry: String, what: String },
    #[error("registry {registry} rejected {what}: {detail}")]
    Rejected { registry: String, what: String, detail: String },
    #[error("registry {registry} failed on {what}: {detail}")]
    Protocol { registry: String, what: String, detail: String },
    #[error("{what} from registry {registry} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { registry: String, what: String, expected: Digest, actual: Digest },
    #[error("{what} from registry {registry} is {actual} bytes, expected {expected}")]
    SizeMismatch { registry: String, what: String, expected: u64, actual: u64 },
    #[error("{what} from registry {registry} exceeds the limit of {limit} bytes")]
    TooLarge { registry: String, what: String, limit: u64 },
    #[error("cannot read CA file {path}: {detail}")]
    CaFile { path: PathBuf, detail: String },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("writing {what} failed: {source}")]
    Write { what: String, source: std::io::Error },
}

impl RegistryError {
    /// A short hint on what the user can do next.
    pub fn hint(&self) -> &'static str {
        match self {
            RegistryError::Unreachable { .. } => {
                "check the registry address and port; for a registry without TLS pass --insecure; for a private CA pass --ca-file"
            }
            RegistryError::Unauthorized { refusal, .. } => refusal.hint(),
            RegistryError::NotFound { .. } => {
                "check the repository, tag or digest (berth list oci://REGISTRY/REPO shows the tags)"
            }
            RegistryError::Rejected { .. } => {
                "the registry refused the content; check its logs and accepted media types"
            }
            RegistryError::Protocol { .. } => "retry; if it persists, check the registry's logs",
            RegistryError::DigestMismatch { .. } | RegistryError::SizeMismatch { .. } => {
                "the registry served content that does not match its digest; do not use it, and check the registry"
            }
            RegistryError::TooLarge { .. } => {
                "the content is larger than berth accepts; check that the reference is a berth artifact"
            }
            RegistryError::CaFile { .. } => "pass a PEM file with the registry's CA certificate(s) to --ca-file",
            RegistryError::Io { .. } | RegistryError::Write { .. } => "check the path and free space",
        }
    }

    /// Whether the failure was the registry not knowing the object (as opposed to an outage).
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound { .. })
    }

    /// Whether the failure is the object itself — missing, larger than allowed, not matching
    /// its digest or size — rather than reaching the registry (an outage, refused access, a
    /// rate limit), where trying again later may give another answer.
    pub fn is_bad_object(&self) -> bool {
        matches!(
            self,
            RegistryError::NotFound { .. }
                | RegistryError::TooLarge { .. }
                | RegistryError::DigestMismatch { .. }
                | RegistryError::SizeMismatch { .. }
        )
    }
}

/// Why a registry refused a request (both are exit code 5, "access").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Credentials missing or not accepted: HTTP 401, a failed token exchange, a 403 on a read.
    Credentials,
    /// A write answered 403 DENIED: read-only registries (olareg `--store-ro`) say this too,
    /// so it does not prove the credentials wrong.
    WriteDenied {
        /// Whether the request carried credentials (Basic or a bearer token).
        authenticated: bool,
    },
    /// The registry named a token service that may not have the credentials (plain HTTP on
    /// another host), so berth did not send them.
    UnsafeTokenService,
}

impl Refusal {
    fn verb(self) -> &'static str {
        match self {
            Refusal::Credentials | Refusal::UnsafeTokenService => "refused access to",
            Refusal::WriteDenied { .. } => "denied the write of",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Refusal::Credentials => {
                "pass --creds USER:PASSWORD, set BERTH_REGISTRY_USER/BERTH_REGISTRY_PASSWORD, or log in with a Docker credential helper"
            }
            Refusal::WriteDenied { authenticated: true } => {
                "the registry denied the write despite the credentials: check that the account may push to this repository, and whether the registry is read-only"
            }
            Refusal::UnsafeTokenService => {
                "the registry's token service (the bearer realm) must use HTTPS or be on the registry's own host; fix the registry's auth configuration"
            }
            Refusal::WriteDenied { authenticated: false } => {
                "the write was anonymous: if the registry needs an account to push, pass --creds USER:PASSWORD; otherwise check whether it is read-only"
            }
        }
    }
}

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// `(user, password)` for this registry; `None` is anonymous access. Where they come
    /// from (flags, environment, Docker's `config.json`, a Kubernetes Secret) is the caller's choice.
    pub creds: Option<(String, String)>,
    /// Extra PEM CA certificates to trust (in addition to the system roots).
    pub ca_file: Option<PathBuf>,
    /// Plain HTTP instead of HTTPS. Only when the user asked for it.
    pub insecure: bool,
}

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

/// One registry host with its client and credentials.
pub struct Registry {
    host: String,
    scheme: &'static str,
    /// Built on first use (reads, tags): it loads the system roots twice, and a push does
    /// not need it at all.
    client: std::sync::OnceLock<oci_client::Client>,
    /// Its configuration, taken when it is built.
    client_config: std::sync::Mutex<Option<ClientConfig>>,
    ca_file: Option<PathBuf>,
    auth: RegistryAuth,
    /// Set once the registry's token service was found fit for `auth` (see [`Self::oci_auth`]).
    realm_checked: tokio::sync::OnceCell<()>,
    /// Plain HTTP client for the endpoints oci-client does not expose as we need them;
    /// built on first use, since loading the system roots costs ~10 ms per client.
    http: std::sync::OnceLock<reqwest::Client>,
    /// Extra CA certificates for `http`.
    extra_certs: Vec<reqwest::Certificate>,
    /// Bearer tokens for `http`, per repository and access, once a challenge was answered.
    bearer: Mutex<std::collections::HashMap<(String, Access), String>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print credentials.
        f.debug_struct("Registry").field("host", &self.host).field("scheme", &self.scheme).finish()
    }
}

impl Registry {
    /// A registry at `host` (`host[:port]`) reached with `options`.
    pub fn new(host: &str, options: &RegistryOptions) -> Result<Registry, RegistryError> {
        // reqwest and oci-client are built without a TLS crypto provider (the agent already
        // links ring through kube; a second one would cost memory and binary size): use
        // ring. An error only means the process installed one already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut certs = Vec::new();
        let mut reqwest_certs = Vec::new();
        if let Some(path) = &options.ca_file {
            let pem =
                std::fs::read(path).map_err(|e| RegistryError::CaFile { path: path.clone(), detail: e.to_string() })?;
            let parsed = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| RegistryError::CaFile { path: path.clone(), detail: e.to_string() })?;
            if parsed.is_empty() {
                return Err(RegistryError::CaFile { path: path.clone(), detail: "no PEM certificate in it".into() });
            }
            reqwest_certs = parsed;
            certs.push(Certificate { encoding: CertificateEncoding::Pem, data: pem });
        }
        let config = ClientConfig {
            protocol: if options.insecure { ClientProtocol::Http } else { ClientProtocol::Https },
            extra_root_certificates: certs,
            // One POST + one PUT per blob, streamed from disk: fewer round trips than chunks,
            // and every registry berth targets accepts it.
            use_monolithic_push: true,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        let auth = match &options.creds {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok(Registry {
            host: host.to_string(),
            scheme: if options.insecure { "http" } else { "https" },
            client: std::sync::OnceLock::new(),
            client_config: std::sync::Mutex::new(Some(config)),
            ca_file: options.ca_file.clone(),
            auth,
            realm_checked: tokio::sync::OnceCell::new(),
            http: std::sync::OnceLock::new(),
            extra_certs: reqwest_certs,
            bearer: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// A registry for the host `reference` names.
    pub fn for_reference(reference: &Reference, options: &RegistryOptions) -> Result<Registry, RegistryError> {
        Registry::new(reference.registry(), options)
    }

    /// `host[:port]` of this registry.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn oci_ref(&self, repo: &str, selector: Option<&str>) -> oci_client::Reference {
        match selector {
            Some(s) if s.contains(':') => {
                oci_client::Reference::with_digest(self.host.clone(), repo.to_string(), s.to_string())
            }
            Some(tag) => oci_client::Reference::with_tag(self.host.clone(), repo.to_string(), tag.to_string()),
            None => oci_client::Reference::with_tag(self.host.clone(), repo.to_string(), "latest".to_string()),
        }
    }

    fn classify(&self, what: impl Into<String>, err: OciDistributionError) -> RegistryError {
        self.explain_plain_http(classify(&self.host, what.into(), err))
    }

    /// A TLS registry answers plain HTTP with a bare 400; say what that means.
    fn explain_plain_http(&self, error: RegistryError) -> RegistryError {
        let plain_http_refused = self.scheme == "http"
            && match &error {
                RegistryError::Protocol { detail, .. } | RegistryError::Rejected { detail, .. } => {
                    detail.contains("400 Bad Request") || detail.contains("HTTP request to an HTTPS server")
                }
                _ => false,
            };
        if plain_http_refused {
            return RegistryError::Unreachable {
                registry: self.host.clone(),
                detail: "the registry refused plain HTTP (HTTP 400); it probably speaks TLS: drop --insecure".into(),
            };
        }
        error
    }

    /// The digest a tag (or digest) reference points to, with a single HEAD request.
    pub async fn resolve(&self, reference: &Reference) -> Result<Digest, RegistryError> {
        let selector = reference.manifest_selector();
        let what = format!("manifest {reference}");
        let Some(selector) = selector else {
            return Err(RegistryError::NotFound { registry: self.host.clone(), what });
        };
        let r = self.oci_ref(reference.repository(), Some(&selector));
        let digest = self
            .oci()?
            .fetch_manifest_digest(&r, self.oci_auth().await?)
            .await
            .map_err(|e| self.classify(what.clone(), e))?;
        digest.parse().map_err(|_| RegistryError::Protocol {
            registry: self.host.clone(),
            what,
            detail: format!("registry answered with digest '{digest}', which is not sha256"),
        })
    }

    /// The manifest `digest` in `repo`: its bytes (verified against `digest`) and media type.
    pub async fn fetch_manifest(&self, repo: &str, digest: &Digest) -> Result<(Vec<u8>, String), RegistryError> {
        let (bytes, media_type, actual) = self.fetch_manifest_at(repo, &digest.to_string()).await?;
        if &actual != digest {
            return Err(RegistryError::DigestMismatch {
                registry: self.host.clone(),
                what: format!("manifest {repo}@{digest}"),
                expected: digest.clone(),
                actual,
            });
        }
        Ok((bytes, media_type))
    }

    /// The manifest a tag points to, or `None` when the tag does not exist. Returns the bytes,
    /// media type and the digest computed from the bytes.
    pub async fn fetch_tagged_manifest(
        &self,
        repo: &str,
        tag: &str,
    ) -> Result<Option<(Vec<u8>, String, Digest)>, RegistryError> {
        match self.fetch_manifest_at(repo, tag).await {
            Ok(found) => Ok(Some(found)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn fetch_manifest_at(&self, repo: &str, selector: &str) -> Result<(Vec<u8>, String, Digest), RegistryError> {
        let what = format!("manifest {repo}{}{selector}", if selector.contains(':') { "@" } else { ":" });
        let r = self.oci_ref(repo, Some(selector));
        let (bytes, _) = self
            .oci()?
            .pull_manifest_raw(&r, self.oci_auth().await?, oci::ACCEPTED_MANIFEST_TYPES)
            .await
            .map_err(|e| self.classify(what.clone(), e))?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(RegistryError::TooLarge { registry: self.host.clone(), what, limit: MAX_MANIFEST_BYTES });
        }
        let actual = Digest::of(&bytes);
        let media_type = oci::media_type_of(&bytes).unwrap_or_else(|| oci::MEDIA_TYPE_IMAGE_MANIFEST.to_string());
        Ok((bytes.to_vec(), media_type, actual))
    }

    /// Stream blob `digest` of `repo` into `out`, verifying its size and digest. Stops as soon
    /// as more than `size` bytes arrive, so a hostile registry cannot fill the disk.
    /// On error, `out` may hold partial data: the caller discards it.
    pub async fn fetch_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        out: impl AsyncWrite + Unpin,
    ) -> Result<(), RegistryError> {
        self.fetch_blob_inner(repo, digest, Some(size), size, out).await
    }

    /// A small blob (config, signature payload) into memory, at most `limit` bytes.
    pub async fn fetch_blob_bytes(&self, repo: &str, digest: &Digest, limit: u64) -> Result<Vec<u8>, RegistryError> {
        let mut buf = Vec::new();
        self.fetch_blob_inner(repo, digest, None, limit, &mut buf).await?;
        Ok(buf)
    }

    async fn fetch_blob_inner(
        &self,
        repo: &str,
        digest: &Digest,
        expected_size: Option<u64>,
        limit: u64,
        mut out: impl AsyncWrite + Unpin,
    ) -> Result<(), RegistryError> {
        let what = format!("blob {repo}@{digest}");
        let r = self.oci_ref(repo, Some(&digest.to_string()));
        // Authenticate first so the blob request carries credentials.
        self.oci()?.store_auth_if_needed(&self.host, self.oci_auth().await?).await;
        let digest_str = digest.to_string();
        let mut stream =
            self.oci()?.pull_blob_stream(&r, digest_str.as_str()).await.map_err(|e| self.classify(what.clone(), e))?;
        let mut hasher = sha2::Sha256::new();
        let mut received: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| RegistryError::Protocol {
                registry: self.host.clone(),
                what: what.clone(),
                detail: e.to_string(),
            })?;
            received += chunk.len() as u64;
            if received > limit {
                return match expected_size {
                    Some(expected) => Err(RegistryError::SizeMismatch {
                        registry: self.host.clone(),
                        what,
                        expected,
                        actual: received,
                    }),
                    None => Err(RegistryError::TooLarge { registry: self.host.clone(), what, limit }),
                };
            }
            hasher.update(&chunk);
            out.write_all(&chunk).await.map_err(|source| RegistryError::Write { what: what.clone(), source })?;
        }
        out.flush().await.map_err(|source| RegistryError::Write { what: what.clone(), source })?;
        if let Some(expected) = expected_size
            && received != expected
        {
            return Err(RegistryError::SizeMismatch { registry: self.host.clone(), what, expected, actual: received });
        }
        let actual = Digest::from_hasher(hasher);
        if &actual != digest {
            return Err(RegistryError::DigestMismatch {
                registry: self.host.clone(),
                what,
                expected: digest.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Whether `repo` already has blob `digest` (one HEAD request).
    pub async fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<bool, RegistryError> {
        self.blob_exists_as(repo, digest, Access::Pull).await
    }

    async fn blob_exists_as(&self, repo: &str, digest: &Digest, access: Access) -> Result<bool, RegistryError> {
        let what = format!("blob {repo}@{digest}");
        let url = format!("{}/blobs/{digest}", self.repo_url(repo));
        let response = self.send_with_auth(repo, access, &what, |http| Ok(http.head(&url))).await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            reqwest::StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.answer_error(what, response).await),
        }
    }

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
        self.finish_upload(repo, session, digest, size, source, progress).await?;
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
        Ok(UploadSession { location: self.upload_location(&response, &what)? })
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
        let target = format!("{location}{separator}digest={}", urlencode(&digest.to_string()));
        let streamed = matches!(source, BlobSource::File(_)) && size > UPLOAD_BUFFER_BYTES as u64;
        let body = match source {
            BlobSource::Bytes(bytes) => reqwest::Body::from(bytes.to_vec()),
            // No more than one read buffer: read at once, not chunk by chunk through the
            // blocking pool, whose thread hops a small layer would wait on after the build.
            BlobSource::File(path) if !streamed => reqwest::Body::from(
                std::fs::read(path).map_err(|source| RegistryError::Io { path: path.to_path_buf(), source })?,
            ),
            BlobSource::File(path) => {
                let file = std::fs::File::open(path)
                    .map_err(|source| RegistryError::Io { path: path.to_path_buf(), source })?;
                let mut sent: u64 = 0;
                let progress = progress.clone();
                let stream =
                    tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), UPLOAD_BUFFER_BYTES)
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
        match self.send_with_auth(repo, Access::Push, &what, |http| Ok(http.delete(&location))).await {
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
        let what = format!("manifest {repo}{}{tag_or_digest}", if tag_or_digest.contains(':') { "@" } else { ":" });
        if tag_or_digest.contains(':') && tag_or_digest != digest.to_string() {
            return Err(RegistryError::DigestMismatch {
                registry: self.host.clone(),
                what,
                expected: tag_or_digest.parse().unwrap_or_else(|_| digest.clone()),
                actual: digest,
            });
        }
        let content_type = reqwest::header::HeaderValue::from_str(media_type).map_err(|e| RegistryError::Rejected {
            registry: self.host.clone(),
            what: what.clone(),
            detail: format!("media type '{media_type}': {e}"),
        })?;
        let url = format!("{}/manifests/{tag_or_digest}", self.repo_url(repo));
        let response = self
            .send_with_auth(repo, Access::Push, &what, |http| {
                Ok(http.put(&url).header(reqwest::header::CONTENT_TYPE, content_type.clone()).body(manifest.to_vec()))
            })
            .await?;
        if response.status() != reqwest::StatusCode::CREATED {
            return Err(self.write_error(repo, what, response).await);
        }
        Ok(digest)
    }

    /// `scheme://host/v2/repo`.
    fn repo_url(&self, repo: &str) -> String {
        format!("{}://{}/v2/{repo}", self.scheme, self.host)
    }

    /// The absolute upload URL from a `Location` header (registries may send a path).
    fn upload_location(&self, response: &reqwest::Response, what: &str) -> Result<String, RegistryError> {
        let location =
            response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).ok_or_else(|| {
                RegistryError::Protocol {
                    registry: self.host.clone(),
                    what: what.to_string(),
                    detail: "upload session answer has no Location header".into(),
                }
            })?;
        Ok(if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}://{}{location}", self.scheme, self.host)
        })
    }

    fn unreachable(&self, e: &reqwest::Error) -> RegistryError {
        RegistryError::Unreachable { registry: self.host.clone(), detail: error_chain(e) }
    }

    /// The error for an unexpected answer, with the registry's own error codes and messages.
    async fn answer_error(&self, what: String, response: reqwest::Response) -> RegistryError {
        self.error_from(what, response, Refusal::Credentials).await
    }

    /// [`Self::answer_error`] for a write to `repo`: a 403 DENIED there is the registry
    /// refusing the write (no push permission, read-only mode), not proof of bad credentials.
    async fn write_error(&self, repo: &str, what: String, response: reqwest::Response) -> RegistryError {
        let authenticated = self.authenticated(repo).await;
        self.error_from(what, response, Refusal::WriteDenied { authenticated }).await
    }

    /// The error for `response`; a 403 DENIED counts as `denied`.
    async fn error_from(&self, what: String, response: reqwest::Response, denied: Refusal) -> RegistryError {
        let status = response.status();
        let body = read_limited(response, MAX_MANIFEST_BYTES).await.unwrap_or_default();
        #[derive(serde::Deserialize)]
        struct Envelope {
            errors: Vec<EnvelopeError>,
        }
        #[derive(serde::Deserialize)]
        struct EnvelopeError {
            code: String,
            #[serde(default)]
            message: String,
            /// Often the registry's actual reason (olareg: "repository is read-only").
            #[serde(default)]
            detail: serde_json::Value,
        }
        fn describe(e: &EnvelopeError) -> String {
            let detail = match &e.detail {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) if s.is_empty() => String::new(),
                serde_json::Value::String(s) => format!(" ({})", truncate(s)),
                other => format!(" ({})", truncate(&other.to_string())),
            };
            format!("{}: {}{detail}", e.code, e.message)
        }
        let envelope = serde_json::from_slice::<Envelope>(&body).ok().filter(|e| !e.errors.is_empty());
        let detail = match &envelope {
            Some(e) => {
                format!("HTTP {}: {}", status.as_u16(), e.errors.iter().map(describe).collect::<Vec<_>>().join("; "))
            }
            None => format!("HTTP {status}: {}", truncate(&String::from_utf8_lossy(&body))),
        };
        let is_denied = envelope.is_some_and(|e| e.errors.iter().any(|e| e.code.eq_ignore_ascii_case("DENIED")));
        let registry = self.host.clone();
        let error = match status.as_u16() {
            403 if is_denied => RegistryError::Unauthorized { registry, what, detail, refusal: denied },
            401 | 403 => RegistryError::Unauthorized { registry, what, detail, refusal: Refusal::Credentials },
            404 => RegistryError::NotFound { registry, what },
            400..=499 => RegistryError::Rejected { registry, what, detail },
            _ => RegistryError::Protocol { registry, what, detail },
        };
        self.explain_plain_http(error)
    }

    /// All tags of `repo`, in the registry's order (lexical for distribution and zot).
    pub async fn list_tags(&self, repo: &str) -> Result<Vec<String>, RegistryError> {
        let r = self.oci_ref(repo, None);
        let mut tags: Vec<String> = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let last = tags.last().cloned();
            let page = self
                .oci()?
                .list_tags(&r, self.oci_auth().await?, Some(TAGS_PAGE_SIZE), last.as_deref())
                .await
                .map_err(|e| self.classify(format!("repository {repo}"), e))?;
            let n = page.tags.len();
            tags.extend(page.tags);
            if n < TAGS_PAGE_SIZE {
                break;
            }
        }
        tags.dedup();
        Ok(tags)
    }

    /// The referrers of manifest `digest` in `repo` through the OCI 1.1 referrers API,
    /// filtered by `artifact_type` (also filtered here, since registries may ignore the filter).
    /// `None` when the registry has no referrers API (it answers 404), so the caller can fall
    /// back to the referrers tag schema (`fetch_tagged_manifest(repo, &digest.tag_form())`).
    pub async fn referrers(
        &self,
        repo: &str,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<ImageIndex>, RegistryError> {
        let what = format!("referrers of {repo}@{digest}");
        let mut url = format!("{}://{}/v2/{repo}/referrers/{digest}", self.scheme, self.host);
        if let Some(t) = artifact_type {
            url.push_str("?artifactType=");
            url.push_str(&urlencode(t));
        }
        let response = self.get_with_auth(&url, repo, oci::MEDIA_TYPE_IMAGE_INDEX, &what).await?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(RegistryError::Unauthorized {
                registry: self.host.clone(),
                what,
                detail: format!("HTTP {status}"),
                refusal: Refusal::Credentials,
            });
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(RegistryError::Protocol {
                registry: self.host.clone(),
                what,
                detail: format!("HTTP {status}: {}", truncate(&body)),
            });
        }
        let body = read_limited(response, MAX_MANIFEST_BYTES).await.map_err(|detail| RegistryError::Protocol {
            registry: self.host.clone(),
            what: what.clone(),
            detail,
        })?;
        let mut index: ImageIndex = serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
            registry: self.host.clone(),
            what,
            detail: format!("invalid image index: {e}"),
        })?;
        if let Some(t) = artifact_type {
            index.manifests.retain(|d| d.artifact_type.as_deref() == Some(t));
        }
        Ok(Some(index))
    }

    fn oci(&self) -> Result<&oci_client::Client, RegistryError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        // Held while building, so the configuration is taken exactly once.
        let mut config = self.client_config.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let ca_error =
            |detail: String| RegistryError::CaFile { path: self.ca_file.clone().unwrap_or_default(), detail };
        let config = config.take().ok_or_else(|| ca_error("the registry client could not be built before".into()))?;
        let client = oci_client::Client::try_from(config).map_err(|e| ca_error(e.to_string()))?;
        Ok(self.client.get_or_init(|| client))
    }

    fn http(&self) -> Result<&reqwest::Client, RegistryError> {
        if let Some(client) = self.http.get() {
            return Ok(client);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .tls_certs_merge(self.extra_certs.clone())
            .build()
            .map_err(|e| RegistryError::Unreachable { registry: self.host.clone(), detail: error_chain(&e) })?;
        Ok(self.http.get_or_init(|| client))
    }

    /// GET `url`, answering a 401 challenge (Bearer token or Basic) once.
    async fn get_with_auth(
        &self,
        url: &str,
        repo: &str,
        accept: &str,
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        self.send_with_auth(repo, Access::Pull, what, |http| Ok(http.get(url).header(reqwest::header::ACCEPT, accept)))
            .await
    }

    /// `request` with the credentials known for `repo` and `access`: a cached bearer token
    /// (a push token also serves pulls), else Basic credentials, else none. Only when it goes
    /// to this registry itself: an upload `Location` may name another host (a storage
    /// service), which gets no Authorization header.
    async fn with_credentials(
        &self,
        request: reqwest::RequestBuilder,
        repo: &str,
        access: Access,
    ) -> Result<reqwest::RequestBuilder, RegistryError> {
        let (client, request) = request.build_split();
        let request = request.map_err(|e| self.unreachable(&e))?;
        let own = self.is_own_origin(request.url());
        let request = reqwest::RequestBuilder::from_parts(client, request);
        Ok(match (self.token(repo, access).await, &self.auth) {
            _ if !own => request,
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(u, p)) => request.basic_auth(u, Some(p)),
            (None, _) => request,
        })
    }

    /// Whether `url` is this registry itself: same host and port, and not plain HTTP when the
    /// registry is reached over HTTPS. The distribution spec forbids forwarding credentials
    /// across hosts (CVE-2020-15157); oci-client applies the same rule to its own requests.
    fn is_own_origin(&self, url: &reqwest::Url) -> bool {
        let Ok(own) = reqwest::Url::parse(&format!("{}://{}", self.scheme, self.host)) else { return false };
        url.host_str() == own.host_str()
            && url.port_or_known_default() == own.port_or_known_default()
            && (own.scheme() == "http" || url.scheme() == "https")
    }

    /// Whether Basic credentials may go to the token service at `realm`: over HTTPS, or on
    /// the registry's own origin. A plain-HTTP realm elsewhere would hand the password to
    /// another host in the clear.
    fn may_send_credentials_to(&self, realm: &str) -> bool {
        reqwest::Url::parse(realm).is_ok_and(|url| url.scheme() == "https" || self.is_own_origin(&url))
    }

    fn unsafe_token_service(&self, what: &str, realm: &str) -> RegistryError {
        RegistryError::Unauthorized {
            registry: self.host.clone(),
            what: what.to_string(),
            detail: format!(
                "its token service {realm} is plain HTTP on another host; berth does not send the credentials there"
            ),
            refusal: Refusal::UnsafeTokenService,
        }
    }

    /// The credentials handed to oci-client. It sends Basic credentials to whatever token
    /// service the registry's `GET /v2/` challenge names, so berth reads that challenge first
    /// (once per client) and withholds them, as for its own requests, from a realm that may
    /// not have them.
    async fn oci_auth(&self) -> Result<&RegistryAuth, RegistryError> {
        if !matches!(self.auth, RegistryAuth::Basic(..)) {
            return Ok(&self.auth);
        }
        self.realm_checked
            .get_or_try_init(|| async {
                let url = format!("{}://{}/v2/", self.scheme, self.host);
                let response = self.http()?.get(&url).send().await.map_err(|e| self.unreachable(&e))?;
                match bearer_realm(&response) {
                    Some(realm) if !self.may_send_credentials_to(&realm) => {
                        Err(self.unsafe_token_service("the registry API", &realm))
                    }
                    _ => Ok(()),
                }
            })
            .await?;
        Ok(&self.auth)
    }

    /// The cached bearer token for `repo` and `access` (a push token also serves pulls).
    async fn token(&self, repo: &str, access: Access) -> Option<String> {
        let tokens = self.bearer.lock().await;
        let token = tokens.get(&(repo.to_string(), access)).or_else(|| match access {
            Access::Pull => tokens.get(&(repo.to_string(), Access::Push)),
            Access::Push => None,
        });
        token.cloned()
    }

    /// Whether writes to `repo` carry credentials: a push token, or Basic credentials.
    async fn authenticated(&self, repo: &str) -> bool {
        matches!(self.auth, RegistryAuth::Basic(..)) || self.token(repo, Access::Push).await.is_some()
    }

    /// Sends the request `make` builds; on a 401 from this registry with a Bearer challenge,
    /// obtains a token for `repo` and `access` from the token service (with the Basic
    /// credentials, if any and if it may have them), caches it and sends a fresh request once
    /// more. Other answers are returned as they are.
    async fn send_with_auth(
        &self,
        repo: &str,
        access: Access,
        what: &str,
        make: impl Fn(&reqwest::Client) -> Result<reqwest::RequestBuilder, RegistryError>,
    ) -> Result<reqwest::Response, RegistryError> {
        let http = self.http()?;
        let request = self.with_credentials(make(http)?, repo, access).await?;
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED || !self.is_own_origin(response.url()) {
            return Ok(response);
        }
        let Some(params) = bearer_challenge(&response) else {
            return Ok(response);
        };
        let Some(realm) = params.iter().find(|(k, _)| k == "realm").map(|(_, v)| v.clone()) else {
            return Ok(response);
        };
        let actions = match access {
            Access::Pull => "pull",
            Access::Push => "pull,push",
        };
        let mut query: Vec<(String, String)> = vec![("scope".into(), format!("repository:{repo}:{actions}"))];
        if let Some((_, service)) = params.iter().find(|(k, _)| k == "service") {
            query.push(("service".into(), service.clone()));
        }
        let mut token_request = http.get(&realm).query(&query);
        if let RegistryAuth::Basic(u, p) = &self.auth {
            if !self.may_send_credentials_to(&realm) {
                return Err(self.unsafe_token_service(what, &realm));
            }
            token_request = token_request.basic_auth(u, Some(p));
        }
        let token_response = token_request.send().await.map_err(|e| self.unreachable(&e))?;
        if !token_response.status().is_success() {
            return Err(RegistryError::Unauthorized {
                registry: self.host.clone(),
                what: what.to_string(),
                detail: format!("token service answered HTTP {}", token_response.status()),
                refusal: Refusal::Credentials,
            });
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body =
            read_limited(token_response, MAX_MANIFEST_BYTES).await.map_err(|detail| RegistryError::Unauthorized {
                registry: self.host.clone(),
                what: what.to_string(),
                detail,
                refusal: Refusal::Credentials,
            })?;
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| RegistryError::Unauthorized {
            registry: self.host.clone(),
            what: what.to_string(),
            detail: format!("token service answer is not JSON: {e}"),
            refusal: Refusal::Credentials,
        })?;
        let Some(token) = answer.token.or(answer.access_token) else {
            return Err(RegistryError::Unauthorized {
                registry: self.host.clone(),
                what: what.to_string(),
                detail: "token service returned no token".into(),
                refusal: Refusal::Credentials,
            });
        };
        self.bearer.lock().await.insert((repo.to_string(), access), token.clone());
        make(http)?.bearer_auth(token).send().await.map_err(|e| self.unreachable(&e))
    }
}

/// What a request needs of a repository, for bearer token scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Access {
    Pull,
    Push,
}

fn classify(registry: &str, what: String, err: OciDistributionError) -> RegistryError {
    let registry = registry.to_string();
    match err {
        OciDistributionError::UnauthorizedError { url } => RegistryError::Unauthorized {
            registry,
            what,
            detail: format!("HTTP 401 from {url}"),
            refusal: Refusal::Credentials,
        },
        OciDistributionError::AuthenticationFailure(detail) => {
            RegistryError::Unauthorized { registry, what, detail, refusal: Refusal::Credentials }
        }
        OciDistributionError::ImageManifestNotFoundError(_) => RegistryError::NotFound { registry, what },
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let detail =
                envelope.errors.iter().map(|e| format!("{:?}: {}", e.code, e.message)).collect::<Vec<_>>().join("; ");
            if codes.iter().any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                RegistryError::Unauthorized { registry, what, detail, refusal: Refusal::Credentials }
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                RegistryError::NotFound { registry, what }
            } else {
                RegistryError::Rejected { registry, what, detail }
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => RegistryError::NotFound { registry, what },
        OciDistributionError::ServerError { code: 401 | 403, message, .. } => {
            RegistryError::Unauthorized { registry, what, detail: truncate(&message), refusal: Refusal::Credentials }
        }
        OciDistributionError::ServerError { code, message, .. } if (400..500).contains(&code) => {
            RegistryError::Rejected { registry, what, detail: format!("HTTP {code}: {}", truncate(&message)) }
        }
        OciDistributionError::ServerError { code, message, .. } => {
            RegistryError::Protocol { registry, what, detail: format!("HTTP {code}: {}", truncate(&message)) }
        }
        OciDistributionError::RequestError(e) => {
            if e.is_connect() || e.is_timeout() {
                RegistryError::Unreachable { registry, detail: error_chain(&e) }
            } else if e.status().is_some_and(|s| s == reqwest::StatusCode::UNAUTHORIZED) {
                RegistryError::Unauthorized { registry, what, detail: error_chain(&e), refusal: Refusal::Credentials }
            } else if e.status().is_some_and(|s| s == reqwest::StatusCode::NOT_FOUND) {
                RegistryError::NotFound { registry, what }
            } else {
                RegistryError::Protocol { registry, what, detail: error_chain(&e) }
            }
        }
        OciDistributionError::DigestError(e) => RegistryError::Protocol { registry, what, detail: e.to_string() },
        other => RegistryError::Protocol { registry, what, detail: other.to_string() },
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

/// The error and its causes on one line: reqwest hides the useful part (refused, TLS) in sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Registry error bodies can be whole HTML pages; keep messages to one readable line.
fn truncate(s: &str) -> String {
    const MAX: usize = 200;
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > MAX {
        format!("{}…", one_line.chars().take(MAX).collect::<String>())
    } else {
        one_line
    }
}

async fn read_limited(response: reqwest::Response, limit: u64) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| error_chain(&e))?;
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(format!("answer exceeds {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The parameters of the `WWW-Authenticate: Bearer …` challenge in `response`, if it has one.
fn bearer_challenge(response: &reqwest::Response) -> Option<Vec<(String, String)>> {
    let challenge = response.headers().get(reqwest::header::WWW_AUTHENTICATE)?.to_str().ok()?;
    let params = challenge.strip_prefix("Bearer ").or_else(|| challenge.strip_prefix("bearer "))?;
    Some(parse_challenge(params))
}

/// The token service (`realm`) a Bearer challenge in `response` names.
fn bearer_realm(response: &reqwest::Response) -> Option<String> {
    bearer_challenge(response)?.into_iter().find(|(k, _)| k == "realm").map(|(_, v)| v)
}

/// `key="value", key2="value2"` from a WWW-Authenticate challenge.
fn parse_challenge(params: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else { break };
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.split_once('"') {
                Some((v, r)) => (v.to_string(), r),
                None => (quoted.to_string(), ""),
            }
        } else {
            match after.split_once(',') {
                Some((v, r)) => (v.trim().to_string(), r),
                None => (after.trim().to_string(), ""),
            }
        };
        out.push((key, value));
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge_parameters() {
        let p = parse_challenge(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a:pull""#,
        );
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[1], ("service".into(), "registry.example".into()));
        assert_eq!(p[2].1, "repository:a:pull");
    }

    #[test]
    fn credentials_go_only_to_the_registry_and_to_token_services_that_may_have_them() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        let tls = Registry::new("reg.example:5000", &RegistryOptions::default()).unwrap();
        assert!(tls.is_own_origin(&url("https://REG.example:5000/v2/app/blobs/uploads/1?state=x")));
        assert!(!tls.is_own_origin(&url("https://storage.example/bucket/1?signature=x")), "another host");
        assert!(!tls.is_own_origin(&url("https://reg.example/v2/")), "another port");
        assert!(!tls.is_own_origin(&url("http://reg.example:5000/v2/")), "HTTPS downgraded to HTTP");
        assert!(tls.may_send_credentials_to("https://auth.example/token"));
        assert!(!tls.may_send_credentials_to("http://auth.example/token"));
        assert!(!tls.may_send_credentials_to("http://reg.example:5000/token"), "HTTPS downgraded to HTTP");

        let plain =
            Registry::new("reg.example:5000", &RegistryOptions { insecure: true, ..Default::default() }).unwrap();
        assert!(plain.may_send_credentials_to("http://reg.example:5000/token"));
        assert!(!plain.may_send_credentials_to("http://auth.example/token"));
        assert!(!plain.may_send_credentials_to("no url at all"));
    }

    #[tokio::test]
    async fn an_upload_location_on_another_host_gets_no_authorization() {
        let options = RegistryOptions { creds: Some(("ci".into(), "secret".into())), ..Default::default() };
        let registry = Registry::new("reg.example:5000", &options).unwrap();
        let http = registry.http().unwrap();
        for (location, authorized) in
            [("https://reg.example:5000/v2/app/blobs/uploads/1", true), ("https://storage.example/upload/1", false)]
        {
            let request = registry.with_credentials(http.put(location), "app", Access::Push).await.unwrap();
            let request = request.build().unwrap();
            assert_eq!(request.headers().contains_key(reqwest::header::AUTHORIZATION), authorized, "{location}");
        }
    }

    #[test]
    fn artifact_type_is_percent_encoded() {
        assert_eq!(urlencode("application/vnd.dev.cosign+json"), "application%2Fvnd.dev.cosign%2Bjson");
    }
}
