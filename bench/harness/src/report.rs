//! The results of a run: the JSON document and its markdown rendering.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::procfs::Machine;
use crate::stats::{Percentiles, median, ratio};

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arm {
    /// Client straight to the upstream.
    Direct,
    /// Through mizzen-proxy.
    Mizzen,
    /// Through Envoy.
    Envoy,
}

impl Arm {
    pub const ALL: [Arm; 3] = [Arm::Direct, Arm::Mizzen, Arm::Envoy];

    pub fn label(self) -> &'static str {
        match self {
            Arm::Direct => "direct",
            Arm::Mizzen => "mizzen-proxy",
            Arm::Envoy => "Envoy",
        }
    }
}

/// One measurement of one arm.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    pub rep: usize,
    /// Good responses per second (TCP echo: round trips per second; TCP
    /// stream: 0, see `bytes_per_second`).
    pub rate: f64,
    /// Good responses (TCP echo: round trips).
    pub ok: u64,
    /// Failed requests (TCP: broken connections).
    pub failed: u64,
    /// TCP: bytes the client sent per second.
    pub bytes_per_second: Option<f64>,
    /// TCP stream: bytes per second divided by the proxy's cores.
    pub bytes_per_proxy_cpu_second: Option<f64>,
    /// Paced runs: corrected latency.
    pub latency_us: Option<Percentiles>,
    /// Closed-loop runs: the tool's own p99 latency when it reports one
    /// (wrk), µs. Closed-loop latency is queueing behind the tool's own
    /// concurrency, not a service-level figure.
    pub closed_loop_p99_us: Option<f64>,
    /// Latency minus the direct arm's in the same repetition.
    pub added_latency_us: Option<Percentiles>,
    /// CPU of the proxy process, in cores (1.0 = one CPU busy).
    pub proxy_cores: Option<f64>,
    pub proxy_cpu_us_per_request: Option<f64>,
    pub requests_per_proxy_cpu_second: Option<f64>,
    pub load_tool_cores: f64,
    pub upstream_cores: f64,
    /// CPU used by processes outside the benchmark, in cores.
    pub other_cores: f64,
    /// The largest of them: `name cores, ...`.
    pub other_top: String,
    pub interrupt_cores: f64,
    pub steal_cores: f64,
    /// `other_cores` above the threshold, even after one retry.
    pub contaminated: bool,
    /// This sample replaces one that was contaminated.
    pub retried: bool,
    /// Paced runs: the generator's own sending delay (p99), µs.
    pub generator_lag_p99_us: Option<f64>,
    /// Sidecar pairs: connections the client sidecar opened to the server
    /// sidecar during the run (its cluster's `upstream_cx_total`), and that
    /// per request: with mutual TLS each is a handshake.
    pub upstream_connections: Option<u64>,
    pub upstream_connections_per_request: Option<f64>,
    /// Of those connections, the share whose TLS session was resumed (an
    /// abbreviated handshake), where the proxy counts it (Envoy's
    /// `ssl.session_reused`; mizzen-proxy does not count it).
    pub tls_resumed_per_connection: Option<f64>,
    /// Why the sample failed; a failed sample is left out of medians.
    pub error: Option<String>,
}

/// Medians over an arm's good samples.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub samples: usize,
    pub rate: f64,
    pub latency_us: Option<Percentiles>,
    pub added_latency_us: Option<Percentiles>,
    pub closed_loop_p99_us: Option<f64>,
    pub proxy_cores: Option<f64>,
    pub proxy_cpu_us_per_request: Option<f64>,
    pub requests_per_proxy_cpu_second: Option<f64>,
    pub bytes_per_second: Option<f64>,
    pub bytes_per_proxy_cpu_second: Option<f64>,
    #[serde(default)]
    pub upstream_connections_per_request: Option<f64>,
    #[serde(default)]
    pub tls_resumed_per_connection: Option<f64>,
}

