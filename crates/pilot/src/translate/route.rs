//! Route configurations (RDS): VirtualService `http` routes, and the default
//! route to a service where no VirtualService applies.

use std::time::Duration;

use mizzen_api::networking::{HttpMatchRequest, HttpRoute, StringMatch, VirtualService};
use mizzen_xds::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, RuntimeFractionalPercent, data_source,
    header_value_option::HeaderAppendAction,
};
use mizzen_xds::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, Route, RouteAction, RouteConfiguration, RouteMatch,
    VirtualHost, WeightedCluster, header_matcher::HeaderMatchSpecifier, route::Action,
    route_action::ClusterSpecifier, route_match::PathSpecifier, weighted_cluster::ClusterWeight,
};
use mizzen_xds::pb::envoy::config::route::v3::{
    QueryParameterMatcher, RedirectAction, RetryPolicy, query_parameter_matcher, redirect_action,
    route_action,
};
use mizzen_xds::pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
use mizzen_xds::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort,
};
use mizzen_xds::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
use mizzen_xds::pb::envoy::r#type::matcher::v3::{
    RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use mizzen_xds::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent};
use mizzen_xds::server::Resource;

use super::cluster::PASSTHROUGH_CLUSTER;
use super::{HTTP_PROXY_ROUTE, duration, inbound_cluster_name, outbound_cluster_name, resource};
use crate::model::{Config, Model, OutboundPolicy, Service};
use crate::node::ProxyNode;

/// The inline route of an inbound listener: everything to the local app.
pub fn inbound_route_config(port: u16) -> RouteConfiguration {
    RouteConfiguration {
        name: inbound_cluster_name(port),
        virtual_hosts: vec![VirtualHost {
            name: format!("inbound|http|{port}"),
            domains: vec!["*".to_string()],
            routes: vec![forward_all("default", inbound_cluster_name(port))],
            ..Default::default()
        }],
        validate_clusters: Some(mizzen_xds::pb::google::protobuf::BoolValue { value: false }),
        ..Default::default()
    }
}

