//! A cue as an `EXT-X-DATERANGE`, frozen at first sight.
//!
//! RFC 8216bis §4.4.5.1: tags with the same `ID` must give the same value to every attribute
//! they share, in one playlist and across reloads; a later tag may only add attributes. A
//! cue changes while it is open (score, boxes, end candidate), so its date range is built
//! once, the first time the ledger sees the cue, from the values it has then:
//! `ID`, `CLASS`, `START-DATE`, `PLANNED-DURATION` (only if the cue was still open),
//! `X-PRODUCT-ID`, `X-SCORE`, `X-SHOT`, `X-BOX` (the first box, when there is one) and
//! `SCTE35-CMD` (with a `segmentation_duration` only if the cue had already ended).
//! When the cue ends, `DURATION` and `END-DATE` are added, once, after those: the open
//! form of the tag is a prefix of the closed form, byte for byte. Later changes of a cue
//! (higher score, more boxes) travel on the WebSocket feed and in ID3, never here.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::ManifestError;
use super::attr::quote;
use super::scte35;
use crate::cue::{Cue, CueEvent};

/// The `CLASS` of every product date range we publish.
pub const DATERANGE_CLASS: &str = "com.shopcue.product";

fn ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

fn fmt_time(t: &DateTime<Utc>) -> String {
    crate::frame::rfc3339_ms(t)
}

