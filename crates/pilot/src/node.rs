//! Who a connecting proxy is, read the way Istio reads it: the node id
//! `TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.DOMAIN` and the node metadata
//! (`NAMESPACE`, `LABELS`, `SERVICE_ACCOUNT`, `INTERCEPTION_MODE`, ...).

use std::collections::BTreeMap;
use std::net::IpAddr;

use mizzen_xds::pb::envoy::config::core::v3::Node;

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
            labels,
            service_account: string("SERVICE_ACCOUNT").unwrap_or_else(|| "default".to_string()),
            interception,
            app_host,
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
