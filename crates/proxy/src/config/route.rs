//! `RouteConfiguration` → [`RouteTable`]: virtual-host selection and route
//! matching with Envoy's precedence rules.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use mizzen_xds::pb;
use pb::envoy::config::core::v3::data_source::Specifier;
use pb::envoy::config::route::v3 as rpb;
use regex::Regex;
use rpb::redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier};
use rpb::route_action::{ClusterSpecifier, HostRewriteSpecifier};
use rpb::route_match::PathSpecifier;

use super::check::reject_unknown;
use super::cors::{CORS_FILTER, CorsPolicy};
use super::fault::{FAULT_FILTER, FaultConfig};
use super::headers::{HeaderOps, header_ops};
use super::matcher::{HeaderMatch, HeaderSource, QueryMatch, header_match, query_match, regex};
use super::retry::RetryPolicy;
use super::{ConfigError, Scope, duration, fields, join, unpack};

/// Envoy's route timeout when `timeout` is unset.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// A compiled route configuration: immutable, shared by every request.
#[derive(Debug)]
pub struct RouteTable {
    pub name: Arc<str>,
    pub virtual_hosts: Vec<VirtualHost>,
    exact: HashMap<String, usize>,
    /// `*.example.com` → `.example.com`, longest first.
    suffixes: Vec<(String, usize)>,
    /// `example.*` → `example.`, longest first.
    prefixes: Vec<(String, usize)>,
    any: Option<usize>,
    ignore_port: bool,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    /// Apply header mutations from least to most specific (so the route's win).
    pub most_specific_wins: bool,
}

#[derive(Debug)]
pub struct VirtualHost {
    pub name: Arc<str>,
    pub routes: Vec<Route>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    /// `include_request_attempt_count`: send `x-envoy-attempt-count` upstream.
    pub attempt_count_header: bool,
    /// Per-filter configuration that routes without their own inherit.
    pub filters: PerFilter,
    /// `require_tls`: requests not made over TLS get a 301 to `https`.
    pub require_tls: RequireTls,
}

/// `VirtualHost.require_tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequireTls {
    None,
    /// Only requests from outside (not marked internal by their single
    /// `x-forwarded-for` address) must use TLS.
    ExternalOnly,
    All,
}

#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    path: PathMatch,
    headers: Vec<HeaderMatch>,
    query: Vec<QueryMatch>,
    pub action: Action,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    /// Per-filter overrides from `typed_per_filter_config`.
    pub filters: PerFilter,
}

/// Route-level configuration of HTTP filters, which replaces the filter's own.
#[derive(Debug, Default)]
pub struct PerFilter {
    pub fault: Option<FaultConfig>,
    pub cors: Option<CorsPolicy>,
}

impl PerFilter {
    fn compile(
        scope: &Scope,
        path: &str,
        map: &HashMap<String, pb::google::protobuf::Any>,
    ) -> Result<PerFilter, ConfigError> {
        let mut out = PerFilter::default();
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort();
        for key in keys {
            let any = &map[key];
            let fpath = join(path, &format!("typed_per_filter_config[\"{key}\"]"));
            match key.as_str() {
                FAULT_FILTER => {
                    let f: pb::envoy::extensions::filters::http::fault::v3::HttpFault =
                        unpack(scope, &fpath, any)?;
                    out.fault = Some(FaultConfig::compile(scope, &fpath, &f)?);
                }
                CORS_FILTER => {
                    let c: pb::envoy::extensions::filters::http::cors::v3::CorsPolicy =
                        unpack(scope, &fpath, any)?;
                    out.cors = Some(CorsPolicy::compile(scope, &fpath, &c)?);
                }
                _ => return Err(scope.unsupported(fpath)),
            }
        }
        Ok(out)
    }
}

#[derive(Debug)]
enum PathMatch {
    Prefix {
        value: String,
        ignore_case: bool,
    },
    /// `path_separated_prefix`: the prefix must end at a `/` boundary.
    SeparatedPrefix {
        value: String,
        ignore_case: bool,
    },
    Exact {
        value: String,
        ignore_case: bool,
    },
    Regex(Regex),
}

#[derive(Debug)]
pub enum Action {
    Forward(Forward),
    Direct(DirectResponse),
    Redirect(Redirect),
}

#[derive(Debug)]
pub struct Forward {
    pub clusters: ClusterChoice,
    /// `None` when disabled (`timeout: 0s`).
    pub timeout: Option<Duration>,
    /// `x-envoy-expected-rq-timeout-ms` value, computed once.
    pub timeout_header: Option<HeaderValue>,
    pub prefix_rewrite: Option<String>,
    pub host_rewrite: Option<HeaderValue>,
    pub cluster_not_found_status: StatusCode,
    pub retry: Option<Box<RetryPolicy>>,
    /// Consistent-hash keys for RING_HASH and MAGLEV clusters.
    pub hash_policy: Vec<HashPolicy>,
    /// `regex_rewrite`: the path (without query) is rewritten by substitution.
    pub regex_rewrite: Option<(Regex, String)>,
    pub mirrors: Vec<Mirror>,
}

/// `request_mirror_policies[]`: a copy of the request sent to `cluster`.
#[derive(Debug)]
pub struct Mirror {
    pub cluster: Arc<str>,
    pub fraction: super::fault::Fraction,
    /// Append `-shadow` to the host (Envoy's default).
    pub shadow_suffix: bool,
}

#[derive(Debug)]
pub struct HashPolicy {
    pub key: HashKey,
    /// Stop at this policy once it produced a hash.
    pub terminal: bool,
}

#[derive(Debug)]
pub enum HashKey {
    Header(http::HeaderName),
    /// A cookie; when absent and `ttl` is set the proxy makes one up and
    /// sets it on the response.
    Cookie {
        name: String,
        ttl: Option<Duration>,
        path: String,
    },
    SourceIp,
    QueryParameter(String),
}

#[derive(Debug)]
pub enum ClusterChoice {
    Single(Arc<str>),
    Weighted(WeightedClusters),
}

#[derive(Debug)]
pub struct WeightedClusters {
    pub entries: Vec<WeightedEntry>,
    pub total: u32,
}

