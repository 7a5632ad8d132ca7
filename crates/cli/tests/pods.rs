//! Pods in network namespaces (needs root; skips otherwise). Each test
//! builds its own bridge and address range, and everything it creates is
//! removed when it ends, also when it fails.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use mizzen_cli::local::AppSpec;
use mizzen_cli::netns::{self, NetworkConfig};
use mizzen_cli::pods::{PodMesh, PodOptions};
use mizzen_testkit::demo_app::AppConfig;

/// A network of its own for one test: 10.214.N.0/24.
fn network() -> NetworkConfig {
    let n = (std::process::id() % 200) as u8 + rand_octet();
    NetworkConfig {
        bridge: format!("mzt{n}"),
        cidr: (Ipv4Addr::new(10, 214, n, 0), 24),
        host_address: Ipv4Addr::new(10, 214, n, 1),
        netns_prefix: format!("mzt{n}-"),
    }
}

fn rand_octet() -> u8 {
    use std::sync::atomic::{AtomicU8, Ordering};
    static NEXT: AtomicU8 = AtomicU8::new(1);
    NEXT.fetch_add(13, Ordering::Relaxed) % 50
}

fn root_or_skip() -> bool {
    if !netns::is_root() {
        println!("SKIP: needs root (network namespaces, veth, iptables)");
        return false;
    }
    for tool in ["iptables-restore", "curl", "setpriv"] {
        if netns::run("sh", &["-c", &format!("command -v {tool}")]).is_err() {
            println!("SKIP: {tool} is not installed (scripts/install-test-deps installs it)");
            return false;
        }
    }
    true
}

fn app(name: &str, version: &str, upstreams: &str) -> AppSpec {
    let config = AppConfig::from_lookup(|key| match key {
        "NAME" => Some(name.to_string()),
        "VERSION" => Some(version.to_string()),
        "UPSTREAM_URIS" if !upstreams.is_empty() => Some(upstreams.to_string()),
        _ => None,
    })
    .unwrap();
    AppSpec { config, port: 8080 }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn service(name: &str, namespace: &str, port_name: &str, port: u16, target: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  selector:\n    app: {name}\n  ports:\n  - name: {port_name}\n    port: {port}\n    targetPort: {target}\n"
    )
}

fn workload(name: &str, namespace: &str, app: &str, address: Ipv4Addr, sidecar: bool) -> String {
    format!(
        "apiVersion: mizzen.io/v1alpha1\nkind: Workload\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    app: {app}\nspec:\n  address: {address}\n  sidecar: {sidecar}\n"
    )
}

fn netns_names() -> String {
    netns::run("ip", &["netns", "list"]).unwrap_or_default()
}

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

/// Runs curl inside a pod (as root, so its traffic is captured like an app's).
fn curl(netns: &str, args: &[&str]) -> String {
    let mut all = vec!["netns", "exec", netns, "curl", "-s", "-m", "5"];
    all.extend_from_slice(args);
    netns::run("ip", &all).unwrap_or_else(|e| format!("curl failed: {e}"))
}

/// A counter from a pod's sidecar admin `/stats`, 0 when absent.
fn stat(netns: &str, name: &str) -> u64 {
    curl(netns, &["http://127.0.0.1:15000/stats"])
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}: ")).map(str::to_string))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn eventually_contains(netns: &str, url: &str, needle: &str) -> String {
    let mut answer = String::new();
    for _ in 0..60 {
        answer = curl(netns, &[url]);
        if answer.contains(needle) {
            return answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{url} from {netns}: never got {needle:?}; last answer: {answer}");
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
