//! The ops dashboard against a running sidecar: the test origin looping grocery_shots.mp4
//! as a live channel (with the grocery catalog, so there are cues and inference
//! latencies to show) and a channel that cannot start, the history route the charts
//! read, and the page itself in headless Chromium (web/tests/dashboard.mjs with
//! playwright-core) checking what an operator looks at.
//!
//! The browser test skips, saying why, when /usr/bin/chromium or
//! web/node_modules/playwright-core is missing (`scripts/setup.sh test`,
//! `npm install --prefix web`). With `SHOPCUE_UPDATE_SCREENSHOT=1` it also writes the
//! screenshot to docs/dashboard.png; otherwise to target/test-data/dashboard.png.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{TestOrigin, grocery_catalog, root, test_settings};
use serde_json::Value;
use shopcue::config::ChannelSettings;
use shopcue::sidecar::Sidecar;
use tokio_util::sync::CancellationToken;

const CHROMIUM: &str = "/usr/bin/chromium";

async fn get(url: &str) -> (u16, String, String) {
    let r = reqwest::get(url).await.expect("HTTP answers");
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ctype, r.text().await.unwrap_or_default())
}

/// The page and its assets are served from the binary, with types the browser accepts
/// under `nosniff`; every asset the page names exists. No sidecar needed.
#[tokio::test]
async fn dashboard_assets_are_embedded_and_served() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(shopcue::http::server::serve(
        listener,
        shopcue::http::dashboard::router(),
        std::future::pending(),
    ));
    let base = format!("http://{addr}");
    for (path, ctype, needle) in [
        ("/dashboard", "text/html", "<title>shopcue"),
        ("/dashboard/", "text/html", "<title>shopcue"),
        (
            "/dashboard/dashboard.js",
            "text/javascript",
            "/v1/status/history",
        ),
        ("/dashboard/dashboard.css", "text/css", ".badge"),
        (
            "/dashboard/vendor/uplot/uPlot.iife.min.js",
            "text/javascript",
            "uPlot",
        ),
        (
            "/dashboard/vendor/uplot/uPlot.min.css",
            "text/css",
            ".uplot",
        ),
        ("/dashboard/vendor/uplot/LICENSE", "text/plain", "MIT"),
    ] {
        let (code, got, body) = get(&format!("{base}{path}")).await;
        assert_eq!(code, 200, "{path}");
        assert!(got.starts_with(ctype), "{path}: {got}");
        assert!(body.contains(needle), "{path} lacks {needle}");
    }
    let (code, _, _) = get(&format!("{base}/dashboard/nothing.js")).await;
    assert_eq!(code, 404);
}

