//! DNS discovery (`STRICT_DNS`, `LOGICAL_DNS`): the names a cluster's
//! inline `load_assignment` gives, how to resolve them, and the endpoint
//! set a resolution yields.
//!
//! The assignment keeps its hostnames; each resolution substitutes the
//! addresses found, and the result goes through the same compilation as
//! any other assignment (priorities, locality weights, health, per-endpoint
//! transport socket metadata all carry over).

use std::net::IpAddr;
use std::time::Duration;

use mizzen_xds::pb;
use pb::envoy::config::cluster::v3::{Cluster, cluster::DnsLookupFamily};
use pb::envoy::config::core::v3::{address, socket_address::PortSpecifier};
use pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint::HostIdentifier};

use super::endpoint::{EndpointSet, compile_in};
use super::{ConfigError, Scope, duration};

/// Envoy's `dns_refresh_rate` when unset.
pub const DEFAULT_DNS_REFRESH_RATE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsMode {
    /// Every address of every name is a host.
    Strict,
    /// One name; new connections go to the first address it resolves to.
    Logical,
}

/// `dns_lookup_family`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsFamily {
    /// IPv6 addresses when there are any, else IPv4 (Envoy's default).
    Auto,
    V4Only,
    V6Only,
    /// IPv4 addresses when there are any, else IPv6.
    V4Preferred,
    All,
}

impl DnsFamily {
    /// The addresses of a lookup this family keeps, in resolver order,
    /// without duplicates.
    pub fn select(self, found: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
        let mut all: Vec<IpAddr> = Vec::new();
        for ip in found {
            if !all.contains(&ip) {
                all.push(ip);
            }
        }
        let v4 = || {
            all.iter()
                .copied()
                .filter(IpAddr::is_ipv4)
                .collect::<Vec<_>>()
        };
        let v6 = || {
            all.iter()
                .copied()
                .filter(IpAddr::is_ipv6)
                .collect::<Vec<_>>()
        };
        match self {
            DnsFamily::V4Only => v4(),
            DnsFamily::V6Only => v6(),
            DnsFamily::Auto => Some(v6()).filter(|v| !v.is_empty()).unwrap_or_else(v4),
            DnsFamily::V4Preferred => Some(v4()).filter(|v| !v.is_empty()).unwrap_or_else(v6),
            DnsFamily::All => all,
        }
    }
}

/// A DNS cluster's discovery settings.
#[derive(Debug)]
pub struct DnsConfig {
    pub mode: DnsMode,
    pub family: DnsFamily,
    pub refresh: Duration,
    /// `respect_dns_ttl`. The system resolver reports no TTLs, so names are
    /// re-resolved every `refresh` either way.
    pub respect_ttl: bool,
    /// The inline assignment as configured, names unresolved.
    pub assignment: ClusterLoadAssignment,
    /// The distinct `(name, port)` pairs to resolve; IP literals are not
    /// looked up.
    pub targets: Vec<(String, u16)>,
}

impl PartialEq for DnsConfig {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode
            && self.family == other.family
            && self.refresh == other.refresh
            && self.respect_ttl == other.respect_ttl
            && self.assignment == other.assignment
    }
}

impl Eq for DnsConfig {}

/// The address and port of an endpoint's socket address, when it has one.
fn socket_of(
    lb: &pb::envoy::config::endpoint::v3::LbEndpoint,
) -> Option<&pb::envoy::config::core::v3::SocketAddress> {
    let Some(HostIdentifier::Endpoint(ep)) = &lb.host_identifier else {
        return None;
    };
    match ep.address.as_ref()?.address.as_ref()? {
        address::Address::SocketAddress(sa) => Some(sa),
        _ => None,
    }
}

fn port_of(sa: &pb::envoy::config::core::v3::SocketAddress) -> Option<u16> {
    match sa.port_specifier {
        Some(PortSpecifier::PortValue(p)) => u16::try_from(p).ok(),
        _ => None,
    }
}

