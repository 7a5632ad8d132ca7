//! Transport sockets: `envoy.transport_sockets.tls` (an
//! `UpstreamTlsContext` on clusters, a `DownstreamTlsContext` on filter
//! chains) and `envoy.transport_sockets.raw_buffer` (plaintext).
//!
//! Certificates come inline, from files read when the resource is compiled,
//! or from SDS. Two SDS shapes exist: the workload's own certificate
//! (`default`) and mesh roots (`ROOTCA`) that Istio's pilot-agent serves on
//! its Unix socket — mizzen-proxy plays that agent itself, so any GRPC
//! `api_config_source` naming them is answered from the proxy's
//! certificate manager — and Secrets delivered over the ADS stream
//! (`kubernetes://<credentialName>`). SDS references are only names here;
//! [`crate::tls`] looks them up at handshake time.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use mizzen_xds::pb;
use pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
use pb::envoy::config::core::v3::{
    ApiConfigSource, DataSource, TransportSocket, api_config_source, config_source, data_source,
    transport_socket,
};
use pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    TlsCertificate, TlsParameters, UpstreamTlsContext, common_tls_context, secret,
    tls_parameters::TlsProtocol,
};
use pb::google::protobuf::{Struct, Value};
use prost::Message;
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, SupportedProtocolVersion};

use super::check::reject_unknown;
use super::matcher::{StringMatch, string_match};
use super::{ConfigError, Scope, fields, join, type_name, unpack};

pub const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
pub const RAW_BUFFER: &str = "envoy.transport_sockets.raw_buffer";
const UPSTREAM_TLS_TYPE: &str = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const DOWNSTREAM_TLS_TYPE: &str = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const RAW_BUFFER_TYPE: &str = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";
/// The endpoint metadata namespace `transport_socket_matches` look at.
pub const TRANSPORT_SOCKET_MATCH_KEY: &str = "envoy.transport_socket_match";
/// The SDS names Istio's pilot-agent serves: the workload certificate and
/// the mesh roots.
pub const WORKLOAD_SECRET: &str = "default";
pub const ROOT_CA_SECRET: &str = "ROOTCA";

/// A secret named by an `SdsSecretConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecretRef {
    /// `default`: the proxy's workload certificate and key.
    Workload,
    /// `ROOTCA`: the mesh root bundle that came with the workload certificate.
    RootCa,
    /// A Secret delivered over ADS, by resource name.
    Ads(Arc<str>),
}

impl SecretRef {
    pub fn name(&self) -> &str {
        match self {
            SecretRef::Workload => WORKLOAD_SECRET,
            SecretRef::RootCa => ROOT_CA_SECRET,
            SecretRef::Ads(name) => name,
        }
    }
}

/// Trust anchors with the certificates they came from (for `/certs`).
#[derive(Debug)]
pub struct Roots {
    pub store: Arc<RootCertStore>,
    pub certs: Vec<CertificateDer<'static>>,
}

impl Roots {
    pub fn from_pem(pem: &str) -> Result<Roots, String> {
        let certs = mizzen_identity::x509::parse_certs_pem(pem).map_err(|e| e.to_string())?;
        Roots::from_der(certs)
    }

    pub fn from_der(certs: Vec<CertificateDer<'static>>) -> Result<Roots, String> {
        let mut store = RootCertStore::empty();
        for c in &certs {
            store
                .add(c.clone())
                .map_err(|e| format!("invalid trust anchor: {e}"))?;
        }
        Ok(Roots {
            store: Arc::new(store),
            certs,
        })
    }
}

/// Where a certificate to present comes from.
#[derive(Debug, Clone)]
pub enum CertificateSource {
    Static(Arc<CertifiedKey>),
    Sds(SecretRef),
}

/// Where trust anchors come from.
#[derive(Debug, Clone)]
pub enum RootsSource {
    Static(Arc<Roots>),
    Sds(SecretRef),
}

/// Which SAN kinds a subject-alt-name matcher looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanKind {
    /// `match_subject_alt_names`: any of the names (URI and DNS here).
    Any,
    Uri,
    Dns,
}

/// Peer verification: a chain to the roots and, when matchers are given,
/// one subject alt name matching one of them.
#[derive(Debug, Clone)]
pub struct Validation {
    pub roots: RootsSource,
    pub subject_alt_names: Vec<(SanKind, StringMatch)>,
}

impl Validation {
    /// Whether a peer with these SANs passes the matchers.
    pub fn san_matches(&self, uris: &[String], dns: &[String]) -> bool {
        if self.subject_alt_names.is_empty() {
            return true;
        }
        self.subject_alt_names.iter().any(|(kind, m)| {
            let uri =
                matches!(kind, SanKind::Any | SanKind::Uri) && uris.iter().any(|u| m.matches(u));
            let dns =
                matches!(kind, SanKind::Any | SanKind::Dns) && dns.iter().any(|d| m.matches(d));
            uri || dns
        })
    }
}

/// `CommonTlsContext`, compiled.
#[derive(Debug)]
pub struct CommonTls {
    pub versions: Vec<&'static SupportedProtocolVersion>,
    /// The crypto provider restricted to the configured cipher suites.
    pub provider: Arc<CryptoProvider>,
    pub alpn: Vec<Vec<u8>>,
    /// In config order. A server presents the first whose key suits the
    /// client's signature schemes; a client presents the first.
    pub certificates: Vec<CertificateSource>,
    pub validation: Option<Validation>,
}

impl CommonTls {
    /// Every SDS secret this context needs.
    pub fn secret_refs(&self) -> impl Iterator<Item = &SecretRef> {
        let certs = self.certificates.iter().filter_map(|c| match c {
            CertificateSource::Sds(r) => Some(r),
            CertificateSource::Static(_) => None,
        });
        let roots = self.validation.iter().filter_map(|v| match &v.roots {
            RootsSource::Sds(r) => Some(r),
            RootsSource::Static(_) => None,
        });
        certs.chain(roots)
    }
}

/// A cluster's TLS origination settings.
#[derive(Debug)]
pub struct UpstreamTls {
    /// `sni`; without it no SNI is sent.
    pub sni: Option<ServerName<'static>>,
    pub common: CommonTls,
    /// Hash of the source proto: identical settings compare equal across
    /// config updates, so hosts (and their pools) survive CDS pushes.
    pub key: u64,
    pub(crate) cache: crate::tls::ConfigCache<rustls::ClientConfig>,
}

