//! `shopcue bench glass`: glass-to-cue latency of the running sidecar, measured where a
//! player would see it: from the wall clock of the frame whose sample produced a cue
//! event to the event's arrival at a WebSocket client.
//!
//! The source is live HLS through the whole sidecar (`Sidecar::start`, in this process)
//! with the grocery catalog:
//!
//! * **HLS**: the test origin serving grocery_shots.mp4 live in 2 s segments with PDT. A
//!   frame's wall clock is its PDT (capture time); its segment becomes available only when
//!   complete, so a frame waits up to one segment duration at the origin before anyone
//!   can fetch it. The table splits the total into that packaging wait (segment end −
//!   frame) and what follows (segment available → event received: playlist discovery,
//!   fetch, decode, shot look-ahead, inference, bus, WebSocket).
//!
//! * **LL-HLS**: the same origin and footage, 2 s segments published in parts of about
//!   0.5 s (`--part-secs`) with blocking playlist reloads: a frame waits for its part, not
//!   its segment. "Available" is then the end of the frame's part.
//!
//! SRT is not measured: its frames carry an arrival clock derived from the first frame's
//! arrival plus PTS, which is no glass clock (a first try gave negative latencies).
//!
//! The trigger frame of a `start`/`update` event is its newest box (`boxes[-1].t`).
//! Events of the first `--warmup` seconds are counted apart (the join fetches a segment or
//! part published before the channel started); the server-side mean includes them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use shopcue::config::{ChannelSettings, Settings};
use shopcue::file_origin::LiveOrigin;
use shopcue::sidecar::Sidecar;

