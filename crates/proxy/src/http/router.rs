//! One request from arrival to response headers: pick the route, apply its
//! action, forward upstream and turn failures into Envoy's local replies.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use rand::Rng;

use super::body::ProxyBody;
use super::conn::{ConnContext, HttpChain};
use super::respond::{LocalReply, text};
use crate::config::retry::AttemptFailure;
use crate::config::route::{
    Action, ClusterChoice, Forward, HashKey, HashPolicy, RequireTls, Route, RouteTable,
    VirtualHost, WeightedEntry, split_path,
};
use crate::config::{RouteSource, UpstreamProtocol};
use crate::record::{RequestRecord, ResponseFlags};
use crate::state::Snapshot;
use crate::upstream::{AttemptResult, Breakers, RequestBody, SendError};

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
static X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
static X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");
static X_ENVOY_OVERLOADED: HeaderName = HeaderName::from_static("x-envoy-overloaded");
static X_ENVOY_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// What routing decided, for stats and the request record.
#[derive(Default)]
struct Outcome {
    flags: ResponseFlags,
    details: &'static str,
    route_name: Option<Arc<str>>,
    cluster: Option<Arc<str>>,
    upstream_host: Option<std::net::SocketAddr>,
    request_id: Option<HeaderValue>,
    /// The request is gRPC: local replies take gRPC's shape.
    grpc: bool,
}

impl Outcome {
    fn local(&mut self, reply: LocalReply) -> Response<ProxyBody> {
        self.flags.insert(reply.flags());
        self.details = reply.details();
        if self.grpc {
            reply.grpc_response(None)
        } else {
            reply.response()
        }
    }
}

pub(crate) async fn handle(req: Request<Incoming>, conn: &ConnContext) -> Response<ProxyBody> {
    let arrived = Instant::now();
    let chain = &*conn.chain;
    let data = &conn.data;
    let snapshot = data.snapshot.load_full();
    let stats = &chain.stats;
    stats.downstream_rq_total.inc();
    // A guard, so that a request abandoned by its client is still uncounted.
    let _active_rq = ActiveRequest::new(stats);
    if req.version() == Version::HTTP_2 {
        stats.downstream_rq_http2_total.inc();
    } else {
        stats.downstream_rq_http1_total.inc();
    }
    // Capture what the record needs only when someone reads records.
    let observed = data.observer.as_ref().map(|_| {
        (
            req.method().clone(),
            req.version(),
            req.headers().get(header::USER_AGENT).cloned(),
            req.uri()
                .path_and_query()
                .and_then(|p| HeaderValue::from_str(p.as_str()).ok()),
        )
    });
    let mut out = Outcome::default();
    let mut authority = None;
    let mut resp = route(req, conn, &snapshot, &mut out, &mut authority).await;
    resp.headers_mut()
        .insert(header::SERVER, chain.config.server_name.clone());
    let status = resp.status();
    stats.downstream_rq_xx.record(status.as_u16());
    if let (Some(observer), Some((method, protocol, user_agent, path))) = (&data.observer, observed)
    {
        let duration = arrived.elapsed();
        observer.on_request(&RequestRecord {
            start: SystemTime::now()
                .checked_sub(duration)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            duration,
            listener: chain.listener.clone(),
            downstream_remote: conn.peer,
            downstream_local: conn.local,
            protocol,
            method,
            authority,
            path,
            request_id: out.request_id,
            user_agent,
            status,
            flags: out.flags,
            route_name: out.route_name,
            cluster: out.cluster,
            upstream_host: out.upstream_host,
            details: out.details,
            downstream_peer_principal: conn.tls.as_ref().and_then(|t| t.peer_principal.clone()),
        });
    }
    resp
}

/// `x-forwarded-client-cert` as Envoy's connection manager handles it
/// (`forward_client_cert_details`): removed unless the connection is
/// mutual TLS, kept, or given this hop's element
/// `By=<our URI SAN>;Hash=<peer cert SHA-256>;Subject="...";URI=...;DNS=...`.
fn forward_client_cert(
    headers: &mut HeaderMap,
    cfg: &crate::config::HttpConfig,
    tls: Option<&crate::tls::PeerTls>,
) {
    use crate::config::listener::ForwardClientCert as F;
    let mode = cfg.forward_client_cert;
    if mode == F::AlwaysForwardOnly {
        return;
    }
    let mutual = tls.filter(|t| t.peer_certificate);
    let Some(t) = mutual.filter(|_| mode != F::Sanitize) else {
        headers.remove(&X_FORWARDED_CLIENT_CERT);
        return;
    };
    if mode == F::ForwardOnly {
        return;
    }
    let mut element: Vec<String> = Vec::new();
    for uri in t.local_uri_sans.iter() {
        element.push(format!("By={uri}"));
    }
    if !t.peer_hash.is_empty() {
        element.push(format!("Hash={}", t.peer_hash));
    }
    let details = cfg.client_cert_details;
    if details.subject {
        element.push(format!("Subject=\"{}\"", t.peer_subject));
    }
    if details.uri {
        element.push(format!(
            "URI={}",
            t.peer_uri_sans.first().map(String::as_str).unwrap_or("")
        ));
    }
    if details.dns {
        for dns in &t.peer_dns_sans {
            element.push(format!("DNS={dns}"));
        }
    }
    let element = element.join(";");
    let value = match (mode, headers.get(&X_FORWARDED_CLIENT_CERT)) {
        (F::AppendForward, Some(existing)) => {
            format!("{},{element}", String::from_utf8_lossy(existing.as_bytes()))
        }
        _ => element,
    };
    match HeaderValue::from_str(&value) {
        Ok(v) => {
            headers.insert(X_FORWARDED_CLIENT_CERT.clone(), v);
        }
        Err(_) => {
            headers.remove(&X_FORWARDED_CLIENT_CERT);
        }
    }
}

