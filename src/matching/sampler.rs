//! Which frames go to inference: per shot, the first frame `settle_ms` after the shot's
//! start, then one frame every `interval_ms` (on a grid anchored at the shot start, so a
//! gap in the frames does not cause a burst of samples afterwards).
//!
//! Times are the frames' media time (PTS); nothing reads a clock. Shot events may arrive
//! a little after the frames they cover (the shot detector looks ahead): a shot start
//! learnt late still yields its first sample on the next frame due, and frames older than
//! the newest shot keep belonging to the shot they are in.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};

use crate::frame::Frame;
use crate::matching::MatchingSettings;
use crate::shots::ShotEvent;

/// Shots remembered for frames that arrive after a newer shot was announced.
const SHOTS_KEPT: usize = 4;

/// A frame chosen for inference, with the shot it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleTicket {
    pub shot_index: u64,
    pub frame_index: u64,
    pub pts_ns: u64,
    pub wallclock: DateTime<Utc>,
}

/// Counters of the sampler's decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SamplerStats {
    /// Frames seen.
    pub frames: u64,
    /// Frames chosen for inference.
    pub sampled: u64,
    /// Frames in no known shot (before the first shot event or after a shot's end).
    pub outside_shot: u64,
}

#[derive(Debug, Clone)]
struct Schedule {
    index: u64,
    start_frame: u64,
    /// Last frame, once the shot has ended.
    end_frame: Option<u64>,
    /// PTS of the first sample: shot start + settle.
    first_due_ns: u64,
    next_due_ns: u64,
}

/// Per-channel sampling state.
#[derive(Debug, Clone)]
pub struct Sampler {
    settle_ns: u64,
    interval_ns: u64,
    shots: VecDeque<Schedule>,
    stats: SamplerStats,
}

impl Sampler {
    pub fn new(settings: &MatchingSettings) -> Self {
        Self {
            settle_ns: settings.settle_ms.saturating_mul(1_000_000),
            interval_ns: settings.interval_ms.max(1).saturating_mul(1_000_000),
            shots: VecDeque::with_capacity(SHOTS_KEPT),
            stats: SamplerStats::default(),
        }
    }

    pub fn stats(&self) -> SamplerStats {
        self.stats
    }

    /// Feed every shot event, as the shot detector gives them.
    pub fn on_shot_event(&mut self, event: &ShotEvent) {
        match event {
            ShotEvent::Started(shot) => {
                if self.shots.iter().any(|s| s.index == shot.index) {
                    return;
                }
                let first_due_ns = shot.start_pts_ns.saturating_add(self.settle_ns);
                // Keep the list ordered by start frame, newest last.
                let at = self
                    .shots
                    .iter()
                    .position(|s| s.start_frame > shot.start_frame)
                    .unwrap_or(self.shots.len());
                self.shots.insert(
                    at,
                    Schedule {
                        index: shot.index,
                        start_frame: shot.start_frame,
                        end_frame: None,
                        first_due_ns,
                        next_due_ns: first_due_ns,
                    },
                );
                while self.shots.len() > SHOTS_KEPT {
                    self.shots.pop_front();
                }
            }
            ShotEvent::Ended(shot) => {
                if let Some(s) = self.shots.iter_mut().find(|s| s.index == shot.index) {
                    // An ended shot without an end frame stays open-ended.
                    s.end_frame = shot.end_frame;
                }
            }
        }
    }

    /// Whether the frame `(index, pts_ns)` is sampled; `Some(shot index)` when it is.
    pub fn decide(&mut self, frame_index: u64, pts_ns: u64) -> Option<u64> {
        self.stats.frames += 1;
        let interval = self.interval_ns;
        let Some(shot) = self
            .shots
            .iter_mut()
            .rev()
            .find(|s| s.start_frame <= frame_index)
        else {
            self.stats.outside_shot += 1;
            return None;
        };
        if shot.end_frame.is_some_and(|end| frame_index > end) {
            self.stats.outside_shot += 1;
            return None;
        }
        if pts_ns < shot.next_due_ns {
            return None;
        }
        // Next grid point strictly after this frame.
        let steps = (pts_ns - shot.first_due_ns) / interval + 1;
        shot.next_due_ns = shot
            .first_due_ns
            .saturating_add(steps.saturating_mul(interval));
        self.stats.sampled += 1;
        Some(shot.index)
    }

