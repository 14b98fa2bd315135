//! Unit tests on synthetic footage: textured "scenes" rendered at any size, cut, faded,
//! dissolved, wiped, flashed and panned, with the boundaries known to the frame.

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::frame::I420Image;

/// Noise cells across and down the window at zoom 1: features span a few thumbnail
/// cells, as objects in real pictures do.
const VIEW_W: f32 = 8.0;
const VIEW_H: f32 = 4.5;

/// A procedural scene: smooth value noise with a colour cast, seen through a 16:9 window
/// that can pan and zoom. The picture does not depend on the pixel size.
#[derive(Clone, Copy)]
struct Scene {
    seed: u64,
    mean: f32,
    amp: f32,
    u: f32,
    v: f32,
}

impl Scene {
    fn new(seed: u64) -> Self {
        let r = |k: u64| hash(seed, k as i64, 7) as f32;
        Self {
            seed,
            mean: 70.0 + 110.0 * r(1),
            amp: 50.0 + 40.0 * r(2),
            u: 90.0 + 80.0 * r(3),
            v: 90.0 + 80.0 * r(4),
        }
    }

    /// The same kind of picture (brightness, contrast, colour) with another layout: a
    /// low-contrast cut between similar shots.
    fn sibling(&self, seed: u64) -> Self {
        Self { seed, ..*self }
    }

    fn luma(&self, x: f32, y: f32) -> f32 {
        let n = 0.65 * noise(self.seed, x, y) + 0.35 * noise(self.seed ^ 0x5555, x * 2.3, y * 2.3);
        (self.mean + self.amp * (n - 0.5) * 2.0).clamp(0.0, 255.0)
    }

    /// Render at `w`×`h`, the window's top-left at (`ox`, `oy`) noise cells, `zoom` ≥ 1
    /// magnifying.
    fn render(&self, w: u32, h: u32, ox: f32, oy: f32, zoom: f32) -> I420Image {
        let mut img = I420Image::filled(w, h, 0, self.u as u8, self.v as u8);
        let (wu, hu) = (w as usize, h as usize);
        for py in 0..hu {
            for px in 0..wu {
                let x = ox + (px as f32 + 0.5) / wu as f32 * VIEW_W / zoom;
                let y = oy + (py as f32 + 0.5) / hu as f32 * VIEW_H / zoom;
                img.data[py * wu + px] = self.luma(x, y) as u8;
            }
        }
        // Chroma follows the luma texture a little, so histograms have some spread.
        let (cw, ch) = (img.chroma_width(), img.chroma_height());
        let luma_len = wu * hu;
        for cy in 0..ch {
            for cx in 0..cw {
                let l = img.data[(cy * 2).min(hu - 1) * wu + (cx * 2).min(wu - 1)] as f32;
                let d = (l - self.mean) * 0.15;
                img.data[luma_len + cy * cw + cx] = (self.u + d).clamp(0.0, 255.0) as u8;
                img.data[luma_len + cw * ch + cy * cw + cx] = (self.v - d).clamp(0.0, 255.0) as u8;
            }
        }
        img
    }
}

