//! Sources: live HLS (polled as RFC 8216 prescribes), SRT (through `media`), and files or
//! VOD playlists for batch work. Each turns into a stream of [`crate::frame::Frame`]s with
//! wall clocks.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use self::settings::{IngestSettings, VariantChoice};
use crate::frame::Frame;
use crate::media::MediaSettings;
use crate::media::{self, MediaError, Pipelines, SegmentDecoder};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("`{input}` is not a URL or file this ingest understands: {why}")]
    BadInput { input: String, why: String },
    #[error("HTTP client: {0}")]
    Http(String),
    #[error(transparent)]
    Fetch(#[from] hls::FetchError),
    #[error(transparent)]
    Playlist(#[from] tracker::PlaylistError),
    #[error(transparent)]
    Media(#[from] MediaError),
    /// A stage of the source stopped before the source did (it panicked, or the stage
    /// after it went away).
    #[error("the {what} stopped: {why}")]
    Stage { what: &'static str, why: String },
}

/// How a channel is doing, for logs, metrics and the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelState {
    Starting,
    Up,
    Degraded,
    Stalled,
    Down,
    Ended,
}

/// Counters and gauges of one channel's ingest; shared with whoever reports them.
#[derive(Debug)]
pub struct ChannelStats {
    pub segments_fetched: AtomicU64,
    /// LL-HLS parts fetched.
    pub parts_fetched: AtomicU64,
    pub segments_lost: AtomicU64,
    pub segments_skipped: AtomicU64,
    pub segments_bad: AtomicU64,
    pub fetch_errors: AtomicU64,
    pub playlist_errors: AtomicU64,
    pub resets: AtomicU64,
    pub stalls: AtomicU64,
    pub frames: AtomicU64,
    /// Frames of a live source (SRT) dropped because the channel's frame queue was full:
    /// a live stream cannot wait for a pipeline that is behind.
    pub frames_dropped: AtomicU64,
    pub segments_behind: AtomicU64,
    /// Last segment fetch time, µs.
    pub last_fetch_us: AtomicU64,
    /// Last segment decode time, µs, and its media duration, µs (real-time factor).
    pub last_decode_us: AtomicU64,
    pub last_segment_media_us: AtomicU64,
    /// Wall clock (ms since the epoch) of the live edge and of the newest decoded frame.
    live_edge_ms: AtomicI64,
    newest_frame_ms: AtomicI64,
    /// Highest analysed media sequence number and wall-clock anchors (HLS proxy).
    pub analysis: std::sync::Arc<crate::progress::AnalysisProgress>,
    /// Fetch and decode latency histograms (the sidecar's metrics), when given.
    pub metrics: Option<crate::metrics::ChannelMetrics>,
    inner: Mutex<StatsInner>,
}

#[derive(Debug)]
struct StatsInner {
    state: ChannelState,
    last_error: Option<(DateTime<Utc>, String)>,
    /// Rate limit for repeated error logs.
    last_logged: Option<Instant>,
}

impl Default for ChannelStats {
    fn default() -> Self {
        Self {
            segments_fetched: AtomicU64::new(0),
            parts_fetched: AtomicU64::new(0),
            segments_lost: AtomicU64::new(0),
            segments_skipped: AtomicU64::new(0),
            segments_bad: AtomicU64::new(0),
            fetch_errors: AtomicU64::new(0),
            playlist_errors: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            segments_behind: AtomicU64::new(0),
            last_fetch_us: AtomicU64::new(0),
            last_decode_us: AtomicU64::new(0),
            last_segment_media_us: AtomicU64::new(0),
            live_edge_ms: AtomicI64::new(0),
            newest_frame_ms: AtomicI64::new(0),
            analysis: Default::default(),
            metrics: None,
            inner: Mutex::new(StatsInner {
                state: ChannelState::Starting,
                last_error: None,
                last_logged: None,
            }),
        }
    }
}

const ORD: Ordering = Ordering::Relaxed;
/// Repeated errors are logged at most this often per channel.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl ChannelStats {
    /// Stats reporting into `metrics`, sharing `analysis` with the HLS proxy.
    pub fn new(
        metrics: Option<crate::metrics::ChannelMetrics>,
        analysis: Arc<crate::progress::AnalysisProgress>,
    ) -> Self {
        Self {
            metrics,
            analysis,
            ..Self::default()
        }
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, StatsInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn state(&self) -> ChannelState {
        self.lock().state
    }
    pub fn last_error(&self) -> Option<(DateTime<Utc>, String)> {
        self.lock().last_error.clone()
    }
    pub fn set_state(&self, state: ChannelState) {
        self.lock().state = state;
    }
    /// Record an error; returns whether it should be logged now (rate limit).
    pub fn error(&self, message: &str, state: ChannelState) -> bool {
        let mut g = self.lock();
        g.state = state;
        g.last_error = Some((Utc::now(), message.to_string()));
        let log = g
            .last_logged
            .is_none_or(|t| t.elapsed() >= ERROR_LOG_INTERVAL);
        if log {
            g.last_logged = Some(Instant::now());
        }
        log
    }
    /// Things work again.
    pub fn ok(&self) {
        let mut g = self.lock();
        if matches!(
            g.state,
            ChannelState::Starting
                | ChannelState::Degraded
                | ChannelState::Stalled
                | ChannelState::Down
        ) {
            g.state = ChannelState::Up;
        }
    }
    pub fn record_fetch(&self, d: Duration) {
        self.last_fetch_us.store(d.as_micros() as u64, ORD);
        if let Some(m) = &self.metrics {
            m.segment_fetch_seconds.observe(d.as_secs_f64());
        }
    }
    pub fn set_live_edge(&self, t: DateTime<Utc>) {
        self.live_edge_ms.store(t.timestamp_millis(), ORD);
    }
    fn set_newest_frame(&self, t: DateTime<Utc>) {
        self.newest_frame_ms.store(t.timestamp_millis(), ORD);
    }
    /// Seconds between the live edge and the newest decoded frame (HLS), if known.
    pub fn lag_seconds(&self) -> Option<f64> {
        let (edge, frame) = (self.live_edge_ms.load(ORD), self.newest_frame_ms.load(ORD));
        (edge > 0 && frame > 0).then(|| (edge - frame) as f64 / 1000.0)
    }
    /// Processing time / media time of the last segment (below 1: faster than real time).
    pub fn realtime_factor(&self) -> Option<f64> {
        let (d, m) = (
            self.last_decode_us.load(ORD),
            self.last_segment_media_us.load(ORD),
        );
        (m > 0).then(|| d as f64 / m as f64)
    }
}

/// What a channel URL (or path) names.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// An HLS multivariant or media playlist over HTTP(S).
    Hls(url::Url),
    /// An SRT stream carrying MPEG-TS: `srt://host:port?mode=caller|listener`.
    Srt(url::Url),
    /// A local video file (or a local playlist).
    File(PathBuf),
}

impl SourceSpec {
    pub fn parse(input: &str) -> Result<Self, IngestError> {
        let bad = |why: &str| IngestError::BadInput {
            input: redact_url(input),
            why: why.to_string(),
        };
        if input.is_empty() {
            return Err(bad("empty"));
        }
        match url::Url::parse(input) {
            Ok(u) => match u.scheme() {
                "http" | "https" => {
                    if u.host_str().is_none() {
                        return Err(bad("no host"));
                    }
                    Ok(Self::Hls(u))
                }
                "srt" => {
                    if u.host_str().is_none() || u.port().is_none() {
                        return Err(bad("an SRT URL needs host and port"));
                    }
                    match u
                        .query_pairs()
                        .find(|(k, _)| k == "mode")
                        .map(|(_, v)| v.into_owned())
                    {
                        None => Ok(Self::Srt(u)),
                        Some(m) if m == "caller" || m == "listener" => Ok(Self::Srt(u)),
                        Some(m) => Err(bad(&format!("SRT mode `{m}` is not caller or listener"))),
                    }
                }
                "file" => u
                    .to_file_path()
                    .map(Self::File)
                    .map_err(|_| bad("not a local file URL")),
                other if other.len() == 1 => Ok(Self::File(PathBuf::from(input))), // C:\ style
                other => Err(bad(&format!("unsupported scheme `{other}`"))),
            },
            Err(_) => Ok(Self::File(PathBuf::from(input))),
        }
    }
}
pub mod hls;
pub mod settings;
pub mod tracker;

use crate::redact::redact_url;

/// Whether a source that cannot start ends with an error (CLI) or keeps retrying (sidecar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Fail,
    Retry,
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Pace files and VOD playlists at real time, so they can stand in for a live channel.
    pub realtime: bool,
    pub on_error: OnError,
    /// Height of delivered frames (defaults to `media.analysis_height`).
    pub height: Option<u32>,
    /// Where fetch and decode latencies go (the sidecar's metrics).
    pub metrics: Option<crate::metrics::ChannelMetrics>,
    /// Analysis progress to share (the sidecar creates it first, so the HLS proxy and
    /// the pipeline see the same one); a new one otherwise.
    pub progress: Option<Arc<crate::progress::AnalysisProgress>>,
    /// Stats to go on counting in (a restarted channel keeps its totals); new ones
    /// otherwise. Their state goes back to `Starting`.
    pub stats: Option<Arc<ChannelStats>>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            realtime: false,
            on_error: OnError::Retry,
            height: None,
            metrics: None,
            progress: None,
            stats: None,
        }
    }
}

