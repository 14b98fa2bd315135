//! Shot-change detection: pure logic over decoded frames (no I/O, no clocks).
//!
//! Feed every frame in decode order to [`ShotDetector::push`]; it answers with
//! [`ShotEvent`]s as boundaries become certain (a short look-ahead lets it tell a flash
//! from a cut and place one boundary inside a gradual transition).
//!
//! How it decides (features in [`features`]: a colour histogram and a 32×18 luma
//! thumbnail per frame, the same at any picture size):
//!
//! * **Hard cut** at frame `t`: the distance between frames `t-1` and `t` (histogram
//!   distance plus motion-compensated thumbnail distance) is at least `cut_threshold`
//!   and `cut_ratio` times the largest such distance within 5 frames on either side, so
//!   steady fast motion (pans, shake, zooms), whose every frame differs, is no cut.
//! * **Flash**: a jump is no cut when, within `flash_max_frames`, the picture comes back
//!   to what it was before the jump (a frame before it matches a frame after it); the
//!   bright frames are then ignored by the transition search.
//! * **Gradual transition** (dissolve, fade through black or white, wipe): over a window
//!   of `2 × transition_half_window` frames the pictures at both ends differ by at least
//!   `transition_threshold` more than each end differs from the frames just beyond it,
//!   and the change is a transition, not motion: every thumbnail cell of the frames in
//!   between lies between its values at the two ends (or at a dip to black/white in the
//!   middle), at least half the cells change beyond an exposure change (less is an object
//!   moving through the shot), and a global shift does not explain the frame-to-frame
//!   change. Between two steady shots a smaller change (from 0.4 × the threshold) counts
//!   when it is a clean, gradual blend: a dissolve between similar-looking shots. Exactly
//!   one boundary is placed inside it, where half of the window's excess change has
//!   happened; the window grows over black or white frames so a fade through black is
//!   one transition, not two.
//! * At most one boundary per `min_shot_frames`.
//!
//! Known limits: two hard cuts less than 6 frames apart hide each other (each is then no
//! stand-out jump); slides and pushes (the new picture moving in) look like camera motion
//! and are not found; a large object sweeping over a still shot can pass for a wipe.
//!
//! Look-ahead: a hard cut is reported when the frame `max(5, flash_max_frames)` after it
//! arrives; a gradual transition is decided `max(h/2 + h + ⌈3h/5⌉ + 2, h + ⌈3h/5⌉ +
//! max(5, flash_max_frames))` frames after the centre of its window (h =
//! `transition_half_window`; 24 frames with the defaults), and its boundary lies at most
//! `h + 2` frames before that centre. So a `Started` event comes at most
//! [`ShotDetector::lookahead_frames`] frames after the shot's first frame was pushed: 36
//! frames with the defaults, 1.44 s at 25 fps, 1.2 s at 30 fps.
//!
//! Pure: no I/O, no clock. `shopcue shots FILE` (the `cli` module) feeds it frames from `ingest`.

pub mod features;

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::frame::Frame;
use features::{Sampler, Signature};

/// Detector settings (`[shots]` in the config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShotConfig {
    /// Shortest shot in frames: no boundary closer than this to the previous one.
    pub min_shot_frames: u32,
    /// Smallest frame-to-frame distance (0..1) that can be a hard cut.
    pub cut_threshold: f32,
    /// A hard cut's distance must be this many times the largest distance among the 5
    /// frames on either side.
    pub cut_ratio: f32,
    /// Longest flash (bright frames that return to the same picture) not taken for a cut.
    pub flash_max_frames: u32,
    /// Smallest excess change (0..1) across a window for a gradual transition.
    pub transition_threshold: f32,
    /// Half the window over which gradual transitions are measured, in frames; longer
    /// transitions are found too (the window sees a part of them). Sets the look-ahead.
    pub transition_half_window: u32,
    /// Height at which the `shots` command decodes a file (the live pipeline uses
    /// `media.analysis_height`); the detector itself works at any size.
    pub decode_height: u32,
}

impl Default for ShotConfig {
    fn default() -> Self {
        Self {
            min_shot_frames: 8,
            cut_threshold: 0.08,
            cut_ratio: 2.5,
            flash_max_frames: 8,
            transition_threshold: 0.2,
            transition_half_window: 10,
            decode_height: 144,
        }
    }
}

