//! Load-balancing policies over a cluster's hosts: round robin (weighted),
//! random, least request, and the consistent-hash ring hash and Maglev.
//!
//! Tables are built once per config snapshot; a pick reads them without
//! locks. When outlier detection has ejected hosts, the caller passes the
//! indices still usable and the pick is made among them.
//!
//! Clusters whose endpoints span several priorities, or that balance by
//! locality weight, pick through a [`Layout`] first: a priority by Envoy's
//! priority load, then (locality-weighted clusters) a locality, then a host
//! with the cluster's policy within it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

use super::Host;
use crate::config::cluster_policy::LbParams;
use crate::config::{EndpointSet, LbPolicy};

/// Longest precomputed weighted round-robin schedule; larger weight sums fall
/// back to weighted random choice.
const MAX_SCHEDULE: u64 = 4096;

#[derive(Debug)]
pub struct Balancer {
    policy: LbPolicy,
    choice_count: u32,
    /// Weighted round robin: host indices in smooth interleaved order.
    schedule: Option<Vec<u32>>,
    /// Cumulative weights, when weights differ (random choices).
    cumulative: Option<Vec<u64>>,
    /// Ring hash: (point, host index) sorted by point.
    ring: Vec<(u64, u32)>,
    /// Maglev lookup table of host indices.
    maglev: Vec<u32>,
}

impl Balancer {
    pub fn new(policy: LbPolicy, params: &LbParams, hosts: &[(SocketAddr, u32)]) -> Balancer {
        let weights: Vec<u32> = hosts.iter().map(|(_, w)| *w).collect();
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        let cumulative = (!uniform).then(|| {
            weights
                .iter()
                .scan(0u64, |acc, w| {
                    *acc += u64::from(*w);
                    Some(*acc)
                })
                .collect::<Vec<_>>()
        });
        let schedule = match (&policy, &cumulative) {
            (LbPolicy::RoundRobin, Some(_)) => smooth_schedule(&weights),
            _ => None,
        };
        let ring = match policy {
            LbPolicy::RingHash => build_ring(hosts, params.ring_min, params.ring_max),
            _ => Vec::new(),
        };
        let maglev = match policy {
            LbPolicy::Maglev => build_maglev(hosts, params.maglev_table_size),
            _ => Vec::new(),
        };
        Balancer {
            policy,
            choice_count: params.choice_count.max(2),
            schedule,
            cumulative,
            ring,
            maglev,
        }
    }

    /// Index of the chosen host, `None` when there is none. `hash` is the
    /// request's hash for consistent-hash policies; `usable`, when some
    /// hosts are ejected, lists the hosts that may be picked.
    pub fn pick(
        &self,
        hosts: &[Arc<Host>],
        rr: &AtomicUsize,
        hash: Option<u64>,
        usable: Option<&[usize]>,
    ) -> Option<usize> {
        if let Some(ok) = usable {
            return self.pick_among(hosts, ok, rr, hash);
        }
        let n = hosts.len();
        if n == 0 {
            return None;
        }
        if n == 1 {
            return Some(0);
        }
        match self.policy {
            // ORIGINAL_DST clusters have no host list to pick from.
            LbPolicy::ClusterProvided => None,
            LbPolicy::RoundRobin => {
                let i = rr.fetch_add(1, Ordering::Relaxed);
                match (&self.schedule, &self.cumulative) {
                    (Some(s), _) => Some(s[i % s.len()] as usize),
                    (None, Some(_)) => Some(self.weighted_random()),
                    (None, None) => Some(i % n),
                }
            }
            LbPolicy::Random => Some(match &self.cumulative {
                Some(_) => self.weighted_random(),
                None => rand::rng().random_range(0..n),
            }),
            LbPolicy::LeastRequest => Some(self.least_request(hosts, n, |i| i)),
            LbPolicy::RingHash | LbPolicy::Maglev => {
                let h = hash.unwrap_or_else(rand::random);
                self.hashed(h, |_| true)
            }
        }
    }

