//! A linear projection of embeddings learned from labelled pictures at catalog-build time
//! (`catalog build --train-photos`): `y = (x - mean) · P`, then L2-normalised.
//!
//! It is a regularised linear discriminant analysis: whiten the within-product covariance
//! (how pictures of one product vary: light, angle, clutter), shrunk towards its mean
//! eigenvalue so directions seen in few photos are not blown up, then (optionally) keep the
//! `dims` whitened directions along which the product means spread most. Cosine search in
//! that space weighs what tells products apart over what changes between shots of one.

use super::linalg::{Square, symmetric_eigen};

#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    in_dim: usize,
    out_dim: usize,
    mean: Vec<f32>,
    /// Row-major `in_dim × out_dim`.
    matrix: Vec<f32>,
}

impl Projection {
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Project one vector (not normalised).
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; self.out_dim];
        for (i, (&xi, &mi)) in x.iter().zip(&self.mean).enumerate() {
            let c = xi - mi;
            if c == 0.0 {
                continue;
            }
            let row = &self.matrix[i * self.out_dim..(i + 1) * self.out_dim];
            for (o, r) in out.iter_mut().zip(row) {
                *o += c * r;
            }
        }
        out
    }

    /// `mean` then `matrix`, as stored in `projection.f32`.
    pub fn to_floats(&self) -> Vec<f32> {
        let mut v = self.mean.clone();
        v.extend_from_slice(&self.matrix);
        v
    }

    pub fn from_floats(in_dim: usize, out_dim: usize, v: &[f32]) -> Result<Self, String> {
        if in_dim == 0 || out_dim == 0 || v.len() != in_dim + in_dim * out_dim {
            return Err(format!(
                "{} floats do not hold a {in_dim} x {out_dim} projection",
                v.len()
            ));
        }
        Ok(Self {
            in_dim,
            out_dim,
            mean: v[..in_dim].to_vec(),
            matrix: v[in_dim..].to_vec(),
        })
    }

    /// Subtract a mean only (e.g. the catalog's): the "centring" normalisation.
    pub fn centering(mean: &[f32]) -> Self {
        let d = mean.len();
        let mut matrix = vec![0f32; d * d];
        for i in 0..d {
            matrix[i * d + i] = 1.0;
        }
        Self {
            in_dim: d,
            out_dim: d,
            mean: mean.to_vec(),
            matrix,
        }
    }

    /// Unsupervised PCA whitening of `vectors` (no labels), covariance shrunk like
    /// [`Self::learn`]'s. `None` for fewer than two vectors.
    pub fn whitening(vectors: &[&[f32]], shrinkage: f32) -> Option<Self> {
        let d = vectors.first()?.len();
        if vectors.len() < 2 || d == 0 || vectors.iter().any(|v| v.len() != d) {
            return None;
        }
        let mut mu = vec![0f64; d];
        for v in vectors {
            for (a, b) in mu.iter_mut().zip(v.iter()) {
                *a += *b as f64 / vectors.len() as f64;
            }
        }
        let mut cov = Square::zeros(d);
        let mut diff = vec![0f64; d];
        for v in vectors {
            for ((o, x), m) in diff.iter_mut().zip(v.iter()).zip(&mu) {
                *o = *x as f64 - m;
            }
            cov.add_outer_upper(&diff, 1.0 / vectors.len() as f64);
        }
        cov.mirror();
        let w = shrunk_whitening(cov, shrinkage, d);
        Some(Self {
            in_dim: d,
            out_dim: d,
            mean: mu.iter().map(|&x| x as f32).collect(),
            matrix: w.a.iter().map(|&x| x as f32).collect(),
        })
    }

    /// Learn from vectors grouped by product. `dims` = 0 keeps one direction less than
    /// there are products (the classic LDA rank), at most the input size; `shrinkage` in 0..1 blends the within-product covariance with a multiple of the
    /// identity. `None` when there is too little to learn from (fewer than two products
    /// with two pictures each).
    pub fn learn(groups: &[Vec<&[f32]>], dims: usize, shrinkage: f32) -> Option<Self> {
        let d = groups
            .iter()
            .flat_map(|g| g.first())
            .map(|v| v.len())
            .next()?;
        if d == 0 || groups.iter().filter(|g| g.len() >= 2).count() < 2 {
            return None;
        }
        if groups.iter().flatten().any(|v| v.len() != d) {
            return None;
        }
        let groups: Vec<&Vec<&[f32]>> = groups.iter().filter(|g| !g.is_empty()).collect();
        // The mean of the product means: every product weighs the same.
        let mut mu = vec![0f64; d];
        for g in &groups {
            for v in g.iter() {
                for (a, b) in mu.iter_mut().zip(v.iter()) {
                    *a += *b as f64 / (g.len() * groups.len()) as f64;
                }
            }
        }
        let centred: Vec<Vec<Vec<f64>>> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|v| v.iter().zip(&mu).map(|(x, m)| *x as f64 - m).collect())
                    .collect()
            })
            .collect();
        let total: usize = centred.iter().map(Vec::len).sum();
        // With fewer pictures than dimensions everything happens inside the pictures' own
        // span: the same answer, at the cost of the picture count instead of the dimension.
        let basis = if total < d {
            Some(span_basis(&centred, d))
        } else {
            None
        };
        let coords: Vec<Vec<Vec<f64>>> = match &basis {
            Some(q) => centred
                .iter()
                .map(|g| {
                    g.iter()
                        .map(|x| q.iter().map(|qk| dot(qk, x)).collect())
                        .collect()
                })
                .collect(),
            None => centred,
        };
        let r = basis.as_ref().map(Vec::len).unwrap_or(d);
        if r == 0 {
            return None;
        }
        let (keep, pr) = lda_core(&coords, r, d, dims, shrinkage);
        let matrix: Vec<f64> = match &basis {
            // P = Q · P_r, Q's columns the basis vectors.
            Some(q) => {
                let mut p = vec![0f64; d * keep];
                for (k, qk) in q.iter().enumerate() {
                    for (i, qi) in qk.iter().enumerate() {
                        for j in 0..keep {
                            p[i * keep + j] += qi * pr[k * keep + j];
                        }
                    }
                }
                p
            }
            None => pr,
        };
        Some(Self {
            in_dim: d,
            out_dim: keep,
            mean: mu.iter().map(|&x| x as f32).collect(),
            matrix: matrix.iter().map(|&x| x as f32).collect(),
        })
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// An orthonormal basis (vectors of length `d`) of the span of the pictures, from the
/// eigenvectors of their Gram matrix.
fn span_basis(groups: &[Vec<Vec<f64>>], d: usize) -> Vec<Vec<f64>> {
    let xs: Vec<&Vec<f64>> = groups.iter().flatten().collect();
    let n = xs.len();
    let mut g = Square::zeros(n);
    for i in 0..n {
        for j in i..n {
            let v = dot(xs[i], xs[j]);
            g.set(i, j, v);
            g.set(j, i, v);
        }
    }
    let eg = symmetric_eigen(&g);
    let top = eg.values.last().copied().unwrap_or(0.0).max(0.0);
    let mut basis = Vec::new();
    for k in 0..n {
        let l = eg.values[k];
        if l <= top * 1e-10 || l <= 0.0 {
            continue;
        }
        let mut q = vec![0f64; d];
        for (i, x) in xs.iter().enumerate() {
            let c = eg.vectors.at(i, k);
            for (a, b) in q.iter_mut().zip(x.iter()) {
                *a += c * b;
            }
        }
        let s = 1.0 / l.sqrt();
        q.iter_mut().for_each(|a| *a *= s);
        basis.push(q);
    }
    basis
}

