//! The local pod runtime: the mesh in network namespaces with iptables
//! capture, as Kubernetes and Istio's init container would set it up.
//!
//! Each `Workload` of the config directory becomes a pod at its address on
//! Mizzen's bridge. A meshed pod gets the capture rules (`mizzen proxy
//! capture`, Istio's istio-iptables) and a sidecar running as uid 1337; a
//! pod with `sidecar: false` is a legacy pod with kube-proxy-like rules that
//! send service virtual IPs to endpoints; a workload labelled
//! `istio: ingressgateway` or `istio: egressgateway` is a gateway pod. Apps
//! run as their own uid. The pilot runs in this process and listens on the
//! host's bridge address.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use mizzen_pilot::model::{Model, Workload};
use mizzen_pilot::{Pilot, PilotOptions};

use crate::local::AppSpec;
use crate::netns::{self, NetworkConfig, PodNetwork, Process};

/// The uid of every proxy, which the capture rules let through.
pub const PROXY_UID: u32 = 1337;
/// Apps get uids from here on.
const FIRST_APP_UID: u32 = 2001;

pub struct PodOptions {
    pub config_dir: PathBuf,
    /// The `mizzen` binary: pods run `mizzen proxy ...` and `mizzen app`.
    pub binary: PathBuf,
    /// Where process logs go.
    pub log_dir: PathBuf,
    pub debug_address: SocketAddr,
    /// Apps by workload (`namespace/name`).
    pub apps: BTreeMap<String, AppSpec>,
    /// Host addresses forwarded to a gateway pod's port, like
    /// `kubectl port-forward`: (host address, workload, pod port).
    pub forwards: Vec<(SocketAddr, String, u16)>,
    pub network: NetworkConfig,
    /// The mesh CA's directory: with one, the pilot signs workload
    /// certificates on the host's bridge address port 15012, each proxy
    /// gets a bootstrap token for its service account, and the mesh runs
    /// mutual TLS.
    pub ca_dir: Option<PathBuf>,
}

/// The pilot's certificate service port (Istio's 15012).
pub const CA_PORT: u16 = 15012;
/// Where each pod's credentials go (`SECRETS_DIR/<netns>/`), like the
/// projected token and root-cert volumes of an Istio pod; removed with the
/// pod's namespace.
const SECRETS_DIR: &str = netns::POD_SECRETS_DIR;

pub struct PodMesh {
    pub pilot: Pilot,
    tokens: mizzen_identity::auth::StaticTokens,
    network: Option<PodNetwork>,
    forwards: Vec<tokio::task::JoinHandle<()>>,
    /// Pod names (`namespace/name`) and their network namespaces.
    pub pods: BTreeMap<String, String>,
}

fn is_gateway(workload: &Workload) -> bool {
    matches!(
        workload.labels.get("istio").map(String::as_str),
        Some("ingressgateway" | "egressgateway")
    )
}

fn key(workload: &Workload) -> String {
    format!("{}/{}", workload.namespace, workload.name)
}

/// Istio's node id of a workload's proxy: `KIND~IP~NAME.NS~NS.svc.DOMAIN`.
pub(crate) fn node_id(kind: &str, workload: &Workload) -> String {
    format!(
        "{kind}~{}~{}.{}~{}.svc.{}",
        workload.address,
        workload.name,
        workload.namespace,
        workload.namespace,
        mizzen_pilot::DEFAULT_DOMAIN_SUFFIX
    )
}

