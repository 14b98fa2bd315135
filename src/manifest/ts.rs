//! MPEG-TS segments: the cue as ID3 timed metadata, per Apple's "Timed Metadata for HTTP
//! Live Streaming": an elementary stream of `stream_type` 0x15 (metadata in PES) whose PES
//! packets (`stream_id` 0xBD, `data_alignment_indicator` set, a PTS) carry ID3 tags, declared
//! in the PMT with a `metadata_pointer_descriptor` (tag 0x25) in the program info and a
//! `metadata_descriptor` (tag 0x26) in the stream's ES info, both naming the format `ID3 `.
//!
//! The PMT gets the new stream on a free PID (its `version_number` + 1, CRC recomputed);
//! when the origin already carries an ID3 stream, its PID is reused and the PMT left alone
//! (hls.js reads only the first ID3 stream). The ID3 PES packets go right after the first
//! PMT, with PTS = the segment's first video PTS + the cue's offset in the segment.
//! Continuity counters of the PMT PID and the ID3 PID are renumbered in output order, so
//! they stay continuous; every other packet is copied byte for byte.
//!
//! Pass every segment of a channel through (even with no samples) so players see the same
//! PMT in every segment.

use super::ManifestError;
use super::bits::crc32_mpeg2;

pub const PACKET: usize = 188;
pub const STREAM_TYPE_METADATA: u8 = 0x15;
pub const STREAM_ID_PRIVATE_1: u8 = 0xBD;
const ID3_FORMAT: [u8; 4] = *b"ID3 ";
const PTS_MASK: u64 = (1 << 33) - 1;
/// The largest ID3 tag one PES packet holds (PES_packet_length is 16 bits).
pub const MAX_ID3_BYTES: usize = 0xFFFF - 8;
/// PIDs 0x0000..=0x000F are for PSI (PAT, CAT, ...); 0x1FFF is the null packets'.
const LAST_RESERVED_PID: u16 = 0x000F;
const NULL_PID: u16 = 0x1FFF;
const VIDEO_STREAM_TYPES: [u8; 8] = [0x01, 0x02, 0x10, 0x1B, 0x20, 0x24, 0x42, 0xD1];

fn err(why: impl Into<String>) -> ManifestError {
    ManifestError::Ts { why: why.into() }
}

/// One ID3 tag to carry, `offset_s` seconds after the segment's first video PTS.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataSample {
    pub offset_s: f64,
    pub id3_tag: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TsInsertReport {
    pub pmt_pid: u16,
    pub id3_pid: u16,
    /// Whether the origin already had an ID3 stream (PMT then unchanged).
    pub reused_origin_stream: bool,
    /// First video PTS of the segment (90 kHz), the base of the samples' PTS.
    pub first_pts: u64,
    /// PTS given to each sample, in order.
    pub sample_pts: Vec<u64>,
    /// Packets written that the origin did not have: the new PMT's and the ID3 PES.
    pub packets_added: usize,
    /// The origin's PMT packets that the new PMT replaced. The output is
    /// `packets_added - packets_replaced` packets longer than the input (possibly shorter).
    pub packets_replaced: usize,
}

#[derive(Debug, Clone, Copy)]
struct Packet<'a> {
    raw: &'a [u8],
    pid: u16,
    pusi: bool,
    has_payload: bool,
    cc: u8,
    payload: &'a [u8],
}

fn packets(data: &[u8]) -> Result<Vec<Packet<'_>>, ManifestError> {
    if data.is_empty() || !data.len().is_multiple_of(PACKET) {
        return Err(err(format!(
            "{} bytes is not a whole number of 188-byte packets",
            data.len()
        )));
    }
    let mut out = Vec::with_capacity(data.len() / PACKET);
    for (i, raw) in data.chunks_exact(PACKET).enumerate() {
        if raw[0] != 0x47 {
            return Err(err(format!(
                "no sync byte at packet {i} (byte {})",
                i * PACKET
            )));
        }
        let pid = u16::from_be_bytes([raw[1] & 0x1F, raw[2]]);
        let afc = (raw[3] >> 4) & 0x3;
        let mut start = 4;
        if afc & 0x2 != 0 {
            start = 5 + raw[4] as usize;
        }
        let payload = if afc & 0x1 != 0 && start <= PACKET {
            &raw[start..]
        } else {
            &raw[PACKET..]
        };
        out.push(Packet {
            raw,
            pid,
            pusi: raw[1] & 0x40 != 0,
            has_payload: afc & 0x1 != 0,
            cc: raw[3] & 0x0F,
            payload,
        });
    }
    Ok(out)
}

