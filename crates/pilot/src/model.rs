//! The mesh as the pilot sees it: services, the workloads behind them and the
//! Istio configuration that applies to them, indexed for translation.
//!
//! The model is rebuilt from scratch on every config change and shared
//! immutably; translation never touches the raw config files.

use std::collections::BTreeMap;
use std::net::IpAddr;

use mizzen_api::{Resource, WorkloadInstance};

/// A workload (a pod, a VM) with its address parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub address: IpAddr,
    pub ports: BTreeMap<String, u16>,
    /// Whether a sidecar runs beside it.
    pub sidecar: bool,
}

impl Workload {
    fn from_instance(instance: WorkloadInstance) -> Result<Self, String> {
        let address = instance.address.parse().map_err(|_| {
            format!(
                "{}/{}: address {:?} is not an IP address; it is left out of the registry",
                instance.namespace, instance.name, instance.address
            )
        })?;
        Ok(Workload {
            name: instance.name,
            namespace: instance.namespace,
            labels: instance.labels,
            service_account: instance.service_account,
            address,
            ports: instance
                .ports
                .into_iter()
                .filter_map(|(name, port)| Some((name, u16::try_from(port).ok()?)))
                .collect(),
            sidecar: instance.sidecar,
        })
    }
}

use crate::config::ConfigSnapshot;

/// How a port's traffic is treated, from its name or `appProtocol` as Istio
/// documents (protocol selection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    Https,
    Tls,
    Tcp,
    /// No protocol declared: Istio sniffs it.
    Unspecified,
}

impl Protocol {
    /// Istio's rule: the `appProtocol` field, else the port name's prefix
    /// before the first `-` (`http`, `http-web`, `grpc-api`, ...).
    pub fn from_port(name: Option<&str>, app_protocol: Option<&str>) -> Self {
        let declared = app_protocol
            .or_else(|| name.map(|n| n.split('-').next().unwrap_or(n)))
            .unwrap_or("")
            .to_ascii_lowercase();
        match declared.as_str() {
            "http" | "http1" | "kubernetes.io/h1c" => Protocol::Http,
            "http2" | "kubernetes.io/h2c" => Protocol::Http2,
            "grpc" | "grpc-web" => Protocol::Grpc,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "tcp" | "mongo" | "mysql" | "redis" => Protocol::Tcp,
            _ => Protocol::Unspecified,
        }
    }

    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    }

    /// Whether upstream connections should speak HTTP/2.
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    Named(String),
}

#[derive(Debug, Clone)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    pub target_port: TargetPort,
    pub protocol: Protocol,
}

#[derive(Debug, Clone)]
pub struct Service {
    /// `name.namespace.svc.cluster.local`.
    pub hostname: String,
    pub name: String,
    pub namespace: String,
    pub ports: Vec<ServicePort>,
    /// None: the service selects no workloads (endpoints come from elsewhere).
    pub selector: Option<BTreeMap<String, String>>,
    /// The virtual IP clients connect to (Kubernetes' ClusterIP): the one
    /// the Service sets, else one allocated from [`SERVICE_CIDR`].
    pub address: Option<IpAddr>,
}

/// Where services without a `clusterIP` get their virtual IP.
pub const SERVICE_CIDR: (std::net::Ipv4Addr, u8) = (std::net::Ipv4Addr::new(10, 96, 0, 0), 16);

/// A stable hash of a hostname, so a service keeps its virtual IP across
/// restarts and unrelated config changes (FNV-1a).
fn stable_hash(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

impl Service {
    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }

    pub fn selects(&self, workload: &Workload) -> bool {
        match &self.selector {
            Some(selector) => {
                workload.namespace == self.namespace && labels_match(selector, &workload.labels)
            }
            None => false,
        }
    }
}

/// Whether every label of `selector` is present with the same value.
pub fn labels_match(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// One endpoint of a service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub address: IpAddr,
    pub port: u16,
    pub labels: BTreeMap<String, String>,
}

/// A config object with where it lives, as translation needs it.
#[derive(Debug, Clone)]
pub struct Config<T> {
    pub name: String,
    pub namespace: String,
    pub spec: T,
}

