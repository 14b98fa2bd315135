//! `shopcue bench catalog-accuracy`: product recognition accuracy on the Grocery Store
//! dataset. The catalog is the 81 iconic images of `classes.csv` (product id = class name);
//! queries are the in-store photos of `val/` (and `train/` for options that learn nothing
//! from it). Each option is one row: top-1 and top-5 of the right product.
//!
//! Embeddings are computed once per picture, region and view set with the same code the
//! catalog build and the analyzer use (`embed_regions`, `main_region`, `Projection::learn`,
//! `Snapshot` search over FAISS); the last row runs the real path end to end:
//! `catalog build --train-photos` then `Analyzer` queries.

use std::collections::{HashMap, HashSet};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use shopcue::catalog::analyzer::{
    average_views, detection_rect, embed_region_views, embed_regions, main_region,
};
use shopcue::catalog::build::clutter_of;
use shopcue::catalog::build::{BuildOptions, build};
use shopcue::catalog::feedback;
use shopcue::catalog::grocery::{Grocery, Labelled};
use shopcue::catalog::synthetic::{self, Clutter};
use shopcue::catalog::{
    Analyzer, Catalog, CatalogSettings, FORMAT_VERSION, ImageVector, IndexParams, Manifest,
    Product, Projection, Snapshot,
};
use shopcue::config::Settings;
use shopcue::matching::MatchingSettings;

mod scale;
use shopcue::inference::{BBox, Crop, Models, Rect, RgbImage};

/// Options of the accuracy benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct AccuracyArgs {
    /// The Grocery Store dataset folder (classes.csv, train.txt, val.txt).
    #[arg(long, default_value = "../shared/data/grocery")]
    pub grocery: PathBuf,
    /// Where to write products.jsonl / train_photos.jsonl (default: a temporary folder).
    #[arg(long)]
    pub jsonl_out: Option<PathBuf>,
    /// Only write the JSONL files and stop.
    #[arg(long)]
    pub jsonl_only: bool,
    /// Skip the slow rows (train photos as queries, the end-to-end CLI-path row).
    #[arg(long)]
    pub quick: bool,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct AccuracyRow {
    pub option: String,
    pub val_top1: f64,
    pub val_top5: f64,
    pub train_top1: Option<f64>,
    pub train_top5: Option<f64>,
    /// Val top-1 per product family (Fruit, Vegetables, Packages).
    pub family_top1: [f64; 3],
    /// Milliseconds per val query on the real path (end-to-end rows only).
    pub ms_per_query: Option<f64>,
}

/// The product families of the dataset, in the table's order.
const FAMILIES: [&str; 3] = ["Fruit", "Vegetables", "Packages"];

/// Labelled photos per product in the rows of the curve (0 is the catalog-only row).
const PHOTOS_PER_PRODUCT: [usize; 3] = [1, 3, 10];

/// Unlabelled train photos drawn (with [`DOMAIN_SEED`]) for the small query-domain mean.
const DOMAIN_SAMPLE: usize = 50;
const DOMAIN_SEED: u64 = 10;

/// The clustering's balance (`catalog.domain_pseudo_balance`) measured beside none.
const MEASURED_BALANCE: f32 = 0.5;

/// Synthetic views per catalog image in the comparison row when the config has them off.
const SYNTHETIC_VIEWS_WHEN_OFF: usize = 16;

/// A class's family: the folder of its iconic image under `iconic-images-and-descriptions`.
fn family_of(g: &Grocery, class: usize) -> Option<usize> {
    let path = &g.iconic.iter().find(|l| l.class == class)?.path;
    path.components()
        .filter_map(|c| c.as_os_str().to_str())
        .find_map(|c| FAMILIES.iter().position(|f| *f == c))
}

/// Top-1 per family of ranked answers.
fn family_top1(g: &Grocery, ranked: &[Ranked]) -> [f64; 3] {
    let mut hit = [0usize; 3];
    let mut all = [0usize; 3];
    for (class, list) in ranked {
        if let Some(f) = family_of(g, *class) {
            all[f] += 1;
            hit[f] += usize::from(list.first().is_some_and(|(p, _)| p == &g.classes[*class]));
        }
    }
    std::array::from_fn(|i| hit[i] as f64 / all[i].max(1) as f64)
}

/// A row of the "no product" threshold curve.
#[derive(Debug, Clone, Serialize)]
pub struct ThresholdRow {
    pub threshold: f32,
    pub precision: f64,
    pub recall: f64,
    pub rejected_unknown: f64,
}

/// A temporary folder removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> std::io::Result<Self> {
        let p = std::env::temp_dir().join(format!(
            "shopcue-bench-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_millis()
        ));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Embeddings of one picture.
#[derive(Debug, Clone, Default)]
struct PictureEmb {
    /// Whole picture, single view and the multi-view average.
    whole_1: Vec<f32>,
    whole_m: Vec<f32>,
    /// The main detection (catalog side): its box and embeddings.
    main: Option<(BBox, Vec<f32>, Vec<f32>)>,
    /// Query side: the top detections, single view.
    dets: Vec<Vec<f32>>,
    /// Catalog side: the synthetic views' embeddings (`synthetic` module).
    synth: Vec<Vec<f32>>,
}

/// How the pictures of one set are embedded.
struct EmbedPlan<'a> {
    views: &'a [f32],
    detect: bool,
    margin: f32,
    query_dets: usize,
    /// Synthetic views (catalog side): the picture's product, the clutter, count and seed.
    synth: Option<(&'a str, &'a Clutter, usize, u64)>,
}

