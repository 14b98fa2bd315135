//! Pictures and pre-processing, in plain Rust: the RGB picture type handed to the models,
//! crops, an antialiased resampler, and the packing of a region into a model's input tensor
//! (letterbox / stretch / centre crop, channel order, normalisation, layout).

use serde::{Deserialize, Serialize};

use super::InferenceError;
use crate::frame::I420Image;

/// A packed 8-bit RGB picture, rows top to bottom, no padding.
#[derive(Clone, PartialEq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for RgbImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RgbImage({}x{})", self.width, self.height)
    }
}

impl RgbImage {
    /// `data` must hold exactly `width * height * 3` bytes.
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Result<Self, InferenceError> {
        let want = width as usize * height as usize * 3;
        if width == 0 || height == 0 || data.len() != want {
            return Err(InferenceError::Image {
                what: "raw RGB buffer".into(),
                why: format!("{width}x{height} needs {want} bytes, got {}", data.len()),
            });
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    pub fn filled(width: u32, height: u32, rgb: [u8; 3]) -> Self {
        let n = width as usize * height as usize;
        let mut data = Vec::with_capacity(n * 3);
        for _ in 0..n {
            data.extend_from_slice(&rgb);
        }
        Self {
            width,
            height,
            data,
        }
    }

    /// Convert a decoded video frame (BT.601 limited range).
    pub fn from_i420(img: &I420Image) -> Self {
        Self {
            width: img.width,
            height: img.height,
            data: img.to_rgb(),
        }
    }

    /// Decode JPEG or PNG bytes; `what` names the source in errors (a path, a URL).
    pub fn decode(bytes: &[u8], what: &str) -> Result<Self, InferenceError> {
        let img = image::load_from_memory(bytes).map_err(|e| InferenceError::Image {
            what: what.to_string(),
            why: e.to_string(),
        })?;
        let rgb = img.to_rgb8();
        let (width, height) = rgb.dimensions();
        if width == 0 || height == 0 {
            return Err(InferenceError::Image {
                what: what.to_string(),
                why: "empty picture".into(),
            });
        }
        Ok(Self {
            width,
            height,
            data: rgb.into_raw(),
        })
    }

    /// Read and decode a picture file.
    pub fn open(path: &std::path::Path) -> Result<Self, InferenceError> {
        let bytes = std::fs::read(path).map_err(|e| InferenceError::Image {
            what: path.display().to_string(),
            why: e.to_string(),
        })?;
        Self::decode(&bytes, &path.display().to_string())
    }

    /// Encode as PNG (debugging, test fixtures).
    pub fn to_png(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let enc = image::codecs::png::PngEncoder::new(&mut out);
        use image::ImageEncoder;
        // Writing into a Vec only fails on inconsistent sizes, which `new` rules out.
        let _ = enc.write_image(
            &self.data,
            self.width,
            self.height,
            image::ExtendedColorType::Rgb8,
        );
        out
    }

    /// A JPEG no larger than `max_side` on either side (the console's cue crops).
    pub fn to_jpeg_thumbnail(&self, max_side: u32, quality: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let Some(buf) = image::RgbImage::from_raw(self.width, self.height, self.data.clone())
        else {
            return out;
        };
        let scale = (max_side.max(1) as f32 / self.width.max(self.height).max(1) as f32).min(1.0);
        let (w, h) = (
            ((self.width as f32 * scale).round() as u32).max(1),
            ((self.height as f32 * scale).round() as u32).max(1),
        );
        let small = image::imageops::thumbnail(&buf, w, h);
        let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
        use image::ImageEncoder;
        // Writing into a Vec only fails on inconsistent sizes, which `thumbnail` rules out.
        let _ = enc.write_image(small.as_raw(), w, h, image::ExtendedColorType::Rgb8);
        out
    }

    #[inline]
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let o = (y as usize * self.width as usize + x as usize) * 3;
        [self.data[o], self.data[o + 1], self.data[o + 2]]
    }

    /// The whole picture as a pixel rectangle.
    pub fn full_rect(&self) -> Rect {
        Rect {
            x: 0.0,
            y: 0.0,
            w: self.width as f32,
            h: self.height as f32,
        }
    }

    /// Copy a region (clamped to the picture) into a new picture.
    pub fn crop(&self, rect: Rect) -> RgbImage {
        let r = rect.clamp_to(self.width, self.height);
        let x0 = r.x.floor() as usize;
        let y0 = r.y.floor() as usize;
        let x1 = ((r.x + r.w).ceil() as usize).clamp(x0 + 1, self.width as usize);
        let y1 = ((r.y + r.h).ceil() as usize).clamp(y0 + 1, self.height as usize);
        let (w, h) = (x1 - x0, y1 - y0);
        let mut data = Vec::with_capacity(w * h * 3);
        for row in y0..y1 {
            let start = (row * self.width as usize + x0) * 3;
            data.extend_from_slice(&self.data[start..start + w * 3]);
        }
        RgbImage {
            width: w as u32,
            height: h as u32,
            data,
        }
    }
}

/// A rectangle in pixels of some picture (fractions allowed).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rect {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl Rect {
    /// Intersect with a `width`×`height` picture; never narrower than one pixel.
    pub fn clamp_to(&self, width: u32, height: u32) -> Rect {
        let (wf, hf) = (width as f32, height as f32);
        let x0 = self.x.clamp(0.0, wf - 1.0);
        let y0 = self.y.clamp(0.0, hf - 1.0);
        let x1 = (self.x + self.w).clamp(x0 + 1.0, wf);
        let y1 = (self.y + self.h).clamp(y0 + 1.0, hf);
        Rect {
            x: x0,
            y: y0,
            w: x1 - x0,
            h: y1 - y0,
        }
    }