/// A running source: frames in decode order, its stats, and the task to await for the
/// final outcome (an error only with [`OnError::Fail`]).
pub struct Channel {
    pub frames: mpsc::Receiver<Frame>,
    pub stats: Arc<ChannelStats>,
    pub task: tokio::task::JoinHandle<Result<(), IngestError>>,
}

/// Start ingesting `spec`. With [`OnError::Fail`], an unreachable origin, a URL that is
/// not HLS or a malformed first playlist is returned here.
pub async fn start(
    id: &str,
    spec: SourceSpec,
    ingest: &IngestSettings,
    media_settings: &MediaSettings,
    opts: IngestOptions,
    cancel: CancellationToken,
) -> Result<Channel, IngestError> {
    let stats = match &opts.stats {
        Some(s) => {
            s.set_state(ChannelState::Starting);
            s.clone()
        }
        None => Arc::new(ChannelStats::new(
            opts.metrics.clone(),
            opts.progress.clone().unwrap_or_default(),
        )),
    };
    let (tx, rx) = mpsc::channel(media_settings.frame_queue);
    let source = SourceStart {
        id: id.to_string(),
        stats: stats.clone(),
        frames: tx,
        height: opts.height.unwrap_or(media_settings.analysis_height),
        pipelines: Pipelines::new(media_settings),
        frame_queue: media_settings.frame_queue,
        realtime: opts.realtime,
        on_error: opts.on_error,
        cancel,
    };
    media::init()?;
    let task = match spec {
        SourceSpec::Hls(url) => source.hls(url, ingest).await?,
        SourceSpec::File(path) => source.file(&path)?,
        SourceSpec::Srt(url) => source.srt(url, ingest),
    };
    Ok(Channel {
        frames: rx,
        stats,
        task,
    })
}

