//! ServiceEntry, WorkloadEntry and WorkloadGroup rules.

use super::Errors;
use super::common::{
    is_ip, is_ip_or_cidr, parse_protocol, uds_address, validate_fqdn, validate_wildcard_domain,
};
use crate::error::FieldPath;
use crate::networking::{ReadinessProbe, Resolution, ServiceEntry, WorkloadEntry, WorkloadGroup};
use regex::Regex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

static PORT_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new("^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$").unwrap_or_else(|e| panic!("{e}"))
});
static PROBE_HEADER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("^[-_A-Za-z0-9]+$").unwrap_or_else(|e| panic!("{e}")));

pub(super) fn service_entry(se: &ServiceEntry, ns: &str, p: &FieldPath, e: &mut Errors) {
    // CRD rules on the spec object.
    if se.workload_selector.is_some() && !se.endpoints.is_empty() {
        e.add(p, "only one of WorkloadSelector or Endpoints can be set");
    }
    let resolution = se.resolution.unwrap_or(Resolution::None);
    if se.addresses.iter().any(|a| a.contains('/'))
        && !matches!(resolution, Resolution::Static | Resolution::None)
    {
        e.add(
            p,
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        );
    }
    if resolution == Resolution::None && !se.endpoints.is_empty() {
        e.add(p, "NONE mode cannot set endpoints");
    }
    if se.resolution == Some(Resolution::DnsRoundRobin) && se.endpoints.len() > 1 {
        e.add(p, "DNS_ROUND_ROBIN mode cannot have multiple endpoints");
    }

    let hp = p.key("hosts");
    if se.hosts.is_empty() {
        e.add(&hp, "Invalid value: 0: should have at least 1 items");
    }
    e.max_items(&hp, &se.hosts, 256);
    for (i, host) in se.hosts.iter().enumerate() {
        if host == "*" {
            e.add(&hp.index(i), "hostname cannot be wildcard");
        } else if let Err(msg) = validate_wildcard_domain(host) {
            e.add(&hp.index(i), msg);
        }
    }

    let ap = p.key("addresses");
    e.max_items(&ap, &se.addresses, 256);
    for (i, addr) in se.addresses.iter().enumerate() {
        e.max_len(&ap.index(i), addr, 64);
        if !is_ip_or_cidr(addr) {
            e.add(
                &ap.index(i),
                format!("invalid address {addr:?}: expected an IP or CIDR"),
            );
        }
    }

    let pp = p.key("ports");
    e.max_items(&pp, &se.ports, 256);
    let mut names = BTreeSet::new();
    let mut numbers = BTreeMap::new();
    for (i, port) in se.ports.iter().enumerate() {
        let ip = pp.index(i);
        if !names.insert(port.name.as_str()) {
            e.add(
                &ip,
                format!("Duplicate value: {{\"name\":{:?}}}", port.name),
            );
        }
        *numbers.entry(port.number).or_insert(0usize) += 1;
        e.max_len(&ip.key("name"), &port.name, 256);
        if port.name.is_empty() {
            e.add(&ip.key("name"), "port name must be set");
        }
        e.port_cel(&ip.key("number"), port.number);
        if let Some(t) = port.target_port {
            e.port_cel(&ip.key("targetPort"), t);
        }
        if let Some(proto) = port.protocol.as_deref() {
            e.max_len(&ip.key("protocol"), proto, 256);
            if !proto.is_empty() && parse_protocol(proto).is_none() {
                e.add(
                    &ip.key("protocol"),
                    format!("unrecognized protocol {proto:?}"),
                );
            }
        }
    }
    if numbers.values().any(|n| *n > 1) {
        e.add(&pp, "port number cannot be duplicated");
    }

    let ep = p.key("endpoints");
    e.max_items(&ep, &se.endpoints, 4096);
    for (i, we) in se.endpoints.iter().enumerate() {
        let wp = ep.index(i);
        workload_entry_fields(we, &wp, true, e);
        let addr = we.address.as_deref().unwrap_or("");
        for name in we.ports.keys() {
            if !se.ports.is_empty() && !names.contains(name.as_str()) {
                e.add(
                    &wp.key("ports").key(name),
                    format!("endpoint port {name} is not defined by the service entry"),
                );
            }
        }
        match resolution {
            Resolution::Static
                if !addr.is_empty() && !is_ip(addr) && !addr.starts_with("unix://") =>
            {
                e.add(
                    &wp.key("address"),
                    format!("endpoint address {addr:?} is not a valid IP address"),
                );
            }
            Resolution::Dns | Resolution::DnsRoundRobin
                if !addr.is_empty() && !is_ip(addr) && validate_fqdn(addr).is_err() =>
            {
                e.add(
                    &wp.key("address"),
                    format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
                );
            }
            _ => {}
        }
    }
    if matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin)
        && se.endpoints.is_empty()
        && se.hosts.iter().any(|h| validate_fqdn(h).is_err())
    {
        e.add(
            &hp,
            format!(
                "hosts must be FQDN if no endpoints are provided for resolution mode {resolution}"
            ),
        );
    }
    if let Some(sel) = &se.workload_selector {
        let sp = p.key("workloadSelector");
        e.labels_selector(&sp, &sel.labels);
        e.labels(&sp.key("labels"), &sel.labels);
    }
    e.export_to(&p.key("exportTo"), ns, &se.export_to, true);
}

