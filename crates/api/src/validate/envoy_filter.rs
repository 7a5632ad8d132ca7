//! EnvoyFilter and ProxyConfig rules.

use super::Errors;
use crate::error::FieldPath;
use crate::networking::{ApplyTo, EnvoyFilter, PatchContext, PatchOperation, ProxyConfig};

pub(super) fn envoy_filter(ef: &EnvoyFilter, p: &FieldPath, e: &mut Errors) {
    if ef.workload_selector.is_some() && !ef.target_refs.is_empty() {
        e.add(p, "only one of targetRefs or workloadSelector can be set");
    }
    if let Some(sel) = &ef.workload_selector {
        let sp = p.key("workloadSelector");
        e.labels_selector(&sp, &sel.labels);
        e.labels(&sp.key("labels"), &sel.labels);
    }
    e.max_items(&p.key("targetRefs"), &ef.target_refs, 16);
    for (i, r) in ef.target_refs.iter().enumerate() {
        e.target_ref(&p.key("targetRefs").index(i), r);
    }
    for (i, cp) in ef.config_patches.iter().enumerate() {
        let pp = p.key("configPatches").index(i);
        if let Some(m) = &cp.r#match {
            let mp = pp.key("match");
            let objects = usize::from(m.listener.is_some())
                + usize::from(m.route_configuration.is_some())
                + usize::from(m.cluster.is_some())
                + usize::from(m.waypoint.is_some());
            if objects > 1 {
                e.add(
                    &mp,
                    "only one of listener, routeConfiguration, cluster or waypoint can be set",
                );
            }
            let waypoint_context = m.context == Some(PatchContext::Waypoint);
            if waypoint_context != m.waypoint.is_some() {
                e.add(&mp, "only support waypointMatch when context is WAYPOINT");
            }
            if let Some(w) = &m.waypoint
                && let Some(port) = w.port_number
            {
                e.port_cel(&mp.key("waypoint").key("portNumber"), port);
            }
            if let Some(proxy) = &m.proxy
                && let Some(v) = proxy.proxy_version.as_deref()
                && regex::Regex::new(v).is_err()
            {
                e.add(
                    &mp.key("proxy").key("proxyVersion"),
                    format!("Envoy filter: invalid regex for proxy version, [{v}]"),
                );
            }
        }
        let apply_to = cp.apply_to.unwrap_or(ApplyTo::Invalid);
        if apply_to == ApplyTo::Invalid {
            e.add(&pp.key("applyTo"), "Envoy filter: missing applyTo");
            continue;
        }
        let Some(patch) = &cp.patch else {
            e.add(&pp.key("patch"), "Envoy filter: missing patch");
            continue;
        };
        let op = patch.operation.unwrap_or(PatchOperation::Invalid);
        if op == PatchOperation::Invalid {
            e.add(
                &pp.key("patch").key("operation"),
                "Envoy filter: missing patch operation",
            );
            continue;
        }
        if op != PatchOperation::Remove && patch.value.is_none() {
            e.add(
                &pp.key("patch").key("value"),
                "Envoy filter: missing patch value for non-remove operation",
            );
            continue;
        }
        let Some(m) = &cp.r#match else {
            continue;
        };
        let mp = pp.key("match");
        let has_object =
            m.listener.is_some() || m.route_configuration.is_some() || m.cluster.is_some();
        match apply_to {
            ApplyTo::Listener
            | ApplyTo::FilterChain
            | ApplyTo::NetworkFilter
            | ApplyTo::HttpFilter
            | ApplyTo::ListenerFilter => {
                if has_object && m.listener.is_none() {
                    e.add(
                        &mp,
                        "Envoy filter: applyTo for listener class objects cannot have non listener match",
                    );
                }
                if let Some(l) = &m.listener {
                    let lp = mp.key("listener");
                    if let Some(port) = l.port_number
                        && port > 65535
                    {
                        e.add(&lp.key("portNumber"), format!("invalid port number {port}"));
                    }
                    if let Some(fm) = l.filter_chain.as_ref().and_then(|fc| fc.filter.as_ref()) {
                        let fp = lp.key("filterChain").key("filter");
                        let name = fm.name.as_deref().unwrap_or("");
                        if name.is_empty() {
                            e.add(&fp, "Envoy filter: filter match has no name to match on");
                        } else if let Some(sub) = &fm.sub_filter {
                            if apply_to != ApplyTo::HttpFilter {
                                e.add(
                                    &fp.key("subFilter"),
                                    "Envoy filter: subfilter match can be used with applyTo HTTP_FILTER only",
                                );
                            }
                            if name != "envoy.filters.network.http_connection_manager"
                                && name != "envoy.http_connection_manager"
                            {
                                e.add(
                                    &fp.key("subFilter"),
                                    "Envoy filter: subfilter match requires filter match with envoy.filters.network.http_connection_manager",
                                );
                            }
                            if sub.name.as_deref().unwrap_or("").is_empty() {
                                e.add(
                                    &fp.key("subFilter"),
                                    "Envoy filter: subfilter match has no name to match on",
                                );
                            }
                        }
                    }
                }
            }
            ApplyTo::RouteConfiguration | ApplyTo::VirtualHost | ApplyTo::HttpRoute
                if has_object && m.route_configuration.is_none() =>
            {
                e.add(
                    &mp,
                    "Envoy filter: applyTo for http route class objects cannot have non route configuration match",
                );
            }
            ApplyTo::Cluster if has_object && m.cluster.is_none() => {
                e.add(
                    &mp,
                    "Envoy filter: applyTo for cluster class objects cannot have non cluster match",
                );
            }
            _ => {}
        }
    }
}

pub(super) fn proxy_config(pc: &ProxyConfig, p: &FieldPath, e: &mut Errors) {
    if let Some(c) = pc.concurrency {
        e.at_least_i64(&p.key("concurrency"), i64::from(c), 0);
    }
    e.match_labels_selector(&p.key("selector"), pc.selector.as_ref());
    for (k, v) in &pc.environment_variables {
        e.max_len(&p.key("environmentVariables").key(k), v, 2048);
    }
}
