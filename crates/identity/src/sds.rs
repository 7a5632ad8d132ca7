//! Envoy's Secret Discovery Service (SDS) for the workload certificate: the
//! part of Istio's pilot-agent that hands certificates to an Envoy sidecar.
//!
//! Envoy asks for secrets by name over a Unix socket (Istio's bootstrap has
//! a static cluster `sds-grpc` with `pipe: {path: ./var/run/secrets/workload-spiffe-uds/socket}`),
//! and Istio's listeners and clusters name two of them:
//!
//! * [`WORKLOAD_SECRET`] (`default`): a `Secret` with a `tls_certificate`,
//!   the workload's chain and private key as inline PEM;
//! * [`ROOT_SECRET`] (`ROOTCA`): a `Secret` with a `validation_context`
//!   whose `trusted_ca` is the mesh root bundle as inline PEM.
//!
//! Both come from one [`CertificateManager`]: every open stream is sent
//! the new certificate as soon as the manager rotates it, so Envoy never
//! serves an expired one. The private key crosses only the local socket,
//! to the proxy of the same workload; it is never logged.
//!
//! The service is state of the world (`StreamSecrets`), with ACK/NACK by
//! nonce as in ADS; `FetchSecrets` answers too, `DeltaSecrets` is refused.
//! Names other than the two above are logged and left out of responses.
//!
//! [`run_agent`] is the entry point for a pilot-agent-like program:
//! it serves SDS on a socket path until it is dropped.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::Stream;
use mizzen_xds::pb::envoy::config::core::v3::{DataSource, data_source};
use mizzen_xds::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use mizzen_xds::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use mizzen_xds::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use mizzen_xds::pb::google::protobuf::Any;
use mizzen_xds::type_url;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::workload::{CertificateManager, WorkloadCertificate};

/// The secret holding the workload certificate and key (Istio's name).
pub const WORKLOAD_SECRET: &str = "default";
/// The secret holding the mesh root bundle (Istio's name).
pub const ROOT_SECRET: &str = "ROOTCA";
/// Where Istio's sidecar bootstrap expects the socket, relative to the
/// proxy's working directory.
pub const DEFAULT_SOCKET_PATH: &str = "./var/run/secrets/workload-spiffe-uds/socket";
/// The name of the bootstrap cluster that reaches the socket (Istio's).
pub const SDS_CLUSTER: &str = "sds-grpc";

#[derive(Debug, thiserror::Error)]
pub enum SdsError {
    #[error("SDS socket {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("SDS socket {} is in use by a running server", .0.display())]
    InUse(PathBuf),
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    #[error("SDS server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The secret `name` built from `cert`, or `None` for a name this server
/// does not know.
pub fn secret(cert: &WorkloadCertificate, name: &str) -> Option<Secret> {
    let inline = |pem: &str| DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(pem.as_bytes().to_vec())),
        ..Default::default()
    };
    let kind = match name {
        WORKLOAD_SECRET => secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(cert.chain_pem())),
            private_key: Some(inline(cert.key_pem().expose())),
            ..Default::default()
        }),
        ROOT_SECRET => secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: Some(inline(cert.roots_pem())),
            ..Default::default()
        }),
        _ => return None,
    };
    Some(Secret {
        name: name.to_owned(),
        r#type: Some(kind),
    })
}

/// The version announced for responses built from `cert`: its serial, so
/// that Envoy's config_dump and the server's logs name the certificate.
fn version_of(cert: &WorkloadCertificate) -> String {
    cert.serial().to_owned()
}

/// The SDS gRPC service, backed by a certificate manager.
#[derive(Clone)]
pub struct SdsServer {
    manager: Arc<CertificateManager>,
    /// Set when serving stops, so that open streams end: Envoy keeps its
    /// SDS streams open for ever, and a graceful shutdown waits for them.
    closing: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for SdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdsServer")
            .field("identity", &self.manager.identity().to_uri())
            .finish()
    }
}