fn embed_picture(models: &Models, path: &Path, plan: &EmbedPlan<'_>) -> anyhow::Result<PictureEmb> {
    let (views, detect, margin, query_dets) =
        (plan.views, plan.detect, plan.margin, plan.query_dets);
    let img = RgbImage::open(path)?;
    let mut rects: Vec<Rect> = vec![img.full_rect()];
    let mut e = PictureEmb::default();
    let mut main_box = None;
    let mut dets = Vec::new();
    if detect {
        dets = models.detector.detect(&img)?;
        if let Some(m) = main_region(&dets) {
            main_box = Some(m.bbox);
            rects.push(detection_rect(m, &img, margin));
        }
        dets.sort_by(|a, b| b.score.total_cmp(&a.score));
        dets.truncate(query_dets);
    }
    // The full-region embedding is one of the views when they include 1.0; else one more.
    let (all_views, single_at) = match views.iter().position(|v| *v == 1.0) {
        Some(i) => (views.to_vec(), i),
        None => ([views, &[1.0]].concat(), views.len()),
    };
    let per_view = embed_region_views(&models.embedder, &img, &rects, &all_views)?;
    let split = |pv: &Vec<Vec<f32>>| (pv[single_at].clone(), average_views(&pv[..views.len()]));
    let (w1, wm) = split(&per_view[0]);
    e.whole_1 = w1;
    e.whole_m = wm;
    if let Some(b) = main_box {
        let (m1, mm) = split(&per_view[1]);
        e.main = Some((b, m1, mm));
    }
    let det_rects: Vec<Rect> = dets
        .iter()
        .map(|d| detection_rect(d, &img, margin))
        .collect();
    e.dets = embed_regions(&models.embedder, &img, &det_rects, &[1.0])?;
    if let Some((product, clutter, n, seed)) = plan.synth {
        let name = path.display().to_string();
        let views = synthetic::views(&img, product, &name, clutter, n, seed);
        let crops: Vec<Crop<'_>> = views
            .iter()
            .map(|(image, rect)| Crop { image, rect: *rect })
            .collect();
        e.synth = models.embedder.embed_batch(&crops)?;
    }
    Ok(e)
}

/// How catalog or query vectors are made from a picture.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    Whole,
    WholeMulti,
    /// Main detection (or whole), single / multi view.
    Main,
    MainMulti,
    /// Query: each top detection and the whole picture, best match over regions.
    AllDets,
    /// Catalog: the multi-view vector blended with the synthetic views' mean.
    Synthetic,
}

fn vectors_of(e: &PictureEmb, side: Side) -> Vec<Vec<f32>> {
    match side {
        Side::Whole => vec![e.whole_1.clone()],
        Side::WholeMulti => vec![e.whole_m.clone()],
        Side::Main => vec![
            e.main
                .as_ref()
                .map(|m| m.1.clone())
                .unwrap_or_else(|| e.whole_1.clone()),
        ],
        Side::MainMulti => vec![
            e.main
                .as_ref()
                .map(|m| m.2.clone())
                .unwrap_or_else(|| e.whole_m.clone()),
        ],
        Side::AllDets => {
            let mut v = e.dets.clone();
            v.push(e.whole_1.clone());
            v
        }
        Side::Synthetic => vec![synthetic::blend(&e.whole_m, &e.synth)],
    }
}

fn manifest(dim: usize) -> Manifest {
    Manifest {
        format: FORMAT_VERSION,
        embedder: "bench".into(),
        embedder_sha256: String::new(),
        raw_dim: dim,
        dim,
        index: shopcue::catalog::IndexKind::Flat,
        products: 0,
        vectors: 0,
        projection: false,
        catalog_views: vec![],
        detect_catalog_images: false,
        synthetic_views: 0,
        labelled_photos: 0,
        domain_photos: 0,
        pseudo_labelled_photos: 0,
        created: String::new(),
    }
}

/// A query's class and its ranked `(product, score)` list.
type Ranked = (usize, Vec<(String, f32)>);

/// Top-1 and top-5 of `queries` against a snapshot; a query with several vectors takes each
/// product's best score over them.
fn score(
    snap: &Snapshot,
    queries: &[(usize, Vec<Vec<f32>>)],
    classes: &[String],
) -> anyhow::Result<(f64, f64, Vec<Ranked>)> {
    let mut t1 = 0usize;
    let mut t5 = 0usize;
    let mut ranked = Vec::with_capacity(queries.len());
    for (class, vecs) in queries {
        let hits = snap.search_batch(vecs, 5, 8)?;
        let mut best: HashMap<String, f32> = HashMap::new();
        for row in hits {
            for (pid, s) in row {
                let e = best.entry(pid).or_insert(f32::MIN);
                *e = e.max(s);
            }
        }
        let mut list: Vec<(String, f32)> = best.into_iter().collect();
        list.sort_by(|a, b| b.1.total_cmp(&a.1));
        list.truncate(5);
        let want = &classes[*class];
        if list.first().is_some_and(|(p, _)| p == want) {
            t1 += 1;
        }
        if list.iter().any(|(p, _)| p == want) {
            t5 += 1;
        }
        ranked.push((*class, list));
    }
    let n = queries.len().max(1) as f64;
    Ok((t1 as f64 / n, t5 as f64 / n, ranked))
}