/// The PSI section starting in packet `i` (a PUSI packet of `pid`), reassembled across the
/// following packets of the PID; returns the section and the index of its last packet.
fn section_at(pk: &[Packet], i: usize) -> Result<(Vec<u8>, usize), ManifestError> {
    let first = pk[i];
    let pointer = *first
        .payload
        .first()
        .ok_or_else(|| err(format!("PSI packet {i} without payload")))? as usize;
    let mut buf = first
        .payload
        .get(1 + pointer..)
        .ok_or_else(|| err(format!("pointer_field past packet {i}")))?
        .to_vec();
    let mut last = i;
    let needed = |buf: &Vec<u8>| {
        (buf.len() >= 3).then(|| 3 + (u16::from_be_bytes([buf[1] & 0x0F, buf[2]]) as usize))
    };
    let mut j = i + 1;
    while needed(&buf).is_none_or(|n| buf.len() < n) {
        let next = pk[j..]
            .iter()
            .position(|p| p.pid == first.pid && p.has_payload)
            .map(|k| j + k)
            .ok_or_else(|| err(format!("PSI section on PID {} truncated", first.pid)))?;
        if pk[next].pusi {
            return Err(err(format!("PSI section on PID {} interrupted", first.pid)));
        }
        buf.extend_from_slice(pk[next].payload);
        last = next;
        j = next + 1;
    }
    let n = needed(&buf).unwrap_or(0);
    buf.truncate(n);
    if crc32_mpeg2(&buf) != 0 {
        return Err(err(format!(
            "bad CRC in the PSI section on PID {}",
            first.pid
        )));
    }
    Ok((buf, last))
}

#[derive(Debug, Clone)]
struct Pmt {
    program_number: u16,
    version: u8,
    pcr_pid: u16,
    program_info: Vec<u8>,
    /// (stream_type, pid, raw entry bytes)
    streams: Vec<(u8, u16, Vec<u8>)>,
}

fn parse_pmt(s: &[u8]) -> Result<Pmt, ManifestError> {
    if s.len() < 16 || s[0] != 0x02 {
        return Err(err("not a PMT section"));
    }
    let program_number = u16::from_be_bytes([s[3], s[4]]);
    let version = (s[5] >> 1) & 0x1F;
    let pcr_pid = u16::from_be_bytes([s[8] & 0x1F, s[9]]);
    let pil = u16::from_be_bytes([s[10] & 0x0F, s[11]]) as usize;
    let body_end = s.len() - 4;
    let program_info = s
        .get(12..12 + pil)
        .filter(|_| 12 + pil <= body_end)
        .ok_or_else(|| err("program_info runs past the PMT"))?
        .to_vec();
    let mut streams = Vec::new();
    let mut p = 12 + pil;
    while p < body_end {
        let e = s
            .get(p..p + 5)
            .filter(|_| p + 5 <= body_end)
            .ok_or_else(|| err("truncated PMT stream entry"))?;
        let len = u16::from_be_bytes([e[3] & 0x0F, e[4]]) as usize;
        let raw = s
            .get(p..p + 5 + len)
            .filter(|_| p + 5 + len <= body_end)
            .ok_or_else(|| err("ES info runs past the PMT"))?;
        streams.push((e[0], u16::from_be_bytes([e[1] & 0x1F, e[2]]), raw.to_vec()));
        p += 5 + len;
    }
    Ok(Pmt {
        program_number,
        version,
        pcr_pid,
        program_info,
        streams,
    })
}

/// `metadata_pointer_descriptor` for ID3 in the same transport stream.
fn metadata_pointer_descriptor(program_number: u16) -> Vec<u8> {
    let mut d = vec![0x25, 15, 0xFF, 0xFF];
    d.extend_from_slice(&ID3_FORMAT); // metadata_application_format_identifier
    d.push(0xFF); // metadata_format: identified by the next field
    d.extend_from_slice(&ID3_FORMAT);
    d.push(0); // metadata_service_id
    d.push(0x1F); // locator_record_flag 0, MPEG_carriage_flags 0 (same TS), reserved
    d.extend_from_slice(&program_number.to_be_bytes());
    d
}

/// `metadata_descriptor` for the ID3 elementary stream.
fn metadata_descriptor() -> Vec<u8> {
    let mut d = vec![0x26, 13, 0xFF, 0xFF];
    d.extend_from_slice(&ID3_FORMAT);
    d.push(0xFF);
    d.extend_from_slice(&ID3_FORMAT);
    d.push(0); // metadata_service_id
    d.push(0x0F); // decoder_config_flags 000, DSM-CC_flag 0, reserved
    d
}

