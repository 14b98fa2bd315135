//! The player SDK (`web/sdk/shopcue.js`), the demo page and hls.js's view of our timed
//! metadata, in real headless Chromium (Debian's /usr/bin/chromium driven by
//! playwright-core through `web/tests/driver.mjs`). One axum listener on 127.0.0.1:0 serves
//! what the sidecar serves: the looping test origin (grocery_shots.mp4, 1 s segments with
//! PDT), the HLS proxy with ID3 (`/hls/ch/…`), the WebSocket feed over an in-memory cue bus
//! (swappable, to force disconnects), the web assets, a stub product API and the test pages.
//! Cues are published by the test with wall clocks taken from the origin's PDT timeline.
//!
//! Needs `scripts/setup.sh test` (chromium, `npm ci --prefix web`); without them each test
//! fails under `make test` and prints SKIPPED under a plain `cargo test`.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{DateTime, TimeDelta, Utc};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use shopcue::config::{ChannelSettings, Settings};
use shopcue::cue::{BoxSample, Cue, CueEvent, cue_id};
use shopcue::cuebus::CueBus;
use shopcue::cuebus::memory::MemoryBus;
use shopcue::file_origin::LiveOrigin;
use shopcue::http::feed::{self, FeedSettings, FeedState};
use shopcue::http::proxy::HlsState;
use shopcue::ingest::hls::Fetcher;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const CHANNEL: &str = "ch";
/// Upper bound of any single test (the browser gives up on its own after 240 s too).
const TEST_LIMIT: Duration = Duration::from_secs(150);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

use common::browser::Browser;

// ---------------------------------------------------------------- the server

/// Everything the sidecar serves, on one loopback listener.
struct Stack {
    addr: SocketAddr,
    bus: Arc<MemoryBus>,
    origin: Arc<LiveOrigin>,
    feed: Arc<Mutex<FeedState>>,
    stop: CancellationToken,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Ok(f) = self.feed.lock() {
            f.shutdown();
        }
    }
}

fn feed_settings() -> FeedSettings {
    FeedSettings {
        ping_interval_ms: 1000,
        ..Default::default()
    }
}

/// A stub of the catalog's `GET /v1/products/{id}`: products `sku-*` exist.
async fn product(axum::extract::Path(id): axum::extract::Path<String>) -> axum::response::Response {
    if !id.starts_with("sku-") {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "no such product"})),
        )
            .into_response();
    }
    axum::Json(json!({
        "id": id, "title": format!("Test product {id}"), "price": 2.49, "currency": "EUR",
        "images": ["data:image/gif;base64,R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="]
    }))
    .into_response()
}

/// The test pages: a blank page and the page-side probes of `web/tests/`.
fn test_pages() -> Router {
    const JS: &str = "text/javascript; charset=utf-8";
    Router::new()
        .route(
            "/test/blank.html",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    "<!doctype html><meta charset=utf-8><title>shopcue test</title><body></body>",
                )
            }),
        )
        .route(
            "/test/sdk-probe.mjs",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, JS)],
                    include_str!("../web/tests/sdk-probe.mjs"),
                )
            }),
        )
        .route(
            "/test/metadata-probe.mjs",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, JS)],
                    include_str!("../web/tests/metadata-probe.mjs"),
                )
            }),
        )
}