/// The first `n` train photos of each product as confirmed operator feedback (their
/// whole-picture multi-view embeddings: what a whole-frame sighting keeps as evidence).
fn feedback_records(g: &Grocery, train: &[PictureEmb], n: usize) -> Vec<feedback::Record> {
    let mut taken: HashMap<usize, usize> = HashMap::new();
    let mut out = Vec::new();
    for (l, e) in g.train.iter().zip(train) {
        let k = taken.entry(l.class).or_default();
        if *k >= n {
            continue;
        }
        *k += 1;
        out.push(feedback::Record {
            kind: feedback::Kind::Positive,
            product_id: g.classes[l.class].clone(),
            cue_id: format!("train-{}", out.len()),
            channel: "bench".into(),
            at: String::new(),
            embedder_sha256: String::new(),
            vector: hex::encode(shopcue::catalog::store::f32_bytes(&e.whole_m)),
        });
    }
    out
}

/// Run the benchmark; prints the markdown tables and returns the accuracy rows.
pub fn run_bench(
    settings: &Settings,
    args: &AccuracyArgs,
) -> anyhow::Result<(Vec<AccuracyRow>, Vec<ThresholdRow>)> {
    let started = Instant::now();
    let g = Grocery::load(&args.grocery)?;
    let tmp = ScratchDir::new()?;
    let jsonl_dir = args
        .jsonl_out
        .clone()
        .unwrap_or_else(|| tmp.path().join("jsonl"));
    let (products_path, train_path) = g.write_jsonl(&jsonl_dir)?;
    eprintln!(
        "wrote {} and {}",
        products_path.display(),
        train_path.display()
    );
    if args.jsonl_only {
        return Ok((Vec::new(), Vec::new()));
    }
    let cs = settings.catalog.clone();
    // Accuracy does not depend on threads: use every core to finish sooner.
    let mut inference = settings.inference.clone();
    inference.intra_threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let models = Models::load(&inference)?;
    // The synthetic-views row: the configured count, or 16 when they are off (default).
    let synthetic_n = if cs.synthetic_views == 0 {
        SYNTHETIC_VIEWS_WHEN_OFF
    } else {
        cs.synthetic_views
    };
    let [iconic, val, train] = embed_dataset(&models, &cs, &g, &args.grocery, synthetic_n)?;
    let mut bench = Bench {
        g: &g,
        cs: &cs,
        quick: args.quick,
        dim: models.embedder.dim(),
        iconic,
        val,
        train,
        products: catalog_products(&g)?,
        params: IndexParams::default(),
        rows: Vec::new(),
    };
    bench.region_and_view_rows(synthetic_n)?;
    bench.domain_centring_rows()?;
    bench.projection_rows()?;
    bench.photo_curve_rows()?;
    bench.retrain_rows()?;
    bench.unlabelled_product_rows()?;
    // "No product" threshold: 20 classes left out of the catalog (and of the learning).
    let held_out: HashSet<usize> = (0..g.classes.len()).filter(|c| c % 4 == 1).collect();
    let thresholds = bench.threshold_rows(&held_out)?;
    let scale_rows = bench.scale_rows(&held_out, &settings.matching)?;
    let mut rows = bench.rows;

    // End to end through the real path on one core: `catalog build` (catalog images
    // only, as a retailer starts; then with the labelled photos), then `Analyzer` queries.
    let mut one_core = settings.inference.clone();
    one_core.intra_threads = 1;
    let models_1 = Models::load(&one_core)?;
    rows.push(end_to_end(
        &models_1,
        &cs,
        &g,
        &products_path,
        None,
        tmp.path(),
    )?);
    if !args.quick {
        rows.push(end_to_end(
            &models_1,
            &cs,
            &g,
            &products_path,
            Some(&train_path),
            tmp.path(),
        )?);
    }
    print_accuracy_table(&rows);
    print_threshold_table(&g, &held_out, &thresholds);
    scale::print(&scale_rows, held_out.len());
    println!(
        "\n{} val / {} train / {} iconic pictures, {} s in all.",
        g.val.len(),
        g.train.len(),
        g.iconic.len(),
        started.elapsed().as_secs()
    );
    Ok((rows, thresholds))
}

/// Embed every picture once: the iconic images (catalog side: with the main detection
/// and `synthetic_n` synthetic views on the shelf `catalog build` would choose), the val
/// photos (with detections) and the train photos. Returns `[iconic, val, train]`.
fn embed_dataset(
    models: &Models,
    cs: &CatalogSettings,
    g: &Grocery,
    grocery_dir: &Path,
    synthetic_n: usize,
) -> anyhow::Result<[Vec<PictureEmb>; 3]> {
    let shelf: Vec<Product> = g
        .iconic
        .iter()
        .map(|l| {
            let line = serde_json::json!({ "id": g.classes[l.class], "images": [l.path] });
            Product::from_json(&line.to_string())
        })
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    let loader = shopcue::catalog::build::ImageLoader::new(grocery_dir, cs);
    let clutter = clutter_of(cs, &loader, shelf.iter());
    let embed_all = |list: &[Labelled],
                     detect: bool,
                     synth: bool,
                     what: &str|
     -> anyhow::Result<Vec<PictureEmb>> {
        let t = Instant::now();
        let out: anyhow::Result<Vec<_>> = list
            .iter()
            .map(|l| {
                let plan = EmbedPlan {
                    views: &cs.catalog_views,
                    detect,
                    margin: cs.box_margin,
                    query_dets: cs.query_detections,
                    synth: synth.then(|| {
                        (
                            g.classes[l.class].as_str(),
                            &clutter,
                            synthetic_n,
                            cs.synthetic_seed,
                        )
                    }),
                };
                embed_picture(models, &l.path, &plan)
                    .with_context(|| format!("{}", l.path.display()))
            })
            .collect();
        eprintln!(
            "embedded {} {what} pictures in {:.1} s",
            list.len(),
            t.elapsed().as_secs_f64()
        );
        out
    };
    Ok([
        embed_all(&g.iconic, true, true, "iconic")?,
        embed_all(&g.val, true, false, "val")?,
        embed_all(&g.train, false, false, "train")?,
    ])
}

