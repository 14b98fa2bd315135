//! The product catalog: products, their image embeddings in a FAISS index (the only module
//! that touches FAISS, through [`index`]), the search the live pipeline and `catalog query`
//! use, and updates while serving.
//!
//! A [`Catalog`] holds an immutable [`Snapshot`] behind a lock that is only held to swap
//! an `Arc`: searches clone the `Arc` and run without locks, concurrently; an update builds
//! a complete new snapshot (index copied, changed, persisted as a new on-disk generation)
//! and swaps it in, so a search never sees a half-updated index.
//!
//! Vectors in the index are the embedder's outputs passed through the catalog's learned
//! [`projection::Projection`] (when it has one) and L2-normalised; [`Catalog::search`] takes
//! raw embedder outputs and applies the same projection.

pub mod analyzer;
pub mod build;
pub mod commands;
pub mod domain;
pub mod feedback;
pub mod grocery;
pub mod index;
pub mod linalg;
pub mod product;
pub mod projection;
pub mod reuse;
pub mod store;
pub mod synthetic;
pub mod upstream;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

pub use self::analyzer::{AnalysisTimings, Analyzer, FrameAnalysis, Match, RegionMatch};
pub use self::domain::DomainMean;
pub use self::index::{IndexKind, IndexParams, VectorIndex};
pub use self::product::{ImageSource, Product, Skipped};
pub use self::projection::Projection;
use crate::inference::{BBox, InferenceError};

/// Format of the files in a generation; bumped on incompatible change.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: {why}")]
    Io { path: PathBuf, why: String },
    #[error("{path} is not a catalog: {why}")]
    NotACatalog { path: PathBuf, why: String },
    #[error("catalog file {path} is damaged: {why}")]
    Corrupt { path: PathBuf, why: String },
    /// A bad input line (`file:line`).
    #[error("{at}: {why}")]
    Input { at: String, why: String },
    #[error("image {source_name}: {why}")]
    Image { source_name: String, why: String },
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error(transparent)]
    Index(#[from] index::IndexError),
    #[error(transparent)]
    Domain(#[from] domain::DomainError),
    #[error("unknown product id `{0}`")]
    UnknownProduct(String),
    #[error("product id `{0}` already exists")]
    DuplicateProduct(String),
    #[error("invalid product: {0}")]
    InvalidProduct(String),
    #[error(
        "the catalog was built with embedder `{catalog}` ({catalog_dim}-d); the configured embedder is `{configured}` ({configured_dim}-d): rebuild the catalog or configure that embedder"
    )]
    EmbedderMismatch {
        catalog: String,
        catalog_dim: usize,
        configured: String,
        configured_dim: usize,
    },
    #[error("embedding has {got} values; the catalog expects {expected}")]
    Dimension { expected: usize, got: usize },
    #[error("{0}")]
    Empty(String),
}

/// `[catalog]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogSettings {
    /// Catalog folder the server loads and the admin API updates (empty: none).
    pub dir: String,
    /// `flat` (exact), `hnsw` or `ivf` (approximate, for large catalogs).
    pub index: IndexKind,
    pub hnsw_m: u32,
    pub hnsw_ef_construction: u32,
    pub hnsw_ef_search: u32,
    /// IVF lists (0: about 4·√n).
    pub ivf_nlist: u32,
    pub ivf_nprobe: u32,
    /// OpenMP threads per FAISS search: 1 suits single queries (NATIVE-DEPS.md).
    pub omp_threads: u32,
    /// Index vectors searched per product asked for (products have several images).
    pub search_oversample: usize,
    /// Look for the main product in catalog images with the detector (else the whole image).
    pub detect_catalog_images: bool,
    /// Also embed the whole catalog image next to the detected product.
    pub catalog_whole_image: bool,
    /// Centre crops (fractions of the region) averaged into one embedding, catalog side
    /// and query side; `[1.0]` is the region alone.
    pub catalog_views: Vec<f32>,
    pub query_views: Vec<f32>,
    /// Queries: only the regions whose first view matches the catalog best get the other
    /// views (this many per picture); the rest keep their first view. 0: every region
    /// gets every view.
    pub query_views_top: usize,
    /// Queries: ... and only regions whose first view's best similarity is within this of
    /// the picture's best region (0: no such limit).
    pub query_views_within: f32,
    /// Live queries: a region whose first view's best similarity is more than this below
    /// the similarity the matching stage asks of a cue can never become one, so it keeps
    /// its first view (one crop, not every view). 0: no such limit.
    pub query_views_floor_margin: f32,
    /// Detector boxes are grown by this factor before embedding (context helps).
    pub box_margin: f32,
    /// Queries: detections searched per picture (best scores first).
    pub query_detections: usize,
    /// Queries: also search the whole picture.
    pub query_whole_image: bool,
    /// Matches scoring below this are dropped ("no product").
    pub min_score: f32,
    /// Learned projection: dimensions kept (0: all) and shrinkage of the within-product
    /// covariance towards its mean eigenvalue (0..1).
    pub projection_dims: usize,
    pub projection_shrinkage: f32,
    /// The projection is learned only when at least this share of the products has
    /// labelled photos: products without any match worse in the learned space.
    pub projection_min_coverage: f32,
    /// Add the training photos of `--train-photos` to the catalog as product images too.
    pub train_photos_as_images: bool,
    /// Subtract the query-domain mean (built from `--domain-photos`, `domain` module) from
    /// each query before the search, when the catalog has one and no learned projection.
    pub domain_centring: bool,
    /// With `--domain-photos` and no `--train-photos`: give each unlabelled photo a product
    /// by clustering the photos around the catalog (`domain::pseudo_labels`) and learn the
    /// projection from those labels as from labelled photos. Queries are then searched in
    /// the learned space (centring does not apply).
    pub domain_pseudo_labels: bool,
    /// ... but only with at least this many usable photos per catalog product: with fewer,
    /// the clusters are too thin to learn from and centring matches better (measured on
    /// Grocery Store: break-even near 10 per product, +0.06 top-1 at 33).
    pub domain_pseudo_min_per_product: usize,
    /// How strongly the clustering evens the photos out across the products (0: plain
    /// soft k-means, the default; 1: every product an equal share;
    /// `domain::PseudoLabelParams`). Measured on Grocery Store at 0.5: shelf-photo search
    /// top-1 0.557 → 0.584, top-5 0.750 → 0.824, but live cue precision 0.68 → 0.59.
    pub domain_pseudo_balance: f32,
    /// `--domain-photos` needs at least this many usable photos: a mean of few (or of one
    /// product's) photos centres queries on them and matches worse than none.
    pub domain_min_photos: usize,
    /// Synthetic store-like views embedded per catalog image and blended into its vector
    /// (`synthetic` module; 0: off, the default: measured, they add nothing on top of
    /// multi-crop views). Each costs one embedding at build time, nothing per query.
    pub synthetic_views: usize,
    /// Seed of the synthetic views (the same catalog and seed give the same vectors).
    pub synthetic_seed: u64,
    /// Operator feedback (`feedback` module): confirmed photos kept per product (and
    /// negatives per product); past it the oldest is replaced.
    pub feedback_max_per_product: usize,
    /// A confirmed photo this similar (cosine) to a stored one of the same product is a
    /// duplicate and not stored again.
    pub feedback_duplicate_similarity: f32,
    /// A running sidecar retrains from the stored feedback every this many seconds when
    /// it changed since (0: only on `POST /v1/catalog/retrain` or `catalog retrain`).
    pub retrain_interval_s: u64,
    /// Check the catalog folder this often (ms) for a generation another process wrote
    /// (a fleet sharing the folder, `shopcue catalog build`) and swap it in; 0: never.
    pub follow_folder_ms: u64,
    /// Relative image paths in admin API requests are taken relative to this folder
    /// (empty: the catalog folder).
    pub images_root: String,
    /// Image downloads (URLs in products).
    pub fetch_timeout_ms: u64,
    pub max_image_bytes: usize,
    /// Admin API image URLs may name loopback, private, link-local or other non-public
    /// addresses (off: such URLs are refused, so the admin API cannot be used to reach
    /// services inside the network).
    pub admin_image_private_hosts: bool,
    /// Live price/availability from the shop's own API.
    pub upstream: upstream::UpstreamSettings,
}

