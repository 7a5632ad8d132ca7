//! Closed-loop maximum-throughput tools from Debian: `wrk` for HTTP/1.1 and
//! `h2load` (nghttp2-client) for HTTP/2, and what their output says.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use tokio::process::Command;

/// What one closed-loop run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Throughput {
    /// Good responses per second.
    pub rate: f64,
    pub ok: u64,
    /// Failed requests: non-2xx, socket errors, timeouts.
    pub failed: u64,
    /// p50 and p99 latency in microseconds, when the tool reports them.
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
}

/// A load tool process and how to read its output.
pub struct Tool {
    pub command: Command,
    parse: fn(&str) -> anyhow::Result<Throughput>,
    pub limit: Duration,
}

impl Tool {
    /// `wrk -t1 -cC -dD --latency`: one thread, `connections` keep-alive
    /// connections, each of `headers` (`Name: value`) added to every
    /// request. With `Connection: close` the server closes each connection
    /// after its response and wrk opens a new one for the next request.
    pub fn wrk(
        target: SocketAddr,
        connections: usize,
        duration: Duration,
        headers: &[String],
    ) -> Tool {
        let mut command = Command::new("wrk");
        command.args([
            "-t1".to_owned(),
            format!("-c{connections}"),
            format!("-d{}s", duration.as_secs().max(1)),
            "--latency".to_owned(),
        ]);
        for header in headers {
            command.arg("-H").arg(header);
        }
        command.arg(format!("http://{target}/"));
        Tool {
            command,
            parse: parse_wrk,
            limit: duration + Duration::from_secs(15),
        }
    }

    /// `h2load` over h2c with prior knowledge: `connections` connections of
    /// `streams` concurrent streams each, one thread, for `duration` after a
    /// one-second warm-up.
    pub fn h2load(
        target: SocketAddr,
        connections: usize,
        streams: usize,
        duration: Duration,
    ) -> Tool {
        let mut command = Command::new("h2load");
        command.args([
            "-t1".to_owned(),
            format!("-c{connections}"),
            format!("-m{streams}"),
            "-D".to_owned(),
            duration.as_secs().max(1).to_string(),
            "--warm-up-time=1".to_owned(),
            format!("http://{target}/"),
        ]);
        Tool {
            command,
            parse: parse_h2load,
            limit: duration + Duration::from_secs(20),
        }
    }

    /// Starts the tool; `pid` of the returned child is what to watch.
    pub fn spawn(&mut self) -> anyhow::Result<tokio::process::Child> {
        self.command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the load tool (apt-get install wrk nghttp2-client)")
    }

    /// Waits for the tool (killing it after its time limit) and parses what
    /// it printed.
    pub async fn finish(&self, child: tokio::process::Child) -> anyhow::Result<Throughput> {
        let output = tokio::time::timeout(self.limit, child.wait_with_output())
            .await
            .context("load tool overran its time limit")??;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            bail!("load tool failed ({}): {stderr}{stdout}", output.status);
        }
        (self.parse)(&stdout).with_context(|| format!("unexpected output:\n{stdout}{stderr}"))
    }
}

/// A duration as wrk prints it (`812.00us`, `1.23ms`, `2.01s`, `1.5m`), in
/// microseconds.
fn wrk_duration_us(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        "m" => n * 60e6,
        "h" => n * 3600e6,
        _ => return None,
    })
}

pub fn parse_wrk(out: &str) -> anyhow::Result<Throughput> {
    let mut rate = None;
    let mut total = None;
    let mut failed = 0u64;
    let mut p50 = None;
    let mut p99 = None;
    for line in out.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rate = v.trim().parse::<f64>().ok();
        } else if let Some((n, _)) = line.split_once(" requests in ") {
            total = n.trim().parse::<u64>().ok();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            failed += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            failed += v
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = line.strip_prefix("50%") {
            p50 = wrk_duration_us(v);
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = wrk_duration_us(v);
        }
    }
    let (Some(rate), Some(total)) = (rate, total) else {
        bail!("no `Requests/sec` or request count in wrk's output");
    };
    let ok = total.saturating_sub(failed);
    let good_rate = if total > 0 {
        rate * ok as f64 / total as f64
    } else {
        0.0
    };
    Ok(Throughput {
        rate: good_rate,
        ok,
        failed,
        p50_us: p50,
        p99_us: p99,
    })
}

