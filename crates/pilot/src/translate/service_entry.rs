//! Clusters and route domains of ServiceEntry hosts, shaped as Istio shapes
//! them: the entry's `resolution` picks the cluster's discovery type
//! (STATIC → EDS, DNS → STRICT_DNS, DNS_ROUND_ROBIN → LOGICAL_DNS, NONE
//! without endpoints → ORIGINAL_DST), and clients name the host as written,
//! never by a Kubernetes short name.

use mizzen_xds::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, LbPolicy},
};
use mizzen_xds::pb::envoy::config::core::v3::{
    Address, Metadata, SocketAddress, address, socket_address,
};
use mizzen_xds::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use mizzen_xds::pb::google::protobuf::UInt32Value;

use super::mtls;
use crate::model::{Model, Resolution, Service, ServicePort};

/// Turns the EDS cluster of a ServiceEntry port into the cluster its
/// resolution asks for; Kubernetes services and STATIC entries stay EDS.
pub fn resolve(
    cluster: &mut Cluster,
    model: &Model,
    service: &Service,
    port: &ServicePort,
    subset: &str,
) {
    let Some(entry) = &service.entry else {
        return;
    };
    let discovery = match entry.resolution {
        Resolution::Static => return,
        // Endpoints (inline or selected workloads) make a NONE entry an
        // ordinary EDS service; without them connections keep their
        // original destination.
        Resolution::None if !entry.endpoints.is_empty() || service.selector.is_some() => return,
        Resolution::None => DiscoveryType::OriginalDst,
        Resolution::Dns => DiscoveryType::StrictDns,
        Resolution::DnsRoundRobin => DiscoveryType::LogicalDns,
    };
    cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(discovery as i32));
    cluster.eds_cluster_config = None;
    if discovery == DiscoveryType::OriginalDst {
        cluster.lb_policy = LbPolicy::ClusterProvided as i32;
        return;
    }
    cluster.dns_lookup_family = DnsLookupFamily::V4Only as i32;
    let labels = if subset.is_empty() {
        None
    } else {
        model.subset_labels(&service.hostname, subset, &service.namespace)
    };
    // The entry's endpoints (hostnames or addresses), else the host itself.
    let mut endpoints: Vec<LbEndpoint> = entry
        .endpoints
        .iter()
        .filter(|e| {
            labels
                .as_ref()
                .is_none_or(|l| crate::model::labels_match(l, &e.labels))
        })
        .map(|e| {
            let mtls = model.mtls
                && !entry.mesh_external
                && e.labels.get(mizzen_api::TLS_MODE_LABEL).map(String::as_str) == Some("istio");
            lb_endpoint(&e.address, Service::entry_port(port, e), e.weight, mtls)
        })
        .collect();
    if entry.endpoints.is_empty() {
        endpoints.push(lb_endpoint(&service.hostname, port.port, None, false));
    }
    // Envoy resolves one name for a LOGICAL_DNS cluster.
    if discovery == DiscoveryType::LogicalDns {
        endpoints.truncate(1);
    }
    cluster.load_assignment = Some(ClusterLoadAssignment {
        cluster_name: cluster.name.clone(),
        endpoints: if endpoints.is_empty() {
            Vec::new()
        } else {
            vec![LocalityLbEndpoints {
                lb_endpoints: endpoints,
                ..Default::default()
            }]
        },
        ..Default::default()
    });
}

fn lb_endpoint(host: &str, port: u16, weight: Option<u32>, mtls: bool) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: host.to_string(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        load_balancing_weight: Some(UInt32Value {
            value: weight.unwrap_or(1).max(1),
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

/// The route domains of a ServiceEntry host: the host as written (a
/// wildcard stays one), with the port and, where the client may leave the
/// port out, without.
pub fn domains(service: &Service, port: u16, portless: bool) -> Option<Vec<String>> {
    service.entry.as_ref()?;
    let host = &service.hostname;
    let mut domains = Vec::new();
    if portless {
        domains.push(host.clone());
    }
    domains.push(format!("{host}:{port}"));
    Some(domains)
}

/// Whether a cluster of this service should never get automatic mutual TLS.
pub fn no_auto_mtls(service: &Service) -> bool {
    service.mesh_external()
}
