//! The soak's samples: every few seconds the sidecar process's resident set, open file
//! descriptors and threads (`/proc/<pid>`), its tokio tasks and error counters (`/metrics`),
//! the clients' and players' totals and the panics in its log; then least-squares slopes
//! per hour after the warm-up, each against a declared threshold.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use crate::bench::capacity::exposition::Exposition;
use crate::bench::capacity::procfs;

use super::feed_clients::FeedCounters;
use super::players::PlayerCounters;

/// One sample: the process's gauges, then running totals.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub t_s: f64,
    pub rss_mib: f64,
    /// The allocator's live bytes and the freed bytes it keeps (`heap_in_use_bytes`,
    /// `heap_free_bytes` in `/metrics`), MiB: a leak grows the first, retention the second.
    pub heap_in_use_mib: Option<f64>,
    pub heap_free_mib: Option<f64>,
    /// The last periodic `malloc_trim`: how long it took and the resident memory it gave
    /// back (`malloc_trim_last_seconds`, `malloc_trim_last_released_bytes`).
    pub trim_ms: Option<f64>,
    pub trim_released_mib: Option<f64>,
    pub fds: f64,
    pub threads: f64,
    /// Alive tokio tasks (`shopcue_gauge{name="tokio_tasks"}`), when the build exposes it.
    pub tasks: Option<f64>,
    pub ws_clients: f64,
    /// Cue events the sidecar handed to its bus.
    pub published: f64,
    pub client_events: u64,
    pub connects: u64,
    pub connect_errors: u64,
    pub dups: u64,
    pub resume_errors: u64,
    pub playlists: u64,
    pub playlist_errors: u64,
    pub segments: u64,
    pub segment_errors: u64,
    pub stalls: u64,
    /// Ingest segments bad, lost or skipped (`shopcue_segments_total`).
    pub ingest_errors: f64,
    pub samples_dropped: f64,
    pub restarts: f64,
    /// The proxy's origin errors and refused fetches.
    pub proxy_errors: f64,
    pub slow_closed: f64,
    pub panics: u64,
    /// How long `/metrics` took to answer the bench's own (tokio) client; NaN: it failed.
    pub scrape_ms: f64,
    /// The same request, same moment, over a blocking socket on a thread of its own.
    pub probe_ms: f64,
}

/// Counts `panicked` in the lines a log gains, reading only what is new each time.
pub struct PanicScan {
    path: PathBuf,
    pos: u64,
    pub panics: u64,
    /// The first panic line seen.
    pub first: Option<String>,
}

impl PanicScan {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            pos: 0,
            panics: 0,
            first: None,
        }
    }

    pub fn scan(&mut self) -> u64 {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return self.panics;
        };
        let mut new = Vec::new();
        if f.seek(SeekFrom::Start(self.pos)).is_err() || f.read_to_end(&mut new).is_err() {
            return self.panics;
        }
        // Whole lines only; a partial last line is read again next time.
        let Some(end) = new.iter().rposition(|b| *b == b'\n') else {
            return self.panics;
        };
        self.pos += end as u64 + 1;
        for line in String::from_utf8_lossy(&new[..end]).lines() {
            if line.contains("panicked") {
                self.panics += 1;
                self.first.get_or_insert_with(|| line.to_string());
            }
        }
        self.panics
    }
}

/// What the sampler reads besides the sidecar.
pub struct Sources<'a> {
    pub pid: u32,
    /// The sidecar's `/metrics` text; `None` when the scrape failed.
    pub metrics: Option<&'a str>,
    pub feed: &'a FeedCounters,
    pub players: &'a PlayerCounters,
    pub panics: u64,
    pub scrape_ms: Option<f64>,
    pub probe_ms: Option<f64>,
}

