//! TLS transport sockets end to end, with the shapes Istio gives Envoy:
//! mesh mTLS between two in-process proxies (auto-mTLS
//! `transport_socket_matches`, SDS `default`/`ROOTCA` from each proxy's own
//! certificate manager, secure naming, XFCC), refusals (plaintext, wrong
//! identity, foreign CA, expired certificate), TLS origination to a plain
//! TLS server, an ADS-delivered Secret replaced while serving, and
//! certificate rotation under a steady request loop.

// Istio still emits `match_subject_alt_names`.
#![allow(deprecated)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mizzen_identity::workload::{LocalCa, PrivateKeyPem, RotationPolicy, generate_csr};
use mizzen_identity::{CertificateAuthority, CertificateManager, Identity};
use mizzen_proxy::{
    ConnectionRecord, Proxy, ProxyOptions, Readiness, RequestObserver, RequestRecord,
};
use mizzen_xds::pb;
use mizzen_xds::pb::google::protobuf::{Any, BoolValue, Struct, Value, value::Kind};
use mizzen_xds::{pack, type_url};
use pb::envoy::config::cluster::v3::{Cluster, cluster};
use pb::envoy::config::core::v3::{
    self as core, AggregatedConfigSource, ApiConfigSource, ConfigSource, DataSource, GrpcService,
    Metadata, TransportSocket, api_config_source, config_source, data_source, grpc_service,
    transport_socket,
};
use pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use pb::envoy::config::route::v3 as route;
use pb::envoy::extensions::filters::http::router::v3::Router;
use pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    TlsCertificate, TlsParameters, UpstreamTlsContext, common_tls_context, secret,
    tls_parameters::TlsProtocol,
};
use pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use support::sock;

const TD: &str = "cluster.local";

fn id(sa: &str) -> Identity {
    Identity::new(TD, "default", sa).unwrap()
}

fn ca(dir: &tempfile::TempDir, name: &str) -> Arc<CertificateAuthority> {
    Arc::new(CertificateAuthority::load_or_create(dir.path().join(name), TD).unwrap())
}

async fn manager(
    ca: &Arc<CertificateAuthority>,
    sa: &str,
    ttl: Duration,
) -> Arc<CertificateManager> {
    let provider = LocalCa::new(ca.clone(), id(sa), ttl);
    Arc::new(
        CertificateManager::start(provider, RotationPolicy::default())
            .await
            .unwrap(),
    )
}

// ---------------------------------------------------------------------------
// Resources in Istio's shapes
// ---------------------------------------------------------------------------

/// Istio's SDS config for the agent's secrets (`sds-grpc`).
fn agent_sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.into(),
        sds_config: Some(ConfigSource {
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::ApiConfigSource(
                ApiConfigSource {
                    api_type: api_config_source::ApiType::Grpc as i32,
                    transport_api_version: core::ApiVersion::V3 as i32,
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
                },
            )),
            initial_fetch_timeout: Some(Default::default()),
            resource_api_version: core::ApiVersion::V3 as i32,
            ..Default::default()
        }),
    }
}

/// Istio's SDS config for a credentialName Secret over ADS.
fn ads_sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.into(),
        sds_config: Some(ConfigSource {
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                AggregatedConfigSource {},
            )),
            resource_api_version: core::ApiVersion::V3 as i32,
            ..Default::default()
        }),
    }
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(s.into())),
        ..Default::default()
    }
}

/// The mesh context both sides use: workload cert, ROOTCA with SAN checks.
fn mesh_common(alpn: &[&str], sans: &[&str]) -> CommonTlsContext {
    CommonTlsContext {
        tls_params: Some(TlsParameters {
            tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32,
            tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
            ..Default::default()
        }),
        alpn_protocols: alpn.iter().map(|s| s.to_string()).collect(),
        tls_certificate_sds_secret_configs: vec![agent_sds("default")],
        validation_context_type: Some(
            common_tls_context::ValidationContextType::CombinedValidationContext(
                common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(CertificateValidationContext {
                        match_subject_alt_names: sans.iter().map(|s| exact(s)).collect(),
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(agent_sds("ROOTCA")),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }
}

fn tls_socket<M: prost::Message + prost::Name>(ctx: &M) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(ctx))),
    }
}

fn raw_socket() -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.raw_buffer".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(
            &RawBuffer {},
        ))),
    }
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

fn fields(pairs: &[(&str, &str)]) -> Struct {
    Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), string_value(v)))
            .collect(),
    }
}

