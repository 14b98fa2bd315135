//! `shopcue bench hls`: requests/s and latency of the sidecar's rewritten playlists under
//! load (`wrk`), side by side with nginx serving the very same playlist bytes as static
//! files, in the same run.
//!
//! The channel: a multivariant playlist and `variants` live media playlists (a window of
//! `segments` 2-s segments, `EXT-X-PROGRAM-DATE-TIME` on each, an origin date range) served
//! by nginx (Debian `nginx-light`, started on a loopback port with a configuration
//! generated in a temporary folder), which is also the sidecar's origin. A cue every other
//! segment is in the sidecar's ledger, so each rewritten media playlist carries several
//! `EXT-X-DATERANGE`s. wrk (Debian `wrk`) rotates over the media playlists with a Lua
//! script. Three rows: nginx serving the sidecar's rewritten bytes as static files; the
//! sidecar with its short playlist cache (what players of a live channel see: half a
//! target duration, so at most one origin fetch and rewrite per second per playlist); the
//! sidecar with the cache off (an origin fetch and a full rewrite per request).
//!
//! Every child process (nginx in its own process group, wrk) has a deadline and is killed
//! on every exit path, the sidecar's runtime is shut down with a timeout, and every HTTP
//! request has a timeout: nothing here can hang.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};

use shopcue::config::{ChannelSettings, Settings};
use shopcue::cue::{BoxSample, Cue, CueEvent};
use shopcue::http::proxy::{self, HlsState};
use shopcue::ingest::hls::Fetcher;
use shopcue::progress::AnalysisProgress;

#[derive(clap::Args, Debug, Clone)]
pub struct HlsBenchArgs {
    /// Seconds of load per row.
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
    /// wrk connections.
    #[arg(long, default_value_t = 32)]
    pub connections: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 1)]
    pub wrk_threads: u32,
    /// nginx worker processes = sidecar runtime worker threads.
    #[arg(long, default_value_t = 1)]
    pub server_workers: usize,
    /// Segments in each live media playlist's window.
    #[arg(long, default_value_t = 8)]
    pub segments: usize,
    /// Variant (media) playlists of the channel.
    #[arg(long, default_value_t = 4)]
    pub variants: usize,
}

impl Default for HlsBenchArgs {
    fn default() -> Self {
        Self {
            seconds: 10,
            connections: 32,
            wrk_threads: 1,
            server_workers: 1,
            segments: 8,
            variants: 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub server: String,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub response_bytes: usize,
    pub errors: u64,
    /// Origin fetches the sidecar made during the row's load (None for nginx).
    pub origin_fetches: Option<u64>,
}

fn epoch() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

const FIRST_MSN: u64 = 1000;
const RENDITIONS: [(&str, u32, &str); 6] = [
    ("1080p", 6_000_000, "1920x1080"),
    ("720p", 3_000_000, "1280x720"),
    ("540p", 1_800_000, "960x540"),
    ("360p", 900_000, "640x360"),
    ("240p", 500_000, "426x240"),
    ("144p", 250_000, "256x144"),
];

fn segment_start(msn: u64) -> DateTime<Utc> {
    epoch() + chrono::TimeDelta::milliseconds((msn * 2000) as i64)
}

/// A live media playlist: `n` 2-s segments from `FIRST_MSN`, PDT on each, an origin date
/// range in the middle (kept as is by the rewriter).
pub fn media_playlist(variant: &str, n: usize) -> String {
    let mut s = format!(
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{FIRST_MSN}\n"
    );
    for i in 0..n as u64 {
        let msn = FIRST_MSN + i;
        let pdt = shopcue::frame::rfc3339_ms(&segment_start(msn));
        if i == n as u64 / 2 {
            s.push_str(&format!(
                "#EXT-X-DATERANGE:ID=\"origin-{msn}\",START-DATE=\"{pdt}\",X-COM-EXAMPLE-CHAPTER=\"2\"\n"
            ));
        }
        s.push_str(&format!(
            "#EXT-X-PROGRAM-DATE-TIME:{pdt}\n#EXTINF:2.000,\n{variant}/seg{msn}.ts\n"
        ));
    }
    s
}

/// The multivariant playlist of the first `variants` renditions.
pub fn multivariant_playlist(variants: usize) -> String {
    let mut s = String::from("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for (name, bw, res) in RENDITIONS.iter().take(variants) {
        s.push_str(&format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={bw},RESOLUTION={res},CODECS=\"avc1.64001f,mp4a.40.2\"\n{name}.m3u8\n"
        ));
    }
    s
}

/// One cue every other segment (closed, 1.5 s, a box each), as the cue bus would feed.
fn cues(segments: usize) -> Vec<Cue> {
    (0..segments as u64)
        .step_by(2)
        .map(|i| {
            let start = segment_start(FIRST_MSN + i) + chrono::TimeDelta::milliseconds(500);
            Cue {
                source: Default::default(),
                id: shopcue::cue::cue_id("bench", i, "sku-42"),
                channel: "bench".into(),
                product_id: format!("sku-{i}"),
                start,
                end: Some(start + chrono::TimeDelta::milliseconds(1500)),
                pts: i as f64 * 2.0,
                score: 0.75,
                shot: i,
                boxes: vec![BoxSample {
                    t: start,
                    x: 0.1,
                    y: 0.2,
                    w: 0.3,
                    h: 0.4,
                }],
                product: None,
            }
        })
        .collect()
}

/// A child process killed (with its whole process group) when dropped: every exit path.
struct Guarded {
    child: Child,
    what: &'static str,
}

impl Guarded {
    fn spawn(mut cmd: Command, what: &'static str) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt;
        // A group of its own: nginx's workers are killed with their master.
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {what} (Debian package; scripts/setup.sh bench)"))?;
        Ok(Self { child, what })
    }

