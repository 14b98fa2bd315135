use std::collections::{HashMap, HashSet};

use chrono::TimeZone;
use proptest::prelude::*;

use super::*;
use crate::matching::SiblingScope;
use crate::shots::Shot;

const FRAME_MS: i64 = 40;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap()
}

fn at(frame: u64) -> DateTime<Utc> {
    t0() + TimeDelta::milliseconds(frame as i64 * FRAME_MS)
}

fn settings() -> MatchingSettings {
    MatchingSettings {
        min_similarity: 0.6,
        margin: 0.05,
        min_samples: 2,
        single_sample_score: 0.9,
        lost_after_ms: 1_000,
        cooldown_ms: 5_000,
        max_cues_per_shot: 3,
        update_interval_ms: 500,
        max_boxes: 32,
        ..MatchingSettings::default()
    }
}

fn det(product: &str, sim: f32) -> MatchedDetection {
    MatchedDetection {
        bbox: [0.2, 0.3, 0.1, 0.2],
        class_name: "bottle".into(),
        det_score: 0.8,
        candidates: vec![(product.into(), sim), ("rival".into(), 0.3)],
        embedding: None,
    }
}

fn sample(shot: u64, frame: u64, dets: Vec<MatchedDetection>) -> SampleResult {
    SampleResult {
        frame_index: frame,
        pts_ns: frame * 40_000_000,
        wallclock: at(frame),
        shot_index: shot,
        detections: dets,
        reused: false,
    }
}

fn shot(index: u64, start: u64, end: Option<u64>) -> Shot {
    Shot {
        index,
        start_frame: start,
        start_pts_ns: start * 40_000_000,
        start_wallclock: at(start),
        end_frame: end,
        end_pts_ns: end.map(|f| f * 40_000_000),
        end_wallclock: end.map(at),
        boundary: if index == 0 {
            crate::shots::Boundary::Start
        } else {
            crate::shots::Boundary::Cut
        },
    }
}

fn kinds(events: &[CueEvent]) -> Vec<(&'static str, &str)> {
    events
        .iter()
        .map(|e| (e.kind(), e.cue().product_id.as_str()))
        .collect()
}

#[test]
fn one_confident_sample_is_not_enough() {
    let mut b = CueBuilder::new("news", &settings());
    b.on_shot_event(&ShotEvent::Started(shot(0, 0, None)));
    assert!(b.push(&sample(0, 3, vec![det("milk", 0.8)])).is_empty());
    assert!(b.push(&sample(0, 10, vec![])).is_empty());
    assert!(
        b.on_shot_event(&ShotEvent::Ended(shot(0, 0, Some(49))))
            .is_empty()
    );
    assert_eq!(b.stats().cues_started, 0);
}

/// A sample reused by the change gate (the picture did not change) is no second opinion:
/// it does not confirm a pending product, but it keeps an open cue from being lost and
/// leaves its score alone.
#[test]
fn reused_samples_keep_cues_alive_but_confirm_nothing() {
    let reused = |frame, dets| SampleResult {
        reused: true,
        ..sample(0, frame, dets)
    };
    let mut b = CueBuilder::new("news", &settings());
    b.on_shot_event(&ShotEvent::Started(shot(0, 0, None)));
    assert!(b.push(&sample(0, 3, vec![det("milk", 0.8)])).is_empty());
    for f in [10, 20, 30] {
        assert!(b.push(&reused(f, vec![det("milk", 0.8)])).is_empty());
    }
    assert_eq!(b.stats().cues_started, 0);
    // A fresh look confirms it; the pending track was kept alive meanwhile (frame 3 is
    // 1.4 s before frame 38, longer than lost_after_ms, yet the cue starts at frame 3).
    let events = b.push(&sample(0, 38, vec![det("milk", 0.6)]));
    assert_eq!(kinds(&events), vec![("start", "milk")]);
    assert_eq!(events[0].cue().start, at(3));
    assert!((events[0].cue().score - 0.7).abs() < 1e-6);
    // Reused samples for longer than lost_after_ms: the cue stays open, its score as is.
    for f in (60..200).step_by(20) {
        for e in b.push(&reused(f, vec![det("milk", 0.99)])) {
            assert_ne!(e.kind(), "end", "{e:?}");
            assert!((e.cue().score - 0.7).abs() < 1e-6);
        }
    }
    assert_eq!(b.open_cues(), 1);
}

#[test]
fn cue_starts_at_first_confident_sample_once_confirmed() {
    let mut b = CueBuilder::new("news", &settings());
    b.on_shot_event(&ShotEvent::Started(shot(0, 0, None)));
    assert!(b.push(&sample(0, 3, vec![det("milk", 0.7)])).is_empty());
    let events = b.push(&sample(0, 10, vec![det("milk", 0.8)]));
    assert_eq!(kinds(&events), vec![("start", "milk")]);
    let cue = events[0].cue();
    assert_eq!(cue.id, crate::cue::cue_id("news", 0, "milk"));
    assert_eq!(cue.channel, "news");
    assert_eq!(cue.shot, 0);
    assert_eq!(
        cue.start,
        at(3),
        "start is the first sighting, not the confirmation"
    );
    assert_eq!(cue.pts, 0.12);
    assert_eq!(cue.end, None);
    assert!((cue.score - 0.75).abs() < 1e-6);
    assert_eq!(cue.boxes.len(), 2);
    assert_eq!(cue.boxes[0].t, at(3));
    assert_eq!(cue.product, None);
    assert_eq!(b.open_cues(), 1);
    // Shot end: End with `end` = last sample where seen, not the shot's end.
    b.push(&sample(0, 16, vec![]));
    let events = b.on_shot_event(&ShotEvent::Ended(shot(0, 0, Some(49))));
    assert_eq!(kinds(&events), vec![("end", "milk")]);
    assert_eq!(events[0].cue().end, Some(at(10)));
    assert_eq!(events[0].cue().id, cue.id);
    assert_eq!(b.open_cues(), 0);
    let json = serde_json::to_value(&events[0]).unwrap();
    assert_eq!(json["cue"]["end"], "2026-11-21T10:00:00.400Z");
    assert_eq!(json["cue"]["start"], "2026-11-21T10:00:00.120Z");
}

