//! First come, first served admission to the model sessions every channel shares.
//!
//! Each channel analyses one sample at a time on its own thread, and all of them share
//! `sessions_per_model` sessions. A plain mutex per session lets whichever thread wakes
//! first win, so under overload one channel can be served again and again while another
//! waits and drops its samples. Here an analysis takes a ticket and runs when its ticket
//! is the oldest waiting and a slot is free: channels are served in turn, so when the
//! machine cannot keep up, every channel thins its samples by about the same share (each
//! channel's queue drops its oldest waiting sample, counted in
//! `shopcue_dropped_total{kind="samples"}`) and none starves.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct Admission {
    next_ticket: u64,
    waiting: VecDeque<u64>,
    running: usize,
}

/// At most `capacity` holders at once, admitted in the order they asked.
#[derive(Debug)]
pub struct FairSlots {
    capacity: usize,
    state: Mutex<Admission>,
    changed: Condvar,
}

/// A slot held; released on drop.
#[derive(Debug)]
pub struct Slot<'a> {
    slots: &'a FairSlots,
}

impl FairSlots {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::new(Admission::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Admission> {
        // A poisoned lock only means a holder panicked; the counters stay consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait for this caller's turn and a free slot.
    pub fn acquire(&self) -> Slot<'_> {
        let mut st = self.lock();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.waiting.push_back(ticket);
        while st.waiting.front() != Some(&ticket) || st.running >= self.capacity {
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.waiting.pop_front();
        st.running += 1;
        drop(st);
        // The next in line may fit in another free slot.
        self.changed.notify_all();
        Slot { slots: self }
    }

    /// Holders now.
    pub fn running(&self) -> usize {
        self.lock().running
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.slots.lock().running -= 1;
        self.slots.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn never_more_than_capacity_at_once() {
        let slots = Arc::new(FairSlots::new(2));
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (slots, peak) = (slots.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let _s = slots.acquire();
                        peak.fetch_max(slots.running(), Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(200));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 2);
        assert_eq!(slots.running(), 0);
    }

    /// Three channels that each want the one slot all the time get about equal turns
    /// (a plain mutex lets the thread that just released it take it again).
    #[test]
    fn busy_channels_are_served_in_turn() {
        let slots = Arc::new(FairSlots::new(1));
        let served: Arc<Vec<AtomicUsize>> = Arc::new((0..3).map(|_| AtomicUsize::new(0)).collect());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads: Vec<_> = (0..3)
            .map(|i| {
                let (slots, served, stop) = (slots.clone(), served.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let _s = slots.acquire();
                        served[i].fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(500));
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        for t in threads {
            t.join().unwrap();
        }
        let counts: Vec<usize> = served.iter().map(|c| c.load(Ordering::SeqCst)).collect();
        let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
        assert!(min > 0, "{counts:?}");
        // In turn: nobody far ahead of anybody (a thread the machine is slow to wake may
        // miss a turn or two).
        assert!(max <= min + min / 2 + 3, "{counts:?}");
    }
}
