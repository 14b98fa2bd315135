//! The sidecar's HLS proxy: `GET /hls/{channel}/{rel}` serves the channel's origin
//! playlists (and, with `manifest.segment_uris = "proxy"`, its segments) with the cues
//! written in (docs/manifest.md). `rel` is taken raw from the request (not decoded) and
//! resolved by [`ChannelOrigin::origin_url`], so only URLs under a configured channel's
//! base are ever fetched. Rewritten playlists are cached per (channel, rel) for half a
//! target duration, and concurrent misses of one key wait for a single origin fetch; a
//! fresh one is served before any URL resolution (the hot path). Proxied segments go
//! through the bounded [`super::segment_cache`] the same way (one origin fetch per
//! segment, whatever the client's query string adds). Every origin fetch holds one of
//! `manifest.max_origin_fetches` slots, or the request is answered 503. With `manifest.id3`,
//! proxied segments overlapping a cue get it as timed ID3: a PES stream in MPEG-TS, `emsg`
//! boxes in fMP4 (segments under an `EXT-X-MAP`; init sections fetched once, kept bounded).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::segment_cache::{SegmentCache, SegmentKey};
use crate::cue::{Cue, CueEvent};
use crate::cuebus::{CueBus, Offset, Replay};
use crate::ingest::hls::{FetchError, Fetcher};
use crate::ingest::settings::{ChannelSettings, IngestSettings};
use crate::manifest::rewrite::{PlaylistKind, RewriteContext, UriMode};
use crate::manifest::{
    ChannelOrigin, CueLedger, ManifestSettings, SegmentTiming, emsg, hold_back, id3, playlist_kind,
    rewrite_media_playlist, rewrite_multivariant, ts,
};
use crate::progress::AnalysisProgress;

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
/// Cached playlists (and recent error answers) kept per channel; beyond, stale ones are
/// dropped.
const MAX_CACHE_ENTRIES: usize = 4096;
/// Segment timings remembered per channel for ID3 (a few live windows).
const MAX_SEGMENT_TIMES: usize = 4096;
/// fMP4 init sections kept per channel; when full, all are dropped (counted) and refetched.
const MAX_INIT_SECTIONS: usize = 32;
/// How long an origin error answer is reused (so a dead origin is not hammered).
const ERROR_TTL: Duration = Duration::from_millis(500);
/// Multivariant playlists (no target duration) are reused this long.
const MULTIVARIANT_TTL: Duration = Duration::from_secs(1);
/// Ended cues are dropped from the ledger this long after their end.
const LEDGER_KEEP: chrono::TimeDelta = chrono::TimeDelta::hours(2);

#[derive(Debug, thiserror::Error)]
pub enum HlsError {
    #[error("channels[{index}] ({id}): {why}")]
    Channel {
        index: usize,
        id: String,
        why: String,
    },
}

/// Counters of the proxy (all channels).
#[derive(Debug, Default)]
pub struct HlsStats {
    pub playlist_requests: AtomicU64,
    pub cache_hits: AtomicU64,
    pub origin_fetches: AtomicU64,
    pub origin_errors: AtomicU64,
    pub segments_proxied: AtomicU64,
    pub id3_segments: AtomicU64,
    pub id3_errors: AtomicU64,
    pub refused_paths: AtomicU64,
    /// fMP4 segments given `emsg` boxes (also counted in `id3_segments`).
    pub emsg_segments: AtomicU64,
    /// fMP4 init sections fetched from the origin; cache flushes when full.
    pub init_fetches: AtomicU64,
    pub init_cache_flushes: AtomicU64,
    /// Requests answered 503 because `manifest.max_origin_fetches` were all in flight.
    pub fetches_refused: AtomicU64,
    /// Requests whose client query parameters were left out (`manifest.client_query`).
    pub client_query_ignored: AtomicU64,
    /// Segments (and byte ranges) fetched from the origin for the proxy.
    pub segment_fetches: AtomicU64,
    /// Proxied segments served from the segment cache (`manifest.segment_cache_mb`).
    pub segment_cache_hits: AtomicU64,
}

#[derive(Debug, Clone)]
struct SegTime {
    start: DateTime<Utc>,
    duration: f64,
    in_ad_break: bool,
    /// The fMP4 init section in effect (rel path under the channel's base, byte range).
    init: Option<InitRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct InitRef {
    rel: String,
    range: Option<(u64, u64)>,
}

/// One served channel: its origin, cue ledger, analysis progress and hold-back gauges.
pub struct HlsChannel {
    pub id: String,
    pub origin: ChannelOrigin,
    ledger: RwLock<CueLedger>,
    /// Latest state of each cue of the ledger (ID3 carries the latest state).
    cues: Mutex<HashMap<String, Cue>>,
    pub analysis: Arc<AnalysisProgress>,
    /// rel path of a segment → its wall-clock range (from the last media rewrites).
    segments: Mutex<HashMap<String, SegTime>>,
    /// fMP4 init sections fetched (bounded by `MAX_INIT_SECTIONS`), and one fetch at a time.
    inits: Mutex<HashMap<InitRef, Bytes>>,
    init_fetch: tokio::sync::Mutex<()>,
    /// Rewritten playlists by raw rel path (query included), and recent error answers.
    playlists: Mutex<HashMap<String, Arc<Slot>>>,
    /// Gauge: latency hold-back added to the last media playlist served, ms.
    pub holdback_delay_ms: AtomicU64,
    /// Segments published by the deadline rather than by analysis.
    pub holdback_forced: AtomicU64,
    /// Cue events applied; events the ledger refused.
    pub cue_events: AtomicU64,
    pub cue_errors: AtomicU64,
    /// Query parameter names the origin writes in its URIs (and the channel URL's): the
    /// ones a client request keeps (`manifest.client_query = "origin"`), bounded.
    query_names: Mutex<HashSet<String>>,
}

/// Query parameter names a channel learns from its origin at most.
const MAX_QUERY_NAMES: usize = 64;

impl HlsChannel {
    fn learn_query_names(&self, text: &str) {
        let names = crate::manifest::query::uri_query_names(text);
        if names.is_empty() {
            return;
        }
        let mut known = lock(&self.query_names);
        for n in names {
            if known.len() >= MAX_QUERY_NAMES {
                break;
            }
            known.insert(n);
        }
    }

