//! Query-domain centring: the mean query vector of unlabelled photos from the place the
//! queries come from (shop shelves, frames of the channel), subtracted from each query
//! before the search.
//!
//! Catalog images (packshots on white) and in-store photos sit in different corners of the
//! embedder's space; every in-store photo shares a component that says "in a shop", which
//! pulls all of them towards the same catalog products. Removing the mean of the query
//! domain removes that component. Measured on Grocery Store (catalog images only, 296 val
//! photos): top-1 0.432 → 0.497 with the mean of the 2640 unlabelled train photos; a mean
//! of 50 varied photos does as well, one of a single product's photos does worse than none
//! (the sample must be varied). No label is read: `product_id` fields are ignored.
//!
//! The mean is stored with the catalog generation (`domain_mean.f32`, the count in the
//! manifest's `domain_photos`) and carried by every later generation; `build` embeds the
//! photos (as a live query embeds a picture) and takes it.

use serde::Deserialize;

use super::product::Skipped;

/// File of a generation holding the mean (little-endian f32, `raw_dim` of them).
pub const MEAN_FILE: &str = "domain_mean.f32";

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error(
        "{file}: only {usable} usable query-domain photos (catalog.domain_min_photos is {min}; {skipped} skipped): a mean of few photos, or of one product's, centres queries on that product and matches worse than none; give at least {min} varied photos"
    )]
    TooFewPhotos {
        file: String,
        usable: usize,
        min: usize,
        skipped: usize,
    },
    #[error("query-domain mean of {got} values; the embedder gives {expected}")]
    Dimension { expected: usize, got: usize },
}

/// The mean query vector of the query domain, and how many photos it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainMean {
    mean: Vec<f32>,
    photos: usize,
}

impl DomainMean {
    /// The mean of `vectors` (query vectors, each L2-normalised); `None` when empty.
    pub fn of<V: AsRef<[f32]>>(vectors: &[V]) -> Option<Self> {
        let dim = vectors.first()?.as_ref().len();
        let mut sum = vec![0f64; dim];
        for v in vectors {
            for (s, x) in sum.iter_mut().zip(v.as_ref()) {
                *s += f64::from(*x);
            }
        }
        let n = vectors.len() as f64;
        Some(Self {
            mean: sum.iter().map(|s| (s / n) as f32).collect(),
            photos: vectors.len(),
        })
    }

    /// From stored floats (`dim` of them) and the manifest's count.
    pub fn from_floats(floats: Vec<f32>, dim: usize, photos: usize) -> Result<Self, DomainError> {
        if floats.len() != dim {
            return Err(DomainError::Dimension {
                expected: dim,
                got: floats.len(),
            });
        }
        Ok(Self {
            mean: floats,
            photos,
        })
    }

    pub fn as_floats(&self) -> &[f32] {
        &self.mean
    }

    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Photos the mean was taken over.
    pub fn photos(&self) -> usize {
        self.photos
    }

    /// `query − mean`, L2-normalised: the query in the centred space.
    pub fn centre(&self, query: &[f32]) -> Vec<f32> {
        let mut out: Vec<f32> = query.iter().zip(&self.mean).map(|(q, m)| q - m).collect();
        crate::inference::postprocess::l2_normalize(&mut out);
        out
    }
}

/// Soft k-means over the query-domain photos, started from the catalog (`pseudo_labels`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PseudoLabelParams {
    /// Softmax temperature of a photo's assignment over the products' cosines.
    pub temperature: f32,
    /// Weight of the photos' weighted mean against the catalog vector in a prototype.
    pub pull: f32,
    /// Assignment and update rounds.
    pub rounds: usize,
    /// How strongly each round's assignment is evened out across the products (Sinkhorn
    /// scaling of each product's share towards photos / products; 0: not at all, 1: fully).
    /// With it, the labels are the last balanced assignment's best product.
    pub balance: f32,
    /// Scaling steps per round when `balance` is above 0.
    pub balance_steps: usize,
}

impl Default for PseudoLabelParams {
    /// Measured on Grocery Store (docs/BENCHMARKS.md): temperatures 0.02–0.1, pulls 0.5–1.5
    /// and 1–10 rounds all land within ±0.02 top-1 of this. No balance, as
    /// `catalog.domain_pseudo_balance` ships.
    fn default() -> Self {
        Self {
            temperature: 0.05,
            pull: 1.0,
            rounds: 3,
            balance: 0.0,
            balance_steps: 10,
        }
    }
}

