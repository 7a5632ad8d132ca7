//! Config directories for the pilot: the benchmark's gateway in front of the
//! upstream, and large generated meshes (services with workloads) to weigh
//! proxies down and to load the pilot.
//!
//! Files are written whole under a hidden name and renamed into place, so
//! the pilot's watch never reads a half-written file.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use mizzen_xds::client::Node;
use serde_json::json;

/// Namespace of the benchmark's gateway, upstream service and proxies.
pub const NAMESPACE: &str = "bench";
/// Label value selecting the benchmark gateway (`istio: bench-gateway`).
pub const GATEWAY_LABEL: &str = "bench-gateway";
/// Port the gateway proxies listen on: the gateway Service's port 80 has
/// this target port, as Istio's ingress gateway does.
pub const GATEWAY_PORT: u16 = 8080;
/// The kind of port every generated service exposes.
pub const SERVICE_PORT: u16 = 80;
const DOMAIN: &str = "svc.cluster.local";

/// The gateway, its Service, and a VirtualService sending every host to the
/// `upstream` Service, whose one endpoint is `upstream` (outside the mesh).
pub fn bench_gateway_yaml(upstream: SocketAddr) -> String {
    format!(
        r#"# The benchmark: a gateway routing every request to the upstream.
apiVersion: v1
kind: Service
metadata:
  name: {GATEWAY_LABEL}
  namespace: {NAMESPACE}
spec:
  selector:
    istio: {GATEWAY_LABEL}
  ports:
  - name: http2
    port: 80
    targetPort: {GATEWAY_PORT}
---
apiVersion: v1
kind: Service
metadata:
  name: upstream
  namespace: {NAMESPACE}
spec:
  selector:
    app: upstream
  ports:
  - name: http
    port: {SERVICE_PORT}
    targetPort: {upstream_port}
---
apiVersion: mizzen.io/v1alpha1
kind: Workload
metadata:
  name: upstream
  namespace: {NAMESPACE}
  labels:
    app: upstream
spec:
  address: {upstream_ip}
  sidecar: false
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: {GATEWAY_LABEL}
  namespace: {NAMESPACE}
spec:
  selector:
    istio: {GATEWAY_LABEL}
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: upstream
  namespace: {NAMESPACE}
spec:
  hosts:
  - "*"
  gateways:
  - {GATEWAY_LABEL}
  http:
  - route:
    - destination:
        host: upstream
        port:
          number: {SERVICE_PORT}
"#,
        upstream_port = upstream.port(),
        upstream_ip = upstream.ip(),
    )
}

/// The TCP scenario's service: port [`TCP_SINK_PORT`] goes to a sink and
/// [`TCP_ECHO_PORT`] to an echo server, both on the TCP upstream.
pub const TCP_SERVICE: &str = "tcp-upstream";
pub const TCP_SINK_PORT: u16 = 9000;
pub const TCP_ECHO_PORT: u16 = 9001;
/// The `app` label of the sidecars that reach the TCP service (no Service
/// selects it, so they have no inbound listeners).
pub const TCP_CLIENT_APP: &str = "tcp-client";

/// A Service with two TCP ports (named `tcp-*`, so the pilot gives every
/// sidecar a TCP proxy listener for each on its own address) whose one
/// endpoint is the TCP upstream on `ip`, listening on `sink_port` and
/// `echo_port`.
pub fn bench_tcp_yaml(ip: Ipv4Addr, sink_port: u16, echo_port: u16) -> String {
    format!(
        r#"# The raw TCP benchmark: a sink and an echo server behind one Service.
apiVersion: v1
kind: Service
metadata:
  name: {TCP_SERVICE}
  namespace: {NAMESPACE}
spec:
  selector:
    app: {TCP_SERVICE}
  ports:
  - name: tcp-sink
    port: {TCP_SINK_PORT}
    targetPort: {sink_port}
  - name: tcp-echo
    port: {TCP_ECHO_PORT}
    targetPort: {echo_port}
---
apiVersion: mizzen.io/v1alpha1
kind: Workload
metadata:
  name: {TCP_SERVICE}
  namespace: {NAMESPACE}
  labels:
    app: {TCP_SERVICE}
spec:
  address: {ip}
  sidecar: false
"#
    )
}

/// The node of a sidecar on `ip` in front of a client of the TCP service
/// (`INTERCEPTION_MODE=NONE`: its listeners bind its own address).
pub fn tcp_client_node(ip: Ipv4Addr, name: &str) -> Node {
    sidecar_node(ip, name, NAMESPACE, TCP_CLIENT_APP)
}

