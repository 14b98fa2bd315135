//! `shopcue bench shots`: our shot detector against PySceneDetect (AdaptiveDetector and
//! ContentDetector at their defaults) on the ground-truth footage and the generated
//! transition clips (`scripts/make_clips.sh`), in one run and one table.
//!
//! Scoring: a found boundary counts when it falls in a true boundary's window (a cut at
//! frame c: c-1..=c+1; a gradual transition: any frame inside it, ±1), each window
//! matched at most once; "all clips" pools the boundaries of every clip. Speed: frames per
//! second of the whole run, opening and decoding included; detection alone in ms per
//! frame and as a share of a decode-only pass over the same clip (for PySceneDetect,
//! which decodes in a second thread while it detects: its run time minus its decode-only
//! time). Every timing is the best of 5 runs, since the machine may be shared.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::Utc;
use serde::Serialize;

use super::shot_file::detect_file;
use shopcue::media::{FrameSource, Pipelines};
use shopcue::shots::ShotConfig;

/// Frames an analysis queue holds ahead (as `media.frame_queue` defaults).
const QUEUE: usize = 64;
/// Heights at which decode speed alone is measured.
const DECODE_HEIGHTS: [u32; 5] = [72, 90, 144, 180, 360];
/// Each timing is the best of this many runs: on a shared machine the fastest run is the
/// least disturbed one.
const REPEATS: usize = 5;

#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub clip: String,
    pub detector: String,
    /// True boundaries, boundaries found, and found ones that matched a true one.
    pub boundaries: usize,
    pub found: Vec<u64>,
    pub matched: usize,
    pub frames: u64,
    /// Wall time of the run, decoding included (best of the repeats).
    pub seconds: f64,
    /// Time in detection alone, and time to decode alone (best of the repeats).
    pub detect_seconds: f64,
    pub decode_seconds: f64,
}