impl Default for CatalogSettings {
    fn default() -> Self {
        let p = IndexParams::default();
        Self {
            dir: String::new(),
            index: p.kind,
            hnsw_m: p.hnsw_m,
            hnsw_ef_construction: p.hnsw_ef_construction,
            hnsw_ef_search: p.hnsw_ef_search,
            ivf_nlist: p.ivf_nlist,
            ivf_nprobe: p.ivf_nprobe,
            omp_threads: p.omp_threads,
            search_oversample: 8,
            detect_catalog_images: false,
            catalog_whole_image: true,
            catalog_views: vec![1.0, 0.8, 0.6],
            query_views: vec![1.0, 0.8, 0.6],
            query_views_top: 0,
            query_views_within: 0.0,
            query_views_floor_margin: 0.2,
            box_margin: 1.1,
            query_detections: 5,
            query_whole_image: true,
            min_score: 0.0,
            projection_dims: 0,
            projection_shrinkage: 0.1,
            projection_min_coverage: 0.9,
            train_photos_as_images: false,
            domain_centring: true,
            domain_pseudo_labels: true,
            domain_pseudo_min_per_product: 20,
            domain_pseudo_balance: 0.0,
            domain_min_photos: 50,
            synthetic_views: 0,
            synthetic_seed: 1,
            feedback_max_per_product: 20,
            feedback_duplicate_similarity: 0.98,
            retrain_interval_s: 0,
            follow_folder_ms: 1000,
            images_root: String::new(),
            fetch_timeout_ms: 10_000,
            admin_image_private_hosts: false,
            max_image_bytes: 20 << 20,
            upstream: upstream::UpstreamSettings::default(),
        }
    }
}

impl CatalogSettings {
    pub fn index_params(&self) -> IndexParams {
        IndexParams {
            kind: self.index,
            hnsw_m: self.hnsw_m,
            hnsw_ef_construction: self.hnsw_ef_construction,
            hnsw_ef_search: self.hnsw_ef_search,
            ivf_nlist: self.ivf_nlist,
            ivf_nprobe: self.ivf_nprobe,
            omp_threads: self.omp_threads,
        }
    }

    /// `Err((key inside [catalog], why))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, why: &str| Err((k.to_string(), why.to_string()));
        if !(4..=256).contains(&self.hnsw_m) {
            return bad("hnsw_m", "must be from 4 to 256");
        }
        if self.hnsw_ef_search == 0 || self.hnsw_ef_construction == 0 {
            return bad(
                "hnsw_ef_search",
                "hnsw_ef_search and hnsw_ef_construction must be at least 1",
            );
        }
        if self.ivf_nprobe == 0 {
            return bad("ivf_nprobe", "must be at least 1");
        }
        if self.search_oversample == 0 {
            return bad("search_oversample", "must be at least 1");
        }
        for (key, views) in [
            ("catalog_views", &self.catalog_views),
            ("query_views", &self.query_views),
        ] {
            if views.is_empty() || views.iter().any(|v| !(0.1..=1.0).contains(v)) {
                return bad(key, "must list fractions from 0.1 to 1");
            }
        }
        if self.query_views_top > 100 {
            return bad("query_views_top", "must be from 0 to 100");
        }
        if !(0.0..=2.0).contains(&self.query_views_within) {
            return bad("query_views_within", "must be from 0 to 2");
        }
        if !(0.0..=2.0).contains(&self.query_views_floor_margin) {
            return bad("query_views_floor_margin", "must be from 0 to 2");
        }
        if !(1.0..=3.0).contains(&self.box_margin) {
            return bad("box_margin", "must be from 1 to 3");
        }
        if self.query_detections == 0 && !self.query_whole_image {
            return bad(
                "query_detections",
                "is 0 and query_whole_image is false: nothing would be searched",
            );
        }
        if self.synthetic_views > 256 {
            return bad("synthetic_views", "must be from 0 to 256");
        }
        if !(-1.0..=1.0).contains(&self.min_score) {
            return bad("min_score", "must be from -1 to 1");
        }
        if self.follow_folder_ms != 0 && !(100..=3_600_000).contains(&self.follow_folder_ms) {
            return bad("follow_folder_ms", "must be 0 (off) or from 100 to 3600000");
        }
        if self.retrain_interval_s > 7 * 24 * 3600 {
            return bad("retrain_interval_s", "must be at most 604800 (a week)");
        }
        if !(1..=10_000).contains(&self.feedback_max_per_product) {
            return bad("feedback_max_per_product", "must be from 1 to 10000");
        }
        if !(self.feedback_duplicate_similarity > 0.0 && self.feedback_duplicate_similarity <= 1.0)
        {
            return bad(
                "feedback_duplicate_similarity",
                "must be greater than 0 and at most 1",
            );
        }
        if !(0.0..1.0).contains(&self.projection_shrinkage) {
            return bad("projection_shrinkage", "must be from 0 to below 1");
        }
        if !(0.0..=1.0).contains(&self.projection_min_coverage) {
            return bad("projection_min_coverage", "must be from 0 to 1");
        }
        if !(1..=10_000).contains(&self.domain_pseudo_min_per_product) {
            return bad("domain_pseudo_min_per_product", "must be from 1 to 10000");
        }
        if !(0.0..=1.0).contains(&self.domain_pseudo_balance) {
            return bad("domain_pseudo_balance", "must be from 0 to 1");
        }
        if !(1..=1_000_000).contains(&self.domain_min_photos) {
            return bad("domain_min_photos", "must be from 1 to 1000000");
        }
        if self.fetch_timeout_ms == 0 {
            return bad("fetch_timeout_ms", "must be greater than 0");
        }
        if self.max_image_bytes < 1024 {
            return bad("max_image_bytes", "must be at least 1024");
        }
        self.upstream
            .validate()
            .map_err(|(k, why)| (format!("upstream.{k}"), why))
    }
}

