//! Traffic capture for sidecars: the iptables rules that send a pod's TCP
//! traffic through its proxy, built the way Istio's `istio-iptables` builds
//! them, so that a pod captured by Mizzen behaves like one captured by Istio.
//!
//! In the `nat` table:
//!
//! * `ISTIO_INBOUND` (from `PREROUTING`) sends inbound TCP to the chosen
//!   ports (or all, minus exclusions) to `ISTIO_IN_REDIRECT`, which
//!   redirects it to the inbound capture port (15006). The tunnel port
//!   (15008) is always left alone.
//! * `ISTIO_OUTPUT` (from `OUTPUT`) lets through: traffic from 127.0.0.6 on
//!   `lo` (the proxy's own connections to the app, bound there by
//!   `InboundPassthroughCluster`), the proxy's other traffic (owner uid/gid
//!   1337), and the app talking to itself over `lo`; it redirects the proxy's
//!   calls back to its own pod address (`lo`, not 127.0.0.1) to the inbound
//!   port, so that a pod calling its own service goes out and back in
//!   through the proxy; and sends the rest (all destinations, or the
//!   included CIDRs, minus exclusions) to `ISTIO_REDIRECT`, which redirects
//!   to the outbound capture port (15001).
//!
//! Rules are data ([`RuleSet`]): rendered as `iptables-restore` input,
//! applied in the current network namespace ([`apply`]; run it under
//! `ip netns exec` for a pod), printed for `--dry-run`, and removed again by
//! [`cleanup`]. IPv6 rules (`ip6tables`) are produced when
//! [`CaptureConfig::enable_ipv6`] is set, with `::6` and `::1` in place of
//! 127.0.0.6 and 127.0.0.1. TPROXY inbound interception is not supported.

pub mod effect;

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command as Process, Stdio};

pub use crate::config::Cidr;
use effect::{Block, Command};

/// Istio's chains.
pub const ISTIO_INBOUND: &str = "ISTIO_INBOUND";
pub const ISTIO_REDIRECT: &str = "ISTIO_REDIRECT";
pub const ISTIO_IN_REDIRECT: &str = "ISTIO_IN_REDIRECT";
pub const ISTIO_OUTPUT: &str = "ISTIO_OUTPUT";
pub const ISTIO_OUTPUT_DNS: &str = "ISTIO_OUTPUT_DNS";
pub const ISTIO_DROP: &str = "ISTIO_DROP";
/// Every chain any version of the capture may have created (TPROXY's too),
/// so that cleanup removes them all.
const ALL_CHAINS: [&str; 8] = [
    ISTIO_INBOUND,
    ISTIO_REDIRECT,
    ISTIO_IN_REDIRECT,
    ISTIO_OUTPUT,
    ISTIO_OUTPUT_DNS,
    ISTIO_DROP,
    "ISTIO_DIVERT",
    "ISTIO_TPROXY",
];
const BUILTIN_CHAINS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
/// Where the agent's DNS proxy listens in Istio.
pub const DNS_PROXY_PORT: u16 = 15053;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{flag}: {problem}")]
    InvalidOption { flag: &'static str, problem: String },
    #[error("{command}: {problem}")]
    Command { command: String, problem: String },
}

fn invalid(flag: &'static str, problem: impl Into<String>) -> CaptureError {
    CaptureError::InvalidOption {
        flag,
        problem: problem.into(),
    }
}

/// How inbound connections reach the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterceptionMode {
    Redirect,
}

impl std::str::FromStr for InterceptionMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "REDIRECT" => Ok(InterceptionMode::Redirect),
            "TPROXY" => Err(
                "TPROXY is not supported (the proxy has no transparent listeners); use REDIRECT"
                    .into(),
            ),
            other => Err(format!("unknown interception mode {other:?} (REDIRECT)")),
        }
    }
}

/// A list that may be the wildcard `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection<T> {
    All,
    Only(Vec<T>),
}

impl<T> Selection<T> {
    pub fn none() -> Selection<T> {
        Selection::Only(Vec::new())
    }
}

