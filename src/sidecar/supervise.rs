//! Channel supervision: each channel runs as a series of attempts. An attempt that fails
//! (its source or pipeline stops, or any of its tasks or threads panics) has already
//! drained (open cues ended and published) when it returns; the supervisor then waits
//! ([`RetryPolicy::DEFAULT`]: 1 s doubling to 30 s, back to 1 s after a healthy minute)
//! and starts the next one. Only cancellation (shutdown) or a source that ends (EXT-X-ENDLIST, the
//! end of a file) ends a channel.
//!
//! The policy is pure ([`RetryPolicy`]); [`supervise`] applies it to any attempt
//! future, so it is tested without media.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// When to start the next attempt: [`RetryPolicy::first`] after the first failure,
/// doubling per consecutive failure up to [`RetryPolicy::max`]; an attempt that ran
/// [`RetryPolicy::healthy_after`] before it failed starts the count over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first: Duration,
    pub max: Duration,
    pub healthy_after: Duration,
    /// How often the source is probed while waiting.
    pub probe_every: Duration,
}

impl RetryPolicy {
    /// 1 s doubling to 30 s, reset after a healthy minute.
    pub const DEFAULT: Self = Self {
        first: Duration::from_secs(1),
        max: Duration::from_secs(30),
        healthy_after: Duration::from_secs(60),
        probe_every: Duration::from_secs(1),
    };

    /// The wait before the next attempt after `failures` consecutive failed attempts
    /// (at least 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.first.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// Consecutive failures once an attempt that ran for `ran` has failed.
    pub fn failures_after(&self, previous: u32, ran: Duration) -> u32 {
        if ran >= self.healthy_after {
            1
        } else {
            previous.saturating_add(1)
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptEnd {
    /// Cancelled: the channel was stopped.
    Stopped,
    /// The source ended for good (EXT-X-ENDLIST, end of file).
    Ended,
    /// Anything else: retried.
    Failed(String),
}

/// Where a supervised channel stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// An attempt runs (the ingest's own state says how it is doing).
    Running,
    /// The last attempt failed; the next one starts at `next_attempt`.
    Retrying { next_attempt: DateTime<Utc> },
    /// Stopped on request.
    Stopped,
    /// The source ended.
    Ended,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    last_error: Option<(DateTime<Utc>, String)>,
}

/// A channel's supervision state, shared with the status page and the metrics sampler.
#[derive(Debug)]
pub struct Supervision {
    inner: Mutex<Inner>,
    restarts: AtomicU64,
}

impl Default for Supervision {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                phase: Phase::Running,
                last_error: None,
            }),
            restarts: AtomicU64::new(0),
        }
    }
}

impl Supervision {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn phase(&self) -> Phase {
        self.lock().phase
    }
    /// The error that ended the last failed attempt.
    pub fn last_error(&self) -> Option<(DateTime<Utc>, String)> {
        self.lock().last_error.clone()
    }
    /// Attempts started after a failure.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }
    fn set(&self, phase: Phase) {
        self.lock().phase = phase;
    }
    fn failed(&self, why: String, next_attempt: DateTime<Utc>) {
        let mut g = self.lock();
        g.phase = Phase::Retrying { next_attempt };
        g.last_error = Some((Utc::now(), why));
    }
}