    fn knows_query_name(&self, name: &str) -> bool {
        lock(&self.query_names).contains(name)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

impl HlsChannel {
    /// Feed one cue event (what the bus task does; public for tests and other feeders).
    pub fn apply(&self, event: &CueEvent) {
        self.cue_events.fetch_add(1, Ordering::Relaxed);
        let applied = {
            let mut l = self.ledger.write().unwrap_or_else(|p| p.into_inner());
            l.apply(event)
        };
        if let Err(e) = applied {
            self.cue_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(channel = %self.id, error = %e, "cue refused by the playlist ledger");
            return;
        }
        let cue = event.cue();
        let mut cues = lock(&self.cues);
        cues.insert(cue.id.clone(), cue.clone());
        if cues.len() > MAX_SEGMENT_TIMES {
            let l = self.ledger.read().unwrap_or_else(|p| p.into_inner());
            cues.retain(|id, _| l.get(id).is_some());
        }
    }

    /// The cached answer for `rel` if still fresh.
    fn fresh_playlist(&self, rel: &str) -> Option<Cached> {
        let slot = lock(&self.playlists).get(rel).cloned()?;
        slot.fresh()
    }

    /// The bus's open cues (a snapshot) into the ledger; a cue the ledger holds open that
    /// the snapshot does not list has ended unseen: it ends at its last known sighting.
    fn reconcile(&self, open: &[Cue]) {
        let missed: Vec<Cue> = lock(&self.cues)
            .values()
            .filter(|c| c.end.is_none() && !open.iter().any(|o| o.id == c.id))
            .cloned()
            .collect();
        for mut cue in missed {
            let last = cue.boxes.iter().map(|b| b.t).max().unwrap_or(cue.start);
            cue.end = Some(last.max(cue.start));
            self.apply(&CueEvent::End(cue));
        }
        for cue in open {
            self.apply(&CueEvent::Start(cue.clone()));
        }
    }

    fn prune(&self, now: DateTime<Utc>) {
        let mut l = self.ledger.write().unwrap_or_else(|p| p.into_inner());
        if l.prune_ended_before(now - LEDGER_KEEP) > 0 {
            lock(&self.cues).retain(|id, _| l.get(id).is_some());
        }
    }

    /// Cues overlapping `[from, to)`, latest state.
    fn cues_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Cue> {
        let mut v: Vec<Cue> = lock(&self.cues)
            .values()
            .filter(|c| c.start < to && c.end.is_none_or(|e| e >= from))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.id.cmp(&b.id)));
        v
    }
}

#[derive(Clone)]
struct Cached {
    at: Instant,
    ttl: Duration,
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
}

#[derive(Default)]
struct Slot {
    value: Mutex<Option<Cached>>,
    refresh: tokio::sync::Mutex<()>,
}

impl Slot {
    fn fresh(&self) -> Option<Cached> {
        lock(&self.value)
            .as_ref()
            .filter(|c| c.at.elapsed() < c.ttl)
            .cloned()
    }
}

struct Inner {
    /// The channels served now (added and removed at runtime).
    channels: RwLock<HashMap<String, Arc<HlsChannel>>>,
    fetcher: Fetcher,
    manifest: ManifestSettings,
    uri_mode: UriMode,
    max_playlist_bytes: usize,
    max_segment_bytes: usize,
    playlist_timeout: Duration,
    segment_timeout: Duration,
    /// Off: every playlist request fetches and rewrites (benchmarks, diagnostics).
    playlist_cache: AtomicBool,
    /// `manifest.client_query = "all"`: client query strings pass on whole.
    client_query_all: bool,
    /// One permit per origin fetch in flight (`manifest.max_origin_fetches`).
    fetch_slots: tokio::sync::Semaphore,
    /// Origin segments (`manifest.segment_cache_mb`; none at 0).
    segment_cache: Option<SegmentCache<Cached>>,
    stats: HlsStats,
}

/// Shared state of the router; cheap to clone.
#[derive(Clone)]
pub struct HlsState {
    inner: Arc<Inner>,
}

impl HlsState {
    /// One served channel per HLS channel of `channels` (http/https URLs; others
    /// are skipped). `progress`: each channel's ingest analysis progress
    /// (`ingest::Channel.stats.analysis`); a channel without one gets an empty progress
    /// (no anchors: PDTs only from the origin; hold-back only by deadline).
    pub fn new(
        channels: &[ChannelSettings],
        manifest: &ManifestSettings,
        ingest: &IngestSettings,
        fetcher: Fetcher,
        progress: &HashMap<String, Arc<AnalysisProgress>>,
    ) -> Result<Self, HlsError> {
        let i = ingest;
        let state = Self {
            inner: Arc::new(Inner {
                channels: RwLock::new(HashMap::new()),
                fetcher,
                uri_mode: manifest.uri_mode(),
                manifest: manifest.clone(),
                max_playlist_bytes: i.max_playlist_bytes,
                max_segment_bytes: i.max_segment_bytes,
                playlist_timeout: Duration::from_millis(i.playlist_timeout_ms),
                segment_timeout: Duration::from_millis(i.segment_timeout_ms),
                playlist_cache: AtomicBool::new(true),
                client_query_all: manifest.client_query == "all",
                fetch_slots: tokio::sync::Semaphore::new(manifest.max_origin_fetches.max(1)),
                segment_cache: (manifest.segment_cache_mb > 0).then(|| {
                    SegmentCache::new(
                        manifest.segment_cache_mb.saturating_mul(1 << 20),
                        Duration::from_millis(manifest.segment_cache_ttl_ms),
                    )
                }),
                stats: HlsStats::default(),
            }),
        };
        for (index, c) in channels.iter().enumerate() {
            let analysis = progress.get(&c.id).cloned().unwrap_or_default();
            state.add(c, analysis).map_err(|why| HlsError::Channel {
                index,
                id: c.id.clone(),
                why,
            })?;
        }
        Ok(state)
    }