/// The capture options, named and defaulted as `istio-iptables`' flags are
/// by Istio's sidecar injector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    /// `-p`: outbound capture port.
    pub proxy_port: u16,
    /// `-z`: inbound capture port.
    pub inbound_capture_port: u16,
    /// `-e`: inbound tunnel port, never captured.
    pub inbound_tunnel_port: u16,
    /// `-u`: users whose traffic is not captured (the proxy's).
    pub proxy_uids: Vec<String>,
    /// `-g`: groups whose traffic is not captured.
    pub proxy_gids: Vec<String>,
    /// `-m`
    pub inbound_mode: InterceptionMode,
    /// `-b`: inbound ports to capture (ports or `a:b` ranges).
    pub inbound_ports: Selection<String>,
    /// `-d`: inbound ports not captured when all are.
    pub inbound_ports_exclude: Vec<String>,
    /// `-i`: outbound destinations to capture.
    pub outbound_cidrs: Selection<Cidr>,
    /// `-x`: outbound destinations never captured.
    pub outbound_cidrs_exclude: Vec<Cidr>,
    /// `-q`: outbound ports always captured.
    pub outbound_ports_include: Vec<String>,
    /// `-o`: outbound ports never captured.
    pub outbound_ports_exclude: Vec<String>,
    /// `-c`: interfaces whose traffic is never captured.
    pub exclude_interfaces: Vec<String>,
    /// `-k`: interfaces whose inbound traffic is treated as outbound.
    pub kube_virt_interfaces: Vec<String>,
    /// Groups whose outbound traffic is captured (`*`: all), Istio's
    /// `ISTIO_OUTBOUND_OWNER_GROUPS`.
    pub owner_groups: Selection<String>,
    /// Groups left alone when all are captured (`ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE`).
    pub owner_groups_exclude: Vec<String>,
    /// What counts as "localhost" for outbound (`ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`).
    pub ipv4_loopback_cidr: Cidr,
    /// Send DNS to the agent's DNS proxy on 15053 (only for the servers
    /// below unless `capture_all_dns`).
    pub redirect_dns: bool,
    pub capture_all_dns: bool,
    pub dns_servers_v4: Vec<Ipv4Addr>,
    pub dns_servers_v6: Vec<Ipv6Addr>,
    /// Drop packets conntrack finds invalid instead of resetting connections.
    pub drop_invalid: bool,
    /// Also produce and apply `ip6tables` rules.
    pub enable_ipv6: bool,
}

impl Default for CaptureConfig {
    /// What Istio's injector passes a sidecar: capture all inbound ports but
    /// the proxy's own (15090, 15021, 15020) and all outbound traffic.
    fn default() -> Self {
        CaptureConfig {
            proxy_port: 15001,
            inbound_capture_port: 15006,
            inbound_tunnel_port: 15008,
            proxy_uids: vec!["1337".into()],
            proxy_gids: vec!["1337".into()],
            inbound_mode: InterceptionMode::Redirect,
            inbound_ports: Selection::All,
            inbound_ports_exclude: vec!["15090".into(), "15021".into(), "15020".into()],
            outbound_cidrs: Selection::All,
            outbound_cidrs_exclude: Vec::new(),
            outbound_ports_include: Vec::new(),
            outbound_ports_exclude: Vec::new(),
            exclude_interfaces: Vec::new(),
            kube_virt_interfaces: Vec::new(),
            owner_groups: Selection::All,
            owner_groups_exclude: Vec::new(),
            ipv4_loopback_cidr: loopback_v4(),
            redirect_dns: false,
            capture_all_dns: false,
            dns_servers_v4: Vec::new(),
            dns_servers_v6: Vec::new(),
            drop_invalid: false,
            enable_ipv6: false,
        }
    }
}

fn loopback_v4() -> Cidr {
    Cidr::from_ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// Parses a comma-separated list as the flags take it (empty items dropped).
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses `*` or a list of ports / `a:b` ranges.
pub fn parse_ports(flag: &'static str, s: &str) -> Result<Selection<String>, CaptureError> {
    if s.trim() == "*" {
        return Ok(Selection::All);
    }
    Ok(Selection::Only(parse_port_list(flag, s)?))
}

pub fn parse_port_list(flag: &'static str, s: &str) -> Result<Vec<String>, CaptureError> {
    let ports = split_list(s);
    for p in &ports {
        let ok = p
            .split(':')
            .map(|n| n.parse::<u16>().ok())
            .collect::<Option<Vec<u16>>>()
            .is_some_and(|v| (1..=2).contains(&v.len()));
        if !ok {
            return Err(invalid(
                flag,
                format!("{p:?} is not a port or a port range"),
            ));
        }
    }
    Ok(ports)
}

/// Parses `*` or a list of CIDRs (an address alone is a /32 or /128).
pub fn parse_cidrs(flag: &'static str, s: &str) -> Result<Selection<Cidr>, CaptureError> {
    if s.trim() == "*" {
        return Ok(Selection::All);
    }
    Ok(Selection::Only(parse_cidr_list(flag, s)?))
}

pub fn parse_cidr_list(flag: &'static str, s: &str) -> Result<Vec<Cidr>, CaptureError> {
    split_list(s)
        .iter()
        .map(|item| {
            parse_cidr(item).ok_or_else(|| invalid(flag, format!("{item:?} is not a CIDR")))
        })
        .collect()
}

pub fn parse_cidr(s: &str) -> Option<Cidr> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, Some(len.parse::<u8>().ok()?)),
        None => (s.parse::<IpAddr>().ok()?, None),
    };
    let len = len.unwrap_or(if ip.is_ipv4() { 32 } else { 128 });
    Cidr::new(ip, len)
}

/// Parses the owner-groups selection (`*` or names/GIDs).
pub fn parse_groups(s: &str) -> Selection<String> {
    if s.trim() == "*" {
        Selection::All
    } else {
        Selection::Only(split_list(s))
    }
}

/// IP version of a rule set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn restore(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }
    fn save(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }
}

/// One rule: a table, a chain, append or insert, and the rule's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: &'static str,
    pub chain: String,
    /// `None`: append; `Some(n)`: insert at position n (1-based).
    pub insert_at: Option<usize>,
    pub spec: Vec<String>,
}