pub fn parse_h2load(out: &str) -> anyhow::Result<Throughput> {
    let mut rate = None;
    let mut done = None;
    let mut succeeded = None;
    let mut failed = 0u64;
    let mut ok_2xx = None;
    for line in out.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("finished in ") {
            // "finished in 8.00s, 40000.00 req/s, 45.00MB/s"
            rate = rest
                .split(',')
                .nth(1)
                .and_then(|s| s.trim().strip_suffix("req/s"))
                .and_then(|s| s.trim().parse::<f64>().ok());
        } else if let Some(rest) = line.strip_prefix("requests:") {
            // "320000 total, 320000 started, 320000 done, 319990 succeeded, 10 failed, ..."
            for part in rest.split(',') {
                let mut words = part.split_whitespace();
                let (Some(n), Some(what)) = (words.next(), words.next()) else {
                    continue;
                };
                let n = n.parse::<u64>().ok();
                match what {
                    "done" => done = n,
                    "succeeded" => succeeded = n,
                    "failed" => failed = n.unwrap_or(0),
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("status codes:") {
            ok_2xx = rest
                .split(',')
                .find(|p| p.trim().ends_with("2xx"))
                .and_then(|p| p.split_whitespace().next()?.parse::<u64>().ok());
        }
    }
    let (Some(rate), Some(done)) = (rate, done) else {
        bail!("no `finished in` or `requests:` line in h2load's output");
    };
    let succeeded = succeeded.unwrap_or(0);
    let ok = ok_2xx.unwrap_or(0).min(succeeded);
    let good_rate = if done > 0 {
        rate * ok as f64 / done as f64
    } else {
        0.0
    };
    Ok(Throughput {
        rate: good_rate,
        ok,
        failed: failed + (succeeded - ok),
        p50_us: None,
        p99_us: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 8s test @ http://127.20.1.2:8080/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.41ms  241.13us   7.89ms   87.31%
    Req/Sec    11.38k   312.40    11.92k    71.25%
  Latency Distribution
     50%    1.37ms
     75%    1.48ms
     90%    1.63ms
     99%    2.55ms
  90553 requests in 8.00s, 100.02MB read
  Non-2xx or 3xx responses: 53
Requests/sec:  11318.57
Transfer/sec:     12.50MB
";

    #[test]
    fn wrk_output() {
        let t = parse_wrk(WRK).unwrap();
        assert_eq!(t.ok, 90500);
        assert_eq!(t.failed, 53);
        assert!((t.rate - 11318.57 * 90500.0 / 90553.0).abs() < 1e-6);
        assert_eq!(t.p50_us, Some(1370.0));
        assert_eq!(t.p99_us, Some(2550.0));
        let errors = WRK.replace(
            "  Non-2xx or 3xx responses: 53\n",
            "  Socket errors: connect 0, read 3, write 0, timeout 7\n",
        );
        assert_eq!(parse_wrk(&errors).unwrap().failed, 10);
        assert!(parse_wrk("unable to connect to 127.0.0.1:1 Connection refused").is_err());
    }

    #[test]
    fn wrk_durations() {
        assert_eq!(wrk_duration_us("812.00us"), Some(812.0));
        assert!((wrk_duration_us(" 2.01s").unwrap() - 2_010_000.0).abs() < 1e-6);
        assert_eq!(wrk_duration_us("1.5m"), Some(90e6));
        assert_eq!(wrk_duration_us("fast"), None);
    }

    const H2LOAD: &str = "starting benchmark...
spawning thread #0: 16 total client(s). Timing-based test with 1s warm-up time and 8s main duration
Warm-up phase is over for thread #0.
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 8.00s, 40123.50 req/s, 44.61MB/s
requests: 320988 total, 321148 started, 320988 done, 320988 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 320980 2xx, 0 3xx, 0 4xx, 8 5xx
traffic: 356.92MB (374257224) total, 3.06MB (3210156) headers (space savings 91.63%), 313.46MB (328691712) data
";

    #[test]
    fn h2load_output() {
        let t = parse_h2load(H2LOAD).unwrap();
        assert_eq!(t.ok, 320980);
        assert_eq!(t.failed, 8);
        assert!((t.rate - 40123.5 * 320980.0 / 320988.0).abs() < 1e-6);
        let refused = "finished in 1.00s, 0.00 req/s, 0B/s
requests: 0 total, 16 started, 0 done, 0 succeeded, 16 failed, 16 errored, 0 timeout
status codes: 0 2xx, 0 3xx, 0 4xx, 0 5xx
";
        let t = parse_h2load(refused).unwrap();
        assert_eq!((t.ok, t.failed, t.rate), (0, 16, 0.0));
        assert!(parse_h2load("No protocol negotiated").is_err());
    }
}
