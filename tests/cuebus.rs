//! The cue bus, in memory and over a real redis-server (started here on a free loopback
//! port and killed at the end): history bound, resuming after an offset, active cues,
//! two buses on one Redis, and an outage with cues published while Redis is down.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::Duration;

use common::{RedisServer, end, redis_settings, start, update};
use shopcue::cue::CueEvent;
use shopcue::cuebus::memory::MemoryBus;
use shopcue::cuebus::redis::RedisBus;
use shopcue::cuebus::{BusSettings, CueBus, CueRecord, Offset, RedisSettings, Replay};
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(10);

fn records(r: Replay) -> Vec<Arc<CueRecord>> {
    match r {
        Replay::Records(v) => v,
        Replay::NotInHistory => panic!("expected records, got NotInHistory"),
    }
}

async fn recv(rx: &mut broadcast::Receiver<Arc<CueRecord>>) -> Arc<CueRecord> {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a record in time")
        .expect("bus open")
}

#[tokio::test]
async fn memory_history_is_bounded_and_replay_resumes_after_an_offset() {
    let bus = MemoryBus::new(5);
    let recs: Vec<_> = (0..8).map(|n| bus.publish_record(start("a", n))).collect();
    for w in recs.windows(2) {
        assert!(w[0].offset < w[1].offset, "offsets strictly increase");
    }
    // 8 published, 5 kept: records 3..8.
    assert_eq!(
        bus.replay("a", Offset::ZERO).await.unwrap(),
        Replay::NotInHistory
    );
    assert_eq!(
        bus.replay("a", recs[1].offset).await.unwrap(),
        Replay::NotInHistory
    );
    let after3 = records(bus.replay("a", recs[3].offset).await.unwrap());
    assert_eq!(
        after3.iter().map(|r| r.offset).collect::<Vec<_>>(),
        recs[4..].iter().map(|r| r.offset).collect::<Vec<_>>()
    );
    assert!(records(bus.replay("a", recs[7].offset).await.unwrap()).is_empty());
    // An offset that never existed is not resumable either.
    let bogus = Offset {
        ms: recs[7].offset.ms + 1,
        seq: 99,
    };
    assert_eq!(bus.replay("a", bogus).await.unwrap(), Replay::NotInHistory);
    // Channels are separate: nothing trimmed on `b`, so ZERO replays all of it.
    bus.publish(start("b", 1));
    let b = records(bus.replay("b", Offset::ZERO).await.unwrap());
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].channel(), "b");
}

#[tokio::test]
async fn memory_active_cues_follow_start_update_end() {
    let bus = MemoryBus::new(100);
    bus.publish(start("news", 1));
    bus.publish(start("news", 2));
    bus.publish(update("news", 1, 0.9));
    let last = bus.publish_record(end("news", 2));
    let snap = bus.snapshot("news").await.unwrap();
    assert_eq!(snap.offset, last.offset);
    assert_eq!(snap.cues.len(), 1);
    assert_eq!(snap.cues[0].product_id, "sku-1");
    assert_eq!(snap.cues[0].score, 0.9);
    let empty = bus.snapshot("other").await.unwrap();
    assert!(empty.cues.is_empty());
    assert_eq!(empty.offset, Offset::ZERO);
}

#[tokio::test]
async fn memory_subscribe_then_snapshot_gives_each_event_once() {
    let bus = MemoryBus::new(100);
    let mut rx = bus.subscribe("news").await.unwrap();
    bus.publish(start("news", 1));
    bus.publish(start("news", 2));
    let snap = bus.snapshot("news").await.unwrap();
    bus.publish(end("news", 1));
    let mut after = Vec::new();
    for _ in 0..3 {
        let r = recv(&mut rx).await;
        if r.offset > snap.offset {
            after.push(r);
        }
    }
    assert_eq!(snap.cues.len(), 2);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].event, end("news", 1));
}

fn redis_bus(url: &str, history: usize) -> Arc<RedisBus> {
    RedisBus::connect(&BusSettings { history }, &redis_settings(url)).expect("redis bus")
}

