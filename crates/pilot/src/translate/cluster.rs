//! Clusters (CDS) and their endpoints (EDS).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use mizzen_xds::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
};
use mizzen_xds::pb::envoy::config::core::v3::{
    Address, BindConfig, Http1ProtocolOptions, Http2ProtocolOptions,
    HttpProtocolOptions as CommonHttpProtocolOptions, Metadata, SocketAddress, address,
    socket_address,
};
use mizzen_xds::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EndpointProto, LbEndpoint, LocalityLbEndpoints,
    lb_endpoint::HostIdentifier,
};
use mizzen_xds::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use mizzen_xds::server::Resource;

use super::{ads_config_source, duration, locality, mtls, policy, resource};
use crate::model::{Model, Protocol, Service, ServicePort};
use crate::node::{InterceptionMode, ProxyKind, ProxyNode};

/// Istio's default connect timeout for outbound clusters.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

pub fn outbound_cluster_name(port: u16, subset: &str, hostname: &str) -> String {
    format!("outbound|{port}|{subset}|{hostname}")
}

pub fn inbound_cluster_name(port: u16) -> String {
    format!("inbound|{port}||")
}

/// Parses `outbound|PORT|SUBSET|HOST`.
fn parse_outbound(name: &str) -> Option<(u16, &str, &str)> {
    let mut parts = name.splitn(4, '|');
    if parts.next()? != "outbound" {
        return None;
    }
    let port = parts.next()?.parse().ok()?;
    let subset = parts.next()?;
    let host = parts.next()?;
    Some((port, subset, host))
}

pub fn clusters(model: &Model, proxy: &ProxyNode) -> Vec<Resource> {
    let mut out = Vec::new();
    for service in model.visible_services(proxy) {
        let rule = model
            .destination_rule(&service.hostname, &proxy.namespace)
            .map(|r| &r.spec);
        // Secure naming: who may serve the service.
        let identities = model.service_identities(service);
        for port in &service.ports {
            let subsets = rule.map(|r| r.subsets.as_slice()).unwrap_or_default();
            for subset in std::iter::once("").chain(subsets.iter().map(|s| s.name.as_str())) {
                let name = outbound_cluster_name(port.port, subset, &service.hostname);
                let policy = policy::effective(rule, subset, port.port);
                let tls = cluster_tls(model, service, port, subset, &policy, identities);
                out.push(eds_cluster(name, port, &policy, tls, |cluster| {
                    super::service_entry::resolve(cluster, model, service, port, subset)
                }));
            }
        }
    }
    if proxy.kind == ProxyKind::Sidecar {
        // With capture, the proxy reaches the app from 127.0.0.6: the capture
        // rules let that source through instead of redirecting it again.
        let bind = (proxy.interception == InterceptionMode::Redirect).then_some(INBOUND_SOURCE);
        for (target_port, protocol) in inbound_ports(model, proxy) {
            let mut cluster = static_cluster(
                inbound_cluster_name(target_port),
                proxy.app_host,
                target_port,
                protocol.is_http2(),
            );
            cluster.upstream_bind_config = bind.map(bind_config);
            out.push(resource(cluster.name.clone(), &cluster));
        }
        if proxy.interception == InterceptionMode::Redirect {
            out.push(original_dst_cluster(PASSTHROUGH_CLUSTER, None));
            out.push(original_dst_cluster(
                INBOUND_PASSTHROUGH_CLUSTER,
                Some(INBOUND_SOURCE),
            ));
            let black_hole = Cluster {
                name: BLACK_HOLE_CLUSTER.to_string(),
                cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                    DiscoveryType::Static as i32,
                )),
                connect_timeout: Some(duration(CONNECT_TIMEOUT)),
                ..Default::default()
            };
            out.push(resource(BLACK_HOLE_CLUSTER, &black_hole));
        }
    }
    out
}

/// Istio's names for the clusters of traffic outside the registry.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";
pub const BLACK_HOLE_CLUSTER: &str = "BlackHoleCluster";
/// The source address of the proxy's connections to its own app.
const INBOUND_SOURCE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 6));

