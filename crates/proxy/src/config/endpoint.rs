//! `ClusterLoadAssignment` → [`EndpointSet`].

use std::net::{IpAddr, SocketAddr};

use mizzen_xds::pb;
use pb::envoy::config::core::v3::{Address, HealthStatus, address, socket_address::PortSpecifier};
use pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint::HostIdentifier};

use super::check::reject_unknown;
use super::{ConfigError, Scope, fields, join};

/// One usable endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbEndpointConfig {
    pub address: SocketAddr,
    /// `load_balancing_weight`, 1 when unset.
    pub weight: u32,
}

/// The endpoints of a cluster that may receive traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSet {
    /// Healthy endpoints: in config order when `groups` is empty, else
    /// ordered by priority (config order within one).
    pub endpoints: Vec<LbEndpointConfig>,
    /// Every endpoint listed, healthy or not (`membership_total`).
    pub total: usize,
    /// The localities `endpoints` divide into, when they matter: with
    /// several priorities or locality weights. Empty otherwise, so that the
    /// common case balances over `endpoints` alone.
    pub groups: Vec<LocalityGroup>,
}

/// One `LocalityLbEndpoints` of an assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalityGroup {
    pub priority: u32,
    /// The locality's `load_balancing_weight`; 0 when unset (it then gets no
    /// traffic under locality-weighted load balancing, as in Envoy).
    pub weight: u32,
    /// Its healthy endpoints are `endpoints[start..start + len]`.
    pub start: usize,
    pub len: usize,
    /// Endpoints it lists, healthy or not: health shares are out of these.
    pub total: usize,
}

impl EndpointSet {
    pub fn compile(cla: &ClusterLoadAssignment) -> Result<EndpointSet, ConfigError> {
        compile_in(
            &Scope::new("cluster_load_assignment", &cla.cluster_name),
            "",
            cla,
        )
    }
}

/// Compiles an assignment; `path` is non-empty when it is a cluster's inline
/// `load_assignment`.
pub(crate) fn compile_in(
    scope: &Scope,
    path: &str,
    cla: &ClusterLoadAssignment,
) -> Result<EndpointSet, ConfigError> {
    reject_unknown(scope, path, cla, fields::CLUSTER_LOAD_ASSIGNMENT, |c| {
        c.cluster_name.clear();
        c.endpoints.clear();
    })?;
    // Per locality: (priority, weight, healthy endpoints, listed).
    let mut localities: Vec<(u32, u32, Vec<LbEndpointConfig>, usize)> = Vec::new();
    let mut total = 0;
    for (i, locality) in cla.endpoints.iter().enumerate() {
        let lpath = join(path, &format!("endpoints[{i}]"));
        reject_unknown(
            scope,
            &lpath,
            locality,
            fields::LOCALITY_LB_ENDPOINTS,
            |l| {
                l.lb_endpoints.clear();
                l.priority = 0;
                // The locality itself is the pilot's business: the proxy only
                // needs the grouping, its priority and weight. Metadata is inert.
                l.locality = None;
                l.load_balancing_weight = None;
                l.metadata = None;
            },
        )?;
        let weight = match &locality.load_balancing_weight {
            None => 0,
            Some(w) if w.value >= 1 => w.value,
            Some(_) => {
                return Err(
                    scope.invalid(join(&lpath, "load_balancing_weight"), "must be at least 1")
                );
            }
        };
        let mut healthy_endpoints = Vec::new();
        for (j, lb) in locality.lb_endpoints.iter().enumerate() {
            let epath = join(&lpath, &format!("lb_endpoints[{j}]"));
            reject_unknown(scope, &epath, lb, fields::LB_ENDPOINT, |e| {
                e.health_status = 0;
                e.load_balancing_weight = None;
                e.metadata = None;
                if matches!(e.host_identifier, Some(HostIdentifier::Endpoint(_))) {
                    e.host_identifier = None;
                }
            })?;
            let Some(HostIdentifier::Endpoint(ep)) = &lb.host_identifier else {
                return Err(scope.missing(join(&epath, "endpoint")));
            };
            let ep_path = join(&epath, "endpoint");
            reject_unknown(scope, &ep_path, ep, fields::ENDPOINT, |e| {
                e.address = None;
                e.hostname.clear();
            })?;
            let address = socket_address(scope, &join(&ep_path, "address"), ep.address.as_ref())?;
            let weight = match lb.load_balancing_weight {
                None => 1,
                Some(w) if w.value >= 1 => w.value,
                Some(_) => {
                    return Err(
                        scope.invalid(join(&epath, "load_balancing_weight"), "must be at least 1")
                    );
                }
            };
            total += 1;
            let healthy = match HealthStatus::try_from(lb.health_status) {
                Ok(HealthStatus::Unknown | HealthStatus::Healthy | HealthStatus::Degraded) => true,
                Ok(HealthStatus::Unhealthy | HealthStatus::Draining | HealthStatus::Timeout) => {
                    false
                }
                Err(_) => {
                    return Err(scope.invalid(join(&epath, "health_status"), "unknown enum value"));
                }
            };
            if healthy {
                healthy_endpoints.push(LbEndpointConfig { address, weight });
            }
        }
        if !locality.lb_endpoints.is_empty() {
            localities.push((
                locality.priority,
                weight,
                healthy_endpoints,
                locality.lb_endpoints.len(),
            ));
        }
    }
    let several_priorities = localities.windows(2).any(|w| w[0].0 != w[1].0);
    let weighted = localities.iter().any(|(_, weight, _, _)| *weight > 0);
    if !several_priorities && !weighted {
        let endpoints = localities.into_iter().flat_map(|l| l.2).collect();
        return Ok(EndpointSet {
            endpoints,
            total,
            groups: Vec::new(),
        });
    }
    // Stable: config order stays within a priority.
    localities.sort_by_key(|l| l.0);
    let mut endpoints = Vec::new();
    let mut groups = Vec::with_capacity(localities.len());
    for (priority, weight, healthy, listed) in localities {
        groups.push(LocalityGroup {
            priority,
            weight,
            start: endpoints.len(),
            len: healthy.len(),
            total: listed,
        });
        endpoints.extend(healthy);
    }
    Ok(EndpointSet {
        endpoints,
        total,
        groups,
    })
}

