//! A fast identity scan of one YAML document, for packing: reads the parser's events and
//! keeps only `apiVersion`, `kind`, `metadata.name` and `metadata.namespace`, without building
//! the document's value tree (which costs about as much again as parsing it).
//!
//! The scan is an accelerator, never the judge. It answers [`Scan::Unsure`] for anything the
//! full deserializer could treat differently — anchors and aliases, tags, merge keys, keys or
//! identity values that YAML could type as something other than a string, non-finite or
//! overflowing numbers, documents near the deserializer's budgets, syntax errors — and also
//! for the objects whose rules need their content (lists, core Secrets, any `generateName`)
//! and for every object it would reject. The caller then parses the document fully; so the scan can only make an
//! accepted document cheaper, never change a verdict or an error message.

use std::borrow::Cow;
use std::collections::HashSet;

use granit_parser::{Event, Parser, ScalarStyle};

/// Margins below serde-saphyr's default budgets (depth 64, 250,000 nodes, 64 MiB of scalars):
/// past them the full parse decides.
const MAX_DEPTH: usize = 48;
const MAX_NODES: usize = 200_000;
const MAX_SCALAR_BYTES: usize = 48 * 1024 * 1024;
/// Keys per mapping compared linearly before switching to a hash set.
const LINEAR_KEYS: usize = 16;

/// What the scan found in one document.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan<'a> {
    /// A plain Kubernetes object whose identity is certain.
    Object {
        api_version: Cow<'a, str>,
        kind: Cow<'a, str>,
        name: Cow<'a, str>,
        namespace: Option<Cow<'a, str>>,
    },
    /// Anything else: parse the document fully.
    Unsure,
}

/// Where a node sits, as far as identity is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Root,
    Metadata,
    Other,
}

/// Which identity value the next scalar is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    ApiVersion,
    Kind,
    Name,
    Namespace,
}

enum Frame<'a> {
    Map {
        place: Place,
        keys: Keys<'a>,
        key: Option<Cow<'a, str>>,
    },
    Seq,
}

/// The keys of one mapping, to see duplicates (which the deserializer rejects).
enum Keys<'a> {
    Few(Vec<Cow<'a, str>>),
    Many(HashSet<Cow<'a, str>>),
}

impl<'a> Keys<'a> {
    /// Records `key`; false if the mapping already had it.
    fn insert(&mut self, key: Cow<'a, str>) -> bool {
        match self {
            Keys::Few(keys) if keys.contains(&key) => false,
            Keys::Few(keys) if keys.len() < LINEAR_KEYS => {
                keys.push(key);
                true
            }
            Keys::Few(keys) => {
                let mut set: HashSet<_> = keys.drain(..).collect();
                set.insert(key);
                *self = Keys::Many(set);
                true
            }
            Keys::Many(set) => set.insert(key),
        }
    }
}

/// Scans one document (the text between two `---` markers).
pub fn scan_document(text: &str) -> Scan<'_> {
    scan(text).unwrap_or(Scan::Unsure)
}

