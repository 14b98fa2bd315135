//! The composite product video of the live-cue benchmark, and the ground truth of the
//! videos it scores.
//!
//! The composite is made with ffmpeg from the Grocery Store dataset's **val** photos (the
//! in-store phone photos no catalog learns from): [`PRODUCTS`] (15 classes, from
//! fruit, packages and vegetables alike), each class's first val photo, 4 s each,
//! letterboxed to 1280x720 with a slow zoom (so samples of one shot differ a little, as in
//! a live picture), and two shots without any catalog product between them ([`BREAKS`]: a
//! person at a table from intel_concat.mp4, and a printed box that is no catalog
//! product). 25 fps, H.264 with one encoder thread (deterministic). Its truth is written
//! beside it as `ground_truth.json`, in the format of the footage's: cut frames and the
//! product of each shot (`null`: none). Made into the work folder once and reused while
//! its recipe is unchanged; never committed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::json;

/// The file name of the composite.
pub const FILE: &str = "composite_val.mp4";
pub const FPS: u32 = 25;
pub const SHOT_FRAMES: u64 = 100;
pub const WIDTH: u32 = 1280;
pub const HEIGHT: u32 = 720;

/// Class ids of the products shown, in order: of the 60 classes with val photos, every
/// fourth from the second (5 fruit, 6 packages, 4 vegetables), chosen before any result
/// was seen.
pub const PRODUCTS: [usize; 15] = [1, 6, 10, 14, 21, 28, 32, 40, 44, 50, 58, 62, 67, 72, 77];

/// No-product shots: (inserted after this many product shots, footage file, start second,
/// what it shows).
pub const BREAKS: [(usize, &str, u32, &str); 2] = [
    (
        5,
        "intel_concat.mp4",
        8,
        "person at a table (intel_concat 8-12 s)",
    ),
    (
        10,
        "box.mp4",
        0,
        "a printed box, no catalog product (box.mp4 0-4 s)",
    ),
];

/// A video and its truth: the cut frames and each shot's product (`None`: no product).
#[derive(Debug, Clone)]
pub struct Truth {
    pub name: String,
    pub file: PathBuf,
    pub fps: f64,
    pub cut_frames: Vec<u64>,
    pub shots: Vec<Option<String>>,
}

impl Truth {
    /// The shot a media time (seconds) is in.
    pub fn shot_at(&self, t: f64) -> usize {
        let frame = (t * self.fps).round().max(0.0) as u64;
        self.cut_frames.iter().filter(|&&c| c <= frame).count()
    }

    /// From a `ground_truth.json` entry (`shots_class` when the video shows products, else
    /// no product in any shot).
    pub fn from_entry(dir: &Path, name: &str, v: &serde_json::Value) -> anyhow::Result<Self> {
        let fps = v["fps"]
            .as_f64()
            .with_context(|| format!("{name}: no fps in the ground truth"))?;
        let cut_frames: Vec<u64> = v["cut_frames"]
            .as_array()
            .with_context(|| format!("{name}: no cut_frames in the ground truth"))?
            .iter()
            .filter_map(|c| c.as_u64())
            .collect();
        let shots = match v["shots_class"].as_array() {
            Some(a) => a.iter().map(|p| p.as_str().map(str::to_string)).collect(),
            None => vec![None; cut_frames.len() + 1],
        };
        let t = Truth {
            name: name.to_string(),
            file: dir.join(name),
            fps,
            cut_frames,
            shots,
        };
        super::check_truth(&t)?;
        Ok(t)
    }

    /// A video of the shared footage, with its entry of `footage/ground_truth.json`.
    pub fn from_footage(footage: &Path, name: &str) -> anyhow::Result<Self> {
        let path = footage.join("ground_truth.json");
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("parsing {}", path.display()))?;
        Self::from_entry(footage, name, &v[name])
    }
}

/// One input of the composite and what it shows.
struct Part {
    /// ffmpeg input options and file.
    input: Vec<String>,
    /// Filter chain from the input to 100 frames of 1280x720.
    filter: String,
    product: Option<String>,
    what: String,
}

fn letterbox() -> String {
    format!(
        "scale={WIDTH}:{HEIGHT}:force_original_aspect_ratio=decrease,\
         pad={WIDTH}:{HEIGHT}:(ow-iw)/2:(oh-ih)/2,setsar=1"
    )
}

