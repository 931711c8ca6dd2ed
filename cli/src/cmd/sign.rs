//! `berth keygen`, `berth sign` and `berth verify`: the command-line face of
//! `berth::signature`. Flags are defined here with their help; the library does the work.

use std::io::Write as _;
use std::path::PathBuf;

use berth::digest::Digest;
use berth::reference::{Reference, ReferenceError};
use berth::registry::{Registry, RegistryError, RegistryOptions};
use berth::signature::{
    self, FoundSignature, FormatChoice, KeyError, PublicKey, SignError, SignatureStatus, SigningKey, TrustPolicy,
    VerifyError, keys,
};

/// Exit code when no signature verifies (also used by `inspect --key` and `promote --key`).
pub const EXIT_VERIFY_FAILED: u8 = 7;
/// Exit code for a reference or flag the user must fix.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for every other failure (key file, registry, I/O).
pub const EXIT_FAILURE: u8 = 1;

/// Write a cosign-compatible key pair.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Path prefix of the files to write: PREFIX.key (encrypted private key) and PREFIX.pub.
    #[arg(long, default_value = "cosign", value_name = "PREFIX")]
    pub output_key_prefix: PathBuf,
    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
}

/// Sign an artifact by digest, cosign-compatible.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The artifact: oci://REGISTRY/REPO@sha256:DIGEST (a tag needs --resolve).
    #[arg(value_name = "REFERENCE")]
    pub reference: String,
    /// cosign private key file (password from COSIGN_PASSWORD or a prompt).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// classic: cosign v2 `.sig` tag; bundle: cosign v3 Sigstore bundle referrer;
    /// auto: bundle where the registry has the OCI 1.1 referrers API, classic elsewhere.
    #[arg(long, default_value = "auto", value_parser = parse_format)]
    pub format: FormatChoice,
    /// Accept a tag and sign the digest it points to now. Without it a tag is refused,
    /// because the tag may move between your check and the signature.
    #[arg(long)]
    pub resolve: bool,
    /// Print the result as JSON.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// Verify an artifact's signature against public keys.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The artifact: oci://REGISTRY/REPO:TAG or @sha256:DIGEST (a tag is resolved once).
    #[arg(value_name = "REFERENCE")]
    pub reference: String,
    /// Trusted public key (cosign.pub); repeat to trust any of several keys.
    #[arg(long, value_name = "FILE", required = true)]
    pub key: Vec<PathBuf>,
    /// Print the result as JSON.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

fn parse_format(s: &str) -> Result<FormatChoice, String> {
    s.parse()
}

/// Why a signature command failed; `exit_code` and `hint` are for the binary's error report.
#[derive(Debug, thiserror::Error)]
pub enum SignCommandError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("{reference} is a tag; signatures are made for a digest. Pass oci://…@sha256:… or add --resolve to sign what the tag points to now")]
    TagNeedsResolve { reference: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl SignCommandError {
    pub fn exit_code(&self) -> u8 {
        match self {
            SignCommandError::Reference(_) | SignCommandError::TagNeedsResolve { .. } => EXIT_USAGE,
            SignCommandError::Verify(e) if e.is_verdict() => EXIT_VERIFY_FAILED,
            _ => EXIT_FAILURE,
        }
    }

    pub fn hint(&self) -> &'static str {
        match self {
            SignCommandError::Reference(_) => "write references as oci://HOST[:PORT]/REPO:TAG or oci://HOST[:PORT]/REPO@sha256:DIGEST",
            SignCommandError::TagNeedsResolve { .. } => "sign the digest `berth push --output json` printed",
            SignCommandError::Key(KeyError::WrongPassword { .. }) => "set COSIGN_PASSWORD to the password the key was created with",
            SignCommandError::Key(KeyError::Exists { .. }) => "choose another --output-key-prefix or pass --force",
            SignCommandError::Key(_) => "pass a key written by `berth keygen` or `cosign generate-key-pair`",
            SignCommandError::Registry(e) => e.hint(),
            SignCommandError::Sign(e) => e.hint(),
            SignCommandError::Verify(e) => e.hint(),
            SignCommandError::Output(_) => "check that stdout is writable",
        }
    }
}

/// `berth keygen`.
pub fn keygen(args: &KeygenArgs) -> Result<(), SignCommandError> {
    // Refuse before asking for a password: nothing is more annoying than typing it twice
    // to be told the file exists.
    if !args.force {
        for ext in ["key", "pub"] {
            let mut p = args.output_key_prefix.as_os_str().to_owned();
            p.push(".");
            p.push(ext);
            let p = PathBuf::from(p);
            if p.exists() {
                return Err(KeyError::Exists { path: p }.into());
            }
        }
    }
    let password = keys::read_password(true, &format!("new private key {}.key", args.output_key_prefix.display()))?;
    let key = SigningKey::generate();
    let (key_path, pub_path) = keys::write_key_pair(&key, password.as_bytes(), &args.output_key_prefix, args.force)?;
    eprintln!("Private key written to {}", key_path.display());
    eprintln!("Public key written to {}", pub_path.display());
    println!("{}", key.public_key().fingerprint());
    Ok(())
}

