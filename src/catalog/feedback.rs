//! Learning from the operator: a verdict on a cue (confirm, reject, relabel) stores the
//! cue's evidence (the query embeddings of its most similar sightings, see
//! `matching::evidence`) as labelled photos of a product or as hard negatives, beside the
//! catalog in `DIR/feedback/labels.jsonl`; [`retrain`] turns the stored photos into a new
//! catalog state (they join their products as images, origin `feedback`).
//!
//! Stored are embeddings, not pixels: a catalog built with another embedder ignores them
//! (each record names its embedder). Near-duplicates of a stored photo of the same product
//! and kind are skipped; past `catalog.feedback_max_per_product` the oldest photo of that
//! product and kind is replaced. The file is rewritten whole (temporary file, sync,
//! rename), so a crash leaves the previous file.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::build::learn_projection;
use super::store::io;
use super::{Catalog, CatalogError, CatalogSettings, ImageVector, Snapshot, store};

/// The file of the labels, inside [`store::FEEDBACK`].
pub const LABELS: &str = "labels.jsonl";
/// Origin of the catalog vectors that come from feedback.
pub const ORIGIN: &str = "feedback";

/// What a stored photo says of its product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The product is what the crop shows.
    Positive,
    /// The crop is not this product (a rejected or relabelled cue).
    Negative,
}

/// One stored photo (embedding) of a product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub kind: Kind,
    pub product_id: String,
    pub cue_id: String,
    pub channel: String,
    /// RFC 3339, when the verdict was given.
    pub at: String,
    pub embedder_sha256: String,
    /// Little-endian f32s, hex.
    pub vector: String,
}

impl Record {
    pub fn embedding(&self) -> Option<Vec<f32>> {
        let bytes = hex::decode(&self.vector).ok()?;
        store::f32s_from_bytes(&bytes).filter(|v| !v.is_empty())
    }
}

/// What one verdict did to the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stored {
    /// Photos added.
    pub stored: usize,
    /// Skipped: a near-duplicate of a stored photo of the same product and kind.
    pub duplicates: usize,
    /// Oldest photos dropped to stay within the cap per product.
    pub replaced: usize,
}

/// The labels beside one catalog; one writer at a time, in this process (a mutex) and
/// among the processes sharing the catalog folder (its `LOCK` file, as generations are).
#[derive(Debug)]
pub struct FeedbackStore {
    catalog_dir: PathBuf,
    path: PathBuf,
    max_per_product: usize,
    duplicate_similarity: f32,
    lock: Mutex<()>,
}

/// One photo to store.
pub struct NewPhoto<'a> {
    pub kind: Kind,
    pub product_id: &'a str,
    pub cue_id: &'a str,
    pub channel: &'a str,
    pub embedder_sha256: &'a str,
    pub embedding: &'a [f32],
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

impl FeedbackStore {
    /// The store of the catalog in `catalog_dir` (nothing is created until a verdict).
    pub fn new(catalog_dir: &Path, settings: &CatalogSettings) -> Self {
        Self {
            catalog_dir: catalog_dir.to_path_buf(),
            path: catalog_dir.join(store::FEEDBACK).join(LABELS),
            max_per_product: settings.feedback_max_per_product.max(1),
            duplicate_similarity: settings.feedback_duplicate_similarity,
            lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every record; an absent file is an empty store, a damaged line an error naming it.
    pub fn load(&self) -> Result<Vec<Record>, CatalogError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.path, e)),
        };
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let r: Record = serde_json::from_str(line).map_err(|e| CatalogError::Corrupt {
                path: self.path.clone(),
                why: format!("line {}: {e}", i + 1),
            })?;
            out.push(r);
        }
        Ok(out)
    }

    /// Store photos (deduplicated, capped per product and kind), all or nothing.
    pub fn record(&self, photos: &[NewPhoto<'_>]) -> Result<Stored, CatalogError> {
        let _one_writer = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        // Another process of a fleet may append to the same file (a shared volume).
        let _one_process = store::lock(&self.catalog_dir)?;
        let mut records = self.load()?;
        let at = crate::frame::rfc3339_ms(&chrono::Utc::now());
        let mut done = Stored::default();
        for p in photos {
            let duplicate = records.iter().any(|r| {
                r.kind == p.kind
                    && r.product_id == p.product_id
                    && r.embedding()
                        .is_some_and(|e| cosine(&e, p.embedding) >= self.duplicate_similarity)
            });
            if duplicate {
                done.duplicates += 1;
                continue;
            }
            records.push(Record {
                kind: p.kind,
                product_id: p.product_id.to_string(),
                cue_id: p.cue_id.to_string(),
                channel: p.channel.to_string(),
                at: at.clone(),
                embedder_sha256: p.embedder_sha256.to_string(),
                vector: hex::encode(store::f32_bytes(p.embedding)),
            });
            done.stored += 1;
            done.replaced += cap(&mut records, p.kind, p.product_id, self.max_per_product);
        }
        if done.stored > 0 {
            self.write(&records)?;
        }
        Ok(done)
    }

    fn write(&self, records: &[Record]) -> Result<(), CatalogError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let mut text = String::new();
        for r in records {
            text.push_str(&serde_json::to_string(r).map_err(|e| io(&self.path, e))?);
            text.push('\n');
        }
        let tmp = dir.join(format!(".{LABELS}.tmp-{}", std::process::id()));
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        });
        if let Err(e) = written.and_then(|_| std::fs::rename(&tmp, &self.path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(&self.path, e));
        }
        Ok(())
    }
}

