//! Gateway and Sidecar rules (they share server TLS settings and the
//! `namespace/host` syntax).

use super::Errors;
use super::common::{
    is_dns1123_label, is_ip, parse_protocol, protocol_is_http, protocol_is_tls, uds_address,
    validate_wildcard_domain,
};
use super::destination_rule::connection_pool;
use super::virtual_service::destination;
use crate::error::FieldPath;
use crate::networking::{
    CaptureMode, Gateway, OutboundTrafficPolicyMode, Server, ServerTlsMode, ServerTlsSettings,
    Sidecar, SidecarPort, TlsProtocol,
};
use std::collections::BTreeSet;

pub(super) fn gateway(gw: &Gateway, name: &str, p: &FieldPath, e: &mut Errors) {
    if !name.is_empty() && !is_dns1123_label(name) {
        e.add(
            &FieldPath::root().key("metadata").key("name"),
            format!("invalid gateway name: {name:?}"),
        );
    }
    if gw.servers.is_empty() {
        e.add(&p.key("servers"), "gateway must have at least one server");
    }
    let mut port_names = BTreeSet::new();
    for (i, s) in gw.servers.iter().enumerate() {
        let sp = p.key("servers").index(i);
        server(s, &sp, e);
        if !port_names.insert(s.port.name.as_str()) {
            e.add(
                &sp.key("port").key("name"),
                format!(
                    "port names in servers must be unique: duplicate name {}",
                    s.port.name
                ),
            );
        }
    }
    e.labels(&p.key("selector"), &gw.selector);
}

fn server(s: &Server, p: &FieldPath, e: &mut Errors) {
    if s.hosts.is_empty() {
        e.add(
            &p.key("hosts"),
            "server config must contain at least one host",
        );
    }
    for (i, host) in s.hosts.iter().enumerate() {
        namespace_slash_host(host, true, &p.key("hosts").index(i), e);
    }
    let pp = p.key("port");
    let bind = s.bind.as_deref().unwrap_or("");
    let mut port_ok = true;
    if parse_protocol(&s.port.protocol).is_none() {
        port_ok = false;
        e.add(
            &pp.key("protocol"),
            format!(
                "invalid protocol {:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP",
                s.port.protocol
            ),
        );
    }
    if s.port.number > 0 || !bind.starts_with("unix://") {
        if s.port.number == 0 || s.port.number > 65535 {
            port_ok = false;
        }
        e.port(&pp.key("number"), s.port.number);
    }
    if s.port.name.is_empty() {
        port_ok = false;
        e.add(&pp.key("name"), "port name must be set");
    }
    if let Some(bind) = s.bind.as_deref() {
        if bind.starts_with("unix://") {
            if s.port.number != 0 {
                e.add(
                    &p.key("bind"),
                    format!(
                        "port number must be 0 for unix domain socket: {}",
                        s.port.number
                    ),
                );
            }
            uds_address(e, &p.key("bind"), bind);
        } else if !bind.is_empty() && !is_ip(bind) {
            e.add(
                &p.key("bind"),
                format!("{bind:?} is not a valid IP address"),
            );
        }
    }
    if let Some(tls) = &s.tls {
        server_tls(tls, &p.key("tls"), e);
    }
    if port_ok {
        if protocol_is_tls(&s.port.protocol) && s.tls.is_none() {
            e.add(p, "server must have TLS settings for HTTPS/TLS protocols");
        } else if let Some(tls) = &s.tls
            && !protocol_is_tls(&s.port.protocol)
            && protocol_is_http(&s.port.protocol)
        {
            let passthrough = matches!(
                tls.mode,
                None | Some(ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough)
            );
            let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
            if !passthrough
                || set(&tls.ca_certificates)
                || set(&tls.private_key)
                || set(&tls.server_certificate)
            {
                e.add(
                    p,
                    "server cannot have TLS settings for plain text HTTP ports",
                );
            }
        }
    }
}

