//! Judging one detection: is it a confident match for one product?
//!
//! A detection passes when its class is allowed, its detector score is high enough, its
//! box is usable, its best catalog candidate reaches `min_similarity`, and that candidate
//! leads the second-best *different* product by `margin` (several catalog images of the
//! same product do not compete with each other). When no different product is among the
//! candidates the margin test passes: ask the catalog for `top_k` neighbours so it can bite.

use std::collections::HashSet;

use crate::matching::detection::MatchedDetection;
use crate::matching::{MarginMode, MatchingSettings};

/// The verdict on one detection.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// A confident match: the product and its similarity; `bbox` clamped to the picture.
    Confident {
        product_id: String,
        similarity: f32,
        bbox: [f32; 4],
    },
    /// The detector class is not allowed (allow list) or denied (deny list).
    ClassGated,
    LowDetScore,
    /// The box is not finite or has no area inside the picture.
    InvalidBox,
    /// No candidate with a finite similarity and a product id.
    NoCandidates,
    LowSimilarity {
        best: f32,
    },
    LowMargin {
        best: f32,
        second: f32,
    },
}

/// The thresholds of [`MatchingSettings`], ready to apply.
#[derive(Debug, Clone)]
pub struct Rules {
    min_det_score: f32,
    min_similarity: f32,
    margin_mode: MarginMode,
    margin: f32,
    allow: HashSet<String>,
    deny: HashSet<String>,
}

impl Rules {
    pub fn new(settings: &MatchingSettings) -> Self {
        let lower = |v: &[String]| v.iter().map(|c| c.trim().to_lowercase()).collect();
        Self {
            min_det_score: settings.min_det_score,
            min_similarity: settings.min_similarity,
            margin_mode: settings.margin_mode,
            margin: settings.margin,
            allow: lower(&settings.allow_classes),
            deny: lower(&settings.deny_classes),
        }
    }

    /// Class gating (case-insensitive): in the allow list when there is one, and not denied.
    pub fn class_allowed(&self, class_name: &str) -> bool {
        let class = class_name.trim().to_lowercase();
        (self.allow.is_empty() || self.allow.contains(&class)) && !self.deny.contains(&class)
    }

    pub fn judge(&self, det: &MatchedDetection) -> Judgement {
        if !self.class_allowed(&det.class_name) {
            return Judgement::ClassGated;
        }
        if det.det_score.is_nan() || det.det_score < self.min_det_score {
            return Judgement::LowDetScore;
        }
        let Some(bbox) = normalise_box(det.bbox) else {
            return Judgement::InvalidBox;
        };
        let usable = || {
            det.candidates
                .iter()
                .filter(|(id, sim)| !id.is_empty() && sim.is_finite())
        };
        // The list should be best first; do not rely on it.
        let Some((best_id, best)) =
            usable().fold(None::<(&String, f32)>, |acc, (id, sim)| match acc {
                Some((_, b)) if b >= *sim => acc,
                _ => Some((id, *sim)),
            })
        else {
            return Judgement::NoCandidates;
        };
        if best < self.min_similarity {
            return Judgement::LowSimilarity { best };
        }
        let second = usable()
            .filter(|(id, _)| id.as_str() != best_id.as_str())
            .map(|(_, sim)| *sim)
            .fold(None::<f32>, |acc, s| Some(acc.map_or(s, |a| a.max(s))));
        if let Some(second) = second {
            let leads = match self.margin_mode {
                MarginMode::Gap => best - second >= self.margin,
                MarginMode::Ratio => second <= best * (1.0 - self.margin),
            };
            if !leads {
                return Judgement::LowMargin { best, second };
            }
        }
        Judgement::Confident {
            product_id: best_id.clone(),
            similarity: best,
            bbox,
        }
    }
}

/// `[x, y, w, h]` clamped to the unit square; `None` when not finite or without area.
pub fn normalise_box(bbox: [f32; 4]) -> Option<[f32; 4]> {
    if bbox.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let [x, y, w, h] = bbox;
    if x >= 0.0 && y >= 0.0 && w > 0.0 && h > 0.0 && x + w <= 1.0 && y + h <= 1.0 {
        // Already inside: keep it bit for bit.
        return Some(bbox);
    }
    let (x0, y0) = (x.clamp(0.0, 1.0), y.clamp(0.0, 1.0));
    let (x1, y1) = ((x + w).clamp(0.0, 1.0), (y + h).clamp(0.0, 1.0));
    (x1 > x0 && y1 > y0).then_some([x0, y0, x1 - x0, y1 - y0])
}