/// One product per class, with nothing but its id.
fn catalog_products(g: &Grocery) -> anyhow::Result<Vec<Product>> {
    g.classes
        .iter()
        .map(|c| Product::from_json(&serde_json::json!({ "id": c }).to_string()))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)
}

/// Catalog vectors: (product id, raw vector).
type CatalogVectors = Vec<(String, ImageVector)>;

/// A catalog vector of `origin` (`catalog`, `train`).
fn image_vector(embedding: Vec<f32>, origin: &str) -> ImageVector {
    ImageVector {
        image: String::new(),
        bbox: None,
        origin: origin.into(),
        embedding,
    }
}

/// Each picture's class and its query vectors for `side`.
fn queries(list: &[Labelled], embs: &[PictureEmb], side: Side) -> Vec<(usize, Vec<Vec<f32>>)> {
    list.iter()
        .zip(embs)
        .map(|(l, e)| (l.class, vectors_of(e, side)))
        .collect()
}

/// A projection learned from labelled groups of vectors, with the catalog's settings.
fn learn_groups(cs: &CatalogSettings, groups: HashMap<String, Vec<&[f32]>>) -> Option<Projection> {
    let groups: Vec<Vec<&[f32]>> = groups.into_values().collect();
    Projection::learn(&groups, cs.projection_dims, cs.projection_shrinkage)
}

/// The dataset embedded once, and the rows scored so far.
struct Bench<'a> {
    g: &'a Grocery,
    cs: &'a CatalogSettings,
    /// Skip the rows scored on the train photos.
    quick: bool,
    dim: usize,
    iconic: Vec<PictureEmb>,
    val: Vec<PictureEmb>,
    train: Vec<PictureEmb>,
    products: Vec<Product>,
    params: IndexParams,
    rows: Vec<AccuracyRow>,
}

