//! End-to-end: STRICT_DNS and LOGICAL_DNS clusters (Istio's ServiceEntry
//! `resolution: DNS` and `DNS_ROUND_ROBIN`) and `require_tls` virtual hosts
//! (a Gateway server's `httpsRedirect`), on a proxy fed config directly.
//! Names resolve through a fixed table, never the network.

mod support;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mizzen_proxy::upstream::dns::Resolver;
use mizzen_proxy::{Proxy, ProxyOptions, Readiness, RequestObserver, RequestRecord, ResponseFlags};
use mizzen_xds::pb;
use mizzen_xds::pb::google::protobuf::{BoolValue, Duration as PbDuration};
use mizzen_xds::type_url;
use pb::envoy::config::cluster::v3::{Cluster, cluster};
use pb::envoy::config::core::v3::{self as core, address, socket_address};
use pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use pb::envoy::config::listener::v3::Listener;
use pb::envoy::config::route::v3 as route;
use support::{chain, forward, hcm_rds, packed, route_config, sock, vhost};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Names to addresses; a name mapped to `None` fails to resolve, as does
/// any name not listed.
#[derive(Default)]
struct Table(Mutex<HashMap<String, Option<Vec<IpAddr>>>>);

impl Table {
    fn set(&self, name: &str, ips: Option<&[IpAddr]>) {
        self.0
            .lock()
            .unwrap()
            .insert(name.into(), ips.map(<[IpAddr]>::to_vec));
    }
}

impl Resolver for Table {
    fn lookup(&self, name: &str, _port: u16) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
        let found = self.0.lock().unwrap().get(name).cloned().flatten();
        Box::pin(async move { found.ok_or_else(|| io::Error::other("no such host")) })
    }
}

#[derive(Default)]
struct Records(Mutex<Vec<RequestRecord>>);

impl RequestObserver for Records {
    fn on_request(&self, r: &RequestRecord) {
        self.0.lock().unwrap().push(r.clone());
    }
}