/// Regularised LDA on centred coordinates of size `r`: returns the kept size and the
/// `r × keep` row-major matrix. The shrinkage target is the mean eigenvalue over
/// `avg_dim` dimensions (the original space's).
fn lda_core(
    groups: &[Vec<Vec<f64>>],
    r: usize,
    avg_dim: usize,
    dims: usize,
    shrinkage: f32,
) -> (usize, Vec<f64>) {
    let means: Vec<Vec<f64>> = groups
        .iter()
        .map(|g| {
            let mut m = vec![0f64; r];
            for v in g {
                for (a, b) in m.iter_mut().zip(v) {
                    *a += b / g.len() as f64;
                }
            }
            m
        })
        .collect();
    // Within-product scatter (products with one picture say nothing about it).
    let mut sw = Square::zeros(r);
    let mut n = 0usize;
    let mut diff = vec![0f64; r];
    for (g, m) in groups.iter().zip(&means) {
        if g.len() < 2 {
            continue;
        }
        for v in g {
            for ((o, x), mm) in diff.iter_mut().zip(v).zip(m) {
                *o = x - mm;
            }
            sw.add_outer_upper(&diff, 1.0);
            n += 1;
        }
    }
    sw.mirror();
    sw.a.iter_mut().for_each(|a| *a /= n.max(1) as f64);
    let w = shrunk_whitening(sw, shrinkage, avg_dim);
    let keep = if dims == 0 {
        (means.len() - 1).clamp(1, r)
    } else {
        dims.min(r)
    };
    if keep == r {
        return (r, w.a);
    }
    // Between-product scatter of the whitened means (their mean is 0); keep its top
    // directions.
    let mut sb = Square::zeros(r);
    let mut wm = vec![0f64; r];
    for m in &means {
        for (k, o) in wm.iter_mut().enumerate() {
            *o = (0..r).map(|i| m[i] * w.at(i, k)).sum();
        }
        sb.add_outer_upper(&wm, 1.0);
    }
    sb.mirror();
    let eb = symmetric_eigen(&sb);
    // W · V_top, largest eigenvalues last in `eb`.
    let mut p = vec![0f64; r * keep];
    for j in 0..keep {
        let col = r - 1 - j;
        for i in 0..r {
            let mut s = 0.0;
            for k in 0..r {
                s += w.at(i, k) * eb.vectors.at(k, col);
            }
            p[i * keep + j] = s;
        }
    }
    (keep, p)
}

