//! Hooks where the signature commands plug into push, inspect and promote. Owned by the
//! signature work (cli/src/signature/); push/inspect/promote call only these functions.

use std::path::Path;

use berth::digest::Digest;
use berth::registry::Registry;
use berth::signature::{self, FormatChoice, SigningKey};

use super::sign::{inspect_section, load_policy, load_signing_key};
use super::{Failure, Global, source_date_epoch};

/// The key and format `berth push --sign-key` signs with, unlocked before anything is pushed.
#[derive(Debug)]
pub struct PushSigner {
    key: SigningKey,
    format: FormatChoice,
}

/// Parse `--sign-format` and unlock `--sign-key` (password from COSIGN_PASSWORD or a prompt).
pub fn prepare_push_signing(key: &Path, format: &str) -> Result<PushSigner, Failure> {
    let format: FormatChoice = format.parse().map_err(|e: String| {
        Failure::usage(format!("--sign-format: {e}"), "use classic, bundle or auto")
    })?;
    let key = load_signing_key(key).map_err(|mut f| {
        f.message = format!("{} (nothing was pushed)", f.message);
        f
    })?;
    Ok(PushSigner { key, format })
}

/// Sign `digest` in `repo` right after `berth push --sign-key KEY`.
pub async fn sign_after_push(
    global: &Global,
    registry: &Registry,
    repo: &str,
    digest: &Digest,
    signer: &PushSigner,
) -> Result<(), Failure> {
    let created = signature::store::signed_at(source_date_epoch().as_deref());
    let signed =
        signature::sign_artifact(registry, repo, digest, &signer.key, signer.format, &created)
            .await
            .map_err(|e| {
                let mut f = Failure::from(e);
                f.message = format!(
                    "{} (the artifact {digest} was pushed but is not signed)",
                    f.message
                );
                f
            })?;
    if !global.json() {
        eprintln!(
            "signed {digest} ({} format, key {}) at {}",
            signed.format, signed.key_fingerprint, signed.location
        );
    }
    Ok(())
}

/// The signatures of `digest` for `berth inspect`: each one found, and with `--key` whether
/// it verifies. `None` omits the section.
pub async fn inspect_signatures(
    global: &Global,
    registry: &Registry,
    repo: &str,
    digest: &Digest,
    key: Option<&Path>,
) -> Result<Option<serde_json::Value>, Failure> {
    inspect_section(global, registry, repo, digest, key)
        .await
        .map(Some)
}

/// Verify `digest` against `key` before `berth promote --key KEY` copies it.
pub async fn verify_before_promote(
    _global: &Global,
    registry: &Registry,
    repo: &str,
    digest: &Digest,
    key: &Path,
) -> Result<(), Failure> {
    let policy = load_policy(&[key.to_path_buf()])?;
    let verified = signature::verify_artifact(registry, repo, digest, &policy).await?;
    tracing::info!(%digest, signer = %verified.signer, format = %verified.format, "verified before promote");
    Ok(())
}

/// Copy the signatures of `digest` (both formats) after `berth promote` copied the artifact.
/// Returns how many signature objects were copied.
pub async fn copy_signatures_after_promote(
    _global: &Global,
    src: &Registry,
    src_repo: &str,
    dst: &Registry,
    dst_repo: &str,
    digest: &Digest,
) -> Result<usize, Failure> {
    let copied = signature::copy_signatures(src, src_repo, dst, dst_repo, digest).await?;
    Ok(copied.classic + copied.bundles)
}
