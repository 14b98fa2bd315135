//! A bounded hand-off between a channel's frame loop and its blocking inference thread.
//!
//! Policy when full: **drop the oldest** waiting item and count it. The producer never
//! blocks, so a live channel keeps up with its live edge however slow inference is; the
//! consumer always gets the freshest frames. With capacity 1 this is a "latest wins" slot.
//! Plain `std` (Mutex + Condvar): usable from async code (pushes never wait) and from a
//! blocking thread (pops wait).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// What became of a pushed item.
#[derive(Debug, PartialEq)]
pub enum Pushed<T> {
    /// Queued, nothing displaced.
    Queued,
    /// Queued; the queue was full and this oldest item was dropped (and counted).
    DroppedOldest(T),
    /// The queue is closed: the item is handed back, not queued.
    Closed(T),
}

/// What a timed pop found.
#[derive(Debug, PartialEq)]
pub enum Popped<T> {
    Item(T),
    /// Nothing arrived within the timeout.
    TimedOut,
    /// Closed and drained: nothing more will come.
    Closed,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    closed: bool,
    pushed: u64,
    dropped: u64,
}

/// Bounded multi-producer, multi-consumer queue that drops its oldest item when full.
#[derive(Debug)]
pub struct DropOldestQueue<T> {
    capacity: usize,
    state: Mutex<State<T>>,
    ready: Condvar,
}

