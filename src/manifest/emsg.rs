//! fMP4 segments: the cue as an `emsg` box (version 1, scheme `https://aomedia.org/emsg/ID3`,
//! the ID3 tag as `message_data`, per AOM "Carriage of ID3 Timed Metadata in CMAF"),
//! inserted before the segment's first `moof`.
//!
//! Inserting bytes before a `moof` moves everything after it, so the two places that hold
//! absolute offsets are patched: a `sidx` before the `moof` (its first reference grows, or
//! its `first_offset` when the insertion lies before the first subsegment) and `tfhd`
//! `base_data_offset` when present. A segment with an `mfra` (absolute `moof` offsets in
//! `tfra`) is refused.

use super::ManifestError;

pub const ID3_SCHEME: &str = "https://aomedia.org/emsg/ID3";
/// `event_duration` meaning "unknown".
pub const UNKNOWN_DURATION: u32 = 0xFFFF_FFFF;

fn err(why: impl Into<String>) -> ManifestError {
    ManifestError::Fmp4 { why: why.into() }
}

/// One box inside a byte range: its type, where it starts, its header and total length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxRef {
    pub kind: [u8; 4],
    pub start: usize,
    pub header: usize,
    pub size: usize,
}

impl BoxRef {
    pub fn body(&self) -> std::ops::Range<usize> {
        self.start + self.header..self.start + self.size
    }
}

/// The boxes laid end to end in `data[range]`.
pub fn boxes(data: &[u8], range: std::ops::Range<usize>) -> Result<Vec<BoxRef>, ManifestError> {
    let mut out = Vec::new();
    let mut pos = range.start;
    let end = range.end.min(data.len());
    while pos < end {
        if end - pos < 8 {
            return Err(err(format!("truncated box header at byte {pos}")));
        }
        let size32 =
            u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let kind = [data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]];
        let (size, mut header) = match size32 {
            0 => (end - pos, 8),
            1 => {
                let b = data
                    .get(pos + 8..pos + 16)
                    .ok_or_else(|| err(format!("truncated largesize at byte {pos}")))?;
                let large = u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                (
                    usize::try_from(large).map_err(|_| err("box too large"))?,
                    16,
                )
            }
            s => (s, 8),
        };
        if &kind == b"uuid" {
            header += 16;
        }
        if size < header || size > end - pos {
            return Err(err(format!(
                "box {} at byte {pos} has size {size}, {} bytes left",
                String::from_utf8_lossy(&kind),
                end - pos
            )));
        }
        out.push(BoxRef {
            kind,
            start: pos,
            header,
            size,
        });
        pos += size;
    }
    Ok(out)
}

fn child(data: &[u8], parent: &BoxRef, kind: &[u8; 4]) -> Result<Option<BoxRef>, ManifestError> {
    Ok(boxes(data, parent.body())?
        .into_iter()
        .find(|b| &b.kind == kind))
}

fn be32(data: &[u8], at: usize) -> Result<u32, ManifestError> {
    data.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| err(format!("truncated field at byte {at}")))
}

fn be64(data: &[u8], at: usize) -> Result<u64, ManifestError> {
    Ok((be32(data, at)? as u64) << 32 | be32(data, at + 4)? as u64)
}

/// A DASH/CMAF event message box, version 1 (absolute presentation time).
#[derive(Debug, Clone, PartialEq)]
pub struct Emsg {
    pub timescale: u32,
    pub presentation_time: u64,
    pub event_duration: u32,
    pub id: u32,
    pub scheme_id_uri: String,
    pub value: String,
    pub message_data: Vec<u8>,
}

