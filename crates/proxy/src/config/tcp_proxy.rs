//! `envoy.filters.network.tcp_proxy` → [`TcpProxyConfig`].

use std::sync::Arc;
use std::time::Duration;

use mizzen_xds::pb;
use pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};

use super::check::reject_unknown;
use super::{ConfigError, Scope, duration, fields, join};

pub const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
pub(crate) const TCP_PROXY_TYPE: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

/// Envoy's `idle_timeout` when unset: one hour.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpProxyConfig {
    /// Prefix of `tcp.<prefix>.*` stats.
    pub stat_prefix: Arc<str>,
    pub clusters: TcpClusters,
    /// Closes the connection after this long without bytes in either
    /// direction; `None` never does (`idle_timeout: 0s`).
    pub idle_timeout: Option<Duration>,
    /// Upstream connect attempts before giving up (at least 1).
    pub max_connect_attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpClusters {
    Single(Arc<str>),
    /// Clusters with their weights (each at least 1) and the sum of weights.
    Weighted {
        entries: Vec<(Arc<str>, u32)>,
        total: u32,
    },
}

impl TcpClusters {
    /// The cluster for a point in `0..total` (always the only one for
    /// `Single`); `None` only for an empty weighted list, which compiled
    /// config never has.
    pub fn pick(&self, point: u32) -> Option<&Arc<str>> {
        match self {
            TcpClusters::Single(c) => Some(c),
            TcpClusters::Weighted { entries, .. } => {
                let mut acc = 0u32;
                for (name, w) in entries {
                    acc = acc.saturating_add(*w);
                    if point < acc {
                        return Some(name);
                    }
                }
                entries.last().map(|(name, _)| name)
            }
        }
    }

    pub fn total(&self) -> u32 {
        match self {
            TcpClusters::Single(_) => 1,
            TcpClusters::Weighted { total, .. } => *total,
        }
    }

    /// Every cluster named.
    pub fn names(&self) -> Vec<&Arc<str>> {
        match self {
            TcpClusters::Single(c) => vec![c],
            TcpClusters::Weighted { entries, .. } => entries.iter().map(|(c, _)| c).collect(),
        }
    }
}