pub fn take(t_s: f64, s: &Sources) -> Sample {
    let m = Exposition::parse(s.metrics.unwrap_or_default());
    // Without a scrape the sidecar's figures are unknown (NaN: an empty CSV cell), not 0.
    let missing = if s.metrics.is_some() { 0.0 } else { f64::NAN };
    let sum = |name: &str, f: &[(&str, &str)]| m.sum(name, f).unwrap_or(0.0) + missing;
    let named = |family: &str, name: &str| m.sum(family, &[("name", name)]);
    let counter = |name: &str| named("shopcue_events_total", name).unwrap_or(0.0) + missing;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let pid = Some(s.pid);
    Sample {
        t_s,
        rss_mib: procfs::rss_mib_of(pid).unwrap_or(f64::NAN),
        heap_in_use_mib: named("shopcue_gauge", "heap_in_use_bytes").map(|b| b / MIB),
        heap_free_mib: named("shopcue_gauge", "heap_free_bytes").map(|b| b / MIB),
        trim_ms: named("shopcue_gauge", "malloc_trim_last_seconds").map(|s| s * 1000.0),
        trim_released_mib: named("shopcue_gauge", "malloc_trim_last_released_bytes")
            .map(|b| b / MIB),
        fds: procfs::open_fds(pid).map_or(f64::NAN, |n| n as f64),
        threads: procfs::threads_of(pid).map_or(f64::NAN, |n| n as f64),
        tasks: named("shopcue_gauge", "tokio_tasks"),
        ws_clients: named("shopcue_gauge", "websocket_clients").unwrap_or(0.0) + missing,
        published: counter("bus_published"),
        client_events: load(&s.feed.events),
        connects: load(&s.feed.connects),
        connect_errors: load(&s.feed.connect_errors),
        dups: load(&s.feed.dups),
        resume_errors: load(&s.feed.resume_errors),
        playlists: load(&s.players.playlists),
        playlist_errors: load(&s.players.playlist_errors),
        segments: load(&s.players.segments),
        segment_errors: load(&s.players.segment_errors),
        stalls: load(&s.players.stalls),
        ingest_errors: ["bad", "lost", "skipped"]
            .iter()
            .map(|k| sum("shopcue_segments_total", &[("kind", k)]))
            .sum(),
        samples_dropped: sum("shopcue_dropped_total", &[("kind", "samples")]),
        restarts: sum("shopcue_channel_restarts_total", &[]),
        proxy_errors: counter("hls_origin_errors") + counter("hls_fetches_refused"),
        slow_closed: counter("websocket_slow_closed"),
        panics: s.panics,
        scrape_ms: s.scrape_ms.unwrap_or(f64::NAN),
        probe_ms: s.probe_ms.unwrap_or(f64::NAN),
    }
}

/// A column of the CSV (all of them) and of the minute table (those with a title).
struct Column {
    csv: &'static str,
    title: Option<&'static str>,
    get: fn(&Sample) -> Option<f64>,
}

const fn col(csv: &'static str, title: &'static str, get: fn(&Sample) -> Option<f64>) -> Column {
    Column {
        csv,
        title: if title.is_empty() { None } else { Some(title) },
        get,
    }
}

const MIB: f64 = 1024.0 * 1024.0;

const COLUMNS: [Column; 30] = [
    col("t_s", "", |s| Some(s.t_s)),
    col("t_min", "min", |s| Some(s.t_s / 60.0)),
    col("rss_mib", "RSS MiB", |s| Some(s.rss_mib)),
    col("heap_in_use_mib", "heap in use MiB", |s| s.heap_in_use_mib),
    col("heap_free_mib", "heap free MiB", |s| s.heap_free_mib),
    col("malloc_trim_ms", "", |s| s.trim_ms),
    col("malloc_trim_released_mib", "", |s| s.trim_released_mib),
    col("fds", "fds", |s| Some(s.fds)),
    col("threads", "threads", |s| Some(s.threads)),
    col("tokio_tasks", "tasks", |s| s.tasks),
    col("ws_clients", "WS clients", |s| Some(s.ws_clients)),
    col("cues_published", "cues published", |s| Some(s.published)),
    col("client_events", "client events", |s| {
        Some(s.client_events as f64)
    }),
    col("connects", "(re)connects", |s| Some(s.connects as f64)),
    col("connect_errors", "", |s| Some(s.connect_errors as f64)),
    col("dups", "dups", |s| Some(s.dups as f64)),
    col("resume_errors", "", |s| Some(s.resume_errors as f64)),
    col("playlists", "playlists", |s| Some(s.playlists as f64)),
    col("playlist_errors", "playlist errors", |s| {
        Some(s.playlist_errors as f64)
    }),
    col("segments", "segments", |s| Some(s.segments as f64)),
    col("segment_errors", "segment errors", |s| {
        Some(s.segment_errors as f64)
    }),
    col("stalls", "stalls", |s| Some(s.stalls as f64)),
    col("ingest_segment_errors", "ingest seg errors", |s| {
        Some(s.ingest_errors)
    }),
    col("samples_dropped", "samples dropped", |s| {
        Some(s.samples_dropped)
    }),
    col("restarts", "restarts", |s| Some(s.restarts)),
    col("proxy_errors", "", |s| Some(s.proxy_errors)),
    col("ws_slow_closed", "", |s| Some(s.slow_closed)),
    col("panics", "panics", |s| Some(s.panics as f64)),
    col("metrics_scrape_ms", "", |s| Some(s.scrape_ms)),
    col("metrics_probe_ms", "", |s| Some(s.probe_ms)),
];