#[test]
fn a_very_confident_single_sample_starts_at_once() {
    let mut b = CueBuilder::new("news", &settings());
    let events = b.push(&sample(0, 3, vec![det("milk", 0.95)]));
    assert_eq!(kinds(&events), vec![("start", "milk")]);
    assert_eq!(events[0].cue().start, at(3));
}

#[test]
fn lost_product_ends_and_is_not_reannounced_in_the_shot() {
    let s = MatchingSettings {
        cooldown_ms: 0,
        ..settings()
    };
    let mut b = CueBuilder::new("news", &s);
    b.push(&sample(0, 0, vec![det("milk", 0.8)]));
    b.push(&sample(0, 5, vec![det("milk", 0.8)]));
    // 1000 ms after the last sighting: not yet lost.
    assert!(b.push(&sample(0, 30, vec![])).is_empty());
    // 1040 ms: lost. End carries the last sighting.
    let events = b.push(&sample(0, 31, vec![]));
    assert_eq!(kinds(&events), vec![("end", "milk")]);
    assert_eq!(events[0].cue().end, Some(at(5)));
    // Seen again in the same shot: no second cue with the same id.
    for f in [35, 40, 45] {
        assert!(b.push(&sample(0, f, vec![det("milk", 0.95)])).is_empty());
    }
    assert_eq!(b.stats().suppressed_repeat, 3);
    assert!(b.flush().is_empty());
}

#[test]
fn cooldown_holds_across_shots() {
    let mut b = CueBuilder::new("news", &settings()); // cooldown 5 s
    b.push(&sample(0, 0, vec![det("milk", 0.8)]));
    b.push(&sample(0, 5, vec![det("milk", 0.8)]));
    let ends = b.on_shot_event(&ShotEvent::Ended(shot(0, 0, Some(49))));
    assert_eq!(ends[0].cue().end, Some(at(5)));
    b.on_shot_event(&ShotEvent::Started(shot(1, 50, None)));
    // Cut back to the same product within the cooldown: nothing.
    for f in (50..130).step_by(5) {
        assert!(
            b.push(&sample(1, f, vec![det("milk", 0.95)])).is_empty(),
            "frame {f}"
        );
    }
    // A different product is not held back.
    let events = b.push(&sample(1, 130, vec![det("juice", 0.95)]));
    assert_eq!(kinds(&events), vec![("start", "juice")]);
    // Cooldown over at frame 5 + 125 = 130 (5 s); the next sightings start a new cue whose
    // start is not inside the cooldown.
    let events = b.push(&sample(1, 131, vec![det("milk", 0.95)]));
    assert_eq!(kinds(&events), vec![("start", "milk")]);
    assert_eq!(events[0].cue().start, at(131));
    assert_eq!(events[0].cue().shot, 1);
    assert!(b.stats().suppressed_cooldown >= 16);
}

#[test]
fn at_most_max_cues_per_shot_most_similar_first() {
    let s = MatchingSettings {
        max_cues_per_shot: 2,
        ..settings()
    };
    let mut b = CueBuilder::new("news", &s);
    let dets = || vec![det("a", 0.7), det("b", 0.8), det("c", 0.75)];
    assert!(b.push(&sample(0, 0, dets())).is_empty());
    let events = b.push(&sample(0, 5, dets()));
    assert_eq!(kinds(&events), vec![("start", "b"), ("start", "c")]);
    assert_eq!(b.stats().suppressed_max_cues, 1);
    // A new shot has its own budget.
    b.on_shot_event(&ShotEvent::Started(shot(1, 50, None)));
    b.push(&sample(1, 50, vec![det("d", 0.7)]));
    let events = b.push(&sample(1, 55, vec![det("d", 0.7)]));
    assert_eq!(kinds(&events), vec![("start", "d")]);
}

#[test]
fn several_detections_of_one_product_count_once_with_the_best() {
    let mut b = CueBuilder::new("news", &settings());
    let mut weak = det("milk", 0.7);
    weak.bbox = [0.0, 0.0, 0.1, 0.1];
    let mut strong = det("milk", 0.8);
    strong.bbox = [0.5, 0.5, 0.2, 0.2];
    // Two detections in one sample: still one sample, so no cue yet.
    assert!(
        b.push(&sample(0, 0, vec![weak.clone(), strong.clone()]))
            .is_empty()
    );
    let events = b.push(&sample(0, 5, vec![strong, weak]));
    let cue = events[0].cue();
    assert!((cue.score - 0.8).abs() < 1e-6);
    assert_eq!(cue.boxes.len(), 2);
    assert!(cue.boxes.iter().all(|b| b.x == 0.5 && b.w == 0.2));
    assert_eq!(b.stats().confident, 2);
}

