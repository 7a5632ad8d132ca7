//! `FilterChainMatch` → [`ChainMatch`], and the choice of a listener's filter
//! chain for one connection ([`ChainSelector`]).
//!
//! Envoy narrows the candidates criterion by criterion, in a fixed order:
//! destination port, destination IP (longest prefix), server name, transport
//! protocol, application protocol, then the source criteria. At each step the
//! chains that name a matching value win over the chains that leave the
//! criterion unset, and the unset ones are only considered when no chain names
//! a matching value. There is no backtracking: once chains for port 80 exist,
//! a connection to port 80 never reaches a chain without a port, even if none
//! of the port-80 chains match the later criteria. This module implements
//! that order for the criteria the proxy supports (destination port,
//! destination prefix ranges, server names, `raw_buffer` or `tls` transport,
//! application protocols) and refuses the others.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use mizzen_xds::pb;
use pb::envoy::config::core::v3::CidrRange;
use pb::envoy::config::listener::v3::FilterChainMatch;

use super::check::reject_unknown;
use super::{ConfigError, Scope, fields, join};

/// The transport protocol of a connection the TLS inspector did not
/// recognise as TLS (or that no TLS inspector looked at).
pub const RAW_BUFFER: &str = "raw_buffer";
/// The transport protocol of a connection that opened with a ClientHello.
pub const TLS: &str = "tls";

/// A chain's `transport_protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Unset: any transport.
    #[default]
    Any,
    RawBuffer,
    Tls,
}

/// What the listener filters learnt about a connection, for the choice of
/// its filter chain.
#[derive(Debug, Clone, Copy, Default)]
pub struct Detected<'a> {
    /// The TLS inspector saw a ClientHello.
    pub tls: bool,
    /// Its server name (lowercase).
    pub server_name: Option<&'a str>,
    /// ALPN offered in the ClientHello, or the protocol the HTTP inspector
    /// found, in order of preference.
    pub application_protocols: &'a [&'a str],
}

/// An IP prefix, stored with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    pub fn new(addr: IpAddr, len: u8) -> Option<Cidr> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return None;
        }
        Some(Cidr {
            addr: mask(addr, len),
            len,
        })
    }

    /// The one-address prefix of `ip` (/32 or /128).
    pub fn from_ip(ip: IpAddr) -> Cidr {
        Cidr {
            addr: ip,
            len: if ip.is_ipv4() { 32 } else { 128 },
        }
    }

    /// The prefix length.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u8 {
        self.len
    }

    /// The network address (host bits cleared).
    pub fn ip(&self) -> IpAddr {
        self.addr
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.len) == self.addr
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

/// The supported criteria of one filter chain; empty means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainMatch {
    pub destination_port: Option<u16>,
    pub prefix_ranges: Vec<Cidr>,
    /// Exact names and `*.suffix` wildcards, lowercase.
    pub server_names: Vec<String>,
    pub transport: Transport,
    pub application_protocols: Vec<String>,
}

impl ChainMatch {
    /// How well the destination IP matches: `None` when the chain lists
    /// prefixes and none contains it, else the longest matching prefix length
    /// (0 for a chain without prefixes, which matches any address).
    fn ip_score(&self, ip: IpAddr) -> Option<u8> {
        if self.prefix_ranges.is_empty() {
            return Some(0);
        }
        self.prefix_ranges
            .iter()
            .filter(|c| c.contains(ip))
            .map(Cidr::len)
            .max()
    }

    /// How specifically the chain names `sni`: `None` when it lists server
    /// names and none matches; `Some(0)` when it lists none; otherwise the
    /// exact name ranks above every wildcard and a longer wildcard suffix
    /// above a shorter one (Envoy tries `www.example.com`, then
    /// `*.example.com`, then `*.com`).
    fn server_name_score(&self, sni: Option<&str>) -> Option<usize> {
        if self.server_names.is_empty() {
            return Some(0);
        }
        let sni = sni?;
        self.server_names
            .iter()
            .filter_map(|name| {
                if name == sni {
                    Some(usize::MAX)
                } else if let Some(suffix) = name.strip_prefix('*') {
                    // `*.example.com` matches any name ending in `.example.com`
                    // with at least one more character before it.
                    (sni.len() > suffix.len() && sni.ends_with(suffix)).then_some(suffix.len())
                } else {
                    None
                }
            })
            .max()
    }
}

