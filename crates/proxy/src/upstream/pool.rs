//! Per-host connection pools: idle HTTP/1.1 connections reused one request at
//! a time, and one multiplexed HTTP/2 (h2c prior knowledge) connection.
//!
//! An HTTP/1.1 connection goes back to the pool only when its response body
//! has been read to the end; a body dropped early closes the connection,
//! since the rest of the response would otherwise be read as the next one.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{Breakers, Host};
use crate::config::ClusterConfig;
use crate::tls::HostTls;

/// Idle HTTP/1.1 connections kept per host.
const MAX_IDLE_H1: usize = 256;

#[derive(Debug, Default)]
pub(super) struct Pools {
    h1_idle: Mutex<Vec<Idle>>,
    h2: Mutex<Option<http2::SendRequest<RequestBody>>>,
}

/// An idle HTTP/1.1 connection: since when, and how many requests it carried.
#[derive(Debug)]
struct Idle {
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
    uses: u32,
}

/// A connection counted against the cluster's `max_connections` until its
/// task ends.
#[derive(Debug)]
struct ConnectionSlot(Arc<Breakers>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
        // A waiting request may now open a connection.
        self.0.wake_pending();
    }
}

/// A request body going upstream: streamed from downstream, or held in
/// memory so that it can be sent again (retries, mirrors).
#[derive(Debug)]
pub enum RequestBody {
    Stream(Incoming),
    Buffered(Option<Bytes>),
    /// Bytes already read, then the rest of the stream.
    Prefixed(Option<Bytes>, Incoming),
}

impl RequestBody {
    pub fn buffered(bytes: &Bytes) -> RequestBody {
        if bytes.is_empty() {
            RequestBody::Buffered(None)
        } else {
            RequestBody::Buffered(Some(bytes.clone()))
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Stream(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Buffered(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            RequestBody::Prefixed(head, rest) => match head.take() {
                Some(d) => Poll::Ready(Some(Ok(Frame::data(d)))),
                None => Pin::new(rest).poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Stream(b) => b.is_end_stream(),
            RequestBody::Buffered(data) => data.is_none(),
            RequestBody::Prefixed(head, rest) => head.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Stream(b) => b.size_hint(),
            RequestBody::Buffered(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            RequestBody::Prefixed(head, rest) => {
                let extra = head.as_ref().map_or(0, |d| d.len() as u64);
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + extra);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + extra);
                }
                hint
            }
        }
    }
}

/// Why a request got no upstream response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made (UF).
    #[error("{0}")]
    Connect(String),
    /// The connection failed after the request was handed to it (UC).
    #[error("{0}")]
    Reset(hyper::Error),
    /// A circuit breaker is full (UO).
    #[error("overflow")]
    Overflow,
}

impl SendError {
    /// Whether the upstream refused the HTTP/2 stream (safe to retry).
    pub fn refused_stream(&self) -> bool {
        match self {
            SendError::Reset(e) => {
                let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
                while let Some(err) = source {
                    if err.to_string().contains("REFUSED_STREAM")
                        || err.to_string().contains("refused stream")
                    {
                        return true;
                    }
                    source = err.source();
                }
                false
            }
            _ => false,
        }
    }
}

impl Pools {
    /// An idle connection still open and not idle longer than `idle_timeout`,
    /// with the number of requests it already carried.
    async fn take_h1(
        &self,
        idle_timeout: Option<Duration>,
    ) -> Option<(http1::SendRequest<RequestBody>, u32)> {
        loop {
            let mut idle = self
                .h1_idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()?;
            if idle.sender.is_closed() || idle_timeout.is_some_and(|t| idle.since.elapsed() >= t) {
                continue;
            }
            if idle.sender.ready().await.is_ok() {
                return Some((idle.sender, idle.uses));
            }
        }
    }

    fn put_h1(&self, sender: http1::SendRequest<RequestBody>, uses: u32, max_uses: Option<u32>) {
        if sender.is_closed() || max_uses.is_some_and(|m| uses >= m) {
            return;
        }
        let mut idle = self.h1_idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_H1 {
            idle.push(Idle {
                sender,
                since: Instant::now(),
                uses,
            });
        }
    }

    fn h2(&self) -> Option<http2::SendRequest<RequestBody>> {
        let mut slot = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some(s) if !s.is_closed() => Some(s.clone()),
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }

