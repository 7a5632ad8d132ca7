//! Upstream clusters at run time: endpoint selection and connection pools.
//!
//! A [`ClusterEntry`] is the immutable view of one cluster in a config
//! snapshot. Its hosts are [`Host`] objects owned by the cluster's
//! [`Upstream`], which lives as long as the cluster exists so that pools,
//! round-robin position and active-request counts survive EDS and CDS pushes.

mod lb;
mod pool;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize};
use std::sync::{Arc, Mutex};

pub use lb::Balancer;
pub use pool::{SendError, UpstreamBody};

use crate::config::{ClusterConfig, EndpointSet};
use crate::stats::ClusterStats;

/// One endpoint of a cluster with its connection pools.
#[derive(Debug)]
pub struct Host {
    pub address: SocketAddr,
    /// Requests in flight, for LEAST_REQUEST.
    active: AtomicU32,
    pool: pool::Pools,
    stats: Arc<ClusterStats>,
}

impl Host {
    fn new(address: SocketAddr, stats: Arc<ClusterStats>) -> Host {
        Host {
            address,
            active: AtomicU32::new(0),
            pool: pool::Pools::default(),
            stats,
        }
    }
}

/// The long-lived part of a cluster.
#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub stats: Arc<ClusterStats>,
    rr: AtomicUsize,
    hosts: Mutex<HashMap<SocketAddr, Arc<Host>>>,
}

impl Upstream {
    pub fn new(name: Arc<str>, stats: Arc<ClusterStats>) -> Upstream {
        Upstream {
            name,
            stats,
            rr: AtomicUsize::new(0),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// Hosts for `set`, reusing existing ones (and their pools) and forgetting
    /// hosts no longer listed.
    fn hosts_for(&self, set: &EndpointSet) -> Vec<Arc<Host>> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let out: Vec<Arc<Host>> = set
            .endpoints
            .iter()
            .map(|e| {
                hosts
                    .entry(e.address)
                    .or_insert_with(|| Arc::new(Host::new(e.address, self.stats.clone())))
                    .clone()
            })
            .collect();
        hosts.retain(|addr, _| set.endpoints.iter().any(|e| e.address == *addr));
        out
    }
}

/// A cluster as one config snapshot sees it.
#[derive(Debug)]
pub struct ClusterEntry {
    pub config: Arc<ClusterConfig>,
    pub upstream: Arc<Upstream>,
    pub hosts: Vec<Arc<Host>>,
    balancer: Balancer,
}

impl ClusterEntry {
    pub fn new(
        config: Arc<ClusterConfig>,
        endpoints: &EndpointSet,
        upstream: Arc<Upstream>,
    ) -> ClusterEntry {
        let hosts = upstream.hosts_for(endpoints);
        let weights: Vec<u32> = endpoints.endpoints.iter().map(|e| e.weight).collect();
        let stats = &upstream.stats;
        stats.membership_healthy.set(hosts.len() as i64);
        stats.membership_total.set(endpoints.total as i64);
        ClusterEntry {
            balancer: Balancer::new(config.lb, &weights),
            config,
            upstream,
            hosts,
        }
    }

    /// Picks an endpoint, or `None` when the cluster has no healthy host.
    pub fn pick(&self) -> Option<&Arc<Host>> {
        let i = self.balancer.pick(&self.hosts, &self.upstream.rr)?;
        self.hosts.get(i)
    }
}
