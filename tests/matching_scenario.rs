//! The grocery_shots shape end to end through the pure matching pieces: six 2 s shots at
//! 25 fps, one product each, sampled every 250 ms after a 120 ms settle, with noisy
//! catalog candidates where the true product wins most samples; then shots with only
//! low-confidence noise. Inference is simulated; the sampler, the live pipeline's work
//! queue (`pipeline::work::WorkQueue`, shot events and samples in order, drop-oldest) and
//! the cue builder are real.

mod common;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use shopcue::cue::CueEvent;
use shopcue::frame::{Frame, I420Image};
use shopcue::matching::{
    CueBuilder, MatchedDetection, MatchingSettings, SampleResult, SampleTicket, Sampler,
};
use shopcue::pipeline::work::{WorkItem, WorkQueue};
use shopcue::shots::{Shot, ShotEvent};

use common::GROCERY_PRODUCTS as PRODUCTS;

const FPS_FRAME_MS: i64 = 40;
/// grocery_shots.mp4: cuts (ground_truth.json); the product of each shot is
/// `common::GROCERY_PRODUCTS`.
const CUTS: [u64; 5] = [50, 100, 150, 200, 250];
/// Two more 2 s shots with nothing but weak matches.
const NOISE_SHOTS: u64 = 2;
const FRAMES: u64 = 300 + NOISE_SHOTS * 50;

fn wallclock(frame: u64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap()
        + TimeDelta::milliseconds(frame as i64 * FPS_FRAME_MS)
}

/// xorshift64*: deterministic noise without depending on a RNG crate's API.
struct Noise(u64);
impl Noise {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    }
    fn between(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.next()
    }
}

fn distractors() -> Vec<String> {
    (0..8).map(|i| format!("Other-Product-{i}")).collect()
}

/// How the simulated inference saw the shot's product in one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Seen {
    Confident,
    Weak,
    Ambiguous,
}

/// Simulated inference for one sampled frame: the shot's product (if any) plus a person
/// (denied class) and background clutter.
fn infer(
    ticket: &SampleTicket,
    noise: &mut Noise,
    forced_miss: bool,
) -> (SampleResult, Option<Seen>) {
    let others = distractors();
    let clutter = |n: usize, noise: &mut Noise| -> Vec<(String, f32)> {
        let mut v: Vec<(String, f32)> = (0..n)
            .map(|i| {
                (
                    others[(i * 3 + ticket.frame_index as usize) % others.len()].clone(),
                    noise.between(0.2, 0.48),
                )
            })
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    };
    let mut detections = vec![
        MatchedDetection {
            bbox: [0.6, 0.1, 0.25, 0.8],
            class_name: "person".into(),
            det_score: 0.9,
            candidates: vec![(PRODUCTS[0].into(), 0.92), ("Other-Product-0".into(), 0.3)],
            embedding: None,
        },
        MatchedDetection {
            bbox: [0.05, 0.7, 0.2, 0.25],
            class_name: "book".into(),
            det_score: 0.4,
            candidates: clutter(5, noise),
            embedding: None,
        },
    ];
    let shot = ticket.shot_index as usize;
    let mut seen = None;
    if let Some(product) = PRODUCTS.get(shot) {
        let roll = noise.next();
        let (kind, true_sim) = if forced_miss || roll < 0.15 {
            (Seen::Weak, noise.between(0.40, 0.52))
        } else if roll < 0.25 {
            (Seen::Ambiguous, 0.57)
        } else {
            (Seen::Confident, noise.between(0.62, 0.82))
        };
        let mut candidates = clutter(4, noise);
        candidates.push((product.to_string(), true_sim));
        if kind == Seen::Ambiguous {
            // A look-alike product (the neighbouring shot's) within the margin.
            candidates.push((PRODUCTS[(shot + 1) % PRODUCTS.len()].to_string(), 0.59));
        }
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
        // The product box drifts to the right over the shot.
        let drift = (ticket.frame_index % 50) as f32 / 50.0 * 0.2;
        detections.push(MatchedDetection {
            bbox: [0.3 + drift, 0.25, 0.2, 0.5],
            class_name: "bottle".into(),
            det_score: noise.between(0.35, 0.9),
            candidates,
            embedding: None,
        });
        seen = Some(kind);
    }
    let result = SampleResult {
        frame_index: ticket.frame_index,
        pts_ns: ticket.pts_ns,
        wallclock: ticket.wallclock,
        shot_index: ticket.shot_index,
        detections,
        reused: false,
    };
    (result, seen)
}

fn shot(index: u64, start: u64, end: Option<u64>) -> Shot {
    Shot {
        index,
        start_frame: start,
        start_pts_ns: start * 40_000_000,
        start_wallclock: wallclock(start),
        end_frame: end,
        end_pts_ns: end.map(|f| f * 40_000_000),
        end_wallclock: end.map(wallclock),
        boundary: if index == 0 {
            shopcue::shots::Boundary::Start
        } else {
            shopcue::shots::Boundary::Cut
        },
    }
}

