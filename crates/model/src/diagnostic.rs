//! Diagnostics: every problem Portico finds, tied to where it came from.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How bad a problem is: errors reject the object, warnings only inform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The API server would reject this, or it cannot be served.
    Error,
    /// Accepted, but probably not what was meant.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// Namespace and name of an object; the namespace is empty for cluster-scoped kinds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    /// Namespace, or "" for cluster-scoped objects.
    pub namespace: String,
    /// Object name.
    pub name: String,
}

impl ObjectKey {
    /// A namespaced key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }

    /// A key for a cluster-scoped object.
    pub fn cluster(name: impl Into<String>) -> Self {
        Self { namespace: String::new(), name: name.into() }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// Kind plus key: how a person names an object ("Service default/web").
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectRef {
    /// The object's kind, e.g. `Service`.
    pub kind: String,
    /// Namespace (empty for cluster-scoped kinds) and name.
    #[serde(flatten)]
    pub key: ObjectKey,
}

impl ObjectRef {
    /// Builds a reference from a kind and a key.
    pub fn new(kind: impl Into<String>, key: ObjectKey) -> Self {
        Self { kind: kind.into(), key }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.key)
    }
}

/// Where an object came from: a document of a manifest file, or the Kubernetes API.
///
/// Serialized without a tag, so that a file's origin reads `{"file", "document", "line"}`
/// whatever else an origin can be.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum Origin {
    /// A document of a manifest file.
    File {
        /// The manifest file.
        file: PathBuf,
        /// 1-based index of the document within the file (YAML `---` separated); 0 for the
        /// file or folder itself.
        document: usize,
        /// 1-based line, where known.
        #[serde(skip_serializing_if = "Option::is_none")]
        line: Option<u64>,
    },
    /// An object the API server holds: it has no file and no line.
    Api {
        /// The version of the object that was read.
        #[serde(rename = "resourceVersion")]
        resource_version: String,
    },
}

impl Origin {
    /// An origin for a document in a file.
    pub fn new(file: impl Into<PathBuf>, document: usize, line: Option<u64>) -> Self {
        Self::File { file: file.into(), document, line }
    }

    /// An origin for an object read from the API server at `resource_version`.
    pub fn api(resource_version: impl Into<String>) -> Self {
        Self::Api { resource_version: resource_version.into() }
    }

    /// The manifest file, for an object read from one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::File { file, .. } => Some(file),
            Self::Api { .. } => None,
        }
    }

    /// The 1-based document within the file (0: the file or folder itself), for an object
    /// read from one.
    pub fn document(&self) -> Option<usize> {
        match self {
            Self::File { document, .. } => Some(*document),
            Self::Api { .. } => None,
        }
    }

    /// The 1-based line in the file, where known.
    pub fn line(&self) -> Option<u64> {
        match self {
            Self::File { line, .. } => *line,
            Self::Api { .. } => None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { file, document, line } => {
                write!(f, "{}", file.display())?;
                if let Some(line) = line {
                    write!(f, ":{line}")?;
                }
                // Document 0 is the file or folder itself (it cannot be read, it holds no
                // manifests).
                match document {
                    0 => Ok(()),
                    n => write!(f, " (document {n})"),
                }
            }
            Self::Api { resource_version } => {
                write!(f, "the API server (resourceVersion {resource_version})")
            }
        }
    }
}

/// One problem found in the manifests or while planning them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where the problem is (file and document, or the API), when it belongs to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// The object concerned, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRef>,
    /// Field path within the object, e.g. `spec.ports[1].nodePort`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong, in plain words.
    pub message: String,
}

impl Diagnostic {
    /// A new error.
    pub fn error(message: impl Into<String>) -> Self {
        Self::new(Severity::Error, message)
    }

    /// A new warning.
    pub fn warning(message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, message)
    }

    fn new(severity: Severity, message: impl Into<String>) -> Self {
        Self { severity, origin: None, object: None, field: None, message: message.into() }
    }

    /// Attaches where the problem is.
    pub fn at(mut self, origin: &Origin) -> Self {
        self.origin = Some(origin.clone());
        self
    }

    /// Attaches the object.
    pub fn on(mut self, object: ObjectRef) -> Self {
        self.object = Some(object);
        self
    }

    /// Attaches the field path.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.severity)?;
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(origin: &Origin) -> String {
        serde_json::to_string(origin).expect("an origin serializes")
    }

    #[test]
    fn a_file_origin_reads_as_file_document_and_line() {
        assert_eq!(json(&Origin::new("a.yaml", 2, Some(7))), r#"{"file":"a.yaml","document":2,"line":7}"#);
        assert_eq!(json(&Origin::new("a.yaml", 0, None)), r#"{"file":"a.yaml","document":0}"#);
        assert_eq!(Origin::new("a.yaml", 2, Some(7)).to_string(), "a.yaml:7 (document 2)");
        assert_eq!(Origin::new("a.yaml", 0, None).to_string(), "a.yaml");
    }

    #[test]
    fn an_api_origin_has_no_file_and_no_line() {
        let origin = Origin::api("4711");
        assert_eq!(json(&origin), r#"{"resourceVersion":"4711"}"#);
        assert_eq!((origin.file(), origin.document(), origin.line()), (None, None, None));
        let d =
            Diagnostic::error("broken").at(&origin).on(ObjectRef::new("Service", ObjectKey::new("a", "b")));
        assert_eq!(d.to_string(), "error: the API server (resourceVersion 4711): Service a/b: broken");
    }
}
