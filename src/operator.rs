//! The people running the show: per-channel operator controls between the pipeline's cue
//! events and the bus, and the audit log of what they did. Pure (no I/O, no clock: every
//! time comes from the caller); the console routes (`http::console`) and the sidecar
//! (which runs every cue event through [`ChannelControls::filter`]) use it.
//!
//! - **Pin**: a manual cue, `source: "operator"`, that starts and ends on command and is
//!   published like an automatic one (feed, playlists).
//! - **Suppress**: a product's automatic cues are not published on the channel until a
//!   time or until lifted; a cue of it that is open when the suppression starts ends at
//!   once, and the rest of that cue's events are dropped (counted).
//! - **Threshold**: the channel's `matching.min_similarity` changed live (`None`: the
//!   configured one); the pipeline picks it up at its next sample.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cue::{Cue, CueEvent, CueSource};

/// Errors of an operator action; each says what and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OperatorError {
    #[error("`{0}` is already pinned on this channel")]
    AlreadyPinned(String),
    #[error("`{0}` is not pinned on this channel")]
    NotPinned(String),
    #[error("`{0}` is not suppressed on this channel")]
    NotSuppressed(String),
    #[error("min_similarity must be greater than 0 and at most 1, got {0}")]
    BadThreshold(f32),
    #[error("the suppression ends before it starts ({0})")]
    BadUntil(String),
}

/// Cues the console lists per channel (newest first).
pub const RECENT_CUES: usize = 50;

/// One channel's controls.
#[derive(Debug)]
pub struct ChannelControls {
    channel: String,
    state: Mutex<ControlState>,
}

#[derive(Debug, Default)]
struct ControlState {
    /// Product → until when (`None`: until lifted).
    suppressed: HashMap<String, Option<DateTime<Utc>>>,
    /// Product → its open operator cue.
    pins: HashMap<String, Cue>,
    /// Automatic cues published and not yet ended, by cue id.
    open: HashMap<String, Cue>,
    /// Automatic cues ended by a suppression: their later events are dropped.
    cut: HashSet<String>,
    threshold: Option<f32>,
    /// The channel's latest sample: shot, media time and wall clock (a pin's place).
    latest: Option<(u64, f64, DateTime<Utc>)>,
    recent: VecDeque<Cue>,
    pins_made: u64,
    suppressed_events: u64,
}