/// The outcome of a source's task.
type SourceTask = tokio::task::JoinHandle<Result<(), IngestError>>;

/// What a source of any kind starts with.
struct SourceStart {
    id: String,
    stats: Arc<ChannelStats>,
    /// Where its frames go.
    frames: mpsc::Sender<Frame>,
    /// Height of the frames delivered.
    height: u32,
    pipelines: Pipelines,
    frame_queue: usize,
    realtime: bool,
    on_error: OnError,
    cancel: CancellationToken,
}

impl SourceStart {
    /// HLS: a fetcher task following the playlist, handing segments (or parts) to a
    /// decoder on the blocking pool. With [`OnError::Fail`] the first playlist is loaded
    /// here; otherwise the fetcher retries opening it.
    async fn hls(self, url: url::Url, ingest: &IngestSettings) -> Result<SourceTask, IngestError> {
        let fetcher = hls::Fetcher::with_redirect_hosts(&ingest.redirect_hosts)?;
        let opened = match self.on_error {
            OnError::Fail => Some(hls::open(&fetcher, &url, ingest).await?),
            OnError::Retry => None,
        };
        // Whole segments, or a few parts of the one in progress (policy: the fetcher waits).
        let (seg_tx, seg_rx) = mpsc::channel(4);
        let decoder = SegmentDecoder::new(self.pipelines, self.height, Duration::from_secs(30))?;
        let Self {
            id,
            stats,
            frames,
            realtime,
            cancel,
            ..
        } = self;
        let dstats = stats.clone();
        let decode = tokio::task::spawn_blocking(move || {
            decode_segments(&id, decoder, seg_rx, frames, dstats, realtime)
        });
        let settings = ingest.clone();
        Ok(tokio::spawn(async move {
            let opened = match opened {
                Some(o) => o,
                None => match open_with_retry(&fetcher, &url, &settings, &stats, &cancel).await {
                    Some(o) => o,
                    None => return Ok(()),
                },
            };
            stats.ok();
            let how = hls::follow(
                fetcher,
                opened,
                settings,
                stats.clone(),
                seg_tx,
                cancel.clone(),
            )
            .await;
            finish_hls(how, decode.await, &stats, &cancel)
        }))
    }

