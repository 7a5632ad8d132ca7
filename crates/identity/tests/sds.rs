//! The SDS server over its Unix socket, with a gRPC client playing Envoy:
//! Istio's two secrets, ACK/NACK handling, rotation pushed to open
//! streams, and how the socket path is prepared and cleaned up.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use common::{id, new_ca};
use hyper_util::rt::TokioIo;
use mizzen_identity::sds::{self, SdsError, SdsServer, SdsSocket};
use mizzen_identity::workload::{CertificateManager, LocalCa, RotationPolicy};
use mizzen_identity::{tls::TrustBundle, x509};
use mizzen_xds::pb::envoy::config::core::v3::{DataSource, Node, data_source};
use mizzen_xds::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use mizzen_xds::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
};
use mizzen_xds::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use mizzen_xds::pb::google::rpc::Status as RpcStatus;
use mizzen_xds::type_url;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// How long a test waits for a response that must come.
const WAIT: Duration = Duration::from_secs(10);
/// How long a test listens for a response that must not come.
const QUIET: Duration = Duration::from_millis(300);

/// tonic's channel over a Unix socket.
#[derive(Clone)]
struct UdsConnector(PathBuf);

impl tower_service::Service<http::Uri> for UdsConnector {
    type Response = TokioIo<UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move { UnixStream::connect(path).await.map(TokioIo::new) })
    }
}

async fn client(path: &Path) -> SecretDiscoveryServiceClient<Channel> {
    let channel = Endpoint::from_static("http://sds.invalid")
        .connect_with_connector(UdsConnector(path.to_owned()))
        .await
        .unwrap();
    SecretDiscoveryServiceClient::new(channel)
}

/// One `StreamSecrets` stream, driven like Envoy drives it.
struct EnvoyStream {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: tonic::Streaming<DiscoveryResponse>,
}

