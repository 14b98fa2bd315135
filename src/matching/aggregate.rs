//! From per-frame matches to cues: aggregation over the shot.
//!
//! One [`CueBuilder`] per channel gets, in frame order, the shot events and one
//! [`SampleResult`] per sampled frame, and answers with [`CueEvent`]s:
//!
//! - **Birth.** Each detection is judged ([`Rules`]); of several detections of the same
//!   product in one frame the most similar counts. A product seen confidently in
//!   `min_samples` samples of the shot (or once at `single_sample_score` or more) becomes
//!   a cue: `Start`, with `start` = wall clock of its *first* confident sample. Confident
//!   samples further apart than `lost_after_ms` do not add up: the count starts again.
//!   At most `max_cues_per_shot` cues start per shot; a product gets at most one cue per
//!   shot (the id is `cue_id(channel, shot, product)`), and none within `cooldown_ms`
//!   after its previous cue on the channel ended (samples inside the cooldown are
//!   ignored, so a later cue still starts after it).
//! - **One object, one cue.** Products are *siblings* for a sighting when one is among
//!   the other's catalog candidates within `sibling_gap` similarity (flavours of one
//!   brand). Sibling sightings whose boxes overlap by `sibling_overlap` or more (of the
//!   smaller box; a box inside the whole-frame region overlaps it fully) are one object:
//!   in a sample only the most similar counts. Over the shot, with `sibling_scope =
//!   place` a sibling of an open cue at the same place starts no cue of its own; with
//!   `shot` (the default) a sibling of a cue of the shot anywhere, or of a pending
//!   product with more confident samples, starts none (the product with the most
//!   evidence keeps the object). Every track of a sample is updated before any birth is
//!   judged.
//! - **Agreeing regions.** A product that is the best candidate of `agree_regions`
//!   regions of one sample (`raw_agree_regions` for catalogs without a learned
//!   projection) is confident in them even below the margin.
//! - **Updates.** Each confident sample appends a box to the cue's track (thinned to
//!   `max_boxes`) and refreshes its score (the mean similarity of its confident samples).
//!   An `Update` goes out when the track grew or the score moved by more than
//!   `score_epsilon`, at most once per `update_interval_ms` per cue.
//! - **End.** When the shot ends, when the product has not been seen for more than
//!   `lost_after_ms`, or at [`flush`](CueBuilder::flush): `End`, with `end` = wall clock
//!   of the last sample where the product was seen.
//!
//! All times come from the samples (the frames' wall clock); nothing reads a clock.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

use crate::cue::{BoxSample, Cue, CueEvent, cue_id_in_epoch};
use crate::matching::detection::MatchedDetection;
use crate::matching::evidence::{CueEvidence, keep_best};
use crate::matching::rules::{Judgement, Rules};
use crate::matching::{MatchingSettings, SiblingScope};
use crate::shots::ShotEvent;

/// Inference's answer for one sampled frame.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleResult {
    pub frame_index: u64,
    pub pts_ns: u64,
    pub wallclock: DateTime<Utc>,
    pub shot_index: u64,
    pub detections: Vec<MatchedDetection>,
    /// The detections are an earlier analysed sample's, reused because the picture barely
    /// changed (`matching.change_gate`): they keep tracks and cues alive and extend box
    /// tracks, but are no new evidence (they add nothing to `min_samples` or the score).
    pub reused: bool,
}

/// Counters of what the builder saw and did (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CueStats {
    pub samples: u64,
    /// Samples of a shot already over, or not after the previous sample: ignored.
    pub stale_samples: u64,
    pub detections: u64,
    pub class_gated: u64,
    pub low_det_score: u64,
    pub invalid_box: u64,
    pub no_candidates: u64,
    pub low_similarity: u64,
    pub low_margin: u64,
    /// Detections below the margin taken as confident because `agree_regions` regions of
    /// their sample name the same best product (also counted in `low_margin`).
    pub agreed: u64,
    /// Confident (product, sample) pairs, after merging detections of one product.
    pub confident: u64,
    /// Confident sightings ignored: the product is in its cooldown.
    pub suppressed_cooldown: u64,
    /// Confident sightings ignored: the product's cue in this shot is already over.
    pub suppressed_repeat: u64,
    /// Products that qualified but found the shot's `max_cues_per_shot` reached.
    pub suppressed_max_cues: u64,
    /// Sightings taken for a sibling product's object (same place, look-alike product).
    pub suppressed_sibling: u64,
    pub cues_started: u64,
    pub cues_updated: u64,
    pub cues_ended: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Seen, not yet confirmed.
    Pending,
    /// Announced; what the last announcement carried.
    Open {
        emitted_at: DateTime<Utc>,
        emitted_score: f32,
        emitted_version: u64,
    },
    /// Ended; the product gets no other cue in this shot.
    Done,
}