/// `berth sign`.
pub async fn sign(args: &SignArgs, options: &RegistryOptions) -> Result<(), SignCommandError> {
    let reference: Reference = args.reference.parse()?;
    reference.require_tag_or_digest()?;
    // Load the key first: a wrong password must fail before anything touches the registry.
    let password = keys::read_password(false, &format!("private key {}", args.key.display()))?;
    let key = SigningKey::load(&args.key, password.as_bytes())?;
    let registry = Registry::for_reference(&reference, options)?;
    let digest = target_digest(&registry, &reference, args.resolve).await?;
    let signed =
        signature::sign_artifact(&registry, reference.repository(), &digest, &key, args.format).await?;
    let canonical = reference.with_digest(digest.clone());
    match args.output {
        OutputFormat::Text => {
            println!(
                "Signed {} ({} format, key {}) at {}",
                canonical, signed.format, signed.key_fingerprint, signed.location
            );
        }
        OutputFormat::Json => {
            let value = serde_json::json!({
                "reference": canonical.to_string(),
                "digest": digest.to_string(),
                "format": signed.format.to_string(),
                "key": signed.key_fingerprint.to_string(),
                "location": signed.location,
            });
            println!("{value}");
        }
    }
    Ok(())
}

async fn target_digest(registry: &Registry, reference: &Reference, resolve: bool) -> Result<Digest, SignCommandError> {
    if let Some(d) = reference.digest() {
        return Ok(d.clone());
    }
    if !resolve {
        return Err(SignCommandError::TagNeedsResolve { reference: reference.to_string() });
    }
    Ok(registry.resolve(reference).await?)
}

/// Load `--key` files into a trust policy.
pub fn load_policy(paths: &[PathBuf]) -> Result<TrustPolicy, KeyError> {
    let keys = paths.iter().map(|p| PublicKey::load(p)).collect::<Result<Vec<_>, _>>()?;
    Ok(TrustPolicy::new(keys))
}

/// `berth verify`.
pub async fn verify(args: &VerifyArgs, options: &RegistryOptions) -> Result<(), SignCommandError> {
    let reference: Reference = args.reference.parse()?;
    reference.require_tag_or_digest()?;
    let policy = load_policy(&args.key)?;
    let registry = Registry::for_reference(&reference, options)?;
    // A tag is resolved once; everything after is about that digest.
    let digest = match reference.digest() {
        Some(d) => d.clone(),
        None => registry.resolve(&reference).await?,
    };
    let found = signature::examine(&registry, reference.repository(), &digest, &policy).await?;
    let result = signature::policy::verdict(&digest, &policy, found.clone());
    let canonical = reference.with_digest(digest.clone());
    match args.output {
        OutputFormat::Text => print_text(&canonical, &found, &result)?,
        OutputFormat::Json => print_json(&canonical, &digest, &found, &result)?,
    }
    result.map(|_| ()).map_err(SignCommandError::from)
}

fn print_text(
    reference: &Reference,
    found: &[FoundSignature],
    result: &Result<signature::VerifiedSignature, VerifyError>,
) -> std::io::Result<()> {
    // On failure the error lists every signature with its reason; print the list only
    // on success so nothing is said twice.
    let Ok(v) = result else { return Ok(()) };
    let mut out = std::io::stdout().lock();
    for sig in found {
        match &sig.status {
            SignatureStatus::Verified { key_fingerprint, key_source } => {
                writeln!(out, "OK    {} {}: verified with key {key_fingerprint} ({key_source})", sig.format, sig.location)?;
            }
            SignatureStatus::Rejected { reason } => {
                writeln!(out, "FAIL  {} {}: {reason}", sig.format, sig.location)?;
            }
        }
    }
    writeln!(out, "Verified {reference}: {} signature by key {} ({})", v.format, v.key_fingerprint, v.key_source)?;
    Ok(())
}

fn print_json(
    reference: &Reference,
    digest: &Digest,
    found: &[FoundSignature],
    result: &Result<signature::VerifiedSignature, VerifyError>,
) -> std::io::Result<()> {
    let signatures: Vec<serde_json::Value> = found.iter().map(signature_json).collect();
    let value = serde_json::json!({
        "reference": reference.to_string(),
        "digest": digest.to_string(),
        "verified": result.is_ok(),
        "signer": result.as_ref().ok().map(|v| serde_json::json!({
            "format": v.format.to_string(),
            "key": v.key_fingerprint.to_string(),
            "keySource": v.key_source,
            "location": v.location,
        })),
        "signatures": signatures,
    });
    writeln!(std::io::stdout().lock(), "{value}")
}

/// One examined signature as JSON (also used by `inspect --key`).
pub fn signature_json(sig: &FoundSignature) -> serde_json::Value {
    match &sig.status {
        SignatureStatus::Verified { key_fingerprint, key_source } => serde_json::json!({
            "format": sig.format.to_string(),
            "location": sig.location,
            "verified": true,
            "key": key_fingerprint.to_string(),
            "keySource": key_source,
        }),
        SignatureStatus::Rejected { reason } => serde_json::json!({
            "format": sig.format.to_string(),
            "location": sig.location,
            "verified": false,
            "reason": reason,
        }),
    }
}