impl ShotConfig {
    /// `Err((key, why))` names the offending key inside `[shots]`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, why: &str| Err((k.to_string(), why.to_string()));
        if self.min_shot_frames == 0 {
            return err("min_shot_frames", "must be at least 1");
        }
        if !(self.cut_threshold > 0.0 && self.cut_threshold <= 1.0) {
            return err("cut_threshold", "must be in (0, 1]");
        }
        if !(self.cut_ratio >= 1.0 && self.cut_ratio <= 100.0) {
            return err("cut_ratio", "must be from 1 to 100");
        }
        if self.flash_max_frames > 25 {
            return err("flash_max_frames", "must be at most 25");
        }
        if !(self.transition_threshold > 0.0 && self.transition_threshold <= 1.0) {
            return err("transition_threshold", "must be in (0, 1]");
        }
        if !(4..=25).contains(&self.transition_half_window) {
            return err("transition_half_window", "must be from 4 to 25");
        }
        if !(36..=2160).contains(&self.decode_height) || !self.decode_height.is_multiple_of(2) {
            return err("decode_height", "must be an even number from 36 to 2160");
        }
        Ok(())
    }
}

/// How a shot began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Boundary {
    /// The first frame of the stream.
    Start,
    /// A hard cut: this frame differs abruptly from the previous one.
    Cut,
    /// A frame inside a gradual transition (dissolve, fade, wipe).
    Gradual,
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
    /// What started the shot.
    pub boundary: Boundary,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ShotEvent {
    /// A new shot begins at this frame.
    Started(Shot),
    /// The shot is over; its end fields are set.
    Ended(Shot),
}

// Fixed parts of the method (see the module documentation); the tunable ones are in
// `ShotConfig`.
/// Frames on each side whose distances a hard cut must stand out from.
const CUT_CONTEXT: u64 = 5;
/// A frame after a jump "returns" when it is this close to a frame before it, relative
/// to the jump.
const FLASH_RETURN: f32 = 0.5;
/// Frames a window end may move to step over flash or blank frames.
const END_SLACK: u64 = 2;
/// A thumbnail with less contrast than this (levels) is blank: black, white or uniform.
const BLANK_CONTRAST: f32 = 2.0;
/// Inside a fade, frames with less than this share of the far end's contrast are taken
/// as the dip (black/white) and the window grows over them.
const DIP_CONTRAST: f32 = 0.35;
/// How far (frames) a transition window may grow back over a dip.
const DIP_REACH: u64 = 14;
/// Largest betweenness (see `features::betweenness`) of a gradual transition.
const MAX_BETWEENNESS: f32 = 0.3;
/// Smallest share of thumbnail cells a gradual transition changes (gain removed): less
/// is an object moving in a shot.
const MIN_CHANGED: f32 = 0.5;
const CHANGED_LEVELS: f32 = 10.0;
/// Between two steady shots (each end differs from the frames beyond it this many times
/// less than the ends differ from each other) a transition needs only this share of
/// `transition_threshold` (dissolves between similar-looking shots), but must then be a
/// clean blend: betweenness at most `STEADY_BETWEENNESS`, change unexplained by motion
/// at least `STEADY_UNEXPLAINED`.
const STEADY_RATIO: f32 = 5.0;
const STEADY_SHARE: f32 = 0.4;
const STEADY_BETWEENNESS: f32 = 0.1;
const STEADY_UNEXPLAINED: f32 = 0.95;
/// ... and a dissolve, not an edge sweeping over the picture (a wipe, or an object
/// entering a still shot): see `features::abruptness`.
const STEADY_ABRUPTNESS: f32 = 0.4;
/// Smallest share of the frame-to-frame change that a global shift leaves unexplained.
const MIN_UNEXPLAINED: f32 = 0.5;

/// What the detector keeps of each frame.
struct Slot {
    index: u64,
    pts_ns: u64,
    wallclock: DateTime<Utc>,
    sig: Signature,
    /// Distance to the previous frame (histogram + motion-compensated thumbnail).
    jump: f32,
    /// Motion-compensated and plain thumbnail distances to the previous frame.
    moved: f32,
    plain: f32,
    /// A flash frame or a blank frame: not used as the end of a transition window.
    skip: bool,
    /// A flash frame (not merely blank).
    flash: bool,
    /// Transition window centred here (computed once).
    window: Option<Window>,
}

