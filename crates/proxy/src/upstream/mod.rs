//! Upstream clusters at run time: endpoint selection and connection pools.
//!
//! A [`ClusterEntry`] is the immutable view of one cluster in a config
//! snapshot. Its hosts are [`Host`] objects owned by the cluster's
//! [`Upstream`], which lives as long as the cluster exists so that pools,
//! round-robin position and active-request counts survive EDS and CDS pushes.
//!
//! ORIGINAL_DST clusters have no endpoint list: their hosts are made on
//! demand, one per original destination, and forgotten once unused for the
//! cluster's `cleanup_interval`.

mod lb;
mod pool;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use lb::Balancer;
pub use pool::{SendError, UpstreamBody};
use tokio::net::{TcpSocket, TcpStream};

use crate::config::{ClusterConfig, Discovery, EndpointSet};
use crate::stats::ClusterStats;

/// Why an upstream connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connection timeout")]
    Timeout,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Connects to `addr`, first binding `source` when the cluster has an
/// `upstream_bind_config` (e.g. 127.0.0.6, so that capture rules let the
/// connection through).
pub async fn connect(
    addr: SocketAddr,
    source: Option<SocketAddr>,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let attempt = async {
        match source {
            None => TcpStream::connect(addr).await,
            Some(src) => {
                let socket = if addr.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.bind(src)?;
                socket.connect(addr).await
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(ConnectError::Timeout),
        Ok(Err(e)) => Err(ConnectError::Io(e)),
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    }
}

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
    /// ORIGINAL_DST hosts, with when each was last used.
    dynamic: Mutex<DynamicHosts>,
}

#[derive(Debug)]
struct DynamicHosts {
    hosts: HashMap<SocketAddr, (Arc<Host>, Instant)>,
    last_sweep: Instant,
}

impl Upstream {
    pub fn new(name: Arc<str>, stats: Arc<ClusterStats>) -> Upstream {
        Upstream {
            name,
            stats,
            rr: AtomicUsize::new(0),
            hosts: Mutex::new(HashMap::new()),
            dynamic: Mutex::new(DynamicHosts {
                hosts: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// The host for an original destination, made on first use. Hosts idle
    /// for `cleanup` (and not in use) are dropped with their pools.
    pub fn original_dst_host(&self, dst: SocketAddr, cleanup: Duration) -> Arc<Host> {
        let now = Instant::now();
        let mut d = self.dynamic.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(d.last_sweep) >= cleanup {
            d.hosts.retain(|_, (host, used)| {
                now.duration_since(*used) < cleanup || Arc::strong_count(host) > 1
            });
            d.last_sweep = now;
            self.stats.membership_total.set(d.hosts.len() as i64);
        }
        let before = d.hosts.len();
        let entry = d
            .hosts
            .entry(dst)
            .or_insert_with(|| (Arc::new(Host::new(dst, self.stats.clone())), now));
        entry.1 = now;
        let host = entry.0.clone();
        if d.hosts.len() != before {
            self.stats.membership_total.set(d.hosts.len() as i64);
            self.stats.membership_healthy.set(d.hosts.len() as i64);
        }
        host
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
        if !matches!(config.discovery, Discovery::OriginalDst { .. }) {
            stats.membership_healthy.set(hosts.len() as i64);
            stats.membership_total.set(endpoints.total as i64);
        }
        ClusterEntry {
            balancer: Balancer::new(config.lb, &weights),
            config,
            upstream,
            hosts,
        }
    }

    /// Picks an endpoint, or `None` when the cluster has no healthy host
    /// (always for ORIGINAL_DST clusters: see [`ClusterEntry::original_dst_host`]).
    pub fn pick(&self) -> Option<&Arc<Host>> {
        let i = self.balancer.pick(&self.hosts, &self.upstream.rr)?;
        self.hosts.get(i)
    }

    /// For an ORIGINAL_DST cluster, the host at the downstream connection's
    /// original destination; `None` for other clusters.
    pub fn original_dst_host(&self, dst: SocketAddr) -> Option<Arc<Host>> {
        match &self.config.discovery {
            Discovery::OriginalDst { cleanup_interval } => {
                Some(self.upstream.original_dst_host(dst, *cleanup_interval))
            }
            _ => None,
        }
    }
}
