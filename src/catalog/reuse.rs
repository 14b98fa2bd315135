//! Re-embed only new or changed regions: what the last analysed picture of a shot left
//! for the next one. A region of the new picture reuses a remembered region's embedding
//! when both are the same kind (a detection, or the whole picture), their boxes overlap
//! (IoU at least `iou`: the same object), the pixels under both boxes did not change
//! between the two pictures (an 8×8 luma thumbnail of the boxes' union, taken in both
//! pictures at the same place, within `mean` on average and `cell` everywhere, 0–255
//! levels; comparing the same place makes a box that jitters by a pixel still "the same")
//! and the embedding is younger than `max_age_ms` of media time. Everything else is
//! embedded afresh. The catalog search always runs (it is cheap and follows catalog
//! swaps). Pure: no clock, no I/O.

use std::sync::Arc;

use crate::inference::{RgbImage, image::Rect};

/// Cells per side of a region's thumbnail.
const GRID: usize = 8;
/// Points sampled per side of a cell.
const POINTS: usize = 4;

/// When a region may reuse an embedding (keys of `[matching]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReuseSettings {
    pub enabled: bool,
    pub iou: f32,
    pub mean: f32,
    pub cell: f32,
    pub max_age_ms: u64,
}

/// A picture's luma at half resolution (what regions are compared on).
#[derive(Debug, Clone, Default)]
pub struct Luma {
    width: usize,
    height: usize,
    data: Vec<u8>,
}

impl Luma {
    pub fn of(img: &RgbImage) -> Self {
        let (w, h) = (img.width as usize / 2, img.height as usize / 2);
        let stride = img.width as usize;
        let mut data = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                let o = (2 * y * stride + 2 * x) * 3;
                let px = img.data.get(o..o + 3).unwrap_or(&[0, 0, 0]);
                let l =
                    (77 * u32::from(px[0]) + 150 * u32::from(px[1]) + 29 * u32::from(px[2])) >> 8;
                data.push(l as u8);
            }
        }
        Self {
            width: w,
            height: h,
            data,
        }
    }

    /// `GRID`×`GRID` cell means of `rect` (in full-resolution pixels), `POINTS`×`POINTS`
    /// samples per cell; zeros for an empty picture or a rectangle that is not finite.
    fn thumbnail(&self, rect: &Rect) -> [f32; GRID * GRID] {
        let mut cells = [0f32; GRID * GRID];
        let finite = [rect.x, rect.y, rect.w, rect.h]
            .iter()
            .all(|v| v.is_finite());
        if self.width == 0 || self.height == 0 || !finite {
            return cells;
        }
        let r = Rect {
            x: rect.x / 2.0,
            y: rect.y / 2.0,
            w: rect.w / 2.0,
            h: rect.h / 2.0,
        }
        .clamp_to(self.width as u32, self.height as u32);
        let steps = (GRID * POINTS) as f32;
        for (i, cell) in cells.iter_mut().enumerate() {
            let (cx, cy) = (i % GRID, i / GRID);
            let mut sum = 0u32;
            for p in 0..POINTS * POINTS {
                let fx = (cx * POINTS + p % POINTS) as f32 + 0.5;
                let fy = (cy * POINTS + p / POINTS) as f32 + 0.5;
                let x = ((r.x + fx / steps * r.w) as usize).min(self.width - 1);
                let y = ((r.y + fy / steps * r.h) as usize).min(self.height - 1);
                sum += u32::from(self.data.get(y * self.width + x).copied().unwrap_or(0));
            }
            *cell = sum as f32 / (POINTS * POINTS) as f32;
        }
        cells
    }

    /// Mean and largest change of `rect` from `before` to `self`.
    fn change(&self, before: &Luma, rect: &Rect) -> (f32, f32) {
        let (a, b) = (self.thumbnail(rect), before.thumbnail(rect));
        let mut sum = 0.0;
        let mut max: f32 = 0.0;
        for (a, b) in a.iter().zip(&b) {
            let d = (a - b).abs();
            sum += d;
            max = max.max(d);
        }
        (sum / (GRID * GRID) as f32, max)
    }
}

/// The smallest rectangle holding both.
fn union(a: &Rect, b: &Rect) -> Rect {
    let x = a.x.min(b.x);
    let y = a.y.min(b.y);
    Rect {
        x,
        y,
        w: (a.x + a.w).max(b.x + b.w) - x,
        h: (a.y + a.h).max(b.y + b.h) - y,
    }
}