struct ActiveRequest<'a>(&'a crate::stats::HttpStats);

impl<'a> ActiveRequest<'a> {
    fn new(stats: &'a crate::stats::HttpStats) -> Self {
        stats.downstream_rq_active.inc();
        ActiveRequest(stats)
    }
}

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        self.0.downstream_rq_active.dec();
    }
}

async fn route(
    req: Request<Incoming>,
    conn: &ConnContext,
    snapshot: &Snapshot,
    out: &mut Outcome,
    authority_out: &mut Option<HeaderValue>,
) -> Response<ProxyBody> {
    let active: &HttpChain = &conn.chain;
    let cfg = &*active.config;
    let (mut parts, body) = req.into_parts();
    forward_client_cert(&mut parts.headers, cfg, conn.tls.as_deref());
    out.grpc = super::respond::is_grpc(&parts.headers);
    let downstream_h2 = parts.version == Version::HTTP_2;
    // HTTP/1 absolute-form (`GET http://b/ HTTP/1.1`) carries a scheme.
    let absolute = !downstream_h2 && parts.uri.scheme().is_some();
    let use_uri_authority = downstream_h2 || (absolute && cfg.allow_absolute_url);
    let host_header = parts.headers.get(header::HOST);
    let authority_value = match (use_uri_authority, parts.uri.authority(), host_header) {
        (true, Some(a), _) => HeaderValue::from_str(a.as_str()).ok(),
        (_, _, Some(h)) => Some(h.clone()),
        (false, Some(a), None) => HeaderValue::from_str(a.as_str()).ok(),
        (_, None, None) => None,
    };
    *authority_out = authority_value.clone();
    let authority = authority_value
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let pq = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    // Without allow_absolute_url Envoy matches routes against the whole URL.
    let full_url;
    let match_path: &str = if absolute && !cfg.allow_absolute_url {
        full_url = parts.uri.to_string();
        &full_url
    } else {
        pq.as_str()
    };

    let table: &RouteTable = match &cfg.routes {
        RouteSource::Inline(t) => t,
        RouteSource::Rds(name) => match snapshot.routes.get(&**name) {
            Some(t) => t,
            None => {
                active.stats.no_route.inc();
                return out.local(LocalReply::NoRoute);
            }
        },
    };
    let view = crate::config::route::RequestView {
        method: &parts.method,
        scheme: "http",
        authority,
        path: match_path,
        headers: &parts.headers,
    };
    let Some(vhost) = table.virtual_host(authority) else {
        active.stats.no_route.inc();
        return out.local(LocalReply::NoRoute);
    };
    if vhost.require_tls != RequireTls::None
        && vhost.needs_tls_redirect(conn.tls.is_some(), &parts.headers)
    {
        active.stats.rq_redirect.inc();
        out.details = "direct_response";
        let mut resp = text(http::StatusCode::MOVED_PERMANENTLY, "");
        let location = VirtualHost::tls_redirect_location(authority, pq.as_str());
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return resp;
    }
    let Some(route) = vhost.route(&view) else {
        active.stats.no_route.inc();
        return out.local(LocalReply::NoRoute);
    };
    out.route_name = Some(route.name.clone());
    let mut cors_headers = None;
    if cfg.filters.cors
        && let Some(policy) = route.filters.cors.as_ref().or(vhost.filters.cors.as_ref())
    {
        use crate::config::cors::CorsDecision;
        match policy.decide(&parts.method, &parts.headers) {
            CorsDecision::Pass => {}
            CorsDecision::Preflight(h) => {
                out.details = "cors_response";
                let mut resp = Response::new(ProxyBody::Empty);
                *resp.headers_mut() = h;
                return resp;
            }
            CorsDecision::Simple(h) => cors_headers = Some(h),
        }
    }
    if let Some(filter) = &cfg.filters.fault {
        let fault = route.filters.fault.as_ref().unwrap_or(filter);
        if let Some(mut resp) = inject_fault(fault, out).await {
            if let Some(h) = cors_headers {
                resp.headers_mut().extend(h);
            }
            return resp;
        }
    }
    let mut resp = route_action(
        route,
        table,
        vhost,
        parts,
        body,
        conn,
        snapshot,
        out,
        authority_value.clone(),
        authority,
        pq.clone(),
        match_path,
        downstream_h2,
    )
    .await;
    if let Some(h) = cors_headers {
        resp.headers_mut().extend(h);
    }
    resp
}

