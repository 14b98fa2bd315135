//! A detection of a sampled frame with its catalog candidates: what inference hands to
//! the matching rules and the per-shot aggregation.

use std::sync::Arc;

/// Class name of the whole-frame fallback detection (see [`MatchedDetection::whole_frame`]).
pub const WHOLE_FRAME_CLASS: &str = "frame";

/// One detection of a sampled frame with its catalog candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchedDetection {
    /// `[x, y, w, h]`, normalised to the picture (0..1).
    pub bbox: [f32; 4],
    /// Detector class (e.g. COCO `bottle`), for class gating.
    pub class_name: String,
    pub det_score: f32,
    /// Catalog neighbours `(product_id, similarity)`, best first (several may name the
    /// same product when the catalog holds several images of it).
    pub candidates: Vec<(String, f32)>,
    /// The region's query embedding (embedder space, before any projection), kept so a
    /// cue can carry its evidence to operator feedback; `None` when not kept.
    pub embedding: Option<Arc<[f32]>>,
}

impl MatchedDetection {
    /// The fallback when the detector found nothing: the whole picture, class
    /// [`WHOLE_FRAME_CLASS`], detector score 1. It is judged like any detection, so an
    /// `allow_classes` list must name `frame` for it to count.
    pub fn whole_frame(candidates: Vec<(String, f32)>) -> Self {
        Self {
            bbox: [0.0, 0.0, 1.0, 1.0],
            class_name: WHOLE_FRAME_CLASS.into(),
            det_score: 1.0,
            candidates,
            embedding: None,
        }
    }
}
