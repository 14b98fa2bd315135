//! `shopcue shots FILE`: decode a file at `shots.decode_height` and list its shots.
//! The decoding goes through `media` (the only module touching GStreamer); detection is the
//! pure [`ShotDetector`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::{Shot, ShotConfig, ShotDetector, ShotEvent};
use crate::config::Settings;
use crate::frame::{Frame, rfc3339_ms};
use crate::media::{FrameSource, MediaError, Pipelines};

#[derive(clap::Args, Debug, Clone)]
pub struct ShotsArgs {
    /// Video file to analyse.
    pub input: PathBuf,
    /// Decode height in lines (default: `shots.decode_height`).
    #[arg(long)]
    pub height: Option<u32>,
    /// Print the shots as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What decoding and analysing one file gave.
#[derive(Debug, Clone)]
pub struct FileShots {
    /// Closed shots, in order.
    pub shots: Vec<Shot>,
    pub frames: u64,
    pub width: u32,
    pub height: u32,
    /// Wall time of the whole run, decoding included.
    pub elapsed: Duration,
    /// Time spent inside the detector (`push` and `finish`).
    pub detecting: Duration,
    /// Frames whose picture the detector could not read.
    pub malformed: u64,
}

impl FileShots {
    /// First frames of every shot but the first: the boundaries.
    pub fn boundaries(&self) -> Vec<u64> {
        self.shots.iter().skip(1).map(|s| s.start_frame).collect()
    }
}

/// Decode `path` at `height` lines and run the detector over every frame. Wall-clock
/// times are `anchor` plus each frame's media time.
pub fn detect_file(
    pipelines: &Pipelines,
    path: &Path,
    height: u32,
    queue: usize,
    config: &ShotConfig,
    anchor: DateTime<Utc>,
) -> Result<FileShots, MediaError> {
    let started = Instant::now();
    let mut source = FrameSource::file(pipelines, path, height, queue)?;
    let mut detector = ShotDetector::new(config);
    let mut shots = Vec::new();
    let mut detecting = Duration::ZERO;
    let (mut frames, mut width, mut got_height) = (0u64, 0, 0);
    let mut last_pts = 0u64;
    let collect = |events: Vec<ShotEvent>, shots: &mut Vec<Shot>| {
        shots.extend(events.into_iter().filter_map(|e| match e {
            ShotEvent::Ended(s) => Some(s),
            ShotEvent::Started(_) => None,
        }))
    };
    while let Some(decoded) = source.next_frame()? {
        // A frame without a time stamp keeps the previous one's.
        let pts_ns = decoded.pts_ns.unwrap_or(last_pts);
        last_pts = pts_ns;
        width = decoded.image.width;
        got_height = decoded.image.height;
        let frame = Frame {
            index: frames,
            pts_ns,
            wallclock: anchor + chrono::Duration::nanoseconds(pts_ns.min(i64::MAX as u64) as i64),
            image: decoded.image,
        };
        frames += 1;
        let t = Instant::now();
        let events = detector.push(&frame);
        detecting += t.elapsed();
        collect(events, &mut shots);
    }
    let t = Instant::now();
    let events = detector.finish();
    detecting += t.elapsed();
    collect(events, &mut shots);
    Ok(FileShots {
        shots,
        frames,
        width,
        height: got_height,
        elapsed: started.elapsed(),
        detecting,
        malformed: detector.malformed_frames(),
    })
}

/// Entry point of `shopcue shots`.
pub fn run(args: &ShotsArgs, settings: &Settings) -> anyhow::Result<()> {
    let mut config = settings.shots.clone();
    if let Some(h) = args.height {
        config.decode_height = h;
        config
            .validate()
            .map_err(|(key, why)| anyhow::anyhow!("--height: shots.{key} {why}"))?;
    }
    let pipelines = Pipelines::new(&settings.media.pipelines_dir);
    let result = detect_file(
        &pipelines,
        &args.input,
        config.decode_height,
        settings.media.frame_queue,
        &config,
        Utc::now(),
    )
    .with_context(|| format!("finding shots in {}", args.input.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result.shots)?);
        return Ok(());
    }
    println!("| shot | first frame | last frame | start | end | began with |");
    println!("|---:|---:|---:|---|---|---|");
    for s in &result.shots {
        println!(
            "| {} | {} | {} | {} | {} | {:?} |",
            s.index,
            s.start_frame,
            s.end_frame.unwrap_or(s.start_frame),
            rfc3339_ms(&s.start_wallclock),
            s.end_wallclock.as_ref().map(rfc3339_ms).unwrap_or_default(),
            s.boundary,
        );
    }
    let secs = result.elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "{} frames at {}x{} in {:.2} s ({:.0} frames/s, detection {:.3} ms/frame){}",
        result.frames,
        result.width,
        result.height,
        secs,
        result.frames as f64 / secs,
        result.detecting.as_secs_f64() * 1e3 / result.frames.max(1) as f64,
        if result.malformed > 0 {
            format!(", {} unreadable frames taken as grey", result.malformed)
        } else {
            String::new()
        }
    );
    Ok(())
}