impl Emsg {
    /// An ID3 event: `presentation_time` in `timescale` units on the track's timeline.
    pub fn id3(
        timescale: u32,
        presentation_time: u64,
        event_duration: Option<u32>,
        id: u32,
        id3_tag: Vec<u8>,
    ) -> Self {
        Self {
            timescale,
            presentation_time,
            event_duration: event_duration.unwrap_or(UNKNOWN_DURATION),
            id,
            scheme_id_uri: ID3_SCHEME.into(),
            value: String::new(),
            message_data: id3_tag,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, ManifestError> {
        if self.scheme_id_uri.contains('\0') || self.value.contains('\0') {
            return Err(err("emsg strings must not hold NUL"));
        }
        let size = 12
            + 4
            + 8
            + 4
            + 4
            + self.scheme_id_uri.len()
            + 1
            + self.value.len()
            + 1
            + self.message_data.len();
        let size32 = u32::try_from(size).map_err(|_| ManifestError::TooLarge {
            what: "emsg box",
            bytes: size,
            limit: u32::MAX as usize,
        })?;
        let mut b = Vec::with_capacity(size);
        b.extend_from_slice(&size32.to_be_bytes());
        b.extend_from_slice(b"emsg");
        b.extend_from_slice(&[1, 0, 0, 0]);
        b.extend_from_slice(&self.timescale.to_be_bytes());
        b.extend_from_slice(&self.presentation_time.to_be_bytes());
        b.extend_from_slice(&self.event_duration.to_be_bytes());
        b.extend_from_slice(&self.id.to_be_bytes());
        b.extend_from_slice(self.scheme_id_uri.as_bytes());
        b.push(0);
        b.extend_from_slice(self.value.as_bytes());
        b.push(0);
        b.extend_from_slice(&self.message_data);
        Ok(b)
    }

    /// Parses a version-1 `emsg` box (the whole box, header included).
    pub fn decode(data: &[u8]) -> Result<Self, ManifestError> {
        let b = boxes(data, 0..data.len())?;
        let [bx] = b.as_slice() else {
            return Err(err("expected exactly one box"));
        };
        if &bx.kind != b"emsg" {
            return Err(err("not an emsg box"));
        }
        let p = bx.start + bx.header;
        if data.get(p) != Some(&1) {
            return Err(err("only emsg version 1 is read"));
        }
        let mut at = p + 4;
        let timescale = be32(data, at)?;
        let presentation_time = be64(data, at + 4)?;
        let event_duration = be32(data, at + 12)?;
        let id = be32(data, at + 16)?;
        at += 20;
        let end = bx.start + bx.size;
        let cstr = |at: &mut usize| -> Result<String, ManifestError> {
            let rel = data[*at..end]
                .iter()
                .position(|&c| c == 0)
                .ok_or_else(|| err("unterminated string"))?;
            let s = String::from_utf8_lossy(&data[*at..*at + rel]).into_owned();
            *at += rel + 1;
            Ok(s)
        };
        let scheme_id_uri = cstr(&mut at)?;
        let value = cstr(&mut at)?;
        Ok(Self {
            timescale,
            presentation_time,
            event_duration,
            id,
            scheme_id_uri,
            value,
            message_data: data[at..end].to_vec(),
        })
    }
}

/// A track of an init segment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackInfo {
    pub track_id: u32,
    pub timescale: u32,
    /// `vide`, `soun`...
    pub handler: [u8; 4],
}

/// The tracks of an init segment (`moov/trak/{tkhd, mdia/{mdhd, hdlr}}`).
pub fn tracks(init: &[u8]) -> Result<Vec<TrackInfo>, ManifestError> {
    let top = boxes(init, 0..init.len())?;
    let moov = top
        .iter()
        .find(|b| &b.kind == b"moov")
        .ok_or_else(|| err("no moov in the init segment"))?;
    let mut out = Vec::new();
    for trak in boxes(init, moov.body())?
        .iter()
        .filter(|b| &b.kind == b"trak")
    {
        let tkhd = child(init, trak, b"tkhd")?.ok_or_else(|| err("trak without tkhd"))?;
        let p = tkhd.start + tkhd.header;
        let version = *init.get(p).ok_or_else(|| err("empty tkhd"))?;
        let track_id = be32(init, p + 4 + if version == 1 { 16 } else { 8 })?;
        let mdia = child(init, trak, b"mdia")?.ok_or_else(|| err("trak without mdia"))?;
        let mdhd = child(init, &mdia, b"mdhd")?.ok_or_else(|| err("mdia without mdhd"))?;
        let p = mdhd.start + mdhd.header;
        let version = *init.get(p).ok_or_else(|| err("empty mdhd"))?;
        let timescale = be32(init, p + 4 + if version == 1 { 16 } else { 8 })?;
        let hdlr = child(init, &mdia, b"hdlr")?.ok_or_else(|| err("mdia without hdlr"))?;
        let h = hdlr.start + hdlr.header + 8;
        let handler = init.get(h..h + 4).ok_or_else(|| err("truncated hdlr"))?;
        out.push(TrackInfo {
            track_id,
            timescale,
            handler: [handler[0], handler[1], handler[2], handler[3]],
        });
    }
    Ok(out)
}

/// The base media decode time (`tfdt`) of `track_id` in the segment's first `moof`.
pub fn first_decode_time(segment: &[u8], track_id: u32) -> Result<u64, ManifestError> {
    let top = boxes(segment, 0..segment.len())?;
    let moof = top
        .iter()
        .find(|b| &b.kind == b"moof")
        .ok_or_else(|| err("no moof"))?;
    for traf in boxes(segment, moof.body())?
        .iter()
        .filter(|b| &b.kind == b"traf")
    {
        let tfhd = child(segment, traf, b"tfhd")?.ok_or_else(|| err("traf without tfhd"))?;
        if be32(segment, tfhd.start + tfhd.header + 4)? != track_id {
            continue;
        }
        let tfdt = child(segment, traf, b"tfdt")?.ok_or_else(|| err("traf without tfdt"))?;
        let p = tfdt.start + tfdt.header;
        return if segment.get(p) == Some(&1) {
            be64(segment, p + 4)
        } else {
            Ok(be32(segment, p + 4)? as u64)
        };
    }
    Err(err(format!(
        "no traf for track {track_id} in the first moof"
    )))
}

/// Grows the `sidx` (before the insertion point `at`, so at the same place in `out`) for
/// `n` bytes inserted at `at`: its `first_offset` when they lie before the first
/// subsegment, else its first reference's `referenced_size`. Every field read or written
/// must lie inside the box, or the patch would land in the boxes after it.
fn patch_sidx(out: &mut [u8], sidx: &BoxRef, at: usize, n: usize) -> Result<(), ManifestError> {
    let p = sidx.start + sidx.header;
    let end = sidx.start + sidx.size;
    let version = *out.get(p).ok_or_else(|| err("empty sidx"))?;
    let wide = if version == 1 { 8 } else { 4 };
    let off_at = p + 4 + 8 + wide;
    let count_at = off_at + wide + 2;
    if count_at + 2 > end {
        return Err(err(format!(
            "sidx of {} bytes too short for its fields",
            sidx.size
        )));
    }
    let first_offset = if version == 1 {
        be64(out, off_at)?
    } else {
        be32(out, off_at)? as u64
    };
    let count = u16::from_be_bytes([out[count_at], out[count_at + 1]]);
    // Both in 64 bits from the file: a first_offset near 2^64 must not overflow.
    let first_subsegment = (end as u64).saturating_add(first_offset);
    if (at as u64) < first_subsegment {
        let v = first_offset
            .checked_add(n as u64)
            .ok_or_else(|| err("sidx first_offset overflows"))?;
        if version == 1 {
            out[off_at..off_at + 8].copy_from_slice(&v.to_be_bytes());
        } else {
            let v = u32::try_from(v).map_err(|_| err("sidx first_offset overflows"))?;
            out[off_at..off_at + 4].copy_from_slice(&v.to_be_bytes());
        }
    } else if count > 0 {
        // The first reference: referenced_size (31 bits), duration, SAP fields.
        let r = count_at + 2;
        if r + 12 > end {
            return Err(err(format!(
                "sidx of {} bytes too short for its first reference",
                sidx.size
            )));
        }
        let word = be32(out, r)?;
        let size = (word & 0x7FFF_FFFF) as u64 + n as u64;
        if size > 0x7FFF_FFFF {
            return Err(err("sidx referenced_size overflows"));
        }
        out[r..r + 4].copy_from_slice(&((word & 0x8000_0000) | size as u32).to_be_bytes());
    }
    Ok(())
}

/// `segment` with `emsgs` inserted right before its first `moof`, offsets patched.
pub fn insert_before_first_moof(segment: &[u8], emsgs: &[Emsg]) -> Result<Vec<u8>, ManifestError> {
    let mut inserted = Vec::new();
    for e in emsgs {
        inserted.extend(e.encode()?);
    }
    let n = inserted.len();
    let top = boxes(segment, 0..segment.len())?;
    if top.iter().any(|b| &b.kind == b"mfra") {
        return Err(err(
            "segments with an mfra box are not supported (absolute moof offsets)",
        ));
    }
    let moof_idx = top
        .iter()
        .position(|b| &b.kind == b"moof")
        .ok_or_else(|| err("no moof"))?;
    let at = top[moof_idx].start;
    let mut out = Vec::with_capacity(segment.len() + n);
    out.extend_from_slice(&segment[..at]);
    out.extend_from_slice(&inserted);
    out.extend_from_slice(&segment[at..]);
    if n == 0 {
        return Ok(out);
    }
    // A sidx before the moof: its references are measured from its end (+ first_offset).
    if let Some(sidx) = top[..moof_idx].iter().rev().find(|b| &b.kind == b"sidx") {
        patch_sidx(&mut out, sidx, at, n)?;
    }
    // Absolute base_data_offsets in every tfhd after the insertion point.
    let shifted = boxes(&out, 0..out.len())?;
    for moof in shifted
        .iter()
        .filter(|b| &b.kind == b"moof" && b.start >= at)
    {
        for traf in boxes(&out, moof.body())?
            .iter()
            .filter(|b| &b.kind == b"traf")
        {
            if let Some(tfhd) = child(&out, traf, b"tfhd")? {
                let p = tfhd.start + tfhd.header;
                let flags = be32(&out, p)? & 0x00FF_FFFF;
                if flags & 0x1 != 0 {
                    // The field must lie inside the tfhd, or the patch would write over
                    // the box after it.
                    if p + 16 > tfhd.start + tfhd.size {
                        return Err(err("tfhd too short for its base_data_offset"));
                    }
                    let v = be64(&out, p + 8)?
                        .checked_add(n as u64)
                        .ok_or_else(|| err("base_data_offset overflows"))?;
                    out[p + 8..p + 16].copy_from_slice(&v.to_be_bytes());
                }
            }
        }
    }
    Ok(out)
}

/// A cue's ID3 tag, at `offset_s` seconds after the segment's start (its first `tfdt`).
#[derive(Debug, Clone, PartialEq)]
pub struct Id3Event {
    pub offset_s: f64,
    pub duration_s: Option<f64>,
    pub id: u32,
    pub id3_tag: Vec<u8>,
}

/// Inserts one ID3 `emsg` per event before the first `moof`, timed on the video track
/// (else the first track) of `init`.
pub fn insert_id3_events(
    segment: &[u8],
    init: &[u8],
    events: &[Id3Event],
) -> Result<Vec<u8>, ManifestError> {
    let tracks = tracks(init)?;
    let track = tracks
        .iter()
        .find(|t| &t.handler == b"vide")
        .or_else(|| tracks.first())
        .ok_or_else(|| err("init segment has no track"))?;
    if track.timescale == 0 {
        return Err(err("track timescale is 0"));
    }
    let base = first_decode_time(segment, track.track_id)?;
    let ts = track.timescale as f64;
    let emsgs: Vec<Emsg> = events
        .iter()
        .map(|e| {
            let offset = if e.offset_s.is_finite() && e.offset_s > 0.0 {
                (e.offset_s * ts).round() as u64
            } else {
                0
            };
            let duration = e
                .duration_s
                .filter(|d| d.is_finite() && *d >= 0.0)
                .map(|d| (d * ts).round().min((UNKNOWN_DURATION - 1) as f64) as u32);
            Emsg::id3(
                track.timescale,
                base.saturating_add(offset),
                duration,
                e.id,
                e.id3_tag.clone(),
            )
        })
        .collect();
    insert_before_first_moof(segment, &emsgs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(body);
        b
    }

    fn full(kind: &[u8; 4], version: u8, flags: u32, body: &[u8]) -> Vec<u8> {
        let mut b = vec![version];
        b.extend_from_slice(&flags.to_be_bytes()[1..]);
        b.extend_from_slice(body);
        bx(kind, &b)
    }

    /// A small init segment: one video track (id 1, timescale 90000).
    pub(crate) fn init() -> Vec<u8> {
        let mut tkhd = vec![0u8; 8];
        tkhd.extend_from_slice(&1u32.to_be_bytes());
        tkhd.extend_from_slice(&[0u8; 68]);
        let mut mdhd = vec![0u8; 8];
        mdhd.extend_from_slice(&90_000u32.to_be_bytes());
        mdhd.extend_from_slice(&[0u8; 8]);
        let mut hdlr = vec![0u8; 4];
        hdlr.extend_from_slice(b"vide");
        hdlr.extend_from_slice(&[0u8; 13]);
        let mdia = [full(b"mdhd", 0, 0, &mdhd), full(b"hdlr", 0, 0, &hdlr)].concat();
        let trak = [full(b"tkhd", 0, 3, &tkhd), bx(b"mdia", &mdia)].concat();
        [
            bx(b"ftyp", b"iso6\0\0\0\0"),
            bx(b"moov", &bx(b"trak", &trak)),
        ]
        .concat()
    }

    /// styp, sidx (1 reference), moof (tfhd with base_data_offset, tfdt v1), mdat.
    fn segment(base_data_offset: bool) -> (Vec<u8>, usize) {
        let mut tfhd = 1u32.to_be_bytes().to_vec();
        if base_data_offset {
            tfhd.extend_from_slice(&1000u64.to_be_bytes());
        }
        let traf = [
            full(b"tfhd", 0, base_data_offset as u32, &tfhd),
            full(b"tfdt", 1, 0, &900_000u64.to_be_bytes()),
        ]
        .concat();
        let moof = bx(b"moof", &bx(b"traf", &traf));
        let mdat = bx(b"mdat", &[0u8; 16]);
        let subsegment = moof.len() + mdat.len();
        let mut sidx = 1u32.to_be_bytes().to_vec();
        sidx.extend_from_slice(&90_000u32.to_be_bytes());
        sidx.extend_from_slice(&0u32.to_be_bytes());
        sidx.extend_from_slice(&0u32.to_be_bytes()); // first_offset
        sidx.extend_from_slice(&[0, 0, 0, 1]); // reserved, reference_count 1
        sidx.extend_from_slice(&(subsegment as u32).to_be_bytes());
        sidx.extend_from_slice(&[0, 1, 0x5F, 0x90, 0x90, 0, 0, 0]);
        (
            [
                bx(b"styp", b"msdh\0\0\0\0"),
                full(b"sidx", 0, 0, &sidx),
                moof,
                mdat,
            ]
            .concat(),
            subsegment,
        )
    }

    #[test]
    fn emsg_golden_bytes_and_round_trip() {
        let e = Emsg::id3(90_000, 900_000, Some(45_000), 7, b"ID3".to_vec());
        let bytes = e.encode().unwrap();
        let mut expected = vec![0, 0, 0, 0x41];
        expected.extend_from_slice(b"emsg\x01\x00\x00\x00");
        expected.extend_from_slice(&[0, 1, 0x5F, 0x90]); // timescale 90000
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0x0D, 0xBB, 0xA0]); // 900000
        expected.extend_from_slice(&[0, 0, 0xAF, 0xC8]); // 45000
        expected.extend_from_slice(&[0, 0, 0, 7]);
        expected.extend_from_slice(b"https://aomedia.org/emsg/ID3\0\0ID3");
        assert_eq!(bytes, expected);
        assert_eq!(Emsg::decode(&bytes).unwrap(), e);
    }

    #[test]
    fn inserts_before_moof_and_patches_sidx_and_tfhd() {
        let (seg, subsegment) = segment(true);
        let init = init();
        assert_eq!(
            tracks(&init).unwrap(),
            vec![TrackInfo {
                track_id: 1,
                timescale: 90_000,
                handler: *b"vide"
            }]
        );
        assert_eq!(first_decode_time(&seg, 1).unwrap(), 900_000);
        let tag = b"ID3\x04\0\0\0\0\0\0".to_vec();
        let out = insert_id3_events(
            &seg,
            &init,
            &[Id3Event {
                offset_s: 1.5,
                duration_s: Some(2.0),
                id: 9,
                id3_tag: tag.clone(),
            }],
        )
        .unwrap();
        let top = boxes(&out, 0..out.len()).unwrap();
        let kinds: Vec<_> = top
            .iter()
            .map(|b| String::from_utf8_lossy(&b.kind).into_owned())
            .collect();
        assert_eq!(kinds, ["styp", "sidx", "emsg", "moof", "mdat"]);
        let emsg = Emsg::decode(&out[top[2].start..top[2].start + top[2].size]).unwrap();
        assert_eq!(emsg.presentation_time, 900_000 + 135_000);
        assert_eq!(emsg.event_duration, 180_000);
        assert_eq!(emsg.message_data, tag);
        let n = top[2].size;
        // sidx's only reference now spans emsg + moof + mdat.
        let sidx = top[1];
        let r = sidx.start + sidx.header + 4 + 8 + 8 + 4;
        assert_eq!(be32(&out, r).unwrap() as usize, subsegment + n);
        // tfhd base_data_offset moved by the inserted bytes.
        let moof = top[3];
        let traf = boxes(&out, moof.body()).unwrap()[0];
        let tfhd = boxes(&out, traf.body()).unwrap()[0];
        assert_eq!(
            be64(&out, tfhd.start + tfhd.header + 8).unwrap(),
            1000 + n as u64
        );
    }

    #[test]
    fn errors_are_typed() {
        assert!(matches!(
            insert_before_first_moof(b"\0\0\0\x08ftyp", &[]),
            Err(ManifestError::Fmp4 { .. })
        ));
        assert!(insert_before_first_moof(b"\0\0\0\x09ftyp", &[]).is_err());
        assert!(insert_before_first_moof(b"abc", &[]).is_err());
        let (seg, _) = segment(false);
        let with_mfra = [seg.clone(), bx(b"mfra", &[])].concat();
        assert!(insert_before_first_moof(&with_mfra, &[]).is_err());
        assert!(first_decode_time(&seg, 2).is_err());
        assert!(tracks(&seg).is_err());
    }

    /// Found by the `emsg_insert` fuzz target: a tfhd whose flags announce a
    /// base_data_offset it has no room for; the patch wrote over the tfdt after it.
    #[test]
    fn short_tfhd_is_refused_not_patched_past_its_end() {
        let segment = [
            0x00, 0x00, 0x00, 0x10, 0x73, 0x74, 0x79, 0x70, 0x6D, 0x73, 0x64, 0x68, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x34, 0x73, 0x69, 0x64, 0x78, 0x01, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x5F, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
            0x00, 0x00, 0x00, 0x4C, 0x00, 0x01, 0x5F, 0x90, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x34, 0x6D, 0x6F, 0x6F, 0x66, 0x00, 0x00, 0x00, 0x2C, 0x74, 0x72, 0x61, 0x66,
            0x00, 0x00, 0x00, 0x10, 0x74, 0x66, 0x68, 0x64, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00,
            0x00, 0x01, 0x00, 0x00, 0x00, 0x14, 0x74, 0x66, 0x64, 0x74, 0x05, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0D,
            0xBB, 0xA0, 0x00, 0x00, 0x00, 0x18, 0x6D, 0x64, 0x61, 0x74, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        let event = Id3Event {
            offset_s: 0.0,
            duration_s: Some(0.0),
            id: 0,
            id3_tag: b"ID3\0".to_vec(),
        };
        assert!(matches!(
            insert_id3_events(&segment, &init(), &[event]),
            Err(ManifestError::Fmp4 { .. })
        ));
    }

    /// Found by the earlier fuzzing attempt: a version-1 sidx whose first_offset puts the
    /// first subsegment past 2^64 overflowed the offset arithmetic.
    #[test]
    fn sidx_first_offset_near_u64_max_does_not_overflow() {
        let traf = [
            full(b"tfhd", 0, 0, &1u32.to_be_bytes()),
            full(b"tfdt", 1, 0, &0u64.to_be_bytes()),
        ]
        .concat();
        let moof = bx(b"moof", &bx(b"traf", &traf));
        let mut sidx = 1u32.to_be_bytes().to_vec();
        sidx.extend_from_slice(&90_000u32.to_be_bytes());
        sidx.extend_from_slice(&0u64.to_be_bytes()); // earliest_presentation_time
        sidx.extend_from_slice(&(u64::MAX - 8).to_be_bytes()); // first_offset
        sidx.extend_from_slice(&[0, 0, 0, 1]);
        sidx.extend_from_slice(&[0, 0, 0, 64, 0, 0, 0, 0, 0x90, 0, 0, 0]);
        let seg = [full(b"sidx", 1, 0, &sidx), moof, bx(b"mdat", &[0; 8])].concat();
        let e = Emsg::id3(90_000, 0, None, 1, b"ID3".to_vec());
        assert!(matches!(
            insert_before_first_moof(&seg, &[e]),
            Err(ManifestError::Fmp4 { .. })
        ));
    }

    /// Found by the `emsg_insert` fuzz target (a smoke run with a random seed): a `sidx`
    /// of 12 bytes, its version and flags only, before an `ftyp` and a `moov`. The patch
    /// read `first_offset` and `reference_count` from the boxes after it and grew the
    /// "first reference" there, over the `moov`'s type. A sidx too short for its fields
    /// (or for its first reference) is refused.
    #[test]
    fn short_sidx_is_refused_not_patched_past_its_end() {
        let (seg, _) = segment(false);
        let top = boxes(&seg, 0..seg.len()).unwrap();
        let (styp, moof_on) = (&seg[..top[1].start], &seg[top[2].start..]);
        let e = Emsg::id3(90_000, 0, None, 1, b"ID3".to_vec());
        let short = [
            styp,
            &full(b"sidx", 3, 0x14_00C5, &[])[..],
            &bx(b"ftyp", b"iso6\0\0\0\0")[..],
            &bx(b"moov", &[0; 8])[..],
            moof_on,
        ]
        .concat();
        match insert_before_first_moof(&short, std::slice::from_ref(&e)) {
            Err(ManifestError::Fmp4 { why }) => assert!(why.contains("sidx"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Its fields, but no room for the reference it counts.
        let mut fields = 1u32.to_be_bytes().to_vec();
        fields.extend_from_slice(&90_000u32.to_be_bytes());
        fields.extend_from_slice(&[0; 8]); // earliest_presentation_time, first_offset
        fields.extend_from_slice(&[0, 0, 0, 1]); // reference_count 1
        let no_reference = [styp, &full(b"sidx", 0, 0, &fields)[..], moof_on].concat();
        assert!(matches!(
            insert_before_first_moof(&no_reference, &[e]),
            Err(ManifestError::Fmp4 { .. })
        ));
    }

    /// An init segment with an audio track (id 2, mdhd v0, 48000) before a video track
    /// (id 7, tkhd and mdhd version 1, timescale 12800), written out byte by byte.
    fn two_track_init() -> Vec<u8> {
        let trak = |version: u8, track_id: u32, timescale: u32, handler: &[u8; 4]| {
            // tkhd: v1 has 64-bit creation/modification times before track_ID.
            let mut tkhd = vec![0u8; if version == 1 { 16 } else { 8 }];
            tkhd.extend_from_slice(&track_id.to_be_bytes());
            tkhd.extend_from_slice(&[0u8; 60]);
            let mut mdhd = vec![0u8; if version == 1 { 16 } else { 8 }];
            mdhd.extend_from_slice(&timescale.to_be_bytes());
            mdhd.extend_from_slice(&[0u8; 12]);
            let mut hdlr = vec![0u8; 4];
            hdlr.extend_from_slice(handler);
            hdlr.extend_from_slice(&[0u8; 13]);
            let mdia = [
                full(b"mdhd", version, 0, &mdhd),
                full(b"hdlr", 0, 0, &hdlr),
                bx(b"minf", &[]),
            ]
            .concat();
            bx(
                b"trak",
                &[full(b"tkhd", version, 3, &tkhd), bx(b"mdia", &mdia)].concat(),
            )
        };
        let moov = [
            full(b"mvhd", 0, 0, &[0u8; 96]),
            trak(0, 2, 48_000, b"soun"),
            trak(1, 7, 12_800, b"vide"),
        ]
        .concat();
        [bx(b"ftyp", b"iso6\0\0\0\0"), bx(b"moov", &moov)].concat()
    }

    #[test]
    fn timescale_and_tfdt_are_read_from_exact_bytes() {
        let init = two_track_init();
        // mdhd v1 of the video track: 12800 = 0x00003200 after 16 bytes of times.
        let at = init.windows(4).rposition(|w| w == b"mdhd").unwrap();
        assert_eq!(init[at + 4], 1, "mdhd version 1");
        assert_eq!(&init[at + 8 + 16..at + 8 + 20], &[0, 0, 0x32, 0]);
        assert_eq!(
            tracks(&init).unwrap(),
            vec![
                TrackInfo {
                    track_id: 2,
                    timescale: 48_000,
                    handler: *b"soun"
                },
                TrackInfo {
                    track_id: 7,
                    timescale: 12_800,
                    handler: *b"vide"
                },
            ]
        );
        // A moof with the audio traf first (tfdt v1) and the video traf (tfdt v0).
        let traf = |id: u32, tfdt: Vec<u8>| {
            bx(
                b"traf",
                &[full(b"tfhd", 0, 0x2_0000, &id.to_be_bytes()), tfdt].concat(),
            )
        };
        let seg = [
            bx(b"styp", b"msdh\0\0\0\0"),
            bx(
                b"moof",
                &[
                    full(b"mfhd", 0, 0, &1u32.to_be_bytes()),
                    traf(2, full(b"tfdt", 1, 0, &(5u64 << 32).to_be_bytes())),
                    traf(7, full(b"tfdt", 0, 0, &[0, 0x01, 0x90, 0x00])),
                ]
                .concat(),
            ),
            bx(b"mdat", &[1, 2, 3]),
        ]
        .concat();
        assert_eq!(first_decode_time(&seg, 7).unwrap(), 0x0001_9000);
        assert_eq!(first_decode_time(&seg, 2).unwrap(), 5u64 << 32);
        // Timed on the video track: 102400 + 0.5 s × 12800.
        let out = insert_id3_events(
            &seg,
            &init,
            &[Id3Event {
                offset_s: 0.5,
                duration_s: None,
                id: 0x0102_0304,
                id3_tag: vec![0xAB],
            }],
        )
        .unwrap();
        // Right after the 16-byte styp, before the moof.
        let mut expected = vec![0, 0, 0, 0x3F];
        expected.extend_from_slice(b"emsg\x01\0\0\0");
        expected.extend_from_slice(&[0, 0, 0x32, 0]); // timescale 12800
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0x01, 0xA9, 0x00]); // 102400 + 6400
        expected.extend_from_slice(&[0xFF; 4]); // unknown duration
        expected.extend_from_slice(&[1, 2, 3, 4]);
        expected.extend_from_slice(b"https://aomedia.org/emsg/ID3\0\0");
        expected.push(0xAB);
        assert_eq!(&out[16..16 + expected.len()], expected.as_slice());
        assert_eq!(&out[..16], &seg[..16]);
        assert_eq!(&out[16 + expected.len()..], &seg[16..]);
    }

    proptest::proptest! {
        /// Valid boxes with bytes flipped (sizes, versions, offsets): errors, never panics.
        #[test]
        fn corrupted_boxes_never_panic(
            flips in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 1..6),
            cut in 0usize..400,
        ) {
            let mut init = two_track_init();
            let (mut seg, _) = segment(true);
            for &(at, v) in &flips {
                let n = init.len();
                init[at % n] = v;
                let n = seg.len();
                seg[at % n] ^= v;
            }
            let event = Id3Event { offset_s: 1.0, duration_s: Some(1.0), id: 1, id3_tag: vec![0; 4] };
            let _ = insert_id3_events(&seg, &init, std::slice::from_ref(&event));
            let _ = insert_id3_events(&seg[..cut.min(seg.len())], &init[..cut.min(init.len())], &[event]);
            let _ = tracks(&init);
            let _ = first_decode_time(&seg, 1);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = insert_before_first_moof(&data, &[Emsg::id3(1, 0, None, 0, vec![])]);
            let _ = tracks(&data);
            let _ = first_decode_time(&data, 1);
            let _ = Emsg::decode(&data);
        }
    }
}
