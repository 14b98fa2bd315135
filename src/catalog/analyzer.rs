//! detect → crop → embed → search for one picture: what `catalog query` prints and what
//! the live pipeline runs on sampled frames. Catalog building uses the same crop and
//! embedding code ([`embed_regions`], [`main_region`]) so both sides agree.

use std::sync::Arc;

use serde::Serialize;

use super::reuse::{Luma, RegionMemory};
use super::{Catalog, CatalogError, CatalogSettings};
use crate::frame::I420Image;
use crate::inference::fair::FairSlots;
use crate::inference::{BBox, Crop, Detection, Detector, Embedder, Models, Rect, RgbImage};

/// The candidates of one region of a picture.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionMatch {
    /// Normalised `x, y, w, h` of the region searched (the detection's box, or the whole
    /// picture).
    pub bbox: BBox,
    /// The detection the region came from (`None`: the whole picture).
    pub detection: Option<Detection>,
    /// Best products first, `(product id, cosine score)`, at or above `min_score`.
    pub candidates: Vec<(String, f32)>,
    /// The region's query embedding (embedder space, before any projection).
    #[serde(skip)]
    pub embedding: Option<Arc<[f32]>>,
}

/// Everything found in one picture.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrameAnalysis {
    pub width: u32,
    pub height: u32,
    pub regions: Vec<RegionMatch>,
    /// Where the time went.
    #[serde(skip)]
    pub timings: AnalysisTimings,
    /// Regions embedded by their first view alone (`catalog.query_views_top`,
    /// `catalog.query_views_within`, `catalog.query_views_floor_margin`).
    #[serde(skip)]
    pub first_view_only: usize,
}

/// Time spent in each step of [`Analyzer::analyze`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AnalysisTimings {
    pub detect: std::time::Duration,
    pub embed: std::time::Duration,
    pub search: std::time::Duration,
}

/// One product found in a picture, with the region where it scored best.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Match {
    pub product_id: String,
    pub score: f32,
    /// Normalised `[x, y, w, h]`.
    pub bbox: [f32; 4],
}

impl FrameAnalysis {
    /// Products over all regions, each once with its best score, best first.
    pub fn best_matches(&self, k: usize) -> Vec<Match> {
        let mut out: Vec<Match> = Vec::new();
        for r in &self.regions {
            for (pid, score) in &r.candidates {
                match out.iter_mut().find(|m| &m.product_id == pid) {
                    Some(m) if m.score >= *score => {}
                    Some(m) => {
                        m.score = *score;
                        m.bbox = r.bbox.as_array();
                    }
                    None => out.push(Match {
                        product_id: pid.clone(),
                        score: *score,
                        bbox: r.bbox.as_array(),
                    }),
                }
            }
        }
        out.sort_by(|a, b| b.score.total_cmp(&a.score));
        out.truncate(k);
        out
    }
}

/// One shared embedding per region, in order.
type Embeddings = Vec<Arc<[f32]>>;

/// The region of `view` (a centre fraction) of `rect`.
fn view_rect(rect: Rect, view: f32) -> Rect {
    rect.scaled(view)
}

/// The embeddings of each view (centre crop) of each region: `[region][view]`.
pub fn embed_region_views(
    embedder: &Embedder,
    img: &RgbImage,
    regions: &[Rect],
    views: &[f32],
) -> Result<Vec<Vec<Vec<f32>>>, CatalogError> {
    let views: &[f32] = if views.is_empty() { &[1.0] } else { views };
    let crops: Vec<Crop<'_>> = regions
        .iter()
        .flat_map(|r| {
            views.iter().map(move |&v| Crop {
                image: img,
                rect: view_rect(*r, v),
            })
        })
        .collect();
    let embs = embedder.embed_batch(&crops)?;
    Ok(embs.chunks(views.len()).map(|g| g.to_vec()).collect())
}

/// The views of one region averaged into one embedding, L2-normalised.
pub fn average_views(views: &[Vec<f32>]) -> Vec<f32> {
    let mut mean = vec![0f32; views.first().map(Vec::len).unwrap_or(0)];
    for e in views {
        for (m, x) in mean.iter_mut().zip(e) {
            *m += x;
        }
    }
    crate::inference::postprocess::l2_normalize(&mut mean);
    mean
}