fn parts(data: &Path) -> anyhow::Result<Vec<Part>> {
    let g = shopcue::catalog::grocery::Grocery::load(&data.join("grocery"))?;
    let mut parts = Vec::new();
    for (i, &class) in PRODUCTS.iter().enumerate() {
        let photo = g
            .val
            .iter()
            .find(|l| l.class == class)
            .with_context(|| format!("no val photo of class {class}"))?;
        parts.push(Part {
            input: vec!["-i".into(), photo.path.display().to_string()],
            // A still: zoompan makes its 100 frames, zooming in by 15 % over the shot.
            filter: format!(
                "{},zoompan=z='1+0.0015*on':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':\
                 d={SHOT_FRAMES}:s={WIDTH}x{HEIGHT}:fps={FPS},format=yuv420p",
                letterbox()
            ),
            product: Some(g.classes[class].clone()),
            what: photo
                .path
                .strip_prefix(data)
                .unwrap_or(&photo.path)
                .display()
                .to_string(),
        });
        for (after, file, start, what) in BREAKS {
            if after == i + 1 {
                let path = data.join("footage").join(file);
                parts.push(Part {
                    input: vec![
                        "-ss".into(),
                        start.to_string(),
                        "-i".into(),
                        path.display().to_string(),
                    ],
                    filter: format!(
                        "fps={FPS},{},format=yuv420p,trim=end_frame={SHOT_FRAMES},setpts=PTS-STARTPTS",
                        letterbox()
                    ),
                    product: None,
                    what: what.to_string(),
                });
            }
        }
    }
    Ok(parts)
}

/// The ffmpeg arguments that make the composite at `out`.
fn ffmpeg_args(parts: &[Part], out: &Path) -> Vec<String> {
    let mut args: Vec<String> = ["-y", "-v", "error", "-nostdin"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut graph = String::new();
    let mut labels = String::new();
    for (i, p) in parts.iter().enumerate() {
        args.extend(p.input.iter().cloned());
        graph.push_str(&format!("[{i}:v]{}[v{i}];", p.filter));
        labels.push_str(&format!("[v{i}]"));
    }
    graph.push_str(&format!("{labels}concat=n={}:v=1:a=0[out]", parts.len()));
    for a in [
        "-filter_complex",
        &graph,
        "-map",
        "[out]",
        "-an",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "20",
        "-g",
        "50",
        "-threads",
        "1",
        "-pix_fmt",
        "yuv420p",
    ] {
        args.push(a.to_string());
    }
    args.push(out.display().to_string());
    args
}

/// Makes the composite in `work` (unless made there by the same recipe) and answers its
/// truth.
pub fn make(data: &Path, work: &Path) -> anyhow::Result<Truth> {
    let parts = parts(data)?;
    let out = work.join(FILE);
    let args = ffmpeg_args(&parts, &out.with_extension("tmp.mp4"));
    let recipe = args.join(" ");
    let truth_path = work.join("ground_truth.json");
    let cut_frames: Vec<u64> = (1..parts.len() as u64).map(|i| i * SHOT_FRAMES).collect();
    let entry = json!({
        "fps": FPS,
        "frames": parts.len() as u64 * SHOT_FRAMES,
        "width": WIDTH,
        "height": HEIGHT,
        "cut_frames": cut_frames,
        "shots_class": parts.iter().map(|p| p.product.clone()).collect::<Vec<_>>(),
        "shots": parts.iter().map(|p| p.what.clone()).collect::<Vec<_>>(),
        "recipe": recipe,
        "license": "val photos: MIT, marcusklasson/GroceryStoreDataset; intel_concat: CC BY 4.0; box.mp4: Apache-2.0 AND BSD-3-Clause",
    });
    let doc = json!({ FILE: entry });
    let made = std::fs::read_to_string(&truth_path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|old| old == doc)
        && out.is_file();
    if !made {
        eprintln!(
            "making {} ({} shots, about a minute) ...",
            out.display(),
            parts.len()
        );
        let status = Command::new("ffmpeg")
            .args(&args)
            .status()
            .context("running ffmpeg (is it installed?)")?;
        if !status.success() {
            bail!("ffmpeg failed making {}: {status}", out.display());
        }
        std::fs::rename(out.with_extension("tmp.mp4"), &out)?;
        std::fs::write(&truth_path, serde_json::to_string_pretty(&doc)?)?;
    }
    Truth::from_entry(work, FILE, &doc[FILE])
}
