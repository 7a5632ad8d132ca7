//! An HTTP connection manager on one downstream connection: HTTP/1.1 and h2c
//! on the same port, graceful close when the listener drains.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use super::router;
use crate::config::tls::DownstreamTls;
use crate::config::{Codec, HttpConfig};
use crate::listener::ListenerShared;
use crate::state::DataPlane;
use crate::stats::HttpStats;
use crate::tls::PeerTls;

/// A filter chain ending in the HTTP connection manager, with its stats.
#[derive(Debug)]
pub(crate) struct HttpChain {
    /// Name of the listener the chain belongs to (for records).
    pub listener: Arc<str>,
    pub config: Arc<HttpConfig>,
    pub stats: Arc<HttpStats>,
    /// The chain's TLS termination, if any.
    pub tls: Option<Arc<DownstreamTls>>,
}

/// Per-connection context handed to the router.
#[derive(Debug)]
pub(crate) struct ConnContext {
    pub chain: Arc<HttpChain>,
    pub data: Arc<DataPlane>,
    pub peer: SocketAddr,
    /// The destination as restored by `original_dst`, else the socket's
    /// local address: where ORIGINAL_DST clusters send requests.
    pub local: SocketAddr,
    /// What the TLS handshake established; `None` on plaintext connections.
    pub tls: Option<Arc<PeerTls>>,
}

pub(crate) async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    chain: Arc<HttpChain>,
    shared: &ListenerShared,
    tls: Option<Arc<PeerTls>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stats = chain.stats.clone();
    stats.downstream_cx_total.inc();
    stats.downstream_cx_active.inc();
    // Over TLS the negotiated ALPN picks the codec, as in Envoy.
    let codec = match (
        chain.config.codec,
        tls.as_ref().and_then(|t| t.alpn.as_deref()),
    ) {
        (Codec::Auto, Some(b"h2")) => Codec::Http2,
        (Codec::Auto, Some(b"http/1.1" | b"http/1.0")) => Codec::Http1,
        (codec, _) => codec,
    };
    let ctx = Arc::new(ConnContext {
        chain,
        data: shared.data.clone(),
        peer,
        local,
        tls,
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
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shared.stopped() => {
            // Finish the requests in flight (HTTP/2 GOAWAY, HTTP/1 close after
            // the current response), then give up after the drain timeout.
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(shared.drain_timeout, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "downstream connection ended with an error");
    }
    stats.downstream_cx_active.dec();
}
