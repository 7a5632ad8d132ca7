//! `mizzen-proxy`: Mizzen's data plane, a lean Envoy for meshes.
//!
//! The proxy fetches Envoy v3 resources (Listener, RouteConfiguration,
//! Cluster, ClusterLoadAssignment) from `mizzen-pilot` over ADS, compiles the
//! subset of Envoy's API that the pilot emits into immutable structures
//! ([`config`]), and serves HTTP/1.1 and h2c with Envoy's routing semantics,
//! local replies and response flags, and TCP through the TCP proxy filter;
//! TLS transport sockets terminate and originate (m)TLS with certificates
//! from SDS ([`tls`]).
//! As a sidecar it takes traffic captured by iptables ([`capture`] installs
//! the rules): outbound on 15001, handed off by original destination to
//! per-service listeners, and inbound on 15006 ([`listener`]). A resource
//! using anything it does not implement is NACKed with a reason naming the
//! field; the last good config stays in force. A real Envoy given the same
//! config must behave the same.
//!
//! The library holds everything so that tests and the local runtime can run
//! proxies in-process ([`Proxy::start`]); the `mizzen-proxy` binary is a thin
//! shell that builds the runtimes: xDS and admin on a current-thread runtime
//! of their own, the data plane on a multi-thread runtime.

pub mod admin;
pub mod capture;
pub mod cli;
pub mod config;
pub mod http;
pub mod listener;
pub mod record;
pub mod state;
pub mod stats;
pub mod tcp;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use mizzen_xds::client::{ClientConfig, Node, XdsHandler, run_ads};
use mizzen_xds::pb::google::protobuf::Any;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use listener::{OriginalDst, SocketOriginalDst};
pub use record::{ConnectionRecord, RequestObserver, RequestRecord, ResponseFlags};
pub use state::Readiness;
pub use stats::Stats;

use state::ConfigState;

/// How to start a [`Proxy`].
#[derive(Clone)]
pub struct ProxyOptions {
    /// The pilot's xDS address (`http://127.0.0.1:15010`). Empty: run no ADS
    /// client and take configuration only through [`Proxy::apply`].
    pub xds_address: String,
    pub node: Node,
    /// Admin server address; port 0 picks a free port.
    pub admin_address: SocketAddr,
    /// Data-plane worker threads, as reported by `/server_info`. The caller
    /// owns the runtime, so this does not size anything by itself.
    pub concurrency: usize,
    /// How long draining listeners wait for in-flight requests.
    pub drain_timeout: Duration,
    /// Runtime for xDS and admin; `None` uses the caller's runtime.
    pub control_runtime: Option<Handle>,
    /// Receives a record of every request and TCP connection.
    pub observer: Option<Arc<dyn RequestObserver>>,
    /// How connections' original destinations are found; `None` reads
    /// `SO_ORIGINAL_DST` ([`SocketOriginalDst`]). Tests substitute their own.
    pub original_dst: Option<Arc<dyn OriginalDst>>,
    /// The workload certificate, served as the SDS secrets `default` and
    /// `ROOTCA` (the proxy stands in for Istio's pilot-agent). Without it,
    /// resources that name them are refused.
    pub identity: Option<Arc<mizzen_identity::CertificateManager>>,
    /// Istio's status port (15021): plaintext `GET /healthz/ready`,
    /// 200 once configuration is applied. `None`: not served.
    pub status_address: Option<SocketAddr>,
    /// Istio's merged metrics port (15090): `GET /stats/prometheus` in
    /// plaintext. `None`: not served.
    pub prometheus_address: Option<SocketAddr>,
    /// Looks up the names of STRICT_DNS and LOGICAL_DNS clusters; `None`
    /// uses the system resolver. Tests substitute a fixed table.
    pub resolver: Option<Arc<dyn upstream::dns::Resolver>>,
}

impl ProxyOptions {
    /// Defaults: admin on `127.0.0.1:15000`, 2 workers, 5 s drain.
    pub fn new(xds_address: impl Into<String>, node: Node) -> ProxyOptions {
        ProxyOptions {
            xds_address: xds_address.into(),
            node,
            admin_address: SocketAddr::from(([127, 0, 0, 1], 15000)),
            concurrency: 2,
            drain_timeout: Duration::from_secs(5),
            control_runtime: None,
            observer: None,
            original_dst: None,
            identity: None,
            status_address: None,
            prometheus_address: None,
            resolver: None,
        }
    }
}

impl std::fmt::Debug for ProxyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyOptions")
            .field("xds_address", &self.xds_address)
            .field("node", &self.node)
            .field("admin_address", &self.admin_address)
            .field("concurrency", &self.concurrency)
            .field("drain_timeout", &self.drain_timeout)
            .field(
                "identity",
                &self.identity.as_ref().map(|m| m.identity().to_uri()),
            )
            .field("status_address", &self.status_address)
            .field("prometheus_address", &self.prometheus_address)
            .finish_non_exhaustive()
    }
}

/// Forwards xDS updates to the config state.
struct Handler(Arc<ConfigState>);

impl XdsHandler for Handler {
    fn apply(&self, type_url: &str, version: &str, resources: Vec<Any>) -> Result<(), String> {
        self.0.apply(type_url, version, resources)
    }

