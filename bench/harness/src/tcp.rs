//! Raw TCP: the upstream (a sink that discards what it reads and an echo
//! server) and the closed-loop client that streams bulk data into the sink
//! or bounces small messages off the echo (`mizzen-bench tcp-upstream`,
//! `mizzen-bench tcp-load`).
//!
//! The client is one thread, like `wrk -t1`, so that it leaves the other
//! core to the proxy and the upstream. Bytes are counted as the client hands
//! them to the kernel, only between the end of the warm-up and the end of
//! the run: by then every socket buffer on the path is full, so what is
//! written in the window is what the path drained, give or take one buffer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::stats::{Percentiles, latency_histogram, record};

/// The sink's read size: large, so that it costs one copy per byte and
/// few system calls, and is never what limits a stream.
const SINK_READ: usize = 256 * 1024;
const ECHO_READ: usize = 64 * 1024;

/// Reads and discards everything each connection sends, forever.
pub async fn serve_sink(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; SINK_READ];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
    }
}

/// Sends back whatever each connection sends, as it arrives, forever.
pub async fn serve_echo(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = vec![0u8; ECHO_READ];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
}

/// Runs the sink and the echo server on one current-thread runtime.
pub fn run_upstream(sink: SocketAddr, echo: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let sink = TcpListener::bind(sink)
            .await
            .with_context(|| format!("cannot listen on {sink}"))?;
        let echo = TcpListener::bind(echo)
            .await
            .with_context(|| format!("cannot listen on {echo}"))?;
        tokio::try_join!(serve_sink(sink), serve_echo(echo))?;
        Ok(())
    })
}

/// One echo round trip of a few bytes through `addr`, within `limit`.
pub async fn echo_once(addr: SocketAddr, limit: Duration) -> anyhow::Result<()> {
    let probe = b"mizzen-bench";
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(probe).await?;
        let mut back = [0u8; 12];
        stream.read_exact(&mut back).await?;
        anyhow::ensure!(&back == probe, "echoed {back:?}");
        anyhow::Ok(())
    };
    tokio::time::timeout(limit, exchange)
        .await
        .context("no echo in time")?
}

/// Polls until an echo round trip through `addr` works, or fails after
/// `timeout` with the last error.
pub async fn wait_echo(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = echo_once(addr, Duration::from_secs(2)).await;
        match last {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                bail!("no echo through {addr} after {timeout:?}: {e:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TcpMode {
    /// Every connection writes `message_bytes` chunks into a sink, nonstop.
    Stream,
    /// Every connection sends a `message_bytes` message and waits for it to
    /// come back before sending the next.
    Echo,
}

#[derive(Debug, Clone)]
pub struct TcpLoadOptions {
    pub target: SocketAddr,
    pub mode: TcpMode,
    pub connections: usize,
    pub message_bytes: usize,
    /// Loaded but not counted.
    pub warmup: Duration,
    /// Counted.
    pub duration: Duration,
    /// Processes whose CPU time is read at the start and the end of the
    /// counted window (the proxy), so that CPU and bytes cover the same
    /// interval.
    pub cpu_pids: Vec<u32>,
}

/// What a TCP load run measured over its counted window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TcpLoadReport {
    pub connections: usize,
    pub message_bytes: usize,
    pub seconds: f64,
    /// Bytes the client sent in the window.
    pub bytes: u64,
    pub bytes_per_second: f64,
    /// Echo: messages that came back in the window.
    pub round_trips: u64,
    pub round_trips_per_second: f64,
    /// Echo: time from sending a message to having all of it back.
    pub round_trip_us: Option<Percentiles>,
    /// CPU-seconds of each watched process over the window.
    pub cpu_seconds: Vec<(u32, f64)>,
    /// Connections that failed (reset, closed, wrong bytes echoed).
    pub errors: u64,
    pub first_error: Option<String>,
}

/// The state the connections share with the clock.
#[derive(Default)]
struct Shared {
    bytes: AtomicU64,
    round_trips: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Round trips are timed only while set.
    recording: AtomicBool,
    stop: AtomicBool,
}

impl Shared {
    fn fail(&self, error: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(error);
    }
}

/// Runs the load on a current-thread runtime.
pub fn run_load(opts: &TcpLoadOptions) -> anyhow::Result<TcpLoadReport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(load(opts));
    // Connections still writing are dropped with the runtime.
    runtime.shutdown_background();
    report
}