#[test]
fn updates_are_rate_limited_and_carry_the_track() {
    let mut b = CueBuilder::new("news", &settings()); // update_interval 500 ms
    let mut events = Vec::new();
    // A sample every 120 ms (3 frames) for 2 s.
    for f in (0..50).step_by(3) {
        events.extend(b.push(&sample(0, f, vec![det("milk", 0.8)])));
    }
    events.extend(b.flush());
    let updates: Vec<&Cue> = events
        .iter()
        .filter(|e| e.kind() == "update")
        .map(|e| e.cue())
        .collect();
    assert!(!updates.is_empty());
    let start_emitted_at = at(3);
    let mut last = start_emitted_at;
    for u in &updates {
        let emitted_at = u.boxes.last().unwrap().t;
        assert!(
            emitted_at - last >= TimeDelta::milliseconds(500),
            "{emitted_at} after {last}"
        );
        assert_eq!(u.end, None);
        last = emitted_at;
    }
    assert!(
        updates
            .windows(2)
            .all(|w| w[1].boxes.len() > w[0].boxes.len())
    );
    let end = events.last().unwrap();
    assert_eq!(end.kind(), "end");
    assert_eq!(end.cue().boxes.len(), 17);
    assert_eq!(end.cue().end, Some(at(48)));
}

#[test]
fn no_update_without_change() {
    let mut b = CueBuilder::new("news", &settings());
    b.push(&sample(0, 0, vec![det("milk", 0.8)]));
    b.push(&sample(0, 1, vec![det("milk", 0.8)]));
    // Not seen, not yet lost: nothing to say.
    for f in [15, 20] {
        assert!(b.push(&sample(0, f, vec![])).is_empty());
    }
    assert_eq!(b.stats().cues_updated, 0);
}

#[test]
fn long_tracks_are_thinned_keeping_first_and_last() {
    let s = MatchingSettings {
        max_boxes: 4,
        update_interval_ms: 0,
        ..settings()
    };
    let mut b = CueBuilder::new("news", &s);
    let mut events = Vec::new();
    for f in 0..40 {
        events.extend(b.push(&sample(0, f, vec![det("milk", 0.8)])));
    }
    events.extend(b.flush());
    assert!(events.iter().all(|e| e.cue().boxes.len() <= 4));
    let end = events.last().unwrap().cue();
    assert_eq!(end.boxes.first().unwrap().t, at(0));
    assert_eq!(end.boxes.last().unwrap().t, at(39));
    assert!(end.boxes.windows(2).all(|w| w[0].t < w[1].t));
    // update_interval 0: an update for every sample after the start.
    assert_eq!(b.stats().cues_updated, 38);
}

#[test]
fn pending_sightings_too_far_apart_do_not_add_up() {
    let mut b = CueBuilder::new("news", &settings()); // lost_after 1000 ms
    assert!(b.push(&sample(0, 0, vec![det("milk", 0.8)])).is_empty());
    // 1.2 s later: the count starts again.
    assert!(b.push(&sample(0, 30, vec![det("milk", 0.8)])).is_empty());
    let events = b.push(&sample(0, 33, vec![det("milk", 0.8)]));
    assert_eq!(kinds(&events), vec![("start", "milk")]);
    assert_eq!(events[0].cue().start, at(30));
    assert_eq!(events[0].cue().boxes.len(), 2);
}

#[test]
fn gated_and_weak_detections_announce_nothing() {
    let mut b = CueBuilder::new("news", &settings());
    let mut person = det("milk", 0.95);
    person.class_name = "person".into();
    let mut unsure = det("milk", 0.95);
    unsure.det_score = 0.1;
    let mut close_call = det("milk", 0.8);
    close_call.candidates.push(("juice".into(), 0.78));
    for f in (0..50).step_by(5) {
        let dets = vec![
            person.clone(),
            unsure.clone(),
            close_call.clone(),
            det("milk", 0.5),
        ];
        assert!(b.push(&sample(0, f, dets)).is_empty());
    }
    assert!(b.flush().is_empty());
    let st = b.stats();
    assert_eq!(
        (
            st.class_gated,
            st.low_det_score,
            st.low_margin,
            st.low_similarity
        ),
        (10, 10, 10, 10)
    );
    assert_eq!(st.confident, 0);
}

#[test]
fn whole_frame_fallback_makes_a_full_frame_hotspot() {
    let mut b = CueBuilder::new("news", &settings());
    let fallback =
        || MatchedDetection::whole_frame(vec![("milk".into(), 0.7), ("juice".into(), 0.4)]);
    b.push(&sample(0, 0, vec![fallback()]));
    let events = b.push(&sample(0, 5, vec![fallback()]));
    let boxes = &events[0].cue().boxes;
    assert_eq!(
        (boxes[0].x, boxes[0].y, boxes[0].w, boxes[0].h),
        (0.0, 0.0, 1.0, 1.0)
    );
}

#[test]
fn stale_and_out_of_order_samples_are_ignored() {
    let mut b = CueBuilder::new("news", &settings());
    b.push(&sample(0, 0, vec![det("milk", 0.8)]));
    b.on_shot_event(&ShotEvent::Ended(shot(0, 0, Some(49))));
    // A late result of the ended shot.
    assert!(b.push(&sample(0, 5, vec![det("milk", 0.8)])).is_empty());
    b.on_shot_event(&ShotEvent::Started(shot(1, 50, None)));
    b.push(&sample(1, 60, vec![det("juice", 0.8)]));
    // Same frame again, an earlier frame: ignored.
    assert!(b.push(&sample(1, 60, vec![det("juice", 0.8)])).is_empty());
    assert!(b.push(&sample(1, 55, vec![det("juice", 0.8)])).is_empty());
    // A Started of an old shot changes nothing.
    assert!(
        b.on_shot_event(&ShotEvent::Started(shot(0, 0, None)))
            .is_empty()
    );
    assert_eq!(b.stats().stale_samples, 3);
    let events = b.push(&sample(1, 65, vec![det("juice", 0.8)]));
    assert_eq!(kinds(&events), vec![("start", "juice")]);
}

