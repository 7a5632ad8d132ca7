//! TLS at run time: rustls configurations built from the compiled
//! transport sockets ([`crate::config::tls`]) and the current secrets, the
//! handshakes, and what a handshake tells about the peer.
//!
//! Secrets (the workload certificate, which rotates, and Secrets delivered
//! over ADS, which can be replaced) are read when a connection is made, so
//! a new certificate takes effect at the next handshake without recompiling
//! config or touching established connections. To keep handshakes cheap,
//! each transport socket caches the rustls configuration it built, stamped
//! with the secrets it was built from, and rebuilds it only when they
//! changed.
//!
//! Verification follows Envoy: with a validation context, the peer chain
//! must lead to its trust anchors and be valid now, and when subject alt
//! name matchers are given one SAN must match (Istio's secure naming);
//! server names are never checked against the certificate. Without a
//! validation context a client accepts any server certificate and a server
//! asks for no client certificate.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use mizzen_identity::tls::{PeerNames, ServerVerifier, leaf_names, name_mismatch};
use mizzen_identity::{CertificateManager, WorkloadCertificate};
use rustls::client::ResolvesClientCert;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::tls::{
    CertificateSource, CommonTls, CompiledSecret, DownstreamTls, Roots, RootsSource, SecretRef,
    UpstreamTls, Validation,
};

/// What a cached configuration was built from: the ADS secrets generation
/// and the workload certificate (held, so its address cannot be reused).
#[derive(Debug, Clone)]
struct Stamp {
    generation: u64,
    workload: Option<Arc<WorkloadCertificate>>,
}