#[derive(Debug, Clone, clap::Args)]
pub struct GlassArgs {
    /// Seconds of events to collect per source.
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// Catalog folder (built from the Grocery dataset when missing).
    #[arg(long, default_value = "data/demo-catalog")]
    pub catalog: PathBuf,
    #[arg(long, default_value = "data/footage/grocery_shots.mp4")]
    pub footage: PathBuf,
    /// The Grocery Store dataset, to build the catalog if needed.
    #[arg(long, default_value = "data/grocery")]
    pub dataset: PathBuf,
    /// LL-HLS part duration, seconds.
    #[arg(long, default_value_t = 0.5)]
    pub part_secs: f64,
    /// Events received within this many seconds of the sidecar's start are left out of
    /// the percentiles and counted apart: the join (a first segment or part published
    /// before the channel started, the first inference runs) is not the steady state.
    #[arg(long, default_value_t = 5.0)]
    pub warmup: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Row {
    pub source: String,
    pub events: usize,
    pub total_ms: Vec<f64>,
    /// Segment (LL-HLS: part) available at the origin → event received.
    pub after_available_ms: Vec<f64>,
    /// Server side: trigger frame → published on the bus (the metrics histogram's mean).
    pub server_mean_ms: Option<f64>,
    /// Events of the warm-up, left out of the percentiles above.
    pub warmup_ms: Vec<f64>,
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

/// Builds the demo catalog at `dir` unless one is there.
pub fn ensure_catalog(settings: &Settings, dir: &Path, dataset: &Path) -> anyhow::Result<()> {
    if dir.join("CURRENT").is_file() {
        return Ok(());
    }
    eprintln!("building the grocery catalog in {} ...", dir.display());
    let models = shopcue::inference::Models::load(&settings.inference).context("models")?;
    shopcue::catalog::grocery::build_catalog(&models, &settings.catalog, dataset, dir, None, true)?;
    Ok(())
}

fn time(v: &serde_json::Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Runs one sidecar on `url` and collects event latencies for `seconds`.
async fn measure(
    settings: &Settings,
    source: &str,
    url: String,
    (warmup, seconds): (f64, f64),
    origin: Option<Arc<LiveOrigin>>,
) -> anyhow::Result<Row> {
    let mut s = settings.clone();
    s.server.listen = "127.0.0.1:0".into();
    s.channels = vec![ChannelSettings {
        id: "bench".into(),
        url,
    }];
    s.validate()?;
    let cancel = CancellationToken::new();
    let sidecar = Sidecar::start(s, cancel.clone()).await?;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/channels/bench/cues", sidecar.addr))
            .await
            .context("websocket")?;
    let mut row = Row {
        source: source.to_string(),
        ..Row::default()
    };
    let started = tokio::time::Instant::now();
    let steady = started + Duration::from_secs_f64(warmup);
    let deadline = steady + Duration::from_secs_f64(seconds);
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, ws.next()).await {
        let Ok(Message::Text(text)) = msg else {
            continue;
        };
        let recv = Utc::now();
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if v["type"] != "start" && v["type"] != "update" {
            continue;
        }
        let Some(trigger) = v["cue"]["boxes"]
            .as_array()
            .and_then(|b| b.last())
            .and_then(|b| time(&b["t"]))
        else {
            continue;
        };
        let total_ms = (recv - trigger).num_microseconds().unwrap_or(0) as f64 / 1e3;
        if tokio::time::Instant::now() < steady {
            row.warmup_ms.push(total_ms);
            continue;
        }
        row.events += 1;
        row.total_ms.push(total_ms);
        // The origin publishes a segment (a part) at its end.
        if let Some(o) = &origin
            && let Some(available) = o.published_at(trigger)
        {
            row.after_available_ms
                .push((recv - available).num_microseconds().unwrap_or(0) as f64 / 1e3);
        }
    }
    let ch = sidecar.state.metrics.channel("bench");
    let (sum, count, _) = shopcue::metrics::histogram_parts(&ch.glass_to_cue_seconds);
    row.server_mean_ms = (count > 0).then(|| sum / count as f64 * 1e3);
    sidecar.shutdown().await?;
    Ok(row)
}

pub async fn run_bench(settings: &Settings, args: &GlassArgs) -> anyhow::Result<Vec<Row>> {
    let mut s = settings.clone();
    {
        let (s2, dir, dataset) = (s.clone(), args.catalog.clone(), args.dataset.clone());
        tokio::task::spawn_blocking(move || ensure_catalog(&s2, &dir, &dataset)).await??;
    }
    s.catalog.dir = args.catalog.display().to_string();
    let mut rows = Vec::new();

    // HLS, then LL-HLS: the test origin, 2 s segments, PDT (LL: and parts).
    for part_secs in [None, Some(args.part_secs)] {
        let origin = {
            let f = args.footage.clone();
            Arc::new(
                tokio::task::spawn_blocking(move || {
                    let o = LiveOrigin::from_file(&f, 2.0, 6, true)?;
                    match part_secs {
                        Some(p) => o.with_parts(p),
                        None => Ok(o),
                    }
                })
                .await??,
            )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let stop = CancellationToken::new();
        {
            let stop = stop.clone();
            tokio::spawn(shopcue::http::file_origin::serve(
                listener,
                origin.clone(),
                async move { stop.cancelled().await },
            ));
        }
        let source = match part_secs {
            None => "HLS, 2 s segments (test origin, PDT)".to_string(),
            Some(p) => format!("LL-HLS, 2 s segments in {p} s parts, blocking reload"),
        };
        eprintln!(
            "{source}: {} s after {} s of warm-up ...",
            args.seconds, args.warmup
        );
        rows.push(
            measure(
                &s,
                &source,
                format!("{base}/live/master.m3u8"),
                (args.warmup, args.seconds),
                Some(origin.clone()),
            )
            .await?,
        );
        stop.cancel();
    }

    println!("\n### Glass-to-cue latency (frame wall clock → WebSocket client)\n");
    println!(
        "| source | events | p50 ms | p95 ms | p99 ms | segment (LL: part) available → client p50 / p95 ms | server side (frame → bus) mean ms | first {} s: events left out, max ms |",
        args.warmup
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for r in &rows {
        let avail = if r.after_available_ms.is_empty() {
            "–".to_string()
        } else {
            format!(
                "{:.0} / {:.0}",
                pct(&r.after_available_ms, 50.0),
                pct(&r.after_available_ms, 95.0)
            )
        };
        let warm = match r.warmup_ms.iter().copied().reduce(f64::max) {
            Some(max) => format!("{}, {max:.0}", r.warmup_ms.len()),
            None => "0".to_string(),
        };
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} |",
            r.source,
            r.events,
            pct(&r.total_ms, 50.0),
            pct(&r.total_ms, 95.0),
            pct(&r.total_ms, 99.0),
            avail,
            r.server_mean_ms
                .map_or("–".to_string(), |m| format!("{m:.0}")),
            warm
        );
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_small_samples() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(pct(&v, 50.0), 3.0);
        assert_eq!(pct(&v, 100.0), 5.0);
        assert_eq!(pct(&v, 0.0), 1.0);
        assert!(pct(&[], 50.0).is_nan());
    }
}