#[test]
fn next_shot_closes_the_previous_without_its_end_event() {
    let mut b = CueBuilder::new("news", &settings());
    b.push(&sample(0, 0, vec![det("milk", 0.95)]));
    // The shot's Ended was lost; a sample of shot 1 arrives.
    let events = b.push(&sample(1, 60, vec![det("juice", 0.95)]));
    assert_eq!(kinds(&events), vec![("end", "milk"), ("start", "juice")]);
    // Same through a Started event.
    let events = b.on_shot_event(&ShotEvent::Started(shot(2, 100, None)));
    assert_eq!(kinds(&events), vec![("end", "juice")]);
}

#[test]
fn flush_ends_everything_once() {
    let mut b = CueBuilder::new("news", &settings());
    b.push(&sample(0, 0, vec![det("milk", 0.95), det("juice", 0.92)]));
    let events = b.flush();
    assert_eq!(kinds(&events), vec![("end", "milk"), ("end", "juice")]);
    assert!(events.iter().all(|e| e.cue().end == Some(at(0))));
    assert!(b.flush().is_empty());
    assert_eq!(b.open_cues(), 0);
    // Results of the flushed shot arriving afterwards are stale.
    assert!(b.push(&sample(0, 5, vec![det("apple", 0.95)])).is_empty());
}

#[test]
fn nan_and_garbage_do_not_panic() {
    let mut b = CueBuilder::new("news", &settings());
    let mut d = det("milk", f32::NAN);
    d.candidates.push(("juice".into(), f32::INFINITY));
    d.bbox = [f32::NAN, 0.0, 1.0, 1.0];
    let mut e = det("milk", 0.95);
    e.bbox = [0.9, 0.9, 0.5, 0.5]; // clamped to the picture
    let events = b.push(&sample(0, 0, vec![d, e]));
    let bx = events[0].cue().boxes[0];
    assert!((bx.x - 0.9).abs() < 1e-6 && (bx.w - 0.1).abs() < 1e-6);
    assert_eq!(b.stats().invalid_box, 1);
}

#[test]
fn product_details_are_filled_by_the_caller() {
    let mut b = CueBuilder::new("news", &settings());
    let mut events = b.push(&sample(0, 0, vec![det("milk", 0.95), det("juice", 0.92)]));
    fill_products(&mut events, |id| {
        (id == "milk")
            .then(|| serde_json::json!({"title": "Arla Standard Milk", "price": "1.20 EUR"}))
    });
    assert_eq!(
        events[0].cue().product.as_ref().unwrap()["title"],
        "Arla Standard Milk"
    );
    assert_eq!(events[1].cue().product, None);
    let json = serde_json::to_value(&events[0]).unwrap();
    assert_eq!(json["cue"]["product"]["price"], "1.20 EUR");
}

// ---------- properties ----------

const PRODUCTS: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Debug, Clone)]
enum Step {
    /// Advance this many frames, then take a sample with these detections.
    Sample(u64, Vec<MatchedDetection>),
    /// Advance, then cut (Ended + Started), or only Started when `drop_end`.
    Cut(u64, bool),
}

fn arb_detection() -> impl Strategy<Value = MatchedDetection> {
    // Mostly clear matches of one product (so cues happen), some random candidate lists.
    let clear = (0usize..4, 12u8..=20, 0u8..=10).prop_map(|(p, sim, rival)| {
        vec![
            (PRODUCTS[p].to_string(), f32::from(sim) / 20.0),
            (PRODUCTS[(p + 1) % 4].to_string(), f32::from(rival) / 20.0),
        ]
    });
    let random = proptest::collection::vec((0usize..4, 0u8..=20), 0..4).prop_map(|v| {
        v.into_iter()
            .map(|(p, s)| (PRODUCTS[p].to_string(), f32::from(s) / 20.0))
            .collect::<Vec<_>>()
    });
    (
        prop_oneof![4 => Just("bottle"), 1 => Just("person"), 1 => Just("frame")],
        prop_oneof![4 => Just(0.9f32), 1 => Just(0.1f32)],
        prop_oneof![3 => clear, 1 => random],
        (-0.2f32..1.0, -0.2f32..1.0, 0.0f32..0.6, 0.0f32..0.6),
    )
        .prop_map(
            |(class, det_score, candidates, (x, y, w, h))| MatchedDetection {
                bbox: [x, y, w, h],
                class_name: class.into(),
                det_score,
                candidates,
                embedding: None,
            },
        )
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1u64..20, proptest::collection::vec(arb_detection(), 0..4)).prop_map(|(d, v)| Step::Sample(d, v)),
        1 => (0u64..10, any::<bool>()).prop_map(|(d, drop_end)| Step::Cut(d, drop_end)),
    ]
}

fn arb_settings() -> impl Strategy<Value = MatchingSettings> {
    (
        1u32..4,
        prop_oneof![Just(0.9f32), Just(1.1f32)],
        100u64..2_000,
        0u64..5_000,
        1usize..4,
        0u64..1_000,
        2usize..8,
    )
        .prop_map(
            |(min_samples, single, lost, cooldown, max_cues, update, max_boxes)| MatchingSettings {
                min_similarity: 0.6,
                margin: 0.05,
                min_samples,
                single_sample_score: single,
                lost_after_ms: lost,
                cooldown_ms: cooldown,
                max_cues_per_shot: max_cues,
                update_interval_ms: update,
                max_boxes,
                // The oracle below judges each detection alone (Rules): regions agreeing
                // across a sample are covered by their own test.
                agree_regions: 0,
                ..MatchingSettings::default()
            },
        )
}

