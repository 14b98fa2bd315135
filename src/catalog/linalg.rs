//! The little dense linear algebra the learned projection needs: covariance and a symmetric
//! eigendecomposition (Householder tridiagonalisation + implicit QL, after JAMA's public
//! domain `tred2`/`tql2`). Row-major `f64`, plain Rust.

/// A square row-major matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Square {
    pub n: usize,
    pub a: Vec<f64>,
}

impl Square {
    pub fn zeros(n: usize) -> Self {
        Self {
            n,
            a: vec![0.0; n * n],
        }
    }
    #[inline]
    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.a[i * self.n + j]
    }
    #[inline]
    pub fn set(&mut self, i: usize, j: usize, v: f64) {
        self.a[i * self.n + j] = v;
    }

    /// Add `w · x xᵀ` (upper triangle only; call [`Self::mirror`] after the last one).
    pub fn add_outer_upper(&mut self, x: &[f64], w: f64) {
        let n = self.n;
        for i in 0..n {
            let xi = x[i] * w;
            if xi == 0.0 {
                continue;
            }
            let row = &mut self.a[i * n + i..(i + 1) * n];
            for (r, xj) in row.iter_mut().zip(&x[i..]) {
                *r += xi * xj;
            }
        }
    }

    /// Copy the upper triangle to the lower.
    pub fn mirror(&mut self) {
        let n = self.n;
        for i in 0..n {
            for j in 0..i {
                self.a[i * n + j] = self.a[j * n + i];
            }
        }
    }

    pub fn trace(&self) -> f64 {
        (0..self.n).map(|i| self.at(i, i)).sum()
    }
}

/// Eigenvalues (ascending) and eigenvectors (column `k` of `vectors` belongs to value `k`)
/// of a symmetric matrix.
pub struct Eigen {
    pub values: Vec<f64>,
    pub vectors: Square,
}

pub fn symmetric_eigen(m: &Square) -> Eigen {
    let n = m.n;
    let mut v = m.clone();
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    if n == 0 {
        return Eigen {
            values: d,
            vectors: v,
        };
    }
    tred2(n, &mut v.a, &mut d, &mut e);
    tql2(n, &mut v.a, &mut d, &mut e);
    Eigen {
        values: d,
        vectors: v,
    }
}

/// Householder reduction to tridiagonal form (JAMA `tred2`).
#[allow(clippy::needless_range_loop)]
fn tred2(n: usize, v: &mut [f64], d: &mut [f64], e: &mut [f64]) {
    let idx = |i: usize, j: usize| i * n + j;
    for j in 0..n {
        d[j] = v[idx(n - 1, j)];
    }
    for i in (1..n).rev() {
        let mut scale = 0.0;
        let mut h = 0.0;
        for k in 0..i {
            scale += d[k].abs();
        }
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = v[idx(i - 1, j)];
                v[idx(i, j)] = 0.0;
                v[idx(j, i)] = 0.0;
            }
        } else {
            for k in 0..i {
                d[k] /= scale;
                h += d[k] * d[k];
            }
            let mut f = d[i - 1];
            let mut g = h.sqrt();
            if f > 0.0 {
                g = -g;
            }
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            for j in 0..i {
                e[j] = 0.0;
            }
            for j in 0..i {
                f = d[j];
                v[idx(j, i)] = f;
                g = e[j] + v[idx(j, j)] * f;
                for k in j + 1..i {
                    g += v[idx(k, j)] * d[k];
                    e[k] += v[idx(k, j)] * f;
                }
                e[j] = g;
            }
            f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            for j in 0..i {
                f = d[j];
                g = e[j];
                for k in j..i {
                    v[idx(k, j)] -= f * e[k] + g * d[k];
                }
                d[j] = v[idx(i - 1, j)];
                v[idx(i, j)] = 0.0;
            }
        }
        d[i] = h;
    }
    for i in 0..n - 1 {
        v[idx(n - 1, i)] = v[idx(i, i)];
        v[idx(i, i)] = 1.0;
        let h = d[i + 1];
        if h != 0.0 {
            for k in 0..=i {
                d[k] = v[idx(k, i + 1)] / h;
            }
            for j in 0..=i {
                let mut g = 0.0;
                for k in 0..=i {
                    g += v[idx(k, i + 1)] * v[idx(k, j)];
                }
                for k in 0..=i {
                    v[idx(k, j)] -= g * d[k];
                }
            }
        }
        for k in 0..=i {
            v[idx(k, i + 1)] = 0.0;
        }
    }
    for j in 0..n {
        d[j] = v[idx(n - 1, j)];
        v[idx(n - 1, j)] = 0.0;
    }
    v[idx(n - 1, n - 1)] = 1.0;
    e[0] = 0.0;
}

