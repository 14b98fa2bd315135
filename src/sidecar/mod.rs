//! `shopcue run`: the long-running sidecar.
//!
//! One process, many channels, each independent: per channel a supervisor task starts the
//! ingest (live HLS, SRT, or a file paced at real time) and the analysis [`Pipeline`], and
//! publishes the pipeline's cue events on the cue bus (in memory, or Redis Streams). One
//! HTTP server carries every route: the WebSocket feed, the HLS proxy, the catalog and
//! product API, the web SDK and demo page (`/sdk/shopcue.js`, `/demo/`), and the
//! operational routes (`/healthz`, `/readyz`, `/metrics`, `/v1/status`,
//! `/v1/status/history`) with the ops dashboard (`/dashboard`).
//!
//! Channels change at runtime (`/v1/channels`, `shopcue channels`): [`channels`] holds the
//! live set the routes read at request time, and the registry that adds, restarts and
//! removes channels and keeps them (`registry.store`: memory, a JSON file, or Redis).
//!
//! Cancellation: the caller's token is the root; the server, each channel and the
//! once-a-second metrics sampler hang off it. [`Sidecar::shutdown`] cancels it, closes
//! WebSocket clients with 1001, lets each pipeline drain (open cues end), flushes the bus
//! and waits for the server to finish in-flight requests.

pub mod admin_client;
pub mod channel_set;
pub mod lease_keeper;
pub mod status;
pub mod supervise;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::catalog::feedback::FeedbackStore;
use crate::catalog::upstream::ProductService;
use crate::catalog::{Analyzer, Catalog};
use crate::config::{ChannelSettings, Settings};
use crate::cuebus::{self, CueBus};
use crate::http;
use crate::inference::Models;
use crate::ingest::{self, ChannelState, ChannelStats, IngestOptions, OnError, SourceSpec};
use crate::matching::EvidenceStore;
use crate::operator::{AuditLog, ChannelControls};
use crate::progress::AnalysisProgress;

/// Operator actions the console's audit log keeps (newest first).
const AUDIT_ENTRIES: usize = 1000;
use crate::metrics::{ChannelMetrics, Metrics};
use crate::pipeline::{Pipeline, PipelineConfig, PipelineOutput, PipelineStats};
use supervise::{AttemptEnd, Supervision};

/// `shopcue run` flags; each overrides the settings file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// A channel to analyse, `ID=URL` (HLS URL, srt:// URL or file); repeat for more.
    /// Given at least once, these replace the `[[channels]]` of the settings.
    #[arg(long = "channel", value_name = "ID=URL")]
    pub channels: Vec<String>,
    /// Catalog folder (from `shopcue catalog build`); without one no cues are made.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Address of the HTTP server (`server.listen`).
    #[arg(long)]
    pub listen: Option<String>,
    /// Redis URL for the cue bus (`redis.url`); without it the bus is in memory.
    #[arg(long)]
    pub redis: Option<String>,
}

impl RunArgs {
    /// The settings with these flags applied, validated.
    pub fn apply(&self, settings: &Settings) -> anyhow::Result<Settings> {
        let mut s = settings.clone();
        if !self.channels.is_empty() {
            s.channels = self
                .channels
                .iter()
                .map(|c| {
                    let (id, url) = c
                        .split_once('=')
                        .with_context(|| format!("--channel `{c}`: expected ID=URL"))?;
                    Ok(ChannelSettings {
                        id: id.trim().to_string(),
                        url: url.trim().to_string(),
                    })
                })
                .collect::<anyhow::Result<_>>()?;
        }
        if let Some(c) = &self.catalog {
            s.catalog.dir = c.display().to_string();
        }
        if let Some(l) = &self.listen {
            s.server.listen = l.clone();
        }
        if let Some(r) = &self.redis {
            s.redis.url = r.clone();
        }
        s.validate().context("settings")?;
        Ok(s)
    }
}

