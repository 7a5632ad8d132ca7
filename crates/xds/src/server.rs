//! State-of-the-world Aggregated Discovery Service.
//!
//! The server knows nothing of Istio: a [`Generator`] identifies each
//! connecting proxy from its `Node` and computes its resources on demand. A
//! config change is announced by bumping the generation on a `watch` channel;
//! every stream then regenerates the types its proxy subscribed to and sends
//! those whose content changed. ACKs and NACKs are recorded per proxy and type
//! in [`SyncStatus`], which the pilot renders at `/debug/syncz`.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::pb::envoy::config::core::v3::Node;
use crate::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use crate::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use crate::pb::google::protobuf::Any;
use crate::type_url;

/// Largest message either side accepts; a mesh of thousands of services
/// produces CDS/EDS responses well beyond tonic's 4 MiB default.
pub const MAX_MESSAGE_SIZE: usize = 256 * 1024 * 1024;

/// One named resource of a response.
#[derive(Debug, Clone)]
pub struct Resource {
    pub name: String,
    pub body: Any,
}

/// Computes the configuration of each proxy.
pub trait Generator: Send + Sync + 'static {
    /// What the generator remembers about a connected proxy.
    type Proxy: Send + Sync + 'static;

    /// Identifies a proxy from the node it sent; an error refuses the stream.
    fn identify(&self, node: &Node) -> Result<Self::Proxy, String>;

    /// The resources of `type_url` for `proxy`. `names` is empty for a
    /// wildcard subscription (all listeners, all clusters).
    fn generate(&self, proxy: &Self::Proxy, type_url: &str, names: &[String]) -> Vec<Resource>;
}

/// The ADS gRPC service; wrap it with [`AdsServer::into_service`].
pub struct AdsServer<G: Generator> {
    generator: Arc<G>,
    generation: watch::Receiver<u64>,
    status: SyncStatus,
}

impl<G: Generator> AdsServer<G> {
    pub fn new(generator: Arc<G>, generation: watch::Receiver<u64>, status: SyncStatus) -> Self {
        Self {
            generator,
            generation,
            status,
        }
    }

    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// Serves ADS (plaintext gRPC) on `listener` until the connection
    /// acceptor fails.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .add_service(self.into_service())
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<G: Generator> AggregatedDiscoveryService for AdsServer<G> {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let connection = Connection {
            generator: self.generator.clone(),
            generation: self.generation.clone(),
            status: self.status.clone(),
            id: NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
            tx,
            subscriptions: HashMap::new(),
        };
        tokio::spawn(connection.run(request.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Err(Status::unimplemented(
            "mizzen-pilot serves state-of-the-world ADS only; configure api_type GRPC",
        ))
    }
}

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);
static NEXT_NONCE: AtomicU64 = AtomicU64::new(1);

#[derive(Default)]
struct Subscription {
    names: Vec<String>,
    sent_nonce: Option<String>,
    sent_hash: Option<u64>,
}

struct Connection<G: Generator> {
    generator: Arc<G>,
    generation: watch::Receiver<u64>,
    status: SyncStatus,
    id: u64,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    subscriptions: HashMap<String, Subscription>,
}

impl<G: Generator> Connection<G> {
    async fn run(mut self, mut inbound: Streaming<DiscoveryRequest>) {
        let first = match inbound.message().await {
            Ok(Some(first)) => first,
            _ => return,
        };
        let Some(node) = first.node.clone() else {
            let _ = self
                .tx
                .send(Err(Status::invalid_argument(
                    "the first DiscoveryRequest must carry the node",
                )))
                .await;
            return;
        };
        let proxy = match self.generator.identify(&node) {
            Ok(proxy) => proxy,
            Err(reason) => {
                tracing::warn!(node = %node.id, %reason, "refused xDS connection");
                let _ = self.tx.send(Err(Status::invalid_argument(reason))).await;
                return;
            }
        };
        tracing::info!(node = %node.id, connection = self.id, "proxy connected");
        self.status.connected(self.id, &node.id);
        // Mark the current generation as seen: the first requests are answered
        // with it anyway.
        self.generation.borrow_and_update();
        let mut pending = Some(first);
        loop {
            let request = match pending.take() {
                Some(request) => Some(request),
                None => {
                    tokio::select! {
                        message = inbound.message() => match message {
                            Ok(Some(request)) => Some(request),
                            Ok(None) => break,
                            Err(status) => {
                                tracing::debug!(node = %node.id, %status, "xDS stream error");
                                break;
                            }
                        },
                        changed = self.generation.changed() => {
                            if changed.is_err() {
                                break;
                            }
                            None
                        }
                    }
                }
            };
            let delivered = match request {
                Some(request) => self.on_request(&proxy, request).await,
                None => self.push(&proxy).await,
            };
            if !delivered {
                break;
            }
        }
        tracing::info!(node = %node.id, connection = self.id, "proxy disconnected");
        self.status.disconnected(self.id);
    }

    /// Handles one request; returns false when the stream is gone.
    async fn on_request(&mut self, proxy: &G::Proxy, request: DiscoveryRequest) -> bool {
        let type_url = request.type_url.clone();
        let subscription = self.subscriptions.entry(type_url.clone()).or_default();
        if !request.response_nonce.is_empty() {
            if subscription.sent_nonce.as_deref() != Some(request.response_nonce.as_str()) {
                // A reply to a response that has since been superseded.
                return true;
            }
            match &request.error_detail {
                Some(error) => {
                    tracing::warn!(
                        connection = self.id,
                        r#type = type_url::short_name(&type_url),
                        reason = %error.message,
                        "proxy rejected config (NACK)"
                    );
                    self.status
                        .nacked(self.id, &type_url, &request.version_info, &error.message);
                }
                None => self.status.acked(self.id, &type_url, &request.version_info),
            }
            if subscription.names == request.resource_names {
                return true;
            }
        }
        subscription.names = request.resource_names;
        self.send(proxy, &type_url, true).await
    }