/// A product for each unlabelled query-domain photo, without reading any label: the
/// photos (centred on their own mean, `query_mean`) are clustered by soft k-means around
/// the catalog's products (each the mean of its images, centred on the catalog's mean),
/// every prototype kept anchored to its catalog vector. Photos of one product on one shelf
/// look alike, so the cluster a product's catalog image pulls in is mostly that product's
/// photos even where single photos match a sibling; the labels then train the same
/// projection labelled photos would (measured: half of the labels right, and top-1 on
/// held-out photos 0.497 → 0.557 through the projection).
///
/// `catalog` holds `(product index, raw vector)`, `products` the number of products;
/// every vector is the embedder's. Empty inputs give no labels.
pub fn pseudo_labels<C: AsRef<[f32]>, P: AsRef<[f32]>>(
    catalog: &[(usize, C)],
    products: usize,
    photos: &[P],
    query_mean: &DomainMean,
    params: PseudoLabelParams,
) -> Vec<usize> {
    let Some(catalog_mean) = DomainMean::of(&catalog.iter().map(|(_, v)| v).collect::<Vec<_>>())
    else {
        return Vec::new();
    };
    if products == 0 || photos.is_empty() {
        return Vec::new();
    }
    let dim = catalog_mean.dim();
    let mut anchors = vec![vec![0f32; dim]; products];
    for (k, v) in catalog.iter().filter(|(k, _)| *k < products) {
        add(&mut anchors[*k], &catalog_mean.centre(v.as_ref()), 1.0);
    }
    anchors.iter_mut().for_each(|a| l2(a));
    let photos: Vec<Vec<f32>> = photos
        .iter()
        .map(|p| query_mean.centre(p.as_ref()))
        .collect();
    let mut protos = anchors.clone();
    let mut assignment = Vec::new();
    for _ in 0..params.rounds {
        assignment = photos
            .iter()
            .map(|p| softmax(&cosines(p, &protos), params.temperature))
            .collect();
        balance(
            &mut assignment,
            products,
            params.balance,
            params.balance_steps,
        );
        protos = prototypes(&anchors, &photos, &assignment, params.pull);
    }
    if params.balance > 0.0 && !assignment.is_empty() {
        return assignment.iter().map(|w| argmax(w)).collect();
    }
    photos
        .iter()
        .map(|p| argmax(&cosines(p, &protos)))
        .collect()
}

/// Each product's prototype: its anchor plus `pull` × the assignment-weighted mean of the
/// photos, normalised.
fn prototypes(
    anchors: &[Vec<f32>],
    photos: &[Vec<f32>],
    assignment: &[Vec<f32>],
    pull: f32,
) -> Vec<Vec<f32>> {
    let dim = anchors.first().map(Vec::len).unwrap_or(0);
    let mut sums = vec![vec![0f32; dim]; anchors.len()];
    let mut weights = vec![0f32; anchors.len()];
    for (p, ws) in photos.iter().zip(assignment) {
        for (k, &w) in ws.iter().enumerate() {
            add(&mut sums[k], p, w);
            weights[k] += w;
        }
    }
    anchors
        .iter()
        .zip(sums.iter().zip(&weights))
        .map(|(anchor, (sum, &weight))| {
            let mut proto = anchor.clone();
            if weight > 0.0 {
                add(&mut proto, sum, pull / weight);
            }
            l2(&mut proto);
            proto
        })
        .collect()
}

/// Evens the photos out across the products (Sinkhorn scaling): each product's column is
/// divided by (its share / the equal share)^`strength`, then each photo's row is made to
/// sum to 1 again, `steps` times. A catalog product that would pull in a whole shelf of
/// look-alikes (a cluster per sibling) leaves the clusters its siblings explain better.
fn balance(assignment: &mut [Vec<f32>], products: usize, strength: f32, steps: usize) {
    if strength <= 0.0 || assignment.is_empty() || products == 0 {
        return;
    }
    let share = assignment.len() as f32 / products as f32;
    for _ in 0..steps {
        let mut columns = vec![0f32; products];
        for row in assignment.iter() {
            columns.iter_mut().zip(row).for_each(|(c, w)| *c += w);
        }
        let scale: Vec<f32> = columns
            .iter()
            .map(|c| (c / share).max(1e-9).powf(-strength))
            .collect();
        for row in assignment.iter_mut() {
            row.iter_mut().zip(&scale).for_each(|(w, s)| *w *= s);
            let sum: f32 = row.iter().sum();
            if sum > 0.0 && sum.is_finite() {
                row.iter_mut().for_each(|w| *w /= sum);
            }
        }
    }
}

fn add(acc: &mut [f32], v: &[f32], w: f32) {
    acc.iter_mut().zip(v).for_each(|(a, x)| *a += w * x);
}

fn l2(v: &mut [f32]) {
    crate::inference::postprocess::l2_normalize(v);
}

fn cosines(v: &[f32], protos: &[Vec<f32>]) -> Vec<f32> {
    protos
        .iter()
        .map(|p| p.iter().zip(v).map(|(a, b)| a * b).sum())
        .collect()
}

