//! The test origin: a looping, sliding-window live HLS channel made from a video file, with
//! EXT-X-PROGRAM-DATE-TIME, a media sequence and a discontinuity at each loop. Tests and the
//! demo point shopcue at it; faults (errors, stalls, garbage, restarts) can be injected.
//! The timeline is pure ([`Timeline`]); `http::file_origin` serves it.
//!
//! With parts ([`LiveOrigin::with_parts`]) it is a Low-Latency HLS origin (RFC 8216bis
//! §4.4.4.9, §6.2.5.2): each segment is also published as it is made, in partial segments
//! (`EXT-X-PART`, cut at frame boundaries), listed for the newest segments and for the one
//! in progress, with `EXT-X-PRELOAD-HINT` for the next part; playlist requests with
//! `_HLS_msn`/`_HLS_part` block until that part is listed (`CAN-BLOCK-RELOAD=YES`), and a
//! request for the hinted part waits until it is made.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::media::{self, MediaError, Pipelines, SegmentDecoder};

#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("origin input {path}: {source}")]
    Media { path: String, source: MediaError },
    #[error("origin: {0}")]
    Io(String),
}

/// One encoded segment of the source file.
#[derive(Debug, Clone)]
pub struct SourceSegment {
    pub data: Bytes,
    pub duration: f64,
}

/// The looping live timeline: which segments are in the window at a given elapsed time.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub durations: Vec<f64>,
    pub window: usize,
    /// Wall clock of media time 0.
    pub epoch: DateTime<Utc>,
    pub with_pdt: bool,
    /// Added to every media sequence number (an origin that jumps ahead).
    pub msn_offset: u64,
    cumulative: Vec<f64>,
    loop_len: f64,
    /// LL-HLS: the part durations of each source segment, and the part target.
    parts: Option<(Vec<Vec<f64>>, f64)>,
}

/// Where a blocking playlist request (`_HLS_msn`, `_HLS_part`) stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Blocking {
    /// Listed already, or listed after this many seconds.
    Wait(f64),
    /// Too far in the future (RFC 8216bis §6.2.5.2: answer 400).
    TooFar,
}

/// Segments whose parts stay listed (about three target durations, §4.4.4.9).
const PART_SEGMENTS: u64 = 3;

impl Timeline {
    pub fn new(durations: Vec<f64>, window: usize, epoch: DateTime<Utc>, with_pdt: bool) -> Self {
        let mut cumulative = Vec::with_capacity(durations.len());
        let mut acc = 0.0;
        for d in &durations {
            cumulative.push(acc);
            acc += d;
        }
        Self {
            durations,
            window: window.max(1),
            epoch,
            with_pdt,
            msn_offset: 0,
            cumulative,
            loop_len: acc,
            parts: None,
        }
    }

    /// List `parts` (durations, per source segment) too: a Low-Latency HLS playlist.
    pub fn with_parts(mut self, parts: Vec<Vec<f64>>) -> Self {
        let target = parts.iter().flatten().cloned().fold(0.0, f64::max);
        // Part durations are stated to the millisecond; the target covers all of them.
        let target = (target * 1000.0).ceil() / 1000.0;
        self.parts = Some((parts, target));
        self
    }

    /// The part target duration, when the playlist lists parts.
    pub fn part_target(&self) -> Option<f64> {
        self.parts.as_ref().map(|p| p.1)
    }

    /// Part durations of segment `n` (empty without parts).
    pub fn parts_of(&self, n: u64) -> &[f64] {
        match &self.parts {
            Some((p, _)) => &p[(n % self.count()) as usize],
            None => &[],
        }
    }

    /// Seconds after the epoch at which part `k` of segment `n` is complete (`None`: the
    /// whole segment).
    pub fn available_at(&self, n: u64, k: Option<usize>) -> f64 {
        match k {
            Some(k) => self.start_of(n) + self.parts_of(n).iter().take(k + 1).sum::<f64>(),
            None => self.start_of(n) + self.duration_of(n),
        }
    }