#[derive(Debug, Clone)]
struct Track {
    product_id: String,
    first_wallclock: DateTime<Utc>,
    first_pts_ns: u64,
    last_wallclock: DateTime<Utc>,
    samples: u32,
    similarity_sum: f64,
    boxes: Vec<BoxSample>,
    /// Bumped on every box appended (thinning does not reset it).
    version: u64,
    phase: Phase,
    /// Look-alike products seen near the top of this product's candidates.
    near: Vec<String>,
    /// The most similar sightings' query embeddings (see [`super::evidence`]).
    evidence: Vec<(f32, Arc<[f32]>)>,
}

impl Track {
    fn score(&self) -> f32 {
        if self.samples == 0 {
            return 0.0;
        }
        ((self.similarity_sum / f64::from(self.samples)) as f32).clamp(0.0, 1.0)
    }
}

#[derive(Debug, Clone)]
struct ShotState {
    index: u64,
    /// In order of first sighting (deterministic output).
    tracks: Vec<Track>,
    started: usize,
    last_frame: Option<u64>,
    last_wallclock: Option<DateTime<Utc>>,
}

/// A product confidently seen in one sample (best detection of that product).
struct Sighting {
    product_id: String,
    similarity: f32,
    bbox: [f32; 4],
    /// Other products among that detection's candidates within `sibling_gap`.
    near: Vec<String>,
    embedding: Option<Arc<[f32]>>,
}

/// Most look-alike products a track remembers.
const MAX_NEAR: usize = 16;

/// Per-channel cue state machine.
#[derive(Debug, Clone)]
pub struct CueBuilder {
    channel: String,
    /// The lease epoch in cue ids (0 unless the channel is leased in a fleet).
    epoch: u64,
    settings: MatchingSettings,
    rules: Rules,
    shot: Option<ShotState>,
    /// Samples of shots below this index are stale.
    floor: Option<u64>,
    /// Product → end of its latest cue, while that end is within the cooldown.
    recent_ends: HashMap<String, DateTime<Utc>>,
    stats: CueStats,
    /// Evidence of the cues emitted since the last [`CueBuilder::take_evidence`].
    evidence_out: Vec<CueEvidence>,
}

