//! DestinationRule rules, and the traffic settings Sidecar shares.

use super::Errors;
use super::common::{is_dns1123_label, is_ip, validate_fqdn, validate_wildcard_domain};
use crate::error::FieldPath;
use crate::networking::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRule, H2UpgradePolicy,
    LoadBalancerSettings, LocalityLoadBalancerSetting, OutlierDetection, PortTrafficPolicy,
    TrafficPolicy, TunnelSettings,
};
use std::collections::BTreeSet;

pub(super) fn destination_rule(dr: &DestinationRule, ns: &str, p: &FieldPath, e: &mut Errors) {
    if let Err(msg) = validate_wildcard_domain(&dr.host) {
        e.add(&p.key("host"), msg);
    }
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy(tp, &p.key("trafficPolicy"), e);
    }
    let mut names = BTreeSet::new();
    for (i, subset) in dr.subsets.iter().enumerate() {
        let sp = p.key("subsets").index(i);
        if subset.name.is_empty() {
            e.add(&sp.key("name"), "subset name cannot be empty");
        } else if !is_dns1123_label(&subset.name) {
            e.add(
                &sp.key("name"),
                format!("subset name is invalid: {}", subset.name),
            );
        }
        if !names.insert(subset.name.as_str()) {
            e.add(
                &sp.key("name"),
                format!("duplicate subset names: {}", subset.name),
            );
        }
        e.labels(&sp.key("labels"), &subset.labels);
        if let Some(tp) = &subset.traffic_policy {
            traffic_policy(tp, &sp.key("trafficPolicy"), e);
        }
    }
    e.export_to(&p.key("exportTo"), ns, &dr.export_to, false);
    if let Some(sel) = &dr.workload_selector {
        e.match_labels_selector(&p.key("workloadSelector"), Some(sel));
        if !dr.export_to.is_empty() && !dr.export_to.iter().all(|x| x == "." || x == ns) {
            e.add(
                &p.key("exportTo"),
                "destination rule with workload selector cannot have exportTo beyond current namespace",
            );
        }
    }
}

fn traffic_policy(tp: &TrafficPolicy, p: &FieldPath, e: &mut Errors) {
    if tp.load_balancer.is_none()
        && tp.connection_pool.is_none()
        && tp.outlier_detection.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none()
    {
        e.add(p, "traffic policy must have at least one field");
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        e.add(
            p,
            "tunnel and proxyProtocol must not be specified simultaneously",
        );
    }
    if let Some(lb) = &tp.load_balancer {
        load_balancer(lb, &p.key("loadBalancer"), e);
    }
    if let Some(cp) = &tp.connection_pool {
        connection_pool(cp, &p.key("connectionPool"), e);
    }
    if let Some(od) = &tp.outlier_detection {
        outlier_detection(od, &p.key("outlierDetection"), e);
    }
    if let Some(tls) = &tp.tls {
        client_tls(tls, &p.key("tls"), e);
    }
    let pp = p.key("portLevelSettings");
    e.max_items(&pp, &tp.port_level_settings, 4096);
    let mut ports = BTreeSet::new();
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        port_traffic_policy(pl, &pp.index(i), e);
        if let Some(n) = pl.port.and_then(|p| p.number)
            && !ports.insert(n)
        {
            e.add(
                &pp.index(i).key("port"),
                format!("duplicate port level setting for port {n}"),
            );
        }
    }
    if let Some(t) = &tp.tunnel {
        tunnel(t, &p.key("tunnel"), e);
    }
    if let Some(rb) = &tp.retry_budget {
        let rp = p.key("retryBudget");
        if let Some(pct) = rb.percent {
            e.at_least_f64(&rp.key("percent"), pct, 0.0);
            e.at_most_f64(&rp.key("percent"), pct, 100.0);
        }
        e.duration_syntax(&rp.key("budgetInterval"), rb.budget_interval.as_ref());
    }
}

fn port_traffic_policy(pl: &PortTrafficPolicy, p: &FieldPath, e: &mut Errors) {
    match pl.port {
        None => e.add(&p.key("port"), "portTrafficPolicy must have valid port"),
        Some(sel) => e.port(&p.key("port").key("number"), sel.number.unwrap_or(0)),
    }
    if pl.load_balancer.is_none()
        && pl.connection_pool.is_none()
        && pl.outlier_detection.is_none()
        && pl.tls.is_none()
    {
        e.add(p, "port traffic policy must have at least one field");
        return;
    }
    if let Some(lb) = &pl.load_balancer {
        load_balancer(lb, &p.key("loadBalancer"), e);
    }
    if let Some(cp) = &pl.connection_pool {
        connection_pool(cp, &p.key("connectionPool"), e);
    }
    if let Some(od) = &pl.outlier_detection {
        outlier_detection(od, &p.key("outlierDetection"), e);
    }
    if let Some(tls) = &pl.tls {
        client_tls(tls, &p.key("tls"), e);
    }
}

