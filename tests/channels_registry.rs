//! The channel registry changed at runtime, all real parts on loopback: the test origin
//! looping grocery_shots.mp4 → the sidecar with the grocery catalog. Channels are added,
//! restarted and removed through `/v1/channels` and through the `shopcue channels`
//! binary exactly as its help prints it; an added channel is analysed, served by
//! `/hls/{id}/` and the feed; a removed one ends its open cues on the feed, closes its
//! clients (4404) and answers 404; the registry survives a restart (a JSON file, and a
//! real redis-server's hash).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{RedisServer, TestOrigin, grocery_catalog, test_settings};
use futures::StreamExt;
use serde_json::{Value, json};
use shopcue::config::{ChannelSettings, Settings};
use shopcue::sidecar::Sidecar;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const KEY: &str = "registry-test-admin-key-0123456789";

async fn api(method: &str, url: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut r = client.request(method.parse().unwrap(), url);
    if let Some(k) = key {
        r = r.header("x-api-key", k);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("HTTP answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get_status(url: &str) -> u16 {
    reqwest::get(url)
        .await
        .expect("HTTP answers")
        .status()
        .as_u16()
}

/// `shopcue channels ARGS --server http://ADDR` with the key in SHOPCUE_API_KEY: its
/// stdout, after checking it succeeded.
async fn cli(addr: std::net::SocketAddr, args: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_shopcue"));
    cmd.arg("channels")
        .args(args)
        .args(["--server", &format!("http://{addr}")])
        .env("SHOPCUE_API_KEY", KEY)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the CLI finishes")
        .expect("the CLI runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "shopcue channels {args:?}: {stderr}");
    stdout
}

fn settings(state: &std::path::Path) -> Settings {
    let mut s = test_settings();
    s.catalog.dir = grocery_catalog().display().to_string();
    s.server.admin_key = KEY.into();
    s.registry.store = state.display().to_string();
    s
}

async fn feed(addr: std::net::SocketAddr, channel: &str) -> Result<Ws, u16> {
    let url = format!("ws://{addr}/v1/channels/{channel}/cues");
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("feed connect: {e}"),
    }
}

/// A feed's cue starts and ends as they come; `open` holds the cues started, not ended.
struct Watcher {
    ws: Ws,
    open: HashSet<String>,
    starts: usize,
}

enum Next {
    Event,
    Closed(Option<u16>),
    Timeout,
}

impl Watcher {
    async fn next(&mut self, timeout: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Next::Timeout,
                Ok(None) | Ok(Some(Err(_))) => return Next::Closed(None),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    self.note(&v);
                    return Next::Event;
                }
                Message::Close(f) => return Next::Closed(f.map(|f| u16::from(f.code))),
                _ => continue,
            }
        }
    }

    fn note(&mut self, v: &Value) {
        let id = v["cue"]["id"].as_str().unwrap_or_default().to_string();
        match v["type"].as_str() {
            Some("start") => {
                self.starts += 1;
                self.open.insert(id);
            }
            Some("end") => {
                self.open.remove(&id);
            }
            Some("snapshot") => {
                for c in v["cues"].as_array().into_iter().flatten() {
                    self.open
                        .insert(c["id"].as_str().unwrap_or_default().to_string());
                }
            }
            _ => {}
        }
    }

    /// Read until a cue is open (a start seen and not yet ended).
    async fn until_open_cue(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.open.is_empty() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Next::Event => {}
                Next::Closed(c) => panic!("feed closed ({c:?}) before any cue"),
                Next::Timeout => panic!("no cue within {limit:?}"),
            }
        }
    }

    /// Read until the server closes; its close code.
    async fn until_closed(&mut self, limit: Duration) -> Option<u16> {
        loop {
            match self.next(limit).await {
                Next::Event => {}
                Next::Closed(code) => return code,
                Next::Timeout => panic!("the feed was not closed within {limit:?}"),
            }
        }
    }
}