impl Stamp {
    fn same(&self, other: &Stamp) -> bool {
        self.generation == other.generation
            && match (&self.workload, &other.workload) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

#[derive(Debug)]
struct Cached<T> {
    stamp: Stamp,
    config: Arc<T>,
    /// URI SANs of the certificate this side presents (XFCC `By=`).
    local_uris: Arc<[Arc<str>]>,
}

/// The last rustls configuration a transport socket built.
#[derive(Debug)]
pub struct ConfigCache<T>(ArcSwapOption<Cached<T>>);

impl<T> Default for ConfigCache<T> {
    fn default() -> Self {
        ConfigCache(ArcSwapOption::empty())
    }
}

/// Every secret the proxy can present or trust: its workload certificate
/// (SDS `default` / `ROOTCA`) and the Secrets received over ADS.
#[derive(Debug)]
pub struct Secrets {
    identity: Option<CertificateManager>,
    ads: ArcSwap<HashMap<Arc<str>, CompiledSecret>>,
    generation: AtomicU64,
    /// The parsed root bundle of the current workload certificate.
    workload_roots: Mutex<Option<(Arc<WorkloadCertificate>, Arc<Roots>)>>,
    /// Missing secrets already reported, so each is logged once.
    reported: Mutex<HashSet<String>>,
}

impl Secrets {
    pub fn new(identity: Option<CertificateManager>) -> Secrets {
        Secrets {
            identity,
            ads: ArcSwap::from_pointee(HashMap::new()),
            generation: AtomicU64::new(0),
            workload_roots: Mutex::new(None),
            reported: Mutex::new(HashSet::new()),
        }
    }

    pub fn identity(&self) -> Option<&CertificateManager> {
        self.identity.as_ref()
    }

    /// Replaces the ADS secrets; handshakes from now on use them.
    pub fn set_ads(&self, secrets: HashMap<Arc<str>, CompiledSecret>) {
        self.ads.store(Arc::new(secrets));
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub fn ads(&self) -> Arc<HashMap<Arc<str>, CompiledSecret>> {
        self.ads.load_full()
    }

    fn stamp(&self) -> Stamp {
        Stamp {
            generation: self.generation.load(Ordering::Acquire),
            workload: self.identity.as_ref().map(|m| m.current()),
        }
    }

    fn certificate(&self, r: &SecretRef) -> Result<Arc<CertifiedKey>, String> {
        match r {
            SecretRef::Workload => self
                .identity
                .as_ref()
                .map(|m| m.certified_key())
                .ok_or_else(|| "no workload certificate (SDS \"default\")".to_string()),
            SecretRef::RootCa => Err("ROOTCA is not a certificate".to_string()),
            SecretRef::Ads(name) => match self.ads.load().get(name) {
                Some(CompiledSecret::Certificate(k)) => Ok(k.clone()),
                Some(CompiledSecret::Validation(_)) => Err(format!(
                    "secret {name} holds a validation context, not a certificate"
                )),
                None => Err(format!("secret {name} has not arrived over ADS yet")),
            },
        }
    }

    pub(crate) fn roots(&self, r: &SecretRef) -> Result<Arc<Roots>, String> {
        match r {
            SecretRef::RootCa => {
                let Some(m) = &self.identity else {
                    return Err("no workload certificate (SDS \"ROOTCA\")".to_string());
                };
                let cert = m.current();
                let mut cached = self
                    .workload_roots
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if let Some((c, roots)) = &*cached
                    && Arc::ptr_eq(c, &cert)
                {
                    return Ok(roots.clone());
                }
                let roots = Arc::new(Roots::from_pem(cert.roots_pem())?);
                *cached = Some((cert, roots.clone()));
                Ok(roots)
            }
            SecretRef::Workload => Err("default is not a validation context".to_string()),
            SecretRef::Ads(name) => match self.ads.load().get(name) {
                Some(CompiledSecret::Validation(r)) => Ok(r.clone()),
                Some(CompiledSecret::Certificate(_)) => Err(format!(
                    "secret {name} holds a certificate, not a validation context"
                )),
                None => Err(format!("secret {name} has not arrived over ADS yet")),
            },
        }
    }

    /// Logs a secret problem once per cause until the secrets change.
    fn report(&self, what: &str, reason: &str) {
        let key = format!("{what}: {reason}");
        let first = self
            .reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key);
        if first {
            tracing::warn!(
                what,
                reason,
                "TLS handshakes fail until the secret is available"
            );
        }
    }
}

fn roots_of(v: &Validation, secrets: &Secrets) -> Result<Arc<Roots>, String> {
    match &v.roots {
        RootsSource::Static(r) => Ok(r.clone()),
        RootsSource::Sds(r) => secrets.roots(r),
    }
}

fn certificates_of(
    common: &CommonTls,
    secrets: &Secrets,
) -> Result<Vec<Arc<CertifiedKey>>, String> {
    common
        .certificates
        .iter()
        .map(|c| match c {
            CertificateSource::Static(k) => Ok(k.clone()),
            CertificateSource::Sds(r) => secrets.certificate(r),
        })
        .collect()
}

fn uri_sans(cert: Option<&CertificateDer<'_>>) -> Arc<[Arc<str>]> {
    cert.and_then(|c| mizzen_identity::x509::inspect(c).ok())
        .map(|i| i.uri_sans.into_iter().map(Arc::from).collect())
        .unwrap_or_else(|| Arc::from(Vec::new()))
}

/// Looks up (or builds and caches) the configuration for `cache`.
fn cached<T>(
    cache: &ConfigCache<T>,
    secrets: &Secrets,
    build: impl FnOnce() -> Result<(T, Arc<[Arc<str>]>), String>,
) -> Result<Arc<Cached<T>>, String> {
    let stamp = secrets.stamp();
    if let Some(c) = &*cache.0.load()
        && c.stamp.same(&stamp)
    {
        return Ok(c.clone());
    }
    let (config, local_uris) = build()?;
    let entry = Arc::new(Cached {
        stamp,
        config: Arc::new(config),
        local_uris,
    });
    cache.0.store(Some(entry.clone()));
    Ok(entry)
}

// ---------------------------------------------------------------------------
// Upstream (client) side
// ---------------------------------------------------------------------------

fn client_config(
    tls: &UpstreamTls,
    secrets: &Secrets,
) -> Result<Arc<Cached<ClientConfig>>, String> {
    cached(&tls.cache, secrets, || {
        let common = &tls.common;
        let verifier = Arc::new(match &common.validation {
            Some(v) => ServerVerifier::with_roots(
                roots_of(v, secrets)?.store.clone(),
                v.clone(),
                &common.provider,
            ),
            None => ServerVerifier::accepting_any(&common.provider),
        });
        let builder = ClientConfig::builder_with_provider(common.provider.clone())
            .with_protocol_versions(&common.versions)
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        // A client presents its first certificate.
        let certs = certificates_of(common, secrets)?;
        let local = uri_sans(certs.first().and_then(|k| k.cert.first()));
        let mut config = match certs.into_iter().next() {
            Some(key) => builder.with_client_cert_resolver(Arc::new(FixedClientCert(key))),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = common.alpn.clone();
        config.enable_sni = tls.sni.is_some();
        Ok((config, local))
    })
}

#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The peer certificate is valid but no SAN matched.
#[derive(Debug, thiserror::Error)]
#[error("no subject alt name of the peer certificate ({presented:?}) matches")]
struct SanMismatch {
    presented: Vec<String>,
}

/// A validation context's SAN matchers, for servers (through the identity
/// crate's [`ServerVerifier`]) and clients (through [`ClientVerifier`]).
impl PeerNames for Validation {
    fn check_names(&self, leaf: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if self.subject_alt_names.is_empty() {
            return Ok(());
        }
        let info = leaf_names(leaf)?;
        if self.san_matches(&info.uri_sans, &info.dns_sans) {
            return Ok(());
        }
        let mut presented = info.uri_sans;
        presented.extend(info.dns_sans);
        Err(name_mismatch(SanMismatch { presented }))
    }
}

/// What an upstream handshake needs besides the stream.
#[derive(Debug)]
pub struct HostTls {
    pub config: Arc<UpstreamTls>,
    pub secrets: Arc<Secrets>,
}

/// An upstream TLS connection and the server's identity.
pub struct Connected<S> {
    pub stream: tokio_rustls::client::TlsStream<S>,
    pub alpn: Option<Vec<u8>>,
    pub peer_principal: Option<Arc<str>>,
}

/// Originates TLS on `stream` to `address`. Errors read like Envoy's
/// `TLS_error:` connection failure details.
pub async fn connect<S>(
    host: &HostTls,
    address: SocketAddr,
    stream: S,
) -> Result<Connected<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let tls = &host.config;
    let entry = client_config(tls, &host.secrets).inspect_err(|e| {
        host.secrets.report("upstream TLS", e);
    })?;
    // Without `sni` no SNI is sent: rustls sends none for an IP address.
    let name = tls
        .sni
        .clone()
        .unwrap_or_else(|| ServerName::IpAddress(address.ip().into()));
    let connector = tokio_rustls::TlsConnector::from(entry.config.clone());
    let stream = connector
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS_error: {e}"))?;
    let (_, conn) = stream.get_ref();
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let peer_principal = conn
        .peer_certificates()
        .and_then(|c| uri_sans(c.first()).first().cloned());
    Ok(Connected {
        stream,
        alpn,
        peer_principal,
    })
}

// ---------------------------------------------------------------------------
// Downstream (server) side
// ---------------------------------------------------------------------------

fn server_config(
    tls: &DownstreamTls,
    secrets: &Secrets,
) -> Result<Arc<Cached<ServerConfig>>, String> {
    cached(&tls.cache, secrets, || {
        let common = &tls.common;
        let builder = ServerConfig::builder_with_provider(common.provider.clone())
            .with_protocol_versions(&common.versions)
            .map_err(|e| e.to_string())?;
        let builder = match &common.validation {
            None => builder.with_no_client_auth(),
            Some(v) => {
                let roots = roots_of(v, secrets)?;
                let inner = WebPkiClientVerifier::builder_with_provider(
                    roots.store.clone(),
                    common.provider.clone(),
                );
                let inner = if tls.require_client_certificate {
                    inner
                } else {
                    inner.allow_unauthenticated()
                }
                .build()
                .map_err(|e| e.to_string())?;
                builder.with_client_cert_verifier(Arc::new(ClientVerifier {
                    inner,
                    validation: v.clone(),
                }))
            }
        };
        let certs = certificates_of(common, secrets)?;
        let local = uri_sans(certs.first().and_then(|k| k.cert.first()));
        let mut config = builder.with_cert_resolver(Arc::new(ServerCerts(certs)));
        config.alpn_protocols = common.alpn.clone();
        Ok((config, local))
    })
}

/// The chain's certificates: the first whose key can sign with one of the
/// client's signature schemes (an ECDSA and an RSA certificate can serve
/// side by side), else the first.
#[derive(Debug)]
struct ServerCerts(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for ServerCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if self.0.len() > 1 {
            let schemes = hello.signature_schemes();
            if let Some(k) = self
                .0
                .iter()
                .find(|k| k.key.choose_scheme(schemes).is_some())
            {
                return Some(k.clone());
            }
        }
        self.0.first().cloned()
    }
}

/// rustls' client verifier followed by the SAN matchers.
#[derive(Debug)]
struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    validation: Validation,
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.validation.check_names(end_entity)?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What a downstream TLS handshake established, for XFCC, records and
/// (later) authorization.
#[derive(Debug, Clone, Default)]
pub struct PeerTls {
    /// The peer's first URI SAN (its SPIFFE identity in the mesh).
    pub peer_principal: Option<Arc<str>>,
    /// Whether the peer presented a certificate.
    pub peer_certificate: bool,
    /// Lowercase hex SHA-256 of the peer's leaf certificate (DER).
    pub peer_hash: String,
    /// The peer's subject, RFC 2253 style (`CN=a,O=b`), as Envoy prints it.
    pub peer_subject: String,
    pub peer_uri_sans: Vec<String>,
    pub peer_dns_sans: Vec<String>,
    /// URI SANs of the certificate this proxy presented.
    pub local_uri_sans: Arc<[Arc<str>]>,
    pub alpn: Option<Vec<u8>>,
}

impl PeerTls {
    fn from_connection(conn: &rustls::ServerConnection, local: Arc<[Arc<str>]>) -> PeerTls {
        let mut info = PeerTls {
            local_uri_sans: local,
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            ..Default::default()
        };
        let Some(leaf) = conn.peer_certificates().and_then(|c| c.first()) else {
            return info;
        };
        info.peer_certificate = true;
        info.peer_hash = sha256_hex(leaf);
        if let Ok(i) = mizzen_identity::x509::inspect(leaf) {
            info.peer_principal = i.uri_sans.first().map(|u| Arc::from(u.as_str()));
            info.peer_uri_sans = i.uri_sans;
            info.peer_dns_sans = i.dns_sans;
        }
        info.peer_subject = subject_rfc2253(leaf);
        info
    }

