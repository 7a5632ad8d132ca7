//! Listeners (LDS) of sidecars.

use mizzen_xds::pb::envoy::config::core::v3::{Http1ProtocolOptions, TrafficDirection};
use std::net::IpAddr;

use mizzen_xds::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use mizzen_xds::pb::envoy::config::route::v3::RouteConfiguration;
use mizzen_xds::pb::envoy::extensions::filters::http::cors::v3::Cors;
use mizzen_xds::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use mizzen_xds::pb::envoy::extensions::filters::http::router::v3::Router;
use mizzen_xds::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use mizzen_xds::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use mizzen_xds::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use mizzen_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager,
    http_connection_manager::CodecType, http_connection_manager::RouteSpecifier, http_filter,
};
use mizzen_xds::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use mizzen_xds::pb::google::protobuf::{BoolValue, UInt32Value};
use mizzen_xds::server::Resource;

use super::cluster::{
    BLACK_HOLE_CLUSTER, INBOUND_PASSTHROUGH_CLUSTER, PASSTHROUGH_CLUSTER, inbound_ports,
    socket_address,
};
use super::{HTTP_PROXY_ROUTE, OUTBOUND_PORT, ads_config_source, mtls, resource, route};
use super::{inbound_cluster_name, outbound_cluster_name};
use crate::model::{Model, OutboundPolicy, Protocol};
use crate::node::{InterceptionMode, ProxyNode};
use crate::peer::PeerMode;

const HCM: &str = "envoy.filters.network.http_connection_manager";
const ROUTER: &str = "envoy.filters.http.router";

/// Where a listener's HTTP connection manager gets its routes.
pub enum Routes {
    Rds(String),
    Inline(Box<RouteConfiguration>),
}

/// The optional HTTP filters a connection manager carries, in Istio's order
/// (CORS, then fault, then the router).
#[derive(Debug, Clone, Copy, Default)]
pub struct HcmFilters {
    pub cors: bool,
    pub fault: bool,
}

impl HcmFilters {
    /// The filters some VirtualService in the model needs.
    pub fn of(model: &crate::model::Model) -> HcmFilters {
        HcmFilters {
            cors: model.cors,
            fault: model.fault_injection,
        }
    }
}

pub fn http_connection_manager(
    stat_prefix: String,
    routes: Routes,
    explicit_proxy: bool,
    filters: HcmFilters,
) -> Filter {
    hcm_filter(&hcm_config(stat_prefix, routes, explicit_proxy, filters))
}