/// The matched route's action: a local answer, or forwarding upstream.
#[allow(clippy::too_many_arguments)]
async fn route_action(
    route: &Route,
    table: &RouteTable,
    vhost: &VirtualHost,
    parts: http::request::Parts,
    body: Incoming,
    conn: &ConnContext,
    snapshot: &Snapshot,
    out: &mut Outcome,
    authority_value: Option<HeaderValue>,
    authority: &str,
    pq: PathAndQuery,
    match_path: &str,
    downstream_h2: bool,
) -> Response<ProxyBody> {
    let active: &HttpChain = &conn.chain;
    let levels = Levels {
        table,
        vhost,
        route,
        entry: None,
    };
    match &route.action {
        Action::Direct(d) => {
            active.stats.rq_direct_response.inc();
            out.details = "direct_response";
            let mut resp = match &d.body {
                Some(b) => {
                    let mut r = Response::new(ProxyBody::Full(Some(b.clone())));
                    r.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                    r
                }
                None => Response::new(ProxyBody::Empty),
            };
            *resp.status_mut() = d.status;
            levels.response_headers(resp.headers_mut());
            resp
        }
        Action::Redirect(r) => {
            active.stats.rq_redirect.inc();
            out.details = "direct_response";
            let location = r.location("http", authority, match_path, route.matched_len(match_path));
            let mut resp = text(r.status, "");
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            levels.response_headers(resp.headers_mut());
            resp
        }
        Action::Forward(f) => {
            let request = Request::from_parts(parts, body);
            forward(
                request,
                f,
                levels,
                conn,
                snapshot,
                out,
                authority_value,
                pq,
                downstream_h2,
            )
            .await
        }
    }
}

/// The fault filter: a delay, then maybe an abort (each drawn independently).
async fn inject_fault(
    fault: &crate::config::fault::FaultConfig,
    out: &mut Outcome,
) -> Option<Response<ProxyBody>> {
    use crate::config::fault::Abort;
    if let Some((delay, fraction)) = fault.delay
        && fraction.sample()
    {
        out.flags.insert(ResponseFlags::DELAY_INJECTED);
        tokio::time::sleep(delay).await;
    }
    let (abort, fraction) = fault.abort?;
    if !fraction.sample() {
        return None;
    }
    Some(match abort {
        Abort::Http(status) => out.local(LocalReply::FaultAbort(status)),
        Abort::Grpc(code) => {
            let reply = LocalReply::FaultAbort(http::StatusCode::OK);
            out.flags.insert(reply.flags());
            out.details = reply.details();
            reply.grpc_response(Some(code))
        }
    })
}

/// The header-mutation levels of a matched route, most specific first.
#[derive(Clone, Copy)]
struct Levels<'a> {
    table: &'a RouteTable,
    vhost: &'a VirtualHost,
    route: &'a Route,
    entry: Option<&'a WeightedEntry>,
}

impl Levels<'_> {
    fn request_headers(&self, h: &mut HeaderMap) {
        let ops = [
            self.entry.map(|e| &e.request_headers),
            Some(&self.route.request_headers),
            Some(&self.vhost.request_headers),
            Some(&self.table.request_headers),
        ];
        apply_levels(ops, self.table.most_specific_wins, h);
    }

    fn response_headers(&self, h: &mut HeaderMap) {
        let ops = [
            self.entry.map(|e| &e.response_headers),
            Some(&self.route.response_headers),
            Some(&self.vhost.response_headers),
            Some(&self.table.response_headers),
        ];
        apply_levels(ops, self.table.most_specific_wins, h);
    }
}