/// Compiles a `filter_chain_match`.
pub(crate) fn compile_match(
    scope: &Scope,
    path: &str,
    m: &FilterChainMatch,
) -> Result<ChainMatch, ConfigError> {
    reject_unknown(scope, path, m, fields::FILTER_CHAIN_MATCH, |m| {
        m.destination_port = None;
        m.prefix_ranges.clear();
        m.server_names.clear();
        m.transport_protocol.clear();
        m.application_protocols.clear();
    })?;
    let destination_port = match m.destination_port {
        None => None,
        Some(p) => Some(
            u16::try_from(p.value)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    scope.invalid(join(path, "destination_port"), "must be in 1..=65535")
                })?,
        ),
    };
    let mut prefix_ranges = Vec::with_capacity(m.prefix_ranges.len());
    for (i, r) in m.prefix_ranges.iter().enumerate() {
        prefix_ranges.push(cidr(scope, &join(path, &format!("prefix_ranges[{i}]")), r)?);
    }
    let transport = match m.transport_protocol.as_str() {
        "" => Transport::Any,
        RAW_BUFFER => Transport::RawBuffer,
        TLS => Transport::Tls,
        other => {
            return Err(scope.unsupported(format!(
                "{} {other:?} (only \"{RAW_BUFFER}\" and \"{TLS}\")",
                join(path, "transport_protocol")
            )));
        }
    };
    let mut server_names = Vec::with_capacity(m.server_names.len());
    for (i, name) in m.server_names.iter().enumerate() {
        let bad = |why: &str| scope.invalid(join(path, &format!("server_names[{i}]")), why);
        if name.is_empty() {
            return Err(bad("must not be empty"));
        }
        let rest = name.strip_prefix("*.").unwrap_or(name);
        if rest.is_empty() || rest.contains('*') || name.starts_with('*') && !name.starts_with("*.")
        {
            return Err(bad("only a leading \"*.\" wildcard is allowed"));
        }
        server_names.push(name.to_ascii_lowercase());
    }
    for (i, p) in m.application_protocols.iter().enumerate() {
        if p.is_empty() {
            return Err(scope.invalid(
                join(path, &format!("application_protocols[{i}]")),
                "must not be empty",
            ));
        }
    }
    Ok(ChainMatch {
        destination_port,
        prefix_ranges,
        server_names,
        transport,
        application_protocols: m.application_protocols.clone(),
    })
}

/// A `CidrRange`: an IP literal and a prefix length (default: the full address).
pub(crate) fn cidr(scope: &Scope, path: &str, r: &CidrRange) -> Result<Cidr, ConfigError> {
    reject_unknown(scope, path, r, fields::CIDR_RANGE, |r| {
        r.address_prefix.clear();
        r.prefix_len = None;
    })?;
    let ip: IpAddr = r.address_prefix.parse().map_err(|_| {
        scope.invalid(
            join(path, "address_prefix"),
            format!("{:?} is not an IP address", r.address_prefix),
        )
    })?;
    let len = match r.prefix_len {
        None => {
            if ip.is_ipv4() {
                32
            } else {
                128
            }
        }
        Some(l) => u8::try_from(l.value).unwrap_or(u8::MAX),
    };
    Cidr::new(ip, len).ok_or_else(|| scope.invalid(join(path, "prefix_len"), "out of range"))
}

/// Chooses among a listener's filter chains. Built once per listener; the
/// per-connection choice allocates nothing.
#[derive(Debug, Clone, Default)]
pub struct ChainSelector {
    matches: Vec<ChainMatch>,
    /// Chains naming each destination port, in config order.
    by_port: HashMap<u16, Vec<usize>>,
    /// Chains without a destination port.
    any_port: Vec<usize>,
    /// A single chain that matches everything: no lookup needed.
    only: Option<usize>,
}

impl ChainSelector {
    /// Builds the selector, refusing chains whose criteria overlap exactly
    /// (Envoy refuses them too: the choice between them would be arbitrary).
    /// `paths` name each chain for the error.
    pub(crate) fn new(
        scope: &Scope,
        matches: Vec<ChainMatch>,
        paths: &[String],
    ) -> Result<ChainSelector, ConfigError> {
        let mut seen: HashMap<MatchKey, usize> = HashMap::new();
        for (i, m) in matches.iter().enumerate() {
            for key in expand(m) {
                if let Some(j) = seen.insert(key, i)
                    && j != i
                {
                    return Err(scope.invalid(
                        join(&paths[i], "filter_chain_match"),
                        format!(
                            "same matching rules as {} (multiple filter chains with the same matching rules)",
                            paths[j]
                        ),
                    ));
                }
            }
        }
        let mut by_port: HashMap<u16, Vec<usize>> = HashMap::new();
        let mut any_port = Vec::new();
        for (i, m) in matches.iter().enumerate() {
            match m.destination_port {
                Some(p) => by_port.entry(p).or_default().push(i),
                None => any_port.push(i),
            }
        }
        let only = match matches.as_slice() {
            [m] if *m == ChainMatch::default() => Some(0),
            _ => None,
        };
        Ok(ChainSelector {
            matches,
            by_port,
            any_port,
            only,
        })
    }