/// The sidecar-to-sidecar scenarios: each pair of sidecars (one pair of
/// mizzen-proxy, one of Envoy) has a server sidecar fronting the upstream,
/// reached through three Services that differ only in how the client
/// sidecar connects to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarService {
    /// Automatic mutual TLS (the server runs a sidecar; PERMISSIVE, the
    /// default), pooled keep-alive connections between the sidecars.
    Mtls,
    /// A DestinationRule with `tls.mode: DISABLE`: plaintext between the
    /// sidecars, to show what mutual TLS costs.
    Plaintext,
    /// Mutual TLS with `connectionPool.http.maxRequestsPerConnection: 1`:
    /// every request needs a new connection, so a new handshake, between
    /// the sidecars.
    Handshake,
}

impl SidecarService {
    pub const ALL: [SidecarService; 3] = [
        SidecarService::Mtls,
        SidecarService::Plaintext,
        SidecarService::Handshake,
    ];

    fn prefix(self) -> &'static str {
        match self {
            SidecarService::Mtls => "mtls",
            SidecarService::Plaintext => "plaintext",
            SidecarService::Handshake => "handshake",
        }
    }

    /// The Service's name for the pair `pair` (`mizzen` or `envoy`).
    pub fn name(self, pair: &str) -> String {
        format!("{}-{pair}", self.prefix())
    }

    /// The host clients name in requests to the client sidecar.
    pub fn host(self, pair: &str) -> String {
        format!("{}.{NAMESPACE}.{DOMAIN}", self.name(pair))
    }

    /// The client sidecar's cluster for it.
    pub fn cluster(self, pair: &str) -> String {
        format!("outbound|{SERVICE_PORT}||{}", self.host(pair))
    }
}

/// Service accounts of the sidecar-to-sidecar scenarios.
pub const SIDECAR_CLIENT_ACCOUNT: &str = "sidecar-client";
pub const SIDECAR_SERVER_ACCOUNT: &str = "sidecar-server";
const SIDECAR_CLIENT_APP: &str = "sidecar-client";

fn sidecar_server_app(pair: &str) -> String {
    format!("sidecar-server-{pair}")
}

/// Config of the sidecar-to-sidecar scenarios: for each `(pair, server
/// sidecar address)`, a Workload with a sidecar on that address (its app,
/// the upstream, listens on `upstream`: the server sidecar forwards there)
/// and the three [`SidecarService`]s selecting it, with their
/// DestinationRules. No PeerAuthentication: Istio's default, PERMISSIVE.
pub fn bench_sidecars_yaml(upstream: SocketAddr, pairs: &[(&str, Ipv4Addr)]) -> String {
    let mut out = String::from(
        "# Sidecar-to-sidecar benchmark: client sidecar -> server sidecar -> upstream.\n",
    );
    let app_port = upstream.port();
    for (pair, server) in pairs {
        let app = sidecar_server_app(pair);
        let _ = write!(
            out,
            "---\napiVersion: mizzen.io/v1alpha1\nkind: Workload\nmetadata:\n  name: {app}\n  \
             namespace: {NAMESPACE}\n  labels:\n    app: {app}\nspec:\n  address: {server}\n  \
             serviceAccount: {SIDECAR_SERVER_ACCOUNT}\n"
        );
        for service in SidecarService::ALL {
            let name = service.name(pair);
            let _ = write!(
                out,
                "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n\
                 spec:\n  selector:\n    app: {app}\n  ports:\n  - name: http\n    port: {SERVICE_PORT}\n    \
                 targetPort: {app_port}\n"
            );
            let policy = match service {
                SidecarService::Mtls => continue,
                SidecarService::Plaintext => "    tls:\n      mode: DISABLE\n",
                SidecarService::Handshake => {
                    "    connectionPool:\n      http:\n        maxRequestsPerConnection: 1\n"
                }
            };
            let _ = write!(
                out,
                "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  \
                 name: {name}\n  namespace: {NAMESPACE}\nspec:\n  host: {}\n  trafficPolicy:\n{policy}",
                service.host(pair)
            );
        }
    }
    out
}

/// A client sidecar on `ip`: its app (the load generator)
/// uses it as an explicit HTTP proxy on 15001 (`INTERCEPTION_MODE=NONE`).
pub fn sidecar_client_node(ip: Ipv4Addr, name: &str) -> Node {
    let mut node = sidecar_node(ip, name, NAMESPACE, SIDECAR_CLIENT_APP);
    node.metadata
        .insert("SERVICE_ACCOUNT".into(), json!(SIDECAR_CLIENT_ACCOUNT));
    node
}

