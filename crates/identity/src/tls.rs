//! rustls configurations for mesh mTLS, with Istio's secure naming and ALPN.
//!
//! * Certificates are looked up at handshake time through a [`CertSource`],
//!   so when the [`CertificateManager`] rotates, new handshakes present the
//!   new certificate while established connections carry on untouched; no
//!   configuration is rebuilt.
//! * Clients check the server's SPIFFE URI SAN against the identities they
//!   expect for the destination (secure naming) instead of a DNS name: in a
//!   mesh the SNI is a cluster name such as
//!   `outbound_.8080_._.reviews.default.svc.cluster.local`, and what must be
//!   proven is *who* runs the service.
//!
//! # ALPN
//!
//! Values as Istio's pilot programs Envoy (istio/istio
//! `pilot/pkg/networking/util` and the `istio.alpn` HTTP filter):
//!
//! | side | traffic | ALPN offered / accepted |
//! |---|---|---|
//! | client | HTTP/1.0 | `istio-http/1.0`, `istio`, `http/1.0` |
//! | client | HTTP/1.1 | `istio-http/1.1`, `istio`, `http/1.1` |
//! | client | HTTP/2 | `istio-h2`, `istio`, `h2` |
//! | client | TCP | `istio` (Istio's `ALPNInMesh`) |
//! | client | TCP with metadata exchange | `istio-peer-exchange`, `istio` |
//! | server | default | `h2`, `http/1.1`, `istio` |
//! | server | with metadata exchange | `istio-peer-exchange`, `h2`, `http/1.1`, `istio` |
//!
//! The `istio-*` values only mark the connection as in-mesh: Envoy's inbound
//! listener matches filter chains on the protocols the client *offered*
//! (`application_protocols`), while the protocol actually *negotiated* is
//! `h2` or `http/1.1`, which is what decides the codec. So a Mizzen server
//! lists the real protocols first, as Envoy's sidecar does with
//! `ALPNDownstream`/`ALPNHttp`.
//!
//! Two deliberate differences from a literal copy of Envoy's server list:
//!
//! * `istio` is accepted last. BoringSSL (Envoy) simply negotiates nothing
//!   when the lists do not overlap, but rustls aborts the handshake with
//!   `no_application_protocol`; listing `istio` last keeps TCP clients that
//!   offer only `istio` working, and it never wins over `h2`/`http/1.1`. For
//!   any other non-overlapping offer, see [`negotiable`].
//! * `istio-peer-exchange` is not selected by default. Negotiating it obliges
//!   both ends to run Istio's TCP metadata-exchange preamble; an Envoy client
//!   that sees it negotiated would prepend that preamble to the stream. Only a
//!   server that implements the exchange may use
//!   [`alpn::SERVER_WITH_PEER_EXCHANGE`]. Likewise Mizzen clients offer plain
//!   `istio` for TCP, so an Envoy server never negotiates the exchange with
//!   them.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, CommonState, DigitallySignedStruct, OtherError, RootCertStore,
    ServerConfig, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use crate::spiffe::Identity;
use crate::workload::{CertificateManager, WorkloadCertificate};
use crate::x509::{self, CertParseError};

/// ALPN protocol ids used in the mesh (see the module documentation).
pub mod alpn {
    pub const ISTIO: &[u8] = b"istio";
    pub const ISTIO_PEER_EXCHANGE: &[u8] = b"istio-peer-exchange";
    pub const ISTIO_HTTP10: &[u8] = b"istio-http/1.0";
    pub const ISTIO_HTTP11: &[u8] = b"istio-http/1.1";
    pub const ISTIO_H2: &[u8] = b"istio-h2";
    pub const HTTP10: &[u8] = b"http/1.0";
    pub const HTTP11: &[u8] = b"http/1.1";
    pub const H2: &[u8] = b"h2";

    /// What a Mizzen server accepts by default, in order of preference.
    pub const SERVER: &[&[u8]] = &[H2, HTTP11, ISTIO];
    /// For a server that implements Istio's TCP metadata exchange.
    pub const SERVER_WITH_PEER_EXCHANGE: &[&[u8]] = &[ISTIO_PEER_EXCHANGE, H2, HTTP11, ISTIO];