/// Istio's auto-mTLS cluster: `tlsMode: istio` endpoints get mTLS with
/// secure naming, every other endpoint plaintext.
fn auto_mtls_cluster(name: &str, server_sans: &[&str]) -> Cluster {
    let mtls = UpstreamTlsContext {
        sni: "outbound_.8080_._.server.default.svc.cluster.local".into(),
        common_tls_context: Some(mesh_common(
            &["istio-http/1.1", "istio", "http/1.1"],
            server_sans,
        )),
        ..Default::default()
    };
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ConfigSource {
                config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                    AggregatedConfigSource {},
                )),
                resource_api_version: core::ApiVersion::V3 as i32,
                ..Default::default()
            }),
            service_name: name.into(),
        }),
        connect_timeout: Some(pb::google::protobuf::Duration {
            seconds: 2,
            nanos: 0,
        }),
        transport_socket_matches: vec![
            cluster::TransportSocketMatch {
                name: "tlsMode-istio".into(),
                r#match: Some(fields(&[("tlsMode", "istio")])),
                transport_socket: Some(tls_socket(&mtls)),
            },
            cluster::TransportSocketMatch {
                name: "tlsMode-disabled".into(),
                r#match: Some(Struct::default()),
                transport_socket: Some(raw_socket()),
            },
        ],
        ..Default::default()
    }
}

/// An EDS assignment whose endpoints carry Istio's metadata.
fn assignment(name: &str, endpoints: &[(SocketAddr, bool)]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: endpoints
                .iter()
                .map(|(a, mtls)| {
                    let mut filter_metadata = std::collections::HashMap::new();
                    if *mtls {
                        filter_metadata.insert(
                            "envoy.transport_socket_match".to_string(),
                            fields(&[("tlsMode", "istio")]),
                        );
                        filter_metadata.insert(
                            "istio".to_string(),
                            fields(&[("workload", "server;default;server;;Kubernetes")]),
                        );
                    }
                    LbEndpoint {
                        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                            address: Some(sock(*a)),
                            ..Default::default()
                        })),
                        metadata: Some(Metadata {
                            filter_metadata,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn static_cluster(name: &str, addr: SocketAddr, socket: Option<TransportSocket>) -> Cluster {
    Cluster {
        transport_socket: socket,
        ..support::static_cluster(name, &[addr], None)
    }
}

fn router() -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack(
            &Router::default(),
        ))),
        ..Default::default()
    }
}

/// An HCM routing everything to `cluster`; `xfcc` sets Istio's inbound
/// APPEND_FORWARD with subject, dns and uri.
fn hcm_to(cluster: &str, xfcc: bool) -> Filter {
    let manager = hcm::HttpConnectionManager {
        stat_prefix: cluster.into(),
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(
            route::RouteConfiguration {
                name: cluster.into(),
                virtual_hosts: vec![support::vhost(
                    "all",
                    &["*"],
                    vec![support::forward("default", cluster)],
                )],
                ..Default::default()
            },
        )),
        http_filters: vec![router()],
        forward_client_cert_details: if xfcc {
            hcm::http_connection_manager::ForwardClientCertDetails::AppendForward as i32
        } else {
            0
        },
        set_current_client_cert_details: xfcc.then(|| {
            hcm::http_connection_manager::SetCurrentClientCertDetails {
                subject: Some(BoolValue { value: true }),
                dns: true,
                uri: true,
                ..Default::default()
            }
        }),
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(&manager))),
    }
}

fn tcp_to(cluster: &str) -> Filter {
    support::tcp_proxy_filter(cluster)
}

fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack(
            &TlsInspector::default(),
        ))),
        ..Default::default()
    }
}

/// A listener on 127.0.0.1 (any port) with one chain.
fn listener(name: &str, chain: FilterChain, inspector: bool) -> Listener {
    Listener {
        name: name.into(),
        address: Some(sock("127.0.0.1:0".parse().unwrap())),
        filter_chains: vec![chain],
        listener_filters: if inspector {
            vec![tls_inspector()]
        } else {
            Vec::new()
        },
        ..Default::default()
    }
}

