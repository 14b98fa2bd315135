//! Matching and cues: the pure logic between inference and the published cues.
//!
//! Per channel, frames flow through three pieces, none of which does I/O, async or reads a
//! clock (every time comes from the frames themselves):
//!
//! 1. [`Sampler`] picks the frames that go to inference: the first frame `settle_ms` after
//!    each shot start, then one every `interval_ms` within the shot.
//! 2. The pipeline's work queue (`pipeline::work::WorkQueue`, not here: it carries frames
//!    between threads) holds the sampled frames and shot events for the inference thread:
//!    bounded, and when full the oldest *sample* is dropped and counted, so a live channel
//!    never falls behind its live edge because inference is slow.
//! 3. Inference (detector → crops → embedder → catalog top-k, elsewhere) turns each sampled
//!    frame into a [`SampleResult`]; [`CueBuilder`] judges every detection against the
//!    thresholds ([`rules`]), aggregates confident matches over the shot and emits
//!    [`CueEvent`](crate::cue::CueEvent)s: start, update, end.
//!
//! `docs/cues.md` describes how a cue is born, updated and ended, with every setting.

pub mod aggregate;
pub mod detection;
pub mod evidence;
pub mod gate;
pub mod rules;
pub mod sampler;

use serde::{Deserialize, Serialize};

pub use aggregate::{CueBuilder, CueStats, SampleResult, fill_products};
pub use detection::{MatchedDetection, WHOLE_FRAME_CLASS};
pub use evidence::{CueEvidence, EvidenceStore};
pub use rules::{Judgement, Rules, crop_rect};
pub use sampler::{SampleTicket, Sampler, SamplerStats};

/// Errors of the matching module.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MatchingError {
    /// A `[matching]` setting is out of range; `key` is the name inside `[matching]`.
    #[error("matching.{key}: {why}")]
    Setting { key: String, why: String },
}

impl MatchingError {
    /// The offending key inside `[matching]`.
    pub fn key(&self) -> &str {
        match self {
            MatchingError::Setting { key, .. } => key,
        }
    }
    pub fn reason(&self) -> &str {
        match self {
            MatchingError::Setting { why, .. } => why,
        }
    }
}

fn setting(key: &str, why: impl Into<String>) -> MatchingError {
    MatchingError::Setting {
        key: key.to_string(),
        why: why.into(),
    }
}

/// How similarities are compared with the margin: the best product must beat the
/// second-best *different* product by an absolute gap, or by a ratio (Lowe's test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarginMode {
    /// `best - second >= margin`.
    Gap,
    /// `second <= best * (1 - margin)`.
    Ratio,
}

/// How far a sibling's claim on an object reaches within a shot (`sibling_scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiblingScope {
    /// Only a sibling at the same place (boxes overlapping by `sibling_overlap`).
    Place,
    /// A sibling anywhere in the shot.
    Shot,
}

/// The scale a catalog's similarities are on, which picks the thresholds
/// ([`MatchingSettings::for_scale`]): cosines in a learned projection, raw embedder
/// cosines, or cosines of queries centred on the catalog's query-domain mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimilarityScale {
    Learned,
    Raw,
    Centred,
}

impl SimilarityScale {
    /// A catalog's scale: a learned projection wins; else centred when its searches centre
    /// the queries.
    pub fn of(learned_projection: bool, centred_queries: bool) -> Self {
        match (learned_projection, centred_queries) {
            (true, _) => Self::Learned,
            (false, true) => Self::Centred,
            (false, false) => Self::Raw,
        }
    }
}

