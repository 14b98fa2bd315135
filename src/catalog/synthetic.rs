//! Synthetic query-like views of a catalog image, so that a catalog of packshots alone
//! (no labelled photos) is matched against pictures taken in a store.
//!
//! A packshot is one product on a white background; what the camera sees is the product
//! in front of a shelf of other products, turned, partly cropped, under other light, or a
//! pile of fruit in a bin. Each view composites the product (its non-white pixels) over a
//! clutter of *other* catalog products on a random colour, alone (small turn, scale,
//! off-centre) or as a pile of turned copies, then takes a random crop and changes
//! brightness, contrast, saturation and sharpness. The build embeds the views and blends
//! their mean into the packshot's vector (`Catalog` build, [`blend`]), which moves it
//! towards where photos of that product fall.
//!
//! Pure: pictures in, pictures out, no I/O. Deterministic for a given seed and image.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::inference::{Rect, RgbImage};

/// Side of the square canvas a view is drawn on.
pub const CANVAS: u32 = 256;
/// Share of views drawn as a pile of copies (produce in a bin) rather than one product.
const PILE_SHARE: f64 = 0.4;
/// Pixels brighter than this in every channel are packshot background.
const WHITE: u8 = 235;
/// Clutter pictures are kept at most this big (they are drawn at most 0.6 × CANVAS).
const CLUTTER_SIDE: u32 = 160;

/// Other products' pictures to draw behind a product, each tagged with its product.
#[derive(Debug, Clone, Default)]
pub struct Clutter {
    items: Vec<(String, RgbImage)>,
}

impl Clutter {
    /// Keep (a shrunk copy of) `img` as clutter for every product other than `product`.
    pub fn push(&mut self, product: &str, img: &RgbImage) {
        self.items
            .push((product.to_string(), shrink(img, CLUTTER_SIDE)));
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn others<'a>(&'a self, product: &'a str) -> impl Iterator<Item = &'a RgbImage> + 'a {
        self.items
            .iter()
            .filter(move |(p, _)| p != product)
            .map(|(_, i)| i)
    }
}

/// `views` synthetic views of `img` (a catalog image of `product`), each a picture and the
/// region of it to embed. `seed` and the image's name make them reproducible.
pub fn views(
    img: &RgbImage,
    product: &str,
    image_name: &str,
    clutter: &Clutter,
    views: usize,
    seed: u64,
) -> Vec<(RgbImage, Rect)> {
    let mut rng = StdRng::seed_from_u64(seed ^ fnv1a(product) ^ fnv1a(image_name).rotate_left(17));
    let others: Vec<&RgbImage> = clutter.others(product).collect();
    let sprite = Sprite::from_packshot(img);
    (0..views)
        .map(|_| one_view(&sprite, &others, &mut rng))
        .collect()
}

/// Blend a packshot's embedding with the mean of its synthetic views' embeddings (each
/// L2-normalised first, equal weights), L2-normalised.
pub fn blend(original: &[f32], views: &[Vec<f32>]) -> Vec<f32> {
    let mut mean = vec![0f32; original.len()];
    for v in views {
        let mut v = v.clone();
        normalize(&mut v);
        for (m, x) in mean.iter_mut().zip(&v) {
            *m += x;
        }
    }
    normalize(&mut mean);
    let mut out = original.to_vec();
    normalize(&mut out);
    if views.is_empty() {
        return out;
    }
    for (o, m) in out.iter_mut().zip(&mean) {
        *o += m;
    }
    normalize(&mut out);
    out
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A picture with an alpha mask (1: product, 0: background).
struct Sprite {
    img: RgbImage,
    alpha: Vec<f32>,
}

impl Sprite {
    /// The product is every pixel that is not packshot white, grown by one pixel and
    /// softened; a picture without white background is all product.
    fn from_packshot(img: &RgbImage) -> Self {
        let (w, h) = (img.width as usize, img.height as usize);
        let hard: Vec<bool> = img
            .data
            .chunks_exact(3)
            .map(|p| p.iter().any(|&c| c <= WHITE))
            .collect();
        let mut alpha = vec![0f32; w * h];
        for y in 0..h {
            for x in 0..w {
                let mut n = 0u32;
                let mut on = 0u32;
                for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        let (xx, yy) = (x as i64 + dx, y as i64 + dy);
                        if xx >= 0 && yy >= 0 && (xx as usize) < w && (yy as usize) < h {
                            n += 1;
                            on += u32::from(hard[yy as usize * w + xx as usize]);
                        }
                    }
                }
                // Grown (any neighbour) and soft at the edge.
                alpha[y * w + x] = if on == 0 {
                    0.0
                } else {
                    (on as f32 / n as f32).sqrt()
                };
            }
        }
        Self {
            img: img.clone(),
            alpha,
        }
    }

    fn opaque(img: &RgbImage) -> Self {
        Self {
            img: img.clone(),
            alpha: vec![1.0; img.width as usize * img.height as usize],
        }
    }
}