    /// The same region as a fraction of a `width`×`height` picture.
    pub fn to_bbox(&self, width: u32, height: u32) -> BBox {
        BBox {
            x: self.x / width as f32,
            y: self.y / height as f32,
            w: self.w / width as f32,
            h: self.h / height as f32,
        }
    }

    /// Grow (factor > 1) or shrink around the centre.
    pub fn scaled(&self, factor: f32) -> Rect {
        let (cx, cy) = (self.x + self.w / 2.0, self.y + self.h / 2.0);
        let (w, h) = (self.w * factor, self.h * factor);
        Rect {
            x: cx - w / 2.0,
            y: cy - h / 2.0,
            w,
            h,
        }
    }
}

/// A box as fractions of the picture's width and height: `x, y` top-left, `w, h` size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl BBox {
    pub fn to_rect(&self, width: u32, height: u32) -> Rect {
        Rect {
            x: self.x * width as f32,
            y: self.y * height as f32,
            w: self.w * width as f32,
            h: self.h * height as f32,
        }
    }
    pub fn area(&self) -> f32 {
        self.w.max(0.0) * self.h.max(0.0)
    }
    pub fn as_array(&self) -> [f32; 4] {
        [self.x, self.y, self.w, self.h]
    }
}

/// Channel order a model expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

/// Memory layout of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// How a region is fitted into the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Keep the aspect ratio, pad the rest with `pad_value` (detectors).
    Letterbox,
    /// Scale each axis independently to fill the input.
    Stretch,
    /// Take the centred region of the input's aspect covering `crop_fraction` of the shorter
    /// side, then scale it (classic ImageNet evaluation).
    CenterCrop,
}

/// Where a letterboxed picture sits inside the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Align {
    TopLeft,
    Center,
}

/// Everything needed to turn a picture region into a model input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub width: usize,
    pub height: usize,
    pub channels: ChannelOrder,
    pub layout: Layout,
    /// Applied to the 0..255 value first, then `(v * scale - mean[c]) / std[c]`, `c` in the
    /// model's channel order.
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub resize: ResizeMode,
    pub align: Align,
    pub pad_value: u8,
    pub crop_fraction: f32,
}

impl InputSpec {
    pub fn tensor_len(&self) -> usize {
        self.width * self.height * 3
    }
}

/// Maps input-tensor pixel coordinates back to the source picture:
/// `src = origin + (tensor - offset) / scale`, per axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    pub origin_x: f32,
    pub origin_y: f32,
    pub offset_x: f32,
    pub offset_y: f32,
    pub scale_x: f32,
    pub scale_y: f32,
}

impl Placement {
    /// A box in tensor pixels (x0, y0, x1, y1) → source pixels.
    pub fn to_source(&self, x0: f32, y0: f32, x1: f32, y1: f32) -> Rect {
        let sx = |v: f32| self.origin_x + (v - self.offset_x) / self.scale_x;
        let sy = |v: f32| self.origin_y + (v - self.offset_y) / self.scale_y;
        let (a, b, c, d) = (sx(x0), sy(y0), sx(x1), sy(y1));
        Rect {
            x: a,
            y: b,
            w: c - a,
            h: d - b,
        }
    }
}

