//! Locality load balancing: the endpoints each proxy gets depend on where
//! it runs (priorities for failover, weights for distribute).

use std::collections::BTreeMap;
use std::path::PathBuf;

use mizzen_pilot::config::ConfigStore;
use mizzen_pilot::model::Model;
use mizzen_pilot::node::ProxyNode;
use mizzen_pilot::translate::generate;
use mizzen_xds::pb::envoy::config::cluster::v3::Cluster;
use mizzen_xds::pb::envoy::config::core::v3::{Locality, Node};
use mizzen_xds::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use mizzen_xds::type_url;

/// Backends of `hello` in five localities, and a client in region1/zone1.
const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: default}
spec:
  selector: {app: hello}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: mizzen.io/v1alpha1
kind: Workload
metadata: {name: client, namespace: default, labels: {app: client}}
spec: {address: 10.0.0.1, locality: region1/zone1/rack1}
---
apiVersion: mizzen.io/v1alpha1
kind: Workload
metadata: {name: same-rack, namespace: default, labels: {app: hello}}
spec: {address: 10.0.1.1, locality: region1/zone1/rack1}
---
apiVersion: mizzen.io/v1alpha1
kind: Workload
metadata: {name: other-rack, namespace: default, labels: {app: hello}}
spec: {address: 10.0.1.2, locality: region1/zone1/rack2}
---
apiVersion: mizzen.io/v1alpha1
kind: Workload
metadata: {name: other-zone, namespace: default, labels: {app: hello}}
spec: {address: 10.0.1.3, locality: region1/zone2}
---
apiVersion: mizzen.io/v1alpha1
kind: Workload
metadata: {name: region2, namespace: default, labels: {app: hello}}
spec: {address: 10.0.1.4, locality: region2/zone1}
---
apiVersion: mizzen.io/v1alpha1
kind: Workload
metadata: {name: region3, namespace: default, labels: {app: hello}}
spec: {address: 10.0.1.5, locality: region3/zone1}
"#;

const CLUSTER: &str = "outbound|80||hello.default.svc.cluster.local";

fn model(rule: &str) -> Model {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "mizzen-locality-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.yaml"), format!("{MESH}\n---\n{rule}")).unwrap();
    let mut store = ConfigStore::new(&dir);
    store.rescan();
    let snapshot = store.snapshot();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(snapshot.problems.is_empty(), "{:?}", snapshot.problems);
    Model::build(&snapshot, "cluster.local")
}

fn sidecar(ip: &str, name: &str, locality: Option<&str>) -> ProxyNode {
    let metadata = serde_json::json!({"LABELS": {"app": name}, "INTERCEPTION_MODE": "NONE"});
    ProxyNode::from_node(&Node {
        id: format!("sidecar~{ip}~{name}.default~default.svc.cluster.local"),
        metadata: Some(mizzen_xds::structs::to_struct(
            metadata.as_object().unwrap(),
        )),
        locality: locality.map(|l| {
            let mut parts = l.split('/');
            Locality {
                region: parts.next().unwrap_or_default().into(),
                zone: parts.next().unwrap_or_default().into(),
                sub_zone: parts.next().unwrap_or_default().into(),
            }
        }),
        ..Default::default()
    })
    .unwrap()
}

/// The client: its locality comes from its workload.
fn client() -> ProxyNode {
    sidecar("10.0.0.1", "client", None)
}

fn assignment(model: &Model, proxy: &ProxyNode) -> ClusterLoadAssignment {
    let out = generate(model, proxy, type_url::ENDPOINT, &[CLUSTER.to_string()]);
    mizzen_xds::unpack(&out[0].body).unwrap()
}

/// Workload address → (priority, locality weight).
fn shape(cla: &ClusterLoadAssignment) -> BTreeMap<String, (u32, Option<u32>)> {
    let mut out = BTreeMap::new();
    for group in &cla.endpoints {
        for e in &group.lb_endpoints {
            let Some(
                mizzen_xds::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(
                    ep,
                ),
            ) = &e.host_identifier
            else {
                panic!("no endpoint")
            };
            let Some(mizzen_xds::pb::envoy::config::core::v3::address::Address::SocketAddress(sa)) =
                ep.address.as_ref().and_then(|a| a.address.clone())
            else {
                panic!("no address")
            };
            out.insert(
                sa.address,
                (
                    group.priority,
                    group.load_balancing_weight.as_ref().map(|w| w.value),
                ),
            );
        }
    }
    out
}

fn priorities(cla: &ClusterLoadAssignment) -> Vec<(String, u32)> {
    shape(cla).into_iter().map(|(a, (p, _))| (a, p)).collect()
}

fn expect(pairs: &[(&str, u32)]) -> Vec<(String, u32)> {
    pairs.iter().map(|(a, p)| (a.to_string(), *p)).collect()
}

