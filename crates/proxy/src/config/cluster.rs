//! `Cluster` → [`ClusterConfig`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mizzen_xds::pb;
use pb::envoy::config::cluster::v3::{Cluster, cluster};
use pb::envoy::config::core::v3::{
    ConfigSource, Http1ProtocolOptions, Http2ProtocolOptions, config_source,
};
use pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    UpstreamProtocolOptions, explicit_http_config,
};

use super::check::reject_unknown;
use super::cluster_policy::{
    LbParams, Limits, Outlier, PoolOptions, lb_params, limits, outlier, pool_options,
};
use super::dns::{self, DnsConfig};
use super::endpoint::{EndpointSet, compile_in, plain_socket_address};
use super::tls::{ClusterTransport, SecretRef, cluster_transport};
use super::{ConfigError, Scope, duration, fields, join, unpack};

/// Envoy's `connect_timeout` when unset.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Envoy's `cleanup_interval` when unset: how long an ORIGINAL_DST host may
/// stay unused before it is forgotten.
pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(5);

/// Key of the upstream HTTP options in `typed_extension_protocol_options`.
pub const HTTP_PROTOCOL_OPTIONS_KEY: &str =
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub name: Arc<str>,
    pub discovery: Discovery,
    pub lb: LbPolicy,
    pub connect_timeout: Duration,
    pub protocol: UpstreamProtocol,
    /// `upstream_bind_config.source_address`: bound before connecting.
    pub source_address: Option<SocketAddr>,
    pub lb_params: LbParams,
    pub limits: Limits,
    pub outlier: Option<Outlier>,
    pub pool: PoolOptions,
    /// `transport_socket` and `transport_socket_matches`; `None` when every
    /// endpoint is reached in plaintext.
    pub transport: Option<Arc<ClusterTransport>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// Endpoints arrive over EDS under this name.
    Eds {
        service_name: Arc<str>,
    },
    Static(Arc<EndpointSet>),
    /// ORIGINAL_DST: the host is the downstream connection's original
    /// destination; hosts unused for `cleanup_interval` are forgotten.
    OriginalDst {
        cleanup_interval: Duration,
    },
    /// STRICT_DNS or LOGICAL_DNS: the inline assignment's names, resolved
    /// in the background (see `crate::upstream::dns`).
    Dns(Arc<DnsConfig>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    Random,
    LeastRequest,
    RingHash,
    Maglev,
    /// CLUSTER_PROVIDED: the cluster type chooses (ORIGINAL_DST only).
    ClusterProvided,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    /// HTTP/2 over cleartext with prior knowledge.
    Http2,
    /// Whatever the downstream request used.
    Downstream,
}

