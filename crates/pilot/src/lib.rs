//! `mizzen-pilot`: Mizzen's control plane.
//!
//! The pilot reads Istio configuration and the service registry from a
//! directory ([`config`]), builds an indexed [`model::Model`] of the mesh, and
//! serves every connected proxy its own Envoy configuration over ADS
//! ([`translate`] computes it). The debug server shows what each proxy was
//! sent and acknowledged (`/debug/syncz`) and the config with its errors
//! (`/debug/configz`).

pub mod config;
pub mod debug;
pub mod model;
pub mod node;
pub mod peer;
pub mod translate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use mizzen_identity::CertificateAuthority;
use mizzen_identity::ca::service::CaService;
use mizzen_xds::server::{AdsServer, Generator, Resource, SyncStatus};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ConfigSnapshot;
use crate::model::{MeshSettings, Model};
use crate::node::ProxyNode;

/// Istio's default DNS domain of services.
pub const DEFAULT_DOMAIN_SUFFIX: &str = "cluster.local";

#[derive(Debug, Clone)]
pub struct PilotOptions {
    pub config_dir: PathBuf,
    /// Plaintext xDS (Istio: 15010).
    pub xds_address: SocketAddr,
    /// Monitoring and debug (Istio: 15014).
    pub debug_address: SocketAddr,
    pub domain_suffix: String,
    /// The mesh CA. With it, the pilot signs workload certificates on
    /// 15012 and the mesh runs mutual TLS; without it, plaintext.
    pub ca: Option<CaOptions>,
}

/// The CA the pilot runs (istiod's built-in CA).
#[derive(Debug, Clone)]
pub struct CaOptions {
    /// Where the root is kept (created on first start), or a directory in
    /// Istio's `cacerts` layout with a plugged-in intermediate.
    pub dir: PathBuf,
    pub trust_domain: String,
    /// The certificate service, over TLS (Istio: 15012).
    pub address: SocketAddr,
    /// Who may ask for which identity: bearer tokens the runtime hands to
    /// each workload.
    pub tokens: mizzen_identity::auth::StaticTokens,
    /// Lifetime of workload certificates (Istio: 24 h).
    pub workload_cert_ttl: std::time::Duration,
    /// Names (DNS or IP) on the certificate of 15012.
    pub serving_names: Vec<String>,
}

/// Istio's default lifetime of workload certificates.
pub const DEFAULT_WORKLOAD_CERT_TTL: std::time::Duration =
    std::time::Duration::from_secs(24 * 3600);

impl CaOptions {
    pub fn new(dir: impl Into<PathBuf>, tokens: mizzen_identity::auth::StaticTokens) -> Self {
        CaOptions {
            dir: dir.into(),
            trust_domain: mizzen_identity::DEFAULT_TRUST_DOMAIN.to_string(),
            address: ([0, 0, 0, 0], 15012).into(),
            tokens,
            workload_cert_ttl: DEFAULT_WORKLOAD_CERT_TTL,
            serving_names: vec![
                "istiod.istio-system.svc".to_string(),
                "mizzen-pilot".to_string(),
                "127.0.0.1".to_string(),
            ],
        }
    }
}

impl PilotOptions {
    pub fn new(config_dir: impl Into<PathBuf>) -> Self {
        Self {
            config_dir: config_dir.into(),
            xds_address: ([0, 0, 0, 0], 15010).into(),
            debug_address: ([0, 0, 0, 0], 15014).into(),
            domain_suffix: DEFAULT_DOMAIN_SUFFIX.to_string(),
            ca: None,
        }
    }
}

/// What the pilot's servers share.
pub struct PilotState {
    pub model: ArcSwap<Model>,
    pub config: ArcSwap<ConfigSnapshot>,
    pub sync: SyncStatus,
    /// The last node each proxy id connected with, for debug views.
    pub proxies: std::sync::Mutex<std::collections::BTreeMap<String, ProxyNode>>,
    generation: watch::Sender<u64>,
    settings: MeshSettings,
}

impl PilotState {
    pub fn new(domain_suffix: &str) -> Self {
        Self::with_settings(MeshSettings::new(domain_suffix))
    }

    pub fn with_settings(settings: MeshSettings) -> Self {
        Self {
            model: ArcSwap::from_pointee(Model::default()),
            config: ArcSwap::from_pointee(ConfigSnapshot::default()),
            sync: SyncStatus::default(),
            proxies: Default::default(),
            generation: watch::channel(0).0,
            settings,
        }
    }

    /// Rebuilds the model from new config and pushes it to every proxy.
    pub fn update(&self, snapshot: ConfigSnapshot) {
        let model = Model::build_with(&snapshot, &self.settings);
        for warning in &model.warnings {
            tracing::warn!("{warning}");
        }
        self.model.store(Arc::new(model));
        self.config.store(Arc::new(snapshot));
        self.generation.send_modify(|g| *g += 1);
        tracing::info!(
            generation = *self.generation.borrow(),
            "config applied; pushing to proxies"
        );
    }

    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }
}