fn build_pmt(pmt: &Pmt, id3_pid: u16) -> Result<Vec<u8>, ManifestError> {
    let mut program_info = pmt.program_info.clone();
    program_info.extend(metadata_pointer_descriptor(pmt.program_number));
    let es_info = metadata_descriptor();
    let mut s = vec![0x02, 0, 0];
    s.extend_from_slice(&pmt.program_number.to_be_bytes());
    s.push(0xC0 | ((pmt.version + 1) % 32) << 1 | 1);
    s.extend_from_slice(&[0, 0]);
    s.extend_from_slice(&(0xE000 | pmt.pcr_pid).to_be_bytes());
    s.extend_from_slice(&(0xF000 | program_info.len() as u16).to_be_bytes());
    s.extend_from_slice(&program_info);
    for (_, _, raw) in &pmt.streams {
        s.extend_from_slice(raw);
    }
    s.push(STREAM_TYPE_METADATA);
    s.extend_from_slice(&(0xE000 | id3_pid).to_be_bytes());
    s.extend_from_slice(&(0xF000 | es_info.len() as u16).to_be_bytes());
    s.extend_from_slice(&es_info);
    let section_length = s.len() - 3 + 4;
    if section_length > 1021 || program_info.len() > 0x3FF {
        return Err(ManifestError::TooLarge {
            what: "PMT section",
            bytes: section_length,
            limit: 1021,
        });
    }
    s[1] = 0xB0 | (section_length >> 8) as u8;
    s[2] = section_length as u8;
    let crc = crc32_mpeg2(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    Ok(s)
}

fn packetize(pid: u16, payload: &[u8], psi: bool) -> Vec<[u8; PACKET]> {
    let mut out = Vec::new();
    let data: Vec<u8> = if psi {
        [&[0u8][..], payload].concat()
    } else {
        payload.to_vec()
    };
    let mut rest = &data[..];
    let mut first = true;
    while first || !rest.is_empty() {
        let mut p = [0xFFu8; PACKET];
        p[0] = 0x47;
        p[1] = (if first { 0x40 } else { 0 }) | (pid >> 8) as u8 & 0x1F;
        p[2] = pid as u8;
        let take = rest.len().min(184);
        if take == 184 || psi {
            // PSI is padded with 0xFF after the section; a full PES chunk needs no padding.
            p[3] = 0x10;
            p[4..4 + take].copy_from_slice(&rest[..take]);
        } else {
            // PES: pad with adaptation-field stuffing so the payload ends the packet.
            p[3] = 0x30;
            let af_len = 183 - take;
            p[4] = af_len as u8;
            if af_len > 0 {
                p[5] = 0x00;
            }
            p[PACKET - take..].copy_from_slice(&rest[..take]);
        }
        rest = &rest[take..];
        first = false;
        out.push(p);
    }
    out
}

fn pes(pts: u64, data: &[u8]) -> Result<Vec<u8>, ManifestError> {
    if data.len() > MAX_ID3_BYTES {
        return Err(ManifestError::TooLarge {
            what: "ID3 tag in one PES packet",
            bytes: data.len(),
            limit: MAX_ID3_BYTES,
        });
    }
    let pts = pts & PTS_MASK;
    let mut p = vec![0, 0, 1, STREAM_ID_PRIVATE_1];
    p.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0x84, 0x80, 0x05]); // data_alignment_indicator; PTS only
    p.extend_from_slice(&[
        0x21 | ((pts >> 29) as u8 & 0x0E),
        (pts >> 22) as u8,
        ((pts >> 14) as u8 & 0xFE) | 1,
        (pts >> 7) as u8,
        ((pts << 1) as u8 & 0xFE) | 1,
    ]);
    p.extend_from_slice(data);
    Ok(p)
}

/// The PTS of a PES header at the start of `payload`, if any.
pub fn pes_pts(payload: &[u8]) -> Option<u64> {
    if payload.len() < 14 || payload[..3] != [0, 0, 1] || payload[7] & 0x80 == 0 {
        return None;
    }
    let b = &payload[9..14];
    Some(
        ((b[0] as u64 >> 1) & 0x07) << 30
            | (b[1] as u64) << 22
            | ((b[2] as u64) >> 1) << 15
            | (b[3] as u64) << 7
            | (b[4] as u64) >> 1,
    )
}

/// Earliest PTS of `pid`, wrap-aware around the first one seen.
fn first_pts(pk: &[Packet], pid: u16) -> Option<u64> {
    let mut first: Option<u64> = None;
    let mut min_delta = 0i64;
    for p in pk.iter().filter(|p| p.pid == pid && p.pusi) {
        if let Some(pts) = pes_pts(p.payload) {
            match first {
                None => first = Some(pts),
                Some(f) => {
                    let mut d = pts as i64 - f as i64;
                    if d > (1 << 32) {
                        d -= 1 << 33;
                    } else if d < -(1 << 32) {
                        d += 1 << 33;
                    }
                    min_delta = min_delta.min(d);
                }
            }
        }
    }
    first.map(|f| ((f as i64 + min_delta).rem_euclid(1 << 33)) as u64)
}

/// The first program's PMT PID and table.
fn program(pk: &[Packet]) -> Result<(u16, Pmt), ManifestError> {
    let pat_i = pk
        .iter()
        .position(|p| p.pid == 0 && p.pusi)
        .ok_or_else(|| err("no PAT"))?;
    let (pat, _) = section_at(pk, pat_i)?;
    if pat[0] != 0x00 {
        return Err(err("PID 0 does not hold a PAT"));
    }
    let pmt_pid = pat
        .get(8..pat.len().saturating_sub(4))
        .unwrap_or(&[])
        .chunks_exact(4)
        .find(|e| u16::from_be_bytes([e[0], e[1]]) != 0)
        .map(|e| u16::from_be_bytes([e[2] & 0x1F, e[3]]))
        .ok_or_else(|| err("the PAT lists no program"))?;
    let pmt_i = pk
        .iter()
        .position(|p| p.pid == pmt_pid && p.pusi)
        .ok_or_else(|| err(format!("no PMT on PID {pmt_pid}")))?;
    let pmt = parse_pmt(&section_at(pk, pmt_i)?.0)?;
    Ok((pmt_pid, pmt))
}

/// The PID of the program's video stream (else its first media stream).
fn video_pid(pmt: &Pmt) -> Result<u16, ManifestError> {
    pmt.streams
        .iter()
        .find(|s| VIDEO_STREAM_TYPES.contains(&s.0))
        .or_else(|| pmt.streams.iter().find(|s| s.0 != STREAM_TYPE_METADATA))
        .map(|s| s.1)
        .ok_or_else(|| err("the PMT lists no media stream"))
}

