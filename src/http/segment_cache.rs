//! The HLS proxy's cache of origin segments (`manifest.segment_cache_mb`,
//! `manifest.segment_cache_ttl_ms`): a segment (or byte range) as the origin sent it, keyed
//! by channel, request path *after* the client's query string was filtered
//! (`manifest.client_query`) and byte range, so players asking for the same segment, each
//! with its own cache-buster, make one origin fetch between them. Concurrent misses of one
//! key wait for a single fetch (the slot's `fetch` lock). Cues are written into a segment
//! after the cache, so a cached segment carries the cues of the moment it is served.
//!
//! Bounded in bytes: past the budget, stale entries go first, then the ones stored
//! earliest (live players ask for the newest segments). A segment larger than the whole
//! budget is served but not kept. The number of keys is bounded too (pending ones
//! included), so requests for ever new paths cannot grow it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Keys kept at most (all channels); beyond, stale and pending ones are dropped, then all.
const MAX_KEYS: usize = 8192;

/// What a cached answer is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SegmentKey {
    pub channel: String,
    /// The path under the channel's base, with the query string that reaches the origin.
    pub rel: String,
    /// The byte range asked for, as (offset, length).
    pub range: Option<(u64, u64)>,
}

struct Stored<E> {
    at: Instant,
    ttl: Duration,
    answer: Result<Bytes, E>,
}

/// One key's answer, and the lock its single origin fetch holds.
pub struct SegmentSlot<E> {
    value: Mutex<Option<Stored<E>>>,
    /// Held while the answer is fetched: concurrent misses wait here, then find it fresh.
    pub fetch: tokio::sync::Mutex<()>,
}

impl<E: Clone> SegmentSlot<E> {
    fn new() -> Self {
        Self {
            value: Mutex::new(None),
            fetch: tokio::sync::Mutex::new(()),
        }
    }

    /// The stored answer if it is still fresh.
    pub fn fresh(&self) -> Option<Result<Bytes, E>> {
        lock(&self.value)
            .as_ref()
            .filter(|s| s.at.elapsed() < s.ttl)
            .map(|s| s.answer.clone())
    }

    fn is_fresh(&self) -> bool {
        lock(&self.value)
            .as_ref()
            .is_some_and(|s| s.at.elapsed() < s.ttl)
    }

    fn stored_at(&self) -> Option<Instant> {
        lock(&self.value).as_ref().map(|s| s.at)
    }
}

struct Entry<E> {
    slot: Arc<SegmentSlot<E>>,
    /// Bytes of its stored answer (0 while pending or for an error).
    bytes: usize,
}

struct Entries<E> {
    map: HashMap<SegmentKey, Entry<E>>,
    bytes: usize,
}

impl<E> Entries<E> {
    fn remove(&mut self, key: &SegmentKey) {
        if let Some(e) = self.map.remove(key) {
            self.bytes -= e.bytes;
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&SegmentKey, &Entry<E>) -> bool) {
        let mut bytes = self.bytes;
        self.map.retain(|k, e| {
            let kept = keep(k, e);
            if !kept {
                bytes -= e.bytes;
            }
            kept
        });
        self.bytes = bytes;
    }
}

