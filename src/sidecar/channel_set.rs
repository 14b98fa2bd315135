//! The live channel set, changed at runtime (`/v1/channels`, `shopcue channels`).
//!
//! [`ChannelSet`] is what the routes and the status page read at request time. The
//! [`Registry`] adds, restarts and removes channels: each runs under its own child of the
//! process's cancellation token, so removing one is the same drain as a shutdown (its
//! source stops, its pipeline finishes its samples, open cues end and are published),
//! after which the feed closes its clients (once they have the end events) and
//! `/hls/{id}/` answers 404. A change is stored (`registry.store`) before it takes effect;
//! changes are serialised by one lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::ChannelRuntime;
use crate::catalog::Analyzer;
use crate::config::{ChannelSettings, Settings};
use crate::cuebus::{CueBus, Offset};
use crate::http;
use crate::http::channels::{ChannelAdmin, ChannelView, PutOutcome};
use crate::metrics::Metrics;
use crate::progress::AnalysisProgress;
use crate::redact::redact_url;
use crate::registry::{RegistryError, Store, Stored};

/// How long a stopping channel may take to drain before it is left behind (logged).
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The channels running now, by id; cheap to clone, read at request time.
#[derive(Clone, Default)]
pub struct ChannelSet {
    map: Arc<RwLock<HashMap<String, Arc<ChannelRuntime>>>>,
}

impl ChannelSet {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<ChannelRuntime>>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<ChannelRuntime>>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Every channel, sorted by id.
    pub fn list(&self) -> Vec<Arc<ChannelRuntime>> {
        let mut v: Vec<_> = self.read().values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub fn get(&self, id: &str) -> Option<Arc<ChannelRuntime>> {
        self.read().get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }
}

impl IntoIterator for &ChannelSet {
    type Item = Arc<ChannelRuntime>;
    type IntoIter = std::vec::IntoIter<Arc<ChannelRuntime>>;
    fn into_iter(self) -> Self::IntoIter {
        self.list().into_iter()
    }
}

/// Who else learns of a channel's arrival and departure (each read at request time).
pub(super) struct Consumers {
    pub hls: http::proxy::HlsState,
    pub feed: http::feed::FeedState,
    pub console: Arc<RwLock<HashMap<String, http::console::ConsoleChannel>>>,
    /// The feedback routes' evidence by channel, when the catalog has a folder.
    pub evidence: Option<http::feedback::EvidenceByChannel>,
}

/// What starting a channel needs.
pub(super) struct Runner {
    pub settings: Arc<Settings>,
    pub analyzer: Option<Analyzer>,
    pub bus: Arc<dyn CueBus>,
    pub metrics: Arc<Metrics>,
    pub root: CancellationToken,
}

/// Adds, restarts and removes channels; the sidecar's [`ChannelAdmin`].
pub struct Registry {
    set: ChannelSet,
    runner: Runner,
    consumers: Consumers,
    store: Store,
    /// What the store holds; its lock serialises changes.
    stored: tokio::sync::Mutex<Stored>,
    /// `[fleet] leases`: the lease keeper (`sidecar/lease_keeper.rs`) decides which stored channels
    /// run here; the API only changes the store.
    fleet: bool,
}

impl Registry {
    /// Load the store, seed it with the settings' channels (added when absent, once per
    /// id; the stored registry wins otherwise) and record the seeding.
    pub(super) async fn open(
        set: ChannelSet,
        runner: Runner,
        consumers: Consumers,
    ) -> Result<Self, RegistryError> {
        let s = &runner.settings;
        let store = Store::open(&s.registry, &s.redis)?;
        let mut stored = store.load().await?;
        let seeded = stored.seed(&s.channels);
        if !seeded.is_empty() {
            store.seeded(&seeded, &stored).await?;
        }
        tracing::info!(store = %store.describe(), channels = stored.channels.len(), seeded = seeded.len(), "channel registry loaded");
        let fleet = s.fleet.leases;
        Ok(Self {
            set,
            runner,
            consumers,
            store,
            stored: tokio::sync::Mutex::new(stored),
            fleet,
        })
    }

