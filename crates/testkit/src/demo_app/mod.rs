//! A demo service for mesh tests, behaving like nicholasjackson's
//! fake-service.
//!
//! Every request, whatever its path or method, is answered with a JSON
//! report: who answered (`name`, `version`, `ip_addresses`), what was asked
//! (`uri`), and, under `upstream_calls`, the reports of the upstreams this
//! app called on the way. A chain `a → b → c` therefore returns one nested
//! document showing which instance of each service answered, which is what
//! routing, subset and fault-injection tests assert on.
//!
//! ```json
//! {"name":"service-a","version":"v1","uri":"/","type":"HTTP",
//!  "ip_addresses":["127.20.1.2"],"start_time":"...","end_time":"...",
//!  "duration":"1.2ms","body":"Hello World",
//!  "upstream_calls":{"http://service-b:80":{"name":"service-b",...}},
//!  "code":200}
//! ```
//!
//! The app serves HTTP/1.1 and h2c (HTTP/2 with prior knowledge) on the
//! same port, as fake-service does; with [`AppConfig::tls`] it serves the
//! same over TLS instead, with a self-signed certificate (`"tls": true` and
//! the client's server name as `"sni"` in the report).

mod config;
mod extra;
mod time;
mod tls;
mod upstream;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;
use extra::AppBody;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::ser::{Serialize, SerializeMap, Serializer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

pub use config::{AppConfig, ConfigError};
use upstream::{UpstreamResult, Upstreams};

/// Error text of an injected failure.
const INJECTED_ERROR: &str = "Service error automatically injected";
/// Error text when an upstream call failed.
const UPSTREAM_ERROR: &str = "Error communicating with upstream service";

/// Binds `config.listen_addr` and serves until the process ends; what
/// `mizzen app` runs.
pub async fn run(config: AppConfig) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
    let mut extra = tokio::task::JoinSet::new();
    for port in &config.extra_ports {
        let address = SocketAddr::new(config.listen_addr.ip(), *port);
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        extra.spawn(serve(config.clone(), listener));
    }
    tokio::select! {
        served = serve(config, listener) => served,
        Some(Ok(Err(error))) = extra.join_next() => Err(error),
    }
}

/// Serves requests on `listener` until the task is dropped.
pub async fn serve(config: AppConfig, listener: TcpListener) -> anyhow::Result<()> {
    serve_until(config, listener, std::future::pending(), Arc::default()).await
}

/// Starts the app on the current Tokio runtime, for tests that run their
/// services in-process.
///
/// # Panics
///
/// Outside a Tokio runtime.
pub fn spawn(config: AppConfig, listener: TcpListener) -> AppHandle {
    // A bound listener always has a local address; failing here would mean
    // the socket was closed under us.
    let local_addr = listener
        .local_addr()
        .expect("a bound listener has a local address");
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let served = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(serve_until(
        config,
        listener,
        async move {
            // A dropped sender means the handle is gone: stop as well.
            let _ = shutdown_rx.await;
        },
        served.clone(),
    ));
    AppHandle {
        local_addr,
        shutdown: Some(shutdown_tx),
        task: Some(task),
        served,
    }
}

/// A running app started by [`spawn`]. Dropping it stops the app.
#[derive(Debug)]
pub struct AppHandle {
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    served: Arc<AtomicU64>,
}

impl AppHandle {
    /// Where the app listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many requests the app received so far (mirroring tests count
    /// the copies).
    pub fn requests(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Stops accepting, closes open connections and waits until the app is
    /// gone. Returns the error that stopped the app, if it stopped early.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.task.take() {
            Some(task) => task.await.context("demo app task panicked")?,
            None => Ok(()),
        }
    }
}

impl Drop for AppHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn serve_until(
    config: AppConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    served: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let local_addr = listener.local_addr().context("listener has no address")?;
    tracing::info!(%local_addr, ?config, "demo app listening");
    let acceptor = if config.tls {
        Some(tls::acceptor(&config.name)?)
    } else {
        None
    };
    let app = Arc::new(App::new(config, served));
    // Connections live in the set so that stopping the app (dropping the
    // set) also closes them; a test's next step must not reach a stopped app.
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Usually out of file descriptors; give others a moment
                    // to close theirs rather than spinning.
                    tracing::warn!(%err, "demo app accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let local_ip = stream
            .local_addr()
            .map_or(local_addr.ip(), |addr| addr.ip());
        let app = app.clone();
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            let Some(acceptor) = acceptor else {
                return serve_connection(app, local_ip, None, peer, stream).await;
            };
            match acceptor.accept(stream).await {
                Ok(stream) => {
                    let sni = stream.get_ref().1.server_name().map(str::to_owned);
                    serve_connection(app, local_ip, Some(sni), peer, stream).await;
                }
                Err(err) => tracing::debug!(%peer, %err, "demo app TLS handshake failed"),
            }
        });
    }
    tracing::info!(%local_addr, "demo app stopped");
    Ok(())
}