impl Bench<'_> {
    /// The configured catalog views, as the row names show them.
    fn views(&self) -> String {
        format!("{:?}", self.cs.catalog_views)
    }

    /// Catalog vectors for a side: the iconic images and, with `per_product` above 0, the
    /// first that many train photos of each product.
    fn cat_vectors(&self, side: Side, per_product: usize) -> CatalogVectors {
        let g = self.g;
        let mut out = Vec::new();
        for (l, e) in g.iconic.iter().zip(&self.iconic) {
            for v in vectors_of(e, side) {
                out.push((g.classes[l.class].clone(), image_vector(v, "catalog")));
            }
        }
        if per_product > 0 {
            let tside = if matches!(side, Side::WholeMulti | Side::MainMulti | Side::Synthetic) {
                Side::WholeMulti
            } else {
                Side::Whole
            };
            let mut taken: HashMap<usize, usize> = HashMap::new();
            for (l, e) in g.train.iter().zip(&self.train) {
                let k = taken.entry(l.class).or_default();
                if *k >= per_product {
                    continue;
                }
                *k += 1;
                for v in vectors_of(e, tside) {
                    out.push((g.classes[l.class].clone(), image_vector(v, "train")));
                }
            }
        }
        out
    }

    /// The projection learned from the same vectors as the catalog's plus the labelled
    /// train photos (`per_product` of each).
    fn learned_from(&self, side: Side, per_product: usize) -> Option<Projection> {
        let all = self.cat_vectors(side, per_product);
        let mut groups: HashMap<String, Vec<&[f32]>> = HashMap::new();
        for (pid, v) in &all {
            groups.entry(pid.clone()).or_default().push(&v.embedding);
        }
        learn_groups(self.cs, groups)
    }

    /// The projection learned from every train photo, whole picture (single or multi view).
    fn learned(&self, multi: bool) -> Option<Projection> {
        let side = if multi { Side::WholeMulti } else { Side::Whole };
        self.learned_from(side, usize::MAX)
    }

    /// A catalog of every product from `vectors`.
    fn snapshot(
        &self,
        vectors: CatalogVectors,
        projection: Option<Projection>,
    ) -> anyhow::Result<Snapshot> {
        Ok(Snapshot::assemble(
            manifest(self.dim),
            self.products.clone(),
            vectors,
            projection,
            &self.params,
        )?)
    }

    /// Score one option: a catalog of `cat_side` vectors (with `with_train` train photos
    /// per product) and `projection`, queried by the val photos' `q_side` vectors (and,
    /// with `on_train` unless quick, by the train photos').
    fn row(
        &mut self,
        name: &str,
        cat_side: Side,
        q_side: Side,
        with_train: usize,
        projection: Option<Projection>,
        on_train: bool,
    ) -> anyhow::Result<()> {
        let g = self.g;
        let snap = self.snapshot(self.cat_vectors(cat_side, with_train), projection)?;
        let (v1, v5, ranked) = score(&snap, &queries(&g.val, &self.val, q_side), &g.classes)?;
        let (t1, t5) = if on_train && !self.quick {
            let tq = match q_side {
                Side::WholeMulti | Side::MainMulti => Side::WholeMulti,
                _ => Side::Whole,
            };
            let (a, b, _) = score(&snap, &queries(&g.train, &self.train, tq), &g.classes)?;
            (Some(a), Some(b))
        } else {
            (None, None)
        };
        eprintln!("{name}: val top-1 {v1:.3} top-5 {v5:.3}");
        self.push_row(name.to_string(), (v1, v5, ranked), (t1, t5));
        Ok(())
    }

    /// Add a row from its val score (top-1, top-5, ranked answers) and train score.
    fn push_row(
        &mut self,
        option: String,
        (val_top1, val_top5, ranked): (f64, f64, Vec<Ranked>),
        (train_top1, train_top5): (Option<f64>, Option<f64>),
    ) {
        self.rows.push(AccuracyRow {
            option,
            val_top1,
            val_top5,
            train_top1,
            train_top5,
            family_top1: family_top1(self.g, &ranked),
            ms_per_query: None,
        });
    }

    /// Rows without any learning: whole picture, multi-crop views, synthetic views
    /// (`synthetic_n` of them) and detector crops on either side.
    fn region_and_view_rows(&mut self, synthetic_n: usize) -> anyhow::Result<()> {
        let vname = self.views();
        let (w, wm) = (Side::Whole, Side::WholeMulti);
        self.row("whole image / whole image (baseline)", w, w, 0, None, true)?;
        self.row(&format!("query multi-crop {vname}"), w, wm, 0, None, true)?;
        self.row(
            &format!("multi-crop {vname} both sides"),
            wm,
            wm,
            0,
            None,
            true,
        )?;
        self.row(
            &format!(
                "catalog only: {synthetic_n} synthetic views blended in, multi-crop {vname} both sides"
            ),
            Side::Synthetic,
            wm,
            0,
            None,
            true,
        )?;
        self.row(
            "detector crops, query side (top detections + whole, best region)",
            w,
            Side::AllDets,
            0,
            None,
            false,
        )?;
        self.row(
            "detector crop, catalog side (main product)",
            Side::Main,
            w,
            0,
            None,
            false,
        )?;
        self.row(
            "detector crops both sides",
            Side::Main,
            Side::AllDets,
            0,
            None,
            false,
        )
    }

    /// Catalog only, with queries centred on the mean of unlabelled train photos (their
    /// whole-picture query vectors; labels never read): a sample of [`DOMAIN_SAMPLE`]
    /// drawn with a fixed seed, and all of them. Searched through `Snapshot::search_batch`
    /// with the mean attached, as `catalog build --domain-photos` stores it.
    fn domain_centring_rows(&mut self) -> anyhow::Result<()> {
        use rand::SeedableRng;
        use rand::seq::index::sample;
        let g = self.g;
        let vname = self.views();
        let all: Vec<&[f32]> = self.train.iter().map(|e| e.whole_m.as_slice()).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(DOMAIN_SEED);
        let drawn: Vec<&[f32]> = sample(&mut rng, all.len(), DOMAIN_SAMPLE.min(all.len()))
            .into_iter()
            .map(|i| all[i])
            .collect();
        let means: Vec<_> = [&drawn, &all]
            .iter()
            .map(|photos| shopcue::catalog::DomainMean::of(photos).context("no train photos"))
            .collect::<anyhow::Result<_>>()?;
        let mut rows = Vec::new();
        for (mean, photos) in means.into_iter().zip([drawn, all]) {
            let n = mean.photos();
            let catalog = self.cat_vectors(Side::WholeMulti, 0);
            let q = queries(&g.val, &self.val, Side::WholeMulti);
            let snap = self
                .snapshot(catalog.clone(), None)?
                .with_domain_mean(Some(Arc::new(mean.clone())))?;
            let scored = score(&snap, &q, &g.classes)?;
            let name = format!(
                "catalog only + query-domain centring (mean of {n} unlabelled train photos), multi-crop {vname} both sides"
            );
            eprintln!("{name}: val top-1 {:.3} top-5 {:.3}", scored.0, scored.1);
            rows.push((name, scored));
            let mut balances = vec![0.0, MEASURED_BALANCE];
            if !balances.contains(&self.cs.domain_pseudo_balance) {
                balances.push(self.cs.domain_pseudo_balance);
            }
            for balance in balances {
                let projection = self.pseudo_labelled_projection(&catalog, &photos, &mean, balance);
                let scored = score(&self.snapshot(catalog.clone(), projection)?, &q, &g.classes)?;
                let name = format!(
                    "catalog only + projection from the same {n} photos labelled by clustering (catalog.domain_pseudo_labels, balance {balance}), multi-crop {vname} both sides"
                );
                eprintln!("{name}: val top-1 {:.3} top-5 {:.3}", scored.0, scored.1);
                rows.push((name, scored));
            }
        }
        for (name, scored) in rows {
            self.push_row(name, scored, (None, None));
        }
        Ok(())
    }

    /// What `catalog build --domain-photos` learns with `catalog.domain_pseudo_labels`:
    /// the photos labelled by [`domain::pseudo_labels`] (their own labels never read),
    /// then the projection learned from them as from labelled photos.
    fn pseudo_labelled_projection(
        &self,
        catalog: &CatalogVectors,
        photos: &[&[f32]],
        mean: &shopcue::catalog::DomainMean,
        balance: f32,
    ) -> Option<Projection> {
        use shopcue::catalog::domain;
        let ids: Vec<&str> = self.products.iter().map(|p| p.id.as_str()).collect();
        let cat: Vec<(usize, &[f32])> = catalog
            .iter()
            .filter_map(|(pid, iv)| {
                let k = ids.iter().position(|id| id == pid)?;
                Some((k, iv.embedding.as_slice()))
            })
            .collect();
        let params = domain::PseudoLabelParams {
            balance,
            ..Default::default()
        };
        let labels = domain::pseudo_labels(&cat, ids.len(), photos, mean, params);
        let train: CatalogVectors = photos
            .iter()
            .zip(labels)
            .map(|(v, k)| (ids[k].to_string(), image_vector(v.to_vec(), "domain")))
            .collect();
        shopcue::catalog::build::learn_projection(self.cs, catalog, &train)
    }

    /// Rows with a projection (centring, whitening, LDA from the train photos) or the
    /// train photos as catalog images.
    fn projection_rows(&mut self) -> anyhow::Result<()> {
        let vname = self.views();
        let (w, wm) = (Side::Whole, Side::WholeMulti);
        let icon_whole: Vec<&[f32]> = self.iconic.iter().map(|e| e.whole_1.as_slice()).collect();
        let mut mean = vec![0f32; self.dim];
        for v in &icon_whole {
            for (m, x) in mean.iter_mut().zip(v.iter()) {
                *m += x / icon_whole.len() as f32;
            }
        }
        let whitening = Projection::whitening(&icon_whole, 0.5);
        let centring = Some(Projection::centering(&mean));
        self.row("centred on the catalog mean", w, w, 0, centring, true)?;
        self.row(
            "PCA-whitened on the catalog (shrinkage 0.5)",
            w,
            w,
            0,
            whitening,
            true,
        )?;
        let all = usize::MAX;
        self.row(
            "+ train photos as catalog images (1-NN)",
            w,
            w,
            all,
            None,
            false,
        )?;
        let p1 = self.learned(false);
        self.row(
            "LDA projection learned from train photos",
            w,
            w,
            0,
            p1.clone(),
            false,
        )?;
        self.row(
            "LDA projection + train photos as images",
            w,
            w,
            all,
            p1,
            false,
        )?;
        let pm = self.learned(true);
        self.row(
            &format!("LDA projection + multi-crop {vname} both sides"),
            wm,
            wm,
            0,
            pm.clone(),
            false,
        )?;
        self.row(
            &format!("LDA projection + multi-crop {vname} + train photos as images"),
            wm,
            wm,
            all,
            pm.clone(),
            false,
        )?;
        self.row(
            &format!("LDA projection + multi-crop {vname} + detector crops both sides"),
            Side::MainMulti,
            wm,
            0,
            pm,
            false,
        )
    }

    /// The curve: top-1 against the labelled photos per product (the first n train photos
    /// of each product, as confirmed feedback brings them), multi-crop: the photos as
    /// catalog images (what `catalog retrain` does below full coverage) and an LDA
    /// projection learned from them.
    fn photo_curve_rows(&mut self) -> anyhow::Result<()> {
        let vname = self.views();
        let wm = Side::WholeMulti;
        for n in PHOTOS_PER_PRODUCT {
            self.row(
                &format!("{n} labelled photo(s) per product as catalog images, multi-crop {vname}"),
                wm,
                wm,
                n,
                None,
                false,
            )?;
            let learned = self.learned_from(wm, n);
            self.row(
                &format!("{n} labelled photo(s) per product: LDA + multi-crop {vname}"),
                wm,
                wm,
                0,
                learned,
                false,
            )?;
        }
        Ok(())
    }

    /// The same photos as operator feedback through `catalog retrain` (the code the admin
    /// API runs): stored records over the catalog-only catalog.
    fn retrain_rows(&mut self) -> anyhow::Result<()> {
        let g = self.g;
        let base = self.snapshot(self.cat_vectors(Side::WholeMulti, 0), None)?;
        for n in PHOTOS_PER_PRODUCT {
            let records = feedback_records(g, &self.train, n);
            let (snap, report) = feedback::retrained(&base, &records, self.cs, &self.params)?;
            let scored = score(
                &snap,
                &queries(&g.val, &self.val, Side::WholeMulti),
                &g.classes,
            )?;
            let name = format!(
                "{n} confirmed photo(s) per product through `catalog retrain` ({})",
                if report.projection_learned {
                    "projection learned, photos as images"
                } else {
                    "photos as images"
                }
            );
            eprintln!("{name}: val top-1 {:.3} top-5 {:.3}", scored.0, scored.1);
            self.push_row(name, scored, (None, None));
        }
        Ok(())
    }

    /// Products without labelled photos: the projection learned as `catalog build` would
    /// with photos of every other product only; val photos of each half scored apart.
    fn unlabelled_product_rows(&mut self) -> anyhow::Result<()> {
        let g = self.g;
        let seen = |c: usize| c.is_multiple_of(2);
        let mut groups: HashMap<String, Vec<&[f32]>> = HashMap::new();
        for (l, e) in g.iconic.iter().zip(&self.iconic) {
            groups
                .entry(g.classes[l.class].clone())
                .or_default()
                .push(&e.whole_m);
        }
        for (l, e) in g.train.iter().zip(&self.train) {
            if seen(l.class) {
                groups
                    .entry(g.classes[l.class].clone())
                    .or_default()
                    .push(&e.whole_m);
            }
        }
        let half = learn_groups(self.cs, groups);
        let (with_photos, without): (Vec<_>, Vec<_>) = queries(&g.val, &self.val, Side::WholeMulti)
            .into_iter()
            .partition(|(c, _)| seen(*c));
        let n_seen = (0..g.classes.len()).filter(|c| seen(*c)).count();
        let catalog = self.cat_vectors(Side::WholeMulti, 0);
        let raw = self.snapshot(catalog.clone(), None)?;
        let learned = self.snapshot(catalog, half)?;
        for (name, snap, q) in [
            ("no projection", &raw, &with_photos),
            ("LDA learned from them", &learned, &with_photos),
        ] {
            let scored = score(snap, q, &g.classes)?;
            self.push_row(
                format!(
                    "{n_seen} products with labelled photos, their val photos: multi-crop, {name}"
                ),
                scored,
                (None, None),
            );
        }
        for (name, snap, q) in [
            ("no projection", &raw, &without),
            ("LDA learned from the others", &learned, &without),
        ] {
            let scored = score(snap, q, &g.classes)?;
            self.push_row(
                format!(
                    "{} products WITHOUT labelled photos, their val photos: multi-crop, {name}",
                    g.classes.len() - n_seen
                ),
                scored,
                (None, None),
            );
        }
        Ok(())
    }

    /// The "no product" threshold curve: the `held_out` classes are left out of the
    /// catalog (and of the learning); their photos must be rejected, the others matched.
    /// Catalog only: what the matching stage's thresholds let through on raw cosines and
    /// on queries centred on the mean of every (unlabelled) train photo; photos of the
    /// `held_out` products are searched in the catalog without them.
    fn scale_rows(
        &self,
        held_out: &HashSet<usize>,
        m: &MatchingSettings,
    ) -> anyhow::Result<Vec<scale::ScaleRow>> {
        let g = self.g;
        let train: Vec<&[f32]> = self.train.iter().map(|e| e.whole_m.as_slice()).collect();
        let mean = Arc::new(shopcue::catalog::DomainMean::of(&train).context("no train photos")?);
        let all = self.cat_vectors(Side::WholeMulti, 0);
        let known_ids: HashSet<&str> = g
            .classes
            .iter()
            .enumerate()
            .filter(|(c, _)| !held_out.contains(c))
            .map(|(_, id)| id.as_str())
            .collect();
        let part: CatalogVectors = all
            .iter()
            .filter(|(id, _)| known_ids.contains(id.as_str()))
            .cloned()
            .collect();
        let prods: Vec<Product> = self
            .products
            .iter()
            .filter(|p| known_ids.contains(p.id.as_str()))
            .cloned()
            .collect();
        let q = queries(&g.val, &self.val, Side::WholeMulti);
        let (qk, qu): (Vec<_>, Vec<_>) = q.into_iter().partition(|(c, _)| !held_out.contains(c));
        let mut judged = Vec::new();
        for centred in [false, true] {
            let mean = centred.then(|| mean.clone());
            let full = self
                .snapshot(all.clone(), None)?
                .with_domain_mean(mean.clone())?;
            let known = Snapshot::assemble(
                manifest(self.dim),
                prods.clone(),
                part.clone(),
                None,
                &self.params,
            )?
            .with_domain_mean(mean)?;
            judged.push((
                scale::judge(&full, &qk, &g.classes)?,
                scale::judge(&known, &qu, &g.classes)?,
            ));
        }
        let (raw, centred) = (&judged[0], &judged[1]);
        let (rt, ct) = (
            (m.raw_min_similarity, m.raw_margin),
            (m.centred_min_similarity, m.centred_margin),
        );
        Ok(vec![
            scale::row("raw", "matching.raw_*", rt, &raw.0, &raw.1),
            scale::row("centred", "matching.raw_*", rt, &centred.0, &centred.1),
            scale::row("centred", "matching.centred_*", ct, &centred.0, &centred.1),
            scale::row(
                "centred",
                "stricter",
                (ct.0 + 0.05, ct.1),
                &centred.0,
                &centred.1,
            ),
            scale::row(
                "centred",
                "stricter margin",
                (ct.0, ct.1 + 0.02),
                &centred.0,
                &centred.1,
            ),
            scale::row(
                "centred",
                "looser",
                (ct.0 - 0.05, ct.1),
                &centred.0,
                &centred.1,
            ),
        ])
    }

    fn threshold_rows(&self, held_out: &HashSet<usize>) -> anyhow::Result<Vec<ThresholdRow>> {
        let g = self.g;
        let keep = |c: usize| !held_out.contains(&c);
        let mut cat = Vec::new();
        for (l, e) in g.iconic.iter().zip(&self.iconic) {
            if keep(l.class) {
                cat.push((
                    g.classes[l.class].clone(),
                    image_vector(e.whole_m.clone(), "catalog"),
                ));
            }
        }
        let mut groups: HashMap<String, Vec<&[f32]>> = HashMap::new();
        for (pid, v) in &cat {
            groups.entry(pid.clone()).or_default().push(&v.embedding);
        }
        for (l, e) in g.train.iter().zip(&self.train) {
            if keep(l.class) {
                groups
                    .entry(g.classes[l.class].clone())
                    .or_default()
                    .push(&e.whole_m);
            }
        }
        let proj = learn_groups(self.cs, groups);
        let prods: Vec<Product> = self
            .products
            .iter()
            .filter(|p| cat.iter().any(|(id, _)| id == &p.id))
            .cloned()
            .collect();
        let snap = Snapshot::assemble(manifest(self.dim), prods, cat, proj, &self.params)?;
        let (_, _, ranked) = score(
            &snap,
            &queries(&g.val, &self.val, Side::WholeMulti),
            &g.classes,
        )?;
        Ok(threshold_curve(g, &ranked, keep))
    }
}