fn hash(seed: u64, x: i64, y: i64) -> f64 {
    let mut z = seed
        ^ (x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (y as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

fn noise(seed: u64, x: f32, y: f32) -> f32 {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let s = |t: f32| t * t * (3.0 - 2.0 * t);
    let (sx, sy) = (s(fx), s(fy));
    let v = |dx: i64, dy: i64| hash(seed, x0 as i64 + dx, y0 as i64 + dy) as f32;
    let top = v(0, 0) * (1.0 - sx) + v(1, 0) * sx;
    let bottom = v(0, 1) * (1.0 - sx) + v(1, 1) * sx;
    top * (1.0 - sy) + bottom * sy
}

fn blend(a: &I420Image, b: &I420Image, alpha: f32) -> I420Image {
    let mut out = a.clone();
    for (o, (p, q)) in out.data.iter_mut().zip(a.data.iter().zip(&b.data)) {
        *o = (*p as f32 * (1.0 - alpha) + *q as f32 * alpha).round() as u8;
    }
    out
}

fn black(w: u32, h: u32) -> I420Image {
    I420Image::filled(w, h, 16, 128, 128)
}

/// `b` uncovers `a` from the left: columns left of `frac` of the width show `b`.
fn wipe(a: &I420Image, b: &I420Image, frac: f32) -> I420Image {
    let mut out = a.clone();
    let (w, h) = (a.width as usize, a.height as usize);
    let edge = (frac * w as f32) as usize;
    for y in 0..h {
        out.data[y * w..y * w + edge].copy_from_slice(&b.data[y * w..y * w + edge]);
    }
    let (cw, ch) = (a.chroma_width(), a.chroma_height());
    let cedge = edge.div_ceil(2).min(cw);
    for plane in 0..2 {
        let off = w * h + plane * cw * ch;
        for y in 0..ch {
            let r = off + y * cw;
            out.data[r..r + cedge].copy_from_slice(&b.data[r..r + cedge]);
        }
    }
    out
}

fn brighten(a: &I420Image, delta: i32) -> I420Image {
    let mut out = a.clone();
    let luma = a.width as usize * a.height as usize;
    for p in &mut out.data[..luma] {
        *p = (*p as i32 + delta).clamp(0, 255) as u8;
    }
    out
}

const W: u32 = 160;
const H: u32 = 90;
const FRAME_NS: u64 = 40_000_000;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()
}

fn frames(images: Vec<I420Image>) -> Vec<Frame> {
    images
        .into_iter()
        .enumerate()
        .map(|(i, image)| Frame {
            index: i as u64,
            pts_ns: i as u64 * FRAME_NS,
            wallclock: start() + chrono::Duration::nanoseconds((i as u64 * FRAME_NS) as i64),
            image,
        })
        .collect()
}

/// A slowly panning shot of `scene`, frames `from..from + n` of its own clock.
fn shot(scene: &Scene, n: usize, w: u32, h: u32) -> Vec<I420Image> {
    (0..n)
        .map(|i| scene.render(w, h, i as f32 * 0.015, i as f32 * 0.005, 1.0))
        .collect()
}

struct Run {
    events: Vec<ShotEvent>,
    /// For each event: the number of frames pushed when it came (frames.len() + 1 for
    /// `finish`).
    at: Vec<usize>,
    lookahead: u64,
}

fn run(config: &ShotConfig, images: Vec<I420Image>) -> Run {
    let fs = frames(images);
    let mut det = ShotDetector::new(config);
    let (mut events, mut at) = (Vec::new(), Vec::new());
    for (i, f) in fs.iter().enumerate() {
        for e in det.push(f) {
            events.push(e);
            at.push(i + 1);
        }
    }
    for e in det.finish() {
        events.push(e);
        at.push(fs.len() + 1);
    }
    Run {
        events,
        at,
        lookahead: det.lookahead_frames(),
    }
}

fn starts(run: &Run) -> Vec<u64> {
    run.events
        .iter()
        .filter_map(|e| match e {
            ShotEvent::Started(s) if s.index > 0 => Some(s.start_frame),
            _ => None,
        })
        .collect()
}

fn boundaries(images: Vec<I420Image>) -> Vec<u64> {
    starts(&run(&ShotConfig::default(), images))
}

fn assert_one_inside(found: &[u64], lo: u64, hi: u64) {
    assert_eq!(
        found.len(),
        1,
        "expected one boundary in {lo}..={hi}, got {found:?}"
    );
    assert!(
        (lo..=hi).contains(&found[0]),
        "boundary {} not in {lo}..={hi}",
        found[0]
    );
}

#[test]
fn default_config_validates_and_bad_values_name_the_key() {
    ShotConfig::default().validate().unwrap();
    let bad = |f: fn(&mut ShotConfig)| {
        let mut c = ShotConfig::default();
        f(&mut c);
        c.validate().unwrap_err().0
    };
    assert_eq!(bad(|c| c.min_shot_frames = 0), "min_shot_frames");
    assert_eq!(bad(|c| c.cut_threshold = 0.0), "cut_threshold");
    assert_eq!(bad(|c| c.cut_threshold = f32::NAN), "cut_threshold");
    assert_eq!(bad(|c| c.cut_ratio = 0.5), "cut_ratio");
    assert_eq!(bad(|c| c.flash_max_frames = 26), "flash_max_frames");
    assert_eq!(
        bad(|c| c.transition_threshold = -1.0),
        "transition_threshold"
    );
    assert_eq!(
        bad(|c| c.transition_half_window = 2),
        "transition_half_window"
    );
    assert_eq!(bad(|c| c.decode_height = 91), "decode_height");
}

#[test]
fn config_keys_deserialise_with_defaults() {
    let c: ShotConfig = toml::from_str("cut_ratio = 3.0").unwrap();
    assert_eq!(c.cut_ratio, 3.0);
    assert_eq!(c.min_shot_frames, 8);
    assert!(toml::from_str::<ShotConfig>("no_such_key = 1").is_err());
}

#[test]
fn shipped_config_documents_the_defaults() {
    let text = include_str!("../../config/shopcue.toml");
    let table: toml::Table = toml::from_str(text).unwrap();
    let shots: ShotConfig = table["shots"].clone().try_into().unwrap();
    assert_eq!(
        toml::Value::try_from(&shots).unwrap(),
        toml::Value::try_from(ShotConfig::default()).unwrap()
    );
    // Every key is in the snippet.
    let keys = toml::Value::try_from(ShotConfig::default()).unwrap();
    for key in keys.as_table().unwrap().keys() {
        assert!(table["shots"].get(key).is_some(), "{key} is not documented");
    }
}

#[test]
fn hard_cut_is_found_on_its_frame() {
    let (a, b) = (Scene::new(1), Scene::new(2));
    let mut images = shot(&a, 40, W, H);
    images.extend(shot(&b, 40, W, H));
    let r = run(&ShotConfig::default(), images);
    assert_eq!(starts(&r), vec![40]);
    let ShotEvent::Started(s) = &r.events[2] else {
        panic!("{:?}", r.events)
    };
    assert_eq!(s.boundary, Boundary::Cut);
}

#[test]
fn low_contrast_cut_between_similar_shots_is_found() {
    let a = Scene::new(3);
    let b = a.sibling(33);
    let c = a.sibling(333);
    let mut images = shot(&a, 30, W, H);
    images.extend(shot(&b, 30, W, H));
    images.extend(shot(&c, 30, W, H));
    assert_eq!(boundaries(images), vec![30, 60]);
}

#[test]
fn cut_between_two_views_of_one_scene_is_found() {
    // Same texture, same statistics; the second camera looks elsewhere.
    let a = Scene::new(4);
    let mut images: Vec<_> = (0..30)
        .map(|i| a.render(W, H, i as f32 * 0.01, 0.0, 1.0))
        .collect();
    images.extend((0..30).map(|i| a.render(W, H, 20.0 + i as f32 * 0.01, 6.0, 1.3)));
    assert_eq!(boundaries(images), vec![30]);
}

#[test]
fn fade_through_black_gives_one_boundary_inside() {
    let (a, b) = (Scene::new(5), Scene::new(6));
    let (pa, pb) = (shot(&a, 60, W, H), shot(&b, 60, W, H));
    let dark = black(W, H);
    let mut images = pa[..40].to_vec();
    // 10 frames out, 4 black, 10 in: frames 40..64.
    for i in 0..10 {
        images.push(blend(&pa[40 + i], &dark, (i + 1) as f32 / 10.0));
    }
    images.extend(std::iter::repeat_n(dark.clone(), 4));
    for (i, b) in pb[..10].iter().enumerate() {
        images.push(blend(&dark, b, (i + 1) as f32 / 11.0));
    }
    images.extend(pb[10..50].iter().cloned());
    assert_one_inside(&boundaries(images), 39, 65);
}

#[test]
fn dissolve_gives_one_boundary_inside() {
    for len in [8usize, 16, 25] {
        let (a, b) = (Scene::new(7), Scene::new(8));
        let (pa, pb) = (shot(&a, 80, W, H), shot(&b, 80, W, H));
        let mut images = pa[..40].to_vec();
        for i in 0..len {
            images.push(blend(
                &pa[40 + i],
                &pb[i],
                (i + 1) as f32 / (len + 1) as f32,
            ));
        }
        images.extend(pb[len..len + 40].iter().cloned());
        let found = boundaries(images);
        assert_one_inside(&found, 39, 40 + len as u64 + 1);
    }
}

#[test]
fn dissolve_between_similar_steady_shots_gives_one_boundary() {
    // Like grocery_shots.mp4: slow zooms over similar pictures.
    let a = Scene::new(9);
    let b = a.sibling(99);
    let steady = |s: &Scene| -> Vec<I420Image> {
        (0..80)
            .map(|i| s.render(W, H, 0.0, 0.0, 1.0 + i as f32 * 0.002))
            .collect()
    };
    let (pa, pb) = (steady(&a), steady(&b));
    let mut images = pa[..40].to_vec();
    for i in 0..20 {
        images.push(blend(&pa[40 + i], &pb[i], (i + 1) as f32 / 21.0));
    }
    images.extend(pb[20..60].iter().cloned());
    assert_one_inside(&boundaries(images), 39, 61);
}

#[test]
fn wipe_gives_one_boundary_inside() {
    let (a, b) = (Scene::new(10), Scene::new(11));
    let (pa, pb) = (shot(&a, 80, W, H), shot(&b, 80, W, H));
    let mut images = pa[..40].to_vec();
    for i in 0..15 {
        images.push(wipe(&pa[40 + i], &pb[i], (i + 1) as f32 / 16.0));
    }
    images.extend(pb[15..55].iter().cloned());
    assert_one_inside(&boundaries(images), 39, 56);
}

#[test]
fn flashes_are_not_cuts() {
    let a = Scene::new(12);
    let mut images = shot(&a, 120, W, H);
    // One white frame, two bright frames, a four-frame flash that fades out.
    images[20] = I420Image::filled(W, H, 235, 128, 128);
    for image in &mut images[45..47] {
        *image = brighten(image, 90);
    }
    for (i, image) in images[80..84].iter_mut().enumerate() {
        *image = brighten(image, 110 - 25 * i as i32);
    }
    assert_eq!(boundaries(images), Vec::<u64>::new());
}

#[test]
fn flash_right_after_a_cut_keeps_the_cut() {
    let (a, b) = (Scene::new(13), Scene::new(14));
    let mut images = shot(&a, 40, W, H);
    images.extend(shot(&b, 50, W, H));
    for image in &mut images[60..62] {
        *image = brighten(image, 100);
    }
    assert_eq!(boundaries(images), vec![40]);
}

#[test]
fn fast_pan_and_zoom_are_not_cuts() {
    let a = Scene::new(15);
    // 0.6 noise cells (7.5 % of the width) per frame to the right, then back, then a
    // fast zoom in and out, then shake.
    let mut images: Vec<_> = (0..40)
        .map(|i| a.render(W, H, i as f32 * 0.6, 0.0, 1.0))
        .collect();
    images.extend((0..40).map(|i| a.render(W, H, 24.0 - i as f32 * 0.6, i as f32 * 0.15, 1.0)));
    // Two zoom cycles that end where they began, then shake around the same spot.
    images.extend((0..40).map(|i| {
        let z = 1.0 + 0.6 * (i as f32 * std::f32::consts::PI / 20.0).sin().abs();
        a.render(W, H, 0.0, 6.0, z)
    }));
    images.extend((0..40).map(|i| {
        let (dx, dy) = ((i as f32 * 1.7).sin() * 0.4, (i as f32 * 2.3).cos() * 0.3);
        a.render(W, H, 0.4 + dx, 6.3 + dy, 1.0)
    }));
    assert_eq!(boundaries(images), Vec::<u64>::new());
}

#[test]
fn cut_inside_fast_motion_is_found() {
    let (a, b) = (Scene::new(16), Scene::new(17));
    let mut images: Vec<_> = (0..40)
        .map(|i| a.render(W, H, i as f32 * 0.4, 0.0, 1.0))
        .collect();
    images.extend((0..40).map(|i| b.render(W, H, i as f32 * 0.4, 1.5, 1.0)));
    assert_eq!(boundaries(images), vec![40]);
}

#[test]
fn minimum_shot_length_is_kept() {
    let (a, b, c) = (Scene::new(18), Scene::new(19), Scene::new(20));
    let build = || {
        let mut images = shot(&a, 30, W, H);
        images.extend(shot(&b, 6, W, H));
        images.extend(shot(&c, 30, W, H));
        images
    };
    // With the default 8, the cut 6 frames after the first is dropped.
    assert_eq!(boundaries(build()), vec![30]);
    let config = ShotConfig {
        min_shot_frames: 4,
        ..ShotConfig::default()
    };
    assert_eq!(starts(&run(&config, build())), vec![30, 36]);
    // Nor can the first shot be shorter than the minimum.
    let mut images = shot(&a, 5, W, H);
    images.extend(shot(&b, 40, W, H));
    assert_eq!(boundaries(images), Vec::<u64>::new());
}

#[test]
fn empty_and_one_frame_inputs() {
    let mut det = ShotDetector::new(&ShotConfig::default());
    assert!(det.finish().is_empty());

    let r = run(
        &ShotConfig::default(),
        vec![Scene::new(21).render(W, H, 0.0, 0.0, 1.0)],
    );
    assert_eq!(r.events.len(), 2, "{:?}", r.events);
    let (ShotEvent::Started(s), ShotEvent::Ended(e)) = (&r.events[0], &r.events[1]) else {
        panic!("{:?}", r.events)
    };
    assert_eq!(
        (s.index, s.start_frame, s.end_frame, s.boundary),
        (0, 0, None, Boundary::Start)
    );
    assert_eq!(
        (e.start_frame, e.end_frame, e.end_pts_ns),
        (0, Some(0), Some(0))
    );
    assert_eq!(r.at, vec![1, 2]);
}

#[test]
fn very_short_inputs_still_cut() {
    let (a, b) = (Scene::new(22), Scene::new(23));
    let config = ShotConfig {
        min_shot_frames: 1,
        ..ShotConfig::default()
    };
    for (na, nb) in [(1usize, 1usize), (2, 2), (3, 5), (10, 3)] {
        let mut images = shot(&a, na, W, H);
        images.extend(shot(&b, nb, W, H));
        let r = run(&config, images);
        assert_eq!(starts(&r), vec![na as u64], "{na}+{nb}");
        let ended: Vec<_> = r
            .events
            .iter()
            .filter_map(|e| match e {
                ShotEvent::Ended(s) => s.end_frame,
                _ => None,
            })
            .collect();
        assert_eq!(ended, vec![na as u64 - 1, (na + nb) as u64 - 1]);
    }
}

#[test]
fn events_carry_frames_pts_and_wallclock() {
    let (a, b) = (Scene::new(24), Scene::new(25));
    let mut images = shot(&a, 30, W, H);
    images.extend(shot(&b, 30, W, H));
    let r = run(&ShotConfig::default(), images);
    let at = |i: u64| start() + chrono::Duration::milliseconds(i as i64 * 40);
    let expected = vec![
        ShotEvent::Started(Shot {
            index: 0,
            start_frame: 0,
            start_pts_ns: 0,
            start_wallclock: at(0),
            end_frame: None,
            end_pts_ns: None,
            end_wallclock: None,
            boundary: Boundary::Start,
        }),
        ShotEvent::Ended(Shot {
            index: 0,
            start_frame: 0,
            start_pts_ns: 0,
            start_wallclock: at(0),
            end_frame: Some(29),
            end_pts_ns: Some(29 * FRAME_NS),
            end_wallclock: Some(at(29)),
            boundary: Boundary::Start,
        }),
        ShotEvent::Started(Shot {
            index: 1,
            start_frame: 30,
            start_pts_ns: 30 * FRAME_NS,
            start_wallclock: at(30),
            end_frame: None,
            end_pts_ns: None,
            end_wallclock: None,
            boundary: Boundary::Cut,
        }),
        ShotEvent::Ended(Shot {
            index: 1,
            start_frame: 30,
            start_pts_ns: 30 * FRAME_NS,
            start_wallclock: at(30),
            end_frame: Some(59),
            end_pts_ns: Some(59 * FRAME_NS),
            end_wallclock: Some(at(59)),
            boundary: Boundary::Cut,
        }),
    ];
    assert_eq!(r.events, expected);
    // The first shot starts with the first frame; the cut is known within the
    // look-ahead, long before the end of the stream.
    assert_eq!(r.at[0], 1);
    assert!(r.at[2] as u64 <= 30 + 1 + r.lookahead, "{:?}", r.at);
    assert!(r.at[2] < 60);
}

#[test]
fn frame_indices_come_from_the_caller() {
    let (a, b) = (Scene::new(26), Scene::new(27));
    let mut images = shot(&a, 20, W, H);
    images.extend(shot(&b, 20, W, H));
    let mut det = ShotDetector::new(&ShotConfig::default());
    let mut events = Vec::new();
    for (i, image) in images.into_iter().enumerate() {
        let f = Frame {
            index: 1000 + i as u64,
            pts_ns: 5_000_000_000 + i as u64 * FRAME_NS,
            wallclock: start(),
            image,
        };
        events.extend(det.push(&f));
    }
    events.extend(det.finish());
    let starts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ShotEvent::Started(s) => Some((s.start_frame, s.start_pts_ns)),
            _ => None,
        })
        .collect();
    assert_eq!(
        starts,
        vec![(1000, 5_000_000_000), (1020, 5_000_000_000 + 20 * FRAME_NS)]
    );
}