/// What a catalog was built with; stored as `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// Embedder model name and SHA-256: queries must use the same one.
    pub embedder: String,
    pub embedder_sha256: String,
    /// Length of the embedder's output and of the indexed vectors.
    pub raw_dim: usize,
    pub dim: usize,
    pub index: IndexKind,
    pub products: usize,
    pub vectors: usize,
    pub projection: bool,
    /// Views and detector use at build time (queries should match).
    pub catalog_views: Vec<f32>,
    pub detect_catalog_images: bool,
    /// Synthetic views blended into each catalog vector (0 in catalogs from before them).
    #[serde(default)]
    pub synthetic_views: usize,
    /// Labelled photos the projection was learned from (0: none, or not recorded).
    #[serde(default)]
    pub labelled_photos: usize,
    /// Unlabelled query-domain photos the stored query-domain mean (`domain_mean.f32`)
    /// was taken over; 0: the catalog has none.
    #[serde(default)]
    pub domain_photos: usize,
    /// Query-domain photos whose products were inferred (`catalog.domain_pseudo_labels`)
    /// to learn the projection; 0: none.
    #[serde(default)]
    pub pseudo_labelled_photos: usize,
    pub created: String,
}

/// One indexed vector: which product and which picture it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub label: i64,
    pub product_id: String,
    /// Image source (path or URL) it was computed from.
    pub image: String,
    /// Region of the image (normalised), when the detector found the product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<BBox>,
    /// `catalog` (a product image), `train` (a labelled photo from `--train-photos`) or
    /// `feedback` (an operator-confirmed crop, see [`feedback`]).
    pub origin: String,
    /// The raw (embedder-space) vector when the indexed one is projected; kept so a
    /// projection can be learned again (`catalog retrain`). Stored as `raw.f32`.
    #[serde(skip)]
    pub raw: Option<Arc<[f32]>>,
}

/// A raw embedding with where it came from, before projection.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageVector {
    pub image: String,
    pub bbox: Option<BBox>,
    pub origin: String,
    pub embedding: Vec<f32>,
}

/// One immutable state of the catalog.
pub struct Snapshot {
    pub manifest: Manifest,
    products: BTreeMap<String, Arc<Product>>,
    entries: Vec<Arc<(Entry, Vec<f32>)>>,
    by_label: HashMap<i64, usize>,
    index: VectorIndex,
    projection: Option<Arc<Projection>>,
    /// The query-domain mean (`domain` module), kept by every later generation.
    domain_mean: Option<Arc<DomainMean>>,
    next_label: i64,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Snapshot({} products, {} vectors)",
            self.products.len(),
            self.entries.len()
        )
    }
}

impl Snapshot {
    /// Assemble from products and their raw vectors.
    pub fn assemble(
        mut manifest: Manifest,
        products: Vec<Product>,
        vectors: Vec<(String, ImageVector)>,
        projection: Option<Projection>,
        params: &IndexParams,
    ) -> Result<Self, CatalogError> {
        let projection = projection.map(Arc::new);
        let dim = projection
            .as_ref()
            .map(|p| p.out_dim())
            .unwrap_or(manifest.raw_dim);
        let mut entries = Vec::with_capacity(vectors.len());
        for (label, (pid, iv)) in vectors.into_iter().enumerate() {
            if iv.embedding.len() != manifest.raw_dim {
                return Err(CatalogError::Dimension {
                    expected: manifest.raw_dim,
                    got: iv.embedding.len(),
                });
            }
            let v = project(projection.as_deref(), &iv.embedding);
            let raw = projection.as_ref().map(|_| Arc::from(iv.embedding));
            entries.push(Arc::new((
                Entry {
                    label: label as i64,
                    product_id: pid,
                    image: iv.image,
                    bbox: iv.bbox,
                    origin: iv.origin,
                    raw,
                },
                v,
            )));
        }
        manifest.dim = dim;
        manifest.projection = projection.is_some();
        let products = products
            .into_iter()
            .map(|p| (p.id.clone(), Arc::new(p)))
            .collect();
        Self::from_parts(manifest, products, entries, projection, params)
    }

    fn from_parts(
        manifest: Manifest,
        products: BTreeMap<String, Arc<Product>>,
        entries: Vec<Arc<(Entry, Vec<f32>)>>,
        projection: Option<Arc<Projection>>,
        params: &IndexParams,
    ) -> Result<Self, CatalogError> {
        let (flat, labels) = flatten(&entries, manifest.dim);
        let index = VectorIndex::build(params, manifest.dim, &flat, &labels)?;
        Ok(Self::with_index(
            manifest, products, entries, projection, None, index,
        ))
    }