    /// Parts of the segment in progress complete `elapsed` seconds after the epoch.
    pub fn parts_done(&self, elapsed: f64) -> usize {
        let n = self.complete(elapsed);
        let parts = self.parts_of(n);
        (0..parts.len())
            .take_while(|&k| self.available_at(n, Some(k)) <= elapsed + 1e-9)
            .count()
    }

    /// How long a playlist request blocking on segment `msn` (before the jump offset),
    /// part `part` waits at `elapsed`.
    pub fn blocking(&self, msn: u64, part: Option<usize>, elapsed: f64) -> Blocking {
        let complete = self.complete(elapsed);
        if msn > complete + 1 {
            return Blocking::TooFar;
        }
        let parts = self.parts_of(msn).len();
        let at = match part {
            // A part past the segment's last means the next segment's first.
            Some(k) if k >= parts => self.available_at(msn + 1, Some(0)),
            Some(k) => self.available_at(msn, Some(k)),
            None => self.available_at(msn, None),
        };
        Blocking::Wait((at - elapsed).max(0.0))
    }

    fn count(&self) -> u64 {
        self.durations.len() as u64
    }

    /// Media time at which segment `n` (0-based, before the offset) starts.
    pub fn start_of(&self, n: u64) -> f64 {
        (n / self.count()) as f64 * self.loop_len + self.cumulative[(n % self.count()) as usize]
    }

    pub fn duration_of(&self, n: u64) -> f64 {
        self.durations[(n % self.count()) as usize]
    }

    /// How many segments are complete `elapsed` seconds after the epoch.
    pub fn complete(&self, elapsed: f64) -> u64 {
        if elapsed <= 0.0 || self.loop_len <= 0.0 {
            return 0;
        }
        let loops = (elapsed / self.loop_len).floor() as u64;
        let rest = elapsed - loops as f64 * self.loop_len;
        let within = self
            .cumulative
            .iter()
            .zip(&self.durations)
            .take_while(|(c, d)| *c + *d <= rest + 1e-9)
            .count() as u64;
        loops * self.count() + within
    }

    /// Seconds of media the full window holds at the start.
    pub fn initial_fill(&self) -> f64 {
        (0..self.window as u64).map(|n| self.duration_of(n)).sum()
    }

