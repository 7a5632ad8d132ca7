//! Gateways at the edge and services outside the mesh, checked with a real
//! data plane fed by mizzen-pilot: an ingress gateway with HTTPS servers
//! (SIMPLE with a `credentialName` Secret from the config directory,
//! MUTUAL), a PASSTHROUGH server, a TCP server and an http→https redirect,
//! and a sidecar with ServiceEntries (STATIC, DNS, DNS_ROUND_ROBIN, NONE)
//! and TLS origination by a DestinationRule. The data plane must ACK every
//! resource, serve HTTPS end to end, refuse a MUTUAL client without a
//! certificate, and serve a rewritten Secret's certificate without restart.
//!
//! The data plane is a parameter: Envoy is the oracle; mizzen-proxy runs
//! the same checks.
//!
//! Certificates are made with the `openssl` command and requests sent with
//! `curl` (its `--resolve`, `--cacert` and `--cert` say exactly what each
//! check is); without either tool, or without Envoy, the test is skipped.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mizzen_pilot::{Pilot, PilotOptions};
use mizzen_proxy::{Proxy, ProxyOptions};
use mizzen_testkit::demo_app::{self, AppConfig};
use mizzen_testkit::envoy::{self, Envoy, EnvoyOptions};
use mizzen_testkit::free_loopback_ip;
use mizzen_xds::client::Node;

/// The ports the gateway workload listens on (the gateway Service's target
/// ports), unprivileged.
const HTTP_PORT: u16 = 8080;
const HTTPS_PORT: u16 = 8443;
const PASSTHROUGH_PORT: u16 = 9443;
const TCP_PORT: u16 = 31400;
/// The egress gateway's HTTP port (its Service's port 80).
const EGRESS_PORT: u16 = 8080;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataPlane {
    Envoy,
    Mizzen,
}

/// A running proxy of either kind.
enum Running {
    Envoy(Box<Envoy>),
    Mizzen(Proxy),
}

impl Running {
    async fn stop(self) {
        match self {
            Running::Envoy(envoy) => {
                let _ = (*envoy).stop().await;
            }
            Running::Mizzen(proxy) => proxy.shutdown().await,
        }
    }

    fn log(&self) -> String {
        match self {
            Running::Envoy(envoy) => envoy.log_contents(),
            Running::Mizzen(_) => String::new(),
        }
    }
}

fn node_id(kind: &str, ip: Ipv4Addr, name: &str, namespace: &str) -> String {
    format!("{kind}~{ip}~{name}.{namespace}~{namespace}.svc.cluster.local")
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

async fn start_proxy(
    plane: DataPlane,
    binary: Option<PathBuf>,
    xds: SocketAddr,
    ip: Ipv4Addr,
    id: String,
    namespace: &str,
    labels: serde_json::Value,
) -> Running {
    match plane {
        DataPlane::Envoy => {
            let mut envoy = envoy::start(EnvoyOptions {
                binary,
                node_id: id,
                node_cluster: format!("proxy.{namespace}"),
                metadata: metadata(namespace, labels),
                xds_address: xds,
                admin_address: SocketAddr::from((ip, 0)),
                ..Default::default()
            })
            .await
            .unwrap();
            envoy.wait_ready(Duration::from_secs(30)).await.unwrap();
            Running::Envoy(Box::new(envoy))
        }
        DataPlane::Mizzen => {
            let node = Node {
                id,
                cluster: format!("proxy.{namespace}"),
                metadata: metadata(namespace, labels),
            };
            let proxy = Proxy::start(ProxyOptions {
                admin_address: SocketAddr::from((ip, 0)),
                concurrency: 1,
                drain_timeout: Duration::from_secs(1),
                ..ProxyOptions::new(format!("http://{xds}"), node)
            })
            .await
            .unwrap();
            // Readiness needs every resource accepted: a NACK shows in the
            // pilot's sync status, which the test reports.
            let _ = tokio::time::timeout(Duration::from_secs(10), proxy.ready()).await;
            Running::Mizzen(proxy)
        }
    }
}

/// Runs a command, returning its exit status and standard output.
async fn run(program: &str, args: &[&str], dir: &Path) -> (bool, String, String) {
    let output = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

fn have(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("version")
        .output()
        .is_ok()
}

/// A CA (`NAME.crt`/`NAME.key`) and leaf certificates signed by it.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    async fn ca(&self, name: &str) {
        let (ok, _, err) = run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
            ],
            &self.dir,
        )
        .await;
        assert!(ok, "openssl: {err}");
    }

    /// `usage`: `serverAuth` or `clientAuth`.
    async fn leaf(&self, name: &str, ca: &str, dns: &[&str], usage: &str) {
        let ext = format!("{name}.ext");
        let sans: Vec<String> = dns.iter().map(|d| format!("DNS:{d}")).collect();
        std::fs::write(
            self.dir.join(&ext),
            format!(
                "subjectAltName={}\nextendedKeyUsage={usage}\n",
                sans.join(",")
            ),
        )
        .unwrap();
        let (ok, _, err) = run(
            "openssl",
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
            &self.dir,
        )
        .await;
        assert!(ok, "openssl: {err}");
        let (ok, _, err) = run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.crt"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "1",
                "-out",
                &format!("{name}.crt"),
                "-extfile",
                &ext,
            ],
            &self.dir,
        )
        .await;
        assert!(ok, "openssl: {err}");
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap()
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