/// Server TLS settings (Gateway servers and Sidecar ingress listeners).
pub(super) fn server_tls(tls: &ServerTlsSettings, p: &FieldPath, e: &mut Errors) {
    // CRD rules.
    let has_names = !tls.credential_names.is_empty();
    let has_certs = !tls.tls_certificates.is_empty();
    let has_name = tls.credential_name.is_some();
    if usize::from(has_certs) + usize::from(has_names) > 1 {
        e.add(
            p,
            "only one of credentialNames or tlsCertificates can be set",
        );
    }
    if usize::from(has_name) + usize::from(has_names) > 1 {
        e.add(
            p,
            "only one of credentialName or credentialNames can be set",
        );
    }
    if usize::from(has_name) + usize::from(has_certs) > 1 {
        e.add(
            p,
            "only one of credentialName or tlsCertificates can be set",
        );
    }
    e.max_items(&p.key("credentialNames"), &tls.credential_names, 2);
    e.max_items(&p.key("tlsCertificates"), &tls.tls_certificates, 2);

    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    match tls.mode {
        Some(ServerTlsMode::IstioMutual) => {
            if set(&tls.server_certificate) {
                e.add(
                    p,
                    "ISTIO_MUTUAL TLS cannot have associated server certificate",
                );
            }
            if set(&tls.private_key) {
                e.add(p, "ISTIO_MUTUAL TLS cannot have associated private key");
            }
            if set(&tls.ca_certificates) {
                e.add(p, "ISTIO_MUTUAL TLS cannot have associated CA bundle");
            }
            if set(&tls.credential_name) || has_names {
                e.add(p, "ISTIO_MUTUAL TLS cannot have associated credentialName");
            }
        }
        Some(
            mode @ (ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual),
        ) => {
            let remote = set(&tls.credential_name) || has_names;
            if !remote && !has_certs {
                let name = if mode == ServerTlsMode::Simple {
                    "SIMPLE"
                } else {
                    "MUTUAL"
                };
                if !set(&tls.server_certificate) {
                    e.add(p, format!("{name} TLS requires a server certificate"));
                }
                if !set(&tls.private_key) {
                    e.add(p, format!("{name} TLS requires a private key"));
                }
                if mode != ServerTlsMode::Simple
                    && !set(&tls.ca_certificates)
                    && !set(&tls.ca_cert_credential_name)
                {
                    e.add(p, "MUTUAL TLS requires a client CA bundle");
                }
            }
        }
        _ => {}
    }
    if let (Some(min), Some(max)) = (tls.min_protocol_version, tls.max_protocol_version)
        && min != TlsProtocol::TlsAuto
        && max != TlsProtocol::TlsAuto
        && max < min
    {
        e.add(
            p,
            format!("Tls max version {max} must be greater than or equal to min version {min}"),
        );
    }
}

/// Istio's `validateNamespaceSlashWildcardHostname`.
fn namespace_slash_host(host: &str, is_gateway: bool, p: &FieldPath, e: &mut Errors) {
    let Some((ns, dns)) = host.split_once('/') else {
        if is_gateway {
            host_part(host, true, p, e);
        } else {
            e.add(p, "host must be of form namespace/dnsName");
        }
        return;
    };
    if ns.is_empty() || dns.is_empty() {
        e.add(
            p,
            "config namespace and dnsName in host entry cannot be empty",
        );
    }
    let ns_ok = ns == "*" || ns == "." || (!is_gateway && ns == "~") || is_dns1123_label(ns);
    if !ns_ok && !ns.is_empty() {
        let what = if is_gateway { "gateway" } else { "sidecar" };
        e.add(p, format!("invalid namespace value {ns:?} in {what}"));
    }
    if !dns.is_empty() {
        host_part(dns, is_gateway, p, e);
    }
}

fn host_part(host: &str, is_gateway: bool, p: &FieldPath, e: &mut Errors) {
    if host != "*" && !host.contains('.') {
        e.add(p, "short names (non FQDN) are not allowed");
    }
    if let Err(msg) = validate_wildcard_domain(host)
        && (!is_gateway || !is_ip(host))
    {
        e.add(p, msg);
    }
}