    /// A file (or local playlist), decoded on the blocking pool until it ends.
    fn file(self, path: &std::path::Path) -> Result<SourceTask, IngestError> {
        let source =
            media::FrameSource::file(&self.pipelines, path, self.height, self.frame_queue)?;
        Ok(tokio::task::spawn_blocking(move || {
            let s = &self.stats;
            s.ok();
            let r = pump(
                source,
                self.frames,
                s,
                self.realtime,
                &self.cancel,
                None,
                false,
            );
            s.set_state(if r.is_ok() {
                ChannelState::Ended
            } else {
                ChannelState::Down
            });
            r
        }))
    }

    /// SRT, on the blocking pool: each stream pumped until it ends, then the next one
    /// awaited, with a back-off (with [`OnError::Fail`], the first end or error is final).
    fn srt(self, url: url::Url, ingest: &IngestSettings) -> SourceTask {
        let latency = ingest.srt_latency_ms;
        let idle = Duration::from_millis(ingest.segment_timeout_ms.max(2_000));
        tokio::task::spawn_blocking(move || {
            let s = &self.stats;
            let mut backoff_ms = 250u64;
            loop {
                let result = media::FrameSource::srt(
                    &self.pipelines,
                    url.as_str(),
                    self.height,
                    self.frame_queue,
                    latency,
                    idle,
                )
                .map_err(IngestError::from)
                .and_then(|src| {
                    let base = src.base_unix_ns();
                    s.ok();
                    pump(src, self.frames.clone(), s, false, &self.cancel, base, true)
                });
                if self.cancel.is_cancelled() || self.frames.is_closed() {
                    return Ok(());
                }
                if !self.srt_goes_on(result)? {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(backoff_ms));
                backoff_ms = (backoff_ms * 2).min(5_000);
            }
        })
    }

    /// After an SRT stream ended with `result`: whether to wait for the next one, or the
    /// error that ends the source.
    fn srt_goes_on(&self, result: Result<(), IngestError>) -> Result<bool, IngestError> {
        let id = &self.id;
        match (result, self.on_error) {
            (Err(e), OnError::Fail) => {
                self.stats.set_state(ChannelState::Down);
                Err(e)
            }
            (Err(e), OnError::Retry) => {
                if self.stats.error(&e.to_string(), ChannelState::Down) {
                    tracing::warn!(channel = %id, error = %e, "SRT source failed; restarting");
                }
                Ok(true)
            }
            (Ok(()), OnError::Fail) => Ok(false),
            (Ok(()), OnError::Retry) => {
                tracing::info!(channel = %id, "SRT stream ended; waiting for the next one");
                Ok(true)
            }
        }
    }
}

/// The outcome of an HLS source once its fetcher returned: a decoder that panicked, or
/// one that stopped taking segments while nobody cancelled, is an error.
fn finish_hls(
    how: hls::FollowEnd,
    decoded: Result<(), tokio::task::JoinError>,
    stats: &ChannelStats,
    cancel: &CancellationToken,
) -> Result<(), IngestError> {
    if let Err(e) = decoded {
        stats.set_state(ChannelState::Down);
        return Err(IngestError::Stage {
            what: "segment decoder",
            why: e.to_string(),
        });
    }
    match how {
        hls::FollowEnd::Ended => {
            stats.set_state(ChannelState::Ended);
            Ok(())
        }
        hls::FollowEnd::Stopped if cancel.is_cancelled() => Ok(()),
        hls::FollowEnd::Stopped => {
            stats.set_state(ChannelState::Down);
            Err(IngestError::Stage {
                what: "segment decoder",
                why: "it no longer takes segments (the frames' receiver is gone)".into(),
            })
        }
    }
}

