//! `shopcue bench capacity`: how many live 720p30 channels this machine carries with the
//! full analysis, and what a channel costs (issue 14).
//!
//! Each step runs N channels through the real sidecar ([`Sidecar`](shopcue::sidecar::Sidecar),
//! in this process, with the demo catalog), each channel its own looping loopback origin
//! of product footage re-encoded at 1280x720 30 fps in 2 s segments: even channels
//! `grocery_shots.mp4` (a carton product per shot, scored against the ground truth), odd
//! ones `intel_concat.mp4` (no catalog product). N ramps up (`--channels`) until a step is
//! not sustained ([`sustain`]). Several *variants* (named sets of config overrides) run in
//! the same invocation, each with its own ramp; their first steps give the cost ratio.

pub(crate) mod exposition;
pub(crate) mod procfs;
mod report;
pub(crate) mod step;
mod sustain;
mod truth;
mod variant;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use shopcue::config::Settings;

use report::VariantResult;
use step::{Footage, StepPlan};
use variant::Variant;

#[derive(Debug, Clone, clap::Args)]
pub struct CapacityArgs {
    /// Channel counts of the ramp, in order; it stops at the first step not sustained.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,6,8,10,12")]
    pub channels: Vec<usize>,
    /// Seconds measured per step, after the warm-up.
    #[arg(long, default_value_t = 60.0)]
    pub secs: f64,
    /// Seconds each step runs before it is measured.
    #[arg(long, default_value_t = 10.0)]
    pub warmup: f64,
    /// A variant: `NAME:section.key=value,section.key=value` (config overrides on top of the
    /// settings file). Repeat for more; given at least once, these replace the defaults
    /// `before:inference.sessions_per_model=1,matching.change_gate=false,media.decoder_threads=0`
    /// and `after`. A variant that sets `catalog.dir` runs on that catalog (built with the
    /// variant's models when missing, e.g. for another embedder); the others use `--catalog`.
    #[arg(long = "variant", value_name = "NAME:KEY=VALUE,...")]
    pub variants: Vec<Variant>,
    #[command(flatten)]
    pub data: BenchData,
    /// How far grocery cue precision or recall may fall below the first step's and the
    /// step still count as sustained.
    #[arg(long, default_value_t = 0.05)]
    pub accuracy_tolerance: f64,
    /// Spread the origins' phases over one segment (channel i's segment boundaries are
    /// i/N of a segment from channel 0's), as independent channels are. By default every
    /// origin publishes at the same instants, so the playlist reloads of every channel meet
    /// each segment as soon as it is out, and the latency rule measures load, not phase
    /// (docs/BENCHMARKS.md). Spread, the latency rule is judged on the p95 after each
    /// channel's segment discovery (`discovered_to_cue_seconds`), with the same allowance.
    #[arg(long)]
    pub spread_origins: bool,
    /// Run every step of `--channels`, also after one is not sustained (what the CPU
    /// carries beyond the latency rule, e.g. with `--spread-origins`). The maximum
    /// sustained count still ends at the first step that is not.
    #[arg(long)]
    pub keep_going: bool,
}

fn first_existing(paths: &[&str], marker: &str) -> Option<PathBuf> {
    paths
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join(marker).exists())
}

/// The catalog, dataset and footage of the benches that run the full analysis on the
/// looping product footage (capacity, soak).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchData {
    /// The demo catalog (built from the Grocery Store dataset when missing).
    #[arg(long, default_value = "data/demo-catalog")]
    pub catalog: PathBuf,
    /// The Grocery Store dataset (default: data/grocery or ../shared/data/grocery).
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Folder of grocery_shots.mp4, intel_concat.mp4 and ground_truth.json (default:
    /// data/footage or ../shared/data/footage).
    #[arg(long)]
    pub footage: Option<PathBuf>,
}