/// PEM as a YAML block scalar's lines.
fn block(pem: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    pem.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The gateway's Secrets: a `kubernetes.io/tls` one for SIMPLE, a generic
/// one (`cert`/`key`) and its `-cacert` companion for MUTUAL.
fn secrets_yaml(certs: &Certs, server: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: httpbin-credential, namespace: istio-system}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{cert}
  tls.key: |
{key}
---
apiVersion: v1
kind: Secret
metadata: {{name: mtls-credential, namespace: istio-system}}
stringData:
  cert: |
{cert}
  key: |
{key}
---
apiVersion: v1
kind: Secret
metadata: {{name: mtls-credential-cacert, namespace: istio-system}}
stringData:
  cacert: |
{ca}
"#,
        cert = block(&certs.read(&format!("{server}.crt")), 4),
        key = block(&certs.read(&format!("{server}.key")), 4),
        ca = block(&certs.read("ca.crt"), 4),
    )
}

/// Istio's egress gateway task (HTTP): sidecar → egress gateway → the
/// external host, here the backend behind a ServiceEntry.
fn egress_yaml(egress: Ipv4Addr, backend: SocketAddr) -> String {
    let backend_ip = backend.ip();
    let backend_port = backend.port();
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: istio-egressgateway, namespace: istio-system}}
spec:
  selector: {{istio: egressgateway}}
  ports: [{{name: http2, port: 80, targetPort: {EGRESS_PORT}}}]
---
apiVersion: mizzen.io/v1alpha1
kind: Workload
metadata: {{name: istio-egressgateway, namespace: istio-system, labels: {{istio: egressgateway}}}}
spec: {{address: {egress}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: external, namespace: default}}
spec:
  hosts: [external.example]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http-port, protocol: HTTP, targetPort: {backend_port}}}]
  endpoints: [{{address: {backend_ip}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: istio-egressgateway, namespace: default}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [external.example]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: egressgateway-for-external, namespace: default}}
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets: [{{name: external}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: direct-external-through-egress-gateway, namespace: default}}
spec:
  hosts: [external.example]
  gateways: [istio-egressgateway, mesh]
  http:
  - match: [{{gateways: [mesh], port: 80}}]
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: external
        port: {{number: 80}}
  - match: [{{gateways: [istio-egressgateway], port: 80}}]
    route:
    - destination: {{host: external.example, port: {{number: 80}}}}
      weight: 100
    headers:
      response:
        set: {{x-egress-gateway: passed}}
"#
    )
}