/// Origin segments by key, `max_bytes` of them at most, each reused for `ttl`. `E`: the
/// error answer kept (briefly) in place of a segment the origin would not give.
pub struct SegmentCache<E> {
    max_bytes: usize,
    ttl: Duration,
    entries: Mutex<Entries<E>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<E: Clone> SegmentCache<E> {
    pub fn new(max_bytes: usize, ttl: Duration) -> Self {
        Self {
            max_bytes,
            ttl,
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                bytes: 0,
            }),
        }
    }

    /// How long a segment is reused.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Bytes of segments held now.
    pub fn bytes(&self) -> usize {
        lock(&self.entries).bytes
    }

    /// The slot of `key`, made (empty) when there is none.
    pub fn slot(&self, key: &SegmentKey) -> Arc<SegmentSlot<E>> {
        let mut g = lock(&self.entries);
        if let Some(e) = g.map.get(key) {
            return e.slot.clone();
        }
        if g.map.len() >= MAX_KEYS {
            g.retain(|_, e| e.slot.is_fresh());
            if g.map.len() >= MAX_KEYS {
                g.map.clear();
                g.bytes = 0;
            }
        }
        let slot = Arc::new(SegmentSlot::new());
        g.map.insert(
            key.clone(),
            Entry {
                slot: slot.clone(),
                bytes: 0,
            },
        );
        slot
    }

    /// Stores `answer` in `slot` (the slot of `key`) for `ttl`, then trims the cache to its
    /// budget. A segment over the whole budget is not kept.
    pub fn store(
        &self,
        key: &SegmentKey,
        slot: &Arc<SegmentSlot<E>>,
        answer: Result<Bytes, E>,
        ttl: Duration,
    ) {
        let bytes = answer.as_ref().map_or(0, Bytes::len);
        let mut g = lock(&self.entries);
        // Those waiting on this slot get the answer in any case.
        *lock(&slot.value) = Some(Stored {
            at: Instant::now(),
            ttl,
            answer,
        });
        g.remove(key);
        if bytes > self.max_bytes {
            return;
        }
        // The slot may have been dropped from the map meanwhile (trimmed, or the channel
        // forgotten): it comes back with its answer.
        g.map.insert(
            key.clone(),
            Entry {
                slot: slot.clone(),
                bytes,
            },
        );
        g.bytes += bytes;
        self.trim(&mut g);
    }

    /// Within the budget again: stale entries out, then the earliest stored.
    fn trim(&self, g: &mut Entries<E>) {
        if g.bytes <= self.max_bytes {
            return;
        }
        g.retain(|_, e| e.bytes == 0 || e.slot.is_fresh());
        while g.bytes > self.max_bytes {
            let Some(oldest) = g
                .map
                .iter()
                .filter(|(_, e)| e.bytes > 0)
                .min_by_key(|(_, e)| e.slot.stored_at())
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            g.remove(&oldest);
        }
    }

    /// Drops every entry of `channel` (removed, or replaced with another origin).
    pub fn forget_channel(&self, channel: &str) {
        lock(&self.entries).retain(|k, _| k.channel != channel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rel: &str) -> SegmentKey {
        SegmentKey {
            channel: "ch".into(),
            rel: rel.into(),
            range: None,
        }
    }

    fn put(c: &SegmentCache<String>, rel: &str, len: usize) {
        let k = key(rel);
        let slot = c.slot(&k);
        c.store(&k, &slot, Ok(Bytes::from(vec![0u8; len])), c.ttl());
    }

    #[test]
    fn one_slot_per_key_and_answers_until_stale() {
        let c: SegmentCache<String> = SegmentCache::new(1000, Duration::from_secs(60));
        let a = c.slot(&key("a.ts"));
        assert!(Arc::ptr_eq(&a, &c.slot(&key("a.ts"))));
        assert!(a.fresh().is_none());
        c.store(&key("a.ts"), &a, Ok(Bytes::from_static(b"seg")), c.ttl());
        assert_eq!(
            c.slot(&key("a.ts")).fresh(),
            Some(Ok(Bytes::from_static(b"seg")))
        );
        assert_eq!(c.bytes(), 3);
        let ranged = SegmentKey {
            range: Some((0, 2)),
            ..key("a.ts")
        };
        assert!(c.slot(&ranged).fresh().is_none(), "a range is its own key");
        // An error answer for a moment; no bytes counted.
        let b = c.slot(&key("b.ts"));
        c.store(&key("b.ts"), &b, Err("502".into()), Duration::ZERO);
        assert!(b.fresh().is_none(), "stale at once");
        assert_eq!(c.bytes(), 3);
    }

    #[test]
    fn stays_within_its_byte_budget_dropping_the_earliest() {
        let c: SegmentCache<String> = SegmentCache::new(1000, Duration::from_secs(60));
        for (i, rel) in ["1.ts", "2.ts", "3.ts", "4.ts"].iter().enumerate() {
            put(&c, rel, 400);
            assert!(c.bytes() <= 1000, "after {i}: {}", c.bytes());
        }
        assert!(c.slot(&key("1.ts")).fresh().is_none(), "the earliest went");
        assert!(c.slot(&key("2.ts")).fresh().is_none());
        assert!(c.slot(&key("3.ts")).fresh().is_some());
        assert!(c.slot(&key("4.ts")).fresh().is_some());
        // Over the whole budget: served by the caller, never kept.
        put(&c, "big.ts", 1001);
        assert!(c.slot(&key("big.ts")).fresh().is_none());
        assert_eq!(c.bytes(), 800);
        c.forget_channel("ch");
        assert_eq!(c.bytes(), 0);
        assert!(c.slot(&key("3.ts")).fresh().is_none());
    }

    #[test]
    fn keys_are_bounded() {
        let c: SegmentCache<String> = SegmentCache::new(1 << 20, Duration::from_secs(60));
        for i in 0..(MAX_KEYS + 10) {
            c.slot(&key(&format!("{i}.ts")));
        }
        assert!(lock(&c.entries).map.len() <= MAX_KEYS);
    }
}