/// Drops the oldest records of `product` and `kind` beyond `max`; how many.
fn cap(records: &mut Vec<Record>, kind: Kind, product: &str, max: usize) -> usize {
    let of = |r: &Record| r.kind == kind && r.product_id == product;
    let excess = records.iter().filter(|r| of(r)).count().saturating_sub(max);
    let mut left = excess;
    records.retain(|r| {
        if left > 0 && of(r) {
            left -= 1;
            false
        } else {
            true
        }
    });
    excess
}

/// What [`retrain`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RetrainReport {
    /// Feedback photos now in the catalog, and the products they cover.
    pub photos: usize,
    pub products: usize,
    /// Negatives stored (not used by the index; kept for review and calibration).
    pub negatives: usize,
    /// Records left out, with why (unknown product, other embedder, damaged vector).
    pub skipped: BTreeMap<String, usize>,
    /// A projection was learned again from the catalog images and the photos.
    pub projection_learned: bool,
    /// Why not, when it was not.
    pub projection_note: Option<String>,
    pub vectors_before: usize,
    pub vectors_after: usize,
}

/// The stored positive photos usable with this catalog, as raw image vectors.
fn usable_photos(
    snapshot: &Snapshot,
    records: &[Record],
    report: &mut RetrainReport,
) -> Vec<(String, ImageVector)> {
    let m = &snapshot.manifest;
    let mut photos = Vec::new();
    let mut products = HashSet::new();
    for r in records {
        let why = if r.kind == Kind::Negative {
            report.negatives += 1;
            continue;
        } else if snapshot.product(&r.product_id).is_none() {
            "product no longer in the catalog"
        } else if !m.embedder_sha256.is_empty() && r.embedder_sha256 != m.embedder_sha256 {
            "made with another embedder"
        } else if let Some(e) = r.embedding().filter(|e| e.len() == m.raw_dim) {
            products.insert(r.product_id.clone());
            photos.push((
                r.product_id.clone(),
                ImageVector {
                    image: format!("{ORIGIN}:{}", r.cue_id),
                    bbox: None,
                    origin: ORIGIN.to_string(),
                    embedding: e,
                },
            ));
            continue;
        } else {
            "damaged vector"
        };
        *report.skipped.entry(why.to_string()).or_default() += 1;
    }
    report.photos = photos.len();
    report.products = products.len();
    photos
}

/// Why no projection can be learned from `photos` (labelled photos of `covered`
/// products) over this catalog, or `None` when one can.
fn cannot_learn(
    snapshot: &Snapshot,
    settings: &CatalogSettings,
    photos: usize,
    covered: usize,
    has_raw: bool,
) -> Option<String> {
    let m = &snapshot.manifest;
    let coverage = covered as f32 / snapshot.len().max(1) as f32;
    if coverage < settings.projection_min_coverage {
        Some(format!(
            "only {covered} of {} products have confirmed photos ({:.0}% < catalog.projection_min_coverage {:.0}%): the photos join their products as images",
            snapshot.len(),
            coverage * 100.0,
            settings.projection_min_coverage * 100.0
        ))
    } else if m.projection && photos < m.labelled_photos {
        Some(format!(
            "the catalog's projection was learned from {} labelled photos, more than the {photos} confirmed: kept, the photos join their products as images",
            m.labelled_photos
        ))
    } else if !has_raw {
        Some("the catalog holds no raw vectors (built before they were kept): rebuild it to learn a projection again".into())
    } else {
        None
    }
}

