//! Local replies: every response the proxy makes itself is built here, with
//! Envoy's status codes and bodies so clients and tests see the same thing
//! from either proxy.

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use super::body::ProxyBody;
use crate::record::ResponseFlags;

/// Why the proxy answered by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocalReply {
    /// NR: no route configuration, virtual host or route.
    NoRoute,
    /// NC: the route's cluster is unknown.
    NoCluster(StatusCode),
    /// UH
    NoHealthyUpstream,
    /// UF
    ConnectFailure,
    /// UF, the connect attempt timed out.
    ConnectTimeout,
    /// UF, the TLS handshake with the upstream failed.
    TlsConnectFailure,
    /// UC
    ConnectionTermination,
    /// UT
    Timeout,
    /// UO: a circuit breaker is full.
    Overflow,
    /// FI: the fault filter's abort, with its HTTP status.
    FaultAbort(StatusCode),
}

impl LocalReply {
    pub(crate) fn flags(self) -> ResponseFlags {
        match self {
            LocalReply::NoRoute => ResponseFlags::NO_ROUTE_FOUND,
            LocalReply::NoCluster(_) => ResponseFlags::NO_CLUSTER_FOUND,
            LocalReply::NoHealthyUpstream => ResponseFlags::NO_HEALTHY_UPSTREAM,
            LocalReply::ConnectFailure
            | LocalReply::ConnectTimeout
            | LocalReply::TlsConnectFailure => ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
            LocalReply::ConnectionTermination => ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
            LocalReply::Timeout => ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
            LocalReply::Overflow => ResponseFlags::UPSTREAM_OVERFLOW,
            LocalReply::FaultAbort(_) => ResponseFlags::FAULT_INJECTED,
        }
    }

    /// Envoy's `%RESPONSE_CODE_DETAILS%` for the reply.
    pub(crate) fn details(self) -> &'static str {
        match self {
            LocalReply::NoRoute => "route_not_found",
            LocalReply::NoCluster(_) => "cluster_not_found",
            LocalReply::NoHealthyUpstream => "no_healthy_upstream",
            LocalReply::ConnectFailure | LocalReply::ConnectTimeout => {
                "upstream_reset_before_response_started{remote_connection_failure}"
            }
            LocalReply::TlsConnectFailure => {
                "upstream_reset_before_response_started{remote_connection_failure,TLS_error}"
            }
            LocalReply::ConnectionTermination => {
                "upstream_reset_before_response_started{connection_termination}"
            }
            LocalReply::Timeout => "upstream_response_timeout",
            LocalReply::Overflow => "upstream_reset_before_response_started{overflow}",
            LocalReply::FaultAbort(_) => "fault_filter_abort",
        }
    }

    pub(crate) fn status(self) -> StatusCode {
        match self {
            LocalReply::NoRoute => StatusCode::NOT_FOUND,
            LocalReply::NoCluster(status) | LocalReply::FaultAbort(status) => status,
            LocalReply::Timeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn body(self) -> &'static str {
        match self {
            LocalReply::NoRoute | LocalReply::NoCluster(_) => "",
            LocalReply::NoHealthyUpstream => "no healthy upstream",
            LocalReply::ConnectFailure => {
                "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
            }
            LocalReply::ConnectTimeout => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection timeout"
            }
            LocalReply::TlsConnectFailure => {
                "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: TLS_error"
            }
            LocalReply::ConnectionTermination => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
            }
            LocalReply::Timeout => "upstream request timeout",
            LocalReply::Overflow => {
                "upstream connect error or disconnect/reset before headers. reset reason: overflow"
            }
            LocalReply::FaultAbort(_) => "fault filter abort",
        }
    }

    pub(crate) fn response(self) -> Response<ProxyBody> {
        text(self.status(), self.body())
    }

    /// The reply to a gRPC request: HTTP 200 with no body and the status in
    /// `grpc-status` (a trailers-only response), as Envoy answers gRPC
    /// clients. `grpc` overrides the status mapped from the HTTP code.
    pub(crate) fn grpc_response(self, grpc: Option<u32>) -> Response<ProxyBody> {
        let code = grpc.unwrap_or_else(|| grpc_status_for(self.status()));
        let mut resp = Response::new(ProxyBody::Empty);
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from(code));
        let message = self.body();
        if !message.is_empty()
            && let Ok(v) = HeaderValue::from_str(message)
        {
            h.insert("grpc-message", v);
        }
        resp
    }
}

/// Whether a request is gRPC (its content type), for gRPC-shaped local replies.
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The gRPC status for an HTTP status, as gRPC's HTTP mapping defines it.
fn grpc_status_for(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// A response with a plain-text body (none when empty), as Envoy's local replies.
pub(crate) fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::text(body));
    *resp.status_mut() = status;
    if !body.is_empty() {
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    resp
}
