//! Fan-out benchmark: one channel's cues broadcast to N WebSocket subscribers, shopcue's
//! feed server against a Node.js server using the `ws` package (bench/node-ws/server.js),
//! in the same run, on the same machine, with the same load client and the same JSON.
//!
//! Each server runs as its own process (shopcue: this executable re-run with `--serve`;
//! Node: `node bench/node-ws/server.js`), prints `READY <ws port> <control port>`, and
//! broadcasts every line it receives on the control port (a cue event as JSON) to all
//! subscribers of `/v1/channels/bench/cues`. This process is the publisher and the load
//! client: it connects N subscribers, waits for each one's `hello`, then publishes M
//! events, each stamped with its send time (`cue.product.sent_ns`, ns since the bench
//! started), and every subscriber records `receive time - sent_ns`. The server's CPU time
//! comes from `/proc/<pid>/stat` over the publishing phase; its memory from `VmRSS`.
//!
//! Both servers and the load client share the machine's cores: read the numbers as a
//! comparison, not as absolute capacity. 10k subscribers need about 10k file descriptors
//! in this process and in the server (`ulimit -n`).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::{Notify, Semaphore, watch};

use shopcue::cue::{BoxSample, Cue, CueEvent};
use shopcue::cuebus::{CueBus, memory::MemoryBus};
use shopcue::http::feed::{self, FeedSettings, FeedState};

#[derive(clap::Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Subscriber counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub subscribers: Vec<usize>,
    /// Events published per run.
    #[arg(long, default_value_t = 100)]
    pub events: usize,
    /// Milliseconds between events.
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,
    /// Worker threads of the shopcue server.
    #[arg(long, default_value_t = 2)]
    pub server_threads: usize,
    /// Skip the Node.js `ws` server.
    #[arg(long)]
    pub no_node: bool,
    /// Folder of the Node server (after `npm ci` there).
    #[arg(long, default_value = "bench/node-ws")]
    pub node_dir: PathBuf,
    /// Internal: run as the shopcue side of the benchmark.
    #[arg(long, hide = true)]
    pub serve: bool,
}

impl Default for FanoutArgs {
    fn default() -> Self {
        Self {
            subscribers: vec![1000, 10_000],
            events: 100,
            interval_ms: 100,
            server_threads: 2,
            no_node: false,
            node_dir: "bench/node-ws".into(),
            serve: false,
        }
    }
}

/// One line of the result table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub server: String,
    pub subscribers: usize,
    pub connected: usize,
    pub connect_s: f64,
    pub events: usize,
    /// Messages received / (connected × events).
    pub delivered: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Server CPU seconds over the publishing phase, and that as % of one core.
    pub cpu_s: f64,
    pub cpu_pct: f64,
    pub rss_mib: f64,
    /// CPU seconds of this process (publisher + load client) over the same phase.
    pub client_cpu_s: f64,
}

/// Run the benchmark (or, with `--serve`, the shopcue server side of it) and print the
/// table. Builds its own tokio runtimes (on a thread of its own when called from async
/// code). The shopcue server is this executable re-run with the same arguments plus
/// `--serve`, so the command line that reaches this function must be the same in both.
pub fn run_bench(args: &FanoutArgs) -> anyhow::Result<Vec<Row>> {
    if tokio::runtime::Handle::try_current().is_ok() {
        // Called from async code: run on a thread of our own (a runtime cannot nest).
        let args = args.clone();
        return std::thread::spawn(move || run_bench(&args))
            .join()
            .map_err(|_| anyhow::anyhow!("fan-out bench thread panicked"))?;
    }
    if args.serve {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.server_threads.max(1))
            .enable_all()
            .build()?;
        rt.block_on(serve_shopcue())?;
        return Ok(Vec::new());
    }
    let need = args.subscribers.iter().copied().max().unwrap_or(0) + 256;
    if let Some(limit) = open_files_limit()
        && limit < need as u64
    {
        bail!(
            "open files limit is {limit}, the bench needs about {need}: run `ulimit -n {need}` first"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rows = rt.block_on(drive(args))?;
    println!("{}", table(&rows, args));
    Ok(rows)
}

/// The markdown table of a run.
pub fn table(rows: &[Row], args: &FanoutArgs) -> String {
    let mut s = format!(
        "Fan-out of one channel: {} events, one every {} ms, ~{} bytes each; shopcue server on {} worker thread(s)\n\n\
         | server | subscribers | connected (s) | delivered | p50 ms | p99 ms | max ms | server CPU s | CPU % of a core | RSS MiB | load client CPU s |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        args.events,
        args.interval_ms,
        event_line(0, 0).len(),
        args.server_threads
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} ({:.1}) | {:.2}% | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.2} |\n",
            r.server,
            r.subscribers,
            r.connected,
            r.connect_s,
            r.delivered * 100.0,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.cpu_s,
            r.cpu_pct,
            r.rss_mib,
            r.client_cpu_s
        ));
    }
    s
}