#[derive(Debug, Default)]
pub struct Model {
    pub domain_suffix: String,
    /// By hostname.
    pub services: BTreeMap<String, Service>,
    pub workloads: Vec<Workload>,
    /// Indexes into `workloads` of the workloads each service selects, by
    /// hostname: computed once per model so that endpoint lookups, done for
    /// every cluster of every proxy, do not scan every workload.
    selected: BTreeMap<String, Vec<usize>>,
    pub virtual_services: Vec<Config<mizzen_api::networking::VirtualService>>,
    pub destination_rules: Vec<Config<mizzen_api::networking::DestinationRule>>,
    pub gateways: Vec<Config<mizzen_api::networking::Gateway>>,
    pub sidecars: Vec<Config<mizzen_api::networking::Sidecar>>,
    /// Config that is valid but that the model could not use, for humans.
    pub warnings: Vec<String>,
    /// Whether some VirtualService injects faults: connection managers then
    /// carry the fault filter.
    pub fault_injection: bool,
    /// Whether some VirtualService has a corsPolicy: connection managers
    /// then carry the CORS filter.
    pub cors: bool,
}

impl Model {
    pub fn build(snapshot: &ConfigSnapshot, domain_suffix: &str) -> Model {
        let mut model = Model {
            domain_suffix: domain_suffix.to_string(),
            ..Default::default()
        };
        for (_file, resource) in &snapshot.resources {
            let namespace = resource.namespace().to_string();
            let name = resource.name().to_string();
            match resource {
                Resource::Service(service) => model.add_service(service),
                Resource::Workload(workload) => {
                    model.add_workload(WorkloadInstance::from(workload))
                }
                Resource::WorkloadEntry(entry) => model.add_workload(WorkloadInstance::from(entry)),
                Resource::VirtualService(vs) => model.virtual_services.push(Config {
                    name,
                    namespace,
                    spec: vs.spec.clone(),
                }),
                Resource::DestinationRule(dr) => model.destination_rules.push(Config {
                    name,
                    namespace,
                    spec: dr.spec.clone(),
                }),
                Resource::Gateway(gw) => model.gateways.push(Config {
                    name,
                    namespace,
                    spec: gw.spec.clone(),
                }),
                Resource::Sidecar(sidecar) => model.sidecars.push(Config {
                    name,
                    namespace,
                    spec: sidecar.spec.clone(),
                }),
                _ => {}
            }
        }
        model
            .workloads
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        model.allocate_addresses();
        model.selected = model
            .services
            .values()
            .map(|service| {
                let indexes = (0..model.workloads.len())
                    .filter(|&i| service.selects(&model.workloads[i]))
                    .collect();
                (service.hostname.clone(), indexes)
            })
            .collect();
        model.fault_injection = model
            .virtual_services
            .iter()
            .any(|vs| vs.spec.http.iter().any(|h| h.fault.is_some()));
        model.cors = model
            .virtual_services
            .iter()
            .any(|vs| vs.spec.http.iter().any(|h| h.cors_policy.is_some()));
        model
    }

    /// Gives every service without a virtual IP one from [`SERVICE_CIDR`],
    /// derived from its hostname; collisions move to the next free address.
    fn allocate_addresses(&mut self) {
        let mut taken: std::collections::BTreeSet<IpAddr> =
            self.services.values().filter_map(|s| s.address).collect();
        let size = 1u32 << (32 - SERVICE_CIDR.1);
        let base = u32::from(SERVICE_CIDR.0);
        for service in self.services.values_mut().filter(|s| s.address.is_none()) {
            // Skip the network and broadcast addresses.
            let mut offset = stable_hash(&service.hostname) % (size - 2) + 1;
            loop {
                let candidate = IpAddr::V4(std::net::Ipv4Addr::from(base + offset));
                if taken.insert(candidate) {
                    service.address = Some(candidate);
                    break;
                }
                offset = offset % (size - 2) + 1;
            }
        }
    }

    fn add_workload(&mut self, instance: WorkloadInstance) {
        match Workload::from_instance(instance) {
            Ok(workload) => self.workloads.push(workload),
            Err(warning) => self.warnings.push(warning),
        }
    }