/// Why the browser part cannot run here, if it cannot.
fn browser_missing() -> Option<String> {
    if !Path::new(CHROMIUM).is_file() {
        return Some(format!(
            "{CHROMIUM} missing (apt-get install chromium, or scripts/setup.sh test)"
        ));
    }
    if !root().join("web/node_modules/playwright-core").is_dir() {
        return Some(
            "web/node_modules/playwright-core missing (npm install --prefix web playwright-core)"
                .into(),
        );
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_live_channels_in_a_browser() {
    let skip = browser_missing();
    let origin = TestOrigin::start("grocery_shots.mp4", 2.0, 6, true).await;
    let mut s = test_settings();
    s.channels = vec![
        ChannelSettings {
            id: "grocery".into(),
            url: origin.master_url(),
        },
        ChannelSettings {
            id: "unreachable".into(),
            url: "http://127.0.0.1:1/x.m3u8".into(),
        },
    ];
    if skip.is_none() {
        s.catalog.dir = grocery_catalog().display().to_string();
    }
    s.validate().expect("settings are valid");
    let sidecar = Sidecar::start(s, CancellationToken::new())
        .await
        .expect("sidecar starts");
    let base = format!("http://{}", sidecar.addr);

    // The history route: a point a second per channel, `since` returns only newer ones.
    let mut points = Vec::new();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (code, ctype, body) = get(&format!("{base}/v1/status/history")).await;
        assert_eq!(code, 200, "{body}");
        assert!(ctype.starts_with("application/json"), "{ctype}");
        let v: Value = serde_json::from_str(&body).unwrap();
        points = v["grocery"].as_array().cloned().unwrap_or_default();
        assert!(v["unreachable"].is_array(), "{v}");
        if points.len() >= 3 {
            break;
        }
    }
    assert!(points.len() >= 3, "history grows once a second: {points:?}");
    let ts: Vec<i64> = points.iter().map(|p| p["t"].as_i64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
    for key in ["decode_fps", "fetch_ms", "cues_per_s", "subscribers"] {
        assert!(points[0][key].is_number(), "{key}: {}", points[0]);
    }
    let mid = ts[ts.len() - 2];
    let (_, _, body) = get(&format!("{base}/v1/status/history?since={mid}")).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let newer = v["grocery"].as_array().unwrap();
    assert!(!newer.is_empty(), "{v}");
    assert!(
        newer.iter().all(|p| p["t"].as_i64().unwrap() > mid),
        "only points after {mid}: {v}"
    );
    let (code, _, body) = get(&format!("{base}/v1/status/history?since=yesterday")).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("since"), "{body}");

    // Every Prometheus metric docs/dashboard.md names is served.
    let (_, _, metrics) = get(&format!("{base}/metrics")).await;
    let doc = std::fs::read_to_string(root().join("docs/dashboard.md")).unwrap();
    let named: Vec<&str> = doc
        .split('`')
        .filter(|w| w.starts_with("shopcue_"))
        .map(|w| w.split('{').next().unwrap_or(w))
        .collect();
    assert!(named.len() >= 15, "{named:?}");
    for name in named {
        if name == "shopcue_execution_provider" && skip.is_some() {
            continue; // no models without a catalog
        }
        assert!(
            metrics.contains(name),
            "docs/dashboard.md names {name}, /metrics lacks it:\n{metrics}"
        );
    }

    // One feed client, so the dashboard has a subscriber to count.
    let (_ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/channels/grocery/cues", sidecar.addr))
            .await
            .expect("websocket connects");

    if let Some(why) = skip {
        common::peer_missing(
            "the browser part of dashboard_shows_live_channels_in_a_browser",
            &why,
        );
    } else {
        let shot = if std::env::var_os("SHOPCUE_UPDATE_SCREENSHOT").is_some() {
            root().join("docs/dashboard.png")
        } else {
            std::fs::create_dir_all(root().join("target/test-data")).unwrap();
            root().join("target/test-data/dashboard.png")
        };
        let _ = std::fs::remove_file(&shot);
        let run = tokio::process::Command::new("node")
            .arg(root().join("web/tests/dashboard.mjs"))
            .args([base.as_str(), "grocery", "unreachable"])
            .arg(&shot)
            .current_dir(root())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(240), run)
            .await
            .expect("the browser check finishes within 4 minutes")
            .expect("node runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("dashboard.mjs: {stdout}{stderr}");
        assert!(out.status.success(), "browser check failed: {stderr}");
        let summary: Value = serde_json::from_str(stdout.trim()).expect("a JSON summary");
        assert_eq!(summary["badge"], "up", "{summary}");
        let figures = summary["figures"].as_object().expect("figures");
        assert_eq!(figures.len(), 6, "{summary}");
        assert!(figures.values().all(Value::is_number), "{summary}");
        assert_eq!(figures["subscribers"], 1, "{summary}");

        // What the browser showed matches the status document.
        let (_, _, body) = get(&format!("{base}/v1/status")).await;
        let status: Value = serde_json::from_str(&body).unwrap();
        let broken = status["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "unreachable")
            .cloned()
            .unwrap();
        assert_ne!(broken["state"], "up", "{status}");
        let shown = summary["broken"]["error"].as_str().unwrap();
        let message = broken["last_error"]["message"].as_str().unwrap_or("");
        assert!(!message.is_empty(), "{status}");
        assert!(
            shown == message || (shown.contains("127.0.0.1:1") && message.contains("127.0.0.1:1")),
            "card shows `{shown}`, status says `{message}`"
        );
        let png = std::fs::read(&shot).expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "PNG");
    }

    tokio::time::timeout(Duration::from_secs(30), sidecar.shutdown())
        .await
        .expect("shutdown finishes")
        .expect("clean shutdown");
}

/// `server.protect_ops`: status, history and metrics need the admin key (header or bearer
/// token), the probes do not, and the dashboard asks for the key and then shows the live
/// status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_status_needs_the_key_and_the_dashboard_asks_for_it() {
    const KEY: &str = "ops-test-admin-key-123";
    let mut s = test_settings();
    s.channels.clear();
    s.server.admin_key = KEY.into();
    s.server.protect_ops = true;
    s.validate().expect("settings are valid");
    let sidecar = Sidecar::start(s, CancellationToken::new())
        .await
        .expect("sidecar starts");
    let base = format!("http://{}", sidecar.addr);
    let client = reqwest::Client::new();
    for path in ["/v1/status", "/v1/status/history", "/metrics"] {
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without the key");
        let r = client
            .get(format!("{base}{path}"))
            .header("x-api-key", "wrong-key-wrong-key")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} with a wrong key");
        let r = client
            .get(format!("{base}{path}"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path} with the key");
    }
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(get(&format!("{base}{probe}")).await.0, 200, "{probe}");
    }
    // The page itself is served; it asks for the key, then goes live.
    assert_eq!(get(&format!("{base}/dashboard")).await.0, 200);
    if let Some(mut b) = common::browser::Browser::launch(
        "protected_status_needs_the_key_and_the_dashboard_asks_for_it",
    )
    .await
    {
        b.goto(&format!("{base}/dashboard")).await;
        let poll = |js: &'static str| js;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while b
            .eval(poll("!document.getElementById('signin').hidden"))
            .await
            != true
        {
            assert!(tokio::time::Instant::now() < deadline, "no sign-in form");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        b.eval(&format!(
            "document.getElementById('key').value = '{KEY}';
             document.getElementById('signin').requestSubmit(); true"
        ))
        .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while b
            .eval(poll("document.getElementById('conn').dataset.conn"))
            .await
            != "live"
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the dashboard did not go live"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            b.eval("document.getElementById('signin').hidden").await,
            true
        );
        b.close().await;
    }
    tokio::time::timeout(Duration::from_secs(30), sidecar.shutdown())
        .await
        .expect("shutdown finishes")
        .expect("clean shutdown");
}
