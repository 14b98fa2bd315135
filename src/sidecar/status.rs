//! What an operator sees: readiness, the status document (`GET /v1/status`, read by the
//! dashboard) and its recent history, and the once-a-second sampler that copies figures
//! kept as plain counters into the Prometheus metrics.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::supervise::Phase;
use super::{ChannelRuntime, SidecarState};
use crate::http::feed::FeedStats;
use crate::ingest::ChannelState;
use crate::metrics::{Metrics, histogram_quantile};
use crate::redact::redact_url;

/// Points kept per channel: ten minutes at one a second.
pub const HISTORY_POINTS: usize = 600;

/// One second of one channel, for the dashboard's charts.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Milliseconds since the epoch.
    pub t: i64,
    pub state: &'static str,
    pub lag_s: Option<f64>,
    pub decode_fps: f64,
    pub realtime_factor: Option<f64>,
    pub fetch_ms: f64,
    pub decode_ms: f64,
    pub analysis_ms: f64,
    pub samples_per_s: f64,
    pub dropped_per_s: f64,
    pub cues_per_s: f64,
    /// Mean glass-to-cue latency of the cue events of the last 10 s.
    pub glass_to_cue_ms: Option<f64>,
    pub subscribers: u64,
}

/// Recent points per channel (bounded: [`HISTORY_POINTS`] each, oldest dropped).
#[derive(Debug, Default)]
pub struct History {
    points: Mutex<HashMap<String, VecDeque<Point>>>,
}

impl History {
    fn push(&self, channel: &str, p: Point) {
        let mut g = self.points.lock().unwrap_or_else(|p| p.into_inner());
        let q = g.entry(channel.to_string()).or_default();
        q.push_back(p);
        while q.len() > HISTORY_POINTS {
            q.pop_front();
        }
    }

    /// Points of every channel newer than `since_ms`.
    pub fn since(&self, since_ms: i64) -> HashMap<String, Vec<Point>> {
        let g = self.points.lock().unwrap_or_else(|p| p.into_inner());
        g.iter()
            .map(|(k, q)| {
                (
                    k.clone(),
                    q.iter().filter(|p| p.t > since_ms).cloned().collect(),
                )
            })
            .collect()
    }
}

fn state_name(s: ChannelState) -> &'static str {
    match s {
        ChannelState::Starting => "starting",
        ChannelState::Up => "up",
        ChannelState::Degraded => "degraded",
        ChannelState::Stalled => "stalled",
        ChannelState::Down => "down",
        ChannelState::Ended => "ended",
    }
}

/// A channel's state as operators see it: the supervisor's while it waits to retry or
/// has stopped, else the ingest's.
pub fn channel_state(rt: &ChannelRuntime) -> &'static str {
    match rt.supervision.phase() {
        Phase::Retrying { .. } => "retrying",
        Phase::Stopped => "stopped",
        Phase::Ended => "ended",
        Phase::Running => state_name(rt.ingest_stats().state()),
    }
}

/// The newest error of a channel: the one that ended its last attempt, or one its
/// running source reported since.
fn last_error(rt: &ChannelRuntime) -> Option<(chrono::DateTime<Utc>, String)> {
    let attempt = rt.supervision.last_error();
    let source = rt.ingest_stats().last_error();
    match (attempt, source) {
        (Some(a), Some(s)) => Some(if s.0 > a.0 { s } else { a }),
        (a, s) => a.or(s),
    }
}

/// The supervisor's part of a channel's status.
fn supervisor_json(rt: &ChannelRuntime) -> Value {
    let next_attempt = match rt.supervision.phase() {
        Phase::Retrying { next_attempt } => Some(next_attempt),
        _ => None,
    };
    json!({
        "restarts": rt.supervision.restarts(),
        "next_attempt": next_attempt,
        "attempt_error": rt.supervision.last_error().map(|(at, message)| json!({"at": at, "message": message})),
    })
}