impl Summary {
    /// Medians over the samples that did not fail, and of those only the
    /// clean ones (not contaminated by other processes) when there is at
    /// least one.
    pub fn of(samples: &[Sample]) -> Option<Summary> {
        let mut good: Vec<&Sample> = samples.iter().filter(|s| s.error.is_none()).collect();
        if good.iter().any(|s| !s.contaminated) {
            good.retain(|s| !s.contaminated);
        }
        if good.is_empty() {
            return None;
        }
        let opt = |f: fn(&Sample) -> Option<f64>| median(good.iter().filter_map(|s| f(s)));
        let pct = |f: fn(&Sample) -> Option<Percentiles>| {
            let all: Vec<Percentiles> = good.iter().filter_map(|s| f(s)).collect();
            Percentiles::median_of(&all)
        };
        Some(Summary {
            samples: good.len(),
            rate: median(good.iter().map(|s| s.rate)).unwrap_or(0.0),
            latency_us: pct(|s| s.latency_us),
            added_latency_us: pct(|s| s.added_latency_us),
            closed_loop_p99_us: opt(|s| s.closed_loop_p99_us),
            proxy_cores: opt(|s| s.proxy_cores),
            proxy_cpu_us_per_request: opt(|s| s.proxy_cpu_us_per_request),
            requests_per_proxy_cpu_second: opt(|s| s.requests_per_proxy_cpu_second),
            bytes_per_second: opt(|s| s.bytes_per_second),
            bytes_per_proxy_cpu_second: opt(|s| s.bytes_per_proxy_cpu_second),
            upstream_connections_per_request: opt(|s| s.upstream_connections_per_request),
            tls_resumed_per_connection: opt(|s| s.tls_resumed_per_connection),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmResult {
    pub arm: Arm,
    pub samples: Vec<Sample>,
    pub summary: Option<Summary>,
    /// Set when any sample failed: the first failure.
    pub failure: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioKind {
    /// Constant rate, latency added over direct.
    Paced,
    /// Closed loop, maximum throughput.
    Max,
    /// Raw TCP, bulk bytes one way as fast as they go.
    TcpStream,
    /// Raw TCP, small messages echoed back, one in flight per connection.
    TcpEcho,
    /// Closed loop, a new connection per request (`Connection: close`).
    Connections,
}

/// The ratios of one table row, kept in the JSON beside the medians.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricRatios {
    pub metric: String,
    pub mizzen_vs_envoy: Option<f64>,
    pub mizzen_vs_direct: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scenario {
    pub id: String,
    pub title: String,
    pub kind: ScenarioKind,
    pub arms: Vec<ArmResult>,
    /// mizzen/envoy and mizzen/direct of each row of the scenario's table,
    /// from the medians.
    #[serde(default)]
    pub ratios: Vec<MetricRatios>,
}

impl Scenario {
    pub fn arm(&self, arm: Arm) -> Option<&ArmResult> {
        self.arms.iter().find(|a| a.arm == arm)
    }

    /// Fills each sample's latency added over the direct arm of the same
    /// repetition (paced scenarios) and each arm's summary and failure.
    pub fn summarize(&mut self) {
        if self.kind == ScenarioKind::Paced {
            let direct: Vec<(usize, Percentiles)> = self
                .arm(Arm::Direct)
                .map(|a| {
                    a.samples
                        .iter()
                        .filter(|s| s.error.is_none())
                        .filter_map(|s| Some((s.rep, s.latency_us?)))
                        .collect()
                })
                .unwrap_or_default();
            for arm in self.arms.iter_mut().filter(|a| a.arm != Arm::Direct) {
                for s in &mut arm.samples {
                    let base = direct.iter().find(|(rep, _)| *rep == s.rep);
                    s.added_latency_us = match (s.latency_us, base) {
                        (Some(l), Some((_, d))) => Some(l.minus(d)),
                        _ => None,
                    };
                }
            }
        }
        for arm in &mut self.arms {
            arm.summary = Summary::of(&arm.samples);
            arm.failure = arm.samples.iter().find_map(|s| s.error.clone());
        }
        let mut rows = Vec::new();
        scenario_rows(self, &mut rows);
        self.ratios = rows
            .into_iter()
            .map(|r| MetricRatios {
                metric: r.metric,
                mizzen_vs_envoy: r.mizzen_vs_envoy,
                mizzen_vs_direct: r.mizzen_vs_direct,
            })
            .collect();
    }
}

/// Resident memory of the proxies, MiB.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProxyMemory {
    pub idle_mib: Option<f64>,
    pub under_load_max_mib: Option<f64>,
    pub large_mesh_router_mib: Option<f64>,
    pub large_mesh_sidecar_mib: Option<f64>,
    /// From process start until the pilot saw every type ACKed.
    pub large_mesh_router_sync_s: Option<f64>,
    pub large_mesh_sidecar_sync_s: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Memory {
    pub mizzen: ProxyMemory,
    pub envoy: ProxyMemory,
    pub large_mesh_services: usize,
    pub large_mesh_endpoints: usize,
    pub large_mesh_pilot_mib: Option<f64>,
}

/// How a change spread to the simulated proxies.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Propagation {
    pub reached: usize,
    pub proxies: usize,
    pub median_s: Option<f64>,
    /// Until the last proxy had it; `None` if some never did in time.
    pub all_s: Option<f64>,
    pub pilot_cpu_s: f64,
    pub harness_cpu_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PilotScale {
    pub services: usize,
    pub endpoints: usize,
    pub proxies: usize,
    pub pilot_rss_config_loaded_mib: Option<f64>,
    pub pilot_rss_peak_mib: Option<f64>,
    pub pilot_rss_after_mib: Option<f64>,
    /// All proxies connecting at once until each has all four types.
    pub initial_sync: Propagation,
    /// A Service added: until its endpoints reach every proxy (CDS, then
    /// the EDS subscription it causes).
    pub full_push: Vec<Propagation>,
    /// A Workload's address changed: until every proxy has the new endpoint.
    pub endpoint_change: Vec<Propagation>,
    /// xDS responses received by all proxies over the run: CDS, EDS, LDS, RDS.
    pub updates_received: [u64; 4],
    pub error: Option<String>,
}

/// Something the harness lists without measuring, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotMeasured {
    pub what: String,
    pub status: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Profile {
    /// The command that recorded it and the load it ran under.
    pub how: String,
    /// Self time summed by component (kernel, runtime, HTTP codec...).
    pub by_component: Vec<(f64, String)>,
    /// Self time by function: (percent, symbol), largest first.
    pub top_self: Vec<(f64, String)>,
    /// Inclusive time by function (callees counted), largest first.
    pub top_inclusive: Vec<(f64, String)>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub mode: String,
    pub repetitions: usize,
    pub seconds_per_measurement: f64,
    pub paced_warmup_seconds: f64,
    pub connections: usize,
    pub h2_streams_per_connection: usize,
    pub body_bytes: usize,
    pub rates: Vec<f64>,
    pub pinning: String,
    pub contamination_threshold_cores: f64,
    /// The raw TCP scenarios, when they ran.
    #[serde(default)]
    pub tcp: Option<TcpSettings>,
    /// The sidecar-to-sidecar (mutual TLS) scenarios, when they ran.
    #[serde(default)]
    pub sidecars: Option<SidecarSettings>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SidecarSettings {
    pub seconds_per_measurement: f64,
    pub paced_rate: f64,
    pub connections: usize,
    /// How the pairs are set up, in words.
    pub setup: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TcpSettings {
    pub seconds_per_measurement: f64,
    pub warmup_seconds: f64,
    pub stream_connections: usize,
    /// Size of each write of the stream client.
    pub stream_write_bytes: usize,
    pub echo_connections: usize,
    pub echo_message_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    pub started_unix: u64,
    pub wall_seconds: f64,
    pub machine: Machine,
    /// CPU used by other processes in the seconds before the run, in cores.
    pub other_cores_before: f64,
    pub mizzen_commit: Option<String>,
    pub envoy_version: Option<String>,
    pub settings: Settings,
    pub scenarios: Vec<Scenario>,
    pub memory: Memory,
    pub pilot: PilotScale,
    pub not_measured: Vec<NotMeasured>,
    pub profile: Option<Profile>,
    pub warnings: Vec<String>,
    /// Wall time of each phase of the run, seconds.
    #[serde(default)]
    pub phase_seconds: Vec<(String, f64)>,
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 100_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if a >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}×"))
}

fn fmt_opt(v: Option<f64>, f: fn(f64) -> String) -> String {
    v.map_or_else(|| "–".to_owned(), f)
}

fn fmt_s(v: f64) -> String {
    if v < 1.0 {
        format!("{:.0} ms", v * 1000.0)
    } else {
        format!("{v:.2} s")
    }
}

/// A table row: label, metric, then direct / mizzen / envoy cells and the
/// two ratios.
struct Row {
    scenario: String,
    metric: String,
    cells: [String; 3],
    mizzen_vs_envoy: Option<f64>,
    mizzen_vs_direct: Option<f64>,
}

impl Row {
    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            self.scenario,
            self.metric,
            self.cells[0],
            self.cells[1],
            self.cells[2],
            fmt_ratio(self.mizzen_vs_envoy),
            fmt_ratio(self.mizzen_vs_direct)
        );
    }
}

fn failed_cell(arm: &ArmResult) -> String {
    match &arm.failure {
        Some(reason) => format!("**failed**: {}", one_line(reason, 90)),
        None => "–".to_owned(),
    }
}

fn one_line(text: &str, max: usize) -> String {
    let line: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "/");
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line
    }
}

fn scenario_rows(s: &Scenario, rows: &mut Vec<Row>) {
    let summary = |arm: Arm| s.arm(arm).and_then(|a| a.summary.as_ref());
    let cell_or_failure = |arm: Arm, value: Option<String>| match (value, s.arm(arm)) {
        (Some(v), Some(a)) if a.failure.is_some() => {
            format!("{v} ⚠ {}", failed_cell(a))
        }
        (Some(v), _) => v,
        (None, Some(a)) => failed_cell(a),
        (None, None) => "–".to_owned(),
    };
    let mut first = true;
    let mut label = || {
        if std::mem::take(&mut first) {
            s.title.clone()
        } else {
            String::new()
        }
    };
    match s.kind {
        ScenarioKind::Paced => {
            for (i, (name, _)) in Percentiles::default().labelled().iter().enumerate() {
                let abs = |arm: Arm| {
                    summary(arm)
                        .and_then(|x| x.latency_us)
                        .map(|p| p.labelled()[i].1)
                };
                let added = |arm: Arm| {
                    summary(arm)
                        .and_then(|x| x.added_latency_us)
                        .map(|p| p.labelled()[i].1)
                };
                let proxied = |arm: Arm| {
                    abs(arm).map(|v| match added(arm) {
                        Some(a) => format!("{} ({:+.3})", fmt_ms(v), a / 1000.0),
                        None => fmt_ms(v),
                    })
                };
                rows.push(Row {
                    scenario: label(),
                    metric: format!("{name} latency, ms (added)"),
                    cells: [
                        cell_or_failure(Arm::Direct, abs(Arm::Direct).map(fmt_ms)),
                        cell_or_failure(Arm::Mizzen, proxied(Arm::Mizzen)),
                        cell_or_failure(Arm::Envoy, proxied(Arm::Envoy)),
                    ],
                    mizzen_vs_envoy: ratio(added(Arm::Mizzen), added(Arm::Envoy)),
                    mizzen_vs_direct: ratio(abs(Arm::Mizzen), abs(Arm::Direct)),
                });
            }
            let rate = |arm: Arm| summary(arm).map(|x| x.rate);
            rows.push(Row {
                scenario: label(),
                metric: "achieved req/s".into(),
                cells: Arm::ALL.map(|a| fmt_opt(rate(a), fmt_num)),
                mizzen_vs_envoy: ratio(rate(Arm::Mizzen), rate(Arm::Envoy)),
                mizzen_vs_direct: ratio(rate(Arm::Mizzen), rate(Arm::Direct)),
            });
            let cpu = |arm: Arm| summary(arm).and_then(|x| x.proxy_cpu_us_per_request);
            rows.push(Row {
                scenario: label(),
                metric: "proxy CPU per request, µs".into(),
                cells: Arm::ALL.map(|a| fmt_opt(cpu(a), fmt_num)),
                mizzen_vs_envoy: ratio(cpu(Arm::Mizzen), cpu(Arm::Envoy)),
                mizzen_vs_direct: None,
            });
        }
        ScenarioKind::Max | ScenarioKind::TcpEcho => {
            let (per_second, p99_label, per_cpu_second) = if s.kind == ScenarioKind::Max {
                (
                    "req/s",
                    "p99 latency (closed loop), ms",
                    "req per proxy CPU-second",
                )
            } else {
                (
                    "round trips/s",
                    "p99 round trip (closed loop), ms",
                    "round trips per proxy CPU-second",
                )
            };
            let rate = |arm: Arm| summary(arm).map(|x| x.rate);
            rows.push(Row {
                scenario: label(),
                metric: per_second.into(),
                cells: Arm::ALL.map(|a| cell_or_failure(a, rate(a).map(fmt_num))),
                mizzen_vs_envoy: ratio(rate(Arm::Mizzen), rate(Arm::Envoy)),
                mizzen_vs_direct: ratio(rate(Arm::Mizzen), rate(Arm::Direct)),
            });
            let p99 = |arm: Arm| summary(arm).and_then(|x| x.closed_loop_p99_us);
            if Arm::ALL.iter().any(|&a| p99(a).is_some()) {
                rows.push(Row {
                    scenario: label(),
                    metric: p99_label.into(),
                    cells: Arm::ALL.map(|a| fmt_opt(p99(a), fmt_ms)),
                    mizzen_vs_envoy: ratio(p99(Arm::Mizzen), p99(Arm::Envoy)),
                    mizzen_vs_direct: ratio(p99(Arm::Mizzen), p99(Arm::Direct)),
                });
            }
            proxy_cores_row(rows, &mut label, summary);
            if s.kind == ScenarioKind::TcpEcho {
                let cpu = |arm: Arm| summary(arm).and_then(|x| x.proxy_cpu_us_per_request);
                rows.push(Row {
                    scenario: label(),
                    metric: "proxy CPU per round trip, µs".into(),
                    cells: Arm::ALL.map(|a| fmt_opt(cpu(a), fmt_num)),
                    mizzen_vs_envoy: ratio(cpu(Arm::Mizzen), cpu(Arm::Envoy)),
                    mizzen_vs_direct: None,
                });
            }
            let per_cpu = |arm: Arm| summary(arm).and_then(|x| x.requests_per_proxy_cpu_second);
            rows.push(Row {
                scenario: label(),
                metric: per_cpu_second.into(),
                cells: Arm::ALL.map(|a| fmt_opt(per_cpu(a), fmt_num)),
                mizzen_vs_envoy: ratio(per_cpu(Arm::Mizzen), per_cpu(Arm::Envoy)),
                mizzen_vs_direct: None,
            });
        }
        ScenarioKind::Connections => {
            let rate = |arm: Arm| summary(arm).map(|x| x.rate);
            rows.push(Row {
                scenario: label(),
                metric: "connections/s (one request each)".into(),
                cells: Arm::ALL.map(|a| cell_or_failure(a, rate(a).map(fmt_num))),
                mizzen_vs_envoy: ratio(rate(Arm::Mizzen), rate(Arm::Envoy)),
                mizzen_vs_direct: ratio(rate(Arm::Mizzen), rate(Arm::Direct)),
            });
            let per_request =
                |arm: Arm| summary(arm).and_then(|x| x.upstream_connections_per_request);
            rows.push(Row {
                scenario: label(),
                metric: "sidecar→sidecar connections (handshakes) per request".into(),
                cells: Arm::ALL.map(|a| fmt_opt(per_request(a), |v| format!("{v:.2}"))),
                mizzen_vs_envoy: None,
                mizzen_vs_direct: None,
            });
            let resumed = |arm: Arm| summary(arm).and_then(|x| x.tls_resumed_per_connection);
            if Arm::ALL.iter().any(|&a| resumed(a).is_some()) {
                rows.push(Row {
                    scenario: label(),
                    metric: "of which TLS sessions resumed (where counted)".into(),
                    cells: Arm::ALL.map(|a| fmt_opt(resumed(a), |v| format!("{:.0} %", v * 100.0))),
                    mizzen_vs_envoy: None,
                    mizzen_vs_direct: None,
                });
            }
            let p99 = |arm: Arm| summary(arm).and_then(|x| x.closed_loop_p99_us);
            if Arm::ALL.iter().any(|&a| p99(a).is_some()) {
                rows.push(Row {
                    scenario: label(),
                    metric: "p99 latency (closed loop), ms".into(),
                    cells: Arm::ALL.map(|a| fmt_opt(p99(a), fmt_ms)),
                    mizzen_vs_envoy: ratio(p99(Arm::Mizzen), p99(Arm::Envoy)),
                    mizzen_vs_direct: ratio(p99(Arm::Mizzen), p99(Arm::Direct)),
                });
            }
            proxy_cores_row(rows, &mut label, summary);
            let cpu = |arm: Arm| summary(arm).and_then(|x| x.proxy_cpu_us_per_request);
            rows.push(Row {
                scenario: label(),
                metric: "proxy CPU per connection, µs".into(),
                cells: Arm::ALL.map(|a| fmt_opt(cpu(a), fmt_num)),
                mizzen_vs_envoy: ratio(cpu(Arm::Mizzen), cpu(Arm::Envoy)),
                mizzen_vs_direct: None,
            });
            let per_cpu = |arm: Arm| summary(arm).and_then(|x| x.requests_per_proxy_cpu_second);
            rows.push(Row {
                scenario: label(),
                metric: "connections per proxy CPU-second".into(),
                cells: Arm::ALL.map(|a| fmt_opt(per_cpu(a), fmt_num)),
                mizzen_vs_envoy: ratio(per_cpu(Arm::Mizzen), per_cpu(Arm::Envoy)),
                mizzen_vs_direct: None,
            });
        }
        ScenarioKind::TcpStream => {
            let gib = |arm: Arm| {
                summary(arm)
                    .and_then(|x| x.bytes_per_second)
                    .map(|b| b / GIB)
            };
            rows.push(Row {
                scenario: label(),
                metric: "throughput, GiB/s".into(),
                cells: Arm::ALL.map(|a| cell_or_failure(a, gib(a).map(fmt_num))),
                mizzen_vs_envoy: ratio(gib(Arm::Mizzen), gib(Arm::Envoy)),
                mizzen_vs_direct: ratio(gib(Arm::Mizzen), gib(Arm::Direct)),
            });
            proxy_cores_row(rows, &mut label, summary);
            let per_cpu = |arm: Arm| {
                summary(arm)
                    .and_then(|x| x.bytes_per_proxy_cpu_second)
                    .map(|b| b / GIB)
            };
            rows.push(Row {
                scenario: label(),
                metric: "GiB per proxy CPU-second".into(),
                cells: Arm::ALL.map(|a| fmt_opt(per_cpu(a), fmt_num)),
                mizzen_vs_envoy: ratio(per_cpu(Arm::Mizzen), per_cpu(Arm::Envoy)),
                mizzen_vs_direct: None,
            });
        }
    }
}

const GIB: f64 = (1u64 << 30) as f64;

fn proxy_cores_row<'a>(
    rows: &mut Vec<Row>,
    label: &mut impl FnMut() -> String,
    summary: impl Fn(Arm) -> Option<&'a Summary>,
) {
    let cores = |arm: Arm| summary(arm).and_then(|x| x.proxy_cores);
    rows.push(Row {
        scenario: label(),
        metric: "proxy CPU, cores".into(),
        cells: Arm::ALL.map(|a| fmt_opt(cores(a), |v| format!("{v:.2}"))),
        mizzen_vs_envoy: ratio(cores(Arm::Mizzen), cores(Arm::Envoy)),
        mizzen_vs_direct: None,
    });
}

/// A memory or timing row; a missing figure of a proxy whose measurement
/// failed shows as failed.
fn mib_row(
    rows: &mut Vec<Row>,
    scenario: &str,
    metric: &str,
    (m, mizzen_failed): (Option<f64>, bool),
    (e, envoy_failed): (Option<f64>, bool),
) {
    let cell = |v: Option<f64>, failed: bool| match v {
        Some(v) => format!("{v:.1}"),
        None if failed => "**failed** (see below)".to_owned(),
        None => "–".to_owned(),
    };
    rows.push(Row {
        scenario: scenario.to_owned(),
        metric: metric.to_owned(),
        cells: [
            "–".to_owned(),
            cell(m, mizzen_failed),
            cell(e, envoy_failed),
        ],
        mizzen_vs_envoy: ratio(m, e),
        mizzen_vs_direct: None,
    });
}

impl Report {
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "# Mizzen benchmark results\n");
        let _ = writeln!(
            out,
            "Machine: **{}**, {} cores, {} MiB, Linux {} (load average {:.2} at start; \
             other processes used {:.2} cores just before the run).  ",
            m.cpu_model, m.cores, m.memory_mib, m.kernel, m.load_at_start, self.other_cores_before
        );
        let _ = writeln!(
            out,
            "mizzen {} · Envoy {} · mode `{}` · {} repetitions × {:.0} s per arm, arms interleaved \
             (direct, mizzen-proxy, Envoy, order rotated each repetition), medians reported · \
             {} connections · {} B response bodies · one worker per proxy · pinning: {} · \
             run took {:.0} s.\n",
            self.mizzen_commit.as_deref().unwrap_or("?"),
            self.envoy_version.as_deref().unwrap_or("not found"),
            self.settings.mode,
            self.settings.repetitions,
            self.settings.seconds_per_measurement,
            self.settings.connections,
            self.settings.body_bytes,
            self.settings.pinning,
            self.wall_seconds
        );
        if let Some(t) = &self.settings.tcp {
            let _ = writeln!(
                out,
                "Raw TCP: {} repetitions × {:.0} s per arm after {:.1} s of warm-up; stream: {} \
                 connections writing {} KiB at a time into a sink; echo: {} connections, one {} B \
                 message in flight each; proxies as sidecars with a TCP proxy listener each.\n",
                self.settings.repetitions,
                t.seconds_per_measurement,
                t.warmup_seconds,
                t.stream_connections,
                t.stream_write_bytes / 1024,
                t.echo_connections,
                t.echo_message_bytes
            );
        }
        if let Some(m) = &self.settings.sidecars {
            let _ = writeln!(
                out,
                "Sidecar pairs: {} repetitions × {:.0} s per arm; {} connections; paced at {:.0} \
                 req/s; {}\n",
                self.settings.repetitions,
                m.seconds_per_measurement,
                m.connections,
                m.paced_rate,
                m.setup
            );
        }
        if !self.phase_seconds.is_empty() {
            let phases: Vec<String> = self
                .phase_seconds
                .iter()
                .map(|(name, secs)| format!("{name} {secs:.0} s"))
                .collect();
            let _ = writeln!(out, "Phases: {}.\n", phases.join(", "));
        }
        let _ = writeln!(out, "## Data plane\n");
        let _ = writeln!(
            out,
            "| scenario | metric | direct | mizzen-proxy | Envoy | mizzen/envoy | mizzen/direct |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
        let mut rows = Vec::new();
        for s in &self.scenarios {
            scenario_rows(s, &mut rows);
        }
        for n in &self.not_measured {
            rows.push(Row {
                scenario: n.what.clone(),
                metric: String::new(),
                cells: ["–".to_owned(), n.status.clone(), "–".to_owned()],
                mizzen_vs_envoy: None,
                mizzen_vs_direct: None,
            });
        }
        let (mz, en) = (&self.memory.mizzen, &self.memory.envoy);
        let (mf, ef) = (mz.error.is_some(), en.error.is_some());
        mib_row(
            &mut rows,
            "Proxy RSS",
            "idle (bench config), MiB",
            (mz.idle_mib, false),
            (en.idle_mib, false),
        );
        mib_row(
            &mut rows,
            "",
            "under load (max sampled), MiB",
            (mz.under_load_max_mib, false),
            (en.under_load_max_mib, false),
        );
        let mesh = format!(
            "{} services, {} endpoints",
            self.memory.large_mesh_services, self.memory.large_mesh_endpoints
        );
        let large: [(&str, &str, Option<f64>, Option<f64>); 4] = [
            (
                &mesh,
                "RSS as gateway (all clusters + endpoints), MiB",
                mz.large_mesh_router_mib,
                en.large_mesh_router_mib,
            ),
            (
                "",
                "RSS as sidecar (+ a route for every service), MiB",
                mz.large_mesh_sidecar_mib,
                en.large_mesh_sidecar_mib,
            ),
            (
                "",
                "start to fully synced as gateway, s",
                mz.large_mesh_router_sync_s,
                en.large_mesh_router_sync_s,
            ),
            (
                "",
                "start to fully synced as sidecar, s",
                mz.large_mesh_sidecar_sync_s,
                en.large_mesh_sidecar_sync_s,
            ),
        ];
        for (scenario, metric, m, e) in large {
            mib_row(&mut rows, scenario, metric, (m, mf), (e, ef));
        }
        for row in &rows {
            row.render(&mut out);
        }
        for (who, pm) in [("mizzen-proxy", mz), ("Envoy", en)] {
            if let Some(e) = &pm.error {
                let _ = writeln!(
                    out,
                    "\n{who} memory measurement failed: {}",
                    one_line(e, 300)
                );
            }
        }
        let _ = writeln!(
            out,
            "\nMedians are over the clean repetitions of an arm when it has any (see the last \
             table). Latency cells are absolute with the latency added over direct (same repetition) in \
             parentheses; *mizzen/envoy* compares added latency, *mizzen/direct* absolute latency. \
             Paced runs use a constant-rate generator with coordinated-omission correction \
             (`mizzen-bench load`); max throughput uses `wrk -t1` (HTTP/1.1) and `h2load -t1` (h2c, \
             multiplexed). Raw TCP uses `mizzen-bench tcp-load` (one thread): *stream* writes into a \
             sink that discards, *echo* bounces small messages (one in flight per connection); its \
             proxy CPU covers exactly the counted window. *Sidecar pair* rows go through a client \
             sidecar and a server sidecar of the same proxy; their proxy CPU is both sidecars' and \
             the connections per request are those the client sidecar opened to the server (each a \
             mutual TLS handshake, resumed or not). Proxy CPU comes from `/proc/PID/stat` \
             (user + system) over the run.\n"
        );
        self.pilot_markdown(&mut out);
        self.contamination_markdown(&mut out);
        if let Some(p) = &self.profile {
            let _ = writeln!(out, "## mizzen-proxy CPU profile\n\n{}\n", p.how);
            if let Some(e) = &p.error {
                let _ = writeln!(out, "Profile failed: {}\n", one_line(e, 300));
            }
            if !p.by_component.is_empty() {
                let _ = writeln!(out, "| self % | component |\n|---:|---|");
                for (pct, name) in &p.by_component {
                    let _ = writeln!(out, "| {pct:.1} | {name} |");
                }
                let _ = writeln!(out);
            }
            if !p.top_self.is_empty() {
                let _ = writeln!(out, "| self % | function |\n|---:|---|");
                for (pct, sym) in p.top_self.iter().take(25) {
                    let _ = writeln!(out, "| {pct:.1} | `{}` |", one_line(sym, 120));
                }
                let _ = writeln!(out);
            }
            if !p.top_inclusive.is_empty() {
                let _ = writeln!(out, "| inclusive % | function |\n|---:|---|");
                for (pct, sym) in p.top_inclusive.iter().take(25) {
                    let _ = writeln!(out, "| {pct:.1} | `{}` |", one_line(sym, 120));
                }
                let _ = writeln!(out);
            }
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(out, "## Warnings\n");
            for w in &self.warnings {
                let _ = writeln!(out, "- {}", one_line(w, 400));
            }
        }
        out
    }

