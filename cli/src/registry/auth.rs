//! Who gets the credentials, and how: Basic credentials and bearer tokens per repository
//! and access (pull, or pull and push), the `WWW-Authenticate` challenge, and the rule that
//! credentials go only to the registry they belong to — never to an upload `Location` on
//! another host, and to a token service (bearer realm) only over HTTPS or on the registry's
//! own host.

use oci_client::secrets::RegistryAuth;

use super::{MAX_MANIFEST_BYTES, Refusal, Registry, RegistryError, read_limited};

/// The credentials a registry client presents, chosen by whoever builds it. The library
/// never looks for any itself: no environment variables, no Docker `config.json`, no
/// credential helpers. A CLI that wants those reads them in its command layer and passes
/// what it found as [`Credentials::Given`].
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// None: every request is anonymous.
    #[default]
    Anonymous,
    /// A user and a password or access token, as the caller was given them (a flag, a
    /// Kubernetes Secret). Sent as Basic credentials, to the registry and to a token
    /// service that may have them.
    Given { user: String, password: String },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Given { user, .. } => f
                .debug_struct("Given")
                .field("user", user)
                .finish_non_exhaustive(),
        }
    }
}

impl From<Option<(String, String)>> for Credentials {
    /// `(user, password)` when there are any, else anonymous.
    fn from(found: Option<(String, String)>) -> Credentials {
        match found {
            Some((user, password)) => Credentials::Given { user, password },
            None => Credentials::Anonymous,
        }
    }
}

impl Credentials {
    /// How oci-client and berth's own requests present them.
    pub(super) fn to_registry_auth(&self) -> RegistryAuth {
        match self {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Given { user, password } => {
                RegistryAuth::Basic(user.clone(), password.clone())
            }
        }
    }
}

impl Registry {
    /// GET `url`, answering a 401 challenge (Bearer token or Basic) once.
    pub(super) async fn get_with_auth(
        &self,
        url: &str,
        repo: &str,
        accept: &str,
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        self.send_with_auth(repo, Access::Pull, what, |http| {
            Ok(http.get(url).header(reqwest::header::ACCEPT, accept))
        })
        .await
    }

    /// `request` with the credentials known for `repo` and `access`: a cached bearer token
    /// (a push token also serves pulls), else Basic credentials, else none. Only when it goes
    /// to this registry itself: an upload `Location` may name another host (a storage
    /// service), which gets no Authorization header.
    pub(super) async fn with_credentials(
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
        let Ok(own) = reqwest::Url::parse(&format!("{}://{}", self.scheme, self.host)) else {
            return false;
        };
        url.host_str() == own.host_str()
            && url.port_or_known_default() == own.port_or_known_default()
            && (own.scheme() == "http" || url.scheme() == "https")
    }

    /// Whether Basic credentials may go to the token service at `realm`: over HTTPS, or on
    /// the registry's own origin. A plain-HTTP realm elsewhere would hand the password to
    /// another host in the clear.
    fn may_send_credentials_to(&self, realm: &str) -> bool {
        reqwest::Url::parse(realm)
            .is_ok_and(|url| url.scheme() == "https" || self.is_own_origin(&url))
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
    pub(super) async fn oci_auth(&self) -> Result<&RegistryAuth, RegistryError> {
        if !matches!(self.auth, RegistryAuth::Basic(..)) {
            return Ok(&self.auth);
        }
        self.realm_checked
            .get_or_try_init(|| async {
                let url = format!("{}://{}/v2/", self.scheme, self.host);
                let response = self
                    .http()?
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| self.unreachable(&e))?;
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
        let token = tokens
            .get(&(repo.to_string(), access))
            .or_else(|| match access {
                Access::Pull => tokens.get(&(repo.to_string(), Access::Push)),
                Access::Push => None,
            });
        token.cloned()
    }

    /// Whether writes to `repo` carry credentials: a push token, or Basic credentials.
    pub(super) async fn authenticated(&self, repo: &str) -> bool {
        matches!(self.auth, RegistryAuth::Basic(..))
            || self.token(repo, Access::Push).await.is_some()
    }

    /// Sends the request `make` builds; on a 401 from this registry with a Bearer challenge,
    /// obtains a token for `repo` and `access` from the token service (with the Basic
    /// credentials, if any and if it may have them), caches it and sends a fresh request once
    /// more. Other answers are returned as they are.
    pub(super) async fn send_with_auth(
        &self,
        repo: &str,
        access: Access,
        what: &str,
        make: impl Fn(&reqwest::Client) -> Result<reqwest::RequestBuilder, RegistryError>,
    ) -> Result<reqwest::Response, RegistryError> {
        let http = self.http()?;
        let request = self.with_credentials(make(http)?, repo, access).await?;
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED
            || !self.is_own_origin(response.url())
        {
            return Ok(response);
        }
        let Some(params) = bearer_challenge(&response) else {
            return Ok(response);
        };
        let Some(realm) = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
        else {
            return Ok(response);
        };
        let actions = match access {
            Access::Pull => "pull",
            Access::Push => "pull,push",
        };
        let mut query: Vec<(String, String)> =
            vec![("scope".into(), format!("repository:{repo}:{actions}"))];
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
        let token_response = token_request
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
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
        let body = read_limited(token_response, MAX_MANIFEST_BYTES)
            .await
            .map_err(|detail| RegistryError::Unauthorized {
                registry: self.host.clone(),
                what: what.to_string(),
                detail,
                refusal: Refusal::Credentials,
            })?;
        let answer: TokenAnswer =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Unauthorized {
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
        self.bearer
            .lock()
            .await
            .insert((repo.to_string(), access), token.clone());
        make(http)?
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))
    }
}

/// What a request needs of a repository, for bearer token scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Access {
    Pull,
    Push,
}

