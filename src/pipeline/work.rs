//! The hand-off between a channel's frame thread and its inference thread: shot events
//! and sampled frames in the order they happened, where only samples may be dropped.
//!
//! Policy when full: at most `capacity` samples wait; pushing one more drops the *oldest
//! waiting sample* (it is the most out of date) and counts it. Shot events are never
//! dropped: they are few (at most one per `shots.min_shot_frames`) and the cue builder
//! needs every one; they are bounded by [`MAX_EVENTS`], beyond which the frame thread
//! waits (the inference thread handles events without inference, so this only happens
//! if it is stuck).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::frame::I420Image;
use crate::matching::SampleTicket;
use crate::shots::ShotEvent;

/// Shot events that may wait before the frame thread blocks.
pub const MAX_EVENTS: usize = 1024;

/// One item for the inference thread.
#[derive(Debug)]
pub enum WorkItem {
    Shot(ShotEvent),
    Sample(SampleTicket, I420Image),
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<WorkItem>,
    samples: usize,
    events: usize,
    closed: bool,
    dropped: u64,
    pushed: u64,
    /// Wall clock up to which the frame thread has handed over every frame (exclusive).
    released_until: Option<DateTime<Utc>>,
    /// Wall clock of the sample the inference thread is working on.
    in_flight: Option<DateTime<Utc>>,
}

/// See the module docs.
#[derive(Debug)]
pub struct WorkQueue {
    capacity: usize,
    /// Batch mode: a full queue makes the producer wait instead of dropping.
    lossless: bool,
    state: Mutex<QueueState>,
    ready: Condvar,
    space: Condvar,
}

impl WorkQueue {
    pub fn new(capacity: usize) -> Self {
        Self::build(capacity, false)
    }

    /// A queue that never drops: a producer facing a full queue waits (batch mode, where
    /// every sample counts and there is no live edge to keep up with).
    pub fn lossless(capacity: usize) -> Self {
        Self::build(capacity, true)
    }