/// The connection manager's config, for callers that set more fields.
fn hcm_config(
    stat_prefix: String,
    routes: Routes,
    explicit_proxy: bool,
    filters: HcmFilters,
) -> HttpConnectionManager {
    let route_specifier = match routes {
        Routes::Rds(name) => RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: name,
        }),
        Routes::Inline(config) => RouteSpecifier::RouteConfig(*config),
    };
    HttpConnectionManager {
        stat_prefix,
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(route_specifier),
        http_filters: filters
            .cors
            .then(|| HttpFilter {
                name: route::CORS_FILTER.to_string(),
                config_type: Some(http_filter::ConfigType::TypedConfig(mizzen_xds::pack(
                    &Cors::default(),
                ))),
                ..Default::default()
            })
            .into_iter()
            .chain(filters.fault.then(|| HttpFilter {
                name: route::FAULT_FILTER.to_string(),
                config_type: Some(http_filter::ConfigType::TypedConfig(mizzen_xds::pack(
                    &HttpFault::default(),
                ))),
                ..Default::default()
            }))
            .chain([HttpFilter {
                name: ROUTER.to_string(),
                config_type: Some(http_filter::ConfigType::TypedConfig(mizzen_xds::pack(
                    &Router::default(),
                ))),
                ..Default::default()
            }])
            .collect(),
        // Istio lets WebSocket upgrades through on every connection manager.
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".to_string(),
            ..Default::default()
        }],
        http_protocol_options: explicit_proxy.then(|| Http1ProtocolOptions {
            allow_absolute_url: Some(mizzen_xds::pb::google::protobuf::BoolValue { value: true }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn hcm_filter(hcm: &HttpConnectionManager) -> Filter {
    Filter {
        name: HCM.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(mizzen_xds::pack(hcm))),
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

/// A sidecar's listeners, by how traffic reaches it.
pub fn sidecar_listeners(model: &Model, proxy: &ProxyNode) -> Vec<Resource> {
    match proxy.interception {
        InterceptionMode::None => explicit_listeners(model, proxy),
        InterceptionMode::Redirect => captured_listeners(model, proxy),
    }
}

/// Without capture: one inbound listener per workload port that services
/// send to, bound on the workload's address, and the outbound listener its
/// app uses as an explicit HTTP proxy.
fn explicit_listeners(model: &Model, proxy: &ProxyNode) -> Vec<Resource> {
    let mut out = Vec::new();
    let peer = model.peer_policy(proxy);
    let inbound = inbound_ports(model, proxy);
    for (&port, &protocol) in &inbound {
        let name = format!("{}_{port}", proxy.ip);
        let mode = model.mtls.then(|| peer.for_port(port));
        let chains = inbound_chains(model, port, protocol, mode, None);
        let listener = Listener {
            name: name.clone(),
            address: Some(socket_address(proxy.ip, port)),
            listener_filters: tls_inspector_filters(mode.is_some_and(|m| m != PeerMode::Disable)),
            filter_chains: chains,
            traffic_direction: TrafficDirection::Inbound as i32,
            ..Default::default()
        };
        out.push(resource(name, &listener));
    }
    // TCP services have no explicit-proxy protocol: each port gets a listener
    // of its own on the proxy's address (as a Sidecar egress `bind` would),
    // unless the port is taken.
    let mut taken: std::collections::BTreeSet<u16> = inbound.into_keys().collect();
    taken.insert(OUTBOUND_PORT);
    for service in model.visible_services(proxy) {
        for port in service.ports.iter().filter(|p| !p.protocol.is_http()) {
            if !taken.insert(port.port) {
                continue;
            }
            let name = format!("{}_{}", proxy.ip, port.port);
            let (chains, tls) = service_l4_chains(model, service, port, proxy, &name, "");
            let listener = Listener {
                name: name.clone(),
                address: Some(socket_address(proxy.ip, port.port)),
                filter_chains: chains,
                listener_filters: tls_inspector_filters(tls),
                traffic_direction: TrafficDirection::Outbound as i32,
                ..Default::default()
            };
            out.push(resource(name, &listener));
        }
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
            HcmFilters::of(model),
        ),
    ));
    out
}

/// Istio's inbound capture port.
pub const INBOUND_PORT: u16 = 15006;
const HTTP_INSPECTOR: &str = "envoy.filters.listener.http_inspector";
const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
const ORIGINAL_DST: &str = "envoy.filters.listener.original_dst";
const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
/// How long protocol sniffing waits for the client to speak before treating
/// the connection as TCP (server-first protocols such as MySQL).
const SNIFF_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);
/// ALPN-like names the HTTP inspector reports.
const HTTP_PROTOCOLS: [&str; 2] = ["http/1.1", "h2c"];

pub(super) fn tcp_proxy(stat_prefix: &str, cluster: &str) -> Filter {
    let proxy = TcpProxy {
        stat_prefix: stat_prefix.to_string(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_string())),
        ..Default::default()
    };
    Filter {
        name: TCP_PROXY.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(mizzen_xds::pack(&proxy))),
    }
}