/// One channel as the sidecar runs it. Its ingest stats live as long as it does, so a
/// restarted channel keeps counting where it was.
pub struct ChannelRuntime {
    pub id: String,
    pub url: String,
    pub metrics: ChannelMetrics,
    pub progress: Arc<AnalysisProgress>,
    pub supervision: Supervision,
    /// The evidence of the channel's latest cues, for operator feedback; kept across
    /// attempts.
    pub evidence: Arc<EvidenceStore>,
    /// The operator's pins, suppressions and threshold; kept across attempts.
    pub controls: Arc<ChannelControls>,
    /// Its lease epoch when a fleet shares the channels (`[fleet]`), else 0: in cue ids.
    pub epoch: u64,
    ingest: Arc<ChannelStats>,
    pipeline: Mutex<Option<Arc<PipelineStats>>>,
    /// The channel's own child of the process's token: cancelled, it drains and stops.
    cancel: CancellationToken,
    /// Its supervisor task, taken by whoever waits for it to stop.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ChannelRuntime {
    fn new(
        c: &ChannelSettings,
        metrics: &Metrics,
        evidence_cues: usize,
        epoch: u64,
        cancel: CancellationToken,
    ) -> Self {
        let progress = Arc::new(AnalysisProgress::default());
        let metrics = metrics.channel(&c.id);
        Self {
            id: c.id.clone(),
            url: c.url.clone(),
            ingest: Arc::new(ChannelStats::new(Some(metrics.clone()), progress.clone())),
            metrics,
            progress,
            supervision: Supervision::default(),
            evidence: Arc::new(EvidenceStore::new(evidence_cues)),
            controls: Arc::new(ChannelControls::new(c.id.clone())),
            epoch,
            pipeline: Mutex::new(None),
            cancel,
            task: Mutex::new(None),
        }
    }

    /// The channel's ingest counters, kept across attempts.
    pub fn ingest_stats(&self) -> &ChannelStats {
        &self.ingest
    }