/// The message of a panic payload.
pub(crate) fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Run `attempt` (given a child of `cancel`) until it is stopped or ends, restarting it
/// after each failure or panic. `on_restart` is called once per restart (the metrics).
/// While it waits, `probe` is asked every [`RetryPolicy::probe_every`] whether the source
/// answers soundly (`None`: cannot tell); a source seen failing and then sound ends the
/// wait at once, so a long back-off never keeps a channel down once its origin is
/// healthy again. A source sound all along (a fault of ours) waits the back-off out.
pub async fn supervise<F, Fut, P, PFut>(
    channel: &str,
    policy: RetryPolicy,
    sup: &Supervision,
    cancel: CancellationToken,
    on_restart: impl Fn(),
    mut probe: P,
    mut attempt: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = AttemptEnd> + Send + 'static,
    P: FnMut() -> PFut,
    PFut: Future<Output = Option<bool>>,
{
    let mut failures = 0u32;
    loop {
        sup.set(Phase::Running);
        let started = Instant::now();
        // Its own task: a panic in the attempt ends the attempt, not the supervisor.
        let end = match tokio::spawn(attempt(cancel.child_token())).await {
            Ok(end) => end,
            Err(e) => AttemptEnd::Failed(format!("panicked: {}", panic_message(e))),
        };
        let why = match end {
            _ if cancel.is_cancelled() => return sup.set(Phase::Stopped),
            AttemptEnd::Stopped => return sup.set(Phase::Stopped),
            AttemptEnd::Ended => {
                tracing::info!(%channel, "source ended; the channel is done");
                return sup.set(Phase::Ended);
            }
            AttemptEnd::Failed(why) => why,
        };
        failures = policy.failures_after(failures, started.elapsed());
        let delay = policy.delay(failures);
        let next_attempt = Utc::now() + delay;
        tracing::warn!(%channel, error = %why, failures, retry_in_s = delay.as_secs_f64(), "channel attempt failed; restarting");
        sup.failed(why, next_attempt);
        if !wait_to_retry(channel, delay, policy.probe_every, &cancel, &mut probe).await {
            return sup.set(Phase::Stopped);
        }
        sup.restarts.fetch_add(1, Ordering::Relaxed);
        on_restart();
    }
}

/// Wait `delay`, or less once `probe` has seen the source fail and then answer soundly;
/// false when cancelled.
async fn wait_to_retry<P, PFut>(
    channel: &str,
    delay: Duration,
    every: Duration,
    cancel: &CancellationToken,
    probe: &mut P,
) -> bool
where
    P: FnMut() -> PFut,
    PFut: Future<Output = Option<bool>>,
{
    let until = Instant::now() + delay;
    let mut seen_failing = false;
    loop {
        let next = until.min(Instant::now() + every);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = cancel.cancelled() => return false,
        }
        if Instant::now() >= until {
            return true;
        }
        // A probe that does not answer within the interval counts as failing.
        let sound = tokio::select! {
            r = tokio::time::timeout(every, probe()) => r.unwrap_or(Some(false)),
            _ = cancel.cancelled() => return false,
        };
        match sound {
            Some(false) => seen_failing = true,
            Some(true) if seen_failing => {
                tracing::info!(%channel, "source answers again; restarting now");
                return true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    const P: RetryPolicy = RetryPolicy::DEFAULT;

    #[test]
    fn back_off_doubles_from_one_second_to_thirty() {
        let secs: Vec<u64> = (1..=8).map(|f| P.delay(f).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(P.delay(0), P.first);
        assert_eq!(P.delay(u32::MAX), P.max);
    }

    #[test]
    fn a_healthy_minute_starts_the_back_off_over() {
        assert_eq!(P.failures_after(0, Duration::from_secs(2)), 1);
        assert_eq!(P.failures_after(5, Duration::from_secs(59)), 6);
        assert_eq!(P.failures_after(5, Duration::from_secs(60)), 1);
        assert_eq!(P.failures_after(u32::MAX, Duration::ZERO), u32::MAX);
    }

    /// The default policy scaled down to milliseconds, for tests on tokio's real clock.
    const FAST: RetryPolicy = RetryPolicy {
        first: Duration::from_millis(100),
        max: Duration::from_secs(3),
        healthy_after: Duration::from_secs(6),
        probe_every: Duration::from_millis(50),
    };

    /// Attempts that fail, panic, then run until stopped: restarted with waits of one,
    /// two and four times the first, counted, the last error kept.
    #[tokio::test]
    async fn failed_and_panicking_attempts_are_restarted_until_stopped() {
        let sup = Arc::new(Supervision::default());
        let restarts = Arc::new(AtomicU32::new(0));
        let tries = Arc::new(AtomicU32::new(0));
        let cancel = CancellationToken::new();
        let started_at = Arc::new(Mutex::new(Vec::new()));
        // The error each restart follows.
        let errors = Arc::new(Mutex::new(Vec::<String>::new()));
        let run = {
            let (sup, restarts, tries, started_at, errors) = (
                sup.clone(),
                restarts.clone(),
                tries.clone(),
                started_at.clone(),
                errors.clone(),
            );
            let cancel = cancel.clone();
            tokio::spawn(async move {
                supervise(
                    "t",
                    FAST,
                    &sup,
                    cancel,
                    || {
                        restarts.fetch_add(1, Ordering::Relaxed);
                        let why = sup.last_error().map(|(_, m)| m).unwrap_or_default();
                        errors.lock().unwrap().push(why);
                    },
                    || async { None },
                    |token: CancellationToken| {
                        let n = tries.fetch_add(1, Ordering::Relaxed);
                        started_at.lock().unwrap().push(Instant::now());
                        async move {
                            match n {
                                0 | 2 => AttemptEnd::Failed(format!("origin broke {n}")),
                                1 => panic!("range start must not be greater than end"),
                                _ => {
                                    token.cancelled().await;
                                    AttemptEnd::Stopped
                                }
                            }
                        }
                    },
                )
                .await
            })
        };
        // Three failures: waits of 100, 200 and 400 ms before attempts 2, 3 and 4.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            matches!(sup.phase(), Phase::Retrying { .. }),
            "{:?}",
            sup.phase()
        );
        assert_eq!(sup.last_error().unwrap().1, "origin broke 0");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tries.load(Ordering::Relaxed) < 4 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(sup.phase(), Phase::Running);
        let errors = errors.lock().unwrap().clone();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert_eq!(errors[0], "origin broke 0");
        assert!(
            errors[1].starts_with("panicked: range start must not"),
            "{errors:?}"
        );
        assert_eq!(errors[2], "origin broke 2");
        assert_eq!(sup.restarts(), 3);
        assert_eq!(restarts.load(Ordering::Relaxed), 3);
        let t = started_at.lock().unwrap().clone();
        // Each wait at least its delay (an attempt and the scheduler add a little).
        let gaps: Vec<Duration> = t.windows(2).map(|w| w[1] - w[0]).collect();
        for (gap, failures) in gaps.iter().zip(1..) {
            assert!(*gap >= FAST.delay(failures), "{gaps:?}");
        }
        assert_eq!(gaps.len(), 3);
        cancel.cancel();
        run.await.unwrap();
        assert_eq!(sup.phase(), Phase::Stopped);
        assert_eq!(tries.load(Ordering::Relaxed), 4);
    }

    /// How long after its first failure the second attempt starts, with a back-off of
    /// `delay` and a source that answers soundly from `sound_after` on (or always).
    async fn second_attempt_after(delay: Duration, sound_after: Option<Duration>) -> Duration {
        let policy = RetryPolicy {
            first: delay,
            max: delay,
            ..FAST
        };
        let sup = Arc::new(Supervision::default());
        let cancel = CancellationToken::new();
        let tries = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        let run = {
            let (sup, cancel, tries) = (sup.clone(), cancel.clone(), tries.clone());
            tokio::spawn(async move {
                let probe =
                    || async move { Some(sound_after.is_none_or(|after| t0.elapsed() >= after)) };
                supervise(
                    "t",
                    policy,
                    &sup,
                    cancel,
                    || {},
                    probe,
                    |token| {
                        let n = {
                            let mut t = tries.lock().unwrap();
                            t.push(Instant::now());
                            t.len()
                        };
                        async move {
                            if n == 1 {
                                return AttemptEnd::Failed("origin down".into());
                            }
                            token.cancelled().await;
                            AttemptEnd::Stopped
                        }
                    },
                )
                .await
            })
        };
        let deadline = Instant::now() + delay + Duration::from_secs(5);
        while tries.lock().unwrap().len() < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cancel.cancel();
        run.await.unwrap();
        let t = tries.lock().unwrap().clone();
        assert_eq!(t.len(), 2, "the second attempt started");
        t[1] - t[0]
    }

    #[tokio::test]
    async fn a_source_that_answers_again_ends_the_back_off() {
        // Failing, then sound after 300 ms: restarted then, not after 20 s.
        let gap =
            second_attempt_after(Duration::from_secs(20), Some(Duration::from_millis(300))).await;
        assert!(gap >= Duration::from_millis(300), "{gap:?}");
        assert!(gap < Duration::from_secs(5), "{gap:?}");
        // Sound all along (the fault is ours): the back-off is waited out.
        let gap = second_attempt_after(Duration::from_millis(800), None).await;
        assert!(gap >= Duration::from_millis(800), "{gap:?}");
    }

    #[tokio::test]
    async fn an_ended_source_ends_the_channel() {
        let sup = Supervision::default();
        supervise(
            "t",
            FAST,
            &sup,
            CancellationToken::new(),
            || {},
            || async { None },
            |_| async { AttemptEnd::Ended },
        )
        .await;
        assert_eq!(sup.phase(), Phase::Ended);
        assert_eq!(sup.restarts(), 0);
    }
}
