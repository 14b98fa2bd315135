//! The command line's subcommands that are more than a call into one module: `shots` and
//! `origin`. `main.rs` parses arguments and dispatches here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::file_origin::LiveOrigin;
use crate::frame::rfc3339_ms;
use crate::ingest::{self, IngestOptions, OnError, SourceSpec};
use crate::shots::{ShotDetector, ShotEvent};

#[derive(Debug, clap::Args)]
pub struct ShotsArgs {
    /// A video file, an HLS playlist URL (live or VOD) or an SRT URL.
    #[arg(long)]
    pub input: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// For live inputs: stop after this many seconds of media.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Pace a file at real time.
    #[arg(long)]
    pub realtime: bool,
}

#[derive(Debug, Serialize)]
pub struct ShotsReport {
    pub fps: f64,
    pub frames: u64,
    pub shots: Vec<ShotOut>,
}

#[derive(Debug, Serialize)]
pub struct ShotOut {
    pub index: u64,
    pub start_frame: u64,
    pub start_time: f64,
    pub end_frame: u64,
    pub end_time: f64,
    pub start_wallclock: String,
    pub end_wallclock: String,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Detect the shots of an input: a whole file, or `duration` seconds of a live stream.
pub async fn detect_shots(
    settings: &Settings,
    args: &ShotsArgs,
    cancel: CancellationToken,
) -> anyhow::Result<ShotsReport> {
    let spec = SourceSpec::parse(&args.input)?;
    let live = !matches!(spec, SourceSpec::File(_));
    if let Some(d) = args.duration {
        anyhow::ensure!(
            d.is_finite() && d > 0.0,
            "--duration must be a positive number of seconds"
        );
    }
    let height = match spec {
        SourceSpec::File(_) => Some(settings.shots.decode_height),
        _ => None,
    };
    let opts = IngestOptions {
        realtime: args.realtime,
        on_error: OnError::Fail,
        height,
        ..IngestOptions::default()
    };
    let source_cancel = cancel.child_token();
    let mut channel = ingest::start(
        "cli",
        spec,
        &settings.ingest,
        &settings.media,
        opts,
        source_cancel.clone(),
    )
    .await?;
    let mut detector = ShotDetector::new(&settings.shots);
    let mut shots: Vec<ShotOut> = Vec::new();
    let mut frames = 0u64;
    let mut last_pts = 0u64;
    let limit_ns = args.duration.map(|d| (d * 1e9) as u64);
    let on_events = |events: Vec<ShotEvent>, shots: &mut Vec<ShotOut>| {
        for e in events {
            if let ShotEvent::Ended(s) = e {
                let end_frame = s.end_frame.unwrap_or(s.start_frame);
                shots.push(ShotOut {
                    index: s.index,
                    start_frame: s.start_frame,
                    start_time: round3(s.start_pts_ns as f64 / 1e9),
                    end_frame,
                    end_time: round3(s.end_pts_ns.unwrap_or(s.start_pts_ns) as f64 / 1e9),
                    start_wallclock: rfc3339_ms(&s.start_wallclock),
                    end_wallclock: rfc3339_ms(&s.end_wallclock.unwrap_or(s.start_wallclock)),
                });
            }
        }
    };
    loop {
        let frame = tokio::select! {
            f = channel.frames.recv() => f,
            _ = cancel.cancelled() => None,
        };
        let Some(frame) = frame else { break };
        if limit_ns.is_some_and(|l| frame.pts_ns >= l) {
            break;
        }
        frames += 1;
        last_pts = frame.pts_ns;
        on_events(detector.push(&frame), &mut shots);
    }
    on_events(detector.finish(), &mut shots);
    source_cancel.cancel();
    drop(channel.frames);
    match tokio::time::timeout(Duration::from_secs(10), channel.task).await {
        Ok(Ok(Err(e))) => return Err(e).context("ingest failed"),
        Ok(Err(e)) => anyhow::bail!("ingest task failed: {e}"),
        _ => {}
    }
    if frames == 0 && !live {
        anyhow::bail!("{}: no video frames decoded", args.input);
    }
    let fps = if frames > 1 && last_pts > 0 {
        round3((frames - 1) as f64 / (last_pts as f64 / 1e9))
    } else {
        0.0
    };
    Ok(ShotsReport { fps, frames, shots })
}

pub fn print_shots(report: &ShotsReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    println!(
        "{} frames at {:.3} fps, {} shots",
        report.frames,
        report.fps,
        report.shots.len()
    );
    println!("| shot | start frame | end frame | start s | end s | start wall clock |");
    println!("|---:|---:|---:|---:|---:|---|");
    for s in &report.shots {
        println!(
            "| {} | {} | {} | {:.3} | {:.3} | {} |",
            s.index, s.start_frame, s.end_frame, s.start_time, s.end_time, s.start_wallclock
        );
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct OriginArgs {
    /// The video file to loop.
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long, default_value_t = 2.0)]
    pub segment_seconds: f64,
    /// Segments in the sliding window.
    #[arg(long, default_value_t = 6)]
    pub window: usize,
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Leave out EXT-X-PROGRAM-DATE-TIME (an origin the sidecar must clock itself).
    #[arg(long)]
    pub no_pdt: bool,
    /// Low-Latency HLS: publish each segment in parts of about this many seconds too
    /// (EXT-X-PART, blocking playlist reloads, preload hints).
    #[arg(long)]
    pub part_seconds: Option<f64>,
}

/// Build the looping origin from a file (encoding takes a few seconds).
pub fn build_origin(args: &OriginArgs) -> anyhow::Result<Arc<LiveOrigin>> {
    anyhow::ensure!(
        args.segment_seconds.is_finite() && (0.5..=30.0).contains(&args.segment_seconds),
        "--segment-seconds must be between 0.5 and 30"
    );
    let mut origin =
        LiveOrigin::from_file(&args.input, args.segment_seconds, args.window, !args.no_pdt)?;
    if let Some(p) = args.part_seconds {
        anyhow::ensure!(
            p.is_finite() && p >= 0.1 && p < args.segment_seconds,
            "--part-seconds must be at least 0.1 and less than --segment-seconds"
        );
        origin = origin.with_parts(p)?;
    }
    Ok(Arc::new(origin))
}

/// Serve the origin until cancelled.
pub async fn run_origin(args: &OriginArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let origin = tokio::task::spawn_blocking({
        let input = args.input.clone();
        let segment_seconds = args.segment_seconds;
        let window = args.window;
        let no_pdt = args.no_pdt;
        let part_seconds = args.part_seconds;
        move || {
            build_origin(&OriginArgs {
                input,
                segment_seconds,
                window,
                listen: "127.0.0.1:0".parse().expect("literal address"),
                no_pdt,
                part_seconds,
            })
        }
    })
    .await??;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!(
        "origin: http://{addr}/live/master.m3u8 (media playlist http://{addr}/live/index.m3u8), {} segments looping{}",
        origin.segment_count(),
        origin.part_target().map_or(String::new(), |t| format!(
            ", LL-HLS parts of up to {t:.3} s"
        ))
    );
    crate::http::file_origin::serve(listener, origin, async move { cancel.cancelled().await })
        .await?;
    Ok(())
}

/// `shopcue demo`: the whole product on one machine with one command.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Footage for the test origin (default: grocery_shots.mp4 from data/ or ../shared).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Where the test origin listens.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub origin_listen: SocketAddr,
    /// Where the sidecar listens (dashboard, player, playlists, feed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The demo catalog folder; built from the Grocery Store dataset when missing.
    #[arg(long, default_value = "data/demo-catalog")]
    pub catalog: PathBuf,
    /// The Grocery Store dataset (default: data/grocery or ../shared/data/grocery).
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<f64>,
}

