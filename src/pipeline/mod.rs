//! One channel's analysis, from decoded frames to cue events: the same code path for the
//! live sidecar (`shopcue run`) and batch mode (`shopcue analyze`).
//!
//! Two threads per channel:
//!
//! * the **frame thread** takes every decoded frame, runs the shot detector on it, and
//!   hands the frame to the [`Sampler`] once the detector has had the chance to announce a
//!   hard cut at it (frames wait [`ShotDetector::cut_lookahead_frames`] frames, or until
//!   the source pauses for [`IDLE_RELEASE`], so the last frames of a live segment are not
//!   held until the next segment arrives). Shot events and sampled frames go, in order,
//!   to the [`WorkQueue`]: bounded, drop-oldest for samples, so a live channel never falls
//!   behind its live edge because inference is slow;
//! * the **inference thread** runs detect → crop → embed → search
//!   ([`catalog::Analyzer`]) on each sampled frame, feeds the results and the shot events
//!   to the [`CueBuilder`], fills in the product details, and hands every [`PipelineOutput`] to
//!   the sink (the sidecar publishes cue events on the bus; batch mode collects them).
//!
//! The pipeline reports how far it has analysed to the ingest's
//! [`AnalysisProgress`] (the HLS proxy's hold-back) and observes its stage latencies into
//! the channel's [`ChannelMetrics`].
//!
//! Known limit: a gradual transition is announced up to
//! [`ShotDetector::lookahead_frames`] frames late; samples taken inside it before the
//! announcement count for the previous shot.

pub mod work;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::catalog::reuse::{RegionMemory, ReuseSettings};
use crate::catalog::{Analyzer, Product};
use crate::cue::{BoxSample, CueEvent};
use crate::frame::{Frame, I420Image};
use crate::inference::{BBox, RgbImage};
use crate::matching::gate::{ChangeGate, Decision, Thumbnail};
use crate::matching::{
    CueBuilder, EvidenceStore, MatchedDetection, MatchingSettings, SampleResult, SampleTicket,
    Sampler, SimilarityScale, WHOLE_FRAME_CLASS, fill_products,
};
use crate::metrics::ChannelMetrics;
use crate::operator::ChannelControls;
use crate::progress::AnalysisProgress;
use crate::shots::{ShotConfig, ShotDetector, ShotEvent};

pub use work::{WorkItem, WorkQueue};

/// A source quiet for this long releases the frames held for the cut look-ahead.
pub const IDLE_RELEASE: Duration = Duration::from_millis(150);

/// Errors of the pipeline module.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("channel {channel}: cannot start the {what} thread: {source}")]
    Thread {
        channel: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("channel {channel}: the {what} thread panicked")]
    Panicked { channel: String, what: &'static str },
}

/// What the pipeline needs to know.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub channel: String,
    pub shots: ShotConfig,
    pub matching: MatchingSettings,
    /// Batch mode: every sample is analysed (the frame thread waits for inference)
    /// instead of the oldest being dropped when inference falls behind.
    pub lossless: bool,
    /// Where cues leave their evidence for operator feedback (`None`: none kept, and
    /// query embeddings are not carried past inference).
    pub evidence: Option<Arc<EvidenceStore>>,
    /// The operator's controls of the channel (its live similarity threshold).
    pub controls: Option<Arc<ChannelControls>>,
    /// The channel's lease epoch in a fleet (0: not leased); part of every cue id, so the
    /// cues of two owners never share an id.
    pub epoch: u64,
}

/// Everything the pipeline produces, in order, from the inference thread.
#[derive(Debug, Clone)]
pub enum PipelineOutput {
    /// A shot started or ended.
    Shot(ShotEvent),
    /// One sampled frame was analysed.
    Sample(SampleOutcome),
    /// A cue started, changed or ended; `trigger` is the wall clock of the sampled frame
    /// that caused it (glass-to-cue latency is measured from it).
    Cue {
        event: CueEvent,
        trigger: DateTime<Utc>,
    },
}

/// One analysed frame: what inference saw, before judging.
#[derive(Debug, Clone)]
pub struct SampleOutcome {
    pub ticket: SampleTicket,
    pub detections: Vec<MatchedDetection>,
    /// Detect + embed + search time.
    pub elapsed: Duration,
    /// Set when inference failed on this frame (nothing was detected then).
    pub error: Option<String>,
    /// The picture barely changed since the last analysed sample of its shot: these are
    /// that sample's detections (`matching.change_gate`).
    pub reused: bool,
}

