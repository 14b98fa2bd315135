//! `shopcue bench failover` (issue 13): a fleet of `shopcue run` analysers on one
//! redis-server shares live channels with leases; the analyser holding the most channels is
//! killed (`kill -9`) again and again, a fresh one joining after each kill. Per kill: how
//! long until every channel of the dead analyser runs elsewhere. At the end every analyser
//! stops cleanly and each channel's cue stream in Redis is audited: every cue started once
//! and ended once (none lost, none doubled).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use shopcue::cuebus::redis::RedisBus;
use shopcue::cuebus::{BusSettings, CueBus, CueRecord, Offset, RedisSettings, Replay};
use shopcue::file_origin::LiveOrigin;

use super::children::{RedisProcess, SidecarProcess};

const KEY: &str = "failover-bench-admin-key";
/// `bus.history` of the analysers: the audit reads each stream whole.
pub(crate) const HISTORY: usize = 100_000;

#[derive(clap::Args, Debug)]
pub struct FailoverArgs {
    /// Kills (each followed by a fresh analyser joining).
    #[arg(long, default_value_t = 10)]
    pub kills: usize,
    /// Analysers running at once.
    #[arg(long, default_value_t = 3)]
    pub pods: usize,
    /// Live channels (all from one looping test origin).
    #[arg(long, default_value_t = 6)]
    pub channels: usize,
    #[arg(long, default_value = "data/footage/grocery_shots.mp4")]
    pub input: PathBuf,
    /// Catalog folder (product cues); without one only shots are found and no cue is made.
    #[arg(long, default_value = "data/demo-catalog")]
    pub catalog: PathBuf,
    /// `fleet.lease_ms` of every analyser.
    #[arg(long, default_value_t = 10_000)]
    pub lease_ms: u64,
    /// Where the analysers' logs go (default: a temporary folder, kept and printed).
    #[arg(long)]
    pub logs: Option<PathBuf>,
}

/// The fleet under test.
struct Fleet {
    args: Vec<String>,
    env: Vec<(String, String)>,
    logs: PathBuf,
    pods: Vec<SidecarProcess>,
    started: usize,
    channels: usize,
}

/// The bench until done or `cancel` (Ctrl-C): dropping the run kills every child.
pub async fn run_bench(a: &FailoverArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    tokio::select! {
        r = run(a) => r,
        _ = cancel.cancelled() => bail!("interrupted"),
    }
}

async fn run(a: &FailoverArgs) -> anyhow::Result<()> {
    let redis = RedisProcess::start()?;
    let stop = CancellationToken::new();
    let origin_url = start_origin(a, &stop).await?;
    let logs = match &a.logs {
        Some(p) => p.clone(),
        None => std::env::temp_dir().join(format!("shopcue-failover-{}", std::process::id())),
    };
    std::fs::create_dir_all(&logs)?;
    let mut fleet = Fleet::new(a, &redis.url, &origin_url, logs.clone())?;
    for _ in 0..a.pods {
        fleet.add().await?;
    }
    let took = fleet.wait_balanced(Duration::from_secs(120)).await?;
    println!(
        "fleet of {} analysers, {} channels balanced in {:.1} s",
        a.pods,
        a.channels,
        took.as_secs_f64()
    );
    let mut rows = Vec::new();
    for k in 0..a.kills {
        let row = fleet
            .kill_one()
            .await
            .with_context(|| format!("kill {}", k + 1))?;
        println!(
            "kill {}: {} ({} channels) → running elsewhere in {:.1} s",
            k + 1,
            row.victim,
            row.moved,
            row.failover.as_secs_f64()
        );
        rows.push(row);
        fleet.add().await?;
        fleet.wait_balanced(Duration::from_secs(120)).await?;
    }
    fleet.stop_all().await;
    let ids: Vec<String> = (0..a.channels).map(|i| format!("ch{i}")).collect();
    let audit = audit(&read_streams(&redis.url, &ids).await?);
    stop.cancel();
    print_report(a, &rows, &audit, &logs);
    Ok(())
}

