//! Change-gated inference: a sample whose picture barely changed since the last *analysed*
//! sample of the same shot reuses that sample's result instead of running the detector and
//! the embedder again.
//!
//! The comparison is cheap: the luma plane is averaged into a [`GRID`]×[`GRID`] thumbnail
//! (a few thousand additions per frame) and two thumbnails are compared cell by cell. A
//! sample is analysed when any of these holds:
//! - it is the first of its shot (a new shot always forces analysis), or the previous
//!   analysis failed;
//! - the mean absolute difference of the thumbnails exceeds `change_gate_mean` (the
//!   picture moved: camera motion, zoom, a fade);
//! - any one cell changed by more than `change_gate_cell` (something changed in one region:
//!   a hand enters, a product is lifted);
//! - the reference is older than `change_gate_max_age_ms` of media time (a slow drift
//!   below both thresholds still gets a fresh look that often).
//!
//! Samples are always compared with the last analysed one, never with a reused one, so a
//! slow change cannot creep through one small step at a time. Pure: no clock, no I/O.

use crate::frame::I420Image;

/// Cells per side of the thumbnail.
pub const GRID: usize = 16;

/// Settings of the gate (keys of `[matching]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateSettings {
    pub enabled: bool,
    pub mean: f32,
    pub cell: f32,
    pub max_age_ms: u64,
}

/// The luma plane averaged into `GRID`×`GRID` cells (0–255).
#[derive(Debug, Clone, PartialEq)]
pub struct Thumbnail {
    cells: [f32; GRID * GRID],
}

impl Thumbnail {
    /// Averages every other pixel of every other row (the cells are large, the sum is the
    /// same picture); an empty image is all zeros.
    pub fn of(image: &I420Image) -> Self {
        let (w, h) = (image.width as usize, image.height as usize);
        let mut sums = [0u32; GRID * GRID];
        let mut counts = [0u32; GRID * GRID];
        let luma = image.data.get(..w * h).unwrap_or(&[]);
        if !luma.is_empty() {
            for y in (0..h).step_by(2) {
                let cy = y * GRID / h;
                let row = &luma[y * w..(y + 1) * w];
                for x in (0..w).step_by(2) {
                    let c = cy * GRID + x * GRID / w;
                    sums[c] += u32::from(row[x]);
                    counts[c] += 1;
                }
            }
        }
        let mut cells = [0f32; GRID * GRID];
        for ((c, s), n) in cells.iter_mut().zip(sums).zip(counts) {
            *c = if n == 0 { 0.0 } else { s as f32 / n as f32 };
        }
        Self { cells }
    }

    /// Mean and largest absolute difference of the cells.
    pub fn difference(&self, other: &Thumbnail) -> (f32, f32) {
        let mut sum = 0.0;
        let mut max: f32 = 0.0;
        for (a, b) in self.cells.iter().zip(&other.cells) {
            let d = (a - b).abs();
            sum += d;
            max = max.max(d);
        }
        (sum / (GRID * GRID) as f32, max)
    }
}

/// Why a sample is analysed (or that it is not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Reuse the last analysed sample's result.
    Reuse,
    Disabled,
    NewShot,
    Moved,
    RegionChanged,
    Aged,
}

#[derive(Debug, Clone)]
struct Reference {
    shot: u64,
    pts_ns: u64,
    thumb: Thumbnail,
}

/// Per-channel gate state: the last analysed sample.
#[derive(Debug, Clone)]
pub struct ChangeGate {
    settings: GateSettings,
    reference: Option<Reference>,
}

impl ChangeGate {
    pub fn new(settings: GateSettings) -> Self {
        Self {
            settings,
            reference: None,
        }
    }

    /// Whether the sample at `pts_ns` in shot `shot` with picture `thumb` needs analysis.
    pub fn decide(&self, shot: u64, pts_ns: u64, thumb: &Thumbnail) -> Decision {
        if !self.settings.enabled {
            return Decision::Disabled;
        }
        let Some(r) = self.reference.as_ref().filter(|r| r.shot == shot) else {
            return Decision::NewShot;
        };
        let age_ms = pts_ns.abs_diff(r.pts_ns) / 1_000_000;
        if age_ms >= self.settings.max_age_ms {
            return Decision::Aged;
        }
        let (mean, max) = thumb.difference(&r.thumb);
        if mean > self.settings.mean {
            Decision::Moved
        } else if max > self.settings.cell {
            Decision::RegionChanged
        } else {
            Decision::Reuse
        }
    }