#[test]
fn results_do_not_depend_on_the_picture_size() {
    let (a, b, c) = (Scene::new(28), Scene::new(29), Scene::new(30));
    for (w, h) in [(64u32, 36u32), (96, 54), (256, 144), (640, 360), (144, 144)] {
        let pa = shot(&a, 60, w, h);
        let pb = shot(&b, 60, w, h);
        let mut images = pa[..40].to_vec();
        images.extend(pb[..40].iter().cloned());
        let pc = shot(&c, 60, w, h);
        for i in 0..16 {
            images.push(blend(&pb[40 + i.min(19)], &pc[i], (i + 1) as f32 / 17.0));
        }
        images.extend(pc[16..56].iter().cloned());
        let found = boundaries(images);
        assert_eq!(found.len(), 2, "{w}x{h}: {found:?}");
        assert_eq!(found[0], 40, "{w}x{h}");
        assert!((79..=97).contains(&found[1]), "{w}x{h}: {found:?}");
    }
}

#[test]
fn malformed_and_tiny_frames_do_not_panic() {
    let mut det = ShotDetector::new(&ShotConfig::default());
    let mut bad = Scene::new(31).render(W, H, 0.0, 0.0, 1.0);
    bad.data.truncate(10);
    let images = vec![
        bad,
        I420Image::filled(1, 1, 0, 0, 0),
        I420Image {
            width: 0,
            height: 0,
            data: vec![],
        },
        I420Image::filled(3, 7, 255, 255, 255),
        Scene::new(31).render(64, 36, 0.0, 0.0, 1.0),
    ];
    let mut n = 0;
    for f in frames(images) {
        n += det.push(&f).len();
    }
    n += det.finish().len();
    assert!(n >= 2);
    assert_eq!(det.malformed_frames(), 2);
}

