//! The admin server (Envoy's admin API subset): `/ready`, `/config_dump`,
//! `/stats`, `/stats/prometheus`, `/server_info`, `/quitquitquit`.
//!
//! It runs with the xDS client on the control runtime, apart from the data
//! plane, so it answers even when the workers are saturated.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use mizzen_xds::pb;

use crate::state::{Applied, ConfigState, Readiness};

/// What the admin handlers read.
pub(crate) struct AdminContext {
    pub state: Arc<ConfigState>,
    pub node: mizzen_xds::client::Node,
    pub xds_address: String,
    pub admin_address: SocketAddr,
    pub concurrency: usize,
    pub started: Instant,
    pub started_at: SystemTime,
    /// Set by `POST /quitquitquit`.
    pub quit: watch::Sender<bool>,
}

/// Which server a listening socket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Port {
    Admin,
    /// Istio's status port: `/healthz/ready`.
    Status,
    /// Istio's merged metrics port: `/stats/prometheus`.
    Prometheus,
}

pub(crate) async fn serve(listener: TcpListener, ctx: Arc<AdminContext>) {
    serve_port(listener, ctx, Port::Admin).await
}

pub(crate) async fn serve_port(listener: TcpListener, ctx: Arc<AdminContext>, port: Port) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move {
                    Ok::<_, Infallible>(match port {
                        Port::Admin => handle(req, &ctx),
                        Port::Status | Port::Prometheus => handle_port(req, &ctx, port),
                    })
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The status and metrics ports answer one path each.
fn handle_port(req: Request<Incoming>, ctx: &AdminContext, port: Port) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    match (port, req.method(), path) {
        (Port::Status, &Method::GET | &Method::HEAD, "/healthz/ready") => {
            if *ctx.state.readiness().borrow() == Readiness::Live {
                text(StatusCode::OK, String::new())
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string())
            }
        }
        (Port::Prometheus, &Method::GET, "/stats/prometheus") => {
            text(StatusCode::OK, ctx.state.data.stats.render_prometheus())
        }
        _ => text(StatusCode::NOT_FOUND, format!("invalid path: {path}\n")),
    }
}

fn handle(req: Request<Incoming>, ctx: &AdminContext) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET | &Method::HEAD, "/ready") => {
            let r = *ctx.state.readiness().borrow();
            let status = if r == Readiness::Live { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            text(status, format!("{}\n", r.as_str()))
        }
        (&Method::GET, "/config_dump") => json_response(config_dump(ctx)),
        (&Method::GET, "/stats") => {
            if req.uri().query().is_some_and(|q| q.split('&').any(|p| p == "format=prometheus")) {
                text(StatusCode::OK, ctx.state.data.stats.render_prometheus())
            } else {
                text(StatusCode::OK, ctx.state.data.stats.render_text())
            }
        }
        (&Method::GET, "/stats/prometheus") => text(StatusCode::OK, ctx.state.data.stats.render_prometheus()),
        (&Method::GET, "/server_info") => json_response(server_info(ctx)),
        (&Method::GET, "/certs") => json_response(certs(ctx)),
        (&Method::GET, "/listeners") => {
            let mut s = String::new();
            for (name, addr) in ctx.state.all_listener_addresses() {
                s.push_str(&format!("{name}::{addr}\n"));
            }
            text(StatusCode::OK, s)
        }
        (&Method::POST, "/quitquitquit") => {
            let _ = ctx.quit.send(true);
            text(StatusCode::OK, "OK\n".to_string())
        }
        (_, "/quitquitquit") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n".to_string()),
        (&Method::GET, "/") => text(
            StatusCode::OK,
            "admin commands are:\n  /certs\n  /config_dump\n  /listeners\n  /quitquitquit (POST)\n  /ready\n  /server_info\n  /stats\n  /stats/prometheus\n"
                .to_string(),
        ),
        _ => text(StatusCode::NOT_FOUND, format!("invalid path: {path}\n")),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    r
}

fn json_response(v: Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_string_pretty(&v).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn node_json(node: &mizzen_xds::client::Node) -> Value {
    json!({
        "id": node.id,
        "cluster": node.cluster,
        "metadata": Value::Object(node.metadata.clone()),
        "user_agent_name": "mizzen-proxy",
        "user_agent_version": env!("CARGO_PKG_VERSION"),
    })
}

fn with_type(type_name: &str, mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.insert(
            "@type".to_string(),
            Value::String(format!("type.googleapis.com/{type_name}")),
        );
    }
    v
}

