//! A real Envoy connected to mizzen-pilot: it must ACK every resource type,
//! and a request routed through it must get the same answer as through
//! mizzen-proxy with the same config — as a gateway and as a sidecar.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use mizzen_cli::local::{LocalMesh, LocalOptions};
use mizzen_proxy::{Proxy, ProxyOptions};
use mizzen_testkit::client::{Protocol, send};
use mizzen_testkit::envoy::{self, EnvoyOptions};
use mizzen_testkit::free_loopback_ip;
use mizzen_xds::client::Node;

/// The demo config on fresh loopback addresses, with service-c pinned to v1
/// so that answers are deterministic. Returns the gateway's address.
fn write_config(dir: &Path) -> Ipv4Addr {
    let gateway = free_loopback_ip();
    for (name, text) in mizzen_cli::demo::CONFIG_FILES
        .iter()
        .chain(mizzen_cli::demo::EXAMPLE_FILES.iter())
    {
        let mut text = text.to_string();
        if *name == "workloads.yaml" {
            for original in ["127.10.0.1", "127.10.0.2", "127.10.0.3", "127.10.0.4"] {
                text = text.replace(original, &free_loopback_ip().to_string());
            }
            text = text.replace("127.0.0.1", &gateway.to_string());
        }
        std::fs::write(dir.join(name), text).unwrap();
    }
    gateway
}

fn metadata(
    namespace: &str,
    labels: serde_json::Value,
) -> serde_json::Map<String, serde_json::Value> {
    serde_json::json!({
        "NAMESPACE": namespace,
        "LABELS": labels,
        "INTERCEPTION_MODE": "NONE",
    })
    .as_object()
    .unwrap()
    .clone()
}

fn node_id(kind: &str, ip: Ipv4Addr, name: &str, namespace: &str) -> String {
    format!("{kind}~{ip}~{name}.{namespace}~{namespace}.svc.cluster.local")
}

/// Drops what differs between two answers of the same app: timings and
/// the address the request arrived on.
fn normalize(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for key in ["start_time", "end_time", "duration", "ip_addresses"] {
                map.remove(key);
            }
            map.values_mut().for_each(normalize);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

async fn get(target: SocketAddr, uri: &str, host: &str) -> (u16, serde_json::Value, String) {
    let request = http::Request::builder()
        .uri(uri)
        .header("host", host)
        .body(Bytes::new())
        .unwrap();
    let response = send(&target.to_string(), Protocol::Http1, request)
        .await
        .unwrap_or_else(|e| panic!("GET {uri} via {target}: {e}"));
    let status = response.status().as_u16();
    let text = String::from_utf8_lossy(response.body()).to_string();
    let mut json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    normalize(&mut json);
    (status, json, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_acks_our_config_and_answers_like_mizzen_proxy() {
    let Some(binary) = envoy::skip_without_envoy() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mizzen_gateway = write_config(dir.path());
    let mesh = LocalMesh::start(LocalOptions {
        config_dir: dir.path().to_path_buf(),
        xds_address: "127.0.0.1:0".parse().unwrap(),
        debug_address: "127.0.0.1:0".parse().unwrap(),
        apps: mizzen_cli::demo::apps().unwrap(),
    })
    .await
    .unwrap();
    let xds = mesh.pilot.xds_address();

    // Envoy as a second ingress gateway and as a client's sidecar.
    let envoy_gateway = free_loopback_ip();
    let mut gateway = envoy::start(EnvoyOptions {
        binary: Some(binary.clone()),
        node_id: node_id("router", envoy_gateway, "envoy-gateway", "istio-system"),
        node_cluster: "istio-ingressgateway.istio-system".into(),
        metadata: metadata(
            "istio-system",
            serde_json::json!({"istio": "ingressgateway"}),
        ),
        xds_address: xds,
        admin_address: SocketAddr::from((envoy_gateway, 0)),
        ..Default::default()
    })
    .await
    .unwrap();
    let envoy_client = free_loopback_ip();
    let mut sidecar = envoy::start(EnvoyOptions {
        binary: Some(binary),
        node_id: node_id("sidecar", envoy_client, "client-envoy", "istioinaction"),
        node_cluster: "client.istioinaction".into(),
        metadata: metadata("istioinaction", serde_json::json!({"app": "client"})),
        xds_address: xds,
        admin_address: SocketAddr::from((envoy_client, 0)),
        ..Default::default()
    })
    .await
    .unwrap();
    gateway.wait_ready(Duration::from_secs(30)).await.unwrap();
    sidecar.wait_ready(Duration::from_secs(30)).await.unwrap();

    // The same client as a mizzen-proxy sidecar.
    let mizzen_client = free_loopback_ip();
    let node = Node {
        id: node_id("sidecar", mizzen_client, "client-mizzen", "istioinaction"),
        cluster: "client.istioinaction".into(),
        metadata: metadata("istioinaction", serde_json::json!({"app": "client"})),
    };
    let client_proxy = Proxy::start(ProxyOptions {
        admin_address: SocketAddr::from((mizzen_client, 0)),
        concurrency: 1,
        drain_timeout: Duration::from_secs(1),
        ..ProxyOptions::new(format!("http://{xds}"), node)
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(20), client_proxy.ready())
        .await
        .unwrap();

    // Envoy ACKed every type it was sent.
    let syncz = mesh.pilot.state().sync.to_json();
    for id in [
        node_id("router", envoy_gateway, "envoy-gateway", "istio-system"),
        node_id("sidecar", envoy_client, "client-envoy", "istioinaction"),
    ] {
        let proxy = syncz
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["proxy"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} not in syncz: {syncz}"));
        for short in ["CDS", "EDS", "LDS", "RDS"] {
            assert_eq!(
                proxy["types"][short]["state"], "SYNCED",
                "{id} {short}: {proxy}"
            );
        }
        println!("Envoy {id}: {}", proxy["types"]);
    }

    // Through the gateways: the whole call chain, identical answers.
    let via_mizzen = get(SocketAddr::from((mizzen_gateway, 8080)), "/", "example.com").await;
    let via_envoy = get(SocketAddr::from((envoy_gateway, 8080)), "/", "example.com").await;
    assert_eq!(via_mizzen.0, 200, "{}", via_mizzen.2);
    assert_eq!(via_mizzen.0, via_envoy.0);
    assert_eq!(
        via_mizzen.1, via_envoy.1,
        "gateway answers differ:\n{}\n{}",
        via_mizzen.2, via_envoy.2
    );
    assert_eq!(
        via_mizzen.1["upstream_calls"]["http://service-c:80"]["version"],
        "v1"
    );

    // Through the sidecars as explicit proxies.
    for (uri, host) in [
        ("http://service-b:80/", "service-b:80"),
        (
            "http://service-c.istioinaction.svc.cluster.local/x",
            "service-c.istioinaction.svc.cluster.local",
        ),
        ("http://nowhere.example/", "nowhere.example"),
    ] {
        let via_mizzen = get(SocketAddr::from((mizzen_client, 15001)), uri, host).await;
        let via_envoy = get(SocketAddr::from((envoy_client, 15001)), uri, host).await;
        assert_eq!(
            via_mizzen.0, via_envoy.0,
            "{uri}: {} vs {}",
            via_mizzen.2, via_envoy.2
        );
        assert_eq!(
            via_mizzen.1, via_envoy.1,
            "{uri}:\n{}\n{}",
            via_mizzen.2, via_envoy.2
        );
    }

    gateway.stop().await.unwrap();
    sidecar.stop().await.unwrap();
    client_proxy.shutdown().await;
    mesh.stop().await;
}
