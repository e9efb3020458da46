//! Reading manifests: files and folders, YAML (multi-document) and JSON, `kind: List`.
//!
//! Every document is parsed on its own so that one broken document never hides the others.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::diagnostic::{Diagnostic, ObjectKey, ObjectRef, Origin};
use crate::object::{Object, ObjectKind};

/// Everything read from a set of paths: the typed objects and the problems met on the way.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Objects in file order, each with where it came from.
    pub objects: Vec<(Origin, Object)>,
    /// Read, parse and typing problems.
    pub diagnostics: Vec<Diagnostic>,
    /// Every manifest file that was read.
    pub files: Vec<PathBuf>,
}

/// Loads every manifest under `paths` (files, or folders searched recursively).
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Loaded {
    let mut objects = Vec::new();
    let (files, diagnostics) = read_manifests(paths, |parsed| objects.extend(parsed), |_, _| {});
    Loaded { objects, diagnostics, files }
}

/// Reads every manifest file under `paths`, handing each file's objects to `admit` as soon
/// as the file is parsed (so that a caller can store them before the next file is read) and
/// calling `progress(files read, files in all)`. Returns the files read and the problems met.
pub fn read_manifests<P: AsRef<Path>>(
    paths: &[P],
    mut admit: impl FnMut(Vec<(Origin, Object)>),
    mut progress: impl FnMut(usize, usize),
) -> (Vec<PathBuf>, Vec<Diagnostic>) {
    let Listing { files, mut diagnostics, .. } = manifest_files(paths);
    let mut read = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        match fs::read_to_string(file) {
            Ok(text) => {
                let (objects, found) = parse_text(file, &text);
                diagnostics.extend(found);
                admit(objects);
                read.push(file.clone());
            }
            Err(err) => diagnostics.push(read_error(file, &err)),
        }
        progress(i + 1, files.len());
    }
    (read, diagnostics)
}

/// The manifest files under some paths, and what could not be looked at.
#[derive(Debug, Default)]
pub struct Listing {
    /// The files, in order: files as given, folders searched recursively and sorted.
    pub files: Vec<PathBuf>,
    /// What was met on the way: paths that cannot be read, files that are not manifests.
    pub diagnostics: Vec<Diagnostic>,
    /// Paths that could not be looked at for a reason other than being gone (out of file
    /// descriptors, permissions): what was there before may still be there.
    pub unreadable: Vec<PathBuf>,
}

impl Listing {
    fn cannot_read(&mut self, path: &Path, err: &std::io::Error) {
        self.diagnostics.push(read_error(path, err));
        if err.kind() != std::io::ErrorKind::NotFound {
            self.unreadable.push(path.to_path_buf());
        }
    }
}

/// The manifest files `paths` name, in order: files as given, folders searched recursively
/// and sorted.
///
/// In folders only `.yaml`, `.yml` and `.json` files count, and entries whose names start
/// with `.` are skipped: mounted ConfigMaps keep a hidden `..data` copy of every file.
pub fn manifest_files<P: AsRef<Path>>(paths: &[P]) -> Listing {
    let mut listing = Listing::default();
    for path in paths {
        let path = path.as_ref();
        match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                let before = listing.files.len();
                find_in_dir(path, &mut listing);
                if listing.files.len() == before && !listing.unreadable.iter().any(|u| u.starts_with(path)) {
                    listing.diagnostics.push(
                        Diagnostic::warning(
                            "no manifests in this folder (no .yaml, .yml or .json file, searched recursively)",
                        )
                        .at(&Origin::new(path, 0, None)),
                    );
                }
            }
            // A shell glob such as `examples/*` also names READMEs: skip them, but say so.
            Ok(_) if path.extension().is_some() && !is_manifest_name(path) => listing.diagnostics.push(
                Diagnostic::warning("not a manifest file (.yaml, .yml or .json); skipped")
                    .at(&Origin::new(path, 0, None)),
            ),
            Ok(_) => listing.files.push(path.to_path_buf()),
            Err(err) => listing.cannot_read(path, &err),
        }
    }
    listing
}

fn find_in_dir(dir: &Path, listing: &mut Listing) {
    let mut entries: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(err) => return listing.cannot_read(dir, &err),
    };
    entries.sort();
    for path in entries {
        let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => find_in_dir(&path, listing),
            Ok(_) if is_manifest_name(&path) => listing.files.push(path),
            Ok(_) => {}
            Err(err) => listing.cannot_read(&path, &err),
        }
    }
}