fn bind_config(source: IpAddr) -> BindConfig {
    BindConfig {
        source_address: Some(SocketAddress {
            address: source.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A cluster that connects to where the downstream connection was going.
fn original_dst_cluster(name: &str, source: Option<IpAddr>) -> Resource {
    let cluster = Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        upstream_bind_config: source.map(bind_config),
        ..Default::default()
    };
    resource(name, &cluster)
}

/// The workload ports a sidecar receives traffic on, from the services that
/// select its workload, with the protocol declared for each (HTTP/2 wins
/// over HTTP, a declared protocol over an unspecified one). In the loopback
/// runtime only HTTP ports are served: there is no capture to carry TCP.
pub fn inbound_ports(model: &Model, proxy: &ProxyNode) -> BTreeMap<u16, Protocol> {
    let workload = model.workload_of(proxy);
    let mut ports: BTreeMap<u16, Protocol> = BTreeMap::new();
    for service in model.services_of(&proxy.namespace, &proxy.labels) {
        for port in &service.ports {
            if proxy.interception == InterceptionMode::None && !port.protocol.is_http() {
                continue;
            }
            let target = Model::target_port(port, workload);
            if let Some(target) = target {
                let entry = ports.entry(target).or_insert(port.protocol);
                if port.protocol.is_http2() || *entry == Protocol::Unspecified {
                    *entry = port.protocol;
                }
            }
        }
    }
    ports
}

/// Upstream HTTP options: the protocol (HTTP/2 for `http2`/`grpc` ports)
/// and, when a connection pool asks for them, idle timeout and requests per
/// connection.
fn http_options(
    http2: bool,
    common: Option<CommonHttpProtocolOptions>,
) -> BTreeMap<String, mizzen_xds::pb::google::protobuf::Any> {
    if !http2 && common.is_none() {
        return BTreeMap::new();
    }
    use http_protocol_options::explicit_http_config::ProtocolConfig;
    let protocol = if http2 {
        ProtocolConfig::Http2ProtocolOptions(Http2ProtocolOptions::default())
    } else {
        ProtocolConfig::HttpProtocolOptions(Http1ProtocolOptions::default())
    };
    let options = HttpProtocolOptions {
        common_http_protocol_options: common,
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(protocol),
                },
            ),
        ),
        ..Default::default()
    };
    BTreeMap::from([(
        HTTP_PROTOCOL_OPTIONS.to_string(),
        mizzen_xds::pack(&options),
    )])
}

/// TLS to a service's endpoints: the DestinationRule's `tls` if it sets
/// one, else automatic mutual TLS when the mesh runs mTLS.
fn cluster_tls(
    model: &Model,
    service: &Service,
    port: &ServicePort,
    subset: &str,
    policy: &policy::Effective,
    identities: &[String],
) -> mtls::ClusterTls {
    let alpn = if port.protocol.is_http2() {
        mtls::MeshAlpn::Http2
    } else if port.protocol.is_http() {
        mtls::MeshAlpn::Http11
    } else {
        mtls::MeshAlpn::Tcp
    };
    let sni = mtls::mesh_sni(port.port, subset, &service.hostname);
    match &policy.tls {
        Some(settings) => {
            mtls::destination_rule_tls(settings, sni, identities, alpn, &service.hostname)
        }
        None if model.mtls && !super::service_entry::no_auto_mtls(service) => {
            mtls::ClusterTls::Matches(mtls::auto_mtls_matches(sni, identities, alpn))
        }
        None => mtls::ClusterTls::None,
    }
}

/// `resolve` may turn the EDS cluster into another discovery type
/// (ServiceEntry resolutions).
fn eds_cluster(
    name: String,
    port: &ServicePort,
    policy: &policy::Effective,
    tls: mtls::ClusterTls,
    resolve: impl FnOnce(&mut Cluster),
) -> Resource {
    let mut cluster = Cluster {
        name: name.clone(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads_config_source()),
            service_name: name.clone(),
        }),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        lb_policy: LbPolicy::RoundRobin as i32,
        ..Default::default()
    };
    let common = policy::apply(&mut cluster, policy);
    locality::configure_cluster(&mut cluster, policy);
    match tls {
        mtls::ClusterTls::None => {}
        mtls::ClusterTls::Socket(socket) => cluster.transport_socket = Some(*socket),
        mtls::ClusterTls::Matches(matches) => cluster.transport_socket_matches = matches,
    }
    cluster.typed_extension_protocol_options = http_options(port.protocol.is_http2(), common)
        .into_iter()
        .collect();
    resolve(&mut cluster);
    resource(name, &cluster)
}