#[derive(Debug)]
pub struct WeightedEntry {
    pub cluster: Arc<str>,
    pub weight: u32,
    /// Sum of the weights up to and including this entry.
    cumulative: u32,
    pub host_rewrite: Option<HeaderValue>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

impl WeightedClusters {
    /// The entry owning `point` in `[0, total)`; callers pass a uniform random value.
    pub fn pick(&self, point: u32) -> &WeightedEntry {
        let i = self.entries.partition_point(|e| e.cumulative <= point);
        &self.entries[i.min(self.entries.len() - 1)]
    }
}

#[derive(Debug)]
pub struct DirectResponse {
    pub status: StatusCode,
    pub body: Option<bytes::Bytes>,
}

#[derive(Debug)]
pub struct Redirect {
    pub status: StatusCode,
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<RedirectPath>,
    pub strip_query: bool,
}

#[derive(Debug)]
pub enum RedirectPath {
    Replace(String),
    Prefix(String),
}

/// What route matching looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub scheme: &'a str,
    pub authority: &'a str,
    /// Path with query string, as sent.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

impl RouteTable {
    /// Picks the virtual host for `authority` (Host / :authority as sent, port
    /// included): exact domain, then longest `*suffix`, then longest
    /// `prefix*`, then `*`. Domains compare case-insensitively.
    pub fn virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        let mut host = authority;
        if self.ignore_port {
            host = strip_port(host);
        }
        let lowered;
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            host = &lowered;
        }
        let idx = self
            .exact
            .get(host)
            .copied()
            .or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
                    .map(|(_, i)| *i)
            })
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(p, _)| host.len() > p.len() && host.starts_with(p.as_str()))
                    .map(|(_, i)| *i)
            })
            .or(self.any)?;
        self.virtual_hosts.get(idx)
    }
}

impl VirtualHost {
    /// Whether `require_tls` answers this request with a redirect to https,
    /// as Envoy decides it: the request's scheme (the `x-forwarded-proto` it
    /// carries, else the connection's) is not `https` and, for EXTERNAL_ONLY,
    /// the request is not internal.
    pub fn needs_tls_redirect(&self, over_tls: bool, headers: &HeaderMap) -> bool {
        if self.require_tls == RequireTls::None {
            return false;
        }
        let https = match headers.get("x-forwarded-proto") {
            Some(v) => v.as_bytes() == b"https",
            None => over_tls,
        };
        if https {
            return false;
        }
        self.require_tls == RequireTls::All || !internal_request(headers)
    }

    /// The `location` of a `require_tls` redirect: the same host and path
    /// under `https`.
    pub fn tls_redirect_location(authority: &str, path: &str) -> String {
        format!("https://{authority}{path}")
    }

    /// First route whose match accepts the request.
    pub fn route(&self, req: &RequestView<'_>) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(req))
    }
}

impl Route {
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        let (path, query) = split_path(req.path);
        let path_ok = match &self.path {
            PathMatch::Prefix { value, ignore_case } => starts_with(path, value, *ignore_case),
            PathMatch::SeparatedPrefix { value, ignore_case } => {
                starts_with(path, value, *ignore_case)
                    && (path.len() == value.len() || path.as_bytes()[value.len()] == b'/')
            }
            PathMatch::Exact { value, ignore_case } => {
                if *ignore_case {
                    path.eq_ignore_ascii_case(value)
                } else {
                    path == value
                }
            }
            PathMatch::Regex(re) => re.is_match(path),
        };
        path_ok
            && self
                .headers
                .iter()
                .all(|h| header_value(h, req, |v| h.matches(v)))
            && self
                .query
                .iter()
                .all(|q| q.matches(query_param(query, &q.name).as_deref()))
    }

    /// How many leading bytes of the path (without query) the match consumed;
    /// `prefix_rewrite` replaces exactly those.
    pub fn matched_len(&self, path: &str) -> usize {
        let (path, _) = split_path(path);
        match &self.path {
            PathMatch::Prefix { value, .. } | PathMatch::SeparatedPrefix { value, .. } => {
                value.len().min(path.len())
            }
            PathMatch::Exact { .. } | PathMatch::Regex(_) => path.len(),
        }
    }
}

/// Calls `f` with the header's value as Envoy sees it: all occurrences joined
/// by `,`, or `None` when absent. Allocates only for repeated headers.
/// Envoy's rule when the connection manager does not use the remote
/// address: a request is internal when `x-forwarded-for` holds a single
/// address and that address is private (RFC 1918, loopback, unique local).
fn internal_request(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all("x-forwarded-for").iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return false;
    };
    let Ok(v) = v.to_str() else { return false };
    if v.contains(',') {
        return false;
    }
    match v.trim().parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_private() || ip.is_loopback(),
        Ok(std::net::IpAddr::V6(ip)) => ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00,
        Err(_) => false,
    }
}

fn header_value<R>(h: &HeaderMatch, req: &RequestView<'_>, f: impl FnOnce(Option<&str>) -> R) -> R {
    match &h.source {
        HeaderSource::Method => f(Some(req.method.as_str())),
        HeaderSource::Path => f(Some(req.path)),
        HeaderSource::Authority => f(Some(req.authority)),
        HeaderSource::Scheme => f(Some(req.scheme)),
        HeaderSource::Header(name) => {
            let mut values = req.headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (None, _) => f(None),
                (Some(one), None) => f(Some(&String::from_utf8_lossy(one.as_bytes()))),
                (Some(first), Some(second)) => {
                    let mut joined = String::from_utf8_lossy(first.as_bytes()).into_owned();
                    for v in std::iter::once(second).chain(values) {
                        joined.push(',');
                        joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
                    }
                    f(Some(&joined))
                }
            }
        }
    }
}

fn starts_with(path: &str, prefix: &str, ignore_case: bool) -> bool {
    path.len() >= prefix.len()
        && if ignore_case {
            path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        } else {
            path.as_bytes().starts_with(prefix.as_bytes())
        }
}

/// Splits `/a/b?x=1#frag` into (`/a/b`, `x=1`).
pub fn split_path(path: &str) -> (&str, &str) {
    let path = path.split('#').next().unwrap_or(path);
    match path.split_once('?') {
        Some((p, q)) => (p, q),
        None => (path, ""),
    }
}