impl Stack {
    async fn start() -> Self {
        let path = common::footage("grocery_shots.mp4");
        let origin =
            tokio::task::spawn_blocking(move || LiveOrigin::from_file(&path, 1.0, 6, true))
                .await
                .expect("origin task")
                .expect("origin builds from the footage");
        let origin = Arc::new(origin);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();

        let mut settings = Settings {
            channels: vec![ChannelSettings {
                id: CHANNEL.into(),
                url: format!("http://{addr}/live/index.m3u8"),
            }],
            ..Default::default()
        };
        settings.manifest.segment_uris = "proxy".into();
        settings.manifest.id3 = true;
        settings.manifest.validate().expect("manifest settings");
        let hls = HlsState::new(
            &settings.channels,
            &settings.manifest,
            &settings.ingest,
            Fetcher::new().unwrap(),
            &HashMap::new(),
        )
        .unwrap();
        let bus = Arc::new(MemoryBus::new(1000));
        let stop = CancellationToken::new();
        hls.spawn_cue_feeds(bus.clone() as Arc<dyn CueBus>, stop.clone());
        let feed = Arc::new(Mutex::new(FeedState::new(
            bus.clone() as Arc<dyn CueBus>,
            feed_settings(),
        )));

        // The feed is looked up per request, so a test can replace it (closing every
        // socket). A fallback, not a route: a route would add its path parameters to the
        // ones the feed's own router extracts.
        let slot = feed.clone();
        let feed_fallback = move |req: Request| {
            let state = slot.lock().unwrap().clone();
            async move { feed::router(state).oneshot(req).await.into_response() }
        };
        let app = Router::new()
            .route("/v1/products/{id}", get(product))
            .merge(shopcue::http::file_origin::router(origin.clone()))
            .merge(shopcue::http::proxy::router(hls))
            .merge(shopcue::http::web::router())
            .merge(test_pages())
            .fallback(feed_fallback);
        let s = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await
        });
        Self {
            addr,
            bus,
            origin,
            feed,
            stop,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Close every feed connection (1001) and serve the feed from a fresh state on the same bus.
    fn restart_feed(&self) {
        let mut f = self.feed.lock().unwrap();
        f.shutdown();
        *f = FeedState::new(self.bus.clone() as Arc<dyn CueBus>, feed_settings());
    }

    /// The origin playlist as the proxy serves it.
    async fn playlist(&self) -> String {
        reqwest::get(self.url(&format!("/hls/{CHANNEL}/index.m3u8")))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// PDT of the newest segment in the origin's window and its end (the live edge, as
    /// the origin's timeline says it: wall clocks on that timeline are what cues carry).
    async fn live_edge(&self) -> DateTime<Utc> {
        let p = reqwest::get(self.url("/live/index.m3u8"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let first: u64 = p
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("media sequence");
        let count = p.lines().filter(|l| l.starts_with("#EXTINF")).count() as u64;
        let last = first + count - 1;
        let durations = self.origin.durations();
        let dur = durations[(last as usize) % durations.len()];
        self.origin.pdt_of(last).expect("origin has PDT")
            + TimeDelta::milliseconds((dur * 1000.0) as i64)
    }
}

// ---------------------------------------------------------------- cues

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A cue of product `sku-n` from `start` (to `end`), its hotspot moving right from x = 0.1
/// to x = 0.6 over `span`.
fn product_cue(n: u64, start: DateTime<Utc>, end: Option<DateTime<Utc>>, span: TimeDelta) -> Cue {
    let product_id = format!("sku-{n}");
    Cue {
        source: Default::default(),
        id: cue_id(CHANNEL, n, &product_id),
        channel: CHANNEL.into(),
        product_id,
        start,
        end,
        pts: 0.0,
        score: 0.8,
        shot: n,
        boxes: vec![
            BoxSample {
                t: start,
                x: 0.1,
                y: 0.2,
                w: 0.3,
                h: 0.4,
            },
            BoxSample {
                t: start + span,
                x: 0.6,
                y: 0.2,
                w: 0.3,
                h: 0.4,
            },
        ],
        product: Some(json!({"title": format!("Feed title {n}")})),
    }
}

fn simple_cue(n: u64) -> Cue {
    let t = DateTime::from_timestamp_millis(1_795_000_000_000 + n as i64 * 1000).unwrap();
    product_cue(n, t, None, TimeDelta::seconds(1))
}

fn ended(mut c: Cue, after: TimeDelta) -> Cue {
    c.end = Some(c.start + after);
    c
}

async fn run_limited<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("test finished within its time limit");
}

// ---------------------------------------------------------------- a. the SDK and the feed

/// The SDK's rules (interpolation, visibility boundaries, offsets, snapshots, seeking) in
/// plain Node against a fake player: `web/tests/sdk-unit.mjs`.
#[test]
fn sdk_rules_in_node() {
    let out = match std::process::Command::new("node")
        .arg(root().join("web/tests/sdk-unit.mjs"))
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            let why = format!("node is missing ({e}; scripts/setup.sh test)");
            common::peer_missing("sdk_rules_in_node", &why);
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert!(v["passed"].as_u64().unwrap() >= 7, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_snapshot_live_events_and_resume_after_forced_disconnect() {
    run_limited(async {
        let Some(mut b) = Browser::launch("sdk_snapshot_live_events_and_resume_after_forced_disconnect").await else {
            return;
        };
        let stack = Stack::start().await;
        let bus = &stack.bus;
        let (c1, c2, c3, c4) = (simple_cue(1), simple_cue(2), simple_cue(3), simple_cue(4));
        bus.publish(CueEvent::Start(c1.clone()));
        bus.publish(CueEvent::Start(c2.clone()));
        let before = bus.publish_record(CueEvent::End(ended(c2.clone(), TimeDelta::seconds(1))));

        b.goto(&stack.url("/test/blank.html")).await;
        b.eval(
            "import('/test/sdk-probe.mjs').then((m) => m.start({channel: 'ch', backoffInitialMs: 100, backoffMaxMs: 400}))",
        )
        .await;
        let snap = b
            .wait("the snapshot", "window.probe.rec.snapshots[0]", Duration::from_secs(10))
            .await;
        assert_eq!(snap["offset"], before.offset.to_string(), "{snap}");
        assert_eq!(snap["ids"], json!([c1.id]), "only the open cue: {snap}");

        // Live events, each with its offset.
        let mut published = Vec::new();
        let mut publish = |e: CueEvent| {
            let r = bus.publish_record(e);
            published.push(json!([r.event.kind(), r.event.cue().id, r.offset.to_string()]));
        };
        let mut up1 = c1.clone();
        up1.score = 0.9;
        publish(CueEvent::Update(up1));
        publish(CueEvent::Start(c3.clone()));
        b.wait("2 live events", "window.probe.rec.events.length >= 2", Duration::from_secs(10))
            .await;

        // Forced disconnect: every socket closed by the server (1001); events published
        // while the client is away must arrive after it resumes, once.
        stack.restart_feed();
        publish(CueEvent::Start(c4.clone()));
        publish(CueEvent::End(ended(c1.clone(), TimeDelta::seconds(2))));
        let mut up3 = c3.clone();
        up3.score = 0.95;
        publish(CueEvent::Update(up3));
        b.wait(
            "the resumed connection",
            "window.probe.rec.statuses.some((s) => s.state === 'open' && s.resumed === true)",
            Duration::from_secs(10),
        )
        .await;
        publish(CueEvent::End(ended(c3.clone(), TimeDelta::seconds(1))));
        b.wait("6 events", "window.probe.rec.events.length >= 6", Duration::from_secs(10))
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;

        let s = b.eval("window.probe.summary()").await;
        let got: Vec<Value> = s["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| json!([e["type"], e["id"], e["offset"]]))
            .collect();
        assert_eq!(got, published, "every event exactly once, in order: {s}");
        assert_eq!(s["snapshots"].as_array().unwrap().len(), 1, "no second snapshot: {s}");
        assert_eq!(s["stats"]["resumed"], 1, "{s}");
        assert!(s["stats"]["connects"].as_u64().unwrap() >= 2, "{s}");
        assert_eq!(s["stats"]["duplicates"], 0, "{s}");
        assert_eq!(s["open"], json!([c4.id]), "only cue 4 is still open: {s}");
        assert_eq!(s["offset"], published.last().unwrap()[2], "{s}");
        assert!(
            s["statuses"]
                .as_array()
                .unwrap()
                .iter()
                .any(|st| st["state"] == "closed" && st["reason"].as_str().is_some_and(|r| r.contains("1001"))),
            "the client saw the server close it: {s}"
        );
        assert_eq!(s["errors"], json!([]), "{s}");
        let logs = b.command(json!({"op": "logs"}), 1000).await.unwrap();
        assert!(
            !logs.to_string().contains("pageerror"),
            "no page errors: {logs}"
        );
        b.close().await;
    })
    .await;
}

/// A misbehaving feed server: garbage, half-messages, binary frames, duplicates; checks
/// the SDK survives, answers keepalive and resumes with `since` after being cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_survives_malformed_server_input_and_resumes_with_since() {
    run_limited(async {
        let Some(mut b) = Browser::launch("sdk_survives_malformed_server_input_and_resumes_with_since").await else {
            return;
        };
        let stack = Stack::start().await; // serves the page and the SDK
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = listener.local_addr().unwrap();
        let uris = Arc::new(Mutex::new(Vec::<String>::new()));
        let client_texts = Arc::new(Mutex::new(Vec::<String>::new()));
        let pongs = Arc::new(Mutex::new(0usize));
        let good = |n: u64, off: &str, kind: &str| {
            json!({"type": kind, "offset": off, "cue": simple_cue(n)}).to_string()
        };
        let script_one: Vec<String> = vec![
            json!({"type":"hello","channel":"ch","server_time":"2026-11-21T10:00:00.000Z",
                   "offset":"100-0","resumed":false,"ping_interval_ms":300})
            .to_string(),
            "this is not JSON".into(),
            "[1,2,3]".into(),
            json!({"type": "start"}).to_string(),
            json!({"type": "start", "offset": "101-0", "cue": {"id": 5}}).to_string(),
            json!({"type": "start", "offset": "not-an-offset", "cue": simple_cue(9)}).to_string(),
            json!({"type": "snapshot", "offset": "100-0",
                   "cues": [simple_cue(1), {"id": "broken", "start": "yesterday"}]})
            .to_string(),
            json!({"type": "wat", "offset": "100-1"}).to_string(),
            json!({"type": "error", "code": "bad_message", "message": "test"}).to_string(),
            good(2, "101-0", "start"),
            good(2, "101-0", "start"), // a repeat: ignored
            good(1, "100-5", "update"), // older than what we have: ignored
            good(3, "102-0", "start"),
        ];
        {
            let (uris, texts, pongs) = (uris.clone(), client_texts.clone(), pongs.clone());
            tokio::spawn(async move {
                let mut session = 0;
                while let Ok((tcp, _)) = listener.accept().await {
                    session += 1;
                    let uris = uris.clone();
                    use tokio_tungstenite::tungstenite::handshake::server::{
                        ErrorResponse, Request as WsRequest, Response as WsResponse,
                    };
                    // The handshake callback's type is tungstenite's.
                    #[allow(clippy::result_large_err)]
                    let cb = move |req: &WsRequest, resp: WsResponse| -> Result<WsResponse, ErrorResponse> {
                        uris.lock().unwrap().push(req.uri().to_string());
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else {
                        continue;
                    };
                    use tokio_tungstenite::tungstenite::Message;
                    if session == 1 {
                        for text in &script_one {
                            ws.send(Message::text(text.clone())).await.unwrap();
                        }
                        ws.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
                        ws.send(Message::Ping(vec![7u8].into())).await.unwrap();
                        // Read for a while (pings, pongs), then cut the TCP connection.
                        let until = tokio::time::Instant::now() + Duration::from_millis(1500);
                        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(until, ws.next()).await {
                            match m {
                                Message::Text(t) => texts.lock().unwrap().push(t.as_str().to_string()),
                                Message::Pong(_) => *pongs.lock().unwrap() += 1,
                                _ => {}
                            }
                        }
                        drop(ws);
                    } else {
                        let hello = json!({"type":"hello","channel":"ch","server_time":"2026-11-21T10:00:01.000Z",
                            "offset":"102-0","resumed":true,"ping_interval_ms":30000});
                        ws.send(Message::text(hello.to_string())).await.unwrap();
                        ws.send(Message::text(good(3, "102-0", "update"))).await.unwrap(); // repeat
                        ws.send(Message::text(good(4, "103-0", "start"))).await.unwrap();
                        while let Some(Ok(_)) = ws.next().await {}
                    }
                }
            });
        }
        b.goto(&stack.url("/test/blank.html")).await;
        b.eval(&format!(
            "import('/test/sdk-probe.mjs').then((m) => m.start({{channel: 'ch', baseUrl: 'http://{fake}', backoffInitialMs: 100, backoffMaxMs: 400}}))"
        ))
        .await;
        b.wait(
            "the event after the reconnect",
            "window.probe.rec.events.some((e) => e.offset === '103-0')",
            Duration::from_secs(15),
        )
        .await;
        let s = b.eval("window.probe.summary()").await;
        let offsets: Vec<&str> = s["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["offset"].as_str().unwrap())
            .collect();
        assert_eq!(offsets, ["101-0", "102-0", "103-0"], "{s}");
        let ids = |ns: &[u64]| -> Value { json!(ns.iter().map(|&n| simple_cue(n).id).collect::<Vec<_>>()) };
        assert_eq!(s["open"], ids(&[1, 2, 3, 4]), "{s}");
        assert_eq!(s["snapshots"][0]["ids"], ids(&[1]), "the broken cue is dropped: {s}");
        assert_eq!(s["stats"]["duplicates"], 3, "{s}");
        assert!(s["stats"]["ignored"].as_u64().unwrap() >= 8, "{s}");
        let uris = uris.lock().unwrap().clone();
        assert_eq!(uris.len(), 2, "{uris:?}");
        assert_eq!(uris[0], "/v1/channels/ch/cues", "{uris:?}");
        assert_eq!(uris[1], "/v1/channels/ch/cues?since=102-0", "resumes after the last event: {uris:?}");
        let texts = client_texts.lock().unwrap().clone();
        assert!(
            !texts.is_empty() && texts.iter().all(|t| t == r#"{"type":"ping"}"#),
            "application keepalive pings every ping_interval_ms: {texts:?}"
        );
        assert!(*pongs.lock().unwrap() >= 1, "the browser answers WebSocket pings");
        let logs = b.command(json!({"op": "logs"}), 1000).await.unwrap();
        assert!(!logs.to_string().contains("pageerror"), "no page errors: {logs}");
        b.close().await;
    })
    .await;
}

// ---------------------------------------------------------------- b. alignment, demo page

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shows_cues_when_the_picture_reaches_them() {
    run_limited(async {
        let Some(mut b) = Browser::launch("demo_shows_cues_when_the_picture_reaches_them").await else {
            return;
        };
        let stack = Stack::start().await;
        b.goto(&stack.url("/demo/?channel=ch&src=index.m3u8")).await;
        let playing = b
            .wait(
                "the feed and playback",
                "window.shopcueDemo.client && window.shopcueDemo.client.state === 'open' && window.shopcueDemo.hls.playingDate && window.shopcueDemo.hls.playingDate.getTime()",
                Duration::from_secs(30),
            )
            .await;
        // Cues ahead of the picture on screen, published (start and end) right away: the
        // feed delivers them seconds before playback reaches them.
        let playing = DateTime::from_timestamp_millis(playing.as_i64().unwrap()).unwrap();
        let a_start = playing + TimeDelta::milliseconds(3000);
        let a = product_cue(11, a_start, None, TimeDelta::seconds(3));
        let a_end = a_start + TimeDelta::milliseconds(2500);
        let open = product_cue(12, a_start + TimeDelta::milliseconds(500), None, TimeDelta::seconds(10));
        stack.bus.publish(CueEvent::Start(a.clone()));
        stack.bus.publish(CueEvent::Start(open.clone()));
        stack.bus.publish(CueEvent::End(ended(a.clone(), a_end - a_start)));
        let early = b
            .wait(
                "the cues on the feed",
                "window.shopcueDemo.client.cues.size === 2 && window.shopcueDemo.client.stats.events === 3 && ({playing: window.shopcueDemo.hls.playingDate.getTime(), shows: window.shopcueDemo.shows.length})",
                Duration::from_secs(10),
            )
            .await;
        assert!(
            early["playing"].as_i64().unwrap() < ms(a_start),
            "published before playback reached it: {early} vs {a_start}"
        );
        assert_eq!(early["shows"], 0, "nothing shown before its time: {early}");

        // While cue a is on screen: its card (with the catalog's title) and its hotspot.
        let sel = |kind: &str, id: &str| format!("document.querySelector('.{kind}[data-cue-id=\"{id}\"]')");
        let on_screen = b
            .wait(
                "card and hotspot",
                &format!(
                    "(() => {{ const card = {}; const spot = {}; if (!card || !spot || !card.textContent.includes('Test product')) return null; \
                     const r = spot.getBoundingClientRect(); const video = document.getElementById('video'); const v = video.getBoundingClientRect(); \
                     const k = Math.min(v.width / video.videoWidth, v.height / video.videoHeight); const pw = video.videoWidth * k; const ph = video.videoHeight * k; \
                     return {{card: card.textContent, img: !!card.querySelector('img'), x: (r.left - v.left - (v.width - pw) / 2) / pw, \
                       y: (r.top - v.top - (v.height - ph) / 2) / ph, width: r.width / pw, height: r.height / ph, \
                       box: window.shopcueDemo.client.hotspots().find((h) => h.cue.id === '{}')?.box ?? null, \
                       playing: window.shopcueDemo.hls.playingDate.getTime()}}; }})()",
                    sel("card", &a.id),
                    sel("hotspot", &a.id),
                    a.id
                ),
                Duration::from_secs(30),
            )
            .await;
        // SHOPCUE_DEMO_SCREENSHOT=/tmp/demo.png keeps a picture of the page at this moment.
        if let Ok(path) = std::env::var("SHOPCUE_DEMO_SCREENSHOT") {
            let _ = b
                .command(json!({"op": "screenshot", "path": path}), 10_000)
                .await;
        }
        assert!(on_screen["card"].as_str().unwrap().contains("Test product sku-11"), "{on_screen}");
        assert!(on_screen["card"].as_str().unwrap().contains("2.49 EUR"), "{on_screen}");
        assert_eq!(on_screen["img"], true, "{on_screen}");
        // The box follows the track: x = 0.1 + 0.5 * elapsed / 3 s.
        let elapsed = (on_screen["playing"].as_i64().unwrap() - ms(a_start)) as f64 / 3000.0;
        let x = on_screen["box"]["x"].as_f64().unwrap();
        assert!(
            (x - (0.1 + 0.5 * elapsed)).abs() < 0.05,
            "interpolated box x {x} at {elapsed:.2} of the track: {on_screen}"
        );
        // The rectangle on the page is that box over the picture (object-fit: contain);
        // 2 px of border and the CSS transition allowed for.
        for (key, want) in [("x", x), ("y", 0.2), ("width", 0.3), ("height", 0.4)] {
            let got = on_screen[key].as_f64().unwrap();
            assert!((got - want).abs() < 0.04, "hotspot {key} {got} vs box {want}: {on_screen}");
        }

        b.wait(
            "cue a hidden",
            &format!("window.shopcueDemo.hides.some((h) => h.id === '{}')", a.id),
            Duration::from_secs(30),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let d = b
            .eval(&format!(
                "({{shows: window.shopcueDemo.shows, hides: window.shopcueDemo.hides, errors: window.shopcueDemo.errors, \
                  card: !!{}, spot: !!{}, openSpot: !!{}}})",
                sel("card", &a.id),
                sel("hotspot", &a.id),
                sel("hotspot", &open.id)
            ))
            .await;
        let date = |v: &Value| -> i64 {
            DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().timestamp_millis()
        };
        let show = d["shows"].as_array().unwrap().iter().find(|s| s["id"] == a.id.as_str()).unwrap();
        let hide = d["hides"].as_array().unwrap().iter().find(|s| s["id"] == a.id.as_str()).unwrap();
        let show_lag = date(&show["playingDate"]) - ms(a_start);
        let hide_lag = date(&hide["playingDate"]) - ms(a_end);
        eprintln!("alignment: shown {show_lag} ms after start, hidden {hide_lag} ms after end");
        assert!((0..=500).contains(&show_lag), "shown at playingDate - start = {show_lag} ms: {d}");
        assert!((1..=500).contains(&hide_lag), "hidden at playingDate - end = {hide_lag} ms: {d}");
        assert_eq!(hide["reason"], "ended", "{d}");
        assert_eq!(d["card"], false, "card removed: {d}");
        assert_eq!(d["spot"], false, "hotspot removed: {d}");
        assert_eq!(d["openSpot"], true, "the open cue stays: {d}");
        assert!(
            d["shows"].as_array().unwrap().iter().any(|s| s["id"] == open.id.as_str()),
            "{d}"
        );
        assert_eq!(d["errors"], json!([]), "{d}");
        b.close().await;
    })
    .await;
}

// ---------------------------------------------------------------- c. issue 5.5: hls.js metadata

/// TextTrack cue `type`s hls.js gives ID3 from TS segments: `org.id3` (1.6 without video;
/// audio-only) or the emsg scheme (with a video track).
const ID3_TYPES: [&str; 2] = ["org.id3", "https://aomedia.org/emsg/ID3"];
const ID3_TYPES_JS: &str = "['org.id3', 'https://aomedia.org/emsg/ID3']";

fn daterange_attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!("{name}=");
    let at = line.find(&format!(",{needle}")).map(|i| i + 1)?;
    let rest = &line[at + needle.len()..];
    if let Some(q) = rest.strip_prefix('"') {
        q.split('"').next()
    } else {
        rest.split(',').next()
    }
}

/// Media time of wall clock `t` on the playlist's timeline (the fragment whose PDT range
/// holds it), from the fragments hls.js reports.
fn media_time(frags: &Value, t: i64) -> Option<f64> {
    frags.as_array()?.iter().find_map(|f| {
        let pdt = f["pdt"].as_f64()?;
        let dur = f["duration"].as_f64()?;
        let t = t as f64;
        (pdt <= t && t < pdt + dur * 1000.0)
            .then(|| f["start"].as_f64().unwrap() + (t - pdt) / 1000.0)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_surfaces_daterange_and_id3_cues_of_the_proxied_channel() {
    run_limited(async {
        let Some(mut b) = Browser::launch("hls_js_surfaces_daterange_and_id3_cues_of_the_proxied_channel").await else {
            return;
        };
        let stack = Stack::start().await;
        let edge = stack.live_edge().await;
        let start = edge + TimeDelta::milliseconds(2_620);
        let cue = product_cue(21, start, None, TimeDelta::seconds(2));
        stack.bus.publish(CueEvent::Start(cue.clone()));

        b.goto(&stack.url("/test/blank.html")).await;
        b.eval("new Promise((ok, err) => { const s = document.createElement('script'); s.src = '/vendor/hls.min.js'; s.onload = ok; s.onerror = err; document.head.append(s); }).then(() => Hls.version)").await;
        b.eval("import('/test/metadata-probe.mjs').then((m) => m.start('/hls/ch/index.m3u8'))").await;
        // Entered: the date range cue (one per attribute) and the ID3 cue of our cue.
        b.wait_or_dump(
            "date range and ID3 cues entered",
            &format!(
                "(() => {{ const e = window.meta.summary().enters; \
                  return e.some((c) => c.type === 'com.apple.quicktime.HLS' && c.id === '{id}') && \
                         e.some((c) => {ID3_TYPES}.includes(c.type) && c.key === 'TXXX' && typeof c.data === 'string' && c.data.includes('{id}')); }})()",
                id = cue.id,
                ID3_TYPES = ID3_TYPES_JS,
            ),
            Duration::from_secs(40),
            "(() => { const s = window.meta.summary(); const d = window.meta.hls.latestLevelDetails; \
              return {dateRanges: Object.keys(d?.dateRanges || {}), cues: s.cues.slice(0, 12).map((c) => [c.type, c.id, c.key, c.start, c.end]), \
                enters: s.enters.slice(0, 12).map((c) => [c.type, c.key, c.start, c.playingDate]), errors: s.errors, t: s.currentTime}; })()",
        )
        .await;
        // End the cue: the date range gains DURATION and its TextTrack cues an end.
        stack
            .bus
            .publish(CueEvent::End(ended(cue.clone(), TimeDelta::milliseconds(1500))));
        b.wait(
            "the date range's end",
            &format!(
                "window.meta.summary().cues.some((c) => c.id === '{}' && c.key === 'X-PRODUCT-ID' && c.end !== null)",
                cue.id
            ),
            Duration::from_secs(20),
        )
        .await;
        let s = b.eval("window.meta.summary()").await;
        let playlist = stack.playlist().await;
        let line = playlist
            .lines()
            .find(|l| l.starts_with("#EXT-X-DATERANGE:") && l.contains(&cue.id))
            .unwrap_or_else(|| panic!("date range in the proxied playlist: {playlist}"))
            .to_string();
        let frags = &s["frags"];
        let start_ms = ms(start);
        let expected_start = media_time(frags, start_ms).expect("START-DATE within the playlist window");

        // Date range cues: one per client attribute, as Safari does.
        let dr: Vec<&Value> = s["cues"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["type"] == "com.apple.quicktime.HLS" && c["id"] == cue.id.as_str())
            .collect();
        let by_key = |k: &str| dr.iter().find(|c| c["key"] == k).copied();
        let product = by_key("X-PRODUCT-ID").unwrap_or_else(|| panic!("X-PRODUCT-ID cue: {s}"));
        assert_eq!(product["data"], "sku-21", "{product}");
        let scte = by_key("SCTE35-CMD").unwrap_or_else(|| panic!("SCTE35-CMD cue: {s}"));
        let scte_hex = daterange_attr(&line, "SCTE35-CMD").unwrap().trim_start_matches("0x").to_lowercase();
        assert_eq!(scte["data"]["hex"], scte_hex.as_str(), "SCTE35-CMD bytes as in {line}");
        assert!(scte_hex.starts_with("fc"), "a splice_info_section: {scte_hex}");
        assert!(by_key("X-SHOT").is_some() && by_key("CLASS").is_none(), "{dr:?}");
        let mut dr_err: f64 = 0.0;
        for c in &dr {
            let st = c["start"].as_f64().unwrap();
            dr_err = dr_err.max((st - expected_start).abs());
            let end = c["end"].as_f64().expect("DURATION turned into the cue's end");
            assert!((end - st - 1.5).abs() < 0.01, "end = start + DURATION: {c}");
        }
        assert!(dr_err < 0.01, "date range startTime vs START-DATE on the playlist PDT: off by {dr_err} s: {s}");

        // ID3 (TXXX + PRIV) from the proxied TS segments: the first one at the cue's start.
        let id3: Vec<&Value> = s["cues"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| ID3_TYPES.contains(&c["type"].as_str().unwrap_or("")))
            .filter(|c| match (&c["key"], &c["data"]) {
                (k, Value::String(d)) if k == "TXXX" => d.contains(&cue.id),
                (k, Value::Object(d)) if k == "PRIV" => d["hex"].as_str().is_some_and(|h| h.contains(&hex::encode(cue.id.as_bytes()))),
                _ => false,
            })
            .collect();
        let txxx: Vec<&&Value> = id3.iter().filter(|c| c["key"] == "TXXX").collect();
        assert!(!txxx.is_empty() && id3.len() > txxx.len(), "TXXX and PRIV cues: {id3:?}");
        assert_eq!(txxx[0]["info"], "shopcue", "{:?}", txxx[0]);
        let json: Value = serde_json::from_str(txxx[0]["data"].as_str().unwrap()).unwrap();
        assert_eq!(json["product_id"], "sku-21", "{json}");
        assert_eq!(json["start"], shopcue::frame::rfc3339_ms(&start), "{json}");
        let first_id3 = id3.iter().map(|c| c["start"].as_f64().unwrap()).fold(f64::INFINITY, f64::min);
        let id3_err = (first_id3 - expected_start).abs();
        eprintln!(
            "metadata timing: date range off by {:.1} ms, first ID3 off by {:.1} ms (expected media time {expected_start:.3} s)",
            dr_err * 1000.0,
            id3_err * 1000.0
        );
        assert!(id3_err <= 0.05, "first ID3 cue at {first_id3} s, START-DATE at {expected_start} s: {s}");

        // When entered, the picture on screen is the cue's start (to the enter event's granularity).
        for kind in ["date range", "ID3"] {
            let e = s["enters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| {
                    let t = e["type"].as_str().unwrap_or("");
                    if kind == "ID3" {
                        ID3_TYPES.contains(&t) && e["data"].to_string().contains(&cue.id)
                    } else {
                        t == "com.apple.quicktime.HLS" && e["id"] == cue.id.as_str()
                    }
                })
                .unwrap();
            let lag = e["playingDate"].as_f64().unwrap() - start_ms as f64;
            eprintln!("{kind} cue entered at playingDate - START-DATE = {lag:.0} ms");
            assert!((-50.0..=500.0).contains(&lag), "{kind} entered {lag} ms from its start: {e}");
        }
        assert!(
            !s["errors"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().starts_with("fatal")),
            "{s}"
        );
        b.close().await;
    })
    .await;
}