impl PodMesh {
    pub async fn start(options: PodOptions) -> anyhow::Result<PodMesh> {
        let workloads = crate::local::workloads(&options.config_dir)?;
        let config = &options.network;
        for workload in &workloads {
            let in_range = match workload.address {
                IpAddr::V4(ip) => config.contains(ip) && ip != config.host_address,
                IpAddr::V6(_) => false,
            };
            if !in_range {
                bail!(
                    "Workload {}: address {} is outside the pod network {}/{} (the host has {})",
                    key(workload),
                    workload.address,
                    config.cidr.0,
                    config.cidr.1,
                    config.host_address
                );
            }
        }
        std::fs::create_dir_all(&options.log_dir)
            .with_context(|| format!("creating {}", options.log_dir.display()))?;
        let network = PodNetwork::create(options.network.clone())?;
        let tokens = mizzen_identity::auth::StaticTokens::new();
        let host = options.network.host_address;
        let pilot = Pilot::start(PilotOptions {
            xds_address: SocketAddr::from((host, 15010)),
            debug_address: options.debug_address,
            ca: options.ca_dir.as_ref().map(|dir| mizzen_pilot::CaOptions {
                address: SocketAddr::from((host, CA_PORT)),
                serving_names: vec!["istiod.istio-system.svc".to_string(), host.to_string()],
                ..mizzen_pilot::CaOptions::new(dir, tokens.clone())
            }),
            ..PilotOptions::new(&options.config_dir)
        })
        .await?;
        let mut mesh = PodMesh {
            pilot,
            tokens,
            network: Some(network),
            forwards: Vec::new(),
            pods: BTreeMap::new(),
        };
        if let Err(error) = mesh.start_pods(&options, &workloads).await {
            mesh.stop().await;
            return Err(error);
        }
        Ok(mesh)
    }

    async fn start_pods(
        &mut self,
        options: &PodOptions,
        workloads: &[Workload],
    ) -> anyhow::Result<()> {
        let model = self.pilot.state().model.load_full();
        let services: Vec<(String, String, IpAddr)> = model
            .services
            .values()
            .filter(|s| s.entry.is_none())
            .filter_map(|s| Some((s.name.clone(), s.namespace.clone(), s.address?)))
            .collect();
        let external = external_hosts(&model);
        let network = self.network.as_mut().context("pod network gone")?;
        let xds = format!("http://{}", self.pilot.xds_address());
        let mut proxies = Vec::new();
        let mut next_uid = FIRST_APP_UID;
        for workload in workloads {
            let key = key(workload);
            let IpAddr::V4(ip) = workload.address else {
                continue;
            };
            let hosts = netns::hosts_file(
                &workload.name,
                ip,
                &workload.namespace,
                &services,
                &external,
                mizzen_pilot::DEFAULT_DOMAIN_SUFFIX,
            );
            network.add_pod(&key, ip, &hosts)?;
            let log = |what: &str| {
                options.log_dir.join(format!(
                    "{}.{}.{what}.log",
                    workload.namespace, workload.name
                ))
            };
            let labels = serde_json::to_string(&workload.labels)?;
            let credentials = match (self.pilot.ca(), self.pilot.ca_address()) {
                (Some(ca), Some(address)) if is_gateway(workload) || workload.sidecar => {
                    let netns = network
                        .pod(&key)
                        .map(|p| p.netns.clone())
                        .unwrap_or_default();
                    write_credentials(&self.tokens, ca.root_bundle(), &netns, workload)?
                        .into_iter()
                        .chain(["--ca-address".to_string(), format!("https://{address}")])
                        .collect()
                }
                _ => Vec::new(),
            };
            let proxy_args = |role: &str| -> Vec<String> {
                vec![
                    "proxy".into(),
                    "proxy".into(),
                    role.into(),
                    "--xds-address".into(),
                    xds.clone(),
                    "--admin-address".into(),
                    "127.0.0.1:15000".into(),
                    "--concurrency".into(),
                    "1".into(),
                    "--pod-name".into(),
                    workload.name.clone(),
                    "--pod-namespace".into(),
                    workload.namespace.clone(),
                    "--instance-ip".into(),
                    ip.to_string(),
                    "--service-account".into(),
                    workload.service_account.clone(),
                    "--meta".into(),
                    format!("LABELS={labels}"),
                ]
                .into_iter()
                .chain(credentials.iter().cloned())
                .collect()
            };
            if is_gateway(workload) {
                network.spawn(
                    &key,
                    Process {
                        label: "gateway",
                        uid: PROXY_UID,
                        program: &options.binary,
                        args: &proxy_args("router"),
                        env: &[],
                        log: &log("proxy"),
                    },
                )?;
                proxies.push(node_id("router", workload));
            } else if workload.sidecar {
                // The init container's work: capture the pod's traffic.
                let binary = options.binary.to_string_lossy().to_string();
                network.exec(
                    &key,
                    &[
                        &binary,
                        "proxy",
                        "capture",
                        "-p",
                        "15001",
                        "-z",
                        "15006",
                        "-u",
                        "1337",
                        "-g",
                        "1337",
                        "-m",
                        "REDIRECT",
                        "-i",
                        "*",
                        "-b",
                        "*",
                        "-d",
                        "15090,15021,15020",
                    ],
                )?;
                network.spawn(
                    &key,
                    Process {
                        label: "sidecar",
                        uid: PROXY_UID,
                        program: &options.binary,
                        args: &proxy_args("sidecar"),
                        env: &[],
                        log: &log("proxy"),
                    },
                )?;
                proxies.push(node_id("sidecar", workload));
            } else {
                install_service_routing(network, &key, &model)?;
            }
            if let Some(spec) = options.apps.get(&key) {
                let env = app_env(&spec.config, spec.port);
                network.spawn(
                    &key,
                    Process {
                        label: "app",
                        uid: next_uid,
                        program: &options.binary,
                        args: &["app".to_string()],
                        env: &env,
                        log: &log("app"),
                    },
                )?;
                next_uid += 1;
            }
            self.pods.insert(
                key.clone(),
                network
                    .pod(&key)
                    .map(|p| p.netns.clone())
                    .unwrap_or_default(),
            );
        }
        self.wait_synced(&proxies).await?;
        for (host, workload, port) in &options.forwards {
            let ip = workloads
                .iter()
                .find(|w| &key(w) == workload)
                .map(|w| w.address)
                .with_context(|| format!("no workload {workload} to forward {host} to"))?;
            let listener = tokio::net::TcpListener::bind(host)
                .await
                .with_context(|| format!("cannot listen on {host}"))?;
            self.forwards
                .push(tokio::spawn(forward(listener, SocketAddr::new(ip, *port))));
        }
        Ok(())
    }

