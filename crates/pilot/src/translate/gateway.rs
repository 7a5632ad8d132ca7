//! Gateways (router proxies): one listener per port the proxy serves, with
//! the filter chains of every Gateway server on it as Istio builds them, and
//! the routes of the VirtualServices bound to each Gateway.
//!
//! * HTTP servers share one plaintext chain and the route configuration
//!   `http.PORT`; `tls.httpsRedirect` makes their virtual hosts answer 301
//!   to https (`require_tls: ALL`).
//! * HTTPS servers that terminate TLS (SIMPLE, MUTUAL, OPTIONAL_MUTUAL,
//!   ISTIO_MUTUAL) get a chain each, chosen by SNI among the server's hosts
//!   (any name for `*`), with the server's certificates and a connection
//!   manager on `https.PORT.PORT_NAME.GATEWAY.NAMESPACE`.
//! * PASSTHROUGH servers forward the TLS stream by SNI, per VirtualService
//!   `tls` route bound to the Gateway; TCP servers (and TLS servers that
//!   terminate) forward by the first fitting `tcp` route.
//!
//! A route configuration with no virtual host makes Envoy answer 404 (flag
//! NR): that is what a server without a bound VirtualService answers, for
//! HTTP and HTTPS alike.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use mizzen_api::networking::{Gateway, RouteDestination, Server, VirtualService};
use mizzen_xds::pb::envoy::config::core::v3::TrafficDirection;
use mizzen_xds::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener};
use mizzen_xds::pb::envoy::config::route::v3::{
    RouteConfiguration, VirtualHost, virtual_host::TlsRequirementType,
};
use mizzen_xds::server::Resource;

use super::cluster::socket_address;
use super::gateway_tls;
use super::listener::{
    HcmFilters, Routes, chain, destinations_proxy, http_connection_manager, tls_inspector_filters,
};
use super::{outbound_cluster_name, resource, route};
use crate::model::{Config, Model, labels_match};
use crate::node::{InterceptionMode, ProxyNode};

/// What a Gateway server does with its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerKind {
    /// Plaintext HTTP.
    Http,
    /// TLS terminated, then HTTP.
    Https,
    /// TLS terminated, then TCP (`tcp` routes).
    TlsTerminated,
    /// TLS forwarded as it is, by SNI (`tls` routes).
    Passthrough,
    /// TCP (`tcp` routes).
    Tcp,
}

impl ServerKind {
    fn of(server: &Server) -> Option<ServerKind> {
        let terminates = gateway_tls::terminates(server.tls.as_ref());
        match server.port.protocol.to_ascii_uppercase().as_str() {
            "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => Some(ServerKind::Http),
            "HTTPS" if terminates => Some(ServerKind::Https),
            "HTTPS" | "TLS" if server.tls.as_ref().and_then(|t| t.mode).is_some() => {
                Some(if terminates {
                    ServerKind::TlsTerminated
                } else {
                    ServerKind::Passthrough
                })
            }
            "TCP" | "MONGO" | "MYSQL" | "REDIS" => Some(ServerKind::Tcp),
            _ => None,
        }
    }
}

/// One server of a Gateway selecting this proxy.
struct BoundServer<'a> {
    gateway: &'a Config<Gateway>,
    server: &'a Server,
    /// The port named in the Gateway (the Service port).
    port: u16,
    kind: ServerKind,
}

impl BoundServer<'_> {
    /// `ns/name`, as VirtualServices name their gateways once qualified.
    fn gateway_ref(&self) -> String {
        format!("{}/{}", self.gateway.namespace, self.gateway.name)
    }

    /// Whether a `tcp` or `tls` route match (its `port` and `gateways`) in
    /// a VirtualService of `vs_namespace` applies to this server;
    /// `gateway` is [`Self::gateway_ref`].
    fn fits(
        &self,
        port: Option<u32>,
        gateways: &[String],
        vs_namespace: &str,
        gateway: &str,
    ) -> bool {
        port.is_none_or(|p| p == u32::from(self.port))
            && (gateways.is_empty()
                || gateways
                    .iter()
                    .any(|g| names_gateway(g, vs_namespace, gateway)))
    }

    /// Istio's RDS name of an HTTPS server:
    /// `https.PORT.PORT_NAME.GATEWAY.NAMESPACE`.
    fn https_route_name(&self) -> String {
        format!(
            "https.{}.{}.{}.{}",
            self.port, self.server.port.name, self.gateway.name, self.gateway.namespace
        )
    }

    /// The server's hosts without their namespace part, for SNI.
    fn sni_hosts(&self) -> Vec<String> {
        let hosts: Vec<String> = self
            .server
            .hosts
            .iter()
            .map(|h| h.split_once('/').map_or(h.as_str(), |(_, h)| h))
            .map(str::to_ascii_lowercase)
            .collect();
        if hosts.iter().any(|h| h == "*") {
            Vec::new()
        } else {
            hosts
        }
    }
}