    pub fn pipeline_stats(&self) -> Option<Arc<PipelineStats>> {
        self.pipeline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What the routes and the status page read; shared.
pub struct SidecarState {
    pub settings: Settings,
    pub started: chrono::DateTime<Utc>,
    pub metrics: Arc<Metrics>,
    pub bus: Arc<dyn CueBus>,
    pub feed: http::feed::FeedState,
    pub hls: http::proxy::HlsState,
    pub catalog: Option<Arc<Catalog>>,
    /// Execution provider per model (`detector`, `embedder`).
    pub providers: Vec<(String, String)>,
    /// The channels running now (changed at runtime through `/v1/channels`).
    pub channels: channel_set::ChannelSet,
    pub history: status::History,
    /// The lease keeper, when `[fleet] leases` is on.
    fleet: std::sync::OnceLock<Arc<lease_keeper::Keeper>>,
}

/// A running sidecar.
pub struct Sidecar {
    pub addr: SocketAddr,
    pub state: Arc<SidecarState>,
    cancel: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    registry: Arc<channel_set::Registry>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Sidecar {
    /// Load the catalog and models, listen, and start every channel. `settings` must be
    /// validated. Fails only on what the whole process needs (listener, catalog, models,
    /// bus settings); a channel that cannot run is reported and the others go on.
    pub async fn start(settings: Settings, cancel: CancellationToken) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let (analyzer, catalog, models) = load_recognition(&settings).await?;
        let mut providers = Vec::new();
        if let Some(m) = &models {
            for (model, provider) in [
                ("detector", m.detector.provider()),
                ("embedder", m.embedder.provider()),
            ] {
                metrics.set_provider(model, provider);
                providers.push((model.to_string(), provider.to_string()));
            }
        }
        let bus = cuebus::connect(&settings.bus, &settings.redis).context("cue bus")?;
        let (hls, feed) = outputs(&settings, &bus)?;
        let state = Arc::new(SidecarState {
            settings: settings.clone(),
            started: Utc::now(),
            metrics: metrics.clone(),
            bus: bus.clone(),
            feed: feed.clone(),
            hls: hls.clone(),
            catalog,
            providers,
            channels: channel_set::ChannelSet::default(),
            history: status::History::default(),
            fleet: std::sync::OnceLock::new(),
        });
        let runner = channel_set::Runner {
            settings: Arc::new(settings.clone()),
            analyzer,
            bus: bus.clone(),
            metrics,
            root: cancel.clone(),
        };
        let (router, feedback, registry) = routes(&state, models, runner).await?;
        let listener = tokio::net::TcpListener::bind(&settings.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.server.listen))?;
        let addr = listener.local_addr()?;
        let server = {
            let stop = cancel.clone();
            tokio::spawn(http::server::serve(listener, router, async move {
                stop.cancelled().await
            }))
        };
        registry.start_all().await.context("channels")?;
        tracing::info!(%addr, channels = state.channels.len(), bus = bus.kind(), "sidecar listening");
        let mut background = vec![
            tokio::spawn(status::sample_every_second(
                state.clone(),
                cancel.child_token(),
            )),
            tokio::spawn(crate::allocator::upkeep(
                settings.memory.clone(),
                state.metrics.clone(),
                cancel.child_token(),
            )),
        ];
        if settings.fleet.leases {
            let keeper = lease_keeper::Keeper::new(&settings, registry.clone(), bus.clone())
                .context("fleet")?;
            let _ = state.fleet.set(keeper.clone());
            background.push(tokio::spawn(keeper.run(cancel.child_token())));
        }
        let follow = Duration::from_millis(settings.catalog.follow_folder_ms);
        if let Some(c) = state.catalog.clone().filter(|_| !follow.is_zero()) {
            background.push(tokio::spawn(follow_catalog_folder(
                c,
                follow,
                cancel.child_token(),
            )));
        }
        let every = Duration::from_secs(settings.catalog.retrain_interval_s);
        if let Some(fb) = feedback.filter(|_| !every.is_zero()) {
            background.push(tokio::spawn(retrain_every(fb, every, cancel.child_token())));
        }
        Ok(Self {
            addr,
            state,
            cancel,
            server,
            registry,
            background,
        })
    }

    /// Run until the token is cancelled (Ctrl-C), then shut down cleanly.
    pub async fn run_until_cancelled(self) -> anyhow::Result<()> {
        self.cancel.cancelled().await;
        self.shutdown().await
    }

    /// Stop everything: channels drain (open cues end and are published), WebSocket
    /// clients are closed with 1001, the bus is flushed, the server finishes.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.cancel.cancel();
        for c in self.registry.take_tasks() {
            if tokio::time::timeout(Duration::from_secs(15), c)
                .await
                .is_err()
            {
                tracing::warn!("a channel did not stop within 15 s");
            }
        }
        if !self.state.bus.flush(Duration::from_secs(3)).await {
            tracing::warn!("cue bus: some events were not stored before shutdown");
        }
        if let Some(keeper) = self.state.fleet.get() {
            keeper.release_all().await;
        }
        self.state.feed.shutdown();
        for b in self.background {
            b.abort();
        }
        match tokio::time::timeout(Duration::from_secs(10), self.server).await {
            Ok(Ok(r)) => r.context("HTTP server")?,
            Ok(Err(e)) => anyhow::bail!("HTTP server task: {e}"),
            Err(_) => tracing::warn!("HTTP server did not finish within 10 s"),
        }
        tracing::info!("sidecar stopped");
        Ok(())
    }
}

/// The HLS proxy and the feed, with no channel yet (the registry adds them).
fn outputs(
    settings: &Settings,
    bus: &Arc<dyn CueBus>,
) -> anyhow::Result<(http::proxy::HlsState, http::feed::FeedState)> {
    let hls = http::proxy::HlsState::new(
        &[],
        &settings.manifest,
        &settings.ingest,
        ingest::hls::Fetcher::with_redirect_hosts(&settings.ingest.redirect_hosts)?,
        &HashMap::new(),
    )?;
    // In memory, only this process's channels exist. On Redis, channels analysed by
    // other machines are served too (a feed-only replica has no channels of its own); in
    // a fleet, only the registered ones (the lease keeper allows each).
    let feed = http::feed::FeedState::new(bus.clone(), settings.feed.clone());
    let feed = if bus.kind() == "redis" && !settings.fleet.leases {
        feed
    } else {
        feed.with_channels(std::iter::empty())
    };
    Ok((hls, feed))
}

