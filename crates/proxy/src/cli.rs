//! Command line of the `mizzen-proxy` binary, shaped like Istio's
//! pilot-agent: `mizzen-proxy proxy sidecar|router`, with the node identity
//! taken from flags or the pod environment (`POD_NAME`, `POD_NAMESPACE`,
//! `INSTANCE_IP`, `SERVICE_ACCOUNT`, `ISTIO_META_*`).
//!
//! Subcommands leave room for others beside `proxy` (traffic capture setup).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

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
        _ => return Err(format!("invalid duration unit in {s:?} (ms, s, m)")),
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
    let cli = Cli::parse();
    match cli.command {
        Command::Proxy(args) => match run_proxy(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mizzen-proxy: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let filter = std::env::var("MIZZEN_LOG").unwrap_or_else(|_| args.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(filter)?)
        .init();
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
    let opts = ProxyOptions {
        admin_address: args.admin_address,
        concurrency: args.concurrency.max(1),
        drain_timeout: args.drain_timeout,
        control_runtime: Some(control_handle),
        ..ProxyOptions::new(args.xds_address.clone(), node)
    };
    let result = data.block_on(async move {
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
        }
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

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("3h").is_err());
    }
}