/// The transition window centred on a frame.
#[derive(Clone, Copy)]
struct Window {
    /// How much more the two ends differ from each other than each from the frames
    /// beyond it.
    excess: f32,
    /// How many times more.
    ratio: f32,
    /// The ends (sequence numbers).
    l: u64,
    r: u64,
}

/// Stateful detector for one stream.
pub struct ShotDetector {
    config: ShotConfig,
    h: u64,
    stable: u64,
    peak: u64,
    cut_delay: u64,
    gradual_delay: u64,
    capacity: usize,
    slots: VecDeque<Slot>,
    /// Sequence number of `slots[0]`.
    base: u64,
    /// Frames pushed so far.
    pushed: u64,
    next_cut: u64,
    next_gradual: u64,
    /// Recent hard cuts (sequence numbers), for the transition search to defer to.
    cuts: VecDeque<u64>,
    last_boundary: u64,
    last_gradual: Option<u64>,
    current: Option<Shot>,
    next_index: u64,
    sampler: Sampler,
    scratch: Signature,
    malformed: u64,
}

impl ShotDetector {
    pub fn new(config: &ShotConfig) -> Self {
        let h = config.transition_half_window.max(1) as u64;
        let stable = (3 * h).div_ceil(5);
        let peak = h / 2;
        let cut_delay = CUT_CONTEXT.max(config.flash_max_frames as u64);
        let gradual_delay = (peak + h + stable + END_SLACK).max(h + stable + cut_delay);
        let capacity =
            (gradual_delay + h + DIP_REACH + stable + END_SLACK + cut_delay + CUT_CONTEXT + 8)
                as usize;
        Self {
            config: config.clone(),
            h,
            stable,
            peak,
            cut_delay,
            gradual_delay,
            capacity,
            slots: VecDeque::with_capacity(capacity + 1),
            base: 0,
            pushed: 0,
            next_cut: 1,
            next_gradual: 0,
            cuts: VecDeque::new(),
            last_boundary: 0,
            last_gradual: None,
            current: None,
            next_index: 0,
            sampler: Sampler::default(),
            scratch: Signature::default(),
            malformed: 0,
        }
    }

    pub fn config(&self) -> &ShotConfig {
        &self.config
    }

    /// The most frames that can pass between pushing a shot's first frame and its
    /// `Started` event.
    pub fn lookahead_frames(&self) -> u64 {
        self.gradual_delay + self.h + END_SLACK
    }

    /// Frames between pushing the first frame after a hard cut and its `Started` event
    /// (a frame held back this long is labelled with the right shot unless the boundary
    /// is gradual).
    pub fn cut_lookahead_frames(&self) -> u64 {
        self.cut_delay + 1
    }

    /// Frames whose picture could not be read (data shorter than the size says); they
    /// were taken as grey.
    pub fn malformed_frames(&self) -> u64 {
        self.malformed
    }

    /// Feed the next frame; returns the events that became certain.
    pub fn push(&mut self, frame: &Frame) -> Vec<ShotEvent> {
        let mut events = Vec::new();
        self.scratch.compute(&frame.image, &mut self.sampler);
        if !self.scratch.valid {
            self.malformed += 1;
        }
        let (jump, moved, plain) = match self.slots.back() {
            Some(prev) => {
                let moved = features::motion_distance(&prev.sig, &self.scratch);
                let plain = features::thumb_distance(&prev.sig, &self.scratch);
                (
                    0.5 * features::hist_distance(&prev.sig, &self.scratch) + moved,
                    moved,
                    plain,
                )
            }
            None => (0.0, 0.0, 0.0),
        };
        let slot = Slot {
            index: frame.index,
            pts_ns: frame.pts_ns,
            wallclock: frame.wallclock,
            sig: self.scratch.clone(),
            jump,
            moved,
            plain,
            skip: self.scratch.contrast < BLANK_CONTRAST,
            flash: false,
            window: None,
        };
        if self.slots.len() == self.capacity {
            self.slots.pop_front();
            self.base += 1;
        }
        self.slots.push_back(slot);
        self.pushed += 1;
        if self.current.is_none() {
            let shot = self.shot_at(0, Boundary::Start);
            events.push(ShotEvent::Started(shot.clone()));
            self.current = Some(shot);
        }
        self.decide(self.pushed - 1, self.pushed - 1, &mut events);
        events
    }