impl BenchRow {
    fn ratio(n: usize, d: usize) -> f64 {
        if d == 0 { 1.0 } else { n as f64 / d as f64 }
    }
    pub fn precision(&self) -> f64 {
        Self::ratio(self.matched, self.found.len())
    }
    pub fn recall(&self) -> f64 {
        Self::ratio(self.matched, self.boundaries)
    }
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        }
    }
    /// Frames per second, decoding included.
    pub fn fps(&self) -> f64 {
        self.frames as f64 / self.seconds.max(1e-9)
    }
    pub fn detect_ms_per_frame(&self) -> f64 {
        self.detect_seconds * 1e3 / self.frames.max(1) as f64
    }
    pub fn detect_pct_of_decode(&self) -> f64 {
        100.0 * self.detect_seconds / self.decode_seconds.max(1e-9)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DecodeRow {
    pub clip: String,
    pub height: u32,
    pub fps: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShotsBench {
    pub rows: Vec<BenchRow>,
    pub decode: Vec<DecodeRow>,
}

/// A clip and its true boundaries as (first, last) frame windows.
#[derive(Debug, Clone)]
struct Clip {
    path: PathBuf,
    name: String,
    windows: Vec<(u64, u64)>,
}

/// Matches found boundaries to windows (each used once): returns (matched, precision,
/// recall, F1). No boundaries and none found scores 1.
pub fn score(found: &[u64], windows: &[(u64, u64)]) -> (usize, f64, f64, f64) {
    let mut windows = windows.to_vec();
    windows.sort_by_key(|w| (w.1, w.0));
    let mut found = found.to_vec();
    found.sort_unstable();
    let mut used = vec![false; found.len()];
    let mut matched = 0;
    for (lo, hi) in windows.iter().copied() {
        if let Some(i) = (0..found.len()).find(|&i| !used[i] && (lo..=hi).contains(&found[i])) {
            used[i] = true;
            matched += 1;
        }
    }
    let ratio = |n: usize, d: usize| if d == 0 { 1.0 } else { n as f64 / d as f64 };
    let (p, r) = (ratio(matched, found.len()), ratio(matched, windows.len()));
    let f1 = if p + r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    };
    (matched, p, r, f1)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `data/<what>` of this checkout, else `../shared/data/<what>`.
fn data_dir(what: &str) -> anyhow::Result<PathBuf> {
    for base in [root().join("data"), root().join("../shared/data")] {
        let p = base.join(what);
        if p.is_dir() {
            return Ok(p);
        }
    }
    bail!(
        "no data/{what} (nor ../shared/data/{what}) next to {}",
        root().display()
    )
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn ground_truth_clips() -> anyhow::Result<Vec<Clip>> {
    let footage = data_dir("footage")?;
    let truth = read_json(&footage.join("ground_truth.json"))?;
    let mut clips = Vec::new();
    for name in ["intel_concat.mp4", "grocery_shots.mp4"] {
        let cuts = truth[name]["cut_frames"]
            .as_array()
            .with_context(|| format!("ground_truth.json: no {name}.cut_frames"))?;
        let windows = cuts
            .iter()
            .filter_map(|c| c.as_u64())
            .map(|c| (c.saturating_sub(1), c + 1))
            .collect();
        clips.push(Clip {
            path: footage.join(name),
            name: name.to_string(),
            windows,
        });
    }
    Ok(clips)
}

/// Generate (or reuse) the transition clips in `dir` and read their truth.
fn generated_clips(dir: &Path) -> anyhow::Result<Vec<Clip>> {
    let script = root().join("scripts/make_clips.sh");
    let data = data_dir("footage")?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .arg(&data)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let truth = read_json(&dir.join("truth.json"))?;
    let table = truth.as_object().context("truth.json is not an object")?;
    let mut clips = Vec::new();
    for (name, clip) in table {
        let windows = clip["boundaries"]
            .as_array()
            .with_context(|| format!("truth.json: {name} has no boundaries"))?
            .iter()
            .filter_map(|b| Some((b["window"][0].as_u64()?, b["window"][1].as_u64()?)))
            .collect();
        clips.push(Clip {
            path: dir.join(name),
            name: name.clone(),
            windows,
        });
    }
    Ok(clips)
}

/// Seconds to decode every frame of `path` at `height` (best of `REPEATS`), and the
/// frame count.
fn decode_only(pipelines: &Pipelines, path: &Path, height: u32) -> anyhow::Result<(f64, u64)> {
    let mut best = (f64::INFINITY, 0);
    for _ in 0..REPEATS {
        let started = Instant::now();
        let mut source = FrameSource::file(pipelines, path, height, QUEUE)?;
        let mut frames = 0u64;
        while source.next_frame()?.is_some() {
            frames += 1;
        }
        let secs = started.elapsed().as_secs_f64();
        if secs < best.0 {
            best = (secs, frames);
        }
    }
    Ok(best)
}

#[derive(serde::Deserialize)]
struct PeerReport {
    results: Vec<PeerResult>,
}

#[derive(serde::Deserialize)]
struct PeerResult {
    detector: String,
    cuts: Vec<u64>,
    frames: u64,
    seconds: f64,
    decode_seconds: f64,
}

fn run_peer(clips: &[Clip]) -> anyhow::Result<Vec<PeerResult>> {
    let script = root().join("scripts/pyscenedetect_bench.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--repeat", &REPEATS.to_string()])
        .args(clips.iter().map(|c| &c.path))
        .output()
        .context("running python3 (install the peer with `scripts/setup.sh bench`)")?;
    if !out.status.success() {
        bail!(
            "{} failed (is scenedetect-headless installed? `scripts/setup.sh bench`): {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let report: PeerReport =
        serde_json::from_slice(&out.stdout).context("reading PySceneDetect's JSON")?;
    Ok(report.results)
}

/// Run the benchmark. `clips_dir`: where the generated clips are (or go); default a
/// folder under the system temp dir, reused between runs.
pub fn run_bench(clips_dir: Option<&Path>) -> anyhow::Result<ShotsBench> {
    let dir = clips_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| std::env::temp_dir().join("shopcue-shot-clips"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut clips = ground_truth_clips()?;
    clips.extend(generated_clips(&dir)?);
    let config = ShotConfig::default();
    let pipelines = Pipelines::default();
    let decode = decode_rows(&pipelines, &clips[0])?;
    let mut rows = Vec::new();
    for clip in &clips {
        rows.push(shopcue_row(&pipelines, &config, clip)?);
        // The peer right after ours on the same clip, so both meet the same machine load.
        rows.extend(peer_rows(clip)?);
    }
    rows.extend(totals(&rows));
    // Group by clip (the totals last), ours first.
    let order: Vec<&str> = clips.iter().map(|c| c.name.as_str()).collect();
    rows.sort_by_key(|r| {
        (
            order
                .iter()
                .position(|c| *c == r.clip)
                .unwrap_or(usize::MAX),
            !r.detector.starts_with("shopcue"),
        )
    });
    let bench = ShotsBench { rows, decode };
    print_tables(&bench);
    Ok(bench)
}

/// Decode-only frame rate of `clip` at each of [`DECODE_HEIGHTS`].
fn decode_rows(pipelines: &Pipelines, clip: &Clip) -> anyhow::Result<Vec<DecodeRow>> {
    let mut decode = Vec::new();
    for &height in &DECODE_HEIGHTS {
        let (secs, frames) = decode_only(pipelines, &clip.path, height)?;
        decode.push(DecodeRow {
            clip: clip.name.clone(),
            height,
            fps: frames as f64 / secs,
        });
    }
    Ok(decode)
}

/// Our detector on `clip`: the fastest of [`REPEATS`] runs (detection alone: the least
/// time of any run), with a decode-only pass for comparison.
fn shopcue_row(
    pipelines: &Pipelines,
    config: &ShotConfig,
    clip: &Clip,
) -> anyhow::Result<BenchRow> {
    let (decode_seconds, _) = decode_only(pipelines, &clip.path, config.decode_height)?;
    let mut runs = Vec::new();
    for _ in 0..REPEATS {
        let anchor = Utc::now();
        runs.push(detect_file(
            pipelines,
            &clip.path,
            config.decode_height,
            QUEUE,
            config,
            anchor,
        )?);
    }
    let detect_seconds = runs
        .iter()
        .map(|r| r.detecting.as_secs_f64())
        .fold(f64::INFINITY, f64::min);
    let run = runs
        .into_iter()
        .min_by_key(|r| r.elapsed)
        .context("no run")?;
    let found = run.boundaries();
    let (matched, ..) = score(&found, &clip.windows);
    Ok(BenchRow {
        clip: clip.name.clone(),
        detector: format!("shopcue ({} lines)", config.decode_height),
        boundaries: clip.windows.len(),
        found,
        matched,
        frames: run.frames,
        seconds: run.elapsed.as_secs_f64(),
        detect_seconds,
        decode_seconds,
    })
}

/// PySceneDetect's detectors on `clip`.
fn peer_rows(clip: &Clip) -> anyhow::Result<Vec<BenchRow>> {
    Ok(run_peer(std::slice::from_ref(clip))?
        .into_iter()
        .map(|peer| {
            let (matched, ..) = score(&peer.cuts, &clip.windows);
            BenchRow {
                clip: clip.name.clone(),
                detector: format!("PySceneDetect {}", peer.detector),
                boundaries: clip.windows.len(),
                found: peer.cuts,
                matched,
                frames: peer.frames,
                seconds: peer.seconds,
                // It decodes in a second thread while it detects: the extra time over a
                // decode-only pass is what detection costs.
                detect_seconds: (peer.seconds - peer.decode_seconds).max(0.0),
                decode_seconds: peer.decode_seconds,
            }
        })
        .collect())
}

/// One line per detector over all clips: boundaries pooled, frames over total time.
fn totals(rows: &[BenchRow]) -> Vec<BenchRow> {
    let mut detectors: Vec<String> = Vec::new();
    for r in rows {
        if !detectors.contains(&r.detector) {
            detectors.push(r.detector.clone());
        }
    }
    detectors
        .into_iter()
        .map(|detector| {
            let mine: Vec<&BenchRow> = rows.iter().filter(|r| r.detector == detector).collect();
            BenchRow {
                clip: "all clips".into(),
                detector,
                boundaries: mine.iter().map(|r| r.boundaries).sum(),
                found: mine.iter().flat_map(|r| r.found.iter().copied()).collect(),
                matched: mine.iter().map(|r| r.matched).sum(),
                frames: mine.iter().map(|r| r.frames).sum(),
                seconds: mine.iter().map(|r| r.seconds).sum(),
                detect_seconds: mine.iter().map(|r| r.detect_seconds).sum(),
                decode_seconds: mine.iter().map(|r| r.decode_seconds).sum(),
            }
        })
        .collect()
}

fn print_tables(bench: &ShotsBench) {
    println!(
        "| clip | detector | boundaries | found | precision | recall | F1 | frames/s (decode incl.) | detection ms/frame | detection % of decode |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &bench.rows {
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {:.3} | {:.1} % |",
            r.clip,
            r.detector,
            r.boundaries,
            r.found.len(),
            r.precision(),
            r.recall(),
            r.f1(),
            r.fps(),
            r.detect_ms_per_frame(),
            r.detect_pct_of_decode()
        );
    }
    println!();
    println!("| decode only (shopcue's GStreamer pipeline): clip | height | frames/s |");
    println!("|---|---:|---:|");
    for d in &bench.decode {
        println!("| {} | {} | {:.0} |", d.clip, d.height, d.fps);
    }
}

#[cfg(test)]
mod tests {
    use super::score;

    #[test]
    fn scoring_matches_each_window_once() {
        assert_eq!(score(&[], &[]), (0, 1.0, 1.0, 1.0));
        assert_eq!(score(&[10], &[(9, 11)]), (1, 1.0, 1.0, 1.0));
        // Two boundaries in one window: one matches, one is a false positive.
        let (m, p, r, _) = score(&[10, 11], &[(9, 11)]);
        assert_eq!((m, p, r), (1, 0.5, 1.0));
        // A miss and a false positive.
        let (m, p, r, f1) = score(&[50], &[(9, 11)]);
        assert_eq!((m, p, r, f1), (0, 0.0, 0.0, 0.0));
        // Overlapping windows are matched so that both count.
        let (m, _, _, _) = score(&[12, 14], &[(10, 20), (11, 13)]);
        assert_eq!(m, 2);
    }
}