/// Where the outputs go; called on the inference thread, must not block for long.
pub type OutputSink = Box<dyn FnMut(PipelineOutput) + Send>;

/// Counters of a running pipeline (for the status API and tests).
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub frames: AtomicU64,
    pub shots: AtomicU64,
    pub samples: AtomicU64,
    pub samples_dropped: AtomicU64,
    pub analysed: AtomicU64,
    /// Samples that reused the last analysis of their shot (change gate).
    pub reused: AtomicU64,
    /// Regions of analysed samples that reused an embedding (change gate).
    pub regions_reused: AtomicU64,
    /// Regions of analysed samples embedded by their first view alone
    /// (`catalog.query_views_floor_margin` and the other query-view limits).
    pub regions_first_view: AtomicU64,
    pub inference_errors: AtomicU64,
    pub cue_events: AtomicU64,
    pub last_analysis_us: AtomicU64,
    /// Milliseconds since the epoch of the newest frame taken in.
    pub newest_frame_ms: AtomicU64,
}

/// A snapshot of [`PipelineStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PipelineSnapshot {
    pub frames: u64,
    pub shots: u64,
    pub samples: u64,
    pub samples_dropped: u64,
    pub analysed: u64,
    pub reused: u64,
    pub regions_reused: u64,
    pub regions_first_view: u64,
    pub inference_errors: u64,
    pub cue_events: u64,
    pub last_analysis_ms: f64,
}

impl PipelineStats {
    pub fn snapshot(&self) -> PipelineSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PipelineSnapshot {
            frames: l(&self.frames),
            shots: l(&self.shots),
            samples: l(&self.samples),
            samples_dropped: l(&self.samples_dropped),
            analysed: l(&self.analysed),
            reused: l(&self.reused),
            regions_reused: l(&self.regions_reused),
            regions_first_view: l(&self.regions_first_view),
            inference_errors: l(&self.inference_errors),
            cue_events: l(&self.cue_events),
            last_analysis_ms: l(&self.last_analysis_us) as f64 / 1000.0,
        }
    }
}

/// A running pipeline; [`Pipeline::join`] waits for it to drain after its frame source
/// ends (cancel the source to stop it).
pub struct Pipeline {
    channel: String,
    pub stats: Arc<PipelineStats>,
    frame_thread: std::thread::JoinHandle<()>,
    inference_thread: std::thread::JoinHandle<()>,
}

impl Pipeline {
    /// Start the threads. `analyzer`: `None` runs shot detection only (no cues).
    pub fn spawn(
        config: PipelineConfig,
        frames: mpsc::Receiver<Frame>,
        analyzer: Option<Analyzer>,
        metrics: Option<ChannelMetrics>,
        progress: Option<Arc<AnalysisProgress>>,
        sink: OutputSink,
    ) -> Result<Self, PipelineError> {
        let stats = Arc::new(PipelineStats::default());
        let queue = Arc::new(if config.lossless {
            WorkQueue::lossless(config.matching.queue_capacity)
        } else {
            WorkQueue::new(config.matching.queue_capacity)
        });
        if let Some(p) = &progress {
            p.gate();
        }
        let thread_err = |what: &'static str| {
            let channel = config.channel.clone();
            move |source| PipelineError::Thread {
                channel,
                what,
                source,
            }
        };
        // A catalog's thresholds follow its similarity scale (learned, raw or centred).
        let scale = similarity_scale(analyzer.as_ref());
        let matching = config.matching.for_scale(scale);
        let inference_thread = {
            let ctx = InferenceCtx {
                builder: CueBuilder::new(config.channel.clone(), &matching)
                    .with_epoch(config.epoch),
                top_k: config.matching.top_k.max(1),
                analyzer,
                queue: queue.clone(),
                stats: stats.clone(),
                metrics: metrics.clone(),
                progress: progress.clone(),
                sink,
                evidence: config.evidence.clone(),
                matching: config.matching.clone(),
                scale,
                controls: config.controls.clone(),
                threshold: None,
                gate: ChangeGate::new(config.matching.gate()),
                last_result: Vec::new(),
                regions: RegionMemory::new(region_reuse(&config.matching)),
            };
            std::thread::Builder::new()
                .name(format!("infer-{}", config.channel))
                .spawn(move || ctx.run())
                .map_err(thread_err("inference"))?
        };
        let frame_thread = {
            let ctx = FrameCtx {
                detector: ShotDetector::new(&config.shots),
                sampler: Sampler::new(&config.matching),
                held: VecDeque::new(),
                queue: queue.clone(),
                stats: stats.clone(),
                metrics,
                progress,
                frame_step: chrono::Duration::milliseconds(40),
                last_wallclock: None,
            };
            let spawned = std::thread::Builder::new()
                .name(format!("frames-{}", config.channel))
                .spawn(move || ctx.run(frames));
            match spawned {
                Ok(h) => h,
                Err(e) => {
                    queue.close();
                    return Err(thread_err("frame")(e));
                }
            }
        };
        Ok(Self {
            channel: config.channel,
            stats,
            frame_thread,
            inference_thread,
        })
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    pub fn is_finished(&self) -> bool {
        self.frame_thread.is_finished() && self.inference_thread.is_finished()
    }

