//! Load-balancing policies over a cluster's healthy hosts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

use super::Host;
use crate::config::LbPolicy;

/// Longest precomputed weighted round-robin schedule; larger weight sums fall
/// back to weighted random choice.
const MAX_SCHEDULE: u64 = 4096;

#[derive(Debug)]
pub struct Balancer {
    policy: LbPolicy,
    /// Weighted round robin: host indices in smooth interleaved order.
    schedule: Option<Vec<u32>>,
    /// Cumulative weights, when weights differ (random choices).
    cumulative: Option<Vec<u64>>,
}

impl Balancer {
    pub fn new(policy: LbPolicy, weights: &[u32]) -> Balancer {
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
            (LbPolicy::RoundRobin, Some(_)) => smooth_schedule(weights),
            _ => None,
        };
        Balancer {
            policy,
            schedule,
            cumulative,
        }
    }

    /// Index of the chosen host, `None` when there is none.
    pub fn pick(&self, hosts: &[Arc<Host>], rr: &AtomicUsize) -> Option<usize> {
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
            LbPolicy::LeastRequest => {
                // Power of two choices, as Envoy does by default.
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                let mut b = rng.random_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                let load = |i: usize| hosts[i].active.load(Ordering::Relaxed);
                Some(if load(b) < load(a) { b } else { a })
            }
        }
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
    use crate::stats::ClusterStats;

    fn hosts(n: usize) -> Vec<Arc<Host>> {
        (0..n)
            .map(|i| {
                Arc::new(Host::new(
                    format!("10.0.0.{i}:80").parse().unwrap(),
                    Arc::new(ClusterStats::default()),
                ))
            })
            .collect()
    }

    #[test]
    fn round_robin_cycles() {
        let b = Balancer::new(LbPolicy::RoundRobin, &[1, 1, 1]);
        let h = hosts(3);
        let rr = AtomicUsize::new(0);
        let picks: Vec<usize> = (0..6).map(|_| b.pick(&h, &rr).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(b.pick(&[], &rr), None);
    }

    #[test]
    fn weighted_round_robin_is_smooth_and_proportional() {
        let s = smooth_schedule(&[5, 1, 1]).unwrap();
        assert_eq!(s.len(), 7);
        assert_eq!(s.iter().filter(|i| **i == 0).count(), 5);
        // The heavy host never takes more than three turns in a row here.
        assert_eq!(s, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn least_request_prefers_idle_host() {
        let b = Balancer::new(LbPolicy::LeastRequest, &[1, 1]);
        let h = hosts(2);
        h[0].active.store(10, Ordering::Relaxed);
        let rr = AtomicUsize::new(0);
        for _ in 0..20 {
            assert_eq!(b.pick(&h, &rr), Some(1));
        }
    }

    #[test]
    fn weighted_random_distribution() {
        let b = Balancer::new(LbPolicy::Random, &[1, 3]);
        let h = hosts(2);
        let rr = AtomicUsize::new(0);
        let n = 20_000;
        let ones = (0..n).filter(|_| b.pick(&h, &rr) == Some(1)).count();
        let share = ones as f64 / n as f64;
        assert!((0.72..0.78).contains(&share), "share {share}");
    }
}
