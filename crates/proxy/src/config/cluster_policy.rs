//! The traffic policies of a cluster: load-balancer parameters, circuit
//! breakers, outlier detection and connection-pool options.

use std::time::Duration;

use mizzen_xds::pb;
use pb::envoy::config::cluster::v3::{CircuitBreakers, OutlierDetection, cluster};
use pb::envoy::config::core::v3::HttpProtocolOptions as CommonHttpOptions;

use super::check::reject_unknown;
use super::{ConfigError, Scope, duration, join};

const THRESHOLDS_FIELDS: &[(u32, &str)] = &[
    (1, "priority"),
    (2, "max_connections"),
    (3, "max_pending_requests"),
    (4, "max_requests"),
    (5, "max_retries"),
    (6, "track_remaining"),
    (7, "max_connection_pools"),
    (8, "retry_budget"),
];
const CIRCUIT_BREAKERS_FIELDS: &[(u32, &str)] = &[(1, "thresholds"), (2, "per_host_thresholds")];
const OUTLIER_FIELDS: &[(u32, &str)] = &[
    (1, "consecutive_5xx"),
    (2, "interval"),
    (3, "base_ejection_time"),
    (4, "max_ejection_percent"),
    (5, "enforcing_consecutive_5xx"),
    (6, "enforcing_success_rate"),
    (7, "success_rate_minimum_hosts"),
    (8, "success_rate_request_volume"),
    (9, "success_rate_stdev_factor"),
    (10, "consecutive_gateway_failure"),
    (11, "enforcing_consecutive_gateway_failure"),
    (12, "split_external_local_origin_errors"),
    (13, "consecutive_local_origin_failure"),
    (14, "enforcing_consecutive_local_origin_failure"),
    (15, "enforcing_local_origin_success_rate"),
    (16, "failure_percentage_threshold"),
    (17, "enforcing_failure_percentage"),
    (18, "enforcing_failure_percentage_local_origin"),
    (19, "failure_percentage_minimum_hosts"),
    (20, "failure_percentage_request_volume"),
    (21, "max_ejection_time"),
    (22, "max_ejection_time_jitter"),
    (23, "successful_active_health_check_uneject_host"),
    (24, "monitors"),
    (25, "always_eject_one_host"),
    (26, "detect_degraded_hosts"),
];
const LEAST_REQUEST_FIELDS: &[(u32, &str)] = &[
    (1, "choice_count"),
    (2, "active_request_bias"),
    (3, "slow_start_config"),
];
const RING_HASH_FIELDS: &[(u32, &str)] = &[
    (1, "minimum_ring_size"),
    (3, "hash_function"),
    (4, "maximum_ring_size"),
];
const MAGLEV_FIELDS: &[(u32, &str)] = &[(1, "table_size")];
const COMMON_LB_FIELDS: &[(u32, &str)] = &[
    (1, "healthy_panic_threshold"),
    (2, "zone_aware_lb_config"),
    (3, "locality_weighted_lb_config"),
    (4, "update_merge_window"),
    (5, "ignore_new_hosts_until_first_hc"),
    (6, "close_connections_on_host_set_change"),
    (7, "consistent_hashing_lb_config"),
    (8, "override_host_status"),
];
const COMMON_HTTP_FIELDS: &[(u32, &str)] = &[
    (1, "idle_timeout"),
    (2, "max_headers_count"),
    (3, "max_connection_duration"),
    (4, "max_stream_duration"),
    (5, "headers_with_underscores_action"),
    (6, "max_requests_per_connection"),
    (7, "max_response_headers_kb"),
];

/// Envoy's default for every circuit-breaker threshold.
pub const DEFAULT_THRESHOLD: u32 = 1024;

/// Circuit-breaker thresholds of the default priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: DEFAULT_THRESHOLD,
            max_pending_requests: DEFAULT_THRESHOLD,
            max_requests: DEFAULT_THRESHOLD,
            max_retries: 3,
        }
    }
}