    /// The media playlist `elapsed` seconds after the epoch; `uri(n, None)` names segment
    /// n, `uri(n, Some(k))` its part k.
    pub fn playlist(&self, elapsed: f64, uri: impl Fn(u64, Option<usize>) -> String) -> String {
        let complete = self.complete(elapsed);
        let first = complete.saturating_sub(self.window as u64);
        let target = self
            .durations
            .iter()
            .cloned()
            .fold(0.0, f64::max)
            .ceil()
            .max(1.0) as u64;
        let disc_seq = if first == 0 {
            0
        } else {
            (first - 1) / self.count()
        };
        let version = if self.parts.is_some() { 9 } else { 3 };
        let mut out =
            format!("#EXTM3U\n#EXT-X-VERSION:{version}\n#EXT-X-TARGETDURATION:{target}\n");
        if let Some(part_target) = self.part_target() {
            out.push_str(&format!(
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}\n#EXT-X-PART-INF:PART-TARGET={part_target:.3}\n",
                3.0 * part_target
            ));
        }
        out.push_str(&format!(
            "#EXT-X-MEDIA-SEQUENCE:{}\n#EXT-X-DISCONTINUITY-SEQUENCE:{disc_seq}\n",
            first + self.msn_offset
        ));
        let list_parts = |out: &mut String, n: u64, count: usize| {
            for (k, d) in self.parts_of(n).iter().take(count).enumerate() {
                out.push_str(&format!(
                    "#EXT-X-PART:DURATION={d:.3},URI=\"{}\"{}\n",
                    uri(n + self.msn_offset, Some(k)),
                    if k == 0 { ",INDEPENDENT=YES" } else { "" }
                ));
            }
        };
        for n in first..complete {
            if n > 0 && n % self.count() == 0 {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if n + PART_SEGMENTS >= complete {
                list_parts(&mut out, n, usize::MAX);
            }
            if self.with_pdt {
                let t = self.epoch
                    + chrono::Duration::nanoseconds((self.start_of(n) * 1e9).round() as i64);
                out.push_str(&format!(
                    "#EXT-X-PROGRAM-DATE-TIME:{}\n",
                    crate::frame::rfc3339_ms(&t)
                ));
            }
            out.push_str(&format!(
                "#EXTINF:{:.3},\n{}\n",
                self.duration_of(n),
                uri(n + self.msn_offset, None)
            ));
        }
        if self.parts.is_some() {
            // The segment in progress: its parts so far, and a hint at the next one.
            let n = complete;
            let done = self.parts_done(elapsed);
            if n > 0 && n.is_multiple_of(self.count()) && done > 0 {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            list_parts(&mut out, n, done);
            let (hn, hk) = if done < self.parts_of(n).len() {
                (n, done)
            } else {
                (n + 1, 0)
            };
            out.push_str(&format!(
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"\n",
                uri(hn + self.msn_offset, Some(hk))
            ));
        }
        out
    }
}

/// Faults a test can inject into the origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// The next `count` playlist requests answer `status`.
    PlaylistStatus { status: u16, count: u32 },
    /// The next `count` playlist requests get a malformed playlist.
    PlaylistMalformed { count: u32 },
    /// The playlist stops moving for `seconds`.
    PlaylistStall { seconds: f64 },
    /// The next `count` requests for segment `msn` answer `status`.
    SegmentStatus { msn: u64, status: u16, count: u32 },
    /// Segment `msn` is garbage (random bytes) on every request.
    SegmentGarbage { msn: u64 },
    /// Segment `msn` is cut to a third of its bytes on every request.
    SegmentTruncate { msn: u64 },
    /// The next request for segment `msn` answers after `ms` milliseconds.
    SegmentDelay { msn: u64, ms: u64 },
    /// The origin restarts: media sequence from 0, clock from now.
    Restart,
    /// The media sequence jumps ahead by `segments`.
    Jump { segments: u64 },
}

/// What the origin answers for a request, after faults.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Body(Bytes),
    Status(u16),
    Delayed(u64, Bytes),
}

#[derive(Debug, Default)]
struct FaultState {
    playlist_faults: VecDeque<Fault>,
    segment_faults: HashMap<u64, Vec<Fault>>,
    stall: Option<(Instant, f64, String)>,
    requests: HashMap<u64, u32>,
    part_requests: HashMap<(u64, usize), u32>,
}

/// A looping live channel served from memory.
pub struct LiveOrigin {
    segments: Vec<SourceSegment>,
    /// LL-HLS: each segment's parts, as byte ranges of its data (empty: no parts).
    parts: Vec<Vec<std::ops::Range<usize>>>,
    timeline: Mutex<(Timeline, Instant)>,
    state: Mutex<FaultState>,
    pub width: u32,
    pub height: u32,
}

impl LiveOrigin {
    /// Encode `input` into segments of about `segment_secs` and start the clock so that the
    /// window is already full.
    pub fn from_file(
        input: &Path,
        segment_secs: f64,
        window: usize,
        with_pdt: bool,
    ) -> Result<Self, OriginError> {
        let err = |source| OriginError::Media {
            path: input.display().to_string(),
            source,
        };
        let fps = media::probe_fps(input).unwrap_or(25.0);
        let dir = tempfile::tempdir().map_err(|e| OriginError::Io(e.to_string()))?;
        let files =
            media::encode_segments(input, dir.path(), segment_secs, fps.round() as u32, 1500)
                .map_err(err)?;
        let mut decoder =
            SegmentDecoder::new(Pipelines::default(), 16, std::time::Duration::from_secs(30))
                .map_err(err)?;
        let mut segments = Vec::new();
        let (mut width, mut height) = (0, 0);
        for f in files {
            let data = Bytes::from(
                std::fs::read(&f).map_err(|e| OriginError::Io(format!("{}: {e}", f.display())))?,
            );
            let mut frames = 0usize;
            decoder
                .decode(&f.display().to_string(), None, data.clone(), |_| {
                    frames += 1
                })
                .map_err(err)?;
            segments.push(SourceSegment {
                data,
                duration: frames as f64 / fps,
            });
        }
        if let Some((w, h)) = media::probe_size(input) {
            (width, height) = (w, h);
        }
        Ok(Self::from_segments(
            segments, window, with_pdt, width, height,
        ))
    }