pub fn csv_header() -> String {
    COLUMNS.iter().map(|c| c.csv).collect::<Vec<_>>().join(",")
}

pub fn csv_row(s: &Sample) -> String {
    let cell = |v: Option<f64>| match v {
        Some(v) if v.is_finite() && v.fract() == 0.0 => format!("{v:.0}"),
        Some(v) if v.is_finite() => format!("{v:.2}"),
        _ => String::new(),
    };
    COLUMNS
        .iter()
        .map(|c| cell((c.get)(s)))
        .collect::<Vec<_>>()
        .join(",")
}

fn titled() -> impl Iterator<Item = (&'static str, &'static Column)> {
    COLUMNS.iter().filter_map(|c| Some((c.title?, c)))
}

pub fn table_header() -> String {
    let titles: Vec<&str> = titled().map(|(t, _)| t).collect();
    let align = vec!["---:"; titles.len()];
    format!("| {} |\n|{}|", titles.join(" | "), align.join("|"))
}

pub fn table_row(s: &Sample) -> String {
    let cells: Vec<String> = titled()
        .map(|(_, c)| match (c.get)(s) {
            Some(v) if v.is_finite() => format!("{v:.0}"),
            _ => "–".into(),
        })
        .collect();
    format!("| {} |", cells.join(" | "))
}

/// Least-squares slope of `y` over `x`; `None` with fewer than 3 points or no spread.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let pts: Vec<&(f64, f64)> = points
        .iter()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if pts.len() < 3 {
        return None;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The warm-up left out of the slopes: the first 5 minutes or 20 % of the run, whichever
/// is less.
pub fn warmup_s(duration_s: f64) -> f64 {
    (duration_s * 0.2).min(300.0)
}

/// A gauge whose slope is judged, and the largest slope per hour still called flat.
pub struct Trend {
    pub name: &'static str,
    pub unit: &'static str,
    pub threshold_per_h: f64,
    pub value: fn(&Sample) -> Option<f64>,
}

/// RSS: allocator arenas and caches settle within tens of MiB; a leak of one buffer per
/// segment or per reconnect grows far faster. Heap in use: what the program holds, so a
/// leak shows here even when RSS hides it. The heap's free bytes are not judged: after a
/// trim they are address space, not resident memory (RSS judges that). fds and threads: one leaked per reconnect
/// or per segment would be hundreds or thousands an hour. Tasks likewise.
pub const TRENDS: [Trend; 5] = [
    Trend {
        name: "RSS",
        unit: "MiB",
        threshold_per_h: 20.0,
        value: |s| Some(s.rss_mib),
    },
    Trend {
        name: "heap in use",
        unit: "MiB",
        threshold_per_h: 20.0,
        value: |s| s.heap_in_use_mib,
    },
    Trend {
        name: "open fds",
        unit: "",
        threshold_per_h: 10.0,
        value: |s| Some(s.fds),
    },
    Trend {
        name: "threads",
        unit: "",
        threshold_per_h: 10.0,
        value: |s| Some(s.threads),
    },
    Trend {
        name: "tokio tasks",
        unit: "",
        threshold_per_h: 50.0,
        value: |s| s.tasks,
    },
];

/// One trend over the samples after the warm-up.
#[derive(Debug, Clone)]
pub struct TrendRow {
    pub name: &'static str,
    pub unit: &'static str,
    pub first: f64,
    pub last: f64,
    pub min: f64,
    pub max: f64,
    pub slope_per_h: Option<f64>,
    /// The slope over the second half of the samples after the warm-up: tells a gauge
    /// still filling a bounded cache early on from one that keeps growing.
    pub late_slope_per_h: Option<f64>,
    pub threshold_per_h: f64,
}

/// What a trend says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// |slope| within the threshold after the warm-up.
    Flat,
    /// Over the threshold after the warm-up, within it over the second half.
    Settled,
    /// Over the threshold upwards, in both windows.
    Growing,
    /// Over the threshold downwards, in both windows (not flat, but nothing accumulates).
    Falling,
}