    /// Serve channel `c` (replacing one of the same id) with its analysis progress; `None`
    /// for a channel that is not HTTP(S) (SRT, a file: nothing to proxy). `Err(why)` when
    /// its URL cannot be an origin.
    pub fn add(
        &self,
        c: &ChannelSettings,
        analysis: Arc<AnalysisProgress>,
    ) -> Result<Option<Arc<HlsChannel>>, String> {
        if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
            self.remove(&c.id);
            return Ok(None);
        }
        let origin = ChannelOrigin::new(&c.url, &ChannelOrigin::default_prefix(&c.id))
            .map_err(|e| e.to_string())?;
        let ch = Arc::new(HlsChannel {
            id: c.id.clone(),
            origin,
            ledger: RwLock::new(CueLedger::from_settings(&self.inner.manifest)),
            cues: Mutex::new(HashMap::new()),
            analysis,
            segments: Mutex::new(HashMap::new()),
            inits: Mutex::new(HashMap::new()),
            init_fetch: tokio::sync::Mutex::new(()),
            playlists: Mutex::new(HashMap::new()),
            holdback_delay_ms: AtomicU64::new(0),
            holdback_forced: AtomicU64::new(0),
            cue_events: AtomicU64::new(0),
            cue_errors: AtomicU64::new(0),
            query_names: Mutex::new(HashSet::new()),
        });
        // The channel URL's own parameters (e.g. a token) are the origin's too.
        ch.learn_query_names(&c.url);
        self.forget_segments(&c.id);
        write(&self.inner.channels).insert(c.id.clone(), ch.clone());
        Ok(Some(ch))
    }

    /// Stop serving channel `id` (its requests answer 404 from now on).
    pub fn remove(&self, id: &str) -> Option<Arc<HlsChannel>> {
        self.forget_segments(id);
        write(&self.inner.channels).remove(id)
    }

    /// Drops the cached segments of channel `id` (removed, or its origin replaced).
    fn forget_segments(&self, id: &str) {
        if let Some(cache) = &self.inner.segment_cache {
            cache.forget_channel(id);
        }
    }

    pub fn channel(&self, id: &str) -> Option<Arc<HlsChannel>> {
        read(&self.inner.channels).get(id).cloned()
    }

    pub fn stats(&self) -> &HlsStats {
        &self.inner.stats
    }

    /// Turns the rewritten-playlist cache on (the default) or off: off, every request
    /// fetches the origin playlist and rewrites it (what `shopcue bench hls` measures).
    pub fn set_playlist_cache(&self, on: bool) {
        self.inner.playlist_cache.store(on, Ordering::Relaxed);
        if !on {
            for ch in read(&self.inner.channels).values() {
                lock(&ch.playlists).clear();
            }
        }
    }

    /// One task per channel keeping its ledger in step with the bus: snapshot, then every
    /// live event (re-snapshot after a lag). Call from within a tokio runtime.
    pub fn spawn_cue_feeds(
        &self,
        bus: Arc<dyn CueBus>,
        stop: CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        read(&self.inner.channels)
            .values()
            .map(|ch| spawn_cue_feed(ch.clone(), bus.clone(), stop.clone()))
            .collect()
    }
}