fn ads_source() -> Value {
    json!({"ads": {}, "resource_api_version": "V3"})
}

/// `/config_dump` in Envoy's shape: one entry per config tracker.
pub(crate) fn config_dump(ctx: &AdminContext) -> Value {
    let dump = ctx.state.dump();
    let bootstrap = json!({
        "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
        "bootstrap": {
            "node": node_json(&ctx.node),
            "dynamic_resources": {
                "lds_config": ads_source(),
                "cds_config": ads_source(),
                "ads_config": {
                    "api_type": "GRPC",
                    "transport_api_version": "V3",
                    "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
                },
            },
            "admin": {"address": {"socket_address": {
                "address": ctx.admin_address.ip().to_string(),
                "port_value": ctx.admin_address.port(),
            }}},
        },
        "last_updated": rfc3339(ctx.started_at),
    });
    let clusters: Vec<Value> = dump
        .clusters
        .1
        .iter()
        .map(|a| {
            entry(
                a,
                "cluster",
                with_type(
                    "envoy.config.cluster.v3.Cluster",
                    mizzen_xds::json::cluster(&a.proto),
                ),
            )
        })
        .collect();
    let endpoints: Vec<Value> = dump
        .endpoints
        .1
        .iter()
        .map(|a| {
            entry(
                a,
                "endpoint_config",
                with_type(
                    "envoy.config.endpoint.v3.ClusterLoadAssignment",
                    mizzen_xds::json::cluster_load_assignment(&a.proto),
                ),
            )
        })
        .collect();
    let listeners: Vec<Value> = dump
        .listeners
        .1
        .iter()
        .map(|a| {
            json!({
                "name": a.proto.name,
                "active_state": entry(a, "listener", with_type("envoy.config.listener.v3.Listener", mizzen_xds::json::listener(&a.proto))),
            })
        })
        .collect();
    let routes: Vec<Value> = dump
        .routes
        .1
        .iter()
        .map(|a| {
            entry(
                a,
                "route_config",
                with_type(
                    "envoy.config.route.v3.RouteConfiguration",
                    mizzen_xds::json::route_configuration(&a.proto),
                ),
            )
        })
        .collect();
    let mut configs = vec![bootstrap];
    let mut push = |type_name: &str, version: &str, key: &str, items: Vec<Value>| {
        let mut m = serde_json::Map::new();
        m.insert(
            "@type".into(),
            Value::String(format!("type.googleapis.com/envoy.admin.v3.{type_name}")),
        );
        if !version.is_empty() {
            m.insert("version_info".into(), Value::String(version.to_string()));
        }
        if !items.is_empty() {
            m.insert(key.into(), Value::Array(items));
        }
        configs.push(Value::Object(m));
    };
    push(
        "ClustersConfigDump",
        &dump.clusters.0,
        "dynamic_active_clusters",
        clusters,
    );
    push(
        "EndpointsConfigDump",
        "",
        "dynamic_endpoint_configs",
        endpoints,
    );
    push(
        "ListenersConfigDump",
        &dump.listeners.0,
        "dynamic_listeners",
        listeners,
    );
    push("RoutesConfigDump", "", "dynamic_route_configs", routes);
    push(
        "SecretsConfigDump",
        "",
        "dynamic_active_secrets",
        secrets_dump(ctx, &dump.secrets.1),
    );
    json!({ "configs": configs })
}

