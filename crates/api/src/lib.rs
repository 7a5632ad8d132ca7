//! Mizzen's configuration API.
//!
//! Mizzen accepts Istio's YAML resources and behaves like Istio. This crate
//! holds the Rust types for those resources (with every field of Istio's
//! CRD schemas), the Kubernetes `Service` and `Secret` Mizzen also reads, and
//! Mizzen's own local `Workload` kind; it parses multi-document YAML into
//! them with precise, line-numbered errors, and validates them the way
//! Istio's CRD schemas and admission webhook do, so configuration Istio
//! would refuse is refused here too.
//!
//! Entry points: [`parse_documents`], [`parse_documents_lenient`],
//! [`parse_file`], [`validate`], the [`Resource`] enum, and the spec types in
//! [`networking`], [`security`], [`telemetry`] and [`extensions`].

mod duration;
mod error;
pub mod extensions;
pub mod networking;
mod object;
mod parse;
mod resource;
pub mod security;
mod serde_util;
pub mod telemetry;
pub mod type_v1beta1;
mod validate;
mod workload;
mod yaml;

pub use duration::{DurationError, parse_duration};
pub use error::{ConfigError, FieldPath, PathSegment};
pub use object::{DEFAULT_NAMESPACE, Object, ObjectMeta};
pub use parse::{
    ParseOptions, Parsed, SkippedDocument, parse_documents, parse_documents_lenient,
    parse_documents_with, parse_file, parse_file_lenient,
};
pub use resource::{Kind, Resource, ResourceKey};
pub use validate::validate;
pub use workload::{TLS_MODE_LABEL, Workload, WorkloadInstance};

/// Re-exported Kubernetes core types used by [`Resource`].
pub mod k8s {
    pub use k8s_openapi::api::core::v1::{Secret, Service, ServicePort, ServiceSpec};
}
