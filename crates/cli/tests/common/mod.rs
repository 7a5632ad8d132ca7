//! Helpers shared by the pod tests: a network of the test's own, config
//! snippets, and commands run inside pods.

// Each test binary uses a different subset of these.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::Path;

use mizzen_cli::local::AppSpec;
use mizzen_cli::netns::{self, NetworkConfig};
use mizzen_testkit::demo_app::AppConfig;

/// A network of its own for one test: 10.214.N.0/24.
pub fn network() -> NetworkConfig {
    let n = (std::process::id() % 200) as u8 + rand_octet();
    NetworkConfig {
        bridge: format!("mzt{n}"),
        cidr: (Ipv4Addr::new(10, 214, n, 0), 24),
        host_address: Ipv4Addr::new(10, 214, n, 1),
        netns_prefix: format!("mzt{n}-"),
    }
}

pub fn rand_octet() -> u8 {
    use std::sync::atomic::{AtomicU8, Ordering};
    static NEXT: AtomicU8 = AtomicU8::new(1);
    NEXT.fetch_add(13, Ordering::Relaxed) % 50
}

pub fn root_or_skip() -> bool {
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

pub fn app(name: &str, version: &str, upstreams: &str) -> AppSpec {
    let config = AppConfig::from_lookup(|key| match key {
        "NAME" => Some(name.to_string()),
        "VERSION" => Some(version.to_string()),
        "UPSTREAM_URIS" if !upstreams.is_empty() => Some(upstreams.to_string()),
        _ => None,
    })
    .unwrap();
    AppSpec { config, port: 8080 }
}

pub fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

pub fn service(name: &str, namespace: &str, port_name: &str, port: u16, target: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  selector:\n    app: {name}\n  ports:\n  - name: {port_name}\n    port: {port}\n    targetPort: {target}\n"
    )
}

pub fn workload(
    name: &str,
    namespace: &str,
    app: &str,
    address: Ipv4Addr,
    sidecar: bool,
) -> String {
    format!(
        "apiVersion: mizzen.io/v1alpha1\nkind: Workload\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    app: {app}\nspec:\n  address: {address}\n  sidecar: {sidecar}\n"
    )
}

pub fn netns_names() -> String {
    netns::run("ip", &["netns", "list"]).unwrap_or_default()
}

/// Runs curl inside a pod (as root, so its traffic is captured like an app's).
pub fn curl(netns: &str, args: &[&str]) -> String {
    let mut all = vec!["netns", "exec", netns, "curl", "-s", "-m", "5"];
    all.extend_from_slice(args);
    netns::run("ip", &all).unwrap_or_else(|e| format!("curl failed: {e}"))
}

/// A counter from a pod's sidecar admin `/stats`, 0 when absent.
pub fn stat(netns: &str, name: &str) -> u64 {
    curl(netns, &["http://127.0.0.1:15000/stats"])
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}: ")).map(str::to_string))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

pub async fn eventually_contains(netns: &str, url: &str, needle: &str) -> String {
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

/// Runs curl in a pod and returns its exit code and output.
pub fn curl_status(netns: &str, url: &str) -> (i32, String) {
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", netns, "curl", "-sS", "-m", "5", url])
        .output()
        .expect("runs ip netns exec curl");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

/// Waits until curl from `netns` to `url` exits with `code` (after a config
/// push), returning the last output.
pub async fn eventually_exit(netns: &str, url: &str, code: i32) -> String {
    let mut last = (0, String::new());
    for _ in 0..60 {
        last = curl_status(netns, url);
        if last.0 == code {
            return last.1;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "{url} from {netns}: wanted curl exit {code}, last {} {}",
        last.0, last.1
    );
}

/// Captures a pod's eth0 with tshark while `traffic` runs and returns the
/// HTTP requests seen in clear as `source-ip uri` lines and the number of
/// TLS records.
pub async fn capture_http(
    netns: &str,
    ports: &str,
    traffic: impl AsyncFnOnce(),
) -> (String, usize) {
    let file = std::env::temp_dir().join(format!("mizzen-capture-{}.pcap", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let filter = ports
        .split(',')
        .map(|p| format!("tcp port {p}"))
        .collect::<Vec<_>>()
        .join(" or ");
    let mut tshark = std::process::Command::new("ip")
        .args([
            "netns", "exec", netns, "tshark", "-q", "-i", "eth0", "-f", &filter, "-w",
        ])
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tshark starts");
    // tshark says "Capturing on 'eth0'" once the capture is open.
    let stderr = tshark.stderr.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("Capturing on") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("tshark opens the capture");
    traffic().await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let _ = netns::run("kill", &["-INT", &tshark.id().to_string()]);
    let _ = tshark.wait();
    // Each read decodes the ports as `protocol` whatever they are, so
    // cleartext HTTP or TLS is found even on ports tshark does not
    // associate with it.
    let read = |protocol: &str, query: &[&str]| {
        let mut all = vec!["-r".to_string(), file.to_string_lossy().to_string()];
        for port in ports.split(',') {
            all.push("-d".to_string());
            all.push(format!("tcp.port=={port},{protocol}"));
        }
        all.extend(query.iter().map(|q| q.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        netns::run("tshark", &all).unwrap_or_default()
    };
    let http = read(
        "http",
        &[
            "-Y",
            "http.request",
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "http.request.uri",
        ],
    );
    let tls = read(
        "tls",
        &["-Y", "tls.record", "-T", "fields", "-e", "frame.number"],
    )
    .lines()
    .count();
    let _ = std::fs::remove_file(&file);
    (http, tls)
}
