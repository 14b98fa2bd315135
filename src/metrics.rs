//! Prometheus metrics: the process's one registry (the only `prometheus-client` user).
//!
//! Every figure an operator needs is here, per channel (label `channel`) and per stage:
//! segment fetch and decode latency, lag behind the live edge, decode frames/s, frames and
//! inference samples dropped, shots, inference latency per model, FAISS search latency,
//! cues emitted, glass-to-cue latency, WebSocket clients and messages, the cue bus (Redis)
//! health and the execution provider in use. Stages observe into the handles of
//! [`ChannelMetrics`] directly; figures kept elsewhere as plain counters (feed, bus,
//! ingest) are copied in by the sidecar's once-a-second sampler ([`Metrics::sync_counter`]).
//! `GET /metrics` serves [`Metrics::encode`] (OpenMetrics text).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A gauge holding an `f64`.
pub type FGauge = Gauge<f64, AtomicU64>;

/// Buckets (seconds) of stage latencies: 1 ms … 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0,
];
/// Buckets (seconds) of glass-to-cue latency: 100 ms … 30 s, every 250 ms from 0.5 to 4 s
/// where live HLS cues land, so a quantile read from them is within 250 ms there (before,
/// one bucket spanned 3 to 4 s, right where `bench capacity`'s latency rule sits).
const GLASS_BUCKETS: [f64; 22] = [
    0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5, 3.75, 4.0,
    5.0, 7.5, 10.0, 15.0, 30.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn glass_histogram() -> Histogram {
    Histogram::new(GLASS_BUCKETS)
}

type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    pub channel: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub channel: String,
    pub model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub channel: String,
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub channel: String,
    pub state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    pub model: String,
    pub provider: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabel {
    pub name: String,
}

/// Every state a channel can be in, as `/v1/status` and the state gauge name them.
pub const CHANNEL_STATES: [&str; 8] = [
    "starting", "up", "degraded", "stalled", "down", "retrying", "stopped", "ended",
];

/// The registry and every metric family.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    segment_fetch: HistFamily<ChannelLabel>,
    segment_decode: HistFamily<ChannelLabel>,
    lag: Family<ChannelLabel, FGauge>,
    decode_fps: Family<ChannelLabel, FGauge>,
    realtime_factor: Family<ChannelLabel, FGauge>,
    channel_state: Family<StateLabel, Gauge>,
    restarts: Family<ChannelLabel, Counter>,
    frames: Family<ChannelLabel, Counter>,
    dropped: Family<KindLabel, Counter>,
    segments: Family<KindLabel, Counter>,
    shots: Family<ChannelLabel, Counter>,
    samples: Family<ChannelLabel, Counter>,
    samples_reused: Family<ChannelLabel, Counter>,
    regions_reused: Family<ChannelLabel, Counter>,
    regions_first_view: Family<ChannelLabel, Counter>,
    inference: HistFamily<ModelLabel>,
    search: HistFamily<ChannelLabel>,
    analysis: HistFamily<ChannelLabel>,
    inference_errors: Family<ChannelLabel, Counter>,
    cues: Family<KindLabel, Counter>,
    cues_suppressed: Family<KindLabel, Counter>,
    glass_to_cue: HistFamily<ChannelLabel>,
    discovered_to_cue: HistFamily<ChannelLabel>,
    segment_discovery: HistFamily<ChannelLabel>,
    segment_discovery_last: Family<ChannelLabel, FGauge>,
    /// Process-wide gauges and counters by name (feed, bus, HTTP).
    gauges: Family<NameLabel, FGauge>,
    counters: Family<NameLabel, Counter>,
    provider: Family<ProviderLabel, Gauge>,
}