    fn with_index(
        mut manifest: Manifest,
        products: BTreeMap<String, Arc<Product>>,
        entries: Vec<Arc<(Entry, Vec<f32>)>>,
        projection: Option<Arc<Projection>>,
        domain_mean: Option<Arc<DomainMean>>,
        index: VectorIndex,
    ) -> Self {
        let by_label: HashMap<i64, usize> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.0.label, i))
            .collect();
        let next_label = entries.iter().map(|e| e.0.label + 1).max().unwrap_or(0);
        manifest.products = products.len();
        manifest.vectors = entries.len();
        manifest.index = index.kind();
        manifest.domain_photos = domain_mean.as_ref().map_or(0, |m| m.photos());
        Self {
            manifest,
            products,
            entries,
            by_label,
            index,
            projection,
            domain_mean,
            next_label,
        }
    }

    /// The same catalog with `mean` as its query-domain mean (`None`: without one).
    pub fn with_domain_mean(mut self, mean: Option<Arc<DomainMean>>) -> Result<Self, CatalogError> {
        if let Some(m) = &mean
            && m.dim() != self.manifest.raw_dim
        {
            return Err(domain::DomainError::Dimension {
                expected: self.manifest.raw_dim,
                got: m.dim(),
            }
            .into());
        }
        self.manifest.domain_photos = mean.as_ref().map_or(0, |m| m.photos());
        self.domain_mean = mean;
        Ok(self)
    }

    /// The query-domain mean, when the catalog was built with one.
    pub fn domain_mean(&self) -> Option<&Arc<DomainMean>> {
        self.domain_mean.as_ref()
    }

    /// Whether queries are centred on the query-domain mean with centring `enabled`
    /// (`catalog.domain_centring`): only with a mean and without a learned projection (the
    /// labelled regime is better on its own; the two were not measured together).
    pub fn centres_queries(&self, enabled: bool) -> bool {
        enabled && self.domain_mean.is_some() && self.projection.is_none()
    }

    pub fn len(&self) -> usize {
        self.products.len()
    }
    pub fn is_empty(&self) -> bool {
        self.products.is_empty()
    }
    pub fn vectors(&self) -> usize {
        self.entries.len()
    }
    pub fn product(&self, id: &str) -> Option<&Arc<Product>> {
        self.products.get(id)
    }
    pub fn products(&self) -> impl Iterator<Item = &Arc<Product>> {
        self.products.values()
    }
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().map(|e| &e.0)
    }
    /// Every entry's raw (embedder-space) vector with its product, or `None` when a
    /// projected catalog does not hold them.
    pub fn raw_vectors(&self) -> Option<Vec<(String, ImageVector)>> {
        self.entries
            .iter()
            .map(|e| {
                let embedding = match (&self.projection, &e.0.raw) {
                    (None, _) => e.1.clone(),
                    (Some(_), Some(raw)) => raw.to_vec(),
                    (Some(_), None) => return None,
                };
                Some((
                    e.0.product_id.clone(),
                    ImageVector {
                        image: e.0.image.clone(),
                        bbox: e.0.bbox,
                        origin: e.0.origin.clone(),
                        embedding,
                    },
                ))
            })
            .collect()
    }

    pub fn projection(&self) -> Option<&Projection> {
        self.projection.as_deref()
    }

    /// Project and normalise a raw embedding into the index space.
    pub fn to_index_space(&self, embedding: &[f32]) -> Result<Vec<f32>, CatalogError> {
        if embedding.len() != self.manifest.raw_dim {
            return Err(CatalogError::Dimension {
                expected: self.manifest.raw_dim,
                got: embedding.len(),
            });
        }
        Ok(project(self.projection.as_deref(), embedding))
    }

    /// Best `k` products for each raw embedding, best first; a product's score is its best
    /// vector's cosine. Queries are centred when the catalog has a query-domain mean (see
    /// [`Self::search_with`]).
    pub fn search_batch<E: AsRef<[f32]>>(
        &self,
        embeddings: &[E],
        k: usize,
        oversample: usize,
    ) -> Result<Vec<Vec<(String, f32)>>, CatalogError> {
        self.search_with(embeddings, k, oversample, true)
    }

    /// [`Self::search_batch`] with query-domain centring on or off (`catalog.domain_centring`;
    /// it acts only where [`Self::centres_queries`]).
    pub fn search_with<E: AsRef<[f32]>>(
        &self,
        embeddings: &[E],
        k: usize,
        oversample: usize,
        centring: bool,
    ) -> Result<Vec<Vec<(String, f32)>>, CatalogError> {
        if embeddings.is_empty() || k == 0 || self.entries.is_empty() {
            return Ok(vec![Vec::new(); embeddings.len()]);
        }
        let centre = self
            .domain_mean
            .as_deref()
            .filter(|_| self.centres_queries(centring));
        let mut q = Vec::with_capacity(embeddings.len() * self.manifest.dim);
        for e in embeddings {
            let v = self.to_index_space(e.as_ref())?;
            q.extend(centre.map_or(v, |m| m.centre(e.as_ref())));
        }
        let hits = self
            .index
            .search(&q, k.saturating_mul(oversample.max(1)).max(k))?;
        Ok(hits
            .into_iter()
            .map(|row| {
                let mut best: Vec<(String, f32)> = Vec::new();
                for (label, score) in row {
                    let Some(&i) = self.by_label.get(&label) else {
                        continue;
                    };
                    let pid = &self.entries[i].0.product_id;
                    // Rows come best first: the first hit of a product is its score.
                    if !best.iter().any(|(p, _)| p == pid) {
                        best.push((pid.clone(), score));
                        if best.len() == k {
                            break;
                        }
                    }
                }
                best
            })
            .collect())
    }

    /// Persist as a new generation of `dir`.
    pub fn save(&self, dir: &Path) -> Result<PathBuf, CatalogError> {
        let w = store::GenerationWriter::begin(dir)?;
        let json = |v: &dyn erased::Json| v.to_json();
        w.write("manifest.json", json(&self.manifest).as_bytes())?;
        let mut products = String::new();
        for p in self.products.values() {
            products.push_str(&json(p.as_ref()));
            products.push('\n');
        }
        w.write("products.jsonl", products.as_bytes())?;
        let mut entries = String::new();
        let mut vectors = Vec::with_capacity(self.entries.len() * self.manifest.dim);
        for e in &self.entries {
            entries.push_str(&json(&e.0));
            entries.push('\n');
            vectors.extend_from_slice(&e.1);
        }
        w.write("entries.jsonl", entries.as_bytes())?;
        w.write("vectors.f32", &store::f32_bytes(&vectors))?;
        let raw: Option<Vec<&[f32]>> = self.entries.iter().map(|e| e.0.raw.as_deref()).collect();
        if let Some(raw) = raw.filter(|_| self.projection.is_some()) {
            w.write("raw.f32", &store::f32_bytes(&raw.concat()))?;
        }
        if let Some(p) = &self.projection {
            w.write("projection.f32", &store::f32_bytes(&p.to_floats()))?;
        }
        if let Some(m) = &self.domain_mean {
            w.write(domain::MEAN_FILE, &store::f32_bytes(m.as_floats()))?;
        }
        self.index.write(&w.path("index.faiss"))?;
        w.commit()
    }

    /// Load the live generation of `dir`.
    pub fn load(dir: &Path, params: &IndexParams) -> Result<Self, CatalogError> {
        Self::load_generation(&store::current_generation(dir)?, params)
    }

    /// Load the generation in folder `gen_dir`.
    pub fn load_generation(gen_dir: &Path, params: &IndexParams) -> Result<Self, CatalogError> {
        let corrupt = |path: &Path, why: String| CatalogError::Corrupt {
            path: path.to_path_buf(),
            why,
        };
        let read = |name: &str| -> Result<(PathBuf, String), CatalogError> {
            let p = gen_dir.join(name);
            let t = std::fs::read_to_string(&p).map_err(|e| CatalogError::Io {
                path: p.clone(),
                why: e.to_string(),
            })?;
            Ok((p, t))
        };
        let (mp, mtext) = read("manifest.json")?;
        let manifest: Manifest =
            serde_json::from_str(&mtext).map_err(|e| corrupt(&mp, e.to_string()))?;
        if manifest.format != FORMAT_VERSION {
            return Err(corrupt(
                &mp,
                format!("format {} is not {FORMAT_VERSION}", manifest.format),
            ));
        }
        let (pp, ptext) = read("products.jsonl")?;
        let mut products = BTreeMap::new();
        for (i, line) in ptext
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let p: Product = serde_json::from_str(line)
                .map_err(|e| corrupt(&pp, format!("line {}: {e}", i + 1)))?;
            products.insert(p.id.clone(), Arc::new(p));
        }
        let (ep, etext) = read("entries.jsonl")?;
        let vp = gen_dir.join("vectors.f32");
        let flat = store::read_f32s(&vp)?;
        let dim = manifest.dim;
        let lines: Vec<&str> = etext.lines().filter(|l| !l.trim().is_empty()).collect();
        if dim == 0 || flat.len() != lines.len() * dim {
            return Err(corrupt(
                &vp,
                format!("{} floats for {} entries of {dim}", flat.len(), lines.len()),
            ));
        }
        let raw = if manifest.projection {
            raw_of(&gen_dir.join("raw.f32"), lines.len(), manifest.raw_dim)?
        } else {
            None
        };
        let mut entries = Vec::with_capacity(lines.len());
        for (i, (line, v)) in lines.iter().zip(flat.chunks_exact(dim)).enumerate() {
            let mut e: Entry = serde_json::from_str(line)
                .map_err(|e| corrupt(&ep, format!("line {}: {e}", i + 1)))?;
            if !products.contains_key(&e.product_id) {
                return Err(corrupt(
                    &ep,
                    format!("line {}: unknown product `{}`", i + 1, e.product_id),
                ));
            }
            e.raw = raw
                .as_ref()
                .map(|r| Arc::from(&r[i * manifest.raw_dim..(i + 1) * manifest.raw_dim]));
            entries.push(Arc::new((e, v.to_vec())));
        }
        let projection = projection_of(gen_dir, &manifest)?;
        let domain_mean = domain_mean_of(gen_dir, &manifest)?;
        let ip = gen_dir.join("index.faiss");
        let index = match VectorIndex::read(&ip, params) {
            Ok(i)
                if i.len() == entries.len() && i.dim() == dim && manifest.index == params.kind =>
            {
                i
            }
            Ok(_) | Err(_) => {
                // Missing, damaged, or another kind than configured: rebuild from the vectors.
                tracing::info!(path = %ip.display(), "rebuilding the index from the stored vectors");
                let (flat, labels) = flatten(&entries, dim);
                VectorIndex::build(params, dim, &flat, &labels)?
            }
        };
        Ok(Self::with_index(
            manifest,
            products,
            entries,
            projection,
            domain_mean,
            index,
        ))
    }

    /// A copy with `product` added or replaced, its vectors replaced by `vectors` (raw).
    fn with_product(
        &self,
        product: Product,
        vectors: Vec<ImageVector>,
        params: &IndexParams,
    ) -> Result<Self, CatalogError> {
        let id = product.id.clone();
        let mut products = self.products.clone();
        products.insert(id.clone(), Arc::new(product));
        let vectors = vectors.into_iter().map(|iv| (id.clone(), iv)).collect();
        self.replaced(|e| e.product_id == id, products, vectors, params)
    }

    /// The vectors of one origin (e.g. `feedback`) replaced by `vectors` (raw; projected
    /// as the catalog's own), products unchanged.
    pub fn with_origin_replaced(
        &self,
        origin: &str,
        vectors: Vec<(String, ImageVector)>,
        params: &IndexParams,
    ) -> Result<Self, CatalogError> {
        if let Some((pid, _)) = vectors.iter().find(|(p, _)| !self.products.contains_key(p)) {
            return Err(CatalogError::UnknownProduct(pid.clone()));
        }
        self.replaced(
            |e| e.origin == origin,
            self.products.clone(),
            vectors,
            params,
        )
    }

    /// The entries `drop` picks replaced by `vectors` (raw, projected as the catalog's
    /// own, new labels), with `products`; the index changed in place where it can.
    fn replaced(
        &self,
        drop: impl Fn(&Entry) -> bool,
        products: BTreeMap<String, Arc<Product>>,
        vectors: Vec<(String, ImageVector)>,
        params: &IndexParams,
    ) -> Result<Self, CatalogError> {
        let old: Vec<i64> = self
            .entries
            .iter()
            .filter(|e| drop(&e.0))
            .map(|e| e.0.label)
            .collect();
        let mut entries: Vec<_> = self
            .entries
            .iter()
            .filter(|e| !drop(&e.0))
            .cloned()
            .collect();
        let mut label = self.next_label;
        let mut new_flat = Vec::new();
        let mut new_labels = Vec::new();
        for (product_id, iv) in vectors {
            if iv.embedding.len() != self.manifest.raw_dim {
                return Err(CatalogError::Dimension {
                    expected: self.manifest.raw_dim,
                    got: iv.embedding.len(),
                });
            }
            let v = project(self.projection.as_deref(), &iv.embedding);
            new_flat.extend_from_slice(&v);
            new_labels.push(label);
            let raw = self.projection.as_ref().map(|_| Arc::from(iv.embedding));
            entries.push(Arc::new((
                Entry {
                    label,
                    product_id,
                    image: iv.image,
                    bbox: iv.bbox,
                    origin: iv.origin,
                    raw,
                },
                v,
            )));
            label += 1;
        }
        let index = self.changed_index(&old, &new_flat, &new_labels, &entries, params)?;
        let mut s = Self::with_index(
            self.manifest.clone(),
            products,
            entries,
            self.projection.clone(),
            self.domain_mean.clone(),
            index,
        );
        // Labels are never reused, so an old search result can never name a new vector.
        s.next_label = s.next_label.max(label).max(self.next_label);
        Ok(s)
    }

    fn without_product(&self, id: &str, params: &IndexParams) -> Result<Self, CatalogError> {
        if !self.products.contains_key(id) {
            return Err(CatalogError::UnknownProduct(id.to_string()));
        }
        let manifest = self.manifest.clone();
        let mut products = self.products.clone();
        products.remove(id);
        let old: Vec<i64> = self
            .entries
            .iter()
            .filter(|e| e.0.product_id == id)
            .map(|e| e.0.label)
            .collect();
        let entries: Vec<_> = self
            .entries
            .iter()
            .filter(|e| e.0.product_id != id)
            .cloned()
            .collect();
        let index = self.changed_index(&old, &[], &[], &entries, params)?;
        let mut s = Self::with_index(
            manifest,
            products,
            entries,
            self.projection.clone(),
            self.domain_mean.clone(),
            index,
        );
        // Labels are never reused, so an old search result can never name a new vector.
        s.next_label = s.next_label.max(self.next_label);
        Ok(s)
    }

    /// A copy of the index with `remove` taken out and the new vectors added; rebuilt from
    /// `entries` where the index kind cannot remove.
    fn changed_index(
        &self,
        remove: &[i64],
        add: &[f32],
        add_labels: &[i64],
        entries: &[Arc<(Entry, Vec<f32>)>],
        params: &IndexParams,
    ) -> Result<VectorIndex, CatalogError> {
        let incremental = || -> Result<VectorIndex, index::IndexError> {
            let mut idx = self.index.try_clone()?;
            idx.remove(remove)?;
            idx.add(add, add_labels)?;
            Ok(idx)
        };
        match incremental() {
            Ok(i) if i.len() == entries.len() => Ok(i),
            _ => {
                let (flat, labels) = flatten(entries, self.manifest.dim);
                Ok(VectorIndex::build(
                    params,
                    self.manifest.dim,
                    &flat,
                    &labels,
                )?)
            }
        }
    }
}