    async fn push(&mut self, proxy: &G::Proxy) -> bool {
        for type_url in type_url::PUSH_ORDER {
            if self.subscriptions.contains_key(type_url) && !self.send(proxy, type_url, false).await
            {
                return false;
            }
        }
        true
    }

    /// Sends the current resources of one type, unless nothing changed since
    /// the last response and `force` is false.
    async fn send(&mut self, proxy: &G::Proxy, type_url: &str, force: bool) -> bool {
        let generation = *self.generation.borrow();
        let Some(subscription) = self.subscriptions.get_mut(type_url) else {
            return true;
        };
        let wildcard = matches!(type_url, type_url::LISTENER | type_url::CLUSTER);
        if subscription.names.is_empty() && !wildcard {
            return true;
        }
        let resources = self
            .generator
            .generate(proxy, type_url, &subscription.names);
        let hash = content_hash(&resources);
        if !force && subscription.sent_hash == Some(hash) {
            return true;
        }
        let nonce = NEXT_NONCE.fetch_add(1, Ordering::Relaxed).to_string();
        let version = generation.to_string();
        let names: Vec<String> = resources.iter().map(|r| r.name.clone()).collect();
        subscription.sent_nonce = Some(nonce.clone());
        subscription.sent_hash = Some(hash);
        self.status.sent(self.id, type_url, &version, names);
        let response = DiscoveryResponse {
            version_info: version,
            resources: resources.into_iter().map(|r| r.body).collect(),
            type_url: type_url.to_string(),
            nonce,
            ..Default::default()
        };
        self.tx.send(Ok(response)).await.is_ok()
    }
}

fn content_hash(resources: &[Resource]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for resource in resources {
        resource.name.hash(&mut hasher);
        resource.body.type_url.hash(&mut hasher);
        resource.body.value.hash(&mut hasher);
    }
    hasher.finish()
}

/// What each connected proxy was sent and what it acknowledged.
#[derive(Clone, Default)]
pub struct SyncStatus {
    connections: Arc<Mutex<BTreeMap<u64, ConnectionStatus>>>,
}

#[derive(Debug, Clone)]
pub struct ConnectionStatus {
    pub node_id: String,
    pub connected_at: SystemTime,
    pub types: BTreeMap<&'static str, TypeStatus>,
}

#[derive(Debug, Clone, Default)]
pub struct TypeStatus {
    pub sent_version: String,
    pub sent_resources: Vec<String>,
    pub acked_version: Option<String>,
    /// The version and reason of the last NACK, cleared by a later ACK.
    pub nack: Option<(String, String)>,
}

impl TypeStatus {
    /// Istio's vocabulary for `proxy-status`.
    pub fn state(&self) -> &'static str {
        if self.nack.is_some() {
            "NACKED"
        } else if self.acked_version.as_deref() == Some(self.sent_version.as_str()) {
            "SYNCED"
        } else if self.sent_version.is_empty() {
            "NOT SENT"
        } else {
            "STALE"
        }
    }
}

impl SyncStatus {
    fn update(&self, id: u64, f: impl FnOnce(&mut ConnectionStatus)) {
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(connection) = connections.get_mut(&id) {
            f(connection);
        }
    }

    fn connected(&self, id: u64, node_id: &str) {
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.insert(
            id,
            ConnectionStatus {
                node_id: node_id.to_string(),
                connected_at: SystemTime::now(),
                types: BTreeMap::new(),
            },
        );
    }

    fn disconnected(&self, id: u64) {
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.remove(&id);
    }

    fn sent(&self, id: u64, type_url: &str, version: &str, names: Vec<String>) {
        self.update(id, |c| {
            let status = c.types.entry(type_url::short_name(type_url)).or_default();
            status.sent_version = version.to_string();
            status.sent_resources = names;
        });
    }

    fn acked(&self, id: u64, type_url: &str, version: &str) {
        self.update(id, |c| {
            let status = c.types.entry(type_url::short_name(type_url)).or_default();
            status.acked_version = Some(version.to_string());
            status.nack = None;
        });
    }

    fn nacked(&self, id: u64, type_url: &str, version: &str, reason: &str) {
        self.update(id, |c| {
            let status = c.types.entry(type_url::short_name(type_url)).or_default();
            status.nack = Some((version.to_string(), reason.to_string()));
        });
    }

    /// A copy of the current state, ordered by connection.
    pub fn snapshot(&self) -> Vec<ConnectionStatus> {
        let connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.values().cloned().collect()
    }

    /// The `/debug/syncz` document.
    pub fn to_json(&self) -> serde_json::Value {
        let proxies: Vec<serde_json::Value> = self
            .snapshot()
            .into_iter()
            .map(|c| {
                let types: serde_json::Map<String, serde_json::Value> = c
                    .types
                    .iter()
                    .map(|(short, t)| {
                        let mut entry = serde_json::json!({
                            "state": t.state(),
                            "sent": t.sent_version,
                            "acked": t.acked_version,
                            "resources": t.sent_resources.len(),
                        });
                        if let Some((version, reason)) = &t.nack {
                            entry["nack"] =
                                serde_json::json!({"version": version, "reason": reason});
                        }
                        (short.to_string(), entry)
                    })
                    .collect();
                let since = c
                    .connected_at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default();
                serde_json::json!({
                    "proxy": c.node_id,
                    "connected_at_unix": since,
                    "types": types,
                })
            })
            .collect();
        serde_json::Value::Array(proxies)
    }
}