async fn start_origin(a: &FailoverArgs, stop: &CancellationToken) -> anyhow::Result<String> {
    let input = a.input.clone();
    let origin = tokio::task::spawn_blocking(move || LiveOrigin::from_file(&input, 2.0, 6, true))
        .await?
        .with_context(|| format!("test origin from {}", a.input.display()))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/live/index.m3u8", listener.local_addr()?);
    let s = stop.clone();
    tokio::spawn(shopcue::http::file_origin::serve(
        listener,
        Arc::new(origin),
        async move { s.cancelled().await },
    ));
    Ok(url)
}

struct KillRow {
    victim: String,
    moved: usize,
    failover: Duration,
}

impl Fleet {
    fn new(a: &FailoverArgs, redis: &str, origin: &str, logs: PathBuf) -> anyhow::Result<Self> {
        let mut args = vec!["run".to_string(), "--redis".into(), redis.into()];
        if a.catalog.is_dir() {
            args.extend(["--catalog".into(), a.catalog.display().to_string()]);
        } else {
            eprintln!(
                "no catalog at {}: no product cues (shots only)",
                a.catalog.display()
            );
        }
        for i in 0..a.channels {
            args.extend(["--channel".into(), format!("ch{i}={origin}")]);
        }
        let env = [
            ("SHOPCUE__REGISTRY__STORE", "redis".to_string()),
            ("SHOPCUE__FLEET__LEASES", "true".into()),
            ("SHOPCUE__FLEET__LEASE_MS", a.lease_ms.to_string()),
            ("SHOPCUE__BUS__HISTORY", HISTORY.to_string()),
            ("SHOPCUE__SERVER__ADMIN_KEY", KEY.into()),
            ("SHOPCUE__LOG__FORMAT", "text".into()),
        ];
        Ok(Self {
            args,
            env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            logs,
            pods: Vec::new(),
            started: 0,
            channels: a.channels,
        })
    }

    async fn add(&mut self) -> anyhow::Result<()> {
        self.started += 1;
        let name = format!("pod-{}", self.started);
        let mut env = self.env.clone();
        env.push(("SHOPCUE__FLEET__POD".into(), name.clone()));
        let log = self.logs.join(format!("{name}.log"));
        let pod =
            SidecarProcess::spawn(&name, &self.args, &env, &log).context("starting an analyser")?;
        self.pods.push(pod);
        Ok(())
    }

    /// Each live analyser's running channels (held and up); `None` for one not answering.
    async fn running(&self) -> Vec<(String, Option<BTreeSet<String>>)> {
        let mut out = Vec::new();
        for p in &self.pods {
            out.push((p.name.clone(), running(p.port).await));
        }
        out
    }

    /// An analyser that exited by itself, with the last line of its log.
    fn exited(&mut self) -> Option<String> {
        self.pods.iter_mut().find_map(|p| p.exited())
    }