/// The models, the catalog and the analyzer over them (none without `catalog.dir`).
async fn load_recognition(
    settings: &Settings,
) -> anyhow::Result<(Option<Analyzer>, Option<Arc<Catalog>>, Option<Models>)> {
    if settings.catalog.dir.trim().is_empty() {
        tracing::warn!("no catalog (catalog.dir / --catalog): shots only, no product cues");
        return Ok((None, None, None));
    }
    let s = settings.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let models = Models::load(&s.inference).context("loading the models")?;
        let catalog = Arc::new(
            Catalog::open(std::path::Path::new(&s.catalog.dir), &s.catalog)
                .with_context(|| format!("opening the catalog {}", s.catalog.dir))?,
        );
        let analyzer = Analyzer::new(&models, catalog.clone(), &s.catalog)?;
        Ok((Some(analyzer), Some(catalog), Some(models)))
    })
    .await?
}

/// Every route of the process on one router, the feedback state (for the periodic
/// retrain) when the catalog has a folder, and the channel registry behind
/// `/v1/channels` (loaded and seeded, its channels not started yet).
async fn routes(
    state: &Arc<SidecarState>,
    models: Option<Models>,
    runner: channel_set::Runner,
) -> anyhow::Result<(
    axum::Router,
    Option<http::feedback::FeedbackState>,
    Arc<channel_set::Registry>,
)> {
    let settings = &state.settings;
    let cors = http::cors::read_only(&settings.server.cors_origins);
    let mut router = ops_routes(state)
        .merge(http::dashboard::router())
        .merge(http::cors::guard_websocket(
            http::feed::router(state.feed.clone()),
            &settings.server.cors_origins,
        ))
        .merge(http::proxy::router(state.hls.clone()).layer(cors.clone()))
        .merge(http::web::router().layer(cors.clone()));
    let audit = Arc::new(AuditLog::new(AUDIT_ENTRIES));
    let console = console_state(state, audit.clone());
    let consoles = console.channels.clone();
    router = router.merge(http::console::router(console));
    let (catalog_routes, feedback) = catalog_routes(state, models, audit);
    router = router.merge(catalog_routes);
    let consumers = channel_set::Consumers {
        hls: state.hls.clone(),
        feed: state.feed.clone(),
        console: consoles,
        evidence: feedback.as_ref().map(|f| f.evidence.clone()),
    };
    let registry = Arc::new(
        channel_set::Registry::open(state.channels.clone(), runner, consumers)
            .await
            .context("channel registry")?,
    );
    router = router.merge(http::channels::router(http::channels::ChannelsApiState {
        admin: registry.clone(),
        admin_key: settings.server.admin_key.clone(),
    }));
    Ok((router, feedback, registry))
}

/// The product, catalog and feedback routes when there is a catalog, and the feedback
/// state when the catalog has a folder.
fn catalog_routes(
    state: &SidecarState,
    models: Option<Models>,
    audit: Arc<AuditLog>,
) -> (axum::Router, Option<http::feedback::FeedbackState>) {
    let settings = &state.settings;
    let cors = http::cors::read_only(&settings.server.cors_origins);
    let mut router = axum::Router::new();
    let mut feedback = None;
    if let Some(catalog) = &state.catalog {
        if let Some(dir) = catalog.dir() {
            let fb = http::feedback::FeedbackState::new(
                catalog.clone(),
                Arc::new(FeedbackStore::new(dir, &settings.catalog)),
                HashMap::new(),
                &settings.catalog,
                &settings.server.admin_key,
            )
            .with_audit(audit);
            router = router.merge(http::feedback::router(fb.clone()));
            feedback = Some(fb);
        }
        let products = Arc::new(ProductService::new(
            catalog.clone(),
            &settings.catalog.upstream,
        ));
        router = router.merge(http::catalog::router(
            http::catalog::CatalogApiState::new(
                products,
                models,
                &settings.catalog,
                &settings.server.admin_key,
            ),
            cors,
        ));
    }
    (router, feedback)
}

/// `/healthz`, `/readyz`, `/metrics`, `/v1/status` and its history.
fn ops_routes(state: &Arc<SidecarState>) -> axum::Router {
    let settings = &state.settings;
    let st = state.clone();
    let ready: http::server::ReadyFn = Arc::new(move || status::readiness(&st));
    let st = state.clone();
    let status_doc: http::server::StatusFn = Arc::new(move || status::status(&st));
    let st = state.clone();
    let history: http::server::HistoryFn =
        Arc::new(move |since| serde_json::to_value(st.history.since(since)).unwrap_or_default());
    let ops_key = settings
        .server
        .protect_ops
        .then(|| settings.server.admin_key.clone());
    http::server::ops_router(state.metrics.clone(), ready, status_doc, history, ops_key)
}

