//! `berth list oci://REGISTRY/REPO`: tags with digest, created, source and revision.

use clap::Args;

use berth::oci;

use super::{Failure, Global, parse_reference, print_json};

/// Tags berth does not show: cosign signatures/attestations and referrers-fallback indexes
/// are not artifacts a user deploys.
fn is_bookkeeping_tag(tag: &str) -> bool {
    tag.starts_with("sha256-")
}

/// Upper bound on tags described (each costs one manifest request).
const MAX_LISTED_TAGS: usize = 500;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Repository to list: oci://REGISTRY/REPOSITORY (no tag).
    pub repository: String,
}

pub async fn run(global: &Global, args: ListArgs) -> Result<(), Failure> {
    let reference = parse_reference(&args.repository)?;
    reference.require_repository_only()?;
    let registry = global.registry(&reference)?;
    let repo = reference.repository();
    let tags: Vec<String> = registry
        .list_tags(repo)
        .await?
        .into_iter()
        .filter(|t| !is_bookkeeping_tag(t))
        .collect();
    let truncated = tags.len() > MAX_LISTED_TAGS;
    let mut rows = Vec::new();
    for tag in tags.into_iter().take(MAX_LISTED_TAGS) {
        // A tag can vanish between listing and fetching; skip it rather than fail the list.
        let Some((bytes, _media_type, digest)) = registry.fetch_tagged_manifest(repo, &tag).await?
        else {
            continue;
        };
        let annotations = serde_json::from_slice::<oci::ImageManifest>(&bytes)
            .map(|m| m.annotations)
            .unwrap_or_default();
        let get = |k: &str| annotations.get(k).cloned().unwrap_or_default();
        rows.push((
            tag,
            digest.to_string(),
            get(oci::ANNOTATION_CREATED),
            get(oci::ANNOTATION_SOURCE),
            get(oci::ANNOTATION_REVISION),
        ));
    }
    if global.json() {
        let items: Vec<_> = rows
            .iter()
            .map(|(tag, digest, created, source, revision)| {
                serde_json::json!({"tag": tag, "digest": digest, "created": created, "source": source, "revision": revision})
            })
            .collect();
        return print_json(&serde_json::Value::Array(items));
    }
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(3).max(3);
    println!(
        "{:width$}  {:71}  {:20}  SOURCE  REVISION",
        "TAG", "DIGEST", "CREATED"
    );
    for (tag, digest, created, source, revision) in &rows {
        let dash = |s: &str| {
            if s.is_empty() {
                "-".to_string()
            } else {
                s.to_string()
            }
        };
        println!(
            "{tag:width$}  {digest:71}  {:20}  {}  {}",
            dash(created),
            dash(source),
            dash(revision)
        );
    }
    if truncated {
        eprintln!("(showing the first {MAX_LISTED_TAGS} tags)");
    }
    Ok(())
}