/// `None` means unsure.
fn scan(text: &str) -> Option<Scan<'_>> {
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let (mut api_version, mut kind, mut name, mut namespace) = (None, None, None, None);
    let (mut documents, mut nodes, mut scalar_bytes) = (0usize, 0usize, 0usize);
    let mut root_seen = false;
    for item in Parser::new_from_str(text) {
        let (event, _) = item.ok()?;
        match event {
            Event::StreamStart | Event::DocumentEnd | Event::StreamEnd => {}
            Event::DocumentStart(_, version) => {
                documents += 1;
                if documents > 1 || version.is_some() {
                    return None;
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                if anchor != 0 || tag.is_some() {
                    return None;
                }
                let plain = style == ScalarStyle::Plain;
                if plain && !plain_value_is_safe(&value) {
                    return None;
                }
                nodes += 1;
                scalar_bytes += value.len();
                match stack.last_mut() {
                    // A document that is one scalar (or empty): the full parse tells.
                    None => return None,
                    Some(Frame::Seq) => {}
                    Some(Frame::Map { place, keys, key }) => match key.take() {
                        None => {
                            if plain && !plain_is_string(&value) || !keys.insert(value.clone()) {
                                return None;
                            }
                            // Refused (or, as null, not) by the full parse, which judges it.
                            if *place == Place::Metadata && value == "generateName" {
                                return None;
                            }
                            *key = Some(value);
                        }
                        Some(k) => {
                            let string = !plain || plain_is_string(&value);
                            match slot(*place, &k) {
                                Some(_) if !string || value.is_empty() => return None,
                                Some(Slot::ApiVersion) => api_version = Some(value),
                                Some(Slot::Kind) => kind = Some(value),
                                Some(Slot::Name) => name = Some(value),
                                Some(Slot::Namespace) => namespace = Some(value),
                                None => {}
                            }
                        }
                    },
                }
            }
            Event::MappingStart(_, anchor, ref tag) | Event::SequenceStart(_, anchor, ref tag) => {
                if anchor != 0 || tag.is_some() {
                    return None;
                }
                let is_map = matches!(event, Event::MappingStart(..));
                let place = match stack.last_mut() {
                    None if root_seen || !is_map => return None,
                    None => Place::Root,
                    Some(Frame::Seq) => Place::Other,
                    // A collection as a key: the full parse tells.
                    Some(Frame::Map { key: None, .. }) => return None,
                    Some(Frame::Map { place, key, .. }) => {
                        let k = key.take()?;
                        match (*place, k.as_ref()) {
                            (Place::Root, "metadata") if is_map => Place::Metadata,
                            // An identity field that is not a scalar, or metadata that is not a mapping.
                            (Place::Root, "metadata") => return None,
                            (place, k) if slot(place, k).is_some() => return None,
                            _ => Place::Other,
                        }
                    }
                };
                root_seen = true;
                nodes += 1;
                stack.push(if is_map {
                    Frame::Map {
                        place,
                        keys: Keys::Few(Vec::new()),
                        key: None,
                    }
                } else {
                    Frame::Seq
                });
                if stack.len() > MAX_DEPTH {
                    return None;
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop()?;
            }
            // Aliases, anchors and anything newer: the full parse tells.
            _ => return None,
        }
        if nodes > MAX_NODES || scalar_bytes > MAX_SCALAR_BYTES {
            return None;
        }
    }
    let (api_version, kind, name) = (api_version?, kind?, name?);
    // Lists are flattened and core Secrets checked by the full parse, which has their content.
    let group = api_version.split_once('/').map_or("", |(group, _)| group);
    if kind.ends_with("List") || (kind == "Secret" && group.is_empty()) {
        return None;
    }
    Some(Scan::Object {
        api_version,
        kind,
        name,
        namespace,
    })
}

fn slot(place: Place, key: &str) -> Option<Slot> {
    match (place, key) {
        (Place::Root, "apiVersion") => Some(Slot::ApiVersion),
        (Place::Root, "kind") => Some(Slot::Kind),
        (Place::Metadata, "name") => Some(Slot::Name),
        (Place::Metadata, "namespace") => Some(Slot::Namespace),
        _ => None,
    }
}

/// Whether a plain scalar is certainly a string under YAML 1.2's core schema as serde-saphyr
/// resolves it (not null, a boolean or a number in any spelling it accepts).
fn plain_is_string(s: &str) -> bool {
    let Some(first) = s.bytes().next() else {
        return false;
    };
    if !first.is_ascii_alphabetic() {
        return false;
    }
    let words = [
        "true", "false", "null", "yes", "no", "on", "off", "y", "n", "inf", "infinity", "nan",
    ];
    !(s.len() <= 8 && words.iter().any(|w| w.eq_ignore_ascii_case(s)))
}

/// Whether the deserializer certainly accepts a plain scalar in a value position: strings and
/// small numbers yes; non-finite floats (rejected when untyped) and long or exponent-bearing
/// numerals (which may overflow) are left to it.
fn plain_value_is_safe(s: &str) -> bool {
    match s.bytes().next() {
        None => true,
        Some(b) if b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.') => {
            s.len() <= 15
                && !s
                    .bytes()
                    .any(|c| matches!(c, b'e' | b'E' | b'i' | b'I' | b'n' | b'N'))
        }
        Some(_) => {
            !(s.len() <= 8
                && ["inf", "infinity", "nan"]
                    .iter()
                    .any(|w| w.eq_ignore_ascii_case(s)))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn identity(text: &str) -> Option<(String, String, String, Option<String>)> {
        match scan_document(text) {
            Scan::Object {
                api_version,
                kind,
                name,
                namespace,
            } => Some((
                api_version.into(),
                kind.into(),
                name.into(),
                namespace.map(Into::into),
            )),
            Scan::Unsure => None,
        }
    }

    #[test]
    fn plain_objects_are_identified_in_any_key_order_and_style() {
        let doc = "metadata:\n  labels: {a: b}\n  namespace: \"prod\"\n  name: web\nkind: Deployment\napiVersion: apps/v1\nspec:\n  replicas: 3\n  template: {spec: {containers: [{name: c, image: 'x:1'}]}}\n";
        assert_eq!(
            identity(doc),
            Some((
                "apps/v1".into(),
                "Deployment".into(),
                "web".into(),
                Some("prod".into())
            ))
        );
        let flow = "{apiVersion: v1, kind: ConfigMap, metadata: {name: 'a'}, data: {k: \"v\\n\"}}";
        assert_eq!(
            identity(flow),
            Some(("v1".into(), "ConfigMap".into(), "a".into(), None))
        );
    }

    #[test]
    fn anything_the_full_parse_could_judge_differently_is_unsure() {
        let base = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n";
        assert!(identity(base).is_some());
        for extra in [
            "data: &x {a: b}\n",    // anchor
            "data: !!map {a: b}\n", // tag
            "data: {a: 1, a: 2}\n", // duplicate key
            "data: {<<: {a: b}}\n", // merge key
            "data: {1: x}\n",       // key YAML may type
            "data: {a: .inf}\n",    // non-finite float
            "data: {a: 1e999}\n",   // overflowing float
            "data: {a: 123456789012345678901234}\n",
            "data: {? [a] : b}\n",   // complex key
            "apiVersion: v2\n",      // duplicate identity field
            "data: {a: [unclosed\n", // syntax error
        ] {
            assert_eq!(identity(&format!("{base}{extra}")), None, "{extra}");
        }
        for doc in [
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: 123\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: true\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ''\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [a]\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: x\n",
            "apiVersion: v1\nkind: ConfigMap\n",
            "apiVersion: v1\nkind: List\nitems: []\nmetadata: {name: a}\n",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, generateName: a-}\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, \"generateName\": ~}\n",
            "- a\n",
            "~\n",
            "",
        ] {
            assert_eq!(identity(doc), None, "{doc}");
        }
        let deep = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a}}\nx: {}{}\n",
            "[".repeat(60),
            "]".repeat(60)
        );
        assert_eq!(identity(&deep), None);
    }

    #[test]
    fn many_keys_still_find_duplicates() {
        let keys: String = (0..40).map(|i| format!("  k{i}: v\n")).collect();
        let base = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n{keys}");
        assert!(identity(&base).is_some());
        assert_eq!(identity(&format!("{base}  k3: again\n")), None);
    }

    #[test]
    fn typed_plain_values_outside_identity_are_fine() {
        let doc = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  num: 42\n  f: 1.5\n  b: true\n  z: ~\n  d: 2024-01-01\n  s: -1\n";
        assert!(identity(doc).is_some());
    }
}
