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
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::Host;

/// Idle HTTP/1.1 connections kept per host.
const MAX_IDLE_H1: usize = 256;

#[derive(Debug, Default)]
pub(super) struct Pools {
    h1_idle: Mutex<Vec<http1::SendRequest<Incoming>>>,
    h2: Mutex<Option<http2::SendRequest<Incoming>>>,
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
}

impl Pools {
    async fn take_h1(&self) -> Option<http1::SendRequest<Incoming>> {
        loop {
            let mut sender = self
                .h1_idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()?;
            if sender.is_closed() {
                continue;
            }
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn put_h1(&self, sender: http1::SendRequest<Incoming>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.h1_idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_H1 {
            idle.push(sender);
        }
    }

    fn h2(&self) -> Option<http2::SendRequest<Incoming>> {
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

    fn set_h2(&self, sender: &http2::SendRequest<Incoming>) {
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
    fn new(host: &Arc<Host>) -> ActiveGuard {
        host.active.fetch_add(1, Ordering::Relaxed);
        host.stats.upstream_rq_active.inc();
        ActiveGuard(host.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.stats.upstream_rq_active.dec();
    }
}

impl Host {
    /// Sends `req` (origin-form URI and Host header for HTTP/1.1; absolute URI
    /// for HTTP/2) and returns the response headers. New connections bind
    /// `source` first when set.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<Incoming>,
        http2: bool,
        connect_timeout: Duration,
        source: Option<SocketAddr>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let active = ActiveGuard::new(self);
        if http2 {
            self.send_h2(req, connect_timeout, source, active).await
        } else {
            self.send_h1(req, connect_timeout, source, active).await
        }
    }

    async fn send_h1(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        connect_timeout: Duration,
        source: Option<SocketAddr>,
        active: ActiveGuard,
    ) -> Result<Response<UpstreamBody>, SendError> {
        loop {
            let (mut sender, reused) = match self.pool.take_h1().await {
                Some(s) => (s, true),
                None => (self.connect_h1(connect_timeout, source).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let release = Some((self.clone(), sender));
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
        mut req: Request<Incoming>,
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

    async fn connect_h1(
        &self,
        timeout: Duration,
        source: Option<SocketAddr>,
    ) -> Result<http1::SendRequest<Incoming>, SendError> {
        let stream = self.connect(timeout, source).await?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Connect(e.to_string()))?;
        self.spawn_connection(conn);
        Ok(sender)
    }

    async fn connect_h2(
        &self,
        timeout: Duration,
        source: Option<SocketAddr>,
    ) -> Result<http2::SendRequest<Incoming>, SendError> {
        let stream = self.connect(timeout, source).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Connect(e.to_string()))?;
        self.spawn_connection(conn);
        self.pool.set_h2(&sender);
        Ok(sender)
    }

    fn spawn_connection<F>(&self, conn: F)
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
        });
    }
}

/// A response body from upstream. Returns its HTTP/1.1 connection to the pool
/// once read to the end, and keeps the request counted as active until then.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    release: Option<(Arc<Host>, http1::SendRequest<Incoming>)>,
    active: Option<ActiveGuard>,
}

impl UpstreamBody {
    fn new(
        inner: Incoming,
        release: Option<(Arc<Host>, http1::SendRequest<Incoming>)>,
        active: ActiveGuard,
    ) -> UpstreamBody {
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
        if let Some((host, sender)) = self.release.take()
            && reusable
        {
            host.pool.put_h1(sender);
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
