//! The workload side: a fresh key and CSR per certificate, the client of the
//! pilot's CA service, and the validated certificate the proxy serves with.
//!
//! The private key is generated here and never sent anywhere: only the CSR
//! (public key plus a signature proving possession) goes to the CA.

mod manager;

pub use manager::{CertStatus, CertificateManager, CertificateProvider, RotationPolicy};

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use zeroize::Zeroizing;

use crate::ca::CertificateAuthority;
use crate::proto::IstioCertificateRequest;
use crate::proto::istio_certificate_service_client::IstioCertificateServiceClient;
use crate::spiffe::Identity;
use crate::tls::{TlsError, TrustBundle};
use crate::x509::{self, CertParseError};

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("generating the key or CSR failed: {0}")]
    KeyGeneration(String),
    #[error("invalid CA address {0:?} (expected host:port)")]
    InvalidAddress(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot reach the CA at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the CA refused the request ({}): {}", .0.code(), .0.message())]
    Rejected(tonic::Status),
    #[error("reading the token from {}: {source}", path.display())]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token contains characters that cannot be sent in gRPC metadata")]
    TokenEncoding,
    #[error("the CA response is invalid: {0}")]
    InvalidResponse(String),
    #[error("the CA issued a certificate for {got:?}, not for {expected}")]
    WrongIdentity {
        expected: Identity,
        got: Option<String>,
    },
    #[error("the issued certificate is not for this workload's key")]
    KeyMismatch,
    #[error("the certificate request timed out after {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Ca(#[from] crate::ca::CaError),
}

/// A PEM private key that is wiped from memory when dropped and never
/// printed.
#[derive(Clone)]
pub struct PrivateKeyPem(Zeroizing<String>);

impl PrivateKeyPem {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKeyPem(<redacted>)")
    }
}

/// Generates an ECDSA P-256 key and a CSR carrying `identity` as URI SAN
/// (the CA ignores the SAN, but Istio's agent sends it and so do we, so the
/// CSR is self-describing in logs and for other CAs).
pub fn generate_csr(identity: &Identity) -> Result<(PrivateKeyPem, String), WorkloadError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| WorkloadError::KeyGeneration(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names =
        vec![SanType::URI(identity.to_uri().try_into().map_err(
            |e: rcgen::Error| WorkloadError::KeyGeneration(e.to_string()),
        )?)];
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| WorkloadError::KeyGeneration(e.to_string()))?;
    Ok((PrivateKeyPem(Zeroizing::new(key.serialize_pem())), csr))
}

/// A certificate issued to this workload, with its private key, checked for
/// consistency when built.
#[derive(Clone)]
pub struct WorkloadCertificate {
    identity: Identity,
    chain_pem: String,
    roots_pem: String,
    key_pem: PrivateKeyPem,
    chain: Vec<CertificateDer<'static>>,
    serial: String,
    issuer: String,
    not_before: SystemTime,
    not_after: SystemTime,
    received_at: SystemTime,
}

impl std::fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("identity", &self.identity.to_uri())
            .field("serial", &self.serial)
            .field("issuer", &self.issuer)
            .field(
                "not_before",
                &humantime::format_rfc3339_seconds(self.not_before),
            )
            .field(
                "not_after",
                &humantime::format_rfc3339_seconds(self.not_after),
            )
            .finish_non_exhaustive()
    }
}

