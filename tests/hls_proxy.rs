//! The sidecar's HLS proxy (`src/http/proxy.rs`) on loopback with real parts: the looping
//! test origin (real encoded segments), an in-memory cue bus, a tiny static origin for
//! hand-written playlists, raw TCP for requests a normal client would normalise, and
//! ffprobe for the ID3 stream of a proxied segment.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::TestOrigin;
use shopcue::config::{ChannelSettings, Settings};
use shopcue::cue::CueEvent;
use shopcue::cuebus::CueBus;
use shopcue::cuebus::memory::MemoryBus;
use shopcue::http::proxy::{self, HlsState};
use shopcue::ingest::hls::Fetcher;
use shopcue::progress::AnalysisProgress;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct Sidecar {
    addr: SocketAddr,
    state: HlsState,
    bus: Arc<MemoryBus>,
    progress: Arc<AnalysisProgress>,
    stop: CancellationToken,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn sidecar(channel_url: &str, tweak: impl FnOnce(&mut Settings)) -> Sidecar {
    let mut s = Settings {
        channels: vec![ChannelSettings {
            id: "ch".into(),
            url: channel_url.into(),
        }],
        ..Default::default()
    };
    tweak(&mut s);
    s.manifest.validate().expect("valid manifest settings");
    let progress = Arc::new(AnalysisProgress::default());
    let mut map = HashMap::new();
    map.insert("ch".to_string(), progress.clone());
    let state = HlsState::new(
        &s.channels,
        &s.manifest,
        &s.ingest,
        Fetcher::new().unwrap(),
        &map,
    )
    .unwrap();
    let bus = Arc::new(MemoryBus::new(1000));
    let stop = CancellationToken::new();
    state.spawn_cue_feeds(bus.clone() as Arc<dyn CueBus>, stop.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let st = stop.clone();
    tokio::spawn(proxy::serve(listener, state.clone(), async move {
        st.cancelled().await
    }));
    Sidecar {
        addr,
        state,
        bus,
        progress,
        stop,
    }
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// A request sent byte for byte (no client-side normalisation of `..`); the status.
async fn raw_status(addr: SocketAddr, path: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A static origin on loopback: path → body (HTTP/1.1, one request per connection).
async fn static_origin(files: Vec<(&'static str, String)>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let files: Arc<HashMap<&'static str, String>> = Arc::new(files.into_iter().collect());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let files = files.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
                    match sock.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let resp = match files.get(path.as_str()) {
                    Some(body) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    ),
                    None => {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_string()
                    }
                };
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

fn media_sequence(p: &str) -> u64 {
    p.lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("media sequence")
}

fn daterange_line<'a>(p: &'a str, id: &str) -> Option<&'a str> {
    let needle = format!("ID=\"{id}\"");
    p.lines()
        .find(|l| l.starts_with("#EXT-X-DATERANGE:") && l.contains(&needle))
}

/// Poll the sidecar until `pred` holds for the playlist at `path` (bounded).
async fn wait_for(addr: SocketAddr, path: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get(addr, path).await;
        if status == 200 && pred(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Anchors for msn 0..1000 at `t0 + msn s` (what ingest records for 1 s segments).
fn anchor_all(p: &AnalysisProgress, t0: DateTime<Utc>) {
    for msn in 0..1000u64 {
        p.set_anchor(msn, t0 + chrono::TimeDelta::seconds(msn as i64));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlists_carry_stable_cues_and_point_at_the_sidecar() {
    let origin = TestOrigin::start("intel_concat.mp4", 1.0, 6, false).await;
    let sc = sidecar(&origin.master_url(), |_| {}).await;
    let t0 = Utc::now() - chrono::TimeDelta::seconds(30);
    anchor_all(&sc.progress, t0);

    let (status, mv) = get(sc.addr, "/hls/ch/master.m3u8").await;
    assert_eq!(status, 200, "{mv}");
    assert!(mv.contains("#EXT-X-STREAM-INF"), "{mv}");
    let variant = mv
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap();
    assert!(
        !variant.contains("://"),
        "variant must resolve to the sidecar: {mv}"
    );
    let variant_path = format!("/hls/ch/{variant}");

    let (status, media) = get(sc.addr, &variant_path).await;
    assert_eq!(status, 200, "{media}");
    assert!(
        media.contains("#EXT-X-PROGRAM-DATE-TIME:"),
        "PDT added: {media}"
    );
    for uri in media
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(
            uri.starts_with(&format!("{}/live/", origin.base)),
            "absolute origin segment URI: {uri}"
        );
    }

    // A cue starting 300 ms into the second listed segment.
    let msn = media_sequence(&media) + 1;
    let mut cue = common::cue("ch", 1);
    cue.start = t0 + chrono::TimeDelta::milliseconds(msn as i64 * 1000 + 300);
    for b in &mut cue.boxes {
        b.t = cue.start;
    }
    sc.bus.publish(CueEvent::Start(cue.clone()));
    let p1 = wait_for(sc.addr, &variant_path, "the date range", |p| {
        daterange_line(p, &cue.id).is_some()
    })
    .await;
    let open = daterange_line(&p1, &cue.id).unwrap().to_string();
    assert!(open.contains("CLASS=\"com.shopcue.product\""), "{open}");
    assert!(open.contains("SCTE35-CMD=0x"), "{open}");
    assert!(!open.contains(",DURATION="), "{open}");
    // Updates do not change the published attributes; a second reload is identical.
    let mut upd = cue.clone();
    upd.score = 0.99;
    sc.bus.publish(CueEvent::Update(upd));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_, p2) = get(sc.addr, &variant_path).await;
    assert_eq!(daterange_line(&p2, &cue.id), Some(open.as_str()), "{p2}");

    let mut end = cue.clone();
    end.end = Some(cue.start + chrono::TimeDelta::milliseconds(1500));
    sc.bus.publish(CueEvent::End(end));
    let p3 = wait_for(sc.addr, &variant_path, "DURATION", |p| {
        daterange_line(p, &cue.id).is_some_and(|l| l.contains(",DURATION="))
    })
    .await;
    let closed = daterange_line(&p3, &cue.id).unwrap();
    assert!(
        closed.starts_with(&open),
        "closed form extends the open one: {closed}"
    );
    assert!(closed.contains(",DURATION=1.5"), "{closed}");
    let st = sc.state.stats();
    assert!(
        st.cache_hits.load(std::sync::atomic::Ordering::Relaxed)
            + st.origin_fetches.load(std::sync::atomic::Ordering::Relaxed)
            >= 4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_ad_markers_pass_through_unchanged() {
    let playlist = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:10\n\
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T10:00:00.000Z\n#EXTINF:2.000,\ns10.ts\n\
#EXT-X-CUE-OUT:DURATION=4\n#EXTINF:2.000,\ns11.ts\n#EXT-X-CUE-OUT-CONT:ElapsedTime=2,Duration=4\n#EXTINF:2.000,\ns12.ts\n\
#EXT-X-CUE-IN\n#EXTINF:2.000,\ns13.ts\n"
        .to_string();
    let addr = static_origin(vec![("/a/live.m3u8", playlist.clone())]).await;
    let sc = sidecar(&format!("http://{addr}/a/live.m3u8"), |_| {}).await;
    let (status, out) = get(sc.addr, "/hls/ch/live.m3u8").await;
    assert_eq!(status, 200, "{out}");
    for marker in [
        "#EXT-X-CUE-OUT:DURATION=4",
        "#EXT-X-CUE-OUT-CONT:ElapsedTime=2,Duration=4",
        "#EXT-X-CUE-IN",
        "#EXT-X-PROGRAM-DATE-TIME:2026-11-21T10:00:00.000Z",
    ] {
        assert!(out.lines().any(|l| l == marker), "{marker} kept: {out}");
    }
    assert!(out.contains(&format!("http://{addr}/a/s12.ts")), "{out}");
    // Segments are not served in absolute mode.
    assert_eq!(get(sc.addr, "/hls/ch/s10.ts").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_unknown_channels_and_origin_failures_are_refused() {
    let big = format!(
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n{}",
        "#EXTINF:2.000,\nsegment-with-a-long-name.ts\n".repeat(400)
    );
    let addr = static_origin(vec![
        (
            "/a/live.m3u8",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\ns.ts\n".into(),
        ),
        ("/a/big.m3u8", big),
        ("/etc/passwd", "root:x:0:0".into()),
    ])
    .await;
    let sc = sidecar(&format!("http://{addr}/a/live.m3u8"), |s| {
        s.ingest.max_playlist_bytes = 4096;
    })
    .await;
    for path in [
        "/hls/ch/../../etc/passwd",
        "/hls/ch/%2e%2e/%2e%2e/etc/passwd",
        "/hls/ch/%2E%2E/etc/passwd",
        "/hls/ch/..%2fetc/passwd.m3u8",
        "/hls/ch//etc/passwd.m3u8",
        "/hls/ch/http:%2f%2fexample.com/x.m3u8",
    ] {
        let status = raw_status(sc.addr, path).await;
        assert!(status == 400 || status == 404, "{path}: {status}");
    }
    assert_eq!(raw_status(sc.addr, "/hls/nope/live.m3u8").await, 404);
    assert_eq!(raw_status(sc.addr, "/hls/ch/live.m3u8").await, 200);
    let (status, body) = get(sc.addr, "/hls/ch/big.m3u8").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("limit") && body.lines().count() == 1,
        "{body}"
    );
    assert_eq!(get(sc.addr, "/hls/ch/missing.m3u8").await.0, 404);

    // Origin down: 502 with one line.
    let port = common::free_port();
    let down = sidecar(&format!("http://127.0.0.1:{port}/x/live.m3u8"), |_| {}).await;
    let (status, body) = get(down.addr, "/hls/ch/live.m3u8").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body.lines().count(), 1, "{body}");
}

/// An origin that answers every request after `delay` with a small body.
async fn slow_origin(delay: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = sock.read(&mut buf).await;
                tokio::time::sleep(delay).await;
                let _ = sock
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nsegs",
                    )
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_fetches_are_capped_and_the_excess_told_to_retry() {
    let origin = slow_origin(Duration::from_millis(1500)).await;
    let sc = sidecar(&format!("http://{origin}/live/index.m3u8"), |s| {
        s.manifest.segment_uris = "proxy".into();
        s.manifest.max_origin_fetches = 1;
    })
    .await;
    let first = {
        let addr = sc.addr;
        tokio::spawn(async move { get(addr, "/hls/ch/seg1.ts").await })
    };
    // While the first holds the only slot, a second segment and a playlist are refused
    // at once with a Retry-After, not queued.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let t = Instant::now();
    let r = reqwest::get(format!("http://{}/hls/ch/seg2.ts", sc.addr))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(r.text().await.unwrap().contains("max_origin_fetches"));
    assert!(t.elapsed() < Duration::from_millis(1000), "refused at once");
    assert_eq!(get(sc.addr, "/hls/ch/index.m3u8").await.0, 503);
    assert_eq!(first.await.unwrap(), (200, "segs".to_string()));
    // The slot is free again.
    assert_eq!(
        get(sc.addr, "/hls/ch/seg2.ts").await,
        (200, "segs".to_string())
    );
    let refused = sc
        .state
        .stats()
        .fetches_refused
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_ts_segment_carries_timed_id3() {
    let origin = TestOrigin::start("intel_concat.mp4", 1.0, 6, true).await;
    let sc = sidecar(&origin.media_url(), |s| {
        s.manifest.segment_uris = "proxy".into();
        s.manifest.id3 = true;
    })
    .await;
    // A cue covering the whole window (origin PDTs are around now).
    let mut cue = common::cue("ch", 7);
    cue.start = Utc::now() - chrono::TimeDelta::seconds(60);
    for b in &mut cue.boxes {
        b.t = cue.start;
    }
    sc.bus.publish(CueEvent::Start(cue.clone()));
    let media = wait_for(sc.addr, "/hls/ch/index.m3u8", "the cue", |p| {
        daterange_line(p, &cue.id).is_some()
    })
    .await;
    let seg = media
        .lines()
        .rfind(|l| !l.starts_with('#') && !l.is_empty())
        .unwrap();
    assert!(
        !seg.contains("://"),
        "proxied segment URI is relative: {seg}"
    );
    let r = reqwest::get(format!("http://{}/hls/ch/{seg}", sc.addr))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let bytes = r.bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("seg.ts");
    std::fs::write(&file, &bytes).unwrap();
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-of", "compact"])
        .arg(&file)
        .output()
        .expect("ffprobe runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("timed_id3"), "ffprobe streams: {text}");
    assert!(
        sc.state
            .stats()
            .id3_segments
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

fn segment_count(p: &str) -> usize {
    p.lines().filter(|l| l.starts_with("#EXTINF")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_back_publishes_only_analysed_segments() {
    let origin = TestOrigin::start("intel_concat.mp4", 1.0, 6, true).await;
    let sc = sidecar(&origin.media_url(), |s| {
        s.manifest.hold_back = true;
        s.manifest.hold_back_deadline_ms = 120_000;
    })
    .await;
    let (status, p) = get(sc.addr, "/hls/ch/index.m3u8").await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        segment_count(&p),
        0,
        "nothing analysed, nothing published: {p}"
    );
    assert!(p.contains("#EXT-X-TARGETDURATION"), "{p}");
    let ch = sc.state.channel("ch").unwrap();
    assert!(
        ch.holdback_delay_ms
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );

    // The origin's current first segment analysed: it (alone, or with the ones before it
    // while the window slid) appears.
    let first = {
        let text = reqwest::get(origin.media_url())
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        media_sequence(&text)
    };
    sc.progress.mark_analysed(first + 2);
    let p = wait_for(sc.addr, "/hls/ch/index.m3u8", "analysed segments", |p| {
        segment_count(p) > 0
    })
    .await;
    let last = media_sequence(&p) + segment_count(&p) as u64 - 1;
    assert_eq!(last, first + 2, "published through the analysed msn: {p}");
    assert!(!p.contains("#EXT-X-ENDLIST"));

    // With a 1 ms deadline every finished segment is published, analysed or not.
    let sc2 = sidecar(&origin.media_url(), |s| {
        s.manifest.hold_back = true;
        s.manifest.hold_back_deadline_ms = 1;
    })
    .await;
    let p = wait_for(
        sc2.addr,
        "/hls/ch/index.m3u8",
        "deadline publication",
        |p| segment_count(p) >= 5,
    )
    .await;
    assert!(segment_count(&p) >= 5, "{p}");
}

/// An fMP4 HLS VOD (init.mp4 + seg*.m4s, 2-s segments) of the first seconds of the footage.
fn package_fmp4(dir: &std::path::Path, seconds: u32) {
    let status = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-t", &seconds.to_string(), "-i"])
        .arg(common::footage("intel_concat.mp4"))
        .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "50"])
        .args(["-keyint_min", "50", "-sc_threshold", "0", "-an"])
        .args(["-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod"])
        .args([
            "-hls_segment_type",
            "fmp4",
            "-hls_fmp4_init_filename",
            "init.mp4",
        ])
        .arg("-hls_segment_filename")
        .arg(dir.join("seg%d.m4s"))
        .arg(dir.join("index.m3u8"))
        .status()
        .expect("ffmpeg runs (scripts/setup.sh installs it)");
    assert!(status.success());
}

async fn get_bytes(url: &str) -> bytes::Bytes {
    let r = reqwest::get(url).await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{url}");
    r.bytes().await.unwrap()
}

/// Video frames of `init` + `segment`, counted by ffprobe and by the GStreamer decoder.
fn frame_counts(init: &bytes::Bytes, segment: &bytes::Bytes) -> (u64, usize) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("joined.mp4");
    std::fs::write(&file, [init.as_ref(), segment.as_ref()].concat()).unwrap();
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(&file)
        .output()
        .expect("ffprobe runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let ffprobe: u64 = text.trim().trim_end_matches(',').parse().unwrap_or(0);
    let mut decoder = shopcue::media::SegmentDecoder::new(
        shopcue::media::Pipelines::default(),
        90,
        Duration::from_secs(60),
    )
    .expect("GStreamer decoder");
    let gst = decoder
        .decode("joined", Some(init), segment.clone(), |_| {})
        .map(|s| s.frames)
        .unwrap_or(0);
    (ffprobe, gst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_fmp4_segment_carries_id3_emsg_and_still_decodes() {
    use shopcue::manifest::{emsg, id3};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || package_fmp4(&path, 6))
        .await
        .unwrap();
    let origin_url = common::serve_dir(dir.path().to_path_buf()).await;
    let origin_base = origin_url.trim_end_matches("index.m3u8").to_string();
    let sc = sidecar(&origin_url, |s| {
        s.manifest.segment_uris = "proxy".into();
        s.manifest.id3 = true;
    })
    .await;
    // Wall clock from ingest's anchor: msn 0 started at t0 (the VOD has no PDT).
    let t0: DateTime<Utc> = "2026-11-21T10:00:00Z".parse().unwrap();
    sc.progress.record(0, t0);
    let origin_playlist = String::from_utf8(get_bytes(&origin_url).await.to_vec()).unwrap();
    let first_duration: f64 = origin_playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXTINF:"))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .expect("EXTINF");
    // A cue 0.5 s into the second segment, lasting 1 s.
    let mut cue = common::cue("ch", 3);
    cue.start = t0 + chrono::TimeDelta::milliseconds((first_duration * 1000.0) as i64 + 500);
    cue.end = Some(cue.start + chrono::TimeDelta::seconds(1));
    for b in &mut cue.boxes {
        b.t = cue.start;
    }
    sc.state
        .channel("ch")
        .unwrap()
        .apply(&CueEvent::End(cue.clone()));

    let media = wait_for(sc.addr, "/hls/ch/index.m3u8", "the cue", |p| {
        daterange_line(p, &cue.id).is_some()
    })
    .await;
    assert!(
        media.contains("#EXT-X-MAP:URI=\"init.mp4\""),
        "the init section goes through the sidecar too: {media}"
    );

    let init = get_bytes(&format!("{origin_base}init.mp4")).await;
    let proxied_init = get_bytes(&format!("http://{}/hls/ch/init.mp4", sc.addr)).await;
    assert_eq!(proxied_init, init, "init sections pass unchanged");
    let track = emsg::tracks(&init)
        .unwrap()
        .into_iter()
        .find(|t| &t.handler == b"vide")
        .expect("a video track");

    // The segment the cue overlaps: one emsg before the first moof, all else unchanged.
    let origin_seg = get_bytes(&format!("{origin_base}seg1.m4s")).await;
    let seg = get_bytes(&format!("http://{}/hls/ch/seg1.m4s", sc.addr)).await;
    let top = emsg::boxes(&seg, 0..seg.len()).expect("well-formed top-level boxes");
    let kinds: Vec<String> = top
        .iter()
        .map(|b| String::from_utf8_lossy(&b.kind).into_owned())
        .collect();
    let at = kinds.iter().position(|k| k == "emsg").expect("an emsg box");
    assert_eq!(
        kinds[at + 1],
        "moof",
        "emsg right before the first moof: {kinds:?}"
    );
    assert!(!kinds[..at].contains(&"moof".to_string()), "{kinds:?}");
    let b = top[at];
    let e = emsg::Emsg::decode(&seg[b.start..b.start + b.size]).unwrap();
    assert_eq!(e.scheme_id_uri, "https://aomedia.org/emsg/ID3");
    assert_eq!(e.timescale, track.timescale);
    let tfdt = emsg::first_decode_time(&origin_seg, track.track_id).unwrap();
    let expected = tfdt + (track.timescale as f64 * 0.5).round() as u64;
    assert!(
        e.presentation_time.abs_diff(expected) <= u64::from(track.timescale / 1000 + 1),
        "presentation_time {} vs {expected} (tfdt {tfdt}, timescale {})",
        e.presentation_time,
        track.timescale
    );
    assert_eq!(e.event_duration, track.timescale, "1 s in track units");
    assert_eq!(id3::cue_from_tag(&e.message_data).unwrap().id, cue.id);
    assert_eq!(seg.len(), origin_seg.len() + b.size);
    assert_eq!(
        &seg[b.start + b.size..],
        &origin_seg[b.start..],
        "moof and mdat as they were"
    );
    // ffmpeg writes a sidx before the moof: its first reference now spans the emsg too.
    let sidx_ref_size = |data: &[u8]| {
        let top = emsg::boxes(data, 0..data.len()).unwrap();
        let sidx = top.iter().find(|b| &b.kind == b"sidx").copied()?;
        let p = sidx.start + sidx.header;
        let r = p + 4 + 8 + if data[p] == 1 { 16 } else { 8 } + 4;
        Some(u32::from_be_bytes(data[r..r + 4].try_into().unwrap()) & 0x7FFF_FFFF)
    };
    if let Some(before) = sidx_ref_size(&origin_seg) {
        assert_eq!(sidx_ref_size(&seg), Some(before + b.size as u32));
    }
    assert_eq!(
        emsg::first_decode_time(&seg, track.track_id).unwrap(),
        tfdt,
        "moof timing untouched"
    );

    // Segments no cue overlaps pass byte for byte.
    let origin_seg0 = get_bytes(&format!("{origin_base}seg0.m4s")).await;
    let seg0 = get_bytes(&format!("http://{}/hls/ch/seg0.m4s", sc.addr)).await;
    assert_eq!(seg0, origin_seg0);

    // Decoding: the same frames with and without the emsg, by ffprobe and by GStreamer.
    let (init2, seg2, origin2) = (init.clone(), seg.clone(), origin_seg.clone());
    let (with, without) = tokio::task::spawn_blocking(move || {
        (frame_counts(&init2, &seg2), frame_counts(&init2, &origin2))
    })
    .await
    .unwrap();
    assert!(
        without.0 > 0 && without.1 > 0,
        "frames counted: {without:?}"
    );
    assert_eq!(with, without, "(ffprobe, GStreamer) frame counts");

    // The init section was fetched once, however many segments asked for it.
    let _ = get_bytes(&format!("http://{}/hls/ch/seg1.m4s", sc.addr)).await;
    let st = sc.state.stats();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(st.init_fetches.load(Relaxed), 1);
    assert_eq!(st.emsg_segments.load(Relaxed), 2);
    assert_eq!(st.id3_errors.load(Relaxed), 0);
}

/// An origin that records every request target (path and query) and answers playlists:
/// a multivariant playlist naming `index.m3u8?token=abc` (a signed URL) and a media one.
async fn recording_origin() -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let addr = common::scripted_origin(move |_, target| {
        log.lock().unwrap().push(target.to_string());
        let body = if target.starts_with("/live/master.m3u8") {
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nindex.m3u8?token=abc\n"
        } else {
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:6\n\
             #EXT-X-MEDIA-SEQUENCE:1\n#EXTINF:6.0,\nseg1.ts\n"
        };
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.apple.mpegurl\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    })
    .await;
    (addr, seen)
}

/// `manifest.client_query = "origin"` (the default): a player's cache-busters neither reach
/// the origin nor miss the cache; the origin's own parameters (a token in its playlist's
/// URIs) and LL-HLS directives pass. With `"all"` every parameter passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_query_strings_do_not_bust_the_cache_or_reach_the_origin() {
    let (origin, seen) = recording_origin().await;
    let sc = sidecar(&format!("http://{origin}/live/master.m3u8"), |_| {}).await;
    let (code, master) = get(sc.addr, "/hls/ch/master.m3u8?_=1").await;
    assert_eq!(code, 200, "{master}");
    assert!(master.contains("token=abc"), "{master}");
    for buster in ["1", "2", "3"] {
        let (code, body) = get(sc.addr, &format!("/hls/ch/index.m3u8?token=abc&_={buster}")).await;
        assert_eq!(code, 200, "{body}");
    }
    let (code, _) = get(sc.addr, "/hls/ch/index.m3u8?_HLS_msn=1&cb=9&token=abc").await;
    assert_eq!(code, 200);
    let targets = seen.lock().unwrap().clone();
    assert_eq!(
        targets,
        vec![
            "/live/master.m3u8".to_string(),
            "/live/index.m3u8?token=abc".to_string(),
            "/live/index.m3u8?_HLS_msn=1&token=abc".to_string(),
        ],
        "one origin fetch per distinct origin URL, no client parameter"
    );
    let ignored = sc
        .state
        .stats()
        .client_query_ignored
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(ignored, 5);

    // "all": the old behaviour, every distinct query is its own origin request.
    let (origin, seen) = recording_origin().await;
    let sc = sidecar(&format!("http://{origin}/live/master.m3u8"), |s| {
        s.manifest.client_query = "all".into();
    })
    .await;
    for buster in ["1", "2"] {
        assert_eq!(
            get(sc.addr, &format!("/hls/ch/index.m3u8?token=abc&_={buster}"))
                .await
                .0,
            200
        );
    }
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![
            "/live/index.m3u8?token=abc&_=1".to_string(),
            "/live/index.m3u8?token=abc&_=2".to_string(),
        ]
    );
}

/// An origin that answers every request after `delay` with `segment <target>` and records
/// each request target (path and query).
async fn recording_segment_origin(
    delay: Duration,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let target = head.split(' ').nth(1).unwrap_or("").to_string();
                log.lock().unwrap().push(target.clone());
                tokio::time::sleep(delay).await;
                let body = format!("segment {target}");
                let _ = sock
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (addr, seen)
}

/// Proxied segments are cached (`manifest.segment_cache_mb`) by path after the client's
/// query string is filtered: requests that differ only by a cache-buster, and players
/// asking for one segment at once, make one origin fetch and one cache entry between
/// them. `client_query = "all"` makes each query its own; `segment_cache_mb = 0` turns
/// the cache off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_segments_are_fetched_once_whatever_the_client_query() {
    use std::sync::atomic::Ordering::Relaxed;
    let (origin, seen) = recording_segment_origin(Duration::from_millis(300)).await;
    let sc = sidecar(&format!("http://{origin}/live/index.m3u8"), |s| {
        s.manifest.segment_uris = "proxy".into();
    })
    .await;
    for q in ["x=1", "x=2"] {
        assert_eq!(
            get(sc.addr, &format!("/hls/ch/seg1.ts?{q}")).await,
            (200, "segment /live/seg1.ts".to_string())
        );
    }
    // Ten players at once on a new segment, each with its own cache-buster.
    let mut players = tokio::task::JoinSet::new();
    for i in 0..10 {
        let addr = sc.addr;
        players.spawn(async move { get(addr, &format!("/hls/ch/seg2.ts?_={i}")).await });
    }
    while let Some(answer) = players.join_next().await {
        assert_eq!(answer.unwrap(), (200, "segment /live/seg2.ts".to_string()));
    }
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec!["/live/seg1.ts".to_string(), "/live/seg2.ts".to_string()],
        "one origin fetch per segment, no client parameter"
    );
    let st = sc.state.stats();
    assert_eq!(st.segment_fetches.load(Relaxed), 2);
    assert_eq!(st.segment_cache_hits.load(Relaxed), 10);
    assert_eq!(st.segments_proxied.load(Relaxed), 12);
    assert_eq!(st.client_query_ignored.load(Relaxed), 12);

    // Configured to pass client queries on: each distinct query is its own entry.
    let (origin, seen) = recording_segment_origin(Duration::ZERO).await;
    let sc = sidecar(&format!("http://{origin}/live/index.m3u8"), |s| {
        s.manifest.segment_uris = "proxy".into();
        s.manifest.client_query = "all".into();
    })
    .await;
    for q in ["x=1", "x=2", "x=1"] {
        assert_eq!(get(sc.addr, &format!("/hls/ch/seg1.ts?{q}")).await.0, 200);
    }
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![
            "/live/seg1.ts?x=1".to_string(),
            "/live/seg1.ts?x=2".to_string()
        ]
    );

    // No cache: every request is an origin fetch.
    let (origin, seen) = recording_segment_origin(Duration::ZERO).await;
    let sc = sidecar(&format!("http://{origin}/live/index.m3u8"), |s| {
        s.manifest.segment_uris = "proxy".into();
        s.manifest.segment_cache_mb = 0;
    })
    .await;
    for _ in 0..2 {
        assert_eq!(get(sc.addr, "/hls/ch/seg1.ts").await.0, 200);
    }
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(sc.state.stats().segment_cache_hits.load(Relaxed), 0);
}

/// The playlist ledger falls behind the bus (more events in one burst than the live
/// channel holds) while a cue ends: once it catches up the cue's DATERANGE has its
/// END-DATE (the missed end is replayed, or, when the history no longer has it, found by
/// comparing with the snapshot), instead of staying open for ever. A single-threaded
/// runtime guarantees the lag: the burst is published without yielding.
#[tokio::test]
async fn a_lagging_playlist_ledger_still_ends_the_cues_it_missed() {
    let origin = TestOrigin::start("intel_concat.mp4", 1.0, 6, true).await;
    let sc = sidecar(&origin.media_url(), |_| {}).await;
    let mut a = common::cue("ch", 1);
    a.start = Utc::now() - chrono::TimeDelta::seconds(2);
    for b in &mut a.boxes {
        b.t = a.start;
    }
    sc.bus.publish(CueEvent::Start(a.clone()));
    wait_for(sc.addr, "/hls/ch/index.m3u8", "the open cue", |p| {
        daterange_line(p, &a.id).is_some_and(|l| !l.contains("END-DATE"))
    })
    .await;
    // The burst: far more than the live channel's capacity, then the end of `a`, then a
    // little more, all before the ledger's task can run.
    let mut b = common::cue("ch", 2);
    b.start = Utc::now() - chrono::TimeDelta::seconds(1);
    for i in 0..(shopcue::cuebus::LIVE_CAPACITY + 500) {
        b.score = (i % 100) as f32 / 100.0;
        sc.bus.publish(CueEvent::Update(b.clone()));
    }
    let mut ended = a.clone();
    ended.end = Some(Utc::now());
    sc.bus.publish(CueEvent::End(ended));
    sc.bus.publish(CueEvent::Update(b.clone()));
    let media = wait_for(
        sc.addr,
        "/hls/ch/index.m3u8",
        "the END-DATE of the missed end",
        |p| daterange_line(p, &a.id).is_some_and(|l| l.contains("END-DATE")),
    )
    .await;
    assert!(daterange_line(&media, &b.id).is_some(), "{media}");
}
