//! `shopcue demo` exactly as a newcomer runs it: the real binary with the default config
//! (`config/shopcue.toml`) and the default demo catalog (`data/demo-catalog`, built on
//! first run), every URL it prints fetched as printed, and its demo player URL opened in
//! headless Chromium: the video plays, product cards and hotspots appear, no request
//! fails; a viewer opens products with the keyboard and a click while the video plays,
//! sees the "shop the show" rail, and the page gets `impression`/`click` events; on a
//! phone-sized viewport the rails sit under the video. Then the rewritten channel is played from a page on another origin (CORS on
//! `/hls/…`, `/v1/products/…`, the SDK, and on the test origin's absolute segment URIs).
//! Ctrl-C (SIGINT) stops the demo cleanly.

mod common;

use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use common::browser::Browser;
use common::demo::Demo;
use futures::StreamExt;
use serde_json::Value;
use tokio::process::Command;

/// The demo builds its catalog on first run (about a minute on 2 cores).
const STARTUP_LIMIT: Duration = Duration::from_secs(300);

/// The real binary, as a newcomer runs it.
async fn start_demo() -> Demo {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shopcue"));
    cmd.args(["demo", "--listen", "127.0.0.1:0"])
        .args(["--origin-listen", "127.0.0.1:0", "--duration", "400"])
        .current_dir(common::root())
        .env_remove("RUST_LOG")
        .stderr(Stdio::inherit());
    Demo::start(cmd, STARTUP_LIMIT).await
}

/// Ctrl-C, as a user stops it: the demo must stop cleanly, exit code 0.
async fn interrupt(mut demo: Demo) {
    let pid = demo.child.id().expect("demo still running").to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().await;
    assert!(sent.is_ok_and(|s| s.success()), "kill -INT {pid}");
    let status = tokio::time::timeout(Duration::from_secs(30), demo.child.wait())
        .await
        .expect("the demo stops within 30 s of Ctrl-C")
        .expect("wait");
    assert!(status.success(), "demo exit status after Ctrl-C: {status}");
}

async fn get_ok(url: &str) -> (String, String) {
    let r = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    let ct = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (ct, r.text().await.expect("body"))
}

/// Every URL the demo printed answers as printed.
async fn check_printed_urls(demo: &Demo) {
    for name in ["test origin", "rewritten playlist"] {
        let (_, body) = get_ok(demo.url(name)).await;
        assert!(body.starts_with("#EXTM3U"), "{name}: {body}");
    }
    for name in ["dashboard", "demo player"] {
        let (ct, _) = get_ok(demo.url(name)).await;
        assert!(ct.starts_with("text/html"), "{name}: {ct}");
    }
    let (_, metrics) = get_ok(demo.url("metrics")).await;
    assert!(metrics.contains("shopcue_"), "{metrics}");
    let (_, status) = get_ok(demo.url("status")).await;
    let status: Value = serde_json::from_str(&status).expect("status JSON");
    assert!(status["channels"].as_array().is_some(), "{status}");
    let (mut ws, _) = tokio_tungstenite::connect_async(demo.url("cue feed"))
        .await
        .expect("the printed cue feed URL connects");
    let hello = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("hello in time")
        .expect("a message")
        .expect("a frame");
    let hello: Value = serde_json::from_str(hello.to_text().expect("text")).expect("JSON");
    assert_eq!(hello["type"], "hello", "{hello}");
}

/// What the demo page has done so far (for the waits and for failure messages).
const DEMO_STATE: &str = "(() => { const d = window.shopcueDemo; const v = d && d.video; \
    return { t: v ? v.currentTime : null, shows: d ? d.shows.length : null, \
    errors: d ? d.errors : null, maxCards: window.__maxCards, maxHotspots: window.__maxHotspots, \
    status: document.getElementById('status')?.textContent }; })()";

/// Keeps the largest number of cards and hotspots the page showed at once.
const RECORD_MAXIMA: &str = "(() => { window.__maxCards = 0; window.__maxHotspots = 0; \
    setInterval(() => { \
      window.__maxCards = Math.max(window.__maxCards, document.querySelectorAll('#cards .card').length); \
      window.__maxHotspots = Math.max(window.__maxHotspots, document.querySelectorAll('#hotspots .hotspot').length); \
    }, 50); return true; })()";