/// Istio's inbound mTLS chain: TLS only, client certificates required.
fn mtls_chain(filter: Filter, client_sans: &[&str]) -> FilterChain {
    FilterChain {
        name: "inbound-mtls".into(),
        filter_chain_match: Some(FilterChainMatch {
            transport_protocol: "tls".into(),
            ..Default::default()
        }),
        filters: vec![filter],
        transport_socket: Some(tls_socket(&DownstreamTlsContext {
            require_client_certificate: Some(BoolValue { value: true }),
            common_tls_context: Some(mesh_common(&["h2", "http/1.1"], client_sans)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// Servers, clients, proxies
// ---------------------------------------------------------------------------

struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The app: answers `app` with the XFCC header it received in `x-seen-xfcc`.
async fn app() -> (SocketAddr, Task) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(serve_http(s, "app"));
        }
    });
    (addr, Task(task))
}

async fn serve_http<S>(s: S, name: &'static str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
        let mut resp = Response::new(Full::new(Bytes::from_static(name.as_bytes())));
        if let Some(v) = req.headers().get("x-forwarded-client-cert") {
            resp.headers_mut().insert("x-seen-xfcc", v.clone());
        }
        if let Some(v) = req.headers().get("x-forwarded-proto") {
            resp.headers_mut().insert("x-seen-proto", v.clone());
        }
        Ok::<_, std::convert::Infallible>(resp)
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(s), svc)
        .await;
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

async fn get(addr: SocketAddr) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", "server.default.svc.cluster.local")
        .header("x-forwarded-client-cert", "By=spoofed")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn admin(addr: SocketAddr, path: &str) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "admin")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[derive(Default)]
struct Records {
    requests: Mutex<Vec<RequestRecord>>,
    connections: Mutex<Vec<ConnectionRecord>>,
}

impl RequestObserver for Records {
    fn on_request(&self, r: &RequestRecord) {
        self.requests.lock().unwrap().push(r.clone());
    }
    fn on_connection(&self, r: &ConnectionRecord) {
        self.connections.lock().unwrap().push(r.clone());
    }
}

async fn proxy(identity: Option<Arc<CertificateManager>>, observer: Option<Arc<Records>>) -> Proxy {
    Proxy::start(ProxyOptions {
        admin_address: "127.0.0.1:0".parse().unwrap(),
        identity,
        observer: observer.map(|o| o as Arc<dyn RequestObserver>),
        ..ProxyOptions::new(
            "",
            mizzen_xds::client::Node {
                id: "sidecar~127.0.0.1~p.default~default.svc.cluster.local".into(),
                ..Default::default()
            },
        )
    })
    .await
    .unwrap()
}

fn apply(
    p: &Proxy,
    clusters: &[Cluster],
    endpoints: &[ClusterLoadAssignment],
    listeners: &[Listener],
) {
    let pk = |v: Vec<Any>| v;
    p.apply(
        type_url::CLUSTER,
        "1",
        pk(clusters.iter().map(pack).collect()),
    )
    .unwrap();
    if !endpoints.is_empty() {
        p.apply(
            type_url::ENDPOINT,
            "1",
            endpoints.iter().map(pack).collect(),
        )
        .unwrap();
    }
    p.apply(
        type_url::LISTENER,
        "1",
        listeners.iter().map(pack).collect(),
    )
    .unwrap();
}

/// A server proxy: an mTLS inbound chain in front of the app.
async fn server_proxy(
    m: Arc<CertificateManager>,
    app: SocketAddr,
    client_sans: &[&str],
    records: Option<Arc<Records>>,
) -> (Proxy, SocketAddr) {
    let p = proxy(Some(m), records).await;
    apply(
        &p,
        &[static_cluster("inbound|8080||", app, None)],
        &[],
        &[listener(
            "virtualInbound",
            mtls_chain(hcm_to("inbound|8080||", true), client_sans),
            true,
        )],
    );
    let addr = p.listener_address("virtualInbound").unwrap();
    (p, addr)
}

/// A client proxy: plaintext outbound listener, auto-mTLS cluster to `server`.
async fn client_proxy(
    m: Arc<CertificateManager>,
    server: SocketAddr,
    server_sans: &[&str],
) -> (Proxy, SocketAddr) {
    let p = proxy(Some(m), None).await;
    let name = "outbound|8080||server.default.svc.cluster.local";
    apply(
        &p,
        &[auto_mtls_cluster(name, server_sans)],
        &[assignment(name, &[(server, true)])],
        &[listener(
            "outbound",
            FilterChain {
                filters: vec![hcm_to(name, false)],
                ..Default::default()
            },
            false,
        )],
    );
    assert_eq!(p.readiness(), Readiness::Live);
    let addr = p.listener_address("outbound").unwrap();
    (p, addr)
}

const CLIENT: &str = "spiffe://cluster.local/ns/default/sa/client";
const SERVER: &str = "spiffe://cluster.local/ns/default/sa/server";

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn istio_mtls_between_two_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(&dir, "mesh");
    let (app, _app) = app().await;
    let records = Arc::new(Records::default());
    let server_m = manager(&ca, "server", Duration::from_secs(3600)).await;
    let (server, server_addr) =
        server_proxy(server_m.clone(), app, &[CLIENT], Some(records.clone())).await;
    let (client, client_addr) = client_proxy(
        manager(&ca, "client", Duration::from_secs(3600)).await,
        server_addr,
        &[SERVER],
    )
    .await;

    let r = get(client_addr).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "app"));
    // The spoofed header from the plaintext client was sanitized by the
    // client proxy; the server proxy appended its own element.
    let xfcc = r.headers["x-seen-xfcc"].to_str().unwrap().to_string();
    assert!(xfcc.starts_with(&format!("By={SERVER};Hash=")), "{xfcc}");
    assert!(
        xfcc.ends_with(&format!(";Subject=\"\";URI={CLIENT}")),
        "{xfcc}"
    );
    assert!(!xfcc.contains("spoofed"), "{xfcc}");
    // The client proxy set it from its plaintext downstream; the server
    // proxy keeps what it received.
    assert_eq!(r.headers["x-seen-proto"], "http");
    let rec = records.requests.lock().unwrap().last().cloned().unwrap();
    assert_eq!(rec.downstream_peer_principal.as_deref(), Some(CLIENT));
    assert_eq!(rec.status, StatusCode::OK);

    // A plaintext endpoint of the same cluster (no tlsMode) is reached
    // without TLS: pools never mix the two.
    let name = "outbound|8080||server.default.svc.cluster.local";
    client
        .apply(
            type_url::ENDPOINT,
            "2",
            vec![pack(&assignment(name, &[(app, false)]))],
        )
        .unwrap();
    let r = get(client_addr).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "app"));
    assert!(r.headers.get("x-seen-xfcc").is_none());

    // Admin: the secrets as istioctl reads them, and /certs.
    let dump = admin(server.admin_address(), "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let secrets = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.SecretsConfigDump")
        .unwrap();
    let active = secrets["dynamic_active_secrets"].as_array().unwrap();
    assert_eq!(active[0]["name"], "default");
    let tls_cert = &active[0]["secret"]["tls_certificate"];
    assert!(
        tls_cert["certificate_chain"]["inline_bytes"]
            .as_str()
            .unwrap()
            .len()
            > 100
    );
    assert_eq!(tls_cert["private_key"]["inline_bytes"], "W3JlZGFjdGVkXQ==");
    assert_eq!(active[1]["name"], "ROOTCA");
    assert!(active[1]["secret"]["validation_context"]["trusted_ca"]["inline_bytes"].is_string());
    let certs: serde_json::Value =
        serde_json::from_str(&admin(server.admin_address(), "/certs").await).unwrap();
    let chain = &certs["certificates"][0]["cert_chain"][0];
    assert_eq!(chain["subject_alt_names"][0]["uri"], SERVER);
    assert_eq!(chain["serial_number"], server_m.current().serial());
    assert!(certs["certificates"][0]["ca_cert"][0]["expiration_time"].is_string());
    // The cluster renders its transport socket matches.
    let dump = admin(client.admin_address(), "/config_dump").await;
    assert!(
        dump.contains("tlsMode-istio") && dump.contains("envoy.transport_sockets.tls"),
        "{dump}"
    );
    assert!(!dump.contains("@unrendered"), "{dump}");
    server.shutdown().await;
    client.shutdown().await;
}