/// The secrets in use, as `istioctl proxy-config secret` reads them: the
/// workload certificate (`default`) and roots (`ROOTCA`) as the agent would
/// have sent them, then the Secrets received over ADS; keys redacted.
fn secrets_dump(
    ctx: &AdminContext,
    ads: &[Applied<pb::envoy::extensions::transport_sockets::tls::v3::Secret, ()>],
) -> Vec<Value> {
    use pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
    use pb::envoy::extensions::transport_sockets::tls::v3::{
        CertificateValidationContext, Secret, TlsCertificate, secret,
    };
    let inline = |b: &[u8]| DataSource {
        specifier: Some(Specifier::InlineBytes(b.to_vec())),
        ..Default::default()
    };
    let mut out = Vec::new();
    let item = |name: &str, version: &str, updated: SystemTime, secret: &Secret| {
        json!({
            "name": name,
            "version_info": version,
            "last_updated": rfc3339(updated),
            "secret": mizzen_xds::json::secret(secret),
        })
    };
    if let Some(m) = ctx.state.data.secrets.identity() {
        let cert = m.current();
        let version = rfc3339(cert.received_at());
        let default = Secret {
            name: "default".into(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(inline(cert.chain_pem().as_bytes())),
                private_key: Some(inline(b"")),
                ..Default::default()
            })),
        };
        let roots = Secret {
            name: "ROOTCA".into(),
            r#type: Some(secret::Type::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(inline(cert.roots_pem().as_bytes())),
                    ..Default::default()
                },
            )),
        };
        out.push(item("default", &version, cert.received_at(), &default));
        out.push(item("ROOTCA", &version, cert.received_at(), &roots));
    }
    for a in ads {
        out.push(item(&a.proto.name, &a.version, a.last_updated, &a.proto));
    }
    out
}

/// `/certs` in Envoy's shape: per secret, its CA certificates and chain.
fn certs(ctx: &AdminContext) -> Value {
    use crate::config::tls::CompiledSecret;
    let secrets = &ctx.state.data.secrets;
    let mut certificates = Vec::new();
    if let Some(m) = secrets.identity() {
        let cert = m.current();
        let roots = mizzen_identity::x509::parse_certs_pem(cert.roots_pem()).unwrap_or_default();
        certificates.push(json!({
            "ca_cert": roots.iter().map(|c| cert_json(c)).collect::<Vec<_>>(),
            "cert_chain": cert.certificates().iter().map(|c| cert_json(c)).collect::<Vec<_>>(),
        }));
    }
    for (_, s) in secrets.ads().iter() {
        certificates.push(match s {
            CompiledSecret::Certificate(k) => json!({
                "ca_cert": [],
                "cert_chain": k.cert.iter().map(|c| cert_json(c)).collect::<Vec<_>>(),
            }),
            CompiledSecret::Validation(r) => json!({
                "ca_cert": r.certs.iter().map(|c| cert_json(c)).collect::<Vec<_>>(),
                "cert_chain": [],
            }),
        });
    }
    json!({ "certificates": certificates })
}

fn cert_json(der: &[u8]) -> Value {
    let Ok(info) = mizzen_identity::x509::inspect(der) else {
        return json!({"path": "<inline>"});
    };
    let mut sans: Vec<Value> = info.uri_sans.iter().map(|u| json!({"uri": u})).collect();
    sans.extend(info.dns_sans.iter().map(|d| json!({"dns": d})));
    let days = info
        .not_after
        .duration_since(SystemTime::now())
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0);
    json!({
        "path": "<inline>",
        "serial_number": info.serial,
        "subject_alt_names": sans,
        "days_until_expiration": days.to_string(),
        "valid_from": rfc3339(info.not_before),
        "expiration_time": rfc3339(info.not_after),
    })
}

/// `{version_info, <key>: resource, last_updated}`, Envoy's per-resource entry.
fn entry<P>(a: &Applied<P, ()>, key: &str, v: Value) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("version_info".into(), Value::String(a.version.clone()));
    m.insert(key.into(), v);
    m.insert(
        "last_updated".into(),
        Value::String(rfc3339(a.last_updated)),
    );
    Value::Object(m)
}

fn server_info(ctx: &AdminContext) -> Value {
    let uptime = ctx.started.elapsed().as_secs();
    json!({
        "version": format!("mizzen-proxy/{}", env!("CARGO_PKG_VERSION")),
        "state": ctx.state.readiness().borrow().as_str(),
        "uptime_current_epoch": format!("{uptime}s"),
        "uptime_all_epochs": format!("{uptime}s"),
        "command_line_options": {
            "concurrency": ctx.concurrency,
            "admin_address": ctx.admin_address.to_string(),
            "xds_address": ctx.xds_address,
        },
        "node": node_json(&ctx.node),
    })
}

/// `2024-05-01T10:00:00.123Z`, as Envoy prints timestamps.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(1_709_210_096_789)),
            "2024-02-29T12:34:56.789Z"
        );
    }
}
