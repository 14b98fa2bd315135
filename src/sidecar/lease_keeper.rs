//! The lease keeper (`[fleet] leases = true`): which of the registry's channels this
//! analyser runs, decided each round with the other analysers through Redis leases
//! ([`crate::cuebus::redis::lease`]); the plan itself is pure ([`crate::registry::fleet`]).
//!
//! A round, every third of `fleet.lease_ms`: heartbeat (the live analysers), read the
//! registry and who holds each channel, renew this analyser's leases, then give up what
//! the plan says (a channel removed from the registry or changed, or one above the fair
//! share) and claim free channels.
//! - **Claim**: the lease's holder becomes the bus's fence for the channel; the open cues a
//!   former owner left (it died: nobody ended them) are ended and published; then the
//!   channel starts at the live edge, its cue ids in the lease's epoch.
//! - **Hand-over** (release): the channel drains (its open cues end and are published under
//!   the lease), the bus is flushed, then the fence is dropped and the lease released.
//! - **Lost** (renewal refused: the lease expired and another took it, e.g. after a pause):
//!   the fence is dropped first, so whatever the draining channel still writes is refused
//!   by Redis; the new owner ends its cues.
//! - Redis unreachable for two thirds of a lease: every channel is stopped the same way
//!   (fenced first): the others will take them once the leases expire.
//!
//! **Any process serves any channel.** Every registered channel this process does not
//! analyse is served here too: `/hls/C/` with the cue ledger fed from the bus and the
//! analysis progress mirrored from the analysing process, which writes its progress to
//! Redis every [`PROGRESS_EVERY`] ([`crate::cuebus::redis::progress_mirror`]); the feed serves
//! registered ids only. With `fleet.analyse = false` a process only serves (an edge).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::channel_set::Registry;
use crate::config::ChannelSettings;
use crate::cue::CueEvent;
use crate::cuebus::redis::lease::{Lease, RedisLeases, holder_pod};
use crate::cuebus::redis::progress_mirror::RedisProgress;
use crate::cuebus::{BusError, CueBus};
use crate::progress::{AnalysisProgress, ProgressSnapshot};
use crate::registry::fleet::{Plan, Round, plan};
use crate::registry::{FleetSettings, RegistryError};

/// How often the analysing process writes its channels' progress and the others read it.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Anchors shared per channel (a live window holds far fewer segments).
const PROGRESS_ANCHORS: usize = 64;
/// A channel's shared progress lives this long after its last write.
const PROGRESS_TTL_MS: u64 = 30_000;

/// The keeper of this analyser's leases.
pub(super) struct Keeper {
    leases: RedisLeases,
    progress: RedisProgress,
    /// Channels served here but analysed elsewhere.
    mirrors: Mutex<BTreeMap<String, Mirror>>,
    /// Parent of the mirrors' ledger tasks.
    mirror_root: CancellationToken,
    registry: Arc<Registry>,
    bus: Arc<dyn CueBus>,
    settings: FleetSettings,
    max_channels: usize,
    held: Mutex<BTreeMap<String, Held>>,
    /// Channels stopping here (handed over or lost), not to be claimed again until stopped.
    /// Stops run in their own tasks: a slow drain never holds up the renewal of the
    /// other leases.
    stopping: Mutex<BTreeSet<String>>,
    view: Mutex<FleetView>,
}

struct Held {
    lease: Lease,
    url: String,
    /// When the lease was last claimed or renewed (taken before asking): past one lease
    /// time it is gone whatever this process believes (e.g. it was paused).
    renewed: Instant,
    /// Being handed over: the channel drains in its own task while the lease is still
    /// renewed, then the lease is released.
    draining: bool,
}

/// A channel served here from another process's analysis.
struct Mirror {
    url: String,
    progress: Arc<AnalysisProgress>,
    cancel: CancellationToken,
}

