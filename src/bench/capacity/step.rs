//! One step of the ramp: N live channels, each its own looping loopback origin (even
//! channels the grocery footage, odd ones the Intel footage), analysed by one real sidecar
//! started in this process; after a warm-up, one measured window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use shopcue::config::{ChannelSettings, Settings};
use shopcue::cue::CueEvent;
use shopcue::cuebus::CueBus;
use shopcue::file_origin::LiveOrigin;
use shopcue::sidecar::Sidecar;

use super::exposition::{Exposition, bucket_delta, quantile};
use super::procfs::{self, CpuSample, CpuSplit};
use super::truth::{self, CueStart, LoopTruth, Score};
use crate::bench::ingest::Rendition;

/// Cue starts whose media time is this close to the window's end are left out of the
/// score: their segment, fetch and analysis may not be done by then (3 segments).
pub const SCORE_MARGIN_S: f64 = 6.0;
/// Segments the origins keep in their playlists.
const ORIGIN_WINDOW: usize = 6;

/// The footage every step loops, encoded once.
pub struct Footage {
    pub grocery: Rendition,
    pub intel: Rendition,
    pub truth: LoopTruth,
}

/// How long each step runs, and where the origins are served.
pub struct StepPlan {
    pub warmup_s: f64,
    pub secs: f64,
    /// The bench's own runtime for the origins (threads named `bench-origin`), so their
    /// CPU is not the sidecar's.
    pub origins: tokio::runtime::Handle,
    /// Origins' phases spread over one segment (else all in phase).
    pub spread: bool,
}

/// Wall-time sums of the sidecar's stage histograms over the window, seconds.
#[derive(Debug, Clone, Default)]
pub struct Stages {
    pub fetch: f64,
    pub decode: f64,
    pub detect: f64,
    pub embed: f64,
    pub search: f64,
    /// One sampled frame: colour conversion + detect + embed + search.
    pub analysis: f64,
}

/// What one step measured.
#[derive(Debug, Clone, Default)]
pub struct StepRow {
    pub channels: usize,
    pub window_s: f64,
    pub cpu: CpuSplit,
    pub stages: Stages,
    pub samples: f64,
    pub analysed: f64,
    /// `None` when the build has no change gate (no `samples_reused` metric).
    pub reused: Option<f64>,
    pub dropped: f64,
    pub worst_drop_pct: f64,
    pub segments_missed: f64,
    pub max_lag_s: f64,
    pub glass_p50_s: Option<f64>,
    pub glass_p95_s: Option<f64>,
    /// Glass-to-cue p95 less each channel's segment discovery delay
    /// (`discovered_to_cue_seconds`): without the reload phase.
    pub found_p95_s: Option<f64>,
    /// Mean segment discovery delay (`segment_discovery_seconds`).
    pub discovery_mean_s: Option<f64>,
    /// Cue starts on the grocery channels against the ground truth.
    pub score: Score,
    /// Cue starts on the Intel channels (no catalog product is in that footage).
    pub intel_cues: usize,
    pub rss_mib: Option<f64>,
}

impl StepRow {
    /// CPU milliseconds per channel-second of `secs` CPU seconds.
    pub fn per_channel_ms(&self, secs: f64) -> f64 {
        secs * 1e3 / (self.channels.max(1) as f64 * self.window_s.max(1e-9))
    }
}

/// One channel of the bench and its looping origin.
pub(crate) struct BenchChannel {
    pub id: String,
    grocery: bool,
    origin: Arc<LiveOrigin>,
    /// The origin's multivariant playlist.
    pub url: String,
}

/// A metric's growth over the window: `(name, label filter) → after − before`.
type Delta<'a> = &'a dyn Fn(&str, &[(&str, &str)]) -> f64;

type Starts = Arc<Mutex<HashMap<String, Vec<(DateTime<Utc>, String)>>>>;

/// Runs `n` channels under `settings` and measures one window.
pub async fn run(
    footage: &Footage,
    plan: &StepPlan,
    settings: &Settings,
    n: usize,
) -> anyhow::Result<StepRow> {
    let stop = CancellationToken::new();
    let result = run_until(footage, plan, settings, n, &stop).await;
    stop.cancel();
    result
}

