//! `Listener` → [`ListenerConfig`]: one socket, one HTTP connection manager.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;
use mizzen_xds::pb;
use pb::envoy::config::listener::v3::{Listener, filter};
use pb::envoy::extensions::filters::http::router::v3::Router;
use pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager, http_filter,
};

use super::check::reject_unknown;
use super::cluster::ads_config_source;
use super::endpoint::socket_address;
use super::route::{RouteTable, compile_table};
use super::{ConfigError, Scope, fields, join, type_name, unpack};

pub const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";
pub const ROUTER: &str = "envoy.filters.http.router";
const HCM_TYPE: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER_TYPE: &str = "envoy.extensions.filters.http.router.v3.Router";

#[derive(Debug)]
pub struct ListenerConfig {
    pub name: Arc<str>,
    pub address: SocketAddr,
    /// Prefix of `listener.<prefix>.*` stats: `stat_prefix`, else the address
    /// as Envoy prints it (`0.0.0.0_8080`).
    pub stat_prefix: Arc<str>,
    pub direction: TrafficDirection,
    pub http: HttpConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficDirection {
    Unspecified,
    Inbound,
    Outbound,
}

#[derive(Debug)]
pub struct HttpConfig {
    /// Prefix of `http.<prefix>.*` stats.
    pub stat_prefix: Arc<str>,
    pub routes: RouteSource,
    pub codec: Codec,
    /// Serve as an explicit HTTP proxy: route absolute-form requests by their
    /// authority and forward them in origin form.
    pub allow_absolute_url: bool,
    /// `server` response header (Envoy overwrites it; default `envoy`).
    pub server_name: HeaderValue,
    pub generate_request_id: bool,
    /// Router `suppress_envoy_headers`: no `x-envoy-*` headers added.
    pub suppress_envoy_headers: bool,
}

#[derive(Debug, Clone)]
pub enum RouteSource {
    /// Named route configuration delivered over RDS.
    Rds(Arc<str>),
    Inline(Arc<RouteTable>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// HTTP/1.1, or HTTP/2 when the connection opens with the h2 preface.
    Auto,
    Http1,
    Http2,
}

impl ListenerConfig {
    pub fn compile(l: &Listener) -> Result<ListenerConfig, ConfigError> {
        let scope = Scope::new("listener", &l.name);
        let scope = &scope;
        reject_unknown(scope, "", l, fields::LISTENER, |l| {
            l.name.clear();
            l.address = None;
            l.filter_chains.clear();
            l.traffic_direction = 0;
            l.stat_prefix.clear();
            l.metadata = None;
        })?;
        if l.name.is_empty() {
            return Err(scope.missing("name"));
        }
        let address = socket_address(scope, "address", l.address.as_ref())?;
        let direction =
            match pb::envoy::config::core::v3::TrafficDirection::try_from(l.traffic_direction) {
                Ok(pb::envoy::config::core::v3::TrafficDirection::Unspecified) => {
                    TrafficDirection::Unspecified
                }
                Ok(pb::envoy::config::core::v3::TrafficDirection::Inbound) => {
                    TrafficDirection::Inbound
                }
                Ok(pb::envoy::config::core::v3::TrafficDirection::Outbound) => {
                    TrafficDirection::Outbound
                }
                Err(_) => return Err(scope.invalid("traffic_direction", "unknown enum value")),
            };
        let chain = match l.filter_chains.as_slice() {
            [] => return Err(scope.missing("filter_chains")),
            [one] => one,
            [_, ..] => {
                return Err(scope.unsupported("filter_chains[1] (more than one filter chain)"));
            }
        };
        if let Some(ts) = &chain.transport_socket {
            return Err(scope.unsupported(format!("filter_chains[0].transport_socket {}", ts.name)));
        }
        reject_unknown(
            scope,
            "filter_chains[0]",
            chain,
            fields::FILTER_CHAIN,
            |c| {
                c.filters.clear();
                c.name.clear();
                c.metadata = None;
            },
        )?;
        let filter = match chain.filters.as_slice() {
            [] => return Err(scope.missing("filter_chains[0].filters")),
            [one] => one,
            [first, second, ..] => {
                // Name the extra filter, or the first one when it is the odd one.
                let odd = if is_hcm(first) { second } else { first };
                return Err(scope.unsupported(format!("filter {}", filter_label(odd))));
            }
        };
        if !is_hcm(filter) {
            return Err(scope.unsupported(format!("filter {}", filter_label(filter))));
        }
        let any = match &filter.config_type {
            Some(filter::ConfigType::TypedConfig(any)) => any,
            Some(filter::ConfigType::ConfigDiscovery(_)) => {
                return Err(scope.unsupported("filter_chains[0].filters[0].config_discovery"));
            }
            None => return Err(scope.missing("filter_chains[0].filters[0].typed_config")),
        };
        let path = "filter_chains[0].filters[0].typed_config";
        let hcm: HttpConnectionManager = unpack(scope, path, any)?;
        let http = compile_hcm(scope, path, &hcm)?;
        let stat_prefix = if l.stat_prefix.is_empty() {
            stat_address(&address)
        } else {
            l.stat_prefix.clone()
        };
        Ok(ListenerConfig {
            name: Arc::from(l.name.as_str()),
            address,
            stat_prefix: Arc::from(stat_prefix),
            direction,
            http,
        })
    }