    /// Whether a client's offer marks it as an Istio/Mizzen sidecar, which is
    /// how Envoy's inbound listener tells mesh mTLS from other TLS.
    pub fn is_mesh_offer<'a>(mut offered: impl Iterator<Item = &'a [u8]>) -> bool {
        offered.any(|p| p == ISTIO || p.starts_with(b"istio-"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Parse(#[from] CertParseError),
    #[error("the trust bundle holds no certificate")]
    EmptyBundle,
    #[error("invalid trust anchor: {0}")]
    BadRoot(#[source] rustls::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("the certificate chain does not verify: {0}")]
    ChainInvalid(#[source] rustls::Error),
}

/// The mesh roots: certificates accepted as trust anchors for peers.
#[derive(Clone)]
pub struct TrustBundle {
    pem: Arc<str>,
    certs: Arc<[CertificateDer<'static>]>,
    store: Arc<RootCertStore>,
}

impl std::fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustBundle")
            .field("roots", &self.certs.len())
            .finish()
    }
}

impl TrustBundle {
    pub fn from_pem(pem: &str) -> Result<Self, TlsError> {
        Self::from_der(x509::parse_certs_pem(pem)?)
    }

    pub fn from_der(certs: Vec<CertificateDer<'static>>) -> Result<Self, TlsError> {
        if certs.is_empty() {
            return Err(TlsError::EmptyBundle);
        }
        let mut store = RootCertStore::empty();
        for cert in &certs {
            store.add(cert.clone()).map_err(TlsError::BadRoot)?;
        }
        Ok(Self {
            pem: x509::certs_to_pem(&certs).into(),
            certs: certs.into(),
            store: Arc::new(store),
        })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    pub fn root_store(&self) -> Arc<RootCertStore> {
        self.store.clone()
    }

    pub fn contains(&self, cert: &CertificateDer<'_>) -> bool {
        self.certs.iter().any(|c| c.as_ref() == cert.as_ref())
    }

    /// Checks that `chain` (leaf first, then intermediates) leads to one of
    /// these roots and is valid at `now`, as a TLS peer would.
    pub fn verify_chain(
        &self,
        chain: &[CertificateDer<'_>],
        now: SystemTime,
    ) -> Result<(), TlsError> {
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or(TlsError::Parse(CertParseError::Missing("CERTIFICATE")))?;
        let parsed = ParsedCertificate::try_from(leaf).map_err(TlsError::ChainInvalid)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.store,
            intermediates,
            unix_time(now),
            crate::crypto_provider()
                .signature_verification_algorithms
                .all,
        )
        .map_err(TlsError::ChainInvalid)
    }
}

/// Where the certificate presented in a handshake comes from: fixed, or the
/// current certificate of a [`CertificateManager`], read at each handshake.
#[derive(Clone)]
pub struct CertSource(SourceKind);

#[derive(Clone)]
enum SourceKind {
    Fixed(Arc<CertifiedKey>),
    Managed(CertificateManager),
}

impl std::fmt::Debug for CertSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            SourceKind::Fixed(_) => f.write_str("CertSource::Fixed"),
            SourceKind::Managed(m) => write!(f, "CertSource::Managed({})", m.identity()),
        }
    }
}

impl CertSource {
    /// Always presents `cert`.
    pub fn fixed(cert: &WorkloadCertificate) -> Result<Self, TlsError> {
        Ok(Self(SourceKind::Fixed(cert.certified_key()?)))
    }

    /// Presents a chain and key given as PEM, checking only that they belong
    /// together: for certificates from outside the mesh CA (gateway
    /// credentials, DestinationRule `MUTUAL` client certificates).
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let chain = x509::parse_certs_pem(chain_pem)?;
        let key = x509::parse_key_pem(key_pem)?;
        let certified = CertifiedKey::from_der(chain, key, &crate::crypto_provider())?;
        Ok(Self(SourceKind::Fixed(Arc::new(certified))))
    }

    /// The certificate and key to present now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        match &self.0 {
            SourceKind::Fixed(key) => key.clone(),
            SourceKind::Managed(manager) => manager.certified_key(),
        }
    }
}

impl From<CertificateManager> for CertSource {
    fn from(manager: CertificateManager) -> Self {
        Self(SourceKind::Managed(manager))
    }
}

impl From<&CertificateManager> for CertSource {
    fn from(manager: &CertificateManager) -> Self {
        Self(SourceKind::Managed(manager.clone()))
    }
}

