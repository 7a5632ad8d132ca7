//! Locality load balancing (a DestinationRule's `localityLbSetting`), as
//! Istio does it.
//!
//! Endpoints are grouped by the locality of their workload. What a proxy
//! gets then depends on where the proxy runs, so the locality-independent
//! assignment is built first and reshaped per proxy only when a setting
//! applies:
//!
//! * **failover** (the default: Istio's mesh config enables locality load
//!   balancing) needs outlier detection on the cluster, or a proxy would
//!   never see a nearby endpoint fail. Each locality gets a priority by how
//!   much of it matches the proxy's (region, zone and subzone; region and
//!   zone; region; a region the `failover` list names for the proxy's
//!   region; anything else), compacted to consecutive priorities.
//! * **distribute** gives each locality the weight its `to` entry names
//!   for proxies matching `from` (shared among the localities the entry
//!   matches, in proportion to their endpoints), drops the localities no
//!   entry matches, and turns on locality-weighted load balancing on the
//!   cluster. It applies with or without outlier detection.
//!
//! `failoverPriority` (ordering by labels) is not supported; the setting is
//! accepted and ignored.

use std::collections::BTreeMap;

use mizzen_api::networking::{LocalityDistribute, LocalityFailover, LocalityLoadBalancerSetting};
use mizzen_xds::pb::envoy::config::cluster::v3::Cluster;
use mizzen_xds::pb::envoy::config::cluster::v3::cluster::common_lb_config::{
    LocalityConfigSpecifier, LocalityWeightedLbConfig,
};
use mizzen_xds::pb::envoy::config::core::v3::Locality as LocalityProto;
use mizzen_xds::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints,
};
use mizzen_xds::pb::google::protobuf::UInt32Value;

use super::policy::Effective;
use crate::model::Model;
use crate::node::{Locality, ProxyNode};

/// Istio's default mesh config: locality load balancing on, no rules.
static MESH_DEFAULT: LocalityLoadBalancerSetting = LocalityLoadBalancerSetting {
    distribute: Vec::new(),
    failover: Vec::new(),
    failover_priority: Vec::new(),
    enabled: None,
};

/// What locality load balancing does to one cluster.
#[derive(Debug, PartialEq)]
enum Mode<'a> {
    Off,
    Distribute(&'a [LocalityDistribute]),
    Failover(&'a [LocalityFailover]),
}

fn mode(policy: Option<&Effective>) -> Mode<'_> {
    let Some(policy) = policy else {
        return Mode::Off;
    };
    let setting = policy
        .load_balancer
        .as_ref()
        .and_then(|lb| lb.locality_lb_setting.as_ref())
        .unwrap_or(&MESH_DEFAULT);
    if setting.enabled == Some(false) {
        Mode::Off
    } else if !setting.distribute.is_empty() {
        Mode::Distribute(&setting.distribute)
    } else if policy.outlier_detection.is_some() {
        Mode::Failover(&setting.failover)
    } else {
        Mode::Off
    }
}

/// Locality weights only count when the cluster asks for them.
pub(super) fn configure_cluster(cluster: &mut Cluster, policy: &Effective) {
    if let Mode::Distribute(_) = mode(Some(policy)) {
        cluster
            .common_lb_config
            .get_or_insert_with(Default::default)
            .locality_config_specifier = Some(LocalityConfigSpecifier::LocalityWeightedLbConfig(
            LocalityWeightedLbConfig::default(),
        ));
    }
}

/// The proxy's locality, looked up once per request and only when some
/// cluster needs it: the node's, else its workload's.
pub(super) struct ProxyLocality<'a> {
    model: &'a Model,
    proxy: &'a ProxyNode,
    found: Option<Option<Locality>>,
}

impl<'a> ProxyLocality<'a> {
    pub(super) fn new(model: &'a Model, proxy: &'a ProxyNode) -> Self {
        ProxyLocality {
            model,
            proxy,
            found: None,
        }
    }

    fn get(&mut self) -> Option<&Locality> {
        let (model, proxy) = (self.model, self.proxy);
        self.found
            .get_or_insert_with(|| {
                proxy
                    .locality
                    .clone()
                    .or_else(|| model.workload_of(proxy).and_then(|w| w.locality.clone()))
            })
            .as_ref()
    }
}

/// Groups the endpoints of `cla` (one group, in the order of `localities`)
/// by locality, then applies the cluster's locality setting for the proxy.
pub(super) fn shape(
    cla: &mut ClusterLoadAssignment,
    localities: &[Option<Locality>],
    policy: Option<&Effective>,
    proxy: &mut ProxyLocality,
) {
    if localities.iter().any(Option::is_some) {
        group(cla, localities);
    }
    match mode(policy) {
        Mode::Off => {}
        Mode::Distribute(rules) => {
            // Every locality needs a weight once the cluster is locality
            // weighted: one without gets no traffic.
            for group in &mut cla.endpoints {
                group.load_balancing_weight = Some(UInt32Value {
                    value: endpoint_weight(group),
                });
            }
            if let Some(here) = proxy.get() {
                distribute(cla, here, rules);
            }
        }
        Mode::Failover(failover) => {
            if cla.endpoints.len() > 1
                && let Some(here) = proxy.get()
            {
                prioritise(cla, here, failover);
            }
        }
    }
}

