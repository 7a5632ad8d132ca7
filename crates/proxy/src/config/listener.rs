//! `Listener` → [`ListenerConfig`]: one address, its listener filters, and
//! filter chains ending in an HTTP connection manager or a TCP proxy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use mizzen_xds::pb;
use pb::envoy::config::listener::v3::{FilterChain, Listener, filter, listener_filter};
use pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use pb::envoy::extensions::filters::http::router::v3::Router;
use pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;

use super::chain::{ChainMatch, ChainSelector, compile_match};
use super::check::reject_unknown;
use super::cluster::ads_config_source;
use super::cors::{CORS_FILTER, CORS_TYPE};
use super::endpoint::socket_address;
use super::fault::{FAULT_FILTER, FAULT_TYPE, FaultConfig};
use super::route::{RouteTable, compile_table};
use super::tcp_proxy::{TCP_PROXY, TCP_PROXY_TYPE, TcpProxyConfig};
use super::tls::{DownstreamTls, SecretRef, downstream_socket};
use super::{ConfigError, Scope, duration, fields, join, type_name, unpack};

pub const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";
pub const ROUTER: &str = "envoy.filters.http.router";
pub const ORIGINAL_DST: &str = "envoy.filters.listener.original_dst";
pub const HTTP_INSPECTOR: &str = "envoy.filters.listener.http_inspector";
pub const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
const HCM_TYPE: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER_TYPE: &str = "envoy.extensions.filters.http.router.v3.Router";
const ORIGINAL_DST_TYPE: &str = "envoy.extensions.filters.listener.original_dst.v3.OriginalDst";
const HTTP_INSPECTOR_TYPE: &str =
    "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector";
const TLS_INSPECTOR_TYPE: &str = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";

/// Envoy's `listener_filters_timeout` when unset.
pub const DEFAULT_LISTENER_FILTERS_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug)]
pub struct ListenerConfig {
    pub name: Arc<str>,
    pub address: SocketAddr,
    /// Prefix of `listener.<prefix>.*` stats: `stat_prefix`, else the address
    /// as Envoy prints it (`0.0.0.0_8080`).
    pub stat_prefix: Arc<str>,
    pub direction: TrafficDirection,
    /// `bind_to_port` (default true). A listener that does not bind only
    /// receives connections handed off by a `use_original_dst` listener.
    pub bind_to_port: bool,
    /// Hand connections off to the listener matching their original
    /// destination (and restore that destination, as `original_dst` does).
    pub use_original_dst: bool,
    pub listener_filters: ListenerFilters,
    /// In config order; [`ListenerConfig::selector`] picks among them.
    pub filter_chains: Vec<FilterChainConfig>,
    /// Takes connections no chain matches; without it they are closed.
    pub default_chain: Option<FilterChainConfig>,
    pub selector: ChainSelector,
}

/// The listener filters, which run in this order: `original_dst` (restore
/// the destination), then `tls_inspector` (peek for a ClientHello), then
/// `http_inspector` (peek at the first bytes of a connection that is not
/// TLS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerFilters {
    pub original_dst: bool,
    pub tls_inspector: bool,
    pub http_inspector: bool,
    /// `listener_filters_timeout`; `None` waits as long as it takes.
    pub timeout: Option<Duration>,
    /// On timeout, pick a chain without a detected protocol instead of
    /// closing the connection.
    pub continue_on_timeout: bool,
}

#[derive(Debug)]
pub struct FilterChainConfig {
    /// The chain's `name` (may be empty).
    pub name: Arc<str>,
    pub filter: NetworkFilter,
    /// The chain's TLS termination; `None` is plaintext.
    pub tls: Option<Arc<DownstreamTls>>,
}

/// A chain's terminal network filter.
#[derive(Debug, Clone)]
pub enum NetworkFilter {
    Http(Arc<HttpConfig>),
    TcpProxy(Arc<TcpProxyConfig>),
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
    /// The HTTP filters before the router.
    pub filters: HttpFilters,
    /// `upgrade_configs` lets WebSocket upgrades through.
    pub websocket: bool,
    /// `forward_client_cert_details`: what happens to `x-forwarded-client-cert`.
    pub forward_client_cert: ForwardClientCert,
    /// `set_current_client_cert_details`: what this hop adds to it.
    pub client_cert_details: ClientCertDetails,
}