fn forward_all(name: &str, cluster: String) -> Route {
    Route {
        name: name.to_string(),
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster)),
            // Istio disables Envoy's 15 s default: no timeout unless the
            // VirtualService sets one.
            timeout: Some(duration(Duration::ZERO)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The sidecar route configurations asked for: `http_proxy` (every HTTP
/// service, for the explicit proxy listener) or a port number (the services
/// on that port).
pub fn sidecar_routes(model: &Model, proxy: &ProxyNode, names: &[String]) -> Vec<Resource> {
    let mut out = Vec::new();
    for name in names {
        let (port_filter, explicit) = if name == HTTP_PROXY_ROUTE {
            (None, true)
        } else if let Ok(port) = name.parse::<u16>() {
            (Some(port), false)
        } else {
            continue;
        };
        let mut virtual_hosts = Vec::new();
        for service in model.visible_services(proxy) {
            for port in service.ports.iter().filter(|p| p.protocol.is_http()) {
                if port_filter.is_some_and(|p| p != port.port) {
                    continue;
                }
                // An explicit proxy sees `host:port` authorities, and the
                // bare host only for the default HTTP port.
                let portless = !explicit || port.port == 80;
                let mut domains = service_domains(service, port.port, &proxy.namespace, portless);
                // Captured connections may name the service by its virtual IP.
                if let (false, Some(vip)) = (explicit, service.address) {
                    domains.push(vip.to_string());
                    domains.push(format!("{vip}:{}", port.port));
                }
                virtual_hosts.push(VirtualHost {
                    name: format!("{}:{}", service.hostname, port.port),
                    domains,
                    routes: service_routes(model, service, port.port, proxy),
                    ..Default::default()
                });
            }
        }
        if !explicit {
            virtual_hosts.push(catch_all(
                model.outbound_policy(&proxy.namespace, &proxy.labels),
            ));
        }
        let config = RouteConfiguration {
            name: name.clone(),
            virtual_hosts,
            validate_clusters: Some(mizzen_xds::pb::google::protobuf::BoolValue { value: false }),
            ..Default::default()
        };
        out.push(resource(name.clone(), &config));
    }
    out
}

/// The names a client in `namespace` may use for a service: the short name
/// only from its own namespace, as Kubernetes DNS search paths allow.
fn service_domains(service: &Service, port: u16, namespace: &str, portless: bool) -> Vec<String> {
    if let Some(domains) = super::service_entry::domains(service, port, portless) {
        return domains;
    }
    let mut hosts = Vec::new();
    if service.namespace == namespace {
        hosts.push(service.name.clone());
    }
    hosts.push(format!("{}.{}", service.name, service.namespace));
    hosts.push(format!("{}.{}.svc", service.name, service.namespace));
    hosts.push(service.hostname.clone());
    let mut domains = Vec::new();
    for host in hosts {
        if portless {
            domains.push(host.clone());
        }
        domains.push(format!("{host}:{port}"));
    }
    domains
}

/// Istio's last virtual host of an outbound route: hosts the mesh does not
/// know go to their original destination (`allow_any`), or get a 502
/// (`block_all`) under REGISTRY_ONLY.
fn catch_all(policy: OutboundPolicy) -> VirtualHost {
    let (name, action) = match policy {
        OutboundPolicy::AllowAny => (
            "allow_any",
            Action::Route(RouteAction {
                cluster_specifier: Some(ClusterSpecifier::Cluster(PASSTHROUGH_CLUSTER.to_string())),
                timeout: Some(duration(Duration::ZERO)),
                ..Default::default()
            }),
        ),
        OutboundPolicy::RegistryOnly => (
            "block_all",
            Action::DirectResponse(DirectResponseAction {
                status: 502,
                ..Default::default()
            }),
        ),
    };
    VirtualHost {
        name: name.to_string(),
        domains: vec!["*".to_string()],
        routes: vec![Route {
            name: name.to_string(),
            r#match: Some(RouteMatch {
                path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
                ..Default::default()
            }),
            action: Some(action),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Routes of one service port for sidecars: those of the VirtualService that
/// applies, else one route to the service.
fn service_routes(model: &Model, service: &Service, port: u16, proxy: &ProxyNode) -> Vec<Route> {
    let proxy_namespace = proxy.namespace.as_str();
    match model.virtual_service_for(&service.hostname, proxy_namespace, "mesh") {
        Some(vs) => virtual_service_routes(model, vs, port, "mesh", proxy),
        None => {
            let mut route = forward_all(
                "default",
                outbound_cluster_name(port, "", &service.hostname),
            );
            let rule = model
                .destination_rule(&service.hostname, proxy_namespace)
                .map(|r| &r.spec);
            if let Some(Action::Route(action)) = &mut route.action {
                action.hash_policy = super::policy::hash_policies(
                    super::policy::effective(rule, "", port)
                        .load_balancer
                        .as_ref(),
                );
            }
            vec![route]
        }
    }
}

/// Translates a VirtualService's `http` section for traffic arriving on
/// `port` through `gateway` (`mesh` for sidecars, `ns/name` for a gateway)
/// at `proxy`: matches on `sourceLabels` and `sourceNamespace` are decided
/// here, since each proxy gets its own routes.
pub fn virtual_service_routes(
    model: &Model,
    vs: &Config<VirtualService>,
    port: u16,
    gateway: &str,
    proxy: &ProxyNode,
) -> Vec<Route> {
    let mut routes = Vec::new();
    for (index, http) in vs.spec.http.iter().enumerate() {
        let route_name = http
            .name
            .clone()
            .unwrap_or_else(|| format!("{}.{}.{index}", vs.namespace, vs.name));
        let Some(action) = http_action(model, vs, http, port) else {
            continue;
        };
        if http.r#match.is_empty() {
            routes.push(route(
                route_name,
                RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
                    ..Default::default()
                },
                action,
                http,
            ));
            // A route without match conditions catches everything: the rest
            // can never be reached.
            break;
        }
        for m in &http.r#match {
            if m.port.is_some_and(|p| p != u32::from(port)) {
                continue;
            }
            if !m.gateways.is_empty()
                && !m
                    .gateways
                    .iter()
                    .any(|g| super::gateway::names_gateway(g, &vs.namespace, gateway))
            {
                continue;
            }
            if !crate::model::labels_match(&m.source_labels, &proxy.labels)
                || m.source_namespace
                    .as_ref()
                    .is_some_and(|ns| *ns != proxy.namespace)
            {
                continue;
            }
            let name = m
                .name
                .as_ref()
                .map(|n| format!("{route_name}.{n}"))
                .unwrap_or_else(|| route_name.clone());
            routes.push(route(name, route_match(m), action.clone(), http));
        }
    }
    routes
}

fn route(name: String, r#match: RouteMatch, action: Action, http: &HttpRoute) -> Route {
    let (request_add, request_remove, response_add, response_remove) =
        header_operations(http.headers.as_ref());
    Route {
        name,
        r#match: Some(r#match),
        action: Some(action),
        request_headers_to_add: request_add,
        request_headers_to_remove: request_remove,
        response_headers_to_add: response_add,
        response_headers_to_remove: response_remove,
        typed_per_filter_config: http
            .fault
            .as_ref()
            .map(|fault| {
                (
                    FAULT_FILTER.to_string(),
                    mizzen_xds::pack(&fault_config(fault)),
                )
            })
            .into_iter()
            .chain(http.cors_policy.as_ref().map(|cors| {
                (
                    CORS_FILTER.to_string(),
                    mizzen_xds::pack(&cors_policy(cors)),
                )
            }))
            .collect(),
        ..Default::default()
    }
}

/// The HTTP fault filter, which Istio adds to HTTP connection managers.
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";

/// The CORS filter, which Istio adds to HTTP connection managers.
pub const CORS_FILTER: &str = "envoy.filters.http.cors";

/// Istio's corsPolicy as the CORS filter's per-route policy: list fields
/// joined with commas, the max age in seconds, always enabled.
fn cors_policy(
    cors: &mizzen_api::networking::CorsPolicy,
) -> mizzen_xds::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy {
    use mizzen_api::networking::UnmatchedPreflights;
    use mizzen_xds::pb::google::protobuf::BoolValue;
    let origins = cors
        .allow_origin
        .iter()
        .map(|o| string_matcher(&StringMatch::Exact(o.clone())))
        .chain(cors.allow_origins.iter().map(string_matcher))
        .collect();
    mizzen_xds::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy {
        allow_origin_string_match: origins,
        allow_methods: cors.allow_methods.join(","),
        allow_headers: cors.allow_headers.join(","),
        expose_headers: cors.expose_headers.join(","),
        max_age: cors
            .max_age
            .as_deref()
            .and_then(|d| mizzen_api::parse_duration(d).ok())
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default(),
        allow_credentials: cors.allow_credentials.map(|value| BoolValue { value }),
        filter_enabled: Some(RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator: 100,
                denominator: fractional_percent::DenominatorType::Hundred as i32,
            }),
            runtime_key: String::new(),
        }),
        forward_not_matching_preflights: match cors.unmatched_preflights {
            Some(UnmatchedPreflights::Ignore) => Some(BoolValue { value: false }),
            Some(UnmatchedPreflights::Forward) => Some(BoolValue { value: true }),
            _ => None,
        },
        ..Default::default()
    }
}

