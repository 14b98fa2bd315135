//! SCTE-35 splice_info_sections (`manifest::scte35`): any section that decodes encodes, and
//! what it encodes to decodes to the same section and encodes to the same bytes. The
//! section as text (hex `0x…` or base64, as in `#EXT-X-DATERANGE` and `#EXT-OATCLS-SCTE35`)
//! goes through the same checks.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shopcue::manifest::crc32_mpeg2;
use shopcue::manifest::scte35::{decode, encode, parse_payload, to_hls_hex};

fuzz_target!(|data: &[u8]| {
    check(data);
    // Mutations break the CRC-32 almost always: the same bytes with a good CRC reach the
    // parser behind the check.
    if let Some(fixed) = with_good_crc(data) {
        check(&fixed);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(bytes) = parse_payload(text)
    {
        check(&bytes);
        assert_eq!(parse_payload(&to_hls_hex(&bytes)).ok(), Some(bytes));
    }
});

fn check(data: &[u8]) {
    let Ok(section) = decode(data) else {
        return;
    };
    let _ = section.ad_signal();
    let bytes =
        encode(&section).unwrap_or_else(|e| panic!("{section:?} decodes, not encodes: {e}"));
    let again =
        decode(&bytes).unwrap_or_else(|e| panic!("encoded {section:?} does not decode: {e}"));
    assert_eq!(again, section, "decode(encode(s)) != s");
    assert_eq!(encode(&again).unwrap(), bytes, "encoding is not stable");
}

/// `data` with the CRC-32 of the section its `section_length` announces put right.
fn with_good_crc(data: &[u8]) -> Option<Vec<u8>> {
    let len = (u16::from_be_bytes([*data.get(1)?, *data.get(2)?]) & 0x0FFF) as usize;
    let total = 3 + len;
    if total > data.len() || len < 4 {
        return None;
    }
    let mut fixed = data.to_vec();
    let crc = crc32_mpeg2(&fixed[..total - 4]);
    fixed[total - 4..total].copy_from_slice(&crc.to_be_bytes());
    Some(fixed)
}
