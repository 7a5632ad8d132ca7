//! `envoy.filters.network.tcp_proxy`: connect to a host of the chain's
//! cluster and copy bytes both ways until both sides are done.
//!
//! Half-close is passed through: when one side stops sending (FIN), the other
//! side's write half is shut down and bytes keep flowing the other way. An
//! error on either side, the idle timeout, or the end of a drain closes
//! both. Failing to connect closes the downstream connection, as Envoy does
//! when it has no upstream for a TCP proxy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::TcpProxyConfig;
use crate::config::tls::DownstreamTls;
use crate::listener::ListenerShared;
use crate::record::{ConnectionRecord, ResponseFlags};
use crate::stats::{ClusterStats, TcpStats};
use crate::tls::PeerTls;
use crate::upstream::{ConnectError, connect};

/// Bytes moved per read at first. Two buffers per connection (one per
/// direction), so idle and chatty connections stay small.
const BUFFER: usize = 16 * 1024;
/// A direction whose reads keep filling the buffer is a bulk transfer: its
/// buffer doubles up to this, so it takes fewer system calls per byte.
const MAX_BUFFER: usize = 128 * 1024;

/// A filter chain ending in the TCP proxy, with its stats.
#[derive(Debug)]
pub(crate) struct TcpChain {
    pub listener: Arc<str>,
    pub chain: Arc<str>,
    pub config: Arc<TcpProxyConfig>,
    pub stats: Arc<TcpStats>,
    /// The chain's TLS termination, if any.
    pub tls: Option<Arc<DownstreamTls>>,
}

/// A stream whose directions can be driven independently. Plain TCP splits
/// for free; a TLS stream shares its state between the halves.
pub(crate) trait Split {
    type R<'a>: AsyncRead + Unpin
    where
        Self: 'a;
    type W<'a>: AsyncWrite + Unpin
    where
        Self: 'a;
    fn halves(&mut self) -> (Self::R<'_>, Self::W<'_>);
}

impl Split for TcpStream {
    type R<'a> = tokio::net::tcp::ReadHalf<'a>;
    type W<'a> = tokio::net::tcp::WriteHalf<'a>;
    fn halves(&mut self) -> (Self::R<'_>, Self::W<'_>) {
        self.split()
    }
}

/// A TLS stream, of either side: reads and writes go through one rustls
/// session, so its halves are tokio's lock-sharing split.
pub(crate) trait TlsSession: AsyncRead + AsyncWrite + Unpin {}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsSession for tokio_rustls::server::TlsStream<S> {}
impl<S: AsyncRead + AsyncWrite + Unpin> TlsSession for tokio_rustls::client::TlsStream<S> {}

impl<T: TlsSession> Split for T {
    type R<'a>
        = tokio::io::ReadHalf<&'a mut Self>
    where
        T: 'a;
    type W<'a>
        = tokio::io::WriteHalf<&'a mut Self>
    where
        T: 'a;
    fn halves(&mut self) -> (Self::R<'_>, Self::W<'_>) {
        tokio::io::split(self)
    }
}

/// The upstream side of a proxied connection.
enum UpstreamConn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Why the byte copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Both sides closed (or one side failed).
    Closed,
    IdleTimeout,
    Drained,
}