/// Pack `rect` of `src` into `out` (length [`InputSpec::tensor_len`]) as the model wants it.
pub fn fill_input(spec: &InputSpec, src: &RgbImage, rect: Rect, out: &mut [f32]) -> Placement {
    debug_assert_eq!(out.len(), spec.tensor_len());
    let rect = rect.clamp_to(src.width, src.height);
    let (tw, th) = (spec.width, spec.height);
    // Where the picture goes inside the input, and at what size.
    let (region, dst_x, dst_y, dst_w, dst_h) = match spec.resize {
        ResizeMode::Stretch => (rect, 0usize, 0usize, tw, th),
        ResizeMode::CenterCrop => {
            let target_aspect = tw as f32 / th as f32;
            let frac = spec.crop_fraction.clamp(0.05, 1.0);
            let (mut w, mut h) = if rect.w / rect.h > target_aspect {
                (rect.h * target_aspect, rect.h)
            } else {
                (rect.w, rect.w / target_aspect)
            };
            w *= frac;
            h *= frac;
            let r = Rect {
                x: rect.x + (rect.w - w) / 2.0,
                y: rect.y + (rect.h - h) / 2.0,
                w,
                h,
            };
            (r, 0, 0, tw, th)
        }
        ResizeMode::Letterbox => {
            let r = (tw as f32 / rect.w).min(th as f32 / rect.h);
            let w = ((rect.w * r).round() as usize).clamp(1, tw);
            let h = ((rect.h * r).round() as usize).clamp(1, th);
            let (x, y) = match spec.align {
                Align::TopLeft => (0, 0),
                Align::Center => ((tw - w) / 2, (th - h) / 2),
            };
            (rect, x, y, w, h)
        }
    };
    let pixels = resample(src, region, dst_w, dst_h);
    let order: [usize; 3] = match spec.channels {
        ChannelOrder::Rgb => [0, 1, 2],
        ChannelOrder::Bgr => [2, 1, 0],
    };
    let norm = |c: usize, v: f32| (v * spec.scale - spec.mean[c]) / spec.std[c];
    let pad: [f32; 3] = std::array::from_fn(|c| norm(c, spec.pad_value as f32));
    let plane = tw * th;
    let full = dst_x == 0 && dst_y == 0 && dst_w == tw && dst_h == th;
    if !full {
        for y in 0..th {
            for x in 0..tw {
                for (c, p) in pad.iter().enumerate() {
                    let i = match spec.layout {
                        Layout::Nchw => c * plane + y * tw + x,
                        Layout::Nhwc => (y * tw + x) * 3 + c,
                    };
                    out[i] = *p;
                }
            }
        }
    }
    for y in 0..dst_h {
        for x in 0..dst_w {
            let s = (y * dst_w + x) * 3;
            let (ty, tx) = (y + dst_y, x + dst_x);
            for (c, &src_c) in order.iter().enumerate() {
                let v = norm(c, pixels[s + src_c]);
                let i = match spec.layout {
                    Layout::Nchw => c * plane + ty * tw + tx,
                    Layout::Nhwc => (ty * tw + tx) * 3 + c,
                };
                out[i] = v;
            }
        }
    }
    Placement {
        origin_x: region.x,
        origin_y: region.y,
        offset_x: dst_x as f32,
        offset_y: dst_y as f32,
        scale_x: dst_w as f32 / region.w,
        scale_y: dst_h as f32 / region.h,
    }
}

/// Filter taps of one output sample along one axis.
struct Taps {
    first: usize,
    weights: Vec<f32>,
}