    pub fn negotiated_h2(&self) -> bool {
        self.alpn.as_deref() == Some(b"h2")
    }
}

fn sha256_hex(der: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let mut s = String::with_capacity(64);
    for b in d.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The subject as OpenSSL's `X509_NAME_print_ex(XN_FLAG_RFC2253)` prints it
/// (what Envoy puts in XFCC): last RDN first, comma-separated.
fn subject_rfc2253(der: &[u8]) -> String {
    use x509_parser::prelude::FromDer;
    let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(der) else {
        return String::new();
    };
    let mut rdns: Vec<String> = Vec::new();
    for rdn in cert.subject().iter() {
        let parts: Vec<String> = rdn
            .iter()
            .map(|atv| {
                let key = x509_parser::objects::oid2abbrev(
                    atv.attr_type(),
                    x509_parser::objects::oid_registry(),
                )
                .map(str::to_string)
                .unwrap_or_else(|_| atv.attr_type().to_id_string());
                let value = atv.as_str().unwrap_or_default();
                format!("{key}={}", escape_rdn(value))
            })
            .collect();
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    rdns.join(",")
}

fn escape_rdn(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == v.chars().count() && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The result of a downstream handshake.
pub struct Accepted<S> {
    pub stream: tokio_rustls::server::TlsStream<S>,
    pub peer: Arc<PeerTls>,
}

/// Terminates TLS on `stream` with the chain's context. If the client
/// offers ALPN values none of which the chain accepts, the handshake goes
/// on without ALPN, as BoringSSL does (rustls would abort it).
pub async fn accept<S>(
    tls: &DownstreamTls,
    secrets: &Secrets,
    stream: S,
) -> Result<Accepted<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let entry = server_config(tls, secrets).inspect_err(|e| {
        secrets.report("downstream TLS", e);
    })?;
    let acceptor =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = acceptor.await.map_err(|e| format!("TLS_error: {e}"))?;
    let config = mizzen_identity::tls::negotiable(&entry.config, &start.client_hello());
    let stream = start
        .into_stream(config)
        .await
        .map_err(|e| format!("TLS_error: {e}"))?;
    let (_, conn) = stream.get_ref();
    let peer = Arc::new(PeerTls::from_connection(conn, entry.local_uris.clone()));
    Ok(Accepted { stream, peer })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdn_escaping() {
        assert_eq!(escape_rdn("a,b"), "a\\,b");
        assert_eq!(escape_rdn(" x "), "\\ x\\ ");
        assert_eq!(sha256_hex(b"").len(), 64);
    }
}
