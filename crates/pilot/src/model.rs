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
    /// The mutual TLS its sidecar accepts (PeerAuthentication).
    pub peer: crate::peer::PeerPolicy,
    /// Its `locality`, else the one its labels give.
    pub locality: Option<crate::node::Locality>,
}

impl Workload {
    fn from_instance(instance: WorkloadInstance) -> Result<Self, String> {
        let address = instance.address.parse().map_err(|_| {
            format!(
                "{}/{}: address {:?} is not an IP address; it is left out of the registry",
                instance.namespace, instance.name, instance.address
            )
        })?;
        let locality = match &instance.locality {
            Some(text) => crate::node::Locality::parse(text),
            None => crate::node::Locality::from_labels(&instance.labels),
        };
        Ok(Workload {
            locality,
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
            peer: Default::default(),
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
    /// The namespaces that see the service (`exportTo` of a ServiceEntry,
    /// the `networking.istio.io/exportTo` annotation of a Service); empty
    /// means every namespace.
    pub export_to: Vec<String>,
    /// What a ServiceEntry says about a host it declares; None for a
    /// Kubernetes Service.
    pub entry: Option<ServiceEntryInfo>,
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
    /// Whether clients should send Istio mutual TLS to it (auto mTLS): a
    /// sidecar runs beside it and its PeerAuthentication does not disable
    /// mutual TLS on this port.
    pub mtls: bool,
    /// Its workload's locality, for locality load balancing.
    pub locality: Option<crate::node::Locality>,
}

/// The TLS entries of a Kubernetes Secret: a key pair (`tls.crt`/`tls.key`
/// or `cert`/`key`) and a CA (`ca.crt` or `cacert`), PEM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretData {
    pub cert: Option<Vec<u8>>,
    pub key: Option<Vec<u8>>,
    pub ca: Option<Vec<u8>>,
}

impl SecretData {
    fn from_secret(secret: &k8s_openapi::api::core::v1::Secret) -> SecretData {
        let get = |keys: &[&str]| -> Option<Vec<u8>> {
            keys.iter().find_map(|key| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(*key))
                    .map(|v| v.as_bytes().to_vec())
                    .or_else(|| secret.data.as_ref()?.get(*key).map(|v| v.0.clone()))
            })
        };
        SecretData {
            cert: get(&["tls.crt", "cert"]),
            key: get(&["tls.key", "key"]),
            ca: get(&["ca.crt", "cacert"]),
        }
    }
}

/// A config object with where it lives, as translation needs it.
#[derive(Debug, Clone)]
pub struct Config<T> {
    pub name: String,
    pub namespace: String,
    pub spec: T,
}

/// Mesh-wide settings the model is built with (Istio's MeshConfig).
#[derive(Debug, Clone)]
pub struct MeshSettings {
    /// DNS suffix of service hostnames.
    pub domain_suffix: String,
    /// The trust domain of workload identities.
    pub trust_domain: String,
    /// Whether sidecars have workload certificates, so that the mesh runs
    /// mutual TLS (automatic mTLS to sidecars, PeerAuthentication on
    /// inbound). Istio always has a CA; a pilot without one serves
    /// plaintext config.
    pub mtls: bool,
}

impl MeshSettings {
    pub fn new(domain_suffix: &str) -> MeshSettings {
        MeshSettings {
            domain_suffix: domain_suffix.to_string(),
            trust_domain: mizzen_identity::DEFAULT_TRUST_DOMAIN.to_string(),
            mtls: false,
        }
    }
}