/// The Gateways that select this proxy, grouped by the port the proxy
/// listens on: a server's port is the gateway Service's port, and Istio
/// listens on the matching target port of the gateway workload.
fn servers_by_listener_port<'a>(
    model: &'a Model,
    proxy: &ProxyNode,
) -> BTreeMap<u16, Vec<BoundServer<'a>>> {
    let services = model.services_of(&proxy.namespace, &proxy.labels);
    let workload = model.workload_of(proxy);
    let mut out: BTreeMap<u16, Vec<BoundServer<'a>>> = BTreeMap::new();
    for gateway in &model.gateways {
        if !labels_match(&gateway.spec.selector, &proxy.labels) {
            continue;
        }
        for server in &gateway.spec.servers {
            let Ok(port) = u16::try_from(server.port.number) else {
                continue;
            };
            let Some(kind) = ServerKind::of(server) else {
                continue;
            };
            let target = services
                .iter()
                .flat_map(|s| s.ports.iter())
                .find(|p| p.port == port)
                .and_then(|p| Model::target_port(p, workload))
                .unwrap_or(port);
            out.entry(target).or_default().push(BoundServer {
                gateway,
                server,
                port,
                kind,
            });
        }
    }
    out
}

fn bind_address(proxy: &ProxyNode) -> IpAddr {
    match proxy.interception {
        InterceptionMode::None => proxy.ip,
        InterceptionMode::Redirect => IpAddr::from([0, 0, 0, 0]),
    }
}

pub fn listeners(model: &Model, proxy: &ProxyNode) -> Vec<Resource> {
    let mut out = Vec::new();
    for (port, servers) in servers_by_listener_port(model, proxy) {
        let name = format!("0.0.0.0_{port}");
        let stat_prefix = format!("outbound_0.0.0.0_{port}");
        // Plaintext HTTP cannot share a port with TLS or TCP: the HTTP
        // servers take it, as Istio merges only compatible servers.
        let chains = if servers.iter().any(|s| s.kind == ServerKind::Http) {
            vec![FilterChain {
                filters: vec![http_connection_manager(
                    stat_prefix,
                    Routes::Rds(format!("http.{port}")),
                    false,
                    HcmFilters::of(model),
                )],
                ..Default::default()
            }]
        } else {
            tls_and_tcp_chains(model, proxy, &name, &stat_prefix, &servers)
        };
        if chains.is_empty() {
            // Envoy refuses a listener without filter chains; a server with
            // nothing bound to it gets no listener, as in Istio.
            continue;
        }
        let tls = chains.iter().any(|c| {
            c.transport_socket.is_some()
                || c.filter_chain_match
                    .as_ref()
                    .is_some_and(|m| !m.server_names.is_empty())
        });
        let listener = Listener {
            name: name.clone(),
            address: Some(socket_address(bind_address(proxy), port)),
            listener_filters: tls_inspector_filters(tls),
            filter_chains: chains,
            traffic_direction: TrafficDirection::Outbound as i32,
            ..Default::default()
        };
        out.push(resource(name, &listener));
    }
    out
}

