//! Mesh mTLS handshakes over loopback with tokio-rustls: secure naming,
//! trust, expiry, optional client authentication and ALPN.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{id, issue, issue_expired, new_ca};
use mizzen_identity::Identity;
use mizzen_identity::tls::{
    self, CertSource, ClientAuth, MeshProtocol, SpiffeServerVerifier, TrustBundle,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Istio's SNI for an outbound cluster; only sent, never verified.
const SNI: &str = "outbound_.9080_._.reviews.default.svc.cluster.local";

#[derive(Debug)]
struct Seen {
    peer: Option<Identity>,
    alpn: Option<String>,
}

/// One connection: the client sends "ping", the server answers "pong".
/// Returns what each side saw, or its error as text.
async fn exchange(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> (Result<Seen, String>, Result<Seen, String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = tokio_rustls::TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        Ok::<_, String>(Seen {
            peer: tls::peer_identity(conn),
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
        })
    });
    let client_side = async move {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from(SNI).map_err(|e| e.to_string())?;
        let mut tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        // With TLS 1.3 a rejected client certificate only shows up here.
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        if &buf != b"pong" {
            return Err("bad reply".to_string());
        }
        let (_, conn) = tls.get_ref();
        Ok::<_, String>(Seen {
            peer: tls::peer_identity(conn),
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
        })
    };
    let client_result = tokio::time::timeout(Duration::from_secs(10), client_side)
        .await
        .expect("client finishes");
    let server_result = tokio::time::timeout(Duration::from_secs(10), server_side)
        .await
        .expect("server finishes")
        .unwrap();
    (server_result, client_result)
}

struct Mesh {
    _dir: tempfile::TempDir,
    ca: Arc<mizzen_identity::CertificateAuthority>,
    roots: TrustBundle,
}

impl Mesh {
    fn new() -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca(dir.path());
        let roots = TrustBundle::from_pem(ca.root_bundle()).unwrap();
        Mesh {
            _dir: dir,
            ca,
            roots,
        }
    }

    fn source(&self, identity: &Identity) -> CertSource {
        CertSource::fixed(&issue(&self.ca, identity, Duration::from_secs(3600))).unwrap()
    }

    fn server(&self, identity: &Identity, auth: ClientAuth) -> Arc<ServerConfig> {
        Arc::new(tls::server_config(self.source(identity), &self.roots, auth).unwrap())
    }

    fn client(
        &self,
        identity: &Identity,
        expected: Vec<Identity>,
        protocol: MeshProtocol,
    ) -> Arc<ClientConfig> {
        Arc::new(
            tls::client_config(self.source(identity), &self.roots, expected, protocol).unwrap(),
        )
    }
}

#[tokio::test]
async fn mutual_tls_with_the_expected_identity() {
    let mesh = Mesh::new();
    let reviews = id("default", "reviews");
    let productpage = id("default", "productpage");
    let (server, client) = exchange(
        mesh.server(&reviews, ClientAuth::Required),
        mesh.client(
            &productpage,
            vec![id("default", "ratings"), reviews.clone()],
            MeshProtocol::Http11,
        ),
    )
    .await;
    let server = server.unwrap();
    let client = client.unwrap();
    assert_eq!(server.peer, Some(productpage));
    assert_eq!(client.peer, Some(reviews));
    assert_eq!(server.alpn.as_deref(), Some("http/1.1"));
    assert_eq!(client.alpn.as_deref(), Some("http/1.1"));
}