    /// End of stream: decides what the look-ahead still held and closes the open shot.
    pub fn finish(&mut self) -> Vec<ShotEvent> {
        let mut events = Vec::new();
        if self.pushed == 0 {
            return events;
        }
        let last = self.pushed - 1;
        for now in last + 1..=last + self.gradual_delay {
            self.decide(now, last, &mut events);
        }
        if let Some(mut shot) = self.current.take() {
            let s = self.slot(last);
            shot.end_frame = Some(s.index);
            shot.end_pts_ns = Some(s.pts_ns);
            shot.end_wallclock = Some(s.wallclock);
            events.push(ShotEvent::Ended(shot));
        }
        events
    }

    /// Run the decisions that are due when frame `now` is (or would be) the newest;
    /// `avail` is the newest frame that exists. Cuts first: a transition window defers
    /// to every cut up to `now - cut_delay`.
    fn decide(&mut self, now: u64, avail: u64, events: &mut Vec<ShotEvent>) {
        while self.next_cut + self.cut_delay <= now {
            let t = self.next_cut;
            self.next_cut += 1;
            if t <= avail && self.is_cut(t, avail) {
                self.cuts.push_back(t);
                if self.cuts.len() > 64 {
                    self.cuts.pop_front();
                }
                self.boundary(t, Boundary::Cut, events);
            }
        }
        while self.next_gradual + self.gradual_delay <= now {
            let t = self.next_gradual;
            self.next_gradual += 1;
            if let Some(b) = self.gradual_at(t, avail, now) {
                self.last_gradual = Some(b);
                self.boundary(b, Boundary::Gradual, events);
            }
        }
    }

    fn slot(&self, seq: u64) -> &Slot {
        &self.slots[(seq - self.base) as usize]
    }

    fn slot_mut(&mut self, seq: u64) -> &mut Slot {
        &mut self.slots[(seq - self.base) as usize]
    }

    fn shot_at(&mut self, seq: u64, boundary: Boundary) -> Shot {
        let s = self.slot(seq);
        let shot = Shot {
            index: self.next_index,
            start_frame: s.index,
            start_pts_ns: s.pts_ns,
            start_wallclock: s.wallclock,
            end_frame: None,
            end_pts_ns: None,
            end_wallclock: None,
            boundary,
        };
        self.next_index += 1;
        shot
    }

    /// A new shot starts at `seq`, unless it is too close to the previous start.
    fn boundary(&mut self, seq: u64, kind: Boundary, events: &mut Vec<ShotEvent>) {
        if seq < self.last_boundary + self.config.min_shot_frames as u64 || seq < self.base + 1 {
            return;
        }
        self.last_boundary = seq;
        if let Some(mut shot) = self.current.take() {
            let prev = self.slot(seq - 1);
            shot.end_frame = Some(prev.index);
            shot.end_pts_ns = Some(prev.pts_ns);
            shot.end_wallclock = Some(prev.wallclock);
            events.push(ShotEvent::Ended(shot));
        }
        let shot = self.shot_at(seq, kind);
        events.push(ShotEvent::Started(shot.clone()));
        self.current = Some(shot);
    }

    /// Distance used for jumps and flash returns: histogram + motion-compensated thumbnail.
    fn jump_distance(&self, a: u64, b: u64) -> f32 {
        let (x, y) = (&self.slot(a).sig, &self.slot(b).sig);
        0.5 * features::hist_distance(x, y) + features::motion_distance(x, y)
    }

    /// Distance across a window: histogram + plain thumbnail (motion over many frames is
    /// beyond any small shift).
    fn span_distance(&self, a: u64, b: u64) -> f32 {
        let (x, y) = (&self.slot(a).sig, &self.slot(b).sig);
        0.5 * features::hist_distance(x, y) + features::thumb_distance(x, y)
    }

