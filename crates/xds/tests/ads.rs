//! The ADS server and client against each other: initial sync, pushes on a
//! generation bump, dependent subscriptions (EDS after CDS), NACK with the
//! handler's reason and recovery by a later ACK.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mizzen_xds::client::{ClientConfig, Node, XdsHandler, run_ads};
use mizzen_xds::pb::envoy::config::cluster::v3::Cluster;
use mizzen_xds::pb::envoy::config::core::v3::Node as NodeProto;
use mizzen_xds::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use mizzen_xds::pb::google::protobuf::Any;
use mizzen_xds::server::{AdsServer, Generator, Resource, SyncStatus};
use mizzen_xds::type_url;
use tokio::sync::watch;

/// Serves the cluster names in `clusters`; a name starting with `bad` is one
/// the test handler refuses.
struct TestGenerator {
    clusters: Mutex<Vec<String>>,
}

impl Generator for TestGenerator {
    type Proxy = String;

    fn identify(&self, node: &NodeProto) -> Result<String, String> {
        if node.id.is_empty() {
            return Err("empty node id".into());
        }
        Ok(node.id.clone())
    }

    fn generate(&self, _proxy: &String, type_url: &str, names: &[String]) -> Vec<Resource> {
        match type_url {
            type_url::CLUSTER => self
                .clusters
                .lock()
                .unwrap()
                .iter()
                .map(|name| Resource {
                    name: name.clone(),
                    body: mizzen_xds::pack(&Cluster {
                        name: name.clone(),
                        ..Default::default()
                    }),
                })
                .collect(),
            type_url::ENDPOINT => names
                .iter()
                .map(|name| Resource {
                    name: name.clone(),
                    body: mizzen_xds::pack(&ClusterLoadAssignment {
                        cluster_name: name.clone(),
                        ..Default::default()
                    }),
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Default)]
struct TestHandler {
    /// The last accepted cluster names.
    clusters: Mutex<Vec<String>>,
    endpoints: Mutex<Vec<String>>,
}

impl XdsHandler for TestHandler {
    fn apply(&self, type_url: &str, _version: &str, resources: Vec<Any>) -> Result<(), String> {
        match type_url {
            type_url::CLUSTER => {
                let clusters: Vec<Cluster> = resources
                    .iter()
                    .map(mizzen_xds::unpack::<Cluster>)
                    .collect::<Result<_, _>>()?;
                if let Some(bad) = clusters.iter().find(|c| c.name.starts_with("bad")) {
                    return Err(format!("cluster {}: refused by the test", bad.name));
                }
                *self.clusters.lock().unwrap() = clusters.into_iter().map(|c| c.name).collect();
                Ok(())
            }
            type_url::ENDPOINT => {
                let names = resources
                    .iter()
                    .map(|a| mizzen_xds::unpack::<ClusterLoadAssignment>(a).map(|c| c.cluster_name))
                    .collect::<Result<_, _>>()?;
                *self.endpoints.lock().unwrap() = names;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn wanted(&self, type_url: &str) -> Vec<String> {
        match type_url {
            type_url::ENDPOINT => self.clusters.lock().unwrap().clone(),
            _ => Vec::new(),
        }
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn syncs_pushes_nacks_and_recovers() {
    let generator = Arc::new(TestGenerator {
        clusters: Mutex::new(vec!["a".into()]),
    });
    let (generation, generation_rx) = watch::channel(1u64);
    let status = SyncStatus::default();
    let server = AdsServer::new(generator.clone(), generation_rx, status.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server_task = tokio::spawn(server.serve(listener));

    let handler = Arc::new(TestHandler::default());
    let client_task = tokio::spawn(run_ads(
        ClientConfig {
            address: format!("http://{address}"),
            node: Node {
                id: "sidecar~1.2.3.4~a.ns~ns.svc.cluster.local".into(),
                ..Default::default()
            },
        },
        handler.clone(),
    ));

    let state = |short: &str| {
        status
            .snapshot()
            .first()
            .and_then(|c| c.types.get(short).map(|t| t.state()))
    };
    eventually("CDS and EDS synced", || {
        state("CDS") == Some("SYNCED") && state("EDS") == Some("SYNCED")
    })
    .await;
    assert_eq!(*handler.endpoints.lock().unwrap(), vec!["a".to_string()]);

    // A push adds a cluster: the client asks for its endpoints too.
    generator.clusters.lock().unwrap().push("b".into());
    generation.send_replace(2);
    eventually("endpoints of the new cluster", || {
        *handler.endpoints.lock().unwrap() == vec!["a".to_string(), "b".to_string()]
    })
    .await;

    // A push the handler refuses: NACKed with its reason, last good kept.
    generator.clusters.lock().unwrap().push("bad-one".into());
    generation.send_replace(3);
    eventually("CDS NACKed", || state("CDS") == Some("NACKED")).await;
    let nack = status.snapshot()[0].types["CDS"].nack.clone().unwrap();
    assert_eq!(nack.1, "cluster bad-one: refused by the test");
    assert_eq!(
        *handler.clusters.lock().unwrap(),
        vec!["a".to_string(), "b".to_string()]
    );
    let syncz = status.to_json();
    assert_eq!(
        syncz[0]["types"]["CDS"]["nack"]["reason"],
        "cluster bad-one: refused by the test"
    );

    // Fixing the config clears the NACK.
    generator
        .clusters
        .lock()
        .unwrap()
        .retain(|c| !c.starts_with("bad"));
    generator.clusters.lock().unwrap().push("c".into());
    generation.send_replace(4);
    eventually("CDS synced again", || state("CDS") == Some("SYNCED")).await;
    assert_eq!(
        *handler.clusters.lock().unwrap(),
        vec!["a".to_string(), "b".to_string(), "c".to_string()]
    );

    client_task.abort();
    server_task.abort();
}