/// What the console shows of a channel.
#[derive(Debug, Clone, Serialize)]
pub struct ControlsView {
    pub channel: String,
    pub pins: Vec<Cue>,
    /// `(product, until)`; `until` absent: until lifted.
    pub suppressed: Vec<Suppression>,
    pub min_similarity: Option<f32>,
    pub suppressed_events: u64,
    /// Newest first, at most [`RECENT_CUES`], as of their latest event.
    pub recent: Vec<Cue>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Suppression {
    pub product_id: String,
    #[serde(with = "crate::cue::ms_time_opt")]
    pub until: Option<DateTime<Utc>>,
}

impl ChannelControls {
    pub fn new(channel: impl Into<String>) -> Self {
        Self {
            channel: channel.into(),
            state: Mutex::new(ControlState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An automatic cue event on its way to the bus: `None` when a suppression holds it.
    pub fn filter(&self, event: CueEvent, now: DateTime<Utc>) -> Option<CueEvent> {
        Self::filter_in(&mut self.state(), event, now)
    }

    /// [`Self::filter`], and `publish` the event that passes while the controls are held:
    /// a suppression that comes at the same time publishes the open cue's end after its
    /// start, never before it.
    pub fn pass(&self, event: CueEvent, now: DateTime<Utc>, publish: impl FnOnce(CueEvent)) {
        let mut st = self.state();
        if let Some(event) = Self::filter_in(&mut st, event, now) {
            publish(event);
        }
    }

    fn filter_in(st: &mut ControlState, event: CueEvent, now: DateTime<Utc>) -> Option<CueEvent> {
        let cue = event.cue();
        let id = cue.id.clone();
        if st.cut.contains(&id) {
            if matches!(event, CueEvent::End(_)) {
                st.cut.remove(&id);
            }
            st.suppressed_events += 1;
            return None;
        }
        if matches!(event, CueEvent::Start(_)) && st.is_suppressed(&cue.product_id, now) {
            st.cut.insert(id);
            st.suppressed_events += 1;
            return None;
        }
        match &event {
            CueEvent::Start(c) | CueEvent::Update(c) => {
                st.open.insert(id, c.clone());
            }
            CueEvent::End(_) => {
                st.open.remove(&id);
            }
        }
        st.remember(event.cue());
        Some(event)
    }

    /// The channel's latest sample (shot index, media seconds, wall clock).
    pub fn note_sample(&self, shot: u64, pts: f64, wallclock: DateTime<Utc>) {
        self.state().latest = Some((shot, pts, wallclock));
    }

    /// Pin `product_id` now (`product`: its details for display). The start event to
    /// publish.
    pub fn pin(
        &self,
        product_id: &str,
        product: Option<serde_json::Value>,
        now: DateTime<Utc>,
    ) -> Result<CueEvent, OperatorError> {
        let mut st = self.state();
        if st.pins.contains_key(product_id) {
            return Err(OperatorError::AlreadyPinned(product_id.to_string()));
        }
        st.pins_made += 1;
        let (shot, pts) = match st.latest {
            Some((shot, pts, at)) => {
                let since = (now - at).num_milliseconds().max(0) as f64 / 1000.0;
                (shot, pts + since)
            }
            None => (0, 0.0),
        };
        let key = format!("operator-{}-{}", st.pins_made, now.timestamp_millis());
        let cue = Cue {
            id: crate::cue::cue_id(&self.channel, shot, &format!("{product_id}\u{1f}{key}")),
            channel: self.channel.clone(),
            product_id: product_id.to_string(),
            start: now,
            end: None,
            pts,
            score: 1.0,
            shot,
            boxes: Vec::new(),
            product,
            source: CueSource::Operator,
        };
        st.pins.insert(product_id.to_string(), cue.clone());
        st.remember(&cue);
        Ok(CueEvent::Start(cue))
    }

    /// End a pin now: the end event to publish.
    pub fn unpin(&self, product_id: &str, now: DateTime<Utc>) -> Result<CueEvent, OperatorError> {
        let mut st = self.state();
        let mut cue = st
            .pins
            .remove(product_id)
            .ok_or_else(|| OperatorError::NotPinned(product_id.to_string()))?;
        cue.end = Some(now.max(cue.start));
        st.remember(&cue);
        Ok(CueEvent::End(cue))
    }

    /// Suppress `product_id` until `until` (`None`: until lifted). The end events of its
    /// open automatic cues go to `publish` while the controls are held (see [`Self::pass`]);
    /// they are returned too.
    pub fn suppress(
        &self,
        product_id: &str,
        until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        mut publish: impl FnMut(CueEvent),
    ) -> Result<Vec<CueEvent>, OperatorError> {
        if let Some(u) = until
            && u <= now
        {
            return Err(OperatorError::BadUntil(crate::frame::rfc3339_ms(&u)));
        }
        let mut st = self.state();
        st.suppressed.insert(product_id.to_string(), until);
        let ids: Vec<String> = st
            .open
            .iter()
            .filter(|(_, c)| c.product_id == product_id)
            .map(|(id, _)| id.clone())
            .collect();
        let mut ends = Vec::new();
        for id in ids {
            if let Some(mut cue) = st.open.remove(&id) {
                cue.end = Some(now.max(cue.start));
                st.cut.insert(id);
                st.remember(&cue);
                ends.push(CueEvent::End(cue));
            }
        }
        for e in &ends {
            publish(e.clone());
        }
        Ok(ends)
    }

    /// Lift a suppression.
    pub fn lift(&self, product_id: &str) -> Result<(), OperatorError> {
        self.state()
            .suppressed
            .remove(product_id)
            .map(|_| ())
            .ok_or_else(|| OperatorError::NotSuppressed(product_id.to_string()))
    }

    /// Set (or with `None` reset) the channel's similarity threshold.
    pub fn set_threshold(&self, min_similarity: Option<f32>) -> Result<(), OperatorError> {
        if let Some(t) = min_similarity
            && !(t > 0.0 && t <= 1.0)
        {
            return Err(OperatorError::BadThreshold(t));
        }
        self.state().threshold = min_similarity;
        Ok(())
    }

    /// The operator's similarity threshold, when set.
    pub fn threshold(&self) -> Option<f32> {
        self.state().threshold
    }

    pub fn view(&self, now: DateTime<Utc>) -> ControlsView {
        let mut st = self.state();
        st.suppressed
            .retain(|_, until| until.is_none_or(|u| u > now));
        let mut pins: Vec<Cue> = st.pins.values().cloned().collect();
        pins.sort_by_key(|c| c.start);
        let mut suppressed: Vec<Suppression> = st
            .suppressed
            .iter()
            .map(|(p, u)| Suppression {
                product_id: p.clone(),
                until: *u,
            })
            .collect();
        suppressed.sort_by(|a, b| a.product_id.cmp(&b.product_id));
        ControlsView {
            channel: self.channel.clone(),
            pins,
            suppressed,
            min_similarity: st.threshold,
            suppressed_events: st.suppressed_events,
            recent: st.recent.iter().cloned().collect(),
        }
    }
}

impl ControlState {
    fn is_suppressed(&self, product: &str, now: DateTime<Utc>) -> bool {
        self.suppressed
            .get(product)
            .is_some_and(|until| until.is_none_or(|u| u > now))
    }

    /// Keep the cue's latest state in the recent list (newest first, bounded).
    fn remember(&mut self, cue: &Cue) {
        self.recent.retain(|c| c.id != cue.id);
        self.recent.push_front(cue.clone());
        self.recent.truncate(RECENT_CUES);
    }
}

/// One operator action.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    #[serde(with = "crate::cue::ms_time")]
    pub at: DateTime<Utc>,
    /// Which key did it: [`key_id`] of the admin key used (never the key).
    pub key_id: String,
    pub channel: Option<String>,
    /// `pin`, `unpin`, `suppress`, `lift`, `threshold`, `feedback`, `retrain`.
    pub action: String,
    pub detail: String,
}

/// The latest operator actions, bounded (oldest forgotten first); every action is also
/// logged (`target: "audit"`).
#[derive(Debug)]
pub struct AuditLog {
    capacity: usize,
    entries: Mutex<VecDeque<AuditEntry>>,
}

impl AuditLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::new(VecDeque::new()),
        }
    }