/// The vectors and labels of `entries`, packed for FAISS.
/// The raw vectors of a projected catalog's `entries` entries from `raw.f32`, when it has
/// them at the right size (catalogs from before it have none: they cannot learn a
/// projection again).
fn raw_of(path: &Path, entries: usize, raw_dim: usize) -> Result<Option<Vec<f32>>, CatalogError> {
    if !path.exists() {
        return Ok(None);
    }
    let flat = store::read_f32s(path)?;
    if raw_dim == 0 || flat.len() != entries * raw_dim {
        tracing::warn!(path = %path.display(), floats = flat.len(), entries,
            "raw vectors do not match the entries; ignored (no projection can be learned again)");
        return Ok(None);
    }
    Ok(Some(flat))
}

fn flatten(entries: &[Arc<(Entry, Vec<f32>)>], dim: usize) -> (Vec<f32>, Vec<i64>) {
    let mut flat = Vec::with_capacity(entries.len() * dim);
    let mut labels = Vec::with_capacity(entries.len());
    for e in entries {
        flat.extend_from_slice(&e.1);
        labels.push(e.0.label);
    }
    (flat, labels)
}

/// The stored projection of a generation whose manifest names one.
fn projection_of(
    gen_dir: &Path,
    manifest: &Manifest,
) -> Result<Option<Arc<Projection>>, CatalogError> {
    if !manifest.projection {
        return Ok(None);
    }
    let p = gen_dir.join("projection.f32");
    let floats = store::read_f32s(&p)?;
    Projection::from_floats(manifest.raw_dim, manifest.dim, &floats)
        .map(|p| Some(Arc::new(p)))
        .map_err(|why| CatalogError::Corrupt { path: p, why })
}

