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
use pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint};
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
            let Ok((stream, _)) = listener.accept().await else { return };
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
                    h.insert("x-seen-version", format!("{:?}", req.version()).parse().unwrap());
                    for (k, v) in req.headers() {
                        if k.as_str().starts_with("x-") {
                            h.insert(
                                http::HeaderName::from_bytes(format!("x-seen-{k}").as_bytes()).unwrap(),
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
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
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
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
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
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
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
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(addr.port()))),
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
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Static as i32)),
        connect_timeout: Some(PbDuration { seconds: 1, nanos: 0 }),
        load_assignment: Some(assignment(name, addrs)),
        ..Default::default()
    }
}

fn eds_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Eds as i32)),
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
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(Default::default())),
        })),
        ..Default::default()
    };
    c.typed_extension_protocol_options
        .insert("envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(), pack(&opts));
    c
}

fn ads() -> core::ConfigSource {
    core::ConfigSource {
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(core::AggregatedConfigSource {})),
        resource_api_version: core::ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn listener(name: &str, addr: SocketAddr, route_name: &str) -> Listener {
    let manager = hcm::HttpConnectionManager {
        stat_prefix: format!("outbound_{name}"),
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(hcm::Rds {
            config_source: Some(ads()),
            route_config_name: route_name.into(),
        })),
        http_filters: vec![hcm::HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack(&Router::default()))),
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
        cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster(cluster.into())),
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
            prefix_route("slow", "/slow", to_cluster("rr", Some(PbDuration { seconds: 0, nanos: 200_000_000 }))),
            prefix_route("rewrite", "/api/", None),
            prefix_route("default", "/", to_cluster("rr", None)),
        ],
    );
    svc.routes[1].action = Some(route::route::Action::Route(route::RouteAction {
        cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster("rr".into())),
        prefix_rewrite: "/v2/".into(),
        host_rewrite_literal_for_test(),
        ..Default::default()
    }));
    svc.request_headers_to_add = vec![added];
    route::RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![
            svc,
            vhost("h2", &["h2svc"], vec![prefix_route("h2", "/", to_cluster("h2", None))]),
            vhost("eds", &["eds-svc"], vec![prefix_route("eds", "/", to_cluster("eds", None))]),
            vhost("dead", &["dead-svc"], vec![prefix_route("dead", "/", to_cluster("dead", None))]),
            vhost("missing", &["missing-svc"], vec![prefix_route("missing", "/", to_cluster("nope", None))]),
            vhost(
                "direct",
                &["direct-svc"],
                vec![route::Route {
                    name: "direct".into(),
                    r#match: Some(route::RouteMatch {
                        path_specifier: Some(route::route_match::PathSpecifier::Path("/hello".into())),
                        ..Default::default()
                    }),
                    action: Some(route::route::Action::DirectResponse(route::DirectResponseAction {
                        status: 200,
                        body: Some(core::DataSource {
                            specifier: Some(core::data_source::Specifier::InlineString("hi\n".into())),
                            ..Default::default()
                        }),
                    })),
                    ..Default::default()
                }],
            ),
        ],
        ..Default::default()
    }
}
