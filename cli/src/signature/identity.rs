//! Who may sign keylessly: an identity is the OIDC issuer and the subject (the certificate's
//! SAN: a CI workflow URI or an email address) that Fulcio wrote into a signing certificate,
//! each given exactly or as a regular expression, plus optional Fulcio extension claims
//! (source repository, ref, build configuration, runner environment) that pin the build
//! further. Regular expressions match the whole value: `https://github.com/acme/.*` does not
//! match `https://github.com/acme-evil/x?https://github.com/acme/`.
//!
//! This module only matches claims; that the certificate is genuine is `keyless`'s job.

use std::fmt;

use sigstore_verify::crypto::CertificateInfo;

/// Errors in an identity policy, found when it is built (not when a signature is checked).
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{field} regular expression '{pattern}' is invalid: {detail}")]
    InvalidRegex {
        field: &'static str,
        pattern: String,
        detail: String,
    },
    #[error("{field} is empty; give the exact value or a regular expression")]
    Empty { field: &'static str },
}

/// An exact value, or a regular expression that must match all of it.
#[derive(Clone)]
pub enum Pattern {
    Exact(String),
    Regex {
        /// As the user wrote it, for messages.
        source: String,
        /// `^(?:source)$`.
        anchored: regex::Regex,
    },
}

impl Pattern {
    /// The value itself.
    pub fn exact(field: &'static str, value: impl Into<String>) -> Result<Pattern, IdentityError> {
        let value = value.into();
        if value.is_empty() {
            return Err(IdentityError::Empty { field });
        }
        Ok(Pattern::Exact(value))
    }

