//! Applied configuration: the raw resources (for `/config_dump`), their
//! compiled forms, the running listeners, and the snapshot the data path
//! reads through an [`ArcSwap`].
//!
//! Only the xDS side writes, under one mutex; every write ends by publishing a
//! new immutable [`Snapshot`], so requests never wait on config.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use mizzen_xds::pb;
use mizzen_xds::pb::google::protobuf::Any;
use mizzen_xds::type_url;
use pb::envoy::config::cluster::v3::Cluster;
use pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use pb::envoy::config::listener::v3::Listener;
use pb::envoy::config::route::v3::RouteConfiguration;
use pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::config::dns::DnsConfig;
use crate::config::tls::{CompiledSecret, SecretRef, UpstreamTls, compile_secret};
use crate::config::{
    ClusterConfig, ConfigError, Discovery, EndpointSet, ListenerConfig, RouteTable, type_name,
};
use crate::listener::handoff::HandoffTable;
use crate::listener::{self, ActiveListener, ListenerHandle, ListenerShared, OriginalDst};
use crate::record::RequestObserver;
use crate::stats::{Stats, XdsStats};
use crate::tls::Secrets;
use crate::upstream::dns::{Resolutions, Resolver};
use crate::upstream::{ClusterEntry, Upstream};

/// What the data path reads: route tables and clusters by name.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub routes: HashMap<Arc<str>, Arc<RouteTable>>,
    pub clusters: HashMap<Arc<str>, Arc<ClusterEntry>>,
}

/// Inputs shared by every listener.
pub(crate) struct DataPlane {
    pub snapshot: ArcSwap<Snapshot>,
    pub stats: Arc<Stats>,
    pub observer: Option<Arc<dyn RequestObserver>>,
    /// `bind_to_port: false` listeners by address, for hand-offs.
    pub handoff: ArcSwap<HandoffTable<Arc<ListenerShared>>>,
    pub original_dst: Arc<dyn OriginalDst>,
    /// Certificates and trust anchors for TLS transport sockets.
    pub secrets: Arc<Secrets>,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane").finish_non_exhaustive()
    }
}

/// Readiness as Envoy's `/ready` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// No CDS or LDS update applied yet.
    PreInitializing,
    /// Waiting for the first CDS/LDS or for referenced RDS/EDS resources.
    Initializing,
    Live,
}

impl Readiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::PreInitializing => "PRE_INITIALIZING",
            Readiness::Initializing => "INITIALIZING",
            Readiness::Live => "LIVE",
        }
    }
}

/// One accepted resource as `/config_dump` shows it.
#[derive(Debug, Clone)]
pub struct Applied<P, C> {
    pub proto: P,
    pub compiled: C,
    /// Version of the update that last changed this resource.
    pub version: String,
    pub last_updated: SystemTime,
}

#[derive(Debug)]
struct TypeState<P, C> {
    version: String,
    resources: BTreeMap<String, Applied<P, C>>,
}