    /// Whether a thread is done (before its source ended: it panicked).
    pub fn any_finished(&self) -> bool {
        self.frame_thread.is_finished() || self.inference_thread.is_finished()
    }

    /// Wait (blocking) until both threads are done.
    pub fn join(self) -> Result<PipelineSnapshot, PipelineError> {
        let panicked = |what| PipelineError::Panicked {
            channel: self.channel.clone(),
            what,
        };
        let frames = self.frame_thread.join();
        let inference = self.inference_thread.join();
        frames.map_err(|_| panicked("frame"))?;
        inference.map_err(|_| panicked("inference"))?;
        Ok(self.stats.snapshot())
    }
}

struct FrameCtx {
    detector: ShotDetector,
    sampler: Sampler,
    /// Frames waiting for the cut look-ahead.
    held: VecDeque<Frame>,
    queue: Arc<WorkQueue>,
    stats: Arc<PipelineStats>,
    metrics: Option<ChannelMetrics>,
    progress: Option<Arc<AnalysisProgress>>,
    /// Interval between the last two frames (how far a frame's "end" lies after it).
    frame_step: chrono::Duration,
    last_wallclock: Option<DateTime<Utc>>,
}

impl FrameCtx {
    fn run(mut self, mut frames: mpsc::Receiver<Frame>) {
        let hold = self.detector.cut_lookahead_frames() as usize;
        loop {
            let frame = match frames.try_recv() {
                Ok(f) => Some(f),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // The source paused (between live segments): nothing more is coming
                    // soon, so release what is held rather than wait for the next segment.
                    match recv_timeout(&mut frames, IDLE_RELEASE) {
                        FrameRecv::Frame(f) => Some(f),
                        FrameRecv::Closed => None,
                        FrameRecv::Idle => {
                            self.release_all();
                            frames.blocking_recv()
                        }
                    }
                }
            };
            let Some(frame) = frame else { break };
            self.take(frame, hold);
        }
        for e in self.detector.finish() {
            self.on_shot_event(e);
        }
        self.release_all();
        self.queue.close();
    }

    fn take(&mut self, frame: Frame, hold: usize) {
        self.stats.frames.fetch_add(1, Ordering::Relaxed);
        self.stats.newest_frame_ms.store(
            frame.wallclock.timestamp_millis().max(0) as u64,
            Ordering::Relaxed,
        );
        if let Some(m) = &self.metrics {
            m.frames.inc();
        }
        if let Some(prev) = self.last_wallclock {
            let step = frame.wallclock - prev;
            if step > chrono::Duration::zero() && step < chrono::Duration::seconds(1) {
                self.frame_step = step;
            }
        }
        self.last_wallclock = Some(frame.wallclock);
        for e in self.detector.push(&frame) {
            self.on_shot_event(e);
        }
        self.held.push_back(frame);
        while self.held.len() > hold {
            if let Some(f) = self.held.pop_front() {
                self.release(f);
            }
        }
    }

    fn on_shot_event(&mut self, e: ShotEvent) {
        if let ShotEvent::Started(_) = &e {
            self.stats.shots.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.metrics {
                m.shots.inc();
            }
        }
        self.sampler.on_shot_event(&e);
        self.queue.push_event(e);
    }

    fn release(&mut self, frame: Frame) {
        let until = frame.wallclock + self.frame_step;
        if let Some(ticket) = self.sampler.sample(&frame) {
            self.stats.samples.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.metrics {
                m.samples.inc();
            }
            if self.queue.push_sample(ticket, frame.image) {
                self.stats.samples_dropped.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &self.metrics {
                    m.samples_dropped.inc();
                }
            }
        }
        self.queue.released(until);
        report_progress(&self.queue, self.progress.as_deref());
    }

    fn release_all(&mut self) {
        while let Some(f) = self.held.pop_front() {
            self.release(f);
        }
    }
}