/// Sampling, matching and cue settings (`[matching]` in the config). Defaults suit the
/// EfficientNet-Lite0 embedder with L2-normalised vectors and inner-product search
/// (cosine similarity): same object about 0.8–0.9, different objects about 0.2–0.5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchingSettings {
    // --- sampling ---
    /// Wait this long after a shot starts before its first sample (lets a transition end).
    pub settle_ms: u64,
    /// Then sample one frame every this many ms within the shot.
    pub interval_ms: u64,
    /// Sampled frames that may wait for inference per channel; when full the oldest is
    /// dropped and counted. Live HLS hands over a whole segment's frames at once, so this
    /// should hold one segment's samples (segment duration / `interval_ms`).
    pub queue_capacity: usize,
    /// Change-gated inference (see [`gate`]): a sample that barely changed since the last
    /// analysed sample of its shot reuses that result.
    pub change_gate: bool,
    /// Largest mean change of the luma thumbnail (0–255 levels) that still counts as the
    /// same picture.
    pub change_gate_mean: f32,
    /// Largest change of any one thumbnail cell (a region) that still counts as the same.
    pub change_gate_cell: f32,
    /// A result is reused for at most this long (media time) before a fresh analysis.
    pub change_gate_max_age_ms: u64,
    /// In an analysed sample, a region (a detection or the whole picture) whose box
    /// overlaps one of the previous analysed sample of the shot by this IoU, and whose
    /// pixels did not change between the two samples (`change_gate_mean` /
    /// `change_gate_cell` on an 8x8 thumbnail of both boxes' area in both pictures), reuses
    /// that region's embedding; 0 turns it off.
    pub change_gate_region_iou: f32,
    /// A region's embedding is reused for at most this long (media time).
    pub change_gate_region_max_age_ms: u64,
    // --- judging one detection ---
    /// Catalog neighbours the caller asks for per crop (the margin test looks among them
    /// for the second-best different product).
    pub top_k: usize,
    /// Detections below this detector score are ignored.
    pub min_det_score: f32,
    /// Absolute similarity the best product must reach.
    pub min_similarity: f32,
    /// `gap` or `ratio`: how `margin` is applied.
    pub margin_mode: MarginMode,
    /// Required lead of the best product over the second-best different one (see
    /// `margin_mode`). 0 disables the test.
    pub margin: f32,
    /// `min_similarity` and `margin` for a catalog without a learned projection (built
    /// from catalog images alone): its raw embedder cosines are lower and closer together
    /// (right matches about 0.5–0.7, look-alikes within 0.03), so the same thresholds
    /// would announce nothing. See [`Self::for_catalog`].
    pub raw_min_similarity: f32,
    pub raw_margin: f32,
    /// `min_similarity` and `margin` for a catalog without a learned projection whose
    /// queries are centred on its query-domain mean (`catalog.domain_centring`): centred
    /// cosines are lower still (right matches about 0.2–0.45 on Grocery val), so the raw
    /// thresholds would announce almost nothing. See [`Self::for_scale`].
    pub centred_min_similarity: f32,
    pub centred_margin: f32,
    /// Detector classes allowed to propose products; empty: all classes.
    pub allow_classes: Vec<String>,
    /// Detector classes never matched (after `allow_classes`).
    pub deny_classes: Vec<String>,
    // --- aggregation over the shot ---
    /// Confident samples of the same shot needed before a product becomes a cue.
    pub min_samples: u32,
    /// One sample at or above this similarity is enough on its own (above 1: never).
    pub single_sample_score: f32,
    /// A product not seen for longer than this is lost: its cue ends (and a pending
    /// product starts counting again).
    pub lost_after_ms: u64,
    /// The same product is not announced again on a channel until this long after its
    /// previous cue ended (also across shots).
    pub cooldown_ms: u64,
    /// At most this many cues start in one shot.
    pub max_cues_per_shot: usize,
    /// At most one update per cue per this many ms.
    pub update_interval_ms: u64,
    /// A score change smaller than this alone does not trigger an update.
    pub score_epsilon: f32,
    /// Longest box track a cue carries; a longer one is thinned (every other box).
    pub max_boxes: usize,
    // --- one object, one cue ---
    /// Two products are siblings for a sighting when the second is among its candidates
    /// within this much similarity of the best (fine-grained variants of one brand). 0
    /// turns sibling suppression off.
    pub sibling_gap: f32,
    /// Sibling sightings whose boxes overlap at least this much (intersection over the
    /// smaller box; a box inside the whole-frame region overlaps it fully) are one object: in one sample only the most similar counts, and in one shot a
    /// sibling of an open cue at the same place starts no cue of its own (`sibling_scope`
    /// says how far that reaches).
    pub sibling_overlap: f32,
    /// Where a look-alike's claim on the object reaches across samples: `place` (its box
    /// overlaps by `sibling_overlap`) or `shot` (anywhere in the shot: a product one
    /// object at a time, as in a product shot). With `shot`, a sibling of an open cue, or
    /// of a pending product with more confident samples (then more similarity), starts no
    /// cue of its own.
    pub sibling_scope: SiblingScope,
    /// A product that is the best candidate of at least this many regions of one sample
    /// (detections and the whole picture, each passing the class, detector-score and
    /// `min_similarity` tests) is a confident sighting there even when no region leads
    /// its runner-up by `margin`: the regions agree. 0 turns it off. For a catalog with a
    /// learned projection, whose margin already separates look-alikes.
    pub agree_regions: u32,
    /// `agree_regions` for a catalog without a learned projection, where look-alikes lie
    /// within 0.01 of each other and the margin alone cannot decide (see
    /// [`Self::for_catalog`]).
    pub raw_agree_regions: u32,
    // --- learning from the operator ---
    /// Query embeddings a cue keeps as its evidence (its most similar sightings), for
    /// operator feedback to store as labelled photos; 0 keeps none.
    pub evidence_per_cue: usize,
    /// Cues per channel whose evidence is kept for feedback; the oldest is forgotten
    /// first (counted in `shopcue_dropped_total{kind="evidence"}`).
    pub evidence_cues: usize,
}