impl<P, C> Default for TypeState<P, C> {
    fn default() -> Self {
        TypeState {
            version: String::new(),
            resources: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Store {
    listeners: TypeState<Listener, Arc<ListenerConfig>>,
    routes: TypeState<RouteConfiguration, Arc<RouteTable>>,
    clusters: TypeState<Cluster, Arc<ClusterConfig>>,
    endpoints: TypeState<ClusterLoadAssignment, Arc<EndpointSet>>,
    secrets: TypeState<Secret, CompiledSecret>,
    upstreams: HashMap<Arc<str>, Arc<Upstream>>,
    /// DNS clusters by name, with their resolver tasks.
    dns: HashMap<Arc<str>, DnsState>,
    handles: Vec<ListenerHandle>,
    cds_applied: bool,
    lds_applied: bool,
    /// RDS/EDS names received at least once (readiness).
    rds_seen: BTreeSet<String>,
    eds_seen: BTreeSet<String>,
    shutting_down: bool,
}

/// A DNS cluster's resolution: the task resolving it and its latest result.
#[derive(Debug)]
struct DnsState {
    config: Arc<DnsConfig>,
    /// The assignment with the names resolved (for per-endpoint transport
    /// sockets) and its endpoints; `None` until the first round ends.
    resolved: Option<(ClusterLoadAssignment, Arc<EndpointSet>)>,
    task: tokio::task::AbortHandle,
}

impl Drop for DnsState {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The proxy's configuration state and the xDS entry points.
pub(crate) struct ConfigState {
    store: Mutex<Store>,
    pub data: Arc<DataPlane>,
    runtime: Handle,
    drain_timeout: Duration,
    readiness: watch::Sender<Readiness>,
    /// This state, for the DNS tasks (which must not keep it alive).
    me: Weak<ConfigState>,
    resolver: Arc<dyn Resolver>,
}

/// A read-only view of the applied resources, for `/config_dump`.
#[derive(Debug, Clone, Default)]
pub struct Dump {
    pub listeners: (String, Vec<Applied<Listener, ()>>),
    pub routes: (String, Vec<Applied<RouteConfiguration, ()>>),
    pub clusters: (String, Vec<Applied<Cluster, ()>>),
    pub endpoints: (String, Vec<Applied<ClusterLoadAssignment, ()>>),
    pub secrets: (String, Vec<Applied<Secret, ()>>),
}

fn strip<P: Clone, C>(t: &TypeState<P, C>) -> (String, Vec<Applied<P, ()>>) {
    (
        t.version.clone(),
        t.resources
            .values()
            .map(|a| Applied {
                proto: a.proto.clone(),
                compiled: (),
                version: a.version.clone(),
                last_updated: a.last_updated,
            })
            .collect(),
    )
}

impl ConfigState {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        stats: Arc<Stats>,
        observer: Option<Arc<dyn RequestObserver>>,
        original_dst: Arc<dyn OriginalDst>,
        secrets: Arc<Secrets>,
        resolver: Arc<dyn Resolver>,
        runtime: Handle,
        drain_timeout: Duration,
    ) -> Arc<ConfigState> {
        Arc::new_cyclic(|me| ConfigState {
            me: me.clone(),
            resolver,
            store: Mutex::new(Store::default()),
            data: Arc::new(DataPlane {
                snapshot: ArcSwap::from_pointee(Snapshot::default()),
                stats,
                observer,
                handoff: ArcSwap::from_pointee(HandoffTable::default()),
                original_dst,
                secrets,
            }),
            runtime,
            drain_timeout,
            readiness: watch::channel(Readiness::PreInitializing).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn readiness(&self) -> watch::Receiver<Readiness> {
        self.readiness.subscribe()
    }

    pub(crate) fn dump(&self) -> Dump {
        let s = self.lock();
        Dump {
            listeners: strip(&s.listeners),
            routes: strip(&s.routes),
            clusters: strip(&s.clusters),
            endpoints: strip(&s.endpoints),
            secrets: strip(&s.secrets),
        }
    }

    /// Bound addresses of the running listeners that bind, by listener name.
    pub(crate) fn listener_addresses(&self) -> Vec<(String, SocketAddr)> {
        self.lock()
            .handles
            .iter()
            .filter_map(|h| h.local.map(|a| (h.name().to_string(), a)))
            .collect()
    }

    /// Every listener with its bound address, or its configured one when it
    /// does not bind.
    pub(crate) fn all_listener_addresses(&self) -> Vec<(String, SocketAddr)> {
        self.lock()
            .handles
            .iter()
            .map(|h| (h.name().to_string(), h.local.unwrap_or(h.configured)))
            .collect()
    }

    /// Applies one state-of-the-world update. On error nothing changes.
    pub(crate) fn apply(
        &self,
        type_url: &str,
        version: &str,
        resources: Vec<Any>,
    ) -> Result<(), String> {
        let stats = &self.data.stats;
        let xstats: &XdsStats = match type_url {
            type_url::CLUSTER => &stats.cds,
            type_url::ENDPOINT => &stats.eds,
            type_url::LISTENER => &stats.lds,
            type_url::ROUTE => &stats.rds,
            type_url::SECRET => &stats.sds,
            other => return Err(format!("resource type {other} is not supported")),
        };
        xstats.update_attempt.inc();
        let mut store = self.lock();
        if store.shutting_down {
            return Err("the proxy is shutting down".to_string());
        }
        let result = match type_url {
            type_url::CLUSTER => self.apply_clusters(&mut store, version, &resources),
            type_url::ENDPOINT => self.apply_endpoints(&mut store, version, &resources),
            type_url::LISTENER => self.apply_listeners(&mut store, version, &resources),
            type_url::SECRET => self.apply_secrets(&mut store, version, &resources),
            _ => self.apply_routes(&mut store, version, &resources),
        };
        match &result {
            Ok(()) => {
                xstats.update_success.inc();
                self.publish(&mut store);
            }
            Err(reason) => {
                xstats.update_rejected.inc();
                tracing::warn!(type_url, version, %reason, "rejected xDS update");
            }
        }
        result
    }

    /// Names this proxy needs for RDS (`type_url::ROUTE`) or EDS.
    pub(crate) fn wanted(&self, type_url: &str) -> Vec<String> {
        let store = self.lock();
        let set = match type_url {
            type_url::ROUTE => wanted_routes(&store),
            type_url::ENDPOINT => wanted_endpoints(&store),
            type_url::SECRET => wanted_secrets(&store),
            _ => BTreeSet::new(),
        };
        set.into_iter().collect()
    }

    fn apply_clusters(
        &self,
        store: &mut Store,
        version: &str,
        resources: &[Any],
    ) -> Result<(), String> {
        let decoded: Vec<Cluster> = decode_all(resources, "cluster")?;
        let mut errors = Vec::new();
        let mut compiled = Vec::with_capacity(decoded.len());
        for c in decoded {
            match ClusterConfig::compile(&c) {
                Ok(cfg) => match self.check_secrets("cluster", &cfg.name, &cfg.secret_refs()) {
                    Ok(()) => compiled.push((c, Arc::new(cfg))),
                    Err(e) => errors.push(e),
                },
                Err(e) => errors.push(e),
            }
        }
        check_errors(
            errors,
            compiled.iter().map(|(c, _)| c.name.as_str()),
            "cluster",
        )?;
        let resources = merge(&store.clusters, version, compiled, |c| c.name.clone());
        store.clusters = TypeState {
            version: version.to_string(),
            resources,
        };
        store.cds_applied = true;
        self.sync_dns(store);
        // Endpoint data of clusters that went away is not needed any more.
        let wanted = wanted_endpoints(store);
        store
            .endpoints
            .resources
            .retain(|name, _| wanted.contains(name));
        self.prune_secrets(store);
        Ok(())
    }

    /// Starts resolving new or changed DNS clusters and stops resolving the
    /// ones gone; unchanged clusters keep their task and last result.
    fn sync_dns(&self, store: &mut Store) {
        let wanted: HashMap<Arc<str>, Arc<DnsConfig>> = store
            .clusters
            .resources
            .values()
            .filter_map(|a| match &a.compiled.discovery {
                Discovery::Dns(d) => Some((a.compiled.name.clone(), d.clone())),
                _ => None,
            })
            .collect();
        store
            .dns
            .retain(|name, st| wanted.get(name).is_some_and(|d| **d == *st.config));
        for (name, config) in wanted {
            if store.dns.contains_key(&name) {
                continue;
            }
            let me = self.me.clone();
            let task = self.runtime.spawn(crate::upstream::dns::run(
                self.resolver.clone(),
                name.clone(),
                config.clone(),
                {
                    let name = name.clone();
                    let config = config.clone();
                    move |r: &Resolutions| {
                        me.upgrade()
                            .is_some_and(|state| state.dns_resolved(&name, &config, r))
                    }
                },
            ));
            store.dns.insert(
                name,
                DnsState {
                    config,
                    resolved: None,
                    task: task.abort_handle(),
                },
            );
        }
    }

    /// Takes one resolution round of a DNS cluster; republishes when its
    /// endpoints changed. False once the cluster (in this form) is gone.
    fn dns_resolved(&self, name: &Arc<str>, config: &Arc<DnsConfig>, r: &Resolutions) -> bool {
        let mut store = self.lock();
        if store.shutting_down {
            return false;
        }
        let Some(st) = store.dns.get_mut(name) else {
            return false;
        };
        if !Arc::ptr_eq(&st.config, config) {
            return false;
        }
        let cla = config.resolved_assignment(&r.addresses);
        if st.resolved.as_ref().is_some_and(|(old, _)| *old == cla) {
            return true;
        }
        match config.endpoints(name, &cla) {
            Ok(set) => {
                tracing::debug!(cluster = %name, hosts = set.endpoints.len(), "DNS cluster hosts updated");
                st.resolved = Some((cla, Arc::new(set)));
            }
            Err(e) => {
                tracing::warn!(cluster = %name, error = %e, "resolved endpoints refused");
                return true;
            }
        }
        self.publish(&mut store);
        true
    }

    /// The workload secrets exist only when the proxy has a certificate
    /// manager; without one, resources naming them cannot work.
    fn check_secrets(&self, kind: &str, name: &str, refs: &[SecretRef]) -> Result<(), ConfigError> {
        if self.data.secrets.identity().is_some() {
            return Ok(());
        }
        match refs
            .iter()
            .find(|r| matches!(r, SecretRef::Workload | SecretRef::RootCa))
        {
            None => Ok(()),
            Some(r) => Err(ConfigError {
                resource: format!("{kind} {name}"),
                field: "transport_socket".to_string(),
                problem: crate::config::Problem::Invalid(format!(
                    "SDS secret {:?} is the workload certificate, and this proxy has none (start it with a CA address, or give it an identity)",
                    r.name()
                )),
            }),
        }
    }

    fn apply_secrets(
        &self,
        store: &mut Store,
        version: &str,
        resources: &[Any],
    ) -> Result<(), String> {
        let decoded: Vec<Secret> = decode_all(resources, "secret")?;
        let mut errors = Vec::new();
        let mut compiled = Vec::with_capacity(decoded.len());
        for s in decoded {
            match compile_secret(&s) {
                Ok(c) => compiled.push((s, c)),
                Err(e) => errors.push(e),
            }
        }
        check_errors(
            errors,
            compiled.iter().map(|(s, _)| s.name.as_str()),
            "secret",
        )?;
        // Like EDS, not a wildcard type: resources left out stay as they were.
        for (proto, secret) in compiled {
            upsert(
                &mut store.secrets,
                version,
                proto.name.clone(),
                proto,
                secret,
            );
        }
        store.secrets.version = version.to_string();
        self.publish_secrets(store);
        Ok(())
    }

    /// Forgets secrets no longer referenced, and republishes if any went.
    fn prune_secrets(&self, store: &mut Store) {
        let wanted = wanted_secrets(store);
        let before = store.secrets.resources.len();
        store
            .secrets
            .resources
            .retain(|name, _| wanted.contains(name));
        if store.secrets.resources.len() != before {
            self.publish_secrets(store);
        }
    }

    /// Hands the secrets still referenced to the data path.
    fn publish_secrets(&self, store: &mut Store) {
        let wanted = wanted_secrets(store);
        store
            .secrets
            .resources
            .retain(|name, _| wanted.contains(name));
        let map = store
            .secrets
            .resources
            .iter()
            .map(|(name, a)| (Arc::from(name.as_str()), a.compiled.clone()))
            .collect();
        self.data.secrets.set_ads(map);
    }

    fn apply_endpoints(
        &self,
        store: &mut Store,
        version: &str,
        resources: &[Any],
    ) -> Result<(), String> {
        let decoded: Vec<ClusterLoadAssignment> = decode_all(resources, "cluster_load_assignment")?;
        let mut errors = Vec::new();
        let mut compiled = Vec::with_capacity(decoded.len());
        for c in decoded {
            match EndpointSet::compile(&c) {
                Ok(set) => compiled.push((c, Arc::new(set))),
                Err(e) => errors.push(e),
            }
        }
        check_errors(
            errors,
            compiled.iter().map(|(c, _)| c.cluster_name.as_str()),
            "cluster_load_assignment",
        )?;
        // EDS is not a wildcard type: an update carries the requested names,
        // so resources it omits stay as they were.
        for (proto, set) in compiled {
            store.eds_seen.insert(proto.cluster_name.clone());
            upsert(
                &mut store.endpoints,
                version,
                proto.cluster_name.clone(),
                proto,
                set,
            );
        }
        store.endpoints.version = version.to_string();
        Ok(())
    }

    fn apply_routes(
        &self,
        store: &mut Store,
        version: &str,
        resources: &[Any],
    ) -> Result<(), String> {
        let decoded: Vec<RouteConfiguration> = decode_all(resources, "route_configuration")?;
        let mut errors = Vec::new();
        let mut compiled = Vec::with_capacity(decoded.len());
        for r in decoded {
            match RouteTable::compile(&r) {
                Ok(t) => compiled.push((r, Arc::new(t))),
                Err(e) => errors.push(e),
            }
        }
        check_errors(
            errors,
            compiled.iter().map(|(r, _)| r.name.as_str()),
            "route_configuration",
        )?;
        for (proto, table) in compiled {
            store.rds_seen.insert(proto.name.clone());
            upsert(&mut store.routes, version, proto.name.clone(), proto, table);
        }
        store.routes.version = version.to_string();
        Ok(())
    }

    fn apply_listeners(
        &self,
        store: &mut Store,
        version: &str,
        resources: &[Any],
    ) -> Result<(), String> {
        let decoded: Vec<Listener> = decode_all(resources, "listener")?;
        let mut errors = Vec::new();
        let mut compiled = Vec::with_capacity(decoded.len());
        for l in decoded {
            match ListenerConfig::compile(&l) {
                Ok(cfg) => match self.check_secrets("listener", &cfg.name, &cfg.secret_refs()) {
                    Ok(()) => compiled.push((l, Arc::new(cfg))),
                    Err(e) => errors.push(e),
                },
                Err(e) => errors.push(e),
            }
        }
        check_errors(
            errors,
            compiled.iter().map(|(l, _)| l.name.as_str()),
            "listener",
        )?;
        // Bound listeners cannot share an address, and neither can the
        // listeners that receive hand-offs.
        let mut by_address: HashMap<(SocketAddr, bool), &str> = HashMap::new();
        for (l, cfg) in &compiled {
            if cfg.address.port() != 0
                && let Some(other) = by_address.insert((cfg.address, cfg.bind_to_port), &l.name)
            {
                return Err(format!(
                    "listener {}: address {} is already used by listener {other}",
                    l.name, cfg.address
                ));
            }
        }
        // Bind every new address before changing anything, so that a bind
        // failure rejects the whole update.
        let mut old: Vec<Option<ListenerHandle>> = std::mem::take(&mut store.handles)
            .into_iter()
            .map(Some)
            .collect();
        let mut plan: Vec<(usize, Option<usize>, Option<std::net::TcpListener>)> = Vec::new();
        let mut bind_errors = Vec::new();
        for (i, (l, cfg)) in compiled.iter().enumerate() {
            // Same address: keep the socket and swap the config in place.
            let reuse = old.iter().position(|h| {
                h.as_ref().is_some_and(|h| {
                    h.configured == cfg.address
                        && h.is_bound() == cfg.bind_to_port
                        && (cfg.address.port() != 0 || *h.name() == *l.name)
                })
            });
            match reuse {
                Some(j) if !plan.iter().any(|(_, r, _)| *r == Some(j)) => {
                    plan.push((i, Some(j), None))
                }
                _ if !cfg.bind_to_port => plan.push((i, None, None)),
                _ => match listener::bind(cfg.address) {
                    Ok(sock) => plan.push((i, None, Some(sock))),
                    Err(e) => bind_errors.push(format!(
                        "listener {}: cannot bind {}: {e}",
                        l.name, cfg.address
                    )),
                },
            }
        }
        if !bind_errors.is_empty() {
            store.handles = old.into_iter().flatten().collect();
            return Err(bind_errors.join("; "));
        }
        let mut handles = Vec::with_capacity(compiled.len());
        for (i, reuse, sock) in plan {
            let cfg = compiled[i].1.clone();
            let active = ActiveListener::new(cfg.clone(), &self.data);
            if let Some(j) = reuse {
                if let Some(h) = old[j].take() {
                    h.update(active);
                    handles.push(h);
                }
            } else {
                match ListenerHandle::start(
                    sock,
                    cfg.address,
                    active,
                    self.data.clone(),
                    &self.runtime,
                    self.drain_timeout,
                ) {
                    Ok(h) => {
                        match h.local {
                            Some(local) => {
                                tracing::info!(listener = %cfg.name, address = %local, "listener started")
                            }
                            None => {
                                tracing::info!(listener = %cfg.name, address = %cfg.address, "listener added (bind_to_port: false)")
                            }
                        }
                        handles.push(h);
                    }
                    Err(e) => {
                        tracing::error!(listener = %cfg.name, error = %e, "cannot start listener")
                    }
                }
            }
        }
        let mut table = HandoffTable::default();
        for h in handles.iter().filter(|h| !h.is_bound()) {
            // Addresses are unique among these (checked above).
            let _ = table.insert(h.configured, h.shared.clone());
        }
        self.data.handoff.store(Arc::new(table));
        for h in old.into_iter().flatten() {
            tracing::info!(listener = %h.name(), "listener removed, draining");
            self.runtime.spawn(h.drain());
        }
        store.handles = handles;
        let resources = merge(&store.listeners, version, compiled, |l| l.name.clone());
        store.listeners = TypeState {
            version: version.to_string(),
            resources,
        };
        store.lds_applied = true;
        let wanted = wanted_routes(store);
        store
            .routes
            .resources
            .retain(|name, _| wanted.contains(name));
        self.prune_secrets(store);
        Ok(())
    }

    /// Rebuilds and publishes the snapshot, and updates readiness.
    fn publish(&self, store: &mut Store) {
        let routes = store
            .routes
            .resources
            .iter()
            .map(|(name, a)| (Arc::from(name.as_str()), a.compiled.clone()))
            .collect();
        let mut clusters = HashMap::with_capacity(store.clusters.resources.len());
        let empty = EndpointSet::default();
        let mut upstreams = HashMap::with_capacity(store.clusters.resources.len());
        for a in store.clusters.resources.values() {
            let cfg = &a.compiled;
            let upstream = store.upstreams.get(&cfg.name).cloned().unwrap_or_else(|| {
                Arc::new(Upstream::new(
                    cfg.name.clone(),
                    self.data.stats.cluster(&cfg.name),
                    self.data.secrets.clone(),
                ))
            });
            let resolved = match &cfg.discovery {
                Discovery::Dns(_) => store.dns.get(&cfg.name).and_then(|d| d.resolved.as_ref()),
                _ => None,
            };
            let endpoints: &EndpointSet = match &cfg.discovery {
                Discovery::Static(set) => set,
                Discovery::OriginalDst { .. } => &empty,
                Discovery::Eds { service_name } => store
                    .endpoints
                    .resources
                    .get(&**service_name)
                    .map(|a| &*a.compiled)
                    .unwrap_or(&empty),
                Discovery::Dns(_) => resolved.map(|(_, set)| &**set).unwrap_or(&empty),
            };
            let cla = match &cfg.discovery {
                Discovery::Static(_) => a.proto.load_assignment.as_ref(),
                Discovery::Eds { service_name } => store
                    .endpoints
                    .resources
                    .get(&**service_name)
                    .map(|a| &a.proto),
                Discovery::Dns(_) => resolved.map(|(cla, _)| cla),
                // Original destinations carry no metadata.
                Discovery::OriginalDst { .. } => None,
            };
            let transports = endpoint_transports(cfg, cla);
            let entry = ClusterEntry::new(cfg.clone(), endpoints, upstream.clone(), transports);
            clusters.insert(cfg.name.clone(), Arc::new(entry));
            upstreams.insert(cfg.name.clone(), upstream);
        }
        store.upstreams = upstreams;
        self.data
            .snapshot
            .store(Arc::new(Snapshot { routes, clusters }));
        self.update_readiness(store);
    }

    fn update_readiness(&self, store: &Store) {
        let current = *self.readiness.borrow();
        if current == Readiness::Live {
            // Like Envoy, once initialized a proxy stays live.
            return;
        }
        let next = if store.cds_applied
            && store.lds_applied
            && wanted_routes(store).is_subset(&store.rds_seen)
            && wanted_endpoints(store).is_subset(&store.eds_seen)
            // Like Envoy's cluster warming: DNS clusters wait for their first
            // resolution round, whatever it found.
            && store.dns.values().all(|d| d.resolved.is_some())
        {
            Readiness::Live
        } else {
            Readiness::Initializing
        };
        if next != current {
            if next == Readiness::Live {
                self.data.stats.server_live.set(1);
                tracing::info!("all initial configuration received: live");
            }
            self.readiness.send_replace(next);
        }
    }

    /// Stops every listener, drains their connections, and refuses further updates.
    pub(crate) async fn drain_listeners(&self) {
        let handles = {
            let mut store = self.lock();
            store.shutting_down = true;
            store.dns.clear();
            std::mem::take(&mut store.handles)
        };
        // The table refers back to the listeners: emptying it ends hand-offs
        // and lets everything be freed.
        self.data.handoff.store(Arc::new(HandoffTable::default()));
        self.data.stats.server_live.set(0);
        futures::future::join_all(handles.into_iter().map(|h| h.drain())).await;
    }
}

fn wanted_routes(store: &Store) -> BTreeSet<String> {
    store
        .listeners
        .resources
        .values()
        .flat_map(|a| a.compiled.rds_names().map(|n| n.to_string()))
        .collect()
}

fn wanted_secrets(store: &Store) -> BTreeSet<String> {
    let listeners = store
        .listeners
        .resources
        .values()
        .flat_map(|a| a.compiled.secret_refs());
    let clusters = store
        .clusters
        .resources
        .values()
        .flat_map(|a| a.compiled.secret_refs());
    listeners
        .chain(clusters)
        .filter_map(|r| match r {
            SecretRef::Ads(name) => Some(name.to_string()),
            SecretRef::Workload | SecretRef::RootCa => None,
        })
        .collect()
}

/// The transport socket of each endpoint of a cluster whose sockets depend
/// on endpoint metadata (`transport_socket_matches`), by address; `None`
/// when the cluster has one socket for all (or none).
fn endpoint_transports(
    cfg: &ClusterConfig,
    cla: Option<&ClusterLoadAssignment>,
) -> crate::upstream::Transports {
    use crate::config::tls::endpoint_match_metadata;
    use crate::upstream::Transports;
    let Some(t) = &cfg.transport else {
        return Transports::Plain;
    };
    if !t.has_matches() {
        return Transports::All(t.default.clone());
    }
    let mut by_address: HashMap<SocketAddr, Option<Arc<UpstreamTls>>> = HashMap::new();
    for lb in cla
        .iter()
        .flat_map(|c| &c.endpoints)
        .flat_map(|l| &l.lb_endpoints)
    {
        let Some(pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(ep)) =
            &lb.host_identifier
        else {
            continue;
        };
        let Some(pb::envoy::config::core::v3::address::Address::SocketAddress(sa)) =
            ep.address.as_ref().and_then(|a| a.address.as_ref())
        else {
            continue;
        };
        let (
            Ok(ip),
            Some(pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(port)),
        ) = (
            sa.address.parse::<std::net::IpAddr>(),
            sa.port_specifier.clone(),
        )
        else {
            continue;
        };
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        let socket = t
            .select(endpoint_match_metadata(lb.metadata.as_ref()))
            .cloned();
        by_address
            .entry(SocketAddr::new(ip, port))
            .or_insert(socket);
    }
    Transports::ByAddress(by_address, t.select(None).cloned())
}

fn wanted_endpoints(store: &Store) -> BTreeSet<String> {
    store
        .clusters
        .resources
        .values()
        .filter_map(|a| a.compiled.eds_service_name().map(|n| n.to_string()))
        .collect()
}

fn decode_all<M: prost::Message + prost::Name + Default>(
    resources: &[Any],
    kind: &str,
) -> Result<Vec<M>, String> {
    let expected = M::full_name();
    resources
        .iter()
        .enumerate()
        .map(|(i, any)| {
            if type_name(&any.type_url) != expected {
                return Err(format!(
                    "{kind} resource {i}: expected {expected}, got {}",
                    any.type_url
                ));
            }
            M::decode(any.value.as_slice())
                .map_err(|e| format!("{kind} resource {i}: cannot decode: {e}"))
        })
        .collect()
}

/// Joins every compile error, and refuses duplicate names.
fn check_errors<'a>(
    errors: Vec<ConfigError>,
    names: impl Iterator<Item = &'a str>,
    kind: &str,
) -> Result<(), String> {
    let mut messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    let mut seen = BTreeSet::new();
    for name in names {
        if !seen.insert(name) {
            messages.push(format!("{kind} {name}: duplicate name in the update"));
        }
    }
    if messages.is_empty() {
        Ok(())
    } else {
        Err(messages.join("; "))
    }
}

/// A wildcard update's new resource map, keeping the version and timestamp
/// of resources whose content did not change.
fn merge<P: PartialEq, C>(
    prev: &TypeState<P, C>,
    version: &str,
    compiled: Vec<(P, C)>,
    name: impl Fn(&P) -> String,
) -> BTreeMap<String, Applied<P, C>> {
    let now = SystemTime::now();
    compiled
        .into_iter()
        .map(|(proto, compiled)| {
            let n = name(&proto);
            let (version, last_updated) = match prev.resources.get(&n) {
                Some(old) if old.proto == proto => (old.version.clone(), old.last_updated),
                _ => (version.to_string(), now),
            };
            (
                n,
                Applied {
                    proto,
                    compiled,
                    version,
                    last_updated,
                },
            )
        })
        .collect()
}

fn upsert<P: PartialEq, C>(
    state: &mut TypeState<P, C>,
    version: &str,
    name: String,
    proto: P,
    compiled: C,
) {
    if let Some(old) = state.resources.get(&name)
        && old.proto == proto
    {
        return;
    }
    state.resources.insert(
        name,
        Applied {
            proto,
            compiled,
            version: version.to_string(),
            last_updated: SystemTime::now(),
        },
    );
}