/// The chains of a port without plaintext HTTP servers. Envoy refuses two
/// chains with the same match, so a server name already taken by an earlier
/// server is not offered again (Istio skips such a server).
fn tls_and_tcp_chains(
    model: &Model,
    proxy: &ProxyNode,
    name: &str,
    stat_prefix: &str,
    servers: &[BoundServer],
) -> Vec<FilterChain> {
    let mut chains = Vec::new();
    let mut taken: BTreeSet<Vec<String>> = BTreeSet::new();
    for (index, server) in servers.iter().enumerate() {
        let chain_name = format!("{name}-{index}");
        match server.kind {
            ServerKind::Http => {}
            ServerKind::Https | ServerKind::TlsTerminated => {
                let names = server.sni_hosts();
                if !taken.insert(names.clone()) {
                    continue;
                }
                let http = server.kind == ServerKind::Https;
                let filter = if http {
                    http_connection_manager(
                        stat_prefix.to_string(),
                        Routes::Rds(server.https_route_name()),
                        false,
                        HcmFilters::of(model),
                    )
                } else {
                    match tcp_filter(model, proxy, server) {
                        Some(filter) => filter,
                        None => continue,
                    }
                };
                let mut chain = chain(chain_name, sni_match(names), filter);
                chain.transport_socket = server
                    .server
                    .tls
                    .as_ref()
                    .and_then(|tls| gateway_tls::server_transport_socket(tls, http));
                chains.push(chain);
            }
            ServerKind::Passthrough => {
                for (i, (names, filter)) in passthrough_routes(model, proxy, server)
                    .into_iter()
                    .enumerate()
                {
                    if taken.insert(names.clone()) {
                        chains.push(chain(format!("{chain_name}-{i}"), sni_match(names), filter));
                    }
                }
            }
            ServerKind::Tcp => {
                if taken.contains(&Vec::new()) {
                    continue;
                }
                if let Some(filter) = tcp_filter(model, proxy, server) {
                    taken.insert(Vec::new());
                    chains.push(chain(chain_name, None, filter));
                }
            }
        }
    }
    chains
}

fn sni_match(names: Vec<String>) -> Option<FilterChainMatch> {
    (!names.is_empty()).then(|| FilterChainMatch {
        server_names: names,
        ..Default::default()
    })
}

/// The VirtualServices bound to a server's Gateway and visible from the
/// proxy's namespace, each with the hosts they serve on the server.
fn bound_virtual_services<'a>(
    model: &'a Model,
    proxy: &ProxyNode,
    server: &BoundServer,
) -> Vec<(&'a Config<VirtualService>, Vec<String>)> {
    model
        .virtual_services
        .iter()
        .filter(|vs| {
            binds(vs, &server.gateway.namespace, &server.gateway.name)
                && Model::exported(&vs.spec.export_to, &vs.namespace, &proxy.namespace)
        })
        .filter_map(|vs| {
            let hosts: Vec<String> = vs
                .spec
                .hosts
                .iter()
                .flat_map(|vs_host| {
                    server.server.hosts.iter().filter_map(|server_host| {
                        bound_host(
                            vs_host,
                            &vs.namespace,
                            server_host,
                            &server.gateway.namespace,
                        )
                    })
                })
                .collect();
            (!hosts.is_empty()).then_some((vs, hosts))
        })
        .collect()
}

/// TCP forwarding for a TCP server, or a TLS server that terminates: the
/// first `tcp` route of a bound VirtualService that fits the server's port
/// and Gateway.
fn tcp_filter(
    model: &Model,
    proxy: &ProxyNode,
    server: &BoundServer,
) -> Option<mizzen_xds::pb::envoy::config::listener::v3::Filter> {
    let gateway = server.gateway_ref();
    for (vs, _) in bound_virtual_services(model, proxy, server) {
        for route in &vs.spec.tcp {
            let fits = route.r#match.is_empty()
                || route
                    .r#match
                    .iter()
                    .any(|m| server.fits(m.port, &m.gateways, &vs.namespace, &gateway));
            if !fits || route.route.is_empty() {
                continue;
            }
            return Some(route_proxy(model, &vs.namespace, &route.route, server.port));
        }
    }
    None
}

/// A TCP proxy to a `tcp` or `tls` route's destinations (at least one),
/// its stats named after the first destination's cluster.
fn route_proxy(
    model: &Model,
    namespace: &str,
    destinations: &[RouteDestination],
    port: u16,
) -> mizzen_xds::pb::envoy::config::listener::v3::Filter {
    let first = &destinations[0].destination;
    let (host, first_port) = model.destination(first, namespace, port);
    let subset = first.subset.as_deref().unwrap_or_default();
    let cluster = outbound_cluster_name(first_port, subset, &host);
    destinations_proxy(model, namespace, destinations, port, cluster)
}