    fn wanted(&self, type_url: &str) -> Vec<String> {
        self.0.wanted(type_url)
    }
}

/// A running proxy: listeners from LDS on the caller's runtime, admin and xDS
/// on the control runtime.
pub struct Proxy {
    state: Arc<ConfigState>,
    admin_address: SocketAddr,
    quit: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("admin_address", &self.admin_address)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Binds the admin server, starts the ADS client (unless `xds_address` is
    /// empty) and returns; listeners appear as LDS delivers them.
    pub async fn start(opts: ProxyOptions) -> anyhow::Result<Proxy> {
        let data_runtime = Handle::current();
        let control = opts.control_runtime.clone().unwrap_or_else(Handle::current);
        let stats = Arc::new(Stats::default());
        let original_dst = opts
            .original_dst
            .clone()
            .unwrap_or_else(|| Arc::new(SocketOriginalDst));
        let secrets = Arc::new(tls::Secrets::new(
            opts.identity.as_ref().map(|m| (**m).clone()),
        ));
        let resolver = opts
            .resolver
            .clone()
            .unwrap_or_else(|| Arc::new(upstream::dns::SystemResolver));
        let state = ConfigState::new(
            stats,
            opts.observer.clone(),
            original_dst,
            secrets,
            resolver,
            data_runtime,
            opts.drain_timeout,
        );
        let admin_socket = listener::bind(opts.admin_address)
            .with_context(|| format!("cannot bind the admin address {}", opts.admin_address))?;
        let admin_address = admin_socket.local_addr()?;
        let admin_listener = {
            let _guard = control.enter();
            tokio::net::TcpListener::from_std(admin_socket)?
        };
        let (quit_tx, quit_rx) = watch::channel(false);
        let ctx = Arc::new(admin::AdminContext {
            state: state.clone(),
            node: opts.node.clone(),
            xds_address: opts.xds_address.clone(),
            admin_address,
            concurrency: opts.concurrency,
            started: Instant::now(),
            started_at: SystemTime::now(),
            quit: quit_tx,
        });
        let mut tasks = vec![control.spawn(admin::serve(admin_listener, ctx.clone()))];
        // Health and metrics ports stay plaintext whatever the mesh's mTLS
        // mode, as Istio documents for 15021 and 15090.
        for (address, kind) in [
            (opts.status_address, admin::Port::Status),
            (opts.prometheus_address, admin::Port::Prometheus),
        ] {
            let Some(address) = address else { continue };
            let socket = listener::bind(address)
                .with_context(|| format!("cannot bind {address} ({kind:?} port)"))?;
            let l = {
                let _guard = control.enter();
                tokio::net::TcpListener::from_std(socket)?
            };
            tasks.push(control.spawn(admin::serve_port(l, ctx.clone(), kind)));
        }
        if !opts.xds_address.is_empty() {
            let config = ClientConfig {
                address: opts.xds_address.clone(),
                node: opts.node.clone(),
            };
            let handler: Arc<dyn XdsHandler> = Arc::new(Handler(state.clone()));
            tasks.push(control.spawn(run_ads(config, handler)));
        }
        tracing::info!(%admin_address, xds = %opts.xds_address, node = %opts.node.id, "proxy started");
        Ok(Proxy {
            state,
            admin_address,
            quit: quit_rx,
            tasks,
        })
    }

    pub fn admin_address(&self) -> SocketAddr {
        self.admin_address
    }

    /// Resolves once the first CDS and LDS updates and every RDS/EDS resource
    /// they reference have been applied.
    pub async fn ready(&self) {
        let mut rx = self.state.readiness();
        let _ = rx.wait_for(|r| *r == Readiness::Live).await;
    }

    pub fn readiness(&self) -> Readiness {
        *self.state.readiness().borrow()
    }

    /// Applies a state-of-the-world update as if it came over ADS: `Ok` is
    /// what would be ACKed, `Err` the NACK reason.
    pub fn apply(&self, type_url: &str, version: &str, resources: Vec<Any>) -> Result<(), String> {
        self.state.apply(type_url, version, resources)
    }

    /// The resource names the proxy would subscribe to for RDS or EDS.
    pub fn wanted(&self, type_url: &str) -> Vec<String> {
        self.state.wanted(type_url)
    }

    /// The handler the ADS client drives, for callers running their own client.
    pub fn xds_handler(&self) -> Arc<dyn XdsHandler> {
        Arc::new(Handler(self.state.clone()))
    }

    /// Running listeners that bind, by name, with the address actually bound
    /// (`bind_to_port: false` listeners are left out).
    pub fn listener_addresses(&self) -> Vec<(String, SocketAddr)> {
        self.state.listener_addresses()
    }

    /// The bound address of the listener called `name`.
    pub fn listener_address(&self, name: &str) -> Option<SocketAddr> {
        self.state
            .listener_addresses()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.state.data.stats.clone()
    }

    /// Resolves when `POST /quitquitquit` is received.
    pub async fn quit_requested(&self) {
        let mut rx = self.quit.clone();
        let _ = rx.wait_for(|q| *q).await;
    }

    /// Drains: stops accepting, lets in-flight requests finish (bounded by
    /// the drain timeout), then stops xDS and admin.
    pub async fn shutdown(self) {
        self.state.drain_listeners().await;
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
