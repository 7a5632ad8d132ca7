//! End-to-end: a proxy fed compiled config directly (no pilot) forwarding to
//! tiny upstream servers over HTTP/1.1 and h2c.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mizzen_proxy::{Proxy, ProxyOptions, Readiness, RequestObserver, RequestRecord, ResponseFlags};
use mizzen_xds::pb;
use mizzen_xds::pb::google::protobuf::{Any, Duration as PbDuration};
use mizzen_xds::{pack, type_url};
use pb::envoy::config::cluster::v3::{Cluster, cluster};
use pb::envoy::config::core::v3::{self as core, address, socket_address};
use pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use pb::envoy::config::route::v3 as route;
use pb::envoy::extensions::filters::http::router::v3::Router;
use pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------
// Upstream test server
// ---------------------------------------------------------------------------

/// Answers with its name and echoes what it received in `x-seen-*` headers;
/// `/slow` waits two seconds first. Serves HTTP/1.1 and h2c.
struct Upstream {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn upstream(name: &'static str) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    if req.uri().path() == "/slow" {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    let host = req
                        .headers()
                        .get("host")
                        .map(|h| h.to_str().unwrap_or("").to_string())
                        .or_else(|| req.uri().authority().map(|a| a.to_string()))
                        .unwrap_or_default();
                    let mut resp = Response::new(Full::new(Bytes::from_static(name.as_bytes())));
                    let h = resp.headers_mut();
                    h.insert("x-upstream", name.parse().unwrap());
                    h.insert("x-seen-host", host.parse().unwrap());
                    h.insert("x-seen-uri", req.uri().to_string().parse().unwrap());
                    h.insert(
                        "x-seen-version",
                        format!("{:?}", req.version()).parse().unwrap(),
                    );
                    for (k, v) in req.headers() {
                        if k.as_str().starts_with("x-") {
                            h.insert(
                                http::HeaderName::from_bytes(format!("x-seen-{k}").as_bytes())
                                    .unwrap(),
                                v.clone(),
                            );
                        }
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream { addr, task }
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn collect(resp: Response<Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// HTTP/1.1 request on a fresh connection. `target` may be absolute-form.
async fn h1(addr: SocketAddr, host: &str, target: &str) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(target)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    collect(sender.send_request(req).await.unwrap()).await
}

/// h2c (prior knowledge) request.
async fn h2(addr: SocketAddr, authority: &str, path: &str) -> Reply {
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
    collect(sender.send_request(req).await.unwrap()).await
}

async fn admin_get(admin: SocketAddr, path: &str) -> Reply {
    h1(admin, "localhost", path).await
}

// ---------------------------------------------------------------------------
// Config builders
// ---------------------------------------------------------------------------

fn sock(addr: SocketAddr) -> core::Address {
    core::Address {
        address: Some(address::Address::SocketAddress(core::SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                addr.port(),
            ))),
            ..Default::default()
        })),
    }
}

fn assignment(name: &str, addrs: &[SocketAddr]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
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
    }
}

fn static_cluster(name: &str, addrs: &[SocketAddr]) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(PbDuration {
            seconds: 1,
            nanos: 0,
        }),
        load_assignment: Some(assignment(name, addrs)),
        ..Default::default()
    }
}

fn eds_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        ..Default::default()
    }
}

fn h2_cluster(name: &str, addrs: &[SocketAddr]) -> Cluster {
    let mut c = static_cluster(name, addrs);
    let opts = HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(Default::default())),
            },
        )),
        ..Default::default()
    };
    c.typed_extension_protocol_options.insert(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
        pack(&opts),
    );
    c
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

fn listener(name: &str, addr: SocketAddr, route_name: &str) -> Listener {
    let manager = hcm::HttpConnectionManager {
        stat_prefix: format!("outbound_{name}"),
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
            hcm::Rds {
                config_source: Some(ads()),
                route_config_name: route_name.into(),
            },
        )),
        http_filters: vec![hcm::HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack(
                &Router::default(),
            ))),
            ..Default::default()
        }],
        http_protocol_options: Some(core::Http1ProtocolOptions {
            allow_absolute_url: Some(pb::google::protobuf::BoolValue { value: true }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Listener {
        name: name.into(),
        address: Some(sock(addr)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack(&manager))),
            }],
            ..Default::default()
        }],
        traffic_direction: core::TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

