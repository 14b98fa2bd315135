//! Live HLS over HTTP: loads the entry playlist (choosing a variant), then polls the media
//! playlist as RFC 8216 §6.3.4 prescribes — the target duration after a changed reload,
//! half of it after an unchanged one — and fetches each new segment once, in order, with
//! retries and back-off. Segments go to the decoder through a bounded channel (policy:
//! the fetcher waits; lag behind the live edge is reported).
//!
//! A Low-Latency HLS playlist (EXT-X-PART-INF) is followed part by part: the segment in
//! progress is fetched as its parts are listed and decoded as they arrive, so a frame
//! waits for its part (about half a second), not for its whole segment. With
//! CAN-BLOCK-RELOAD the next reload asks for the next part (`_HLS_msn`/`_HLS_part`) and
//! the origin answers when it exists; without, the playlist is reloaded every part target.
//! Complete segments already streamed are not fetched again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use m3u8_rs::{MediaPlaylist, Playlist};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::settings::{IngestSettings, VariantChoice};
use super::tracker::{self, LowLatency, PlaylistError, PlaylistTracker, SegmentJob};
use super::{ChannelState, ChannelStats, IngestError};

/// EXT-X-MAP init sections already fetched, by URL and byte range.
type InitCache = HashMap<(Url, Option<(u64, u64)>), Bytes>;

/// What the fetcher hands the decoder.
#[derive(Debug, Clone)]
pub enum DecoderInput {
    /// A whole segment.
    Segment(FetchedSegment),
    /// The first part of a segment to decode as its parts arrive (LL-HLS). Its job's
    /// wall clock is predicted from the previous segment; its duration is 0 until `End`.
    Begin(FetchedSegment),
    /// The next part of the segment begun.
    Part { msn: u64, data: Bytes },
    /// Segment `job.msn` is complete (as the playlist lists it): finish decoding it if it
    /// was begun, and count it as analysed either way.
    End(SegmentJob),
}

/// A fetched segment, ready to decode.
#[derive(Debug, Clone)]
pub struct FetchedSegment {
    pub job: SegmentJob,
    pub init: Option<Bytes>,
    pub data: Bytes,
    pub fetched_at: DateTime<Utc>,
    pub fetch_time: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: no answer within {secs:.1} s")]
    Timeout { url: String, secs: f64 },
    #[error("{url}: larger than the {limit}-byte limit")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: {why}")]
    Transport { url: String, why: String },
    #[error("{url}: byte range {length}@{offset}: {why}")]
    BadRange {
        url: String,
        offset: u64,
        length: u64,
        why: &'static str,
    },
}

/// The HTTP `Range` header value for `length` bytes from `offset`, or why there is none:
/// an empty range, one past `u64::MAX`, or one longer than `limit`.
pub fn range_header(offset: u64, length: u64, limit: usize) -> Result<String, &'static str> {
    if length == 0 {
        return Err("empty");
    }
    if length > limit as u64 {
        return Err("longer than the size limit");
    }
    let last = offset
        .checked_add(length - 1)
        .ok_or("ends beyond 2^64 bytes")?;
    Ok(format!("bytes={offset}-{last}"))
}

/// The `length` bytes from `offset` of a whole resource (a server that ignored our Range
/// answered 200 with all of it), or why they are not there.
pub fn slice_range(body: Bytes, offset: u64, length: u64) -> Result<Bytes, &'static str> {
    let start = usize::try_from(offset).map_err(|_| "beyond the addressable")?;
    let end = usize::try_from(length)
        .ok()
        .and_then(|l| start.checked_add(l))
        .ok_or("ends beyond the addressable")?;
    if end > body.len() {
        return Err("beyond the end of the resource");
    }
    Ok(body.slice(start..end))
}

/// HTTP GETs with a timeout and a size limit.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
}

/// Redirects one request follows at most.
const MAX_REDIRECTS: usize = 5;

impl Fetcher {
    /// Redirects are followed within the requested URL's host only.
    pub fn new() -> Result<Self, IngestError> {
        Self::with_redirect_hosts(&[])
    }