pub async fn load(opts: &TcpLoadOptions) -> anyhow::Result<TcpLoadReport> {
    if opts.connections == 0 || opts.message_bytes == 0 {
        bail!("need at least one connection and one byte per message");
    }
    let mut streams = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(opts.target))
            .await
            .with_context(|| format!("connecting to {} timed out", opts.target))?
            .with_context(|| format!("cannot connect to {}", opts.target))?;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    let shared = Arc::new(Shared::default());
    let mut tasks = Vec::new();
    for (i, stream) in streams.into_iter().enumerate() {
        let shared = shared.clone();
        let size = opts.message_bytes;
        tasks.push(match opts.mode {
            TcpMode::Stream => tokio::spawn(async move {
                stream_into(stream, size, &shared).await;
                None
            }),
            TcpMode::Echo => {
                tokio::spawn(async move { Some(echo(stream, i, size, &shared).await) })
            }
        });
    }

    tokio::time::sleep(opts.warmup).await;
    let cpu_at = |pids: &[u32]| -> Vec<Option<u64>> {
        pids.iter()
            .map(|&p| crate::procfs::process_cpu_ticks(p))
            .collect()
    };
    let cpu_before = cpu_at(&opts.cpu_pids);
    let bytes_before = shared.bytes.load(Ordering::Relaxed);
    let trips_before = shared.round_trips.load(Ordering::Relaxed);
    let started = Instant::now();
    shared.recording.store(true, Ordering::Relaxed);
    tokio::time::sleep(opts.duration).await;
    shared.recording.store(false, Ordering::Relaxed);
    let bytes = shared.bytes.load(Ordering::Relaxed) - bytes_before;
    let round_trips = shared.round_trips.load(Ordering::Relaxed) - trips_before;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = cpu_at(&opts.cpu_pids);
    shared.stop.store(true, Ordering::Relaxed);

    let mut histogram = latency_histogram();
    if opts.mode == TcpMode::Echo {
        // Each echo connection ends after its current round trip; one stuck
        // in a read is abandoned (its time is already in the counters).
        for task in tasks {
            if let Ok(Ok(Some(h))) = tokio::time::timeout(Duration::from_secs(1), task).await {
                let _ = histogram.add(&h);
            }
        }
    }
    let cpu_seconds = opts
        .cpu_pids
        .iter()
        .zip(cpu_before.iter().zip(&cpu_after))
        .filter_map(|(&pid, (b, a))| {
            Some((
                pid,
                a.as_ref()?.saturating_sub((*b)?) as f64 / crate::procfs::TICKS_PER_SECOND,
            ))
        })
        .collect();
    let first_error = shared
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(TcpLoadReport {
        connections: opts.connections,
        message_bytes: opts.message_bytes,
        seconds,
        bytes,
        bytes_per_second: bytes as f64 / seconds,
        round_trips,
        round_trips_per_second: round_trips as f64 / seconds,
        round_trip_us: (opts.mode == TcpMode::Echo && !histogram.is_empty())
            .then(|| Percentiles::from_nanos(&histogram)),
        cpu_seconds,
        errors: shared.errors.load(Ordering::Relaxed),
        first_error,
    })
}

/// Writes `size`-byte chunks until told to stop, counting what the kernel
/// took.
async fn stream_into(mut stream: TcpStream, size: usize, shared: &Shared) {
    let chunk = vec![b'x'; size];
    while !shared.stop.load(Ordering::Relaxed) {
        match stream.write(&chunk).await {
            Ok(0) => {
                shared.fail("the connection stopped accepting bytes".to_owned());
                return;
            }
            Ok(n) => {
                shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => {
                shared.fail(format!("write: {e}"));
                return;
            }
        }
    }
}

/// Bounces `size`-byte messages, each stamped with the connection and a
/// sequence number so that a proxy mixing up bytes is caught; returns the
/// round trips timed while recording.
async fn echo(mut stream: TcpStream, conn: usize, size: usize, shared: &Shared) -> Histogram<u64> {
    let mut histogram = latency_histogram();
    let mut message = vec![b'e'; size];
    let mut back = vec![0u8; size];
    let mut seq: u64 = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        seq += 1;
        let stamp = (conn as u64) << 48 | seq;
        let n = size.min(8);
        message[..n].copy_from_slice(&stamp.to_le_bytes()[..n]);
        let sent = Instant::now();
        let exchanged = async {
            stream.write_all(&message).await?;
            stream.read_exact(&mut back).await?;
            std::io::Result::Ok(())
        }
        .await;
        if let Err(e) = exchanged {
            shared.fail(format!("echo: {e}"));
            break;
        }
        if back != message {
            shared.fail("echo: the bytes that came back differ from those sent".to_owned());
            break;
        }
        shared.bytes.fetch_add(size as u64, Ordering::Relaxed);
        shared.round_trips.fetch_add(1, Ordering::Relaxed);
        if shared.recording.load(Ordering::Relaxed) {
            record(&mut histogram, sent.elapsed().as_nanos() as u64);
        }
    }
    histogram
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn upstream() -> (SocketAddr, SocketAddr) {
        let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addrs = (sink.local_addr().unwrap(), echo.local_addr().unwrap());
        tokio::spawn(serve_sink(sink));
        tokio::spawn(serve_echo(echo));
        addrs
    }

    fn options(target: SocketAddr, mode: TcpMode, message_bytes: usize) -> TcpLoadOptions {
        TcpLoadOptions {
            target,
            mode,
            connections: 2,
            message_bytes,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(200),
            cpu_pids: vec![std::process::id()],
        }
    }

    #[tokio::test]
    async fn streams_into_the_sink() {
        let (sink, _) = upstream().await;
        let r = load(&options(sink, TcpMode::Stream, 64 * 1024))
            .await
            .unwrap();
        assert_eq!(r.errors, 0, "{:?}", r.first_error);
        assert!(r.bytes > 0);
        assert!(r.bytes_per_second > 0.0);
        assert_eq!(r.round_trips, 0);
        assert!(r.round_trip_us.is_none());
        assert_eq!(r.cpu_seconds.len(), 1);
    }

    #[tokio::test]
    async fn bounces_messages_off_the_echo() {
        let (_, echo_addr) = upstream().await;
        echo_once(echo_addr, Duration::from_secs(2)).await.unwrap();
        let r = load(&options(echo_addr, TcpMode::Echo, 64)).await.unwrap();
        assert_eq!(r.errors, 0, "{:?}", r.first_error);
        assert!(r.round_trips > 0);
        assert_eq!(r.bytes, r.round_trips * 64);
        let rtt = r.round_trip_us.unwrap();
        assert!(rtt.p50 > 0.0 && rtt.p99 >= rtt.p50);
    }

    #[tokio::test]
    async fn a_closed_echo_is_an_error() {
        // Accepts and closes at once.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                drop(s);
            }
        });
        let r = load(&options(addr, TcpMode::Echo, 16)).await.unwrap();
        assert_eq!(r.errors, 2);
        assert!(r.first_error.unwrap().starts_with("echo:"));
    }
}
