//! Our SCTE-35 sections, decoded by an independent implementation: PyPI `threefive`
//! (installed by `scripts/setup.sh test`). Every field we mean to write must come back
//! as intended, and threefive's CRC must equal ours.

use std::process::Command;

use chrono::{DateTime, Utc};
use shopcue::cue::{BoxSample, Cue};
use shopcue::manifest::scte35::{self, SpliceCommand, SpliceInfoSection, SpliceInsert};
use shopcue::manifest::{CueDateRange, attr};

const DECODE: &str = r#"
import json, sys, threefive
out = []
for h in sys.stdin.read().split():
    c = threefive.Cue(h)
    c.decode()
    out.append(c.get())
print(json.dumps(out))
"#;

fn threefive(hexes: &[String]) -> Vec<serde_json::Value> {
    use std::io::Write;
    let mut child = Command::new("python3")
        .args(["-c", DECODE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(hexes.join("\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "threefive failed (install it: scripts/setup.sh test, or pip install threefive==3.1.5): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Hex the way threefive prints it: Python's `hex()` of the value, padded to whole bytes.
fn py_hex(bytes: &[u8]) -> String {
    let digits = hex::encode(bytes);
    let digits = digits.trim_start_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    if digits.len() % 2 == 1 {
        format!("0x0{digits}")
    } else {
        format!("0x{digits}")
    }
}

fn crc_hex(bytes: &[u8]) -> String {
    py_hex(&bytes[bytes.len() - 4..])
}

#[test]
fn product_cue_sections_decode_to_the_intended_fields() {
    let cases = [
        (
            "cue-0123456789abcdef",
            "sku-1",
            900_000u64,
            Some(450_000u64),
        ),
        ("cue-x", "ΣKU/ünï", (1 << 33) - 1, None),
    ];
    let sections: Vec<Vec<u8>> = cases
        .iter()
        .map(|(id, p, pts, d)| scte35::product_cue_section(id, p, *pts, *d).unwrap())
        .collect();
    let decoded = threefive(
        &sections
            .iter()
            .map(|s| scte35::to_hls_hex(s))
            .collect::<Vec<_>>(),
    );
    for (((id, product, pts, dur), bytes), j) in cases.iter().zip(&sections).zip(&decoded) {
        let info = &j["info_section"];
        assert_eq!(info["table_id"], "0xfc");
        assert_eq!(info["crc"], crc_hex(bytes), "{j}");
        assert_eq!(info["tier"], "0x0fff");
        let cmd = &j["command"];
        assert_eq!(cmd["name"], "Time Signal");
        assert_eq!(cmd["time_specified_flag"], true);
        let secs = *pts as f64 / 90_000.0;
        assert!(
            (cmd["pts_time"].as_f64().unwrap() - secs).abs() < 1e-5,
            "{cmd}"
        );
        let d = &j["descriptors"][0];
        assert_eq!(d["identifier"], "CUEI");
        assert_eq!(
            d["segmentation_event_id"],
            py_hex(&scte35::event_id(id).to_be_bytes())
        );
        assert_eq!(d["segmentation_type_id"], 0x40);
        assert_eq!(d["segmentation_message"], "Unscheduled Event Start");
        assert_eq!(d["segmentation_event_cancel_indicator"], false);
        assert_eq!(d["program_segmentation_flag"], true);
        assert_eq!(d["delivery_not_restricted_flag"], true);
        assert_eq!(d["segmentation_upid_type"], 0x0C);
        assert_eq!(d["segmentation_upid"]["format_identifier"], "SHCU", "{d}");
        assert_eq!(
            d["segmentation_upid"]["private_data"],
            py_hex(product.as_bytes())
        );
        match dur {
            Some(ticks) => {
                assert_eq!(d["segmentation_duration_flag"], true);
                assert!(
                    (d["segmentation_duration"].as_f64().unwrap() - *ticks as f64 / 90_000.0).abs()
                        < 1e-5
                );
            }
            None => assert_eq!(d["segmentation_duration_flag"], false),
        }
    }
}

/// The `SCTE35-CMD` of a rendered date range is what threefive reads.
#[test]
fn daterange_scte35_cmd_decodes() {
    let cue = Cue {
        source: Default::default(),
        id: "cue-abc".into(),
        channel: "news".into(),
        product_id: "sku-77".into(),
        start: t("2026-11-21T10:00:00.000Z"),
        end: Some(t("2026-11-21T10:00:03.250Z")),
        pts: 12.5,
        score: 0.9,
        shot: 1,
        boxes: vec![BoxSample {
            t: t("2026-11-21T10:00:00.000Z"),
            x: 0.1,
            y: 0.1,
            w: 0.2,
            h: 0.2,
        }],
        product: None,
    };
    let line = CueDateRange::freeze(&cue, true, 10.0).unwrap().render();
    let attrs = attr::parse(line.split_once(':').unwrap().1).unwrap();
    let hex = attr::get(&attrs, "SCTE35-CMD").unwrap().raw.to_string();
    assert!(
        hex.starts_with("0xFC")
            && hex[2..]
                .chars()
                .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
    );
    let j = &threefive(&[hex])[0];
    assert!((j["command"]["pts_time"].as_f64().unwrap() - 12.5).abs() < 1e-5);
    let d = &j["descriptors"][0];
    assert!((d["segmentation_duration"].as_f64().unwrap() - 3.25).abs() < 1e-5);
    assert_eq!(d["segmentation_upid"]["private_data"], py_hex(b"sku-77"));
}

/// The ad-break signals we read from origins, written by our encoder, mean the same to
/// threefive.
#[test]
fn splice_insert_out_and_in_decode() {
    let mk = |out: bool, dur: Option<u64>| SpliceInfoSection {
        pts_adjustment: 0,
        cw_index: 0xFF,
        tier: 0xFFF,
        command: SpliceCommand::Insert(SpliceInsert {
            event_id: 0x4800_008F,
            out_of_network: out,
            program_splice: true,
            immediate: false,
            pts_time: Some(0x7369_C02E),
            break_duration: dur.map(|d| (true, d)),
            ..Default::default()
        }),
        descriptors: vec![],
    };
    let sections = [
        scte35::encode(&mk(true, Some(2_700_000))).unwrap(),
        scte35::encode(&mk(false, None)).unwrap(),
    ];
    let j = threefive(
        &sections
            .iter()
            .map(|s| scte35::to_hls_hex(s))
            .collect::<Vec<_>>(),
    );
    assert_eq!(j[0]["command"]["name"], "Splice Insert");
    assert_eq!(j[0]["command"]["out_of_network_indicator"], true);
    assert!((j[0]["command"]["break_duration"].as_f64().unwrap() - 30.0).abs() < 1e-5);
    assert_eq!(j[1]["command"]["out_of_network_indicator"], false);
    for (s, d) in sections.iter().zip(&j) {
        assert_eq!(d["info_section"]["crc"], crc_hex(s));
        assert_eq!(d["command"]["splice_event_id"], 0x4800_008F);
    }
    assert_eq!(
        scte35::decode(&sections[0]).unwrap().ad_signal(),
        Some(scte35::AdSignal::Start {
            duration_s: Some(30.0)
        })
    );
    assert_eq!(
        scte35::decode(&sections[1]).unwrap().ad_signal(),
        Some(scte35::AdSignal::End)
    );
}