    /// Redirects are followed within the requested URL's host and to `hosts`
    /// (`ingest.redirect_hosts`); one to any other host fails the request, naming it.
    pub fn with_redirect_hosts(hosts: &[String]) -> Result<Self, IngestError> {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            let host = |u: &Url| u.host_str().unwrap_or("").to_ascii_lowercase();
            let to = host(attempt.url());
            let from = attempt.previous().first().map(host).unwrap_or_default();
            if to == from || hosts.contains(&to) {
                attempt.follow()
            } else {
                attempt.error(format!(
                    "redirect from `{from}` to `{to}` refused: not the origin's host nor in ingest.redirect_hosts"
                ))
            }
        });
        let client = reqwest::Client::builder()
            .user_agent(concat!("shopcue/", env!("CARGO_PKG_VERSION")))
            .redirect(policy)
            .no_proxy()
            .build()
            .map_err(|e| IngestError::Http(e.to_string()))?;
        Ok(Self { client })
    }

    pub async fn get(
        &self,
        url: &Url,
        range: Option<(u64, u64)>,
        limit: usize,
        timeout: Duration,
    ) -> Result<Bytes, FetchError> {
        let u = crate::redact::redact_url(url.as_str());
        let bad_range = |(offset, length), why| FetchError::BadRange {
            url: u.clone(),
            offset,
            length,
            why,
        };
        let work = async {
            let mut req = self.client.get(url.clone());
            if let Some((off, len)) = range {
                let header =
                    range_header(off, len, limit).map_err(|why| bad_range((off, len), why))?;
                req = req.header(reqwest::header::RANGE, header);
            }
            let mut resp = req.send().await.map_err(|e| FetchError::Transport {
                url: u.clone(),
                why: describe(e),
            })?;
            let status = resp.status();
            if !status.is_success() {
                return Err(FetchError::Status {
                    url: u.clone(),
                    status: status.as_u16(),
                });
            }
            if resp.content_length().is_some_and(|n| n as usize > limit) {
                return Err(FetchError::TooLarge {
                    url: u.clone(),
                    limit,
                });
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| FetchError::Transport {
                url: u.clone(),
                why: describe(e),
            })? {
                if body.len() + chunk.len() > limit {
                    return Err(FetchError::TooLarge {
                        url: u.clone(),
                        limit,
                    });
                }
                body.extend_from_slice(&chunk);
            }
            // A server that ignored our Range answered 200 with the whole resource.
            if let (Some((off, len)), reqwest::StatusCode::OK) = (range, status) {
                return slice_range(Bytes::from(body), off, len)
                    .map_err(|why| bad_range((off, len), why));
            }
            Ok(Bytes::from(body))
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout {
                url: u,
                secs: timeout.as_secs_f64(),
            }),
        }
    }
}

/// The error and its causes, without the URL (the caller names it, redacted).
fn describe(e: reqwest::Error) -> String {
    use std::error::Error;
    let e = e.without_url();
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s = format!("{s}: {inner}");
        src = inner.source();
    }
    s
}

/// The entry playlist resolved to the media playlist to follow.
pub struct Opened {
    pub media_url: Url,
    pub playlist: MediaPlaylist,
    pub low_latency: Option<LowLatency>,
    pub loaded_at: Instant,
}

/// A playlist, and its LL-HLS parts when it is a media playlist that lists them.
type Loaded = (Playlist, Option<LowLatency>);

/// Load `url` as the playlist of `base` (the URL it resolves against), waiting up to
/// `extra` more than the playlist timeout (a blocking reload).
async fn load_from(
    fetcher: &Fetcher,
    base: &Url,
    url: &Url,
    s: &IngestSettings,
    extra: Duration,
) -> Result<Loaded, IngestError> {
    let body = fetcher
        .get(
            url,
            None,
            s.max_playlist_bytes,
            Duration::from_millis(s.playlist_timeout_ms) + extra,
        )
        .await?;
    let pl = tracker::parse(base, &body)?;
    let ll = match &pl {
        Playlist::MediaPlaylist(_) => tracker::low_latency(base, &body).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring the playlist's LL-HLS parts");
            None
        }),
        Playlist::MasterPlaylist(_) => None,
    };
    Ok((pl, ll))
}

async fn load(fetcher: &Fetcher, url: &Url, s: &IngestSettings) -> Result<Loaded, IngestError> {
    load_from(fetcher, url, url, s, Duration::ZERO).await
}