    /// Start every stored channel (up to `registry.max_channels`, in id order).
    pub(super) async fn start_all(&self) -> Result<(), RegistryError> {
        if self.fleet {
            return Ok(());
        }
        let stored = self.stored.lock().await;
        let max = self.runner.settings.registry.max_channels;
        if stored.channels.len() > max {
            tracing::warn!(
                stored = stored.channels.len(),
                max,
                "channel registry: more channels than registry.max_channels; the first by id run"
            );
        }
        for c in stored.channels.values().take(max) {
            self.start(c, 0)?;
        }
        Ok(())
    }

    /// Every registered channel, read from the store now (other analysers change it).
    pub(super) async fn registered(
        &self,
    ) -> Result<BTreeMap<String, ChannelSettings>, RegistryError> {
        let mut stored = self.stored.lock().await;
        *stored = self.store.load().await?;
        Ok(stored.channels.clone())
    }

    /// Start `c` under its lease (`epoch`: the fencing token, in its cue ids).
    pub(super) fn start_leased(
        &self,
        c: &ChannelSettings,
        epoch: u64,
    ) -> Result<Arc<ChannelRuntime>, RegistryError> {
        if self.runner.root.is_cancelled() {
            return Err(RegistryError::ShuttingDown);
        }
        self.start(c, epoch)
    }

    /// Stop channel `id` here (its lease moves): it drains; its playlists and feed clients
    /// stay (the keeper serves it from the next owner's progress, [`Self::serve_elsewhere`]).
    pub(super) async fn stop_leased(&self, id: &str) {
        let Some(rt) = self.set.get(id) else { return };
        self.stop(&rt).await;
        self.set.write().remove(id);
        self.runner.metrics.set_channel_state(id, "stopped");
        write(&self.consumers.console).remove(id);
        if let Some(e) = &self.consumers.evidence {
            write(e).remove(id);
        }
    }

    /// In a fleet: serve channel `c`, analysed by another process, here too: its
    /// playlists rewritten with `progress` (mirrored from the analysing process), its cue
    /// ledger fed from the bus until `cancel`, its feed open.
    pub(super) fn serve_elsewhere(
        &self,
        c: &ChannelSettings,
        progress: Arc<AnalysisProgress>,
        cancel: CancellationToken,
    ) -> Result<(), RegistryError> {
        let hls = self
            .consumers
            .hls
            .add(c, progress)
            .map_err(|why| RegistryError::Start {
                id: c.id.clone(),
                why,
            })?;
        if let Some(ch) = hls {
            http::proxy::spawn_cue_feed(ch, self.runner.bus.clone(), cancel);
        }
        self.consumers.feed.allow(&c.id);
        Ok(())
    }

    /// In a fleet: channel `id` left the registry; stop serving it here (unless it runs
    /// here, which its own stop handles).
    pub(super) async fn unserve(&self, id: &str) {
        if self.set.get(id).is_some() {
            return;
        }
        let last = self.last_offset(id).await;
        self.consumers.feed.remove(id, last);
        self.consumers.hls.remove(id);
    }

    /// The analysis progress of each channel running here.
    pub(super) fn progress_here(&self) -> Vec<(String, Arc<AnalysisProgress>)> {
        self.set
            .list()
            .iter()
            .map(|rt| (rt.id.clone(), rt.progress.clone()))
            .collect()
    }

    /// The bus offset of channel `id`'s last event.
    async fn last_offset(&self, id: &str) -> Offset {
        match self.runner.bus.snapshot(id).await {
            Ok(s) => s.offset,
            Err(_) => Offset::ZERO,
        }
    }

    /// The running channel tasks, taken (for the shutdown to await).
    pub(super) fn take_tasks(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.set
            .list()
            .iter()
            .filter_map(|rt| rt.task.lock().unwrap_or_else(|p| p.into_inner()).take())
            .collect()
    }

