//! The local loopback runtime: a whole mesh in one process on one host.
//!
//! The pilot serves a config directory; each `Workload` in it gets a
//! mizzen-proxy (a sidecar, or a gateway for `istio: ingressgateway` /
//! `istio: egressgateway` workloads) bound to the workload's own loopback
//! address, and its app (the demo app) on another loopback address beside
//! it. Without iptables capture, apps reach the mesh through their sidecar as
//! an explicit HTTP proxy (`HTTP_PROXY=http://ADDRESS:15001`), the way Istio
//! runs without traffic interception (`INTERCEPTION_MODE=NONE`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use mizzen_identity::auth::StaticTokens;
use mizzen_identity::workload::TokenSource;
use mizzen_identity::{CertificateManager, Identity};
use mizzen_pilot::config::ConfigStore;
use mizzen_pilot::model::{Model, Workload};
use mizzen_pilot::{Pilot, PilotOptions};
use mizzen_proxy::{Proxy, ProxyOptions};
use mizzen_testkit::demo_app::{self, AppConfig, AppHandle};
use mizzen_xds::client::Node;
use std::sync::Arc;

/// Admin port of every proxy, on its own address.
const ADMIN_PORT: u16 = 15000;
/// Apps get addresses from here on, one each.
const FIRST_APP_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 77, 0, 1);

/// An app to run beside a workload's sidecar.
#[derive(Debug, Clone)]
pub struct AppSpec {
    pub config: AppConfig,
    /// The port the app listens on (the Service's target port).
    pub port: u16,
}

pub struct LocalOptions {
    pub config_dir: PathBuf,
    pub xds_address: SocketAddr,
    pub debug_address: SocketAddr,
    /// Apps by workload name (`namespace/name`).
    pub apps: BTreeMap<String, AppSpec>,
    /// The mesh CA's directory: with one, the pilot runs the CA on
    /// `ca_address`, every proxy gets a workload certificate and the mesh
    /// runs mutual TLS.
    pub ca_dir: Option<PathBuf>,
    pub ca_address: SocketAddr,
}

impl LocalOptions {
    /// Ephemeral ports on 127.0.0.1, no apps, no CA.
    pub fn new(config_dir: impl Into<PathBuf>) -> LocalOptions {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        LocalOptions {
            config_dir: config_dir.into(),
            xds_address: any,
            debug_address: any,
            apps: BTreeMap::new(),
            ca_dir: None,
            ca_address: any,
        }
    }
}

/// A running local mesh.
pub struct LocalMesh {
    pub pilot: Pilot,
    pub proxies: Vec<(String, Proxy)>,
    apps: Vec<AppHandle>,
    run_file: Option<PathBuf>,
}