/// Envoy evaluates mutations from most to least specific, so the enclosing
/// levels win on conflicts, unless `most_specific_header_mutations_wins`.
fn apply_levels(
    ops: [Option<&crate::config::headers::HeaderOps>; 4],
    reverse: bool,
    h: &mut HeaderMap,
) {
    let apply = |o: &Option<&crate::config::headers::HeaderOps>, h: &mut HeaderMap| {
        if let Some(o) = o
            && !o.is_empty()
        {
            o.apply(h);
        }
    };
    if reverse {
        ops.iter().rev().for_each(|o| apply(o, h));
    } else {
        ops.iter().for_each(|o| apply(o, h));
    }
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    mut req: Request<Incoming>,
    f: &Forward,
    mut levels: Levels<'_>,
    conn: &ConnContext,
    snapshot: &Snapshot,
    out: &mut Outcome,
    authority: Option<HeaderValue>,
    pq: PathAndQuery,
    downstream_h2: bool,
) -> Response<ProxyBody> {
    let active: &HttpChain = &conn.chain;
    let cfg = &*active.config;
    let cluster_name = match &f.clusters {
        ClusterChoice::Single(name) => name,
        ClusterChoice::Weighted(w) => {
            let entry = w.pick(rand::rng().random_range(0..w.total));
            levels.entry = Some(entry);
            &entry.cluster
        }
    };
    out.cluster = Some(cluster_name.clone());
    let Some(cluster) = snapshot.clusters.get(&**cluster_name) else {
        active.stats.no_cluster.inc();
        let mut resp = out.local(LocalReply::NoCluster(f.cluster_not_found_status));
        levels.response_headers(resp.headers_mut());
        return resp;
    };
    let upstream_h2 = match cluster.config.protocol {
        UpstreamProtocol::Http1 => false,
        UpstreamProtocol::Http2 => true,
        UpstreamProtocol::Downstream => downstream_h2,
    };

    let downstream_upgrade = (cfg.websocket
        && req.version() == Version::HTTP_11
        && super::upgrade::is_websocket(req.headers()))
    .then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    if downstream_upgrade.is_some() {
        super::upgrade::restore_headers(headers);
    }
    headers.remove(header::HOST);
    levels.request_headers(headers);
    if cfg.generate_request_id && !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID.clone(), new_request_id());
    }
    out.request_id = headers.get(&X_REQUEST_ID).cloned();
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        let proto = if conn.tls.is_some() { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    let attempt_header = !cfg.suppress_envoy_headers && levels.vhost.attempt_count_header;
    if !cfg.suppress_envoy_headers
        && let Some(v) = &f.timeout_header
    {
        headers.insert(X_ENVOY_EXPECTED_RQ_TIMEOUT_MS.clone(), v.clone());
    }
    let host_value = levels
        .entry
        .and_then(|e| e.host_rewrite.clone())
        .or_else(|| f.host_rewrite.clone())
        .or(authority);
    let mut set_cookie = None;
    let hash = if f.hash_policy.is_empty() {
        None
    } else {
        request_hash(
            &f.hash_policy,
            &parts.headers,
            &pq,
            conn.peer,
            &mut set_cookie,
        )
    };
    let pq = match &f.prefix_rewrite {
        None => pq,
        Some(rewrite) => rewrite_prefix(&pq, rewrite, levels.route.matched_len(pq.as_str())),
    };
    let pq = match &f.regex_rewrite {
        None => pq,
        Some((re, with)) => rewrite_regex(&pq, re, with),
    };
    let h2_authority = host_value
        .as_ref()
        .and_then(|h| Authority::try_from(h.as_bytes()).ok());
    if upstream_h2 {
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = h2_authority.clone();
        uri.path_and_query = Some(pq);
        parts.uri = Uri::from_parts(uri).unwrap_or_default();
        parts.version = Version::HTTP_2;
    } else {
        parts.uri = Uri::from(pq);
        parts.version = Version::HTTP_11;
        if let Some(h) = &host_value {
            parts.headers.insert(header::HOST, h.clone());
        }
    }

    if let Some(on_upgrade) = downstream_upgrade {
        let original_dst = cluster.original_dst_host(conn.local);
        let Some(host) = original_dst.as_ref().or_else(|| cluster.pick(hash)) else {
            cluster.upstream.stats.upstream_cx_none_healthy.inc();
            return out.local(LocalReply::NoHealthyUpstream);
        };
        out.upstream_host = Some(host.address);
        cluster.upstream.stats.upstream_rq_total.inc();
        let request = Request::from_parts(parts, RequestBody::Stream(body));
        let config = &cluster.config;
        return match super::upgrade::forward(
            host,
            request,
            config.connect_timeout,
            config.source_address,
            on_upgrade,
        )
        .await
        {
            Ok(mut resp) => {
                let upgraded = resp.status() == http::StatusCode::SWITCHING_PROTOCOLS;
                cluster
                    .upstream
                    .stats
                    .record_response(resp.status().as_u16());
                if !upgraded {
                    strip_hop_by_hop(resp.headers_mut());
                }
                levels.response_headers(resp.headers_mut());
                *resp.version_mut() = Version::default();
                resp
            }
            Err(reply) => out.local(reply),
        };
    }
    // Bodies are held in memory when they may be sent more than once.
    let mirrors: Vec<&crate::config::route::Mirror> =
        f.mirrors.iter().filter(|m| m.fraction.sample()).collect();
    let replay = f.retry.is_some() || !mirrors.is_empty();
    let mut body = if replay {
        buffer_body(body).await
    } else {
        BodySource::Stream(Some(body))
    };
    if let BodySource::Buffered(bytes) = &body {
        for m in &mirrors {
            spawn_mirror(
                snapshot,
                &m.cluster,
                &parts,
                bytes,
                upstream_h2,
                m.shadow_suffix,
                f.timeout,
            );
        }
    }

    let started = Instant::now();
    let deadline = f.timeout.map(|t| started + t);
    let policy = f.retry.as_deref();
    let cstats = &cluster.upstream.stats;
    let original_dst = cluster.original_dst_host(conn.local);
    let mut parts = Some(parts);
    let mut attempt: u32 = 0;
    let mut _retry_slot = None;
    let reply = loop {
        attempt += 1;
        let Some(host) = original_dst.as_ref().or_else(|| cluster.pick(hash)) else {
            cstats.upstream_cx_none_healthy.inc();
            break LocalReply::NoHealthyUpstream;
        };
        out.upstream_host = Some(host.address);
        // The last possible attempt takes the parts; earlier ones copy them.
        let can_retry = policy.is_some_and(|p| attempt <= p.num_retries) && body.replayable();
        let Some(request) = build_attempt(&mut parts, can_retry, &mut body) else {
            break LocalReply::ConnectionTermination;
        };
        let mut request = request;
        if attempt_header {
            request
                .headers_mut()
                .insert(X_ENVOY_ATTEMPT_COUNT.clone(), HeaderValue::from(attempt));
        }
        if upstream_h2 && h2_authority.is_none() {
            set_uri_authority(&mut request, host.address);
        }
        let per_try = policy.and_then(|p| p.per_try_timeout);
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let limit = match (per_try, remaining) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        cstats.upstream_rq_total.inc();
        let attempt_started = Instant::now();
        let send = host.send(request, upstream_h2, &cluster.config);
        let result = match limit {
            Some(t) => tokio::time::timeout(t, send).await.ok(),
            None => Some(send.await),
        };
        let failure = match result {
            Some(Ok(resp)) => {
                let status = resp.status().as_u16();
                cluster.report(host, AttemptResult::Status(status));
                if let Some(p) = policy
                    && p.retry_response(status, resp.headers())
                {
                    if can_retry {
                        match retry_slot(cluster) {
                            Some(slot) => {
                                _retry_slot = Some(slot);
                                cstats.record_response(status);
                                drop(resp);
                                if backoff(p, attempt, deadline).await {
                                    continue;
                                }
                                cstats.upstream_rq_timeout.inc();
                                break LocalReply::Timeout;
                            }
                            None => out.flags.insert(ResponseFlags::UPSTREAM_OVERFLOW),
                        }
                    } else if policy.is_some_and(|p| attempt > p.num_retries) {
                        cstats.upstream_rq_retry_limit_exceeded.inc();
                        out.flags
                            .insert(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
                    }
                }
                let (mut rparts, rbody) = resp.into_parts();
                cstats.record_response(rparts.status.as_u16());
                strip_hop_by_hop(&mut rparts.headers);
                levels.response_headers(&mut rparts.headers);
                if !cfg.suppress_envoy_headers {
                    rparts.headers.insert(
                        X_ENVOY_UPSTREAM_SERVICE_TIME.clone(),
                        HeaderValue::from(attempt_started.elapsed().as_millis() as u64),
                    );
                }
                if let Some(cookie) = set_cookie {
                    rparts.headers.append(header::SET_COOKIE, cookie);
                }
                rparts.version = Version::default();
                return Response::from_parts(rparts, ProxyBody::Upstream(rbody));
            }
            None => {
                let global = deadline.is_some_and(|d| Instant::now() >= d)
                    || per_try.is_none_or(|t| remaining.is_some_and(|r| r <= t));
                cluster.report(host, AttemptResult::Timeout);
                if global {
                    cstats.upstream_rq_timeout.inc();
                    break LocalReply::Timeout;
                }
                cstats.upstream_rq_per_try_timeout.inc();
                (AttemptFailure::PerTryTimeout, LocalReply::Timeout)
            }
            Some(Err(SendError::Overflow)) => {
                cstats.upstream_cx_overflow.inc();
                break LocalReply::Overflow;
            }
            Some(Err(SendError::Connect(reason))) => {
                tracing::debug!(cluster = %cluster_name, host = %host.address, %reason, "upstream connect failed");
                cluster.report(host, AttemptResult::ConnectFailed);
                let reply = if reason == "connection timeout" {
                    LocalReply::ConnectTimeout
                } else if reason.starts_with("TLS_error") {
                    LocalReply::TlsConnectFailure
                } else {
                    LocalReply::ConnectFailure
                };
                (AttemptFailure::Connect, reply)
            }
            Some(Err(e @ SendError::Reset(_))) => {
                tracing::debug!(cluster = %cluster_name, host = %host.address, error = %e, "upstream reset");
                cluster.report(host, AttemptResult::Reset);
                let kind = if e.refused_stream() {
                    AttemptFailure::RefusedStream
                } else {
                    AttemptFailure::Reset
                };
                (kind, LocalReply::ConnectionTermination)
            }
        };
        let (kind, reply) = failure;
        let Some(p) = policy.filter(|p| p.retry_failure(kind)) else {
            break reply;
        };
        if !can_retry {
            if attempt > p.num_retries {
                cstats.upstream_rq_retry_limit_exceeded.inc();
                out.flags
                    .insert(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
            }
            break reply;
        }
        match retry_slot(cluster) {
            Some(slot) => _retry_slot = Some(slot),
            None => {
                out.flags.insert(ResponseFlags::UPSTREAM_OVERFLOW);
                break reply;
            }
        }
        // Envoy charges each failed attempt's local reply to the cluster.
        cstats.record_response(reply.status().as_u16());
        if !backoff(p, attempt, deadline).await {
            cstats.upstream_rq_timeout.inc();
            break LocalReply::Timeout;
        }
    };
    // Envoy charges its own reply to the cluster's per-code stats.
    cstats.record_response(reply.status().as_u16());
    let mut resp = out.local(reply);
    if reply == LocalReply::Overflow && !cfg.suppress_envoy_headers {
        resp.headers_mut()
            .insert(X_ENVOY_OVERLOADED.clone(), HeaderValue::from_static("true"));
    }
    levels.response_headers(resp.headers_mut());
    resp
}

/// Where the body of each attempt comes from.
enum BodySource {
    /// Streamed once from downstream.
    Stream(Option<Incoming>),
    /// Read in full: every attempt (and mirror) sends a copy.
    Buffered(bytes::Bytes),
    /// Too large to hold: the buffered head, then the rest of the stream.
    Partial(Option<(bytes::Bytes, Incoming)>),
}

impl BodySource {
    fn replayable(&self) -> bool {
        matches!(self, BodySource::Buffered(_))
    }

    fn take(&mut self) -> Option<RequestBody> {
        match self {
            BodySource::Stream(b) => b.take().map(RequestBody::Stream),
            BodySource::Buffered(b) => Some(RequestBody::buffered(b)),
            BodySource::Partial(p) => p
                .take()
                .map(|(head, rest)| RequestBody::Prefixed(Some(head), rest)),
        }
    }
}

/// Bodies up to this size are buffered so that they can be replayed
/// (Envoy's default per-request buffer limit).
const REPLAY_LIMIT: usize = 1024 * 1024;

async fn buffer_body(mut body: Incoming) -> BodySource {
    use hyper::body::Body as _;
    if body.is_end_stream() {
        return BodySource::Buffered(bytes::Bytes::new());
    }
    if body.size_hint().lower() > REPLAY_LIMIT as u64 {
        return BodySource::Stream(Some(body));
    }
    let mut buf = bytes::BytesMut::new();
    loop {
        match http_body_util::BodyExt::frame(&mut body).await {
            None => return BodySource::Buffered(buf.freeze()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
                if buf.len() > REPLAY_LIMIT {
                    return BodySource::Partial(Some((buf.freeze(), body)));
                }
                if body.is_end_stream() {
                    return BodySource::Buffered(buf.freeze());
                }
            }
            // The downstream went away: nothing to send.
            Some(Err(_)) => return BodySource::Stream(None),
        }
    }
}

/// The request for one attempt: a copy of the parts while more attempts
/// may follow, else the parts themselves.
fn build_attempt(
    parts: &mut Option<http::request::Parts>,
    keep: bool,
    body: &mut BodySource,
) -> Option<Request<RequestBody>> {
    let body = body.take()?;
    if keep {
        let p = parts.as_ref()?;
        let mut req = Request::new(body);
        *req.method_mut() = p.method.clone();
        *req.uri_mut() = p.uri.clone();
        *req.version_mut() = p.version;
        *req.headers_mut() = p.headers.clone();
        Some(req)
    } else {
        Some(Request::from_parts(parts.take()?, body))
    }
}

fn set_uri_authority<B>(req: &mut Request<B>, address: std::net::SocketAddr) {
    let mut uri = std::mem::take(req.uri_mut()).into_parts();
    uri.authority = Authority::try_from(address.to_string().as_str()).ok();
    if let Ok(u) = Uri::from_parts(uri) {
        *req.uri_mut() = u;
    }
}

/// A unit of the cluster's `max_retries` budget, held while the retry runs.
fn retry_slot(cluster: &crate::upstream::ClusterEntry) -> Option<crate::upstream::Slot<'_>> {
    let breakers = &cluster.upstream.breakers;
    let slot = Breakers::try_acquire(&breakers.retries, cluster.config.limits.max_retries);
    match slot {
        Some(_) => cluster.upstream.stats.upstream_rq_retry.inc(),
        None => cluster.upstream.stats.upstream_rq_retry_overflow.inc(),
    }
    slot
}

/// Waits before retry `attempt`; false when the route deadline comes first.
async fn backoff(
    p: &crate::config::retry::RetryPolicy,
    attempt: u32,
    deadline: Option<Instant>,
) -> bool {
    let wait = p.backoff(attempt);
    match deadline {
        Some(d) if Instant::now() + wait >= d => {
            tokio::time::sleep_until(d.into()).await;
            false
        }
        _ => {
            tokio::time::sleep(wait).await;
            true
        }
    }
}

/// The consistent-hash key of a request: each policy's hash folded into the
/// previous ones, stopping at a terminal policy that produced one.
fn request_hash(
    policies: &[HashPolicy],
    headers: &HeaderMap,
    pq: &PathAndQuery,
    peer: std::net::SocketAddr,
    set_cookie: &mut Option<HeaderValue>,
) -> Option<u64> {
    use crate::upstream::hash_bytes;
    let mut hash: Option<u64> = None;
    for p in policies {
        let h = match &p.key {
            HashKey::Header(name) => headers.get(name).map(|v| hash_bytes(v.as_bytes())),
            HashKey::Cookie { name, ttl, path } => match cookie(headers, name) {
                Some(v) => Some(hash_bytes(v.as_bytes())),
                None => ttl.map(|ttl| {
                    let value = format!("{:016x}", hash_bytes(peer.to_string().as_bytes()));
                    *set_cookie =
                        HeaderValue::from_str(&set_cookie_value(name, &value, path, ttl)).ok();
                    hash_bytes(value.as_bytes())
                }),
            },
            HashKey::SourceIp => Some(hash_bytes(peer.ip().to_string().as_bytes())),
            HashKey::QueryParameter(name) => pq
                .query()
                .and_then(|q| crate::config::route::query_param(q, name))
                .map(|v| hash_bytes(v.as_bytes())),
        };
        if let Some(h) = h {
            hash = Some(hash.map_or(h, |prev| prev.rotate_left(1) ^ h));
            if p.terminal {
                break;
            }
        }
    }
    hash
}

/// The value of cookie `name` in the request's `cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"'))
        })
}