#[derive(Debug, Default)]
pub struct Model {
    pub domain_suffix: String,
    pub trust_domain: String,
    /// See [`MeshSettings::mtls`].
    pub mtls: bool,
    pub peer_authentications: Vec<Config<mizzen_api::security::PeerAuthentication>>,
    /// TLS material of Kubernetes Secrets, by (namespace, name).
    pub secrets: BTreeMap<(String, String), SecretData>,
    /// By hostname.
    pub services: BTreeMap<String, Service>,
    pub workloads: Vec<Workload>,
    /// Indexes into `workloads` of the workloads each service selects, by
    /// hostname: computed once per model so that endpoint lookups, done for
    /// every cluster of every proxy, do not scan every workload.
    selected: BTreeMap<String, Vec<usize>>,
    /// Who may serve each service (secure naming), by hostname: the same
    /// for every proxy, so computed once per model, and only when the mesh
    /// runs mutual TLS.
    identities: BTreeMap<String, Vec<String>>,
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
        Self::build_with(snapshot, &MeshSettings::new(domain_suffix))
    }

    pub fn build_with(snapshot: &ConfigSnapshot, settings: &MeshSettings) -> Model {
        let mut entries = Vec::new();
        let mut model = Model {
            domain_suffix: settings.domain_suffix.clone(),
            trust_domain: settings.trust_domain.clone(),
            mtls: settings.mtls,
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
                Resource::Secret(secret) => {
                    model
                        .secrets
                        .insert((namespace, name), SecretData::from_secret(secret));
                }
                Resource::PeerAuthentication(policy) => model.peer_authentications.push(Config {
                    name,
                    namespace,
                    spec: policy.spec.clone(),
                }),
                Resource::ServiceEntry(entry) => entries.push(Config {
                    name,
                    namespace,
                    spec: entry.spec.clone(),
                }),
                _ => {}
            }
        }
        // After the Kubernetes Services, which keep their hostnames.
        entries.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        for entry in &entries {
            model.add_service_entry(entry);
        }
        model
            .workloads
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        model
            .peer_authentications
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        if !model.mtls && !model.peer_authentications.is_empty() {
            model.warnings.push(
                "PeerAuthentication has no effect: the pilot runs without a CA, so the mesh has no mutual TLS"
                    .to_string(),
            );
        }
        for workload in &mut model.workloads {
            workload.peer = crate::peer::resolve(
                &model.peer_authentications,
                &workload.namespace,
                &workload.labels,
            );
        }
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
        if model.mtls {
            model.identities = model
                .services
                .values()
                .map(|service| (service.hostname.clone(), model.compute_identities(service)))
                .collect();
        }
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
        for service in self
            .services
            .values_mut()
            .filter(|s| s.address.is_none() && s.wants_address())
        {
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
        let export_to = service
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(EXPORT_TO_ANNOTATION))
            .map(|value| {
                value
                    .split(',')
                    .map(|ns| ns.trim().to_string())
                    .filter(|ns| !ns.is_empty())
                    .collect()
            })
            .unwrap_or_default();
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
                export_to,
                entry: None,
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

    /// The workloads a service's selector picks (indexed once per model).
    fn selected_workloads(&self, service: &Service) -> impl Iterator<Item = &Workload> {
        self.selected
            .get(&service.hostname)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|&i| &self.workloads[i])
    }

    /// Endpoints of a service port, optionally narrowed to a subset's labels.
    pub fn endpoints(
        &self,
        service: &Service,
        port: &ServicePort,
        subset: Option<&BTreeMap<String, String>>,
    ) -> Vec<Endpoint> {
        let mut out: Vec<Endpoint> = self
            .selected_workloads(service)
            .filter(|w| subset.is_none_or(|labels| labels_match(labels, &w.labels)))
            .filter_map(|w| {
                let target = match &service.entry {
                    Some(_) => entry_target_port(port, &w.ports),
                    None => Self::target_port(port, Some(w))?,
                };
                let internal = service.entry.as_ref().is_none_or(|e| !e.mesh_external);
                Some(Endpoint {
                    address: w.address,
                    port: target,
                    mtls: self.mtls && internal && w.sidecar && w.peer.accepts_mtls(target),
                    locality: w.locality.clone(),
                })
            })
            .collect();
        if let Some(entry) = &service.entry {
            out.extend(self.entry_ip_endpoints(entry, port, subset));
        }
        out.sort();
        out
    }

    /// The SPIFFE identities of the workloads behind a service: who may
    /// serve it (Istio's secure naming), sorted. Empty when the mesh runs
    /// no mutual TLS.
    pub fn service_identities(&self, service: &Service) -> &[String] {
        self.identities
            .get(&service.hostname)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    fn compute_identities(&self, service: &Service) -> Vec<String> {
        let mut out: Vec<String> = self
            .selected_workloads(service)
            .map(|w| self.spiffe_id(&w.namespace, &w.service_account))
            .chain(
                service
                    .entry
                    .iter()
                    .flat_map(|e| e.subject_alt_names.iter().cloned()),
            )
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`.
    pub fn spiffe_id(&self, namespace: &str, service_account: &str) -> String {
        format!(
            "spiffe://{}/ns/{namespace}/sa/{service_account}",
            self.trust_domain
        )
    }

    /// The PeerAuthentication policy of the workload a sidecar fronts (from
    /// the proxy's own namespace and labels when it has no registered
    /// workload).
    pub fn peer_policy(&self, proxy: &crate::node::ProxyNode) -> crate::peer::PeerPolicy {
        match self.workload_of(proxy) {
            Some(workload) => workload.peer.clone(),
            None => {
                crate::peer::resolve(&self.peer_authentications, &proxy.namespace, &proxy.labels)
            }
        }
    }

    /// The TLS entries of Secret `namespace/name`.
    pub fn secret_data(&self, namespace: &str, name: &str) -> Option<&SecretData> {
        self.secrets.get(&(namespace.to_string(), name.to_string()))
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

/// The annotation a Kubernetes Service restricts its visibility with
/// (comma-separated namespaces, `.` or `*`), as Istio reads it.
pub const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";

/// How the endpoints of a ServiceEntry host are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Connections go where the client sent them (no endpoints needed).
    None,
    /// The declared endpoints, as IP addresses.
    Static,
    /// Every address DNS gives for the host or its endpoints.
    Dns,
    /// One address DNS gives, per connection.
    DnsRoundRobin,
}

/// An inline endpoint of a ServiceEntry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryEndpoint {
    /// An IP address or, with DNS resolution, a hostname.
    pub address: String,
    /// Port name to number; a port not named here uses the service port's
    /// target port.
    pub ports: BTreeMap<String, u16>,
    pub labels: BTreeMap<String, String>,
    pub network: Option<String>,
    pub weight: Option<u32>,
    pub locality: Option<crate::node::Locality>,
}

/// What a ServiceEntry says about one of its hosts.
#[derive(Debug, Clone)]
pub struct ServiceEntryInfo {
    /// The ServiceEntry's name.
    pub name: String,
    /// MESH_EXTERNAL: the endpoints run no sidecar, so no automatic mutual
    /// TLS.
    pub mesh_external: bool,
    pub resolution: Resolution,
    pub endpoints: Vec<EntryEndpoint>,
    /// The identities the endpoints may present (secure naming).
    pub subject_alt_names: Vec<String>,
}

/// The port an endpoint of a ServiceEntry serves a service port on: the
/// endpoint's port of the same name, else the target port.
fn entry_target_port(port: &ServicePort, named: &BTreeMap<String, u16>) -> u16 {
    port.name
        .as_ref()
        .and_then(|name| named.get(name).copied())
        .unwrap_or(match port.target_port {
            TargetPort::Number(n) => n,
            TargetPort::Named(_) => port.port,
        })
}

impl Service {
    /// Whether the service should get a virtual IP when it declares none:
    /// not for wildcard hosts, nor for `resolution: NONE` entries, whose
    /// clients connect to the real address (Istio allocates none either).
    fn wants_address(&self) -> bool {
        match &self.entry {
            None => true,
            Some(entry) => !self.hostname.contains('*') && entry.resolution != Resolution::None,
        }
    }

    /// Whether the service comes from a ServiceEntry marked MESH_EXTERNAL.
    pub fn mesh_external(&self) -> bool {
        self.entry.as_ref().is_some_and(|e| e.mesh_external)
    }

    /// The endpoint port a service port maps to for an inline ServiceEntry
    /// endpoint.
    pub fn entry_port(port: &ServicePort, endpoint: &EntryEndpoint) -> u16 {
        entry_target_port(port, &endpoint.ports)
    }
}

impl Model {
    /// One service per host of a ServiceEntry. A host that a Kubernetes
    /// Service or an earlier entry already declares keeps that one.
    fn add_service_entry(&mut self, config: &Config<mizzen_api::networking::ServiceEntry>) {
        use mizzen_api::networking::{Location, Resolution as ApiResolution};
        let spec = &config.spec;
        let what = format!("ServiceEntry {}/{}", config.namespace, config.name);
        let resolution = match spec.resolution {
            None | Some(ApiResolution::None) => Resolution::None,
            Some(ApiResolution::Static) => Resolution::Static,
            Some(ApiResolution::Dns) | Some(ApiResolution::DynamicDns) => Resolution::Dns,
            Some(ApiResolution::DnsRoundRobin) => Resolution::DnsRoundRobin,
        };
        let mut ports = Vec::new();
        for port in &spec.ports {
            let (Ok(number), Ok(target)) = (
                u16::try_from(port.number),
                u16::try_from(port.target_port.unwrap_or(port.number)),
            ) else {
                self.warnings
                    .push(format!("{what}: port {} is out of range", port.number));
                continue;
            };
            ports.push(ServicePort {
                name: Some(port.name.clone()),
                port: number,
                target_port: TargetPort::Number(target),
                protocol: Protocol::from_port(Some(&port.name), port.protocol.as_deref()),
            });
        }
        let endpoints: Vec<EntryEndpoint> = spec
            .endpoints
            .iter()
            .filter_map(|e| {
                let address = e.address.clone()?;
                Some(EntryEndpoint {
                    address,
                    ports: e
                        .ports
                        .iter()
                        .filter_map(|(name, p)| Some((name.clone(), u16::try_from(*p).ok()?)))
                        .collect(),
                    labels: e.labels.clone(),
                    network: e.network.clone(),
                    weight: e.weight,
                    locality: match &e.locality {
                        Some(text) => crate::node::Locality::parse(text),
                        None => crate::node::Locality::from_labels(&e.labels),
                    },
                })
            })
            .collect();
        if resolution == Resolution::Static
            && let Some(bad) = endpoints
                .iter()
                .find(|e| e.address.parse::<IpAddr>().is_err())
        {
            self.warnings.push(format!(
                "{what}: endpoint address {:?} is not an IP address, which resolution STATIC needs",
                bad.address
            ));
        }
        // Only single IP addresses make virtual IPs (a CIDR range does not),
        // and only the first host gets them: two hosts on one address would
        // claim the same listener and route domains.
        let mut address = spec
            .addresses
            .iter()
            .find_map(|a| a.strip_suffix("/32").unwrap_or(a).parse::<IpAddr>().ok());
        for host in &spec.hosts {
            if self.services.contains_key(host) {
                self.warnings.push(format!(
                    "{what}: host {host} is already declared; this entry's is ignored"
                ));
                continue;
            }
            let info = ServiceEntryInfo {
                name: config.name.clone(),
                mesh_external: spec.location != Some(Location::MeshInternal),
                resolution,
                endpoints: endpoints.clone(),
                subject_alt_names: spec.subject_alt_names.clone(),
            };
            self.services.insert(
                host.clone(),
                Service {
                    hostname: host.clone(),
                    name: host.clone(),
                    namespace: config.namespace.clone(),
                    ports: ports.clone(),
                    selector: spec
                        .workload_selector
                        .as_ref()
                        .map(|s| s.labels.clone().into_iter().collect()),
                    address: address.take(),
                    export_to: spec.export_to.clone(),
                    entry: Some(info),
                },
            );
        }
    }

    /// The inline endpoints of an entry with IP addresses, for EDS.
    fn entry_ip_endpoints(
        &self,
        entry: &ServiceEntryInfo,
        port: &ServicePort,
        subset: Option<&BTreeMap<String, String>>,
    ) -> Vec<Endpoint> {
        entry
            .endpoints
            .iter()
            .filter(|e| subset.is_none_or(|labels| labels_match(labels, &e.labels)))
            .filter_map(|e| {
                let address = e.address.parse().ok()?;
                let tls_mode = e.labels.get(mizzen_api::TLS_MODE_LABEL).map(String::as_str);
                Some(Endpoint {
                    address,
                    port: Service::entry_port(port, e),
                    mtls: self.mtls && !entry.mesh_external && tls_mode == Some("istio"),
                    locality: e.locality.clone(),
                })
            })
            .collect()
    }

    /// The services a proxy gets configuration for: those exported to its
    /// namespace and, for a sidecar whose Sidecar resource lists egress
    /// hosts, those the hosts name (Istio's sidecar scoping).
    pub fn visible_services<'a>(
        &'a self,
        proxy: &'a crate::node::ProxyNode,
    ) -> impl Iterator<Item = &'a Service> + 'a {
        let egress = self.egress_hosts(proxy);
        self.services.values().filter(move |service| {
            Self::exported(&service.export_to, &service.namespace, &proxy.namespace)
                && egress.as_ref().is_none_or(|hosts| {
                    hosts
                        .iter()
                        .any(|(ns, host)| egress_host_covers(ns, host, service, &proxy.namespace))
                })
        })
    }

    /// The `egress[].hosts` of the Sidecar resource of a sidecar proxy, as
    /// (namespace, host) pairs; None when nothing restricts it.
    fn egress_hosts(&self, proxy: &crate::node::ProxyNode) -> Option<Vec<(String, String)>> {
        if proxy.kind != crate::node::ProxyKind::Sidecar {
            return None;
        }
        let sidecar = self.sidecar_for(&proxy.namespace, &proxy.labels)?;
        if sidecar.spec.egress.is_empty() {
            return None;
        }
        Some(
            sidecar
                .spec
                .egress
                .iter()
                .flat_map(|e| e.hosts.iter())
                .map(|h| match h.split_once('/') {
                    Some((ns, host)) => (ns.to_string(), host.to_string()),
                    None => ("*".to_string(), h.clone()),
                })
                .collect(),
        )
    }
}

/// Whether a Sidecar egress host `namespace/host` takes in a service, seen
/// from a proxy in `proxy_namespace` (`.` is the proxy's namespace, `~` no
/// namespace at all).
fn egress_host_covers(
    namespace: &str,
    host: &str,
    service: &Service,
    proxy_namespace: &str,
) -> bool {
    let namespace_ok = match namespace {
        "*" => true,
        "~" => false,
        "." => service.namespace == proxy_namespace,
        ns => service.namespace == ns,
    };
    namespace_ok && crate::translate::host_covers(host, &service.hostname)
}
