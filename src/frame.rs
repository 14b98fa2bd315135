//! The project's own picture and frame types: what `media` hands to analysis. Nothing here
//! knows GStreamer.

use chrono::{DateTime, Utc};

/// A planar YUV 4:2:0 picture, planes packed without padding: Y (`width`×`height`), then U
/// and V (each `chroma_width`×`chroma_height`).
#[derive(Clone, PartialEq)]
pub struct I420Image {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for I420Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "I420Image({}x{})", self.width, self.height)
    }
}

impl I420Image {
    pub fn chroma_width(&self) -> usize {
        (self.width as usize).div_ceil(2)
    }
    pub fn chroma_height(&self) -> usize {
        (self.height as usize).div_ceil(2)
    }
    /// Bytes an image of this size takes.
    pub fn size_for(width: u32, height: u32) -> usize {
        let (w, h) = (width as usize, height as usize);
        w * h + 2 * w.div_ceil(2) * h.div_ceil(2)
    }
    /// A uniform picture (tests, synthetic input).
    pub fn filled(width: u32, height: u32, y: u8, u: u8, v: u8) -> Self {
        let luma = width as usize * height as usize;
        let chroma = (width as usize).div_ceil(2) * (height as usize).div_ceil(2);
        let mut data = vec![y; luma + 2 * chroma];
        data[luma..luma + chroma].fill(u);
        data[luma + chroma..].fill(v);
        Self {
            width,
            height,
            data,
        }
    }
    pub fn y(&self) -> &[u8] {
        &self.data[..self.width as usize * self.height as usize]
    }
    pub fn u(&self) -> &[u8] {
        let luma = self.width as usize * self.height as usize;
        &self.data[luma..luma + self.chroma_width() * self.chroma_height()]
    }
    pub fn v(&self) -> &[u8] {
        let luma = self.width as usize * self.height as usize;
        &self.data[luma + self.chroma_width() * self.chroma_height()..]
    }

    /// Packed RGB (BT.601 limited range), for the few frames that go to inference.
    pub fn to_rgb(&self) -> Vec<u8> {
        let (w, h) = (self.width as usize, self.height as usize);
        let cw = self.chroma_width();
        let (y, u, v) = (self.y(), self.u(), self.v());
        let mut out = vec![0u8; w * h * 3];
        for row in 0..h {
            let crow = row / 2;
            for col in 0..w {
                let c = crow * cw + col / 2;
                let yy = (y[row * w + col] as i32 - 16) * 298;
                let uu = u[c] as i32 - 128;
                let vv = v[c] as i32 - 128;
                let r = (yy + 409 * vv + 128) >> 8;
                let g = (yy - 100 * uu - 208 * vv + 128) >> 8;
                let b = (yy + 516 * uu + 128) >> 8;
                let o = (row * w + col) * 3;
                out[o] = r.clamp(0, 255) as u8;
                out[o + 1] = g.clamp(0, 255) as u8;
                out[o + 2] = b.clamp(0, 255) as u8;
            }
        }
        out
    }
}

/// A decoded frame of a channel, in decode (= presentation) order.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Counted from 0 for the channel's (or file's) first frame.
    pub index: u64,
    /// Media time of the frame in nanoseconds from the channel's first frame.
    pub pts_ns: u64,
    /// When the frame was (or will be) shown live: from EXT-X-PROGRAM-DATE-TIME, the
    /// sidecar's own anchor, or the receive time (SRT).
    pub wallclock: DateTime<Utc>,
    pub image: I420Image,
}

/// RFC 3339 UTC with milliseconds, the one time format of every output.
pub fn rfc3339_ms(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_of_odd_sizes() {
        let img = I420Image::filled(5, 3, 10, 20, 30);
        assert_eq!(img.data.len(), I420Image::size_for(5, 3));
        assert_eq!(img.y().len(), 15);
        assert_eq!(img.u(), &[20; 6]);
        assert_eq!(img.v(), &[30; 6]);
    }

    #[test]
    fn grey_converts_to_grey() {
        let rgb = I420Image::filled(2, 2, 126, 128, 128).to_rgb();
        assert!(rgb.iter().all(|&c| (c as i32 - 128).abs() <= 1), "{rgb:?}");
    }
}
