//! `berth inspect oci://…`: manifest, annotations, files and object count of an artifact.

use std::path::PathBuf;

use clap::Args;

use berth::oci;
use berth::transfer;

use super::pull::{digest_of, read_remote_manifests};
use super::{Failure, Global, parse_reference, print_json, signing};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Artifact to inspect: oci://REGISTRY/REPOSITORY:TAG or …@sha256:DIGEST.
    pub reference: String,
    /// Cosign public key to check the artifact's signatures against.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

pub async fn run(global: &Global, args: InspectArgs) -> Result<(), Failure> {
    let reference = parse_reference(&args.reference)?;
    let registry = global.registry(&reference)?;
    let repo = reference.repository();
    let digest = digest_of(&registry, &reference).await?;
    let artifact = transfer::fetch_artifact_manifest(&registry, repo, &digest).await?;
    let mut objects = 0usize;
    let mut unparsable = 0usize;
    let files = read_remote_manifests(&registry, repo, &artifact, |parsed| match parsed {
        Ok(found) => objects += found.len(),
        Err(_) => unparsable += 1,
    })
    .await?;
    let signatures =
        signing::inspect_signatures(global, &registry, repo, &digest, args.key.as_deref()).await?;
    let annotations = &artifact.manifest.annotations;
    if global.json() {
        print_json(&serde_json::json!({
            "reference": reference.to_string(),
            "digest": digest.to_string(),
            "mediaType": artifact.manifest.media_type,
            "config": artifact.manifest.config,
            "layers": artifact.manifest.layers,
            "annotations": annotations,
            "files": files.iter().map(|f| serde_json::json!({"path": f.name, "size": f.size})).collect::<Vec<_>>(),
            "objects": objects,
            "signatures": signatures,
        }))?;
        return Ok(());
    }
    let get = |key: &str| annotations.get(key).map(String::as_str).unwrap_or("-");
    println!("Reference:   {reference}");
    println!("Digest:      {digest}");
    println!(
        "Media type:  {}",
        artifact
            .manifest
            .media_type
            .as_deref()
            .unwrap_or(oci::MEDIA_TYPE_IMAGE_MANIFEST)
    );
    println!(
        "Config:      {} ({})",
        artifact.manifest.config.digest, artifact.manifest.config.media_type
    );
    println!(
        "Layer:       {} ({}, {} bytes)",
        artifact.layer.digest, artifact.layer.media_type, artifact.layer.size
    );
    println!("Created:     {}", get(oci::ANNOTATION_CREATED));
    println!("Source:      {}", get(oci::ANNOTATION_SOURCE));
    println!("Revision:    {}", get(oci::ANNOTATION_REVISION));
    let standard = [
        oci::ANNOTATION_CREATED,
        oci::ANNOTATION_SOURCE,
        oci::ANNOTATION_REVISION,
    ];
    let extra: Vec<_> = annotations
        .iter()
        .filter(|(k, _)| !standard.contains(&k.as_str()))
        .collect();
    if !extra.is_empty() {
        println!("Annotations:");
        for (k, v) in extra {
            println!("  {k}: {v}");
        }
    }
    println!(
        "Objects:     {objects}{}",
        if unparsable > 0 {
            format!(" ({unparsable} files not parsable)")
        } else {
            String::new()
        }
    );
    println!("Files:       {}", files.len());
    for f in &files {
        println!("  {}  ({} bytes)", f.name, f.size);
    }
    if let Some(sigs) = signatures {
        println!("Signatures:");
        match sigs {
            serde_json::Value::Array(items) => {
                for item in items {
                    println!(
                        "  {}",
                        item.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| item.to_string())
                    );
                }
            }
            other => println!("  {other}"),
        }
    }
    Ok(())
}
