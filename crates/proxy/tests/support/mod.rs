//! Shared by the sidecar tests: Istio-shaped REDIRECT-mode resources (the
//! shapes `mizzen-pilot` emits for `INTERCEPTION_MODE=REDIRECT` sidecars),
//! a fixed-resource ADS server, and small TCP and HTTP servers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mizzen_xds::pb;
use mizzen_xds::pb::google::protobuf::{Any, BoolValue, Duration as PbDuration, UInt32Value};
use mizzen_xds::{pack, type_url};
use pb::envoy::config::cluster::v3::{Cluster, cluster};
use pb::envoy::config::core::v3::{self as core, address, socket_address};
use pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use pb::envoy::config::route::v3 as route;
use pb::envoy::extensions::filters::http::router::v3::Router;
use pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------

pub fn sock(addr: SocketAddr) -> core::Address {
    core::Address {
        address: Some(address::Address::SocketAddress(socket(addr))),
    }
}

pub fn socket(addr: SocketAddr) -> core::SocketAddress {
    core::SocketAddress {
        address: addr.ip().to_string(),
        port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
            addr.port(),
        ))),
        ..Default::default()
    }
}

fn seconds(s: i64) -> Option<PbDuration> {
    Some(PbDuration {
        seconds: s,
        nanos: 0,
    })
}

pub fn millis(ms: i32) -> Option<PbDuration> {
    Some(PbDuration {
        seconds: 0,
        nanos: ms * 1_000_000,
    })
}

fn bind_config(source: &str) -> core::BindConfig {
    core::BindConfig {
        source_address: Some(core::SocketAddress {
            address: source.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `PassthroughCluster`: to the downstream connection's original destination.
pub fn passthrough_cluster() -> Cluster {
    Cluster {
        name: "PassthroughCluster".into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32,
        )),
        connect_timeout: seconds(10),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        ..Default::default()
    }
}

/// `InboundPassthroughCluster`: like the above, from 127.0.0.6 so that the
/// capture rules let it reach the app.
pub fn inbound_passthrough_cluster() -> Cluster {
    Cluster {
        name: "InboundPassthroughCluster".into(),
        upstream_bind_config: Some(bind_config("127.0.0.6")),
        ..passthrough_cluster()
    }
}

/// `BlackHoleCluster`: STATIC without endpoints.
pub fn blackhole_cluster() -> Cluster {
    Cluster {
        name: "BlackHoleCluster".into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: seconds(10),
        ..Default::default()
    }
}

/// A STATIC cluster; `source` binds the upstream side (127.0.0.6 for
/// `inbound|PORT||`).
pub fn static_cluster(name: &str, addrs: &[SocketAddr], source: Option<&str>) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: seconds(1),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: addrs
                    .iter()
                    .map(|a| LbEndpoint {
                        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                            address: Some(sock(*a)),
                            ..Default::default()
                        })),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        upstream_bind_config: source.map(bind_config),
        ..Default::default()
    }
}

pub fn tcp_proxy_filter(cluster: &str) -> Filter {
    Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(&TcpProxy {
            stat_prefix: cluster.into(),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        }))),
    }
}

pub fn weighted_tcp_proxy_filter(stat_prefix: &str, clusters: &[(&str, u32)]) -> Filter {
    Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(&TcpProxy {
            stat_prefix: stat_prefix.into(),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::WeightedClusters(
                tcp_proxy::WeightedCluster {
                    clusters: clusters
                        .iter()
                        .map(
                            |(name, weight)| tcp_proxy::weighted_cluster::ClusterWeight {
                                name: name.to_string(),
                                weight: *weight,
                                ..Default::default()
                            },
                        )
                        .collect(),
                },
            )),
            ..Default::default()
        }))),
    }
}

fn ads() -> core::ConfigSource {
    core::ConfigSource {
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            core::AggregatedConfigSource {},
        )),
        resource_api_version: core::ApiVersion::V3 as i32,
        ..Default::default()
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

/// HCM with RDS route `route_name` (the outbound per-port shape).
pub fn hcm_rds(stat_prefix: &str, route_name: &str) -> Filter {
    let manager = hcm::HttpConnectionManager {
        stat_prefix: stat_prefix.into(),
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
            hcm::Rds {
                config_source: Some(ads()),
                route_config_name: route_name.into(),
            },
        )),
        http_filters: vec![router()],
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(&manager))),
    }
}

