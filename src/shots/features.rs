//! Per-frame signatures and the distances between them, independent of the picture size.
//!
//! A frame is reduced to a colour histogram (luma 32 bins, each chroma plane 16 bins) and a
//! 32×18 luma thumbnail (cell means), both computed from a bounded grid of samples, so
//! a 90-line and a 1080-line decode give (nearly) the same numbers and the cost per frame
//! does not grow with the picture.

use crate::frame::I420Image;

/// Thumbnail cells across and down (16:9, whatever the picture's own aspect).
pub const GRID_W: usize = 32;
pub const GRID_H: usize = 18;
pub const CELLS: usize = GRID_W * GRID_H;
/// Coarse thumbnail (2×2 cells of the fine one), for the first stage of motion search.
const COARSE_W: usize = GRID_W / 2;
const COARSE_H: usize = GRID_H / 2;
const COARSE: usize = COARSE_W * COARSE_H;
const Y_BINS: usize = 32;
const C_BINS: usize = 16;
pub const HIST_BINS: usize = Y_BINS + 2 * C_BINS;
/// At most this many luma samples per row and rows per frame (chroma: half of each).
const MAX_SAMPLES_X: usize = 96;
const MAX_SAMPLES_Y: usize = 54;
const MAX_CHROMA_X: usize = 32;
const MAX_CHROMA_Y: usize = 18;
/// Motion search range on the fine thumbnail, in cells (one cell = 1/32 of the width,
/// 1/18 of the height): about ±16 % of the width and ±22 % of the height per frame.
const SHIFT_X: isize = 5;
const SHIFT_Y: isize = 4;
/// Fixed-point scale of the integer thumbnails.
const FIXED: f32 = 16.0;

/// The signature of one frame. Plain arrays: a detector keeps a ring of these and
/// overwrites them, so nothing is allocated per frame.
#[derive(Clone)]
pub struct Signature {
    /// Normalised histograms: luma (32 bins), then U and V (16 bins each); each part sums
    /// to 1.
    pub hist: [f32; HIST_BINS],
    /// Luma cell means, 0..=255, row-major GRID_W × GRID_H.
    pub thumb: [f32; CELLS],
    /// The same in fixed point (×16), and the coarse thumbnail: integer sums of absolute
    /// differences vectorise where float ones do not.
    fixed: [i32; CELLS],
    coarse: [i32; COARSE],
    /// Standard deviation of the thumbnail: near 0 for a black, white or uniform frame.
    pub contrast: f32,
    /// False when the picture could not be read (size and data disagree): a grey frame.
    pub valid: bool,
}

impl Default for Signature {
    fn default() -> Self {
        Self {
            hist: [0.0; HIST_BINS],
            thumb: [0.0; CELLS],
            fixed: [0; CELLS],
            coarse: [0; COARSE],
            contrast: 0.0,
            valid: false,
        }
    }
}

/// Reusable sampling tables for [`Signature::compute`], rebuilt when the picture size
/// changes.
pub struct Sampler {
    width: usize,
    height: usize,
    /// Luma samples: columns `x0 + k * step_x`, rows `ys`.
    x0: usize,
    step_x: usize,
    /// For each cell column: the first sample column index `k` and how many.
    col_runs: [(usize, usize); GRID_W],
    ys: Vec<usize>,
    cell_y: Vec<u8>,
    /// 1 / samples in each cell (0 for a cell without samples).
    inv_count: [f32; CELLS],
    /// Sampled chroma columns and rows.
    cxs: Vec<usize>,
    cys: Vec<usize>,
}

/// About `max` positions spread evenly over `0..len`, in the middle of their steps (so a
/// step of 2 does not see only the even columns of an upscaled picture): (first, step).
fn spacing(len: usize, max: usize) -> (usize, usize) {
    let step = len.div_ceil(max).max(1);
    (step / 2, step)
}

impl Default for Sampler {
    fn default() -> Self {
        Self {
            width: 0,
            height: 0,
            x0: 0,
            step_x: 1,
            col_runs: [(0, 0); GRID_W],
            ys: Vec::new(),
            cell_y: Vec::new(),
            inv_count: [0.0; CELLS],
            cxs: Vec::new(),
            cys: Vec::new(),
        }
    }
}

