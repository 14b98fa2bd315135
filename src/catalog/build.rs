//! `catalog build`: products JSONL (+ optional labelled training photos) → a catalog folder,
//! written atomically. Bad lines, unreadable images and unknown ids are skipped and reported
//! by `file:line` (or fail the build with `strict`); a failed build leaves no catalog
//! behind and an existing catalog untouched.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::analyzer::{detection_rect, embed_regions, main_region};
use super::domain::{self, DomainMean};
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
    /// Untrusted requests (admin API): files only under `base`, URLs only to public
    /// addresses (unless `public_only` is off), no redirects.
    confined: bool,
    public_only: bool,
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
            confined: false,
            public_only: false,
        }
    }

    /// For images named in admin API requests: paths only relative to `root` (no
    /// absolute path, no `..`, no symlink out of it); URLs only to public addresses
    /// unless `catalog.admin_image_private_hosts`, checked after name resolution and
    /// connected to the checked addresses, redirects not followed.
    pub fn for_admin(root: &Path, settings: &CatalogSettings) -> Self {
        Self {
            confined: true,
            public_only: !settings.admin_image_private_hosts,
            ..Self::new(root, settings)
        }
    }

    /// A confined loader's check of a file path: under the root, for real.
    fn check_confined(&self, spec: &str, path: &Path) -> Result<(), String> {
        let plain = Path::new(spec)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain {
            return Err(format!(
                "admin image paths must be relative to catalog.images_root ({}), without `..`",
                self.base.display()
            ));
        }
        let (Ok(root), Ok(real)) = (self.base.canonicalize(), path.canonicalize()) else {
            return Err("no such file under catalog.images_root".into());
        };
        if !real.starts_with(&root) {
            return Err("the path leads out of catalog.images_root".into());
        }
        Ok(())
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
                if self.confined {
                    self.check_confined(spec, p).map_err(fail)?;
                }
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
        let max = self.max_bytes;
        let url = url.to_string();
        let (default_client, public_only, timeout) =
            (self.client.clone(), self.public_only, self.timeout);
        let fut = async move {
            let client = if public_only {
                public_client(&url, timeout).await?
            } else {
                default_client
            };
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

/// A client that reaches `url`'s host only at its public addresses (resolved and
/// checked here, then pinned, so a second resolution cannot swap in another) and
/// follows no redirect.
async fn public_client(url: &str, timeout: Duration) -> Result<reqwest::Client, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("bad URL: {e}"))?;
    let host = parsed
        .host_str()
        .ok_or("the URL has no host")?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} has no address"));
    }
    if let Some(a) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(format!(
            "{host} is at {}, not a public address (set catalog.admin_image_private_hosts to allow)",
            a.ip()
        ));
    }
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .resolve_to_addrs(&host, &addrs)
        .build()
        .map_err(|e| e.to_string())
}

/// Whether `ip` is an address on the public internet: not loopback, private, link-local,
/// shared (CGNAT), unspecified, broadcast, multicast, documentation or unique-local.
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(a) => {
            let [o0, o1, ..] = a.octets();
            !(a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || o0 == 0
                || (o0 == 100 && (o1 & 0xc0) == 64))
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s0 = a.segments()[0];
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s0 & 0xfe00) == 0xfc00
                || (s0 & 0xffc0) == 0xfe80
                || s0 == 0x2001 && a.segments()[1] == 0x0db8)
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
    /// Unlabelled photos of the query domain (`{"image": "…"}` lines; a `product_id` is
    /// ignored): their mean query vector is stored and subtracted from queries
    /// (`domain` module).
    pub domain_photos: Option<PathBuf>,
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
    /// Query-domain photos labelled by clustering that the projection was learned from.
    pub pseudo_labelled_photos: usize,
    pub projection: bool,
    /// Query-domain photos the stored mean was taken over (0: none).
    pub domain_photos: usize,
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
    // First: a bad query-domain set fails the build before the long part.
    let domain = match &opts.domain_photos {
        Some(path) => Some(domain_photos(models, settings, opts, path, &mut skipped)?),
        None => None,
    };
    let (products, mut vectors) =
        embed_products(models, settings, opts, &file, lines, &mut skipped)?;
    if products.is_empty() {
        return Err(CatalogError::Empty(format!(
            "{file}: no usable product (skipped: {})",
            skipped.len()
        )));
    }
    let learned = match (&opts.train_photos, &domain) {
        (Some(tp), _) => learn_from_photos(
            models,
            settings,
            opts,
            tp,
            &products,
            &mut vectors,
            &mut skipped,
        )?,
        (None, Some((mean, photos))) if settings.domain_pseudo_labels => {
            learn_from_domain(settings, &products, &vectors, mean, photos)
        }
        _ => Learned::default(),
    };
    let domain_mean = domain.map(|(mean, _)| mean);
    let mut warnings = learned.warnings;
    if domain_mean.is_some() && learned.projection.is_some() && learned.pseudo_labelled == 0 {
        warnings.push("the query-domain mean is stored but not applied while the catalog has a learned projection (catalog.domain_centring acts on catalogs without one)".into());
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
        projection: learned.projection.is_some(),
        catalog_views: settings.catalog_views.clone(),
        detect_catalog_images: settings.detect_catalog_images,
        synthetic_views: settings.synthetic_views,
        labelled_photos: if learned.projection.is_some() {
            learned.train_count
        } else {
            0
        },
        domain_photos: 0,
        pseudo_labelled_photos: if learned.projection.is_some() {
            learned.pseudo_labelled
        } else {
            0
        },
        created: crate::frame::rfc3339_ms(&chrono::Utc::now()),
    };
    let snapshot = Snapshot::assemble(
        manifest,
        products,
        vectors,
        learned.projection,
        &settings.index_params(),
    )?
    .with_domain_mean(domain_mean.map(std::sync::Arc::new))?;
    let dir = snapshot.save(&opts.out)?;
    Ok(BuildReport {
        dir,
        products: snapshot.len(),
        vectors: snapshot.vectors(),
        train_photos: learned.train_count,
        pseudo_labelled_photos: snapshot.manifest.pseudo_labelled_photos,
        projection: snapshot.projection().is_some(),
        domain_photos: snapshot.manifest.domain_photos,
        skipped,
        warnings,
    })
}