    fn is_cut(&mut self, t: u64, avail: u64) -> bool {
        let jump = self.slot(t).jump;
        if jump < self.config.cut_threshold {
            return false;
        }
        let lo = t.saturating_sub(CUT_CONTEXT).max(self.base + 1);
        let hi = (t + CUT_CONTEXT).min(avail);
        let before = (lo..t).map(|k| self.slot(k).jump).fold(0.0f32, f32::max);
        let after = (t + 1..=hi)
            .map(|k| self.slot(k).jump)
            .fold(0.0f32, f32::max);
        let ratio = self.config.cut_ratio;
        // Stands out on neither side: steady motion. Worth no further look.
        if jump < ratio * before.min(after) {
            return false;
        }
        if let Some((i, j)) = self.flash_around(t, avail, jump) {
            for k in i + 1..j {
                let s = self.slot_mut(k);
                s.skip = true;
                s.flash = true;
            }
            return false;
        }
        jump >= ratio * before.max(after)
    }

    /// The closest pair of frames around the jump into `t` (one before, one after, at most
    /// `flash_max_frames` apart inside) that match: the picture came back.
    fn flash_around(&self, t: u64, avail: u64, jump: f32) -> Option<(u64, u64)> {
        let longest = self.config.flash_max_frames as u64;
        for span in 2..=longest + 1 {
            for back in 1..=span {
                // i = t - back is before the jump, j = i + span at or after it (j = t: the
                // jump is the way back out of a flash).
                let Some(i) = t.checked_sub(back) else { break };
                let j = i + span;
                if i < self.base || j < t || j > avail {
                    continue;
                }
                if self.jump_distance(i, j) < FLASH_RETURN * jump {
                    return Some((i, j));
                }
            }
        }
        None
    }

    /// The transition window centred on `t`.
    fn window(&mut self, t: u64, avail: u64) -> Option<Window> {
        let h = self.h;
        if t < self.base + h || t + h > avail {
            return None;
        }
        if let Some(w) = self.slot(t).window {
            return Some(w);
        }
        let mut l = t - h;
        let floor = l.saturating_sub(END_SLACK).max(self.base);
        while l > floor && self.slot(l).skip {
            l -= 1;
        }
        let mut r = t + h;
        let ceil = (r + END_SLACK).min(avail);
        while r < ceil && self.slot(r).skip {
            r += 1;
        }
        let l2 = l.saturating_sub(self.stable).max(self.base);
        let r2 = (r + self.stable).min(avail);
        let across = self.span_distance(l, r);
        let before = if l > l2 {
            self.span_distance(l2, l)
        } else {
            0.0
        };
        let after = if r2 > r {
            self.span_distance(r, r2)
        } else {
            0.0
        };
        let beyond = before.max(after);
        let w = Window {
            excess: across - beyond,
            ratio: across / (beyond + 0.005),
            l,
            r,
        };
        self.slot_mut(t).window = Some(w);
        Some(w)
    }

    /// Decide whether the window centred on `t` holds a gradual transition; returns the
    /// boundary frame.
    fn gradual_at(&mut self, t: u64, avail: u64, now: u64) -> Option<u64> {
        let (h, stable, peak) = (self.h, self.stable, self.peak);
        let Window {
            excess: score,
            ratio,
            l,
            r,
        } = self.window(t, avail)?;
        // Strong enough, or weaker between two steady shots (similar-looking shots).
        let threshold = self.config.transition_threshold;
        if score < threshold && (score < STEADY_SHARE * threshold || ratio < STEADY_RATIO) {
            return None;
        }
        for k in t.saturating_sub(peak)..=t + peak {
            if k != t && self.window(k, avail).is_some_and(|w| w.excess > score) {
                return None;
            }
        }
        // A hard cut close by explains the change.
        if self
            .cuts
            .iter()
            .any(|&c| c + h + stable >= t && c <= t + h + stable)
        {
            return None;
        }
        // Grow the window over a dip to black or white so both ends show real pictures.
        let (mut l, mut r) = (l, r);
        let reach = (t + self.gradual_delay).min(avail).min(now);
        while r < reach && self.dip(r, self.slot(l).sig.contrast) {
            r += 1;
        }
        let floor = t
            .saturating_sub(h + DIP_REACH)
            .max(self.base)
            .max(self.last_boundary);
        while l > floor && self.dip(l, self.slot(r).sig.contrast) {
            l -= 1;
        }
        if let Some(prev) = self.last_gradual {
            // This window reaches back over the previous transition's boundary: the
            // same transition seen again, or too close to it.
            if l < prev {
                return None;
            }
        }
        let strict = score < threshold;
        if !self.is_transition(l, r, strict) {
            return None;
        }
        let b = self.half_change(l, r).unwrap_or(t);
        Some(b.clamp(
            t.saturating_sub(h + END_SLACK).max(l + 1),
            t + h + END_SLACK,
        ))
    }

