//! SCTE-35 `splice_info_section`: the encoder behind our `SCTE35-CMD` attribute and a
//! decoder for the origin's own markers (to find ad breaks) and for our tests.
//!
//! What a product cue becomes (see `docs/manifest.md`):
//! `time_signal(pts_time)` + one `segmentation_descriptor` ("CUEI") with
//! - `segmentation_event_id`: the first 4 bytes of SHA-256 of the cue id (stable);
//! - `segmentation_type_id` 0x40 *Unscheduled Event Start* (0x41 *End* is available):
//!   product sightings are not on any schedule, and unlike the placement-opportunity
//!   (0x34–0x3B) and advertisement (0x30–0x33) types, no ad-insertion system treats 0x40
//!   as an avail, so our cues can never trigger ad replacement downstream;
//! - UPID type 0x0C MPU: `format_identifier` "SHCU", `private_data` the product id (UTF-8);
//! - `segmentation_duration` (90 kHz) only when the cue's end was known when it was first
//!   published (attributes of a published date range never change);
//! - web delivery not restricted, program segmentation, `segment_num`/`segments_expected` 0.

use sha2::Digest;

use super::ManifestError;
use super::bits::{BitReader, BitWriter, base64_decode, crc32_mpeg2};

pub const TABLE_ID: u8 = 0xFC;
/// The identifier of every SCTE-35 splice descriptor.
pub const CUEI: u32 = 0x4355_4549;
/// UPID type: Managed Private UPID (MPU).
pub const UPID_TYPE_MPU: u8 = 0x0C;
/// Our MPU format identifier.
pub const MPU_FORMAT_IDENTIFIER: [u8; 4] = *b"SHCU";
/// The longest product id a UPID carries here (the descriptor's length is 8 bits).
pub const MAX_PRODUCT_ID_BYTES: usize = 200;
/// Segmentation types of a product cue.
pub const TYPE_PRODUCT_START: u8 = 0x40;
pub const TYPE_PRODUCT_END: u8 = 0x41;
/// Types followed by `sub_segment_num`/`sub_segments_expected` (SCTE 35 2022, table 22).
const SUB_SEGMENT_TYPES: [u8; 8] = [0x30, 0x32, 0x34, 0x36, 0x38, 0x3A, 0x44, 0x46];
/// Segmentation types that open / close an ad break on the origin.
const AD_START_TYPES: [u8; 7] = [0x22, 0x30, 0x32, 0x34, 0x36, 0x44, 0x46];
const AD_END_TYPES: [u8; 7] = [0x23, 0x31, 0x33, 0x35, 0x37, 0x45, 0x47];
/// PTS values wrap at 2^33.
const PTS_MASK: u64 = (1 << 33) - 1;

