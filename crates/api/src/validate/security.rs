//! PeerAuthentication, RequestAuthentication and AuthorizationPolicy rules.

use super::Errors;
use super::common::{is_header_name, is_ip_or_cidr, url_scheme};
use crate::error::FieldPath;
use crate::security::{
    Action, AuthorizationPolicy, JwtRule, PeerAuthentication, RequestAuthentication,
};
use regex::Regex;
use std::sync::LazyLock;

static CLAIM_HEADER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("^[-_A-Za-z0-9]+$").unwrap_or_else(|e| panic!("{e}")));

pub(super) fn peer_authentication(pa: &PeerAuthentication, p: &FieldPath, e: &mut Errors) {
    e.match_labels_selector(&p.key("selector"), pa.selector.as_ref());
    if let Some(ports) = &pa.port_level_mtls {
        let has_selector = pa
            .selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty());
        if !has_selector {
            e.add(p, "portLevelMtls requires selector");
        }
        let pp = p.key("portLevelMtls");
        if ports.is_empty() {
            e.add(&pp, "Invalid value: 0: should have at least 1 properties");
        }
        if ports.keys().any(|port| *port == 0 || *port > 65535) {
            e.add(&pp, "port must be between 1-65535");
        }
    }
}

pub(super) fn request_authentication(ra: &RequestAuthentication, p: &FieldPath, e: &mut Errors) {
    e.policy_targets(
        p,
        ra.selector.as_ref(),
        ra.target_ref.as_ref(),
        &ra.target_refs,
    );
    let jp = p.key("jwtRules");
    e.max_items(&jp, &ra.jwt_rules, 4096);
    for (i, rule) in ra.jwt_rules.iter().enumerate() {
        jwt_rule(rule, &jp.index(i), e);
    }
}

fn jwt_rule(r: &JwtRule, p: &FieldPath, e: &mut Errors) {
    match r.issuer.as_deref() {
        None => e.add(&p.key("issuer"), "issuer must be set"),
        Some(iss) => e.min_len(&p.key("issuer"), iss, 1),
    }
    for (i, aud) in r.audiences.iter().enumerate() {
        e.min_len(&p.key("audiences").index(i), aud, 1);
    }
    if r.jwks_uri.is_some() && r.jwks.is_some() {
        e.add(p, "only one of jwks or jwksUri can be set");
    }
    if let Some(uri) = r.jwks_uri.as_deref() {
        let up = p.key("jwksUri");
        e.min_len(&up, uri, 1);
        e.max_len(&up, uri, 2048);
        if !matches!(url_scheme(uri), Ok(Some(s)) if s == "http" || s == "https") {
            e.add(&up, "url must have scheme http:// or https://");
        }
    }
    if let Some(jwks) = r.jwks.as_deref()
        && let Err(err) = serde_json::from_str::<serde_json::Value>(jwks)
    {
        e.add(&p.key("jwks"), format!("jwks parse error: {err}"));
    }
    for (i, h) in r.from_headers.iter().enumerate() {
        e.min_len(&p.key("fromHeaders").index(i).key("name"), &h.name, 1);
    }
    for (i, v) in r.from_params.iter().enumerate() {
        e.min_len(&p.key("fromParams").index(i), v, 1);
    }
    for (i, v) in r.from_cookies.iter().enumerate() {
        e.min_len(&p.key("fromCookies").index(i), v, 1);
    }
    for (i, c) in r.output_claim_to_headers.iter().enumerate() {
        let cp = p.key("outputClaimToHeaders").index(i);
        e.min_len(&cp.key("claim"), &c.claim, 1);
        e.min_len(&cp.key("header"), &c.header, 1);
        if !c.header.is_empty() {
            e.pattern(
                &cp.key("header"),
                &c.header,
                &CLAIM_HEADER,
                "^[-_A-Za-z0-9]+$",
            );
        }
    }
    if let Some(h) = r.output_payload_to_header.as_deref()
        && !h.is_empty()
        && !is_header_name(h)
    {
        e.add(
            &p.key("outputPayloadToHeader"),
            format!("header name {h:?} is not a valid header name"),
        );
    }
    e.duration_min_1ms(&p.key("timeout"), r.timeout.as_ref());
    let sp = p.key("spaceDelimitedClaims");
    e.max_items(&sp, &r.space_delimited_claims, 64);
    for (i, v) in r.space_delimited_claims.iter().enumerate() {
        e.min_len(&sp.index(i), v, 1);
    }
}