impl Rule {
    fn render(&self) -> String {
        match self.insert_at {
            None => format!("-A {} {}", self.chain, self.spec.join(" ")),
            Some(n) => format!("-I {} {n} {}", self.chain, self.spec.join(" ")),
        }
    }
}

/// The capture rules of both IP versions, in the order they are applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub v4: Vec<Rule>,
    /// Empty unless IPv6 is enabled.
    pub v6: Vec<Rule>,
}

const TABLES: [&str; 3] = ["mangle", "nat", "raw"];

impl RuleSet {
    pub fn rules(&self, family: Family) -> &[Rule] {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// The `iptables-restore` input (`--noflush`) for one IP version: each
    /// table declares the chains it uses, then adds its rules.
    pub fn restore_input(&self, family: Family) -> String {
        let rules = self.rules(family);
        let mut out = String::new();
        for table in TABLES {
            let in_table: Vec<&Rule> = rules.iter().filter(|r| r.table == table).collect();
            if in_table.is_empty() {
                continue;
            }
            let _ = writeln!(out, "*{table}");
            for chain in chains_of(&in_table) {
                let _ = writeln!(out, ":{chain} - [0:0]");
            }
            for r in &in_table {
                let _ = writeln!(out, "{}", r.render());
            }
            let _ = writeln!(out, "COMMIT");
        }
        out
    }

    /// What `--dry-run` prints: the input of each restore command.
    pub fn dry_run_text(&self) -> String {
        let mut out = format!(
            "# iptables-restore --noflush\n{}",
            self.restore_input(Family::V4)
        );
        if !self.v6.is_empty() {
            let _ = write!(
                out,
                "# ip6tables-restore --noflush\n{}",
                self.restore_input(Family::V6)
            );
        }
        out
    }

    /// The rules as parsed blocks, to compare their effect.
    pub fn blocks(&self, family: Family) -> Vec<Block> {
        effect::parse_blocks(&self.restore_input(family))
    }
}

/// Chains the rules create: those holding rules and those jumped to, minus
/// the built-in ones, in order of first use.
fn chains_of(rules: &[&Rule]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |c: &str| {
        if !BUILTIN_CHAINS.contains(&c) && !out.iter().any(|o| o == c) {
            out.push(c.to_string());
        }
    };
    for r in rules {
        add(&r.chain);
        if let Some(target) = jump_target(&r.spec)
            && target.starts_with("ISTIO_")
        {
            add(target);
        }
    }
    out
}

fn jump_target(spec: &[String]) -> Option<&str> {
    spec.iter()
        .position(|t| t == "-j" || t == "--jump")
        .and_then(|i| spec.get(i + 1))
        .map(String::as_str)
}

/// Which families a rule goes to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Only {
    Both,
    V4,
    V6,
}

/// Collects rules for both families; `{lo}` / `{src}` in a spec stand for the
/// family's loopback CIDR and the inbound-passthrough source.
struct Builder<'a> {
    cfg: &'a CaptureConfig,
    set: RuleSet,
}

impl Builder<'_> {
    fn push(
        &mut self,
        only: Only,
        table: &'static str,
        chain: &str,
        at: Option<usize>,
        spec: &[&str],
    ) {
        for (family, rules) in [
            (Family::V4, &mut self.set.v4),
            (Family::V6, &mut self.set.v6),
        ] {
            let wanted = match only {
                Only::Both => true,
                Only::V4 => family == Family::V4,
                Only::V6 => family == Family::V6,
            };
            if !wanted || (family == Family::V6 && !self.cfg.enable_ipv6) {
                continue;
            }
            let (lo, src) = match family {
                Family::V4 => (
                    self.cfg.ipv4_loopback_cidr.to_string(),
                    "127.0.0.6/32".to_string(),
                ),
                Family::V6 => ("::1/128".to_string(), "::6/128".to_string()),
            };
            let spec = spec
                .iter()
                .map(|t| match *t {
                    "{lo}" => lo.clone(),
                    "{src}" => src.clone(),
                    other => other.to_string(),
                })
                .collect();
            rules.push(Rule {
                table,
                chain: chain.to_string(),
                insert_at: at,
                spec,
            });
        }
    }

    fn append(&mut self, table: &'static str, chain: &str, spec: &[&str]) {
        self.push(Only::Both, table, chain, None, spec);
    }
}