/// Ready when the bus is healthy and every channel is up (or degraded but running).
pub fn readiness(st: &SidecarState) -> Result<(), Vec<String>> {
    let mut reasons = Vec::new();
    if !st.bus.stats().healthy {
        reasons.push(format!("cue bus ({}) unreachable", st.bus.kind()));
    }
    for rt in st.channels.list().iter() {
        match channel_state(rt) {
            "up" | "degraded" => {}
            s => reasons.push(format!("channel {} is {s}", rt.id)),
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

fn ms(h: &prometheus_client::metrics::histogram::Histogram, q: f64) -> Option<f64> {
    histogram_quantile(h, q).map(|s| (s * 1e5).round() / 100.0)
}

/// The status document.
pub fn status(st: &SidecarState) -> Value {
    let feed = st.feed.stats();
    let bus = st.bus.stats();
    let channels: Vec<Value> = st
        .channels
        .list()
        .iter()
        .map(|rt| {
            let m = &rt.metrics;
            let ingest = rt.ingest_stats();
            let pipeline = rt.pipeline_stats().map(|p| p.snapshot());
            let l = |f: fn(&crate::ingest::ChannelStats) -> u64| f(ingest);
            let last_error =
                last_error(rt).map(|(at, message)| json!({"at": at, "message": message}));
            let hls = st.hls.channel(&rt.id);
            json!({
                "id": rt.id,
                "url": redact_url(&rt.url),
                "state": channel_state(rt),
                "last_error": last_error,
                "restarts": rt.supervision.restarts(),
                "supervisor": supervisor_json(rt),
                "lag_s": ingest.lag_seconds(),
                "decode_fps": m.decode_fps.get(),
                "realtime_factor": ingest.realtime_factor(),
                "segments": {
                    "fetched": l(|s| s.segments_fetched.load(Ordering::Relaxed)),
                    "bad": l(|s| s.segments_bad.load(Ordering::Relaxed)),
                    "lost": l(|s| s.segments_lost.load(Ordering::Relaxed)),
                    "skipped": l(|s| s.segments_skipped.load(Ordering::Relaxed)),
                    "behind": l(|s| s.segments_behind.load(Ordering::Relaxed)),
                },
                "playlist_errors": l(|s| s.playlist_errors.load(Ordering::Relaxed)),
                "frames": {
                    "decoded": l(|s| s.frames.load(Ordering::Relaxed)),
                    "dropped": l(|s| s.frames_dropped.load(Ordering::Relaxed)),
                },
                "pipeline": pipeline,
                "latency_ms": {
                    "fetch_p50": ms(&m.segment_fetch_seconds, 0.5),
                    "fetch_p95": ms(&m.segment_fetch_seconds, 0.95),
                    "decode_p50": ms(&m.segment_decode_seconds, 0.5),
                    "decode_p95": ms(&m.segment_decode_seconds, 0.95),
                    "detect_p50": ms(&m.detect_seconds, 0.5),
                    "embed_p50": ms(&m.embed_seconds, 0.5),
                    "search_p50": ms(&m.search_seconds, 0.5),
                    "analysis_p50": ms(&m.analysis_seconds, 0.5),
                    "analysis_p95": ms(&m.analysis_seconds, 0.95),
                    "glass_to_cue_p50": ms(&m.glass_to_cue_seconds, 0.5),
                    "glass_to_cue_p95": ms(&m.glass_to_cue_seconds, 0.95),
                    "glass_to_cue_p99": ms(&m.glass_to_cue_seconds, 0.99),
                },
                "holdback_delay_ms": hls.as_ref().map(|h| h.holdback_delay_ms.load(Ordering::Relaxed)),
                "analysed_msn": rt.progress.highest_analysed(),
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started": st.started,
        "uptime_s": (Utc::now() - st.started).num_seconds(),
        "ready": readiness(st).err().unwrap_or_default(),
        "bus": bus,
        "bus_kind": st.bus.kind(),
        "feed": {
            "clients": feed.connected,
            "accepted": feed.accepted,
            "events_sent": feed.events_sent,
            "slow_closed": feed.slow_closed,
            "rejected_full": feed.rejected_full,
            "rejected_auth": feed.rejected_auth,
            "rejected_channels": feed.rejected_channels,
            "channels": feed.channels,
            "bad_messages": feed.bad_messages,
            "oversized_closed": feed.oversized_closed,
            "protocol_closed": feed.protocol_closed,
        },
        "catalog": st.catalog.as_ref().map(|c| {
            let m = c.manifest();
            json!({"products": c.snapshot().len(), "vectors": c.snapshot().vectors(), "embedder": m.embedder})
        }),
        "providers": st.providers.iter().map(|(m, p)| json!({"model": m, "provider": p})).collect::<Vec<_>>(),
        "fleet": st.fleet.get().map(|k| k.view()),
        "channels": channels,
    })
}

/// Per channel, what the previous tick saw.
#[derive(Default, Clone, Copy)]
struct Prev {
    frames: u64,
    samples: u64,
    dropped: u64,
    cues: u64,
}

/// Once a second: copy counters into the metrics and append a history point per channel.
pub async fn sample_every_second(st: std::sync::Arc<SidecarState>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sampler = Sampler::default();
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let dt = last.elapsed().as_secs_f64().max(1e-3);
        last = Instant::now();
        let feed = st.feed.stats();
        sync_feed_metrics(&st.metrics, &feed);
        sync_bus_metrics(&st);
        sync_hls_metrics(&st);
        sync_fleet_metrics(&st);
        // Tasks alive on the runtime: flat over hours unless something leaks tasks.
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        st.metrics.set_gauge("tokio_tasks", tasks as f64);
        let now_ms = Utc::now().timestamp_millis();
        for rt in st.channels.list().iter() {
            let point = sampler.sample(&st.metrics, rt, dt, now_ms, feed.connected);
            st.history.push(&rt.id, point);
        }
    }
}

/// The WebSocket feed's counters, into the metrics.
fn sync_feed_metrics(m: &Metrics, feed: &FeedStats) {
    m.set_gauge("websocket_clients", feed.connected as f64);
    m.sync_counter("websocket_connections", feed.accepted);
    m.sync_counter("websocket_events_sent", feed.events_sent);
    m.sync_counter("websocket_slow_closed", feed.slow_closed);
    m.sync_counter(
        "websocket_rejected",
        feed.rejected_full + feed.rejected_auth + feed.rejected_channels,
    );
    m.set_gauge("websocket_channels", feed.channels as f64);
    m.sync_counter("websocket_bad_messages", feed.bad_messages);
    m.sync_counter(
        "websocket_abuse_closed",
        feed.oversized_closed + feed.protocol_closed,
    );
}

/// The cue bus's health and counters, into the metrics.
fn sync_bus_metrics(st: &SidecarState) {
    let m = &st.metrics;
    let bus = st.bus.stats();
    m.set_gauge("bus_healthy", f64::from(u8::from(bus.healthy)));
    m.set_gauge("bus_buffered", bus.buffered as f64);
    m.sync_counter("bus_published", bus.published);
    m.sync_counter("bus_stored", bus.stored);
    m.sync_counter("bus_dropped", bus.dropped);
    m.sync_counter("bus_rejected", bus.rejected);
    m.sync_counter("bus_reconnects", bus.reconnects);
}

/// The fleet keeper's view, into the metrics: `fleet_channels_held` is what an HPA on
/// channels per analyser scales on (deploy/k8s/hpa.yaml).
fn sync_fleet_metrics(st: &SidecarState) {
    let Some(view) = st.fleet.get().map(|k| k.view()) else {
        return;
    };
    let m = &st.metrics;
    m.set_gauge("fleet_channels_held", view.held.len() as f64);
    m.set_gauge("fleet_channels_registered", view.channels as f64);
    m.set_gauge("fleet_live_pods", view.live_pods.len() as f64);
    m.sync_counter("fleet_claims", view.claims);
    m.sync_counter("fleet_hand_overs", view.hand_overs);
    m.sync_counter("fleet_leases_lost", view.lost);
}

/// The HLS proxy's counters, into the metrics.
fn sync_hls_metrics(st: &SidecarState) {
    let hs = st.hls.stats();
    for (name, counter) in [
        ("hls_playlist_requests", &hs.playlist_requests),
        ("hls_segments_proxied", &hs.segments_proxied),
        ("hls_origin_errors", &hs.origin_errors),
        ("hls_fetches_refused", &hs.fetches_refused),
        ("hls_client_query_ignored", &hs.client_query_ignored),
        ("hls_segment_fetches", &hs.segment_fetches),
        ("hls_segment_cache_hits", &hs.segment_cache_hits),
    ] {
        st.metrics
            .sync_counter(name, counter.load(Ordering::Relaxed));
    }
}

/// What the sampler remembers of each channel between ticks.
#[derive(Default)]
struct Sampler {
    prev: HashMap<String, Prev>,
    /// (time, sum, count) of each channel's glass-to-cue histogram, for a 10 s window.
    glass_window: HashMap<String, VecDeque<(Instant, f64, u64)>>,
}

impl Sampler {
    /// One channel's second (`dt` seconds since the last tick): its counters into the
    /// metrics, and its history point.
    fn sample(
        &mut self,
        m: &Metrics,
        rt: &ChannelRuntime,
        dt: f64,
        now_ms: i64,
        subscribers: u64,
    ) -> Point {
        let glass_to_cue_ms = self.glass_to_cue_ms(rt);
        let cm = &rt.metrics;
        let state = channel_state(rt);
        m.set_channel_state(&rt.id, state);
        let p = self.prev.entry(rt.id.clone()).or_default();
        let ingest = rt.ingest_stats();
        let pipe = rt
            .pipeline_stats()
            .map(|s| s.snapshot())
            .unwrap_or_default();
        let frames = ingest.frames.load(Ordering::Relaxed);
        crate::metrics::catch_up(
            &cm.frames_dropped,
            ingest.frames_dropped.load(Ordering::Relaxed),
        );
        crate::metrics::catch_up(&cm.evidence_dropped, rt.evidence.forgotten());
        let fps = frames.saturating_sub(p.frames) as f64 / dt;
        cm.decode_fps.set(fps);
        let lag = ingest.lag_seconds();
        cm.lag_seconds.set(lag.unwrap_or(0.0));
        let rtf = ingest.realtime_factor();
        cm.realtime_factor.set(rtf.unwrap_or(0.0));
        for (kind, v) in [
            ("fetched", &ingest.segments_fetched),
            ("bad", &ingest.segments_bad),
            ("lost", &ingest.segments_lost),
            ("skipped", &ingest.segments_skipped),
        ] {
            m.sync_segments(&rt.id, kind, v.load(Ordering::Relaxed));
        }
        let point = Point {
            t: now_ms,
            state,
            lag_s: lag,
            decode_fps: (fps * 10.0).round() / 10.0,
            realtime_factor: rtf,
            fetch_ms: ingest.last_fetch_us.load(Ordering::Relaxed) as f64 / 1000.0,
            decode_ms: ingest.last_decode_us.load(Ordering::Relaxed) as f64 / 1000.0,
            analysis_ms: pipe.last_analysis_ms,
            samples_per_s: pipe.samples.saturating_sub(p.samples) as f64 / dt,
            dropped_per_s: pipe.samples_dropped.saturating_sub(p.dropped) as f64 / dt,
            cues_per_s: pipe.cue_events.saturating_sub(p.cues) as f64 / dt,
            glass_to_cue_ms,
            subscribers,
        };
        *p = Prev {
            frames,
            samples: pipe.samples,
            dropped: pipe.samples_dropped,
            cues: pipe.cue_events,
        };
        point
    }

    /// Mean glass-to-cue of channel `rt` over the last 10 s: its histogram's growth in
    /// that window (None when no cue came).
    fn glass_to_cue_ms(&mut self, rt: &ChannelRuntime) -> Option<f64> {
        let (g_sum, g_count, _) = crate::metrics::histogram_parts(&rt.metrics.glass_to_cue_seconds);
        let w = self.glass_window.entry(rt.id.clone()).or_default();
        w.push_back((Instant::now(), g_sum, g_count));
        while w
            .front()
            .is_some_and(|(t, _, _)| t.elapsed() > Duration::from_secs(10))
        {
            w.pop_front();
        }
        w.front().and_then(|(_, s0, c0)| {
            (g_count > *c0).then(|| (g_sum - s0) / (g_count - c0) as f64 * 1000.0)
        })
    }
}