/// A percentage as Envoy's fraction per million, so that Istio's decimal
/// percentages (0.1 %) keep their precision.
fn fraction(percentage: Option<&mizzen_api::networking::Percent>) -> FractionalPercent {
    let value = percentage.map_or(100.0, |p| p.value);
    FractionalPercent {
        numerator: (value.clamp(0.0, 100.0) * 10_000.0).round() as u32,
        denominator: fractional_percent::DenominatorType::Million as i32,
    }
}

fn fault_config(fault: &mizzen_api::networking::HttpFaultInjection) -> HttpFault {
    let delay = fault.delay.as_ref().and_then(|delay| {
        let fixed = mizzen_api::parse_duration(delay.fixed_delay.as_deref()?).ok()?;
        // `percent` is the deprecated integer form of `percentage`.
        let legacy = delay.percent.map(|p| mizzen_api::networking::Percent {
            value: f64::from(p),
        });
        Some(FaultDelay {
            percentage: Some(fraction(delay.percentage.as_ref().or(legacy.as_ref()))),
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(duration(
                fixed,
            ))),
        })
    });
    let abort = fault.abort.as_ref().and_then(|abort| {
        let error_type = match (abort.http_status, abort.grpc_status.as_deref()) {
            (Some(status), _) => fault_abort::ErrorType::HttpStatus(status as u32),
            (None, Some(grpc)) => fault_abort::ErrorType::GrpcStatus(grpc_code(grpc)?),
            _ => return None,
        };
        Some(FaultAbort {
            percentage: Some(fraction(abort.percentage.as_ref())),
            error_type: Some(error_type),
            ..Default::default()
        })
    });
    HttpFault {
        delay,
        abort,
        ..Default::default()
    }
}

