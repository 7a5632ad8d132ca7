//! DestinationRule traffic policies on clusters and routes: load balancing
//! (including consistent hashing, which needs a hash policy on the route),
//! connection pools as circuit breakers, and outlier detection.
//!
//! Istio merges policies field by field: the rule's policy, then its
//! port-level settings for the port, then the subset's policy and the
//! subset's port-level settings.

use mizzen_api::networking::{
    ClientTlsSettings, ConnectionPoolSettings, DestinationRule, LoadBalancerSettings,
    OutlierDetection, SimpleLb, TrafficPolicy,
};
use mizzen_xds::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection as OutlierProto,
    circuit_breakers::Thresholds,
    cluster::{
        CommonLbConfig, LbConfig, LbPolicy, LeastRequestLbConfig, MaglevLbConfig, RingHashLbConfig,
    },
};
use mizzen_xds::pb::envoy::config::core::v3::HttpProtocolOptions as CommonHttpProtocolOptions;
use mizzen_xds::pb::envoy::config::route::v3::route_action::{HashPolicy, hash_policy};
use mizzen_xds::pb::envoy::r#type::v3::Percent;
use mizzen_xds::pb::google::protobuf::{UInt32Value, UInt64Value};

use super::duration;

/// The policy in force for one cluster.
#[derive(Debug, Clone, Default)]
pub struct Effective {
    pub load_balancer: Option<LoadBalancerSettings>,
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS to the destination; `None` leaves it to automatic mTLS.
    pub tls: Option<ClientTlsSettings>,
}

impl Effective {
    fn layer(&mut self, policy: &TrafficPolicy, port: u16) {
        self.layer_fields(
            policy.load_balancer.as_ref(),
            policy.connection_pool.as_ref(),
            policy.outlier_detection.as_ref(),
        );
        if let Some(tls) = &policy.tls {
            self.tls = Some(tls.clone());
        }
        for level in &policy.port_level_settings {
            if level.port.as_ref().and_then(|p| p.number) == Some(u32::from(port)) {
                self.layer_fields(
                    level.load_balancer.as_ref(),
                    level.connection_pool.as_ref(),
                    level.outlier_detection.as_ref(),
                );
                if let Some(tls) = &level.tls {
                    self.tls = Some(tls.clone());
                }
            }
        }
    }

    fn layer_fields(
        &mut self,
        lb: Option<&LoadBalancerSettings>,
        pool: Option<&ConnectionPoolSettings>,
        outlier: Option<&OutlierDetection>,
    ) {
        if let Some(lb) = lb {
            self.load_balancer = Some(lb.clone());
        }
        if let Some(pool) = pool {
            self.connection_pool = Some(pool.clone());
        }
        if let Some(outlier) = outlier {
            self.outlier_detection = Some(outlier.clone());
        }
    }
}

/// The merged policy of a rule for a port and optional subset.
pub fn effective(rule: Option<&DestinationRule>, subset: &str, port: u16) -> Effective {
    let mut out = Effective::default();
    let Some(rule) = rule else { return out };
    if let Some(policy) = &rule.traffic_policy {
        out.layer(policy, port);
    }
    if let Some(policy) = rule
        .subsets
        .iter()
        .find(|s| s.name == subset)
        .and_then(|s| s.traffic_policy.as_ref())
    {
        out.layer(policy, port);
    }
    out
}

fn parse(duration_text: Option<&str>) -> Option<mizzen_xds::pb::google::protobuf::Duration> {
    mizzen_api::parse_duration(duration_text?)
        .ok()
        .map(duration)
}

/// Sets load balancing, circuit breakers and outlier detection on a cluster.
/// Returns HTTP protocol options the connection pool asks for
/// (`idleTimeout`, `maxRequestsPerConnection`).
pub fn apply(cluster: &mut Cluster, policy: &Effective) -> Option<CommonHttpProtocolOptions> {
    if let Some(lb) = &policy.load_balancer {
        apply_load_balancer(cluster, lb);
    }
    let mut http_options = None;
    if let Some(pool) = &policy.connection_pool {
        let tcp = pool.tcp.as_ref();
        let http = pool.http.as_ref();
        if let Some(timeout) = parse(tcp.and_then(|t| t.connect_timeout.as_deref())) {
            cluster.connect_timeout = Some(timeout);
        }
        // Istio lifts Envoy's default thresholds of 1024 to "unlimited" and
        // lowers only what the rule sets.
        let limit = |value: Option<i32>| {
            Some(UInt32Value {
                value: value.filter(|v| *v > 0).map_or(u32::MAX, |v| v as u32),
            })
        };
        cluster.circuit_breakers = Some(CircuitBreakers {
            thresholds: vec![Thresholds {
                max_connections: limit(tcp.and_then(|t| t.max_connections)),
                max_pending_requests: limit(http.and_then(|h| h.http1_max_pending_requests)),
                max_requests: limit(http.and_then(|h| h.http2_max_requests)),
                max_retries: limit(http.and_then(|h| h.max_retries)),
                ..Default::default()
            }],
            ..Default::default()
        });
        let idle = parse(http.and_then(|h| h.idle_timeout.as_deref()));
        let per_connection = http
            .and_then(|h| h.max_requests_per_connection)
            .filter(|n| *n > 0);
        if idle.is_some() || per_connection.is_some() {
            http_options = Some(CommonHttpProtocolOptions {
                idle_timeout: idle,
                max_requests_per_connection: per_connection
                    .map(|n| UInt32Value { value: n as u32 }),
                ..Default::default()
            });
        }
    }
    if let Some(outlier) = &policy.outlier_detection {
        cluster.outlier_detection = Some(outlier_detection(outlier));
        if let Some(min_health) = outlier.min_health_percent {
            cluster.common_lb_config = Some(CommonLbConfig {
                healthy_panic_threshold: Some(Percent {
                    value: f64::from(min_health),
                }),
                ..Default::default()
            });
        }
    }
    http_options
}

