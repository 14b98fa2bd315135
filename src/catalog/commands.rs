//! `shopcue catalog build|query|retrain|grocery`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use super::build::{BuildOptions, build};
use super::{Analyzer, Catalog, CatalogSettings, IndexKind};
use crate::inference::{InferenceSettings, Models, RgbImage};

#[derive(Debug, clap::Args)]
pub struct CatalogArgs {
    #[command(subcommand)]
    pub command: CatalogCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CatalogCommand {
    /// Build a catalog folder from a products JSONL file (one product per line).
    Build(BuildArgs),
    /// Find the products in a picture: detect → crop → embed → search.
    Query(QueryArgs),
    /// Rebuild a catalog from its stored operator feedback (confirmed cue crops): they
    /// join their products as images, and a projection is learned again when they cover
    /// enough products. A running sidecar does the same on `POST /v1/catalog/retrain`.
    Retrain(RetrainArgs),
    /// Build the demo catalog from the Grocery Store dataset: its 81 products with their
    /// iconic images, and a projection learned from the labelled in-store photos.
    Grocery(GroceryArgs),
}

#[derive(Debug, clap::Args)]
pub struct GroceryArgs {
    /// The dataset folder (classes.csv, train.txt, iconic-images-and-descriptions/).
    #[arg(long, value_name = "DIR", default_value = "data/grocery")]
    pub dataset: PathBuf,
    /// Catalog folder to write.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Use at most this many labelled photos per product (all by default).
    #[arg(long)]
    pub photos_per_product: Option<usize>,
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Products, one JSON object per line: id, title, brand, price, currency, url,
    /// images (paths relative to this file's folder, absolute paths or URLs), category,
    /// availability, rating, and any other fields (kept).
    #[arg(long, value_name = "FILE.jsonl")]
    pub products: PathBuf,
    /// Catalog folder to write (created; an existing catalog there is replaced atomically).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Labelled photos of the products in real conditions, one `{"product_id": "…",
    /// "image": "…"}` per line: a projection that separates the products is learned from
    /// them, and they join their products' images (catalog.train_photos_as_images).
    #[arg(long, value_name = "FILE.jsonl")]
    pub train_photos: Option<PathBuf>,
    /// Unlabelled photos from where the queries come from (shelf photos, frames of the
    /// channel), one `{"image": "…"}` per line, paths relative to this file's folder (a
    /// `--train-photos` file works too: its `product_id` is ignored, no label is read).
    /// With at least catalog.domain_pseudo_min_per_product [20] per product (and no
    /// --train-photos), each photo is given the product whose catalog image pulls in its
    /// cluster and a projection is learned from them (catalog.domain_pseudo_labels);
    /// with fewer, their mean query vector is stored and subtracted from each query
    /// (catalog.domain_centring). Give at least catalog.domain_min_photos [50] varied
    /// photos (many products, not one).
    #[arg(long, value_name = "FILE.jsonl")]
    pub domain_photos: Option<PathBuf>,
    /// Index kind, overriding catalog.index.
    #[arg(long, value_enum)]
    pub index: Option<IndexArg>,
    /// Fail on the first bad line or image instead of skipping and reporting it.
    #[arg(long)]
    pub strict: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Print the build report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum IndexArg {
    Flat,
    Hnsw,
    Ivf,
}

#[derive(Debug, clap::Args)]
pub struct RetrainArgs {
    /// Catalog folder (its `feedback/labels.jsonl` holds the operator's verdicts).
    #[arg(long, value_name = "DIR")]
    pub catalog: PathBuf,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Catalog folder (from `catalog build`).
    #[arg(long, value_name = "DIR")]
    pub catalog: PathBuf,
    /// Picture to look into (JPEG or PNG).
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,
    /// How many products to return.
    #[arg(long, default_value_t = 5)]
    pub k: usize,
    /// Print `{"results": [{"product_id", "score", "bbox": [x, y, w, h]}, …]}`.
    #[arg(long)]
    pub json: bool,
}

/// Entry point of `shopcue catalog …`.
/// `shopcue catalog …` with the `[catalog]` and `[inference]` settings.
pub fn run(
    args: CatalogArgs,
    catalog: &CatalogSettings,
    inference: &InferenceSettings,
) -> anyhow::Result<()> {
    match args.command {
        CatalogCommand::Build(a) => run_build(a, catalog, inference),
        CatalogCommand::Query(a) => run_query(a, catalog, inference),
        CatalogCommand::Retrain(a) => run_retrain(a, catalog),
        CatalogCommand::Grocery(a) => {
            let models = Models::load(inference).context("loading the models")?;
            let r = super::grocery::build_catalog(
                &models,
                catalog,
                &a.dataset,
                &a.out,
                a.photos_per_product,
                true,
            )?;
            eprintln!(
                "catalog {}: {} products, {} vectors, projection from {} photos; {} skipped",
                a.out.display(),
                r.products,
                r.vectors,
                r.train_photos,
                r.skipped.len()
            );
            Ok(())
        }
    }
}

fn run_build(
    a: BuildArgs,
    catalog_settings: &CatalogSettings,
    inference: &InferenceSettings,
) -> anyhow::Result<()> {
    let mut cs = catalog_settings.clone();
    if let Some(i) = a.index {
        cs.index = match i {
            IndexArg::Flat => IndexKind::Flat,
            IndexArg::Hnsw => IndexKind::Hnsw,
            IndexArg::Ivf => IndexKind::Ivf,
        };
    }
    let models = Models::load(inference).context("loading the models")?;
    let opts = BuildOptions {
        products: a.products,
        out: a.out,
        train_photos: a.train_photos,
        domain_photos: a.domain_photos,
        strict: a.strict,
        progress: !a.quiet && !a.json,
    };
    let report = build(&models, &cs, &opts)?;
    for s in &report.skipped {
        eprintln!("skipped {s}");
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        eprintln!(
            "catalog {}: {} products, {} vectors{}{}; {} skipped",
            opts.out.display(),
            report.products,
            report.vectors,
            if report.pseudo_labelled_photos > 0 {
                format!(
                    ", projection learned from {} query-domain photos labelled by clustering",
                    report.pseudo_labelled_photos
                )
            } else if report.projection {
                format!(
                    ", projection learned from {} labelled photos",
                    report.train_photos
                )
            } else {
                String::new()
            },
            if report.domain_photos > 0 {
                format!(", query-domain mean of {} photos", report.domain_photos)
            } else {
                String::new()
            },
            report.skipped.len()
        );
    }
    Ok(())
}

fn run_retrain(a: RetrainArgs, settings: &CatalogSettings) -> anyhow::Result<()> {
    let catalog = Catalog::open(&a.catalog, settings)?;
    let store = super::feedback::FeedbackStore::new(&a.catalog, settings);
    let r = super::feedback::retrain(&catalog, &store, settings)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    for (why, n) in &r.skipped {
        eprintln!("skipped {n} photo(s): {why}");
    }
    if let Some(note) = &r.projection_note {
        eprintln!("note: {note}");
    }
    eprintln!(
        "catalog {}: {} confirmed photos of {} products ({} negatives kept aside); {} → {} vectors{}",
        a.catalog.display(),
        r.photos,
        r.products,
        r.negatives,
        r.vectors_before,
        r.vectors_after,
        if r.projection_learned {
            ", projection learned again"
        } else {
            ""
        }
    );
    Ok(())
}

fn run_query(
    a: QueryArgs,
    catalog_settings: &CatalogSettings,
    inference: &InferenceSettings,
) -> anyhow::Result<()> {
    let models = Models::load(inference).context("loading the models")?;
    let catalog = Arc::new(Catalog::open(&a.catalog, catalog_settings)?);
    let analyzer = Analyzer::new(&models, catalog, catalog_settings)?;
    let img = RgbImage::open(&a.image)?;
    let results = analyzer.query(&img, a.k)?;
    if a.json {
        #[derive(serde::Serialize)]
        struct Output<'a> {
            results: &'a [super::Match],
        }
        // Serialised straight from f32 so scores print short (0.87, not 0.8700000047…).
        println!("{}", serde_json::to_string(&Output { results: &results })?);
    } else {
        for (i, m) in results.iter().enumerate() {
            println!(
                "{:>2}. {:<40} {:.3}  bbox [{:.3}, {:.3}, {:.3}, {:.3}]",
                i + 1,
                m.product_id,
                m.score,
                m.bbox[0],
                m.bbox[1],
                m.bbox[2],
                m.bbox[3]
            );
        }
    }
    Ok(())
}