    pub fn record(&self, entry: AuditEntry) {
        tracing::info!(target: "audit", key = %entry.key_id, channel = ?entry.channel,
            action = %entry.action, detail = %entry.detail, "operator action");
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.push_front(entry);
        e.truncate(self.capacity);
    }

    /// Newest first.
    pub fn entries(&self) -> Vec<AuditEntry> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// A short, stable name for an admin key (the first 8 hex digits of its SHA-256): who did
/// what, without the key ever leaving the process.
pub fn key_id(key: &str) -> String {
    use sha2::Digest;
    format!(
        "key-{}",
        hex::encode(&sha2::Sha256::digest(key.as_bytes())[..4])
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 6, 10, 0, 0).unwrap() + chrono::TimeDelta::seconds(s)
    }

    fn auto(id: &str, product: &str, at: i64) -> Cue {
        Cue {
            id: id.into(),
            channel: "ch".into(),
            product_id: product.into(),
            start: t(at),
            end: None,
            pts: at as f64,
            score: 0.8,
            shot: 1,
            boxes: Vec::new(),
            product: None,
            source: CueSource::Auto,
        }
    }

    #[test]
    fn a_pin_starts_and_ends_an_operator_cue() {
        let c = ChannelControls::new("ch");
        c.note_sample(4, 100.0, t(0));
        let start = c.pin("cola", None, t(2)).unwrap();
        let CueEvent::Start(cue) = &start else {
            panic!("{start:?}")
        };
        assert_eq!(cue.source, CueSource::Operator);
        assert_eq!((cue.shot, cue.pts, cue.start), (4, 102.0, t(2)));
        assert_eq!(
            c.pin("cola", None, t(3)),
            Err(OperatorError::AlreadyPinned("cola".into()))
        );
        assert_eq!(c.view(t(3)).pins.len(), 1);
        let end = c.unpin("cola", t(5)).unwrap();
        assert_eq!(end.cue().id, cue.id);
        assert_eq!(end.cue().end, Some(t(5)));
        assert!(matches!(
            c.unpin("cola", t(6)),
            Err(OperatorError::NotPinned(_))
        ));
        // A second pin of the product is another cue.
        let again = c.pin("cola", None, t(7)).unwrap();
        assert_ne!(again.cue().id, cue.id);
        assert_eq!(c.view(t(7)).recent[0].id, again.cue().id);
    }