/// Envoy's `ForwardClientCertDetails`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardClientCert {
    /// Remove the header (the default).
    #[default]
    Sanitize,
    /// Keep the header as received, on mutual TLS connections.
    ForwardOnly,
    /// Append this hop's details, on mutual TLS connections.
    AppendForward,
    /// Replace the header with this hop's details, on mutual TLS connections.
    SanitizeSet,
    /// Keep the header as received, always.
    AlwaysForwardOnly,
}

/// The fields of `set_current_client_cert_details` that are implemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientCertDetails {
    pub subject: bool,
    pub uri: bool,
    pub dns: bool,
}

/// The HTTP filters an HCM runs before its router, each optional.
#[derive(Debug, Default)]
pub struct HttpFilters {
    /// `envoy.filters.http.fault` with its filter-level config; routes may
    /// override it.
    pub fault: Option<Arc<FaultConfig>>,
    /// `envoy.filters.http.cors`: policies come from routes and virtual hosts.
    pub cors: bool,
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
            l.default_filter_chain = None;
            l.traffic_direction = 0;
            l.stat_prefix.clear();
            l.metadata = None;
            l.use_original_dst = None;
            l.bind_to_port = None;
            l.listener_filters.clear();
            l.listener_filters_timeout = None;
            l.continue_on_listener_filters_timeout = false;
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
        let listener_filters = compile_listener_filters(scope, l)?;
        if l.filter_chains.is_empty() && l.default_filter_chain.is_none() {
            return Err(scope.missing("filter_chains"));
        }
        let mut filter_chains = Vec::with_capacity(l.filter_chains.len());
        let mut matches = Vec::with_capacity(l.filter_chains.len());
        let mut paths = Vec::with_capacity(l.filter_chains.len());
        for (i, chain) in l.filter_chains.iter().enumerate() {
            let path = format!("filter_chains[{i}]");
            let (m, c) = compile_chain(scope, &path, chain)?;
            matches.push(m);
            filter_chains.push(c);
            paths.push(path);
        }
        let selector = ChainSelector::new(scope, matches, &paths)?;
        let default_chain = match &l.default_filter_chain {
            None => None,
            Some(chain) => {
                let path = "default_filter_chain";
                if chain.filter_chain_match.is_some() {
                    return Err(scope.invalid(
                        join(path, "filter_chain_match"),
                        "not allowed on the default filter chain",
                    ));
                }
                Some(compile_chain(scope, path, chain)?.1)
            }
        };
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
            bind_to_port: l.bind_to_port.is_none_or(|b| b.value),
            use_original_dst: l.use_original_dst.is_some_and(|b| b.value),
            listener_filters,
            filter_chains,
            default_chain,
            selector,
        })
    }

    /// Every RDS resource this listener's chains need.
    pub fn rds_names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.filter_chains
            .iter()
            .chain(self.default_chain.as_ref())
            .filter_map(|c| match &c.filter {
                NetworkFilter::Http(h) => match &h.routes {
                    RouteSource::Rds(name) => Some(name),
                    RouteSource::Inline(_) => None,
                },
                NetworkFilter::TcpProxy(_) => None,
            })
    }

    /// The SDS secrets this listener's chains need.
    pub fn secret_refs(&self) -> Vec<SecretRef> {
        self.filter_chains
            .iter()
            .chain(self.default_chain.as_ref())
            .filter_map(|c| c.tls.as_ref())
            .flat_map(|t| t.common.secret_refs().cloned())
            .collect()
    }

    /// Whether accepted connections have their original destination restored
    /// (`use_original_dst` implies the `original_dst` listener filter).
    pub fn restores_destination(&self) -> bool {
        self.use_original_dst || self.listener_filters.original_dst
    }
}