    fn pick_among(
        &self,
        hosts: &[Arc<Host>],
        ok: &[usize],
        rr: &AtomicUsize,
        hash: Option<u64>,
    ) -> Option<usize> {
        let n = ok.len();
        if n == 0 {
            return None;
        }
        match self.policy {
            LbPolicy::ClusterProvided => None,
            LbPolicy::RoundRobin => Some(ok[rr.fetch_add(1, Ordering::Relaxed) % n]),
            LbPolicy::Random => Some(ok[rand::rng().random_range(0..n)]),
            LbPolicy::LeastRequest => Some(self.least_request(hosts, n, |i| ok[i])),
            LbPolicy::RingHash | LbPolicy::Maglev => {
                let h = hash.unwrap_or_else(rand::random);
                self.hashed(h, |i| ok.contains(&i))
            }
        }
    }

    /// The host owning `hash`, skipping hosts `usable` refuses.
    fn hashed(&self, hash: u64, usable: impl Fn(usize) -> bool) -> Option<usize> {
        if !self.ring.is_empty() {
            let start = self.ring.partition_point(|(p, _)| *p < hash);
            let len = self.ring.len();
            return (0..len)
                .map(|k| self.ring[(start + k) % len].1 as usize)
                .find(|i| usable(*i));
        }
        if !self.maglev.is_empty() {
            let len = self.maglev.len();
            let start = (hash % len as u64) as usize;
            return (0..len)
                .map(|k| self.maglev[(start + k) % len] as usize)
                .find(|i| usable(*i));
        }
        None
    }

    /// `choice_count` random candidates, the one with the fewest requests
    /// in flight wins (Envoy's default for equal weights).
    fn least_request(
        &self,
        hosts: &[Arc<Host>],
        n: usize,
        index: impl Fn(usize) -> usize,
    ) -> usize {
        let mut rng = rand::rng();
        let load = |i: usize| hosts[i].active.load(Ordering::Relaxed);
        let mut best = index(rng.random_range(0..n));
        if n == 2 && self.choice_count == 2 {
            // Two distinct candidates out of two: always compare both.
            let other = if best == index(0) { index(1) } else { index(0) };
            return if load(other) < load(best) {
                other
            } else {
                best
            };
        }
        for _ in 1..self.choice_count {
            let c = index(rng.random_range(0..n));
            if load(c) < load(best) {
                best = c;
            }
        }
        best
    }

    fn weighted_random(&self) -> usize {
        let Some(c) = &self.cumulative else { return 0 };
        let total = c.last().copied().unwrap_or(0);
        if total == 0 {
            return 0;
        }
        let point = rand::rng().random_range(0..total);
        c.partition_point(|x| *x <= point)
    }
}

/// Envoy's default overprovisioning factor, in percent: a priority or a
/// locality counts as fully available until fewer than 1/1.4 (about 71 %)
/// of its hosts are healthy.
const OVERPROVISIONING: u64 = 140;

/// Priorities and localities of a cluster, each with its own balancer over
/// its slice of the host list (hosts are ordered by priority).
#[derive(Debug)]
pub struct Layout {
    levels: Vec<Level>,
    /// Below this share of healthy hosts (hundredths of a percent) a
    /// priority is in panic and uses all its hosts.
    panic_threshold: u32,
    /// Priority loads while no host is ejected.
    steady: Loads,
    /// Position in the levels' locality schedules.
    turn: AtomicUsize,
}

#[derive(Debug)]
struct Level {
    hosts: Slice,
    balancer: Balancer,
    /// Only with locality-weighted load balancing.
    localities: Vec<WeightedLocality>,
    /// Locality indices in smooth weighted order while no host is ejected,
    /// so that shares are exact rather than drawn (Envoy schedules
    /// localities too); empty when too long to precompute.
    schedule: Vec<u32>,
}

#[derive(Debug)]
struct WeightedLocality {
    hosts: Slice,
    weight: u32,
    balancer: Balancer,
}

/// Hosts `start..start + len` of the cluster's list, out of `total` listed
/// (the rest are unhealthy by EDS).
#[derive(Debug, Clone, Copy)]
struct Slice {
    start: usize,
    len: usize,
    total: usize,
}

