//! A sidecar in REDIRECT mode, in process and without root: the Istio-shaped
//! listeners and clusters applied with `Proxy::apply`.
//!
//! Without iptables nothing is redirected, so a connection's original
//! destination is its local address. The first test relies on exactly that
//! (the real `SO_ORIGINAL_DST` lookup): a connection to the bound
//! `virtualOutbound` address is handed off to the `bind_to_port: false`
//! listener on `0.0.0.0:<same port>`. The others simulate capture with a
//! test [`OriginalDst`] that says where each client "was going", keyed by the
//! client's own loopback address, which is what a REDIRECT rule would have
//! recorded.

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use mizzen_proxy::{
    ConnectionRecord, OriginalDst, Proxy, ProxyOptions, RequestObserver, RequestRecord,
    ResponseFlags,
};
use mizzen_testkit::net::{free_loopback_ip, free_port_on};
use mizzen_xds::pb;
use mizzen_xds::{pack, type_url};
use pb::envoy::config::listener::v3::{Filter, filter};
use pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Where each client (by its source IP) "was going" before capture.
#[derive(Default)]
struct Redirects(Mutex<HashMap<IpAddr, SocketAddr>>);

impl Redirects {
    fn set(&self, client: IpAddr, original: SocketAddr) {
        self.0.lock().unwrap().insert(client, original);
    }
}

impl OriginalDst for Redirects {
    fn original_dst(&self, _stream: &TcpStream, local: SocketAddr, peer: SocketAddr) -> SocketAddr {
        self.0
            .lock()
            .unwrap()
            .get(&peer.ip())
            .copied()
            .unwrap_or(local)
    }
}

#[derive(Default)]
struct Records {
    requests: Mutex<Vec<RequestRecord>>,
    connections: Mutex<Vec<ConnectionRecord>>,
}

impl RequestObserver for Records {
    fn on_request(&self, record: &RequestRecord) {
        self.requests.lock().unwrap().push(record.clone());
    }
    fn on_connection(&self, record: &ConnectionRecord) {
        self.connections.lock().unwrap().push(record.clone());
    }
}

