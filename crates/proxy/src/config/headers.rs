//! Header mutations (`*_headers_to_add` / `*_headers_to_remove`).

use http::{HeaderMap, HeaderName, HeaderValue};
use mizzen_xds::pb;
use pb::envoy::config::core::v3::{HeaderValueOption, header_value_option::HeaderAppendAction};

use super::check::reject_unknown;
use super::{ConfigError, Scope, fields, join};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}

#[derive(Debug, Clone)]
pub struct HeaderAdd {
    pub name: HeaderName,
    pub value: HeaderValue,
    pub action: AppendAction,
}

/// The mutations of one level (route, virtual host, route configuration,
/// weighted cluster). Envoy applies a level's removals before its additions.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    pub add: Vec<HeaderAdd>,
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for add in &self.add {
            match add.action {
                AppendAction::AppendIfExistsOrAdd => {
                    headers.append(add.name.clone(), add.value.clone());
                }
                AppendAction::AddIfAbsent => {
                    if !headers.contains_key(&add.name) {
                        headers.insert(add.name.clone(), add.value.clone());
                    }
                }
                AppendAction::OverwriteIfExistsOrAdd => {
                    headers.insert(add.name.clone(), add.value.clone());
                }
                AppendAction::OverwriteIfExists => {
                    if headers.contains_key(&add.name) {
                        headers.insert(add.name.clone(), add.value.clone());
                    }
                }
            }
        }
    }
}

/// Compiles one level's additions and removals. `add_field`/`remove_field`
/// are the proto field names, used in error paths.
pub(crate) fn header_ops(
    scope: &Scope,
    path: &str,
    (add_field, add): (&str, &[HeaderValueOption]),
    (remove_field, remove): (&str, &[String]),
) -> Result<HeaderOps, ConfigError> {
    let mut ops = HeaderOps::default();
    for (i, option) in add.iter().enumerate() {
        let p = join(path, &format!("{add_field}[{i}]"));
        if let Some(add) = header_add(scope, &p, option)? {
            ops.add.push(add);
        }
    }
    for (i, name) in remove.iter().enumerate() {
        let p = join(path, &format!("{remove_field}[{i}]"));
        ops.remove.push(mutable_name(scope, &p, name)?);
    }
    Ok(ops)
}

fn header_add(
    scope: &Scope,
    path: &str,
    option: &HeaderValueOption,
) -> Result<Option<HeaderAdd>, ConfigError> {
    reject_unknown(scope, path, option, fields::HEADER_VALUE_OPTION, |o| {
        o.header = None;
        o.append = None;
        o.append_action = 0;
        o.keep_empty_value = false;
    })?;
    let Some(header) = &option.header else {
        return Err(scope.missing(join(path, "header")));
    };
    let hpath = join(path, "header");
    reject_unknown(scope, &hpath, header, fields::HEADER_VALUE, |h| {
        h.key.clear();
        h.value.clear();
        h.raw_value.clear();
    })?;
    let name = mutable_name(scope, &join(&hpath, "key"), &header.key)?;
    let raw: Vec<u8> = if header.raw_value.is_empty() {
        expand_formatters(scope, &join(&hpath, "value"), &header.value)?.into_bytes()
    } else {
        header.raw_value.clone()
    };
    if raw.is_empty() && !option.keep_empty_value {
        // Envoy drops additions whose value is empty unless told to keep them.
        return Ok(None);
    }
    let value = HeaderValue::from_bytes(&raw)
        .map_err(|_| scope.invalid(join(&hpath, "value"), "invalid header value"))?;
    let action = match (
        option.append,
        HeaderAppendAction::try_from(option.append_action),
    ) {
        (Some(_), Ok(a)) if a != HeaderAppendAction::AppendIfExistsOrAdd => {
            return Err(scope.invalid(
                join(path, "append"),
                "append and append_action are mutually exclusive",
            ));
        }
        (Some(append), _) if append.value => AppendAction::AppendIfExistsOrAdd,
        (Some(_), _) => AppendAction::OverwriteIfExistsOrAdd,
        (None, Ok(HeaderAppendAction::AppendIfExistsOrAdd)) => AppendAction::AppendIfExistsOrAdd,
        (None, Ok(HeaderAppendAction::AddIfAbsent)) => AppendAction::AddIfAbsent,
        (None, Ok(HeaderAppendAction::OverwriteIfExistsOrAdd)) => {
            AppendAction::OverwriteIfExistsOrAdd
        }
        (None, Ok(HeaderAppendAction::OverwriteIfExists)) => AppendAction::OverwriteIfExists,
        (None, Err(_)) => {
            return Err(scope.invalid(join(path, "append_action"), "unknown enum value"));
        }
    };
    Ok(Some(HeaderAdd {
        name,
        value,
        action,
    }))
}

