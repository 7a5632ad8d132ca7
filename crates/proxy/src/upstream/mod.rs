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

pub mod dns;
mod lb;
mod pool;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use lb::{Balancer, Layout, hash_bytes};
pub use pool::{RequestBody, SendError, UpstreamBody};
use tokio::net::{TcpSocket, TcpStream};

use crate::config::cluster_policy::Outlier;
use crate::config::tls::UpstreamTls;
use crate::config::{ClusterConfig, Discovery, EndpointSet};
use crate::stats::ClusterStats;
use crate::tls::{HostTls, Secrets};

/// The transport socket of each host of a cluster in one snapshot.
#[derive(Debug, Default)]
pub enum Transports {
    /// Every host in plaintext (no TLS configured: the common case).
    #[default]
    Plain,
    /// Every host with this socket (`None`: plaintext).
    All(Option<Arc<UpstreamTls>>),
    /// Per endpoint address (`transport_socket_matches`), with the socket
    /// for addresses not listed.
    ByAddress(
        HashMap<SocketAddr, Option<Arc<UpstreamTls>>>,
        Option<Arc<UpstreamTls>>,
    ),
}

impl Transports {
    fn get(&self, addr: SocketAddr) -> Option<&Arc<UpstreamTls>> {
        match self {
            Transports::Plain => None,
            Transports::All(t) => t.as_ref(),
            Transports::ByAddress(map, other) => match map.get(&addr) {
                Some(t) => t.as_ref(),
                None => other.as_ref(),
            },
        }
    }
}

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
    /// TLS origination; `None` is plaintext. A host has one transport for
    /// life, so its pools never mix TLS and plaintext connections.
    pub tls: Option<Arc<HostTls>>,
    /// Requests in flight, for LEAST_REQUEST.
    active: AtomicU32,
    pool: pool::Pools,
    stats: Arc<ClusterStats>,
    breakers: Arc<Breakers>,
    outlier: OutlierState,
}

impl Host {
    fn new(
        address: SocketAddr,
        stats: Arc<ClusterStats>,
        breakers: Arc<Breakers>,
        tls: Option<Arc<HostTls>>,
    ) -> Host {
        Host {
            address,
            tls,
            active: AtomicU32::new(0),
            pool: pool::Pools::default(),
            stats,
            breakers,
            outlier: OutlierState::default(),
        }
    }

    #[cfg(test)]
    pub(crate) fn for_tests(address: SocketAddr) -> Host {
        Host::new(address, Arc::default(), Arc::default(), None)
    }

    /// Whether this host's transport is `tls` (equal settings count as the same).
    fn has_transport(&self, tls: Option<&Arc<UpstreamTls>>) -> bool {
        match (&self.tls, tls) {
            (None, None) => true,
            (Some(a), Some(b)) => a.config.key == b.key,
            _ => false,
        }
    }

    /// Whether outlier detection has this host ejected at `now` (ms).
    fn ejected(&self, now: u64) -> bool {
        self.outlier.ejected_until.load(Ordering::Relaxed) > now
    }
}

/// Milliseconds on a process-wide monotonic clock (never 0).
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Consecutive-error counters and ejection state of one host.
#[derive(Debug, Default)]
struct OutlierState {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    /// `now_ms()` until which the host is ejected (0: never ejected).
    ejected_until: AtomicU64,
    /// Times ejected, decaying while healthy: multiplies the ejection time.
    ejections: AtomicU32,
}

/// What one attempt did, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// The upstream answered with this status.
    Status(u16),
    /// No connection could be made (local origin).
    ConnectFailed,
    /// The attempt timed out (local origin).
    Timeout,
    /// The connection was reset (local origin).
    Reset,
}

/// Circuit-breaker counters shared by a cluster's hosts; the limits come
/// from the config of each request's snapshot.
#[derive(Debug, Default)]
pub struct Breakers {
    pub(crate) connections: AtomicU32,
    pub(crate) pending: AtomicU32,
    pub(crate) requests: AtomicU32,
    pub(crate) retries: AtomicU32,
    /// Signalled when a connection becomes idle or closes, for pending requests.
    pub(crate) released: tokio::sync::Notify,
}