impl Default for MatchingSettings {
    fn default() -> Self {
        Self {
            settle_ms: 120,
            interval_ms: 250,
            queue_capacity: 8,
            change_gate: true,
            change_gate_mean: 3.0,
            change_gate_cell: 16.0,
            change_gate_max_age_ms: 1_000,
            change_gate_region_iou: 0.8,
            change_gate_region_max_age_ms: 3_000,
            top_k: 5,
            min_det_score: 0.25,
            min_similarity: 0.55,
            margin_mode: MarginMode::Gap,
            margin: 0.05,
            raw_min_similarity: 0.5,
            raw_margin: 0.02,
            centred_min_similarity: 0.3,
            centred_margin: 0.02,
            allow_classes: Vec::new(),
            deny_classes: vec!["person".into()],
            min_samples: 2,
            single_sample_score: 0.85,
            lost_after_ms: 1_000,
            cooldown_ms: 10_000,
            max_cues_per_shot: 3,
            update_interval_ms: 500,
            score_epsilon: 0.02,
            max_boxes: 32,
            sibling_gap: 0.15,
            sibling_overlap: 0.5,
            sibling_scope: SiblingScope::Shot,
            agree_regions: 0,
            raw_agree_regions: 2,
            evidence_per_cue: 3,
            evidence_cues: 256,
        }
    }
}

impl MatchingSettings {
    /// The change gate's settings.
    pub fn gate(&self) -> gate::GateSettings {
        gate::GateSettings {
            enabled: self.change_gate,
            mean: self.change_gate_mean,
            cell: self.change_gate_cell,
            max_age_ms: self.change_gate_max_age_ms,
        }
    }

    /// The settings for a catalog: as they are when it has a learned projection, with
    /// `raw_min_similarity`, `raw_margin` and `raw_agree_regions` in place of
    /// `min_similarity`, `margin` and `agree_regions` when it has none.
    pub fn for_catalog(&self, learned_projection: bool) -> Self {
        self.for_scale(SimilarityScale::of(learned_projection, false))
    }

    /// The settings for a catalog's similarity scale: as they are for a learned projection;
    /// `raw_*` (or `centred_min_similarity` / `centred_margin`) in place of
    /// `min_similarity`, `margin` and `agree_regions` without one.
    pub fn for_scale(&self, scale: SimilarityScale) -> Self {
        let mut s = self.clone();
        let (min, margin) = match scale {
            SimilarityScale::Learned => return s,
            SimilarityScale::Raw => (self.raw_min_similarity, self.raw_margin),
            SimilarityScale::Centred => (self.centred_min_similarity, self.centred_margin),
        };
        s.min_similarity = min;
        s.margin = margin;
        s.agree_regions = self.raw_agree_regions;
        s.single_sample_score = self.single_sample_score.max(min);
        s
    }

    /// Checks ranges; the error names the key inside `[matching]`.
    pub fn validate(&self) -> Result<(), MatchingError> {
        self.validate_sampling()?;
        self.validate_judging()?;
        self.validate_cues()?;
        self.validate_evidence()
    }

    /// Sampling, its queue and the change gate.
    fn validate_sampling(&self) -> Result<(), MatchingError> {
        if self.interval_ms == 0 {
            return Err(setting("interval_ms", "must be greater than 0"));
        }
        if self.settle_ms > 60_000 {
            return Err(setting("settle_ms", "must be at most 60000"));
        }
        if self.queue_capacity == 0 {
            return Err(setting("queue_capacity", "must be at least 1"));
        }
        if !(0.0..=255.0).contains(&self.change_gate_mean) {
            return Err(setting("change_gate_mean", "must be from 0 to 255"));
        }
        if !(0.0..=255.0).contains(&self.change_gate_cell) {
            return Err(setting("change_gate_cell", "must be from 0 to 255"));
        }
        if !(0.0..=1.0).contains(&self.change_gate_region_iou) {
            return Err(setting("change_gate_region_iou", "must be from 0 to 1"));
        }
        if self.change_gate_region_max_age_ms > 600_000 {
            return Err(setting(
                "change_gate_region_max_age_ms",
                "must be at most 600000",
            ));
        }
        if self.change_gate_max_age_ms > 60_000 {
            return Err(setting("change_gate_max_age_ms", "must be at most 60000"));
        }
        Ok(())
    }

