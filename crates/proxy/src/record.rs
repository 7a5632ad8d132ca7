//! What happened to one request or one proxied TCP connection: the input of
//! access logs and metrics.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, StatusCode, Version};

/// Envoy's response flags, rendered with Envoy's short names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u16);

impl ResponseFlags {
    /// NR: no route or virtual host matched, or the route configuration is missing.
    pub const NO_ROUTE_FOUND: ResponseFlags = ResponseFlags(1);
    /// UH: the cluster has no healthy endpoint.
    pub const NO_HEALTHY_UPSTREAM: ResponseFlags = ResponseFlags(1 << 1);
    /// UF: connecting to the upstream failed.
    pub const UPSTREAM_CONNECTION_FAILURE: ResponseFlags = ResponseFlags(1 << 2);
    /// UT: the route timeout expired.
    pub const UPSTREAM_REQUEST_TIMEOUT: ResponseFlags = ResponseFlags(1 << 3);
    /// UC: the upstream connection closed or reset before a response.
    pub const UPSTREAM_CONNECTION_TERMINATION: ResponseFlags = ResponseFlags(1 << 4);
    /// URX: retries or connect attempts exhausted.
    pub const UPSTREAM_RETRY_LIMIT_EXCEEDED: ResponseFlags = ResponseFlags(1 << 5);
    /// NC: the route's cluster does not exist.
    pub const NO_CLUSTER_FOUND: ResponseFlags = ResponseFlags(1 << 6);
    /// DC: the downstream connection went away mid-request.
    pub const DOWNSTREAM_CONNECTION_TERMINATION: ResponseFlags = ResponseFlags(1 << 7);

    /// UO: a circuit breaker refused the request (overflow).
    pub const UPSTREAM_OVERFLOW: ResponseFlags = ResponseFlags(1 << 8);
    /// DI: the fault filter delayed the request.
    pub const DELAY_INJECTED: ResponseFlags = ResponseFlags(1 << 9);
    /// FI: the fault filter aborted the request.
    pub const FAULT_INJECTED: ResponseFlags = ResponseFlags(1 << 10);
    /// LR: the proxy reset the stream itself.
    pub const LOCAL_RESET: ResponseFlags = ResponseFlags(1 << 11);
    /// UR: the upstream reset the stream.
    pub const UPSTREAM_REMOTE_RESET: ResponseFlags = ResponseFlags(1 << 12);

    const NAMES: [(ResponseFlags, &'static str); 13] = [
        (Self::NO_ROUTE_FOUND, "NR"),
        (Self::NO_HEALTHY_UPSTREAM, "UH"),
        (Self::UPSTREAM_CONNECTION_FAILURE, "UF"),
        (Self::UPSTREAM_REQUEST_TIMEOUT, "UT"),
        (Self::UPSTREAM_CONNECTION_TERMINATION, "UC"),
        (Self::UPSTREAM_RETRY_LIMIT_EXCEEDED, "URX"),
        (Self::NO_CLUSTER_FOUND, "NC"),
        (Self::DOWNSTREAM_CONNECTION_TERMINATION, "DC"),
        (Self::UPSTREAM_OVERFLOW, "UO"),
        (Self::DELAY_INJECTED, "DI"),
        (Self::FAULT_INJECTED, "FI"),
        (Self::LOCAL_RESET, "LR"),
        (Self::UPSTREAM_REMOTE_RESET, "UR"),
    ];

    pub fn empty() -> ResponseFlags {
        ResponseFlags(0)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn contains(self, other: ResponseFlags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn insert(&mut self, other: ResponseFlags) {
        self.0 |= other.0;
    }
}

impl fmt::Display for ResponseFlags {
    /// `-` when empty, else the short names joined by `,` (Envoy's `%RESPONSE_FLAGS%`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// One request as the proxy saw it, completed when the response headers are
/// sent. Fields are cheap clones of what the request already holds.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub start: SystemTime,
    /// From the request's arrival to the response headers.
    pub duration: Duration,
    pub listener: Arc<str>,
    pub downstream_remote: SocketAddr,
    pub downstream_local: SocketAddr,
    pub protocol: Version,
    pub method: Method,
    pub authority: Option<HeaderValue>,
    pub path: Option<HeaderValue>,
    pub request_id: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub status: StatusCode,
    pub flags: ResponseFlags,
    pub route_name: Option<Arc<str>>,
    pub cluster: Option<Arc<str>>,
    pub upstream_host: Option<SocketAddr>,
    /// Set on local replies: why the proxy answered itself
    /// (`route_not_found`, `no_healthy_upstream`...), as Envoy's `%RESPONSE_CODE_DETAILS%`.
    pub details: &'static str,
    /// The downstream peer's identity (first URI SAN of its certificate) on
    /// a TLS connection that presented one, as Envoy's
    /// `%DOWNSTREAM_PEER_URI_SAN%` (the principal of authorization policies).
    pub downstream_peer_principal: Option<Arc<str>>,
}

/// One connection through the TCP proxy filter, completed when it closes.
#[derive(Debug, Clone)]
pub struct ConnectionRecord {
    pub start: SystemTime,
    /// From the accept to the close of both sides.
    pub duration: Duration,
    pub listener: Arc<str>,
    /// The filter chain's name (empty when it has none).
    pub filter_chain: Arc<str>,
    /// The TCP proxy's `stat_prefix`.
    pub stat_prefix: Arc<str>,
    pub downstream_remote: SocketAddr,
    /// The destination as restored by `original_dst` (else the socket's
    /// local address), as Envoy's `%DOWNSTREAM_LOCAL_ADDRESS%`.
    pub downstream_local: SocketAddr,
    pub cluster: Option<Arc<str>>,
    pub upstream_host: Option<SocketAddr>,
    /// The upstream connection's local address (e.g. 127.0.0.6:port).
    pub upstream_local: Option<SocketAddr>,
    /// Bytes read from the downstream connection (sent upstream).
    pub bytes_received: u64,
    /// Bytes written to the downstream connection (received from upstream).
    pub bytes_sent: u64,
    pub flags: ResponseFlags,
    /// The downstream peer's identity on a TLS connection (first URI SAN).
    pub downstream_peer_principal: Option<Arc<str>>,
    /// The upstream server's identity when TLS was originated.
    pub upstream_peer_principal: Option<Arc<str>>,
}

/// Receives every completed [`RequestRecord`] and [`ConnectionRecord`]
/// (access logs, telemetry, tests).
pub trait RequestObserver: Send + Sync + 'static {
    fn on_request(&self, record: &RequestRecord);

    /// Called when a TCP-proxied connection ends.
    fn on_connection(&self, _record: &ConnectionRecord) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_envoy() {
        assert_eq!(ResponseFlags::empty().to_string(), "-");
        let mut f = ResponseFlags::UPSTREAM_CONNECTION_FAILURE;
        f.insert(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
        assert_eq!(f.to_string(), "UF,URX");
        assert_eq!(ResponseFlags::NO_ROUTE_FOUND.to_string(), "NR");
    }
}