impl BenchData {
    /// The footage folder given, else `data/footage` or `../shared/data/footage`.
    pub fn footage_dir(&self) -> anyhow::Result<PathBuf> {
        self.footage
            .clone()
            .or_else(|| {
                first_existing(
                    &["data/footage", "../shared/data/footage"],
                    "ground_truth.json",
                )
            })
            .context("no footage folder: run scripts/setup.sh, or pass --footage DIR")
    }

    /// The Grocery Store dataset given, else `data/grocery` or `../shared/data/grocery`.
    pub fn dataset(&self) -> PathBuf {
        self.dataset.clone().unwrap_or_else(|| {
            first_existing(&["data/grocery", "../shared/data/grocery"], "classes.csv")
                .unwrap_or_else(|| "data/grocery".into())
        })
    }

    /// Builds the catalog from the dataset when it is missing (`settings`: the models).
    pub async fn ensure_catalog(&self, settings: &Settings) -> anyhow::Result<()> {
        self.ensure_catalog_at(settings, &self.catalog).await
    }

    /// The same for a catalog in `dir` (a variant's own, built with its models).
    pub async fn ensure_catalog_at(&self, settings: &Settings, dir: &Path) -> anyhow::Result<()> {
        let (s, dir, dataset) = (settings.clone(), dir.to_path_buf(), self.dataset());
        tokio::task::spawn_blocking(move || super::glass::ensure_catalog(&s, &dir, &dataset))
            .await?
    }
}

impl CapacityArgs {
    fn check(&self) -> anyhow::Result<()> {
        ensure!(
            !self.channels.is_empty() && self.channels.iter().all(|n| *n >= 1),
            "--channels: give channel counts of at least 1, e.g. 1,2,4"
        );
        ensure!(
            self.secs.is_finite() && self.secs > step::SCORE_MARGIN_S + 2.0,
            "--secs must be more than {} (the last {} s of a window are not scored)",
            step::SCORE_MARGIN_S + 2.0,
            step::SCORE_MARGIN_S
        );
        ensure!(
            self.warmup.is_finite() && self.warmup >= 0.0,
            "--warmup must be 0 or more"
        );
        ensure!(
            (0.0..=1.0).contains(&self.accuracy_tolerance),
            "--accuracy-tolerance must be from 0 to 1"
        );
        Ok(())
    }

    /// The variants asked for, each with its settings (an unknown key fails here, before
    /// anything runs).
    fn variants(&self, config: Option<&Path>) -> anyhow::Result<Vec<(Variant, Settings)>> {
        let variants = if self.variants.is_empty() {
            variant::defaults()
        } else {
            self.variants.clone()
        };
        let mut out: Vec<(Variant, Settings)> = Vec::new();
        for v in variants {
            if out.iter().any(|(o, _)| o.name == v.name) {
                bail!("two variants are named `{}`", v.name);
            }
            let mut s = v.settings(config)?;
            // A variant may bring its own catalog (one built with another embedder);
            // the others share `--catalog`.
            if !v.overrides.iter().any(|(k, _)| k == "catalog.dir") {
                s.catalog.dir = self.data.catalog.display().to_string();
            }
            out.push((v, s));
        }
        Ok(out)
    }
}

/// Encodes both footages at 1280x720 30 fps in 2 s segments and reads the ground truth.
pub(crate) async fn footage(dir: &Path) -> anyhow::Result<Footage> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Footage> {
        eprintln!("encoding the footage at 1280x720 30 fps ...");
        let encode = |file: &str| {
            super::ingest::rendition(&dir.join(file), (1280, 720), 30)
                .with_context(|| format!("encoding {}", dir.join(file).display()))
        };
        let grocery = encode("grocery_shots.mp4")?;
        let intel = encode("intel_concat.mp4")?;
        let loop_secs = grocery.segments.iter().map(|s| s.duration).sum();
        let truth = truth::LoopTruth::grocery(&dir.join("ground_truth.json"), loop_secs)?;
        Ok(Footage {
            grocery,
            intel,
            truth,
        })
    })
    .await?
}