    /// Start channel `c`: its runtime, its HLS proxy and ledger feed, feed and console
    /// entries, and its supervisor task, under a child of the root token.
    fn start(&self, c: &ChannelSettings, epoch: u64) -> Result<Arc<ChannelRuntime>, RegistryError> {
        let r = &self.runner;
        let cancel = r.root.child_token();
        let rt = Arc::new(ChannelRuntime::new(
            c,
            &r.metrics,
            r.settings.matching.evidence_cues,
            epoch,
            cancel.clone(),
        ));
        let hls = self
            .consumers
            .hls
            .add(c, rt.progress.clone())
            .map_err(|why| RegistryError::Start {
                id: c.id.clone(),
                why,
            })?;
        if let Some(ch) = hls {
            http::proxy::spawn_cue_feed(ch, r.bus.clone(), cancel.child_token());
        }
        self.consumers.feed.allow(&c.id);
        self.add_consumers(&rt);
        let task = tokio::spawn(super::run_channel(
            rt.clone(),
            r.settings.clone(),
            r.analyzer.clone(),
            r.bus.clone(),
            cancel,
        ));
        *rt.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        self.set.write().insert(c.id.clone(), rt.clone());
        tracing::info!(channel = %c.id, url = %redact_url(&c.url), "channel started");
        Ok(rt)
    }

    fn add_consumers(&self, rt: &ChannelRuntime) {
        let console = http::console::ConsoleChannel {
            controls: rt.controls.clone(),
            evidence: rt.evidence.clone(),
        };
        write(&self.consumers.console).insert(rt.id.clone(), console);
        if let Some(e) = &self.consumers.evidence {
            write(e).insert(rt.id.clone(), rt.evidence.clone());
        }
    }

    /// Stop `rt` and wait for its drain (open cues end and are published).
    async fn stop(&self, rt: &ChannelRuntime) {
        rt.cancel.cancel();
        let task = rt.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task
            && tokio::time::timeout(STOP_TIMEOUT, task).await.is_err()
        {
            tracing::warn!(channel = %rt.id, "channel did not stop within 15 s");
        }
        tracing::info!(channel = %rt.id, "channel stopped");
    }

    /// Forget channel `id` everywhere once stopped: the feed closes its clients after the
    /// channel's last event, and `/hls/{id}/` answers 404.
    async fn forget(&self, id: &str) {
        self.set.write().remove(id);
        // Its series stay (a Prometheus family keeps its labels), last seen stopped.
        self.runner.metrics.set_channel_state(id, "stopped");
        write(&self.consumers.console).remove(id);
        if let Some(e) = &self.consumers.evidence {
            write(e).remove(id);
        }
        let bus = &self.runner.bus;
        if !bus.flush(Duration::from_secs(3)).await {
            tracing::warn!(channel = %id, "cue bus: the removed channel's last events are not all stored yet");
        }
        let last = self.last_offset(id).await;
        self.consumers.feed.remove(id, last);
        self.consumers.hls.remove(id);
    }

    fn check_room(&self, id: &str) -> Result<(), RegistryError> {
        let max = self.runner.settings.registry.max_channels;
        if self.set.get(id).is_none() && self.set.len() >= max {
            return Err(RegistryError::Full(max));
        }
        if self.runner.root.is_cancelled() {
            return Err(RegistryError::ShuttingDown);
        }
        Ok(())
    }

    async fn put_channel(&self, c: ChannelSettings) -> Result<PutOutcome, RegistryError> {
        RegistryError::check(&c)?;
        if self.fleet {
            return self.put_fleet(c).await;
        }
        let mut stored = self.stored.lock().await;
        self.check_room(&c.id)?;
        let old = self.set.get(&c.id);
        if let Some(old) = &old
            && old.url == c.url
        {
            return Ok(PutOutcome::Unchanged(view(old)));
        }
        http::proxy::check_origin(&c).map_err(|why| RegistryError::Start {
            id: c.id.clone(),
            why,
        })?;
        let mut next = stored.clone();
        next.channels.insert(c.id.clone(), c.clone());
        self.store.put(&c, &next).await?;
        *stored = next;
        if let Some(old) = &old {
            self.stop(old).await;
        }
        let rt = self.start(&c, 0)?;
        Ok(match old {
            Some(_) => PutOutcome::Restarted(view(&rt)),
            None => PutOutcome::Created(view(&rt)),
        })
    }

