//! Every resource kind Mizzen reads, behind one enum.

use crate::extensions::WasmPlugin;
use crate::networking::{
    DestinationRule, EnvoyFilter, Gateway, ProxyConfig, ServiceEntry, Sidecar, VirtualService,
    WorkloadEntry, WorkloadGroup,
};
use crate::object::{Object, ObjectMeta, meta_namespace};
use crate::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use crate::telemetry::Telemetry;
use crate::workload::Workload;
use k8s_openapi::api::core::v1::{Secret, Service};
use std::fmt;

/// A resource kind Mizzen understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Gateway,
    VirtualService,
    DestinationRule,
    ServiceEntry,
    WorkloadEntry,
    WorkloadGroup,
    Sidecar,
    EnvoyFilter,
    ProxyConfig,
    PeerAuthentication,
    RequestAuthentication,
    AuthorizationPolicy,
    Telemetry,
    WasmPlugin,
    Service,
    Secret,
    Workload,
}

impl Kind {
    /// Every kind.
    pub const ALL: &'static [Kind] = &[
        Kind::Gateway,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::WorkloadGroup,
        Kind::Sidecar,
        Kind::EnvoyFilter,
        Kind::ProxyConfig,
        Kind::PeerAuthentication,
        Kind::RequestAuthentication,
        Kind::AuthorizationPolicy,
        Kind::Telemetry,
        Kind::WasmPlugin,
        Kind::Service,
        Kind::Secret,
        Kind::Workload,
    ];

    /// The `kind` field value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Gateway => "Gateway",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::WorkloadGroup => "WorkloadGroup",
            Kind::Sidecar => "Sidecar",
            Kind::EnvoyFilter => "EnvoyFilter",
            Kind::ProxyConfig => "ProxyConfig",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::Telemetry => "Telemetry",
            Kind::WasmPlugin => "WasmPlugin",
            Kind::Service => "Service",
            Kind::Secret => "Secret",
            Kind::Workload => "Workload",
        }
    }

    /// The kind named `name`, if Mizzen knows it.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.as_str() == name)
    }

    /// The API group (`""` for the Kubernetes core group).
    pub const fn group(self) -> &'static str {
        match self {
            Kind::Gateway
            | Kind::VirtualService
            | Kind::DestinationRule
            | Kind::ServiceEntry
            | Kind::WorkloadEntry
            | Kind::WorkloadGroup
            | Kind::Sidecar
            | Kind::EnvoyFilter
            | Kind::ProxyConfig => "networking.istio.io",
            Kind::PeerAuthentication | Kind::RequestAuthentication | Kind::AuthorizationPolicy => {
                "security.istio.io"
            }
            Kind::Telemetry => "telemetry.istio.io",
            Kind::WasmPlugin => "extensions.istio.io",
            Kind::Service | Kind::Secret => "",
            Kind::Workload => "mizzen.io",
        }
    }

    /// The versions served for this kind (as Istio's CRDs declare them).
    pub const fn versions(self) -> &'static [&'static str] {
        match self {
            Kind::Gateway
            | Kind::VirtualService
            | Kind::DestinationRule
            | Kind::ServiceEntry
            | Kind::WorkloadEntry
            | Kind::WorkloadGroup
            | Kind::Sidecar => &["v1", "v1beta1", "v1alpha3"],
            Kind::EnvoyFilter => &["v1alpha3"],
            Kind::ProxyConfig => &["v1beta1"],
            Kind::PeerAuthentication | Kind::RequestAuthentication | Kind::AuthorizationPolicy => {
                &["v1", "v1beta1"]
            }
            Kind::Telemetry => &["v1", "v1alpha1"],
            Kind::WasmPlugin => &["v1alpha1"],
            Kind::Service | Kind::Secret => &["v1"],
            Kind::Workload => &["v1alpha1"],
        }
    }

    /// Whether `api_version` (`group/version`, or `version` for the core
    /// group) is served for this kind.
    pub fn accepts_api_version(self, api_version: &str) -> bool {
        let (group, version) = match api_version.rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        group == self.group() && self.versions().contains(&version)
    }

    /// The `apiVersion` values accepted for this kind.
    pub fn api_versions(self) -> Vec<String> {
        self.versions()
            .iter()
            .map(|v| {
                if self.group().is_empty() {
                    (*v).to_string()
                } else {
                    format!("{}/{v}", self.group())
                }
            })
            .collect()
    }

    /// Istio's CRDs mark `spec` required for these kinds.
    pub(crate) const fn spec_required(self) -> bool {
        matches!(
            self,
            Kind::ServiceEntry
                | Kind::WorkloadEntry
                | Kind::WorkloadGroup
                | Kind::WasmPlugin
                | Kind::Workload
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies a resource: kind, namespace and name. Ordered, so collections
/// of resources can be kept in a stable order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Any resource Mizzen reads.
///
/// Variants hold their objects inline: configuration sets are small, and
/// matching on unboxed values keeps the code that consumes them simple.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Gateway(Object<Gateway>),
    VirtualService(Object<VirtualService>),
    DestinationRule(Object<DestinationRule>),
    ServiceEntry(Object<ServiceEntry>),
    WorkloadEntry(Object<WorkloadEntry>),
    WorkloadGroup(Object<WorkloadGroup>),
    Sidecar(Object<Sidecar>),
    EnvoyFilter(Object<EnvoyFilter>),
    ProxyConfig(Object<ProxyConfig>),
    PeerAuthentication(Object<PeerAuthentication>),
    RequestAuthentication(Object<RequestAuthentication>),
    AuthorizationPolicy(Object<AuthorizationPolicy>),
    Telemetry(Object<Telemetry>),
    WasmPlugin(Object<WasmPlugin>),
    /// A Kubernetes Service.
    Service(Service),
    /// A Kubernetes Secret (TLS credentials for gateways and DestinationRules).
    Secret(Secret),
    /// A workload of the local runtime.
    Workload(Object<Workload>),
}

impl Resource {
    /// The kind.
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Gateway(_) => Kind::Gateway,
            Resource::VirtualService(_) => Kind::VirtualService,
            Resource::DestinationRule(_) => Kind::DestinationRule,
            Resource::ServiceEntry(_) => Kind::ServiceEntry,
            Resource::WorkloadEntry(_) => Kind::WorkloadEntry,
            Resource::WorkloadGroup(_) => Kind::WorkloadGroup,
            Resource::Sidecar(_) => Kind::Sidecar,
            Resource::EnvoyFilter(_) => Kind::EnvoyFilter,
            Resource::ProxyConfig(_) => Kind::ProxyConfig,
            Resource::PeerAuthentication(_) => Kind::PeerAuthentication,
            Resource::RequestAuthentication(_) => Kind::RequestAuthentication,
            Resource::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Resource::Telemetry(_) => Kind::Telemetry,
            Resource::WasmPlugin(_) => Kind::WasmPlugin,
            Resource::Service(_) => Kind::Service,
            Resource::Secret(_) => Kind::Secret,
            Resource::Workload(_) => Kind::Workload,
        }
    }

    /// The Kubernetes metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Resource::Gateway(o) => &o.metadata,
            Resource::VirtualService(o) => &o.metadata,
            Resource::DestinationRule(o) => &o.metadata,
            Resource::ServiceEntry(o) => &o.metadata,
            Resource::WorkloadEntry(o) => &o.metadata,
            Resource::WorkloadGroup(o) => &o.metadata,
            Resource::Sidecar(o) => &o.metadata,
            Resource::EnvoyFilter(o) => &o.metadata,
            Resource::ProxyConfig(o) => &o.metadata,
            Resource::PeerAuthentication(o) => &o.metadata,
            Resource::RequestAuthentication(o) => &o.metadata,
            Resource::AuthorizationPolicy(o) => &o.metadata,
            Resource::Telemetry(o) => &o.metadata,
            Resource::WasmPlugin(o) => &o.metadata,
            Resource::Service(s) => &s.metadata,
            Resource::Secret(s) => &s.metadata,
            Resource::Workload(o) => &o.metadata,
        }
    }

    /// `metadata.name` (`""` when absent).
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }

    /// `metadata.namespace`, defaulting to `default`.
    pub fn namespace(&self) -> &str {
        meta_namespace(self.metadata())
    }

    /// `metadata.labels` (empty when absent).
    pub fn labels(&self) -> &std::collections::BTreeMap<String, String> {
        crate::object::meta_labels(self.metadata())
    }

    /// The key identifying this resource.
    pub fn key(&self) -> ResourceKey {
        ResourceKey {
            kind: self.kind(),
            namespace: self.namespace().to_string(),
            name: self.name().to_string(),
        }
    }
}
