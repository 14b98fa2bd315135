//! A hostile origin beside a clean one (issue 11, first fault test): `shopcue run` with
//! two channels on the real test origin, one of them through a proxy that, for a window,
//! answers with a rotation of bad answers (numbers that overflow, a BYTERANGE past
//! u64, a clock in year 99xx, a media-sequence jump, garbage, 5xx, an oversized body,
//! truncated and random segments), then serves a clock two hours ahead, and is then
//! clean again. The process must not panic, the clean channel must go on without losing
//! a segment, and the hostile channel must be up and advancing within 10 s of its origin
//! turning healthy, with its clock the origin's again. A second test takes a channel
//! that cannot start through the supervisor's restarts.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use common::{TestOrigin, test_settings};
use serde_json::Value;
use shopcue::config::ChannelSettings;
use shopcue::sidecar::Sidecar;
use tokio_util::sync::CancellationToken;

/// How long the proxy is hostile: a rotation of bad answers, then sound answers but for
/// a clock two hours ahead.
const HOSTILE_FOR: Duration = Duration::from_secs(20);
/// Segments the hostile channel fetches on the clock ahead.
const CLOCK_AHEAD_SEGMENTS: u64 = 3;

/// What the proxy does.
const CLEAN: u8 = 0;
const HOSTILE: u8 = 1;
const CLOCK_AHEAD: u8 = 2;
/// The bound: back within this long of the origin turning healthy.
const RECOVERY_BOUND: Duration = Duration::from_secs(10);

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Count every panic of the process (any thread), keeping the default report.
fn count_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
}

/// Forwards to the origin; while HOSTILE, answers badly instead, in rotation; while
/// CLOCK_AHEAD, moves the playlist's program date times two hours ahead.
struct Proxy {
    origin: String,
    mode: AtomicU8,
    playlists: AtomicUsize,
    segments: AtomicUsize,
    client: reqwest::Client,
}

impl Proxy {
    async fn forward(&self, path: &str) -> Result<(StatusCode, Bytes), StatusCode> {
        let r = self
            .client
            .get(format!("{}{path}", self.origin))
            .send()
            .await
            .map_err(|_| StatusCode::BAD_GATEWAY)?;
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        Ok((status, r.bytes().await.unwrap_or_default()))
    }

    async fn answer(&self, uri: Uri) -> Response {
        let path = uri.path().to_string();
        let (status, body) = match self.forward(&path).await {
            Ok(r) => r,
            Err(s) => return s.into_response(),
        };
        let mode = self.mode.load(Ordering::SeqCst);
        let playlist = path.ends_with(".m3u8");
        if mode == CLEAN || !status.is_success() || (mode == CLOCK_AHEAD && !playlist) {
            return (status, body).into_response();
        }
        if mode == CLOCK_AHEAD {
            return clock_ahead(&String::from_utf8_lossy(&body)).into_response();
        }
        if playlist {
            let n = self.playlists.fetch_add(1, Ordering::SeqCst);
            bad_playlist(n, &String::from_utf8_lossy(&body))
        } else {
            let n = self.segments.fetch_add(1, Ordering::SeqCst);
            bad_segment(n, body)
        }
    }
}