/// The parameters of the `WWW-Authenticate: Bearer …` challenge in `response`, if it has one.
fn bearer_challenge(response: &reqwest::Response) -> Option<Vec<(String, String)>> {
    let challenge = response
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)?
        .to_str()
        .ok()?;
    let params = challenge
        .strip_prefix("Bearer ")
        .or_else(|| challenge.strip_prefix("bearer "))?;
    Some(parse_challenge(params))
}

/// The token service (`realm`) a Bearer challenge in `response` names.
fn bearer_realm(response: &reqwest::Response) -> Option<String> {
    bearer_challenge(response)?
        .into_iter()
        .find(|(k, _)| k == "realm")
        .map(|(_, v)| v)
}

/// `key="value", key2="value2"` from a WWW-Authenticate challenge.
fn parse_challenge(params: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::registry::RegistryOptions;

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
        assert!(tls.is_own_origin(&url(
            "https://REG.example:5000/v2/app/blobs/uploads/1?state=x"
        )));
        assert!(
            !tls.is_own_origin(&url("https://storage.example/bucket/1?signature=x")),
            "another host"
        );
        assert!(
            !tls.is_own_origin(&url("https://reg.example/v2/")),
            "another port"
        );
        assert!(
            !tls.is_own_origin(&url("http://reg.example:5000/v2/")),
            "HTTPS downgraded to HTTP"
        );
        assert!(tls.may_send_credentials_to("https://auth.example/token"));
        assert!(!tls.may_send_credentials_to("http://auth.example/token"));
        assert!(
            !tls.may_send_credentials_to("http://reg.example:5000/token"),
            "HTTPS downgraded to HTTP"
        );

        let plain = Registry::new(
            "reg.example:5000",
            &RegistryOptions {
                insecure: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(plain.may_send_credentials_to("http://reg.example:5000/token"));
        assert!(!plain.may_send_credentials_to("http://auth.example/token"));
        assert!(!plain.may_send_credentials_to("no url at all"));
    }

    #[tokio::test]
    async fn an_upload_location_on_another_host_gets_no_authorization() {
        let credentials = Credentials::Given {
            user: "ci".into(),
            password: "secret".into(),
        };
        let options = RegistryOptions {
            credentials,
            ..Default::default()
        };
        let registry = Registry::new("reg.example:5000", &options).unwrap();
        let http = registry.http().unwrap();
        for (location, authorized) in [
            ("https://reg.example:5000/v2/app/blobs/uploads/1", true),
            ("https://storage.example/upload/1", false),
        ] {
            let request = registry
                .with_credentials(http.put(location), "app", Access::Push)
                .await
                .unwrap();
            let request = request.build().unwrap();
            assert_eq!(
                request
                    .headers()
                    .contains_key(reqwest::header::AUTHORIZATION),
                authorized,
                "{location}"
            );
        }
    }
}