fn one_view(product: &Sprite, clutter: &[&RgbImage], rng: &mut StdRng) -> (RgbImage, Rect) {
    let side = CANVAS as f32;
    let bg = [
        rng.random_range(40..=200u8),
        rng.random_range(40..=200u8),
        rng.random_range(40..=200u8),
    ];
    let mut canvas = RgbImage::filled(CANVAS, CANVAS, bg);
    if !clutter.is_empty() {
        for _ in 0..rng.random_range(4..=10) {
            let c = Sprite::opaque(clutter[rng.random_range(0..clutter.len())]);
            let size = side * rng.random_range(0.25..0.6);
            let x = rng.random_range(-size / 3.0..side - size / 2.0);
            let y = rng.random_range(-size / 3.0..side - size / 2.0);
            paste(&mut canvas, &c, x, y, size, 0.0);
        }
    }
    if rng.random_bool(PILE_SHARE) {
        for _ in 0..rng.random_range(3..=9) {
            let size = side * rng.random_range(0.3..0.6);
            let angle = rng.random_range(-180.0f32..180.0);
            let x = rng.random_range(-size / 4.0..side - size * 0.75);
            let y = rng.random_range(-size / 4.0..side - size * 0.75);
            paste(&mut canvas, product, x, y, size, angle);
        }
    } else {
        let size = side * rng.random_range(0.55..1.1);
        let angle = rng.random_range(-20.0f32..20.0);
        let hi = (side - size + size / 5.0).max(1.0);
        let x = rng.random_range(-size / 5.0..hi);
        let y = rng.random_range(-size / 5.0..hi);
        paste(&mut canvas, product, x, y, size, angle);
    }
    let c = side * rng.random_range(0.6..1.0);
    let rect = Rect {
        x: rng.random_range(0.0..=side - c),
        y: rng.random_range(0.0..=side - c),
        w: c,
        h: c,
    };
    photometric(&mut canvas, rng);
    if rng.random_bool(0.5) {
        box_blur(&mut canvas, if rng.random_bool(0.5) { 1 } else { 2 });
    }
    (canvas, rect)
}