/// Envoy's generated hash cookie: quoted value, `Max-Age` unless the TTL is
/// zero (a session cookie), the path when set, `HttpOnly`.
fn set_cookie_value(name: &str, value: &str, path: &str, ttl: std::time::Duration) -> String {
    let mut s = format!("{name}=\"{value}\"");
    if !ttl.is_zero() {
        s.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    if !path.is_empty() {
        s.push_str(&format!("; Path={path}"));
    }
    s.push_str("; HttpOnly");
    s
}

/// Fires a copy of the request at a mirror cluster and forgets it: the
/// response is drained and dropped, and nothing waits for it.
fn spawn_mirror(
    snapshot: &Snapshot,
    cluster_name: &Arc<str>,
    parts: &http::request::Parts,
    body: &bytes::Bytes,
    upstream_h2: bool,
    shadow_suffix: bool,
    timeout: Option<std::time::Duration>,
) {
    let Some(cluster) = snapshot.clusters.get(&**cluster_name) else {
        return;
    };
    let Some(host) = cluster.pick(None).cloned() else {
        return;
    };
    let mut req = Request::new(RequestBody::buffered(body));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    if shadow_suffix {
        shadow_host(&mut req, upstream_h2);
    }
    let config = cluster.config.clone();
    let stats = cluster.upstream.stats.clone();
    let h2 = upstream_h2 || cluster.config.protocol == UpstreamProtocol::Http2;
    tokio::spawn(async move {
        stats.upstream_rq_total.inc();
        let send = async {
            if let Ok(resp) = host.send(req, h2, &config).await {
                stats.record_response(resp.status().as_u16());
                let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
            }
        };
        match timeout {
            Some(t) => {
                let _ = tokio::time::timeout(t, send).await;
            }
            None => send.await,
        }
    });
}

/// `host:port` → `host-shadow:port`, in the Host header or the URI authority.
fn shadow_host<B>(req: &mut Request<B>, h2: bool) {
    let current = if h2 {
        req.uri().authority().map(|a| a.as_str().to_string())
    } else {
        req.headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let Some(current) = current else { return };
    let shadow = shadow_authority(&current);
    if let Ok(v) = HeaderValue::from_str(&shadow) {
        req.headers_mut().insert(header::HOST, v);
    }
    if h2 {
        let mut uri = std::mem::take(req.uri_mut()).into_parts();
        uri.authority = Authority::try_from(shadow.as_str()).ok();
        if let Ok(u) = Uri::from_parts(uri) {
            *req.uri_mut() = u;
        }
    }
}

fn shadow_authority(current: &str) -> String {
    let (host, port) = match current.rfind(':') {
        Some(i)
            if i + 1 < current.len()
                && current[i + 1..].bytes().all(|b| b.is_ascii_digit())
                && (!current.starts_with('[') || current[..i].ends_with(']')) =>
        {
            current.split_at(i)
        }
        _ => (current, ""),
    };
    format!("{host}-shadow{port}")
}

fn rewrite_regex(pq: &PathAndQuery, re: &regex::Regex, with: &str) -> PathAndQuery {
    let (path, query) = split_path(pq.as_str());
    let mut s = re.replace_all(path, with).into_owned();
    if !query.is_empty() {
        s.push('?');
        s.push_str(query);
    }
    PathAndQuery::try_from(s).unwrap_or_else(|_| pq.clone())
}

fn rewrite_prefix(pq: &PathAndQuery, rewrite: &str, matched: usize) -> PathAndQuery {
    let (path, query) = split_path(pq.as_str());
    let rest = path.get(matched.min(path.len())..).unwrap_or("");
    let mut s = String::with_capacity(rewrite.len() + rest.len() + query.len() + 1);
    s.push_str(rewrite);
    s.push_str(rest);
    if !query.is_empty() {
        s.push('?');
        s.push_str(query);
    }
    PathAndQuery::try_from(s).unwrap_or_else(|_| pq.clone())
}

/// Removes connection-level headers, which must not cross a proxy.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    if h.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().to_ascii_lowercase().as_bytes()).ok())
            .collect();
        for name in named {
            h.remove(name);
        }
        h.remove(header::CONNECTION);
    }
    h.remove(&KEEP_ALIVE);
    h.remove(&PROXY_CONNECTION);
    h.remove(header::TRANSFER_ENCODING);
    h.remove(header::UPGRADE);
    if h.get(header::TE).is_some_and(|v| v != "trailers") {
        h.remove(header::TE);
    }
}