impl SdsServer {
    pub fn new(manager: Arc<CertificateManager>) -> Self {
        Self {
            manager,
            closing: Arc::new(watch::Sender::new(false)),
        }
    }

    pub fn into_service(self) -> SecretDiscoveryServiceServer<Self> {
        SecretDiscoveryServiceServer::new(self)
    }

    /// Serves SDS on a bound socket until `shutdown` completes (open
    /// streams are then ended) or the acceptor fails.
    pub async fn serve(
        self,
        socket: SdsSocket,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), SdsError> {
        let SdsSocket { listener, guard } = socket;
        let closing = self.closing.clone();
        let shutdown = async move {
            shutdown.await;
            closing.send_replace(true);
        };
        let result = tonic::transport::Server::builder()
            .add_service(self.into_service())
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
            .await;
        // The socket file goes when serving ends, not before.
        drop(guard);
        result.map_err(SdsError::from)
    }

    /// A unary answer, as `FetchSecrets` and the first response of a stream
    /// build it.
    fn response(
        &self,
        names: &[String],
        nonce: String,
        unknown: &mut HashSet<String>,
    ) -> DiscoveryResponse {
        let cert = self.manager.current();
        let mut resources: Vec<Any> = Vec::with_capacity(names.len());
        for name in names {
            match secret(&cert, name) {
                Some(secret) => resources.push(mizzen_xds::pack(&secret)),
                None => {
                    // Once per name and stream: Envoy repeats the name in
                    // every request.
                    if unknown.insert(name.clone()) {
                        tracing::warn!(
                            secret = %name,
                            "Envoy asked for an unknown secret; only \"default\" and \"ROOTCA\" are served"
                        );
                    }
                }
            }
        }
        DiscoveryResponse {
            version_info: version_of(&cert),
            resources,
            type_url: type_url::SECRET.to_owned(),
            nonce,
            ..Default::default()
        }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);
static NEXT_NONCE: AtomicU64 = AtomicU64::new(1);

#[tonic::async_trait]
impl SecretDiscoveryService for SdsServer {
    type DeltaSecretsStream = DeltaStream;
    type StreamSecretsStream = ResponseStream;

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Err(Status::unimplemented(
            "this SDS server is state of the world only; configure api_type GRPC",
        ))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        let mut updates = self.manager.subscribe();
        // Whatever is current now goes out with the first response.
        updates.borrow_and_update();
        let stream = SecretStream {
            server: self.clone(),
            closing: self.closing.subscribe(),
            updates,
            tx,
            id: NEXT_STREAM.fetch_add(1, Ordering::Relaxed),
            node: String::new(),
            names: Vec::new(),
            sent_nonce: None,
            sent_version: None,
            unknown: HashSet::new(),
        };
        tokio::spawn(stream.run(request.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let request = request.into_inner();
        check_type(&request.type_url)?;
        let response = self.response(&request.resource_names, String::new(), &mut HashSet::new());
        Ok(Response::new(response))
    }
}

fn check_type(type_url: &str) -> Result<(), Status> {
    // Envoy always sets the type; an empty one is taken to mean secrets.
    if type_url.is_empty() || type_url == type_url::SECRET {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "this server serves {} only, not {type_url}",
            type_url::SECRET
        )))
    }
}

/// One `StreamSecrets` stream: what the proxy subscribed to and what it was
/// last sent.
struct SecretStream {
    server: SdsServer,
    closing: watch::Receiver<bool>,
    updates: watch::Receiver<Arc<WorkloadCertificate>>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    id: u64,
    node: String,
    names: Vec<String>,
    sent_nonce: Option<String>,
    sent_version: Option<String>,
    unknown: HashSet<String>,
}

