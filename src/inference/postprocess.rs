//! Post-processing in plain Rust: YOLOX grid decoding, non-maximum suppression and
//! embedding normalisation.

/// A candidate box in input-tensor pixels, corners `(x0, y0)`–`(x1, y1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
    pub class_id: usize,
    pub score: f32,
}

impl Candidate {
    fn area(&self) -> f32 {
        (self.x1 - self.x0).max(0.0) * (self.y1 - self.y0).max(0.0)
    }
}

/// Intersection over union of two boxes.
pub fn iou(a: &Candidate, b: &Candidate) -> f32 {
    let ix = (a.x1.min(b.x1) - a.x0.max(b.x0)).max(0.0);
    let iy = (a.y1.min(b.y1) - a.y0.max(b.y0)).max(0.0);
    let inter = ix * iy;
    let union = a.area() + b.area() - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// How the raw rows `[x, y, w, h, objectness, class scores…]` encode a box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxEncoding {
    /// YOLOX head output before decoding: offsets on the stride grids.
    YoloxGrid,
    /// Already decoded centre and size in input pixels.
    CenterSize,
}

/// Decode one image's detector output (`rows` × (5 + classes) floats) into candidates whose
/// score (objectness × class score) reaches `threshold`; only the best class of each row.
pub fn decode_rows(
    output: &[f32],
    attrs: usize,
    encoding: BoxEncoding,
    input_w: usize,
    input_h: usize,
    strides: &[u32],
    threshold: f32,
) -> Result<Vec<Candidate>, String> {
    if attrs < 6 || !output.len().is_multiple_of(attrs) {
        return Err(format!(
            "output of {} floats is not rows of {attrs} (x, y, w, h, objectness, classes…)",
            output.len()
        ));
    }
    let rows = output.len() / attrs;
    // The grid cell of every row, in the order YOLOX flattens them (stride by stride, row-major).
    let grid: Vec<(f32, f32, f32)> = match encoding {
        BoxEncoding::CenterSize => Vec::new(),
        BoxEncoding::YoloxGrid => {
            let mut g = Vec::with_capacity(rows);
            for &s in strides {
                let s = s.max(1) as usize;
                let (gw, gh) = (input_w / s, input_h / s);
                for gy in 0..gh {
                    for gx in 0..gw {
                        g.push((gx as f32, gy as f32, s as f32));
                    }
                }
            }
            if g.len() != rows {
                return Err(format!(
                    "{rows} output rows do not match the {} grid cells of strides {strides:?} on {input_w}x{input_h}",
                    g.len()
                ));
            }
            g
        }
    };
    let mut out = Vec::new();
    for (i, row) in output.chunks_exact(attrs).enumerate() {
        let obj = row[4];
        if obj < threshold {
            continue;
        }
        let (class_id, cls) =
            row[5..]
                .iter()
                .copied()
                .enumerate()
                .fold(
                    (0, f32::MIN),
                    |best, (c, v)| if v > best.1 { (c, v) } else { best },
                );
        let score = obj * cls;
        if score.is_nan() || score < threshold {
            continue;
        }
        let (cx, cy, w, h) = match encoding {
            BoxEncoding::CenterSize => (row[0], row[1], row[2], row[3]),
            BoxEncoding::YoloxGrid => {
                let (gx, gy, s) = grid[i];
                // exp of a wild value would overflow to inf: bound it (e^10 ≈ 22k strides).
                (
                    (row[0] + gx) * s,
                    (row[1] + gy) * s,
                    row[2].min(10.0).exp() * s,
                    row[3].min(10.0).exp() * s,
                )
            }
        };
        if !(cx.is_finite() && cy.is_finite() && w.is_finite() && h.is_finite())
            || w <= 0.0
            || h <= 0.0
        {
            continue;
        }
        out.push(Candidate {
            x0: cx - w / 2.0,
            y0: cy - h / 2.0,
            x1: cx + w / 2.0,
            y1: cy + h / 2.0,
            class_id,
            score,
        });
    }
    Ok(out)
}

/// Greedy non-maximum suppression, best score first; per class unless `class_agnostic`.
pub fn nms(
    mut candidates: Vec<Candidate>,
    iou_threshold: f32,
    class_agnostic: bool,
    max: usize,
) -> Vec<Candidate> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Candidate> = Vec::new();
    for c in candidates {
        if kept.len() >= max {
            break;
        }
        let suppressed = kept
            .iter()
            .any(|k| (class_agnostic || k.class_id == c.class_id) && iou(k, &c) > iou_threshold);
        if !suppressed {
            kept.push(c);
        }
    }
    kept
}

