//! `berth keygen`, `berth sign` and `berth verify`: the command-line face of
//! `berth::signature`. Flags are defined here with their help; the library does the work.

use std::path::{Path, PathBuf};

use clap::Args;
use zeroize::Zeroizing;

use berth::digest::Digest;
use berth::registry::Registry;
use berth::signature::identity::{Identity, IdentityError, Pattern};
use berth::signature::trust_root::{TrustRoot, TrustRootError};
use berth::signature::{
    self, FormatChoice, FoundSignature, KeyError, PublicKey, SignError, SignatureStatus, Signer,
    SigningKey, StoreError, TrustPolicy, VerifiedSignature, VerifyError, keys,
};

use super::{Exit, Failure, Global, parse_reference, print_json, source_date_epoch};

/// Environment variable cosign reads the key password from; berth honours the same one
/// so CI pipelines need no change.
pub const PASSWORD_ENV: &str = "COSIGN_PASSWORD";
/// What to do when no password can be had.
const NO_PASSWORD_HINT: &str =
    "set COSIGN_PASSWORD (it may be empty) or run on a terminal to be prompted";

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Path prefix of the files to write: PREFIX.key (encrypted private key) and PREFIX.pub.
    #[arg(long, default_value = "cosign", value_name = "PREFIX")]
    pub output_key_prefix: PathBuf,
    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The artifact: oci://REGISTRY/REPOSITORY@sha256:DIGEST (a tag needs --resolve).
    pub reference: String,
    /// cosign private key file (password from COSIGN_PASSWORD or a prompt).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// classic: cosign v2 `sha256-<hex>.sig` tag; bundle: cosign v3 Sigstore bundle attached
    /// as an OCI 1.1 referrer; auto: bundle where the registry has the referrers API, else classic.
    #[arg(long, value_name = "FORMAT", default_value = "auto", value_parser = parse_format)]
    pub format: FormatChoice,
    /// Accept a tag and sign the digest it points to now. Without it a tag is refused,
    /// because the tag may move between your check and the signature.
    #[arg(long)]
    pub resolve: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The artifact: oci://REGISTRY/REPOSITORY:TAG or …@sha256:DIGEST (a tag is resolved once).
    pub reference: String,
    /// Trusted cosign public key (cosign.pub); repeat to trust any of several keys. Keys and a
    /// keyless identity may be given together: a signature by any of them suffices.
    #[arg(long, value_name = "FILE")]
    pub key: Vec<PathBuf>,
    #[command(flatten)]
    pub keyless: KeylessArgs,
}

/// Who may sign keylessly, with cosign's flag names so cosign commands can be copied.
#[derive(Debug, Clone, Default, Args)]
pub struct KeylessArgs {
    /// Keyless signer: the identity in the signing certificate (its SAN: a CI workflow URI such
    /// as https://github.com/ORG/REPO/.github/workflows/release.yml@refs/heads/main, or an
    /// email address), exactly.
    #[arg(
        long,
        value_name = "IDENTITY",
        conflicts_with = "certificate_identity_regexp"
    )]
    pub certificate_identity: Option<String>,
    /// Keyless signer: a regular expression the whole certificate identity must match. Unlike
    /// cosign's, it is anchored: write `.*` where any text may come before or after.
    #[arg(long, value_name = "REGEX")]
    pub certificate_identity_regexp: Option<String>,
    /// Keyless signer: the OIDC issuer in the certificate, exactly (GitHub Actions:
    /// https://token.actions.githubusercontent.com).
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "certificate_oidc_issuer_regexp"
    )]
    pub certificate_oidc_issuer: Option<String>,
    /// Keyless signer: a regular expression the whole OIDC issuer must match (anchored).
    #[arg(long, value_name = "REGEX")]
    pub certificate_oidc_issuer_regexp: Option<String>,
    /// Sigstore trusted_root.json that keyless certificates, log entries and timestamps must
    /// chain to (default: the public-good Sigstore root carried in berth; no network is used).
    #[arg(long, value_name = "FILE")]
    pub trusted_root: Option<PathBuf>,
}

