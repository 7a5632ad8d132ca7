//! The arithmetic of an open-loop, constant-rate load.
//!
//! Request `i` is due at `i / rate` seconds after the start, whatever
//! happened to the requests before it. Connections take turns: connection
//! `k` of `c` sends requests `k, k + c, k + 2c, ...`. A connection can only
//! send once its previous response is in (HTTP/1.1 without pipelining), so a
//! slow response delays the next request on that connection; counting the
//! next request's latency from its send time would hide exactly the stalls
//! the measurement is for ("coordinated omission"). [`corrected_latency`]
//! charges that wait to the system under test.

use std::time::Duration;

/// When requests are due, relative to the start of the load.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    interval_ns: f64,
    connections: u64,
}

impl Schedule {
    /// `rate` requests per second spread over `connections`.
    pub fn new(rate: f64, connections: usize) -> Schedule {
        assert!(rate > 0.0, "rate must be positive");
        assert!(connections > 0, "at least one connection");
        Schedule {
            interval_ns: 1e9 / rate,
            connections: connections as u64,
        }
    }

    /// When request `i` (counted over all connections) is due.
    pub fn due(&self, i: u64) -> Duration {
        Duration::from_nanos((i as f64 * self.interval_ns).round() as u64)
    }

    /// The global index of the `j`-th request of connection `k`.
    pub fn index(&self, connection: usize, j: u64) -> u64 {
        connection as u64 + j * self.connections
    }

    /// When the `j`-th request of `connection` is due.
    pub fn due_on(&self, connection: usize, j: u64) -> Duration {
        self.due(self.index(connection, j))
    }

    /// How many requests are due within `window` from the start.
    pub fn count_within(&self, window: Duration) -> u64 {
        (window.as_nanos() as f64 / self.interval_ns).ceil() as u64
    }
}

/// The latency of one request, charged with the wait the server caused.
///
/// All times are offsets from the start of the load. `due` is when the
/// schedule wanted the request sent; `previous_done` when the previous
/// response on the same connection arrived; `sent` and `done` when this
/// request went out and its response completed.
///
/// The result is the service time (`done - sent`) plus the time the request
/// waited behind the previous response past its due time. Waiting caused by
/// the load generator itself (its timer waking late, its thread not being
/// scheduled while the connection was free) is not counted: that is the
/// generator's fault, not the server's. [`generator_lag`] reports it so a
/// run with a starved generator can be spotted.
pub fn corrected_latency(
    due: Duration,
    previous_done: Option<Duration>,
    sent: Duration,
    done: Duration,
) -> Duration {
    let service = done.saturating_sub(sent);
    let queued = previous_done
        .map(|p| p.saturating_sub(due))
        .unwrap_or_default()
        .min(sent.saturating_sub(due));
    service + queued
}

/// How late the generator sent a request whose connection was free:
/// `sent - max(due, previous_done)`.
pub fn generator_lag(due: Duration, previous_done: Option<Duration>, sent: Duration) -> Duration {
    let ready = previous_done.map_or(due, |p| p.max(due));
    sent.saturating_sub(ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn requests_are_evenly_spaced_and_shared_round_robin() {
        let s = Schedule::new(1000.0, 4);
        assert_eq!(s.due(0), ms(0));
        assert_eq!(s.due(1), ms(1));
        assert_eq!(s.due(1500), ms(1500));
        // Connection 2 sends requests 2, 6, 10...
        assert_eq!(s.index(2, 0), 2);
        assert_eq!(s.index(2, 2), 10);
        assert_eq!(s.due_on(2, 2), ms(10));
        assert_eq!(s.count_within(Duration::from_secs(3)), 3000);
    }

    #[test]
    fn every_request_belongs_to_exactly_one_connection() {
        let s = Schedule::new(333.0, 7);
        let mut seen = vec![0u32; 700];
        for k in 0..7 {
            for j in 0..100 {
                seen[s.index(k, j) as usize] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
    }

    #[test]
    fn fractional_rates_do_not_drift() {
        let s = Schedule::new(3.0, 1);
        // 1/3 s steps: the 3000th request is due at 1000 s exactly.
        assert_eq!(s.due(3000), Duration::from_secs(1000));
        assert_eq!(s.due(1), Duration::from_nanos(333_333_333));
    }

    #[test]
    fn on_time_request_is_charged_its_service_time() {
        // Connection free long before the due time, sent on time.
        assert_eq!(
            corrected_latency(ms(10), Some(ms(5)), ms(10), ms(10) + us(300)),
            us(300)
        );
        assert_eq!(corrected_latency(ms(0), None, ms(0), us(250)), us(250));
    }

    #[test]
    fn generator_lateness_is_not_charged() {
        // Timer woke 400 µs late while the connection was free.
        let (due, sent) = (ms(10), ms(10) + us(400));
        assert_eq!(
            corrected_latency(due, Some(ms(5)), sent, sent + us(300)),
            us(300)
        );
        assert_eq!(generator_lag(due, Some(ms(5)), sent), us(400));
    }

    #[test]
    fn wait_behind_a_slow_response_is_charged() {
        // The previous response came 50 ms after this request was due.
        let (due, prev, sent) = (ms(10), ms(60), ms(60) + us(20));
        assert_eq!(
            corrected_latency(due, Some(prev), sent, sent + us(300)),
            ms(50) + us(300)
        );
        // The 20 µs between the response and the send are the generator's.
        assert_eq!(generator_lag(due, Some(prev), sent), us(20));
    }

    #[test]
    fn a_stall_is_seen_by_every_request_it_delayed() {
        // Single connection, 1 ms schedule, the server stalls 100 ms on
        // request 0; requests 1..=99 were all due during the stall and go out
        // back to back after it, each taking 100 µs.
        let s = Schedule::new(1000.0, 1);
        let mut previous_done = None;
        let mut clock = Duration::ZERO;
        let mut latencies = Vec::new();
        for i in 0..100u64 {
            let due = s.due(i);
            let sent = clock.max(due);
            let service = if i == 0 { ms(100) } else { us(100) };
            let done = sent + service;
            latencies.push(corrected_latency(due, previous_done, sent, done));
            previous_done = Some(done);
            clock = done;
        }
        assert_eq!(latencies[0], ms(100));
        // Request 1 was due at 1 ms, sent at 100 ms: 99 ms of waiting.
        assert_eq!(latencies[1], ms(99) + us(100));
        // Half the requests saw at least 50 ms: the stall is not hidden.
        assert!(latencies.iter().filter(|l| **l >= ms(50)).count() >= 50);
    }
}
