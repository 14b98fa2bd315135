//! Ingest benchmark: real-time factor (processing time / media time) of decode + shot
//! detection per channel at 640x360 and 1280x720 H.264, and how many live channels this
//! machine sustains at once (each following its own live test origin).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use shopcue::config::Settings;
use shopcue::file_origin::{LiveOrigin, SourceSegment};
use shopcue::frame::Frame;
use shopcue::ingest::{self, IngestOptions, SourceSpec};
use shopcue::media::{self, Pipelines, SegmentDecoder};
use shopcue::shots::ShotDetector;

/// One encoded test rendition.
#[derive(Clone)]
pub struct Rendition {
    pub label: String,
    pub fps: u32,
    pub segments: Vec<SourceSegment>,
    pub width: u32,
    pub height: u32,
}

/// Encode `input` as 2-second H.264 TS segments at `size` and `fps`.
pub fn rendition(input: &Path, size: (u32, u32), fps: u32) -> anyhow::Result<Rendition> {
    let dir = tempfile::tempdir()?;
    let kbps = if size.1 >= 720 { 3000 } else { 1200 };
    let files = media::encode_segments_as(input, dir.path(), 2.0, fps, kbps, Some(size))?;
    let mut decoder = SegmentDecoder::new(Pipelines::default(), 16, Duration::from_secs(60))?;
    let mut segments = Vec::new();
    for f in files {
        let data = Bytes::from(std::fs::read(&f)?);
        let mut frames = 0usize;
        decoder.decode("bench segment", None, data.clone(), |_| frames += 1)?;
        segments.push(SourceSegment {
            data,
            duration: frames as f64 / fps as f64,
        });
    }
    Ok(Rendition {
        label: format!("{}x{} {} fps", size.0, size.1, fps),
        fps,
        segments,
        width: size.0,
        height: size.1,
    })
}

pub struct RtfRow {
    pub rendition: String,
    pub media_s: f64,
    pub decode_s: f64,
    pub shots_s: f64,
    pub rtf: f64,
    pub fps: f64,
}

/// Decode every segment (as live ingest does: one segment at a time, at the analysis
/// height) and run shot detection on every frame.
pub fn realtime_factor(r: &Rendition, settings: &Settings) -> anyhow::Result<RtfRow> {
    let mut decoder = SegmentDecoder::new(
        Pipelines::default(),
        settings.media.analysis_height,
        Duration::from_secs(60),
    )?;
    let mut detector = ShotDetector::new(&settings.shots);
    let (mut decode, mut shots, mut media_s, mut frames) =
        (Duration::ZERO, Duration::ZERO, 0.0, 0u64);
    for seg in &r.segments {
        let mut decoded = Vec::new();
        let t = Instant::now();
        decoder.decode("bench", None, seg.data.clone(), |f| decoded.push(f))?;
        decode += t.elapsed();
        let t = Instant::now();
        for d in decoded {
            let frame = Frame {
                index: frames,
                pts_ns: frames * 1_000_000_000 / r.fps as u64,
                wallclock: chrono::Utc::now(),
                image: d.image,
            };
            frames += 1;
            detector.push(&frame);
        }
        shots += t.elapsed();
        media_s += seg.duration;
    }
    let total = decode + shots;
    Ok(RtfRow {
        rendition: r.label.clone(),
        media_s,
        decode_s: decode.as_secs_f64(),
        shots_s: shots.as_secs_f64(),
        rtf: total.as_secs_f64() / media_s,
        fps: frames as f64 / total.as_secs_f64(),
    })
}

pub struct LiveRow {
    pub channels: usize,
    pub frames_per_channel_min: u64,
    pub expected_frames: u64,
    pub skipped: u64,
    pub max_lag_s: f64,
    pub sustained: bool,
}