fn err(why: impl Into<String>) -> ManifestError {
    ManifestError::Scte35 { why: why.into() }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpliceInfoSection {
    pub pts_adjustment: u64,
    pub cw_index: u8,
    pub tier: u16,
    pub command: SpliceCommand,
    pub descriptors: Vec<SpliceDescriptor>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SpliceCommand {
    Null,
    Insert(SpliceInsert),
    /// `time_signal`; `None` is "time not specified" (immediate).
    TimeSignal {
        pts_time: Option<u64>,
    },
    BandwidthReservation,
    /// Any other command, kept as bytes (splice_schedule, private_command...).
    Other {
        command_type: u8,
        bytes: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpliceInsert {
    pub event_id: u32,
    pub cancel: bool,
    pub out_of_network: bool,
    pub program_splice: bool,
    pub immediate: bool,
    /// Program splice time (`None` when immediate or component mode).
    pub pts_time: Option<u64>,
    /// (auto_return, duration in 90 kHz ticks).
    pub break_duration: Option<(bool, u64)>,
    pub unique_program_id: u16,
    pub avail_num: u8,
    pub avails_expected: u8,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SpliceDescriptor {
    Segmentation(SegmentationDescriptor),
    /// Any other descriptor: tag, identifier and the bytes after the identifier.
    Other {
        tag: u8,
        identifier: u32,
        bytes: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SegmentationDescriptor {
    pub event_id: u32,
    pub cancel: bool,
    /// `None`: delivery not restricted.
    pub delivery_restrictions: Option<u8>,
    /// 90 kHz ticks.
    pub duration: Option<u64>,
    pub upid_type: u8,
    pub upid: Vec<u8>,
    pub type_id: u8,
    pub segment_num: u8,
    pub segments_expected: u8,
    pub sub_segment: Option<(u8, u8)>,
}

/// What an origin marker means for ad breaks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AdSignal {
    /// The content goes out to an ad break, of this many seconds when known.
    Start {
        duration_s: Option<f64>,
    },
    End,
}

/// `segmentation_event_id` (and emsg id) of a cue: 4 bytes of SHA-256 of its id.
pub fn event_id(cue_id: &str) -> u32 {
    let d = sha2::Sha256::digest(cue_id.as_bytes());
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Seconds → 90 kHz ticks, wrapped to 33 bits like a PTS.
pub fn pts_from_seconds(s: f64) -> u64 {
    if !s.is_finite() || s <= 0.0 {
        return 0;
    }
    ((s * 90_000.0).round() as u64) & PTS_MASK
}

/// The section carried in a product cue's `SCTE35-CMD`.
pub fn product_cue_section(
    cue_id: &str,
    product_id: &str,
    pts_time: u64,
    duration_90k: Option<u64>,
) -> Result<Vec<u8>, ManifestError> {
    if product_id.len() > MAX_PRODUCT_ID_BYTES {
        return Err(err(format!(
            "product id of {} bytes does not fit the segmentation descriptor (at most {MAX_PRODUCT_ID_BYTES})",
            product_id.len()
        )));
    }
    let mut upid = MPU_FORMAT_IDENTIFIER.to_vec();
    upid.extend_from_slice(product_id.as_bytes());
    encode(&SpliceInfoSection {
        pts_adjustment: 0,
        cw_index: 0xFF,
        tier: 0xFFF,
        command: SpliceCommand::TimeSignal {
            pts_time: Some(pts_time & PTS_MASK),
        },
        descriptors: vec![SpliceDescriptor::Segmentation(SegmentationDescriptor {
            event_id: event_id(cue_id),
            cancel: false,
            delivery_restrictions: None,
            duration: duration_90k.map(|d| d.min((1 << 40) - 1)),
            upid_type: UPID_TYPE_MPU,
            upid,
            type_id: TYPE_PRODUCT_START,
            segment_num: 0,
            segments_expected: 0,
            sub_segment: None,
        })],
    })
}

/// `0x` + upper-case hex: the hexadecimal-sequence of RFC 8216 (`[0-9A-F]`).
pub fn to_hls_hex(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode_upper(bytes))
}

/// Parses an `SCTE35-*` attribute value (`0x…`) or a base64 payload, whichever it is.
pub fn parse_payload(s: &str) -> Result<Vec<u8>, ManifestError> {
    let s = s.trim().trim_matches('"');
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        hex::decode(h).map_err(|e| err(format!("bad hex: {e}")))
    } else {
        base64_decode(s).map_err(err)
    }
}

fn put_splice_time(w: &mut BitWriter, pts: Option<u64>) {
    match pts {
        Some(p) => {
            w.put(1, 1);
            w.put(6, 0x3F);
            w.put(33, p & PTS_MASK);
        }
        None => {
            w.put(1, 0);
            w.put(7, 0x7F);
        }
    }
}

fn encode_command(cmd: &SpliceCommand) -> (u8, Vec<u8>) {
    let mut w = BitWriter::new();
    let ty = match cmd {
        SpliceCommand::Null => 0x00,
        SpliceCommand::BandwidthReservation => 0x07,
        SpliceCommand::TimeSignal { pts_time } => {
            put_splice_time(&mut w, *pts_time);
            0x06
        }
        SpliceCommand::Insert(i) => {
            w.put(32, i.event_id as u64);
            w.put(1, i.cancel as u64);
            w.put(7, 0x7F);
            if !i.cancel {
                w.put(1, i.out_of_network as u64);
                w.put(1, i.program_splice as u64);
                w.put(1, i.break_duration.is_some() as u64);
                w.put(1, i.immediate as u64);
                w.put(4, 0xF);
                if !i.program_splice {
                    // Component mode: the components are not kept (decode skips them),
                    // so none are written; the flag itself round-trips.
                    w.put(8, 0);
                } else if !i.immediate {
                    put_splice_time(&mut w, i.pts_time);
                }
                if let Some((auto_return, d)) = i.break_duration {
                    w.put(1, auto_return as u64);
                    w.put(6, 0x3F);
                    w.put(33, d & PTS_MASK);
                }
                w.put(16, i.unique_program_id as u64);
                w.put(8, i.avail_num as u64);
                w.put(8, i.avails_expected as u64);
            }
            0x05
        }
        SpliceCommand::Other {
            command_type,
            bytes,
        } => {
            w.put_bytes(bytes);
            *command_type
        }
    };
    (ty, w.into_bytes())
}

fn encode_descriptor(d: &SpliceDescriptor) -> Result<Vec<u8>, ManifestError> {
    let (tag, body) = match d {
        SpliceDescriptor::Other {
            tag,
            identifier,
            bytes,
        } => {
            let mut b = identifier.to_be_bytes().to_vec();
            b.extend_from_slice(bytes);
            (*tag, b)
        }
        SpliceDescriptor::Segmentation(s) => {
            let mut w = BitWriter::new();
            w.put(32, CUEI as u64);
            w.put(32, s.event_id as u64);
            w.put(1, s.cancel as u64);
            w.put(1, 1); // segmentation_event_id_compliance_indicator
            w.put(6, 0x3F);
            if !s.cancel {
                w.put(1, 1); // program_segmentation_flag
                w.put(1, s.duration.is_some() as u64);
                match s.delivery_restrictions {
                    None => {
                        w.put(1, 1);
                        w.put(5, 0x1F);
                    }
                    Some(r) => {
                        w.put(1, 0);
                        w.put(5, (r & 0x1F) as u64);
                    }
                }
                if let Some(d) = s.duration {
                    w.put(40, d);
                }
                if s.upid.len() > 255 {
                    return Err(err(format!("UPID of {} bytes (at most 255)", s.upid.len())));
                }
                w.put(8, s.upid_type as u64);
                w.put(8, s.upid.len() as u64);
                w.put_bytes(&s.upid);
                w.put(8, s.type_id as u64);
                w.put(8, s.segment_num as u64);
                w.put(8, s.segments_expected as u64);
                // Written when given (SCTE 35 2016+ wants them for SUB_SEGMENT_TYPES;
                // older encoders, like the spec's own 14.2 example, leave them out).
                if let Some((n, e)) = s.sub_segment {
                    w.put(8, n as u64);
                    w.put(8, e as u64);
                }
            }
            (0x02, w.into_bytes())
        }
    };
    if body.len() > 255 {
        return Err(err(format!(
            "descriptor of {} bytes (at most 255)",
            body.len()
        )));
    }
    let mut out = vec![tag, body.len() as u8];
    out.extend_from_slice(&body);
    Ok(out)
}

/// Serialises a section, CRC-32/MPEG-2 included.
pub fn encode(s: &SpliceInfoSection) -> Result<Vec<u8>, ManifestError> {
    let (command_type, command) = encode_command(&s.command);
    if command.len() > 0xFFE {
        return Err(err("splice command too long"));
    }
    let mut descriptors = Vec::new();
    for d in &s.descriptors {
        descriptors.extend(encode_descriptor(d)?);
    }
    if descriptors.len() > 0xFFFF {
        return Err(err("descriptor loop too long"));
    }
    // Everything after section_length: 11 fixed bytes, command, 2 + loop, CRC.
    let section_length = 11 + command.len() + 2 + descriptors.len() + 4;
    if section_length > 4093 {
        return Err(err(format!(
            "section of {section_length} bytes (at most 4093)"
        )));
    }
    let mut w = BitWriter::new();
    w.put(8, TABLE_ID as u64);
    w.put(1, 0); // section_syntax_indicator
    w.put(1, 0); // private_indicator
    w.put(2, 0x3); // sap_type: not specified
    w.put(12, section_length as u64);
    w.put(8, 0); // protocol_version
    w.put(1, 0); // encrypted_packet
    w.put(6, 0); // encryption_algorithm
    w.put(33, s.pts_adjustment & PTS_MASK);
    w.put(8, s.cw_index as u64);
    w.put(12, (s.tier & 0xFFF) as u64);
    w.put(12, command.len() as u64);
    w.put(8, command_type as u64);
    w.put_bytes(&command);
    w.put(16, descriptors.len() as u64);
    w.put_bytes(&descriptors);
    let mut out = w.into_bytes();
    let crc = crc32_mpeg2(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    Ok(out)
}

fn get_splice_time(r: &mut BitReader) -> Result<Option<u64>, String> {
    if r.flag()? {
        r.skip(6)?;
        Ok(Some(r.get(33)?))
    } else {
        r.skip(7)?;
        Ok(None)
    }
}

fn decode_insert(r: &mut BitReader) -> Result<SpliceInsert, String> {
    let mut i = SpliceInsert {
        event_id: r.get(32)? as u32,
        cancel: r.flag()?,
        ..Default::default()
    };
    r.skip(7)?;
    if i.cancel {
        return Ok(i);
    }
    i.out_of_network = r.flag()?;
    i.program_splice = r.flag()?;
    let duration_flag = r.flag()?;
    i.immediate = r.flag()?;
    r.skip(4)?;
    if i.program_splice && !i.immediate {
        i.pts_time = get_splice_time(r)?;
    }
    if !i.program_splice {
        let count = r.get(8)?;
        for _ in 0..count {
            r.skip(8)?;
            if !i.immediate {
                get_splice_time(r)?;
            }
        }
    }
    if duration_flag {
        let auto_return = r.flag()?;
        r.skip(6)?;
        i.break_duration = Some((auto_return, r.get(33)?));
    }
    i.unique_program_id = r.get(16)? as u16;
    i.avail_num = r.get(8)? as u8;
    i.avails_expected = r.get(8)? as u8;
    Ok(i)
}

fn decode_segmentation(body: &[u8]) -> Result<SegmentationDescriptor, String> {
    let mut r = BitReader::new(body);
    let mut s = SegmentationDescriptor {
        event_id: r.get(32)? as u32,
        cancel: r.flag()?,
        ..Default::default()
    };
    r.skip(7)?;
    if s.cancel {
        return Ok(s);
    }
    let program = r.flag()?;
    let duration_flag = r.flag()?;
    let not_restricted = r.flag()?;
    let restrictions = r.get(5)? as u8;
    s.delivery_restrictions = (!not_restricted).then_some(restrictions);
    if !program {
        let count = r.get(8)?;
        for _ in 0..count {
            r.skip(8 + 7 + 33)?;
        }
    }
    if duration_flag {
        s.duration = Some(r.get(40)?);
    }
    s.upid_type = r.get(8)? as u8;
    let len = r.get(8)? as usize;
    s.upid = r.bytes(len)?.to_vec();
    s.type_id = r.get(8)? as u8;
    s.segment_num = r.get(8)? as u8;
    s.segments_expected = r.get(8)? as u8;
    if SUB_SEGMENT_TYPES.contains(&s.type_id) && r.remaining_bytes() >= 2 {
        s.sub_segment = Some((r.get(8)? as u8, r.get(8)? as u8));
    }
    Ok(s)
}

/// Parses a section and checks its CRC. Encrypted sections are refused.
pub fn decode(data: &[u8]) -> Result<SpliceInfoSection, ManifestError> {
    decode_inner(data).map_err(err)
}

fn decode_inner(data: &[u8]) -> Result<SpliceInfoSection, String> {
    let mut r = BitReader::new(checked_section(data)?);
    r.skip(24)?;
    let protocol_version = r.get(8)?;
    if protocol_version != 0 {
        return Err(format!("protocol_version {protocol_version}"));
    }
    if r.flag()? {
        return Err("encrypted sections are not supported".into());
    }
    r.skip(6)?;
    let pts_adjustment = r.get(33)?;
    let cw_index = r.get(8)? as u8;
    let tier = r.get(12)? as u16;
    let command = decode_command(&mut r)?;
    let loop_length = r.get(16)? as usize;
    let descriptors = decode_descriptors(r.bytes(loop_length)?)?;
    Ok(SpliceInfoSection {
        pts_adjustment,
        cw_index,
        tier,
        command,
        descriptors,
    })
}

/// The section `data` starts with, less its CRC, once its table ID, length and CRC-32 are
/// checked.
fn checked_section(data: &[u8]) -> Result<&[u8], String> {
    let mut r = BitReader::new(data);
    let table_id = r.get(8)? as u8;
    if table_id != TABLE_ID {
        return Err(format!("table_id 0x{table_id:02X}, expected 0xFC"));
    }
    r.skip(4)?;
    let section_length = r.get(12)? as usize;
    let total = 3 + section_length;
    if total > data.len() {
        return Err(format!(
            "section_length {section_length} runs past the {} bytes given",
            data.len()
        ));
    }
    if section_length < 15 {
        return Err(format!("section_length {section_length} is too short"));
    }
    let section = &data[..total];
    if crc32_mpeg2(section) != 0 {
        let found = u32::from_be_bytes([
            data[total - 4],
            data[total - 3],
            data[total - 2],
            data[total - 1],
        ]);
        return Err(format!(
            "CRC-32 mismatch: section says 0x{found:08X}, computed 0x{:08X}",
            crc32_mpeg2(&section[..total - 4])
        ));
    }
    Ok(&section[..total - 4])
}

/// The splice command: its length and type, then its body.
fn decode_command(r: &mut BitReader) -> Result<SpliceCommand, String> {
    let command_length = r.get(12)? as usize;
    let command_type = r.get(8)? as u8;
    Ok(match command_type {
        0x00 => SpliceCommand::Null,
        0x05 => SpliceCommand::Insert(decode_insert(r)?),
        0x06 => SpliceCommand::TimeSignal {
            pts_time: get_splice_time(r)?,
        },
        0x07 => SpliceCommand::BandwidthReservation,
        other => {
            if command_length == 0xFFF {
                return Err(format!("command 0x{other:02X} with legacy unknown length"));
            }
            SpliceCommand::Other {
                command_type: other,
                bytes: r.bytes(command_length)?.to_vec(),
            }
        }
    })
}

/// The descriptor loop: segmentation descriptors decoded, the others kept as bytes.
fn decode_descriptors(mut rest: &[u8]) -> Result<Vec<SpliceDescriptor>, String> {
    let mut descriptors = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 2 {
            return Err("truncated descriptor".into());
        }
        let tag = rest[0];
        let len = rest[1] as usize;
        let body = rest
            .get(2..2 + len)
            .ok_or("descriptor runs past the loop")?;
        if body.len() < 4 {
            return Err(format!(
                "descriptor 0x{tag:02X} shorter than its identifier"
            ));
        }
        let identifier = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        descriptors.push(if tag == 0x02 && identifier == CUEI {
            SpliceDescriptor::Segmentation(decode_segmentation(&body[4..])?)
        } else {
            SpliceDescriptor::Other {
                tag,
                identifier,
                bytes: body[4..].to_vec(),
            }
        });
        rest = &rest[2 + len..];
    }
    Ok(descriptors)
}

impl SpliceInfoSection {
    /// Whether this section opens or closes an origin ad break: `splice_insert`
    /// out_of_network (and its return), or a segmentation descriptor of an advertisement,
    /// placement-opportunity or break type. Cancelled events mean nothing.
    pub fn ad_signal(&self) -> Option<AdSignal> {
        if let SpliceCommand::Insert(i) = &self.command {
            if i.cancel {
                return None;
            }
            return Some(if i.out_of_network {
                AdSignal::Start {
                    duration_s: i.break_duration.map(|(_, d)| d as f64 / 90_000.0),
                }
            } else {
                AdSignal::End
            });
        }
        for d in &self.descriptors {
            if let SpliceDescriptor::Segmentation(s) = d {
                if s.cancel {
                    continue;
                }
                if AD_START_TYPES.contains(&s.type_id) {
                    return Some(AdSignal::Start {
                        duration_s: s.duration.map(|d| d as f64 / 90_000.0),
                    });
                }
                if AD_END_TYPES.contains(&s.type_id) {
                    return Some(AdSignal::End);
                }
            }
        }
        None
    }

    /// The segmentation descriptors, for convenience.
    pub fn segmentation(&self) -> impl Iterator<Item = &SegmentationDescriptor> {
        self.descriptors.iter().filter_map(|d| match d {
            SpliceDescriptor::Segmentation(s) => Some(s),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::bits::base64_encode;

    /// SCTE 35 2019 §14.2 example "time_signal – Placement Opportunity Start".
    const SPEC_TIME_SIGNAL: &str =
        "/DA0AAAAAAAA///wBQb+cr0AUAAeAhxDVUVJSAAAjn/PAAGlmbAICAAAAAAsoKGKNAIAmsnRfg==";
    /// SCTE 35 2019 §14.1 example "splice_insert" (out of network, 60.3 s break).
    const SPEC_SPLICE_INSERT: &str =
        "/DAvAAAAAAAA///wFAVIAACPf+/+c2nALv4AUsz1AAAAAAAKAAhDVUVJAAABNWLbowo=";

    #[test]
    fn decodes_the_spec_time_signal_example() {
        let s = decode(&parse_payload(SPEC_TIME_SIGNAL).unwrap()).unwrap();
        assert_eq!(
            s.command,
            SpliceCommand::TimeSignal {
                pts_time: Some(0x72BD_0050)
            }
        );
        let seg: Vec<_> = s.segmentation().collect();
        assert_eq!(seg.len(), 1);
        assert_eq!(seg[0].event_id, 0x4800_008E);
        assert_eq!(seg[0].type_id, 0x34);
        assert_eq!(seg[0].duration, Some(0x01A5_99B0));
        assert_eq!(seg[0].upid_type, 0x08);
        assert_eq!(
            seg[0].upid,
            vec![0x00, 0x00, 0x00, 0x00, 0x2C, 0xA0, 0xA1, 0x8A]
        );
        assert_eq!(seg[0].delivery_restrictions, Some(0x0F));
        assert_eq!((seg[0].segment_num, seg[0].segments_expected), (2, 0));
        assert_eq!(
            seg[0].sub_segment, None,
            "this older example has no sub-segment fields"
        );
        assert_eq!(
            s.ad_signal(),
            Some(AdSignal::Start {
                duration_s: Some(307.0)
            })
        );
        // Re-encoding gives the same bytes: the encoder and decoder agree with the spec.
        assert_eq!(base64_encode(&encode(&s).unwrap()), SPEC_TIME_SIGNAL);
    }

    #[test]
    fn decodes_the_spec_splice_insert_example() {
        let s = decode(&parse_payload(SPEC_SPLICE_INSERT).unwrap()).unwrap();
        let SpliceCommand::Insert(i) = &s.command else {
            panic!("not an insert: {s:?}")
        };
        assert_eq!(i.event_id, 0x4800_008F);
        assert!(i.out_of_network && i.program_splice && !i.immediate);
        assert_eq!(i.pts_time, Some(0x7369_C02E));
        assert_eq!(i.break_duration, Some((true, 0x0052_CCF5)));
        assert_eq!(
            s.ad_signal(),
            Some(AdSignal::Start {
                duration_s: Some(0x0052_CCF5 as f64 / 90_000.0)
            })
        );
        assert_eq!(base64_encode(&encode(&s).unwrap()), SPEC_SPLICE_INSERT);
    }

    /// Hand-computed: every field of a product cue section, byte by byte.
    #[test]
    fn product_cue_golden_bytes() {
        let id = "cue-0123456789abcdef";
        let bytes = product_cue_section(id, "sku-1", 900_000, Some(450_000)).unwrap();
        let ev = event_id(id).to_be_bytes();
        let mut expected = vec![
            0xFC, 0x30, 0x00, // table_id, flags + sap_type 3, section_length (patched below)
            0x00, // protocol_version
            0x00, 0x00, 0x00, 0x00, 0x00, // encrypted 0, algorithm 0, pts_adjustment 0
            0xFF, // cw_index
            0xFF, 0xF0, 0x05, // tier 0xFFF, splice_command_length 5
            0x06, // time_signal
            0xFE, 0x00, 0x0D, 0xBB, 0xA0, // time_specified, reserved, pts_time 900000
            0x00, 0x00, // descriptor_loop_length (patched below)
            0x02, 0x00, // segmentation_descriptor, length (patched below)
            0x43, 0x55, 0x45, 0x49, // "CUEI"
            ev[0], ev[1], ev[2], ev[3], // segmentation_event_id
            0x7F,  // cancel 0, compliance 1, reserved
            0xFF,  // program_segmentation 1, duration 1, delivery_not_restricted 1, reserved
            0x00, 0x00, 0x06, 0xDD, 0xD0, // segmentation_duration 450000
            0x0C, 0x09, b'S', b'H', b'C', b'U', b's', b'k', b'u', b'-', b'1', // MPU UPID
            0x40, 0x00, 0x00, // type 0x40, segment_num, segments_expected
        ];
        let descriptor_len = expected.len() - 23;
        expected[22] = descriptor_len as u8;
        expected[19] = 0;
        expected[20] = (descriptor_len + 2) as u8;
        let section_length = expected.len() - 3 + 4;
        expected[2] = section_length as u8;
        let crc = crc32_mpeg2(&expected);
        expected.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(hex::encode(&bytes), hex::encode(&expected));
        let back = decode(&bytes).unwrap();
        let seg = back.segmentation().next().unwrap();
        assert_eq!(&seg.upid[4..], b"sku-1");
        assert_eq!(seg.type_id, TYPE_PRODUCT_START);
        assert_eq!(back.ad_signal(), None, "a product cue is not an ad break");
        assert!(to_hls_hex(&bytes).starts_with("0xFC30"));
        assert_eq!(parse_payload(&to_hls_hex(&bytes)).unwrap(), bytes);
    }

    #[test]
    fn open_cue_has_no_duration_and_long_ids_are_refused() {
        let bytes = product_cue_section("c", "p", 1, None).unwrap();
        let seg = decode(&bytes)
            .unwrap()
            .segmentation()
            .next()
            .unwrap()
            .clone();
        assert_eq!(seg.duration, None);
        assert!(product_cue_section("c", &"x".repeat(MAX_PRODUCT_ID_BYTES + 1), 1, None).is_err());
        assert!(
            product_cue_section("c", &"x".repeat(MAX_PRODUCT_ID_BYTES), 1, Some(1 << 39)).is_ok()
        );
    }

    #[test]
    fn bad_sections_are_errors() {
        let mut bytes = product_cue_section("c", "p", 1, None).unwrap();
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(
            matches!(decode(&bytes), Err(ManifestError::Scte35 { why }) if why.contains("CRC"))
        );
        assert!(decode(&[0xFC]).is_err());
        assert!(decode(&[0x00, 0x30, 0x11]).is_err());
        assert!(parse_payload("0xZZ").is_err());
    }

    #[test]
    fn splice_insert_in_and_cancel() {
        let mk = |out, cancel| SpliceInfoSection {
            pts_adjustment: 0,
            cw_index: 0xFF,
            tier: 0xFFF,
            command: SpliceCommand::Insert(SpliceInsert {
                event_id: 7,
                cancel,
                out_of_network: out,
                program_splice: true,
                immediate: true,
                ..Default::default()
            }),
            descriptors: vec![],
        };
        let back = |s: &SpliceInfoSection| decode(&encode(s).unwrap()).unwrap();
        assert_eq!(back(&mk(false, false)).ad_signal(), Some(AdSignal::End));
        assert_eq!(
            back(&mk(true, false)).ad_signal(),
            Some(AdSignal::Start { duration_s: None })
        );
        assert_eq!(back(&mk(true, true)).ad_signal(), None);
    }

    /// Found by the `scte35_round_trip` fuzz target: a component-mode splice_insert
    /// (program_splice_flag 0) was re-encoded as a program splice.
    #[test]
    fn component_mode_splice_insert_round_trips() {
        let input = [
            0xFC, 0x30, 0x2F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xF0, 0x14, 0x05,
            0x48, 0x00, 0x01, 0x00, 0x0A, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x52,
            0xCC, 0xF5, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0A, 0x00, 0x08, 0x43, 0x55, 0x45, 0x49,
            0x00, 0x00, 0x01, 0x35, 0x9F, 0x22, 0x00, 0xDC,
        ];
        let section = decode(&input).unwrap();
        let SpliceCommand::Insert(insert) = &section.command else {
            panic!("{section:?}");
        };
        assert!(!insert.program_splice);
        let bytes = encode(&section).unwrap();
        assert_eq!(decode(&bytes).unwrap(), section);
        assert_eq!(encode(&decode(&bytes).unwrap()).unwrap(), bytes);
    }

    #[test]
    fn pts_helpers() {
        assert_eq!(pts_from_seconds(10.0), 900_000);
        assert_eq!(pts_from_seconds(-1.0), 0);
        assert_eq!(pts_from_seconds(f64::NAN), 0);
        assert!(pts_from_seconds(95_443.717_7 + 1.0) < (1 << 33));
        assert_eq!(event_id("a"), event_id("a"));
        assert_ne!(event_id("a"), event_id("b"));
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = decode(&data);
        }

        #[test]
        fn product_sections_round_trip(id in ".{0,40}", product in "[ -~]{0,100}", pts in 0u64..(1 << 33), dur in proptest::option::of(0u64..(1 << 40))) {
            let bytes = product_cue_section(&id, &product, pts, dur).unwrap();
            let s = decode(&bytes).unwrap();
            proptest::prop_assert_eq!(&s.command, &SpliceCommand::TimeSignal { pts_time: Some(pts) });
            let seg = s.segmentation().next().unwrap();
            proptest::prop_assert_eq!(seg.duration, dur);
            proptest::prop_assert_eq!(&seg.upid[4..], product.as_bytes());
            proptest::prop_assert_eq!(encode(&s).unwrap(), bytes);
        }
    }
}