    /// Waits up to `limit` for the process to exit; killed (group) past it.
    fn wait_for(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!(
                    "{} did not finish within {:.0} s",
                    self.what,
                    limit.as_secs_f64()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal_group(&self, sig: libc::c_int) {
        if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) takes plain integers; a negative pid names the process group
            // that `process_group(0)` gave this child (its own pid), nothing else.
            unsafe {
                libc::kill(-pgid, sig);
            }
        }
    }

    fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            // The leader is gone; its group may not be (orphaned workers).
            self.signal_group(libc::SIGKILL);
            return;
        }
        // Graceful first (nginx: fast shutdown of master and workers), then by force.
        self.signal_group(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal_group(libc::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Nginx {
    _process: Guarded,
    port: u16,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn set_mode(p: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Writes `files` (relative path → body) under the served root, readable by the workers.
fn write_files(root: &Path, files: &[(String, String)]) -> anyhow::Result<()> {
    for (rel, body) in files {
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
            set_mode(parent, 0o755)?;
        }
        std::fs::write(&p, body)?;
        set_mode(&p, 0o644)?;
    }
    Ok(())
}

fn start_nginx(workers: usize) -> anyhow::Result<Nginx> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root)?;
    // Workers run as `nobody` when started as root: let them read the files.
    for p in [dir.path(), &root] {
        set_mode(p, 0o755)?;
    }
    let port = free_port()?;
    let d = dir.path().display();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes {workers};\npid {d}/nginx.pid;\n\
         error_log {d}/error.log error;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;\n\
           keepalive_requests 1000000;\n  open_file_cache max=64 inactive=60s;\n\
           types {{ application/vnd.apple.mpegurl m3u8; }}\n\
           client_body_temp_path {d}/cb; proxy_temp_path {d}/pt; fastcgi_temp_path {d}/ft;\n\
           uwsgi_temp_path {d}/ut; scgi_temp_path {d}/st;\n\
           server {{ listen 127.0.0.1:{port}; root {root}; add_header Cache-Control no-cache; }}\n}}\n",
        root = root.display(),
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-e")
        .arg(dir.path().join("error.log"))
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut process = Guarded::spawn(cmd, "nginx")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(Nginx {
                _process: process,
                port,
                root,
                _dir: dir,
            });
        }
        if let Some(status) = process.child.try_wait()? {
            let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            bail!("nginx exited ({status}) before listening: {log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nginx did not start listening on 127.0.0.1:{port} within 10 s")
}

