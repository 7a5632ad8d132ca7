//! Listeners (LDS) of sidecars.

use mizzen_xds::pb::envoy::config::core::v3::{Http1ProtocolOptions, TrafficDirection};
use mizzen_xds::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use mizzen_xds::pb::envoy::config::route::v3::RouteConfiguration;
use mizzen_xds::pb::envoy::extensions::filters::http::router::v3::Router;
use mizzen_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::CodecType,
    http_connection_manager::RouteSpecifier, http_filter,
};
use mizzen_xds::server::Resource;

use super::cluster::{inbound_ports, socket_address};
use super::{HTTP_PROXY_ROUTE, OUTBOUND_PORT, ads_config_source, resource, route};
use crate::model::Model;
use crate::node::ProxyNode;

const HCM: &str = "envoy.filters.network.http_connection_manager";
const ROUTER: &str = "envoy.filters.http.router";

/// Where a listener's HTTP connection manager gets its routes.
pub enum Routes {
    Rds(String),
    Inline(RouteConfiguration),
}

pub fn http_connection_manager(
    stat_prefix: String,
    routes: Routes,
    explicit_proxy: bool,
) -> Filter {
    let route_specifier = match routes {
        Routes::Rds(name) => RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: name,
        }),
        Routes::Inline(config) => RouteSpecifier::RouteConfig(config),
    };
    let hcm = HttpConnectionManager {
        stat_prefix,
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(route_specifier),
        http_filters: vec![HttpFilter {
            name: ROUTER.to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(mizzen_xds::pack(
                &Router::default(),
            ))),
            ..Default::default()
        }],
        http_protocol_options: explicit_proxy.then(|| Http1ProtocolOptions {
            allow_absolute_url: Some(mizzen_xds::pb::google::protobuf::BoolValue { value: true }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Filter {
        name: HCM.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(mizzen_xds::pack(&hcm))),
    }
}

pub fn listener(
    name: String,
    address: std::net::IpAddr,
    port: u16,
    direction: TrafficDirection,
    filter: Filter,
) -> Resource {
    let listener = Listener {
        name: name.clone(),
        address: Some(socket_address(address, port)),
        filter_chains: vec![FilterChain {
            filters: vec![filter],
            ..Default::default()
        }],
        traffic_direction: direction as i32,
        ..Default::default()
    };
    resource(name, &listener)
}

/// A sidecar's listeners: one inbound listener per workload port that
/// services send to, and the outbound listener its app sends through.
pub fn sidecar_listeners(model: &Model, proxy: &ProxyNode) -> Vec<Resource> {
    let mut out = Vec::new();
    for port in inbound_ports(model, proxy).into_keys() {
        let routes = Routes::Inline(route::inbound_route_config(port));
        out.push(listener(
            format!("{}_{port}", proxy.ip),
            proxy.ip,
            port,
            TrafficDirection::Inbound,
            http_connection_manager(format!("inbound_0.0.0.0_{port}"), routes, false),
        ));
    }
    out.push(listener(
        format!("{}_{OUTBOUND_PORT}", proxy.ip),
        proxy.ip,
        OUTBOUND_PORT,
        TrafficDirection::Outbound,
        http_connection_manager(
            format!("outbound_0.0.0.0_{OUTBOUND_PORT}"),
            Routes::Rds(HTTP_PROXY_ROUTE.to_string()),
            true,
        ),
    ));
    out
}
