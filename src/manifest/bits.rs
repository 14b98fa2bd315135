//! Bit-level reading and writing, CRC-32/MPEG-2 and base64 decoding: the small tools the
//! SCTE-35 and MPEG-TS code share.

/// Writes fields most significant bit first, as MPEG and SCTE tables are laid out.
#[derive(Debug, Default)]
pub(crate) struct BitWriter {
    bytes: Vec<u8>,
    /// Bits already used in the last byte (0 when byte-aligned).
    used: u8,
}

impl BitWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The low `n` bits of `value` (n ≤ 64).
    pub fn put(&mut self, n: u32, value: u64) {
        for i in (0..n).rev() {
            let bit = ((value >> i) & 1) as u8;
            if self.used == 0 {
                self.bytes.push(0);
            }
            if let Some(last) = self.bytes.last_mut() {
                *last |= bit << (7 - self.used);
            }
            self.used = (self.used + 1) % 8;
        }
    }

    pub fn put_bytes(&mut self, b: &[u8]) {
        if self.used == 0 {
            self.bytes.extend_from_slice(b);
        } else {
            for &x in b {
                self.put(8, x as u64);
            }
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads fields most significant bit first; running off the end is an error, never a panic.
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub fn get(&mut self, n: u32) -> Result<u64, String> {
        if self.pos + n as usize > self.data.len() * 8 {
            return Err(format!(
                "truncated: needs {n} more bits at bit {}",
                self.pos
            ));
        }
        let mut v = 0u64;
        for _ in 0..n {
            let byte = self.data[self.pos / 8];
            v = (v << 1) | ((byte >> (7 - self.pos % 8)) & 1) as u64;
            self.pos += 1;
        }
        Ok(v)
    }

    pub fn flag(&mut self) -> Result<bool, String> {
        Ok(self.get(1)? == 1)
    }

    pub fn skip(&mut self, n: u32) -> Result<(), String> {
        self.get_bits_unchecked_skip(n)
    }

    fn get_bits_unchecked_skip(&mut self, n: u32) -> Result<(), String> {
        if self.pos + n as usize > self.data.len() * 8 {
            return Err(format!(
                "truncated: needs {n} more bits at bit {}",
                self.pos
            ));
        }
        self.pos += n as usize;
        Ok(())
    }

    /// `n` whole bytes; the reader must be byte-aligned.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        if !self.pos.is_multiple_of(8) {
            return Err("unaligned byte read".into());
        }
        let start = self.pos / 8;
        let end = start
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "truncated: needs {n} bytes at byte {start}, {} left",
                    self.data.len().saturating_sub(start)
                )
            })?;
        self.pos = end * 8;
        Ok(&self.data[start..end])
    }

    pub fn byte_pos(&self) -> usize {
        self.pos.div_ceil(8)
    }

    pub fn remaining_bytes(&self) -> usize {
        self.data.len().saturating_sub(self.byte_pos())
    }
}

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04C1_1DB7
            } else {
                c << 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32/MPEG-2 (poly 0x04C11DB7, init 0xFFFFFFFF, not reflected, no final xor): the CRC
/// of PSI tables and of SCTE-35 sections. Over a whole section including its CRC it gives 0.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc = (crc << 8) ^ CRC_TABLE[(((crc >> 24) as u8) ^ b) as usize];
    }
    crc
}

/// Standard base64 (RFC 4648, `+/`, padding optional, whitespace refused), as origins
/// write SCTE-35 in `EXT-OATCLS-SCTE35` and friends.
pub fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut nbits = 0u32;
    for (i, c) in s.bytes().enumerate() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return Err(format!("invalid base64 character at {i}")),
        };
        acc = (acc << 6) | v as u32;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((acc >> nbits) as u8);
            acc &= (1 << nbits) - 1;
        }
    }
    if nbits >= 6 {
        return Err("truncated base64".into());
    }
    Ok(out)
}

/// Standard base64 with padding (tests write origin markers with it).
#[cfg(test)]
pub fn base64_encode(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_known_vectors() {
        // The CRC-32/MPEG-2 check value of "123456789".
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
        assert_eq!(crc32_mpeg2(b""), 0xFFFF_FFFF);
        // A PAT with one program (program 1 → PMT PID 0x1000), as ffmpeg writes it.
        let pat = [
            0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01, 0xF0, 0x00,
        ];
        assert_eq!(crc32_mpeg2(&pat), 0x2AB1_04B2);
    }

    #[test]
    fn bits_round_trip() {
        let mut w = BitWriter::new();
        w.put(1, 1);
        w.put(6, 0x3F);
        w.put(33, 0x1_2345_6789);
        w.put_bytes(b"AB");
        let bytes = w.into_bytes();
        assert_eq!(bytes.len(), 7);
        let mut r = BitReader::new(&bytes);
        assert!(r.flag().unwrap());
        assert_eq!(r.get(6).unwrap(), 0x3F);
        assert_eq!(r.get(33).unwrap(), 0x1_2345_6789);
        assert_eq!(r.bytes(2).unwrap(), b"AB");
        assert!(r.get(1).is_err());
        assert!(r.bytes(1).is_err());
    }

    #[test]
    fn base64_round_trip_and_errors() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
            assert_eq!(base64_decode(&base64_encode(data)).unwrap(), data);
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_decode("/DA=").unwrap(), vec![0xFC, 0x30]);
        assert!(base64_decode("a b").is_err());
        assert!(base64_decode("A").is_err());
    }
}