/// Runs the steps; returns the events and, per (shot, product), the confident samples
/// (wall clock, similarity) as judged by the rules.
#[allow(clippy::type_complexity)]
fn drive(
    s: &MatchingSettings,
    steps: &[Step],
) -> (
    Vec<(DateTime<Utc>, CueEvent)>,
    HashMap<(u64, String), Vec<(DateTime<Utc>, f32)>>,
) {
    let rules = Rules::new(s);
    let mut b = CueBuilder::new("ch", s);
    let mut frame = 0u64;
    let mut shot_index = 0u64;
    let mut shot_start = 0u64;
    let mut events = Vec::new();
    let mut confident: HashMap<(u64, String), Vec<(DateTime<Utc>, f32)>> = HashMap::new();
    events.extend(
        b.on_shot_event(&ShotEvent::Started(shot(0, 0, None)))
            .into_iter()
            .map(|e| (at(0), e)),
    );
    for step in steps {
        match step {
            Step::Sample(advance, dets) => {
                frame += advance;
                let smp = sample(shot_index, frame, dets.clone());
                for d in dets {
                    if let Judgement::Confident {
                        product_id,
                        similarity,
                        ..
                    } = rules.judge(d)
                    {
                        let v = confident.entry((shot_index, product_id)).or_default();
                        match v.last_mut() {
                            Some(last) if last.0 == smp.wallclock => {
                                last.1 = last.1.max(similarity)
                            }
                            _ => v.push((smp.wallclock, similarity)),
                        }
                    }
                }
                events.extend(b.push(&smp).into_iter().map(|e| (at(frame), e)));
            }
            Step::Cut(advance, drop_end) => {
                frame += advance + 1;
                if !drop_end {
                    let ev = ShotEvent::Ended(shot(shot_index, shot_start, Some(frame - 1)));
                    events.extend(b.on_shot_event(&ev).into_iter().map(|e| (at(frame), e)));
                }
                shot_index += 1;
                shot_start = frame;
                let ev = ShotEvent::Started(shot(shot_index, frame, None));
                events.extend(b.on_shot_event(&ev).into_iter().map(|e| (at(frame), e)));
            }
        }
    }
    events.extend(b.flush().into_iter().map(|e| (at(frame), e)));
    (events, confident)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn cue_lifecycle_invariants(s in arb_settings(), steps in proptest::collection::vec(arb_step(), 0..60)) {
        let (events, confident) = drive(&s, &steps);
        // id → (shot, product, start, phase: 0 open, 1 ended)
        let mut cues: HashMap<String, (u64, String, DateTime<Utc>, u8)> = HashMap::new();
        let mut ids_by_key: HashSet<(u64, String)> = HashSet::new();
        let mut ended_by_product: HashMap<String, DateTime<Utc>> = HashMap::new();
        let mut started_per_shot: HashMap<u64, usize> = HashMap::new();
        let mut max_shot_started = None::<u64>;
        for (emitted_at, ev) in &events {
            let c = ev.cue();
            prop_assert_eq!(&c.id, &crate::cue::cue_id("ch", c.shot, &c.product_id));
            prop_assert!(c.start <= *emitted_at);
            prop_assert!(!c.boxes.is_empty() && c.boxes.len() <= s.max_boxes);
            for bx in &c.boxes {
                prop_assert!(bx.x >= 0.0 && bx.y >= 0.0 && bx.w > 0.0 && bx.h > 0.0);
                prop_assert!(bx.x + bx.w <= 1.0 + 1e-6 && bx.y + bx.h <= 1.0 + 1e-6);
                prop_assert!(bx.t >= c.start && bx.t <= c.end.unwrap_or(*emitted_at));
            }
            prop_assert!(c.boxes.windows(2).all(|w| w[0].t < w[1].t));
            prop_assert!((0.0..=1.0).contains(&c.score));
            match ev {
                CueEvent::Start(_) => {
                    prop_assert!(c.end.is_none());
                    prop_assert!(ids_by_key.insert((c.shot, c.product_id.clone())), "second cue for (shot, product)");
                    prop_assert!(!cues.contains_key(&c.id));
                    // Shots do not overlap: no open cue of an earlier shot.
                    prop_assert!(cues.values().all(|(sh, _, _, ph)| *ph == 1 || *sh == c.shot));
                    prop_assert!(max_shot_started.is_none_or(|m| c.shot >= m));
                    max_shot_started = Some(c.shot);
                    let n = started_per_shot.entry(c.shot).or_default();
                    *n += 1;
                    prop_assert!(*n <= s.max_cues_per_shot);
                    // Cooldown since the product's previous cue on the channel.
                    if let Some(prev_end) = ended_by_product.get(&c.product_id) {
                        prop_assert!(c.start >= *prev_end + TimeDelta::milliseconds(s.cooldown_ms as i64));
                    }
                    // Enough confident samples between start and now, start being one.
                    let seen = confident.get(&(c.shot, c.product_id.clone())).cloned().unwrap_or_default();
                    let window: Vec<&(DateTime<Utc>, f32)> =
                        seen.iter().filter(|(t, _)| *t >= c.start && *t <= *emitted_at).collect();
                    prop_assert!(seen.iter().any(|(t, _)| *t == c.start), "start is not a confident sample");
                    prop_assert!(
                        window.len() >= s.min_samples as usize
                            || window.iter().any(|(_, sim)| *sim >= s.single_sample_score),
                        "started with {} confident samples", window.len()
                    );
                    cues.insert(c.id.clone(), (c.shot, c.product_id.clone(), c.start, 0));
                }
                CueEvent::Update(_) => {
                    prop_assert!(c.end.is_none());
                    let entry = cues.get(&c.id);
                    prop_assert!(entry.is_some_and(|e| e.3 == 0 && e.2 == c.start), "update of a cue not open");
                }
                CueEvent::End(_) => {
                    let end = c.end;
                    prop_assert!(end.is_some_and(|e| e >= c.start && e <= *emitted_at));
                    let entry = cues.get_mut(&c.id);
                    prop_assert!(entry.as_ref().is_some_and(|e| e.3 == 0 && e.2 == c.start), "end of a cue not open");
                    if let Some(e) = entry {
                        e.3 = 1;
                    }
                    if let Some(end) = end {
                        ended_by_product.insert(c.product_id.clone(), end);
                    }
                }
            }
        }
        // After flush every cue has ended exactly once.
        prop_assert!(cues.values().all(|e| e.3 == 1));
        // Events are in emission order.
        prop_assert!(events.windows(2).all(|w| w[0].0 <= w[1].0));
        // A shot with no confident match announces nothing.
        for c in cues.values() {
            prop_assert!(confident.contains_key(&(c.0, c.1.clone())));
        }
    }
}