    /// A regular expression (Rust `regex` syntax, close to Go's RE2 that cosign uses),
    /// anchored at both ends.
    pub fn regex(field: &'static str, source: impl Into<String>) -> Result<Pattern, IdentityError> {
        let source = source.into();
        if source.is_empty() {
            return Err(IdentityError::Empty { field });
        }
        let invalid = |e: regex::Error| IdentityError::InvalidRegex {
            field,
            pattern: source.clone(),
            detail: e.to_string(),
        };
        // Compiling the expression alone first proves its groups are balanced, so wrapping it
        // cannot be escaped: `a)|(.*` would otherwise anchor only its first branch.
        regex::Regex::new(&source).map_err(invalid)?;
        let anchored = regex::Regex::new(&format!("^(?:{source})$")).map_err(invalid)?;
        Ok(Pattern::Regex { source, anchored })
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(want) => want == value,
            Pattern::Regex { anchored, .. } => anchored.is_match(value),
        }
    }

    /// Why `found`, the value of `field`, does not match.
    fn refusal(&self, field: &str, found: &str) -> String {
        match self {
            Pattern::Exact(want) => format!("{field} is '{found}', not '{want}'"),
            Pattern::Regex { source, .. } => format!("{field} '{found}' does not match /{source}/"),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(value) => write!(f, "'{value}'"),
            Pattern::Regex { source, .. } => write!(f, "matching /{source}/"),
        }
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The Fulcio extension claims a policy can pin (OIDs under 1.3.6.1.4.1.57264.1, see Fulcio's
/// `docs/oid-info.md`). Certificates Fulcio issued before these extensions existed (2023)
/// carry none of them and cannot satisfy a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Claim {
    /// `.12` Source Repository URI, e.g. `https://github.com/acme/shop`.
    SourceRepository,
    /// `.14` Source Repository Ref, e.g. `refs/heads/main` or `refs/tags/v1.2.0`.
    SourceRepositoryRef,
    /// `.13` Source Repository Digest: the commit.
    SourceRepositoryDigest,
    /// `.18` Build Config URI: the workflow file that ran, with its ref.
    BuildConfigUri,
    /// `.9` Build Signer URI: the workflow that requested the certificate (differs from the
    /// build config for reusable workflows).
    BuildSignerUri,
    /// `.11` Runner Environment: `github-hosted` or `self-hosted`.
    RunnerEnvironment,
    /// `.20` Build Trigger, e.g. `push`.
    BuildTrigger,
}

impl Claim {
    pub const ALL: [Claim; 7] = [
        Claim::SourceRepository,
        Claim::SourceRepositoryRef,
        Claim::SourceRepositoryDigest,
        Claim::BuildConfigUri,
        Claim::BuildSignerUri,
        Claim::RunnerEnvironment,
        Claim::BuildTrigger,
    ];

    /// The name used in policies and messages.
    pub fn name(self) -> &'static str {
        match self {
            Claim::SourceRepository => "sourceRepository",
            Claim::SourceRepositoryRef => "sourceRepositoryRef",
            Claim::SourceRepositoryDigest => "sourceRepositoryDigest",
            Claim::BuildConfigUri => "buildConfigURI",
            Claim::BuildSignerUri => "buildSignerURI",
            Claim::RunnerEnvironment => "runnerEnvironment",
            Claim::BuildTrigger => "buildTrigger",
        }
    }
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One identity allowed to sign: issuer and subject, and optionally claims that must match too.
#[derive(Debug, Clone)]
pub struct Identity {
    pub issuer: Pattern,
    pub subject: Pattern,
    pub claims: Vec<(Claim, Pattern)>,
}

impl Identity {
    pub fn new(issuer: Pattern, subject: Pattern) -> Identity {
        Identity {
            issuer,
            subject,
            claims: Vec::new(),
        }
    }

    /// Also require `claim` to match `pattern`.
    pub fn with_claim(mut self, claim: Claim, pattern: Pattern) -> Identity {
        self.claims.push((claim, pattern));
        self
    }

    /// Why `found` is not this identity, or `None` when it is.
    pub fn mismatch(&self, found: &SignerIdentity) -> Option<String> {
        let absent = |what: &str| format!("the certificate has no {what}");
        match &found.issuer {
            None => return Some(absent("OIDC issuer")),
            Some(issuer) if !self.issuer.matches(issuer) => {
                return Some(self.issuer.refusal("issuer", issuer));
            }
            Some(_) => {}
        }
        match &found.subject {
            None => return Some(absent("subject (SAN)")),
            Some(subject) if !self.subject.matches(subject) => {
                return Some(self.subject.refusal("subject", subject));
            }
            Some(_) => {}
        }
        for (claim, pattern) in &self.claims {
            match found.claim(*claim) {
                None => return Some(format!("the certificate has no {claim} claim")),
                Some(value) if !pattern.matches(value) => {
                    return Some(pattern.refusal(claim.name(), value));
                }
                Some(_) => {}
            }
        }
        None
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subject {} from issuer {}", self.subject, self.issuer)?;
        for (claim, pattern) in &self.claims {
            write!(f, ", {claim} {pattern}")?;
        }
        Ok(())
    }
}

/// What a signing certificate says about its holder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignerIdentity {
    pub issuer: Option<String>,
    pub subject: Option<String>,
    claims: Vec<(Claim, String)>,
}

impl SignerIdentity {
    /// The claims of a parsed certificate.
    pub fn of(cert: &CertificateInfo) -> SignerIdentity {
        let ci = &cert.ci_claims;
        let claims = Claim::ALL
            .iter()
            .filter_map(|claim| {
                let value = match claim {
                    Claim::SourceRepository => &ci.source_repository_uri,
                    Claim::SourceRepositoryRef => &ci.source_repository_ref,
                    Claim::SourceRepositoryDigest => &ci.source_repository_digest,
                    Claim::BuildConfigUri => &ci.build_config_uri,
                    Claim::BuildSignerUri => &ci.build_signer_uri,
                    Claim::RunnerEnvironment => &ci.runner_environment,
                    Claim::BuildTrigger => &ci.build_trigger,
                };
                value.clone().map(|v| (*claim, v))
            })
            .collect();
        SignerIdentity {
            issuer: cert.issuer.clone(),
            subject: cert.identity.as_ref().map(|san| san.as_str().to_string()),
            claims,
        }
    }

