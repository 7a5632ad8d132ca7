//! One-shot HTTP requests for tests.
//!
//! Every request opens its own TCP connection and sends exactly what it was
//! given: no pooling, no retries, no redirects, no added headers. A test
//! comparing Envoy with `mizzen-proxy` must know that both saw the same
//! bytes, which a general-purpose client does not promise.

use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// How long a request may take, connect to last body byte, before it fails
/// with [`ClientError::Timeout`]. Long enough for Envoy's own timeouts
/// (15 s by default for routes) to fire first; wrap the call in
/// `tokio::time::timeout` for a shorter limit.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP version spoken on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (no `Upgrade: h2c`).
    H2c,
}

/// Why a request got no response.
///
/// The variants match the stages where a proxy can fail a request, so a test
/// can expect, say, a refused connection as opposed to a reset stream.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP handshake with {target} failed: {source}")]
    Handshake {
        target: String,
        #[source]
        source: hyper::Error,
    },
    /// The connection was closed or reset, or the response was malformed.
    #[error("request to {target} failed: {source}")]
    Request {
        target: String,
        #[source]
        source: hyper::Error,
    },
    #[error("request to {target} timed out after {after:?}")]
    Timeout { target: String, after: Duration },
}

/// Sends `request` over a new connection to `target`.
///
/// `target` is where to connect (`127.0.0.1:8080`, `service-b:80` or
/// `http://127.0.0.1:8080`); the request's URI and headers are sent as they
/// are. For HTTP/1.1 that means the request line carries the URI exactly as
/// given (origin form `/path`, or absolute form `http://host/path` when
/// talking to a forward proxy) and the caller sets `Host`. For h2c, give an
/// absolute URI: its authority becomes `:authority`.
pub async fn send(
    target: &str,
    protocol: Protocol,
    request: Request<Bytes>,
) -> Result<Response<Bytes>, ClientError> {
    let target = connect_authority(target)?;
    tokio::time::timeout(REQUEST_TIMEOUT, send_inner(&target, protocol, request))
        .await
        .unwrap_or_else(|_| {
            Err(ClientError::Timeout {
                target: target.clone(),
                after: REQUEST_TIMEOUT,
            })
        })
}

async fn send_inner(
    target: &str,
    protocol: Protocol,
    request: Request<Bytes>,
) -> Result<Response<Bytes>, ClientError> {
    let stream = TcpStream::connect(target)
        .await
        .map_err(|source| ClientError::Connect {
            target: target.to_owned(),
            source,
        })?;
    // Small requests must not wait for Nagle; latency matters in the
    // timeout tests.
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    let request = request.map(Full::new);
    let handshake_error = |source| ClientError::Handshake {
        target: target.to_owned(),
        source,
    };
    let request_error = |source| ClientError::Request {
        target: target.to_owned(),
        source,
    };
    let response = match protocol {
        Protocol::Http1 => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(handshake_error)?;
            // The connection task ends on its own when the response is
            // done and `sender` is dropped.
            tokio::spawn(conn);
            sender.send_request(request).await.map_err(request_error)?
        }
        Protocol::H2c => {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(handshake_error)?;
            tokio::spawn(conn);
            sender.send_request(request).await.map_err(request_error)?
        }
    };
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(request_error)?.to_bytes();
    Ok(Response::from_parts(parts, body))
}

/// `GET path` over HTTP/1.1 to `target`, with `Host: host`.
///
/// `target` is `ip:port`, `name:port` or `http://name:port`. An empty `host`
/// means the target's authority; an empty `path` means the target URL's
/// path, or `/`. `headers` are added in order, so a name may repeat.
pub async fn http_get(
    target: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, HeaderMap, Bytes), ClientError> {
    get(Protocol::Http1, target, host, path, headers).await
}