async fn run_until(
    footage: &Footage,
    plan: &StepPlan,
    settings: &Settings,
    n: usize,
    stop: &CancellationToken,
) -> anyhow::Result<StepRow> {
    let channels = start_origins(footage, &plan.origins, n, plan.spread, stop)?;
    let mut s = settings.clone();
    s.server.listen = "127.0.0.1:0".into();
    s.channels = channels
        .iter()
        .map(|c| ChannelSettings {
            id: c.id.clone(),
            url: c.url.clone(),
        })
        .collect();
    s.validate().context("step settings")?;
    let sidecar = Sidecar::start(s, CancellationToken::new())
        .await
        .context("starting the sidecar")?;
    let starts: Starts = Arc::default();
    for c in &channels {
        let (bus, id) = (sidecar.state.bus.clone(), c.id.clone());
        tokio::spawn(collect_starts(bus, id, starts.clone(), stop.clone()));
    }
    tokio::time::sleep(Duration::from_secs_f64(plan.warmup_s)).await;
    let measured = measure_window(&sidecar, plan.secs).await;
    stop.cancel();
    sidecar.shutdown().await.context("stopping the sidecar")?;
    let (a, b, max_lag_s) = measured?;
    let starts = starts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(row(
        n,
        &a,
        &b,
        max_lag_s,
        &channels,
        &starts,
        &footage.truth,
    ))
}

