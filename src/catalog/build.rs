//! `catalog build`: products JSONL (+ optional labelled training photos) → a catalog folder,
//! written atomically. Bad lines, unreadable images and unknown ids are skipped and reported
//! by `file:line` (or fail the build with `strict`); a failed build leaves no catalog
//! behind and an existing catalog untouched.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::analyzer::{detection_rect, embed_regions, main_region};
use super::product::{self, ImageSource, Product, Skipped};
use super::projection::Projection;
use super::synthetic::{self, Clutter};
use super::{CatalogError, CatalogSettings, FORMAT_VERSION, ImageVector, Manifest, Snapshot};
use crate::inference::{Crop, Models, Rect, RgbImage};

/// Products whose first image is drawn as clutter behind synthetic views.
const CLUTTER_PRODUCTS: usize = 48;

/// Reads product images from files and URLs, with size and time limits.
pub struct ImageLoader {
    base: PathBuf,
    timeout: Duration,
    max_bytes: usize,
    client: reqwest::Client,
}

impl ImageLoader {
    /// Relative paths are taken relative to `base`.
    pub fn new(base: &Path, settings: &CatalogSettings) -> Self {
        let timeout = Duration::from_millis(settings.fetch_timeout_ms);
        Self {
            base: base.to_path_buf(),
            timeout,
            max_bytes: settings.max_image_bytes,
            client: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .unwrap_or_else(|_| reqwest::Client::new()),
        }
    }

    /// Load and decode one image (blocking; call from a blocking thread in async code).
    pub fn load(&self, spec: &str) -> Result<(String, RgbImage), CatalogError> {
        let source = ImageSource::resolve(spec, &self.base);
        let name = source.to_string();
        let fail = |why: String| CatalogError::Image {
            source_name: name.clone(),
            why,
        };
        let bytes = match &source {
            ImageSource::File(p) => {
                let meta = std::fs::metadata(p).map_err(|e| fail(e.to_string()))?;
                if meta.len() as usize > self.max_bytes {
                    return Err(fail(format!(
                        "{} bytes is over the {} limit",
                        meta.len(),
                        self.max_bytes
                    )));
                }
                std::fs::read(p).map_err(|e| fail(e.to_string()))?
            }
            ImageSource::Url(u) => self.fetch(u).map_err(fail)?,
        };
        let img = RgbImage::decode(&bytes, &name).map_err(|e| match e {
            crate::inference::InferenceError::Image { why, .. } => fail(why),
            other => fail(other.to_string()),
        })?;
        Ok((name, img))
    }

    fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        let client = self.client.clone();
        let max = self.max_bytes;
        let url = url.to_string();
        let fut = async move {
            let mut resp = client.get(&url).send().await.map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("HTTP {}", resp.status()));
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
                body.extend_from_slice(&chunk);
                if body.len() > max {
                    return Err(format!("larger than the {max}-byte limit"));
                }
            }
            Ok(body)
        };
        let timeout = self.timeout;
        let fut = async move {
            tokio::time::timeout(timeout, fut)
                .await
                .map_err(|_| "timed out".to_string())?
        };
        match tokio::runtime::Handle::try_current() {
            // On a blocking thread of a runtime (admin API): borrow it.
            Ok(h) => h.block_on(fut),
            Err(_) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(fut),
        }
    }
}

/// The vectors of one product picture: the main product (if the detector is used and finds
/// one) and/or the whole picture.
pub fn picture_vectors(
    models: &Models,
    settings: &CatalogSettings,
    name: &str,
    img: &RgbImage,
    origin: &str,
    synth: Option<Synthesis<'_>>,
) -> Result<Vec<ImageVector>, CatalogError> {
    let mut regions: Vec<(Option<crate::inference::BBox>, Rect)> = Vec::new();
    if settings.detect_catalog_images {
        let dets = models.detector.detect(img)?;
        if let Some(d) = main_region(&dets) {
            regions.push((Some(d.bbox), detection_rect(d, img, settings.box_margin)));
        }
    }
    if regions.is_empty() || settings.catalog_whole_image {
        regions.push((None, img.full_rect()));
    }
    let rects: Vec<Rect> = regions.iter().map(|r| r.1).collect();
    let mut embs = embed_regions(&models.embedder, img, &rects, &settings.catalog_views)?;
    if let Some(s) = synth.filter(|_| settings.synthetic_views > 0) {
        let views = synthetic::views(
            img,
            s.product,
            name,
            s.clutter,
            settings.synthetic_views,
            settings.synthetic_seed,
        );
        let crops: Vec<Crop<'_>> = views
            .iter()
            .map(|(image, rect)| Crop { image, rect: *rect })
            .collect();
        let seen = models.embedder.embed_batch(&crops)?;
        embs = embs.iter().map(|e| synthetic::blend(e, &seen)).collect();
    }
    Ok(regions
        .into_iter()
        .zip(embs)
        .map(|((bbox, _), embedding)| ImageVector {
            image: name.to_string(),
            bbox,
            origin: origin.to_string(),
            embedding,
        })
        .collect())
}

