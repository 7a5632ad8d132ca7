//! VirtualService rules.

use super::Errors;
use super::common::{
    host_subset_of, is_base64, is_dns1123_label, is_header_name, is_ip, is_ip_or_cidr,
    validate_fqdn, validate_wildcard_domain,
};
use crate::error::FieldPath;
use crate::networking::{
    CorsPolicy, Destination, HeaderOperations, Headers, HttpFaultInjection, HttpMatchRequest,
    HttpRedirect, HttpRetry, HttpRewrite, HttpRoute, HttpRouteDestination, L4MatchAttributes,
    Percent, RouteDestination, StringMatch, TcpRoute, TlsRoute, VirtualService,
};
use std::collections::BTreeMap;

const RETRY_ON_POLICIES: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "*",
];

pub(super) fn virtual_service(vs: &VirtualService, ns: &str, p: &FieldPath, e: &mut Errors) {
    let is_delegate = vs.hosts.is_empty();
    if is_delegate && !vs.gateways.is_empty() {
        e.add(
            &p.key("gateways"),
            "delegate virtual service must have no gateways specified",
        );
    }
    let applies_to_mesh = vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh");
    let mut seen = std::collections::BTreeSet::new();
    for (i, host) in vs.hosts.iter().enumerate() {
        let hp = p.key("hosts").index(i);
        if let Err(msg) = validate_wildcard_domain(host) {
            if !is_ip(host) {
                e.add(&hp, msg);
            }
        } else if applies_to_mesh && host == "*" {
            e.add(
                &hp,
                "wildcard host * is not allowed for virtual services bound to the mesh gateway",
            );
        }
        if !seen.insert(host.as_str()) {
            e.add(&hp, format!("duplicate host {host:?} in virtual service"));
        }
    }
    gateway_names(&p.key("gateways"), &vs.gateways, e);
    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        e.add(p, "http, tcp or tls must be provided in virtual service");
    }
    for (i, route) in vs.http.iter().enumerate() {
        http_route(route, is_delegate, &p.key("http").index(i), e);
    }
    for (i, route) in vs.tls.iter().enumerate() {
        tls_route(route, vs, &p.key("tls").index(i), e);
    }
    for (i, route) in vs.tcp.iter().enumerate() {
        tcp_route(route, &p.key("tcp").index(i), e);
    }
    e.export_to(&p.key("exportTo"), ns, &vs.export_to, false);
}

fn gateway_names(p: &FieldPath, names: &[String], e: &mut Errors) {
    for (i, name) in names.iter().enumerate() {
        let gp = p.index(i);
        match name.split_once('/') {
            None => {
                if let Err(msg) = validate_fqdn(name) {
                    e.add(&gp, msg);
                }
            }
            Some((ns, gw)) => {
                if ns.is_empty() || gw.is_empty() {
                    e.add(&gp, "config namespace and gateway name cannot be empty");
                    continue;
                }
                if !is_dns1123_label(ns) {
                    e.add(&gp, format!("invalid value for namespace: {ns:?}"));
                }
                if !is_dns1123_label(gw) {
                    e.add(&gp, format!("invalid value for gateway name: {gw:?}"));
                }
            }
        }
    }
}

