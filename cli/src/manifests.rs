//! Kubernetes manifests as berth ships them: splitting YAML/JSON files into objects,
//! identifying each object (group, kind, namespace, name) and the pack-time safety rules —
//! well-formed documents, required fields, no generated names, no duplicates, no plain-text
//! Secrets.
//! Every error names the file and the line the document starts on.
//!
//! YAML is parsed with `serde-saphyr`: pure Rust (no C or c2rust parser), maintained, and
//! with parser budgets that bound alias expansion on hostile input. Documents are split on
//! `---` lines first (as kubectl's YAML reader does), so each document's line is exact.

use std::collections::HashMap;
use std::fmt;

use serde_json::Value;

mod scan;

/// Largest single manifest file berth parses in memory. Rendered manifests are far smaller;
/// anything bigger is almost certainly not a manifest.
pub const MAX_MANIFEST_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Errors in manifest content. `file` is the path inside the artifact, `line` is 1-based.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}:{line}: invalid YAML: {message}")]
    InvalidYaml {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}:{line}: invalid JSON: {message}")]
    InvalidJson {
        file: String,
        line: usize,
        message: String,
    },
    #[error(
        "{file}:{line}: the document is not a Kubernetes object (expected a mapping with apiVersion, kind and metadata)"
    )]
    NotAnObject { file: String, line: usize },
    #[error("{file}:{line}: {kind_hint}object has no {field}")]
    MissingField {
        file: String,
        line: usize,
        field: &'static str,
        kind_hint: String,
    },
    /// `metadata.generateName` asks the API server for a new name at every create: applied
    /// every interval, it would make another object each time and never find the last one.
    #[error(
        "{file}:{line}: {kind_hint}object sets metadata.generateName ({generate_name}), which cannot be applied idempotently"
    )]
    GenerateName {
        file: String,
        line: usize,
        kind_hint: String,
        /// The value as written (JSON), e.g. `"migrate-"`.
        generate_name: String,
    },
    #[error("{file}:{line}: duplicate object {id}, first defined at {first_file}:{first_line}")]
    Duplicate {
        file: String,
        line: usize,
        id: Box<ObjectId>,
        first_file: String,
        first_line: usize,
    },
    #[error("{file}:{line}: {id} holds plain-text data (data/stringData)")]
    PlainSecret {
        file: String,
        line: usize,
        id: Box<ObjectId>,
    },
    #[error("{file}: is not valid UTF-8 text")]
    NotText { file: String },
}

impl ManifestError {
    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            ManifestError::InvalidYaml { .. } | ManifestError::InvalidJson { .. } => {
                "fix the syntax at that line"
            }
            ManifestError::NotAnObject { .. } | ManifestError::MissingField { .. } => {
                "every document needs apiVersion, kind and metadata.name; remove empty or partial documents"
            }
            ManifestError::GenerateName { .. } => {
                "give it metadata.name (and remove metadata.generateName): berth applies the same object every time"
            }
            ManifestError::Duplicate { .. } => {
                "each object may appear once in an artifact; remove one of the two"
            }
            ManifestError::PlainSecret { .. } => {
                "encrypt it (SOPS, SealedSecret) or pass --allow-secrets if shipping it in the clear is intended"
            }
            ManifestError::NotText { .. } => "list it in .berthignore if it is not a manifest",
        }
    }
}

/// The identity Kubernetes gives an object: API group (not version), kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            write!(f, "{}", self.kind)?;
        } else {
            write!(f, "{}.{}", self.kind, self.group)?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " {ns}/{}", self.name),
            None => write!(f, " {}", self.name),
        }
    }
}

/// One Kubernetes object found in a file.
#[derive(Debug, Clone)]
pub struct ManifestObject {
    pub id: ObjectId,
    pub api_version: String,
    /// Path of the file inside the artifact.
    pub file: String,
    /// 1-based line where the object's document starts.
    pub line: usize,
    /// The parsed object.
    pub value: Value,
}

/// Options for the safety rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules {
    /// Allow `Secret`s with plain `data`/`stringData`.
    pub allow_secrets: bool,
}

/// File names berth treats as manifests (by extension).
pub fn is_manifest_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml") || lower.ends_with(".json")
}

