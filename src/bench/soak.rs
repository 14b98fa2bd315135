//! `shopcue bench soak --duration D` (issue 11): the sidecar under a steady, realistic load
//! for a long time, watched for slow leaks and for losses.
//!
//! - One real `shopcue run` child process (this executable, the settings file and the
//!   environment as given, the demo catalog, `manifest.segment_uris = "proxy"` and
//!   `manifest.id3 = true` so segments go through the proxy too) on a redis-server child
//!   as its cue bus.
//! - Its channels: looping loopback origins of real footage at 1280x720 30 fps in 2 s
//!   segments, as `bench capacity` serves them (even channels `grocery_shots.mp4`, odd
//!   ones `intel_concat.mp4`), on a runtime of their own in this process.
//! - WebSocket feed clients spread over the channels that leave and resume with `since`
//!   at random ([`feed_clients`]), and HLS players per channel polling the proxy
//!   ([`players`]).
//! - Every `--sample-secs` the child's RSS, open fds and threads (`/proc`), its tokio
//!   tasks and error counters (`/metrics`), the clients' totals and the panics in its log
//!   ([`samples`]); a row a minute is printed, every row goes to a CSV.
//!
//! At the end the clients catch up with each stream's head, the sidecar is stopped with
//! SIGTERM (its open cues end), each channel's stream in Redis is audited (every cue
//! started once and ended once) and each client's events are checked against it (no gap,
//! no duplicate); then the slopes after the warm-up, each against its declared threshold.
//! Ctrl-C ends the run early with the same report. Every child is killed on every exit path.

mod feed_clients;
mod players;
mod samples;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use shopcue::config::Settings;
use shopcue::cuebus::redis::RedisBus;
use shopcue::cuebus::{BusSettings, CueBus, Offset, RedisSettings};

use super::capacity::BenchData;
use super::capacity::step::{BenchChannel, start_origins};
use super::children::{RedisProcess, SidecarProcess};
use super::failover::{Audit, HISTORY, audit, read_streams};
use feed_clients::{Check, Churn, ClientLog, FeedCounters};
use players::PlayerCounters;
use samples::{PanicScan, Sample, TrendRow, Verdict};

#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// How long to run: `90s`, `3m`, `1h`, `1h30m` (plain numbers are seconds).
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    pub duration: Duration,
    /// Live channels with full analysis.
    #[arg(long, default_value_t = 4)]
    pub channels: usize,
    /// WebSocket feed clients, spread over the channels.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// HLS players per channel.
    #[arg(long, default_value_t = 2)]
    pub players: usize,
    /// A feed connection lasts a random time from this many seconds ...
    #[arg(long, default_value_t = 5.0)]
    pub session_min_s: f64,
    /// ... to this many.
    #[arg(long, default_value_t = 60.0)]
    pub session_max_s: f64,
    /// A client that left comes back within this many seconds.
    #[arg(long, default_value_t = 3.0)]
    pub away_max_s: f64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10.0)]
    pub sample_secs: f64,
    #[command(flatten)]
    pub data: BenchData,
    /// Where the samples (CSV) and the sidecar's log go.
    #[arg(long, default_value = "target/bench/soak")]
    pub out: PathBuf,
}

/// `90`, `90s`, `3m`, `1h`, `1h30m`, `2m30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration like 90s, 3m, 1h or 1h30m");
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let (mut total, mut digits) = (0u64, String::new());
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

impl SoakArgs {
    fn check(&self) -> anyhow::Result<()> {
        ensure!(self.channels >= 1, "--channels must be at least 1");
        ensure!(
            self.session_min_s > 0.0 && self.session_max_s > self.session_min_s,
            "--session-max-s must be more than --session-min-s, both above 0"
        );
        ensure!(
            self.away_max_s.is_finite() && self.away_max_s >= 0.0,
            "--away-max-s must be 0 or more"
        );
        ensure!(
            self.sample_secs >= 1.0 && self.sample_secs.is_finite(),
            "--sample-secs must be at least 1"
        );
        Ok(())
    }
}

/// The run's file names share a UTC stamp.
fn stamp() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()
}

