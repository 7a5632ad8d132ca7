//! The demo app's configuration, read from environment variables named as
//! fake-service names them, so manifests written for it work unchanged.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// How one demo app instance behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct AppConfig {
    /// Reported as `name`; usually the Kubernetes service name.
    pub name: String,
    /// Reported as `version`; Istio subsets select on it (`v1`, `v2`).
    pub version: String,
    /// Where [`run`](super::run) listens. [`serve`](super::serve) and
    /// [`spawn`](super::spawn) take a bound listener instead.
    pub listen_addr: SocketAddr,
    /// Called in order for every request: `http://host:port[/path]`.
    pub upstream_uris: Vec<String>,
    /// Fraction of requests, 0 to 1, answered with `error_code` without
    /// calling upstreams.
    pub error_rate: f64,
    /// Status of the injected errors.
    pub error_code: u16,
    /// Reported as `body`.
    pub message: String,
    /// Forward proxy for upstream calls (`host:port` or `http://host:port`).
    ///
    /// Without iptables capture, this is how an app's outbound traffic
    /// reaches the sidecar: requests go to the proxy in absolute form.
    pub http_proxy: Option<String>,
    /// Limit on each upstream call, connect to last body byte.
    pub upstream_timeout: Duration,
    /// Report the request as received (method, authority, headers) under
    /// `request`, so tests can see what the mesh did to it.
    pub echo_request: bool,
    /// Wait this long before answering (a slow service).
    pub delay: Duration,
    /// Serve HTTPS (HTTP/1.1 or HTTP/2 by ALPN) with a self-signed
    /// certificate made at start, instead of plain text.
    pub tls: bool,
    /// More ports [`run`](super::run) serves the same app on, at the IP of
    /// `listen_addr` (a pod whose app listens on several ports).
    pub extra_ports: Vec<u16>,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            name: "Service".to_owned(),
            version: "v1".to_owned(),
            listen_addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 9090)),
            upstream_uris: Vec::new(),
            error_rate: 0.0,
            error_code: 500,
            message: "Hello World".to_owned(),
            http_proxy: None,
            upstream_timeout: Duration::from_secs(30),
            echo_request: false,
            delay: Duration::ZERO,
            tls: false,
            extra_ports: Vec::new(),
        }
    }
}

/// A configuration variable with a value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {value:?} is not {expected}")]
pub struct ConfigError {
    /// The environment variable, e.g. `ERROR_RATE`.
    pub var: &'static str,
    /// The offending value (for lists, the offending item).
    pub value: String,
    /// What was expected, as a noun phrase.
    pub expected: &'static str,
}

impl AppConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, which maps a variable name
    /// to its value. Unset and empty variables take their defaults.
    ///
    /// Variables: `NAME`, `VERSION`, `LISTEN_ADDR` (`ip:port` or `:port`),
    /// `UPSTREAM_URIS` (comma-separated), `ERROR_RATE`, `ERROR_CODE`,
    /// `MESSAGE`, `HTTP_PROXY` (or `http_proxy`),
    /// `HTTP_CLIENT_REQUEST_TIMEOUT` (a duration such as `30s` or `500ms`)
    /// `ECHO_REQUEST` (`true` to report the request received) and
    /// `EXTRA_PORTS` (more ports to serve on, comma-separated).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let mut config = Self::default();
        if let Some(name) = get("NAME") {
            config.name = name;
        }
        if let Some(version) = get("VERSION") {
            config.version = version;
        }
        if let Some(addr) = get("LISTEN_ADDR") {
            config.listen_addr = parse_listen_addr(&addr)?;
        }
        if let Some(uris) = get("UPSTREAM_URIS") {
            config.upstream_uris = parse_upstream_uris(&uris)?;
        }
        if let Some(rate) = get("ERROR_RATE") {
            config.error_rate = parse_error_rate(&rate)?;
        }
        if let Some(code) = get("ERROR_CODE") {
            config.error_code = parse_error_code(&code)?;
        }
        if let Some(message) = get("MESSAGE") {
            config.message = message;
        }
        // Upper case first, as curl does; both spellings are common.
        for var in ["HTTP_PROXY", "http_proxy"] {
            if let Some(proxy) = get(var) {
                proxy_authority(&proxy).ok_or_else(|| ConfigError {
                    var,
                    value: proxy.clone(),
                    expected: "a proxy address (host:port or http://host:port)",
                })?;
                config.http_proxy = Some(proxy);
                break;
            }
        }
        if let Some(ports) = get("EXTRA_PORTS") {
            config.extra_ports = ports
                .split(',')
                .map(|p| p.trim().parse::<u16>())
                .collect::<Result<_, _>>()
                .map_err(|_| ConfigError {
                    var: "EXTRA_PORTS",
                    value: ports.clone(),
                    expected: "comma-separated port numbers",
                })?;
        }
        if let Some(echo) = get("ECHO_REQUEST") {
            config.echo_request = match echo.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(ConfigError {
                        var: "ECHO_REQUEST",
                        value: echo,
                        expected: "true or false",
                    });
                }
            };
        }
        // fake-service's median latency; this app always waits exactly that.
        if let Some(delay) = get("TIMING_50_PERCENTILE") {
            config.delay = parse_duration(&delay).ok_or(ConfigError {
                var: "TIMING_50_PERCENTILE",
                value: delay,
                expected: "a duration (like 30s or 500ms)",
            })?;
        }
        if let Some(timeout) = get("HTTP_CLIENT_REQUEST_TIMEOUT") {
            config.upstream_timeout = parse_duration(&timeout)
                .filter(|timeout| !timeout.is_zero())
                .ok_or(ConfigError {
                    var: "HTTP_CLIENT_REQUEST_TIMEOUT",
                    value: timeout,
                    expected: "a positive duration (like 30s or 500ms)",
                })?;
        }
        Ok(config)
    }
}