impl KeylessArgs {
    /// The identity these flags describe, `None` when no keyless flag is given.
    pub fn identity(&self) -> Result<Option<Identity>, Failure> {
        let subject = match (
            &self.certificate_identity,
            &self.certificate_identity_regexp,
        ) {
            (Some(exact), _) => Some(Pattern::exact("--certificate-identity", exact)?),
            (None, Some(regex)) => Some(Pattern::regex("--certificate-identity-regexp", regex)?),
            (None, None) => None,
        };
        let issuer = match (
            &self.certificate_oidc_issuer,
            &self.certificate_oidc_issuer_regexp,
        ) {
            (Some(exact), _) => Some(Pattern::exact("--certificate-oidc-issuer", exact)?),
            (None, Some(regex)) => Some(Pattern::regex("--certificate-oidc-issuer-regexp", regex)?),
            (None, None) => None,
        };
        match (issuer, subject) {
            (Some(issuer), Some(subject)) => Ok(Some(Identity::new(issuer, subject))),
            (None, None) if self.trusted_root.is_none() => Ok(None),
            (None, None) => Err(Failure::usage(
                "--trusted-root is for keyless signatures, and no keyless identity is given",
                "add --certificate-identity and --certificate-oidc-issuer (or their -regexp forms)",
            )),
            (None, Some(_)) => Err(Failure::usage(
                "a keyless identity needs its OIDC issuer too",
                "add --certificate-oidc-issuer URL (or --certificate-oidc-issuer-regexp)",
            )),
            (Some(_), None) => Err(Failure::usage(
                "a keyless identity needs the certificate identity too",
                "add --certificate-identity IDENTITY (or --certificate-identity-regexp)",
            )),
        }
    }

    /// The trusted root: `--trusted-root`, else the embedded public-good root.
    pub fn trust_root(&self) -> Result<TrustRoot, Failure> {
        Ok(match &self.trusted_root {
            Some(path) => TrustRoot::load(path)?,
            None => TrustRoot::public_good()?,
        })
    }
}

fn parse_format(s: &str) -> Result<FormatChoice, String> {
    s.parse()
}

impl From<KeyError> for Failure {
    fn from(e: KeyError) -> Failure {
        let (exit, hint) = match &e {
            KeyError::WrongPassword { .. } => {
                let message = format!("{e}; check {PASSWORD_ENV} or the password you typed");
                return Failure::new(
                    Exit::Auth,
                    message,
                    "set COSIGN_PASSWORD to the password the key was created with",
                );
            }
            KeyError::Exists { .. } => (
                Exit::Usage,
                "choose another --output-key-prefix, or pass --force to replace the pair",
            ),
            KeyError::Symlink { .. } => (
                Exit::Usage,
                "remove the link, or choose another --output-key-prefix for the key pair",
            ),
            KeyError::Read { .. } | KeyError::Write { .. } | KeyError::Kdf(_) => {
                (Exit::Generic, "check the path and its permissions")
            }
            _ => (
                Exit::InvalidInput,
                "pass a key written by `berth keygen` or `cosign generate-key-pair`",
            ),
        };
        Failure::new(exit, e.to_string(), hint)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        match e {
            StoreError::Registry(e) => e.into(),
            other => Failure::new(
                Exit::Registry,
                other.to_string(),
                "the registry holds a malformed signature object; inspect it with `oras manifest fetch`",
            ),
        }
    }
}

impl From<SignError> for Failure {
    fn from(e: SignError) -> Failure {
        match e {
            SignError::Store {
                digest,
                source: StoreError::Registry(r),
            } => {
                let mut f = Failure::from(r);
                f.message = format!("cannot sign {digest}: {}", f.message);
                f
            }
            SignError::Store { source, .. } => source.into(),
            other => Failure::new(Exit::Generic, other.to_string(), other.hint()),
        }
    }
}

impl From<IdentityError> for Failure {
    fn from(e: IdentityError) -> Failure {
        let hint = match &e {
            IdentityError::InvalidRegex { .. } => {
                "fix the expression (Rust regex syntax, close to Go's RE2 that cosign uses)"
            }
            IdentityError::Empty { .. } => "give the value the signing certificate must carry",
        };
        Failure::usage(e.to_string(), hint)
    }
}

impl From<TrustRootError> for Failure {
    fn from(e: TrustRootError) -> Failure {
        let exit = match &e {
            TrustRootError::Read { .. } => Exit::Generic,
            _ => Exit::InvalidInput,
        };
        let hint = e.hint();
        Failure::new(exit, e.to_string(), hint)
    }
}

impl From<VerifyError> for Failure {
    fn from(e: VerifyError) -> Failure {
        match e {
            VerifyError::Store { source, .. } => source.into(),
            verdict => {
                let hint = verdict.hint();
                Failure::new(Exit::Verification, verdict.to_string(), hint)
            }
        }
    }
}

