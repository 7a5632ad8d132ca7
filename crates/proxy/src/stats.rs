//! Counters and gauges with Envoy's names, rendered by the admin server.
//!
//! Stat objects are created when configuration is applied and shared by
//! `Arc` with the data path, which only touches atomics. They outlive config
//! updates, as Envoy's do, so counters keep counting across pushes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Per-status-class counters (`1xx` .. `5xx`).
#[derive(Debug, Default)]
pub struct ClassCounters([Counter; 5]);

impl ClassCounters {
    pub fn record(&self, status: u16) {
        if let Some(c) = (status / 100)
            .checked_sub(1)
            .and_then(|i| self.0.get(usize::from(i)))
        {
            c.inc();
        }
    }
    fn iter(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.0.iter().enumerate().map(|(i, c)| (i + 1, c.get()))
    }
}

/// `http.<stat_prefix>.*`
#[derive(Debug, Default)]
pub struct HttpStats {
    pub downstream_rq_total: Counter,
    pub downstream_rq_active: Gauge,
    pub downstream_rq_http1_total: Counter,
    pub downstream_rq_http2_total: Counter,
    pub downstream_rq_xx: ClassCounters,
    pub downstream_cx_total: Counter,
    pub downstream_cx_active: Gauge,
    pub no_route: Counter,
    pub no_cluster: Counter,
    pub rq_direct_response: Counter,
    pub rq_redirect: Counter,
}

/// `cluster.<name>.*`
#[derive(Debug)]
pub struct ClusterStats {
    pub upstream_rq_total: Counter,
    pub upstream_rq_active: Gauge,
    pub upstream_rq_xx: ClassCounters,
    /// Indexed by status - 100, for 100..=599.
    upstream_rq_code: Box<[Counter]>,
    pub upstream_rq_timeout: Counter,
    pub upstream_cx_total: Counter,
    pub upstream_cx_active: Gauge,
    pub upstream_cx_connect_fail: Counter,
    pub upstream_cx_connect_timeout: Counter,
    pub upstream_cx_none_healthy: Counter,
    pub upstream_cx_rx_bytes_total: Counter,
    pub upstream_cx_tx_bytes_total: Counter,
    pub upstream_cx_connect_attempts_exceeded: Counter,
    pub upstream_rq_retry: Counter,
    pub upstream_rq_retry_overflow: Counter,
    pub upstream_rq_retry_limit_exceeded: Counter,
    pub upstream_rq_pending_overflow: Counter,
    pub upstream_rq_per_try_timeout: Counter,
    pub upstream_cx_overflow: Counter,
    pub outlier_ejections: Counter,
    pub membership_healthy: Gauge,
    pub membership_total: Gauge,
}

impl Default for ClusterStats {
    fn default() -> Self {
        ClusterStats {
            upstream_rq_total: Counter::default(),
            upstream_rq_active: Gauge::default(),
            upstream_rq_xx: ClassCounters::default(),
            upstream_rq_code: (0..500).map(|_| Counter::default()).collect(),
            upstream_rq_timeout: Counter::default(),
            upstream_cx_total: Counter::default(),
            upstream_cx_active: Gauge::default(),
            upstream_cx_connect_fail: Counter::default(),
            upstream_cx_connect_timeout: Counter::default(),
            upstream_cx_none_healthy: Counter::default(),
            upstream_cx_rx_bytes_total: Counter::default(),
            upstream_cx_tx_bytes_total: Counter::default(),
            upstream_cx_connect_attempts_exceeded: Counter::default(),
            upstream_rq_retry: Counter::default(),
            upstream_rq_retry_overflow: Counter::default(),
            upstream_rq_retry_limit_exceeded: Counter::default(),
            upstream_rq_pending_overflow: Counter::default(),
            upstream_rq_per_try_timeout: Counter::default(),
            upstream_cx_overflow: Counter::default(),
            outlier_ejections: Counter::default(),
            membership_healthy: Gauge::default(),
            membership_total: Gauge::default(),
        }
    }
}

impl ClusterStats {
    pub fn record_response(&self, status: u16) {
        self.upstream_rq_xx.record(status);
        if let Some(c) = usize::from(status)
            .checked_sub(100)
            .and_then(|i| self.upstream_rq_code.get(i))
        {
            c.inc();
        }
    }
}

