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
    /// UC
    ConnectionTermination,
    /// UT
    Timeout,
}

impl LocalReply {
    pub(crate) fn flags(self) -> ResponseFlags {
        match self {
            LocalReply::NoRoute => ResponseFlags::NO_ROUTE_FOUND,
            LocalReply::NoCluster(_) => ResponseFlags::NO_CLUSTER_FOUND,
            LocalReply::NoHealthyUpstream => ResponseFlags::NO_HEALTHY_UPSTREAM,
            LocalReply::ConnectFailure | LocalReply::ConnectTimeout => {
                ResponseFlags::UPSTREAM_CONNECTION_FAILURE
            }
            LocalReply::ConnectionTermination => ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
            LocalReply::Timeout => ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
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
            LocalReply::ConnectionTermination => {
                "upstream_reset_before_response_started{connection_termination}"
            }
            LocalReply::Timeout => "upstream_response_timeout",
        }
    }

    pub(crate) fn status(self) -> StatusCode {
        match self {
            LocalReply::NoRoute => StatusCode::NOT_FOUND,
            LocalReply::NoCluster(status) => status,
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
            LocalReply::ConnectionTermination => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
            }
            LocalReply::Timeout => "upstream request timeout",
        }
    }

    pub(crate) fn response(self) -> Response<ProxyBody> {
        text(self.status(), self.body())
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
