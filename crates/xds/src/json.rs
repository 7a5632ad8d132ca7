//! Rendering of xDS resources in Envoy's JSON shape.
//!
//! Output follows the proto3 JSON mapping with the original proto field
//! names (`snake_case`), as Envoy's `/config_dump` prints them: default
//! values omitted, durations as `"1.5s"`, enums by name, 64-bit integers as
//! strings, bytes as base64 and `Any` with its `@type`. prost has no
//! reflection, so each message is written out here; a message that carries
//! fields this module does not render gets `"@unrendered": true` instead of
//! silently looking complete.

use prost::Message;
use serde_json::{Map, Value};

use crate::pb;
use crate::structs;
use pb::envoy::config::cluster::v3::{Cluster, cluster};
use pb::envoy::config::core::v3 as core;
use pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use pb::envoy::config::listener::v3::{Listener, filter as listener_filter};
use pb::envoy::config::route::v3 as route;
use pb::envoy::extensions::filters::http::router::v3::Router;
use pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use pb::envoy::r#type::matcher::v3 as matcher;
use pb::google::protobuf::{Any, BoolValue, Duration, UInt32Value};

/// A JSON object under construction that skips proto3 default values.
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn str(mut self, k: &str, v: &str) -> Self {
        if !v.is_empty() {
            self.0.insert(k.into(), Value::String(v.into()));
        }
        self
    }
    fn bool(mut self, k: &str, v: bool) -> Self {
        if v {
            self.0.insert(k.into(), Value::Bool(true));
        }
        self
    }
    fn u32(mut self, k: &str, v: u32) -> Self {
        if v != 0 {
            self.0.insert(k.into(), Value::from(v));
        }
        self
    }
    fn val(mut self, k: &str, v: Option<Value>) -> Self {
        if let Some(v) = v {
            self.0.insert(k.into(), v);
        }
        self
    }
    fn arr<T>(mut self, k: &str, items: &[T], f: impl Fn(&T) -> Value) -> Self {
        if !items.is_empty() {
            self.0
                .insert(k.into(), Value::Array(items.iter().map(f).collect()));
        }
        self
    }
    fn strs(self, k: &str, items: &[String]) -> Self {
        self.arr(k, items, |s| Value::String(s.clone()))
    }
    fn dur(self, k: &str, v: &Option<Duration>) -> Self {
        self.val(k, v.as_ref().map(|d| Value::String(duration(d))))
    }
    fn wbool(self, k: &str, v: &Option<BoolValue>) -> Self {
        self.val(k, v.map(|b| Value::Bool(b.value)))
    }
    fn wu32(self, k: &str, v: &Option<UInt32Value>) -> Self {
        self.val(k, v.map(|w| Value::from(w.value)))
    }
    /// An enum field: omitted at its zero value, else by name.
    fn enum_(mut self, k: &str, v: i32, name: Option<&str>) -> Self {
        if v != 0 {
            let rendered = name
                .map(|n| Value::String(n.into()))
                .unwrap_or(Value::from(v));
            self.0.insert(k.into(), rendered);
        }
        self
    }
    /// Marks the object when `msg` has fields set beyond those `clear` resets.
    fn check<M: Message + Clone>(mut self, msg: &M, clear: impl FnOnce(&mut M)) -> Self {
        let mut rest = msg.clone();
        clear(&mut rest);
        if rest.encoded_len() > 0 {
            self.0.insert("@unrendered".into(), Value::Bool(true));
        }
        self
    }
    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

/// `1.500s`-style proto3 JSON duration.
pub fn duration(d: &Duration) -> String {
    let (s, n) = (d.seconds, d.nanos);
    let sign = if s < 0 || n < 0 { "-" } else { "" };
    let (s, n) = (s.unsigned_abs(), n.unsigned_abs());
    if n == 0 {
        format!("{sign}{s}s")
    } else if n % 1_000_000 == 0 {
        format!("{sign}{s}.{:03}s", n / 1_000_000)
    } else if n % 1_000 == 0 {
        format!("{sign}{s}.{:06}s", n / 1_000)
    } else {
        format!("{sign}{s}.{n:09}s")
    }
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Renders a known typed config with its `@type`; `None` for other types.
pub fn any(a: &Any) -> Option<Value> {
    let name = a.type_url.rsplit('/').next().unwrap_or_default();
    let bytes = a.value.as_slice();
    let body = match name {
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager" => {
            http_connection_manager(&hcm::HttpConnectionManager::decode(bytes).ok()?)
        }
        "envoy.extensions.filters.http.router.v3.Router" => router(&Router::decode(bytes).ok()?),
        "envoy.extensions.filters.http.fault.v3.HTTPFault" => http_fault(
            &pb::envoy::extensions::filters::http::fault::v3::HttpFault::decode(bytes).ok()?,
        ),
        "envoy.extensions.filters.http.cors.v3.Cors" => Obj::default()
            .check(
                &pb::envoy::extensions::filters::http::cors::v3::Cors::decode(bytes).ok()?,
                |_| {},
            )
            .done(),
        "envoy.extensions.filters.http.cors.v3.CorsPolicy" => cors_policy(
            &pb::envoy::extensions::filters::http::cors::v3::CorsPolicy::decode(bytes).ok()?,
        ),
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy" => {
            tcp_proxy(&tcp::TcpProxy::decode(bytes).ok()?)
        }
        "envoy.extensions.filters.listener.original_dst.v3.OriginalDst" => Obj::default()
            .check(&OriginalDst::decode(bytes).ok()?, |_| {})
            .done(),
        "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector" => Obj::default()
            .check(&HttpInspector::decode(bytes).ok()?, |_| {})
            .done(),
        "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector" => Obj::default()
            .check(
                &pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector::decode(
                    bytes,
                )
                .ok()?,
                |_| {},
            )
            .done(),
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext" => {
            upstream_tls_context(&tls::UpstreamTlsContext::decode(bytes).ok()?)
        }
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext" => {
            downstream_tls_context(&tls::DownstreamTlsContext::decode(bytes).ok()?)
        }
        "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer" => Obj::default()
            .check(
                &pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer::decode(bytes)
                    .ok()?,
                |_| {},
            )
            .done(),
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" => {
            upstream_http_protocol_options(&HttpProtocolOptions::decode(bytes).ok()?)
        }
        "envoy.config.listener.v3.Listener" => listener(&Listener::decode(bytes).ok()?),
        "envoy.config.route.v3.RouteConfiguration" => {
            route_configuration(&route::RouteConfiguration::decode(bytes).ok()?)
        }
        "envoy.config.cluster.v3.Cluster" => cluster(&Cluster::decode(bytes).ok()?),
        "envoy.config.endpoint.v3.ClusterLoadAssignment" => {
            cluster_load_assignment(&ClusterLoadAssignment::decode(bytes).ok()?)
        }
        _ => return None,
    };
    let mut m = match body {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    m.insert("@type".into(), Value::String(a.type_url.clone()));
    Some(Value::Object(m))
}

/// [`any`], or just `@type` with the `@unrendered` marker for unknown types.
fn any_or_marker(a: &Any) -> Value {
    any(a).unwrap_or_else(|| serde_json::json!({ "@type": a.type_url, "@unrendered": true }))
}

fn metadata(m: &Option<core::Metadata>) -> Option<Value> {
    let m = m.as_ref()?;
    let filter: Map<String, Value> = m
        .filter_metadata
        .iter()
        .map(|(k, v)| (k.clone(), Value::Object(structs::from_struct(v))))
        .collect();
    let mut o = Obj::default();
    if !filter.is_empty() {
        o.0.insert("filter_metadata".into(), Value::Object(filter));
    }
    Some(o.check(m, |m| m.filter_metadata.clear()).done())
}

pub fn address(a: &core::Address) -> Value {
    use core::address::Address as A;
    match &a.address {
        Some(A::SocketAddress(s)) => {
            use core::socket_address::{PortSpecifier, Protocol};
            let mut o = Obj::default()
                .enum_(
                    "protocol",
                    s.protocol,
                    Protocol::try_from(s.protocol).ok().map(|p| p.as_str_name()),
                )
                .str("address", &s.address);
            o = match &s.port_specifier {
                Some(PortSpecifier::PortValue(p)) => o.u32("port_value", *p),
                Some(PortSpecifier::NamedPort(n)) => o.str("named_port", n),
                None => o,
            };
            let inner = o
                .check(s, |s| {
                    s.protocol = 0;
                    s.address.clear();
                    s.port_specifier = None;
                })
                .done();
            Obj::default().val("socket_address", Some(inner)).done()
        }
        Some(A::Pipe(p)) => Obj::default()
            .val(
                "pipe",
                Some(
                    Obj::default()
                        .str("path", &p.path)
                        .u32("mode", p.mode)
                        .done(),
                ),
            )
            .done(),
        Some(A::EnvoyInternalAddress(_)) => {
            serde_json::json!({"envoy_internal_address": {"@unrendered": true}})
        }
        None => Value::Object(Map::new()),
    }
}