/// Builds the capture rules for `cfg`, in Istio's order.
pub fn rules(cfg: &CaptureConfig) -> Result<RuleSet, CaptureError> {
    if cfg.proxy_uids.is_empty() && cfg.proxy_gids.is_empty() {
        return Err(invalid(
            "--proxy-uid",
            "the proxy's user or group is needed, or its own traffic would loop back into it",
        ));
    }
    let mut b = Builder {
        cfg,
        set: RuleSet::default(),
    };
    let tunnel = cfg.inbound_tunnel_port.to_string();
    let proxy_port = cfg.proxy_port.to_string();
    let inbound_port = cfg.inbound_capture_port.to_string();
    let (include_v4, include_v6): (Vec<Cidr>, Vec<Cidr>) = match &cfg.outbound_cidrs {
        Selection::All => (Vec::new(), Vec::new()),
        Selection::Only(c) => c.iter().partition(|c| c.is_ipv4()),
    };
    let (exclude_v4, exclude_v6): (Vec<Cidr>, Vec<Cidr>) =
        cfg.outbound_cidrs_exclude.iter().partition(|c| c.is_ipv4());
    // Listing a loopback range on purpose means the app's own loopback
    // traffic is wanted too.
    let include_loopback = include_v4
        .iter()
        .chain(&include_v6)
        .any(|c| c.ip().is_loopback());
    let dns = cfg.redirect_dns
        && (cfg.capture_all_dns
            || !cfg.dns_servers_v4.is_empty()
            || !cfg.dns_servers_v6.is_empty());

    for nic in &cfg.exclude_interfaces {
        b.append("nat", "PREROUTING", &["-i", nic, "-j", "RETURN"]);
        b.append("nat", "OUTPUT", &["-o", nic, "-j", "RETURN"]);
    }
    for nic in &cfg.kube_virt_interfaces {
        b.push(
            Only::Both,
            "nat",
            "PREROUTING",
            Some(1),
            &["-i", nic, "-j", "RETURN"],
        );
    }
    if cfg.drop_invalid {
        b.append(
            "mangle",
            "PREROUTING",
            &["-m", "conntrack", "--ctstate", "INVALID", "-j", ISTIO_DROP],
        );
        b.append("mangle", ISTIO_DROP, &["-j", "DROP"]);
    }
    b.append(
        "nat",
        ISTIO_INBOUND,
        &["-p", "tcp", "--dport", &tunnel, "-j", "RETURN"],
    );
    b.append(
        "nat",
        ISTIO_REDIRECT,
        &["-p", "tcp", "-j", "REDIRECT", "--to-ports", &proxy_port],
    );
    b.append(
        "nat",
        ISTIO_IN_REDIRECT,
        &["-p", "tcp", "-j", "REDIRECT", "--to-ports", &inbound_port],
    );

    // Inbound.
    let inbound_wanted = match &cfg.inbound_ports {
        Selection::All => true,
        Selection::Only(p) => !p.is_empty(),
    };
    if inbound_wanted {
        b.append("nat", "PREROUTING", &["-p", "tcp", "-j", ISTIO_INBOUND]);
        match &cfg.inbound_ports {
            Selection::All => {
                for port in &cfg.inbound_ports_exclude {
                    b.append(
                        "nat",
                        ISTIO_INBOUND,
                        &["-p", "tcp", "--dport", port, "-j", "RETURN"],
                    );
                }
                b.append(
                    "nat",
                    ISTIO_INBOUND,
                    &["-p", "tcp", "-j", ISTIO_IN_REDIRECT],
                );
            }
            Selection::Only(ports) => {
                for port in ports {
                    b.append(
                        "nat",
                        ISTIO_INBOUND,
                        &["-p", "tcp", "--dport", port, "-j", ISTIO_IN_REDIRECT],
                    );
                }
            }
        }
    }

    // Outbound.
    b.append("nat", "OUTPUT", &["-j", ISTIO_OUTPUT]);
    for port in &cfg.outbound_ports_exclude {
        b.append(
            "nat",
            ISTIO_OUTPUT,
            &["-p", "tcp", "--dport", port, "-j", "RETURN"],
        );
        b.append(
            "nat",
            ISTIO_OUTPUT,
            &["-p", "udp", "--dport", port, "-j", "RETURN"],
        );
    }
    // The proxy's connections to the app, from 127.0.0.6 (::6).
    b.append(
        "nat",
        ISTIO_OUTPUT,
        &["-o", "lo", "-s", "{src}", "-j", "RETURN"],
    );
    let not_ports_dns = format!("53,{tunnel}");
    for (owner, ids) in [
        ("--uid-owner", &cfg.proxy_uids),
        ("--gid-owner", &cfg.proxy_gids),
    ] {
        for id in ids {
            // The proxy calling its own pod's address (not localhost) goes
            // back in through the inbound port: app → proxy → proxy → app.
            if dns && owner == "--uid-owner" {
                b.append(
                    "nat",
                    ISTIO_OUTPUT,
                    &[
                        "-o",
                        "lo",
                        "!",
                        "-d",
                        "{lo}",
                        "-p",
                        "tcp",
                        "-m",
                        "multiport",
                        "!",
                        "--dports",
                        &not_ports_dns,
                        "-m",
                        "owner",
                        owner,
                        id,
                        "-j",
                        ISTIO_IN_REDIRECT,
                    ],
                );
            } else {
                b.append(
                    "nat",
                    ISTIO_OUTPUT,
                    &[
                        "-o",
                        "lo",
                        "!",
                        "-d",
                        "{lo}",
                        "-p",
                        "tcp",
                        "!",
                        "--dport",
                        &tunnel,
                        "-m",
                        "owner",
                        owner,
                        id,
                        "-j",
                        ISTIO_IN_REDIRECT,
                    ],
                );
            }
            // The app talking to itself over lo stays direct.
            if !include_loopback {
                if dns {
                    b.append(
                        "nat",
                        ISTIO_OUTPUT,
                        &[
                            "-o", "lo", "-p", "tcp", "!", "--dport", "53", "-m", "owner", "!",
                            owner, id, "-j", "RETURN",
                        ],
                    );
                } else {
                    b.append(
                        "nat",
                        ISTIO_OUTPUT,
                        &["-o", "lo", "-m", "owner", "!", owner, id, "-j", "RETURN"],
                    );
                }
            }
            // Everything else the proxy sends is left alone.
            b.append(
                "nat",
                ISTIO_OUTPUT,
                &["-m", "owner", owner, id, "-j", "RETURN"],
            );
        }
    }
    match &cfg.owner_groups {
        Selection::All => {
            for g in &cfg.owner_groups_exclude {
                b.append(
                    "nat",
                    ISTIO_OUTPUT,
                    &["-m", "owner", "--gid-owner", g, "-j", "RETURN"],
                );
            }
        }
        Selection::Only(groups) => {
            let mut spec: Vec<&str> = Vec::new();
            for g in groups {
                spec.extend(["-m", "owner", "!", "--gid-owner", g.as_str()]);
            }
            spec.extend(["-j", "RETURN"]);
            b.append("nat", ISTIO_OUTPUT, &spec);
        }
    }
    if dns {
        dns_rules(&mut b);
    }
    // Explicit localhost traffic (proxy-aware apps, containers of the pod).
    b.append("nat", ISTIO_OUTPUT, &["-d", "{lo}", "-j", "RETURN"]);
    for c in &exclude_v4 {
        b.push(
            Only::V4,
            "nat",
            ISTIO_OUTPUT,
            None,
            &["-d", &c.to_string(), "-j", "RETURN"],
        );
    }
    for c in &exclude_v6 {
        b.push(
            Only::V6,
            "nat",
            ISTIO_OUTPUT,
            None,
            &["-d", &c.to_string(), "-j", "RETURN"],
        );
    }
    for port in &cfg.outbound_ports_include {
        b.append(
            "nat",
            ISTIO_OUTPUT,
            &["-p", "tcp", "--dport", port, "-j", ISTIO_REDIRECT],
        );
    }
    for (only, include) in [(Only::V4, &include_v4), (Only::V6, &include_v6)] {
        match &cfg.outbound_cidrs {
            Selection::All => {
                b.push(only, "nat", ISTIO_OUTPUT, None, &["-j", ISTIO_REDIRECT]);
                for nic in &cfg.kube_virt_interfaces {
                    b.push(
                        only,
                        "nat",
                        "PREROUTING",
                        Some(1),
                        &["-i", nic, "-j", ISTIO_REDIRECT],
                    );
                }
            }
            Selection::Only(_) => {
                for c in include.iter() {
                    let c = c.to_string();
                    for nic in &cfg.kube_virt_interfaces {
                        b.push(
                            only,
                            "nat",
                            "PREROUTING",
                            Some(1),
                            &["-i", nic, "-d", &c, "-j", ISTIO_REDIRECT],
                        );
                    }
                    b.push(
                        only,
                        "nat",
                        ISTIO_OUTPUT,
                        None,
                        &["-d", &c, "-j", ISTIO_REDIRECT],
                    );
                }
            }
        }
    }
    Ok(b.set)
}

