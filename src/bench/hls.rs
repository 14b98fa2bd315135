//! `shopcue bench hls`: requests/s and latency of the sidecar's rewritten playlists under
//! load (`wrk`), side by side with nginx serving the same origin playlist as a static
//! file, in the same run. nginx (Debian `nginx-light`) is started on a loopback port with
//! a temporary configuration and doubles as the sidecar's origin; the sidecar serves the
//! rewritten playlist (PDT anchors and cues added) from its short-lived cache, which is
//! what players hitting a live channel see. Both servers get the same worker count.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};

use crate::config::{ChannelSettings, Settings};
use crate::cue::{BoxSample, Cue, CueEvent};
use crate::http::hls::{self, HlsState};
use crate::ingest::hls::Fetcher;
use crate::ingest::progress::AnalysisProgress;

#[derive(Debug, Clone)]
pub struct HlsBenchArgs {
    /// Seconds of load per server.
    pub seconds: u32,
    /// wrk connections.
    pub connections: u32,
    /// wrk threads.
    pub wrk_threads: u32,
    /// nginx worker processes = sidecar runtime worker threads.
    pub server_workers: usize,
    /// Segments in the origin playlist.
    pub segments: usize,
}

impl Default for HlsBenchArgs {
    fn default() -> Self {
        Self {
            seconds: 10,
            connections: 32,
            wrk_threads: 2,
            server_workers: 2,
            segments: 10,
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
}

fn epoch() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

const FIRST_MSN: u64 = 1000;

struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_nginx(playlist: &str, workers: usize) -> anyhow::Result<Nginx> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("www");
    std::fs::create_dir_all(root.join("live"))?;
    std::fs::write(root.join("live/index.m3u8"), playlist)?;
    // Workers may run as `nobody`: let them read the files.
    for p in [dir.path(), &root, &root.join("live")] {
        set_mode(p, 0o755)?;
    }
    set_mode(&root.join("live/index.m3u8"), 0o644)?;
    let port = free_port()?;
    let conf = format!(
        "daemon off;\nworker_processes {workers};\npid {dir}/nginx.pid;\nerror_log stderr error;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n\
           types {{ application/vnd.apple.mpegurl m3u8; }}\n\
           client_body_temp_path {dir}/cb; proxy_temp_path {dir}/pt; fastcgi_temp_path {dir}/ft;\n\
           uwsgi_temp_path {dir}/ut; scgi_temp_path {dir}/st;\n\
           server {{ listen 127.0.0.1:{port}; root {root}; add_header Cache-Control no-cache; }}\n}}\n",
        dir = dir.path().display(),
        root = root.display(),
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::File::create(&conf_path)?.write_all(conf.as_bytes())?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf_path)
        .arg("-p")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting nginx (Debian package nginx-light; scripts/setup.sh bench)")?;
    let n = Nginx {
        child,
        _dir: dir,
        port,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(n);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nginx did not start listening on 127.0.0.1:{port}")
}

fn set_mode(p: &std::path::Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Milliseconds from a wrk figure (`812.00us`, `1.20ms`, `2.00s`).
fn wrk_ms(v: &str) -> Option<f64> {
    let v = v.trim();
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
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

fn run_wrk(url: &str, args: &HlsBenchArgs) -> anyhow::Result<(f64, f64, f64, u64)> {
    let out = Command::new("wrk")
        .arg(format!("-t{}", args.wrk_threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.seconds))
        .arg("--latency")
        .arg(url)
        .output()
        .context("running wrk (Debian package wrk; scripts/setup.sh bench)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).with_context(|| format!("unreadable wrk output: {text}"))
}

fn blocking_get(url: &str) -> anyhow::Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let r = reqwest::get(url).await?;
        anyhow::ensure!(r.status().is_success(), "{url}: HTTP {}", r.status());
        Ok(r.text().await?)
    })
}

/// Runs both servers in turn under the same load; prints the table and returns the rows.
/// Builds its own runtimes (on a thread of its own when called from async code).
pub fn run_bench(args: &HlsBenchArgs) -> anyhow::Result<Vec<Row>> {
    if tokio::runtime::Handle::try_current().is_ok() {
        let args = args.clone();
        return std::thread::spawn(move || run_bench(&args))
            .join()
            .map_err(|_| anyhow::anyhow!("hls bench thread panicked"))?;
    }
    let playlist = super::manifest::synthetic_playlist(args.segments.max(1), FIRST_MSN);
    let nginx = start_nginx(&playlist, args.server_workers.max(1))?;
    let origin_url = format!("http://127.0.0.1:{}/live/index.m3u8", nginx.port);

    // The sidecar, in a runtime of its own with the same worker count as nginx.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_workers.max(1))
        .enable_all()
        .build()?;
    let settings = Settings {
        channels: vec![ChannelSettings {
            id: "bench".into(),
            url: origin_url.clone(),
        }],
        ..Default::default()
    };
    let progress = Arc::new(AnalysisProgress::default());
    for i in 0..args.segments as u64 {
        progress.record(
            FIRST_MSN + i,
            epoch() + chrono::TimeDelta::milliseconds(((FIRST_MSN + i) * 2000) as i64),
        );
    }
    let mut map = HashMap::new();
    map.insert("bench".to_string(), progress);
    let state = HlsState::new(&settings, Fetcher::new()?, &map)?;
    if let Some(ch) = state.channel("bench") {
        for i in (0..args.segments as u64).step_by(2) {
            let start =
                epoch() + chrono::TimeDelta::milliseconds(((FIRST_MSN + i) * 2000 + 500) as i64);
            let cue = Cue {
                id: crate::cue::cue_id("bench", i, "sku-42"),
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
            };
            ch.apply(&CueEvent::End(cue));
        }
    }
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    rt.spawn(hls::serve(listener, state.clone(), async move {
        s.cancelled().await
    }));
    let sidecar_url = format!("http://{addr}/hls/bench/index.m3u8");

    let static_body = blocking_get(&origin_url)?;
    let rewritten = blocking_get(&sidecar_url)?;
    anyhow::ensure!(
        rewritten.contains("#EXT-X-DATERANGE") && rewritten.contains("#EXT-X-PROGRAM-DATE-TIME"),
        "the sidecar's playlist lacks cues or PDT:\n{rewritten}"
    );

    let mut rows = Vec::new();
    for (name, url, bytes) in [
        ("nginx (static file)", &origin_url, static_body.len()),
        ("shopcue /hls (rewritten)", &sidecar_url, rewritten.len()),
    ] {
        let (rps, p50, p99, errors) = run_wrk(url, args)?;
        rows.push(Row {
            server: name.into(),
            requests_per_s: rps,
            p50_ms: p50,
            p99_ms: p99,
            response_bytes: bytes,
            errors,
        });
    }
    let st = state.stats();
    let fetches = st.origin_fetches.load(std::sync::atomic::Ordering::Relaxed);
    stop.cancel();
    drop(rt);
    drop(nginx);
    println!("{}", table(&rows, args, fetches));
    Ok(rows)
}

pub fn table(rows: &[Row], args: &HlsBenchArgs, origin_fetches: u64) -> String {
    let mut s = format!(
        "Playlist requests over loopback: wrk -t{} -c{} -d{}s --latency; {} worker(s) per server; \
         {}-segment live playlist\n\n\
         | server | requests/s | p50 ms | p99 ms | response bytes | errors | % of nginx |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        args.wrk_threads, args.connections, args.seconds, args.server_workers, args.segments
    );
    let base = rows.first().map(|r| r.requests_per_s).unwrap_or(0.0);
    for r in rows {
        let pct = if base > 0.0 {
            100.0 * r.requests_per_s / base
        } else {
            0.0
        };
        s.push_str(&format!(
            "| {} | {:.0} | {:.2} | {:.2} | {} | {} | {:.0}% |\n",
            r.server, r.requests_per_s, r.p50_ms, r.p99_ms, r.response_bytes, r.errors, pct
        ));
    }
    s.push_str(&format!(
        "\nOrigin fetches by the sidecar during the run: {origin_fetches} (cache: half a target duration)\n"
    ));
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
        assert!(parse_wrk("garbage").is_none());
    }
}
