//! `shopcue bench live-cues`: cue precision and recall of the live pipeline on product
//! footage (issue 10, "Live"), for a catalog of catalog images only (plain; with the
//! unlabelled train photos as `--domain-photos`, centred on their mean or with the
//! projection learned from their clusters) and for the labelled-photo demo
//! catalog, with matching variants side by side.
//!
//! Videos, each with its ground truth (the product of every shot, or none):
//! - `grocery_shots.mp4`: 6 shots of 2 s, one in-store carton photo each (the footage's
//!   `ground_truth.json`);
//! - the **composite** ([`composite`]): 16 val photos of the Grocery Store dataset (never
//!   learned from), 4 s each with a slow zoom, letterboxed to 1280x720, with two shots
//!   without any catalog product between them; made with ffmpeg into the work folder
//!   and described by its own `ground_truth.json`;
//! - `intel_concat.mp4`: 5 shots without a catalog product (every cue there is wrong).
//!
//! Each video goes once through the pipeline `shopcue analyze` runs (lossless batch mode,
//! the default config): its analysed samples are kept and replayed through the matching
//! stage ([`CueBuilder`]) with each variant of `[matching]`, so variants differ only in
//! their matching and aggregation. A cue is right when it names its shot's product;
//! precision = right cues / cues, recall = product shots with a right cue / product shots.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use shopcue::analyze::{AnalyzeArgs, analyze_outputs};
use shopcue::config::Settings;
use shopcue::cue::{Cue, CueEvent};
use shopcue::matching::{
    CueBuilder, MatchingSettings, SampleResult, SiblingScope, SimilarityScale,
};
use shopcue::pipeline::PipelineOutput;

pub mod composite;

use composite::Truth;

#[derive(Debug, Clone, clap::Args)]
pub struct LiveCuesArgs {
    /// Folder holding footage/ and grocery/ (default: data/, else ../shared/data).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Where the composite video and the catalogs of catalog images only (plain,
    /// centred and pseudo-labelled) are made (kept and reused).
    #[arg(long, default_value = "target/bench-data/live-cues")]
    pub work: PathBuf,
    /// The labelled-photo catalog (the demo's; built from the dataset when missing).
    #[arg(long, default_value = "data/demo-catalog")]
    pub catalog: PathBuf,
    /// Print, per shot, what each analysed sample's regions matched.
    #[arg(long)]
    pub verbose: bool,
}

/// A matching variant: a name and its edit of the configured `[matching]`.
struct Variant {
    name: &'static str,
    edit: fn(&mut MatchingSettings),
}

/// The variants compared: the matching stage as it was before issue 10's live work
/// (config overrides), each change alone, and the defaults.
fn variants() -> Vec<Variant> {
    fn before(m: &mut MatchingSettings) {
        m.sibling_scope = SiblingScope::Place;
        m.agree_regions = 0;
        m.raw_agree_regions = 0;
    }
    vec![
        Variant {
            name: "before (sibling_scope place, no agreeing regions)",
            edit: before,
        },
        Variant {
            name: "raw_agree_regions 2 only",
            edit: |m| {
                before(m);
                m.raw_agree_regions = 2;
            },
        },
        Variant {
            name: "sibling_scope shot only",
            edit: |m| {
                before(m);
                m.sibling_scope = SiblingScope::Shot;
            },
        },
        Variant {
            name: "agree_regions 2 (learned catalogs too)",
            edit: |m| m.agree_regions = 2,
        },
        Variant {
            name: "after (defaults)",
            edit: |_| {},
        },
    ]
}

/// Cues of one video against its truth.
#[derive(Debug, Clone, Default)]
pub struct Score {
    pub cues: usize,
    pub right: usize,
    pub wrong: Vec<String>,
    pub found: usize,
    pub product_shots: usize,
}

