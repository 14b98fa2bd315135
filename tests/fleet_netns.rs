//! The fleet on a real network: a redis-server and each `shopcue run` analyser in a network
//! namespace of its own (`ip netns`), joined by veth pairs to a bridge in a hub namespace;
//! the test process reaches them through one more veth (the test origin listens there).
//! Nothing leaves the namespaces this test makes. Six live channels, the default lease
//! time (10 s), all in one run:
//! - `kill -9` an analyser: its channels run elsewhere within 15 s, and a feed client that
//!   followed one of them on the dead pod resumes on another pod with `since`, without a
//!   gap or a repeat (checked against the Redis stream);
//! - cut an analyser off (its link down): its channels move; when the link comes back it
//!   gives up what it lost (late writes fenced) and the pods rebalance;
//! - add and remove channels through the admin API on one pod while running (a removed
//!   channel's open cues end); a fourth pod joins and the channels rebalance;
//! - at the end, after every pod drained on SIGTERM, every cue in every channel's stream
//!   started once and ended once.
//!
//! Needs root and iproute2 (`ip netns`, veth, bridge). Without them the test fails when
//! `SHOPCUE_REQUIRE_PEERS=1` (as `make test` sets it) and says SKIPPED otherwise.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::fleet::{FleetPod, Seen, leased_analyser, wait_for};
use common::{TestOrigin, peer_missing, redis_settings};
use futures::StreamExt;
use serde_json::{Value, json};
use shopcue::cuebus::redis::RedisBus;
use shopcue::cuebus::{BusSettings, CueBus, CueRecord, Offset, Replay};
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "netns-test-admin-key-0123456789";
const PORT: u16 = 8080;

/// Run `ip` with `args`; panics with its stderr when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Why namespaces cannot be made here, if they cannot.
fn netns_unavailable() -> Option<String> {
    let probe = format!("sc{}-probe", std::process::id());
    match Command::new("ip").args(["netns", "add", &probe]).output() {
        Err(e) => Some(format!("iproute2 `ip` not found ({e})")),
        Ok(o) if !o.status.success() => Some(format!(
            "`ip netns add` failed (root needed): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => {
            ip(&["netns", "del", &probe]);
            None
        }
    }
}

/// Namespaces left by an earlier run of this test that was killed (its pid is gone).
fn remove_stale_namespaces() {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix("sc")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// A bridge in a hub namespace, and a namespace per host plugged into it; this process is
/// plugged in too (`host_ip`). Every namespace is deleted on drop (their veths with them).
struct Net {
    tag: String,
    subnet: String,
    spaces: Vec<String>,
}

impl Net {
    fn new() -> Self {
        remove_stale_namespaces();
        let pid = std::process::id();
        let net = Net {
            tag: format!("sc{pid}"),
            subnet: format!("10.201.{}", pid % 250),
            spaces: Vec::new(),
        };
        let hub = net.ns("hub");
        ip(&["netns", "add", &hub]);
        let mut net = net;
        net.spaces.push(hub.clone());
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        let (host, port) = (format!("{}h", net.tag), format!("{}hp", net.tag));
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &port]);
        net.plug(&port);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", net.host_ip()),
            "dev",
            &host,
        ]);
        ip(&["link", "set", &host, "up"]);
        net
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.tag)
    }

    fn host_ip(&self) -> String {
        format!("{}.254", self.subnet)
    }

    /// Moves `port` (a veth end in this namespace) into the hub, on the bridge.
    fn plug(&self, port: &str) {
        let hub = self.ns("hub");
        ip(&["link", "set", port, "netns", &hub]);
        ip(&["-n", &hub, "link", "set", port, "master", "br0"]);
        ip(&["-n", &hub, "link", "set", port, "up"]);
    }

    /// A namespace for `host` (a single letter) at `<subnet>.n`; returns its name and address.
    fn add(&mut self, host: &str, n: u8) -> (String, String) {
        let ns = self.ns(host);
        ip(&["netns", "add", &ns]);
        self.spaces.push(ns.clone());
        let (inner, port) = (
            format!("{}{host}", self.tag),
            format!("{}{host}p", self.tag),
        );
        ip(&["link", "add", &inner, "type", "veth", "peer", "name", &port]);
        ip(&["link", "set", &inner, "netns", &ns]);
        self.plug(&port);
        let addr = format!("{}.{n}", self.subnet);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            &inner,
        ]);
        ip(&["-n", &ns, "link", "set", &inner, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        (ns, addr)
    }

    /// Takes `host`'s link to the bridge down (a partition) or up again.
    fn link(&self, host: &str, up: bool) {
        let port = format!("{}{host}p", self.tag);
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.ns("hub"), "link", "set", &port, state]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.spaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// redis-server in its own namespace, killed on drop.
struct NsRedis {
    child: std::process::Child,
    url: String,
}

impl NsRedis {
    fn start(ns: &str, addr: &str) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "redis-server", "--bind", addr])
            .args(["--port", "6379", "--save", "", "--appendonly", "no"])
            // Reached from the pods' namespaces, not loopback: no protected mode.
            .args(["--protected-mode", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (scripts/setup.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((addr, 6379)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server in {ns} did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("redis://{addr}:6379/"),
        }
    }
}

impl Drop for NsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What every analyser of the fleet is started with.
struct Fleet {
    redis: String,
    channels: Vec<(String, String)>,
    catalog: std::path::PathBuf,
}

/// One `shopcue run` analyser in its namespace, listening on `addr:8080`.
struct Pod {
    name: String,
    addr: String,
    child: tokio::process::Child,
}

impl Pod {
    /// A new namespace `host` (a, b, …, at `<subnet>.2`, `.3`, …) with an analyser in it.
    fn join(net: &mut Net, host: &str, fleet: &Fleet) -> Self {
        let n = 2 + (host.as_bytes()[0] - b'a');
        let (ns, addr) = net.add(host, n);
        Self::start(&ns, &addr, &format!("pod-{host}"), fleet)
    }

    fn start(ns: &str, addr: &str, name: &str, fleet: &Fleet) -> Self {
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_shopcue"), "run"])
            .args(["--listen", &format!("{addr}:{PORT}")])
            .args(["--redis", &fleet.redis]);
        for (id, url) in &fleet.channels {
            cmd.args(["--channel", &format!("{id}={url}")]);
        }
        leased_analyser(&mut cmd, "fleet-netns", name, KEY);
        cmd.env("SHOPCUE__CATALOG__DIR", &fleet.catalog);
        let child = cmd.spawn().expect("ip netns exec shopcue run");
        Self {
            name: name.into(),
            addr: addr.into(),
            child,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}:{PORT}{path}", self.addr)
    }

    fn ws(&self, channel: &str, since: Option<&str>) -> String {
        let q = since.map(|s| format!("?since={s}")).unwrap_or_default();
        format!("ws://{}:{PORT}/v1/channels/{channel}/cues{q}", self.addr)
    }

    /// SIGTERM, then its exit status (it drains and releases its leases).
    async fn stop(mut self) {
        self.signal("-TERM");
        let code = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} exits within 30 s of SIGTERM", self.name))
            .unwrap();
        assert!(code.success(), "{} exits cleanly: {code}", self.name);
    }
}