impl Slice {
    fn healthy(&self, ejected: Option<&dyn Fn(usize) -> bool>) -> usize {
        match ejected {
            None => self.len,
            Some(ejected) => (self.start..self.start + self.len)
                .filter(|i| !ejected(*i))
                .count(),
        }
    }

    /// Availability in percent, overprovisioned and capped at 100.
    fn availability(&self, healthy: usize) -> u64 {
        if self.total == 0 {
            return 0;
        }
        (OVERPROVISIONING * healthy as u64 / self.total as u64).min(100)
    }
}

/// Percent of requests per priority, and which priorities are in panic.
#[derive(Debug, Clone, Default)]
struct Loads {
    percent: Vec<u64>,
    panic: Vec<bool>,
}

impl Layout {
    /// `None` when one balancer over all hosts does: a single priority
    /// without locality weighting.
    pub fn new(policy: LbPolicy, params: &LbParams, set: &EndpointSet) -> Option<Layout> {
        let groups = &set.groups;
        let first = groups.first()?;
        let single = groups.iter().all(|g| g.priority == first.priority);
        if single && !params.locality_weighted {
            return None;
        }
        let weights = |start: usize, len: usize| -> Vec<(SocketAddr, u32)> {
            set.endpoints[start..start + len]
                .iter()
                .map(|e| (e.address, e.weight))
                .collect()
        };
        let mut levels: Vec<Level> = Vec::new();
        let mut i = 0;
        while i < groups.len() {
            let same: Vec<_> = groups[i..]
                .iter()
                .take_while(|g| g.priority == groups[i].priority)
                .collect();
            i += same.len();
            let start = same[0].start;
            let len: usize = same.iter().map(|g| g.len).sum();
            let total: usize = same.iter().map(|g| g.total).sum();
            let localities = if params.locality_weighted {
                same.iter()
                    .map(|g| WeightedLocality {
                        hosts: Slice {
                            start: g.start,
                            len: g.len,
                            total: g.total,
                        },
                        weight: g.weight,
                        balancer: Balancer::new(policy, params, &weights(g.start, g.len)),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let steady: Vec<u32> = localities
                .iter()
                .map(|l: &WeightedLocality| {
                    let effective = u64::from(l.weight) * l.hosts.availability(l.hosts.len);
                    u32::try_from(effective).unwrap_or(u32::MAX)
                })
                .collect();
            let schedule = if steady.iter().any(|w| *w > 0) {
                smooth_schedule(&steady).unwrap_or_default()
            } else {
                Vec::new()
            };
            levels.push(Level {
                hosts: Slice { start, len, total },
                balancer: Balancer::new(policy, params, &weights(start, len)),
                localities,
                schedule,
            });
        }
        let mut layout = Layout {
            levels,
            panic_threshold: params.panic_threshold,
            steady: Loads::default(),
            turn: AtomicUsize::new(0),
        };
        layout.steady = layout.loads(None);
        Some(layout)
    }

    /// Envoy's priority load: each priority takes its availability's share
    /// of what the better ones leave, scaled so that availabilities summing
    /// below 100 still carry all traffic; with no availability at all, load
    /// follows host counts and every priority is in panic.
    fn loads(&self, ejected: Option<&dyn Fn(usize) -> bool>) -> Loads {
        let healthy: Vec<usize> = self
            .levels
            .iter()
            .map(|l| l.hosts.healthy(ejected))
            .collect();
        let health: Vec<u64> = self
            .levels
            .iter()
            .zip(&healthy)
            .map(|(l, h)| l.hosts.availability(*h))
            .collect();
        let normalized = health.iter().sum::<u64>().min(100);
        if normalized == 0 {
            let all: usize = self.levels.iter().map(|l| l.hosts.total).sum();
            let mut percent: Vec<u64> = self
                .levels
                .iter()
                .map(|l| 100 * l.hosts.total as u64 / all.max(1) as u64)
                .collect();
            let given: u64 = percent.iter().sum();
            percent[0] += 100 - given;
            return Loads {
                percent,
                panic: vec![true; self.levels.len()],
            };
        }
        let mut left = 100u64;
        let mut percent: Vec<u64> = health
            .iter()
            .map(|h| {
                let take = (h * 100 / normalized).min(left);
                left -= take;
                take
            })
            .collect();
        // Rounding leftovers go to the first priority able to serve.
        if left > 0
            && let Some(first) = health.iter().position(|h| *h > 0)
        {
            percent[first] += left;
        }
        let threshold = u64::from(self.panic_threshold);
        let panic = self
            .levels
            .iter()
            .zip(&healthy)
            .map(|(l, h)| {
                normalized < 100 && (*h as u64) * 10_000 < threshold * l.hosts.total as u64
            })
            .collect();
        Loads { percent, panic }
    }

    /// Index of the chosen host. `ejected`, when some hosts may be ejected,
    /// says which.
    pub fn pick(
        &self,
        hosts: &[Arc<Host>],
        rr: &AtomicUsize,
        hash: Option<u64>,
        ejected: Option<&dyn Fn(usize) -> bool>,
    ) -> Option<usize> {
        let computed;
        let loads = match ejected {
            None => &self.steady,
            Some(_) => {
                computed = self.loads(ejected);
                &computed
            }
        };
        // A request's hash keeps it on one priority, as on one host.
        let point = hash.map_or_else(|| rand::rng().random_range(0..100), |h| h % 100);
        let mut acc = 0;
        let p = loads
            .percent
            .iter()
            .position(|share| {
                acc += share;
                point < acc
            })
            .unwrap_or(0);
        let level = &self.levels[p];
        if loads.panic[p] {
            let slice = &hosts[level.hosts.start..level.hosts.start + level.hosts.len];
            return level
                .balancer
                .pick(slice, rr, hash, None)
                .map(|i| level.hosts.start + i);
        }
        if let Some(locality) = self.choose_locality(level, ejected) {
            return Self::pick_in(&locality.balancer, locality.hosts, hosts, rr, hash, ejected);
        }
        Self::pick_in(&level.balancer, level.hosts, hosts, rr, hash, ejected)
    }

    /// A locality by weight times availability (Envoy's locality-weighted
    /// load balancing); `None` without locality weighting or when no
    /// locality has any effective weight.
    fn choose_locality<'a>(
        &self,
        level: &'a Level,
        ejected: Option<&dyn Fn(usize) -> bool>,
    ) -> Option<&'a WeightedLocality> {
        if level.localities.is_empty() {
            return None;
        }
        if ejected.is_none() && !level.schedule.is_empty() {
            let turn = self.turn.fetch_add(1, Ordering::Relaxed);
            return Some(&level.localities[level.schedule[turn % level.schedule.len()] as usize]);
        }
        let effective: Vec<u64> = level
            .localities
            .iter()
            .map(|l| u64::from(l.weight) * l.hosts.availability(l.hosts.healthy(ejected)))
            .collect();
        let sum: u64 = effective.iter().sum();
        if sum == 0 {
            return None;
        }
        let mut point = rand::rng().random_range(0..sum);
        let i = effective.iter().position(|w| {
            if point < *w {
                true
            } else {
                point -= w;
                false
            }
        })?;
        Some(&level.localities[i])
    }

    /// A host of `slice` not ejected, with the slice's balancer.
    fn pick_in(
        balancer: &Balancer,
        slice: Slice,
        hosts: &[Arc<Host>],
        rr: &AtomicUsize,
        hash: Option<u64>,
        ejected: Option<&dyn Fn(usize) -> bool>,
    ) -> Option<usize> {
        let own = &hosts[slice.start..slice.start + slice.len];
        let usable: Option<Vec<usize>> = ejected.and_then(|ejected| {
            let ok: Vec<usize> = (0..slice.len)
                .filter(|i| !ejected(slice.start + i))
                .collect();
            (ok.len() < slice.len).then_some(ok)
        });
        balancer
            .pick(own, rr, hash, usable.as_deref())
            .map(|i| slice.start + i)
    }
}

/// A 64-bit hash of bytes (FNV-1a with a final avalanche), stable across
/// runs so that a key keeps its host across config pushes and restarts.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Each host gets a share of `min..=max` points proportional to its weight.
fn build_ring(hosts: &[(SocketAddr, u32)], min: u64, max: u64) -> Vec<(u64, u32)> {
    let total: u64 = hosts.iter().map(|(_, w)| u64::from(*w).max(1)).sum();
    if total == 0 {
        return Vec::new();
    }
    let target = min.max(hosts.len() as u64).min(max);
    let mut ring = Vec::with_capacity(target as usize + hosts.len());
    for (i, (addr, w)) in hosts.iter().enumerate() {
        let replicas = (target * u64::from((*w).max(1))).div_ceil(total).max(1);
        let key = addr.to_string();
        for k in 0..replicas {
            ring.push((hash_bytes(format!("{key}_{k}").as_bytes()), i as u32));
        }
    }
    ring.sort_unstable();
    ring
}

/// Maglev's permutation table: every host walks its own permutation of the
/// slots and claims free ones in turns proportional to its weight.
fn build_maglev(hosts: &[(SocketAddr, u32)], size: u64) -> Vec<u32> {
    if hosts.is_empty() || size == 0 {
        return Vec::new();
    }
    let m = size as usize;
    let perms: Vec<(u64, u64)> = hosts
        .iter()
        .map(|(addr, _)| {
            let key = addr.to_string();
            let offset = hash_bytes(key.as_bytes()) % size;
            let skip = hash_bytes(format!("{key}#skip").as_bytes()) % (size - 1).max(1) + 1;
            (offset, skip)
        })
        .collect();
    let max_weight = hosts
        .iter()
        .map(|(_, w)| u64::from(*w).max(1))
        .max()
        .unwrap_or(1);
    let mut table = vec![u32::MAX; m];
    let mut next = vec![0u64; hosts.len()];
    let mut credit = vec![0u64; hosts.len()];
    let mut filled = 0;
    while filled < m {
        for (i, (_, w)) in hosts.iter().enumerate() {
            credit[i] += u64::from((*w).max(1));
            if credit[i] < max_weight {
                continue;
            }
            credit[i] -= max_weight;
            let (offset, skip) = perms[i];
            loop {
                let slot = ((offset + next[i] * skip) % size) as usize;
                next[i] += 1;
                if table[slot] == u32::MAX {
                    table[slot] = i as u32;
                    filled += 1;
                    break;
                }
            }
            if filled == m {
                break;
            }
        }
    }
    table
}

/// Smooth weighted round robin (each step: add weights, take the max, subtract
/// the total), which spreads a heavy host's turns instead of bunching them.
fn smooth_schedule(weights: &[u32]) -> Option<Vec<u32>> {
    let g = weights.iter().fold(0u32, |g, w| gcd(g, *w)).max(1);
    let reduced: Vec<i64> = weights.iter().map(|w| i64::from(w / g)).collect();
    let total: i64 = reduced.iter().sum();
    if total <= 0 || total as u64 > MAX_SCHEDULE {
        return None;
    }
    let mut current = vec![0i64; reduced.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&reduced) {
            *c += w;
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))?;
        current[best] -= total;
        out.push(best as u32);
    }
    Some(out)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: usize) -> Vec<(SocketAddr, u32)> {
        (0..n)
            .map(|i| (format!("10.0.0.{i}:80").parse().unwrap(), 1))
            .collect()
    }

    fn hosts(n: usize) -> Vec<Arc<Host>> {
        addrs(n)
            .into_iter()
            .map(|(a, _)| Arc::new(Host::for_tests(a)))
            .collect()
    }

    fn balancer(policy: LbPolicy, weights: &[u32]) -> Balancer {
        let hosts: Vec<(SocketAddr, u32)> = addrs(weights.len())
            .into_iter()
            .zip(weights)
            .map(|((a, _), w)| (a, *w))
            .collect();
        Balancer::new(policy, &LbParams::default(), &hosts)
    }

    #[test]
    fn round_robin_cycles() {
        let b = balancer(LbPolicy::RoundRobin, &[1, 1, 1]);
        let h = hosts(3);
        let rr = AtomicUsize::new(0);
        let picks: Vec<usize> = (0..6)
            .map(|_| b.pick(&h, &rr, None, None).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(b.pick(&[], &rr, None, None), None);
        // Host 1 ejected: only 0 and 2 are picked.
        let picks: Vec<usize> = (0..4)
            .map(|_| b.pick(&h, &rr, None, Some(&[0, 2])).unwrap())
            .collect();
        assert!(picks.iter().all(|i| *i != 1));
    }

    #[test]
    fn weighted_round_robin_is_smooth_and_proportional() {
        let s = smooth_schedule(&[5, 1, 1]).unwrap();
        assert_eq!(s.len(), 7);
        assert_eq!(s.iter().filter(|i| **i == 0).count(), 5);
        assert_eq!(s, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn least_request_prefers_idle_host() {
        let b = balancer(LbPolicy::LeastRequest, &[1, 1]);
        let h = hosts(2);
        h[0].active.store(10, Ordering::Relaxed);
        let rr = AtomicUsize::new(0);
        for _ in 0..20 {
            assert_eq!(b.pick(&h, &rr, None, None), Some(1));
        }
    }

    #[test]
    fn weighted_random_distribution() {
        let b = balancer(LbPolicy::Random, &[1, 3]);
        let h = hosts(2);
        let rr = AtomicUsize::new(0);
        let n = 20_000;
        let ones = (0..n)
            .filter(|_| b.pick(&h, &rr, None, None) == Some(1))
            .count();
        let share = ones as f64 / n as f64;
        assert!((0.72..0.78).contains(&share), "share {share}");
    }

    #[test]
    fn consistent_hashing_is_sticky_and_spreads() {
        for policy in [LbPolicy::RingHash, LbPolicy::Maglev] {
            let b = balancer(policy, &[1, 1, 1]);
            let h = hosts(3);
            let rr = AtomicUsize::new(0);
            let mut seen = [0usize; 3];
            for key in 0..3000u32 {
                let hash = hash_bytes(&key.to_be_bytes());
                let first = b.pick(&h, &rr, Some(hash), None).unwrap();
                assert_eq!(b.pick(&h, &rr, Some(hash), None), Some(first));
                seen[first] += 1;
                // An ejected owner moves the key to another host.
                let others: Vec<usize> = (0..3).filter(|i| *i != first).collect();
                let moved = b.pick(&h, &rr, Some(hash), Some(&others)).unwrap();
                assert_ne!(moved, first);
            }
            assert!(seen.iter().all(|n| *n > 600), "{policy:?} {seen:?}");
        }
    }

    /// Localities as (priority, weight, hosts), one host address each.
    fn layout(groups: &[(u32, u32, usize)], locality_weighted: bool) -> (Layout, Vec<Arc<Host>>) {
        use crate::config::{LbEndpointConfig, LocalityGroup};
        let mut set = EndpointSet::default();
        for (priority, weight, n) in groups {
            set.groups.push(LocalityGroup {
                priority: *priority,
                weight: *weight,
                start: set.endpoints.len(),
                len: *n,
                total: *n,
            });
            for _ in 0..*n {
                let i = set.endpoints.len();
                set.endpoints.push(LbEndpointConfig {
                    address: format!("10.0.0.{i}:80").parse().unwrap(),
                    weight: 1,
                });
            }
        }
        set.total = set.endpoints.len();
        let params = LbParams {
            locality_weighted,
            ..LbParams::default()
        };
        let hosts = hosts(set.endpoints.len());
        (
            Layout::new(LbPolicy::RoundRobin, &params, &set).unwrap(),
            hosts,
        )
    }

    /// Share of `n` picks per host index, in percent.
    fn shares(layout: &Layout, hosts: &[Arc<Host>], ejected: &[usize], n: usize) -> Vec<f64> {
        let rr = AtomicUsize::new(0);
        let is_ejected = |i: usize| ejected.contains(&i);
        let ejected: Option<&dyn Fn(usize) -> bool> = (!ejected.is_empty()).then_some(&is_ejected);
        let mut counts = vec![0usize; hosts.len()];
        for _ in 0..n {
            counts[layout.pick(hosts, &rr, None, ejected).unwrap()] += 1;
        }
        counts
            .iter()
            .map(|c| *c as f64 * 100.0 / n as f64)
            .collect()
    }

    #[test]
    fn priorities_spill_over_as_hosts_are_ejected() {
        // Priority 0 (hosts 0, 1), priority 1 (hosts 2, 3).
        let (l, h) = layout(&[(0, 0, 2), (1, 0, 2)], false);
        assert_eq!(shares(&l, &h, &[], 1000), [50.0, 50.0, 0.0, 0.0]);
        // Half of priority 0 left: health 50 % x 1.4 = 70 % of the load.
        let s = shares(&l, &h, &[0], 20_000);
        assert_eq!(s[0], 0.0);
        assert!((s[1] - 70.0).abs() < 2.0, "{s:?}");
        assert!((s[2] + s[3] - 30.0).abs() < 2.0, "{s:?}");
        // Priority 0 gone: everything to priority 1.
        assert_eq!(shares(&l, &h, &[0, 1], 1000), [0.0, 0.0, 50.0, 50.0]);
        // Nothing healthy anywhere: load by host count, all hosts used.
        let s = shares(&l, &h, &[0, 1, 2, 3], 20_000);
        assert!(s.iter().all(|x| (x - 25.0).abs() < 2.0), "{s:?}");
    }

    #[test]
    fn one_host_in_four_down_keeps_the_priority_whole() {
        // 3/4 healthy x 1.4 > 100 %: priority 1 gets nothing.
        let (l, h) = layout(&[(0, 0, 4), (1, 0, 1)], false);
        let s = shares(&l, &h, &[0], 3000);
        assert_eq!(s[4], 0.0);
    }

    #[test]
    fn localities_by_weight_and_availability() {
        // Weights 80 and 20; two hosts each.
        let (l, h) = layout(&[(0, 80, 2), (0, 20, 2)], true);
        let s = shares(&l, &h, &[], 1000);
        assert_eq!(s[0] + s[1], 80.0);
        assert_eq!(s[2] + s[3], 20.0);
        // Half the heavy locality ejected: 80 x 70 against 20 x 100.
        let s = shares(&l, &h, &[0], 20_000);
        let heavy = 80.0 * 70.0 / (80.0 * 70.0 + 20.0 * 100.0) * 100.0;
        assert!((s[1] - heavy).abs() < 2.0, "{s:?}");
        // A locality without weight gets nothing.
        let (l, h) = layout(&[(0, 1, 1), (0, 0, 1)], true);
        assert_eq!(shares(&l, &h, &[], 100), [100.0, 0.0]);
    }

    #[test]
    fn single_priority_without_locality_weights_needs_no_layout() {
        use crate::config::{LbEndpointConfig, LocalityGroup};
        let set = EndpointSet {
            endpoints: vec![LbEndpointConfig {
                address: "10.0.0.1:80".parse().unwrap(),
                weight: 1,
            }],
            total: 1,
            groups: vec![LocalityGroup {
                priority: 0,
                weight: 5,
                start: 0,
                len: 1,
                total: 1,
            }],
        };
        assert!(Layout::new(LbPolicy::RoundRobin, &LbParams::default(), &set).is_none());
    }

    #[test]
    fn maglev_fills_the_table_by_weight() {
        let hosts: Vec<(SocketAddr, u32)> = addrs(2)
            .into_iter()
            .zip([1u32, 3])
            .map(|((a, _), w)| (a, w))
            .collect();
        let t = build_maglev(&hosts, 65537);
        assert!(t.iter().all(|i| *i < 2));
        let heavy = t.iter().filter(|i| **i == 1).count() as f64 / t.len() as f64;
        assert!((0.7..0.8).contains(&heavy), "{heavy}");
    }
}
