//! The error type every parsing and validation failure is reported with.

use std::fmt;

/// One problem found in a configuration document.
///
/// The `Display` form is a single line meant for humans and logs:
///
/// ```text
/// routes.yaml: document 2 (VirtualService default/reviews): spec.http[0].match[0].uri: unknown field `exakt`, expected one of `exact`, `prefix`, `regex` (line 12)
/// ```
///
/// `document` is the 0-based index of the document among the non-empty
/// documents of the file, which is how people count the `---` separated parts
/// they wrote (a leading `---` or a comment-only part does not shift it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file (or other source name) the document came from; empty for
    /// errors produced by [`crate::validate`] on an in-memory resource.
    pub file: String,
    /// 0-based index of the document within the file.
    pub document: usize,
    /// The `kind` the document declares, when it declares one.
    pub kind: Option<String>,
    /// The effective namespace (`default` when the document sets none), when
    /// the document has a name.
    pub namespace: Option<String>,
    /// `metadata.name`, when present.
    pub name: Option<String>,
    /// Path of the offending field, e.g. `spec.http[0].route[0].destination.host`.
    pub field: Option<String>,
    /// 1-based line in the file, when it is known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about a field of a resource, without source information; the
    /// parser fills in file, document and line.
    pub(crate) fn at(path: &FieldPath, message: impl Into<String>) -> Self {
        ConfigError {
            file: String::new(),
            document: 0,
            kind: None,
            namespace: None,
            name: None,
            field: if path.is_empty() {
                None
            } else {
                Some(path.to_string())
            },
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file.is_empty() {
            write!(f, "<input>")?;
        } else {
            write!(f, "{}", self.file)?;
        }
        write!(f, ": document {}", self.document)?;
        match (&self.kind, &self.name) {
            (Some(kind), Some(name)) => {
                let ns = self
                    .namespace
                    .as_deref()
                    .unwrap_or(crate::DEFAULT_NAMESPACE);
                write!(f, " ({kind} {ns}/{name})")?;
            }
            (Some(kind), None) => write!(f, " ({kind})")?,
            (None, Some(name)) => write!(f, " ({name})")?,
            (None, None) => {}
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathSegment {
    /// A struct field or map key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// A location inside a document, rendered the way Kubernetes does:
/// `spec.http[0].match[0].uri`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(Vec<PathSegment>);

impl FieldPath {
    /// The empty path (the document itself).
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// This path extended by a field or map key.
    pub fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(PathSegment::Key(key.to_string()));
        FieldPath(segs)
    }

    /// This path extended by a list index.
    pub fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(PathSegment::Index(index));
        FieldPath(segs)
    }

    /// The segments, outermost first.
    pub fn segments(&self) -> &[PathSegment] {
        &self.0
    }

    /// Whether this is the root path.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn from_segments(segs: Vec<PathSegment>) -> Self {
        FieldPath(segs)
    }

    pub(crate) fn pop(&mut self) -> Option<PathSegment> {
        self.0.pop()
    }

    pub(crate) fn last(&self) -> Option<&PathSegment> {
        self.0.last()
    }
}

fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '/')
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                PathSegment::Key(k) if is_plain_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                PathSegment::Key(k) => write!(f, "[{k:?}]")?,
                PathSegment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}
