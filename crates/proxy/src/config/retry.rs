//! `RouteAction.retry_policy` → [`RetryPolicy`]: which failures are retried,
//! how often, with which per-try timeout and back-off.

use std::time::Duration;

use http::HeaderMap;
use mizzen_xds::pb::envoy::config::route::v3 as rpb;

use super::check::reject_unknown;
use super::matcher::{HeaderMatch, HeaderSource, header_match};
use super::{ConfigError, Scope, duration, join};

/// Envoy's back-off base interval when `retry_back_off` is unset.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);

const RETRY_POLICY_FIELDS: &[(u32, &str)] = &[
    (1, "retry_on"),
    (2, "num_retries"),
    (3, "per_try_timeout"),
    (4, "retry_priority"),
    (5, "retry_host_predicate"),
    (6, "host_selection_retry_max_attempts"),
    (7, "retriable_status_codes"),
    (8, "retry_back_off"),
    (9, "retriable_headers"),
    (10, "retriable_request_headers"),
    (11, "rate_limited_retry_back_off"),
    (12, "retry_options_predicates"),
    (13, "per_try_idle_timeout"),
    (14, "refresh_cluster_on_retry"),
];
const BACK_OFF_FIELDS: &[(u32, &str)] = &[(1, "base_interval"), (2, "max_interval")];

/// The `retry_on` conditions as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn(u32);

impl RetryOn {
    pub const FIVE_XX: RetryOn = RetryOn(1);
    pub const GATEWAY_ERROR: RetryOn = RetryOn(1 << 1);
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1 << 2);
    pub const REFUSED_STREAM: RetryOn = RetryOn(1 << 3);
    pub const RESET: RetryOn = RetryOn(1 << 4);
    pub const RETRIABLE_4XX: RetryOn = RetryOn(1 << 5);
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(1 << 6);
    pub const RETRIABLE_HEADERS: RetryOn = RetryOn(1 << 7);
    pub const GRPC_CANCELLED: RetryOn = RetryOn(1 << 8);
    pub const GRPC_DEADLINE_EXCEEDED: RetryOn = RetryOn(1 << 9);
    pub const GRPC_INTERNAL: RetryOn = RetryOn(1 << 10);
    pub const GRPC_RESOURCE_EXHAUSTED: RetryOn = RetryOn(1 << 11);
    pub const GRPC_UNAVAILABLE: RetryOn = RetryOn(1 << 12);
    pub const ENVOY_RATELIMITED: RetryOn = RetryOn(1 << 13);
    pub const RESET_BEFORE_REQUEST: RetryOn = RetryOn(1 << 14);
    /// Only concerns HTTP/3 upstreams, which the proxy never uses.
    pub const HTTP3_POST_CONNECT_FAILURE: RetryOn = RetryOn(1 << 15);

    const NAMES: [(&'static str, RetryOn); 16] = [
        ("5xx", Self::FIVE_XX),
        ("gateway-error", Self::GATEWAY_ERROR),
        ("connect-failure", Self::CONNECT_FAILURE),
        ("refused-stream", Self::REFUSED_STREAM),
        ("reset", Self::RESET),
        ("retriable-4xx", Self::RETRIABLE_4XX),
        ("retriable-status-codes", Self::RETRIABLE_STATUS_CODES),
        ("retriable-headers", Self::RETRIABLE_HEADERS),
        ("cancelled", Self::GRPC_CANCELLED),
        ("deadline-exceeded", Self::GRPC_DEADLINE_EXCEEDED),
        ("internal", Self::GRPC_INTERNAL),
        ("resource-exhausted", Self::GRPC_RESOURCE_EXHAUSTED),
        ("unavailable", Self::GRPC_UNAVAILABLE),
        ("envoy-ratelimited", Self::ENVOY_RATELIMITED),
        ("reset-before-request", Self::RESET_BEFORE_REQUEST),
        (
            "http3-post-connect-failure",
            Self::HTTP3_POST_CONNECT_FAILURE,
        ),
    ];

    pub fn contains(self, other: RetryOn) -> bool {
        self.0 & other.0 != 0
    }

    fn parse(s: &str) -> Result<RetryOn, String> {
        let mut out = RetryOn::default();
        for token in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match Self::NAMES.iter().find(|(n, _)| *n == token) {
                Some((_, bit)) => out.0 |= bit.0,
                None => return Err(format!("unknown retry condition {token:?}")),
            }
        }
        Ok(out)
    }
}