#[allow(deprecated)]
fn config_source(c: &core::ConfigSource) -> Value {
    use core::config_source::ConfigSourceSpecifier as S;
    let o = match &c.config_source_specifier {
        Some(S::Ads(_)) => Obj::default().val("ads", Some(Value::Object(Map::new()))),
        Some(S::Path(p)) => Obj::default().str("path", p),
        Some(S::ApiConfigSource(a)) => {
            Obj::default().val("api_config_source", Some(api_config_source(a)))
        }
        _ => Obj::default(),
    };
    o.dur("initial_fetch_timeout", &c.initial_fetch_timeout)
        .enum_(
            "resource_api_version",
            c.resource_api_version,
            core::ApiVersion::try_from(c.resource_api_version)
                .ok()
                .map(|v| v.as_str_name()),
        )
        .check(c, |c| {
            if matches!(
                c.config_source_specifier,
                Some(S::Ads(_)) | Some(S::Path(_)) | Some(S::ApiConfigSource(_))
            ) {
                c.config_source_specifier = None;
            }
            c.initial_fetch_timeout = None;
            c.resource_api_version = 0;
        })
        .done()
}

fn api_config_source(a: &core::ApiConfigSource) -> Value {
    use core::grpc_service::TargetSpecifier as T;
    Obj::default()
        .enum_(
            "api_type",
            a.api_type,
            core::api_config_source::ApiType::try_from(a.api_type)
                .ok()
                .map(|t| t.as_str_name()),
        )
        .enum_(
            "transport_api_version",
            a.transport_api_version,
            core::ApiVersion::try_from(a.transport_api_version)
                .ok()
                .map(|v| v.as_str_name()),
        )
        .arr("grpc_services", &a.grpc_services, |g| {
            let o = match &g.target_specifier {
                Some(T::EnvoyGrpc(e)) => Obj::default().val(
                    "envoy_grpc",
                    Some(
                        Obj::default()
                            .str("cluster_name", &e.cluster_name)
                            .check(e, |e| e.cluster_name.clear())
                            .done(),
                    ),
                ),
                _ => Obj::default(),
            };
            o.check(g, |g| {
                if matches!(g.target_specifier, Some(T::EnvoyGrpc(_))) {
                    g.target_specifier = None;
                }
            })
            .done()
        })
        .bool(
            "set_node_on_first_message_only",
            a.set_node_on_first_message_only,
        )
        .check(a, |a| {
            a.api_type = 0;
            a.transport_api_version = 0;
            a.grpc_services.clear();
            a.set_node_on_first_message_only = false;
        })
        .done()
}

// ---------------------------------------------------------------------------
// TLS transport sockets and secrets
// ---------------------------------------------------------------------------

fn tls_params(p: &tls::TlsParameters) -> Value {
    let name = |v: i32| {
        tls::tls_parameters::TlsProtocol::try_from(v)
            .ok()
            .map(|p| p.as_str_name())
    };
    Obj::default()
        .enum_(
            "tls_minimum_protocol_version",
            p.tls_minimum_protocol_version,
            name(p.tls_minimum_protocol_version),
        )
        .enum_(
            "tls_maximum_protocol_version",
            p.tls_maximum_protocol_version,
            name(p.tls_maximum_protocol_version),
        )
        .strs("cipher_suites", &p.cipher_suites)
        .strs("ecdh_curves", &p.ecdh_curves)
        .check(p, |p| {
            p.tls_minimum_protocol_version = 0;
            p.tls_maximum_protocol_version = 0;
            p.cipher_suites.clear();
            p.ecdh_curves.clear();
        })
        .done()
}

/// A private key is never shown: Envoy replaces inline keys by `[redacted]`.
fn redacted(d: &core::DataSource) -> Value {
    use core::data_source::Specifier as S;
    match &d.specifier {
        Some(S::InlineBytes(_)) => Obj::default().str("inline_bytes", &base64(b"[redacted]")),
        Some(S::InlineString(_)) => Obj::default().str("inline_string", "[redacted]"),
        _ => return data_source(d),
    }
    .done()
}

fn tls_certificate(c: &tls::TlsCertificate) -> Value {
    Obj::default()
        .val(
            "certificate_chain",
            c.certificate_chain.as_ref().map(data_source),
        )
        .val("private_key", c.private_key.as_ref().map(redacted))
        .check(c, |c| {
            c.certificate_chain = None;
            c.private_key = None;
        })
        .done()
}

fn sds_secret_config(s: &tls::SdsSecretConfig) -> Value {
    Obj::default()
        .str("name", &s.name)
        .val("sds_config", s.sds_config.as_ref().map(config_source))
        .check(s, |s| {
            s.name.clear();
            s.sds_config = None;
        })
        .done()
}

#[allow(deprecated)]
fn validation_context(v: &tls::CertificateValidationContext) -> Value {
    Obj::default()
        .val("trusted_ca", v.trusted_ca.as_ref().map(data_source))
        .arr(
            "match_subject_alt_names",
            &v.match_subject_alt_names,
            string_matcher,
        )
        .arr(
            "match_typed_subject_alt_names",
            &v.match_typed_subject_alt_names,
            |m| {
                Obj::default()
                    .enum_(
                        "san_type",
                        m.san_type,
                        tls::subject_alt_name_matcher::SanType::try_from(m.san_type)
                            .ok()
                            .map(|t| t.as_str_name()),
                    )
                    .val("matcher", m.matcher.as_ref().map(string_matcher))
                    .check(m, |m| {
                        m.san_type = 0;
                        m.matcher = None;
                    })
                    .done()
            },
        )
        .check(v, |v| {
            v.trusted_ca = None;
            v.match_subject_alt_names.clear();
            v.match_typed_subject_alt_names.clear();
        })
        .done()
}

#[allow(deprecated)]
fn common_tls_context(c: &tls::CommonTlsContext) -> Value {
    use tls::common_tls_context::ValidationContextType as V;
    let o = Obj::default()
        .val("tls_params", c.tls_params.as_ref().map(tls_params))
        .arr("tls_certificates", &c.tls_certificates, tls_certificate)
        .arr(
            "tls_certificate_sds_secret_configs",
            &c.tls_certificate_sds_secret_configs,
            sds_secret_config,
        )
        .strs("alpn_protocols", &c.alpn_protocols);
    let o = match &c.validation_context_type {
        Some(V::ValidationContext(v)) => o.val("validation_context", Some(validation_context(v))),
        Some(V::ValidationContextSdsSecretConfig(s)) => o.val(
            "validation_context_sds_secret_config",
            Some(sds_secret_config(s)),
        ),
        Some(V::CombinedValidationContext(cv)) => o.val(
            "combined_validation_context",
            Some(
                Obj::default()
                    .val(
                        "default_validation_context",
                        cv.default_validation_context
                            .as_ref()
                            .map(validation_context),
                    )
                    .val(
                        "validation_context_sds_secret_config",
                        cv.validation_context_sds_secret_config
                            .as_ref()
                            .map(sds_secret_config),
                    )
                    .check(cv, |cv| {
                        cv.default_validation_context = None;
                        cv.validation_context_sds_secret_config = None;
                    })
                    .done(),
            ),
        ),
        _ => o,
    };
    o.check(c, |c| {
        c.tls_params = None;
        c.tls_certificates.clear();
        c.tls_certificate_sds_secret_configs.clear();
        c.alpn_protocols.clear();
        if matches!(
            c.validation_context_type,
            Some(
                V::ValidationContext(_)
                    | V::ValidationContextSdsSecretConfig(_)
                    | V::CombinedValidationContext(_)
            )
        ) {
            c.validation_context_type = None;
        }
    })
    .done()
}

pub fn upstream_tls_context(u: &tls::UpstreamTlsContext) -> Value {
    Obj::default()
        .val(
            "common_tls_context",
            u.common_tls_context.as_ref().map(common_tls_context),
        )
        .str("sni", &u.sni)
        .check(u, |u| {
            u.common_tls_context = None;
            u.sni.clear();
        })
        .done()
}

pub fn downstream_tls_context(d: &tls::DownstreamTlsContext) -> Value {
    Obj::default()
        .val(
            "common_tls_context",
            d.common_tls_context.as_ref().map(common_tls_context),
        )
        .wbool("require_client_certificate", &d.require_client_certificate)
        .check(d, |d| {
            d.common_tls_context = None;
            d.require_client_certificate = None;
        })
        .done()
}

/// A `Secret` as `/config_dump` shows it (with `@type`), private keys
/// redacted.
pub fn secret(s: &tls::Secret) -> Value {
    use tls::secret::Type as T;
    let o = Obj::default().str("name", &s.name);
    let o = match &s.r#type {
        Some(T::TlsCertificate(c)) => o.val("tls_certificate", Some(tls_certificate(c))),
        Some(T::ValidationContext(v)) => o.val("validation_context", Some(validation_context(v))),
        _ => o,
    };
    let mut m = match o
        .check(s, |s| {
            s.name.clear();
            if matches!(
                s.r#type,
                Some(T::TlsCertificate(_) | T::ValidationContext(_))
            ) {
                s.r#type = None;
            }
        })
        .done()
    {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    m.insert(
        "@type".into(),
        Value::String(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret".into(),
        ),
    );
    Value::Object(m)
}

fn header_value_option(h: &core::HeaderValueOption) -> Value {
    #[allow(deprecated)]
    let append = h.append;
    Obj::default()
        .val(
            "header",
            h.header.as_ref().map(|hv| {
                let mut o = Obj::default().str("key", &hv.key).str("value", &hv.value);
                if !hv.raw_value.is_empty() {
                    o = o.str("raw_value", &base64(&hv.raw_value));
                }
                o.done()
            }),
        )
        .wbool("append", &append)
        .enum_(
            "append_action",
            h.append_action,
            core::header_value_option::HeaderAppendAction::try_from(h.append_action)
                .ok()
                .map(|a| a.as_str_name()),
        )
        .bool("keep_empty_value", h.keep_empty_value)
        .done()
}

