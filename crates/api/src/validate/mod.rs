//! Semantic validation, following Istio's CRD schemas (their CEL rules,
//! bounds, patterns and required fields) and Istio's admission webhook.

use crate::error::{ConfigError, FieldPath};
use crate::object::ObjectMeta;
use crate::resource::Resource;

/// A problem at a path inside one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub path: FieldPath,
    pub message: String,
}

/// Collects errors while walking a resource.
#[derive(Default)]
pub(crate) struct Errors(Vec<FieldError>);

impl Errors {
    pub(crate) fn add(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.clone(),
            message: message.into(),
        });
    }
}

/// Checks a resource the way Istio would before accepting it.
///
/// The returned errors carry the resource's kind, namespace and name and the
/// field path; `file`, `document` and `line` are left empty because an
/// in-memory resource has no source ([`crate::parse_documents`] fills them
/// in).
pub fn validate(resource: &Resource) -> Vec<ConfigError> {
    let name = resource.metadata().name.clone();
    check(resource)
        .into_iter()
        .map(|e| {
            let mut err = ConfigError::at(&e.path, e.message);
            err.kind = Some(resource.kind().as_str().to_string());
            if name.is_some() {
                err.namespace = Some(resource.namespace().to_string());
            }
            err.name.clone_from(&name);
            err
        })
        .collect()
}

pub(crate) fn check(resource: &Resource) -> Vec<FieldError> {
    let mut errs = Errors::default();
    let root = FieldPath::root();
    metadata(resource.metadata(), &root.key("metadata"), &mut errs);
    errs.0
}

fn metadata(meta: &ObjectMeta, path: &FieldPath, errs: &mut Errors) {
    match meta.name.as_deref() {
        None | Some("") => errs.add(&path.key("name"), "Required value: name is required"),
        Some(_) => {}
    }
}