pub(crate) fn compile(
    scope: &Scope,
    path: &str,
    t: &TcpProxy,
) -> Result<TcpProxyConfig, ConfigError> {
    reject_unknown(scope, path, t, fields::TCP_PROXY, |t| {
        t.stat_prefix.clear();
        t.cluster_specifier = None;
        t.idle_timeout = None;
        t.max_connect_attempts = None;
    })?;
    if t.stat_prefix.is_empty() {
        return Err(scope.missing(join(path, "stat_prefix")));
    }
    let clusters = match &t.cluster_specifier {
        Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => {
            if c.is_empty() {
                return Err(scope.missing(join(path, "cluster")));
            }
            TcpClusters::Single(Arc::from(c.as_str()))
        }
        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
            let wpath = join(path, "weighted_clusters");
            reject_unknown(scope, &wpath, w, fields::TCP_PROXY_WEIGHTED_CLUSTER, |w| {
                w.clusters.clear()
            })?;
            if w.clusters.is_empty() {
                return Err(scope.missing(join(&wpath, "clusters")));
            }
            let mut entries = Vec::with_capacity(w.clusters.len());
            let mut total: u32 = 0;
            for (i, c) in w.clusters.iter().enumerate() {
                let cpath = join(&wpath, &format!("clusters[{i}]"));
                reject_unknown(scope, &cpath, c, fields::TCP_PROXY_CLUSTER_WEIGHT, |c| {
                    c.name.clear();
                    c.weight = 0;
                })?;
                if c.name.is_empty() {
                    return Err(scope.missing(join(&cpath, "name")));
                }
                if c.weight == 0 {
                    return Err(scope.invalid(join(&cpath, "weight"), "must be at least 1"));
                }
                total = total.checked_add(c.weight).ok_or_else(|| {
                    scope.invalid(join(&cpath, "weight"), "sum of weights overflows")
                })?;
                entries.push((Arc::from(c.name.as_str()), c.weight));
            }
            TcpClusters::Weighted { entries, total }
        }
        None => return Err(scope.missing(join(path, "cluster"))),
    };
    let idle_timeout = match &t.idle_timeout {
        None => Some(DEFAULT_IDLE_TIMEOUT),
        Some(d) => {
            let d = duration(scope, &join(path, "idle_timeout"), d)?;
            (!d.is_zero()).then_some(d)
        }
    };
    let max_connect_attempts = match t.max_connect_attempts {
        None => 1,
        Some(v) if v.value >= 1 => v.value,
        Some(_) => {
            return Err(scope.invalid(join(path, "max_connect_attempts"), "must be at least 1"));
        }
    };
    Ok(TcpProxyConfig {
        stat_prefix: Arc::from(t.stat_prefix.as_str()),
        clusters,
        idle_timeout,
        max_connect_attempts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::google::protobuf::{Duration as PbDuration, UInt32Value};
    use tcp_proxy::weighted_cluster::ClusterWeight;

    fn scope() -> Scope {
        Scope::new("listener", "l")
    }

    #[test]
    fn single_cluster_defaults() {
        let t = TcpProxy {
            stat_prefix: "outbound|9000||echo".into(),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(
                "outbound|9000||echo".into(),
            )),
            ..Default::default()
        };
        let c = compile(&scope(), "f", &t).unwrap();
        assert_eq!(c.idle_timeout, Some(DEFAULT_IDLE_TIMEOUT));
        assert_eq!(c.max_connect_attempts, 1);
        assert_eq!(
            c.clusters.pick(0).map(|c| &**c),
            Some("outbound|9000||echo")
        );
    }

    #[test]
    fn weighted_clusters_and_timeouts() {
        let t = TcpProxy {
            stat_prefix: "s".into(),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::WeightedClusters(
                tcp_proxy::WeightedCluster {
                    clusters: vec![
                        ClusterWeight {
                            name: "a".into(),
                            weight: 80,
                            ..Default::default()
                        },
                        ClusterWeight {
                            name: "b".into(),
                            weight: 20,
                            ..Default::default()
                        },
                    ],
                },
            )),
            idle_timeout: Some(PbDuration {
                seconds: 0,
                nanos: 0,
            }),
            max_connect_attempts: Some(UInt32Value { value: 3 }),
            ..Default::default()
        };
        let c = compile(&scope(), "f", &t).unwrap();
        assert_eq!(c.idle_timeout, None);
        assert_eq!(c.max_connect_attempts, 3);
        assert_eq!(c.clusters.total(), 100);
        assert_eq!(c.clusters.pick(79).map(|c| &**c), Some("a"));
        assert_eq!(c.clusters.pick(80).map(|c| &**c), Some("b"));
        assert_eq!(c.clusters.pick(99).map(|c| &**c), Some("b"));
    }

    #[test]
    fn refusals() {
        let base = TcpProxy {
            stat_prefix: "s".into(),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("c".into())),
            ..Default::default()
        };
        let cases: Vec<(TcpProxy, &str)> = vec![
            (
                TcpProxy {
                    stat_prefix: String::new(),
                    ..base.clone()
                },
                "listener l: f.stat_prefix is required",
            ),
            (
                TcpProxy {
                    cluster_specifier: None,
                    ..base.clone()
                },
                "listener l: f.cluster is required",
            ),
            (
                TcpProxy {
                    access_log: vec![Default::default()],
                    ..base.clone()
                },
                "listener l: f.access_log is not supported",
            ),
            (
                TcpProxy {
                    tunneling_config: Some(Default::default()),
                    ..base.clone()
                },
                "listener l: f.tunneling_config is not supported",
            ),
            (
                TcpProxy {
                    hash_policy: vec![Default::default()],
                    ..base.clone()
                },
                "listener l: f.hash_policy is not supported",
            ),
            (
                TcpProxy {
                    max_connect_attempts: Some(UInt32Value { value: 0 }),
                    ..base.clone()
                },
                "listener l: f.max_connect_attempts: must be at least 1",
            ),
            (
                TcpProxy {
                    cluster_specifier: Some(tcp_proxy::ClusterSpecifier::WeightedClusters(
                        tcp_proxy::WeightedCluster {
                            clusters: vec![ClusterWeight {
                                name: "a".into(),
                                weight: 0,
                                ..Default::default()
                            }],
                        },
                    )),
                    ..base.clone()
                },
                "listener l: f.weighted_clusters.clusters[0].weight: must be at least 1",
            ),
        ];
        for (t, want) in cases {
            assert_eq!(compile(&scope(), "f", &t).unwrap_err().to_string(), want);
        }
    }
}