/// gRPC status names as Istio accepts them, or a number.
fn grpc_code(name: &str) -> Option<u32> {
    const CODES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    name.parse()
        .ok()
        .or_else(|| CODES.iter().position(|c| *c == name).map(|i| i as u32))
}

type HeaderOps = (
    Vec<HeaderValueOption>,
    Vec<String>,
    Vec<HeaderValueOption>,
    Vec<String>,
);

fn header_operations(headers: Option<&mizzen_api::networking::Headers>) -> HeaderOps {
    let mut out: HeaderOps = Default::default();
    let Some(headers) = headers else {
        return out;
    };
    let convert = |ops: &mizzen_api::networking::HeaderOperations| {
        let mut add = Vec::new();
        for (name, value) in &ops.set {
            add.push(header_value(
                name,
                value,
                HeaderAppendAction::OverwriteIfExistsOrAdd,
            ));
        }
        for (name, value) in &ops.add {
            add.push(header_value(
                name,
                value,
                HeaderAppendAction::AppendIfExistsOrAdd,
            ));
        }
        (add, ops.remove.clone())
    };
    if let Some(request) = &headers.request {
        (out.0, out.1) = convert(request);
    }
    if let Some(response) = &headers.response {
        (out.2, out.3) = convert(response);
    }
    out
}