/// Load the entry URL; for a multivariant playlist, choose the variant and load it.
pub async fn open(
    fetcher: &Fetcher,
    entry: &Url,
    s: &IngestSettings,
) -> Result<Opened, IngestError> {
    let started = Instant::now();
    match load(fetcher, entry, s).await? {
        (Playlist::MediaPlaylist(playlist), low_latency) => Ok(Opened {
            media_url: entry.clone(),
            playlist,
            low_latency,
            loaded_at: started,
        }),
        (Playlist::MasterPlaylist(master), _) => {
            let choice: VariantChoice = s.variant.parse().map_err(|why| IngestError::BadInput {
                input: s.variant.clone(),
                why,
            })?;
            let media_url = tracker::choose_variant(entry, &master, choice)?;
            let started = Instant::now();
            match load(fetcher, &media_url, s).await? {
                (Playlist::MediaPlaylist(playlist), low_latency) => Ok(Opened {
                    media_url,
                    playlist,
                    low_latency,
                    loaded_at: started,
                }),
                (Playlist::MasterPlaylist(_), _) => Err(PlaylistError::Malformed {
                    url: super::redact_url(media_url.as_str()),
                    why: "a variant URI points at another multivariant playlist".into(),
                }
                .into()),
            }
        }
    }
}

/// Back-off that doubles from `initial` to `max`, with ±20 % jitter, never above `max`
/// (it bounds how long a recovered origin waits for us).
struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(s: &IngestSettings) -> Self {
        let initial = Duration::from_millis(s.retry_initial_ms);
        Self {
            initial,
            max: Duration::from_millis(s.retry_max_ms),
            current: initial,
        }
    }
    fn next(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        let jitter = rand::random_range(0.8..1.2);
        d.mul_f64(jitter).min(self.max)
    }
    fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// Why [`follow`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowEnd {
    /// The playlist ended (EXT-X-ENDLIST): no more segments will come.
    Ended,
    /// `cancel` fired, or the decoder stopped taking segments.
    Stopped,
}

/// `cancel` fired or the decoder is gone: [`follow`] returns [`FollowEnd::Stopped`].
struct Stopped;

/// Follow a live (or VOD) media playlist until it ends or `cancel` fires; send each new
/// segment to `out`. Errors are reported through `stats` and retried, never returned.
pub async fn follow(
    fetcher: Fetcher,
    opened: Opened,
    settings: IngestSettings,
    stats: Arc<ChannelStats>,
    out: mpsc::Sender<DecoderInput>,
    cancel: CancellationToken,
) -> FollowEnd {
    let mut follower = Follower::new(fetcher, opened, settings, stats, out, cancel);
    match follower.run().await {
        Ok(()) => FollowEnd::Ended,
        Err(Stopped) => FollowEnd::Stopped,
    }
}

/// What the origin's publishing rhythm taught us, to time the next reload (never earlier
/// than RFC 8216 allows).
struct ReloadTiming {
    lag: tracker::PublishLag,
    /// The live edge of the previous load.
    last_edge: Option<DateTime<Utc>>,
    /// The live edge expected once the next segment is published.
    expected_edge: Option<DateTime<Utc>>,
    /// When the latest load began and ended (wall clock).
    load_started_wall: DateTime<Utc>,
    load_done_wall: DateTime<Utc>,
}

impl ReloadTiming {
    fn new() -> Self {
        Self {
            lag: tracker::PublishLag::default(),
            last_edge: None,
            expected_edge: None,
            load_started_wall: Utc::now(),
            load_done_wall: Utc::now(),
        }
    }

    /// The origin restarted: what was learnt of the old timeline says nothing of the new.
    fn forget(&mut self) {
        self.lag = tracker::PublishLag::default();
        (self.last_edge, self.expected_edge) = (None, None);
    }

    /// Learn from this load: when one new segment appeared, it was published by the time
    /// the load completed; when nothing changed, the expected one was not out yet. Gives
    /// how long after its end the new segment was found, when one was.
    fn learn(&mut self, up: &tracker::Update, target: chrono::Duration) -> Option<f64> {
        let found = match (up.changed, up.live_edge, self.last_edge) {
            (true, Some(edge), Some(prev)) if edge > prev && edge - prev <= target + target / 2 => {
                self.lag.seen(edge, self.load_done_wall);
                (self.load_done_wall - edge)
                    .num_microseconds()
                    .map(|us| us as f64 / 1e6)
            }
            (false, _, _) => {
                if let Some(exp) = self.expected_edge {
                    self.lag.not_yet(exp, self.load_started_wall);
                }
                None
            }
            _ => None,
        };
        if up.live_edge.is_some() {
            self.last_edge = up.live_edge;
        }
        found
    }
}

