//! The cue bus: where cue events go once they are made, and where WebSocket servers read
//! them from. Two implementations behind one trait, [`CueBus`]:
//!
//! - [`memory::MemoryBus`] (the default): one process; per channel a broadcast to live
//!   subscribers, a bounded history (`bus.history` records) for resuming, and a map of the
//!   active cues.
//! - [`redis::RedisBus`] (when `redis.url` is set): Redis Streams, so cues made on one
//!   machine reach WebSocket servers on others. One stream per channel (`XADD … MAXLEN`),
//!   the stream ids are the offsets, and a hash per channel holds the active cues (written
//!   in the same atomic script as the XADD, so a snapshot and its offset always agree).
//!   Publishing never blocks and never fails: while Redis is unreachable, events wait in a
//!   bounded outbox (`redis.outage_buffer`; when full the OLDEST is dropped, counted and
//!   logged) and are flushed, in order and exactly once, on reconnect. A channel whose
//!   keys Redis refuses for good (wrong type) has its events dropped and counted
//!   (`rejected`), not retried, and the other channels keep flowing.
//!
//! Every record carries an [`Offset`]: strictly increasing per channel, rendered like a
//! Redis stream id (`1763719200000-0`), opaque to clients. A subscriber that takes a
//! [`CueBus::subscribe`] receiver FIRST and then a [`CueBus::snapshot`] (or a
//! [`CueBus::replay`]) gets every event exactly once by skipping live records whose offset
//! is not above the snapshot's.

pub mod memory;
pub mod redis;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::cue::{Cue, CueEvent};

pub use self::redis::RedisSettings;

/// Live records a bus keeps for a slow subscriber per channel before it reports a lag
/// (the WebSocket feed's per-channel hub drains this promptly and recovers from history).
pub const LIVE_CAPACITY: usize = 4096;

#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    #[error("redis url `{url}`: {why}")]
    BadUrl { url: String, why: String },
    #[error("redis {op} for channel `{channel}`: {why}")]
    Redis {
        op: &'static str,
        channel: String,
        why: String,
    },
    /// Redis refused a channel's events for good (they are dropped, not retried).
    #[error(
        "redis refuses the cue events of channel `{channel}` (dropped, not retried): key `{key}` {why}"
    )]
    Rejected {
        channel: String,
        key: String,
        why: String,
    },
    #[error("bus is shut down")]
    Closed,
}

/// Bus settings that apply whichever implementation runs (`[bus]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BusSettings {
    /// Records kept per channel for resuming (`?since=`): the in-memory bound, and the
    /// Redis stream's `MAXLEN`.
    pub history: usize,
}

impl Default for BusSettings {
    fn default() -> Self {
        Self { history: 10_000 }
    }
}

impl BusSettings {
    /// `Err((key, why))` with the key relative to `[bus]`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=10_000_000).contains(&self.history) {
            return Err(("history", "must be from 1 to 10000000".into()));
        }
        Ok(())
    }
}

/// Position of a record in a channel's stream: `ms-seq`, ordered by `(ms, seq)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset {
    pub ms: u64,
    pub seq: u64,
}

impl Offset {
    /// Before every record: `?since=0` asks for the whole retained history.
    pub const ZERO: Offset = Offset { ms: 0, seq: 0 };