    #[test]
    fn a_suppression_ends_the_open_cue_and_holds_later_ones() {
        let c = ChannelControls::new("ch");
        let open = auto("a", "cola", 0);
        assert!(c.filter(CueEvent::Start(open.clone()), t(0)).is_some());
        let other = auto("b", "chips", 0);
        assert!(c.filter(CueEvent::Start(other.clone()), t(0)).is_some());
        let mut published = Vec::new();
        let ends = c
            .suppress("cola", Some(t(60)), t(10), |e| published.push(e))
            .unwrap();
        assert_eq!(ends.len(), 1);
        assert_eq!(published, ends);
        assert_eq!(ends[0].cue().id, "a");
        assert_eq!(ends[0].cue().end, Some(t(10)));
        // The rest of the cut cue is dropped, its end too.
        assert!(c.filter(CueEvent::Update(open.clone()), t(11)).is_none());
        assert!(c.filter(CueEvent::End(open), t(12)).is_none());
        // A new cue of the product while it holds: dropped, all its events.
        let new = auto("c", "cola", 20);
        assert!(c.filter(CueEvent::Start(new.clone()), t(20)).is_none());
        assert!(c.filter(CueEvent::Update(new.clone()), t(21)).is_none());
        assert!(c.filter(CueEvent::End(new), t(22)).is_none());
        // Other products pass.
        assert!(c.filter(CueEvent::End(other), t(22)).is_some());
        assert_eq!(c.view(t(22)).suppressed_events, 5);
        // After `until` the product's cues pass again, and the view forgets it.
        assert!(
            c.filter(CueEvent::Start(auto("d", "cola", 61)), t(61))
                .is_some()
        );
        assert!(c.view(t(61)).suppressed.is_empty());
    }

    #[test]
    fn a_lifted_suppression_lets_cues_through() {
        let c = ChannelControls::new("ch");
        assert!(c.suppress("cola", None, t(0), |_| {}).unwrap().is_empty());
        assert!(
            c.filter(CueEvent::Start(auto("a", "cola", 1)), t(1))
                .is_none()
        );
        c.lift("cola").unwrap();
        assert!(matches!(
            c.lift("cola"),
            Err(OperatorError::NotSuppressed(_))
        ));
        assert!(
            c.filter(CueEvent::Start(auto("b", "cola", 2)), t(2))
                .is_some()
        );
        assert!(matches!(
            c.suppress("cola", Some(t(1)), t(2), |_| {}),
            Err(OperatorError::BadUntil(_))
        ));
    }

    #[test]
    fn thresholds_are_checked() {
        let c = ChannelControls::new("ch");
        assert_eq!(c.threshold(), None);
        c.set_threshold(Some(0.7)).unwrap();
        assert_eq!(c.threshold(), Some(0.7));
        for bad in [0.0, 1.5, f32::NAN, -0.1] {
            assert!(c.set_threshold(Some(bad)).is_err(), "{bad}");
        }
        c.set_threshold(None).unwrap();
        assert_eq!(c.threshold(), None);
    }

    #[test]
    fn recent_cues_are_bounded_newest_first() {
        let c = ChannelControls::new("ch");
        for i in 0..(RECENT_CUES + 5) {
            c.filter(CueEvent::Start(auto(&format!("c{i}"), "p", i as i64)), t(0));
        }
        let v = c.view(t(0));
        assert_eq!(v.recent.len(), RECENT_CUES);
        assert_eq!(v.recent[0].id, format!("c{}", RECENT_CUES + 4));
    }

    #[test]
    fn the_audit_log_is_bounded_and_names_keys_by_id() {
        let log = AuditLog::new(2);
        for a in ["pin", "unpin", "suppress"] {
            log.record(AuditEntry {
                at: t(0),
                key_id: key_id("a-secret-admin-key"),
                channel: Some("ch".into()),
                action: a.into(),
                detail: String::new(),
            });
        }
        let e = log.entries();
        assert_eq!(
            e.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
            vec!["suppress", "unpin"]
        );
        assert!(e[0].key_id.starts_with("key-") && e[0].key_id.len() == 12);
        assert!(!e[0].key_id.contains("secret"));
        assert_eq!(key_id("x"), key_id("x"));
        assert_ne!(key_id("x"), key_id("y"));
    }
}