/// The workloads a config directory declares; config errors stop the start.
pub fn workloads(config_dir: &Path) -> anyhow::Result<Vec<Workload>> {
    let mut store = ConfigStore::new(config_dir);
    store.rescan();
    let snapshot = store.snapshot();
    if !snapshot.problems.is_empty() {
        bail!(
            "the config directory {} has errors:\n{}",
            config_dir.display(),
            snapshot
                .problems
                .iter()
                .map(|p| p.message.clone())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(Model::build(&snapshot, mizzen_pilot::DEFAULT_DOMAIN_SUFFIX).workloads)
}

fn gateway_kind(workload: &Workload) -> bool {
    matches!(
        workload.labels.get("istio").map(String::as_str),
        Some("ingressgateway" | "egressgateway")
    )
}

/// The next loopback address for an app, unique in this process (several
/// meshes may run in one, as in tests) and, when the app's port is known,
/// free on this host (another process may run a mesh).
fn next_app_host(port: Option<u16>) -> Ipv4Addr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(FIRST_APP_ADDRESS.to_bits());
    loop {
        let ip = Ipv4Addr::from(NEXT.fetch_add(1, Ordering::Relaxed));
        if port.is_none_or(|port| std::net::TcpListener::bind((ip, port)).is_ok()) {
            return ip;
        }
    }
}

/// The root bundle of the pilot's CA, if it runs one.
fn pilot_ca(pilot: &Pilot) -> Option<String> {
    pilot.ca().map(|ca| ca.root_bundle().to_string())
}

/// What a pod's pilot-agent does at start: a bootstrap token for the
/// workload's service account, then a certificate from the pilot's CA over
/// its TLS certificate service, renewed at half-life.
async fn workload_certificate(
    workload: &Workload,
    tokens: &StaticTokens,
    root_pem: &str,
    ca_address: SocketAddr,
) -> anyhow::Result<CertificateManager> {
    let identity = Identity::in_default_domain(&workload.namespace, &workload.service_account)?;
    let token = tokens.mint(identity.clone())?;
    let manager = mizzen_identity::workload::start_remote(
        &ca_address.to_string(),
        root_pem,
        TokenSource::from_token(token),
        identity,
        mizzen_pilot::DEFAULT_WORKLOAD_CERT_TTL,
    )
    .await?;
    Ok(manager)
}

impl LocalMesh {
    pub async fn start(options: LocalOptions) -> anyhow::Result<LocalMesh> {
        let workloads = workloads(&options.config_dir)?;
        for workload in &workloads {
            if !workload.address.is_loopback() {
                bail!(
                    "Workload {}/{}: address {} is not a loopback address; the local runtime without root only runs workloads on 127.0.0.0/8",
                    workload.namespace,
                    workload.name,
                    workload.address
                );
            }
        }
        let tokens = StaticTokens::new();
        let pilot = Pilot::start(PilotOptions {
            xds_address: options.xds_address,
            debug_address: options.debug_address,
            ca: options.ca_dir.as_ref().map(|dir| mizzen_pilot::CaOptions {
                address: options.ca_address,
                ..mizzen_pilot::CaOptions::new(dir, tokens.clone())
            }),
            ..PilotOptions::new(&options.config_dir)
        })
        .await?;
        let xds_address = format!("http://{}", pilot.xds_address());
        let mut mesh = LocalMesh {
            pilot,
            proxies: Vec::new(),
            apps: Vec::new(),
            run_file: None,
        };
        let mut app_hosts = BTreeMap::new();
        for workload in &workloads {
            let key = format!("{}/{}", workload.namespace, workload.name);
            let is_gateway = gateway_kind(workload);
            if !is_gateway && !workload.sidecar {
                continue;
            }
            let app_port = options.apps.get(&key).map(|spec| spec.port);
            let app_host = IpAddr::V4(next_app_host(app_port));
            app_hosts.insert(key.clone(), app_host);
            let kind = if is_gateway { "router" } else { "sidecar" };
            let mut metadata = serde_json::Map::new();
            metadata.insert("NAMESPACE".into(), workload.namespace.clone().into());
            metadata.insert("NAME".into(), workload.name.clone().into());
            metadata.insert(
                "SERVICE_ACCOUNT".into(),
                workload.service_account.clone().into(),
            );
            metadata.insert("LABELS".into(), serde_json::to_value(&workload.labels)?);
            metadata.insert("INSTANCE_IPS".into(), workload.address.to_string().into());
            metadata.insert("INTERCEPTION_MODE".into(), "NONE".into());
            metadata.insert(
                mizzen_pilot::node::APP_HOST_METADATA.into(),
                app_host.to_string().into(),
            );
            let node = Node {
                id: crate::pods::node_id(kind, workload),
                cluster: format!(
                    "{}.{}",
                    workload.labels.get("app").unwrap_or(&workload.name),
                    workload.namespace
                ),
                metadata,
            };
            let identity = match (pilot_ca(&mesh.pilot), mesh.pilot.ca_address()) {
                (Some(root), Some(ca_address)) => Some(Arc::new(
                    workload_certificate(workload, &tokens, &root, ca_address)
                        .await
                        .with_context(|| format!("the workload certificate of {key}"))?,
                )),
                _ => None,
            };
            let proxy = Proxy::start(ProxyOptions {
                identity,
                admin_address: SocketAddr::new(workload.address, ADMIN_PORT),
                concurrency: 1,
                drain_timeout: Duration::from_secs(5),
                ..ProxyOptions::new(xds_address.clone(), node)
            })
            .await
            .with_context(|| format!("starting the proxy of {key}"))?;
            mesh.proxies.push((key, proxy));
        }
        for (key, proxy) in &mesh.proxies {
            tokio::time::timeout(Duration::from_secs(20), proxy.ready())
                .await
                .with_context(|| format!("the proxy of {key} did not become ready within 20 s"))?;
        }
        for (key, spec) in options.apps {
            let Some(workload) = workloads
                .iter()
                .find(|w| format!("{}/{}", w.namespace, w.name) == key)
            else {
                bail!("no Workload {key} in the config directory for its app");
            };
            let host = app_hosts.get(&key).copied().unwrap_or(workload.address);
            let mut config = spec.config;
            config.listen_addr = SocketAddr::new(host, spec.port);
            if workload.sidecar {
                config.http_proxy = Some(format!(
                    "http://{}:{}",
                    workload.address,
                    mizzen_pilot::translate::OUTBOUND_PORT
                ));
            }
            let listener = tokio::net::TcpListener::bind(config.listen_addr)
                .await
                .with_context(|| {
                    format!("app of {key}: cannot listen on {}", config.listen_addr)
                })?;
            mesh.apps.push(demo_app::spawn(config, listener));
        }
        Ok(mesh)
    }

    /// Records this mesh so that `mizzen apply` finds it without flags.
    pub fn register(&mut self, config_dir: &Path) -> anyhow::Result<()> {
        let file =
            crate::meshes::register(config_dir, self.pilot.debug_address(), Default::default())?;
        self.run_file = Some(file);
        Ok(())
    }

    /// Stops apps, drains proxies, stops the pilot.
    pub async fn stop(self) {
        for app in self.apps {
            let _ = app.shutdown().await;
        }
        for (_, proxy) in self.proxies {
            proxy.shutdown().await;
        }
        self.pilot.shutdown();
        if let Some(file) = self.run_file {
            let _ = std::fs::remove_file(file);
        }
    }
}