    pub fn len(&self) -> usize {
        self.matches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.matches.is_empty()
    }

    /// Whether any chain looks at the application protocol, i.e. whether
    /// sniffing can change the choice.
    pub fn uses_application_protocols(&self) -> bool {
        self.matches
            .iter()
            .any(|m| !m.application_protocols.is_empty())
    }

    /// Whether any chain looks at the server name or asks for TLS, i.e.
    /// whether the TLS inspector can change the choice.
    pub fn uses_tls(&self) -> bool {
        self.matches
            .iter()
            .any(|m| !m.server_names.is_empty() || m.transport == Transport::Tls)
    }

    /// The chain for a plain-text connection to `dst` whose application
    /// protocol, if detected, is `app` (`http/1.1`, `http/1.0` or `h2c`).
    /// `None`: no chain matches (the default chain, if any, takes the
    /// connection).
    pub fn select(&self, dst: SocketAddr, app: Option<&str>) -> Option<usize> {
        let apps: &[&str] = match &app {
            Some(a) => std::slice::from_ref(a),
            None => &[],
        };
        self.select_detected(
            dst,
            &Detected {
                application_protocols: apps,
                ..Detected::default()
            },
        )
    }

    /// The chain for a connection to `dst` with what the listener filters
    /// detected.
    pub fn select_detected(&self, dst: SocketAddr, detected: &Detected<'_>) -> Option<usize> {
        if self.only.is_some() {
            return self.only;
        }
        // 1. Destination port: chains naming the port, else chains without one.
        let candidates: &[usize] = match self.by_port.get(&dst.port()) {
            Some(v) => v,
            None => &self.any_port,
        };
        if candidates.is_empty() {
            return None;
        }
        // 2. Destination IP: the longest matching prefix; no prefix is /0.
        let ip = dst.ip();
        let best = candidates
            .iter()
            .filter_map(|&i| self.matches[i].ip_score(ip))
            .max()?;
        let at_ip = |i: &&usize| self.matches[**i].ip_score(ip) == Some(best);
        // 3. Server name: the exact name, else the longest wildcard suffix,
        //    else the chains without server names.
        let sni = detected.server_name;
        let best_name = candidates
            .iter()
            .filter(at_ip)
            .filter_map(|&i| self.matches[i].server_name_score(sni))
            .max()?;
        let at_name =
            |i: &&usize| at_ip(i) && self.matches[**i].server_name_score(sni) == Some(best_name);
        // 4. Transport protocol: chains naming the detected one win over
        //    chains that leave it unset.
        let detected_transport = if detected.tls {
            Transport::Tls
        } else {
            Transport::RawBuffer
        };
        let named = candidates
            .iter()
            .filter(at_name)
            .any(|&i| self.matches[i].transport == detected_transport);
        let want_transport = if named {
            detected_transport
        } else {
            Transport::Any
        };
        let at_transport = |i: &&usize| at_name(i) && self.matches[**i].transport == want_transport;
        // 5. Application protocol: the first detected protocol some chain
        //    lists, else chains listing none.
        let chosen = detected.application_protocols.iter().find(|a| {
            candidates.iter().filter(at_transport).any(|&i| {
                self.matches[i]
                    .application_protocols
                    .iter()
                    .any(|p| p == *a)
            })
        });
        candidates.iter().filter(at_transport).copied().find(|&i| {
            let listed = &self.matches[i].application_protocols;
            match chosen {
                Some(a) => listed.iter().any(|p| p == a),
                None => listed.is_empty(),
            }
        })
    }
}

/// One point of a chain's criteria space, to find exact overlaps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MatchKey {
    port: Option<u16>,
    prefix: Option<Cidr>,
    server_name: Option<String>,
    transport: Transport,
    app: Option<String>,
}