/// One embedding per region: the average of its views (centre crops), L2-normalised.
pub fn embed_regions(
    embedder: &Embedder,
    img: &RgbImage,
    regions: &[Rect],
    views: &[f32],
) -> Result<Vec<Vec<f32>>, CatalogError> {
    Ok(embed_region_views(embedder, img, regions, views)?
        .iter()
        .map(|v| average_views(v))
        .collect())
}

/// The detection most likely to be "the product" of a product photo: the best
/// score × area, or `None` when nothing was detected.
pub fn main_region(detections: &[Detection]) -> Option<&Detection> {
    detections
        .iter()
        .max_by(|a, b| (a.score * a.bbox.area()).total_cmp(&(b.score * b.bbox.area())))
}

/// A detection's box grown by `margin` (clamping happens when the crop is taken).
pub fn detection_rect(d: &Detection, img: &RgbImage, margin: f32) -> Rect {
    d.bbox.to_rect(img.width, img.height).scaled(margin)
}

/// Runs the whole matching path for single pictures; cheap to clone, shared by channels.
#[derive(Clone)]
pub struct Analyzer {
    detector: Arc<Detector>,
    embedder: Arc<Embedder>,
    catalog: Arc<Catalog>,
    settings: CatalogSettings,
    /// Analyses admitted first come, first served, as many at once as the models have
    /// sessions (every clone, so every channel, shares them).
    slots: Arc<FairSlots>,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Analyzer({:?}, {:?})", self.detector, self.embedder)
    }
}