fn mesh_yaml(gateway: Ipv4Addr, backend: SocketAddr, ca_file: &str) -> String {
    let backend_ip = backend.ip();
    let backend_port = backend.port();
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  ports:
  - {{name: http2, port: 80, targetPort: {HTTP_PORT}}}
  - {{name: https, port: 443, targetPort: {HTTPS_PORT}}}
  - {{name: tls, port: {PASSTHROUGH_PORT}}}
  - {{name: tcp, port: {TCP_PORT}}}
---
apiVersion: v1
kind: Service
metadata: {{name: httpbin, namespace: default}}
spec:
  selector: {{app: httpbin}}
  ports: [{{name: http, port: 80, targetPort: {backend_port}}}]
---
apiVersion: mizzen.io/v1alpha1
kind: Workload
metadata: {{name: httpbin-1, namespace: default, labels: {{app: httpbin}}}}
spec: {{address: {backend_ip}, sidecar: false}}
---
# The gateway's own HTTPS port as a service, the target of passthrough.
apiVersion: v1
kind: Service
metadata: {{name: edge-https, namespace: edge}}
spec:
  selector: {{app: edge-https}}
  ports: [{{name: tls, port: {HTTPS_PORT}}}]
---
apiVersion: mizzen.io/v1alpha1
kind: Workload
metadata: {{name: edge-https, namespace: edge, labels: {{app: edge-https}}}}
spec: {{address: {gateway}, sidecar: false}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [httpbin.example.com]
    tls: {{httpsRedirect: true}}
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [httpbin.example.com, unbound.example.com]
    tls:
      mode: SIMPLE
      credentialName: httpbin-credential
      minProtocolVersion: TLSV1_2
  - port: {{number: 443, name: https-mutual, protocol: HTTPS}}
    hosts: [mtls.example.com]
    tls: {{mode: MUTUAL, credentialName: mtls-credential}}
  - port: {{number: {PASSTHROUGH_PORT}, name: tls, protocol: TLS}}
    hosts: [httpbin.example.com]
    tls: {{mode: PASSTHROUGH}}
  - port: {{number: {TCP_PORT}, name: tcp, protocol: TCP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin, namespace: default}}
spec:
  hosts: [httpbin.example.com, mtls.example.com]
  gateways: [istio-system/edge]
  http:
  - route: [{{destination: {{host: httpbin, port: {{number: 80}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: passthrough, namespace: edge}}
spec:
  hosts: [httpbin.example.com]
  gateways: [istio-system/edge]
  tls:
  - match: [{{port: {PASSTHROUGH_PORT}, sniHosts: [httpbin.example.com]}}]
    route: [{{destination: {{host: edge-https, port: {{number: {HTTPS_PORT}}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [istio-system/edge]
  tcp:
  - match: [{{port: {TCP_PORT}}}]
    route: [{{destination: {{host: httpbin, port: {{number: 80}}}}}}]
---
# Services outside the mesh, for the sidecar.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: static, namespace: default}}
spec:
  hosts: [static.example]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {backend_port}}}]
  endpoints: [{{address: {backend_ip}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: dns, namespace: default}}
spec:
  hosts: [dns.example]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {backend_port}}}]
  endpoints: [{{address: localhost}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: dns-rr, namespace: default}}
spec:
  hosts: [rr.example]
  location: MESH_EXTERNAL
  resolution: DNS_ROUND_ROBIN
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {backend_port}}}]
  endpoints: [{{address: localhost}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: none, namespace: default}}
spec:
  hosts: [passthrough.example]
  location: MESH_EXTERNAL
  resolution: NONE
  ports: [{{number: 5432, name: tcp, protocol: TCP}}]
---
# TLS origination: the app speaks HTTP, the sidecar TLS to the gateway's
# HTTPS port, which terminates it.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: httpbin-external, namespace: default}}
spec:
  hosts: [httpbin.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {HTTPS_PORT}}}]
  endpoints: [{{address: {gateway}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: httpbin-external, namespace: default}}
spec:
  host: httpbin.example.com
  trafficPolicy:
    tls: {{mode: SIMPLE, sni: httpbin.example.com, caCertificates: {ca_file}}}
"#
    )
}

/// `curl` with `args`; returns the status code (0 when the request
/// failed) and what curl said.
async fn curl(dir: &Path, args: &[&str]) -> (u16, String) {
    let mut all = vec![
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
    ];
    all.extend_from_slice(args);
    let (_, out, err) = run("curl", &all, dir).await;
    (out.trim().parse().unwrap_or(0), format!("{out} {err}"))
}

/// Retries `check` until it holds (config reaches proxies asynchronously).
async fn eventually<F, Fut>(what: &str, mut check: F) -> String
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match check().await {
            Ok(()) => return String::new(),
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Waits until the proxy ACKed the latest version of every type in
/// `types`; panics with the pilot's sync status (NACK reasons included).
async fn assert_synced(pilot: &Pilot, id: &str, types: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let syncz = pilot.state().sync.to_json();
        let proxy = syncz
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["proxy"] == id)
            .cloned();
        let synced = proxy.as_ref().is_some_and(|proxy| {
            types
                .iter()
                .all(|short| proxy["types"][short]["state"] == "SYNCED")
        });
        if synced {
            println!("{id}: {}", proxy.unwrap()["types"]);
            return;
        }
        if Instant::now() > deadline {
            panic!("{id} not synced on {types:?}: {syncz:#}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn gateway_and_sidecar(plane: DataPlane) {
    let binary = match plane {
        DataPlane::Envoy => match envoy::skip_without_envoy() {
            Some(binary) => Some(binary),
            None => return,
        },
        DataPlane::Mizzen => None,
    };
    if !have("openssl") || !have("curl") {
        eprintln!("SKIP: openssl and curl are needed");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("config");
    let certs_dir = work.path().join("certs");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::create_dir_all(&certs_dir).unwrap();
    let certs = Certs {
        dir: certs_dir.clone(),
    };
    certs.ca("ca").await;
    certs.ca("ca2").await;
    let names = [
        "httpbin.example.com",
        "mtls.example.com",
        "unbound.example.com",
    ];
    certs.leaf("server", "ca", &names, "serverAuth").await;
    certs.leaf("rotated", "ca2", &names, "serverAuth").await;
    certs
        .leaf("client", "ca", &["client.example.com"], "clientAuth")
        .await;

    // The backend: the demo app, plain HTTP.
    let backend_ip = free_loopback_ip();
    let listener = tokio::net::TcpListener::bind((backend_ip, 0))
        .await
        .unwrap();
    let app = demo_app::spawn(
        AppConfig {
            name: "httpbin".into(),
            ..Default::default()
        },
        listener,
    );
    // localhost for the DNS entries: the same app on 127.0.0.1, same port.
    let backend = app.local_addr();
    let local = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, backend.port()))
        .await
        .ok()
        .map(|l| {
            demo_app::spawn(
                AppConfig {
                    name: "httpbin-localhost".into(),
                    ..Default::default()
                },
                l,
            )
        });

    let gateway_ip = free_loopback_ip();
    std::fs::write(
        config.join("mesh.yaml"),
        mesh_yaml(gateway_ip, backend, &certs.path("ca.crt")),
    )
    .unwrap();
    std::fs::write(config.join("secrets.yaml"), secrets_yaml(&certs, "server")).unwrap();
    let egress_ip = free_loopback_ip();
    std::fs::write(config.join("egress.yaml"), egress_yaml(egress_ip, backend)).unwrap();

    let pilot = Pilot::start(PilotOptions {
        xds_address: "127.0.0.1:0".parse().unwrap(),
        debug_address: "127.0.0.1:0".parse().unwrap(),
        ..PilotOptions::new(&config)
    })
    .await
    .unwrap();
    let xds = pilot.xds_address();

    let gateway_id = node_id("router", gateway_ip, "istio-ingressgateway", "istio-system");
    let gateway = start_proxy(
        plane,
        binary.clone(),
        xds,
        gateway_ip,
        gateway_id.clone(),
        "istio-system",
        serde_json::json!({"istio": "ingressgateway"}),
    )
    .await;
    let egress_id = node_id("router", egress_ip, "istio-egressgateway", "istio-system");
    let egress = start_proxy(
        plane,
        binary.clone(),
        xds,
        egress_ip,
        egress_id.clone(),
        "istio-system",
        serde_json::json!({"istio": "egressgateway"}),
    )
    .await;
    let client_ip = free_loopback_ip();
    let client_id = node_id("sidecar", client_ip, "client", "default");
    let sidecar = start_proxy(
        plane,
        binary,
        xds,
        client_ip,
        client_id.clone(),
        "default",
        serde_json::json!({"app": "client"}),
    )
    .await;

    let dir = certs_dir.as_path();
    let at = |host: &str, port: u16| format!("{host}:{port}:{gateway_ip}");
    let url = |host: &str, port: u16| format!("https://{host}:{port}/");

    // Every resource type ACKed, secrets included.
    assert_synced(&pilot, &gateway_id, &["CDS", "EDS", "LDS", "RDS", "SDS"]).await;
    assert_synced(&pilot, &client_id, &["CDS", "EDS", "LDS", "RDS"]).await;
    assert_synced(&pilot, &egress_id, &["CDS", "EDS", "LDS", "RDS"]).await;

    // HTTPS SIMPLE end to end (the Secret arrived over SDS).
    eventually("HTTPS SIMPLE", || async {
        let (code, said) = curl(
            dir,
            &[
                "--cacert",
                "ca.crt",
                "--resolve",
                &at("httpbin.example.com", HTTPS_PORT),
                &url("httpbin.example.com", HTTPS_PORT),
            ],
        )
        .await;
        (code == 200).then_some(()).ok_or(said)
    })
    .await;

    // Untrusted without the CA.
    let (code, said) = curl(
        dir,
        &[
            "--resolve",
            &at("httpbin.example.com", HTTPS_PORT),
            &url("httpbin.example.com", HTTPS_PORT),
        ],
    )
    .await;
    assert_eq!(code, 0, "verified without the CA: {said}");

    // An HTTPS host with no VirtualService: 404 (NR).
    let (code, said) = curl(
        dir,
        &[
            "--cacert",
            "ca.crt",
            "--resolve",
            &at("unbound.example.com", HTTPS_PORT),
            &url("unbound.example.com", HTTPS_PORT),
        ],
    )
    .await;
    assert_eq!(code, 404, "{said}");

    // MUTUAL: refused without a client certificate, served with one.
    let (code, said) = curl(
        dir,
        &[
            "--cacert",
            "ca.crt",
            "--resolve",
            &at("mtls.example.com", HTTPS_PORT),
            &url("mtls.example.com", HTTPS_PORT),
        ],
    )
    .await;
    assert_eq!(code, 0, "MUTUAL without a client certificate: {said}");
    let (code, said) = curl(
        dir,
        &[
            "--cacert",
            "ca.crt",
            "--cert",
            "client.crt",
            "--key",
            "client.key",
            "--resolve",
            &at("mtls.example.com", HTTPS_PORT),
            &url("mtls.example.com", HTTPS_PORT),
        ],
    )
    .await;
    assert_eq!(code, 200, "MUTUAL with a client certificate: {said}");

    // PASSTHROUGH: the TLS stream goes, undecrypted, to the HTTPS port.
    let (code, said) = curl(
        dir,
        &[
            "--cacert",
            "ca.crt",
            "--resolve",
            &at("httpbin.example.com", PASSTHROUGH_PORT),
            &url("httpbin.example.com", PASSTHROUGH_PORT),
        ],
    )
    .await;
    assert_eq!(code, 200, "PASSTHROUGH: {said}");

    // TCP: bytes to the backend.
    let (code, said) = curl(dir, &[&format!("http://{gateway_ip}:{TCP_PORT}/")]).await;
    assert_eq!(code, 200, "TCP: {said}");

    // httpsRedirect: 301 to https.
    let (code, said) = curl(
        dir,
        &[
            "-H",
            "Host: httpbin.example.com",
            &format!("http://{gateway_ip}:{HTTP_PORT}/"),
        ],
    )
    .await;
    assert_eq!(code, 301, "httpsRedirect: {said}");

    // The sidecar: ServiceEntries through the explicit proxy.
    let proxy_url = format!("http://{client_ip}:15001");
    let mut hosts = vec!["static.example", "httpbin.example.com"];
    if local.is_some() {
        hosts.extend(["dns.example", "rr.example"]);
    } else {
        eprintln!(
            "127.0.0.1:{} is taken: DNS entries not exercised",
            backend.port()
        );
    }
    for host in hosts {
        let (code, said) = curl(dir, &["-x", &proxy_url, &format!("http://{host}/")]).await;
        assert_eq!(code, 200, "via the sidecar to {host}: {said}");
    }

    // Through the egress gateway: its route sets the response header.
    let (ok, headers, err) = run(
        "curl",
        &[
            "-sS",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--max-time",
            "5",
            "-x",
            &proxy_url,
            "http://external.example/",
        ],
        dir,
    )
    .await;
    assert!(
        ok && headers.starts_with("HTTP/1.1 200")
            && headers
                .to_ascii_lowercase()
                .contains("x-egress-gateway: passed"),
        "via the egress gateway: {headers} {err}"
    );

    // A rewritten Secret: the new certificate is served without restart.
    std::fs::write(config.join("secrets.yaml"), secrets_yaml(&certs, "rotated")).unwrap();
    eventually("certificate rotation", || async {
        let (code, said) = curl(
            dir,
            &[
                "--cacert",
                "ca2.crt",
                "--resolve",
                &at("httpbin.example.com", HTTPS_PORT),
                &url("httpbin.example.com", HTTPS_PORT),
            ],
        )
        .await;
        (code == 200).then_some(()).ok_or(said)
    })
    .await;
    let (code, said) = curl(
        dir,
        &[
            "--cacert",
            "ca.crt",
            "--resolve",
            &at("httpbin.example.com", HTTPS_PORT),
            &url("httpbin.example.com", HTTPS_PORT),
        ],
    )
    .await;
    assert_eq!(code, 0, "the old CA still verifies: {said}");
    assert_synced(&pilot, &gateway_id, &["CDS", "EDS", "LDS", "RDS", "SDS"]).await;

    if code != 0 {
        eprintln!("{}", gateway.log());
    }
    gateway.stop().await;
    egress.stop().await;
    sidecar.stop().await;
    let _ = app.shutdown().await;
    if let Some(local) = local {
        let _ = local.shutdown().await;
    }
    pilot.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_gateway_tls_and_service_entries() {
    gateway_and_sidecar(DataPlane::Envoy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mizzen_proxy_gateway_tls_and_service_entries() {
    gateway_and_sidecar(DataPlane::Mizzen).await;
}
