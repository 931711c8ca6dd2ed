//! What a Source needs to reach and judge its artifact, read from the Source and the
//! Secrets/ConfigMaps it names: the reference (`spec.url` + `spec.ref`), a registry client
//! with the Source's credentials and CA (never the agent's own environment or Docker config),
//! and the trust policy. Built once per reconcile as one [`Access`] and passed down; the
//! registry clients are kept between reconciles while their settings stay the same.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use berth::digest::Digest;
use berth::reference::Reference;
use berth::registry::{Credentials, Registry, RegistryOptions};
use berth::signature::{PublicKey, TrustPolicy};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::{Client, ResourceExt};
use sha2::{Digest as _, Sha256};

use crate::conditions::reason;
use crate::fetch::Trust;
use crate::source::{RefKind, Source, SpecError};

/// Largest public key object read from a Secret/ConfigMap entry.
pub const MAX_KEY_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("{0}")]
    Spec(#[from] SpecError),
    #[error("spec.url {url:?}: {message}")]
    Url { url: String, message: String },
    /// A Secret, ConfigMap, key or ServiceAccount the Source names cannot be used.
    #[error("{what}: {message}")]
    Unusable { what: String, message: String },
}

impl AccessError {
    pub fn reason(&self) -> &'static str {
        match self {
            AccessError::Spec(_) | AccessError::Url { .. } => reason::INVALID_SPEC,
            AccessError::Unusable { .. } => reason::ACCESS_CONFIGURATION_FAILED,
        }
    }

    /// Only an edit of the Source can fix it.
    pub fn is_stalled(&self) -> bool {
        matches!(self, AccessError::Spec(_) | AccessError::Url { .. })
    }

    fn unusable(what: &str, message: impl ToString) -> AccessError {
        AccessError::Unusable {
            what: what.to_string(),
            message: message.to_string(),
        }
    }
}

/// Where a Source's artifact is, how to reach it and who must have signed it.
#[derive(Debug, Clone)]
pub struct Access {
    /// `spec.url` with the tag or digest of `spec.ref` (the bare repository for semver).
    pub reference: Reference,
    /// The semver range of `spec.ref.semver`.
    pub semver: Option<String>,
    pub registry: Arc<Registry>,
    pub trust: Trust,
}

/// Registry clients by Source, each with a hash of the settings it was built from, and the
/// private (0700) directory their CA bundles are written to.
#[derive(Debug)]
pub struct RegistryClients {
    scratch: tempfile::TempDir,
    clients: Mutex<HashMap<String, (String, Arc<Registry>)>>,
}

impl RegistryClients {
    pub fn new() -> std::io::Result<Self> {
        let scratch = tempfile::Builder::new().prefix("berth-agent-").tempdir()?;
        Ok(RegistryClients {
            scratch,
            clients: Mutex::default(),
        })
    }

    /// Forgets the clients of Sources whose key is not in `live`.
    pub fn retain(&self, live: &HashSet<String>) {
        if let Ok(mut r) = self.clients.lock() {
            r.retain(|k, _| live.contains(k));
        }
    }
}

/// Reads everything the Source names. The trust policy is read on every reconcile, not only
/// for a new digest: a rotated key, a deleted Secret or insecureSkipVerify switched off must
/// stop the next apply of the digest already in the cluster, not wait for the next push.
pub async fn of(
    src: &Source,
    client: &Client,
    clients: &RegistryClients,
) -> Result<Access, AccessError> {
    let reference = reference_of(src)?;
    let semver = match src.spec.reference.kind()? {
        RefKind::Semver(s) => Some(s.to_string()),
        _ => None,
    };
    let registry = registry_for(src, client, clients, &reference).await?;
    let trust = trust_of(src, client, &reference).await?;
    Ok(Access {
        reference,
        semver,
        registry,
        trust,
    })
}

/// `spec.url` with `spec.ref`'s tag or digest.
pub fn reference_of(src: &Source) -> Result<Reference, AccessError> {
    let url = src.spec.url.trim_end_matches('/');
    let bad = |message: String| AccessError::Url {
        url: src.spec.url.clone(),
        message,
    };
    let repo: Reference = url.parse().map_err(|e| bad(format!("{e}")))?;
    if repo.tag().is_some() || repo.digest().is_some() {
        return Err(bad(
            "name only the repository; put the tag, digest or semver range in spec.ref".into(),
        ));
    }
    Ok(match src.spec.reference.kind()? {
        RefKind::Tag(t) => repo.with_tag(t),
        RefKind::Digest(d) => {
            let digest: Digest = d
                .parse()
                .map_err(|e| bad(format!("spec.ref.digest: {e}")))?;
            repo.with_digest(digest)
        }
        RefKind::Semver(_) => repo,
    })
}

