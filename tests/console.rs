//! The operator console in headless Chromium against a running sidecar (the test origin
//! looping grocery_shots.mp4, the grocery catalog): sign in with the admin key, pin a
//! product (the cue reaches a WebSocket client with `source: "operator"` and a DATERANGE
//! in the proxied playlist), suppress a product of the footage (no cue of it while it
//! holds, the others go on), confirm a cue from its crop (the feedback API), unpin, a
//! similarity threshold set live (no cue starts above it; reset, they come back); every
//! action in the audit table. The API's refusals are checked over HTTP.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::browser::Browser;
use common::{TestOrigin, grocery_catalog, test_settings};
use futures::StreamExt;
use serde_json::{Value, json};
use shopcue::config::ChannelSettings;
use shopcue::sidecar::Sidecar;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const KEY: &str = "console-test-admin-key";
/// A catalog product that never shows in grocery_shots.mp4.
const PINNED: &str = "Granny-Smith";
/// One that does (every loop of the footage).
const SUPPRESSED: &str = "Oatly-Oat-Milk";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_event(ws: &mut Ws, limit: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        if let Ok(Message::Text(t)) = msg {
            let v: Value = serde_json::from_str(&t).ok()?;
            if ["start", "update", "end"].contains(&v["type"].as_str().unwrap_or("")) {
                return Some(v);
            }
        }
    }
}