    /// Waits until every proxy has connected and acknowledged what it was sent.
    async fn wait_synced(&self, proxies: &[String]) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.pilot.state().sync.snapshot();
            let synced = |id: &String| {
                status.iter().any(|c| {
                    &c.node_id == id
                        && ["CDS", "LDS"].iter().all(|t| c.types.contains_key(t))
                        && c.types.values().all(|t| t.state() == "SYNCED")
                })
            };
            let missing: Vec<&String> = proxies.iter().filter(|id| !synced(id)).collect();
            if missing.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("proxies not ready after 30 s: {missing:?} (see the proxy logs)");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn network(&self) -> Option<&PodNetwork> {
        self.network.as_ref()
    }

    pub async fn stop(mut self) {
        for task in self.forwards.drain(..) {
            task.abort();
        }
        if let Some(network) = self.network.take() {
            // Process shutdown waits; keep the runtime free.
            let _ = tokio::task::spawn_blocking(move || network.destroy()).await;
        }
        self.pilot.shutdown();
    }
}

/// Where the hosts of ServiceEntries resolve inside pods, standing in for
/// the DNS that would answer for them outside: the entry's own address,
/// else (resolution STATIC) its first endpoint — what a name of a server
/// outside the mesh resolves to. Either way the connection is captured
/// and the sidecar routes it by the ServiceEntry. Wildcard hosts and hosts
/// with nothing to resolve to get no line.
fn external_hosts(model: &Model) -> Vec<(String, IpAddr)> {
    model
        .services
        .values()
        .filter(|s| !s.hostname.contains('*'))
        .filter_map(|service| {
            let entry = service.entry.as_ref()?;
            let address = service.address.or_else(|| {
                (entry.resolution == mizzen_pilot::model::Resolution::Static)
                    .then(|| entry.endpoints.iter().find_map(|e| e.address.parse().ok()))
                    .flatten()
            })?;
            Some((service.hostname.clone(), address))
        })
        .collect()
}

