//! ID3 `emsg` boxes into fMP4 segments (`manifest::emsg`). Input: the number of events and
//! their spacing in tenths of a second (2 bytes), the init segment's length (2 bytes, big
//! endian), the init segment, then the media segment.
//!
//! Checked: the output is the segment with the encoded boxes right before its first
//! `moof`; its boxes parse; each inserted `emsg` decodes to its event; the first decode
//! time is unchanged. Any `emsg` that decodes encodes back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shopcue::manifest::emsg::{
    Emsg, Id3Event, boxes, first_decode_time, insert_id3_events, tracks,
};

fuzz_target!(|data: &[u8]| {
    let [n, spacing, l0, l1, rest @ ..] = data else {
        return;
    };
    let init_len = (u16::from_be_bytes([*l0, *l1]) as usize).min(rest.len());
    let (init, segment) = rest.split_at(init_len);
    check_emsg(segment);
    check_insert(init, segment, *n as usize % 4, *spacing as f64 / 10.0);
});

fn check_emsg(data: &[u8]) {
    if let Ok(e) = Emsg::decode(data)
        && let Ok(bytes) = e.encode()
    {
        assert_eq!(Emsg::decode(&bytes).expect("our own emsg"), e);
    }
}

fn check_insert(init: &[u8], segment: &[u8], n: usize, spacing: f64) {
    let events: Vec<Id3Event> = (0..n)
        .map(|i| Id3Event {
            offset_s: spacing * i as f64,
            duration_s: (i % 2 == 0).then_some(spacing),
            id: i as u32,
            id3_tag: vec![b'I', b'D', b'3', i as u8],
        })
        .collect();
    let Ok(out) = insert_id3_events(segment, init, &events) else {
        return;
    };
    let top = boxes(&out, 0..out.len()).expect("the output's boxes parse");
    let first_moof = top.iter().position(|b| &b.kind == b"moof").expect("a moof");
    let emsgs = &top[first_moof - n..first_moof];
    for (e, b) in events.iter().zip(emsgs) {
        let decoded = Emsg::decode(&out[b.start..b.start + b.size]).expect("our emsg decodes");
        assert_eq!(decoded.id, e.id);
        assert_eq!(decoded.message_data, e.id3_tag);
    }
    let inserted: usize = emsgs.iter().map(|b| b.size).sum();
    assert_eq!(out.len(), segment.len() + inserted);
    // The same boxes around the new ones (a sidx and tfhd offsets may be patched in place).
    let before = boxes(segment, 0..segment.len()).expect("the input's boxes parse");
    let shape = |b: &[shopcue::manifest::emsg::BoxRef]| -> Vec<([u8; 4], usize)> {
        b.iter().map(|b| (b.kind, b.size)).collect()
    };
    let mut expected = shape(&before[..first_moof - n]);
    expected.extend(shape(emsgs));
    expected.extend(shape(&before[first_moof - n..]));
    assert_eq!(shape(&top), expected);
    let track = tracks(init).expect("tracks were read once");
    let video = track
        .iter()
        .find(|t| &t.handler == b"vide")
        .or(track.first())
        .unwrap();
    assert_eq!(
        first_decode_time(&out, video.track_id).ok(),
        first_decode_time(segment, video.track_id).ok(),
        "the insertion moved the first decode time"
    );
}
