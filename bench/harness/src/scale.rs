//! Many simulated proxies in one process, to load mizzen-pilot.
//!
//! Each simulated proxy is the real ADS client (`mizzen_xds::client::run_ads`)
//! with a handler that accepts everything, subscribes to what a proxy would
//! (the EDS clusters of its CDS, the RDS names of its listeners), counts
//! updates, and watches for a *probe*: a cluster's endpoints containing a
//! given address. The harness changes the config, sets the probe, and times
//! how long the change takes to reach every proxy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use mizzen_xds::client::{ClientConfig, Node, XdsHandler, run_ads};
use mizzen_xds::pb::envoy::config::listener::v3::{Listener, filter};
use mizzen_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use mizzen_xds::pb::google::protobuf::Any;
use mizzen_xds::type_url;

/// The leading fields of a `Cluster`: enough to know its EDS name without
/// decoding the rest (prost skips unknown fields by length).
#[derive(Clone, PartialEq, prost::Message)]
struct ClusterHead {
    #[prost(string, tag = "1")]
    name: String,
    /// `Cluster.type` (a oneof member): 3 is EDS.
    #[prost(int32, optional, tag = "2")]
    discovery_type: Option<i32>,
    #[prost(message, optional, tag = "3")]
    eds_cluster_config: Option<EdsConfigHead>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EdsConfigHead {
    #[prost(string, tag = "2")]
    service_name: String,
}

/// `ClusterLoadAssignment.cluster_name` alone.
#[derive(Clone, PartialEq, prost::Message)]
struct AssignmentHead {
    #[prost(string, tag = "1")]
    cluster_name: String,
}

const EDS: i32 = 3;

/// The EDS names of a CDS update.
fn eds_names(resources: &[Any]) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for any in resources {
        let head = <ClusterHead as prost::Message>::decode(any.value.as_slice())
            .map_err(|e| format!("cluster: {e}"))?;
        if head.discovery_type == Some(EDS) {
            let service = head
                .eds_cluster_config
                .map(|c| c.service_name)
                .filter(|s| !s.is_empty());
            names.push(service.unwrap_or(head.name));
        }
    }
    Ok(names)
}

/// The route configuration names an LDS update refers to.
fn rds_names(resources: &[Any]) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for any in resources {
        let listener: Listener = mizzen_xds::unpack(any)?;
        for chain in &listener.filter_chains {
            for f in &chain.filters {
                let Some(filter::ConfigType::TypedConfig(config)) = &f.config_type else {
                    continue;
                };
                let Ok(hcm) = mizzen_xds::unpack::<HttpConnectionManager>(config) else {
                    continue;
                };
                if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                    names.push(rds.route_config_name);
                }
            }
        }
    }
    Ok(names)
}

/// A change being waited for: the endpoints of `cluster` containing the
/// encoded bytes `needle` (see [`Probe::address`]).
#[derive(Debug, Clone)]
pub struct Probe {
    pub id: u64,
    pub cluster: String,
    pub needle: Vec<u8>,
}

impl Probe {
    /// A probe for an endpoint at `ip` in `cluster`. The needle is the
    /// `SocketAddress.address` field (number 2, length-delimited) as
    /// protobuf encodes it: key, length, text; so `127.99.0.1` does not
    /// match inside `127.99.0.10`.
    pub fn address(id: u64, cluster: String, ip: std::net::Ipv4Addr) -> Probe {
        const ADDRESS_KEY: u8 = (2 << 3) | 2;
        let text = ip.to_string();
        let mut needle = vec![ADDRESS_KEY, text.len() as u8];
        needle.extend_from_slice(text.as_bytes());
        Probe {
            id,
            cluster,
            needle,
        }
    }
}

