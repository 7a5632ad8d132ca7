//! The `mizzen-pilot` binary: a thin shell over the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Mizzen's control plane: Istio config in, Envoy xDS out.
#[derive(Parser, Debug)]
#[command(name = "mizzen-pilot", version)]
struct Args {
    /// Directory of Istio and Kubernetes YAML to serve, watched for changes.
    #[arg(long, env = "MIZZEN_CONFIG_DIR")]
    config_dir: PathBuf,
    /// Plaintext xDS (ADS) address.
    #[arg(long, default_value = "0.0.0.0:15010")]
    xds_address: SocketAddr,
    /// Monitoring and debug address (/debug/syncz, /debug/configz).
    #[arg(long, default_value = "0.0.0.0:15014")]
    debug_address: SocketAddr,
    /// DNS domain of services.
    #[arg(long, default_value = mizzen_pilot::DEFAULT_DOMAIN_SUFFIX)]
    domain_suffix: String,
    /// Run the mesh CA with its root kept in this directory (created on
    /// first start; Istio's `cacerts` files there plug in an intermediate).
    /// With a CA the mesh runs mutual TLS.
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    /// The certificate service (IstioCertificateService over TLS).
    #[arg(long, default_value = "0.0.0.0:15012")]
    ca_address: SocketAddr,
    /// Trust domain of workload identities.
    #[arg(long, default_value = mizzen_identity::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// Workload credentials: lines `TOKEN NAMESPACE/SERVICE_ACCOUNT`; a
    /// certificate request bearing TOKEN gets that identity.
    #[arg(long)]
    tokens_file: Option<PathBuf>,
    /// Lifetime of workload certificates.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    workload_cert_ttl: std::time::Duration,
}

/// Reads `TOKEN NAMESPACE/SERVICE_ACCOUNT` lines (`#` starts a comment).
fn read_tokens(
    path: &std::path::Path,
    trust_domain: &str,
) -> anyhow::Result<mizzen_identity::auth::StaticTokens> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let tokens = mizzen_identity::auth::StaticTokens::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| anyhow::anyhow!("{}:{}: {why}", path.display(), number + 1);
        let (token, who) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad("expected `TOKEN NAMESPACE/SERVICE_ACCOUNT`"))?;
        let (namespace, account) = who
            .trim()
            .split_once('/')
            .ok_or_else(|| bad("expected NAMESPACE/SERVICE_ACCOUNT"))?;
        let identity = mizzen_identity::Identity::new(trust_domain, namespace, account)
            .map_err(|e| bad(&e.to_string()))?;
        tokens.insert(token, identity);
    }
    Ok(tokens)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let ca = match &args.ca_dir {
        Some(dir) => {
            let tokens = match &args.tokens_file {
                Some(path) => read_tokens(path, &args.trust_domain)?,
                None => mizzen_identity::auth::StaticTokens::new(),
            };
            Some(mizzen_pilot::CaOptions {
                address: args.ca_address,
                trust_domain: args.trust_domain.clone(),
                workload_cert_ttl: args.workload_cert_ttl,
                ..mizzen_pilot::CaOptions::new(dir, tokens)
            })
        }
        None => None,
    };
    let pilot = mizzen_pilot::Pilot::start(mizzen_pilot::PilotOptions {
        config_dir: args.config_dir,
        xds_address: args.xds_address,
        debug_address: args.debug_address,
        domain_suffix: args.domain_suffix,
        ca,
    })
    .await?;
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    pilot.shutdown();
    Ok(())
}
