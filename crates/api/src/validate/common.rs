//! Checks shared by several kinds: names, hosts, addresses, labels,
//! selectors, durations and Istio's CEL rules that repeat across CRDs.

use super::Errors;
use crate::duration::parse_duration;
use crate::error::FieldPath;
use crate::type_v1beta1::{PolicyTargetReference, WorkloadSelector};
use regex::Regex;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::Duration;

fn re(pattern: &str) -> Regex {
    // The patterns are literals in this file; a typo is caught by tests.
    Regex::new(pattern).unwrap_or_else(|e| panic!("bad built-in pattern {pattern}: {e}"))
}

static DNS1123_LABEL: LazyLock<Regex> = LazyLock::new(|| re("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"));
/// Istio's host labels allow upper case.
static HOST_LABEL: LazyLock<Regex> =
    LazyLock::new(|| re("^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"));
static WILDCARD_LABEL: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(\*|(\*|\*-)?[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)$"));
static QUALIFIED_NAME: LazyLock<Regex> =
    LazyLock::new(|| re("^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$"));
static HEADER_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[!#$%&'*+\-.^_`|~0-9a-zA-Z]+$"));
pub(crate) static TARGET_GROUP: LazyLock<Regex> =
    LazyLock::new(|| re(r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"));
pub(crate) static TARGET_KIND: LazyLock<Regex> =
    LazyLock::new(|| re("^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"));

pub(crate) const TARGET_GROUP_PATTERN: &str =
    r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
pub(crate) const TARGET_KIND_PATTERN: &str = "^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$";

pub(crate) fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && DNS1123_LABEL.is_match(s)
}

pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

pub(crate) fn is_header_name(s: &str) -> bool {
    HEADER_NAME.is_match(s)
}

pub(crate) fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// An IP address or a CIDR block.
pub(crate) fn is_ip_or_cidr(s: &str) -> bool {
    match s.split_once('/') {
        None => is_ip(s),
        Some((ip, bits)) => match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
            (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
            _ => false,
        },
    }
}

fn dns1123_preconditions(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".to_string());
    }
    Ok(())
}

fn dns1123_labels(domain: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let tld = parts.last().copied().unwrap_or("");
    if !tld.is_empty() && tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {tld:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        // A trailing dot (`istio.io.`) is allowed.
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if label.len() > 63 || !HOST_LABEL.is_match(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// Istio's `ValidateFQDN`: dot-separated DNS labels, no wildcard.
pub(crate) fn validate_fqdn(name: &str) -> Result<(), String> {
    dns1123_preconditions(name)?;
    dns1123_labels(name)
}

/// Istio's `ValidateWildcardDomain`: like an FQDN, but the first label may be
/// `*` or start with `*`.
pub(crate) fn validate_wildcard_domain(domain: &str) -> Result<(), String> {
    dns1123_preconditions(domain)?;
    let (label, rest) = match domain.split_once('.') {
        Some((l, r)) => (l, r),
        None => (domain, ""),
    };
    if label.len() > 63 || !WILDCARD_LABEL.is_match(label) {
        return Err(format!(
            "domain name {domain:?} invalid (label {label:?} invalid: only the first label may be a wildcard)"
        ));
    }
    if rest.is_empty() {
        return Ok(());
    }
    dns1123_labels(rest)
}

/// Whether every host matched by `a` is matched by `b` (Istio's
/// `host.Name.SubsetOf`).
pub(crate) fn host_subset_of(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(a_rest), Some(b_rest)) => a_rest.ends_with(b_rest),
        (Some(_), None) => false,
        (None, Some(b_rest)) => a.ends_with(b_rest),
        (None, None) => a == b,
    }
}

impl Errors {
    /// A duration field carrying Istio's `duration(self) >= duration('1ms')`
    /// rule.
    pub(crate) fn duration_min_1ms(&mut self, path: &FieldPath, value: Option<&String>) {
        if let Some(v) = value {
            match parse_duration(v) {
                Ok(d) if d >= Duration::from_millis(1) => {}
                _ => self.add(path, "must be a valid duration greater than 1ms"),
            }
        }
    }

    /// A duration field with no lower bound; it must still parse.
    pub(crate) fn duration_syntax(&mut self, path: &FieldPath, value: Option<&String>) {
        if let Some(v) = value
            && let Err(e) = parse_duration(v)
        {
            self.add(path, e.to_string());
        }
    }

    pub(crate) fn min_len(&mut self, path: &FieldPath, value: &str, min: usize) {
        if value.chars().count() < min {
            self.add(
                path,
                format!("Invalid value: {value:?}: should be at least {min} chars long"),
            );
        }
    }

    pub(crate) fn max_len(&mut self, path: &FieldPath, value: &str, max: usize) {
        if value.chars().count() > max {
            self.add(path, format!("Too long: may not be more than {max} bytes"));
        }
    }

    pub(crate) fn max_items<T>(&mut self, path: &FieldPath, items: &[T], max: usize) {
        if items.len() > max {
            self.add(
                path,
                format!("Too many: {}: must have at most {max} items", items.len()),
            );
        }
    }

    pub(crate) fn max_properties<K, V>(
        &mut self,
        path: &FieldPath,
        map: &BTreeMap<K, V>,
        max: usize,
    ) {
        if map.len() > max {
            self.add(
                path,
                format!("Too many: {}: must have at most {max} items", map.len()),
            );
        }
    }

    pub(crate) fn pattern(&mut self, path: &FieldPath, value: &str, re: &Regex, pattern: &str) {
        if !re.is_match(value) {
            self.add(
                path,
                format!("Invalid value: {value:?}: should match '{pattern}'"),
            );
        }
    }

    pub(crate) fn at_most_f64(&mut self, path: &FieldPath, value: f64, max: f64) {
        if value > max {
            self.add(
                path,
                format!("Invalid value: {value}: should be less than or equal to {max}"),
            );
        }
    }

    pub(crate) fn at_least_f64(&mut self, path: &FieldPath, value: f64, min: f64) {
        if value < min || value.is_nan() {
            self.add(
                path,
                format!("Invalid value: {value}: should be greater than or equal to {min}"),
            );
        }
    }

    pub(crate) fn at_least_i64(&mut self, path: &FieldPath, value: i64, min: i64) {
        if value < min {
            self.add(
                path,
                format!("Invalid value: {value}: should be greater than or equal to {min}"),
            );
        }
    }

    /// The CEL rule `0 < self && self <= 65535` Istio puts on port fields.
    pub(crate) fn port_cel(&mut self, path: &FieldPath, port: u32) {
        if port == 0 || port > 65535 {
            self.add(path, "port must be between 1-65535");
        }
    }

    /// Istio's webhook `ValidatePort`.
    pub(crate) fn port(&mut self, path: &FieldPath, port: u32) {
        if port == 0 || port > 65535 {
            self.add(
                path,
                format!("port number {port} must be in the range 1..65535"),
            );
        }
    }

    pub(crate) fn regex(&mut self, path: &FieldPath, value: &str) {
        if let Err(e) = Regex::new(value) {
            let first = e.to_string();
            let first = first.lines().last().unwrap_or("").trim().to_string();
            self.add(path, format!("invalid regex {value:?}: {first}"));
        }
    }

    /// Kubernetes label syntax (used by Istio for every label map).
    pub(crate) fn labels(&mut self, path: &FieldPath, labels: &BTreeMap<String, String>) {
        for (k, v) in labels {
            if let Err(msg) = label_key(k) {
                self.add(&path.key(k), msg);
            }
            if v.len() > 63 || !(v.is_empty() || QUALIFIED_NAME.is_match(v)) {
                self.add(&path.key(k), format!("invalid label value: {v:?}"));
            }
        }
    }

    /// `spec.selector` of the security, telemetry and extension kinds
    /// (`istio.type.v1beta1.WorkloadSelector`).
    pub(crate) fn match_labels_selector(
        &mut self,
        path: &FieldPath,
        sel: Option<&WorkloadSelector>,
    ) {
        let Some(sel) = sel else {
            return;
        };
        let p = path.key("matchLabels");
        self.max_properties(&p, &sel.match_labels, 4096);
        if sel.match_labels.keys().any(|k| k.contains('*')) {
            self.add(&p, "wildcard not allowed in label key match");
        }
        if sel.match_labels.keys().any(String::is_empty) {
            self.add(&p, "key must not be empty");
        }
        for (k, v) in &sel.match_labels {
            self.max_len(&p.key(k), v, 63);
            if v.contains('*') {
                self.add(&p.key(k), "wildcard not allowed in label value match");
            }
        }
    }

    /// `workloadSelector.labels` of Sidecar, ServiceEntry and EnvoyFilter.
    pub(crate) fn labels_selector(&mut self, path: &FieldPath, labels: &BTreeMap<String, String>) {
        let p = path.key("labels");
        self.max_properties(&p, labels, 256);
        for (k, v) in labels {
            self.max_len(&p.key(k), v, 63);
            if v.contains('*') {
                self.add(&p.key(k), "wildcard is not supported in selector");
            }
        }
    }

    /// `targetRef` / `targetRefs` (`istio.type.v1beta1.PolicyTargetReference`).
    pub(crate) fn target_ref(&mut self, path: &FieldPath, r: &PolicyTargetReference) {
        let group = r.group.as_deref().unwrap_or("");
        self.max_len(&path.key("group"), group, 253);
        self.pattern(
            &path.key("group"),
            group,
            &TARGET_GROUP,
            TARGET_GROUP_PATTERN,
        );
        self.min_len(&path.key("kind"), &r.kind, 1);
        self.max_len(&path.key("kind"), &r.kind, 63);
        self.pattern(
            &path.key("kind"),
            &r.kind,
            &TARGET_KIND,
            TARGET_KIND_PATTERN,
        );
        self.min_len(&path.key("name"), &r.name, 1);
        self.max_len(&path.key("name"), &r.name, 253);
        if r.namespace.as_deref().is_some_and(|ns| !ns.is_empty()) {
            self.add(
                &path.key("namespace"),
                "cross namespace referencing is not currently supported",
            );
        }
        let allowed = matches!(
            (group, r.kind.as_str()),
            ("gateway.networking.k8s.io", "Gateway" | "GatewayClass")
                | ("" | "core", "Service")
                | ("networking.istio.io", "ServiceEntry")
        );
        if !allowed
            && !r.kind.is_empty()
            && TARGET_KIND.is_match(&r.kind)
            && TARGET_GROUP.is_match(group)
        {
            self.add(
                path,
                format!(
                    "targetRef must be to one of gateway.networking.k8s.io/Gateway, gateway.networking.k8s.io/GatewayClass, core/Service or networking.istio.io/ServiceEntry, but was {group}/{}",
                    r.kind
                ),
            );
        }
    }

    /// The shared `selector` / `targetRef` / `targetRefs` rules.
    pub(crate) fn policy_targets(
        &mut self,
        spec: &FieldPath,
        selector: Option<&WorkloadSelector>,
        target_ref: Option<&PolicyTargetReference>,
        target_refs: &[PolicyTargetReference],
    ) {
        let set = usize::from(selector.is_some())
            + usize::from(target_ref.is_some())
            + usize::from(!target_refs.is_empty());
        if set > 1 {
            self.add(spec, "only one of targetRefs or selector can be set");
        }
        self.match_labels_selector(&spec.key("selector"), selector);
        if let Some(r) = target_ref {
            self.target_ref(&spec.key("targetRef"), r);
        }
        self.max_items(&spec.key("targetRefs"), target_refs, 16);
        for (i, r) in target_refs.iter().enumerate() {
            self.target_ref(&spec.key("targetRefs").index(i), r);
        }
    }

    /// Istio's `validateExportTo`.
    pub(crate) fn export_to(
        &mut self,
        path: &FieldPath,
        namespace: &str,
        export_to: &[String],
        allow_none: bool,
    ) {
        let mut seen = BTreeSet::new();
        for (i, e) in export_to.iter().enumerate() {
            let key = if e == "." { namespace } else { e.as_str() };
            if !seen.insert(key.to_string()) {
                if key == e {
                    self.add(
                        &path.index(i),
                        format!("duplicate entries in exportTo: {e}"),
                    );
                } else {
                    self.add(
                        &path.index(i),
                        format!(
                            "duplicate entries in exportTo: . and current namespace {namespace}"
                        ),
                    );
                }
                continue;
            }
            let ok = e == "." || e == "*" || (e == "~" && allow_none) || is_dns1123_label(e);
            if !ok {
                self.add(
                    &path.index(i),
                    format!("invalid exportTo value {e:?}: only ., *, ~ (ServiceEntry) or a namespace name are allowed"),
                );
            }
        }
        if seen.contains("*") && export_to.len() > 1 {
            self.add(
                path,
                "cannot have both public (*) and non-public exportTo values for a resource",
            );
        }
        if seen.contains("~") && export_to.len() > 1 {
            self.add(
                path,
                "cannot export service entry to no one (~) and someone",
            );
        }
    }
}

fn label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && (p.is_empty() || !is_dns1123_subdomain(p))
    {
        return Err(format!("invalid label key: {k:?}"));
    }
    if name.is_empty() || name.len() > 63 || !QUALIFIED_NAME.is_match(name) {
        return Err(format!("invalid label key: {k:?}"));
    }
    Ok(())
}

/// Protocols Istio recognises on ports (case-insensitive).
pub(crate) fn parse_protocol(p: &str) -> Option<&'static str> {
    const KNOWN: &[&str] = &[
        "HTTP",
        "HTTPS",
        "HTTP2",
        "HTTP_PROXY",
        "GRPC",
        "GRPC-WEB",
        "TCP",
        "UDP",
        "TLS",
        "MONGO",
        "REDIS",
        "MYSQL",
        "THRIFT",
    ];
    KNOWN.iter().copied().find(|k| k.eq_ignore_ascii_case(p))
}

pub(crate) fn protocol_is_tls(p: &str) -> bool {
    matches!(parse_protocol(p), Some("HTTPS" | "TLS"))
}

pub(crate) fn protocol_is_http(p: &str) -> bool {
    matches!(
        parse_protocol(p),
        Some("HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" | "HTTP_PROXY")
    )
}

/// `unix://` socket paths: absolute or abstract (`@name`), not a directory.
pub(crate) fn uds_address(errs: &mut Errors, path: &FieldPath, addr: &str) {
    if let Some(rest) = addr.strip_prefix("unix://") {
        if !(rest.starts_with('/') || rest.starts_with('@')) {
            errs.add(path, "UDS must be an absolute path or abstract socket");
        }
        if addr.ends_with('/') {
            errs.add(path, "UDS may not be a dir");
        }
    }
}

/// Whether `s` has the shape of a URL Kubernetes' CEL `url()` accepts, and
/// its (lower-cased) scheme.
pub(crate) fn url_scheme(s: &str) -> Result<Option<String>, ()> {
    if s.chars().any(|c| c.is_control() || c == ' ') {
        return Err(());
    }
    // Percent escapes must be well formed.
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok = b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return Err(());
            }
            i += 3;
            continue;
        }
        i += 1;
    }
    if let Some((scheme, _)) = s.split_once(':') {
        let mut chars = scheme.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if valid {
            return Ok(Some(scheme.to_ascii_lowercase()));
        }
        if scheme.is_empty() {
            return Err(());
        }
    }
    Ok(None)
}