/// An HTTP/1.1 server answering with its name.
struct Server {
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn server(listener: TcpListener, name: &'static str) -> Server {
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                        name.as_bytes(),
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Server { task }
}

/// Two servers on two loopback addresses sharing one port, as the
/// addresses of one DNS name would.
async fn two_servers() -> (IpAddr, IpAddr, u16, Server, Server) {
    loop {
        let a_ip = mizzen_testkit::free_loopback_ip();
        let b_ip = mizzen_testkit::free_loopback_ip();
        let a = TcpListener::bind((a_ip, 0)).await.unwrap();
        let port = a.local_addr().unwrap().port();
        if let Ok(b) = TcpListener::bind((b_ip, port)).await {
            return (
                a_ip.into(),
                b_ip.into(),
                port,
                server(a, "a").await,
                server(b, "b").await,
            );
        }
    }
}

struct Reply {
    status: u16,
    location: Option<String>,
    body: String,
}

async fn get(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::get(path).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        location,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn endpoint(host: &str, port: u16) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(core::Address {
                address: Some(address::Address::SocketAddress(core::SocketAddress {
                    address: host.into(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Istio's ServiceEntry cluster shape, re-resolved every 50 ms.
#[allow(deprecated)] // Envoy still reads the DNS fields Istio emits.
fn dns_cluster(name: &str, kind: cluster::DiscoveryType, hosts: &[&str], port: u16) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(kind as i32)),
        connect_timeout: Some(PbDuration {
            seconds: 1,
            nanos: 0,
        }),
        dns_lookup_family: cluster::DnsLookupFamily::V4Only as i32,
        dns_refresh_rate: Some(PbDuration {
            seconds: 0,
            nanos: 50_000_000,
        }),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: hosts.iter().map(|h| endpoint(h, port)).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn bound_listener(route_name: &str) -> Listener {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    Listener {
        name: "gateway".into(),
        address: Some(sock(addr)),
        bind_to_port: Some(BoolValue { value: true }),
        filter_chains: vec![chain("", None, hcm_rds("gateway", route_name))],
        ..Default::default()
    }
}

async fn start(resolver: Arc<Table>, records: Arc<Records>) -> Proxy {
    let node = mizzen_xds::client::Node {
        id: "router~127.0.0.1~gw.istio-system~istio-system.svc.cluster.local".into(),
        ..Default::default()
    };
    Proxy::start(ProxyOptions {
        admin_address: "127.0.0.1:0".parse().unwrap(),
        drain_timeout: Duration::from_secs(1),
        observer: Some(records),
        resolver: Some(resolver),
        ..ProxyOptions::new("", node)
    })
    .await
    .unwrap()
}

/// Retries until `check` holds, for up to five seconds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_clusters_resolve_balance_and_follow_changes() {
    let (a, b, port, _sa, _sb) = two_servers().await;
    let table = Arc::new(Table::default());
    table.set("svc.test", Some(&[a, b]));
    table.set("rr.test", Some(&[b, a]));
    table.set("gone.test", None);
    let records = Arc::new(Records::default());
    let proxy = start(table.clone(), records.clone()).await;
    let clusters = [
        dns_cluster(
            "outbound|80||svc.test",
            cluster::DiscoveryType::StrictDns,
            &["svc.test"],
            port,
        ),
        dns_cluster(
            "outbound|80||rr.test",
            cluster::DiscoveryType::LogicalDns,
            &["rr.test"],
            port,
        ),
        dns_cluster(
            "outbound|80||gone.test",
            cluster::DiscoveryType::StrictDns,
            &["gone.test"],
            port,
        ),
    ];
    proxy
        .apply(type_url::CLUSTER, "1", packed(&clusters))
        .unwrap();
    proxy
        .apply(
            type_url::LISTENER,
            "1",
            packed(&[bound_listener("http.80")]),
        )
        .unwrap();
    let routes = route_config(
        "http.80",
        vec![
            vhost(
                "svc",
                &["svc.test"],
                vec![forward("svc", "outbound|80||svc.test")],
            ),
            vhost(
                "rr",
                &["rr.test"],
                vec![forward("rr", "outbound|80||rr.test")],
            ),
            vhost(
                "gone",
                &["gone.test"],
                vec![forward("gone", "outbound|80||gone.test")],
            ),
        ],
    );
    proxy
        .apply(type_url::ROUTE, "1", packed(&[routes]))
        .unwrap();
    // Ready once every DNS cluster finished its first round, found or not.
    tokio::time::timeout(Duration::from_secs(5), proxy.ready())
        .await
        .unwrap();
    assert_eq!(proxy.readiness(), Readiness::Live);
    let addr = proxy.listener_address("gateway").unwrap();

    // STRICT_DNS: every address is a host.
    let mut seen = Vec::new();
    for _ in 0..6 {
        let r = get(addr, "svc.test", "/", &[]).await;
        assert_eq!(r.status, 200);
        seen.push(r.body);
    }
    assert!(
        seen.contains(&"a".to_string()) && seen.contains(&"b".to_string()),
        "{seen:?}"
    );
    // LOGICAL_DNS: the first address only.
    for _ in 0..4 {
        assert_eq!(get(addr, "rr.test", "/", &[]).await.body, "b");
    }
    // Never resolved: no healthy upstream.
    let r = get(addr, "gone.test", "/", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "no healthy upstream");
    let flags = records
        .0
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r.cluster.as_deref() == Some("outbound|80||gone.test"))
        .map(|r| r.flags)
        .unwrap();
    assert!(
        flags.contains(ResponseFlags::NO_HEALTHY_UPSTREAM),
        "{flags:?}"
    );

    // Re-resolution follows the names.
    table.set("svc.test", Some(&[a]));
    table.set("rr.test", Some(&[a, b]));
    table.set("gone.test", Some(&[b]));
    eventually("svc.test down to a", || async {
        for _ in 0..4 {
            let r = get(addr, "svc.test", "/", &[]).await;
            if r.body != "a" {
                return Err(r.body);
            }
        }
        Ok(())
    })
    .await;
    eventually("rr.test now first a", || async {
        let r = get(addr, "rr.test", "/", &[]).await;
        (r.body == "a").then_some(()).ok_or(r.body)
    })
    .await;
    eventually("gone.test resolves", || async {
        let r = get(addr, "gone.test", "/", &[]).await;
        (r.status == 200).then_some(()).ok_or(r.body)
    })
    .await;
    // A failing lookup keeps the last addresses.
    table.set("gone.test", None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(addr, "gone.test", "/", &[]).await.body, "b");

    // A CDS push without the cluster stops its resolution; the others stay.
    proxy
        .apply(type_url::CLUSTER, "2", packed(&clusters[..2]))
        .unwrap();
    assert_eq!(get(addr, "svc.test", "/", &[]).await.body, "a");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_cluster_refusals_name_the_field() {
    let proxy = start(Arc::default(), Arc::default()).await;
    let mut two = dns_cluster(
        "rr",
        cluster::DiscoveryType::LogicalDns,
        &["a.test", "b.test"],
        80,
    );
    let err = proxy
        .apply(type_url::CLUSTER, "1", packed(std::slice::from_ref(&two)))
        .unwrap_err();
    assert_eq!(
        err,
        "cluster rr: load_assignment: LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint"
    );
    two.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
        cluster::DiscoveryType::StrictDns as i32,
    ));
    #[allow(deprecated)]
    {
        two.dns_failure_refresh_rate = Some(Default::default());
    }
    let err = proxy
        .apply(type_url::CLUSTER, "1", packed(&[two]))
        .unwrap_err();
    assert_eq!(err, "cluster rr: dns_failure_refresh_rate is not supported");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_tls_redirects_plaintext_to_https() {
    let (a, _, port, _sa, _sb) = two_servers().await;
    let backend = SocketAddr::new(a, port);
    let proxy = start(Arc::default(), Arc::default()).await;
    proxy
        .apply(
            type_url::CLUSTER,
            "1",
            packed(&[support::static_cluster("backend", &[backend], None)]),
        )
        .unwrap();
    proxy
        .apply(
            type_url::LISTENER,
            "1",
            packed(&[bound_listener("http.8080")]),
        )
        .unwrap();
    let secure = |name: &str, req: route::virtual_host::TlsRequirementType| route::VirtualHost {
        require_tls: req as i32,
        ..vhost(
            name,
            &[name, &format!("{name}:*")],
            vec![forward(name, "backend")],
        )
    };
    let routes = route_config(
        "http.8080",
        vec![
            secure(
                "all.example.com",
                route::virtual_host::TlsRequirementType::All,
            ),
            secure(
                "external.example.com",
                route::virtual_host::TlsRequirementType::ExternalOnly,
            ),
            vhost("plain", &["*"], vec![forward("plain", "backend")]),
        ],
    );
    proxy
        .apply(type_url::ROUTE, "1", packed(&[routes]))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), proxy.ready())
        .await
        .unwrap();
    let addr = proxy.listener_address("gateway").unwrap();

    let r = get(addr, "all.example.com:8080", "/p?q=1", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.location.as_deref(),
        Some("https://all.example.com:8080/p?q=1")
    );
    // A front proxy that terminated TLS says so.
    let r = get(
        addr,
        "all.example.com",
        "/",
        &[("x-forwarded-proto", "https")],
    )
    .await;
    assert_eq!(r.status, 200);
    // EXTERNAL_ONLY lets internal requests through in plaintext.
    let r = get(addr, "external.example.com", "/", &[]).await;
    assert_eq!(r.status, 301);
    let r = get(
        addr,
        "external.example.com",
        "/",
        &[("x-forwarded-for", "10.0.0.7")],
    )
    .await;
    assert_eq!(r.status, 200);
    // Other hosts are untouched.
    assert_eq!(get(addr, "other.example.com", "/", &[]).await.status, 200);
    proxy.shutdown().await;
}
