//! The shot detector on real footage decoded by GStreamer: the exact cuts of the
//! ground-truth clips, and the boundaries of the transition clips that
//! `scripts/make_clips.sh` builds with ffmpeg (dissolves, fades, wipes, flashes, motion).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{TimeZone, Utc};
use shopcue::frame::Frame;
use shopcue::media::{FrameSource, Pipelines};
use shopcue::shots::{Boundary, Shot, ShotConfig, ShotDetector, ShotEvent};

fn data_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let local = root.join("data");
    if local.join("footage/ground_truth.json").is_file() {
        local
    } else {
        root.join("../shared/data")
    }
}

/// Decode `path` at `height` lines and return the closed shots.
fn shots_of(path: &Path, height: u32, config: &ShotConfig) -> Vec<Shot> {
    let mut source = FrameSource::file(&Pipelines::default(), path, height, 32)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let anchor = Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap();
    let mut detector = ShotDetector::new(config);
    let mut events = Vec::new();
    let mut index = 0u64;
    while let Some(decoded) = source
        .next_frame()
        .unwrap_or_else(|e| panic!("decoding {}: {e}", path.display()))
    {
        let pts_ns = decoded.pts_ns.expect("file frames carry time stamps");
        let frame = Frame {
            index,
            pts_ns,
            wallclock: anchor + chrono::Duration::nanoseconds(pts_ns as i64),
            image: decoded.image,
        };
        assert!(
            frame.image.height == height,
            "decoded at {} lines",
            frame.image.height
        );
        events.extend(detector.push(&frame));
        index += 1;
    }
    events.extend(detector.finish());
    assert_eq!(detector.malformed_frames(), 0);
    let shots: Vec<Shot> = events
        .into_iter()
        .filter_map(|e| match e {
            ShotEvent::Ended(s) => Some(s),
            ShotEvent::Started(_) => None,
        })
        .collect();
    // The shots tile the file.
    assert_eq!(shots.first().map(|s| s.start_frame), Some(0));
    for pair in shots.windows(2) {
        assert_eq!(pair[1].start_frame, pair[0].end_frame.unwrap() + 1);
        assert_eq!(pair[1].index, pair[0].index + 1);
    }
    assert_eq!(shots.last().and_then(|s| s.end_frame), Some(index - 1));
    shots
}

fn starts(shots: &[Shot]) -> Vec<u64> {
    shots.iter().skip(1).map(|s| s.start_frame).collect()
}

fn truth_cuts(name: &str) -> Vec<u64> {
    let path = data_dir().join("footage/ground_truth.json");
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    truth[name]["cut_frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect()
}

#[test]
fn intel_concat_cuts_are_exact() {
    let path = data_dir().join("footage/intel_concat.mp4");
    let config = ShotConfig::default();
    let shots = shots_of(&path, config.decode_height, &config);
    assert_eq!(starts(&shots), truth_cuts("intel_concat.mp4"));
    assert_eq!(starts(&shots), vec![101, 201, 301, 401]);
    assert!(shots[1..].iter().all(|s| s.boundary == Boundary::Cut));
    // 25 fps: frame 101 starts 4.04 s of media time after frame 0 (whose time stamp the
    // container sets), the previous shot ends one frame before; wall clock follows.
    let first = shots[0].start_pts_ns;
    assert_eq!(shots[1].start_pts_ns - first, 4_040_000_000);
    assert_eq!(
        shots[0].end_pts_ns,
        Some(shots[1].start_pts_ns - 40_000_000)
    );
    let anchor = Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap();
    assert_eq!(
        shots[1].start_wallclock,
        anchor + chrono::Duration::nanoseconds(shots[1].start_pts_ns as i64)
    );
    assert_eq!(
        shots[0].end_wallclock,
        Some(anchor + chrono::Duration::nanoseconds(shots[1].start_pts_ns as i64 - 40_000_000))
    );
    assert_eq!(shots.last().unwrap().end_frame, Some(500));
}

#[test]
fn grocery_low_contrast_cuts_are_exact() {
    let path = data_dir().join("footage/grocery_shots.mp4");
    let config = ShotConfig::default();
    let shots = shots_of(&path, config.decode_height, &config);
    assert_eq!(starts(&shots), truth_cuts("grocery_shots.mp4"));
    assert_eq!(starts(&shots), vec![50, 100, 150, 200, 250]);
}

#[test]
fn cuts_do_not_depend_on_the_decode_height() {
    let config = ShotConfig::default();
    for height in [72, 360] {
        let path = data_dir().join("footage/intel_concat.mp4");
        assert_eq!(
            starts(&shots_of(&path, height, &config)),
            vec![101, 201, 301, 401],
            "{height} lines"
        );
        let path = data_dir().join("footage/grocery_shots.mp4");
        assert_eq!(
            starts(&shots_of(&path, height, &config)),
            vec![50, 100, 150, 200, 250],
            "{height} lines"
        );
    }
}

#[test]
fn single_shot_footage_has_no_boundaries() {
    let config = ShotConfig::default();
    // Hands, bottles and cars moving through still shots; a 10 fps and a 12.5 fps source.
    for name in [
        "cup.mp4",
        "box.mp4",
        "bottle-detection.mp4",
        "car-detection.mp4",
        "one-by-one-person-detection.mp4",
    ] {
        let path = data_dir().join("footage").join(name);
        let shots = shots_of(&path, config.decode_height, &config);
        assert_eq!(starts(&shots), Vec::<u64>::new(), "{name}");
    }
}

#[test]
fn generated_transition_clips() {
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        common::peer_missing("generated_transition_clips", "ffmpeg is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make_clips.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir.path())
        .arg(data_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make_clips.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("truth.json")).unwrap())
            .unwrap();
    let clips = truth.as_object().unwrap();
    for name in [
        "mixed.mp4",
        "flashes.mp4",
        "motion.mp4",
        "gradual.mp4",
        "holdout.mp4",
    ] {
        assert!(clips.contains_key(name), "truth.json has no {name}");
    }
    let config = ShotConfig::default();
    // At the `shots` command's decode height and at the live pipeline's analysis height.
    for (height, (name, clip)) in [config.decode_height, 360]
        .into_iter()
        .flat_map(|h| clips.iter().map(move |c| (h, c)))
    {
        let shots = shots_of(&dir.path().join(name), height, &config);
        assert_eq!(
            shots.last().unwrap().end_frame,
            Some(clip["frames"].as_u64().unwrap() - 1)
        );
        let found = starts(&shots);
        let windows: Vec<(u64, u64)> = clip["boundaries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["window"][0].as_u64().unwrap(),
                    b["window"][1].as_u64().unwrap(),
                )
            })
            .collect();
        // Exactly one boundary inside each window, none outside: no flash, no motion
        // taken for a cut, no transition counted twice.
        assert_eq!(
            found.len(),
            windows.len(),
            "{name} at {height} lines: found {found:?}, truth {windows:?}"
        );
        for (b, (lo, hi)) in found.iter().zip(&windows) {
            assert!(
                (lo..=hi).contains(&b),
                "{name} at {height} lines: boundary {b} not in {lo}..={hi} (found {found:?})"
            );
        }
    }
}