fn group(cla: &mut ClusterLoadAssignment, localities: &[Option<Locality>]) {
    let [single] = cla.endpoints.as_mut_slice() else {
        return;
    };
    if single.lb_endpoints.len() != localities.len() {
        return;
    }
    let mut groups: BTreeMap<Option<&Locality>, Vec<LbEndpoint>> = BTreeMap::new();
    for (endpoint, locality) in std::mem::take(&mut single.lb_endpoints)
        .into_iter()
        .zip(localities)
    {
        groups.entry(locality.as_ref()).or_default().push(endpoint);
    }
    cla.endpoints = groups
        .into_iter()
        .map(|(locality, lb_endpoints)| LocalityLbEndpoints {
            locality: locality.map(|l| LocalityProto {
                region: l.region.clone(),
                zone: l.zone.clone(),
                sub_zone: l.sub_zone.clone(),
            }),
            lb_endpoints,
            ..Default::default()
        })
        .collect();
}

fn locality_of(group: &LocalityLbEndpoints) -> Locality {
    group
        .locality
        .as_ref()
        .map(Locality::from)
        .unwrap_or_default()
}

fn endpoint_weight(group: &LocalityLbEndpoints) -> u32 {
    group
        .lb_endpoints
        .iter()
        .map(|e| e.load_balancing_weight.as_ref().map_or(1, |w| w.value))
        .sum()
}

/// Whether `locality` is in `pattern` (`region/zone/subzone`, where `*` or
/// a missing part matches anything).
pub fn locality_matches(locality: &Locality, pattern: &str) -> bool {
    let mut parts = pattern.split('/');
    let mut part = |value: &str, required: bool| match parts.next() {
        None => !required,
        Some("*") => true,
        Some(p) => p == value,
    };
    part(&locality.region, true) && part(&locality.zone, false) && part(&locality.sub_zone, false)
}

fn distribute(cla: &mut ClusterLoadAssignment, here: &Locality, rules: &[LocalityDistribute]) {
    let Some(rule) = rules
        .iter()
        .find(|r| r.from.as_deref().is_some_and(|f| locality_matches(here, f)))
    else {
        return;
    };
    let localities: Vec<Locality> = cla.endpoints.iter().map(locality_of).collect();
    let mut claimed = vec![false; cla.endpoints.len()];
    for (pattern, weight) in &rule.to {
        let matched: Vec<usize> = (0..localities.len())
            .filter(|&i| !claimed[i] && locality_matches(&localities[i], pattern))
            .collect();
        let total: u64 = matched
            .iter()
            .map(|&i| u64::from(endpoint_weight(&cla.endpoints[i])))
            .sum();
        for &i in &matched {
            claimed[i] = true;
            let share = (u64::from(endpoint_weight(&cla.endpoints[i])) * u64::from(*weight))
                .div_ceil(total.max(1));
            if share > 0 {
                cla.endpoints[i].load_balancing_weight = Some(UInt32Value {
                    value: u32::try_from(share).unwrap_or(u32::MAX),
                });
            }
        }
    }
    let mut claimed = claimed.into_iter();
    cla.endpoints.retain(|_| claimed.next().unwrap_or(false));
}

fn prioritise(cla: &mut ClusterLoadAssignment, here: &Locality, failover: &[LocalityFailover]) {
    let rank = |l: &Locality| -> u32 {
        if l.region != here.region {
            let named = failover.iter().any(|f| {
                f.from.as_deref() == Some(here.region.as_str())
                    && f.to.as_deref() == Some(l.region.as_str())
            });
            if named { 3 } else { 4 }
        } else if l.zone != here.zone {
            2
        } else if l.sub_zone != here.sub_zone {
            1
        } else {
            0
        }
    };
    let ranks: Vec<u32> = cla
        .endpoints
        .iter()
        .map(|g| rank(&locality_of(g)))
        .collect();
    // Priorities without gaps: an empty priority would only dilute health.
    let mut used = ranks.clone();
    used.sort_unstable();
    used.dedup();
    for (group, r) in cla.endpoints.iter_mut().zip(ranks) {
        group.priority = used.iter().position(|u| *u == r).unwrap_or(0) as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Locality {
        Locality::parse(text).unwrap()
    }

    #[test]
    fn patterns_match_like_istio() {
        let l = at("r1/z1/s1");
        for yes in ["r1", "r1/*", "r1/z1", "r1/z1/*", "r1/z1/s1", "*", "*/z1"] {
            assert!(locality_matches(&l, yes), "{yes}");
        }
        for no in ["r2", "r1/z2", "r1/z1/s2", "r1/z2/*", ""] {
            assert!(!locality_matches(&l, no), "{no}");
        }
    }
}