/// `berth keygen`.
pub fn keygen(global: &Global, args: KeygenArgs) -> Result<(), Failure> {
    let prefix = &args.output_key_prefix;
    let (key_path, _) = keys::key_pair_paths(prefix, args.force)?;
    let password = key_password(true, &format!("new private key {}", key_path.display()))?;
    let key = SigningKey::generate();
    let (key_path, pub_path) = keys::write_key_pair(&key, password.as_bytes(), prefix, args.force)?;
    let fingerprint = key.public_key().fingerprint();
    if global.json() {
        print_json(&serde_json::json!({
            "privateKey": key_path.display().to_string(),
            "publicKey": pub_path.display().to_string(),
            "fingerprint": fingerprint.to_string(),
        }))?;
    } else {
        eprintln!("Private key written to {}", key_path.display());
        eprintln!("Public key written to {}", pub_path.display());
        println!("{fingerprint}");
    }
    Ok(())
}

/// Load a private key, asking for its password the cosign way.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, Failure> {
    let password = key_password(false, &format!("private key {}", path.display()))?;
    Ok(SigningKey::load(path, password.as_bytes())?)
}

/// The password for `what` (a key file): `COSIGN_PASSWORD` if set (empty allowed, as in
/// cosign), else a no-echo prompt on the terminal. `confirm` asks twice (for keygen).
fn key_password(confirm: bool, what: &str) -> Result<Zeroizing<String>, Failure> {
    if let Ok(value) = std::env::var(PASSWORD_ENV) {
        return Ok(Zeroizing::new(value));
    }
    if !has_terminal() {
        let message =
            format!("no key password: set {PASSWORD_ENV} or run on a terminal to be prompted");
        return Err(Failure::usage(message, NO_PASSWORD_HINT));
    }
    let prompt = |text: String| {
        rpassword::prompt_password(text)
            .map(Zeroizing::new)
            .map_err(|e| {
                Failure::new(
                    Exit::Generic,
                    format!("cannot read the key password: {e}"),
                    "check the path and its permissions",
                )
            })
    };
    let first = prompt(format!("Enter password for {what}: "))?;
    if confirm && *first != *prompt(format!("Enter password for {what} again: "))? {
        return Err(Failure::usage(
            "the passwords typed do not match",
            NO_PASSWORD_HINT,
        ));
    }
    Ok(first)
}

/// Whether a prompt can be shown. The prompt talks to the controlling terminal, not stdin,
/// so `kustomize build | berth push - --sign-key …` can still ask for the password.
#[cfg(unix)]
fn has_terminal() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .is_ok()
}

#[cfg(not(unix))]
fn has_terminal() -> bool {
    use std::io::IsTerminal as _;
    std::io::stdin().is_terminal()
}

/// `berth sign`.
pub async fn sign(global: &Global, args: SignArgs) -> Result<(), Failure> {
    let reference = parse_reference(&args.reference)?;
    reference.require_tag_or_digest()?;
    if reference.digest().is_none() && !args.resolve {
        return Err(Failure::usage(
            format!(
                "{reference} names a tag; a signature is made for a digest, and a tag can move"
            ),
            format!(
                "sign {}@sha256:… (the digest `berth push` printed), or pass --resolve",
                reference.repository_only()
            ),
        ));
    }
    // Load the key first: a wrong password must fail before anything touches the registry.
    let key = load_signing_key(&args.key)?;
    let registry = global.registry(&reference)?;
    let digest = match reference.digest() {
        Some(d) => d.clone(),
        None => registry.resolve(&reference).await?,
    };
    let created = signature::store::signed_at(source_date_epoch().as_deref());
    let signed = signature::sign_artifact(
        &registry,
        reference.repository(),
        &digest,
        &key,
        args.format,
        &created,
    )
    .await?;
    let canonical = reference.with_digest(digest.clone());
    if global.json() {
        print_json(&serde_json::json!({
            "reference": canonical.to_string(),
            "digest": digest.to_string(),
            "format": signed.format.to_string(),
            "key": signed.key_fingerprint.to_string(),
            "location": signed.location,
        }))?;
    } else {
        println!(
            "Signed {canonical} ({} format, key {}) at {}",
            signed.format, signed.key_fingerprint, signed.location
        );
    }
    Ok(())
}

/// Load `--key` public key files into a trust policy.
pub fn load_policy(paths: &[PathBuf]) -> Result<TrustPolicy, Failure> {
    let keys = paths
        .iter()
        .map(|p| PublicKey::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TrustPolicy::new(keys))
}

/// `--key` files and the keyless flags as one trust policy (any of them suffices).
pub fn load_verify_policy(keys: &[PathBuf], keyless: &KeylessArgs) -> Result<TrustPolicy, Failure> {
    let identity = keyless.identity()?;
    if keys.is_empty() && identity.is_none() {
        return Err(Failure::usage(
            "nothing to verify against: no --key and no keyless identity",
            "pass --key cosign.pub, or --certificate-identity and --certificate-oidc-issuer for a keyless signer",
        ));
    }
    let policy = load_policy(keys)?;
    Ok(match identity {
        Some(identity) => policy.with_identities(vec![identity], keyless.trust_root()?),
        None => policy,
    })
}

