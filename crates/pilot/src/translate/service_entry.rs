//! Clusters and route domains of ServiceEntry hosts, shaped as Istio shapes
//! them: the entry's `resolution` picks the cluster's discovery type
//! (STATIC → EDS, DNS → STRICT_DNS, DNS_ROUND_ROBIN → LOGICAL_DNS, NONE
//! without endpoints → ORIGINAL_DST), and clients name the host as written,
//! never by a Kubernetes short name.

use mizzen_xds::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, LbPolicy},
};
use mizzen_xds::pb::envoy::config::endpoint::v3::LbEndpoint;

use super::cluster::{lb_endpoint, single_locality};
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
            let weight = e.weight.unwrap_or(1).max(1);
            lb_endpoint(&e.address, Service::entry_port(port, e), weight, mtls)
        })
        .collect();
    if entry.endpoints.is_empty() {
        endpoints.push(lb_endpoint(&service.hostname, port.port, 1, false));
    }
    // Envoy resolves one name for a LOGICAL_DNS cluster.
    if discovery == DiscoveryType::LogicalDns {
        endpoints.truncate(1);
    }
    cluster.load_assignment = Some(single_locality(cluster.name.clone(), endpoints));
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
