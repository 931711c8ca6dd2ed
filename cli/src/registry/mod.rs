//! The registry client: one OCI distribution registry, reached with the credentials and TLS
//! settings the caller passes in (it reads no environment or Docker config itself). Owns
//! [`Registry`], its constructor and the reads: resolve, manifests, blobs, tags, referrers.
//! Knows references, digests, manifests and blobs — nothing about Kubernetes or signatures.
//! Built on `oci-client`; the referrers endpoint is called directly because berth must tell
//! "no referrers API" (404) from "no referrers".
//!
//! Every fetch verifies the digest (and size, when known) of what it received. Who gets the
//! credentials is [`auth`]'s business, writes are [`upload`]'s, and what a failure means is
//! [`errors`]'.

mod auth;
mod errors;
mod upload;

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use sha2::Digest as _;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::digest::Digest;
use crate::oci::{self, ImageIndex};
use crate::reference::Reference;

use auth::Access;
pub use auth::Credentials;
use errors::{FailedAnswer, error_chain};
pub use errors::{Refusal, RegistryError};
pub use upload::{BlobSource, Progress, UploadSession};

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

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// What to present to this registry. Where they come from (flags, environment, Docker's
    /// `config.json`, a Kubernetes Secret) is the caller's choice.
    pub credentials: Credentials,
    /// Extra PEM CA certificates to trust (in addition to the system roots).
    pub ca_file: Option<PathBuf>,
    /// Plain HTTP instead of HTTPS. Only when the user asked for it.
    pub insecure: bool,
}

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
        f.debug_struct("Registry")
            .field("host", &self.host)
            .field("scheme", &self.scheme)
            .finish()
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
            let pem = std::fs::read(path).map_err(|e| RegistryError::CaFile {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            let parsed =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| RegistryError::CaFile {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
            if parsed.is_empty() {
                return Err(RegistryError::CaFile {
                    path: path.clone(),
                    detail: "no PEM certificate in it".into(),
                });
            }
            reqwest_certs = parsed;
            certs.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem,
            });
        }
        let config = ClientConfig {
            protocol: if options.insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates: certs,
            // One POST + one PUT per blob, streamed from disk: fewer round trips than chunks,
            // and every registry berth targets accepts it.
            use_monolithic_push: true,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        let auth = options.credentials.to_registry_auth();
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
    pub fn for_reference(
        reference: &Reference,
        options: &RegistryOptions,
    ) -> Result<Registry, RegistryError> {
        Registry::new(reference.registry(), options)
    }

    /// `host[:port]` of this registry.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn oci_ref(&self, repo: &str, selector: Option<&str>) -> oci_client::Reference {
        match selector {
            Some(s) if s.contains(':') => oci_client::Reference::with_digest(
                self.host.clone(),
                repo.to_string(),
                s.to_string(),
            ),
            Some(tag) => oci_client::Reference::with_tag(
                self.host.clone(),
                repo.to_string(),
                tag.to_string(),
            ),
            None => oci_client::Reference::with_tag(
                self.host.clone(),
                repo.to_string(),
                "latest".to_string(),
            ),
        }
    }

    /// The error for oci-client's `err` about `what`.
    fn classify(&self, what: impl Into<String>, err: OciDistributionError) -> RegistryError {
        RegistryError::from_oci(&self.host, what.into(), err, self.plain_http())
    }

    /// Whether requests go out without TLS (`--insecure`).
    fn plain_http(&self) -> bool {
        self.scheme == "http"
    }

    /// The digest a tag (or digest) reference points to, with a single HEAD request.
    pub async fn resolve(&self, reference: &Reference) -> Result<Digest, RegistryError> {
        let selector = reference.manifest_selector();
        let what = format!("manifest {reference}");
        let Some(selector) = selector else {
            return Err(RegistryError::NotFound {
                registry: self.host.clone(),
                what,
            });
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
    pub async fn fetch_manifest(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<(Vec<u8>, String), RegistryError> {
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

    async fn fetch_manifest_at(
        &self,
        repo: &str,
        selector: &str,
    ) -> Result<(Vec<u8>, String, Digest), RegistryError> {
        let what = format!(
            "manifest {repo}{}{selector}",
            if selector.contains(':') { "@" } else { ":" }
        );
        let r = self.oci_ref(repo, Some(selector));
        let (bytes, _) = self
            .oci()?
            .pull_manifest_raw(&r, self.oci_auth().await?, oci::ACCEPTED_MANIFEST_TYPES)
            .await
            .map_err(|e| self.classify(what.clone(), e))?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(RegistryError::TooLarge {
                registry: self.host.clone(),
                what,
                limit: MAX_MANIFEST_BYTES,
            });
        }
        let actual = Digest::of(&bytes);
        let media_type = oci::media_type_of(&bytes)
            .unwrap_or_else(|| oci::MEDIA_TYPE_IMAGE_MANIFEST.to_string());
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
        self.fetch_blob_inner(repo, digest, Some(size), size, out)
            .await
    }

    /// A small blob (config, signature payload) into memory, at most `limit` bytes.
    pub async fn fetch_blob_bytes(
        &self,
        repo: &str,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let mut buf = Vec::new();
        self.fetch_blob_inner(repo, digest, None, limit, &mut buf)
            .await?;
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
        self.oci()?
            .store_auth_if_needed(&self.host, self.oci_auth().await?)
            .await;
        let digest_str = digest.to_string();
        let mut stream = self
            .oci()?
            .pull_blob_stream(&r, digest_str.as_str())
            .await
            .map_err(|e| self.classify(what.clone(), e))?;
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
                    None => Err(RegistryError::TooLarge {
                        registry: self.host.clone(),
                        what,
                        limit,
                    }),
                };
            }
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|source| RegistryError::Write {
                    what: what.clone(),
                    source,
                })?;
        }
        out.flush().await.map_err(|source| RegistryError::Write {
            what: what.clone(),
            source,
        })?;
        if let Some(expected) = expected_size
            && received != expected
        {
            return Err(RegistryError::SizeMismatch {
                registry: self.host.clone(),
                what,
                expected,
                actual: received,
            });
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

    /// [`Self::blob_exists`] asked with `access` (a push asks with push access).
    async fn blob_exists_as(
        &self,
        repo: &str,
        digest: &Digest,
        access: Access,
    ) -> Result<bool, RegistryError> {
        let what = format!("blob {repo}@{digest}");
        let url = format!("{}/blobs/{digest}", self.repo_url(repo));
        let response = self
            .send_with_auth(repo, access, &what, |http| Ok(http.head(&url)))
            .await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            reqwest::StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self
                .answer_error(what, response, Refusal::Credentials)
                .await),
        }
    }

    /// `scheme://host/v2/repo`.
    fn repo_url(&self, repo: &str) -> String {
        format!("{}://{}/v2/{repo}", self.scheme, self.host)
    }

    fn unreachable(&self, e: &reqwest::Error) -> RegistryError {
        RegistryError::Unreachable {
            registry: self.host.clone(),
            detail: error_chain(e),
        }
    }

    /// The error for an unexpected `response` about `what`, with the registry's own error
    /// codes and messages; a 403 `DENIED` counts as `denied`.
    async fn answer_error(
        &self,
        what: String,
        response: reqwest::Response,
        denied: Refusal,
    ) -> RegistryError {
        let status = response.status().as_u16();
        let body = read_limited(response, MAX_MANIFEST_BYTES)
            .await
            .unwrap_or_default();
        RegistryError::from_answer(
            &self.host,
            what,
            FailedAnswer::from_body(status, &body),
            denied,
            self.plain_http(),
        )
    }

    /// All tags of `repo`, in the registry's order (lexical for distribution and zot).
    pub async fn list_tags(&self, repo: &str) -> Result<Vec<String>, RegistryError> {
        let r = self.oci_ref(repo, None);
        let mut tags: Vec<String> = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let last = tags.last().cloned();
            let page = self
                .oci()?
                .list_tags(
                    &r,
                    self.oci_auth().await?,
                    Some(TAGS_PAGE_SIZE),
                    last.as_deref(),
                )
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
        let mut url = format!(
            "{}://{}/v2/{repo}/referrers/{digest}",
            self.scheme, self.host
        );
        if let Some(t) = artifact_type {
            url.push_str("?artifactType=");
            url.push_str(&urlencode(t));
        }
        let response = self
            .get_with_auth(&url, repo, oci::MEDIA_TYPE_IMAGE_INDEX, &what)
            .await?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self
                .answer_error(what, response, Refusal::Credentials)
                .await);
        }
        let body = read_limited(response, MAX_MANIFEST_BYTES)
            .await
            .map_err(|detail| RegistryError::Protocol {
                registry: self.host.clone(),
                what: what.clone(),
                detail,
            })?;
        let mut index: ImageIndex =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                registry: self.host.clone(),
                what,
                detail: format!("invalid image index: {e}"),
            })?;
        if let Some(t) = artifact_type {
            index
                .manifests
                .retain(|d| d.artifact_type.as_deref() == Some(t));
        }
        Ok(Some(index))
    }

    fn oci(&self) -> Result<&oci_client::Client, RegistryError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        // Held while building, so the configuration is taken exactly once.
        let mut config = self
            .client_config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let ca_error = |detail: String| RegistryError::CaFile {
            path: self.ca_file.clone().unwrap_or_default(),
            detail,
        };
        let config = config
            .take()
            .ok_or_else(|| ca_error("the registry client could not be built before".into()))?;
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
            .map_err(|e| RegistryError::Unreachable {
                registry: self.host.clone(),
                detail: error_chain(&e),
            })?;
        Ok(self.http.get_or_init(|| client))
    }
}

/// The body of `response`, refused beyond `limit` bytes.
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

/// `s` percent-encoded for a URL query value.
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
mod tests {
    use super::*;

    #[test]
    fn artifact_type_is_percent_encoded() {
        assert_eq!(
            urlencode("application/vnd.dev.cosign+json"),
            "application%2Fvnd.dev.cosign%2Bjson"
        );
    }
}