fn header_value(name: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_string(),
            value: value.to_string(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

fn string_matcher(m: &StringMatch) -> StringMatcher {
    let pattern = match m {
        StringMatch::Exact(s) => MatchPattern::Exact(s.clone()),
        StringMatch::Prefix(s) => MatchPattern::Prefix(s.clone()),
        StringMatch::Regex(s) => MatchPattern::SafeRegex(regex(s)),
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

fn regex(pattern: &str) -> RegexMatcher {
    RegexMatcher {
        regex: pattern.to_string(),
        ..Default::default()
    }
}

fn route_match(m: &HttpMatchRequest) -> RouteMatch {
    let path_specifier = match &m.uri {
        None => PathSpecifier::Prefix("/".to_string()),
        Some(StringMatch::Exact(s)) => PathSpecifier::Path(s.clone()),
        Some(StringMatch::Prefix(s)) => PathSpecifier::Prefix(s.clone()),
        Some(StringMatch::Regex(s)) => PathSpecifier::SafeRegex(regex(s)),
    };
    let header_matcher = |name: &str, value: &Option<StringMatch>, invert: bool| HeaderMatcher {
        name: name.to_string(),
        // An empty match (`end-user: {}`) asks only that the header be there.
        header_match_specifier: Some(match value {
            Some(value) => HeaderMatchSpecifier::StringMatch(string_matcher(value)),
            None => HeaderMatchSpecifier::PresentMatch(true),
        }),
        invert_match: invert,
        ..Default::default()
    };
    let mut headers: Vec<HeaderMatcher> = Vec::new();
    for (pseudo, value) in [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ] {
        if value.is_some() {
            headers.push(header_matcher(pseudo, value, false));
        }
    }
    headers.extend(
        m.headers
            .iter()
            .map(|(name, value)| header_matcher(name, value, false)),
    );
    headers.extend(
        m.without_headers
            .iter()
            .map(|(name, value)| header_matcher(name, value, true)),
    );
    let query_parameters = m
        .query_params
        .iter()
        .map(|(name, value)| QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(match value {
                Some(value) => query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(
                    string_matcher(value),
                ),
                None => query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true),
            }),
        })
        .collect();
    RouteMatch {
        path_specifier: Some(path_specifier),
        case_sensitive: m
            .ignore_uri_case
            .filter(|ignore| *ignore)
            .map(|_| mizzen_xds::pb::google::protobuf::BoolValue { value: false }),
        headers,
        query_parameters,
        ..Default::default()
    }
}

/// What a VirtualService HTTP route does: redirect, answer directly, or
/// forward to its destinations.
fn http_action(
    model: &Model,
    vs: &Config<VirtualService>,
    http: &HttpRoute,
    port: u16,
) -> Option<Action> {
    if let Some(redirect) = &http.redirect {
        return Some(Action::Redirect(redirect_action(redirect)));
    }
    if let Some(direct) = &http.direct_response {
        let body = direct
            .body
            .as_ref()
            .and_then(|b| b.string.clone().or_else(|| b.bytes.clone()));
        return Some(Action::DirectResponse(DirectResponseAction {
            status: direct.status,
            body: body.map(|text| DataSource {
                specifier: Some(data_source::Specifier::InlineString(text)),
                ..Default::default()
            }),
            ..Default::default()
        }));
    }
    let mut action = route_action(model, vs, http, port)?;
    if let Some(rewrite) = &http.rewrite {
        if let Some(uri) = &rewrite.uri {
            action.prefix_rewrite = uri.clone();
        }
        if let Some(regex_rewrite) = &rewrite.uri_regex_rewrite {
            action.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(regex(regex_rewrite.r#match.as_deref().unwrap_or_default())),
                substitution: regex_rewrite.rewrite.clone().unwrap_or_default(),
            });
        }
        if let Some(authority) = &rewrite.authority {
            action.host_rewrite_specifier = Some(
                route_action::HostRewriteSpecifier::HostRewriteLiteral(authority.clone()),
            );
        }
    }
    if let Some(retries) = &http.retries {
        action.retry_policy = Some(retry_policy(retries));
    }
    // `mirror` with `mirrorPercentage` (or the integer `mirrorPercent`), and
    // the newer list `mirrors`.
    let legacy_percent =
        http.mirror_percentage.or(http
            .mirror_percent
            .map(|p| mizzen_api::networking::Percent {
                value: f64::from(p),
            }));
    let mirrors = http
        .mirror
        .iter()
        .map(|destination| (destination, legacy_percent))
        .chain(http.mirrors.iter().map(|m| (&m.destination, m.percentage)));
    for (destination, percentage) in mirrors {
        let (host, mirror_port) = model.destination(destination, &vs.namespace, port);
        action
            .request_mirror_policies
            .push(route_action::RequestMirrorPolicy {
                cluster: outbound_cluster_name(
                    mirror_port,
                    destination.subset.as_deref().unwrap_or_default(),
                    &host,
                ),
                runtime_fraction: Some(RuntimeFractionalPercent {
                    default_value: Some(fraction(percentage.as_ref())),
                    ..Default::default()
                }),
                ..Default::default()
            });
    }
    Some(Action::Route(action))
}

fn redirect_action(redirect: &mizzen_api::networking::HttpRedirect) -> RedirectAction {
    use redirect_action::RedirectResponseCode;
    let response_code = match redirect.redirect_code.unwrap_or(301) {
        302 => RedirectResponseCode::Found,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        _ => RedirectResponseCode::MovedPermanently,
    };
    RedirectAction {
        host_redirect: redirect.authority.clone().unwrap_or_default(),
        port_redirect: redirect.port.unwrap_or(0),
        response_code: response_code as i32,
        scheme_rewrite_specifier: redirect
            .scheme
            .clone()
            .map(redirect_action::SchemeRewriteSpecifier::SchemeRedirect),
        path_rewrite_specifier: redirect
            .uri
            .clone()
            .map(redirect_action::PathRewriteSpecifier::PathRedirect)
            .or_else(|| {
                redirect
                    .prefix_rewrite
                    .clone()
                    .map(redirect_action::PathRewriteSpecifier::PrefixRewrite)
            }),
        ..Default::default()
    }
}

/// Istio's retry policy: `attempts` retries on the listed conditions;
/// numeric conditions become Envoy's retriable status codes.
fn retry_policy(retries: &mizzen_api::networking::HttpRetry) -> RetryPolicy {
    let mut retry_on = Vec::new();
    let mut codes = Vec::new();
    for condition in retries
        .retry_on
        .as_deref()
        .unwrap_or("connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes")
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        match condition.parse::<u32>() {
            Ok(code) => codes.push(code),
            Err(_) => retry_on.push(condition.to_string()),
        }
    }
    if !codes.is_empty() && !retry_on.iter().any(|c| c == "retriable-status-codes") {
        retry_on.push("retriable-status-codes".to_string());
    }
    RetryPolicy {
        retry_on: retry_on.join(","),
        num_retries: Some(mizzen_xds::pb::google::protobuf::UInt32Value {
            value: retries.attempts.unwrap_or(2).max(0) as u32,
        }),
        per_try_timeout: retries
            .per_try_timeout
            .as_deref()
            .and_then(|t| mizzen_api::parse_duration(t).ok())
            .map(duration),
        retriable_status_codes: codes,
        ..Default::default()
    }
}

fn route_action(
    model: &Model,
    vs: &Config<VirtualService>,
    http: &HttpRoute,
    port: u16,
) -> Option<RouteAction> {
    let mut clusters: Vec<(String, u32)> = Vec::new();
    let mut hash_policy = Vec::new();
    // Headers set per destination ride on the weighted cluster entries.
    let per_destination_headers = http.route.iter().any(|d| d.headers.is_some());
    for destination in &http.route {
        let (host, dest_port) = model.destination(&destination.destination, &vs.namespace, port);
        let subset = destination.destination.subset.clone().unwrap_or_default();
        if clusters.is_empty() {
            // Consistent hashing follows the first destination's rule, as Istio does.
            let rule = model
                .destination_rule(&host, &vs.namespace)
                .map(|r| &r.spec);
            hash_policy = super::policy::hash_policies(
                super::policy::effective(rule, &subset, dest_port)
                    .load_balancer
                    .as_ref(),
            );
        }
        let weight = destination.weight.unwrap_or(0).max(0) as u32;
        clusters.push((outbound_cluster_name(dest_port, &subset, &host), weight));
    }
    if clusters.is_empty() {
        return None;
    }
    let timeout = http
        .timeout
        .as_deref()
        .and_then(|t| mizzen_api::parse_duration(t).ok())
        .unwrap_or(Duration::ZERO);
    let cluster_specifier = if clusters.len() == 1 && !per_destination_headers {
        ClusterSpecifier::Cluster(clusters.remove(0).0)
    } else {
        // Istio drops zero-weight destinations; with no weights at all the
        // traffic is spread evenly.
        if clusters.iter().all(|(_, w)| *w == 0) {
            clusters.iter_mut().for_each(|(_, w)| *w = 1);
        }
        ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: clusters
                .into_iter()
                .zip(&http.route)
                .filter(|((_, w), _)| *w > 0)
                .map(|((name, weight), destination)| {
                    let (request_add, request_remove, response_add, response_remove) =
                        header_operations(destination.headers.as_ref());
                    ClusterWeight {
                        name,
                        weight: Some(mizzen_xds::pb::google::protobuf::UInt32Value {
                            value: weight,
                        }),
                        request_headers_to_add: request_add,
                        request_headers_to_remove: request_remove,
                        response_headers_to_add: response_add,
                        response_headers_to_remove: response_remove,
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        })
    };
    Some(RouteAction {
        cluster_specifier: Some(cluster_specifier),
        timeout: Some(duration(timeout)),
        hash_policy,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mizzen_api::networking::{CorsPolicy, UnmatchedPreflights};

    #[test]
    fn cors_policy_translation() {
        let cors = CorsPolicy {
            allow_origin: vec!["https://legacy.example".into()],
            allow_origins: vec![StringMatch::Prefix("https://dev.".into())],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["x-a".into(), "x-b".into()],
            expose_headers: vec!["x-c".into()],
            max_age: Some("24h".into()),
            allow_credentials: Some(true),
            unmatched_preflights: Some(UnmatchedPreflights::Ignore),
        };
        let p = cors_policy(&cors);
        assert_eq!(p.allow_origin_string_match.len(), 2);
        assert_eq!(
            p.allow_origin_string_match[1].match_pattern,
            Some(MatchPattern::Prefix("https://dev.".into()))
        );
        assert_eq!(p.allow_methods, "GET,POST");
        assert_eq!(p.allow_headers, "x-a,x-b");
        assert_eq!(p.expose_headers, "x-c");
        assert_eq!(p.max_age, "86400");
        assert_eq!(p.allow_credentials.map(|b| b.value), Some(true));
        assert_eq!(
            p.forward_not_matching_preflights.map(|b| b.value),
            Some(false)
        );
        let enabled = p.filter_enabled.and_then(|f| f.default_value).unwrap();
        assert_eq!(enabled.numerator, 100);
    }
}