impl SecretStream {
    async fn run(mut self, mut inbound: Streaming<DiscoveryRequest>) {
        let mut closing = self.closing.clone();
        // The guard `wait_for` returns is not `Send`; it must not live
        // across an await of this task.
        let closed = async move {
            let _ = closing.wait_for(|closing| *closing).await;
        };
        tokio::pin!(closed);
        loop {
            let delivered = tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(request)) => self.on_request(request).await,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(stream = self.id, node = %self.node, %status, "SDS stream error");
                        break;
                    }
                },
                changed = self.updates.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.updates.borrow_and_update();
                    self.push().await
                }
                () = self.tx.closed() => break,
                () = &mut closed => break,
            };
            if !delivered {
                break;
            }
        }
        tracing::debug!(stream = self.id, node = %self.node, "SDS stream closed");
    }

    /// Handles one request; returns false when the stream is gone.
    async fn on_request(&mut self, request: DiscoveryRequest) -> bool {
        if let Err(status) = check_type(&request.type_url) {
            let _ = self.tx.send(Err(status)).await;
            return false;
        }
        if let Some(node) = &request.node
            && self.node.is_empty()
        {
            // Envoy sends the node only once (set_node_on_first_message_only).
            self.node = node.id.clone();
            tracing::info!(stream = self.id, node = %self.node, secrets = ?request.resource_names, "SDS stream opened");
        }
        if !request.response_nonce.is_empty() {
            if self.sent_nonce.as_deref() != Some(request.response_nonce.as_str()) {
                // A reply to a response that has since been superseded; the
                // reply to the latest one will follow.
                return true;
            }
            match &request.error_detail {
                Some(error) => tracing::warn!(
                    stream = self.id,
                    node = %self.node,
                    version = %request.version_info,
                    secrets = ?request.resource_names,
                    reason = %error.message,
                    "Envoy rejected secrets (NACK)"
                ),
                None => tracing::debug!(
                    stream = self.id,
                    node = %self.node,
                    version = %request.version_info,
                    "Envoy accepted secrets (ACK)"
                ),
            }
            if request.resource_names == self.names {
                return true;
            }
        }
        self.names = request.resource_names;
        self.send().await
    }

    /// After a rotation: sends the new certificate if this stream has not
    /// got it yet.
    async fn push(&mut self) -> bool {
        let version = version_of(&self.server.manager.current());
        if self.names.is_empty() || self.sent_version.as_deref() == Some(version.as_str()) {
            return true;
        }
        tracing::info!(stream = self.id, node = %self.node, %version, "pushing rotated certificate");
        self.send().await
    }

    async fn send(&mut self) -> bool {
        let nonce = NEXT_NONCE.fetch_add(1, Ordering::Relaxed).to_string();
        let response = self
            .server
            .response(&self.names, nonce.clone(), &mut self.unknown);
        self.sent_nonce = Some(nonce);
        self.sent_version = Some(response.version_info.clone());
        self.tx.send(Ok(response)).await.is_ok()
    }
}

/// A bound SDS socket. The socket file is removed when this (or the server
/// it was given to) is dropped, unless another server has replaced it.
#[derive(Debug)]
pub struct SdsSocket {
    listener: UnixListener,
    guard: SocketFile,
}

impl SdsSocket {
    /// Binds `path`: creates its parent directories and removes a socket
    /// left by a server that is no longer running. A socket with a live
    /// server behind it, or a file that is not a socket, is an error rather
    /// than something to delete. Must be called within a Tokio runtime.
    pub fn bind(path: impl AsRef<Path>) -> Result<Self, SdsError> {
        let path = path.as_ref();
        let io_error = |source| SdsError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io_error)?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(SdsError::InUse(path.to_owned()));
                }
                std::fs::remove_file(path).map_err(io_error)?;
            }
            Ok(_) => return Err(SdsError::NotASocket(path.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(e)),
        }
        let listener = UnixListener::bind(path).map_err(io_error)?;
        let inode = std::fs::symlink_metadata(path)
            .map(|m| (m.dev(), m.ino()))
            .map_err(io_error)?;
        Ok(Self {
            listener,
            guard: SocketFile {
                path: path.to_owned(),
                inode,
            },
        })
    }

    pub fn path(&self) -> &Path {
        &self.guard.path
    }
}