    fn pilot_markdown(&self, out: &mut String) {
        let p = &self.pilot;
        let _ = writeln!(
            out,
            "## Control plane: mizzen-pilot, {} services ({} endpoints) × {} simulated sidecars\n",
            p.services, p.endpoints, p.proxies
        );
        if let Some(e) = &p.error {
            let _ = writeln!(out, "**failed**: {}\n", one_line(e, 400));
        }
        let _ = writeln!(
            out,
            "| what | reached | median proxy | all proxies | pilot CPU-s | client CPU-s |\n|---|---:|---:|---:|---:|---:|"
        );
        let row = |out: &mut String, what: &str, x: &Propagation| {
            let _ = writeln!(
                out,
                "| {what} | {}/{} | {} | {} | {:.2} | {:.2} |",
                x.reached,
                x.proxies,
                fmt_opt(x.median_s, fmt_s),
                x.all_s.map_or_else(|| "**not all**".to_owned(), fmt_s),
                x.pilot_cpu_s,
                x.harness_cpu_s
            );
        };
        row(
            out,
            "initial connect and full sync (all at once)",
            &p.initial_sync,
        );
        for (i, x) in p.full_push.iter().enumerate() {
            row(out, &format!("full push: Service added (#{})", i + 1), x);
        }
        for (i, x) in p.endpoint_change.iter().enumerate() {
            row(
                out,
                &format!("endpoint change: Workload edited (#{})", i + 1),
                x,
            );
        }
        let med = |xs: &[Propagation]| median(xs.iter().filter_map(|x| x.all_s));
        let _ = writeln!(
            out,
            "\nMedian time to reach all proxies: full push {}, endpoint change {} \
             (from the start of the file write; includes the pilot's 100 ms file-watch debounce). Pilot RSS: {} MiB with the config \
             loaded, {} MiB peak, {} MiB after. xDS responses received (CDS/EDS/LDS/RDS): {:?}.\n",
            fmt_opt(med(&p.full_push), fmt_s),
            fmt_opt(med(&p.endpoint_change), fmt_s),
            fmt_opt(p.pilot_rss_config_loaded_mib, |v| format!("{v:.1}")),
            fmt_opt(p.pilot_rss_peak_mib, |v| format!("{v:.1}")),
            fmt_opt(p.pilot_rss_after_mib, |v| format!("{v:.1}")),
            p.updates_received
        );
    }