/// Whether channel `c` can be served: `Err(why)` when its HTTP(S) URL cannot be an origin
/// (other URLs are not proxied, and pass).
pub fn check_origin(c: &ChannelSettings) -> Result<(), String> {
    if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
        return Ok(());
    }
    ChannelOrigin::new(&c.url, &ChannelOrigin::default_prefix(&c.id))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The task keeping one channel's ledger in step with the bus until `stop`.
pub fn spawn_cue_feed(
    ch: Arc<HlsChannel>,
    bus: Arc<dyn CueBus>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(feed_ledger(ch, bus, stop))
}

async fn feed_ledger(ch: Arc<HlsChannel>, bus: Arc<dyn CueBus>, stop: CancellationToken) {
    let retry = Duration::from_secs(1);
    // The offset the ledger reflects, kept across re-subscriptions: after a lag the
    // missed events are replayed, so a cue that ended meanwhile gets its END-DATE.
    let mut seen: Option<Offset> = None;
    loop {
        let mut rx = tokio::select! {
            _ = stop.cancelled() => return,
            r = bus.subscribe(&ch.id) => match r {
                Ok(rx) => rx,
                Err(e) => {
                    tracing::warn!(channel = %ch.id, error = %e, "HLS cue feed: subscribe failed; retrying");
                    tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(retry) => continue }
                }
            },
        };
        let mut at = catch_up(&ch, bus.as_ref(), seen).await;
        let mut prune = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = prune.tick() => ch.prune(Utc::now()),
                r = rx.recv() => match r {
                    Ok(rec) => {
                        if rec.offset > at {
                            ch.apply(&rec.event);
                            at = rec.offset;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(channel = %ch.id, missed = n, "HLS cue feed lagged; replaying what it missed");
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(retry) => break }
                    }
                },
            }
        }
        seen = Some(at);
    }
}

/// Bring the ledger up to the bus: the records after `seen` when the history still has
/// them, else the snapshot, with every cue the ledger holds open that the snapshot does
/// not list ended (its end was missed). The offset the ledger now reflects.
async fn catch_up(ch: &HlsChannel, bus: &dyn CueBus, seen: Option<Offset>) -> Offset {
    if let Some(after) = seen {
        match bus.replay(&ch.id, after).await {
            Ok(Replay::Records(records)) => {
                let mut at = after;
                for r in records.iter().filter(|r| r.offset > after) {
                    ch.apply(&r.event);
                    at = r.offset;
                }
                return at;
            }
            Ok(Replay::NotInHistory) => {
                tracing::warn!(channel = %ch.id, "HLS cue feed: missed events are no longer in the history; reconciling with the snapshot");
            }
            Err(e) => {
                tracing::warn!(channel = %ch.id, error = %e, "HLS cue feed: replay failed; reconciling with the snapshot");
            }
        }
    }
    match bus.snapshot(&ch.id).await {
        Ok(s) => {
            ch.reconcile(&s.cues);
            s.offset
        }
        Err(e) => {
            tracing::warn!(channel = %ch.id, error = %e, "HLS cue feed: snapshot failed; live events only");
            seen.unwrap_or(Offset::ZERO)
        }
    }
}

/// `GET /hls/{channel}/{*path}`.
pub fn router(state: HlsState) -> Router {
    Router::new()
        .route("/hls/{channel}/{*path}", get(handle))
        .with_state(state)
}

/// Serve [`router`] alone on `listener` until `shutdown` (tests, benchmarks; the sidecar
/// merges the router into its own server).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HlsState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    super::server::serve(listener, router(state), shutdown).await
}

fn error_answer(status: StatusCode, msg: &str) -> Cached {
    let body = serde_json::json!({ "error": msg }).to_string() + "\n";
    Cached {
        at: Instant::now(),
        ttl: ERROR_TTL,
        status,
        content_type: "application/json",
        body: Bytes::from(body),
    }
}

