//! What ingest has analysed, shared with the HLS proxy: the highest media sequence number
//! decoded and each recent segment's wall-clock anchor (`msn -> first frame's wall clock`),
//! so the sidecar's playlists carry the analysis timeline and hold back what is not
//! analysed yet. Without an analysis pipeline a decoded segment counts as analysed; once a
//! pipeline is attached ([`AnalysisProgress::gate`]) a segment counts only when the
//! pipeline reports every frame up to the segment's end analysed
//! ([`AnalysisProgress::analysed_until`]). Bounded: the oldest anchors are dropped beyond [`MAX_ANCHORS`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What [`AnalysisProgress::snapshot`] shares: the highest analysed media sequence number
/// and the newest anchors (`msn`, wall clock of its first frame).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressSnapshot {
    pub highest: Option<u64>,
    pub anchors: Vec<(u64, DateTime<Utc>)>,
}

/// Anchors kept (a live window is far smaller).
pub const MAX_ANCHORS: usize = 4096;

#[derive(Debug)]
pub struct AnalysisProgress {
    /// Highest analysed media sequence number, -1 for none.
    highest: AtomicI64,
    anchors: Mutex<BTreeMap<u64, DateTime<Utc>>>,
    /// Segment ends (`msn -> wall clock after its last frame`), while gated.
    ends: Mutex<BTreeMap<u64, DateTime<Utc>>>,
    gated: std::sync::atomic::AtomicBool,
    /// Milliseconds since the epoch up to which the pipeline has analysed every frame.
    until_ms: AtomicI64,
}

impl Default for AnalysisProgress {
    fn default() -> Self {
        Self {
            highest: AtomicI64::new(-1),
            anchors: Mutex::new(BTreeMap::new()),
            ends: Mutex::new(BTreeMap::new()),
            gated: std::sync::atomic::AtomicBool::new(false),
            until_ms: AtomicI64::new(i64::MIN),
        }
    }
}

impl AnalysisProgress {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, DateTime<Utc>>> {
        self.anchors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Segment `msn` starting at `wallclock` has been decoded (analysed).
    pub fn record(&self, msn: u64, wallclock: DateTime<Utc>) {
        self.set_anchor(msn, wallclock);
        self.mark_analysed(msn);
    }

    /// From now on a segment is analysed only when [`Self::analysed_until`] passes its end.
    pub fn gate(&self) {
        self.gated.store(true, Ordering::Relaxed);
    }

    pub fn is_gated(&self) -> bool {
        self.gated.load(Ordering::Relaxed)
    }

    /// Ingest decoded segment `msn`, `start..end` in wall clock: an anchor, and analysed
    /// now (ungated) or once the pipeline gets past `end` (gated).
    pub fn record_segment(&self, msn: u64, start: DateTime<Utc>, end: DateTime<Utc>) {
        if !self.is_gated() {
            self.record(msn, start);
            return;
        }
        self.set_anchor(msn, start);
        {
            let mut g = self.ends.lock().unwrap_or_else(|p| p.into_inner());
            g.insert(msn, end);
            while g.len() > MAX_ANCHORS {
                g.pop_first();
            }
        }
        self.advance();
    }

    /// The pipeline has analysed every frame before `wallclock`.
    pub fn analysed_until(&self, wallclock: DateTime<Utc>) {
        self.until_ms
            .fetch_max(wallclock.timestamp_millis(), Ordering::Relaxed);
        self.advance();
    }

    /// Marks the consecutive segments whose end the pipeline has passed (1 ms slack for
    /// rounding).
    fn advance(&self) {
        let until = self.until_ms.load(Ordering::Relaxed);
        let from = self.highest_analysed().map_or(0, |h| h + 1);
        let g = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        for (msn, end) in g.range(from..) {
            if end.timestamp_millis() > until.saturating_add(1) {
                break;
            }
            self.mark_analysed(*msn);
        }
    }

    /// The origin's media sequence started over (an origin restart, or leaving a bogus
    /// jump): what was recorded under the old numbers is forgotten, so it neither marks
    /// the new segments analysed nor anchors them.
    pub fn restart(&self) {
        self.lock().clear();
        self.ends.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.highest.store(-1, Ordering::Relaxed);
    }

    /// The wall clock of `msn`'s first frame, without marking it analysed.
    pub fn set_anchor(&self, msn: u64, wallclock: DateTime<Utc>) {
        let mut g = self.lock();
        g.insert(msn, wallclock);
        while g.len() > MAX_ANCHORS {
            g.pop_first();
        }
    }

    /// Everything up to `msn` has been analysed (segments are analysed in order).
    pub fn mark_analysed(&self, msn: u64) {
        let v = i64::try_from(msn).unwrap_or(i64::MAX);
        self.highest.fetch_max(v, Ordering::Relaxed);
    }

    pub fn highest_analysed(&self) -> Option<u64> {
        let v = self.highest.load(Ordering::Relaxed);
        (v >= 0).then_some(v as u64)
    }

