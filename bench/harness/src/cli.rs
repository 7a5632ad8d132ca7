//! The `mizzen-bench` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::bench::{self, Options};
use crate::load::{self, LoadOptions};
use crate::meshgen::{self, MeshSize};
use crate::tcp::{TcpLoadOptions, TcpMode};

#[derive(Debug, Parser)]
#[command(
    name = "mizzen-bench",
    version,
    about = "Benchmarks mizzen-proxy against Envoy and a direct baseline, and mizzen-pilot at scale"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// HTTP through gateways.
    DataPlane,
    /// Raw TCP through sidecars.
    Tcp,
    /// Sidecar pairs talking mutual TLS: latency, throughput, handshakes.
    Mtls,
    Memory,
    Pilot,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the benchmark and write latest.md and latest.json.
    Run {
        /// A smoke run of about a minute: one short repetition, a small mesh.
        #[arg(long)]
        quick: bool,
        /// Where latest.md and latest.json go.
        #[arg(long, default_value = "bench/results")]
        results: PathBuf,
        /// Where mizzen-pilot and mizzen-proxy are.
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
        /// Logs and generated config (default: a fresh temporary directory).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Also profile mizzen-proxy with perf for this many seconds.
        #[arg(long, value_name = "SECONDS")]
        profile: Option<u64>,
        /// Repetitions of each arm.
        #[arg(long)]
        reps: Option<usize>,
        /// Seconds per measurement.
        #[arg(long)]
        seconds: Option<u64>,
        /// Seconds per raw TCP measurement (after its warm-up).
        #[arg(long)]
        tcp_seconds: Option<u64>,
        /// Seconds per sidecar-pair (mTLS) measurement.
        #[arg(long)]
        mtls_seconds: Option<u64>,
        /// Paced rates, req/s (comma-separated).
        #[arg(long, value_delimiter = ',')]
        rates: Option<Vec<f64>>,
        /// Services of the large mesh and of the pilot test.
        #[arg(long)]
        services: Option<usize>,
        /// Simulated proxies of the pilot test.
        #[arg(long)]
        proxies: Option<usize>,
        /// Full pushes (a Service added) timed in the pilot test.
        #[arg(long)]
        pushes: Option<usize>,
        /// Endpoint changes (a Workload edited) timed in the pilot test.
        #[arg(long)]
        endpoint_changes: Option<usize>,
        /// Run only these phases (comma-separated).
        #[arg(long, value_delimiter = ',')]
        only: Option<Vec<Phase>>,
    },
    /// Recompute the medians of a results JSON and rewrite it and its
    /// markdown beside it.
    Render {
        #[arg(default_value = "bench/results/latest.json")]
        json: PathBuf,
    },
    /// Serve a fixed response over HTTP/1.1 and h2c (the upstream).
    Upstream {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
        /// Runtime worker threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Serve raw TCP: a sink that discards and an echo server.
    TcpUpstream {
        #[arg(long)]
        sink: SocketAddr,
        #[arg(long)]
        echo: SocketAddr,
    },
    /// Closed-loop raw TCP load from one thread; prints a JSON report.
    TcpLoad {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, value_enum)]
        mode: TcpMode,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Stream: bytes per write; echo: bytes per message.
        #[arg(long, default_value_t = 65536)]
        message_bytes: usize,
        #[arg(long, default_value_t = 500)]
        warmup_ms: u64,
        #[arg(long, default_value_t = 2000)]
        duration_ms: u64,
        /// Report this process's CPU-seconds over the counted window
        /// (repeatable).
        #[arg(long)]
        cpu_pid: Vec<u32>,
    },
    /// Constant-rate HTTP/1.1 load; prints a JSON report.
    Load {
        #[arg(long)]
        target: SocketAddr,
        /// Host header (default: the target).
        #[arg(long)]
        host: Option<String>,
        #[arg(long, default_value = "/")]
        path: String,
        /// Requests per second.
        #[arg(long)]
        rate: f64,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 1000)]
        warmup_ms: u64,
        #[arg(long, default_value_t = 10_000)]
        duration_ms: u64,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        #[arg(long)]
        expect_body_bytes: Option<usize>,
    },
    /// Write a generated mesh (Services and Workloads) into a directory.
    MeshConfig {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1000)]
        services: usize,
        #[arg(long, default_value_t = 5)]
        endpoints_per_service: usize,
        #[arg(long, default_value_t = 20)]
        namespaces: usize,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            quick,
            results,
            bin_dir,
            work_dir,
            profile,
            reps,
            seconds,
            tcp_seconds,
            mtls_seconds,
            rates,
            services,
            proxies,
            pushes,
            endpoint_changes,
            only,
        } => {
            let (work_dir, _keep) = match work_dir {
                Some(dir) => (dir, None),
                None => match tempfile::Builder::new().prefix("mizzen-bench-").tempdir() {
                    Ok(t) => (t.path().to_path_buf(), Some(t)),
                    Err(e) => {
                        eprintln!("mizzen-bench: cannot create a work directory: {e}");
                        return ExitCode::FAILURE;
                    }
                },
            };
            let mut opts = if quick {
                Options::quick(bin_dir, work_dir)
            } else {
                Options::full(bin_dir, work_dir)
            };
            opts.profile_seconds = profile;
            if let Some(n) = reps {
                opts.repetitions = n.max(1);
            }
            if let Some(s) = seconds {
                opts.duration = Duration::from_secs(s.max(1));
            }
            if let Some(s) = tcp_seconds {
                opts.tcp_duration = Duration::from_secs(s.max(1));
            }
            if let Some(s) = mtls_seconds {
                opts.sidecar_duration = Duration::from_secs(s.max(1));
            }
            if let Some(r) = rates {
                opts.rates = r;
            }
            if let Some(n) = services {
                opts.mesh.services = n.max(1);
            }
            if let Some(n) = proxies {
                opts.scale_proxies = n.max(1);
            }
            if let Some(n) = pushes {
                opts.full_pushes = n;
            }
            if let Some(n) = endpoint_changes {
                opts.endpoint_changes = n;
            }
            if let Some(only) = only {
                opts.data_plane = only.contains(&Phase::DataPlane);
                opts.tcp = only.contains(&Phase::Tcp);
                opts.sidecars = only.contains(&Phase::Mtls);
                opts.memory = only.contains(&Phase::Memory);
                opts.pilot = only.contains(&Phase::Pilot);
            }
            run(&opts, &results)
        }
        Command::Render { json } => bench::render(&json),
        Command::Upstream {
            listen,
            body_bytes,
            threads,
        } => crate::upstream::run(listen, body_bytes, threads),
        Command::TcpUpstream { sink, echo } => crate::tcp::run_upstream(sink, echo),
        Command::TcpLoad {
            target,
            mode,
            connections,
            message_bytes,
            warmup_ms,
            duration_ms,
            cpu_pid,
        } => crate::tcp::run_load(&TcpLoadOptions {
            target,
            mode,
            connections,
            message_bytes,
            warmup: Duration::from_millis(warmup_ms),
            duration: Duration::from_millis(duration_ms),
            cpu_pids: cpu_pid,
        })
        .and_then(|report| {
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }),
        Command::Load {
            target,
            host,
            path,
            rate,
            connections,
            warmup_ms,
            duration_ms,
            timeout_ms,
            expect_body_bytes,
        } => load::run(&LoadOptions {
            target,
            host: host.unwrap_or_else(|| target.to_string()),
            path,
            rate,
            connections,
            warmup: Duration::from_millis(warmup_ms),
            duration: Duration::from_millis(duration_ms),
            timeout: Duration::from_millis(timeout_ms),
            expect_body_bytes,
        })
        .and_then(|report| {
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }),
        Command::MeshConfig {
            dir,
            services,
            endpoints_per_service,
            namespaces,
        } => std::fs::create_dir_all(&dir)
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                meshgen::write_mesh(
                    &dir,
                    &MeshSize {
                        services,
                        endpoints_per_service,
                        namespaces: namespaces.max(1),
                    },
                )
                .map_err(anyhow::Error::from)
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mizzen-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the benchmark, stopping everything it started on Ctrl-C or
/// SIGTERM: dropping the run drops every child process handle, which kills
/// the process.
fn run(opts: &Options, results: &std::path::Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            report = bench::run(opts) => report,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; everything started was stopped"),
            _ = term.recv() => anyhow::bail!("terminated; everything started was stopped"),
        }
    })?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    bench::write_results(&report, results)?;
    eprintln!(
        "wrote {} and {} ({:.0} s)",
        results.join("latest.md").display(),
        results.join("latest.json").display(),
        report.wall_seconds
    );
    Ok(())
}