    /// The offset that follows `self` at wall-clock `now_ms` (Redis's rule: the time, or
    /// the same millisecond with the next sequence when the clock has not moved on).
    pub fn next_after(self, now_ms: u64) -> Offset {
        if now_ms > self.ms {
            Offset { ms: now_ms, seq: 0 }
        } else {
            Offset {
                ms: self.ms,
                seq: self.seq.saturating_add(1),
            }
        }
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl std::str::FromStr for Offset {
    type Err = String;
    /// `ms-seq` or `ms` (sequence 0).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not an offset (`<ms>-<seq>` or `<ms>`)");
        let (ms, seq) = match s.split_once('-') {
            Some((ms, seq)) => (ms, seq),
            None => (s, "0"),
        };
        let digits =
            |v: &str| !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(bad());
        }
        Ok(Offset {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// One event on a channel's stream.
#[derive(Debug, Clone, PartialEq)]
pub struct CueRecord {
    pub offset: Offset,
    pub event: CueEvent,
}

impl CueRecord {
    pub fn channel(&self) -> &str {
        &self.event.cue().channel
    }
}

/// The active cues of a channel (started, not ended) as of `offset`.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub offset: Offset,
    /// Ordered by start time, then id.
    pub cues: Vec<Cue>,
}

/// Answer to "what came after this offset".
#[derive(Debug, Clone, PartialEq)]
pub enum Replay {
    /// Every record after the offset, oldest first (possibly none).
    Records(Vec<Arc<CueRecord>>),
    /// The offset is not in the retained history (trimmed, never existed, or the store was
    /// reset): the caller must start from a snapshot instead.
    NotInHistory,
}

/// Counters of a bus, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BusStats {
    /// Events handed to `publish`.
    pub published: u64,
    /// Events stored on the bus (in memory: all of them; Redis: XADDed).
    pub stored: u64,
    /// Events waiting in the outage buffer (Redis only).
    pub buffered: usize,
    /// Events dropped because the outage buffer was full (oldest first).
    pub dropped: u64,
    /// Successful (re)connections to Redis after a failure.
    pub reconnects: u64,
    /// Whether the last operation against the store succeeded.
    pub healthy: bool,
    /// Events the store refused for good (Redis: e.g. the channel's key holds another
    /// type); dropped, not retried, so they never hold up other channels.
    pub rejected: u64,
    /// The latest such refusal, naming the channel, the key and why.
    pub last_rejection: Option<String>,
    /// Events refused because this process no longer held the channel's lease (fleet
    /// fencing, Redis only): a former owner's late writes.
    pub fenced: u64,
}

/// A cue bus. Cheap to share as `Arc<dyn CueBus>`; must be created inside a tokio runtime.
pub trait CueBus: Send + Sync + 'static {
    /// Which implementation: `memory` or `redis`.
    fn kind(&self) -> &'static str;

    /// Hand an event to the bus. Never blocks, never fails: see the module docs for what
    /// happens while the store is unreachable.
    fn publish(&self, event: CueEvent);

    /// Live records of a channel from now on. Take it before [`Self::snapshot`] or
    /// [`Self::replay`] and skip records at or below their offset.
    fn subscribe<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<broadcast::Receiver<Arc<CueRecord>>, BusError>>;

    /// The channel's active cues and the offset they reflect.
    fn snapshot<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Snapshot, BusError>>;

    /// Records after `after` (exclusive) from the retained history.
    fn replay<'a>(
        &'a self,
        channel: &'a str,
        after: Offset,
    ) -> BoxFuture<'a, Result<Replay, BusError>>;

    /// Wait until every published event is stored (or `timeout` passes): true when done.
    fn flush(&self, timeout: Duration) -> BoxFuture<'_, bool>;

    fn stats(&self) -> BusStats;

    /// Fleet fencing (`[fleet]`, Redis only; nothing in memory). After the first call every
    /// write of any channel must carry the lease it is written under: `Some(holder)` is
    /// this process's lease of `channel` (the lease key's value), `None` says it holds none.
    /// The store refuses a write whose holder is not the lease key's value at that moment
    /// (counted in [`BusStats::fenced`]), so a paused or cut-off former owner never writes
    /// again once another has the lease.
    fn fence(&self, _channel: &str, _holder: Option<String>) {}
}

/// The bus the settings ask for: Redis when `redis.url` is set, else in memory. Redis
/// need not be reachable yet (events wait in the outage buffer).
pub fn connect(bus: &BusSettings, redis: &RedisSettings) -> Result<Arc<dyn CueBus>, BusError> {
    if redis.url.trim().is_empty() {
        Ok(Arc::new(memory::MemoryBus::new(bus.history)))
    } else {
        Ok(self::redis::RedisBus::connect(bus, redis)?)
    }
}

/// Sort cues as snapshots list them.
pub(crate) fn sort_cues(cues: &mut [Cue]) {
    cues.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.id.cmp(&b.id)));
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_print_and_order() {
        let o: Offset = "1763719200000-3".parse().unwrap();
        assert_eq!(
            o,
            Offset {
                ms: 1763719200000,
                seq: 3
            }
        );
        assert_eq!(o.to_string(), "1763719200000-3");
        assert_eq!("42".parse::<Offset>().unwrap(), Offset { ms: 42, seq: 0 });
        assert_eq!("0".parse::<Offset>().unwrap(), Offset::ZERO);
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "a-1",
            "1-2-3",
            "1.5",
            " 1",
            "99999999999999999999999",
        ] {
            assert!(bad.parse::<Offset>().is_err(), "{bad}");
        }
        assert!(Offset { ms: 1, seq: 9 } < Offset { ms: 2, seq: 0 });
    }

    proptest::proptest! {
        #[test]
        fn offsets_round_trip(ms in 0u64.., seq in 0u64..) {
            let o = Offset { ms, seq };
            proptest::prop_assert_eq!(o.to_string().parse::<Offset>(), Ok(o));
        }

        #[test]
        fn offset_parsing_never_panics(s in ".{0,48}") {
            let _ = s.parse::<Offset>();
        }
    }

    #[test]
    fn next_offset_is_strictly_increasing() {
        let a = Offset { ms: 100, seq: 0 };
        assert_eq!(a.next_after(101), Offset { ms: 101, seq: 0 });
        assert_eq!(a.next_after(100), Offset { ms: 100, seq: 1 });
        // The clock went back: stay on the last millisecond.
        assert_eq!(a.next_after(50), Offset { ms: 100, seq: 1 });
    }
}