fn http_route(r: &HttpRoute, is_delegate: bool, p: &FieldPath, e: &mut Errors) {
    if let Some(d) = &r.delegate {
        if is_delegate {
            e.add(
                &p.key("delegate"),
                "delegate virtual service cannot have delegate",
            );
        }
        match d.name.as_deref() {
            None | Some("") => e.add(&p.key("delegate").key("name"), "delegate name is required"),
            Some(name) if !super::common::is_dns1123_subdomain(name) => e.add(
                &p.key("delegate").key("name"),
                format!("invalid delegate name {name:?}"),
            ),
            Some(_) => {}
        }
        if let Some(ns) = d.namespace.as_deref()
            && !ns.is_empty()
            && !is_dns1123_label(ns)
        {
            e.add(
                &p.key("delegate").key("namespace"),
                format!("invalid delegate namespace {ns:?}"),
            );
        }
        if !r.route.is_empty() || r.redirect.is_some() || r.direct_response.is_some() {
            e.add(
                p,
                "HTTP route cannot contain route, redirect or directResponse when delegate is set",
            );
        }
    } else {
        let has_route = !r.route.is_empty();
        if !has_route && r.redirect.is_none() && r.direct_response.is_none() {
            e.add(
                p,
                "HTTP route, redirect, directResponse or delegate is required",
            );
        }
        if has_route && r.redirect.is_some() {
            e.add(p, "HTTP route cannot contain both route and redirect");
        }
        if has_route && r.direct_response.is_some() {
            e.add(
                p,
                "HTTP route cannot contain both route and direct response",
            );
        }
        if r.redirect.is_some() && r.direct_response.is_some() {
            e.add(
                p,
                "HTTP route cannot contain both redirect and direct response",
            );
        }
    }
    if r.rewrite.is_some() && r.redirect.is_some() {
        e.add(
            p,
            "HTTP route rule cannot contain both rewrite and redirect",
        );
    }
    if r.mirror.is_some() && !r.mirrors.is_empty() {
        e.add(p, "HTTP route cannot contain both mirror and mirrors");
    }
    if let Some(h) = &r.headers {
        headers(h, &p.key("headers"), e);
    }
    for (i, m) in r.r#match.iter().enumerate() {
        http_match(m, &p.key("match").index(i), e);
    }
    http_destinations(&r.route, &p.key("route"), e);
    if let Some(redirect) = &r.redirect {
        http_redirect(redirect, &p.key("redirect"), e);
    }
    if let Some(dr) = &r.direct_response {
        let dp = p.key("directResponse");
        if !(200..=599).contains(&dr.status) {
            e.add(
                &dp.key("status"),
                format!("HTTP status {} is not in range 200-599", dr.status),
            );
        }
        if let Some(body) = &dr.body {
            let bp = dp.key("body");
            if body.string.is_some() && body.bytes.is_some() {
                e.add(&bp, "only one of string or bytes can be set");
            }
            if let Some(b) = &body.bytes
                && !is_base64(b)
            {
                e.add(&bp.key("bytes"), "Invalid value: must be base64 encoded");
            }
            let size = body.string.as_ref().map_or(0, String::len)
                + body.bytes.as_ref().map_or(0, String::len);
            if size > 1024 * 1024 {
                e.add(&bp, "large direct_responses may impact control plane performance, must be less than 1MB");
            }
        }
    }
    if let Some(rw) = &r.rewrite {
        http_rewrite(rw, &p.key("rewrite"), e);
    }
    e.duration_min_1ms(&p.key("timeout"), r.timeout.as_ref());
    if let Some(retries) = &r.retries {
        http_retry(retries, &p.key("retries"), e);
    }
    if let Some(fault) = &r.fault {
        fault_injection(fault, &p.key("fault"), e);
    }
    if let Some(m) = &r.mirror {
        destination(m, &p.key("mirror"), e);
    }
    for (i, m) in r.mirrors.iter().enumerate() {
        let mp = p.key("mirrors").index(i);
        destination(&m.destination, &mp.key("destination"), e);
        if let Some(pct) = &m.percentage {
            percent(pct, &mp.key("percentage"), e);
        }
    }
    if let Some(pct) = r.mirror_percent
        && pct > 100
    {
        e.add(
            &p.key("mirrorPercent"),
            "mirror_percent must have a max value of 100",
        );
    }
    if let Some(pct) = &r.mirror_percentage {
        percent(pct, &p.key("mirrorPercentage"), e);
    }
    if let Some(cors) = &r.cors_policy {
        cors_policy(cors, &p.key("corsPolicy"), e);
    }
}

fn percent(pct: &Percent, p: &FieldPath, e: &mut Errors) {
    if !(0.0..=100.0).contains(&pct.value) {
        e.add(
            &p.key("value"),
            format!("percentage {} is not in range [0, 100]", pct.value),
        );
    }
}

fn header_operations(ops: &HeaderOperations, p: &FieldPath, request: bool, e: &mut Errors) {
    let check = |name: &str, p: &FieldPath, e: &mut Errors| {
        if name.is_empty() {
            e.add(p, "header name cannot be empty");
        } else if let Some(pseudo) = name.strip_prefix(':') {
            if !(request && pseudo.eq_ignore_ascii_case("authority")) {
                e.add(
                    p,
                    format!("invalid header {name:?}: pseudo-headers cannot be modified"),
                );
            }
        } else if !is_header_name(name) {
            e.add(
                p,
                format!("header name {name:?} is not a valid header name"),
            );
        }
    };
    for name in ops.set.keys() {
        check(name, &p.key("set").key(name), e);
    }
    for name in ops.add.keys() {
        check(name, &p.key("add").key(name), e);
    }
    for (i, name) in ops.remove.iter().enumerate() {
        check(name, &p.key("remove").index(i), e);
    }
}