/// SNI forwarding for a PASSTHROUGH server: one entry per `tls` route match
/// of a bound VirtualService that fits the server, with the SNI hosts the
/// server's hosts allow.
fn passthrough_routes(
    model: &Model,
    proxy: &ProxyNode,
    server: &BoundServer,
) -> Vec<(
    Vec<String>,
    mizzen_xds::pb::envoy::config::listener::v3::Filter,
)> {
    let gateway = server.gateway_ref();
    let mut out = Vec::new();
    for (vs, _) in bound_virtual_services(model, proxy, server) {
        for route in &vs.spec.tls {
            if route.route.is_empty() {
                continue;
            }
            for m in &route.r#match {
                if !server.fits(m.port, &m.gateways, &vs.namespace, &gateway) {
                    continue;
                }
                let mut names: Vec<String> = m
                    .sni_hosts
                    .iter()
                    .flat_map(|sni| {
                        server.server.hosts.iter().filter_map(|server_host| {
                            bound_host(sni, &vs.namespace, server_host, &server.gateway.namespace)
                        })
                    })
                    .map(|h| h.to_ascii_lowercase())
                    .collect();
                names.sort();
                names.dedup();
                if names.is_empty() {
                    continue;
                }
                if names.iter().any(|n| n == "*") {
                    names.clear();
                }
                out.push((
                    names,
                    route_proxy(model, &vs.namespace, &route.route, server.port),
                ));
            }
        }
    }
    out
}

/// RDS: `http.PORT` for the HTTP servers on a listener port,
/// `https.PORT.PORT_NAME.GATEWAY.NAMESPACE` for one HTTPS server.
pub fn routes(model: &Model, proxy: &ProxyNode, names: &[String]) -> Vec<Resource> {
    let servers = servers_by_listener_port(model, proxy);
    let mut out = Vec::new();
    for name in names {
        let selected: Vec<&BoundServer> = if let Some(port) = name
            .strip_prefix("http.")
            .and_then(|p| p.parse::<u16>().ok())
        {
            servers
                .get(&port)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter(|s| s.kind == ServerKind::Http)
                .collect()
        } else if name.starts_with("https.") {
            servers
                .values()
                .flatten()
                .filter(|s| s.kind == ServerKind::Https && s.https_route_name() == *name)
                .take(1)
                .collect()
        } else {
            continue;
        };
        let config = RouteConfiguration {
            name: name.clone(),
            virtual_hosts: virtual_hosts(model, proxy, &selected),
            validate_clusters: Some(mizzen_xds::pb::google::protobuf::BoolValue { value: false }),
            ..Default::default()
        };
        out.push(resource(name.clone(), &config));
    }
    out
}

/// The virtual hosts of some servers: one per host a bound VirtualService
/// serves on them, with its routes; an HTTP server with `httpsRedirect`
/// turns its hosts into redirects to https, bound or not.
fn virtual_hosts(model: &Model, proxy: &ProxyNode, servers: &[&BoundServer]) -> Vec<VirtualHost> {
    let mut hosts: BTreeMap<String, VirtualHost> = BTreeMap::new();
    let new_host = |host: &str, port: u16| VirtualHost {
        name: format!("{host}:{port}"),
        domains: if host == "*" {
            vec!["*".to_string()]
        } else {
            vec![host.to_string(), format!("{host}:*")]
        },
        ..Default::default()
    };
    for server in servers {
        let gateway_ref = server.gateway_ref();
        for (vs, vs_hosts) in bound_virtual_services(model, proxy, server) {
            let routes = route::virtual_service_routes(model, vs, server.port, &gateway_ref, proxy);
            // A VirtualService with nothing for HTTP here (only `tcp` or
            // `tls` routes, or matches for other gateways) adds no host.
            if routes.is_empty() {
                continue;
            }
            for host in vs_hosts {
                let entry = hosts
                    .entry(host.clone())
                    .or_insert_with(|| new_host(&host, server.port));
                entry.routes.extend(routes.iter().cloned());
            }
        }
    }
    for server in servers {
        let redirect = server.kind == ServerKind::Http
            && server
                .server
                .tls
                .as_ref()
                .and_then(|t| t.https_redirect)
                .unwrap_or(false);
        if !redirect {
            continue;
        }
        for server_host in &server.server.hosts {
            let host = server_host
                .split_once('/')
                .map_or(server_host.as_str(), |(_, h)| h);
            hosts
                .entry(host.to_string())
                .or_insert_with(|| new_host(host, server.port))
                .require_tls = TlsRequirementType::All as i32;
        }
        // Hosts of bound VirtualServices that the server's hosts cover.
        for (host, vhost) in hosts.iter_mut() {
            if server
                .server
                .hosts
                .iter()
                .any(|h| host_covers(h.split_once('/').map_or(h.as_str(), |(_, h)| h), host))
            {
                vhost.require_tls = TlsRequirementType::All as i32;
            }
        }
    }
    hosts.into_values().collect()
}

