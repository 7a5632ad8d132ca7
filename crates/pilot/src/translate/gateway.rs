//! Gateways (router proxies): a listener per server port and the routes of
//! the VirtualServices bound to each Gateway.

use std::collections::BTreeMap;
use std::net::IpAddr;

use mizzen_xds::pb::envoy::config::core::v3::TrafficDirection;
use mizzen_xds::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use mizzen_xds::server::Resource;

use super::listener::{Routes, http_connection_manager, listener};
use super::{resource, route};
use crate::model::{Config, Model, Protocol, labels_match};
use crate::node::{InterceptionMode, ProxyNode};

/// One HTTP server of a Gateway selecting this proxy.
struct BoundServer<'a> {
    gateway: &'a Config<mizzen_api::networking::Gateway>,
    /// The port named in the Gateway (the Service port).
    port: u16,
    hosts: &'a [String],
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
            let protocol = Protocol::from_port(Some(&server.port.protocol), None);
            if !protocol.is_http() {
                continue;
            }
            let target = services
                .iter()
                .flat_map(|s| s.ports.iter())
                .find(|p| p.port == port)
                .and_then(|p| Model::target_port(p, workload))
                .unwrap_or(port);
            out.entry(target).or_default().push(BoundServer {
                gateway,
                port,
                hosts: &server.hosts,
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
    servers_by_listener_port(model, proxy)
        .into_keys()
        .map(|port| {
            listener(
                format!("0.0.0.0_{port}"),
                bind_address(proxy),
                port,
                TrafficDirection::Outbound,
                http_connection_manager(
                    format!("outbound_0.0.0.0_{port}"),
                    Routes::Rds(format!("http.{port}")),
                    false,
                    super::listener::HcmFilters::of(model),
                ),
            )
        })
        .collect()
}

pub fn routes(model: &Model, proxy: &ProxyNode, names: &[String]) -> Vec<Resource> {
    let servers = servers_by_listener_port(model, proxy);
    let mut out = Vec::new();
    for name in names {
        let Some(port) = name
            .strip_prefix("http.")
            .and_then(|p| p.parse::<u16>().ok())
        else {
            continue;
        };
        let mut hosts: BTreeMap<String, VirtualHost> = BTreeMap::new();
        for server in servers.get(&port).map(Vec::as_slice).unwrap_or_default() {
            let gateway_ref = format!("{}/{}", server.gateway.namespace, server.gateway.name);
            for vs in &model.virtual_services {
                if !binds(vs, &server.gateway.namespace, &server.gateway.name) {
                    continue;
                }
                let routes =
                    route::virtual_service_routes(model, vs, server.port, &gateway_ref, proxy);
                for vs_host in &vs.spec.hosts {
                    for server_host in server.hosts {
                        let Some(host) = bound_host(
                            vs_host,
                            &vs.namespace,
                            server_host,
                            &server.gateway.namespace,
                        ) else {
                            continue;
                        };
                        let entry = hosts.entry(host.clone()).or_insert_with(|| VirtualHost {
                            name: format!("{host}:{}", server.port),
                            domains: if host == "*" {
                                vec!["*".to_string()]
                            } else {
                                vec![host.clone(), format!("{host}:*")]
                            },
                            ..Default::default()
                        });
                        entry.routes.extend(routes.iter().cloned());
                    }
                }
            }
        }
        let config = RouteConfiguration {
            name: name.clone(),
            virtual_hosts: hosts.into_values().collect(),
            validate_clusters: Some(mizzen_xds::pb::google::protobuf::BoolValue { value: false }),
            ..Default::default()
        };
        out.push(resource(name.clone(), &config));
    }
    out
}

/// Whether a VirtualService names the Gateway `namespace/name`. Istio reads
/// an unqualified name as a Gateway in the VirtualService's own namespace —
/// the reason a route "doesn't work" until the reference is qualified.
fn binds(vs: &Config<mizzen_api::networking::VirtualService>, namespace: &str, name: &str) -> bool {
    vs.spec.gateways.iter().any(|reference| {
        let (ref_namespace, ref_name) = match reference.split_once('/') {
            Some((ns, n)) => (ns.to_string(), n.to_string()),
            None => match reference.split_once('.') {
                // `name.namespace.svc.cluster.local`, the older form.
                Some((n, rest)) => (
                    rest.split('.').next().unwrap_or(rest).to_string(),
                    n.to_string(),
                ),
                None => (vs.namespace.clone(), reference.clone()),
            },
        };
        ref_namespace == namespace && ref_name == name
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
