//! The `shopcue` command line: parses arguments, loads settings, sets up logs, and calls
//! into the library.

/// The benchmarks (`shopcue bench …`): tools of the binary, not part of the library.
mod bench;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shopcue::cli;
use shopcue::config::Settings;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "shopcue", version, about = "Live video made shoppable")]
struct Cli {
    /// Settings file (TOML); `SHOPCUE__SECTION__KEY` variables override it.
    #[arg(long, global = true, env = "SHOPCUE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The sidecar: channels in, product cues out (WebSocket feed, HLS proxy), until Ctrl-C.
    Run(shopcue::sidecar::RunArgs),
    /// Add, restart or remove a running sidecar's channels (admin API `/v1/channels`).
    Channels(shopcue::sidecar::admin_client::ChannelsArgs),
    /// Batch mode: a file or VOD playlist into shoppable metadata JSON (per-frame and
    /// per-shot items, cues with product details).
    Analyze(shopcue::analyze::AnalyzeArgs),
    /// Find the shot changes of a file, or of a live HLS/SRT stream for --duration seconds.
    Shots(cli::ShotsArgs),
    /// Serve a looping live HLS channel made from a video file (tests, demos).
    Origin(cli::OriginArgs),
    /// The main job: a test origin on real footage and the live shot detector following it.
    Demo(cli::DemoArgs),
    /// Build or query a product catalog (FAISS index of product image embeddings).
    Catalog(shopcue::catalog::commands::CatalogArgs),
    /// Benchmarks (print markdown tables).
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Real-time factor per channel and live channels sustained at once.
    Ingest {
        #[arg(long, default_value = "data/footage/intel_concat.mp4")]
        input: PathBuf,
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        #[arg(long, default_value_t = 8)]
        max_channels: usize,
    },
    /// Live 720p30 channels with the full analysis this machine sustains, and the CPU per
    /// channel-second, for named config variants side by side.
    Capacity(bench::capacity::CapacityArgs),
    /// Glass-to-cue latency through the whole sidecar (HLS test origin and SRT).
    Glass(bench::glass::GlassArgs),
    /// Fleet failover: kill the busiest analyser again and again; takeover times and the
    /// cue streams audited (none lost, none doubled).
    Failover(bench::failover::FailoverArgs),
    /// Hours of 4 analysed channels, feed clients that come and go, and HLS players: RSS,
    /// fds, threads and tasks sampled and their slopes; cues audited (none lost, none
    /// doubled, no gap at the clients).
    Soak(bench::soak::SoakArgs),
    /// One channel's cues fanned out to many WebSocket subscribers, shopcue vs Node `ws`.
    Fanout(bench::fanout::FanoutArgs),
    /// Shot detection F1 and speed, side by side with PySceneDetect.
    Shots {
        /// Where the generated transition clips are kept (default: a temp folder).
        #[arg(long)]
        clips_dir: Option<PathBuf>,
    },
    /// Catalog matching accuracy on the Grocery Store dataset (top-1/top-5, options compared).
    CatalogAccuracy(bench::catalog_accuracy::AccuracyArgs),
    /// Live cue precision/recall on product footage (grocery_shots, a composite of val
    /// photos, intel_concat) for a catalog-only catalog (plain, and with query-domain
    /// centring from unlabelled train photos) and the labelled-photo catalog.
    LiveCues(bench::live_cues::LiveCuesArgs),
    /// Detector/embedder latency and FAISS query latency (flat vs HNSW) at scale.
    CatalogSpeed(bench::catalog_speed::SpeedArgs),
    /// HLS proxy playlist requests/s and latency under wrk, side by side with nginx.
    Hls(bench::proxy_load::HlsBenchArgs),
    /// Playlist rewriting cost (µs per rewrite).
    Manifest {
        #[arg(long, default_value_t = 1.0)]
        seconds_per_case: f64,
    },
}

