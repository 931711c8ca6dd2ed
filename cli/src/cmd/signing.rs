//! Hooks where the signature commands plug into push, inspect and promote. Owned by the
//! signature work (cli/src/signature/); push/inspect/promote call only these functions.

use std::path::Path;

use berth::digest::Digest;
use berth::registry::Registry;

use super::{Exit, Failure, Global};

/// Sign `digest` in `repo` right after `berth push --sign-key KEY`.
pub async fn sign_after_push(
    _global: &Global,
    _registry: &Registry,
    _repo: &str,
    _digest: &Digest,
    key: &Path,
    _format: &str,
) -> Result<(), Failure> {
    Err(Failure::new(
        Exit::Generic,
        format!("--sign-key {}: signing during push is not wired yet; the artifact was pushed unsigned", key.display()),
        "sign it with `berth sign oci://…@DIGEST --key KEY`",
    ))
}

/// Lines describing the signatures of `digest` for `berth inspect` (empty: section omitted).
pub async fn inspect_signatures(
    _global: &Global,
    _registry: &Registry,
    _repo: &str,
    _digest: &Digest,
    _key: Option<&Path>,
) -> Result<Option<serde_json::Value>, Failure> {
    Ok(None)
}

/// Verify `digest` against `key` before `berth promote --key KEY` copies it.
pub async fn verify_before_promote(
    _global: &Global,
    _registry: &Registry,
    _repo: &str,
    _digest: &Digest,
    key: &Path,
) -> Result<(), Failure> {
    Err(Failure::new(
        Exit::Verification,
        format!("--key {}: verification during promote is not wired yet", key.display()),
        "run `berth verify` first, then promote without --key",
    ))
}

/// Copy the signatures of `digest` (both formats) after `berth promote` copied the artifact.
/// Returns how many signature objects were copied.
pub async fn copy_signatures_after_promote(
    _global: &Global,
    _src: &Registry,
    _src_repo: &str,
    _dst: &Registry,
    _dst_repo: &str,
    _digest: &Digest,
) -> Result<usize, Failure> {
    Ok(0)
}
