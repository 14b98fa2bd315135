//! The WebSocket feed on a real server on 127.0.0.1:0 with tokio-tungstenite clients:
//! active cues then live events, resuming with `since`, a slow client dropped while others
//! get everything, malformed client messages, the connection limit, tokens, shutdown, and
//! the same over a real redis-server with two feed servers.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{RedisServer, end, start, update};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use shopcue::cue::CueEvent;
use shopcue::cuebus::memory::MemoryBus;
use shopcue::cuebus::redis::RedisBus;
use shopcue::cuebus::{BusSettings, CueBus, RedisSettings};
use shopcue::http::feed::{self, FeedSettings, FeedState};
use shopcue::http::token;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
const WAIT: Duration = Duration::from_secs(10);

async fn serve_on(
    listener: tokio::net::TcpListener,
    bus: Arc<dyn CueBus>,
    settings: FeedSettings,
) -> (SocketAddr, FeedState) {
    let addr = listener.local_addr().unwrap();
    let state = FeedState::new(bus, settings);
    tokio::spawn(feed::serve(listener, state.clone()));
    (addr, state)
}

async fn serve(bus: Arc<dyn CueBus>, settings: FeedSettings) -> (SocketAddr, FeedState) {
    serve_on(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        bus,
        settings,
    )
    .await
}

async fn connect(addr: SocketAddr, query: &str) -> Ws {
    let url = format!("ws://{addr}/v1/channels/news/cues{query}");
    tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects")
        .0
}