/// One partial segment (LL-HLS `EXT-X-PART`) of an MPEG-TS segment.
#[derive(Debug, Clone, PartialEq)]
pub struct TsPart {
    /// Byte range within the segment (whole packets).
    pub range: std::ops::Range<usize>,
    /// Seconds of media it holds.
    pub duration: f64,
}

/// Cut an MPEG-TS segment of `segment_duration` seconds into parts of about `part_secs`:
/// each part starts at a video PES (a whole frame) whose PTS is at or past the next
/// multiple of `part_secs` from the first one, so no part is longer than `part_secs` plus
/// one frame. Concatenated, the parts are the segment byte for byte. Only the first part
/// starts with the segment's PAT/PMT (and, for segments that start with a key frame, is
/// the independent one).
pub fn split_parts(
    segment: &[u8],
    segment_duration: f64,
    part_secs: f64,
) -> Result<Vec<TsPart>, ManifestError> {
    if part_secs.is_nan() || part_secs <= 0.0 {
        return Err(err(format!("part duration {part_secs} is not positive")));
    }
    let pk = packets(segment)?;
    let (_, pmt) = program(&pk)?;
    let video = video_pid(&pmt)?;
    let mut starts: Vec<(usize, u64)> = pk
        .iter()
        .enumerate()
        .filter(|(_, p)| p.pid == video && p.pusi)
        .filter_map(|(i, p)| pes_pts(p.payload).map(|t| (i, t)))
        .collect();
    let Some(&(_, base)) = starts.first() else {
        return Err(err(format!("no PTS on video PID {video}")));
    };
    let step = (part_secs * 90_000.0).round() as u64;
    // Cuts: packet index and media offset (90 kHz) of each part's first frame.
    let mut cuts: Vec<(usize, u64)> = vec![(0, 0)];
    starts.remove(0);
    for (i, pts) in starts {
        let off = pts.wrapping_sub(base) & PTS_MASK;
        // In decode order a frame may come after one of a later PTS (B-frames, or PTS
        // that jump): a cut only ever moves forward, so no part has a negative duration.
        let after_last_cut = cuts.last().is_none_or(|&(_, last)| off > last);
        if after_last_cut && off >= step.saturating_mul(cuts.len() as u64) && off < PTS_MASK / 2 {
            cuts.push((i, off));
        }
    }
    let total = (segment_duration.max(0.0) * 90_000.0).round() as u64;
    let mut parts = Vec::with_capacity(cuts.len());
    for (k, &(i, off)) in cuts.iter().enumerate() {
        let (end_i, end_off) = cuts
            .get(k + 1)
            .copied()
            .unwrap_or((pk.len(), total.max(off)));
        parts.push(TsPart {
            range: i * PACKET..end_i * PACKET,
            duration: (end_off - off) as f64 / 90_000.0,
        });
    }
    Ok(parts)
}

/// The origin's ID3 stream PID, to be reused, must be one only it uses: the ID3 PES go on
/// it, so on a PSI PID (the PAT's 0, the other reserved ones, the PMT's) or another
/// stream's they would be read as tables or as that stream.
fn check_reused_pid(pid: u16, pmt_pid: u16, pmt: &Pmt) -> Result<(), ManifestError> {
    let why = if pid <= LAST_RESERVED_PID || pid == NULL_PID {
        "a reserved PID"
    } else if pid == pmt_pid {
        "the PMT's PID"
    } else if pmt.streams.iter().filter(|s| s.1 == pid).count() > 1 {
        "shared with another stream"
    } else {
        return Ok(());
    };
    Err(err(format!(
        "the PMT declares its ID3 stream on PID {pid:#06x}, {why}"
    )))
}

/// Inserts the samples as an ID3 timed-metadata stream into an MPEG-TS segment.
pub fn insert_timed_metadata(
    segment: &[u8],
    samples: &[MetadataSample],
) -> Result<(Vec<u8>, TsInsertReport), ManifestError> {
    let pk = packets(segment)?;
    let (pmt_pid, pmt) = program(&pk)?;
    let existing = pmt
        .streams
        .iter()
        .find(|s| s.0 == STREAM_TYPE_METADATA)
        .map(|s| s.1);
    let id3_pid = match existing {
        Some(pid) => {
            check_reused_pid(pid, pmt_pid, &pmt)?;
            pid
        }
        None => free_pid(&pk, pmt_pid, &pmt)?,
    };
    let video_pid = video_pid(&pmt)?;
    let base = first_pts(&pk, video_pid)
        .ok_or_else(|| err(format!("no PTS on stream PID {video_pid}")))?;
    let (sample_pts, id3_packets) = sample_packets(samples, base, id3_pid)?;
    let new_pmt = match existing {
        Some(_) => None,
        None => Some(packetize(pmt_pid, &build_pmt(&pmt, id3_pid)?, true)),
    };
    let spliced = splice_packets(
        &pk,
        pmt_pid,
        existing,
        new_pmt.as_deref(),
        &id3_packets,
        segment.len() + (id3_packets.len() + 2) * PACKET,
    );
    Ok((
        spliced.out,
        TsInsertReport {
            pmt_pid,
            id3_pid,
            reused_origin_stream: existing.is_some(),
            first_pts: base,
            sample_pts,
            packets_added: spliced.added,
            packets_replaced: spliced.replaced,
        },
    ))
}