const ATTRIBUTES: &[&str] = &[
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "source.trustDomain",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "destination.ip",
    "destination.port",
    "connection.sni",
];

fn map_key(key: &str) -> bool {
    key.ends_with(']')
        && key
            .find('[')
            .is_some_and(|open| open > 0 && open < key.len() - 2)
}

fn valid_port(p: &str) -> bool {
    p.parse::<u32>().is_ok_and(|n| n <= 65535)
}

pub(super) fn authorization_policy(ap: &AuthorizationPolicy, p: &FieldPath, e: &mut Errors) {
    e.policy_targets(
        p,
        ap.selector.as_ref(),
        ap.target_ref.as_ref(),
        &ap.target_refs,
    );
    let custom = ap.action == Some(Action::Custom);
    match (&ap.provider, custom) {
        (None, true) => e.add(
            &p.key("provider"),
            "must specify provider when using CUSTOM action",
        ),
        (Some(prov), true) if prov.name.as_deref().unwrap_or("").is_empty() => {
            e.add(
                &p.key("provider").key("name"),
                "must specify provider when using CUSTOM action",
            );
        }
        (Some(_), false) => e.add(
            &p.key("provider"),
            "provider can only be used with the CUSTOM action",
        ),
        _ => {}
    }
    let rp = p.key("rules");
    e.max_items(&rp, &ap.rules, 512);
    for (i, rule) in ap.rules.iter().enumerate() {
        let rule_p = rp.index(i);
        e.max_items(&rule_p.key("from"), &rule.from, 512);
        for (j, from) in rule.from.iter().enumerate() {
            let fp = rule_p.key("from").index(j);
            let Some(src) = &from.source else {
                e.add(
                    &fp.key("source"),
                    format!("`from.source` must not be nil, found at rule {i}"),
                );
                continue;
            };
            let sp = fp.key("source");
            let lists: [(&str, &Vec<String>); 14] = [
                ("principals", &src.principals),
                ("notPrincipals", &src.not_principals),
                ("requestPrincipals", &src.request_principals),
                ("notRequestPrincipals", &src.not_request_principals),
                ("namespaces", &src.namespaces),
                ("notNamespaces", &src.not_namespaces),
                ("serviceAccounts", &src.service_accounts),
                ("notServiceAccounts", &src.not_service_accounts),
                ("ipBlocks", &src.ip_blocks),
                ("notIpBlocks", &src.not_ip_blocks),
                ("remoteIpBlocks", &src.remote_ip_blocks),
                ("notRemoteIpBlocks", &src.not_remote_ip_blocks),
                ("trustDomains", &src.trust_domains),
                ("notTrustDomains", &src.not_trust_domains),
            ];
            if lists.iter().all(|(_, l)| l.is_empty()) {
                e.add(
                    &sp,
                    format!("`from.source` must not be empty, found at rule {i}"),
                );
            }
            if (!src.service_accounts.is_empty() || !src.not_service_accounts.is_empty())
                && (!src.principals.is_empty()
                    || !src.not_principals.is_empty()
                    || !src.namespaces.is_empty()
                    || !src.not_namespaces.is_empty())
            {
                e.add(
                    &sp,
                    "Cannot set serviceAccounts with namespaces or principals",
                );
            }
            for (field, list) in lists {
                for (k, v) in list.iter().enumerate() {
                    if v.is_empty() {
                        e.add(
                            &sp.key(field).index(k),
                            format!("empty value not allowed, found in {field}"),
                        );
                    }
                }
            }
            for field in ["serviceAccounts", "notServiceAccounts"] {
                let list = if field == "serviceAccounts" {
                    &src.service_accounts
                } else {
                    &src.not_service_accounts
                };
                e.max_items(&sp.key(field), list, 16);
                for (k, v) in list.iter().enumerate() {
                    e.max_len(&sp.key(field).index(k), v, 320);
                }
            }
            for (field, list) in [
                ("ipBlocks", &src.ip_blocks),
                ("notIpBlocks", &src.not_ip_blocks),
                ("remoteIpBlocks", &src.remote_ip_blocks),
                ("notRemoteIpBlocks", &src.not_remote_ip_blocks),
            ] {
                for (k, v) in list.iter().enumerate() {
                    if !v.is_empty() && !is_ip_or_cidr(v) {
                        e.add(
                            &sp.key(field).index(k),
                            format!("invalid IP address or CIDR range: {v}"),
                        );
                    }
                }
            }
        }
        for (j, to) in rule.to.iter().enumerate() {
            let tp = rule_p.key("to").index(j);
            let Some(op) = &to.operation else {
                e.add(
                    &tp.key("operation"),
                    format!("`to.operation` must not be nil, found at rule {i}"),
                );
                continue;
            };
            let opp = tp.key("operation");
            let lists: [(&str, &Vec<String>); 8] = [
                ("hosts", &op.hosts),
                ("notHosts", &op.not_hosts),
                ("ports", &op.ports),
                ("notPorts", &op.not_ports),
                ("methods", &op.methods),
                ("notMethods", &op.not_methods),
                ("paths", &op.paths),
                ("notPaths", &op.not_paths),
            ];
            if lists.iter().all(|(_, l)| l.is_empty()) {
                e.add(
                    &opp,
                    format!("`to.operation` must not be empty, found at rule {i}"),
                );
            }
            for (field, list) in lists {
                for (k, v) in list.iter().enumerate() {
                    if v.is_empty() {
                        e.add(
                            &opp.key(field).index(k),
                            format!("empty value not allowed, found in {field}"),
                        );
                    } else if (field == "ports" || field == "notPorts") && !valid_port(v) {
                        e.add(&opp.key(field).index(k), format!("invalid port: {v}"));
                    }
                }
            }
        }
        for (j, cond) in rule.when.iter().enumerate() {
            let cp = rule_p.key("when").index(j);
            let key = cond.key.as_str();
            if key.is_empty() {
                e.add(&cp.key("key"), "`key` must not be empty");
                continue;
            }
            if cond.values.is_empty() && cond.not_values.is_empty() {
                e.add(
                    &cp,
                    format!("at least one of `values` or `notValues` must be set for key {key}"),
                );
                continue;
            }
            let known = ATTRIBUTES.contains(&key)
                || ((key.starts_with("request.headers[")
                    || key.starts_with("request.auth.claims[")
                    || key.starts_with("experimental.envoy.filters."))
                    && map_key(key));
            if !known {
                if key.starts_with("request.headers[")
                    || key.starts_with("request.auth.claims[")
                    || key.starts_with("experimental.envoy.filters.")
                {
                    e.add(
                        &cp.key("key"),
                        format!("bad key ({key}): should have format a[b]"),
                    );
                } else {
                    e.add(&cp.key("key"), format!("unknown attribute: {key}"));
                }
                continue;
            }
            for (field, list) in [("values", &cond.values), ("notValues", &cond.not_values)] {
                for (k, v) in list.iter().enumerate() {
                    let vp = cp.key(field).index(k);
                    match key {
                        "source.ip" | "remote.ip" | "destination.ip" if !is_ip_or_cidr(v) => {
                            e.add(&vp, format!("invalid `value` for `key` {key}: invalid IP address or CIDR range: {v}"));
                        }
                        "destination.port" if !valid_port(v) => {
                            e.add(
                                &vp,
                                format!("invalid `value` for `key` {key}: invalid port: {v}"),
                            );
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}