fn compile_listener_filters(scope: &Scope, l: &Listener) -> Result<ListenerFilters, ConfigError> {
    let mut out = ListenerFilters {
        continue_on_timeout: l.continue_on_listener_filters_timeout,
        ..Default::default()
    };
    out.timeout = match &l.listener_filters_timeout {
        None => Some(DEFAULT_LISTENER_FILTERS_TIMEOUT),
        Some(d) => {
            let d = duration(scope, "listener_filters_timeout", d)?;
            (!d.is_zero()).then_some(d)
        }
    };
    for (i, f) in l.listener_filters.iter().enumerate() {
        let path = format!("listener_filters[{i}]");
        reject_unknown(scope, &path, f, fields::LISTENER_FILTER, |f| {
            f.name.clear();
            if matches!(
                f.config_type,
                Some(listener_filter::ConfigType::TypedConfig(_))
            ) {
                f.config_type = None;
            }
        })?;
        let kind = match &f.config_type {
            Some(listener_filter::ConfigType::TypedConfig(any)) => type_name(&any.type_url),
            Some(listener_filter::ConfigType::ConfigDiscovery(_)) => {
                return Err(scope.unsupported(join(&path, "config_discovery")));
            }
            None => match f.name.as_str() {
                ORIGINAL_DST => ORIGINAL_DST_TYPE,
                HTTP_INSPECTOR => HTTP_INSPECTOR_TYPE,
                TLS_INSPECTOR => TLS_INSPECTOR_TYPE,
                _ => "",
            },
        };
        let tpath = join(&path, "typed_config");
        match (kind, &f.config_type) {
            (ORIGINAL_DST_TYPE, config) => {
                if let Some(listener_filter::ConfigType::TypedConfig(any)) = config {
                    let m: OriginalDst = unpack(scope, &tpath, any)?;
                    reject_unknown(scope, &tpath, &m, &[], |_| {})?;
                }
                out.original_dst = true;
            }
            (HTTP_INSPECTOR_TYPE, config) => {
                if let Some(listener_filter::ConfigType::TypedConfig(any)) = config {
                    let m: HttpInspector = unpack(scope, &tpath, any)?;
                    reject_unknown(scope, &tpath, &m, &[], |_| {})?;
                }
                out.http_inspector = true;
            }
            (TLS_INSPECTOR_TYPE, config) => {
                if let Some(listener_filter::ConfigType::TypedConfig(any)) = config {
                    let m: TlsInspector = unpack(scope, &tpath, any)?;
                    reject_unknown(scope, &tpath, &m, fields::TLS_INSPECTOR, |_| {})?;
                }
                out.tls_inspector = true;
            }
            _ => {
                let label = if f.name.is_empty() {
                    kind.to_string()
                } else {
                    f.name.clone()
                };
                return Err(scope.unsupported(format!("{path} (listener filter {label})")));
            }
        }
    }
    Ok(out)
}