struct Run {
    events: Vec<CueEvent>,
    /// Per shot, the wall clock of every processed sample where the product was confident.
    confident: Vec<Vec<DateTime<Utc>>>,
    sampled: u64,
    processed: u64,
    dropped: u64,
}

/// The inference side: takes work from the queue in order, as the pipeline's inference
/// thread does (shot events to the cue builder, samples through simulated inference).
struct Inference<'a> {
    builder: CueBuilder,
    noise: Noise,
    events: Vec<CueEvent>,
    confident: Vec<Vec<DateTime<Utc>>>,
    processed: u64,
    starts: &'a [u64],
}

impl Inference<'_> {
    /// Takes items until one sample was analysed (`one`) or the queue is empty.
    fn take(&mut self, queue: &WorkQueue, one: bool) {
        while let Some(work) = queue.pop(Duration::ZERO) {
            match work {
                WorkItem::Shot(ev) => self.events.extend(self.builder.on_shot_event(&ev)),
                WorkItem::Sample(ticket, _image) => {
                    self.processed += 1;
                    // Shot 2's first sample is a miss, so its cue must start later.
                    let forced_miss =
                        ticket.shot_index == 2 && first_sample_of_shot(&ticket, self.starts);
                    let (result, seen) = infer(&ticket, &mut self.noise, forced_miss);
                    record(&mut self.confident, &ticket, seen);
                    self.events.extend(self.builder.push(&result));
                    queue.done();
                    if one {
                        return;
                    }
                }
            }
        }
    }
}

/// Drives frames → sampler → the live pipeline's work queue → (simulated) inference →
/// cue builder. Inference takes one queued sample every `infer_every`-th sampled frame
/// (1: keeps up), and catches up during each cut.
fn run(settings: &MatchingSettings, infer_every: u64) -> Run {
    let mut starts = vec![0u64];
    starts.extend(CUTS);
    starts.extend((0..NOISE_SHOTS).map(|n| 300 + n * 50));
    let mut sampler = Sampler::new(settings);
    let queue = WorkQueue::new(settings.queue_capacity);
    let mut inference = Inference {
        builder: CueBuilder::new("grocery", settings),
        noise: Noise(0x5EED_CAFE),
        events: Vec::new(),
        confident: vec![Vec::new(); starts.len()],
        processed: 0,
        starts: &starts,
    };
    let mut sampled = 0u64;
    for f in 0..FRAMES {
        if let Some(n) = starts.iter().position(|&s| s == f) {
            let mut shot_events = Vec::new();
            if n > 0 {
                shot_events.push(ShotEvent::Ended(shot(
                    n as u64 - 1,
                    starts[n - 1],
                    Some(f - 1),
                )));
            }
            shot_events.push(ShotEvent::Started(shot(n as u64, f, None)));
            for ev in shot_events {
                sampler.on_shot_event(&ev);
                queue.push_event(ev);
            }
            // Frames still queued belong to the old shot: inference drains them first.
            inference.take(&queue, false);
        }
        let frame = Frame {
            index: f,
            pts_ns: f * 40_000_000,
            wallclock: wallclock(f),
            image: I420Image::filled(2, 2, 16, 128, 128),
        };
        if let Some(ticket) = sampler.sample(&frame) {
            sampled += 1;
            queue.push_sample(ticket, frame.image);
            if sampled.is_multiple_of(infer_every) {
                inference.take(&queue, true);
            }
        }
    }
    queue.push_event(ShotEvent::Ended(shot(
        starts.len() as u64 - 1,
        *starts.last().unwrap(),
        Some(FRAMES - 1),
    )));
    inference.take(&queue, false);
    let mut events = inference.events;
    events.extend(inference.builder.flush());
    Run {
        events,
        confident: inference.confident,
        sampled,
        processed: inference.processed,
        dropped: queue.dropped(),
    }
}

fn first_sample_of_shot(ticket: &SampleTicket, starts: &[u64]) -> bool {
    let start = starts[ticket.shot_index as usize];
    // 120 ms settle at 40 ms per frame: the first sample is the third frame.
    ticket.frame_index == start + 3
}

fn record(confident: &mut [Vec<DateTime<Utc>>], ticket: &SampleTicket, seen: Option<Seen>) {
    if seen == Some(Seen::Confident) {
        confident[ticket.shot_index as usize].push(ticket.wallclock);
    }
}

/// Where a cue must start with `min_samples = 2`: the first confident sample followed by
/// another within `lost_after` (farther apart, the count starts again).
fn expected_start(confident: &[DateTime<Utc>], lost_after_ms: u64) -> Option<DateTime<Utc>> {
    confident
        .windows(2)
        .find(|w| w[1] - w[0] <= TimeDelta::milliseconds(lost_after_ms as i64))
        .map(|w| w[0])
}

fn rfc3339(t: DateTime<Utc>) -> String {
    shopcue::frame::rfc3339_ms(&t)
}

fn starts_of(events: &[CueEvent]) -> Vec<&shopcue::cue::Cue> {
    events
        .iter()
        .filter(|e| e.kind() == "start")
        .map(|e| e.cue())
        .collect()
}