/// A random (version 4) UUID, the form Envoy uses for `x-request-id`.
fn new_request_id() -> HeaderValue {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 36];
    let mut j = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[j] = b'-';
            j += 1;
        }
        out[j] = HEX[usize::from(b >> 4)];
        out[j + 1] = HEX[usize::from(b & 0x0f)];
        j += 2;
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v4() {
        let id = new_request_id();
        let s = id.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert_ne!(new_request_id(), id);
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Custom"),
        );
        h.insert("x-custom", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-app", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["te", "x-app"]);
    }

    #[test]
    fn shadow_host_goes_before_the_port() {
        assert_eq!(shadow_authority("web:80"), "web-shadow:80");
        assert_eq!(shadow_authority("web"), "web-shadow");
        assert_eq!(shadow_authority("[::1]:8080"), "[::1]-shadow:8080");
        assert_eq!(shadow_authority("[::1]"), "[::1]-shadow");
    }

    #[test]
    fn hash_policies_and_generated_cookie() {
        use crate::config::route::{HashKey, HashPolicy};
        let peer: std::net::SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let pq = PathAndQuery::from_static("/?session=42");
        let policies = vec![
            HashPolicy {
                key: HashKey::Header(HeaderName::from_static("x-user")),
                terminal: true,
            },
            HashPolicy {
                key: HashKey::QueryParameter("session".into()),
                terminal: false,
            },
        ];
        let mut cookie_out = None;
        let mut h = HeaderMap::new();
        let by_query = request_hash(&policies, &h, &pq, peer, &mut cookie_out);
        assert!(by_query.is_some());
        h.insert("x-user", HeaderValue::from_static("alice"));
        let by_header = request_hash(&policies, &h, &pq, peer, &mut cookie_out);
        assert_ne!(by_header, by_query);
        // Terminal: the query parameter no longer counts.
        let other = PathAndQuery::from_static("/?session=43");
        assert_eq!(
            request_hash(&policies, &h, &other, peer, &mut cookie_out),
            by_header
        );
        let cookie = vec![HashPolicy {
            key: HashKey::Cookie {
                name: "sticky".into(),
                ttl: Some(std::time::Duration::from_secs(60)),
                path: "/".into(),
            },
            terminal: false,
        }];
        let none = HeaderMap::new();
        let generated = request_hash(&cookie, &none, &pq, peer, &mut cookie_out);
        let set = cookie_out.take().unwrap();
        let set = set.to_str().unwrap();
        assert!(set.starts_with("sticky=\""), "{set}");
        assert!(set.ends_with("; Max-Age=60; Path=/; HttpOnly"), "{set}");
        // The client sending the generated cookie back hashes the same.
        let value = set.split('"').nth(1).unwrap();
        let mut back = HeaderMap::new();
        back.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; sticky={value}")).unwrap(),
        );
        assert_eq!(
            request_hash(&cookie, &back, &pq, peer, &mut cookie_out),
            generated
        );
        assert!(cookie_out.is_none());
    }

    #[test]
    fn regex_rewrite_substitutes_groups() {
        let re = regex::Regex::new("^/api/([a-z]+)/(.*)$").unwrap();
        let pq = PathAndQuery::from_static("/api/items/42?full=1");
        assert_eq!(
            rewrite_regex(&pq, &re, "/v2/${2}/${1}").as_str(),
            "/v2/42/items?full=1"
        );
    }

    #[test]
    fn prefix_rewrite_keeps_rest_and_query() {
        let pq = PathAndQuery::from_static("/api/v1/items?x=1");
        assert_eq!(rewrite_prefix(&pq, "/", 5).as_str(), "/v1/items?x=1");
        assert_eq!(rewrite_prefix(&pq, "/new", 4).as_str(), "/new/v1/items?x=1");
    }
}
