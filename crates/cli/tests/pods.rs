//! Pods in network namespaces (needs root; skips otherwise). Each test
//! builds its own bridge and address range, and everything it creates is
//! removed when it ends, also when it fails.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use common::*;
use mizzen_cli::netns;
use mizzen_cli::pods::{PodMesh, PodOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_pods_reach_services_by_name_and_clean_up() {
    if !root_or_skip() {
        return;
    }
    let network = network();
    let ip = |last: u8| {
        let o = network.cidr.0.octets();
        Ipv4Addr::new(o[0], o[1], o[2], last)
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    write(
        &config,
        "svc.yaml",
        &service("service-b", "demo", "http", 80, 8080),
    );
    write(
        &config,
        "b.yaml",
        &workload("service-b", "demo", "service-b", ip(10), false),
    );
    write(
        &config,
        "client.yaml",
        &workload("client", "demo", "client", ip(11), false),
    );
    let prefix = network.netns_prefix.clone();
    let mesh = PodMesh::start(PodOptions {
        config_dir: config,
        binary: env!("CARGO_BIN_EXE_mizzen").into(),
        log_dir: dir.path().join("logs"),
        debug_address: "127.0.0.1:0".parse().unwrap(),
        apps: BTreeMap::from([("demo/service-b".to_string(), app("service-b", "v1", ""))]),
        forwards: Vec::new(),
        network,
        ca_dir: None,
    })
    .await
    .unwrap();
    assert!(netns_names().contains(&format!("{prefix}demo-client")));
    let client = mesh.pods["demo/client"].clone();
    // The app needs a moment to listen.
    let mut answer = String::new();
    for _ in 0..50 {
        answer = netns::run(
            "ip",
            &[
                "netns",
                "exec",
                &client,
                "curl",
                "-s",
                "-m",
                "2",
                "http://service-b/",
            ],
        )
        .unwrap_or_default();
        if answer.contains("service-b") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let json: serde_json::Value =
        serde_json::from_str(&answer).unwrap_or_else(|_| panic!("answer: {answer:?}"));
    assert_eq!(json["name"], "service-b");
    // The full name resolves too, through the pod's hosts file.
    let full = netns::run(
        "ip",
        &[
            "netns",
            "exec",
            &client,
            "curl",
            "-s",
            "-m",
            "2",
            "http://service-b.demo.svc.cluster.local/",
        ],
    )
    .unwrap();
    assert!(full.contains("service-b"), "{full}");
    mesh.stop().await;
    assert!(
        !netns_names().contains(&prefix),
        "namespaces left: {}",
        netns_names()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_capture_inbound_and_outbound_traffic() {
    if !root_or_skip() {
        return;
    }
    let network = network();
    let base = network.cidr.0.octets();
    let ip = move |last: u8| Ipv4Addr::new(base[0], base[1], base[2], last);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    write(
        &config,
        "a.yaml",
        &service("service-a", "demo", "http", 80, 8080),
    );
    write(
        &config,
        "b.yaml",
        &service("service-b", "demo", "http", 80, 8080),
    );
    write(
        &config,
        "echo.yaml",
        &service("echo", "demo", "tcp", 9000, 8080),
    );
    write(
        &config,
        "wa.yaml",
        &workload("service-a", "demo", "service-a", ip(10), true),
    );
    write(
        &config,
        "wb.yaml",
        &workload("service-b", "demo", "service-b", ip(11), true),
    );
    write(
        &config,
        "we.yaml",
        &workload("echo", "demo", "echo", ip(12), true),
    );
    write(
        &config,
        "wl.yaml",
        &workload("legacy", "demo", "legacy", ip(13), false),
    );
    write(
        &config,
        "wr.yaml",
        &workload("restricted", "demo", "restricted", ip(14), true),
    );
    write(
        &config,
        "sidecar.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: restricted\n  namespace: demo\nspec:\n  workloadSelector:\n    labels:\n      app: restricted\n  outboundTrafficPolicy:\n    mode: REGISTRY_ONLY\n",
    );
    let prefix = network.netns_prefix.clone();
    let mesh = PodMesh::start(PodOptions {
        config_dir: config,
        binary: env!("CARGO_BIN_EXE_mizzen").into(),
        log_dir: dir.path().join("logs"),
        debug_address: "127.0.0.1:0".parse().unwrap(),
        apps: BTreeMap::from([
            (
                "demo/service-a".to_string(),
                app("service-a", "v1", "http://service-b"),
            ),
            ("demo/service-b".to_string(), app("service-b", "v1", "")),
            ("demo/echo".to_string(), app("echo", "v1", "")),
            ("demo/legacy".to_string(), app("legacy", "v1", "")),
        ]),
        forwards: Vec::new(),
        network,
        ca_dir: None,
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let pod = |name: &str| mesh.pods[&format!("demo/{name}")].clone();

    // A legacy pod (no sidecar) calls a meshed one in plain text; service-a's
    // app calls service-b through both sidecars.
    let answer = eventually_contains(&pod("legacy"), "http://service-a/", "service-b").await;
    let json: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(json["name"], "service-a");
    assert_eq!(
        json["upstream_calls"]["http://service-b"]["code"], 200,
        "{answer}"
    );
    // The proxies' own counters prove the capture: inbound at both, outbound at a.
    assert!(stat(&pod("service-a"), "cluster.inbound|8080||.upstream_rq_200") >= 1);
    assert!(stat(&pod("service-b"), "cluster.inbound|8080||.upstream_rq_200") >= 1);
    assert!(
        stat(
            &pod("service-a"),
            "cluster.outbound|80||service-b.demo.svc.cluster.local.upstream_rq_200"
        ) >= 1
    );

    // A TCP service through both sidecars' TCP proxies.
    let answer = eventually_contains(&pod("service-a"), "http://echo:9000/", "\"echo\"").await;
    assert!(answer.contains("\"name\": \"echo\""), "{answer}");
    assert!(
        stat(
            &pod("service-a"),
            "cluster.outbound|9000||echo.demo.svc.cluster.local.upstream_cx_total"
        ) >= 1
    );

    // REGISTRY_ONLY: an HTTP request to a destination the mesh does not
    // know gets 502 (the `block_all` route of port 80); a connection on a
    // port no service uses is closed (BlackHoleCluster); a known service works.
    let unknown_http = format!("http://{}:80/", ip(13));
    let code = curl(
        &pod("restricted"),
        &["-o", "/dev/null", "-w", "%{http_code}", &unknown_http],
    );
    assert_eq!(
        code, "502",
        "REGISTRY_ONLY must answer 502 for {unknown_http}"
    );
    let unknown = format!("http://{}:8080/", ip(13));
    let blocked = curl(&pod("restricted"), &[&unknown]);
    assert!(
        blocked.starts_with("curl failed"),
        "REGISTRY_ONLY must close {unknown}: {blocked}"
    );
    eventually_contains(&pod("restricted"), "http://service-b/", "service-b").await;
    // The same unknown destination is passed through under ALLOW_ANY.
    let through = curl(&pod("service-b"), &[&unknown]);
    assert!(
        through.contains("\"legacy\""),
        "ALLOW_ANY passthrough: {through}"
    );

    mesh.stop().await;
    assert!(
        !netns_names().contains(&prefix),
        "namespaces left: {}",
        netns_names()
    );
}

/// Issue: mutual TLS between sidecars, PeerAuthentication STRICT /
/// PERMISSIVE / port-level DISABLE, and proof on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_between_sidecars_and_peer_authentication() {
    if !root_or_skip() {
        return;
    }
    let has_tshark = netns::run("sh", &["-c", "command -v tshark"]).is_ok();
    let network = network();
    let base = network.cidr.0.octets();
    let ip = move |last: u8| Ipv4Addr::new(base[0], base[1], base[2], last);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    write(
        &config,
        "web.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo}\nspec:\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: 8080}\n  - {name: http-open, port: 81, targetPort: 8081}\n",
    );
    write(
        &config,
        "workloads.yaml",
        &format!(
            "{}---\n{}---\n{}",
            workload("web", "demo", "web", ip(10), true).replace(
                "  sidecar: true\n",
                "  sidecar: true\n  serviceAccount: web\n"
            ),
            workload("client", "demo", "client", ip(11), true).replace(
                "  sidecar: true\n",
                "  sidecar: true\n  serviceAccount: client\n"
            ),
            workload("legacy", "default", "legacy", ip(12), false),
        ),
    );
    let mut web = app("web", "v1", "");
    web.config.echo_request = true;
    web.config.extra_ports = vec![8081];
    let prefix = network.netns_prefix.clone();
    let mesh = PodMesh::start(PodOptions {
        config_dir: config.clone(),
        binary: env!("CARGO_BIN_EXE_mizzen").into(),
        log_dir: dir.path().join("logs"),
        debug_address: "127.0.0.1:0".parse().unwrap(),
        apps: BTreeMap::from([("demo/web".to_string(), web)]),
        forwards: Vec::new(),
        network,
        ca_dir: Some(dir.path().join("ca")),
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let client = mesh.pods["demo/client"].clone();
    let legacy = mesh.pods["default/legacy"].clone();
    let web_pod = mesh.pods["demo/web"].clone();
    let web_url = "http://web.demo.svc.cluster.local/";
    let open_url = "http://web.demo.svc.cluster.local:81/";

    // PERMISSIVE (no policy): the meshed client's call arrives over mTLS
    // with its identity; the legacy pod's plaintext is accepted too.
    let answer = eventually_contains(&client, web_url, "\"web\"").await;
    assert!(
        answer.contains("By=spiffe://cluster.local/ns/demo/sa/web")
            && answer.contains("URI=spiffe://cluster.local/ns/demo/sa/client"),
        "the app sees the caller's SPIFFE identity in x-forwarded-client-cert: {answer}"
    );
    let plain = eventually_contains(&legacy, web_url, "\"web\"").await;
    assert!(
        !plain.contains("URI=spiffe://"),
        "plaintext carries no client identity: {plain}"
    );

    // On the wire: ciphertext between sidecars, clear HTTP from the legacy pod.
    if has_tshark {
        let legacy_ip = ip(12).to_string();
        let client_ip = ip(11).to_string();
        let (http, tls) = capture_http(&web_pod, "8080", async || {
            for _ in 0..3 {
                curl_status(&client, web_url);
                curl_status(&legacy, web_url);
            }
        })
        .await;
        assert!(
            http.lines().all(|l| !l.starts_with(&client_ip)),
            "cleartext HTTP from the meshed client on the wire:\n{http}"
        );
        assert!(
            http.lines().any(|l| l.starts_with(&legacy_ip)),
            "the legacy pod's HTTP should be visible in clear:\n{http}"
        );
        assert!(tls > 0, "no TLS records seen between sidecars");
    } else {
        println!("SKIP (capture part): tshark is not installed");
    }

    // STRICT mesh-wide: plaintext from the legacy pod is refused (the
    // connection is reset: curl exit 56, or 52 for an empty reply), meshed
    // pods still succeed.
    write(
        &config,
        "strict.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec:\n  mtls: {mode: STRICT}\n",
    );
    let mut refused = (0, String::new());
    for _ in 0..60 {
        refused = curl_status(&legacy, web_url);
        if refused.0 == 56 || refused.0 == 52 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        refused.0 == 56 || refused.0 == 52,
        "STRICT must refuse plaintext: curl exit {} {}",
        refused.0,
        refused.1
    );
    let answer = eventually_contains(&client, web_url, "\"web\"").await;
    assert!(
        answer.contains("URI=spiffe://cluster.local/ns/demo/sa/client"),
        "{answer}"
    );
    // The health port of the sidecar stays plaintext under STRICT.
    let health = curl(
        &legacy,
        &[&format!("http://{}:15021/healthz/ready", ip(10))],
    );
    assert!(!health.starts_with("curl failed"), "health port: {health}");

    // A port-level DISABLE opens only that port.
    write(
        &config,
        "web-open.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: web, namespace: demo}\nspec:\n  selector:\n    matchLabels: {app: web}\n  portLevelMtls:\n    8081: {mode: DISABLE}\n",
    );
    eventually_exit(&legacy, open_url, 0).await;
    let (code, text) = curl_status(&legacy, web_url);
    assert!(
        code == 56 || code == 52,
        "port 8080 stays STRICT: {code} {text}"
    );
    // Meshed clients send plaintext to the DISABLE port (auto mTLS follows
    // the server's policy) and mTLS to the other.
    let open = eventually_contains(&client, open_url, "\"web\"").await;
    assert!(!open.contains("URI=spiffe://"), "{open}");

    // PERMISSIVE again: plaintext accepted on both ports.
    write(
        &config,
        "strict.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec:\n  mtls: {mode: PERMISSIVE}\n",
    );
    eventually_exit(&legacy, web_url, 0).await;

    mesh.stop().await;
    assert!(
        !netns_names().contains(&prefix),
        "namespaces left: {}",
        netns_names()
    );
}