    pub fn is_analysed(&self, msn: u64) -> bool {
        self.highest_analysed().is_some_and(|h| msn <= h)
    }

    pub fn anchor(&self, msn: u64) -> Option<DateTime<Utc>> {
        self.lock().get(&msn).copied()
    }

    /// The highest analysed segment and the newest `max` anchors, to share with other
    /// processes that serve this channel's playlists ([`Self::mirror`]).
    pub fn snapshot(&self, max: usize) -> ProgressSnapshot {
        let g = self.lock();
        let skip = g.len().saturating_sub(max);
        ProgressSnapshot {
            highest: self.highest_analysed(),
            anchors: g.iter().skip(skip).map(|(k, v)| (*k, *v)).collect(),
        }
    }

    /// Become `snap` (another process analyses the channel): its anchors and highest
    /// analysed segment replace this progress's, so playlists rewritten here equal the
    /// analysing process's. Never gated.
    pub fn mirror(&self, snap: &ProgressSnapshot) {
        {
            let mut g = self.lock();
            *g = snap.anchors.iter().copied().collect();
        }
        let v = snap
            .highest
            .map_or(-1, |h| i64::try_from(h).unwrap_or(i64::MAX));
        self.highest.store(v, Ordering::Relaxed);
    }

    /// The anchors in `[from, to]`, for a rewrite without holding the lock.
    pub fn anchors_between(&self, from: u64, to: u64) -> BTreeMap<u64, DateTime<Utc>> {
        if from > to {
            return BTreeMap::new();
        }
        self.lock()
            .range(from..=to)
            .map(|(k, v)| (*k, *v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mirror_equals_the_snapshot_it_was_given_even_through_json() {
        let p = AnalysisProgress::default();
        let t0 = DateTime::from_timestamp(1_800_000_000, 123_456_789).unwrap();
        for msn in 10..20u64 {
            p.record(msn, t0 + chrono::Duration::milliseconds(2002 * msn as i64));
        }
        let snap = p.snapshot(4);
        assert_eq!(snap.highest, Some(19));
        assert_eq!(snap.anchors.len(), 4);
        assert_eq!(snap.anchors[0].0, 16);
        let json = serde_json::to_string(&snap).unwrap();
        let back: ProgressSnapshot = serde_json::from_str(&json).unwrap();
        let m = AnalysisProgress::default();
        m.record(3, t0); // replaced, not merged
        m.mirror(&back);
        assert_eq!(m.highest_analysed(), Some(19));
        assert_eq!(m.anchor(3), None);
        assert_eq!(m.anchors_between(0, 100), p.anchors_between(16, 19));
        m.mirror(&ProgressSnapshot {
            highest: None,
            anchors: vec![],
        });
        assert_eq!(m.highest_analysed(), None);
    }

    #[test]
    fn a_restarted_sequence_forgets_the_old_numbers() {
        let p = AnalysisProgress::default();
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        p.record(1_000_021, t0);
        assert!(p.is_analysed(5));
        p.restart();
        assert_eq!(p.highest_analysed(), None);
        assert!(!p.is_analysed(5));
        assert_eq!(p.anchor(1_000_021), None);
        p.record(7, t0);
        assert_eq!(p.highest_analysed(), Some(7));
    }

    #[test]
    fn gated_progress_follows_the_pipeline() {
        let t = |s: i64| DateTime::from_timestamp(1_763_719_200 + s, 0).unwrap();
        let p = AnalysisProgress::default();
        p.gate();
        p.record_segment(10, t(0), t(2));
        p.record_segment(11, t(2), t(4));
        assert_eq!(p.anchor(11), Some(t(2)));
        assert_eq!(p.highest_analysed(), None);
        p.analysed_until(t(3));
        assert_eq!(p.highest_analysed(), Some(10));
        p.analysed_until(t(1)); // never back
        p.record_segment(12, t(4), t(6));
        p.analysed_until(t(6));
        assert_eq!(p.highest_analysed(), Some(12));
        // Ungated: decoded is analysed.
        let q = AnalysisProgress::default();
        q.record_segment(3, t(0), t(2));
        assert!(q.is_analysed(3));
    }

    #[test]
    fn progress_is_monotonic_and_bounded() {
        let p = AnalysisProgress::default();
        assert_eq!(p.highest_analysed(), None);
        assert!(!p.is_analysed(0));
        let t = DateTime::from_timestamp_millis(1_795_000_000_000).unwrap();
        p.record(5, t);
        p.mark_analysed(3);
        assert_eq!(p.highest_analysed(), Some(5));
        assert!(p.is_analysed(4) && !p.is_analysed(6));
        assert_eq!(p.anchor(5), Some(t));
        for i in 0..(MAX_ANCHORS as u64 + 10) {
            p.set_anchor(i, t);
        }
        assert_eq!(p.anchor(0), None);
        assert_eq!(p.anchors_between(10, 12).len(), 3);
        assert!(p.anchors_between(12, 10).is_empty());
    }
}