/// When and how to reload the media playlist next.
struct NextReload {
    due: Instant,
    url: Url,
    /// How much longer than the playlist timeout the origin may hold a blocking reload.
    blocking: Duration,
}

/// The state of [`follow`]'s loop: the playlist as last loaded and what has been handed
/// to the decoder.
struct Follower {
    fetcher: Fetcher,
    media_url: Url,
    /// `media_url` redacted, for logs.
    shown: String,
    settings: IngestSettings,
    stats: Arc<ChannelStats>,
    out: mpsc::Sender<DecoderInput>,
    cancel: CancellationToken,
    current: MediaPlaylist,
    low_latency: Option<LowLatency>,
    loaded_at: Instant,
    parts: PartFollower,
    tracker: PlaylistTracker,
    backoff: Backoff,
    init_cache: InitCache,
    last_change: Instant,
    stalled: bool,
    seg_timeout: Duration,
    timing: ReloadTiming,
}

impl Follower {
    fn new(
        fetcher: Fetcher,
        opened: Opened,
        settings: IngestSettings,
        stats: Arc<ChannelStats>,
        out: mpsc::Sender<DecoderInput>,
        cancel: CancellationToken,
    ) -> Self {
        let Opened {
            media_url,
            playlist,
            low_latency,
            loaded_at,
        } = opened;
        Self {
            shown: super::redact_url(media_url.as_str()),
            media_url,
            parts: PartFollower::default(),
            tracker: PlaylistTracker::new(settings.live_start_segments),
            backoff: Backoff::new(&settings),
            init_cache: HashMap::new(),
            last_change: Instant::now(),
            stalled: false,
            seg_timeout: Duration::from_millis(settings.segment_timeout_ms),
            timing: ReloadTiming::new(),
            current: playlist,
            low_latency,
            loaded_at,
            fetcher,
            settings,
            stats,
            out,
            cancel,
        }
    }

    /// Load after load: read what changed, hand the new segments and parts over, wait,
    /// reload. `Ok` when the playlist ended.
    async fn run(&mut self) -> Result<(), Stopped> {
        loop {
            let mut up = self.read_update();
            let target = Duration::try_from_secs_f64(
                up.target_duration.clamp(1.0, tracker::MAX_DURATION_SECS),
            )
            .unwrap_or(Duration::from_secs(1));
            self.note_update(&up, target);
            let jobs = std::mem::take(&mut up.jobs);
            let mut progressed = self.hand_over_segments(jobs).await?;
            progressed |= self.stream_new_parts(&up).await?;
            self.stats.segments_behind.store(0, ORD);
            if up.ended {
                tracing::info!(url = %self.shown, "playlist ended (EXT-X-ENDLIST)");
                return Ok(());
            }
            let next = self.plan_reload(&up, target, progressed);
            tokio::select! {
                _ = tokio::time::sleep_until(next.due.into()) => {},
                _ = self.cancel.cancelled() => return Err(Stopped),
            }
            self.reload(&next.url, next.blocking).await?;
        }
    }

    /// What changed since the previous load; a refused playlist is counted and skipped
    /// (the next reload may be sound again).
    fn read_update(&mut self) -> tracker::Update {
        match self
            .tracker
            .update(&self.media_url, &self.current, Utc::now())
        {
            Ok(up) => up,
            Err(e) => {
                self.stats.playlist_errors.fetch_add(1, ORD);
                if self.stats.error(&e.to_string(), ChannelState::Degraded) {
                    tracing::warn!(error = %e, "playlist refused; reloading");
                }
                tracker::Update::default()
            }
        }
    }

