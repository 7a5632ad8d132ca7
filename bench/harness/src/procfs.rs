//! What `/proc` says about CPU and memory: a process's CPU time and RSS, the
//! machine's busy time, and the machine itself.
//!
//! CPU is read in clock ticks (`USER_HZ`, 100 on Linux) and turned into
//! seconds; over the seconds-long intervals measured here a tick (10 ms) is
//! well below the noise.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Clock ticks per second of `/proc` CPU times. Linux has exported 100 to
/// user space on every architecture for decades (`USER_HZ`), whatever the
/// kernel's own tick rate.
pub const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time a process has used so far (user + system, all its threads).
pub fn process_cpu_ticks(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_ticks(&text)
}

/// `utime + stime` from a `/proc/PID/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `cutime + cstime` from a `/proc/PID/stat` line: CPU time of the
/// process's children that have exited and been waited for.
pub fn parse_stat_children_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let cutime: u64 = fields.get(13)?.parse().ok()?;
    let cstime: u64 = fields.get(14)?.parse().ok()?;
    Some(cutime + cstime)
}

fn own_children_ticks() -> u64 {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_stat_children_ticks(&s))
        .unwrap_or(0)
}

/// Resident set size and its peak (`VmRSS`, `VmHWM`) in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

pub fn process_memory(pid: u32) -> Option<Memory> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_memory(&text)
}

pub fn parse_status_memory(status: &str) -> Option<Memory> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        peak_rss_kib: field("VmHWM:").unwrap_or(0),
    })
}

/// The machine's CPU time by kind, summed over all CPUs, from `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineTicks {
    /// user + nice + system: time charged to processes (kernel threads too).
    pub process: u64,
    /// irq + softirq: interrupt work, which no process is charged for (on
    /// loopback this is mostly the network stack delivering packets).
    pub interrupt: u64,
    /// Time the hypervisor gave to other guests while this one wanted to run.
    pub steal: u64,
}

pub fn machine_ticks() -> Option<MachineTicks> {
    parse_proc_stat(&fs::read_to_string("/proc/stat").ok()?)
}

pub fn parse_proc_stat(text: &str) -> Option<MachineTicks> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let n: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let get = |i: usize| n.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal guest guest_nice
    Some(MachineTicks {
        process: get(0) + get(1) + get(2),
        interrupt: get(5) + get(6),
        steal: get(7),
    })
}

/// Every process's name and CPU ticks, by pid.
fn all_processes() -> BTreeMap<u32, (String, u64)> {
    let mut out = BTreeMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let name = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map_or("?", |(name, _)| name)
            .to_owned();
        if let Some(ticks) = parse_stat_cpu_ticks(&stat) {
            out.insert(pid, (name, ticks));
        }
    }
    out
}

/// CPU use over an interval: of the watched processes, and of everything
/// else, to tell a clean measurement from one shared with a build.
pub struct CpuWindow {
    started: Instant,
    machine: MachineTicks,
    pids: BTreeMap<u32, u64>,
    everyone: BTreeMap<u32, (String, u64)>,
    reaped: u64,
}

/// The result of a [`CpuWindow`], in cores (1.0 = one CPU busy throughout).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuUse {
    pub seconds: f64,
    /// Cores used by each watched process, by pid.
    pub by_pid: BTreeMap<u32, f64>,
    /// Cores used by processes that were not watched.
    pub other_cores: f64,
    /// Cores spent in interrupt handling (loopback networking), including
    /// the softirq threads.
    pub interrupt_cores: f64,
    pub steal_cores: f64,
    /// The unwatched processes that used the most CPU, by name (a process
    /// that started and ended inside the interval is counted in
    /// `other_cores` only).
    pub top_others: Vec<(String, f64)>,
}

impl CpuUse {
    pub fn of(&self, pid: u32) -> f64 {
        self.by_pid.get(&pid).copied().unwrap_or(0.0)
    }
}

impl CpuWindow {
    /// Starts watching `pids` (the processes of the measurement; the rest of
    /// the machine counts as "other").
    pub fn start(pids: &[u32]) -> CpuWindow {
        CpuWindow {
            started: Instant::now(),
            machine: machine_ticks().unwrap_or_default(),
            pids: pids
                .iter()
                .map(|&pid| (pid, process_cpu_ticks(pid).unwrap_or(0)))
                .collect(),
            everyone: all_processes(),
            reaped: own_children_ticks(),
        }
    }