impl Score {
    pub fn precision(&self) -> Option<f64> {
        (self.cues > 0).then(|| self.right as f64 / self.cues as f64)
    }
    pub fn recall(&self) -> Option<f64> {
        (self.product_shots > 0).then(|| self.found as f64 / self.product_shots as f64)
    }
    fn add(&mut self, o: &Score) {
        self.cues += o.cues;
        self.right += o.right;
        self.wrong.extend(o.wrong.iter().cloned());
        self.found += o.found;
        self.product_shots += o.product_shots;
    }
}

/// Judges ended cues against the truth: a cue belongs to the shot its first sighting is in.
pub fn judge(cues: &[Cue], truth: &Truth) -> Score {
    let mut found = std::collections::HashSet::new();
    let mut s = Score {
        product_shots: truth.shots.iter().filter(|p| p.is_some()).count(),
        ..Score::default()
    };
    for c in cues {
        s.cues += 1;
        let shot = truth.shot_at(c.pts);
        match truth.shots.get(shot).and_then(|p| p.as_deref()) {
            Some(p) if p == c.product_id => {
                s.right += 1;
                found.insert(shot);
            }
            _ => s.wrong.push(format!("{} in shot {shot}", c.product_id)),
        }
    }
    s.found = found.len();
    s
}

/// Replays the analysed samples of `outputs` through a [`CueBuilder`] with `matching`
/// (as the pipeline sets it for the catalog): the cues that ended.
pub fn replay(
    outputs: &[PipelineOutput],
    matching: &MatchingSettings,
    scale: SimilarityScale,
) -> Vec<Cue> {
    let mut builder = CueBuilder::new("bench", &matching.for_scale(scale));
    let mut cues = Vec::new();
    let mut keep = |events: Vec<CueEvent>| {
        cues.extend(events.into_iter().filter_map(|e| match e {
            CueEvent::End(c) => Some(c),
            _ => None,
        }))
    };
    for o in outputs {
        match o {
            PipelineOutput::Shot(e) => keep(builder.on_shot_event(e)),
            PipelineOutput::Sample(s) => keep(builder.push(&SampleResult {
                frame_index: s.ticket.frame_index,
                pts_ns: s.ticket.pts_ns,
                wallclock: s.ticket.wallclock,
                shot_index: s.ticket.shot_index,
                detections: s.detections.clone(),
                reused: s.reused,
            })),
            PipelineOutput::Cue { .. } => {}
        }
    }
    keep(builder.flush());
    cues
}

fn data_dir(arg: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(d) = arg {
        return Ok(d.to_path_buf());
    }
    ["data", "../shared/data"]
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("footage").is_dir() && d.join("grocery").is_dir())
        .context("no data/ with footage/ and grocery/: run scripts/setup.sh or pass --data")
}

/// What a catalog-only catalog does with the train photos given as unlabelled
/// query-domain photos (`--domain-photos`: their labels are not read).
#[derive(Debug, Clone, Copy)]
enum DomainUse {
    /// Not given.
    None,
    /// Their mean centres queries (`catalog.domain_pseudo_labels = false`).
    Centred,
    /// Labelled by clustering, a projection learned from them (the default).
    PseudoLabels,
}