    /// Report what this load says (a restart, skipped segments, a stall or its end, the
    /// live edge) and learn the origin's publishing rhythm from it.
    fn note_update(&mut self, up: &tracker::Update, target: Duration) {
        let shown = &self.shown;
        let stats = &self.stats;
        if up.reset {
            stats.resets.fetch_add(1, ORD);
            stats.analysis.restart();
            self.timing.forget();
            tracing::warn!(url = %shown, "media sequence went back with new content: origin restarted, following from the live edge");
        }
        if up.skipped > 0 {
            stats.segments_skipped.fetch_add(up.skipped, ORD);
            tracing::warn!(url = %shown, skipped = up.skipped, "segments left the playlist before they were fetched");
        }
        if up.stale {
            tracing::debug!(url = %shown, "ignoring a playlist older than one already seen");
        }
        if up.changed {
            self.last_change = Instant::now();
            if self.stalled {
                self.stalled = false;
                stats.ok();
                tracing::info!(url = %shown, "playlist moves again");
            }
        }
        if !up.changed
            && !up.ended
            && !self.stalled
            && self.last_change.elapsed() > target.mul_f64(self.settings.stall_target_durations)
        {
            self.stalled = true;
            stats.stalls.fetch_add(1, ORD);
            stats.error(
                &format!(
                    "playlist {shown} unchanged for {:.1} s",
                    self.last_change.elapsed().as_secs_f64()
                ),
                ChannelState::Stalled,
            );
            tracing::warn!(url = %shown, "playlist stalled");
        }
        if let Some(edge) = up.live_edge {
            stats.set_live_edge(edge);
        }
        let found = self.timing.learn(up, chrono_target(target));
        // Only the origin's own clock says when a segment ended.
        if let (Some(secs), Some(m)) = (found, &stats.metrics)
            && up.jobs.last().is_some_and(|j| j.origin_pdt)
        {
            m.observe_segment_discovery(secs);
        }
    }

    /// Hand the new complete segments to the decoder, in order: a segment streamed part by
    /// part gets its last parts and its end, any other is fetched whole. True when there
    /// was any.
    async fn hand_over_segments(&mut self, jobs: Vec<SegmentJob>) -> Result<bool, Stopped> {
        let remaining = jobs.len();
        for (i, job) in jobs.into_iter().enumerate() {
            self.stats
                .segments_behind
                .store((remaining - i) as u64, ORD);
            self.parts.seen(&job);
            if let Some(end) = self.parts.close_other(job.msn) {
                self.send(end).await?;
            }
            if let Some(rest) = self.parts.complete(&job, self.low_latency.as_ref()) {
                self.finish_streamed(job, rest).await?;
                continue;
            }
            let Some(seg) = fetch_segment(
                &self.fetcher,
                job,
                &self.settings,
                &self.stats,
                &mut self.init_cache,
                self.seg_timeout,
                &self.cancel,
            )
            .await
            else {
                self.stopped_if_cancelled()?;
                continue;
            };
            self.send(DecoderInput::Segment(seg)).await?;
        }
        Ok(remaining > 0)
    }

    /// A segment streamed part by part is complete: its `rest` parts, then its end. A part
    /// that cannot be fetched loses the rest of the segment, which ends there.
    async fn finish_streamed(
        &mut self,
        job: SegmentJob,
        rest: Vec<tracker::PartRef>,
    ) -> Result<(), Stopped> {
        for part in rest {
            let Some((data, _)) = self.fetch_part(&part).await else {
                self.stopped_if_cancelled()?;
                self.stats.segments_lost.fetch_add(1, ORD);
                break;
            };
            self.send(DecoderInput::Part {
                msn: part.msn,
                data,
            })
            .await?;
        }
        self.send(DecoderInput::End(job)).await
    }

    /// LL-HLS: hand over the parts of the segment in progress listed since the last load.
    /// A part that cannot be fetched (or its init section) is asked for again at the next
    /// reload. True when any was handed over.
    async fn stream_new_parts(&mut self, up: &tracker::Update) -> Result<bool, Stopped> {
        let (Some(ll), Some(msn), false, false) = (
            &self.low_latency,
            self.tracker.next_msn(),
            up.ended,
            up.stale,
        ) else {
            return Ok(false);
        };
        let mut progressed = false;
        for part in self.parts.new_parts(ll, msn) {
            let init = match (&self.parts.init, &self.parts.streaming) {
                (Some(key), None) => {
                    let init = fetch_init(
                        &self.fetcher,
                        key,
                        &self.settings,
                        &self.stats,
                        &mut self.init_cache,
                        self.seg_timeout,
                        &self.cancel,
                    )
                    .await;
                    if init.is_none() {
                        self.stopped_if_cancelled()?;
                        break;
                    }
                    init
                }
                _ => None,
            };
            let Some((data, took)) = self.fetch_part(&part).await else {
                self.stopped_if_cancelled()?;
                break;
            };
            progressed = true;
            let edge = up.live_edge.unwrap_or_else(Utc::now);
            let piece = self.parts.fetched(&part, data, init, edge, took);
            self.send(piece).await?;
        }
        Ok(progressed)
    }