/// Replace the value of every `tag` line with `value`.
fn set_tag(text: &str, tag: &str, value: impl Fn(&str) -> String) -> String {
    text.lines()
        .map(|l| match l.strip_prefix(tag) {
            Some(v) => format!("{tag}{}", value(v)),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Bad playlists in the rotation.
const ROTATION: usize = 12;

/// Answer `n` of the rotation of bad playlists, made from the real one.
fn bad_playlist(n: usize, real: &str) -> Response {
    let text = match n % ROTATION {
        0 => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        1 => set_tag(real, "#EXTINF:", |_| "1e308,".into()),
        2 => set_tag(real, "#EXT-X-MEDIA-SEQUENCE:", |_| u64::MAX.to_string()),
        3 => set_tag(real, "#EXTINF:", |v| {
            // Ends at u64::MAX: sound numbers, but past any body (refused when sliced).
            format!("{v}\n#EXT-X-BYTERANGE:2@18446744073709551613")
        }),
        // Past u64::MAX: the field panic's kind (refused when read).
        4 => set_tag(real, "#EXTINF:", |v| {
            format!("{v}\n#EXT-X-BYTERANGE:18446744073709551615@2")
        }),
        5 => set_tag(real, "#EXT-X-PROGRAM-DATE-TIME:20", |v| format!("99{v}")),
        6 => set_tag(real, "#EXT-X-TARGETDURATION:", |_| u64::MAX.to_string()),
        7 => set_tag(real, "#EXT-X-MEDIA-SEQUENCE:", |v| {
            (v.trim().parse::<u64>().unwrap_or(0) + 1_000_000).to_string()
        }),
        8 => return (StatusCode::OK, random_bytes(4096)).into_response(),
        9 => "#EXTM3U\n".to_string() + &"#EXT-X-X:0\n".repeat(200_000),
        10 => clock_ahead(real),
        _ => real[..real.len() / 2].to_string(),
    };
    (
        [(header::CONTENT_TYPE, "application/vnd.apple.mpegurl")],
        text,
    )
        .into_response()
}

/// The playlist with its clock two hours ahead: within bounds, so followed.
fn clock_ahead(real: &str) -> String {
    set_tag(real, "#EXT-X-PROGRAM-DATE-TIME:", |v| {
        let t = chrono::DateTime::parse_from_rfc3339(v.trim()).expect("origin PDT");
        (t + chrono::TimeDelta::hours(2)).to_rfc3339()
    })
}

/// Answer `n` of the rotation of bad segments.
fn bad_segment(n: usize, real: Bytes) -> Response {
    match n % 4 {
        0 => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        1 => (StatusCode::OK, real.slice(..real.len() / 3)).into_response(),
        2 => (StatusCode::OK, random_bytes(real.len().max(188))).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand::random::<u8>()).collect()
}

async fn start_proxy(origin: &TestOrigin) -> (Arc<Proxy>, String) {
    let proxy = Arc::new(Proxy {
        origin: origin.base.clone(),
        mode: AtomicU8::new(CLEAN),
        playlists: AtomicUsize::new(0),
        segments: AtomicUsize::new(0),
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
    });
    let p = proxy.clone();
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let p = p.clone();
        async move { p.answer(uri).await }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (proxy, base)
}

async fn status(addr: std::net::SocketAddr) -> Value {
    let body = reqwest::get(format!("http://{addr}/v1/status"))
        .await
        .expect("status answers")
        .text()
        .await
        .unwrap();
    serde_json::from_str(&body).unwrap()
}

fn channel<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["channels"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no channel {id} in {status}"))
}

fn fetched(status: &Value, id: &str) -> u64 {
    channel(status, id)["segments"]["fetched"]
        .as_u64()
        .unwrap_or(0)
}

/// Poll the status until `ok` holds (returns it and when), or `limit` passes.
async fn wait_for(
    addr: std::net::SocketAddr,
    limit: Duration,
    ok: impl Fn(&Value) -> bool,
) -> Option<(Value, Instant)> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let s = status(addr).await;
        if ok(&s) {
            return Some((s, Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// A clean channel straight from the origin, a hostile one through the proxy (its URL
/// carries a token the status must not show). Shots only: no catalog.
fn two_channels(origin: &TestOrigin, proxy_base: &str) -> shopcue::config::Settings {
    let mut s = test_settings();
    s.media.analysis_height = 180;
    s.channels = vec![
        ChannelSettings {
            id: "clean".into(),
            url: origin.media_url(),
        },
        ChannelSettings {
            id: "hostile".into(),
            url: format!("{proxy_base}/live/index.m3u8?token=s3cret"),
        },
    ];
    s
}

/// The clean channel went on through the hostile window and lost nothing.
fn assert_clean_went_on(before: &Value, after: &Value) {
    let clean = channel(after, "clean");
    let advanced = fetched(after, "clean") - fetched(before, "clean");
    assert!(
        advanced as f64 >= HOSTILE_FOR.as_secs_f64() - 3.0,
        "clean advanced {advanced}: {clean}"
    );
    for kind in ["lost", "skipped", "bad"] {
        assert_eq!(clean["segments"][kind], 0, "clean {kind}: {clean}");
    }
    assert_eq!(clean["state"], "up", "{clean}");
}

/// `/metrics` once it shows every line of `want` (sampled once a second), or as it is
/// after 3 s.
async fn metrics_showing(addr: std::net::SocketAddr, want: &[&str]) -> String {
    let mut metrics = String::new();
    for _ in 0..30 {
        metrics = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if want.iter().all(|l| metrics.contains(l)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for line in want {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    metrics
}

/// The status once the hostile channel is up and has fetched two more segments than
/// when this is called, and when that was seen.
async fn hostile_back(addr: std::net::SocketAddr) -> (Value, Instant) {
    let at_healthy = fetched(&status(addr).await, "hostile");
    let back = wait_for(addr, Duration::from_secs(30), |s| {
        channel(s, "hostile")["state"] == "up" && fetched(s, "hostile") >= at_healthy + 2
    })
    .await;
    match back {
        Some(b) => b,
        None => {
            let now = status(addr).await;
            panic!(
                "hostile channel never came back: {}",
                channel(&now, "hostile")
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_origin_neither_panics_nor_stops_the_channel_for_long() {
    count_panics();
    let origin = TestOrigin::start("intel_concat.mp4", 1.0, 8, true).await;
    let (proxy, proxy_base) = start_proxy(&origin).await;
    let s = two_channels(&origin, &proxy_base);
    let sidecar = Sidecar::start(s, CancellationToken::new())
        .await
        .expect("sidecar starts");
    let addr = sidecar.addr;
    let both_up = |s: &Value| {
        ["clean", "hostile"]
            .iter()
            .all(|id| channel(s, id)["state"] == "up" && fetched(s, id) >= 2)
    };
    let (before, _) = wait_for(addr, Duration::from_secs(30), both_up)
        .await
        .expect("both channels come up");

    proxy.mode.store(HOSTILE, Ordering::SeqCst);
    tokio::time::sleep(HOSTILE_FOR).await;
    proxy.mode.store(CLOCK_AHEAD, Ordering::SeqCst);
    let ahead_from = fetched(&status(addr).await, "hostile");
    let on_ahead = |s: &Value| fetched(s, "hostile") >= ahead_from + CLOCK_AHEAD_SEGMENTS;
    wait_for(addr, Duration::from_secs(20), on_ahead)
        .await
        .expect("the channel follows the clock ahead");
    proxy.mode.store(CLEAN, Ordering::SeqCst);
    let healthy_at = Instant::now();
    let (after, back_at) = hostile_back(addr).await;
    let recovery = back_at - healthy_at;
    eprintln!(
        "hostile channel up and advancing {:.2} s after its origin turned healthy; \
         {} bad playlists and {} bad segments were served",
        recovery.as_secs_f64(),
        proxy.playlists.load(Ordering::SeqCst),
        proxy.segments.load(Ordering::SeqCst),
    );
    let hostile = channel(&after, "hostile");
    eprintln!("hostile channel after recovery: {hostile}");
    assert!(
        recovery <= RECOVERY_BOUND,
        "back after {recovery:?}: {hostile}"
    );
    assert!(
        proxy.playlists.load(Ordering::SeqCst) >= ROTATION,
        "the whole playlist rotation was served"
    );
    assert!(
        hostile["playlist_errors"].as_u64().unwrap() >= 5,
        "{hostile}"
    );

    // The clock two hours ahead (followed: the channel advanced on it) left nothing
    // behind: the channel's clock is the origin's again (lag from the live edge to the
    // newest frame, seconds), not pinned two hours ahead.
    let lag_ok = |s: &Value| {
        let lag = channel(s, "hostile")["lag_s"].as_f64().unwrap_or(f64::MAX);
        lag.abs() < 30.0
    };
    let clock = wait_for(addr, Duration::from_secs(10), lag_ok).await;
    assert!(
        clock.is_some(),
        "{}",
        channel(&status(addr).await, "hostile")
    );

    // The bogus jump left nothing behind: the analysis progress the HLS proxy reads
    // counts the origin's real numbers again (the clean channel reads the same origin).
    let analysed = |c: &Value| c["analysed_msn"].as_u64().unwrap_or(0);
    assert!(
        analysed(hostile) <= analysed(channel(&after, "clean")) + 2,
        "{hostile}"
    );

    assert_clean_went_on(&before, &after);

    // No secret of the hostile channel's URL leaves through the status or the metrics.
    let text = after.to_string();
    assert!(!text.contains("s3cret"), "{text}");
    assert!(
        hostile["url"]
            .as_str()
            .unwrap()
            .ends_with("/live/index.m3u8?…"),
        "{hostile}"
    );
    // The metrics tell the same story.
    let metrics = metrics_showing(
        addr,
        &[
            "shopcue_channel_state{channel=\"hostile\",state=\"up\"} 1",
            "shopcue_channel_state{channel=\"clean\",state=\"up\"} 1",
            "shopcue_channel_restarts_total{channel=\"clean\"} 0",
        ],
    )
    .await;
    assert!(!metrics.contains("s3cret"));

    tokio::time::timeout(Duration::from_secs(30), sidecar.shutdown())
        .await
        .expect("shutdown finishes")
        .expect("clean shutdown");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "the process panicked");
}

/// A channel whose source cannot start (here: a file not there yet) is retried with
/// back-off, shows `retrying` with its next attempt, error and restarts, and comes up
/// by itself once the source exists. The real attempt path, not a stand-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_that_cannot_start_is_restarted_until_it_can() {
    let dir = std::env::temp_dir().join(format!("shopcue-supervise-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("late.mp4");
    let _ = std::fs::remove_file(&path);
    let mut s = test_settings();
    s.media.analysis_height = 180;
    s.channels = vec![ChannelSettings {
        id: "late".into(),
        url: path.display().to_string(),
    }];
    let sidecar = Sidecar::start(s, CancellationToken::new())
        .await
        .expect("sidecar starts");
    let addr = sidecar.addr;
    let retried = |s: &Value| channel(s, "late")["restarts"].as_u64().unwrap_or(0) >= 2;
    let (s, _) = wait_for(addr, Duration::from_secs(20), retried)
        .await
        .expect("the channel is restarted");
    let late = channel(&s, "late");
    assert_eq!(late["state"], "retrying", "{late}");
    assert!(late["supervisor"]["next_attempt"].is_string(), "{late}");
    let why = late["supervisor"]["attempt_error"]["message"]
        .as_str()
        .unwrap();
    assert!(why.contains("late.mp4"), "{why}");
    let metrics = metrics_showing(
        addr,
        &["shopcue_channel_state{channel=\"late\",state=\"retrying\"} 1"],
    )
    .await;
    assert!(
        !metrics.contains("shopcue_channel_restarts_total{channel=\"late\"} 0"),
        "{metrics}"
    );

    // The source appears: the next attempt (within the back-off, at most 8 s here) runs.
    std::fs::copy(common::footage("intel_concat.mp4"), &path).unwrap();
    let up = |s: &Value| {
        let c = channel(s, "late");
        c["state"] == "up" && c["pipeline"]["frames"].as_u64().unwrap_or(0) > 0
    };
    let (s, _) = wait_for(addr, Duration::from_secs(30), up)
        .await
        .expect("the channel comes up once its source exists");
    assert_eq!(
        channel(&s, "late")["supervisor"]["next_attempt"],
        Value::Null
    );
    tokio::time::timeout(Duration::from_secs(30), sidecar.shutdown())
        .await
        .expect("shutdown finishes")
        .expect("clean shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