/// The stored query-domain mean of a generation whose manifest names one.
fn domain_mean_of(
    gen_dir: &Path,
    manifest: &Manifest,
) -> Result<Option<Arc<DomainMean>>, CatalogError> {
    if manifest.domain_photos == 0 {
        return Ok(None);
    }
    let p = gen_dir.join(domain::MEAN_FILE);
    let floats = store::read_f32s(&p)?;
    DomainMean::from_floats(floats, manifest.raw_dim, manifest.domain_photos)
        .map(|m| Some(Arc::new(m)))
        .map_err(|e| CatalogError::Corrupt {
            path: p,
            why: e.to_string(),
        })
}

fn project(p: Option<&Projection>, v: &[f32]) -> Vec<f32> {
    let mut out = match p {
        Some(p) => p.apply(v),
        None => v.to_vec(),
    };
    crate::inference::postprocess::l2_normalize(&mut out);
    out
}

mod erased {
    /// Serialise without failing: our types always serialise.
    pub trait Json {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            serde_json::to_string(self).unwrap_or_else(|_| "null".into())
        }
    }
}

/// `EmbedderMismatch` unless the catalog described by `m` was made with this embedder.
fn check_manifest(m: &Manifest, name: &str, sha256: &str, dim: usize) -> Result<(), CatalogError> {
    if m.raw_dim != dim || (m.embedder_sha256 != sha256 && !m.embedder_sha256.is_empty()) {
        return Err(CatalogError::EmbedderMismatch {
            catalog: m.embedder.clone(),
            catalog_dim: m.raw_dim,
            configured: name.to_string(),
            configured_dim: dim,
        });
    }
    Ok(())
}

fn generation_name(gen_dir: &Path) -> Option<String> {
    gen_dir.file_name().map(|n| n.to_string_lossy().to_string())
}

/// A live catalog: searched concurrently, updated by whole-snapshot swaps, persisted to its
/// folder on every change.
pub struct Catalog {
    dir: Option<PathBuf>,
    params: IndexParams,
    oversample: usize,
    /// `catalog.domain_centring`.
    centring: bool,
    current: RwLock<Arc<Snapshot>>,
    /// The name of the generation `current` was loaded from or saved as (a folder).
    generation: RwLock<Option<String>>,
    /// The embedder the catalog was checked against (`name`, `sha256`, `dim`): a
    /// generation from the folder made with another one is refused.
    embedder: std::sync::OnceLock<(String, String, usize)>,
    /// One writer at a time; searches never wait for it.
    writer: Mutex<()>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Catalog({:?}, {:?})", self.dir, self.snapshot())
    }
}

impl Catalog {
    /// Open the catalog in `dir`.
    pub fn open(dir: &Path, settings: &CatalogSettings) -> Result<Self, CatalogError> {
        let params = settings.index_params();
        let gen_dir = store::current_generation(dir)?;
        let snap = Snapshot::load_generation(&gen_dir, &params)?;
        tracing::info!(dir = %dir.display(), products = snap.len(), vectors = snap.vectors(),
            index = ?params.kind, "catalog loaded");
        Ok(Self {
            dir: Some(dir.to_path_buf()),
            params,
            oversample: settings.search_oversample,
            centring: settings.domain_centring,
            current: RwLock::new(Arc::new(snap)),
            generation: RwLock::new(generation_name(&gen_dir)),
            embedder: std::sync::OnceLock::new(),
            writer: Mutex::new(()),
        })
    }

    /// A catalog held in memory only (tests, benchmarks).
    pub fn in_memory(snapshot: Snapshot, settings: &CatalogSettings) -> Self {
        Self {
            dir: None,
            params: settings.index_params(),
            oversample: settings.search_oversample,
            centring: settings.domain_centring,
            current: RwLock::new(Arc::new(snapshot)),
            generation: RwLock::new(None),
            embedder: std::sync::OnceLock::new(),
            writer: Mutex::new(()),
        }
    }

    /// The generation live here (`None` in memory).
    pub fn generation(&self) -> Option<String> {
        self.generation
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Load the folder's live generation if another process (sharing the folder) made a
    /// newer one; `Some(name)` when it was swapped in. Searches go on meanwhile.
    pub fn refresh(&self) -> Result<Option<String>, CatalogError> {
        let _one_writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh_locked()
    }

    fn refresh_locked(&self) -> Result<Option<String>, CatalogError> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let gen_dir = store::current_generation(dir)?;
        let name = generation_name(&gen_dir);
        if name.is_none() || name == self.generation() {
            return Ok(None);
        }
        let next = Snapshot::load_generation(&gen_dir, &self.params)?;
        if let Some((embedder, sha256, dim)) = self.embedder.get() {
            check_manifest(&next.manifest, embedder, sha256, *dim)?;
        }
        self.swap(next, name.clone());
        Ok(name)
    }