fn http1_options(h: &core::Http1ProtocolOptions) -> Value {
    Obj::default()
        .wbool("allow_absolute_url", &h.allow_absolute_url)
        .bool("accept_http_10", h.accept_http_10)
        .str("default_host_for_http_10", &h.default_host_for_http_10)
        .bool("enable_trailers", h.enable_trailers)
        .check(h, |h| {
            h.allow_absolute_url = None;
            h.accept_http_10 = false;
            h.default_host_for_http_10.clear();
            h.enable_trailers = false;
        })
        .done()
}

fn http2_options(h: &core::Http2ProtocolOptions) -> Value {
    Obj::default()
        .wu32("max_concurrent_streams", &h.max_concurrent_streams)
        .wu32("initial_stream_window_size", &h.initial_stream_window_size)
        .wu32(
            "initial_connection_window_size",
            &h.initial_connection_window_size,
        )
        .bool("allow_connect", h.allow_connect)
        .check(h, |h| {
            h.max_concurrent_streams = None;
            h.initial_stream_window_size = None;
            h.initial_connection_window_size = None;
            h.allow_connect = false;
        })
        .done()
}

fn common_http_options(h: &core::HttpProtocolOptions) -> Value {
    Obj::default()
        .dur("idle_timeout", &h.idle_timeout)
        .dur("max_connection_duration", &h.max_connection_duration)
        .wu32("max_headers_count", &h.max_headers_count)
        .dur("max_stream_duration", &h.max_stream_duration)
        .wu32(
            "max_requests_per_connection",
            &h.max_requests_per_connection,
        )
        .check(h, |h| {
            h.idle_timeout = None;
            h.max_connection_duration = None;
            h.max_headers_count = None;
            h.max_stream_duration = None;
            h.max_requests_per_connection = None;
        })
        .done()
}

fn transport_socket(t: &core::TransportSocket) -> Value {
    let o = Obj::default().str("name", &t.name);
    match &t.config_type {
        Some(core::transport_socket::ConfigType::TypedConfig(a)) => {
            o.val("typed_config", Some(any_or_marker(a)))
        }
        None => o,
    }
    .done()
}

// ---------------------------------------------------------------------------
// Listener and HTTP connection manager
// ---------------------------------------------------------------------------

fn cidr_range(r: &core::CidrRange) -> Value {
    Obj::default()
        .str("address_prefix", &r.address_prefix)
        .wu32("prefix_len", &r.prefix_len)
        .done()
}

fn filter_chain_match(m: &pb::envoy::config::listener::v3::FilterChainMatch) -> Value {
    Obj::default()
        .wu32("destination_port", &m.destination_port)
        .arr("prefix_ranges", &m.prefix_ranges, cidr_range)
        .arr("source_prefix_ranges", &m.source_prefix_ranges, cidr_range)
        .arr(
            "direct_source_prefix_ranges",
            &m.direct_source_prefix_ranges,
            cidr_range,
        )
        .arr("source_ports", &m.source_ports, |p| Value::from(*p))
        .strs("server_names", &m.server_names)
        .str("transport_protocol", &m.transport_protocol)
        .strs("application_protocols", &m.application_protocols)
        .check(m, |m| {
            m.destination_port = None;
            m.prefix_ranges.clear();
            m.source_prefix_ranges.clear();
            m.direct_source_prefix_ranges.clear();
            m.source_ports.clear();
            m.server_names.clear();
            m.transport_protocol.clear();
            m.application_protocols.clear();
        })
        .done()
}

fn filter_chain(fc: &pb::envoy::config::listener::v3::FilterChain) -> Value {
    Obj::default()
        .val(
            "filter_chain_match",
            fc.filter_chain_match.as_ref().map(filter_chain_match),
        )
        .arr("filters", &fc.filters, |f| {
            let o = Obj::default().str("name", &f.name);
            match &f.config_type {
                Some(listener_filter::ConfigType::TypedConfig(a)) => {
                    o.val("typed_config", Some(any_or_marker(a)))
                }
                Some(listener_filter::ConfigType::ConfigDiscovery(_)) => o.val(
                    "config_discovery",
                    Some(serde_json::json!({"@unrendered": true})),
                ),
                None => o,
            }
            .done()
        })
        .val(
            "transport_socket",
            fc.transport_socket.as_ref().map(transport_socket),
        )
        .val("metadata", metadata(&fc.metadata))
        .str("name", &fc.name)
        .check(fc, |fc| {
            fc.filter_chain_match = None;
            fc.name.clear();
            fc.filters.clear();
            fc.transport_socket = None;
            fc.metadata = None;
        })
        .done()
}

pub fn listener(l: &Listener) -> Value {
    use pb::envoy::config::listener::v3::listener_filter::ConfigType as LfConfig;
    Obj::default()
        .str("name", &l.name)
        .val("address", l.address.as_ref().map(address))
        .str("stat_prefix", &l.stat_prefix)
        .arr("filter_chains", &l.filter_chains, filter_chain)
        .val(
            "default_filter_chain",
            l.default_filter_chain.as_ref().map(filter_chain),
        )
        .wbool("use_original_dst", &l.use_original_dst)
        .arr("listener_filters", &l.listener_filters, |f| {
            let o = Obj::default().str("name", &f.name);
            match &f.config_type {
                Some(LfConfig::TypedConfig(a)) => o.val("typed_config", Some(any_or_marker(a))),
                Some(LfConfig::ConfigDiscovery(_)) => o.val(
                    "config_discovery",
                    Some(serde_json::json!({"@unrendered": true})),
                ),
                None => o,
            }
            .check(f, |f| {
                f.name.clear();
                f.config_type = None;
            })
            .done()
        })
        .dur("listener_filters_timeout", &l.listener_filters_timeout)
        .bool(
            "continue_on_listener_filters_timeout",
            l.continue_on_listener_filters_timeout,
        )
        .wbool("bind_to_port", &l.bind_to_port)
        .val("metadata", metadata(&l.metadata))
        .enum_(
            "traffic_direction",
            l.traffic_direction,
            core::TrafficDirection::try_from(l.traffic_direction)
                .ok()
                .map(|d| d.as_str_name()),
        )
        .check(l, |l| {
            l.name.clear();
            l.address = None;
            l.stat_prefix.clear();
            l.filter_chains.clear();
            l.default_filter_chain = None;
            l.use_original_dst = None;
            l.listener_filters.clear();
            l.listener_filters_timeout = None;
            l.continue_on_listener_filters_timeout = false;
            l.bind_to_port = None;
            l.metadata = None;
            l.traffic_direction = 0;
        })
        .done()
}

/// `envoy.filters.network.tcp_proxy`'s config.
pub fn tcp_proxy(t: &tcp::TcpProxy) -> Value {
    use tcp::tcp_proxy::ClusterSpecifier;
    let o = Obj::default().str("stat_prefix", &t.stat_prefix);
    let o = match &t.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) => o.val("cluster", Some(Value::String(c.clone()))),
        Some(ClusterSpecifier::WeightedClusters(w)) => o.val(
            "weighted_clusters",
            Some(
                Obj::default()
                    .arr("clusters", &w.clusters, |c| {
                        Obj::default()
                            .str("name", &c.name)
                            .u32("weight", c.weight)
                            .check(c, |c| {
                                c.name.clear();
                                c.weight = 0;
                            })
                            .done()
                    })
                    .done(),
            ),
        ),
        None => o,
    };
    o.dur("idle_timeout", &t.idle_timeout)
        .wu32("max_connect_attempts", &t.max_connect_attempts)
        .check(t, |t| {
            t.stat_prefix.clear();
            t.cluster_specifier = None;
            t.idle_timeout = None;
            t.max_connect_attempts = None;
        })
        .done()
}

