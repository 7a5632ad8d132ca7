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
    let pilot = mizzen_pilot::Pilot::start(mizzen_pilot::PilotOptions {
        config_dir: args.config_dir,
        xds_address: args.xds_address,
        debug_address: args.debug_address,
        domain_suffix: args.domain_suffix,
    })
    .await?;
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    pilot.shutdown();
    Ok(())
}