/// An IP socket address; names need DNS, which STATIC and EDS clusters do not do.
pub(crate) fn socket_address(
    scope: &Scope,
    path: &str,
    addr: Option<&Address>,
) -> Result<SocketAddr, ConfigError> {
    let Some(addr) = addr else {
        return Err(scope.missing(path));
    };
    let sa = match &addr.address {
        Some(address::Address::SocketAddress(sa)) => sa,
        Some(address::Address::Pipe(_)) => return Err(scope.unsupported(join(path, "pipe"))),
        Some(address::Address::EnvoyInternalAddress(_)) => {
            return Err(scope.unsupported(join(path, "envoy_internal_address")));
        }
        None => return Err(scope.missing(join(path, "socket_address"))),
    };
    plain_socket_address(scope, &join(path, "socket_address"), sa)
}

/// An IP `SocketAddress` (address literal and port value).
pub(crate) fn plain_socket_address(
    scope: &Scope,
    spath: &str,
    sa: &pb::envoy::config::core::v3::SocketAddress,
) -> Result<SocketAddr, ConfigError> {
    let spath = spath.to_string();
    reject_unknown(scope, &spath, sa, fields::SOCKET_ADDRESS, |s| {
        s.address.clear();
        s.port_specifier = None;
        s.protocol = 0; // TCP
    })?;
    let ip: IpAddr = sa.address.parse().map_err(|_| {
        scope.invalid(
            join(&spath, "address"),
            format!("{:?} is not an IP address", sa.address),
        )
    })?;
    let port = match sa.port_specifier {
        Some(PortSpecifier::PortValue(p)) => u16::try_from(p)
            .map_err(|_| scope.invalid(join(&spath, "port_value"), "out of range"))?,
        Some(PortSpecifier::NamedPort(_)) => {
            return Err(scope.unsupported(join(&spath, "named_port")));
        }
        None => return Err(scope.missing(join(&spath, "port_value"))),
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pb::envoy::config::core::v3::SocketAddress;
    use pb::envoy::config::endpoint::v3::{Endpoint, LbEndpoint, LocalityLbEndpoints};

    pub(crate) fn address(ip: &str, port: u32) -> Address {
        Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }
    }

    fn lb(ip: &str, health: HealthStatus, weight: Option<u32>) -> LbEndpoint {
        LbEndpoint {
            health_status: health as i32,
            load_balancing_weight: weight.map(|value| pb::google::protobuf::UInt32Value { value }),
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(address(ip, 80)),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn skips_unhealthy_and_draining() {
        let cla = ClusterLoadAssignment {
            cluster_name: "outbound|80||b".into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![
                    lb("10.0.0.1", HealthStatus::Healthy, Some(3)),
                    lb("10.0.0.2", HealthStatus::Unhealthy, None),
                    lb("10.0.0.3", HealthStatus::Draining, None),
                    lb("10.0.0.4", HealthStatus::Unknown, None),
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let set = EndpointSet::compile(&cla).unwrap();
        assert_eq!(set.total, 4);
        assert_eq!(
            set.endpoints,
            vec![
                LbEndpointConfig {
                    address: "10.0.0.1:80".parse().unwrap(),
                    weight: 3
                },
                LbEndpointConfig {
                    address: "10.0.0.4:80".parse().unwrap(),
                    weight: 1
                },
            ]
        );
    }

    #[test]
    fn best_priority_with_healthy_hosts_wins() {
        let cla = ClusterLoadAssignment {
            cluster_name: "c".into(),
            endpoints: vec![
                LocalityLbEndpoints {
                    priority: 1,
                    lb_endpoints: vec![lb("10.0.0.2", HealthStatus::Healthy, None)],
                    ..Default::default()
                },
                LocalityLbEndpoints {
                    priority: 0,
                    lb_endpoints: vec![lb("10.0.0.1", HealthStatus::Unhealthy, None)],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let set = EndpointSet::compile(&cla).unwrap();
        assert_eq!(set.endpoints.len(), 1);
        assert_eq!(set.endpoints[0].address, "10.0.0.2:80".parse().unwrap());
    }

    #[test]
    fn localities_are_kept_by_priority_when_they_matter() {
        let locality = |priority: u32, weight: Option<u32>, ips: &[&str]| LocalityLbEndpoints {
            priority,
            load_balancing_weight: weight.map(|value| pb::google::protobuf::UInt32Value { value }),
            lb_endpoints: ips
                .iter()
                .map(|ip| lb(ip, HealthStatus::Unknown, None))
                .collect(),
            ..Default::default()
        };
        let cla = ClusterLoadAssignment {
            cluster_name: "c".into(),
            endpoints: vec![
                locality(1, None, &["10.0.0.3"]),
                locality(0, None, &["10.0.0.1", "10.0.0.2"]),
            ],
            ..Default::default()
        };
        let set = EndpointSet::compile(&cla).unwrap();
        let order: Vec<String> = set
            .endpoints
            .iter()
            .map(|e| e.address.to_string())
            .collect();
        assert_eq!(order, ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
        assert_eq!(
            set.groups,
            [
                LocalityGroup {
                    priority: 0,
                    weight: 0,
                    start: 0,
                    len: 2,
                    total: 2
                },
                LocalityGroup {
                    priority: 1,
                    weight: 0,
                    start: 2,
                    len: 1,
                    total: 1
                },
            ]
        );
        // One priority, no weights: a flat list.
        let cla = ClusterLoadAssignment {
            cluster_name: "c".into(),
            endpoints: vec![
                locality(0, None, &["10.0.0.1"]),
                locality(0, None, &["10.0.0.2"]),
            ],
            ..Default::default()
        };
        let set = EndpointSet::compile(&cla).unwrap();
        assert_eq!(set.endpoints.len(), 2);
        assert!(set.groups.is_empty());
        // Weights keep the localities apart.
        let cla = ClusterLoadAssignment {
            cluster_name: "c".into(),
            endpoints: vec![
                locality(0, Some(80), &["10.0.0.1"]),
                locality(0, Some(20), &["10.0.0.2"]),
            ],
            ..Default::default()
        };
        let set = EndpointSet::compile(&cla).unwrap();
        assert_eq!(
            set.groups.iter().map(|g| g.weight).collect::<Vec<_>>(),
            [80, 20]
        );
        let cla = ClusterLoadAssignment {
            cluster_name: "c".into(),
            endpoints: vec![LocalityLbEndpoints {
                load_balancing_weight: Some(pb::google::protobuf::UInt32Value { value: 0 }),
                ..locality(0, None, &["10.0.0.1"])
            }],
            ..Default::default()
        };
        assert_eq!(
            EndpointSet::compile(&cla).unwrap_err().to_string(),
            "cluster_load_assignment c: endpoints[0].load_balancing_weight: must be at least 1"
        );
    }

    #[test]
    fn hostnames_are_refused() {
        let cla = ClusterLoadAssignment {
            cluster_name: "c".into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![lb("service-b", HealthStatus::Healthy, None)],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            EndpointSet::compile(&cla).unwrap_err().to_string(),
            "cluster_load_assignment c: endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: \"service-b\" is not an IP address"
        );
    }
}