pub(crate) async fn proxy<D: Split>(
    mut downstream: D,
    peer: SocketAddr,
    dst: SocketAddr,
    chain: Arc<TcpChain>,
    shared: &ListenerShared,
    peer_tls: Option<Arc<PeerTls>>,
) {
    let started = Instant::now();
    let start = SystemTime::now();
    let stats = &chain.stats;
    let cfg = &chain.config;
    stats.downstream_cx_total.inc();
    let mut record = ConnectionRecord {
        start,
        duration: Duration::ZERO,
        listener: chain.listener.clone(),
        filter_chain: chain.chain.clone(),
        stat_prefix: cfg.stat_prefix.clone(),
        downstream_remote: peer,
        downstream_local: dst,
        cluster: None,
        upstream_host: None,
        upstream_local: None,
        bytes_received: 0,
        bytes_sent: 0,
        flags: ResponseFlags::empty(),
        downstream_peer_principal: peer_tls.as_ref().and_then(|p| p.peer_principal.clone()),
        upstream_peer_principal: None,
    };
    let data = &shared.data;
    let finish = |mut record: ConnectionRecord| {
        record.duration = started.elapsed();
        if let Some(observer) = &data.observer {
            observer.on_connection(&record);
        }
    };

    let point = match cfg.clusters.total() {
        0 | 1 => 0,
        total => rand::rng().random_range(0..total),
    };
    let Some(cluster_name) = cfg.clusters.pick(point).cloned() else {
        stats.downstream_cx_no_route.inc();
        return finish(record);
    };
    record.cluster = Some(cluster_name.clone());
    let (upstream, cstats) = {
        let snapshot = data.snapshot.load_full();
        let Some(cluster) = snapshot.clusters.get(&*cluster_name) else {
            stats.downstream_cx_no_route.inc();
            record.flags.insert(ResponseFlags::NO_CLUSTER_FOUND);
            tracing::debug!(%peer, cluster = %cluster_name, "tcp proxy: no such cluster");
            return finish(record);
        };
        let cstats = cluster.upstream.stats.clone();
        let mut attempts = 0;
        let upstream = loop {
            attempts += 1;
            let original = cluster.original_dst_host(dst);
            let Some(host) = original.as_ref().or_else(|| cluster.pick(None)) else {
                cstats.upstream_cx_none_healthy.inc();
                record.flags.insert(ResponseFlags::NO_HEALTHY_UPSTREAM);
                break None;
            };
            let address = host.address;
            record.upstream_host = Some(address);
            let source = cluster.config.source_address;
            let timeout = cluster.config.connect_timeout;
            let connected = match connect(address, source, timeout).await {
                Ok(s) => match &host.tls {
                    None => Ok(UpstreamConn::Plain(s)),
                    Some(tls) => {
                        match tokio::time::timeout(timeout, crate::tls::connect(tls, address, s))
                            .await
                        {
                            Ok(Ok(c)) => {
                                record.upstream_peer_principal = c.peer_principal;
                                Ok(UpstreamConn::Tls(Box::new(c.stream)))
                            }
                            Ok(Err(reason)) => Err(reason),
                            Err(_) => Err(ConnectError::Timeout.to_string()),
                        }
                    }
                },
                Err(e) => {
                    if matches!(e, ConnectError::Timeout) {
                        cstats.upstream_cx_connect_timeout.inc();
                    }
                    Err(e.to_string())
                }
            };
            match connected {
                Ok(s) => {
                    cstats.upstream_cx_total.inc();
                    break Some(s);
                }
                Err(e) => {
                    cstats.upstream_cx_connect_fail.inc();
                    tracing::debug!(%peer, cluster = %cluster_name, host = %address, error = %e, "tcp proxy: connect failed");
                    if attempts >= cfg.max_connect_attempts {
                        record
                            .flags
                            .insert(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
                        if cfg.max_connect_attempts > 1 {
                            cstats.upstream_cx_connect_attempts_exceeded.inc();
                            record
                                .flags
                                .insert(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
                        }
                        break None;
                    }
                }
            }
        };
        (upstream, cstats)
    };
    // Dropping `downstream` on return closes it.
    let Some(upstream) = upstream else {
        return finish(record);
    };
    cstats.upstream_cx_active.inc();
    let received = AtomicU64::new(0);
    let sent = AtomicU64::new(0);
    let counters = Counters {
        stats,
        cluster: &cstats,
        received: &received,
        sent: &sent,
    };
    let end = match upstream {
        UpstreamConn::Plain(mut up) => {
            record.upstream_local = up.local_addr().ok();
            relay(&mut downstream, &mut up, counters, cfg.idle_timeout, shared).await
        }
        UpstreamConn::Tls(mut up) => {
            record.upstream_local = up.get_ref().0.local_addr().ok();
            relay(
                &mut downstream,
                &mut *up,
                counters,
                cfg.idle_timeout,
                shared,
            )
            .await
        }
    };
    cstats.upstream_cx_active.dec();
    if end == End::IdleTimeout {
        stats.idle_timeout.inc();
    }
    record.bytes_received = received.load(Ordering::Relaxed);
    record.bytes_sent = sent.load(Ordering::Relaxed);
    tracing::trace!(%peer, %dst, cluster = %cluster_name, ?end, rx = record.bytes_received, tx = record.bytes_sent, "tcp proxy: closed");
    finish(record);
}

/// Where each copied chunk is counted.
struct Counters<'a> {
    stats: &'a TcpStats,
    cluster: &'a ClusterStats,
    /// From downstream (sent upstream).
    received: &'a AtomicU64,
    /// To downstream (received from upstream).
    sent: &'a AtomicU64,
}

async fn relay<D: Split, U: Split>(
    downstream: &mut D,
    upstream: &mut U,
    counters: Counters<'_>,
    idle_timeout: Option<Duration>,
    shared: &ListenerShared,
) -> End {
    let started = Instant::now();
    // Milliseconds since `started` of the last byte in either direction.
    let last = AtomicU64::new(0);
    let touch = || last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    let (mut dr, mut dw) = downstream.halves();
    let (mut ur, mut uw) = upstream.halves();
    let up = pump(&mut dr, &mut uw, |n| {
        counters.stats.downstream_cx_rx_bytes_total.add(n);
        counters.cluster.upstream_cx_tx_bytes_total.add(n);
        counters.received.fetch_add(n, Ordering::Relaxed);
        touch();
    });
    let down = pump(&mut ur, &mut dw, |n| {
        counters.stats.downstream_cx_tx_bytes_total.add(n);
        counters.cluster.upstream_cx_rx_bytes_total.add(n);
        counters.sent.fetch_add(n, Ordering::Relaxed);
        touch();
    });
    let both = async { tokio::try_join!(up, down) };
    let idle = async {
        match idle_timeout {
            None => std::future::pending::<()>().await,
            Some(timeout) => loop {
                let deadline =
                    started + Duration::from_millis(last.load(Ordering::Relaxed)) + timeout;
                if Instant::now() >= deadline {
                    return;
                }
                tokio::time::sleep_until(deadline.into()).await;
            },
        }
    };
    let drained = async {
        shared.stopped().await;
        tokio::time::sleep(shared.drain_timeout).await;
    };
    tokio::select! {
        r = both => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "tcp proxy: connection failed");
            }
            End::Closed
        }
        _ = idle => End::IdleTimeout,
        _ = drained => End::Drained,
    }
}

/// Copies one direction until EOF, then shuts down the writer's side.
async fn pump<R, W>(r: &mut R, w: &mut W, on_bytes: impl Fn(u64)) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return w.shutdown().await;
        }
        w.write_all(&buf[..n]).await?;
        on_bytes(n as u64);
        if n == buf.len() && buf.len() < MAX_BUFFER {
            buf.resize(buf.len() * 2, 0);
        }
    }
}
