//! Hold-back: publish a segment in the sidecar's playlists only once it has been analysed
//! (or a deadline after the end of its wall-clock range has passed), so it carries its
//! cues the first time players see it. Segments are published in order: one that waits
//! holds back every later one. The cost is latency: the sidecar's live edge trails the
//! origin's by the duration of the segments held back.

use chrono::{DateTime, Duration, Utc};

/// A segment of the live window, in media-sequence order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentTiming {
    pub msn: u64,
    /// Wall clock of its first frame (ingest's anchor).
    pub start: DateTime<Utc>,
    /// Seconds.
    pub duration: f64,
}

impl SegmentTiming {
    pub fn end(&self) -> DateTime<Utc> {
        let micros = if self.duration.is_finite() && self.duration > 0.0 {
            (self.duration * 1e6).min(1e12) as i64
        } else {
            0
        };
        self.start
            .checked_add_signed(Duration::microseconds(micros))
            .unwrap_or(self.start)
    }
}

/// What may be published now.
#[derive(Debug, Clone, PartialEq)]
pub struct HoldBack {
    /// The last media sequence number that may be published (`None`: none yet).
    pub publish_through: Option<u64>,
    /// Segments held back, in order.
    pub withheld: Vec<u64>,
    /// Published without analysis because their deadline passed.
    pub forced: Vec<u64>,
    /// Latency added: the duration of the segments held back, in seconds.
    pub added_delay_s: f64,
}

/// `segments` in order; `analysed(msn)` says whether analysis is done; a segment not
/// analysed is published anyway once `now ≥ its end + deadline`.
pub fn hold_back(
    segments: &[SegmentTiming],
    analysed: impl Fn(u64) -> bool,
    now: DateTime<Utc>,
    deadline: Duration,
) -> HoldBack {
    let mut out = HoldBack {
        publish_through: None,
        withheld: Vec::new(),
        forced: Vec::new(),
        added_delay_s: 0.0,
    };
    let mut holding = false;
    for s in segments {
        if !holding {
            if analysed(s.msn) {
                out.publish_through = Some(s.msn);
                continue;
            }
            if s.end()
                .checked_add_signed(deadline)
                .is_some_and(|d| now >= d)
            {
                out.publish_through = Some(s.msn);
                out.forced.push(s.msn);
                continue;
            }
            holding = true;
        }
        out.withheld.push(s.msn);
        if s.duration.is_finite() && s.duration > 0.0 {
            out.added_delay_s += s.duration;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs() -> Vec<SegmentTiming> {
        let t0 = DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        (0..5)
            .map(|i| SegmentTiming {
                msn: 100 + i,
                start: t0 + Duration::seconds(2 * i as i64),
                duration: 2.0,
            })
            .collect()
    }

    #[test]
    fn publishes_the_analysed_prefix() {
        let s = segs();
        let now = s[4].end();
        let h = hold_back(&s, |m| m <= 102 || m == 104, now, Duration::seconds(4));
        assert_eq!(h.publish_through, Some(102));
        assert_eq!(h.withheld, vec![103, 104]);
        assert_eq!(h.added_delay_s, 4.0);
        assert!(h.forced.is_empty());
    }

    #[test]
    fn deadline_forces_publication() {
        let s = segs();
        // 103 ended at +8 s; with a 1 s deadline it is forced at +10 s.
        let now = s[4].end();
        let h = hold_back(&s, |m| m <= 102, now, Duration::seconds(1));
        assert_eq!(h.publish_through, Some(103));
        assert_eq!(h.forced, vec![103]);
        assert_eq!(h.withheld, vec![104]);
        assert_eq!(h.added_delay_s, 2.0);
    }

    #[test]
    fn nothing_analysed_publishes_nothing() {
        let s = segs();
        let h = hold_back(&s, |_| false, s[0].start, Duration::seconds(4));
        assert_eq!(h.publish_through, None);
        assert_eq!(h.withheld.len(), 5);
        assert_eq!(h.added_delay_s, 10.0);
        let h = hold_back(&[], |_| false, s[0].start, Duration::seconds(4));
        assert_eq!(h.publish_through, None);
    }
}