/// The server sidecar of pair `pair` on `ip`, in front of the upstream on
/// `app_host` (the loopback runtime's `MIZZEN_APP_HOST`).
pub fn sidecar_server_node(ip: Ipv4Addr, name: &str, pair: &str, app_host: Ipv4Addr) -> Node {
    let mut node = sidecar_node(ip, name, NAMESPACE, &sidecar_server_app(pair));
    node.metadata
        .insert("SERVICE_ACCOUNT".into(), json!(SIDECAR_SERVER_ACCOUNT));
    node.metadata
        .insert("MIZZEN_APP_HOST".into(), json!(app_host.to_string()));
    node
}

/// The node a gateway proxy on `ip` introduces itself with: a router in the
/// benchmark namespace, with the gateway's label, binding its own address
/// (`INTERCEPTION_MODE=NONE`).
pub fn gateway_node(ip: Ipv4Addr, name: &str) -> Node {
    Node {
        id: format!("router~{ip}~{name}.{NAMESPACE}~{NAMESPACE}.{DOMAIN}"),
        cluster: format!("{GATEWAY_LABEL}.{NAMESPACE}"),
        metadata: metadata(NAMESPACE, json!({ "istio": GATEWAY_LABEL })),
    }
}

/// The node of a sidecar on `ip` next to a workload of service `app`.
pub fn sidecar_node(ip: Ipv4Addr, name: &str, namespace: &str, app: &str) -> Node {
    Node {
        id: format!("sidecar~{ip}~{name}.{namespace}~{namespace}.{DOMAIN}"),
        cluster: format!("{app}.{namespace}"),
        metadata: metadata(namespace, json!({ "app": app })),
    }
}

fn metadata(
    namespace: &str,
    labels: serde_json::Value,
) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    map.insert("NAMESPACE".into(), json!(namespace));
    map.insert("LABELS".into(), labels);
    map.insert("INTERCEPTION_MODE".into(), json!("NONE"));
    map
}

/// The size of a generated mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshSize {
    pub services: usize,
    pub endpoints_per_service: usize,
    /// Services are spread round robin over this many namespaces, one file
    /// each.
    pub namespaces: usize,
}

impl MeshSize {
    pub fn endpoints(&self) -> usize {
        self.services * self.endpoints_per_service
    }

    /// The namespace of service `i`.
    pub fn namespace_of(&self, service: usize) -> String {
        namespace_name(service % self.namespaces)
    }

    /// The cluster name Istio gives service `i`'s port.
    pub fn cluster_of(&self, service: usize) -> String {
        format!(
            "outbound|{SERVICE_PORT}||{}.{}.{DOMAIN}",
            service_name(service),
            self.namespace_of(service)
        )
    }
}

pub fn namespace_name(i: usize) -> String {
    format!("mesh-{i:02}")
}

pub fn service_name(i: usize) -> String {
    format!("svc-{i:04}")
}

/// The address of endpoint `e` of the mesh: loopback addresses from
/// 127.100.0.1 on. Nothing listens there; only configuration carries them.
pub fn endpoint_address(e: usize) -> Ipv4Addr {
    let n = e as u32 + 1;
    Ipv4Addr::new(127, 100 + (n >> 16) as u8, (n >> 8) as u8, n as u8)
}

/// Addresses an endpoint is moved to (127.99.x.y): never one of
/// [`endpoint_address`].
pub fn moved_address(n: usize) -> Ipv4Addr {
    let n = n as u32 + 1;
    Ipv4Addr::new(127, 99, (n >> 8) as u8, n as u8)
}

/// One namespace's file: its Services and their Workloads. `address` gives
/// the address of each endpoint by its mesh-wide index.
pub fn namespace_yaml(size: &MeshSize, ns: usize, address: &dyn Fn(usize) -> Ipv4Addr) -> String {
    let namespace = namespace_name(ns);
    let mut out = format!("# Generated mesh: namespace {namespace}.\n");
    for service in (ns..size.services).step_by(size.namespaces) {
        let name = service_name(service);
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\n\
             spec:\n  selector:\n    app: {name}\n  ports:\n  - name: http\n    port: {SERVICE_PORT}\n    targetPort: 8080\n"
        );
        for k in 0..size.endpoints_per_service {
            let e = service * size.endpoints_per_service + k;
            let _ = write!(
                out,
                "---\napiVersion: mizzen.io/v1alpha1\nkind: Workload\nmetadata:\n  name: {name}-{k}\n  namespace: {namespace}\n  \
                 labels:\n    app: {name}\n    version: v1\nspec:\n  address: {}\n  serviceAccount: {name}\n",
                address(e)
            );
        }
    }
    out
}