    pub fn from_segments(
        segments: Vec<SourceSegment>,
        window: usize,
        with_pdt: bool,
        width: u32,
        height: u32,
    ) -> Self {
        let durations = segments.iter().map(|s| s.duration).collect();
        let mut tl = Timeline::new(durations, window, Utc::now(), with_pdt);
        let fill = tl.initial_fill();
        tl.epoch = Utc::now() - chrono::Duration::nanoseconds((fill * 1e9) as i64);
        let started = Instant::now() - std::time::Duration::from_secs_f64(fill);
        Self {
            segments,
            parts: Vec::new(),
            timeline: Mutex::new((tl, started)),
            state: Mutex::new(FaultState::default()),
            width,
            height,
        }
    }

    /// Shift the clock `secs` later into the loop (0 up to one loop), so that origins made
    /// at the same instant do not publish their segments at the same instants: independent
    /// live channels have independent phases.
    pub fn with_phase(self, secs: f64) -> Self {
        let loop_len: f64 = self.segments.iter().map(|s| s.duration).sum();
        let secs = if secs.is_finite() {
            secs.clamp(0.0, loop_len.max(0.0))
        } else {
            0.0
        };
        let mut g = self.timeline.lock().unwrap_or_else(|p| p.into_inner());
        g.0.epoch -= chrono::Duration::nanoseconds((secs * 1e9) as i64);
        g.1 =
            g.1.checked_sub(std::time::Duration::from_secs_f64(secs))
                .unwrap_or(g.1);
        drop(g);
        self
    }

    /// Publish each segment in parts of about `part_secs` too (Low-Latency HLS).
    pub fn with_parts(mut self, part_secs: f64) -> Result<Self, OriginError> {
        let mut durations = Vec::with_capacity(self.segments.len());
        let mut ranges = Vec::with_capacity(self.segments.len());
        for (i, seg) in self.segments.iter().enumerate() {
            let parts = crate::manifest::ts::split_parts(&seg.data, seg.duration, part_secs)
                .map_err(|e| OriginError::Io(format!("segment {i} cannot be cut in parts: {e}")))?;
            durations.push(parts.iter().map(|p| p.duration).collect());
            ranges.push(parts.into_iter().map(|p| p.range).collect());
        }
        self.parts = ranges;
        let mut g = self.timeline.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = g.0.clone().with_parts(durations);
        drop(g);
        Ok(self)
    }

    /// The part target duration, when the origin publishes parts.
    pub fn part_target(&self) -> Option<f64> {
        self.timeline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .part_target()
    }

    /// How long a playlist request for `_HLS_msn=msn` (and `_HLS_part=part`) waits before
    /// it is answered; `None`: too far ahead (answer 400).
    pub fn blocking_wait(&self, msn: u64, part: Option<usize>) -> Option<std::time::Duration> {
        let g = self.timeline.lock().unwrap_or_else(|p| p.into_inner());
        let n = msn.saturating_sub(g.0.msn_offset);
        match g.0.blocking(n, part, g.1.elapsed().as_secs_f64()) {
            Blocking::Wait(s) => Some(std::time::Duration::from_secs_f64(s)),
            Blocking::TooFar => None,
        }
    }