impl ClusterConfig {
    pub fn compile(c: &Cluster) -> Result<ClusterConfig, ConfigError> {
        let scope = Scope::new("cluster", &c.name);
        let scope = &scope;
        reject_unknown(scope, "", c, fields::CLUSTER, |c| {
            c.name.clear();
            c.cluster_discovery_type = None;
            c.eds_cluster_config = None;
            c.connect_timeout = None;
            c.lb_policy = 0;
            c.load_assignment = None;
            c.typed_extension_protocol_options.clear();
            c.http2_protocol_options = None;
            c.metadata = None;
            c.upstream_bind_config = None;
            c.cleanup_interval = None;
            c.lb_config = None;
            c.common_lb_config = None;
            c.circuit_breakers = None;
            c.outlier_detection = None;
            c.transport_socket = None;
            c.transport_socket_matches.clear();
            // Read by DNS clusters only; Envoy ignores them on other types.
            c.dns_lookup_family = 0;
            c.dns_refresh_rate = None;
            c.respect_dns_ttl = false;
        })?;
        let transport = cluster_transport(
            scope,
            c.transport_socket.as_ref(),
            &c.transport_socket_matches,
        )?;
        let lb_params = lb_params(scope, c)?;
        let limits = match &c.circuit_breakers {
            None => Limits::default(),
            Some(cb) => limits(scope, "circuit_breakers", cb)?,
        };
        let outlier = match &c.outlier_detection {
            None => None,
            Some(o) => Some(outlier(scope, "outlier_detection", o)?),
        };
        if c.name.is_empty() {
            return Err(scope.missing("name"));
        }
        use cluster::{ClusterDiscoveryType, DiscoveryType};
        let kind = match &c.cluster_discovery_type {
            None => DiscoveryType::Static,
            Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(*t)
                .map_err(|_| scope.invalid("type", "unknown enum value"))?,
            Some(ClusterDiscoveryType::ClusterType(_)) => {
                return Err(scope.unsupported("cluster_type"));
            }
        };
        let discovery = match kind {
            DiscoveryType::Eds => {
                if c.load_assignment.is_some() {
                    return Err(scope.invalid("load_assignment", "not allowed on an EDS cluster"));
                }
                let service_name = match &c.eds_cluster_config {
                    None => c.name.clone(),
                    Some(eds) => {
                        reject_unknown(
                            scope,
                            "eds_cluster_config",
                            eds,
                            fields::EDS_CLUSTER_CONFIG,
                            |e| {
                                e.eds_config = None;
                                e.service_name.clear();
                            },
                        )?;
                        if let Some(cs) = &eds.eds_config {
                            ads_config_source(scope, "eds_cluster_config.eds_config", cs)?;
                        }
                        if eds.service_name.is_empty() {
                            c.name.clone()
                        } else {
                            eds.service_name.clone()
                        }
                    }
                };
                Discovery::Eds {
                    service_name: Arc::from(service_name),
                }
            }
            DiscoveryType::Static => {
                if c.eds_cluster_config.is_some() {
                    return Err(
                        scope.invalid("eds_cluster_config", "only allowed on an EDS cluster")
                    );
                }
                let set = match &c.load_assignment {
                    Some(cla) => compile_in(scope, "load_assignment", cla)?,
                    None => EndpointSet::default(),
                };
                Discovery::Static(Arc::new(set))
            }
            DiscoveryType::OriginalDst => {
                if c.load_assignment.is_some() {
                    return Err(
                        scope.invalid("load_assignment", "not allowed on an ORIGINAL_DST cluster")
                    );
                }
                if c.eds_cluster_config.is_some() {
                    return Err(
                        scope.invalid("eds_cluster_config", "only allowed on an EDS cluster")
                    );
                }
                if let Some(cluster::LbConfig::OriginalDstLbConfig(o)) = &c.lb_config {
                    reject_unknown(
                        scope,
                        "original_dst_lb_config",
                        o,
                        fields::ORIGINAL_DST_LB_CONFIG,
                        |_| {},
                    )?;
                }
                let cleanup_interval = match &c.cleanup_interval {
                    None => DEFAULT_CLEANUP_INTERVAL,
                    Some(d) => duration(scope, "cleanup_interval", d)?,
                };
                Discovery::OriginalDst { cleanup_interval }
            }
            DiscoveryType::StrictDns => {
                Discovery::Dns(Arc::new(dns::compile(scope, c, dns::DnsMode::Strict)?))
            }
            DiscoveryType::LogicalDns => {
                Discovery::Dns(Arc::new(dns::compile(scope, c, dns::DnsMode::Logical)?))
            }
        };
        if let Some(cluster::LbConfig::OriginalDstLbConfig(_)) = &c.lb_config
            && kind != DiscoveryType::OriginalDst
        {
            return Err(scope.invalid(
                "original_dst_lb_config",
                "only allowed on an ORIGINAL_DST cluster",
            ));
        }
        let lb = match cluster::LbPolicy::try_from(c.lb_policy) {
            Ok(cluster::LbPolicy::RoundRobin) => LbPolicy::RoundRobin,
            Ok(cluster::LbPolicy::Random) => LbPolicy::Random,
            Ok(cluster::LbPolicy::LeastRequest) => LbPolicy::LeastRequest,
            Ok(cluster::LbPolicy::RingHash) => LbPolicy::RingHash,
            Ok(cluster::LbPolicy::Maglev) => LbPolicy::Maglev,
            Ok(cluster::LbPolicy::ClusterProvided) => LbPolicy::ClusterProvided,
            Ok(other) => {
                return Err(scope.unsupported(format!("lb_policy {}", other.as_str_name())));
            }
            Err(_) => return Err(scope.invalid("lb_policy", "unknown enum value")),
        };
        // Envoy's rule: ORIGINAL_DST clusters pick their own host and take
        // no other policy; CLUSTER_PROVIDED means nothing for other types.
        match (&discovery, lb) {
            (Discovery::OriginalDst { .. }, LbPolicy::ClusterProvided) => {}
            (Discovery::OriginalDst { .. }, _) => {
                return Err(scope.invalid(
                    "lb_policy",
                    "only CLUSTER_PROVIDED is allowed with cluster type ORIGINAL_DST",
                ));
            }
            (_, LbPolicy::ClusterProvided) => {
                return Err(scope.invalid(
                    "lb_policy",
                    "CLUSTER_PROVIDED is only allowed with cluster type ORIGINAL_DST",
                ));
            }
            _ => {}
        }
        let source_address = match &c.upstream_bind_config {
            None => None,
            Some(b) => {
                let path = "upstream_bind_config";
                reject_unknown(scope, path, b, fields::BIND_CONFIG, |b| {
                    b.source_address = None;
                })?;
                match &b.source_address {
                    Some(sa) => {
                        // The port may be left out: any port (0) is meant.
                        let mut sa = sa.clone();
                        sa.port_specifier.get_or_insert(
                            pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(
                                0,
                            ),
                        );
                        Some(plain_socket_address(
                            scope,
                            &join(path, "source_address"),
                            &sa,
                        )?)
                    }
                    None => return Err(scope.missing(join(path, "source_address"))),
                }
            }
        };
        let connect_timeout = match &c.connect_timeout {
            None => DEFAULT_CONNECT_TIMEOUT,
            Some(d) => {
                let d = duration(scope, "connect_timeout", d)?;
                if d.is_zero() {
                    return Err(scope.invalid("connect_timeout", "must be greater than 0"));
                }
                d
            }
        };
        let mut protocol = UpstreamProtocol::Http1;
        let mut pool = PoolOptions {
            idle_timeout: Some(Duration::from_secs(3600)),
            max_requests_per_connection: None,
        };
        if let Some(h2) = &c.http2_protocol_options {
            http2_options(scope, "http2_protocol_options", h2)?;
            protocol = UpstreamProtocol::Http2;
        }
        for (key, any) in &c.typed_extension_protocol_options {
            let path = format!("typed_extension_protocol_options[\"{key}\"]");
            if key != HTTP_PROTOCOL_OPTIONS_KEY {
                return Err(scope.unsupported(path));
            }
            let opts: HttpProtocolOptions = unpack(scope, &path, any)?;
            protocol = upstream_protocol(scope, &path, &opts)?;
            if let Some(common) = &opts.common_http_protocol_options {
                pool = pool_options(scope, &join(&path, "common_http_protocol_options"), common)?;
            }
        }
        Ok(ClusterConfig {
            name: Arc::from(c.name.as_str()),
            discovery,
            lb,
            connect_timeout,
            protocol,
            source_address,
            lb_params,
            limits,
            outlier,
            pool,
            transport,
        })
    }