impl Records {
    async fn connection(&self, stat_prefix: &str) -> ConnectionRecord {
        // The record is written when the proxy has closed both sides, which
        // can be just after the client saw its end.
        for _ in 0..100 {
            if let Some(r) = self
                .connections
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find(|r| &*r.stat_prefix == stat_prefix)
            {
                return r.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no connection record for {stat_prefix}");
    }
}

async fn start(original_dst: Option<Arc<dyn OriginalDst>>, records: Arc<Records>) -> Proxy {
    let node = mizzen_xds::client::Node {
        id: "sidecar~10.0.0.5~app.default~default.svc.cluster.local".into(),
        ..Default::default()
    };
    Proxy::start(ProxyOptions {
        admin_address: "127.0.0.1:0".parse().unwrap(),
        drain_timeout: Duration::from_secs(1),
        observer: Some(records),
        original_dst,
        ..ProxyOptions::new("", node)
    })
    .await
    .unwrap()
}

async fn stats(proxy: &Proxy) -> String {
    proxy.stats().render_text()
}

/// Connects from a given source address (a "client pod").
async fn connect_from(src: IpAddr, dst: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(src, 0)).unwrap();
    socket.connect(dst).await.unwrap()
}

async fn roundtrip_from(src: IpAddr, dst: SocketAddr, msg: &str) -> String {
    let mut s = connect_from(src, dst).await;
    s.write_all(msg.as_bytes()).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("timed out")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Like `support::send_line`, from a given source address: the inbound
/// listener sniffs, so the client talks without half-closing.
async fn line_from(src: IpAddr, dst: SocketAddr, line: &str) -> String {
    let mut s = connect_from(src, dst).await;
    s.write_all(line.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !got.ends_with(line.as_bytes()) && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The real lookup: without a redirect the original destination is the
/// local address, which matches the `bind_to_port: false` listener on
/// `0.0.0.0:<port>`; without that listener, the `virtualOutbound` chains
/// serve the connection (here its own-port blackhole chain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hands_off_to_the_listener_of_the_original_destination() {
    let records = Arc::new(Records::default());
    let proxy = start(None, records.clone()).await;
    let echo = echo_server("127.0.0.1:0".parse().unwrap(), "echo").await;
    let ip = free_loopback_ip();
    let port = free_port_on(ip);
    let outbound: SocketAddr = (ip, port).into();
    let wildcard: SocketAddr = ([0, 0, 0, 0], port).into();
    let mut res = Resources {
        clusters: vec![
            passthrough_cluster(),
            blackhole_cluster(),
            static_cluster("outbound|9000||echo", &[echo.addr], None),
        ],
        listeners: vec![
            virtual_outbound(outbound, true),
            outbound_tcp_listener(wildcard, "outbound|9000||echo"),
        ],
        routes: vec![],
    };
    res.apply(&proxy).unwrap();
    assert_eq!(
        proxy.listener_addresses(),
        vec![("virtualOutbound".to_string(), outbound)],
        "bind_to_port: false listeners do not bind"
    );
    let got = tcp_roundtrip(outbound, "hello").await.unwrap();
    assert_eq!(got, "echo saw 127.0.0.1:hello");
    let s = stats(&proxy).await;
    assert_eq!(
        stat(&s, &format!("listener.0.0.0.0_{port}.downstream_cx_total")),
        1,
        "{s}"
    );
    assert_eq!(
        stat(&s, &format!("listener.{ip}_{port}.downstream_cx_total")),
        0,
        "{s}"
    );
    assert_eq!(stat(&s, "tcp.outbound|9000||echo.downstream_cx_total"), 1);
    assert_eq!(
        stat(&s, "tcp.outbound|9000||echo.downstream_cx_rx_bytes_total"),
        5
    );
    assert_eq!(
        stat(&s, "tcp.outbound|9000||echo.downstream_cx_tx_bytes_total"),
        "echo saw 127.0.0.1:hello".len() as u64
    );
    assert_eq!(stat(&s, "cluster.outbound|9000||echo.upstream_cx_total"), 1);
    assert_eq!(
        stat(&s, "cluster.outbound|9000||echo.upstream_cx_tx_bytes_total"),
        5
    );
    let r = records.connection("outbound|9000||echo").await;
    assert_eq!(&*r.listener, format!("0.0.0.0_{port}"));
    assert_eq!(r.downstream_local, outbound);
    assert_eq!(r.upstream_host, Some(echo.addr));
    assert_eq!((r.bytes_received, r.bytes_sent), (5, 24));
    assert!(r.flags.is_empty());

    // Without a listener for the destination, virtualOutbound's own chains
    // serve it: its own port goes to the blackhole (no loops).
    res.listeners.truncate(1);
    proxy
        .apply(type_url::LISTENER, "2", packed(&res.listeners))
        .unwrap();
    // Closed at once (reset, since the proxy never read the bytes).
    let got = tcp_roundtrip(outbound, "hello").await.unwrap_or_default();
    assert_eq!(got, "");
    let s = stats(&proxy).await;
    assert_eq!(
        stat(&s, &format!("listener.{ip}_{port}.downstream_cx_total")),
        1,
        "{s}"
    );
    assert_eq!(
        stat(&s, "cluster.BlackHoleCluster.upstream_cx_none_healthy"),
        1
    );
    let r = records.connection("BlackHoleCluster").await;
    assert_eq!(r.flags, ResponseFlags::NO_HEALTHY_UPSTREAM);
    proxy.shutdown().await;
}

/// Outbound capture end to end: TCP service, HTTP service with `allow_any`
/// and `block_all`, passthrough for unknown destinations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_capture_simulated() {
    let redirects = Arc::new(Redirects::default());
    let records = Arc::new(Records::default());
    let proxy = start(Some(redirects.clone()), records.clone()).await;
    let echo = echo_server((free_loopback_ip(), 0).into(), "echo").await;
    let svc_a = http_server((free_loopback_ip(), 0).into(), "svc-a").await;
    let external = http_server((free_loopback_ip(), 0).into(), "external").await;
    let vip = free_loopback_ip();
    let outbound: SocketAddr = (vip, free_port_on(vip)).into();
    let tcp_vip: SocketAddr = "10.96.0.10:9000".parse().unwrap();
    let http_port = external.addr.port();
    let blocked_port = free_port_on(vip);
    let res = Resources {
        clusters: vec![
            passthrough_cluster(),
            blackhole_cluster(),
            static_cluster(
                "outbound|9000||echo.default.svc.cluster.local",
                &[echo.addr],
                None,
            ),
            static_cluster(
                "outbound|80||svc-a.default.svc.cluster.local",
                &[svc_a.addr],
                None,
            ),
        ],
        listeners: vec![
            virtual_outbound(outbound, true),
            outbound_tcp_listener(tcp_vip, "outbound|9000||echo.default.svc.cluster.local"),
            outbound_http_listener(([0, 0, 0, 0], http_port).into(), "http-allow"),
            outbound_http_listener(([0, 0, 0, 0], blocked_port).into(), "http-block"),
        ],
        routes: vec![
            route_config(
                "http-allow",
                vec![
                    vhost(
                        "svc-a.default.svc.cluster.local:80",
                        &["svc-a", "svc-a.default.svc.cluster.local"],
                        vec![forward(
                            "default",
                            "outbound|80||svc-a.default.svc.cluster.local",
                        )],
                    ),
                    allow_any(),
                ],
            ),
            route_config("http-block", vec![block_all()]),
        ],
    };
    res.apply(&proxy).unwrap();
    assert_eq!(proxy.readiness(), mizzen_proxy::Readiness::Live);

    // A TCP service VIP: exact-address listener.
    let client = free_loopback_ip();
    redirects.set(IpAddr::V4(client), tcp_vip);
    let got = roundtrip_from(IpAddr::V4(client), outbound, "ping").await;
    assert_eq!(got, "echo saw 127.0.0.1:ping");

    // An HTTP port: known host routed, unknown host passed through to the
    // original destination (allow_any).
    let client = free_loopback_ip();
    redirects.set(IpAddr::V4(client), external.addr);
    let stream = connect_from(IpAddr::V4(client), outbound).await;
    let (status, body) = h1_on(stream, "svc-a", "/a").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "svc-a GET /a host=svc-a")
    );
    let stream = connect_from(IpAddr::V4(client), outbound).await;
    let (status, body) = h1_on(stream, "unknown.example.com", "/x").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "external GET /x host=unknown.example.com")
    );
    {
        let requests = records.requests.lock().unwrap();
        let r = requests.last().unwrap();
        assert_eq!(r.cluster.as_deref(), Some("PassthroughCluster"));
        assert_eq!(r.upstream_host, Some(external.addr));
        assert_eq!(r.downstream_local, external.addr);
        assert_eq!(r.route_name.as_deref(), Some("allow_any"));
    }

    // REGISTRY_ONLY-style port: block_all answers 502.
    let client = free_loopback_ip();
    redirects.set(IpAddr::V4(client), ([10, 96, 0, 20], blocked_port).into());
    let stream = connect_from(IpAddr::V4(client), outbound).await;
    let (status, _) = h1_on(stream, "anything.example.com", "/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);

    // No listener for the destination: virtualOutbound passes it through.
    let client = free_loopback_ip();
    redirects.set(IpAddr::V4(client), echo.addr);
    let got = roundtrip_from(IpAddr::V4(client), outbound, "direct").await;
    assert_eq!(got, format!("echo saw {}:direct", echo_peer_ip()));
    let s = stats(&proxy).await;
    assert_eq!(
        stat(&s, "cluster.PassthroughCluster.upstream_cx_total"),
        2,
        "{s}"
    );
    assert_eq!(stat(&s, "tcp.PassthroughCluster.downstream_cx_total"), 1);
    assert_eq!(
        stat(
            &s,
            &format!("listener.{vip}_{}.downstream_cx_total", outbound.port())
        ),
        1
    );
    proxy.shutdown().await;
}