/// The first PID from 0x0100 that no packet, stream, PCR or PMT of the segment uses.
fn free_pid(pk: &[Packet], pmt_pid: u16, pmt: &Pmt) -> Result<u16, ManifestError> {
    let mut used = [false; 0x2000];
    for p in pk {
        used[p.pid as usize] = true;
    }
    for s in &pmt.streams {
        used[s.1 as usize] = true;
    }
    used[pmt.pcr_pid as usize] = true;
    used[pmt_pid as usize] = true;
    (0x0100..NULL_PID)
        .find(|&p| !used[p as usize])
        .ok_or_else(|| err("no free PID"))
}

/// Each sample's PTS (the first video PTS plus its offset), and the sample PES packetized
/// on `id3_pid`.
fn sample_packets(
    samples: &[MetadataSample],
    base: u64,
    id3_pid: u16,
) -> Result<(Vec<u64>, Vec<[u8; PACKET]>), ManifestError> {
    let mut sample_pts = Vec::with_capacity(samples.len());
    let mut id3_packets = Vec::new();
    for s in samples {
        let off = if s.offset_s.is_finite() && s.offset_s > 0.0 {
            (s.offset_s.min(86_400.0) * 90_000.0).round() as u64
        } else {
            0
        };
        let pts = (base + off) & PTS_MASK;
        sample_pts.push(pts);
        id3_packets.extend(packetize(id3_pid, &pes(pts, &s.id3_tag)?, false));
    }
    Ok((sample_pts, id3_packets))
}

/// The rewritten segment and how many packets it gained and lost.
struct Spliced {
    out: Vec<u8>,
    added: usize,
    replaced: usize,
}

/// Copies the segment's packets, the PMT replaced by `new_pmt` (when the ID3 stream is
/// ours) and the ID3 packets put after the first PMT; the continuity counters of the
/// packets we write follow on from the origin's.
fn splice_packets(
    pk: &[Packet],
    pmt_pid: u16,
    existing: Option<u16>,
    new_pmt: Option<&[[u8; PACKET]]>,
    id3_packets: &[[u8; PACKET]],
    capacity: usize,
) -> Spliced {
    let mut s = Spliced {
        out: Vec::with_capacity(capacity),
        added: 0,
        replaced: 0,
    };
    let mut cc_pmt: Option<u8> = None;
    let mut cc_id3: Option<u8> = if existing.is_some() { None } else { Some(0) };
    let mut inserted = false;
    for p in pk {
        if p.pid == pmt_pid {
            if let Some(new) = new_pmt {
                if p.pusi {
                    if cc_pmt.is_none() {
                        cc_pmt = Some(p.cc);
                    }
                    for np in new {
                        push_counted(&mut s.out, np, &mut cc_pmt);
                    }
                    s.added += new.len();
                }
                s.replaced += 1;
            } else {
                s.out.extend_from_slice(p.raw);
            }
            if p.pusi && !inserted {
                inserted = true;
                for ip in id3_packets {
                    push_counted(&mut s.out, ip, &mut cc_id3);
                }
                s.added += id3_packets.len();
            }
            continue;
        }
        if Some(p.pid) == existing {
            push_counted(&mut s.out, p.raw, &mut cc_id3);
            continue;
        }
        s.out.extend_from_slice(p.raw);
    }
    s
}

/// Appends a packet with its continuity counter from `counter` (which starts at the
/// packet's own when unset, and counts packets with a payload).
fn push_counted(out: &mut Vec<u8>, raw: &[u8], counter: &mut Option<u8>) {
    let start = out.len();
    out.extend_from_slice(raw);
    let has_payload = raw[3] & 0x10 != 0;
    let cc = counter.get_or_insert(raw[3] & 0x0F);
    out[start + 3] = (raw[3] & 0xF0) | *cc;
    if has_payload {
        *cc = (*cc + 1) & 0x0F;
    }
}