fn static_cluster(name: String, host: IpAddr, port: u16, http2: bool) -> Cluster {
    Cluster {
        name: name.clone(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        load_assignment: Some(load_assignment(&name, [(host, port)])),
        typed_extension_protocol_options: http_options(http2, None).into_iter().collect(),
        ..Default::default()
    }
}

/// An IP address, or for DNS clusters a hostname, and a port.
pub fn socket_address(host: impl ToString, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn load_assignment(
    cluster: &str,
    endpoints: impl IntoIterator<Item = (IpAddr, u16)>,
) -> ClusterLoadAssignment {
    load_assignment_of(
        cluster,
        endpoints
            .into_iter()
            .map(|(ip, port)| (ip, port, false))
            .collect(),
    )
}

/// Endpoints as `(address, port, mtls)`: `mtls` labels the endpoint
/// `tlsMode: istio` for the cluster's transport socket matches.
fn load_assignment_of(cluster: &str, endpoints: Vec<(IpAddr, u16, bool)>) -> ClusterLoadAssignment {
    single_locality(
        cluster.to_string(),
        endpoints
            .into_iter()
            .map(|(ip, port, mtls)| lb_endpoint(ip, port, 1, mtls))
            .collect(),
    )
}

/// One endpoint (an IP address, or a hostname for DNS clusters) with its
/// load-balancing weight; `mtls` labels it `tlsMode: istio` for the
/// cluster's transport socket matches.
pub(super) fn lb_endpoint(host: impl ToString, port: u16, weight: u32, mtls: bool) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(EndpointProto {
            address: Some(socket_address(host, port)),
            ..Default::default()
        })),
        load_balancing_weight: Some(mizzen_xds::pb::google::protobuf::UInt32Value {
            value: weight,
        }),
        metadata: mtls.then(|| Metadata {
            filter_metadata: [(
                mtls::TRANSPORT_SOCKET_MATCH.to_string(),
                mtls::tls_mode_istio(),
            )]
            .into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A load assignment with every endpoint in one locality group (none when
/// there are no endpoints); EDS regroups them by locality afterwards.
pub(super) fn single_locality(
    cluster_name: String,
    lb_endpoints: Vec<LbEndpoint>,
) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name,
        endpoints: if lb_endpoints.is_empty() {
            Vec::new()
        } else {
            vec![LocalityLbEndpoints {
                lb_endpoints,
                ..Default::default()
            }]
        },
        ..Default::default()
    }
}

/// EDS: every requested cluster gets an answer, empty when unknown, so that
/// a proxy never waits for endpoints that will not come. Endpoints are
/// grouped by locality; the proxy's own locality decides priorities and
/// weights where a locality load-balancing setting applies.
pub fn load_assignments(model: &Model, proxy: &ProxyNode, names: &[String]) -> Vec<Resource> {
    let mut here = locality::ProxyLocality::new(model, proxy);
    names
        .iter()
        .map(|name| {
            let mut localities = Vec::new();
            let mut policy = None;
            let endpoints = parse_outbound(name)
                .and_then(|(port, subset, host)| {
                    let service: &Service = model.services.get(host)?;
                    let service_port = service.port(port)?;
                    let labels = if subset.is_empty() {
                        None
                    } else {
                        Some(model.subset_labels(host, subset, &service.namespace)?)
                    };
                    // The rule the proxy's cluster was built from (CDS).
                    policy = model
                        .destination_rule(host, &proxy.namespace)
                        .map(|r| policy::effective(Some(&r.spec), subset, port));
                    let endpoints = model.endpoints(service, service_port, labels.as_ref());
                    localities = endpoints.iter().map(|e| e.locality.clone()).collect();
                    Some(
                        endpoints
                            .into_iter()
                            .map(|e| (e.address, e.port, e.mtls))
                            .collect::<Vec<_>>(),
                    )
                })
                .unwrap_or_default();
            let mut cla = load_assignment_of(name, endpoints);
            locality::shape(&mut cla, &localities, policy.as_ref(), &mut here);
            resource(name.clone(), &cla)
        })
        .collect()
}