/// The catalog state with the stored positive photos as images of their products (in
/// place of the feedback vectors it held) and, when they cover enough products, a
/// projection learned again from the catalog's vectors and the photos.
pub fn retrained(
    snapshot: &Snapshot,
    records: &[Record],
    settings: &CatalogSettings,
    params: &super::IndexParams,
) -> Result<(Snapshot, RetrainReport), CatalogError> {
    let mut report = RetrainReport {
        vectors_before: snapshot.vectors(),
        ..Default::default()
    };
    let photos = usable_photos(snapshot, records, &mut report);
    let base = snapshot.raw_vectors().map(|v| {
        v.into_iter()
            .filter(|(_, iv)| iv.origin != ORIGIN)
            .collect::<Vec<_>>()
    });
    let covered: HashSet<&str> = photos
        .iter()
        .chain(base.iter().flatten().filter(|(_, iv)| iv.origin == "train"))
        .map(|(p, _)| p.as_str())
        .collect();
    report.projection_note = cannot_learn(
        snapshot,
        settings,
        photos.len(),
        covered.len(),
        base.is_some(),
    );
    let next = match (base, &report.projection_note) {
        (Some(base), None) => {
            let projection = learn_projection(settings, &base, &photos);
            report.projection_learned = projection.is_some();
            if projection.is_none() {
                report.projection_note = Some(
                    "too few photos to learn a projection (two products with two pictures each)"
                        .into(),
                );
            }
            let mut manifest = snapshot.manifest.clone();
            // A projection learned from the operator's photos replaces one learned from
            // inferred labels.
            manifest.pseudo_labelled_photos = 0;
            manifest.labelled_photos = if projection.is_some() {
                photos.len()
            } else {
                0
            };
            manifest.created = crate::frame::rfc3339_ms(&chrono::Utc::now());
            let products = snapshot.products().map(|p| p.as_ref().clone()).collect();
            let vectors = base.into_iter().chain(photos).collect();
            Snapshot::assemble(manifest, products, vectors, projection, params)?
                .with_domain_mean(snapshot.domain_mean().cloned())?
        }
        _ => snapshot.with_origin_replaced(ORIGIN, photos, params)?,
    };
    report.vectors_after = next.vectors();
    Ok((next, report))
}