    fn add_service(&mut self, service: &k8s_openapi::api::core::v1::Service) {
        let name = service.metadata.name.clone().unwrap_or_default();
        let namespace = service
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let hostname = format!("{name}.{namespace}.svc.{}", self.domain_suffix);
        let spec = service.spec.clone().unwrap_or_default();
        let mut ports = Vec::new();
        for port in spec.ports.unwrap_or_default() {
            let Ok(number) = u16::try_from(port.port) else {
                self.warnings.push(format!(
                    "Service {namespace}/{name}: port {} is out of range",
                    port.port
                ));
                continue;
            };
            let target_port = match port.target_port {
                None => TargetPort::Number(number),
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                    TargetPort::Number(u16::try_from(n).unwrap_or(number))
                }
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => {
                    match s.parse::<u16>() {
                        Ok(n) => TargetPort::Number(n),
                        Err(_) => TargetPort::Named(s),
                    }
                }
            };
            let protocol = Protocol::from_port(port.name.as_deref(), port.app_protocol.as_deref());
            ports.push(ServicePort {
                name: port.name,
                port: number,
                target_port,
                protocol,
            });
        }
        let selector = spec.selector.map(|s| s.into_iter().collect());
        let address = match spec.cluster_ip.as_deref() {
            None | Some("") | Some("None") => None,
            Some(ip) => match ip.parse() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    self.warnings.push(format!(
                        "Service {namespace}/{name}: clusterIP {ip:?} is not an IP address"
                    ));
                    None
                }
            },
        };
        self.services.insert(
            hostname.clone(),
            Service {
                hostname,
                name,
                namespace,
                ports,
                selector,
                address,
            },
        );
    }

    /// The workload port a service port sends traffic to; a named target
    /// port is known only with the workload that names it.
    pub fn target_port(port: &ServicePort, workload: Option<&Workload>) -> Option<u16> {
        match &port.target_port {
            TargetPort::Number(n) => Some(*n),
            TargetPort::Named(name) => workload?.ports.get(name).copied(),
        }
    }

    /// The service host and port a VirtualService destination written in
    /// `namespace` names: its explicit port, else the service's only port,
    /// else the port the traffic arrived on (Istio's rule).
    pub fn destination(
        &self,
        destination: &mizzen_api::networking::Destination,
        namespace: &str,
        arrived_on: u16,
    ) -> (String, u16) {
        let host = self.resolve_host(&destination.host, namespace);
        let port = destination
            .port
            .as_ref()
            .and_then(|p| p.number)
            .and_then(|n| u16::try_from(n).ok())
            .or_else(|| {
                let service = self.services.get(&host)?;
                (service.ports.len() == 1).then(|| service.ports[0].port)
            })
            .unwrap_or(arrived_on);
        (host, port)
    }

    /// Endpoints of a service port, optionally narrowed to a subset's labels.
    pub fn endpoints(
        &self,
        service: &Service,
        port: &ServicePort,
        subset: Option<&BTreeMap<String, String>>,
    ) -> Vec<Endpoint> {
        let mut out: Vec<Endpoint> = self
            .selected
            .get(&service.hostname)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|&i| &self.workloads[i])
            .filter(|w| subset.is_none_or(|labels| labels_match(labels, &w.labels)))
            .filter_map(|w| {
                Some(Endpoint {
                    address: w.address,
                    port: Self::target_port(port, Some(w))?,
                    labels: w.labels.clone(),
                })
            })
            .collect();
        out.sort();
        out
    }

    /// Services whose selector picks the workload a sidecar fronts.
    pub fn services_of(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Vec<&Service> {
        self.services
            .values()
            .filter(|s| {
                s.namespace == namespace
                    && s.selector
                        .as_ref()
                        .is_some_and(|sel| !sel.is_empty() && labels_match(sel, labels))
            })
            .collect()
    }

    /// Resolves a host as written in Istio config in `namespace` (`reviews`,
    /// `reviews.default`, or a fully qualified name) to a service hostname.
    pub fn resolve_host(&self, host: &str, namespace: &str) -> String {
        if host.contains('*') {
            return host.to_string();
        }
        let suffix = format!(".svc.{}", self.domain_suffix);
        if host.ends_with(&suffix) || self.services.contains_key(host) {
            return host.to_string();
        }
        let dots = host.matches('.').count();
        match dots {
            0 => format!("{host}.{namespace}{suffix}"),
            1 if self.services.contains_key(&format!("{host}{suffix}")) => {
                format!("{host}{suffix}")
            }
            _ => host.to_string(),
        }
    }
}

impl Model {
    /// The workload a sidecar fronts: same namespace, and the proxy's address
    /// or, failing that, its name.
    pub fn workload_of(&self, proxy: &crate::node::ProxyNode) -> Option<&Workload> {
        let same_namespace = || {
            self.workloads
                .iter()
                .filter(|w| w.namespace == proxy.namespace)
        };
        same_namespace()
            .find(|w| w.address == proxy.ip)
            .or_else(|| same_namespace().find(|w| w.name == proxy.name))
    }

    /// Whether a config exported with `export_to` is visible from `namespace`
    /// (Istio: empty means everywhere, `.` its own namespace).
    pub fn exported(export_to: &[String], own_namespace: &str, namespace: &str) -> bool {
        export_to.is_empty()
            || export_to
                .iter()
                .any(|e| e == "*" || e == namespace || (e == "." && own_namespace == namespace))
    }