fn millis(ms: u64) -> TimeDelta {
    TimeDelta::try_milliseconds(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or(TimeDelta::MAX)
}

impl CueBuilder {
    /// `settings` should have passed [`MatchingSettings::validate`]; out-of-range values
    /// do not panic but give odd cues.
    pub fn new(channel: impl Into<String>, settings: &MatchingSettings) -> Self {
        Self {
            channel: channel.into(),
            epoch: 0,
            settings: settings.clone(),
            rules: Rules::new(settings),
            shot: None,
            floor: None,
            recent_ends: HashMap::new(),
            stats: CueStats::default(),
            evidence_out: Vec::new(),
        }
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Cue ids of lease `epoch` (a fleet's analyser; 0 = not leased): see
    /// [`cue_id_in_epoch`].
    pub fn with_epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    fn cue_id(&self, shot: u64, product_id: &str) -> String {
        cue_id_in_epoch(&self.channel, self.epoch, shot, product_id)
    }

    /// New thresholds from now on (e.g. the catalog learned a projection and its
    /// similarity scale changed); open cues and counters stay.
    pub fn retune(&mut self, settings: &MatchingSettings) {
        self.settings = settings.clone();
        self.rules = Rules::new(settings);
    }

    pub fn stats(&self) -> CueStats {
        self.stats
    }

    /// The similarity a sighting needs to count towards a cue, as the builder is tuned now.
    pub fn min_similarity(&self) -> f32 {
        self.settings.min_similarity
    }

    /// The evidence of every cue emitted (started, updated, ended) since the last call, as
    /// of that event; cues without evidence are left out.
    pub fn take_evidence(&mut self) -> Vec<CueEvidence> {
        std::mem::take(&mut self.evidence_out)
    }

    fn note_evidence(&mut self, shot: u64, track: &Track) {
        if track.evidence.is_empty() {
            return;
        }
        let cue_id = self.cue_id(shot, &track.product_id);
        self.evidence_out.retain(|e| e.cue_id != cue_id);
        self.evidence_out.push(CueEvidence {
            cue_id,
            channel: self.channel.clone(),
            product_id: track.product_id.clone(),
            shot,
            sightings: track.evidence.clone(),
        });
    }

    /// Cues started and not yet ended.
    pub fn open_cues(&self) -> usize {
        self.shot.as_ref().map_or(0, |s| {
            s.tracks
                .iter()
                .filter(|t| matches!(t.phase, Phase::Open { .. }))
                .count()
        })
    }

    /// A shot started or ended. An `Ended` closes the shot's open cues; a `Started` of a
    /// later shot closes the current one too (should its `Ended` be missing).
    pub fn on_shot_event(&mut self, event: &ShotEvent) -> Vec<CueEvent> {
        let mut out = Vec::new();
        match event {
            ShotEvent::Started(shot) => {
                self.enter_shot(shot.index, &mut out);
            }
            ShotEvent::Ended(shot) => {
                if self.shot.as_ref().is_some_and(|s| s.index <= shot.index) {
                    self.close_shot(&mut out);
                }
                let next = shot.index.saturating_add(1);
                self.floor = Some(self.floor.map_or(next, |f| f.max(next)));
            }
        }
        out
    }

    /// End of stream: ends every open cue.
    pub fn flush(&mut self) -> Vec<CueEvent> {
        let mut out = Vec::new();
        self.close_shot(&mut out);
        out
    }

    /// Feed one sampled frame's matches.
    pub fn push(&mut self, sample: &SampleResult) -> Vec<CueEvent> {
        let mut out = Vec::new();
        self.stats.samples += 1;
        if !self.enter_shot(sample.shot_index, &mut out) {
            self.stats.stale_samples += 1;
            return out;
        }
        let Some(mut shot) = self.shot.take() else {
            return out;
        };
        let in_order = shot.last_frame.is_none_or(|f| sample.frame_index > f)
            && shot.last_wallclock.is_none_or(|t| sample.wallclock >= t);
        if in_order {
            shot.last_frame = Some(sample.frame_index);
            shot.last_wallclock = Some(sample.wallclock);
            self.apply(&mut shot, sample, &mut out);
        } else {
            self.stats.stale_samples += 1;
        }
        self.shot = Some(shot);
        out
    }

    /// Make `index` the current shot (closing an older one). `false` when `index` is an
    /// earlier shot than the current one or than one already ended.
    fn enter_shot(&mut self, index: u64, out: &mut Vec<CueEvent>) -> bool {
        if self.floor.is_some_and(|f| index < f) {
            return false;
        }
        if self.shot.as_ref().is_some_and(|s| s.index == index) {
            return true;
        }
        self.close_shot(out);
        self.shot = Some(ShotState {
            index,
            tracks: Vec::new(),
            started: 0,
            last_frame: None,
            last_wallclock: None,
        });
        self.floor = Some(index);
        true
    }

    fn close_shot(&mut self, out: &mut Vec<CueEvent>) {
        let Some(mut shot) = self.shot.take() else {
            return;
        };
        let index = shot.index;
        for track in &mut shot.tracks {
            if matches!(track.phase, Phase::Open { .. }) {
                self.end_track(index, track, out);
            }
        }
        self.floor = Some(index.saturating_add(1));
    }

    fn end_track(&mut self, shot: u64, track: &mut Track, out: &mut Vec<CueEvent>) {
        track.phase = Phase::Done;
        let end = track.last_wallclock;
        let previous = self
            .recent_ends
            .entry(track.product_id.clone())
            .or_insert(end);
        *previous = (*previous).max(end);
        self.stats.cues_ended += 1;
        self.note_evidence(shot, track);
        out.push(CueEvent::End(self.cue(shot, track, Some(end))));
    }

    fn cue(&self, shot: u64, track: &Track, end: Option<DateTime<Utc>>) -> Cue {
        Cue {
            source: Default::default(),
            id: self.cue_id(shot, &track.product_id),
            channel: self.channel.clone(),
            product_id: track.product_id.clone(),
            start: track.first_wallclock,
            end,
            pts: track.first_pts_ns as f64 / 1e9,
            score: track.score(),
            shot,
            boxes: track.boxes.clone(),
            product: None,
        }
    }

    /// The confident products of one sample, best detection per product, most similar
    /// first (so they get the shot's cue slots first).
    fn sightings(&mut self, sample: &SampleResult) -> Vec<Sighting> {
        let mut best: Vec<Sighting> = Vec::new();
        let judged: Vec<Judgement> = sample
            .detections
            .iter()
            .map(|d| self.rules.judge(d))
            .collect();
        let agreed = agreeing_products(
            &sample.detections,
            &judged,
            self.settings.agree_regions as usize,
        );
        for (det, judgement) in sample.detections.iter().zip(judged) {
            self.stats.detections += 1;
            let judgement = match judgement {
                Judgement::LowMargin { .. } => {
                    self.stats.low_margin += 1;
                    match agreed_sighting(det, &agreed) {
                        Some(j) => {
                            self.stats.agreed += 1;
                            j
                        }
                        None => continue,
                    }
                }
                j => j,
            };
            match judgement {
                Judgement::Confident {
                    product_id,
                    similarity,
                    bbox,
                } => {
                    let near = near_products(
                        &det.candidates,
                        &product_id,
                        similarity,
                        self.settings.sibling_gap,
                    );
                    match best.iter_mut().find(|s| s.product_id == product_id) {
                        Some(s) if s.similarity >= similarity => {}
                        Some(s) => {
                            s.similarity = similarity;
                            s.bbox = bbox;
                            s.near = near;
                            s.embedding = det.embedding.clone();
                        }
                        None => best.push(Sighting {
                            product_id,
                            similarity,
                            bbox,
                            near,
                            embedding: det.embedding.clone(),
                        }),
                    }
                }
                Judgement::ClassGated => self.stats.class_gated += 1,
                Judgement::LowDetScore => self.stats.low_det_score += 1,
                Judgement::InvalidBox => self.stats.invalid_box += 1,
                Judgement::NoCandidates => self.stats.no_candidates += 1,
                Judgement::LowSimilarity { .. } => self.stats.low_similarity += 1,
                Judgement::LowMargin { .. } => {}
            }
        }
        best.sort_by(|a, b| {
            b.similarity
                .total_cmp(&a.similarity)
                .then_with(|| a.product_id.cmp(&b.product_id))
        });
        self.stats.confident += best.len() as u64;
        self.one_per_object(best)
    }

    /// Of sibling sightings at one place (most similar first) only the first stays.
    fn one_per_object(&mut self, sightings: Vec<Sighting>) -> Vec<Sighting> {
        let mut kept: Vec<Sighting> = Vec::with_capacity(sightings.len());
        for s in sightings {
            let taken = kept.iter().any(|k| {
                self.same_object(
                    &k.product_id,
                    &k.near,
                    &k.bbox,
                    &s.product_id,
                    &s.near,
                    &s.bbox,
                )
            });
            if taken {
                self.stats.suppressed_sibling += 1;
            } else {
                kept.push(s);
            }
        }
        kept
    }

    /// Two sightings (product, its look-alikes, box) are one object: siblings that overlap.
    fn same_object(
        &self,
        a: &str,
        a_near: &[String],
        a_box: &[f32; 4],
        b: &str,
        b_near: &[String],
        b_box: &[f32; 4],
    ) -> bool {
        self.settings.sibling_gap > 0.0
            && (a_near.iter().any(|p| p == b) || b_near.iter().any(|p| p == a))
            && overlap(a_box, b_box) >= self.settings.sibling_overlap
    }

    /// Whether a sibling of `sighting` (product of track `at`) holds the object: with
    /// `sibling_scope = place`, an open cue of this shot at the same place; with `shot`, a
    /// cue of this shot anywhere (open or ended), or a pending sibling with more confident
    /// samples (on a tie, more similarity) than track `at`.
    fn sibling_claims(&self, shot: &ShotState, at: usize, sighting: &Sighting) -> bool {
        if self.settings.sibling_gap <= 0.0 {
            return false;
        }
        let me = &shot.tracks[at];
        shot.tracks.iter().enumerate().any(|(i, t)| {
            if i == at {
                return false;
            }
            let Some(b) = t.boxes.last() else {
                return false;
            };
            match self.settings.sibling_scope {
                SiblingScope::Place => {
                    matches!(t.phase, Phase::Open { .. })
                        && self.same_object(
                            &t.product_id,
                            &t.near,
                            &[b.x, b.y, b.w, b.h],
                            &sighting.product_id,
                            &sighting.near,
                            &sighting.bbox,
                        )
                }
                SiblingScope::Shot => {
                    let siblings = t.near.contains(&sighting.product_id)
                        || sighting.near.contains(&t.product_id)
                        || me.near.contains(&t.product_id);
                    let stronger = match t.phase {
                        Phase::Pending => {
                            (t.samples, t.similarity_sum) > (me.samples, me.similarity_sum)
                        }
                        Phase::Open { .. } | Phase::Done => true,
                    };
                    siblings && stronger
                }
            }
        })
    }

    /// Fold one in-order sample into the current shot: end the cues whose products were
    /// lost, bring each sighting's track up to date, then start or update cues.
    fn apply(&mut self, shot: &mut ShotState, sample: &SampleResult, out: &mut Vec<CueEvent>) {
        let now = sample.wallclock;
        let lost_after = millis(self.settings.lost_after_ms);
        self.forget_cooled_down(now);
        let sightings = self.sightings(sample);
        self.end_lost(shot, &sightings, now, lost_after, out);
        // Every sighting's track is brought up to date first, so that whether a look-alike
        // holds the object is judged on this sample's evidence whatever the order.
        let updated = self.update_tracks(shot, sample, &sightings, lost_after);
        for (at, sighting) in updated {
            match shot.tracks[at].phase {
                Phase::Pending => {
                    let claimed = self.sibling_claims(shot, at, sighting);
                    self.try_start(shot, at, sighting.similarity, claimed, now, out);
                }
                Phase::Open {
                    emitted_at,
                    emitted_score,
                    emitted_version,
                } => {
                    let track = &mut shot.tracks[at];
                    let score = track.score();
                    let changed = track.version != emitted_version
                        || (score - emitted_score).abs() > self.settings.score_epsilon;
                    let due = now.signed_duration_since(emitted_at)
                        >= millis(self.settings.update_interval_ms);
                    if changed && due {
                        track.phase = Phase::Open {
                            emitted_at: now,
                            emitted_score: score,
                            emitted_version: track.version,
                        };
                        self.stats.cues_updated += 1;
                        self.note_evidence(shot.index, track);
                        out.push(CueEvent::Update(self.cue(shot.index, track, None)));
                    }
                }
                Phase::Done => {}
            }
        }
    }

    /// Products whose cooldown is over (at `now`) may get a cue again.
    fn forget_cooled_down(&mut self, now: DateTime<Utc>) {
        let cooldown = millis(self.settings.cooldown_ms);
        self.recent_ends.retain(|_, end| {
            end.checked_add_signed(cooldown)
                .is_none_or(|until| until > now)
        });
    }

    /// End the open cues whose products were not seen for `lost_after` (first: those ends
    /// lie before anything this sample starts); pending products gone that long start
    /// counting again on their next sighting.
    fn end_lost(
        &mut self,
        shot: &mut ShotState,
        sightings: &[Sighting],
        now: DateTime<Utc>,
        lost_after: TimeDelta,
        out: &mut Vec<CueEvent>,
    ) {
        let seen = |t: &Track| sightings.iter().any(|s| s.product_id == t.product_id);
        for track in &mut shot.tracks {
            if matches!(track.phase, Phase::Open { .. })
                && !seen(track)
                && now.signed_duration_since(track.last_wallclock) > lost_after
            {
                self.end_track(shot.index, track, out);
            }
        }
        shot.tracks.retain(|t| {
            t.phase != Phase::Pending
                || seen(t)
                || now.signed_duration_since(t.last_wallclock) <= lost_after
        });
    }

    /// Record each sighting (outside its product's cooldown) in its track, made if new.
    /// Returns the tracks that took it as evidence, with their sighting.
    fn update_tracks<'s>(
        &mut self,
        shot: &mut ShotState,
        sample: &SampleResult,
        sightings: &'s [Sighting],
        lost_after: TimeDelta,
    ) -> Vec<(usize, &'s Sighting)> {
        let now = sample.wallclock;
        let mut updated = Vec::with_capacity(sightings.len());
        for sighting in sightings {
            if self.recent_ends.contains_key(&sighting.product_id) {
                self.stats.suppressed_cooldown += 1;
                continue;
            }
            let at = match shot
                .tracks
                .iter()
                .position(|t| t.product_id == sighting.product_id)
            {
                Some(at) => at,
                None => {
                    shot.tracks.push(Track {
                        product_id: sighting.product_id.clone(),
                        first_wallclock: now,
                        first_pts_ns: sample.pts_ns,
                        last_wallclock: now,
                        samples: 0,
                        similarity_sum: 0.0,
                        boxes: Vec::new(),
                        version: 0,
                        phase: Phase::Pending,
                        near: Vec::new(),
                        evidence: Vec::new(),
                    });
                    shot.tracks.len() - 1
                }
            };
            if self.record_sighting(&mut shot.tracks[at], sighting, sample, lost_after) {
                updated.push((at, sighting));
            }
        }
        updated
    }

    /// Add `sighting` to `track`: its look-alikes, its box, and (unless the sample reused
    /// an earlier one) its similarity and evidence. A pending track lost for `lost_after`
    /// starts over. False when it changes nothing a cue shows: the product's cue of this
    /// shot ended, or a reused sample only keeps a pending product from being lost.
    fn record_sighting(
        &mut self,
        track: &mut Track,
        sighting: &Sighting,
        sample: &SampleResult,
        lost_after: TimeDelta,
    ) -> bool {
        let now = sample.wallclock;
        for p in &sighting.near {
            if track.near.len() < MAX_NEAR && !track.near.contains(p) {
                track.near.push(p.clone());
            }
        }
        if track.phase == Phase::Done {
            self.stats.suppressed_repeat += 1;
            return false;
        }
        if track.phase == Phase::Pending
            && now.signed_duration_since(track.last_wallclock) > lost_after
        {
            track.first_wallclock = now;
            track.first_pts_ns = sample.pts_ns;
            track.samples = 0;
            track.similarity_sum = 0.0;
            track.boxes.clear();
            track.evidence.clear();
        }
        track.last_wallclock = now;
        let [x, y, w, h] = sighting.bbox;
        track.boxes.push(BoxSample { t: now, x, y, w, h });
        if sample.reused {
            // No new evidence: a pending product is only kept from being lost.
            if track.phase == Phase::Pending {
                return false;
            }
        } else {
            track.samples = track.samples.saturating_add(1);
            track.similarity_sum += f64::from(sighting.similarity);
            if let Some(e) = &sighting.embedding {
                keep_best(
                    &mut track.evidence,
                    (sighting.similarity, e.clone()),
                    self.settings.evidence_per_cue,
                );
            }
        }
        track.version += 1;
        thin(&mut track.boxes, self.settings.max_boxes);
        true
    }

    /// Start the cue of pending track `at` once it qualifies (enough samples, or one very
    /// similar one: `similarity`), unless a sibling holds the object (`claimed`) or the
    /// shot has its most cues.
    fn try_start(
        &mut self,
        shot: &mut ShotState,
        at: usize,
        similarity: f32,
        claimed: bool,
        now: DateTime<Utc>,
        out: &mut Vec<CueEvent>,
    ) {
        let track = &mut shot.tracks[at];
        let qualified = track.samples >= self.settings.min_samples
            || similarity >= self.settings.single_sample_score;
        if !qualified {
            return;
        }
        if claimed {
            self.stats.suppressed_sibling += 1;
            return;
        }
        if shot.started >= self.settings.max_cues_per_shot {
            self.stats.suppressed_max_cues += 1;
            return;
        }
        shot.started += 1;
        track.phase = Phase::Open {
            emitted_at: now,
            emitted_score: track.score(),
            emitted_version: track.version,
        };
        self.stats.cues_started += 1;
        self.note_evidence(shot.index, track);
        out.push(CueEvent::Start(self.cue(shot.index, track, None)));
    }
}

/// Fills `product` (title, price, url, image…) of every event's cue from `lookup`, e.g.
/// the catalog's details by product id; cues it knows nothing of keep `null`.
pub fn fill_products(events: &mut [CueEvent], lookup: impl Fn(&str) -> Option<serde_json::Value>) {
    for event in events {
        let cue = match event {
            CueEvent::Start(c) | CueEvent::Update(c) | CueEvent::End(c) => c,
        };
        if cue.product.is_none() {
            cue.product = lookup(&cue.product_id);
        }
    }
}

/// The best candidate of a detection: product and similarity (the list should be best
/// first; do not rely on it).
fn top_candidate(det: &MatchedDetection) -> Option<(&str, f32)> {
    det.candidates
        .iter()
        .filter(|(id, sim)| !id.is_empty() && sim.is_finite())
        .fold(None, |acc: Option<(&str, f32)>, (id, sim)| match acc {
            Some((_, b)) if b >= *sim => acc,
            _ => Some((id.as_str(), *sim)),
        })
}

/// Products that are the best candidate of at least `regions` detections of one sample
/// that passed every test but perhaps the margin (`regions` 0: none).
fn agreeing_products<'a>(
    detections: &'a [MatchedDetection],
    judged: &[Judgement],
    regions: usize,
) -> Vec<&'a str> {
    if regions == 0 {
        return Vec::new();
    }
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for (det, j) in detections.iter().zip(judged) {
        if !matches!(j, Judgement::Confident { .. } | Judgement::LowMargin { .. }) {
            continue;
        }
        let Some((p, _)) = top_candidate(det) else {
            continue;
        };
        match counts.iter_mut().find(|(q, _)| *q == p) {
            Some((_, n)) => *n += 1,
            None => counts.push((p, 1)),
        }
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n >= regions)
        .map(|(p, _)| p)
        .collect()
}

