//! Reading resources from YAML text.

use crate::error::{ConfigError, FieldPath, PathSegment};
use crate::object::{DEFAULT_NAMESPACE, Object};
use crate::resource::{Kind, Resource};
use crate::validate::check;
use crate::yaml::{self, Node, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;

/// The outcome of [`parse_documents_lenient`]: the resources read and the
/// documents left aside because Mizzen has no use for their kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub resources: Vec<Resource>,
    pub skipped: Vec<SkippedDocument>,
}

/// A document [`parse_documents_lenient`] did not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedDocument {
    /// 0-based index among the file's non-empty documents.
    pub document: usize,
    pub api_version: String,
    pub kind: String,
    pub name: Option<String>,
    /// 1-based line of the document's `kind`.
    pub line: usize,
}

/// How [`parse_documents_with`] reads a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// Skip (and list) documents of kinds Mizzen does not use instead of
    /// reporting them; see [`parse_documents_lenient`].
    pub lenient: bool,
    /// Run [`crate::validate`] on each resource. Without it only the
    /// structure is checked (known kinds and fields, value types).
    pub validate: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            lenient: false,
            validate: true,
        }
    }
}

/// API groups whose kinds Mizzen reads; an unknown kind in one of them is a
/// mistake rather than something to pass over.
const OWN_GROUPS: &[&str] = &[
    "networking.istio.io",
    "security.istio.io",
    "telemetry.istio.io",
    "extensions.istio.io",
    "mizzen.io",
];

/// Parses every document of a multi-document YAML text.
///
/// Empty documents are skipped. `apiVersion` and `kind` select the type; an
/// unknown kind or version, an unknown field, a value of the wrong type and
/// any violation found by [`crate::validate`] are errors. All errors of all
/// documents are returned together. A Kubernetes `List` (`apiVersion: v1`,
/// `kind: List`) contributes its items.
pub fn parse_documents(file: &str, text: &str) -> Result<Vec<Resource>, Vec<ConfigError>> {
    parse_documents_with(file, text, &ParseOptions::default()).map(|p| p.resources)
}

/// Like [`parse_documents`], but documents of kinds Mizzen does not use
/// (Deployments, ServiceAccounts, Gateway API resources...) are skipped and
/// listed instead of being errors. Kinds of the Istio groups and of
/// `mizzen.io` are still checked, so a misspelt `kind: VirtualServce` is
/// reported.
pub fn parse_documents_lenient(file: &str, text: &str) -> Result<Parsed, Vec<ConfigError>> {
    let options = ParseOptions {
        lenient: true,
        ..ParseOptions::default()
    };
    parse_documents_with(file, text, &options)
}

/// [`parse_documents`] on the contents of a file.
pub fn parse_file(path: &Path) -> Result<Vec<Resource>, Vec<ConfigError>> {
    let (name, text) = read(path)?;
    parse_documents(&name, &text)
}

/// [`parse_documents_lenient`] on the contents of a file.
pub fn parse_file_lenient(path: &Path) -> Result<Parsed, Vec<ConfigError>> {
    let (name, text) = read(path)?;
    parse_documents_lenient(&name, &text)
}

fn read(path: &Path) -> Result<(String, String), Vec<ConfigError>> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((name, text)),
        Err(e) => Err(vec![ConfigError {
            file: name,
            document: 0,
            kind: None,
            namespace: None,
            name: None,
            field: None,
            line: None,
            message: format!("cannot read file: {e}"),
        }]),
    }
}