    /// When and how to reload. RFC 8216 §6.3.4: a target duration after a changed reload
    /// (from when that load began), half of it after an unchanged one; after a change,
    /// later when the origin's publishing rhythm says the next segment comes later (so the
    /// reload lands just after it appears), up to twice the target duration. LL-HLS
    /// (RFC 8216bis §6.3.4): with blocking reloads, ask at once for the next part (the
    /// origin answers when it is listed); without, reload every part target.
    fn plan_reload(
        &mut self,
        up: &tracker::Update,
        target: Duration,
        progressed: bool,
    ) -> NextReload {
        let loaded_at = self.loaded_at;
        let wait = if up.changed { target } else { target / 2 };
        let mut due = loaded_at + wait;
        if up.changed
            && let Some(edge) = up.live_edge
        {
            let target_chrono = chrono_target(target);
            self.timing.expected_edge = Some(edge + target_chrono);
            if let Some(at) = self.timing.lag.next_reload(edge, target_chrono)
                && let Ok(ahead) = (at - Utc::now()).to_std()
            {
                let later = Instant::now().checked_add(ahead).unwrap_or(due);
                due = due.max(later).min(loaded_at + target * 2);
            }
        }
        let mut url = self.media_url.clone();
        let mut blocking = Duration::ZERO;
        if let (Some(ll), Some(next)) = (&self.low_latency, self.tracker.next_msn()) {
            let part_target = Duration::from_secs_f64(ll.part_target.clamp(0.05, 10.0));
            if ll.can_block_reload {
                let (msn, part) = self.parts.next_wanted(next);
                url.query_pairs_mut()
                    .append_pair("_HLS_msn", &msn.to_string())
                    .append_pair("_HLS_part", &part.to_string());
                blocking = target * 3;
                // An answer that brought nothing new: do not spin on it.
                due = if progressed {
                    Instant::now()
                } else {
                    loaded_at + part_target / 2
                };
            } else {
                due = loaded_at + part_target;
            }
        }
        NextReload { due, url, blocking }
    }

    /// Reload the media playlist from `url`, retrying with back-off until it works or we
    /// are cancelled.
    async fn reload(&mut self, url: &Url, blocking: Duration) -> Result<(), Stopped> {
        loop {
            self.loaded_at = Instant::now();
            self.timing.load_started_wall = Utc::now();
            match load_from(
                &self.fetcher,
                &self.media_url,
                url,
                &self.settings,
                blocking,
            )
            .await
            {
                Ok((Playlist::MediaPlaylist(p), ll)) => {
                    self.timing.load_done_wall = Utc::now();
                    self.current = p;
                    self.low_latency = ll;
                    self.backoff.reset();
                    if !self.stalled {
                        self.stats.ok();
                    }
                    return Ok(());
                }
                Ok((Playlist::MasterPlaylist(_), _)) => {
                    self.stats.playlist_errors.fetch_add(1, ORD);
                    self.stats.error(
                        &format!("{}: became a multivariant playlist", self.shown),
                        ChannelState::Degraded,
                    );
                }
                Err(e) => {
                    self.stats.playlist_errors.fetch_add(1, ORD);
                    if self.stats.error(&e.to_string(), ChannelState::Degraded) {
                        tracing::warn!(error = %e, "playlist reload failed; retrying");
                    }
                }
            }
            let pause = self.backoff.next();
            tokio::select! {
                _ = tokio::time::sleep(pause) => {},
                _ = self.cancel.cancelled() => return Err(Stopped),
            }
        }
    }

    /// An LL-HLS part, with retries.
    async fn fetch_part(&self, part: &tracker::PartRef) -> Option<(Bytes, Duration)> {
        fetch_part(
            &self.fetcher,
            part,
            &self.settings,
            &self.stats,
            self.seg_timeout,
            &self.cancel,
        )
        .await
    }

    /// Send a piece to the decoder.
    async fn send(&self, piece: DecoderInput) -> Result<(), Stopped> {
        if send(&self.out, piece, &self.cancel).await {
            Ok(())
        } else {
            Err(Stopped)
        }
    }

    /// A fetch gave up: stop when that was because we are cancelled.
    fn stopped_if_cancelled(&self) -> Result<(), Stopped> {
        if self.cancel.is_cancelled() {
            Err(Stopped)
        } else {
            Ok(())
        }
    }
}

/// A target duration as a chrono duration (2 s if it does not fit).
fn chrono_target(target: Duration) -> chrono::Duration {
    chrono::Duration::from_std(target).unwrap_or(chrono::Duration::seconds(2))
}