fn set_address(lb: &mut pb::envoy::config::endpoint::v3::LbEndpoint, ip: IpAddr) {
    if let Some(HostIdentifier::Endpoint(ep)) = &mut lb.host_identifier
        && let Some(a) = &mut ep.address
        && let Some(address::Address::SocketAddress(sa)) = &mut a.address
    {
        sa.address = ip.to_string();
    }
}

impl DnsConfig {
    /// The assignment with every name replaced by the addresses found for it
    /// (`resolved[i]` for `targets[i]`; `None`: never resolved, so its
    /// endpoint is left out). A LOGICAL_DNS endpoint takes the first address.
    pub fn resolved_assignment(&self, resolved: &[Option<Vec<IpAddr>>]) -> ClusterLoadAssignment {
        let mut cla = self.assignment.clone();
        for locality in &mut cla.endpoints {
            let listed = std::mem::take(&mut locality.lb_endpoints);
            for lb in listed {
                let target = socket_of(&lb).and_then(|sa| {
                    if sa.address.parse::<IpAddr>().is_ok() {
                        return None;
                    }
                    let port = port_of(sa)?;
                    self.targets
                        .iter()
                        .position(|(n, p)| *n == sa.address && *p == port)
                });
                let Some(i) = target else {
                    locality.lb_endpoints.push(lb);
                    continue;
                };
                let ips = resolved.get(i).and_then(Option::as_ref);
                let take = match self.mode {
                    DnsMode::Strict => usize::MAX,
                    DnsMode::Logical => 1,
                };
                for ip in ips.into_iter().flatten().take(take) {
                    let mut one = lb.clone();
                    set_address(&mut one, *ip);
                    locality.lb_endpoints.push(one);
                }
            }
        }
        cla
    }

    /// Compiles a resolved assignment (from [`DnsConfig::resolved_assignment`]).
    pub fn endpoints(
        &self,
        cluster: &str,
        resolved: &ClusterLoadAssignment,
    ) -> Result<EndpointSet, ConfigError> {
        compile_in(&Scope::new("cluster", cluster), "load_assignment", resolved)
    }
}

/// The DNS settings of a STRICT_DNS or LOGICAL_DNS cluster.
pub(crate) fn compile(scope: &Scope, c: &Cluster, mode: DnsMode) -> Result<DnsConfig, ConfigError> {
    if c.eds_cluster_config.is_some() {
        return Err(scope.invalid("eds_cluster_config", "only allowed on an EDS cluster"));
    }
    let family = match DnsLookupFamily::try_from(c.dns_lookup_family) {
        Ok(DnsLookupFamily::Auto) => DnsFamily::Auto,
        Ok(DnsLookupFamily::V4Only) => DnsFamily::V4Only,
        Ok(DnsLookupFamily::V6Only) => DnsFamily::V6Only,
        Ok(DnsLookupFamily::V4Preferred) => DnsFamily::V4Preferred,
        Ok(DnsLookupFamily::All) => DnsFamily::All,
        Err(_) => return Err(scope.invalid("dns_lookup_family", "unknown enum value")),
    };
    let refresh = match &c.dns_refresh_rate {
        None => DEFAULT_DNS_REFRESH_RATE,
        Some(d) => {
            let d = duration(scope, "dns_refresh_rate", d)?;
            if d < Duration::from_millis(1) {
                return Err(scope.invalid("dns_refresh_rate", "must be at least 1ms"));
            }
            d
        }
    };
    let assignment = c.load_assignment.clone().unwrap_or_default();
    // Checked like any assignment, with each name standing in as an address.
    let mut check = assignment.clone();
    let mut targets: Vec<(String, u16)> = Vec::new();
    let mut count = 0;
    for (i, locality) in check.endpoints.iter_mut().enumerate() {
        for (j, lb) in locality.lb_endpoints.iter_mut().enumerate() {
            count += 1;
            let Some(sa) = socket_of(lb) else { continue };
            if sa.address.parse::<IpAddr>().is_ok() {
                continue;
            }
            let path = format!(
                "load_assignment.endpoints[{i}].lb_endpoints[{j}].endpoint.address.socket_address.address"
            );
            if sa.address.is_empty() {
                return Err(scope.missing(path));
            }
            if !valid_dns_name(&sa.address) {
                return Err(scope.invalid(path, format!("{:?} is not a DNS name", sa.address)));
            }
            if let Some(port) = port_of(sa) {
                let target = (sa.address.clone(), port);
                if !targets.contains(&target) {
                    targets.push(target);
                }
            }
            set_address(lb, IpAddr::from([0, 0, 0, 0]));
        }
    }
    compile_in(scope, "load_assignment", &check)?;
    if mode == DnsMode::Logical && (check.endpoints.len() != 1 || count != 1) {
        return Err(scope.invalid(
            "load_assignment",
            "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint",
        ));
    }
    Ok(DnsConfig {
        mode,
        family,
        refresh,
        respect_ttl: c.respect_dns_ttl,
        assignment,
        targets,
    })
}