pub(crate) fn limits(
    scope: &Scope,
    path: &str,
    cb: &CircuitBreakers,
) -> Result<Limits, ConfigError> {
    reject_unknown(scope, path, cb, CIRCUIT_BREAKERS_FIELDS, |c| {
        c.thresholds.clear()
    })?;
    let mut out = Limits::default();
    for (i, t) in cb.thresholds.iter().enumerate() {
        let tpath = join(path, &format!("thresholds[{i}]"));
        reject_unknown(scope, &tpath, t, THRESHOLDS_FIELDS, |t| {
            t.max_connections = None;
            t.max_pending_requests = None;
            t.max_requests = None;
            t.max_retries = None;
            // Only changes which stats are published.
            t.track_remaining = false;
            // HIGH priority thresholds are accepted but never used: every
            // route is of default priority.
            t.priority = 0;
        })?;
        if t.priority != 0 {
            continue;
        }
        let get = |v: &Option<pb::google::protobuf::UInt32Value>, d: u32| v.map_or(d, |v| v.value);
        out = Limits {
            max_connections: get(&t.max_connections, out.max_connections),
            max_pending_requests: get(&t.max_pending_requests, out.max_pending_requests),
            max_requests: get(&t.max_requests, out.max_requests),
            max_retries: get(&t.max_retries, out.max_retries),
        };
    }
    Ok(out)
}

/// Consecutive-error outlier detection (success-rate and failure-percentage
/// ejection are only accepted when not enforced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlier {
    pub consecutive_5xx: u32,
    pub enforcing_5xx: u32,
    pub consecutive_gateway: u32,
    pub enforcing_gateway: u32,
    pub split_local_origin: bool,
    pub consecutive_local_origin: u32,
    pub enforcing_local_origin: u32,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

pub(crate) fn outlier(
    scope: &Scope,
    path: &str,
    o: &OutlierDetection,
) -> Result<Outlier, ConfigError> {
    let zero = |v: &Option<pb::google::protobuf::UInt32Value>| v.is_some_and(|v| v.value == 0);
    reject_unknown(scope, path, o, OUTLIER_FIELDS, |o| {
        o.consecutive_5xx = None;
        o.interval = None;
        o.base_ejection_time = None;
        o.max_ejection_percent = None;
        o.enforcing_consecutive_5xx = None;
        o.consecutive_gateway_failure = None;
        o.enforcing_consecutive_gateway_failure = None;
        o.split_external_local_origin_errors = false;
        o.consecutive_local_origin_failure = None;
        o.enforcing_consecutive_local_origin_failure = None;
        o.max_ejection_time = None;
        // Success-rate ejection switched off leaves its tuning without effect.
        if zero(&o.enforcing_success_rate) {
            o.enforcing_success_rate = None;
            o.success_rate_minimum_hosts = None;
            o.success_rate_request_volume = None;
            o.success_rate_stdev_factor = None;
        }
        if zero(&o.enforcing_local_origin_success_rate) || !o.split_external_local_origin_errors {
            o.enforcing_local_origin_success_rate = None;
        }
        if o.enforcing_failure_percentage.is_none_or(|v| v.value == 0)
            && o.enforcing_failure_percentage_local_origin
                .is_none_or(|v| v.value == 0)
        {
            o.enforcing_failure_percentage = None;
            o.enforcing_failure_percentage_local_origin = None;
            o.failure_percentage_threshold = None;
            o.failure_percentage_minimum_hosts = None;
            o.failure_percentage_request_volume = None;
        }
    })?;
    // Envoy enforces success-rate ejection by default; it is not implemented.
    if o.enforcing_success_rate.is_none() {
        return Err(scope.invalid(
            join(path, "enforcing_success_rate"),
            "success-rate ejection is not supported; set it to 0",
        ));
    }
    let get = |v: &Option<pb::google::protobuf::UInt32Value>, d: u32| v.map_or(d, |v| v.value);
    let dur = |field: &str, v: &Option<pb::google::protobuf::Duration>, d: Duration| match v {
        None => Ok(d),
        Some(v) => duration(scope, &join(path, field), v),
    };
    let base_ejection_time = dur(
        "base_ejection_time",
        &o.base_ejection_time,
        Duration::from_secs(30),
    )?;
    let interval = dur("interval", &o.interval, Duration::from_secs(10))?;
    if interval.is_zero() {
        return Err(scope.invalid(join(path, "interval"), "must be greater than 0"));
    }
    Ok(Outlier {
        consecutive_5xx: get(&o.consecutive_5xx, 5),
        enforcing_5xx: get(&o.enforcing_consecutive_5xx, 100).min(100),
        consecutive_gateway: get(&o.consecutive_gateway_failure, 5),
        enforcing_gateway: get(&o.enforcing_consecutive_gateway_failure, 0).min(100),
        split_local_origin: o.split_external_local_origin_errors,
        consecutive_local_origin: get(&o.consecutive_local_origin_failure, 5),
        enforcing_local_origin: get(&o.enforcing_consecutive_local_origin_failure, 100).min(100),
        interval,
        base_ejection_time,
        max_ejection_time: dur(
            "max_ejection_time",
            &o.max_ejection_time,
            Duration::from_secs(300),
        )?
        .max(base_ejection_time),
        max_ejection_percent: get(&o.max_ejection_percent, 10).min(100),
    })
}

