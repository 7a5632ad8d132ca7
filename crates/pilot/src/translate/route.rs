//! Route configurations (RDS): VirtualService `http` routes, and the default
//! route to a service where no VirtualService applies.

use std::time::Duration;

use mizzen_api::networking::{HttpMatchRequest, HttpRoute, StringMatch, VirtualService};
use mizzen_xds::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
};
use mizzen_xds::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, Route, RouteAction, RouteConfiguration, RouteMatch,
    VirtualHost, WeightedCluster, header_matcher::HeaderMatchSpecifier, route::Action,
    route_action::ClusterSpecifier, route_match::PathSpecifier, weighted_cluster::ClusterWeight,
};
use mizzen_xds::pb::envoy::r#type::matcher::v3::{
    RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
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
        for service in model.services.values() {
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
                    routes: service_routes(model, service, port.port, &proxy.namespace),
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
fn service_routes(
    model: &Model,
    service: &Service,
    port: u16,
    proxy_namespace: &str,
) -> Vec<Route> {
    match model.virtual_service_for(&service.hostname, proxy_namespace, "mesh") {
        Some(vs) => virtual_service_routes(model, vs, port, "mesh"),
        None => vec![forward_all(
            "default",
            outbound_cluster_name(port, "", &service.hostname),
        )],
    }
}

/// Translates a VirtualService's `http` section for traffic arriving on
/// `port` through `gateway` (`mesh` for sidecars, `ns/name` for a gateway).
pub fn virtual_service_routes(
    model: &Model,
    vs: &Config<VirtualService>,
    port: u16,
    gateway: &str,
) -> Vec<Route> {
    let mut routes = Vec::new();
    for (index, http) in vs.spec.http.iter().enumerate() {
        let route_name = http
            .name
            .clone()
            .unwrap_or_else(|| format!("{}.{}.{index}", vs.namespace, vs.name));
        let Some(action) = route_action(model, vs, http, port) else {
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
            if !m.gateways.is_empty() && !m.gateways.iter().any(|g| g == gateway) {
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
        ..Default::default()
    }
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
    let headers = m
        .headers
        .iter()
        .map(|(name, value)| HeaderMatcher {
            name: name.clone(),
            // An empty match (`end-user: {}`) asks only that the header be there.
            header_match_specifier: Some(match value {
                Some(value) => HeaderMatchSpecifier::StringMatch(string_matcher(value)),
                None => HeaderMatchSpecifier::PresentMatch(true),
            }),
            ..Default::default()
        })
        .collect();
    RouteMatch {
        path_specifier: Some(path_specifier),
        case_sensitive: m
            .ignore_uri_case
            .filter(|ignore| *ignore)
            .map(|_| mizzen_xds::pb::google::protobuf::BoolValue { value: false }),
        headers,
        ..Default::default()
    }
}

fn route_action(
    model: &Model,
    vs: &Config<VirtualService>,
    http: &HttpRoute,
    port: u16,
) -> Option<Action> {
    let mut clusters: Vec<(String, u32)> = Vec::new();
    for destination in &http.route {
        let host = model.resolve_host(&destination.destination.host, &vs.namespace);
        let dest_port = destination
            .destination
            .port
            .as_ref()
            .and_then(|p| p.number)
            .and_then(|n| u16::try_from(n).ok())
            .or_else(|| {
                let service = model.services.get(&host)?;
                (service.ports.len() == 1).then(|| service.ports[0].port)
            })
            .unwrap_or(port);
        let subset = destination.destination.subset.clone().unwrap_or_default();
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
    let cluster_specifier = if clusters.len() == 1 {
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
                .filter(|(_, w)| *w > 0)
                .map(|(name, weight)| ClusterWeight {
                    name,
                    weight: Some(mizzen_xds::pb::google::protobuf::UInt32Value { value: weight }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    };
    Some(Action::Route(RouteAction {
        cluster_specifier: Some(cluster_specifier),
        timeout: Some(duration(timeout)),
        ..Default::default()
    }))
}