/// The passthrough connects from the proxy's default source (127.0.0.1 on
/// loopback).
fn echo_peer_ip() -> &'static str {
    "127.0.0.1"
}

/// One HTTP/1.1 request on an established connection.
async fn h1_on(stream: TcpStream, host: &str, path: &str) -> (StatusCode, String) {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Inbound capture: chains by destination port, the app reached from
/// 127.0.0.6, and InboundPassthroughCluster for other ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_capture_simulated() {
    let redirects = Arc::new(Redirects::default());
    let records = Arc::new(Records::default());
    let proxy = start(Some(redirects.clone()), records.clone()).await;
    let pod = free_loopback_ip();
    let tcp_app = echo_server((pod, 0).into(), "tcp-app").await;
    let http_app = http_server((pod, 0).into(), "http-app").await;
    let other_app = echo_server((pod, 0).into(), "other-app").await;
    let inbound: SocketAddr = (pod, free_port_on(pod)).into();
    let res = Resources {
        clusters: vec![
            inbound_passthrough_cluster(),
            blackhole_cluster(),
            static_cluster(
                &format!("inbound|{}||", tcp_app.addr.port()),
                &[tcp_app.addr],
                Some("127.0.0.6"),
            ),
            static_cluster(
                &format!("inbound|{}||", http_app.addr.port()),
                &[http_app.addr],
                Some("127.0.0.6"),
            ),
        ],
        listeners: vec![virtual_inbound(
            inbound,
            vec![
                inbound_tcp_chain(tcp_app.addr.port()),
                inbound_http_chain(http_app.addr.port()),
            ],
        )],
        routes: vec![],
    };
    res.apply(&proxy).unwrap();

    let client = free_loopback_ip();
    redirects.set(IpAddr::V4(client), tcp_app.addr);
    let got = line_from(IpAddr::V4(client), inbound, "in\r\n").await;
    assert_eq!(got, "tcp-app saw 127.0.0.6:in\r\n");
    let r = records
        .connection(&format!("inbound|{}||", tcp_app.addr.port()))
        .await;
    assert_eq!(r.downstream_local, tcp_app.addr);
    assert_eq!(
        r.upstream_local.map(|a| a.ip()),
        Some("127.0.0.6".parse().unwrap())
    );

    let client = free_loopback_ip();
    redirects.set(IpAddr::V4(client), http_app.addr);
    let stream = connect_from(IpAddr::V4(client), inbound).await;
    let (status, body) = h1_on(stream, "app.default.svc.cluster.local", "/hi").await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::OK,
            "http-app GET /hi host=app.default.svc.cluster.local"
        )
    );

    // A port without a chain: InboundPassthroughCluster, still from 127.0.0.6.
    let client = free_loopback_ip();
    redirects.set(IpAddr::V4(client), other_app.addr);
    let got = line_from(IpAddr::V4(client), inbound, "other\r\n").await;
    assert_eq!(got, "other-app saw 127.0.0.6:other\r\n");
    let s = stats(&proxy).await;
    assert_eq!(
        stat(&s, "cluster.InboundPassthroughCluster.upstream_cx_total"),
        1,
        "{s}"
    );
    assert_eq!(
        stat(
            &s,
            &format!(
                "http.inbound_0.0.0.0_{}.downstream_rq_total",
                http_app.addr.port()
            )
        ),
        1
    );
    proxy.shutdown().await;
}

