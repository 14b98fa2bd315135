//! The WebSocket feed under abuse, on a real redis-server and real sockets on loopback
//! (issue 11): while thousands of connections ask for random channel ids, clients never
//! read, and others send oversized and malformed frames, a healthy client of another
//! channel still gets every event in order. Abusers are refused or closed and counted, the
//! Redis connections stay within `feed.max_channels` readers, and memory stays bounded.
//!
//! The healthy client's publish → receive latency (p50/p99), alone and under abuse, the
//! Redis connection counts and the RSS are printed (`--nocapture`), not asserted as timings:
//! docs/BENCHMARKS.md records a run.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::RedisServer;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use shopcue::cue::CueEvent;
use shopcue::cuebus::redis::RedisBus;
use shopcue::cuebus::{BusSettings, CueBus, RedisSettings};
use shopcue::http::feed::{self, FeedSettings, FeedState, FeedStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);
/// `feed.max_channels` in this test.
const MAX_CHANNELS: usize = 200;
/// Connections to random channel ids (the process needs two descriptors for each one
/// open, client and server side; `ulimit -n` is 20000 on the project's machine).
const RANDOM_CHANNEL_CONNECTIONS: usize = 5000;
/// Of which this many are in flight at once.
const RANDOM_IN_FLIGHT: usize = 256;
const NEVER_READERS: usize = 200;
const OVERSIZED: usize = 100;
const MALFORMED_FRAMES: usize = 100;
const BAD_JSON_CLIENTS: usize = 20;
/// Events the healthy client measures alone, and at least as many under abuse.
const EVENTS_PER_PHASE: u64 = 300;
const PUBLISH_EVERY: Duration = Duration::from_millis(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_leaves_other_clients_whole_and_resources_bounded() {
    let redis = RedisServer::start();
    let redis_settings = RedisSettings {
        url: redis.url(),
        block_ms: 500,
        ..RedisSettings::default()
    };
    let bus: Arc<dyn CueBus> =
        RedisBus::connect(&BusSettings::default(), &redis_settings).expect("redis bus");
    let settings = FeedSettings {
        max_channels: MAX_CHANNELS,
        ..FeedSettings::default()
    };
    let max_client_message = settings.max_client_message;
    let listener = {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        socket.listen(4096).unwrap()
    };
    let addr = listener.local_addr().unwrap();
    let state = FeedState::new(bus.clone(), settings);
    tokio::spawn(feed::serve(listener, state.clone()));
    let mut counter = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("a connection that counts the others");

    // The healthy client, on its own channel.
    let base = Instant::now();
    let received = Arc::new(std::sync::Mutex::new(Vec::<(u64, Duration)>::new()));
    let mut healthy = connect(addr, "live").await;
    for kind in ["hello", "snapshot"] {
        assert_eq!(next_json(&mut healthy).await["type"], kind);
    }
    let healthy_reader = tokio::spawn(read_events(healthy, base, received.clone()));
    let redis_before = redis_clients(&mut counter).await;
    let rss_before = rss_kib();

    // Alone.
    let mut seq = 0u64;
    for _ in 0..EVENTS_PER_PHASE {
        publish(bus.as_ref(), base, seq);
        seq += 1;
        tokio::time::sleep(PUBLISH_EVERY).await;
    }
    wait_for_events(&received, seq).await;
    let alone = percentiles(&received.lock().unwrap()[..]);

    // Under abuse: the abusers run while events keep flowing.
    let stop = CancellationToken::new();
    let peaks = Arc::new(Peaks::default());
    let sampler = tokio::spawn(sample(
        state.clone(),
        redis.url(),
        peaks.clone(),
        stop.clone(),
    ));
    let random = tokio::spawn(random_channels(addr, stop.clone()));
    let never_readers = tokio::spawn(never_readers(addr));
    let oversized = tokio::spawn(oversized(addr, max_client_message));
    let malformed = tokio::spawn(malformed(addr));
    let abuse_from = seq;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(random.is_finished()
        && never_readers.is_finished()
        && oversized.is_finished()
        && malformed.is_finished()
        && state.stats().slow_closed >= NEVER_READERS as u64
        && seq - abuse_from >= EVENTS_PER_PHASE)
    {
        assert!(
            Instant::now() < deadline,
            "abuse phase did not end: {:?}",
            state.stats()
        );
        publish(bus.as_ref(), base, seq);
        seq += 1;
        tokio::time::sleep(PUBLISH_EVERY).await;
    }
    let random = random.await.unwrap();
    let never_readers = never_readers.await.unwrap();
    let oversized = oversized.await.unwrap();
    let malformed = malformed.await.unwrap();
    let during = state.stats();
    wait_for_events(&received, seq).await;
    let under_abuse = percentiles(&received.lock().unwrap()[abuse_from as usize..]);

    // Abusers gone: connections, channels and Redis readers go back to where they were.
    stop.cancel();
    let never_readers = {
        let n = never_readers.len();
        drop(never_readers);
        n
    };
    sampler.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let redis_after = loop {
        let (stats, clients) = (state.stats(), redis_clients(&mut counter).await);
        if stats.connected == 1 && stats.channels == 1 && clients <= redis_before {
            break clients;
        }
        assert!(
            Instant::now() < deadline,
            "not back to one client, one channel and {redis_before} redis connections: \
             {stats:?}, {clients} redis connections"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rss_after = rss_kib();

    let redis_peak = peaks.redis_clients.load(Ordering::Relaxed);
    let rss_peak = peaks.rss_kib.load(Ordering::Relaxed).max(rss_after);
    println!(
        "healthy client, publish -> receive over redis: alone p50 {:.2} ms p99 {:.2} ms \
         ({} events); under abuse p50 {:.2} ms p99 {:.2} ms ({} events)",
        ms(alone.0),
        ms(alone.1),
        EVENTS_PER_PHASE,
        ms(under_abuse.0),
        ms(under_abuse.1),
        seq - abuse_from
    );
    println!(
        "random channel ids: {} connections, {} held open (peak {} at once), {} refused 503, \
         {} closed 1013 after the upgrade; peak {} channels served (max_channels {MAX_CHANNELS})",
        RANDOM_CHANNEL_CONNECTIONS,
        random.held,
        random.peak_open,
        random.refused_http,
        random.refused_late,
        peaks.channels.load(Ordering::Relaxed)
    );
    println!(
        "redis connections: before {redis_before}, peak {redis_peak}, after {redis_after}; \
         feed connections peak {}",
        peaks.connected.load(Ordering::Relaxed)
    );
    println!(
        "RSS (whole test process, server and every client): before {} MiB, peak {} MiB, \
         after {} MiB",
        rss_before / 1024,
        rss_peak / 1024,
        rss_after / 1024
    );
    println!("feed stats after the abuse phase: {during:?}");
    println!("{oversized:?} {malformed:?}");

    // The healthy client got every event of both phases, in order, once.
    let got: Vec<u64> = received.lock().unwrap().iter().map(|(s, _)| *s).collect();
    assert_eq!(got, (0..seq).collect::<Vec<_>>(), "every event, in order");
    healthy_reader.abort();

    // Random channel ids: at most max_channels served; the rest refused and counted.
    assert_eq!(random.other_errors, 0, "{random:?}");
    assert_eq!(
        random.held + random.refused_http + random.refused_late,
        RANDOM_CHANNEL_CONNECTIONS,
        "{random:?}"
    );
    // The healthy channel holds one slot; the refusals all come before the upgrade.
    assert_eq!(random.held, MAX_CHANNELS - 1, "{random:?}");
    assert_eq!(random.refused_late, 0, "{random:?}");
    assert_eq!(
        during.rejected_channels as usize,
        random.refused_http + random.refused_late
    );
    assert!(peaks.channels.load(Ordering::Relaxed) <= MAX_CHANNELS as u64);
    assert_eq!(during.rejected_full, 0);
    // One reader connection per served channel, at most.
    assert!(
        redis_peak <= redis_before + MAX_CHANNELS as u64,
        "redis connections: {redis_before} before, {redis_peak} at the peak"
    );

    // Clients that never read were closed as slow, every one; nobody else was.
    assert_eq!(never_readers, NEVER_READERS);
    assert_eq!(during.slow_closed, NEVER_READERS as u64);
    // Oversized messages and frames: closed with 1009 and counted.
    assert_eq!(oversized.closed, OVERSIZED, "{oversized:?}");
    // (The close frame may be lost to a reset: the server closes with the client's
    // unread bytes in its buffer.)
    assert!(oversized.with_1009 > 0, "{oversized:?}");
    assert_eq!(during.oversized_closed, OVERSIZED as u64);
    // Malformed frames: closed (1002, or 1007 for text that is not UTF-8) and counted.
    assert_eq!(malformed.frames_closed, MALFORMED_FRAMES, "{malformed:?}");
    assert_eq!(
        during.protocol_closed, MALFORMED_FRAMES as u64,
        "{malformed:?}"
    );
    // Bad JSON: answered with errors, then closed (1008) after 100.
    assert_eq!(
        malformed.json_closed_1008, BAD_JSON_CLIENTS,
        "{malformed:?}"
    );
    assert_eq!(during.bad_messages, (BAD_JSON_CLIENTS * 101) as u64);

    // Memory: generous, as the test process holds both ends of every connection.
    assert!(
        rss_peak < rss_before + 1024 * 1024,
        "RSS grew by more than 1 GiB: {rss_before} KiB -> {rss_peak} KiB"
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Update events of one cue on `live`: `shot` is the sequence number, `pts` the publish
/// time (seconds since `base`), and a 2 KiB product description so that clients that never
/// read fill their socket buffers quickly.
fn publish(bus: &dyn CueBus, base: Instant, seq: u64) {
    let mut cue = common::cue("live", 1);
    cue.shot = seq;
    cue.pts = base.elapsed().as_secs_f64();
    cue.product = Some(serde_json::json!({ "description": "x".repeat(2048) }));
    bus.publish(CueEvent::Update(cue));
}

async fn read_events(
    mut ws: Ws,
    base: Instant,
    received: Arc<std::sync::Mutex<Vec<(u64, Duration)>>>,
) {
    loop {
        let v = next_json(&mut ws).await;
        assert_eq!(v["type"], "update", "{v}");
        let sent = Duration::from_secs_f64(v["cue"]["pts"].as_f64().unwrap());
        let seq = v["cue"]["shot"].as_u64().unwrap();
        received
            .lock()
            .unwrap()
            .push((seq, base.elapsed().saturating_sub(sent)));
    }
}

async fn wait_for_events(received: &std::sync::Mutex<Vec<(u64, Duration)>>, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while (received.lock().unwrap().len() as u64) < n {
        assert!(
            Instant::now() < deadline,
            "healthy client got {} of {n} events",
            received.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (p50, p99) of the latencies.
fn percentiles(events: &[(u64, Duration)]) -> (Duration, Duration) {
    let mut l: Vec<Duration> = events.iter().map(|(_, d)| *d).collect();
    l.sort();
    let at = |q: f64| l[((l.len() as f64 * q).ceil() as usize).clamp(1, l.len()) - 1];
    (at(0.50), at(0.99))
}

async fn connect(addr: SocketAddr, channel: &str) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}/v1/channels/{channel}/cues"))
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
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Read until the server closes: the close code, if a close frame came.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("server closes in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code.into()),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

#[derive(Default)]
struct Peaks {
    redis_clients: AtomicU64,
    rss_kib: AtomicU64,
    channels: AtomicU64,
    connected: AtomicU64,
}

/// Every 100 ms until `stop`: the peaks of Redis connections, RSS, channels, connections.
async fn sample(state: FeedState, redis_url: String, peaks: Arc<Peaks>, stop: CancellationToken) {
    let mut conn = redis::Client::open(redis_url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    loop {
        let FeedStats {
            channels,
            connected,
            ..
        } = state.stats();
        peaks.channels.fetch_max(channels, Ordering::Relaxed);
        peaks.connected.fetch_max(connected, Ordering::Relaxed);
        peaks.rss_kib.fetch_max(rss_kib(), Ordering::Relaxed);
        // This sampler's own connection is not counted.
        let clients = redis_clients(&mut conn).await.saturating_sub(1);
        peaks.redis_clients.fetch_max(clients, Ordering::Relaxed);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Connected clients as Redis counts them (`INFO clients`), this counting one included.
async fn redis_clients(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("connected_clients in INFO clients")
}

/// VmRSS of this process, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[derive(Debug, Default)]
struct RandomOutcome {
    /// Upgraded and served (hello + snapshot), held open until the end of the phase.
    held: usize,
    peak_open: usize,
    /// 503 before the upgrade.
    refused_http: usize,
    /// Upgraded, then closed 1013 (a race for the last slot).
    refused_late: usize,
    other_errors: usize,
}

/// Connections to random channel ids, `RANDOM_IN_FLIGHT` at once; returns once each is
/// answered. The served ones stay open (reading) until `stop`.
async fn random_channels(addr: SocketAddr, stop: CancellationToken) -> RandomOutcome {
    let gate = Arc::new(Semaphore::new(RANDOM_IN_FLIGHT));
    let open = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (report, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..RANDOM_CHANNEL_CONNECTIONS {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let (stop, open, peak, report) = (stop.clone(), open.clone(), peak.clone(), report.clone());
        let channel = format!("r{i}-{:08x}", rand::random::<u32>());
        tokio::spawn(async move {
            let url = format!("ws://{addr}/v1/channels/{channel}/cues");
            let outcome = match tokio_tungstenite::connect_async(url).await {
                Ok((ws, _)) => Ok(ws),
                Err(tungstenite::Error::Http(r)) if r.status() == 503 => Err(Outcome::Http503),
                Err(e) => Err(Outcome::Other(e.to_string())),
            };
            drop(permit);
            let mut ws = match outcome {
                Ok(ws) => ws,
                Err(o) => return report.send(o).unwrap(),
            };
            match tokio::time::timeout(WAIT, ws.next()).await {
                Ok(Some(Ok(Message::Text(_)))) => {}
                Ok(Some(Ok(Message::Close(Some(f))))) if u16::from(f.code) == 1013 => {
                    return report.send(Outcome::Closed1013).unwrap();
                }
                other => return report.send(Outcome::Other(format!("{other:?}"))).unwrap(),
            }
            let now = open.fetch_add(1, Ordering::Relaxed) + 1;
            peak.fetch_max(now, Ordering::Relaxed);
            report.send(Outcome::Held).unwrap();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    m = ws.next() => if !matches!(m, Some(Ok(_))) { break },
                }
            }
            let _ = ws.close(None).await;
        });
    }
    let mut out = RandomOutcome::default();
    for _ in 0..RANDOM_CHANNEL_CONNECTIONS {
        match outcomes.recv().await.unwrap() {
            Outcome::Held => out.held += 1,
            Outcome::Http503 => out.refused_http += 1,
            Outcome::Closed1013 => out.refused_late += 1,
            Outcome::Other(e) => {
                eprintln!("random channel connection: {e}");
                out.other_errors += 1
            }
        }
    }
    out.peak_open = peak.load(Ordering::Relaxed);
    out
}

enum Outcome {
    Held,
    Http503,
    Closed1013,
    Other(String),
}

/// Clients of the healthy channel that never read a byte (4 KiB receive buffers): their
/// connections, to keep open until the server closes them.
async fn never_readers(addr: SocketAddr) -> Vec<Ws> {
    let mut out = Vec::with_capacity(NEVER_READERS);
    for _ in 0..NEVER_READERS {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(
            format!("ws://{addr}/v1/channels/live/cues"),
            MaybeTlsStream::Plain(stream),
        )
        .await
        .unwrap();
        out.push(ws);
    }
    out
}

/// A raw WebSocket connection to the healthy channel, upgraded by hand so that it can
/// send frames no WebSocket library would.
async fn raw_upgrade(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /v1/channels/live/cues HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "upgrade answered");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// A client frame: FIN, `first` (opcode and reserved bits), masked payload.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut out = vec![first, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Whether the server ends the connection (EOF or reset) within `WAIT`, whatever it
/// sends before.
async fn server_hangs_up(s: &mut TcpStream) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(WAIT, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[derive(Debug, Default)]
struct OversizedOutcome {
    closed: usize,
    with_1009: usize,
}

/// Half send a message over the limit; half a frame header announcing 1 GiB (and then
/// nothing), which must not make the server wait for it or reserve room for it.
async fn oversized(addr: SocketAddr, max_client_message: usize) -> OversizedOutcome {
    let tasks: Vec<_> = (0..OVERSIZED)
        .map(|i| {
            tokio::spawn(async move {
                if i % 2 == 0 {
                    let mut ws = connect(addr, "live").await;
                    let big = "y".repeat(max_client_message * 16);
                    let _ = ws.send(Message::text(big)).await;
                    let code = close_code(&mut ws).await;
                    (true, code == Some(1009))
                } else {
                    let mut s = raw_upgrade(addr).await;
                    let mut header = vec![0x81u8, 0x80 | 127];
                    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
                    header.extend_from_slice(&[1, 2, 3, 4, b'x']);
                    s.write_all(&header).await.unwrap();
                    (server_hangs_up(&mut s).await, false)
                }
            })
        })
        .collect();
    let mut out = OversizedOutcome::default();
    for t in tasks {
        let (closed, with_1009) = t.await.unwrap();
        out.closed += closed as usize;
        out.with_1009 += with_1009 as usize;
    }
    out
}

#[derive(Debug, Default)]
struct MalformedOutcome {
    frames_closed: usize,
    json_closed_1008: usize,
}

/// Frames that break the protocol (reserved bits, a reserved opcode, an unmasked frame,
/// text that is not UTF-8), and clients that send nothing but bad JSON.
async fn malformed(addr: SocketAddr) -> MalformedOutcome {
    let frames: Vec<_> = (0..MALFORMED_FRAMES)
        .map(|i| {
            tokio::spawn(async move {
                let mut s = raw_upgrade(addr).await;
                let bad = match i % 4 {
                    0 => frame(0xF1, b"hello"),
                    1 => frame(0x83, b"x"),
                    2 => vec![0x81, 5, b'h', b'e', b'l', b'l', b'o'],
                    _ => frame(0x81, &[0xC3, 0x28]),
                };
                s.write_all(&bad).await.unwrap();
                server_hangs_up(&mut s).await
            })
        })
        .collect();
    let json: Vec<_> = (0..BAD_JSON_CLIENTS)
        .map(|_| {
            tokio::spawn(async move {
                let mut ws = connect(addr, "live").await;
                for _ in 0..101 {
                    ws.send(Message::text("{not json")).await.unwrap();
                }
                close_code(&mut ws).await == Some(1008)
            })
        })
        .collect();
    let mut out = MalformedOutcome::default();
    for t in frames {
        out.frames_closed += t.await.unwrap() as usize;
    }
    for t in json {
        out.json_closed_1008 += t.await.unwrap() as usize;
    }
    out
}