/// The TCP proxy of a service port: the first VirtualService `tcp` route
/// whose match fits the port and the client, else the service itself.
fn service_tcp_proxy(
    model: &Model,
    service: &crate::model::Service,
    port: u16,
    proxy: &ProxyNode,
) -> Filter {
    let cluster = outbound_cluster_name(port, "", &service.hostname);
    let route = model
        .virtual_service_for(&service.hostname, &proxy.namespace, "mesh")
        .and_then(|vs| {
            vs.spec
                .tcp
                .iter()
                .find(|route| {
                    route.r#match.is_empty()
                        || route.r#match.iter().any(|m| {
                            m.port.is_none_or(|p| p == u32::from(port))
                                && crate::model::labels_match(&m.source_labels, &proxy.labels)
                                && m.source_namespace
                                    .as_ref()
                                    .is_none_or(|ns| *ns == proxy.namespace)
                                && (m.gateways.is_empty() || m.gateways.iter().any(|g| g == "mesh"))
                        })
                })
                .map(|route| (vs, route))
        });
    let Some((vs, route)) = route else {
        return tcp_proxy(&cluster, &cluster);
    };
    destinations_proxy(model, &vs.namespace, &route.route, port, cluster)
}

/// A TCP proxy to a route's (weighted) destinations; `cluster` (the
/// service's own) names the stats and is the target when there are none.
pub(super) fn destinations_proxy(
    model: &Model,
    namespace: &str,
    destinations: &[mizzen_api::networking::RouteDestination],
    port: u16,
    cluster: String,
) -> Filter {
    let mut clusters: Vec<(String, u32)> = destinations
        .iter()
        .map(|destination| {
            let (host, dest_port) = model.destination(&destination.destination, namespace, port);
            let subset = destination
                .destination
                .subset
                .as_deref()
                .unwrap_or_default();
            (
                outbound_cluster_name(dest_port, subset, &host),
                destination.weight.unwrap_or(0).max(0) as u32,
            )
        })
        .collect();
    let specifier = match clusters.len() {
        0 => tcp_proxy::ClusterSpecifier::Cluster(cluster.clone()),
        1 => tcp_proxy::ClusterSpecifier::Cluster(clusters.remove(0).0),
        _ => {
            if clusters.iter().all(|(_, w)| *w == 0) {
                clusters.iter_mut().for_each(|(_, w)| *w = 1);
            }
            tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
                clusters: clusters
                    .into_iter()
                    .filter(|(_, w)| *w > 0)
                    .map(
                        |(name, weight)| tcp_proxy::weighted_cluster::ClusterWeight {
                            name,
                            weight,
                            ..Default::default()
                        },
                    )
                    .collect(),
            })
        }
    };
    let proxy_config = TcpProxy {
        stat_prefix: cluster,
        cluster_specifier: Some(specifier),
        ..Default::default()
    };
    Filter {
        name: TCP_PROXY.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(mizzen_xds::pack(
            &proxy_config,
        ))),
    }
}

/// The filter chains of a TLS, HTTPS or TCP service port, as Istio builds
/// them: one chain per VirtualService `tls` match that fits the port and the
/// client (its `sniHosts` as `server_names`) to the route's destinations,
/// then the chain of the service itself (or of its `tcp` routes). The flag
/// says whether the chains need the TLS inspector.
fn service_l4_chains(
    model: &Model,
    service: &crate::model::Service,
    port: &crate::model::ServicePort,
    proxy: &ProxyNode,
    name: &str,
    default_name: &str,
) -> (Vec<FilterChain>, bool) {
    let cluster = outbound_cluster_name(port.port, "", &service.hostname);
    let mut chains = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut catch_all = false;
    if let Some(vs) = model.virtual_service_for(&service.hostname, &proxy.namespace, "mesh") {
        for (i, route) in vs.spec.tls.iter().enumerate() {
            for (j, m) in route.r#match.iter().enumerate() {
                let fits = m.port.is_none_or(|p| p == u32::from(port.port))
                    && crate::model::labels_match(&m.source_labels, &proxy.labels)
                    && m.source_namespace
                        .as_ref()
                        .is_none_or(|ns| *ns == proxy.namespace)
                    && (m.gateways.is_empty() || m.gateways.iter().any(|g| g == "mesh"));
                if !fits || catch_all {
                    continue;
                }
                // A name an earlier match took stays with it (Envoy refuses
                // two chains with the same rules); `*` matches every name.
                let names: Vec<String> =
                    m.sni_hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
                let server_names: Vec<String> = if names.iter().any(|h| h == "*") {
                    catch_all = true;
                    Vec::new()
                } else {
                    let fresh: Vec<String> = names
                        .into_iter()
                        .filter(|h| seen.insert(h.clone()))
                        .collect();
                    if fresh.is_empty() {
                        continue;
                    }
                    fresh
                };
                chains.push(chain(
                    format!("{name}-tls-{i}-{j}"),
                    (!server_names.is_empty()).then(|| FilterChainMatch {
                        server_names,
                        ..Default::default()
                    }),
                    destinations_proxy(
                        model,
                        &vs.namespace,
                        &route.route,
                        port.port,
                        cluster.clone(),
                    ),
                ));
            }
        }
    }
    let tls = !chains.is_empty() || matches!(port.protocol, Protocol::Tls | Protocol::Https);
    if !catch_all {
        chains.push(chain(
            default_name.to_string(),
            None,
            service_tcp_proxy(model, service, port.port, proxy),
        ));
    }
    (chains, tls)
}