/// `reference` as a VirtualService in `vs_namespace` writes it, qualified
/// to `(namespace, name)`. Istio reads an unqualified name as a Gateway in
/// the VirtualService's own namespace — the reason a route "doesn't work"
/// until the reference is qualified.
fn qualify(reference: &str, vs_namespace: &str) -> (String, String) {
    match reference.split_once('/') {
        Some((ns, n)) => (ns.to_string(), n.to_string()),
        None => match reference.split_once('.') {
            // `name.namespace.svc.cluster.local`, the older form.
            Some((n, rest)) => (
                rest.split('.').next().unwrap_or(rest).to_string(),
                n.to_string(),
            ),
            None => (vs_namespace.to_string(), reference.to_string()),
        },
    }
}

/// Whether a gateway reference written in a VirtualService of
/// `vs_namespace` names `gateway` (`mesh`, or `namespace/name`).
pub fn names_gateway(reference: &str, vs_namespace: &str, gateway: &str) -> bool {
    if reference == "mesh" || gateway == "mesh" {
        return reference == gateway;
    }
    let (ns, name) = qualify(reference, vs_namespace);
    gateway.split_once('/') == Some((ns.as_str(), name.as_str()))
}

/// Whether a VirtualService names the Gateway `namespace/name`.
fn binds(vs: &Config<VirtualService>, namespace: &str, name: &str) -> bool {
    vs.spec.gateways.iter().any(|reference| {
        reference != "mesh"
            && qualify(reference, &vs.namespace) == (namespace.to_string(), name.to_string())
    })
}

/// The host a VirtualService host serves on a Gateway server host, honouring
/// the server's `namespace/host` restriction: the more specific of the two
/// when one covers the other.
fn bound_host(
    vs_host: &str,
    vs_namespace: &str,
    server_host: &str,
    gateway_namespace: &str,
) -> Option<String> {
    let (allowed_namespace, host) = match server_host.split_once('/') {
        Some((ns, host)) => (ns, host),
        None => ("*", server_host),
    };
    let namespace_ok = match allowed_namespace {
        "*" => true,
        "." => vs_namespace == gateway_namespace,
        ns => vs_namespace == ns,
    };
    if !namespace_ok {
        return None;
    }
    if host_covers(host, vs_host) {
        Some(vs_host.to_string())
    } else if host_covers(vs_host, host) {
        Some(host.to_string())
    } else {
        None
    }
}

/// Whether host pattern `pattern` (`*`, `*.example.com` or a name) covers `host`.
pub fn host_covers(pattern: &str, host: &str) -> bool {
    if pattern == "*" || pattern == host {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_hosts_restrict_namespaces() {
        assert_eq!(
            bound_host("a.example.com", "x", "*/a.example.com", "gw"),
            Some("a.example.com".into())
        );
        assert_eq!(
            bound_host("a.example.com", "x", "./a.example.com", "gw"),
            None
        );
        assert_eq!(
            bound_host("a.example.com", "gw", "./a.example.com", "gw"),
            Some("a.example.com".into())
        );
        assert_eq!(bound_host("a.example.com", "x", "y/*", "gw"), None);
        assert_eq!(
            bound_host("*", "x", "*.example.com", "gw"),
            Some("*.example.com".into())
        );
        assert_eq!(
            bound_host("a.example.com", "x", "b.example.com", "gw"),
            None
        );
    }
}