#[test]
fn ground_truth_shape_matches_the_footage_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = [
        dir.join("data/footage/ground_truth.json"),
        dir.join("../shared/data/footage/ground_truth.json"),
    ]
    .into_iter()
    .find(|p| p.exists());
    let Some(path) = path else {
        common::peer_missing(
            "ground_truth_shape_matches_the_footage_file",
            "data/footage/ground_truth.json is missing (scripts/setup.sh copies ../shared/data)",
        );
        return;
    };
    let gt: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let g = &gt["grocery_shots.mp4"];
    assert_eq!(g["fps"], 25);
    assert_eq!(g["frames"], 300);
    let cuts: Vec<u64> = g["cut_frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(cuts, CUTS);
    let classes: Vec<&str> = g["shots_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(classes, PRODUCTS);
}

#[test]
fn one_cue_per_product_shot_starting_at_its_first_confident_sample() {
    let settings = MatchingSettings::default();
    let r = run(&settings, 1);
    assert_eq!(r.dropped, 0);
    assert_eq!(r.processed, r.sampled);
    // 8 shots × 8 samples (120, 370, … 1870 ms into each 2 s shot).
    assert_eq!(r.sampled, 64);

    let starts = starts_of(&r.events);
    let got: Vec<(u64, &str)> = starts
        .iter()
        .map(|c| (c.shot, c.product_id.as_str()))
        .collect();
    let want: Vec<(u64, &str)> = PRODUCTS
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u64, *p))
        .collect();
    assert_eq!(
        got, want,
        "one cue per product shot, none for the noise shots"
    );

    for (i, cue) in starts.iter().enumerate() {
        let expected =
            expected_start(&r.confident[i], settings.lost_after_ms).expect("confident twice");
        assert_eq!(
            cue.start, expected,
            "shot {i}: start is the first confident sample"
        );
        assert_eq!(
            cue.pts,
            (cue.start - wallclock(0)).num_milliseconds() as f64 / 1000.0
        );
        assert!(
            cue.score >= 0.62 && cue.score <= 0.82,
            "score {}",
            cue.score
        );
        let shot_start = wallclock([0, 50, 100, 150, 200, 250][i]);
        assert!(cue.start >= shot_start + TimeDelta::milliseconds(120));
    }
    // Shot 2's first sample was a forced miss: its cue starts at a later sample.
    assert!(starts[2].start > wallclock(103));

    // Each cue ends exactly once, inside its shot, with a box track that follows the drift.
    for start in &starts {
        let ends: Vec<_> = r
            .events
            .iter()
            .filter(|e| e.kind() == "end" && e.cue().id == start.id)
            .map(|e| e.cue())
            .collect();
        assert_eq!(ends.len(), 1);
        let end = ends[0];
        let shot_last_frame = wallclock((start.shot + 1) * 50 - 1);
        let cue_end = end.end.unwrap();
        assert!(cue_end >= end.start && cue_end <= shot_last_frame);
        assert!(end.boxes.len() >= settings.min_samples as usize);
        assert!(
            end.boxes
                .windows(2)
                .all(|w| w[1].x >= w[0].x && w[1].t > w[0].t)
        );
        assert!(
            end.boxes
                .iter()
                .all(|b| b.x + b.w <= 1.0 && b.y + b.h <= 1.0)
        );
    }
    // Nothing at all for the noise shots.
    assert!(
        r.events
            .iter()
            .all(|e| e.cue().shot < PRODUCTS.len() as u64)
    );
    // Per cue: start, then updates, then end.
    for start in &starts {
        let kinds: String = r
            .events
            .iter()
            .filter(|e| e.cue().id == start.id)
            .map(|e| &e.kind()[..1])
            .collect();
        assert!(kinds.starts_with('s') && kinds.ends_with('e'), "{kinds}");
        assert!(
            kinds[1..kinds.len() - 1].chars().all(|c| c == 'u'),
            "{kinds}"
        );
    }
}

#[test]
fn slow_inference_drops_frames_but_still_finds_the_products() {
    // A small queue (the default holds a whole 2 s segment's samples) and inference that
    // takes a frame only every third sample: the queue drops the oldest.
    let settings = MatchingSettings {
        queue_capacity: 2,
        ..MatchingSettings::default()
    };
    let r = run(&settings, 3);
    assert!(r.dropped > 0);
    assert_eq!(
        r.processed + r.dropped,
        r.sampled,
        "every sampled frame is processed or counted"
    );
    let starts = starts_of(&r.events);
    eprintln!(
        "slow inference: sampled {}, processed {}, dropped {}, cues {:?}",
        r.sampled,
        r.processed,
        r.dropped,
        starts
            .iter()
            .map(|c| (c.shot, rfc3339(c.start)))
            .collect::<Vec<_>>()
    );
    // With this seed every product shot still gets its cue.
    assert_eq!(starts.len(), PRODUCTS.len());
    for cue in &starts {
        let shot = cue.shot as usize;
        assert!(shot < PRODUCTS.len(), "no cue in a noise shot");
        assert_eq!(cue.product_id, PRODUCTS[shot]);
        assert!(cue.start >= r.confident[shot][0]);
    }
}