    /// Search and judging: candidates, thresholds (learned and raw) and class lists.
    fn validate_judging(&self) -> Result<(), MatchingError> {
        if self.top_k == 0 || self.top_k > 1000 {
            return Err(setting("top_k", "must be from 1 to 1000"));
        }
        if !(0.0..=1.0).contains(&self.min_det_score) {
            return Err(setting("min_det_score", "must be from 0 to 1"));
        }
        // One (similarity, margin) pair per similarity scale.
        for (sim_key, sim, margin_key, margin) in [
            ("min_similarity", self.min_similarity, "margin", self.margin),
            (
                "raw_min_similarity",
                self.raw_min_similarity,
                "raw_margin",
                self.raw_margin,
            ),
            (
                "centred_min_similarity",
                self.centred_min_similarity,
                "centred_margin",
                self.centred_margin,
            ),
        ] {
            if !(sim > 0.0 && sim <= 1.0) {
                return Err(setting(sim_key, "must be greater than 0 and at most 1"));
            }
            if !(0.0..1.0).contains(&margin) {
                return Err(setting(margin_key, "must be from 0 to below 1"));
            }
        }
        for (key, list) in [
            ("allow_classes", &self.allow_classes),
            ("deny_classes", &self.deny_classes),
        ] {
            if list.iter().any(|c| c.trim().is_empty()) {
                return Err(setting(key, "class names must not be empty"));
            }
        }
        if let Some(c) = self
            .allow_classes
            .iter()
            .find(|c| self.deny_classes.contains(c))
        {
            return Err(setting(
                "deny_classes",
                format!("`{c}` is also in allow_classes"),
            ));
        }
        Ok(())
    }