    fn swap(&self, next: Snapshot, generation: Option<String>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        *self.generation.write().unwrap_or_else(|p| p.into_inner()) = generation;
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The current state; stays valid (and unchanged) however long it is held.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn manifest(&self) -> Manifest {
        self.snapshot().manifest.clone()
    }

    /// Check that the catalog's vectors come from this embedder.
    pub fn check_embedder(&self, name: &str, sha256: &str, dim: usize) -> Result<(), CatalogError> {
        check_manifest(&self.manifest(), name, sha256, dim)?;
        let _ = self
            .embedder
            .set((name.to_string(), sha256.to_string(), dim));
        Ok(())
    }

    /// The `k` best products for one raw (embedder-space) embedding, best first.
    pub fn search(&self, embedding: &[f32], k: usize) -> Result<Vec<(String, f32)>, CatalogError> {
        Ok(self
            .search_batch(&[embedding.to_vec()], k)?
            .pop()
            .unwrap_or_default())
    }

    pub fn search_batch<E: AsRef<[f32]>>(
        &self,
        embeddings: &[E],
        k: usize,
    ) -> Result<Vec<Vec<(String, f32)>>, CatalogError> {
        self.snapshot()
            .search_with(embeddings, k, self.oversample, self.centring)
    }

    /// Whether searches centre queries on the catalog's query-domain mean now: its
    /// similarity scale is then the centred one (`matching.centred_min_similarity`).
    pub fn centres_queries(&self) -> bool {
        self.snapshot().centres_queries(self.centring)
    }

    pub fn product(&self, id: &str) -> Option<Arc<Product>> {
        self.snapshot().product(id).cloned()
    }

    /// Add a new product (`DuplicateProduct` if the id exists).
    pub fn add(&self, product: Product, vectors: Vec<ImageVector>) -> Result<(), CatalogError> {
        self.change(|s, params| {
            if s.product(&product.id).is_some() {
                return Err(CatalogError::DuplicateProduct(product.id.clone()));
            }
            s.with_product(product, vectors, params)
        })
    }

    /// Add or replace a product and its vectors.
    pub fn upsert(&self, product: Product, vectors: Vec<ImageVector>) -> Result<(), CatalogError> {
        self.change(|s, params| s.with_product(product, vectors, params))
    }

    /// Remove a product (`UnknownProduct` if absent).
    pub fn remove(&self, id: &str) -> Result<(), CatalogError> {
        self.change(|s, params| s.without_product(id, params))
    }

    /// One change: the next state from the current one, on disk first, then swapped in.
    pub(crate) fn change(
        &self,
        f: impl FnOnce(&Snapshot, &IndexParams) -> Result<Snapshot, CatalogError>,
    ) -> Result<(), CatalogError> {
        let _one_writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Some(dir) = &self.dir else {
            let next = f(&self.snapshot(), &self.params)?;
            self.swap(next, None);
            return Ok(());
        };
        // One writer among the processes sharing the folder, working on its newest
        // generation (another process may have changed it since this one loaded it).
        let _lock = store::lock(dir)?;
        self.refresh_locked()?;
        let next = f(&self.snapshot(), &self.params)?;
        // On disk first: if that fails the live catalog is unchanged.
        let gen_dir = next.save(dir)?;
        self.swap(next, generation_name(&gen_dir));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(raw_dim: usize) -> Manifest {
        Manifest {
            format: FORMAT_VERSION,
            embedder: "test".into(),
            embedder_sha256: String::new(),
            raw_dim,
            dim: raw_dim,
            index: IndexKind::Flat,
            products: 0,
            vectors: 0,
            projection: false,
            catalog_views: vec![1.0],
            detect_catalog_images: false,
            synthetic_views: 0,
            labelled_photos: 0,
            domain_photos: 0,
            pseudo_labelled_photos: 0,
            created: String::new(),
        }
    }

    fn prod(id: &str) -> Product {
        Product::from_json(&format!(
            r#"{{"id":"{id}","title":"T {id}","extra_field":[1,2]}}"#
        ))
        .unwrap()
    }

    fn iv(v: Vec<f32>) -> ImageVector {
        ImageVector {
            image: "img".into(),
            bbox: None,
            origin: "catalog".into(),
            embedding: v,
        }
    }

    fn small() -> Snapshot {
        Snapshot::assemble(
            manifest(3),
            vec![prod("a"), prod("b")],
            vec![
                ("a".into(), iv(vec![1.0, 0.0, 0.0])),
                ("a".into(), iv(vec![0.9, 0.1, 0.0])),
                ("b".into(), iv(vec![0.0, 1.0, 0.0])),
            ],
            None,
            &IndexParams::default(),
        )
        .unwrap()
    }

    #[test]
    fn search_aggregates_per_product() {
        let s = small();
        let r = s.search_batch(&[vec![1.0, 0.2, 0.0]], 5, 8).unwrap();
        assert_eq!(r[0].len(), 2, "one hit per product: {r:?}");
        assert_eq!(r[0][0].0, "a");
        assert!(r[0][0].1 > r[0][1].1);
        assert!(matches!(
            s.search_batch(&[vec![1.0]], 1, 8),
            Err(CatalogError::Dimension { .. })
        ));
    }

    #[test]
    fn processes_sharing_a_folder_see_each_others_changes_and_lose_none() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cat");
        small().save(&dir).unwrap();
        let settings = CatalogSettings::default();
        // Two processes' catalogs over one folder (a fleet's shared volume).
        let a = Catalog::open(&dir, &settings).unwrap();
        let b = Catalog::open(&dir, &settings).unwrap();
        assert_eq!(a.generation(), b.generation());
        assert_eq!(b.refresh().unwrap(), None, "nothing new");
        a.add(prod("c"), vec![iv(vec![0.0, 0.0, 1.0])]).unwrap();
        assert!(b.product("c").is_none(), "b has not looked yet");
        // b changes before it looked: its change starts from a's generation, so both stay.
        b.remove("b").unwrap();
        assert!(b.product("c").is_some() && b.product("b").is_none());
        let swapped = a.refresh().unwrap();
        assert_eq!(swapped, b.generation());
        assert!(a.product("c").is_some() && a.product("b").is_none());
        assert_eq!(a.search(&[0.0, 0.1, 1.0], 1).unwrap()[0].0, "c");
        // A generation made with another embedder is refused; the live one stays.
        a.check_embedder("test", "", 3).unwrap();
        let other = Snapshot::assemble(
            manifest(4),
            vec![prod("z")],
            vec![("z".into(), iv(vec![1.0, 0.0, 0.0, 0.0]))],
            None,
            &IndexParams::default(),
        )
        .unwrap();
        other.save(&dir).unwrap();
        assert!(matches!(
            a.refresh(),
            Err(CatalogError::EmbedderMismatch { .. })
        ));
        assert_eq!(a.snapshot().len(), 2);
        // A folder that went bad leaves the live catalog as it was.
        std::fs::write(dir.join(store::CURRENT), "gen-999999\n").unwrap();
        assert!(a.refresh().is_err());
        assert_eq!(a.snapshot().len(), 2);
    }

    #[test]
    fn updates_swap_whole_snapshots_and_persist() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cat");
        small().save(&dir).unwrap();
        for kind in [IndexKind::Flat, IndexKind::Hnsw] {
            let settings = CatalogSettings {
                index: kind,
                ..Default::default()
            };
            let cat = Catalog::open(&dir, &settings).unwrap();
            let before = cat.snapshot();
            cat.add(prod("c"), vec![iv(vec![0.0, 0.0, 1.0])]).unwrap();
            assert!(matches!(
                cat.add(prod("c"), vec![]),
                Err(CatalogError::DuplicateProduct(_))
            ));
            assert_eq!(cat.search(&[0.0, 0.1, 1.0], 1).unwrap()[0].0, "c");
            // The old snapshot is untouched.
            assert_eq!(before.len(), 2);
            assert_ne!(
                before.search_batch(&[vec![0.0, 0.0, 1.0]], 1, 8).unwrap()[0][0].0,
                "c"
            );
            // Replace a's vectors: now it sits on the z axis too, above c.
            cat.upsert(prod("a"), vec![iv(vec![0.0, 0.05, 1.0])])
                .unwrap();
            assert_eq!(cat.search(&[0.0, 0.05, 1.0], 1).unwrap()[0].0, "a");
            cat.remove("c").unwrap();
            assert!(matches!(
                cat.remove("c"),
                Err(CatalogError::UnknownProduct(_))
            ));
            assert!(cat.product("c").is_none());
            // Persisted: a fresh open sees the same.
            let again = Catalog::open(&dir, &settings).unwrap();
            assert_eq!(again.snapshot().len(), 2);
            assert_eq!(again.snapshot().vectors(), 2);
            assert_eq!(again.search(&[0.0, 0.05, 1.0], 1).unwrap()[0].0, "a");
            assert_eq!(
                again.product("a").unwrap().extra["extra_field"],
                serde_json::json!([1, 2])
            );
            // Back to the start for the next kind.
            cat.upsert(
                prod("a"),
                vec![iv(vec![1.0, 0.0, 0.0]), iv(vec![0.9, 0.1, 0.0])],
            )
            .unwrap();
        }
    }

