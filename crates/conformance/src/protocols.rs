//! Requests beyond plain HTTP/1.1: a unary gRPC call over h2c, a WebSocket
//! round trip, and HTTPS with a chosen server name, each through the proxy
//! under test.

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

/// An HTTP/1.1 request over TLS with server name `sni`, sent to the proxy's
/// listener on the request's `port` (TLS passes through to the backend,
/// whose self-signed certificate is accepted).
pub(crate) async fn https_request(
    target: SocketAddr,
    request: &RequestSpec,
    sni: &str,
) -> anyhow::Result<Answer> {
    let port = request
        .port
        .context("an `sni` request needs the `port` of the proxy's listener")?;
    let target = SocketAddr::new(target.ip(), port);
    let server_name = rustls::pki_types::ServerName::try_from(sni.to_owned())
        .with_context(|| format!("{sni:?} is not a server name"))?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    tokio::time::timeout(TIMEOUT, async {
        let stream = TcpStream::connect(target).await?;
        let stream = connector
            .connect(server_name, stream)
            .await
            .context("TLS handshake through the proxy")?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut builder = http::Request::builder()
            .method(request.method.as_str())
            .uri(request.path.as_str())
            .header("host", &request.host);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let body = request.body.clone().map(Bytes::from).unwrap_or_default();
        let response = sender.send_request(builder.body(Full::new(body))?).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        let body = String::from_utf8_lossy(&body).to_string();
        let json = serde_json::from_str(&body).ok();
        anyhow::Ok(Answer {
            status,
            headers,
            body,
            json,
            grpc_status: None,
            grpc_backend: None,
        })
    })
    .await
    .context("HTTPS request timed out")?
}

/// Accepts any server certificate (the demo app's are self-signed) but
/// still checks the handshake signatures.
#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