/// Polls `js` (evaluated in the page) until it is truthy; its value. (Playwright's own
/// wait evaluates strings with `eval`, which the console's CSP forbids.)
async fn wait_for(b: &mut Browser, what: &str, js: &str, limit: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let v = b.eval(js).await;
        if !(v.is_null() || v == false || v == "" || v == 0) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waiting for {what}: `{js}` still {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn call(method: reqwest::Method, url: &str, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, url).json(&body);
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let r = req.send().await.expect("HTTP answers");
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_console_pins_suppresses_and_confirms_in_a_browser() {
    let origin = TestOrigin::start("grocery_shots.mp4", 2.0, 6, true).await;
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog");
    common::copy_catalog(&grocery_catalog(), &catalog);
    let mut s = test_settings();
    s.channels = vec![ChannelSettings {
        id: "grocery".into(),
        url: origin.master_url(),
    }];
    s.catalog.dir = catalog.display().to_string();
    s.server.admin_key = KEY.into();
    let sidecar = Sidecar::start(s, CancellationToken::new())
        .await
        .expect("sidecar starts");
    let base = format!("http://{}", sidecar.addr);

    // The API refuses without the key, unknown channels, products and bad values.
    use reqwest::Method;
    let pins = format!("{base}/v1/channels/grocery/pins");
    let pin_body = json!({"product_id": PINNED});
    assert_eq!(
        call(Method::POST, &pins, None, pin_body.clone()).await.0,
        401
    );
    let (code, body) = call(
        Method::POST,
        &format!("{base}/v1/channels/nope/pins"),
        Some(KEY),
        pin_body.clone(),
    )
    .await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = call(
        Method::POST,
        &pins,
        Some(KEY),
        json!({"product_id": "No-Such"}),
    )
    .await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("No-Such"),
        "{body}"
    );
    let threshold = format!("{base}/v1/channels/grocery/threshold");
    let (code, body) = call(
        Method::PUT,
        &threshold,
        Some(KEY),
        json!({"min_similarity": 1.5}),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    let sup = format!("{base}/v1/channels/grocery/suppressions");
    let (code, _) = call(
        Method::POST,
        &sup,
        Some(KEY),
        json!({"product_id": "x", "seconds": 0}),
    )
    .await;
    assert_eq!(code, 400);
    let (code, _) = call(
        Method::DELETE,
        &format!("{sup}/never-suppressed"),
        Some(KEY),
        Value::Null,
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(
        reqwest::get(format!("{base}/v1/console/audit"))
            .await
            .unwrap()
            .status(),
        401
    );

    let Some(mut b) =
        Browser::launch("operator_console_pins_suppresses_and_confirms_in_a_browser").await
    else {
        return;
    };
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/channels/grocery/cues", sidecar.addr))
            .await
            .expect("feed connects");
    b.goto(&format!("{base}/dashboard/console")).await;
    b.eval(&format!(
        "document.querySelector('#key').value = '{KEY}';
         document.querySelector('#signin').requestSubmit(); true"
    ))
    .await;
    wait_for(
        &mut b,
        "the channel's card",
        "window.consoleState.ready && document.querySelector('[data-channel=grocery]')",
        Duration::from_secs(10),
    )
    .await;

    // Pin from the console: the operator cue reaches the feed and the playlist.
    let card = "document.querySelector('[data-channel=grocery]')";
    b.eval(&format!(
        "{card}.querySelector('[data-role=product]').value = '{PINNED}';
         {card}.querySelector('[data-role=pin-form]').requestSubmit(); true"
    ))
    .await;
    let pinned = loop {
        let e = next_event(&mut ws, Duration::from_secs(10))
            .await
            .expect("the pin reaches the feed");
        if e["type"] == "start" && e["cue"]["product_id"] == PINNED {
            break e;
        }
    };
    assert_eq!(pinned["cue"]["source"], "operator", "{pinned}");
    assert_eq!(pinned["cue"]["product"]["id"], PINNED, "{pinned}");
    let master = reqwest::get(format!("{base}/hls/grocery/master.m3u8"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let variant = master
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .expect("a variant")
        .to_string();
    let media = format!("{base}/hls/grocery/{variant}");
    let mut in_playlist = false;
    for _ in 0..40 {
        let text = reqwest::get(&media).await.unwrap().text().await.unwrap();
        if text.contains(&format!("X-PRODUCT-ID=\"{PINNED}\"")) {
            in_playlist = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(in_playlist, "the pin's DATERANGE is in {media}");

    // Suppress a product of the footage until lifted: no cue of it for more than a loop
    // of the footage (12 s), while the other products still get theirs. What the feed
    // delivered before is read first; a start published before the suppression may still
    // be on its way, so a start of the product must begin before it.
    while next_event(&mut ws, Duration::from_millis(100))
        .await
        .is_some()
    {}
    let suppressed_at = chrono::Utc::now();
    b.eval(&format!(
        "{card}.querySelector('[data-role=product]').value = '{SUPPRESSED}';
         {card}.querySelector('[data-action=suppress]').click(); true"
    ))
    .await;
    wait_for(
        &mut b,
        "the suppression shown",
        &format!(
            "{card}.querySelector('[data-role=suppressed]').textContent.includes('{SUPPRESSED}')"
        ),
        Duration::from_secs(5),
    )
    .await;
    let until = tokio::time::Instant::now() + Duration::from_secs(14);
    let mut others = HashSet::new();
    while let Some(e) = next_event(&mut ws, until - tokio::time::Instant::now()).await {
        let p = e["cue"]["product_id"].as_str().unwrap_or("").to_string();
        if p == SUPPRESSED {
            // In flight before the suppression, or the open cue's end: never a new cue.
            if e["type"] == "start" {
                let start = e["cue"]["start"].as_str().unwrap_or("");
                let start = chrono::DateTime::parse_from_rfc3339(start).expect("a start time");
                assert!(
                    start < suppressed_at,
                    "a suppressed product started a cue after {suppressed_at}: {e}"
                );
            }
        } else if e["type"] == "start" {
            others.insert(p);
        }
        if tokio::time::Instant::now() >= until {
            break;
        }
    }
    assert!(others.len() >= 3, "other products go on: {others:?}");

    // Confirm a cue from its crop.
    wait_for(
        &mut b,
        "a cue with its crop and buttons",
        "[...document.querySelectorAll('.cue[data-source=auto]')].some(li => \
           li.querySelector('img') && li.querySelector('img').naturalWidth > 0 \
           && li.querySelector('button[data-action=confirm]'))",
        Duration::from_secs(20),
    )
    .await;
    b.eval(
        "const li = [...document.querySelectorAll('.cue[data-source=auto]')].find(li => \
           li.querySelector('img') && li.querySelector('button[data-action=confirm]'));
         li.querySelector('button[data-action=confirm]').click(); true",
    )
    .await;
    wait_for(
        &mut b,
        "the verdict in the audit log",
        "document.querySelector('#audit tbody').textContent.includes('feedback')",
        Duration::from_secs(10),
    )
    .await;
    assert!(catalog.join("feedback/labels.jsonl").is_file());

    // Unpin from its chip: the operator cue ends on the feed.
    b.eval(&format!(
        "{card}.querySelector('[data-role=pins] button').click(); true"
    ))
    .await;
    loop {
        let e = next_event(&mut ws, Duration::from_secs(10))
            .await
            .expect("the unpin reaches the feed");
        if e["type"] == "end" && e["cue"]["id"] == pinned["cue"]["id"] {
            assert_eq!(e["cue"]["source"], "operator");
            break;
        }
    }
    // A similarity threshold no match reaches, set live from the console: no cue starts
    // for a whole loop of the footage; reset, they come back.
    b.eval(&format!(
        "{card}.querySelector('[data-role=threshold]').value = '0.99';
         {card}.querySelector('[data-role=threshold-form]').requestSubmit(); true"
    ))
    .await;
    wait_for(
        &mut b,
        "the threshold shown",
        &format!("{card}.querySelector('[data-role=threshold-now]').textContent.includes('0.99')"),
        Duration::from_secs(5),
    )
    .await;
    // Cues started before the change may still end; none may start. Events decided before
    // the change can still be on their way (the pipeline's queue, the bus's batches, the
    // socket): read and ignore 3 s of them first. (A sleep left them buffered in the
    // socket, and under the load of the full test run one was then read as a late start.)
    let grace_until = tokio::time::Instant::now() + Duration::from_secs(3);
    while next_event(&mut ws, grace_until - tokio::time::Instant::now())
        .await
        .is_some()
    {}
    let quiet_until = tokio::time::Instant::now() + Duration::from_secs(13);
    while let Some(e) = next_event(&mut ws, quiet_until - tokio::time::Instant::now()).await {
        assert_ne!(
            e["type"], "start",
            "a cue started above the operator's threshold: {e}"
        );
        if tokio::time::Instant::now() >= quiet_until {
            break;
        }
    }
    b.eval(&format!(
        "{card}.querySelector('[data-action=threshold-reset]').click(); true"
    ))
    .await;
    loop {
        let e = next_event(&mut ws, Duration::from_secs(15))
            .await
            .expect("cues come back with the configured threshold");
        if e["type"] == "start" {
            break;
        }
    }

    // Every action is in the audit log, with the key's id and never the key.
    let audit = wait_for(
        &mut b,
            "pin, suppress, feedback, unpin audited",
            "(() => { const t = document.querySelector('#audit tbody').textContent; \
               return ['pin', 'suppress', 'feedback', 'unpin', 'threshold'].every(a => t.includes(a)) && t; })()",
            Duration::from_secs(10),
        )
        .await;
    let audit = audit.as_str().unwrap_or_default();
    assert!(audit.contains("key-") && !audit.contains(KEY), "{audit}");
    let failures = b.failures().await;
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let shot = common::root().join("target/test-data/console.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    b.screenshot(&shot).await;
    if std::env::var_os("SHOPCUE_UPDATE_SCREENSHOT").is_some() {
        std::fs::copy(&shot, common::root().join("docs/console.png")).unwrap();
    }
    b.close().await;
    tokio::time::timeout(Duration::from_secs(30), sidecar.shutdown())
        .await
        .expect("shutdown finishes")
        .expect("clean shutdown");
}