fn to_cluster(cluster: &str, timeout: Option<PbDuration>) -> Option<route::route::Action> {
    Some(route::route::Action::Route(route::RouteAction {
        cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster(
            cluster.into(),
        )),
        timeout,
        ..Default::default()
    }))
}

fn vhost(name: &str, domains: &[&str], routes: Vec<route::Route>) -> route::VirtualHost {
    route::VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

fn prefix_route(name: &str, prefix: &str, action: Option<route::route::Action>) -> route::Route {
    route::Route {
        name: name.into(),
        r#match: Some(route::RouteMatch {
            path_specifier: Some(route::route_match::PathSpecifier::Prefix(prefix.into())),
            ..Default::default()
        }),
        action,
        ..Default::default()
    }
}

fn routes(name: &str) -> route::RouteConfiguration {
    let added = core::HeaderValueOption {
        header: Some(core::HeaderValue {
            key: "x-added".into(),
            value: "yes".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut svc = vhost(
        "service-b",
        &["service-b", "service-b:80"],
        vec![
            prefix_route(
                "slow",
                "/slow",
                to_cluster(
                    "rr",
                    Some(PbDuration {
                        seconds: 0,
                        nanos: 200_000_000,
                    }),
                ),
            ),
            prefix_route("rewrite", "/api/", None),
            prefix_route("default", "/", to_cluster("rr", None)),
        ],
    );
    svc.routes[1].action = Some(route::route::Action::Route(route::RouteAction {
        cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster("rr".into())),
        prefix_rewrite: "/v2/".into(),
        host_rewrite_specifier: Some(
            route::route_action::HostRewriteSpecifier::HostRewriteLiteral(
                "rewritten.example".into(),
            ),
        ),
        ..Default::default()
    }));
    svc.request_headers_to_add = vec![added];
    route::RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![
            svc,
            vhost(
                "h2",
                &["h2svc"],
                vec![prefix_route("h2", "/", to_cluster("h2", None))],
            ),
            vhost(
                "eds",
                &["eds-svc"],
                vec![prefix_route("eds", "/", to_cluster("eds", None))],
            ),
            vhost(
                "dead",
                &["dead-svc"],
                vec![prefix_route("dead", "/", to_cluster("dead", None))],
            ),
            vhost(
                "missing",
                &["missing-svc"],
                vec![prefix_route("missing", "/", to_cluster("nope", None))],
            ),
            vhost(
                "direct",
                &["direct-svc"],
                vec![route::Route {
                    name: "direct".into(),
                    r#match: Some(route::RouteMatch {
                        path_specifier: Some(route::route_match::PathSpecifier::Path(
                            "/hello".into(),
                        )),
                        ..Default::default()
                    }),
                    action: Some(route::route::Action::DirectResponse(
                        route::DirectResponseAction {
                            status: 200,
                            body: Some(core::DataSource {
                                specifier: Some(core::data_source::Specifier::InlineString(
                                    "hi\n".into(),
                                )),
                                ..Default::default()
                            }),
                            body_format: None,
                        },
                    )),
                    ..Default::default()
                }],
            ),
        ],
        ..Default::default()
    }
}

fn packed<T: prost::Message + prost::Name>(items: &[T]) -> Vec<Any> {
    items.iter().map(pack).collect()
}

#[derive(Default)]
struct Records(Mutex<Vec<RequestRecord>>);

impl RequestObserver for Records {
    fn on_request(&self, record: &RequestRecord) {
        self.0.lock().unwrap().push(record.clone());
    }
}

impl Records {
    fn last(&self) -> RequestRecord {
        self.0.lock().unwrap().last().cloned().unwrap()
    }
}

