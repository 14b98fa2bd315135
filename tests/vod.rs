//! VOD playlists for batch work: fMP4 (EXT-X-MAP) and MPEG-TS segments made by ffmpeg from
//! the real footage, served over loopback HTTP; every frame arrives once, in order, and the
//! shot detector finds the ground-truth cuts through the HLS path.

mod common;

use std::process::Command;
use std::time::Duration;

use shopcue::config::Settings;
use shopcue::ingest::{self, IngestOptions, OnError, SourceSpec};
use shopcue::shots::{ShotDetector, ShotEvent};
use tokio_util::sync::CancellationToken;

/// Package the footage as an HLS VOD (`fmp4` or `mpegts` segments) with ffmpeg.
fn package(dir: &std::path::Path, kind: &str) {
    let input = common::footage("intel_concat.mp4");
    let seg = if kind == "fmp4" {
        "seg%d.m4s"
    } else {
        "seg%d.ts"
    };
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-i"])
        .arg(&input)
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "50",
            "-keyint_min",
            "50",
            "-sc_threshold",
            "0",
            "-an",
        ])
        .args([
            "-f",
            "hls",
            "-hls_time",
            "2",
            "-hls_playlist_type",
            "vod",
            "-hls_segment_type",
            kind,
        ])
        .args([
            "-hls_fmp4_init_filename",
            "init.mp4",
            "-hls_segment_filename",
        ])
        .arg(dir.join(seg))
        .arg(dir.join("index.m3u8"))
        .status()
        .expect("ffmpeg runs (scripts/setup.sh installs it)");
    assert!(status.success());
}

async fn cuts_of_vod(kind: &str) -> (u64, Vec<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let k = kind.to_string();
    tokio::task::spawn_blocking(move || package(&path, &k))
        .await
        .unwrap();
    let url = common::serve_dir(dir.path().to_path_buf()).await;
    let mut s = Settings::default();
    s.media.analysis_height = 180;
    let opts = IngestOptions {
        on_error: OnError::Fail,
        ..Default::default()
    };
    let mut ch = ingest::start(
        "vod",
        SourceSpec::parse(&url).unwrap(),
        &s.ingest,
        &s.media,
        opts,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let mut detector = ShotDetector::new(&s.shots);
    let mut starts = Vec::new();
    let mut frames = 0u64;
    let mut last_index = None;
    while let Ok(Some(f)) = tokio::time::timeout(Duration::from_secs(30), ch.frames.recv()).await {
        assert_eq!(
            f.index,
            last_index.map_or(0, |i| i + 1),
            "frames in order, none twice"
        );
        last_index = Some(f.index);
        frames += 1;
        for e in detector.push(&f) {
            if let ShotEvent::Started(shot) = e {
                starts.push(shot.start_frame);
            }
        }
    }
    for e in detector.finish() {
        if let ShotEvent::Started(shot) = e {
            starts.push(shot.start_frame);
        }
    }
    ch.task.await.unwrap().unwrap();
    assert_eq!(
        ch.stats
            .segments_bad
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    (frames, starts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fmp4_vod_with_init_section_decodes_every_frame() {
    let (frames, starts) = cuts_of_vod("fmp4").await;
    assert_eq!(frames, 501);
    assert_eq!(starts, vec![0, 101, 201, 301, 401]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpegts_vod_decodes_every_frame() {
    let (frames, starts) = cuts_of_vod("mpegts").await;
    assert_eq!(frames, 501);
    assert_eq!(starts, vec![0, 101, 201, 301, 401]);
}