/// What `/v1/status` shows of the fleet.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetView {
    pub pod: String,
    pub live_pods: Vec<String>,
    /// Registered channels.
    pub channels: usize,
    /// Channels this analyser holds, with their fencing tokens.
    pub held: BTreeMap<String, u64>,
    /// Channels served here but analysed elsewhere (their progress mirrored).
    pub served_elsewhere: usize,
    /// Whether this process claims channels (`fleet.analyse`).
    pub analyse: bool,
    pub claims: u64,
    pub hand_overs: u64,
    pub lost: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl Keeper {
    pub(super) fn new(
        settings: &crate::config::Settings,
        registry: Arc<Registry>,
        bus: Arc<dyn CueBus>,
    ) -> Result<Arc<Self>, BusError> {
        let fleet = settings.fleet.clone();
        let pod = fleet.pod_name();
        let leases = RedisLeases::new(&settings.redis, &pod, fleet.lease_ms)?;
        tracing::info!(%pod, lease_ms = fleet.lease_ms, capacity = fleet.capacity, "fleet: channels shared through redis leases");
        Ok(Arc::new(Self {
            leases,
            progress: RedisProgress::new(&settings.redis, PROGRESS_TTL_MS)?,
            mirrors: Mutex::new(BTreeMap::new()),
            mirror_root: CancellationToken::new(),
            registry,
            bus,
            max_channels: settings.registry.max_channels,
            settings: fleet,
            held: Mutex::new(BTreeMap::new()),
            stopping: Mutex::new(BTreeSet::new()),
            view: Mutex::new(FleetView {
                pod,
                analyse: settings.fleet.analyse,
                ..FleetView::default()
            }),
        }))
    }

    fn lease_time(&self) -> Duration {
        Duration::from_millis(self.settings.lease_ms)
    }

    /// As of the last round, with the leases held now.
    pub fn view(&self) -> FleetView {
        let mut v = lock(&self.view).clone();
        v.held = lock(&self.held)
            .iter()
            .filter(|(_, h)| h.renewed.elapsed() < self.lease_time())
            .map(|(id, h)| (id.clone(), h.lease.token))
            .collect();
        v.served_elsewhere = lock(&self.mirrors).len();
        v
    }

    /// Rounds until `cancel`; leases stay held for the shutdown's drain
    /// ([`Self::release_all`] gives them up after it).
    pub(super) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let _mirrors = self.mirror_root.clone().drop_guard();
        tokio::spawn(self.clone().share_progress(cancel.clone()));
        let lease = Duration::from_millis(self.settings.lease_ms);
        let mut last_ok = Instant::now();
        loop {
            match self.round().await {
                Ok(()) => {
                    last_ok = Instant::now();
                    lock(&self.view).last_error = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fleet: lease round failed");
                    lock(&self.view).last_error = Some(e.to_string());
                    if last_ok.elapsed() > lease * 2 / 3 {
                        self.stop_all("leases cannot be renewed");
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(lease / 3) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    async fn round(self: &Arc<Self>) -> Result<(), RoundError> {
        let registered = self.registry.registered().await?;
        if self.settings.analyse {
            self.claim_round(&registered).await?;
        }
        for id in self.mirror_others(&registered) {
            self.registry.unserve(&id).await;
        }
        lock(&self.view).channels = registered.len();
        Ok(())
    }

    /// Heartbeat, renew, then hand over and claim as the plan says.
    async fn claim_round(
        self: &Arc<Self>,
        registered: &BTreeMap<String, ChannelSettings>,
    ) -> Result<(), RoundError> {
        let live = self.leases.heartbeat().await?;
        let ids: Vec<String> = registered.keys().cloned().collect();
        let holders = self.leases.holders(&ids).await?;
        self.renew(registered).await?;
        let channels: BTreeMap<String, Option<String>> = ids
            .into_iter()
            .zip(holders)
            .map(|(id, h)| (id, h.map(|h| holder_pod(&h).to_string())))
            .collect();
        let mine = lock(&self.held)
            .iter()
            .filter(|(_, h)| !h.draining)
            .map(|(id, _)| id.clone())
            .collect();
        let plan: Plan = plan(&Round {
            pod: self.leases.pod(),
            live: live.len(),
            channels: &channels,
            mine: &mine,
            capacity: self.settings.capacity,
            max_channels: self.max_channels,
        });
        for id in &plan.release {
            self.hand_over(id, "above this analyser's share");
        }
        for id in &plan.claim {
            let Some(c) = registered.get(id) else {
                continue;
            };
            if lock(&self.stopping).contains(id) || lock(&self.held).contains_key(id) {
                continue;
            }
            let at = Instant::now();
            if let Some(lease) = self.leases.claim(id).await? {
                self.take(c, lease, at).await;
            }
        }
        lock(&self.view).live_pods = live;
        Ok(())
    }

    /// Serve every registered channel not analysed here from its analyser's progress;
    /// stop mirroring those held here now or changed. The ids that left the registry.
    fn mirror_others(&self, registered: &BTreeMap<String, ChannelSettings>) -> Vec<String> {
        let held: BTreeSet<String> = lock(&self.held).keys().cloned().collect();
        let mut mirrors = lock(&self.mirrors);
        let mut gone = Vec::new();
        mirrors.retain(|id, m| {
            let keep = !held.contains(id) && registered.get(id).is_some_and(|c| c.url == m.url);
            if !keep {
                m.cancel.cancel();
                if !registered.contains_key(id) {
                    gone.push(id.clone());
                }
            }
            keep
        });
        for (id, c) in registered {
            if held.contains(id) || mirrors.contains_key(id) {
                continue;
            }
            let progress = Arc::new(AnalysisProgress::default());
            let cancel = self.mirror_root.child_token();
            match self
                .registry
                .serve_elsewhere(c, progress.clone(), cancel.clone())
            {
                Ok(()) => {
                    let url = c.url.clone();
                    mirrors.insert(
                        id.clone(),
                        Mirror {
                            url,
                            progress,
                            cancel,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(channel = %id, error = %e, "fleet: cannot serve the channel")
                }
            }
        }
        gone
    }

    /// Every [`PROGRESS_EVERY`]: write the progress of the channels analysed here, read
    /// that of the channels mirrored here.
    async fn share_progress(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = cancel.cancelled() => return,
            }
            if let Err(e) = self.exchange_progress().await {
                tracing::debug!(error = %e, "fleet: progress not shared this time");
            }
        }
    }

    async fn exchange_progress(&self) -> Result<(), BusError> {
        let held: BTreeSet<String> = lock(&self.held).keys().cloned().collect();
        let mine: Vec<(String, String)> = self
            .registry
            .progress_here()
            .into_iter()
            .filter(|(id, _)| held.contains(id))
            .filter_map(|(id, p)| {
                let json = serde_json::to_string(&p.snapshot(PROGRESS_ANCHORS)).ok()?;
                Some((id, json))
            })
            .collect();
        self.progress.write(&mine).await?;
        let mirrored: Vec<(String, Arc<AnalysisProgress>)> = lock(&self.mirrors)
            .iter()
            .map(|(id, m)| (id.clone(), m.progress.clone()))
            .collect();
        let ids: Vec<String> = mirrored.iter().map(|(id, _)| id.clone()).collect();
        let values = self.progress.read(&ids).await?;
        for ((id, progress), value) in mirrored.iter().zip(values) {
            // None: no analyser has written it yet (or it expired): keep the last seen.
            let Some(value) = value else { continue };
            match serde_json::from_str::<ProgressSnapshot>(&value) {
                Ok(snap) => progress.mirror(&snap),
                Err(e) => {
                    tracing::warn!(channel = %id, error = %e, "fleet: unreadable shared progress")
                }
            }
        }
        Ok(())
    }

    /// Renew every lease held; give up those removed or changed in the registry, and
    /// those another analyser has now.
    async fn renew(
        self: &Arc<Self>,
        registered: &BTreeMap<String, ChannelSettings>,
    ) -> Result<(), BusError> {
        let held: Vec<(String, Lease, String, Instant, bool)> = lock(&self.held)
            .iter()
            .map(|(id, h)| {
                (
                    id.clone(),
                    h.lease.clone(),
                    h.url.clone(),
                    h.renewed,
                    h.draining,
                )
            })
            .collect();
        for (id, lease, url, renewed, draining) in held {
            if renewed.elapsed() >= self.lease_time() {
                // Expired while this process was not looking: another may hold it now.
                self.lose(&id);
                continue;
            }
            let at = Instant::now();
            match registered.get(&id) {
                None if !draining => self.hand_over(&id, "removed from the registry"),
                Some(c) if c.url != url && !draining => self.hand_over(&id, "its URL changed"),
                _ => {
                    if !self.leases.renew(&id, &lease).await? {
                        self.lose(&id);
                    } else if let Some(h) = lock(&self.held).get_mut(&id) {
                        h.renewed = at;
                    }
                }
            }
        }
        Ok(())
    }

    /// Start `c` under `lease`, after ending the open cues a former owner left.
    async fn take(&self, c: &ChannelSettings, lease: Lease, claimed: Instant) {
        self.bus.fence(&c.id, Some(lease.holder.clone()));
        let ended = self.end_orphans(&c.id).await;
        match self.registry.start_leased(c, lease.token) {
            Ok(_) => {
                // Its playlists are now rewritten from this process's own progress.
                if let Some(m) = lock(&self.mirrors).remove(&c.id) {
                    m.cancel.cancel();
                }
                tracing::info!(channel = %c.id, token = lease.token, orphans_ended = ended, "fleet: channel claimed");
                lock(&self.view).claims += 1;
                lock(&self.held).insert(
                    c.id.clone(),
                    Held {
                        lease,
                        url: c.url.clone(),
                        renewed: claimed,
                        draining: false,
                    },
                );
            }
            Err(e) => {
                tracing::warn!(channel = %c.id, error = %e, "fleet: claimed channel cannot start; lease released");
                self.bus.fence(&c.id, None);
                if let Err(e) = self.leases.release(&c.id, &lease).await {
                    tracing::warn!(channel = %c.id, error = %e, "fleet: lease release failed (it expires)");
                }
            }
        }
    }

    /// End (and publish) every cue the channel's snapshot still lists as open: at a claim,
    /// nobody else writes to the channel, so these are a former owner's.
    async fn end_orphans(&self, channel: &str) -> usize {
        let snapshot = match self.bus.snapshot(channel).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%channel, error = %e, "fleet: cannot read the open cues a former owner left");
                return 0;
            }
        };
        let now = Utc::now();
        let n = snapshot.cues.len();
        for mut cue in snapshot.cues {
            cue.end = Some(now.max(cue.start));
            self.bus.publish(CueEvent::End(cue));
        }
        n
    }

    /// Drain `id` in its own task (its open cues end under the lease, which the rounds
    /// keep renewing), then give the lease up.
    fn hand_over(self: &Arc<Self>, id: &str, why: &'static str) {
        match lock(&self.held).get_mut(id) {
            Some(h) if !h.draining => h.draining = true,
            _ => return,
        }
        lock(&self.stopping).insert(id.to_string());
        let (me, id) = (self.clone(), id.to_string());
        tokio::spawn(async move {
            me.registry.stop_leased(&id).await;
            if !me.bus.flush(Duration::from_secs(3)).await {
                tracing::warn!(channel = %id, "fleet: the channel's last events are not all stored before its release");
            }
            let held = lock(&me.held).remove(&id);
            me.bus.fence(&id, None);
            if let Some(h) = held
                && let Err(e) = me.leases.release(&id, &h.lease).await
            {
                tracing::warn!(channel = %id, error = %e, "fleet: lease release failed (it expires)");
            }
            lock(&me.stopping).remove(&id);
            lock(&me.view).hand_overs += 1;
            tracing::info!(channel = %id, why, "fleet: channel handed over");
        });
    }

    /// The lease of `id` is gone: fence first (whatever the channel still writes is
    /// refused), then stop it in its own task.
    fn lose(self: &Arc<Self>, id: &str) {
        let Some(held) = lock(&self.held).remove(id) else {
            return;
        };
        self.bus.fence(id, None);
        lock(&self.view).lost += 1;
        tracing::warn!(channel = %id, "fleet: lease lost to another analyser; channel stopped, its late writes refused");
        if held.draining {
            return; // its hand-over task is stopping it
        }
        lock(&self.stopping).insert(id.to_string());
        let (me, id) = (self.clone(), id.to_string());
        tokio::spawn(async move {
            me.registry.stop_leased(&id).await;
            lock(&me.stopping).remove(&id);
        });
    }

    fn stop_all(self: &Arc<Self>, why: &str) {
        let ids: Vec<String> = lock(&self.held).keys().cloned().collect();
        for id in ids {
            tracing::warn!(channel = %id, why, "fleet: stopping channel");
            self.lose(&id);
        }
    }

    /// After the shutdown's drain and flush: release every lease and leave the fleet, so
    /// the others take the channels at once instead of after a lease time.
    pub(super) async fn release_all(&self) {
        let held: Vec<(String, Lease)> = std::mem::take(&mut *lock(&self.held))
            .into_iter()
            .map(|(id, h)| (id, h.lease))
            .collect();
        for (id, lease) in held {
            self.bus.fence(&id, None);
            if let Err(e) = self.leases.release(&id, &lease).await {
                tracing::warn!(channel = %id, error = %e, "fleet: lease release failed (it expires)");
            }
        }
        if let Err(e) = self.leases.leave().await {
            tracing::warn!(error = %e, "fleet: could not leave the fleet (the heartbeat expires)");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