    /// Part `k` of segment `msn`, once it is made: the wait before it is (the hinted part;
    /// at most one part target ahead), then its bytes. Parts take no faults.
    pub fn part(&self, msn: u64, k: usize) -> Option<(std::time::Duration, Bytes)> {
        let (n, wait) = {
            let g = self.timeline.lock().unwrap_or_else(|p| p.into_inner());
            let n = msn.checked_sub(g.0.msn_offset)?;
            if k >= g.0.parts_of(n).len() {
                return None;
            }
            let elapsed = g.1.elapsed().as_secs_f64();
            let wait = g.0.available_at(n, Some(k)) - elapsed;
            // Not the next part to come, or (about) out of the window.
            let longest = g.0.durations.iter().cloned().fold(0.0, f64::max);
            let gone_at = g.0.available_at(n, None) + g.0.window as f64 * longest;
            if wait > g.0.part_target()? + 0.05 || elapsed > gone_at {
                return None;
            }
            (n, wait.max(0.0))
        };
        let i = (n % self.segments.len() as u64) as usize;
        let range = self.parts.get(i)?.get(k)?.clone();
        *self.lock_state().part_requests.entry((msn, k)).or_default() += 1;
        Some((
            std::time::Duration::from_secs_f64(wait),
            self.segments[i].data.slice(range),
        ))
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn durations(&self) -> Vec<f64> {
        self.segments.iter().map(|s| s.duration).collect()
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn inject(&self, fault: Fault) {
        match fault {
            Fault::PlaylistStatus { .. } | Fault::PlaylistMalformed { .. } => {
                self.lock_state().playlist_faults.push_back(fault)
            }
            Fault::PlaylistStall { seconds } => {
                let current = self.render_now();
                self.lock_state().stall = Some((Instant::now(), seconds, current));
            }
            Fault::SegmentStatus { msn, .. }
            | Fault::SegmentGarbage { msn }
            | Fault::SegmentTruncate { msn }
            | Fault::SegmentDelay { msn, .. } => self
                .lock_state()
                .segment_faults
                .entry(msn)
                .or_default()
                .push(fault),
            Fault::Restart => {
                let mut g = self.timeline.lock().unwrap_or_else(|p| p.into_inner());
                let fill = g.0.initial_fill();
                g.0.epoch = Utc::now() - chrono::Duration::nanoseconds((fill * 1e9) as i64);
                g.0.msn_offset = 0;
                g.1 = Instant::now() - std::time::Duration::from_secs_f64(fill);
            }
            Fault::Jump { segments } => {
                self.timeline
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .0
                    .msn_offset += segments;
            }
        }
    }

    fn render_now(&self) -> String {
        let g = self.timeline.lock().unwrap_or_else(|p| p.into_inner());
        g.0.playlist(g.1.elapsed().as_secs_f64(), |n, part| match part {
            Some(k) => format!("seg{n}.{k}.ts"),
            None => format!("seg{n}.ts"),
        })
    }

    /// The media playlist now, after faults.
    pub fn playlist(&self) -> Answer {
        {
            let mut st = self.lock_state();
            if let Some((since, secs, text)) = &st.stall {
                if since.elapsed().as_secs_f64() < *secs {
                    return Answer::Body(Bytes::from(text.clone()));
                }
                st.stall = None;
            }
            if let Some(f) = st.playlist_faults.front_mut() {
                let answer = match f {
                    Fault::PlaylistStatus { status, count } => {
                        *count = count.saturating_sub(1);
                        (Answer::Status(*status), *count == 0)
                    }
                    Fault::PlaylistMalformed { count } => {
                        *count = count.saturating_sub(1);
                        (
                            // No EXT-X-TARGETDURATION: a required tag is missing.
                            Answer::Body(Bytes::from_static(
                                b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:2.0,\nseg0.ts\n",
                            )),
                            *count == 0,
                        )
                    }
                    _ => (Answer::Status(500), true),
                };
                if answer.1 {
                    st.playlist_faults.pop_front();
                }
                return answer.0;
            }
        }
        Answer::Body(Bytes::from(self.render_now()))
    }

    /// A multivariant playlist naming the one variant.
    pub fn multivariant(&self) -> String {
        let bw: usize = self
            .segments
            .iter()
            .map(|s| s.data.len())
            .max()
            .unwrap_or(0)
            * 8
            / 2;
        format!(
            "#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-STREAM-INF:BANDWIDTH={},RESOLUTION={}x{},CODECS=\"avc1.4d401e\"\nindex.m3u8\n",
            bw.max(100_000),
            self.width,
            self.height
        )
    }

    /// Segment `msn` (after the jump offset), after faults.
    pub fn segment(&self, msn: u64) -> Answer {
        let (n, known) = {
            let g = self.timeline.lock().unwrap_or_else(|p| p.into_inner());
            let n = msn.checked_sub(g.0.msn_offset);
            let complete = g.0.complete(g.1.elapsed().as_secs_f64());
            (n, n.is_some_and(|n| n < complete + 1))
        };
        let Some(n) = n.filter(|_| known) else {
            return Answer::Status(404);
        };
        let data = self.segments[(n % self.segments.len() as u64) as usize]
            .data
            .clone();
        let mut st = self.lock_state();
        *st.requests.entry(msn).or_default() += 1;
        if let Some(faults) = st.segment_faults.get_mut(&msn) {
            let mut answer = None;
            faults.retain_mut(|f| match f {
                Fault::SegmentStatus { status, count, .. } if answer.is_none() => {
                    answer = Some(Answer::Status(*status));
                    *count = count.saturating_sub(1);
                    *count > 0
                }
                Fault::SegmentGarbage { .. } if answer.is_none() => {
                    let junk: Vec<u8> = (0..data.len())
                        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1])
                        .collect();
                    answer = Some(Answer::Body(Bytes::from(junk)));
                    true
                }
                Fault::SegmentTruncate { .. } if answer.is_none() => {
                    answer = Some(Answer::Body(data.slice(..data.len() / 3)));
                    true
                }
                Fault::SegmentDelay { ms, .. } if answer.is_none() => {
                    answer = Some(Answer::Delayed(*ms, data.clone()));
                    false
                }
                _ => true,
            });
            if let Some(a) = answer {
                return a;
            }
        }
        Answer::Body(data)
    }

