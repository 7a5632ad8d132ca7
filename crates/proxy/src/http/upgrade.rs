//! HTTP/1.1 upgrades (WebSocket): the handshake goes upstream on a
//! connection of its own, and once both sides switched protocols the proxy
//! copies bytes both ways until either closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::client::conn::http1;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::body::ProxyBody;
use super::respond::LocalReply;
use crate::upstream::{ConnectError, Host, RequestBody};

/// Whether the request asks to switch to WebSocket.
pub(super) fn is_websocket(headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let connection = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    upgrade && connection
}

/// Restores the upgrade headers that hop-by-hop stripping removed.
pub(super) fn restore_headers(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// An HTTP/1.1 client connection that may be upgraded, driven in the background.
async fn handshake<S>(stream: S) -> Result<http1::SendRequest<RequestBody>, LocalReply>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| LocalReply::ConnectFailure)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upgraded upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// Sends the handshake; on `101 Switching Protocols` pipes the two
/// upgraded connections together in the background.
pub(super) async fn forward(
    host: &Arc<Host>,
    req: Request<RequestBody>,
    connect_timeout: Duration,
    source: Option<SocketAddr>,
    downstream: OnUpgrade,
) -> Result<Response<ProxyBody>, LocalReply> {
    let stream = crate::upstream::connect(host.address, source, connect_timeout)
        .await
        .map_err(|e| match e {
            ConnectError::Timeout => LocalReply::ConnectTimeout,
            ConnectError::Io(_) => LocalReply::ConnectFailure,
        })?;
    let mut sender = match &host.tls {
        None => handshake(stream).await?,
        Some(tls) => {
            let handshake_tls = crate::tls::connect(tls, host.address, stream);
            let connected = tokio::time::timeout(connect_timeout, handshake_tls)
                .await
                .map_err(|_| LocalReply::ConnectTimeout)?
                .map_err(|reason| {
                    tracing::debug!(host = %host.address, %reason, "upstream TLS failed");
                    LocalReply::TlsConnectFailure
                })?;
            handshake(connected.stream).await?
        }
    };
    let mut resp = sender
        .send_request(req)
        .await
        .map_err(|_| LocalReply::ConnectionTermination)?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(resp.map(ProxyBody::Raw));
    }
    let upstream = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (Ok(down), Ok(up)) = tokio::join!(downstream, upstream) else {
            tracing::debug!("an upgrade did not complete");
            return;
        };
        let mut down = TokioIo::new(down);
        let mut up = TokioIo::new(up);
        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
    });
    let (parts, _) = resp.into_parts();
    Ok(Response::from_parts(parts, ProxyBody::Empty))
}