/// Send a piece to the decoder; false when it is gone or we are cancelled.
async fn send(
    out: &mpsc::Sender<DecoderInput>,
    piece: DecoderInput,
    cancel: &CancellationToken,
) -> bool {
    tokio::select! {
        r = out.send(piece) => r.is_ok(),
        _ = cancel.cancelled() => false,
    }
}

/// Which parts of which segment have been handed to the decoder (LL-HLS). A part that
/// cannot be fetched is asked for again at the next reload; a segment none of whose parts
/// were decoded is fetched whole when complete.
#[derive(Debug, Default)]
struct PartFollower {
    /// The segment being streamed: its job (as begun) and the next part index.
    streaming: Option<(SegmentJob, usize)>,
    /// The EXT-X-MAP of the newest segment (for the next one's first part).
    init: Option<(Url, Option<(u64, u64)>)>,
    /// Whether the newest segment's clock came from the origin's PDT.
    origin_pdt: bool,
}

impl PartFollower {
    /// The newest complete segment is `job`.
    fn seen(&mut self, job: &SegmentJob) {
        if job.init.is_some() {
            self.init = job.init.clone();
        }
        self.origin_pdt = job.origin_pdt;
    }

    /// A stream of a segment other than `msn` (the playlist moved elsewhere: an origin
    /// restart, a jump) ends here.
    fn close_other(&mut self, msn: u64) -> Option<DecoderInput> {
        match &self.streaming {
            Some((job, _)) if job.msn != msn => {
                self.streaming.take().map(|(j, _)| DecoderInput::End(j))
            }
            _ => None,
        }
    }

    /// `job` is complete: `None` to fetch it whole, else it was streamed and these are its
    /// parts still to fetch before its `End`.
    fn complete(
        &mut self,
        job: &SegmentJob,
        ll: Option<&LowLatency>,
    ) -> Option<Vec<tracker::PartRef>> {
        if !matches!(&self.streaming, Some((begun, _)) if begun.msn == job.msn) {
            return None;
        }
        let (_, next) = self.streaming.take()?;
        Some(
            ll.map(|ll| ll.parts_of(job.msn, next).cloned().collect())
                .unwrap_or_default(),
        )
    }

    /// The parts of segment `msn` (in progress) not handed over yet.
    fn new_parts(&self, ll: &LowLatency, msn: u64) -> Vec<tracker::PartRef> {
        match &self.streaming {
            None => ll.parts_of(msn, 0).cloned().collect(),
            Some((job, next)) if job.msn == msn => ll.parts_of(msn, *next).cloned().collect(),
            Some(_) => Vec::new(),
        }
    }

    /// `part` was fetched: the piece to hand over. The first part begins the segment, with
    /// its clock predicted as the live edge (`edge`, the end of the newest complete one).
    fn fetched(
        &mut self,
        part: &tracker::PartRef,
        data: Bytes,
        init: Option<Bytes>,
        edge: DateTime<Utc>,
        fetch_time: Duration,
    ) -> DecoderInput {
        if let Some((_, next)) = &mut self.streaming {
            *next += 1;
            return DecoderInput::Part {
                msn: part.msn,
                data,
            };
        }
        let job = SegmentJob {
            msn: part.msn,
            url: part.url.clone(),
            range: part.range,
            init: self.init.clone(),
            duration: 0.0,
            wallclock: edge,
            origin_pdt: self.origin_pdt,
            discontinuity: part.discontinuity,
        };
        self.streaming = Some((job.clone(), part.index + 1));
        DecoderInput::Begin(FetchedSegment {
            job,
            init,
            data,
            fetched_at: Utc::now(),
            fetch_time,
        })
    }

    /// The part a blocking reload asks for: the next of the segment streamed, else the
    /// first of segment `next`.
    fn next_wanted(&self, next: u64) -> (u64, usize) {
        match &self.streaming {
            Some((job, k)) => (job.msn, *k),
            None => (next, 0),
        }
    }
}