/// The whole bench: every variant's ramp, then the summary; prints markdown.
pub async fn run_bench(
    config: Option<&Path>,
    args: &CapacityArgs,
) -> anyhow::Result<Vec<VariantResult>> {
    args.check()?;
    let variants = args.variants(config)?;
    let footage_dir = args.data.footage_dir()?;
    for (_, s) in &variants {
        args.data
            .ensure_catalog_at(s, Path::new(&s.catalog.dir))
            .await?;
    }
    let footage = footage(&footage_dir).await?;
    let origins = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(procfs::ORIGIN_THREAD)
        .enable_all()
        .build()
        .context("the origins' runtime")?;
    let plan = StepPlan {
        warmup_s: args.warmup,
        secs: args.secs,
        origins: origins.handle().clone(),
        spread: args.spread_origins,
    };
    let criteria = sustain::Criteria {
        accuracy_tolerance: args.accuracy_tolerance,
        phase_free: args.spread_origins,
        ..sustain::Criteria::default()
    };
    println!("## Channels with full analysis (1280x720 30 fps, 2 s segments)");
    let mut results = Vec::new();
    for (v, settings) in variants {
        let r = ramp(&footage, &plan, v, &settings, args, &criteria).await;
        match r {
            Ok(r) => {
                report::print_variant(&r);
                results.push(r);
            }
            Err(e) => {
                origins.shutdown_background();
                return Err(e);
            }
        }
    }
    origins.shutdown_background();
    report::print_notes(args.secs, args.warmup);
    if args.spread_origins {
        println!(
            "\nOrigins spread over one segment: the latency rule is judged on the p95 after \
             discovery (the first step's plus {:.0} % of its glass-to-cue p95), not on \
             glass-to-cue, which includes each channel's reload phase.",
            (criteria.glass_p95_ratio - 1.0) * 100.0
        );
    }
    report::print_summary(&results);
    Ok(results)
}

/// One variant: steps of `--channels` until one is not sustained (all of them with
/// `--keep-going`).
async fn ramp(
    footage: &Footage,
    plan: &StepPlan,
    variant: Variant,
    settings: &Settings,
    args: &CapacityArgs,
    criteria: &sustain::Criteria,
) -> anyhow::Result<VariantResult> {
    let mut steps: Vec<(step::StepRow, Vec<String>)> = Vec::new();
    for &n in &args.channels {
        eprintln!(
            "variant `{}`: {n} channel(s), {:.0} s warm-up + {:.0} s measured ...",
            variant.name, plan.warmup_s, plan.secs
        );
        let row = step::run(footage, plan, settings, n)
            .await
            .with_context(|| format!("variant `{}`, {n} channels", variant.name))?;
        let why = sustain::failures(&row, steps.first().map(|(r, _)| r), criteria);
        let done = !why.is_empty();
        if done {
            eprintln!("  not sustained: {}", why.join("; "));
        }
        steps.push((row, why));
        if done && !args.keep_going {
            break;
        }
    }
    Ok(VariantResult { variant, steps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CapacityArgs,
    }

    #[test]
    fn a_variant_may_bring_its_own_catalog() {
        let cli = Cli::try_parse_from([
            "capacity",
            "--catalog",
            "shared-catalog",
            "--variant",
            "after:",
            "--variant",
            "int8:inference.embedder=efficientnet_lite0_int8,catalog.dir=int8-catalog",
        ])
        .unwrap();
        let v = cli.args.variants(None).unwrap();
        let dirs: Vec<(&str, &str)> = v
            .iter()
            .map(|(v, s)| (v.name.as_str(), s.catalog.dir.as_str()))
            .collect();
        assert_eq!(
            dirs,
            [("after", "shared-catalog"), ("int8", "int8-catalog")]
        );
        assert_eq!(v[1].1.inference.embedder, "efficientnet_lite0_int8");
        assert!(!cli.args.spread_origins);
        assert!(!cli.args.keep_going);
    }
}