/// First value of query parameter `name`, percent-decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `host:port` → `host`, leaving IPv6 literals without a port alone.
pub fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.find(']') {
            Some(end) => &authority[..end + 2],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

impl Redirect {
    /// The `location` for a request; `matched` is the route's matched length.
    pub fn location(&self, scheme: &str, authority: &str, path: &str, matched: usize) -> String {
        let scheme_out = self.scheme.as_deref().unwrap_or(scheme);
        let mut host = self.host.clone().unwrap_or_else(|| authority.to_string());
        if let Some(port) = self.port {
            host = format!("{}:{port}", strip_port(&host));
        } else if scheme_out != scheme {
            // Switching scheme drops the old scheme's default port.
            let default = if scheme == "https" { ":443" } else { ":80" };
            if let Some(h) = host.strip_suffix(default) {
                host = h.to_string();
            }
        }
        let (only_path, query) = split_path(path);
        let new_path = match &self.path {
            None => only_path.to_string(),
            Some(RedirectPath::Replace(p)) => p.clone(),
            Some(RedirectPath::Prefix(p)) => {
                let cut = matched.min(only_path.len());
                format!("{p}{}", &only_path[cut..])
            }
        };
        // A path_redirect carrying its own query replaces the original one.
        let query = if self.strip_query || new_path.contains('?') {
            ""
        } else {
            query
        };
        if query.is_empty() {
            format!("{scheme_out}://{host}{new_path}")
        } else {
            format!("{scheme_out}://{host}{new_path}?{query}")
        }
    }
}

// ---------------------------------------------------------------------------
// Compilation
// ---------------------------------------------------------------------------

impl RouteTable {
    pub fn compile(rc: &rpb::RouteConfiguration) -> Result<RouteTable, ConfigError> {
        let scope = Scope::new("route_configuration", &rc.name);
        compile_table(&scope, "", rc)
    }
}

/// Compiles a route configuration; `path` is non-empty when it is inline in a
/// listener (errors then name the listener).
pub(crate) fn compile_table(
    scope: &Scope,
    path: &str,
    rc: &rpb::RouteConfiguration,
) -> Result<RouteTable, ConfigError> {
    reject_unknown(scope, path, rc, fields::ROUTE_CONFIGURATION, |r| {
        r.name.clear();
        r.virtual_hosts.clear();
        r.request_headers_to_add.clear();
        r.request_headers_to_remove.clear();
        r.response_headers_to_add.clear();
        r.response_headers_to_remove.clear();
        r.most_specific_header_mutations_wins = false;
        r.ignore_port_in_host_matching = false;
        // Only `false` is accepted: cluster references resolve at request time.
        if r.validate_clusters.is_some_and(|v| !v.value) {
            r.validate_clusters = None;
        }
    })?;
    let mut table = RouteTable {
        name: Arc::from(rc.name.as_str()),
        virtual_hosts: Vec::with_capacity(rc.virtual_hosts.len()),
        exact: HashMap::new(),
        suffixes: Vec::new(),
        prefixes: Vec::new(),
        any: None,
        ignore_port: rc.ignore_port_in_host_matching,
        request_headers: header_ops(
            scope,
            path,
            ("request_headers_to_add", &rc.request_headers_to_add),
            ("request_headers_to_remove", &rc.request_headers_to_remove),
        )?,
        response_headers: header_ops(
            scope,
            path,
            ("response_headers_to_add", &rc.response_headers_to_add),
            ("response_headers_to_remove", &rc.response_headers_to_remove),
        )?,
        most_specific_wins: rc.most_specific_header_mutations_wins,
    };
    let mut seen = HashMap::new();
    for (i, vh) in rc.virtual_hosts.iter().enumerate() {
        let vpath = join(path, &format!("virtual_hosts[{i}]"));
        table.virtual_hosts.push(compile_vhost(scope, &vpath, vh)?);
        for (j, domain) in vh.domains.iter().enumerate() {
            let d = domain.to_ascii_lowercase();
            let dpath = join(&vpath, &format!("domains[{j}]"));
            if let Some(other) = seen.insert(d.clone(), vh.name.clone()) {
                return Err(scope.invalid(
                    dpath,
                    format!("duplicate domain {domain:?} (also in virtual host {other})"),
                ));
            }
            if d == "*" {
                table.any = Some(i);
            } else if let Some(suffix) = d.strip_prefix('*') {
                table.suffixes.push((suffix.to_string(), i));
            } else if let Some(prefix) = d.strip_suffix('*') {
                table.prefixes.push((prefix.to_string(), i));
            } else if d.contains('*') {
                return Err(scope.invalid(dpath, "a wildcard must be at the start or the end"));
            } else {
                table.exact.insert(d, i);
            }
        }
    }
    // Longest wildcard wins; stable sort keeps config order among equals.
    table
        .suffixes
        .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
    table
        .prefixes
        .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    Ok(table)
}

fn compile_vhost(
    scope: &Scope,
    path: &str,
    vh: &rpb::VirtualHost,
) -> Result<VirtualHost, ConfigError> {
    reject_unknown(scope, path, vh, fields::VIRTUAL_HOST, |v| {
        v.name.clear();
        v.domains.clear();
        v.routes.clear();
        v.request_headers_to_add.clear();
        v.request_headers_to_remove.clear();
        v.response_headers_to_add.clear();
        v.response_headers_to_remove.clear();
        v.include_request_attempt_count = false;
        v.metadata = None;
        v.typed_per_filter_config.clear();
        v.require_tls = 0;
    })?;
    use rpb::virtual_host::TlsRequirementType;
    let require_tls = match TlsRequirementType::try_from(vh.require_tls) {
        Ok(TlsRequirementType::None) => RequireTls::None,
        Ok(TlsRequirementType::ExternalOnly) => RequireTls::ExternalOnly,
        Ok(TlsRequirementType::All) => RequireTls::All,
        Err(_) => return Err(scope.invalid(join(path, "require_tls"), "unknown enum value")),
    };
    let filters = PerFilter::compile(scope, path, &vh.typed_per_filter_config)?;
    if vh.domains.is_empty() {
        return Err(scope.missing(join(path, "domains")));
    }
    let routes = vh
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| compile_route(scope, &join(path, &format!("routes[{i}]")), r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VirtualHost {
        name: Arc::from(vh.name.as_str()),
        routes,
        request_headers: header_ops(
            scope,
            path,
            ("request_headers_to_add", &vh.request_headers_to_add),
            ("request_headers_to_remove", &vh.request_headers_to_remove),
        )?,
        response_headers: header_ops(
            scope,
            path,
            ("response_headers_to_add", &vh.response_headers_to_add),
            ("response_headers_to_remove", &vh.response_headers_to_remove),
        )?,
        attempt_count_header: vh.include_request_attempt_count,
        filters,
        require_tls,
    })
}

fn compile_route(scope: &Scope, path: &str, r: &rpb::Route) -> Result<Route, ConfigError> {
    reject_unknown(scope, path, r, fields::ROUTE, |r| {
        r.name.clear();
        r.r#match = None;
        r.action = None;
        r.request_headers_to_add.clear();
        r.request_headers_to_remove.clear();
        r.response_headers_to_add.clear();
        r.response_headers_to_remove.clear();
        // Metadata and the tracing decorator carry no routing behaviour.
        r.metadata = None;
        r.decorator = None;
        r.typed_per_filter_config.clear();
    })?;
    let filters = PerFilter::compile(scope, path, &r.typed_per_filter_config)?;
    let Some(m) = &r.r#match else {
        return Err(scope.missing(join(path, "match")));
    };
    let mpath = join(path, "match");
    reject_unknown(scope, &mpath, m, fields::ROUTE_MATCH, |m| {
        m.path_specifier = None;
        m.case_sensitive = None;
        m.headers.clear();
        m.query_parameters.clear();
    })?;
    let ignore_case = m.case_sensitive.is_some_and(|c| !c.value);
    let path_match = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => PathMatch::Prefix {
            value: p.clone(),
            ignore_case,
        },
        Some(PathSpecifier::Path(p)) => PathMatch::Exact {
            value: p.clone(),
            ignore_case,
        },
        Some(PathSpecifier::PathSeparatedPrefix(p)) => {
            if p.contains(['?', '#']) || (p.len() > 1 && p.ends_with('/')) {
                return Err(scope.invalid(
                    join(&mpath, "path_separated_prefix"),
                    "must not contain ? or # nor end with /",
                ));
            }
            PathMatch::SeparatedPrefix {
                value: p.clone(),
                ignore_case,
            }
        }
        Some(PathSpecifier::SafeRegex(re)) => {
            PathMatch::Regex(regex(scope, &join(&mpath, "safe_regex"), re)?)
        }
        Some(PathSpecifier::ConnectMatcher(_)) => {
            return Err(scope.unsupported(join(&mpath, "connect_matcher")));
        }
        Some(PathSpecifier::PathMatchPolicy(_)) => {
            return Err(scope.unsupported(join(&mpath, "path_match_policy")));
        }
        None => return Err(scope.missing(join(&mpath, "path_specifier"))),
    };
    let headers = m
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| header_match(scope, &join(&mpath, &format!("headers[{i}]")), h))
        .collect::<Result<Vec<_>, _>>()?;
    let query = m
        .query_parameters
        .iter()
        .enumerate()
        .map(|(i, q)| query_match(scope, &join(&mpath, &format!("query_parameters[{i}]")), q))
        .collect::<Result<Vec<_>, _>>()?;
    let action = match &r.action {
        Some(rpb::route::Action::Route(a)) => {
            Action::Forward(compile_forward(scope, &join(path, "route"), a)?)
        }
        Some(rpb::route::Action::DirectResponse(d)) => {
            Action::Direct(compile_direct(scope, &join(path, "direct_response"), d)?)
        }
        Some(rpb::route::Action::Redirect(rd)) => {
            Action::Redirect(compile_redirect(scope, &join(path, "redirect"), rd)?)
        }
        Some(rpb::route::Action::FilterAction(_)) => {
            return Err(scope.unsupported(join(path, "filter_action")));
        }
        Some(rpb::route::Action::NonForwardingAction(_)) => {
            return Err(scope.unsupported(join(path, "non_forwarding_action")));
        }
        None => return Err(scope.missing(join(path, "action"))),
    };
    if let (
        Action::Redirect(Redirect {
            path: Some(RedirectPath::Prefix(_)),
            ..
        }),
        PathMatch::Regex(_),
    ) = (&action, &path_match)
    {
        return Err(scope.invalid(
            join(path, "redirect.prefix_rewrite"),
            "requires a prefix or path match",
        ));
    }
    Ok(Route {
        name: Arc::from(r.name.as_str()),
        path: path_match,
        headers,
        query,
        action,
        request_headers: header_ops(
            scope,
            path,
            ("request_headers_to_add", &r.request_headers_to_add),
            ("request_headers_to_remove", &r.request_headers_to_remove),
        )?,
        response_headers: header_ops(
            scope,
            path,
            ("response_headers_to_add", &r.response_headers_to_add),
            ("response_headers_to_remove", &r.response_headers_to_remove),
        )?,
        filters,
    })
}