/// The query-domain photos listed in `path`, each embedded as a live query embeds a
/// picture (the whole picture, `catalog.query_views` averaged), and their mean.
/// Unreadable lines and images join `skipped` (or fail with `strict`); fewer than
/// `catalog.domain_min_photos` usable photos is [`domain::DomainError::TooFewPhotos`].
fn domain_photos(
    models: &Models,
    settings: &CatalogSettings,
    opts: &BuildOptions,
    path: &Path,
    skipped: &mut Vec<Skipped>,
) -> Result<(DomainMean, Vec<Vec<f32>>), CatalogError> {
    let file = path.display().to_string();
    let (photos, bad) = domain::parse_photos(&read_text(path)?, &file);
    strict_check(opts.strict, &bad)?;
    let mut skipped_here = bad;
    let loader = ImageLoader::new(&base_of(path), settings);
    let pb = progress_bar(opts.progress, photos.len(), "domain photos");
    let mut vectors = Vec::with_capacity(photos.len());
    for (line, spec) in photos {
        pb.inc(1);
        let r = loader.load(&spec).and_then(|(_, img)| {
            embed_regions(
                &models.embedder,
                &img,
                &[img.full_rect()],
                &settings.query_views,
            )
        });
        match r {
            Ok(mut v) => vectors.extend(v.pop()),
            Err(e) => {
                let s = Skipped {
                    at: format!("{file}:{line} image {spec}"),
                    reason: e.to_string(),
                };
                strict_check(opts.strict, std::slice::from_ref(&s))?;
                skipped_here.push(s);
            }
        }
    }
    pb.finish_and_clear();
    let usable = vectors.len();
    let mean = DomainMean::of(&vectors).filter(|_| usable >= settings.domain_min_photos);
    let mean = mean.ok_or(domain::DomainError::TooFewPhotos {
        file,
        usable,
        min: settings.domain_min_photos,
        skipped: skipped_here.len(),
    })?;
    skipped.extend(skipped_here);
    Ok((mean, vectors))
}

/// The projection learned from the query-domain photos with the products
/// [`domain::pseudo_labels`] gives them (no label is read), as from labelled photos;
/// none, with a warning, below `catalog.domain_pseudo_min_per_product`.
fn learn_from_domain(
    settings: &CatalogSettings,
    products: &[Product],
    vectors: &Labelled,
    mean: &DomainMean,
    photos: &[Vec<f32>],
) -> Learned {
    let min = settings.domain_pseudo_min_per_product * products.len();
    if photos.len() < min {
        let w = format!(
            "no projection learned from the {} query-domain photos: catalog.domain_pseudo_labels needs {} per product ({min} for {} products); queries are centred on their mean instead",
            photos.len(),
            settings.domain_pseudo_min_per_product,
            products.len()
        );
        tracing::warn!("{w}");
        return Learned {
            warnings: vec![w],
            ..Learned::default()
        };
    }
    let index: HashMap<&str, usize> = products
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), i))
        .collect();
    let catalog: Vec<(usize, &[f32])> = vectors
        .iter()
        .filter_map(|(pid, iv)| Some((*index.get(pid.as_str())?, iv.embedding.as_slice())))
        .collect();
    let labels = domain::pseudo_labels(
        &catalog,
        products.len(),
        photos,
        mean,
        domain::PseudoLabelParams {
            balance: settings.domain_pseudo_balance,
            ..Default::default()
        },
    );
    let train: Labelled = photos
        .iter()
        .zip(labels)
        .map(|(v, k)| {
            let iv = ImageVector {
                image: String::new(),
                bbox: None,
                origin: "domain".into(),
                embedding: v.clone(),
            };
            (products[k].id.clone(), iv)
        })
        .collect();
    let clusters: std::collections::HashSet<&str> = train.iter().map(|(p, _)| p.as_str()).collect();
    tracing::info!(
        photos = train.len(),
        products = clusters.len(),
        "query-domain photos labelled by clustering around the catalog"
    );
    let projection = learn_projection(settings, vectors, &train);
    let mut warnings = Vec::new();
    if projection.is_none() {
        warnings.push("no projection learned from the query-domain photos (their clusters gave fewer than two products two pictures each): queries are centred instead".into());
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    Learned {
        train_count: 0,
        pseudo_labelled: train.len(),
        projection,
        warnings,
    }
}