async fn open_with_retry(
    fetcher: &hls::Fetcher,
    url: &url::Url,
    settings: &IngestSettings,
    stats: &ChannelStats,
    cancel: &CancellationToken,
) -> Option<hls::Opened> {
    let mut pause = Duration::from_millis(settings.retry_initial_ms);
    loop {
        match hls::open(fetcher, url, settings).await {
            Ok(o) => return Some(o),
            Err(e) => {
                if stats.error(&e.to_string(), ChannelState::Down) {
                    tracing::warn!(url = %redact_url(url.as_str()), error = %e, "cannot open channel; retrying");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {},
            _ = cancel.cancelled() => return None,
        }
        pause = (pause * 2).min(Duration::from_millis(settings.retry_max_ms));
    }
}

/// `ns` nanoseconds as an `i64`, saturating.
fn nanos_i64(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

/// `t` plus `ns` nanoseconds; a sum past the last representable time stays at `t` (only
/// an absurd origin number gets there, and a clock that stops beats a panic).
fn add_nanos(t: DateTime<Utc>, ns: u64) -> DateTime<Utc> {
    t.checked_add_signed(chrono::Duration::nanoseconds(nanos_i64(ns)))
        .unwrap_or(t)
}

/// Numbers frames, counts them and hands them to the channel.
struct FrameEmitter<'a> {
    tx: mpsc::Sender<Frame>,
    stats: &'a ChannelStats,
    index: u64,
    /// A live source: when the frame queue is full the frame is dropped and counted
    /// (`frames_dropped`) instead of waiting. Segments and files wait (backpressure).
    lossy: bool,
}

impl FrameEmitter<'_> {
    /// False when the receiver is gone.
    fn emit(
        &mut self,
        pts_ns: u64,
        wallclock: DateTime<Utc>,
        image: crate::frame::I420Image,
    ) -> bool {
        self.stats.frames.fetch_add(1, ORD);
        self.stats.set_newest_frame(wallclock);
        let frame = Frame {
            index: self.index,
            pts_ns,
            wallclock,
            image,
        };
        self.index += 1;
        if !self.lossy {
            return self.tx.blocking_send(frame).is_ok();
        }
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.frames_dropped.fetch_add(1, ORD);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Sleeps so that frames come out no faster than their media time.
struct Pacer {
    start: Option<(Instant, u64)>,
}

impl Pacer {
    fn wait(&mut self, pts_ns: u64) {
        let (t0, p0) = *self.start.get_or_insert((Instant::now(), pts_ns));
        // A due time past what an Instant holds is never reached: do not wait for it.
        let Some(due) = t0.checked_add(Duration::from_nanos(pts_ns.saturating_sub(p0))) else {
            return;
        };
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

/// Move frames from a continuous source to the channel, stamping index and wall clock:
/// `base_unix_ns` (live: the real-time clock at running time 0) or the start time.
/// `lossy`: a live source, whose frames are dropped (counted) when the queue is full.
fn pump(
    mut source: media::FrameSource,
    tx: mpsc::Sender<Frame>,
    stats: &ChannelStats,
    realtime: bool,
    cancel: &CancellationToken,
    base_unix_ns: Option<u64>,
    lossy: bool,
) -> Result<(), IngestError> {
    let started = Utc::now();
    let mut pacer = Pacer { start: None };
    let mut first_pts: Option<u64> = None;
    let mut out = FrameEmitter {
        tx,
        stats,
        index: 0,
        lossy,
    };
    let mut last_pts = 0u64;
    let mut last_wallclock: Option<DateTime<Utc>> = None;
    while !cancel.is_cancelled() {
        let Some(decoded) = source.next_frame()? else {
            break;
        };
        let raw = decoded
            .pts_ns
            .unwrap_or(last_pts.saturating_add(40_000_000));
        let p0 = *first_pts.get_or_insert(raw);
        let pts_ns = raw.saturating_sub(p0).max(if out.index == 0 {
            0
        } else {
            last_pts.saturating_add(1)
        });
        last_pts = pts_ns;
        if realtime {
            pacer.wait(pts_ns);
        }
        let mut wallclock = match base_unix_ns {
            Some(base) => DateTime::from_timestamp_nanos(nanos_i64(base.saturating_add(raw))),
            None => add_nanos(started, pts_ns),
        };
        // A live source's timestamps can step back (a re-synchronised demuxer): keep the
        // channel's clock monotonic.
        if let Some(prev) = last_wallclock
            && wallclock <= prev
        {
            wallclock = add_nanos(prev, 1_000);
        }
        last_wallclock = Some(wallclock);
        if !out.emit(pts_ns, wallclock, decoded.image) {
            break;
        }
    }
    Ok(())
}

/// Stamps an HLS channel's frames: a segment's wall clock plus each frame's offset in it,
/// kept monotonic, and the channel's media time from its first frame.
struct HlsClock<'a> {
    out: FrameEmitter<'a>,
    origin: Option<DateTime<Utc>>,
    last_wallclock: Option<DateTime<Utc>>,
    pacer: Option<Pacer>,
}

/// At a discontinuity, an origin clock that goes back by more than this is followed.
const CLOCK_STEP_BACK: chrono::TimeDelta = chrono::TimeDelta::seconds(1);
/// The media time between two frames when nothing better is known.
const FRAME_STEP: chrono::TimeDelta = chrono::TimeDelta::milliseconds(40);

impl<'a> HlsClock<'a> {
    /// A clock that has seen no segment yet, numbering frames from 0 into `tx`; paced to
    /// the wall clock when `realtime`.
    fn new(tx: mpsc::Sender<Frame>, stats: &'a ChannelStats, realtime: bool) -> Self {
        Self {
            out: FrameEmitter {
                tx,
                stats,
                index: 0,
                lossy: false,
            },
            origin: None,
            last_wallclock: None,
            pacer: realtime.then_some(Pacer { start: None }),
        }
    }

    /// A segment starting at `start` begins. At a discontinuity (an origin restart, or an
    /// origin whose clock was wrong and is fixed) a clock that went back is followed, the
    /// media time going on: clamping would pin the channel's clock to the old one for as
    /// long as that was ahead.
    fn begin_segment(&mut self, start: DateTime<Utc>, discontinuity: bool) {
        let (Some(prev), Some(origin)) = (self.last_wallclock, self.origin) else {
            return;
        };
        if !discontinuity || prev - start <= CLOCK_STEP_BACK {
            return;
        }
        let media = (prev - origin) + FRAME_STEP;
        if let Some(rebased) = start.checked_sub_signed(media) {
            tracing::info!(from = %prev, to = %start, "origin clock went back at a discontinuity; following it");
            self.origin = Some(rebased);
            self.last_wallclock = None;
        }
    }

    /// False when the receiver is gone.
    fn emit(
        &mut self,
        segment_start: DateTime<Utc>,
        offset_ns: u64,
        image: crate::frame::I420Image,
    ) -> bool {
        let mut wallclock = add_nanos(segment_start, offset_ns);
        if let Some(prev) = self.last_wallclock
            && wallclock <= prev
        {
            // Overlapping or repeated media: keep the channel's clock monotonic.
            wallclock = add_nanos(prev, 1_000);
        }
        self.last_wallclock = Some(wallclock);
        let o = *self.origin.get_or_insert(wallclock);
        let pts_ns = (wallclock - o).num_nanoseconds().unwrap_or(0).max(0) as u64;
        if let Some(p) = &mut self.pacer {
            p.wait(pts_ns);
        }
        self.out.emit(pts_ns, wallclock, image)
    }
}

/// A segment being decoded as its LL-HLS parts arrive.
struct OpenStream {
    stream: media::SegmentStream,
    msn: u64,
    timing: StreamTiming,
}

/// Frame offsets within a streamed segment: from its first frame's PTS (a frame without
/// one is placed 40 ms after the previous).
struct StreamTiming {
    start: DateTime<Utc>,
    first_pts: Option<u64>,
    last_offset: Option<u64>,
}

impl StreamTiming {
    /// False when the receiver is gone.
    fn emit(&mut self, f: media::DecodedFrame, clock: &mut HlsClock) -> bool {
        let offset = match (f.pts_ns, self.first_pts) {
            (Some(p), Some(p0)) => p.saturating_sub(p0),
            (Some(p), None) => {
                self.first_pts = Some(p);
                0
            }
            (None, _) => self.last_offset.map_or(0, |o| o.saturating_add(40_000_000)),
        };
        self.last_offset = Some(offset);
        clock.emit(self.start, offset, f.image)
    }
}

/// The HLS decode stage: one segment at a time, whole or part by part; a bad segment is
/// counted and skipped.
fn decode_segments(
    id: &str,
    decoder: SegmentDecoder,
    mut pieces: mpsc::Receiver<hls::DecoderInput>,
    tx: mpsc::Sender<Frame>,
    stats: Arc<ChannelStats>,
    realtime: bool,
) {
    let mut stage = DecodeStage {
        id,
        stats: &stats,
        decoder,
        clock: HlsClock::new(tx, &stats, realtime),
        open: None,
    };
    while let Ok(piece) = stage.next_piece(&mut pieces) {
        if stage.take(piece).is_err() {
            return;
        }
    }
}

/// The fetcher or the frames' receiver is gone: the decode stage ends.
struct Gone;

/// The state of [`decode_segments`]: the decoder, the channel's clock, and the segment
/// streaming in part by part.
struct DecodeStage<'a> {
    id: &'a str,
    stats: &'a ChannelStats,
    decoder: SegmentDecoder,
    clock: HlsClock<'a>,
    open: Option<OpenStream>,
}

impl DecodeStage<'_> {
    /// The next piece from the fetcher; while a segment streams in, its frames are handed
    /// on as they decode meanwhile.
    fn next_piece(
        &mut self,
        pieces: &mut mpsc::Receiver<hls::DecoderInput>,
    ) -> Result<hls::DecoderInput, Gone> {
        loop {
            if self.open.is_none() {
                return pieces.blocking_recv().ok_or(Gone);
            }
            match pieces.try_recv() {
                Ok(p) => return Ok(p),
                Err(mpsc::error::TryRecvError::Empty) => self.poll_open()?,
                Err(mpsc::error::TryRecvError::Disconnected) => return Err(Gone),
            }
        }
    }

    /// Hand on the frames the streamed segment decoded in a short while; a decode error
    /// makes it a bad segment, closed.
    fn poll_open(&mut self) -> Result<(), Gone> {
        let Some(o) = &mut self.open else {
            return Ok(());
        };
        let mut frames = Vec::new();
        let result = o.stream.poll(Duration::from_millis(10), |f| frames.push(f));
        for f in frames {
            if !o.timing.emit(f, &mut self.clock) {
                return Err(Gone);
            }
        }
        if let Err(e) = result {
            self.bad(&e);
            self.open = None;
        }
        Ok(())
    }

    /// Take one piece from the fetcher.
    fn take(&mut self, piece: hls::DecoderInput) -> Result<(), Gone> {
        match piece {
            hls::DecoderInput::Segment(seg) => self.decode_whole(seg)?,
            hls::DecoderInput::Begin(seg) => self.begin_stream(seg),
            hls::DecoderInput::Part { msn, data } => {
                if let Some(o) = &mut self.open
                    && o.msn == msn
                {
                    o.stream.push(data);
                }
            }
            hls::DecoderInput::End(job) => self.end_stream(job)?,
        }
        Ok(())
    }

    /// Decode a whole segment; each frame goes on as it is decoded (the frame queue bounds
    /// what waits), never a whole segment's frames at once.
    fn decode_whole(&mut self, seg: hls::FetchedSegment) -> Result<(), Gone> {
        let what = format!(
            "segment {} ({})",
            seg.job.msn,
            redact_url(seg.job.url.as_str())
        );
        self.clock
            .begin_segment(seg.job.wallclock, seg.job.discontinuity);
        let mut timing = StreamTiming {
            start: seg.job.wallclock,
            first_pts: None,
            last_offset: None,
        };
        let mut gone = false;
        let clock = &mut self.clock;
        let result = self
            .decoder
            .decode(&what, seg.init.as_ref(), seg.data.clone(), |f| {
                gone = gone || !timing.emit(f, clock);
            });
        if gone {
            return Err(Gone);
        }
        match &result {
            Ok(s) => record_decode(self.stats, s, seg.job.duration),
            Err(e) => self.bad(e),
        }
        segment_done(self.stats, &seg.job, result.is_ok());
        Ok(())
    }

    /// The first part of a segment: open a stream to decode it as its parts arrive.
    fn begin_stream(&mut self, seg: hls::FetchedSegment) {
        let what = format!(
            "segment {} (parts from {})",
            seg.job.msn,
            redact_url(seg.job.url.as_str())
        );
        self.clock
            .begin_segment(seg.job.wallclock, seg.job.discontinuity);
        match self.decoder.open(&what, seg.init.as_ref()) {
            Ok(mut stream) => {
                stream.push(seg.data);
                self.open = Some(OpenStream {
                    stream,
                    msn: seg.job.msn,
                    timing: StreamTiming {
                        start: seg.job.wallclock,
                        first_pts: None,
                        last_offset: None,
                    },
                });
            }
            Err(e) => self.bad(&e),
        }
    }

    /// Segment `job` is complete: finish decoding it if it was streamed. Nothing of it
    /// begun (or it was lost), it counts as analysed all the same.
    fn end_stream(&mut self, job: tracker::SegmentJob) -> Result<(), Gone> {
        let ok = match self.open.take() {
            Some(OpenStream {
                stream,
                msn,
                mut timing,
            }) if msn == job.msn => {
                let mut frames = Vec::new();
                let result = stream.finish(|f| frames.push(f));
                for f in frames {
                    if !timing.emit(f, &mut self.clock) {
                        return Err(Gone);
                    }
                }
                match &result {
                    Ok(s) => record_decode(self.stats, s, job.duration),
                    Err(e) => self.bad(e),
                }
                result.is_ok()
            }
            _ => false,
        };
        segment_done(self.stats, &job, ok);
        Ok(())
    }

    /// A bad segment: counted, reported, and the channel goes on.
    fn bad(&self, e: &MediaError) {
        self.stats.segments_bad.fetch_add(1, ORD);
        if self.stats.error(&e.to_string(), ChannelState::Degraded) {
            tracing::warn!(channel = %self.id, error = %e, "bad segment; the channel goes on with the next one");
        }
    }
}

fn record_decode(stats: &ChannelStats, s: &media::SegmentDecodeStats, media_secs: f64) {
    stats
        .last_decode_us
        .store(s.elapsed.as_micros() as u64, ORD);
    if let Some(m) = &stats.metrics {
        m.segment_decode_seconds.observe(s.elapsed.as_secs_f64());
    }
    stats
        .last_segment_media_us
        .store((media_secs * 1e6) as u64, ORD);
}

/// Segment `job` is done with (decoded, or bad: waiting for a bad one would stall the
/// proxy, so it counts as analysed too).
fn segment_done(stats: &ChannelStats, job: &tracker::SegmentJob, ok: bool) {
    let end = add_nanos(job.wallclock, (job.duration.max(0.0) * 1e9) as u64);
    stats.analysis.record_segment(job.msn, job.wallclock, end);
    if ok && stats.state() == ChannelState::Degraded {
        stats.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_source_drops_and_counts_frames_when_the_queue_is_full() {
        let stats = ChannelStats::default();
        let (tx, mut rx) = mpsc::channel(2);
        let image = || crate::frame::I420Image {
            width: 2,
            height: 2,
            data: vec![0; 6],
        };
        let mut out = FrameEmitter {
            tx,
            stats: &stats,
            index: 0,
            lossy: true,
        };
        for k in 0..5u64 {
            assert!(out.emit(k * 40_000_000, Utc::now(), image()), "not blocked");
        }
        assert_eq!(stats.frames.load(ORD), 5);
        assert_eq!(stats.frames_dropped.load(ORD), 3);
        // The oldest waiting frames are the ones kept; after a read there is room again.
        assert_eq!(rx.try_recv().unwrap().index, 0);
        assert!(out.emit(0, Utc::now(), image()));
        assert_eq!(stats.frames_dropped.load(ORD), 3);
        drop(rx);
        assert!(!out.emit(0, Utc::now(), image()), "receiver gone");
    }

    /// Frames of segments starting at `starts` (ms from T0; with a discontinuity flag),
    /// four 40 ms frames each: their (pts ms, wall clock ms from T0).
    fn stamped(starts: &[(i64, bool)]) -> Vec<(u64, i64)> {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let stats = ChannelStats::default();
        let (tx, mut rx) = mpsc::channel(64);
        let mut clock = HlsClock::new(tx, &stats, false);
        for &(start_ms, discontinuity) in starts {
            let start = t0 + chrono::TimeDelta::milliseconds(start_ms);
            clock.begin_segment(start, discontinuity);
            for k in 0..4u64 {
                let image = crate::frame::I420Image {
                    width: 2,
                    height: 2,
                    data: vec![0; 6],
                };
                assert!(clock.emit(start, k * 40_000_000, image));
            }
        }
        drop(clock);
        let mut out = Vec::new();
        while let Ok(f) = rx.try_recv() {
            out.push((f.pts_ns / 1_000_000, (f.wallclock - t0).num_milliseconds()));
        }
        out
    }

    #[test]
    fn a_clock_that_goes_back_is_followed_only_at_a_discontinuity() {
        // An origin clock an hour ahead, then fixed: followed at the discontinuity, the
        // media time going on.
        let got = stamped(&[(3_600_000, false), (0, true)]);
        let wall: Vec<i64> = got.iter().map(|g| g.1).collect();
        assert_eq!(wall[4..], [0, 40, 80, 120]);
        let pts: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(pts, [0, 40, 80, 120, 160, 200, 240, 280]);
        // Without one (overlapping media), the clock stays monotonic.
        let got = stamped(&[(3_600_000, false), (0, false)]);
        assert!(got.windows(2).all(|w| w[1].1 >= w[0].1), "{got:?}");
        // A small step back at a discontinuity is overlap, not a new clock.
        let got = stamped(&[(1_000, false), (900, true)]);
        assert!(got.windows(2).all(|w| w[1].1 >= w[0].1), "{got:?}");
    }

    #[test]
    fn a_bad_source_is_named_without_its_secrets() {
        let e = SourceSpec::parse("srt://u:pw@host:9?mode=bogus&passphrase=x").unwrap_err();
        let text = e.to_string();
        assert!(
            !text.contains("pw") && !text.contains("passphrase"),
            "{text}"
        );
    }
}