/// A filter chain's TLS termination settings.
#[derive(Debug)]
pub struct DownstreamTls {
    pub require_client_certificate: bool,
    pub common: CommonTls,
    pub(crate) cache: crate::tls::ConfigCache<rustls::ServerConfig>,
}

/// One `transport_socket_matches` entry: the metadata fields to match and
/// the socket (`None`: plaintext).
pub type SocketMatch = (BTreeMap<String, Value>, Option<Arc<UpstreamTls>>);

/// A cluster's transport sockets: the default, and the per-endpoint
/// `transport_socket_matches`.
#[derive(Debug)]
pub struct ClusterTransport {
    /// `transport_socket`; `None` is plaintext.
    pub default: Option<Arc<UpstreamTls>>,
    /// `transport_socket_matches` in order: the fields an endpoint's
    /// `envoy.transport_socket_match` metadata must have, and the socket.
    pub matches: Vec<SocketMatch>,
    key: u64,
}

impl PartialEq for ClusterTransport {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for ClusterTransport {}

impl ClusterTransport {
    /// The socket for an endpoint with this `filter_metadata`: the first
    /// match whose fields the endpoint's `envoy.transport_socket_match`
    /// metadata all has with equal values, else the cluster's default.
    pub fn select(&self, metadata: Option<&Struct>) -> Option<&Arc<UpstreamTls>> {
        for (fields, socket) in &self.matches {
            let all = fields.iter().all(|(k, v)| {
                metadata
                    .and_then(|m| m.fields.get(k))
                    .is_some_and(|have| have == v)
            });
            if all {
                return socket.as_ref();
            }
        }
        self.default.as_ref()
    }

    /// Whether the socket depends on endpoint metadata.
    pub fn has_matches(&self) -> bool {
        !self.matches.is_empty()
    }

    pub fn secret_refs(&self) -> impl Iterator<Item = &SecretRef> {
        self.default
            .iter()
            .chain(self.matches.iter().filter_map(|(_, s)| s.as_ref()))
            .flat_map(|t| t.common.secret_refs())
    }
}

fn proto_hash(parts: &[&[u8]]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

/// A cluster's `transport_socket` and `transport_socket_matches`; `None`
/// when every endpoint gets plaintext.
pub(crate) fn cluster_transport(
    scope: &Scope,
    socket: Option<&TransportSocket>,
    matches: &[TransportSocketMatch],
) -> Result<Option<Arc<ClusterTransport>>, ConfigError> {
    let default = match socket {
        Some(ts) => upstream_socket(scope, "transport_socket", ts)?,
        None => None,
    };
    let mut compiled = Vec::with_capacity(matches.len());
    for (i, m) in matches.iter().enumerate() {
        let path = format!("transport_socket_matches[{i}]");
        reject_unknown(scope, &path, m, fields::TRANSPORT_SOCKET_MATCH, |m| {
            m.name.clear();
            m.r#match = None;
            m.transport_socket = None;
        })?;
        let socket = match &m.transport_socket {
            Some(ts) => upstream_socket(scope, &join(&path, "transport_socket"), ts)?,
            None => None,
        };
        let fields: BTreeMap<String, Value> = m
            .r#match
            .as_ref()
            .map(|s| s.fields.clone().into_iter().collect())
            .unwrap_or_default();
        compiled.push((fields, socket));
    }
    if default.is_none() && compiled.iter().all(|(_, s)| s.is_none()) {
        return Ok(None);
    }
    let mut bytes: Vec<Vec<u8>> = vec![socket.map(|s| s.encode_to_vec()).unwrap_or_default()];
    bytes.extend(matches.iter().map(|m| m.encode_to_vec()));
    let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    Ok(Some(Arc::new(ClusterTransport {
        default,
        matches: compiled,
        key: proto_hash(&refs),
    })))
}

/// What a `TransportSocket` is, by its typed config or else its name.
enum SocketKind<'a> {
    Raw,
    Tls(&'a pb::google::protobuf::Any),
}

fn socket_kind<'a>(
    scope: &Scope,
    path: &str,
    ts: &'a TransportSocket,
) -> Result<SocketKind<'a>, ConfigError> {
    reject_unknown(scope, path, ts, fields::TRANSPORT_SOCKET, |t| {
        t.name.clear();
        t.config_type = None;
    })?;
    let tpath = join(path, "typed_config");
    match &ts.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) => match type_name(&any.type_url) {
            RAW_BUFFER_TYPE => {
                let raw: RawBuffer = unpack(scope, &tpath, any)?;
                reject_unknown(scope, &tpath, &raw, &[], |_| {})?;
                Ok(SocketKind::Raw)
            }
            UPSTREAM_TLS_TYPE | DOWNSTREAM_TLS_TYPE => Ok(SocketKind::Tls(any)),
            other => Err(scope.unsupported(format!("{path} {} ({other})", ts.name))),
        },
        None if ts.name == RAW_BUFFER => Ok(SocketKind::Raw),
        None if ts.name == TLS_SOCKET => Err(scope.missing(tpath)),
        None if ts.name.is_empty() => Err(scope.unsupported(format!("{path} (unnamed)"))),
        None => Err(scope.unsupported(format!("{path} {}", ts.name))),
    }
}

fn upstream_socket(
    scope: &Scope,
    path: &str,
    ts: &TransportSocket,
) -> Result<Option<Arc<UpstreamTls>>, ConfigError> {
    tls_socket(scope, path, ts, UPSTREAM_TLS_TYPE, upstream_tls)
}

/// A filter chain's `transport_socket`; `None` for plaintext.
pub(crate) fn downstream_socket(
    scope: &Scope,
    path: &str,
    ts: &TransportSocket,
) -> Result<Option<Arc<DownstreamTls>>, ConfigError> {
    tls_socket(scope, path, ts, DOWNSTREAM_TLS_TYPE, downstream_tls)
}

/// A transport socket on the side whose TLS context is `expected` (the
/// other side's context is an error); `None` for plaintext.
fn tls_socket<C, T>(
    scope: &Scope,
    path: &str,
    ts: &TransportSocket,
    expected: &str,
    compile: fn(&Scope, &str, &C) -> Result<T, ConfigError>,
) -> Result<Option<Arc<T>>, ConfigError>
where
    C: prost::Message + prost::Name + Default,
{
    match socket_kind(scope, path, ts)? {
        SocketKind::Raw => Ok(None),
        SocketKind::Tls(any) => {
            let tpath = join(path, "typed_config");
            if type_name(&any.type_url) != expected {
                return Err(
                    scope.invalid(tpath, format!("expected {expected}, got {}", any.type_url))
                );
            }
            let ctx: C = unpack(scope, &tpath, any)?;
            Ok(Some(Arc::new(compile(scope, &tpath, &ctx)?)))
        }
    }
}