/// The shopcue server process: memory bus + feed, plus the control port.
async fn serve_shopcue() -> anyhow::Result<()> {
    let bus: Arc<dyn CueBus> = Arc::new(MemoryBus::new(10_000));
    let settings = FeedSettings {
        client_queue: 1024,
        max_connections: 50_000,
        ..FeedSettings::default()
    };
    let state = FeedState::new(bus.clone(), settings);
    let ws = TcpListener::bind("127.0.0.1:0").await?;
    let control = TcpListener::bind("127.0.0.1:0").await?;
    println!(
        "READY {} {}",
        ws.local_addr()?.port(),
        control.local_addr()?.port()
    );
    tokio::spawn(feed::serve(ws, state));
    tokio::spawn(async move {
        while let Ok((sock, _)) = control.accept().await {
            let bus = bus.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(sock).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<CueEvent>(&line) {
                        Ok(ev) => bus.publish(ev),
                        Err(e) => eprintln!("bad control line: {e}"),
                    }
                }
            });
        }
    });
    // Live as long as the parent: it holds our stdin.
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(_)) = stdin.next_line().await {}
    Ok(())
}

fn base() -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    base().elapsed().as_nanos() as u64
}

/// Event `i` of the run as a control line: cues go start, update ×3, end.
fn event_line(i: usize, sent_ns: u64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(1_795_000_000_000 + i as i64 * 100)
        .unwrap_or_default();
    let k = i / 5;
    let product_id = format!("sku-{:05}", k % 997);
    let cue = Cue {
        source: Default::default(),
        id: shopcue::cue::cue_id("bench", k as u64, &product_id),
        channel: "bench".into(),
        product_id,
        start: t,
        end: (i % 5 == 4).then_some(t),
        pts: i as f64 * 0.1,
        score: 0.87,
        shot: k as u64,
        boxes: (0..3)
            .map(|j| BoxSample {
                t,
                x: 0.1 + j as f32 * 0.05,
                y: 0.2,
                w: 0.25,
                h: 0.3,
            })
            .collect(),
        product: Some(serde_json::json!({
            "title": "Stainless steel espresso machine, 15 bar",
            "price": "249.00", "currency": "EUR",
            "url": "https://shop.example/p/espresso-15",
            "sent_ns": sent_ns,
        })),
    };
    let ev = match i % 5 {
        0 => CueEvent::Start(cue),
        4 => CueEvent::End(cue),
        _ => CueEvent::Update(cue),
    };
    serde_json::to_string(&ev).unwrap_or_default()
}