fn positions(len: usize, max: usize) -> Vec<usize> {
    let (first, step) = spacing(len, max);
    (first..len).step_by(step).collect()
}

impl Sampler {
    fn prepare(&mut self, width: usize, height: usize) {
        if self.width == width && self.height == height && !self.ys.is_empty() {
            return;
        }
        self.width = width;
        self.height = height;
        (self.x0, self.step_x) = spacing(width, MAX_SAMPLES_X);
        self.col_runs = [(0, 0); GRID_W];
        for (k, x) in (self.x0..width).step_by(self.step_x).enumerate() {
            let run = &mut self.col_runs[x * GRID_W / width];
            if run.1 == 0 {
                run.0 = k;
            }
            run.1 += 1;
        }
        self.ys = positions(height, MAX_SAMPLES_Y);
        self.cell_y = self
            .ys
            .iter()
            .map(|y| (y * GRID_H / height) as u8)
            .collect();
        let mut per_row = [0usize; GRID_H];
        for &c in &self.cell_y {
            per_row[c as usize] += 1;
        }
        for (c, inv) in self.inv_count.iter_mut().enumerate() {
            let n = self.col_runs[c % GRID_W].1 * per_row[c / GRID_W];
            *inv = if n > 0 { 1.0 / n as f32 } else { 0.0 };
        }
        self.cxs = positions(width.div_ceil(2), MAX_CHROMA_X);
        self.cys = positions(height.div_ceil(2), MAX_CHROMA_Y);
    }
}

impl Signature {
    /// Fill `self` from `image`. A picture whose data is shorter than its size says gives
    /// an invalid (grey) signature instead of a panic.
    pub fn compute(&mut self, image: &I420Image, sampler: &mut Sampler) {
        let (w, h) = (image.width as usize, image.height as usize);
        if w == 0 || h == 0 || image.data.len() < I420Image::size_for(image.width, image.height) {
            self.set_grey();
            return;
        }
        sampler.prepare(w, h);
        let s = &*sampler;
        let luma = image.y();
        let mut sums = [0u32; CELLS];
        let mut y_hist = [0u32; Y_BINS];
        for (&y, &cy) in s.ys.iter().zip(&s.cell_y) {
            let row = &luma[y * w..(y + 1) * w];
            let cells = &mut sums[cy as usize * GRID_W..][..GRID_W];
            for (cell, &(first, count)) in cells.iter_mut().zip(&s.col_runs) {
                let mut x = s.x0 + first * s.step_x;
                let mut acc = 0u32;
                for _ in 0..count {
                    let v = row[x];
                    y_hist[(v >> 3) as usize] += 1;
                    acc += v as u32;
                    x += s.step_x;
                }
                *cell += acc;
            }
        }
        let filled = (s.col_runs.iter().map(|r| r.1).sum::<usize>() * s.ys.len()).max(1) as f32;
        let mean = sums.iter().map(|&v| v as u64).sum::<u64>() as f32 / filled;
        for (c, (&sum, &inv)) in sums.iter().zip(&s.inv_count).enumerate() {
            // A picture narrower than the grid leaves cells without samples: take the
            // neighbour to the left (or above, or the mean) so they carry no false
            // contrast.
            self.thumb[c] = if inv > 0.0 {
                sum as f32 * inv
            } else if c % GRID_W > 0 {
                self.thumb[c - 1]
            } else if c >= GRID_W {
                self.thumb[c - GRID_W]
            } else {
                mean
            };
        }
        // Chroma histograms on the half-size planes, with a smaller budget.
        let cw = image.chroma_width();
        let mut u_hist = [0u32; C_BINS];
        let mut v_hist = [0u32; C_BINS];
        let (u, v) = (image.u(), image.v());
        for &y in &s.cys {
            let (ur, vr) = (&u[y * cw..(y + 1) * cw], &v[y * cw..(y + 1) * cw]);
            for &x in &s.cxs {
                u_hist[(ur[x] >> 4) as usize] += 1;
                v_hist[(vr[x] >> 4) as usize] += 1;
            }
        }
        normalise(&y_hist, &mut self.hist[..Y_BINS]);
        normalise(&u_hist, &mut self.hist[Y_BINS..Y_BINS + C_BINS]);
        normalise(&v_hist, &mut self.hist[Y_BINS + C_BINS..]);
        self.finish_thumb();
        self.valid = true;
    }