/// Envoy refuses to let routes touch pseudo-headers and Host.
fn mutable_name(scope: &Scope, path: &str, name: &str) -> Result<HeaderName, ConfigError> {
    let lower = name.to_ascii_lowercase();
    if lower.starts_with(':') || lower == "host" {
        return Err(scope.invalid(path, format!("header {name} may not be modified")));
    }
    HeaderName::from_bytes(lower.as_bytes())
        .map_err(|_| scope.invalid(path, format!("invalid header name {name:?}")))
}

/// Header values go through Envoy's substitution formatter: `%%` is a
/// literal percent and `%COMMAND%` is replaced at request time. No command is
/// implemented yet, so any is refused rather than sent literally.
fn expand_formatters(scope: &Scope, path: &str, value: &str) -> Result<String, ConfigError> {
    if !value.contains('%') {
        return Ok(value.to_string());
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('%') {
            out.push('%');
            rest = stripped;
            continue;
        }
        let command = match after.find('%') {
            Some(end) => &after[..end],
            None => after,
        };
        return Err(scope.unsupported(format!("{path} (formatter %{command}%)")));
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::envoy::config::core::v3::HeaderValue as PbHeaderValue;

    fn option(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(PbHeaderValue {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        }
    }

    #[test]
    fn append_actions() {
        let scope = Scope::new("route_configuration", "r");
        let adds = [
            option("x-a", "1", HeaderAppendAction::AppendIfExistsOrAdd),
            option("x-b", "2", HeaderAppendAction::AddIfAbsent),
            option("x-c", "3", HeaderAppendAction::OverwriteIfExistsOrAdd),
            option("x-d", "4", HeaderAppendAction::OverwriteIfExists),
            option("x-e", "5", HeaderAppendAction::OverwriteIfExists),
            option("x-empty", "", HeaderAppendAction::OverwriteIfExistsOrAdd),
        ];
        let ops = header_ops(
            &scope,
            "",
            ("add", &adds),
            ("remove", &["x-gone".to_string()]),
        )
        .unwrap();
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-a", "0"),
            ("x-b", "0"),
            ("x-c", "0"),
            ("x-d", "0"),
            ("x-gone", "0"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        ops.apply(&mut h);
        let all = |k: &str| {
            h.get_all(k)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(all("x-a"), ["0", "1"]);
        assert_eq!(all("x-b"), ["0"]);
        assert_eq!(all("x-c"), ["3"]);
        assert_eq!(all("x-d"), ["4"]);
        assert!(all("x-e").is_empty());
        assert!(all("x-empty").is_empty());
        assert!(all("x-gone").is_empty());
    }

    #[test]
    fn refuses_formatters_and_pseudo_headers() {
        let scope = Scope::new("route_configuration", "r");
        let err = header_ops(
            &scope,
            "virtual_hosts[0]",
            (
                "request_headers_to_add",
                &[option(
                    "x-ip",
                    "%DOWNSTREAM_REMOTE_ADDRESS%",
                    HeaderAppendAction::AppendIfExistsOrAdd,
                )],
            ),
            ("request_headers_to_remove", &[]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "route_configuration r: virtual_hosts[0].request_headers_to_add[0].header.value (formatter %DOWNSTREAM_REMOTE_ADDRESS%) is not supported"
        );
        let ok = header_ops(
            &scope,
            "",
            (
                "a",
                &[option(
                    "x-pct",
                    "100%%",
                    HeaderAppendAction::AppendIfExistsOrAdd,
                )],
            ),
            ("r", &[]),
        )
        .unwrap();
        assert_eq!(ok.add[0].value, "100%");
        let err = header_ops(&scope, "", ("a", &[]), ("r", &[":path".to_string()])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "route_configuration r: r[0]: header :path may not be modified"
        );
    }
}