/// `listener.<address or stat_prefix>.*`
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_active: Gauge,
    /// Connections closed because no filter chain matched.
    pub no_filter_chain_match: Counter,
    /// Connections whose listener filters timed out.
    pub downstream_pre_cx_timeout: Counter,
    /// Connections closed by the peer while listener filters ran.
    pub downstream_listener_filter_remote_close: Counter,
}

/// `tcp.<stat_prefix>.*` (the TCP proxy filter).
#[derive(Debug, Default)]
pub struct TcpStats {
    pub downstream_cx_total: Counter,
    /// The cluster does not exist.
    pub downstream_cx_no_route: Counter,
    /// Bytes written to the downstream connection.
    pub downstream_cx_tx_bytes_total: Counter,
    /// Bytes read from the downstream connection.
    pub downstream_cx_rx_bytes_total: Counter,
    pub idle_timeout: Counter,
}

/// Counters of one xDS type (`cluster_manager.cds.*`, `listener_manager.lds.*`...).
#[derive(Debug, Default)]
pub struct XdsStats {
    pub update_attempt: Counter,
    pub update_success: Counter,
    pub update_rejected: Counter,
}

#[derive(Debug, Default)]
pub struct Stats {
    http: Mutex<BTreeMap<String, Arc<HttpStats>>>,
    clusters: Mutex<BTreeMap<String, Arc<ClusterStats>>>,
    listeners: Mutex<BTreeMap<String, Arc<ListenerStats>>>,
    tcp: Mutex<BTreeMap<String, Arc<TcpStats>>>,
    pub cds: XdsStats,
    pub eds: XdsStats,
    pub lds: XdsStats,
    pub rds: XdsStats,
    /// Secrets over ADS (not rendered: Envoy counts them per secret).
    pub sds: XdsStats,
    pub server_live: Gauge,
}

fn get_or_create<T: Default>(map: &Mutex<BTreeMap<String, Arc<T>>>, name: &str) -> Arc<T> {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = map.get(name) {
        return s.clone();
    }
    let s = Arc::new(T::default());
    map.insert(name.to_string(), s.clone());
    s
}

