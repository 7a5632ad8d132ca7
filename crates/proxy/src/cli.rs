//! Command line of the `mizzen-proxy` binary, shaped like Istio's
//! pilot-agent: `mizzen-proxy proxy sidecar|router`, with the node identity
//! taken from flags or the pod environment (`POD_NAME`, `POD_NAMESPACE`,
//! `INSTANCE_IP`, `SERVICE_ACCOUNT`, `ISTIO_META_*`).
//!
//! `mizzen-proxy capture` installs the iptables rules that send a pod's
//! traffic through its sidecar, with `istio-iptables`' flags (see
//! [`crate::capture`]); the runtime runs it inside the pod's network
//! namespace (`ip netns exec POD mizzen-proxy capture ...`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use mizzen_xds::client::Node;
use serde_json::{Map, Value};

use crate::{Proxy, ProxyOptions};

#[derive(Debug, Parser)]
#[command(
    name = "mizzen-proxy",
    version,
    about = "Mizzen's data plane: a lean Envoy for meshes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy: fetch configuration over xDS and serve traffic.
    Proxy(ProxyArgs),
    /// Install (or remove) the iptables rules that capture a pod's traffic,
    /// like Istio's istio-iptables, in the current network namespace.
    Capture(CaptureArgs),
    /// Play Istio's pilot-agent for an Envoy beside it: obtain the workload
    /// certificate from the CA, renew it, and serve it over SDS (`default`,
    /// `ROOTCA`) on a Unix socket that Envoy's `sds-grpc` cluster points at.
    Agent(AgentArgs),
}

/// `mizzen-proxy agent`'s flags.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The SDS socket (Istio: ./var/run/secrets/workload-spiffe-uds/socket).
    #[arg(long, default_value = mizzen_identity::sds::DEFAULT_SOCKET_PATH)]
    pub sds_socket: std::path::PathBuf,
    /// Istio's CA (`https://istiod:15012`, or `host:port`).
    #[arg(long, env = "CA_ADDR")]
    pub ca_address: String,
    #[command(flatten)]
    pub ca: CaClientArgs,
    /// The workload's namespace (env `POD_NAMESPACE`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// The workload's service account (env `SERVICE_ACCOUNT`).
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "default")]
    pub service_account: String,
    /// Log filter (`info`, `mizzen_identity=debug`...); env `MIZZEN_LOG` wins.
    #[arg(long, default_value = "info")]
    pub log: String,
}

/// How `proxy` and `agent` obtain the workload certificate from Istio's CA
/// (its address is given separately: the agent requires it, the proxy does
/// not).
#[derive(Debug, Args)]
pub struct CaClientArgs {
    /// PEM roots that verify the CA's serving certificate.
    #[arg(long, default_value = "/var/run/secrets/istio/root-cert.pem")]
    pub ca_root_cert: std::path::PathBuf,
    /// Bearer token sent to the CA, re-read for every request.
    #[arg(long, default_value = "/var/run/secrets/tokens/istio-token")]
    pub token_file: std::path::PathBuf,
    /// Trust domain of the workload identity.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Lifetime asked for the workload certificate (e.g. `24h`).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub cert_ttl: Duration,
}

impl CaClientArgs {
    /// Obtains the certificate for `identity` from the CA at `ca_address`;
    /// the returned manager renews it at half-life.
    async fn obtain_certificate(
        &self,
        ca_address: &str,
        identity: mizzen_identity::Identity,
    ) -> anyhow::Result<mizzen_identity::CertificateManager> {
        let root = std::fs::read_to_string(&self.ca_root_cert)
            .with_context(|| format!("reading the CA root {}", self.ca_root_cert.display()))?;
        let token = mizzen_identity::workload::TokenSource::File(self.token_file.clone());
        mizzen_identity::workload::start_remote(ca_address, &root, token, identity, self.cert_ttl)
            .await
            .context("obtaining the workload certificate")
    }
}