impl TrendRow {
    pub fn verdict(&self) -> Option<Verdict> {
        let within = |s: f64| s.abs() <= self.threshold_per_h;
        let all = self.slope_per_h?;
        Some(if within(all) {
            Verdict::Flat
        } else if self.late_slope_per_h.is_some_and(within) {
            Verdict::Settled
        } else if all > 0.0 {
            Verdict::Growing
        } else {
            Verdict::Falling
        })
    }
}

pub fn trends(samples: &[Sample], warmup_s: f64) -> Vec<TrendRow> {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.t_s >= warmup_s).collect();
    TRENDS
        .iter()
        .filter_map(|t| {
            let pts: Vec<(f64, f64)> = after
                .iter()
                .filter_map(|s| Some((s.t_s / 3600.0, (t.value)(s)?)))
                .filter(|(_, y)| y.is_finite())
                .collect();
            let ys = || pts.iter().map(|p| p.1);
            let late = &pts[pts.len() / 2..];
            Some(TrendRow {
                name: t.name,
                unit: t.unit,
                first: pts.first()?.1,
                last: pts.last()?.1,
                min: ys().fold(f64::INFINITY, f64::min),
                max: ys().fold(f64::NEG_INFINITY, f64::max),
                slope_per_h: slope(&pts),
                late_slope_per_h: slope(late),
                threshold_per_h: t.threshold_per_h,
            })
        })
        .collect()
}