/// `berth verify`.
pub async fn verify(global: &Global, args: VerifyArgs) -> Result<(), Failure> {
    let reference = parse_reference(&args.reference)?;
    reference.require_tag_or_digest()?;
    let policy = load_verify_policy(&args.key, &args.keyless)?;
    let registry = global.registry(&reference)?;
    // A tag is resolved once; everything after is about that digest.
    let digest = match reference.digest() {
        Some(d) => d.clone(),
        None => registry.resolve(&reference).await?,
    };
    let (found, result) = examine(&registry, reference.repository(), &digest, &policy).await?;
    let canonical = reference.with_digest(digest.clone());
    if global.json() {
        print_json(&serde_json::json!({
            "reference": canonical.to_string(),
            "digest": digest.to_string(),
            "verified": result.is_ok(),
            "signer": result.as_ref().ok().map(verified_json),
            "signatures": found.iter().map(signature_json).collect::<Vec<_>>(),
        }))?;
    } else if let Ok(v) = &result {
        // On failure the error lists every signature with its reason; list them here only
        // on success so nothing is said twice.
        for line in found.iter().map(signature_line) {
            println!("{line}");
        }
        println!(
            "Verified {canonical}: {} signature by {}",
            v.format, v.signer
        );
    }
    result.map(|_| ()).map_err(Failure::from)
}

/// Every signature of `digest` with its status, and the verdict.
async fn examine(
    registry: &Registry,
    repo: &str,
    digest: &Digest,
    policy: &TrustPolicy,
) -> Result<(Vec<FoundSignature>, Result<VerifiedSignature, VerifyError>), Failure> {
    let found = signature::examine(registry, repo, digest, policy).await?;
    let result = signature::policy::verdict(digest, policy, found.clone());
    Ok((found, result))
}

fn signature_line(sig: &FoundSignature) -> String {
    match &sig.status {
        SignatureStatus::Verified(signer) => {
            format!(
                "OK    {} {}: verified with {signer}",
                sig.format, sig.location
            )
        }
        SignatureStatus::Rejected { reason } => {
            format!("FAIL  {} {}: {reason}", sig.format, sig.location)
        }
    }
}

fn verified_json(v: &VerifiedSignature) -> serde_json::Value {
    let mut json = serde_json::json!({
        "format": v.format.to_string(),
        "location": v.location,
    });
    add_signer(&mut json, &v.signer);
    json
}

/// The signer's fields: `key` and `keySource` for a key, `identity` for a keyless signer.
fn add_signer(json: &mut serde_json::Value, signer: &Signer) {
    let fields = match signer {
        Signer::Key {
            fingerprint,
            source,
        } => serde_json::json!({"key": fingerprint.to_string(), "keySource": source}),
        Signer::Identity(s) => {
            let claims: serde_json::Map<String, serde_json::Value> = s
                .identity
                .claims()
                .iter()
                .map(|(claim, value)| (claim.name().to_string(), value.clone().into()))
                .collect();
            serde_json::json!({"identity": {
                "issuer": s.identity.issuer,
                "subject": s.identity.subject,
                "claims": claims,
                "matched": s.matched,
                "signedAt": s.signed_at,
                "trustedRoot": s.trust_root,
            }})
        }
    };
    if let (Some(json), serde_json::Value::Object(fields)) = (json.as_object_mut(), fields) {
        json.extend(fields);
    }
}

/// One examined signature as JSON (also used by `inspect --key`).
pub fn signature_json(sig: &FoundSignature) -> serde_json::Value {
    match &sig.status {
        SignatureStatus::Verified(signer) => {
            let mut json = serde_json::json!({
                "format": sig.format.to_string(),
                "location": sig.location,
                "verified": true,
            });
            add_signer(&mut json, signer);
            json
        }
        SignatureStatus::Rejected { reason } => serde_json::json!({
            "format": sig.format.to_string(),
            "location": sig.location,
            "verified": false,
            "reason": reason,
        }),
    }
}