/// The catalog of the 81 catalog images alone (no labelled photos), built once in `dir`,
/// with the train photos used as `domain` says.
fn catalog_only(
    settings: &Settings,
    dataset: &Path,
    dir: &Path,
    domain: DomainUse,
) -> anyhow::Result<()> {
    let mut cs = settings.catalog.clone();
    cs.domain_pseudo_labels = matches!(domain, DomainUse::PseudoLabels);
    // Reused only when built with the same catalog settings and embedder: a changed
    // setting (a clustering option, the views) rebuilds it. Query-time only settings
    // do not.
    let build_settings = shopcue::catalog::CatalogSettings {
        query_views_top: 0,
        query_views_within: 0.0,
        query_views_floor_margin: 0.0,
        ..cs.clone()
    };
    let stamp = serde_json::to_string(&(&build_settings, &settings.inference.embedder))?;
    let mut stamp_file = dir.as_os_str().to_os_string();
    stamp_file.push(".settings.json");
    let stamp_file = PathBuf::from(stamp_file);
    if dir.join("CURRENT").is_file()
        && std::fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp)
    {
        return Ok(());
    }
    eprintln!("building the catalog-only catalog in {} ...", dir.display());
    let g = shopcue::catalog::grocery::Grocery::load(dataset)?;
    let mut sources = dir.as_os_str().to_os_string();
    sources.push(".sources");
    // Never the photos grocery_shots.mp4 was made from: the domain photos must not hold
    // the footage it is scored on.
    let (products, photos) = g.write_jsonl_limited(
        Path::new(&sources),
        None,
        &shopcue::catalog::grocery::GROCERY_SHOTS_SOURCES,
    )?;
    let models = shopcue::inference::Models::load(&settings.inference)?;
    let opts = shopcue::catalog::build::BuildOptions {
        products,
        out: dir.to_path_buf(),
        train_photos: None,
        domain_photos: (!matches!(domain, DomainUse::None)).then_some(photos),
        strict: false,
        progress: false,
    };
    shopcue::catalog::build::build(&models, &cs, &opts)?;
    std::fs::write(&stamp_file, stamp)
        .with_context(|| format!("writing {}", stamp_file.display()))?;
    Ok(())
}

/// One analysed video: its truth and the pipeline's outputs.
struct Analysed {
    truth: Truth,
    outputs: Vec<PipelineOutput>,
    scale: SimilarityScale,
    analysed: usize,
    mean_ms: f64,
}

async fn analyse(settings: &Settings, truth: Truth, catalog: &Path) -> anyhow::Result<Analysed> {
    let args = AnalyzeArgs {
        input: truth.file.display().to_string(),
        catalog: catalog.to_path_buf(),
        out: PathBuf::from("-"),
        channel: "bench".into(),
    };
    let run = analyze_outputs(settings, &args, CancellationToken::new())
        .await
        .with_context(|| format!("analysing {}", truth.file.display()))?;
    let times: Vec<f64> = run
        .outputs
        .iter()
        .filter_map(|o| match o {
            PipelineOutput::Sample(s) if !s.reused && s.error.is_none() => {
                Some(s.elapsed.as_secs_f64() * 1e3)
            }
            _ => None,
        })
        .collect();
    Ok(Analysed {
        scale: SimilarityScale::of(
            run.catalog.snapshot().projection().is_some(),
            run.catalog.centres_queries(),
        ),
        truth,
        outputs: run.outputs,
        analysed: times.len(),
        mean_ms: times.iter().sum::<f64>() / times.len().max(1) as f64,
    })
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.2}"))
}

/// One table row: a catalog, a matching variant, a video and its score.
pub type Row = (String, String, String, Score);

/// Runs the benchmark and prints its tables; answers the rows.
pub async fn run_bench(settings: &Settings, args: &LiveCuesArgs) -> anyhow::Result<Vec<Row>> {
    let data = data_dir(args.data.as_deref())?;
    let videos = prepare(settings, args, &data).await?;
    let catalogs = [
        ("catalog images only", args.work.join("catalog-only")),
        (
            "catalog images only + query-domain centring (train photos, unlabelled)",
            args.work.join("catalog-only-centred"),
        ),
        (
            "catalog images only + projection from the train photos labelled by clustering (unlabelled, the default with --domain-photos)",
            args.work.join("catalog-only-pseudo"),
        ),
        ("labelled photos (demo)", args.catalog.clone()),
    ];
    let mut rows = Vec::new();
    println!("### Live cues (`shopcue bench live-cues`)\n");
    println!(
        "| catalog | matching | video | cues (right / wrong) | precision | recall (shots found) |"
    );
    println!("|---|---|---|---|---|---|");
    let mut speed = Vec::new();
    let mut matching_us: Vec<(&str, f64)> = Vec::new();
    for (cname, dir) in &catalogs {
        let mut analysed = Vec::new();
        for v in &videos {
            let a = analyse(settings, v.clone(), dir).await?;
            speed.push((cname.to_string(), v.name.clone(), a.analysed, a.mean_ms));
            if args.verbose {
                print_diagnostics(&a, &settings.matching);
                let file = args
                    .work
                    .join(format!("samples-{}-{}.json", slug(cname), a.truth.name));
                std::fs::write(&file, serde_json::to_string(&samples_json(&a))?)?;
            }
            analysed.push(a);
        }
        for variant in variants() {
            let mut m = settings.matching.clone();
            (variant.edit)(&mut m);
            m.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
            score_variant(cname, &variant, &m, &analysed, &mut rows, &mut matching_us);
        }
    }
    print_speed(&speed, &matching_us);
    Ok(rows)
}

