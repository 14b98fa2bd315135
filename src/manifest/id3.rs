//! ID3v2.4 tags carrying a cue: a `TXXX` frame (description `shopcue`, the cue JSON, UTF-8)
//! that players expose as text, and a `PRIV` frame (owner `com.shopcue.cue`, the same JSON
//! as bytes) for players that only pass private frames through. Sizes are synchsafe
//! integers; no unsynchronisation, no extended header, no footer.

use super::ManifestError;
use crate::cue::Cue;

pub const TXXX_DESCRIPTION: &str = "shopcue";
pub const PRIV_OWNER: &str = "com.shopcue.cue";
/// The largest size a synchsafe 28-bit integer can hold.
pub const MAX_SYNCHSAFE: usize = (1 << 28) - 1;

fn err(why: impl Into<String>) -> ManifestError {
    ManifestError::Id3 { why: why.into() }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Id3Frame {
    /// User-defined text: description and value (UTF-8).
    Txxx { description: String, value: String },
    /// Private frame: owner identifier (Latin-1 text, here ASCII) and bytes.
    Priv { owner: String, data: Vec<u8> },
    /// Any other frame, as its id and body.
    Other { id: [u8; 4], data: Vec<u8> },
}

pub fn synchsafe(n: usize) -> Result<[u8; 4], ManifestError> {
    if n > MAX_SYNCHSAFE {
        return Err(ManifestError::TooLarge {
            what: "ID3 size",
            bytes: n,
            limit: MAX_SYNCHSAFE,
        });
    }
    Ok([
        (n >> 21) as u8 & 0x7F,
        (n >> 14) as u8 & 0x7F,
        (n >> 7) as u8 & 0x7F,
        n as u8 & 0x7F,
    ])
}

pub fn from_synchsafe(b: [u8; 4]) -> Result<usize, ManifestError> {
    if b.iter().any(|x| x & 0x80 != 0) {
        return Err(err("size is not synchsafe"));
    }
    Ok((b[0] as usize) << 21 | (b[1] as usize) << 14 | (b[2] as usize) << 7 | b[3] as usize)
}

/// An ID3v2.4 tag with these frames.
pub fn encode_tag(frames: &[Id3Frame]) -> Result<Vec<u8>, ManifestError> {
    let mut body = Vec::new();
    for f in frames {
        let (id, data): ([u8; 4], Vec<u8>) = match f {
            Id3Frame::Txxx { description, value } => {
                if description.contains('\0') {
                    return Err(err("TXXX description holds a NUL"));
                }
                let mut d = vec![0x03]; // UTF-8
                d.extend_from_slice(description.as_bytes());
                d.push(0);
                d.extend_from_slice(value.as_bytes());
                (*b"TXXX", d)
            }
            Id3Frame::Priv { owner, data } => {
                if owner.contains('\0') || !owner.is_ascii() {
                    return Err(err("PRIV owner must be ASCII without NUL"));
                }
                let mut d = owner.as_bytes().to_vec();
                d.push(0);
                d.extend_from_slice(data);
                (*b"PRIV", d)
            }
            Id3Frame::Other { id, data } => (*id, data.clone()),
        };
        body.extend_from_slice(&id);
        body.extend_from_slice(&synchsafe(data.len())?);
        body.extend_from_slice(&[0, 0]); // frame flags
        body.extend_from_slice(&data);
    }
    let mut tag = b"ID3".to_vec();
    tag.extend_from_slice(&[4, 0, 0]); // v2.4.0, no flags
    tag.extend_from_slice(&synchsafe(body.len())?);
    tag.extend_from_slice(&body);
    Ok(tag)
}

/// Parses a tag written by [`encode_tag`] (v2.3/v2.4, no unsynchronisation, no extended
/// header), returning its frames. Padding (zeros) ends the frame list.
pub fn decode_tag(tag: &[u8]) -> Result<Vec<Id3Frame>, ManifestError> {
    if tag.len() < 10 || &tag[..3] != b"ID3" {
        return Err(err("no ID3 header"));
    }
    let version = tag[3];
    if !(3..=4).contains(&version) {
        return Err(err(format!("ID3v2.{version} not supported")));
    }
    if tag[5] & 0xC0 != 0 {
        return Err(err("unsynchronised or extended-header tags not supported"));
    }
    let size = from_synchsafe([tag[6], tag[7], tag[8], tag[9]])?;
    let body = tag
        .get(10..10 + size)
        .ok_or_else(|| err("tag runs past its data"))?;
    let mut frames = Vec::new();
    let mut rest = body;
    while rest.len() >= 10 && rest[0] != 0 {
        let id = [rest[0], rest[1], rest[2], rest[3]];
        let raw = [rest[4], rest[5], rest[6], rest[7]];
        let len = if version == 4 {
            from_synchsafe(raw)?
        } else {
            u32::from_be_bytes(raw) as usize
        };
        let data = rest
            .get(10..10 + len)
            .ok_or_else(|| err("frame runs past the tag"))?;
        frames.push(match &id {
            b"TXXX" => {
                let text = data.get(1..).ok_or_else(|| err("empty TXXX"))?;
                let nul = text
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or_else(|| err("TXXX without description end"))?;
                Id3Frame::Txxx {
                    description: String::from_utf8_lossy(&text[..nul]).into_owned(),
                    value: String::from_utf8_lossy(&text[nul + 1..])
                        .trim_end_matches('\0')
                        .to_string(),
                }
            }
            b"PRIV" => {
                let nul = data
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or_else(|| err("PRIV without owner end"))?;
                Id3Frame::Priv {
                    owner: String::from_utf8_lossy(&data[..nul]).into_owned(),
                    data: data[nul + 1..].to_vec(),
                }
            }
            _ => Id3Frame::Other {
                id,
                data: data.to_vec(),
            },
        });
        rest = &rest[10 + len..];
    }
    Ok(frames)
}

/// The tag a cue travels in: `TXXX` (`shopcue`, JSON) and `PRIV` (`com.shopcue.cue`, JSON).
pub fn cue_tag(cue: &Cue) -> Result<Vec<u8>, ManifestError> {
    let json = serde_json::to_string(cue).map_err(|e| ManifestError::BadCue {
        id: cue.id.clone(),
        why: e.to_string(),
    })?;
    encode_tag(&[
        Id3Frame::Txxx {
            description: TXXX_DESCRIPTION.into(),
            value: json.clone(),
        },
        Id3Frame::Priv {
            owner: PRIV_OWNER.into(),
            data: json.into_bytes(),
        },
    ])
}

/// The cue back out of a tag (from its `TXXX` frame, else its `PRIV` frame).
pub fn cue_from_tag(tag: &[u8]) -> Result<Cue, ManifestError> {
    let frames = decode_tag(tag)?;
    let json = frames
        .iter()
        .find_map(|f| match f {
            Id3Frame::Txxx { description, value } if description == TXXX_DESCRIPTION => {
                Some(value.as_bytes().to_vec())
            }
            _ => None,
        })
        .or_else(|| {
            frames.iter().find_map(|f| match f {
                Id3Frame::Priv { owner, data } if owner == PRIV_OWNER => Some(data.clone()),
                _ => None,
            })
        })
        .ok_or_else(|| err("no shopcue frame"))?;
    serde_json::from_slice(&json).map_err(|e| err(format!("cue JSON: {e}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    pub fn sample_cue() -> Cue {
        let t = DateTime::parse_from_rfc3339("2026-11-21T10:00:00.040Z")
            .unwrap()
            .with_timezone(&Utc);
        Cue {
            source: Default::default(),
            id: crate::cue::cue_id("news", 3, "sku-1"),
            channel: "news".into(),
            product_id: "sku-1".into(),
            start: t,
            end: None,
            pts: 12.04,
            score: 0.8,
            shot: 3,
            boxes: vec![],
            product: None,
        }
    }

    #[test]
    fn synchsafe_known_values() {
        assert_eq!(synchsafe(0).unwrap(), [0, 0, 0, 0]);
        assert_eq!(synchsafe(127).unwrap(), [0, 0, 0, 0x7F]);
        assert_eq!(synchsafe(128).unwrap(), [0, 0, 1, 0]);
        assert_eq!(synchsafe(257).unwrap(), [0, 0, 2, 1]);
        assert_eq!(synchsafe(MAX_SYNCHSAFE).unwrap(), [0x7F; 4]);
        assert!(synchsafe(MAX_SYNCHSAFE + 1).is_err());
        assert_eq!(from_synchsafe([0, 0, 2, 1]).unwrap(), 257);
        assert!(from_synchsafe([0, 0, 0x80, 0]).is_err());
    }

    #[test]
    fn golden_txxx_priv_bytes() {
        let tag = encode_tag(&[
            Id3Frame::Txxx {
                description: "shopcue".into(),
                value: "{}".into(),
            },
            Id3Frame::Priv {
                owner: "o".into(),
                data: vec![0xAB],
            },
        ])
        .unwrap();
        let mut expected = b"ID3\x04\x00\x00\x00\x00\x00\x22".to_vec(); // 34 bytes of frames
        expected.extend_from_slice(b"TXXX\x00\x00\x00\x0B\x00\x00\x03shopcue\x00{}");
        expected.extend_from_slice(b"PRIV\x00\x00\x00\x03\x00\x00o\x00\xAB");
        assert_eq!(tag, expected);
    }

    #[test]
    fn cue_round_trips_and_large_frames_use_synchsafe_sizes() {
        let mut cue = sample_cue();
        cue.product = Some(serde_json::json!({ "title": "x".repeat(300) }));
        let tag = cue_tag(&cue).unwrap();
        assert_eq!(cue_from_tag(&tag).unwrap(), cue);
        assert!(tag.iter().skip(6).take(4).all(|b| b & 0x80 == 0));
        let frames = decode_tag(&tag).unwrap();
        assert!(matches!(&frames[1], Id3Frame::Priv { owner, .. } if owner == PRIV_OWNER));
    }

    #[test]
    fn bad_tags_are_errors() {
        assert!(decode_tag(b"ID2").is_err());
        assert!(decode_tag(b"ID3\x04\x00\x00\x00\x00\x01\x00").is_err());
        assert!(cue_from_tag(&encode_tag(&[]).unwrap()).is_err());
        assert!(
            encode_tag(&[Id3Frame::Priv {
                owner: "a\0b".into(),
                data: vec![]
            }])
            .is_err()
        );
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut d = b"ID3\x04\x00\x00".to_vec();
            d.extend(data);
            let _ = decode_tag(&d);
        }

        #[test]
        fn frames_round_trip(desc in "[a-z]{0,10}", value in "[^\u{0}]{0,200}", data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let frames = vec![
                Id3Frame::Txxx { description: desc, value },
                Id3Frame::Priv { owner: PRIV_OWNER.into(), data },
            ];
            proptest::prop_assert_eq!(decode_tag(&encode_tag(&frames).unwrap()).unwrap(), frames);
        }
    }
}