enum FrameRecv {
    Frame(Frame),
    Idle,
    Closed,
}

/// `blocking_recv` with a timeout, for a thread outside the runtime.
fn recv_timeout(rx: &mut mpsc::Receiver<Frame>, timeout: Duration) -> FrameRecv {
    let deadline = Instant::now() + timeout;
    loop {
        match rx.try_recv() {
            Ok(f) => return FrameRecv::Frame(f),
            Err(mpsc::error::TryRecvError::Disconnected) => return FrameRecv::Closed,
            Err(mpsc::error::TryRecvError::Empty) => {
                if Instant::now() >= deadline {
                    return FrameRecv::Idle;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

fn report_progress(queue: &WorkQueue, progress: Option<&AnalysisProgress>) {
    if let (Some(p), Some(until)) = (progress, queue.analysed_until()) {
        p.analysed_until(until);
    }
}

struct InferenceCtx {
    builder: CueBuilder,
    top_k: usize,
    analyzer: Option<Analyzer>,
    queue: Arc<WorkQueue>,
    stats: Arc<PipelineStats>,
    metrics: Option<ChannelMetrics>,
    progress: Option<Arc<AnalysisProgress>>,
    sink: OutputSink,
    evidence: Option<Arc<EvidenceStore>>,
    /// The configured thresholds, and the similarity scale the builder's follow.
    matching: MatchingSettings,
    scale: SimilarityScale,
    controls: Option<Arc<ChannelControls>>,
    /// The operator's threshold the builder follows, when set.
    threshold: Option<f32>,
    /// Change-gated inference, and the result of the sample it compares with.
    gate: ChangeGate,
    last_result: Vec<MatchedDetection>,
    /// Region embeddings of the last analysed sample, for the next one of its shot.
    regions: RegionMemory,
}

/// When a region of an analysed sample reuses an embedding (`matching.change_gate_region_*`).
fn region_reuse(m: &MatchingSettings) -> ReuseSettings {
    ReuseSettings {
        enabled: m.change_gate && m.change_gate_region_iou > 0.0,
        iou: m.change_gate_region_iou,
        mean: m.change_gate_mean,
        cell: m.change_gate_cell,
        max_age_ms: m.change_gate_region_max_age_ms,
    }
}

/// Longest side of a cue's crop kept for the console, in pixels.
const CROP_SIDE: u32 = 192;

/// The similarity scale of the analyzer's catalog (no analyzer: as if it had a learned
/// projection).
fn similarity_scale(analyzer: Option<&Analyzer>) -> SimilarityScale {
    analyzer.map_or(SimilarityScale::Learned, |a| {
        let catalog = a.catalog();
        SimilarityScale::of(
            catalog.snapshot().projection().is_some(),
            catalog.centres_queries(),
        )
    })
}

impl InferenceCtx {
    fn run(mut self) {
        loop {
            let Some(work) = self.queue.pop(Duration::from_millis(200)) else {
                if self.queue.is_closed_and_empty() {
                    break;
                }
                continue;
            };
            match work {
                WorkItem::Shot(e) => {
                    let events = self.builder.on_shot_event(&e);
                    let trigger = match &e {
                        ShotEvent::Started(s) => s.start_wallclock,
                        ShotEvent::Ended(s) => s.end_wallclock.unwrap_or(s.start_wallclock),
                    };
                    self.emit_cues(events, trigger);
                    (self.sink)(PipelineOutput::Shot(e));
                }
                WorkItem::Sample(ticket, image) => {
                    self.follow_settings();
                    let mut outcome = self.analyze_or_reuse(ticket, &image);
                    self.queue.done();
                    // The detections go to the builder and come back for the sink: no copy.
                    let result = SampleResult {
                        frame_index: outcome.ticket.frame_index,
                        pts_ns: outcome.ticket.pts_ns,
                        wallclock: outcome.ticket.wallclock,
                        shot_index: outcome.ticket.shot_index,
                        detections: std::mem::take(&mut outcome.detections),
                        reused: outcome.reused,
                    };
                    let events = self.builder.push(&result);
                    self.sync_suppressed();
                    outcome.detections = result.detections;
                    let trigger = outcome.ticket.wallclock;
                    (self.sink)(PipelineOutput::Sample(outcome));
                    let starts: Vec<(String, BoxSample)> = events
                        .iter()
                        .filter_map(|e| match e {
                            CueEvent::Start(c) => c.boxes.last().map(|b| (c.id.clone(), *b)),
                            _ => None,
                        })
                        .collect();
                    self.emit_cues(events, trigger);
                    self.keep_crops(&starts, &image);
                }
            }
            report_progress(&self.queue, self.progress.as_deref());
        }
        let events = self.builder.flush();
        let now = Utc::now();
        self.emit_cues(events, now);
        report_progress(&self.queue, self.progress.as_deref());
    }

    /// A catalog retrained while the channel runs may have gained (or lost) a learned
    /// projection (or a query-domain mean): its similarity scale changed, and so do the thresholds. An operator may
    /// have set the channel's similarity threshold.
    fn follow_settings(&mut self) {
        let scale = similarity_scale(self.analyzer.as_ref());
        let threshold = self.controls.as_ref().and_then(|c| c.threshold());
        if scale == self.scale && threshold == self.threshold {
            return;
        }
        self.scale = scale;
        self.threshold = threshold;
        let mut s = self.matching.for_scale(scale);
        if let Some(t) = threshold {
            s.min_similarity = t;
        }
        self.builder.retune(&s);
        tracing::info!(
            ?scale,
            ?threshold,
            min_similarity = s.min_similarity,
            "matching thresholds follow the catalog's scale and the operator"
        );
    }

    /// Crops of the cues that start (their last box in this frame) for the console.
    fn keep_crops(&self, starts: &[(String, BoxSample)], image: &I420Image) {
        let Some(store) = &self.evidence else {
            return;
        };
        if starts.is_empty() {
            return;
        }
        let rgb = RgbImage::from_i420(image);
        for (id, b) in starts {
            let bbox = BBox {
                x: b.x,
                y: b.y,
                w: b.w,
                h: b.h,
            };
            let crop = rgb.crop(bbox.to_rect(rgb.width, rgb.height));
            store.put_crop(id, crop.to_jpeg_thumbnail(CROP_SIDE, 80));
        }
    }

    /// The builder's suppression totals into the channel's `cues_suppressed` counters.
    fn sync_suppressed(&self) {
        let Some(m) = &self.metrics else {
            return;
        };
        let s = self.builder.stats();
        let totals = [
            s.suppressed_sibling,
            s.suppressed_max_cues,
            s.suppressed_cooldown,
            s.suppressed_repeat,
        ];
        for ((_, counter), total) in m.cues_suppressed.iter().zip(totals) {
            crate::metrics::catch_up(counter, total);
        }
    }

    /// The sample's detections: the last analysed sample's when the change gate says the
    /// picture is the same, else a fresh analysis.
    fn analyze_or_reuse(&mut self, ticket: SampleTicket, image: &I420Image) -> SampleOutcome {
        if self.analyzer.is_none() {
            return self.analyze(ticket, image);
        }
        let thumb = Thumbnail::of(image);
        let (shot, pts) = (ticket.shot_index, ticket.pts_ns);
        if self.gate.decide(shot, pts, &thumb) == Decision::Reuse {
            self.stats.reused.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.metrics {
                m.samples_reused.inc();
            }
            return SampleOutcome {
                ticket,
                detections: self.last_result.clone(),
                elapsed: Duration::ZERO,
                error: None,
                reused: true,
            };
        }
        let outcome = self.analyze(ticket, image);
        if outcome.error.is_none() {
            self.gate.analysed(shot, pts, thumb);
            self.last_result.clone_from(&outcome.detections);
        } else {
            self.gate.forget();
        }
        outcome
    }

    fn analyze(&mut self, ticket: SampleTicket, image: &I420Image) -> SampleOutcome {
        let Some(analyzer) = &self.analyzer else {
            return SampleOutcome {
                ticket,
                detections: Vec::new(),
                elapsed: Duration::ZERO,
                error: None,
                reused: false,
            };
        };
        let t0 = Instant::now();
        self.regions.enter_shot(ticket.shot_index);
        let before = self.regions.reused;
        let result = analyzer.analyze_reusing(
            &RgbImage::from_i420(image),
            self.top_k,
            Some((&mut self.regions, ticket.pts_ns)),
            Some(self.builder.min_similarity()),
        );
        let reused = self.regions.reused - before;
        self.stats
            .regions_reused
            .fetch_add(reused, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.regions_reused.inc_by(reused);
        }
        let elapsed = t0.elapsed();
        self.stats.analysed.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_analysis_us
            .store(elapsed.as_micros() as u64, Ordering::Relaxed);
        match result {
            Ok(fa) => {
                let first = fa.first_view_only as u64;
                self.stats
                    .regions_first_view
                    .fetch_add(first, Ordering::Relaxed);
                if let Some(m) = &self.metrics {
                    m.regions_first_view.inc_by(first);
                    m.detect_seconds.observe(fa.timings.detect.as_secs_f64());
                    m.embed_seconds.observe(fa.timings.embed.as_secs_f64());
                    m.search_seconds.observe(fa.timings.search.as_secs_f64());
                    m.analysis_seconds.observe(elapsed.as_secs_f64());
                }
                let detections = fa
                    .regions
                    .into_iter()
                    .map(|r| MatchedDetection {
                        bbox: r.bbox.as_array(),
                        class_name: r.detection.as_ref().map_or_else(
                            || WHOLE_FRAME_CLASS.to_string(),
                            |d| d.class_name.clone(),
                        ),
                        det_score: r.detection.as_ref().map_or(1.0, |d| d.score),
                        candidates: r.candidates,
                        embedding: self.evidence.as_ref().and(r.embedding),
                    })
                    .collect();
                SampleOutcome {
                    ticket,
                    detections,
                    elapsed,
                    error: None,
                    reused: false,
                }
            }
            Err(e) => {
                self.stats.inference_errors.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &self.metrics {
                    m.inference_errors.inc();
                }
                tracing::warn!(frame = ticket.frame_index, error = %e, "inference failed on a sampled frame; skipped");
                SampleOutcome {
                    ticket,
                    detections: Vec::new(),
                    elapsed,
                    error: Some(e.to_string()),
                    reused: false,
                }
            }
        }
    }

    fn emit_cues(&mut self, mut events: Vec<CueEvent>, trigger: DateTime<Utc>) {
        let evidence = self.builder.take_evidence();
        if let Some(store) = &self.evidence {
            for e in evidence {
                store.put(e);
            }
        }
        if events.is_empty() {
            return;
        }
        if let Some(a) = &self.analyzer {
            let catalog = a.catalog();
            fill_products(&mut events, |id| {
                catalog.product(id).map(|p| product_summary(&p))
            });
        }
        for event in events {
            self.stats.cue_events.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.metrics {
                match &event {
                    CueEvent::Start(_) => m.cues_started.inc(),
                    CueEvent::Update(_) => m.cues_updated.inc(),
                    CueEvent::End(_) => m.cues_ended.inc(),
                };
            }
            (self.sink)(PipelineOutput::Cue { event, trigger });
        }
    }
}

/// What a cue carries of its product for display: the catalog record without local file
/// paths (only http(s) images are kept, as `image` and `images`).
pub fn product_summary(p: &Product) -> serde_json::Value {
    let mut v = serde_json::to_value(p).unwrap_or_else(|_| serde_json::json!({ "id": p.id }));
    let web: Vec<&String> = p
        .images
        .iter()
        .filter(|i| i.starts_with("http://") || i.starts_with("https://"))
        .collect();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("images".into(), serde_json::json!(web));
        if let Some(first) = web.first() {
            obj.entry("image")
                .or_insert_with(|| serde_json::json!(first));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_summary_drops_local_paths() {
        let p = Product::from_json(
            r#"{"id":"a","title":"Oat milk","images":["/data/a.jpg","https://cdn.example/a.jpg"],"price":1.5,"x":1}"#,
        )
        .unwrap();
        let v = product_summary(&p);
        assert_eq!(
            v["images"],
            serde_json::json!(["https://cdn.example/a.jpg"])
        );
        assert_eq!(v["image"], "https://cdn.example/a.jpg");
        assert_eq!(v["title"], "Oat milk");
        assert_eq!(v["x"], 1);
    }
}