/// Parse one file into objects (`kind: List` flattened), applying the per-object rules.
pub fn parse_file(
    file: &str,
    bytes: &[u8],
    rules: Rules,
) -> Result<Vec<ManifestObject>, ManifestError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ManifestError::NotText {
        file: file.to_string(),
    })?;
    let mut objects = Vec::new();
    if file.to_ascii_lowercase().ends_with(".json") {
        let value: Value = serde_json::from_str(text).map_err(|e| ManifestError::InvalidJson {
            file: file.to_string(),
            line: e.line(),
            message: strip_location(&e.to_string()),
        })?;
        collect_objects(file, 1, value, rules, &mut objects)?;
        return Ok(objects);
    }
    for doc in split_documents(text) {
        if !is_blank_document(doc.text) {
            parse_document(file, doc, rules, &mut objects)?;
        }
    }
    Ok(objects)
}

/// [`parse_file`] for packing: the same objects in the same order and the same errors, but
/// without content (every `value` is `Null`). A YAML document whose identity the fast scan
/// ([`scan`]) is certain of skips the full parse; every other document gets it.
pub fn identify_file(
    file: &str,
    bytes: &[u8],
    rules: Rules,
) -> Result<Vec<ManifestObject>, ManifestError> {
    if file.to_ascii_lowercase().ends_with(".json") {
        let mut objects = parse_file(file, bytes, rules)?;
        objects.iter_mut().for_each(|o| o.value = Value::Null);
        return Ok(objects);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ManifestError::NotText {
        file: file.to_string(),
    })?;
    let mut objects = Vec::new();
    for doc in split_documents(text) {
        if is_blank_document(doc.text) {
            continue;
        }
        match scan::scan_document(doc.text) {
            scan::Scan::Object {
                api_version,
                kind,
                name,
                namespace,
            } => objects.push(object(
                file,
                doc.content_line,
                api_version.into_owned(),
                kind.into_owned(),
                name.into_owned(),
                namespace.map(|n| n.into_owned()),
                Value::Null,
            )),
            scan::Scan::Unsure => {
                let first = objects.len();
                parse_document(file, doc, rules, &mut objects)?;
                objects[first..]
                    .iter_mut()
                    .for_each(|o| o.value = Value::Null);
            }
        }
    }
    Ok(objects)
}

/// Fully parses one YAML document and collects its objects.
fn parse_document(
    file: &str,
    doc: Document<'_>,
    rules: Rules,
    out: &mut Vec<ManifestObject>,
) -> Result<(), ManifestError> {
    let value: Value = serde_saphyr::from_str(doc.text).map_err(|e| {
        let line = e.location().map(|l| l.line() as usize).unwrap_or(1);
        ManifestError::InvalidYaml {
            file: file.to_string(),
            line: doc.first_line + line.saturating_sub(1),
            message: first_line_of(&e.to_string()),
        }
    })?;
    if value.is_null() {
        return Ok(());
    }
    collect_objects(file, doc.content_line, value, rules, out)
}

/// A YAML document's source text and where it starts.
#[derive(Debug, Clone, Copy)]
pub struct Document<'a> {
    pub text: &'a str,
    /// 1-based line of the document's first line (after the `---`).
    pub first_line: usize,
    /// 1-based line of the first line with content (not blank, not a comment), for messages.
    pub content_line: usize,
}

/// Split a YAML stream on document markers (`---` at column 0, optionally followed by
/// a space or comment) and `...` end markers.
pub fn split_documents(text: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1usize;
    let mut offset = 0usize;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end_matches(['\n', '\r']);
        let is_marker = trimmed == "---"
            || trimmed.starts_with("--- ")
            || trimmed.starts_with("---\t")
            || trimmed == "..."
            || trimmed.starts_with("... ");
        if is_marker {
            docs.push(document(text, start, offset, start_line));
            start = offset + line.len();
            start_line = index + 2;
            // `--- value` puts content on the marker line itself; keep it in the next document.
            if let Some(rest) = trimmed.strip_prefix("--- ")
                && !rest.trim().is_empty()
                && !rest.trim_start().starts_with('#')
            {
                start = offset + 4;
                start_line = index + 1;
            }
        }
        offset += line.len();
    }
    docs.push(document(text, start, text.len(), start_line));
    docs
}

