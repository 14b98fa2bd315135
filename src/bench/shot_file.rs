//! Shots of a whole file, decoded at `shots.decode_height`, with timings: the shot
//! benchmark's path (`shopcue shots` itself goes through `ingest` like every source). Kept
//! out of the library so the pure shot detector does not depend on GStreamer.
//! The decoding goes through `media` (the only module touching GStreamer); detection is the
//! pure [`ShotDetector`].

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use shopcue::frame::Frame;
use shopcue::media::{FrameSource, MediaError, Pipelines};
use shopcue::shots::{Shot, ShotConfig, ShotDetector, ShotEvent};

/// What decoding and analysing one file gave.
#[derive(Debug, Clone)]
pub struct FileShots {
    /// Closed shots, in order.
    pub shots: Vec<Shot>,
    pub frames: u64,
    /// Wall time of the whole run, decoding included.
    pub elapsed: Duration,
    /// Time spent inside the detector (`push` and `finish`).
    pub detecting: Duration,
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
    let mut frames = 0u64;
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
        elapsed: started.elapsed(),
        detecting,
    })
}