/// `berth inspect`'s signature section: every signature found, and with a key whether it
/// verifies. Text mode gets one line per signature.
pub async fn inspect_section(
    global: &Global,
    registry: &Registry,
    repo: &str,
    digest: &Digest,
    key: Option<&Path>,
) -> Result<serde_json::Value, Failure> {
    let policy = match key {
        Some(path) => load_policy(&[path.to_path_buf()])?,
        None => TrustPolicy::default(),
    };
    let found = signature::examine(registry, repo, digest, &policy).await?;
    if global.json() {
        return Ok(serde_json::Value::Array(
            found
                .iter()
                .map(|sig| match key {
                    Some(_) => signature_json(sig),
                    // Without a key nothing was checked; say only what is there.
                    None => serde_json::json!({"format": sig.format.to_string(), "location": sig.location}),
                })
                .collect(),
        ));
    }
    if found.is_empty() {
        return Ok(serde_json::json!(["none"]));
    }
    let lines = found
        .iter()
        .map(|sig| match (&sig.status, key) {
            (_, None) => format!("{} {}", sig.format, sig.location),
            _ => signature_line(sig),
        })
        .map(serde_json::Value::String)
        .collect();
    Ok(serde_json::Value::Array(lines))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests report failure by panicking
mod tests {
    use clap::Parser as _;

    use super::super::{Cli, Command, Exit};
    use super::*;

    const ARTIFACT: &str = "oci://r.example/app@sha256:aaead6d06e9a0ff201d39f8f5f2410c940ae4856b7f4aa19cc1f1af5985ad9a5";

    fn verify_args(flags: &[&str]) -> Result<VerifyArgs, clap::Error> {
        let argv = ["berth", "verify", ARTIFACT].iter().chain(flags);
        match Cli::try_parse_from(argv)?.command {
            Command::Verify(args) => Ok(args),
            other => panic!("parsed {other:?}"),
        }
    }

    fn policy(flags: &[&str]) -> Result<TrustPolicy, Failure> {
        let args = verify_args(flags).unwrap();
        load_verify_policy(&args.key, &args.keyless)
    }

    #[test]
    fn cosign_identity_flags_make_one_identity_with_the_public_good_root() {
        let p = policy(&[
            "--certificate-identity-regexp",
            "https://github.com/acme/.*",
            "--certificate-oidc-issuer",
            "https://token.actions.githubusercontent.com",
        ])
        .unwrap();
        assert!(p.keys.is_empty());
        assert_eq!(p.identities().len(), 1);
        let found = berth::signature::SignerIdentity::new(
            Some("https://token.actions.githubusercontent.com"),
            Some("https://github.com/acme/shop/.github/workflows/r.yml@refs/heads/main"),
            &[],
        );
        assert_eq!(p.identities()[0].mismatch(&found), None);
        let root = p.keyless.as_ref().unwrap().root.name().to_string();
        assert!(root.contains("public-good"), "{root}");
    }

    #[test]
    fn half_an_identity_or_nothing_at_all_is_a_usage_error() {
        for (flags, words) in [
            (
                &["--certificate-identity", "a@example.com"][..],
                "needs its OIDC issuer",
            ),
            (
                &["--certificate-oidc-issuer", "https://accounts.google.com"][..],
                "needs the certificate identity",
            ),
            (
                &["--trusted-root", "x.json"][..],
                "--trusted-root is for keyless signatures",
            ),
            (&[][..], "no --key and no keyless identity"),
        ] {
            let f = policy(flags).unwrap_err();
            assert_eq!(f.exit, Exit::Usage, "{flags:?}");
            assert!(f.message.contains(words), "{flags:?}: {}", f.message);
        }
    }

    #[test]
    fn a_bad_regex_names_the_flag() {
        let f = policy(&[
            "--certificate-identity-regexp",
            "https://(",
            "--certificate-oidc-issuer",
            "https://accounts.google.com",
        ])
        .unwrap_err();
        assert_eq!(f.exit, Exit::Usage);
        assert!(
            f.message
                .starts_with("--certificate-identity-regexp regular expression 'https://('"),
            "{}",
            f.message
        );
    }

    #[test]
    fn exact_and_regexp_forms_of_one_flag_conflict() {
        let e = verify_args(&[
            "--certificate-identity",
            "a",
            "--certificate-identity-regexp",
            "a",
        ])
        .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn an_unreadable_trusted_root_is_refused_before_the_registry_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("trusted_root.json");
        std::fs::write(&bad, "{}").unwrap();
        let f = policy(&[
            "--certificate-identity",
            "a@example.com",
            "--certificate-oidc-issuer",
            "https://accounts.google.com",
            "--trusted-root",
            bad.to_str().unwrap(),
        ])
        .unwrap_err();
        assert_eq!(f.exit, Exit::InvalidInput);
        assert!(
            f.message.contains("is not a Sigstore trusted_root.json"),
            "{}",
            f.message
        );
    }
}
