//! Listeners and the life of an accepted connection, before any protocol:
//!
//! 1. the original destination is restored (`use_original_dst`, or the
//!    `original_dst` listener filter), from `SO_ORIGINAL_DST`;
//! 2. a `use_original_dst` listener hands the connection off to the
//!    `bind_to_port: false` listener at that destination, if there is one
//!    ([`handoff`]);
//! 3. the serving listener's `tls_inspector` peeks for a ClientHello (SNI,
//!    ALPN; [`tls_inspect`]), then its `http_inspector` peeks at the first
//!    bytes of a connection that is not TLS ([`inspect`]), both bounded by
//!    one `listener_filters_timeout`;
//! 4. a filter chain is chosen (destination port, IP, server name,
//!    transport, application protocol; then the default chain) and its
//!    terminal filter runs: the HTTP connection manager or the TCP proxy.
//!
//! Listeners that bind own an accept loop; the others only exist to receive
//! handed-off connections. Both drain the same way when removed.

pub mod handoff;
pub mod inspect;
mod original_dst;
pub mod tls_inspect;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

pub use original_dst::{OriginalDst, SocketOriginalDst};

use crate::config::chain::Detected;
use crate::config::{FilterChainConfig, ListenerConfig, NetworkFilter};
use crate::http::conn::HttpChain;
use crate::state::DataPlane;
use crate::stats::ListenerStats;
use crate::tcp::TcpChain;
use inspect::Sniffed;
use tls_inspect::Inspected;

/// A listener's current config with its stats, swapped as one on updates.
/// Connections keep the chain they were given when accepted.
#[derive(Debug)]
pub(crate) struct ActiveListener {
    pub config: Arc<ListenerConfig>,
    pub listener_stats: Arc<ListenerStats>,
    /// Index-aligned with `config.filter_chains`.
    pub chains: Vec<ActiveChain>,
    pub default_chain: Option<ActiveChain>,
}

/// A filter chain ready to serve: its config and its stats.
#[derive(Debug, Clone)]
pub(crate) enum ActiveChain {
    Http(Arc<HttpChain>),
    Tcp(Arc<TcpChain>),
}

impl ActiveListener {
    pub(crate) fn new(config: Arc<ListenerConfig>, data: &DataPlane) -> ActiveListener {
        let chain = |c: &FilterChainConfig| match &c.filter {
            NetworkFilter::Http(h) => ActiveChain::Http(Arc::new(HttpChain {
                listener: config.name.clone(),
                stats: data.stats.http(&h.stat_prefix),
                config: h.clone(),
                tls: c.tls.clone(),
            })),
            NetworkFilter::TcpProxy(t) => ActiveChain::Tcp(Arc::new(TcpChain {
                listener: config.name.clone(),
                chain: c.name.clone(),
                stats: data.stats.tcp(&t.stat_prefix),
                config: t.clone(),
                tls: c.tls.clone(),
            })),
        };
        ActiveListener {
            listener_stats: data.stats.listener(&config.stat_prefix),
            chains: config.filter_chains.iter().map(chain).collect(),
            default_chain: config.default_chain.as_ref().map(chain),
            config,
        }
    }

    /// The chain for a connection to `dst` with what the listener filters
    /// detected.
    fn select(&self, dst: SocketAddr, detected: &Detected<'_>) -> Option<&ActiveChain> {
        match self.config.selector.select_detected(dst, detected) {
            Some(i) => self.chains.get(i),
            None => self.default_chain.as_ref(),
        }
    }
}

/// State shared by a listener's accept loop and its connections.
#[derive(Debug)]
pub(crate) struct ListenerShared {
    pub active: ArcSwap<ActiveListener>,
    pub data: Arc<DataPlane>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) drain_timeout: Duration,
    /// Connections handed off to this listener hold a clone; taken when the
    /// listener drains so that the drain ends with the last connection.
    handoff_token: Mutex<Option<mpsc::Sender<()>>>,
}