pub fn http_connection_manager(h: &hcm::HttpConnectionManager) -> Value {
    use hcm::http_connection_manager::{CodecType, RouteSpecifier};
    let mut o = Obj::default()
        .enum_(
            "codec_type",
            h.codec_type,
            CodecType::try_from(h.codec_type)
                .ok()
                .map(|c| c.as_str_name()),
        )
        .str("stat_prefix", &h.stat_prefix);
    o = match &h.route_specifier {
        Some(RouteSpecifier::Rds(r)) => o.val(
            "rds",
            Some(
                Obj::default()
                    .val("config_source", r.config_source.as_ref().map(config_source))
                    .str("route_config_name", &r.route_config_name)
                    .done(),
            ),
        ),
        Some(RouteSpecifier::RouteConfig(rc)) => {
            o.val("route_config", Some(route_configuration(rc)))
        }
        Some(RouteSpecifier::ScopedRoutes(_)) => o.val(
            "scoped_routes",
            Some(serde_json::json!({"@unrendered": true})),
        ),
        None => o,
    };
    o.arr("http_filters", &h.http_filters, |f| {
        let o = Obj::default().str("name", &f.name);
        match &f.config_type {
            Some(hcm::http_filter::ConfigType::TypedConfig(a)) => {
                o.val("typed_config", Some(any_or_marker(a)))
            }
            Some(hcm::http_filter::ConfigType::ConfigDiscovery(_)) => o.val(
                "config_discovery",
                Some(serde_json::json!({"@unrendered": true})),
            ),
            None => o,
        }
        .bool("is_optional", f.is_optional)
        .bool("disabled", f.disabled)
        .done()
    })
    .val(
        "common_http_protocol_options",
        h.common_http_protocol_options
            .as_ref()
            .map(common_http_options),
    )
    .val(
        "http_protocol_options",
        h.http_protocol_options.as_ref().map(http1_options),
    )
    .val(
        "http2_protocol_options",
        h.http2_protocol_options.as_ref().map(http2_options),
    )
    .str("server_name", &h.server_name)
    .dur("stream_idle_timeout", &h.stream_idle_timeout)
    .dur("request_timeout", &h.request_timeout)
    .dur("drain_timeout", &h.drain_timeout)
    .wbool("use_remote_address", &h.use_remote_address)
    .wbool("generate_request_id", &h.generate_request_id)
    .enum_(
        "forward_client_cert_details",
        h.forward_client_cert_details,
        hcm::http_connection_manager::ForwardClientCertDetails::try_from(
            h.forward_client_cert_details,
        )
        .ok()
        .map(|f| f.as_str_name()),
    )
    .val(
        "set_current_client_cert_details",
        h.set_current_client_cert_details.as_ref().map(|d| {
            Obj::default()
                .wbool("subject", &d.subject)
                .bool("cert", d.cert)
                .bool("chain", d.chain)
                .bool("dns", d.dns)
                .bool("uri", d.uri)
                .check(d, |d| {
                    d.subject = None;
                    d.cert = false;
                    d.chain = false;
                    d.dns = false;
                    d.uri = false;
                })
                .done()
        }),
    )
    .bool(
        "preserve_external_request_id",
        h.preserve_external_request_id,
    )
    .wbool("normalize_path", &h.normalize_path)
    .bool("merge_slashes", h.merge_slashes)
    .arr("upgrade_configs", &h.upgrade_configs, |u| {
        Obj::default()
            .str("upgrade_type", &u.upgrade_type)
            .wbool("enabled", &u.enabled)
            .check(u, |u| {
                u.upgrade_type.clear();
                u.enabled = None;
            })
            .done()
    })
    .check(h, |h| {
        h.codec_type = 0;
        h.stat_prefix.clear();
        h.route_specifier = None;
        h.http_filters.clear();
        h.common_http_protocol_options = None;
        h.http_protocol_options = None;
        h.http2_protocol_options = None;
        h.server_name.clear();
        h.stream_idle_timeout = None;
        h.request_timeout = None;
        h.drain_timeout = None;
        h.use_remote_address = None;
        h.generate_request_id = None;
        h.forward_client_cert_details = 0;
        h.set_current_client_cert_details = None;
        h.preserve_external_request_id = false;
        h.normalize_path = None;
        h.merge_slashes = false;
        h.upgrade_configs.clear();
    })
    .done()
}

fn fractional_percent(p: &pb::envoy::r#type::v3::FractionalPercent) -> Value {
    use pb::envoy::r#type::v3::fractional_percent::DenominatorType;
    Obj::default()
        .u32("numerator", p.numerator)
        .enum_(
            "denominator",
            p.denominator,
            DenominatorType::try_from(p.denominator)
                .ok()
                .map(|d| d.as_str_name()),
        )
        .done()
}

fn runtime_fraction(r: &core::RuntimeFractionalPercent) -> Value {
    Obj::default()
        .val(
            "default_value",
            r.default_value.as_ref().map(fractional_percent),
        )
        .str("runtime_key", &r.runtime_key)
        .done()
}

pub fn http_fault(f: &pb::envoy::extensions::filters::http::fault::v3::HttpFault) -> Value {
    use pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
    use pb::envoy::extensions::filters::http::fault::v3::fault_abort::ErrorType;
    Obj::default()
        .val(
            "delay",
            f.delay.as_ref().map(|d| {
                let o = match &d.fault_delay_secifier {
                    Some(FaultDelaySecifier::FixedDelay(fixed)) => {
                        Obj::default().val("fixed_delay", Some(Value::String(duration(fixed))))
                    }
                    _ => Obj::default(),
                };
                o.val("percentage", d.percentage.as_ref().map(fractional_percent))
                    .check(d, |d| {
                        d.percentage = None;
                        if matches!(
                            d.fault_delay_secifier,
                            Some(FaultDelaySecifier::FixedDelay(_))
                        ) {
                            d.fault_delay_secifier = None;
                        }
                    })
                    .done()
            }),
        )
        .val(
            "abort",
            f.abort.as_ref().map(|a| {
                let o = match &a.error_type {
                    Some(ErrorType::HttpStatus(s)) => Obj::default().u32("http_status", *s),
                    Some(ErrorType::GrpcStatus(s)) => Obj::default().u32("grpc_status", *s),
                    _ => Obj::default(),
                };
                o.val("percentage", a.percentage.as_ref().map(fractional_percent))
                    .check(a, |a| {
                        a.percentage = None;
                        if !matches!(a.error_type, Some(ErrorType::HeaderAbort(_))) {
                            a.error_type = None;
                        }
                    })
                    .done()
            }),
        )
        .check(f, |f| {
            f.delay = None;
            f.abort = None;
        })
        .done()
}

pub fn cors_policy(c: &pb::envoy::extensions::filters::http::cors::v3::CorsPolicy) -> Value {
    Obj::default()
        .arr(
            "allow_origin_string_match",
            &c.allow_origin_string_match,
            string_matcher,
        )
        .str("allow_methods", &c.allow_methods)
        .str("allow_headers", &c.allow_headers)
        .str("expose_headers", &c.expose_headers)
        .str("max_age", &c.max_age)
        .wbool("allow_credentials", &c.allow_credentials)
        .val(
            "filter_enabled",
            c.filter_enabled.as_ref().map(runtime_fraction),
        )
        .wbool(
            "forward_not_matching_preflights",
            &c.forward_not_matching_preflights,
        )
        .check(c, |c| {
            c.allow_origin_string_match.clear();
            c.allow_methods.clear();
            c.allow_headers.clear();
            c.expose_headers.clear();
            c.max_age.clear();
            c.allow_credentials = None;
            c.filter_enabled = None;
            c.forward_not_matching_preflights = None;
        })
        .done()
}

fn typed_per_filter_config(map: &std::collections::HashMap<String, Any>) -> Option<Value> {
    if map.is_empty() {
        return None;
    }
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    let mut out = Map::new();
    for k in keys {
        out.insert(k.clone(), any_or_marker(&map[k]));
    }
    Some(Value::Object(out))
}

#[allow(deprecated)]
pub fn router(r: &Router) -> Value {
    Obj::default()
        .wbool("dynamic_stats", &r.dynamic_stats)
        .bool("start_child_span", r.start_child_span)
        .bool("suppress_envoy_headers", r.suppress_envoy_headers)
        .check(r, |r| {
            r.dynamic_stats = None;
            r.start_child_span = false;
            r.suppress_envoy_headers = false;
        })
        .done()
}

pub fn upstream_http_protocol_options(h: &HttpProtocolOptions) -> Value {
    use pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
        UpstreamProtocolOptions as U, explicit_http_config::ProtocolConfig,
    };
    let o = Obj::default().val(
        "common_http_protocol_options",
        h.common_http_protocol_options
            .as_ref()
            .map(common_http_options),
    );
    let o = match &h.upstream_protocol_options {
        Some(U::ExplicitHttpConfig(e)) => {
            let inner = match &e.protocol_config {
                Some(ProtocolConfig::HttpProtocolOptions(h1)) => {
                    Obj::default().val("http_protocol_options", Some(http1_options(h1)))
                }
                Some(ProtocolConfig::Http2ProtocolOptions(h2)) => {
                    Obj::default().val("http2_protocol_options", Some(http2_options(h2)))
                }
                Some(ProtocolConfig::Http3ProtocolOptions(_)) => Obj::default().val(
                    "http3_protocol_options",
                    Some(serde_json::json!({"@unrendered": true})),
                ),
                None => Obj::default(),
            };
            o.val("explicit_http_config", Some(inner.done()))
        }
        Some(U::UseDownstreamProtocolConfig(d)) => o.val(
            "use_downstream_protocol_config",
            Some(
                Obj::default()
                    .val(
                        "http_protocol_options",
                        d.http_protocol_options.as_ref().map(http1_options),
                    )
                    .val(
                        "http2_protocol_options",
                        d.http2_protocol_options.as_ref().map(http2_options),
                    )
                    .check(d, |d| {
                        d.http_protocol_options = None;
                        d.http2_protocol_options = None;
                    })
                    .done(),
            ),
        ),
        Some(U::AutoConfig(_)) => o.val(
            "auto_config",
            Some(serde_json::json!({"@unrendered": true})),
        ),
        None => o,
    };
    o.check(h, |h| {
        h.common_http_protocol_options = None;
        h.upstream_protocol_options = None;
    })
    .done()
}

// ---------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------

pub fn route_configuration(r: &route::RouteConfiguration) -> Value {
    Obj::default()
        .str("name", &r.name)
        .arr("virtual_hosts", &r.virtual_hosts, virtual_host)
        .arr(
            "response_headers_to_add",
            &r.response_headers_to_add,
            header_value_option,
        )
        .strs("response_headers_to_remove", &r.response_headers_to_remove)
        .arr(
            "request_headers_to_add",
            &r.request_headers_to_add,
            header_value_option,
        )
        .strs("request_headers_to_remove", &r.request_headers_to_remove)
        .bool(
            "most_specific_header_mutations_wins",
            r.most_specific_header_mutations_wins,
        )
        .wbool("validate_clusters", &r.validate_clusters)
        .bool(
            "ignore_port_in_host_matching",
            r.ignore_port_in_host_matching,
        )
        .check(r, |r| {
            r.name.clear();
            r.virtual_hosts.clear();
            r.response_headers_to_add.clear();
            r.response_headers_to_remove.clear();
            r.request_headers_to_add.clear();
            r.request_headers_to_remove.clear();
            r.most_specific_header_mutations_wins = false;
            r.validate_clusters = None;
            r.ignore_port_in_host_matching = false;
        })
        .done()
}