/// Triangle-filter taps mapping `[start, start + len)` of an axis of `size` pixels onto
/// `out` samples; the filter widens when shrinking, so downscaling averages (no aliasing).
fn axis_taps(start: f32, len: f32, size: usize, out: usize) -> Vec<Taps> {
    let step = len / out as f32;
    let support = step.max(1.0);
    (0..out)
        .map(|o| {
            let centre = start + (o as f32 + 0.5) * step;
            let lo = (centre - support).floor().max(0.0) as usize;
            let hi = ((centre + support).ceil() as usize).min(size);
            let lo = lo.min(size - 1);
            let hi = hi.max(lo + 1);
            let mut weights: Vec<f32> = (lo..hi)
                .map(|i| {
                    let d = ((i as f32 + 0.5) - centre).abs() / support;
                    (1.0 - d).max(0.0)
                })
                .collect();
            let sum: f32 = weights.iter().sum();
            if sum > 0.0 {
                weights.iter_mut().for_each(|w| *w /= sum);
            } else {
                // The sample centre lies outside the picture: take the nearest pixel.
                weights.iter_mut().for_each(|w| *w = 0.0);
                let nearest = (centre.floor().max(0.0) as usize).clamp(lo, hi - 1) - lo;
                weights[nearest] = 1.0;
            }
            Taps { first: lo, weights }
        })
        .collect()
}

