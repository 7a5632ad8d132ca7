//! The Kubernetes-style envelope around a spec.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The namespace of a resource that does not name one.
pub const DEFAULT_NAMESPACE: &str = "default";

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// A resource: `apiVersion`, `kind`, `metadata`, `spec` and an opaque
/// `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Object<S> {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

impl<S> Object<S> {
    /// `metadata.name`, or `""` when absent (validation rejects that).
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }

    /// `metadata.namespace`, defaulting to [`DEFAULT_NAMESPACE`].
    pub fn namespace(&self) -> &str {
        meta_namespace(&self.metadata)
    }

    /// `metadata.labels` (empty when absent).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
    }

    /// `metadata.annotations` (empty when absent).
    pub fn annotations(&self) -> &BTreeMap<String, String> {
        self.metadata.annotations.as_ref().unwrap_or(&NO_LABELS)
    }
}

pub(crate) fn meta_namespace(meta: &ObjectMeta) -> &str {
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => ns,
        _ => DEFAULT_NAMESPACE,
    }
}

pub(crate) fn meta_labels(meta: &ObjectMeta) -> &BTreeMap<String, String> {
    meta.labels.as_ref().unwrap_or(&NO_LABELS)
}