#[tokio::test]
async fn plaintext_client_to_mtls_chain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(&dir, "mesh");
    let (app, _app) = app().await;
    let (server, addr) = server_proxy(
        manager(&ca, "server", Duration::from_secs(3600)).await,
        app,
        &[],
        None,
    )
    .await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
    // Closed (or reset) without an HTTP answer.
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?} {buf:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn server_with_the_wrong_identity_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(&dir, "mesh");
    let (app, _app) = app().await;
    let (server, server_addr) = server_proxy(
        manager(&ca, "impostor", Duration::from_secs(3600)).await,
        app,
        &[],
        None,
    )
    .await;
    let (client, client_addr) = client_proxy(
        manager(&ca, "client", Duration::from_secs(3600)).await,
        server_addr,
        &[SERVER],
    )
    .await;
    let r = get(client_addr).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.body.contains("TLS_error"), "{}", r.body);
    let stats = admin(client.admin_address(), "/stats").await;
    assert!(
        support::stat(
            &stats,
            "cluster.outbound|8080||server.default.svc.cluster.local.upstream_cx_connect_fail"
        ) >= 1,
        "{stats}"
    );
    server.shutdown().await;
    client.shutdown().await;
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = ca(&dir, "mesh");
    let other = ca(&dir, "other");
    let (app, _app) = app().await;
    let (server, server_addr) = server_proxy(
        manager(&mesh, "server", Duration::from_secs(3600)).await,
        app,
        &[],
        None,
    )
    .await;
    // The client trusts the mesh root (so the server verifies), but its own
    // certificate comes from another CA.
    let foreign = manager(&other, "client", Duration::from_secs(3600)).await;
    let p = proxy(Some(foreign), None).await;
    let mut tls = UpstreamTlsContext {
        common_tls_context: Some(mesh_common(&["http/1.1"], &[SERVER])),
        ..Default::default()
    };
    tls.common_tls_context
        .as_mut()
        .unwrap()
        .validation_context_type = Some(
        common_tls_context::ValidationContextType::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(DataSource {
                    specifier: Some(data_source::Specifier::InlineString(
                        mesh.root_bundle().to_string(),
                    )),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
    );
    apply(
        &p,
        &[static_cluster("c", server_addr, Some(tls_socket(&tls)))],
        &[],
        &[listener(
            "out",
            FilterChain {
                filters: vec![hcm_to("c", false)],
                ..Default::default()
            },
            false,
        )],
    );
    let r = get(p.listener_address("out").unwrap()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    server.shutdown().await;
    p.shutdown().await;
}

/// A certificate and key signed by `ca` for `sa`, valid over the period.
fn signed(
    ca: &CertificateAuthority,
    sa: &str,
    from: SystemTime,
    to: SystemTime,
) -> (String, PrivateKeyPem) {
    let (key, csr) = generate_csr(&id(sa)).unwrap();
    let chain = ca.sign_csr_for_period(&csr, &id(sa), from, to).unwrap();
    (chain.presented_pem(), key)
}

fn inline(s: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineString(s.into())),
        ..Default::default()
    })
}