    /// The DestinationRule for a service host as seen from `namespace`: one in
    /// the client's namespace first, then one in the service's namespace,
    /// then any other.
    pub fn destination_rule(
        &self,
        hostname: &str,
        namespace: &str,
    ) -> Option<&Config<mizzen_api::networking::DestinationRule>> {
        let service_namespace = self.services.get(hostname).map(|s| s.namespace.as_str());
        let candidates: Vec<_> = self
            .destination_rules
            .iter()
            .filter(|dr| {
                let host = self.resolve_host(&dr.spec.host, &dr.namespace);
                crate::translate::host_covers(&host, hostname)
                    && Self::exported(&dr.spec.export_to, &dr.namespace, namespace)
            })
            .collect();
        candidates
            .iter()
            .find(|dr| dr.namespace == namespace)
            .or_else(|| {
                candidates
                    .iter()
                    .find(|dr| Some(dr.namespace.as_str()) == service_namespace)
            })
            .or_else(|| candidates.first())
            .copied()
    }

    /// The labels of a DestinationRule subset of a service host.
    pub fn subset_labels(
        &self,
        hostname: &str,
        subset: &str,
        namespace: &str,
    ) -> Option<BTreeMap<String, String>> {
        let rule = self.destination_rule(hostname, namespace)?;
        let subset = rule.spec.subsets.iter().find(|s| s.name == subset)?;
        Some(subset.labels.clone().into_iter().collect())
    }

    /// The VirtualService that routes `hostname` for traffic through
    /// `gateway` (`mesh` for sidecars) as seen from `namespace`: an exact host
    /// match before a wildcard one, then config order.
    pub fn virtual_service_for(
        &self,
        hostname: &str,
        namespace: &str,
        gateway: &str,
    ) -> Option<&Config<mizzen_api::networking::VirtualService>> {
        let applies = |vs: &&Config<mizzen_api::networking::VirtualService>| {
            let gateways_ok = if vs.spec.gateways.is_empty() {
                gateway == "mesh"
            } else {
                vs.spec.gateways.iter().any(|g| g == gateway)
            };
            gateways_ok && Self::exported(&vs.spec.export_to, &vs.namespace, namespace)
        };
        let hosts = |vs: &Config<mizzen_api::networking::VirtualService>| {
            vs.spec
                .hosts
                .iter()
                .map(|h| self.resolve_host(h, &vs.namespace))
                .collect::<Vec<_>>()
        };
        self.virtual_services
            .iter()
            .filter(applies)
            .find(|vs| hosts(vs).iter().any(|h| h == hostname))
            .or_else(|| {
                self.virtual_services.iter().filter(applies).find(|vs| {
                    hosts(vs)
                        .iter()
                        .any(|h| crate::translate::host_covers(h, hostname))
                })
            })
    }
}

/// What a sidecar does with traffic to destinations the mesh does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundPolicy {
    AllowAny,
    RegistryOnly,
}

impl Model {
    /// The Sidecar resource that applies to a workload, as Istio picks it: one
    /// in its namespace whose selector matches, else one in its namespace
    /// without selector, else one without selector in the root namespace.
    pub fn sidecar_for(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<&Config<mizzen_api::networking::Sidecar>> {
        let in_namespace = |ns: &str| {
            self.sidecars
                .iter()
                .filter(|s| s.namespace == ns)
                .collect::<Vec<_>>()
        };
        let local = in_namespace(namespace);
        local
            .iter()
            .find(|s| {
                s.spec
                    .workload_selector
                    .as_ref()
                    .is_some_and(|sel| !sel.labels.is_empty() && labels_match(&sel.labels, labels))
            })
            .or_else(|| local.iter().find(|s| s.spec.workload_selector.is_none()))
            .copied()
            .or_else(|| {
                in_namespace(ROOT_NAMESPACE)
                    .into_iter()
                    .find(|s| s.spec.workload_selector.is_none())
            })
    }

    /// The outbound traffic policy of a workload (mesh default: ALLOW_ANY).
    pub fn outbound_policy(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> OutboundPolicy {
        use mizzen_api::networking::OutboundTrafficPolicyMode;
        match self
            .sidecar_for(namespace, labels)
            .and_then(|s| s.spec.outbound_traffic_policy.as_ref())
            .and_then(|p| p.mode)
        {
            Some(OutboundTrafficPolicyMode::RegistryOnly) => OutboundPolicy::RegistryOnly,
            _ => OutboundPolicy::AllowAny,
        }
    }
}

/// Istio's root namespace: mesh-wide config lives there.
pub const ROOT_NAMESPACE: &str = "istio-system";