impl Analyzer {
    /// Fails if the catalog was built with another embedder.
    pub fn new(
        models: &Models,
        catalog: Arc<Catalog>,
        settings: &CatalogSettings,
    ) -> Result<Self, CatalogError> {
        catalog.check_embedder(
            models.embedder.name(),
            models.embedder.sha256(),
            models.embedder.dim(),
        )?;
        Ok(Self {
            detector: models.detector.clone(),
            embedder: models.embedder.clone(),
            catalog,
            settings: settings.clone(),
            slots: Arc::new(FairSlots::new(
                models.detector.sessions().min(models.embedder.sessions()),
            )),
        })
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Detect, crop, embed, search one picture; `k` candidates per region.
    pub fn analyze(&self, img: &RgbImage, k: usize) -> Result<FrameAnalysis, CatalogError> {
        self.analyze_reusing(img, k, None, None)
    }

    /// [`Self::analyze`], re-embedding only the regions `memory` (at media time `pts_ns`)
    /// has no embedding for; the memory then holds this picture's regions. `cue_similarity`
    /// is what the matching stage asks of a cue: a region whose first view is more than
    /// `catalog.query_views_floor_margin` below it keeps that view alone.
    pub fn analyze_reusing(
        &self,
        img: &RgbImage,
        k: usize,
        memory: Option<(&mut RegionMemory, u64)>,
        cue_similarity: Option<f32>,
    ) -> Result<FrameAnalysis, CatalogError> {
        let margin = self.settings.query_views_floor_margin;
        let floor = cue_similarity.filter(|_| margin > 0.0).map(|s| s - margin);
        let slot = self.slots.acquire();
        let t0 = std::time::Instant::now();
        let (rects, sources) = self.regions(img)?;
        let detect = t0.elapsed();
        let t1 = std::time::Instant::now();
        let (embs, first_view_only) = match memory {
            Some((m, pts_ns)) if m.enabled() => {
                self.embed_reusing(img, &rects, &sources, m, pts_ns, floor)?
            }
            _ => {
                let (e, first) = self.embed_gated(img, &rects, floor)?;
                (e.into_iter().map(Arc::from).collect(), first)
            }
        };
        drop(slot);
        let t2 = std::time::Instant::now();
        let hits = self.catalog.search_batch(&embs, k)?;
        let timings = AnalysisTimings {
            detect,
            embed: t2 - t1,
            search: t2.elapsed(),
        };
        let min_score = self.settings.min_score;
        let regions = rects
            .iter()
            .zip(sources)
            .zip(hits)
            .zip(embs)
            .map(|(((r, det), cands), embedding)| RegionMatch {
                bbox: det
                    .as_ref()
                    .map(|d| d.bbox)
                    .unwrap_or_else(|| r.to_bbox(img.width, img.height)),
                detection: det,
                candidates: cands
                    .into_iter()
                    .filter(|(_, sc)| *sc >= min_score)
                    .collect(),
                embedding: Some(embedding),
            })
            .collect();
        Ok(FrameAnalysis {
            width: img.width,
            height: img.height,
            regions,
            timings,
            first_view_only,
        })
    }

    /// The regions searched: the best detections, then the whole picture.
    fn regions(&self, img: &RgbImage) -> Result<(Vec<Rect>, Vec<Option<Detection>>), CatalogError> {
        let s = &self.settings;
        let mut dets = if s.query_detections > 0 {
            self.detector.detect(img)?
        } else {
            Vec::new()
        };
        dets.sort_by(|a, b| b.score.total_cmp(&a.score));
        dets.truncate(s.query_detections);
        let mut rects: Vec<Rect> = dets
            .iter()
            .map(|d| detection_rect(d, img, s.box_margin))
            .collect();
        let mut sources: Vec<Option<Detection>> = dets.into_iter().map(Some).collect();
        if s.query_whole_image || rects.is_empty() {
            rects.push(img.full_rect());
            sources.push(None);
        }
        Ok((rects, sources))
    }

    /// One embedding per region (`catalog.query_views` averaged). With
    /// `catalog.query_views_top` or `catalog.query_views_within`, every region is embedded
    /// by its first view, searched, and only the best-matching ones (the top N, those
    /// within the margin of the best) get the other views; a region that matches nothing
    /// well (a hand, a face, the studio) keeps its first view and costs one crop, not three.
    ///
    /// With a `floor`, so does every region whose first view's best similarity is below it
    /// (it cannot become a cue). Also returns how many regions kept their first view alone.
    ///
    /// A region whose crop is another's (a detection that fills the picture, clipped to
    /// it, is the whole picture) is embedded once.
    fn embed_gated(
        &self,
        img: &RgbImage,
        rects: &[Rect],
        floor: Option<f32>,
    ) -> Result<(Vec<Vec<f32>>, usize), CatalogError> {
        let mut unique: Vec<Rect> = Vec::with_capacity(rects.len());
        let slots: Vec<usize> = rects
            .iter()
            .map(|r| {
                unique.iter().position(|u| u == r).unwrap_or_else(|| {
                    unique.push(*r);
                    unique.len() - 1
                })
            })
            .collect();
        let (embs, full) = self.embed_unique(img, &unique, floor)?;
        let first_view_only = slots.iter().filter(|&&i| !full[i]).count();
        if unique.len() == rects.len() {
            // No shared crop: already one per region, in order.
            return Ok((embs, first_view_only));
        }
        let out = slots.iter().map(|&i| embs[i].clone()).collect();
        Ok((out, first_view_only))
    }

    /// One embedding per region, and whether it got every view.
    fn embed_unique(
        &self,
        img: &RgbImage,
        rects: &[Rect],
        floor: Option<f32>,
    ) -> Result<(Vec<Vec<f32>>, Vec<bool>), CatalogError> {
        let views = &self.settings.query_views;
        let (top, within) = (
            self.settings.query_views_top,
            self.settings.query_views_within,
        );
        let relative = rects.len() > 1 && ((top > 0 && rects.len() > top) || within > 0.0);
        if views.len() < 2 || rects.is_empty() || !(relative || floor.is_some()) {
            let all = embed_regions(&self.embedder, img, rects, views)?;
            return Ok((all, vec![true; rects.len()]));
        }
        let first = embed_regions(&self.embedder, img, rects, &views[..1])?;
        let best: Vec<f32> = self
            .catalog
            .search_batch(&first, 1)?
            .iter()
            .map(|c| c.first().map_or(f32::NEG_INFINITY, |(_, s)| *s))
            .collect();
        let mut chosen: Vec<usize> = (0..rects.len()).collect();
        chosen.sort_by(|&a, &b| best[b].total_cmp(&best[a]));
        let lead = best[chosen[0]];
        chosen.truncate(if top > 0 { top } else { rects.len() });
        chosen.retain(|&i| within <= 0.0 || best[i] >= lead - within);
        chosen.retain(|&i| floor.is_none_or(|f| best[i] >= f));
        let chosen_rects: Vec<Rect> = chosen.iter().map(|&i| rects[i]).collect();
        let more = if chosen_rects.is_empty() {
            Vec::new()
        } else {
            embed_region_views(&self.embedder, img, &chosen_rects, &views[1..])?
        };
        let mut out = first;
        let mut full = vec![false; rects.len()];
        for (&i, rest) in chosen.iter().zip(more) {
            let all: Vec<Vec<f32>> = std::iter::once(out[i].clone()).chain(rest).collect();
            out[i] = average_views(&all);
            full[i] = true;
        }
        Ok((out, full))
    }

    /// Embeddings of `rects`: remembered ones where the region did not change, the rest
    /// embedded in one batch.
    fn embed_reusing(
        &self,
        img: &RgbImage,
        rects: &[Rect],
        sources: &[Option<Detection>],
        memory: &mut RegionMemory,
        pts_ns: u64,
        floor: Option<f32>,
    ) -> Result<(Embeddings, usize), CatalogError> {
        let picture = Luma::of(img);
        let found: Vec<Option<(Arc<[f32]>, u64)>> = rects
            .iter()
            .zip(sources)
            .map(|(r, d)| memory.lookup(&picture, r, d.is_none(), pts_ns))
            .collect();
        let missing: Vec<Rect> = rects
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|(r, _)| *r)
            .collect();
        let (fresh, first_view_only) = self.embed_gated(img, &missing, floor)?;
        memory.reused += (rects.len() - missing.len()) as u64;
        memory.embedded += missing.len() as u64;
        let mut found = found;
        let empty = found.iter_mut().filter(|f| f.is_none());
        for (slot, e) in empty.zip(fresh) {
            *slot = Some((Arc::from(e), pts_ns));
        }
        // One embedding per missing region came back: every slot is filled.
        let remembered: Vec<(Rect, bool, Arc<[f32]>, u64)> = rects
            .iter()
            .zip(sources)
            .zip(found)
            .filter_map(|((r, d), f)| f.map(|(e, born)| (*r, d.is_none(), e, born)))
            .collect();
        let out = remembered.iter().map(|(_, _, e, _)| e.clone()).collect();
        memory.remember(picture, remembered);
        Ok((out, first_view_only))
    }