#[tokio::test]
async fn redis_buses_on_one_server_see_each_others_cues() {
    let redis = RedisServer::start();
    let a = redis_bus(&redis.url(), 1000);
    let b = redis_bus(&redis.url(), 1000);
    let mut rx = b.subscribe("news").await.unwrap();

    a.publish(start("news", 1));
    a.publish(update("news", 1, 0.75));
    assert!(a.flush(WAIT).await, "a's events reach redis");
    let r1 = recv(&mut rx).await;
    let r2 = recv(&mut rx).await;
    assert_eq!(r1.event, start("news", 1));
    assert_eq!(r2.event, update("news", 1, 0.75));
    assert!(r1.offset < r2.offset);
    assert!(
        r1.offset.ms > 1_000_000_000_000,
        "stream ids are the offsets: {}",
        r1.offset
    );

    // The snapshot, read through the other bus, reflects exactly what was written.
    let snap = b.snapshot("news").await.unwrap();
    assert_eq!(snap.offset, r2.offset);
    assert_eq!(snap.cues.len(), 1);
    assert_eq!(snap.cues[0].score, 0.75);

    a.publish(end("news", 1));
    assert!(a.flush(WAIT).await);
    let r3 = recv(&mut rx).await;
    assert!(matches!(r3.event, CueEvent::End(_)));
    let snap = b.snapshot("news").await.unwrap();
    assert!(snap.cues.is_empty());
    assert_eq!(snap.offset, r3.offset);

    // Resume after an offset; ZERO replays everything while nothing was trimmed.
    let after1 = records(b.replay("news", r1.offset).await.unwrap());
    assert_eq!(
        after1.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![r2.offset, r3.offset]
    );
    assert_eq!(
        records(b.replay("news", Offset::ZERO).await.unwrap()).len(),
        3
    );
    assert_eq!(
        b.replay("news", Offset { ms: 1, seq: 0 }).await.unwrap(),
        Replay::NotInHistory
    );

    // b publishes too: a sees it.
    let mut rx_a = a.subscribe("sport").await.unwrap();
    b.publish(start("sport", 7));
    assert!(b.flush(WAIT).await);
    assert_eq!(recv(&mut rx_a).await.event, start("sport", 7));
    let stats = a.stats();
    assert_eq!((stats.published, stats.stored, stats.dropped), (3, 3, 0));
}

#[tokio::test]
async fn redis_history_is_trimmed_to_maxlen() {
    let redis = RedisServer::start();
    let bus = redis_bus(&redis.url(), 3);
    let mut rx = bus.subscribe("news").await.unwrap();
    let mut offsets = Vec::new();
    for n in 0..5 {
        bus.publish(start("news", n));
        assert!(bus.flush(WAIT).await);
        offsets.push(recv(&mut rx).await.offset);
    }
    assert_eq!(
        bus.replay("news", Offset::ZERO).await.unwrap(),
        Replay::NotInHistory
    );
    assert_eq!(
        bus.replay("news", offsets[0]).await.unwrap(),
        Replay::NotInHistory
    );
    let tail = records(bus.replay("news", offsets[2]).await.unwrap());
    assert_eq!(
        tail.iter().map(|r| r.offset).collect::<Vec<_>>(),
        offsets[3..].to_vec()
    );
}

#[tokio::test]
async fn redis_outage_buffers_cues_and_flushes_them_on_reconnect() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let url = redis.url();
    let publisher = redis_bus(&url, 1000);
    let reader = redis_bus(&url, 1000);
    let mut rx = reader.subscribe("news").await.unwrap();
    // A second publisher whose outage buffer holds only 2 events.
    let small = RedisBus::connect(
        &BusSettings { history: 1000 },
        &RedisSettings {
            outage_buffer: 2,
            ..redis_settings(&url)
        },
    )
    .unwrap();

    publisher.publish(start("news", 1));
    assert!(publisher.flush(WAIT).await);
    assert_eq!(recv(&mut rx).await.event, start("news", 1));

    redis.kill();
    publisher.publish(update("news", 1, 0.6));
    publisher.publish(update("news", 1, 0.7));
    publisher.publish(end("news", 1));
    for n in 0..5 {
        small.publish(start("overflow", n));
    }
    // Nothing crashes; the events wait.
    assert!(
        !publisher.flush(Duration::from_millis(700)).await,
        "cannot flush while redis is down"
    );
    let stats = publisher.stats();
    assert_eq!(stats.buffered, 3);
    assert!(!stats.healthy);
    let small_stats = small.stats();
    assert_eq!(
        (small_stats.buffered, small_stats.dropped),
        (2, 3),
        "oldest dropped and counted"
    );

    let _redis = RedisServer::start_on(port);
    assert!(
        publisher.flush(WAIT).await,
        "buffered events flushed after the restart"
    );
    assert!(small.flush(WAIT).await);
    // The reader reconnects and resumes: the outage's events arrive, in order.
    assert_eq!(recv(&mut rx).await.event, update("news", 1, 0.6));
    assert_eq!(recv(&mut rx).await.event, update("news", 1, 0.7));
    assert_eq!(recv(&mut rx).await.event, end("news", 1));
    let stats = publisher.stats();
    assert!(
        stats.healthy && stats.reconnects >= 1 && stats.dropped == 0,
        "{stats:?}"
    );
    // Of the small buffer's five, the last two made it.
    let kept = records(small.replay("overflow", Offset::ZERO).await.unwrap());
    assert_eq!(
        kept.iter().map(|r| r.event.clone()).collect::<Vec<_>>(),
        vec![start("overflow", 3), start("overflow", 4)]
    );
}

