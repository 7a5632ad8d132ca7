//! Envoy xDS v3 for Mizzen: the wire contract between `mizzen-pilot` and its
//! proxies (mizzen-proxy or a real Envoy).
//!
//! The protobuf types come from `envoy-types` and are re-exported as [`pb`].
//! This crate adds what both ends of the Aggregated Discovery Service need and
//! nothing Istio-specific: the state-of-the-world ADS [`server`] (generic over
//! a [`server::Generator`] that the pilot implements), the ADS [`client`] the
//! proxy runs, conversion between JSON and `google.protobuf.Struct`
//! ([`structs`]), and rendering of resources in Envoy's JSON shape ([`json`]).

pub use envoy_types::pb;

pub mod client;
pub mod json;
pub mod server;
pub mod structs;

/// Type URLs of the resources served over ADS.
pub mod type_url {
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

    /// Order in which a push sends types, so that a proxy never sees a
    /// reference before its target: clusters, their endpoints, listeners,
    /// routes; then the secrets (credentials) that clusters and listeners
    /// name, which a proxy only asks for once it knows those.
    pub const PUSH_ORDER: [&str; 5] = [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET];

    /// Short name used in logs and debug output (`CDS`, `EDS`, ...).
    pub fn short_name(type_url: &str) -> &'static str {
        match type_url {
            LISTENER => "LDS",
            ROUTE => "RDS",
            CLUSTER => "CDS",
            ENDPOINT => "EDS",
            SECRET => "SDS",
            _ => "UNKNOWN",
        }
    }
}

/// Packs a message into `google.protobuf.Any` with its canonical type URL.
pub fn pack<T: prost::Message + prost::Name>(message: &T) -> pb::google::protobuf::Any {
    pb::google::protobuf::Any {
        type_url: T::type_url(),
        value: message.encode_to_vec(),
    }
}

/// Unpacks an `Any`, checking that it holds the expected type.
pub fn unpack<T: prost::Message + prost::Name + Default>(
    any: &pb::google::protobuf::Any,
) -> Result<T, String> {
    if any.type_url != T::type_url() {
        return Err(format!(
            "expected {} but got {}",
            T::type_url(),
            any.type_url
        ));
    }
    T::decode(any.value.as_slice()).map_err(|e| format!("cannot decode {}: {e}", T::full_name()))
}