fn snapshot<T>(map: &Mutex<BTreeMap<String, Arc<T>>>) -> Vec<(String, Arc<T>)> {
    let map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl Stats {
    pub fn http(&self, stat_prefix: &str) -> Arc<HttpStats> {
        get_or_create(&self.http, stat_prefix)
    }

    pub fn cluster(&self, name: &str) -> Arc<ClusterStats> {
        get_or_create(&self.clusters, name)
    }

    pub fn listener(&self, stat_prefix: &str) -> Arc<ListenerStats> {
        get_or_create(&self.listeners, stat_prefix)
    }

    pub fn tcp(&self, stat_prefix: &str) -> Arc<TcpStats> {
        get_or_create(&self.tcp, stat_prefix)
    }

    /// Every stat as `(name, value)`, sorted by name.
    pub fn collect(&self) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = Vec::new();
        let mut push =
            |name: String, v: u64| out.push((name, i64::try_from(v).unwrap_or(i64::MAX)));
        for (p, s) in snapshot(&self.http) {
            let n = |s: &str| format!("http.{p}.{s}");
            push(n("downstream_rq_total"), s.downstream_rq_total.get());
            push(
                n("downstream_rq_active"),
                s.downstream_rq_active.get().max(0) as u64,
            );
            push(
                n("downstream_rq_http1_total"),
                s.downstream_rq_http1_total.get(),
            );
            push(
                n("downstream_rq_http2_total"),
                s.downstream_rq_http2_total.get(),
            );
            for (class, v) in s.downstream_rq_xx.iter() {
                push(n(&format!("downstream_rq_{class}xx")), v);
            }
            push(n("downstream_cx_total"), s.downstream_cx_total.get());
            push(
                n("downstream_cx_active"),
                s.downstream_cx_active.get().max(0) as u64,
            );
            push(n("no_route"), s.no_route.get());
            push(n("no_cluster"), s.no_cluster.get());
            push(n("rq_direct_response"), s.rq_direct_response.get());
            push(n("rq_redirect"), s.rq_redirect.get());
        }
        for (c, s) in snapshot(&self.clusters) {
            let n = |s: &str| format!("cluster.{c}.{s}");
            push(n("upstream_rq_total"), s.upstream_rq_total.get());
            push(
                n("upstream_rq_active"),
                s.upstream_rq_active.get().max(0) as u64,
            );
            for (class, v) in s.upstream_rq_xx.iter() {
                push(n(&format!("upstream_rq_{class}xx")), v);
            }
            for (i, counter) in s.upstream_rq_code.iter().enumerate() {
                // Like Envoy, a per-code stat exists once that code was seen.
                if counter.get() > 0 {
                    push(n(&format!("upstream_rq_{}", i + 100)), counter.get());
                }
            }
            push(n("upstream_rq_timeout"), s.upstream_rq_timeout.get());
            push(n("upstream_cx_total"), s.upstream_cx_total.get());
            push(
                n("upstream_cx_active"),
                s.upstream_cx_active.get().max(0) as u64,
            );
            push(
                n("upstream_cx_connect_fail"),
                s.upstream_cx_connect_fail.get(),
            );
            push(
                n("upstream_cx_connect_timeout"),
                s.upstream_cx_connect_timeout.get(),
            );
            push(
                n("upstream_cx_none_healthy"),
                s.upstream_cx_none_healthy.get(),
            );
            push(
                n("upstream_cx_rx_bytes_total"),
                s.upstream_cx_rx_bytes_total.get(),
            );
            push(
                n("upstream_cx_tx_bytes_total"),
                s.upstream_cx_tx_bytes_total.get(),
            );
            push(
                n("upstream_cx_connect_attempts_exceeded"),
                s.upstream_cx_connect_attempts_exceeded.get(),
            );
            push(n("upstream_rq_retry"), s.upstream_rq_retry.get());
            push(
                n("upstream_rq_retry_overflow"),
                s.upstream_rq_retry_overflow.get(),
            );
            push(
                n("upstream_rq_retry_limit_exceeded"),
                s.upstream_rq_retry_limit_exceeded.get(),
            );
            push(
                n("upstream_rq_pending_overflow"),
                s.upstream_rq_pending_overflow.get(),
            );
            push(
                n("upstream_rq_per_try_timeout"),
                s.upstream_rq_per_try_timeout.get(),
            );
            push(n("upstream_cx_overflow"), s.upstream_cx_overflow.get());
            push(
                n("outlier_detection.ejections_enforced_total"),
                s.outlier_ejections.get(),
            );
            push(
                n("membership_healthy"),
                s.membership_healthy.get().max(0) as u64,
            );
            push(
                n("membership_total"),
                s.membership_total.get().max(0) as u64,
            );
        }
        for (l, s) in snapshot(&self.listeners) {
            push(
                format!("listener.{l}.downstream_cx_total"),
                s.downstream_cx_total.get(),
            );
            push(
                format!("listener.{l}.downstream_cx_active"),
                s.downstream_cx_active.get().max(0) as u64,
            );
            push(
                format!("listener.{l}.no_filter_chain_match"),
                s.no_filter_chain_match.get(),
            );
            push(
                format!("listener.{l}.downstream_pre_cx_timeout"),
                s.downstream_pre_cx_timeout.get(),
            );
            push(
                format!("listener.{l}.downstream_listener_filter_remote_close"),
                s.downstream_listener_filter_remote_close.get(),
            );
        }
        for (p, s) in snapshot(&self.tcp) {
            let n = |s: &str| format!("tcp.{p}.{s}");
            push(n("downstream_cx_total"), s.downstream_cx_total.get());
            push(n("downstream_cx_no_route"), s.downstream_cx_no_route.get());
            push(
                n("downstream_cx_tx_bytes_total"),
                s.downstream_cx_tx_bytes_total.get(),
            );
            push(
                n("downstream_cx_rx_bytes_total"),
                s.downstream_cx_rx_bytes_total.get(),
            );
            push(n("idle_timeout"), s.idle_timeout.get());
        }
        for (prefix, x) in [
            ("cluster_manager.cds", &self.cds),
            ("cluster_manager.eds", &self.eds),
            ("listener_manager.lds", &self.lds),
            ("http.rds", &self.rds),
        ] {
            push(format!("{prefix}.update_attempt"), x.update_attempt.get());
            push(format!("{prefix}.update_success"), x.update_success.get());
            push(format!("{prefix}.update_rejected"), x.update_rejected.get());
        }
        push(
            "server.live".to_string(),
            self.server_live.get().max(0) as u64,
        );
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Envoy's `/stats` text format: one `name: value` per line.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        for (name, v) in self.collect() {
            let _ = writeln!(s, "{name}: {v}");
        }
        s
    }

    /// A Prometheus rendering with Envoy's metric and label names for the
    /// stats above.
    pub fn render_prometheus(&self) -> String {
        let mut s = String::new();
        let mut line = |metric: &str, labels: &[(&str, &str)], v: i64| {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            let _ = writeln!(s, "envoy_{metric}{{{}}} {v}", labels.join(","));
        };
        for (name, v) in self.collect() {
            let parts: Vec<&str> = name.splitn(2, '.').collect();
            let (scope, rest) = (parts[0], parts.get(1).copied().unwrap_or(""));
            match scope {
                "http" if !rest.starts_with("rds.") => {
                    if let Some((prefix, stat)) = rest.rsplit_once('.') {
                        if let Some(class) = stat
                            .strip_prefix("downstream_rq_")
                            .and_then(|c| c.strip_suffix("xx"))
                            .filter(|c| c.len() == 1)
                        {
                            line(
                                "http_downstream_rq_xx",
                                &[
                                    ("envoy_response_code_class", class),
                                    ("envoy_http_conn_manager_prefix", prefix),
                                ],
                                v,
                            );
                        } else {
                            line(
                                &format!("http_{stat}"),
                                &[("envoy_http_conn_manager_prefix", prefix)],
                                v,
                            );
                        }
                    }
                }
                "cluster" => {
                    if let Some((cluster, stat)) = rest.rsplit_once('.') {
                        let code = stat.strip_prefix("upstream_rq_").filter(|c| c.len() == 3);
                        match code {
                            Some(c) if c.ends_with("xx") => line(
                                "cluster_upstream_rq_xx",
                                &[
                                    ("envoy_response_code_class", &c[..1]),
                                    ("envoy_cluster_name", cluster),
                                ],
                                v,
                            ),
                            Some(c) if c.bytes().all(|b| b.is_ascii_digit()) => line(
                                "cluster_upstream_rq",
                                &[("envoy_response_code", c), ("envoy_cluster_name", cluster)],
                                v,
                            ),
                            _ => line(
                                &format!("cluster_{stat}"),
                                &[("envoy_cluster_name", cluster)],
                                v,
                            ),
                        }
                    }
                }
                "listener" => {
                    if let Some((addr, stat)) = rest.rsplit_once('.') {
                        line(
                            &format!("listener_{stat}"),
                            &[("envoy_listener_address", addr)],
                            v,
                        );
                    }
                }
                "tcp" => {
                    if let Some((prefix, stat)) = rest.rsplit_once('.') {
                        line(&format!("tcp_{stat}"), &[("envoy_tcp_prefix", prefix)], v);
                    }
                }
                _ => line(&name.replace('.', "_"), &[], v),
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let stats = Stats::default();
        let c = stats.cluster("outbound|80||b");
        c.upstream_rq_total.inc();
        c.record_response(200);
        stats
            .http("inbound_0.0.0.0_80")
            .downstream_rq_xx
            .record(503);
        stats.server_live.set(1);
        let t = stats.tcp("outbound|9000||echo");
        t.downstream_cx_total.inc();
        t.downstream_cx_rx_bytes_total.add(5);
        let text = stats.render_text();
        assert!(text.contains("tcp.outbound|9000||echo.downstream_cx_rx_bytes_total: 5\n"));
        assert!(
            text.contains("cluster.outbound|80||b.upstream_rq_200: 1\n"),
            "{text}"
        );
        assert!(text.contains("cluster.outbound|80||b.upstream_rq_2xx: 1\n"));
        assert!(!text.contains("upstream_rq_404"));
        assert!(text.contains("http.inbound_0.0.0.0_80.downstream_rq_5xx: 1\n"));
        assert!(text.contains("server.live: 1\n"));
        let prom = stats.render_prometheus();
        assert!(prom.contains("envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"outbound|80||b\"} 1"), "{prom}");
        assert!(
            prom.contains(
                "envoy_tcp_downstream_cx_total{envoy_tcp_prefix=\"outbound|9000||echo\"} 1"
            ),
            "{prom}"
        );
    }
}