fn load_balancer(lb: &LoadBalancerSettings, p: &FieldPath, e: &mut Errors) {
    let set = usize::from(lb.simple.is_some())
        + usize::from(lb.consistent_hash.is_some())
        + usize::from(lb.backend_utilization.is_some());
    if set > 1 {
        e.add(
            p,
            "only one of simple, consistentHash or backendUtilization can be set",
        );
    }
    if let Some(ch) = &lb.consistent_hash {
        let cp = p.key("consistentHash");
        let keys = usize::from(ch.http_header_name.is_some())
            + usize::from(ch.http_cookie.is_some())
            + usize::from(ch.use_source_ip.is_some())
            + usize::from(ch.http_query_parameter_name.is_some());
        if keys > 1 {
            e.add(
                &cp,
                "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName can be set",
            );
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            e.add(&cp, "only one of ringHash or maglev can be set");
        }
        if let Some(cookie) = &ch.http_cookie {
            let hp = cp.key("httpCookie");
            if cookie.name.is_empty() {
                e.add(&hp.key("name"), "name required for HttpCookie");
            }
            e.duration_syntax(&hp.key("ttl"), cookie.ttl.as_ref());
            for (i, a) in cookie.attributes.iter().enumerate() {
                if a.name.is_empty() {
                    e.add(
                        &hp.key("attributes").index(i).key("name"),
                        "cookie attribute name cannot be empty",
                    );
                }
            }
        }
    }
    if let Some(bu) = &lb.backend_utilization {
        let bp = p.key("backendUtilization");
        e.duration_syntax(
            &bp.key("weightExpirationPeriod"),
            bu.weight_expiration_period.as_ref(),
        );
        e.duration_syntax(
            &bp.key("weightUpdatePeriod"),
            bu.weight_update_period.as_ref(),
        );
        e.duration_syntax(
            &bp.key("weightStabilizationPeriod"),
            bu.weight_stabilization_period.as_ref(),
        );
    }
    if let Some(loc) = &lb.locality_lb_setting {
        locality_lb(loc, &p.key("localityLbSetting"), e);
    }
    if let Some(z) = &lb.zone_aware_lb_setting
        && let Some(min) = z.min_cluster_size
        && min < 1
    {
        e.add(
            &p.key("zoneAwareLbSetting").key("minClusterSize"),
            format!("Invalid value: {min}: should be greater than or equal to 1"),
        );
    }
    e.duration_min_1ms(
        &p.key("warmupDurationSecs"),
        lb.warmup_duration_secs.as_ref(),
    );
    if let Some(w) = &lb.warmup {
        let wp = p.key("warmup");
        e.duration_min_1ms(&wp.key("duration"), Some(&w.duration));
        if let Some(min) = w.minimum_percent {
            e.at_least_f64(&wp.key("minimumPercent"), min, 0.0);
            e.at_most_f64(&wp.key("minimumPercent"), min, 100.0);
        }
        if let Some(a) = w.aggression {
            e.at_least_f64(&wp.key("aggression"), a, 0.0);
        }
    }
}

fn locality_lb(lb: &LocalityLoadBalancerSetting, p: &FieldPath, e: &mut Errors) {
    if !lb.distribute.is_empty() && !lb.failover.is_empty() {
        e.add(
            p,
            "can not simultaneously specify 'distribute' and 'failover'",
        );
    }
    for (i, d) in lb.distribute.iter().enumerate() {
        let dp = p.key("distribute").index(i);
        let mut total: u64 = 0;
        for (loc, w) in &d.to {
            if *w == 0 || *w > 100 {
                e.add(
                    &dp.key("to").key(loc),
                    "locality weight must be in range [1, 100]",
                );
            }
            total += u64::from(*w);
        }
        if total != 100 {
            e.add(
                &dp.key("to"),
                format!("total locality weight {total} != 100"),
            );
        }
    }
    for (i, f) in lb.failover.iter().enumerate() {
        let fp = p.key("failover").index(i);
        let from = f.from.as_deref().unwrap_or("");
        let to = f.to.as_deref().unwrap_or("");
        if from == to {
            e.add(
                &fp,
                "locality lb failover settings must specify different regions",
            );
        }
        if from.contains('/') || to.contains('/') {
            e.add(&fp, "locality lb failover only specify region");
        }
        if from.contains('*') || to.contains('*') {
            e.add(
                &fp,
                "locality lb failover region should not contain '*' wildcard",
            );
        }
    }
}