/// A detection below the margin whose best product the sample's regions agree on, as a
/// confident judgement.
fn agreed_sighting(det: &MatchedDetection, agreed: &[&str]) -> Option<Judgement> {
    let (p, similarity) = top_candidate(det)?;
    if !agreed.contains(&p) {
        return None;
    }
    Some(Judgement::Confident {
        product_id: p.to_string(),
        similarity,
        bbox: crate::matching::rules::normalise_box(det.bbox)?,
    })
}

/// Products other than `best` among `candidates` within `gap` of `similarity`, each once.
fn near_products(
    candidates: &[(String, f32)],
    best: &str,
    similarity: f32,
    gap: f32,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if gap <= 0.0 {
        return out;
    }
    for (p, s) in candidates {
        if p != best && *s >= similarity - gap && !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

/// How much two `[x, y, w, h]` boxes overlap: their intersection over the smaller one's
/// area (1 when one lies inside the other; 0 when either has no area or a number that is
/// not finite).
fn overlap(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    if a.iter().chain(b).any(|v| !v.is_finite()) {
        return 0.0;
    }
    let ix = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let iy = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    let inter = ix.max(0.0) * iy.max(0.0);
    let smaller = (a[2] * a[3]).min(b[2] * b[3]);
    if smaller > 0.0 {
        (inter / smaller).min(1.0)
    } else {
        0.0
    }
}

/// Keep a box track within `max` boxes: drop every other box, keeping the first and last.
fn thin(boxes: &mut Vec<BoxSample>, max: usize) {
    let max = max.max(2);
    while boxes.len() > max {
        let last = boxes.len() - 1;
        let mut i = 0;
        boxes.retain(|_| {
            let keep = i % 2 == 0 || i == last;
            i += 1;
            keep
        });
    }
}

#[cfg(test)]
#[path = "aggregate_tests.rs"]
mod tests;