async fn play_the_printed_player(browser: &mut Browser, url: &str) {
    browser.goto(url).await;
    browser.eval(RECORD_MAXIMA).await;
    let playing = "window.shopcueDemo && window.shopcueDemo.video.currentTime > 0";
    browser
        .wait_or_dump("playback", playing, Duration::from_secs(20), DEMO_STATE)
        .await;
    let t0 = browser
        .eval("window.shopcueDemo.video.currentTime")
        .await
        .as_f64()
        .unwrap();
    // The issue's bar: at least 20 s played within 45 s of starting.
    let advanced = format!("window.shopcueDemo.video.currentTime - {t0} >= 20");
    browser
        .wait_or_dump(
            "20 s of playback",
            &advanced,
            Duration::from_secs(45),
            DEMO_STATE,
        )
        .await;
    let seen = "window.__maxCards > 0 && window.__maxHotspots > 0";
    browser
        .wait_or_dump(
            "product cards and hotspots",
            seen,
            Duration::from_secs(30),
            DEMO_STATE,
        )
        .await;
    let state = browser.eval(DEMO_STATE).await;
    println!("demo page: {state}");
    assert_eq!(state["errors"], serde_json::json!([]), "{state}");
    let failures = browser.failures().await;
    assert!(failures.is_empty(), "requests failed: {failures:?}");
}

/// A page on another origin (another loopback port) that plays the sidecar's rewritten
/// channel with hls.js and the SDK loaded from the sidecar, and reads a product.
fn foreign_page(sidecar: &str) -> String {
    format!(
        r#"<!doctype html><meta charset=utf-8><title>a shop</title>
<video id=v muted playsinline></video>
<script src="{sidecar}/vendor/hls.min.js"></script>
<script type=module>
import {{ ShopcueClient }} from '{sidecar}/sdk/shopcue.js';
const video = document.getElementById('v');
const shop = {{ video, cues: 0, products: [], errors: [] }};
window.shop = shop;
const client = new ShopcueClient({{ channel: 'grocery', baseUrl: '{sidecar}' }});
client.addEventListener('cueshow', async (e) => {{
  shop.cues++;
  try {{
    const r = await fetch('{sidecar}/v1/products/' + encodeURIComponent(e.detail.cue.product_id));
    shop.products.push(r.ok ? (await r.json()).product.id : 'HTTP ' + r.status);
  }} catch (err) {{ shop.errors.push(String(err)); }}
}});
client.connect();
const hls = new Hls();
hls.on(Hls.Events.ERROR, (_, d) => {{ if (d.fatal) shop.errors.push(d.details); }});
hls.loadSource('{sidecar}/hls/grocery/master.m3u8');
hls.attachMedia(video);
hls.on(Hls.Events.MANIFEST_PARSED, () => video.play().catch((e) => shop.errors.push(e.message)));
client.attachHls(hls, video);
</script>"#
    )
}