/// Milliseconds from a wrk figure (`812.00us`, `1.20ms`, `2.00s`).
fn wrk_ms(v: &str) -> Option<f64> {
    let v = v.trim();
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60e3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * scale)
}

/// Requests/s, p50 and p99 (ms) and non-2xx/socket errors from `wrk --latency` output.
pub fn parse_wrk(out: &str) -> Option<(f64, f64, f64, u64)> {
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    let mut errors = 0u64;
    for l in out.lines() {
        let t = l.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = t.strip_prefix("50%") {
            p50 = wrk_ms(v);
        } else if let Some(v) = t.strip_prefix("99%") {
            p99 = wrk_ms(v);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    Some((rps?, p50?, p99?, errors))
}

/// A wrk Lua script sending GETs for `paths` in turn (each connection starts elsewhere).
fn rotate_script(paths: &[String]) -> String {
    let list: Vec<String> = paths.iter().map(|p| format!("{p:?}")).collect();
    format!(
        "local paths = {{ {} }}\nlocal i = math.random(#paths)\n\
         request = function()\n  i = i % #paths + 1\n  return wrk.format(\"GET\", paths[i])\nend\n",
        list.join(", ")
    )
}

fn run_wrk(base: &str, script: &Path, args: &HlsBenchArgs) -> anyhow::Result<(f64, f64, f64, u64)> {
    let dir = tempfile::tempdir()?;
    let out_path = dir.path().join("wrk.out");
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{}", args.wrk_threads.max(1)))
        .arg(format!("-c{}", args.connections.max(1)))
        .arg(format!("-d{}s", args.seconds.max(1)))
        .arg("--timeout")
        .arg("2s")
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(base)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(Stdio::null());
    let mut wrk = Guarded::spawn(cmd, "wrk")?;
    let status = wrk.wait_for(Duration::from_secs(u64::from(args.seconds) + 20))?;
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    anyhow::ensure!(status.success(), "wrk failed ({status}): {text}");
    parse_wrk(&text).with_context(|| format!("unreadable wrk output: {text}"))
}

fn get_text(rt: &tokio::runtime::Runtime, url: &str) -> anyhow::Result<String> {
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()?;
        let r = client.get(url).send().await?;
        anyhow::ensure!(r.status().is_success(), "{url}: HTTP {}", r.status());
        Ok(r.text().await?)
    })
}

/// The sidecar serving the channel from `origin_base`, its runtime, and its stop token.
struct Sidecar {
    rt: Option<tokio::runtime::Runtime>,
    state: HlsState,
    base: String,
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

fn start_sidecar(origin_base: &str, args: &HlsBenchArgs) -> anyhow::Result<Sidecar> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_workers.max(1))
        .enable_all()
        .build()?;
    let settings = Settings {
        channels: vec![ChannelSettings {
            id: "bench".into(),
            url: format!("{origin_base}/live/master.m3u8"),
        }],
        ..Default::default()
    };
    let mut progress = HashMap::new();
    progress.insert("bench".to_string(), Arc::new(AnalysisProgress::default()));
    let state = HlsState::new(
        &settings.channels,
        &settings.manifest,
        &settings.ingest,
        Fetcher::new()?,
        &progress,
    )?;
    let ch = state
        .channel("bench")
        .context("the bench channel is not served")?;
    for cue in cues(args.segments) {
        ch.apply(&CueEvent::End(cue));
    }
    let _guard = rt.enter();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    rt.spawn(proxy::serve(listener, state.clone(), async move {
        s.cancelled().await
    }));
    drop(_guard);
    Ok(Sidecar {
        rt: Some(rt),
        state,
        base: format!("http://{addr}"),
        stop,
    })
}