/// The next JSON message (pings and pongs skipped).
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("no error");
        match m {
            Message::Text(t) => {
                return serde_json::from_str(t.as_str()).expect("every message is JSON");
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Read until the server closes: the close code, if a close frame came.
async fn closed_with(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("server closes in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

fn offset_key(v: &Value) -> (u64, u64) {
    let s = v["offset"].as_str().expect("offset is a string");
    let (a, b) = s.split_once('-').expect("ms-seq");
    (a.parse().unwrap(), b.parse().unwrap())
}

#[tokio::test]
async fn connect_gets_active_cues_then_live_events() {
    let bus = Arc::new(MemoryBus::new(1000));
    bus.publish(start("news", 1));
    bus.publish(start("news", 2));
    let last = bus.publish_record(end("news", 2));
    bus.publish(start("sport", 9));
    let (addr, _state) = serve(bus.clone(), FeedSettings::default()).await;
    let mut ws = connect(addr, "").await;

    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["channel"], "news");
    assert_eq!(hello["resumed"], false);
    assert_eq!(hello["offset"], last.offset.to_string());
    assert!(hello["server_time"].as_str().unwrap().ends_with('Z'));
    let snap = next_json(&mut ws).await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["offset"], last.offset.to_string());
    let cues = snap["cues"].as_array().unwrap();
    assert_eq!(cues.len(), 1, "only the cue still open: {snap}");
    assert_eq!(cues[0]["product_id"], "sku-1");

    bus.publish(update("news", 1, 0.9));
    bus.publish(start("sport", 10)); // another channel: not on this feed
    bus.publish(start("news", 3));
    let e1 = next_json(&mut ws).await;
    let e2 = next_json(&mut ws).await;
    assert_eq!(
        (e1["type"].as_str(), e2["type"].as_str()),
        (Some("update"), Some("start"))
    );
    assert!(offset_key(&snap) < offset_key(&e1) && offset_key(&e1) < offset_key(&e2));
    let cue = &e2["cue"];
    for field in [
        "id",
        "channel",
        "product_id",
        "start",
        "end",
        "pts",
        "score",
        "shot",
        "boxes",
    ] {
        assert!(cue.get(field).is_some(), "cue has `{field}`: {cue}");
    }
    assert_eq!(cue["channel"], "news");
    assert_eq!(cue["start"], "2026-11-18T11:06:43.000Z");
    assert!(cue["end"].is_null());
    assert_eq!(e1["cue"]["score"], 0.9);
}

#[tokio::test]
async fn resume_with_since_loses_nothing_and_repeats_nothing() {
    let bus = Arc::new(MemoryBus::new(1000));
    let (addr, _state) = serve(bus.clone(), FeedSettings::default()).await;
    let mut ws = connect(addr, "").await;
    next_json(&mut ws).await;
    next_json(&mut ws).await;
    let sent: Vec<String> = (0..5)
        .map(|n| bus.publish_record(start("news", n)).offset.to_string())
        .collect();
    next_json(&mut ws).await;
    let second = next_json(&mut ws).await;
    assert_eq!(second["offset"], sent[1]);
    drop(ws);
    // While the client is away.
    let mut sent = sent;
    sent.extend((5..8).map(|n| bus.publish_record(start("news", n)).offset.to_string()));

    let mut ws = connect(addr, &format!("?since={}", sent[1])).await;
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["resumed"], true);
    assert_eq!(hello["offset"], sent[1]);
    let mut got = Vec::new();
    for _ in 2..8 {
        got.push(
            next_json(&mut ws).await["offset"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(
        got,
        sent[2..].to_vec(),
        "exactly the missed events, in order"
    );
    let live = bus.publish_record(end("news", 7)).offset.to_string();
    let next = next_json(&mut ws).await;
    assert_eq!(next["offset"], live, "then live events, none repeated");
    assert_eq!(next["type"], "end");
}

#[tokio::test]
async fn resume_from_an_offset_no_longer_kept_starts_from_a_snapshot() {
    let bus = Arc::new(MemoryBus::new(3));
    let first = bus.publish_record(start("news", 1));
    for n in 2..6 {
        bus.publish(start("news", n));
    }
    let (addr, _state) = serve(bus.clone(), FeedSettings::default()).await;
    let mut ws = connect(addr, &format!("?since={}", first.offset)).await;
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["resumed"], false);
    assert!(
        hello["resume_error"]
            .as_str()
            .unwrap()
            .contains("not in the retained history")
    );
    let snap = next_json(&mut ws).await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["cues"].as_array().unwrap().len(), 5);
    // A malformed since is refused before the upgrade.
    let err =
        tokio_tungstenite::connect_async(format!("ws://{addr}/v1/channels/news/cues?since=abc"))
            .await
            .unwrap_err();
    assert!(matches!(err, tokio_tungstenite::tungstenite::Error::Http(r) if r.status() == 400));
}

#[tokio::test]
async fn slow_client_is_closed_while_others_receive_every_event() {
    let bus = Arc::new(MemoryBus::new(100_000));
    // Small socket buffers (inherited by accepted sockets) so a client that stops reading
    // shows up after a few events rather than after megabytes.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(16 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1024).unwrap();
    let settings = FeedSettings {
        client_queue: 64,
        ..FeedSettings::default()
    };
    let (addr, state) = serve_on(listener, bus.clone(), settings).await;

    let mut fast = Vec::new();
    for _ in 0..3 {
        let mut ws = connect(addr, "").await;
        next_json(&mut ws).await;
        next_json(&mut ws).await;
        fast.push(ws);
    }
    let slow_sock = tokio::net::TcpSocket::new_v4().unwrap();
    slow_sock.set_recv_buffer_size(4096).unwrap();
    let stream = slow_sock.connect(addr).await.unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(
        format!("ws://{addr}/v1/channels/news/cues"),
        MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    next_json(&mut slow).await;
    next_json(&mut slow).await;

    // The fast clients read everything, each in its own task, reporting progress.
    let progress: Vec<Arc<AtomicUsize>> = (0..fast.len())
        .map(|_| Arc::new(AtomicUsize::new(0)))
        .collect();
    let readers: Vec<_> = fast
        .into_iter()
        .zip(progress.clone())
        .map(|(mut ws, seen)| {
            tokio::spawn(async move {
                let mut offsets = Vec::new();
                loop {
                    let v = next_json(&mut ws).await;
                    if v["type"] == "end" {
                        return offsets;
                    }
                    offsets.push(v["offset"].as_str().unwrap().to_string());
                    seen.store(offsets.len(), Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Publish big events, never more than 32 ahead of the slowest FAST reader, until the
    // one that stopped reading has been closed (bounded).
    let mut big = common::cue("news", 1);
    big.product = Some(serde_json::json!({ "description": "x".repeat(8 * 1024) }));
    let mut published = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while state.stats().slow_closed == 0 || published.len() < 300 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slow client not closed after {} events",
            published.len()
        );
        let slowest = progress
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0);
        if published.len() >= slowest + 32 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        published.push(
            bus.publish_record(CueEvent::Update(big.clone()))
                .offset
                .to_string(),
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(
        state.stats().slow_closed,
        1,
        "the reader that stopped was closed as slow"
    );
    bus.publish(end("news", 1));
    for r in readers {
        let got = tokio::time::timeout(WAIT * 3, r)
            .await
            .expect("fast readers finish")
            .unwrap();
        assert_eq!(got, published, "a fast client got every event, in order");
    }
    // The slow one, reading at last, finds fewer events and the end of the connection.
    let mut slow_events = 0;
    let code = loop {
        match tokio::time::timeout(WAIT, slow.next())
            .await
            .expect("slow client sees the end")
        {
            Some(Ok(Message::Text(_))) => slow_events += 1,
            Some(Ok(Message::Close(f))) => break f.map(|f| f.code),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert!(
        slow_events < published.len(),
        "slow client got {slow_events} of {}",
        published.len()
    );
    if let Some(code) = code {
        assert_eq!(code, CloseCode::Policy);
    }
}

#[tokio::test]
async fn malformed_client_messages_do_not_hurt() {
    let bus = Arc::new(MemoryBus::new(1000));
    let (addr, state) = serve(bus.clone(), FeedSettings::default()).await;
    let mut bad = connect(addr, "").await;
    let mut good = connect(addr, "").await;
    for ws in [&mut bad, &mut good] {
        next_json(ws).await;
        next_json(ws).await;
    }
    for m in [
        Message::text("not json"),
        Message::text("{}"),
        Message::text(r#"{"type":"subscribe","channel":"x"}"#),
        Message::text("[1,2,3]"),
        Message::binary(vec![0u8, 159, 146, 150]),
    ] {
        bad.send(m).await.unwrap();
        let reply = next_json(&mut bad).await;
        assert_eq!(reply["type"], "error", "{reply}");
    }
    bad.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    assert_eq!(next_json(&mut bad).await["type"], "pong");
    assert_eq!(state.stats().bad_messages, 5);

    bus.publish(start("news", 1));
    assert_eq!(next_json(&mut bad).await["type"], "start");
    assert_eq!(next_json(&mut good).await["type"], "start");

    // Over feed.max_client_message: that connection ends (1009), the other goes on.
    let _ = bad.send(Message::text("y".repeat(64 * 1024))).await;
    let code = closed_with(&mut bad).await;
    assert!(code.is_none() || code == Some(CloseCode::Size), "{code:?}");
    bus.publish(end("news", 1));
    assert_eq!(next_json(&mut good).await["type"], "end");
}

#[tokio::test]
async fn connection_limit_is_answered_503_before_the_upgrade() {
    let bus = Arc::new(MemoryBus::new(10));
    let (addr, state) = serve(
        bus,
        FeedSettings {
            max_connections: 2,
            ..FeedSettings::default()
        },
    )
    .await;
    let mut a = connect(addr, "").await;
    let _b = connect(addr, "").await;
    next_json(&mut a).await;
    let err = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/channels/news/cues"))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 503),
        other => panic!("expected 503, got {other}"),
    }
    assert_eq!(state.stats().rejected_full, 1);
    a.close(None).await.unwrap();
    drop(a);
    let deadline = tokio::time::Instant::now() + WAIT;
    while state.stats().connected > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connection count drops"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c = connect(addr, "").await;
    assert_eq!(next_json(&mut c).await["type"], "hello");
}

#[tokio::test]
async fn tokens_are_required_checked_and_expire() {
    let secret = "0123456789abcdef-test-secret";
    let bus = Arc::new(MemoryBus::new(10));
    let (addr, state) = serve(
        bus,
        FeedSettings {
            token_secret: secret.into(),
            ..FeedSettings::default()
        },
    )
    .await;
    let now = chrono::Utc::now().timestamp();
    let status = |q: String| async move {
        match tokio_tungstenite::connect_async(format!("ws://{addr}/v1/channels/news/cues{q}"))
            .await
        {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                let body =
                    String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).to_string();
                (r.status().as_u16(), body)
            }
            Ok(_) => (101, String::new()),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(status(String::new()).await.0, 401);
    let expired = status(format!("?token={}", token::sign(secret, "news", now - 10))).await;
    assert_eq!(expired.0, 401);
    assert!(expired.1.contains("expired"), "{}", expired.1);
    assert_eq!(
        status(format!(
            "?token={}",
            token::sign("another-secret-0123", "news", now + 60)
        ))
        .await
        .0,
        401
    );
    assert_eq!(
        status(format!("?token={}", token::sign(secret, "sport", now + 60)))
            .await
            .0,
        403
    );
    assert_eq!(status("?token=garbage".into()).await.0, 401);
    assert_eq!(state.stats().rejected_auth, 5);

    let mut ws = connect(
        addr,
        &format!("?token={}", token::sign(secret, "*", now + 60)),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    // A token that runs out while connected ends the connection.
    let mut short = connect(
        addr,
        &format!("?token={}", token::sign(secret, "news", now + 2)),
    )
    .await;
    assert_eq!(next_json(&mut short).await["type"], "hello");
    assert_eq!(closed_with(&mut short).await, Some(CloseCode::Policy));
}

#[tokio::test]
async fn shutdown_closes_clients_with_going_away() {
    let bus = Arc::new(MemoryBus::new(10));
    let (addr, state) = serve(bus, FeedSettings::default()).await;
    let mut ws = connect(addr, "").await;
    next_json(&mut ws).await;
    state.shutdown();
    assert_eq!(closed_with(&mut ws).await, Some(CloseCode::Away));
}

#[tokio::test]
async fn two_feed_servers_over_one_redis_share_cues_and_offsets() {
    let redis = RedisServer::start();
    let settings = RedisSettings {
        url: redis.url(),
        block_ms: 500,
        ..RedisSettings::default()
    };
    let bus_settings = BusSettings { history: 1000 };
    let publisher = RedisBus::connect(&bus_settings, &settings).unwrap();
    let (addr1, _s1) = serve(
        RedisBus::connect(&bus_settings, &settings).unwrap(),
        FeedSettings::default(),
    )
    .await;
    let (addr2, _s2) = serve(
        RedisBus::connect(&bus_settings, &settings).unwrap(),
        FeedSettings::default(),
    )
    .await;

    publisher.publish(start("news", 1));
    assert!(publisher.flush(WAIT).await);
    let mut c1 = connect(addr1, "").await;
    let mut c2 = connect(addr2, "").await;
    for ws in [&mut c1, &mut c2] {
        assert_eq!(next_json(ws).await["type"], "hello");
        let snap = next_json(ws).await;
        assert_eq!(snap["cues"].as_array().unwrap().len(), 1, "{snap}");
    }
    for n in 2..5 {
        publisher.publish(start("news", n));
    }
    assert!(publisher.flush(WAIT).await);
    let mut on1 = Vec::new();
    let mut on2 = Vec::new();
    for _ in 2..5 {
        on1.push(
            next_json(&mut c1).await["offset"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        on2.push(
            next_json(&mut c2).await["offset"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(
        on1, on2,
        "the stream ids are the same offsets on every server"
    );
    drop(c1);
    publisher.publish(end("news", 2));
    publisher.publish(end("news", 3));
    assert!(publisher.flush(WAIT).await);
    // Resume on the OTHER server from what server 1 delivered last.
    let mut c3 = connect(addr2, &format!("?since={}", on1[0])).await;
    assert_eq!(next_json(&mut c3).await["resumed"], true);
    let mut types = Vec::new();
    for _ in 0..4 {
        let v = next_json(&mut c3).await;
        types.push(format!(
            "{}:{}",
            v["type"].as_str().unwrap(),
            v["cue"]["product_id"].as_str().unwrap()
        ));
    }
    assert_eq!(
        types,
        ["start:sku-3", "start:sku-4", "end:sku-2", "end:sku-3"]
    );
}

#[tokio::test]
async fn keepalive_pings_and_closes_silent_clients() {
    let bus = Arc::new(MemoryBus::new(10));
    let settings = FeedSettings {
        ping_interval_ms: 150,
        ..FeedSettings::default()
    };
    let (addr, state) = serve(bus.clone(), settings).await;
    let mut silent = connect(addr, "").await;
    let mut alive = connect(addr, "").await;
    for ws in [&mut silent, &mut alive] {
        next_json(ws).await;
        next_json(ws).await;
    }
    // `alive` keeps reading (tokio-tungstenite answers pings by itself); `silent` does not.
    let reader = tokio::spawn(async move {
        let mut pings = 0;
        loop {
            match tokio::time::timeout(WAIT, alive.next())
                .await
                .expect("alive gets traffic")
            {
                Some(Ok(Message::Ping(_))) => pings += 1,
                Some(Ok(Message::Text(t))) if pings >= 3 => return (pings, t.to_string()),
                Some(Ok(_)) => {}
                other => panic!("alive client lost its connection: {other:?}"),
            }
        }
    });
    let deadline = tokio::time::Instant::now() + WAIT;
    while state.stats().keepalive_closed == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "silent client closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Keep publishing until the live client has seen a few pings and then an event.
    let (pings, text) = loop {
        bus.publish(start("news", 1));
        tokio::time::sleep(Duration::from_millis(100)).await;
        if reader.is_finished() {
            break reader.await.unwrap();
        }
    };
    assert!(pings >= 3 && text.contains("\"start\""), "{pings} {text}");
    assert_eq!(state.stats().keepalive_closed, 1);
    assert_eq!(closed_with(&mut silent).await, Some(CloseCode::Policy));
}