/// One segment of a generated programme.
#[derive(Debug, Clone)]
enum Piece {
    Shot { scene: u64, len: usize },
    Flash { len: usize },
    Dissolve { len: usize },
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        4 => (0u64..1000, 1usize..60).prop_map(|(scene, len)| Piece::Shot { scene, len }),
        1 => (1usize..5).prop_map(|len| Piece::Flash { len }),
        1 => (4usize..20).prop_map(|len| Piece::Dissolve { len }),
    ]
}

fn programme(pieces: &[Piece]) -> Vec<I420Image> {
    let (w, h) = (64, 36);
    let mut out: Vec<I420Image> = Vec::new();
    let mut scene = Scene::new(9999);
    let mut t = 0.0f32;
    for p in pieces {
        match p {
            Piece::Shot { scene: s, len } => {
                scene = Scene::new(*s);
                for _ in 0..*len {
                    out.push(scene.render(w, h, t * 0.025, 0.0, 1.0));
                    t += 1.0;
                }
            }
            Piece::Flash { len } => {
                for _ in 0..*len {
                    out.push(brighten(&scene.render(w, h, t * 0.025, 0.0, 1.0), 100));
                    t += 1.0;
                }
            }
            Piece::Dissolve { len } => {
                let next = Scene::new(scene.seed.wrapping_add(17));
                for i in 0..*len {
                    let a = scene.render(w, h, t * 0.025, 0.0, 1.0);
                    let b = next.render(w, h, t * 0.025, 0.0, 1.0);
                    out.push(blend(&a, &b, (i + 1) as f32 / (*len + 1) as f32));
                    t += 1.0;
                }
                scene = next;
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever the input: shots are numbered in order, each starts right after the
    /// previous one ended, none is shorter than the minimum (but the last), the last ends
    /// on the last frame, and every start is reported within the look-ahead.
    #[test]
    fn events_always_tile_the_stream(pieces in proptest::collection::vec(piece(), 1..8), min_shot in 1u32..12) {
        let images = programme(&pieces);
        let n = images.len() as u64;
        let config = ShotConfig { min_shot_frames: min_shot, ..ShotConfig::default() };
        let r = run(&config, images);
        let mut expect_start = 0u64;
        let mut expect_index = 0u64;
        let mut open = false;
        for (e, &at) in r.events.iter().zip(&r.at) {
            match e {
                ShotEvent::Started(s) => {
                    prop_assert!(!open);
                    prop_assert_eq!(s.index, expect_index);
                    prop_assert_eq!(s.start_frame, expect_start);
                    prop_assert!(at as u64 <= s.start_frame + 1 + r.lookahead || at as u64 == n + 1);
                    open = true;
                }
                ShotEvent::Ended(s) => {
                    prop_assert!(open);
                    prop_assert_eq!(s.index, expect_index);
                    let end = s.end_frame.unwrap();
                    prop_assert!(end >= s.start_frame);
                    if end + 1 < n {
                        prop_assert!(end + 1 - s.start_frame >= min_shot as u64);
                    }
                    expect_start = end + 1;
                    expect_index += 1;
                    open = false;
                }
            }
        }
        prop_assert!(!open);
        prop_assert_eq!(expect_start, n);
    }
}