const OUTLIER: &str =
    "outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s}";

fn rule(load_balancer: &str, outlier: bool) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: hello, namespace: default}}\nspec:\n  host: hello\n  trafficPolicy:\n{}{}",
        if load_balancer.is_empty() {
            String::new()
        } else {
            format!("    loadBalancer: {load_balancer}\n")
        },
        if outlier {
            format!("    {OUTLIER}\n")
        } else {
            String::new()
        },
    )
}

#[test]
fn endpoints_are_grouped_by_locality() {
    let model = model(&rule("", false));
    let cla = assignment(&model, &client());
    let localities: Vec<String> = cla
        .endpoints
        .iter()
        .map(|g| {
            let l = g.locality.as_ref().unwrap();
            format!("{}/{}/{}", l.region, l.zone, l.sub_zone)
        })
        .collect();
    assert_eq!(
        localities,
        [
            "region1/zone1/rack1",
            "region1/zone1/rack2",
            "region1/zone2/",
            "region2/zone1/",
            "region3/zone1/"
        ]
    );
    // No outlier detection: Istio leaves every locality at priority 0.
    assert!(cla.endpoints.iter().all(|g| g.priority == 0));
}

#[test]
fn failover_by_default_with_outlier_detection() {
    let model = model(&rule("", true));
    assert_eq!(
        priorities(&assignment(&model, &client())),
        expect(&[
            ("10.0.1.1", 0),
            ("10.0.1.2", 1),
            ("10.0.1.3", 2),
            ("10.0.1.4", 3),
            ("10.0.1.5", 3),
        ])
    );
    // Another proxy, placed by its node: priorities are per proxy, and
    // compacted (no subzone match: the ladder starts at region/zone).
    let there = sidecar("10.0.0.9", "elsewhere", Some("region2/zone1"));
    assert_eq!(
        priorities(&assignment(&model, &there)),
        expect(&[
            ("10.0.1.1", 1),
            ("10.0.1.2", 1),
            ("10.0.1.3", 1),
            ("10.0.1.4", 0),
            ("10.0.1.5", 1),
        ])
    );
    // A proxy without a locality gets the assignment as it is.
    let nowhere = sidecar("10.0.0.8", "nowhere", None);
    assert!(
        assignment(&model, &nowhere)
            .endpoints
            .iter()
            .all(|g| g.priority == 0)
    );
}

#[test]
fn failover_names_the_next_region() {
    let model = model(&rule(
        "{localityLbSetting: {failover: [{from: region1, to: region3}]}}",
        true,
    ));
    assert_eq!(
        priorities(&assignment(&model, &client())),
        expect(&[
            ("10.0.1.1", 0),
            ("10.0.1.2", 1),
            ("10.0.1.3", 2),
            ("10.0.1.4", 4),
            ("10.0.1.5", 3),
        ])
    );
}

#[test]
fn disabled_or_without_outlier_detection_no_priorities() {
    for model in [
        model(&rule("{localityLbSetting: {enabled: false}}", true)),
        model(&rule(
            "{localityLbSetting: {failover: [{from: region1, to: region3}]}}",
            false,
        )),
    ] {
        let cla = assignment(&model, &client());
        assert_eq!(cla.endpoints.len(), 5);
        assert!(cla.endpoints.iter().all(|g| g.priority == 0));
    }
}

#[test]
fn distribute_weighs_localities_and_drops_the_rest() {
    let model = model(&rule(
        r#"{localityLbSetting: {distribute: [{from: "region1/zone1/*", to: {"region1/zone1/*": 80, "region1/zone2/*": 20}}]}}"#,
        false,
    ));
    // The two racks of zone1 share its 80 by their endpoints; region2 and
    // region3 get nothing.
    let mut want = BTreeMap::new();
    want.insert("10.0.1.1".to_string(), (0, Some(40)));
    want.insert("10.0.1.2".to_string(), (0, Some(40)));
    want.insert("10.0.1.3".to_string(), (0, Some(20)));
    assert_eq!(shape(&assignment(&model, &client())), want);
    // Proxies no rule is for keep every locality, weighted by endpoints.
    let there = sidecar("10.0.0.9", "elsewhere", Some("region2/zone1"));
    let cla = assignment(&model, &there);
    assert_eq!(cla.endpoints.len(), 5);
    assert!(
        cla.endpoints
            .iter()
            .all(|g| g.load_balancing_weight.as_ref().map(|w| w.value) == Some(1))
    );
    // The cluster balances by locality weight.
    let clusters = generate(&model, &client(), type_url::CLUSTER, &[]);
    let cluster: Cluster =
        mizzen_xds::unpack(&clusters.iter().find(|c| c.name == CLUSTER).unwrap().body).unwrap();
    assert!(
        cluster
            .common_lb_config
            .and_then(|c| c.locality_config_specifier)
            .is_some()
    );
}