impl ListenerShared {
    /// A token for a handed-off connection, `None` once draining.
    fn handoff_token(&self) -> Option<mpsc::Sender<()>> {
        self.handoff_token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resolves once the listener is told to stop.
    pub(crate) async fn stopped(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|s| *s).await;
    }
}

/// A running listener, owned by the config state.
#[derive(Debug)]
pub(crate) struct ListenerHandle {
    /// The address from config (may have port 0).
    pub configured: SocketAddr,
    /// The address actually bound; `None` for `bind_to_port: false`.
    pub local: Option<SocketAddr>,
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
    /// Starts a listener: with a socket, an accept loop on `runtime`;
    /// without, a target for handed-off connections.
    pub(crate) fn start(
        socket: Option<std::net::TcpListener>,
        configured: SocketAddr,
        active: ActiveListener,
        data: Arc<DataPlane>,
        runtime: &Handle,
        drain_timeout: Duration,
    ) -> io::Result<ListenerHandle> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel(1);
        let shared = Arc::new(ListenerShared {
            active: ArcSwap::from_pointee(active),
            data,
            stop: stop_rx,
            drain_timeout,
            handoff_token: Mutex::new(Some(done_tx.clone())),
        });
        let local = match socket {
            Some(socket) => {
                let local = socket.local_addr()?;
                let listener = {
                    let _guard = runtime.enter();
                    TcpListener::from_std(socket)?
                };
                runtime.spawn(accept_loop(listener, shared.clone(), done_tx));
                Some(local)
            }
            None => None,
        };
        Ok(ListenerHandle {
            configured,
            local,
            shared,
            stop: stop_tx,
            done: done_rx,
        })
    }

    /// Replaces the config in place: new connections use it at once.
    pub(crate) fn update(&self, active: ActiveListener) {
        self.shared.active.store(Arc::new(active));
    }

    pub(crate) fn name(&self) -> Arc<str> {
        self.shared.active.load().config.name.clone()
    }

    pub(crate) fn is_bound(&self) -> bool {
        self.local.is_some()
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain
    /// timeout), and resolves once every connection has closed.
    pub(crate) async fn drain(mut self) {
        let _ = self.stop.send(true);
        drop(
            self.shared
                .handoff_token
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        while self.done.recv().await.is_some() {}
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<ListenerShared>, done: mpsc::Sender<()>) {
    let mut stop = shared.stop.clone();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
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
        tokio::spawn(connection(stream, peer, shared.clone(), done.clone()));
    }
    // Dropping the listener closes the socket: no new connections.
    drop(listener);
}

/// One accepted connection: restore, hand off, then serve.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<ListenerShared>,
    token: mpsc::Sender<()>,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let active = shared.active.load_full();
    let dst = if active.config.restores_destination() {
        shared.data.original_dst.original_dst(&stream, local, peer)
    } else {
        local
    };
    if active.config.use_original_dst {
        let target = shared.data.handoff.load().find(dst).cloned();
        if let Some(target) = target
            && !Arc::ptr_eq(&target, &shared)
            && let Some(target_token) = target.handoff_token()
        {
            // The connection now belongs to the target listener: it no
            // longer holds up this listener's drain.
            drop(token);
            let target_active = target.active.load_full();
            tracing::trace!(%peer, %dst, to = %target_active.config.name, "handed off");
            return serve(stream, peer, dst, target, target_active, target_token).await;
        }
    }
    serve(stream, peer, dst, shared, active, token).await;
}

