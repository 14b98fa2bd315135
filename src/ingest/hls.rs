//! Live HLS over HTTP: loads the entry playlist (choosing a variant), then polls the media
//! playlist as RFC 8216 §6.3.4 prescribes — the target duration after a changed reload,
//! half of it after an unchanged one — and fetches each new segment once, in order, with
//! retries and back-off. Segments go to the decoder through a bounded channel (policy:
//! the fetcher waits; lag behind the live edge is reported).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use m3u8_rs::{MediaPlaylist, Playlist};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::playlist::{self, PlaylistError, PlaylistTracker, SegmentJob};
use super::{ChannelState, ChannelStats, IngestError};
use crate::config::{IngestSettings, VariantChoice};

/// EXT-X-MAP init sections already fetched, by URL and byte range.
type InitCache = HashMap<(Url, Option<(u64, u64)>), Bytes>;

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
}

/// HTTP GETs with a timeout and a size limit.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
}

impl Fetcher {
    pub fn new() -> Result<Self, IngestError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("shopcue/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(5))
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
        let u = url.to_string();
        let work = async {
            let mut req = self.client.get(url.clone());
            if let Some((off, len)) = range {
                req = req.header(
                    reqwest::header::RANGE,
                    format!("bytes={}-{}", off, off + len.saturating_sub(1)),
                );
            }
            let mut resp = req.send().await.map_err(|e| FetchError::Transport {
                url: u.clone(),
                why: describe(&e),
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
                why: describe(&e),
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
                let (off, len) = (off as usize, len as usize);
                if body.len() >= off + len {
                    return Ok(Bytes::from(body).slice(off..off + len));
                }
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

fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
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
    pub loaded_at: Instant,
}

async fn load(fetcher: &Fetcher, url: &Url, s: &IngestSettings) -> Result<Playlist, IngestError> {
    let body = fetcher
        .get(
            url,
            None,
            s.max_playlist_bytes,
            Duration::from_millis(s.playlist_timeout_ms),
        )
        .await?;
    Ok(playlist::parse(url, &body)?)
}

/// Load the entry URL; for a multivariant playlist, choose the variant and load it.
pub async fn open(
    fetcher: &Fetcher,
    entry: &Url,
    s: &IngestSettings,
) -> Result<Opened, IngestError> {
    let started = Instant::now();
    match load(fetcher, entry, s).await? {
        Playlist::MediaPlaylist(playlist) => Ok(Opened {
            media_url: entry.clone(),
            playlist,
            loaded_at: started,
        }),
        Playlist::MasterPlaylist(master) => {
            let choice: VariantChoice = s.variant.parse().map_err(|why| IngestError::BadInput {
                input: s.variant.clone(),
                why,
            })?;
            let media_url = playlist::choose_variant(entry, &master, choice)?;
            let started = Instant::now();
            match load(fetcher, &media_url, s).await? {
                Playlist::MediaPlaylist(playlist) => Ok(Opened {
                    media_url,
                    playlist,
                    loaded_at: started,
                }),
                Playlist::MasterPlaylist(_) => Err(PlaylistError::Malformed {
                    url: media_url.to_string(),
                    why: "a variant URI points at another multivariant playlist".into(),
                }
                .into()),
            }
        }
    }
}

/// Back-off that doubles from `initial` to `max`, with ±20 % jitter.
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
        d.mul_f64(jitter)
    }
    fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// Follow a live (or VOD) media playlist until it ends or `cancel` fires; send each new
/// segment to `out`. Errors are reported through `stats` and retried, never returned.
pub async fn follow(
    fetcher: Fetcher,
    opened: Opened,
    settings: IngestSettings,
    stats: Arc<ChannelStats>,
    out: mpsc::Sender<FetchedSegment>,
    cancel: CancellationToken,
) {
    let Opened {
        media_url,
        playlist: mut current,
        mut loaded_at,
    } = opened;
    let mut tracker = PlaylistTracker::new(settings.live_start_segments);
    let mut backoff = Backoff::new(&settings);
    let mut init_cache: InitCache = HashMap::new();
    let mut last_change = Instant::now();
    let mut stalled = false;
    let seg_timeout = Duration::from_millis(settings.segment_timeout_ms);
    // Reload timing learnt from the origin (never earlier than RFC 8216 allows).
    let mut lag = playlist::PublishLag::default();
    let mut last_edge: Option<DateTime<Utc>> = None;
    let mut expected_edge: Option<DateTime<Utc>> = None;
    let mut load_started_wall = Utc::now();
    let mut load_done_wall = Utc::now();
    loop {
        let up = match tracker.update(&media_url, &current, Utc::now()) {
            Ok(up) => up,
            Err(e) => {
                stats.error(&e.to_string(), ChannelState::Degraded);
                playlist::Update::default()
            }
        };
        if up.reset {
            stats.resets.fetch_add(1, ORD);
            tracing::warn!(url = %media_url, "media sequence went back with new content: origin restarted, following from the live edge");
        }
        if up.skipped > 0 {
            stats.segments_skipped.fetch_add(up.skipped, ORD);
            tracing::warn!(url = %media_url, skipped = up.skipped, "segments left the playlist before they were fetched");
        }
        if up.stale {
            tracing::debug!(url = %media_url, "ignoring a playlist older than one already seen");
        }
        if up.changed {
            last_change = Instant::now();
            if stalled {
                stalled = false;
                tracing::info!(url = %media_url, "playlist moves again");
            }
        }
        let target = Duration::from_secs_f64(up.target_duration.max(1.0));
        if !up.changed
            && !up.ended
            && !stalled
            && last_change.elapsed() > target.mul_f64(settings.stall_target_durations)
        {
            stalled = true;
            stats.stalls.fetch_add(1, ORD);
            stats.error(
                &format!(
                    "playlist {media_url} unchanged for {:.1} s",
                    last_change.elapsed().as_secs_f64()
                ),
                ChannelState::Stalled,
            );
            tracing::warn!(url = %media_url, "playlist stalled");
        }
        if let Some(edge) = up.live_edge {
            stats.set_live_edge(edge);
        }
        let target_chrono =
            chrono::Duration::from_std(target).unwrap_or(chrono::Duration::seconds(2));
        match (up.changed, up.live_edge, last_edge) {
            // One new segment since the last load: it was published by the time that load
            // completed.
            (true, Some(edge), Some(prev))
                if edge > prev && edge - prev <= target_chrono + target_chrono / 2 =>
            {
                lag.seen(edge, load_done_wall)
            }
            (false, _, _) => {
                if let Some(exp) = expected_edge {
                    lag.not_yet(exp, load_started_wall);
                }
            }
            _ => {}
        }
        if up.live_edge.is_some() {
            last_edge = up.live_edge;
        }
        let remaining = up.jobs.len();
        for (i, job) in up.jobs.into_iter().enumerate() {
            stats.segments_behind.store((remaining - i) as u64, ORD);
            let Some(seg) = fetch_segment(
                &fetcher,
                job,
                &settings,
                &stats,
                &mut init_cache,
                seg_timeout,
                &cancel,
            )
            .await
            else {
                if cancel.is_cancelled() {
                    return;
                }
                continue;
            };
            tokio::select! {
                r = out.send(seg) => if r.is_err() { return; },
                _ = cancel.cancelled() => return,
            }
        }
        stats.segments_behind.store(0, ORD);
        if up.ended {
            tracing::info!(url = %media_url, "playlist ended (EXT-X-ENDLIST)");
            return;
        }
        // RFC 8216 §6.3.4: wait a target duration after a changed reload (from when that
        // load began), half of it after an unchanged one. After a change, wait longer when
        // the origin's publishing rhythm says the next segment comes later (so the reload
        // lands just after it appears), up to twice the target duration.
        let wait = if up.changed { target } else { target / 2 };
        let mut due = loaded_at + wait;
        if up.changed
            && let Some(edge) = up.live_edge
        {
            expected_edge = Some(edge + target_chrono);
            if let Some(at) = lag.next_reload(edge, target_chrono)
                && let Ok(ahead) = (at - Utc::now()).to_std()
            {
                due = due.max(Instant::now() + ahead).min(loaded_at + target * 2);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {},
            _ = cancel.cancelled() => return,
        }
        // Reload, retrying with back-off until it works or we are cancelled.
        loop {
            loaded_at = Instant::now();
            load_started_wall = Utc::now();
            match load(&fetcher, &media_url, &settings).await {
                Ok(Playlist::MediaPlaylist(p)) => {
                    load_done_wall = Utc::now();
                    current = p;
                    backoff.reset();
                    if !stalled {
                        stats.ok();
                    }
                    break;
                }
                Ok(Playlist::MasterPlaylist(_)) => {
                    stats.playlist_errors.fetch_add(1, ORD);
                    stats.error(
                        &format!("{media_url}: became a multivariant playlist"),
                        ChannelState::Degraded,
                    );
                }
                Err(e) => {
                    stats.playlist_errors.fetch_add(1, ORD);
                    if stats.error(&e.to_string(), ChannelState::Degraded) {
                        tracing::warn!(error = %e, "playlist reload failed; retrying");
                    }
                }
            }
            let pause = backoff.next();
            tokio::select! {
                _ = tokio::time::sleep(pause) => {},
                _ = cancel.cancelled() => return,
            }
        }
    }
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
    let mut backoff = Backoff::new(s);
    for attempt in 1..=s.segment_attempts {
        let started = Instant::now();
        let init = match &job.init {
            Some(key) => match init_cache.get(key) {
                Some(b) => Ok(Some(b.clone())),
                None => fetcher
                    .get(&key.0, key.1, s.max_segment_bytes, timeout)
                    .await
                    .map(|b| {
                        init_cache.clear();
                        init_cache.insert(key.clone(), b.clone());
                        Some(b)
                    }),
            },
            None => Ok(None),
        };
        let result = match init {
            Ok(init) => fetcher
                .get(&job.url, job.range, s.max_segment_bytes, timeout)
                .await
                .map(|data| (init, data)),
            Err(e) => Err(e),
        };
        match result {
            Ok((init, data)) => {
                let fetch_time = started.elapsed();
                stats.segments_fetched.fetch_add(1, ORD);
                stats.record_fetch(fetch_time);
                return Some(FetchedSegment {
                    job,
                    init,
                    data,
                    fetched_at: Utc::now(),
                    fetch_time,
                });
            }
            Err(e) => {
                stats.fetch_errors.fetch_add(1, ORD);
                let last = attempt == s.segment_attempts;
                stats.error(&e.to_string(), ChannelState::Degraded);
                tracing::warn!(msn = job.msn, attempt, error = %e, "segment fetch failed{}", if last { "; giving it up" } else { "" });
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
    stats.segments_lost.fetch_add(1, ORD);
    None
}