/// HCM with an inline route to `cluster` for every host (the inbound shape).
pub fn hcm_inline(stat_prefix: &str, cluster: &str) -> Filter {
    let rc = route::RouteConfiguration {
        name: cluster.into(),
        virtual_hosts: vec![vhost(
            "inbound|http",
            &["*"],
            vec![forward("default", cluster)],
        )],
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    };
    let manager = hcm::HttpConnectionManager {
        stat_prefix: stat_prefix.into(),
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(
            rc,
        )),
        http_filters: vec![router()],
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(&manager))),
    }
}

pub fn chain(name: &str, m: Option<FilterChainMatch>, filter: Filter) -> FilterChain {
    FilterChain {
        name: name.into(),
        filter_chain_match: m,
        filters: vec![filter],
        ..Default::default()
    }
}

pub fn port_match(port: u16) -> Option<FilterChainMatch> {
    Some(FilterChainMatch {
        destination_port: Some(UInt32Value {
            value: u32::from(port),
        }),
        ..Default::default()
    })
}

pub fn http_protocols() -> Vec<String> {
    vec!["http/1.1".into(), "h2c".into()]
}

fn listener_filter_original_dst() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.original_dst".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack(
            &OriginalDst {},
        ))),
        ..Default::default()
    }
}

fn listener_filter_http_inspector() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.http_inspector".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack(
            &HttpInspector {},
        ))),
        ..Default::default()
    }
}