/// `istio-iptables`' flags, with the values Istio's injector gives a sidecar
/// as defaults.
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Port all outbound TCP is redirected to.
    #[arg(short = 'p', long = "envoy-port", default_value_t = 15001)]
    pub envoy_port: u16,
    /// Port all inbound TCP is redirected to.
    #[arg(short = 'z', long = "inbound-capture-port", default_value_t = 15006)]
    pub inbound_capture_port: u16,
    /// Inbound tunnel port, never redirected.
    #[arg(short = 'e', long = "inbound-tunnel-port", default_value_t = 15008)]
    pub inbound_tunnel_port: u16,
    /// Users whose traffic is not redirected (the proxy's), comma-separated.
    #[arg(short = 'u', long = "proxy-uid", default_value = "1337")]
    pub proxy_uid: String,
    /// Groups whose traffic is not redirected, comma-separated.
    #[arg(short = 'g', long = "proxy-gid", default_value = "1337")]
    pub proxy_gid: String,
    /// How inbound connections are redirected (REDIRECT; TPROXY is refused).
    #[arg(
        short = 'm',
        long = "istio-inbound-interception-mode",
        default_value = "REDIRECT"
    )]
    pub inbound_interception_mode: String,
    /// Inbound ports to redirect (`*`: all; empty: none).
    #[arg(short = 'b', long = "istio-inbound-ports", default_value = "*")]
    pub inbound_ports: String,
    /// Inbound ports not redirected when all are.
    #[arg(
        short = 'd',
        long = "istio-local-exclude-ports",
        default_value = "15090,15021,15020"
    )]
    pub local_exclude_ports: String,
    /// Interfaces whose traffic is never redirected.
    #[arg(short = 'c', long = "istio-exclude-interfaces", default_value = "")]
    pub exclude_interfaces: String,
    /// Outbound destinations to redirect, as CIDRs (`*`: all; empty: none).
    #[arg(short = 'i', long = "istio-service-cidr", default_value = "*")]
    pub service_cidr: String,
    /// Outbound destinations never redirected, as CIDRs.
    #[arg(short = 'x', long = "istio-service-exclude-cidr", default_value = "")]
    pub service_exclude_cidr: String,
    /// Outbound ports always redirected.
    #[arg(short = 'q', long = "istio-outbound-ports", default_value = "")]
    pub outbound_ports: String,
    /// Outbound ports never redirected.
    #[arg(
        short = 'o',
        long = "istio-local-outbound-ports-exclude",
        default_value = ""
    )]
    pub local_outbound_ports_exclude: String,
    /// Interfaces whose inbound traffic is handled as outbound.
    #[arg(short = 'k', long = "kube-virt-interfaces", default_value = "")]
    pub kube_virt_interfaces: String,
    /// Groups whose outbound traffic is redirected (`*`: all).
    #[arg(long, env = "ISTIO_OUTBOUND_OWNER_GROUPS", default_value = "*")]
    pub outbound_owner_groups: String,
    /// Groups whose outbound traffic is not redirected (with `*` above).
    #[arg(long, env = "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", default_value = "")]
    pub outbound_owner_groups_exclude: String,
    /// What counts as localhost for outbound traffic.
    #[arg(
        long,
        env = "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",
        default_value = "127.0.0.1/32"
    )]
    pub outbound_ipv4_loopback_cidr: String,
    /// Send DNS to a DNS proxy on 15053 (servers from /etc/resolv.conf).
    /// mizzen-proxy has no DNS proxy yet, so this is only accepted with
    /// --dry-run.
    #[arg(long)]
    pub redirect_dns: bool,
    /// With --redirect-dns: all DNS on port 53, not only to the servers.
    #[arg(long)]
    pub capture_all_dns: bool,
    /// Drop packets conntrack considers invalid.
    #[arg(long)]
    pub drop_invalid: bool,
    /// Also install ip6tables rules (and add ::6 to lo).
    #[arg(long, alias = "ipv6")]
    pub dual_stack: bool,
    /// Print the rules instead of installing them.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Remove the rules (and chains) instead of installing them.
    #[arg(long, alias = "cleanup-only")]
    pub cleanup: bool,
}