#[tokio::test]
async fn expired_server_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = ca(&dir, "mesh");
    let (app, _app) = app().await;
    let now = SystemTime::now();
    let (chain, key) = signed(
        &mesh,
        "server",
        now - Duration::from_secs(7200),
        now - Duration::from_secs(3600),
    );
    // A server presenting a static, expired certificate (and asking for no
    // client certificate).
    let server = proxy(None, None).await;
    let chain_ctx = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificates: vec![TlsCertificate {
                certificate_chain: inline(&chain),
                private_key: inline(key.expose()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    apply(
        &server,
        &[static_cluster("app", app, None)],
        &[],
        &[listener(
            "in",
            FilterChain {
                filters: vec![hcm_to("app", false)],
                transport_socket: Some(tls_socket(&chain_ctx)),
                ..Default::default()
            },
            false,
        )],
    );
    let server_addr = server.listener_address("in").unwrap();
    let (client, client_addr) = client_proxy(
        manager(&mesh, "client", Duration::from_secs(3600)).await,
        server_addr,
        &[],
    )
    .await;
    let r = get(client_addr).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert!(r.body.contains("TLS_error"), "{}", r.body);
    server.shutdown().await;
    client.shutdown().await;
}

/// A plain TLS server (not in the mesh) with its own CA, answering `tls-app`.
async fn tls_app(ca: &CertificateAuthority) -> (SocketAddr, Task) {
    let config = ca.serving_config(["localhost"]).unwrap();
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(s).await {
                    serve_http(tls, "tls-app").await;
                }
            });
        }
    });
    (addr, Task(task))
}

#[tokio::test]
async fn tls_origination_simple() {
    let dir = tempfile::tempdir().unwrap();
    let external = ca(&dir, "external");
    let mesh = ca(&dir, "mesh");
    let (server, _server) = tls_app(&external).await;
    let ca_file = dir.path().join("external-ca.pem");
    std::fs::write(&ca_file, external.root_bundle()).unwrap();
    let wrong_file = dir.path().join("mesh-ca.pem");
    std::fs::write(&wrong_file, mesh.root_bundle()).unwrap();
    let simple = |file: &std::path::Path| UpstreamTlsContext {
        sni: "localhost".into(),
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: Some(
                common_tls_context::ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: Some(DataSource {
                            specifier: Some(data_source::Specifier::Filename(
                                file.display().to_string(),
                            )),
                            ..Default::default()
                        }),
                        match_subject_alt_names: vec![exact("localhost")],
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    let p = proxy(None, None).await;
    apply(
        &p,
        &[
            static_cluster("good", server, Some(tls_socket(&simple(&ca_file)))),
            static_cluster("bad", server, Some(tls_socket(&simple(&wrong_file)))),
        ],
        &[],
        &[
            listener(
                "good",
                FilterChain {
                    filters: vec![hcm_to("good", false)],
                    ..Default::default()
                },
                false,
            ),
            Listener {
                address: Some(sock("127.0.0.2:0".parse().unwrap())),
                ..listener(
                    "bad",
                    FilterChain {
                        filters: vec![hcm_to("bad", false)],
                        ..Default::default()
                    },
                    false,
                )
            },
        ],
    );
    let r = get(p.listener_address("good").unwrap()).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "tls-app"));
    let r = get(p.listener_address("bad").unwrap()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.body.contains("TLS_error"), "{}", r.body);
    p.shutdown().await;
}

