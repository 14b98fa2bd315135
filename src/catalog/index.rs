//! The vector index: a thin, thread-safe face over FAISS (the only code that touches it).
//!
//! Inner product over L2-normalised vectors (= cosine). `flat` is an exact `IDMap,Flat`;
//! `hnsw` an approximate `IDMap,HNSW<M>` graph; `ivf` an inverted file `IVF<nlist>,Flat`
//! (trained on the catalog's own vectors). Searches take `&self` and may run from many
//! threads at once (FAISS CPU search is const); changes go to a copy that the catalog swaps
//! in whole.

use std::ffi::c_int;
use std::path::Path;
use std::sync::OnceLock;

use faiss::index::{IndexImpl, TryClone};
use faiss::selector::IdSelector;
use faiss::{Idx, Index, MetricType};
use serde::{Deserialize, Serialize};

/// Which FAISS structure holds the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    Flat,
    Hnsw,
    Ivf,
}

/// Parameters of the index (`[catalog]` keys `index`, `hnsw_*`, `ivf_*`, `omp_threads`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexParams {
    pub kind: IndexKind,
    pub hnsw_m: u32,
    pub hnsw_ef_construction: u32,
    pub hnsw_ef_search: u32,
    /// 0: about 4·√n lists.
    pub ivf_nlist: u32,
    pub ivf_nprobe: u32,
    /// OpenMP threads of a search (1 is fastest for single queries).
    pub omp_threads: u32,
}

impl Default for IndexParams {
    fn default() -> Self {
        Self {
            kind: IndexKind::Flat,
            hnsw_m: 32,
            hnsw_ef_construction: 80,
            hnsw_ef_search: 64,
            ivf_nlist: 0,
            ivf_nprobe: 16,
            omp_threads: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("FAISS: {0}")]
pub struct IndexError(pub String);

fn ferr(what: &str, e: impl std::fmt::Display) -> IndexError {
    IndexError(format!("{what}: {e}"))
}

type OmpSetNumThreads = unsafe extern "C" fn(c_int);

/// Set OpenMP's thread count for FAISS calls made from this thread (OpenMP keeps it per
/// thread, so every searching thread sets it). libgomp comes with libfaiss; it is found
/// by name in the process, so nothing links against it directly.
pub fn set_omp_threads(n: u32) {
    static SETTER: OnceLock<Option<OmpSetNumThreads>> = OnceLock::new();
    let setter = SETTER.get_or_init(|| {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks a symbol up.
        let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"omp_set_num_threads".as_ptr()) };
        if sym.is_null() {
            tracing::warn!(
                "omp_set_num_threads not found: FAISS uses OMP_NUM_THREADS or all cores"
            );
            None
        } else {
            // SAFETY: the symbol is libgomp's `void omp_set_num_threads(int)`.
            Some(unsafe { std::mem::transmute::<*mut libc::c_void, OmpSetNumThreads>(sym) })
        }
    });
    if let (Some(f), true) = (setter, n > 0) {
        // SAFETY: plain setter of a thread-local OpenMP variable.
        unsafe { f(n as c_int) }
    }
}

/// Building and adding use every core.
fn all_cores() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// A FAISS index over `dim`-dimensional vectors labelled with `i64` ids.
pub struct VectorIndex {
    inner: IndexImpl,
    dim: usize,
    params: IndexParams,
}

impl std::fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VectorIndex({:?}, {} x {}-d)",
            self.params.kind,
            self.len(),
            self.dim
        )
    }
}

impl VectorIndex {
    /// Build from `vectors` (`labels.len()` rows of `dim`).
    pub fn build(
        params: &IndexParams,
        dim: usize,
        vectors: &[f32],
        labels: &[i64],
    ) -> Result<Self, IndexError> {
        if dim == 0 || vectors.len() != dim * labels.len() {
            return Err(IndexError(format!(
                "{} floats are not {} vectors of {dim}",
                vectors.len(),
                labels.len()
            )));
        }
        set_omp_threads(all_cores());
        let n = labels.len();
        let description = match params.kind {
            IndexKind::Flat => "IDMap,Flat".to_string(),
            IndexKind::Hnsw => format!("IDMap,HNSW{}", params.hnsw_m.max(4)),
            IndexKind::Ivf => {
                let nlist = if params.ivf_nlist > 0 {
                    params.ivf_nlist as usize
                } else {
                    (4.0 * (n as f64).sqrt()) as usize
                };
                format!("IVF{},Flat", nlist.clamp(1, n.max(1)))
            }
        };
        let mut inner = faiss::index_factory(dim as u32, &description, MetricType::InnerProduct)
            .map_err(|e| ferr(&format!("index_factory({description})"), e))?;
        if params.kind == IndexKind::Hnsw {
            set_parameter(&inner, "efConstruction", params.hnsw_ef_construction as f64)?;
        }
        if params.kind == IndexKind::Ivf {
            if n == 0 {
                return Err(IndexError("an IVF index needs vectors to train on".into()));
            }
            inner.train(vectors).map_err(|e| ferr("train", e))?;
        }
        let mut index = Self {
            inner,
            dim,
            params: params.clone(),
        };
        index.apply_search_params()?;
        if n > 0 {
            index.add(vectors, labels)?;
        }
        Ok(index)
    }