/// Replies to every connection with a banner before reading anything (like
/// SMTP or MySQL), then echoes.
async fn server_first(bind: SocketAddr) -> Server {
    echo_server(bind, "banner").await
}

/// One sniffed port: HTTP/1.1 and h2c to the HTTP chain, a client-first
/// non-HTTP protocol to the TCP chain at once, and a server-first protocol
/// to the TCP chain after `listener_filters_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sniffs_http_and_falls_back_to_tcp() {
    let records = Arc::new(Records::default());
    let proxy = start(None, records.clone()).await;
    let web = http_server("127.0.0.1:0".parse().unwrap(), "web").await;
    let banner = server_first("127.0.0.1:0".parse().unwrap()).await;
    let ip = free_loopback_ip();
    let addr: SocketAddr = (ip, free_port_on(ip)).into();
    let res = Resources {
        clusters: vec![
            static_cluster("outbound|3000||web", &[web.addr], None),
            static_cluster("outbound|3000||banner", &[banner.addr], None),
        ],
        listeners: vec![sniffed_listener(
            addr,
            true,
            "3000",
            "outbound|3000||banner",
            300,
        )],
        routes: vec![route_config(
            "3000",
            vec![vhost(
                "web",
                &["*"],
                vec![forward("web", "outbound|3000||web")],
            )],
        )],
    };
    res.apply(&proxy).unwrap();

    let (status, body) = h1_get(addr, "web", "/one").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "web GET /one host=web")
    );
    let (status, body) = h2c_get(addr, "web", "/two").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "web GET /two host=web")
    );

    // Client speaks first, not HTTP: TCP chain without waiting.
    let started = Instant::now();
    let got = tcp_roundtrip(addr, "EHLO x\r\n").await.unwrap();
    assert_eq!(got, "banner saw 127.0.0.1:EHLO x\r\n");
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );

    // Server speaks first: nothing to sniff until the timeout, then TCP.
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("no banner")
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(&buf[..n], b"banner saw 127.0.0.1:");
    assert!(
        waited >= Duration::from_millis(280),
        "fell back after {waited:?}"
    );
    s.write_all(b"QUIT\r\n").await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"QUIT\r\n");
    drop(s);

    let s = stats(&proxy).await;
    let prefix = format!("{ip}_{}", addr.port());
    assert_eq!(
        stat(&s, &format!("listener.{prefix}.downstream_pre_cx_timeout")),
        1,
        "{s}"
    );
    assert_eq!(
        stat(&s, &format!("http.outbound_{prefix}.downstream_rq_total")),
        2
    );
    assert_eq!(stat(&s, "tcp.outbound|3000||banner.downstream_cx_total"), 2);

    // Without continue_on_listener_filters_timeout, a silent client is closed.
    let mut strict = sniffed_listener(addr, true, "3000", "outbound|3000||banner", 100);
    strict.continue_on_listener_filters_timeout = false;
    proxy
        .apply(type_url::LISTENER, "2", packed(&[strict]))
        .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("not closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    proxy.shutdown().await;
}