/// Implicit QL on the tridiagonal form (JAMA `tql2`); sorts ascending.
#[allow(clippy::needless_range_loop)]
fn tql2(n: usize, v: &mut [f64], d: &mut [f64], e: &mut [f64]) {
    let idx = |i: usize, j: usize| i * n + j;
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let mut f = 0.0;
    let mut tst1: f64 = 0.0;
    let eps = f64::EPSILON;
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n {
            if e[m].abs() <= eps * tst1 {
                break;
            }
            m += 1;
        }
        let m = m.min(n - 1);
        if m > l {
            let mut iter = 0;
            loop {
                iter += 1;
                let mut g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let mut h = g - d[l];
                for i in l + 2..n {
                    d[i] -= h;
                }
                f += h;
                p = d[m];
                let mut c = 1.0;
                let mut c2 = c;
                let mut c3 = c;
                let el1 = e[l + 1];
                let mut s = 0.0;
                let mut s2 = 0.0;
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    g = c * e[i];
                    h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    for k in 0..n {
                        h = v[idx(k, i + 1)];
                        v[idx(k, i + 1)] = s * v[idx(k, i)] + c * h;
                        v[idx(k, i)] = c * v[idx(k, i)] - s * h;
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if e[l].abs() <= eps * tst1 || iter > 60 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
    // Selection sort of values and vectors, ascending.
    for i in 0..n.saturating_sub(1) {
        let mut k = i;
        let mut p = d[i];
        for j in i + 1..n {
            if d[j] < p {
                k = j;
                p = d[j];
            }
        }
        if k != i {
            d[k] = d[i];
            d[i] = p;
            for j in 0..n {
                v.swap(idx(j, i), idx(j, k));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_symmetric(n: usize, seed: u64) -> Square {
        let mut x = seed;
        let mut m = Square::zeros(n);
        for i in 0..n {
            for j in i..n {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let v = ((x >> 11) as f64 / (1u64 << 53) as f64) - 0.5;
                m.set(i, j, v);
                m.set(j, i, v);
            }
        }
        m
    }

    #[test]
    fn reconstructs_the_matrix() {
        for n in [1, 2, 5, 40] {
            let m = random_symmetric(n, n as u64 + 3);
            let eg = symmetric_eigen(&m);
            for w in eg.values.windows(2) {
                assert!(w[0] <= w[1]);
            }
            // A v_k = λ_k v_k for every k.
            for k in 0..n {
                for i in 0..n {
                    let av: f64 = (0..n).map(|j| m.at(i, j) * eg.vectors.at(j, k)).sum();
                    assert!(
                        (av - eg.values[k] * eg.vectors.at(i, k)).abs() < 1e-9,
                        "n={n} k={k}"
                    );
                }
            }
            // Orthonormal vectors.
            for a in 0..n {
                for b in 0..n {
                    let dot: f64 = (0..n)
                        .map(|i| eg.vectors.at(i, a) * eg.vectors.at(i, b))
                        .sum();
                    assert!((dot - if a == b { 1.0 } else { 0.0 }).abs() < 1e-9);
                }
            }
        }
    }

    #[test]
    fn diagonal_and_outer_products() {
        let mut m = Square::zeros(3);
        m.add_outer_upper(&[1.0, 2.0, 0.0], 1.0);
        m.mirror();
        assert_eq!(m.at(1, 0), 2.0);
        assert_eq!(m.trace(), 5.0);
        let eg = symmetric_eigen(&m);
        assert!((eg.values[2] - 5.0).abs() < 1e-12);
        assert!(eg.values[0].abs() < 1e-12);
    }
}