impl EnvoyStream {
    async fn open(path: &Path, names: &[&str]) -> Self {
        let (tx, requests) = mpsc::channel(8);
        tx.send(DiscoveryRequest {
            node: Some(Node {
                id: "sidecar~127.0.0.1~envoy-test.default~default.svc.cluster.local".into(),
                ..Default::default()
            }),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            type_url: type_url::SECRET.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let rx = client(path)
            .await
            .stream_secrets(ReceiverStream::new(requests))
            .await
            .unwrap()
            .into_inner();
        Self { tx, rx }
    }

    async fn next(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("a response in time")
            .expect("no stream error")
            .expect("the stream is open")
    }

    async fn expect_quiet(&mut self) {
        if let Ok(message) = tokio::time::timeout(QUIET, self.rx.message()).await {
            panic!("expected no response, got {message:?}");
        }
    }

    async fn reply(&self, to: &DiscoveryResponse, names: &[&str], error: Option<&str>) {
        self.tx
            .send(DiscoveryRequest {
                version_info: to.version_info.clone(),
                resource_names: names.iter().map(|n| n.to_string()).collect(),
                type_url: type_url::SECRET.into(),
                response_nonce: to.nonce.clone(),
                error_detail: error.map(|message| RpcStatus {
                    code: tonic::Code::InvalidArgument as i32,
                    message: message.into(),
                    details: Vec::new(),
                }),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

fn secrets(response: &DiscoveryResponse) -> BTreeMap<String, Secret> {
    assert_eq!(response.type_url, type_url::SECRET);
    response
        .resources
        .iter()
        .map(|any| {
            let secret: Secret = mizzen_xds::unpack(any).unwrap();
            (secret.name.clone(), secret)
        })
        .collect()
}

fn inline(source: &Option<DataSource>) -> String {
    match source.as_ref().and_then(|s| s.specifier.as_ref()) {
        Some(data_source::Specifier::InlineBytes(bytes)) => {
            String::from_utf8(bytes.clone()).unwrap()
        }
        other => panic!("expected inline_bytes, got {other:?}"),
    }
}

/// The chain and key of a `default` secret.
fn certificate(secret: &Secret) -> (String, String) {
    match &secret.r#type {
        Some(secret::Type::TlsCertificate(tls)) => {
            (inline(&tls.certificate_chain), inline(&tls.private_key))
        }
        other => panic!("expected a tls_certificate, got {other:?}"),
    }
}

/// The trusted CA of a `ROOTCA` secret.
fn trusted_ca(secret: &Secret) -> String {
    match &secret.r#type {
        Some(secret::Type::ValidationContext(validation)) => inline(&validation.trusted_ca),
        other => panic!("expected a validation_context, got {other:?}"),
    }
}

/// Serves SDS on `path` until the returned sender is dropped or fired.
fn serve(
    path: &Path,
    manager: Arc<CertificateManager>,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), SdsError>>,
) {
    let socket = SdsSocket::bind(path).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(SdsServer::new(manager).serve(socket, async {
        let _ = stopped.await;
    }));
    (stop, task)
}

#[tokio::test]
async fn serves_both_secrets_with_ack_and_nack() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(&dir.path().join("ca"));
    let identity = id("default", "envoy-test");
    let manager = Arc::new(
        CertificateManager::start(
            LocalCa::new(ca.clone(), identity.clone(), Duration::from_secs(3600)),
            RotationPolicy::default(),
        )
        .await
        .unwrap(),
    );
    // Parent directories are created, as in a fresh pod.
    let path = dir
        .path()
        .join("var/run/secrets/workload-spiffe-uds/socket");
    let (stop, server) = serve(&path, manager.clone());

    let current = manager.current();
    let mut envoy = EnvoyStream::open(&path, &["default", "ROOTCA"]).await;
    let first = envoy.next().await;
    assert_eq!(first.version_info, current.serial());
    assert!(!first.nonce.is_empty());
    let got = secrets(&first);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["ROOTCA", "default"]);
    let (chain, key) = certificate(&got["default"]);
    assert_eq!(chain, current.chain_pem());
    assert_eq!(key, current.key_pem().expose());
    let leaf = x509::parse_certs_pem(&chain).unwrap();
    assert_eq!(
        x509::inspect(&leaf[0]).unwrap().spiffe_identity(),
        Some(identity.clone())
    );
    let roots = trusted_ca(&got["ROOTCA"]);
    assert_eq!(
        TrustBundle::from_pem(&roots).unwrap().certificates(),
        ca.trust_bundle().certificates()
    );

    // An ACK, a NACK and a reply to a superseded nonce change nothing.
    envoy.reply(&first, &["default", "ROOTCA"], None).await;
    envoy.expect_quiet().await;
    envoy
        .reply(&first, &["default", "ROOTCA"], Some("bad certificate"))
        .await;
    envoy.expect_quiet().await;
    let stale = DiscoveryResponse {
        nonce: "stale".into(),
        ..first.clone()
    };
    envoy.reply(&stale, &["default"], None).await;
    envoy.expect_quiet().await;

    // A changed subscription is answered; unknown names are left out.
    envoy
        .reply(
            &first,
            &["default", "file-root:/etc/certs/root-cert.pem"],
            None,
        )
        .await;
    let second = envoy.next().await;
    assert_ne!(second.nonce, first.nonce);
    assert_eq!(secrets(&second).keys().collect::<Vec<_>>(), ["default"]);
    envoy
        .reply(
            &second,
            &["default", "file-root:/etc/certs/root-cert.pem"],
            None,
        )
        .await;
    envoy.expect_quiet().await;

    // FetchSecrets answers the same; DeltaSecrets and other types are refused.
    let mut unary = client(&path).await;
    let fetched = unary
        .fetch_secrets(DiscoveryRequest {
            resource_names: vec!["ROOTCA".into()],
            type_url: type_url::SECRET.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(trusted_ca(&secrets(&fetched)["ROOTCA"]), roots);
    let delta = unary
        .delta_secrets(tokio_stream::iter(vec![DeltaDiscoveryRequest::default()]))
        .await
        .unwrap_err();
    assert_eq!(delta.code(), tonic::Code::Unimplemented);
    let wrong = unary
        .fetch_secrets(DiscoveryRequest {
            type_url: type_url::CLUSTER.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::InvalidArgument);

    // Stopping the server ends open streams and removes the socket.
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, server)
        .await
        .expect("the server stops with a stream open")
        .unwrap()
        .unwrap();
    let end = tokio::time::timeout(WAIT, envoy.rx.message())
        .await
        .unwrap();
    assert!(matches!(end, Ok(None)), "{end:?}");
    assert!(!path.exists());
    manager.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_is_pushed_to_every_stream() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(&dir.path().join("ca"));
    let identity = id("default", "envoy-test");
    let manager = Arc::new(
        CertificateManager::start(
            LocalCa::new(ca.clone(), identity.clone(), Duration::from_secs(3)),
            RotationPolicy {
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(500),
                ..RotationPolicy::default()
            },
        )
        .await
        .unwrap(),
    );
    let path = dir.path().join("sds.sock");
    let agent = tokio::spawn(sds::run_agent(manager.clone(), path.clone()));
    // `run_agent` binds on its first poll.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !path.exists() {
        assert!(tokio::time::Instant::now() < deadline, "no socket");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Envoy opens one stream per secret.
    let mut certs = EnvoyStream::open(&path, &["default"]).await;
    let mut roots = EnvoyStream::open(&path, &["ROOTCA"]).await;
    let first = certs.next().await;
    certs.reply(&first, &["default"], None).await;
    let first_roots = roots.next().await;
    roots.reply(&first_roots, &["ROOTCA"], None).await;
    let first_serial = first.version_info.clone();

    // The manager renews at about half of the 3 s lifetime; the new
    // certificate must arrive without any request from the client.
    let pushed = certs.next().await;
    assert_ne!(pushed.version_info, first_serial);
    let (chain, key) = certificate(&secrets(&pushed)["default"]);
    let current = manager.current();
    if current.serial() == pushed.version_info {
        assert_eq!(chain, current.chain_pem());
        assert_eq!(key, current.key_pem().expose());
    }
    let leaf = x509::parse_certs_pem(&chain).unwrap();
    let info = x509::inspect(&leaf[0]).unwrap();
    assert_eq!(info.serial, pushed.version_info);
    assert_eq!(info.spiffe_identity(), Some(identity));
    certs.reply(&pushed, &["default"], None).await;

    // The roots stream is pushed too (same bundle, new version).
    let pushed_roots = roots.next().await;
    assert_ne!(pushed_roots.version_info, first_roots.version_info);
    assert_eq!(
        trusted_ca(&secrets(&pushed_roots)["ROOTCA"]),
        trusted_ca(&secrets(&first_roots)["ROOTCA"])
    );

    // Aborting the task stops serving and removes the socket.
    agent.abort();
    let _ = agent.await;
    assert!(!path.exists());
    manager.shutdown();
}

#[tokio::test]
async fn socket_path_is_prepared_safely() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(&dir.path().join("ca"));
    let manager = Arc::new(
        CertificateManager::start(
            LocalCa::new(ca, id("default", "sleep"), Duration::from_secs(3600)),
            RotationPolicy::default(),
        )
        .await
        .unwrap(),
    );

    // A socket left by a crashed server is replaced.
    let path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let (stop, server) = serve(&path, manager.clone());
    let mut envoy = EnvoyStream::open(&path, &["default"]).await;
    envoy.next().await;

    // A live one is not.
    match SdsSocket::bind(&path) {
        Err(SdsError::InUse(p)) => assert_eq!(p, path),
        other => panic!("expected InUse, got {other:?}"),
    }
    // Nor is something that is not a socket.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    match SdsSocket::bind(&file) {
        Err(SdsError::NotASocket(p)) => assert_eq!(p, file),
        other => panic!("expected NotASocket, got {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");

    drop(envoy);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(!path.exists());
    manager.shutdown();
}
