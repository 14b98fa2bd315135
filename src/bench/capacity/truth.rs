//! Live cue precision and recall against the ground truth of the looping grocery footage
//! (`ground_truth.json`: the cut frames and the product of each shot). Pure: times are
//! media seconds since the origin's first segment, so shot `i` of lap `k` plays over
//! `k × loop + [start_i, end_i)`.
//!
//! A cue start is correct when its product is the product of the shot its start lies in.
//! Precision = correct cue starts / all cue starts in the window; recall = shots that lie
//! wholly in the window and got a correct cue start / those shots.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;

/// The grocery footage as it loops at the origin.
#[derive(Debug, Clone)]
pub struct LoopTruth {
    /// One lap, seconds (the encoded rendition's length).
    pub loop_secs: f64,
    /// Start of each shot within a lap, ascending, the first 0.
    starts: Vec<f64>,
    products: Vec<String>,
}

/// One cue start: media seconds and product.
#[derive(Debug, Clone, PartialEq)]
pub struct CueStart {
    pub t: f64,
    pub product: String,
}

/// Counts behind precision and recall; they add up over channels.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Score {
    pub starts: usize,
    pub correct: usize,
    pub shots: usize,
    pub recalled: usize,
}

impl Score {
    pub fn precision(&self) -> Option<f64> {
        (self.starts > 0).then(|| self.correct as f64 / self.starts as f64)
    }
    pub fn recall(&self) -> Option<f64> {
        (self.shots > 0).then(|| self.recalled as f64 / self.shots as f64)
    }
    pub fn add(&mut self, o: &Score) {
        self.starts += o.starts;
        self.correct += o.correct;
        self.shots += o.shots;
        self.recalled += o.recalled;
    }
}

impl LoopTruth {
    /// The `grocery_shots.mp4` entry of `ground_truth.json`, looping every `loop_secs`.
    pub fn grocery(ground_truth: &Path, loop_secs: f64) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(ground_truth)
            .with_context(|| format!("reading {}", ground_truth.display()))?;
        let doc: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", ground_truth.display()))?;
        Self::from_entry(&doc["grocery_shots.mp4"], loop_secs)
            .map_err(|why| anyhow::anyhow!("{}: grocery_shots.mp4: {why}", ground_truth.display()))
    }

    fn from_entry(e: &serde_json::Value, loop_secs: f64) -> Result<Self, String> {
        if !(loop_secs.is_finite() && loop_secs > 0.0) {
            return Err(format!("a loop of {loop_secs} s"));
        }
        let fps = e["fps"].as_f64().filter(|f| *f > 0.0).ok_or("no `fps`")?;
        let cuts = e["cut_frames"].as_array().ok_or("no `cut_frames`")?;
        let products: Vec<String> = e["shots_class"]
            .as_array()
            .ok_or("no `shots_class`")?
            .iter()
            .map(|p| p.as_str().map(str::to_string).ok_or("a non-string class"))
            .collect::<Result<_, _>>()?;
        let mut starts = vec![0.0];
        for c in cuts {
            starts.push(c.as_f64().ok_or("a non-numeric cut frame")? / fps);
        }
        if products.len() != starts.len() || starts.windows(2).any(|w| w[1] <= w[0]) {
            return Err("cut frames and shot classes do not agree".into());
        }
        if starts.last().is_some_and(|s| *s >= loop_secs) {
            return Err(format!("a cut lies beyond the {loop_secs:.2} s loop"));
        }
        Ok(Self {
            loop_secs,
            starts,
            products,
        })
    }

    /// Lap and shot index playing at media time `t` (≥ 0).
    fn shot_at(&self, t: f64) -> (u64, usize) {
        let lap = (t / self.loop_secs).floor().max(0.0);
        let within = t - lap * self.loop_secs;
        let shot = self
            .starts
            .partition_point(|s| *s <= within)
            .saturating_sub(1);
        (lap as u64, shot)
    }

    /// Media time span of shot `i` of lap `lap`.
    fn span(&self, lap: u64, i: usize) -> (f64, f64) {
        let base = lap as f64 * self.loop_secs;
        let end = self.starts.get(i + 1).copied().unwrap_or(self.loop_secs);
        (base + self.starts[i], base + end)
    }

    /// Shots (lap, index) that play wholly inside `[from, to]`.
    fn shots_within(&self, (from, to): (f64, f64)) -> Vec<(u64, usize)> {
        let mut out = Vec::new();
        let (mut lap, mut i) = self.shot_at(from.max(0.0));
        loop {
            let (s, e) = self.span(lap, i);
            if s > to {
                return out;
            }
            if s >= from && e <= to {
                out.push((lap, i));
            }
            i += 1;
            if i == self.starts.len() {
                (lap, i) = (lap + 1, 0);
            }
        }
    }
}