/// Guards the property test against vacuity: its generator does produce cues, updates,
/// lost ends and cooldown suppressions.
#[test]
fn property_generator_exercises_the_lifecycle() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = (arb_settings(), proptest::collection::vec(arb_step(), 0..60));
    let (mut with_cues, mut updates, mut cooldowns, mut lost_ends) = (0, 0, 0, 0);
    for _ in 0..200 {
        let (s, steps) = strategy.new_tree(&mut runner).unwrap().current();
        let (events, _) = drive(&s, &steps);
        if events.iter().any(|(_, e)| e.kind() == "start") {
            with_cues += 1;
        }
        updates += events.iter().filter(|(_, e)| e.kind() == "update").count();
        // Ends well after the last sighting (lost, or a shot that went on without it).
        lost_ends += events
            .iter()
            .filter(|(t, e)| {
                e.kind() == "end"
                    && e.cue().end.is_some_and(|end| {
                        *t - end > TimeDelta::milliseconds(s.lost_after_ms as i64)
                    })
            })
            .count();
        let mut products = HashMap::<String, usize>::new();
        for (_, e) in &events {
            if e.kind() == "start" {
                *products.entry(e.cue().product_id.clone()).or_default() += 1;
            }
        }
        if products.values().any(|&n| n > 1) {
            cooldowns += 1;
        }
    }
    eprintln!(
        "runs with cues {with_cues}, updates {updates}, lost ends {lost_ends}, re-announced {cooldowns}"
    );
    assert!(with_cues > 100, "{with_cues} of 200 runs had cues");
    assert!(updates > 100, "{updates} updates");
    assert!(lost_ends > 10, "{lost_ends} lost ends");
    assert!(
        cooldowns > 10,
        "{cooldowns} runs re-announced a product after its cooldown"
    );
}

/// A detection at `bbox` whose candidates name `product` first and `other` close behind.
fn look_alike(
    product: &str,
    sim: f32,
    other: &str,
    other_sim: f32,
    bbox: [f32; 4],
) -> MatchedDetection {
    MatchedDetection {
        bbox,
        class_name: "bottle".into(),
        det_score: 0.8,
        candidates: vec![(product.into(), sim), (other.into(), other_sim)],
        embedding: None,
    }
}

const HERE: [f32; 4] = [0.2, 0.3, 0.2, 0.4];
const THERE: [f32; 4] = [0.6, 0.3, 0.2, 0.4];

#[test]
fn siblings_on_one_object_in_one_sample_count_once() {
    let mut b = CueBuilder::new("news", &settings());
    // Two overlapping boxes of one carton (say `bottle` and `cup`), each naming a flavour.
    let dets = |f| {
        sample(
            0,
            f,
            vec![
                look_alike("yoghurt-vanilla", 0.80, "yoghurt-strawberry", 0.72, HERE),
                look_alike(
                    "yoghurt-strawberry",
                    0.78,
                    "yoghurt-vanilla",
                    0.70,
                    [0.22, 0.3, 0.2, 0.4],
                ),
            ],
        )
    };
    b.push(&dets(0));
    let events = b.push(&dets(5));
    assert_eq!(kinds(&events), vec![("start", "yoghurt-vanilla")]);
    assert_eq!(b.stats().suppressed_sibling, 2);
    assert_eq!(kinds(&b.flush()), vec![("end", "yoghurt-vanilla")]);
}

#[test]
fn a_sibling_of_an_open_cue_at_its_place_starts_no_cue() {
    let mut b = CueBuilder::new("news", &settings());
    let juice = |p: &str, o: &str| look_alike(p, 0.8, o, 0.7, HERE);
    let mut started = Vec::new();
    // The carton is named apple, grapefruit, apple, grapefruit… sample after sample.
    for (i, f) in [0u64, 5, 10, 15, 20, 25].into_iter().enumerate() {
        let d = if i % 2 == 0 {
            juice("juice-apple", "juice-grapefruit")
        } else {
            juice("juice-grapefruit", "juice-apple")
        };
        started.extend(b.push(&sample(0, f, vec![d])));
    }
    assert_eq!(kinds(&started), vec![("start", "juice-apple")]);
    assert!(b.stats().suppressed_sibling >= 1);
}