impl FleetPod for Pod {
    fn name(&self) -> &str {
        &self.name
    }

    fn base(&self) -> String {
        self.url("")
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// All of `channels` run, none on a pod above `most`.
fn spread(seen: &Seen, channels: &BTreeSet<String>, most: usize) -> bool {
    let all: BTreeSet<String> = seen.values().flatten().cloned().collect();
    all == *channels && seen.values().all(|r| r.len() <= most)
}

fn ids(range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|i| format!("ch{i}")).collect()
}

async fn records(bus: &RedisBus, channel: &str) -> Vec<std::sync::Arc<CueRecord>> {
    match bus.replay(channel, Offset::ZERO).await.expect("replay") {
        Replay::Records(r) => r,
        Replay::NotInHistory => panic!("the stream of {channel} is not in history"),
    }
}

/// A feed client: the offsets of the cue events it got (hello and snapshot are positions,
/// not events), until `until` passes or the connection ends.
async fn follow(url: &str, until: Instant, got: &mut Vec<String>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect(url);
    let left = until.saturating_duration_since(Instant::now());
    let _ = tokio::time::timeout(left, async {
        while let Some(Ok(m)) = ws.next().await {
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            if ["start", "update", "end"].contains(&v["type"].as_str().unwrap_or("")) {
                got.push(v["offset"].as_str().unwrap().to_string());
            }
        }
    })
    .await;
}

async fn admin(method: reqwest::Method, url: String, body: Option<Value>) -> u16 {
    let mut r = reqwest::Client::new()
        .request(method, url)
        .header("x-api-key", KEY);
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.expect("admin call").status().as_u16()
}

#[tokio::test]
async fn a_fleet_in_network_namespaces_survives_kills_partitions_and_changes() {
    if let Some(why) = netns_unavailable() {
        peer_missing("fleet_netns", &why);
        return;
    }
    let mut net = Net::new();
    let (rns, raddr) = net.add("r", 1);
    let redis = NsRedis::start(&rns, &raddr);
    let origin = TestOrigin::start_at(&net.host_ip(), "grocery_shots.mp4", 2.0, 6).await;
    let url = origin.media_url();
    let fleet = Fleet {
        redis: redis.url.clone(),
        channels: ids(0..6).into_iter().map(|c| (c, url.clone())).collect(),
        catalog: tokio::task::spawn_blocking(common::grocery_catalog)
            .await
            .unwrap(),
    };
    let a = Pod::join(&mut net, "a", &fleet);
    let b = Pod::join(&mut net, "b", &fleet);
    let c = Pod::join(&mut net, "c", &fleet);
    wait_for("balanced", &[&a, &b, &c], Duration::from_secs(90), |s| {
        spread(s, &ids(0..6), 2)
    })
    .await;
    // What an HPA on channels per pod reads (the sampler copies it once a second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let metrics = reqwest::get(a.url("/metrics")).await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains(r#"shopcue_gauge{name="fleet_channels_held"} 2"#),
        "{metrics}"
    );