/// The console's state; its channels are filled in as channels start.
fn console_state(state: &SidecarState, audit: Arc<AuditLog>) -> http::console::ConsoleState {
    http::console::ConsoleState {
        channels: Arc::default(),
        bus: state.bus.clone(),
        catalog: state.catalog.clone(),
        audit,
        admin_key: state.settings.server.admin_key.clone(),
    }
}

/// What every attempt of one channel needs.
struct ChannelCtx {
    rt: Arc<ChannelRuntime>,
    settings: Arc<Settings>,
    analyzer: Option<Analyzer>,
    bus: Arc<dyn CueBus>,
}

/// One channel, from start to shutdown: attempts under the supervisor.
async fn run_channel(
    rt: Arc<ChannelRuntime>,
    settings: Arc<Settings>,
    analyzer: Option<Analyzer>,
    bus: Arc<dyn CueBus>,
    cancel: CancellationToken,
) {
    let ctx = Arc::new(ChannelCtx {
        rt: rt.clone(),
        settings,
        analyzer,
        bus,
    });
    let restarts = rt.metrics.restarts.clone();
    // While waiting to retry: does the origin serve a sound playlist (HLS only)?
    let probe = {
        let url = match SourceSpec::parse(&rt.url) {
            Ok(SourceSpec::Hls(u)) => Some(u),
            _ => None,
        };
        let fetcher =
            ingest::hls::Fetcher::with_redirect_hosts(&ctx.settings.ingest.redirect_hosts).ok();
        let ingest = ctx.settings.ingest.clone();
        move || {
            let (url, fetcher, ingest) = (url.clone(), fetcher.clone(), ingest.clone());
            async move {
                let (url, fetcher) = (url?, fetcher?);
                Some(ingest::hls::open(&fetcher, &url, &ingest).await.is_ok())
            }
        }
    };
    supervise::supervise(
        &rt.id,
        supervise::RetryPolicy::DEFAULT,
        &rt.supervision,
        cancel,
        move || {
            restarts.inc();
        },
        probe,
        move |token| run_attempt(ctx.clone(), token),
    )
    .await;
}

/// One attempt: start the source and the pipeline, run until cancelled or something
/// stops, then drain both (open cues end and are published) and say how it ended.
async fn run_attempt(ctx: Arc<ChannelCtx>, cancel: CancellationToken) -> AttemptEnd {
    let rt = &ctx.rt;
    let spec = match SourceSpec::parse(&rt.url) {
        Ok(s) => s,
        Err(e) => return AttemptEnd::Failed(e.to_string()),
    };
    let opts = IngestOptions {
        // A file stands in for a live channel.
        realtime: matches!(spec, SourceSpec::File(_)),
        on_error: OnError::Retry,
        height: None,
        metrics: Some(rt.metrics.clone()),
        progress: Some(rt.progress.clone()),
        stats: Some(rt.ingest.clone()),
    };
    let ingest_cancel = cancel.child_token();
    let settings = &ctx.settings;
    let source = ingest::start(
        &rt.id,
        spec,
        &settings.ingest,
        &settings.media,
        opts,
        ingest_cancel.clone(),
    )
    .await;
    let ingest::Channel {
        frames, mut task, ..
    } = match source {
        Ok(s) => s,
        Err(e) => return AttemptEnd::Failed(e.to_string()),
    };
    let pipeline = match spawn_pipeline(&ctx, frames) {
        Ok(p) => p,
        Err(e) => {
            ingest_cancel.cancel();
            return AttemptEnd::Failed(e.to_string());
        }
    };
    *rt.pipeline.lock().unwrap_or_else(|p| p.into_inner()) = Some(pipeline.stats.clone());
    let finished = watch(&cancel, &mut task, &pipeline).await;
    ingest_cancel.cancel();
    // A finished task is never polled again (that panics).
    let source = match finished {
        Some(r) => Some(r),
        None => {
            let r = tokio::time::timeout(Duration::from_secs(10), &mut task).await;
            if r.is_err() {
                task.abort();
            }
            r.ok()
        }
    };
    let drained = drain(&rt.id, pipeline).await;
    outcome(&cancel, source, drained, rt.ingest.state())
}