/// Serves one connection; `tls` holds the server name the client asked
/// for when the connection is TLS.
async fn serve_connection<S>(
    app: Arc<App>,
    local_ip: IpAddr,
    tls: Option<Option<String>>,
    peer: SocketAddr,
    stream: S,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let tls = Arc::new(tls);
    let service = service_fn(move |request| {
        let app = app.clone();
        let tls = tls.clone();
        async move { Ok::<_, Infallible>(app.handle(local_ip, &tls, request).await) }
    });
    let served = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await;
    if let Err(err) = served {
        tracing::debug!(%peer, %err, "demo app connection ended with an error");
    }
}

struct App {
    config: AppConfig,
    upstreams: Upstreams,
    served: Arc<AtomicU64>,
}

impl App {
    fn new(config: AppConfig, served: Arc<AtomicU64>) -> Self {
        let upstreams = Upstreams::new(
            config.upstream_uris.clone(),
            config.http_proxy.as_deref(),
            config.upstream_timeout,
        );
        Self {
            config,
            upstreams,
            served,
        }
    }

    async fn handle(
        &self,
        local_ip: IpAddr,
        tls: &Option<Option<String>>,
        mut request: Request<Incoming>,
    ) -> Response<AppBody> {
        self.served.fetch_add(1, Ordering::Relaxed);
        if !self.config.delay.is_zero() {
            tokio::time::sleep(self.config.delay).await;
        }
        if extra::is_websocket(request.headers()) {
            return extra::websocket_echo(&mut request);
        }
        if extra::is_grpc(request.headers()) {
            let injected =
                self.config.error_rate > 0.0 && rand::random::<f64>() < self.config.error_rate;
            return extra::grpc_unary(request, &self.config, injected).await;
        }
        let started_at = SystemTime::now();
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let echoed = self.config.echo_request.then(|| echo(&parts));
        // Read the body so an HTTP/1.1 connection can carry the next
        // request; its content is not used.
        let _ = body.collect().await;

        let injected =
            self.config.error_rate > 0.0 && rand::random::<f64>() < self.config.error_rate;
        let (code, error, upstream_calls) = if injected {
            (self.config.error_code, Some(INJECTED_ERROR), Vec::new())
        } else {
            let calls = self.upstreams.call_all(&parts.headers).await;
            if calls.iter().all(|call| call.ok) {
                (200, None, calls)
            } else {
                (500, Some(UPSTREAM_ERROR), calls)
            }
        };

        let report = Report {
            name: &self.config.name,
            version: &self.config.version,
            // The path, as fake-service reports it, whether the request
            // came in origin form, absolute form or over HTTP/2.
            uri: parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), ToString::to_string),
            kind: "HTTP",
            ip_addresses: vec![local_ip.to_string()],
            start_time: time::format_timestamp(started_at),
            end_time: time::format_timestamp(SystemTime::now()),
            duration: time::format_duration(started.elapsed()),
            body: &self.config.message,
            upstream_calls: UpstreamCalls(&upstream_calls),
            code,
            error,
            request: echoed,
            tls: tls.is_some(),
            sni: tls.as_ref().and_then(|sni| sni.as_deref()),
        };
        tracing::debug!(name = %self.config.name, uri = %report.uri, code, "demo app answered");
        // Serializing a struct of strings and JSON values cannot fail.
        let body = serde_json::to_vec_pretty(&report).unwrap_or_default();
        let mut response = Response::new(AppBody::full(Bytes::from(body)));
        *response.status_mut() =
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

/// The JSON body; field order is the order fake-service prints.
#[derive(serde::Serialize)]
struct Report<'a> {
    name: &'a str,
    version: &'a str,
    uri: String,
    #[serde(rename = "type")]
    kind: &'static str,
    ip_addresses: Vec<String>,
    start_time: String,
    end_time: String,
    duration: String,
    body: &'a str,
    #[serde(skip_serializing_if = "UpstreamCalls::is_empty")]
    upstream_calls: UpstreamCalls<'a>,
    code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<serde_json::Value>,
    /// Whether the request came over TLS (only shown when it did).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    tls: bool,
    /// The server name the TLS client asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    sni: Option<&'a str>,
}

/// The request as it arrived: method, authority and headers (repeated
/// headers joined with `,`, names lower case).
fn echo(parts: &http::request::Parts) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).to_string();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|existing| {
                if let serde_json::Value::String(s) = existing {
                    s.push(',');
                    s.push_str(&value);
                }
            })
            .or_insert(serde_json::Value::String(value));
    }
    let authority = parts.uri.authority().map(|a| a.to_string()).or_else(|| {
        parts
            .headers
            .get(http::header::HOST)
            .map(|h| String::from_utf8_lossy(h.as_bytes()).to_string())
    });
    serde_json::json!({
        "method": parts.method.as_str(),
        "authority": authority,
        "headers": headers,
    })
}

/// Upstream results as a JSON object keyed by URI, in call order.
struct UpstreamCalls<'a>(&'a [UpstreamResult]);

impl UpstreamCalls<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for UpstreamCalls<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for call in self.0 {
            map.serialize_entry(&call.uri, &call.body)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests;