/// The chains of a `0.0.0.0_PORT` listener for services without a virtual
/// IP: TLS hosts by SNI, the first TCP service for the rest, else the
/// outbound policy's fallthrough (passthrough, or closed under
/// REGISTRY_ONLY). The flag says whether the TLS inspector is needed.
fn wildcard_l4_chains(
    name: &str,
    services: &[(&crate::model::Service, &crate::model::ServicePort)],
    fallback: &str,
) -> (Vec<FilterChain>, bool) {
    let mut chains = Vec::new();
    let mut catch_all = None;
    let mut seen = std::collections::BTreeSet::new();
    for (service, port) in services {
        let cluster = outbound_cluster_name(port.port, "", &service.hostname);
        if matches!(port.protocol, Protocol::Tls | Protocol::Https) {
            if seen.insert(service.hostname.clone()) {
                chains.push(chain(
                    format!("{name}-{}", service.hostname),
                    Some(FilterChainMatch {
                        server_names: vec![service.hostname.clone()],
                        ..Default::default()
                    }),
                    tcp_proxy(&cluster, &cluster),
                ));
            }
        } else if catch_all.is_none() {
            catch_all = Some(chain(name.to_string(), None, tcp_proxy(&cluster, &cluster)));
        }
    }
    let tls = !chains.is_empty();
    chains.push(catch_all.unwrap_or_else(|| {
        chain(
            format!("{name}-fallthrough"),
            None,
            tcp_proxy(fallback, fallback),
        )
    }));
    (chains, tls)
}

/// The TLS inspector, when the chains look at server names.
pub(super) fn tls_inspector_filters(tls: bool) -> Vec<ListenerFilter> {
    if tls {
        vec![listener_filter(
            TLS_INSPECTOR,
            mizzen_xds::pack(&TlsInspector::default()),
        )]
    } else {
        Vec::new()
    }
}