/// The ID3 payloads (with their PTS) of the metadata stream of a segment: for tests and
/// for checking a rewritten segment.
pub fn read_timed_metadata(segment: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, ManifestError> {
    let pk = packets(segment)?;
    let pat_i = pk
        .iter()
        .position(|p| p.pid == 0 && p.pusi)
        .ok_or_else(|| err("no PAT"))?;
    let (pat, _) = section_at(&pk, pat_i)?;
    let pmt_pid = pat
        .get(8..pat.len().saturating_sub(4))
        .unwrap_or(&[])
        .chunks_exact(4)
        .find(|e| u16::from_be_bytes([e[0], e[1]]) != 0)
        .map(|e| u16::from_be_bytes([e[2] & 0x1F, e[3]]))
        .ok_or_else(|| err("the PAT lists no program"))?;
    let pmt_i = pk
        .iter()
        .position(|p| p.pid == pmt_pid && p.pusi)
        .ok_or_else(|| err("no PMT"))?;
    let pmt = parse_pmt(&section_at(&pk, pmt_i)?.0)?;
    let Some(pid) = pmt
        .streams
        .iter()
        .find(|s| s.0 == STREAM_TYPE_METADATA)
        .map(|s| s.1)
    else {
        return Ok(vec![]);
    };
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    let finish = |buf: Vec<u8>, out: &mut Vec<(u64, Vec<u8>)>| {
        if let Some(pts) = pes_pts(&buf) {
            let hl = 9 + buf[8] as usize;
            let len = u16::from_be_bytes([buf[4], buf[5]]) as usize;
            let end = (6 + len).min(buf.len());
            if hl <= end {
                out.push((pts, buf[hl..end].to_vec()));
            }
        }
    };
    for p in pk.iter().filter(|p| p.pid == pid && p.has_payload) {
        if p.pusi {
            if let Some(buf) = current.take() {
                finish(buf, &mut out);
            }
            current = Some(p.payload.to_vec());
        } else if let Some(buf) = current.as_mut() {
            buf.extend_from_slice(p.payload);
        }
    }
    if let Some(buf) = current.take() {
        finish(buf, &mut out);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn pat(pmt_pid: u16) -> Vec<u8> {
        let mut s = vec![0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01];
        s.extend_from_slice(&(0xE000 | pmt_pid).to_be_bytes());
        let crc = crc32_mpeg2(&s);
        s.extend_from_slice(&crc.to_be_bytes());
        s
    }

    fn pmt(video_pid: u16) -> Vec<u8> {
        let mut s = vec![0x02, 0xB0, 0x00, 0x00, 0x01, 0xC1, 0x00, 0x00];
        s.extend_from_slice(&(0xE000 | video_pid).to_be_bytes());
        s.extend_from_slice(&[0xF0, 0x00]);
        s.push(0x1B);
        s.extend_from_slice(&(0xE000 | video_pid).to_be_bytes());
        s.extend_from_slice(&[0xF0, 0x00]);
        s[2] = (s.len() - 3 + 4) as u8;
        let crc = crc32_mpeg2(&s);
        s.extend_from_slice(&crc.to_be_bytes());
        s
    }

    /// A synthetic segment: PAT, PMT, then video PES packets with the given PTS, a PAT/PMT
    /// repeated in the middle.
    pub(crate) fn synthetic_segment(pts: &[u64]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut cc = [0u8; 0x2000];
        let mut emit = |out: &mut Vec<u8>, pid: u16, packets: Vec<[u8; PACKET]>| {
            for mut p in packets {
                p[3] = (p[3] & 0xF0) | cc[pid as usize];
                cc[pid as usize] = (cc[pid as usize] + 1) & 0xF;
                out.extend_from_slice(&p);
            }
        };
        for (i, &t) in pts.iter().enumerate() {
            if i % 2 == 0 {
                emit(&mut out, 0, packetize(0, &pat(0x1000), true));
                emit(&mut out, 0x1000, packetize(0x1000, &pmt(0x100), true));
            }
            let mut pes = vec![0, 0, 1, 0xE0, 0, 0, 0x80, 0x80, 5];
            let pts_bytes = super::pes(t, &[]).unwrap()[9..14].to_vec();
            pes.extend_from_slice(&pts_bytes);
            pes.extend(std::iter::repeat_n(0xAAu8, 400));
            emit(&mut out, 0x100, packetize(0x100, &pes, false));
        }
        out
    }

    #[test]
    fn split_parts_cuts_at_frames_and_covers_the_segment() {
        // 2 s at 25 frames/s, PTS wrapping in the middle.
        let base = PTS_MASK - 20 * 3600;
        let pts: Vec<u64> = (0..50).map(|i| (base + i * 3600) & PTS_MASK).collect();
        let seg = synthetic_segment(&pts);
        let parts = split_parts(&seg, 2.0, 0.5).unwrap();
        let durations: Vec<f64> = parts.iter().map(|p| p.duration).collect();
        assert_eq!(durations, vec![0.52, 0.48, 0.52, 0.48]);
        let mut joined = Vec::new();
        for (k, p) in parts.iter().enumerate() {
            assert!(p.range.start.is_multiple_of(PACKET) && p.range.end.is_multiple_of(PACKET));
            let first = packets(&seg[p.range.clone()]).unwrap()[0];
            if k == 0 {
                assert_eq!(first.pid, 0, "the first part starts with the PAT");
            } else {
                assert_eq!(
                    (first.pid, first.pusi),
                    (0x100, true),
                    "part {k} starts a frame"
                );
            }
            joined.extend_from_slice(&seg[p.range.clone()]);
        }
        assert_eq!(joined, seg);
        // A part as long as the segment: one part.
        assert_eq!(split_parts(&seg, 2.0, 5.0).unwrap().len(), 1);
    }

    #[test]
    fn split_parts_refuses_bad_input() {
        let seg = synthetic_segment(&[0, 3600]);
        assert!(split_parts(&seg, 2.0, 0.0).is_err());
        assert!(split_parts(&seg[..100], 2.0, 0.5).is_err());
        assert!(split_parts(&[0u8; 188], 2.0, 0.5).is_err());
    }

    /// Found by the `ts_id3_insert` fuzz target: video PES in decode order whose PTS go
    /// back past the last cut (the fuzzer's input: parts of 0.2 s, and these PTS on the
    /// video PID) made a part of negative duration (a subtraction overflow).
    #[test]
    fn split_parts_with_pts_going_back_past_a_cut() {
        let seg = synthetic_segment(&[834_464, 903_600, 874_432, 910_800, 914_400, 918_000]);
        let parts = split_parts(&seg, 6.0, 0.2).unwrap();
        let mut at = 0;
        for p in &parts {
            assert_eq!(p.range.start, at);
            assert!(p.duration >= 0.0, "{parts:?}");
            at = p.range.end;
        }
        assert_eq!(at, seg.len());
        // A part duration too large for 90 kHz ticks in 64 bits is one part, not an overflow.
        assert_eq!(split_parts(&seg, 6.0, 1e300).unwrap().len(), 1);
    }

    /// Found by the `ts_id3_insert` fuzz target: a PMT-PID packet without payload (adaptation
    /// field control 0) before the first PMT is replaced like the rest of the old PMT, so
    /// the output is one packet shorter; the report said 0 packets added (a negative count
    /// clamped) and did not add up to the output's length.
    #[test]
    fn report_counts_replaced_pmt_packets() {
        let mut stray = [0xFFu8; PACKET];
        stray[..4].copy_from_slice(&[0x47, 0x10, 0x00, 0x00]);
        let seg = [stray.to_vec(), synthetic_segment(&[0, 3600, 7200])].concat();
        let (out, report) = insert_timed_metadata(&seg, &[]).unwrap();
        assert_eq!(report.packets_replaced, 3);
        assert_eq!(report.packets_added, 2);
        assert_eq!(
            out.len() + report.packets_replaced * PACKET,
            seg.len() + report.packets_added * PACKET
        );
    }

    /// A PMT listing video on `video_pid` and an ID3 stream on `id3_pid`.
    fn pmt_with_id3(video_pid: u16, id3_pid: u16) -> Vec<u8> {
        let mut s = pmt(video_pid);
        s.truncate(s.len() - 4);
        s.push(STREAM_TYPE_METADATA);
        s.extend_from_slice(&(0xE000 | id3_pid).to_be_bytes());
        s.extend_from_slice(&[0xF0, 0x00]);
        s[2] = (s.len() - 3 + 4) as u8;
        let crc = crc32_mpeg2(&s);
        s.extend_from_slice(&crc.to_be_bytes());
        s
    }

    /// Found by the `ts_id3_insert` fuzz target: a segment whose first PMT (before its
    /// first PAT) declares the ID3 stream on PID 0. Reusing it put the ID3 PES on the PAT's
    /// PID, and the output's PAT no longer read ("PSI section on PID 0 interrupted"). An
    /// origin ID3 stream on a PSI PID or on another stream's PID is refused.
    #[test]
    fn id3_stream_on_a_psi_or_shared_pid_is_refused() {
        let sample = [MetadataSample {
            offset_s: 0.5,
            id3_tag: b"ID3\x04\0\0\0\0\0\0".to_vec(),
        }];
        for (id3_pid, why) in [
            (0x0000, "reserved"),
            (0x0001, "reserved"),
            (0x1FFF, "reserved"),
            (0x1000, "PMT"),
            (0x0100, "another stream"),
        ] {
            let seg = [
                packetize(0x1000, &pmt_with_id3(0x100, id3_pid), true).concat(),
                synthetic_segment(&[900_000, 903_600]),
            ]
            .concat();
            match insert_timed_metadata(&seg, &sample) {
                Err(ManifestError::Ts { why: w }) => assert!(w.contains(why), "{w}"),
                other => panic!("ID3 on PID {id3_pid:#x}: {other:?}"),
            }
        }
        // On a PID of its own it is reused, and the output reads back.
        let seg = [
            packetize(0x1000, &pmt_with_id3(0x100, 0x0101), true).concat(),
            synthetic_segment(&[900_000, 903_600]),
        ]
        .concat();
        let (out, report) = insert_timed_metadata(&seg, &sample).unwrap();
        assert!(report.reused_origin_stream);
        assert_eq!(read_timed_metadata(&out).unwrap().len(), 1);
    }

    fn cc_continuous(data: &[u8]) -> bool {
        let mut last = [None::<u8>; 0x2000];
        for p in packets(data).unwrap() {
            if !p.has_payload {
                continue;
            }
            if let Some(l) = last[p.pid as usize]
                && p.cc != (l + 1) & 0xF
            {
                return false;
            }
            last[p.pid as usize] = Some(p.cc);
        }
        true
    }

    #[test]
    fn descriptors_match_apple_spec_bytes() {
        assert_eq!(
            metadata_pointer_descriptor(1),
            [
                0x25, 0x0F, 0xFF, 0xFF, 0x49, 0x44, 0x33, 0x20, 0xFF, 0x49, 0x44, 0x33, 0x20, 0x00,
                0x1F, 0x00, 0x01
            ]
        );
        assert_eq!(
            metadata_descriptor(),
            [
                0x26, 0x0D, 0xFF, 0xFF, 0x49, 0x44, 0x33, 0x20, 0xFF, 0x49, 0x44, 0x33, 0x20, 0x00,
                0x0F
            ]
        );
    }

    #[test]
    fn pes_header_golden() {
        let p = pes(0x1_2345_6789, b"ID3").unwrap();
        assert_eq!(p[..9], [0, 0, 1, 0xBD, 0x00, 0x0B, 0x84, 0x80, 0x05]);
        assert_eq!(pes_pts(&p), Some(0x1_2345_6789));
        assert!(pes(0, &vec![0; MAX_ID3_BYTES + 1]).is_err());
    }

    #[test]
    fn inserts_stream_pmt_and_pes_with_valid_counters() {
        let seg = synthetic_segment(&[900_000, 903_000, 906_000, 909_000]);
        let tag = crate::manifest::id3::encode_tag(&[crate::manifest::id3::Id3Frame::Txxx {
            description: "shopcue".into(),
            value: "x".repeat(500),
        }])
        .unwrap();
        let samples = [
            MetadataSample {
                offset_s: 0.5,
                id3_tag: tag.clone(),
            },
            MetadataSample {
                offset_s: -3.0,
                id3_tag: b"ID3\x04\0\0\0\0\0\0".to_vec(),
            },
        ];
        let (out, report) = insert_timed_metadata(&seg, &samples).unwrap();
        assert_eq!(report.first_pts, 900_000);
        assert_eq!(report.sample_pts, vec![945_000, 900_000]);
        assert_eq!(report.id3_pid, 0x101);
        assert!(!report.reused_origin_stream);
        assert_eq!(out.len() % PACKET, 0);
        assert!(cc_continuous(&out), "continuity counters broken");
        let pk = packets(&out).unwrap();
        // Every PMT instance now declares the ID3 stream, with a valid CRC.
        let pmt_starts: Vec<usize> = pk
            .iter()
            .enumerate()
            .filter(|(_, p)| p.pid == 0x1000 && p.pusi)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(pmt_starts.len(), 2);
        for i in pmt_starts {
            let pmt = parse_pmt(&section_at(&pk, i).unwrap().0).unwrap();
            assert_eq!(pmt.version, 1);
            assert!(pmt.streams.iter().any(|s| s.0 == 0x15 && s.1 == 0x101));
            assert!(pmt.program_info.starts_with(&[0x25, 0x0F]));
        }
        let read = read_timed_metadata(&out).unwrap();
        assert_eq!(
            read,
            vec![(945_000, tag), (900_000, samples[1].id3_tag.clone())]
        );
        // The media packets are unchanged and in order.
        let media = |d: &[u8]| {
            packets(d)
                .unwrap()
                .iter()
                .filter(|p| p.pid == 0x100)
                .map(|p| p.raw.to_vec())
                .collect::<Vec<_>>()
        };
        assert_eq!(media(&out), media(&seg));
        // Reusing the stream we added: the PMT stays, the new PES continue the counters.
        let (again, r2) = insert_timed_metadata(&out, &samples[..1]).unwrap();
        assert!(r2.reused_origin_stream);
        assert_eq!(r2.id3_pid, 0x101);
        assert!(cc_continuous(&again));
        assert_eq!(read_timed_metadata(&again).unwrap().len(), 3);
    }

    #[test]
    fn pts_wraps_and_min_is_wrap_aware() {
        let top = (1u64 << 33) - 90_000;
        let seg = synthetic_segment(&[top + 3000, top, (top + 90_000 + 6000) & PTS_MASK]);
        let (_, r) = insert_timed_metadata(
            &seg,
            &[MetadataSample {
                offset_s: 2.0,
                id3_tag: vec![],
            }],
        )
        .unwrap();
        assert_eq!(r.first_pts, top);
        assert_eq!(r.sample_pts, vec![90_000]);
    }

    #[test]
    fn typed_errors() {
        assert!(matches!(
            insert_timed_metadata(b"", &[]),
            Err(ManifestError::Ts { .. })
        ));
        assert!(insert_timed_metadata(&[0u8; 188], &[]).is_err());
        let mut no_pmt = Vec::new();
        no_pmt.extend(packetize(0, &pat(0x1000), true).concat());
        assert!(
            matches!(insert_timed_metadata(&no_pmt, &[]), Err(ManifestError::Ts { why }) if why.contains("PMT"))
        );
        let seg = synthetic_segment(&[0]);
        let big = MetadataSample {
            offset_s: 0.0,
            id3_tag: vec![0; MAX_ID3_BYTES + 1],
        };
        assert!(matches!(
            insert_timed_metadata(&seg, &[big]),
            Err(ManifestError::TooLarge { .. })
        ));
        let mut bad_crc = seg.clone();
        bad_crc[188 + 10] ^= 0xFF;
        assert!(insert_timed_metadata(&bad_crc, &[]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_garbage(mut data in proptest::collection::vec(proptest::num::u8::ANY, 0..(188 * 4)), n in 0usize..4) {
            let len = data.len() / 188 * 188;
            data.truncate(len);
            for i in 0..len / 188 {
                data[i * 188] = 0x47;
            }
            let _ = insert_timed_metadata(&data, &vec![MetadataSample { offset_s: 1.0, id3_tag: vec![1, 2, 3] }; n]);
            let _ = read_timed_metadata(&data);
        }

        #[test]
        fn never_panics_on_corrupted_segments(flips in proptest::collection::vec((0usize..(188 * 6), proptest::num::u8::ANY), 0..8)) {
            let mut seg = synthetic_segment(&[900_000, 903_000]);
            let len = seg.len();
            for (at, v) in flips {
                seg[at % len] = v;
            }
            if let Ok((out, _)) = insert_timed_metadata(&seg, &[MetadataSample { offset_s: 1.0, id3_tag: vec![1] }]) {
                proptest::prop_assert_eq!(out.len() % PACKET, 0);
            }
        }
    }
}