fn is_manifest_name(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}

/// The diagnostic for a file or folder that cannot be read.
pub fn read_error(path: &Path, err: &std::io::Error) -> Diagnostic {
    Diagnostic::error(format!("cannot read: {err}")).at(&Origin::new(path, 0, None))
}

/// Parses the text of one manifest file (YAML or JSON) into typed objects.
pub fn parse_text(file: &Path, text: &str) -> (Vec<(Origin, Object)>, Vec<Diagnostic>) {
    let mut out = Parsed { objects: Vec::new(), diagnostics: Vec::new() };
    let is_json = file.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with(['{', '[']);
    if is_json {
        let origin = Origin::new(file, 1, Some(1));
        match serde_json::from_str::<Value>(text) {
            Ok(value) => out.value(value, &origin, ""),
            Err(err) => {
                out.diagnostics.push(Diagnostic::error(format!("invalid JSON: {err}")).at(&Origin::new(
                    file,
                    1,
                    Some(err.line() as u64),
                )))
            }
        }
    } else {
        for doc in split_documents(text) {
            let at = |line| Origin::new(file, doc.index, Some(line));
            match serde_saphyr::from_str::<Value>(&doc.text) {
                Ok(value) => out.value(value, &at(doc.content_line()), ""),
                Err(err) => {
                    let line = err.location().map(|l| doc.first_line + l.line().saturating_sub(1));
                    let origin = at(line.unwrap_or_else(|| doc.content_line()));
                    out.diagnostics
                        .push(Diagnostic::error(format!("invalid YAML: {}", yaml_message(&err))).at(&origin));
                }
            }
        }
    }
    (out.objects, out.diagnostics)
}

/// The parser's message without its rendered source snippet: we print file and line ourselves.
fn yaml_message(err: &serde_saphyr::Error) -> String {
    // The breach may be wrapped in the alias that led to it, and in a snippet.
    let mut inner = err;
    while let serde_saphyr::Error::AliasError { error, .. } | serde_saphyr::Error::WithSnippet { error, .. } =
        inner
    {
        inner = error;
    }
    if let serde_saphyr::Error::Budget { breach, .. } = inner {
        return format!("too large to read safely: {}", breach_message(breach));
    }
    let text = err.without_snippet().to_string();
    let first = text.lines().next().unwrap_or_default().trim();
    // The parser counts lines within the document; the diagnostic carries the file's line.
    first.split(" at line ").next().unwrap_or(first).to_string()
}

/// Which of the YAML reader's safety limits a document passed, in words (aliases that expand
/// to millions of nodes, "billion laughs", are the usual cause).
fn breach_message(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    let limits = serde_saphyr::Budget::default();
    match breach {
        B::Nodes { .. } => {
            format!("the document has more than {} values once its aliases are expanded", limits.max_nodes)
        }
        B::Events { .. } => format!(
            "the document has more than {} YAML events once its aliases are expanded",
            limits.max_events
        ),
        B::Aliases { .. } => format!("more than {} aliases (*name)", limits.max_aliases),
        B::Anchors { .. } => format!("more than {} anchors (&name)", limits.max_anchors),
        B::AliasAnchorRatio { .. } => {
            "aliases used far more often than their anchors could justify".to_owned()
        }
        B::Depth { .. } => format!("nested more than {} levels deep", limits.max_depth),
        B::Documents { .. } => format!("more than {} documents in one file", limits.max_documents),
        B::ScalarBytes { .. } => {
            format!("more than {} MiB of text in values", limits.max_total_scalar_bytes >> 20)
        }
        B::MergeKeys { .. } => format!("more than {} merge keys (<<)", limits.max_merge_keys),
        _ => "past one of the YAML reader's limits on size or nesting".to_owned(),
    }
}

/// A path as field paths are written here: `spec.ports[0].targetPort`, a key with a dot in
/// brackets (`metadata.labels[app.kubernetes.io/name]`).
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => {
            let parent = field_path(parent);
            match (parent.is_empty(), key.contains('.')) {
                (_, true) => format!("{parent}[{key}]"),
                (true, false) => key.clone(),
                (false, false) => format!("{parent}.{key}"),
            }
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => {
            field_path(parent)
        }
    }
}

