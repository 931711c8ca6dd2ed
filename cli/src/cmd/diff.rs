//! `berth diff oci://… PATH`: what pushing PATH would change, object by object.
//! Secret contents are never printed, only whether they changed.

use std::collections::BTreeMap;

use clap::Args;

use berth::input::{self, Input};
use berth::manifests::{self, DuplicateCheck, ObjectId};
use berth::transfer;

use super::pack::BuildArgs;
use super::pull::{digest_of, read_remote_manifests};
use super::{Exit, Failure, Global, parse_reference, print_json};

/// Lines of context around each change in the unified diff.
const DIFF_CONTEXT_LINES: usize = 3;

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Artifact to compare with: oci://REGISTRY/REPOSITORY:TAG or …@sha256:DIGEST.
    /// A tag that does not exist yet counts as an empty artifact.
    pub reference: String,
    /// Local manifests: a directory, a file or - for stdin.
    pub path: String,
    /// Allow Secrets with plain-text data in PATH (their content is never shown).
    #[arg(long)]
    pub allow_secrets: bool,
}

type Objects = BTreeMap<ObjectId, (String, serde_json::Value)>;

pub async fn run(global: &Global, args: DiffArgs) -> Result<(), Failure> {
    let reference = parse_reference(&args.reference)?;
    let local = local_objects(&args.path, args.allow_secrets)?;
    let registry = global.registry(&reference)?;
    let remote = match digest_of(&registry, &reference).await {
        Ok(digest) => remote_objects(&registry, reference.repository(), &digest).await?,
        Err(f) if f.exit == Exit::NotFound && reference.digest().is_none() => Objects::new(),
        Err(f) => return Err(f),
    };
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut changed = Vec::new();
    for (id, (place, value)) in &local {
        match remote.get(id) {
            None => added.push((id, place)),
            Some((_, old)) if old != value => {
                let diff = if id.kind == "Secret" && id.group.is_empty() {
                    "(Secret content not shown)\n".to_string()
                } else {
                    unified(
                        &render(old),
                        &render(value),
                        &format!("{reference} {id}"),
                        &format!("{place} {id}"),
                    )
                };
                changed.push((id, place, diff));
            }
            Some(_) => {}
        }
    }
    for (id, (place, _)) in &remote {
        if !local.contains_key(id) {
            removed.push((id, place));
        }
    }
    if global.json() {
        return print_json(&serde_json::json!({
            "added": added.iter().map(|(id, p)| serde_json::json!({"object": id.to_string(), "at": p})).collect::<Vec<_>>(),
            "removed": removed.iter().map(|(id, p)| serde_json::json!({"object": id.to_string(), "at": p})).collect::<Vec<_>>(),
            "changed": changed.iter().map(|(id, p, d)| serde_json::json!({"object": id.to_string(), "at": p, "diff": d})).collect::<Vec<_>>(),
        }));
    }
    for (id, place) in &added {
        println!("+ added    {id} ({place})");
    }
    for (id, place) in &removed {
        println!("- removed  {id} (was {place})");
    }
    for (id, place, diff) in &changed {
        println!("~ changed  {id} ({place})");
        print!("{diff}");
    }
    eprintln!(
        "{} added, {} removed, {} changed",
        added.len(),
        removed.len(),
        changed.len()
    );
    Ok(())
}

fn local_objects(path: &str, allow_secrets: bool) -> Result<Objects, Failure> {
    let Input::Files { files, _spool } = input::collect(path)? else {
        return Err(Failure::usage(
            format!("{path} is an OCI image layout"),
            "diff takes the manifests directory",
        ));
    };
    let rules = BuildArgs {
        source: None,
        revision: None,
        annotations: Vec::new(),
        created: None,
        allow_secrets,
    }
    .rules();
    let mut objects = Objects::new();
    let mut duplicates = DuplicateCheck::default();
    for file in &files {
        let bytes = file.read()?;
        for object in manifests::parse_file(&file.name, &bytes, rules)? {
            duplicates.add(&object)?;
            objects.insert(
                object.id.clone(),
                (format!("{}:{}", object.file, object.line), object.value),
            );
        }
    }
    Ok(objects)
}

async fn remote_objects(
    registry: &berth::registry::Registry,
    repo: &str,
    digest: &berth::digest::Digest,
) -> Result<Objects, Failure> {
    let artifact = transfer::fetch_artifact_manifest(registry, repo, digest).await?;
    let mut objects = Objects::new();
    let mut parse_error = None;
    read_remote_manifests(registry, repo, &artifact, |parsed| match parsed {
        Ok(found) => {
            for object in found {
                objects.insert(
                    object.id.clone(),
                    (format!("{}:{}", object.file, object.line), object.value),
                );
            }
        }
        Err(e) => parse_error = Some(e),
    })
    .await?;
    if let Some(e) = parse_error {
        tracing::warn!(error = %e, "a file in the artifact is not a valid manifest; its objects are left out of the diff");
    }
    Ok(objects)
}

fn render(value: &serde_json::Value) -> String {
    serde_saphyr::to_string(value)
        .unwrap_or_else(|_| serde_json::to_string_pretty(value).unwrap_or_default())
}

fn unified(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(DIFF_CONTEXT_LINES)
        .header(old_name, new_name)
        .to_string()
}