fn parse_listen_addr(value: &str) -> Result<SocketAddr, ConfigError> {
    let value = value.trim();
    // Go's `:9090` (every interface) is how fake-service is usually given
    // its address.
    let parsed = match value.strip_prefix(':') {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .map(|port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))),
        None => value.parse().ok(),
    };
    parsed.ok_or_else(|| ConfigError {
        var: "LISTEN_ADDR",
        value: value.to_owned(),
        expected: "a listen address (like 0.0.0.0:9090 or :9090)",
    })
}

fn parse_upstream_uris(value: &str) -> Result<Vec<String>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|uri| !uri.is_empty())
        .map(|uri| {
            UpstreamUri::parse(uri)
                .map(|_| uri.to_owned())
                .ok_or_else(|| ConfigError {
                    var: "UPSTREAM_URIS",
                    value: uri.to_owned(),
                    expected: "an http:// URI with a host (like http://service-b:9090)",
                })
        })
        .collect()
}

fn parse_error_rate(value: &str) -> Result<f64, ConfigError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|rate| (0.0..=1.0).contains(rate))
        .ok_or_else(|| ConfigError {
            var: "ERROR_RATE",
            value: value.to_owned(),
            expected: "a number between 0 and 1",
        })
}

fn parse_error_code(value: &str) -> Result<u16, ConfigError> {
    value
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|code| (100..=599).contains(code))
        .ok_or_else(|| ConfigError {
            var: "ERROR_CODE",
            value: value.to_owned(),
            expected: "an HTTP status code (100 to 599)",
        })
}

/// Parses Go-style durations (`30s`, `1m30s`, `1.5s`, `250ms`, `10us`),
/// the form fake-service's users already write.
pub(crate) fn parse_duration(value: &str) -> Option<Duration> {
    let mut rest = value.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(number * seconds_per_unit).ok()?;
    }
    Some(total)
}

/// An upstream URI split into what the app needs to call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpstreamUri {
    /// `host:port`, port defaulting to 80; both the connect target and
    /// the `Host` header.
    pub authority: String,
    /// Path and query, at least `/`.
    pub path: String,
}