fn main() -> ExitCode {
    shopcue::allocator::cap_arenas();
    let args = Cli::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: what failed and why.
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("shopcue: error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

fn run(args: Cli) -> anyhow::Result<()> {
    let config = args.config.clone().or_else(|| {
        let default = PathBuf::from("config/shopcue.toml");
        default.is_file().then_some(default)
    });
    // `shopcue run`'s flags are applied before the one validation (a `--redis` URL can be
    // what makes `registry.store = "redis"` valid).
    let settings = Settings::assemble(config.as_deref(), std::env::vars()).context("settings")?;
    let settings = match &args.command {
        Command::Run(a) => a.apply(&settings)?,
        _ => {
            settings.validate().context("settings")?;
            settings
        }
    };
    shopcue::telemetry::init(&settings.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let cancel = CancellationToken::new();
        let signal = cancel.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            signal.cancel();
        });
        match args.command {
            Command::Run(_) => {
                let sidecar = shopcue::sidecar::Sidecar::start(settings, cancel).await?;
                println!("shopcue listening on http://{}", sidecar.addr);
                sidecar.run_until_cancelled().await
            }
            Command::Channels(a) => shopcue::sidecar::admin_client::run(&a).await,
            Command::Analyze(a) => {
                let doc = shopcue::analyze::analyze(&settings, &a, cancel).await?;
                shopcue::analyze::write(&doc, &a.out)?;
                eprintln!(
                    "{}: {} frames, {} shots, {} sampled frames, {} cues in {:.1} s (real-time factor {:.3})",
                    a.input,
                    doc.source.frames,
                    doc.shots.len(),
                    doc.frames.len(),
                    doc.cues.len(),
                    doc.stats.elapsed_s,
                    doc.stats.realtime_factor
                );
                Ok(())
            }
            Command::Shots(a) => {
                let report = cli::detect_shots(&settings, &a, cancel).await?;
                cli::print_shots(&report, a.json)
            }
            Command::Origin(a) => cli::run_origin(&a, cancel).await,
            Command::Demo(a) => cli::run_demo(&settings, &a, cancel).await,
            Command::Catalog(a) => {
                let s = settings.clone();
                tokio::task::spawn_blocking(move || shopcue::catalog::commands::run(a, &s.catalog, &s.inference)).await?
            }
            Command::Bench { which } => run_bench(which, &settings, config.as_deref(), cancel).await,
        }
    })
}

/// `shopcue bench <which>`: one benchmark, its tables printed.
async fn run_bench(
    which: BenchCommand,
    settings: &Settings,
    config: Option<&std::path::Path>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    match which {
        BenchCommand::Ingest {
            input,
            seconds,
            max_channels,
        } => bench::ingest::run_bench(&input, settings, seconds, max_channels).await,
        BenchCommand::Shots { clips_dir } => {
            bench::shots::run_bench(clips_dir.as_deref()).map(|_| ())
        }
        BenchCommand::CatalogAccuracy(a) => {
            bench::catalog_accuracy::run_bench(settings, &a).map(|_| ())
        }
        BenchCommand::LiveCues(a) => bench::live_cues::run_bench(settings, &a).await.map(|_| ()),
        BenchCommand::CatalogSpeed(a) => bench::catalog_speed::run_bench(settings, &a).map(|_| ()),
        BenchCommand::Capacity(a) => bench::capacity::run_bench(config, &a).await.map(|_| ()),
        BenchCommand::Glass(a) => bench::glass::run_bench(settings, &a).await.map(|_| ()),
        BenchCommand::Failover(a) => bench::failover::run_bench(&a, cancel).await,
        BenchCommand::Soak(a) => bench::soak::run_bench(settings, config, &a, cancel).await,
        BenchCommand::Fanout(a) => bench::fanout::run_bench(&a).map(|_| ()),
        BenchCommand::Hls(a) => bench::proxy_load::run_bench(&a).map(|_| ()),
        BenchCommand::Manifest { seconds_per_case } => bench::manifest::run_bench(seconds_per_case)
            .map(|_| ())
            .map_err(Into::into),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
