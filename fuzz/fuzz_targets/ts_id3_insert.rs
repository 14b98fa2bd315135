//! ID3 timed metadata into MPEG-TS segments (`manifest::ts`), and LL-HLS parts cut from
//! them. Input: 3 bytes of parameters (number of samples, their spacing in tenths of a
//! second, part duration in tenths), then the segment.
//!
//! Checked: the output is whole packets, as long as the report says (packets added less
//! the origin's PMT packets replaced), and carries every
//! inserted tag at the PTS the report gives; the parts cover the segment exactly, in order,
//! with finite non-negative durations.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shopcue::manifest::crc32_mpeg2;
use shopcue::manifest::id3::{Id3Frame, encode_tag};
use shopcue::manifest::ts::{
    MetadataSample, PACKET, insert_timed_metadata, read_timed_metadata, split_parts,
};

fuzz_target!(|data: &[u8]| {
    let [n, spacing, part, segment @ ..] = data else {
        return;
    };
    // Mutations break the PSI sections' CRC-32 almost always: put it right, so the fuzzer
    // gets past the PAT and PMT.
    let segment = &with_good_crcs(segment);
    check_insert(segment, *n as usize % 4, *spacing as f64 / 10.0);
    check_parts(segment, *part as f64 / 10.0);
});

fn check_insert(segment: &[u8], n: usize, spacing: f64) {
    let samples: Vec<MetadataSample> = (0..n)
        .map(|i| MetadataSample {
            offset_s: spacing * i as f64,
            id3_tag: encode_tag(&[Id3Frame::Txxx {
                description: "shopcue".into(),
                value: format!("sample {i}"),
            }])
            .unwrap(),
        })
        .collect();
    let Ok((out, report)) = insert_timed_metadata(segment, &samples) else {
        return;
    };
    assert_eq!(out.len() % PACKET, 0);
    assert_eq!(report.sample_pts.len(), n);
    assert_eq!(
        out.len() + report.packets_replaced * PACKET,
        segment.len() + report.packets_added * PACKET,
        "{report:?}"
    );
    // `read_timed_metadata` reads the first PAT only, where insertion looks further: check
    // the output when the input reads.
    if read_timed_metadata(segment).is_err() {
        return;
    }
    let read = read_timed_metadata(&out).expect("the output reads as the input did");
    for (s, pts) in samples.iter().zip(&report.sample_pts) {
        assert!(
            read.iter().any(|(p, tag)| p == pts && *tag == s.id3_tag),
            "sample at PTS {pts} missing from {read:?}"
        );
    }
}

fn check_parts(segment: &[u8], part_secs: f64) {
    let Ok(parts) = split_parts(segment, 6.0, part_secs) else {
        return;
    };
    let mut at = 0;
    for p in &parts {
        assert_eq!(p.range.start, at, "parts leave a gap or overlap: {parts:?}");
        assert!(p.range.end >= p.range.start);
        assert!(p.duration.is_finite() && p.duration >= 0.0, "{parts:?}");
        at = p.range.end;
    }
    assert_eq!(
        at,
        segment.len() / PACKET * PACKET,
        "parts do not cover the segment"
    );
}

/// The segment with the CRC-32 of every PAT or PMT section that fits in its packet put right.
fn with_good_crcs(segment: &[u8]) -> Vec<u8> {
    let mut out = segment.to_vec();
    for p in out.chunks_exact_mut(PACKET) {
        let pusi = p[1] & 0x40 != 0;
        let payload_only = (p[3] >> 4) & 0x3 == 0x1;
        if !(p[0] == 0x47 && pusi && payload_only) {
            continue;
        }
        let start = 5 + p[4] as usize;
        if start + 3 > PACKET || !matches!(p[start], 0x00 | 0x02) {
            continue;
        }
        let len = (u16::from_be_bytes([p[start + 1], p[start + 2]]) & 0x0FFF) as usize;
        let end = start + 3 + len;
        if len < 4 || end > PACKET {
            continue;
        }
        let crc = crc32_mpeg2(&p[start..end - 4]);
        p[end - 4..end].copy_from_slice(&crc.to_be_bytes());
    }
    out
}