/// Letters, digits, `-`, `_` and dots; no empty label.
fn valid_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pb::envoy::config::cluster::v3::cluster;
    use pb::envoy::config::endpoint::v3::{Endpoint, LbEndpoint, LocalityLbEndpoints};

    fn lb(host: &str, port: u32, weight: u32) -> LbEndpoint {
        LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(super::super::endpoint::tests::address(host, port)),
                ..Default::default()
            })),
            load_balancing_weight: Some(pb::google::protobuf::UInt32Value { value: weight }),
            ..Default::default()
        }
    }

    /// Istio's shape for a `resolution: DNS` ServiceEntry.
    pub(crate) fn dns_cluster(
        name: &str,
        kind: cluster::DiscoveryType,
        hosts: &[(&str, u32)],
    ) -> Cluster {
        Cluster {
            name: name.into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(kind as i32)),
            dns_lookup_family: DnsLookupFamily::V4Only as i32,
            load_assignment: Some(ClusterLoadAssignment {
                cluster_name: name.into(),
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: hosts.iter().map(|(h, p)| lb(h, *p, 1)).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn families_select_addresses() {
        let found: Vec<IpAddr> = ["::1", "127.0.0.1", "10.0.0.1", "127.0.0.1", "fd00::2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let show = |v: Vec<IpAddr>| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            show(DnsFamily::V4Only.select(found.clone())),
            ["127.0.0.1", "10.0.0.1"]
        );
        assert_eq!(
            show(DnsFamily::V6Only.select(found.clone())),
            ["::1", "fd00::2"]
        );
        assert_eq!(
            show(DnsFamily::Auto.select(found.clone())),
            ["::1", "fd00::2"]
        );
        assert_eq!(
            show(DnsFamily::V4Preferred.select(found.clone())),
            ["127.0.0.1", "10.0.0.1"]
        );
        assert_eq!(show(DnsFamily::All.select(found.clone())).len(), 4);
        let only_v4: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap()];
        assert_eq!(show(DnsFamily::Auto.select(only_v4.clone())), ["10.0.0.1"]);
        let only_v6: Vec<IpAddr> = vec!["::1".parse().unwrap()];
        assert_eq!(show(DnsFamily::V4Preferred.select(only_v6)), ["::1"]);
        assert!(DnsFamily::V6Only.select(only_v4).is_empty());
    }

    #[test]
    fn strict_dns_substitutes_every_address() {
        let c = dns_cluster(
            "outbound|80||dns.example",
            cluster::DiscoveryType::StrictDns,
            &[("a.example", 80), ("10.0.0.9", 81), ("b.example", 80)],
        );
        let scope = Scope::new("cluster", &c.name);
        let cfg = compile(&scope, &c, DnsMode::Strict).unwrap();
        assert_eq!(cfg.family, DnsFamily::V4Only);
        assert_eq!(cfg.refresh, DEFAULT_DNS_REFRESH_RATE);
        assert_eq!(
            cfg.targets,
            [("a.example".to_string(), 80), ("b.example".to_string(), 80)]
        );
        let a: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()];
        // b.example never resolved: left out.
        let cla = cfg.resolved_assignment(&[Some(a), None]);
        let set = cfg.endpoints(&c.name, &cla).unwrap();
        let addrs: Vec<String> = set
            .endpoints
            .iter()
            .map(|e| e.address.to_string())
            .collect();
        assert_eq!(addrs, ["127.0.0.1:80", "127.0.0.2:80", "10.0.0.9:81"]);
        // Nothing resolved yet: only the literal.
        let set = cfg
            .endpoints(&c.name, &cfg.resolved_assignment(&[None, None]))
            .unwrap();
        assert_eq!(set.endpoints.len(), 1);
    }

    #[test]
    fn logical_dns_takes_the_first_address_of_one_name() {
        let c = dns_cluster(
            "outbound|80||rr.example",
            cluster::DiscoveryType::LogicalDns,
            &[("rr.example", 8080)],
        );
        let scope = Scope::new("cluster", &c.name);
        let cfg = compile(&scope, &c, DnsMode::Logical).unwrap();
        let ips: Vec<IpAddr> = vec!["127.0.0.3".parse().unwrap(), "127.0.0.4".parse().unwrap()];
        let set = cfg
            .endpoints(&c.name, &cfg.resolved_assignment(&[Some(ips)]))
            .unwrap();
        assert_eq!(set.endpoints.len(), 1);
        assert_eq!(set.endpoints[0].address, "127.0.0.3:8080".parse().unwrap());
        let two = dns_cluster(
            "c",
            cluster::DiscoveryType::LogicalDns,
            &[("a.example", 80), ("b.example", 80)],
        );
        assert_eq!(
            compile(&Scope::new("cluster", "c"), &two, DnsMode::Logical)
                .unwrap_err()
                .to_string(),
            "cluster c: load_assignment: LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint"
        );
    }

    #[test]
    fn settings_and_refusals() {
        let mut c = dns_cluster("c", cluster::DiscoveryType::StrictDns, &[("a.example", 80)]);
        c.dns_lookup_family = DnsLookupFamily::All as i32;
        c.dns_refresh_rate = Some(pb::google::protobuf::Duration {
            seconds: 0,
            nanos: 250_000_000,
        });
        c.respect_dns_ttl = true;
        let scope = Scope::new("cluster", "c");
        let cfg = compile(&scope, &c, DnsMode::Strict).unwrap();
        assert_eq!(cfg.family, DnsFamily::All);
        assert_eq!(cfg.refresh, Duration::from_millis(250));
        assert!(cfg.respect_ttl);
        let bad = dns_cluster("c", cluster::DiscoveryType::StrictDns, &[("a b", 80)]);
        assert_eq!(
            compile(&scope, &bad, DnsMode::Strict)
                .unwrap_err()
                .to_string(),
            "cluster c: load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: \"a b\" is not a DNS name"
        );
        let mut zero = c.clone();
        zero.dns_refresh_rate = Some(Default::default());
        assert_eq!(
            compile(&scope, &zero, DnsMode::Strict)
                .unwrap_err()
                .to_string(),
            "cluster c: dns_refresh_rate: must be at least 1ms"
        );
        let mut named = c.clone();
        if let Some(HostIdentifier::Endpoint(ep)) =
            &mut named.load_assignment.as_mut().unwrap().endpoints[0].lb_endpoints[0]
                .host_identifier
            && let Some(address::Address::SocketAddress(sa)) =
                &mut ep.address.as_mut().unwrap().address
        {
            sa.resolver_name = "custom".into();
        }
        assert_eq!(
            compile(&scope, &named, DnsMode::Strict)
                .unwrap_err()
                .to_string(),
            "cluster c: load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.resolver_name is not supported"
        );
    }
}
