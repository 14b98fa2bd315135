//! Live ingest against the real test origin on loopback, with real GStreamer decoding of
//! the real footage: order, exactly-once fetching, wall clocks, and recovery from faults.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::TestOrigin;
use shopcue::config::Settings;
use shopcue::file_origin::Fault;
use shopcue::frame::Frame;
use shopcue::ingest::hls::{self, FetchedSegment, Fetcher};
use shopcue::ingest::{self, ChannelStats, IngestOptions, OnError, SourceSpec};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn settings() -> Settings {
    let mut s = Settings::default();
    s.ingest.retry_initial_ms = 100;
    s.ingest.retry_max_ms = 800;
    s.ingest.segment_timeout_ms = 1500;
    s.ingest.playlist_timeout_ms = 1500;
    s.ingest.stall_target_durations = 2.0;
    s.media.analysis_height = 180;
    s
}

/// Follow the origin's playlist for `secs`, injecting `faults` after the first segment;
/// returns the segments in arrival order and the stats.
async fn follow_for(
    origin: &TestOrigin,
    secs: f64,
    faults: Vec<Fault>,
) -> (Vec<FetchedSegment>, Arc<ChannelStats>) {
    let s = settings();
    let fetcher = Fetcher::new().unwrap();
    let url = url::Url::parse(&origin.media_url()).unwrap();
    let opened = hls::open(&fetcher, &url, &s.ingest).await.unwrap();
    let stats = Arc::new(ChannelStats::default());
    let (tx, mut rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(hls::follow(
        fetcher,
        opened,
        s.ingest.clone(),
        stats.clone(),
        tx,
        cancel.clone(),
    ));
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    let mut faults = Some(faults);
    loop {
        tokio::select! {
            piece = rx.recv() => match piece {
                Some(hls::DecoderInput::Segment(seg)) => {
                    got.push(seg);
                    if let Some(fs) = faults.take() {
                        let next = got[0].job.msn;
                        for f in fs {
                            origin.origin.inject(shift(f, next));
                        }
                    }
                }
                Some(other) => panic!("a plain HLS origin gives whole segments, not {other:?}"),
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    (got, stats)
}

/// Faults name segments relative to the first one fetched.
fn shift(f: Fault, base: u64) -> Fault {
    match f {
        Fault::SegmentStatus { msn, status, count } => Fault::SegmentStatus {
            msn: base + msn,
            status,
            count,
        },
        Fault::SegmentGarbage { msn } => Fault::SegmentGarbage { msn: base + msn },
        Fault::SegmentTruncate { msn } => Fault::SegmentTruncate { msn: base + msn },
        Fault::SegmentDelay { msn, ms } => Fault::SegmentDelay {
            msn: base + msn,
            ms,
        },
        other => other,
    }
}

fn assert_contiguous(segs: &[FetchedSegment]) -> Vec<u64> {
    let msns: Vec<u64> = segs.iter().map(|s| s.job.msn).collect();
    for w in msns.windows(2) {
        assert_eq!(w[1], w[0] + 1, "segments out of order or missing: {msns:?}");
    }
    msns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_segments_arrive_once_in_order_with_origin_clock() {
    let origin = TestOrigin::start("intel_concat.mp4", 1.0, 4, true).await;
    let (segs, stats) = follow_for(&origin, 6.5, vec![]).await;
    let msns = assert_contiguous(&segs);
    assert!(
        msns.len() >= 5,
        "expected about 6 segments in 6.5 s of a live 1 s channel, got {msns:?}"
    );
    // Exactly once, from the origin's point of view.
    let requests = origin.origin.requests();
    for m in &msns {
        assert_eq!(
            requests.get(m),
            Some(&1),
            "segment {m} requested {:?} times",
            requests.get(m)
        );
    }
    for s in &segs {
        assert!(s.job.origin_pdt);
        assert_eq!(Some(s.job.wallclock), origin.origin.pdt_of(s.job.msn));
    }
    assert_eq!(stats.segments_lost.load(Ordering::Relaxed), 0);
}

/// The frames a whole ingest channel (fetch + GStreamer decode) on `url` delivers in
/// `secs`, and the stopped channel.
/// A channel started on `url` with the test settings, and what cancels it.
async fn started(url: &str, opts: IngestOptions) -> (ingest::Channel, CancellationToken) {
    let s = settings();
    let cancel = CancellationToken::new();
    let spec = SourceSpec::parse(url).unwrap();
    let ch = ingest::start("t", spec, &s.ingest, &s.media, opts, cancel.clone())
        .await
        .unwrap();
    (ch, cancel)
}

/// Every frame of the channel on `url` for `secs` (or until it ends), failing on the
/// first error.
async fn frames_for(url: &str, secs: f64) -> (Vec<Frame>, ingest::Channel) {
    let opts = IngestOptions {
        on_error: OnError::Fail,
        ..Default::default()
    };
    frames_with(url, Duration::from_secs_f64(secs), opts).await
}

/// Every frame of the channel on `url` until it ends or `limit` passes.
async fn frames_with(
    url: &str,
    limit: Duration,
    opts: IngestOptions,
) -> (Vec<Frame>, ingest::Channel) {
    let (mut ch, cancel) = started(url, opts).await;
    let mut frames: Vec<Frame> = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(f)) = tokio::time::timeout_at(deadline, ch.frames.recv()).await {
        frames.push(f);
    }
    cancel.cancel();
    (frames, ch)
}

/// Frames through the whole ingest (fetch + GStreamer decode): monotonic wall clocks that
/// match each segment's EXT-X-PROGRAM-DATE-TIME within one frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_carry_wallclocks_matching_pdt() {
    let origin = TestOrigin::start("intel_concat.mp4", 1.0, 4, true).await;
    let (frames, ch) = frames_for(&origin.master_url(), 6.0).await;
    assert!(frames.len() >= 100, "only {} frames in 6 s", frames.len());
    assert_eq!(frames[0].image.height, 180);
    for w in frames.windows(2) {
        assert!(
            w[1].wallclock > w[0].wallclock,
            "wall clock not monotonic at frame {}",
            w[1].index
        );
        assert_eq!(w[1].index, w[0].index + 1);
        assert!(w[1].pts_ns > w[0].pts_ns);
    }
    // Every segment start in the covered range has a frame within one frame duration (40 ms).
    let first_msn = (0..10_000u64)
        .find(|m| {
            origin
                .origin
                .pdt_of(*m)
                .is_some_and(|t| t >= frames[0].wallclock - chrono::Duration::milliseconds(20))
        })
        .unwrap();
    let mut checked = 0;
    for msn in first_msn.. {
        let pdt: DateTime<Utc> = origin.origin.pdt_of(msn).unwrap();
        if pdt > frames.last().unwrap().wallclock {
            break;
        }
        let nearest = frames
            .iter()
            .map(|f| (f.wallclock - pdt).num_microseconds().unwrap().abs())
            .min()
            .unwrap();
        assert!(
            nearest < 40_000,
            "segment {msn}: nearest frame {nearest} µs from its PDT"
        );
        checked += 1;
    }
    assert!(checked >= 4, "checked only {checked} segment starts");
    assert_eq!(ch.stats.segments_bad.load(Ordering::Relaxed), 0);
}

/// Low-Latency HLS: the segment in progress is fetched part by part (each part once, and
/// a streamed segment never again whole), decoded as the parts come, and its frames are
/// the segment's frames: none lost or doubled at part boundaries, clocks on the PDT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ll_hls_segments_are_followed_part_by_part() {
    let origin = TestOrigin::start_ll("intel_concat.mp4", 2.0, 4, 0.5).await;
    let (frames, ch) = frames_for(&origin.media_url(), 9.0).await;

    let parts = origin.origin.part_requests();
    let whole = origin.origin.requests();
    let streamed: std::collections::BTreeSet<u64> = parts.keys().map(|k| k.0).collect();
    assert!(streamed.len() >= 3, "parts of {streamed:?} only");
    for (key, n) in &parts {
        assert_eq!(*n, 1, "part {key:?} requested {n} times");
    }
    for msn in &streamed {
        assert_eq!(
            whole.get(msn),
            None,
            "segment {msn} streamed and fetched whole"
        );
        let count = parts.keys().filter(|k| k.0 == *msn).count();
        let last = *streamed.last().unwrap();
        if *msn != last {
            assert!(count >= 4, "segment {msn}: {count} parts fetched");
        }
    }
    assert_eq!(
        ch.stats.parts_fetched.load(Ordering::Relaxed),
        parts.len() as u64
    );
    assert_eq!(ch.stats.segments_bad.load(Ordering::Relaxed), 0);

    assert!(frames.len() >= 150, "only {} frames in 9 s", frames.len());
    for w in frames.windows(2) {
        assert!(w[1].wallclock > w[0].wallclock, "wall clock not monotonic");
        assert_eq!(w[1].index, w[0].index + 1);
    }
    let mut gaps: Vec<i64> = frames
        .windows(2)
        .map(|w| {
            (w[1].wallclock - w[0].wallclock)
                .num_microseconds()
                .unwrap()
        })
        .collect();
    gaps.sort();
    let frame_us = gaps[gaps.len() / 2];
    // Each streamed segment wholly seen: its first frame on its PDT, and all its frames.
    let mut checked = 0;
    for msn in streamed.iter().skip(1) {
        let (Some(start), Some(end)) = (origin.origin.pdt_of(*msn), origin.origin.pdt_of(msn + 1))
        else {
            continue;
        };
        if end > frames.last().unwrap().wallclock {
            break;
        }
        let inside: Vec<&Frame> = frames
            .iter()
            .filter(|f| {
                f.wallclock >= start - chrono::Duration::milliseconds(20)
                    && f.wallclock < end - chrono::Duration::milliseconds(20)
            })
            .collect();
        let expected =
            ((end - start).num_microseconds().unwrap() as f64 / frame_us as f64).round() as usize;
        assert_eq!(inside.len(), expected, "segment {msn}: frames");
        let first_off = (inside[0].wallclock - start)
            .num_microseconds()
            .unwrap()
            .abs();
        assert!(
            first_off < 20_000,
            "segment {msn}: first frame {first_off} µs off its PDT"
        );
        checked += 1;
    }
    assert!(checked >= 2, "checked only {checked} streamed segments");

    // Blocking reload requests the origin refuses (RFC 8216bis §6.2.5.2).
    let client = reqwest::Client::new();
    let far = origin.origin.segment_at(Utc::now()).unwrap().0 + 10;
    for query in [
        format!("_HLS_msn={far}"),
        "_HLS_part=1".to_string(),
        "_HLS_msn=x".to_string(),
    ] {
        let status = client
            .get(format!("{}?{query}", origin.media_url()))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 400, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_errors_are_retried_and_nothing_later_is_lost() {
    let origin = TestOrigin::start("intel_concat.mp4", 1.0, 4, true).await;
    let faults = vec![
        Fault::SegmentStatus {
            msn: 1,
            status: 404,
            count: 1,
        },
        Fault::SegmentStatus {
            msn: 2,
            status: 500,
            count: 2,
        },
        Fault::SegmentDelay { msn: 3, ms: 2500 },
    ];
    let (segs, stats) = follow_for(&origin, 9.0, faults).await;
    let msns = assert_contiguous(&segs);
    assert!(msns.len() >= 6, "{msns:?}");
    assert_eq!(stats.segments_lost.load(Ordering::Relaxed), 0);
    assert!(
        stats.fetch_errors.load(Ordering::Relaxed) >= 4,
        "404 + 2×500 + timeout were seen"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlist_errors_stalls_and_malformed_playlists_recover() {
    let origin = TestOrigin::start("intel_concat.mp4", 1.0, 8, true).await;
    let faults = vec![
        Fault::PlaylistStatus {
            status: 500,
            count: 2,
        },
        Fault::PlaylistMalformed { count: 1 },
        Fault::PlaylistStatus {
            status: 404,
            count: 1,
        },
    ];
    let (segs, stats) = follow_for(&origin, 8.0, faults).await;
    let msns = assert_contiguous(&segs);
    assert!(msns.len() >= 5, "{msns:?}");
    assert!(stats.playlist_errors.load(Ordering::Relaxed) >= 4);
    // A stall: the playlist freezes for 5 s (> 2 target durations of 2 s, less than the
    // 8-segment window), then moves on: nothing is lost.
    let (segs, stats) = follow_for(&origin, 9.0, vec![Fault::PlaylistStall { seconds: 5.0 }]).await;
    assert_contiguous(&segs);
    assert!(
        stats.stalls.load(Ordering::Relaxed) >= 1,
        "the stall was reported"
    );
    assert!(segs.len() >= 4, "the channel moved again after the stall");
    assert_eq!(stats.state(), ingest::ChannelState::Up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_truncated_segments_do_not_stop_the_channel() {
    let origin = TestOrigin::start("intel_concat.mp4", 1.0, 4, true).await;
    let (mut ch, cancel) = started(&origin.media_url(), IngestOptions::default()).await;
    let first = tokio::time::timeout(Duration::from_secs(10), ch.frames.recv())
        .await
        .unwrap()
        .unwrap();
    // Spoil the segments two and three after the one being decoded now.
    let now_msn = (0..10_000u64)
        .filter(|m| {
            origin
                .origin
                .pdt_of(*m)
                .is_some_and(|t| t <= first.wallclock)
        })
        .max()
        .unwrap();
    origin
        .origin
        .inject(Fault::SegmentGarbage { msn: now_msn + 2 });
    origin
        .origin
        .inject(Fault::SegmentTruncate { msn: now_msn + 3 });
    let mut per_segment: BTreeMap<u64, usize> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while let Ok(Some(f)) = tokio::time::timeout_at(deadline, ch.frames.recv()).await {
        let msn = (now_msn..now_msn + 50)
            .filter(|m| origin.origin.pdt_of(*m).is_some_and(|t| t <= f.wallclock))
            .max()
            .unwrap();
        *per_segment.entry(msn).or_default() += 1;
    }
    cancel.cancel();
    assert!(
        ch.stats.segments_bad.load(Ordering::Relaxed) >= 1,
        "the garbage segment was reported"
    );
    assert!(
        !per_segment.contains_key(&(now_msn + 2)),
        "no frames from garbage: {per_segment:?}"
    );
    // Later segments all decoded in full (25 frames of 1 s at 25 fps).
    for m in now_msn + 4..now_msn + 7 {
        assert_eq!(
            per_segment.get(&m),
            Some(&25),
            "segment {m} after the bad ones: {per_segment:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_restart_and_jump_are_followed() {
    let origin = TestOrigin::start("intel_concat.mp4", 1.0, 4, true).await;
    let (segs, stats) = follow_for(&origin, 7.0, vec![Fault::Jump { segments: 100 }]).await;
    let msns: Vec<u64> = segs.iter().map(|s| s.job.msn).collect();
    assert!(
        msns.iter().any(|m| *m >= 100),
        "followed the jump: {msns:?}"
    );
    assert!(stats.segments_skipped.load(Ordering::Relaxed) >= 90);
    for w in msns.windows(2) {
        assert!(w[1] > w[0], "in order: {msns:?}");
    }
    let (segs, stats) = follow_for(&origin, 7.0, vec![Fault::Restart]).await;
    assert!(
        stats.resets.load(Ordering::Relaxed) >= 1,
        "restart detected: {:?}",
        segs.iter().map(|s| s.job.msn).collect::<Vec<_>>()
    );
    let after: Vec<_> = segs.iter().skip_while(|s| s.job.msn >= 100).collect();
    assert!(after.len() >= 2, "segments after the restart arrived");
    for w in after.windows(2) {
        assert!(w[1].job.wallclock > w[0].job.wallclock);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_without_pdt_gets_a_consistent_clock() {
    let origin = TestOrigin::start("intel_concat.mp4", 1.0, 4, false).await;
    let (segs, _) = follow_for(&origin, 5.0, vec![]).await;
    assert_contiguous(&segs);
    assert!(segs.len() >= 3);
    for w in segs.windows(2) {
        assert!(!w[0].job.origin_pdt);
        let gap = (w[1].job.wallclock - w[0].job.wallclock).num_milliseconds() as f64 / 1000.0;
        assert!(
            (gap - w[0].job.duration).abs() < 0.002,
            "assigned clock advances by the duration: {gap}"
        );
    }
    // Anchored near now: the newest segment ends at about the time it was loaded.
    let last = segs.last().unwrap();
    let end =
        last.job.wallclock + chrono::Duration::milliseconds((last.job.duration * 1000.0) as i64);
    assert!((Utc::now() - end).num_seconds().abs() < 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_fail_with_one_clear_error() {
    let s = settings();
    let start = |input: &str| {
        let s = s.clone();
        let input = input.to_string();
        async move {
            let spec = SourceSpec::parse(&input)?;
            let opts = IngestOptions {
                on_error: OnError::Fail,
                ..Default::default()
            };
            ingest::start(
                "t",
                spec,
                &s.ingest,
                &s.media,
                opts,
                CancellationToken::new(),
            )
            .await
            .map(|_| ())
        }
    };
    // Unreachable origin.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/x.m3u8", listener.local_addr().unwrap());
    drop(listener);
    let e = start(&dead).await.unwrap_err().to_string();
    assert!(
        e.contains(&dead) && e.to_lowercase().contains("connect"),
        "{e}"
    );
    // A URL that is not HLS, and a malformed playlist.
    let origin = TestOrigin::start("intel_concat.mp4", 1.0, 4, true).await;
    let e = start(&format!("{}/_control/requests", origin.base))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not an HLS playlist"), "{e}");
    origin.origin.inject(Fault::PlaylistMalformed { count: 1 });
    let e = start(&origin.media_url()).await.unwrap_err().to_string();
    assert!(e.contains("malformed playlist"), "{e}");
    origin.origin.inject(Fault::PlaylistStatus {
        status: 404,
        count: 1,
    });
    let e = start(&origin.media_url()).await.unwrap_err().to_string();
    assert!(e.contains("HTTP 404"), "{e}");
    // A file that is not video: found out at the first frame; the task says what and why.
    let spec = SourceSpec::parse(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let opts = IngestOptions {
        on_error: OnError::Fail,
        ..Default::default()
    };
    let mut ch = ingest::start(
        "t",
        spec,
        &s.ingest,
        &s.media,
        opts,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(ch.frames.recv().await.is_none());
    let e = ch.task.await.unwrap().unwrap_err().to_string();
    assert!(e.contains("Cargo.toml") && e.contains("not a video"), "{e}");
    let e = start("ftp://127.0.0.1/x").await.unwrap_err().to_string();
    assert!(e.contains("unsupported scheme"), "{e}");
}

/// The first 4-s segment (25 fps, 800 kbit/s) the test origin's encoder makes of `footage`.
fn first_segment(footage: &str) -> bytes::Bytes {
    let dir = tempfile::tempdir().unwrap();
    let segs = shopcue::media::encode_segments(&common::footage(footage), dir.path(), 4.0, 25, 800)
        .expect("encode");
    bytes::Bytes::from(std::fs::read(&segs[0]).unwrap())
}

/// A segment's frames go on as they decode, under the consumer's backpressure: a consumer
/// slower than the decode timeout does not fail the segment, every frame arrives, and
/// the decode time reported leaves the consumer's waiting out.
#[test]
fn a_slow_consumer_takes_frames_as_they_decode_without_a_timeout() {
    let data = first_segment("grocery_shots.mp4");
    let timeout = Duration::from_millis(1500);
    let mut decoder =
        shopcue::media::SegmentDecoder::new(shopcue::media::Pipelines::default(), 90, timeout)
            .expect("GStreamer decoder");
    let started = std::time::Instant::now();
    let mut frames = 0usize;
    let mut first_at = None;
    let stats = decoder
        .decode("slow consumer", None, data, |_| {
            first_at.get_or_insert_with(|| started.elapsed());
            frames += 1;
            std::thread::sleep(Duration::from_millis(25));
        })
        .expect("a consumer's pace is not a decode timeout");
    let total = started.elapsed();
    assert!(frames >= 95, "4 s at 25 fps: {frames} frames");
    assert_eq!(stats.frames, frames);
    assert!(total > timeout, "the consumer alone took {total:?}");
    assert!(
        stats.elapsed < total - Duration::from_millis(25 * 90),
        "decode time {:?} leaves out the consumer's {total:?}",
        stats.elapsed
    );
    // The first frame came long before the segment was through.
    assert!(
        first_at.unwrap() < total / 2,
        "first frame at {first_at:?} of {total:?}"
    );
}

/// `media.decoder_threads` changes how a segment is decoded, never what: one thread (the
/// default) and libav's own choice give the same frames, pixel for pixel, on real footage.
#[test]
fn one_decoder_thread_gives_the_frames_of_libavs_own_threading() {
    let data = first_segment("intel_concat.mp4");
    let decode = |threads: u32| {
        let settings = shopcue::media::MediaSettings {
            decoder_threads: threads,
            ..Default::default()
        };
        let pipelines = shopcue::media::Pipelines::new(&settings);
        let mut decoder =
            shopcue::media::SegmentDecoder::new(pipelines, 180, Duration::from_secs(30))
                .expect("GStreamer decoder");
        let mut frames = Vec::new();
        decoder
            .decode("threads", None, data.clone(), |f| {
                frames.push((f.pts_ns, f.image.data))
            })
            .expect("decoded");
        frames
    };
    let one = decode(1);
    let auto = decode(0);
    assert!(one.len() >= 95, "4 s at 25 fps: {} frames", one.len());
    assert_eq!(one.len(), auto.len());
    assert!(one == auto, "the same segment decoded differently");
}

/// An origin at 127.0.0.1 whose `/same` redirects within its host, `/away` to
/// `localhost` (another host name of this machine), and `/b.m3u8` answers.
async fn redirecting_origin() -> std::net::SocketAddr {
    common::scripted_origin(|addr, target| match target {
        "/same" => format!(
            "HTTP/1.1 302 Found\r\nLocation: http://{addr}/b.m3u8\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        "/away" => format!(
            "HTTP/1.1 302 Found\r\nLocation: http://localhost:{}/b.m3u8\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            addr.port()
        ),
        _ => "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\n#EXTM3U".to_string(),
    })
    .await
}

/// Origin redirects are followed within the origin's host and to `ingest.redirect_hosts`
/// only; one to any other host fails the request with an error naming it.
#[tokio::test]
async fn redirects_leave_the_origin_host_only_for_allowed_hosts() {
    let addr = redirecting_origin().await;
    let url = |p: &str| url::Url::parse(&format!("http://{addr}{p}")).unwrap();
    let limit = 1 << 20;
    let t = Duration::from_secs(5);
    let strict = Fetcher::new().unwrap();
    let body = strict.get(&url("/same"), None, limit, t).await.unwrap();
    assert_eq!(&body[..], b"#EXTM3U");
    let e = strict
        .get(&url("/away"), None, limit, t)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`localhost`") && e.contains("ingest.redirect_hosts"),
        "{e}"
    );
    let allowing = Fetcher::with_redirect_hosts(&["LocalHost".to_string()]).unwrap();
    let body = allowing.get(&url("/away"), None, limit, t).await.unwrap();
    assert_eq!(&body[..], b"#EXTM3U");
}

/// Four 1 s segments of the real footage, as the test origin serves them.
async fn four_segments() -> Vec<bytes::Bytes> {
    let origin = TestOrigin::start("intel_concat.mp4", 1.0, 6, true).await;
    let http = reqwest::Client::new();
    let base = url::Url::parse(&origin.media_url()).unwrap();
    for _ in 0..50 {
        let playlist = http.get(base.clone()).send().await.unwrap();
        let playlist = playlist.text().await.unwrap();
        let uris: Vec<&str> = playlist
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if uris.len() >= 4 {
            let mut out = Vec::new();
            for uri in &uris[..4] {
                let r = http.get(base.join(uri).unwrap()).send().await.unwrap();
                out.push(r.bytes().await.unwrap());
            }
            return out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the test origin never listed four segments");
}

/// A VOD playlist of `entries` (`(uri, byte range)`), 1 s each.
fn vod_playlist(entries: &[(String, Option<(usize, usize)>)]) -> String {
    let mut p = String::from(
        "#EXTM3U\n#EXT-X-VERSION:4\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXT-X-PLAYLIST-TYPE:VOD\n",
    );
    for (uri, range) in entries {
        p.push_str("#EXTINF:1.000,\n");
        if let Some((len, off)) = range {
            p.push_str(&format!("#EXT-X-BYTERANGE:{len}@{off}\n"));
        }
        p.push_str(&format!("{uri}\n"));
    }
    p.push_str("#EXT-X-ENDLIST\n");
    p
}

/// An origin with two faults real servers have: `/range/` serves the four segments as
/// byte ranges of one file but ignores `Range` (200, the whole file, every time);
/// `/slow/` serves them as files, the second one trickled (512 bytes every 200 ms, a
/// slow-loris body that never finishes within the segment timeout).
async fn faulty_origin(segments: Vec<bytes::Bytes>) -> String {
    use axum::body::Body;
    use axum::extract::Path;
    use axum::routing::get;
    let whole: bytes::Bytes = segments.concat().into();
    let mut ranged = Vec::new();
    let mut off = 0;
    for s in &segments {
        ranged.push(("all.ts".to_string(), Some((s.len(), off))));
        off += s.len();
    }
    let files: Vec<(String, Option<(usize, usize)>)> =
        (0..4).map(|i| (format!("seg{i}.ts"), None)).collect();
    let (range_m3u8, slow_m3u8) = (vod_playlist(&ranged), vod_playlist(&files));
    let app = axum::Router::new()
        .route("/range/v.m3u8", get(move || async move { range_m3u8 }))
        .route("/range/all.ts", get(move || async move { whole }))
        .route("/slow/v.m3u8", get(move || async move { slow_m3u8 }))
        .route(
            "/slow/{file}",
            get(move |Path(file): Path<String>| async move {
                let i: usize = file
                    .trim_start_matches("seg")
                    .trim_end_matches(".ts")
                    .parse()
                    .unwrap();
                let body = segments[i].clone();
                if i != 1 {
                    return Body::from(body);
                }
                let chunks = futures::stream::unfold(body, |mut rest| async move {
                    if rest.is_empty() {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let chunk = rest.split_to(rest.len().min(512));
                    Some((Ok::<_, std::io::Error>(chunk), rest))
                });
                Body::from_stream(chunks)
            }),
        );
    common::serve_router(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_ignores_range_or_trickles_a_segment_is_followed() {
    let segments = four_segments().await;
    let base = faulty_origin(segments).await;

    // Range ignored: each byte range is cut from the whole file; every frame arrives.
    let url = format!("{base}/range/v.m3u8");
    let (frames, ch) = frames_with(&url, Duration::from_secs(20), IngestOptions::default()).await;
    let frames = frames.len();
    assert_eq!(
        frames, 100,
        "4 segments of 25 frames through an origin that ignores Range"
    );
    assert_eq!(ch.stats.segments_bad.load(Ordering::Relaxed), 0);
    assert_eq!(ch.stats.segments_lost.load(Ordering::Relaxed), 0);

    // A trickled segment times out (1.5 s here), is retried, then given up and counted;
    // the segments after it are decoded whole.
    let url = format!("{base}/slow/v.m3u8");
    let (frames, ch) = frames_with(&url, Duration::from_secs(30), IngestOptions::default()).await;
    let frames = frames.len();
    let stats = &ch.stats;
    eprintln!(
        "slow-loris segment: {frames} frames, fetch errors {}, lost {}",
        stats.fetch_errors.load(Ordering::Relaxed),
        stats.segments_lost.load(Ordering::Relaxed)
    );
    assert_eq!(frames, 75, "the three whole segments' frames");
    assert!(stats.fetch_errors.load(Ordering::Relaxed) >= 1);
    assert_eq!(stats.segments_lost.load(Ordering::Relaxed), 1);
}
