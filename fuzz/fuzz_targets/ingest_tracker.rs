//! Ingest's playlist tracking (`ingest::tracker`): a sequence of reloads of one live
//! media playlist, as an origin might serve them (growing, lagging, restarting, broken).
//! Input: the reloads' texts, separated by lines holding only `##`; reloads are 2 s apart.
//!
//! Checked: no reload panics; each segment is handed out at most once and in order, except
//! after a reset (the origin restarted), where the sequence may start over; after a reload
//! the next sequence number to fetch is past every job handed out.
#![no_main]
use chrono::{DateTime, Duration, Utc};
use libfuzzer_sys::fuzz_target;
use m3u8_rs::Playlist;
use shopcue::ingest::tracker::{PlaylistTracker, low_latency, parse};
use url::Url;

fuzz_target!(|data: &[u8]| {
    let url = Url::parse("https://origin.example/live/news/720p/index.m3u8").unwrap();
    let mut now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let mut tracker = PlaylistTracker::new(3);
    let mut last_job: Option<u64> = None;
    for body in split(data) {
        now += Duration::seconds(2);
        let _ = low_latency(&url, body);
        let Ok(Playlist::MediaPlaylist(pl)) = parse(&url, body) else {
            continue;
        };
        let Ok(up) = tracker.update(&url, &pl, now) else {
            continue;
        };
        if up.reset {
            last_job = None;
        }
        for job in &up.jobs {
            assert!(
                last_job.is_none_or(|l| job.msn > l),
                "segment {} handed out after {last_job:?}",
                job.msn
            );
            assert!(job.duration.is_finite() && job.duration >= 0.0);
            last_job = Some(job.msn);
        }
        if let Some(l) = last_job {
            assert!(tracker.next_msn().is_some_and(|n| n > l));
        }
        assert!(
            !(up.stale && !up.jobs.is_empty()),
            "a stale load handed out jobs"
        );
    }
});

/// The reloads: the input split at lines that hold only `##`.
fn split(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.windows(4).position(|w| w == b"\n##\n") {
            Some(i) => {
                rest = Some(&r[i + 4..]);
                Some(&r[..i + 1])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
    .take(16)
}