/// The composite and the truths of the videos; the catalog-only catalog and the
/// labelled one, built when missing.
async fn prepare(
    settings: &Settings,
    args: &LiveCuesArgs,
    data: &Path,
) -> anyhow::Result<Vec<Truth>> {
    let dataset = data.join("grocery");
    std::fs::create_dir_all(&args.work)
        .with_context(|| format!("creating {}", args.work.display()))?;
    let composite = composite::make(data, &args.work)?;
    let footage = data.join("footage");
    let videos = vec![
        Truth::from_footage(&footage, "grocery_shots.mp4")?,
        composite,
        Truth::from_footage(&footage, "intel_concat.mp4")?,
    ];
    for (folder, domain) in [
        ("catalog-only", DomainUse::None),
        ("catalog-only-centred", DomainUse::Centred),
        ("catalog-only-pseudo", DomainUse::PseudoLabels),
    ] {
        let (s, d, o) = (settings.clone(), dataset.clone(), args.work.join(folder));
        tokio::task::spawn_blocking(move || catalog_only(&s, &d, &o, domain)).await??;
    }
    let (s, c) = (settings.clone(), args.catalog.clone());
    tokio::task::spawn_blocking(move || super::glass::ensure_catalog(&s, &c, &dataset)).await??;
    Ok(videos)
}