/// Writes every namespace file of a mesh into `dir`.
pub fn write_mesh(dir: &Path, size: &MeshSize) -> std::io::Result<()> {
    for ns in 0..size.namespaces {
        write_atomically(
            &namespace_file(dir, ns),
            &namespace_yaml(size, ns, &endpoint_address),
        )?;
    }
    Ok(())
}

pub fn namespace_file(dir: &Path, ns: usize) -> PathBuf {
    dir.join(format!("{}.yaml", namespace_name(ns)))
}

/// A Service with one Workload, added to a running mesh to cause a push to
/// every proxy. Returns the file's text and the new cluster's name.
pub fn added_service_yaml(n: usize) -> (String, String) {
    let name = format!("added-{n:03}");
    let namespace = namespace_name(0);
    let text = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\n\
         spec:\n  selector:\n    app: {name}\n  ports:\n  - name: http\n    port: {SERVICE_PORT}\n    targetPort: 8080\n\
         ---\napiVersion: mizzen.io/v1alpha1\nkind: Workload\nmetadata:\n  name: {name}-0\n  namespace: {namespace}\n  \
         labels:\n    app: {name}\nspec:\n  address: {}\n",
        moved_address(4000 + n)
    );
    let cluster = format!("outbound|{SERVICE_PORT}||{name}.{namespace}.{DOMAIN}");
    (text, cluster)
}

