//! SRT ingest: a real GStreamer srtsink on loopback (started with gst-launch-1.0) feeds
//! shopcue's SRT source in caller and in listener mode; frames arrive with wall clocks.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use shopcue::config::Settings;
use shopcue::ingest::{self, IngestOptions, OnError, SourceSpec};
use tokio_util::sync::CancellationToken;

struct Sender(Child);

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    // SRT is UDP: find a free UDP port on loopback.
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Live H.264 in MPEG-TS (7 packets per datagram) over SRT, paced at real time.
fn sender(uri: &str) -> Sender {
    let footage = common::footage("intel_concat.mp4");
    let child = Command::new("gst-launch-1.0")
        .args(["-q", "filesrc"])
        .arg(format!("location={}", footage.display()))
        .args([
            "!",
            "decodebin",
            "!",
            "videoconvert",
            "!",
            "x264enc",
            "tune=zerolatency",
            "speed-preset=ultrafast",
            "key-int-max=25",
        ])
        .args([
            "!",
            "h264parse",
            "config-interval=-1",
            "!",
            "mpegtsmux",
            "alignment=7",
            "!",
            "srtsink",
        ])
        .arg(format!("uri={uri}"))
        .arg("sync=true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gst-launch-1.0 runs (scripts/setup.sh installs gstreamer1.0-tools)");
    Sender(child)
}

async fn receive(input: &str, secs: f64) -> Vec<shopcue::frame::Frame> {
    let mut s = Settings::default();
    s.media.analysis_height = 180;
    let cancel = CancellationToken::new();
    let spec = SourceSpec::parse(input).unwrap();
    let opts = IngestOptions {
        on_error: OnError::Fail,
        ..Default::default()
    };
    let mut ch = ingest::start("srt", spec, &s.ingest, &s.media, opts, cancel.clone())
        .await
        .unwrap();
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while let Ok(Some(f)) = tokio::time::timeout_at(deadline, ch.frames.recv()).await {
        let done = f.pts_ns as f64 / 1e9 >= secs;
        frames.push(f);
        if done {
            break;
        }
    }
    cancel.cancel();
    frames
}

fn check(frames: &[shopcue::frame::Frame], started: chrono::DateTime<Utc>) {
    assert!(frames.len() >= 50, "only {} frames", frames.len());
    assert_eq!(frames[0].image.height, 180);
    assert_eq!(frames[0].image.width, 320);
    for w in frames.windows(2) {
        assert!(w[1].wallclock > w[0].wallclock, "wall clocks increase");
    }
    // Wall clock from receive time: between the start of the test and now.
    let now = Utc::now();
    for f in [&frames[0], frames.last().unwrap()] {
        assert!(
            f.wallclock >= started - chrono::Duration::seconds(1)
                && f.wallclock <= now + chrono::Duration::seconds(1),
            "{:?} not within [{started}, {now}]",
            f.wallclock
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_caller_receives_frames_with_wallclocks() {
    let port = free_port();
    let _tx = sender(&format!("srt://127.0.0.1:{port}?mode=listener"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Utc::now();
    let frames = receive(&format!("srt://127.0.0.1:{port}?mode=caller"), 3.0).await;
    check(&frames, started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_listener_receives_frames_with_wallclocks() {
    let port = free_port();
    let started = Utc::now();
    let recv = tokio::spawn(async move {
        receive(&format!("srt://127.0.0.1:{port}?mode=listener"), 3.0).await
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let _tx = sender(&format!("srt://127.0.0.1:{port}?mode=caller"));
    let frames = recv.await.unwrap();
    check(&frames, started);
}