/// `/metrics` answer times, the bench's client beside the blocking probe: a slow answer
/// that only the client saw was the bench's runtime; one both saw was the sidecar's.
pub fn scrape_summary(samples: &[Sample]) -> String {
    let stats = |get: fn(&Sample) -> f64| {
        let mut ok: Vec<f64> = samples.iter().map(get).filter(|v| v.is_finite()).collect();
        ok.sort_by(f64::total_cmp);
        let at = |q: f64| {
            ok.get(((ok.len() as f64 - 1.0) * q).round() as usize)
                .copied()
        };
        let ms = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0}"));
        format!(
            "{} | {} | {} | {} | {}",
            ok.len(),
            samples.len() - ok.len(),
            ms(at(0.5)),
            ms(at(0.99)),
            ms(ok.last().copied())
        )
    };
    let slow = |v: f64| !v.is_finite() || v > 1000.0;
    let only_client = samples
        .iter()
        .filter(|s| slow(s.scrape_ms) && !slow(s.probe_ms))
        .count();
    let both = samples
        .iter()
        .filter(|s| slow(s.scrape_ms) && slow(s.probe_ms))
        .count();
    let only_probe = samples
        .iter()
        .filter(|s| !slow(s.scrape_ms) && slow(s.probe_ms))
        .count();
    format!(
        "| `/metrics` asked by | answered | failed | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|\n\
         | the bench's tokio client (5 s timeout) | {} |\n\
         | a blocking socket on its own thread (10 s) | {} |\n\n\
         Over 1 s or failed: {only_client} seen by the client only (the bench's runtime), \
         {both} by both (the sidecar), {only_probe} by the probe only.",
        stats(|s| s.scrape_ms),
        stats(|s| s.probe_ms)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_scrapes_are_told_apart_by_who_saw_them() {
        let at = |scrape_ms: f64, probe_ms: f64| Sample {
            scrape_ms,
            probe_ms,
            ..Default::default()
        };
        let samples = [
            at(12.0, 9.0),
            at(5000.0, 30.0),
            at(f64::NAN, 8.0),
            at(2500.0, 2400.0),
            at(20.0, f64::NAN),
        ];
        let text = scrape_summary(&samples);
        assert!(text.contains("2 seen by the client only"), "{text}");
        assert!(text.contains("1 by both"), "{text}");
        assert!(text.contains("1 by the probe only"), "{text}");
        // The client answered 4 of 5 (one NaN), the slowest in 5000 ms.
        assert!(
            text.contains("| the bench's tokio client (5 s timeout) | 4 | 1 |"),
            "{text}"
        );
        assert!(text.contains("| 5000 |"), "{text}");
    }

    #[test]
    fn csv_and_table_rows_match_their_headers() {
        let s = Sample {
            t_s: 120.0,
            rss_mib: 512.25,
            tasks: None,
            ..Sample::default()
        };
        let row = csv_row(&s);
        assert_eq!(row.split(',').count(), csv_header().split(',').count());
        // Unknown gauges (no heap figures, no task gauge) are empty cells, not 0.
        assert!(row.starts_with("120,2,512.25,,,,,0,0,,"), "{row}");
        let header = table_header();
        let cols = header.lines().next().unwrap().matches('|').count();
        assert_eq!(table_row(&s).matches('|').count(), cols);
        let t = table_row(&s);
        assert!(t.starts_with("| 2 | 512 | – | – | 0 | 0 | – |"), "{t}");
    }

    #[test]
    fn slopes_are_least_squares() {
        let line: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 + 2.0 * i as f64)).collect();
        assert!((slope(&line).unwrap() - 2.0).abs() < 1e-9);
        let noisy = [(0.0, 1.0), (1.0, -1.0), (2.0, 1.0), (3.0, -1.0), (4.0, 0.0)];
        assert!(slope(&noisy).unwrap().abs() < 0.5);
        assert_eq!(slope(&[(1.0, 1.0), (2.0, 2.0)]), None);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)]), None);
        assert_eq!(warmup_s(3600.0), 300.0);
        assert_eq!(warmup_s(180.0), 36.0);
    }

    #[test]
    fn trends_leave_out_the_warm_up_and_judge_flatness() {
        let samples: Vec<Sample> = (0..=60)
            .map(|i| Sample {
                t_s: i as f64 * 60.0,
                // Grows in the warm-up, flat after it.
                rss_mib: if i < 5 {
                    100.0 + 20.0 * i as f64
                } else {
                    200.0
                },
                // One fd an minute: 60 an hour.
                fds: 50.0 + i as f64,
                threads: 40.0,
                ..Sample::default()
            })
            .collect();
        let rows = trends(&samples, 300.0);
        assert_eq!(rows.len(), 3, "no task or heap gauges, no rows for them");
        assert_eq!(rows[0].verdict(), Some(Verdict::Flat));
        assert!((rows[0].slope_per_h.unwrap()).abs() < 1e-9);
        assert_eq!(rows[1].verdict(), Some(Verdict::Growing));
        assert!((rows[1].slope_per_h.unwrap() - 60.0).abs() < 1e-6);
        assert_eq!((rows[1].first, rows[1].last), (55.0, 110.0));
        // RSS filling a cache until minute 20, flat after: settled, not flat.
        let filling: Vec<Sample> = (0..=60)
            .map(|i| Sample {
                t_s: i as f64 * 60.0,
                rss_mib: 100.0 + 5.0 * f64::from(i.min(20)),
                ..Sample::default()
            })
            .collect();
        let rss = &trends(&filling, 300.0)[0];
        assert!(rss.slope_per_h.unwrap() > 20.0, "{rss:?}");
        assert_eq!(rss.late_slope_per_h, Some(0.0));
        assert_eq!(rss.verdict(), Some(Verdict::Settled));
        // fds closing faster than they open for the whole run: falling, not growing.
        let closing: Vec<Sample> = (0..=60)
            .map(|i| Sample {
                t_s: i as f64 * 60.0,
                fds: 300.0 - f64::from(i),
                ..Sample::default()
            })
            .collect();
        assert_eq!(trends(&closing, 300.0)[1].verdict(), Some(Verdict::Falling));
    }

    #[test]
    fn panics_are_counted_once_in_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(
            &path,
            "ok\nthread 'a' panicked at src/x.rs:1\nthread 'b' pan",
        )
        .unwrap();
        let mut scan = PanicScan::new(path.clone());
        assert_eq!(scan.scan(), 1);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, b"icked at y\nfine\n").unwrap();
        assert_eq!(scan.scan(), 2);
        assert_eq!(scan.scan(), 2);
        assert!(scan.first.unwrap().contains("'a'"));
    }
}