    /// The sample was analysed successfully: later samples compare with it.
    pub fn analysed(&mut self, shot: u64, pts_ns: u64, thumb: Thumbnail) {
        self.reference = Some(Reference {
            shot,
            pts_ns,
            thumb,
        });
    }

    /// The analysis failed: the next sample is analysed whatever it shows.
    pub fn forget(&mut self) {
        self.reference = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> GateSettings {
        GateSettings {
            enabled: true,
            mean: 2.0,
            cell: 12.0,
            max_age_ms: 1_000,
        }
    }

    /// A 64x36 picture: a horizontal ramp, `shift` pixels to the right, with an optional
    /// bright square at the top left.
    fn picture(shift: usize, square: bool) -> I420Image {
        let (w, h) = (64usize, 36usize);
        let mut img = I420Image::filled(w as u32, h as u32, 0, 128, 128);
        for y in 0..h {
            for x in 0..w {
                let mut v = ((x + shift) * 4).min(255) as u8;
                if square && x < 4 && y < 2 {
                    v = 255;
                }
                img.data[y * w + x] = v;
            }
        }
        img
    }

    #[test]
    fn the_same_picture_is_reused_until_it_ages() {
        let mut g = ChangeGate::new(settings());
        let t = Thumbnail::of(&picture(0, false));
        assert_eq!(g.decide(1, 0, &t), Decision::NewShot);
        g.analysed(1, 0, t.clone());
        assert_eq!(g.decide(1, 250_000_000, &t), Decision::Reuse);
        assert_eq!(g.decide(1, 999_000_000, &t), Decision::Reuse);
        assert_eq!(g.decide(1, 1_000_000_000, &t), Decision::Aged);
        // Another shot always looks again.
        assert_eq!(g.decide(2, 250_000_000, &t), Decision::NewShot);
    }

    #[test]
    fn motion_and_a_changed_region_force_analysis() {
        let mut g = ChangeGate::new(settings());
        g.analysed(1, 0, Thumbnail::of(&picture(0, false)));
        // The whole picture shifted: every cell changes.
        assert_eq!(
            g.decide(1, 250_000_000, &Thumbnail::of(&picture(8, false))),
            Decision::Moved
        );
        // One corner changed: the mean barely moves, one cell does.
        let corner = Thumbnail::of(&picture(0, true));
        let (mean, max) = corner.difference(&Thumbnail::of(&picture(0, false)));
        assert!(mean < 2.0 && max > 12.0, "mean {mean} max {max}");
        assert_eq!(g.decide(1, 250_000_000, &corner), Decision::RegionChanged);
    }

    #[test]
    fn a_failed_analysis_and_a_disabled_gate_analyse() {
        let mut g = ChangeGate::new(settings());
        let t = Thumbnail::of(&picture(0, false));
        g.analysed(1, 0, t.clone());
        g.forget();
        assert_eq!(g.decide(1, 250_000_000, &t), Decision::NewShot);
        let off = ChangeGate::new(GateSettings {
            enabled: false,
            ..settings()
        });
        assert_eq!(off.decide(1, 0, &t), Decision::Disabled);
    }

    #[test]
    fn odd_and_empty_images_do_not_panic() {
        for (w, h) in [(0, 0), (1, 1), (3, 5), (17, 1), (1, 33)] {
            let img = I420Image::filled(w, h, 90, 128, 128);
            let t = Thumbnail::of(&img);
            assert_eq!(t.difference(&t), (0.0, 0.0));
        }
        // Shorter data than the size claims: zeros, no panic.
        let short = I420Image {
            width: 64,
            height: 64,
            data: vec![1; 10],
        };
        let _ = Thumbnail::of(&short);
    }
}