fn tcp_filter_with(cluster: &str, f: impl FnOnce(&mut TcpProxy)) -> Filter {
    let mut t = TcpProxy {
        stat_prefix: cluster.into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    };
    f(&mut t);
    Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(&t))),
    }
}

/// TCP proxy behaviour: half-close, connect failure, idle timeout, weights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_semantics() {
    let records = Arc::new(Records::default());
    let proxy = start(None, records.clone()).await;
    let echo = echo_server("127.0.0.1:0".parse().unwrap(), "echo").await;
    let other = echo_server("127.0.0.1:0".parse().unwrap(), "other").await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let ip = free_loopback_ip();
    let a: SocketAddr = (ip, free_port_on(ip)).into();
    let b: SocketAddr = (ip, free_port_on(ip)).into();
    let c: SocketAddr = (ip, free_port_on(ip)).into();
    let d: SocketAddr = (ip, free_port_on(ip)).into();
    let listener = |addr: SocketAddr, filter: Filter| pb::envoy::config::listener::v3::Listener {
        name: format!("l_{}", addr.port()),
        address: Some(sock(addr)),
        filter_chains: vec![chain("", None, filter)],
        ..Default::default()
    };
    let res = Resources {
        clusters: vec![
            static_cluster("echo", &[echo.addr], None),
            static_cluster("other", &[other.addr], None),
            static_cluster("dead", &[closed], None),
        ],
        listeners: vec![
            listener(a, tcp_proxy_filter("echo")),
            listener(
                b,
                tcp_filter_with("dead", |t| {
                    t.max_connect_attempts = Some(pb::google::protobuf::UInt32Value { value: 2 })
                }),
            ),
            listener(
                c,
                tcp_filter_with("echo", |t| {
                    t.stat_prefix = "idle".into();
                    t.idle_timeout = millis(200);
                }),
            ),
            listener(
                d,
                weighted_tcp_proxy_filter("split", &[("echo", 1), ("other", 1)]),
            ),
        ],
        routes: vec![],
    };
    res.apply(&proxy).unwrap();

    // Half-close: the client's FIN reaches the server, whose answer still
    // comes back, then its FIN.
    let got = tcp_roundtrip(a, "half").await.unwrap();
    assert_eq!(got, "echo saw 127.0.0.1:half");

    // Connect failure: the downstream connection is closed.
    let got = tcp_roundtrip(b, "x").await.unwrap_or_default();
    assert_eq!(got, "");
    let r = records.connection("dead").await;
    let mut want = ResponseFlags::UPSTREAM_CONNECTION_FAILURE;
    want.insert(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
    assert_eq!(r.flags, want);
    let s = stats(&proxy).await;
    assert_eq!(stat(&s, "cluster.dead.upstream_cx_connect_fail"), 2, "{s}");
    assert_eq!(
        stat(&s, "cluster.dead.upstream_cx_connect_attempts_exceeded"),
        1
    );

    // Idle timeout: closed after 200 ms without bytes.
    let started = Instant::now();
    let mut s = TcpStream::connect(c).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("idle connection not closed")
        .unwrap();
    assert_eq!(out, b"echo saw 127.0.0.1:");
    assert!(started.elapsed() >= Duration::from_millis(190));
    let s = stats(&proxy).await;
    assert_eq!(stat(&s, "tcp.idle.idle_timeout"), 1, "{s}");

    // Weighted clusters: both get connections.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let got = tcp_roundtrip(d, "w").await.unwrap();
        seen.insert(got.split(' ').next().unwrap_or_default().to_string());
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    proxy.shutdown().await;
}