/// Parses with explicit [`ParseOptions`].
pub fn parse_documents_with(
    file: &str,
    text: &str,
    options: &ParseOptions,
) -> Result<Parsed, Vec<ConfigError>> {
    let mut out = Parsed::default();
    let mut errors = Vec::new();
    let mut index = 0usize;
    for raw in yaml::split_documents(text) {
        let node = match yaml::parse_document(raw.text) {
            Ok(None) => continue,
            Ok(Some(node)) => node,
            Err((message, line)) => {
                errors.push(ConfigError {
                    file: file.to_string(),
                    document: index,
                    kind: None,
                    namespace: None,
                    name: None,
                    field: None,
                    line: line.map(|l| l + raw.line_offset),
                    message,
                });
                index += 1;
                continue;
            }
        };
        let doc = Doc {
            file,
            index,
            line_offset: raw.line_offset,
            root: &node,
            options,
        };
        doc.parse_object(&node, &FieldPath::root(), &mut out, &mut errors);
        index += 1;
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// One document being read.
struct Doc<'a> {
    file: &'a str,
    index: usize,
    line_offset: usize,
    root: &'a Node,
    options: &'a ParseOptions,
}

/// What errors about one object are attributed to.
#[derive(Clone, Default)]
struct Subject {
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

fn unknown_field_name(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

fn missing_field_name(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("missing field `")?;
    rest.split('`').next()
}

fn join(prefix: &FieldPath, path: &FieldPath) -> FieldPath {
    let mut segs = prefix.segments().to_vec();
    segs.extend(path.segments().iter().cloned());
    FieldPath::from_segments(segs)
}

impl Doc<'_> {
    fn error(
        &self,
        subject: &Subject,
        path: &FieldPath,
        message: impl Into<String>,
    ) -> ConfigError {
        let line = self.root.line_of(path) + self.line_offset;
        self.error_at_line(subject, path, message, Some(line))
    }

    fn error_at_line(
        &self,
        subject: &Subject,
        path: &FieldPath,
        message: impl Into<String>,
        line: Option<usize>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            document: self.index,
            kind: subject.kind.clone(),
            namespace: subject.namespace.clone(),
            name: subject.name.clone(),
            field: if path.is_empty() {
                None
            } else {
                Some(path.to_string())
            },
            line,
            message: message.into(),
        }
    }

    fn parse_object(
        &self,
        node: &Node,
        prefix: &FieldPath,
        out: &mut Parsed,
        errors: &mut Vec<ConfigError>,
    ) {
        let mut subject = Subject::default();
        if !matches!(node.value, Value::Map(_)) {
            errors.push(self.error(
                &subject,
                prefix,
                "expected a mapping with apiVersion, kind, metadata and spec",
            ));
            return;
        }
        let meta = node.get("metadata");
        subject.name = meta
            .and_then(|m| m.get("name"))
            .and_then(Node::as_str)
            .map(str::to_string);
        if subject.name.is_some() {
            let ns = meta
                .and_then(|m| m.get("namespace"))
                .and_then(Node::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or(DEFAULT_NAMESPACE);
            subject.namespace = Some(ns.to_string());
        }
        let kind_name = node.get("kind").and_then(Node::as_str);
        subject.kind = kind_name.map(str::to_string);
        let api_version = node.get("apiVersion").and_then(Node::as_str);
        let (Some(kind_name), Some(api_version)) = (kind_name, api_version) else {
            for field in ["apiVersion", "kind"] {
                match node.get(field) {
                    None => errors.push(self.error(
                        &subject,
                        &prefix.key(field),
                        format!("missing field `{field}`"),
                    )),
                    Some(n) if n.as_str().is_none() => {
                        errors.push(self.error(&subject, &prefix.key(field), "expected a string"))
                    }
                    Some(_) => {}
                }
            }
            return;
        };
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);

        if kind_name == "List" && api_version == "v1" {
            match node.get("items").map(|n| &n.value) {
                Some(Value::Seq(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        self.parse_object(item, &prefix.key("items").index(i), out, errors);
                    }
                }
                Some(Value::Null) | None => {}
                Some(_) => {
                    errors.push(self.error(&subject, &prefix.key("items"), "expected a list"))
                }
            }
            return;
        }

        let kind = match Kind::from_name(kind_name) {
            Some(kind) if kind.accepts_api_version(api_version) => kind,
            found => {
                if self.options.lenient && !OWN_GROUPS.contains(&group) {
                    out.skipped.push(SkippedDocument {
                        document: self.index,
                        api_version: api_version.to_string(),
                        kind: kind_name.to_string(),
                        name: subject.name.clone(),
                        line: self.root.line_of(&prefix.key("kind")) + self.line_offset,
                    });
                    return;
                }
                let (field, message) = match found {
                    Some(kind) => (
                        "apiVersion",
                        format!(
                            "unsupported apiVersion {api_version:?} for kind {kind}, expected one of {}",
                            kind.api_versions().join(", ")
                        ),
                    ),
                    None => (
                        "kind",
                        format!("unknown kind {kind_name:?} (apiVersion {api_version:?})"),
                    ),
                };
                errors.push(self.error(&subject, &prefix.key(field), message));
                return;
            }
        };

        let mut json = match node.to_json() {
            Ok(json) => json,
            Err(msg) => {
                errors.push(self.error(&subject, prefix, msg));
                return;
            }
        };
        if let Some(obj) = json.as_object_mut() {
            // `spec:` with nothing after it is the same as no spec.
            if obj.get("spec").is_some_and(serde_json::Value::is_null) {
                obj.remove("spec");
            }
            if kind.spec_required() && !obj.contains_key("spec") {
                errors.push(self.error(&subject, &prefix.key("spec"), "missing field `spec`"));
                return;
            }
        }

        let resource = match kind {
            Kind::Gateway => self
                .istio(&json, node, prefix, &subject)
                .map(Resource::Gateway),
            Kind::VirtualService => self
                .istio(&json, node, prefix, &subject)
                .map(Resource::VirtualService),
            Kind::DestinationRule => self
                .istio(&json, node, prefix, &subject)
                .map(Resource::DestinationRule),
            Kind::ServiceEntry => self
                .istio(&json, node, prefix, &subject)
                .map(Resource::ServiceEntry),
            Kind::WorkloadEntry => self
                .istio(&json, node, prefix, &subject)
                .map(Resource::WorkloadEntry),
            Kind::WorkloadGroup => self
                .istio(&json, node, prefix, &subject)
                .map(Resource::WorkloadGroup),
            Kind::Sidecar => self
                .istio(&json, node, prefix, &subject)
                .map(Resource::Sidecar),
            Kind::EnvoyFilter => self
                .istio(&json, node, prefix, &subject)
                .map(Resource::EnvoyFilter),
            Kind::ProxyConfig => self
                .istio(&json, node, prefix, &subject)
                .map(Resource::ProxyConfig),
            Kind::PeerAuthentication => self
                .istio(&json, node, prefix, &subject)
                .map(Resource::PeerAuthentication),
            Kind::RequestAuthentication => self
                .istio(&json, node, prefix, &subject)
                .map(Resource::RequestAuthentication),
            Kind::AuthorizationPolicy => self
                .istio(&json, node, prefix, &subject)
                .map(Resource::AuthorizationPolicy),
            Kind::Telemetry => self
                .istio(&json, node, prefix, &subject)
                .map(Resource::Telemetry),
            Kind::WasmPlugin => self
                .istio(&json, node, prefix, &subject)
                .map(Resource::WasmPlugin),
            Kind::Workload => self
                .istio(&json, node, prefix, &subject)
                .map(Resource::Workload),
            Kind::Service => self
                .kubernetes(&json, node, prefix, &subject)
                .map(Resource::Service),
            Kind::Secret => self
                .kubernetes(&json, node, prefix, &subject)
                .map(Resource::Secret),
        };
        match resource {
            Ok(resource) => {
                let found = if self.options.validate {
                    check(&resource)
                } else {
                    Vec::new()
                };
                if found.is_empty() {
                    out.resources.push(resource);
                } else {
                    for e in found {
                        let full = join(prefix, &e.path);
                        errors.push(self.error(&subject, &full, e.message));
                    }
                }
            }
            Err(mut errs) => errors.append(&mut errs),
        }
    }

    /// Decodes a typed value, turning the first serde error into a
    /// [`ConfigError`] with a field path and line.
    fn decode<T: DeserializeOwned>(
        &self,
        json: &serde_json::Value,
        prefix: &FieldPath,
        subject: &Subject,
    ) -> Result<T, Box<ConfigError>> {
        serde_path_to_error::deserialize::<_, T>(json).map_err(|err| {
            let mut segs = Vec::new();
            for seg in err.path().iter() {
                match seg {
                    serde_path_to_error::Segment::Map { key } => {
                        segs.push(PathSegment::Key(key.clone()));
                    }
                    serde_path_to_error::Segment::Seq { index } => {
                        segs.push(PathSegment::Index(*index))
                    }
                    serde_path_to_error::Segment::Enum { variant } => {
                        segs.push(PathSegment::Key(variant.clone()));
                    }
                    serde_path_to_error::Segment::Unknown => {}
                }
            }
            let mut path = join(prefix, &FieldPath::from_segments(segs));
            let message = err.inner().to_string();
            if let Some(field) = unknown_field_name(&message) {
                if path.last() == Some(&PathSegment::Key(field.to_string())) {
                    path.pop();
                }
                let line = self
                    .root
                    .key_line(&path, field)
                    .unwrap_or_else(|| self.root.line_of(&path));
                return Box::new(self.error_at_line(
                    subject,
                    &path,
                    message,
                    Some(line + self.line_offset),
                ));
            }
            if let Some(field) = missing_field_name(&message) {
                path = path.key(field);
            }
            Box::new(self.error(subject, &path, message))
        })
    }

    fn istio<S: DeserializeOwned + Default>(
        &self,
        json: &serde_json::Value,
        node: &Node,
        prefix: &FieldPath,
        subject: &Subject,
    ) -> Result<Object<S>, Vec<ConfigError>> {
        let obj: Object<S> = self.decode(json, prefix, subject).map_err(|e| vec![*e])?;
        // ObjectMeta accepts anything; catch misspelt metadata fields.
        if let (Some(meta_node), Ok(meta_json)) =
            (node.get("metadata"), serde_json::to_value(&obj.metadata))
        {
            let meta_path = prefix.key("metadata");
            if let Some(e) = self.unknown_in_round_trip(meta_node, &meta_json, &meta_path, subject)
            {
                return Err(vec![e]);
            }
        }
        Ok(obj)
    }

    fn kubernetes<T: DeserializeOwned + Serialize>(
        &self,
        json: &serde_json::Value,
        node: &Node,
        prefix: &FieldPath,
        subject: &Subject,
    ) -> Result<T, Vec<ConfigError>> {
        let value: T = self.decode(json, prefix, subject).map_err(|e| vec![*e])?;
        // k8s-openapi types ignore unknown fields; anything that does not
        // survive a round trip was not understood.
        if let Ok(round_trip) = serde_json::to_value(&value)
            && let Some(e) = self.unknown_in_round_trip(node, &round_trip, prefix, subject)
        {
            return Err(vec![e]);
        }
        Ok(value)
    }

    /// The first key (in document order) present in `input` but missing from
    /// `output`.
    fn unknown_in_round_trip(
        &self,
        input: &Node,
        output: &serde_json::Value,
        path: &FieldPath,
        subject: &Subject,
    ) -> Option<ConfigError> {
        match (&input.value, output) {
            (Value::Map(entries), serde_json::Value::Object(map)) => {
                for (key, value) in entries {
                    if matches!(value.value, Value::Null) {
                        continue;
                    }
                    match map.get(&key.name) {
                        None => {
                            return Some(self.error_at_line(
                                subject,
                                path,
                                format!("unknown field `{}`", key.name),
                                Some(key.line + self.line_offset),
                            ));
                        }
                        Some(out) => {
                            if let Some(e) = self.unknown_in_round_trip(
                                value,
                                out,
                                &path.key(&key.name),
                                subject,
                            ) {
                                return Some(e);
                            }
                        }
                    }
                }
                None
            }
            (Value::Seq(items), serde_json::Value::Array(outs)) => {
                for (i, (item, out)) in items.iter().zip(outs).enumerate() {
                    if let Some(e) = self.unknown_in_round_trip(item, out, &path.index(i), subject)
                    {
                        return Some(e);
                    }
                }
                None
            }
            _ => None,
        }
    }
}
