//! What the process costs, read from `/proc/self`: CPU time (user + system) of the whole
//! process and of each live thread, and the resident set.
//!
//! Threads are grouped by name: the sidecar names its per-channel threads `infer-<id>`
//! (detect, embed, search, matching, cues) and `frames-<id>` (shot detection, sampling);
//! tokio's are `tokio-runtime-w…` (async I/O: playlist and segment fetches, HTTP, bus,
//! and the blocking calls that drive GStreamer); the bench's own origins run on
//! `bench-origin` threads, left out of the sidecar's cost. Everything else is "other".
//! CPU of threads that ended within the window is only in the process total ("ended
//! threads"): mostly GStreamer's, as each live segment is decoded by a pipeline of its own.

use std::collections::HashMap;

use anyhow::Context;

/// Name prefix of the threads of the bench's origin runtime.
pub const ORIGIN_THREAD: &str = "bench-origin";

/// A group of threads by what they do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ThreadGroup {
    Inference,
    Frames,
    Runtime,
    Other,
    Origin,
}

impl ThreadGroup {
    pub const SIDECAR: [ThreadGroup; 4] = [
        ThreadGroup::Inference,
        ThreadGroup::Frames,
        ThreadGroup::Runtime,
        ThreadGroup::Other,
    ];

    fn of(comm: &str) -> Self {
        if comm.starts_with("infer-") {
            Self::Inference
        } else if comm.starts_with("frames-") {
            Self::Frames
        } else if comm.starts_with("tokio-runtime") {
            Self::Runtime
        } else if comm.starts_with(ORIGIN_THREAD) {
            Self::Origin
        } else {
            Self::Other
        }
    }
}

/// CPU clock ticks of the process and of each live thread, at one moment.
#[derive(Debug, Clone, Default)]
pub struct CpuSample {
    pub process_ticks: u64,
    /// Thread id → (group, ticks).
    threads: HashMap<u32, (ThreadGroup, u64)>,
}

/// CPU seconds over a window: the process, per thread group, and ended threads.
#[derive(Debug, Clone, Default)]
pub struct CpuSplit {
    pub process_s: f64,
    pub groups: HashMap<ThreadGroup, f64>,
    /// In the process total but in no thread alive at the window's end.
    pub ended_s: f64,
}

impl CpuSplit {
    pub fn group(&self, g: ThreadGroup) -> f64 {
        self.groups.get(&g).copied().unwrap_or(0.0)
    }
    /// The sidecar's share: the process without the bench's origins.
    pub fn sidecar_s(&self) -> f64 {
        (self.process_s - self.group(ThreadGroup::Origin)).max(0.0)
    }
}

/// `comm` and utime + stime (ticks) of a `/proc/…/stat` line.
fn parse_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // After `comm`: state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// The process's and every live thread's CPU ticks now.
pub fn cpu_sample() -> anyhow::Result<CpuSample> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    let (_, process_ticks) = parse_stat(&stat).context("parsing /proc/self/stat")?;
    let mut threads = HashMap::new();
    for entry in std::fs::read_dir("/proc/self/task").context("listing /proc/self/task")? {
        let Ok(entry) = entry else { continue };
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A thread may end between the listing and the read.
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((comm, ticks)) = parse_stat(&text) {
            threads.insert(tid, (ThreadGroup::of(&comm), ticks));
        }
    }
    Ok(CpuSample {
        process_ticks,
        threads,
    })
}

/// CPU seconds spent between `a` and `b`.
pub fn split(a: &CpuSample, b: &CpuSample) -> CpuSplit {
    let hz = clock_ticks_per_second();
    let process_s = b.process_ticks.saturating_sub(a.process_ticks) as f64 / hz;
    let mut groups: HashMap<ThreadGroup, f64> = HashMap::new();
    let mut live = 0.0;
    for (tid, (group, ticks)) in &b.threads {
        let before = a.threads.get(tid).map_or(0, |(_, t)| *t);
        let s = ticks.saturating_sub(before) as f64 / hz;
        *groups.entry(*group).or_default() += s;
        live += s;
    }
    CpuSplit {
        process_s,
        groups,
        ended_s: (process_s - live).max(0.0),
    }
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the system; no memory is shared.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// Resident set (`VmRSS`) of this process, MiB.
pub fn rss_mib() -> Option<f64> {
    rss_mib_of(None)
}

/// `/proc/<pid>`, or `/proc/self` for `None`.
fn proc_dir(pid: Option<u32>) -> String {
    pid.map_or_else(|| "/proc/self".to_string(), |p| format!("/proc/{p}"))
}

/// The number of a `Key:   123 kB` line of `/proc/<pid>/status`.
fn status_number(pid: Option<u32>, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("{}/status", proc_dir(pid))).ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resident set (`VmRSS`) of a process, MiB.
pub fn rss_mib_of(pid: Option<u32>) -> Option<f64> {
    status_number(pid, "VmRSS").map(|kib| kib as f64 / 1024.0)
}

/// Threads of a process now.
pub fn threads_of(pid: Option<u32>) -> Option<u64> {
    status_number(pid, "Threads")
}

/// File descriptors a process has open now.
pub fn open_fds(pid: Option<u32>) -> Option<usize> {
    Some(
        std::fs::read_dir(format!("{}/fd", proc_dir(pid)))
            .ok()?
            .count(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "4242 (infer-a) b)) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat(line), Some(("infer-a) b)".into(), 175)));
        assert_eq!(parse_stat("1 (x) S 1"), None);
        assert_eq!(ThreadGroup::of("infer-grocery0"), ThreadGroup::Inference);
        assert_eq!(ThreadGroup::of("tokio-runtime-w"), ThreadGroup::Runtime);
        assert_eq!(ThreadGroup::of("bench-origin"), ThreadGroup::Origin);
        assert_eq!(ThreadGroup::of("multiqueue0:src"), ThreadGroup::Other);
    }

    #[test]
    fn this_process_is_readable() {
        let a = cpu_sample().unwrap();
        let mut x = 0u64;
        for i in 0..3_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = cpu_sample().unwrap();
        let s = split(&a, &b);
        assert!(s.process_s >= 0.0 && s.ended_s >= 0.0);
        assert!(!b.threads.is_empty());
        assert!(rss_mib().is_some_and(|m| m > 0.0));
        let me = Some(std::process::id());
        assert!(rss_mib_of(me).is_some_and(|m| m > 0.0));
        assert!(threads_of(me).is_some_and(|n| n >= 1));
        assert!(open_fds(None).is_some_and(|n| n >= 3));
    }
}