fn document(text: &str, start: usize, end: usize, first_line: usize) -> Document<'_> {
    let body = &text[start..end];
    let mut content_line = first_line;
    for (i, line) in body.lines().enumerate() {
        let t = line.trim();
        if !t.is_empty() && !t.starts_with('#') && !t.starts_with('%') {
            content_line = first_line + i;
            break;
        }
    }
    Document {
        text: body,
        first_line,
        content_line,
    }
}

fn is_blank_document(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#')
    })
}

fn collect_objects(
    file: &str,
    line: usize,
    value: Value,
    rules: Rules,
    out: &mut Vec<ManifestObject>,
) -> Result<(), ManifestError> {
    let Value::Object(map) = &value else {
        return Err(ManifestError::NotAnObject {
            file: file.to_string(),
            line,
        });
    };
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
    if (kind == "List" || kind.ends_with("List"))
        && let Some(Value::Array(items)) = map.get("items")
    {
        for item in items.clone() {
            collect_objects(file, line, item, rules, out)?;
        }
        return Ok(());
    }
    let object = identify(file, line, value)?;
    check_secret(&object, rules)?;
    out.push(object);
    Ok(())
}

fn identify(file: &str, line: usize, value: Value) -> Result<ManifestObject, ManifestError> {
    let missing = |field: &'static str, kind: &str| ManifestError::MissingField {
        file: file.to_string(),
        line,
        field,
        kind_hint: if kind.is_empty() {
            String::new()
        } else {
            format!("{kind} ")
        },
    };
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or_default()
        .to_string();
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("apiVersion", &kind))?
        .to_string();
    if kind.is_empty() {
        return Err(missing("kind", ""));
    }
    let metadata = value.get("metadata");
    // Before the name: an object with only a generateName needs to hear why, not just that
    // it has no name.
    if let Some(generate_name) = metadata
        .and_then(|m| m.get("generateName"))
        .filter(|g| !g.is_null())
    {
        return Err(ManifestError::GenerateName {
            file: file.to_string(),
            line,
            kind_hint: format!("{kind} "),
            generate_name: generate_name.to_string(),
        });
    }
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("metadata.name", &kind))?
        .to_string();
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    Ok(object(
        file,
        line,
        api_version,
        kind,
        name,
        namespace,
        value,
    ))
}

fn object(
    file: &str,
    line: usize,
    api_version: String,
    kind: String,
    name: String,
    namespace: Option<String>,
    value: Value,
) -> ManifestObject {
    let group = api_version
        .split_once('/')
        .map_or_else(String::new, |(group, _)| group.to_string());
    ManifestObject {
        id: ObjectId {
            group,
            kind,
            namespace,
            name,
        },
        api_version,
        file: file.to_string(),
        line,
        value,
    }
}

fn check_secret(object: &ManifestObject, rules: Rules) -> Result<(), ManifestError> {
    if rules.allow_secrets || object.id.kind != "Secret" || !object.id.group.is_empty() {
        return Ok(());
    }
    // SOPS-encrypted files carry their metadata under a top-level `sops` key; values are ciphertext.
    if object.value.get("sops").is_some() {
        return Ok(());
    }
    let has_values = |field: &str| match object.value.get(field) {
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::Null) | None => false,
        Some(_) => true,
    };
    if has_values("data") || has_values("stringData") {
        return Err(ManifestError::PlainSecret {
            file: object.file.clone(),
            line: object.line,
            id: Box::new(object.id.clone()),
        });
    }
    Ok(())
}

/// Tracks objects across files to reject duplicates, without keeping their content.
#[derive(Debug, Default)]
pub struct DuplicateCheck {
    seen: HashMap<ObjectId, (String, usize)>,
}

impl DuplicateCheck {
    /// Record `object`; error if the same object was seen before.
    pub fn add(&mut self, object: &ManifestObject) -> Result<(), ManifestError> {
        if let Some((first_file, first_line)) = self.seen.get(&object.id) {
            return Err(ManifestError::Duplicate {
                file: object.file.clone(),
                line: object.line,
                id: Box::new(object.id.clone()),
                first_file: first_file.clone(),
                first_line: *first_line,
            });
        }
        self.seen
            .insert(object.id.clone(), (object.file.clone(), object.line));
        Ok(())
    }

