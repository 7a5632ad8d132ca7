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
    // The gateway's HTTPS certificate, as `mizzen demo` writes it.
    mizzen_cli::edge_certs::write(
        &dir.join(".edge-ca"),
        dir,
        "istio-system",
        mizzen_cli::demo::EDGE_SECRET,
        &[mizzen_cli::demo::EDGE_HOST],
    )
    .unwrap();
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
        ..LocalOptions::new(dir.path())
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

/// A workload certificate for `namespace/account` from the pilot's CA,
/// served to an Envoy over SDS on a socket in `dir` (pilot-agent's role).
async fn sds_agent(
    mesh: &LocalMesh,
    dir: &Path,
    namespace: &str,
    account: &str,
) -> (std::path::PathBuf, tokio::task::JoinHandle<()>) {
    use mizzen_identity::workload::{LocalCa, RotationPolicy};
    let ca = mesh.pilot.ca().expect("the pilot runs a CA").clone();
    let identity = mizzen_identity::Identity::in_default_domain(namespace, account).unwrap();
    let manager = mizzen_identity::CertificateManager::start(
        LocalCa::new(ca, identity, Duration::from_secs(3600)),
        RotationPolicy::default(),
    )
    .await
    .unwrap();
    let socket = dir.join(format!("sds-{account}.sock"));
    let path = socket.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = mizzen_identity::sds::run_agent(std::sync::Arc::new(manager), path).await {
            panic!("SDS agent: {e}");
        }
    });
    (socket, task)
}

/// Issue: Envoy and mizzen-proxy sidecars talk mutual TLS both ways under a
/// mesh-wide STRICT policy, Envoy getting its certificate through SDS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_and_mizzen_proxy_sidecars_talk_mutual_tls() {
    let Some(binary) = envoy::skip_without_envoy() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    write_config(&config);
    std::fs::write(
        config.join("strict.yaml"),
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec:\n  mtls: {mode: STRICT}\n",
    )
    .unwrap();
    let mesh = LocalMesh::start(LocalOptions {
        apps: mizzen_cli::demo::apps().unwrap(),
        ca_dir: Some(dir.path().join("ca")),
        ..LocalOptions::new(&config)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let xds = mesh.pilot.xds_address();
    let workloads = mizzen_cli::local::workloads(&config).unwrap();
    let service_a = workloads.iter().find(|w| w.name == "service-a").unwrap();

    // An Envoy server sidecar in front of an echoing app, registered as a
    // workload with a sidecar: mizzen-proxy clients send it mTLS.
    let echo_ip = free_loopback_ip();
    let app_ip = free_loopback_ip();
    std::fs::write(
        config.join("envoy-echo.yaml"),
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: envoy-echo, namespace: istioinaction}}\nspec:\n  selector: {{app: envoy-echo}}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n---\napiVersion: mizzen.io/v1alpha1\nkind: Workload\nmetadata: {{name: envoy-echo, namespace: istioinaction, labels: {{app: envoy-echo}}}}\nspec: {{address: {echo_ip}, serviceAccount: envoy-echo}}\n"
        ),
    )
    .unwrap();
    let mut app_config = mizzen_testkit::demo_app::AppConfig {
        name: "envoy-echo".into(),
        echo_request: true,
        ..Default::default()
    };
    app_config.listen_addr = SocketAddr::from((app_ip, 8080));
    let app = mizzen_testkit::demo_app::spawn(
        app_config,
        tokio::net::TcpListener::bind((app_ip, 8080)).await.unwrap(),
    );
    let (echo_socket, echo_agent) =
        sds_agent(&mesh, dir.path(), "istioinaction", "envoy-echo").await;
    let mut echo_metadata = metadata("istioinaction", serde_json::json!({"app": "envoy-echo"}));
    echo_metadata.insert("SERVICE_ACCOUNT".into(), "envoy-echo".into());
    echo_metadata.insert(
        mizzen_pilot::node::APP_HOST_METADATA.into(),
        app_ip.to_string().into(),
    );
    let mut echo = envoy::start(EnvoyOptions {
        binary: Some(binary.clone()),
        node_id: node_id("sidecar", echo_ip, "envoy-echo", "istioinaction"),
        node_cluster: "envoy-echo.istioinaction".into(),
        metadata: echo_metadata,
        xds_address: xds,
        admin_address: SocketAddr::from((echo_ip, 0)),
        sds_socket: Some(echo_socket),
        ..Default::default()
    })
    .await
    .unwrap();

    // An Envoy client sidecar.
    let client_ip = free_loopback_ip();
    let (client_socket, client_agent) =
        sds_agent(&mesh, dir.path(), "istioinaction", "envoy-client").await;
    let mut client_metadata = metadata("istioinaction", serde_json::json!({"app": "envoy-client"}));
    client_metadata.insert("SERVICE_ACCOUNT".into(), "envoy-client".into());
    let mut client = envoy::start(EnvoyOptions {
        binary: Some(binary),
        node_id: node_id("sidecar", client_ip, "envoy-client", "istioinaction"),
        node_cluster: "envoy-client.istioinaction".into(),
        metadata: client_metadata,
        xds_address: xds,
        admin_address: SocketAddr::from((client_ip, 0)),
        sds_socket: Some(client_socket),
        ..Default::default()
    })
    .await
    .unwrap();
    echo.wait_ready(Duration::from_secs(30)).await.unwrap();
    client.wait_ready(Duration::from_secs(30)).await.unwrap();

    // Envoy → mizzen-proxy: service-b's sidecar only takes mTLS.
    let mut answer = (0, serde_json::Value::Null, String::new());
    for _ in 0..50 {
        answer = get(
            SocketAddr::from((client_ip, 15001)),
            "http://service-b/",
            "service-b",
        )
        .await;
        if answer.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        answer.0, 200,
        "Envoy client → mizzen-proxy server: {}",
        answer.2
    );
    assert_eq!(answer.1["name"], "service-b", "{}", answer.2);

    // mizzen-proxy → Envoy: service-a's sidecar calls the Envoy-fronted app,
    // which sees service-a's identity, attested by Envoy.
    for _ in 0..50 {
        answer = get(
            SocketAddr::new(service_a.address, 15001),
            "http://envoy-echo/",
            "envoy-echo",
        )
        .await;
        if answer.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        answer.0, 200,
        "mizzen-proxy client → Envoy server: {}",
        answer.2
    );
    assert!(
        answer
            .2
            .contains("By=spiffe://cluster.local/ns/istioinaction/sa/envoy-echo")
            && answer
                .2
                .contains("URI=spiffe://cluster.local/ns/istioinaction/sa/service-a"),
        "x-forwarded-client-cert from Envoy: {}",
        answer.2
    );
    // Envoy → Envoy through the mesh as well.
    let via_envoy = get(
        SocketAddr::from((client_ip, 15001)),
        "http://envoy-echo/",
        "envoy-echo",
    )
    .await;
    assert!(
        via_envoy
            .2
            .contains("URI=spiffe://cluster.local/ns/istioinaction/sa/envoy-client"),
        "{}",
        via_envoy.2
    );

    // Every proxy, Envoy included, ACKed everything.
    let syncz = mesh.pilot.state().sync.to_json();
    for proxy in syncz.as_array().unwrap() {
        for (short, state) in proxy["types"].as_object().unwrap() {
            assert_eq!(
                state["state"], "SYNCED",
                "{} {short}: {state}",
                proxy["proxy"]
            );
        }
    }
    echo.stop().await.unwrap();
    client.stop().await.unwrap();
    echo_agent.abort();
    client_agent.abort();
    drop(app);
    mesh.stop().await;
}