#[tokio::test]
async fn workload_secrets_without_identity_are_nacked() {
    let p = proxy(None, None).await;
    let name = "outbound|8080||s";
    let err = p
        .apply(
            type_url::CLUSTER,
            "1",
            vec![pack(&auto_mtls_cluster(name, &[]))],
        )
        .unwrap_err();
    assert!(
        err.contains("cluster outbound|8080||s") && err.contains("\"default\""),
        "{err}"
    );
    let err = p
        .apply(
            type_url::LISTENER,
            "1",
            vec![pack(&listener("l", mtls_chain(tcp_to("x"), &[]), true))],
        )
        .unwrap_err();
    assert!(
        err.contains("listener l") && err.contains("this proxy has none"),
        "{err}"
    );
    p.shutdown().await;
}

/// Serves fixed clusters and listeners plus Secrets that the test replaces.
struct SecretGenerator {
    listeners: Vec<Listener>,
    clusters: Vec<Cluster>,
    secrets: Mutex<Vec<Secret>>,
}

impl mizzen_xds::server::Generator for SecretGenerator {
    type Proxy = ();

    fn identify(&self, _node: &core::Node) -> Result<(), String> {
        Ok(())
    }

    fn generate(
        &self,
        _p: &(),
        type_url: &str,
        names: &[String],
    ) -> Vec<mizzen_xds::server::Resource> {
        let res = |name: &str, body: Any| mizzen_xds::server::Resource {
            name: name.into(),
            body,
        };
        match type_url {
            type_url::CLUSTER => self
                .clusters
                .iter()
                .map(|c| res(&c.name, pack(c)))
                .collect(),
            type_url::LISTENER => self
                .listeners
                .iter()
                .map(|l| res(&l.name, pack(l)))
                .collect(),
            type_url::SECRET => self
                .secrets
                .lock()
                .unwrap()
                .iter()
                .filter(|s| names.contains(&s.name))
                .map(|s| res(&s.name, pack(s)))
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn cert_secret(name: &str, chain: &str, key: &str) -> Secret {
    Secret {
        name: name.into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(chain),
            private_key: inline(key),
            ..Default::default()
        })),
    }
}

/// Accepts any server certificate: the test only looks at which one is
/// presented.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The serial of the certificate a TLS server at `addr` presents.
async fn presented_serial(addr: SocketAddr) -> Option<String> {
    let provider = mizzen_identity::crypto_provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("gateway.example.com").unwrap();
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .ok()?
        .ok()?;
    let leaf = tls.get_ref().1.peer_certificates()?.first()?.clone();
    Some(mizzen_identity::x509::inspect(&leaf).ok()?.serial)
}

/// A gateway's credentialName: a Secret over ADS terminates TLS; replacing
/// it serves the new certificate at the next handshake, without restart.
#[tokio::test]
async fn ads_secret_terminates_tls_and_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let gw_ca = ca(&dir, "gateway");
    let (app, _app) = app().await;
    let now = SystemTime::now();
    let (chain1, key1) = signed(
        &gw_ca,
        "gw1",
        now - Duration::from_secs(60),
        now + Duration::from_secs(3600),
    );
    let (chain2, key2) = signed(
        &gw_ca,
        "gw2",
        now - Duration::from_secs(60),
        now + Duration::from_secs(3600),
    );
    let serial = |pem: &str| {
        let der = mizzen_identity::x509::parse_certs_pem(pem).unwrap();
        mizzen_identity::x509::inspect(&der[0]).unwrap().serial
    };
    let gateway_chain = FilterChain {
        filters: vec![hcm_to("app", false)],
        transport_socket: Some(tls_socket(&DownstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                alpn_protocols: vec!["h2".into(), "http/1.1".into()],
                tls_certificate_sds_secret_configs: vec![ads_sds("kubernetes://gw-cred")],
                ..Default::default()
            }),
            require_client_certificate: Some(BoolValue { value: false }),
            ..Default::default()
        })),
        ..Default::default()
    };
    let generator = Arc::new(SecretGenerator {
        listeners: vec![Listener {
            address: Some(sock("127.0.0.1:0".parse().unwrap())),
            ..listener("0.0.0.0_8443", gateway_chain, false)
        }],
        clusters: vec![static_cluster("app", app, None)],
        secrets: Mutex::new(vec![cert_secret(
            "kubernetes://gw-cred",
            &chain1,
            key1.expose(),
        )]),
    });
    let (generation, generation_rx) = tokio::sync::watch::channel(1u64);
    let server = mizzen_xds::server::AdsServer::new(
        generator.clone(),
        generation_rx,
        mizzen_xds::server::SyncStatus::default(),
    );
    let xds = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let xds_addr = xds.local_addr().unwrap();
    let _ads = Task(tokio::spawn(async move {
        let _ = server.serve(xds).await;
    }));
    let p = Proxy::start(ProxyOptions {
        admin_address: "127.0.0.1:0".parse().unwrap(),
        ..ProxyOptions::new(
            format!("http://{xds_addr}"),
            mizzen_xds::client::Node {
                id: "router~127.0.0.1~gw.default~default.svc.cluster.local".into(),
                ..Default::default()
            },
        )
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), p.ready())
        .await
        .unwrap();
    let addr = p.listener_address("0.0.0.0_8443").unwrap();
    let mut got = None;
    for _ in 0..100 {
        got = presented_serial(addr).await;
        if got.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got, Some(serial(&chain1)));
    assert_eq!(
        p.wanted(type_url::SECRET),
        vec!["kubernetes://gw-cred".to_string()]
    );

    // Replace the secret: the next handshake presents the new certificate.
    *generator.secrets.lock().unwrap() =
        vec![cert_secret("kubernetes://gw-cred", &chain2, key2.expose())];
    generation.send_replace(2);
    let want = Some(serial(&chain2));
    let mut got = None;
    for _ in 0..100 {
        got = presented_serial(addr).await;
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got, want);
    let dump = admin(p.admin_address(), "/config_dump").await;
    assert!(
        dump.contains("kubernetes://gw-cred") && dump.contains("[redacted]"),
        "{dump}"
    );
    assert!(!dump.contains("PRIVATE KEY"), "{dump}");
    p.shutdown().await;
}

