//! Certificate rotation under load: with a 4 s lifetime both sides renew
//! every ~2 s while new handshakes keep coming; none may fail, the served
//! serial must change, and a connection opened before the first rotation
//! must survive the expiry of the certificate it was made with.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{id, new_ca};
use mizzen_identity::tls::{self, CertSource, ClientAuth, MeshProtocol, TrustBundle};
use mizzen_identity::workload::{CertificateManager, LocalCa, RotationPolicy};
use mizzen_identity::x509;
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const TTL: Duration = Duration::from_secs(4);
const RUN_FOR: Duration = Duration::from_secs(9);

fn policy() -> RotationPolicy {
    RotationPolicy {
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
        ..RotationPolicy::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_loses_no_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let roots = TrustBundle::from_pem(ca.root_bundle()).unwrap();
    let reviews = id("default", "reviews");
    let productpage = id("default", "productpage");

    let server_certs =
        CertificateManager::start(LocalCa::new(ca.clone(), reviews.clone(), TTL), policy())
            .await
            .unwrap();
    let client_certs =
        CertificateManager::start(LocalCa::new(ca.clone(), productpage.clone(), TTL), policy())
            .await
            .unwrap();
    let mut server_updates = server_certs.subscribe();
    let first_serial = server_certs.current().serial().to_string();

    let server_config = Arc::new(
        tls::server_config(
            CertSource::from(&server_certs),
            &roots,
            ClientAuth::Required,
        )
        .unwrap(),
    );
    let mut client_config = tls::client_config(
        CertSource::from(&client_certs),
        &roots,
        vec![reviews.clone()],
        MeshProtocol::Http11,
    )
    .unwrap();
    // Every connection must make a full handshake, so that each one reads the
    // certificate in use at that moment.
    client_config.resumption = Resumption::disabled();
    let client_config = Arc::new(client_config);

    // Echo server: replies to each 4-byte message with the serial of the
    // client certificate it authenticated, so the client side can see both.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
    let server = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            conns.spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let client_serial = {
                    let (_, conn) = tls.get_ref();
                    let leaf = &conn.peer_certificates().unwrap()[0];
                    x509::inspect(leaf).unwrap().serial
                };
                let mut buf = [0u8; 4];
                while tls.read_exact(&mut buf).await.is_ok() {
                    let reply = format!("{client_serial:>40}");
                    if tls.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
            while conns.try_join_next().is_some() {}
        }
    });

    async fn connect(
        config: Arc<rustls::ClientConfig>,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name =
            ServerName::try_from("outbound_.9080_._.reviews.default.svc.cluster.local").unwrap();
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    }
    async fn ping(tls: &mut tokio_rustls::client::TlsStream<TcpStream>) -> std::io::Result<String> {
        tls.write_all(b"ping").await?;
        let mut buf = [0u8; 40];
        tls.read_exact(&mut buf).await?;
        Ok(String::from_utf8_lossy(&buf).trim().to_string())
    }

    // Opened before any rotation and kept for the whole test.
    let mut long_lived = connect(client_config.clone(), addr).await.unwrap();
    ping(&mut long_lived).await.unwrap();

    let mut server_serials = BTreeSet::new();
    let mut client_serials = BTreeSet::new();
    let mut handshakes = 0u32;
    let mut failures = Vec::new();
    let started = Instant::now();
    while started.elapsed() < RUN_FOR {
        let result = async {
            let mut tls = connect(client_config.clone(), addr).await?;
            let client_serial = ping(&mut tls).await?;
            let (_, conn) = tls.get_ref();
            let server_serial = x509::inspect(&conn.peer_certificates().unwrap()[0])
                .unwrap()
                .serial;
            assert_eq!(tls::peer_identity(conn).as_ref(), Some(&reviews));
            tls.shutdown().await?;
            Ok::<_, std::io::Error>((server_serial, client_serial))
        }
        .await;
        handshakes += 1;
        match result {
            Ok((server_serial, client_serial)) => {
                server_serials.insert(server_serial);
                client_serials.insert(client_serial);
            }
            Err(e) => failures.push(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The first certificates have expired by now; the old connection does
    // not care.
    assert!(server_certs.current().serial() != first_serial);
    ping(&mut long_lived).await.unwrap();

    assert!(
        failures.is_empty(),
        "{} of {handshakes} handshakes failed: {failures:?}",
        failures.len()
    );
    assert!(handshakes > 50, "only {handshakes} handshakes");
    assert!(
        server_serials.len() >= 3,
        "server serials seen: {server_serials:?}"
    );
    assert!(
        client_serials.len() >= 3,
        "client serials seen: {client_serials:?}"
    );
    assert!(server_serials.contains(&first_serial));
    assert!(server_updates.has_changed().unwrap());
    assert_eq!(
        server_updates.borrow_and_update().serial(),
        server_certs.current().serial()
    );

    let status = server_certs.status();
    assert!(status.rotations >= 3, "{status:?}");
    assert_eq!(status.failed_attempts, 0);
    assert!(status.next_rotation.is_some());

    server.abort();
    let _ = server.await;
    server_certs.shutdown();
    client_certs.shutdown();
}

/// Renewal keeps retrying through CA failures and recovers.
#[tokio::test]
async fn renewal_retries_after_failures() {
    use mizzen_identity::workload::{CertificateProvider, WorkloadCertificate, WorkloadError};
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Flaky {
        inner: LocalCa,
        identity: mizzen_identity::Identity,
        calls: Arc<AtomicU32>,
    }
    impl CertificateProvider for Flaky {
        fn identity(&self) -> &mizzen_identity::Identity {
            &self.identity
        }
        async fn fetch(&self) -> Result<WorkloadCertificate, WorkloadError> {
            // The first call (startup) succeeds, the next three fail.
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if (1..=3).contains(&n) {
                return Err(WorkloadError::InvalidResponse("CA unavailable".into()));
            }
            self.inner.fetch().await
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let sleep = id("default", "sleep");
    let calls = Arc::new(AtomicU32::new(0));
    let manager = CertificateManager::start(
        Flaky {
            inner: LocalCa::new(ca, sleep.clone(), Duration::from_secs(2)),
            identity: sleep,
            calls: calls.clone(),
        },
        RotationPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            ..RotationPolicy::default()
        },
    )
    .await
    .unwrap();
    let first = manager.current().serial().to_string();
    let mut updates = manager.subscribe();
    tokio::time::timeout(Duration::from_secs(10), updates.changed())
        .await
        .expect("rotated despite failures")
        .unwrap();
    assert_ne!(manager.current().serial(), first);
    let status = manager.status();
    assert_eq!(status.failed_attempts, 3, "{status:?}");
    assert_eq!(status.last_error, None);
    assert!(calls.load(Ordering::SeqCst) >= 5);

    // Dropping every handle stops the renewal task.
    drop(updates);
    drop(manager);
    let before = calls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(calls.load(Ordering::SeqCst), before);
}