    // A feed client follows one of pod a's channels on pod a; a is killed; it resumes on b.
    let followed = a.running().await.unwrap().into_iter().next().unwrap();
    let mut got = Vec::new();
    let url_a = a.ws(&followed, None);
    follow(&url_a, Instant::now() + Duration::from_secs(6), &mut got).await;
    let mut a = a;
    a.child.start_kill().unwrap();
    a.child.wait().await.unwrap();
    let killed = Instant::now();
    wait_for("after kill -9", &[&b, &c], Duration::from_secs(15), |s| {
        spread(s, &ids(0..6), 3)
    })
    .await;
    eprintln!(
        "pod-a's channels run elsewhere {:?} after kill -9",
        killed.elapsed()
    );
    let since = got.last().cloned().unwrap_or_else(|| "0".into());
    follow(
        &b.ws(&followed, Some(&since)),
        Instant::now() + Duration::from_secs(8),
        &mut got,
    )
    .await;
    let bus = RedisBus::connect(&BusSettings::default(), &redis_settings(&redis.url)).unwrap();
    no_gap(&records(&bus, &followed).await, &got, &followed);

    // Partition pod b from everything (Redis included): c takes its channels; on the link's
    // return b finds its leases gone, gives the channels up, and the two share again.
    net.link("b", false);
    let cut = Instant::now();
    wait_for("b cut off", &[&c], Duration::from_secs(25), |s| {
        s["pod-c"].len() == 6
    })
    .await;
    eprintln!(
        "pod-b's channels run on pod-c {:?} after its link went down",
        cut.elapsed()
    );
    net.link("b", true);
    wait_for("b back", &[&b, &c], Duration::from_secs(60), |s| {
        spread(s, &ids(0..6), 3)
    })
    .await;
    let b_fleet = &b.status().await.unwrap()["fleet"];
    assert!(
        b_fleet["lost"].as_u64().unwrap() >= 1,
        "pod-b lost leases: {b_fleet}"
    );

    // Channels added and removed through one pod's API, then a fourth pod joins.
    let put = admin(
        reqwest::Method::PUT,
        c.url("/v1/channels/ch6"),
        Some(json!({"url": url})),
    )
    .await;
    assert_eq!(put, 201, "PUT ch6");
    let del = admin(reqwest::Method::DELETE, b.url("/v1/channels/ch1"), None).await;
    assert_eq!(del, 204, "DELETE ch1");
    let now: BTreeSet<String> = ids(0..7).into_iter().filter(|c| c != "ch1").collect();
    wait_for(
        "ch6 added, ch1 removed",
        &[&b, &c],
        Duration::from_secs(30),
        |s| spread(s, &now, 4),
    )
    .await;
    let d = Pod::join(&mut net, "d", &fleet);
    wait_for(
        "rebalanced with pod-d",
        &[&b, &c, &d],
        Duration::from_secs(60),
        |s| spread(s, &now, 2),
    )
    .await;

    for p in [b, c, d] {
        p.stop().await;
    }
    audit(&bus, &ids(0..7)).await;
}

/// The client's events (across its reconnect) are exactly the stream's events from its
/// first to its last: none missing, none twice.
fn no_gap(stream: &[std::sync::Arc<CueRecord>], got: &[String], channel: &str) {
    assert!(!got.is_empty(), "the feed client of {channel} got no event");
    let offsets: Vec<String> = stream.iter().map(|r| r.offset.to_string()).collect();
    let from = offsets
        .iter()
        .position(|o| *o == got[0])
        .expect("first event in stream");
    let to = offsets
        .iter()
        .position(|o| o == got.last().unwrap())
        .expect("last event in stream");
    assert_eq!(
        got,
        &offsets[from..=to],
        "{channel}: the feed client's events against the stream"
    );
    eprintln!(
        "{channel}: the feed client got {} events, no gap, no repeat",
        got.len()
    );
}

/// Every cue of every channel started once and ended once.
async fn audit(bus: &RedisBus, channels: &BTreeSet<String>) {
    let mut cues = 0;
    for ch in channels {
        let mut count: BTreeMap<String, (u32, u32)> = BTreeMap::new();
        for r in records(bus, ch).await {
            let e = count.entry(r.event.cue().id.clone()).or_default();
            match r.event.kind() {
                "start" => e.0 += 1,
                "end" => e.1 += 1,
                _ => {}
            }
        }
        let bad: Vec<_> = count.iter().filter(|(_, n)| **n != (1, 1)).collect();
        assert!(
            bad.is_empty(),
            "{ch}: cues not started and ended once: {bad:?}"
        );
        cues += count.len();
    }
    eprintln!("{cues} cues, each started once and ended once");
    assert!(cues > 0, "the fleet published no cue");
}
