//! State-of-the-world ADS client, as a proxy runs it.
//!
//! The client subscribes to all clusters and listeners, hands each response to
//! an [`XdsHandler`] and ACKs or NACKs it with the handler's reason. After each
//! update it asks the handler which route configurations and cluster load
//! assignments it now needs and changes those subscriptions. A broken stream is
//! reopened with backoff, resubscribing with the versions last accepted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::pb::envoy::config::core::v3::Node as NodeProto;
use crate::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use crate::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use crate::pb::google::protobuf::Any;
use crate::pb::google::rpc::Status as RpcStatus;
use crate::server::MAX_MESSAGE_SIZE;
use crate::{structs, type_url};

/// How a proxy introduces itself to the pilot.
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub id: String,
    pub cluster: String,
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl Node {
    pub fn to_proto(&self) -> NodeProto {
        NodeProto {
            id: self.id.clone(),
            cluster: self.cluster.clone(),
            metadata: Some(structs::to_struct(&self.metadata)),
            user_agent_name: "mizzen-proxy".to_string(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The pilot's xDS address, e.g. `http://127.0.0.1:15010`.
    pub address: String,
    pub node: Node,
}

/// Receives configuration updates.
pub trait XdsHandler: Send + Sync + 'static {
    /// A complete state-of-the-world update for one type. `Ok` is ACKed;
    /// `Err(reason)` is NACKed and the handler keeps its last good config.
    fn apply(&self, type_url: &str, version: &str, resources: Vec<Any>) -> Result<(), String>;

    /// Names this handler needs of a non-wildcard type (route configuration
    /// names for RDS, cluster names for EDS); asked after every update.
    fn wanted(&self, type_url: &str) -> Vec<String>;
}

#[derive(Default, Clone)]
struct TypeState {
    names: Vec<String>,
    accepted_version: String,
    nonce: String,
}

/// Runs the client until the process ends, reconnecting as needed.
pub async fn run_ads(config: ClientConfig, handler: Arc<dyn XdsHandler>) {
    let mut state: HashMap<&'static str, TypeState> = HashMap::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        match run_stream(&config, handler.as_ref(), &mut state).await {
            Ok(()) => tracing::info!(address = %config.address, "xDS stream closed by the pilot"),
            Err(error) => {
                tracing::warn!(address = %config.address, %error, "xDS stream failed")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The subscription a type needs now, or None when it should not be asked.
fn subscription(handler: &dyn XdsHandler, type_url: &'static str) -> Option<Vec<String>> {
    match type_url {
        type_url::LISTENER | type_url::CLUSTER => Some(Vec::new()),
        _ => {
            let mut names = handler.wanted(type_url);
            names.sort();
            names.dedup();
            (!names.is_empty()).then_some(names)
        }
    }
}

fn request_for(
    node: &NodeProto,
    type_url: &str,
    state: &TypeState,
    error: Option<String>,
) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: state.accepted_version.clone(),
        node: Some(node.clone()),
        resource_names: state.names.clone(),
        type_url: type_url.to_string(),
        response_nonce: state.nonce.clone(),
        error_detail: error.map(|message| RpcStatus {
            // google.rpc.Code.INVALID_ARGUMENT, as Envoy reports rejected config.
            code: 3,
            message,
            details: Vec::new(),
        }),
        ..Default::default()
    }
}

async fn run_stream(
    config: &ClientConfig,
    handler: &dyn XdsHandler,
    state: &mut HashMap<&'static str, TypeState>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let channel = tonic::transport::Endpoint::from_shared(config.address.clone())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let node = config.node.to_proto();
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);

    // Resubscribe everything we had, plus clusters and listeners, with the
    // versions last accepted so the pilot can tell a reconnect from a start.
    for type_url in type_url::PUSH_ORDER {
        if let Some(names) = subscription(handler, type_url) {
            let entry = state.entry(type_url).or_default();
            entry.names = names;
            entry.nonce.clear();
            tx.send(request_for(&node, type_url, entry, None)).await?;
        }
    }
    let mut inbound = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    while let Some(response) = inbound.message().await? {
        handle_response(&node, handler, state, &tx, response).await?;
    }
    Ok(())
}

async fn handle_response(
    node: &NodeProto,
    handler: &dyn XdsHandler,
    state: &mut HashMap<&'static str, TypeState>,
    tx: &mpsc::Sender<DiscoveryRequest>,
    response: DiscoveryResponse,
) -> Result<(), mpsc::error::SendError<DiscoveryRequest>> {
    let Some(type_url) = type_url::PUSH_ORDER
        .into_iter()
        .find(|t| *t == response.type_url)
    else {
        tracing::warn!(type_url = %response.type_url, "ignoring a response of a type never asked for");
        return Ok(());
    };
    let result = handler.apply(type_url, &response.version_info, response.resources);
    let entry = state.entry(type_url).or_default();
    entry.nonce = response.nonce;
    let error = match result {
        Ok(()) => {
            entry.accepted_version = response.version_info;
            None
        }
        Err(reason) => {
            tracing::warn!(
                r#type = type_url::short_name(type_url),
                version = %response.version_info,
                %reason,
                "rejecting config"
            );
            Some(reason)
        }
    };
    tx.send(request_for(node, type_url, entry, error)).await?;

    // An update may reference new route configurations, clusters or secrets.
    for dependent in [type_url::ENDPOINT, type_url::ROUTE, type_url::SECRET] {
        let names = subscription(handler, dependent).unwrap_or_default();
        let entry = state.entry(dependent).or_default();
        if entry.names != names {
            entry.names = names;
            tx.send(request_for(node, dependent, entry, None)).await?;
        }
    }
    Ok(())
}