    /// `small()` with a query-domain mean leaning towards product a's axis.
    fn centred() -> Snapshot {
        let mean = DomainMean::of(&[vec![0.9, 0.0, 0.1], vec![0.7, 0.1, 0.2]]).unwrap();
        small().with_domain_mean(Some(Arc::new(mean))).unwrap()
    }

    #[test]
    fn queries_are_centred_on_the_stored_mean() {
        let s = centred();
        assert_eq!(s.manifest.domain_photos, 2);
        assert!(s.centres_queries(true) && !s.centres_queries(false));
        // Raw, this query is nearer a; minus the mean (mostly a's axis) it is nearer b.
        let q = vec![0.8, 0.5, 0.0];
        assert_eq!(s.search_with(&[&q], 1, 8, false).unwrap()[0][0].0, "a");
        let hit = &s.search_batch(&[&q], 2, 8).unwrap()[0];
        assert_eq!(hit[0].0, "b");
        let c = s.domain_mean().unwrap().centre(&q);
        assert!((hit[0].1 - c[1]).abs() < 1e-5, "{hit:?} {c:?}");
        // A mean of another length is refused.
        let short = DomainMean::of(&[vec![1.0, 0.0]]).unwrap();
        assert!(matches!(
            small().with_domain_mean(Some(Arc::new(short))),
            Err(CatalogError::Domain(_))
        ));
    }

    #[test]
    fn the_mean_is_stored_and_kept_by_later_generations() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cat");
        let g = centred().save(&dir).unwrap();
        assert!(g.join(domain::MEAN_FILE).is_file());
        let want = centred().domain_mean().unwrap().as_ref().clone();
        let cat = Catalog::open(&dir, &CatalogSettings::default()).unwrap();
        assert_eq!(cat.snapshot().domain_mean().unwrap().as_ref(), &want);
        assert!(cat.centres_queries());
        // An admin change writes a new generation: the mean goes with it.
        cat.add(prod("c"), vec![iv(vec![0.0, 0.0, 1.0])]).unwrap();
        cat.remove("c").unwrap();
        let again = Snapshot::load(&dir, &IndexParams::default()).unwrap();
        assert_eq!(again.domain_mean().unwrap().as_ref(), &want);
        assert_eq!(again.manifest.domain_photos, 2);
        // Centring off: searches use the raw query.
        let off = CatalogSettings {
            domain_centring: false,
            ..Default::default()
        };
        let plain = Catalog::open(&dir, &off).unwrap();
        assert!(!plain.centres_queries());
        assert_eq!(plain.search(&[0.8, 0.5, 0.0], 1).unwrap()[0].0, "a");
        assert_eq!(cat.search(&[0.8, 0.5, 0.0], 1).unwrap()[0].0, "b");
        // A damaged mean is a damaged catalog, named.
        let live = store::current_generation(&dir).unwrap();
        std::fs::write(live.join(domain::MEAN_FILE), [0u8; 8]).unwrap();
        let e = Snapshot::load(&dir, &IndexParams::default()).unwrap_err();
        assert!(e.to_string().contains(domain::MEAN_FILE), "{e}");
    }

    #[test]
    fn damaged_files_are_reported() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cat");
        let g = small().save(&dir).unwrap();
        std::fs::write(g.join("vectors.f32"), [0u8; 8]).unwrap();
        let e = Snapshot::load(&dir, &IndexParams::default()).unwrap_err();
        assert!(matches!(e, CatalogError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("vectors.f32"));
        // A missing index file is rebuilt from the vectors.
        let g = small().save(&dir).unwrap();
        std::fs::remove_file(g.join("index.faiss")).unwrap();
        assert_eq!(
            Snapshot::load(&dir, &IndexParams::default())
                .unwrap()
                .vectors(),
            3
        );
    }

    #[test]
    fn defaults_validate() {
        CatalogSettings::default().validate().unwrap();
        let s = CatalogSettings {
            query_views: vec![],
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().0, "query_views");
        for balance in [-0.1, 1.5, f32::NAN] {
            let s = CatalogSettings {
                domain_pseudo_balance: balance,
                ..Default::default()
            };
            assert_eq!(s.validate().unwrap_err().0, "domain_pseudo_balance");
        }
        let s = CatalogSettings {
            query_views_top: 101,
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().0, "query_views_top");
        let s = CatalogSettings {
            query_views_within: -0.5,
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().0, "query_views_within");
        let s = CatalogSettings {
            query_views_floor_margin: f32::NAN,
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().0, "query_views_floor_margin");
    }
}
