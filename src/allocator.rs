//! The process's allocator (glibc malloc, through `libc`): the arena cap set before any
//! thread starts, the heap's in-use and free bytes for `/metrics`, and a periodic
//! `malloc_trim` that hands free pages back to the kernel.
//!
//! Why: a sidecar's decoder, inference and runtime threads free most of what they allocate
//! within a segment, but glibc keeps freed pages inside its arenas, so resident memory can
//! creep while the live heap is flat (docs/BENCHMARKS.md, "Soak"). The heap gauges tell a
//! leak (in-use grows) from retention (free grows); the trim returns the retention.
//! On other C libraries everything here is a no-op.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// glibc's allocator gives threads up to 8 pools (arenas) per core and keeps what each one
/// held at its peak: with the decoder, inference and runtime threads of several channels,
/// a sidecar's resident memory filled 17 of them over its first 13 minutes (519 → 990 MiB,
/// then flat). Two pools held the same load under 675 MiB for an hour, with CPU, latency and
/// dropped samples unchanged (docs/BENCHMARKS.md, "Soak" and "Decoder threads and malloc
/// arenas").
pub const ARENAS: i32 = 2;

/// Allocator upkeep (`[memory]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemorySettings {
    /// Every this many seconds, hand the allocator's free pages back to the kernel
    /// (glibc `malloc_trim`) and publish the heap's in-use and free bytes. 0: never trim
    /// (the gauges are still published).
    pub trim_interval_s: u64,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            trim_interval_s: 60,
        }
    }
}

impl MemorySettings {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.trim_interval_s > 86_400 {
            return Err(("trim_interval_s", "must be from 0 to 86400".into()));
        }
        Ok(())
    }
}

/// Caps the allocator's arenas at [`ARENAS`] unless `MALLOC_ARENA_MAX` is set (glibc's own
/// knob takes precedence). Call before any thread starts.
pub fn cap_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        imp::cap_arenas(ARENAS);
    }
}

/// What the allocator holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes handed out and not yet freed (small chunks plus mmapped large ones).
    pub in_use: u64,
    /// Bytes freed but kept inside the arenas.
    pub free: u64,
}

/// The heap's totals over every arena; `None` where the C library cannot say.
pub fn heap_stats() -> Option<HeapStats> {
    imp::heap_stats()
}

/// Hands free pages of every arena back to the kernel; whether any were released.
pub fn trim() -> bool {
    imp::trim()
}

/// Every `trim_interval_s` (every 10 s when it is 0, without trimming): the heap's in-use
/// and free bytes into the metrics and, unless the interval is 0, a trim, timed. Runs the
/// allocator calls on the blocking pool: they lock each arena in turn.
pub async fn upkeep(
    settings: MemorySettings,
    metrics: std::sync::Arc<Metrics>,
    stop: CancellationToken,
) {
    let trimming = settings.trim_interval_s > 0;
    let every = Duration::from_secs(if trimming {
        settings.trim_interval_s
    } else {
        10
    });
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trims = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok((stats, trimmed)) = tokio::task::spawn_blocking(move || {
            let stats = heap_stats();
            (stats, trimming.then(timed_trim))
        })
        .await
        else {
            return;
        };
        if let Some(s) = stats {
            metrics.set_gauge("heap_in_use_bytes", s.in_use as f64);
            metrics.set_gauge("heap_free_bytes", s.free as f64);
        }
        if let Some(t) = trimmed {
            trims += 1;
            metrics.sync_counter("malloc_trims", trims);
            metrics.set_gauge("malloc_trim_last_seconds", t.took.as_secs_f64());
            metrics.set_gauge("malloc_trim_last_released_bytes", t.released as f64);
        }
    }
}

/// One trim: how long it held the arenas and how much resident memory it gave back.
#[derive(Debug, Clone, Copy)]
pub struct Trimmed {
    pub took: Duration,
    pub released: u64,
}

pub fn timed_trim() -> Trimmed {
    let before = resident_bytes();
    let started = Instant::now();
    trim();
    let took = started.elapsed();
    Trimmed {
        took,
        released: before.saturating_sub(resident_bytes()),
    }
}

/// The process's resident set now (`/proc/self/statm`), 0 where unknown.
fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    pages.saturating_mul(imp::page_size())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use super::HeapStats;

    pub fn cap_arenas(n: i32) {
        // SAFETY: mallopt only sets an allocator parameter; the caller runs before any
        // thread starts.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, n) };
    }

    pub fn heap_stats() -> Option<HeapStats> {
        // SAFETY: mallinfo2 reads the allocator's totals under its own locks (glibc ≥ 2.33).
        let m = unsafe { libc::mallinfo2() };
        Some(HeapStats {
            in_use: (m.uordblks + m.hblkhd) as u64,
            free: m.fordblks as u64,
        })
    }

    pub fn trim() -> bool {
        // SAFETY: malloc_trim(0) only releases free pages; it is thread-safe.
        unsafe { libc::malloc_trim(0) == 1 }
    }

    pub fn page_size() -> u64 {
        // SAFETY: sysconf only reads a system constant.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(n).unwrap_or(4096)
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    use super::HeapStats;

    pub fn cap_arenas(_n: i32) {}

    pub fn heap_stats() -> Option<HeapStats> {
        None
    }

    pub fn trim() -> bool {
        false
    }

    pub fn page_size() -> u64 {
        4096
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn heap_stats_see_an_allocation_and_its_release() {
        let before = heap_stats().expect("glibc answers");
        // 8 MiB in 64 KiB blocks: below the mmap threshold, so they live in an arena.
        let blocks: Vec<Vec<u8>> = (0..128).map(|i| vec![i as u8; 64 * 1024]).collect();
        let during = heap_stats().unwrap();
        assert!(
            during.in_use >= before.in_use + 7 * 1024 * 1024,
            "{before:?} → {during:?}"
        );
        drop(blocks);
        let after = heap_stats().unwrap();
        assert!(
            after.in_use + 7 * 1024 * 1024 <= during.in_use,
            "{during:?} → {after:?}"
        );
        // Freed pages stay in the arena until trimmed; the trim must not lose live data.
        let keep = vec![7u8; 1024];
        let t = timed_trim();
        assert!(keep.iter().all(|&b| b == 7), "{t:?}");
    }

    #[test]
    fn intervals_past_a_day_are_refused() {
        assert!(MemorySettings::default().validate().is_ok());
        assert!(MemorySettings { trim_interval_s: 0 }.validate().is_ok());
        let e = MemorySettings {
            trim_interval_s: u64::MAX,
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.0, "trim_interval_s");
    }

    #[tokio::test]
    async fn upkeep_publishes_the_heap_and_counts_trims() {
        let metrics = std::sync::Arc::new(Metrics::new());
        let stop = CancellationToken::new();
        let task = tokio::spawn(upkeep(
            MemorySettings { trim_interval_s: 1 },
            metrics.clone(),
            stop.clone(),
        ));
        // The first tick is immediate; give its blocking call up to 10 s.
        for _ in 0..1000 {
            if metrics.encode().contains("malloc_trims") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        task.await.unwrap();
        let text = metrics.encode();
        assert!(text.contains(r#"name="heap_in_use_bytes""#), "{text}");
        assert!(text.contains(r#"name="heap_free_bytes""#), "{text}");
        assert!(text.contains(r#"name="malloc_trims""#), "{text}");
    }
}