/// The CRD rules of a WorkloadEntry (standalone, as an endpoint, or as a
/// WorkloadGroup template).
fn workload_entry_fields(we: &WorkloadEntry, p: &FieldPath, require_address: bool, e: &mut Errors) {
    let addr = we.address.as_deref();
    if require_address && addr.is_none() && we.network.is_none() {
        e.add(p, "Address is required");
    }
    if addr.is_some_and(|a| a.starts_with("unix://")) && !we.ports.is_empty() {
        e.add(p, "UDS may not include ports");
    }
    if let Some(a) = addr {
        e.max_len(&p.key("address"), a, 256);
        uds_address(e, &p.key("address"), a);
    }
    let pp = p.key("ports");
    e.max_properties(&pp, &we.ports, 128);
    if we
        .ports
        .keys()
        .any(|k| k.len() >= 63 || !PORT_NAME.is_match(k))
    {
        e.add(&pp, "port name must be valid");
    }
    for (name, port) in &we.ports {
        e.port_cel(&pp.key(name), *port);
    }
    e.max_properties(&p.key("labels"), &we.labels, 256);
    e.labels(&p.key("labels"), &we.labels);
    if let Some(l) = &we.locality {
        e.max_len(&p.key("locality"), l, 2048);
    }
    if let Some(n) = &we.network {
        e.max_len(&p.key("network"), n, 2048);
    }
    if let Some(sa) = &we.service_account {
        e.max_len(&p.key("serviceAccount"), sa, 253);
    }
}

pub(super) fn workload_entry(we: &WorkloadEntry, p: &FieldPath, e: &mut Errors) {
    workload_entry_fields(we, p, true, e);
    if let Some(addr) = we.address.as_deref()
        && !addr.is_empty()
        && !addr.starts_with("unix://")
        && !is_ip(addr)
        && let Err(msg) = validate_fqdn(addr)
    {
        e.add(
            &p.key("address"),
            format!("endpoint address {addr:?} is not a valid FQDN or an IP address: {msg}"),
        );
    }
}

pub(super) fn workload_group(wg: &WorkloadGroup, p: &FieldPath, e: &mut Errors) {
    if let Some(meta) = &wg.metadata {
        let mp = p.key("metadata");
        e.max_properties(&mp.key("labels"), &meta.labels, 256);
        e.labels(&mp.key("labels"), &meta.labels);
        e.max_properties(&mp.key("annotations"), &meta.annotations, 256);
    }
    // Addresses are filled in when entries are generated, so the template
    // need not have one.
    workload_entry_fields(&wg.template, &p.key("template"), false, e);
    if let Some(probe) = &wg.probe {
        readiness_probe(probe, &p.key("probe"), e);
    }
}

fn readiness_probe(probe: &ReadinessProbe, p: &FieldPath, e: &mut Errors) {
    let methods = usize::from(probe.http_get.is_some())
        + usize::from(probe.tcp_socket.is_some())
        + usize::from(probe.exec.is_some())
        + usize::from(probe.grpc.is_some());
    if methods > 1 {
        e.add(p, "only one of httpGet, tcpSocket, exec or grpc can be set");
    }
    for (field, v) in [
        ("failureThreshold", probe.failure_threshold),
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("timeoutSeconds", probe.timeout_seconds),
    ] {
        if let Some(v) = v {
            e.at_least_i64(&p.key(field), i64::from(v), 0);
        }
    }
    if let Some(h) = &probe.http_get {
        let hp = p.key("httpGet");
        e.port_cel(&hp.key("port"), h.port);
        if let Some(s) = h.scheme.as_deref()
            && !matches!(s, "" | "HTTP" | "HTTPS")
        {
            e.add(&hp.key("scheme"), "scheme must be one of [HTTP, HTTPS]");
        }
        for (i, header) in h.http_headers.iter().enumerate() {
            let name = header.name.as_deref().unwrap_or("");
            e.pattern(
                &hp.key("httpHeaders").index(i).key("name"),
                name,
                &PROBE_HEADER,
                "^[-_A-Za-z0-9]+$",
            );
        }
    }
    if let Some(t) = &probe.tcp_socket {
        e.port_cel(&p.key("tcpSocket").key("port"), t.port);
    }
    if let Some(x) = &probe.exec {
        let xp = p.key("exec").key("command");
        if x.command.is_empty() {
            e.add(&xp, "exec.command is required");
        }
        for (i, c) in x.command.iter().enumerate() {
            e.min_len(&xp.index(i), c, 1);
        }
    }
    if let Some(g) = &probe.grpc
        && let Some(port) = g.port
    {
        e.port_cel(&p.key("grpc").key("port"), port);
    }
}
