//! Listening sockets and connections: HTTP/1.1 and h2c on one port, graceful
//! drain when a listener is removed or the proxy shuts down.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

use super::router;
use crate::config::{Codec, ListenerConfig};
use crate::state::DataPlane;
use crate::stats::{HttpStats, ListenerStats};

/// A listener's current config with its stats, swapped as one on updates.
#[derive(Debug)]
pub(crate) struct ActiveListener {
    pub config: Arc<ListenerConfig>,
    pub http_stats: Arc<HttpStats>,
    pub listener_stats: Arc<ListenerStats>,
}

impl ActiveListener {
    pub(crate) fn new(config: Arc<ListenerConfig>, data: &DataPlane) -> ActiveListener {
        ActiveListener {
            http_stats: data.stats.http(&config.http.stat_prefix),
            listener_stats: data.stats.listener(&config.stat_prefix),
            config,
        }
    }
}

/// State shared by a listener's accept loop and its connections.
#[derive(Debug)]
pub(crate) struct ListenerShared {
    pub active: ArcSwap<ActiveListener>,
    pub data: Arc<DataPlane>,
    stop: watch::Receiver<bool>,
    drain_timeout: Duration,
}

/// Per-connection context handed to the router.
#[derive(Debug)]
pub(crate) struct ConnContext {
    pub listener: Arc<ListenerShared>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// A running listener, owned by the config state.
#[derive(Debug)]
pub(crate) struct ListenerHandle {
    /// The address from config (may have port 0).
    pub configured: SocketAddr,
    /// The address actually bound.
    pub local: SocketAddr,
    pub shared: Arc<ListenerShared>,
    stop: watch::Sender<bool>,
    /// Yields `None` once the accept loop and every connection have ended.
    done: mpsc::Receiver<()>,
}

/// Binds a listening socket. Called while applying LDS so that a bind failure
/// NACKs the update instead of surfacing later.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    // Lets a restarted proxy rebind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

impl ListenerHandle {
    /// Starts accepting on `socket` with tasks on `runtime`.
    pub(crate) fn start(
        socket: std::net::TcpListener,
        configured: SocketAddr,
        active: ActiveListener,
        data: Arc<DataPlane>,
        runtime: &Handle,
        drain_timeout: Duration,
    ) -> io::Result<ListenerHandle> {
        let local = socket.local_addr()?;
        let listener = {
            let _guard = runtime.enter();
            TcpListener::from_std(socket)?
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel(1);
        let shared = Arc::new(ListenerShared {
            active: ArcSwap::from_pointee(active),
            data,
            stop: stop_rx,
            drain_timeout,
        });
        runtime.spawn(accept_loop(listener, shared.clone(), done_tx));
        Ok(ListenerHandle {
            configured,
            local,
            shared,
            stop: stop_tx,
            done: done_rx,
        })
    }

    /// Replaces the config in place: new requests use it at once.
    pub(crate) fn update(&self, active: ActiveListener) {
        self.shared.active.store(Arc::new(active));
    }

    pub(crate) fn name(&self) -> Arc<str> {
        self.shared.active.load().config.name.clone()
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain
    /// timeout), and resolves once every connection has closed.
    pub(crate) async fn drain(mut self) {
        let _ = self.stop.send(true);
        while self.done.recv().await.is_some() {}
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<ListenerShared>, done: mpsc::Sender<()>) {
    let mut stop = shared.stop.clone();
    loop {
        let accepted = tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let active = shared.active.load();
        active.listener_stats.downstream_cx_total.inc();
        active.http_stats.downstream_cx_total.inc();
        tokio::spawn(serve_connection(stream, peer, shared.clone(), done.clone()));
    }
    // Dropping the listener closes the socket: no new connections.
    drop(listener);
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<ListenerShared>,
    _done: mpsc::Sender<()>,
) {
    let local = stream.local_addr().unwrap_or(peer);
    let _ = stream.set_nodelay(true);
    let (listener_stats, http_stats, codec) = {
        let active = shared.active.load();
        (
            active.listener_stats.clone(),
            active.http_stats.clone(),
            active.config.http.codec,
        )
    };
    listener_stats.downstream_cx_active.inc();
    http_stats.downstream_cx_active.inc();
    let mut stop = shared.stop.clone();
    let drain_timeout = shared.drain_timeout;
    let ctx = Arc::new(ConnContext {
        listener: shared,
        peer,
        local,
    });
    let service = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(router::handle(req, &ctx).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = match codec {
        Codec::Auto => builder,
        Codec::Http1 => builder.http1_only(),
        Codec::Http2 => builder.http2_only(),
    };
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopped(&mut stop) => {
            // Finish the requests in flight (HTTP/2 GOAWAY, HTTP/1 close after
            // the current response), then give up after the drain timeout.
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(drain_timeout, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "downstream connection ended with an error");
    }
    listener_stats.downstream_cx_active.dec();
    http_stats.downstream_cx_active.dec();
}

/// Resolves once the listener is told to stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