/// Standard base64 (the OpenAPI `byte` format).
pub(crate) fn is_base64(s: &str) -> bool {
    let s = s.trim_end_matches('=');
    let pad = s.len() % 4;
    pad != 1
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert!(validate_wildcard_domain("*").is_ok());
        assert!(validate_wildcard_domain("*.example.com").is_ok());
        assert!(validate_wildcard_domain("*x").is_ok());
        assert!(validate_wildcard_domain("reviews").is_ok());
        assert!(validate_wildcard_domain("istio.io.").is_ok());
        assert!(validate_wildcard_domain("foo.*.com").is_err());
        assert!(validate_wildcard_domain("1.2.3.4").is_err());
        assert!(validate_wildcard_domain("").is_err());
        assert!(validate_fqdn("*.example.com").is_err());
        assert!(host_subset_of("a.example.com", "*.example.com"));
        assert!(host_subset_of("*.a.example.com", "*.example.com"));
        assert!(!host_subset_of("*.example.com", "a.example.com"));
        assert!(host_subset_of("x", "*"));
    }

    #[test]
    fn addresses() {
        assert!(is_ip_or_cidr("1.2.3.4"));
        assert!(is_ip_or_cidr("5.6.0.0/16"));
        assert!(is_ip_or_cidr("001:db8::"));
        assert!(!is_ip_or_cidr("1.2.3.4/99"));
        assert!(!is_ip_or_cidr("example.com"));
    }

    #[test]
    fn urls() {
        assert_eq!(url_scheme("http://x"), Ok(Some("http".to_string())));
        assert_eq!(url_scheme("test"), Ok(None));
        assert_eq!(url_scheme("#%blah$#@"), Err(()));
        assert_eq!(url_scheme("hTPp\\\u{8}lah"), Err(()));
        assert_eq!(
            url_scheme("fake://example.com"),
            Ok(Some("fake".to_string()))
        );
    }
}