impl CaptureArgs {
    /// The capture options; `resolv_conf` supplies DNS servers for
    /// --redirect-dns.
    pub fn to_config(
        &self,
        resolv_conf: &str,
    ) -> Result<crate::capture::CaptureConfig, crate::capture::CaptureError> {
        use crate::capture::{self as c, CaptureError};
        let bad =
            |flag: &'static str, problem: String| CaptureError::InvalidOption { flag, problem };
        let (dns_v4, dns_v6) = if self.redirect_dns {
            c::resolv_conf_servers(resolv_conf)
        } else {
            (Vec::new(), Vec::new())
        };
        Ok(c::CaptureConfig {
            proxy_port: self.envoy_port,
            inbound_capture_port: self.inbound_capture_port,
            inbound_tunnel_port: self.inbound_tunnel_port,
            proxy_uids: c::split_list(&self.proxy_uid),
            proxy_gids: c::split_list(&self.proxy_gid),
            inbound_mode: self
                .inbound_interception_mode
                .parse()
                .map_err(|e| bad("--istio-inbound-interception-mode", e))?,
            inbound_ports: c::parse_ports("--istio-inbound-ports", &self.inbound_ports)?,
            inbound_ports_exclude: c::parse_port_list(
                "--istio-local-exclude-ports",
                &self.local_exclude_ports,
            )?,
            outbound_cidrs: c::parse_cidrs("--istio-service-cidr", &self.service_cidr)?,
            outbound_cidrs_exclude: c::parse_cidr_list(
                "--istio-service-exclude-cidr",
                &self.service_exclude_cidr,
            )?,
            outbound_ports_include: c::parse_port_list(
                "--istio-outbound-ports",
                &self.outbound_ports,
            )?,
            outbound_ports_exclude: c::parse_port_list(
                "--istio-local-outbound-ports-exclude",
                &self.local_outbound_ports_exclude,
            )?,
            exclude_interfaces: c::split_list(&self.exclude_interfaces),
            kube_virt_interfaces: c::split_list(&self.kube_virt_interfaces),
            owner_groups: c::parse_groups(&self.outbound_owner_groups),
            owner_groups_exclude: c::split_list(&self.outbound_owner_groups_exclude),
            ipv4_loopback_cidr: c::parse_cidr(&self.outbound_ipv4_loopback_cidr)
                .filter(|c| c.is_ipv4())
                .ok_or_else(|| {
                    bad(
                        "--outbound-ipv4-loopback-cidr",
                        format!("{:?} is not an IPv4 CIDR", self.outbound_ipv4_loopback_cidr),
                    )
                })?,
            redirect_dns: self.redirect_dns,
            capture_all_dns: self.capture_all_dns,
            dns_servers_v4: dns_v4,
            dns_servers_v6: dns_v6,
            drop_invalid: self.drop_invalid,
            enable_ipv6: self.dual_stack,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Next to a workload: inbound and outbound traffic.
    Sidecar,
    /// A gateway (ingress or egress).
    Router,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Sidecar => "sidecar",
            Role::Router => "router",
        }
    }
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    #[arg(value_enum)]
    pub role: Role,
    /// The pilot's xDS address.
    #[arg(long, default_value = "http://127.0.0.1:15010")]
    pub xds_address: String,
    /// Admin server address (each proxy on a shared host gets its own IP).
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin_address: SocketAddr,
    /// Data-plane worker threads.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Node id; default `<role>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`.
    #[arg(long)]
    pub node_id: Option<String>,
    /// Pod name (env `POD_NAME`).
    #[arg(long)]
    pub pod_name: Option<String>,
    /// Pod namespace (env `POD_NAMESPACE`).
    #[arg(long)]
    pub pod_namespace: Option<String>,
    /// Workload IP (env `INSTANCE_IP`).
    #[arg(long)]
    pub instance_ip: Option<String>,
    /// Service account (env `SERVICE_ACCOUNT`).
    #[arg(long)]
    pub service_account: Option<String>,
    /// Extra node metadata; JSON values (objects, arrays) are kept as JSON.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub meta: Vec<(String, String)>,
    /// How long a draining proxy waits for in-flight requests (e.g. `5s`, `500ms`).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Log filter (`info`, `mizzen_proxy=debug`...); env `MIZZEN_LOG` wins.
    #[arg(long, default_value = "info")]
    pub log: String,
    /// Istio's CA (`https://istiod:15012`, or `host:port`). With it, the
    /// proxy obtains a workload certificate for
    /// `spiffe://<trust-domain>/ns/<NAMESPACE>/sa/<SERVICE_ACCOUNT>` before
    /// starting, renews it at half-life, and serves it as SDS `default` and
    /// `ROOTCA` (what pilot-agent does for Envoy).
    #[arg(long, env = "CA_ADDR")]
    pub ca_address: Option<String>,
    #[command(flatten)]
    pub ca: CaClientArgs,
    /// Istio's status port for sidecars (`/healthz/ready`, plaintext); 0 disables.
    #[arg(long, default_value_t = 15021)]
    pub status_port: u16,
    /// Prometheus port for sidecars (`/stats/prometheus`, plaintext); 0 disables.
    #[arg(long, default_value_t = 15090)]
    pub prometheus_port: u16,
}

impl ProxyArgs {
    /// The status and Prometheus addresses: sidecars only, on all addresses
    /// (each pod has its own network namespace).
    pub fn status_addresses(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let at = |port: u16| {
            (self.role == Role::Sidecar && port != 0)
                .then(|| SocketAddr::from(([0, 0, 0, 0], port)))
        };
        (at(self.status_port), at(self.prometheus_port))
    }
}

/// The workload identity the CA is asked for, from the node metadata.
pub fn workload_identity(
    trust_domain: &str,
    node: &Node,
) -> anyhow::Result<mizzen_identity::Identity> {
    let get = |k: &str| {
        node.metadata
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string()
    };
    Ok(mizzen_identity::Identity::new(
        trust_domain,
        get("NAMESPACE"),
        get("SERVICE_ACCOUNT"),
    )?)
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

/// The process environment, behind a trait so tests never touch real env.
pub trait Env {
    fn get(&self, key: &str) -> Option<String>;
    fn vars(&self) -> Vec<(String, String)>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        BTreeMap::get(self, key).cloned().filter(|v| !v.is_empty())
    }
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// A metadata value: JSON objects and arrays stay structured, anything else
/// is a string (as Istio's `ISTIO_META_*` are).
fn meta_value(v: &str) -> Value {
    let t = v.trim_start();
    if (t.starts_with('{') || t.starts_with('['))
        && let Ok(json) = serde_json::from_str(v)
    {
        return json;
    }
    Value::String(v.to_string())
}

/// Builds the node as Istio's agent would: flags, then environment, then defaults.
pub fn build_node(args: &ProxyArgs, env: &dyn Env) -> Node {
    let ip = args
        .instance_ip
        .clone()
        .or_else(|| env.get("INSTANCE_IP"))
        .unwrap_or_else(|| "127.0.0.1".to_string());
    let pod = args
        .pod_name
        .clone()
        .or_else(|| env.get("POD_NAME"))
        .or_else(|| env.get("HOSTNAME"))
        .unwrap_or_else(|| "mizzen-proxy".to_string());
    let ns = args
        .pod_namespace
        .clone()
        .or_else(|| env.get("POD_NAMESPACE"))
        .unwrap_or_else(|| "default".to_string());
    let sa = args
        .service_account
        .clone()
        .or_else(|| env.get("SERVICE_ACCOUNT"))
        .unwrap_or_else(|| "default".to_string());
    let mut metadata = Map::new();
    metadata.insert("NAME".into(), Value::String(pod.clone()));
    metadata.insert("NAMESPACE".into(), Value::String(ns.clone()));
    metadata.insert("SERVICE_ACCOUNT".into(), Value::String(sa));
    metadata.insert("INSTANCE_IPS".into(), Value::String(ip.clone()));
    metadata.insert("INTERCEPTION_MODE".into(), Value::String("REDIRECT".into()));
    metadata.insert("LABELS".into(), Value::Object(Map::new()));
    let mut env_meta: Vec<(String, String)> = env.vars();
    env_meta.sort();
    for (k, v) in env_meta {
        if let Some(key) = k.strip_prefix("ISTIO_METAJSON_") {
            if let Ok(json) = serde_json::from_str(&v) {
                metadata.insert(key.to_string(), json);
            }
        } else if let Some(key) = k.strip_prefix("ISTIO_META_") {
            metadata.insert(key.to_string(), meta_value(&v));
        }
    }
    for (k, v) in &args.meta {
        metadata.insert(k.clone(), meta_value(v));
    }
    let cluster = match metadata
        .get("LABELS")
        .and_then(|l| l.get("app"))
        .and_then(Value::as_str)
    {
        Some(app) => format!("{app}.{ns}"),
        None => "istio-proxy".to_string(),
    };
    let id = args.node_id.clone().unwrap_or_else(|| {
        format!(
            "{}~{ip}~{pod}.{ns}~{ns}.svc.cluster.local",
            args.role.as_str()
        )
    });
    Node {
        id,
        cluster,
        metadata,
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// The binary's entry point with explicit arguments (the first is the
/// program name), so `mizzen proxy ...` can run the same code.
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Proxy(args) => run_proxy(args),
        Command::Capture(args) => run_capture(&args),
        Command::Agent(args) => run_agent(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mizzen-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    init_logging(&args.log)?;
    let identity = mizzen_identity::Identity::new(
        &args.ca.trust_domain,
        &args.namespace,
        &args.service_account,
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let manager = args.ca.obtain_certificate(&args.ca_address, identity).await?;
        tracing::info!(
            serial = %manager.current().serial(),
            socket = %args.sds_socket.display(),
            "workload certificate ready; serving SDS"
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            served = mizzen_identity::sds::run_agent(std::sync::Arc::new(manager), &args.sds_socket) => {
                served.context("SDS server")?;
            }
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
            _ = term.recv() => tracing::info!("terminated"),
        }
        anyhow::Ok(())
    })
}

fn run_capture(args: &CaptureArgs) -> anyhow::Result<()> {
    use crate::capture::{self, Family, Runner as _, SystemRunner};
    let resolv = if args.redirect_dns {
        std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
    } else {
        String::new()
    };
    let cfg = args.to_config(&resolv)?;
    if args.redirect_dns && !args.dry_run && !args.cleanup {
        anyhow::bail!(
            "--redirect-dns: DNS would go to a DNS proxy on port {}, which mizzen-proxy does not have yet (use --dry-run to see the rules)",
            capture::DNS_PROXY_PORT
        );
    }
    let rules = capture::rules(&cfg)?;
    match (args.cleanup, args.dry_run) {
        (false, true) => print!("{}", rules.dry_run_text()),
        (false, false) => {
            capture::apply(&cfg)?;
            eprintln!("mizzen-proxy: capture rules installed");
        }
        (true, true) => {
            let mut families = vec![Family::V4];
            if cfg.enable_ipv6 {
                families.push(Family::V6);
            }
            for family in families {
                let save = match family {
                    Family::V4 => "iptables-save",
                    Family::V6 => "ip6tables-save",
                };
                let saved = SystemRunner.run(save, &[], None)?;
                print!("{}", capture::cleanup_input(&rules, family, &saved));
            }
        }
        (true, false) => {
            capture::cleanup(&cfg)?;
            eprintln!("mizzen-proxy: capture rules removed");
        }
    }
    Ok(())
}

/// Logs to stderr with `MIZZEN_LOG`, else `default`, as the filter.
fn init_logging(default: &str) -> anyhow::Result<()> {
    let filter = std::env::var("MIZZEN_LOG").unwrap_or_else(|_| default.to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(filter)?)
        .init();
    Ok(())
}

fn run_proxy(args: ProxyArgs) -> anyhow::Result<()> {
    init_logging(&args.log)?;
    let node = build_node(&args, &ProcessEnv);
    let metadata = Value::Object(node.metadata.clone()).to_string();
    tracing::info!(
        role = args.role.as_str(),
        node = %node.id,
        %metadata,
        xds = %args.xds_address,
        admin = %args.admin_address,
        concurrency = args.concurrency,
        "starting"
    );
    // xDS and admin get a runtime and thread of their own, so a saturated
    // data plane cannot starve config updates or health checks.
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let control_handle = control.handle().clone();
    let (stop_control, control_stopped) = tokio::sync::oneshot::channel::<()>();
    let control_thread = std::thread::Builder::new()
        .name("mizzen-control".into())
        .spawn(move || {
            let _ = control.block_on(control_stopped);
        })?;
    let data = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.concurrency.max(1))
        .thread_name("mizzen-worker")
        .enable_all()
        .build()?;
    let (status_address, prometheus_address) = args.status_addresses();
    let identity = match &args.ca_address {
        Some(_) => Some(workload_identity(&args.ca.trust_domain, &node)?),
        None => None,
    };
    let mut opts = ProxyOptions {
        admin_address: args.admin_address,
        concurrency: args.concurrency.max(1),
        drain_timeout: args.drain_timeout,
        control_runtime: Some(control_handle),
        status_address,
        prometheus_address,
        ..ProxyOptions::new(args.xds_address.clone(), node)
    };
    let result = data.block_on(async move {
        if let (Some(ca), Some(identity)) = (&args.ca_address, identity) {
            tracing::info!(%ca, identity = %identity, "requesting the workload certificate");
            let manager = args.ca.obtain_certificate(ca, identity).await?;
            tracing::info!(serial = %manager.current().serial(), "workload certificate ready");
            opts.identity = Some(std::sync::Arc::new(manager));
        }
        let proxy = Proxy::start(opts).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = proxy.quit_requested() => tracing::info!("quit requested over admin"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
            _ = term.recv() => tracing::info!("terminated"),
        }
        proxy.shutdown().await;
        tracing::info!("drained, exiting");
        anyhow::Ok(())
    });
    let _ = stop_control.send(());
    let _ = control_thread.join();
    tracing::debug!("control runtime stopped");
    data.shutdown_timeout(Duration::from_secs(1));
    tracing::debug!("data runtime stopped");
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ProxyArgs {
        let mut argv = vec!["mizzen-proxy", "proxy", "sidecar"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Proxy(a) => a,
            Command::Capture(_) | Command::Agent(_) => panic!("not the proxy subcommand"),
        }
    }

    #[test]
    fn agent_flags() {
        let cli = Cli::try_parse_from([
            "mizzen-proxy",
            "agent",
            "--ca-address",
            "https://10.213.0.1:15012",
            "--namespace",
            "shop",
            "--service-account",
            "cart",
        ])
        .unwrap();
        let Command::Agent(agent) = cli.command else {
            panic!("not the agent subcommand")
        };
        assert_eq!(agent.ca_address, "https://10.213.0.1:15012");
        assert_eq!(
            agent.sds_socket,
            std::path::PathBuf::from(mizzen_identity::sds::DEFAULT_SOCKET_PATH)
        );
        assert_eq!(
            (agent.namespace.as_str(), agent.service_account.as_str()),
            ("shop", "cart")
        );
    }

    #[test]
    fn node_from_environment() {
        let env: BTreeMap<String, String> = [
            ("POD_NAME", "productpage-v1-123"),
            ("POD_NAMESPACE", "bookinfo"),
            ("INSTANCE_IP", "10.1.2.3"),
            ("SERVICE_ACCOUNT", "bookinfo-productpage"),
            ("ISTIO_META_INTERCEPTION_MODE", "NONE"),
            (
                "ISTIO_METAJSON_LABELS",
                r#"{"app":"productpage","version":"v1"}"#,
            ),
            ("UNRELATED", "x"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let node = build_node(&args(&["--meta", "CLUSTER_ID=Kubernetes"]), &env);
        assert_eq!(
            node.id,
            "sidecar~10.1.2.3~productpage-v1-123.bookinfo~bookinfo.svc.cluster.local"
        );
        assert_eq!(node.cluster, "productpage.bookinfo");
        let m = Value::Object(node.metadata);
        assert_eq!(m["NAMESPACE"], "bookinfo");
        assert_eq!(m["NAME"], "productpage-v1-123");
        assert_eq!(m["SERVICE_ACCOUNT"], "bookinfo-productpage");
        assert_eq!(m["INSTANCE_IPS"], "10.1.2.3");
        assert_eq!(m["INTERCEPTION_MODE"], "NONE");
        assert_eq!(m["LABELS"]["version"], "v1");
        assert_eq!(m["CLUSTER_ID"], "Kubernetes");
        assert!(m.get("UNRELATED").is_none());
    }

    #[test]
    fn flags_win_and_defaults_apply() {
        let env = BTreeMap::new();
        let node = build_node(
            &args(&[
                "--node-id",
                "router~x",
                "--meta",
                r#"LABELS={"app":"gw"}"#,
                "--meta",
                "INTERCEPTION_MODE=NONE",
            ]),
            &env,
        );
        assert_eq!(node.id, "router~x");
        assert_eq!(node.metadata["LABELS"]["app"], "gw");
        assert_eq!(node.metadata["INTERCEPTION_MODE"], "NONE");
        let node = build_node(&args(&[]), &env);
        assert_eq!(node.metadata["INTERCEPTION_MODE"], "REDIRECT");
        assert_eq!(node.metadata["NAMESPACE"], "default");
    }

    fn capture_args(extra: &[&str]) -> CaptureArgs {
        let mut argv = vec!["mizzen-proxy", "capture"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Capture(a) => a,
            Command::Proxy(_) | Command::Agent(_) => panic!("not the capture subcommand"),
        }
    }

    #[test]
    fn capture_flags_like_istio_iptables() {
        let cfg = capture_args(&[]).to_config("").unwrap();
        assert_eq!(cfg, crate::capture::CaptureConfig::default());
        let cfg = capture_args(&[
            "-p",
            "15101",
            "-z",
            "15106",
            "-u",
            "3,4",
            "-g",
            "1,2",
            "-m",
            "REDIRECT",
            "-b",
            "8080,9090",
            "-d",
            "",
            "-i",
            "10.96.0.0/12",
            "-x",
            "10.96.0.1/32",
            "-o",
            "5432",
            "-q",
            "3306",
            "-c",
            "eth9",
            "-k",
            "eth1",
            "--redirect-dns",
            "--dual-stack",
            "--dry-run",
        ])
        .to_config("nameserver 10.96.0.10\n")
        .unwrap();
        assert_eq!((cfg.proxy_port, cfg.inbound_capture_port), (15101, 15106));
        assert_eq!(cfg.proxy_uids, ["3", "4"]);
        assert_eq!(cfg.proxy_gids, ["1", "2"]);
        assert_eq!(
            cfg.inbound_ports,
            crate::capture::Selection::Only(vec!["8080".into(), "9090".into()])
        );
        assert!(cfg.inbound_ports_exclude.is_empty());
        assert_eq!(cfg.outbound_cidrs_exclude[0].to_string(), "10.96.0.1/32");
        assert_eq!(cfg.outbound_ports_exclude, ["5432"]);
        assert_eq!(cfg.outbound_ports_include, ["3306"]);
        assert_eq!(cfg.exclude_interfaces, ["eth9"]);
        assert_eq!(cfg.kube_virt_interfaces, ["eth1"]);
        assert_eq!(cfg.dns_servers_v4, [std::net::Ipv4Addr::new(10, 96, 0, 10)]);
        assert!(cfg.enable_ipv6 && cfg.redirect_dns);
        let err = capture_args(&["-m", "TPROXY"]).to_config("").unwrap_err();
        assert_eq!(
            err.to_string(),
            "--istio-inbound-interception-mode: TPROXY is not supported (the proxy has no transparent listeners); use REDIRECT"
        );
        assert!(capture_args(&["-b", "http"]).to_config("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert!(parse_duration("3d").is_err());
    }

    #[test]
    fn identity_and_status_flags() {
        let a = args(&[
            "--ca-address",
            "https://10.213.0.1:15012",
            "--service-account",
            "sleep",
            "--pod-namespace",
            "demo",
            "--trust-domain",
            "example.org",
            "--cert-ttl",
            "1h",
        ]);
        assert_eq!(a.ca_address.as_deref(), Some("https://10.213.0.1:15012"));
        assert_eq!(a.ca.cert_ttl, Duration::from_secs(3600));
        let node = build_node(&a, &BTreeMap::new());
        assert_eq!(
            workload_identity(&a.ca.trust_domain, &node)
                .unwrap()
                .to_uri(),
            "spiffe://example.org/ns/demo/sa/sleep"
        );
        assert_eq!(
            a.status_addresses(),
            (
                Some("0.0.0.0:15021".parse().unwrap()),
                Some("0.0.0.0:15090".parse().unwrap())
            )
        );
        assert_eq!(args(&["--status-port", "0"]).status_addresses().0, None);
        let router = match Cli::try_parse_from(["mizzen-proxy", "proxy", "router"])
            .unwrap()
            .command
        {
            Command::Proxy(a) => a,
            Command::Capture(_) | Command::Agent(_) => unreachable!(),
        };
        assert_eq!(router.status_addresses(), (None, None));
    }
}