/// Parameters of the load balancer beyond its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LbParams {
    /// LEAST_REQUEST: hosts compared per pick.
    pub choice_count: u32,
    pub ring_min: u64,
    pub ring_max: u64,
    pub maglev_table_size: u64,
    /// Below this share of healthy hosts (hundredths of a percent),
    /// ejections are ignored.
    pub panic_threshold: u32,
    /// `common_lb_config.locality_weighted_lb_config`: pick a locality by
    /// its weight first.
    pub locality_weighted: bool,
}

impl Default for LbParams {
    fn default() -> LbParams {
        LbParams {
            choice_count: 2,
            ring_min: 1024,
            ring_max: 8 * 1024 * 1024,
            maglev_table_size: 65537,
            panic_threshold: 5000,
            locality_weighted: false,
        }
    }
}

/// Compiles `lb_config` and `common_lb_config` into `out`.
pub(crate) fn lb_params(
    scope: &Scope,
    c: &pb::envoy::config::cluster::v3::Cluster,
) -> Result<LbParams, ConfigError> {
    let mut out = LbParams::default();
    match &c.lb_config {
        Some(cluster::LbConfig::LeastRequestLbConfig(l)) => {
            let path = "least_request_lb_config";
            reject_unknown(scope, path, l, LEAST_REQUEST_FIELDS, |l| {
                l.choice_count = None;
                // 1.0 is the default bias: it changes nothing with equal weights.
                if l.active_request_bias
                    .as_ref()
                    .is_some_and(|b| b.default_value == 1.0 && b.runtime_key.is_empty())
                {
                    l.active_request_bias = None;
                }
            })?;
            if let Some(n) = l.choice_count {
                if n.value < 2 {
                    return Err(scope.invalid(join(path, "choice_count"), "must be at least 2"));
                }
                out.choice_count = n.value;
            }
        }
        Some(cluster::LbConfig::RingHashLbConfig(r)) => {
            let path = "ring_hash_lb_config";
            reject_unknown(scope, path, r, RING_HASH_FIELDS, |r| {
                r.minimum_ring_size = None;
                r.maximum_ring_size = None;
                // The hash function only decides which host a key lands on.
                r.hash_function = 0;
            })?;
            if let Some(m) = r.maximum_ring_size {
                out.ring_max = m.value.min(8 * 1024 * 1024);
            }
            if let Some(m) = r.minimum_ring_size {
                out.ring_min = m.value;
            }
            if out.ring_min > out.ring_max {
                return Err(
                    scope.invalid(join(path, "minimum_ring_size"), "exceeds maximum_ring_size")
                );
            }
        }
        Some(cluster::LbConfig::MaglevLbConfig(m)) => {
            reject_unknown(scope, "maglev_lb_config", m, MAGLEV_FIELDS, |m| {
                m.table_size = None
            })?;
            if let Some(t) = m.table_size {
                if !is_prime(t.value) || t.value > 5_000_011 {
                    return Err(scope.invalid(
                        "maglev_lb_config.table_size",
                        "must be a prime up to 5000011",
                    ));
                }
                out.maglev_table_size = t.value;
            }
        }
        Some(cluster::LbConfig::RoundRobinLbConfig(r)) => {
            reject_unknown(
                scope,
                "round_robin_lb_config",
                r,
                &[(1, "slow_start_config")],
                |_| {},
            )?;
        }
        Some(cluster::LbConfig::OriginalDstLbConfig(_)) | None => {}
    }
    if let Some(common) = &c.common_lb_config {
        reject_unknown(scope, "common_lb_config", common, COMMON_LB_FIELDS, |c| {
            c.healthy_panic_threshold = None;
            if matches!(
                c.locality_config_specifier,
                Some(
                    cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_)
                )
            ) {
                c.locality_config_specifier = None;
            }
        })?;
        out.locality_weighted = matches!(
            common.locality_config_specifier,
            Some(cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
        );
        if let Some(p) = &common.healthy_panic_threshold {
            if !(0.0..=100.0).contains(&p.value) {
                return Err(scope.invalid(
                    "common_lb_config.healthy_panic_threshold",
                    "must be in [0, 100]",
                ));
            }
            out.panic_threshold = (p.value * 100.0).round() as u32;
        }
    }
    Ok(out)
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// Connection-pool options from `common_http_protocol_options`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolOptions {
    /// Close an upstream connection idle this long (Envoy: 1 h by default).
    pub idle_timeout: Option<Duration>,
    /// Close a connection after this many requests.
    pub max_requests_per_connection: Option<u32>,
}