/// DNS to the agent's DNS proxy, and conntrack zones that keep the proxy's
/// own DNS flows apart from the app's.
fn dns_rules(b: &mut Builder<'_>) {
    let cfg = b.cfg;
    let port = DNS_PROXY_PORT.to_string();
    let v4: Vec<String> = cfg
        .dns_servers_v4
        .iter()
        .map(|s| format!("{s}/32"))
        .collect();
    let v6: Vec<String> = cfg
        .dns_servers_v6
        .iter()
        .map(|s| format!("{s}/128"))
        .collect();
    b.append("raw", "OUTPUT", &["-j", ISTIO_OUTPUT_DNS]);
    if cfg.capture_all_dns || !v4.is_empty() {
        b.push(
            Only::V4,
            "nat",
            ISTIO_OUTPUT,
            None,
            &["-j", ISTIO_OUTPUT_DNS],
        );
    }
    if cfg.capture_all_dns || !v6.is_empty() {
        b.push(
            Only::V6,
            "nat",
            ISTIO_OUTPUT,
            None,
            &["-j", ISTIO_OUTPUT_DNS],
        );
    }
    for proto in ["tcp", "udp"] {
        if cfg.capture_all_dns {
            b.append(
                "nat",
                ISTIO_OUTPUT_DNS,
                &[
                    "-p",
                    proto,
                    "--dport",
                    "53",
                    "-j",
                    "REDIRECT",
                    "--to-ports",
                    &port,
                ],
            );
        } else {
            for (only, servers) in [(Only::V4, &v4), (Only::V6, &v6)] {
                for s in servers {
                    b.push(
                        only,
                        "nat",
                        ISTIO_OUTPUT_DNS,
                        None,
                        &[
                            "-p",
                            proto,
                            "--dport",
                            "53",
                            "-d",
                            s,
                            "-j",
                            "REDIRECT",
                            "--to-ports",
                            &port,
                        ],
                    );
                }
            }
        }
    }
    for (owner, ids) in [
        ("--uid-owner", &cfg.proxy_uids),
        ("--gid-owner", &cfg.proxy_gids),
    ] {
        for id in ids {
            b.append(
                "raw",
                ISTIO_OUTPUT_DNS,
                &[
                    "-p", "udp", "--dport", "53", "-m", "owner", owner, id, "-j", "CT", "--zone",
                    "1",
                ],
            );
            b.append(
                "raw",
                ISTIO_OUTPUT_DNS,
                &[
                    "-p", "udp", "--sport", &port, "-m", "owner", owner, id, "-j", "CT", "--zone",
                    "2",
                ],
            );
        }
    }
    if cfg.capture_all_dns {
        b.append("raw", "PREROUTING", &["-j", ISTIO_INBOUND]);
        b.append(
            "raw",
            ISTIO_OUTPUT_DNS,
            &["-p", "udp", "--dport", "53", "-j", "CT", "--zone", "2"],
        );
        b.append(
            "raw",
            ISTIO_INBOUND,
            &["-p", "udp", "--sport", "53", "-j", "CT", "--zone", "1"],
        );
    } else {
        for (only, servers) in [(Only::V4, &v4), (Only::V6, &v6)] {
            if !servers.is_empty() {
                b.push(only, "raw", "PREROUTING", None, &["-j", ISTIO_INBOUND]);
            }
            for s in servers {
                b.push(
                    only,
                    "raw",
                    ISTIO_OUTPUT_DNS,
                    None,
                    &[
                        "-p", "udp", "--dport", "53", "-d", s, "-j", "CT", "--zone", "2",
                    ],
                );
                b.push(
                    only,
                    "raw",
                    ISTIO_INBOUND,
                    None,
                    &[
                        "-p", "udp", "--sport", "53", "-s", s, "-j", "CT", "--zone", "1",
                    ],
                );
            }
        }
    }
}