/// What synthetic views of a catalog picture need: its product and the clutter to draw
/// behind it.
#[derive(Clone, Copy)]
pub struct Synthesis<'a> {
    pub product: &'a str,
    pub clutter: &'a Clutter,
}

/// The first loadable image of up to [`CLUTTER_PRODUCTS`] products, evenly spread over
/// the list: the shelf behind synthetic views. Nothing when synthetic views are off.
pub fn clutter_of<'a>(
    settings: &CatalogSettings,
    loader: &ImageLoader,
    products: impl ExactSizeIterator<Item = &'a Product>,
) -> Clutter {
    let mut clutter = Clutter::default();
    let n = products.len();
    if settings.synthetic_views == 0 || n == 0 {
        return clutter;
    }
    let step = n.div_ceil(CLUTTER_PRODUCTS);
    for p in products.step_by(step) {
        if let Some(img) = p.images.iter().find_map(|spec| loader.load(spec).ok()) {
            clutter.push(&p.id, &img.1);
        }
    }
    clutter
}

/// Load and embed every image of a product; unusable images are reported, not fatal.
pub fn product_vectors(
    models: &Models,
    settings: &CatalogSettings,
    loader: &ImageLoader,
    product: &Product,
    at: &str,
    clutter: &Clutter,
) -> (Vec<ImageVector>, Vec<Skipped>) {
    let mut vectors = Vec::new();
    let mut skipped = Vec::new();
    let synth = Synthesis {
        product: &product.id,
        clutter,
    };
    for spec in &product.images {
        let r = loader.load(spec).and_then(|(name, img)| {
            picture_vectors(models, settings, &name, &img, "catalog", Some(synth))
        });
        match r {
            Ok(v) => vectors.extend(v),
            Err(e) => skipped.push(Skipped {
                at: format!("{at} image {spec}"),
                reason: e.to_string(),
            }),
        }
    }
    (vectors, skipped)
}

/// What `catalog build` is asked to do.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub products: PathBuf,
    pub out: PathBuf,
    /// Labelled in-situ photos (`{"product_id", "image"}` lines): a projection is learned
    /// from them and (with `train_photos_as_images`) they join their products' images.
    pub train_photos: Option<PathBuf>,
    /// Fail on the first bad line or image instead of skipping it.
    pub strict: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// What a build did.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub dir: PathBuf,
    pub products: usize,
    pub vectors: usize,
    pub train_photos: usize,
    pub projection: bool,
    pub skipped: Vec<Skipped>,
    /// Things the user should know (e.g. why no projection was learned).
    pub warnings: Vec<String>,
}