type SourceResult = Result<Result<(), ingest::IngestError>, tokio::task::JoinError>;

/// Wait until cancelled (`None`), the source task ends (its result), or a pipeline thread
/// stops before its source (`None`: a thread panicked; [`drain`] says which).
async fn watch(
    cancel: &CancellationToken,
    task: &mut tokio::task::JoinHandle<Result<(), ingest::IngestError>>,
    pipeline: &Pipeline,
) -> Option<SourceResult> {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return None,
            r = &mut *task => return Some(r),
            _ = tick.tick() => {
                if pipeline.any_finished() {
                    return None;
                }
            }
        }
    }
}

/// Wait for the pipeline to finish its frames; open cues end and are published.
async fn drain(channel: &str, pipeline: Pipeline) -> Result<(), String> {
    match tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || pipeline.join()),
    )
    .await
    {
        Ok(Ok(Ok(s))) => {
            tracing::info!(%channel, frames = s.frames, shots = s.shots, cues = s.cue_events, "channel attempt stopped");
            Ok(())
        }
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(e)) => Err(format!("pipeline join: {e}")),
        Err(_) => Err("the pipeline did not drain within 10 s".into()),
    }
}

/// How an attempt ended, from what its parts said.
fn outcome(
    cancel: &CancellationToken,
    source: Option<SourceResult>,
    drained: Result<(), String>,
    state: ChannelState,
) -> AttemptEnd {
    if cancel.is_cancelled() {
        return AttemptEnd::Stopped;
    }
    if let Err(why) = drained {
        return AttemptEnd::Failed(why);
    }
    match source {
        Some(Ok(Ok(()))) if state == ChannelState::Ended => AttemptEnd::Ended,
        Some(Ok(Ok(()))) => AttemptEnd::Failed("the source stopped".into()),
        Some(Ok(Err(e))) => AttemptEnd::Failed(format!("source failed: {e}")),
        Some(Err(e)) => AttemptEnd::Failed(format!("source task: {}", supervise::panic_message(e))),
        None => AttemptEnd::Failed("the source did not stop within 10 s".into()),
    }
}

/// The periodic retrain (`catalog.retrain_interval_s`): when the stored feedback changed
/// since the last look, the catalog is rebuilt from it and swapped in.
/// Swap in the catalog folder's newest generation whenever another process wrote one.
async fn follow_catalog_folder(catalog: Arc<Catalog>, every: Duration, cancel: CancellationToken) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let c = catalog.clone();
        match tokio::task::spawn_blocking(move || c.refresh()).await {
            Ok(Ok(Some(generation))) => {
                failing = false;
                tracing::info!(%generation, products = catalog.snapshot().len(), "catalog: a newer generation from the folder is live");
            }
            Ok(Ok(None)) => failing = false,
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "catalog: cannot load the folder's newest generation; the live one stays");
            }
            _ => {}
        }
    }
}

async fn retrain_every(
    st: http::feedback::FeedbackState,
    every: Duration,
    cancel: CancellationToken,
) {
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = modified(st.store.path());
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = modified(st.store.path());
        if now.is_none() || now == seen {
            continue;
        }
        match http::feedback::retrain_now(&st).await {
            Ok(_) => seen = now,
            Err(e) => {
                tracing::warn!(error = %e, "periodic retrain from feedback failed; the catalog is unchanged")
            }
        }
    }
}