/// Draw `s` scaled to a `size`-pixel square at `(x, y)` of `canvas`, turned by `angle`
/// degrees about its centre; bilinear, blended by the sprite's alpha.
fn paste(canvas: &mut RgbImage, s: &Sprite, x: f32, y: f32, size: f32, angle: f32) {
    let (sw, sh) = (s.img.width as f32, s.img.height as f32);
    let (cx, cy) = (x + size / 2.0, y + size / 2.0);
    let (sin, cos) = angle.to_radians().sin_cos();
    let reach = size * std::f32::consts::FRAC_1_SQRT_2;
    let x0 = (cx - reach).floor().max(0.0) as u32;
    let y0 = (cy - reach).floor().max(0.0) as u32;
    let x1 = ((cx + reach).ceil().max(0.0) as u32).min(canvas.width);
    let y1 = ((cy + reach).ceil().max(0.0) as u32).min(canvas.height);
    for py in y0..y1 {
        for px in x0..x1 {
            // Inverse rotation into the square, then into the sprite's pixels.
            let (dx, dy) = (px as f32 + 0.5 - cx, py as f32 + 0.5 - cy);
            let u = (cos * dx + sin * dy) / size + 0.5;
            let v = (-sin * dx + cos * dy) / size + 0.5;
            if !(0.0..1.0).contains(&u) || !(0.0..1.0).contains(&v) {
                continue;
            }
            let (rgb, a) = sample(s, u * sw - 0.5, v * sh - 0.5);
            if a <= 0.0 {
                continue;
            }
            let o = (py as usize * canvas.width as usize + px as usize) * 3;
            for (dst, c) in canvas.data[o..o + 3].iter_mut().zip(rgb) {
                let d = *dst as f32;
                *dst = (d + (c - d) * a).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// Bilinear sample of colour and alpha at sprite pixel coordinates (edges clamped).
fn sample(s: &Sprite, fx: f32, fy: f32) -> ([f32; 3], f32) {
    let (w, h) = (s.img.width as usize, s.img.height as usize);
    let fx = fx.clamp(0.0, (w - 1) as f32);
    let fy = fy.clamp(0.0, (h - 1) as f32);
    let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
    let mut rgb = [0f32; 3];
    let mut a = 0f32;
    for (xx, yy, wgt) in [
        (x0, y0, (1.0 - tx) * (1.0 - ty)),
        (x1, y0, tx * (1.0 - ty)),
        (x0, y1, (1.0 - tx) * ty),
        (x1, y1, tx * ty),
    ] {
        let i = yy * w + xx;
        let al = s.alpha[i] * wgt;
        a += al;
        for (k, c) in rgb.iter_mut().enumerate() {
            *c += s.img.data[i * 3 + k] as f32 * al;
        }
    }
    if a > 0.0 {
        rgb.iter_mut().for_each(|c| *c /= a);
    }
    (rgb, a)
}

/// Brightness ×0.6–1.3, contrast 0.7–1.2 about the mean grey, saturation 0.7–1.3.
fn photometric(img: &mut RgbImage, rng: &mut StdRng) {
    let bright = rng.random_range(0.6f32..1.3);
    let contrast = rng.random_range(0.7f32..1.2);
    let colour = rng.random_range(0.7f32..1.3);
    let grey = |p: &[f32]| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
    let mut px: Vec<f32> = img.data.iter().map(|&c| c as f32 * bright).collect();
    let mean = px.chunks_exact(3).map(grey).sum::<f32>() / (px.len() / 3).max(1) as f32;
    for p in px.chunks_exact_mut(3) {
        let g = grey(p);
        for c in p.iter_mut() {
            let saturated = g + (*c - g) * colour;
            *c = mean + (saturated - mean) * contrast;
        }
    }
    for (d, s) in img.data.iter_mut().zip(px) {
        *d = s.round().clamp(0.0, 255.0) as u8;
    }
}

/// `passes` 3×3 box blurs (edges clamped).
fn box_blur(img: &mut RgbImage, passes: u32) {
    let (w, h) = (img.width as usize, img.height as usize);
    for _ in 0..passes {
        let src = img.data.clone();
        for y in 0..h {
            for x in 0..w {
                for k in 0..3 {
                    let mut sum = 0u32;
                    let mut n = 0u32;
                    for yy in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                        for xx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                            sum += u32::from(src[(yy * w + xx) * 3 + k]);
                            n += 1;
                        }
                    }
                    img.data[(y * w + x) * 3 + k] = (sum / n) as u8;
                }
            }
        }
    }
}

/// A copy no bigger than `side` on its longer side (nearest-area average).
fn shrink(img: &RgbImage, side: u32) -> RgbImage {
    let long = img.width.max(img.height);
    if long <= side {
        return img.clone();
    }
    let (w, h) = (
        (img.width * side / long).max(1),
        (img.height * side / long).max(1),
    );
    let data = crate::inference::image::resample(img, img.full_rect(), w as usize, h as usize)
        .into_iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A red square on white, `n`×`n`.
    fn packshot(n: u32) -> RgbImage {
        let mut img = RgbImage::filled(n, n, [255, 255, 255]);
        for y in n / 4..3 * n / 4 {
            for x in n / 4..3 * n / 4 {
                let o = ((y * n + x) * 3) as usize;
                img.data[o..o + 3].copy_from_slice(&[200, 20, 20]);
            }
        }
        img
    }

    #[test]
    fn views_are_reproducible_and_differ_from_each_other() {
        let img = packshot(64);
        let mut clutter = Clutter::default();
        clutter.push("other", &RgbImage::filled(300, 200, [0, 0, 255]));
        let a = views(&img, "p", "p.jpg", &clutter, 4, 7);
        let b = views(&img, "p", "p.jpg", &clutter, 4, 7);
        assert_eq!(a, b);
        assert_eq!(a.len(), 4);
        assert_ne!(a[0].0, a[1].0);
        let c = views(&img, "p", "p.jpg", &clutter, 4, 8);
        assert_ne!(a, c);
        for (v, r) in &a {
            assert_eq!((v.width, v.height), (CANVAS, CANVAS));
            assert!(r.w >= 0.6 * CANVAS as f32 - 1e-3 && r.x + r.w <= CANVAS as f32 + 1e-3);
        }
    }

    #[test]
    fn the_product_is_drawn_and_the_white_background_is_not() {
        let img = packshot(64);
        let red = |v: &RgbImage| {
            v.data
                .chunks_exact(3)
                .filter(|p| {
                    i32::from(p[0]) > i32::from(p[1]) + 60 && i32::from(p[0]) > i32::from(p[2]) + 60
                })
                .count()
        };
        let near_white = |v: &RgbImage| {
            v.data
                .chunks_exact(3)
                .filter(|p| p.iter().all(|&c| c > 240))
                .count()
        };
        for (v, _) in views(&img, "p", "x", &Clutter::default(), 8, 1) {
            assert!(
                red(&v) > 50,
                "the product is on every view: {} red",
                red(&v)
            );
            assert!(
                near_white(&v) < (CANVAS * CANVAS / 20) as usize,
                "no packshot white"
            );
        }
    }

    #[test]
    fn a_product_is_never_its_own_clutter() {
        let mut clutter = Clutter::default();
        clutter.push("p", &RgbImage::filled(10, 10, [0, 255, 0]));
        assert_eq!(clutter.others("p").count(), 0);
        assert_eq!(clutter.others("q").count(), 1);
        assert_eq!(clutter.len(), 1);
    }

    #[test]
    fn tiny_and_odd_pictures_do_not_panic() {
        for (w, h) in [(1, 1), (1, 300), (300, 1), (2, 3)] {
            let img = RgbImage::filled(w, h, [10, 200, 30]);
            let mut clutter = Clutter::default();
            clutter.push("o", &img);
            assert_eq!(views(&img, "p", "x", &clutter, 3, 0).len(), 3);
        }
        let shrunk = shrink(&RgbImage::filled(1000, 10, [1, 2, 3]), CLUTTER_SIDE);
        assert_eq!((shrunk.width, shrunk.height), (CLUTTER_SIDE, 1));
    }

    #[test]
    fn blend_moves_the_vector_towards_the_views() {
        let o = vec![1.0, 0.0, 0.0];
        let v = vec![vec![0.0, 2.0, 0.0], vec![0.0, 0.0, 0.5]];
        let b = blend(&o, &v);
        let n: f32 = b.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-5);
        assert!(b[0] > 0.6 && b[1] > 0.2 && b[2] > 0.2);
        assert_eq!(blend(&[3.0, 4.0], &[]), vec![0.6, 0.8]);
    }
}