    pub fn finish(self) -> CpuUse {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let machine = machine_ticks().unwrap_or_default();
        let cores = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / seconds;
        // Children of this process that exited and were waited for in the
        // interval (a load tool that ran to its end) are gone from /proc;
        // their time is in this process's `cutime`/`cstime`.
        let reaped = own_children_ticks().saturating_sub(self.reaped);
        let mut watched = reaped;
        let mut by_pid = BTreeMap::new();
        let mut exited = Vec::new();
        for (&pid, &before) in &self.pids {
            match process_cpu_ticks(pid) {
                Some(after) => {
                    let used = after.saturating_sub(before);
                    watched += used;
                    by_pid.insert(pid, cores(used));
                }
                None => exited.push(pid),
            }
        }
        // One watched process gone: it is the child that was reaped.
        for &pid in &exited {
            let share = if exited.len() == 1 { reaped } else { 0 };
            by_pid.insert(pid, cores(share));
        }
        let process = machine.process.saturating_sub(self.machine.process);
        let mut others: BTreeMap<String, u64> = BTreeMap::new();
        let mut scanned = 0;
        let mut softirq_threads = 0;
        for (pid, (name, after)) in all_processes() {
            if self.pids.contains_key(&pid) {
                continue;
            }
            let before = self.everyone.get(&pid).map_or(0, |(_, t)| *t);
            let used = after.saturating_sub(before);
            if used == 0 {
                continue;
            }
            if is_softirq_thread(&name) {
                softirq_threads += used;
            } else {
                scanned += used;
                *others.entry(name).or_default() += used;
            }
        }
        let mut top_others: Vec<(String, f64)> = others
            .into_iter()
            .map(|(name, ticks)| (name, cores(ticks)))
            .collect();
        top_others.sort_by(|a, b| b.1.total_cmp(&a.1));
        top_others.truncate(3);
        CpuUse {
            top_others,
            seconds,
            by_pid,
            // Two views of "everything else": the machine's total minus the
            // watched processes (sees processes that came and went, but the
            // kernel books some time differently in the two sources), and
            // the sum over the other live processes. The larger is reported.
            other_cores: cores(
                process
                    .saturating_sub(watched)
                    .saturating_sub(softirq_threads)
                    .max(scanned),
            ),
            interrupt_cores: cores(
                machine.interrupt.saturating_sub(self.machine.interrupt) + softirq_threads,
            ),
            steal_cores: cores(machine.steal.saturating_sub(self.machine.steal)),
        }
    }
}

/// The kernel threads that run deferred softirq work (`ksoftirqd/N`). Under
/// a loopback load of gigabytes per second they deliver the benchmark's own
/// packets, so their time counts as interrupt work, not as another
/// process disturbing the measurement.
pub fn is_softirq_thread(name: &str) -> bool {
    name.strip_prefix("ksoftirqd/")
        .is_some_and(|cpu| !cpu.is_empty() && cpu.bytes().all(|b| b.is_ascii_digit()))
}

/// Samples the RSS of processes every `every` until dropped, keeping the
/// largest value seen per pid.
pub struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<BTreeMap<u32, u64>>>,
}

impl RssSampler {
    pub fn start(pids: Vec<u32>, every: Duration) -> RssSampler {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut max: BTreeMap<u32, u64> = BTreeMap::new();
            while !flag.load(Ordering::Relaxed) {
                for &pid in &pids {
                    if let Some(m) = process_memory(pid) {
                        let e = max.entry(pid).or_default();
                        *e = (*e).max(m.rss_kib);
                    }
                }
                std::thread::sleep(every);
            }
            max
        });
        RssSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Largest RSS (KiB) seen per pid.
    pub fn finish(mut self) -> BTreeMap<u32, u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The machine the figures come from.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_mib: u64,
    pub kernel: String,
    /// 1-minute load average when the run started.
    pub load_at_start: f64,
}

pub fn machine() -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory_mib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    Machine {
        cpu_model,
        cores,
        memory_mib,
        kernel,
        load_at_start: load_average(),
    }
}

pub fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_ticks_survive_odd_process_names() {
        let line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194304 500 0 0 0 \
                    250 75 0 0 20 0 3 0 100 1000000 200 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(line), Some(325));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        // cutime and cstime follow utime and stime.
        let line = "1 (x) S 1 1 1 0 -1 0 0 0 0 0 250 75 40 2 20 0 1 0";
        assert_eq!(parse_stat_children_ticks(line), Some(42));
    }

    #[test]
    fn softirq_threads_are_told_apart() {
        assert!(is_softirq_thread("ksoftirqd/0"));
        assert!(is_softirq_thread("ksoftirqd/17"));
        assert!(!is_softirq_thread("ksoftirqd/"));
        assert!(!is_softirq_thread("ksoftirqd"));
        assert!(!is_softirq_thread("kworker/0:1"));
        assert!(!is_softirq_thread("rustc"));
    }

    #[test]
    fn status_memory() {
        let status = "Name:\tenvoy\nVmHWM:\t   70120 kB\nVmRSS:\t   68000 kB\nThreads:\t12\n";
        assert_eq!(
            parse_status_memory(status),
            Some(Memory {
                rss_kib: 68000,
                peak_rss_kib: 70120
            })
        );
        assert_eq!(parse_status_memory("Name:\tx\n"), None);
    }

    #[test]
    fn proc_stat_totals() {
        let text = "cpu  100 5 50 9000 10 3 7 2 0 0\ncpu0 50 2 25 4500 5 1 3 1 0 0\n";
        assert_eq!(
            parse_proc_stat(text),
            Some(MachineTicks {
                process: 155,
                interrupt: 10,
                steal: 2
            })
        );
    }

    #[test]
    fn unwatched_processes_are_named_among_the_others() {
        let me = std::process::id();
        let window = CpuWindow::start(&[]);
        // Burn some CPU here (bounded), so that this process is an "other".
        let before = process_cpu_ticks(me).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut x = 0u64;
        while process_cpu_ticks(me).unwrap() < before + 3 && Instant::now() < deadline {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        }
        let cpu = window.finish();
        let name = fs::read_to_string(format!("/proc/{me}/comm")).unwrap();
        assert!(
            cpu.top_others
                .iter()
                .any(|(n, c)| n == name.trim() && *c > 0.0),
            "{:?}",
            cpu.top_others
        );
    }

    #[test]
    fn a_watched_child_that_exits_is_credited_its_cpu() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        let window = CpuWindow::start(&[child.id()]);
        assert!(child.wait().unwrap().success());
        let cpu = window.finish();
        assert!(cpu.of(child.id()) > 0.0, "{cpu:?}");
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(process_cpu_ticks(pid).is_some());
        assert!(process_memory(pid).unwrap().rss_kib > 0);
    }
}
