//! Analysers sharing channels through Redis leases (`[fleet] leases`), all real: a
//! redis-server, the test origin looping grocery_shots.mp4, and three `shopcue run`
//! processes on loopback with the default lease time (10 s). Six channels are balanced
//! across them (two each); a `kill -9`ed analyser's channels run elsewhere within 15 s
//! and the operator cue it left open is ended exactly once; a paused analyser (SIGSTOP
//! past its lease) loses its channels to the others and gives them up when it wakes; an
//! analyser stopped with Ctrl-C hands its channels over at once. The fencing itself (a
//! former owner's late writes refused by Redis) is checked on the bus directly.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::fleet::{FleetPod, Seen, leased_analyser, wait_for};
use common::{RedisServer, TestOrigin, free_port, redis_settings};
use futures::StreamExt;
use serde_json::{Value, json};
use shopcue::cuebus::redis::RedisBus;
use shopcue::cuebus::redis::lease::RedisLeases;
use shopcue::cuebus::{BusSettings, CueBus, Offset, Replay};
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "fleet-test-admin-key-0123456789";
const CHANNELS: usize = 6;

/// The cue events of `channel` in the Redis stream, as `(type, cue id)`.
async fn stream(bus: &RedisBus, channel: &str) -> Vec<(String, String)> {
    match bus.replay(channel, Offset::ZERO).await.expect("replay") {
        Replay::Records(r) => r
            .iter()
            .map(|r| (r.event.kind().to_string(), r.event.cue().id.clone()))
            .collect(),
        Replay::NotInHistory => panic!("the stream of {channel} is not in history"),
    }
}

#[tokio::test]
async fn a_former_owners_writes_are_refused() {
    let redis = RedisServer::start();
    let rs = redis_settings(&redis.url());
    let (a, b) = (
        RedisLeases::new(&rs, "pod-a", 3000).unwrap(),
        RedisLeases::new(&rs, "pod-b", 3000).unwrap(),
    );
    let bus = |()| RedisBus::connect(&BusSettings { history: 1000 }, &rs).unwrap();
    let (bus_a, bus_b) = (bus(()), bus(()));

    let la = a
        .claim("ch")
        .await
        .unwrap()
        .expect("a free channel is claimed");
    assert!(
        b.claim("ch").await.unwrap().is_none(),
        "a held channel is not"
    );
    assert_eq!(
        b.holders(&["ch".into()]).await.unwrap(),
        vec![Some(la.holder.clone())]
    );
    bus_a.fence("ch", Some(la.holder.clone()));
    bus_a.publish(common::start("ch", 1));
    assert!(bus_a.flush(Duration::from_secs(5)).await);

    // Pod a pauses past its lease; b takes the channel with a higher token and ends the cue.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert!(
        !a.renew("ch", &la).await.unwrap(),
        "an expired lease is not renewed"
    );
    let lb = b
        .claim("ch")
        .await
        .unwrap()
        .expect("an expired lease is free");
    assert!(
        lb.token > la.token,
        "tokens grow: {} then {}",
        la.token,
        lb.token
    );
    assert!(!a.renew("ch", &la).await.unwrap(), "nor one another holds");
    bus_b.fence("ch", Some(lb.holder.clone()));
    bus_b.publish(common::end("ch", 1));
    assert!(bus_b.flush(Duration::from_secs(5)).await);

    // Pod a wakes and writes as if it still owned the channel: Redis refuses it.
    bus_a.publish(common::update("ch", 1, 0.9));
    bus_a.publish(common::start("ch", 2));
    assert!(bus_a.flush(Duration::from_secs(5)).await);
    assert_eq!(bus_a.stats().fenced, 2);
    assert_eq!(bus_a.stats().rejected, 0, "fencing is not a store fault");
    // A process that drops its fence writes nothing either.
    bus_b.fence("ch", None);
    bus_b.publish(common::start("ch", 3));
    assert!(bus_b.flush(Duration::from_secs(5)).await);
    assert_eq!(bus_b.stats().fenced, 1);
    let id = common::cue("ch", 1).id;
    assert_eq!(
        stream(&bus_b, "ch").await,
        vec![("start".to_string(), id.clone()), ("end".to_string(), id)]
    );

    // Releasing: a former holder's release does nothing; the holder's frees the channel.
    a.release("ch", &la).await.unwrap();
    assert_eq!(
        b.holders(&["ch".into()]).await.unwrap(),
        vec![Some(lb.holder.clone())]
    );
    b.release("ch", &lb).await.unwrap();
    assert_eq!(b.holders(&["ch".into()]).await.unwrap(), vec![None]);
    a.heartbeat().await.unwrap();
    let live = b.heartbeat().await.unwrap();
    assert_eq!(live, vec!["pod-a".to_string(), "pod-b".to_string()]);
    a.leave().await.unwrap();
    assert_eq!(b.heartbeat().await.unwrap(), vec!["pod-b".to_string()]);
}