    /// A mid-grey picture: what an unreadable frame is taken to be.
    fn set_grey(&mut self) {
        self.hist = [0.0; HIST_BINS];
        self.hist[128 >> 3] = 1.0;
        self.hist[Y_BINS + (128 >> 4)] = 1.0;
        self.hist[Y_BINS + C_BINS + (128 >> 4)] = 1.0;
        self.thumb = [128.0; CELLS];
        self.finish_thumb();
        self.valid = false;
    }

    fn finish_thumb(&mut self) {
        for (q, t) in self.fixed.iter_mut().zip(&self.thumb) {
            *q = (t * FIXED + 0.5) as i32;
        }
        for cy in 0..COARSE_H {
            for cx in 0..COARSE_W {
                let (x, y) = (cx * 2, cy * 2);
                let t = &self.fixed;
                self.coarse[cy * COARSE_W + cx] = (t[y * GRID_W + x]
                    + t[y * GRID_W + x + 1]
                    + t[(y + 1) * GRID_W + x]
                    + t[(y + 1) * GRID_W + x + 1]
                    + 2)
                    / 4;
            }
        }
        let mean = self.thumb.iter().sum::<f32>() / CELLS as f32;
        let var = self
            .thumb
            .iter()
            .map(|v| (v - mean) * (v - mean))
            .sum::<f32>()
            / CELLS as f32;
        self.contrast = var.sqrt();
    }
}

fn normalise(counts: &[u32], out: &mut [f32]) {
    let total: u32 = counts.iter().sum();
    let scale = if total > 0 { 1.0 / total as f32 } else { 0.0 };
    for (o, &c) in out.iter_mut().zip(counts) {
        *o = c as f32 * scale;
    }
}

/// Histogram distance in [0, 1]: half the L1 distance, luma weighted as much as both
/// chroma planes together.
pub fn hist_distance(a: &Signature, b: &Signature) -> f32 {
    let l1 = |r: std::ops::Range<usize>| -> f32 { r.map(|i| (a.hist[i] - b.hist[i]).abs()).sum() };
    let y = l1(0..Y_BINS);
    let u = l1(Y_BINS..Y_BINS + C_BINS);
    let v = l1(Y_BINS + C_BINS..HIST_BINS);
    0.5 * (0.5 * y + 0.25 * u + 0.25 * v)
}

/// Mean absolute difference of the thumbnails, in [0, 1].
pub fn thumb_distance(a: &Signature, b: &Signature) -> f32 {
    let s: u32 = a
        .fixed
        .iter()
        .zip(&b.fixed)
        .map(|(x, y)| x.abs_diff(*y))
        .sum();
    s as f32 / (CELLS as f32 * 255.0 * FIXED)
}

/// Mean absolute difference (fixed point) over the overlap of `a` and `b` shifted by
/// (dx, dy) cells.
fn shifted_sad(a: &[i32], b: &[i32], w: usize, h: usize, dx: isize, dy: isize) -> f32 {
    let (w_i, h_i) = (w as isize, h as isize);
    let x0 = dx.max(0);
    let x1 = (w_i + dx).min(w_i);
    let y0 = dy.max(0);
    let y1 = (h_i + dy).min(h_i);
    if x1 <= x0 || y1 <= y0 {
        return f32::INFINITY;
    }
    let len = (x1 - x0) as usize;
    let mut sum = 0u32;
    for y in y0..y1 {
        let ra = &a[(y * w_i + x0) as usize..][..len];
        let rb = &b[((y - dy) * w_i + x0 - dx) as usize..][..len];
        sum += ra.iter().zip(rb).map(|(p, q)| p.abs_diff(*q)).sum::<u32>();
    }
    sum as f32 / (len as f32 * (y1 - y0) as f32)
}