fn read_text(path: &Path) -> Result<String, CatalogError> {
    std::fs::read_to_string(path).map_err(|e| CatalogError::Io {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

fn base_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn strict_check(strict: bool, skipped: &[Skipped]) -> Result<(), CatalogError> {
    match skipped.first() {
        Some(s) if strict => Err(CatalogError::Input {
            at: s.at.clone(),
            why: s.reason.clone(),
        }),
        _ => Ok(()),
    }
}

fn progress_bar(show: bool, len: usize, what: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>14} [{bar:40}] {pos}/{len} images ({eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Build a catalog folder from a products JSONL file.
pub fn build(
    models: &Models,
    settings: &CatalogSettings,
    opts: &BuildOptions,
) -> Result<BuildReport, CatalogError> {
    let file = opts.products.display().to_string();
    let (lines, mut skipped) = product::parse_products(&read_text(&opts.products)?, &file);
    strict_check(opts.strict, &skipped)?;
    let loader = ImageLoader::new(&base_of(&opts.products), settings);
    let total: usize = lines.iter().map(|l| l.product.images.len()).sum();
    let pb = progress_bar(opts.progress, total, "products");
    let mut products = Vec::new();
    let mut vectors: Vec<(String, ImageVector)> = Vec::new();
    let clutter = clutter_of(settings, &loader, lines.iter().map(|l| &l.product));
    for pl in lines {
        let at = format!("{file}:{}", pl.line);
        let (v, s) = product_vectors(models, settings, &loader, &pl.product, &at, &clutter);
        pb.inc(pl.product.images.len() as u64);
        strict_check(opts.strict, &s)?;
        skipped.extend(s);
        if v.is_empty() {
            let reason = if pl.product.images.is_empty() {
                format!("product `{}` has no images", pl.product.id)
            } else {
                format!("product `{}` has no usable image", pl.product.id)
            };
            let s = Skipped { at, reason };
            strict_check(opts.strict, std::slice::from_ref(&s))?;
            skipped.push(s);
            continue;
        }
        vectors.extend(v.into_iter().map(|iv| (pl.product.id.clone(), iv)));
        products.push(pl.product);
    }
    pb.finish_and_clear();
    if products.is_empty() {
        return Err(CatalogError::Empty(format!(
            "{file}: no usable product (skipped: {})",
            skipped.len()
        )));
    }
    let mut train_count = 0;
    let mut projection = None;
    let mut warnings = Vec::new();
    if let Some(tp) = &opts.train_photos {
        let (train, s) = train_vectors(models, settings, tp, &products, opts)?;
        skipped.extend(s);
        train_count = train.len();
        let covered: std::collections::HashSet<&str> =
            train.iter().map(|(p, _)| p.as_str()).collect();
        let coverage = covered.len() as f32 / products.len() as f32;
        if coverage < settings.projection_min_coverage {
            warnings.push(format!(
                "no projection learned: only {} of {} products have labelled photos ({:.0}% < catalog.projection_min_coverage {:.0}%); products without photos would match worse in a learned space",
                covered.len(),
                products.len(),
                coverage * 100.0,
                settings.projection_min_coverage * 100.0
            ));
        } else {
            projection = learn_projection(settings, &vectors, &train);
            if projection.is_none() {
                warnings.push("no projection learned: too few labelled photos (need two products with two pictures each)".into());
            } else if covered.len() < products.len() {
                warnings.push(format!(
                    "{} products have no labelled photo: they match worse than the others in the learned space",
                    products.len() - covered.len()
                ));
            }
        }
        for w in &warnings {
            tracing::warn!("{w}");
        }
        if settings.train_photos_as_images {
            vectors.extend(train);
        }
    }
    let manifest = Manifest {
        format: FORMAT_VERSION,
        embedder: models.embedder.name().to_string(),
        embedder_sha256: models.embedder.sha256().to_string(),
        raw_dim: models.embedder.dim(),
        dim: models.embedder.dim(),
        index: settings.index,
        products: products.len(),
        vectors: vectors.len(),
        projection: projection.is_some(),
        catalog_views: settings.catalog_views.clone(),
        detect_catalog_images: settings.detect_catalog_images,
        synthetic_views: settings.synthetic_views,
        created: crate::frame::rfc3339_ms(&chrono::Utc::now()),
    };
    let snapshot = Snapshot::assemble(
        manifest,
        products,
        vectors,
        projection,
        &settings.index_params(),
    )?;
    let dir = snapshot.save(&opts.out)?;
    Ok(BuildReport {
        dir,
        products: snapshot.len(),
        vectors: snapshot.vectors(),
        train_photos: train_count,
        projection: snapshot.projection().is_some(),
        skipped,
        warnings,
    })
}

/// Raw vectors with their product id.
type Labelled = Vec<(String, ImageVector)>;

/// Embed the labelled photos of `path` whose product is in the catalog.
fn train_vectors(
    models: &Models,
    settings: &CatalogSettings,
    path: &Path,
    products: &[Product],
    opts: &BuildOptions,
) -> Result<(Labelled, Vec<Skipped>), CatalogError> {
    let file = path.display().to_string();
    let (photos, mut skipped) = product::parse_train_photos(&read_text(path)?, &file);
    strict_check(opts.strict, &skipped)?;
    let known: HashMap<&str, ()> = products.iter().map(|p| (p.id.as_str(), ())).collect();
    let loader = ImageLoader::new(&base_of(path), settings);
    let pb = progress_bar(opts.progress, photos.len(), "train photos");
    let mut out = Vec::new();
    for (line, pid, spec) in photos {
        pb.inc(1);
        let at = format!("{file}:{line}");
        if !known.contains_key(pid.as_str()) {
            let s = Skipped {
                at,
                reason: format!("unknown product id `{pid}`"),
            };
            strict_check(opts.strict, std::slice::from_ref(&s))?;
            skipped.push(s);
            continue;
        }
        let r = loader
            .load(&spec)
            .and_then(|(name, img)| picture_vectors(models, settings, &name, &img, "train", None));
        match r {
            Ok(v) => out.extend(v.into_iter().map(|iv| (pid.clone(), iv))),
            Err(e) => {
                let s = Skipped {
                    at: format!("{at} image {spec}"),
                    reason: e.to_string(),
                };
                strict_check(opts.strict, std::slice::from_ref(&s))?;
                skipped.push(s);
            }
        }
    }
    pb.finish_and_clear();
    Ok((out, skipped))
}

/// Learn the projection from the labelled vectors (catalog images and training photos).
pub fn learn_projection(
    settings: &CatalogSettings,
    catalog: &[(String, ImageVector)],
    train: &[(String, ImageVector)],
) -> Option<Projection> {
    let mut by_product: BTreeMap<&str, Vec<&[f32]>> = BTreeMap::new();
    for (pid, iv) in catalog.iter().chain(train) {
        by_product
            .entry(pid.as_str())
            .or_default()
            .push(&iv.embedding);
    }
    let groups: Vec<Vec<&[f32]>> = by_product.into_values().collect();
    Projection::learn(
        &groups,
        settings.projection_dims,
        settings.projection_shrinkage,
    )
}