fn apply_load_balancer(cluster: &mut Cluster, lb: &LoadBalancerSettings) {
    if let Some(hash) = &lb.consistent_hash {
        if hash.maglev.is_some() {
            cluster.lb_policy = LbPolicy::Maglev as i32;
            cluster.lb_config = Some(LbConfig::MaglevLbConfig(MaglevLbConfig::default()));
        } else {
            let minimum = hash
                .ring_hash
                .as_ref()
                .and_then(|r| r.minimum_ring_size)
                .or(hash.minimum_ring_size);
            cluster.lb_policy = LbPolicy::RingHash as i32;
            cluster.lb_config = Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
                minimum_ring_size: minimum.map(|value| UInt64Value { value }),
                ..Default::default()
            }));
        }
        return;
    }
    match lb.simple {
        Some(SimpleLb::Random) => cluster.lb_policy = LbPolicy::Random as i32,
        Some(SimpleLb::LeastRequest | SimpleLb::LeastConn) => {
            cluster.lb_policy = LbPolicy::LeastRequest as i32;
            cluster.lb_config = Some(LbConfig::LeastRequestLbConfig(
                LeastRequestLbConfig::default(),
            ));
        }
        _ => cluster.lb_policy = LbPolicy::RoundRobin as i32,
    }
}

fn outlier_detection(outlier: &OutlierDetection) -> OutlierProto {
    let count = |value: Option<u32>| value.map(|value| UInt32Value { value });
    // Only the kinds of errors the rule counts eject hosts.
    let enforce = |on: bool| {
        Some(UInt32Value {
            value: if on { 100 } else { 0 },
        })
    };
    let five_xx = outlier.consecutive_5xx_errors.or(outlier
        .consecutive_errors
        .and_then(|n| u32::try_from(n).ok()));
    OutlierProto {
        consecutive_5xx: count(five_xx),
        enforcing_consecutive_5xx: enforce(five_xx.is_some_and(|n| n > 0)),
        consecutive_gateway_failure: count(outlier.consecutive_gateway_errors),
        enforcing_consecutive_gateway_failure: enforce(
            outlier.consecutive_gateway_errors.is_some_and(|n| n > 0),
        ),
        split_external_local_origin_errors: outlier
            .split_external_local_origin_errors
            .unwrap_or(false),
        consecutive_local_origin_failure: count(outlier.consecutive_local_origin_failures),
        interval: parse(outlier.interval.as_deref()),
        base_ejection_time: parse(outlier.base_ejection_time.as_deref()),
        max_ejection_percent: outlier.max_ejection_percent.map(|value| UInt32Value {
            value: value.max(0) as u32,
        }),
        // Istio turns success-rate ejection off.
        enforcing_success_rate: Some(UInt32Value { value: 0 }),
        ..Default::default()
    }
}

/// Route hash policies for a consistent-hash load balancer.
pub fn hash_policies(lb: Option<&LoadBalancerSettings>) -> Vec<HashPolicy> {
    let Some(hash) = lb.and_then(|lb| lb.consistent_hash.as_ref()) else {
        return Vec::new();
    };
    let specifier = if let Some(header) = &hash.http_header_name {
        hash_policy::PolicySpecifier::Header(hash_policy::Header {
            header_name: header.clone(),
            ..Default::default()
        })
    } else if let Some(cookie) = &hash.http_cookie {
        hash_policy::PolicySpecifier::Cookie(hash_policy::Cookie {
            name: cookie.name.clone(),
            ttl: parse(cookie.ttl.as_deref()),
            path: cookie.path.clone().unwrap_or_default(),
            ..Default::default()
        })
    } else if hash.use_source_ip == Some(true) {
        hash_policy::PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties {
            source_ip: true,
        })
    } else if let Some(parameter) = &hash.http_query_parameter_name {
        hash_policy::PolicySpecifier::QueryParameter(hash_policy::QueryParameter {
            name: parameter.clone(),
        })
    } else {
        return Vec::new();
    };
    vec![HashPolicy {
        policy_specifier: Some(specifier),
        ..Default::default()
    }]
}