fn virtual_host(v: &route::VirtualHost) -> Value {
    Obj::default()
        .str("name", &v.name)
        .strs("domains", &v.domains)
        .arr("routes", &v.routes, route_entry)
        .arr(
            "request_headers_to_add",
            &v.request_headers_to_add,
            header_value_option,
        )
        .strs("request_headers_to_remove", &v.request_headers_to_remove)
        .arr(
            "response_headers_to_add",
            &v.response_headers_to_add,
            header_value_option,
        )
        .strs("response_headers_to_remove", &v.response_headers_to_remove)
        .bool(
            "include_request_attempt_count",
            v.include_request_attempt_count,
        )
        .val("metadata", metadata(&v.metadata))
        .enum_(
            "require_tls",
            v.require_tls,
            route::virtual_host::TlsRequirementType::try_from(v.require_tls)
                .ok()
                .map(|t| t.as_str_name()),
        )
        .check(v, |v| {
            v.require_tls = 0;
            v.name.clear();
            v.domains.clear();
            v.routes.clear();
            v.request_headers_to_add.clear();
            v.request_headers_to_remove.clear();
            v.response_headers_to_add.clear();
            v.response_headers_to_remove.clear();
            v.include_request_attempt_count = false;
            v.metadata = None;
        })
        .done()
}