impl WorkloadCertificate {
    /// Builds a certificate from PEM: `chain_pem` is the leaf followed by any
    /// intermediates, `roots_pem` the trust bundle. Checks that the key
    /// matches the leaf, that the leaf names `identity`, and that the chain
    /// verifies to the roots now.
    pub fn from_pem(
        identity: Identity,
        chain_pem: &str,
        key_pem: PrivateKeyPem,
        roots_pem: &str,
    ) -> Result<Self, WorkloadError> {
        let chain = x509::parse_certs_pem(chain_pem).map_err(TlsError::from)?;
        let leaf = chain
            .first()
            .ok_or(TlsError::Parse(CertParseError::Missing("CERTIFICATE")))?;
        let info = x509::inspect(leaf).map_err(TlsError::from)?;
        let got = info.spiffe_identity();
        if got.as_ref() != Some(&identity) {
            return Err(WorkloadError::WrongIdentity {
                expected: identity,
                got: info.uri_sans.first().cloned(),
            });
        }
        let key_der = x509::parse_key_pem(key_pem.expose()).map_err(TlsError::from)?;
        check_key_matches(leaf, &key_der)?;
        let roots = TrustBundle::from_pem(roots_pem)?;
        roots.verify_chain(&chain, SystemTime::now())?;
        Ok(Self {
            identity,
            chain_pem: x509::certs_to_pem(&chain),
            roots_pem: roots.pem().to_string(),
            key_pem,
            chain,
            serial: info.serial,
            issuer: info.issuer,
            not_before: info.not_before,
            not_after: info.not_after,
            received_at: SystemTime::now(),
        })
    }

    /// Builds a certificate from Istio's `cert_chain` response (leaf first,
    /// root bundle last).
    pub fn from_response(
        identity: Identity,
        key_pem: PrivateKeyPem,
        cert_chain: &[String],
    ) -> Result<Self, WorkloadError> {
        let Some((roots, chain)) = cert_chain.split_last() else {
            return Err(WorkloadError::InvalidResponse(
                "empty certificate chain".into(),
            ));
        };
        if chain.is_empty() {
            return Err(WorkloadError::InvalidResponse(
                "the chain holds a single entry; expected the leaf and the root".into(),
            ));
        }
        Self::from_pem(identity, &chain.concat(), key_pem, roots)
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Leaf and intermediates, as presented in handshakes.
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// The mesh roots that came with this certificate.
    pub fn roots_pem(&self) -> &str {
        &self.roots_pem
    }

    /// The private key. It stays in this process: hand it only to a TLS
    /// stack, never to a log or a remote API.
    pub fn key_pem(&self) -> &PrivateKeyPem {
        &self.key_pem
    }

    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    pub fn serial(&self) -> &str {
        &self.serial
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// When this process received the certificate; rotation counts from
    /// here rather than from `not_before`, which the CA back-dates.
    pub fn received_at(&self) -> SystemTime {
        self.received_at
    }

    pub fn trust_bundle(&self) -> Result<TrustBundle, TlsError> {
        TrustBundle::from_pem(&self.roots_pem)
    }

    /// The rustls form of certificate and key.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let key = x509::parse_key_pem(self.key_pem.expose())?;
        let certified = CertifiedKey::from_der(self.chain.clone(), key, &crate::crypto_provider())?;
        Ok(Arc::new(certified))
    }
}

fn check_key_matches(
    leaf: &CertificateDer<'_>,
    key: &PrivateKeyDer<'_>,
) -> Result<(), WorkloadError> {
    let key = KeyPair::try_from(key).map_err(|_| WorkloadError::KeyMismatch)?;
    let cert_bits = x509::public_key_bits(leaf).map_err(TlsError::from)?;
    if rcgen::PublicKeyData::der_bytes(&key) == cert_bits.as_slice() {
        Ok(())
    } else {
        Err(WorkloadError::KeyMismatch)
    }
}

/// Where the bearer token comes from. A file is re-read for every request
/// because Kubernetes rotates projected tokens.
#[derive(Clone)]
pub enum TokenSource {
    Static(Zeroizing<String>),
    File(PathBuf),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Static(_) => f.write_str("TokenSource::Static(<redacted>)"),
            TokenSource::File(p) => write!(f, "TokenSource::File({})", p.display()),
        }
    }
}

impl TokenSource {
    pub fn from_token(token: impl Into<String>) -> Self {
        TokenSource::Static(Zeroizing::new(token.into()))
    }

    pub async fn read(&self) -> Result<Zeroizing<String>, WorkloadError> {
        match self {
            TokenSource::Static(t) => Ok(t.clone()),
            TokenSource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map(|t| Zeroizing::new(t.trim().to_string()))
                .map_err(|source| WorkloadError::Token {
                    path: path.clone(),
                    source,
                }),
        }
    }
}