/// Why an attempt failed without a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFailure {
    /// No connection could be made.
    Connect,
    /// The connection or stream was reset after the request was sent.
    Reset,
    /// The upstream refused the HTTP/2 stream.
    RefusedStream,
    /// The per-try timeout expired.
    PerTryTimeout,
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub on: RetryOn,
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub status_codes: Vec<u16>,
    pub headers: Vec<HeaderMatch>,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl RetryPolicy {
    pub(crate) fn compile(
        scope: &Scope,
        path: &str,
        p: &rpb::RetryPolicy,
    ) -> Result<RetryPolicy, ConfigError> {
        reject_unknown(scope, path, p, RETRY_POLICY_FIELDS, |p| {
            p.retry_on.clear();
            p.num_retries = None;
            p.per_try_timeout = None;
            p.retriable_status_codes.clear();
            p.retriable_headers.clear();
            p.retry_back_off = None;
            // Envoy's default: at most this many host selections per retry;
            // without host predicates it never matters.
            if p.retry_host_predicate.is_empty() {
                p.host_selection_retry_max_attempts = 0;
            }
        })?;
        let on =
            RetryOn::parse(&p.retry_on).map_err(|e| scope.invalid(join(path, "retry_on"), e))?;
        let per_try_timeout = match &p.per_try_timeout {
            None => None,
            Some(d) => {
                let d = duration(scope, &join(path, "per_try_timeout"), d)?;
                (!d.is_zero()).then_some(d)
            }
        };
        let status_codes = p
            .retriable_status_codes
            .iter()
            .map(|c| {
                u16::try_from(*c)
                    .ok()
                    .filter(|c| (100..600).contains(c))
                    .ok_or_else(|| {
                        scope.invalid(join(path, "retriable_status_codes"), "not an HTTP status")
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let headers = p
            .retriable_headers
            .iter()
            .enumerate()
            .map(|(i, h)| header_match(scope, &join(path, &format!("retriable_headers[{i}]")), h))
            .collect::<Result<Vec<_>, _>>()?;
        let (mut backoff_base, mut backoff_max) = (DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_BASE * 10);
        if let Some(b) = &p.retry_back_off {
            let bpath = join(path, "retry_back_off");
            reject_unknown(scope, &bpath, b, BACK_OFF_FIELDS, |b| {
                b.base_interval = None;
                b.max_interval = None;
            })?;
            let Some(base) = &b.base_interval else {
                return Err(scope.missing(join(&bpath, "base_interval")));
            };
            backoff_base = duration(scope, &join(&bpath, "base_interval"), base)?;
            if backoff_base.is_zero() {
                return Err(scope.invalid(join(&bpath, "base_interval"), "must be greater than 0"));
            }
            backoff_max = match &b.max_interval {
                Some(m) => duration(scope, &join(&bpath, "max_interval"), m)?,
                None => backoff_base * 10,
            };
            if backoff_max < backoff_base {
                return Err(scope.invalid(
                    join(&bpath, "max_interval"),
                    "must not be less than base_interval",
                ));
            }
        }
        Ok(RetryPolicy {
            on,
            num_retries: p.num_retries.map_or(1, |n| n.value),
            per_try_timeout,
            status_codes,
            headers,
            backoff_base,
            backoff_max,
        })
    }

    /// Whether a response with these status and headers is worth another attempt.
    pub fn retry_response(&self, status: u16, headers: &HeaderMap) -> bool {
        let on = self.on;
        if on.contains(RetryOn::FIVE_XX) && status >= 500 {
            return true;
        }
        if on.contains(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504) {
            return true;
        }
        if on.contains(RetryOn::RETRIABLE_4XX) && status == 409 {
            return true;
        }
        if on.contains(RetryOn::ENVOY_RATELIMITED) && headers.contains_key("x-envoy-ratelimited") {
            return true;
        }
        if on.contains(RetryOn::RETRIABLE_STATUS_CODES) && self.status_codes.contains(&status) {
            return true;
        }
        if on.contains(RetryOn::RETRIABLE_HEADERS)
            && self.headers.iter().any(|m| {
                let value = match &m.source {
                    HeaderSource::Header(name) => headers.get(name).and_then(|v| v.to_str().ok()),
                    _ => None,
                };
                m.matches(value)
            })
        {
            return true;
        }
        if let Some(code) = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
        {
            let bit = match code {
                1 => RetryOn::GRPC_CANCELLED,
                4 => RetryOn::GRPC_DEADLINE_EXCEEDED,
                8 => RetryOn::GRPC_RESOURCE_EXHAUSTED,
                13 => RetryOn::GRPC_INTERNAL,
                14 => RetryOn::GRPC_UNAVAILABLE,
                _ => return false,
            };
            return on.contains(bit);
        }
        false
    }

    /// Whether a failure without a response is worth another attempt.
    pub fn retry_failure(&self, failure: AttemptFailure) -> bool {
        let on = self.on;
        let server_side = on.contains(RetryOn::FIVE_XX) || on.contains(RetryOn::GATEWAY_ERROR);
        match failure {
            AttemptFailure::Connect => {
                server_side
                    || on.contains(RetryOn::CONNECT_FAILURE)
                    || on.contains(RetryOn::RESET)
                    || on.contains(RetryOn::RESET_BEFORE_REQUEST)
            }
            AttemptFailure::Reset => server_side || on.contains(RetryOn::RESET),
            AttemptFailure::RefusedStream => {
                server_side || on.contains(RetryOn::RESET) || on.contains(RetryOn::REFUSED_STREAM)
            }
            AttemptFailure::PerTryTimeout => server_side || on.contains(RetryOn::RESET),
        }
    }

    /// The jittered exponential back-off before retry number `retry` (1-based):
    /// a random wait up to `base * (2^retry - 1)`, capped at the maximum.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = (1u64 << retry.min(20)) - 1;
        let ceiling = self
            .backoff_base
            .saturating_mul(factor as u32)
            .min(self.backoff_max);
        let ms = ceiling.as_millis() as u64;
        if ms == 0 {
            return ceiling;
        }
        Duration::from_millis(rand::random_range(0..=ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mizzen_xds::pb::google::protobuf::UInt32Value;

    fn compile(p: rpb::RetryPolicy) -> Result<RetryPolicy, ConfigError> {
        RetryPolicy::compile(&Scope::new("route_configuration", "r"), "retry_policy", &p)
    }

    #[test]
    fn conditions_decide_retries() {
        let p = compile(rpb::RetryPolicy {
            retry_on: "gateway-error,retriable-status-codes,unavailable".into(),
            num_retries: Some(UInt32Value { value: 3 }),
            retriable_status_codes: vec![418],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(p.num_retries, 3);
        let h = HeaderMap::new();
        assert!(p.retry_response(503, &h));
        assert!(!p.retry_response(500, &h));
        assert!(p.retry_response(418, &h));
        let mut grpc = HeaderMap::new();
        grpc.insert("grpc-status", "14".parse().unwrap());
        assert!(p.retry_response(200, &grpc));
        assert!(p.retry_failure(AttemptFailure::Connect));
        assert!(p.retry_failure(AttemptFailure::PerTryTimeout));
        let c = compile(rpb::RetryPolicy {
            retry_on: "connect-failure".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.num_retries, 1);
        assert!(c.retry_failure(AttemptFailure::Connect));
        assert!(!c.retry_failure(AttemptFailure::Reset));
        assert!(!c.retry_response(503, &h));
    }

    #[test]
    fn retriable_headers() {
        let p = compile(rpb::RetryPolicy {
            retry_on: "retriable-headers".into(),
            retriable_headers: vec![rpb::HeaderMatcher {
                name: "x-retry".into(),
                header_match_specifier: Some(
                    rpb::header_matcher::HeaderMatchSpecifier::PresentMatch(true),
                ),
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
        let mut h = HeaderMap::new();
        assert!(!p.retry_response(200, &h));
        h.insert("x-retry", "1".parse().unwrap());
        assert!(p.retry_response(200, &h));
    }

    #[test]
    fn backoff_is_bounded() {
        let p = compile(rpb::RetryPolicy {
            retry_on: "5xx".into(),
            ..Default::default()
        })
        .unwrap();
        for retry in 1..10 {
            assert!(p.backoff(retry) <= Duration::from_millis(250));
        }
        assert!(p.backoff(1) <= Duration::from_millis(25));
    }

    #[test]
    fn refusals() {
        let err = compile(rpb::RetryPolicy {
            retry_on: "5xx,sometimes".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("unknown retry condition"), "{err}");
        let err = compile(rpb::RetryPolicy {
            retry_host_predicate: vec![Default::default()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "route_configuration r: retry_policy.retry_host_predicate is not supported"
        );
    }
}
