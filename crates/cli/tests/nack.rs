//! mizzen-proxy against an ADS server that sends config it cannot apply: the
//! proxy NACKs with a reason naming the resource, the pilot side records it,
//! and the proxy keeps serving its last good config until a good one comes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mizzen_proxy::{Proxy, ProxyOptions};
use mizzen_xds::pb::envoy::config::core::v3::{
    Address, DataSource, SocketAddress, address, data_source, socket_address,
};
use mizzen_xds::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use mizzen_xds::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
    route_match::PathSpecifier,
};
use mizzen_xds::pb::envoy::extensions::filters::http::router::v3::Router;
use mizzen_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager::RouteSpecifier, http_filter,
};
use mizzen_xds::pb::google::protobuf::Any;
use mizzen_xds::server::{AdsServer, Generator, Resource, SyncStatus};
use mizzen_xds::{client::Node, type_url};
use tokio::sync::watch;

struct Switch {
    /// The body the good listener answers with.
    body: Mutex<String>,
    /// Whether to add a listener with a filter mizzen-proxy does not know.
    broken: Mutex<bool>,
    address: SocketAddr,
}

fn socket(address: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                address.port(),
            ))),
            ..Default::default()
        })),
    }
}

fn filter(name: &str, config: Any) -> Filter {
    Filter {
        name: name.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(config)),
    }
}

fn listener(name: &str, address: SocketAddr, filter: Filter) -> Resource {
    Resource {
        name: name.to_string(),
        body: mizzen_xds::pack(&Listener {
            name: name.to_string(),
            address: Some(socket(address)),
            filter_chains: vec![FilterChain {
                filters: vec![filter],
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

impl Generator for Switch {
    type Proxy = ();

    fn identify(
        &self,
        _node: &mizzen_xds::pb::envoy::config::core::v3::Node,
    ) -> Result<(), String> {
        Ok(())
    }

    fn generate(&self, _proxy: &(), type_url: &str, _names: &[String]) -> Vec<Resource> {
        if type_url != type_url::LISTENER {
            return Vec::new();
        }
        let body = self.body.lock().unwrap().clone();
        let hcm = HttpConnectionManager {
            stat_prefix: "test".into(),
            route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
                name: "local".into(),
                virtual_hosts: vec![VirtualHost {
                    name: "all".into(),
                    domains: vec!["*".into()],
                    routes: vec![Route {
                        r#match: Some(RouteMatch {
                            path_specifier: Some(PathSpecifier::Prefix("/".into())),
                            ..Default::default()
                        }),
                        action: Some(Action::DirectResponse(DirectResponseAction {
                            status: 200,
                            body: Some(DataSource {
                                specifier: Some(data_source::Specifier::InlineString(body)),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })),
            http_filters: vec![HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(mizzen_xds::pack(
                    &Router::default(),
                ))),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut out = vec![listener(
            "good",
            self.address,
            filter(
                "envoy.filters.network.http_connection_manager",
                mizzen_xds::pack(&hcm),
            ),
        )];
        if *self.broken.lock().unwrap() {
            let other = SocketAddr::new(self.address.ip(), self.address.port() + 1);
            out.push(listener(
                "unsupported",
                other,
                filter(
                    "envoy.filters.network.redis_proxy",
                    Any {
                        type_url: "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy".into(),
                        value: Vec::new(),
                    },
                ),
            ));
        }
        out
    }
}

async fn body(address: SocketAddr) -> String {
    let (status, _, body) = mizzen_testkit::http_get(&address.to_string(), "test", "/", &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body).to_string()
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_is_nacked_and_last_good_kept() {
    let ip = mizzen_testkit::free_loopback_ip();
    let address = SocketAddr::from((ip, 8080));
    let switch = Arc::new(Switch {
        body: Mutex::new("first".into()),
        broken: Mutex::new(false),
        address,
    });
    let (generation, generation_rx) = watch::channel(1u64);
    let status = SyncStatus::default();
    let server = AdsServer::new(switch.clone(), generation_rx, status.clone());
    let xds = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let xds_address = xds.local_addr().unwrap();
    let server_task = tokio::spawn(server.serve(xds));
    let node = Node {
        id: format!("router~{ip}~gw.test~test.svc.cluster.local"),
        ..Default::default()
    };
    let proxy = Proxy::start(ProxyOptions {
        admin_address: SocketAddr::from((ip, 0)),
        concurrency: 1,
        drain_timeout: Duration::from_secs(1),
        ..ProxyOptions::new(format!("http://{xds_address}"), node)
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), proxy.ready())
        .await
        .unwrap();
    assert_eq!(body(address).await, "first");

    let lds = || {
        status
            .snapshot()
            .first()
            .and_then(|c| c.types.get("LDS").cloned())
    };
    *switch.broken.lock().unwrap() = true;
    *switch.body.lock().unwrap() = "second".into();
    generation.send_replace(2);
    eventually("LDS NACKed", async || {
        lds().is_some_and(|t| t.nack.is_some())
    })
    .await;
    let reason = lds().unwrap().nack.unwrap().1;
    assert!(
        reason.contains("unsupported"),
        "the reason names the listener: {reason}"
    );
    assert!(
        reason.contains("redis_proxy"),
        "the reason names the filter: {reason}"
    );
    // The whole update was refused: the good listener still answers as before.
    assert_eq!(body(address).await, "first");
    let (code, dump) = admin_get(proxy.admin_address(), "/config_dump").await;
    assert_eq!(code, 200);
    assert!(!dump.contains("redis_proxy"), "{dump}");

    *switch.broken.lock().unwrap() = false;
    generation.send_replace(3);
    eventually("LDS synced again", async || {
        lds().is_some_and(|t| t.state() == "SYNCED")
    })
    .await;
    eventually("new body served", async || body(address).await == "second").await;

    proxy.shutdown().await;
    server_task.abort();
}

async fn admin_get(address: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = mizzen_testkit::http_get(&address.to_string(), "admin", path, &[])
        .await
        .unwrap();
    (status.as_u16(), String::from_utf8_lossy(&body).to_string())
}