/// Poll `/v1/status` until channel `id` reports analysed samples.
async fn until_analysed(addr: std::net::SocketAddr, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, st) = api("GET", &format!("http://{addr}/v1/status"), None, None).await;
        let ch = st["channels"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["id"] == id).cloned());
        if ch
            .as_ref()
            .and_then(|c| c["pipeline"]["analysed"].as_u64())
            .is_some_and(|n| n > 0)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "channel {id} not analysed: {st}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn ids(addr: std::net::SocketAddr) -> Vec<String> {
    let (code, list) = api(
        "GET",
        &format!("http://{addr}/v1/channels"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(code, 200, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_are_added_restarted_and_removed_at_runtime_and_survive_a_restart() {
    let origin = TestOrigin::start("grocery_shots.mp4", 2.0, 6, true).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state/channels.json");
    let sidecar = Sidecar::start(settings(&state), CancellationToken::new())
        .await
        .expect("sidecar starts");
    let addr = sidecar.addr;
    let base = format!("http://{addr}/v1/channels");
    assert!(ids(addr).await.is_empty());

    // Refused: no key, a bad URL, a bad id; nothing changes.
    let shop = json!({ "url": format!("{}?token=secret", origin.master_url()) });
    let (code, _) = api("GET", &base, None, None).await;
    assert_eq!(code, 401);
    let (code, _) = api("PUT", &format!("{base}/shop"), None, Some(shop.clone())).await;
    assert_eq!(code, 401);
    let (code, _) = api(
        "PUT",
        &format!("{base}/shop"),
        Some("wrong-key-wrong-key"),
        Some(shop.clone()),
    )
    .await;
    assert_eq!(code, 401);
    let bad = json!({ "url": "ftp://origin.example/live.m3u8" });
    let (code, e) = api("PUT", &format!("{base}/shop"), Some(KEY), Some(bad)).await;
    assert_eq!(code, 400, "{e}");
    let msg = e["error"].as_str().unwrap();
    assert!(msg.contains("channel url") && msg.contains("ftp"), "{msg}");
    let (code, e) = api(
        "PUT",
        &format!("{base}/bad.id"),
        Some(KEY),
        Some(shop.clone()),
    )
    .await;
    assert_eq!(code, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("channel id"), "{e}");
    let (code, _) = api(
        "PUT",
        &format!("{base}/shop"),
        Some(KEY),
        Some(json!({"url": "x".repeat(64 * 1024)})),
    )
    .await;
    assert_eq!(code, 413);
    assert!(ids(addr).await.is_empty());
    assert_eq!(feed(addr, "shop").await.err(), Some(404));
    assert_eq!(
        get_status(&format!("http://{addr}/hls/shop/master.m3u8")).await,
        404
    );

    // Added through the API: analysed, its playlist and feed served, its URL redacted.
    let (code, v) = api(
        "PUT",
        &format!("{base}/shop"),
        Some(KEY),
        Some(shop.clone()),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["url"], format!("{}?…", origin.master_url()), "{v}");
    let mut watcher = Watcher {
        ws: feed(addr, "shop")
            .await
            .expect("the feed serves the added channel"),
        open: HashSet::new(),
        starts: 0,
    };
    until_analysed(addr, "shop").await;
    watcher.until_open_cue(Duration::from_secs(60)).await;
    assert_eq!(
        get_status(&format!("http://{addr}/hls/shop/master.m3u8")).await,
        200
    );
    let (_, st) = api("GET", &format!("http://{addr}/v1/status"), None, None).await;
    assert!(!st.to_string().contains("secret"), "{st}");

    // The same URL again: nothing restarts. A new URL, through the CLI: restarted.
    let (code, _) = api(
        "PUT",
        &format!("{base}/shop"),
        Some(KEY),
        Some(shop.clone()),
    )
    .await;
    assert_eq!(code, 200);
    let out = cli(addr, &["add", "shop", &origin.media_url()]).await;
    assert!(
        out.starts_with("shop\t") && out.contains("/live/index.m3u8"),
        "{out}"
    );
    let (code, v) = api("GET", &format!("{base}/shop"), Some(KEY), None).await;
    assert_eq!(
        (code, v["url"].as_str()),
        (200, Some(origin.media_url().as_str())),
        "{v}"
    );
    let listed = cli(addr, &["list"]).await;
    assert!(
        listed.contains("shop\t") && listed.contains("index.m3u8"),
        "{listed}"
    );
    until_analysed(addr, "shop").await;

    // A restart on the same state file: the stored channel (its updated URL) runs again,
    // and a config channel is seeded beside it.
    sidecar.shutdown().await.expect("clean shutdown");
    let mut s = settings(&state);
    s.channels = vec![ChannelSettings {
        id: "seeded".into(),
        url: "http://127.0.0.1:9/none/master.m3u8".into(),
    }];
    let sidecar = Sidecar::start(s.clone(), CancellationToken::new())
        .await
        .expect("sidecar restarts");
    let addr = sidecar.addr;
    let base = format!("http://{addr}/v1/channels");
    assert_eq!(ids(addr).await, vec!["seeded", "shop"]);
    let (_, v) = api("GET", &format!("{base}/shop"), Some(KEY), None).await;
    assert_eq!(v["url"], origin.media_url(), "{v}");

    // Removed while a cue is open: the feed gets its end, then a 4404 close; the channel
    // then answers 404 everywhere.
    let mut watcher = Watcher {
        ws: feed(addr, "shop").await.expect("feed"),
        open: HashSet::new(),
        starts: 0,
    };
    watcher.until_open_cue(Duration::from_secs(90)).await;
    let open_before: Vec<String> = watcher.open.iter().cloned().collect();
    let (code, _) = api("DELETE", &format!("{base}/shop"), Some(KEY), None).await;
    assert_eq!(code, 204);
    let close = watcher.until_closed(Duration::from_secs(20)).await;
    assert_eq!(close, Some(4404), "close code");
    assert!(
        watcher.open.is_empty(),
        "cues {:?} (open before: {open_before:?}) got no end",
        watcher.open
    );
    assert_eq!(
        get_status(&format!("http://{addr}/hls/shop/master.m3u8")).await,
        404
    );
    assert_eq!(feed(addr, "shop").await.err(), Some(404));
    let (code, _) = api("GET", &format!("{base}/shop"), Some(KEY), None).await;
    assert_eq!(code, 404);
    let (code, _) = api("DELETE", &format!("{base}/shop"), Some(KEY), None).await;
    assert_eq!(code, 404);
    let (_, st) = api("GET", &format!("http://{addr}/v1/status"), None, None).await;
    assert!(
        st["channels"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] != "shop"),
        "{st}"
    );
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let stopped = r#"shopcue_channel_state{channel="shop",state="stopped"} 1"#;
    assert!(metrics.contains(stopped), "{metrics}");
    let out = cli(addr, &["rm", "seeded"]).await;
    assert_eq!(out.trim(), "removed seeded");
    sidecar.shutdown().await.expect("clean shutdown");

    // Removed channels stay removed, the seeded config channel included.
    let sidecar = Sidecar::start(s, CancellationToken::new())
        .await
        .expect("sidecar restarts");
    assert!(ids(sidecar.addr).await.is_empty());
    let stored: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(stored["channels"], json!({}), "{stored}");
    sidecar.shutdown().await.expect("clean shutdown");
}

/// With `registry.store = "redis"` the registry is the hash `<prefix>:channels` of a real
/// redis-server, and a restarted sidecar runs what it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_lives_in_redis_when_asked() {
    let redis = RedisServer::start();
    let mut s = test_settings();
    s.server.admin_key = KEY.into();
    s.redis.url = redis.url();
    s.registry.store = "redis".into();
    let url = "http://127.0.0.1:9/live/master.m3u8";
    let sidecar = Sidecar::start(s.clone(), CancellationToken::new())
        .await
        .expect("sidecar starts");
    let base = format!("http://{}/v1/channels", sidecar.addr);
    let (code, v) = api(
        "PUT",
        &format!("{base}/news"),
        Some(KEY),
        Some(json!({ "url": url })),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stored: Option<String> = redis::cmd("HGET")
        .arg("shopcue:channels")
        .arg("news")
        .query_async(&mut conn)
        .await
        .unwrap();
    let stored: Value = serde_json::from_str(&stored.expect("stored in redis")).unwrap();
    assert_eq!(stored, json!({ "id": "news", "url": url }));
    sidecar.shutdown().await.expect("clean shutdown");

    let sidecar = Sidecar::start(s, CancellationToken::new())
        .await
        .expect("sidecar restarts");
    assert_eq!(ids(sidecar.addr).await, vec!["news"]);
    let base = format!("http://{}/v1/channels", sidecar.addr);
    let (code, _) = api("DELETE", &format!("{base}/news"), Some(KEY), None).await;
    assert_eq!(code, 204);
    let left: i64 = redis::cmd("HLEN")
        .arg("shopcue:channels")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0);
    sidecar.shutdown().await.expect("clean shutdown");
}

/// One catalog for the fleet (issue 13 item 4): two sidecars share a catalog folder; a
/// product deleted through one's admin API is gone from the other within 5 s, and a change
/// made on the second keeps the first's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_sharing_a_catalog_folder_follow_each_others_changes() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("catalog");
    common::copy_catalog(&grocery_catalog(), &shared);
    let start = |name: &str| {
        let mut s = settings(&dir.path().join(format!("{name}.json")));
        s.catalog.dir = shared.display().to_string();
        Sidecar::start(s, CancellationToken::new())
    };
    let a = start("a").await.expect("sidecar a");
    let b = start("b").await.expect("sidecar b");
    let http = reqwest::Client::new();
    let product = |addr: std::net::SocketAddr, id: &str| {
        http.get(format!("http://{addr}/v1/products/{id}")).send()
    };
    assert_eq!(product(b.addr, "Banana").await.unwrap().status(), 200);
    let took = delete_and_wait(a.addr, b.addr, "Banana").await;
    eprintln!("a's change live on b after {took:?}");
    // b's own change starts from the shared newest generation: Banana stays deleted.
    delete_and_wait(b.addr, a.addr, "Lemon").await;
    for addr in [a.addr, b.addr] {
        assert_eq!(product(addr, "Banana").await.unwrap().status(), 404);
        assert_eq!(product(addr, "Lemon").await.unwrap().status(), 404);
        assert_eq!(product(addr, "Lime").await.unwrap().status(), 200);
    }
    a.shutdown().await.expect("clean shutdown");
    b.shutdown().await.expect("clean shutdown");
}

/// Delete product `id` through `on`'s admin API; how long until `other` answers 404 for it
/// (at most 5 s).
async fn delete_and_wait(
    on: std::net::SocketAddr,
    other: std::net::SocketAddr,
    id: &str,
) -> std::time::Duration {
    let http = reqwest::Client::new();
    let r = http
        .delete(format!("http://{on}/v1/catalog/products/{id}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let t0 = std::time::Instant::now();
    let url = format!("http://{other}/v1/products/{id}");
    while http.get(&url).send().await.unwrap().status() != 404 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{other} still serves {id}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t0.elapsed()
}