async fn start_proxy(records: Arc<Records>) -> Proxy {
    let node = mizzen_xds::client::Node {
        id: "sidecar~127.0.0.1~test.default~default.svc.cluster.local".into(),
        ..Default::default()
    };
    let opts = ProxyOptions {
        admin_address: "127.0.0.1:0".parse().unwrap(),
        drain_timeout: Duration::from_secs(2),
        observer: Some(records),
        ..ProxyOptions::new("", node)
    };
    Proxy::start(opts).await.unwrap()
}

fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_http1_and_h2c_with_envoy_semantics() {
    let a = upstream("a").await;
    let b = upstream("b").await;
    let records = Arc::new(Records::default());
    let proxy = start_proxy(records.clone()).await;
    let admin = proxy.admin_address();
    assert_eq!(proxy.readiness(), Readiness::PreInitializing);
    assert_eq!(
        admin_get(admin, "/ready").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // CDS, then LDS; RDS and EDS still missing keeps the proxy initializing.
    let clusters = [
        static_cluster("rr", &[a.addr, b.addr]),
        h2_cluster("h2", &[a.addr]),
        eds_cluster("eds"),
        static_cluster("dead", &[closed_port()]),
    ];
    proxy
        .apply(type_url::CLUSTER, "c1", packed(&clusters))
        .unwrap();
    assert_eq!(proxy.wanted(type_url::ENDPOINT), ["eds"]);
    proxy
        .apply(
            type_url::LISTENER,
            "l1",
            packed(&[listener(
                "outbound_http",
                "127.0.0.1:0".parse().unwrap(),
                "http",
            )]),
        )
        .unwrap();
    assert_eq!(proxy.wanted(type_url::ROUTE), ["http"]);
    assert_eq!(proxy.readiness(), Readiness::Initializing);
    let (_, addr) = proxy.listener_addresses().into_iter().next().unwrap();

    // Before RDS arrives every request is NR.
    let r = h1(addr, "service-b", "/").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(records.last().flags, ResponseFlags::NO_ROUTE_FOUND);

    proxy
        .apply(type_url::ROUTE, "r1", packed(&[routes("http")]))
        .unwrap();
    assert_eq!(proxy.readiness(), Readiness::Initializing);

    // EDS not received yet: UH.
    let r = h1(addr, "eds-svc", "/").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")
    );
    assert_eq!(records.last().flags, ResponseFlags::NO_HEALTHY_UPSTREAM);

    proxy
        .apply(
            type_url::ENDPOINT,
            "e1",
            packed(&[assignment("eds", &[b.addr])]),
        )
        .unwrap();
    assert_eq!(proxy.readiness(), Readiness::Live);
    tokio::time::timeout(Duration::from_secs(1), proxy.ready())
        .await
        .unwrap();
    let ready = admin_get(admin, "/ready").await;
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (StatusCode::OK, "LIVE\n")
    );
    assert_eq!(h1(addr, "eds-svc", "/").await.body, "b");

    // Round robin across the two endpoints, HTTP/1.1 in and out.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = h1(addr, "service-b", "/x?q=1").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-seen-host"), "service-b");
        assert_eq!(r.header("x-seen-uri"), "/x?q=1");
        assert_eq!(r.header("x-seen-x-added"), "yes");
        assert_eq!(r.header("x-seen-x-envoy-expected-rq-timeout-ms"), "15000");
        assert_eq!(r.header("x-seen-x-request-id").len(), 36);
        assert_eq!(r.header("server"), "envoy");
        assert!(!r.header("x-envoy-upstream-service-time").is_empty());
        seen.push(r.body);
    }
    seen.sort();
    assert_eq!(seen, ["a", "a", "b", "b"]);
    let rec = records.last();
    assert_eq!(rec.flags, ResponseFlags::empty());
    assert_eq!(rec.route_name.as_deref(), Some("default"));
    assert_eq!(rec.cluster.as_deref(), Some("rr"));

    // An absolute-form request is routed by its authority and forwarded in
    // origin form, whatever the Host header says.
    let r = h1(addr, "ignored", "http://service-b:80/abs?x=1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-seen-uri"), "/abs?x=1");
    assert_eq!(r.header("x-seen-host"), "service-b:80");

    // Prefix and host rewrite.
    let r = h1(addr, "service-b", "/api/items?y=2").await;
    assert_eq!(r.header("x-seen-uri"), "/v2/items?y=2");
    assert_eq!(r.header("x-seen-host"), "rewritten.example");

    // h2c downstream to an HTTP/1.1 cluster, and to an h2c cluster.
    let r = h2(addr, "service-b", "/h2-in").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-seen-host"), "service-b");
    assert_eq!(r.header("x-seen-version"), "HTTP/1.1");
    let r = h2(addr, "h2svc", "/h2-both").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "a"));
    assert_eq!(r.header("x-seen-version"), "HTTP/2.0");
    assert_eq!(r.header("x-seen-host"), "h2svc");
    let r = h1(addr, "h2svc", "/h1-in").await;
    assert_eq!(r.header("x-seen-version"), "HTTP/2.0");

    // NR: no virtual host.
    let r = h1(addr, "unknown", "/").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::NOT_FOUND, ""));
    assert_eq!(records.last().flags, ResponseFlags::NO_ROUTE_FOUND);

    // NC: the route's cluster does not exist.
    let r = h1(addr, "missing-svc", "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(records.last().flags, ResponseFlags::NO_CLUSTER_FOUND);

    // UF: nothing listens on the endpoint.
    let r = h1(addr, "dead-svc", "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        r.body
            .starts_with("upstream connect error or disconnect/reset before headers"),
        "{}",
        r.body
    );
    assert_eq!(
        records.last().flags,
        ResponseFlags::UPSTREAM_CONNECTION_FAILURE
    );

    // UT: the route timeout (200ms) expires before the upstream answers.
    let r = h1(addr, "service-b", "/slow").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "upstream request timeout")
    );
    assert_eq!(
        records.last().flags,
        ResponseFlags::UPSTREAM_REQUEST_TIMEOUT
    );

    // Direct response.
    let r = h1(addr, "direct-svc", "/hello").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "hi\n"));

    // A bad update is NACKed with a reason and changes nothing.
    let mut bad = listener("outbound_http", "127.0.0.1:0".parse().unwrap(), "http");
    bad.filter_chains[0].filters[0] = Filter {
        name: "envoy.filters.network.redis_proxy".into(),
        config_type: None,
    };
    let err = proxy
        .apply(type_url::LISTENER, "l2", packed(&[bad]))
        .unwrap_err();
    assert_eq!(
        err,
        "listener outbound_http: filter envoy.filters.network.redis_proxy is not supported"
    );
    assert_eq!(h1(addr, "service-b", "/").await.status, StatusCode::OK);

    // Admin: stats and config dump in Envoy's shape.
    let stats = admin_get(admin, "/stats").await.body;
    for line in [
        "cluster.rr.upstream_rq_200: ",
        "cluster.rr.upstream_cx_total: ",
        "cluster.dead.upstream_cx_connect_fail: 1",
        "http.outbound_outbound_http.downstream_rq_2xx: ",
        "http.outbound_outbound_http.downstream_rq_5xx: ",
        "http.outbound_outbound_http.downstream_rq_total: ",
        "listener.127.0.0.1_0.downstream_cx_total: ",
        "listener_manager.lds.update_rejected: 1",
        "server.live: 1",
    ] {
        assert!(stats.contains(line), "missing {line:?} in\n{stats}");
    }
    let dump: serde_json::Value =
        serde_json::from_str(&admin_get(admin, "/config_dump").await.body).unwrap();
    let configs = dump["configs"].as_array().unwrap();
    let types: Vec<&str> = configs
        .iter()
        .map(|c| c["@type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
            "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
        ]
    );
    let dl = &configs[3]["dynamic_listeners"][0];
    assert_eq!(dl["name"], "outbound_http");
    assert_eq!(dl["active_state"]["version_info"], "l1");
    assert_eq!(
        dl["active_state"]["listener"]["@type"],
        "type.googleapis.com/envoy.config.listener.v3.Listener"
    );
    assert_eq!(
        configs[1]["dynamic_active_clusters"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        configs[4]["dynamic_route_configs"][0]["route_config"]["name"],
        "http"
    );
    assert_eq!(
        configs[0]["bootstrap"]["node"]["id"],
        "sidecar~127.0.0.1~test.default~default.svc.cluster.local"
    );

    // Removing the listener stops accepting.
    proxy.apply(type_url::LISTENER, "l3", vec![]).unwrap();
    let mut closed = false;
    for _ in 0..50 {
        if TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "removed listener still accepts");

    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish() {
    let a = upstream("a").await;
    let records = Arc::new(Records::default());
    let proxy = start_proxy(records).await;
    proxy
        .apply(
            type_url::CLUSTER,
            "1",
            packed(&[static_cluster("rr", &[a.addr]), h2_cluster("h2", &[a.addr])]),
        )
        .unwrap();
    proxy
        .apply(
            type_url::LISTENER,
            "1",
            packed(&[listener("l", "127.0.0.1:0".parse().unwrap(), "http")]),
        )
        .unwrap();
    let mut rc = routes("http");
    // Give /slow enough time to complete.
    rc.virtual_hosts[0].routes[0].action = to_cluster(
        "rr",
        Some(PbDuration {
            seconds: 5,
            nanos: 0,
        }),
    );
    proxy.apply(type_url::ROUTE, "1", packed(&[rc])).unwrap();
    assert_eq!(proxy.readiness(), Readiness::Live);
    let (_, addr) = proxy.listener_addresses().into_iter().next().unwrap();
    let in_flight = tokio::spawn(async move { h1(addr, "service-b", "/slow").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.shutdown().await;
    let r = in_flight.await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "a"));
    assert!(TcpStream::connect(addr).await.is_err());
}

/// Serves fixed resources the way the pilot would.
struct FixedGenerator {
    upstream: SocketAddr,
}

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
            type_url::CLUSTER => vec![res("rr", pack(&eds_cluster("rr")))],
            type_url::ENDPOINT => names
                .iter()
                .filter(|n| *n == "rr")
                .map(|n| res(n, pack(&assignment(n, &[self.upstream]))))
                .collect(),
            type_url::LISTENER => vec![res(
                "outbound_http",
                pack(&listener(
                    "outbound_http",
                    "127.0.0.1:0".parse().unwrap(),
                    "http",
                )),
            )],
            type_url::ROUTE => names
                .iter()
                .filter(|n| *n == "http")
                .map(|n| res(n, pack(&routes(n))))
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn becomes_ready_over_ads() {
    let a = upstream("a").await;
    let (_generation, generation_rx) = tokio::sync::watch::channel(1u64);
    let server = mizzen_xds::server::AdsServer::new(
        Arc::new(FixedGenerator { upstream: a.addr }),
        generation_rx,
        mizzen_xds::server::SyncStatus::default(),
    );
    let xds = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let xds_addr = xds.local_addr().unwrap();
    let server_task = tokio::spawn(server.serve(xds));
    let node = mizzen_xds::client::Node {
        id: "sidecar~127.0.0.1~ads.default~default.svc.cluster.local".into(),
        ..Default::default()
    };
    let proxy = Proxy::start(ProxyOptions {
        admin_address: "127.0.0.1:0".parse().unwrap(),
        ..ProxyOptions::new(format!("http://{xds_addr}"), node)
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), proxy.ready())
        .await
        .expect("proxy did not become ready over ADS");
    let (_, addr) = proxy.listener_addresses().into_iter().next().unwrap();
    let r = h1(addr, "service-b", "/").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "a"));
    let stats = admin_get(proxy.admin_address(), "/stats").await.body;
    assert!(
        stats.contains("cluster_manager.cds.update_success: 1"),
        "{stats}"
    );
    proxy.shutdown().await;
    server_task.abort();
}