/// Precision, recall and unknown products rejected at each threshold on the top-1 score;
/// `known` tells the classes in the catalog.
fn threshold_curve(
    g: &Grocery,
    ranked: &[Ranked],
    known: impl Fn(usize) -> bool,
) -> Vec<ThresholdRow> {
    let positives = ranked.iter().filter(|(c, _)| known(*c)).count().max(1) as f64;
    let negatives = ranked.iter().filter(|(c, _)| !known(*c)).count().max(1) as f64;
    let mut out = Vec::new();
    for t in [0.0f32, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9] {
        let (mut accepted, mut correct, mut rejected_neg) = (0usize, 0usize, 0usize);
        for (c, list) in ranked {
            let top = list.first().filter(|(_, s)| *s >= t);
            match top {
                Some((pid, _)) => {
                    accepted += 1;
                    if pid == &g.classes[*c] {
                        correct += 1;
                    }
                }
                None if !known(*c) => rejected_neg += 1,
                None => {}
            }
        }
        out.push(ThresholdRow {
            threshold: t,
            precision: if accepted == 0 {
                1.0
            } else {
                correct as f64 / accepted as f64
            },
            recall: correct as f64 / positives,
            rejected_unknown: rejected_neg as f64 / negatives,
        });
    }
    out
}

/// The accuracy table, in markdown.
fn print_accuracy_table(rows: &[AccuracyRow]) {
    println!(
        "\n| option | val top-1 | val top-5 | fruit top-1 | vegetables top-1 | packages top-1 | train top-1 | train top-5 | ms/query (1 core) |\n|---|---|---|---|---|---|---|---|---|"
    );
    let f = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "–".into());
    for r in rows {
        println!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} |",
            r.option,
            r.val_top1,
            r.val_top5,
            r.family_top1[0],
            r.family_top1[1],
            r.family_top1[2],
            f(r.train_top1),
            f(r.train_top5),
            r.ms_per_query
                .map(|m| format!("{m:.0}"))
                .unwrap_or_else(|| "–".into())
        );
    }
}