fn headers(h: &Headers, p: &FieldPath, e: &mut Errors) {
    if let Some(req) = &h.request {
        header_operations(req, &p.key("request"), true, e);
    }
    if let Some(resp) = &h.response {
        header_operations(resp, &p.key("response"), false, e);
    }
}

fn string_match(m: Option<&StringMatch>, p: &FieldPath, e: &mut Errors) {
    if let Some(StringMatch::Regex(re)) = m {
        if re.is_empty() {
            e.add(&p.key("regex"), "regex string match should not be empty");
        } else {
            e.regex(&p.key("regex"), re);
        }
    }
}

fn string_match_map(
    m: &BTreeMap<String, Option<StringMatch>>,
    p: &FieldPath,
    header: bool,
    e: &mut Errors,
) {
    for (name, sm) in m {
        let mp = p.key(name);
        if name.is_empty() {
            e.add(&mp, "name cannot be empty");
        } else if header && !name.starts_with("@request.auth.claims") && !is_header_name(name) {
            e.add(
                &mp,
                format!("header name {name:?} is not a valid header name"),
            );
        }
        string_match(sm.as_ref(), &mp, e);
    }
}

fn http_match(m: &HttpMatchRequest, p: &FieldPath, e: &mut Errors) {
    string_match(m.uri.as_ref(), &p.key("uri"), e);
    string_match(m.scheme.as_ref(), &p.key("scheme"), e);
    string_match(m.method.as_ref(), &p.key("method"), e);
    string_match(m.authority.as_ref(), &p.key("authority"), e);
    string_match_map(&m.headers, &p.key("headers"), true, e);
    string_match_map(&m.without_headers, &p.key("withoutHeaders"), true, e);
    string_match_map(&m.query_params, &p.key("queryParams"), false, e);
    if let Some(port) = m.port
        && port != 0
    {
        e.port(&p.key("port"), port);
    }
    e.labels(&p.key("sourceLabels"), &m.source_labels);
    gateway_names(&p.key("gateways"), &m.gateways, e);
    if let Some(ns) = m.source_namespace.as_deref()
        && !ns.is_empty()
        && !is_dns1123_label(ns)
    {
        e.add(
            &p.key("sourceNamespace"),
            format!("invalid sourceNamespace {ns:?}"),
        );
    }
}

/// Istio's `validateDestination`.
pub(super) fn destination(d: &Destination, p: &FieldPath, e: &mut Errors) {
    if d.host == "*" {
        e.add(
            &p.key("host"),
            format!("invalid destination host {}", d.host),
        );
    } else if let Err(msg) = validate_wildcard_domain(&d.host) {
        e.add(&p.key("host"), msg);
    }
    if let Some(subset) = &d.subset {
        if subset.is_empty() {
            e.add(&p.key("subset"), "subset name cannot be empty");
        } else if !is_dns1123_label(subset) {
            e.add(
                &p.key("subset"),
                format!("subset name is invalid: {subset}"),
            );
        }
    }
    if let Some(port) = &d.port {
        e.port(&p.key("port").key("number"), port.number.unwrap_or(0));
    }
}

fn http_destinations(routes: &[HttpRouteDestination], p: &FieldPath, e: &mut Errors) {
    let mut total: i64 = 0;
    for (i, r) in routes.iter().enumerate() {
        let rp = p.index(i);
        destination(&r.destination, &rp.key("destination"), e);
        if let Some(h) = &r.headers {
            headers(h, &rp.key("headers"), e);
        }
        let w = r.weight.unwrap_or(0);
        if w < 0 {
            e.add(&rp.key("weight"), format!("weight {w} < 0"));
        }
        total += i64::from(w);
    }
    if routes.len() > 1 && total == 0 {
        e.add(p, "total destination weight = 0");
    }
}

fn route_destinations(routes: &[RouteDestination], p: &FieldPath, e: &mut Errors) {
    let mut total: i64 = 0;
    for (i, r) in routes.iter().enumerate() {
        let rp = p.index(i);
        destination(&r.destination, &rp.key("destination"), e);
        let w = r.weight.unwrap_or(0);
        if w < 0 {
            e.add(&rp.key("weight"), format!("weight {w} < 0"));
        }
        total += i64::from(w);
    }
    if routes.len() > 1 && total == 0 {
        e.add(p, "total destination weight = 0");
    }
}