/// `catalog retrain` and `POST /v1/catalog/retrain`: rebuild the serving catalog from its
/// stored feedback, on disk first, then swapped in at once (searches never wait; a
/// failure leaves the serving catalog as it was).
pub fn retrain(
    catalog: &Catalog,
    store: &FeedbackStore,
    settings: &CatalogSettings,
) -> Result<RetrainReport, CatalogError> {
    let records = store.load()?;
    let mut report = RetrainReport::default();
    catalog.change(|s, params| {
        let (next, r) = retrained(s, &records, settings, params)?;
        report = r;
        Ok(next)
    })?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{IndexKind, Manifest, Product};

    const DIM: usize = 8;
    const SHA: &str = "sha-test";

    fn settings(max: usize) -> CatalogSettings {
        CatalogSettings {
            feedback_max_per_product: max,
            ..CatalogSettings::default()
        }
    }

    /// A unit vector along `axis`, tilted towards `tilt` by `by`.
    fn vector(axis: usize, tilt: usize, by: f32) -> Vec<f32> {
        let mut v = [0.0; DIM];
        v[axis] = 1.0;
        v[tilt] += by;
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    /// Four products `p0..p3`, one catalog image each, no projection.
    fn catalog_only() -> Snapshot {
        let manifest = Manifest {
            format: crate::catalog::FORMAT_VERSION,
            embedder: "test".into(),
            embedder_sha256: SHA.into(),
            raw_dim: DIM,
            dim: DIM,
            index: IndexKind::Flat,
            products: 0,
            vectors: 0,
            projection: false,
            catalog_views: vec![1.0],
            detect_catalog_images: false,
            synthetic_views: 0,
            labelled_photos: 0,
            domain_photos: 0,
            pseudo_labelled_photos: 0,
            created: String::new(),
        };
        let products = (0..4)
            .map(|i| Product::from_json(&format!(r#"{{"id":"p{i}","title":"P{i}"}}"#)).unwrap())
            .collect();
        let vectors = (0..4)
            .map(|i| {
                (
                    format!("p{i}"),
                    ImageVector {
                        image: format!("p{i}.jpg"),
                        bbox: None,
                        origin: "catalog".into(),
                        embedding: vector(i, 4, 0.1),
                    },
                )
            })
            .collect();
        Snapshot::assemble(
            manifest,
            products,
            vectors,
            None,
            &settings(20).index_params(),
        )
        .unwrap()
    }

    fn photo<'a>(kind: Kind, product: &'a str, e: &'a [f32]) -> NewPhoto<'a> {
        NewPhoto {
            kind,
            product_id: product,
            cue_id: "cue-1",
            channel: "ch",
            embedder_sha256: SHA,
            embedding: e,
        }
    }

    /// `n` confirmed photos of each of `products` (query-like: tilted towards axis 5+).
    fn confirm(store: &FeedbackStore, products: &[usize], n: usize) {
        for &p in products {
            let vs: Vec<Vec<f32>> = (0..n).map(|k| vector(p, 5 + k % 3, 0.6)).collect();
            let photos: Vec<NewPhoto<'_>> = vs
                .iter()
                .map(|v| NewPhoto {
                    product_id: ["p0", "p1", "p2", "p3"][p],
                    ..photo(Kind::Positive, "", v)
                })
                .collect();
            store.record(&photos).unwrap();
        }
    }

    /// Two stores on one folder (two processes of a fleet: each has its own lock file
    /// handle, so only the folder's `LOCK` keeps them apart) lose no verdict.
    #[test]
    fn stores_sharing_a_folder_lose_no_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let at = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let store = FeedbackStore::new(&at, &settings(100));
                    for k in 0..15 {
                        let v = vector(w, 2 + k % 5, 0.1 * (1 + k) as f32);
                        let product = format!("w{w}-{k}");
                        store
                            .record(&[NewPhoto {
                                product_id: &product,
                                ..photo(Kind::Positive, "", &v)
                            }])
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let store = FeedbackStore::new(dir.path(), &settings(100));
        assert_eq!(store.load().unwrap().len(), 30);
    }

    #[test]
    fn photos_are_stored_deduplicated_and_capped_per_product() {
        let dir = tempfile::tempdir().unwrap();
        let store = FeedbackStore::new(dir.path(), &settings(2));
        assert!(store.load().unwrap().is_empty(), "no file: an empty store");
        let (a, b, c) = (vector(0, 5, 0.5), vector(0, 6, 0.5), vector(0, 7, 0.5));
        let done = store
            .record(&[
                photo(Kind::Positive, "p0", &a),
                photo(Kind::Positive, "p0", &a),
            ])
            .unwrap();
        assert_eq!((done.stored, done.duplicates, done.replaced), (1, 1, 0));
        // A negative of the same vector is another kind: stored.
        let done = store.record(&[photo(Kind::Negative, "p0", &a)]).unwrap();
        assert_eq!(done.stored, 1);
        let done = store
            .record(&[
                photo(Kind::Positive, "p0", &b),
                photo(Kind::Positive, "p0", &c),
            ])
            .unwrap();
        assert_eq!(
            (done.stored, done.replaced),
            (2, 1),
            "cap 2: the oldest goes"
        );
        let records = store.load().unwrap();
        let positives: Vec<Vec<f32>> = records
            .iter()
            .filter(|r| r.kind == Kind::Positive)
            .map(|r| r.embedding().unwrap())
            .collect();
        assert_eq!(positives, vec![b, c]);
        assert_eq!(records.len(), 3);
    }

    #[test]
    fn a_damaged_store_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = FeedbackStore::new(dir.path(), &settings(2));
        std::fs::create_dir_all(store.path().parent().unwrap()).unwrap();
        std::fs::write(store.path(), "\n{not json\n").unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("labels.jsonl") && e.contains("line 2"), "{e}");
        // And a verdict does not overwrite it.
        let v = vector(0, 5, 0.5);
        assert!(store.record(&[photo(Kind::Positive, "p0", &v)]).is_err());
        assert_eq!(
            std::fs::read_to_string(store.path()).unwrap(),
            "\n{not json\n"
        );
    }

    #[test]
    fn below_coverage_the_photos_join_their_products_as_images() {
        let dir = tempfile::tempdir().unwrap();
        let store = FeedbackStore::new(dir.path(), &settings(20));
        confirm(&store, &[0, 1], 2);
        let snap = catalog_only();
        let s = settings(20);
        let (next, r) = retrained(&snap, &store.load().unwrap(), &s, &s.index_params()).unwrap();
        assert_eq!(
            (r.photos, r.products, r.vectors_before, r.vectors_after),
            (4, 2, 4, 8)
        );
        assert!(!r.projection_learned);
        assert!(
            r.projection_note
                .as_deref()
                .unwrap()
                .contains("2 of 4 products")
        );
        assert_eq!(
            next.entries().filter(|e| e.origin == ORIGIN).count(),
            4,
            "origin feedback"
        );
        // Again: the feedback vectors are replaced, not added twice.
        let (again, _) = retrained(&next, &store.load().unwrap(), &s, &s.index_params()).unwrap();
        assert_eq!(again.vectors(), 8);
        // A query like the confirmed photos now finds p1 first.
        let hit = again.search_batch(&[vector(1, 5, 0.6)], 1, 8).unwrap();
        assert_eq!(hit[0][0].0, "p1");
    }

    #[test]
    fn with_enough_coverage_a_projection_is_learned_and_learned_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = FeedbackStore::new(dir.path(), &settings(20));
        confirm(&store, &[0, 1, 2, 3], 2);
        let s = settings(20);
        // A catalog with a query-domain mean: the new generation keeps it (not applied
        // once there is a projection).
        let mean = crate::catalog::DomainMean::of(&[vector(5, 6, 0.5), vector(6, 5, 0.5)]).unwrap();
        let base = catalog_only()
            .with_domain_mean(Some(std::sync::Arc::new(mean.clone())))
            .unwrap();
        let (next, r) = retrained(&base, &store.load().unwrap(), &s, &s.index_params()).unwrap();
        assert!(r.projection_learned, "{:?}", r.projection_note);
        assert!(next.projection().is_some());
        assert_eq!(next.manifest.labelled_photos, 8);
        assert_eq!(next.domain_mean().map(|m| m.as_ref()), Some(&mean));
        assert_eq!(next.manifest.domain_photos, 2);
        assert!(
            !next.centres_queries(true),
            "a learned projection is not centred"
        );
        assert!(next.raw_vectors().is_some(), "raw vectors kept");
        // More photos later: learned again from the raw vectors.
        confirm(&store, &[0, 1, 2, 3], 3);
        let (again, r) = retrained(&next, &store.load().unwrap(), &s, &s.index_params()).unwrap();
        assert!(r.projection_learned, "{:?}", r.projection_note);
        assert_eq!(again.manifest.labelled_photos, r.photos);
        assert!(r.photos > 8);
    }

    #[test]
    fn records_the_catalog_cannot_use_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = FeedbackStore::new(dir.path(), &settings(20));
        let (a, b, c) = (vector(0, 5, 0.5), vector(1, 5, 0.5), vector(2, 5, 0.5));
        store
            .record(&[
                photo(Kind::Positive, "gone", &a),
                NewPhoto {
                    embedder_sha256: "another",
                    ..photo(Kind::Positive, "p1", &b)
                },
                photo(Kind::Negative, "p2", &c),
            ])
            .unwrap();
        let mut records = store.load().unwrap();
        records.push(Record {
            vector: "zz".into(),
            ..records[0].clone()
        });
        records.last_mut().unwrap().product_id = "p3".into();
        let s = settings(20);
        let (next, r) = retrained(&catalog_only(), &records, &s, &s.index_params()).unwrap();
        assert_eq!(r.photos, 0);
        assert_eq!(r.negatives, 1);
        assert_eq!(r.skipped["product no longer in the catalog"], 1);
        assert_eq!(r.skipped["made with another embedder"], 1);
        assert_eq!(r.skipped["damaged vector"], 1);
        assert_eq!(next.vectors(), 4);
    }

    #[test]
    fn retrain_writes_a_new_generation_and_swaps_it_in() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(20);
        catalog_only().save(dir.path()).unwrap();
        let catalog = Catalog::open(dir.path(), &s).unwrap();
        let store = FeedbackStore::new(dir.path(), &s);
        confirm(&store, &[0, 1, 2, 3], 2);
        let before = catalog.snapshot();
        let r = retrain(&catalog, &store, &s).unwrap();
        assert!(r.projection_learned);
        assert_eq!(before.vectors(), 4, "a held snapshot does not change");
        assert_eq!(catalog.snapshot().vectors(), 12);
        // From disk: the projection and its raw vectors come back.
        let reopened = Catalog::open(dir.path(), &s).unwrap();
        let snap = reopened.snapshot();
        assert!(snap.projection().is_some());
        assert_eq!(snap.raw_vectors().unwrap().len(), 12);
        assert_eq!(
            store.load().unwrap().len(),
            8,
            "the labels stay beside the catalog"
        );
    }
}