/// One YAML document of a stream.
pub(crate) struct Document {
    pub(crate) index: usize,
    pub(crate) first_line: u64,
    pub(crate) text: String,
}

impl Document {
    /// The file line of the document's first content (not the `---` marker, not a comment).
    fn content_line(&self) -> u64 {
        let skip = self.text.lines().position(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#')
        });
        self.first_line + skip.unwrap_or(0) as u64
    }
}

/// Splits a YAML stream at `---` markers, keeping each document's first line number.
pub(crate) fn split_documents(text: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut first_line = 1u64;
    let mut ended = false;
    let flush = |current: &mut String, first_line: u64, docs: &mut Vec<Document>| {
        let blank = current.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#')
        });
        if !blank {
            docs.push(Document { index: docs.len() + 1, first_line, text: std::mem::take(current) });
        }
        current.clear();
    };
    for (n, line) in text.lines().enumerate() {
        let line_no = n as u64 + 1;
        if let Some(rest) = document_marker(line) {
            flush(&mut current, first_line, &mut docs);
            ended = false;
            first_line = line_no;
            // Keep line numbers aligned: the marker line becomes the document's first line.
            current.push_str(rest);
            current.push('\n');
            continue;
        }
        if line.trim_end() == "..." {
            ended = true;
            continue;
        }
        if ended || (current.is_empty() && line.starts_with('%')) {
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    flush(&mut current, first_line, &mut docs);
    docs
}

/// For a `---` line, what follows the marker on that line (a comment is dropped).
fn document_marker(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("---")?;
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let rest = rest.trim();
    Some(if rest.starts_with('#') { "" } else { rest })
}

struct Parsed {
    objects: Vec<(Origin, Object)>,
    diagnostics: Vec<Diagnostic>,
}

impl Parsed {
    /// Types one document's value, descending into `kind: *List` items.
    fn value(&mut self, value: Value, origin: &Origin, prefix: &str) {
        let Value::Object(map) = &value else {
            if !value.is_null() {
                self.diagnostics.push(
                    Diagnostic::error("a manifest document must be a mapping (a Kubernetes object)")
                        .at(origin)
                        .field(prefix.trim_end_matches('.')),
                );
            }
            return;
        };
        let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_string);
        let meta_text = |key: &str| {
            map.get("metadata").and_then(|m| m.get(key)).and_then(Value::as_str).map(str::to_string)
        };
        let (kind, api_version) = (text("kind"), text("apiVersion"));
        let (name, namespace) = (meta_text("name").unwrap_or_default(), meta_text("namespace"));
        let is_list = map.contains_key("items");
        let (Some(kind), Some(api_version)) = (kind, api_version) else {
            let missing = if text("kind").is_none() { "kind" } else { "apiVersion" };
            self.diagnostics.push(
                Diagnostic::error(format!("missing `{missing}`: not a Kubernetes object"))
                    .at(origin)
                    .field(format!("{prefix}{missing}")),
            );
            return;
        };
        if kind.ends_with("List") && is_list {
            self.list(value, origin, prefix);
            return;
        }
        let reference = |k: Option<ObjectKind>| {
            let namespaced = k.is_none_or(ObjectKind::namespaced);
            let key = if namespaced {
                ObjectKey::new(namespace.clone().unwrap_or_else(|| "default".into()), name.clone())
            } else {
                ObjectKey::cluster(name.clone())
            };
            ObjectRef::new(kind.clone(), key)
        };
        let Some(known) = ObjectKind::from_name(&kind) else {
            self.diagnostics.push(
                Diagnostic::warning(format!(
                    "kind {kind} ({api_version}) is not one Portico serves; skipped"
                ))
                .at(origin)
                .on(reference(None)),
            );
            return;
        };
        if !known.reads(&api_version) {
            self.diagnostics.push(
                Diagnostic::error(format!(
                    "apiVersion {api_version} is not supported for {kind}; use {}",
                    known.api_version()
                ))
                .at(origin)
                .on(reference(Some(known)))
                .field(format!("{prefix}apiVersion")),
            );
            return;
        }
        match typed(known, value) {
            Ok(mut object) => {
                if known.namespaced() && object.metadata().namespace.is_none() {
                    object.metadata_mut().namespace = Some("default".into());
                }
                self.objects.push((origin.clone(), object));
            }
            Err(problems) => {
                for (path, message) in problems {
                    self.diagnostics.push(
                        Diagnostic::error(message)
                            .at(origin)
                            .on(reference(Some(known)))
                            .field(format!("{prefix}{path}")),
                    );
                }
            }
        }
    }

    fn list(&mut self, value: Value, origin: &Origin, prefix: &str) {
        let Value::Object(mut map) = value else { return };
        match map.remove("items") {
            Some(Value::Array(items)) => {
                for (i, item) in items.into_iter().enumerate() {
                    self.value(item, origin, &format!("{prefix}items[{i}]."));
                }
            }
            Some(Value::Null) => {}
            Some(_) => self.diagnostics.push(
                Diagnostic::error("`items` of a List must be a sequence")
                    .at(origin)
                    .field(format!("{prefix}items")),
            ),
            None => {}
        }
    }
}