#[test]
fn a_look_alike_box_inside_the_named_whole_frame_starts_no_cue() {
    let mut b = CueBuilder::new("news", &settings());
    let dets = |f| {
        sample(
            0,
            f,
            vec![
                MatchedDetection::whole_frame(vec![
                    ("soy-fresh".into(), 0.82),
                    ("soy-shelf".into(), 0.74),
                ]),
                look_alike("soy-shelf", 0.70, "soy-fresh", 0.62, THERE),
            ],
        )
    };
    b.push(&dets(0));
    assert_eq!(kinds(&b.push(&dets(5))), vec![("start", "soy-fresh")]);
    assert_eq!(b.stats().suppressed_sibling, 2);
}

#[test]
fn siblings_at_different_places_are_two_objects_with_sibling_scope_place() {
    let s = MatchingSettings {
        sibling_scope: SiblingScope::Place,
        ..settings()
    };
    let mut b = CueBuilder::new("news", &s);
    let both = |f| {
        sample(
            0,
            f,
            vec![
                look_alike("juice-apple", 0.8, "juice-grapefruit", 0.75, HERE),
                look_alike("juice-grapefruit", 0.8, "juice-apple", 0.75, THERE),
            ],
        )
    };
    b.push(&both(0));
    let mut got = kinds(&b.push(&both(5)))
        .into_iter()
        .map(|(k, p)| (k, p.to_string()))
        .collect::<Vec<_>>();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("start", "juice-apple".into()),
            ("start", "juice-grapefruit".into())
        ]
    );
    assert_eq!(b.stats().suppressed_sibling, 0);
}

#[test]
fn with_sibling_scope_shot_look_alikes_anywhere_give_one_cue_the_strongest() {
    let mut b = CueBuilder::new("news", &settings());
    // A pile of one fruit: boxes here and there, one named apple in most samples, one
    // named (look-alike) pear in some.
    let mut events = Vec::new();
    for (i, f) in [0u64, 5, 10, 15].into_iter().enumerate() {
        let mut dets = vec![look_alike("apple", 0.8, "pear", 0.72, HERE)];
        if i >= 1 {
            dets.push(look_alike("pear", 0.81, "apple", 0.75, THERE));
        }
        events.extend(b.push(&sample(0, f, dets)));
    }
    assert_eq!(kinds(&events), vec![("start", "apple")]);
    assert!(b.stats().suppressed_sibling >= 1);
    // A pending look-alike with more confident samples holds the object: a product that
    // qualifies on one very similar sample (`single_sample_score`) in the sample where its
    // look-alike reaches `min_samples` gives way to it.
    let mut b = CueBuilder::new("news", &settings());
    b.push(&sample(
        0,
        0,
        vec![look_alike("pear", 0.8, "apple", 0.72, THERE)],
    ));
    let events = b.push(&sample(
        0,
        5,
        vec![
            look_alike("apple", 0.95, "pear", 0.85, HERE),
            look_alike("pear", 0.8, "apple", 0.72, THERE),
        ],
    ));
    assert_eq!(kinds(&events), vec![("start", "pear")]);
    // Products that are no look-alikes in one shot each get a cue.
    let mut b = CueBuilder::new("news", &settings());
    let dets = |f| {
        sample(
            0,
            f,
            vec![
                look_alike("milk", 0.8, "rival", 0.3, HERE),
                look_alike("cereal", 0.79, "rival", 0.3, THERE),
            ],
        )
    };
    b.push(&dets(0));
    assert_eq!(b.push(&dets(5)).len(), 2);
}

#[test]
fn regions_that_agree_make_a_sighting_confident_below_the_margin() {
    // The whole picture and a large box both name `juice-orange`, each 0.01 ahead of a
    // look-alike: below the margin alone, confident together.
    let agreeing = |f| {
        sample(
            0,
            f,
            vec![
                MatchedDetection::whole_frame(vec![
                    ("juice-orange".into(), 0.70),
                    ("juice-apple".into(), 0.69),
                ]),
                look_alike("juice-orange", 0.68, "juice-apple", 0.67, HERE),
            ],
        )
    };
    let on = MatchingSettings {
        agree_regions: 2,
        ..settings()
    };
    let mut b = CueBuilder::new("news", &on);
    b.push(&agreeing(0));
    assert_eq!(
        kinds(&b.push(&agreeing(5))),
        vec![("start", "juice-orange")]
    );
    assert_eq!(b.stats().agreed, 4);
    assert_eq!(b.stats().low_margin, 4);
    // Off (the default for catalogs with a learned projection): nothing.
    let off = settings();
    let mut b = CueBuilder::new("news", &off);
    b.push(&agreeing(0));
    assert!(b.push(&agreeing(5)).is_empty());
    assert_eq!(b.stats().agreed, 0);
    // Regions naming different products, or one region alone, do not agree.
    let split = |f| {
        sample(
            0,
            f,
            vec![
                MatchedDetection::whole_frame(vec![
                    ("juice-orange".into(), 0.70),
                    ("juice-apple".into(), 0.69),
                ]),
                look_alike("juice-apple", 0.68, "juice-orange", 0.67, HERE),
            ],
        )
    };
    let mut b = CueBuilder::new("news", &on);
    b.push(&split(0));
    assert!(b.push(&split(5)).is_empty());
    assert_eq!(b.stats().agreed, 0);
    // A region under min_similarity does not vote.
    let weak = |f| {
        sample(
            0,
            f,
            vec![
                MatchedDetection::whole_frame(vec![
                    ("juice-orange".into(), 0.70),
                    ("juice-apple".into(), 0.69),
                ]),
                look_alike("juice-orange", 0.50, "juice-apple", 0.49, HERE),
            ],
        )
    };
    let mut b = CueBuilder::new("news", &on);
    b.push(&weak(0));
    assert!(b.push(&weak(5)).is_empty());
}