fn sent_ns(text: &str) -> Option<u64> {
    let at = text.find("\"sent_ns\":")? + "\"sent_ns\":".len();
    let digits: &str = &text[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

struct Server {
    name: String,
    child: Child,
    ws_port: u16,
    control_port: u16,
}

async fn start_server(kind: &str, args: &FanoutArgs) -> anyhow::Result<Server> {
    let mut cmd = if kind == "shopcue" {
        let exe = std::env::current_exe().context("finding this executable")?;
        let mut c = Command::new(exe);
        c.args(std::env::args_os().skip(1)).arg("--serve");
        c
    } else {
        let script = args.node_dir.join("server.js");
        if !args.node_dir.join("node_modules/ws").is_dir() {
            bail!(
                "{} has no node_modules/ws: run `npm ci` there (scripts/setup.sh bench)",
                args.node_dir.display()
            );
        }
        let mut c = Command::new("node");
        c.arg(script);
        c
    };
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting the {kind} server"))?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .with_context(|| format!("{kind} server did not report READY in 30 s"))??
        .with_context(|| format!("{kind} server exited before READY"))?;
    let mut parts = line.split_whitespace();
    let (Some("READY"), Some(ws), Some(control)) = (parts.next(), parts.next(), parts.next())
    else {
        bail!("{kind} server said `{line}` instead of READY <port> <port>");
    };
    Ok(Server {
        name: if kind == "shopcue" {
            "shopcue (Rust, axum)".into()
        } else {
            "Node.js ws".into()
        },
        child,
        ws_port: ws.parse()?,
        control_port: control.parse()?,
    })
}

async fn drive(args: &FanoutArgs) -> anyhow::Result<Vec<Row>> {
    base();
    let mut rows = Vec::new();
    for &n in &args.subscribers {
        let mut kinds = vec!["shopcue"];
        if !args.no_node {
            kinds.push("node");
        }
        for kind in kinds {
            let server = start_server(kind, args).await?;
            let row = measure(server, n, args).await?;
            eprintln!("{row:?}");
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Process CPU time (user + system) in seconds from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15 (1-based).
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// One row: `n` subscribers connect to `server`, `args.events` events are published
/// through its control port, and the latencies, CPU and memory are measured.
async fn measure(mut server: Server, n: usize, args: &FanoutArgs) -> anyhow::Result<Row> {
    let pid = server.child.id().context("server pid")?;
    let url = format!("ws://127.0.0.1:{}/v1/channels/bench/cues", server.ws_port);
    let ready = Arc::new(Ready::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let handshakes = Arc::new(Semaphore::new(128));
    let started = Instant::now();
    let clients: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(subscribe(
                url.clone(),
                args.events,
                ready.clone(),
                stop_rx.clone(),
                handshakes.clone(),
            ))
        })
        .collect();
    let connected = ready.wait_for(n).await;
    let connect_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let rss = super::capacity::procfs::rss_mib_of(Some(pid)).unwrap_or(f64::NAN);
    let cpu0 = cpu_seconds(pid).unwrap_or(f64::NAN);
    let me = std::process::id();
    let client0 = cpu_seconds(me).unwrap_or(f64::NAN);
    let t0 = Instant::now();
    publish(server.control_port, args).await?;
    let (mut lat, end) = collect(clients, pid, t0, &stop_tx, args).await;
    let _ = stop_tx.send(true);
    let cpu_s = end.server_cpu_s.unwrap_or(f64::NAN) - cpu0;
    let _ = server.child.kill().await;
    lat.sort_unstable();
    Ok(Row {
        server: server.name,
        subscribers: n,
        connected,
        connect_s,
        events: args.events,
        delivered: lat.len() as f64 / (connected.max(1) * args.events) as f64,
        p50_ms: quantile_ms(&lat, 0.5),
        p99_ms: quantile_ms(&lat, 0.99),
        max_ms: quantile_ms(&lat, 1.0),
        cpu_s,
        cpu_pct: 100.0 * cpu_s / end.elapsed.max(1e-9),
        rss_mib: rss,
        client_cpu_s: end.client_cpu_s.unwrap_or(f64::NAN) - client0,
    })
}

/// Subscribers that got their hello, and a note each time one does.
#[derive(Default)]
struct Ready {
    count: AtomicUsize,
    note: Notify,
}

impl Ready {
    /// Wait until `n` subscribers are ready (or give up after a minute); how many are.
    async fn wait_for(&self, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.count.load(Ordering::Relaxed) < n && Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(200), self.note.notified()).await;
        }
        self.count.load(Ordering::Relaxed)
    }
}

/// One subscriber: connect (at most 128 handshakes at once, 5 tries), then note each
/// event's latency in microseconds until `expected` came or `stop` is sent.
async fn subscribe(
    url: String,
    expected: usize,
    ready: Arc<Ready>,
    mut stop: watch::Receiver<bool>,
    handshakes: Arc<Semaphore>,
) -> Vec<u32> {
    let mut lat_us: Vec<u32> = Vec::with_capacity(expected);
    let ws = {
        let _permit = handshakes.acquire().await;
        let mut got = None;
        for _ in 0..5 {
            let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .read_buffer_size(8192);
            if let Ok((ws, _)) =
                tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true).await
            {
                got = Some(ws);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        got
    };
    let Some(mut ws) = ws else { return lat_us };
    let mut hello = false;
    loop {
        tokio::select! {
            m = ws.next() => {
                let Some(Ok(m)) = m else { break };
                if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
                    if !hello {
                        hello = true;
                        ready.count.fetch_add(1, Ordering::Relaxed);
                        ready.note.notify_one();
                    }
                    if let Some(sent) = sent_ns(t.as_str()) {
                        lat_us.push((now_ns().saturating_sub(sent) / 1000).min(u32::MAX as u64) as u32);
                        if lat_us.len() >= expected {
                            break;
                        }
                    }
                }
            }
            _ = stop.changed() => break,
        }
    }
    lat_us
}

/// Publish `args.events` events through the server's control port, one per interval.
async fn publish(control_port: u16, args: &FanoutArgs) -> anyhow::Result<()> {
    let mut control = TcpStream::connect(("127.0.0.1", control_port)).await?;
    control.set_nodelay(true)?;
    let mut tick = tokio::time::interval(Duration::from_millis(args.interval_ms));
    for i in 0..args.events {
        tick.tick().await;
        let mut line = event_line(i, now_ns());
        line.push('\n');
        control.write_all(line.as_bytes()).await?;
    }
    Ok(())
}

/// CPU readings when publishing was over (or time was up), and the seconds since `t0`.
struct MeasureEnd {
    server_cpu_s: Option<f64>,
    client_cpu_s: Option<f64>,
    elapsed: f64,
}

impl MeasureEnd {
    fn now(pid: u32, t0: Instant) -> Self {
        Self {
            server_cpu_s: cpu_seconds(pid),
            client_cpu_s: cpu_seconds(std::process::id()),
            elapsed: t0.elapsed().as_secs_f64(),
        }
    }
}

/// Let the last event arrive everywhere (bounded), then stop the stragglers and keep what
/// they got: every subscriber's latencies, and the CPU read when that was done.
async fn collect(
    clients: Vec<tokio::task::JoinHandle<Vec<u32>>>,
    pid: u32,
    t0: Instant,
    stop_tx: &watch::Sender<bool>,
    args: &FanoutArgs,
) -> (Vec<u32>, MeasureEnd) {
    let settle = Duration::from_millis(args.interval_ms * 10).max(Duration::from_secs(5));
    let done_by = Instant::now() + settle;
    let mut lat: Vec<u32> = Vec::with_capacity(clients.len() * args.events);
    let mut end = None;
    for mut c in clients {
        if end.is_none() {
            let left = done_by.saturating_duration_since(Instant::now());
            if let Ok(joined) = tokio::time::timeout(left, &mut c).await {
                lat.extend(joined.unwrap_or_default());
                continue;
            }
            // Time is up: read the CPU now, then stop the stragglers.
            end = Some(MeasureEnd::now(pid, t0));
            let _ = stop_tx.send(true);
        }
        lat.extend(c.await.unwrap_or_default());
    }
    let end = end.unwrap_or_else(|| MeasureEnd::now(pid, t0));
    (lat, end)
}

/// The `p` quantile of sorted latencies in microseconds, as milliseconds (NaN for none).
fn quantile_ms(lat: &[u32], p: f64) -> f64 {
    if lat.is_empty() {
        return f64::NAN;
    }
    let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
    lat[i.min(lat.len() - 1)] as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_carry_their_send_time() {
        let line = event_line(7, 123_456_789);
        let ev: CueEvent = serde_json::from_str(&line).unwrap();
        assert_eq!(ev.kind(), "update");
        assert_eq!(sent_ns(&line), Some(123_456_789));
        assert!(matches!(
            serde_json::from_str::<CueEvent>(&event_line(4, 0)).unwrap(),
            CueEvent::End(_)
        ));
        assert_eq!(sent_ns("{\"x\":1}"), None);
    }
}