/// The new fields are NACKed when used beyond what is implemented, with the
/// resource and field named, and the last good config stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_config_nacks() {
    let proxy = start(None, Arc::new(Records::default())).await;
    let ip = free_loopback_ip();
    let addr: SocketAddr = (ip, free_port_on(ip)).into();
    let mut tls = virtual_inbound(addr, vec![]);
    tls.filter_chains[0]
        .filter_chain_match
        .as_mut()
        .unwrap()
        .transport_protocol = "quic".into();
    let err = proxy
        .apply(type_url::LISTENER, "1", packed(&[tls]))
        .unwrap_err();
    assert_eq!(
        err,
        "listener virtualInbound: filter_chains[0].filter_chain_match.transport_protocol \"quic\" (only \"raw_buffer\" and \"tls\") is not supported"
    );
    let mut sni = virtual_outbound(addr, true);
    sni.filter_chains[1].filter_chain_match =
        Some(pb::envoy::config::listener::v3::FilterChainMatch {
            server_names: vec!["a.*.example.com".into()],
            ..Default::default()
        });
    let err = proxy
        .apply(type_url::LISTENER, "1", packed(&[sni]))
        .unwrap_err();
    assert_eq!(
        err,
        "listener virtualOutbound: filter_chains[1].filter_chain_match.server_names[0]: only a leading \"*.\" wildcard is allowed"
    );
    let mut rr = passthrough_cluster();
    rr.lb_policy = 0;
    let err = proxy
        .apply(type_url::CLUSTER, "1", packed(&[rr]))
        .unwrap_err();
    assert_eq!(
        err,
        "cluster PassthroughCluster: lb_policy: only CLUSTER_PROVIDED is allowed with cluster type ORIGINAL_DST"
    );
    let mut two = outbound_tcp_listener("10.0.0.1:80".parse().unwrap(), "c");
    let mut same = two.clone();
    same.name = "again".into();
    two.name = "first".into();
    let err = proxy
        .apply(type_url::LISTENER, "1", packed(&[two, same]))
        .unwrap_err();
    assert_eq!(
        err,
        "listener again: address 10.0.0.1:80 is already used by listener first"
    );
    proxy.shutdown().await;
}