fn softmax(scores: &[f32], temperature: f32) -> Vec<f32> {
    let t = temperature.max(1e-6);
    let top = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = scores.iter().map(|s| ((s - top) / t).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|x| x / sum).collect()
}

fn argmax(scores: &[f32]) -> usize {
    scores
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &s)| {
            if s > best.1 { (i, s) } else { best }
        })
        .0
}

/// A query-domain photo line: `{"image": "…"}` (or `"images": […]`); a `product_id`, as
/// in a `--train-photos` file, is allowed and ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainPhoto {
    #[serde(default, rename = "product_id")]
    _product_id: Option<serde_json::Value>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    images: Vec<String>,
}

/// Parse a query-domain photos JSONL: `(line, image spec)` per image, and the bad lines.
pub fn parse_photos(text: &str, file: &str) -> (Vec<(usize, String)>, Vec<Skipped>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let at = format!("{file}:{}", i + 1);
        match serde_json::from_str::<DomainPhoto>(raw) {
            Err(e) => skipped.push(Skipped {
                at,
                reason: e.to_string(),
            }),
            Ok(p) => {
                let images: Vec<String> = p.image.into_iter().chain(p.images).collect();
                if images.is_empty() {
                    skipped.push(Skipped {
                        at,
                        reason: "no image".into(),
                    });
                }
                out.extend(images.into_iter().map(|img| (i + 1, img)));
            }
        }
    }
    (out, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let mut v = v.to_vec();
        crate::inference::postprocess::l2_normalize(&mut v);
        v
    }

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// Three products (axes 0–2), packshots sharing a white-background axis 3.
    fn packshots() -> Vec<(usize, Vec<f32>)> {
        (0..3)
            .map(|k| {
                let mut v = [0.0; 8];
                v[k] = 1.0;
                v[3] = 1.0;
                (k, unit(&v))
            })
            .collect()
    }

    #[test]
    fn the_mean_is_subtracted_and_the_query_normalised_again() {
        let m = DomainMean::of(&[vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0]]).unwrap();
        assert_eq!(m.as_floats(), &[0.5, 0.5, 0.0]);
        assert_eq!(m.photos(), 2);
        let c = m.centre(&[1.0, 1.0, 1.0]);
        // (0.5, 0.5, 1) / |..|
        let n = (0.25f32 + 0.25 + 1.0).sqrt();
        for (got, want) in c.iter().zip([0.5 / n, 0.5 / n, 1.0 / n]) {
            assert!((got - want).abs() < 1e-6, "{c:?}");
        }
        assert!((dot(&c, &c) - 1.0).abs() < 1e-6);
        assert!(DomainMean::of::<Vec<f32>>(&[]).is_none());
    }

    #[test]
    fn centring_removes_what_every_query_shares() {
        // Every query carries a strong shared "in a shop" direction (axis 2); the product
        // part (axes 0 and 1) is what tells them apart.
        let shop = |a: f32, b: f32| unit(&[a, b, 3.0]);
        let queries = [
            shop(1.0, 0.0),
            shop(0.0, 1.0),
            shop(0.7, 0.3),
            shop(0.2, 0.8),
        ];
        let mean = DomainMean::of(&queries).unwrap();
        let catalog = [unit(&[1.0, 0.0, 0.0]), unit(&[0.0, 1.0, 0.0])];
        let q = shop(0.6, 0.4);
        // Raw, both products are nearly equally close (the shared part dominates) ...
        let raw_gap = dot(&q, &catalog[0]) - dot(&q, &catalog[1]);
        // ... centred, product 0 leads clearly.
        let c = mean.centre(&q);
        let centred_gap = dot(&c, &catalog[0]) - dot(&c, &catalog[1]);
        assert!(
            centred_gap > 0.0 && centred_gap > 3.0 * raw_gap,
            "{raw_gap} {centred_gap}"
        );
    }

    #[test]
    fn pseudo_labels_follow_the_photo_clusters_not_single_matches() {
        // Three products (axes 0–2, packshots sharing a white-background axis 3). Their
        // shelf photos share an "in a shop" axis 4 and each shelf its own axis (5–7). Two
        // photos of product 1 lean towards product 0 and match it one by one; their
        // shelf's cluster takes them back to product 1.
        let catalog = packshots();
        let mut photos = Vec::new();
        for k in 0..3 {
            for i in 0..6 {
                let mut v = [0.0; 8];
                (v[k], v[4], v[5 + k]) = (0.6, 2.0, 1.0);
                if k == 1 && i < 2 {
                    v[0] = 0.75;
                }
                photos.push(unit(&v));
            }
        }
        let truth: Vec<usize> = (0..18).map(|i| i / 6).collect();
        let mean = DomainMean::of(&photos).unwrap();
        let params = PseudoLabelParams::default();
        let one_by_one = PseudoLabelParams {
            rounds: 0,
            ..params
        };
        let alone = pseudo_labels(&catalog, 3, &photos, &mean, one_by_one);
        assert_eq!(&alone[6..8], &[0, 0], "{alone:?}");
        assert_eq!(pseudo_labels(&catalog, 3, &photos, &mean, params), truth);
        // Nothing to cluster: no labels, no panic.
        let none: &[(usize, Vec<f32>)] = &[];
        assert!(pseudo_labels(none, 3, &photos, &mean, params).is_empty());
        assert!(pseudo_labels(&catalog, 3, &photos[..0], &mean, params).is_empty());
        assert!(pseudo_labels(&catalog, 0, &photos, &mean, params).is_empty());
    }

    #[test]
    fn balance_evens_the_products_shares_and_keeps_rows_whole() {
        // Four photos, three products: product 0 would take nearly all of them, product 2
        // has no weight at all.
        let start = vec![
            vec![0.90, 0.10, 0.0],
            vec![0.80, 0.20, 0.0],
            vec![0.70, 0.30, 0.0],
            vec![0.95, 0.05, 0.0],
        ];
        let share = |a: &[Vec<f32>], k: usize| a.iter().map(|r| r[k]).sum::<f32>();
        let mut off = start.clone();
        balance(&mut off, 3, 0.0, 10);
        assert_eq!(off, start, "strength 0 changes nothing");
        let mut half = start.clone();
        balance(&mut half, 3, 0.5, 10);
        let mut full = start.clone();
        balance(&mut full, 3, 1.0, 10);
        for a in [&half, &full] {
            for row in a.iter() {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
                assert!(row.iter().all(|w| w.is_finite() && *w >= 0.0), "{row:?}");
                assert_eq!(row[2], 0.0, "no weight is created from nothing");
            }
            // Product 1 gains from product 0; the photo that leaned most to 1 goes there.
            assert!(share(a, 1) > share(&start, 1) + 0.5, "{a:?}");
            assert_eq!(argmax(&a[2]), 1, "{a:?}");
        }
        // Two of four photos each between the two products that have any weight.
        assert!((share(&full, 0) - 2.0).abs() < 0.2, "{full:?}");
        // Nothing to balance: no panic.
        balance(&mut [], 3, 1.0, 10);
        balance(&mut start.clone(), 0, 1.0, 10);
    }

    #[test]
    fn balanced_clustering_keeps_clear_clusters() {
        // Balance on must not move photos whose clusters are already clear.
        let catalog = packshots();
        let photos: Vec<Vec<f32>> = (0..12)
            .map(|i| {
                let k = i % 3;
                let mut v = [0.0; 8];
                (v[k], v[4], v[5 + k]) = (0.6, 2.0, 1.0 + 0.05 * i as f32);
                unit(&v)
            })
            .collect();
        let truth: Vec<usize> = (0..12).map(|i| i % 3).collect();
        let mean = DomainMean::of(&photos).unwrap();
        for balance in [0.0, 0.5, 1.0] {
            let params = PseudoLabelParams {
                balance,
                ..Default::default()
            };
            assert_eq!(pseudo_labels(&catalog, 3, &photos, &mean, params), truth);
        }
    }

    #[test]
    fn stored_floats_round_trip_and_are_checked() {
        let m = DomainMean::of(&[vec![0.25, -1.5], vec![0.75, 0.5]]).unwrap();
        let bytes = crate::catalog::store::f32_bytes(m.as_floats());
        let floats = crate::catalog::store::f32s_from_bytes(&bytes).unwrap();
        assert_eq!(DomainMean::from_floats(floats, 2, 2).unwrap(), m);
        assert!(matches!(
            DomainMean::from_floats(vec![0.0; 3], 2, 2),
            Err(DomainError::Dimension {
                expected: 2,
                got: 3
            })
        ));
    }

    #[test]
    fn photo_lines_ignore_product_ids_and_report_bad_lines() {
        let text = r#"{"image": "a.jpg"}
{"product_id": "Oatly", "image": "b.jpg"}

{"images": ["c.jpg", "d.jpg"]}
not json
{"product_id": "x"}
{"image": "e.jpg", "label": 3}
"#;
        let (ok, skipped) = parse_photos(text, "d.jsonl");
        let images: Vec<&str> = ok.iter().map(|(_, i)| i.as_str()).collect();
        assert_eq!(images, vec!["a.jpg", "b.jpg", "c.jpg", "d.jpg"]);
        assert_eq!(ok[3].0, 4);
        let at: Vec<&str> = skipped.iter().map(|s| s.at.as_str()).collect();
        assert_eq!(at, vec!["d.jsonl:5", "d.jsonl:6", "d.jsonl:7"]);
    }
}