/// One filter chain: its match criteria and its single terminal filter.
fn compile_chain(
    scope: &Scope,
    path: &str,
    chain: &FilterChain,
) -> Result<(ChainMatch, FilterChainConfig), ConfigError> {
    reject_unknown(scope, path, chain, fields::FILTER_CHAIN, |c| {
        c.filters.clear();
        c.name.clear();
        c.metadata = None;
        c.filter_chain_match = None;
        c.transport_socket = None;
    })?;
    let tls = match &chain.transport_socket {
        Some(ts) => downstream_socket(scope, &join(path, "transport_socket"), ts)?,
        None => None,
    };
    let m = match &chain.filter_chain_match {
        Some(m) => compile_match(scope, &join(path, "filter_chain_match"), m)?,
        None => ChainMatch::default(),
    };
    let filter = match chain.filters.as_slice() {
        [] => return Err(scope.missing(join(path, "filters"))),
        [one] => one,
        [first, second, ..] => {
            // Name the extra filter, or the first one when it is the odd one.
            let odd = if terminal(first).is_some() {
                second
            } else {
                first
            };
            return Err(scope.unsupported(format!("filter {}", filter_label(odd))));
        }
    };
    let Some(kind) = terminal(filter) else {
        return Err(scope.unsupported(format!("filter {}", filter_label(filter))));
    };
    let fpath = join(path, "filters[0]");
    let any = match &filter.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => any,
        Some(filter::ConfigType::ConfigDiscovery(_)) => {
            return Err(scope.unsupported(join(&fpath, "config_discovery")));
        }
        None => return Err(scope.missing(join(&fpath, "typed_config"))),
    };
    let tpath = join(&fpath, "typed_config");
    let filter = match kind {
        Terminal::Http => {
            let hcm: HttpConnectionManager = unpack(scope, &tpath, any)?;
            NetworkFilter::Http(Arc::new(compile_hcm(scope, &tpath, &hcm)?))
        }
        Terminal::Tcp => {
            let tcp: TcpProxy = unpack(scope, &tpath, any)?;
            NetworkFilter::TcpProxy(Arc::new(super::tcp_proxy::compile(scope, &tpath, &tcp)?))
        }
    };
    Ok((
        m,
        FilterChainConfig {
            name: Arc::from(chain.name.as_str()),
            filter,
            tls,
        },
    ))
}

#[derive(Clone, Copy)]
enum Terminal {
    Http,
    Tcp,
}

/// The kind of a supported terminal filter, by its typed config or its name.
fn terminal(f: &pb::envoy::config::listener::v3::Filter) -> Option<Terminal> {
    let name = match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => type_name(&any.type_url),
        _ => f.name.as_str(),
    };
    match name {
        HCM_TYPE | HTTP_CONNECTION_MANAGER => Some(Terminal::Http),
        TCP_PROXY_TYPE | TCP_PROXY => Some(Terminal::Tcp),
        _ => None,
    }
}

/// Envoy's stat form of an address: `0.0.0.0_8080`, `[::]_80` → `::_80`.
pub fn stat_address(addr: &SocketAddr) -> String {
    format!("{}_{}", addr.ip(), addr.port())
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
        h.upgrade_configs.clear();
        h.forward_client_cert_details = 0;
        h.set_current_client_cert_details = None;
    })?;
    use http_connection_manager::ForwardClientCertDetails as Fcc;
    let forward_client_cert = match Fcc::try_from(hcm.forward_client_cert_details) {
        Ok(Fcc::Sanitize) => ForwardClientCert::Sanitize,
        Ok(Fcc::ForwardOnly) => ForwardClientCert::ForwardOnly,
        Ok(Fcc::AppendForward) => ForwardClientCert::AppendForward,
        Ok(Fcc::SanitizeSet) => ForwardClientCert::SanitizeSet,
        Ok(Fcc::AlwaysForwardOnly) => ForwardClientCert::AlwaysForwardOnly,
        Err(_) => {
            return Err(scope.invalid(
                join(path, "forward_client_cert_details"),
                "unknown enum value",
            ));
        }
    };
    let mut client_cert_details = ClientCertDetails::default();
    if let Some(d) = &hcm.set_current_client_cert_details {
        let dpath = join(path, "set_current_client_cert_details");
        reject_unknown(
            scope,
            &dpath,
            d,
            fields::SET_CURRENT_CLIENT_CERT_DETAILS,
            |d| {
                d.subject = None;
                d.uri = false;
                d.dns = false;
            },
        )?;
        client_cert_details = ClientCertDetails {
            subject: d.subject.is_some_and(|b| b.value),
            uri: d.uri,
            dns: d.dns,
        };
    }
    let mut websocket = false;
    for (i, u) in hcm.upgrade_configs.iter().enumerate() {
        let upath = join(path, &format!("upgrade_configs[{i}]"));
        reject_unknown(
            scope,
            &upath,
            u,
            &[(1, "upgrade_type"), (2, "filters"), (3, "enabled")],
            |u| {
                u.upgrade_type.clear();
                u.enabled = None;
            },
        )?;
        if !u.upgrade_type.eq_ignore_ascii_case("websocket") {
            return Err(scope.unsupported(format!("{upath}.upgrade_type {}", u.upgrade_type)));
        }
        websocket = u.enabled.is_none_or(|e| e.value);
    }
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
    let mut filters = HttpFilters::default();
    match hcm.http_filters.split_last() {
        None => return Err(scope.missing(join(path, "http_filters"))),
        Some((last, others)) => {
            for (i, f) in others.iter().enumerate() {
                let fpath = join(path, &format!("http_filters[{i}]"));
                compile_http_filter(scope, &fpath, f, &mut filters)?;
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
        filters,
        websocket,
        forward_client_cert,
        client_cert_details,
    })
}

