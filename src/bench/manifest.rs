//! `shopcue bench manifest`: how long the playlist rewriter takes per request, on a
//! 10-segment and a 1000-segment live media playlist with cues (µs per rewrite, release
//! build). The HTTP-level comparison (wrk against the sidecar and nginx) is separate.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use url::Url;

use shopcue::cue::{BoxSample, Cue};
use shopcue::manifest::{
    ChannelOrigin, CueLedger, ManifestError, RewriteContext, UriMode, rewrite_media_playlist,
};

#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    pub case: String,
    pub segments: usize,
    pub cues: usize,
    pub input_bytes: usize,
    pub output_bytes: usize,
    pub iterations: u32,
    pub micros_per_rewrite: f64,
}

/// A live media playlist of `n` 2-second segments without PDT, with an origin ad marker
/// pair and an origin date range, the way a packager writes them.
pub fn synthetic_playlist(n: usize, first_msn: u64) -> String {
    let mut s = format!(
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{first_msn}\n"
    );
    for i in 0..n {
        let msn = first_msn + i as u64;
        if i == n / 2 {
            s.push_str("#EXT-X-DATERANGE:ID=\"origin-1\",START-DATE=\"2026-11-21T10:00:00.000Z\",X-COM-EXAMPLE=\"1\"\n");
        }
        if i > 0 && i % 300 == 0 {
            s.push_str("#EXT-X-CUE-OUT:DURATION=4\n");
        }
        if i > 0 && i % 300 == 2 {
            s.push_str("#EXT-X-CUE-IN\n");
        }
        s.push_str(&format!("#EXTINF:2.000,\nvideo/720p/seg{msn}.ts\n"));
    }
    s
}

fn epoch() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// One cue every other segment, a third of them closed.
pub fn synthetic_ledger(n: usize, first_msn: u64) -> CueLedger {
    let mut ledger = CueLedger::new(n.max(1) * 2, 10.0);
    let t0 = epoch();
    for i in (0..n).step_by(2) {
        let start = t0 + Duration::milliseconds((first_msn as i64 + i as i64) * 2000 + 500);
        let cue = Cue {
            source: Default::default(),
            id: shopcue::cue::cue_id("bench", i as u64, "sku-42"),
            channel: "bench".into(),
            product_id: format!("sku-{}", i % 97),
            start,
            end: (i % 3 == 0).then(|| start + Duration::milliseconds(1500)),
            pts: i as f64 * 2.0,
            score: 0.75,
            shot: i as u64,
            boxes: vec![BoxSample {
                t: start,
                x: 0.1,
                y: 0.2,
                w: 0.3,
                h: 0.4,
            }],
            product: None,
        };
        // Synthetic cues are valid: ids are hex digests, product ids short.
        let _ = ledger.observe(&cue, cue.end.is_some());
    }
    ledger
}

fn time_case(
    case: &str,
    n: usize,
    mode: UriMode,
    budget: std::time::Duration,
) -> Result<BenchRow, ManifestError> {
    let first_msn = 1000u64;
    let input = synthetic_playlist(n, first_msn);
    let ledger = synthetic_ledger(n, first_msn);
    let ranges = ledger.ranges();
    let anchors: BTreeMap<u64, DateTime<Utc>> = (0..n as u64)
        .map(|i| {
            (
                first_msn + i,
                epoch() + Duration::milliseconds(((first_msn + i) * 2000) as i64),
            )
        })
        .collect();
    let anchor = |msn: u64| anchors.get(&msn).copied();
    let origin = ChannelOrigin::new(
        "https://origin.example/live/bench/master.m3u8",
        "/hls/bench/",
    )?;
    let playlist_url =
        Url::parse("https://origin.example/live/bench/video/720p.m3u8").map_err(|e| {
            ManifestError::BadOriginUrl {
                url: "bench".into(),
                why: e.to_string(),
            }
        })?;
    let ctx = RewriteContext {
        uri_mode: mode,
        pdt_anchor: &anchor,
        cues: &ranges,
        ..RewriteContext::new(&origin, &playlist_url)
    };
    let first = rewrite_media_playlist(&input, &ctx)?;
    let started = Instant::now();
    let mut iterations = 0u32;
    while iterations < 10 || (started.elapsed() < budget && iterations < 1_000_000) {
        let out = rewrite_media_playlist(std::hint::black_box(&input), &ctx)?;
        std::hint::black_box(out.text.len());
        iterations += 1;
    }
    let micros = started.elapsed().as_secs_f64() * 1e6 / iterations as f64;
    Ok(BenchRow {
        case: case.into(),
        segments: n,
        cues: first.dateranges.len(),
        input_bytes: input.len(),
        output_bytes: first.text.len(),
        iterations,
        micros_per_rewrite: micros,
    })
}

/// Runs every case for about `seconds_per_case` and prints a markdown table.
pub fn run_bench(seconds_per_case: f64) -> Result<Vec<BenchRow>, ManifestError> {
    let budget = std::time::Duration::from_secs_f64(seconds_per_case.clamp(0.01, 60.0));
    let rows = vec![
        time_case("10 segments, absolute URIs", 10, UriMode::Absolute, budget)?,
        time_case("10 segments, proxied URIs", 10, UriMode::Proxy, budget)?,
        time_case(
            "1000 segments, absolute URIs",
            1000,
            UriMode::Absolute,
            budget,
        )?,
        time_case("1000 segments, proxied URIs", 1000, UriMode::Proxy, budget)?,
    ];
    println!(
        "| case | segments | date ranges | input bytes | output bytes | rewrites | µs per rewrite |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.1} |",
            r.case,
            r.segments,
            r.cues,
            r.input_bytes,
            r.output_bytes,
            r.iterations,
            r.micros_per_rewrite
        );
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The measurement itself: `cargo test --release --lib bench::manifest -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, run on demand"]
    fn measure() {
        let rows = run_bench(2.0).unwrap();
        assert!(rows.iter().all(|r| r.micros_per_rewrite > 0.0));
    }

    #[test]
    fn bench_runs_and_writes_cues() {
        let rows = run_bench(0.01).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].cues, 5);
        assert!(rows[2].cues >= 490, "{rows:?}");
        assert!(
            rows.iter()
                .all(|r| r.output_bytes > r.input_bytes && r.iterations >= 10)
        );
    }
}