/// Runs the commands capture needs; a trait so that tests can watch them.
pub trait Runner {
    /// Runs `program args`, feeding `stdin` when given; returns stdout.
    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, CaptureError>;
}

/// Runs real commands, looking in `/usr/sbin` and `/sbin` too when they are
/// not on `PATH`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, CaptureError> {
        let command_line = format!("{program} {}", args.join(" "));
        let fail = |problem: String| CaptureError::Command {
            command: command_line.clone(),
            problem,
        };
        let mut last_err = None;
        for candidate in [
            program.to_string(),
            format!("/usr/sbin/{program}"),
            format!("/sbin/{program}"),
        ] {
            let spawned = Process::new(&candidate)
                .args(args)
                .stdin(if stdin.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            let mut child = match spawned {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    last_err = Some(e);
                    continue;
                }
                Err(e) => return Err(fail(e.to_string())),
            };
            if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
                pipe.write_all(input.as_bytes())
                    .map_err(|e| fail(format!("writing its input: {e}")))?;
            }
            let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
            if !out.status.success() {
                return Err(fail(format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(fail(format!(
            "not found: {}",
            last_err.map(|e| e.to_string()).unwrap_or_default()
        )))
    }
}

/// Keep other rules; wait for the xtables lock, which every network
/// namespace shares with legacy iptables.
const RESTORE_ARGS: &[&str] = &["--noflush", "--wait"];

/// Installs the capture rules in the current network namespace, replacing
/// any left by an earlier run.
pub fn apply(cfg: &CaptureConfig) -> Result<(), CaptureError> {
    apply_with(cfg, &SystemRunner)
}

pub fn apply_with(cfg: &CaptureConfig, runner: &dyn Runner) -> Result<(), CaptureError> {
    let set = rules(cfg)?;
    cleanup_with(cfg, runner)?;
    runner.run(
        Family::V4.restore(),
        RESTORE_ARGS,
        Some(&set.restore_input(Family::V4)),
    )?;
    if cfg.enable_ipv6 {
        // The proxy binds ::6 to reach the app; IPv6 loopback only has ::1.
        let addrs = runner.run("ip", &["-6", "addr", "show", "dev", "lo"], None)?;
        if !addrs.contains("inet6 ::6/128") {
            runner.run("ip", &["-6", "addr", "add", "::6/128", "dev", "lo"], None)?;
        }
        runner.run(
            Family::V6.restore(),
            RESTORE_ARGS,
            Some(&set.restore_input(Family::V6)),
        )?;
    }
    Ok(())
}

/// Removes what [`apply`] installed: the ISTIO_* chains and the rules of the
/// built-in chains that jump to them or that `cfg` adds there.
pub fn cleanup(cfg: &CaptureConfig) -> Result<(), CaptureError> {
    cleanup_with(cfg, &SystemRunner)
}

pub fn cleanup_with(cfg: &CaptureConfig, runner: &dyn Runner) -> Result<(), CaptureError> {
    let set = rules(cfg)?;
    let mut families = vec![Family::V4];
    if cfg.enable_ipv6 {
        families.push(Family::V6);
    }
    for family in families {
        let saved = runner.run(family.save(), &[], None)?;
        let input = cleanup_input(&set, family, &saved);
        if !input.is_empty() {
            runner.run(family.restore(), RESTORE_ARGS, Some(&input))?;
        }
    }
    Ok(())
}

/// The `iptables-restore --noflush` input that undoes the capture, given the
/// current tables (`iptables-save` output). Empty when nothing is installed.
pub fn cleanup_input(set: &RuleSet, family: Family, saved: &str) -> String {
    let ours: Vec<(&str, String, effect::NormalRule)> = set
        .rules(family)
        .iter()
        .filter(|r| BUILTIN_CHAINS.contains(&r.chain.as_str()))
        .map(|r| (r.table, r.chain.clone(), effect::normalize(&r.spec)))
        .collect();
    let mut out = String::new();
    for block in effect::parse_blocks(saved) {
        let mut deletes = Vec::new();
        let mut chains = Vec::new();
        for c in &block.commands {
            match c {
                Command::Declare(name) if ALL_CHAINS.contains(&name.as_str()) => {
                    chains.push(name.clone())
                }
                Command::Append { chain, spec } if BUILTIN_CHAINS.contains(&chain.as_str()) => {
                    let to_ours = jump_target(spec).is_some_and(|t| ALL_CHAINS.contains(&t));
                    let normal = effect::normalize(spec);
                    let added = ours
                        .iter()
                        .any(|(t, ch, n)| *t == block.table && ch == chain && *n == normal);
                    if to_ours || added {
                        deletes.push(format!("-D {chain} {}", spec.join(" ")));
                    }
                }
                _ => {}
            }
        }
        if deletes.is_empty() && chains.is_empty() {
            continue;
        }
        let _ = writeln!(out, "*{}", block.table);
        for d in deletes {
            let _ = writeln!(out, "{d}");
        }
        // Flush all first: the chains jump to each other.
        for c in &chains {
            let _ = writeln!(out, "-F {c}");
        }
        for c in &chains {
            let _ = writeln!(out, "-X {c}");
        }
        let _ = writeln!(out, "COMMIT");
    }
    out
}

/// DNS servers from a `resolv.conf`, as Istio's agent reads them.
pub fn resolv_conf_servers(text: &str) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        match words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
            Some(IpAddr::V4(a)) => v4.push(a),
            Some(IpAddr::V6(a)) => v6.push(a),
            None => {}
        }
    }
    (v4, v6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn lines(set: &RuleSet, family: Family) -> Vec<String> {
        set.rules(family)
            .iter()
            .map(|r| format!("{} {}", r.table, r.render()))
            .collect()
    }

    #[test]
    fn sidecar_defaults() {
        let set = rules(&CaptureConfig::default()).unwrap();
        assert!(set.v6.is_empty());
        let got = lines(&set, Family::V4);
        let want = [
            "nat -A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
            "nat -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
            "nat -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
            "nat -A PREROUTING -p tcp -j ISTIO_INBOUND",
            "nat -A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN",
            "nat -A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN",
            "nat -A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN",
            "nat -A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
            "nat -A OUTPUT -j ISTIO_OUTPUT",
            "nat -A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
            "nat -A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
            "nat -A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
            "nat -A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
            "nat -A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT",
            "nat -A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN",
            "nat -A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
            "nat -A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
            "nat -A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        ];
        assert_eq!(got, want);
        let input = set.restore_input(Family::V4);
        assert!(input.starts_with(
            "*nat\n:ISTIO_INBOUND - [0:0]\n:ISTIO_REDIRECT - [0:0]\n:ISTIO_IN_REDIRECT - [0:0]\n:ISTIO_OUTPUT - [0:0]\n-A ISTIO_INBOUND"
        ), "{input}");
        assert!(input.ends_with("-A ISTIO_OUTPUT -j ISTIO_REDIRECT\nCOMMIT\n"));
    }

    #[test]
    fn option_parsing() {
        assert_eq!(parse_ports("-b", "*").unwrap(), Selection::All);
        assert_eq!(
            parse_ports("-b", "80, 8000:9000,").unwrap(),
            Selection::Only(vec!["80".into(), "8000:9000".into()])
        );
        assert!(parse_ports("-b", "http").is_err());
        assert!(parse_ports("-b", "70000").is_err());
        let c = parse_cidrs("-i", "10.0.0.0/8,fd00::/8,1.2.3.4").unwrap();
        let Selection::Only(c) = c else { panic!() };
        assert_eq!(
            c.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            ["10.0.0.0/8", "fd00::/8", "1.2.3.4/32"]
        );
        assert_eq!(
            parse_cidrs("-i", "nonsense").unwrap_err().to_string(),
            "-i: \"nonsense\" is not a CIDR"
        );
        assert!("TPROXY".parse::<InterceptionMode>().is_err());
        let (v4, v6) =
            resolv_conf_servers("# x\nnameserver 10.96.0.10\nnameserver fd00::a\nsearch a.b\n");
        assert_eq!(v4, vec![Ipv4Addr::new(10, 96, 0, 10)]);
        assert_eq!(v6.len(), 1);
    }

    /// Records commands and answers `iptables-save` with a fixed state.
    struct Fake {
        saved: String,
        calls: RefCell<Vec<(String, Option<String>)>>,
    }

    impl Runner for Fake {
        fn run(
            &self,
            program: &str,
            args: &[&str],
            stdin: Option<&str>,
        ) -> Result<String, CaptureError> {
            self.calls.borrow_mut().push((
                format!("{program} {}", args.join(" ")).trim().to_string(),
                stdin.map(str::to_string),
            ));
            Ok(if program.ends_with("-save") {
                self.saved.clone()
            } else {
                String::new()
            })
        }
    }

    #[test]
    fn cleanup_removes_exactly_the_capture() {
        let cfg = CaptureConfig {
            exclude_interfaces: vec!["eth9".into()],
            ..CaptureConfig::default()
        };
        // As iptables-save prints the installed rules, next to someone else's.
        let saved = "# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:ISTIO_INBOUND - [0:0]\n:ISTIO_IN_REDIRECT - [0:0]\n:ISTIO_OUTPUT - [0:0]\n:ISTIO_REDIRECT - [0:0]\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -i eth9 -j RETURN\n-A PREROUTING -p tcp -j ISTIO_INBOUND\n-A PREROUTING -j KUBE-SERVICES\n-A OUTPUT -o eth9 -j RETURN\n-A OUTPUT -j ISTIO_OUTPUT\n-A OUTPUT -o eth1 -j RETURN\n-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n";
        let fake = Fake {
            saved: saved.into(),
            calls: RefCell::new(Vec::new()),
        };
        cleanup_with(&cfg, &fake).unwrap();
        let calls = fake.calls.borrow();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].0, "iptables-save");
        assert_eq!(calls[1].0, "iptables-restore --noflush --wait");
        assert_eq!(
            calls[1].1.as_deref().unwrap(),
            "*nat\n-D PREROUTING -i eth9 -j RETURN\n-D PREROUTING -p tcp -j ISTIO_INBOUND\n-D OUTPUT -o eth9 -j RETURN\n-D OUTPUT -j ISTIO_OUTPUT\n-F ISTIO_INBOUND\n-F ISTIO_IN_REDIRECT\n-F ISTIO_OUTPUT\n-F ISTIO_REDIRECT\n-X ISTIO_INBOUND\n-X ISTIO_IN_REDIRECT\n-X ISTIO_OUTPUT\n-X ISTIO_REDIRECT\nCOMMIT\n"
        );
        // Nothing installed: nothing to restore.
        let clean = Fake {
            saved: "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n".into(),
            calls: RefCell::new(Vec::new()),
        };
        apply_with(&CaptureConfig::default(), &clean).unwrap();
        let calls = clean.calls.borrow();
        assert_eq!(
            calls.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
            ["iptables-save", "iptables-restore --noflush --wait"]
        );
        assert_eq!(
            calls[1].1.as_deref(),
            Some(
                rules(&CaptureConfig::default())
                    .unwrap()
                    .restore_input(Family::V4)
                    .as_str()
            )
        );
    }

    #[test]
    fn dual_stack_apply_adds_the_v6_source_address() {
        let fake = Fake {
            saved: String::new(),
            calls: RefCell::new(Vec::new()),
        };
        let cfg = CaptureConfig {
            enable_ipv6: true,
            ..CaptureConfig::default()
        };
        apply_with(&cfg, &fake).unwrap();
        let calls: Vec<String> = fake.calls.borrow().iter().map(|c| c.0.clone()).collect();
        assert_eq!(
            calls,
            [
                "iptables-save",
                "ip6tables-save",
                "iptables-restore --noflush --wait",
                "ip -6 addr show dev lo",
                "ip -6 addr add ::6/128 dev lo",
                "ip6tables-restore --noflush --wait",
            ]
        );
    }

    #[test]
    fn ipv6_rules_use_v6_loopback_and_source() {
        let cfg = CaptureConfig {
            enable_ipv6: true,
            outbound_cidrs: Selection::Only(vec![
                parse_cidr("10.0.0.0/8").unwrap(),
                parse_cidr("fd00::/8").unwrap(),
            ]),
            ..CaptureConfig::default()
        };
        let set = rules(&cfg).unwrap();
        let v6 = lines(&set, Family::V6).join("\n");
        assert!(
            v6.contains("-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN"),
            "{v6}"
        );
        assert!(v6.contains("! -d ::1/128"));
        assert!(v6.contains("-A ISTIO_OUTPUT -d fd00::/8 -j ISTIO_REDIRECT"));
        assert!(!v6.contains("10.0.0.0/8"));
        let v4 = lines(&set, Family::V4).join("\n");
        assert!(v4.contains("-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT"));
        assert!(!v4.contains("fd00"));
        assert!(
            set.dry_run_text()
                .contains("# ip6tables-restore --noflush\n*nat\n")
        );
    }
}
