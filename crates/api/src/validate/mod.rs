//! Semantic validation, following Istio's CRD schemas (their CEL rules,
//! bounds, patterns and required fields) and Istio's admission webhook.

mod common;
mod destination_rule;
mod envoy_filter;
mod extensions;
mod gateway;
mod kube;
mod security;
mod service_entry;
mod virtual_service;

use crate::error::{ConfigError, FieldPath};
use crate::object::ObjectMeta;
use crate::resource::{Kind, Resource};

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
    let mut e = Errors::default();
    let root = FieldPath::root();
    let kind = resource.kind();
    metadata(kind, resource.metadata(), &root.key("metadata"), &mut e);
    let ns = resource.namespace();
    let spec = root.key("spec");
    match resource {
        Resource::Gateway(o) => gateway::gateway(&o.spec, o.name(), &spec, &mut e),
        Resource::VirtualService(o) => virtual_service::virtual_service(&o.spec, ns, &spec, &mut e),
        Resource::DestinationRule(o) => {
            destination_rule::destination_rule(&o.spec, ns, &spec, &mut e);
        }
        Resource::ServiceEntry(o) => service_entry::service_entry(&o.spec, ns, &spec, &mut e),
        Resource::WorkloadEntry(o) => service_entry::workload_entry(&o.spec, &spec, &mut e),
        Resource::WorkloadGroup(o) => service_entry::workload_group(&o.spec, &spec, &mut e),
        Resource::Sidecar(o) => gateway::sidecar(&o.spec, &spec, &mut e),
        Resource::EnvoyFilter(o) => envoy_filter::envoy_filter(&o.spec, &spec, &mut e),
        Resource::ProxyConfig(o) => envoy_filter::proxy_config(&o.spec, &spec, &mut e),
        Resource::PeerAuthentication(o) => security::peer_authentication(&o.spec, &spec, &mut e),
        Resource::RequestAuthentication(o) => {
            security::request_authentication(&o.spec, &spec, &mut e);
        }
        Resource::AuthorizationPolicy(o) => {
            security::authorization_policy(&o.spec, &spec, &mut e);
        }
        Resource::Telemetry(o) => extensions::telemetry(&o.spec, &spec, &mut e),
        Resource::WasmPlugin(o) => extensions::wasm_plugin(&o.spec, &spec, &mut e),
        Resource::Service(s) => kube::service(s, &spec, &mut e),
        Resource::Secret(s) => kube::secret(s, &root, &mut e),
        Resource::Workload(o) => kube::workload(&o.spec, &spec, &mut e),
    }
    e.0
}

fn metadata(kind: Kind, meta: &ObjectMeta, path: &FieldPath, e: &mut Errors) {
    match meta.name.as_deref() {
        None | Some("") => e.add(&path.key("name"), "Required value: name is required"),
        Some(name) => {
            // Gateways get a stricter message from their own rules.
            let ok = match kind {
                Kind::Service => common::is_dns1123_label(name),
                _ => common::is_dns1123_subdomain(name),
            };
            if !ok && kind != Kind::Gateway {
                e.add(
                    &path.key("name"),
                    format!("Invalid value: {name:?}: must be a lowercase RFC 1123 name"),
                );
            }
        }
    }
    if let Some(ns) = meta.namespace.as_deref()
        && !ns.is_empty()
        && !common::is_dns1123_label(ns)
    {
        e.add(
            &path.key("namespace"),
            format!("Invalid value: {ns:?}: must be a lowercase RFC 1123 label"),
        );
    }
    if let Some(labels) = &meta.labels {
        e.labels(&path.key("labels"), labels);
    }
}