/// The pixel rectangle `(x, y, width, height)` to crop for the embedder from a normalised
/// box on a `width`×`height` picture, grown by `pad` (a fraction of the box size) on each
/// side and clamped to the picture; at least 1×1. `None` for an unusable box or picture.
pub fn crop_rect(
    bbox: [f32; 4],
    width: u32,
    height: u32,
    pad: f32,
) -> Option<(u32, u32, u32, u32)> {
    if width == 0 || height == 0 || !pad.is_finite() || pad < 0.0 {
        return None;
    }
    let [x, y, w, h] = normalise_box(bbox)?;
    let (px, py) = (w * pad, h * pad);
    let [x, y, w, h] = normalise_box([x - px, y - py, w + 2.0 * px, h + 2.0 * py])?;
    let (fw, fh) = (width as f32, height as f32);
    let left = ((x * fw).floor() as u32).min(width - 1);
    let top = ((y * fh).floor() as u32).min(height - 1);
    let right = (((x + w) * fw).ceil() as u32).clamp(left + 1, width);
    let bottom = (((y + h) * fh).ceil() as u32).clamp(top + 1, height);
    Some((left, top, right - left, bottom - top))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class: &str, score: f32, cands: &[(&str, f32)]) -> MatchedDetection {
        MatchedDetection {
            bbox: [0.1, 0.1, 0.2, 0.2],
            class_name: class.into(),
            det_score: score,
            candidates: cands.iter().map(|(p, s)| (p.to_string(), *s)).collect(),
            embedding: None,
        }
    }

    fn rules(edit: impl FnOnce(&mut MatchingSettings)) -> Rules {
        let mut s = MatchingSettings {
            min_similarity: 0.6,
            margin: 0.05,
            min_det_score: 0.3,
            ..MatchingSettings::default()
        };
        edit(&mut s);
        Rules::new(&s)
    }

    #[test]
    fn confident_when_above_threshold_and_margin() {
        let r = rules(|_| {});
        let j = r.judge(&det("bottle", 0.9, &[("milk", 0.8), ("juice", 0.7)]));
        assert_eq!(
            j,
            Judgement::Confident {
                product_id: "milk".into(),
                similarity: 0.8,
                bbox: [0.1, 0.1, 0.2, 0.2]
            }
        );
    }

    #[test]
    fn thresholds_reject() {
        let r = rules(|_| {});
        assert_eq!(
            r.judge(&det("bottle", 0.2, &[("milk", 0.9)])),
            Judgement::LowDetScore
        );
        assert_eq!(
            r.judge(&det("bottle", f32::NAN, &[("milk", 0.9)])),
            Judgement::LowDetScore
        );
        assert_eq!(
            r.judge(&det("bottle", 0.9, &[("milk", 0.5)])),
            Judgement::LowSimilarity { best: 0.5 }
        );
        assert_eq!(
            r.judge(&det("bottle", 0.9, &[("milk", 0.8), ("juice", 0.78)])),
            Judgement::LowMargin {
                best: 0.8,
                second: 0.78
            }
        );
        assert_eq!(r.judge(&det("bottle", 0.9, &[])), Judgement::NoCandidates);
        assert_eq!(
            r.judge(&det("bottle", 0.9, &[("", 0.9), ("x", f32::NAN)])),
            Judgement::NoCandidates
        );
    }

    #[test]
    fn margin_counts_only_different_products_and_order_is_not_trusted() {
        let r = rules(|_| {});
        // Two catalog images of the same product, then a distant rival; listed unsorted.
        let j = r.judge(&det(
            "bottle",
            0.9,
            &[("juice", 0.6), ("milk", 0.81), ("milk", 0.8)],
        ));
        assert!(
            matches!(j, Judgement::Confident { ref product_id, similarity, .. } if product_id == "milk" && similarity == 0.81)
        );
        // Only one product among the candidates: no rival, passes.
        let j = r.judge(&det("bottle", 0.9, &[("milk", 0.7), ("milk", 0.69)]));
        assert!(matches!(j, Judgement::Confident { .. }));
    }

    #[test]
    fn ratio_margin() {
        let r = rules(|s| {
            s.margin_mode = MarginMode::Ratio;
            s.margin = 0.1;
        });
        // Limit 0.8 × 0.9 = 0.72: 0.71 passes, 0.73 fails.
        assert!(matches!(
            r.judge(&det("b", 0.9, &[("m", 0.8), ("j", 0.71)])),
            Judgement::Confident { .. }
        ));
        assert!(matches!(
            r.judge(&det("b", 0.9, &[("m", 0.8), ("j", 0.73)])),
            Judgement::LowMargin { .. }
        ));
    }

    #[test]
    fn class_gating_allow_and_deny_case_insensitive() {
        let r = rules(|s| s.deny_classes = vec!["Person".into()]);
        assert_eq!(
            r.judge(&det("person", 0.9, &[("milk", 0.9)])),
            Judgement::ClassGated
        );
        assert!(r.class_allowed("bottle"));
        let r = rules(|s| {
            s.allow_classes = vec!["bottle".into(), "cup".into()];
            s.deny_classes = vec![];
        });
        assert!(r.class_allowed("CUP"));
        assert!(!r.class_allowed("book"));
        assert!(!r.class_allowed(crate::matching::detection::WHOLE_FRAME_CLASS));
    }

    #[test]
    fn whole_frame_fallback_is_judged_normally() {
        let r = rules(|_| {});
        let d = MatchedDetection::whole_frame(vec![("milk".into(), 0.9), ("juice".into(), 0.5)]);
        assert_eq!(
            r.judge(&d),
            Judgement::Confident {
                product_id: "milk".into(),
                similarity: 0.9,
                bbox: [0.0, 0.0, 1.0, 1.0]
            }
        );
    }

    #[test]
    fn boxes_are_clamped_or_refused() {
        assert_eq!(
            normalise_box([-0.5, 0.5, 1.0, 1.0]),
            Some([0.0, 0.5, 0.5, 0.5])
        );
        assert_eq!(normalise_box([0.2, 0.2, 0.0, 0.3]), None);
        assert_eq!(normalise_box([1.2, 0.2, 0.3, 0.3]), None);
        assert_eq!(normalise_box([0.2, f32::INFINITY, 0.3, 0.3]), None);
        let r = rules(|_| {});
        let mut d = det("bottle", 0.9, &[("milk", 0.9)]);
        d.bbox = [0.5, 0.5, -0.1, 0.2];
        assert_eq!(r.judge(&d), Judgement::InvalidBox);
    }

    #[test]
    fn crop_rect_pads_and_clamps() {
        assert_eq!(
            crop_rect([0.25, 0.25, 0.5, 0.5], 640, 360, 0.0),
            Some((160, 90, 320, 180))
        );
        // Half the box size added on each side, clamped at the picture's left edge.
        assert_eq!(
            crop_rect([0.0, 0.5, 0.5, 0.25], 64, 64, 0.5),
            Some((0, 24, 48, 32))
        );
        // A sliver still gives one pixel.
        assert_eq!(
            crop_rect([0.999, 0.0, 0.0005, 1.0], 100, 10, 0.0),
            Some((99, 0, 1, 10))
        );
        assert_eq!(crop_rect([0.0, 0.0, 1.0, 1.0], 0, 10, 0.0), None);
        assert_eq!(crop_rect([0.0, 0.0, 1.0, 1.0], 10, 10, f32::NAN), None);
        assert_eq!(crop_rect([f32::NAN, 0.0, 1.0, 1.0], 10, 10, 0.0), None);
    }

    proptest::proptest! {
        #[test]
        fn crop_rect_stays_inside(
            x in -2.0f32..2.0, y in -2.0f32..2.0, w in -1.0f32..3.0, h in -1.0f32..3.0,
            width in 1u32..4000, height in 1u32..4000, pad in 0.0f32..1.0,
        ) {
            if let Some((l, t, cw, ch)) = crop_rect([x, y, w, h], width, height, pad) {
                proptest::prop_assert!(cw >= 1 && ch >= 1);
                proptest::prop_assert!(l + cw <= width && t + ch <= height);
            }
            if let Some([bx, by, bw, bh]) = normalise_box([x, y, w, h]) {
                proptest::prop_assert!(bx >= 0.0 && by >= 0.0 && bw > 0.0 && bh > 0.0);
                proptest::prop_assert!(bx + bw <= 1.0 + 1e-6 && by + bh <= 1.0 + 1e-6);
            }
        }
    }
}