/// One channel's handles (clones share the registry's values).
#[derive(Debug, Clone)]
pub struct ChannelMetrics {
    pub channel: String,
    pub segment_fetch_seconds: Histogram,
    pub segment_decode_seconds: Histogram,
    pub lag_seconds: FGauge,
    pub decode_fps: FGauge,
    pub realtime_factor: FGauge,
    /// Attempts the channel's supervisor started after a failure.
    pub restarts: Counter,
    pub frames: Counter,
    /// Sampled frames dropped because inference was busy (drop-oldest queue).
    pub samples_dropped: Counter,
    /// Frames of a live (SRT) source dropped because the channel's frame queue was full.
    pub frames_dropped: Counter,
    /// Cues whose evidence (for operator feedback) was forgotten to stay within
    /// `matching.evidence_cues`.
    pub evidence_dropped: Counter,
    pub shots: Counter,
    pub samples: Counter,
    /// Sampled frames that reused the last analysis of their shot (change gate).
    pub samples_reused: Counter,
    /// Regions of analysed samples that reused an embedding (change gate).
    pub regions_reused: Counter,
    /// Regions of analysed samples embedded by their first view alone, too far from any
    /// product to become a cue (`catalog.query_views_floor_margin`).
    pub regions_first_view: Counter,
    pub detect_seconds: Histogram,
    pub embed_seconds: Histogram,
    pub search_seconds: Histogram,
    /// One sampled frame, detect + embed + search.
    pub analysis_seconds: Histogram,
    pub inference_errors: Counter,
    pub cues_started: Counter,
    pub cues_updated: Counter,
    pub cues_ended: Counter,
    /// Confident sightings that started no cue, by why: `sibling`, `max_cues`,
    /// `cooldown`, `repeat` (running totals of the channel's cue builder).
    pub cues_suppressed: [(&'static str, Counter); 4],
    /// Wall clock of the frame whose sample produced a cue event → the event published.
    pub glass_to_cue_seconds: Histogram,
    /// The same less the channel's latest [`Self::segment_discovery_last_seconds`]: the
    /// frame's wait for the end of its segment plus the sidecar's share, without the reload
    /// phase.
    pub discovered_to_cue_seconds: Histogram,
    /// A segment's end by the origin's clock (EXT-X-PROGRAM-DATE-TIME + duration) → the
    /// playlist load that first listed it completed.
    pub segment_discovery_seconds: Histogram,
    /// The latest of those, seconds.
    pub segment_discovery_last_seconds: FGauge,
}

impl ChannelMetrics {
    /// A new segment was found `secs` after its end by the origin's clock.
    pub fn observe_segment_discovery(&self, secs: f64) {
        let secs = secs.max(0.0);
        self.segment_discovery_seconds.observe(secs);
        self.segment_discovery_last_seconds.set(secs);
    }

    /// A cue event published `secs` after the wall clock of its trigger frame.
    pub fn observe_cue_latency(&self, secs: f64) {
        let secs = secs.max(0.0);
        self.glass_to_cue_seconds.observe(secs);
        let found = self.segment_discovery_last_seconds.get();
        self.discovered_to_cue_seconds
            .observe((secs - found).max(0.0));
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("shopcue");
        let m = Self {
            segment_fetch: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            segment_decode: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            lag: Family::default(),
            decode_fps: Family::default(),
            realtime_factor: Family::default(),
            channel_state: Family::default(),
            restarts: Family::default(),
            frames: Family::default(),
            dropped: Family::default(),
            segments: Family::default(),
            shots: Family::default(),
            samples: Family::default(),
            samples_reused: Family::default(),
            regions_reused: Family::default(),
            regions_first_view: Family::default(),
            inference: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            search: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            analysis: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            inference_errors: Family::default(),
            cues: Family::default(),
            cues_suppressed: Family::default(),
            glass_to_cue: Family::new_with_constructor(glass_histogram as fn() -> Histogram),
            discovered_to_cue: Family::new_with_constructor(glass_histogram as fn() -> Histogram),
            segment_discovery: Family::new_with_constructor(glass_histogram as fn() -> Histogram),
            segment_discovery_last: Family::default(),
            gauges: Family::default(),
            counters: Family::default(),
            provider: Family::default(),
            registry: Registry::default(),
        };
        m.register_ingest(&mut registry);
        m.register_analysis(&mut registry);
        m.register_cues(&mut registry);
        m.register_process(&mut registry);
        Self { registry, ..m }
    }

    /// Per channel, its ingest: fetch and decode latencies, lag, rate, state, restarts,
    /// frames, drops and segment outcomes.
    fn register_ingest(&self, r: &mut Registry) {
        r.register(
            "segment_fetch_seconds",
            "Time to fetch one media segment from the origin",
            self.segment_fetch.clone(),
        );
        r.register(
            "segment_decode_seconds",
            "Time to decode one media segment to analysis frames",
            self.segment_decode.clone(),
        );
        r.register(
            "lag_seconds",
            "How far the newest decoded frame is behind the origin's live edge",
            self.lag.clone(),
        );
        r.register(
            "decode_fps",
            "Frames decoded per second of wall time",
            self.decode_fps.clone(),
        );
        r.register(
            "realtime_factor",
            "Decode time per second of media (below 1 keeps up)",
            self.realtime_factor.clone(),
        );
        r.register(
            "channel_state",
            "1 for the channel's current state (starting, up, degraded, stalled, down, retrying, stopped, ended)",
            self.channel_state.clone(),
        );
        r.register(
            "channel_restarts",
            "Times the channel's supervisor restarted it after a failure or panic",
            self.restarts.clone(),
        );
        r.register("frames", "Frames decoded", self.frames.clone());
        r.register(
            "dropped",
            "Items dropped by bounded queues, by kind (samples: inference busy; frames: analysis behind; evidence: feedback evidence of old cues)",
            self.dropped.clone(),
        );
        r.register(
            "segments",
            "Media segments by outcome (fetched, bad, lost, skipped)",
            self.segments.clone(),
        );
        r.register(
            "segment_discovery_seconds",
            "A segment's end by the origin's clock (PROGRAM-DATE-TIME + duration) to the playlist load that first listed it: the origin's packaging and the playlist-reload phase",
            self.segment_discovery.clone(),
        );
        r.register(
            "segment_discovery_last_seconds",
            "The latest segment_discovery_seconds observation",
            self.segment_discovery_last.clone(),
        );
    }

    /// Per channel, its analysis: shots, samples (and reuse), inference and search.
    fn register_analysis(&self, r: &mut Registry) {
        r.register("shots", "Shot changes found", self.shots.clone());
        r.register("samples", "Frames sent to inference", self.samples.clone());
        r.register(
            "samples_reused",
            "Sampled frames that barely changed since the last analysed one of their shot and reused its result (matching.change_gate)",
            self.samples_reused.clone(),
        );
        r.register(
            "regions_reused",
            "Regions (detections, whole picture) of analysed samples whose crop did not change since the previous analysed sample of the shot and reused its embedding",
            self.regions_reused.clone(),
        );
        r.register(
            "regions_first_view",
            "Regions of analysed samples embedded by their first view alone: too far from every product to become a cue (catalog.query_views_floor_margin)",
            self.regions_first_view.clone(),
        );
        r.register(
            "inference_seconds",
            "Inference latency per model and sampled frame",
            self.inference.clone(),
        );
        r.register(
            "search_seconds",
            "FAISS catalog search latency per sampled frame",
            self.search.clone(),
        );
        r.register(
            "analysis_seconds",
            "Detect, embed and search one sampled frame",
            self.analysis.clone(),
        );
        r.register(
            "inference_errors",
            "Sampled frames inference failed on",
            self.inference_errors.clone(),
        );
    }

    /// Per channel, its cues: events, suppressions and glass-to-cue latency.
    fn register_cues(&self, r: &mut Registry) {
        r.register("cues", "Cue events emitted, by kind", self.cues.clone());
        r.register(
            "cues_suppressed",
            "Confident sightings that started no cue, by kind: sibling, max_cues, cooldown, repeat",
            self.cues_suppressed.clone(),
        );
        r.register(
            "glass_to_cue_seconds",
            "Wall clock of the sampled frame to its cue event published",
            self.glass_to_cue.clone(),
        );
        r.register(
            "discovered_to_cue_seconds",
            "Glass-to-cue less the channel's latest segment discovery delay: the frame's wait for the end of its segment plus the sidecar's share, without the playlist-reload phase",
            self.discovered_to_cue.clone(),
        );
    }

    /// Process-wide: named gauges and counters, and each model's execution provider.
    fn register_process(&self, r: &mut Registry) {
        r.register(
            "gauge",
            "Process-wide gauges: websocket_clients, bus_healthy, bus_buffered, ...",
            self.gauges.clone(),
        );
        r.register(
            "events",
            "Process-wide counters: websocket_events_sent, websocket_slow_closed, bus_dropped, ...",
            self.counters.clone(),
        );
        r.register(
            "execution_provider",
            "1 for the execution provider each model runs on",
            self.provider.clone(),
        );
    }

    /// The handles of one channel (created on first use).
    pub fn channel(&self, id: &str) -> ChannelMetrics {
        let c = ChannelLabel {
            channel: id.to_string(),
        };
        let model = |m: &str| ModelLabel {
            channel: id.to_string(),
            model: m.to_string(),
        };
        let kind = |k: &str| KindLabel {
            channel: id.to_string(),
            kind: k.to_string(),
        };
        // One statement per handle: a family's guard lives to the end of its statement.
        let segment_fetch_seconds = self.segment_fetch.get_or_create(&c).clone();
        let segment_decode_seconds = self.segment_decode.get_or_create(&c).clone();
        let lag_seconds = self.lag.get_or_create(&c).clone();
        let decode_fps = self.decode_fps.get_or_create(&c).clone();
        let realtime_factor = self.realtime_factor.get_or_create(&c).clone();
        let frames = self.frames.get_or_create(&c).clone();
        let restarts = self.restarts.get_or_create(&c).clone();
        let samples_dropped = self.dropped.get_or_create(&kind("samples")).clone();
        let frames_dropped = self.dropped.get_or_create(&kind("frames")).clone();
        let evidence_dropped = self.dropped.get_or_create(&kind("evidence")).clone();
        let shots = self.shots.get_or_create(&c).clone();
        let samples = self.samples.get_or_create(&c).clone();
        let samples_reused = self.samples_reused.get_or_create(&c).clone();
        let regions_reused = self.regions_reused.get_or_create(&c).clone();
        let regions_first_view = self.regions_first_view.get_or_create(&c).clone();
        let detect_seconds = self.inference.get_or_create(&model("detector")).clone();
        let embed_seconds = self.inference.get_or_create(&model("embedder")).clone();
        let search_seconds = self.search.get_or_create(&c).clone();
        let analysis_seconds = self.analysis.get_or_create(&c).clone();
        let inference_errors = self.inference_errors.get_or_create(&c).clone();
        let cues_started = self.cues.get_or_create(&kind("start")).clone();
        let cues_updated = self.cues.get_or_create(&kind("update")).clone();
        let cues_ended = self.cues.get_or_create(&kind("end")).clone();
        let glass_to_cue_seconds = self.glass_to_cue.get_or_create(&c).clone();
        let discovered_to_cue_seconds = self.discovered_to_cue.get_or_create(&c).clone();
        let segment_discovery_seconds = self.segment_discovery.get_or_create(&c).clone();
        let segment_discovery_last_seconds = self.segment_discovery_last.get_or_create(&c).clone();
        let cues_suppressed =
            SUPPRESSED.map(|k| (k, self.cues_suppressed.get_or_create(&kind(k)).clone()));
        ChannelMetrics {
            channel: id.to_string(),
            segment_fetch_seconds,
            segment_decode_seconds,
            lag_seconds,
            decode_fps,
            realtime_factor,
            restarts,
            frames,
            samples_dropped,
            frames_dropped,
            evidence_dropped,
            shots,
            samples,
            samples_reused,
            regions_reused,
            regions_first_view,
            detect_seconds,
            embed_seconds,
            search_seconds,
            analysis_seconds,
            inference_errors,
            cues_started,
            cues_updated,
            cues_ended,
            cues_suppressed,
            glass_to_cue_seconds,
            discovered_to_cue_seconds,
            segment_discovery_seconds,
            segment_discovery_last_seconds,
        }
    }

    /// Marks `state` as the channel's state (1) and every other state 0 (of
    /// [`CHANNEL_STATES`]).
    pub fn set_channel_state(&self, channel: &str, state: &str) {
        for s in CHANNEL_STATES {
            let l = StateLabel {
                channel: channel.to_string(),
                state: s.to_string(),
            };
            self.channel_state
                .get_or_create(&l)
                .set(i64::from(s == state));
        }
    }

    /// Segment outcome counters of a channel, brought up to `total` (they only grow).
    pub fn sync_segments(&self, channel: &str, kind: &str, total: u64) {
        let c = self.segments.get_or_create(&KindLabel {
            channel: channel.to_string(),
            kind: kind.to_string(),
        });
        catch_up(&c, total);
    }

    pub fn set_gauge(&self, name: &str, value: f64) {
        self.gauges
            .get_or_create(&NameLabel {
                name: name.to_string(),
            })
            .set(value);
    }

    /// A process-wide counter kept elsewhere as a running total, brought up to `total`.
    pub fn sync_counter(&self, name: &str, total: u64) {
        let c = self.counters.get_or_create(&NameLabel {
            name: name.to_string(),
        });
        catch_up(&c, total);
    }

    pub fn set_provider(&self, model: &str, provider: &str) {
        self.provider
            .get_or_create(&ProviderLabel {
                model: model.to_string(),
                provider: provider.to_string(),
            })
            .set(1);
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The reasons of `cues_suppressed`, in [`ChannelMetrics::cues_suppressed`] order.
pub const SUPPRESSED: [&str; 4] = ["sibling", "max_cues", "cooldown", "repeat"];

/// Brings a counter kept elsewhere as a running total up to `total` (counters only grow).
pub fn catch_up(c: &Counter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

/// Quantile `q` (0..1) of a histogram's observations, interpolated inside the bucket
/// (`None` without observations). For status pages; Prometheus computes its own.
pub fn histogram_quantile(h: &Histogram, q: f64) -> Option<f64> {
    let (_, count, buckets) = histogram_parts(h);
    if count == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * count as f64;
    let mut below = 0u64;
    let mut lower = 0.0;
    for (upper, n) in buckets {
        if n > 0 && (below + n) as f64 >= rank {
            if !upper.is_finite() {
                return Some(lower);
            }
            let within = (rank - below as f64) / n as f64;
            return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
        }
        below += n;
        lower = upper;
    }
    Some(lower)
}

/// Sum, count and per-bucket counts `(upper bound, count in this bucket)` of a histogram.
pub fn histogram_parts(h: &Histogram) -> (f64, u64, Vec<(f64, u64)>) {
    // The histogram's internals are private; read them back from its own text form.
    let mut r = Registry::default();
    r.register("h", "", h.clone());
    let mut text = String::new();
    let _ = prometheus_client::encoding::text::encode_registry(&mut text, &r);
    let (mut sum, mut count) = (0.0, 0u64);
    let mut cumulative: Vec<(f64, u64)> = Vec::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("h_sum ") {
            sum = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = line.strip_prefix("h_count ") {
            count = v.trim().parse().unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("h_bucket{le=\"") {
            let Some((le, n)) = rest.split_once("\"} ") else {
                continue;
            };
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            cumulative.push((le, n.trim().parse().unwrap_or(0)));
        }
    }
    let mut prev = 0;
    let buckets = cumulative
        .into_iter()
        .map(|(le, c)| {
            let n = c.saturating_sub(prev);
            prev = c;
            (le, n)
        })
        .collect();
    (sum, count, buckets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_family_once() {
        let m = Metrics::new();
        let a = m.channel("news");
        let b = m.channel("sport");
        a.segment_fetch_seconds.observe(0.02);
        b.segment_fetch_seconds.observe(0.2);
        a.cues_started.inc();
        m.set_channel_state("news", "up");
        m.set_gauge("websocket_clients", 3.0);
        m.sync_counter("websocket_events_sent", 10);
        m.sync_counter("websocket_events_sent", 7); // never goes back
        m.set_provider("detector", "cpu");
        let text = m.encode();
        assert_eq!(
            text.matches("# TYPE shopcue_segment_fetch_seconds histogram")
                .count(),
            1,
            "{text}"
        );
        assert!(text.contains("shopcue_segment_fetch_seconds_count{channel=\"news\"} 1"));
        assert!(text.contains("shopcue_cues_total{channel=\"news\",kind=\"start\"} 1"));
        assert!(text.contains("shopcue_channel_state{channel=\"news\",state=\"up\"} 1"));
        assert!(text.contains("shopcue_channel_state{channel=\"news\",state=\"down\"} 0"));
        m.set_channel_state("sport", "retrying");
        b.restarts.inc();
        let text = m.encode();
        assert!(text.contains("shopcue_channel_state{channel=\"sport\",state=\"retrying\"} 1"));
        assert!(text.contains("shopcue_channel_state{channel=\"sport\",state=\"up\"} 0"));
        assert!(text.contains("shopcue_channel_restarts_total{channel=\"sport\"} 1"));
        assert!(text.contains("shopcue_channel_restarts_total{channel=\"news\"} 0"));
        assert!(text.contains("shopcue_events_total{name=\"websocket_events_sent\"} 10"));
        assert!(text.contains("shopcue_execution_provider{model=\"detector\",provider=\"cpu\"} 1"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn the_sidecars_share_of_a_cue_leaves_out_the_latest_segment_discovery() {
        let m = Metrics::new();
        let c = m.channel("news");
        // Before any segment was found by the origin's clock, the share is the whole.
        c.observe_cue_latency(2.0);
        assert_eq!(histogram_parts(&c.discovered_to_cue_seconds).0, 2.0);
        c.observe_segment_discovery(1.25);
        c.observe_segment_discovery(-0.5); // a clock ahead of ours: none, not negative
        assert_eq!(c.segment_discovery_last_seconds.get(), 0.0);
        c.observe_segment_discovery(1.5);
        c.observe_cue_latency(2.25);
        c.observe_cue_latency(1.0); // found late, analysed at once: never below 0
        let (sum, count, _) = histogram_parts(&c.discovered_to_cue_seconds);
        assert_eq!((sum, count), (2.0 + 0.75, 3));
        let (sum, count, _) = histogram_parts(&c.glass_to_cue_seconds);
        assert_eq!((sum, count), (5.25, 3));
        assert_eq!(histogram_parts(&c.segment_discovery_seconds).1, 3);
        let text = m.encode();
        assert!(text.contains("shopcue_segment_discovery_last_seconds{channel=\"news\"} 1.5"));
        assert!(text.contains("shopcue_discovered_to_cue_seconds_count{channel=\"news\"} 3"));
    }

    #[test]
    fn glass_to_cue_quantiles_are_read_to_a_quarter_second_where_live_cues_land() {
        let h = glass_histogram();
        for _ in 0..94 {
            h.observe(2.4);
        }
        for _ in 0..6 {
            h.observe(3.1);
        }
        let p95 = histogram_quantile(&h, 0.95).unwrap();
        assert!((3.0..=3.25).contains(&p95), "{p95}");
        let p50 = histogram_quantile(&h, 0.5).unwrap();
        assert!((2.25..=2.5).contains(&p50), "{p50}");
    }

    #[test]
    fn quantiles_from_buckets() {
        let h = latency_histogram();
        assert_eq!(histogram_quantile(&h, 0.5), None);
        for _ in 0..90 {
            h.observe(0.003); // bucket (0.0025, 0.005]
        }
        for _ in 0..10 {
            h.observe(0.7); // bucket (0.5, 1.0]
        }
        let p50 = histogram_quantile(&h, 0.5).unwrap();
        assert!((0.0025..=0.005).contains(&p50), "{p50}");
        let p99 = histogram_quantile(&h, 0.99).unwrap();
        assert!((0.5..=1.0).contains(&p99), "{p99}");
        let (sum, count, _) = histogram_parts(&h);
        assert_eq!(count, 100);
        assert!((sum - (90.0 * 0.003 + 7.0)).abs() < 1e-9);
    }
}