/// Writes `text` to `path` through a hidden temporary file and a rename.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn endpoint_addresses_are_distinct_loopback_and_apart_from_moved_ones() {
        let addrs: HashSet<Ipv4Addr> = (0..70_000).map(endpoint_address).collect();
        assert_eq!(addrs.len(), 70_000);
        assert!(addrs.iter().all(|a| a.is_loopback()));
        assert_eq!(endpoint_address(0), Ipv4Addr::new(127, 100, 0, 1));
        for n in 0..5000 {
            let moved = moved_address(n);
            assert!(moved.is_loopback());
            assert!(!addrs.contains(&moved));
        }
    }

    #[test]
    fn generated_mesh_has_every_service_and_endpoint_once() {
        let size = MeshSize {
            services: 25,
            endpoints_per_service: 3,
            namespaces: 4,
        };
        let all: String = (0..size.namespaces)
            .map(|ns| namespace_yaml(&size, ns, &endpoint_address))
            .collect();
        assert_eq!(all.matches("kind: Service\n").count(), 25);
        assert_eq!(all.matches("kind: Workload\n").count(), 75);
        for e in 0..size.endpoints() {
            let line = format!("address: {}\n", endpoint_address(e));
            assert_eq!(all.matches(&line).count(), 1, "{line}");
        }
        // Service 5 lives in namespace 5 % 4 = 1, with its endpoints.
        let ns1 = namespace_yaml(&size, 1, &endpoint_address);
        assert!(ns1.contains("name: svc-0005\n  namespace: mesh-01\n"));
        assert!(ns1.contains(&format!("address: {}\n", endpoint_address(15))));
        assert_eq!(
            size.cluster_of(5),
            "outbound|80||svc-0005.mesh-01.svc.cluster.local"
        );
    }

    #[test]
    fn the_pilot_reads_the_generated_config_as_intended() {
        use mizzen_pilot::config::ConfigStore;
        use mizzen_pilot::model::Model;
        use mizzen_pilot::node::ProxyNode;
        use mizzen_pilot::translate::generate;
        use mizzen_xds::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
        use mizzen_xds::type_url;

        let size = MeshSize {
            services: 6,
            endpoints_per_service: 2,
            namespaces: 2,
        };
        let dir = tempfile::tempdir().unwrap();
        let upstream: SocketAddr = "127.20.0.1:9000".parse().unwrap();
        write_atomically(
            &dir.path().join("bench.yaml"),
            &bench_gateway_yaml(upstream),
        )
        .unwrap();
        write_mesh(dir.path(), &size).unwrap();
        let (added, added_cluster) = added_service_yaml(1);
        write_atomically(&dir.path().join("added.yaml"), &added).unwrap();
        let mut store = ConfigStore::new(dir.path());
        store.rescan();
        let snapshot = store.snapshot();
        assert!(snapshot.problems.is_empty(), "{:?}", snapshot.problems);
        let model = Model::build(&snapshot, "cluster.local");
        // The gateway's and the upstream's Services, the mesh, the added one.
        assert_eq!(model.services.len(), 2 + 6 + 1);
        assert!(model.warnings.is_empty(), "{:?}", model.warnings);

        let ip = Ipv4Addr::new(127, 20, 0, 2);
        let gateway = ProxyNode::from_node(&gateway_node(ip, "gw").to_proto()).unwrap();
        let listeners = generate(&model, &gateway, type_url::LISTENER, &[]);
        let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, [format!("0.0.0.0_{GATEWAY_PORT}")]);
        let clusters = generate(&model, &gateway, type_url::CLUSTER, &[]);
        assert!(clusters.iter().any(|c| c.name == added_cluster));
        assert!(clusters.iter().any(|c| c.name == size.cluster_of(3)));
        let upstream_cluster = format!("outbound|80||upstream.{NAMESPACE}.{DOMAIN}");
        for (cluster, count) in [(upstream_cluster, 1), (size.cluster_of(3), 2)] {
            let cla = generate(
                &model,
                &gateway,
                type_url::ENDPOINT,
                std::slice::from_ref(&cluster),
            );
            let cla: ClusterLoadAssignment = mizzen_xds::unpack(&cla[0].body).unwrap();
            let endpoints: usize = cla.endpoints.iter().map(|l| l.lb_endpoints.len()).sum();
            assert_eq!(endpoints, count, "{cluster}");
        }

        let sidecar = ProxyNode::from_node(
            &sidecar_node(
                Ipv4Addr::new(127, 20, 0, 3),
                "sim-1",
                &namespace_name(1),
                "svc-0001",
            )
            .to_proto(),
        )
        .unwrap();
        let listeners = generate(&model, &sidecar, type_url::LISTENER, &[]);
        assert_eq!(
            listeners.len(),
            2,
            "an inbound listener and the outbound one"
        );
    }

    #[test]
    fn sidecars_get_one_tcp_proxy_listener_per_tcp_port_on_their_own_address() {
        use mizzen_pilot::config::ConfigStore;
        use mizzen_pilot::model::Model;
        use mizzen_pilot::node::ProxyNode;
        use mizzen_pilot::translate::generate;
        use mizzen_xds::pb::envoy::config::listener::v3::{Listener, filter};
        use mizzen_xds::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
            TcpProxy, tcp_proxy,
        };
        use mizzen_xds::type_url;

        let dir = tempfile::tempdir().unwrap();
        let upstream = Ipv4Addr::new(127, 20, 0, 1);
        write_atomically(
            &dir.path().join("tcp.yaml"),
            &bench_tcp_yaml(upstream, 40_000, 40_001),
        )
        .unwrap();
        let mut store = ConfigStore::new(dir.path());
        store.rescan();
        let snapshot = store.snapshot();
        assert!(snapshot.problems.is_empty(), "{:?}", snapshot.problems);
        let model = Model::build(&snapshot, "cluster.local");
        assert!(model.warnings.is_empty(), "{:?}", model.warnings);

        let ip = Ipv4Addr::new(127, 20, 0, 2);
        let node = ProxyNode::from_node(&tcp_client_node(ip, "c").to_proto()).unwrap();
        let listeners = generate(&model, &node, type_url::LISTENER, &[]);
        for (port, target) in [(TCP_SINK_PORT, 40_000), (TCP_ECHO_PORT, 40_001)] {
            let name = format!("{ip}_{port}");
            let resource = listeners
                .iter()
                .find(|l| l.name == name)
                .unwrap_or_else(|| panic!("no listener {name}"));
            let listener: Listener = mizzen_xds::unpack(&resource.body).unwrap();
            assert_eq!(listener.filter_chains.len(), 1);
            let f = &listener.filter_chains[0].filters[0];
            let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                panic!("{f:?}")
            };
            let tcp: TcpProxy = mizzen_xds::unpack(any).unwrap();
            let cluster = format!("outbound|{port}||{TCP_SERVICE}.{NAMESPACE}.{DOMAIN}");
            assert_eq!(
                tcp.cluster_specifier,
                Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.clone()))
            );
            let cla = generate(&model, &node, type_url::ENDPOINT, &[cluster]);
            let cla: mizzen_xds::pb::envoy::config::endpoint::v3::ClusterLoadAssignment =
                mizzen_xds::unpack(&cla[0].body).unwrap();
            let text = format!("{cla:?}");
            assert!(text.contains(&upstream.to_string()), "{text}");
            assert!(text.contains(&target.to_string()), "{text}");
        }
    }

    #[test]
    fn sidecar_pairs_get_mutual_tls_plaintext_and_one_request_per_connection() {
        use mizzen_pilot::config::ConfigStore;
        use mizzen_pilot::model::{MeshSettings, Model};
        use mizzen_pilot::node::ProxyNode;
        use mizzen_pilot::translate::generate;
        use mizzen_xds::pb::envoy::config::cluster::v3::Cluster;
        use mizzen_xds::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
        use mizzen_xds::pb::envoy::config::listener::v3::Listener;
        use mizzen_xds::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
        use mizzen_xds::type_url;

        let dir = tempfile::tempdir().unwrap();
        let upstream: SocketAddr = "127.20.0.1:40000".parse().unwrap();
        let servers = [
            ("mizzen", Ipv4Addr::new(127, 20, 0, 2)),
            ("envoy", Ipv4Addr::new(127, 20, 0, 3)),
        ];
        write_atomically(
            &dir.path().join("sidecars.yaml"),
            &bench_sidecars_yaml(upstream, &servers),
        )
        .unwrap();
        let mut store = ConfigStore::new(dir.path());
        store.rescan();
        let snapshot = store.snapshot();
        assert!(snapshot.problems.is_empty(), "{:?}", snapshot.problems);
        let mut settings = MeshSettings::new("cluster.local");
        // What a pilot with a CA builds.
        settings.mtls = true;
        let model = Model::build_with(&snapshot, &settings);
        assert!(model.warnings.is_empty(), "{:?}", model.warnings);

        let client = ProxyNode::from_node(
            &sidecar_client_node(Ipv4Addr::new(127, 20, 0, 4), "c").to_proto(),
        )
        .unwrap();
        let clusters = generate(&model, &client, type_url::CLUSTER, &[]);
        for (pair, server) in servers {
            for service in SidecarService::ALL {
                let name = service.cluster(pair);
                let resource = clusters
                    .iter()
                    .find(|c| c.name == name)
                    .unwrap_or_else(|| panic!("no cluster {name}"));
                let cluster: Cluster = mizzen_xds::unpack(&resource.body).unwrap();
                let mtls = !cluster.transport_socket_matches.is_empty();
                assert_eq!(mtls, service != SidecarService::Plaintext, "{name}");
                assert!(cluster.transport_socket.is_none(), "{name}");
                let per_connection = cluster
                    .typed_extension_protocol_options
                    .values()
                    .find_map(|any| mizzen_xds::unpack::<HttpProtocolOptions>(any).ok())
                    .and_then(|o| o.common_http_protocol_options)
                    .and_then(|c| c.max_requests_per_connection)
                    .map(|v| v.value);
                let expected = (service == SidecarService::Handshake).then_some(1);
                assert_eq!(per_connection, expected, "{name}");
                // The endpoint is the server sidecar, marked as speaking
                // Istio mTLS.
                let cla = generate(
                    &model,
                    &client,
                    type_url::ENDPOINT,
                    std::slice::from_ref(&name),
                );
                let cla: ClusterLoadAssignment = mizzen_xds::unpack(&cla[0].body).unwrap();
                let text = format!("{cla:?}");
                assert!(text.contains(&server.to_string()), "{text}");
                assert!(text.contains("tlsMode"), "{text}");
            }
        }

        // The server sidecar: an inbound listener on its address and the
        // app's port, taking mTLS and (PERMISSIVE) plaintext.
        let (pair, ip) = servers[0];
        let server = ProxyNode::from_node(
            &sidecar_server_node(ip, "s", pair, Ipv4Addr::new(127, 20, 0, 1)).to_proto(),
        )
        .unwrap();
        let listeners = generate(&model, &server, type_url::LISTENER, &[]);
        let name = format!("{ip}_{}", upstream.port());
        let resource = listeners
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("no listener {name}"));
        let listener: Listener = mizzen_xds::unpack(&resource.body).unwrap();
        assert!(listener.filter_chains.len() >= 2, "{listener:?}");
        assert!(format!("{listener:?}").contains("tls_inspector"));
    }

    #[test]
    fn atomic_writes_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        write_atomically(&path, "one").unwrap();
        write_atomically(&path, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }
}
