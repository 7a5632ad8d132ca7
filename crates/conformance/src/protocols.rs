//! Requests beyond plain HTTP/1.1: a unary gRPC call over h2c and a
//! WebSocket round trip, each through the proxy under test.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::case::{ClientKind, RequestSpec};
use crate::runner::Answer;

const TIMEOUT: Duration = Duration::from_secs(10);

fn target_and_uri(
    kind: ClientKind,
    target: SocketAddr,
    request: &RequestSpec,
) -> (SocketAddr, String) {
    match (kind, request.port) {
        (_, Some(port)) => (SocketAddr::new(target.ip(), port), request.path.clone()),
        (ClientKind::Sidecar, None) => (target, format!("http://{}{}", request.host, request.path)),
        (ClientKind::Gateway, None) => (target, request.path.clone()),
    }
}

/// A unary call with an empty message; the reply names the backend.
pub(crate) async fn grpc_call(
    kind: ClientKind,
    target: SocketAddr,
    request: &RequestSpec,
) -> anyhow::Result<Answer> {
    let (target, _) = target_and_uri(kind, target, request);
    let uri = format!("http://{}{}", request.host, request.path);
    tokio::time::timeout(TIMEOUT, async {
        let stream = TcpStream::connect(target).await?;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(conn);
        let mut builder = http::Request::builder()
            .method("POST")
            .uri(uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let req = builder.body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))?;
        let response = sender.send_request(req).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let collected = response.into_body().collect().await?;
        let trailers = collected.trailers().cloned();
        let body = collected.to_bytes();
        let grpc_status = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let grpc_backend =
            (body.len() > 5).then(|| String::from_utf8_lossy(&body[5..]).to_string());
        anyhow::Ok(Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).to_string(),
            json: None,
            grpc_status,
            grpc_backend,
        })
    })
    .await
    .context("gRPC call timed out")?
}

/// The WebSocket handshake through the proxy, then one message that the
/// demo app echoes; the answer's body is what came back.
pub(crate) async fn websocket_echo(
    kind: ClientKind,
    target: SocketAddr,
    request: &RequestSpec,
) -> anyhow::Result<Answer> {
    let (target, uri) = target_and_uri(kind, target, request);
    tokio::time::timeout(TIMEOUT, async {
        let mut stream = TcpStream::connect(target).await?;
        let mut handshake = format!(
            "GET {uri} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: bWl6emVuLXRlc3Qta2V5IQ==\r\nSec-WebSocket-Version: 13\r\n",
            request.host
        );
        for (name, value) in &request.headers {
            handshake.push_str(&format!("{name}: {value}\r\n"));
        }
        handshake.push_str("\r\n");
        stream.write_all(handshake.as_bytes()).await?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await? == 0 {
                bail!("connection closed during the handshake");
            }
            head.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&head).to_string();
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no status line")?;
        let mut headers = http::HeaderMap::new();
        for line in text.lines().skip(1) {
            if let Some((k, v)) = line.split_once(':')
                && let (Ok(k), Ok(v)) = (
                    http::HeaderName::from_bytes(k.trim().as_bytes()),
                    http::HeaderValue::from_str(v.trim()),
                )
            {
                headers.append(k, v);
            }
        }
        let mut body = String::new();
        if status == 101 {
            let message = request.body.clone().unwrap_or_else(|| "hello mesh".into());
            stream.write_all(message.as_bytes()).await?;
            let mut buf = vec![0u8; message.len()];
            stream.read_exact(&mut buf).await?;
            body = String::from_utf8_lossy(&buf).to_string();
        }
        anyhow::Ok(Answer {
            status,
            headers,
            body,
            json: None,
            grpc_status: None,
            grpc_backend: None,
        })
    })
    .await
    .context("WebSocket exchange timed out")?
}