impl Breakers {
    /// Wakes requests waiting for a connection; free when none waits.
    pub(crate) fn wake_pending(&self) {
        if self.pending.load(Ordering::SeqCst) > 0 {
            self.released.notify_waiters();
        }
    }

    /// Takes one unit of `counter` if it is below `max`; released on drop.
    pub(crate) fn try_acquire(counter: &AtomicU32, max: u32) -> Option<Slot<'_>> {
        Self::try_take(counter, max).then(|| Slot(counter))
    }

    /// Adds one to `counter` if it is below `max`; the caller gives it back.
    pub(crate) fn try_take(counter: &AtomicU32, max: u32) -> bool {
        let mut current = counter.load(Ordering::Relaxed);
        loop {
            if current >= max {
                return false;
            }
            match counter.compare_exchange_weak(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

/// One unit of a circuit-breaker counter, given back on drop.
#[derive(Debug)]
pub struct Slot<'a>(&'a AtomicU32);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The long-lived part of a cluster.
#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub stats: Arc<ClusterStats>,
    pub breakers: Arc<Breakers>,
    /// Latest `ejected_until` of any host: no host is ejected after it.
    eject_horizon: AtomicU64,
    rr: AtomicUsize,
    hosts: Mutex<HashMap<SocketAddr, Arc<Host>>>,
    /// ORIGINAL_DST hosts, with when each was last used.
    dynamic: Mutex<DynamicHosts>,
    secrets: Arc<Secrets>,
}

#[derive(Debug)]
struct DynamicHosts {
    hosts: HashMap<SocketAddr, (Arc<Host>, Instant)>,
    last_sweep: Instant,
}

impl Upstream {
    pub fn new(name: Arc<str>, stats: Arc<ClusterStats>, secrets: Arc<Secrets>) -> Upstream {
        Upstream {
            secrets,
            name,
            stats,
            breakers: Arc::default(),
            eject_horizon: AtomicU64::new(0),
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
    pub fn original_dst_host(
        &self,
        dst: SocketAddr,
        cleanup: Duration,
        tls: Option<&Arc<UpstreamTls>>,
    ) -> Arc<Host> {
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
            .or_insert_with(|| (self.new_host(dst, tls), now));
        if !entry.0.has_transport(tls) {
            entry.0 = self.new_host(dst, tls);
        }
        entry.1 = now;
        let host = entry.0.clone();
        if d.hosts.len() != before {
            self.stats.membership_total.set(d.hosts.len() as i64);
            self.stats.membership_healthy.set(d.hosts.len() as i64);
        }
        host
    }

    fn new_host(&self, address: SocketAddr, tls: Option<&Arc<UpstreamTls>>) -> Arc<Host> {
        let tls = tls.map(|config| {
            Arc::new(HostTls {
                config: config.clone(),
                secrets: self.secrets.clone(),
            })
        });
        Arc::new(Host::new(
            address,
            self.stats.clone(),
            self.breakers.clone(),
            tls,
        ))
    }

    /// Hosts for `set`, reusing existing ones (and their pools) when their
    /// transport is unchanged, and forgetting hosts no longer listed.
    fn hosts_for(&self, set: &EndpointSet, transports: &Transports) -> Vec<Arc<Host>> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let out: Vec<Arc<Host>> = set
            .endpoints
            .iter()
            .map(|e| {
                let tls = transports.get(e.address);
                let host = hosts
                    .entry(e.address)
                    .or_insert_with(|| self.new_host(e.address, tls));
                if !host.has_transport(tls) {
                    *host = self.new_host(e.address, tls);
                }
                host.clone()
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
    /// The socket for ORIGINAL_DST hosts (endpoints without metadata).
    original_dst_tls: Option<Arc<UpstreamTls>>,
    pub upstream: Arc<Upstream>,
    pub hosts: Vec<Arc<Host>>,
    balancer: Balancer,
    /// Priorities and locality weights, when the endpoints have them.
    layout: Option<Layout>,
}

impl ClusterEntry {
    pub fn new(
        config: Arc<ClusterConfig>,
        endpoints: &EndpointSet,
        upstream: Arc<Upstream>,
        transports: Transports,
    ) -> ClusterEntry {
        let hosts = upstream.hosts_for(endpoints, &transports);
        let original_dst_tls = match &transports {
            Transports::Plain => None,
            Transports::All(t) => t.clone(),
            Transports::ByAddress(_, other) => other.clone(),
        };
        let weights: Vec<(SocketAddr, u32)> = endpoints
            .endpoints
            .iter()
            .map(|e| (e.address, e.weight))
            .collect();
        let stats = &upstream.stats;
        if !matches!(config.discovery, Discovery::OriginalDst { .. }) {
            stats.membership_healthy.set(hosts.len() as i64);
            stats.membership_total.set(endpoints.total as i64);
        }
        ClusterEntry {
            original_dst_tls,
            balancer: Balancer::new(config.lb, &config.lb_params, &weights),
            layout: Layout::new(config.lb, &config.lb_params, endpoints),
            config,
            upstream,
            hosts,
        }
    }

    /// Picks an endpoint, or `None` when the cluster has no healthy host
    /// (always for ORIGINAL_DST clusters: see [`ClusterEntry::original_dst_host`]).
    pub fn pick(&self, hash: Option<u64>) -> Option<&Arc<Host>> {
        if let Some(layout) = &self.layout {
            let now = now_ms();
            let ejections = self.config.outlier.is_some()
                && self.upstream.eject_horizon.load(Ordering::Relaxed) > now;
            let ejected = |i: usize| self.hosts[i].ejected(now);
            let ejected: Option<&dyn Fn(usize) -> bool> = ejections.then_some(&ejected);
            let i = layout.pick(&self.hosts, &self.upstream.rr, hash, ejected)?;
            return self.hosts.get(i);
        }
        // Only clusters with outlier detection can have ejected hosts.
        let usable = match self.config.outlier {
            Some(_) => {
                let now = now_ms();
                if self.upstream.eject_horizon.load(Ordering::Relaxed) > now {
                    self.usable_hosts(now)
                } else {
                    None
                }
            }
            None => None,
        };
        let i = self
            .balancer
            .pick(&self.hosts, &self.upstream.rr, hash, usable.as_deref())?;
        self.hosts.get(i)
    }

    /// The hosts not ejected, or `None` to use them all: when nothing is
    /// ejected, or when too few are healthy (Envoy's panic mode).
    fn usable_hosts(&self, now: u64) -> Option<Vec<usize>> {
        let ok: Vec<usize> = (0..self.hosts.len())
            .filter(|i| !self.hosts[*i].ejected(now))
            .collect();
        if ok.len() == self.hosts.len() {
            return None;
        }
        let threshold = u64::from(self.config.lb_params.panic_threshold);
        // Shares in hundredths of a percent.
        if (ok.len() as u64) * 10_000 < threshold * self.hosts.len() as u64 {
            return None;
        }
        Some(ok)
    }

    /// Feeds outlier detection with the result of one attempt on `host`.
    pub fn report(&self, host: &Host, result: AttemptResult) {
        let Some(cfg) = &self.config.outlier else {
            return;
        };
        let o = &host.outlier;
        let status = match (result, cfg.split_local_origin) {
            (AttemptResult::Status(s), split) => {
                if split {
                    o.consecutive_local.store(0, Ordering::Relaxed);
                }
                s
            }
            (_, true) => {
                let n = o.consecutive_local.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= cfg.consecutive_local_origin {
                    o.consecutive_local.store(0, Ordering::Relaxed);
                    self.eject(host, cfg, cfg.enforcing_local_origin);
                }
                return;
            }
            // Without the split, local failures count as the gateway errors
            // a client would see.
            (AttemptResult::Timeout, false) => 504,
            (_, false) => 503,
        };
        if status >= 500 {
            let n = o.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= cfg.consecutive_5xx {
                o.consecutive_5xx.store(0, Ordering::Relaxed);
                self.eject(host, cfg, cfg.enforcing_5xx);
            }
        } else if o.consecutive_5xx.load(Ordering::Relaxed) != 0 {
            o.consecutive_5xx.store(0, Ordering::Relaxed);
        }
        if matches!(status, 502..=504) {
            let n = o.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= cfg.consecutive_gateway {
                o.consecutive_gateway.store(0, Ordering::Relaxed);
                self.eject(host, cfg, cfg.enforcing_gateway);
            }
        } else if o.consecutive_gateway.load(Ordering::Relaxed) != 0 {
            o.consecutive_gateway.store(0, Ordering::Relaxed);
        }
    }

    fn eject(&self, host: &Host, cfg: &Outlier, enforcing: u32) {
        if enforcing == 0 || (enforcing < 100 && rand::random_range(0..100) >= enforcing) {
            return;
        }
        let now = now_ms();
        if host.ejected(now) {
            return;
        }
        let ejected = self.hosts.iter().filter(|h| h.ejected(now)).count() as u64;
        let n = self.hosts.len().max(1) as u64;
        // At least one host may always be ejected.
        if ejected > 0 && (ejected + 1) * 100 > u64::from(cfg.max_ejection_percent) * n {
            return;
        }
        let o = &host.outlier;
        // The multiplier decays by one per interval spent healthy since the
        // last ejection ended.
        let previous = o.ejections.load(Ordering::Relaxed);
        let ended = o.ejected_until.load(Ordering::Relaxed);
        let interval = cfg.interval.as_millis().max(1) as u64;
        let decayed = if ended == 0 {
            0
        } else {
            let healthy_intervals = now.saturating_sub(ended) / interval;
            previous.saturating_sub(u32::try_from(healthy_intervals).unwrap_or(u32::MAX))
        };
        let times = decayed + 1;
        let duration = cfg
            .base_ejection_time
            .saturating_mul(times)
            .min(cfg.max_ejection_time);
        let until = now + duration.as_millis() as u64;
        o.ejections.store(times, Ordering::Relaxed);
        o.ejected_until.store(until, Ordering::Relaxed);
        self.upstream
            .eject_horizon
            .fetch_max(until, Ordering::Relaxed);
        self.upstream.stats.outlier_ejections.inc();
        tracing::debug!(cluster = %self.config.name, host = %host.address, ?duration, "outlier ejected");
    }

    /// For an ORIGINAL_DST cluster, the host at the downstream connection's
    /// original destination; `None` for other clusters.
    pub fn original_dst_host(&self, dst: SocketAddr) -> Option<Arc<Host>> {
        match &self.config.discovery {
            Discovery::OriginalDst { cleanup_interval } => Some(self.upstream.original_dst_host(
                dst,
                *cleanup_interval,
                self.original_dst_tls.as_ref(),
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cluster_policy::{LbParams, Limits, PoolOptions};
    use crate::config::endpoint::LbEndpointConfig;
    use crate::config::{LbPolicy, UpstreamProtocol};

    fn entry(outlier: Outlier, n: usize) -> ClusterEntry {
        let config = Arc::new(ClusterConfig {
            name: Arc::from("c"),
            discovery: Discovery::Eds {
                service_name: Arc::from("c"),
            },
            lb: LbPolicy::RoundRobin,
            connect_timeout: Duration::from_secs(1),
            protocol: UpstreamProtocol::Http1,
            source_address: None,
            lb_params: LbParams::default(),
            limits: Limits::default(),
            outlier: Some(outlier),
            pool: PoolOptions::default(),
            transport: None,
        });
        let endpoints = EndpointSet {
            endpoints: (0..n)
                .map(|i| LbEndpointConfig {
                    address: format!("10.0.0.{i}:80").parse().unwrap(),
                    weight: 1,
                })
                .collect(),
            total: n,
            groups: Vec::new(),
        };
        let upstream = Arc::new(Upstream::new(
            Arc::from("c"),
            Arc::default(),
            Arc::new(Secrets::new(None)),
        ));
        ClusterEntry::new(config, &endpoints, upstream, Transports::Plain)
    }

    fn outlier() -> Outlier {
        Outlier {
            consecutive_5xx: 2,
            enforcing_5xx: 100,
            consecutive_gateway: 5,
            enforcing_gateway: 0,
            split_local_origin: false,
            consecutive_local_origin: 5,
            enforcing_local_origin: 100,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 100,
        }
    }

    #[test]
    fn breaker_slots_count_and_release() {
        let counter = AtomicU32::new(0);
        let a = Breakers::try_acquire(&counter, 2).unwrap();
        let b = Breakers::try_acquire(&counter, 2).unwrap();
        // A refused acquisition leaves the count alone.
        assert!(Breakers::try_acquire(&counter, 2).is_none());
        assert_eq!(counter.load(Ordering::SeqCst), 2);
        drop(a);
        assert_eq!(counter.load(Ordering::SeqCst), 1);
        drop(b);
        assert_eq!(counter.load(Ordering::SeqCst), 0);
        assert!(Breakers::try_acquire(&counter, 0).is_none());
        assert_eq!(counter.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn consecutive_errors_eject_and_skip_the_host() {
        let e = entry(outlier(), 2);
        let bad = e.hosts[1].clone();
        e.report(&bad, AttemptResult::Status(503));
        e.report(&bad, AttemptResult::Status(200));
        e.report(&bad, AttemptResult::Status(503));
        assert!(!bad.ejected(now_ms()), "a success resets the count");
        e.report(&bad, AttemptResult::Status(500));
        assert!(bad.ejected(now_ms()));
        for _ in 0..10 {
            assert_eq!(e.pick(None).unwrap().address, e.hosts[0].address);
        }
        // Local failures count as 5xx without the split.
        let good = e.hosts[0].clone();
        e.report(&good, AttemptResult::ConnectFailed);
        e.report(&good, AttemptResult::Timeout);
        assert!(good.ejected(now_ms()));
        // Everything ejected is below the panic threshold: all hosts serve.
        assert!(e.pick(None).is_some());
    }

    #[test]
    fn split_local_origin_errors_count_apart() {
        let mut o = outlier();
        o.split_local_origin = true;
        o.consecutive_local_origin = 3;
        let e = entry(o, 3);
        let h = e.hosts[0].clone();
        e.report(&h, AttemptResult::ConnectFailed);
        e.report(&h, AttemptResult::ConnectFailed);
        assert!(!h.ejected(now_ms()));
        e.report(&h, AttemptResult::Reset);
        assert!(h.ejected(now_ms()));
    }

    #[test]
    fn max_ejection_percent_keeps_hosts() {
        let mut o = outlier();
        o.max_ejection_percent = 10;
        let e = entry(o, 4);
        for h in e.hosts.clone() {
            e.report(&h, AttemptResult::Status(503));
            e.report(&h, AttemptResult::Status(503));
        }
        // At least one host may be ejected; no more under 10 %.
        let now = now_ms();
        assert_eq!(e.hosts.iter().filter(|h| h.ejected(now)).count(), 1);
    }

    #[test]
    fn ejection_time_grows_with_ejections() {
        let e = entry(outlier(), 2);
        let h = e.hosts[0].clone();
        e.report(&h, AttemptResult::Status(503));
        e.report(&h, AttemptResult::Status(503));
        let first = h.outlier.ejected_until.load(Ordering::Relaxed) - now_ms();
        assert!(first <= 30_000 && first > 29_000, "{first}");
        // Back early (as if the time had passed), then ejected again.
        h.outlier.ejected_until.store(now_ms(), Ordering::Relaxed);
        e.report(&h, AttemptResult::Status(503));
        e.report(&h, AttemptResult::Status(503));
        let second = h.outlier.ejected_until.load(Ordering::Relaxed) - now_ms();
        assert!(second > 59_000, "{second}");
    }
}