/// Replays every analysed video through one variant and prints its rows (per video, and
/// the two product videos pooled).
fn score_variant(
    cname: &str,
    variant: &Variant,
    m: &MatchingSettings,
    analysed: &[Analysed],
    rows: &mut Vec<Row>,
    matching_us: &mut Vec<(&'static str, f64)>,
) {
    let mut product_videos = Score::default();
    for a in analysed {
        let t = std::time::Instant::now();
        let cues = replay(&a.outputs, m, a.scale);
        let samples = a
            .outputs
            .iter()
            .filter(|o| matches!(o, PipelineOutput::Sample(_)))
            .count();
        matching_us.push((
            variant.name,
            t.elapsed().as_secs_f64() * 1e6 / samples.max(1) as f64,
        ));
        let score = judge(&cues, &a.truth);
        print_row(cname, variant.name, &a.truth.name, &score, false);
        if !score.wrong.is_empty() {
            eprintln!("  wrong: {:?}", score.wrong);
        }
        if a.truth.name != "intel_concat.mp4" {
            product_videos.add(&score);
        }
        rows.push((
            cname.to_string(),
            variant.name.to_string(),
            a.truth.name.clone(),
            score,
        ));
    }
    print_row(
        cname,
        variant.name,
        "grocery_shots + composite",
        &product_videos,
        true,
    );
}

fn print_row(cname: &str, variant: &str, video: &str, s: &Score, bold: bool) {
    let b = if bold { "**" } else { "" };
    println!(
        "| {cname} | {variant} | {b}{video}{b} | {} / {} | {b}{}{b} | {b}{}{b} ({} / {}) |",
        s.right,
        s.wrong.len(),
        fmt(s.precision()),
        fmt(s.recall()),
        s.found,
        s.product_shots
    );
}

fn print_speed(speed: &[(String, String, usize, f64)], matching_us: &[(&str, f64)]) {
    println!("\n| catalog | video | analysed samples | mean ms per analysed sample |");
    println!("|---|---|---|---|");
    for (c, v, n, ms) in speed {
        println!("| {c} | {v} | {n} | {ms:.0} |");
    }
    println!("\n| matching | µs per sample in the matching stage (replay, worst video) |");
    println!("|---|---|");
    for variant in variants() {
        let worst = matching_us
            .iter()
            .filter(|(n, _)| *n == variant.name)
            .map(|(_, us)| *us)
            .fold(0.0, f64::max);
        println!("| {} | {worst:.1} |", variant.name);
    }
}

/// Per shot: each analysed sample's regions with their best candidates.
fn print_diagnostics(a: &Analysed, matching: &MatchingSettings) {
    let m = matching.for_scale(a.scale);
    let rules = shopcue::matching::Rules::new(&m);
    eprintln!("== {} (similarity scale: {:?})", a.truth.name, a.scale);
    for o in &a.outputs {
        let PipelineOutput::Sample(s) = o else {
            continue;
        };
        if s.reused {
            continue;
        }
        let t = s.ticket.pts_ns as f64 / 1e9;
        let shot = a.truth.shot_at(t);
        let truth = a.truth.shots.get(shot).cloned().flatten();
        eprintln!("shot {shot} [{}] t={t:.2}", truth.as_deref().unwrap_or("-"));
        for d in &s.detections {
            let rank = truth
                .as_deref()
                .and_then(|p| d.candidates.iter().position(|(c, _)| c == p));
            let cands: Vec<String> = d
                .candidates
                .iter()
                .take(3)
                .map(|(p, v)| format!("{p} {v:.3}"))
                .collect();
            eprintln!(
                "   {:>10} {:.2} [{:.2} {:.2} {:.2} {:.2}] truth#{} {:?}: {}",
                d.class_name,
                d.det_score,
                d.bbox[0],
                d.bbox[1],
                d.bbox[2],
                d.bbox[3],
                rank.map_or_else(|| "-".into(), |r| (r + 1).to_string()),
                short(&rules.judge(d)),
                cands.join(", ")
            );
        }
    }
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// The analysed samples, for study outside: shot, truth, time, regions and candidates.
fn samples_json(a: &Analysed) -> serde_json::Value {
    let samples: Vec<serde_json::Value> = a
        .outputs
        .iter()
        .filter_map(|o| match o {
            PipelineOutput::Sample(s) => Some(s),
            _ => None,
        })
        .map(|s| {
            let t = s.ticket.pts_ns as f64 / 1e9;
            let shot = a.truth.shot_at(t);
            serde_json::json!({
                "shot": shot,
                "truth": a.truth.shots.get(shot).cloned().flatten(),
                "t": t,
                "reused": s.reused,
                "regions": s.detections.iter().map(|d| serde_json::json!({
                    "class": d.class_name,
                    "det": d.det_score,
                    "bbox": d.bbox,
                    "candidates": d.candidates,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({ "video": a.truth.name, "scale": format!("{:?}", a.scale), "samples": samples })
}

fn short(j: &shopcue::matching::Judgement) -> &'static str {
    use shopcue::matching::Judgement::*;
    match j {
        Confident { .. } => "OK",
        ClassGated => "class",
        LowDetScore => "det",
        InvalidBox => "box",
        NoCandidates => "none",
        LowSimilarity { .. } => "lowsim",
        LowMargin { .. } => "margin",
    }
}

/// A truth must name one product (or none) per shot.
pub fn check_truth(t: &Truth) -> anyhow::Result<()> {
    if t.shots.len() != t.cut_frames.len() + 1 {
        bail!(
            "{}: {} shots for {} cuts",
            t.name,
            t.shots.len(),
            t.cut_frames.len()
        );
    }
    Ok(())
}