/// Thumbnail distance after the best global shift (camera pan or shake), in [0, 1]: a
/// coarse search on the half-size thumbnail, refined by ±1 cell on the full one.
pub fn motion_distance(a: &Signature, b: &Signature) -> f32 {
    let mut best = (f32::INFINITY, 0isize, 0isize);
    let (cx, cy) = ((SHIFT_X + 1) / 2, (SHIFT_Y + 1) / 2);
    for dy in -cy..=cy {
        for dx in -cx..=cx {
            let v = shifted_sad(&a.coarse, &b.coarse, COARSE_W, COARSE_H, dx, dy);
            if v < best.0 {
                best = (v, dx, dy);
            }
        }
    }
    let mut fine = f32::INFINITY;
    for dy in (best.2 * 2 - 1).max(-SHIFT_Y)..=(best.2 * 2 + 1).min(SHIFT_Y) {
        for dx in (best.1 * 2 - 1).max(-SHIFT_X)..=(best.1 * 2 + 1).min(SHIFT_X) {
            fine = fine.min(shifted_sad(&a.fixed, &b.fixed, GRID_W, GRID_H, dx, dy));
        }
    }
    // Never above the unshifted distance (the search includes it when it is best).
    fine.min(shifted_sad(&a.fixed, &b.fixed, GRID_W, GRID_H, 0, 0)) / (255.0 * FIXED)
}

/// How far intermediate thumbnails stray from lying between two endpoints, relative to
/// the endpoints' own difference: 0 when every cell of every frame in between lies between
/// its values in `a` and `b` (a dissolve, a wipe, any per-cell blend), large for motion.
pub fn betweenness(a: &Signature, b: &Signature, between: &[&Signature]) -> f32 {
    if between.is_empty() {
        return 0.0;
    }
    let ab: f32 = a
        .thumb
        .iter()
        .zip(&b.thumb)
        .map(|(x, y)| (x - y).abs())
        .sum::<f32>()
        + 1e-3;
    let mut total = 0.0;
    for f in between {
        let mut excess = 0.0;
        for i in 0..CELLS {
            let (p, q, r) = (a.thumb[i], b.thumb[i], f.thumb[i]);
            excess += (r - p).abs() + (r - q).abs() - (p - q).abs();
        }
        total += excess / ab;
    }
    total / between.len() as f32
}

/// How abruptly the cells that change from the first to the last of `frames` do so: the
/// largest single step of each such cell (changing by more than `tau` levels) over its
/// whole change, averaged. About 1/n for a dissolve over n frames, near 1 where an edge
/// sweeps over the cell (a wipe, or an object passing by). 0 when no cell changes.
pub fn abruptness(frames: &[&Signature], tau: f32) -> f32 {
    let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
        return 0.0;
    };
    let (mut total, mut cells) = (0.0, 0usize);
    for i in 0..CELLS {
        let change = (last.thumb[i] - first.thumb[i]).abs();
        if change <= tau {
            continue;
        }
        let step = frames
            .windows(2)
            .map(|w| (w[1].thumb[i] - w[0].thumb[i]).abs())
            .fold(0.0f32, f32::max);
        total += (step / change).min(1.0);
        cells += 1;
    }
    if cells == 0 {
        0.0
    } else {
        total / cells as f32
    }
}