/// `n` looping origins served from `rt` until `stop`: even channels the grocery footage
/// (`grocery<i>`), odd ones the Intel footage (`intel<i>`).
pub(crate) fn start_origins(
    footage: &Footage,
    rt: &tokio::runtime::Handle,
    n: usize,
    spread: bool,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<BenchChannel>> {
    (0..n)
        .map(|i| {
            let grocery = i % 2 == 0;
            let r = if grocery {
                &footage.grocery
            } else {
                &footage.intel
            };
            // Spread: channel i's segment boundaries are i/n of a segment from channel 0's.
            let segment = r.segments.first().map_or(0.0, |s| s.duration);
            let phase = if spread {
                segment * i as f64 / n as f64
            } else {
                0.0
            };
            let origin = Arc::new(
                LiveOrigin::from_segments(
                    r.segments.clone(),
                    ORIGIN_WINDOW,
                    true,
                    r.width,
                    r.height,
                )
                .with_phase(phase),
            );
            let addr = serve_origin(rt, origin.clone(), stop.clone())?;
            Ok(BenchChannel {
                id: format!("{}{i}", if grocery { "grocery" } else { "intel" }),
                grocery,
                origin,
                url: format!("http://{addr}/live/master.m3u8"),
            })
        })
        .collect()
}

/// Serves `origin` on a loopback port from the bench's origin runtime.
fn serve_origin(
    rt: &tokio::runtime::Handle,
    origin: Arc<LiveOrigin>,
    stop: CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("origin listener")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    rt.spawn(async move {
        let served = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => {
                shopcue::http::file_origin::serve(l, origin, async move { stop.cancelled().await })
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = served {
            tracing::warn!(%addr, error = %e, "bench origin stopped");
        }
    });
    Ok(addr)
}

/// Every cue start published for `channel`: (cue start wall clock, product).
async fn collect_starts(
    bus: Arc<dyn CueBus>,
    channel: String,
    into: Starts,
    stop: CancellationToken,
) {
    let mut rx = match bus.subscribe(&channel).await {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!(%channel, error = %e, "capacity bench: no cue subscription");
            return;
        }
    };
    loop {
        let record = tokio::select! {
            _ = stop.cancelled() => return,
            r = rx.recv() => r,
        };
        match record {
            Ok(rec) => {
                if let CueEvent::Start(c) = &rec.event {
                    let mut g = into.lock().unwrap_or_else(|p| p.into_inner());
                    g.entry(channel.clone())
                        .or_default()
                        .push((c.start, c.product_id.clone()));
                }
            }
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(%channel, missed = n, "capacity bench: cue subscriber lagged")
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// The process's CPU, the sidecar's metrics and the wall clock at one moment.
struct Snapshot {
    cpu: CpuSample,
    metrics: Exposition,
    wall: DateTime<Utc>,
    at: Instant,
}

fn snapshot(sidecar: &Sidecar) -> anyhow::Result<Snapshot> {
    Ok(Snapshot {
        metrics: Exposition::parse(&sidecar.state.metrics.encode()),
        cpu: procfs::cpu_sample()?,
        wall: Utc::now(),
        at: Instant::now(),
    })
}

/// Snapshots at both ends of a `secs` window, and the largest lag behind the live edge
/// any channel showed in it (polled every 250 ms).
async fn measure_window(sidecar: &Sidecar, secs: f64) -> anyhow::Result<(Snapshot, Snapshot, f64)> {
    let a = snapshot(sidecar)?;
    let mut max_lag: f64 = 0.0;
    while a.at.elapsed().as_secs_f64() < secs {
        for ch in &sidecar.state.channels {
            if let Some(l) = ch.ingest_stats().lag_seconds() {
                max_lag = max_lag.max(l);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok((a, snapshot(sidecar)?, max_lag))
}

fn row(
    n: usize,
    a: &Snapshot,
    b: &Snapshot,
    max_lag_s: f64,
    channels: &[BenchChannel],
    starts: &HashMap<String, Vec<(DateTime<Utc>, String)>>,
    truth: &LoopTruth,
) -> StepRow {
    let d = |name: &str, f: &[(&str, &str)]| {
        b.metrics.sum(name, f).unwrap_or(0.0) - a.metrics.sum(name, f).unwrap_or(0.0)
    };
    let reused = b
        .metrics
        .sum("shopcue_samples_reused_total", &[])
        .map(|after| {
            after
                - a.metrics
                    .sum("shopcue_samples_reused_total", &[])
                    .unwrap_or(0.0)
        });
    let window =
        |name: &str| bucket_delta(&a.metrics.buckets(name, &[]), &b.metrics.buckets(name, &[]));
    let glass = window("shopcue_glass_to_cue_seconds");
    let found = window("shopcue_discovered_to_cue_seconds");
    let discoveries = d("shopcue_segment_discovery_seconds_count", &[]);
    let discovery_mean_s =
        (discoveries > 0.0).then(|| d("shopcue_segment_discovery_seconds_sum", &[]) / discoveries);
    let (score, intel_cues) = score_channels(a, b, channels, starts, truth);
    StepRow {
        channels: n,
        window_s: (b.at - a.at).as_secs_f64(),
        cpu: procfs::split(&a.cpu, &b.cpu),
        stages: stages(&d),
        samples: d("shopcue_samples_total", &[]),
        analysed: d("shopcue_analysis_seconds_count", &[]),
        reused,
        dropped: d("shopcue_dropped_total", &[("kind", "samples")]),
        worst_drop_pct: worst_drop_pct(&d, channels),
        segments_missed: d("shopcue_segments_total", &[("kind", "skipped")])
            + d("shopcue_segments_total", &[("kind", "lost")]),
        max_lag_s,
        glass_p50_s: quantile(&glass, 0.5),
        glass_p95_s: quantile(&glass, 0.95),
        found_p95_s: quantile(&found, 0.95),
        discovery_mean_s,
        score,
        intel_cues,
        rss_mib: procfs::rss_mib(),
    }
}

fn stages(d: Delta) -> Stages {
    Stages {
        fetch: d("shopcue_segment_fetch_seconds_sum", &[]),
        decode: d("shopcue_segment_decode_seconds_sum", &[]),
        detect: d("shopcue_inference_seconds_sum", &[("model", "detector")]),
        embed: d("shopcue_inference_seconds_sum", &[("model", "embedder")]),
        search: d("shopcue_search_seconds_sum", &[]),
        analysis: d("shopcue_analysis_seconds_sum", &[]),
    }
}

/// The largest share of its samples any one channel dropped, %.
fn worst_drop_pct(d: Delta, channels: &[BenchChannel]) -> f64 {
    channels
        .iter()
        .map(|c| {
            let id = c.id.as_str();
            let samples = d("shopcue_samples_total", &[("channel", id)]);
            let dropped = d(
                "shopcue_dropped_total",
                &[("channel", id), ("kind", "samples")],
            );
            if samples > 0.0 {
                100.0 * dropped / samples
            } else {
                0.0
            }
        })
        .fold(0.0, f64::max)
}

/// Grocery channels' cue starts against the truth over the window (media time), and the
/// number of cue starts on the Intel channels in it.
fn score_channels(
    a: &Snapshot,
    b: &Snapshot,
    channels: &[BenchChannel],
    starts: &HashMap<String, Vec<(DateTime<Utc>, String)>>,
    truth: &LoopTruth,
) -> (Score, usize) {
    let (mut score, mut intel) = (Score::default(), 0);
    for c in channels {
        // Media time 0 is the PDT of the origin's first segment.
        let Some(epoch) = c.origin.pdt_of(0) else {
            continue;
        };
        let secs = |t: DateTime<Utc>| (t - epoch).num_microseconds().unwrap_or(0) as f64 / 1e6;
        let window = (secs(a.wall), secs(b.wall) - SCORE_MARGIN_S);
        let cues: Vec<CueStart> = starts
            .get(&c.id)
            .into_iter()
            .flatten()
            .map(|(t, p)| CueStart {
                t: secs(*t),
                product: p.clone(),
            })
            .collect();
        if c.grocery {
            score.add(&truth::score(truth, &cues, window));
        } else {
            intel += cues
                .iter()
                .filter(|q| q.t >= window.0 && q.t < window.1)
                .count();
        }
    }
    (score, intel)
}