/// Where `SHOPCUE_UPDATE_SCREENSHOT` is set, the docs' pictures; else target/test-data.
fn screenshot_path(name: &str) -> std::path::PathBuf {
    let dir = if std::env::var_os("SHOPCUE_UPDATE_SCREENSHOT").is_some() {
        common::root().join("docs")
    } else {
        common::root().join("target/test-data")
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// What a viewer does: open a product from a card with the keyboard and from a hotspot
/// with a click (details shown, video still playing), see the "shop the show" rail; the
/// page got `impression` and `click` events; on a phone the rails sit under the video.
async fn use_the_player(browser: &mut Browser) {
    let card = "#cards .card";
    browser
        .wait_or_dump(
            "a card on screen",
            &format!("document.querySelector('{card}')"),
            Duration::from_secs(30),
            DEMO_STATE,
        )
        .await;
    browser
        .act(serde_json::json!({"op": "focus", "selector": card}))
        .await;
    browser
        .act(serde_json::json!({"op": "press", "key": "Enter"}))
        .await;
    let detail = "(() => { const d = document.getElementById('detail');         return d && !d.hidden && d.querySelector('h3') ? { title: d.querySelector('h3').textContent,         availability: d.querySelector('.availability')?.textContent, img: !!d.querySelector('img'),         paused: window.shopcueDemo.video.paused, label: document.querySelector('#cards .card').getAttribute('aria-label') } : null; })()";
    let shown = browser
        .wait_or_dump(
            "product details",
            detail,
            Duration::from_secs(10),
            DEMO_STATE,
        )
        .await;
    println!("details: {shown}");
    assert_eq!(shown["paused"], false, "the video keeps playing: {shown}");
    assert!(!shown["title"].as_str().unwrap_or("").is_empty(), "{shown}");
    assert!(
        shown["label"]
            .as_str()
            .unwrap_or("")
            .ends_with("show details"),
        "{shown}"
    );
    browser
        .screenshot(&screenshot_path("player-desktop.png"))
        .await;
    browser
        .act(serde_json::json!({"op": "press", "key": "Escape"}))
        .await;
    let spot = "#hotspots .hotspot";
    browser
        .wait_or_dump(
            "a hotspot",
            &format!("document.querySelector('{spot}')"),
            Duration::from_secs(30),
            DEMO_STATE,
        )
        .await;
    browser
        .eval(&format!("document.querySelector('{spot}').click(), true"))
        .await;
    let events = browser
        .wait_or_dump(
            "impression and click events, a rail",
            "(() => { const a = window.shopcueDemo.analytics;               const ok = a.some((e) => e.type === 'impression') && a.some((e) => e.type === 'click' && e.source === 'card')                 && a.some((e) => e.type === 'click' && e.source === 'hotspot')                 && document.querySelectorAll('#rail .rail-item').length > 0;               return ok ? { analytics: a.length, rail: document.querySelectorAll('#rail .rail-item').length,                 badge: document.getElementById('rail-count').textContent } : null; })()",
            Duration::from_secs(10),
            "window.shopcueDemo.analytics",
        )
        .await;
    println!("viewer events: {events}");
    assert_eq!(
        events["badge"].as_str().unwrap(),
        events["rail"].to_string(),
        "{events}"
    );
    // A phone: the rails go under the video.
    browser
        .act(serde_json::json!({"op": "viewport", "width": 390, "height": 844}))
        .await;
    let layout = browser
        .eval(
            "(() => { const v = document.getElementById('stage').getBoundingClientRect();               const a = document.querySelector('aside').getBoundingClientRect();               return { videoBottom: v.bottom, asideTop: a.top, asideWidth: a.width, page: innerWidth }; })()",
        )
        .await;
    println!("phone layout: {layout}");
    // Let the hotspots' short easing to their new place finish before the picture.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        layout["asideTop"].as_f64().unwrap() >= layout["videoBottom"].as_f64().unwrap(),
        "{layout}"
    );
    browser
        .screenshot(&screenshot_path("player-mobile.png"))
        .await;
    browser
        .act(serde_json::json!({"op": "viewport", "width": 1280, "height": 720}))
        .await;
}

async fn play_from_another_origin(browser: &mut Browser, sidecar: &str) {
    let html = foreign_page(sidecar);
    let app = Router::new().route(
        "/shop.html",
        get(move || {
            let html = html.clone();
            async move { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html) }
        }),
    );
    let base = common::serve_router(app).await;
    browser.goto(&format!("{base}/shop.html")).await;
    let dump = "JSON.stringify({t: window.shop && window.shop.video.currentTime, \
                cues: window.shop && window.shop.cues, products: window.shop && window.shop.products, \
                errors: window.shop && window.shop.errors})";
    browser
        .wait_or_dump(
            "cross-origin playback and a product",
            "window.shop && window.shop.video.currentTime > 4 && window.shop.products.length > 0",
            Duration::from_secs(60),
            dump,
        )
        .await;
    let state = browser.eval(dump).await;
    println!("foreign page: {state}");
    let state: Value = serde_json::from_str(state.as_str().unwrap()).unwrap();
    assert_eq!(state["errors"], serde_json::json!([]), "{state}");
    let products = state["products"].as_array().unwrap();
    assert!(
        products
            .iter()
            .all(|p| p.as_str().is_some_and(|id| !id.starts_with("HTTP"))),
        "{state}"
    );
    let failures = browser.failures().await;
    assert!(failures.is_empty(), "requests failed: {failures:?}");
}

/// Preflight is answered on the read-only routes; admin routes never allow other origins.
async fn check_cors_headers(sidecar: &str) {
    let client = reqwest::Client::new();
    let preflight = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{sidecar}/hls/grocery/master.m3u8"),
        )
        .header(header::ORIGIN, "https://shop.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "range")
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "*",
        "{:?}",
        preflight.headers()
    );
    let admin = client
        .post(format!("{sidecar}/v1/catalog/products"))
        .header(header::ORIGIN, "https://shop.example")
        .body("{}")
        .send()
        .await
        .expect("admin request");
    assert!(!admin.status().is_success(), "no key: refused");
    assert!(
        admin
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none(),
        "an admin route answered with CORS: {:?}",
        admin.headers()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_as_printed_plays_in_a_browser_and_from_another_origin() {
    let Some(mut browser) = Browser::launch("demo_as_printed_plays_in_a_browser").await else {
        return;
    };
    let demo = start_demo().await;
    tokio::time::timeout(Duration::from_secs(360), async {
        check_printed_urls(&demo).await;
        let player = demo.url("demo player").to_string();
        let sidecar = player.split("/demo/").next().unwrap().to_string();
        check_cors_headers(&sidecar).await;
        play_the_printed_player(&mut browser, &player).await;
        use_the_player(&mut browser).await;
        play_from_another_origin(&mut browser, &sidecar).await;
    })
    .await
    .expect("the demo checks finish within 6 minutes");
    browser.close().await;
    interrupt(demo).await;
}

#[test]
fn printed_lines_are_read_as_printed() {
    let got = common::demo::printed_urls(
        "  metrics            http://a/metrics   status http://a/v1/status",
    );
    assert_eq!(
        got,
        vec![
            ("metrics".to_string(), "http://a/metrics".to_string()),
            ("status".to_string(), "http://a/v1/status".to_string()),
        ]
    );
}