/// Builds the catalog if missing, encodes the footage, starts the origins, redis-server
/// and the sidecar; runs the load; prints the report.
pub async fn run_bench(
    settings: &Settings,
    config: Option<&Path>,
    args: &SoakArgs,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    args.check()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    args.data.ensure_catalog(settings).await?;
    let footage = super::capacity::footage(&args.data.footage_dir()?).await?;
    let origins = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(super::capacity::procfs::ORIGIN_THREAD)
        .enable_all()
        .build()
        .context("the origins' runtime")?;
    let stop_origins = CancellationToken::new();
    let result = async {
        let channels = start_origins(
            &footage,
            origins.handle(),
            args.channels,
            false,
            &stop_origins,
        )?;
        soak(config, args, &channels, &cancel).await
    }
    .await;
    stop_origins.cancel();
    origins.shutdown_background();
    result
}

/// The sidecar child's command line and environment.
fn sidecar_command(
    config: Option<&Path>,
    args: &SoakArgs,
    redis: &str,
    channels: &[BenchChannel],
) -> (Vec<String>, Vec<(String, String)>) {
    let mut argv = vec!["run".to_string(), "--redis".into(), redis.into()];
    if let Some(c) = config {
        argv.extend(["--config".into(), c.display().to_string()]);
    }
    argv.extend(["--catalog".into(), args.data.catalog.display().to_string()]);
    for c in channels {
        argv.extend(["--channel".into(), format!("{}={}", c.id, c.url)]);
    }
    let env = [
        ("SHOPCUE__BUS__HISTORY", HISTORY.to_string()),
        ("SHOPCUE__LOG__FORMAT", "text".into()),
        ("SHOPCUE__MANIFEST__SEGMENT_URIS", "proxy".into()),
        ("SHOPCUE__MANIFEST__ID3", "true".into()),
    ];
    (
        argv,
        env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    )
}