fn expand(m: &ChainMatch) -> Vec<MatchKey> {
    let prefixes: Vec<Option<Cidr>> = if m.prefix_ranges.is_empty() {
        vec![None]
    } else {
        let unique: HashSet<Cidr> = m.prefix_ranges.iter().copied().collect();
        unique.into_iter().map(Some).collect()
    };
    let apps: Vec<Option<String>> = if m.application_protocols.is_empty() {
        vec![None]
    } else {
        let unique: HashSet<&String> = m.application_protocols.iter().collect();
        unique.into_iter().map(|a| Some(a.clone())).collect()
    };
    let names: Vec<Option<String>> = if m.server_names.is_empty() {
        vec![None]
    } else {
        let unique: HashSet<&String> = m.server_names.iter().collect();
        unique.into_iter().map(|a| Some(a.clone())).collect()
    };
    let mut out = Vec::with_capacity(prefixes.len() * apps.len() * names.len());
    for prefix in &prefixes {
        for name in &names {
            for app in &apps {
                out.push(MatchKey {
                    port: m.destination_port,
                    prefix: *prefix,
                    server_name: name.clone(),
                    transport: m.transport,
                    app: app.clone(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::google::protobuf::UInt32Value;

    fn cidr(s: &str) -> Cidr {
        let (ip, len) = s.split_once('/').unwrap();
        Cidr::new(ip.parse().unwrap(), len.parse().unwrap()).unwrap()
    }

    fn m(port: Option<u16>, ranges: &[&str], raw: bool, apps: &[&str]) -> ChainMatch {
        ChainMatch {
            destination_port: port,
            prefix_ranges: ranges.iter().map(|r| cidr(r)).collect(),
            server_names: Vec::new(),
            transport: if raw {
                Transport::RawBuffer
            } else {
                Transport::Any
            },
            application_protocols: apps.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn selector(chains: Vec<ChainMatch>) -> ChainSelector {
        let paths: Vec<String> = (0..chains.len())
            .map(|i| format!("filter_chains[{i}]"))
            .collect();
        ChainSelector::new(&Scope::new("listener", "l"), chains, &paths).unwrap()
    }

    #[test]
    fn cidr_contains_and_masks() {
        let c = cidr("10.1.2.3/16");
        assert_eq!(c.to_string(), "10.1.0.0/16");
        assert!(c.contains("10.1.200.1".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        assert!(cidr("0.0.0.0/0").contains("192.168.1.1".parse().unwrap()));
        assert!(cidr("::/0").contains("fd00::1".parse().unwrap()));
        assert!(Cidr::new("10.0.0.0".parse().unwrap(), 33).is_none());
    }

    /// Envoy's order of precedence, one row per (connection, expected chain).
    #[test]
    fn selection_order_table() {
        // An inbound listener shaped like Istio's virtualInbound.
        let s = selector(vec![
            /* 0 */ m(Some(8080), &[], true, &["http/1.1", "h2c"]),
            /* 1 */ m(Some(8080), &[], true, &[]),
            /* 2 */ m(Some(9090), &["10.0.0.0/8"], false, &[]),
            /* 3 */ m(Some(9090), &["10.1.0.0/16"], false, &[]),
            /* 4 */ m(None, &["0.0.0.0/0"], false, &[]),
            /* 5 */ m(None, &["::/0"], false, &[]),
            /* 6 */ m(Some(7070), &["192.168.0.0/16"], false, &[]),
            /* 7 */ m(Some(6060), &[], false, &["h2c"]),
            /* 8 */ m(Some(6060), &[], true, &[]),
        ]);
        let cases: &[(&str, Option<&str>, Option<usize>)] = &[
            // Port first, then application protocol among that port's chains.
            ("10.1.2.3:8080", Some("http/1.1"), Some(0)),
            ("10.1.2.3:8080", Some("h2c"), Some(0)),
            ("10.1.2.3:8080", Some("http/1.0"), Some(1)),
            ("10.1.2.3:8080", None, Some(1)),
            // Longest destination prefix wins.
            ("10.1.2.3:9090", None, Some(3)),
            ("10.2.0.1:9090", None, Some(2)),
            // Chains for the port exist but none matches the IP: no fallback
            // to the chains without a port.
            ("172.16.0.1:9090", None, None),
            ("10.0.0.1:7070", None, None),
            // No chain for the port: chains without a port, by address family.
            ("10.1.2.3:1234", None, Some(4)),
            ("[fd00::1]:1234", None, Some(5)),
            ("[fd00::1]:1234", Some("http/1.1"), Some(5)),
            // Transport protocol comes before application protocol: the
            // raw_buffer chain wins even though chain 7 lists h2c.
            ("10.0.0.1:6060", Some("h2c"), Some(8)),
        ];
        for (dst, app, want) in cases {
            let got = s.select(dst.parse().unwrap(), *app);
            assert_eq!(got, *want, "dst {dst} app {app:?}");
        }
    }

    fn named(port: Option<u16>, names: &[&str], transport: Transport, apps: &[&str]) -> ChainMatch {
        ChainMatch {
            destination_port: port,
            server_names: names.iter().map(|n| n.to_string()).collect(),
            transport,
            application_protocols: apps.iter().map(|a| a.to_string()).collect(),
            ..ChainMatch::default()
        }
    }

    /// Server names come after the destination and before the transport
    /// protocol; exact names beat wildcards, longer suffixes beat shorter.
    #[test]
    fn server_name_order_table() {
        use Transport::{Any, RawBuffer, Tls};
        let s = selector(vec![
            /* 0 */ named(Some(443), &["api.example.com"], Any, &[]),
            /* 1 */ named(Some(443), &["*.example.com"], Any, &[]),
            /* 2 */ named(Some(443), &["*.com"], Any, &[]),
            /* 3 */ named(Some(443), &[], Tls, &[]),
            /* 4 */ named(Some(443), &[], Any, &[]),
            /* 5 */ named(Some(443), &["h2.example.com"], Tls, &["h2"]),
            /* 6 */ named(Some(443), &["h2.example.com"], Tls, &[]),
            /* 7 */ named(Some(443), &["raw.example.com"], RawBuffer, &[]),
            /* 8 */ named(Some(8443), &["only.example.com"], Any, &[]),
        ]);
        let tls = |sni: Option<&'static str>, apps: &'static [&'static str]| Detected {
            tls: true,
            server_name: sni,
            application_protocols: apps,
        };
        let cases: &[(&str, Detected<'_>, Option<usize>)] = &[
            ("1.2.3.4:443", tls(Some("api.example.com"), &[]), Some(0)),
            ("1.2.3.4:443", tls(Some("www.example.com"), &[]), Some(1)),
            ("1.2.3.4:443", tls(Some("a.b.example.com"), &[]), Some(1)),
            ("1.2.3.4:443", tls(Some("other.com"), &[]), Some(2)),
            // `*.example.com` does not match `example.com` itself.
            ("1.2.3.4:443", tls(Some("example.com"), &[]), Some(2)),
            ("1.2.3.4:443", tls(Some("example.org"), &[]), Some(3)),
            ("1.2.3.4:443", tls(None, &[]), Some(3)),
            ("1.2.3.4:443", Detected::default(), Some(4)),
            ("1.2.3.4:443", tls(Some("h2.example.com"), &["h2"]), Some(5)),
            (
                "1.2.3.4:443",
                tls(Some("h2.example.com"), &["http/1.1"]),
                Some(6),
            ),
            // The name matched: no fallback to the chains without names, even
            // though the transport does not fit.
            ("1.2.3.4:443", tls(Some("raw.example.com"), &[]), None),
            ("1.2.3.4:8443", tls(Some("x.example.com"), &[]), None),
        ];
        for (dst, detected, want) in cases {
            let got = s.select_detected(dst.parse().unwrap(), detected);
            assert_eq!(got, *want, "dst {dst} detected {detected:?}");
        }
        assert!(s.uses_tls());
    }

    #[test]
    fn no_candidates_without_port_chains() {
        let s = selector(vec![m(Some(80), &[], false, &[])]);
        assert_eq!(s.select("1.2.3.4:81".parse().unwrap(), None), None);
        assert_eq!(s.select("1.2.3.4:80".parse().unwrap(), None), Some(0));
        assert_eq!(
            selector(vec![m(None, &[], false, &[])]).select("[::1]:5".parse().unwrap(), None),
            Some(0)
        );
        assert_eq!(
            selector(vec![]).select("1.2.3.4:80".parse().unwrap(), None),
            None
        );
    }

    #[test]
    fn application_protocol_without_fallback() {
        // Sniffed HTTP goes to the HTTP chain; anything else finds no chain
        // (the listener's default chain then takes it).
        let s = selector(vec![m(None, &[], false, &["http/1.1", "h2c"])]);
        assert_eq!(
            s.select("1.2.3.4:80".parse().unwrap(), Some("h2c")),
            Some(0)
        );
        assert_eq!(s.select("1.2.3.4:80".parse().unwrap(), None), None);
        assert!(s.uses_application_protocols());
    }

    #[test]
    fn overlapping_chains_are_refused() {
        let scope = Scope::new("listener", "l");
        let paths = vec![
            "filter_chains[0]".to_string(),
            "filter_chains[1]".to_string(),
        ];
        let err = ChainSelector::new(
            &scope,
            vec![
                m(Some(80), &[], false, &["http/1.1", "h2c"]),
                m(Some(80), &[], false, &["h2c"]),
            ],
            &paths,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "listener l: filter_chains[1].filter_chain_match: same matching rules as filter_chains[0] (multiple filter chains with the same matching rules)"
        );
        // Different transport protocol: distinct.
        assert!(
            ChainSelector::new(
                &scope,
                vec![m(Some(80), &[], false, &[]), m(Some(80), &[], true, &[])],
                &paths,
            )
            .is_ok()
        );
    }

    #[test]
    fn compiles_and_refuses_match_fields() {
        let scope = Scope::new("listener", "l");
        let ok = FilterChainMatch {
            destination_port: Some(UInt32Value { value: 8080 }),
            prefix_ranges: vec![CidrRange {
                address_prefix: "10.0.0.0".into(),
                prefix_len: Some(UInt32Value { value: 8 }),
            }],
            transport_protocol: "raw_buffer".into(),
            application_protocols: vec!["http/1.1".into(), "h2c".into()],
            ..Default::default()
        };
        let c = compile_match(&scope, "filter_chains[0].filter_chain_match", &ok).unwrap();
        assert_eq!(c.destination_port, Some(8080));
        assert_eq!(c.prefix_ranges, vec![super::tests::cidr("10.0.0.0/8")]);
        assert_eq!(c.transport, Transport::RawBuffer);
        let path = "filter_chains[0].filter_chain_match";
        let cases: Vec<(FilterChainMatch, &str)> = vec![
            (
                FilterChainMatch {
                    server_names: vec!["a.*.example".into()],
                    ..Default::default()
                },
                "listener l: filter_chains[0].filter_chain_match.server_names[0]: only a leading \"*.\" wildcard is allowed",
            ),
            (
                FilterChainMatch {
                    transport_protocol: "quic".into(),
                    ..Default::default()
                },
                "listener l: filter_chains[0].filter_chain_match.transport_protocol \"quic\" (only \"raw_buffer\" and \"tls\") is not supported",
            ),
            (
                FilterChainMatch {
                    source_ports: vec![1234],
                    ..Default::default()
                },
                "listener l: filter_chains[0].filter_chain_match.source_ports is not supported",
            ),
            (
                FilterChainMatch {
                    source_prefix_ranges: vec![CidrRange::default()],
                    ..Default::default()
                },
                "listener l: filter_chains[0].filter_chain_match.source_prefix_ranges is not supported",
            ),
            (
                FilterChainMatch {
                    direct_source_prefix_ranges: vec![CidrRange::default()],
                    ..Default::default()
                },
                "listener l: filter_chains[0].filter_chain_match.direct_source_prefix_ranges is not supported",
            ),
            (
                FilterChainMatch {
                    source_type: 1,
                    ..Default::default()
                },
                "listener l: filter_chains[0].filter_chain_match.source_type is not supported",
            ),
            (
                FilterChainMatch {
                    destination_port: Some(UInt32Value { value: 70000 }),
                    ..Default::default()
                },
                "listener l: filter_chains[0].filter_chain_match.destination_port: must be in 1..=65535",
            ),
            (
                FilterChainMatch {
                    prefix_ranges: vec![CidrRange {
                        address_prefix: "10.0.0.0".into(),
                        prefix_len: Some(UInt32Value { value: 40 }),
                    }],
                    ..Default::default()
                },
                "listener l: filter_chains[0].filter_chain_match.prefix_ranges[0].prefix_len: out of range",
            ),
            (
                FilterChainMatch {
                    prefix_ranges: vec![CidrRange {
                        address_prefix: "svc.local".into(),
                        prefix_len: None,
                    }],
                    ..Default::default()
                },
                "listener l: filter_chains[0].filter_chain_match.prefix_ranges[0].address_prefix: \"svc.local\" is not an IP address",
            ),
        ];
        for (m, want) in cases {
            assert_eq!(
                compile_match(&scope, path, &m).unwrap_err().to_string(),
                want
            );
        }
    }
}