    /// The RDS resource this listener needs, if any.
    pub fn rds_name(&self) -> Option<&Arc<str>> {
        match &self.http.routes {
            RouteSource::Rds(name) => Some(name),
            RouteSource::Inline(_) => None,
        }
    }
}

/// Envoy's stat form of an address: `0.0.0.0_8080`, `[::]_80` → `::_80`.
pub fn stat_address(addr: &SocketAddr) -> String {
    format!("{}_{}", addr.ip(), addr.port())
}

fn is_hcm(f: &pb::envoy::config::listener::v3::Filter) -> bool {
    match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => type_name(&any.type_url) == HCM_TYPE,
        _ => f.name == HTTP_CONNECTION_MANAGER,
    }
}

fn filter_label(f: &pb::envoy::config::listener::v3::Filter) -> String {
    match (&f.name, &f.config_type) {
        (name, _) if !name.is_empty() => name.clone(),
        (_, Some(filter::ConfigType::TypedConfig(any))) => type_name(&any.type_url).to_string(),
        _ => "(unnamed)".to_string(),
    }
}

fn compile_hcm(
    scope: &Scope,
    path: &str,
    hcm: &HttpConnectionManager,
) -> Result<HttpConfig, ConfigError> {
    reject_unknown(scope, path, hcm, fields::HTTP_CONNECTION_MANAGER, |h| {
        h.codec_type = 0;
        h.stat_prefix.clear();
        h.route_specifier = None;
        h.http_filters.clear();
        h.http_protocol_options = None;
        h.server_name.clear();
        h.generate_request_id = None;
    })?;
    use http_connection_manager::{CodecType, RouteSpecifier};
    let codec = match CodecType::try_from(hcm.codec_type) {
        Ok(CodecType::Auto) => Codec::Auto,
        Ok(CodecType::Http1) => Codec::Http1,
        Ok(CodecType::Http2) => Codec::Http2,
        Ok(CodecType::Http3) => return Err(scope.unsupported(join(path, "codec_type HTTP3"))),
        Err(_) => return Err(scope.invalid(join(path, "codec_type"), "unknown enum value")),
    };
    if hcm.stat_prefix.is_empty() {
        return Err(scope.missing(join(path, "stat_prefix")));
    }
    let routes = match &hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => {
            let rpath = join(path, "rds");
            reject_unknown(scope, &rpath, rds, fields::RDS, |r| {
                r.config_source = None;
                r.route_config_name.clear();
            })?;
            match &rds.config_source {
                Some(cs) => ads_config_source(scope, &join(&rpath, "config_source"), cs)?,
                None => return Err(scope.missing(join(&rpath, "config_source"))),
            }
            if rds.route_config_name.is_empty() {
                return Err(scope.missing(join(&rpath, "route_config_name")));
            }
            RouteSource::Rds(Arc::from(rds.route_config_name.as_str()))
        }
        Some(RouteSpecifier::RouteConfig(rc)) => RouteSource::Inline(Arc::new(compile_table(
            scope,
            &join(path, "route_config"),
            rc,
        )?)),
        Some(RouteSpecifier::ScopedRoutes(_)) => {
            return Err(scope.unsupported(join(path, "scoped_routes")));
        }
        None => return Err(scope.missing(join(path, "rds"))),
    };
    let mut suppress_envoy_headers = false;
    match hcm.http_filters.split_last() {
        None => return Err(scope.missing(join(path, "http_filters"))),
        Some((last, others)) => {
            if let Some((i, f)) = others.iter().enumerate().next() {
                let label = if f.name.is_empty() {
                    format!("http_filters[{i}]")
                } else {
                    f.name.clone()
                };
                return Err(scope.unsupported(format!(
                    "{} (http filter {label})",
                    join(path, &format!("http_filters[{i}]"))
                )));
            }
            let fpath = join(path, &format!("http_filters[{}]", others.len()));
            reject_unknown(scope, &fpath, last, fields::HTTP_FILTER, |f| {
                f.name.clear();
                f.config_type = None;
            })?;
            let typed = match &last.config_type {
                Some(http_filter::ConfigType::TypedConfig(any)) => Some(any),
                Some(http_filter::ConfigType::ConfigDiscovery(_)) => {
                    return Err(scope.unsupported(join(&fpath, "config_discovery")));
                }
                None => None,
            };
            let is_router = match typed {
                Some(any) => type_name(&any.type_url) == ROUTER_TYPE,
                None => last.name == ROUTER,
            };
            if !is_router {
                return Err(scope.invalid(
                    join(path, "http_filters"),
                    format!("the last http filter must be {ROUTER}, not {}", last.name),
                ));
            }
            if let Some(any) = typed {
                let tpath = join(&fpath, "typed_config");
                let router: Router = unpack(scope, &tpath, any)?;
                reject_unknown(scope, &tpath, &router, fields::ROUTER, |r| {
                    r.suppress_envoy_headers = false;
                })?;
                suppress_envoy_headers = router.suppress_envoy_headers;
            }
        }
    }
    let mut allow_absolute_url = false;
    if let Some(h1) = &hcm.http_protocol_options {
        let hpath = join(path, "http_protocol_options");
        reject_unknown(scope, &hpath, h1, fields::HTTP1_PROTOCOL_OPTIONS, |o| {
            o.allow_absolute_url = None;
        })?;
        allow_absolute_url = h1.allow_absolute_url.is_some_and(|b| b.value);
    }
    let server_name = if hcm.server_name.is_empty() {
        "envoy"
    } else {
        hcm.server_name.as_str()
    };
    let server_name = HeaderValue::from_str(server_name)
        .map_err(|_| scope.invalid(join(path, "server_name"), "invalid header value"))?;
    Ok(HttpConfig {
        stat_prefix: Arc::from(hcm.stat_prefix.as_str()),
        routes,
        codec,
        allow_absolute_url,
        server_name,
        generate_request_id: hcm.generate_request_id.is_none_or(|b| b.value),
        suppress_envoy_headers,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pb::envoy::config::core::v3::{AggregatedConfigSource, ConfigSource, config_source};
    use pb::envoy::config::listener::v3::{Filter, FilterChain};
    use pb::envoy::extensions::filters::network::http_connection_manager::v3::{HttpFilter, Rds};

    pub(crate) fn router_filter() -> HttpFilter {
        HttpFilter {
            name: ROUTER.into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(mizzen_xds::pack(
                &Router::default(),
            ))),
            ..Default::default()
        }
    }

    pub(crate) fn rds_hcm(route: &str) -> HttpConnectionManager {
        HttpConnectionManager {
            stat_prefix: "outbound_0.0.0.0_8080".into(),
            route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
                config_source: Some(ConfigSource {
                    config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                        AggregatedConfigSource {},
                    )),
                    ..Default::default()
                }),
                route_config_name: route.into(),
            })),
            http_filters: vec![router_filter()],
            ..Default::default()
        }
    }

    pub(crate) fn listener(
        name: &str,
        addr: &str,
        port: u32,
        hcm: &HttpConnectionManager,
    ) -> Listener {
        Listener {
            name: name.into(),
            address: Some(super::super::endpoint::tests::address(addr, port)),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: HTTP_CONNECTION_MANAGER.into(),
                    config_type: Some(filter::ConfigType::TypedConfig(mizzen_xds::pack(hcm))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn compiles_rds_listener() {
        let l =
            ListenerConfig::compile(&listener("0.0.0.0_8080", "0.0.0.0", 8080, &rds_hcm("8080")))
                .unwrap();
        assert_eq!(l.rds_name().map(|s| &**s), Some("8080"));
        assert_eq!(&*l.stat_prefix, "0.0.0.0_8080");
        assert_eq!(l.http.codec, Codec::Auto);
        assert!(!l.http.allow_absolute_url);
        assert!(l.http.generate_request_id);
    }

    #[test]
    fn refusals() {
        let tcp = Filter {
            name: "envoy.filters.network.tcp_proxy".into(),
            config_type: None,
        };
        let mut with_tcp = listener("0.0.0.0_8080", "0.0.0.0", 8080, &rds_hcm("r"));
        with_tcp.filter_chains[0].filters = vec![tcp];
        let mut orig_dst = listener("virtualOutbound", "0.0.0.0", 15001, &rds_hcm("r"));
        orig_dst.use_original_dst = Some(pb::google::protobuf::BoolValue { value: true });
        let mut tls = listener("l", "0.0.0.0", 8443, &rds_hcm("r"));
        tls.filter_chains[0].transport_socket =
            Some(pb::envoy::config::core::v3::TransportSocket {
                name: "envoy.transport_sockets.tls".into(),
                config_type: None,
            });
        let mut extra_http_filter = rds_hcm("r");
        extra_http_filter.http_filters.insert(
            0,
            HttpFilter {
                name: "envoy.filters.http.fault".into(),
                ..Default::default()
            },
        );
        let mut no_router = rds_hcm("r");
        no_router.http_filters = vec![HttpFilter {
            name: "envoy.filters.http.cors".into(),
            ..Default::default()
        }];
        let mut access_log = rds_hcm("r");
        access_log.access_log.push(Default::default());
        let cases = [
            (
                with_tcp,
                "listener 0.0.0.0_8080: filter envoy.filters.network.tcp_proxy is not supported",
            ),
            (
                orig_dst,
                "listener virtualOutbound: use_original_dst is not supported",
            ),
            (
                tls,
                "listener l: filter_chains[0].transport_socket envoy.transport_sockets.tls is not supported",
            ),
            (
                listener("l", "0.0.0.0", 80, &extra_http_filter),
                "listener l: filter_chains[0].filters[0].typed_config.http_filters[0] (http filter envoy.filters.http.fault) is not supported",
            ),
            (
                listener("l", "0.0.0.0", 80, &no_router),
                "listener l: filter_chains[0].filters[0].typed_config.http_filters: the last http filter must be envoy.filters.http.router, not envoy.filters.http.cors",
            ),
            (
                listener("l", "0.0.0.0", 80, &access_log),
                "listener l: filter_chains[0].filters[0].typed_config.access_log is not supported",
            ),
        ];
        for (l, want) in cases {
            assert_eq!(ListenerConfig::compile(&l).unwrap_err().to_string(), want);
        }
    }
}