/// Waits for `/readyz` (every channel up, the catalog loaded).
async fn wait_ready(sidecar: &mut SidecarProcess, limit: Duration) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let url = format!("http://127.0.0.1:{}/readyz", sidecar.port);
    let client = http_client()?;
    loop {
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
        {
            return Ok(t0.elapsed());
        }
        if let Some(why) = sidecar.exited() {
            bail!("{why}");
        }
        if t0.elapsed() > limit {
            bail!(
                "the sidecar was not ready within {limit:?} (log: {})",
                sidecar.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `GET /metrics` over a blocking socket, timed on the thread that makes it: a second
/// opinion on the sidecar's answer time that the bench's own busy runtime (200 clients and
/// the players) cannot delay. `None`: no 200 within 10 s.
fn blocking_probe(addr: std::net::SocketAddr) -> Option<f64> {
    use std::io::{Read, Write};
    let limit = Duration::from_secs(10);
    let started = Instant::now();
    let mut s = std::net::TcpStream::connect_timeout(&addr, limit).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).ok()?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    (answer.starts_with(b"HTTP/1.1 200") && ms <= limit.as_secs_f64() * 1000.0).then_some(ms)
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?)
}

/// The load, started on a ready sidecar.
struct Load {
    feed: Arc<FeedCounters>,
    players: Arc<PlayerCounters>,
    clients: JoinSet<ClientLog>,
    player_tasks: JoinSet<()>,
    /// Per channel: the stream head the clients catch up with at the end.
    heads: Vec<(String, watch::Sender<Option<Offset>>)>,
    stop: CancellationToken,
}

fn start_load(args: &SoakArgs, port: u16, channels: &[BenchChannel]) -> anyhow::Result<Load> {
    let stop = CancellationToken::new();
    let feed = Arc::new(FeedCounters::default());
    let players = Arc::new(PlayerCounters::default());
    let churn = Churn {
        session_s: (args.session_min_s, args.session_max_s),
        away_s: args.away_max_s,
    };
    let heads: Vec<(String, watch::Sender<Option<Offset>>)> = channels
        .iter()
        .map(|c| (c.id.clone(), watch::channel(None).0))
        .collect();
    let mut clients = JoinSet::new();
    for i in 0..args.clients {
        let (id, head) = &heads[i % heads.len()];
        clients.spawn(feed_clients::run(
            format!("ws://127.0.0.1:{port}"),
            id.clone(),
            churn,
            0x50A4 + i as u64,
            feed.clone(),
            head.subscribe(),
            stop.clone(),
        ));
    }
    let mut player_tasks = JoinSet::new();
    for c in channels {
        let master: url::Url =
            format!("http://127.0.0.1:{port}/hls/{}/master.m3u8", c.id).parse()?;
        for _ in 0..args.players {
            player_tasks.spawn(players::run(master.clone(), players.clone(), stop.clone()));
        }
    }
    Ok(Load {
        feed,
        players,
        clients,
        player_tasks,
        heads,
        stop,
    })
}

/// Samples, the CSV written as they come, and the log's panics.
struct Recorder {
    csv: std::fs::File,
    csv_path: PathBuf,
    panics: PanicScan,
    samples: Vec<Sample>,
    t0: Instant,
    http: reqwest::Client,
    metrics_url: String,
    metrics_addr: std::net::SocketAddr,
    pid: u32,
    /// `/metrics` scrapes that failed (within the 5 s timeout).
    scrape_errors: u64,
}

impl Recorder {
    fn new(out: &Path, stamp: &str, sidecar: &SidecarProcess) -> anyhow::Result<Self> {
        let csv_path = out.join(format!("soak-{stamp}.csv"));
        let mut csv = std::fs::File::create(&csv_path)
            .with_context(|| format!("creating {}", csv_path.display()))?;
        writeln!(csv, "{}", samples::csv_header())?;
        Ok(Self {
            csv,
            csv_path,
            panics: PanicScan::new(sidecar.log.clone()),
            samples: Vec::new(),
            t0: Instant::now(),
            http: http_client()?,
            metrics_url: format!("http://127.0.0.1:{}/metrics", sidecar.port),
            metrics_addr: std::net::SocketAddr::from(([127, 0, 0, 1], sidecar.port)),
            pid: sidecar.pid().context("the sidecar's pid")?,
            scrape_errors: 0,
        })
    }

    async fn sample(&mut self, load: &Load, every_s: f64) {
        let probe = tokio::task::spawn_blocking({
            let addr = self.metrics_addr;
            move || blocking_probe(addr)
        });
        let started = Instant::now();
        let metrics = match self.http.get(&self.metrics_url).send().await {
            Ok(r) if r.status().is_success() => r.text().await.ok(),
            _ => None,
        };
        let scrape_ms = metrics
            .is_some()
            .then(|| started.elapsed().as_secs_f64() * 1000.0);
        if metrics.is_none() {
            self.scrape_errors += 1;
        }
        let probe_ms = probe.await.ok().flatten();
        let s = samples::take(
            self.t0.elapsed().as_secs_f64(),
            &samples::Sources {
                pid: self.pid,
                metrics: metrics.as_deref(),
                feed: &load.feed,
                players: &load.players,
                panics: self.panics.scan(),
                scrape_ms,
                probe_ms,
            },
        );
        let _ = writeln!(self.csv, "{}", samples::csv_row(&s));
        // A row a minute (and the first).
        let per_minute = (60.0 / every_s).round().max(1.0) as usize;
        if self.samples.len().is_multiple_of(per_minute) {
            println!("{}", samples::table_row(&s));
        }
        self.samples.push(s);
    }
}

async fn soak(
    config: Option<&Path>,
    args: &SoakArgs,
    channels: &[BenchChannel],
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let redis = RedisProcess::start()?;
    let stamp = stamp();
    let (argv, env) = sidecar_command(config, args, &redis.url, channels);
    let log = args.out.join(format!("soak-{stamp}-sidecar.log"));
    let mut sidecar = SidecarProcess::spawn("the sidecar", &argv, &env, &log)?;
    let ready = wait_ready(&mut sidecar, Duration::from_secs(180)).await?;
    eprintln!(
        "sidecar ready in {:.1} s (pid {}, log {}); {} clients, {} players per channel, {:?}",
        ready.as_secs_f64(),
        sidecar.pid().unwrap_or(0),
        log.display(),
        args.clients,
        args.players,
        args.duration
    );
    let mut load = start_load(args, sidecar.port, channels)?;
    let mut rec = Recorder::new(&args.out, &stamp, &sidecar)?;
    println!("\n{}", samples::table_header());
    let early = run_for(args, &mut rec, &load, &mut sidecar, cancel).await;
    // The slopes are over the run; the sample taken once the clients left is not.
    let run_samples = rec.samples.len();
    let end = finish(&mut load, &redis.url, &mut sidecar, &mut rec, args, cancel).await;
    let exit = sidecar.wait_or_kill(Duration::from_secs(30)).await;
    let panics = rec.panics.scan();
    let ids: Vec<String> = channels.iter().map(|c| c.id.clone()).collect();
    let streams = read_streams(&redis.url, &ids).await?;
    let logs = end.logs;
    let report = Report {
        audit: audit(&streams),
        check: check_clients(&streams, &logs),
        caught_up: logs.iter().filter(|l| l.caught_up).count(),
        clients: logs.len(),
        panics,
        first_panic: rec.panics.first.clone(),
        exit: exit.map_or("killed after 30 s".into(), |s| s.to_string()),
        early: early.err().map(|e| format!("{e:#}")),
        ran_s: end.ran_s,
        run_samples,
    };
    print_report(args, &rec, &report, &log);
    drop(redis);
    Ok(())
}

/// Samples until the duration is over, Ctrl-C, or the sidecar exits (an error).
async fn run_for(
    args: &SoakArgs,
    rec: &mut Recorder,
    load: &Load,
    sidecar: &mut SidecarProcess,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let every = Duration::from_secs_f64(args.sample_secs);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while rec.t0.elapsed() < args.duration {
        tokio::select! {
            _ = cancel.cancelled() => bail!("interrupted (Ctrl-C) after {:.0} s", rec.t0.elapsed().as_secs_f64()),
            _ = tick.tick() => {}
        }
        if let Some(why) = sidecar.exited() {
            bail!("{why}");
        }
        rec.sample(load, args.sample_secs).await;
    }
    Ok(())
}

struct End {
    logs: Vec<ClientLog>,
    ran_s: f64,
}

/// Stops the players, gives each client its channel's stream head to catch up with (at
/// most 30 s, 5 s after Ctrl-C), then stops the clients and SIGTERMs the sidecar.
async fn finish(
    load: &mut Load,
    redis_url: &str,
    sidecar: &mut SidecarProcess,
    rec: &mut Recorder,
    args: &SoakArgs,
    cancel: &CancellationToken,
) -> End {
    let ran_s = rec.t0.elapsed().as_secs_f64();
    load.player_tasks.abort_all();
    match stream_heads(redis_url, &load.heads).await {
        Ok(heads) => {
            for ((_, tx), head) in load.heads.iter().zip(heads) {
                let _ = tx.send(Some(head));
            }
        }
        Err(e) => eprintln!("soak: no stream heads ({e:#}); the clients stop where they are"),
    }
    let limit = if cancel.is_cancelled() { 5 } else { 30 };
    let mut logs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(limit);
    loop {
        match tokio::time::timeout_at(deadline, load.clients.join_next()).await {
            Ok(Some(Ok(log))) => logs.push(log),
            Ok(Some(Err(_))) => {}
            Ok(None) => break,
            Err(_) => {
                // Time is up: the rest stop where they are.
                load.stop.cancel();
                while let Some(r) = load.clients.join_next().await {
                    logs.extend(r.ok());
                }
                break;
            }
        }
    }
    load.stop.cancel();
    rec.sample(load, args.sample_secs).await;
    sidecar.terminate();
    End { logs, ran_s }
}

/// Each channel's newest offset in Redis now.
async fn stream_heads(
    url: &str,
    heads: &[(String, watch::Sender<Option<Offset>>)],
) -> anyhow::Result<Vec<Offset>> {
    let settings = RedisSettings {
        url: url.into(),
        ..RedisSettings::default()
    };
    let bus = RedisBus::connect(&BusSettings { history: HISTORY }, &settings)?;
    let mut out = Vec::new();
    for (ch, _) in heads {
        out.push(bus.snapshot(ch).await?.offset);
    }
    Ok(out)
}

fn check_clients(
    streams: &[(String, Vec<Arc<shopcue::cuebus::CueRecord>>)],
    logs: &[ClientLog],
) -> Check {
    let mut total = Check::default();
    for (ch, records) in streams {
        let offsets: Vec<Offset> = records.iter().map(|r| r.offset).collect();
        for l in logs.iter().filter(|l| &l.channel == ch) {
            total += feed_clients::check(&offsets, l);
        }
    }
    total
}

struct Report {
    audit: Audit,
    check: Check,
    caught_up: usize,
    clients: usize,
    panics: u64,
    first_panic: Option<String>,
    exit: String,
    early: Option<String>,
    ran_s: f64,
    run_samples: usize,
}

fn print_report(args: &SoakArgs, rec: &Recorder, r: &Report, log: &Path) {
    let warmup = samples::warmup_s(r.ran_s);
    let trends = samples::trends(&rec.samples[..r.run_samples], warmup);
    println!(
        "\n### Soak: {:.0} min, {} channels with full analysis, {} feed clients (sessions {:.0}–{:.0} s, away ≤ {:.0} s), {} HLS players per channel\n",
        r.ran_s / 60.0,
        args.channels,
        args.clients,
        args.session_min_s,
        args.session_max_s,
        args.away_max_s,
        args.players
    );
    if let Some(why) = &r.early {
        println!("**Ended early: {why}**\n");
    }
    print_trends(&trends, warmup);
    // The last sample with the sidecar's figures (a scrape can fail).
    let last = rec.samples.iter().rev().find(|s| s.published.is_finite());
    print_totals(last, r);
    println!("\n{}", samples::scrape_summary(&rec.samples));
    println!(
        "\nSidecar exit: {}. Samples: {} ({} rows, {} failed /metrics scrapes). Sidecar log: {}",
        r.exit,
        rec.csv_path.display(),
        rec.samples.len(),
        rec.scrape_errors,
        log.display()
    );
    if let Some(p) = &r.first_panic {
        println!("First panic: {p}");
    }
}

fn print_trends(trends: &[TrendRow], warmup_s: f64) {
    println!(
        "Slopes: least squares over the samples after a {:.0} s warm-up (first 5 min or 20 % of the run, whichever is less).\n",
        warmup_s
    );
    println!(
        "| gauge | first | last | min | max | slope per hour | second half, per hour | flat if \\|slope\\| ≤ | verdict |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let per_h = |s: Option<f64>| s.map_or("–".into(), |s| format!("{s:+.1}"));
    for t in trends {
        let name = if t.unit.is_empty() {
            t.name.to_string()
        } else {
            format!("{} ({})", t.name, t.unit)
        };
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {:.0} | {} |",
            t.first,
            t.last,
            t.min,
            t.max,
            per_h(t.slope_per_h),
            per_h(t.late_slope_per_h),
            t.threshold_per_h,
            match t.verdict() {
                Some(Verdict::Flat) => "flat",
                Some(Verdict::Settled) => "settled (grew early, flat in the second half)",
                Some(Verdict::Growing) => "**growing**",
                Some(Verdict::Falling) => "**falling**",
                None => "–",
            }
        );
    }
}

fn print_totals(last: Option<&Sample>, r: &Report) {
    let s = last.cloned().unwrap_or_default();
    let (a, c) = (&r.audit, &r.check);
    println!(
        "\n| panics | restarts | cue events in streams | cues started / ended / lost / doubled | client events expected / received | gaps | dups | unknown | resume errors | (re)connects (failed) | caught up | playlists (err) | segments (err) | stalls | ingest seg errors | samples dropped | proxy errors |"
    );
    println!("|---:|---:|---:|---|---|---:|---:|---:|---:|---|---|---|---|---:|---:|---:|---:|");
    println!(
        "| {} | {:.0} | {} | {} / {} / {} / {} | {} / {} | {} | {} | {} | {} | {} ({}) | {} / {} | {} ({}) | {} ({}) | {} | {:.0} | {:.0} | {:.0} |",
        r.panics,
        s.restarts,
        a.events,
        a.started,
        a.ended,
        a.lost,
        a.doubled,
        c.expected,
        c.received,
        c.gaps,
        s.dups,
        c.unknown,
        s.resume_errors,
        s.connects,
        s.connect_errors,
        r.caught_up,
        r.clients,
        s.playlists,
        s.playlist_errors,
        s.segments,
        s.segment_errors,
        s.stalls,
        s.ingest_errors,
        s.samples_dropped,
        s.proxy_errors
    );
    println!(
        "\nGoal: RSS, fds, threads and tasks flat after the warm-up; 0 panics; 0 cues lost or doubled in the streams; 0 gaps and 0 dups at the clients."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2m30s"), Ok(Duration::from_secs(150)));
        for bad in ["", "m", "3x", "1h30", "0s", "-1m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