/// The answer when every origin fetch slot is taken: 503, try again in a second.
fn busy(st: &Inner) -> Response {
    st.stats.fetches_refused.fetch_add(1, Ordering::Relaxed);
    let mut r = respond(error_answer(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many origin fetches in flight (manifest.max_origin_fetches)",
    ));
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

fn respond(c: Cached) -> Response {
    let mut r = (c.status, c.body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(c.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn fetch_error(st: &Inner, e: &FetchError, what: &str) -> Cached {
    st.stats.origin_errors.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(error = %e, "HLS proxy: origin fetch failed");
    match e {
        FetchError::Status { status: 404, .. } => {
            error_answer(StatusCode::NOT_FOUND, &format!("origin has no such {what}"))
        }
        FetchError::TooLarge { limit, .. } => error_answer(
            StatusCode::BAD_GATEWAY,
            &format!("origin {what} larger than the {limit}-byte limit"),
        ),
        FetchError::Timeout { secs, .. } => error_answer(
            StatusCode::GATEWAY_TIMEOUT,
            &format!("origin did not answer within {secs:.1} s"),
        ),
        FetchError::Status { status, .. } => error_answer(
            StatusCode::BAD_GATEWAY,
            &format!("origin answered HTTP {status}"),
        ),
        FetchError::Transport { .. } => error_answer(StatusCode::BAD_GATEWAY, "origin unreachable"),
        FetchError::BadRange { .. } => {
            error_answer(StatusCode::BAD_GATEWAY, "origin byte range unusable")
        }
    }
}

fn ends_with_ci(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

fn is_playlist(rel: &str) -> bool {
    let path = rel.split('?').next().unwrap_or(rel);
    ends_with_ci(path, ".m3u8") || ends_with_ci(path, ".m3u")
}

async fn handle(State(st): State<HlsState>, uri: Uri, headers: HeaderMap) -> Response {
    let st = &st.inner;
    // Raw (still percent-encoded) path: the resolver judges encodings itself.
    let Some(rest) = uri.path().strip_prefix("/hls/") else {
        return respond(error_answer(StatusCode::NOT_FOUND, "not found"));
    };
    let (chan, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(ch) = read(&st.channels).get(chan).cloned() else {
        return respond(error_answer(StatusCode::NOT_FOUND, "unknown channel"));
    };
    // Hot path: a fresh cached playlist, found by the raw rel path with no allocation and
    // no URL resolution (only paths that resolved and were playlists are ever cached).
    if st.playlist_cache.load(Ordering::Relaxed)
        && let Some(rel) = uri
            .path_and_query()
            .and_then(|pq| pq.as_str().strip_prefix("/hls/"))
            .and_then(|r| r.split_once('/'))
            .map(|(_, rel)| rel)
        && let Some(c) = ch.fresh_playlist(rel)
    {
        st.stats.playlist_requests.fetch_add(1, Ordering::Relaxed);
        st.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
        return respond(c);
    }
    let rel = match uri.query() {
        Some(q) if st.client_query_all => format!("{path}?{q}"),
        Some(q) => {
            let (kept, dropped) = crate::manifest::query::filter_query(q, |n| {
                crate::manifest::query::is_delivery_directive(n) || ch.knows_query_name(n)
            });
            if dropped {
                st.stats
                    .client_query_ignored
                    .fetch_add(1, Ordering::Relaxed);
            }
            match kept {
                Some(kept) => format!("{path}?{kept}"),
                None => path.to_string(),
            }
        }
        None => path.to_string(),
    };
    let url = match ch.origin.origin_url(&rel) {
        Ok(u) => u,
        Err(e) => {
            st.stats.refused_paths.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(channel = %ch.id, error = %e, "HLS proxy: path refused");
            return respond(error_answer(StatusCode::BAD_REQUEST, "path refused"));
        }
    };
    if is_playlist(&rel) {
        playlist(st, &ch, rel, url).await
    } else if st.uri_mode == UriMode::Proxy {
        segment(st, &ch, &rel, &url, &headers).await
    } else {
        respond(error_answer(
            StatusCode::NOT_FOUND,
            "segments are served by the origin (manifest.segment_uris = \"absolute\")",
        ))
    }
}

async fn playlist(st: &Inner, ch: &Arc<HlsChannel>, rel: String, url: Url) -> Response {
    st.stats.playlist_requests.fetch_add(1, Ordering::Relaxed);
    if !st.playlist_cache.load(Ordering::Relaxed) {
        let Ok(_slot) = st.fetch_slots.try_acquire() else {
            return busy(st);
        };
        return respond(build_playlist(st, ch, &url).await);
    }
    let slot = {
        let mut cache = lock(&ch.playlists);
        if let Some(s) = cache.get(&rel) {
            s.clone()
        } else {
            if cache.len() >= MAX_CACHE_ENTRIES {
                cache.retain(|_, s| s.fresh().is_some());
                if cache.len() >= MAX_CACHE_ENTRIES {
                    cache.clear();
                }
            }
            cache.entry(rel).or_default().clone()
        }
    };
    if let Some(c) = slot.fresh() {
        st.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
        return respond(c);
    }
    let _one_fetch = slot.refresh.lock().await;
    if let Some(c) = slot.fresh() {
        st.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
        return respond(c);
    }
    let Ok(_fetch) = st.fetch_slots.try_acquire() else {
        return busy(st);
    };
    let c = build_playlist(st, ch, &url).await;
    *lock(&slot.value) = Some(c.clone());
    respond(c)
}

fn target_duration(text: &str) -> Option<f64> {
    let i = text.find("#EXT-X-TARGETDURATION:")?;
    let v = &text[i + "#EXT-X-TARGETDURATION:".len()..];
    let end = v.find(['\r', '\n']).unwrap_or(v.len());
    v[..end]
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|t| t.is_finite() && *t > 0.0)
}

async fn build_playlist(st: &Inner, ch: &HlsChannel, url: &Url) -> Cached {
    st.stats.origin_fetches.fetch_add(1, Ordering::Relaxed);
    let body = match st
        .fetcher
        .get(url, None, st.max_playlist_bytes, st.playlist_timeout)
        .await
    {
        Ok(b) => b,
        Err(e) => return fetch_error(st, &e, "playlist"),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        st.stats.origin_errors.fetch_add(1, Ordering::Relaxed);
        return error_answer(StatusCode::BAD_GATEWAY, "origin playlist is not UTF-8");
    };
    ch.learn_query_names(text);
    match rewrite(st, ch, url, text, Utc::now()) {
        Ok((text, ttl)) => Cached {
            at: Instant::now(),
            ttl,
            status: StatusCode::OK,
            content_type: PLAYLIST_TYPE,
            body: Bytes::from(text),
        },
        Err(e) => {
            st.stats.origin_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(channel = %ch.id, url = %crate::redact::redact_url(url.as_str()), error = %e, "HLS proxy: origin playlist refused");
            error_answer(
                StatusCode::BAD_GATEWAY,
                "origin playlist could not be rewritten",
            )
        }
    }
}

/// The rewritten text and how long it may be reused.
fn rewrite(
    st: &Inner,
    ch: &HlsChannel,
    url: &Url,
    text: &str,
    now: DateTime<Utc>,
) -> Result<(String, Duration), crate::manifest::ManifestError> {
    let anchor = |msn: u64| ch.analysis.anchor(msn);
    let mut ctx = RewriteContext::new(&ch.origin, url);
    ctx.uri_mode = st.uri_mode;
    ctx.max_bytes = st.max_playlist_bytes;
    ctx.pdt_anchor = &anchor;
    if playlist_kind(text)? == PlaylistKind::Multivariant {
        let r = rewrite_multivariant(text, &ctx)?;
        if r.unproxied_uris > 0 {
            tracing::debug!(channel = %ch.id, n = r.unproxied_uris, "variants outside the channel's base bypass the sidecar");
        }
        return Ok((r.text, MULTIVARIANT_TTL));
    }
    let ttl = target_duration(text)
        .map(|t| Duration::from_secs_f64((t / 2.0).clamp(0.1, 5.0)))
        .unwrap_or(MULTIVARIANT_TTL);
    let cues = ch.ledger.read().unwrap_or_else(|p| p.into_inner()).ranges();
    ctx.cues = &cues;
    if st.manifest.hold_back {
        // A first pass (no cues) for the segments' timeline, then the held-back rewrite.
        let mut probe = ctx;
        probe.cues = &[];
        let first = rewrite_media_playlist(text, &probe)?;
        let timed: Option<Vec<SegmentTiming>> = first
            .segments
            .iter()
            .map(|s| {
                s.start.map(|start| SegmentTiming {
                    msn: s.msn,
                    start,
                    duration: s.duration,
                })
            })
            .collect();
        // Without a timeline there is no deadline: everything is published.
        if let Some(timed) = timed {
            let deadline = chrono::TimeDelta::milliseconds(
                st.manifest.hold_back_deadline_ms.min(i64::MAX as u64) as i64,
            );
            let h = hold_back(&timed, |m| ch.analysis.is_analysed(m), now, deadline);
            ch.holdback_delay_ms
                .store((h.added_delay_s * 1000.0) as u64, Ordering::Relaxed);
            ch.holdback_forced
                .fetch_add(h.forced.len() as u64, Ordering::Relaxed);
            ctx.publish_through = match h.publish_through {
                Some(m) => Some(m),
                // Nothing publishable: below the first media sequence number.
                None => Some(timed.first().map(|s| s.msn).unwrap_or(0).wrapping_sub(1)),
            };
            if h.publish_through.is_none() && timed.first().is_some_and(|s| s.msn == 0) {
                ctx.publish_through = None;
                let r = rewrite_media_playlist(text, &ctx)?;
                return Ok((playlist_header_only(&r.text), ttl));
            }
        }
    }
    let r = rewrite_media_playlist(text, &ctx)?;
    if st.manifest.id3 {
        let mut segs = lock(&ch.segments);
        if segs.len() > MAX_SEGMENT_TIMES {
            segs.clear();
        }
        for s in r.segments.iter().filter(|s| s.published) {
            if let (Some(start), Some(u)) = (s.start, s.origin_url(url))
                && let Some(rel) = ch.origin.rel_of(&u)
            {
                let init = s.map.as_ref().and_then(|m| {
                    let u = url.join(&m.uri).ok()?;
                    Some(InitRef {
                        rel: ch.origin.rel_of(&u)?,
                        range: m.byterange,
                    })
                });
                segs.insert(
                    rel,
                    SegTime {
                        start,
                        duration: s.duration,
                        in_ad_break: s.in_ad_break,
                        init,
                    },
                );
            }
        }
    }
    Ok((r.text, ttl))
}

/// The playlist-level lines of a media playlist (everything before the first segment's
/// tags): what is served while nothing is publishable and msn 0 cannot be excluded.
fn playlist_header_only(text: &str) -> String {
    const SEGMENT_TAGS: [&str; 8] = [
        "#EXTINF",
        "#EXT-X-PROGRAM-DATE-TIME",
        "#EXT-X-DATERANGE",
        "#EXT-X-DISCONTINUITY:",
        "#EXT-X-BYTERANGE",
        "#EXT-X-KEY",
        "#EXT-X-MAP",
        "#EXT-X-CUE",
    ];
    let mut out = String::new();
    for l in text.lines() {
        if SEGMENT_TAGS.iter().any(|t| l.starts_with(t)) || l == "#EXT-X-DISCONTINUITY" {
            break;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// A `Range` header of a segment request as (offset, length).
fn parse_range(headers: &HeaderMap) -> Option<(u64, u64)> {
    parse_range_header(headers.get(header::RANGE)?.to_str().ok()?)
}

/// A `Range` header value `bytes=a-b` as (offset, length); other forms (suffix, open-ended,
/// several ranges) are not forwarded, and neither is the whole of 2^64 bytes, whose length
/// does not fit 64 bits.
pub fn parse_range_header(value: &str) -> Option<(u64, u64)> {
    let (a, b) = value.strip_prefix("bytes=")?.split_once('-')?;
    let (a, b) = (a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?);
    b.checked_sub(a)?.checked_add(1).map(|len| (a, len))
}

fn segment_type(rel: &str) -> &'static str {
    let path = rel.split('?').next().unwrap_or(rel).to_ascii_lowercase();
    if path.ends_with(".ts") {
        "video/mp2t"
    } else if path.ends_with(".m4s") || path.ends_with(".mp4") || path.ends_with(".m4v") {
        "video/mp4"
    } else if path.ends_with(".aac") {
        "audio/aac"
    } else {
        "application/octet-stream"
    }
}

async fn segment(
    st: &Inner,
    ch: &HlsChannel,
    rel: &str,
    url: &Url,
    headers: &HeaderMap,
) -> Response {
    let range = parse_range(headers);
    let data = match origin_segment(st, ch, rel, url, range).await {
        Ok(b) => b,
        Err(NoSegment::Busy) => return busy(st),
        Err(NoSegment::Origin(answer)) => return respond(answer),
    };
    st.stats.segments_proxied.fetch_add(1, Ordering::Relaxed);
    let content_type = segment_type(rel);
    if let Some((off, len)) = range {
        let mut r = (StatusCode::PARTIAL_CONTENT, data).into_response();
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {off}-{}/*", off + len - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
        return r;
    }
    let timing = if st.manifest.id3 {
        lock(&ch.segments).get(rel).cloned()
    } else {
        None
    };
    let data = match timing {
        Some(t) if t.init.is_some() => with_emsg(st, ch, rel, &t, data).await,
        Some(t) if content_type == "video/mp2t" => with_id3(st, ch, rel, &t, data),
        _ => data,
    };
    ([(header::CONTENT_TYPE, content_type)], data).into_response()
}

/// Why a proxied segment has no bytes to serve.
enum NoSegment {
    /// Every origin fetch slot is taken (503, try again).
    Busy,
    /// The origin's failure, as answered to the client (and cached for a moment).
    Origin(Cached),
}

/// The origin's bytes of segment `rel` (its byte `range`): from the segment cache, else
/// fetched once for all who ask meanwhile.
async fn origin_segment(
    st: &Inner,
    ch: &HlsChannel,
    rel: &str,
    url: &Url,
    range: Option<(u64, u64)>,
) -> Result<Bytes, NoSegment> {
    let Some(cache) = &st.segment_cache else {
        let Ok(_fetch) = st.fetch_slots.try_acquire() else {
            return Err(NoSegment::Busy);
        };
        return fetch_segment(st, url, range)
            .await
            .map_err(NoSegment::Origin);
    };
    let key = SegmentKey {
        channel: ch.id.clone(),
        rel: rel.to_string(),
        range,
    };
    let slot = cache.slot(&key);
    let hit = |answer: Result<Bytes, Cached>| {
        st.stats.segment_cache_hits.fetch_add(1, Ordering::Relaxed);
        answer.map_err(NoSegment::Origin)
    };
    if let Some(answer) = slot.fresh() {
        return hit(answer);
    }
    let _one_fetch = slot.fetch.lock().await;
    if let Some(answer) = slot.fresh() {
        return hit(answer);
    }
    let Ok(_fetch) = st.fetch_slots.try_acquire() else {
        return Err(NoSegment::Busy);
    };
    let answer = fetch_segment(st, url, range).await;
    let ttl = if answer.is_ok() {
        cache.ttl()
    } else {
        ERROR_TTL
    };
    cache.store(&key, &slot, answer.clone(), ttl);
    answer.map_err(NoSegment::Origin)
}

/// One origin fetch of a segment (the caller holds an origin fetch slot).
async fn fetch_segment(st: &Inner, url: &Url, range: Option<(u64, u64)>) -> Result<Bytes, Cached> {
    st.stats.segment_fetches.fetch_add(1, Ordering::Relaxed);
    st.fetcher
        .get(url, range, st.max_segment_bytes, st.segment_timeout)
        .await
        .map_err(|e| fetch_error(st, &e, "segment"))
}

/// The cues overlapping segment `t` as ID3 tags: (seconds from the segment's start, seconds
/// the cue lasts from there, emsg id, tag). None in an ad break.
fn cue_tags(ch: &HlsChannel, t: &SegTime) -> Vec<(f64, Option<f64>, u32, Vec<u8>)> {
    if t.in_ad_break {
        return Vec::new();
    }
    let end = t.start + chrono::TimeDelta::microseconds((t.duration * 1e6) as i64);
    let secs = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(0) as f64 / 1e6;
    let mut out = Vec::new();
    for cue in ch.cues_between(t.start, end) {
        let offset_s = secs(cue.start - t.start).clamp(0.0, t.duration.max(0.0));
        let from = cue.start.max(t.start);
        let duration_s = cue.end.map(|e| secs(e - from).max(0.0));
        // The same cue carries the same emsg id in every segment (players drop repeats),
        // and it is the SCTE-35 segmentation_event_id of its date range.
        let id = crate::manifest::scte35::event_id(&cue.id);
        match id3::cue_tag(&cue) {
            Ok(tag) => out.push((offset_s, duration_s, id, tag)),
            Err(e) => tracing::warn!(cue = %cue.id, error = %e, "cue not encodable as ID3"),
        }
    }
    out
}

/// The init section `init` of `ch`: from the bounded cache, else fetched once.
async fn init_section(st: &Inner, ch: &HlsChannel, init: &InitRef) -> Option<Bytes> {
    if let Some(b) = lock(&ch.inits).get(init) {
        return Some(b.clone());
    }
    let _one_fetch = ch.init_fetch.lock().await;
    if let Some(b) = lock(&ch.inits).get(init) {
        return Some(b.clone());
    }
    let url = ch.origin.origin_url(&init.rel).ok()?;
    st.stats.init_fetches.fetch_add(1, Ordering::Relaxed);
    let data = match st
        .fetcher
        .get(&url, init.range, st.max_segment_bytes, st.segment_timeout)
        .await
    {
        Ok(b) => b,
        Err(e) => {
            st.stats.origin_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(channel = %ch.id, url = %crate::redact::redact_url(url.as_str()), error = %e, "HLS proxy: init section fetch failed");
            return None;
        }
    };
    let mut inits = lock(&ch.inits);
    if inits.len() >= MAX_INIT_SECTIONS {
        inits.clear();
        st.stats.init_cache_flushes.fetch_add(1, Ordering::Relaxed);
    }
    inits.insert(init.clone(), data.clone());
    Some(data)
}

/// The fMP4 segment with one ID3 `emsg` per overlapping cue before its first `moof`;
/// unchanged when there are none, the init section is unavailable, or insertion fails
/// (counted).
async fn with_emsg(st: &Inner, ch: &HlsChannel, rel: &str, t: &SegTime, data: Bytes) -> Bytes {
    let tags = cue_tags(ch, t);
    let Some(init_ref) = t.init.as_ref().filter(|_| !tags.is_empty()) else {
        return data;
    };
    let Some(init) = init_section(st, ch, init_ref).await else {
        st.stats.id3_errors.fetch_add(1, Ordering::Relaxed);
        return data;
    };
    let events: Vec<emsg::Id3Event> = tags
        .into_iter()
        .map(|(offset_s, duration_s, id, id3_tag)| emsg::Id3Event {
            offset_s,
            duration_s,
            id,
            id3_tag,
        })
        .collect();
    match emsg::insert_id3_events(&data, &init, &events) {
        Ok(out) => {
            st.stats.id3_segments.fetch_add(1, Ordering::Relaxed);
            st.stats.emsg_segments.fetch_add(1, Ordering::Relaxed);
            Bytes::from(out)
        }
        Err(e) => {
            st.stats.id3_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(channel = %ch.id, segment = %rel, error = %e, "emsg insertion failed; segment passed through");
            data
        }
    }
}

/// The segment with a timed-ID3 stream carrying the cues that overlap it; unchanged when
/// there are none, it is unknown or in an ad break, or the insertion fails (counted).
fn with_id3(st: &Inner, ch: &HlsChannel, rel: &str, t: &SegTime, data: Bytes) -> Bytes {
    let samples: Vec<ts::MetadataSample> = cue_tags(ch, t)
        .into_iter()
        .map(|(offset_s, _, _, id3_tag)| ts::MetadataSample { offset_s, id3_tag })
        .collect();
    if samples.is_empty() {
        return data;
    }
    match ts::insert_timed_metadata(&data, &samples) {
        Ok((out, _)) => {
            st.stats.id3_segments.fetch_add(1, Ordering::Relaxed);
            Bytes::from(out)
        }
        Err(e) => {
            st.stats.id3_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(channel = %ch.id, segment = %rel, error = %e, "ID3 insertion failed; segment passed through");
            data
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(
            target_duration("#EXTM3U\n#EXT-X-TARGETDURATION:4\n"),
            Some(4.0)
        );
        assert_eq!(target_duration("#EXTM3U\n"), None);
        assert!(is_playlist("a/b.m3u8?x=1") && !is_playlist("seg1.ts?x=.m3u8"));
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_static("bytes=10-19"));
        assert_eq!(parse_range(&h), Some((10, 10)));
        h.insert(header::RANGE, HeaderValue::from_static("bytes=10-"));
        assert_eq!(parse_range(&h), None);
        let p = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:2,\na.ts\n";
        assert_eq!(
            playlist_header_only(p),
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
        );
    }

    /// Found by the `http_range` fuzz target: the whole of 2^64 bytes overflowed the length.
    #[test]
    fn range_to_the_last_byte_of_u64_is_refused_not_overflowed() {
        assert_eq!(parse_range_header("bytes=0-18446744073709551615"), None);
        assert_eq!(
            parse_range_header("bytes=1-18446744073709551615"),
            Some((1, u64::MAX))
        );
        assert_eq!(parse_range_header("bytes=7-6"), None);
        assert_eq!(parse_range_header("bytes=5-5"), Some((5, 1)));
    }
}