/// Removes the socket file on drop if it is still the one bound here.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    inode: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Serves SDS for `manager` on the Unix socket `path` until the server
/// fails or the future is dropped (see [`SdsSocket::bind`] for how the path
/// is prepared).
pub async fn serve_unix(
    path: impl AsRef<Path>,
    manager: Arc<CertificateManager>,
) -> Result<(), SdsError> {
    let socket = SdsSocket::bind(path)?;
    SdsServer::new(manager)
        .serve(socket, std::future::pending())
        .await
}

/// Istio's pilot-agent role for certificates: serves the workload
/// certificate of `manager` to the local Envoy over SDS on `socket`
/// (normally [`DEFAULT_SOCKET_PATH`] in the proxy's working directory,
/// which Envoy reaches through the bootstrap cluster [`SDS_CLUSTER`]).
///
/// The socket is bound when the future is first polled and served until
/// the future is dropped (abort the task running it to stop) or the server
/// fails; the socket file is removed either way.
/// Envoy is pushed each certificate the manager rotates to, so the caller
/// only has to keep the manager renewing.
pub async fn run_agent(
    manager: Arc<CertificateManager>,
    socket: impl AsRef<Path>,
) -> Result<(), SdsError> {
    let bound = SdsSocket::bind(socket)?;
    tracing::info!(
        identity = %manager.identity(),
        socket = %bound.path().display(),
        "serving workload certificates over SDS"
    );
    SdsServer::new(manager)
        .serve(bound, std::future::pending())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CertificateAuthority;
    use crate::spiffe::Identity;
    use crate::workload::generate_csr;
    use std::time::Duration;

    fn cert() -> WorkloadCertificate {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), "cluster.local").unwrap();
        let id = Identity::in_default_domain("default", "envoy-test").unwrap();
        let (key, csr) = generate_csr(&id).unwrap();
        let chain = ca
            .sign_csr(&csr, &id, Some(Duration::from_secs(3600)))
            .unwrap();
        WorkloadCertificate::from_response(id, key, &chain.to_response_chain()).unwrap()
    }

    fn inline(source: &Option<DataSource>) -> String {
        match source.as_ref().and_then(|s| s.specifier.as_ref()) {
            Some(data_source::Specifier::InlineBytes(bytes)) => {
                String::from_utf8(bytes.clone()).unwrap()
            }
            other => panic!("expected inline bytes, got {other:?}"),
        }
    }

    #[test]
    fn secrets_have_istio_shapes() {
        let cert = cert();
        let default = secret(&cert, WORKLOAD_SECRET).unwrap();
        assert_eq!(default.name, "default");
        let Some(secret::Type::TlsCertificate(tls)) = &default.r#type else {
            panic!("default is not a tls_certificate: {default:?}");
        };
        assert_eq!(inline(&tls.certificate_chain), cert.chain_pem());
        assert_eq!(inline(&tls.private_key), cert.key_pem().expose());

        let root = secret(&cert, ROOT_SECRET).unwrap();
        assert_eq!(root.name, "ROOTCA");
        let Some(secret::Type::ValidationContext(validation)) = &root.r#type else {
            panic!("ROOTCA is not a validation_context: {root:?}");
        };
        assert_eq!(inline(&validation.trusted_ca), cert.roots_pem());

        assert!(secret(&cert, "file-cert:/etc/certs/cert-chain.pem").is_none());
        assert_eq!(
            mizzen_xds::pack(&default).type_url,
            mizzen_xds::type_url::SECRET
        );
    }

    #[test]
    fn type_check() {
        assert!(check_type("").is_ok());
        assert!(check_type(type_url::SECRET).is_ok());
        assert_eq!(
            check_type(type_url::CLUSTER).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