/// Listener filters, filter chain choice and the chain's filter, on the
/// listener that owns the connection.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    dst: SocketAddr,
    shared: Arc<ListenerShared>,
    active: Arc<ActiveListener>,
    _token: mpsc::Sender<()>,
) {
    let stats = active.listener_stats.clone();
    stats.downstream_cx_total.inc();
    stats.downstream_cx_active.inc();
    let _active_cx = ActiveConnection(&stats);
    let filters = &active.config.listener_filters;
    // One deadline for all listener filters.
    let deadline = filters.timeout.map(|t| tokio::time::Instant::now() + t);
    let left = || deadline.map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
    let mut timed_out = false;
    let mut hello = None;
    if filters.tls_inspector {
        match tls_inspect::inspect(&stream, left()).await {
            Ok(Inspected::Tls(h)) => hello = Some(h),
            Ok(Inspected::NotTls) => {}
            Ok(Inspected::Closed) => {
                stats.downstream_listener_filter_remote_close.inc();
                tracing::debug!(%peer, listener = %active.config.name, "peer closed during listener filters");
                return;
            }
            Ok(Inspected::TimedOut) => {
                stats.downstream_pre_cx_timeout.inc();
                if !filters.continue_on_timeout {
                    tracing::debug!(%peer, listener = %active.config.name, "listener filters timed out, closing");
                    return;
                }
                timed_out = true;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "inspecting the connection failed");
                return;
            }
        }
    }
    let mut app = None;
    if filters.http_inspector && hello.is_none() && !timed_out {
        match inspect::sniff(&stream, left()).await {
            Ok(Sniffed::Protocol(p)) => app = Some(p),
            Ok(Sniffed::Other) => {}
            Ok(Sniffed::Closed) => {
                stats.downstream_listener_filter_remote_close.inc();
                tracing::debug!(%peer, listener = %active.config.name, "peer closed during listener filters");
                return;
            }
            Ok(Sniffed::TimedOut) => {
                stats.downstream_pre_cx_timeout.inc();
                if !filters.continue_on_timeout {
                    tracing::debug!(%peer, listener = %active.config.name, "listener filters timed out, closing");
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "inspecting the connection failed");
                return;
            }
        }
    }
    let alpn: Vec<&str>;
    let detected = match &hello {
        Some(h) => {
            alpn = h.alpn.iter().map(String::as_str).collect();
            Detected {
                tls: true,
                server_name: h.server_name.as_deref(),
                application_protocols: &alpn,
            }
        }
        None => Detected {
            tls: false,
            server_name: None,
            application_protocols: match &app {
                Some(a) => std::slice::from_ref(a),
                None => &[],
            },
        },
    };
    let Some(chain) = active.select(dst, &detected) else {
        stats.no_filter_chain_match.inc();
        tracing::debug!(%peer, %dst, listener = %active.config.name, "no matching filter chain, closing");
        return;
    };
    let _ = stream.set_nodelay(true);
    let chain = chain.clone();
    let tls = match &chain {
        ActiveChain::Http(h) => h.tls.clone(),
        ActiveChain::Tcp(t) => t.tls.clone(),
    };
    let Some(tls) = tls else {
        return match chain {
            ActiveChain::Http(h) => {
                crate::http::conn::serve(stream, peer, dst, h, &shared, None).await
            }
            ActiveChain::Tcp(t) => crate::tcp::proxy(stream, peer, dst, t, &shared, None).await,
        };
    };
    // The handshake uses the chosen chain's context; a drain ends it.
    let accepted = tokio::select! {
        r = crate::tls::accept(&tls, &shared.data.secrets, stream) => r,
        _ = shared.stopped() => return,
    };
    let accepted = match accepted {
        Ok(a) => a,
        Err(reason) => {
            tracing::debug!(%peer, listener = %active.config.name, %reason, "downstream TLS handshake failed");
            return;
        }
    };
    let peer_tls = Some(accepted.peer);
    match chain {
        ActiveChain::Http(h) => {
            crate::http::conn::serve(accepted.stream, peer, dst, h, &shared, peer_tls).await
        }
        ActiveChain::Tcp(t) => {
            crate::tcp::proxy(accepted.stream, peer, dst, t, &shared, peer_tls).await
        }
    }
}

/// Keeps `downstream_cx_active` right however the connection ends.
struct ActiveConnection<'a>(&'a ListenerStats);

impl Drop for ActiveConnection<'_> {
    fn drop(&mut self) {
        self.0.downstream_cx_active.dec();
    }
}
