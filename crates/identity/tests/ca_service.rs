//! Istio's certificate service end to end: TLS on a loopback port, bearer
//! tokens, Istio's response shape.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{id, new_ca};
use mizzen_identity::auth::StaticTokens;
use mizzen_identity::ca::CertificateAuthority;
use mizzen_identity::ca::service::CaService;
use mizzen_identity::tls::TlsIncoming;
use mizzen_identity::workload::{
    CaClient, CaClientConfig, CertificateManager, RemoteCa, RotationPolicy, TokenSource,
    WorkloadError, generate_csr, request_certificate,
};
use mizzen_identity::x509;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Pilot {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Pilot {
    async fn start(ca: Arc<CertificateAuthority>, tokens: StaticTokens) -> Pilot {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = ca
            .serving_config(["127.0.0.1", "istiod.istio-system.svc", "mizzen-pilot"])
            .unwrap();
        let incoming = TlsIncoming::new(listener, Arc::new(config));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(CaService::new(ca, tokens).into_server())
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        Pilot {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
    }
}

fn status_code(err: &WorkloadError) -> Option<tonic::Code> {
    match err {
        WorkloadError::Rejected(status) => Some(status.code()),
        _ => None,
    }
}

#[tokio::test]
async fn create_certificate_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let tokens = StaticTokens::new();
    let sleep = id("default", "sleep");
    let token = tokens.mint(sleep.clone()).unwrap();
    let pilot = Pilot::start(ca.clone(), tokens.clone()).await;
    let address = pilot.addr.to_string();

    // Good token: a validated certificate for the token's identity.
    let cert = request_certificate(
        &address,
        ca.root_bundle(),
        &token,
        &sleep,
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    assert_eq!(cert.identity(), &sleep);
    assert_eq!(cert.roots_pem(), ca.root_bundle());
    let ttl = cert.not_after().duration_since(SystemTime::now()).unwrap();
    assert!(ttl > Duration::from_secs(3590) && ttl <= Duration::from_secs(3600));

    // The raw response has Istio's shape: leaf first, root last.
    let client = CaClient::new(CaClientConfig::new(address.clone(), ca.root_bundle())).unwrap();
    let (_key, csr) = generate_csr(&sleep).unwrap();
    let chain = client.sign(&csr, &token, Duration::ZERO).await.unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], ca.root_bundle());
    let leaf = x509::parse_certs_pem(&chain[0]).unwrap().remove(0);
    let info = x509::inspect(&leaf).unwrap();
    assert_eq!(info.spiffe_identity(), Some(sleep.clone()));
    // Zero validity means the CA default (24 h).
    let ttl = info.not_after.duration_since(SystemTime::now()).unwrap();
    assert!(ttl > Duration::from_secs(23 * 3600));

    // A CSR made for another identity still yields the token's identity.
    let (_key, other_csr) = generate_csr(&id("istio-system", "istiod")).unwrap();
    let chain = client
        .sign(&other_csr, &token, Duration::from_secs(600))
        .await
        .unwrap();
    let leaf = x509::parse_certs_pem(&chain[0]).unwrap().remove(0);
    assert_eq!(
        x509::inspect(&leaf).unwrap().spiffe_identity(),
        Some(sleep.clone())
    );

    // Bad token.
    let err = client
        .sign(&csr, "not-a-token", Duration::from_secs(600))
        .await
        .unwrap_err();
    assert_eq!(
        status_code(&err),
        Some(tonic::Code::Unauthenticated),
        "{err}"
    );
    // Revoked token.
    let revoked = tokens.mint(sleep.clone()).unwrap();
    tokens.revoke(&revoked);
    let err = client
        .sign(&csr, &revoked, Duration::from_secs(600))
        .await
        .unwrap_err();
    assert_eq!(
        status_code(&err),
        Some(tonic::Code::Unauthenticated),
        "{err}"
    );

    // Garbage CSR.
    let err = client
        .sign("garbage", &token, Duration::from_secs(600))
        .await
        .unwrap_err();
    assert_eq!(
        status_code(&err),
        Some(tonic::Code::InvalidArgument),
        "{err}"
    );
    if let WorkloadError::Rejected(status) = &err {
        assert!(
            status.message().contains("invalid CSR"),
            "{}",
            status.message()
        );
    }

    // More than the maximum lifetime.
    let err = client
        .sign(&csr, &token, Duration::from_secs(365 * 24 * 3600))
        .await
        .unwrap_err();
    assert_eq!(
        status_code(&err),
        Some(tonic::Code::InvalidArgument),
        "{err}"
    );

    // A client that does not trust the pilot's CA refuses to talk to it.
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = new_ca(other_dir.path());
    let err = request_certificate(
        &address,
        other_ca.root_bundle(),
        &token,
        &sleep,
        Duration::from_secs(600),
    )
    .await
    .unwrap_err();
    assert_eq!(status_code(&err), Some(tonic::Code::Unavailable), "{err}");

    // The server name is checked too: the pilot's certificate does not name
    // this host.
    let mut config = CaClientConfig::new(address.clone(), ca.root_bundle());
    config.server_name = Some("evil.example.com".into());
    let err = CaClient::new(config)
        .unwrap()
        .request_certificate(&token, &sleep, Duration::from_secs(600))
        .await
        .unwrap_err();
    assert_eq!(status_code(&err), Some(tonic::Code::Unavailable), "{err}");

    // The proxy's path: a manager fed by the remote CA, token from a file.
    let token_file = dir.path().join("pods/sleep/istio-token");
    tokens.mint_to_file(sleep.clone(), &token_file).unwrap();
    let provider = RemoteCa::new(
        CaClient::new(CaClientConfig::new(address.clone(), ca.root_bundle())).unwrap(),
        TokenSource::File(token_file),
        sleep.clone(),
        Duration::from_secs(3600),
    );
    let manager = CertificateManager::start(provider, RotationPolicy::default())
        .await
        .unwrap();
    assert_eq!(manager.current().identity(), &sleep);
    let status = serde_json::to_value(manager.status()).unwrap();
    assert_eq!(
        status["identity"],
        "spiffe://cluster.local/ns/default/sa/sleep"
    );
    assert_eq!(status["issuer"], "O=cluster.local");
    manager.shutdown();

    pilot.stop().await;
}

#[tokio::test]
async fn startup_gives_up_when_the_ca_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let pilot = Pilot::start(ca.clone(), StaticTokens::new()).await;
    let provider = RemoteCa::new(
        CaClient::new(CaClientConfig::new(
            pilot.addr.to_string(),
            ca.root_bundle(),
        ))
        .unwrap(),
        TokenSource::from_token("unknown"),
        id("default", "sleep"),
        Duration::from_secs(3600),
    );
    let policy = RotationPolicy {
        initial_backoff: Duration::from_millis(50),
        startup_timeout: Duration::from_millis(500),
        ..RotationPolicy::default()
    };
    let err = CertificateManager::start(provider, policy)
        .await
        .unwrap_err();
    assert_eq!(
        status_code(&err),
        Some(tonic::Code::Unauthenticated),
        "{err}"
    );
    pilot.stop().await;
}