/// Registry access from `secretRef` (docker config JSON), `caSecretRef` and `insecure`;
/// without `secretRef` anonymous. The client is reused while these settings stay the same,
/// so a quiet interval costs one request (the client keeps its bearer token).
async fn registry_for(
    src: &Source,
    client: &Client,
    clients: &RegistryClients,
    reference: &Reference,
) -> Result<Arc<Registry>, AccessError> {
    let namespace = src.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut options = RegistryOptions {
        credentials: Credentials::Anonymous,
        ca_file: None,
        insecure: src.spec.insecure,
    };
    let mut fingerprint = Sha256::new();
    fingerprint.update(format!("{}\0{}\0", reference.registry(), src.spec.insecure));
    if let Some(r) = &src.spec.secret_ref {
        let what = format!("spec.secretRef Secret {namespace}/{}", r.name);
        let s = secrets
            .get(&r.name)
            .await
            .map_err(|e| AccessError::unusable(&what, e))?;
        let data = s.data.unwrap_or_default();
        let config = data
            .get(".dockerconfigjson")
            .or_else(|| data.get("config.json"))
            .ok_or_else(|| AccessError::unusable(&what, "has no .dockerconfigjson entry"))?;
        options.credentials = docker_credentials(&config.0, reference.registry())
            .map_err(|m| AccessError::unusable(&what, m))?
            .into();
        fingerprint.update(&config.0);
    }
    let mut ca_bundle = None;
    if let Some(r) = &src.spec.ca_secret_ref {
        let what = format!("spec.caSecretRef Secret {namespace}/{}", r.name);
        let s = secrets
            .get(&r.name)
            .await
            .map_err(|e| AccessError::unusable(&what, e))?;
        let ca = s
            .data
            .unwrap_or_default()
            .get("ca.crt")
            .map(|b| b.0.clone())
            .ok_or_else(|| AccessError::unusable(&what, "has no ca.crt entry"))?;
        fingerprint.update(&ca);
        ca_bundle = Some((what, ca));
    }
    // Only a hash of the settings is kept as the key: no credential stays in a map.
    let fingerprint = format!("{:x}", fingerprint.finalize());
    let key = src.key();
    if let Some((fp, r)) = clients
        .clients
        .lock()
        .ok()
        .and_then(|m| m.get(&key).cloned())
        && fp == fingerprint
    {
        return Ok(r);
    }
    // The registry layer reads CAs from a file: one per Source in the agent's private dir,
    // written only when a client is built (not every interval).
    if let Some((what, ca)) = ca_bundle {
        let path = clients
            .scratch
            .path()
            .join(format!("ca-{}-{}.pem", namespace, src.name_any()));
        std::fs::write(&path, ca).map_err(|e| {
            AccessError::unusable(&what, format!("writing {}: {e}", path.display()))
        })?;
        options.ca_file = Some(path);
    }
    let registry =
        Arc::new(Registry::for_reference(reference, &options).map_err(|e| {
            AccessError::unusable(&format!("registry {}", reference.registry()), e)
        })?);
    if let Ok(mut m) = clients.clients.lock() {
        m.insert(key, (fingerprint, registry.clone()));
    }
    Ok(registry)
}

/// `(user, password)` for `host` from a docker config JSON, never logged.
fn docker_credentials(config: &[u8], host: &str) -> Result<Option<(String, String)>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(config).map_err(|e| format!("is not docker config JSON: {e}"))?;
    let Some(entry) = v["auths"]
        .get(host)
        .or_else(|| v["auths"].get(format!("https://{host}")))
    else {
        return Ok(None);
    };
    if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
        return Ok(Some((u.to_string(), p.to_string())));
    }
    let Some(auth) = entry["auth"].as_str() else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .map_err(|_| format!("auths.{host}.auth is not base64"))?;
    let text = String::from_utf8(decoded).map_err(|_| format!("auths.{host}.auth is not text"))?;
    match text.split_once(':') {
        Some((u, p)) => Ok(Some((u.to_string(), p.to_string()))),
        None => Err(format!("auths.{host}.auth is not user:password")),
    }
}