/// Scale to unit length (a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cand(x0: f32, y0: f32, x1: f32, y1: f32, class_id: usize, score: f32) -> Candidate {
        Candidate {
            x0,
            y0,
            x1,
            y1,
            class_id,
            score,
        }
    }

    #[test]
    fn iou_basics() {
        let a = cand(0.0, 0.0, 10.0, 10.0, 0, 1.0);
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &cand(20.0, 20.0, 30.0, 30.0, 0, 1.0)), 0.0);
        let half = iou(&a, &cand(5.0, 0.0, 15.0, 10.0, 0, 1.0));
        assert!((half - 50.0 / 150.0).abs() < 1e-6);
    }

    #[test]
    fn yolox_grid_decodes_the_right_cell() {
        // Input 64x32, strides 8 and 16: 8*4 + 4*2 = 40 rows of 5 + 2 classes.
        let attrs = 7;
        let mut out = vec![0f32; 40 * attrs];
        // Row for cell (gx=3, gy=2) at stride 8: index 2*8+3 = 19.
        let r = 19 * attrs;
        out[r..r + attrs].copy_from_slice(&[0.5, 0.5, (2.0f32).ln(), 0.0, 0.9, 0.1, 0.8]);
        let c = decode_rows(&out, attrs, BoxEncoding::YoloxGrid, 64, 32, &[8, 16], 0.3).unwrap();
        assert_eq!(c.len(), 1);
        let c = c[0];
        assert_eq!(c.class_id, 1);
        assert!((c.score - 0.72).abs() < 1e-6);
        // centre (3.5*8, 2.5*8) = (28, 20), size 16 x 8
        assert!((c.x0 - 20.0).abs() < 1e-4 && (c.x1 - 36.0).abs() < 1e-4);
        assert!((c.y0 - 16.0).abs() < 1e-4 && (c.y1 - 24.0).abs() < 1e-4);
        // Second stride: first row of stride 16 is index 32, cell (0, 0).
        let mut out2 = vec![0f32; 40 * attrs];
        out2[32 * attrs..33 * attrs].copy_from_slice(&[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
        let c = decode_rows(&out2, attrs, BoxEncoding::YoloxGrid, 64, 32, &[8, 16], 0.3).unwrap();
        assert_eq!((c[0].x0, c[0].x1), (-8.0, 8.0));
    }

    #[test]
    fn wrong_shapes_are_errors() {
        assert!(decode_rows(&[0.0; 13], 7, BoxEncoding::CenterSize, 8, 8, &[], 0.1).is_err());
        assert!(decode_rows(&[0.0; 14], 7, BoxEncoding::YoloxGrid, 64, 32, &[8], 0.1).is_err());
    }

    #[test]
    fn nms_keeps_best_per_class() {
        let v = vec![
            cand(0.0, 0.0, 10.0, 10.0, 0, 0.5),
            cand(1.0, 0.0, 11.0, 10.0, 0, 0.9),
            cand(1.0, 0.0, 11.0, 10.0, 1, 0.4),
            cand(50.0, 50.0, 60.0, 60.0, 0, 0.3),
        ];
        let k = nms(v.clone(), 0.45, false, 10);
        assert_eq!(k.len(), 3);
        assert_eq!(k[0].score, 0.9);
        let k = nms(v.clone(), 0.45, true, 10);
        assert_eq!(k.len(), 2);
        assert_eq!(nms(v, 0.45, false, 1).len(), 1);
    }

    #[test]
    fn normalise() {
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0; 3];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.0; 3]);
    }

    proptest! {
        #[test]
        fn nms_output_is_sorted_and_separated(
            boxes in proptest::collection::vec((0f32..100.0, 0f32..100.0, 1f32..50.0, 1f32..50.0, 0usize..3, 0f32..1.0), 0..40),
            thr in 0.1f32..0.9,
        ) {
            let v: Vec<Candidate> = boxes.iter().map(|&(x, y, w, h, c, s)| cand(x, y, x + w, y + h, c, s)).collect();
            let k = nms(v, thr, false, 100);
            for w in k.windows(2) {
                prop_assert!(w[0].score >= w[1].score);
            }
            for (i, a) in k.iter().enumerate() {
                for b in &k[i + 1..] {
                    prop_assert!(a.class_id != b.class_id || iou(a, b) <= thr);
                }
            }
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(-1e6f32..1e6, 0..200), attrs in 0usize..12) {
            let _ = decode_rows(&data, attrs, BoxEncoding::CenterSize, 32, 32, &[8], 0.5);
            let _ = decode_rows(&data, attrs, BoxEncoding::YoloxGrid, 32, 32, &[8, 16], 0.5);
        }
    }
}
