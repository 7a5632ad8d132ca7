//! The `mizzen` binary: a thin shell over the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Mizzen: an Istio-compatible service mesh with a Rust data plane.
#[derive(Parser, Debug)]
#[command(name = "mizzen", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the demo mesh (pilot, ingress gateway on 127.0.0.1:8080, sidecars and apps).
    Demo {
        /// Where the demo keeps its config (default: ~/.mizzen/demo).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:15010")]
        xds_address: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:15014")]
        debug_address: SocketAddr,
        /// Run on loopback addresses without pods even as root.
        #[arg(long)]
        loopback: bool,
    },
    /// Run your own mesh directory: pods when root, loopback otherwise (apps from Workload annotations; see docs/local-format.md).
    Up {
        dir: PathBuf,
        #[arg(long)]
        loopback: bool,
        #[arg(long, default_value = "127.0.0.1:15010")]
        xds_address: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:15014")]
        debug_address: SocketAddr,
    },
    /// Run a command inside a pod of the running mesh, like `kubectl exec`.
    Exec {
        /// The pod: NAME or NAMESPACE/NAME.
        pod: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Create or update the resources of a file in the running local mesh.
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// The mesh's config directory (default: that of the running local mesh).
        #[arg(long)]
        config_dir: Option<PathBuf>,
    },
    /// Delete the resources named in a file from the running local mesh.
    Delete {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        #[arg(long)]
        config_dir: Option<PathBuf>,
    },
    /// Run the demo app (configured like fake-service: NAME, LISTEN_ADDR, UPSTREAM_URIS, ERROR_RATE, ...).
    App,
    /// Run mizzen-proxy (`mizzen proxy proxy sidecar ...`, `mizzen proxy capture ...`): pods run the data plane from this binary.
    Proxy {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Proxy { args } = cli.command {
        // The proxy builds its own runtimes.
        let code = mizzen_proxy::cli::main_from(
            std::iter::once(std::ffi::OsString::from("mizzen-proxy")).chain(args),
        );
        std::process::exit(if code == std::process::ExitCode::SUCCESS {
            0
        } else {
            1
        });
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo {
            dir,
            xds_address,
            debug_address,
            loopback,
        } => {
            init_logging("warn");
            mizzen_cli::demo::run(mizzen_cli::demo::DemoOptions {
                dir: dir.unwrap_or_else(|| mizzen_cli::meshes::home().join("demo")),
                xds_address,
                debug_address,
                loopback,
                binary: mizzen_cli::pods::default_binary()?,
            })
            .await
        }
        Command::Up {
            dir,
            loopback,
            xds_address,
            debug_address,
        } => {
            init_logging("warn");
            mizzen_cli::up::run(mizzen_cli::up::UpOptions {
                config_dir: dir,
                loopback,
                binary: mizzen_cli::pods::default_binary()?,
                xds_address,
                debug_address,
            })
            .await
        }
        Command::Exec { pod, command } => {
            let mesh = mizzen_cli::meshes::the_running_mesh()?;
            let netns = mizzen_cli::meshes::pod_netns(&mesh, &pod)?;
            let status = std::process::Command::new("ip")
                .args(["netns", "exec", &netns])
                .args(&command)
                .status()?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Command::Apply { file, config_dir } => {
            let dir = mizzen_cli::meshes::config_dir(config_dir)?;
            for line in mizzen_cli::apply::apply(&dir, &file)? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Delete { file, config_dir } => {
            let dir = mizzen_cli::meshes::config_dir(config_dir)?;
            for line in mizzen_cli::apply::delete(&dir, &file)? {
                println!("{line}");
            }
            Ok(())
        }
        Command::App => {
            init_logging("info");
            let config = mizzen_testkit::demo_app::AppConfig::from_env()?;
            mizzen_testkit::demo_app::run(config).await
        }
        Command::Proxy { .. } => Ok(()),
    }
}