fn compile_forward(
    scope: &Scope,
    path: &str,
    a: &rpb::RouteAction,
) -> Result<Forward, ConfigError> {
    reject_unknown(scope, path, a, fields::ROUTE_ACTION, |a| {
        a.cluster_specifier = None;
        a.timeout = None;
        a.prefix_rewrite.clear();
        if matches!(
            a.host_rewrite_specifier,
            Some(HostRewriteSpecifier::HostRewriteLiteral(_))
        ) {
            a.host_rewrite_specifier = None;
        }
        a.cluster_not_found_response_code = 0;
        a.retry_policy = None;
        a.hash_policy.clear();
        a.regex_rewrite = None;
        a.request_mirror_policies.clear();
        // All-zero max_stream_duration is the "no limit" default, a no-op.
        if let Some(m) = &a.max_stream_duration
            && [
                &m.max_stream_duration,
                &m.grpc_timeout_header_max,
                &m.grpc_timeout_header_offset,
            ]
            .iter()
            .all(|d| d.as_ref().is_none_or(|d| d.seconds == 0 && d.nanos == 0))
        {
            a.max_stream_duration = None;
        }
    })?;
    let clusters =
        match &a.cluster_specifier {
            Some(ClusterSpecifier::Cluster(name)) => {
                if name.is_empty() {
                    return Err(scope.missing(join(path, "cluster")));
                }
                ClusterChoice::Single(Arc::from(name.as_str()))
            }
            Some(ClusterSpecifier::WeightedClusters(w)) => ClusterChoice::Weighted(
                compile_weighted(scope, &join(path, "weighted_clusters"), w)?,
            ),
            Some(ClusterSpecifier::ClusterHeader(_)) => {
                return Err(scope.unsupported(join(path, "cluster_header")));
            }
            Some(ClusterSpecifier::ClusterSpecifierPlugin(_))
            | Some(ClusterSpecifier::InlineClusterSpecifierPlugin(_)) => {
                return Err(scope.unsupported(join(path, "cluster_specifier_plugin")));
            }
            None => return Err(scope.missing(join(path, "cluster_specifier"))),
        };
    let timeout = match &a.timeout {
        None => Some(DEFAULT_ROUTE_TIMEOUT),
        Some(d) => {
            let d = duration(scope, &join(path, "timeout"), d)?;
            (!d.is_zero()).then_some(d)
        }
    };
    let host_rewrite = match &a.host_rewrite_specifier {
        Some(HostRewriteSpecifier::HostRewriteLiteral(h)) => Some(
            HeaderValue::from_str(h)
                .map_err(|_| scope.invalid(join(path, "host_rewrite_literal"), "invalid host"))?,
        ),
        _ => None,
    };
    use rpb::route_action::ClusterNotFoundResponseCode as Nf;
    let cluster_not_found_status = match Nf::try_from(a.cluster_not_found_response_code) {
        Ok(Nf::ServiceUnavailable) => StatusCode::SERVICE_UNAVAILABLE,
        Ok(Nf::NotFound) => StatusCode::NOT_FOUND,
        Ok(Nf::InternalServerError) => StatusCode::INTERNAL_SERVER_ERROR,
        Err(_) => {
            return Err(scope.invalid(
                join(path, "cluster_not_found_response_code"),
                "unknown enum value",
            ));
        }
    };
    Ok(Forward {
        clusters,
        timeout_header: timeout.map(|t| HeaderValue::from(t.as_millis() as u64)),
        timeout,
        prefix_rewrite: (!a.prefix_rewrite.is_empty()).then(|| a.prefix_rewrite.clone()),
        host_rewrite,
        cluster_not_found_status,
        hash_policy: a
            .hash_policy
            .iter()
            .enumerate()
            .map(|(i, h)| compile_hash_policy(scope, &join(path, &format!("hash_policy[{i}]")), h))
            .collect::<Result<Vec<_>, _>>()?,
        regex_rewrite: match &a.regex_rewrite {
            None => None,
            Some(r) => {
                let rpath = join(path, "regex_rewrite");
                let Some(pattern) = &r.pattern else {
                    return Err(scope.missing(join(&rpath, "pattern")));
                };
                Some((
                    regex(scope, &join(&rpath, "pattern"), pattern)?,
                    envoy_substitution(&r.substitution),
                ))
            }
        },
        mirrors: a
            .request_mirror_policies
            .iter()
            .enumerate()
            .map(|(i, m)| {
                compile_mirror(
                    scope,
                    &join(path, &format!("request_mirror_policies[{i}]")),
                    m,
                )
            })
            .collect::<Result<Vec<_>, _>>()?,
        retry: match &a.retry_policy {
            None => None,
            Some(p) => Some(Box::new(RetryPolicy::compile(
                scope,
                &join(path, "retry_policy"),
                p,
            )?)),
        },
    })
}