/// Runs the three rows in turn under the same load; prints the table and returns the rows.
/// Builds its own runtimes (on a thread of its own when called from async code).
pub fn run_bench(args: &HlsBenchArgs) -> anyhow::Result<Vec<Row>> {
    if tokio::runtime::Handle::try_current().is_ok() {
        let args = args.clone();
        return std::thread::spawn(move || run_bench(&args))
            .join()
            .map_err(|_| anyhow::anyhow!("hls bench thread panicked"))?;
    }
    let variants = args.variants.clamp(1, RENDITIONS.len());
    let names: Vec<&str> = RENDITIONS.iter().take(variants).map(|r| r.0).collect();
    let nginx = start_nginx(args.server_workers.max(1))?;
    let origin_base = format!("http://127.0.0.1:{}", nginx.port);
    let mut origin_files = vec![(
        "live/master.m3u8".to_string(),
        multivariant_playlist(variants),
    )];
    for n in &names {
        origin_files.push((format!("live/{n}.m3u8"), media_playlist(n, args.segments)));
    }
    write_files(&nginx.root, &origin_files)?;

    let sidecar = start_sidecar(&origin_base, args)?;
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The sidecar's rewritten playlists, checked, then served by nginx as static files.
    let mut static_files = Vec::new();
    let mut bytes = 0usize;
    for n in &names {
        let text = get_text(&client_rt, &format!("{}/hls/bench/{n}.m3u8", sidecar.base))?;
        let cues = text.matches("#EXT-X-DATERANGE:").count();
        anyhow::ensure!(
            cues > 1 && text.contains("#EXT-X-PROGRAM-DATE-TIME"),
            "the sidecar's {n} playlist lacks cues or PDT:\n{text}"
        );
        bytes += text.len();
        static_files.push((format!("static/{n}.m3u8"), text));
    }
    write_files(&nginx.root, &static_files)?;
    let mean_bytes = bytes / names.len().max(1);
    for (rel, body) in &static_files {
        let served = get_text(&client_rt, &format!("{origin_base}/{rel}"))?;
        anyhow::ensure!(&served == body, "nginx serves other bytes for {rel}");
    }

    let script_dir = tempfile::tempdir()?;
    let script = |prefix: &str, file: &str| -> anyhow::Result<PathBuf> {
        let paths: Vec<String> = names.iter().map(|n| format!("{prefix}/{n}.m3u8")).collect();
        let p = script_dir.path().join(file);
        std::fs::write(&p, rotate_script(&paths))?;
        Ok(p)
    };
    let static_script = script("/static", "static.lua")?;
    let sidecar_script = script("/hls/bench", "sidecar.lua")?;

    let fetches = || sidecar.state.stats().origin_fetches.load(Ordering::Relaxed);
    let mut rows = Vec::new();
    let (rps, p50, p99, errors) = run_wrk(&origin_base, &static_script, args)?;
    rows.push(Row {
        server: "nginx 1.22 (static files)".into(),
        requests_per_s: rps,
        p50_ms: p50,
        p99_ms: p99,
        response_bytes: mean_bytes,
        errors,
        origin_fetches: None,
    });
    for (name, cache) in [
        ("shopcue /hls (rewritten, cache on)", true),
        ("shopcue /hls (rewritten, cache off)", false),
    ] {
        sidecar.state.set_playlist_cache(cache);
        let before = fetches();
        let (rps, p50, p99, errors) = run_wrk(&sidecar.base, &sidecar_script, args)?;
        rows.push(Row {
            server: name.into(),
            requests_per_s: rps,
            p50_ms: p50,
            p99_ms: p99,
            response_bytes: mean_bytes,
            errors,
            origin_fetches: Some(fetches() - before),
        });
    }
    sidecar.state.set_playlist_cache(true);
    drop(sidecar);
    drop(nginx);
    println!("{}", table(&rows, args));
    Ok(rows)
}