/// One `shopcue run` process of the fleet.
struct Pod {
    name: &'static str,
    port: u16,
    child: tokio::process::Child,
}

impl Pod {
    fn start(name: &'static str, redis: &str, origin: &str) -> Self {
        Self::start_with(name, redis, origin, &[])
    }

    fn start_with(name: &'static str, redis: &str, origin: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_shopcue"));
        cmd.arg("run")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--redis", redis]);
        for i in 0..CHANNELS {
            cmd.args(["--channel", &format!("ch{i}={origin}")]);
        }
        // `--redis` is what makes `registry.store = "redis"` valid: flags are applied
        // before the settings are validated.
        leased_analyser(&mut cmd, "fleet", name, KEY);
        cmd.envs(env.iter().copied());
        let child = cmd.spawn().expect("shopcue run starts");
        Self { name, port, child }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl FleetPod for Pod {
    fn name(&self) -> &str {
        self.name
    }

    fn base(&self) -> String {
        self.url("")
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// Every channel's playlist, fetched from every pod at once, is the same on all of them
/// (a few tries: the origin and the analysis move on between fetches). Prints how often.
async fn same_playlists_everywhere(pods: &[&Pod], origin_url: &str) {
    let file = origin_url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap();
    let http = reqwest::Client::new();
    for i in 0..CHANNELS {
        let path = format!("/hls/ch{i}/{file}");
        let t0 = Instant::now();
        let (mut tries, mut same) = (0, 0);
        while same < 3 {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{path}: the pods' playlists differed in {tries} of {tries} tries"
            );
            let bodies = futures::future::join_all(pods.iter().map(|p| {
                let r = http
                    .get(p.url(&path))
                    .timeout(Duration::from_secs(5))
                    .send();
                async move {
                    let r = r.await.ok()?;
                    r.status().is_success().then_some(())?;
                    r.text().await.ok()
                }
            }))
            .await;
            tries += 1;
            let Some(first) = bodies[0].clone() else {
                continue;
            };
            assert!(first.contains("#EXTINF"), "{path}: {first}");
            if bodies.iter().all(|b| b.as_deref() == Some(first.as_str())) {
                same += 1;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        eprintln!(
            "{path}: identical on {} pods in {same} of {tries} tries",
            pods.len()
        );
    }
}

fn balanced(seen: &Seen, per_pod: usize) -> bool {
    seen.values().map(BTreeSet::len).sum::<usize>() == CHANNELS
        && seen.values().all(|r| r.len() == per_pod)
}

#[tokio::test]
async fn three_analysers_share_channels_and_take_over_from_a_dead_one() {
    let redis = RedisServer::start();
    let origin = TestOrigin::start("grocery_shots.mp4", 2.0, 6, true).await;
    let url = origin.media_url();
    let a = Pod::start("pod-a", &redis.url(), &url);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = Pod::start("pod-b", &redis.url(), &url);
    let c = Pod::start("pod-c", &redis.url(), &url);

    // Balanced: two channels each (the first pod took all six, then handed four over).
    let took = wait_for("balance", &[&a, &b, &c], Duration::from_secs(90), |s| {
        balanced(s, 2)
    })
    .await;
    eprintln!("balanced 2/2/2 in {took:?}");

    // Any pod serves any channel: an edge pod that analyses nothing serves every
    // channel's playlist, byte for byte what the analysing pods serve, and the feed of
    // registered channels only.
    let d = Pod::start_with(
        "pod-d",
        &redis.url(),
        &url,
        &[("SHOPCUE__FLEET__ANALYSE", "false")],
    );
    same_playlists_everywhere(&[&a, &b, &c, &d], &url).await;
    let feed = |ch: &str| format!("ws://127.0.0.1:{}/v1/channels/{ch}/cues", d.port);
    tokio_tungstenite::connect_async(feed("ch0"))
        .await
        .expect("a registered channel's feed");
    let refused = tokio_tungstenite::connect_async(feed("nope"))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("404"), "{refused}");
    let held = d.status().await.unwrap()["fleet"]["held"]
        .as_object()
        .unwrap()
        .len();
    assert_eq!(held, 0, "the edge pod claims nothing");
    drop(d);

    // An operator cue on one of pod a's channels, seen by a feed client on pod b.
    let mine = a.running().await.unwrap();
    let channel = mine.iter().next().unwrap().clone();
    let pinned: Value = reqwest::Client::new()
        .post(a.url(&format!("/v1/channels/{channel}/pins")))
        .header("x-api-key", KEY)
        .json(&json!({"product_id": "sku-fleet"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cue_id = pinned["id"].as_str().expect("the pin's cue").to_string();
    let ws_url = format!("ws://127.0.0.1:{}/v1/channels/{channel}/cues", b.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    // The pin is in Redis (pod b's feed shows it open, in its snapshot or as a start)
    // before pod a dies: its bus writes in batches, and a kill before the flush would
    // leave no cue to orphan (a race that failed this test under load).
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = ws.next().await {
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            let open = match v["type"].as_str() {
                Some("snapshot") => v["cues"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["id"] == cue_id.as_str())),
                Some("start") => v["cue"]["id"] == cue_id.as_str(),
                _ => false,
            };
            if open {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        seen,
        Ok(true),
        "the pin reaches pod b's feed before the kill"
    );

    // kill -9 pod a: its channels run on b and c within 15 s.
    let mut a = a;
    a.child.start_kill().unwrap();
    a.child.wait().await.unwrap();
    let took = wait_for("take-over", &[&b, &c], Duration::from_secs(15), |s| {
        balanced(s, 3)
    })
    .await;
    eprintln!("pod-a's channels taken over in {took:?}");

    // The cue pod a left open is ended by the new owner, once.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "end" && v["cue"]["id"] == cue_id.as_str() {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(
        ended,
        Ok(true),
        "the orphaned cue's end reaches a feed client on pod b"
    );
    let bus = RedisBus::connect(&BusSettings::default(), &redis_settings(&redis.url())).unwrap();
    let events = stream(&bus, &channel).await;
    let of = |kind: &str| {
        events
            .iter()
            .filter(|(k, id)| k == kind && *id == cue_id)
            .count()
    };
    assert_eq!((of("start"), of("end")), (1, 1), "{events:?}");

    // Pod b paused past its lease: c takes everything; b gives its channels up on waking
    // (its late writes would be fenced) and the two share again.
    b.signal("-STOP");
    let took = wait_for("pause", &[&c], Duration::from_secs(20), |s| {
        s["pod-c"].len() == CHANNELS
    })
    .await;
    eprintln!("paused pod-b's channels taken over in {took:?}");
    b.signal("-CONT");
    // Its first round on waking gives the channels up; until then it runs them beside c.
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_for("rebalance", &[&b, &c], Duration::from_secs(60), |s| {
        balanced(s, 3)
    })
    .await;
    let lost = b.status().await.unwrap()["fleet"]["lost"].as_u64().unwrap();
    assert!(lost >= 3, "pod-b counts the leases it lost: {lost}");

    // Ctrl-C on pod c: it drains, releases its leases and leaves, so b holds all six
    // sooner than c's leases would expire (10 s), then runs them.
    let t0 = Instant::now();
    c.signal("-INT");
    loop {
        let s = b.status().await.unwrap();
        if s["fleet"]["held"].as_object().map_or(0, |h| h.len()) == CHANNELS {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "b does not hold c's channels: {}",
            s["fleet"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "pod-c's channels claimed by pod-b {:?} after its Ctrl-C",
        t0.elapsed()
    );
    wait_for("run after hand-over", &[&b], Duration::from_secs(20), |s| {
        s["pod-b"].len() == CHANNELS
    })
    .await;
    let mut c = c;
    let code = tokio::time::timeout(Duration::from_secs(20), c.child.wait())
        .await
        .expect("pod-c exits")
        .unwrap();
    assert!(code.success(), "pod-c exits cleanly: {code}");
}