    /// EXT-X-PROGRAM-DATE-TIME of segment `msn` (as the playlist states it).
    pub fn pdt_of(&self, msn: u64) -> Option<DateTime<Utc>> {
        let g = self.timeline.lock().unwrap_or_else(|p| p.into_inner());
        let n = msn.checked_sub(g.0.msn_offset)?;
        let t = g.0.epoch + chrono::Duration::nanoseconds((g.0.start_of(n) * 1e9).round() as i64);
        Some(
            crate::frame::rfc3339_ms(&t)
                .parse::<DateTime<Utc>>()
                .unwrap_or(t),
        )
    }

    /// The segment holding wall clock `t`: its media sequence number, and its start and
    /// end (the next segment's start) as the playlist states them. The origin publishes a
    /// segment at its end. `None` before the first segment.
    pub fn segment_at(&self, t: DateTime<Utc>) -> Option<(u64, DateTime<Utc>, DateTime<Utc>)> {
        let (offset, guess) = {
            let g = self.timeline.lock().unwrap_or_else(|p| p.into_inner());
            let elapsed = (t - g.0.epoch).num_microseconds()? as f64 / 1e6;
            (g.0.msn_offset, g.0.complete(elapsed))
        };
        // The guess works in media time; settle it against the stated (millisecond) PDTs.
        let mut msn = offset + guess;
        while msn > offset && self.pdt_of(msn)? > t {
            msn -= 1;
        }
        while self.pdt_of(msn + 1)? <= t {
            msn += 1;
        }
        let start = self.pdt_of(msn)?;
        (start <= t).then_some((msn, start, self.pdt_of(msn + 1)?))
    }

