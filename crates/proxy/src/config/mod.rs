//! Compilation of Envoy v3 resources into the proxy's domain types.
//!
//! Protos are wire types: they are checked once, when an xDS update arrives,
//! and turned into immutable structures that the data path reads without
//! locks or further validation. Every field that would change behaviour and
//! that the proxy does not implement is refused with a [`ConfigError`] naming
//! the resource and the field path, which becomes the NACK's error detail:
//! silently ignoring a field would make the proxy and Envoy diverge.

// Deprecated proto fields are still accepted by Envoy, so they are compiled
// here too (header matcher shorthands, `append`, `total_weight`...).
#![allow(deprecated)]

pub mod chain;
mod check;
pub mod cluster;
pub mod cluster_policy;
pub mod cors;
pub mod dns;
pub mod endpoint;
pub mod fault;
mod fields;
pub mod headers;
pub mod listener;
pub mod matcher;
pub mod retry;
pub mod route;
pub mod tcp_proxy;
pub mod tls;

use std::fmt;
use std::time::Duration;

use mizzen_xds::pb;

pub use chain::{ChainMatch, ChainSelector, Cidr};
pub use cluster::{ClusterConfig, Discovery, LbPolicy, UpstreamProtocol};
pub use endpoint::{EndpointSet, LbEndpointConfig, LocalityGroup};
pub use listener::{
    Codec, FilterChainConfig, HttpConfig, HttpFilters, ListenerConfig, ListenerFilters,
    NetworkFilter, RouteSource, TrafficDirection,
};
pub use route::{Action, RouteTable};
pub use tcp_proxy::{TcpClusters, TcpProxyConfig};

/// Why a resource was refused. Rendered as `<kind> <name>: <field>: <problem>`,
/// e.g. `listener 0.0.0.0_8080: filter envoy.filters.network.redis_proxy is not supported`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// `listener 0.0.0.0_8080`, `route_configuration 80`, `cluster outbound|80||b`...
    pub resource: String,
    /// Field path inside the resource, in proto field names.
    pub field: String,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The field is set but the proxy does not implement it.
    Unsupported,
    /// The field is required and missing.
    Missing,
    /// The field is set to a value that cannot work.
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            Problem::Unsupported => write!(f, "{}: {} is not supported", self.resource, self.field),
            Problem::Missing => write!(f, "{}: {} is required", self.resource, self.field),
            Problem::Invalid(reason) => write!(f, "{}: {}: {}", self.resource, self.field, reason),
        }
    }
}

/// Names the resource being compiled so that errors deep inside it can say
/// where they are without threading strings through every call.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    resource: String,
}

impl Scope {
    pub(crate) fn new(kind: &str, name: &str) -> Scope {
        Scope {
            resource: format!("{kind} {name}"),
        }
    }

    pub(crate) fn unsupported(&self, field: impl Into<String>) -> ConfigError {
        self.error(field, Problem::Unsupported)
    }

    pub(crate) fn missing(&self, field: impl Into<String>) -> ConfigError {
        self.error(field, Problem::Missing)
    }

    pub(crate) fn invalid(
        &self,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> ConfigError {
        self.error(field, Problem::Invalid(reason.into()))
    }

    fn error(&self, field: impl Into<String>, problem: Problem) -> ConfigError {
        ConfigError {
            resource: self.resource.clone(),
            field: field.into(),
            problem,
        }
    }
}

/// Joins a parent path and a child field name (`a.b`), skipping empty parents.
pub(crate) fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

/// Converts a proto Duration, refusing negative or out-of-range values.
pub(crate) fn duration(
    scope: &Scope,
    field: &str,
    d: &pb::google::protobuf::Duration,
) -> Result<Duration, ConfigError> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(scope.invalid(field, "negative or malformed duration"));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// Decodes an `Any` of an expected type, naming the field when it is not.
pub(crate) fn unpack<M: prost::Message + prost::Name + Default>(
    scope: &Scope,
    field: &str,
    any: &pb::google::protobuf::Any,
) -> Result<M, ConfigError> {
    let expected = M::type_url();
    if type_name(&any.type_url) != type_name(&expected) {
        return Err(scope.invalid(field, format!("expected {expected}, got {}", any.type_url)));
    }
    M::decode(any.value.as_slice()).map_err(|e| scope.invalid(field, format!("cannot decode: {e}")))
}

/// The fully-qualified message name of a type URL (after the last `/`).
pub(crate) fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}