/// One HTTP filter before the router. Only the filters the proxy implements
/// are accepted, each at most once.
fn compile_http_filter(
    scope: &Scope,
    path: &str,
    f: &HttpFilter,
    out: &mut HttpFilters,
) -> Result<(), ConfigError> {
    let any = match &f.config_type {
        Some(http_filter::ConfigType::TypedConfig(any)) => Some(any),
        Some(http_filter::ConfigType::ConfigDiscovery(_)) => {
            return Err(scope.unsupported(join(path, "config_discovery")));
        }
        None => None,
    };
    let kind = any.map(|a| type_name(&a.type_url));
    let label = if f.name.is_empty() {
        kind.unwrap_or("(unnamed)").to_string()
    } else {
        f.name.clone()
    };
    let is = |name: &str, type_name: &str| kind.map_or(f.name == name, |k| k == type_name);
    if is(FAULT_FILTER, FAULT_TYPE) && out.fault.is_none() {
        reject_unknown(scope, path, f, fields::HTTP_FILTER, |f| {
            f.name.clear();
            f.config_type = None;
        })?;
        let config = match any {
            Some(any) => {
                let tpath = join(path, "typed_config");
                let fault: HttpFault = unpack(scope, &tpath, any)?;
                FaultConfig::compile(scope, &tpath, &fault)?
            }
            None => FaultConfig {
                delay: None,
                abort: None,
            },
        };
        out.fault = Some(Arc::new(config));
        return Ok(());
    }
    if is(CORS_FILTER, CORS_TYPE) && !out.cors {
        reject_unknown(scope, path, f, fields::HTTP_FILTER, |f| {
            f.name.clear();
            f.config_type = None;
        })?;
        if let Some(any) = any {
            let tpath = join(path, "typed_config");
            let cors: pb::envoy::extensions::filters::http::cors::v3::Cors =
                unpack(scope, &tpath, any)?;
            reject_unknown(scope, &tpath, &cors, &[], |_| {})?;
        }
        out.cors = true;
        return Ok(());
    }
    Err(scope.unsupported(format!("{path} (http filter {label})")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pb::envoy::config::core::v3::{AggregatedConfigSource, ConfigSource, config_source};
    use pb::envoy::config::listener::v3::{Filter, FilterChainMatch, ListenerFilter};
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

    fn tcp_filter(cluster: &str) -> Filter {
        Filter {
            name: TCP_PROXY.into(),
            config_type: Some(filter::ConfigType::TypedConfig(mizzen_xds::pack(&TcpProxy {
                stat_prefix: cluster.into(),
                cluster_specifier: Some(
                    pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy::ClusterSpecifier::Cluster(
                        cluster.into(),
                    ),
                ),
                ..Default::default()
            }))),
        }
    }

    fn chain(m: Option<FilterChainMatch>, filter: Filter) -> FilterChain {
        FilterChain {
            filter_chain_match: m,
            filters: vec![filter],
            ..Default::default()
        }
    }

    fn hcm_filter(route: &str) -> Filter {
        Filter {
            name: HTTP_CONNECTION_MANAGER.into(),
            config_type: Some(filter::ConfigType::TypedConfig(mizzen_xds::pack(&rds_hcm(
                route,
            )))),
        }
    }

    fn listener_filter(name: &str, typed: Option<pb::google::protobuf::Any>) -> ListenerFilter {
        ListenerFilter {
            name: name.into(),
            config_type: typed.map(listener_filter::ConfigType::TypedConfig),
            ..Default::default()
        }
    }

    #[test]
    fn compiles_rds_listener() {
        let l =
            ListenerConfig::compile(&listener("0.0.0.0_8080", "0.0.0.0", 8080, &rds_hcm("8080")))
                .unwrap();
        assert_eq!(
            l.rds_names().map(|s| &**s).collect::<Vec<_>>(),
            vec!["8080"]
        );
        assert_eq!(&*l.stat_prefix, "0.0.0.0_8080");
        assert!(l.bind_to_port);
        assert!(!l.use_original_dst);
        assert_eq!(
            l.listener_filters,
            ListenerFilters {
                timeout: Some(DEFAULT_LISTENER_FILTERS_TIMEOUT),
                ..Default::default()
            }
        );
        let NetworkFilter::Http(h) = &l.filter_chains[0].filter else {
            panic!("not HTTP")
        };
        assert_eq!(h.codec, Codec::Auto);
        assert!(!h.allow_absolute_url);
        assert!(h.generate_request_id);
        assert_eq!(
            l.selector.select("1.2.3.4:8080".parse().unwrap(), None),
            Some(0)
        );
    }

    /// The shapes of Istio's REDIRECT-mode sidecar listeners.
    #[test]
    fn compiles_capture_listeners() {
        use pb::google::protobuf::{BoolValue, Duration as PbDuration, UInt32Value};
        let virtual_outbound = Listener {
            name: "virtualOutbound".into(),
            address: Some(super::super::endpoint::tests::address("0.0.0.0", 15001)),
            use_original_dst: Some(BoolValue { value: true }),
            filter_chains: vec![
                chain(
                    Some(FilterChainMatch {
                        destination_port: Some(UInt32Value { value: 15001 }),
                        ..Default::default()
                    }),
                    tcp_filter("BlackHoleCluster"),
                ),
                chain(None, tcp_filter("PassthroughCluster")),
            ],
            traffic_direction: 2,
            ..Default::default()
        };
        let l = ListenerConfig::compile(&virtual_outbound).unwrap();
        assert!(l.use_original_dst && l.restores_destination() && l.bind_to_port);
        assert_eq!(l.filter_chains.len(), 2);
        assert_eq!(
            l.selector.select("10.0.0.1:15001".parse().unwrap(), None),
            Some(0)
        );
        assert_eq!(
            l.selector.select("10.0.0.1:443".parse().unwrap(), None),
            Some(1)
        );

        let sniffed = Listener {
            name: "0.0.0.0_9000".into(),
            address: Some(super::super::endpoint::tests::address("0.0.0.0", 9000)),
            bind_to_port: Some(BoolValue { value: false }),
            listener_filters: vec![listener_filter(
                HTTP_INSPECTOR,
                Some(mizzen_xds::pack(&HttpInspector {})),
            )],
            listener_filters_timeout: Some(PbDuration {
                seconds: 0,
                nanos: 100_000_000,
            }),
            continue_on_listener_filters_timeout: true,
            filter_chains: vec![chain(
                Some(FilterChainMatch {
                    application_protocols: vec!["http/1.1".into(), "h2c".into()],
                    ..Default::default()
                }),
                hcm_filter("9000"),
            )],
            default_filter_chain: Some(chain(None, tcp_filter("outbound|9000||svc"))),
            ..Default::default()
        };
        let l = ListenerConfig::compile(&sniffed).unwrap();
        assert!(!l.bind_to_port && !l.use_original_dst);
        assert_eq!(
            l.listener_filters,
            ListenerFilters {
                original_dst: false,
                tls_inspector: false,
                http_inspector: true,
                timeout: Some(Duration::from_millis(100)),
                continue_on_timeout: true,
            }
        );
        assert!(matches!(
            l.default_chain.as_ref().map(|c| &c.filter),
            Some(NetworkFilter::TcpProxy(_))
        ));
        assert_eq!(
            l.rds_names().map(|s| &**s).collect::<Vec<_>>(),
            vec!["9000"]
        );

        let virtual_inbound = Listener {
            name: "virtualInbound".into(),
            address: Some(super::super::endpoint::tests::address("0.0.0.0", 15006)),
            listener_filters: vec![
                listener_filter(ORIGINAL_DST, Some(mizzen_xds::pack(&OriginalDst {}))),
                listener_filter(HTTP_INSPECTOR, None),
            ],
            listener_filters_timeout: Some(PbDuration {
                seconds: 0,
                nanos: 0,
            }),
            filter_chains: vec![
                chain(
                    Some(FilterChainMatch {
                        destination_port: Some(UInt32Value { value: 8080 }),
                        transport_protocol: "raw_buffer".into(),
                        application_protocols: vec!["http/1.1".into(), "h2c".into()],
                        ..Default::default()
                    }),
                    hcm_filter("inbound|8080||"),
                ),
                chain(
                    Some(FilterChainMatch {
                        destination_port: Some(UInt32Value { value: 8080 }),
                        transport_protocol: "raw_buffer".into(),
                        ..Default::default()
                    }),
                    tcp_filter("inbound|8080||"),
                ),
                chain(None, tcp_filter("InboundPassthroughCluster")),
            ],
            traffic_direction: 1,
            ..Default::default()
        };
        let l = ListenerConfig::compile(&virtual_inbound).unwrap();
        assert!(l.listener_filters.original_dst && l.listener_filters.http_inspector);
        assert!(l.restores_destination() && !l.use_original_dst);
        assert_eq!(l.listener_filters.timeout, None);
        assert_eq!(l.direction, TrafficDirection::Inbound);
        let dst = "10.1.0.5:8080".parse().unwrap();
        assert_eq!(l.selector.select(dst, Some("h2c")), Some(0));
        assert_eq!(l.selector.select(dst, None), Some(1));
        assert_eq!(
            l.selector.select("10.1.0.5:22".parse().unwrap(), None),
            Some(2)
        );
    }

    /// Istio's TLS service listener: SNI chains, then the service itself.
    #[test]
    fn compiles_tls_inspector_and_server_names() {
        let l = Listener {
            name: "10.96.0.20_443".into(),
            address: Some(super::super::endpoint::tests::address("10.96.0.20", 443)),
            listener_filters: vec![listener_filter(
                TLS_INSPECTOR,
                Some(mizzen_xds::pack(&TlsInspector::default())),
            )],
            filter_chains: vec![
                chain(
                    Some(FilterChainMatch {
                        server_names: vec!["One.Example.com".into(), "*.two.example.com".into()],
                        ..Default::default()
                    }),
                    tcp_filter("outbound|443|v1|svc"),
                ),
                chain(
                    Some(FilterChainMatch {
                        transport_protocol: "tls".into(),
                        ..Default::default()
                    }),
                    tcp_filter("outbound|443|v2|svc"),
                ),
                chain(None, tcp_filter("outbound|443||svc")),
            ],
            ..Default::default()
        };
        let l = ListenerConfig::compile(&l).unwrap();
        assert!(l.listener_filters.tls_inspector && !l.listener_filters.http_inspector);
        assert!(l.selector.uses_tls());
        let dst = "10.96.0.20:443".parse().unwrap();
        let tls = |sni: Option<&'static str>| super::super::chain::Detected {
            tls: true,
            server_name: sni,
            application_protocols: &[],
        };
        assert_eq!(
            l.selector
                .select_detected(dst, &tls(Some("one.example.com"))),
            Some(0)
        );
        assert_eq!(
            l.selector
                .select_detected(dst, &tls(Some("a.two.example.com"))),
            Some(0)
        );
        assert_eq!(
            l.selector.select_detected(dst, &tls(Some("x.example.com"))),
            Some(1)
        );
        assert_eq!(l.selector.select_detected(dst, &tls(None)), Some(1));
        assert_eq!(l.selector.select(dst, None), Some(2));
    }

    #[test]
    fn refusals() {
        let unknown_network = Filter {
            name: "envoy.filters.network.redis_proxy".into(),
            config_type: None,
        };
        let mut with_redis = listener("0.0.0.0_8080", "0.0.0.0", 8080, &rds_hcm("r"));
        with_redis.filter_chains[0].filters = vec![unknown_network];
        let mut bare_tcp = listener("0.0.0.0_8080", "0.0.0.0", 8080, &rds_hcm("r"));
        bare_tcp.filter_chains[0].filters = vec![Filter {
            name: TCP_PROXY.into(),
            config_type: None,
        }];
        let mut two_filters = listener("l", "0.0.0.0", 8080, &rds_hcm("r"));
        two_filters.filter_chains[0].filters = vec![
            Filter {
                name: "istio.metadata_exchange".into(),
                config_type: None,
            },
            tcp_filter("c"),
        ];
        let mut tls = listener("l", "0.0.0.0", 8443, &rds_hcm("r"));
        tls.filter_chains[0].transport_socket =
            Some(pb::envoy::config::core::v3::TransportSocket {
                name: "envoy.transport_sockets.tls".into(),
                config_type: None,
            });
        let mut tls_inspector = listener("l", "0.0.0.0", 8443, &rds_hcm("r"));
        tls_inspector.listener_filters = vec![listener_filter(
            TLS_INSPECTOR,
            Some(mizzen_xds::pack(&TlsInspector {
                enable_ja3_fingerprinting: Some(pb::google::protobuf::BoolValue { value: true }),
                ..Default::default()
            })),
        )];
        let mut disabled_filter = listener("l", "0.0.0.0", 80, &rds_hcm("r"));
        disabled_filter.listener_filters = vec![ListenerFilter {
            filter_disabled: Some(Default::default()),
            ..listener_filter(HTTP_INSPECTOR, None)
        }];
        let mut transparent = listener("l", "0.0.0.0", 80, &rds_hcm("r"));
        transparent.transparent = Some(pb::google::protobuf::BoolValue { value: true });
        let mut no_chains = listener("l", "0.0.0.0", 80, &rds_hcm("r"));
        no_chains.filter_chains.clear();
        let mut default_with_match = listener("l", "0.0.0.0", 80, &rds_hcm("r"));
        default_with_match.default_filter_chain =
            Some(chain(Some(FilterChainMatch::default()), tcp_filter("c")));
        let mut duplicate = listener("l", "0.0.0.0", 80, &rds_hcm("r"));
        duplicate.filter_chains.push(chain(None, tcp_filter("c")));
        let mut extra_http_filter = rds_hcm("r");
        extra_http_filter.http_filters.insert(
            0,
            HttpFilter {
                name: "envoy.filters.http.lua".into(),
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
                with_redis,
                "listener 0.0.0.0_8080: filter envoy.filters.network.redis_proxy is not supported",
            ),
            (
                bare_tcp,
                "listener 0.0.0.0_8080: filter_chains[0].filters[0].typed_config is required",
            ),
            (
                two_filters,
                "listener l: filter istio.metadata_exchange is not supported",
            ),
            (
                tls,
                "listener l: filter_chains[0].transport_socket.typed_config is required",
            ),
            (
                tls_inspector,
                "listener l: listener_filters[0].typed_config.enable_ja3_fingerprinting is not supported",
            ),
            (
                disabled_filter,
                "listener l: listener_filters[0].filter_disabled is not supported",
            ),
            (transparent, "listener l: transparent is not supported"),
            (no_chains, "listener l: filter_chains is required"),
            (
                default_with_match,
                "listener l: default_filter_chain.filter_chain_match: not allowed on the default filter chain",
            ),
            (
                duplicate,
                "listener l: filter_chains[1].filter_chain_match: same matching rules as filter_chains[0] (multiple filter chains with the same matching rules)",
            ),
            (
                listener("l", "0.0.0.0", 80, &extra_http_filter),
                "listener l: filter_chains[0].filters[0].typed_config.http_filters[0] (http filter envoy.filters.http.lua) is not supported",
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