    async fn wait_balanced(&mut self, limit: Duration) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        let n = self.channels;
        let share = n.div_ceil(self.pods.len().max(1));
        loop {
            let seen = self.running().await;
            let all: Vec<&BTreeSet<String>> = seen.iter().filter_map(|(_, r)| r.as_ref()).collect();
            if all.len() == self.pods.len()
                && all.iter().map(|r| r.len()).sum::<usize>() == n
                && all.iter().all(|r| r.len() <= share)
            {
                return Ok(t0.elapsed());
            }
            if let Some(why) = self.exited() {
                bail!("{why}");
            }
            if t0.elapsed() > limit {
                bail!("not balanced within {limit:?}: {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Kill the analyser with the most channels; time until they all run elsewhere.
    async fn kill_one(&mut self) -> anyhow::Result<KillRow> {
        let seen = self.running().await;
        let (victim, channels) = seen
            .into_iter()
            .filter_map(|(n, r)| r.map(|r| (n, r)))
            .max_by_key(|(_, r)| r.len())
            .context("no analyser answers")?;
        let i = self
            .pods
            .iter()
            .position(|p| p.name == victim)
            .context("victim")?;
        let mut pod = self.pods.remove(i);
        let t0 = Instant::now();
        pod.child.kill().await?;
        loop {
            let elsewhere: BTreeSet<String> = self
                .running()
                .await
                .into_iter()
                .filter_map(|(_, r)| r)
                .flatten()
                .collect();
            if channels.is_subset(&elsewhere) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(120) {
                bail!("{victim}'s channels {channels:?} not taken over in 120 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(KillRow {
            victim,
            moved: channels.len(),
            failover: t0.elapsed(),
        })
    }

    /// SIGTERM every analyser (each drains: its open cues end) and wait for them.
    async fn stop_all(&mut self) {
        for p in &self.pods {
            p.terminate();
        }
        for p in &mut self.pods {
            p.wait_or_kill(Duration::from_secs(30)).await;
        }
    }
}

async fn running(port: u16) -> Option<BTreeSet<String>> {
    let s: serde_json::Value = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/status"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let held: BTreeSet<String> = s["fleet"]["held"].as_object()?.keys().cloned().collect();
    let up = s["channels"]
        .as_array()?
        .iter()
        .filter(|c| c["state"] == "up")
        .filter_map(|c| c["id"].as_str().map(str::to_string));
    Some(up.filter(|c| held.contains(c)).collect())
}

/// Every channel's cue stream: cues started, ended, doubled and never ended.
#[derive(Debug, Default)]
pub(crate) struct Audit {
    pub started: usize,
    pub ended: usize,
    pub doubled: usize,
    pub lost: usize,
    pub events: usize,
}

/// Each channel's whole cue stream as Redis holds it, oldest first.
pub(crate) async fn read_streams(
    url: &str,
    channels: &[String],
) -> anyhow::Result<Vec<(String, Vec<Arc<CueRecord>>)>> {
    let settings = RedisSettings {
        url: url.into(),
        ..RedisSettings::default()
    };
    let bus = RedisBus::connect(&BusSettings { history: HISTORY }, &settings)?;
    let mut out = Vec::new();
    for ch in channels {
        let Replay::Records(records) = bus.replay(ch, Offset::ZERO).await? else {
            bail!("{ch}: the stream's start was trimmed; the audit needs it whole");
        };
        out.push((ch.clone(), records));
    }
    Ok(out)
}

/// Counts, over every channel's stream, the cues started, ended, doubled and never ended.
pub(crate) fn audit(streams: &[(String, Vec<Arc<CueRecord>>)]) -> Audit {
    let mut a = Audit::default();
    for (_, records) in streams {
        let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for r in records {
            a.events += 1;
            let e = seen.entry(r.event.cue().id.clone()).or_default();
            match r.event.kind() {
                "start" => e.0 += 1,
                "end" => e.1 += 1,
                _ => {}
            }
        }
        for (starts, ends) in seen.values() {
            a.started += usize::from(*starts > 0);
            a.ended += usize::from(*ends > 0);
            a.doubled += usize::from(*starts > 1 || *ends > 1);
            a.lost += usize::from(*starts > 0 && *ends == 0);
        }
    }
    a
}

fn print_report(a: &FailoverArgs, rows: &[KillRow], audit: &Audit, logs: &std::path::Path) {
    let mut times: Vec<f64> = rows.iter().map(|r| r.failover.as_secs_f64()).collect();
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| -> f64 {
        if times.is_empty() {
            return f64::NAN;
        }
        let i = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1;
        times[i]
    };
    println!();
    println!(
        "### Failover: {} kills, {} analysers, {} channels, lease {} ms",
        rows.len(),
        a.pods,
        a.channels,
        a.lease_ms
    );
    println!();
    println!(
        "| kills | failover p50 s | p95 s | max s | cues started | ended | lost | doubled | stream events |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} | {} |",
        rows.len(),
        pick(0.5),
        pick(0.95),
        pick(1.0),
        audit.started,
        audit.ended,
        audit.lost,
        audit.doubled,
        audit.events
    );
    println!();
    println!(
        "Goal: p95 ≤ 15 s, 0 lost, 0 doubled. Analyser logs: {}",
        logs.display()
    );
}