    fn apply_search_params(&mut self) -> Result<(), IndexError> {
        match self.params.kind {
            IndexKind::Flat => Ok(()),
            IndexKind::Hnsw => {
                set_parameter(&self.inner, "efSearch", self.params.hnsw_ef_search as f64)
            }
            IndexKind::Ivf => set_parameter(&self.inner, "nprobe", self.params.ivf_nprobe as f64),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn len(&self) -> usize {
        self.inner.ntotal() as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn kind(&self) -> IndexKind {
        self.params.kind
    }

    /// OpenMP threads each search uses (0 leaves the thread's setting alone).
    pub fn set_omp_threads(&mut self, n: u32) {
        self.params.omp_threads = n;
    }

    pub fn add(&mut self, vectors: &[f32], labels: &[i64]) -> Result<(), IndexError> {
        if vectors.len() != self.dim * labels.len() {
            return Err(IndexError(format!(
                "{} floats are not {} vectors of {}",
                vectors.len(),
                labels.len(),
                self.dim
            )));
        }
        set_omp_threads(all_cores());
        let ids: Vec<Idx> = labels.iter().map(|&l| Idx::new(l as u64)).collect();
        self.inner
            .add_with_ids(vectors, &ids)
            .map_err(|e| ferr("add", e))
    }

    /// Remove vectors by label; `Err` where the index kind cannot (HNSW): rebuild instead.
    pub fn remove(&mut self, labels: &[i64]) -> Result<usize, IndexError> {
        if labels.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Idx> = labels.iter().map(|&l| Idx::new(l as u64)).collect();
        let sel = IdSelector::batch(&ids).map_err(|e| ferr("selector", e))?;
        self.inner
            .remove_ids(&sel)
            .map_err(|e| ferr("remove_ids", e))
    }

    pub fn try_clone(&self) -> Result<Self, IndexError> {
        Ok(Self {
            inner: self.inner.try_clone().map_err(|e| ferr("clone", e))?,
            dim: self.dim,
            params: self.params.clone(),
        })
    }

    /// The `k` best `(label, score)` of each query (`queries.len() / dim` of them), best first.
    pub fn search(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<(i64, f32)>>, IndexError> {
        if queries.is_empty() || !queries.len().is_multiple_of(self.dim) {
            return Err(IndexError(format!(
                "{} floats are not queries of {}",
                queries.len(),
                self.dim
            )));
        }
        let nq = queries.len() / self.dim;
        let k = k.min(self.len());
        if k == 0 {
            return Ok(vec![Vec::new(); nq]);
        }
        set_omp_threads(self.params.omp_threads);
        let mut distances = vec![0f32; nq * k];
        let mut labels = vec![-1i64; nq * k];
        // SAFETY: the pointers are valid for nq*dim / nq*k elements; FAISS CPU search does
        // not modify the index, so concurrent calls through `&self` are sound.
        let code = unsafe {
            faiss_sys::faiss_Index_search(
                self.inner.inner_ptr(),
                nq as faiss_sys::idx_t,
                queries.as_ptr(),
                k as faiss_sys::idx_t,
                distances.as_mut_ptr(),
                labels.as_mut_ptr(),
            )
        };
        if code != 0 {
            return Err(IndexError(format!("search failed (code {code})")));
        }
        Ok(labels
            .chunks(k)
            .zip(distances.chunks(k))
            .map(|(l, d)| {
                l.iter()
                    .zip(d)
                    .filter(|(l, _)| **l >= 0)
                    .map(|(l, d)| (*l, *d))
                    .collect()
            })
            .collect())
    }

    pub fn write(&self, path: &Path) -> Result<(), IndexError> {
        let p = path
            .to_str()
            .ok_or_else(|| IndexError(format!("path {} is not UTF-8", path.display())))?;
        faiss::write_index(&self.inner, p).map_err(|e| ferr(&format!("write {p}"), e))
    }

    pub fn read(path: &Path, params: &IndexParams) -> Result<Self, IndexError> {
        let p = path
            .to_str()
            .ok_or_else(|| IndexError(format!("path {} is not UTF-8", path.display())))?;
        let inner = faiss::read_index(p).map_err(|e| ferr(&format!("read {p}"), e))?;
        let dim = inner.d() as usize;
        let mut index = Self {
            inner,
            dim,
            params: params.clone(),
        };
        index.apply_search_params()?;
        Ok(index)
    }
}

fn set_parameter(index: &IndexImpl, name: &str, value: f64) -> Result<(), IndexError> {
    let space =
        faiss::index::autotune::ParameterSpace::new().map_err(|e| ferr("ParameterSpace", e))?;
    space
        .set_index_parameter(index, name, value)
        .map_err(|e| ferr(&format!("set {name}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(dim: usize, seed: u64) -> Vec<f32> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect();
        crate::inference::postprocess::l2_normalize(&mut v);
        v
    }

    fn data(n: usize, dim: usize) -> (Vec<f32>, Vec<i64>) {
        let mut v = Vec::new();
        for i in 0..n {
            v.extend(unit(dim, i as u64));
        }
        (v, (0..n as i64).map(|i| i * 10).collect())
    }

    #[test]
    fn every_kind_finds_itself() {
        let dim = 16;
        let (v, labels) = data(200, dim);
        for kind in [IndexKind::Flat, IndexKind::Hnsw, IndexKind::Ivf] {
            let params = IndexParams {
                kind,
                ivf_nprobe: 64,
                ..Default::default()
            };
            let idx = VectorIndex::build(&params, dim, &v, &labels).unwrap();
            assert_eq!(idx.len(), 200);
            let res = idx.search(&v[7 * dim..8 * dim], 3).unwrap();
            assert_eq!(res[0][0].0, 70, "{kind:?}");
            assert!((res[0][0].1 - 1.0).abs() < 1e-4);
        }
    }

    #[test]
    fn clone_remove_add_and_persist() {
        let dim = 8;
        let (v, labels) = data(50, dim);
        let idx = VectorIndex::build(&IndexParams::default(), dim, &v, &labels).unwrap();
        let mut copy = idx.try_clone().unwrap();
        assert_eq!(copy.remove(&[30]).unwrap(), 1);
        assert_eq!(copy.len(), 49);
        assert_eq!(idx.len(), 50, "the original is untouched");
        let q = &v[3 * dim..4 * dim];
        assert_ne!(copy.search(q, 1).unwrap()[0][0].0, 30);
        copy.add(q, &[999]).unwrap();
        assert_eq!(copy.search(q, 1).unwrap()[0][0].0, 999);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.faiss");
        copy.write(&p).unwrap();
        let back = VectorIndex::read(&p, &IndexParams::default()).unwrap();
        assert_eq!(back.len(), 50);
        assert_eq!(back.search(q, 1).unwrap()[0][0].0, 999);
        // HNSW cannot remove: the caller rebuilds.
        let params = IndexParams {
            kind: IndexKind::Hnsw,
            ..Default::default()
        };
        let mut h = VectorIndex::build(&params, dim, &v, &labels).unwrap();
        assert!(h.remove(&[30]).is_err());
    }

    #[test]
    fn concurrent_searches() {
        let dim = 32;
        let (v, labels) = data(500, dim);
        let idx = std::sync::Arc::new(
            VectorIndex::build(&IndexParams::default(), dim, &v, &labels).unwrap(),
        );
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let idx = idx.clone();
                let v = v.clone();
                std::thread::spawn(move || {
                    for i in (t..500).step_by(4) {
                        let r = idx.search(&v[i * dim..(i + 1) * dim], 1).unwrap();
                        assert_eq!(r[0][0].0, i as i64 * 10);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(VectorIndex::build(&IndexParams::default(), 4, &[0.0; 7], &[1, 2]).is_err());
        let idx = VectorIndex::build(&IndexParams::default(), 4, &[], &[]).unwrap();
        assert!(idx.search(&[0.0; 3], 1).is_err());
        assert_eq!(idx.search(&[0.0; 4], 5).unwrap(), vec![vec![]]);
    }
}