pub fn table(rows: &[Row], args: &HlsBenchArgs) -> String {
    let mut s = format!(
        "Media playlist requests over loopback: wrk -t{} -c{} -d{}s --latency, rotating over {} \
         variants; {} worker(s) per server; live window of {} segments with PDT and {} cues\n\n\
         | server | wrk threads/connections | requests/s | p50 ms | p99 ms | errors | bytes | origin fetches | % of nginx |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
        args.wrk_threads,
        args.connections,
        args.seconds,
        args.variants.clamp(1, RENDITIONS.len()),
        args.server_workers,
        args.segments,
        args.segments.div_ceil(2),
    );
    let base = rows.first().map(|r| r.requests_per_s).unwrap_or(0.0);
    for r in rows {
        let pct = if base > 0.0 {
            100.0 * r.requests_per_s / base
        } else {
            0.0
        };
        s.push_str(&format!(
            "| {} | {}/{} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {:.0}% |\n",
            r.server,
            args.wrk_threads,
            args.connections,
            r.requests_per_s,
            r.p50_ms,
            r.p99_ms,
            r.errors,
            r.response_bytes,
            r.origin_fetches.map_or("-".into(), |f| f.to_string()),
            pct
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let out = "Running 10s test @ http://127.0.0.1:1/\n  2 threads and 32 connections\n\
  Latency Distribution\n     50%  412.00us\n     75%  1.02ms\n     90%    1.50ms\n     99%    3.20ms\n\
  120000 requests in 10.00s, 50.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n\
  Non-2xx or 3xx responses: 4\nRequests/sec:  12000.50\nTransfer/sec:      5.00MB\n";
        let (rps, p50, p99, errors) = parse_wrk(out).unwrap();
        assert_eq!(rps, 12000.5);
        assert!((p50 - 0.412).abs() < 1e-9);
        assert_eq!(p99, 3.2);
        assert_eq!(errors, 7);
        assert_eq!(wrk_ms("2.00s"), Some(2000.0));
        assert_eq!(wrk_ms("1.50m"), Some(90_000.0));
        assert!(parse_wrk("garbage").is_none());
    }

    #[test]
    fn playlists_and_script_are_what_the_bench_serves() {
        let p = media_playlist("720p", 8);
        assert_eq!(p.matches("#EXTINF").count(), 8);
        assert_eq!(p.matches("#EXT-X-PROGRAM-DATE-TIME:").count(), 8);
        assert!(p.contains("720p/seg1007.ts"));
        let m = multivariant_playlist(4);
        assert_eq!(m.matches("#EXT-X-STREAM-INF").count(), 4);
        assert_eq!(cues(8).len(), 4);
        let s = rotate_script(&["/a.m3u8".into(), "/b.m3u8".into()]);
        assert!(
            s.contains("local paths = { \"/a.m3u8\", \"/b.m3u8\" }"),
            "{s}"
        );
    }

    /// The whole bench, briefly: three rows without errors, back within a deadline (the
    /// first attempt hung). Skipped where nginx or wrk is not installed.
    #[test]
    fn short_run_finishes_with_three_clean_rows() {
        let have = |bin: &str| {
            Command::new(bin)
                .arg("-v")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        };
        if !have("nginx") || !have("wrk") {
            eprintln!("skipped: nginx or wrk missing (scripts/setup.sh bench)");
            return;
        }
        let args = HlsBenchArgs {
            seconds: 1,
            connections: 4,
            ..Default::default()
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(run_bench(&args).map_err(|e| format!("{e:#}")));
        });
        let rows = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the bench finishes")
            .unwrap();
        assert_eq!(rows.len(), 3);
        assert!(
            rows.iter().all(|r| r.errors == 0 && r.requests_per_s > 0.0),
            "{rows:?}"
        );
        assert!(
            rows.iter()
                .all(|r| r.response_bytes == rows[0].response_bytes)
        );
        // Cache on: a handful of origin fetches; off: one per request.
        assert!(rows[1].origin_fetches < rows[2].origin_fetches, "{rows:?}");
    }

    /// A child that would outlive its deadline is killed, with its process group.
    #[test]
    fn guarded_children_are_killed_at_the_deadline() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30"]);
        let mut g = Guarded::spawn(cmd, "sleep").unwrap();
        let pgid = g.child.id() as libc::pid_t;
        let started = Instant::now();
        assert!(g.wait_for(Duration::from_millis(200)).is_err());
        assert!(started.elapsed() < Duration::from_secs(10));
        let deadline = Instant::now() + Duration::from_secs(5);
        while running_in_group(pgid) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(running_in_group(pgid), 0, "the whole group is gone");
    }

    /// Processes of group `pgid` that are not zombies (a container's init may not reap).
    fn running_in_group(pgid: libc::pid_t) -> usize {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return 0;
        };
        dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
            .filter(|stat| {
                let Some((_, rest)) = stat.rsplit_once(") ") else {
                    return false;
                };
                let f: Vec<&str> = rest.split_whitespace().collect();
                f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string()
            })
            .count()
    }
}