    fn build(capacity: usize, lossless: bool) -> Self {
        Self {
            capacity: capacity.max(1),
            lossless,
            state: Mutex::new(QueueState::default()),
            ready: Condvar::new(),
            space: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue a shot event (waits while [`MAX_EVENTS`] are pending).
    pub fn push_event(&self, event: ShotEvent) {
        let mut g = self.lock();
        while g.events >= MAX_EVENTS && !g.closed {
            g = self
                .space
                .wait_timeout(g, Duration::from_millis(100))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        g.events += 1;
        g.items.push_back(WorkItem::Shot(event));
        self.ready.notify_one();
    }

    /// Queue a sample; returns true when an older sample was dropped to make room.
    pub fn push_sample(&self, ticket: SampleTicket, image: I420Image) -> bool {
        let mut g = self.lock();
        while self.lossless && g.samples >= self.capacity && !g.closed {
            g = self
                .space
                .wait_timeout(g, Duration::from_millis(100))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        let mut dropped = false;
        if g.samples >= self.capacity
            && let Some(at) = g
                .items
                .iter()
                .position(|w| matches!(w, WorkItem::Sample(..)))
        {
            g.items.remove(at);
            g.samples -= 1;
            g.dropped += 1;
            dropped = true;
        }
        g.samples += 1;
        g.pushed += 1;
        g.items.push_back(WorkItem::Sample(ticket, image));
        self.ready.notify_one();
        dropped
    }

    /// Every frame before `until` has been handed over.
    pub fn released(&self, until: DateTime<Utc>) {
        let mut g = self.lock();
        if g.released_until.is_none_or(|r| until > r) {
            g.released_until = Some(until);
        }
    }

    /// The next item, waiting up to `timeout`; `None` on timeout or when closed and empty.
    /// A sample taken is "in flight" until [`Self::done`].
    pub fn pop(&self, timeout: Duration) -> Option<WorkItem> {
        let mut g = self.lock();
        if g.items.is_empty() && !g.closed {
            g = self
                .ready
                .wait_timeout(g, timeout)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        let item = g.items.pop_front()?;
        match &item {
            WorkItem::Shot(_) => {
                g.events -= 1;
                self.space.notify_one();
            }
            WorkItem::Sample(t, _) => {
                g.samples -= 1;
                g.in_flight = Some(t.wallclock);
                self.space.notify_one();
            }
        }
        Some(item)
    }

    /// The in-flight sample is finished.
    pub fn done(&self) {
        self.lock().in_flight = None;
    }

    /// Wall clock before which every frame has been fully analysed: handed over, and its
    /// sample (if any) processed or dropped.
    pub fn analysed_until(&self) -> Option<DateTime<Utc>> {
        let g = self.lock();
        let pending = g
            .items
            .iter()
            .filter_map(|w| match w {
                WorkItem::Sample(t, _) => Some(t.wallclock),
                WorkItem::Shot(_) => None,
            })
            .chain(g.in_flight)
            .min();
        match (pending, g.released_until) {
            (Some(p), Some(r)) => Some(p.min(r)),
            (None, r) => r,
            (Some(p), None) => Some(p),
        }
    }

    /// No more pushes; `pop` drains what is left, then answers `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
        self.space.notify_all();
    }

    pub fn is_closed_and_empty(&self) -> bool {
        let g = self.lock();
        g.closed && g.items.is_empty()
    }

    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    pub fn pushed(&self) -> u64 {
        self.lock().pushed
    }

    pub fn waiting(&self) -> usize {
        self.lock().samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shots::{Boundary, Shot};
    use chrono::TimeZone;

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_763_719_200_000 + ms).unwrap()
    }

    fn ticket(frame: u64) -> SampleTicket {
        SampleTicket {
            shot_index: 0,
            frame_index: frame,
            pts_ns: frame * 40_000_000,
            wallclock: t(frame as i64 * 40),
        }
    }

    fn shot_event(index: u64, start: u64) -> ShotEvent {
        ShotEvent::Started(Shot {
            index,
            start_frame: start,
            start_pts_ns: start * 40_000_000,
            start_wallclock: t(start as i64 * 40),
            end_frame: None,
            end_pts_ns: None,
            end_wallclock: None,
            boundary: Boundary::Cut,
        })
    }

    fn img() -> I420Image {
        I420Image::filled(4, 4, 0, 128, 128)
    }

    fn frame_of(w: &WorkItem) -> Option<u64> {
        match w {
            WorkItem::Sample(t, _) => Some(t.frame_index),
            WorkItem::Shot(_) => None,
        }
    }

    #[test]
    fn drops_oldest_sample_never_an_event_and_keeps_order() {
        let q = WorkQueue::new(2);
        q.push_event(shot_event(0, 0));
        assert!(!q.push_sample(ticket(3), img()));
        q.push_event(shot_event(1, 5));
        assert!(!q.push_sample(ticket(8), img()));
        assert!(q.push_sample(ticket(14), img())); // drops frame 3
        assert_eq!(q.dropped(), 1);
        assert_eq!(q.pushed(), 3);
        let got: Vec<_> = std::iter::from_fn(|| q.pop(Duration::ZERO)).collect();
        assert_eq!(got.len(), 4);
        assert!(matches!(&got[0], WorkItem::Shot(ShotEvent::Started(s)) if s.index == 0));
        assert!(matches!(&got[1], WorkItem::Shot(ShotEvent::Started(s)) if s.index == 1));
        assert_eq!(frame_of(&got[2]), Some(8));
        assert_eq!(frame_of(&got[3]), Some(14));
    }

    #[test]
    fn analysed_until_waits_for_pending_and_in_flight_samples() {
        let q = WorkQueue::new(4);
        assert_eq!(q.analysed_until(), None);
        q.released(t(400));
        assert_eq!(q.analysed_until(), Some(t(400)));
        q.push_sample(ticket(5), img()); // 200 ms
        q.released(t(800));
        assert_eq!(q.analysed_until(), Some(t(200)));
        assert!(q.pop(Duration::ZERO).is_some());
        assert_eq!(q.analysed_until(), Some(t(200)), "in flight");
        q.done();
        assert_eq!(q.analysed_until(), Some(t(800)));
        q.released(t(100)); // never goes back
        assert_eq!(q.analysed_until(), Some(t(800)));
    }

    #[test]
    fn close_drains_then_ends_and_pop_times_out() {
        let q = WorkQueue::new(1);
        assert!(q.pop(Duration::from_millis(5)).is_none());
        q.push_sample(ticket(1), img());
        q.close();
        assert!(!q.is_closed_and_empty());
        assert!(q.pop(Duration::from_secs(5)).is_some());
        assert!(q.pop(Duration::from_secs(5)).is_none());
        assert!(q.is_closed_and_empty());
    }

    #[test]
    fn lossless_waits_for_room_instead_of_dropping() {
        let q = std::sync::Arc::new(WorkQueue::lossless(1));
        q.push_sample(ticket(1), img());
        let q2 = q.clone();
        let producer = std::thread::spawn(move || q2.push_sample(ticket(2), img()));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!producer.is_finished(), "waits while full");
        assert_eq!(q.pop(Duration::ZERO).and_then(|w| frame_of(&w)), Some(1));
        assert!(!producer.join().unwrap(), "nothing dropped");
        assert_eq!(q.pop(Duration::ZERO).and_then(|w| frame_of(&w)), Some(2));
        assert_eq!(q.dropped(), 0);
    }

    #[test]
    fn a_waiting_consumer_wakes_on_push() {
        let q = std::sync::Arc::new(WorkQueue::new(1));
        let q2 = q.clone();
        let h =
            std::thread::spawn(move || q2.pop(Duration::from_secs(10)).and_then(|w| frame_of(&w)));
        std::thread::sleep(Duration::from_millis(20));
        q.push_sample(ticket(7), img());
        assert_eq!(h.join().unwrap(), Some(7));
    }
}