fn first_existing(paths: &[&str]) -> Option<PathBuf> {
    paths.iter().map(PathBuf::from).find(|p| p.exists())
}

/// Test origin on real footage, the demo catalog (built on first run), the sidecar with
/// the in-memory bus; prints the URLs, runs until Ctrl-C (or `--duration`), stops cleanly.
pub async fn run_demo(
    settings: &Settings,
    args: &DemoArgs,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let input = match &args.input {
        Some(p) => p.clone(),
        None => first_existing(&[
            "data/footage/grocery_shots.mp4",
            "../shared/data/footage/grocery_shots.mp4",
        ])
        .context("no footage: run scripts/setup.sh, or pass --input FILE")?,
    };
    if !args.catalog.join("CURRENT").is_file() {
        let dataset = match &args.dataset {
            Some(d) => d.clone(),
            None => first_existing(&["data/grocery", "../shared/data/grocery"])
                .context("no Grocery Store dataset: run scripts/setup.sh, or pass --dataset DIR")?,
        };
        println!(
            "building the demo catalog in {} from {} (81 products; once, about a minute) ...",
            args.catalog.display(),
            dataset.display()
        );
        let (s, out) = (settings.clone(), args.catalog.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let models =
                crate::inference::Models::load(&s.inference).context("loading the models")?;
            let r = crate::catalog::grocery::build_catalog(
                &models, &s.catalog, &dataset, &out, None, true,
            )?;
            println!(
                "catalog: {} products, projection learned from {} labelled photos",
                r.products, r.train_photos
            );
            Ok(())
        })
        .await??;
    }
    let origin_args = OriginArgs {
        input,
        segment_seconds: 2.0,
        window: 6,
        listen: args.origin_listen,
        no_pdt: false,
        part_seconds: None,
    };
    let origin = tokio::task::spawn_blocking(move || build_origin(&origin_args)).await??;
    let listener = tokio::net::TcpListener::bind(args.origin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.origin_listen))?;
    let origin_url = format!("http://{}/live/master.m3u8", listener.local_addr()?);
    let origin_stop = CancellationToken::new();
    let origin_task = {
        let stop = origin_stop.clone();
        tokio::spawn(crate::http::file_origin::serve(
            listener,
            origin,
            async move { stop.cancelled().await },
        ))
    };
    let run = crate::sidecar::RunArgs {
        channels: vec![format!("grocery={origin_url}")],
        catalog: Some(args.catalog.clone()),
        listen: Some(args.listen.clone()),
        redis: None,
    };
    let sidecar_settings = run.apply(settings)?;
    let sidecar_cancel = CancellationToken::new();
    let sidecar = crate::sidecar::Sidecar::start(sidecar_settings, sidecar_cancel.clone()).await?;
    let a = sidecar.addr;
    println!();
    println!("shopcue demo is running (Ctrl-C stops it):");
    println!("  test origin        {origin_url}");
    println!("  dashboard          http://{a}/dashboard");
    println!("  demo player        http://{a}/demo/?channel=grocery&src=/hls/grocery/master.m3u8");
    println!("  rewritten playlist http://{a}/hls/grocery/master.m3u8");
    println!("  cue feed           ws://{a}/v1/channels/grocery/cues");
    println!("  metrics            http://{a}/metrics   status http://{a}/v1/status");
    println!();
    let deadline = args
        .duration
        .map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d.max(0.0)));
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {}
    }
    println!("stopping ...");
    let result = sidecar.shutdown().await;
    origin_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), origin_task).await;
    result?;
    println!("stopped cleanly");
    Ok(())
}