pub(crate) fn pool_options(
    scope: &Scope,
    path: &str,
    o: &CommonHttpOptions,
) -> Result<PoolOptions, ConfigError> {
    reject_unknown(scope, path, o, COMMON_HTTP_FIELDS, |o| {
        o.idle_timeout = None;
        o.max_requests_per_connection = None;
    })?;
    let idle_timeout = match &o.idle_timeout {
        None => Some(Duration::from_secs(3600)),
        Some(d) => {
            let d = duration(scope, &join(path, "idle_timeout"), d)?;
            (!d.is_zero()).then_some(d)
        }
    };
    Ok(PoolOptions {
        idle_timeout,
        max_requests_per_connection: o
            .max_requests_per_connection
            .map(|n| n.value)
            .filter(|n| *n > 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::google::protobuf::UInt32Value;

    fn scope() -> Scope {
        Scope::new("cluster", "c")
    }

    #[test]
    fn thresholds_default_and_override() {
        let cb = CircuitBreakers {
            thresholds: vec![
                pb::envoy::config::cluster::v3::circuit_breakers::Thresholds {
                    max_connections: Some(UInt32Value { value: 1 }),
                    max_retries: Some(UInt32Value { value: 7 }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let l = limits(&scope(), "circuit_breakers", &cb).unwrap();
        assert_eq!(l.max_connections, 1);
        assert_eq!(l.max_pending_requests, DEFAULT_THRESHOLD);
        assert_eq!(l.max_retries, 7);
        let per_host = CircuitBreakers {
            per_host_thresholds: vec![Default::default()],
            ..Default::default()
        };
        assert_eq!(
            limits(&scope(), "circuit_breakers", &per_host)
                .unwrap_err()
                .to_string(),
            "cluster c: circuit_breakers.per_host_thresholds is not supported"
        );
    }

    #[test]
    fn outlier_defaults_and_refusals() {
        let o = OutlierDetection {
            consecutive_5xx: Some(UInt32Value { value: 2 }),
            enforcing_success_rate: Some(UInt32Value { value: 0 }),
            ..Default::default()
        };
        let c = outlier(&scope(), "outlier_detection", &o).unwrap();
        assert_eq!(c.consecutive_5xx, 2);
        assert_eq!(c.base_ejection_time, Duration::from_secs(30));
        assert_eq!(c.max_ejection_percent, 10);
        assert_eq!(c.enforcing_gateway, 0);
        let enforced = OutlierDetection::default();
        assert!(outlier(&scope(), "outlier_detection", &enforced).is_err());
    }

    #[test]
    fn primes() {
        assert!(is_prime(65537));
        assert!(!is_prime(65536));
    }
}