fn http_redirect(r: &HttpRedirect, p: &FieldPath, e: &mut Errors) {
    let empty = |s: &Option<String>| s.as_deref().is_none_or(str::is_empty);
    if empty(&r.uri)
        && empty(&r.authority)
        && empty(&r.scheme)
        && empty(&r.prefix_rewrite)
        && r.port.is_none()
        && r.derive_port.is_none()
    {
        e.add(p, "redirect must specify URI, authority, scheme, or port");
    }
    if r.port.is_some() && r.derive_port.is_some() {
        e.add(p, "only one of port or derivePort can be set");
    }
    if let Some(code) = r.redirect_code
        && code != 0
        && !(300..=399).contains(&code)
    {
        e.add(
            &p.key("redirectCode"),
            format!("{code} is not a valid redirect code, must be 3xx"),
        );
    }
    if let Some(scheme) = r.scheme.as_deref()
        && !scheme.is_empty()
        && scheme != "http"
        && scheme != "https"
    {
        e.add(
            &p.key("scheme"),
            r#"invalid redirect scheme, must be "http" or "https""#,
        );
    }
    if let Some(port) = r.port
        && port > 65535
    {
        e.add(
            &p.key("port"),
            format!("redirect port {port} must be in the range 1..65535"),
        );
    }
}

fn http_rewrite(r: &HttpRewrite, p: &FieldPath, e: &mut Errors) {
    let uri = r.uri.as_deref().is_some_and(|s| !s.is_empty());
    let authority = r.authority.as_deref().is_some_and(|s| !s.is_empty());
    if uri && r.uri_regex_rewrite.is_some() {
        e.add(p, "rewrite may only contain one of URI or UriRegexRewrite");
    }
    if !uri && !authority && r.uri_regex_rewrite.is_none() {
        e.add(
            p,
            "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified",
        );
    }
    if let Some(rr) = &r.uri_regex_rewrite {
        let rp = p.key("uriRegexRewrite");
        match (rr.r#match.as_deref(), rr.rewrite.as_deref()) {
            (Some(m), Some(w)) if !m.is_empty() && !w.is_empty() => e.regex(&rp.key("match"), m),
            _ => e.add(
                &rp,
                "UriRegexRewrite requires both Rewrite and Match fields to be specified",
            ),
        }
    }
}

fn http_retry(r: &HttpRetry, p: &FieldPath, e: &mut Errors) {
    if let Some(a) = r.attempts
        && a < 0
    {
        e.add(&p.key("attempts"), "attempts cannot be negative");
    }
    e.duration_min_1ms(&p.key("perTryTimeout"), r.per_try_timeout.as_ref());
    e.duration_min_1ms(&p.key("backoff"), r.backoff.as_ref());
    if let Some(on) = r.retry_on.as_deref()
        && !on.is_empty()
    {
        for policy in on.split(',') {
            let is_status = policy
                .parse::<u16>()
                .is_ok_and(|c| (100..=599).contains(&c));
            if !is_status && !RETRY_ON_POLICIES.contains(&policy) {
                e.add(
                    &p.key("retryOn"),
                    format!("{policy:?} is not a valid retryOn policy"),
                );
            }
        }
    }
}

fn fault_injection(f: &HttpFaultInjection, p: &FieldPath, e: &mut Errors) {
    if f.abort.is_none() && f.delay.is_none() {
        e.add(p, "HTTP fault injection must have an abort and/or a delay");
    }
    if let Some(a) = &f.abort {
        let ap = p.key("abort");
        let set = usize::from(a.http_status.is_some())
            + usize::from(a.grpc_status.is_some())
            + usize::from(a.http2_error.is_some());
        if set > 1 {
            e.add(
                &ap,
                "only one of httpStatus, grpcStatus or http2Error can be set",
            );
        }
        if let Some(pct) = &a.percentage {
            percent(pct, &ap.key("percentage"), e);
        }
        if let Some(status) = a.http_status
            && !(200..=599).contains(&status)
        {
            e.add(
                &ap.key("httpStatus"),
                format!("HTTP status {status} is not in range 200-599"),
            );
        }
        if a.http2_error.is_some() {
            e.add(
                &ap.key("http2Error"),
                "HTTP/2 abort fault injection not supported yet",
            );
        }
    }
    if let Some(d) = &f.delay {
        let dp = p.key("delay");
        if d.fixed_delay.is_some() && d.exponential_delay.is_some() {
            e.add(&dp, "only one of fixedDelay or exponentialDelay can be set");
        }
        if let Some(pct) = &d.percentage {
            percent(pct, &dp.key("percentage"), e);
        }
        if let Some(pct) = d.percent
            && !(0..=100).contains(&pct)
        {
            e.add(
                &dp.key("percent"),
                format!("percentage {pct} is not in range [0, 100]"),
            );
        }
        e.duration_min_1ms(&dp.key("fixedDelay"), d.fixed_delay.as_ref());
        e.duration_min_1ms(&dp.key("exponentialDelay"), d.exponential_delay.as_ref());
        if d.exponential_delay.is_some() {
            e.add(
                &dp.key("exponentialDelay"),
                "exponentialDelay not supported yet",
            );
        }
    }
}