fn finite01(x: f32) -> f32 {
    if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// The published form of one cue.
#[derive(Debug, Clone, PartialEq)]
pub struct CueDateRange {
    pub id: String,
    /// Millisecond precision, as written.
    pub start: DateTime<Utc>,
    /// Set once, when the cue ends; never before `start`.
    pub end: Option<DateTime<Utc>>,
    /// The tag up to and including `SCTE35-CMD`, fixed at first sight.
    fixed: String,
}

impl CueDateRange {
    /// Freezes a cue. `ended`: the cue is over (its `end` is final).
    pub fn freeze(cue: &Cue, ended: bool, planned_duration_s: f64) -> Result<Self, ManifestError> {
        let bad = |why: &str| ManifestError::BadCue {
            id: cue.id.clone(),
            why: why.into(),
        };
        if cue.id.is_empty() || cue.id.len() > 200 {
            return Err(bad("id must be 1 to 200 bytes"));
        }
        if cue.id.contains(['"', '\r', '\n']) {
            return Err(bad("id holds a quote or line break"));
        }
        let start = ms(cue.start);
        let end = if ended {
            Some(ms(cue.end.unwrap_or(cue.start)).max(start))
        } else {
            None
        };
        let duration_90k = end.map(|e| ((e - start).num_milliseconds().max(0) as u64) * 90);
        let section = scte35::product_cue_section(
            &cue.id,
            &cue.product_id,
            scte35::pts_from_seconds(cue.pts),
            duration_90k,
        )?;
        let mut fixed = format!(
            "#EXT-X-DATERANGE:ID={},CLASS=\"{DATERANGE_CLASS}\",START-DATE=\"{}\"",
            quote(&cue.id),
            fmt_time(&start)
        );
        if end.is_none() && planned_duration_s.is_finite() && planned_duration_s > 0.0 {
            fixed.push_str(&format!(",PLANNED-DURATION={planned_duration_s:.3}"));
        }
        fixed.push_str(&format!(
            ",X-PRODUCT-ID={},X-SCORE={:.3},X-SHOT={}",
            quote(&cue.product_id),
            finite01(cue.score),
            cue.shot
        ));
        if let Some(b) = cue.boxes.first() {
            fixed.push_str(&format!(
                ",X-BOX=\"{:.4},{:.4},{:.4},{:.4}\"",
                finite01(b.x),
                finite01(b.y),
                finite01(b.w),
                finite01(b.h)
            ));
        }
        fixed.push_str(&format!(",SCTE35-CMD={}", scte35::to_hls_hex(&section)));
        Ok(Self {
            id: cue.id.clone(),
            start,
            end,
            fixed,
        })
    }

    /// Records the end, once; later calls change nothing.
    pub fn close(&mut self, end: DateTime<Utc>) {
        if self.end.is_none() {
            self.end = Some(ms(end).max(self.start));
        }
    }

    /// The tag line.
    pub fn render(&self) -> String {
        match self.end {
            None => self.fixed.clone(),
            Some(e) => {
                let d = (e - self.start).num_milliseconds();
                format!(
                    "{},DURATION={}.{:03},END-DATE=\"{}\"",
                    self.fixed,
                    d / 1000,
                    d % 1000,
                    fmt_time(&e)
                )
            }
        }
    }

    /// Whether the range touches `[from, to)` (an open range runs on).
    pub fn overlaps(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
        self.start < to && self.end.is_none_or(|e| e >= from)
    }
}

/// The date ranges of a channel, each frozen at first sight. Bounded: when full, the range
/// that ended earliest (else the one that started earliest) is dropped and counted.
#[derive(Debug, Clone)]
pub struct CueLedger {
    ranges: HashMap<String, CueDateRange>,
    capacity: usize,
    planned_duration_s: f64,
    evicted: u64,
}

impl CueLedger {
    pub fn new(capacity: usize, planned_duration_s: f64) -> Self {
        Self {
            ranges: HashMap::new(),
            capacity: capacity.max(1),
            planned_duration_s,
            evicted: 0,
        }
    }

    pub fn from_settings(s: &super::ManifestSettings) -> Self {
        Self::new(s.ledger_capacity, s.planned_duration_s)
    }

    /// A cue event: the first sight freezes the range, `End` closes it.
    pub fn apply(&mut self, event: &CueEvent) -> Result<(), ManifestError> {
        self.observe(event.cue(), matches!(event, CueEvent::End(_)))
    }

    /// A cue, `ended` when its `end` is final.
    pub fn observe(&mut self, cue: &Cue, ended: bool) -> Result<(), ManifestError> {
        if let Some(r) = self.ranges.get_mut(&cue.id) {
            if ended {
                r.close(cue.end.unwrap_or(cue.start));
            }
            return Ok(());
        }
        let range = CueDateRange::freeze(cue, ended, self.planned_duration_s)?;
        if self.ranges.len() >= self.capacity {
            self.evict_one();
        }
        self.ranges.insert(cue.id.clone(), range);
        Ok(())
    }

    fn evict_one(&mut self) {
        let victim = self
            .ranges
            .values()
            .min_by(|a, b| {
                // Ended before open; then earliest end / start; then id, for determinism.
                (a.end.is_none(), a.end.unwrap_or(a.start), &a.id).cmp(&(
                    b.end.is_none(),
                    b.end.unwrap_or(b.start),
                    &b.id,
                ))
            })
            .map(|r| r.id.clone());
        if let Some(id) = victim {
            self.ranges.remove(&id);
            self.evicted += 1;
        }
    }

    /// Drops ranges that ended before `t` (the start of the oldest playlist window still
    /// served); returns how many.
    pub fn prune_ended_before(&mut self, t: DateTime<Utc>) -> usize {
        let before = self.ranges.len();
        self.ranges.retain(|_, r| r.end.is_none_or(|e| e >= t));
        before - self.ranges.len()
    }

    /// All ranges, by start then id.
    pub fn ranges(&self) -> Vec<CueDateRange> {
        let mut v: Vec<CueDateRange> = self.ranges.values().cloned().collect();
        v.sort_by(|a, b| (a.start, &a.id).cmp(&(b.start, &b.id)));
        v
    }

    pub fn get(&self, id: &str) -> Option<&CueDateRange> {
        self.ranges.get(id)
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Ranges dropped because the ledger was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cue::BoxSample;
    use crate::manifest::attr;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    pub(crate) fn cue(id: &str, start: &str, end: Option<&str>) -> Cue {
        Cue {
            source: Default::default(),
            id: id.into(),
            channel: "news".into(),
            product_id: "sku-1".into(),
            start: t(start),
            end: end.map(t),
            pts: 12.04,
            score: 0.8123,
            shot: 3,
            boxes: vec![BoxSample {
                t: t(start),
                x: 0.1,
                y: 0.2,
                w: 0.3,
                h: 0.4,
            }],
            product: None,
        }
    }

    #[test]
    fn open_then_closed_adds_attributes_only() {
        let mut l = CueLedger::new(10, 10.0);
        let mut c = cue("cue-1", "2026-11-21T10:00:00.040Z", None);
        l.apply(&CueEvent::Start(c.clone())).unwrap();
        let open = l.get("cue-1").unwrap().render();
        assert!(open.starts_with(
            "#EXT-X-DATERANGE:ID=\"cue-1\",CLASS=\"com.shopcue.product\",START-DATE=\"2026-11-21T10:00:00.040Z\",PLANNED-DURATION=10.000,X-PRODUCT-ID=\"sku-1\",X-SCORE=0.812,X-SHOT=3,X-BOX=\"0.1000,0.2000,0.3000,0.4000\",SCTE35-CMD=0xFC30"
        ), "{open}");
        // Updates change nothing published.
        c.score = 0.99;
        c.boxes.clear();
        l.apply(&CueEvent::Update(c.clone())).unwrap();
        assert_eq!(l.get("cue-1").unwrap().render(), open);
        c.end = Some(t("2026-11-21T10:00:04.560Z"));
        l.apply(&CueEvent::End(c.clone())).unwrap();
        let closed = l.get("cue-1").unwrap().render();
        assert_eq!(
            closed,
            format!("{open},DURATION=4.520,END-DATE=\"2026-11-21T10:00:04.560Z\"")
        );
        // A later end changes nothing either.
        c.end = Some(t("2026-11-21T10:00:09.000Z"));
        l.apply(&CueEvent::End(c)).unwrap();
        assert_eq!(l.get("cue-1").unwrap().render(), closed);
        // Every attribute of the open tag has the same value in the closed one.
        let a = attr::parse(open.split_once(':').unwrap().1).unwrap();
        let b = attr::parse(closed.split_once(':').unwrap().1).unwrap();
        for x in &a {
            assert_eq!(attr::get(&b, x.name).unwrap().raw, x.raw);
        }
    }

    #[test]
    fn ended_at_first_sight_has_no_planned_duration_and_scte_duration() {
        let c = cue(
            "c",
            "2026-11-21T10:00:00.000Z",
            Some("2026-11-21T10:00:02.500Z"),
        );
        let r = CueDateRange::freeze(&c, true, 10.0).unwrap();
        let line = r.render();
        assert!(!line.contains("PLANNED-DURATION"));
        assert!(line.ends_with(",DURATION=2.500,END-DATE=\"2026-11-21T10:00:02.500Z\""));
        let hex = attr::get(
            &attr::parse(line.split_once(':').unwrap().1).unwrap(),
            "SCTE35-CMD",
        )
        .unwrap()
        .raw;
        let s = scte35::decode(&scte35::parse_payload(hex).unwrap()).unwrap();
        assert_eq!(s.segmentation().next().unwrap().duration, Some(225_000));
        // An end before the start is clamped: DURATION is never negative.
        let c = cue(
            "c",
            "2026-11-21T10:00:00.000Z",
            Some("2026-11-21T09:00:00.000Z"),
        );
        assert!(
            CueDateRange::freeze(&c, true, 10.0)
                .unwrap()
                .render()
                .contains("DURATION=0.000")
        );
    }

    #[test]
    fn quoting_and_bad_ids() {
        let mut c = cue("c", "2026-11-21T10:00:00.000Z", None);
        c.product_id = "a\"b\nc".into();
        c.score = f32::NAN;
        let line = CueDateRange::freeze(&c, false, 10.0).unwrap().render();
        assert!(line.contains("X-PRODUCT-ID=\"a%22b%0Ac\",X-SCORE=0.000"));
        c.id = "x\"y".into();
        assert!(CueDateRange::freeze(&c, false, 10.0).is_err());
    }

    #[test]
    fn bounded_with_counted_evictions_and_pruning() {
        let mut l = CueLedger::new(2, 10.0);
        l.observe(
            &cue("a", "2026-11-21T10:00:00Z", Some("2026-11-21T10:00:01Z")),
            true,
        )
        .unwrap();
        l.observe(&cue("b", "2026-11-21T10:00:02Z", None), false)
            .unwrap();
        l.observe(&cue("c", "2026-11-21T10:00:03Z", None), false)
            .unwrap();
        assert_eq!(l.evicted(), 1);
        assert!(l.get("a").is_none(), "the ended range goes first");
        assert_eq!(
            l.ranges().iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );
        l.observe(
            &cue("b", "2026-11-21T10:00:02Z", Some("2026-11-21T10:00:04Z")),
            true,
        )
        .unwrap();
        assert_eq!(l.prune_ended_before(t("2026-11-21T10:00:05Z")), 1);
        assert_eq!(l.len(), 1);
    }
}