/// How to reach the CA.
#[derive(Debug, Clone)]
pub struct CaClientConfig {
    /// `host:port`, e.g. `istiod.istio-system.svc:15012` or `127.0.0.1:15012`.
    pub address: String,
    /// PEM roots that sign the CA's serving certificate.
    pub root_pem: String,
    /// The name to verify in the CA's certificate; defaults to the host of
    /// `address`.
    pub server_name: Option<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl CaClientConfig {
    pub fn new(address: impl Into<String>, root_pem: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            root_pem: root_pem.into(),
            server_name: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A client of Istio's certificate service over TLS. The connection is made
/// lazily and re-made after failures, so one client serves for the life of
/// the proxy.
#[derive(Clone, Debug)]
pub struct CaClient {
    client: IstioCertificateServiceClient<Channel>,
    request_timeout: Duration,
}

impl CaClient {
    pub fn new(config: CaClientConfig) -> Result<Self, WorkloadError> {
        let host = host_of(&config.address)
            .ok_or_else(|| WorkloadError::InvalidAddress(config.address.clone()))?;
        let name = config.server_name.as_deref().unwrap_or(host).to_string();
        let server_name = ServerName::try_from(name)
            .map_err(|_| WorkloadError::InvalidAddress(config.address.clone()))?;
        let roots = TrustBundle::from_pem(&config.root_pem)?;
        let mut tls = rustls::ClientConfig::builder_with_provider(crate::crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::from)?
            .with_root_certificates(roots.root_store())
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        // The scheme is http because TLS happens in our connector; with
        // https tonic would try its own TLS stack when that is compiled in.
        let endpoint = Endpoint::from_shared(format!("http://{}", config.address))
            .map_err(|_| WorkloadError::InvalidAddress(config.address.clone()))?
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout);
        let connector = TlsConnector {
            address: config.address,
            server_name,
            tls: Arc::new(tls),
        };
        let channel = endpoint.connect_with_connector_lazy(connector);
        Ok(Self {
            client: IstioCertificateServiceClient::new(channel),
            request_timeout: config.request_timeout,
        })
    }

    /// Sends a CSR and returns Istio's `cert_chain` as received.
    pub async fn sign(
        &self,
        csr_pem: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, WorkloadError> {
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr_pem.to_string(),
            validity_duration: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
            metadata: None,
        });
        let bearer: MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .map_err(|_| WorkloadError::TokenEncoding)?;
        request.metadata_mut().insert("authorization", bearer);
        let mut client = self.client.clone();
        let response =
            tokio::time::timeout(self.request_timeout, client.create_certificate(request))
                .await
                .map_err(|_| WorkloadError::Timeout(self.request_timeout))?
                .map_err(WorkloadError::Rejected)?;
        Ok(response.into_inner().cert_chain)
    }

    /// Generates a key, has the CA sign it for `identity` and validates the
    /// result.
    pub async fn request_certificate(
        &self,
        token: &str,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<WorkloadCertificate, WorkloadError> {
        let (key, csr) = generate_csr(identity)?;
        let chain = self.sign(&csr, token, ttl).await?;
        WorkloadCertificate::from_response(identity.clone(), key, &chain)
    }
}

/// One-shot form of [`CaClient::request_certificate`].
pub async fn request_certificate(
    ca_address: &str,
    ca_root_pem: &str,
    token: &str,
    identity: &Identity,
    ttl: Duration,
) -> Result<WorkloadCertificate, WorkloadError> {
    CaClient::new(CaClientConfig::new(ca_address, ca_root_pem))?
        .request_certificate(token, identity, ttl)
        .await
}

/// Obtains certificates from the pilot's CA service: what a proxy's
/// [`CertificateManager`] normally uses.
#[derive(Debug, Clone)]
pub struct RemoteCa {
    client: CaClient,
    token: TokenSource,
    identity: Identity,
    ttl: Duration,
}

impl RemoteCa {
    pub fn new(client: CaClient, token: TokenSource, identity: Identity, ttl: Duration) -> Self {
        Self {
            client,
            token,
            identity,
            ttl,
        }
    }
}

impl CertificateProvider for RemoteCa {
    fn identity(&self) -> &Identity {
        &self.identity
    }

    async fn fetch(&self) -> Result<WorkloadCertificate, WorkloadError> {
        let token = self.token.read().await?;
        self.client
            .request_certificate(&token, &self.identity, self.ttl)
            .await
    }
}

/// Starts a [`CertificateManager`] for `identity` from Istio's CA service,
/// the way pilot-agent does from its flags: `ca_address` as `host:port` or
/// `https://host:port` (`CA_ADDR`), the PEM root that verifies the CA's
/// serving certificate, the bearer token, and the lifetime to ask for.
/// Resolves once the first certificate has been issued (retrying for up to
/// the default startup timeout); renewal then runs in the background.
pub async fn start_remote(
    ca_address: &str,
    ca_root_pem: &str,
    token: TokenSource,
    identity: Identity,
    ttl: Duration,
) -> Result<CertificateManager, WorkloadError> {
    let address = ca_address
        .strip_prefix("https://")
        .unwrap_or(ca_address)
        .trim_end_matches('/');
    let client = CaClient::new(CaClientConfig::new(address, ca_root_pem))?;
    let provider = RemoteCa::new(client, token, identity, ttl);
    CertificateManager::start(provider, RotationPolicy::default()).await
}

/// Obtains certificates from a CA in the same process (the embedded local
/// runtime, tests), through the same CSR path as a remote proxy.
#[derive(Debug, Clone)]
pub struct LocalCa {
    ca: Arc<CertificateAuthority>,
    identity: Identity,
    ttl: Duration,
}

impl LocalCa {
    pub fn new(ca: Arc<CertificateAuthority>, identity: Identity, ttl: Duration) -> Self {
        Self { ca, identity, ttl }
    }
}

impl CertificateProvider for LocalCa {
    fn identity(&self) -> &Identity {
        &self.identity
    }

    fn fetch(&self) -> impl Future<Output = Result<WorkloadCertificate, WorkloadError>> + Send {
        let result = generate_csr(&self.identity).and_then(|(key, csr)| {
            let chain = self.ca.sign_csr(&csr, &self.identity, Some(self.ttl))?;
            WorkloadCertificate::from_response(
                self.identity.clone(),
                key,
                &chain.to_response_chain(),
            )
        });
        std::future::ready(result)
    }
}

/// The host part of `host:port`, `[v6]:port` or a bare host.
fn host_of(address: &str) -> Option<&str> {
    if let Some(rest) = address.strip_prefix('[') {
        return rest
            .split_once(']')
            .map(|(host, _)| host)
            .filter(|h| !h.is_empty());
    }
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => address,
    };
    (!host.is_empty() && !host.contains(':')).then_some(host)
}

/// TCP then TLS with our own rustls configuration, for tonic's channel.
#[derive(Clone)]
struct TlsConnector {
    address: String,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
}

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(&this.address).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(this.tls)
                .connect(this.server_name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_parsing() {
        assert_eq!(host_of("127.0.0.1:15012"), Some("127.0.0.1"));
        assert_eq!(
            host_of("istiod.istio-system.svc:15012"),
            Some("istiod.istio-system.svc")
        );
        assert_eq!(host_of("[::1]:15012"), Some("::1"));
        assert_eq!(host_of("mizzen-pilot"), Some("mizzen-pilot"));
        assert_eq!(host_of(":15012"), None);
        assert_eq!(host_of("::1:15012"), None);
        assert_eq!(host_of("[]:1"), None);
    }

    #[test]
    fn csr_has_the_identity() {
        let id = Identity::in_default_domain("default", "sleep").unwrap();
        let (key, csr) = generate_csr(&id).unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert!(key.expose().contains("PRIVATE KEY"));
        assert_eq!(format!("{key:?}"), "PrivateKeyPem(<redacted>)");
    }
}