    /// When the media at wall clock `t` is published: the end of its part (with parts),
    /// else of its segment.
    pub fn published_at(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let (msn, start, end) = self.segment_at(t)?;
        let g = self.timeline.lock().unwrap_or_else(|p| p.into_inner());
        let parts = g.0.parts_of(msn.checked_sub(g.0.msn_offset)?);
        let offset = (t - start).num_microseconds()? as f64 / 1e6;
        let mut acc = 0.0;
        for d in parts {
            acc += d;
            if acc > offset {
                return Some(
                    start
                        + chrono::Duration::microseconds((acc * 1e6).round() as i64)
                            .min(end - start),
                );
            }
        }
        Some(end)
    }

    /// How often each part (segment, part) was requested.
    pub fn part_requests(&self) -> HashMap<(u64, usize), u32> {
        self.lock_state().part_requests.clone()
    }

    /// How often each segment was requested.
    pub fn requests(&self) -> HashMap<u64, u32> {
        self.lock_state().requests.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tl() -> Timeline {
        let epoch = DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        Timeline::new(vec![2.0, 2.0, 1.0], 2, epoch, true)
    }

    fn uri(n: u64, part: Option<usize>) -> String {
        match part {
            Some(k) => format!("seg{n}.{k}.ts"),
            None => format!("seg{n}.ts"),
        }
    }

    #[test]
    fn complete_counts_across_loops() {
        let t = tl();
        assert_eq!(t.complete(0.0), 0);
        assert_eq!(t.complete(1.9), 0);
        assert_eq!(t.complete(2.0), 1);
        assert_eq!(t.complete(4.99), 2);
        assert_eq!(t.complete(5.0), 3);
        assert_eq!(t.complete(7.0), 4);
        assert_eq!(t.start_of(4), 7.0);
    }

    #[test]
    fn low_latency_playlist_lists_parts_hints_and_blocks() {
        let t = tl().with_parts(vec![vec![1.0, 1.0], vec![1.0, 1.0], vec![0.5, 0.5]]);
        assert_eq!(t.part_target(), Some(1.0));
        // At 9.5 s: segments 0..=4 complete, segment 5 (a loop's third) has one part.
        assert_eq!((t.complete(9.5), t.parts_done(9.5)), (5, 1));
        let p = t.playlist(9.5, uri);
        assert!(
            p.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=3.000\n#EXT-X-PART-INF:PART-TARGET=1.000\n"),
            "{p}"
        );
        assert!(
            p.contains("#EXT-X-PART:DURATION=1.000,URI=\"seg4.0.ts\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=1.000,URI=\"seg4.1.ts\"\n#EXT-X-PROGRAM-DATE-TIME:2026-11-21T10:00:07.000Z\n#EXTINF:2.000,\nseg4.ts\n"),
            "{p}"
        );
        assert!(
            p.ends_with("seg4.ts\n#EXT-X-PART:DURATION=0.500,URI=\"seg5.0.ts\",INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg5.1.ts\"\n"),
            "{p}"
        );
        // Blocking reloads: listed now, in half a second, at the next segment's first
        // part, too far.
        assert_eq!(t.blocking(4, None, 9.5), Blocking::Wait(0.0));
        assert_eq!(t.blocking(5, Some(0), 9.5), Blocking::Wait(0.0));
        assert_eq!(t.blocking(5, Some(1), 9.5), Blocking::Wait(0.5));
        assert_eq!(t.blocking(5, Some(2), 9.5), Blocking::Wait(1.5));
        assert_eq!(t.blocking(6, None, 9.5), Blocking::Wait(2.5));
        assert_eq!(t.blocking(7, None, 9.5), Blocking::TooFar);
        // A new loop: the discontinuity comes with the segment's first part.
        let p = t.playlist(10.2, uri);
        assert!(
            p.ends_with("seg5.ts\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg6.0.ts\"\n"),
            "{p}"
        );
        let p = t.playlist(11.0, uri);
        assert!(
            p.ends_with("seg5.ts\n#EXT-X-DISCONTINUITY\n#EXT-X-PART:DURATION=1.000,URI=\"seg6.0.ts\",INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg6.1.ts\"\n"),
            "{p}"
        );
        // Without parts: none of it.
        let p = tl().playlist(9.5, uri);
        assert!(!p.contains("PART") && !p.contains("PRELOAD"), "{p}");
    }

    /// A looping origin of segments of 2, 2 and 1 s, a window of 2.
    fn small_origin() -> LiveOrigin {
        LiveOrigin::from_segments(
            [2.0, 2.0, 1.0]
                .into_iter()
                .map(|duration| SourceSegment {
                    data: Bytes::from_static(&[0u8; 188]),
                    duration,
                })
                .collect(),
            2,
            true,
            640,
            360,
        )
    }

    #[test]
    fn segment_at_finds_the_segment_holding_a_wall_clock() {
        let o = small_origin();
        let s0 = o.pdt_of(0).unwrap();
        let ms = chrono::Duration::milliseconds;
        assert_eq!(o.segment_at(s0 - ms(1)), None);
        assert_eq!(o.segment_at(s0), Some((0, s0, s0 + ms(2000))));
        assert_eq!(o.segment_at(s0 + ms(1999)).map(|x| x.0), Some(0));
        assert_eq!(
            o.segment_at(s0 + ms(4500)),
            Some((2, s0 + ms(4000), s0 + ms(5000)))
        );
        // The loop goes on: segment 4 is the second loop's second segment.
        assert_eq!(o.segment_at(s0 + ms(7000)).map(|x| x.0), Some(4));
    }

    #[test]
    fn a_phase_moves_the_segment_boundaries_and_keeps_the_pdt_true() {
        let make = |phase: f64| small_origin().with_phase(phase);
        let (a, b) = (make(0.0), make(0.5));
        let ms = chrono::Duration::milliseconds;
        // Made at the same instant, b is half a second further into its loop: its media
        // time 0 was half a second earlier.
        let shift = a.pdt_of(0).unwrap() - b.pdt_of(0).unwrap();
        assert!((shift - ms(500)).num_milliseconds().abs() <= 20, "{shift}");
        // Its PDTs still say when each segment was live: the segment holding a wall
        // clock is where the playlist's PDT puts it.
        let s0 = b.pdt_of(0).unwrap();
        assert_eq!(b.segment_at(s0 + ms(2100)).map(|x| x.0), Some(1));
        // Absurd phases are clamped, never a panic.
        for p in [f64::NAN, f64::INFINITY, -3.0, 1e300] {
            assert!(make(p).pdt_of(0).is_some());
        }
    }

    #[test]
    fn playlist_window_pdt_and_discontinuities() {
        let t = tl();
        let p = t.playlist(9.0, uri);
        // Complete: 0,1,2 (5 s), 3 (7 s), 4 (9 s) → window 3,4.
        assert!(p.contains("#EXT-X-MEDIA-SEQUENCE:3\n"), "{p}");
        assert!(p.contains("#EXT-X-DISCONTINUITY-SEQUENCE:0\n"), "{p}");
        assert!(p.contains("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2026-11-21T10:00:05.000Z\n#EXTINF:2.000,\nseg3.ts\n"), "{p}");
        assert!(
            p.contains(
                "#EXT-X-PROGRAM-DATE-TIME:2026-11-21T10:00:07.000Z\n#EXTINF:2.000,\nseg4.ts\n"
            ),
            "{p}"
        );
        let p = t.playlist(12.0, uri);
        assert!(
            p.contains("#EXT-X-MEDIA-SEQUENCE:5\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"),
            "{p}"
        );
        assert!(p.contains("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2026-11-21T10:00:10.000Z\n#EXTINF:2.000,\nseg6.ts\n"), "{p}");
    }
}