/// Like [`http_get`], over HTTP/2 with prior knowledge; `host` is sent as
/// `:authority`.
pub async fn h2c_get(
    target: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, HeaderMap, Bytes), ClientError> {
    get(Protocol::H2c, target, host, path, headers).await
}

async fn get(
    protocol: Protocol,
    target: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, HeaderMap, Bytes), ClientError> {
    let authority = connect_authority(target)?;
    let host = if host.is_empty() { &authority } else { host };
    let path = match path {
        "" => target_path(target),
        path => path.to_owned(),
    };
    let invalid = |what: String| ClientError::InvalidRequest(what);
    let uri: Uri = match protocol {
        Protocol::Http1 => path.parse(),
        Protocol::H2c => format!("http://{host}{path}").parse(),
    }
    .map_err(|err| invalid(format!("path {path:?} with host {host:?}: {err}")))?;

    let mut request = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .body(Bytes::new())
        .map_err(|err| invalid(err.to_string()))?;
    let request_headers = request.headers_mut();
    if protocol == Protocol::Http1 {
        let value =
            HeaderValue::from_str(host).map_err(|err| invalid(format!("host {host:?}: {err}")))?;
        request_headers.insert(HOST, value);
    }
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|err| invalid(format!("header name {name:?}: {err}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|err| invalid(format!("header {name}: {value:?}: {err}")))?;
        request_headers.append(name, value);
    }

    let response = send(&authority, protocol, request).await?;
    let (parts, body) = response.into_parts();
    Ok((parts.status, parts.headers, body))
}

/// The `host:port` to connect to, from `ip:port`, `host:port` or an
/// `http://` URL. A URL without a port means port 80.
fn connect_authority(target: &str) -> Result<String, ClientError> {
    let rest = match target.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(ClientError::InvalidRequest(format!(
                "target {target:?}: only http:// is supported, not {scheme}://"
            )));
        }
        None => target,
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(ClientError::InvalidRequest(format!(
            "target {target:?} has no host"
        )));
    }
    let has_port = match authority.rsplit_once(':') {
        // `[::1]:80` has a port, `[::1]` does not.
        Some((_, port)) => !port.contains(']'),
        None => false,
    };
    if has_port {
        Ok(authority.to_owned())
    } else if target.contains("://") {
        Ok(format!("{authority}:80"))
    } else {
        Err(ClientError::InvalidRequest(format!(
            "target {target:?} has no port"
        )))
    }
}

/// The path (and query) of a target URL, or `/`.
fn target_path(target: &str) -> String {
    let rest = target.split_once("://").map_or(target, |(_, rest)| rest);
    match rest.find(['/', '?']) {
        Some(start) if rest[start..].starts_with('?') => format!("/{}", &rest[start..]),
        Some(start) => rest[start..].to_owned(),
        None => "/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_authorities() {
        let cases = [
            ("127.0.0.1:8080", Some("127.0.0.1:8080")),
            ("http://127.0.0.1:8080", Some("127.0.0.1:8080")),
            ("http://service-b:80/x?y=1", Some("service-b:80")),
            ("http://service-b", Some("service-b:80")),
            ("http://[::1]/", Some("[::1]:80")),
            ("[::1]:9090", Some("[::1]:9090")),
            ("service-b", None),
            ("https://service-b:443", None),
            ("http:///path", None),
        ];
        for (target, want) in cases {
            let got = connect_authority(target).ok();
            assert_eq!(got.as_deref(), want, "{target}");
        }
    }

    #[test]
    fn target_paths() {
        assert_eq!(target_path("127.0.0.1:80"), "/");
        assert_eq!(target_path("http://a:80"), "/");
        assert_eq!(target_path("http://a:80/b?c=d"), "/b?c=d");
        assert_eq!(target_path("http://a?c"), "/?c");
    }

    #[tokio::test]
    async fn refused_connection_is_a_connect_error() {
        let port = crate::free_port();
        let err = http_get(&format!("127.0.0.1:{port}"), "", "/", &[])
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    }
}