#[test]
fn unrelated_products_at_one_place_and_sibling_gap_zero_keep_both() {
    // Not look-alikes (neither among the other's close candidates): both count.
    let mut b = CueBuilder::new("news", &settings());
    let dets = |f| {
        sample(
            0,
            f,
            vec![
                look_alike("milk", 0.8, "rival", 0.3, HERE),
                look_alike("cereal", 0.79, "rival", 0.3, HERE),
            ],
        )
    };
    b.push(&dets(0));
    assert_eq!(b.push(&dets(5)).len(), 2);
    // Look-alikes with the suppression off: both count too.
    let s = MatchingSettings {
        sibling_gap: 0.0,
        ..settings()
    };
    let mut b = CueBuilder::new("news", &s);
    let dets = |f| {
        sample(
            0,
            f,
            vec![
                look_alike("juice-apple", 0.8, "juice-grapefruit", 0.72, HERE),
                look_alike("juice-grapefruit", 0.79, "juice-apple", 0.72, HERE),
            ],
        )
    };
    b.push(&dets(0));
    assert_eq!(b.push(&dets(5)).len(), 2);
    assert_eq!(b.stats().suppressed_sibling, 0);
}

#[test]
fn overlap_of_boxes() {
    assert!((overlap(&HERE, &HERE) - 1.0).abs() < 1e-6);
    assert_eq!(overlap(&HERE, &THERE), 0.0);
    // Half of the box: a half.
    let half = [0.3, 0.3, 0.2, 0.4];
    assert!((overlap(&HERE, &half) - 0.5).abs() < 1e-6);
    // A box inside the whole frame: fully.
    assert!((overlap(&[0.0, 0.0, 1.0, 1.0], &THERE) - 1.0).abs() < 1e-6);
    assert_eq!(overlap(&[0.0, 0.0, 0.0, 0.0], &[0.0, 0.0, 0.0, 0.0]), 0.0);
    assert_eq!(overlap(&[f32::NAN, 0.0, 1.0, 1.0], &HERE), 0.0);
}

fn det_with(product: &str, sim: f32, embedding: f32) -> MatchedDetection {
    MatchedDetection {
        embedding: Some(Arc::from(vec![embedding; 4])),
        ..det(product, sim)
    }
}

#[test]
fn a_cue_carries_its_most_similar_sightings_as_evidence() {
    let s = MatchingSettings {
        evidence_per_cue: 2,
        ..settings()
    };
    let mut b = CueBuilder::new("news", &s);
    b.push(&sample(0, 10, vec![det_with("cola", 0.7, 1.0)]));
    assert!(b.take_evidence().is_empty(), "pending: nothing emitted yet");
    let ev = b.push(&sample(0, 20, vec![det_with("cola", 0.8, 2.0)]));
    assert_eq!(kinds(&ev), vec![("start", "cola")]);
    let evidence = b.take_evidence();
    assert_eq!(evidence.len(), 1);
    assert_eq!(evidence[0].cue_id, ev[0].cue().id);
    assert_eq!(evidence[0].product_id, "cola");
    let sims: Vec<f32> = evidence[0].sightings.iter().map(|(s, _)| *s).collect();
    assert_eq!(sims, vec![0.8, 0.7], "the pending sightings count too");
    assert!(b.take_evidence().is_empty(), "taken once");
    // A better sighting replaces the weakest; the end carries it.
    b.push(&sample(0, 30, vec![det_with("cola", 0.9, 3.0)]));
    b.push(&sample(0, 35, vec![det("cola", 0.95)])); // no embedding kept: nothing to add
    let end = b.flush();
    assert_eq!(kinds(&end), vec![("end", "cola")]);
    let evidence = b.take_evidence();
    let kept: Vec<(f32, f32)> = evidence[0]
        .sightings
        .iter()
        .map(|(s, e)| (*s, e[0]))
        .collect();
    assert_eq!(kept, vec![(0.9, 3.0), (0.8, 2.0)]);
}

#[test]
fn no_evidence_is_kept_when_switched_off() {
    let s = MatchingSettings {
        evidence_per_cue: 0,
        ..settings()
    };
    let mut b = CueBuilder::new("news", &s);
    b.push(&sample(0, 10, vec![det_with("cola", 0.7, 1.0)]));
    let ev = b.push(&sample(0, 20, vec![det_with("cola", 0.8, 2.0)]));
    assert_eq!(kinds(&ev), vec![("start", "cola")]);
    assert!(b.take_evidence().is_empty());
}

#[test]
fn retuned_thresholds_apply_to_the_next_samples() {
    let mut b = CueBuilder::new("news", &settings());
    b.push(&sample(0, 10, vec![det("cola", 0.58)]));
    assert!(
        b.push(&sample(0, 20, vec![det("cola", 0.58)])).is_empty(),
        "below 0.6"
    );
    b.retune(&MatchingSettings {
        min_similarity: 0.5,
        ..settings()
    });
    b.push(&sample(0, 30, vec![det("cola", 0.58)]));
    let ev = b.push(&sample(0, 40, vec![det("cola", 0.58)]));
    assert_eq!(kinds(&ev), vec![("start", "cola")]);
}
