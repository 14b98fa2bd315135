//! The soak's HLS players: each loads a channel's multivariant playlist through the
//! sidecar's proxy, then, like a live player, reloads the (rewritten) media playlist every
//! target duration and fetches the newest segment through the proxy when it changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use url::Url;

/// Running totals of all players (read by the sampler).
#[derive(Debug, Default)]
pub struct PlayerCounters {
    pub playlists: AtomicU64,
    /// Playlist requests that failed (transport, non-2xx, not a playlist).
    pub playlist_errors: AtomicU64,
    pub segments: AtomicU64,
    /// Segment requests that failed (transport, non-2xx, empty body).
    pub segment_errors: AtomicU64,
    pub segment_bytes: AtomicU64,
    /// Times a media playlist did not move on for 3 target durations.
    pub stalls: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What a player reads from a media playlist.
#[derive(Debug, PartialEq)]
struct MediaView {
    target_s: f64,
    media_sequence: u64,
    /// URI of the last segment (the live edge).
    newest: Option<String>,
}

fn tag_value<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.trim().strip_prefix(tag))
}

fn read_media(text: &str) -> Option<MediaView> {
    if !text.starts_with("#EXTM3U") {
        return None;
    }
    let target_s = tag_value(text, "#EXT-X-TARGETDURATION:")?
        .trim()
        .parse()
        .ok()?;
    let media_sequence = tag_value(text, "#EXT-X-MEDIA-SEQUENCE:")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let newest = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string);
    Some(MediaView {
        target_s,
        media_sequence,
        newest,
    })
}

/// The first variant of a multivariant playlist.
fn first_variant(text: &str) -> Option<&str> {
    let mut lines = text.lines().map(str::trim);
    while let Some(l) = lines.next() {
        if l.starts_with("#EXT-X-STREAM-INF") {
            return lines.find(|l| !l.is_empty() && !l.starts_with('#'));
        }
    }
    None
}

async fn get(client: &reqwest::Client, url: &Url) -> Option<bytes::Bytes> {
    let r = client.get(url.clone()).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.bytes().await.ok()
}

/// One player of `master` (the proxy's multivariant playlist URL) until `stop`.
pub async fn run(master: Url, counters: Arc<PlayerCounters>, stop: CancellationToken) {
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "soak player: no HTTP client");
            return;
        }
    };
    let mut media: Option<Url> = None;
    let mut newest: Option<String> = None;
    let mut moved = (None, Instant::now());
    let mut every = Duration::from_secs(2);
    while !stop.is_cancelled() {
        let t0 = tokio::time::Instant::now();
        match &media {
            None => {
                media = playlist(&client, &master, &counters, |text| {
                    master.join(first_variant(text)?).ok()
                })
                .await
            }
            Some(url) => {
                if let Some(view) = playlist(&client, url, &counters, read_media).await {
                    every = Duration::from_secs_f64(view.target_s.clamp(0.5, 10.0));
                    let edge = (view.media_sequence, view.newest.clone());
                    if moved.0.as_ref() != Some(&edge) {
                        moved = (Some(edge), Instant::now());
                    } else if moved.1.elapsed() > every * 3 {
                        bump(&counters.stalls);
                        moved.1 = Instant::now();
                    }
                    if view.newest.is_some() && view.newest != newest {
                        newest = view.newest;
                        fetch_segment(&client, url, newest.as_deref(), &counters).await;
                    }
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(t0 + every) => {}
        }
    }
}

/// A playlist request, read with `read`; counted, and counted as an error when it fails.
async fn playlist<T>(
    client: &reqwest::Client,
    url: &Url,
    counters: &PlayerCounters,
    read: impl FnOnce(&str) -> Option<T>,
) -> Option<T> {
    bump(&counters.playlists);
    let out = get(client, url)
        .await
        .and_then(|b| read(std::str::from_utf8(&b).ok()?));
    if out.is_none() {
        bump(&counters.playlist_errors);
    }
    out
}

async fn fetch_segment(
    client: &reqwest::Client,
    playlist: &Url,
    uri: Option<&str>,
    counters: &PlayerCounters,
) {
    let Some(url) = uri.and_then(|u| playlist.join(u).ok()) else {
        bump(&counters.segment_errors);
        return;
    };
    match get(client, &url).await {
        Some(b) if !b.is_empty() => {
            bump(&counters.segments);
            counters
                .segment_bytes
                .fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        _ => bump(&counters.segment_errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_a_live_player_needs() {
        let media = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:41\n\
                     #EXTINF:2.0,\nseg41.ts\n#EXT-X-DATERANGE:ID=\"x\"\n#EXTINF:2.0,\nseg42.ts\n";
        assert_eq!(
            read_media(media),
            Some(MediaView {
                target_s: 2.0,
                media_sequence: 41,
                newest: Some("seg42.ts".into())
            })
        );
        assert_eq!(read_media("<html>"), None);
        assert_eq!(read_media("#EXTM3U\n#EXTINF:2,\na.ts\n"), None);
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n\nindex.m3u8\n";
        assert_eq!(first_variant(master), Some("index.m3u8"));
        assert_eq!(first_variant("#EXTM3U\n"), None);
    }
}