#[derive(Debug)]
struct Resolver(CertSource);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Whether a server demands a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// STRICT: a client without a mesh certificate fails the handshake.
    Required,
    /// PERMISSIVE: a client may present no certificate; one that presents a
    /// certificate must still present a valid one. [`peer_identity`] is then
    /// `None` for unauthenticated peers.
    Optional,
}

/// The application protocol a client will speak over the connection; it
/// selects the ALPN offer (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshProtocol {
    Http10,
    Http11,
    Http2,
    Tcp,
    /// TCP with Istio's metadata exchange, only for clients implementing it.
    TcpWithPeerExchange,
}

impl MeshProtocol {
    pub fn client_alpn(self) -> Vec<Vec<u8>> {
        let list: &[&[u8]] = match self {
            MeshProtocol::Http10 => &[alpn::ISTIO_HTTP10, alpn::ISTIO, alpn::HTTP10],
            MeshProtocol::Http11 => &[alpn::ISTIO_HTTP11, alpn::ISTIO, alpn::HTTP11],
            MeshProtocol::Http2 => &[alpn::ISTIO_H2, alpn::ISTIO, alpn::H2],
            MeshProtocol::Tcp => &[alpn::ISTIO],
            MeshProtocol::TcpWithPeerExchange => &[alpn::ISTIO_PEER_EXCHANGE, alpn::ISTIO],
        };
        list.iter().map(|p| p.to_vec()).collect()
    }
}

/// A server configuration for an inbound mesh listener: presents the
/// workload certificate, verifies client certificates against `roots`, and
/// accepts [`alpn::SERVER`].
pub fn server_config(
    certs: CertSource,
    roots: &TrustBundle,
    client_auth: ClientAuth,
) -> Result<ServerConfig, TlsError> {
    server_config_with_alpn(certs, roots, client_auth, alpn::SERVER)
}

/// [`server_config`] with an explicit ALPN list, in order of preference.
pub fn server_config_with_alpn(
    certs: CertSource,
    roots: &TrustBundle,
    client_auth: ClientAuth,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TlsError> {
    let provider = crate::crypto_provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots.root_store(), provider.clone());
    let verifier = match client_auth {
        ClientAuth::Required => verifier,
        ClientAuth::Optional => verifier.allow_unauthenticated(),
    }
    .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Resolver(certs)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A client configuration for an outbound mesh connection: presents the
/// workload certificate and accepts the server only if its chain verifies to
/// `roots` and its URI SAN is one of `expected` (secure naming).
///
/// An empty `expected` accepts any identity with a valid chain, which is
/// what Envoy does when a cluster lists no subject alt names (Istio leaves
/// them empty when it knows no service account for the destination).
///
/// The server name passed to `connect` is only sent as SNI (use Istio's
/// `outbound_.PORT_.SUBSET_.HOST` form to reach Envoy sidecars' filter
/// chains); it is not checked against the certificate.
pub fn client_config(
    certs: CertSource,
    roots: &TrustBundle,
    expected: Vec<Identity>,
    protocol: MeshProtocol,
) -> Result<ClientConfig, TlsError> {
    let provider = crate::crypto_provider();
    let verifier = Arc::new(SpiffeServerVerifier::new(roots, expected, &provider));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(Resolver(certs)));
    config.alpn_protocols = protocol.client_alpn();
    Ok(config)
}

/// What a peer's leaf certificate must name, checked once its chain has
/// verified. In the mesh this replaces the DNS name check: the SNI names a
/// cluster, while what must be proven is who the peer is.
pub trait PeerNames: std::fmt::Debug + Send + Sync {
    /// `Ok` when `leaf` names an acceptable peer; otherwise the error rustls
    /// reports (see [`leaf_names`] and [`name_mismatch`]).
    fn check_names(&self, leaf: &CertificateDer<'_>) -> Result<(), rustls::Error>;
}

/// The parsed leaf a [`PeerNames`] check reads the SANs from; a leaf that
/// does not parse is a badly encoded certificate.
pub fn leaf_names(leaf: &CertificateDer<'_>) -> Result<x509::CertInfo, rustls::Error> {
    x509::inspect(leaf)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))
}

/// A failed [`PeerNames`] check as a certificate error, so the handshake
/// fails with `err` as its cause.
pub fn name_mismatch(err: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(err))))
}