    /// The SDS secrets this cluster's transport sockets need.
    pub fn secret_refs(&self) -> Vec<SecretRef> {
        self.transport
            .iter()
            .flat_map(|t| t.secret_refs().cloned())
            .collect()
    }

    /// The EDS resource name this cluster needs, if any.
    pub fn eds_service_name(&self) -> Option<&Arc<str>> {
        match &self.discovery {
            Discovery::Eds { service_name } => Some(service_name),
            Discovery::Static(_) | Discovery::OriginalDst { .. } | Discovery::Dns(_) => None,
        }
    }
}

fn upstream_protocol(
    scope: &Scope,
    path: &str,
    opts: &HttpProtocolOptions,
) -> Result<UpstreamProtocol, ConfigError> {
    reject_unknown(
        scope,
        path,
        opts,
        fields::UPSTREAM_HTTP_PROTOCOL_OPTIONS,
        |o| {
            o.upstream_protocol_options = None;
            o.common_http_protocol_options = None;
        },
    )?;
    match &opts.upstream_protocol_options {
        None => Ok(UpstreamProtocol::Http1),
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => {
            let epath = join(path, "explicit_http_config");
            use explicit_http_config::ProtocolConfig;
            match &e.protocol_config {
                Some(ProtocolConfig::HttpProtocolOptions(h1)) => {
                    http1_options(scope, &join(&epath, "http_protocol_options"), h1)?;
                    Ok(UpstreamProtocol::Http1)
                }
                Some(ProtocolConfig::Http2ProtocolOptions(h2)) => {
                    http2_options(scope, &join(&epath, "http2_protocol_options"), h2)?;
                    Ok(UpstreamProtocol::Http2)
                }
                Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                    Err(scope.unsupported(join(&epath, "http3_protocol_options")))
                }
                None => Err(scope.missing(join(&epath, "protocol_config"))),
            }
        }
        Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(d)) => {
            let dpath = join(path, "use_downstream_protocol_config");
            reject_unknown(scope, &dpath, d, fields::USE_DOWNSTREAM_HTTP_CONFIG, |d| {
                d.http_protocol_options = None;
                d.http2_protocol_options = None;
            })?;
            if let Some(h1) = &d.http_protocol_options {
                http1_options(scope, &join(&dpath, "http_protocol_options"), h1)?;
            }
            if let Some(h2) = &d.http2_protocol_options {
                http2_options(scope, &join(&dpath, "http2_protocol_options"), h2)?;
            }
            Ok(UpstreamProtocol::Downstream)
        }
        Some(UpstreamProtocolOptions::AutoConfig(_)) => {
            Err(scope.unsupported(join(path, "auto_config")))
        }
    }
}