/// Envoy's substitutions name groups `\\1`; the regex crate's are `${1}`.
fn envoy_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(|d| d.is_ascii_digit()) => {
                out.push_str("${");
                while let Some(d) = chars.peek().copied().filter(|d| d.is_ascii_digit()) {
                    out.push(d);
                    chars.next();
                }
                out.push('}');
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

fn compile_hash_policy(
    scope: &Scope,
    path: &str,
    h: &rpb::route_action::HashPolicy,
) -> Result<HashPolicy, ConfigError> {
    use rpb::route_action::hash_policy::PolicySpecifier;
    let key = match &h.policy_specifier {
        Some(PolicySpecifier::Header(hd)) => {
            reject_unknown(
                scope,
                &join(path, "header"),
                hd,
                &[(1, "header_name"), (2, "regex_rewrite")],
                |h| h.header_name.clear(),
            )?;
            HashKey::Header(
                http::HeaderName::from_bytes(hd.header_name.to_ascii_lowercase().as_bytes())
                    .map_err(|_| {
                        scope.invalid(join(path, "header.header_name"), "invalid header name")
                    })?,
            )
        }
        Some(PolicySpecifier::Cookie(c)) => {
            let cpath = join(path, "cookie");
            reject_unknown(
                scope,
                &cpath,
                c,
                &[(1, "name"), (2, "ttl"), (3, "path"), (4, "attributes")],
                |c| {
                    c.name.clear();
                    c.ttl = None;
                    c.path.clear();
                },
            )?;
            if c.name.is_empty() {
                return Err(scope.missing(join(&cpath, "name")));
            }
            HashKey::Cookie {
                name: c.name.clone(),
                ttl: match &c.ttl {
                    None => None,
                    Some(d) => Some(duration(scope, &join(&cpath, "ttl"), d)?),
                },
                path: c.path.clone(),
            }
        }
        Some(PolicySpecifier::ConnectionProperties(c)) => {
            if !c.source_ip {
                return Err(scope.invalid(
                    join(path, "connection_properties.source_ip"),
                    "must be true",
                ));
            }
            HashKey::SourceIp
        }
        Some(PolicySpecifier::QueryParameter(q)) => {
            if q.name.is_empty() {
                return Err(scope.missing(join(path, "query_parameter.name")));
            }
            HashKey::QueryParameter(q.name.clone())
        }
        Some(PolicySpecifier::FilterState(_)) => {
            return Err(scope.unsupported(join(path, "filter_state")));
        }
        None => return Err(scope.missing(join(path, "policy_specifier"))),
    };
    Ok(HashPolicy {
        key,
        terminal: h.terminal,
    })
}

fn compile_mirror(
    scope: &Scope,
    path: &str,
    m: &rpb::route_action::RequestMirrorPolicy,
) -> Result<Mirror, ConfigError> {
    reject_unknown(
        scope,
        path,
        m,
        &[
            (1, "cluster"),
            (3, "runtime_fraction"),
            (4, "trace_sampled"),
            (5, "cluster_header"),
            (6, "disable_shadow_host_suffix_append"),
            (7, "request_headers_mutations"),
        ],
        |m| {
            m.cluster.clear();
            m.disable_shadow_host_suffix_append = false;
            if m.runtime_fraction
                .as_ref()
                .is_some_and(|r| r.runtime_key.is_empty())
            {
                m.runtime_fraction = None;
            }
            // Tracing is not implemented: the sampling decision has no effect.
            m.trace_sampled = None;
        },
    )?;
    if m.cluster.is_empty() {
        return Err(scope.missing(join(path, "cluster")));
    }
    let fraction = match &m.runtime_fraction {
        None => super::fault::Fraction::ALL,
        Some(r) => super::fault::Fraction::compile(
            scope,
            &join(path, "runtime_fraction.default_value"),
            r.default_value.as_ref(),
        )?,
    };
    Ok(Mirror {
        cluster: Arc::from(m.cluster.as_str()),
        fraction,
        shadow_suffix: !m.disable_shadow_host_suffix_append,
    })
}

fn compile_weighted(
    scope: &Scope,
    path: &str,
    w: &rpb::WeightedCluster,
) -> Result<WeightedClusters, ConfigError> {
    reject_unknown(scope, path, w, fields::WEIGHTED_CLUSTER, |w| {
        w.clusters.clear();
        w.total_weight = None;
    })?;
    if w.clusters.is_empty() {
        return Err(scope.missing(join(path, "clusters")));
    }
    let mut entries = Vec::with_capacity(w.clusters.len());
    let mut cumulative: u32 = 0;
    for (i, c) in w.clusters.iter().enumerate() {
        let cpath = join(path, &format!("clusters[{i}]"));
        reject_unknown(scope, &cpath, c, fields::CLUSTER_WEIGHT, |c| {
            c.name.clear();
            c.weight = None;
            c.request_headers_to_add.clear();
            c.request_headers_to_remove.clear();
            c.response_headers_to_add.clear();
            c.response_headers_to_remove.clear();
            c.host_rewrite_specifier = None;
        })?;
        if c.name.is_empty() {
            return Err(scope.missing(join(&cpath, "name")));
        }
        let weight = c.weight.map(|w| w.value).unwrap_or(0);
        cumulative = cumulative
            .checked_add(weight)
            .ok_or_else(|| scope.invalid(join(&cpath, "weight"), "sum of weights overflows"))?;
        let host_rewrite = match &c.host_rewrite_specifier {
            Some(
                rpb::weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral(h),
            ) => Some(HeaderValue::from_str(h).map_err(|_| {
                scope.invalid(join(&cpath, "host_rewrite_literal"), "invalid host")
            })?),
            None => None,
        };
        entries.push(WeightedEntry {
            cluster: Arc::from(c.name.as_str()),
            weight,
            cumulative,
            host_rewrite,
            request_headers: header_ops(
                scope,
                &cpath,
                ("request_headers_to_add", &c.request_headers_to_add),
                ("request_headers_to_remove", &c.request_headers_to_remove),
            )?,
            response_headers: header_ops(
                scope,
                &cpath,
                ("response_headers_to_add", &c.response_headers_to_add),
                ("response_headers_to_remove", &c.response_headers_to_remove),
            )?,
        });
    }
    if cumulative == 0 {
        return Err(scope.invalid(path, "sum of weights must be greater than 0"));
    }
    if let Some(total) = w.total_weight
        && total.value != cumulative
    {
        return Err(scope.invalid(
            join(path, "total_weight"),
            format!("is {} but the weights sum to {cumulative}", total.value),
        ));
    }
    Ok(WeightedClusters {
        entries,
        total: cumulative,
    })
}

fn compile_direct(
    scope: &Scope,
    path: &str,
    d: &rpb::DirectResponseAction,
) -> Result<DirectResponse, ConfigError> {
    reject_unknown(scope, path, d, fields::DIRECT_RESPONSE_ACTION, |d| {
        d.status = 0;
        d.body = None;
    })?;
    let status = u16::try_from(d.status)
        .ok()
        .filter(|s| (200..600).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| scope.invalid(join(path, "status"), "must be in [200, 600)"))?;
    let body = match &d.body {
        None => None,
        Some(ds) => {
            let bpath = join(path, "body");
            reject_unknown(scope, &bpath, ds, fields::DATA_SOURCE, |d| {
                if matches!(
                    d.specifier,
                    Some(Specifier::InlineBytes(_)) | Some(Specifier::InlineString(_))
                ) {
                    d.specifier = None;
                }
            })?;
            match &ds.specifier {
                Some(Specifier::InlineBytes(b)) => Some(bytes::Bytes::copy_from_slice(b)),
                Some(Specifier::InlineString(s)) => {
                    Some(bytes::Bytes::copy_from_slice(s.as_bytes()))
                }
                _ => None,
            }
        }
    };
    Ok(DirectResponse { status, body })
}

fn compile_redirect(
    scope: &Scope,
    path: &str,
    r: &rpb::RedirectAction,
) -> Result<Redirect, ConfigError> {
    reject_unknown(scope, path, r, fields::REDIRECT_ACTION, |r| {
        r.host_redirect.clear();
        r.port_redirect = 0;
        r.response_code = 0;
        r.strip_query = false;
        r.scheme_rewrite_specifier = None;
        if matches!(
            r.path_rewrite_specifier,
            Some(PathRewriteSpecifier::PathRedirect(_))
                | Some(PathRewriteSpecifier::PrefixRewrite(_))
        ) {
            r.path_rewrite_specifier = None;
        }
    })?;
    let status = match RedirectResponseCode::try_from(r.response_code) {
        Ok(RedirectResponseCode::MovedPermanently) => StatusCode::MOVED_PERMANENTLY,
        Ok(RedirectResponseCode::Found) => StatusCode::FOUND,
        Ok(RedirectResponseCode::SeeOther) => StatusCode::SEE_OTHER,
        Ok(RedirectResponseCode::TemporaryRedirect) => StatusCode::TEMPORARY_REDIRECT,
        Ok(RedirectResponseCode::PermanentRedirect) => StatusCode::PERMANENT_REDIRECT,
        Err(_) => return Err(scope.invalid(join(path, "response_code"), "unknown enum value")),
    };
    let scheme = match &r.scheme_rewrite_specifier {
        Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => Some("https".to_string()),
        Some(SchemeRewriteSpecifier::HttpsRedirect(false)) | None => None,
        Some(SchemeRewriteSpecifier::SchemeRedirect(s)) => Some(s.to_ascii_lowercase()),
    };
    let port = match r.port_redirect {
        0 => None,
        p => Some(
            u16::try_from(p)
                .map_err(|_| scope.invalid(join(path, "port_redirect"), "out of range"))?,
        ),
    };
    let rpath = match &r.path_rewrite_specifier {
        Some(PathRewriteSpecifier::PathRedirect(p)) => Some(RedirectPath::Replace(p.clone())),
        Some(PathRewriteSpecifier::PrefixRewrite(p)) => Some(RedirectPath::Prefix(p.clone())),
        _ => None,
    };
    Ok(Redirect {
        status,
        scheme,
        host: (!r.host_redirect.is_empty()).then(|| r.host_redirect.clone()),
        port,
        path: rpath,
        strip_query: r.strip_query,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::envoy::config::route::v3::{
        HeaderMatcher, QueryParameterMatcher, RouteAction, RouteConfiguration, RouteMatch,
        VirtualHost as PbVirtualHost, header_matcher::HeaderMatchSpecifier,
        query_parameter_matcher::QueryParameterMatchSpecifier,
    };
    use pb::envoy::r#type::matcher::v3::{
        RegexMatcher, StringMatcher, string_matcher::MatchPattern,
    };

    fn vhost(name: &str, domains: &[&str], routes: Vec<rpb::Route>) -> PbVirtualHost {
        PbVirtualHost {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            routes,
            ..Default::default()
        }
    }

    fn to_cluster(name: &str, cluster: &str, m: RouteMatch) -> rpb::Route {
        rpb::Route {
            name: name.into(),
            r#match: Some(m),
            action: Some(rpb::route::Action::Route(RouteAction {
                cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn prefix(p: &str) -> RouteMatch {
        RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix(p.into())),
            ..Default::default()
        }
    }

    #[test]
    fn domain_precedence() {
        let rc = RouteConfiguration {
            name: "80".into(),
            virtual_hosts: vec![
                vhost("any", &["*"], vec![]),
                vhost("suffix-short", &["*.com"], vec![]),
                vhost("suffix-long", &["*.example.com"], vec![]),
                vhost("prefix", &["api.*"], vec![]),
                vhost("prefix-long", &["api.example.*"], vec![]),
                vhost("exact", &["api.example.com", "b:80"], vec![]),
            ],
            ..Default::default()
        };
        let t = RouteTable::compile(&rc).unwrap();
        let cases = [
            ("api.example.com", "exact"),
            ("API.Example.COM", "exact"),
            ("b:80", "exact"),
            ("b", "any"),
            ("b:8080", "any"),
            ("www.example.com", "suffix-long"),
            ("example.com", "suffix-short"),
            ("x.org", "any"),
            ("api.example.org", "prefix-long"),
            ("api.foo", "prefix"),
            (".example.com", "suffix-short"),
            ("api.example.com:80", "prefix-long"),
            ("www.example.com:80", "any"),
        ];
        for (host, want) in cases {
            assert_eq!(&*t.virtual_host(host).unwrap().name, want, "{host}");
        }
    }

    #[test]
    fn ignore_port_in_host_matching() {
        let rc = RouteConfiguration {
            name: "r".into(),
            ignore_port_in_host_matching: true,
            virtual_hosts: vec![vhost("b", &["b"], vec![])],
            ..Default::default()
        };
        let t = RouteTable::compile(&rc).unwrap();
        assert!(t.virtual_host("b:9080").is_some());
        assert!(t.virtual_host("c:9080").is_none());
    }

    #[test]
    fn duplicate_domains_are_refused() {
        let rc = RouteConfiguration {
            name: "80".into(),
            virtual_hosts: vec![vhost("a", &["x"], vec![]), vhost("b", &["X"], vec![])],
            ..Default::default()
        };
        assert_eq!(
            RouteTable::compile(&rc).unwrap_err().to_string(),
            "route_configuration 80: virtual_hosts[1].domains[0]: duplicate domain \"X\" (also in virtual host a)"
        );
    }

    fn request<'a>(method: &'a Method, path: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            method,
            scheme: "http",
            authority: "x",
            path,
            headers,
        }
    }

    #[test]
    fn route_matching_table() {
        let regex_match = RouteMatch {
            path_specifier: Some(PathSpecifier::SafeRegex(RegexMatcher {
                regex: "/items/[0-9]+".into(),
                engine_type: None,
            })),
            ..Default::default()
        };
        let header_route = RouteMatch {
            headers: vec![HeaderMatcher {
                name: "end-user".into(),
                header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
                    match_pattern: Some(MatchPattern::Exact("jason".into())),
                    ignore_case: false,
                })),
                ..Default::default()
            }],
            ..prefix("/")
        };
        let query_route = RouteMatch {
            query_parameters: vec![QueryParameterMatcher {
                name: "debug".into(),
                query_parameter_match_specifier: Some(QueryParameterMatchSpecifier::PresentMatch(
                    true,
                )),
            }],
            ..prefix("/")
        };
        let exact_ci = RouteMatch {
            path_specifier: Some(PathSpecifier::Path("/Exact".into())),
            case_sensitive: Some(pb::google::protobuf::BoolValue { value: false }),
            ..Default::default()
        };
        let method_route = RouteMatch {
            headers: vec![HeaderMatcher {
                name: ":method".into(),
                header_match_specifier: Some(HeaderMatchSpecifier::ExactMatch("POST".into())),
                ..Default::default()
            }],
            ..prefix("/post")
        };
        let rc = RouteConfiguration {
            name: "r".into(),
            virtual_hosts: vec![vhost(
                "v",
                &["*"],
                vec![
                    to_cluster("exact", "c-exact", exact_ci),
                    to_cluster("regex", "c-regex", regex_match),
                    to_cluster("method", "c-method", method_route),
                    to_cluster("user", "c-user", header_route),
                    to_cluster("query", "c-query", query_route),
                    to_cluster("api", "c-api", prefix("/api")),
                    to_cluster("default", "c-default", prefix("/")),
                ],
            )],
            ..Default::default()
        };
        let t = RouteTable::compile(&rc).unwrap();
        let vh = t.virtual_host("anything").unwrap();
        let mut jason = HeaderMap::new();
        jason.insert("end-user", HeaderValue::from_static("jason"));
        let none = HeaderMap::new();
        let cases: &[(&Method, &str, &HeaderMap, &str)] = &[
            (&Method::GET, "/exact", &none, "exact"),
            (&Method::GET, "/EXACT?x=1", &none, "exact"),
            (&Method::GET, "/exact/more", &none, "default"),
            (&Method::GET, "/items/42", &none, "regex"),
            (&Method::GET, "/items/42?q=1", &none, "regex"),
            (&Method::GET, "/items/4x", &none, "default"),
            (&Method::POST, "/post", &none, "method"),
            (&Method::GET, "/post", &none, "default"),
            (&Method::GET, "/", &jason, "user"),
            (&Method::GET, "/?debug", &none, "query"),
            (&Method::GET, "/a?debug=1&x", &none, "query"),
            (&Method::GET, "/api/v1", &none, "api"),
            (&Method::GET, "/apix", &none, "api"),
            (&Method::GET, "/API", &none, "default"),
        ];
        for (method, path, headers, want) in cases {
            let r = vh.route(&request(method, path, headers)).unwrap();
            assert_eq!(&*r.name, *want, "{method} {path}");
        }
    }

    #[test]
    fn separated_prefix() {
        let rc = RouteConfiguration {
            name: "r".into(),
            virtual_hosts: vec![vhost(
                "v",
                &["*"],
                vec![to_cluster(
                    "sep",
                    "c",
                    RouteMatch {
                        path_specifier: Some(PathSpecifier::PathSeparatedPrefix("/api".into())),
                        ..Default::default()
                    },
                )],
            )],
            ..Default::default()
        };
        let t = RouteTable::compile(&rc).unwrap();
        let vh = t.virtual_host("x").unwrap();
        let h = HeaderMap::new();
        assert!(vh.route(&request(&Method::GET, "/api", &h)).is_some());
        assert!(vh.route(&request(&Method::GET, "/api/x", &h)).is_some());
        assert!(vh.route(&request(&Method::GET, "/api?x", &h)).is_some());
        assert!(vh.route(&request(&Method::GET, "/apix", &h)).is_none());
    }

    #[test]
    fn weighted_pick_is_by_cumulative_weight() {
        let w = rpb::WeightedCluster {
            clusters: [("a", 10), ("b", 0), ("c", 90)]
                .iter()
                .map(|(n, w)| rpb::weighted_cluster::ClusterWeight {
                    name: n.to_string(),
                    weight: Some(pb::google::protobuf::UInt32Value { value: *w }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let wc = compile_weighted(&Scope::new("r", "r"), "w", &w).unwrap();
        assert_eq!(wc.total, 100);
        assert_eq!(&*wc.pick(0).cluster, "a");
        assert_eq!(&*wc.pick(9).cluster, "a");
        assert_eq!(&*wc.pick(10).cluster, "c");
        assert_eq!(&*wc.pick(99).cluster, "c");
    }

    #[test]
    fn weighted_selection_distribution() {
        use rand::Rng;
        let w = rpb::WeightedCluster {
            clusters: [("v1", 20), ("v2", 80)]
                .iter()
                .map(|(n, w)| rpb::weighted_cluster::ClusterWeight {
                    name: n.to_string(),
                    weight: Some(pb::google::protobuf::UInt32Value { value: *w }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let wc = compile_weighted(&Scope::new("r", "r"), "w", &w).unwrap();
        let mut rng = rand::rng();
        let n = 20_000;
        let v1 = (0..n)
            .filter(|_| &*wc.pick(rng.random_range(0..wc.total)).cluster == "v1")
            .count();
        let share = v1 as f64 / n as f64;
        assert!((0.18..0.22).contains(&share), "v1 share {share}");
    }

    #[test]
    fn defaults_and_refusals() {
        let route = |action: RouteAction| RouteConfiguration {
            name: "r".into(),
            virtual_hosts: vec![vhost(
                "v",
                &["*"],
                vec![rpb::Route {
                    r#match: Some(prefix("/")),
                    action: Some(rpb::route::Action::Route(action)),
                    ..Default::default()
                }],
            )],
            ..Default::default()
        };
        let cluster = || Some(ClusterSpecifier::Cluster("c".into()));
        let t = RouteTable::compile(&route(RouteAction {
            cluster_specifier: cluster(),
            ..Default::default()
        }))
        .unwrap();
        let Action::Forward(f) = &t.virtual_hosts[0].routes[0].action else {
            panic!()
        };
        assert_eq!(f.timeout, Some(DEFAULT_ROUTE_TIMEOUT));
        let t = RouteTable::compile(&route(RouteAction {
            cluster_specifier: cluster(),
            timeout: Some(pb::google::protobuf::Duration {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        }))
        .unwrap();
        let Action::Forward(f) = &t.virtual_hosts[0].routes[0].action else {
            panic!()
        };
        assert_eq!(f.timeout, None);
        let err = RouteTable::compile(&route(RouteAction {
            cluster_specifier: cluster(),
            retry_policy: Some(rpb::RetryPolicy {
                retry_host_predicate: vec![Default::default()],
                ..Default::default()
            }),
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "route_configuration r: virtual_hosts[0].routes[0].route.retry_policy.retry_host_predicate is not supported"
        );
    }

    #[test]
    fn require_tls_redirects_plaintext_requests() {
        use rpb::virtual_host::TlsRequirementType;
        let table = |req: TlsRequirementType| {
            RouteTable::compile(&RouteConfiguration {
                name: "http.8080".into(),
                virtual_hosts: vec![PbVirtualHost {
                    require_tls: req as i32,
                    ..vhost("a", &["a.example.com"], vec![])
                }],
                ..Default::default()
            })
            .unwrap()
        };
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, HeaderValue::from_static(v));
            }
            h
        };
        let none = headers(&[]);
        let all = table(TlsRequirementType::All);
        let v = &all.virtual_hosts[0];
        assert_eq!(v.require_tls, RequireTls::All);
        assert!(v.needs_tls_redirect(false, &none));
        assert!(!v.needs_tls_redirect(true, &none));
        // The scheme a front proxy saw wins over the connection's.
        assert!(!v.needs_tls_redirect(false, &headers(&[("x-forwarded-proto", "https")])));
        assert!(v.needs_tls_redirect(true, &headers(&[("x-forwarded-proto", "http")])));
        let internal = headers(&[("x-forwarded-for", "10.1.2.3")]);
        assert!(v.needs_tls_redirect(false, &internal));
        let external_only = table(TlsRequirementType::ExternalOnly);
        let v = &external_only.virtual_hosts[0];
        assert!(v.needs_tls_redirect(false, &none));
        assert!(!v.needs_tls_redirect(false, &internal));
        assert!(!v.needs_tls_redirect(false, &headers(&[("x-forwarded-for", "::1")])));
        assert!(v.needs_tls_redirect(false, &headers(&[("x-forwarded-for", "8.8.8.8")])));
        assert!(v.needs_tls_redirect(
            false,
            &headers(&[("x-forwarded-for", "10.0.0.1, 10.0.0.2")])
        ));
        assert!(!v.needs_tls_redirect(true, &none));
        let plain = table(TlsRequirementType::None);
        assert!(!plain.virtual_hosts[0].needs_tls_redirect(false, &none));
        assert_eq!(
            VirtualHost::tls_redirect_location("a.example.com:8080", "/p?q=1"),
            "https://a.example.com:8080/p?q=1"
        );
        let bad = RouteTable::compile(&RouteConfiguration {
            name: "r".into(),
            virtual_hosts: vec![PbVirtualHost {
                require_tls: 7,
                ..vhost("a", &["a"], vec![])
            }],
            ..Default::default()
        });
        assert_eq!(
            bad.unwrap_err().to_string(),
            "route_configuration r: virtual_hosts[0].require_tls: unknown enum value"
        );
    }

    #[test]
    fn redirect_locations() {
        let r = Redirect {
            status: StatusCode::MOVED_PERMANENTLY,
            scheme: Some("https".into()),
            host: None,
            port: None,
            path: None,
            strip_query: false,
        };
        assert_eq!(
            r.location("http", "a.com:80", "/x?y=1", 0),
            "https://a.com/x?y=1"
        );
        let r = Redirect {
            status: StatusCode::FOUND,
            scheme: None,
            host: Some("b.com".into()),
            port: Some(8080),
            path: Some(RedirectPath::Prefix("/new".into())),
            strip_query: true,
        };
        assert_eq!(
            r.location("http", "a.com", "/old/x?y=1", 4),
            "http://b.com:8080/new/x"
        );
    }
}