/// Resample `rect` of `src` to `out_w`×`out_h` RGB floats (0..255, packed HWC).
pub fn resample(src: &RgbImage, rect: Rect, out_w: usize, out_h: usize) -> Vec<f32> {
    let (sw, sh) = (src.width as usize, src.height as usize);
    let xt = axis_taps(rect.x, rect.w, sw, out_w);
    let yt = axis_taps(rect.y, rect.h, sh, out_h);
    let row_lo = yt.iter().map(|t| t.first).min().unwrap_or(0);
    let row_hi = yt
        .iter()
        .map(|t| t.first + t.weights.len())
        .max()
        .unwrap_or(0);
    // Horizontal pass over the rows the vertical pass needs.
    let mut tmp = vec![0f32; (row_hi - row_lo) * out_w * 3];
    for row in row_lo..row_hi {
        let src_row = &src.data[row * sw * 3..(row + 1) * sw * 3];
        let dst = &mut tmp[(row - row_lo) * out_w * 3..(row - row_lo + 1) * out_w * 3];
        for (ox, t) in xt.iter().enumerate() {
            let (mut r, mut g, mut b) = (0f32, 0f32, 0f32);
            for (k, w) in t.weights.iter().enumerate() {
                let p = (t.first + k) * 3;
                r += w * src_row[p] as f32;
                g += w * src_row[p + 1] as f32;
                b += w * src_row[p + 2] as f32;
            }
            dst[ox * 3] = r;
            dst[ox * 3 + 1] = g;
            dst[ox * 3 + 2] = b;
        }
    }
    let mut out = vec![0f32; out_w * out_h * 3];
    let stride = out_w * 3;
    for (oy, t) in yt.iter().enumerate() {
        let dst = &mut out[oy * stride..(oy + 1) * stride];
        for (k, w) in t.weights.iter().enumerate() {
            let srow = &tmp[(t.first + k - row_lo) * stride..(t.first + k - row_lo + 1) * stride];
            for (d, s) in dst.iter_mut().zip(srow) {
                *d += w * s;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(resize: ResizeMode) -> InputSpec {
        InputSpec {
            width: 8,
            height: 8,
            channels: ChannelOrder::Rgb,
            layout: Layout::Nchw,
            scale: 1.0,
            mean: [0.0; 3],
            std: [1.0; 3],
            resize,
            align: Align::TopLeft,
            pad_value: 114,
            crop_fraction: 1.0,
        }
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&[
                    (x * 255 / w.max(1)) as u8,
                    (y * 255 / h.max(1)) as u8,
                    7,
                ]);
            }
        }
        RgbImage::new(w, h, data).unwrap()
    }

    #[test]
    fn new_checks_length() {
        assert!(RgbImage::new(2, 2, vec![0; 12]).is_ok());
        assert!(RgbImage::new(2, 2, vec![0; 11]).is_err());
        assert!(RgbImage::new(0, 2, vec![]).is_err());
    }

    #[test]
    fn resample_identity_and_uniform() {
        let img = gradient(16, 9);
        let out = resample(&img, img.full_rect(), 16, 9);
        for (a, b) in out.iter().zip(&img.data) {
            assert!((a - *b as f32).abs() < 1e-3);
        }
        let flat = RgbImage::filled(100, 37, [10, 200, 30]);
        for (w, h) in [(7, 5), (224, 224), (1, 1)] {
            let out = resample(&flat, flat.full_rect(), w, h);
            for px in out.chunks(3) {
                assert!(
                    (px[0] - 10.0).abs() < 1e-3
                        && (px[1] - 200.0).abs() < 1e-3
                        && (px[2] - 30.0).abs() < 1e-3
                );
            }
        }
    }

    #[test]
    fn downscale_averages() {
        // Alternating black/white columns shrink to mid-grey, not to one of the two.
        let mut data = Vec::new();
        for _y in 0..4 {
            for x in 0..64 {
                let v = if x % 2 == 0 { 0 } else { 255 };
                data.extend_from_slice(&[v, v, v]);
            }
        }
        let img = RgbImage::new(64, 4, data).unwrap();
        let out = resample(&img, img.full_rect(), 8, 1);
        for v in out {
            assert!((v - 127.5).abs() < 20.0, "{v}");
        }
    }

    #[test]
    fn letterbox_pads_and_maps_back() {
        let img = RgbImage::filled(16, 8, [255, 0, 0]);
        let s = spec(ResizeMode::Letterbox);
        let mut out = vec![0f32; s.tensor_len()];
        let p = fill_input(&s, &img, img.full_rect(), &mut out);
        // Top half red, bottom half padding.
        assert_eq!(out[0], 255.0);
        assert_eq!(out[4 * 8], 114.0);
        assert_eq!(out[64], 0.0); // green plane, image part
        assert_eq!(p.scale_x, 0.5);
        let r = p.to_source(0.0, 0.0, 8.0, 4.0);
        assert_eq!(
            r,
            Rect {
                x: 0.0,
                y: 0.0,
                w: 16.0,
                h: 8.0
            }
        );
        // Centred: padding above and below.
        let s = InputSpec {
            align: Align::Center,
            ..s
        };
        let p = fill_input(&s, &img, img.full_rect(), &mut out);
        assert_eq!(p.offset_y, 2.0);
        assert_eq!(out[0], 114.0);
        assert_eq!(out[2 * 8], 255.0);
        assert_eq!(
            p.to_source(0.0, 2.0, 8.0, 6.0),
            Rect {
                x: 0.0,
                y: 0.0,
                w: 16.0,
                h: 8.0
            }
        );
    }

    #[test]
    fn bgr_nhwc_and_normalisation() {
        let img = RgbImage::filled(4, 4, [10, 20, 30]);
        let s = InputSpec {
            channels: ChannelOrder::Bgr,
            layout: Layout::Nhwc,
            mean: [1.0, 2.0, 3.0],
            std: [2.0, 2.0, 2.0],
            ..spec(ResizeMode::Stretch)
        };
        let mut out = vec![0f32; s.tensor_len()];
        fill_input(&s, &img, img.full_rect(), &mut out);
        assert_eq!(
            &out[..3],
            &[(30.0 - 1.0) / 2.0, (20.0 - 2.0) / 2.0, (10.0 - 3.0) / 2.0]
        );
    }

    #[test]
    fn center_crop_takes_the_middle() {
        // Left third red, middle green, right blue: a centre crop of the 3:1 picture sees green.
        let mut data = Vec::new();
        for _y in 0..10 {
            for x in 0..30 {
                data.extend_from_slice(match x / 10 {
                    0 => &[255, 0, 0],
                    1 => &[0, 255, 0],
                    _ => &[0, 0, 255],
                });
            }
        }
        let img = RgbImage::new(30, 10, data).unwrap();
        let s = spec(ResizeMode::CenterCrop);
        let mut out = vec![0f32; s.tensor_len()];
        let p = fill_input(&s, &img, img.full_rect(), &mut out);
        assert_eq!(p.origin_x, 10.0);
        let plane = 64;
        assert!(out[plane..2 * plane].iter().all(|&g| g > 200.0));
    }

    #[test]
    fn crop_clamps() {
        let img = gradient(10, 10);
        let c = img.crop(Rect {
            x: -5.0,
            y: 8.0,
            w: 8.0,
            h: 10.0,
        });
        assert_eq!((c.width, c.height), (3, 2));
        assert_eq!(c.pixel(0, 0), img.pixel(0, 8));
    }

    #[test]
    fn bbox_rect_round_trip() {
        let r = Rect {
            x: 10.0,
            y: 20.0,
            w: 30.0,
            h: 40.0,
        };
        let b = r.to_bbox(100, 200);
        let back = b.to_rect(100, 200);
        for (a, b) in [(back.x, r.x), (back.y, r.y), (back.w, r.w), (back.h, r.h)] {
            assert!((a - b).abs() < 1e-4);
        }
        assert_eq!(b.as_array(), [0.1, 0.1, 0.3, 0.2]);
    }
}
