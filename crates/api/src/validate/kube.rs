//! Kubernetes Service and Secret, and Mizzen's Workload.

use super::Errors;
use super::common::{is_dns1123_label, is_dns1123_subdomain, is_ip};
use crate::error::FieldPath;
use crate::workload::Workload;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeSet;

pub(super) fn service(svc: &Service, p: &FieldPath, e: &mut Errors) {
    let Some(spec) = &svc.spec else {
        return;
    };
    let pp = p.key("ports");
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let ip = pp.index(i);
        let number = u32::try_from(port.port).unwrap_or(0);
        e.port(&ip.key("port"), number);
        match port.name.as_deref() {
            None | Some("") if ports.len() > 1 => {
                e.add(
                    &ip.key("name"),
                    "Required value: port names are required when a Service has more than one port",
                );
            }
            Some(name) if !name.is_empty() => {
                if !is_dns1123_label(name) {
                    e.add(&ip.key("name"), format!("invalid port name: {name}"));
                }
                if !names.insert(name) {
                    e.add(&ip.key("name"), format!("Duplicate value: {name:?}"));
                }
            }
            _ => {}
        }
        if let Some(proto) = port.protocol.as_deref()
            && !matches!(proto, "TCP" | "UDP" | "SCTP")
        {
            e.add(
                &ip.key("protocol"),
                super::super::serde_util::unsupported_value(proto, &["SCTP", "TCP", "UDP"]),
            );
        }
        match &port.target_port {
            Some(IntOrString::Int(n)) => {
                e.port(&ip.key("targetPort"), u32::try_from(*n).unwrap_or(0))
            }
            Some(IntOrString::String(s))
                if s.is_empty() || s.len() > 15 || !is_dns1123_label(s) =>
            {
                e.add(
                    &ip.key("targetPort"),
                    format!("invalid target port name: {s:?}"),
                );
            }
            _ => {}
        }
    }
    if let Some(sel) = &spec.selector {
        e.labels(&p.key("selector"), sel);
    }
}

pub(super) fn secret(_secret: &Secret, _p: &FieldPath, _e: &mut Errors) {
    // Secrets are opaque to validation; only their metadata is checked.
}

pub(super) fn workload(w: &Workload, p: &FieldPath, e: &mut Errors) {
    if w.address.is_empty() {
        e.add(&p.key("address"), "Required value: address is required");
    } else if !is_ip(&w.address) {
        e.add(
            &p.key("address"),
            format!("Invalid value: {:?}: must be an IP address", w.address),
        );
    }
    if let Some(sa) = &w.service_account
        && !is_dns1123_subdomain(sa)
    {
        e.add(
            &p.key("serviceAccount"),
            format!("Invalid value: {sa:?}: must be a DNS-1123 subdomain"),
        );
    }
    for (name, port) in &w.ports {
        let pp = p.key("ports").key(name);
        if !is_dns1123_label(name) {
            e.add(&pp, format!("invalid port name: {name}"));
        }
        e.port(&pp, *port);
    }
}