/// One command on a plain connection of the test's own (to plant faults and count).
async fn redis_cmd<T: redis::FromRedisValue>(url: &str, args: &[&str]) -> T {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test redis");
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut conn).await.expect("redis command")
}

/// `replay` until Redis answers (it refuses commands while it reloads its data).
async fn replay_when_up(bus: &RedisBus, channel: &str, after: Offset) -> Vec<Arc<CueRecord>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match bus.replay(channel, after).await {
            Ok(r) => return records(r),
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("replay while redis comes back: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("replay after the restart: {e}"),
        }
    }
}

fn assert_in_order_once(got: &[Arc<CueRecord>], want: &[CueEvent], what: &str) {
    for w in got.windows(2) {
        assert!(w[0].offset < w[1].offset, "{what}: offsets increase");
    }
    let got: Vec<&CueEvent> = got.iter().map(|r| &r.event).collect();
    let want: Vec<&CueEvent> = want.iter().collect();
    if got != want {
        let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
        panic!(
            "{what}: {} records for {} events, first difference at {first_diff:?}",
            got.len(),
            want.len()
        );
    }
}

/// Redis is SIGKILLed while a publisher emits a cue every 3 ms, and comes back a second
/// later on the same port from the same data directory (append-only file, fsync always:
/// without persistence the restart would empty the stream and the "before" cues could not
/// be in it; with it, only what Redis never acknowledged is missing, and the bus re-sends
/// exactly that). Every cue lands in the stream once, in order; a live reader and a feed
/// client resuming with `since` see each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_publish_every_cue_lands_once_in_order_and_feeds_resume() {
    const N: u64 = 900;
    let test = async {
        let data = tempfile::tempdir().expect("data dir");
        let mut redis = RedisServer::start_persistent(data.path());
        let (port, url) = (redis.port, redis.url());
        let publisher = redis_bus(&url, 100_000);
        let feed = redis_bus(&url, 100_000);
        let events: Vec<CueEvent> = (0..N).map(|n| start("news", n)).collect();

        let mut live = feed.subscribe("news").await.unwrap();
        let live_reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < N as usize {
                match tokio::time::timeout(WAIT, live.recv()).await {
                    Ok(Ok(r)) => got.push(r),
                    Ok(Err(e)) => panic!("live reader: {e}"),
                    Err(_) => break,
                }
            }
            got
        });
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let emitter = {
            let (publisher, sent, events) = (publisher.clone(), sent.clone(), events.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(3));
                for e in events {
                    tick.tick().await;
                    publisher.publish(e);
                    sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        };
        let sent_now = || sent.load(std::sync::atomic::Ordering::SeqCst);

        while sent_now() < 200 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A feed client has read everything so far; `since` is its last offset.
        let first = records(feed.replay("news", Offset::ZERO).await.unwrap());
        assert!(!first.is_empty());
        let since = first.last().unwrap().offset;

        redis.kill();
        let at_kill = sent_now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!publisher.stats().healthy, "the outage is noticed");
        let restarted = std::time::Instant::now();
        let _redis = RedisServer::start_persistent_on(port, data.path());
        let at_restart = sent_now();

        let mut healthy_after = None;
        while healthy_after.is_none() && restarted.elapsed() < WAIT {
            if publisher.stats().healthy {
                healthy_after = Some(restarted.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The client comes back with `since` while cues are still being published, and
        // once more with the offset it reached.
        let second = replay_when_up(&feed, "news", since).await;
        let since2 = second.last().map(|r| r.offset).unwrap_or(since);
        let at_second = sent_now();
        emitter.await.unwrap();
        assert!(publisher.flush(WAIT).await, "everything flushed");
        let drained_after = restarted.elapsed();
        let third = records(feed.replay("news", since2).await.unwrap());
        assert!(
            at_second < N && !third.is_empty(),
            "the second resume was mid-stream"
        );

        let resumed: Vec<_> = first.iter().chain(&second).chain(&third).cloned().collect();
        assert_in_order_once(&resumed, &events, "feed client resuming with since");
        let stream = records(feed.replay("news", Offset::ZERO).await.unwrap());
        assert_in_order_once(&stream, &events, "the stream");
        let xlen: u64 = redis_cmd(&url, &["XLEN", "shopcue:cues:news"]).await;
        assert_eq!(xlen, N);
        let live = live_reader.await.unwrap();
        assert_in_order_once(&live, &events, "live reader across the outage");

        let stats = publisher.stats();
        assert_eq!(
            (stats.published, stats.stored, stats.dropped, stats.buffered),
            (N, N, 0, 0),
            "{stats:?}"
        );
        assert!(stats.healthy && stats.reconnects >= 1, "{stats:?}");
        eprintln!(
            "outage: {} cues published while redis was down ({} before the kill); \
             publisher healthy {:?} after the restart, all {N} stored {:?} after it; \
             feed client resumed with {} + {} + {} records",
            at_restart - at_kill,
            at_kill,
            healthy_after,
            drained_after,
            first.len(),
            second.len(),
            third.len()
        );
        assert!(
            at_restart - at_kill >= 100,
            "cues were published during the outage"
        );
    };
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("the outage test finishes within 60 s");
}

/// Someone SETs a string at a channel's stream key (or a list at its hash): that
/// channel's events are refused with one error naming the key and why, nothing of them is
/// half-written, and the other channels' cues keep flowing.
#[tokio::test]
async fn redis_wrong_type_key_fails_its_channel_only_with_a_clear_error() {
    let test = async {
        let redis = RedisServer::start();
        let url = redis.url();
        let _: () = redis_cmd(&url, &["SET", "shopcue:cues:bad", "not a stream"]).await;
        let _: () = redis_cmd(&url, &["RPUSH", "shopcue:active:bad2", "x"]).await;
        let bus = redis_bus(&url, 1000);
        let mut rx = bus.subscribe("good").await.unwrap();

        let mut good = Vec::new();
        for n in 0..5 {
            bus.publish(start("bad", n));
            bus.publish(start("bad2", n));
            good.push(start("good", n));
            bus.publish(start("good", n));
        }
        assert!(bus.flush(WAIT).await, "refused events are not retried");
        for want in &good {
            assert_eq!(&recv(&mut rx).await.event, want);
        }
        assert_in_order_once(
            &records(bus.replay("good", Offset::ZERO).await.unwrap()),
            &good,
            "good channel",
        );

        let bad = bus.rejection("bad").expect("bad's error");
        let msg = bad.to_string();
        assert!(
            msg.contains("`shopcue:cues:bad`") && msg.contains("string") && msg.contains("stream"),
            "{msg}"
        );
        let bad2 = bus.rejection("bad2").expect("bad2's error").to_string();
        assert!(
            bad2.contains("`shopcue:active:bad2`")
                && bad2.contains("list")
                && bad2.contains("hash"),
            "{bad2}"
        );
        assert!(bus.rejection("good").is_none());
        eprintln!("errors: {msg} | {bad2}");
        // Nothing half-written, and the foreign values are left alone.
        let t: String = redis_cmd(&url, &["TYPE", "shopcue:active:bad"]).await;
        assert_eq!(t, "none");
        let t: String = redis_cmd(&url, &["TYPE", "shopcue:cues:bad2"]).await;
        assert_eq!(t, "none");
        let v: String = redis_cmd(&url, &["GET", "shopcue:cues:bad"]).await;
        assert_eq!(v, "not a stream");
        let stats = bus.stats();
        assert_eq!(
            (stats.published, stats.stored, stats.rejected, stats.dropped),
            (15, 5, 10, 0),
            "{stats:?}"
        );
        assert!(stats.healthy, "a refused channel is not an outage");
        assert!(stats.last_rejection.is_some());

        // Once the key is fixed, the channel flows again and its error clears.
        let _: () = redis_cmd(&url, &["DEL", "shopcue:cues:bad"]).await;
        bus.publish(start("bad", 9));
        assert!(bus.flush(WAIT).await);
        assert_eq!(
            records(bus.replay("bad", Offset::ZERO).await.unwrap()).len(),
            1
        );
        assert!(bus.rejection("bad").is_none());
    };
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .expect("finishes within 30 s");
}

/// The reported bug: a permanent error on one channel's batch was retried forever, and
/// (in one MULTI with the other channels) re-added their cues on every retry while nothing
/// behind it got written. Now the bad channel's event is refused once, the good channel's
/// cues land exactly once, and later cues keep arriving promptly.
#[tokio::test]
async fn redis_permanent_error_on_one_channel_neither_repeats_nor_blocks_the_others() {
    let test = async {
        let redis = RedisServer::start();
        let url = redis.url();
        let _: () = redis_cmd(&url, &["SET", "shopcue:cues:bad", "x"]).await;
        let bus = redis_bus(&url, 1000);
        let reader = redis_bus(&url, 1000);
        let mut rx = reader.subscribe("good").await.unwrap();

        // In one batch: the bad channel's event first, then the good ones.
        bus.publish(start("bad", 0));
        for n in 0..3 {
            bus.publish(start("good", n));
        }
        assert!(
            bus.flush(Duration::from_secs(5)).await,
            "the batch is not retried forever"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let xlen: u64 = redis_cmd(&url, &["XLEN", "shopcue:cues:good"]).await;
        assert_eq!(
            xlen, 3,
            "the good cues are written once, not once per retry"
        );
        // Later cues on both channels: the good ones keep arriving promptly.
        let mut slowest = Duration::ZERO;
        for n in 0..3 {
            assert_eq!(recv(&mut rx).await.event, start("good", n));
        }
        for n in 3..13 {
            bus.publish(start("bad", n));
            let sent = std::time::Instant::now();
            bus.publish(start("good", n));
            let r = tokio::time::timeout(Duration::from_secs(2), rx.recv())
                .await
                .expect("a good cue within 2 s")
                .unwrap();
            assert_eq!(r.event, start("good", n));
            slowest = slowest.max(sent.elapsed());
        }
        // The reader can see a cue before the writer has counted its round.
        assert!(bus.flush(WAIT).await);
        let stats = bus.stats();
        assert_eq!((stats.stored, stats.rejected), (13, 11), "{stats:?}");
        eprintln!("slowest good cue publish -> reader: {slowest:?}");
    };
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .expect("finishes within 30 s");
}

/// A TCP relay to a redis-server that can lose one reply: armed, it swallows the next
/// bytes Redis sends and cuts the connection, so Redis has executed the command and the
/// client never hears of it.
struct LossyRelay {
    port: u16,
    armed: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl LossyRelay {
    async fn start(redis_port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(relay_connections(listener, redis_port, armed.clone()));
        Self { port, armed, task }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn arm(&self) {
        self.armed.store(true, AtomicOrdering::SeqCst);
    }

    fn fired(&self) -> bool {
        !self.armed.load(AtomicOrdering::SeqCst)
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay_connections(
    listener: tokio::net::TcpListener,
    redis_port: u16,
    armed: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conns = tokio::task::JoinSet::new();
    while let Ok((client, _)) = listener.accept().await {
        let armed = armed.clone();
        conns.spawn(async move {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", redis_port)).await else {
                return;
            };
            let (mut client_rx, mut client_tx) = client.into_split();
            let (mut server_rx, mut server_tx) = server.into_split();
            let up = tokio::io::copy(&mut client_rx, &mut server_tx);
            let down = async {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match server_rx.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if armed.swap(false, AtomicOrdering::SeqCst) {
                        return; // the reply is lost; both connections close below
                    }
                    if client_tx.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = up => {}
                _ = down => {}
            }
        });
    }
}

/// Redis writes a batch and its reply is lost (the connection drops before the client
/// hears "OK"): the bus sends the batch again and the script skips what is already there,
/// so each cue is in the stream once (before, every such retry added the batch again).
#[tokio::test]
async fn redis_reply_lost_after_a_write_does_not_write_it_twice() {
    let test = async {
        let redis = RedisServer::start();
        let relay = LossyRelay::start(redis.port).await;
        let bus = redis_bus(&relay.url(), 1000);
        // Warm up: the connection is open and the script loaded.
        bus.publish(start("news", 0));
        assert!(bus.flush(WAIT).await);

        relay.arm();
        let events: Vec<CueEvent> = (0..4).map(|n| start("news", n)).collect();
        for e in &events[1..] {
            bus.publish(e.clone());
        }
        assert!(bus.flush(WAIT).await, "written after the lost reply");
        assert!(relay.fired(), "a reply was lost");
        let xlen: u64 = redis_cmd(&redis.url(), &["XLEN", "shopcue:cues:news"]).await;
        assert_eq!(xlen, 4, "each cue once");
        let direct = redis_bus(&redis.url(), 1000);
        assert_in_order_once(
            &records(direct.replay("news", Offset::ZERO).await.unwrap()),
            &events,
            "the stream",
        );
        let stats = bus.stats();
        assert_eq!((stats.stored, stats.dropped), (4, 0), "{stats:?}");
        assert!(
            stats.reconnects >= 1,
            "the lost reply was a failure: {stats:?}"
        );
    };
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .expect("finishes within 30 s");
}
