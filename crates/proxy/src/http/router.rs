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
use crate::config::route::{
    Action, ClusterChoice, Forward, Route, RouteTable, VirtualHost, WeightedEntry, split_path,
};
use crate::config::{RouteSource, UpstreamProtocol};
use crate::record::{RequestRecord, ResponseFlags};
use crate::state::Snapshot;
use crate::upstream::SendError;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
static X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");
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
}

impl Outcome {
    fn local(&mut self, reply: LocalReply) -> Response<ProxyBody> {
        self.flags.insert(reply.flags());
        self.details = reply.details();
        reply.response()
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
        });
    }
    resp
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
    let (parts, body) = req.into_parts();
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
    let Some(route) = vhost.route(&view) else {
        active.stats.no_route.inc();
        return out.local(LocalReply::NoRoute);
    };
    out.route_name = Some(route.name.clone());
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
    req: Request<Incoming>,
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
    let cstats = &cluster.upstream.stats;
    // ORIGINAL_DST clusters send to where the downstream connection was going.
    let original_dst = cluster.original_dst_host(conn.local);
    let Some(host) = original_dst.as_ref().or_else(|| cluster.pick()) else {
        cstats.upstream_cx_none_healthy.inc();
        let mut resp = out.local(LocalReply::NoHealthyUpstream);
        levels.response_headers(resp.headers_mut());
        return resp;
    };
    out.upstream_host = Some(host.address);
    let upstream_h2 = match cluster.config.protocol {
        UpstreamProtocol::Http1 => false,
        UpstreamProtocol::Http2 => true,
        UpstreamProtocol::Downstream => downstream_h2,
    };

    let (mut parts, body) = req.into_parts();
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    levels.request_headers(headers);
    if cfg.generate_request_id && !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID.clone(), new_request_id());
    }
    out.request_id = headers.get(&X_REQUEST_ID).cloned();
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    if !cfg.suppress_envoy_headers {
        if let Some(v) = &f.timeout_header {
            headers.insert(X_ENVOY_EXPECTED_RQ_TIMEOUT_MS.clone(), v.clone());
        }
        if levels.vhost.attempt_count_header {
            headers.insert(X_ENVOY_ATTEMPT_COUNT.clone(), HeaderValue::from_static("1"));
        }
    }
    let host_value = levels
        .entry
        .and_then(|e| e.host_rewrite.clone())
        .or_else(|| f.host_rewrite.clone())
        .or(authority);
    let pq = match &f.prefix_rewrite {
        None => pq,
        Some(rewrite) => rewrite_prefix(&pq, rewrite, levels.route.matched_len(pq.as_str())),
    };
    if upstream_h2 {
        let authority = host_value
            .as_ref()
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .or_else(|| Authority::try_from(host.address.to_string().as_str()).ok());
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = authority;
        uri.path_and_query = Some(pq);
        parts.uri = Uri::from_parts(uri).unwrap_or_default();
        parts.version = Version::HTTP_2;
    } else {
        parts.uri = Uri::from(pq);
        parts.version = Version::HTTP_11;
        if let Some(h) = host_value {
            parts.headers.insert(header::HOST, h);
        }
    }
    let request = Request::from_parts(parts, body);

    cstats.upstream_rq_total.inc();
    let started = Instant::now();
    let send = host.send(
        request,
        upstream_h2,
        cluster.config.connect_timeout,
        cluster.config.source_address,
    );
    let result = match f.timeout {
        Some(t) => tokio::time::timeout(t, send).await.ok(),
        None => Some(send.await),
    };
    let reply = match result {
        None => {
            cstats.upstream_rq_timeout.inc();
            LocalReply::Timeout
        }
        Some(Err(SendError::Connect(reason))) => {
            tracing::debug!(cluster = %cluster_name, host = %host.address, %reason, "upstream connect failed");
            if reason == "connection timeout" {
                LocalReply::ConnectTimeout
            } else {
                LocalReply::ConnectFailure
            }
        }
        Some(Err(SendError::Reset(error))) => {
            tracing::debug!(cluster = %cluster_name, host = %host.address, %error, "upstream reset");
            LocalReply::ConnectionTermination
        }
        Some(Ok(resp)) => {
            let (mut rparts, rbody) = resp.into_parts();
            cstats.record_response(rparts.status.as_u16());
            strip_hop_by_hop(&mut rparts.headers);
            levels.response_headers(&mut rparts.headers);
            if !cfg.suppress_envoy_headers {
                rparts.headers.insert(
                    X_ENVOY_UPSTREAM_SERVICE_TIME.clone(),
                    HeaderValue::from(started.elapsed().as_millis() as u64),
                );
            }
            rparts.version = Version::default();
            return Response::from_parts(rparts, ProxyBody::Upstream(rbody));
        }
    };
    // Envoy charges its own reply to the cluster's per-code stats.
    cstats.record_response(reply.status().as_u16());
    let mut resp = out.local(reply);
    levels.response_headers(resp.headers_mut());
    resp
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
    fn prefix_rewrite_keeps_rest_and_query() {
        let pq = PathAndQuery::from_static("/api/v1/items?x=1");
        assert_eq!(rewrite_prefix(&pq, "/", 5).as_str(), "/v1/items?x=1");
        assert_eq!(rewrite_prefix(&pq, "/new", 4).as_str(), "/new/v1/items?x=1");
    }
}