    /// [`decide`](Self::decide) for a decoded frame, with what inference needs to know.
    pub fn sample(&mut self, frame: &Frame) -> Option<SampleTicket> {
        let shot_index = self.decide(frame.index, frame.pts_ns)?;
        Some(SampleTicket {
            shot_index,
            frame_index: frame.index,
            pts_ns: frame.pts_ns,
            wallclock: frame.wallclock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::I420Image;
    use crate::shots::Shot;
    use chrono::TimeZone;
    use proptest::prelude::*;

    const FRAME_NS: u64 = 40_000_000; // 25 fps

    fn settings(settle_ms: u64, interval_ms: u64) -> MatchingSettings {
        MatchingSettings {
            settle_ms,
            interval_ms,
            ..MatchingSettings::default()
        }
    }

    fn shot(index: u64, start_frame: u64, end_frame: Option<u64>) -> Shot {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap();
        let at = |f: u64| t0 + chrono::Duration::milliseconds(f as i64 * 40);
        Shot {
            index,
            start_frame,
            start_pts_ns: start_frame * FRAME_NS,
            start_wallclock: at(start_frame),
            end_frame,
            end_pts_ns: end_frame.map(|f| f * FRAME_NS),
            end_wallclock: end_frame.map(at),
            boundary: if index == 0 {
                crate::shots::Boundary::Start
            } else {
                crate::shots::Boundary::Cut
            },
        }
    }

    /// Run frames `0..frames` with cuts at `cuts` (events delivered on the cut frame);
    /// returns the sampled frame indices and their shots.
    fn run(s: &MatchingSettings, frames: u64, cuts: &[u64]) -> Vec<(u64, u64)> {
        let mut sampler = Sampler::new(s);
        let mut starts = vec![0];
        starts.extend_from_slice(cuts);
        let mut out = Vec::new();
        for f in 0..frames {
            if let Some(n) = starts.iter().position(|&c| c == f) {
                if n > 0 {
                    sampler.on_shot_event(&ShotEvent::Ended(shot(
                        n as u64 - 1,
                        starts[n - 1],
                        Some(f - 1),
                    )));
                }
                sampler.on_shot_event(&ShotEvent::Started(shot(n as u64, f, None)));
            }
            if let Some(shot) = sampler.decide(f, f * FRAME_NS) {
                out.push((f, shot));
            }
        }
        out
    }

    #[test]
    fn settles_then_samples_on_a_grid_per_shot() {
        // 2 s shots at 25 fps, settle 120 ms, every 250 ms: samples due at 120, 370, 620…
        // ms into each shot → frames 3, 10, 16, 22, 28, 35, 41, 47 (ceil of due / 40 ms).
        let got = run(&settings(120, 250), 100, &[50]);
        let per_shot: Vec<u64> = vec![3, 10, 16, 22, 28, 35, 41, 47];
        let mut want: Vec<(u64, u64)> = per_shot.iter().map(|&f| (f, 0)).collect();
        want.extend(per_shot.iter().map(|&f| (f + 50, 1)));
        assert_eq!(got, want);
    }

    #[test]
    fn zero_settle_samples_the_cut_frame() {
        let got = run(&settings(0, 1000), 60, &[30]);
        assert_eq!(got, vec![(0, 0), (25, 0), (30, 1), (55, 1)]);
    }

    #[test]
    fn nothing_before_the_first_shot_or_after_a_shot_ended() {
        let mut s = Sampler::new(&settings(0, 100));
        assert_eq!(s.decide(0, 0), None);
        s.on_shot_event(&ShotEvent::Started(shot(0, 1, None)));
        assert_eq!(s.decide(1, FRAME_NS), Some(0));
        s.on_shot_event(&ShotEvent::Ended(shot(0, 1, Some(5))));
        assert_eq!(s.decide(6, 6 * FRAME_NS), None);
        assert_eq!(
            s.stats(),
            SamplerStats {
                frames: 3,
                sampled: 1,
                outside_shot: 2
            }
        );
    }

    #[test]
    fn late_shot_event_samples_the_next_frame_due() {
        let mut s = Sampler::new(&settings(40, 250));
        s.on_shot_event(&ShotEvent::Started(shot(0, 0, None)));
        let early: Vec<u64> = (0..10)
            .filter(|&f| s.decide(f, f * FRAME_NS).is_some())
            .collect();
        assert_eq!(early, vec![1, 8]); // 40 ms, then 290 ms
        // The detector reports the cut at frame 10 only at frame 14; meanwhile frames
        // 10..14 count as shot 0, whose next sample is due at 540 ms.
        for f in 10..14 {
            assert_eq!(s.decide(f, f * FRAME_NS), None, "frame {f}");
        }
        s.on_shot_event(&ShotEvent::Ended(shot(0, 0, Some(9))));
        s.on_shot_event(&ShotEvent::Started(shot(1, 10, None)));
        assert_eq!(s.decide(14, 14 * FRAME_NS), Some(1));
        assert_eq!(s.decide(15, 15 * FRAME_NS), None);
    }

    #[test]
    fn frames_of_an_older_shot_keep_their_shot() {
        let mut s = Sampler::new(&settings(0, 1000));
        s.on_shot_event(&ShotEvent::Started(shot(0, 0, None)));
        s.on_shot_event(&ShotEvent::Ended(shot(0, 0, Some(9))));
        s.on_shot_event(&ShotEvent::Started(shot(1, 10, None)));
        // Frames of shot 0 still in the caller's buffer.
        assert_eq!(s.decide(0, 0), Some(0));
        assert_eq!(s.decide(5, 5 * FRAME_NS), None);
        assert_eq!(s.decide(10, 10 * FRAME_NS), Some(1));
    }

    #[test]
    fn a_gap_in_frames_gives_one_sample_not_a_burst() {
        let mut s = Sampler::new(&settings(0, 100));
        s.on_shot_event(&ShotEvent::Started(shot(0, 0, None)));
        assert_eq!(s.decide(0, 0), Some(0));
        // One second of frames lost, then frames every 40 ms again.
        let sampled: Vec<u64> = (25..30)
            .filter(|&f| s.decide(f, f * FRAME_NS).is_some())
            .collect();
        assert_eq!(sampled, vec![25, 28]); // 1000 ms, then the next 100 ms grid point 1100
    }

    #[test]
    fn duplicate_start_is_ignored_and_sample_carries_the_frame() {
        let mut s = Sampler::new(&settings(0, 500));
        s.on_shot_event(&ShotEvent::Started(shot(0, 0, None)));
        s.on_shot_event(&ShotEvent::Started(shot(0, 0, None)));
        let t = Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap();
        let frame = Frame {
            index: 0,
            pts_ns: 0,
            wallclock: t,
            image: I420Image::filled(4, 4, 0, 128, 128),
        };
        let ticket = s.sample(&frame).unwrap();
        assert_eq!(
            ticket,
            SampleTicket {
                shot_index: 0,
                frame_index: 0,
                pts_ns: 0,
                wallclock: t
            }
        );
        assert_eq!(s.sample(&frame), None);
    }

    proptest! {
        /// Exact model: a frame is sampled iff a grid point (shot start + settle + k ×
        /// interval) lies in (previous frame's PTS, its PTS] — or, for a shot's first
        /// frame, at or before its PTS. Hence one sample per grid point reached, none
        /// before the settle, none outside the shot.
        #[test]
        fn one_sample_per_grid_point(
            settle in 0u64..500,
            interval in 1u64..800,
            cuts in proptest::collection::btree_set(1u64..400, 0..8),
        ) {
            let cuts: Vec<u64> = cuts.into_iter().collect();
            let got = run(&settings(settle, interval), 400, &cuts);
            let mut starts = vec![0];
            starts.extend(&cuts);
            let mut want = Vec::new();
            for (n, &start) in starts.iter().enumerate() {
                let end = starts.get(n + 1).copied().unwrap_or(400);
                // Grid points reached by a frame `offset` ms into the shot.
                let reached = |offset: i64| -> i64 {
                    if offset < settle as i64 { 0 } else { (offset - settle as i64) / interval as i64 + 1 }
                };
                for f in start..end {
                    let off = ((f - start) * 40) as i64;
                    let before = if f == start { 0 } else { reached(off - 40) };
                    if reached(off) > before {
                        want.push((f, n as u64));
                    }
                }
            }
            prop_assert_eq!(got, want);
        }
    }
}