    fn contamination_markdown(&self, out: &mut String) {
        let _ = writeln!(out, "## Other processes' CPU during each measurement\n");
        let _ = writeln!(
            out,
            "Cores used by processes outside the benchmark while each arm ran (from `/proc/stat` \
             minus the benchmark's own processes); a sample above {:.2} cores is run once more and \
             flagged if it stays above.\n",
            self.settings.contamination_threshold_cores
        );
        let _ = writeln!(
            out,
            "| scenario | arm | other cores per rep | max | flagged | largest others in the worst rep |\n|---|---|---|---:|---|---|"
        );
        for s in &self.scenarios {
            for a in &s.arms {
                let values: Vec<String> = a
                    .samples
                    .iter()
                    .map(|x| {
                        let mut v = format!("{:.3}", x.other_cores);
                        if x.retried {
                            v.push_str(" (retry)");
                        }
                        v
                    })
                    .collect();
                let max = a.samples.iter().map(|x| x.other_cores).fold(0.0, f64::max);
                let worst = a
                    .samples
                    .iter()
                    .max_by(|x, y| x.other_cores.total_cmp(&y.other_cores))
                    .map(|x| x.other_top.clone())
                    .unwrap_or_default();
                let flagged = a.samples.iter().filter(|x| x.contaminated).count();
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.3} | {} | {} |",
                    s.title,
                    a.arm.label(),
                    values.join(", "),
                    max,
                    if flagged > 0 {
                        format!("**{flagged} contaminated**")
                    } else {
                        "clean".to_owned()
                    },
                    worst
                );
            }
        }
        let _ = writeln!(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rate: f64, p50: f64, error: Option<&str>) -> Sample {
        Sample {
            rate,
            latency_us: Some(Percentiles {
                p50,
                ..Default::default()
            }),
            proxy_cpu_us_per_request: Some(rate / 100.0),
            error: error.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn summaries_take_medians_of_good_samples_only() {
        let samples = [
            sample(100.0, 10.0, None),
            sample(300.0, 30.0, None),
            sample(200.0, 20.0, None),
            sample(1e9, 1e9, Some("boom")),
        ];
        let s = Summary::of(&samples).unwrap();
        assert_eq!(s.samples, 3);
        assert_eq!(s.rate, 200.0);
        assert_eq!(s.latency_us.unwrap().p50, 20.0);
        assert_eq!(s.proxy_cpu_us_per_request, Some(2.0));
        assert!(Summary::of(&[sample(1.0, 1.0, Some("x"))]).is_none());
    }

    #[test]
    fn number_formats() {
        assert_eq!(fmt_num(123_456.0), "123k");
        assert_eq!(fmt_num(12_345.0), "12.3k");
        assert_eq!(fmt_num(1234.4), "1234");
        assert_eq!(fmt_num(12.34), "12.3");
        assert_eq!(fmt_num(1.234), "1.23");
        assert_eq!(fmt_ms(1234.0), "1.234");
        assert_eq!(fmt_ratio(Some(0.5)), "0.50×");
        assert_eq!(fmt_ratio(None), "–");
        assert_eq!(fmt_s(0.25), "250 ms");
        assert_eq!(one_line("a |\n b", 10), "a / b");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }

    #[test]
    fn contaminated_samples_are_left_out_when_clean_ones_exist() {
        let mut dirty = sample(900.0, 90.0, None);
        dirty.contaminated = true;
        let s = Summary::of(&[sample(100.0, 10.0, None), dirty.clone()]).unwrap();
        assert_eq!((s.samples, s.rate), (1, 100.0));
        let s = Summary::of(std::slice::from_ref(&dirty)).unwrap();
        assert_eq!(s.rate, 900.0);
    }

    #[test]
    fn added_latency_is_against_the_same_repetition() {
        let paced = |rep: usize, p50: f64| Sample {
            rep,
            latency_us: Some(Percentiles {
                p50,
                ..Default::default()
            }),
            ..Default::default()
        };
        let arm = |arm: Arm, samples: Vec<Sample>| ArmResult {
            arm,
            samples,
            summary: None,
            failure: None,
        };
        let mut scenario = Scenario {
            id: "p".into(),
            title: "p".into(),
            kind: ScenarioKind::Paced,
            arms: vec![
                arm(Arm::Direct, vec![paced(0, 50.0), paced(1, 70.0)]),
                arm(Arm::Mizzen, vec![paced(1, 100.0), paced(0, 90.0)]),
                arm(Arm::Envoy, vec![paced(0, 200.0)]),
            ],
            ratios: Vec::new(),
        };
        scenario.summarize();
        let mizzen = scenario.arm(Arm::Mizzen).unwrap();
        let added: Vec<f64> = mizzen
            .samples
            .iter()
            .map(|s| s.added_latency_us.unwrap().p50)
            .collect();
        assert_eq!(added, [30.0, 40.0]);
        assert_eq!(
            mizzen
                .summary
                .as_ref()
                .unwrap()
                .added_latency_us
                .unwrap()
                .p50,
            35.0
        );
        let envoy = scenario.arm(Arm::Envoy).unwrap();
        assert_eq!(
            envoy
                .summary
                .as_ref()
                .unwrap()
                .added_latency_us
                .unwrap()
                .p50,
            150.0
        );
    }

    #[test]
    fn tcp_stream_rows_and_ratios() {
        let gib = GIB;
        let stream = |rep: usize, bps: f64, cores: Option<f64>| Sample {
            rep,
            bytes_per_second: Some(bps),
            proxy_cores: cores,
            bytes_per_proxy_cpu_second: cores.map(|c| bps / c),
            ..Default::default()
        };
        let arm = |arm: Arm, samples: Vec<Sample>| ArmResult {
            arm,
            samples,
            summary: None,
            failure: None,
        };
        let mut scenario = Scenario {
            id: "tcp_stream".into(),
            title: "raw TCP stream".into(),
            kind: ScenarioKind::TcpStream,
            arms: vec![
                arm(Arm::Direct, vec![stream(0, 8.0 * gib, None)]),
                arm(
                    Arm::Mizzen,
                    vec![
                        stream(0, 2.0 * gib, Some(1.0)),
                        stream(1, 4.0 * gib, Some(1.0)),
                    ],
                ),
                arm(Arm::Envoy, vec![stream(0, 1.5 * gib, Some(1.0))]),
            ],
            ratios: Vec::new(),
        };
        scenario.summarize();
        let mut rows = Vec::new();
        scenario_rows(&scenario, &mut rows);
        let mut text = String::new();
        for r in &rows {
            r.render(&mut text);
        }
        assert!(
            text.starts_with(
                "| raw TCP stream | throughput, GiB/s | 8.00 | 3.00 | 1.50 | 2.00× | 0.38× |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| GiB per proxy CPU-second | – | 3.00 | 1.50 | 2.00× | – |"),
            "{text}"
        );
        assert_eq!(
            scenario.ratios[0],
            MetricRatios {
                metric: "throughput, GiB/s".into(),
                mizzen_vs_envoy: Some(2.0),
                mizzen_vs_direct: Some(0.375),
            }
        );
        // Results written before the field existed still read.
        let mut json = serde_json::to_value(&scenario).unwrap();
        json.as_object_mut().unwrap().remove("ratios");
        let back: Scenario = serde_json::from_value(json).unwrap();
        assert!(back.ratios.is_empty());
    }

    #[test]
    fn connection_rows_and_pair_figures() {
        let conn = |rep: usize, rate: f64, cores: Option<f64>, resumed: Option<f64>| Sample {
            rep,
            rate,
            ok: (rate * 3.0) as u64,
            proxy_cores: cores,
            proxy_cpu_us_per_request: cores.map(|c| c / rate * 1e6),
            requests_per_proxy_cpu_second: cores.map(|c| rate / c),
            upstream_connections_per_request: cores.map(|_| 1.0),
            tls_resumed_per_connection: resumed,
            ..Default::default()
        };
        let arm = |arm: Arm, samples: Vec<Sample>| ArmResult {
            arm,
            samples,
            summary: None,
            failure: None,
        };
        let mut scenario = Scenario {
            id: "mtls_handshakes".into(),
            title: "handshakes".into(),
            kind: ScenarioKind::Connections,
            arms: vec![
                arm(Arm::Direct, vec![conn(0, 20_000.0, None, None)]),
                arm(Arm::Mizzen, vec![conn(0, 2000.0, Some(1.0), None)]),
                arm(Arm::Envoy, vec![conn(0, 1000.0, Some(1.0), Some(0.25))]),
            ],
            ratios: Vec::new(),
        };
        scenario.summarize();
        let mut rows = Vec::new();
        scenario_rows(&scenario, &mut rows);
        let mut text = String::new();
        for r in &rows {
            r.render(&mut text);
        }
        assert!(
            text.starts_with(
                "| handshakes | connections/s (one request each) | 20.0k | 2000 | 1000 | 2.00× | 0.10× |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| sidecar→sidecar connections (handshakes) per request | – | 1.00 | 1.00 |"
            ),
            "{text}"
        );
        assert!(text.contains("| – | – | 25 % |"), "{text}");
        assert!(
            text.contains("| proxy CPU per connection, µs | – | 500 | 1000 | 0.50× | – |"),
            "{text}"
        );
        assert!(
            text.contains("| connections per proxy CPU-second | – | 2000 | 1000 | 2.00× | – |"),
            "{text}"
        );
    }

    #[test]
    fn failed_arms_show_as_failed_in_the_table() {
        let arm = |arm: Arm, samples: Vec<Sample>| ArmResult {
            arm,
            summary: Summary::of(&samples),
            failure: samples.iter().find_map(|s| s.error.clone()),
            samples,
        };
        let scenario = Scenario {
            id: "h2_max".into(),
            title: "HTTP/2 max".into(),
            kind: ScenarioKind::Max,
            arms: vec![
                arm(Arm::Direct, vec![sample(1000.0, 1.0, None)]),
                arm(
                    Arm::Mizzen,
                    vec![sample(0.0, 0.0, Some("all 16 streams reset"))],
                ),
                arm(Arm::Envoy, vec![sample(500.0, 1.0, None)]),
            ],
            ratios: Vec::new(),
        };
        let mut rows = Vec::new();
        scenario_rows(&scenario, &mut rows);
        let mut text = String::new();
        for r in &rows {
            r.render(&mut text);
        }
        assert!(text.contains("**failed**: all 16 streams reset"), "{text}");
        assert!(text.starts_with("| HTTP/2 max | req/s | 1000 |"), "{text}");
    }
}