impl UpstreamUri {
    pub fn parse(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("http://")?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(start) => (&rest[..start], &rest[start..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        let authority = with_default_port(authority)?;
        // Checks the path the way it will be sent.
        format!("http://{authority}{path}")
            .parse::<http::Uri>()
            .ok()?;
        Some(Self { authority, path })
    }
}

/// The `host:port` of a proxy given as `host:port` or `http://host:port/`.
pub(crate) fn proxy_authority(proxy: &str) -> Option<String> {
    let proxy = proxy.trim();
    let rest = match proxy.split_once("://") {
        Some(("http", rest)) => rest,
        Some(_) => return None,
        None => proxy,
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') {
        return None;
    }
    with_default_port(authority)
}

fn with_default_port(authority: &str) -> Option<String> {
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let has_port = match authority.rsplit_once(':') {
        Some((_, port)) if !port.contains(']') => {
            port.parse::<u16>().ok()?;
            true
        }
        _ => false,
    };
    let authority = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    authority.parse::<http::uri::Authority>().ok()?;
    Some(authority)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<AppConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AppConfig::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_match_fake_service() {
        let config = config(&[]).unwrap();
        assert_eq!(config, AppConfig::default());
        assert_eq!(config.listen_addr.to_string(), "0.0.0.0:9090");
        assert_eq!(config.error_code, 500);
        assert_eq!(config.message, "Hello World");
    }

    #[test]
    fn reads_every_variable() {
        let config = config(&[
            ("NAME", "service-a"),
            ("VERSION", "v2"),
            ("LISTEN_ADDR", "127.0.0.1:8080"),
            (
                "UPSTREAM_URIS",
                "http://service-b:80, http://service-c:9090/api?x=1",
            ),
            ("ERROR_RATE", "0.25"),
            ("ERROR_CODE", "503"),
            ("MESSAGE", "hi"),
            ("http_proxy", "http://127.0.0.1:15001"),
            ("HTTP_CLIENT_REQUEST_TIMEOUT", "1m2.5s"),
            ("ECHO_REQUEST", "true"),
            ("EXTRA_PORTS", "8081, 9000"),
        ])
        .unwrap();
        assert_eq!(
            config,
            AppConfig {
                name: "service-a".into(),
                version: "v2".into(),
                listen_addr: "127.0.0.1:8080".parse().unwrap(),
                upstream_uris: vec![
                    "http://service-b:80".into(),
                    "http://service-c:9090/api?x=1".into()
                ],
                error_rate: 0.25,
                error_code: 503,
                message: "hi".into(),
                http_proxy: Some("http://127.0.0.1:15001".into()),
                upstream_timeout: Duration::from_millis(62_500),
                echo_request: true,
                delay: Duration::ZERO,
                tls: false,
                extra_ports: vec![8081, 9000],
            }
        );
    }

    #[test]
    fn upper_case_proxy_wins() {
        let config = config(&[("HTTP_PROXY", "10.0.0.1:1"), ("http_proxy", "10.0.0.2:2")]).unwrap();
        assert_eq!(config.http_proxy.as_deref(), Some("10.0.0.1:1"));
    }

    #[test]
    fn go_style_listen_addr() {
        let config = config(&[("LISTEN_ADDR", ":8080")]).unwrap();
        assert_eq!(config.listen_addr.to_string(), "0.0.0.0:8080");
    }

    #[test]
    fn errors_name_the_variable() {
        let cases = [
            (
                "ERROR_RATE",
                "1.5",
                r#"ERROR_RATE: "1.5" is not a number between 0 and 1"#,
            ),
            (
                "ERROR_RATE",
                "x",
                r#"ERROR_RATE: "x" is not a number between 0 and 1"#,
            ),
            (
                "ERROR_CODE",
                "99",
                r#"ERROR_CODE: "99" is not an HTTP status code (100 to 599)"#,
            ),
            (
                "LISTEN_ADDR",
                "localhost",
                r#"LISTEN_ADDR: "localhost" is not a listen address (like 0.0.0.0:9090 or :9090)"#,
            ),
            (
                "UPSTREAM_URIS",
                "http://b:80,grpc://c:80",
                r#"UPSTREAM_URIS: "grpc://c:80" is not an http:// URI with a host (like http://service-b:9090)"#,
            ),
            (
                "HTTP_PROXY",
                "socks5://p:1080",
                r#"HTTP_PROXY: "socks5://p:1080" is not a proxy address (host:port or http://host:port)"#,
            ),
            (
                "HTTP_CLIENT_REQUEST_TIMEOUT",
                "10",
                r#"HTTP_CLIENT_REQUEST_TIMEOUT: "10" is not a positive duration (like 30s or 500ms)"#,
            ),
        ];
        for (var, value, want) in cases {
            let err = config(&[(var, value)]).unwrap_err();
            assert_eq!(err.to_string(), want);
            assert_eq!(err.var, var);
        }
    }

    #[test]
    fn durations() {
        let cases = [
            ("30s", Some(Duration::from_secs(30))),
            ("500ms", Some(Duration::from_millis(500))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("1h2m3s", Some(Duration::from_secs(3723))),
            ("10us", Some(Duration::from_micros(10))),
            ("10", None),
            ("s", None),
            ("5d", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), want, "{text}");
        }
    }

    #[test]
    fn upstream_uris() {
        let parse = |uri| UpstreamUri::parse(uri).map(|u| (u.authority, u.path));
        let s = |a: &str, p: &str| Some((a.to_owned(), p.to_owned()));
        assert_eq!(parse("http://service-b:80"), s("service-b:80", "/"));
        assert_eq!(parse("http://service-b"), s("service-b:80", "/"));
        assert_eq!(parse("http://b:9090/api/x?y=1"), s("b:9090", "/api/x?y=1"));
        assert_eq!(parse("http://b?y"), s("b:80", "/?y"));
        assert_eq!(parse("http://[::1]:8080/"), s("[::1]:8080", "/"));
        assert_eq!(parse("https://b:443"), None);
        assert_eq!(parse("http://"), None);
        assert_eq!(parse("http://b:notaport"), None);
        assert_eq!(parse("http://user@b:80"), None);
    }

    #[test]
    fn proxy_authorities() {
        assert_eq!(
            proxy_authority("127.0.0.1:15001").as_deref(),
            Some("127.0.0.1:15001")
        );
        assert_eq!(proxy_authority("http://p:3128/").as_deref(), Some("p:3128"));
        assert_eq!(proxy_authority("http://p").as_deref(), Some("p:80"));
        assert_eq!(proxy_authority("http://p:1/x"), None);
        assert_eq!(proxy_authority("https://p:1"), None);
    }
}