/// Fraction of thumbnail cells that differ by more than `tau` levels once a global gain
/// (exposure) is taken out.
pub fn changed_fraction(a: &Signature, b: &Signature, tau: f32) -> f32 {
    let mut ratios = [0.0f32; CELLS];
    for (r, (x, y)) in ratios.iter_mut().zip(a.thumb.iter().zip(&b.thumb)) {
        *r = (x + 8.0) / (y + 8.0);
    }
    let mid = CELLS / 2;
    let (_, gain, _) = ratios.select_nth_unstable_by(mid, |p, q| p.total_cmp(q));
    let gain = *gain;
    let changed = a
        .thumb
        .iter()
        .zip(&b.thumb)
        .filter(|(x, y)| ((*x + 8.0) - gain * (*y + 8.0)).abs() > tau)
        .count();
    changed as f32 / CELLS as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(image: &I420Image) -> Signature {
        let mut s = Signature::default();
        s.compute(image, &mut Sampler::default());
        s
    }

    fn gradient(w: u32, h: u32, shift: usize) -> I420Image {
        let mut img = I420Image::filled(w, h, 0, 128, 128);
        let wu = w as usize;
        for y in 0..h as usize {
            for x in 0..wu {
                img.data[y * wu + x] = (((x + shift) * 255 / (wu * 2)) as u8)
                    .wrapping_add((y * 40 / h as usize) as u8);
            }
        }
        img
    }

    #[test]
    fn uniform_picture_has_no_contrast() {
        let s = sig(&I420Image::filled(64, 36, 16, 128, 128));
        assert!(s.valid);
        assert!(s.contrast < 1e-3);
        assert!((s.hist[..Y_BINS].iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert_eq!(s.hist[2], 1.0);
    }

    #[test]
    fn signature_does_not_depend_on_the_picture_size() {
        let small = sig(&gradient(160, 90, 0));
        let large = sig(&gradient(640, 360, 0));
        assert!(
            thumb_distance(&small, &large) < 0.01,
            "{}",
            thumb_distance(&small, &large)
        );
        assert!(
            hist_distance(&small, &large) < 0.1,
            "{}",
            hist_distance(&small, &large)
        );
    }

    #[test]
    fn short_data_gives_an_invalid_grey_signature() {
        let mut img = I420Image::filled(64, 36, 200, 128, 128);
        img.data.truncate(100);
        let s = sig(&img);
        assert!(!s.valid);
        assert_eq!(s.thumb[0], 128.0);
        let s = sig(&I420Image {
            width: 0,
            height: 0,
            data: vec![],
        });
        assert!(!s.valid);
    }

    #[test]
    fn tiny_pictures_do_not_panic() {
        for (w, h) in [(1, 1), (2, 2), (3, 5), (31, 17), (33, 19)] {
            let s = sig(&I420Image::filled(w, h, 77, 100, 150));
            assert!(s.valid);
            assert!(s.contrast < 1e-3, "{w}x{h}: {}", s.contrast);
        }
    }

    #[test]
    fn motion_distance_forgives_a_pan() {
        let a = sig(&gradient(256, 144, 0));
        let b = sig(&gradient(256, 144, 24));
        assert!(motion_distance(&a, &b) < 0.5 * thumb_distance(&a, &b));
        assert!(motion_distance(&a, &a) < 1e-6);
    }

    #[test]
    fn a_blend_lies_between_its_endpoints() {
        let a = sig(&gradient(128, 72, 0));
        let b = sig(&I420Image::filled(128, 72, 200, 128, 128));
        let mut mid = gradient(128, 72, 0);
        for p in &mut mid.data[..128 * 72] {
            *p = ((*p as u32 + 200) / 2) as u8;
        }
        let m = sig(&mid);
        assert!(betweenness(&a, &b, &[&m]) < 0.05);
        // A picture outside the segment strays.
        let dark = sig(&I420Image::filled(128, 72, 0, 128, 128));
        assert!(betweenness(&a, &b, &[&dark]) > 0.3);
    }

    #[test]
    fn a_dissolve_changes_gradually_a_wipe_abruptly() {
        let a = gradient(128, 72, 0);
        let b = I420Image::filled(128, 72, 220, 128, 128);
        let blend = |t: f32| {
            let mut m = a.clone();
            for (p, q) in m.data.iter_mut().zip(&b.data) {
                *p = (*p as f32 * (1.0 - t) + *q as f32 * t) as u8;
            }
            sig(&m)
        };
        let dissolve: Vec<Signature> = (0..=10).map(|i| blend(i as f32 / 10.0)).collect();
        let refs: Vec<&Signature> = dissolve.iter().collect();
        assert!(abruptness(&refs, 10.0) < 0.2, "{}", abruptness(&refs, 10.0));
        let wipe: Vec<Signature> = (0..=10)
            .map(|i| {
                let mut m = a.clone();
                for y in 0..72 {
                    let edge = 128 * i / 10;
                    m.data[y * 128..y * 128 + edge].fill(220);
                }
                sig(&m)
            })
            .collect();
        let refs: Vec<&Signature> = wipe.iter().collect();
        assert!(abruptness(&refs, 10.0) > 0.6, "{}", abruptness(&refs, 10.0));
        assert_eq!(abruptness(&[], 10.0), 0.0);
    }

    #[test]
    fn exposure_change_is_not_a_changed_area() {
        let a = sig(&gradient(128, 72, 0));
        let mut bright = gradient(128, 72, 0);
        for p in &mut bright.data[..128 * 72] {
            *p = ((*p as f32 + 8.0) * 1.2 - 8.0).min(255.0) as u8;
        }
        let b = sig(&bright);
        assert!(changed_fraction(&a, &b, 10.0) < 0.1);
        let other = sig(&gradient(128, 72, 200));
        assert!(changed_fraction(&a, &other, 10.0) > 0.3);
    }
}