impl<T> DropOldestQueue<T> {
    /// A queue holding at most `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity),
                closed: false,
                pushed: 0,
                dropped: 0,
            }),
            ready: Condvar::new(),
        }
    }

    // A panic elsewhere while holding the lock leaves the queue's state consistent (every
    // mutation is a single VecDeque call), so a poisoned lock is simply taken over.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queue `item`, never waiting; when full the oldest waiting item is dropped.
    pub fn push(&self, item: T) -> Pushed<T> {
        let mut state = self.lock();
        if state.closed {
            return Pushed::Closed(item);
        }
        let displaced = if state.items.len() >= self.capacity {
            state.dropped += 1;
            state.items.pop_front()
        } else {
            None
        };
        state.items.push_back(item);
        state.pushed += 1;
        drop(state);
        self.ready.notify_one();
        match displaced {
            Some(old) => Pushed::DroppedOldest(old),
            None => Pushed::Queued,
        }
    }

    /// Take the oldest item without waiting.
    pub fn try_pop(&self) -> Option<T> {
        self.lock().items.pop_front()
    }

    /// Wait for an item; `None` once the queue is closed and drained.
    pub fn pop(&self) -> Option<T> {
        let mut state = self.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                return Some(item);
            }
            if state.closed {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Wait at most `timeout` for an item (lets a blocking consumer check for cancellation).
    pub fn pop_timeout(&self, timeout: Duration) -> Popped<T> {
        let state = self.lock();
        let (mut state, _) = self
            .ready
            .wait_timeout_while(state, timeout, |s| s.items.is_empty() && !s.closed)
            .unwrap_or_else(|p| p.into_inner());
        match state.items.pop_front() {
            Some(item) => Popped::Item(item),
            None if state.closed => Popped::Closed,
            None => Popped::TimedOut,
        }
    }

    /// No more pushes; consumers drain what is left, then see the end.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Items waiting now.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items dropped because the queue was full, since creation.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Items accepted by `push`, since creation (dropped ones included).
    pub fn pushed(&self) -> u64 {
        self.lock().pushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn keeps_the_newest_and_counts_drops() {
        let q = DropOldestQueue::new(2);
        assert_eq!(q.push(1), Pushed::Queued);
        assert_eq!(q.push(2), Pushed::Queued);
        assert_eq!(q.push(3), Pushed::DroppedOldest(1));
        assert_eq!(q.push(4), Pushed::DroppedOldest(2));
        assert_eq!(q.len(), 2);
        assert_eq!(q.dropped(), 2);
        assert_eq!(q.pushed(), 4);
        assert_eq!(q.try_pop(), Some(3));
        assert_eq!(q.try_pop(), Some(4));
        assert_eq!(q.try_pop(), None);
        assert!(q.is_empty());
    }

    #[test]
    fn capacity_one_is_a_latest_wins_slot() {
        let q = DropOldestQueue::new(0);
        assert_eq!(q.capacity(), 1);
        for i in 0..10 {
            q.push(i);
        }
        assert_eq!(q.dropped(), 9);
        assert_eq!(q.pop(), Some(9));
    }

    #[test]
    fn close_drains_then_ends_and_refuses_pushes() {
        let q = DropOldestQueue::new(4);
        q.push("a");
        q.close();
        assert!(q.is_closed());
        assert_eq!(q.push("b"), Pushed::Closed("b"));
        assert_eq!(q.pop(), Some("a"));
        assert_eq!(q.pop(), None);
        assert_eq!(q.pop_timeout(Duration::from_millis(1)), Popped::Closed);
        assert_eq!(q.pushed(), 1);
    }

    #[test]
    fn pop_timeout_times_out_when_empty() {
        let q: DropOldestQueue<u8> = DropOldestQueue::new(1);
        assert_eq!(q.pop_timeout(Duration::from_millis(5)), Popped::TimedOut);
        q.push(7);
        assert_eq!(q.pop_timeout(Duration::from_millis(5)), Popped::Item(7));
    }

    #[test]
    fn blocked_consumer_wakes_on_push_and_on_close() {
        let q = Arc::new(DropOldestQueue::new(1));
        let consumer = {
            let q = Arc::clone(&q);
            thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(v) = q.pop() {
                    got.push(v);
                }
                got
            })
        };
        q.push(1u32);
        // Wait until the consumer took it, so the next push cannot displace it.
        while !q.is_empty() {
            thread::yield_now();
        }
        q.close();
        assert_eq!(consumer.join().unwrap(), vec![1]);
    }

    /// A fast producer and a slow consumer: the producer never waits, nothing is lost
    /// without being counted, order is kept, and the consumer ends with the newest item.
    #[test]
    fn slow_consumer_fast_producers_account_for_every_item() {
        const PRODUCERS: u64 = 3;
        const PER_PRODUCER: u64 = 2_000;
        let q = Arc::new(DropOldestQueue::new(3));
        let consumer = {
            let q = Arc::clone(&q);
            thread::spawn(move || {
                let mut got: Vec<(u64, u64)> = Vec::new();
                loop {
                    match q.pop_timeout(Duration::from_millis(50)) {
                        Popped::Item(v) => {
                            got.push(v);
                            // Slow inference.
                            if got.len().is_multiple_of(16) {
                                thread::sleep(Duration::from_micros(200));
                            }
                        }
                        Popped::TimedOut => {}
                        Popped::Closed => return got,
                    }
                }
            })
        };
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let q = Arc::clone(&q);
                thread::spawn(move || {
                    let mut displaced = 0u64;
                    for i in 0..PER_PRODUCER {
                        match q.push((p, i)) {
                            Pushed::Queued => {}
                            Pushed::DroppedOldest(_) => displaced += 1,
                            Pushed::Closed(_) => panic!("closed early"),
                        }
                        assert!(q.len() <= 3);
                    }
                    displaced
                })
            })
            .collect();
        let displaced: u64 = producers.into_iter().map(|h| h.join().unwrap()).sum();
        let last_pushed: Vec<u64> = vec![PER_PRODUCER - 1; PRODUCERS as usize];
        q.close();
        let got = consumer.join().unwrap();
        assert_eq!(displaced, q.dropped());
        assert_eq!(got.len() as u64 + q.dropped(), PRODUCERS * PER_PRODUCER);
        // Per producer, items arrive in push order.
        for p in 0..PRODUCERS {
            let seq: Vec<u64> = got
                .iter()
                .filter(|(pp, _)| *pp == p)
                .map(|(_, i)| *i)
                .collect();
            assert!(
                seq.windows(2).all(|w| w[0] < w[1]),
                "producer {p} out of order"
            );
        }
        // The last item of the last producer to push is never dropped: nothing came after.
        let newest_seen = (0..PRODUCERS).any(|p| got.contains(&(p, last_pushed[p as usize])));
        assert!(newest_seen);
    }
}
