//! Who a connecting proxy is, read the way Istio reads it: the node id
//! `TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.DOMAIN` and the node metadata
//! (`NAMESPACE`, `LABELS`, `SERVICE_ACCOUNT`, `INTERCEPTION_MODE`, ...).

use std::collections::BTreeMap;
use std::net::IpAddr;

use mizzen_xds::pb::envoy::config::core::v3::{Locality as LocalityProto, Node};

/// Whether the proxy fronts one workload or is a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    Sidecar,
    Router,
}

/// How traffic reaches the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterceptionMode {
    /// iptables REDIRECT to 15001/15006 (a pod).
    Redirect,
    /// No capture: listeners bind the instance address and the port itself,
    /// and apps use the outbound listener as an explicit HTTP proxy (the local
    /// loopback runtime, VMs without iptables).
    None,
}

#[derive(Debug, Clone)]
pub struct ProxyNode {
    pub id: String,
    pub kind: ProxyKind,
    pub ip: IpAddr,
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub interception: InterceptionMode,
    /// Where the proxy forwards inbound traffic for the local app. Istio
    /// always uses localhost; the loopback runtime gives each app its own
    /// loopback address so that many apps share the host.
    pub app_host: IpAddr,
    /// Where the proxy runs, when its node says so: the Envoy node's
    /// `locality`, else the `istio-locality` or topology labels. Without
    /// it, translation falls back to the locality of the proxy's workload.
    pub locality: Option<Locality>,
}

/// Istio's locality, `region/zone/subzone`: what locality load balancing
/// compares between a proxy and the endpoints it sends to.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub sub_zone: String,
}

/// The pod label Istio reads a locality from (`region.zone.subzone`: label
/// values cannot hold `/`).
pub const LOCALITY_LABEL: &str = "istio-locality";
const REGION_LABEL: &str = "topology.kubernetes.io/region";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const SUBZONE_LABEL: &str = "topology.istio.io/subzone";

/// From the xDS form (a node's or an endpoint group's locality).
impl From<&LocalityProto> for Locality {
    fn from(l: &LocalityProto) -> Self {
        Locality {
            region: l.region.clone(),
            zone: l.zone.clone(),
            sub_zone: l.sub_zone.clone(),
        }
    }
}

impl Locality {
    /// `region/zone/subzone`, trailing parts optional; `None` when empty.
    pub fn parse(text: &str) -> Option<Locality> {
        let mut parts = text.trim().splitn(3, '/').map(str::to_string);
        let locality = Locality {
            region: parts.next().unwrap_or_default(),
            zone: parts.next().unwrap_or_default(),
            sub_zone: parts.next().unwrap_or_default(),
        };
        (!locality.is_empty()).then_some(locality)
    }

    /// From Istio's labels: `istio-locality`, else the topology labels.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<Locality> {
        if let Some(value) = labels.get(LOCALITY_LABEL) {
            return Locality::parse(&value.replace('.', "/"));
        }
        let get = |key: &str| labels.get(key).cloned().unwrap_or_default();
        let locality = Locality {
            region: get(REGION_LABEL),
            zone: get(ZONE_LABEL),
            sub_zone: get(SUBZONE_LABEL),
        };
        (!locality.is_empty()).then_some(locality)
    }

    pub fn is_empty(&self) -> bool {
        self.region.is_empty() && self.zone.is_empty() && self.sub_zone.is_empty()
    }
}

impl std::fmt::Display for Locality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.region, self.zone, self.sub_zone)
    }
}

/// Node metadata key naming the app's address in the loopback runtime.
pub const APP_HOST_METADATA: &str = "MIZZEN_APP_HOST";