fn cors_policy(c: &CorsPolicy, p: &FieldPath, e: &mut Errors) {
    for (i, o) in c.allow_origins.iter().enumerate() {
        string_match(Some(o), &p.key("allowOrigins").index(i), e);
    }
    for (i, m) in c.allow_methods.iter().enumerate() {
        if !HTTP_METHODS.contains(&m.as_str()) {
            e.add(
                &p.key("allowMethods").index(i),
                format!("{m:?} is not a supported HTTP method"),
            );
        }
    }
    for (field, list) in [
        ("allowHeaders", &c.allow_headers),
        ("exposeHeaders", &c.expose_headers),
    ] {
        for (i, h) in list.iter().enumerate() {
            if h != "*" && !is_header_name(h) {
                e.add(
                    &p.key(field).index(i),
                    format!("header name {h:?} is not a valid header name"),
                );
            }
        }
    }
    e.duration_min_1ms(&p.key("maxAge"), c.max_age.as_ref());
}

fn l4_match(m: &L4MatchAttributes, p: &FieldPath, e: &mut Errors) {
    for (i, s) in m.destination_subnets.iter().enumerate() {
        if !is_ip_or_cidr(s) {
            e.add(
                &p.key("destinationSubnets").index(i),
                format!("invalid destination subnet {s:?}"),
            );
        }
    }
    if let Some(s) = &m.source_subnet
        && !s.is_empty()
        && !is_ip_or_cidr(s)
    {
        e.add(
            &p.key("sourceSubnet"),
            format!("invalid source subnet {s:?}"),
        );
    }
    if let Some(port) = m.port
        && port != 0
    {
        e.port(&p.key("port"), port);
    }
    e.labels(&p.key("sourceLabels"), &m.source_labels);
    gateway_names(&p.key("gateways"), &m.gateways, e);
}

fn tcp_route(r: &TcpRoute, p: &FieldPath, e: &mut Errors) {
    for (i, m) in r.r#match.iter().enumerate() {
        l4_match(m, &p.key("match").index(i), e);
    }
    if r.route.is_empty() {
        e.add(&p.key("route"), "TCP route is required");
    }
    route_destinations(&r.route, &p.key("route"), e);
}

fn tls_route(r: &TlsRoute, vs: &VirtualService, p: &FieldPath, e: &mut Errors) {
    if r.r#match.is_empty() {
        e.add(
            &p.key("match"),
            "TLS route must have at least one match condition",
        );
    }
    for (i, m) in r.r#match.iter().enumerate() {
        let mp = p.key("match").index(i);
        if m.sni_hosts.is_empty() {
            e.add(
                &mp.key("sniHosts"),
                "TLS match must have at least one SNI host",
            );
        }
        for (j, sni) in m.sni_hosts.iter().enumerate() {
            let sp = mp.key("sniHosts").index(j);
            if let Err(msg) = validate_wildcard_domain(sni) {
                if !is_ip(sni) {
                    e.add(&sp, msg);
                }
                continue;
            }
            if !vs.hosts.is_empty() && !vs.hosts.iter().any(|h| host_subset_of(sni, h)) {
                e.add(
                    &sp,
                    format!(
                        "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                        vs.hosts.join(", ")
                    ),
                );
            }
        }
        let l4 = L4MatchAttributes {
            destination_subnets: m.destination_subnets.clone(),
            port: m.port,
            source_subnet: None,
            source_labels: m.source_labels.clone(),
            gateways: m.gateways.clone(),
            source_namespace: m.source_namespace.clone(),
        };
        l4_match(&l4, &mp, e);
    }
    if r.route.is_empty() {
        e.add(&p.key("route"), "TLS route is required");
    }
    route_destinations(&r.route, &p.key("route"), e);
}