    /// In a fleet: record the change; whichever analyser holds (or claims) the channel
    /// starts, restarts or stops it within a lease round.
    async fn put_fleet(&self, c: ChannelSettings) -> Result<PutOutcome, RegistryError> {
        let mut stored = self.stored.lock().await;
        let mut next = self.store.load().await?;
        let old = next.channels.get(&c.id).cloned();
        if old.as_ref().is_some_and(|o| o.url == c.url) {
            *stored = next;
            return Ok(PutOutcome::Unchanged(pending(&c)));
        }
        if old.is_none() && next.channels.len() >= self.runner.settings.registry.max_channels {
            return Err(RegistryError::Full(
                self.runner.settings.registry.max_channels,
            ));
        }
        http::proxy::check_origin(&c).map_err(|why| RegistryError::Start {
            id: c.id.clone(),
            why,
        })?;
        next.channels.insert(c.id.clone(), c.clone());
        self.store.put(&c, &next).await?;
        *stored = next;
        Ok(match old {
            Some(_) => PutOutcome::Restarted(pending(&c)),
            None => PutOutcome::Created(pending(&c)),
        })
    }

    async fn remove_fleet(&self, id: &str) -> Result<(), RegistryError> {
        let mut stored = self.stored.lock().await;
        let mut next = self.store.load().await?;
        if next.channels.remove(id).is_none() {
            return Err(RegistryError::NotFound(id.to_string()));
        }
        self.store.remove(id, &next).await?;
        *stored = next;
        Ok(())
    }

    async fn remove_channel(&self, id: &str) -> Result<(), RegistryError> {
        if self.fleet {
            return self.remove_fleet(id).await;
        }
        let mut stored = self.stored.lock().await;
        let rt = self
            .set
            .get(id)
            .ok_or_else(|| RegistryError::NotFound(id.to_string()))?;
        let mut next = stored.clone();
        next.channels.remove(id);
        self.store.remove(id, &next).await?;
        *stored = next;
        self.stop(&rt).await;
        self.forget(id).await;
        Ok(())
    }
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// A channel recorded in a fleet's registry, before an analyser has started it.
fn pending(c: &ChannelSettings) -> ChannelView {
    ChannelView {
        id: c.id.clone(),
        url: redact_url(&c.url),
        state: "pending".into(),
        restarts: 0,
    }
}

/// A channel as the API shows it (URL redacted).
pub fn view(rt: &ChannelRuntime) -> ChannelView {
    ChannelView {
        id: rt.id.clone(),
        url: redact_url(&rt.url),
        state: super::status::channel_state(rt).to_string(),
        restarts: rt.supervision.restarts(),
    }
}

impl ChannelAdmin for Registry {
    fn list(&self) -> Vec<ChannelView> {
        let mut out: Vec<ChannelView> = self.set.list().iter().map(|rt| view(rt)).collect();
        // In a fleet, the registry's other channels run on other analysers (or wait for
        // one): as of this analyser's last lease round.
        if self.fleet
            && let Ok(stored) = self.stored.try_lock()
        {
            for c in stored.channels.values() {
                if self.set.get(&c.id).is_none() {
                    out.push(ChannelView {
                        state: "elsewhere".into(),
                        ..pending(c)
                    });
                }
            }
            out.sort_by(|a, b| a.id.cmp(&b.id));
        }
        out
    }

    fn put(&self, channel: ChannelSettings) -> BoxFuture<'_, Result<PutOutcome, RegistryError>> {
        self.put_channel(channel).boxed()
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), RegistryError>> {
        self.remove_channel(id).boxed()
    }
}