/// Deserializes a value into the typed object. Fails with every field that is not one of the
/// object's, as the API server's strict field validation does (kubectl apply's default), or
/// with the field whose value does not fit; each as (field path, message).
fn typed(kind: ObjectKind, value: Value) -> Result<Object, Vec<(String, String)>> {
    fn de<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut unknown = |path: serde_ignored::Path<'_>| {
            let field = field_path(&path);
            let name = field.rsplit(['.', '[']).next().unwrap_or(&field).trim_end_matches(']').to_owned();
            problems.push((field, format!("unknown field {name:?}: the API server rejects it (strict field validation, kubectl apply's default)")));
        };
        let parsed = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut unknown));
        match parsed {
            Ok(object) if problems.is_empty() => Ok(object),
            Ok(_) => Err(problems),
            Err(err) => {
                let path = err.path().to_string();
                let path = if path == "." { String::new() } else { path };
                problems.push((path, err.into_inner().to_string()));
                Err(problems)
            }
        }
    }
    Ok(match kind {
        ObjectKind::Namespace => Object::Namespace(Box::new(de(value)?)),
        ObjectKind::Service => Object::Service(Box::new(de(value)?)),
        ObjectKind::EndpointSlice => Object::EndpointSlice(Box::new(de(value)?)),
        ObjectKind::Pod => Object::Pod(Box::new(de(value)?)),
        ObjectKind::Node => Object::Node(Box::new(de(value)?)),
        ObjectKind::Ingress => Object::Ingress(Box::new(de(value)?)),
        ObjectKind::IngressClass => Object::IngressClass(Box::new(de(value)?)),
        ObjectKind::Secret => Object::Secret(Box::new(de(value)?)),
        ObjectKind::Deployment => {
            Object::Workload(Box::new(de::<k8s_openapi::api::apps::v1::Deployment>(value)?.into()))
        }
        ObjectKind::StatefulSet => {
            Object::Workload(Box::new(de::<k8s_openapi::api::apps::v1::StatefulSet>(value)?.into()))
        }
        ObjectKind::DaemonSet => {
            Object::Workload(Box::new(de::<k8s_openapi::api::apps::v1::DaemonSet>(value)?.into()))
        }
        ObjectKind::ReplicaSet => {
            Object::Workload(Box::new(de::<k8s_openapi::api::apps::v1::ReplicaSet>(value)?.into()))
        }
        ObjectKind::IpAddressPool => Object::IpAddressPool(Box::new(de(value)?)),
        ObjectKind::L2Advertisement => Object::L2Advertisement(Box::new(de(value)?)),
        ObjectKind::AuthorizationPolicy => Object::AuthorizationPolicy(Box::new(de(value)?)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Vec<(Origin, Object)>, Vec<Diagnostic>) {
        parse_text(Path::new("test.yaml"), text)
    }

    #[test]
    fn splits_documents_and_keeps_line_numbers() {
        let (objects, diags) = parse(
            "# leading comment\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: b\n",
        );
        assert!(diags.is_empty(), "{diags:?}");
        let names: Vec<_> = objects.iter().map(|(o, obj)| (o.document(), o.line(), obj.key().name)).collect();
        assert_eq!(names, vec![(Some(1), Some(3), "a".to_string()), (Some(2), Some(9), "b".to_string())]);
    }

    #[test]
    fn broken_document_does_not_hide_others() {
        let (objects, diags) = parse(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: [oops\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: c}\n",
        );
        assert_eq!(objects.len(), 2);
        assert_eq!(diags.len(), 1);
        let origin = diags[0].origin.as_ref().expect("origin");
        assert_eq!(origin.document(), Some(2));
        assert!(origin.line().is_some_and(|l| l >= 4), "{origin:?}");
        assert!(diags[0].message.starts_with("invalid YAML"), "{}", diags[0].message);
    }

    #[test]
    fn a_folder_without_manifests_is_worth_a_warning() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("README.md"), "# notes\n").expect("write");
        let listing = manifest_files(&[dir.path()]);
        assert!(listing.files.is_empty());
        assert_eq!(listing.diagnostics.len(), 1, "{:?}", listing.diagnostics);
        assert!(listing.diagnostics[0].message.starts_with("no manifests in this folder"));
        std::fs::write(dir.path().join("web.yaml"), "").expect("write");
        assert!(manifest_files(&[dir.path()]).diagnostics.is_empty());
    }

    #[test]
    fn an_alias_bomb_is_refused_in_words() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x]\n");
        for (previous, name) in
            ["a", "b", "c", "d", "e", "f", "g"].iter().zip(["b", "c", "d", "e", "f", "g", "h"])
        {
            text.push_str(&format!("{name}: &{name} [{}]\n", vec![format!("*{previous}"); 9].join(", ")));
        }
        let (objects, diags) = parse(&text);
        assert!(objects.is_empty());
        assert_eq!(diags.len(), 1);
        let message = &diags[0].message;
        assert!(
            message.starts_with("invalid YAML: too large to read safely: the document has more than"),
            "{message}"
        );
        assert!(!message.contains('{') && !message.contains("Nodes"), "internal structure shown: {message}");
    }

    #[test]
    fn unknown_fields_are_errors_each_with_its_path() {
        let (objects, diags) = parse(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: web, labelz: {a: b}}\n  spec:\n    selectr: {app: web}\n    ports:\n    - {port: 80, protocl: TCP}\n",
        );
        assert!(objects.is_empty(), "an object with unknown fields is not accepted");
        let fields: Vec<_> = diags.iter().map(|d| d.field.as_deref().unwrap_or_default()).collect();
        assert_eq!(
            fields,
            ["items[0].metadata.labelz", "items[0].spec.ports[0].protocl", "items[0].spec.selectr"]
        );
        assert!(diags.iter().all(|d| d.severity == crate::Severity::Error));
        assert!(diags[2].message.starts_with("unknown field \"selectr\""), "{}", diags[2].message);
        // Known fields anywhere, and keys of maps (labels, selectors, annotations), are fine.
        let (objects, diags) = parse(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels: {app.kubernetes.io/name: web, anything: goes}\nspec:\n  selector: {whatever: x}\n  ports: [{port: 80, targetPort: http, appProtocol: h2c}]\nstatus: {loadBalancer: {}}\n",
        );
        assert_eq!((objects.len(), diags.len()), (1, 0), "{diags:?}");
    }

    #[test]
    fn type_errors_name_the_field() {
        let (objects, diags) = parse(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - port: eighty\n",
        );
        assert!(objects.is_empty());
        assert_eq!(diags[0].field.as_deref(), Some("spec.ports[0].port"));
        assert_eq!(diags[0].object.as_ref().map(ToString::to_string).as_deref(), Some("Service default/web"));
    }

    #[test]
    fn lists_and_json_and_unknown_kinds() {
        let json = r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x"}},
            {"apiVersion":"batch/v1","kind":"CronJob","metadata":{"name":"d"}}]}"#;
        let (objects, diags) = parse_text(Path::new("list.json"), json);
        assert_eq!(objects.len(), 1);
        assert_eq!(diags.len(), 1);
        assert!(!diags[0].is_error());
        assert!(diags[0].message.contains("CronJob"));
    }

    #[test]
    fn wrong_api_version_is_an_error() {
        let (objects, diags) =
            parse("apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: old}\n");
        assert!(objects.is_empty());
        assert_eq!(diags[0].field.as_deref(), Some("apiVersion"));
        assert!(diags[0].message.contains("networking.k8s.io/v1"));
    }

    #[test]
    fn namespace_defaults_to_default() {
        let (objects, _) = parse("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n");
        assert_eq!(objects[0].1.key(), ObjectKey::new("default", "web"));
    }
}