impl ProxyNode {
    pub fn from_node(node: &Node) -> Result<Self, String> {
        let parts: Vec<&str> = node.id.split('~').collect();
        let [kind, ip, pod, _domain] = parts.as_slice() else {
            return Err(format!(
                "node id {:?} is not of the form TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local",
                node.id
            ));
        };
        let kind = match *kind {
            "sidecar" => ProxyKind::Sidecar,
            "router" => ProxyKind::Router,
            other => {
                return Err(format!(
                    "node id {:?}: proxy type {other:?} is not sidecar or router",
                    node.id
                ));
            }
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("node id {:?}: {ip:?} is not an IP address", node.id))?;
        let metadata = node
            .metadata
            .as_ref()
            .map(mizzen_xds::structs::from_struct)
            .unwrap_or_default();
        let string = |key: &str| {
            metadata
                .get(key)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let (pod_name, pod_namespace) = pod.rsplit_once('.').unwrap_or((pod, "default"));
        let namespace = string("NAMESPACE").unwrap_or_else(|| pod_namespace.to_string());
        let name = string("NAME").unwrap_or_else(|| pod_name.to_string());
        let labels = match metadata.get("LABELS") {
            None | Some(serde_json::Value::Null) => BTreeMap::new(),
            Some(serde_json::Value::Object(map)) => map
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
                    other => Err(format!(
                        "node metadata LABELS.{k}: expected a string, got {other}"
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(format!(
                    "node metadata LABELS: expected an object, got {other}"
                ));
            }
        };
        let interception = match string("INTERCEPTION_MODE").as_deref() {
            None | Some("REDIRECT") => InterceptionMode::Redirect,
            Some("NONE") => InterceptionMode::None,
            Some(other) => {
                return Err(format!(
                    "node metadata INTERCEPTION_MODE: {other:?} is not supported (REDIRECT or NONE)"
                ));
            }
        };
        let app_host = match string(APP_HOST_METADATA) {
            Some(host) => host.parse().map_err(|_| {
                format!("node metadata {APP_HOST_METADATA}: {host:?} is not an IP address")
            })?,
            // Captured pods: the app listens on the pod's address, as Istio
            // forwards inbound traffic to the pod IP.
            None if interception == InterceptionMode::Redirect => ip,
            None => IpAddr::from([127, 0, 0, 1]),
        };
        Ok(Self {
            id: node.id.clone(),
            kind,
            ip,
            name,
            namespace,
            service_account: string("SERVICE_ACCOUNT").unwrap_or_else(|| "default".to_string()),
            interception,
            app_host,
            locality: node
                .locality
                .as_ref()
                .map(Locality::from)
                .filter(|l| !l.is_empty())
                .or_else(|| Locality::from_labels(&labels)),
            labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, metadata: serde_json::Value) -> Node {
        Node {
            id: id.to_string(),
            metadata: Some(mizzen_xds::structs::to_struct(
                metadata.as_object().unwrap(),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn reads_an_istio_sidecar_node() {
        let proxy = ProxyNode::from_node(&node(
            "sidecar~10.1.0.7~service-b-v1-6d9.istioinaction~istioinaction.svc.cluster.local",
            serde_json::json!({"LABELS": {"app": "service-b"}, "SERVICE_ACCOUNT": "service-b"}),
        ))
        .unwrap();
        assert_eq!(proxy.kind, ProxyKind::Sidecar);
        assert_eq!(proxy.ip.to_string(), "10.1.0.7");
        assert_eq!(proxy.name, "service-b-v1-6d9");
        assert_eq!(proxy.namespace, "istioinaction");
        assert_eq!(proxy.labels["app"], "service-b");
        assert_eq!(proxy.service_account, "service-b");
        assert_eq!(proxy.interception, InterceptionMode::Redirect);
    }

    #[test]
    fn locality_from_the_node_then_the_labels() {
        let id = "sidecar~10.1.0.7~a.ns~ns.svc.cluster.local";
        let mut n = node(
            id,
            serde_json::json!({"LABELS": {"istio-locality": "r1.z1.s1"}}),
        );
        let proxy = ProxyNode::from_node(&n).unwrap();
        assert_eq!(proxy.locality, Locality::parse("r1/z1/s1"));
        n.locality = Some(mizzen_xds::pb::envoy::config::core::v3::Locality {
            region: "r2".into(),
            zone: "z2".into(),
            ..Default::default()
        });
        let proxy = ProxyNode::from_node(&n).unwrap();
        assert_eq!(proxy.locality.unwrap().to_string(), "r2/z2/");
        let proxy = ProxyNode::from_node(&node(
            id,
            serde_json::json!({"LABELS": {"topology.kubernetes.io/region": "r3"}}),
        ))
        .unwrap();
        assert_eq!(proxy.locality, Locality::parse("r3"));
        let proxy = ProxyNode::from_node(&node(id, serde_json::json!({}))).unwrap();
        assert_eq!(proxy.locality, None);
    }

    #[test]
    fn rejects_malformed_ids_with_a_reason() {
        let err = ProxyNode::from_node(&node("sidecar~nope", serde_json::json!({}))).unwrap_err();
        assert!(err.contains("is not of the form"), "{err}");
        let err = ProxyNode::from_node(&node(
            "waypoint~1.2.3.4~a.b~b.svc.cluster.local",
            serde_json::json!({}),
        ))
        .unwrap_err();
        assert!(err.contains("not sidecar or router"), "{err}");
        let err = ProxyNode::from_node(&node(
            "router~1.2.3.4~a.b~b.svc.cluster.local",
            serde_json::json!({"INTERCEPTION_MODE": "TPROXY"}),
        ))
        .unwrap_err();
        assert!(err.contains("INTERCEPTION_MODE"), "{err}");
    }
}