#[tokio::test]
async fn alpn_follows_the_protocol() {
    let mesh = Mesh::new();
    let reviews = id("default", "reviews");
    let productpage = id("default", "productpage");
    for (protocol, want) in [
        (MeshProtocol::Http2, "h2"),
        // HTTP/1.0 is not in the server's list: the `istio` marker is the
        // only overlap, and HTTP/1.x is what a connection without `h2` speaks.
        (MeshProtocol::Http10, "istio"),
        (MeshProtocol::Tcp, "istio"),
        // The metadata exchange is not negotiated unless the server opts in.
        (MeshProtocol::TcpWithPeerExchange, "istio"),
    ] {
        let (server, client) = exchange(
            mesh.server(&reviews, ClientAuth::Required),
            mesh.client(&productpage, vec![reviews.clone()], protocol),
        )
        .await;
        assert_eq!(server.unwrap().alpn.as_deref(), Some(want), "{protocol:?}");
        assert_eq!(client.unwrap().alpn.as_deref(), Some(want), "{protocol:?}");
    }

    // A server that implements the metadata exchange opts in explicitly.
    let mx_server = Arc::new(
        tls::server_config_with_alpn(
            mesh.source(&reviews),
            &mesh.roots,
            ClientAuth::Required,
            tls::alpn::SERVER_WITH_PEER_EXCHANGE,
        )
        .unwrap(),
    );
    for (protocol, want) in [
        (MeshProtocol::TcpWithPeerExchange, "istio-peer-exchange"),
        (MeshProtocol::Tcp, "istio"),
        (MeshProtocol::Http11, "http/1.1"),
    ] {
        let (server, client) = exchange(
            mx_server.clone(),
            mesh.client(&productpage, vec![reviews.clone()], protocol),
        )
        .await;
        assert_eq!(server.unwrap().alpn.as_deref(), Some(want), "{protocol:?}");
        assert_eq!(client.unwrap().alpn.as_deref(), Some(want), "{protocol:?}");
    }
}

#[tokio::test]
async fn secure_naming_refuses_the_wrong_identity() {
    let mesh = Mesh::new();
    // A valid mesh certificate, but for another service account than the
    // destination's.
    let impostor = id("default", "ratings");
    let (server, client) = exchange(
        mesh.server(&impostor, ClientAuth::Required),
        mesh.client(
            &id("default", "productpage"),
            vec![id("default", "reviews")],
            MeshProtocol::Http11,
        ),
    )
    .await;
    let err = client.unwrap_err();
    assert!(err.contains("SecureNamingError"), "{err}");
    assert!(
        err.contains("spiffe://cluster.local/ns/default/sa/ratings"),
        "{err}"
    );
    assert!(server.is_err());
}

#[tokio::test]
async fn empty_expectation_accepts_any_mesh_identity() {
    let mesh = Mesh::new();
    let (server, client) = exchange(
        mesh.server(&id("default", "ratings"), ClientAuth::Required),
        mesh.client(&id("default", "productpage"), Vec::new(), MeshProtocol::Tcp),
    )
    .await;
    server.unwrap();
    assert_eq!(client.unwrap().peer, Some(id("default", "ratings")));
}

#[tokio::test]
async fn certificates_from_another_ca_are_refused() {
    let mesh = Mesh::new();
    let other = Mesh::new();
    let reviews = id("default", "reviews");
    let productpage = id("default", "productpage");

    // A server whose certificate comes from a foreign CA.
    let foreign_server = Arc::new(
        tls::server_config(other.source(&reviews), &mesh.roots, ClientAuth::Required).unwrap(),
    );
    let (_, client) = exchange(
        foreign_server,
        mesh.client(&productpage, vec![reviews.clone()], MeshProtocol::Http11),
    )
    .await;
    // Both CAs are named O=cluster.local, so the chain builder tries the
    // mesh root and the signature check fails.
    let err = client.unwrap_err();
    assert!(
        err.contains("invalid peer certificate: BadSignature"),
        "{err}"
    );

    // A client whose certificate comes from a foreign CA.
    let foreign_client = Arc::new(
        tls::client_config(
            other.source(&productpage),
            &mesh.roots,
            vec![reviews.clone()],
            MeshProtocol::Http11,
        )
        .unwrap(),
    );
    let (server, client) =
        exchange(mesh.server(&reviews, ClientAuth::Required), foreign_client).await;
    let err = server.unwrap_err();
    assert!(
        err.contains("invalid peer certificate: BadSignature"),
        "{err}"
    );
    assert!(client.is_err());
}

