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
    if netns::is_root() {
        return true;
    }
    println!("SKIP: needs root (network namespaces, veth, iptables)");
    false
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