/// Intersection over union of two rectangles (0 when either is empty).
pub fn iou(a: &Rect, b: &Rect) -> f32 {
    let x0 = a.x.max(b.x);
    let y0 = a.y.max(b.y);
    let x1 = (a.x + a.w).min(b.x + b.w);
    let y1 = (a.y + a.h).min(b.y + b.h);
    let inter = (x1 - x0).max(0.0) * (y1 - y0).max(0.0);
    let union = a.w * a.h + b.w * b.h - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// A region the memory holds.
#[derive(Debug, Clone)]
struct Remembered {
    rect: Rect,
    whole: bool,
    embedding: Arc<[f32]>,
    /// Media time the embedding was computed at.
    pts_ns: u64,
}

/// Per-channel memory of the last analysed picture and its regions (one shot).
#[derive(Debug, Clone)]
pub struct RegionMemory {
    settings: ReuseSettings,
    shot: Option<u64>,
    picture: Luma,
    regions: Vec<Remembered>,
    /// Regions that reused an embedding / were embedded, since start.
    pub reused: u64,
    pub embedded: u64,
}

impl RegionMemory {
    pub fn new(settings: ReuseSettings) -> Self {
        Self {
            settings,
            shot: None,
            picture: Luma::default(),
            regions: Vec::new(),
            reused: 0,
            embedded: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// A picture of shot `shot` is about to be analysed: another shot forgets everything.
    pub fn enter_shot(&mut self, shot: u64) {
        if self.shot != Some(shot) {
            self.shot = Some(shot);
            self.regions.clear();
        }
    }

    /// The remembered embedding a region at `rect` of `picture` (media time `pts_ns`) may
    /// reuse, with the time it was computed (`None`: embed it).
    pub fn lookup(
        &self,
        picture: &Luma,
        rect: &Rect,
        whole: bool,
        pts_ns: u64,
    ) -> Option<(Arc<[f32]>, u64)> {
        if !self.settings.enabled {
            return None;
        }
        let s = &self.settings;
        self.regions
            .iter()
            .filter(|r| r.whole == whole)
            .filter(|r| pts_ns.abs_diff(r.pts_ns) / 1_000_000 < s.max_age_ms)
            .filter(|r| iou(&r.rect, rect) >= s.iou)
            .filter(|r| {
                let (mean, max) = picture.change(&self.picture, &union(&r.rect, rect));
                mean <= s.mean && max <= s.cell
            })
            .max_by(|a, b| iou(&a.rect, rect).total_cmp(&iou(&b.rect, rect)))
            .map(|r| (r.embedding.clone(), r.pts_ns))
    }

    /// The analysed picture and its regions `(rect, whole, embedding, computed at)`
    /// replace the memory (reused embeddings keep their age).
    pub fn remember(&mut self, picture: Luma, regions: Vec<(Rect, bool, Arc<[f32]>, u64)>) {
        self.picture = picture;
        self.regions = regions
            .into_iter()
            .map(|(rect, whole, embedding, pts_ns)| Remembered {
                rect,
                whole,
                embedding,
                pts_ns,
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ReuseSettings {
        ReuseSettings {
            enabled: true,
            iou: 0.8,
            mean: 3.0,
            cell: 16.0,
            max_age_ms: 3_000,
        }
    }

    fn rect(x: f32, y: f32, w: f32, h: f32) -> Rect {
        Rect { x, y, w, h }
    }

    /// 100x100: a grey background with a bright 20x20 square at (40, 40).
    fn picture(square: u8) -> RgbImage {
        let mut data = vec![60u8; 100 * 100 * 3];
        for y in 40..60 {
            for x in 40..60 {
                let o = (y * 100 + x) * 3;
                data[o..o + 3].copy_from_slice(&[square; 3]);
            }
        }
        RgbImage {
            width: 100,
            height: 100,
            data,
        }
    }

    #[test]
    fn iou_of_rectangles() {
        let a = rect(0.0, 0.0, 10.0, 10.0);
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &rect(10.0, 0.0, 10.0, 10.0)), 0.0);
        assert!((iou(&a, &rect(5.0, 0.0, 10.0, 10.0)) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(iou(&rect(0.0, 0.0, 0.0, 0.0), &a), 0.0);
        assert_eq!(
            iou(&rect(0.0, 0.0, 0.0, 0.0), &rect(0.0, 0.0, 0.0, 0.0)),
            0.0
        );
    }

    #[test]
    fn an_unchanged_region_reuses_and_a_changed_one_does_not() {
        let mut m = RegionMemory::new(settings());
        m.enter_shot(1);
        let img = picture(200);
        let seen = Luma::of(&img);
        let box_ = rect(35.0, 35.0, 30.0, 30.0);
        let e: Arc<[f32]> = Arc::from(vec![1.0, 0.0]);
        m.remember(seen.clone(), vec![(box_, false, e.clone(), 0)]);
        // Same picture, the box jittered by a pixel: reused, with its birth time.
        let moved = rect(36.0, 35.0, 30.0, 30.0);
        let got = m.lookup(&seen, &moved, false, 500_000_000);
        assert_eq!(got.map(|(e, t)| (e.to_vec(), t)), Some((vec![1.0, 0.0], 0)));
        // The whole picture never reuses a detection's embedding.
        assert!(m.lookup(&seen, &box_, true, 500_000_000).is_none());
        // The square changed colour: embedded afresh.
        let other = Luma::of(&picture(90));
        assert!(m.lookup(&other, &box_, false, 500_000_000).is_none());
        // Elsewhere in the picture: no overlap.
        let far = rect(0.0, 0.0, 30.0, 30.0);
        assert!(m.lookup(&seen, &far, false, 500_000_000).is_none());
        // Too old.
        assert!(m.lookup(&seen, &box_, false, 3_000_000_000).is_none());
        // Another shot forgets.
        m.enter_shot(2);
        assert!(m.lookup(&seen, &box_, false, 500_000_000).is_none());
    }

    #[test]
    fn disabled_never_reuses_and_odd_inputs_do_not_panic() {
        let mut m = RegionMemory::new(ReuseSettings {
            enabled: false,
            ..settings()
        });
        let img = Luma::of(&picture(200));
        let r = rect(35.0, 35.0, 30.0, 30.0);
        m.remember(img.clone(), vec![(r, false, Arc::from(vec![1.0]), 0)]);
        assert!(m.lookup(&img, &r, false, 0).is_none());
        let empty = Luma::of(&RgbImage {
            width: 0,
            height: 0,
            data: Vec::new(),
        });
        let short = Luma::of(&RgbImage {
            width: 50,
            height: 50,
            data: vec![1; 7],
        });
        for l in [&empty, &short, &img] {
            for r in [
                rect(-10.0, -10.0, 500.0, 500.0),
                rect(f32::NAN, 0.0, f32::INFINITY, 1.0),
                rect(3.0, 3.0, 0.0, 0.0),
            ] {
                assert_eq!(l.change(l, &r), (0.0, 0.0));
                let _ = l.change(&empty, &r);
            }
        }
    }
}