/// Upstream HTTP/1 tuning is not implemented: only the empty message is accepted.
fn http1_options(scope: &Scope, path: &str, o: &Http1ProtocolOptions) -> Result<(), ConfigError> {
    reject_unknown(scope, path, o, fields::HTTP1_PROTOCOL_OPTIONS, |_| {})
}

/// HTTP/2 tuning is not implemented: only the empty message is accepted.
pub(crate) fn http2_options(
    scope: &Scope,
    path: &str,
    o: &Http2ProtocolOptions,
) -> Result<(), ConfigError> {
    reject_unknown(scope, path, o, fields::HTTP2_PROTOCOL_OPTIONS, |_| {})
}

/// The proxy fetches everything over its one ADS stream.
pub(crate) fn ads_config_source(
    scope: &Scope,
    path: &str,
    cs: &ConfigSource,
) -> Result<(), ConfigError> {
    reject_unknown(scope, path, cs, fields::CONFIG_SOURCE, |c| {
        if matches!(
            c.config_source_specifier,
            Some(config_source::ConfigSourceSpecifier::Ads(_))
        ) {
            c.config_source_specifier = None;
        }
        c.resource_api_version = 0;
        // Waiting longer or shorter for the first response does not change
        // what is served once it arrives; readiness waits for it regardless.
        c.initial_fetch_timeout = None;
    })?;
    if cs.config_source_specifier.is_none() {
        return Err(scope.missing(join(path, "ads")));
    }
    use pb::envoy::config::core::v3::ApiVersion;
    if cs.resource_api_version != ApiVersion::Auto as i32
        && cs.resource_api_version != ApiVersion::V3 as i32
    {
        return Err(scope.unsupported(join(path, "resource_api_version")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::envoy::config::core::v3::AggregatedConfigSource;
    use pb::envoy::extensions::upstreams::http::v3::http_protocol_options::ExplicitHttpConfig;

    fn eds(name: &str) -> Cluster {
        Cluster {
            name: name.into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            )),
            eds_cluster_config: Some(cluster::EdsClusterConfig {
                eds_config: Some(ConfigSource {
                    config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                        AggregatedConfigSource {},
                    )),
                    resource_api_version: pb::envoy::config::core::v3::ApiVersion::V3 as i32,
                    ..Default::default()
                }),
                service_name: String::new(),
            }),
            ..Default::default()
        }
    }

    trait WithLb {
        fn with_lb(self, lb: cluster::LbPolicy) -> Self;
    }

    impl WithLb for Cluster {
        fn with_lb(mut self, lb: cluster::LbPolicy) -> Cluster {
            self.lb_policy = lb as i32;
            self
        }
    }

    fn socket(ip: &str, port: Option<u32>) -> pb::envoy::config::core::v3::SocketAddress {
        pb::envoy::config::core::v3::SocketAddress {
            address: ip.into(),
            port_specifier: port
                .map(pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue),
            ..Default::default()
        }
    }

    /// Istio's PassthroughCluster / InboundPassthroughCluster shape.
    fn original_dst(
        name: &str,
        bind: Option<pb::envoy::config::core::v3::SocketAddress>,
    ) -> Cluster {
        Cluster {
            name: name.into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::OriginalDst as i32,
            )),
            lb_policy: cluster::LbPolicy::ClusterProvided as i32,
            connect_timeout: Some(pb::google::protobuf::Duration {
                seconds: 10,
                nanos: 0,
            }),
            upstream_bind_config: bind.map(|sa| pb::envoy::config::core::v3::BindConfig {
                source_address: Some(sa),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn original_dst_clusters() {
        let c = ClusterConfig::compile(&original_dst("PassthroughCluster", None)).unwrap();
        assert_eq!(
            c.discovery,
            Discovery::OriginalDst {
                cleanup_interval: DEFAULT_CLEANUP_INTERVAL
            }
        );
        assert_eq!(c.lb, LbPolicy::ClusterProvided);
        assert_eq!(c.source_address, None);
        assert_eq!(c.eds_service_name(), None);
        let mut inbound = original_dst(
            "InboundPassthroughCluster",
            Some(socket("127.0.0.6", Some(0))),
        );
        inbound.cleanup_interval = Some(pb::google::protobuf::Duration {
            seconds: 60,
            nanos: 0,
        });
        inbound.lb_config = Some(cluster::LbConfig::OriginalDstLbConfig(Default::default()));
        let c = ClusterConfig::compile(&inbound).unwrap();
        assert_eq!(c.source_address, Some("127.0.0.6:0".parse().unwrap()));
        assert_eq!(
            c.discovery,
            Discovery::OriginalDst {
                cleanup_interval: Duration::from_secs(60)
            }
        );
        // The port of a bind address may be left out.
        let c = ClusterConfig::compile(&original_dst("x", Some(socket("::6", None)))).unwrap();
        assert_eq!(c.source_address, Some("[::6]:0".parse().unwrap()));
    }

    /// A STATIC cluster without endpoints (Istio's BlackHoleCluster) and an
    /// inbound cluster bound to 127.0.0.6.
    #[test]
    fn blackhole_and_bound_static_clusters() {
        let blackhole = Cluster {
            name: "BlackHoleCluster".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Static as i32,
            )),
            connect_timeout: Some(pb::google::protobuf::Duration {
                seconds: 10,
                nanos: 0,
            }),
            ..Default::default()
        };
        let c = ClusterConfig::compile(&blackhole).unwrap();
        assert_eq!(
            c.discovery,
            Discovery::Static(Arc::new(EndpointSet::default()))
        );
        let mut inbound = blackhole.clone();
        inbound.name = "inbound|8080||".into();
        inbound.upstream_bind_config = Some(pb::envoy::config::core::v3::BindConfig {
            source_address: Some(socket("127.0.0.6", Some(0))),
            ..Default::default()
        });
        let c = ClusterConfig::compile(&inbound).unwrap();
        assert_eq!(c.source_address, Some("127.0.0.6:0".parse().unwrap()));
    }

    #[test]
    fn eds_cluster_defaults() {
        let c = ClusterConfig::compile(&eds("outbound|80||b.default.svc.cluster.local")).unwrap();
        assert_eq!(
            c.eds_service_name().map(|s| &**s),
            Some("outbound|80||b.default.svc.cluster.local")
        );
        assert_eq!(c.lb, LbPolicy::RoundRobin);
        assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c.protocol, UpstreamProtocol::Http1);
    }

    #[test]
    fn http2_from_protocol_options() {
        let mut c = eds("grpc");
        let opts = HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(
                        explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            Default::default(),
                        ),
                    ),
                },
            )),
            ..Default::default()
        };
        c.typed_extension_protocol_options
            .insert(HTTP_PROTOCOL_OPTIONS_KEY.into(), mizzen_xds::pack(&opts));
        assert_eq!(
            ClusterConfig::compile(&c).unwrap().protocol,
            UpstreamProtocol::Http2
        );
    }

    #[test]
    fn refusals() {
        let cases: Vec<(Cluster, &str)> = vec![
            (
                Cluster {
                    cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                        cluster::DiscoveryType::StrictDns as i32,
                    )),
                    ..eds("c")
                },
                "cluster c: eds_cluster_config: only allowed on an EDS cluster",
            ),
            (
                Cluster {
                    eds_cluster_config: None,
                    ..original_dst("c", None)
                }
                .with_lb(cluster::LbPolicy::RoundRobin),
                "cluster c: lb_policy: only CLUSTER_PROVIDED is allowed with cluster type ORIGINAL_DST",
            ),
            (
                eds("c").with_lb(cluster::LbPolicy::ClusterProvided),
                "cluster c: lb_policy: CLUSTER_PROVIDED is only allowed with cluster type ORIGINAL_DST",
            ),
            (
                Cluster {
                    load_assignment: Some(Default::default()),
                    ..original_dst("c", None)
                },
                "cluster c: load_assignment: not allowed on an ORIGINAL_DST cluster",
            ),
            (
                Cluster {
                    lb_config: Some(cluster::LbConfig::OriginalDstLbConfig(
                        cluster::OriginalDstLbConfig {
                            use_http_header: true,
                            ..Default::default()
                        },
                    )),
                    ..original_dst("c", None)
                },
                "cluster c: original_dst_lb_config.use_http_header is not supported",
            ),
            (
                Cluster {
                    upstream_bind_config: Some(pb::envoy::config::core::v3::BindConfig {
                        source_address: Some(socket("127.0.0.6", None)),
                        freebind: Some(pb::google::protobuf::BoolValue { value: true }),
                        ..Default::default()
                    }),
                    ..original_dst("c", None)
                },
                "cluster c: upstream_bind_config.freebind is not supported",
            ),
            (
                original_dst("c", Some(socket("localhost", Some(0)))),
                "cluster c: upstream_bind_config.source_address.address: \"localhost\" is not an IP address",
            ),
            (
                Cluster {
                    lb_policy: cluster::LbPolicy::LoadBalancingPolicyConfig as i32,
                    ..eds("c")
                },
                "cluster c: lb_policy LOAD_BALANCING_POLICY_CONFIG is not supported",
            ),
            (
                Cluster {
                    transport_socket: Some(Default::default()),
                    ..eds("c")
                },
                "cluster c: transport_socket (unnamed) is not supported",
            ),
            (
                Cluster {
                    circuit_breakers: Some(pb::envoy::config::cluster::v3::CircuitBreakers {
                        per_host_thresholds: vec![Default::default()],
                        ..Default::default()
                    }),
                    ..eds("c")
                },
                "cluster c: circuit_breakers.per_host_thresholds is not supported",
            ),
        ];
        for (c, want) in cases {
            assert_eq!(ClusterConfig::compile(&c).unwrap_err().to_string(), want);
        }
    }
}