/// The analysis pipeline of one attempt, its cue events published on the bus.
fn spawn_pipeline(
    ctx: &ChannelCtx,
    frames: tokio::sync::mpsc::Receiver<crate::frame::Frame>,
) -> Result<Pipeline, crate::pipeline::PipelineError> {
    let rt = &ctx.rt;
    let config = PipelineConfig {
        channel: rt.id.clone(),
        shots: ctx.settings.shots.clone(),
        matching: ctx.settings.matching.clone(),
        lossless: false,
        evidence: Some(rt.evidence.clone()),
        controls: Some(rt.controls.clone()),
        epoch: rt.epoch,
    };
    let sink = {
        let metrics = rt.metrics.clone();
        let channel = rt.id.clone();
        let bus = ctx.bus.clone();
        let controls = rt.controls.clone();
        Box::new(move |out: PipelineOutput| match out {
            PipelineOutput::Cue { event, trigger } => {
                let latency = (Utc::now() - trigger).num_microseconds().unwrap_or(0);
                metrics.observe_cue_latency(latency as f64 / 1e6);
                tracing::debug!(%channel, kind = event.kind(), product = %event.cue().product_id, "cue");
                // An operator's suppression holds the product's automatic cues.
                controls.pass(event, Utc::now(), |e| bus.publish(e));
            }
            PipelineOutput::Shot(e) => {
                if let crate::shots::ShotEvent::Started(s) = e {
                    tracing::debug!(%channel, shot = s.index, frame = s.start_frame, "shot");
                }
            }
            PipelineOutput::Sample(o) => {
                controls.note_sample(
                    o.ticket.shot_index,
                    o.ticket.pts_ns as f64 / 1e9,
                    o.ticket.wallclock,
                );
                trace_sample(&channel, &o);
            }
        })
    };
    Pipeline::spawn(
        config,
        frames,
        ctx.analyzer.clone(),
        Some(rt.metrics.clone()),
        Some(rt.progress.clone()),
        sink,
    )
}

/// A sampled frame's best matches, at trace level.
fn trace_sample(channel: &str, o: &crate::pipeline::SampleOutcome) {
    if !tracing::enabled!(tracing::Level::TRACE) {
        return;
    }
    let best: Vec<String> = o
        .detections
        .iter()
        .filter_map(|d| {
            let top: Vec<String> = d
                .candidates
                .iter()
                .take(2)
                .map(|(p, s)| format!("{p}:{s:.2}"))
                .collect();
            (!top.is_empty()).then(|| format!("{}[{}]", d.class_name, top.join(",")))
        })
        .collect();
    tracing::trace!(%channel, frame = o.ticket.frame_index, shot = o.ticket.shot_index, ms = o.elapsed.as_millis() as u64, found = %best.join(" "), "sample");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_settings_and_are_validated() {
        let base = Settings {
            channels: vec![ChannelSettings {
                id: "old".into(),
                url: "http://127.0.0.1:1/a.m3u8".into(),
            }],
            ..Settings::default()
        };
        let args = RunArgs {
            channels: vec![
                "news=http://127.0.0.1:9/live/master.m3u8".into(),
                "sport = srt://127.0.0.1:9000?mode=caller".into(),
            ],
            catalog: Some(PathBuf::from("/var/lib/catalog")),
            listen: Some("127.0.0.1:0".into()),
            redis: Some("redis://127.0.0.1:6379".into()),
        };
        let s = args.apply(&base).unwrap();
        assert_eq!(s.channels.len(), 2);
        assert_eq!(s.channels[1].id, "sport");
        assert_eq!(s.channels[1].url, "srt://127.0.0.1:9000?mode=caller");
        assert_eq!(s.catalog.dir, "/var/lib/catalog");
        assert_eq!(s.server.listen, "127.0.0.1:0");
        assert_eq!(s.redis.url, "redis://127.0.0.1:6379");
        // No flags: the file's channels stay.
        let s = RunArgs::default().apply(&base).unwrap();
        assert_eq!(s.channels[0].id, "old");
        // Bad flags: one clear error naming the flag or key.
        let bad = RunArgs {
            channels: vec!["no-equals-sign".into()],
            ..RunArgs::default()
        };
        let e = format!("{:#}", bad.apply(&base).unwrap_err());
        assert!(e.contains("--channel") && e.contains("ID=URL"), "{e}");
        let dup = RunArgs {
            channels: vec!["a=http://x/1.m3u8".into(), "a=http://x/2.m3u8".into()],
            ..RunArgs::default()
        };
        let e = format!("{:#}", dup.apply(&base).unwrap_err());
        assert!(e.contains("channels[1].id"), "{e}");
    }
}