#[tokio::test]
async fn expired_certificates_are_refused() {
    let mesh = Mesh::new();
    let reviews = id("default", "reviews");
    let productpage = id("default", "productpage");

    let (chain, key) = issue_expired(&mesh.ca, &reviews);
    let expired_server = Arc::new(
        tls::server_config(
            CertSource::from_pem(&chain, &key).unwrap(),
            &mesh.roots,
            ClientAuth::Required,
        )
        .unwrap(),
    );
    let (_, client) = exchange(
        expired_server,
        mesh.client(&productpage, vec![reviews.clone()], MeshProtocol::Http11),
    )
    .await;
    let err = client.unwrap_err();
    assert!(err.contains("certificate expired"), "{err}");

    let (chain, key) = issue_expired(&mesh.ca, &productpage);
    let expired_client = Arc::new(
        tls::client_config(
            CertSource::from_pem(&chain, &key).unwrap(),
            &mesh.roots,
            vec![reviews.clone()],
            MeshProtocol::Http11,
        )
        .unwrap(),
    );
    let (server, _) = exchange(mesh.server(&reviews, ClientAuth::Required), expired_client).await;
    let err = server.unwrap_err();
    assert!(err.contains("certificate expired"), "{err}");
}

#[tokio::test]
async fn optional_client_auth_accepts_a_client_without_certificate() {
    let mesh = Mesh::new();
    let reviews = id("default", "reviews");
    let provider = mizzen_identity::crypto_provider();
    let verifier = Arc::new(SpiffeServerVerifier::new(
        &mesh.roots,
        vec![reviews.clone()],
        &provider,
    ));
    let mut anonymous = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    anonymous.alpn_protocols = MeshProtocol::Http11.client_alpn();
    let anonymous = Arc::new(anonymous);

    let (server, client) = exchange(
        mesh.server(&reviews, ClientAuth::Optional),
        anonymous.clone(),
    )
    .await;
    assert_eq!(server.unwrap().peer, None);
    assert_eq!(client.unwrap().peer, Some(reviews.clone()));

    // PERMISSIVE still authenticates clients that do present a certificate.
    let (server, _) = exchange(
        mesh.server(&reviews, ClientAuth::Optional),
        mesh.client(
            &id("default", "productpage"),
            vec![reviews.clone()],
            MeshProtocol::Http11,
        ),
    )
    .await;
    assert_eq!(server.unwrap().peer, Some(id("default", "productpage")));

    // STRICT does not accept the anonymous client.
    let (server, client) = exchange(mesh.server(&reviews, ClientAuth::Required), anonymous).await;
    assert!(server.is_err());
    assert!(client.is_err());
}

/// A client offering only ALPN values the server does not know: rustls
/// would abort, Envoy proceeds without ALPN; `negotiable` gives Envoy's
/// behaviour to a server reading the ClientHello first.
#[tokio::test]
async fn unknown_alpn_is_tolerated_with_negotiable() {
    let mesh = Mesh::new();
    let reviews = id("default", "reviews");
    let server_config = mesh.server(&reviews, ClientAuth::Required);
    let mut client = (*mesh.client(
        &id("default", "productpage"),
        vec![reviews.clone()],
        MeshProtocol::Tcp,
    ))
    .clone();
    client.alpn_protocols = vec![b"foo".to_vec()];
    let client = Arc::new(client);

    // Plain acceptor: rustls refuses.
    let (server, _) = exchange(server_config.clone(), client.clone()).await;
    let err = server.unwrap_err();
    assert!(
        err.contains("peer doesn't support any known protocol"),
        "{err}"
    );

    // LazyConfigAcceptor + negotiable: accepted without ALPN.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp)
            .await
            .unwrap();
        let config = tls::negotiable(&server_config, &start.client_hello());
        let mut tls = start.into_stream(config).await.unwrap();
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.unwrap();
        tls.write_all(b"pong").await.unwrap();
        let (_, conn) = tls.get_ref();
        (
            tls::peer_identity(conn),
            conn.alpn_protocol().map(<[u8]>::to_vec),
        )
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client)
        .connect(ServerName::try_from(SNI).unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await.unwrap();
    let (peer, alpn) = server.await.unwrap();
    assert_eq!(peer, Some(id("default", "productpage")));
    assert_eq!(alpn, None);
}