/// Whether `resources` (an EDS update) holds `probe`'s cluster with the needle.
fn probe_matches(probe: &Probe, resources: &[Any]) -> bool {
    resources.iter().any(|any| {
        <AssignmentHead as prost::Message>::decode(any.value.as_slice())
            .is_ok_and(|head| head.cluster_name == probe.cluster)
            && contains(&any.value, &probe.needle)
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Simulated proxies, their tasks, and the state their handlers share.
/// Dropping it ends every client (and so closes its stream).
pub struct Fleet {
    shared: Arc<FleetShared>,
    proxies: Vec<Arc<SimProxy>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// One simulated proxy's counters.
#[derive(Default)]
struct SimProxy {
    /// Updates received per type: CDS, EDS, LDS, RDS.
    updates: [AtomicU64; 4],
    /// Nanoseconds from the fleet's start at which all four types had
    /// arrived at least once (0: not yet).
    synced_at: AtomicU64,
    probe_id: AtomicU64,
    probe_at: AtomicU64,
    names: Mutex<(Vec<String>, Vec<String>)>,
}

struct Handler {
    fleet: Arc<FleetShared>,
    me: Arc<SimProxy>,
}

/// What handlers need from the fleet (the probe and the clock).
struct FleetShared {
    base: Instant,
    probe: RwLock<Option<Probe>>,
}

impl XdsHandler for Handler {
    fn apply(&self, type_url: &str, _version: &str, resources: Vec<Any>) -> Result<(), String> {
        let slot = match type_url {
            type_url::CLUSTER => 0,
            type_url::ENDPOINT => 1,
            type_url::LISTENER => 2,
            type_url::ROUTE => 3,
            _ => return Ok(()),
        };
        match type_url {
            type_url::CLUSTER => {
                let names = eds_names(&resources)?;
                self.me
                    .names
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .0 = names;
            }
            type_url::LISTENER => {
                let names = rds_names(&resources)?;
                self.me
                    .names
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .1 = names;
            }
            type_url::ENDPOINT => {
                let probe = self
                    .fleet
                    .probe
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                if let Some(probe) = probe
                    && self.me.probe_id.load(Ordering::Acquire) != probe.id
                    && probe_matches(&probe, &resources)
                {
                    self.me
                        .probe_at
                        .store(self.fleet.now_ns(), Ordering::Release);
                    self.me.probe_id.store(probe.id, Ordering::Release);
                }
            }
            _ => {}
        }
        self.me.updates[slot].fetch_add(1, Ordering::Relaxed);
        if self.me.synced_at.load(Ordering::Relaxed) == 0
            && self
                .me
                .updates
                .iter()
                .all(|u| u.load(Ordering::Relaxed) > 0)
        {
            self.me
                .synced_at
                .store(self.fleet.now_ns().max(1), Ordering::Release);
        }
        Ok(())
    }

    fn wanted(&self, type_url: &str) -> Vec<String> {
        let names = self.me.names.lock().unwrap_or_else(PoisonError::into_inner);
        match type_url {
            type_url::ENDPOINT => names.0.clone(),
            type_url::ROUTE => names.1.clone(),
            _ => Vec::new(),
        }
    }
}

impl FleetShared {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

/// How far a change has spread.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spread {
    /// Proxies reached, of all.
    pub reached: usize,
    pub proxies: usize,
    /// Time to reach half and all of the proxies (all: only if every one was
    /// reached).
    pub median: Option<Duration>,
    pub all: Option<Duration>,
}

/// Summarizes per-proxy arrival times (from the change), `None` for a proxy
/// not reached.
pub fn spread(times: &[Option<Duration>]) -> Spread {
    let mut reached: Vec<Duration> = times.iter().flatten().copied().collect();
    reached.sort();
    let proxies = times.len();
    let median = (reached.len() * 2 >= proxies && !reached.is_empty())
        .then(|| reached[(proxies.max(1) - 1) / 2]);
    Spread {
        reached: reached.len(),
        proxies,
        median,
        all: (reached.len() == proxies).then(|| reached.last().copied().unwrap_or_default()),
    }
}

impl Fleet {
    /// Starts one ADS client per node against `xds` (`http://host:port`).
    pub fn start(xds: &str, nodes: Vec<Node>) -> Fleet {
        let shared = Arc::new(FleetShared {
            base: Instant::now(),
            probe: RwLock::new(None),
        });
        let mut proxies = Vec::with_capacity(nodes.len());
        let mut tasks = Vec::with_capacity(nodes.len());
        for node in nodes {
            let me = Arc::new(SimProxy::default());
            let handler = Arc::new(Handler {
                fleet: shared.clone(),
                me: me.clone(),
            });
            let config = ClientConfig {
                address: xds.to_owned(),
                node,
            };
            tasks.push(tokio::spawn(run_ads(config, handler)));
            proxies.push(me);
        }
        Fleet {
            shared,
            proxies,
            tasks,
        }
    }

    pub fn len(&self) -> usize {
        self.proxies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.proxies.is_empty()
    }

    /// When each proxy had received every type once, from the fleet's start.
    pub fn synced(&self) -> Vec<Option<Duration>> {
        self.proxies
            .iter()
            .map(|p| match p.synced_at.load(Ordering::Acquire) {
                0 => None,
                ns => Some(Duration::from_nanos(ns)),
            })
            .collect()
    }

    /// Updates received so far by all proxies: CDS, EDS, LDS, RDS.
    pub fn updates(&self) -> [u64; 4] {
        let mut total = [0; 4];
        for p in &self.proxies {
            for (t, u) in total.iter_mut().zip(&p.updates) {
                *t += u.load(Ordering::Relaxed);
            }
        }
        total
    }

    /// Starts watching for `probe` (set it before making the change, so
    /// that no update is missed).
    pub fn set_probe(&self, probe: Probe) {
        *self
            .shared
            .probe
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(probe);
    }

    /// For each proxy, when it saw probe `id`, counted from `since`.
    pub fn probe_times(&self, id: u64, since: Instant) -> Vec<Option<Duration>> {
        let since_ns = since.duration_since(self.shared.base).as_nanos() as u64;
        self.proxies
            .iter()
            .map(|p| {
                (p.probe_id.load(Ordering::Acquire) == id).then(|| {
                    Duration::from_nanos(
                        p.probe_at.load(Ordering::Acquire).saturating_sub(since_ns),
                    )
                })
            })
            .collect()
    }

    /// Polls `times` until every proxy has a time or `timeout` passes.
    pub async fn wait_all(
        &self,
        timeout: Duration,
        times: impl Fn(&Fleet) -> Vec<Option<Duration>>,
    ) -> Vec<Option<Duration>> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = times(self);
            if now.iter().all(Option::is_some) || Instant::now() >= deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mizzen_xds::pb::envoy::config::cluster::v3::{Cluster, cluster};
    use mizzen_xds::pb::envoy::config::core::v3::{
        Address, SocketAddress, address, socket_address,
    };
    use mizzen_xds::pb::envoy::config::endpoint::v3::{
        ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
    };
    use mizzen_xds::pb::envoy::config::listener::v3::{Filter, FilterChain};
    use mizzen_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::Rds;

    fn cluster(name: &str, kind: cluster::DiscoveryType, service_name: &str) -> Any {
        mizzen_xds::pack(&Cluster {
            name: name.into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(kind as i32)),
            eds_cluster_config: (!service_name.is_empty()).then(|| cluster::EdsClusterConfig {
                service_name: service_name.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn eds_names_come_from_eds_clusters_only() {
        let resources = vec![
            cluster("outbound|80||a", cluster::DiscoveryType::Eds, ""),
            cluster("inbound|8080||", cluster::DiscoveryType::Static, ""),
            cluster("outbound|80||b", cluster::DiscoveryType::Eds, "b-endpoints"),
        ];
        assert_eq!(
            eds_names(&resources).unwrap(),
            ["outbound|80||a", "b-endpoints"]
        );
    }

    #[test]
    fn rds_names_come_from_connection_managers() {
        let hcm = HttpConnectionManager {
            route_specifier: Some(RouteSpecifier::Rds(Rds {
                route_config_name: "http_proxy".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let listener = Listener {
            name: "l".into(),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.http_connection_manager".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(mizzen_xds::pack(&hcm))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            rds_names(&[mizzen_xds::pack(&listener)]).unwrap(),
            ["http_proxy"]
        );
    }

    fn assignment(cluster: &str, ip: &str) -> Any {
        let address = Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(8080)),
                ..Default::default()
            })),
        };
        mizzen_xds::pack(&ClusterLoadAssignment {
            cluster_name: cluster.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(address),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    #[test]
    fn probes_match_the_named_cluster_only() {
        let probe = Probe::address(1, "outbound|80||a".into(), "127.99.0.1".parse().unwrap());
        let moved = [
            assignment("outbound|80||b", "127.100.0.1"),
            assignment("outbound|80||a", "127.99.0.1"),
        ];
        assert!(probe_matches(&probe, &moved));
        let elsewhere = [
            assignment("outbound|80||a", "127.100.0.1"),
            assignment("outbound|80||b", "127.99.0.1"),
        ];
        assert!(!probe_matches(&probe, &elsewhere));
        let longer = [assignment("outbound|80||a", "127.99.0.10")];
        assert!(!probe_matches(&probe, &longer));
    }

    #[test]
    fn spread_of_arrivals() {
        let ms = Duration::from_millis;
        let s = spread(&[Some(ms(30)), Some(ms(10)), Some(ms(20)), Some(ms(40))]);
        assert_eq!(s.reached, 4);
        assert_eq!(s.median, Some(ms(20)));
        assert_eq!(s.all, Some(ms(40)));
        let s = spread(&[Some(ms(30)), None, Some(ms(10))]);
        assert_eq!((s.reached, s.proxies), (2, 3));
        assert_eq!(s.median, Some(ms(30)));
        assert_eq!(s.all, None);
        let s = spread(&[None, None, Some(ms(1))]);
        assert_eq!(s.median, None);
    }
}
