//! Finding the line of a field: diagnostics name a field path (`spec.ports[1].nodePort`);
//! this maps it back to the line in the manifest, by parsing the document again with
//! positions. It only runs for diagnostics, so loading stays lean.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::diagnostic::{Diagnostic, Origin};
use crate::load::{Document, split_documents};

/// A YAML node with the line each child starts on.
enum Node {
    Scalar,
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(String, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

macro_rules! scalar {
    ($($name:ident: $ty:ty),*) => {
        $(fn $name<E: de::Error>(self, _: $ty) -> Result<Node, E> { Ok(Node::Scalar) })*
    };
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Key>()? {
            let value = map.next_value::<Spanned<Node>>()?;
            entries.push((key.0, value));
        }
        Ok(Node::Map(entries))
    }
}

/// A mapping key of any scalar type, as text.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

/// One step of a field path: `spec`, `[1]`, or a bracketed key such as `[tls.crt]`.
#[derive(Debug, PartialEq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn steps(field: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    let mut rest = field;
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix('[') {
            let Some(end) = inner.find(']') else { break };
            let text = &inner[..end];
            out.push(text.parse().map(Step::Index).unwrap_or(Step::Key(text)));
            rest = inner[end + 1..].trim_start_matches('.');
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            out.push(Step::Key(&rest[..end]));
            rest = rest[end..].trim_start_matches('.');
        }
    }
    out
}

/// The file line of `field` in the `document`-th document (1-based) of a YAML file, or of
/// the deepest part of the path that exists; `None` when the document does not parse.
pub fn field_line(text: &str, document: usize, field: &str) -> Option<u64> {
    FileText::new(text.to_owned()).line(document, field)
}

/// One file's text, split into documents once and each document parsed with positions once,
/// when first asked about, however many of its fields are looked up.
struct FileText {
    text: String,
    hash: u64,
    documents: Option<Vec<Document>>,
    parsed: HashMap<usize, Option<Spanned<Node>>>,
}

impl FileText {
    fn new(text: String) -> Self {
        FileText { hash: hash(&text), text, documents: None, parsed: HashMap::new() }
    }

    fn line(&mut self, document: usize, field: &str) -> Option<u64> {
        let documents = self.documents.get_or_insert_with(|| split_documents(&self.text));
        // Documents are numbered from 1, in order.
        let doc = documents.get(document.checked_sub(1)?).filter(|d| d.index == document)?;
        let root = self.parsed.entry(document).or_insert_with(|| serde_saphyr::from_str(&doc.text).ok());
        let root = root.as_ref()?;
        let mut line = root.referenced.line();
        let mut node = &root.value;
        for step in steps(field) {
            let child = match (node, step) {
                (Node::Map(entries), Step::Key(k)) => {
                    entries.iter().find(|(key, _)| key == k).map(|(_, v)| v)
                }
                (Node::Seq(items), Step::Index(i)) => items.get(i),
                _ => None,
            };
            let Some(child) = child else { break };
            line = child.referenced.line();
            node = &child.value;
        }
        Some(doc.first_line + line.saturating_sub(1))
    }
}

fn hash(text: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(text)
}

/// The lines found for each field of each file, kept from one reload to the next while the
/// file's text stays the same: a reload re-locates only what is new or in an edited file.
#[derive(Default)]
pub struct Locator {
    files: HashMap<PathBuf, Located>,
}

/// The lines found in one version of a file, by document and field.
struct Located {
    hash: u64,
    lines: HashMap<(usize, String), Option<u64>>,
}