/// `W = U Λ^-1/2` of `(1 - α) C + α · mean eigenvalue · I`.
fn shrunk_whitening(mut c: Square, shrinkage: f32, avg_dim: usize) -> Square {
    let d = c.n;
    let alpha = shrinkage.clamp(0.0, 0.999) as f64;
    let avg = (c.trace() / avg_dim.max(1) as f64).max(1e-12);
    for a in c.a.iter_mut() {
        *a *= 1.0 - alpha;
    }
    for i in 0..d {
        let v = c.at(i, i) + alpha * avg;
        c.set(i, i, v);
    }
    let eg = symmetric_eigen(&c);
    let floor = avg * 1e-6;
    let mut w = Square::zeros(d);
    for k in 0..d {
        let s = 1.0 / eg.values[k].max(floor).sqrt();
        for i in 0..d {
            w.set(i, k, eg.vectors.at(i, k) * s);
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two products that differ along axis 0 only a little, while photos of each vary a
    /// lot along axis 1: after learning, axis 0 dominates.
    fn groups() -> Vec<Vec<Vec<f32>>> {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for i in 0..20 {
            let noise = (i as f32 - 9.5) / 2.0;
            let small = ((i * 7) % 5) as f32 * 0.01;
            a.push(vec![1.0 + small, noise, 0.5]);
            b.push(vec![1.2 + small, -noise, 0.5]);
        }
        vec![a, b]
    }

    #[test]
    fn separates_what_matters() {
        let g = groups();
        let refs: Vec<Vec<&[f32]>> = g
            .iter()
            .map(|v| v.iter().map(|x| x.as_slice()).collect())
            .collect();
        let p = Projection::learn(&refs, 3, 0.01).unwrap();
        assert_eq!((p.in_dim(), p.out_dim()), (3, 3));
        assert_eq!(
            Projection::learn(&refs, 0, 0.01).unwrap().out_dim(),
            1,
            "auto: products - 1"
        );
        // Cosine between a noisy photo of `a` and the mean of `a` beats the one with `b`.
        let cos = |x: &[f32], y: &[f32]| {
            let (mut d, mut nx, mut ny) = (0.0, 0.0, 0.0);
            for (a, b) in x.iter().zip(y) {
                d += a * b;
                nx += a * a;
                ny += b * b;
            }
            d / (nx * ny).sqrt()
        };
        let photo = p.apply(&[1.0, 4.0, 0.5]);
        let ma = p.apply(&[1.02, 0.0, 0.5]);
        let mb = p.apply(&[1.22, 0.0, 0.5]);
        assert!(cos(&photo, &ma) > cos(&photo, &mb));
        // Raw cosine gets it wrong-ish: both near 0 because of the noise axis.
        let p1 = Projection::learn(&refs, 1, 0.01).unwrap();
        assert_eq!(p1.out_dim(), 1);
        let (ya, yb) = (
            p1.apply(&[1.0, 3.0, 0.5])[0],
            p1.apply(&[1.2, -3.0, 0.5])[0],
        );
        assert!(ya.signum() != yb.signum(), "{ya} {yb}");
    }

    #[test]
    fn span_shortcut_gives_the_full_answer() {
        // 3 products x 3 pictures in 12 dimensions: fewer pictures than dimensions.
        let mut x = 17u64;
        let mut rnd = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 11) as f64 / (1u64 << 53) as f64) as f32 - 0.5
        };
        let d = 12;
        let g: Vec<Vec<Vec<f32>>> = (0..3)
            .map(|_| {
                let centre: Vec<f32> = (0..d).map(|_| rnd()).collect();
                (0..3)
                    .map(|_| centre.iter().map(|c| c + 0.3 * rnd()).collect())
                    .collect()
            })
            .collect();
        let refs: Vec<Vec<&[f32]>> = g
            .iter()
            .map(|v| v.iter().map(|x| x.as_slice()).collect())
            .collect();
        let fast = Projection::learn(&refs, 0, 0.1).unwrap();
        assert_eq!(fast.out_dim(), 2);
        // The full computation, straight in the 12-d space.
        let mu = fast.mean.clone();
        let centred: Vec<Vec<Vec<f64>>> = g
            .iter()
            .map(|gr| {
                gr.iter()
                    .map(|v| v.iter().zip(&mu).map(|(a, m)| (*a - *m) as f64).collect())
                    .collect()
            })
            .collect();
        let (keep, p) = lda_core(&centred, d, d, 0, 0.1);
        let full = Projection {
            in_dim: d,
            out_dim: keep,
            mean: mu,
            matrix: p.iter().map(|&v| v as f32).collect(),
        };
        // Same geometry: every pair of pictures has the same cosine in both.
        let cos = |a: &[f32], b: &[f32]| {
            let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
            a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / (n(a) * n(b))
        };
        let all: Vec<&Vec<f32>> = g.iter().flatten().collect();
        for a in &all {
            for b in &all {
                let (f1, f2) = (
                    cos(&fast.apply(a), &fast.apply(b)),
                    cos(&full.apply(a), &full.apply(b)),
                );
                assert!((f1 - f2).abs() < 1e-3, "{f1} vs {f2}");
            }
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let g = groups();
        let refs: Vec<Vec<&[f32]>> = g
            .iter()
            .map(|v| v.iter().map(|x| x.as_slice()).collect())
            .collect();
        let p = Projection::learn(&refs, 2, 0.1).unwrap();
        let back = Projection::from_floats(3, 2, &p.to_floats()).unwrap();
        assert_eq!(back, p);
        assert!(Projection::from_floats(3, 2, &[0.0; 5]).is_err());
        let one: Vec<Vec<&[f32]>> = vec![refs[0].clone()];
        assert!(Projection::learn(&one, 0, 0.1).is_none());
        assert!(Projection::learn(&[], 0, 0.1).is_none());
        let c = Projection::centering(&[1.0, 2.0]);
        assert_eq!(c.apply(&[3.0, 3.0]), vec![2.0, 1.0]);
        let flat: Vec<&[f32]> = g[0].iter().map(|x| x.as_slice()).collect();
        let w = Projection::whitening(&flat, 0.1).unwrap();
        assert_eq!(w.out_dim(), 3);
        assert!(Projection::whitening(&flat[..1], 0.1).is_none());
    }
}
