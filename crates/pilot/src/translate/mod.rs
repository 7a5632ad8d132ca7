//! Translation of the mesh model into each proxy's Envoy configuration,
//! named as Istio names it so that Istio tooling and habits carry over:
//! clusters `outbound|PORT|SUBSET|HOST` and `inbound|PORT||`, outbound route
//! configurations named by port (`80`), `http_proxy` for an explicit-proxy
//! listener, `http.PORT` on gateways.

mod cluster;
mod gateway;
mod gateway_tls;
mod listener;
mod locality;
mod mtls;
mod policy;
mod route;
mod secret;
mod service_entry;

use mizzen_xds::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, config_source::ConfigSourceSpecifier,
};
use mizzen_xds::server::Resource;
use mizzen_xds::type_url;

use crate::model::Model;
use crate::node::{ProxyKind, ProxyNode};

pub use cluster::{inbound_cluster_name, outbound_cluster_name};
pub use gateway::host_covers;

/// Envoy's listener port for outbound traffic (explicit proxy in the loopback
/// runtime, the iptables target in pods).
pub const OUTBOUND_PORT: u16 = 15001;
/// Route configuration of an explicit HTTP proxy listener, as Istio names it.
pub const HTTP_PROXY_ROUTE: &str = "http_proxy";

/// The resources of one type for `proxy`; `names` narrows RDS and EDS.
pub fn generate(
    model: &Model,
    proxy: &ProxyNode,
    type_url: &str,
    names: &[String],
) -> Vec<Resource> {
    let all = match type_url {
        type_url::CLUSTER => cluster::clusters(model, proxy),
        type_url::ENDPOINT => cluster::load_assignments(model, proxy, names),
        type_url::LISTENER => match proxy.kind {
            ProxyKind::Sidecar => listener::sidecar_listeners(model, proxy),
            ProxyKind::Router => gateway::listeners(model, proxy),
        },
        type_url::ROUTE => match proxy.kind {
            ProxyKind::Sidecar => route::sidecar_routes(model, proxy, names),
            ProxyKind::Router => gateway::routes(model, proxy, names),
        },
        type_url::SECRET => secret::secrets(model, proxy, names),
        _ => Vec::new(),
    };
    if names.is_empty() || matches!(type_url, type_url::ENDPOINT) {
        return all;
    }
    all.into_iter()
        .filter(|r| names.contains(&r.name))
        .collect()
}

/// Everything `proxy` would be sent, in Envoy's config_dump JSON shape.
pub fn dump(model: &Model, proxy: &ProxyNode) -> serde_json::Value {
    use mizzen_xds::json;
    use mizzen_xds::pb::envoy::config;
    let decode = |type_url: &str, names: &[String]| generate(model, proxy, type_url, names);
    let clusters = decode(type_url::CLUSTER, &[]);
    // Only EDS clusters have endpoints to ask for.
    let cluster_names: Vec<String> = clusters
        .iter()
        .filter(|c| {
            use config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
            mizzen_xds::unpack::<config::cluster::v3::Cluster>(&c.body).is_ok_and(|c| {
                c.cluster_discovery_type
                    == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
            })
        })
        .map(|c| c.name.clone())
        .collect();
    let listeners = decode(type_url::LISTENER, &[]);
    let routes = decode(type_url::ROUTE, &route_names(&listeners));
    let endpoints = decode(type_url::ENDPOINT, &cluster_names);
    let render = |resources: &[Resource], f: &dyn Fn(&Resource) -> serde_json::Value| {
        resources.iter().map(f).collect::<Vec<_>>()
    };
    serde_json::json!({
        "configs": [
            {
                "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                "dynamic_active_clusters": render(&clusters, &|r| serde_json::json!({
                    "cluster": mizzen_xds::unpack::<config::cluster::v3::Cluster>(&r.body).map(|c| json::cluster(&c)).unwrap_or_default()
                })),
            },
            {
                "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
                "dynamic_listeners": render(&listeners, &|r| serde_json::json!({
                    "name": r.name,
                    "active_state": {"listener": mizzen_xds::unpack::<config::listener::v3::Listener>(&r.body).map(|l| json::listener(&l)).unwrap_or_default()}
                })),
            },
            {
                "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
                "dynamic_route_configs": render(&routes, &|r| serde_json::json!({
                    "route_config": mizzen_xds::unpack::<config::route::v3::RouteConfiguration>(&r.body).map(|c| json::route_configuration(&c)).unwrap_or_default()
                })),
            },
            {
                "@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
                "dynamic_endpoint_configs": render(&endpoints, &|r| serde_json::json!({
                    "endpoint_config": mizzen_xds::unpack::<config::endpoint::v3::ClusterLoadAssignment>(&r.body).map(|c| json::cluster_load_assignment(&c)).unwrap_or_default()
                })),
            },
        ]
    })
}

/// The route configurations that listeners fetch over RDS.
fn route_names(listeners: &[Resource]) -> Vec<String> {
    use mizzen_xds::pb::envoy::config::listener::v3::{Listener, filter};
    use mizzen_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, http_connection_manager::RouteSpecifier,
    };
    let mut names: Vec<String> = listeners
        .iter()
        .filter_map(|r| mizzen_xds::unpack::<Listener>(&r.body).ok())
        .flat_map(|l| l.filter_chains)
        .flat_map(|c| c.filters)
        .filter_map(|f| match f.config_type {
            Some(filter::ConfigType::TypedConfig(any)) => {
                mizzen_xds::unpack::<HttpConnectionManager>(&any).ok()
            }
            _ => None,
        })
        .filter_map(|hcm| match hcm.route_specifier {
            Some(RouteSpecifier::Rds(rds)) => Some(rds.route_config_name),
            _ => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `{ads: {}, resource_api_version: V3}`: fetch over the same ADS stream.
fn ads_config_source() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn duration(d: std::time::Duration) -> mizzen_xds::pb::google::protobuf::Duration {
    mizzen_xds::pb::google::protobuf::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn resource<T: prost::Message + prost::Name>(name: impl Into<String>, message: &T) -> Resource {
    Resource {
        name: name.into(),
        body: mizzen_xds::pack(message),
    }
}