fn route_entry(r: &route::Route) -> Value {
    use route::route::Action;
    let o = Obj::default()
        .str("name", &r.name)
        .val("match", r.r#match.as_ref().map(route_match));
    let o = match &r.action {
        Some(Action::Route(a)) => o.val("route", Some(route_action(a))),
        Some(Action::Redirect(rd)) => o.val("redirect", Some(redirect_action(rd))),
        Some(Action::DirectResponse(d)) => o.val("direct_response", Some(direct_response(d))),
        Some(Action::FilterAction(_)) => o.val(
            "filter_action",
            Some(serde_json::json!({"@unrendered": true})),
        ),
        Some(Action::NonForwardingAction(_)) => {
            o.val("non_forwarding_action", Some(Value::Object(Map::new())))
        }
        None => o,
    };
    o.val("metadata", metadata(&r.metadata))
        .val(
            "decorator",
            r.decorator.as_ref().map(|d| {
                Obj::default()
                    .str("operation", &d.operation)
                    .wbool("propagate", &d.propagate)
                    .done()
            }),
        )
        .arr(
            "request_headers_to_add",
            &r.request_headers_to_add,
            header_value_option,
        )
        .strs("request_headers_to_remove", &r.request_headers_to_remove)
        .arr(
            "response_headers_to_add",
            &r.response_headers_to_add,
            header_value_option,
        )
        .strs("response_headers_to_remove", &r.response_headers_to_remove)
        .val(
            "typed_per_filter_config",
            typed_per_filter_config(&r.typed_per_filter_config),
        )
        .check(r, |r| {
            r.typed_per_filter_config.clear();
            r.name.clear();
            r.r#match = None;
            r.action = None;
            r.metadata = None;
            r.decorator = None;
            r.request_headers_to_add.clear();
            r.request_headers_to_remove.clear();
            r.response_headers_to_add.clear();
            r.response_headers_to_remove.clear();
        })
        .done()
}

fn hash_policy(h: &route::route_action::HashPolicy) -> Value {
    use route::route_action::hash_policy::PolicySpecifier as P;
    let o = match &h.policy_specifier {
        Some(P::Header(hd)) => Obj::default().val(
            "header",
            Some(
                Obj::default()
                    .str("header_name", &hd.header_name)
                    .check(hd, |h| h.header_name.clear())
                    .done(),
            ),
        ),
        Some(P::Cookie(c)) => Obj::default().val(
            "cookie",
            Some(
                Obj::default()
                    .str("name", &c.name)
                    .dur("ttl", &c.ttl)
                    .str("path", &c.path)
                    .check(c, |c| {
                        c.name.clear();
                        c.ttl = None;
                        c.path.clear();
                    })
                    .done(),
            ),
        ),
        Some(P::ConnectionProperties(c)) => Obj::default().val(
            "connection_properties",
            Some(Obj::default().bool("source_ip", c.source_ip).done()),
        ),
        Some(P::QueryParameter(q)) => Obj::default().val(
            "query_parameter",
            Some(Obj::default().str("name", &q.name).done()),
        ),
        Some(P::FilterState(_)) => Obj::default().val(
            "filter_state",
            Some(serde_json::json!({"@unrendered": true})),
        ),
        None => Obj::default(),
    };
    o.bool("terminal", h.terminal).done()
}

fn regex_matcher(r: &matcher::RegexMatcher) -> Value {
    Obj::default()
        .val(
            "google_re2",
            r.engine_type.as_ref().map(|_| Value::Object(Map::new())),
        )
        .str("regex", &r.regex)
        .done()
}

fn string_matcher(s: &matcher::StringMatcher) -> Value {
    use matcher::string_matcher::MatchPattern as P;
    let o = match &s.match_pattern {
        Some(P::Exact(v)) => Obj::default().val("exact", Some(Value::String(v.clone()))),
        Some(P::Prefix(v)) => Obj::default().str("prefix", v),
        Some(P::Suffix(v)) => Obj::default().str("suffix", v),
        Some(P::Contains(v)) => Obj::default().str("contains", v),
        Some(P::SafeRegex(r)) => Obj::default().val("safe_regex", Some(regex_matcher(r))),
        Some(P::Custom(_)) => {
            Obj::default().val("custom", Some(serde_json::json!({"@unrendered": true})))
        }
        None => Obj::default(),
    };
    o.bool("ignore_case", s.ignore_case).done()
}

#[allow(deprecated)]
fn header_matcher(h: &route::HeaderMatcher) -> Value {
    use route::header_matcher::HeaderMatchSpecifier as S;
    let o = Obj::default().str("name", &h.name);
    let o = match &h.header_match_specifier {
        Some(S::ExactMatch(v)) => o.val("exact_match", Some(Value::String(v.clone()))),
        Some(S::SafeRegexMatch(r)) => o.val("safe_regex_match", Some(regex_matcher(r))),
        Some(S::RangeMatch(r)) => o.val(
            "range_match",
            Some(serde_json::json!({"start": r.start.to_string(), "end": r.end.to_string()})),
        ),
        Some(S::PresentMatch(p)) => o.val("present_match", Some(Value::Bool(*p))),
        Some(S::PrefixMatch(v)) => o.str("prefix_match", v),
        Some(S::SuffixMatch(v)) => o.str("suffix_match", v),
        Some(S::ContainsMatch(v)) => o.str("contains_match", v),
        Some(S::StringMatch(s)) => o.val("string_match", Some(string_matcher(s))),
        None => o,
    };
    o.bool("invert_match", h.invert_match)
        .bool(
            "treat_missing_header_as_empty",
            h.treat_missing_header_as_empty,
        )
        .done()
}

fn route_match(m: &route::RouteMatch) -> Value {
    use route::route_match::PathSpecifier as P;
    let o = match &m.path_specifier {
        Some(P::Prefix(p)) => Obj::default().val("prefix", Some(Value::String(p.clone()))),
        Some(P::Path(p)) => Obj::default().val("path", Some(Value::String(p.clone()))),
        Some(P::SafeRegex(r)) => Obj::default().val("safe_regex", Some(regex_matcher(r))),
        Some(P::PathSeparatedPrefix(p)) => {
            Obj::default().val("path_separated_prefix", Some(Value::String(p.clone())))
        }
        Some(P::ConnectMatcher(_)) => {
            Obj::default().val("connect_matcher", Some(Value::Object(Map::new())))
        }
        Some(P::PathMatchPolicy(_)) => Obj::default().val(
            "path_match_policy",
            Some(serde_json::json!({"@unrendered": true})),
        ),
        None => Obj::default(),
    };
    o.wbool("case_sensitive", &m.case_sensitive)
        .arr("headers", &m.headers, header_matcher)
        .arr("query_parameters", &m.query_parameters, |q| {
            use route::query_parameter_matcher::QueryParameterMatchSpecifier as Q;
            let o = Obj::default().str("name", &q.name);
            match &q.query_parameter_match_specifier {
                Some(Q::StringMatch(s)) => o.val("string_match", Some(string_matcher(s))),
                Some(Q::PresentMatch(p)) => o.val("present_match", Some(Value::Bool(*p))),
                None => o,
            }
            .done()
        })
        .check(m, |m| {
            m.path_specifier = None;
            m.case_sensitive = None;
            m.headers.clear();
            m.query_parameters.clear();
        })
        .done()
}

#[allow(deprecated)]
fn route_action(a: &route::RouteAction) -> Value {
    use route::route_action::{
        ClusterNotFoundResponseCode, ClusterSpecifier as C, HostRewriteSpecifier as H,
    };
    let o = match &a.cluster_specifier {
        Some(C::Cluster(c)) => Obj::default().str("cluster", c),
        Some(C::ClusterHeader(c)) => Obj::default().str("cluster_header", c),
        Some(C::WeightedClusters(w)) => Obj::default().val(
            "weighted_clusters",
            Some(
                Obj::default()
                    .arr("clusters", &w.clusters, |c| {
                        let o = Obj::default()
                            .str("name", &c.name)
                            .wu32("weight", &c.weight)
                            .arr("request_headers_to_add", &c.request_headers_to_add, header_value_option)
                            .strs("request_headers_to_remove", &c.request_headers_to_remove)
                            .arr("response_headers_to_add", &c.response_headers_to_add, header_value_option)
                            .strs("response_headers_to_remove", &c.response_headers_to_remove);
                        match &c.host_rewrite_specifier {
                            Some(route::weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral(h)) => {
                                o.str("host_rewrite_literal", h)
                            }
                            None => o,
                        }
                        .check(c, |c| {
                            c.name.clear();
                            c.weight = None;
                            c.request_headers_to_add.clear();
                            c.request_headers_to_remove.clear();
                            c.response_headers_to_add.clear();
                            c.response_headers_to_remove.clear();
                            c.host_rewrite_specifier = None;
                        })
                        .done()
                    })
                    .wu32("total_weight", &w.total_weight)
                    .check(w, |w| {
                        w.clusters.clear();
                        w.total_weight = None;
                    })
                    .done(),
            ),
        ),
        Some(_) => Obj::default().val("cluster_specifier_plugin", Some(serde_json::json!({"@unrendered": true}))),
        None => Obj::default(),
    };
    let o = o
        .enum_(
            "cluster_not_found_response_code",
            a.cluster_not_found_response_code,
            ClusterNotFoundResponseCode::try_from(a.cluster_not_found_response_code)
                .ok()
                .map(|c| c.as_str_name()),
        )
        .str("prefix_rewrite", &a.prefix_rewrite);
    let o = match &a.host_rewrite_specifier {
        Some(H::HostRewriteLiteral(h)) => o.str("host_rewrite_literal", h),
        Some(H::AutoHostRewrite(b)) => o.val("auto_host_rewrite", Some(Value::Bool(b.value))),
        Some(H::HostRewriteHeader(h)) => o.str("host_rewrite_header", h),
        Some(_) => o.val(
            "host_rewrite_path_regex",
            Some(serde_json::json!({"@unrendered": true})),
        ),
        None => o,
    };
    o.dur("timeout", &a.timeout)
        .dur("idle_timeout", &a.idle_timeout)
        .val(
            "max_stream_duration",
            a.max_stream_duration.as_ref().map(|m| {
                Obj::default()
                    .dur("max_stream_duration", &m.max_stream_duration)
                    .dur("grpc_timeout_header_max", &m.grpc_timeout_header_max)
                    .dur("grpc_timeout_header_offset", &m.grpc_timeout_header_offset)
                    .done()
            }),
        )
        .val(
            "retry_policy",
            a.retry_policy.as_ref().map(|r| {
                let codes: Vec<Value> = r
                    .retriable_status_codes
                    .iter()
                    .map(|c| Value::from(*c))
                    .collect();
                let o = Obj::default()
                    .str("retry_on", &r.retry_on)
                    .wu32("num_retries", &r.num_retries)
                    .dur("per_try_timeout", &r.per_try_timeout);
                let o = if codes.is_empty() {
                    o
                } else {
                    o.val("retriable_status_codes", Some(Value::Array(codes)))
                };
                o.arr("retriable_headers", &r.retriable_headers, header_matcher)
                    .check(r, |r| {
                        r.retry_on.clear();
                        r.num_retries = None;
                        r.per_try_timeout = None;
                        r.retriable_status_codes.clear();
                        r.retriable_headers.clear();
                    })
                    .done()
            }),
        )
        .arr("hash_policy", &a.hash_policy, hash_policy)
        .arr("request_mirror_policies", &a.request_mirror_policies, |m| {
            Obj::default()
                .str("cluster", &m.cluster)
                .val(
                    "runtime_fraction",
                    m.runtime_fraction.as_ref().map(runtime_fraction),
                )
                .check(m, |m| {
                    m.cluster.clear();
                    m.runtime_fraction = None;
                })
                .done()
        })
        .val(
            "regex_rewrite",
            a.regex_rewrite.as_ref().map(|r| {
                Obj::default()
                    .val("pattern", r.pattern.as_ref().map(regex_matcher))
                    .str("substitution", &r.substitution)
                    .done()
            }),
        )
        .check(a, |a| {
            a.cluster_specifier = None;
            a.cluster_not_found_response_code = 0;
            a.prefix_rewrite.clear();
            a.host_rewrite_specifier = None;
            a.timeout = None;
            a.idle_timeout = None;
            a.max_stream_duration = None;
            a.retry_policy = None;
            a.hash_policy.clear();
            a.request_mirror_policies.clear();
            a.regex_rewrite = None;
        })
        .done()
}

fn redirect_action(r: &route::RedirectAction) -> Value {
    use route::redirect_action::{
        PathRewriteSpecifier as P, RedirectResponseCode, SchemeRewriteSpecifier as S,
    };
    let o = match &r.scheme_rewrite_specifier {
        Some(S::HttpsRedirect(b)) => Obj::default().bool("https_redirect", *b),
        Some(S::SchemeRedirect(s)) => Obj::default().str("scheme_redirect", s),
        None => Obj::default(),
    };
    let o = o
        .str("host_redirect", &r.host_redirect)
        .u32("port_redirect", r.port_redirect);
    let o = match &r.path_rewrite_specifier {
        Some(P::PathRedirect(p)) => o.str("path_redirect", p),
        Some(P::PrefixRewrite(p)) => o.val("prefix_rewrite", Some(Value::String(p.clone()))),
        Some(P::PathRewrite(p)) => o.str("path_rewrite", p),
        Some(P::RegexRewrite(_)) => o.val(
            "regex_rewrite",
            Some(serde_json::json!({"@unrendered": true})),
        ),
        None => o,
    };
    o.enum_(
        "response_code",
        r.response_code,
        RedirectResponseCode::try_from(r.response_code)
            .ok()
            .map(|c| c.as_str_name()),
    )
    .bool("strip_query", r.strip_query)
    .done()
}

fn data_source(d: &core::DataSource) -> Value {
    use core::data_source::Specifier as S;
    match &d.specifier {
        Some(S::Filename(f)) => Obj::default().str("filename", f),
        Some(S::InlineBytes(b)) => Obj::default().str("inline_bytes", &base64(b)),
        Some(S::InlineString(s)) => {
            Obj::default().val("inline_string", Some(Value::String(s.clone())))
        }
        Some(S::EnvironmentVariable(e)) => Obj::default().str("environment_variable", e),
        None => Obj::default(),
    }
    .check(d, |d| d.specifier = None)
    .done()
}

fn direct_response(d: &route::DirectResponseAction) -> Value {
    Obj::default()
        .u32("status", d.status)
        .val("body", d.body.as_ref().map(data_source))
        .check(d, |d| {
            d.status = 0;
            d.body = None;
        })
        .done()
}

// ---------------------------------------------------------------------------
// Clusters and endpoints
// ---------------------------------------------------------------------------

#[allow(deprecated)]
pub fn cluster(c: &Cluster) -> Value {
    use cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy};
    let o = Obj::default()
        .str("name", &c.name)
        .str("alt_stat_name", &c.alt_stat_name);
    let o = match &c.cluster_discovery_type {
        // `type` is a oneof member: printed even at STATIC (0) when set.
        Some(ClusterDiscoveryType::Type(t)) => o.val(
            "type",
            Some(
                DiscoveryType::try_from(*t)
                    .map(|d| Value::String(d.as_str_name().into()))
                    .unwrap_or(Value::from(*t)),
            ),
        ),
        Some(ClusterDiscoveryType::ClusterType(_)) => o.val(
            "cluster_type",
            Some(serde_json::json!({"@unrendered": true})),
        ),
        None => o,
    };
    let mut protocol_options = Map::new();
    let mut keys: Vec<&String> = c.typed_extension_protocol_options.keys().collect();
    keys.sort();
    for k in keys {
        protocol_options.insert(
            k.clone(),
            any_or_marker(&c.typed_extension_protocol_options[k]),
        );
    }
    let mut o = o
        .val(
            "eds_cluster_config",
            c.eds_cluster_config.as_ref().map(|e| {
                Obj::default()
                    .val("eds_config", e.eds_config.as_ref().map(config_source))
                    .str("service_name", &e.service_name)
                    .done()
            }),
        )
        .dur("connect_timeout", &c.connect_timeout)
        .enum_(
            "lb_policy",
            c.lb_policy,
            LbPolicy::try_from(c.lb_policy)
                .ok()
                .map(|p| p.as_str_name()),
        )
        .val(
            "load_assignment",
            c.load_assignment.as_ref().map(cluster_load_assignment),
        )
        .val(
            "http2_protocol_options",
            c.http2_protocol_options.as_ref().map(http2_options),
        )
        .val(
            "transport_socket",
            c.transport_socket.as_ref().map(transport_socket),
        )
        .arr(
            "transport_socket_matches",
            &c.transport_socket_matches,
            |m| {
                Obj::default()
                    .str("name", &m.name)
                    .val(
                        "match",
                        m.r#match
                            .as_ref()
                            .map(|s| Value::Object(structs::from_struct(s))),
                    )
                    .val(
                        "transport_socket",
                        m.transport_socket.as_ref().map(transport_socket),
                    )
                    .check(m, |m| {
                        m.name.clear();
                        m.r#match = None;
                        m.transport_socket = None;
                    })
                    .done()
            },
        )
        .val("metadata", metadata(&c.metadata))
        .dur("dns_refresh_rate", &c.dns_refresh_rate)
        .bool("respect_dns_ttl", c.respect_dns_ttl)
        .enum_(
            "dns_lookup_family",
            c.dns_lookup_family,
            cluster::DnsLookupFamily::try_from(c.dns_lookup_family)
                .ok()
                .map(|f| f.as_str_name()),
        )
        .dur("cleanup_interval", &c.cleanup_interval)
        .val(
            "upstream_bind_config",
            c.upstream_bind_config.as_ref().map(|b| {
                Obj::default()
                    .val(
                        "source_address",
                        b.source_address.as_ref().map(|sa| {
                            let a = core::Address {
                                address: Some(core::address::Address::SocketAddress(sa.clone())),
                            };
                            address(&a)
                                .get("socket_address")
                                .cloned()
                                .unwrap_or_default()
                        }),
                    )
                    .wbool("freebind", &b.freebind)
                    .check(b, |b| {
                        b.source_address = None;
                        b.freebind = None;
                    })
                    .done()
            }),
        );
    if let Some(cluster::LbConfig::OriginalDstLbConfig(od)) = &c.lb_config {
        o = o.val(
            "original_dst_lb_config",
            Some(
                Obj::default()
                    .bool("use_http_header", od.use_http_header)
                    .str("http_header_name", &od.http_header_name)
                    .wu32("upstream_port_override", &od.upstream_port_override)
                    .check(od, |od| {
                        od.use_http_header = false;
                        od.http_header_name.clear();
                        od.upstream_port_override = None;
                    })
                    .done(),
            ),
        );
    }
    match &c.lb_config {
        Some(cluster::LbConfig::LeastRequestLbConfig(l)) => {
            o = o.val(
                "least_request_lb_config",
                Some(
                    Obj::default()
                        .wu32("choice_count", &l.choice_count)
                        .check(l, |l| l.choice_count = None)
                        .done(),
                ),
            );
        }
        Some(cluster::LbConfig::RingHashLbConfig(r)) => {
            let size = |v: &Option<pb::google::protobuf::UInt64Value>| {
                v.map(|v| Value::String(v.value.to_string()))
            };
            o = o.val(
                "ring_hash_lb_config",
                Some(
                    Obj::default()
                        .val("minimum_ring_size", size(&r.minimum_ring_size))
                        .val("maximum_ring_size", size(&r.maximum_ring_size))
                        .check(r, |r| {
                            r.minimum_ring_size = None;
                            r.maximum_ring_size = None;
                        })
                        .done(),
                ),
            );
        }
        Some(cluster::LbConfig::MaglevLbConfig(m)) => {
            o = o.val(
                "maglev_lb_config",
                Some(
                    Obj::default()
                        .val(
                            "table_size",
                            m.table_size.map(|v| Value::String(v.value.to_string())),
                        )
                        .done(),
                ),
            );
        }
        _ => {}
    }
    if let Some(common) = &c.common_lb_config {
        o = o.val(
            "common_lb_config",
            Some(
                Obj::default()
                    .val(
                        "healthy_panic_threshold",
                        common
                            .healthy_panic_threshold
                            .as_ref()
                            .map(|p| serde_json::json!({ "value": p.value })),
                    )
                    .val(
                        "locality_weighted_lb_config",
                        matches!(
                            common.locality_config_specifier,
                            Some(cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
                        )
                        .then(|| serde_json::json!({})),
                    )
                    .check(common, |c| {
                        c.healthy_panic_threshold = None;
                        if matches!(
                            c.locality_config_specifier,
                            Some(cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
                        ) {
                            c.locality_config_specifier = None;
                        }
                    })
                    .done(),
            ),
        );
    }
    if let Some(od) = &c.outlier_detection {
        o = o.val(
            "outlier_detection",
            Some(
                Obj::default()
                    .wu32("consecutive_5xx", &od.consecutive_5xx)
                    .dur("interval", &od.interval)
                    .dur("base_ejection_time", &od.base_ejection_time)
                    .wu32("max_ejection_percent", &od.max_ejection_percent)
                    .wu32("enforcing_consecutive_5xx", &od.enforcing_consecutive_5xx)
                    .wu32("enforcing_success_rate", &od.enforcing_success_rate)
                    .wu32(
                        "consecutive_gateway_failure",
                        &od.consecutive_gateway_failure,
                    )
                    .wu32(
                        "enforcing_consecutive_gateway_failure",
                        &od.enforcing_consecutive_gateway_failure,
                    )
                    .bool(
                        "split_external_local_origin_errors",
                        od.split_external_local_origin_errors,
                    )
                    .wu32(
                        "consecutive_local_origin_failure",
                        &od.consecutive_local_origin_failure,
                    )
                    .check(od, |od| {
                        od.consecutive_5xx = None;
                        od.interval = None;
                        od.base_ejection_time = None;
                        od.max_ejection_percent = None;
                        od.enforcing_consecutive_5xx = None;
                        od.enforcing_success_rate = None;
                        od.consecutive_gateway_failure = None;
                        od.enforcing_consecutive_gateway_failure = None;
                        od.split_external_local_origin_errors = false;
                        od.consecutive_local_origin_failure = None;
                    })
                    .done(),
            ),
        );
    }
    if !protocol_options.is_empty() {
        o.0.insert(
            "typed_extension_protocol_options".into(),
            Value::Object(protocol_options),
        );
    }
    if let Some(cb) = &c.circuit_breakers {
        o = o.val(
            "circuit_breakers",
            Some(
                Obj::default()
                    .arr("thresholds", &cb.thresholds, |t| {
                        Obj::default()
                            .wu32("max_connections", &t.max_connections)
                            .wu32("max_pending_requests", &t.max_pending_requests)
                            .wu32("max_requests", &t.max_requests)
                            .wu32("max_retries", &t.max_retries)
                            .check(t, |t| {
                                t.max_connections = None;
                                t.max_pending_requests = None;
                                t.max_requests = None;
                                t.max_retries = None;
                            })
                            .done()
                    })
                    .check(cb, |cb| cb.thresholds.clear())
                    .done(),
            ),
        );
    }
    o.check(c, |c| {
        c.name.clear();
        c.alt_stat_name.clear();
        c.cluster_discovery_type = None;
        c.eds_cluster_config = None;
        c.connect_timeout = None;
        c.lb_policy = 0;
        c.load_assignment = None;
        c.http2_protocol_options = None;
        c.transport_socket = None;
        c.transport_socket_matches.clear();
        c.metadata = None;
        c.typed_extension_protocol_options.clear();
        c.circuit_breakers = None;
        c.cleanup_interval = None;
        c.upstream_bind_config = None;
        c.dns_refresh_rate = None;
        c.respect_dns_ttl = false;
        c.dns_lookup_family = 0;
        if matches!(
            c.lb_config,
            Some(
                cluster::LbConfig::OriginalDstLbConfig(_)
                    | cluster::LbConfig::LeastRequestLbConfig(_)
                    | cluster::LbConfig::RingHashLbConfig(_)
                    | cluster::LbConfig::MaglevLbConfig(_)
            )
        ) {
            c.lb_config = None;
        }
        c.common_lb_config = None;
        c.outlier_detection = None;
    })
    .done()
}

pub fn cluster_load_assignment(c: &ClusterLoadAssignment) -> Value {
    Obj::default()
        .str("cluster_name", &c.cluster_name)
        .arr("endpoints", &c.endpoints, |l| {
            Obj::default()
                .val(
                    "locality",
                    l.locality.as_ref().map(|loc| {
                        Obj::default()
                            .str("region", &loc.region)
                            .str("zone", &loc.zone)
                            .str("sub_zone", &loc.sub_zone)
                            .done()
                    }),
                )
                .arr("lb_endpoints", &l.lb_endpoints, |e| {
                    let o = match &e.host_identifier {
                        Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => Obj::default().val(
                            "endpoint",
                            Some(
                                Obj::default()
                                    .val("address", ep.address.as_ref().map(address))
                                    .str("hostname", &ep.hostname)
                                    .check(ep, |ep| {
                                        ep.address = None;
                                        ep.hostname.clear();
                                    })
                                    .done(),
                            ),
                        ),
                        Some(lb_endpoint::HostIdentifier::EndpointName(n)) => {
                            Obj::default().str("endpoint_name", n)
                        }
                        None => Obj::default(),
                    };
                    o.enum_(
                        "health_status",
                        e.health_status,
                        core::HealthStatus::try_from(e.health_status)
                            .ok()
                            .map(|h| h.as_str_name()),
                    )
                    .val("metadata", metadata(&e.metadata))
                    .wu32("load_balancing_weight", &e.load_balancing_weight)
                    .done()
                })
                .wu32("load_balancing_weight", &l.load_balancing_weight)
                .u32("priority", l.priority)
                .check(l, |l| {
                    l.locality = None;
                    l.lb_endpoints.clear();
                    l.load_balancing_weight = None;
                    l.priority = 0;
                })
                .done()
        })
        .check(c, |c| {
            c.cluster_name.clear();
            c.endpoints.clear();
        })
        .done()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pack<T: Message + prost::Name>(m: &T) -> Any {
        crate::pack(m)
    }

    #[test]
    fn durations() {
        let d = |seconds, nanos| duration(&Duration { seconds, nanos });
        assert_eq!(d(10, 0), "10s");
        assert_eq!(d(0, 250_000_000), "0.250s");
        assert_eq!(d(1, 1_000), "1.000001s");
        assert_eq!(d(0, 1), "0.000000001s");
    }

    #[test]
    fn base64_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    #[test]
    fn listener_with_hcm() {
        let h = hcm::HttpConnectionManager {
            stat_prefix: "outbound_0.0.0.0_80".into(),
            codec_type: hcm::http_connection_manager::CodecType::Auto as i32,
            route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
                hcm::Rds {
                    config_source: Some(core::ConfigSource {
                        config_source_specifier: Some(
                            core::config_source::ConfigSourceSpecifier::Ads(
                                core::AggregatedConfigSource {},
                            ),
                        ),
                        resource_api_version: core::ApiVersion::V3 as i32,
                        ..Default::default()
                    }),
                    route_config_name: "80".into(),
                },
            )),
            http_filters: vec![hcm::HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack(
                    &Router::default(),
                ))),
                ..Default::default()
            }],
            http_protocol_options: Some(core::Http1ProtocolOptions {
                allow_absolute_url: Some(BoolValue { value: true }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let l = Listener {
            name: "0.0.0.0_80".into(),
            address: Some(core::Address {
                address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                    address: "0.0.0.0".into(),
                    port_specifier: Some(core::socket_address::PortSpecifier::PortValue(80)),
                    ..Default::default()
                })),
            }),
            filter_chains: vec![pb::envoy::config::listener::v3::FilterChain {
                filters: vec![pb::envoy::config::listener::v3::Filter {
                    name: "envoy.filters.network.http_connection_manager".into(),
                    config_type: Some(listener_filter::ConfigType::TypedConfig(pack(&h))),
                }],
                ..Default::default()
            }],
            traffic_direction: core::TrafficDirection::Outbound as i32,
            ..Default::default()
        };
        assert_eq!(
            listener(&l),
            json!({
                "name": "0.0.0.0_80",
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": 80}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "outbound_0.0.0.0_80",
                        "rds": {
                            "config_source": {"ads": {}, "resource_api_version": "V3"},
                            "route_config_name": "80"
                        },
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                        }],
                        "http_protocol_options": {"allow_absolute_url": true}
                    }
                }]}],
                "traffic_direction": "OUTBOUND"
            })
        );
    }

    #[test]
    fn cluster_and_unrendered_marker() {
        let c = Cluster {
            name: "outbound|80||b".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            )),
            connect_timeout: Some(Duration {
                seconds: 10,
                nanos: 0,
            }),
            lb_policy: cluster::LbPolicy::LeastRequest as i32,
            eds_cluster_config: Some(cluster::EdsClusterConfig {
                eds_config: None,
                service_name: "outbound|80||b".into(),
            }),
            health_checks: vec![Default::default()],
            ..Default::default()
        };
        assert_eq!(
            super::cluster(&c),
            json!({
                "name": "outbound|80||b",
                "type": "EDS",
                "eds_cluster_config": {"service_name": "outbound|80||b"},
                "connect_timeout": "10s",
                "lb_policy": "LEAST_REQUEST",
                "@unrendered": true
            })
        );
        let unknown = Any {
            type_url: "type.googleapis.com/x.Y".into(),
            value: vec![],
        };
        assert!(any(&unknown).is_none());
        assert_eq!(any_or_marker(&unknown)["@unrendered"], true);
    }

    #[test]
    #[allow(deprecated)] // Envoy still reads the DNS fields Istio emits.
    fn dns_cluster_and_require_tls() {
        let c = Cluster {
            name: "outbound|80||dns.example".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::StrictDns as i32,
            )),
            dns_lookup_family: cluster::DnsLookupFamily::V4Only as i32,
            dns_refresh_rate: Some(Duration {
                seconds: 30,
                nanos: 0,
            }),
            respect_dns_ttl: true,
            ..Default::default()
        };
        assert_eq!(
            super::cluster(&c),
            json!({
                "name": "outbound|80||dns.example",
                "type": "STRICT_DNS",
                "dns_lookup_family": "V4_ONLY",
                "dns_refresh_rate": "30s",
                "respect_dns_ttl": true
            })
        );
        let v = route::VirtualHost {
            name: "a:80".into(),
            domains: vec!["a".into()],
            require_tls: route::virtual_host::TlsRequirementType::ExternalOnly as i32,
            ..Default::default()
        };
        assert_eq!(
            virtual_host(&v),
            json!({"name": "a:80", "domains": ["a"], "require_tls": "EXTERNAL_ONLY"})
        );
    }

    #[test]
    fn capture_listener_and_original_dst_cluster() {
        use pb::envoy::config::listener::v3::{
            Filter, FilterChain, FilterChainMatch, ListenerFilter,
        };
        let tcp = |cluster: &str| Filter {
            name: "envoy.filters.network.tcp_proxy".into(),
            config_type: Some(
                pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(pack(
                    &tcp::TcpProxy {
                        stat_prefix: cluster.into(),
                        cluster_specifier: Some(tcp::tcp_proxy::ClusterSpecifier::Cluster(
                            cluster.into(),
                        )),
                        idle_timeout: Some(Duration {
                            seconds: 0,
                            nanos: 0,
                        }),
                        ..Default::default()
                    },
                )),
            ),
        };
        let l = Listener {
            name: "virtualInbound".into(),
            address: Some(core::Address {
                address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                    address: "0.0.0.0".into(),
                    port_specifier: Some(core::socket_address::PortSpecifier::PortValue(15006)),
                    ..Default::default()
                })),
            }),
            listener_filters: vec![ListenerFilter {
                name: "envoy.filters.listener.original_dst".into(),
                config_type: Some(
                    pb::envoy::config::listener::v3::listener_filter::ConfigType::TypedConfig(
                        pack(&OriginalDst {}),
                    ),
                ),
                ..Default::default()
            }],
            listener_filters_timeout: Some(Duration {
                seconds: 0,
                nanos: 100_000_000,
            }),
            continue_on_listener_filters_timeout: true,
            filter_chains: vec![FilterChain {
                name: "0.0.0.0_8080".into(),
                filter_chain_match: Some(FilterChainMatch {
                    destination_port: Some(UInt32Value { value: 8080 }),
                    prefix_ranges: vec![core::CidrRange {
                        address_prefix: "10.0.0.0".into(),
                        prefix_len: Some(UInt32Value { value: 8 }),
                    }],
                    transport_protocol: "raw_buffer".into(),
                    application_protocols: vec!["http/1.1".into(), "h2c".into()],
                    ..Default::default()
                }),
                filters: vec![tcp("inbound|8080||")],
                ..Default::default()
            }],
            default_filter_chain: Some(FilterChain {
                filters: vec![tcp("InboundPassthroughCluster")],
                ..Default::default()
            }),
            bind_to_port: Some(BoolValue { value: false }),
            use_original_dst: Some(BoolValue { value: true }),
            traffic_direction: core::TrafficDirection::Inbound as i32,
            ..Default::default()
        };
        let tcp_json = |c: &str| {
            json!({
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": c,
                    "cluster": c,
                    "idle_timeout": "0s"
                }
            })
        };
        assert_eq!(
            listener(&l),
            json!({
                "name": "virtualInbound",
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
                "filter_chains": [{
                    "filter_chain_match": {
                        "destination_port": 8080,
                        "prefix_ranges": [{"address_prefix": "10.0.0.0", "prefix_len": 8}],
                        "transport_protocol": "raw_buffer",
                        "application_protocols": ["http/1.1", "h2c"]
                    },
                    "filters": [tcp_json("inbound|8080||")],
                    "name": "0.0.0.0_8080"
                }],
                "default_filter_chain": {"filters": [tcp_json("InboundPassthroughCluster")]},
                "use_original_dst": true,
                "listener_filters": [{
                    "name": "envoy.filters.listener.original_dst",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"}
                }],
                "listener_filters_timeout": "0.100s",
                "continue_on_listener_filters_timeout": true,
                "bind_to_port": false,
                "traffic_direction": "INBOUND"
            })
        );
        let c = Cluster {
            name: "InboundPassthroughCluster".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::OriginalDst as i32,
            )),
            lb_policy: cluster::LbPolicy::ClusterProvided as i32,
            cleanup_interval: Some(Duration {
                seconds: 60,
                nanos: 0,
            }),
            upstream_bind_config: Some(core::BindConfig {
                source_address: Some(core::SocketAddress {
                    address: "127.0.0.6".into(),
                    port_specifier: Some(core::socket_address::PortSpecifier::PortValue(0)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            super::cluster(&c),
            json!({
                "name": "InboundPassthroughCluster",
                "type": "ORIGINAL_DST",
                "lb_policy": "CLUSTER_PROVIDED",
                "cleanup_interval": "60s",
                "upstream_bind_config": {"source_address": {"address": "127.0.0.6"}}
            })
        );
    }

    #[test]
    fn route_configuration_shape() {
        let rc = route::RouteConfiguration {
            name: "80".into(),
            virtual_hosts: vec![route::VirtualHost {
                name: "b:80".into(),
                domains: vec!["b".into(), "b:80".into()],
                routes: vec![route::Route {
                    name: "default".into(),
                    r#match: Some(route::RouteMatch {
                        path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
                        ..Default::default()
                    }),
                    action: Some(route::route::Action::Route(route::RouteAction {
                        cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster(
                            "c".into(),
                        )),
                        timeout: Some(Duration {
                            seconds: 0,
                            nanos: 0,
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            validate_clusters: Some(BoolValue { value: false }),
            ..Default::default()
        };
        assert_eq!(
            route_configuration(&rc),
            json!({
                "name": "80",
                "virtual_hosts": [{
                    "name": "b:80",
                    "domains": ["b", "b:80"],
                    "routes": [{
                        "name": "default",
                        "match": {"prefix": "/"},
                        "route": {"cluster": "c", "timeout": "0s"}
                    }]
                }],
                "validate_clusters": false
            })
        );
    }
}