/// Verifies a server certificate: webpki checks that the chain leads to
/// the trust anchors and is valid now, then `N` checks the names in the
/// leaf instead of a DNS name.
#[derive(Debug)]
pub struct ServerVerifier<N> {
    /// The trust anchors and the name check; `None` accepts any certificate.
    anchors: Option<(Arc<RootCertStore>, N)>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl<N: PeerNames> ServerVerifier<N> {
    pub fn with_roots(roots: Arc<RootCertStore>, names: N, provider: &CryptoProvider) -> Self {
        Self {
            anchors: Some((roots, names)),
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// Accepts any server certificate, as Envoy does for a cluster without a
    /// validation context. The handshake signature is still checked, so the
    /// server must hold the key of the certificate it presents.
    pub fn accepting_any(provider: &CryptoProvider) -> Self {
        Self {
            anchors: None,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

/// Secure naming: the server must present a SPIFFE URI SAN among `expected`.
/// An empty list accepts any identity.
#[derive(Debug, Clone)]
pub struct SecureNaming {
    expected: Vec<Identity>,
}

/// The server's certificate is valid but names nobody the client expected.
#[derive(Debug, thiserror::Error)]
#[error("secure naming: server presented {presented:?}, expected one of {expected:?}")]
pub struct SecureNamingError {
    pub presented: Vec<String>,
    pub expected: Vec<String>,
}

impl PeerNames for SecureNaming {
    fn check_names(&self, leaf: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if self.expected.is_empty() {
            return Ok(());
        }
        let presented = leaf_names(leaf)?.uri_sans;
        let matches = presented.iter().any(|uri| {
            uri.parse::<Identity>()
                .is_ok_and(|id| self.expected.contains(&id))
        });
        if matches {
            Ok(())
        } else {
            Err(name_mismatch(SecureNamingError {
                presented,
                expected: self.expected.iter().map(Identity::to_uri).collect(),
            }))
        }
    }
}

/// Verifies a server certificate chain against the mesh roots, then checks
/// its SPIFFE URI SAN instead of a DNS name.
pub type SpiffeServerVerifier = ServerVerifier<SecureNaming>;

impl SpiffeServerVerifier {
    pub fn new(roots: &TrustBundle, expected: Vec<Identity>, provider: &CryptoProvider) -> Self {
        Self::with_roots(roots.root_store(), SecureNaming { expected }, provider)
    }
}

impl<N: PeerNames> ServerCertVerifier for ServerVerifier<N> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some((roots, names)) = &self.anchors else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        names.check_names(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The SPIFFE identity of the authenticated peer of a finished handshake
/// (the first URI SAN of its leaf certificate, as Envoy's principal), or
/// `None` if it presented no certificate or one without a SPIFFE ID.
pub fn peer_identity(conn: &CommonState) -> Option<Identity> {
    let leaf = conn.peer_certificates()?.first()?;
    x509::inspect(leaf).ok()?.spiffe_identity()
}

/// Gives Envoy's ALPN behaviour to a server that reads the ClientHello
/// first (`tokio_rustls::LazyConfigAcceptor`): if the client offers ALPN
/// values of which the server accepts none, BoringSSL completes the
/// handshake without ALPN, while rustls would abort it. This returns
/// `config` unchanged when there is an overlap or no offer, and otherwise a
/// copy without ALPN.
pub fn negotiable(config: &Arc<ServerConfig>, hello: &ClientHello<'_>) -> Arc<ServerConfig> {
    let Some(mut offered) = hello.alpn() else {
        return config.clone();
    };
    if offered.any(|p| config.alpn_protocols.iter().any(|ours| ours == p)) {
        return config.clone();
    }
    let mut relaxed = (**config).clone();
    relaxed.alpn_protocols.clear();
    Arc::new(relaxed)
}

/// How long a client gets to complete the TLS handshake on a
/// [`TlsIncoming`] listener before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a tonic service sees about a TLS connection
/// (`request.extensions().get::<TlsConnectInfo>()`).
#[derive(Debug, Clone)]
pub struct TlsConnectInfo {
    pub remote_addr: SocketAddr,
    pub local_addr: SocketAddr,
    pub peer_identity: Option<Identity>,
    pub alpn: Option<Vec<u8>>,
}

/// A TLS connection accepted by [`TlsIncoming`].
pub struct ServerTlsStream {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: TlsConnectInfo,
}

impl ServerTlsStream {
    pub fn info(&self) -> &TlsConnectInfo {
        &self.info
    }

    pub fn get_ref(&self) -> &tokio_rustls::server::TlsStream<TcpStream> {
        &self.inner
    }
}

impl AsyncRead for ServerTlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerTlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for ServerTlsStream {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

/// Accepts TCP connections and completes TLS handshakes concurrently, off
/// the accept loop, so one slow client cannot hold up the others. Feed it to
/// `tonic::transport::Server::serve_with_incoming`. Failed handshakes are
/// logged and dropped. Dropping the stream stops the listener and aborts
/// handshakes in progress.
pub struct TlsIncoming {
    rx: mpsc::Receiver<ServerTlsStream>,
    task: AbortHandle,
}

impl TlsIncoming {
    /// Must be called inside a tokio runtime.
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let task = tokio::spawn(accept_loop(listener, acceptor, tx)).abort_handle();
        Self { rx, task }
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl futures::Stream for TlsIncoming {
    type Item = Result<ServerTlsStream, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|conn| conn.map(Ok))
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    tx: mpsc::Sender<ServerTlsStream>,
) {
    // Handshakes live in the JoinSet so that aborting this task (when the
    // TlsIncoming is dropped) aborts them too.
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote_addr)) => {
                    handshakes.spawn(handshake(acceptor.clone(), tcp, remote_addr, tx.clone()));
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of
                    // spinning on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            () = tx.closed() => return,
        }
    }
}

async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    remote_addr: SocketAddr,
    tx: mpsc::Sender<ServerTlsStream>,
) {
    let _ = tcp.set_nodelay(true);
    let Ok(local_addr) = tcp.local_addr() else {
        return;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            let (_, conn) = tls.get_ref();
            let info = TlsConnectInfo {
                remote_addr,
                local_addr,
                peer_identity: peer_identity(conn),
                alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            };
            let _ = tx.send(ServerTlsStream { inner: tls, info }).await;
        }
        Ok(Err(e)) => tracing::debug!(%remote_addr, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%remote_addr, "TLS handshake timed out"),
    }
}

fn unix_time(t: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(t.duration_since(UNIX_EPOCH).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_alpn_matches_istio() {
        let as_str = |p: MeshProtocol| {
            p.client_alpn()
                .into_iter()
                .map(|v| String::from_utf8(v).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            as_str(MeshProtocol::Http11),
            ["istio-http/1.1", "istio", "http/1.1"]
        );
        assert_eq!(as_str(MeshProtocol::Http2), ["istio-h2", "istio", "h2"]);
        assert_eq!(
            as_str(MeshProtocol::Http10),
            ["istio-http/1.0", "istio", "http/1.0"]
        );
        assert_eq!(as_str(MeshProtocol::Tcp), ["istio"]);
        assert_eq!(
            as_str(MeshProtocol::TcpWithPeerExchange),
            ["istio-peer-exchange", "istio"]
        );
    }

    /// Server preference order decides in rustls: the real protocol must win
    /// over the `istio` marker for every client offer.
    #[test]
    fn server_selects_the_real_protocol() {
        let select = |offer: Vec<Vec<u8>>| {
            alpn::SERVER
                .iter()
                .find(|ours| offer.iter().any(|o| o.as_slice() == **ours))
                .map(|p| String::from_utf8(p.to_vec()).unwrap())
        };
        assert_eq!(
            select(MeshProtocol::Http11.client_alpn()).as_deref(),
            Some("http/1.1")
        );
        assert_eq!(
            select(MeshProtocol::Http2.client_alpn()).as_deref(),
            Some("h2")
        );
        assert_eq!(
            select(MeshProtocol::Tcp.client_alpn()).as_deref(),
            Some("istio")
        );
        assert_eq!(
            select(MeshProtocol::TcpWithPeerExchange.client_alpn()).as_deref(),
            Some("istio")
        );
    }

    #[test]
    fn mesh_offer_detection() {
        assert!(alpn::is_mesh_offer(
            [&b"istio-http/1.1"[..], b"http/1.1"].into_iter()
        ));
        assert!(alpn::is_mesh_offer([&b"istio"[..]].into_iter()));
        assert!(!alpn::is_mesh_offer([&b"h2"[..], b"http/1.1"].into_iter()));
    }

    #[test]
    fn empty_bundle_is_an_error() {
        assert!(matches!(
            TrustBundle::from_der(Vec::new()),
            Err(TlsError::EmptyBundle)
        ));
        assert!(TrustBundle::from_pem("garbage").is_err());
    }
}