    /// Number of distinct objects seen.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

fn first_line_of(s: &str) -> String {
    // Parser messages may include a rendered snippet of the input on later lines; a Secret's
    // value must never reach the terminal or CI log through an error, so keep the first line.
    let line = s.lines().next().unwrap_or_default().trim();
    // The parser's own position is relative to the document; berth reports the file's line.
    let line = line.strip_prefix("error: ").unwrap_or(line);
    match line
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((_position, message)) => message.to_string(),
        None => line.to_string(),
    }
}

fn strip_location(s: &str) -> String {
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn parse(file: &str, text: &str) -> Result<Vec<ManifestObject>, ManifestError> {
        parse_file(file, text.as_bytes(), Rules::default())
    }

    #[test]
    fn multi_document_yaml_gives_each_object_its_line() {
        let text = "# header\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: b\n  namespace: prod\n";
        let objs = parse("x.yaml", text).unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0].line, 2);
        assert_eq!(objs[1].line, 9);
        assert_eq!(objs[1].id.to_string(), "Deployment.apps prod/b");
    }

    #[test]
    fn invalid_yaml_names_file_and_line() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n";
        let err = parse("bad.yaml", text).unwrap_err();
        match &err {
            ManifestError::InvalidYaml { file, line, .. } => {
                assert_eq!(file, "bad.yaml");
                assert!((9..=10).contains(line), "line {line}: {err}");
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn missing_fields_are_named() {
        let err = parse("m.yaml", "kind: ConfigMap\nmetadata:\n  name: a\n").unwrap_err();
        assert!(err.to_string().contains("apiVersion"), "{err}");
        let err = parse("m.yaml", "apiVersion: v1\nmetadata:\n  name: a\n").unwrap_err();
        assert!(err.to_string().contains("no kind"), "{err}");
        let err = parse("m.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n").unwrap_err();
        assert!(err.to_string().contains("metadata.name"), "{err}");
        let err = parse("m.yaml", "- a\n- b\n").unwrap_err();
        assert!(
            matches!(err, ManifestError::NotAnObject { line: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn generate_name_is_refused_with_or_without_a_name() {
        for metadata in [
            "  generateName: migrate-\n",
            "  name: migrate\n  generateName: migrate-\n",
        ] {
            let text = format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n# the job\napiVersion: batch/v1\nkind: Job\nmetadata:\n{metadata}spec: {{}}\n"
            );
            let err = parse("jobs.yaml", &text).unwrap_err();
            assert_eq!(
                err.to_string(),
                "jobs.yaml:7: Job object sets metadata.generateName (\"migrate-\"), which cannot be applied idempotently",
                "{metadata}"
            );
            assert!(
                err.hint().starts_with("give it metadata.name"),
                "{}",
                err.hint()
            );
        }
        let null = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  generateName: null\n";
        assert!(
            parse("cm.yaml", null).is_ok(),
            "an explicit null sets nothing"
        );
        let listed = r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"p-"}}]}"#;
        assert!(matches!(
            parse("l.json", listed),
            Err(ManifestError::GenerateName { line: 1, .. })
        ));
    }

    #[test]
    fn plain_secrets_rejected_unless_allowed_or_encrypted() {
        let plain = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  password: hunter2\n";
        let err = parse("s.yaml", plain).unwrap_err();
        assert!(matches!(err, ManifestError::PlainSecret { .. }));
        assert!(!err.to_string().contains("hunter2"));
        assert!(
            parse_file(
                "s.yaml",
                plain.as_bytes(),
                Rules {
                    allow_secrets: true
                }
            )
            .is_ok()
        );
        let sops = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  password: ENC[AES256_GCM,data:xx]\nsops:\n  version: 3.8.1\n";
        assert!(parse("s.yaml", sops).is_ok());
        let sealed = "apiVersion: bitnami.com/v1alpha1\nkind: SealedSecret\nmetadata:\n  name: s\nspec:\n  encryptedData:\n    password: AgB\n";
        assert!(parse("s.yaml", sealed).is_ok());
        let empty = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ntype: kubernetes.io/service-account-token\n";
        assert!(parse("s.yaml", empty).is_ok());
    }

    #[test]
    fn lists_are_flattened_and_json_accepted() {
        let json = r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}},
            {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b"}}]}"#;
        let objs = parse("l.json", json).unwrap();
        assert_eq!(objs.len(), 2);
        let err = parse("l.json", "{\n  \"apiVersion\": \"v1\",\n  oops\n}").unwrap_err();
        assert!(
            matches!(err, ManifestError::InvalidJson { line: 3, .. }),
            "{err}"
        );
    }

    /// The packing path must agree with the full parse on every input: same objects (ids,
    /// versions, lines), same errors.
    #[test]
    fn identify_file_agrees_with_parse_file() {
        let inputs = [
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: n\ndata: {k: v}\n---\n# c\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: b}\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: 123\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata: {a: 1, a: 2}\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata: {a: .nan}\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\nx: &a [1]\ny: *a\n",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  p: q\n",
            "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n",
            "apiVersion: v1\nmetadata:\n  name: a\n",
            "kind: ConfigMap\nmetadata:\n  name: a\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
            "- a\n",
            "~\n",
            "--- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n...\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: 'a'\n  namespace: \"\"\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n\tbad: tab\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  generateName: a-\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: a-\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: {x: 1}, name: a}\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  generateName: ~\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  'generateName': a-\n",
        ];
        let summary = |r: Result<Vec<ManifestObject>, ManifestError>| match r {
            Ok(objects) => Ok(objects
                .into_iter()
                .map(|o| (o.id, o.api_version, o.file, o.line))
                .collect::<Vec<_>>()),
            Err(e) => Err(e.to_string()),
        };
        for text in inputs {
            for rules in [
                Rules::default(),
                Rules {
                    allow_secrets: true,
                },
            ] {
                let full = summary(parse_file("f.yaml", text.as_bytes(), rules));
                let fast = summary(identify_file("f.yaml", text.as_bytes(), rules));
                assert_eq!(fast, full, "{text}");
            }
        }
    }

    /// The same agreement over a directory of real-world YAML (run by hand on large corpora,
    /// e.g. the Go module cache):
    /// `BERTH_YAML_CORPUS=~/go/pkg/mod cargo test -p berth --lib corpus -- --ignored --nocapture`
    #[test]
    #[ignore = "needs BERTH_YAML_CORPUS"]
    fn identify_file_agrees_with_parse_file_on_a_corpus() {
        let root = std::env::var("BERTH_YAML_CORPUS").expect("BERTH_YAML_CORPUS");
        let (mut files, mut scanned) = (0, 0);
        let mut stack = vec![std::path::PathBuf::from(root)];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = path.to_string_lossy().to_string();
                if !kind.is_file() || !is_manifest_name(&name) || name.ends_with(".json") {
                    continue;
                }
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                if bytes.len() > 4 << 20 {
                    continue;
                }
                files += 1;
                for rules in [
                    Rules::default(),
                    Rules {
                        allow_secrets: true,
                    },
                ] {
                    let full = parse_file(&name, &bytes, rules);
                    let fast = identify_file(&name, &bytes, rules);
                    let same = match (&full, &fast) {
                        (Ok(a), Ok(b)) => {
                            a.len() == b.len()
                                && a.iter().zip(b).all(|(a, b)| {
                                    (&a.id, &a.api_version, a.line)
                                        == (&b.id, &b.api_version, b.line)
                                })
                        }
                        (Err(a), Err(b)) => a.to_string() == b.to_string(),
                        _ => false,
                    };
                    assert!(same, "{name}: full {full:?} vs fast {fast:?}");
                }
                if let Ok(text) = std::str::from_utf8(&bytes) {
                    scanned += split_documents(text)
                        .iter()
                        .filter(|d| {
                            matches!(scan::scan_document(d.text), scan::Scan::Object { .. })
                        })
                        .count();
                }
            }
        }
        println!("{files} files agree; {scanned} documents identified by the scan alone");
    }

    #[test]
    fn duplicates_name_both_places_and_ignore_version() {
        let a = parse(
            "a.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n",
        )
        .unwrap();
        let b = parse(
            "b.yaml",
            "\n\napiVersion: apps/v1beta1\nkind: Deployment\nmetadata:\n  name: web\n",
        )
        .unwrap();
        let other_ns = parse(
            "c.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: x\n",
        )
        .unwrap();
        let mut check = DuplicateCheck::default();
        check.add(&a[0]).unwrap();
        check.add(&other_ns[0]).unwrap();
        let err = check.add(&b[0]).unwrap_err().to_string();
        assert!(
            err.contains("b.yaml:3") && err.contains("a.yaml:1"),
            "{err}"
        );
    }
}