    fn set_h2(&self, sender: &http2::SendRequest<RequestBody>) {
        let mut slot = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_none_or(|s| s.is_closed()) {
            *slot = Some(sender.clone());
        }
    }
}

/// Counts a request as active on its host and cluster until dropped.
#[derive(Debug)]
struct ActiveGuard(Arc<Host>);

impl ActiveGuard {
    /// `None` when the cluster's `max_requests` is reached.
    fn new(host: &Arc<Host>, max: u32) -> Option<ActiveGuard> {
        if !Breakers::try_take(&host.breakers.requests, max) {
            return None;
        }
        host.active.fetch_add(1, Ordering::Relaxed);
        host.stats.upstream_rq_active.inc();
        Some(ActiveGuard(host.clone()))
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.breakers.requests.fetch_sub(1, Ordering::AcqRel);
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.stats.upstream_rq_active.dec();
    }
}

impl Host {
    /// Sends `req` (origin-form URI and Host header for HTTP/1.1; absolute URI
    /// for HTTP/2) and returns the response headers, within the limits of
    /// the cluster's config. New connections bind its source address first
    /// when set.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<RequestBody>,
        http2: bool,
        cluster: &ClusterConfig,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let Some(active) = ActiveGuard::new(self, cluster.limits.max_requests) else {
            self.stats.upstream_rq_pending_overflow.inc();
            return Err(SendError::Overflow);
        };
        let (connect_timeout, source) = (cluster.connect_timeout, cluster.source_address);
        if http2 {
            self.send_h2(req, connect_timeout, source, active).await
        } else {
            self.send_h1(req, cluster, active).await
        }
    }

    async fn send_h1(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
        cluster: &ClusterConfig,
        active: ActiveGuard,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let options = cluster.pool;
        loop {
            let (mut sender, reused, uses) = match self.h1_connection(cluster).await? {
                (sender, Some(uses)) => (sender, true, uses),
                (sender, None) => (sender, false, 0),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let release = Some(Release {
                        host: self.clone(),
                        sender,
                        uses: uses + 1,
                        max_uses: options.max_requests_per_connection,
                    });
                    return Ok(resp.map(|b| UpstreamBody::new(b, release, active)));
                }
                Err(mut e) => match e.take_message() {
                    // A pooled connection that the upstream closed while idle:
                    // the request never left, so a fresh connection is safe.
                    Some(r) if reused => req = r,
                    _ => return Err(SendError::Reset(e.into_error())),
                },
            }
        }
    }

    async fn send_h2(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
        connect_timeout: Duration,
        source: Option<SocketAddr>,
        active: ActiveGuard,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let mut retried = false;
        loop {
            let (mut sender, reused) = match self.pool.h2() {
                Some(s) => (s, true),
                None => (self.connect_h2(connect_timeout, source).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(resp.map(|b| UpstreamBody::new(b, None, active))),
                Err(mut e) => match e.take_message() {
                    Some(r) if reused && !retried => {
                        retried = true;
                        req = r;
                    }
                    _ => return Err(SendError::Reset(e.into_error())),
                },
            }
        }
    }

    /// An idle connection (with its use count), or a new one (`None`) when
    /// `max_connections` allows; otherwise the request waits as pending,
    /// or overflows when `max_pending_requests` are already waiting.
    async fn h1_connection(
        &self,
        cluster: &ClusterConfig,
    ) -> Result<(http1::SendRequest<RequestBody>, Option<u32>), SendError> {
        let (limits, options) = (cluster.limits, cluster.pool);
        let (connect_timeout, source) = (cluster.connect_timeout, cluster.source_address);
        let breakers = &self.breakers;
        let mut pending = None;
        loop {
            let released = breakers.released.notified();
            let mut released = std::pin::pin!(released);
            released.as_mut().enable();
            if let Some((sender, uses)) = self.pool.take_h1(options.idle_timeout).await {
                return Ok((sender, Some(uses)));
            }
            if Breakers::try_take(&breakers.connections, limits.max_connections) {
                let slot = ConnectionSlot(breakers.clone());
                return Ok((self.connect_h1(connect_timeout, source, slot).await?, None));
            }
            if pending.is_none() {
                match Breakers::try_acquire(&breakers.pending, limits.max_pending_requests) {
                    Some(slot) => {
                        // Look again before sleeping: a connection released
                        // before the pending count rose sent no signal.
                        pending = Some(slot);
                        continue;
                    }
                    None => {
                        self.stats.upstream_rq_pending_overflow.inc();
                        return Err(SendError::Overflow);
                    }
                }
            }
            released.await;
        }
    }

    async fn connect(
        &self,
        timeout: Duration,
        source: Option<SocketAddr>,
    ) -> Result<TcpStream, SendError> {
        match super::connect(self.address, source, timeout).await {
            Err(super::ConnectError::Timeout) => {
                self.stats.upstream_cx_connect_fail.inc();
                self.stats.upstream_cx_connect_timeout.inc();
                Err(SendError::Connect("connection timeout".to_string()))
            }
            Err(super::ConnectError::Io(e)) => {
                self.stats.upstream_cx_connect_fail.inc();
                Err(SendError::Connect(e.to_string()))
            }
            Ok(stream) => {
                self.stats.upstream_cx_total.inc();
                Ok(stream)
            }
        }
    }

    /// Completes TLS origination on a new connection. A failed handshake
    /// is a connect failure, as in Envoy.
    async fn tls(
        &self,
        tls: &HostTls,
        stream: TcpStream,
        timeout: Duration,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, SendError> {
        let handshake = crate::tls::connect(tls, self.address, stream);
        let result = match tokio::time::timeout(timeout, handshake).await {
            Ok(r) => r,
            Err(_) => Err("connection timeout".to_string()),
        };
        match result {
            Ok(c) => Ok(c.stream),
            Err(reason) => {
                self.stats.upstream_cx_connect_fail.inc();
                Err(SendError::Connect(reason))
            }
        }
    }

    async fn connect_h1(
        &self,
        timeout: Duration,
        source: Option<SocketAddr>,
        slot: ConnectionSlot,
    ) -> Result<http1::SendRequest<RequestBody>, SendError> {
        let stream = self.connect(timeout, source).await?;
        match &self.tls {
            None => self.handshake_h1(stream, slot).await,
            Some(tls) => {
                let stream = self.tls(tls, stream, timeout).await?;
                self.handshake_h1(stream, slot).await
            }
        }
    }

    async fn handshake_h1<S>(
        &self,
        stream: S,
        slot: ConnectionSlot,
    ) -> Result<http1::SendRequest<RequestBody>, SendError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Connect(e.to_string()))?;
        self.spawn_connection(conn, Some(slot));
        Ok(sender)
    }

    async fn connect_h2(
        &self,
        timeout: Duration,
        source: Option<SocketAddr>,
    ) -> Result<http2::SendRequest<RequestBody>, SendError> {
        let stream = self.connect(timeout, source).await?;
        match &self.tls {
            None => self.handshake_h2(stream).await,
            Some(tls) => {
                let stream = self.tls(tls, stream, timeout).await?;
                self.handshake_h2(stream).await
            }
        }
    }

    async fn handshake_h2<S>(&self, stream: S) -> Result<http2::SendRequest<RequestBody>, SendError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Connect(e.to_string()))?;
        self.spawn_connection(conn, None);
        self.pool.set_h2(&sender);
        Ok(sender)
    }

    fn spawn_connection<F>(&self, conn: F, slot: Option<ConnectionSlot>)
    where
        F: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
    {
        let stats = self.stats.clone();
        stats.upstream_cx_active.inc();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection closed with an error");
            }
            stats.upstream_cx_active.dec();
            drop(slot);
        });
    }
}

/// A response body from upstream. Returns its HTTP/1.1 connection to the pool
/// once read to the end, and keeps the request counted as active until then.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    release: Option<Release>,
    active: Option<ActiveGuard>,
}

/// What returns an HTTP/1.1 connection to its pool once the body is read.
#[derive(Debug)]
struct Release {
    host: Arc<Host>,
    sender: http1::SendRequest<RequestBody>,
    uses: u32,
    max_uses: Option<u32>,
}

impl UpstreamBody {
    fn new(inner: Incoming, release: Option<Release>, active: ActiveGuard) -> UpstreamBody {
        let mut body = UpstreamBody {
            inner,
            release,
            active: Some(active),
        };
        if body.inner.is_end_stream() {
            body.finish(true);
        }
        body
    }

    fn finish(&mut self, reusable: bool) {
        if let Some(r) = self.release.take()
            && reusable
        {
            r.host.pool.put_h1(r.sender, r.uses, r.max_uses);
            r.host.breakers.wake_pending();
        }
        self.active = None;
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            None => this.finish(true),
            Some(Err(_)) => this.finish(false),
            Some(Ok(_)) if this.inner.is_end_stream() => this.finish(true),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