/// GET with retries and back-off (`segment_attempts`), counting errors.
async fn fetch_with_retry(
    fetcher: &Fetcher,
    url: &Url,
    range: Option<(u64, u64)>,
    s: &IngestSettings,
    stats: &ChannelStats,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Option<(Bytes, Duration)> {
    let mut backoff = Backoff::new(s);
    for attempt in 1..=s.segment_attempts {
        let started = Instant::now();
        match fetcher.get(url, range, s.max_segment_bytes, timeout).await {
            Ok(data) => return Some((data, started.elapsed())),
            Err(e) => {
                stats.fetch_errors.fetch_add(1, ORD);
                let last = attempt == s.segment_attempts;
                stats.error(&e.to_string(), ChannelState::Degraded);
                tracing::warn!(attempt, error = %e, "fetch failed{}", if last { "; giving it up" } else { "" });
                if last {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next()) => {},
                    _ = cancel.cancelled() => return None,
                }
            }
        }
    }
    None
}

/// An LL-HLS part, with retries.
async fn fetch_part(
    fetcher: &Fetcher,
    part: &tracker::PartRef,
    s: &IngestSettings,
    stats: &ChannelStats,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Option<(Bytes, Duration)> {
    let got = fetch_with_retry(fetcher, &part.url, part.range, s, stats, timeout, cancel).await;
    if let Some((_, took)) = &got {
        stats.parts_fetched.fetch_add(1, ORD);
        stats.record_fetch(*took);
    }
    got
}

/// An EXT-X-MAP init section, from the cache (which keeps the newest one) or fetched with
/// retries.
async fn fetch_init(
    fetcher: &Fetcher,
    key: &(Url, Option<(u64, u64)>),
    s: &IngestSettings,
    stats: &ChannelStats,
    cache: &mut InitCache,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Option<Bytes> {
    if let Some(b) = cache.get(key) {
        return Some(b.clone());
    }
    let (b, _) = fetch_with_retry(fetcher, &key.0, key.1, s, stats, timeout, cancel).await?;
    cache.clear();
    cache.insert(key.clone(), b.clone());
    Some(b)
}

const ORD: std::sync::atomic::Ordering = std::sync::atomic::Ordering::Relaxed;

async fn fetch_segment(
    fetcher: &Fetcher,
    job: SegmentJob,
    s: &IngestSettings,
    stats: &ChannelStats,
    init_cache: &mut InitCache,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Option<FetchedSegment> {
    let started = Instant::now();
    let init = match &job.init {
        Some(key) => {
            let Some(b) = fetch_init(fetcher, key, s, stats, init_cache, timeout, cancel).await
            else {
                if !cancel.is_cancelled() {
                    tracing::warn!(msn = job.msn, url = %super::redact_url(key.0.as_str()), "init section given up");
                    stats.segments_lost.fetch_add(1, ORD);
                }
                return None;
            };
            Some(b)
        }
        None => None,
    };
    let Some((data, _)) =
        fetch_with_retry(fetcher, &job.url, job.range, s, stats, timeout, cancel).await
    else {
        if !cancel.is_cancelled() {
            tracing::warn!(msn = job.msn, url = %super::redact_url(job.url.as_str()), "segment given up");
            stats.segments_lost.fetch_add(1, ORD);
        }
        return None;
    };
    let fetch_time = started.elapsed();
    stats.segments_fetched.fetch_add(1, ORD);
    stats.record_fetch(fetch_time);
    Some(FetchedSegment {
        job,
        init,
        data,
        fetched_at: Utc::now(),
        fetch_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_headers_never_overflow() {
        let limit = 1 << 20;
        assert_eq!(range_header(0, 100, limit).unwrap(), "bytes=0-99");
        assert_eq!(
            range_header(u64::MAX, 1, limit).unwrap(),
            format!("bytes={0}-{0}", u64::MAX)
        );
        assert_eq!(
            range_header(u64::MAX, 2, limit),
            Err("ends beyond 2^64 bytes")
        );
        assert_eq!(
            range_header(2, u64::MAX, limit),
            Err("longer than the size limit")
        );
        assert_eq!(range_header(2, 0, limit), Err("empty"));
    }

    #[test]
    fn a_range_sliced_from_a_whole_resource_is_checked() {
        let body = Bytes::from_static(b"0123456789");
        assert_eq!(
            slice_range(body.clone(), 2, 3).unwrap(),
            Bytes::from_static(b"234")
        );
        assert_eq!(slice_range(body.clone(), 0, 10).unwrap(), body);
        // The panic seen in the field: start u64::MAX, end wrapped to 1.
        assert!(slice_range(body.clone(), u64::MAX, 2).is_err());
        assert!(slice_range(body.clone(), 2, u64::MAX).is_err());
        assert!(slice_range(body, 8, 3).is_err(), "past the end");
    }
}