    /// A decoded video frame.
    pub fn analyze_i420(&self, img: &I420Image, k: usize) -> Result<FrameAnalysis, CatalogError> {
        self.analyze(&RgbImage::from_i420(img), k)
    }

    /// `catalog query`: the best `k` products of a picture file, one line of JSON.
    pub fn query(&self, img: &RgbImage, k: usize) -> Result<Vec<Match>, CatalogError> {
        Ok(self.analyze(img, k)?.best_matches(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, w: f32, score: f32) -> Detection {
        Detection {
            bbox: BBox { x, y: 0.0, w, h: w },
            class_id: 0,
            class_name: "c".into(),
            score,
        }
    }

    #[test]
    fn main_region_prefers_big_confident() {
        let d = vec![det(0.0, 0.1, 0.9), det(0.2, 0.6, 0.5), det(0.5, 0.3, 0.6)];
        assert_eq!(main_region(&d).unwrap().bbox.x, 0.2);
        assert!(main_region(&[]).is_none());
    }

    #[test]
    fn best_matches_dedupes_per_product() {
        let a = FrameAnalysis {
            width: 10,
            height: 10,
            regions: vec![
                RegionMatch {
                    bbox: BBox {
                        x: 0.0,
                        y: 0.0,
                        w: 0.5,
                        h: 0.5,
                    },
                    detection: None,
                    candidates: vec![("p1".into(), 0.8), ("p2".into(), 0.5)],
                    embedding: None,
                },
                RegionMatch {
                    bbox: BBox {
                        x: 0.5,
                        y: 0.5,
                        w: 0.5,
                        h: 0.5,
                    },
                    detection: None,
                    candidates: vec![("p2".into(), 0.9), ("p3".into(), 0.1)],
                    embedding: None,
                },
            ],
            timings: AnalysisTimings::default(),
            first_view_only: 0,
        };
        let m = a.best_matches(5);
        assert_eq!(
            m.iter().map(|m| m.product_id.as_str()).collect::<Vec<_>>(),
            vec!["p2", "p1", "p3"]
        );
        assert_eq!(m[0].bbox, [0.5, 0.5, 0.5, 0.5]);
        assert_eq!(a.best_matches(1).len(), 1);
    }
}
