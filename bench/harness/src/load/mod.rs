//! A constant-rate HTTP/1.1 load generator that corrects for coordinated
//! omission.
//!
//! Each keep-alive connection has a thread of its own doing blocking I/O:
//! a thread sleeps until its next request is due (`nanosleep` wakes within
//! tens of microseconds, where an async runtime's timer has millisecond
//! granularity), sends it, and reads the response. Latency is charged as
//! [`schedule::corrected_latency`] says. The run is bounded: every socket
//! read has a timeout and no request is sent after the schedule ends.

pub mod http1;
pub mod schedule;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::stats::{Percentiles, latency_histogram, record};
use http1::Framing;
use schedule::{Schedule, corrected_latency, generator_lag};

/// What to send, how fast and for how long.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub target: SocketAddr,
    /// `Host` header value.
    pub host: String,
    pub path: String,
    /// Requests per second, over all connections.
    pub rate: f64,
    pub connections: usize,
    /// Sent at the full rate but not recorded.
    pub warmup: Duration,
    /// Recorded.
    pub duration: Duration,
    /// How long one response may take before it counts as an error.
    pub timeout: Duration,
    /// When set, a response whose body has another length is an error.
    pub expect_body_bytes: Option<usize>,
}

/// What a load run measured (only requests due after the warm-up).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadReport {
    pub target_rate: f64,
    pub connections: usize,
    pub seconds: f64,
    /// Requests due in the recorded window.
    pub due: u64,
    /// Responses with a 2xx status and the expected body.
    pub ok: u64,
    /// Complete responses with another status.
    pub non_2xx: u64,
    /// Requests that failed: connection errors, timeouts, malformed or
    /// unexpected responses, or never sent before the run's deadline.
    pub errors: u64,
    /// Completed responses per second.
    pub achieved_rate: f64,
    /// Corrected latency of the completed responses, microseconds.
    pub latency_us: Percentiles,
    /// How late the generator itself sent requests (timer wake-up,
    /// scheduling) at the 99th percentile and at worst, microseconds. Large
    /// values mean the generator was starved of CPU.
    pub generator_lag_p99_us: f64,
    pub generator_lag_max_us: f64,
    pub first_error: Option<String>,
}

impl LoadReport {
    /// Share of due requests that did not get a good answer.
    pub fn failure_ratio(&self) -> f64 {
        if self.due == 0 {
            return 1.0;
        }
        (self.errors + self.non_2xx) as f64 / self.due as f64
    }
}

struct ThreadResult {
    latency: Histogram<u64>,
    lag: Histogram<u64>,
    due: u64,
    ok: u64,
    non_2xx: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Runs the load and returns what it measured. Blocks for about
/// `warmup + duration`, plus at most `timeout` for the last responses.
pub fn run(opts: &LoadOptions) -> anyhow::Result<LoadReport> {
    if opts.rate <= 0.0 || opts.connections == 0 {
        bail!("rate and connections must be positive");
    }
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: mizzen-bench\r\n\r\n",
        opts.path, opts.host
    )
    .into_bytes();
    let mut streams = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections {
        streams.push(connect(opts).with_context(|| format!("cannot connect to {}", opts.target))?);
    }
    let schedule = Schedule::new(opts.rate, opts.connections);
    // A little slack so that every thread is waiting when the load starts.
    let start = Instant::now() + Duration::from_millis(20);
    let results: Vec<ThreadResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(k, stream)| {
                let request = &request;
                scope.spawn(move || connection_loop(opts, &schedule, k, stream, request, start))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("load thread panicked"))
            .collect()
    });

    let mut latency = latency_histogram();
    let mut lag = latency_histogram();
    let mut report = LoadReport {
        target_rate: opts.rate,
        connections: opts.connections,
        seconds: opts.duration.as_secs_f64(),
        ..Default::default()
    };
    for r in results {
        latency.add(&r.latency).expect("same histogram bounds");
        lag.add(&r.lag).expect("same histogram bounds");
        report.due += r.due;
        report.ok += r.ok;
        report.non_2xx += r.non_2xx;
        report.errors += r.errors;
        if report.first_error.is_none() {
            report.first_error = r.first_error;
        }
    }
    report.achieved_rate = (report.ok + report.non_2xx) as f64 / report.seconds;
    report.latency_us = Percentiles::from_nanos(&latency);
    if !lag.is_empty() {
        report.generator_lag_p99_us = lag.value_at_quantile(0.99) as f64 / 1000.0;
        report.generator_lag_max_us = lag.max() as f64 / 1000.0;
    }
    Ok(report)
}

fn connect(opts: &LoadOptions) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&opts.target, opts.timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(opts.timeout))?;
    stream.set_write_timeout(Some(opts.timeout))?;
    Ok(stream)
}