fn listener_filter(name: &str, config: mizzen_xds::pb::google::protobuf::Any) -> ListenerFilter {
    ListenerFilter {
        name: name.to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

pub(super) fn chain(
    name: String,
    matcher: Option<FilterChainMatch>,
    filter: Filter,
) -> FilterChain {
    FilterChain {
        name,
        filter_chain_match: matcher,
        filters: vec![filter],
        ..Default::default()
    }
}

fn http_protocols() -> FilterChainMatch {
    FilterChainMatch {
        application_protocols: HTTP_PROTOCOLS.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

/// A listener that only receives connections handed over by the 15001 or
/// 15006 listener (Envoy's `bind_to_port: false`).
fn virtual_listener(
    name: String,
    address: IpAddr,
    port: u16,
    chains: Vec<FilterChain>,
    sniff: bool,
    tls: bool,
) -> Resource {
    let listener = Listener {
        name: name.clone(),
        address: Some(socket_address(address, port)),
        filter_chains: chains,
        bind_to_port: Some(BoolValue { value: false }),
        traffic_direction: TrafficDirection::Outbound as i32,
        listener_filters: if sniff {
            vec![listener_filter(
                HTTP_INSPECTOR,
                mizzen_xds::pack(&HttpInspector::default()),
            )]
        } else {
            tls_inspector_filters(tls)
        },
        listener_filters_timeout: sniff.then(|| super::duration(SNIFF_TIMEOUT)),
        continue_on_listener_filters_timeout: sniff,
        ..Default::default()
    };
    resource(name, &listener)
}

/// With iptables capture, as Istio builds them: `virtualOutbound` on 15001
/// hands each connection to the listener of its original destination
/// (`0.0.0.0_PORT` for HTTP ports, `VIP_PORT` for TCP and sniffed ports) or
/// passes it through; `virtualInbound` on 15006 picks a filter chain by the
/// original destination port.
fn captured_listeners(model: &Model, proxy: &ProxyNode) -> Vec<Resource> {
    let any = IpAddr::from([0, 0, 0, 0]);
    let policy = model.outbound_policy(&proxy.namespace, &proxy.labels);
    let fallback = match policy {
        OutboundPolicy::AllowAny => PASSTHROUGH_CLUSTER,
        OutboundPolicy::RegistryOnly => BLACK_HOLE_CLUSTER,
    };
    let mut out = Vec::new();
    let outbound = Listener {
        name: "virtualOutbound".to_string(),
        address: Some(socket_address(any, OUTBOUND_PORT)),
        use_original_dst: Some(BoolValue { value: true }),
        filter_chains: vec![
            // A connection to 15001 itself would loop through the proxy.
            chain(
                "virtualOutbound-blackhole".to_string(),
                Some(FilterChainMatch {
                    destination_port: Some(UInt32Value {
                        value: u32::from(OUTBOUND_PORT),
                    }),
                    ..Default::default()
                }),
                tcp_proxy(BLACK_HOLE_CLUSTER, BLACK_HOLE_CLUSTER),
            ),
            chain(
                "virtualOutbound-catchall-tcp".to_string(),
                None,
                tcp_proxy(fallback, fallback),
            ),
        ],
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    };
    out.push(resource("virtualOutbound", &outbound));

    let mut http_ports = std::collections::BTreeSet::new();
    // Non-HTTP ports of services without a virtual IP (wildcard or
    // `resolution: NONE` ServiceEntry hosts) share a `0.0.0.0_PORT` listener.
    let mut wildcard_l4: std::collections::BTreeMap<u16, Vec<_>> = Default::default();
    let mut names = std::collections::BTreeSet::new();
    for service in model.visible_services(proxy) {
        let Some(vip) = service.address else {
            for port in service.ports.iter() {
                if port.protocol.is_http() {
                    http_ports.insert(port.port);
                } else {
                    wildcard_l4
                        .entry(port.port)
                        .or_default()
                        .push((service, port));
                }
            }
            continue;
        };
        for port in &service.ports {
            let cluster = outbound_cluster_name(port.port, "", &service.hostname);
            let stat_prefix = cluster.clone();
            let name = format!("{vip}_{}", port.port);
            if !names.insert(name.clone()) {
                continue;
            }
            match port.protocol {
                p if p.is_http() => {
                    http_ports.insert(port.port);
                }
                Protocol::Unspecified => {
                    let chains = vec![
                        chain(
                            format!("{name}-http"),
                            Some(http_protocols()),
                            http_connection_manager(
                                format!("outbound_{vip}_{}", port.port),
                                Routes::Rds(port.port.to_string()),
                                false,
                                HcmFilters::of(model),
                            ),
                        ),
                        chain(
                            format!("{name}-tcp"),
                            None,
                            tcp_proxy(&stat_prefix, &cluster),
                        ),
                    ];
                    out.push(virtual_listener(name, vip, port.port, chains, true, false));
                }
                _ => {
                    let (chains, tls) =
                        service_l4_chains(model, service, port, proxy, &name, &name);
                    out.push(virtual_listener(name, vip, port.port, chains, false, tls));
                }
            }
        }
    }
    for &port in &http_ports {
        let name = format!("0.0.0.0_{port}");
        let chains = vec![chain(
            name.clone(),
            None,
            http_connection_manager(
                format!("outbound_0.0.0.0_{port}"),
                Routes::Rds(port.to_string()),
                false,
                HcmFilters::of(model),
            ),
        )];
        out.push(virtual_listener(name, any, port, chains, false, false));
    }
    for (port, services) in wildcard_l4 {
        if http_ports.contains(&port) {
            continue;
        }
        let name = format!("0.0.0.0_{port}");
        let (chains, tls) = wildcard_l4_chains(&name, &services, fallback);
        out.push(virtual_listener(name, any, port, chains, false, tls));
    }

    let mut chains = Vec::new();
    let peer = model.peer_policy(proxy);
    let mut tls = false;
    for (port, protocol) in inbound_ports(model, proxy) {
        let mode = model.mtls.then(|| peer.for_port(port));
        tls |= mode.is_some_and(|m| m != PeerMode::Disable);
        chains.extend(inbound_chains(model, port, protocol, mode, Some(port)));
    }
    chains.push(chain(
        "virtualInbound-blackhole".to_string(),
        Some(FilterChainMatch {
            destination_port: Some(UInt32Value {
                value: u32::from(INBOUND_PORT),
            }),
            ..Default::default()
        }),
        tcp_proxy(BLACK_HOLE_CLUSTER, BLACK_HOLE_CLUSTER),
    ));
    chains.push(chain(
        "InboundPassthroughFilterChain".to_string(),
        None,
        tcp_proxy(INBOUND_PASSTHROUGH_CLUSTER, INBOUND_PASSTHROUGH_CLUSTER),
    ));
    let inbound = Listener {
        name: "virtualInbound".to_string(),
        address: Some(socket_address(any, INBOUND_PORT)),
        listener_filters: [listener_filter(
            ORIGINAL_DST,
            mizzen_xds::pack(&OriginalDst::default()),
        )]
        .into_iter()
        .chain(tls_inspector_filters(tls))
        .chain([listener_filter(
            HTTP_INSPECTOR,
            mizzen_xds::pack(&HttpInspector::default()),
        )])
        .collect(),
        listener_filters_timeout: Some(super::duration(SNIFF_TIMEOUT)),
        continue_on_listener_filters_timeout: true,
        filter_chains: chains,
        traffic_direction: TrafficDirection::Inbound as i32,
        ..Default::default()
    };
    out.push(resource("virtualInbound", &inbound));
    out
}

/// The filter chains of one inbound port: plaintext only without mTLS
/// (`mode` None: the mesh runs no mTLS) or under DISABLE; mutual TLS only
/// under STRICT, so that plaintext finds no chain and is closed; both under
/// PERMISSIVE, told apart by the TLS inspector and the mesh's ALPN values
/// (other TLS is passed to the app as it is). `on_port` adds a destination
/// port match (the chains of `virtualInbound`).
fn inbound_chains(
    model: &Model,
    port: u16,
    protocol: Protocol,
    mode: Option<PeerMode>,
    on_port: Option<u16>,
) -> Vec<FilterChain> {
    let cluster = inbound_cluster_name(port);
    let name = format!("0.0.0.0_{port}");
    let matching = |transport: &str, alpn: &[&str]| -> Option<FilterChainMatch> {
        let m = FilterChainMatch {
            destination_port: on_port.map(|p| UInt32Value {
                value: u32::from(p),
            }),
            transport_protocol: transport.to_string(),
            application_protocols: alpn.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        };
        (m != FilterChainMatch::default()).then_some(m)
    };
    let hcm = || {
        inbound_http_connection_manager(
            format!("inbound_0.0.0.0_{port}"),
            port,
            HcmFilters::of(model),
            mode.is_some(),
        )
    };
    let tcp = || tcp_proxy(&cluster, &cluster);
    let secured = |mut chain: FilterChain| {
        chain.transport_socket = Some(mtls::inbound_mtls());
        chain
    };

    let mut out = Vec::new();
    let mtls = mode.filter(|m| *m != PeerMode::Disable);
    if let Some(mode) = mtls {
        // Under STRICT any TLS gets the mTLS chain (and fails without a
        // mesh certificate); under PERMISSIVE only a mesh client's offer.
        let mesh: &[&str] = if mode == PeerMode::Strict {
            &[]
        } else {
            &mtls::MESH_ALPNS
        };
        match protocol {
            p if p.is_http() => {
                out.push(secured(chain(name.clone(), matching("tls", mesh), hcm())));
            }
            Protocol::Unspecified => {
                // After decryption nothing can be sniffed: the client's
                // ALPN says whether it speaks HTTP.
                out.push(secured(chain(
                    format!("{name}-http"),
                    matching("tls", &mtls::MESH_HTTP_ALPNS),
                    hcm(),
                )));
                out.push(secured(chain(
                    format!("{name}-tcp"),
                    matching("tls", &mtls::MESH_TCP_ALPNS),
                    tcp(),
                )));
            }
            _ => out.push(secured(chain(name.clone(), matching("tls", mesh), tcp()))),
        }
        if mode == PeerMode::Strict {
            return out;
        }
        out.push(chain(
            format!("{name}-passthrough-tls"),
            matching("tls", &[]),
            tcp(),
        ));
    }
    match protocol {
        p if p.is_http() => out.push(chain(name, matching("", &[]), hcm())),
        Protocol::Unspecified => {
            out.push(chain(
                format!("{name}-http"),
                matching("", &HTTP_PROTOCOLS),
                hcm(),
            ));
            out.push(chain(format!("{name}-tcp"), matching("", &[]), tcp()));
        }
        _ => out.push(chain(name, matching("", &[]), tcp())),
    }
    out
}

/// The connection manager of an inbound port. With mTLS, it passes the
/// caller's identity to the app in `x-forwarded-client-cert` as Istio's
/// sidecars do.
fn inbound_http_connection_manager(
    stat_prefix: String,
    port: u16,
    filters: HcmFilters,
    mtls: bool,
) -> Filter {
    let mut hcm = hcm_config(
        stat_prefix,
        Routes::Inline(Box::new(route::inbound_route_config(port))),
        false,
        filters,
    );
    if mtls {
        hcm.forward_client_cert_details =
            http_connection_manager::ForwardClientCertDetails::AppendForward as i32;
        hcm.set_current_client_cert_details =
            Some(http_connection_manager::SetCurrentClientCertDetails {
                subject: Some(BoolValue { value: true }),
                dns: true,
                uri: true,
                ..Default::default()
            });
    }
    hcm_filter(&hcm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigStore;
    use crate::node::ProxyKind;
    use mizzen_xds::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
    use prost::Message;

    const CONFIG: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: secure, namespace: default}
spec:
  selector: {app: secure}
  clusterIP: 10.96.0.20
  ports:
  - {name: tls, port: 8443, targetPort: 8443}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure, namespace: default}
spec:
  hosts: [secure, "*.example.com"]
  tls:
  - match: [{port: 8443, sniHosts: [one.example.com, "*.two.example.com"]}]
    route:
    - {destination: {host: secure, subset: v1}, weight: 90}
    - {destination: {host: secure, subset: v2}, weight: 10}
  - match: [{port: 8443, sniHosts: [one.example.com, three.example.com]}]
    route:
    - {destination: {host: secure, subset: v2}}
  - match: [{port: 9999, sniHosts: [four.example.com]}]
    route:
    - {destination: {host: secure, subset: v2}}
"#;

    fn model() -> Model {
        let dir = std::env::temp_dir().join(format!("mizzen-tls-listener-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.yaml"), CONFIG).unwrap();
        let mut store = ConfigStore::new(&dir);
        store.rescan();
        let snapshot = store.snapshot();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(snapshot.problems.is_empty(), "{:?}", snapshot.problems);
        Model::build(&snapshot, "cluster.local")
    }

    fn node(interception: InterceptionMode) -> ProxyNode {
        ProxyNode {
            id: "sidecar~127.10.0.9~client.default~default.svc.cluster.local".into(),
            kind: ProxyKind::Sidecar,
            ip: "127.10.0.9".parse().unwrap(),
            name: "client".into(),
            namespace: "default".into(),
            labels: [("app".to_string(), "client".to_string())].into(),
            service_account: "default".into(),
            interception,
            app_host: "127.0.0.1".parse().unwrap(),
            locality: None,
        }
    }

    /// (server names, cluster or weighted clusters) per chain.
    fn chains(l: &Listener) -> Vec<(Vec<String>, String)> {
        l.filter_chains
            .iter()
            .map(|c| {
                let names = c
                    .filter_chain_match
                    .as_ref()
                    .map(|m| m.server_names.clone())
                    .unwrap_or_default();
                let Some(filter::ConfigType::TypedConfig(any)) = &c.filters[0].config_type else {
                    panic!("no typed config")
                };
                let proxy = TcpProxy::decode(any.value.as_slice()).unwrap();
                let target = match proxy.cluster_specifier.unwrap() {
                    tcp_proxy::ClusterSpecifier::Cluster(c) => c,
                    tcp_proxy::ClusterSpecifier::WeightedClusters(w) => w
                        .clusters
                        .iter()
                        .map(|c| format!("{}={}", c.name, c.weight))
                        .collect::<Vec<_>>()
                        .join(","),
                };
                (names, target)
            })
            .collect()
    }

    fn find(resources: &[Resource], name: &str) -> Listener {
        let r = resources
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no listener {name}"));
        Listener::decode(r.body.value.as_slice()).unwrap()
    }

    #[test]
    fn tls_routes_become_server_name_chains() {
        let model = model();
        let svc = "secure.default.svc.cluster.local";
        let want = vec![
            (
                vec![
                    "one.example.com".to_string(),
                    "*.two.example.com".to_string(),
                ],
                format!("outbound|8443|v1|{svc}=90,outbound|8443|v2|{svc}=10"),
            ),
            // `one.example.com` stays with the first match.
            (
                vec!["three.example.com".to_string()],
                format!("outbound|8443|v2|{svc}"),
            ),
            (Vec::new(), format!("outbound|8443||{svc}")),
        ];
        let explicit = sidecar_listeners(&model, &node(InterceptionMode::None));
        let l = find(&explicit, "127.10.0.9_8443");
        assert_eq!(chains(&l), want);
        assert_eq!(l.listener_filters.len(), 1);
        assert_eq!(l.listener_filters[0].name, TLS_INSPECTOR);

        let captured = sidecar_listeners(&model, &node(InterceptionMode::Redirect));
        let l = find(&captured, "10.96.0.20_8443");
        assert_eq!(chains(&l), want);
        assert_eq!(l.listener_filters[0].name, TLS_INSPECTOR);
        assert_eq!(l.bind_to_port, Some(BoolValue { value: false }));

        // The config_dump shows every field emitted.
        let dump = super::super::dump(&model, &node(InterceptionMode::None)).to_string();
        assert!(
            dump.contains("\"server_names\":[\"three.example.com\"]"),
            "{dump}"
        );
        assert!(dump.contains("tls_inspector.v3.TlsInspector"), "{dump}");
        assert!(!dump.contains("unrendered"), "{dump}");
    }
}