/// Run `n` live channels (each its own looping origin of `r` on loopback) for `secs`,
/// decoding and detecting shots on every frame; sustained when none falls behind.
pub async fn live_channels(
    r: &Rendition,
    n: usize,
    secs: f64,
    settings: &Settings,
) -> anyhow::Result<LiveRow> {
    let cancel = CancellationToken::new();
    let mut handles = Vec::new();
    for i in 0..n {
        let origin = Arc::new(LiveOrigin::from_segments(
            r.segments.clone(),
            6,
            true,
            r.width,
            r.height,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/live/index.m3u8", listener.local_addr()?);
        let c = cancel.clone();
        tokio::spawn(shopcue::http::file_origin::serve(
            listener,
            origin,
            async move { c.cancelled().await },
        ));
        let ch = ingest::start(
            &format!("bench{i}"),
            SourceSpec::parse(&url)?,
            &settings.ingest,
            &settings.media,
            IngestOptions::default(),
            cancel.clone(),
        )
        .await?;
        let shots_cfg = settings.shots.clone();
        let stats = ch.stats.clone();
        let mut frames_rx = ch.frames;
        let counter = tokio::task::spawn_blocking(move || {
            let mut detector = ShotDetector::new(&shots_cfg);
            let mut count = 0u64;
            while let Some(f) = frames_rx.blocking_recv() {
                detector.push(&f);
                count += 1;
            }
            count
        });
        handles.push((stats, counter));
    }
    let started = Instant::now();
    let mut max_lag: f64 = 0.0;
    // Let the first segments arrive, then watch the lag.
    tokio::time::sleep(Duration::from_secs(4)).await;
    while started.elapsed().as_secs_f64() < secs {
        for (stats, _) in &handles {
            if let Some(l) = stats.lag_seconds() {
                max_lag = max_lag.max(l);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    cancel.cancel();
    let mut min_frames = u64::MAX;
    let mut skipped = 0;
    for (stats, counter) in handles {
        skipped += stats.segments_skipped.load(Ordering::Relaxed)
            + stats.segments_lost.load(Ordering::Relaxed);
        min_frames = min_frames.min(counter.await.unwrap_or(0));
    }
    let expected = ((secs - 2.0) * r.fps as f64) as u64;
    // Live: a channel keeps up when it never drops segments and its newest frame stays
    // within two segments of the live edge.
    let sustained = skipped == 0 && max_lag < 2.0 * 2.0 + 0.5 && min_frames >= expected;
    Ok(LiveRow {
        channels: n,
        frames_per_channel_min: min_frames,
        expected_frames: expected,
        skipped,
        max_lag_s: max_lag,
        sustained,
    })
}

/// The whole ingest benchmark; prints markdown tables.
pub async fn run_bench(
    input: &Path,
    settings: &Settings,
    live_secs: f64,
    max_channels: usize,
) -> anyhow::Result<()> {
    let input = input.to_path_buf();
    let renditions = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Rendition>> {
        Ok(vec![
            rendition(&input, (640, 360), 25)?,
            rendition(&input, (1280, 720), 30)?,
        ])
    })
    .await??;
    println!(
        "## Real-time factor per channel (decode to {}p + shot detection, one segment at a time)\n",
        settings.media.analysis_height
    );
    println!("| rendition | media s | decode s | shots s | real-time factor | frames/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &renditions {
        let row = {
            let settings = settings.clone();
            let r2 = r.clone();
            tokio::task::spawn_blocking(move || realtime_factor(&r2, &settings)).await??
        };
        println!(
            "| {} | {:.1} | {:.2} | {:.3} | {:.3} | {:.0} |",
            row.rendition, row.media_s, row.decode_s, row.shots_s, row.rtf, row.fps
        );
    }
    let r720 = &renditions[1];
    println!(
        "\n## Live channels at once ({}, each from its own loopback origin, {live_secs:.0} s)\n",
        r720.label
    );
    println!(
        "| channels | frames/channel (min) | expected | segments skipped/lost | max lag behind live edge s | sustained |"
    );
    println!("|---:|---:|---:|---:|---:|---|");
    let mut n = 1;
    while n <= max_channels {
        let row = live_channels(r720, n, live_secs, settings).await?;
        println!(
            "| {} | {} | {} | {} | {:.2} | {} |",
            row.channels,
            row.frames_per_channel_min,
            row.expected_frames,
            row.skipped,
            row.max_lag_s,
            if row.sustained { "yes" } else { "no" }
        );
        if !row.sustained {
            break;
        }
        n = if n < 4 { n * 2 } else { n + 2 };
    }
    Ok(())
}
