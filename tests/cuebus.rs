//! The cue bus, in memory and over a real redis-server (started here on a free loopback
//! port and killed at the end): history bound, resuming after an offset, active cues,
//! two buses on one Redis, and an outage with cues published while Redis is down.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{RedisServer, end, start, update};
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

fn redis_settings(url: &str) -> RedisSettings {
    RedisSettings {
        url: url.into(),
        retry_initial_ms: 50,
        retry_max_ms: 300,
        block_ms: 500,
        timeout_ms: 1000,
        ..RedisSettings::default()
    }
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