    /// Frame `k` is blank, a flash, or much flatter than a picture of contrast `reference`.
    fn dip(&self, k: u64, reference: f32) -> bool {
        let s = self.slot(k);
        s.skip || s.sig.contrast < BLANK_CONTRAST.max(DIP_CONTRAST * reference)
    }

    /// The frames from `l` to `r` look like a transition, not motion (`strict`: a clean
    /// blend).
    fn is_transition(&self, l: u64, r: u64, strict: bool) -> bool {
        let (max_betweenness, min_unexplained) = if strict {
            (STEADY_BETWEENNESS, STEADY_UNEXPLAINED)
        } else {
            (MAX_BETWEENNESS, MIN_UNEXPLAINED)
        };
        let (a, b) = (&self.slot(l).sig, &self.slot(r).sig);
        if features::changed_fraction(a, b, CHANGED_LEVELS) < MIN_CHANGED {
            return false;
        }
        let (mut moved, mut plain) = (0.0, 0.0);
        for k in l + 1..=r {
            moved += self.slot(k).moved;
            plain += self.slot(k).plain;
        }
        if moved < min_unexplained * (plain + 1e-6) {
            return false;
        }
        if strict {
            let frames: Vec<&Signature> = (l..=r)
                .filter(|&k| k == l || k == r || !self.slot(k).skip)
                .map(|k| &self.slot(k).sig)
                .collect();
            if features::abruptness(&frames, CHANGED_LEVELS) > STEADY_ABRUPTNESS {
                return false;
            }
        }
        self.betweenness(l, r) <= max_betweenness
    }

    /// Betweenness of the usable frames from `l` to `r`: straight from one end to the
    /// other, or through one pivot frame (a dip to black or white), whichever fits best.
    fn betweenness(&self, l: u64, r: u64) -> f32 {
        let frames: Vec<&Signature> = (l..=r)
            .filter(|&k| k == l || k == r || !self.slot(k).skip)
            .map(|k| &self.slot(k).sig)
            .collect();
        let n = frames.len();
        let segment =
            |i: usize, j: usize| features::betweenness(frames[i], frames[j], &frames[i + 1..j]);
        let mut best = segment(0, n - 1);
        if n >= 5 {
            // Pivots worth trying (a full search costs n² thumbnails): the flattest frame
            // (the bottom of a fade to black or white) and the one that strays most from
            // the straight path (a fade through another picture or colour).
            let inner = 2..n - 2;
            let flattest = inner
                .clone()
                .min_by(|&a, &b| frames[a].contrast.total_cmp(&frames[b].contrast));
            let stray =
                |m: usize| features::betweenness(frames[0], frames[n - 1], &frames[m..m + 1]);
            let straying = inner
                .map(|m| (stray(m), m))
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, m)| m);
            for m in [flattest, straying].into_iter().flatten() {
                let v = (segment(0, m) * (m - 1) as f32 + segment(m, n - 1) * (n - m - 2) as f32)
                    / (n - 3) as f32;
                best = best.min(v);
            }
        }
        best
    }

    /// The frame at which half of the window's excess frame-to-frame change has happened
    /// (change above the window's median; jumps into or out of flash frames excluded).
    fn half_change(&self, l: u64, r: u64) -> Option<u64> {
        let weights: Vec<f32> = (l + 1..=r)
            .map(|k| {
                let (s, p) = (self.slot(k), self.slot(k - 1));
                if s.flash || p.flash { 0.0 } else { s.jump }
            })
            .collect();
        let mut sorted: Vec<f32> = (l + 1..=r).map(|k| self.slot(k).jump).collect();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let median = *sorted.get(sorted.len() / 2)?;
        let excess: Vec<f32> = weights.iter().map(|w| (w - median).max(0.0)).collect();
        let total: f32 = excess.iter().sum();
        if total <= 0.0 {
            return None;
        }
        let mut acc = 0.0;
        for (i, e) in excess.iter().enumerate() {
            acc += e;
            if acc >= total / 2.0 {
                return Some(l + 1 + i as u64);
            }
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests;