    /// An identity with these claims (for tests and for callers that read claims elsewhere).
    pub fn new(
        issuer: Option<&str>,
        subject: Option<&str>,
        claims: &[(Claim, &str)],
    ) -> SignerIdentity {
        SignerIdentity {
            issuer: issuer.map(str::to_string),
            subject: subject.map(str::to_string),
            claims: claims.iter().map(|(c, v)| (*c, v.to_string())).collect(),
        }
    }

    pub fn claim(&self, claim: Claim) -> Option<&str> {
        self.claims
            .iter()
            .find(|(c, _)| *c == claim)
            .map(|(_, v)| v.as_str())
    }

    pub fn claims(&self) -> &[(Claim, String)] {
        &self.claims
    }
}

impl fmt::Display for SignerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "subject '{}' from issuer '{}'",
            self.subject.as_deref().unwrap_or("(none)"),
            self.issuer.as_deref().unwrap_or("(none)")
        )
    }
}

/// The first identity of `identities` that `found` is, or every identity's reason it is not.
pub fn find_match<'a>(
    identities: &'a [Identity],
    found: &SignerIdentity,
) -> Result<&'a Identity, Vec<String>> {
    if identities.is_empty() {
        return Err(vec![
            "the trust policy names no keyless identity".to_string(),
        ]);
    }
    let mut reasons = Vec::new();
    for identity in identities {
        match identity.mismatch(found) {
            None => return Ok(identity),
            Some(reason) => reasons.push(format!("not {identity}: {reason}")),
        }
    }
    Err(reasons)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests report failure by panicking
mod tests {
    use super::*;

    const ISSUER: &str = "https://token.actions.githubusercontent.com";
    const SUBJECT: &str =
        "https://github.com/acme/shop/.github/workflows/release.yml@refs/heads/main";

    fn github(claims: &[(Claim, &str)]) -> SignerIdentity {
        SignerIdentity::new(Some(ISSUER), Some(SUBJECT), claims)
    }

    fn exact(issuer: &str, subject: &str) -> Identity {
        Identity::new(
            Pattern::exact("issuer", issuer).unwrap(),
            Pattern::exact("subject", subject).unwrap(),
        )
    }

    #[test]
    fn exact_identity_matches_only_its_issuer_and_subject() {
        let id = exact(ISSUER, SUBJECT);
        assert_eq!(id.mismatch(&github(&[])), None);
        let other_subject =
            SignerIdentity::new(Some(ISSUER), Some("https://github.com/acme/shop/x"), &[]);
        assert_eq!(
            id.mismatch(&other_subject).unwrap(),
            format!("subject is 'https://github.com/acme/shop/x', not '{SUBJECT}'")
        );
        let other_issuer =
            SignerIdentity::new(Some("https://accounts.google.com"), Some(SUBJECT), &[]);
        assert!(
            id.mismatch(&other_issuer)
                .unwrap()
                .starts_with("issuer is 'https://accounts.google.com', not")
        );
        let none = SignerIdentity::new(None, Some(SUBJECT), &[]);
        assert!(id.mismatch(&none).unwrap().contains("no OIDC issuer"));
    }

    #[test]
    fn regexes_are_anchored_at_both_ends() {
        let subject = Pattern::regex("subject", "https://github.com/acme/.*").unwrap();
        assert!(subject.matches(SUBJECT));
        // A match in the middle is not enough: unanchored, both of these would pass.
        assert!(!subject.matches("https://evil.example/?https://github.com/acme/shop"));
        let prefix = Pattern::regex("subject", "https://github.com/acme/shop").unwrap();
        assert!(!prefix.matches(SUBJECT));
        // Alternation stays inside the anchors.
        let alt = Pattern::regex("issuer", "a|b").unwrap();
        assert!(alt.matches("a") && alt.matches("b") && !alt.matches("xa") && !alt.matches("bx"));
    }