pub(crate) fn upstream_tls(
    scope: &Scope,
    path: &str,
    ctx: &UpstreamTlsContext,
) -> Result<UpstreamTls, ConfigError> {
    reject_unknown(scope, path, ctx, fields::UPSTREAM_TLS_CONTEXT, |c| {
        c.common_tls_context = None;
        c.sni.clear();
    })?;
    let sni = if ctx.sni.is_empty() {
        None
    } else {
        Some(
            ServerName::try_from(ctx.sni.clone())
                .map_err(|_| scope.invalid(join(path, "sni"), "not a valid server name"))?,
        )
    };
    let common = common_tls(
        scope,
        &join(path, "common_tls_context"),
        ctx.common_tls_context.as_ref(),
        Side::Client,
    )?;
    Ok(UpstreamTls {
        sni,
        common,
        key: proto_hash(&[&ctx.encode_to_vec()]),
        cache: Default::default(),
    })
}

pub(crate) fn downstream_tls(
    scope: &Scope,
    path: &str,
    ctx: &DownstreamTlsContext,
) -> Result<DownstreamTls, ConfigError> {
    reject_unknown(scope, path, ctx, fields::DOWNSTREAM_TLS_CONTEXT, |c| {
        c.common_tls_context = None;
        c.require_client_certificate = None;
    })?;
    let cpath = join(path, "common_tls_context");
    let common = common_tls(scope, &cpath, ctx.common_tls_context.as_ref(), Side::Server)?;
    if common.certificates.is_empty() {
        return Err(scope.invalid(
            cpath,
            "a server needs a certificate (tls_certificates or tls_certificate_sds_secret_configs)",
        ));
    }
    let require_client_certificate = ctx.require_client_certificate.is_some_and(|b| b.value);
    if require_client_certificate && common.validation.is_none() {
        return Err(scope.invalid(
            join(path, "require_client_certificate"),
            "client certificates can only be required with a validation context",
        ));
    }
    Ok(DownstreamTls {
        require_client_certificate,
        common,
        cache: Default::default(),
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

fn common_tls(
    scope: &Scope,
    path: &str,
    ctx: Option<&CommonTlsContext>,
    side: Side,
) -> Result<CommonTls, ConfigError> {
    let default = CommonTlsContext::default();
    let ctx = ctx.unwrap_or(&default);
    reject_unknown(scope, path, ctx, fields::COMMON_TLS_CONTEXT, |c| {
        c.tls_params = None;
        c.tls_certificates.clear();
        c.tls_certificate_sds_secret_configs.clear();
        c.alpn_protocols.clear();
        use common_tls_context::ValidationContextType as V;
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
    })?;
    let (versions, provider) = tls_params(
        scope,
        &join(path, "tls_params"),
        ctx.tls_params.as_ref(),
        side,
    )?;
    let mut certificates = Vec::new();
    for (i, c) in ctx.tls_certificates.iter().enumerate() {
        let cpath = join(path, &format!("tls_certificates[{i}]"));
        certificates.push(CertificateSource::Static(tls_certificate(
            scope, &cpath, c,
        )?));
    }
    for (i, s) in ctx.tls_certificate_sds_secret_configs.iter().enumerate() {
        let spath = join(path, &format!("tls_certificate_sds_secret_configs[{i}]"));
        let r = sds_secret(scope, &spath, s)?;
        if r == SecretRef::RootCa {
            return Err(scope.invalid(
                join(&spath, "name"),
                "ROOTCA holds trust anchors, not a certificate to present",
            ));
        }
        certificates.push(CertificateSource::Sds(r));
    }
    use common_tls_context::ValidationContextType as V;
    let validation = match &ctx.validation_context_type {
        None => None,
        Some(V::ValidationContext(v)) => {
            let vpath = join(path, "validation_context");
            let (roots, sans) = validation_context(scope, &vpath, v, true)?;
            let Some(roots) = roots else {
                return Err(scope.missing(join(&vpath, "trusted_ca")));
            };
            Some(Validation {
                roots: RootsSource::Static(roots),
                subject_alt_names: sans,
            })
        }
        Some(V::ValidationContextSdsSecretConfig(s)) => {
            let spath = join(path, "validation_context_sds_secret_config");
            Some(Validation {
                roots: RootsSource::Sds(validation_sds(scope, &spath, s)?),
                subject_alt_names: Vec::new(),
            })
        }
        Some(V::CombinedValidationContext(c)) => {
            let cpath = join(path, "combined_validation_context");
            reject_unknown(scope, &cpath, c, fields::COMBINED_VALIDATION_CONTEXT, |c| {
                c.default_validation_context = None;
                c.validation_context_sds_secret_config = None;
            })?;
            let sans = match &c.default_validation_context {
                Some(v) => {
                    validation_context(
                        scope,
                        &join(&cpath, "default_validation_context"),
                        v,
                        false,
                    )?
                    .1
                }
                None => Vec::new(),
            };
            let Some(s) = &c.validation_context_sds_secret_config else {
                return Err(scope.missing(join(&cpath, "validation_context_sds_secret_config")));
            };
            let spath = join(&cpath, "validation_context_sds_secret_config");
            Some(Validation {
                roots: RootsSource::Sds(validation_sds(scope, &spath, s)?),
                subject_alt_names: sans,
            })
        }
        Some(_) => unreachable!("cleared above only for the supported variants"),
    };
    Ok(CommonTls {
        versions,
        provider,
        alpn: ctx
            .alpn_protocols
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect(),
        certificates,
        validation,
    })
}

fn validation_sds(
    scope: &Scope,
    path: &str,
    s: &SdsSecretConfig,
) -> Result<SecretRef, ConfigError> {
    let r = sds_secret(scope, path, s)?;
    if r == SecretRef::Workload {
        return Err(scope.invalid(
            join(path, "name"),
            "default is the workload certificate, not trust anchors (ROOTCA)",
        ));
    }
    Ok(r)
}

/// `trusted_ca` and the subject alt name matchers of a validation context.
/// `allow_ca` is false for a combined context's default part, whose trust
/// anchors come from SDS.
#[allow(clippy::type_complexity)]
fn validation_context(
    scope: &Scope,
    path: &str,
    v: &CertificateValidationContext,
    allow_ca: bool,
) -> Result<(Option<Arc<Roots>>, Vec<(SanKind, StringMatch)>), ConfigError> {
    reject_unknown(
        scope,
        path,
        v,
        fields::CERTIFICATE_VALIDATION_CONTEXT,
        |v| {
            if allow_ca {
                v.trusted_ca = None;
            }
            v.match_subject_alt_names.clear();
            v.match_typed_subject_alt_names.clear();
        },
    )?;
    let roots = match &v.trusted_ca {
        Some(ds) => {
            let tpath = join(path, "trusted_ca");
            let pem = data_source(scope, &tpath, ds)?;
            let pem = String::from_utf8(pem).map_err(|_| scope.invalid(&tpath, "not PEM text"))?;
            Some(Arc::new(
                Roots::from_pem(&pem).map_err(|e| scope.invalid(&tpath, e))?,
            ))
        }
        None => None,
    };
    let mut sans = Vec::new();
    for (i, m) in v.match_subject_alt_names.iter().enumerate() {
        let mpath = join(path, &format!("match_subject_alt_names[{i}]"));
        sans.push((SanKind::Any, string_match(scope, &mpath, m)?));
    }
    for (i, m) in v.match_typed_subject_alt_names.iter().enumerate() {
        let mpath = join(path, &format!("match_typed_subject_alt_names[{i}]"));
        reject_unknown(scope, &mpath, m, fields::SUBJECT_ALT_NAME_MATCHER, |m| {
            m.san_type = 0;
            m.matcher = None;
        })?;
        use pb::envoy::extensions::transport_sockets::tls::v3::subject_alt_name_matcher::SanType;
        let kind = match SanType::try_from(m.san_type) {
            Ok(SanType::Uri) => SanKind::Uri,
            Ok(SanType::Dns) => SanKind::Dns,
            _ => return Err(scope.unsupported(join(&mpath, "san_type"))),
        };
        let Some(matcher) = &m.matcher else {
            return Err(scope.missing(join(&mpath, "matcher")));
        };
        sans.push((
            kind,
            string_match(scope, &join(&mpath, "matcher"), matcher)?,
        ));
    }
    Ok((roots, sans))
}

/// An `SdsSecretConfig`: the workload secrets from the built-in agent
/// (any GRPC `api_config_source`, as Istio's `sds-grpc`), or a Secret over ADS.
pub(crate) fn sds_secret(
    scope: &Scope,
    path: &str,
    s: &SdsSecretConfig,
) -> Result<SecretRef, ConfigError> {
    reject_unknown(scope, path, s, fields::SDS_SECRET_CONFIG, |s| {
        s.name.clear();
        s.sds_config = None;
    })?;
    if s.name.is_empty() {
        return Err(scope.missing(join(path, "name")));
    }
    let cpath = join(path, "sds_config");
    let Some(cs) = &s.sds_config else {
        return Err(scope.missing(cpath));
    };
    reject_unknown(scope, &cpath, cs, fields::CONFIG_SOURCE, |c| {
        c.config_source_specifier = None;
        c.resource_api_version = 0;
        c.initial_fetch_timeout = None;
    })?;
    use pb::envoy::config::core::v3::ApiVersion;
    if cs.resource_api_version != ApiVersion::Auto as i32
        && cs.resource_api_version != ApiVersion::V3 as i32
    {
        return Err(scope.unsupported(join(&cpath, "resource_api_version")));
    }
    match &cs.config_source_specifier {
        Some(config_source::ConfigSourceSpecifier::Ads(_)) => {
            Ok(SecretRef::Ads(Arc::from(s.name.as_str())))
        }
        Some(config_source::ConfigSourceSpecifier::ApiConfigSource(api)) => {
            let apath = join(&cpath, "api_config_source");
            agent_source(scope, &apath, api)?;
            match s.name.as_str() {
                WORKLOAD_SECRET => Ok(SecretRef::Workload),
                ROOT_CA_SECRET => Ok(SecretRef::RootCa),
                other => Err(scope.unsupported(format!(
                    "{} {other:?} (the built-in SDS agent serves only {WORKLOAD_SECRET:?} and {ROOT_CA_SECRET:?})",
                    join(path, "name")
                ))),
            }
        }
        Some(_) => {
            Err(scope.unsupported(format!("{cpath} (only ads or a GRPC api_config_source)")))
        }
        None => Err(scope.missing(join(&cpath, "ads"))),
    }
}

/// Istio's pilot-agent source: `api_type: GRPC` with gRPC services (the
/// cluster is the agent's socket, which this proxy stands in for).
fn agent_source(scope: &Scope, path: &str, api: &ApiConfigSource) -> Result<(), ConfigError> {
    reject_unknown(scope, path, api, fields::API_CONFIG_SOURCE, |a| {
        a.api_type = 0;
        a.grpc_services.clear();
        a.set_node_on_first_message_only = false;
        a.transport_api_version = 0;
    })?;
    if api.api_type != api_config_source::ApiType::Grpc as i32 {
        return Err(scope.unsupported(join(path, "api_type")));
    }
    Ok(())
}

fn tls_certificate(
    scope: &Scope,
    path: &str,
    c: &TlsCertificate,
) -> Result<Arc<CertifiedKey>, ConfigError> {
    reject_unknown(scope, path, c, fields::TLS_CERTIFICATE, |c| {
        c.certificate_chain = None;
        c.private_key = None;
    })?;
    let chain = match &c.certificate_chain {
        Some(ds) => data_source(scope, &join(path, "certificate_chain"), ds)?,
        None => return Err(scope.missing(join(path, "certificate_chain"))),
    };
    let key = match &c.private_key {
        Some(ds) => data_source(scope, &join(path, "private_key"), ds)?,
        None => return Err(scope.missing(join(path, "private_key"))),
    };
    certified_key(&chain, &key).map_err(|e| scope.invalid(path, e))
}

/// A PEM chain and key as rustls wants them, checked to belong together.
pub(crate) fn certified_key(chain: &[u8], key: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let chain =
        std::str::from_utf8(chain).map_err(|_| "certificate_chain is not PEM text".to_string())?;
    let key = std::str::from_utf8(key).map_err(|_| "private_key is not PEM text".to_string())?;
    let certs = mizzen_identity::x509::parse_certs_pem(chain).map_err(|e| e.to_string())?;
    let key = mizzen_identity::x509::parse_key_pem(key).map_err(|e| e.to_string())?;
    let certified = CertifiedKey::from_der(certs, key, &mizzen_identity::crypto_provider())
        .map_err(|e| format!("certificate and key: {e}"))?;
    Ok(Arc::new(certified))
}

/// The bytes of a `DataSource`; files are read now, as Envoy reads them
/// when the resource is loaded.
fn data_source(scope: &Scope, path: &str, ds: &DataSource) -> Result<Vec<u8>, ConfigError> {
    reject_unknown(scope, path, ds, fields::DATA_SOURCE, |d| {
        if !matches!(
            d.specifier,
            Some(data_source::Specifier::EnvironmentVariable(_))
        ) {
            d.specifier = None;
        }
    })?;
    match &ds.specifier {
        Some(data_source::Specifier::Filename(f)) => std::fs::read(f)
            .map_err(|e| scope.invalid(join(path, "filename"), format!("cannot read {f}: {e}"))),
        Some(data_source::Specifier::InlineBytes(b)) => Ok(b.clone()),
        Some(data_source::Specifier::InlineString(s)) => Ok(s.as_bytes().to_vec()),
        Some(data_source::Specifier::EnvironmentVariable(_)) => {
            Err(scope.unsupported(join(path, "environment_variable")))
        }
        None => Err(scope.missing(join(path, "filename"))),
    }
}

/// Protocol versions and cipher suites. Envoy's defaults: TLS 1.2 to 1.2
/// for clients, 1.2 to 1.3 for servers. `cipher_suites` only constrains
/// TLS 1.2, as in BoringSSL; names rustls does not implement (non-ECDHE or
/// CBC suites) are left out rather than refused, so that Istio's default
/// gateway list still loads.
fn tls_params(
    scope: &Scope,
    path: &str,
    p: Option<&TlsParameters>,
    side: Side,
) -> Result<(Vec<&'static SupportedProtocolVersion>, Arc<CryptoProvider>), ConfigError> {
    let base = mizzen_identity::crypto_provider();
    let default_max = match side {
        Side::Client => TlsProtocol::TlSv12,
        Side::Server => TlsProtocol::TlSv13,
    };
    let Some(p) = p else {
        return Ok((versions(TlsProtocol::TlSv12, default_max), base));
    };
    reject_unknown(scope, path, p, fields::TLS_PARAMETERS, |p| {
        p.tls_minimum_protocol_version = 0;
        p.tls_maximum_protocol_version = 0;
        p.cipher_suites.clear();
        p.ecdh_curves.clear();
    })?;
    let version = |field: &str, v: i32, default: TlsProtocol| match TlsProtocol::try_from(v) {
        Ok(TlsProtocol::TlsAuto) => Ok(default),
        Ok(p) => Ok(p),
        Err(_) => Err(scope.invalid(join(path, field), "unknown enum value")),
    };
    let min = version(
        "tls_minimum_protocol_version",
        p.tls_minimum_protocol_version,
        TlsProtocol::TlSv12,
    )?;
    let max = version(
        "tls_maximum_protocol_version",
        p.tls_maximum_protocol_version,
        default_max,
    )?;
    if max < TlsProtocol::TlSv12 {
        return Err(scope.invalid(
            join(path, "tls_maximum_protocol_version"),
            "TLS versions below 1.2 are not implemented",
        ));
    }
    if min > max {
        return Err(scope.invalid(
            join(path, "tls_minimum_protocol_version"),
            "greater than tls_maximum_protocol_version",
        ));
    }
    let mut provider = (*base).clone();
    if !p.cipher_suites.is_empty() {
        let mut wanted = Vec::new();
        for entry in &p.cipher_suites {
            for name in entry.trim_matches(|c| c == '[' || c == ']').split('|') {
                match cipher_suite(name.trim()) {
                    Some(Some(s)) => wanted.push(s),
                    Some(None) => tracing::debug!(name, "cipher suite not implemented, skipped"),
                    None => {
                        return Err(scope.invalid(
                            join(path, "cipher_suites"),
                            format!("unknown cipher suite {name:?}"),
                        ));
                    }
                }
            }
        }
        let tls13: Vec<_> = base
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .copied()
            .collect();
        let tls12: Vec<_> = wanted
            .iter()
            .filter_map(|w| base.cipher_suites.iter().find(|s| s.suite() == *w).copied())
            .collect();
        if tls12.is_empty() && min <= TlsProtocol::TlSv12 && max == TlsProtocol::TlSv12 {
            return Err(scope.invalid(
                join(path, "cipher_suites"),
                "no implemented TLS 1.2 cipher suite left",
            ));
        }
        provider.cipher_suites = tls13.into_iter().chain(tls12).collect();
    }
    if !p.ecdh_curves.is_empty() {
        // In the configured order, which is the order of preference.
        let mut groups = Vec::new();
        for name in &p.ecdh_curves {
            match named_group(name.trim()) {
                Some(Some(g)) => match base.kx_groups.iter().find(|k| k.name() == g) {
                    Some(kx) if !groups.iter().any(|k: &&dyn SupportedKxGroup| k.name() == g) => {
                        groups.push(*kx)
                    }
                    Some(_) => {}
                    None => tracing::debug!(name, "ECDH curve not implemented, skipped"),
                },
                Some(None) => tracing::debug!(name, "ECDH curve not implemented, skipped"),
                None => {
                    return Err(
                        scope.invalid(join(path, "ecdh_curves"), format!("unknown curve {name:?}"))
                    );
                }
            }
        }
        if groups.is_empty() {
            return Err(scope.invalid(join(path, "ecdh_curves"), "no implemented curve left"));
        }
        provider.kx_groups = groups;
    }
    Ok((versions(min, max), Arc::new(provider)))
}

/// BoringSSL's name of a key-exchange group: `Some(Some(_))` for a group
/// rustls knows (used when the provider implements it), `Some(None)` for a
/// known group it does not.
fn named_group(name: &str) -> Option<Option<rustls::NamedGroup>> {
    use rustls::NamedGroup as G;
    Some(Some(match name {
        "X25519" => G::X25519,
        "P-256" | "prime256v1" | "secp256r1" => G::secp256r1,
        "P-384" | "secp384r1" => G::secp384r1,
        "P-521" | "secp521r1" => G::secp521r1,
        "X25519MLKEM768" => G::X25519MLKEM768,
        "P-224" | "secp224r1" | "X25519Kyber768Draft00" => {
            return Some(None);
        }
        _ => return None,
    }))
}

fn versions(min: TlsProtocol, max: TlsProtocol) -> Vec<&'static SupportedProtocolVersion> {
    let mut out = Vec::new();
    if max >= TlsProtocol::TlSv13 {
        out.push(&rustls::version::TLS13);
    }
    if min <= TlsProtocol::TlSv12 {
        out.push(&rustls::version::TLS12);
    }
    out
}

/// BoringSSL's name of a cipher suite: `Some(Some(_))` when rustls
/// implements it, `Some(None)` for a known suite it does not.
fn cipher_suite(name: &str) -> Option<Option<rustls::CipherSuite>> {
    use rustls::CipherSuite as C;
    Some(Some(match name {
        "ECDHE-ECDSA-AES128-GCM-SHA256" => C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-ECDSA-AES256-GCM-SHA384" => C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-RSA-AES128-GCM-SHA256" => C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-RSA-AES256-GCM-SHA384" => C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-ECDSA-CHACHA20-POLY1305" => C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-RSA-CHACHA20-POLY1305" => C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        "AES128-GCM-SHA256"
        | "AES256-GCM-SHA384"
        | "AES128-SHA"
        | "AES256-SHA"
        | "ECDHE-ECDSA-AES128-SHA"
        | "ECDHE-RSA-AES128-SHA"
        | "ECDHE-ECDSA-AES256-SHA"
        | "ECDHE-RSA-AES256-SHA"
        | "ECDHE-PSK-AES128-CBC-SHA"
        | "ECDHE-PSK-AES256-CBC-SHA"
        | "ECDHE-PSK-CHACHA20-POLY1305"
        | "PSK-AES128-CBC-SHA"
        | "PSK-AES256-CBC-SHA"
        | "DES-CBC3-SHA" => return Some(None),
        _ => return None,
    }))
}

/// A Secret delivered over ADS, compiled.
#[derive(Debug, Clone)]
pub enum CompiledSecret {
    Certificate(Arc<CertifiedKey>),
    Validation(Arc<Roots>),
}

/// `Secret` → [`CompiledSecret`]: a certificate with its key, or trust
/// anchors (a validation context with only `trusted_ca`).
pub fn compile_secret(s: &Secret) -> Result<CompiledSecret, ConfigError> {
    let scope = Scope::new("secret", &s.name);
    let scope = &scope;
    reject_unknown(scope, "", s, fields::SECRET, |s| {
        s.name.clear();
        if matches!(
            s.r#type,
            Some(secret::Type::TlsCertificate(_) | secret::Type::ValidationContext(_))
        ) {
            s.r#type = None;
        }
    })?;
    if s.name.is_empty() {
        return Err(scope.missing("name"));
    }
    match &s.r#type {
        Some(secret::Type::TlsCertificate(c)) => Ok(CompiledSecret::Certificate(tls_certificate(
            scope,
            "tls_certificate",
            c,
        )?)),
        Some(secret::Type::ValidationContext(v)) => {
            reject_unknown(
                scope,
                "validation_context",
                v,
                fields::CERTIFICATE_VALIDATION_CONTEXT,
                |v| {
                    v.trusted_ca = None;
                },
            )?;
            let (roots, _) = validation_context(scope, "validation_context", v, true)?;
            match roots {
                Some(r) => Ok(CompiledSecret::Validation(r)),
                None => Err(scope.missing("validation_context.trusted_ca")),
            }
        }
        _ => Err(scope.missing("tls_certificate")),
    }
}

/// The `envoy.transport_socket_match` metadata of an endpoint, if any.
pub fn endpoint_match_metadata(
    md: Option<&pb::envoy::config::core::v3::Metadata>,
) -> Option<&Struct> {
    md?.filter_metadata.get(TRANSPORT_SOCKET_MATCH_KEY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::envoy::config::core::v3::{
        AggregatedConfigSource, ConfigSource, GrpcService, grpc_service,
    };
    use pb::google::protobuf::value::Kind;

    pub(crate) fn sds(name: &str, ads: bool) -> SdsSecretConfig {
        let specifier = if ads {
            config_source::ConfigSourceSpecifier::Ads(AggregatedConfigSource {})
        } else {
            config_source::ConfigSourceSpecifier::ApiConfigSource(ApiConfigSource {
                api_type: api_config_source::ApiType::Grpc as i32,
                transport_api_version: pb::envoy::config::core::v3::ApiVersion::V3 as i32,
                set_node_on_first_message_only: true,
                grpc_services: vec![GrpcService {
                    target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                        grpc_service::EnvoyGrpc {
                            cluster_name: "sds-grpc".into(),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            })
        };
        SdsSecretConfig {
            name: name.into(),
            sds_config: Some(ConfigSource {
                config_source_specifier: Some(specifier),
                initial_fetch_timeout: Some(pb::google::protobuf::Duration::default()),
                resource_api_version: pb::envoy::config::core::v3::ApiVersion::V3 as i32,
                ..Default::default()
            }),
        }
    }

    fn istio_mtls(sans: &[&str]) -> UpstreamTlsContext {
        UpstreamTlsContext {
            sni: "outbound_.8080_._.b.default.svc.cluster.local".into(),
            common_tls_context: Some(CommonTlsContext {
                tls_params: Some(TlsParameters {
                    tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32,
                    tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
                    ..Default::default()
                }),
                alpn_protocols: vec!["istio-peer-exchange".into(), "istio".into()],
                tls_certificate_sds_secret_configs: vec![sds("default", false)],
                validation_context_type: Some(
                    common_tls_context::ValidationContextType::CombinedValidationContext(
                        common_tls_context::CombinedCertificateValidationContext {
                            default_validation_context: Some(CertificateValidationContext {
                                match_subject_alt_names: sans
                                    .iter()
                                    .map(|s| pb::envoy::r#type::matcher::v3::StringMatcher {
                                        match_pattern: Some(
                                            pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern::Exact(
                                                (*s).into(),
                                            ),
                                        ),
                                        ..Default::default()
                                    })
                                    .collect(),
                                ..Default::default()
                            }),
                            validation_context_sds_secret_config: Some(sds("ROOTCA", false)),
                            ..Default::default()
                        },
                    ),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn socket(ctx: &UpstreamTlsContext) -> TransportSocket {
        TransportSocket {
            name: TLS_SOCKET.into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(mizzen_xds::pack(
                ctx,
            ))),
        }
    }

    fn raw() -> TransportSocket {
        TransportSocket {
            name: RAW_BUFFER.into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(mizzen_xds::pack(
                &RawBuffer {},
            ))),
        }
    }

    fn string(v: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(v.into())),
        }
    }

    fn md(pairs: &[(&str, &str)]) -> Struct {
        Struct {
            fields: pairs
                .iter()
                .map(|(k, v)| ((*k).into(), string(v)))
                .collect(),
        }
    }

    /// Istio's auto-mTLS: `tlsMode: istio` endpoints get mTLS, others plaintext.
    #[test]
    fn transport_socket_matches_pick_per_endpoint() {
        let scope = Scope::new("cluster", "outbound|8080||b");
        let matches = vec![
            TransportSocketMatch {
                name: "tlsMode-istio".into(),
                r#match: Some(md(&[("tlsMode", "istio")])),
                transport_socket: Some(socket(&istio_mtls(&[
                    "spiffe://cluster.local/ns/default/sa/b",
                ]))),
            },
            TransportSocketMatch {
                name: "tlsMode-disabled".into(),
                r#match: Some(Struct::default()),
                transport_socket: Some(raw()),
            },
        ];
        let t = cluster_transport(&scope, None, &matches).unwrap().unwrap();
        let tls = t.select(Some(&md(&[("tlsMode", "istio")]))).unwrap();
        assert_eq!(
            tls.common.alpn,
            vec![b"istio-peer-exchange".to_vec(), b"istio".to_vec()]
        );
        assert_eq!(tls.common.versions.len(), 2);
        assert!(matches!(
            tls.common.certificates[..],
            [CertificateSource::Sds(SecretRef::Workload)]
        ));
        let v = tls.common.validation.as_ref().unwrap();
        assert!(matches!(v.roots, RootsSource::Sds(SecretRef::RootCa)));
        assert!(v.san_matches(&["spiffe://cluster.local/ns/default/sa/b".into()], &[]));
        assert!(!v.san_matches(&["spiffe://cluster.local/ns/default/sa/c".into()], &[]));
        assert!(t.select(Some(&md(&[("tlsMode", "disabled")]))).is_none());
        assert!(t.select(None).is_none());
        // Extra endpoint fields do not matter; every match field must be there.
        let extra = md(&[("tlsMode", "istio"), ("other", "x")]);
        assert!(t.select(Some(&extra)).is_some());
        assert_eq!(t.secret_refs().count(), 2);

        // No match at all: the cluster's transport_socket.
        let only_istio = vec![matches[0].clone()];
        let default = socket(&UpstreamTlsContext::default());
        let t = cluster_transport(&scope, Some(&default), &only_istio)
            .unwrap()
            .unwrap();
        assert!(t.select(None).unwrap().common.validation.is_none());
        // Equal protos compare equal (hosts keep their pools across pushes).
        let again = cluster_transport(&scope, Some(&default), &only_istio)
            .unwrap()
            .unwrap();
        assert_eq!(*t, *again);
        // All plaintext: nothing to do per endpoint.
        assert!(
            cluster_transport(&scope, Some(&raw()), &[])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let scope = Scope::new("cluster", "c");
        let err = |ctx: UpstreamTlsContext| {
            cluster_transport(&scope, Some(&socket(&ctx)), &[])
                .unwrap_err()
                .to_string()
        };
        let mut renegotiate = istio_mtls(&[]);
        renegotiate.allow_renegotiation = true;
        assert_eq!(
            err(renegotiate),
            "cluster c: transport_socket.typed_config.allow_renegotiation is not supported"
        );
        let mut file_sds = istio_mtls(&[]);
        file_sds
            .common_tls_context
            .as_mut()
            .unwrap()
            .tls_certificate_sds_secret_configs = vec![sds("file-cert:/a~/b", false)];
        assert_eq!(
            err(file_sds),
            "cluster c: transport_socket.typed_config.common_tls_context.tls_certificate_sds_secret_configs[0].name \"file-cert:/a~/b\" (the built-in SDS agent serves only \"default\" and \"ROOTCA\") is not supported"
        );
        let mut curves = istio_mtls(&[]);
        curves
            .common_tls_context
            .as_mut()
            .unwrap()
            .tls_params
            .as_mut()
            .unwrap()
            .ecdh_curves = vec!["P-256".into(), "brainpool".into()];
        assert_eq!(
            err(curves),
            "cluster c: transport_socket.typed_config.common_tls_context.tls_params.ecdh_curves: unknown curve \"brainpool\""
        );
        let mut spki = istio_mtls(&[]);
        spki.common_tls_context
            .as_mut()
            .unwrap()
            .validation_context_type = Some(
            common_tls_context::ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    verify_certificate_spki: vec!["x".into()],
                    ..Default::default()
                },
            ),
        );
        assert_eq!(
            err(spki),
            "cluster c: transport_socket.typed_config.common_tls_context.validation_context.verify_certificate_spki is not supported"
        );
        let mut no_ca = istio_mtls(&["a"]);
        no_ca
            .common_tls_context
            .as_mut()
            .unwrap()
            .validation_context_type = Some(
            common_tls_context::ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    match_subject_alt_names: vec![Default::default()],
                    ..Default::default()
                },
            ),
        );
        assert!(err(no_ca).contains("validation_context"));
        let mut ciphers = istio_mtls(&[]);
        ciphers
            .common_tls_context
            .as_mut()
            .unwrap()
            .tls_params
            .as_mut()
            .unwrap()
            .cipher_suites = vec!["NOT-A-CIPHER".into()];
        assert_eq!(
            err(ciphers),
            "cluster c: transport_socket.typed_config.common_tls_context.tls_params.cipher_suites: unknown cipher suite \"NOT-A-CIPHER\""
        );
        let other = TransportSocket {
            name: "envoy.transport_sockets.tcp_stats".into(),
            config_type: None,
        };
        assert_eq!(
            cluster_transport(&scope, Some(&other), &[])
                .unwrap_err()
                .to_string(),
            "cluster c: transport_socket envoy.transport_sockets.tcp_stats is not supported"
        );
        // A downstream context on a cluster is a type error.
        let wrong = TransportSocket {
            name: TLS_SOCKET.into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(mizzen_xds::pack(
                &DownstreamTlsContext::default(),
            ))),
        };
        assert!(
            cluster_transport(&scope, Some(&wrong), &[])
                .unwrap_err()
                .to_string()
                .contains("expected envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext")
        );
        // A server needs a certificate, and a validation context to require client certs.
        let lscope = Scope::new("listener", "l");
        let ds = DownstreamTlsContext {
            require_client_certificate: Some(pb::google::protobuf::BoolValue { value: true }),
            common_tls_context: Some(CommonTlsContext {
                tls_certificate_sds_secret_configs: vec![sds("kubernetes://cred", true)],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            downstream_tls(&lscope, "t", &ds).unwrap_err().to_string(),
            "listener l: t.require_client_certificate: client certificates can only be required with a validation context"
        );
        let ok = DownstreamTlsContext {
            require_client_certificate: None,
            ..ds
        };
        let d = downstream_tls(&lscope, "t", &ok).unwrap();
        assert_eq!(
            d.common.secret_refs().collect::<Vec<_>>(),
            vec![&SecretRef::Ads(Arc::from("kubernetes://cred"))]
        );
        // Gateway cipher lists keep the implemented suites.
        let mut gw = istio_mtls(&[]);
        gw.common_tls_context
            .as_mut()
            .unwrap()
            .tls_params
            .as_mut()
            .unwrap()
            .cipher_suites = vec![
            "[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]".into(),
            "AES256-GCM-SHA384".into(),
        ];
        assert!(cluster_transport(&scope, Some(&socket(&gw)), &[]).is_ok());
    }

    fn downstream(ctx: &DownstreamTlsContext) -> DownstreamTls {
        downstream_tls(&Scope::new("listener", "l"), "t", ctx).unwrap()
    }

    /// What the pilot emits for gateway servers: several credentials,
    /// OPTIONAL_MUTUAL, MUTUAL with a `-cacert` secret and DNS SANs, and
    /// ISTIO_MUTUAL on a router.
    #[test]
    fn gateway_server_contexts() {
        use pb::envoy::extensions::transport_sockets::tls::v3::{
            SubjectAltNameMatcher, subject_alt_name_matcher::SanType,
        };
        let bool_value = |value| Some(pb::google::protobuf::BoolValue { value });
        let combined = |ca: &str, ads: bool, sans: Vec<SubjectAltNameMatcher>| {
            common_tls_context::ValidationContextType::CombinedValidationContext(
                common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(CertificateValidationContext {
                        match_typed_subject_alt_names: sans,
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(sds(ca, ads)),
                    ..Default::default()
                },
            )
        };
        let dns_san = SubjectAltNameMatcher {
            san_type: SanType::Dns as i32,
            matcher: Some(pb::envoy::r#type::matcher::v3::StringMatcher {
                match_pattern: Some(
                    pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern::Exact(
                        "client.example.com".into(),
                    ),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        // `credentialNames`: both certificates are offered, in order.
        let simple = DownstreamTlsContext {
            require_client_certificate: bool_value(false),
            common_tls_context: Some(CommonTlsContext {
                alpn_protocols: vec!["h2".into(), "http/1.1".into()],
                tls_params: Some(TlsParameters {
                    tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32,
                    tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
                    cipher_suites: vec![
                        "ECDHE-ECDSA-AES128-GCM-SHA256".into(),
                        "ECDHE-RSA-AES128-GCM-SHA256".into(),
                    ],
                    ecdh_curves: vec!["X25519".into(), "P-256".into()],
                    ..Default::default()
                }),
                tls_certificate_sds_secret_configs: vec![
                    sds("kubernetes://rsa-cred", true),
                    sds("kubernetes://ecdsa-cred", true),
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let d = downstream(&simple);
        assert!(!d.require_client_certificate);
        assert!(d.common.validation.is_none());
        assert_eq!(d.common.certificates.len(), 2);
        let groups: Vec<_> = d
            .common
            .provider
            .kx_groups
            .iter()
            .map(|k| k.name())
            .collect();
        assert_eq!(
            groups,
            [rustls::NamedGroup::X25519, rustls::NamedGroup::secp256r1]
        );
        let tls12: Vec<_> = d
            .common
            .provider
            .cipher_suites
            .iter()
            .filter(|c| c.version() == &rustls::version::TLS12)
            .map(|c| c.suite())
            .collect();
        assert_eq!(
            tls12,
            [
                rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            ]
        );
        // MUTUAL: the CA from `NAME-cacert` over ADS, DNS SANs checked.
        let mut mutual = simple.clone();
        mutual.require_client_certificate = bool_value(true);
        mutual
            .common_tls_context
            .as_mut()
            .unwrap()
            .validation_context_type = Some(combined(
            "kubernetes://rsa-cred-cacert",
            true,
            vec![dns_san.clone()],
        ));
        let d = downstream(&mutual);
        assert!(d.require_client_certificate);
        let v = d.common.validation.as_ref().unwrap();
        assert!(
            matches!(&v.roots, RootsSource::Sds(SecretRef::Ads(n)) if &**n == "kubernetes://rsa-cred-cacert")
        );
        assert!(v.san_matches(&[], &["client.example.com".into()]));
        assert!(!v.san_matches(&["client.example.com".into()], &[]));
        assert_eq!(d.common.secret_refs().count(), 3);
        // OPTIONAL_MUTUAL: a certificate is asked for, not required.
        let mut optional = mutual.clone();
        optional.require_client_certificate = bool_value(false);
        let d = downstream(&optional);
        assert!(!d.require_client_certificate);
        assert!(d.common.validation.is_some());
        // ISTIO_MUTUAL on a gateway: the workload certificate and mesh roots.
        let istio = DownstreamTlsContext {
            require_client_certificate: bool_value(true),
            common_tls_context: Some(CommonTlsContext {
                alpn_protocols: vec!["h2".into(), "http/1.1".into()],
                tls_certificate_sds_secret_configs: vec![sds("default", false)],
                validation_context_type: Some(combined("ROOTCA", false, Vec::new())),
                ..Default::default()
            }),
            ..Default::default()
        };
        let d = downstream(&istio);
        assert!(matches!(
            d.common.certificates[..],
            [CertificateSource::Sds(SecretRef::Workload)]
        ));
        let v = d.common.validation.as_ref().unwrap();
        assert!(matches!(v.roots, RootsSource::Sds(SecretRef::RootCa)));
        assert!(v.subject_alt_names.is_empty());
    }
}