fn connection_loop(
    opts: &LoadOptions,
    schedule: &Schedule,
    k: usize,
    stream: TcpStream,
    request: &[u8],
    start: Instant,
) -> ThreadResult {
    let total = opts.warmup + opts.duration;
    // Nothing is sent after this; requests still due then count as errors.
    let deadline = total + opts.timeout;
    let mut result = ThreadResult {
        latency: latency_histogram(),
        lag: latency_histogram(),
        due: 0,
        ok: 0,
        non_2xx: 0,
        errors: 0,
        first_error: None,
    };
    let mut stream = Some(stream);
    let mut buf = Vec::with_capacity(32 * 1024);
    let mut previous_done: Option<Duration> = None;
    let mut j = 0u64;
    loop {
        let due = schedule.due_on(k, j);
        j += 1;
        if due >= total {
            break;
        }
        let recorded = due >= opts.warmup;
        if recorded {
            result.due += 1;
        }
        let now = start.elapsed();
        if now >= deadline {
            if recorded {
                result.errors += 1;
                result
                    .first_error
                    .get_or_insert_with(|| "requests left unsent at the deadline".to_owned());
            }
            continue;
        }
        if due > now {
            std::thread::sleep(due - now);
        }
        let outcome = match stream.as_mut() {
            Some(s) => {
                let sent = start.elapsed();
                exchange(s, request, &mut buf).map(|r| (sent, r))
            }
            None => Err(anyhow::anyhow!("not connected")),
        };
        let done = start.elapsed();
        match outcome {
            Ok((sent, response)) => {
                if recorded {
                    let expected_body = opts.expect_body_bytes.is_none_or(|n| n == response.body);
                    if !(200..300).contains(&response.status) {
                        result.non_2xx += 1;
                        result
                            .first_error
                            .get_or_insert_with(|| format!("status {}", response.status));
                    } else if !expected_body {
                        result.errors += 1;
                        result
                            .first_error
                            .get_or_insert_with(|| format!("body of {} bytes", response.body));
                    } else {
                        result.ok += 1;
                        let latency = corrected_latency(due, previous_done, sent, done);
                        record(&mut result.latency, latency.as_nanos() as u64);
                        let lag = generator_lag(due, previous_done, sent);
                        record(&mut result.lag, lag.as_nanos() as u64);
                    }
                }
                if response.close {
                    stream = connect(opts).ok();
                }
            }
            Err(e) => {
                if recorded {
                    result.errors += 1;
                    result.first_error.get_or_insert_with(|| format!("{e:#}"));
                }
                stream = connect(opts).ok();
            }
        }
        previous_done = Some(done);
    }
    result
}

struct Response {
    status: u16,
    body: usize,
    close: bool,
}

/// Sends one request and reads its whole response.
fn exchange(stream: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> anyhow::Result<Response> {
    stream.write_all(request)?;
    buf.clear();
    let mut head = None;
    loop {
        if head.is_none() {
            head = http1::parse_head(buf)?;
        }
        if let Some(h) = head {
            let body = &buf[h.len..];
            let complete = match h.framing {
                Framing::Length(n) => (body.len() >= n).then_some(n),
                Framing::Chunked => http1::chunked_len(body)?.map(|(_, decoded)| decoded),
                Framing::UntilClose => None,
            };
            if let Some(n) = complete {
                return Ok(Response {
                    status: h.status,
                    body: n,
                    close: h.close,
                });
            }
        }
        let len = buf.len();
        buf.resize(len + 16 * 1024, 0);
        let n = match stream.read(&mut buf[len..]) {
            Ok(n) => n,
            Err(e) => {
                buf.truncate(len);
                return Err(e.into());
            }
        };
        buf.truncate(len + n);
        if n == 0 {
            return match head {
                Some(h) if h.framing == Framing::UntilClose => Ok(Response {
                    status: h.status,
                    body: buf.len() - h.len,
                    close: true,
                }),
                _ => Err(anyhow::anyhow!("connection closed mid-response")),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A blocking server answering every request on every connection with
    /// the given bytes, for at most `limit` requests per connection.
    fn canned_server(response: &'static [u8], limit: usize) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let mut pending = Vec::new();
                    let mut answered = 0;
                    while answered < limit {
                        let Ok(n) = conn.read(&mut buf) else { return };
                        if n == 0 {
                            return;
                        }
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            if conn.write_all(response).is_err() {
                                return;
                            }
                            answered += 1;
                        }
                    }
                });
            }
        });
        addr
    }

    fn options(target: SocketAddr) -> LoadOptions {
        LoadOptions {
            target,
            host: "bench".into(),
            path: "/".into(),
            rate: 400.0,
            connections: 2,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(250),
            timeout: Duration::from_secs(2),
            expect_body_bytes: Some(5),
        }
    }

    #[test]
    fn paced_load_against_a_canned_server() {
        let addr = canned_server(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            usize::MAX,
        );
        let report = run(&options(addr)).unwrap();
        // 400 rps over 250 ms: 100 requests due after the warm-up.
        assert_eq!(report.due, 100);
        assert_eq!(report.ok, 100, "{report:?}");
        assert_eq!(report.errors + report.non_2xx, 0);
        assert!(report.latency_us.p50 > 0.0);
        assert!(report.latency_us.p50 <= report.latency_us.p999);
    }

    #[test]
    fn bad_statuses_and_bodies_are_counted() {
        let addr = canned_server(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
            usize::MAX,
        );
        let report = run(&options(addr)).unwrap();
        assert_eq!(report.non_2xx, report.due);
        assert_eq!(report.first_error.as_deref(), Some("status 503"));
        assert_eq!(report.failure_ratio(), 1.0);

        let addr = canned_server(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi",
            usize::MAX,
        );
        let report = run(&options(addr)).unwrap();
        assert_eq!(report.errors, report.due);
    }

    #[test]
    fn a_server_closing_connections_is_survived() {
        // Every chunked response says `connection: close` and the server
        // hangs up after it: the client reconnects each time.
        let addr = canned_server(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            1,
        );
        let report = run(&options(addr)).unwrap();
        assert_eq!(report.ok, report.due, "{report:?}");
    }
}
