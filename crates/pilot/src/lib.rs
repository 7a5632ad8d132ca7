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
pub mod translate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use mizzen_xds::server::{AdsServer, Generator, Resource, SyncStatus};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ConfigSnapshot;
use crate::model::Model;
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
}

impl PilotOptions {
    pub fn new(config_dir: impl Into<PathBuf>) -> Self {
        Self {
            config_dir: config_dir.into(),
            xds_address: ([0, 0, 0, 0], 15010).into(),
            debug_address: ([0, 0, 0, 0], 15014).into(),
            domain_suffix: DEFAULT_DOMAIN_SUFFIX.to_string(),
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
    domain_suffix: String,
}

impl PilotState {
    pub fn new(domain_suffix: &str) -> Self {
        Self {
            model: ArcSwap::from_pointee(Model::default()),
            config: ArcSwap::from_pointee(ConfigSnapshot::default()),
            sync: SyncStatus::default(),
            proxies: Default::default(),
            generation: watch::channel(0).0,
            domain_suffix: domain_suffix.to_string(),
        }
    }

    /// Rebuilds the model from new config and pushes it to every proxy.
    pub fn update(&self, snapshot: ConfigSnapshot) {
        let model = Model::build(&snapshot, &self.domain_suffix);
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
    state: Arc<PilotState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Pilot {
    /// Starts the config watch, the xDS server and the debug server on the
    /// current runtime. Addresses with port 0 get an ephemeral port.
    pub async fn start(options: PilotOptions) -> anyhow::Result<Pilot> {
        let state = Arc::new(PilotState::new(&options.domain_suffix));
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
        Ok(Pilot {
            xds_address,
            debug_address,
            state,
            tasks: vec![watcher, xds, debug],
        })
    }

    pub fn xds_address(&self) -> SocketAddr {
        self.xds_address
    }

    pub fn debug_address(&self) -> SocketAddr {
        self.debug_address
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

impl Drop for Pilot {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