impl Locator {
    /// Points each diagnostic that names a field at that field's line, reading each
    /// manifest file once. Diagnostics whose file or field cannot be found keep their line.
    /// Files no diagnostic names any more are forgotten.
    pub fn locate(&mut self, diagnostics: &mut [Diagnostic]) {
        let mut texts: HashMap<PathBuf, Option<FileText>> = HashMap::new();
        let mut named = std::collections::HashSet::new();
        for d in diagnostics {
            // Only a file has lines to point at.
            let (Some(Origin::File { file, document, line }), Some(field)) = (&mut d.origin, &d.field) else {
                continue;
            };
            let document = *document;
            if field.is_empty() || document == 0 {
                continue;
            }
            named.insert(file.clone());
            let text = texts
                .entry(file.clone())
                .or_insert_with(|| std::fs::read_to_string(&*file).ok().map(FileText::new));
            let Some(text) = text else { continue };
            let located = self
                .files
                .entry(file.clone())
                .or_insert_with(|| Located { hash: text.hash, lines: HashMap::new() });
            if located.hash != text.hash {
                *located = Located { hash: text.hash, lines: HashMap::new() };
            }
            let found =
                *located.lines.entry((document, field.clone())).or_insert_with(|| text.line(document, field));
            if found.is_some() {
                *line = found;
            }
        }
        self.files.retain(|file, _| named.contains(file));
    }
}

/// [`Locator::locate`] once, for a command that reports once.
pub fn locate_fields(diagnostics: &mut [Diagnostic]) {
    Locator::default().locate(diagnostics);
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - name: a\n    port: 80\n  - {name: b, port: 70000}\n";

    #[test]
    fn finds_fields_in_later_documents() {
        assert_eq!(field_line(TEXT, 2, "spec.ports[0].port"), Some(12));
        assert_eq!(field_line(TEXT, 2, "spec.ports[1].port"), Some(13));
        assert_eq!(field_line(TEXT, 2, "metadata.name"), Some(8));
    }

    #[test]
    fn stops_at_the_deepest_existing_part() {
        assert_eq!(field_line(TEXT, 2, "spec.ports[1].nodePort"), Some(13));
        assert_eq!(field_line(TEXT, 3, "spec"), None);
    }

    fn warned(file: &std::path::Path, document: usize, field: &str) -> Diagnostic {
        let mut d = Diagnostic::warning("w").at(&Origin::new(file, document, None));
        d.field = Some(field.to_owned());
        d
    }

    #[test]
    fn a_locator_finds_each_line_once_and_again_after_an_edit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("m.yaml");
        std::fs::write(&file, TEXT).expect("write");
        let mut locator = Locator::default();
        let mut diagnostics: Vec<Diagnostic> = (0..3)
            .map(|_| warned(&file, 2, "spec.ports[1].port"))
            .chain([warned(&file, 2, "metadata.name")])
            .collect();
        locator.locate(&mut diagnostics);
        let lines: Vec<_> = diagnostics.iter().map(|d| d.origin.as_ref().and_then(Origin::line)).collect();
        assert_eq!(lines, [Some(13), Some(13), Some(13), Some(8)]);
        assert_eq!(locator.files[&file].lines.len(), 2, "one lookup per field");
        // The file changes under the same diagnostics: lines found before are not reused.
        std::fs::write(&file, format!("# a new first line\n{TEXT}")).expect("write");
        let mut again = vec![warned(&file, 2, "spec.ports[1].port")];
        locator.locate(&mut again);
        assert_eq!(again[0].origin.as_ref().and_then(Origin::line), Some(14));
        // A file no diagnostic names any more is forgotten.
        locator.locate(&mut []);
        assert!(locator.files.is_empty());
    }

    #[test]
    fn many_fields_of_one_file_split_it_once_and_parse_each_document_once() {
        let text: String = (0..50)
            .map(|i| format!("kind: Service\nmetadata: {{name: s{i}}}\nspec: {{x: 1}}\n---\n"))
            .collect();
        let mut file = FileText::new(text);
        for document in 1..=50 {
            assert_eq!(file.line(document, "spec.x"), Some((document as u64 - 1) * 4 + 3));
            assert_eq!(file.line(document, "metadata.name"), Some((document as u64 - 1) * 4 + 2));
        }
        assert_eq!(file.parsed.len(), 50);
    }

    #[test]
    fn path_steps() {
        assert_eq!(
            steps("metadata.labels[kubernetes.io/service-name]"),
            vec![Step::Key("metadata"), Step::Key("labels"), Step::Key("kubernetes.io/service-name")]
        );
        assert_eq!(steps("items[2].spec"), vec![Step::Key("items"), Step::Index(2), Step::Key("spec")]);
    }
}
