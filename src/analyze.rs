//! `shopcue analyze`: batch mode. A file or VOD playlist goes through the same
//! [`Pipeline`] as a live channel (decode → shots → sampling → detect/embed/search →
//! per-shot aggregation), as fast as the machine allows and without dropping samples,
//! and comes out as one shoppable-metadata JSON document: per-frame items, per-shot
//! items and the cues with product details. `docs/shoppable-json.md` is its schema.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Analyzer, Catalog};
use crate::config::Settings;
use crate::cue::{Cue, CueEvent};
use crate::frame::rfc3339_ms;
use crate::inference::Models;
use crate::ingest::{self, IngestOptions, OnError, SourceSpec};
use crate::matching::{Judgement, Rules};
use crate::pipeline::{Pipeline, PipelineConfig, PipelineOutput, product_summary};
use crate::shots::ShotEvent;

/// Version of the document's layout.
pub const SCHEMA: &str = "shopcue-shoppable/1";

#[derive(Debug, Clone, clap::Args)]
pub struct AnalyzeArgs {
    /// Video file, or an HLS VOD playlist URL.
    #[arg(long)]
    pub input: String,
    /// Catalog folder (from `shopcue catalog build`).
    #[arg(long, value_name = "DIR")]
    pub catalog: PathBuf,
    /// Where to write the JSON document (`-`: standard output).
    #[arg(long, value_name = "FILE.json")]
    pub out: PathBuf,
    /// Channel name put into cue ids.
    #[arg(long, default_value = "batch")]
    pub channel: String,
}