/// `virtualOutbound`: `use_original_dst`, a blackhole chain for its own port
/// (no loops), and `default` to Passthrough (ALLOW_ANY) or BlackHole.
pub fn virtual_outbound(addr: SocketAddr, allow_any: bool) -> Listener {
    let fallback = if allow_any {
        "PassthroughCluster"
    } else {
        "BlackHoleCluster"
    };
    Listener {
        name: "virtualOutbound".into(),
        address: Some(sock(addr)),
        use_original_dst: Some(BoolValue { value: true }),
        filter_chains: vec![
            chain(
                "virtualOutbound-blackhole",
                port_match(addr.port()),
                tcp_proxy_filter("BlackHoleCluster"),
            ),
            chain(
                "virtualOutbound-catchall-tcp",
                None,
                tcp_proxy_filter(fallback),
            ),
        ],
        traffic_direction: core::TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

/// `virtualInbound`: restores the destination, sniffs, picks a chain by
/// destination port, and sends anything else to InboundPassthroughCluster.
pub fn virtual_inbound(addr: SocketAddr, mut port_chains: Vec<FilterChain>) -> Listener {
    let mut chains = vec![chain(
        "virtualInbound-blackhole",
        port_match(addr.port()),
        tcp_proxy_filter("BlackHoleCluster"),
    )];
    chains.append(&mut port_chains);
    Listener {
        name: "virtualInbound".into(),
        address: Some(sock(addr)),
        listener_filters: vec![
            listener_filter_original_dst(),
            listener_filter_http_inspector(),
        ],
        listener_filters_timeout: millis(100),
        continue_on_listener_filters_timeout: true,
        filter_chains: chains,
        default_filter_chain: Some(chain(
            "virtualInbound-catchall",
            None,
            tcp_proxy_filter("InboundPassthroughCluster"),
        )),
        traffic_direction: core::TrafficDirection::Inbound as i32,
        ..Default::default()
    }
}

/// An inbound chain for a TCP port of the app: `inbound|PORT||`. Like
/// Istio's, it names the `raw_buffer` transport, as the HTTP chain of a
/// sniffed port does (a chain without it would lose to the HTTP chain at
/// the transport step and never be chosen).
pub fn inbound_tcp_chain(port: u16) -> FilterChain {
    let mut m = port_match(port);
    if let Some(m) = m.as_mut() {
        m.transport_protocol = "raw_buffer".into();
    }
    chain(
        &format!("0.0.0.0_{port}"),
        m,
        tcp_proxy_filter(&format!("inbound|{port}||")),
    )
}

/// An inbound chain for an HTTP port of the app.
pub fn inbound_http_chain(port: u16) -> FilterChain {
    inbound_http_chain_to(port, &format!("inbound|{port}||"))
}

/// An inbound HTTP chain for `port` routing to `cluster`.
pub fn inbound_http_chain_to(port: u16, cluster: &str) -> FilterChain {
    let mut m = port_match(port);
    if let Some(m) = m.as_mut() {
        m.transport_protocol = "raw_buffer".into();
        m.application_protocols = http_protocols();
    }
    chain(
        &format!("0.0.0.0_{port}"),
        m,
        hcm_inline(&format!("inbound_0.0.0.0_{port}"), cluster),
    )
}

/// A `bind_to_port: false` listener for a TCP service port.
pub fn outbound_tcp_listener(addr: SocketAddr, cluster: &str) -> Listener {
    Listener {
        name: format!("{}_{}", addr.ip(), addr.port()),
        address: Some(sock(addr)),
        bind_to_port: Some(BoolValue { value: false }),
        filter_chains: vec![chain("", None, tcp_proxy_filter(cluster))],
        traffic_direction: core::TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

/// A `bind_to_port: false` listener for an HTTP service port (RDS `PORT`).
pub fn outbound_http_listener(addr: SocketAddr, route_name: &str) -> Listener {
    Listener {
        name: format!("{}_{}", addr.ip(), addr.port()),
        address: Some(sock(addr)),
        bind_to_port: Some(BoolValue { value: false }),
        filter_chains: vec![chain(
            "",
            None,
            hcm_rds(
                &format!("outbound_{}_{}", addr.ip(), addr.port()),
                route_name,
            ),
        )],
        traffic_direction: core::TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

/// A sniffed outbound listener: HTTP by `http_inspector`, else TCP after
/// `timeout_ms`.
pub fn sniffed_listener(
    addr: SocketAddr,
    bind_to_port: bool,
    route_name: &str,
    tcp_cluster: &str,
    timeout_ms: i32,
) -> Listener {
    Listener {
        name: format!("{}_{}", addr.ip(), addr.port()),
        address: Some(sock(addr)),
        bind_to_port: Some(BoolValue {
            value: bind_to_port,
        }),
        listener_filters: vec![listener_filter_http_inspector()],
        listener_filters_timeout: millis(timeout_ms),
        continue_on_listener_filters_timeout: true,
        filter_chains: vec![
            chain(
                &format!("{}_{}-http", addr.ip(), addr.port()),
                Some(FilterChainMatch {
                    application_protocols: http_protocols(),
                    ..Default::default()
                }),
                hcm_rds(
                    &format!("outbound_{}_{}", addr.ip(), addr.port()),
                    route_name,
                ),
            ),
            chain(
                &format!("{}_{}-tcp", addr.ip(), addr.port()),
                None,
                tcp_proxy_filter(tcp_cluster),
            ),
        ],
        traffic_direction: core::TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

pub fn vhost(name: &str, domains: &[&str], routes: Vec<route::Route>) -> route::VirtualHost {
    route::VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

fn prefix_all() -> Option<route::RouteMatch> {
    Some(route::RouteMatch {
        path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
        ..Default::default()
    })
}

pub fn forward(name: &str, cluster: &str) -> route::Route {
    route::Route {
        name: name.into(),
        r#match: prefix_all(),
        action: Some(route::route::Action::Route(route::RouteAction {
            cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster(
                cluster.into(),
            )),
            timeout: seconds(0),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Istio's `allow_any` catch-all virtual host.
pub fn allow_any() -> route::VirtualHost {
    route::VirtualHost {
        include_request_attempt_count: true,
        ..vhost(
            "allow_any",
            &["*"],
            vec![forward("allow_any", "PassthroughCluster")],
        )
    }
}

/// Istio's `block_all` catch-all virtual host.
pub fn block_all() -> route::VirtualHost {
    route::VirtualHost {
        include_request_attempt_count: true,
        ..vhost(
            "block_all",
            &["*"],
            vec![route::Route {
                name: "block_all".into(),
                r#match: prefix_all(),
                action: Some(route::route::Action::DirectResponse(
                    route::DirectResponseAction {
                        status: 502,
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }],
        )
    }
}

pub fn route_config(name: &str, vhosts: Vec<route::VirtualHost>) -> route::RouteConfiguration {
    route::RouteConfiguration {
        name: name.into(),
        virtual_hosts: vhosts,
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

pub fn packed<T: prost::Message + prost::Name>(items: &[T]) -> Vec<Any> {
    items.iter().map(pack).collect()
}

/// A complete set of resources, as one push.
#[derive(Clone, Default)]
pub struct Resources {
    pub clusters: Vec<Cluster>,
    pub listeners: Vec<Listener>,
    pub routes: Vec<route::RouteConfiguration>,
}

impl Resources {
    /// Applies them to an in-process proxy, in ADS push order.
    pub fn apply(&self, proxy: &mizzen_proxy::Proxy) -> Result<(), String> {
        proxy.apply(type_url::CLUSTER, "1", packed(&self.clusters))?;
        proxy.apply(type_url::LISTENER, "1", packed(&self.listeners))?;
        proxy.apply(type_url::ROUTE, "1", packed(&self.routes))
    }
}

// ---------------------------------------------------------------------------
// ADS
// ---------------------------------------------------------------------------

/// Serves fixed resources over ADS.
pub struct FixedGenerator(pub Resources);

impl mizzen_xds::server::Generator for FixedGenerator {
    type Proxy = ();

    fn identify(&self, _node: &core::Node) -> Result<(), String> {
        Ok(())
    }

    fn generate(
        &self,
        _proxy: &(),
        type_url: &str,
        names: &[String],
    ) -> Vec<mizzen_xds::server::Resource> {
        let res = |name: &str, body: Any| mizzen_xds::server::Resource {
            name: name.into(),
            body,
        };
        match type_url {
            type_url::CLUSTER => self
                .0
                .clusters
                .iter()
                .map(|c| res(&c.name, pack(c)))
                .collect(),
            type_url::LISTENER => self
                .0
                .listeners
                .iter()
                .map(|l| res(&l.name, pack(l)))
                .collect(),
            type_url::ROUTE => self
                .0
                .routes
                .iter()
                .filter(|r| names.is_empty() || names.contains(&r.name))
                .map(|r| res(&r.name, pack(r)))
                .collect(),
            _ => Vec::new(),
        }
    }
}

pub struct AdsHandle {
    pub addr: SocketAddr,
    pub status: mizzen_xds::server::SyncStatus,
    task: JoinHandle<()>,
    _generation: tokio::sync::watch::Sender<u64>,
}

impl Drop for AdsHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts an ADS server for `resources` on `bind` (port 0 picks one).
pub async fn start_ads(bind: SocketAddr, resources: Resources) -> AdsHandle {
    let (generation, generation_rx) = tokio::sync::watch::channel(1u64);
    let status = mizzen_xds::server::SyncStatus::default();
    let server = mizzen_xds::server::AdsServer::new(
        Arc::new(FixedGenerator(resources)),
        generation_rx,
        status.clone(),
    );
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = server.serve(listener).await;
    });
    AdsHandle {
        addr,
        status,
        task,
        _generation: generation,
    }
}

// ---------------------------------------------------------------------------
// Servers and clients
// ---------------------------------------------------------------------------

/// A server task, aborted on drop.
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Echoes each connection's bytes back, prefixed once by `<name> saw <peer>:`.
pub async fn echo_server(bind: SocketAddr, name: &'static str) -> Server {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, peer)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let hello = format!("{name} saw {}:", peer.ip());
                if stream.write_all(hello.as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Server { addr, task }
}

/// Sends `msg`, half-closes, and reads until the server closes.
pub async fn tcp_roundtrip(addr: SocketAddr, msg: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(msg.as_bytes()).await?;
    s.shutdown().await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::other("timed out"))??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Sends `line` and keeps the connection open (a client-first protocol
/// talking), reading until the answer ends with the line echoed back or
/// three seconds pass. Unlike [`tcp_roundtrip`] it does not half-close: a
/// FIN arriving while a sniffing listener still waits for the end of a
/// request line closes the connection (as in Envoy).
pub async fn send_line(addr: SocketAddr, line: &[u8]) -> String {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return String::new();
    };
    if s.write_all(line).await.is_err() {
        return String::new();
    }
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 256];
    while !got.ends_with(line) && std::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// An HTTP server answering `<name> <method> <path> host=<host>` (HTTP/1.1 and h2c).
pub async fn http_server(bind: SocketAddr, name: &'static str) -> Server {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let host = req
                        .headers()
                        .get("host")
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_string)
                        .or_else(|| req.uri().authority().map(|a| a.to_string()))
                        .unwrap_or_default();
                    let body = format!("{name} {} {} host={host}", req.method(), req.uri().path());
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Server { addr, task }
}

/// One HTTP/1.1 request on a fresh connection: status and body.
pub async fn h1_get(addr: SocketAddr, host: &str, path: &str) -> (StatusCode, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// One h2c (prior knowledge) request: status and body.
pub async fn h2c_get(addr: SocketAddr, authority: &str, path: &str) -> (StatusCode, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(format!("http://{authority}{path}"))
        .version(http::Version::HTTP_2)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A value of `/stats` (text format), 0 when absent.
pub fn stat(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
