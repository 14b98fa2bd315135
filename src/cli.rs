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
use crate::frame::rfc3339_ms;
use crate::ingest::{self, IngestOptions, OnError, SourceSpec};
use crate::origin::LiveOrigin;
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
}

/// Build the looping origin from a file (encoding takes a few seconds).
pub fn build_origin(args: &OriginArgs) -> anyhow::Result<Arc<LiveOrigin>> {
    anyhow::ensure!(
        args.segment_seconds.is_finite() && (0.5..=30.0).contains(&args.segment_seconds),
        "--segment-seconds must be between 0.5 and 30"
    );
    let origin =
        LiveOrigin::from_file(&args.input, args.segment_seconds, args.window, !args.no_pdt)?;
    Ok(Arc::new(origin))
}

/// Serve the origin until cancelled.
pub async fn run_origin(args: &OriginArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let origin = tokio::task::spawn_blocking({
        let input = args.input.clone();
        let segment_seconds = args.segment_seconds;
        let window = args.window;
        let no_pdt = args.no_pdt;
        move || {
            build_origin(&OriginArgs {
                input,
                segment_seconds,
                window,
                listen: "127.0.0.1:0".parse().expect("literal address"),
                no_pdt,
            })
        }
    })
    .await??;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!(
        "origin: http://{addr}/live/master.m3u8 (media playlist http://{addr}/live/index.m3u8), {} segments looping",
        origin.segment_count()
    );
    crate::http::origin::serve(listener, origin, async move { cancel.cancelled().await }).await?;
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Footage to loop (default: the shared grocery clip).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Address of the test origin.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub origin_listen: SocketAddr,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    pub duration: Option<f64>,
}

/// The demo: the test origin on real footage, and the live shot detector following it,
/// printing each shot as it is found.
pub async fn run_demo(
    settings: &Settings,
    args: &DemoArgs,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let input = match &args.input {
        Some(p) => p.clone(),
        None => [
            "data/footage/grocery_shots.mp4",
            "../shared/data/footage/grocery_shots.mp4",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("no footage: run scripts/setup.sh, or pass --input FILE")?,
    };
    let origin_args = OriginArgs {
        input,
        segment_seconds: 2.0,
        window: 6,
        listen: args.origin_listen,
        no_pdt: false,
    };
    let origin = tokio::task::spawn_blocking(move || build_origin(&origin_args)).await??;
    let listener = tokio::net::TcpListener::bind(args.origin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.origin_listen))?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}/live/master.m3u8");
    println!("test origin: {url}");
    let server_cancel = cancel.clone();
    tokio::spawn(crate::http::origin::serve(listener, origin, async move {
        server_cancel.cancelled().await
    }));
    let mut channel = ingest::start(
        "demo",
        SourceSpec::parse(&url)?,
        &settings.ingest,
        &settings.media,
        IngestOptions::default(),
        cancel.clone(),
    )
    .await?;
    let mut detector = ShotDetector::new(&settings.shots);
    let deadline = args
        .duration
        .map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d));
    loop {
        let frame = tokio::select! {
            f = channel.frames.recv() => f,
            _ = cancel.cancelled() => None,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => None,
        };
        let Some(frame) = frame else { break };
        for e in detector.push(&frame) {
            if let ShotEvent::Started(s) = e {
                let lag = (chrono::Utc::now() - s.start_wallclock).num_milliseconds();
                println!(
                    "shot {:>4} starts at frame {:>6}  {}  (found {} ms after it was live; lag behind live edge {:.1} s)",
                    s.index,
                    s.start_frame,
                    rfc3339_ms(&s.start_wallclock),
                    lag,
                    channel.stats.lag_seconds().unwrap_or(0.0)
                );
            }
        }
    }
    cancel.cancel();
    Ok(())
}