/// The whole document.
#[derive(Debug, Clone, Serialize)]
pub struct Shoppable {
    pub schema: &'static str,
    pub source: SourceInfo,
    pub catalog: CatalogInfo,
    pub shots: Vec<ShotItems>,
    pub frames: Vec<FrameItems>,
    pub cues: Vec<Cue>,
    pub stats: RunStats,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    pub input: String,
    pub frames: u64,
    pub fps: f64,
    pub duration_s: f64,
    /// Wall clock given to the first frame (PDT of a VOD playlist, else the run's start).
    pub start_wallclock: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CatalogInfo {
    pub dir: String,
    pub products: usize,
    pub embedder: String,
}

/// One shot and the products shown in it (its cues).
#[derive(Debug, Clone, Serialize)]
pub struct ShotItems {
    pub shot_id: u64,
    pub start_frame: u64,
    pub end_frame: u64,
    pub start_s: f64,
    pub end_s: f64,
    pub boundary: crate::shots::Boundary,
    pub items: Vec<ShotItem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShotItem {
    pub cue_id: String,
    pub product_id: String,
    pub score: f32,
    /// Seconds from the start of the video.
    pub start_s: f64,
    pub end_s: f64,
    /// Normalised boxes over time (`t` is the wall clock; `t_s` seconds into the video).
    pub boxes: Vec<TimedBox>,
    pub product: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimedBox {
    pub t_s: f64,
    pub bbox: [f32; 4],
}

/// One analysed (sampled) frame and what was found in it.
#[derive(Debug, Clone, Serialize)]
pub struct FrameItems {
    pub frame: u64,
    pub timestamp_s: f64,
    pub timestamp_ms: u64,
    pub shot_id: u64,
    pub items: Vec<FrameItem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FrameItem {
    pub product_id: String,
    pub score: f32,
    /// Normalised `[x, y, w, h]`.
    pub bbox: [f32; 4],
    /// Detector class (`frame`: the whole picture).
    pub label: String,
    pub detector_score: f32,
    /// Whether it passed the matching thresholds (similarity, margin, class gating).
    pub confident: bool,
    /// Other candidates for the same region, best first.
    pub alternatives: Vec<(String, f32)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunStats {
    pub samples: u64,
    /// Samples inference ran on.
    pub analysed: u64,
    /// Samples that reused the last analysed sample of their shot (`matching.change_gate`).
    pub reused: u64,
    pub inference_errors: u64,
    pub elapsed_s: f64,
    /// Processing time per second of video (below 1: faster than real time).
    pub realtime_factor: f64,
}

/// Runs the analysis; the caller writes the document.
pub async fn analyze(
    settings: &Settings,
    args: &AnalyzeArgs,
    cancel: CancellationToken,
) -> anyhow::Result<Shoppable> {
    let started = Instant::now();
    let run = analyze_outputs(settings, args, cancel).await?;
    Ok(assemble(
        settings,
        args,
        &run.catalog,
        run.outputs,
        run.frames,
        started.elapsed(),
    ))
}

/// What the pipeline gave for one input, before it becomes a document: every output in
/// order (shot events, analysed samples with their detections, cue events).
pub struct AnalysisRun {
    pub outputs: Vec<PipelineOutput>,
    pub catalog: Arc<Catalog>,
    pub frames: u64,
}

/// Runs the pipeline over the input in lossless batch mode and keeps its outputs (the
/// cue benchmark replays the samples through other matching settings).
pub async fn analyze_outputs(
    settings: &Settings,
    args: &AnalyzeArgs,
    cancel: CancellationToken,
) -> anyhow::Result<AnalysisRun> {
    crate::config::validate_channel_id(&args.channel)
        .map_err(|why| anyhow::anyhow!("--channel: {why}"))?;
    let spec = SourceSpec::parse(&args.input)?;
    anyhow::ensure!(
        !matches!(spec, SourceSpec::Srt(_)),
        "--input: batch mode reads files and VOD playlists, not SRT streams"
    );
    let (analyzer, catalog) = {
        let s = settings.clone();
        let dir = args.catalog.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let models = Models::load(&s.inference).context("loading the models")?;
            let catalog = Arc::new(
                Catalog::open(&dir, &s.catalog)
                    .with_context(|| format!("opening the catalog {}", dir.display()))?,
            );
            Ok((
                Analyzer::new(&models, catalog.clone(), &s.catalog)?,
                catalog,
            ))
        })
        .await??
    };
    let source_cancel = cancel.child_token();
    let source = ingest::start(
        &args.channel,
        spec,
        &settings.ingest,
        &settings.media,
        IngestOptions {
            on_error: OnError::Fail,
            ..IngestOptions::default()
        },
        source_cancel.clone(),
    )
    .await?;
    let outputs: Arc<Mutex<Vec<PipelineOutput>>> = Arc::default();
    let sink = {
        let outputs = outputs.clone();
        Box::new(move |o: PipelineOutput| outputs.lock().unwrap_or_else(|p| p.into_inner()).push(o))
    };
    let pipeline = Pipeline::spawn(
        PipelineConfig {
            channel: args.channel.clone(),
            shots: settings.shots.clone(),
            matching: settings.matching.clone(),
            lossless: true,
            evidence: None,
            controls: None,
            epoch: 0,
        },
        source.frames,
        Some(analyzer),
        None,
        None,
        sink,
    )?;
    let mut task = source.task;
    let ingest_result = tokio::select! {
        r = &mut task => r,
        _ = cancel.cancelled() => {
            source_cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), &mut task).await;
            anyhow::bail!("cancelled");
        }
    };
    let snapshot = tokio::task::spawn_blocking(move || pipeline.join()).await??;
    ingest_result
        .context("ingest task")?
        .with_context(|| format!("reading {}", args.input))?;
    anyhow::ensure!(
        snapshot.frames > 0,
        "{}: no video frames decoded",
        args.input
    );
    let outputs = std::mem::take(&mut *outputs.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(AnalysisRun {
        outputs,
        catalog,
        frames: snapshot.frames,
    })
}

/// Builds the document from the pipeline's outputs (pure).
pub fn assemble(
    settings: &Settings,
    args: &AnalyzeArgs,
    catalog: &Catalog,
    outputs: Vec<PipelineOutput>,
    frames: u64,
    elapsed: Duration,
) -> Shoppable {
    let rules = Rules::new(
        &settings
            .matching
            .for_scale(crate::matching::SimilarityScale::of(
                catalog.snapshot().projection().is_some(),
                catalog.centres_queries(),
            )),
    );
    let mut run = Collected::default();
    for o in outputs {
        run.take(o, &rules);
    }
    let origin = run.origin.unwrap_or_else(Utc::now);
    attach_cues(&mut run.shots, &run.cues, origin, catalog);
    let (duration_s, fps) = duration_and_fps(frames, run.last_pts_ns);
    let manifest = catalog.manifest();
    Shoppable {
        schema: SCHEMA,
        source: SourceInfo {
            input: args.input.clone(),
            frames,
            fps,
            duration_s: (duration_s * 1000.0).round() / 1000.0,
            start_wallclock: rfc3339_ms(&origin),
        },
        catalog: CatalogInfo {
            dir: args.catalog.display().to_string(),
            products: catalog.snapshot().len(),
            embedder: manifest.embedder,
        },
        stats: RunStats {
            samples: run.samples,
            analysed: run.analysed,
            reused: run.reused,
            inference_errors: run.errors,
            elapsed_s: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            realtime_factor: if duration_s > 0.0 {
                ((elapsed.as_secs_f64() / duration_s) * 1000.0).round() / 1000.0
            } else {
                0.0
            },
        },
        shots: run.shots,
        frames: run.frames,
        cues: run.cues,
    }
}

/// Nanoseconds of media time as seconds, to the millisecond.
fn secs(ns: u64) -> f64 {
    (ns as f64 / 1e6).round() / 1e3
}

/// What the pipeline's outputs say, gathered in order.
#[derive(Default)]
struct Collected {
    /// The wall clock of media time 0 (from the first shot).
    origin: Option<DateTime<Utc>>,
    shots: Vec<ShotItems>,
    frames: Vec<FrameItems>,
    /// Cues as they ended.
    cues: Vec<Cue>,
    samples: u64,
    analysed: u64,
    reused: u64,
    errors: u64,
    /// The end of the last shot, media time.
    last_pts_ns: u64,
}

impl Collected {
    /// Take one output: a shot, a sample with its items, or a cue that ended.
    fn take(&mut self, o: PipelineOutput, rules: &Rules) {
        match o {
            PipelineOutput::Shot(ShotEvent::Started(s)) => {
                self.origin.get_or_insert(
                    s.start_wallclock - chrono::Duration::nanoseconds(s.start_pts_ns as i64),
                );
            }
            PipelineOutput::Shot(ShotEvent::Ended(s)) => {
                let end_ns = s.end_pts_ns.unwrap_or(s.start_pts_ns);
                self.last_pts_ns = self.last_pts_ns.max(end_ns);
                self.shots.push(ShotItems {
                    shot_id: s.index,
                    start_frame: s.start_frame,
                    end_frame: s.end_frame.unwrap_or(s.start_frame),
                    start_s: secs(s.start_pts_ns),
                    end_s: secs(end_ns),
                    boundary: s.boundary,
                    items: Vec::new(),
                });
            }
            PipelineOutput::Sample(outcome) => {
                self.samples += 1;
                if outcome.error.is_some() {
                    self.errors += 1;
                } else if outcome.reused {
                    self.reused += 1;
                } else {
                    self.analysed += 1;
                }
                self.frames.push(frame_items(&outcome, rules));
            }
            PipelineOutput::Cue {
                event: CueEvent::End(c),
                ..
            } => self.cues.push(c),
            PipelineOutput::Cue { .. } => {}
        }
    }
}

/// One analysed sample's items: the best candidate of each detection, judged by `rules`.
fn frame_items(outcome: &crate::pipeline::SampleOutcome, rules: &Rules) -> FrameItems {
    let items = outcome
        .detections
        .iter()
        .filter_map(|d| {
            let (best, score) = d.candidates.first()?.clone();
            let confident = matches!(rules.judge(d), Judgement::Confident { .. });
            Some(FrameItem {
                product_id: best,
                score,
                bbox: d.bbox,
                label: d.class_name.clone(),
                detector_score: d.det_score,
                confident,
                alternatives: d.candidates.iter().skip(1).cloned().collect(),
            })
        })
        .collect();
    FrameItems {
        frame: outcome.ticket.frame_index,
        timestamp_s: secs(outcome.ticket.pts_ns),
        timestamp_ms: outcome.ticket.pts_ns / 1_000_000,
        shot_id: outcome.ticket.shot_index,
        items,
    }
}

/// Each cue becomes an item of its shot, its times in seconds from `origin`, with the
/// product's details (from the cue, else the catalog).
fn attach_cues(shots: &mut [ShotItems], cues: &[Cue], origin: DateTime<Utc>, catalog: &Catalog) {
    let at = |t: DateTime<Utc>| (t - origin).num_milliseconds().max(0) as f64 / 1e3;
    for c in cues {
        let Some(shot) = shots.iter_mut().find(|s| s.shot_id == c.shot) else {
            continue;
        };
        shot.items.push(ShotItem {
            cue_id: c.id.clone(),
            product_id: c.product_id.clone(),
            score: c.score,
            start_s: at(c.start),
            end_s: at(c.end.unwrap_or(c.start)),
            boxes: c
                .boxes
                .iter()
                .map(|b| TimedBox {
                    t_s: at(b.t),
                    bbox: [b.x, b.y, b.w, b.h],
                })
                .collect(),
            product: c
                .product
                .clone()
                .or_else(|| catalog.product(&c.product_id).map(|p| product_summary(&p))),
        });
    }
}

/// The video's duration (the last shot's end plus one frame) and frame rate, from its
/// frame count and the last shot's end; zero when they cannot tell.
fn duration_and_fps(frames: u64, last_pts_ns: u64) -> (f64, f64) {
    let measurable = frames > 1 && last_pts_ns > 0;
    let duration_s = secs(last_pts_ns)
        + if measurable {
            last_pts_ns as f64 / 1e9 / (frames - 1) as f64
        } else {
            0.0
        };
    let fps = if measurable {
        ((frames - 1) as f64 / (last_pts_ns as f64 / 1e9) * 1000.0).round() / 1000.0
    } else {
        0.0
    };
    (duration_s, fps)
}

/// Writes the document (`-`: standard output), atomically for files.
pub fn write(doc: &Shoppable, out: &Path) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(doc)?;
    if out.as_os_str() == "-" {
        println!("{text}");
        return Ok(());
    }
    let tmp = out.with_extension("json.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
