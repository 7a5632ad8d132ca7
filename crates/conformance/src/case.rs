//! The declarative case format: Istio config, the services behind it, and
//! requests with what must come back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub description: String,
    /// Istio YAML for the case.
    #[serde(default)]
    pub config: String,
    /// Istio YAML files from Istio's public test data (paths below
    /// `conformance/istio-data` of the shared directory); the case is skipped
    /// where that data is absent.
    #[serde(default)]
    pub istio_data: Vec<String>,
    pub services: Vec<ServiceSpec>,
    #[serde(default)]
    pub client: Client,
    pub requests: Vec<RequestSpec>,
    /// File the case was read from.
    #[serde(skip)]
    pub file: PathBuf,
}

/// A Service with one demo-app workload per version (labels `app: NAME`,
/// `version: VERSION`), named `NAME-VERSION`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// The port name, which selects the protocol as in Istio.
    #[serde(default = "default_port_name")]
    pub port_name: String,
    #[serde(default = "default_versions")]
    pub versions: Vec<String>,
    /// Share of requests (0..1) the backends answer with 503.
    #[serde(default)]
    pub error_rate: f64,
    /// The same, per version, overriding `error_rate`.
    #[serde(default)]
    pub error_rates: BTreeMap<String, f64>,
    /// Milliseconds every backend waits before answering (a slow service).
    #[serde(default)]
    pub delay_ms: u64,
    /// The same, per version, overriding `delay_ms`.
    #[serde(default)]
    pub delays_ms: BTreeMap<String, u64>,
    /// Backends serve HTTPS (self-signed) instead of plain HTTP.
    #[serde(default)]
    pub tls: bool,
    /// The `region/zone/subzone` of each version's workload.
    #[serde(default)]
    pub localities: BTreeMap<String, String>,
}

fn default_namespace() -> String {
    "default".to_string()
}
fn default_port() -> u16 {
    80
}
fn default_port_name() -> String {
    "http".to_string()
}
fn default_versions() -> Vec<String> {
    vec!["v1".to_string()]
}

/// Where the proxy under test runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    #[serde(default)]
    pub kind: ClientKind,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Where the proxy runs (`region/zone/subzone`): the locality of the
    /// workload declared for it, which the pilot looks the proxy up by.
    #[serde(default)]
    pub locality: Option<String>,
}

impl Default for Client {
    fn default() -> Self {
        Client {
            kind: ClientKind::Sidecar,
            namespace: default_namespace(),
            locality: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// A sidecar (labels `app: client`) used as an explicit HTTP proxy.
    #[default]
    Sidecar,
    /// The ingress gateway (labels `istio: ingressgateway`, listening on 8080).
    Gateway,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    #[serde(default)]
    pub name: Option<String>,
    /// The authority (`reviews:9080`); for a gateway, the Host header.
    pub host: String,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Send to the proxy's own listener on this port, in origin form (a TCP
    /// service's listener: the HTTP request is carried as plain bytes).
    #[serde(default)]
    pub port: Option<u16>,
    /// How many times to send it; distributions need many.
    #[serde(default = "default_count")]
    pub count: u32,
    /// How many of the `count` requests are in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// What kind of exchange the request is.
    #[serde(default)]
    pub kind: RequestKind,
    /// A request body.
    #[serde(default)]
    pub body: Option<String>,
    /// Send HTTPS with this server name (SNI) to the proxy's listener on
    /// `port`, accepting any certificate: TLS passes through the proxy to a
    /// `tls` backend.
    #[serde(default)]
    pub sni: Option<String>,
    /// Before sending: backends (`NAME-VERSION`) restarted on their address
    /// to answer 503 at this rate from now on (endpoints starting to fail).
    #[serde(default)]
    pub error_rates: BTreeMap<String, f64>,
    /// Milliseconds to wait before sending, for what proxies do in the
    /// background (Envoy delivers health changes, such as outlier
    /// ejections, in batches up to a second apart).
    #[serde(default)]
    pub wait_ms: u64,
    pub expect: Expect,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestKind {
    /// A plain HTTP/1.1 request.
    #[default]
    Http,
    /// A unary gRPC call over h2c; the answer's backend is the message the
    /// demo app returns, its `grpc_status` the status from trailers or headers.
    Grpc,
    /// A WebSocket handshake, then a message that must come back.
    Websocket,
}

fn default_concurrency() -> u32 {
    1
}

fn default_path() -> String {
    "/".to_string()
}
fn default_method() -> String {
    "GET".to_string()
}
fn default_count() -> u32 {
    1
}

/// What every answer (or, for `distribution`, all answers together) must show.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub status: Option<u16>,
    /// The workload that answered (`reviews-v2`).
    #[serde(default)]
    pub backend: Option<String>,
    /// Share of answers per workload, in percent.
    #[serde(default)]
    pub distribution: BTreeMap<String, f64>,
    /// Allowed distance from each share, in percentage points.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// Response headers with their values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Response headers that must be absent.
    #[serde(default)]
    pub headers_absent: Vec<String>,
    /// Headers the backend received.
    #[serde(default)]
    pub request_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub request_headers_absent: Vec<String>,
    /// The path and query the backend received.
    #[serde(default)]
    pub upstream_path: Option<String>,
    /// The authority the backend received.
    #[serde(default)]
    pub upstream_authority: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
    /// Each answer takes at least this long (injected delays).
    #[serde(default)]
    pub min_duration_ms: Option<u64>,
    /// At least this share of answers, in percent, are 2xx (retries).
    #[serde(default)]
    pub success_percent_at_least: Option<f64>,
    /// Every answer comes from one backend, whichever it is (hashing).
    #[serde(default)]
    pub same_backend: bool,
    /// Requests each workload received while this request ran (mirrors),
    /// checked once the counts stop changing.
    #[serde(default)]
    pub received: BTreeMap<String, u64>,
    /// Allowed distance from each `received` count.
    #[serde(default)]
    pub received_tolerance: u64,
    /// Least number of answers per backend or `status N` (concurrency).
    #[serde(default)]
    pub min_counts: BTreeMap<String, u32>,
    /// Response headers matching regular expressions (whole value).
    #[serde(default)]
    pub headers_match: BTreeMap<String, String>,
    /// gRPC status of every answer (`grpc` requests).
    #[serde(default)]
    pub grpc_status: Option<u32>,
    /// The server name the TLS backend saw (`sni` requests).
    #[serde(default)]
    pub backend_sni: Option<String>,
}

fn default_tolerance() -> f64 {
    8.0
}

impl Case {
    pub fn load(path: &Path) -> anyhow::Result<Case> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut case: Case = serde_saphyr::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        case.file = path.to_path_buf();
        Ok(case)
    }

    /// All `*.yaml` cases of a directory, by name.
    pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<Case>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        paths.sort();
        paths.iter().map(|p| Case::load(p)).collect()
    }
}