    #[test]
    fn a_regex_cannot_break_out_of_its_anchors() {
        // `^(?:x)|(.*)$` would match anything; the expression alone does not compile.
        let err = Pattern::regex("subject", "x)|(.*").unwrap_err();
        assert!(
            matches!(
                err,
                IdentityError::InvalidRegex {
                    field: "subject",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("'x)|(.*'"), "{err}");
    }

    #[test]
    fn invalid_and_empty_patterns_are_refused_with_the_field() {
        let err = Pattern::regex("issuer", "https://[").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("issuer regular expression 'https://['"),
            "{msg}"
        );
        let err = Pattern::exact("subject", "").unwrap_err();
        assert_eq!(
            err.to_string(),
            "subject is empty; give the exact value or a regular expression"
        );
        assert!(matches!(
            Pattern::regex("issuer", ""),
            Err(IdentityError::Empty { .. })
        ));
    }

    #[test]
    fn claims_must_all_match_and_be_present() {
        let id = exact(ISSUER, SUBJECT)
            .with_claim(
                Claim::SourceRepository,
                Pattern::exact("c", "https://github.com/acme/shop").unwrap(),
            )
            .with_claim(
                Claim::SourceRepositoryRef,
                Pattern::regex("c", "refs/(heads/main|tags/v.*)").unwrap(),
            );
        let main = github(&[
            (Claim::SourceRepository, "https://github.com/acme/shop"),
            (Claim::SourceRepositoryRef, "refs/heads/main"),
        ]);
        assert_eq!(id.mismatch(&main), None);
        let tag = github(&[
            (Claim::SourceRepository, "https://github.com/acme/shop"),
            (Claim::SourceRepositoryRef, "refs/tags/v1.2.0"),
        ]);
        assert_eq!(id.mismatch(&tag), None);
        let branch = github(&[
            (Claim::SourceRepository, "https://github.com/acme/shop"),
            (Claim::SourceRepositoryRef, "refs/heads/feature"),
        ]);
        assert_eq!(
            id.mismatch(&branch).unwrap(),
            "sourceRepositoryRef 'refs/heads/feature' does not match /refs/(heads/main|tags/v.*)/"
        );
        let fork = github(&[
            (Claim::SourceRepository, "https://github.com/mallory/shop"),
            (Claim::SourceRepositoryRef, "refs/heads/main"),
        ]);
        assert!(
            id.mismatch(&fork)
                .unwrap()
                .contains("sourceRepository is 'https://github.com/mallory/shop'")
        );
        // A certificate from before the extensions existed cannot satisfy a claim.
        assert_eq!(
            id.mismatch(&github(&[])).unwrap(),
            "the certificate has no sourceRepository claim"
        );
    }

    #[test]
    fn any_listed_identity_suffices_and_every_refusal_is_explained() {
        let ids = vec![
            exact("https://accounts.google.com", "ops@acme.example"),
            Identity::new(
                Pattern::exact("issuer", ISSUER).unwrap(),
                Pattern::regex("subject", "https://github.com/acme/shop/.*@refs/heads/main")
                    .unwrap(),
            ),
        ];
        assert!(std::ptr::eq(
            find_match(&ids, &github(&[])).unwrap(),
            &ids[1]
        ));
        let stranger = SignerIdentity::new(
            Some(ISSUER),
            Some("https://github.com/x/y/.github/workflows/a.yml@refs/heads/main"),
            &[],
        );
        let reasons = find_match(&ids, &stranger).unwrap_err();
        assert_eq!(reasons.len(), 2);
        assert!(
            reasons[0].contains(&format!(
                "issuer is '{ISSUER}', not 'https://accounts.google.com'"
            )),
            "{reasons:?}"
        );
        assert!(reasons[1].contains("subject 'https://github.com/x/y/.github/workflows/a.yml@refs/heads/main' does not match /https://github.com/acme/shop/.*@refs/heads/main/"), "{reasons:?}");
    }
}