/// The serial of the leaf a TLS server presents to a client that can verify
/// only `schemes` (all of the provider's when empty).
async fn presented_key(addr: SocketAddr, schemes: &[rustls::SignatureScheme]) -> Option<String> {
    #[derive(Debug)]
    struct Only(AnyServer, Vec<rustls::SignatureScheme>);
    impl rustls::client::danger::ServerCertVerifier for Only {
        fn verify_server_cert(
            &self,
            e: &rustls::pki_types::CertificateDer<'_>,
            i: &[rustls::pki_types::CertificateDer<'_>],
            n: &rustls::pki_types::ServerName<'_>,
            o: &[u8],
            t: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            self.0.verify_server_cert(e, i, n, o, t)
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(m, c, d)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(m, c, d)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            if self.1.is_empty() {
                self.0.supported_verify_schemes()
            } else {
                self.1.clone()
            }
        }
    }
    let provider = mizzen_identity::crypto_provider();
    let verifier = Only(AnyServer(provider.clone()), schemes.to_vec());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("gateway.example.com").unwrap();
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .ok()?
        .ok()?;
    let leaf = tls.get_ref().1.peer_certificates()?.first()?.clone();
    Some(mizzen_identity::x509::inspect(&leaf).ok()?.serial)
}

/// Istio's `credentialNames`: an ECDSA and an RSA certificate on one
/// server; each client gets the one its signature schemes can verify.
#[tokio::test]
async fn several_certificates_are_chosen_by_key_type() {
    let (app, _app) = app().await;
    let self_signed = |key: rcgen::KeyPair| {
        let cert = rcgen::CertificateParams::new(vec!["gateway.example.com".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (ec_chain, ec_key) = self_signed(rcgen::KeyPair::generate().unwrap());
    let (rsa_chain, rsa_key) = self_signed(
        rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            .unwrap(),
    );
    let serial = |pem: &str| {
        let der = mizzen_identity::x509::parse_certs_pem(pem).unwrap();
        mizzen_identity::x509::inspect(&der[0]).unwrap().serial
    };
    let gateway_chain = FilterChain {
        filters: vec![hcm_to("app", false)],
        transport_socket: Some(tls_socket(&DownstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                alpn_protocols: vec!["h2".into(), "http/1.1".into()],
                tls_certificate_sds_secret_configs: vec![
                    ads_sds("kubernetes://ec-cred"),
                    ads_sds("kubernetes://rsa-cred"),
                ],
                ..Default::default()
            }),
            require_client_certificate: Some(BoolValue { value: false }),
            ..Default::default()
        })),
        ..Default::default()
    };
    let generator = Arc::new(SecretGenerator {
        listeners: vec![Listener {
            address: Some(sock("127.0.0.1:0".parse().unwrap())),
            ..listener("0.0.0.0_8443", gateway_chain, false)
        }],
        clusters: vec![static_cluster("app", app, None)],
        secrets: Mutex::new(vec![
            cert_secret("kubernetes://ec-cred", &ec_chain, &ec_key),
            cert_secret("kubernetes://rsa-cred", &rsa_chain, &rsa_key),
        ]),
    });
    let (_generation, generation_rx) = tokio::sync::watch::channel(1u64);
    let server = mizzen_xds::server::AdsServer::new(
        generator.clone(),
        generation_rx,
        mizzen_xds::server::SyncStatus::default(),
    );
    let xds = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let xds_addr = xds.local_addr().unwrap();
    let _ads = Task(tokio::spawn(async move {
        let _ = server.serve(xds).await;
    }));
    let p = Proxy::start(ProxyOptions {
        admin_address: "127.0.0.1:0".parse().unwrap(),
        ..ProxyOptions::new(
            format!("http://{xds_addr}"),
            mizzen_xds::client::Node {
                id: "router~127.0.0.1~gw.default~default.svc.cluster.local".into(),
                ..Default::default()
            },
        )
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), p.ready())
        .await
        .unwrap();
    let addr = p.listener_address("0.0.0.0_8443").unwrap();
    let mut got = None;
    for _ in 0..100 {
        got = presented_key(addr, &[]).await;
        if got.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both verifiable: the first configured.
    assert_eq!(got, Some(serial(&ec_chain)));
    use rustls::SignatureScheme as S;
    let rsa_only = [S::RSA_PSS_SHA256, S::RSA_PKCS1_SHA256];
    assert_eq!(
        presented_key(addr, &rsa_only).await,
        Some(serial(&rsa_chain))
    );
    assert_eq!(
        presented_key(addr, &[S::ECDSA_NISTP256_SHA256]).await,
        Some(serial(&ec_chain))
    );
    p.shutdown().await;
}

/// Short-lived certificates rotate on both sides while requests flow over
/// mTLS: none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_loses_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(&dir, "mesh");
    let (app, _app) = app().await;
    let ttl = Duration::from_secs(3);
    let server_m = manager(&ca, "server", ttl).await;
    let client_m = manager(&ca, "client", ttl).await;
    let (server, server_addr) = server_proxy(server_m.clone(), app, &[CLIENT], None).await;
    let (client, client_addr) = client_proxy(client_m.clone(), server_addr, &[SERVER]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(7);
    let mut n = 0;
    while tokio::time::Instant::now() < deadline {
        // A new connection each time, so handshakes see every rotation.
        let r = get(client_addr).await;
        assert_eq!(r.status, StatusCode::OK, "request {n}: {}", r.body);
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        server_m.status().rotations >= 2,
        "{:?}",
        server_m.status().rotations
    );
    assert!(client_m.status().rotations >= 2);
    assert!(n > 50, "{n}");
    server.shutdown().await;
    client.shutdown().await;
}

/// TCP through mTLS: the TCP proxy carries raw bytes over TLS both ways, and
/// the connection records name both peers.
#[tokio::test]
async fn tcp_proxy_over_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(&dir, "mesh");
    let echo = support::echo_server("127.0.0.1:0".parse().unwrap(), "echo").await;
    let server_records = Arc::new(Records::default());
    let server = proxy(
        Some(manager(&ca, "server", Duration::from_secs(3600)).await),
        Some(server_records.clone()),
    )
    .await;
    apply(
        &server,
        &[static_cluster("inbound|9000||", echo.addr, None)],
        &[],
        &[listener(
            "in",
            mtls_chain(tcp_to("inbound|9000||"), &[CLIENT]),
            true,
        )],
    );
    let server_addr = server.listener_address("in").unwrap();
    let client_records = Arc::new(Records::default());
    let client = proxy(
        Some(manager(&ca, "client", Duration::from_secs(3600)).await),
        Some(client_records.clone()),
    )
    .await;
    let name = "outbound|9000||server.default.svc.cluster.local";
    apply(
        &client,
        &[auto_mtls_cluster(name, &[SERVER])],
        &[assignment(name, &[(server_addr, true)])],
        &[listener(
            "out",
            FilterChain {
                filters: vec![tcp_to(name)],
                ..Default::default()
            },
            false,
        )],
    );
    let out = support::tcp_roundtrip(client.listener_address("out").unwrap(), "ping")
        .await
        .unwrap();
    assert!(
        out.starts_with("echo saw 127.0.0.1:") && out.ends_with("ping"),
        "{out}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = client_records
        .connections
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(c.upstream_peer_principal.as_deref(), Some(SERVER));
    let s = server_records
        .connections
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(s.downstream_peer_principal.as_deref(), Some(CLIENT));
    server.shutdown().await;
    client.shutdown().await;
}