/// Writes a pod's bootstrap token (for its service account) and the mesh
/// root, readable by the proxy's uid only, and returns the proxy flags that
/// point at them — what Istio mounts at /var/run/secrets/tokens/istio-token
/// and /var/run/secrets/istio/root-cert.pem.
fn write_credentials(
    tokens: &mizzen_identity::auth::StaticTokens,
    root_pem: &str,
    netns: &str,
    workload: &Workload,
) -> anyhow::Result<Vec<String>> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::path::Path::new(SECRETS_DIR).join(netns);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::os::unix::fs::chown(&dir, Some(PROXY_UID), Some(PROXY_UID))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let identity = mizzen_identity::Identity::in_default_domain(
        &workload.namespace,
        &workload.service_account,
    )?;
    let token_path = dir.join("istio-token");
    tokens
        .mint_to_file(identity, &token_path)
        .with_context(|| format!("writing {}", token_path.display()))?;
    std::os::unix::fs::chown(&token_path, Some(PROXY_UID), Some(PROXY_UID))?;
    let root_path = dir.join("root-cert.pem");
    std::fs::write(&root_path, root_pem)
        .with_context(|| format!("writing {}", root_path.display()))?;
    Ok(vec![
        "--token-file".to_string(),
        token_path.display().to_string(),
        "--ca-root-cert".to_string(),
        root_path.display().to_string(),
    ])
}

fn app_env(config: &mizzen_testkit::demo_app::AppConfig, port: u16) -> Vec<(String, String)> {
    let mut env = vec![
        ("NAME".to_string(), config.name.clone()),
        ("VERSION".to_string(), config.version.clone()),
        ("LISTEN_ADDR".to_string(), format!("0.0.0.0:{port}")),
        ("ERROR_RATE".to_string(), config.error_rate.to_string()),
        ("ERROR_CODE".to_string(), config.error_code.to_string()),
        ("MESSAGE".to_string(), config.message.clone()),
    ];
    if !config.upstream_uris.is_empty() {
        env.push(("UPSTREAM_URIS".to_string(), config.upstream_uris.join(",")));
    }
    if !config.extra_ports.is_empty() {
        let ports: Vec<String> = config.extra_ports.iter().map(u16::to_string).collect();
        env.push(("EXTRA_PORTS".to_string(), ports.join(",")));
    }
    if config.echo_request {
        env.push(("ECHO_REQUEST".to_string(), "true".to_string()));
    }
    env
}

/// What kube-proxy would do for a pod without a sidecar: connections to a
/// service's virtual IP go to one of its endpoints, chosen at random.
fn install_service_routing(network: &PodNetwork, key: &str, model: &Model) -> anyhow::Result<()> {
    let mut rules = String::from("*nat\n:MIZZEN-SERVICES - [0:0]\n-A OUTPUT -j MIZZEN-SERVICES\n");
    for service in model.services.values() {
        let Some(vip) = service.address else { continue };
        for port in &service.ports {
            let endpoints = model.endpoints(service, port, None);
            let count = endpoints.len();
            for (index, endpoint) in endpoints.iter().enumerate() {
                // Each rule takes its share of what the earlier ones left.
                let remaining = count - index;
                let statistic = if remaining > 1 {
                    format!(
                        " -m statistic --mode random --probability {:.5}",
                        1.0 / remaining as f64
                    )
                } else {
                    String::new()
                };
                rules.push_str(&format!(
                    "-A MIZZEN-SERVICES -d {vip}/32 -p tcp --dport {}{statistic} -j DNAT --to-destination {}:{}\n",
                    port.port, endpoint.address, endpoint.port
                ));
            }
        }
    }
    rules.push_str("COMMIT\n");
    let pod = network.pod(key).context("pod vanished")?;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &pod.netns, "iptables-restore", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running iptables-restore")?;
    use std::io::Write;
    child
        .stdin
        .take()
        .context("iptables-restore stdin")?
        .write_all(rules.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "iptables-restore in pod {key}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Relays connections from a host address to a pod, like `kubectl port-forward`.
async fn forward(listener: tokio::net::TcpListener, target: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// Rewrites the loopback demo's workload addresses to pod addresses.
pub fn pod_addresses(workloads_yaml: &str) -> String {
    let mut text = workloads_yaml.to_string();
    for n in 1..=9u8 {
        text = text.replace(
            &format!("127.10.0.{n}"),
            &Ipv4Addr::new(10, 213, 0, 10 + n).to_string(),
        );
    }
    text.replace("127.0.0.1", &Ipv4Addr::new(10, 213, 0, 10).to_string())
}

/// The `mizzen` binary to run inside pods: this one, unless told otherwise.
pub fn default_binary() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("locating the mizzen binary")
}