/// The "no product" threshold table, in markdown.
fn print_threshold_table(g: &Grocery, held_out: &HashSet<usize>, thresholds: &[ThresholdRow]) {
    println!(
        "\n\"No product\" threshold on the top-1 score (LDA + multi-crop; {} of {} classes left out of the catalog, their {} val photos must be rejected):\n",
        held_out.len(),
        g.classes.len(),
        g.val.iter().filter(|l| held_out.contains(&l.class)).count()
    );
    println!("| threshold | precision | recall | unknown products rejected |\n|---|---|---|---|");
    for t in thresholds {
        println!(
            "| {:.2} | {:.3} | {:.3} | {:.3} |",
            t.threshold, t.precision, t.recall, t.rejected_unknown
        );
    }
}

/// One end-to-end row: `catalog build` (with `train_photos` when given) into a fresh
/// folder, then the configured `Analyzer` on every val photo, timed.
fn end_to_end(
    models: &Models,
    cs: &shopcue::catalog::CatalogSettings,
    g: &Grocery,
    products: &Path,
    train_photos: Option<&Path>,
    scratch: &Path,
) -> anyhow::Result<AccuracyRow> {
    let t = Instant::now();
    let out = scratch.join(if train_photos.is_some() {
        "catalog-photos"
    } else {
        "catalog-only"
    });
    let report = build(
        models,
        cs,
        &BuildOptions {
            products: products.to_path_buf(),
            out: out.clone(),
            train_photos: train_photos.map(Path::to_path_buf),
            domain_photos: None,
            strict: true,
            progress: false,
        },
    )?;
    let built = t.elapsed();
    let catalog = Arc::new(Catalog::open(&out, cs)?);
    let analyzer = Analyzer::new(models, catalog, cs)?;
    let mut ranked: Vec<Ranked> = Vec::with_capacity(g.val.len());
    let mut busy = std::time::Duration::ZERO;
    for l in &g.val {
        let img = RgbImage::open(&l.path)?;
        let q = Instant::now();
        let m = analyzer.query(&img, 5)?;
        busy += q.elapsed();
        ranked.push((
            l.class,
            m.into_iter().map(|m| (m.product_id, m.score)).collect(),
        ));
    }
    let n = g.val.len().max(1) as f64;
    let hit = |k: usize| {
        ranked
            .iter()
            .filter(|(c, list)| list.iter().take(k).any(|(p, _)| p == &g.classes[*c]))
            .count() as f64
            / n
    };
    eprintln!(
        "end to end: built {} products / {} vectors (projection {}) in {:.1} s",
        report.products,
        report.vectors,
        report.projection,
        built.as_secs_f64()
    );
    let what = if train_photos.is_some() {
        "`catalog build --train-photos`"
    } else {
        "catalog images only: `catalog build`"
    };
    Ok(AccuracyRow {
        option: format!(
            "end to end, {what} + `Analyzer` (configured: synthetic views {}, views {:?}, detect catalog {}, query detections {})",
            cs.synthetic_views, cs.query_views, cs.detect_catalog_images, cs.query_detections
        ),
        val_top1: hit(1),
        val_top5: hit(5),
        train_top1: None,
        train_top5: None,
        family_top1: family_top1(g, &ranked),
        ms_per_query: Some(busy.as_secs_f64() * 1000.0 / n),
    })
}
