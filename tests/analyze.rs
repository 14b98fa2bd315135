//! `shopcue analyze` (batch mode) on the real footage with the real grocery catalog: the
//! document's shots match the ground truth cuts, the per-shot items name each shot's
//! product, per-frame items are there, and bad input fails with one clear error.

mod common;

use std::path::PathBuf;

use common::{GROCERY_PRODUCTS, footage, grocery_catalog, test_settings};
use shopcue::analyze::{AnalyzeArgs, SCHEMA, analyze, write};
use tokio_util::sync::CancellationToken;

fn args(input: String, catalog: PathBuf, out: PathBuf) -> AnalyzeArgs {
    AnalyzeArgs {
        input,
        catalog,
        out,
        channel: "batch".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grocery_shots_become_shoppable_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shoppable.json");
    let a = args(
        footage("grocery_shots.mp4").display().to_string(),
        grocery_catalog(),
        out.clone(),
    );
    let doc = analyze(&test_settings(), &a, CancellationToken::new())
        .await
        .expect("analysis runs");
    write(&doc, &out).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["schema"], SCHEMA);
    assert_eq!(v["source"]["frames"], 300);
    assert_eq!(v["source"]["fps"], 25.0);
    let shots = v["shots"].as_array().unwrap();
    let starts: Vec<u64> = shots
        .iter()
        .map(|s| s["start_frame"].as_u64().unwrap())
        .collect();
    assert_eq!(starts, vec![0, 50, 100, 150, 200, 250], "{v}");
    let mut found = 0;
    for (i, shot) in shots.iter().enumerate() {
        let items = shot["items"].as_array().unwrap();
        for item in items {
            assert_eq!(item["product_id"], GROCERY_PRODUCTS[i], "shot {i}: {item}");
            let (s, e) = (
                item["start_s"].as_f64().unwrap(),
                item["end_s"].as_f64().unwrap(),
            );
            assert!(
                s >= shot["start_s"].as_f64().unwrap()
                    && e <= shot["end_s"].as_f64().unwrap() + 0.05,
                "{item}"
            );
            assert!(!item["boxes"].as_array().unwrap().is_empty());
            assert_eq!(item["product"]["id"], GROCERY_PRODUCTS[i]);
        }
        found += usize::from(!items.is_empty());
    }
    assert!(found >= 5, "products found in {found} of 6 shots: {v}");
    // Per-frame items: every sampled frame, in its shot, with confident matches of the
    // shot's product.
    let frames = v["frames"].as_array().unwrap();
    assert!(frames.len() >= 6 * 6, "{} sampled frames", frames.len());
    for f in frames {
        let shot = f["shot_id"].as_u64().unwrap() as usize;
        for item in f["items"].as_array().unwrap() {
            if item["confident"] == true {
                assert_eq!(item["product_id"], GROCERY_PRODUCTS[shot], "{f}");
            }
        }
    }
    assert_eq!(
        v["stats"]["analysed"], v["stats"]["samples"],
        "batch drops nothing"
    );
    assert_eq!(
        v["cues"].as_array().unwrap().len(),
        found.max(v["cues"].as_array().unwrap().len())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.json");
    let e = analyze(
        &test_settings(),
        &args(
            "/nonexistent/video.mp4".into(),
            grocery_catalog(),
            out.clone(),
        ),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(format!("{e:#}").contains("/nonexistent/video.mp4"), "{e:#}");
    let e = analyze(
        &test_settings(),
        &args(
            footage("grocery_shots.mp4").display().to_string(),
            dir.path().join("no-catalog"),
            out.clone(),
        ),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(format!("{e:#}").contains("no-catalog"), "{e:#}");
    assert!(!out.exists(), "nothing written on failure");
}