/// The trust policy: public keys from the Secrets/ConfigMaps `spec.verify.keys` names, bound
/// to the Source's repository with `matchRepository`.
async fn trust_of(
    src: &Source,
    client: &Client,
    reference: &Reference,
) -> Result<Trust, AccessError> {
    if src.spec.verify.insecure_skip_verify {
        return Ok(Trust::SkipVerify);
    }
    let namespace = src.namespace().unwrap_or_default();
    let mut keys = Vec::new();
    for k in &src.spec.verify.keys {
        let (what, entries): (String, BTreeMap<String, Vec<u8>>) = if let Some(s) = &k.secret_ref {
            let what = format!("Secret {namespace}/{}", s.name);
            let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
            let obj = api
                .get(&s.name)
                .await
                .map_err(|e| AccessError::unusable(&what, e))?;
            let data = obj
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            (what, select(data, s.key.as_deref()))
        } else if let Some(c) = &k.config_map_ref {
            let what = format!("ConfigMap {namespace}/{}", c.name);
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
            let obj = api
                .get(&c.name)
                .await
                .map_err(|e| AccessError::unusable(&what, e))?;
            let data = obj
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            (what, select(data, c.key.as_deref()))
        } else {
            continue;
        };
        if entries.is_empty() {
            return Err(AccessError::unusable(
                &what,
                "holds no public key (*.pub entry or the named key)",
            ));
        }
        for (name, bytes) in entries {
            let source = format!("{what} key {name}");
            if bytes.len() > MAX_KEY_BYTES {
                return Err(AccessError::unusable(
                    &source,
                    "is too large for a public key",
                ));
            }
            let pem = String::from_utf8_lossy(&bytes);
            let key = PublicKey::from_pem(&pem, &source)
                .map_err(|e| AccessError::unusable(&source, e))?;
            keys.push(key);
        }
    }
    let mut policy = TrustPolicy::new(keys);
    if src.spec.verify.match_repository {
        policy = policy.in_repository(format!(
            "{}/{}",
            reference.registry(),
            reference.repository()
        ));
    }
    Ok(Trust::Keys(policy))
}

/// The entries named `key`, or every `*.pub` entry.
fn select(data: BTreeMap<String, Vec<u8>>, key: Option<&str>) -> BTreeMap<String, Vec<u8>> {
    data.into_iter()
        .filter(|(k, _)| match key {
            Some(want) => k == want,
            None => k.ends_with(".pub"),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests report failure by panicking
mod tests {
    use super::*;

    fn source(v: serde_json::Value) -> Source {
        match serde_json::from_value(v) {
            Ok(s) => s,
            Err(e) => panic!("test Source does not parse: {e}"),
        }
    }

    fn with(url: &str, reference: serde_json::Value) -> Source {
        source(serde_json::json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Source",
            "metadata": {"name": "s", "namespace": "ns"},
            "spec": {"url": url, "ref": reference, "verify": {"insecureSkipVerify": true}}
        }))
    }

    #[test]
    fn reference_joins_url_and_ref() {
        let r = reference_of(&with(
            "oci://reg:5000/team/app/",
            serde_json::json!({"tag": "v1"}),
        ));
        assert_eq!(
            r.map(|r| r.to_string()).ok().as_deref(),
            Some("oci://reg:5000/team/app:v1")
        );
        let r = reference_of(&with(
            "oci://reg:5000/app",
            serde_json::json!({"semver": ">=1"}),
        ));
        assert_eq!(
            r.map(|r| r.tag().is_none() && r.digest().is_none()).ok(),
            Some(true)
        );
    }

    #[test]
    fn a_url_with_a_tag_or_a_bad_digest_is_refused_as_a_spec_error() {
        let e =
            reference_of(&with("oci://reg/app:v1", serde_json::json!({"tag": "v1"}))).unwrap_err();
        assert!(e.is_stalled() && e.reason() == reason::INVALID_SPEC, "{e}");
        assert!(
            e.to_string()
                .contains("put the tag, digest or semver range in spec.ref"),
            "{e}"
        );
        let e = reference_of(&with(
            "oci://reg/app",
            serde_json::json!({"digest": "sha256:zz"}),
        ))
        .unwrap_err();
        assert!(e.to_string().contains("spec.ref.digest"), "{e}");
    }

    #[test]
    fn docker_config_credentials_by_host() {
        let auth = base64::engine::general_purpose::STANDARD.encode("u:p:w");
        let cfg = format!(
            r#"{{"auths":{{"reg:5000":{{"auth":"{auth}"}},"other":{{"username":"a","password":"b"}}}}}}"#
        );
        assert_eq!(
            docker_credentials(cfg.as_bytes(), "reg:5000"),
            Ok(Some(("u".into(), "p:w".into())))
        );
        assert_eq!(
            docker_credentials(cfg.as_bytes(), "other"),
            Ok(Some(("a".into(), "b".into())))
        );
        assert_eq!(docker_credentials(cfg.as_bytes(), "none"), Ok(None));
        assert!(docker_credentials(b"not json", "x").is_err());
    }

    #[test]
    fn keys_are_the_named_entry_or_every_pub_entry() {
        let data: BTreeMap<String, Vec<u8>> = [("a.pub", "1"), ("b.pub", "2"), ("c.txt", "3")]
            .map(|(k, v)| (k.to_string(), v.into()))
            .into();
        assert_eq!(
            select(data.clone(), None).into_keys().collect::<Vec<_>>(),
            ["a.pub", "b.pub"]
        );
        assert_eq!(
            select(data.clone(), Some("c.txt"))
                .into_keys()
                .collect::<Vec<_>>(),
            ["c.txt"]
        );
        assert!(select(data, Some("missing")).is_empty());
    }
}