/// Embed the images of each product line; a product with no usable image is skipped
/// (into `skipped`, or the build fails with `strict`). Returns the products kept and
/// their vectors.
fn embed_products(
    models: &Models,
    settings: &CatalogSettings,
    opts: &BuildOptions,
    file: &str,
    lines: Vec<product::ProductLine>,
    skipped: &mut Vec<Skipped>,
) -> Result<(Vec<Product>, Labelled), CatalogError> {
    let loader = ImageLoader::new(&base_of(&opts.products), settings);
    let total: usize = lines.iter().map(|l| l.product.images.len()).sum();
    let pb = progress_bar(opts.progress, total, "products");
    let mut products = Vec::new();
    let mut vectors: Labelled = Vec::new();
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
    Ok((products, vectors))
}

/// What the labelled training photos gave.
#[derive(Default)]
struct Learned {
    /// Vectors of the photos embedded.
    train_count: usize,
    /// Query-domain photos labelled by clustering and learned from.
    pseudo_labelled: usize,
    projection: Option<Projection>,
    /// Why no projection was learned, or which products it serves worse.
    warnings: Vec<String>,
}

/// Embed the labelled photos listed in `path` and learn the projection from them and the
/// catalog's `vectors`, when enough products have photos (`projection_min_coverage`);
/// with `train_photos_as_images` the photos join the catalog's vectors.
fn learn_from_photos(
    models: &Models,
    settings: &CatalogSettings,
    opts: &BuildOptions,
    path: &Path,
    products: &[Product],
    vectors: &mut Labelled,
    skipped: &mut Vec<Skipped>,
) -> Result<Learned, CatalogError> {
    let (train, s) = train_vectors(models, settings, path, products, opts)?;
    skipped.extend(s);
    let mut learned = Learned {
        train_count: train.len(),
        ..Learned::default()
    };
    let covered: std::collections::HashSet<&str> = train.iter().map(|(p, _)| p.as_str()).collect();
    let coverage = covered.len() as f32 / products.len() as f32;
    if coverage < settings.projection_min_coverage {
        learned.warnings.push(format!(
            "no projection learned: only {} of {} products have labelled photos ({:.0}% < catalog.projection_min_coverage {:.0}%); products without photos would match worse in a learned space",
            covered.len(),
            products.len(),
            coverage * 100.0,
            settings.projection_min_coverage * 100.0
        ));
    } else {
        learned.projection = learn_projection(settings, vectors, &train);
        if learned.projection.is_none() {
            learned.warnings.push("no projection learned: too few labelled photos (need two products with two pictures each)".into());
        } else if covered.len() < products.len() {
            learned.warnings.push(format!(
                "{} products have no labelled photo: they match worse than the others in the learned space",
                products.len() - covered.len()
            ));
        }
    }
    for w in &learned.warnings {
        tracing::warn!("{w}");
    }
    if settings.train_photos_as_images {
        vectors.extend(train);
    }
    Ok(learned)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn admin_paths_stay_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("images");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(dir.path().join("secret.jpg"), b"x").unwrap();
        std::fs::write(root.join("ok.jpg"), b"not a picture").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path().join("secret.jpg"), root.join("link.jpg")).unwrap();
        let loader = ImageLoader::for_admin(&root, &CatalogSettings::default());
        let why = |spec: &str| match loader.load(spec) {
            Err(CatalogError::Image { why, .. }) => why,
            other => panic!("{spec}: {other:?}"),
        };
        let abs = dir.path().join("secret.jpg").display().to_string();
        assert!(
            why(&abs).contains("relative to catalog.images_root"),
            "{}",
            why(&abs)
        );
        assert!(why("../secret.jpg").contains("without `..`"));
        #[cfg(unix)]
        assert!(why("link.jpg").contains("out of catalog.images_root"));
        assert!(why("missing.jpg").contains("no such file"));
        // Inside the root the file is read (and here fails only as a picture).
        assert!(!why("ok.jpg").contains("images_root"));
        // The command-line loader is not confined.
        let trusted = ImageLoader::new(&root, &CatalogSettings::default());
        assert!(
            matches!(trusted.load("../secret.jpg"), Err(CatalogError::Image { why, .. }) if !why.contains("images_root"))
        );
    }

    #[test]
    fn admin_urls_to_private_addresses_are_refused_before_any_request() {
        let loader = ImageLoader::for_admin(Path::new("."), &CatalogSettings::default());
        for url in [
            "http://127.0.0.1:9/x.jpg",
            "http://localhost:9/x.jpg",
            "http://[::1]:9/x.jpg",
            "http://169.254.169.254/latest/meta-data",
        ] {
            match loader.load(url) {
                Err(CatalogError::Image { why, .. }) => {
                    assert!(why.contains("not a public address"), "{url}: {why}")
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }
}