/// Cue starts of one grocery channel against the truth, over media time `window`.
pub fn score(truth: &LoopTruth, cues: &[CueStart], window: (f64, f64)) -> Score {
    let shots = truth.shots_within(window);
    let mut recalled = BTreeSet::new();
    let mut s = Score {
        shots: shots.len(),
        ..Score::default()
    };
    for c in cues.iter().filter(|c| c.t >= window.0 && c.t < window.1) {
        s.starts += 1;
        let (lap, i) = truth.shot_at(c.t);
        if truth.products[i] == c.product {
            s.correct += 1;
            recalled.insert((lap, i));
        }
    }
    s.recalled = shots.iter().filter(|k| recalled.contains(k)).count();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth() -> LoopTruth {
        let entry = serde_json::json!({
            "fps": 25, "frames": 300, "cut_frames": [50, 100, 150, 200, 250],
            "shots_class": ["A", "B", "C", "D", "E", "F"]
        });
        LoopTruth::from_entry(&entry, 12.0).unwrap()
    }

    fn cue(t: f64, p: &str) -> CueStart {
        CueStart {
            t,
            product: p.into(),
        }
    }

    #[test]
    fn shots_map_across_laps() {
        let t = truth();
        assert_eq!(t.shot_at(0.1), (0, 0));
        assert_eq!(t.shot_at(2.0), (0, 1));
        assert_eq!(t.shot_at(11.9), (0, 5));
        assert_eq!(t.shot_at(12.5), (1, 0));
        assert_eq!(t.shots_within((1.0, 12.0)).len(), 5);
        assert_eq!(t.shots_within((0.0, 24.0)).len(), 12);
    }

    #[test]
    fn precision_and_recall_against_the_truth() {
        let t = truth();
        let cues = [
            cue(0.2, "A"),  // right
            cue(2.3, "B"),  // right
            cue(2.9, "B"),  // right again, same shot: counted once in recall
            cue(4.5, "X"),  // wrong
            cue(13.0, "A"), // right, lap 1
            cue(30.0, "F"), // outside the window
        ];
        let s = score(&t, &cues, (0.0, 24.0));
        assert_eq!(
            s,
            Score {
                starts: 5,
                correct: 4,
                shots: 12,
                recalled: 3
            }
        );
        assert_eq!(s.precision(), Some(0.8));
        assert_eq!(s.recall(), Some(0.25));
        // A shot cut by the window's edge is not asked for, but its right cue still counts
        // for precision.
        let part = score(&t, &cues, (2.5, 12.0));
        assert_eq!(
            (part.starts, part.correct, part.shots, part.recalled),
            (2, 1, 4, 0)
        );
        assert_eq!(Score::default().precision(), None);
    }

    #[test]
    fn bad_truth_is_refused() {
        let e = serde_json::json!({"fps": 25, "cut_frames": [50], "shots_class": ["A"]});
        assert!(LoopTruth::from_entry(&e, 12.0).is_err());
        let beyond = serde_json::json!({"fps": 25, "cut_frames": [400], "shots_class": ["A", "B"]});
        assert!(LoopTruth::from_entry(&beyond, 12.0).is_err());
    }
}
