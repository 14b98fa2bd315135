//! The in-memory bus: one process, per channel a broadcast, a bounded history and the
//! active cues, all under one lock so an offset, the history and the snapshot agree.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::broadcast;

use super::{BusError, BusStats, CueBus, CueRecord, LIVE_CAPACITY, Offset, Replay, Snapshot};
use crate::cue::{Cue, CueEvent};

struct ChannelState {
    last: Offset,
    history: VecDeque<Arc<CueRecord>>,
    /// Whether any record was dropped from the front of `history`.
    trimmed: bool,
    active: HashMap<String, Cue>,
    live: broadcast::Sender<Arc<CueRecord>>,
}

impl ChannelState {
    fn new() -> Self {
        Self {
            last: Offset::ZERO,
            history: VecDeque::new(),
            trimmed: false,
            active: HashMap::new(),
            live: broadcast::channel(LIVE_CAPACITY).0,
        }
    }
}

/// In-memory [`CueBus`]: history bounded to `history` records per channel (oldest dropped).
pub struct MemoryBus {
    history: usize,
    channels: Mutex<HashMap<String, ChannelState>>,
    published: AtomicU64,
    /// Channel count at which the next new channel first prunes the empty ones.
    prune_at: AtomicUsize,
}

/// Below this many channels nothing is pruned.
const PRUNE_FLOOR: usize = 64;

impl MemoryBus {
    pub fn new(history: usize) -> Self {
        Self {
            history: history.max(1),
            channels: Mutex::new(HashMap::new()),
            published: AtomicU64::new(0),
            prune_at: AtomicUsize::new(PRUNE_FLOOR),
        }
    }

    fn with_channel<T>(&self, channel: &str, f: impl FnOnce(&mut ChannelState) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-update of plain data.
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(channel) && map.len() >= self.prune_at.load(Ordering::Relaxed) {
            // A channel nothing was published on and nobody subscribes to any more holds
            // nothing worth keeping; without this every channel id a client ever asked for
            // would keep its state (and its live buffer) for good. Amortised: the map has
            // doubled since the last prune.
            map.retain(|_, st| st.last != Offset::ZERO || st.live.receiver_count() > 0);
            self.prune_at
                .store((map.len() * 2).max(PRUNE_FLOOR), Ordering::Relaxed);
        }
        let state = map
            .entry(channel.to_string())
            .or_insert_with(ChannelState::new);
        f(state)
    }

    /// Store an event and return its record (what `publish` does, with the answer).
    pub fn publish_record(&self, event: CueEvent) -> Arc<CueRecord> {
        self.published.fetch_add(1, Ordering::Relaxed);
        let channel = event.cue().channel.clone();
        let history = self.history;
        self.with_channel(&channel, |st| {
            let offset = st.last.next_after(super::now_ms());
            st.last = offset;
            match &event {
                CueEvent::Start(c) | CueEvent::Update(c) => {
                    st.active.insert(c.id.clone(), c.clone());
                }
                CueEvent::End(c) => {
                    st.active.remove(&c.id);
                }
            }
            let record = Arc::new(CueRecord { offset, event });
            st.history.push_back(record.clone());
            while st.history.len() > history {
                st.history.pop_front();
                st.trimmed = true;
            }
            // No receivers is fine: the record stays in the history.
            let _ = st.live.send(record.clone());
            record
        })
    }
}

impl CueBus for MemoryBus {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn publish(&self, event: CueEvent) {
        self.publish_record(event);
    }

    fn subscribe<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<broadcast::Receiver<Arc<CueRecord>>, BusError>> {
        let rx = self.with_channel(channel, |st| st.live.subscribe());
        async move { Ok(rx) }.boxed()
    }

    fn snapshot<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Snapshot, BusError>> {
        let snap = self.with_channel(channel, |st| {
            let mut cues: Vec<Cue> = st.active.values().cloned().collect();
            super::sort_cues(&mut cues);
            Snapshot {
                offset: st.last,
                cues,
            }
        });
        async move { Ok(snap) }.boxed()
    }

    fn replay<'a>(
        &'a self,
        channel: &'a str,
        after: Offset,
    ) -> BoxFuture<'a, Result<Replay, BusError>> {
        let answer = self.with_channel(channel, |st| replay_from(&st.history, st.trimmed, after));
        async move { Ok(answer) }.boxed()
    }

    fn flush(&self, _timeout: Duration) -> BoxFuture<'_, bool> {
        async { true }.boxed()
    }

    fn stats(&self) -> BusStats {
        let published = self.published.load(Ordering::Relaxed);
        BusStats {
            published,
            stored: published,
            healthy: true,
            ..BusStats::default()
        }
    }
}

/// Records after `after` in a history sorted by offset; `after` must be a retained offset,
/// or ZERO when nothing was trimmed.
fn replay_from(history: &VecDeque<Arc<CueRecord>>, trimmed: bool, after: Offset) -> Replay {
    if after == Offset::ZERO {
        return if trimmed {
            Replay::NotInHistory
        } else {
            Replay::Records(history.iter().cloned().collect())
        };
    }
    match history.binary_search_by(|r| r.offset.cmp(&after)) {
        Ok(i) => Replay::Records(history.iter().skip(i + 1).cloned().collect()),
        Err(_) => Replay::NotInHistory,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channels(bus: &MemoryBus) -> usize {
        bus.channels.lock().unwrap().len()
    }

    #[tokio::test]
    async fn channels_only_asked_about_do_not_accumulate() {
        let bus = MemoryBus::new(10);
        let kept = bus.subscribe("held").await.unwrap();
        for i in 0..10_000 {
            let id = format!("random-{i}");
            drop(bus.subscribe(&id).await.unwrap());
            bus.snapshot(&id).await.unwrap();
        }
        assert!(channels(&bus) <= 2 * PRUNE_FLOOR, "{}", channels(&bus));
        // A held subscription survives the pruning and still gets its channel's records.
        let mut kept = kept;
        let cue = crate::cue::Cue {
            source: Default::default(),
            id: "c".into(),
            channel: "held".into(),
            product_id: "p".into(),
            start: chrono::DateTime::from_timestamp_millis(1_795_000_000_000).unwrap(),
            end: None,
            pts: 0.0,
            score: 0.5,
            shot: 0,
            boxes: vec![],
            product: None,
        };
        bus.publish(CueEvent::Start(cue));
        assert_eq!(kept.try_recv().unwrap().channel(), "held");
    }
}