/// Shared with Sidecar's `inboundConnectionPool`.
pub(super) fn connection_pool(cp: &ConnectionPoolSettings, p: &FieldPath, e: &mut Errors) {
    if cp.http.is_none() && cp.tcp.is_none() {
        e.add(p, "connection pool must have at least one field");
        return;
    }
    if let Some(h) = &cp.http {
        let hp = p.key("http");
        for (field, v, what) in [
            (
                "http1MaxPendingRequests",
                h.http1_max_pending_requests,
                "http1 max pending requests",
            ),
            (
                "http2MaxRequests",
                h.http2_max_requests,
                "http2 max requests",
            ),
            (
                "maxRequestsPerConnection",
                h.max_requests_per_connection,
                "max requests per connection",
            ),
            ("maxRetries", h.max_retries, "max retries"),
            (
                "maxConcurrentStreams",
                h.max_concurrent_streams,
                "max concurrent streams",
            ),
        ] {
            if v.is_some_and(|v| v < 0) {
                e.add(&hp.key(field), format!("{what} must be non-negative"));
            }
        }
        e.duration_min_1ms(&hp.key("idleTimeout"), h.idle_timeout.as_ref());
        if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
            && h.use_client_protocol == Some(true)
        {
            e.add(
                &hp,
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
            );
        }
        if let Some(ka) = &h.http2_keep_alive {
            e.duration_min_1ms(
                &hp.key("http2KeepAlive").key("interval"),
                ka.interval.as_ref(),
            );
            e.duration_min_1ms(
                &hp.key("http2KeepAlive").key("timeout"),
                ka.timeout.as_ref(),
            );
        }
    }
    if let Some(t) = &cp.tcp {
        let tp = p.key("tcp");
        if t.max_connections.is_some_and(|v| v < 0) {
            e.add(
                &tp.key("maxConnections"),
                "max connections must be non-negative",
            );
        }
        e.duration_min_1ms(&tp.key("connectTimeout"), t.connect_timeout.as_ref());
        e.duration_min_1ms(
            &tp.key("maxConnectionDuration"),
            t.max_connection_duration.as_ref(),
        );
        e.duration_syntax(&tp.key("idleTimeout"), t.idle_timeout.as_ref());
        if let Some(ka) = &t.tcp_keepalive {
            e.duration_min_1ms(&tp.key("tcpKeepalive").key("time"), ka.time.as_ref());
            e.duration_min_1ms(
                &tp.key("tcpKeepalive").key("interval"),
                ka.interval.as_ref(),
            );
        }
    }
}

fn outlier_detection(od: &OutlierDetection, p: &FieldPath, e: &mut Errors) {
    e.duration_min_1ms(&p.key("baseEjectionTime"), od.base_ejection_time.as_ref());
    e.duration_min_1ms(&p.key("interval"), od.interval.as_ref());
    if od.consecutive_errors.is_some_and(|v| v < 0) {
        e.add(
            &p.key("consecutiveErrors"),
            "outlier detection consecutive errors cannot be negative",
        );
    }
    for (field, v) in [
        ("maxEjectionPercent", od.max_ejection_percent),
        ("minHealthPercent", od.min_health_percent),
    ] {
        if let Some(v) = v
            && !(0..=100).contains(&v)
        {
            e.add(
                &p.key(field),
                format!("percentage {v} is not in range [0, 100]"),
            );
        }
    }
    for (i, code) in od.outlier_detection_http_error_codes.iter().enumerate() {
        if !(100..=599).contains(code) {
            e.add(
                &p.key("outlierDetectionHttpErrorCodes").index(i),
                format!("Invalid value: {code}: should be in range [100, 599]"),
            );
        }
    }
}

fn client_tls(tls: &ClientTlsSettings, p: &FieldPath, e: &mut Errors) {
    let set = |s: &Option<String>| s.as_deref().is_some_and(|v| !v.is_empty());
    let credential = set(&tls.credential_name);
    let certs = set(&tls.client_certificate) || set(&tls.private_key) || set(&tls.ca_certificates);
    match tls.mode {
        Some(ClientTlsMode::IstioMutual) if certs || credential => {
            e.add(
                p,
                "cannot specify client certificates or CA certificate with ISTIO_MUTUAL mode",
            );
        }
        // With credentialName the certificates come from a secret.
        Some(ClientTlsMode::Simple | ClientTlsMode::Mutual)
            if credential && (certs || set(&tls.ca_crl)) =>
        {
            e.add(
                p,
                "cannot specify client certificates or CA certificate or CA CRL if credentialName is set",
            );
        }
        Some(ClientTlsMode::Mutual) if !credential => {
            if !set(&tls.client_certificate) {
                e.add(
                    &p.key("clientCertificate"),
                    "client certificate required for mutual tls",
                );
            }
            if !set(&tls.private_key) {
                e.add(&p.key("privateKey"), "private key required for mutual tls");
            }
        }
        _ => {}
    }
}

fn tunnel(t: &TunnelSettings, p: &FieldPath, e: &mut Errors) {
    if let Some(proto) = t.protocol.as_deref()
        && !proto.is_empty()
        && proto != "CONNECT"
        && proto != "POST"
    {
        e.add(
            &p.key("protocol"),
            r#"tunnel protocol must be "CONNECT" or "POST""#,
        );
    }
    if let Err(msg) = validate_fqdn(&t.target_host)
        && !is_ip(&t.target_host)
    {
        e.add(
            &p.key("targetHost"),
            format!("tunnel target host must be valid FQDN or IP address: {msg}"),
        );
    }
    e.port(&p.key("targetPort"), t.target_port);
}
