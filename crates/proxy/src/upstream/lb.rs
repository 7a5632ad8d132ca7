//! Load-balancing policies over a cluster's hosts: round robin (weighted),
//! random, least request, and the consistent-hash ring hash and Maglev.
//!
//! Tables are built once per config snapshot; a pick reads them without
//! locks. When outlier detection has ejected hosts, the caller passes the
//! indices still usable and the pick is made among them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

use super::Host;
use crate::config::LbPolicy;
use crate::config::cluster_policy::LbParams;

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