/// Serves each proxy the configuration [`translate`] computes from the model.
pub struct MeshGenerator {
    state: Arc<PilotState>,
}

impl Generator for MeshGenerator {
    type Proxy = ProxyNode;

    fn identify(
        &self,
        node: &mizzen_xds::pb::envoy::config::core::v3::Node,
    ) -> Result<ProxyNode, String> {
        let proxy = ProxyNode::from_node(node)?;
        self.state
            .proxies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(proxy.id.clone(), proxy.clone());
        Ok(proxy)
    }

    fn generate(&self, proxy: &ProxyNode, type_url: &str, names: &[String]) -> Vec<Resource> {
        let model = self.state.model.load();
        translate::generate(&model, proxy, type_url, names)
    }
}

/// A running pilot.
pub struct Pilot {
    xds_address: SocketAddr,
    debug_address: SocketAddr,
    ca_address: Option<SocketAddr>,
    ca: Option<Arc<CertificateAuthority>>,
    state: Arc<PilotState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Pilot {
    /// Starts the config watch, the xDS server and the debug server on the
    /// current runtime. Addresses with port 0 get an ephemeral port.
    pub async fn start(options: PilotOptions) -> anyhow::Result<Pilot> {
        let mut settings = MeshSettings::new(&options.domain_suffix);
        let mut tasks = Vec::new();
        let mut ca_address = None;
        let mut authority = None;
        if let Some(ca) = &options.ca {
            settings.mtls = true;
            settings.trust_domain = ca.trust_domain.clone();
            let (address, task, loaded) = start_ca(ca).await?;
            ca_address = Some(address);
            authority = Some(loaded);
            tasks.push(task);
        }
        let state = Arc::new(PilotState::with_settings(settings));
        let watch_state = state.clone();
        let watcher = config::watch(
            options.config_dir.clone(),
            Arc::new(move |snapshot| watch_state.update(snapshot)),
        )?;

        let xds_listener = TcpListener::bind(options.xds_address).await.map_err(|e| {
            anyhow::anyhow!("cannot listen for xDS on {}: {e}", options.xds_address)
        })?;
        let xds_address = xds_listener.local_addr()?;
        let ads = AdsServer::new(
            Arc::new(MeshGenerator {
                state: state.clone(),
            }),
            state.generation.subscribe(),
            state.sync.clone(),
        );
        let xds = tokio::spawn(async move {
            if let Err(error) = ads.serve(xds_listener).await {
                tracing::error!(%error, "xDS server stopped");
            }
        });

        let debug_listener = TcpListener::bind(options.debug_address)
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot listen for debug on {}: {e}", options.debug_address)
            })?;
        let debug_address = debug_listener.local_addr()?;
        let debug = tokio::spawn(debug::serve(debug_listener, state.clone()));
        tracing::info!(%xds_address, %debug_address, config_dir = %options.config_dir.display(), "pilot started");
        tasks.extend([watcher, xds, debug]);
        Ok(Pilot {
            xds_address,
            debug_address,
            ca_address,
            ca: authority,
            state,
            tasks,
        })
    }

    pub fn xds_address(&self) -> SocketAddr {
        self.xds_address
    }

    pub fn debug_address(&self) -> SocketAddr {
        self.debug_address
    }

    /// Where the certificate service listens, when the pilot runs a CA.
    pub fn ca_address(&self) -> Option<SocketAddr> {
        self.ca_address
    }

    /// The mesh CA, when the pilot runs one (its root bundle is what
    /// workloads trust).
    pub fn ca(&self) -> Option<&Arc<CertificateAuthority>> {
        self.ca.as_ref()
    }

    pub fn state(&self) -> &Arc<PilotState> {
        &self.state
    }

    pub fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Loads or creates the CA and serves Istio's certificate service over TLS.
async fn start_ca(
    options: &CaOptions,
) -> anyhow::Result<(
    SocketAddr,
    tokio::task::JoinHandle<()>,
    Arc<CertificateAuthority>,
)> {
    let ca = CertificateAuthority::load_or_create(&options.dir, &options.trust_domain)
        .map_err(|e| anyhow::anyhow!("CA in {}: {e}", options.dir.display()))?
        .with_ttls(
            options.workload_cert_ttl,
            options
                .workload_cert_ttl
                .max(DEFAULT_WORKLOAD_CERT_TTL * 90),
        );
    let ca = Arc::new(ca);
    let serving = ca
        .serving_config(&options.serving_names)
        .map_err(|e| anyhow::anyhow!("CA serving certificate: {e}"))?;
    let listener = TcpListener::bind(options.address).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for certificate requests on {}: {e}",
            options.address
        )
    })?;
    let address = listener.local_addr()?;
    let incoming = mizzen_identity::tls::TlsIncoming::new(listener, Arc::new(serving));
    let service = CaService::new(ca.clone(), options.tokens.clone()).into_server();
    let task = tokio::spawn(async move {
        if let Err(error) = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!(%error, "certificate service stopped");
        }
    });
    tracing::info!(%address, trust_domain = %options.trust_domain, "certificate service started");
    Ok((address, task, ca))
}

impl Drop for Pilot {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