    /// Cue building: when a cue starts, updates and ends, siblings and agreeing regions.
    fn validate_cues(&self) -> Result<(), MatchingError> {
        if self.min_samples == 0 {
            return Err(setting("min_samples", "must be at least 1"));
        }
        if self.single_sample_score.is_nan() || self.single_sample_score < self.min_similarity {
            return Err(setting(
                "single_sample_score",
                "must be at least min_similarity (above 1 disables it)",
            ));
        }
        if self.lost_after_ms == 0 {
            return Err(setting("lost_after_ms", "must be greater than 0"));
        }
        if self.max_cues_per_shot == 0 {
            return Err(setting("max_cues_per_shot", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.score_epsilon) {
            return Err(setting("score_epsilon", "must be from 0 to 1"));
        }
        if !(2..=10_000).contains(&self.max_boxes) {
            return Err(setting("max_boxes", "must be from 2 to 10000"));
        }
        if !(0.0..=1.0).contains(&self.sibling_gap) {
            return Err(setting("sibling_gap", "must be from 0 to 1"));
        }
        if !(self.sibling_overlap > 0.0 && self.sibling_overlap <= 1.0) {
            return Err(setting(
                "sibling_overlap",
                "must be greater than 0 and at most 1",
            ));
        }
        for (key, v) in [
            ("agree_regions", self.agree_regions),
            ("raw_agree_regions", self.raw_agree_regions),
        ] {
            if v == 1 {
                return Err(setting(
                    key,
                    "must be 0 (off) or at least 2 (one region agrees with nothing)",
                ));
            }
        }
        Ok(())
    }

    /// The evidence kept per cue and in all.
    fn validate_evidence(&self) -> Result<(), MatchingError> {
        if self.evidence_per_cue > 32 {
            return Err(setting("evidence_per_cue", "must be at most 32"));
        }
        if self.evidence_cues > 100_000 {
            return Err(setting("evidence_cues", "must be at most 100000"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        MatchingSettings::default().validate().unwrap();
    }

    #[test]
    fn a_catalog_without_projection_gets_the_raw_thresholds() {
        let s = MatchingSettings::default();
        assert_eq!(s.for_catalog(true), s);
        let raw = s.for_catalog(false);
        assert_eq!(s.for_scale(SimilarityScale::Raw), raw);
        assert_eq!(raw.min_similarity, s.raw_min_similarity);
        assert_eq!(raw.margin, s.raw_margin);
        assert_eq!(raw.agree_regions, s.raw_agree_regions);
        raw.validate().unwrap();
        let odd = MatchingSettings {
            single_sample_score: 0.3,
            min_similarity: 0.3,
            ..s
        };
        odd.for_catalog(false).validate().unwrap();
    }

    #[test]
    fn a_catalog_with_centred_queries_gets_the_centred_thresholds() {
        let s = MatchingSettings::default();
        assert_eq!(SimilarityScale::of(true, true), SimilarityScale::Learned);
        assert_eq!(SimilarityScale::of(false, true), SimilarityScale::Centred);
        assert_eq!(SimilarityScale::of(false, false), SimilarityScale::Raw);
        let c = s.for_scale(SimilarityScale::Centred);
        assert_eq!(c.min_similarity, s.centred_min_similarity);
        assert_eq!(c.margin, s.centred_margin);
        assert_eq!(c.agree_regions, s.raw_agree_regions);
        assert_eq!(c.single_sample_score, s.single_sample_score);
        c.validate().unwrap();
    }

    type Edit = Box<dyn Fn(&mut MatchingSettings)>;

    #[test]
    fn bad_values_name_their_key() {
        let cases: Vec<(&str, Edit)> = vec![
            ("interval_ms", Box::new(|s| s.interval_ms = 0)),
            ("settle_ms", Box::new(|s| s.settle_ms = 60_001)),
            ("queue_capacity", Box::new(|s| s.queue_capacity = 0)),
            ("top_k", Box::new(|s| s.top_k = 0)),
            ("min_det_score", Box::new(|s| s.min_det_score = 1.5)),
            ("min_similarity", Box::new(|s| s.min_similarity = 0.0)),
            ("min_similarity", Box::new(|s| s.min_similarity = f32::NAN)),
            ("margin", Box::new(|s| s.margin = 1.0)),
            ("margin", Box::new(|s| s.margin = f32::NAN)),
            (
                "raw_min_similarity",
                Box::new(|s| s.raw_min_similarity = 1.5),
            ),
            ("raw_margin", Box::new(|s| s.raw_margin = -0.1)),
            (
                "centred_min_similarity",
                Box::new(|s| s.centred_min_similarity = 0.0),
            ),
            ("centred_margin", Box::new(|s| s.centred_margin = 1.0)),
            (
                "allow_classes",
                Box::new(|s| s.allow_classes = vec![" ".into()]),
            ),
            (
                "deny_classes",
                Box::new(|s| s.allow_classes = vec!["person".into()]),
            ),
            ("min_samples", Box::new(|s| s.min_samples = 0)),
            (
                "single_sample_score",
                Box::new(|s| s.single_sample_score = 0.1),
            ),
            ("lost_after_ms", Box::new(|s| s.lost_after_ms = 0)),
            ("max_cues_per_shot", Box::new(|s| s.max_cues_per_shot = 0)),
            ("score_epsilon", Box::new(|s| s.score_epsilon = -0.1)),
            ("max_boxes", Box::new(|s| s.max_boxes = 1)),
            ("sibling_gap", Box::new(|s| s.sibling_gap = f32::NAN)),
            ("sibling_overlap", Box::new(|s| s.sibling_overlap = 0.0)),
            ("evidence_per_cue", Box::new(|s| s.evidence_per_cue = 33)),
            ("agree_regions", Box::new(|s| s.agree_regions = 1)),
            ("raw_agree_regions", Box::new(|s| s.raw_agree_regions = 1)),
            ("evidence_cues", Box::new(|s| s.evidence_cues = 100_001)),
        ];
        for (key, edit) in cases {
            let mut s = MatchingSettings::default();
            edit(&mut s);
            match s.validate() {
                Err(MatchingError::Setting { key: k, .. }) => assert_eq!(k, key),
                Ok(()) => panic!("{key}: accepted"),
            }
        }
    }

    #[test]
    fn shipped_config_documents_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/shopcue.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        let section = table.get("matching").cloned().unwrap();
        let parsed: MatchingSettings = section.try_into().unwrap();
        assert_eq!(parsed, MatchingSettings::default());
        // Every key is documented in the snippet.
        let defaults = toml::Value::try_from(MatchingSettings::default()).unwrap();
        for key in defaults.as_table().unwrap().keys() {
            assert!(
                text.contains(&format!("\n{key} =")),
                "config/shopcue.toml lacks `{key}`"
            );
        }
    }

    #[test]
    fn unknown_key_is_refused() {
        let r: Result<MatchingSettings, _> = toml::from_str("intervall_ms = 3");
        assert!(r.is_err());
    }
}