pub(super) fn sidecar(sc: &Sidecar, p: &FieldPath, e: &mut Errors) {
    if let Some(sel) = &sc.workload_selector {
        let sp = p.key("workloadSelector");
        if sel.labels.is_empty() {
            e.add(&sp, "sidecar: workloadSelector cannot have empty labels");
        }
        e.labels_selector(&sp, &sel.labels);
        e.labels(&sp.key("labels"), &sel.labels);
    }
    if sc.egress.is_empty()
        && sc.ingress.is_empty()
        && sc.outbound_traffic_policy.is_none()
        && sc.inbound_connection_pool.is_none()
    {
        e.add(p, "sidecar: empty configuration provided");
        return;
    }
    let mut ports = BTreeSet::new();
    for (i, ing) in sc.ingress.iter().enumerate() {
        let ip = p.key("ingress").index(i);
        let port = ing.port.number.unwrap_or(0);
        if let Some(bind) = ing.bind.as_deref()
            && !bind.is_empty()
            && !is_ip(bind)
        {
            e.add(
                &ip.key("bind"),
                format!("{bind:?} is not a valid IP address"),
            );
        }
        sidecar_port(&ing.port, &ip.key("port"), e);
        e.port(&ip.key("port").key("number"), port);
        if !ports.insert(port) {
            e.add(
                &ip.key("port"),
                "sidecar: ports on IP bound listeners must be unique",
            );
        }
        if let Some(ep) = ing.default_endpoint.as_deref()
            && !ep.is_empty()
        {
            default_endpoint(ep, &ip.key("defaultEndpoint"), e);
        }
        if let Some(tls) = &ing.tls {
            let tp = ip.key("tls");
            if let Some(
                mode @ (ServerTlsMode::IstioMutual
                | ServerTlsMode::AutoPassthrough
                | ServerTlsMode::Passthrough),
            ) = tls.mode
            {
                e.add(
                    &tp.key("mode"),
                    format!(
                        "configuration is invalid: cannot set mode to {mode} in sidecar ingress tls"
                    ),
                );
            }
            if tls.credential_name.is_some() || !tls.credential_names.is_empty() {
                e.add(
                    &tp,
                    "sidecar: credentialName is not supported in sidecar ingress tls",
                );
            }
            server_tls(tls, &tp, e);
        }
        if let Some(cp) = &ing.connection_pool {
            connection_pool(cp, &ip.key("connectionPool"), e);
        }
    }
    let mut ports = BTreeSet::new();
    let mut uds = BTreeSet::new();
    let mut catch_all = false;
    let last = sc.egress.len().saturating_sub(1);
    for (i, eg) in sc.egress.iter().enumerate() {
        let ep = p.key("egress").index(i);
        match &eg.port {
            None => {
                if catch_all {
                    e.add(
                        &ep,
                        "sidecar: egress can have only one listener with empty port",
                    );
                } else if i == last {
                    catch_all = true;
                } else {
                    e.add(
                        &ep,
                        "sidecar: the egress listener with empty port should be the last listener in the list",
                    );
                }
            }
            Some(port) => {
                let bind = eg.bind.as_deref().unwrap_or("");
                let number = port.number.unwrap_or(0);
                sidecar_port(port, &ep.key("port"), e);
                if number == 0 {
                    if bind.starts_with("unix://") {
                        uds_address(e, &ep.key("bind"), bind);
                    } else {
                        e.add(
                            &ep.key("bind"),
                            "sidecar: ports with 0 value must have a unix domain socket bind address",
                        );
                    }
                    if !matches!(
                        eg.capture_mode,
                        None | Some(CaptureMode::Default | CaptureMode::None)
                    ) {
                        e.add(
                            &ep.key("captureMode"),
                            "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
                        );
                    }
                    if !uds.insert(bind) {
                        e.add(
                            &ep.key("bind"),
                            "sidecar: unix domain socket values for listeners must be unique",
                        );
                    }
                } else {
                    if !bind.is_empty() && !is_ip(bind) {
                        e.add(
                            &ep.key("bind"),
                            format!("{bind:?} is not a valid IP address"),
                        );
                    }
                    e.port(&ep.key("port").key("number"), number);
                    if !ports.insert(number) {
                        e.add(
                            &ep.key("port"),
                            "sidecar: ports on IP bound listeners must be unique",
                        );
                    }
                }
            }
        }
        if eg.hosts.is_empty() {
            e.add(
                &ep.key("hosts"),
                "sidecar: egress listener must contain at least one host",
            );
        }
        for (j, host) in eg.hosts.iter().enumerate() {
            namespace_slash_host(host, false, &ep.key("hosts").index(j), e);
        }
    }
    if let Some(otp) = &sc.outbound_traffic_policy
        && let Some(proxy) = &otp.egress_proxy
    {
        let op = p.key("outboundTrafficPolicy");
        if otp.mode != Some(OutboundTrafficPolicyMode::AllowAny) {
            e.add(
                &op,
                "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
            );
        }
        destination(proxy, &op.key("egressProxy"), e);
        if proxy.port.is_none() {
            e.add(
                &op.key("egressProxy").key("port"),
                "sidecar: egress_proxy port must be non-nil",
            );
        }
    }
    if let Some(cp) = &sc.inbound_connection_pool {
        connection_pool(cp, &p.key("inboundConnectionPool"), e);
    }
}

fn sidecar_port(port: &SidecarPort, p: &FieldPath, e: &mut Errors) {
    // Istio's examples always name sidecar ports, but an unnamed port is
    // usable, so only a malformed name is refused.
    let name = port.name.as_deref().unwrap_or("");
    if !name.is_empty() && !is_dns1123_label(name) {
        e.add(&p.key("name"), format!("invalid port name: {name}"));
    }
    if let Some(proto) = port.protocol.as_deref()
        && !proto.is_empty()
        && parse_protocol(proto).is_none()
    {
        e.add(
            &p.key("protocol"),
            format!("unrecognized protocol {proto:?}"),
        );
    }
}

fn default_endpoint(ep: &str, p: &FieldPath, e: &mut Errors) {
    if ep.starts_with("unix://") {
        uds_address(e, p, ep);
        return;
    }
    let Some((host, port)) = ep.rsplit_once(':') else {
        e.add(p, format!("address {ep}: missing port in address"));
        return;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if !matches!(host, "" | "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
        e.add(
            p,
            "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath, or unset",
        );
    }
    match port.parse::<u32>() {
        Ok(n) => e.port(p, n),
        Err(_) => e.add(
            p,
            format!("sidecar: defaultEndpoint port ({port}) is not a number"),
        ),
    }
}
