//! Catalog and inference end to end, with the real models (ONNX Runtime), real FAISS, real
//! Grocery Store pictures, and the HTTP APIs over real sockets on 127.0.0.1:0.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shopcue::catalog::build::{BuildOptions, build};
use shopcue::catalog::upstream::ProductService;
use shopcue::catalog::{Analyzer, Catalog, CatalogError, CatalogSettings, FrameAnalysis};
use shopcue::config::Settings;
use shopcue::http::catalog::{CatalogApiState, router};
use shopcue::http::cors;
use shopcue::inference::{Detector, Embedder, InferenceError, Models, RgbImage};

const ADMIN_KEY: &str = "test-admin-key";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn grocery() -> PathBuf {
    let local = root().join("data/grocery");
    if local.exists() {
        local
    } else {
        root().join("../shared/data/grocery")
    }
}

fn settings() -> Settings {
    let mut s = Settings::default();
    s.inference.models_dir = root().join("models").display().to_string();
    s.inference.providers = vec!["cpu".into()];
    s
}

fn models() -> Models {
    Models::load(&settings().inference).expect("models load (run scripts/setup.sh)")
}

/// Six products with their iconic images (absolute paths).
const PRODUCTS: [(&str, &str); 6] = [
    ("Banana", "Fruit/Banana/Banana"),
    ("Lemon", "Fruit/Lemon/Lemon"),
    ("Cabbage", "Vegetables/Cabbage/Cabbage"),
    (
        "Red-Bell-Pepper",
        "Vegetables/Pepper/Red-Bell-Pepper/Red-Bell-Pepper",
    ),
    (
        "Arla-Standard-Milk",
        "Packages/Milk/Arla-Standard-Milk/Arla-Standard-Milk",
    ),
    (
        "Oatly-Oat-Milk",
        "Packages/Oat-Milk/Oatly-Oat-Milk/Oatly-Oat-Milk",
    ),
];

/// The lime's iconic image, relative to the dataset folder (an admin images root).
const LIME: &str = "iconic-images-and-descriptions/Fruit/Lime/Lime_Iconic.jpg";

fn iconic(stem: &str) -> PathBuf {
    grocery().join(format!("iconic-images-and-descriptions/{stem}_Iconic.jpg"))
}

fn photo(split: &str, stem: &str, n: u32) -> PathBuf {
    grocery().join(format!("{split}/{stem}_{n:03}.jpg"))
}

fn product_line(id: &str, image: &Path) -> String {
    serde_json::json!({"id": id, "title": id.replace('-', " "), "price": 1.25, "currency": "EUR",
        "images": [image], "brand": "Test", "shelf": {"aisle": 4}})
    .to_string()
}

/// A products file with the six products (images absolute).
fn write_products(dir: &Path) -> PathBuf {
    let p = dir.join("products.jsonl");
    let text: Vec<String> = PRODUCTS
        .iter()
        .map(|(id, stem)| product_line(id, &iconic(stem)))
        .collect();
    std::fs::write(&p, text.join("\n") + "\n").unwrap();
    p
}

fn opts(products: &Path, out: &Path) -> BuildOptions {
    BuildOptions {
        products: products.to_path_buf(),
        out: out.to_path_buf(),
        train_photos: None,
        domain_photos: None,
        strict: false,
        progress: false,
    }
}

/// The six products of `PRODUCTS`, built in `dir` with `s` and opened.
fn six_product_catalog(s: &Settings, models: &Models, dir: &Path) -> Arc<Catalog> {
    let products = write_products(dir);
    let out = dir.join("catalog");
    build(models, &s.catalog, &opts(&products, &out)).unwrap();
    Arc::new(Catalog::open(&out, &s.catalog).unwrap())
}

#[test]
fn build_then_query_finds_the_product() {
    let s = settings();
    let models = models();
    let tmp = tempfile::tempdir().unwrap();
    let products = write_products(tmp.path());
    let out = tmp.path().join("catalog");
    let report = build(&models, &s.catalog, &opts(&products, &out)).unwrap();
    assert_eq!(report.products, 6);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert!(!report.projection);

    let catalog = Arc::new(Catalog::open(&out, &s.catalog).unwrap());
    // Unknown fields come back.
    assert_eq!(
        catalog.product("Banana").unwrap().extra["shelf"]["aisle"],
        4
    );
    let analyzer = Analyzer::new(&models, catalog.clone(), &s.catalog).unwrap();
    for (id, stem, n) in [
        ("Banana", "Fruit/Banana/Banana", 4),
        ("Cabbage", "Vegetables/Cabbage/Cabbage", 4),
    ] {
        let img = RgbImage::open(&photo("val", stem, n)).unwrap();
        let results = analyzer.query(&img, 3).unwrap();
        assert!(
            results.iter().any(|m| m.product_id == id),
            "{id} not in top 3: {results:?}"
        );
        for m in &results {
            assert!(m.bbox.iter().all(|v| (0.0..=1.0).contains(v)), "{m:?}");
        }
        for w in results.windows(2) {
            assert!(w[0].score >= w[1].score);
        }
    }
    // The raw search API gives the same product for the whole picture's embedding.
    let img = RgbImage::open(&photo("val", "Fruit/Banana/Banana", 4)).unwrap();
    let e = models.embedder.embed(&img).unwrap();
    assert!(
        (e.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4,
        "L2-normalised"
    );
    assert_eq!(catalog.search(&e, 1).unwrap()[0].0, "Banana");
}

/// Settings, models and the six-product catalog (in the returned folder).
fn six_product_fixture() -> (Settings, Models, tempfile::TempDir, Arc<Catalog>) {
    let (s, models) = (settings(), models());
    let tmp = tempfile::tempdir().unwrap();
    let catalog = six_product_catalog(&s, &models, tmp.path());
    (s, models, tmp, catalog)
}

/// An analyzer over `catalog` with the catalog settings of `s` changed by `change`.
fn analyzer_with(
    s: &Settings,
    models: &Models,
    catalog: &Arc<Catalog>,
    change: impl FnOnce(&mut CatalogSettings),
) -> Analyzer {
    let mut cs = s.catalog.clone();
    change(&mut cs);
    cs.validate().unwrap();
    Analyzer::new(models, catalog.clone(), &cs).unwrap()
}

/// The regions' embeddings of one analysis, in order.
fn region_embeddings(f: &FrameAnalysis) -> Vec<Vec<f32>> {
    f.regions
        .iter()
        .map(|r| r.embedding.as_deref().unwrap().to_vec())
        .collect()
}

/// Each embedding's best similarity in `catalog`.
fn best_similarities(catalog: &Catalog, embeddings: &[Vec<f32>]) -> Vec<f32> {
    let hits = catalog.search_batch(embeddings, 1).unwrap();
    hits.iter().map(|c| c[0].1).collect()
}

/// Equal up to the float noise of batches of other sizes.
fn close(a: &[f32], b: &[f32]) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4)
}

/// In-store val photos of one juice carton (several regions each), with their numbers.
fn juice_photos() -> Vec<(u32, RgbImage)> {
    let stem = "Packages/Juice/Bravo-Apple-Juice/Bravo-Apple-Juice";
    (1..=12)
        .filter_map(|n| Some((n, RgbImage::open(&photo("val", stem, n)).ok()?)))
        .collect()
}

/// `catalog.query_views_top` and `catalog.query_views_within`: only the best-matching
/// regions (by their first view) get every view; the others keep the first view alone, and
/// limits that every region passes change nothing.
#[test]
fn only_the_best_regions_get_every_view() {
    let (s, models, _tmp, catalog) = six_product_fixture();
    let with = |top: usize, within: f32, views: Vec<f32>| {
        analyzer_with(&s, &models, &catalog, |cs| {
            (cs.query_views_top, cs.query_views_within, cs.query_views) = (top, within, views)
        })
    };
    let three = || vec![1.0, 0.8, 0.6];
    let (all, first) = (with(0, 0.0, three()), with(0, 0.0, vec![1.0]));
    let (top1, near) = (with(1, 0.0, three()), with(0, 0.01, three()));
    let (wide_top, wide_within) = (with(100, 0.0, three()), with(0, 2.0, three()));
    let embeddings = |a: &Analyzer, img: &RgbImage| region_embeddings(&a.analyze(img, 3).unwrap());
    let mut checked = 0;
    for (n, img) in juice_photos() {
        let (e_all, e_first) = (embeddings(&all, &img), embeddings(&first, &img));
        for wide in [&wide_top, &wide_within] {
            let e = embeddings(wide, &img);
            assert!(e.iter().zip(&e_all).all(|(a, b)| close(a, b)));
        }
        if e_all.len() < 2 {
            continue;
        }
        let best = best_similarities(&catalog, &e_first);
        // top 1: the first of the best (a box can be the whole picture's crop, so equal
        // scores happen); within 0.01: every region that close to the best.
        let lead = (0..best.len())
            .rev()
            .max_by(|&a, &b| best[a].total_cmp(&best[b]))
            .unwrap();
        let top_score = best[lead];
        for (analyzer, chosen) in [
            (
                &top1,
                Box::new(move |i: usize| i == lead) as Box<dyn Fn(usize) -> bool>,
            ),
            (&near, Box::new(move |i: usize| best[i] >= top_score - 0.01)),
        ] {
            let e = embeddings(analyzer, &img);
            for i in 0..e_all.len() {
                let want = if chosen(i) { &e_all[i] } else { &e_first[i] };
                assert!(close(&e[i], want), "region {i} of photo {n}");
            }
        }
        // Some region kept its first view alone.
        let e = embeddings(&top1, &img);
        assert!((0..e_all.len()).any(|i| !close(&e[i], &e_all[i])));
        checked += 1;
    }
    assert!(
        checked > 0,
        "no photo with a detection besides the whole picture"
    );
}

/// In a live channel, a region whose first view is too far below the similarity a cue
/// needs keeps that view alone; the others get every view, exactly as without the limit.
#[test]
fn regions_far_below_a_cue_keep_their_first_view() {
    let (s, models, _tmp, catalog) = six_product_fixture();
    let with = |margin: f32, views: Vec<f32>| {
        analyzer_with(&s, &models, &catalog, |cs| {
            (cs.query_views_floor_margin, cs.query_views) = (margin, views)
        })
    };
    let (all, first) = (with(0.0, vec![1.0, 0.8, 0.6]), with(0.0, vec![1.0]));
    let margin = 0.2;
    let floored = with(margin, vec![1.0, 0.8, 0.6]);
    let run = |a: &Analyzer, img: &RgbImage, cue: Option<f32>| {
        let f = a.analyze_reusing(img, 3, None, cue).unwrap();
        (region_embeddings(&f), f.first_view_only)
    };
    let mut mixed = 0;
    for (n, img) in juice_photos() {
        let ((e_all, none), (e_first, _)) = (run(&all, &img, Some(0.5)), run(&first, &img, None));
        assert_eq!(none, 0, "no limit: every region gets every view");
        let best = best_similarities(&catalog, &e_first);
        // No cue asked for: the limit is off, as for `catalog query`.
        let (e, skipped) = run(&floored, &img, None);
        assert_eq!(skipped, 0);
        assert!(e.iter().zip(&e_all).all(|(a, b)| close(a, b)));
        // A cue similarity that puts the floor between the best and the worst region.
        let (lo, hi) = best
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &b| (l.min(b), h.max(b)));
        if hi - lo < 1e-3 {
            continue;
        }
        let floor = (lo + hi) / 2.0;
        let (e, skipped) = run(&floored, &img, Some(floor + margin));
        for i in 0..e.len() {
            let want = if best[i] >= floor {
                &e_all[i]
            } else {
                &e_first[i]
            };
            assert!(close(&e[i], want), "region {i} of photo {n}");
        }
        assert_eq!(skipped, best.iter().filter(|&&b| b < floor).count());
        assert!(skipped > 0 && skipped < e.len());
        // Far above every region: each keeps its first view.
        let (e, skipped) = run(&floored, &img, Some(hi + margin + 0.01));
        assert_eq!(skipped, e.len());
        assert!(e.iter().zip(&e_first).all(|(a, b)| close(a, b)));
        mixed += 1;
    }
    assert!(
        mixed > 0,
        "no photo whose regions match at different similarities"
    );
}

#[test]
fn train_photos_learn_a_projection() {
    let s = settings();
    let models = models();
    let tmp = tempfile::tempdir().unwrap();
    let products = write_products(tmp.path());
    let train = tmp.path().join("train.jsonl");
    let mut lines = Vec::new();
    for (id, stem) in PRODUCTS {
        for n in 1..=4 {
            lines.push(
                serde_json::json!({"product_id": id, "image": photo("train", stem, n)}).to_string(),
            );
        }
    }
    lines.push(r#"{"product_id": "Not-In-Catalog", "image": "x.jpg"}"#.into());
    std::fs::write(&train, lines.join("\n")).unwrap();
    let out = tmp.path().join("catalog");
    let mut o = opts(&products, &out);
    o.train_photos = Some(train.clone());
    let report = build(&models, &s.catalog, &o).unwrap();
    assert!(report.projection);
    assert_eq!(report.train_photos, 24);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].at, format!("{}:25", train.display()));
    assert!(
        report.skipped[0]
            .reason
            .contains("unknown product id `Not-In-Catalog`")
    );
    let catalog = Arc::new(Catalog::open(&out, &s.catalog).unwrap());
    let m = catalog.manifest();
    assert!(m.projection);
    assert_eq!(m.dim, 5, "LDA keeps products - 1 directions");
    let analyzer = Analyzer::new(&models, catalog, &s.catalog).unwrap();
    let img = RgbImage::open(&photo("val", "Fruit/Banana/Banana", 4)).unwrap();
    let results = analyzer.query(&img, 3).unwrap();
    assert!(
        results.iter().any(|m| m.product_id == "Banana"),
        "{results:?}"
    );
}

#[test]
fn bad_input_is_reported_by_file_and_line() {
    let s = settings();
    let models = models();
    let tmp = tempfile::tempdir().unwrap();
    let corrupt = tmp.path().join("corrupt.jpg");
    std::fs::write(&corrupt, b"\xff\xd8\xff\xe0 this is not a JPEG").unwrap();
    let good = iconic(PRODUCTS[0].1);
    let products = tmp.path().join("products.jsonl");
    let lines = [
        product_line("good", &good),
        "{\"id\": \"broken\", \"images\": [".to_string(),
        product_line("good", &good),
        product_line("corrupt-only", &corrupt),
        serde_json::json!({"id": "half", "images": [good, "missing.jpg"]}).to_string(),
        serde_json::json!({"id": "no-images"}).to_string(),
    ];
    std::fs::write(&products, lines.join("\n")).unwrap();
    let out = tmp.path().join("catalog");
    let report = build(&models, &s.catalog, &opts(&products, &out)).unwrap();
    let f = products.display().to_string();
    let at: Vec<&str> = report.skipped.iter().map(|s| s.at.as_str()).collect();
    assert_eq!(report.products, 2, "{:?}", report.skipped);
    assert!(
        at.contains(&format!("{f}:2").as_str()),
        "malformed line: {at:?}"
    );
    let dup = report
        .skipped
        .iter()
        .find(|s| s.at == format!("{f}:3"))
        .unwrap();
    assert!(
        dup.reason
            .contains("duplicate product id `good` (first on line 1)"),
        "{dup:?}"
    );
    let bad_img = report
        .skipped
        .iter()
        .find(|s| s.at.starts_with(&format!("{f}:4 image")))
        .unwrap();
    assert!(bad_img.reason.contains("corrupt.jpg"), "{bad_img:?}");
    assert!(
        report
            .skipped
            .iter()
            .any(|s| s.at == format!("{f}:4") && s.reason.contains("no usable image"))
    );
    assert!(
        report
            .skipped
            .iter()
            .any(|s| s.at.starts_with(&format!("{f}:5 image")) && s.reason.contains("missing.jpg"))
    );
    assert!(
        report
            .skipped
            .iter()
            .any(|s| s.at == format!("{f}:6") && s.reason.contains("no images"))
    );

    // Strict: the first problem fails the build, naming the line; nothing is written.
    let out2 = tmp.path().join("strict");
    let mut o = opts(&products, &out2);
    o.strict = true;
    let e = build(&models, &s.catalog, &o).unwrap_err();
    assert!(matches!(e, CatalogError::Input { .. }));
    assert!(e.to_string().starts_with(&format!("{f}:2:")), "{e}");
    assert!(!out2.exists());

    // Nothing usable: an error, and no catalog.
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, product_line("x", &corrupt)).unwrap();
    let out3 = tmp.path().join("empty-catalog");
    assert!(matches!(
        build(&models, &s.catalog, &opts(&empty, &out3)),
        Err(CatalogError::Empty(_))
    ));
    assert!(!out3.join("CURRENT").exists());

    // A products file that does not exist.
    let e = build(
        &models,
        &s.catalog,
        &opts(&tmp.path().join("nope.jsonl"), &out3),
    )
    .unwrap_err();
    assert!(e.to_string().contains("nope.jsonl"), "{e}");
}

#[test]
fn failed_build_leaves_the_previous_catalog() {
    let s = settings();
    let models = models();
    let tmp = tempfile::tempdir().unwrap();
    let products = write_products(tmp.path());
    let out = tmp.path().join("catalog");
    build(&models, &s.catalog, &opts(&products, &out)).unwrap();
    let before = std::fs::read_to_string(out.join("CURRENT")).unwrap();
    // A second build that fails half-way (strict, a bad image on the last line).
    let mut text = std::fs::read_to_string(&products).unwrap();
    text.push_str(&product_line("bad", &tmp.path().join("missing.jpg")));
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, text).unwrap();
    let mut o = opts(&bad, &out);
    o.strict = true;
    assert!(build(&models, &s.catalog, &o).is_err());
    assert_eq!(
        std::fs::read_to_string(out.join("CURRENT")).unwrap(),
        before
    );
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        names.iter().all(|n| !n.contains(".tmp")),
        "no partial generation left: {names:?}"
    );
    assert_eq!(Catalog::open(&out, &s.catalog).unwrap().snapshot().len(), 6);
    // A folder holding other things is not overwritten.
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("keep.txt"), "mine").unwrap();
    let e = build(&models, &s.catalog, &opts(&products, &foreign)).unwrap_err();
    assert!(matches!(e, CatalogError::NotACatalog { .. }), "{e}");
    assert!(foreign.join("keep.txt").exists());
}

#[test]
fn models_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let models_dir = tmp.path();
    for f in [
        "yolox_nano.onnx",
        "coco_classes.txt",
        "efficientnet_lite0.onnx",
    ] {
        std::fs::copy(root().join("models").join(f), models_dir.join(f)).unwrap();
    }
    let sums = std::fs::read_to_string(root().join("models/SHA256SUMS")).unwrap();
    let mut s = settings().inference;
    s.models_dir = models_dir.display().to_string();

    // Checksum mismatch: the list says otherwise.
    std::fs::write(
        models_dir.join("SHA256SUMS"),
        sums.replace("695e750a", "00000000"),
    )
    .unwrap();
    let e = Detector::load(&s, None).unwrap_err();
    assert!(matches!(e, InferenceError::Checksum { .. }), "{e}");
    assert!(e.to_string().contains("yolox_nano.onnx"), "{e}");
    // A sha256 in the model description wins over the list.
    s.models.get_mut("yolox_nano").unwrap().sha256 =
        "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14".into();
    Detector::load(&s, None).unwrap();
    std::fs::write(models_dir.join("SHA256SUMS"), &sums).unwrap();

    // A damaged model file.
    let mut bytes = std::fs::read(models_dir.join("efficientnet_lite0.onnx")).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(models_dir.join("efficientnet_lite0.onnx"), &bytes).unwrap();
    let e = Embedder::load(&s, None).unwrap_err();
    assert!(matches!(e, InferenceError::Checksum { .. }), "{e}");

    // Missing model file.
    let e = Embedder::load(&s, Some("mobilenetv2_deepsort")).unwrap_err();
    assert!(matches!(e, InferenceError::ModelFile { .. }), "{e}");
    assert!(e.to_string().contains("mobilenetv2_deepsort.onnx"), "{e}");

    // Wrong model for the role, unknown model.
    assert!(matches!(
        Detector::load(&s, Some("efficientnet_lite0")),
        Err(InferenceError::WrongKind { .. })
    ));
    assert!(matches!(
        Embedder::load(&s, Some("clip")),
        Err(InferenceError::UnknownModel { .. })
    ));

    // A model whose description does not fit it: a not-ONNX file with no checksum known.
    std::fs::write(models_dir.join("junk.onnx"), b"not a model").unwrap();
    let mut spec = s.models["efficientnet_lite0"].clone();
    spec.file = "junk.onnx".into();
    spec.sha256.clear();
    s.models.insert("junk".into(), spec);
    assert!(matches!(
        Embedder::load(&s, Some("junk")),
        Err(InferenceError::Session { .. })
    ));

    // The ONNX Runtime library missing: a clear error, no panic.
    let mut s2 = settings().inference;
    s2.ort_library = "/nonexistent/libonnxruntime.so".into();
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        let e = Detector::load(&s2, None).unwrap_err();
        assert!(matches!(e, InferenceError::Library { .. }), "{e}");
        assert!(
            e.to_string().contains("/nonexistent/libonnxruntime.so"),
            "{e}"
        );
    }
}

#[test]
fn gpu_providers_fall_back_to_cpu_and_say_so() {
    let mut s = settings().inference;
    s.providers = vec!["tensorrt".into(), "cuda".into(), "cpu".into()];
    let d = Detector::load(&s, None).unwrap();
    // On a machine without the GPU library the CPU runs it, and both GPU providers say why.
    if d.provider() == "cpu" {
        assert_eq!(d.fallbacks().len(), 2, "{:?}", d.fallbacks());
        assert!(d.fallbacks()[0].starts_with("tensorrt: "));
        assert!(d.fallbacks()[1].starts_with("cuda: "));
    }
    let img = RgbImage::open(&photo("val", "Fruit/Banana/Banana", 4)).unwrap();
    let dets = d.detect(&img).unwrap();
    for det in &dets {
        assert!(det.score >= 0.25 && det.score <= 1.0);
        assert!(
            det.bbox.x >= 0.0 && det.bbox.x + det.bbox.w <= 1.0 + 1e-4,
            "{det:?}"
        );
        assert!(!det.class_name.is_empty());
    }
    // GPU only, no CPU: an error that lists each provider's reason.
    s.providers = vec!["cuda".into()];
    if let Err(e) = Detector::load(&s, None) {
        assert!(e.to_string().contains("cuda: "), "{e}");
    }
}

/// A fake shop API: price 9.99 for any id, except `Lemon` (HTTP 500) and `Cabbage` (slow).
async fn start_upstream() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use axum::extract::Path as AxPath;
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/api/products/{id}",
        axum::routing::get(move |AxPath(id): AxPath<String>| {
            let h = h.clone();
            async move {
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                match id.as_str() {
                    "Lemon" => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom".to_string()),
                    "Cabbage" => {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        (axum::http::StatusCode::OK, "{}".to_string())
                    }
                    _ => (
                        axum::http::StatusCode::OK,
                        serde_json::json!({"id": id, "price": 9.99, "stock": {"state": "in_stock"}}).to_string(),
                    ),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/api/products/{{id}}"), hits)
}

async fn start_api(state: CatalogApiState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router(state, cors::read_only(&[cors::ANY.into()])),
        )
        .await
        .unwrap()
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_and_product_api_over_http() {
    let s = settings();
    let tmp = tempfile::tempdir().unwrap();
    let products = write_products(tmp.path());
    let out = tmp.path().join("catalog");
    let (models, catalog) = {
        let out = out.clone();
        let cs = s.catalog.clone();
        tokio::task::spawn_blocking(move || {
            let models = models();
            build(&models, &cs, &opts(&products, &out)).unwrap();
            let catalog = Arc::new(Catalog::open(&out, &cs).unwrap());
            (models, catalog)
        })
        .await
        .unwrap()
    };
    let (upstream, hits) = start_upstream().await;
    let mut cs = s.catalog.clone();
    // Admin image paths are relative to the images root.
    cs.images_root = grocery().display().to_string();
    cs.upstream.url_template = upstream;
    cs.upstream.timeout_ms = 500;
    cs.upstream.cache_ttl_ms = 60_000;
    cs.upstream.fields = vec!["price".into(), "availability=/stock/state".into()];
    let service = Arc::new(ProductService::new(catalog.clone(), &cs.upstream));
    let base = start_api(CatalogApiState::new(
        service.clone(),
        Some(models.clone()),
        &cs,
        ADMIN_KEY,
    ))
    .await;
    let http = reqwest::Client::new();

    // Product API: live fields from the shop, cached.
    let r = http
        .get(format!("{base}/v1/products/Banana"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["product"]["price"], 9.99);
    assert_eq!(v["product"]["availability"], "in_stock");
    assert_eq!(v["product"]["shelf"]["aisle"], 4, "unknown fields kept");
    assert_eq!(
        (v["source"].as_str(), v["stale"].as_bool()),
        (Some("upstream"), Some(false))
    );
    let n = hits.load(std::sync::atomic::Ordering::SeqCst);
    let v: serde_json::Value = http
        .get(format!("{base}/v1/products/Banana"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["product"]["price"], 9.99);
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        n,
        "second answer from the cache"
    );
    // Upstream error and upstream timeout: catalog data, marked stale.
    for id in ["Lemon", "Cabbage"] {
        let t = std::time::Instant::now();
        let v: serde_json::Value = http
            .get(format!("{base}/v1/products/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["stale"], true, "{id}: {v}");
        assert_eq!(v["source"], "catalog");
        assert_eq!(v["product"]["price"], 1.25, "catalog price");
        assert!(v["upstream_error"].is_string());
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "bounded by the timeout"
        );
    }
    assert_eq!(
        http.get(format!("{base}/v1/products/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Admin API: key required.
    let new_product = serde_json::json!({"id": "Lemon-2", "title": "Another lemon", "price": 0.5,
        "images": [LIME]});
    let r = http
        .post(format!("{base}/v1/catalog/products"))
        .json(&new_product)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/v1/catalog/products"))
        .header("x-api-key", "wrong")
        .json(&new_product)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/v1/catalog/products"))
        .header("x-api-key", ADMIN_KEY)
        .json(&new_product)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let r = http
        .post(format!("{base}/v1/catalog/products"))
        .bearer_auth(ADMIN_KEY)
        .json(&new_product)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "duplicate id");
    let r = http
        .post(format!("{base}/v1/catalog/products"))
        .bearer_auth(ADMIN_KEY)
        .body("{\"id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "malformed body");
    let r = http
        .post(format!("{base}/v1/catalog/products"))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"id": "ghost", "images": ["/no/such.jpg"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "no usable image");
    // Admin images never reach outside the images root or into the private network.
    for (image, why) in [
        (
            iconic("Fruit/Lime/Lime").display().to_string(),
            "relative to catalog.images_root",
        ),
        ("../grocery/x.jpg".to_string(), "without `..`"),
        (
            format!("{base}/v1/products/Banana/image"),
            "not a public address",
        ),
    ] {
        let r = http
            .post(format!("{base}/v1/catalog/products"))
            .bearer_auth(ADMIN_KEY)
            .json(&serde_json::json!({"id": "probe", "images": [image]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{image}");
        let body = r.text().await.unwrap();
        assert!(body.contains(why), "{image}: {body}");
    }
    // Allowed in config, a loopback image URL is fetched.
    let mut open = cs.clone();
    open.admin_image_private_hosts = true;
    let open_base = start_api(CatalogApiState::new(
        service,
        Some(models.clone()),
        &open,
        ADMIN_KEY,
    ))
    .await;
    let r = http
        .post(format!("{open_base}/v1/catalog/products"))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"id": "Banana-by-url",
            "images": [format!("{base}/v1/products/Banana/image")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);

    // The update is visible to search: the lime picture now finds Lemon-2 first.
    let lime = RgbImage::open(&iconic("Fruit/Lime/Lime")).unwrap();
    let e = models.embedder.embed(&lime).unwrap();
    assert_eq!(catalog.search(&e, 1).unwrap()[0].0, "Lemon-2");
    // PUT replaces (id from the path), DELETE removes.
    let r = http
        .put(format!("{base}/v1/catalog/products/Lemon-2"))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"title": "Lime really", "price": 0.6, "images": [LIME]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        catalog.product("Lemon-2").unwrap().title.as_deref(),
        Some("Lime really")
    );
    let r = http
        .put(format!("{base}/v1/catalog/products/Lemon-2"))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"id": "other", "images": [LIME]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "id mismatch");
    assert_eq!(
        http.delete(format!("{base}/v1/catalog/products/Banana"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = http
        .delete(format!("{base}/v1/catalog/products/Banana"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .delete(format!("{base}/v1/catalog/products/Banana"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        http.get(format!("{base}/v1/products/Banana"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let banana = RgbImage::open(&iconic("Fruit/Banana/Banana")).unwrap();
    let e = models.embedder.embed(&banana).unwrap();
    assert!(
        catalog
            .search(&e, 10)
            .unwrap()
            .iter()
            .all(|(p, _)| p != "Banana")
    );

    // Persisted: a fresh open of the folder sees every change.
    let cs2 = CatalogSettings::default();
    let again = tokio::task::spawn_blocking(move || Catalog::open(&out, &cs2).unwrap())
        .await
        .unwrap();
    assert!(again.product("Banana").is_none());
    assert_eq!(again.product("Lemon-2").unwrap().price, Some(0.6));
    assert!(again.product("Banana-by-url").is_some());
    assert_eq!(again.snapshot().len(), 7);
    let v: serde_json::Value = http
        .get(format!("{base}/v1/catalog"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["products"], 7);
}

#[test]
fn searches_run_during_updates() {
    // Readers never see a half-updated index: every search answers from a whole snapshot.
    let s = settings();
    let models = models();
    let tmp = tempfile::tempdir().unwrap();
    let catalog = six_product_catalog(&s, &models, tmp.path());
    let banana = RgbImage::open(&iconic("Fruit/Banana/Banana")).unwrap();
    let q = models.embedder.embed(&banana).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (c, q, stop) = (catalog.clone(), q.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let snap = c.snapshot();
                    let r = snap.search_batch(std::slice::from_ref(&q), 3, 8).unwrap();
                    assert_eq!(r[0][0].0, "Banana");
                    // Every product found is in the same snapshot.
                    assert!(r[0].iter().all(|(p, _)| snap.product(p).is_some()));
                    n += 1;
                }
                n
            })
        })
        .collect();
    let lime = RgbImage::open(&iconic("Fruit/Lime/Lime")).unwrap();
    let v = shopcue::catalog::build::picture_vectors(
        &models, &s.catalog, "lime", &lime, "catalog", None,
    )
    .unwrap();
    for i in 0..5 {
        let p = shopcue::catalog::Product::from_json(&format!(r#"{{"id":"extra-{i}"}}"#)).unwrap();
        catalog.upsert(p, v.clone()).unwrap();
        if i % 2 == 1 {
            catalog.remove(&format!("extra-{}", i - 1)).unwrap();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(catalog.snapshot().len(), 6 + 3);
}

/// A query-domain photos file in `dir` naming `n` train photos of each of the six
/// products by paths relative to it (through a `photos` link to the dataset's `train/`),
/// some lines with a `product_id` (ignored), as `--train-photos` lines are.
fn write_domain_photos(dir: &Path, n: u32, extra: &[&str]) -> PathBuf {
    let link = dir.join("photos");
    if !link.exists() {
        std::os::unix::fs::symlink(grocery().join("train"), &link).unwrap();
    }
    let mut lines = Vec::new();
    for (i, (id, stem)) in PRODUCTS.iter().enumerate() {
        for k in 1..=n {
            let image = format!("photos/{stem}_{k:03}.jpg");
            lines.push(if i % 2 == 0 {
                serde_json::json!({ "image": image }).to_string()
            } else {
                serde_json::json!({ "product_id": id, "image": image }).to_string()
            });
        }
    }
    lines.extend(extra.iter().map(|l| l.to_string()));
    let p = dir.join(format!("domain-{n}.jsonl"));
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

#[test]
fn domain_photos_give_a_mean_that_later_generations_keep() {
    let mut s = settings();
    s.catalog.domain_min_photos = 12;
    // Centring alone (the pseudo-labelled projection has its own test below).
    s.catalog.domain_pseudo_labels = false;
    let models = models();
    let tmp = tempfile::tempdir().unwrap();
    let products = write_products(tmp.path());
    let domain = write_domain_photos(tmp.path(), 2, &["not json", r#"{"image": "missing.jpg"}"#]);
    let out = tmp.path().join("catalog");
    let mut o = opts(&products, &out);
    o.domain_photos = Some(domain.clone());
    let report = build(&models, &s.catalog, &o).unwrap();
    assert_eq!(report.domain_photos, 12);
    assert!(!report.projection);
    let f = domain.display().to_string();
    let at: Vec<&str> = report.skipped.iter().map(|s| s.at.as_str()).collect();
    assert_eq!(
        at,
        vec![format!("{f}:13"), format!("{f}:14 image missing.jpg")],
        "{:?}",
        report.skipped
    );
    let catalog = Catalog::open(&out, &s.catalog).unwrap();
    assert_eq!(catalog.manifest().domain_photos, 12);
    assert!(catalog.centres_queries());
    let mean = catalog.snapshot().domain_mean().unwrap().clone();
    assert_eq!(mean.dim(), models.embedder.dim());
    // The live path finds the product with centred queries.
    let analyzer = Analyzer::new(&models, Arc::new(catalog), &s.catalog).unwrap();
    let img = RgbImage::open(&photo("val", "Fruit/Banana/Banana", 4)).unwrap();
    let results = analyzer.query(&img, 3).unwrap();
    assert!(
        results.iter().any(|m| m.product_id == "Banana"),
        "{results:?}"
    );
    // Later generations: a retrain (no feedback stored) and an admin change keep the mean.
    let catalog = analyzer.catalog();
    let store = shopcue::catalog::feedback::FeedbackStore::new(&out, &s.catalog);
    let before = catalog.generation();
    shopcue::catalog::feedback::retrain(catalog, &store, &s.catalog).unwrap();
    assert_ne!(
        catalog.generation(),
        before,
        "the retrain wrote a generation"
    );
    catalog.remove("Lemon").unwrap();
    let again = Catalog::open(&out, &s.catalog).unwrap();
    assert_eq!(again.snapshot().len(), 5);
    assert_eq!(again.manifest().domain_photos, 12);
    assert_eq!(again.snapshot().domain_mean().unwrap(), &mean);
}

/// The default with `--domain-photos`: the photos are labelled by clustering around the
/// catalog (their `product_id` fields are not read) and a projection is learned from them;
/// queries are searched in the learned space, and later generations keep it.
#[test]
fn domain_photos_are_labelled_by_clustering_and_train_a_projection() {
    let mut s = settings();
    s.catalog.domain_min_photos = 24;
    assert!(s.catalog.domain_pseudo_labels, "the default");
    let models = models();
    let tmp = tempfile::tempdir().unwrap();
    let products = write_products(tmp.path());
    let domain = write_domain_photos(tmp.path(), 4, &[]);
    // Four photos per product: too thin for the default 20, so centring, and it says so.
    let thin = tmp.path().join("thin");
    let mut o = opts(&products, &thin);
    o.domain_photos = Some(domain.clone());
    let report = build(&models, &s.catalog, &o).unwrap();
    assert!(!report.projection);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("needs 20 per product (120 for 6 products)")),
        "{:?}",
        report.warnings
    );
    assert!(Catalog::open(&thin, &s.catalog).unwrap().centres_queries());
    s.catalog.domain_pseudo_min_per_product = 4;
    let out = tmp.path().join("catalog");
    let mut o = opts(&products, &out);
    o.domain_photos = Some(domain);
    let report = build(&models, &s.catalog, &o).unwrap();
    assert!(report.projection, "{report:?}");
    assert_eq!(report.train_photos, 0);
    assert_eq!(report.domain_photos, 24);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let catalog = Catalog::open(&out, &s.catalog).unwrap();
    let m = catalog.manifest();
    assert!(m.projection);
    assert_eq!((m.labelled_photos, m.pseudo_labelled_photos), (0, 24));
    assert!(
        !catalog.centres_queries(),
        "the learned space, not centring"
    );
    // Held-out photos (val) of the products are found in the learned space.
    let analyzer = Analyzer::new(&models, Arc::new(catalog), &s.catalog).unwrap();
    let mut found = 0;
    for (id, stem) in PRODUCTS {
        let img = RgbImage::open(&photo("val", stem, 4)).unwrap();
        let results = analyzer.query(&img, 3).unwrap();
        found += usize::from(results.first().is_some_and(|r| r.product_id == id));
    }
    assert!(found >= 4, "{found} of 6 val photos found first");
    // A retrain without feedback and an admin change keep the projection and its count.
    let catalog = analyzer.catalog();
    let store = shopcue::catalog::feedback::FeedbackStore::new(&out, &s.catalog);
    shopcue::catalog::feedback::retrain(catalog, &store, &s.catalog).unwrap();
    catalog.remove("Lemon").unwrap();
    let again = Catalog::open(&out, &s.catalog).unwrap();
    assert!(again.snapshot().projection().is_some());
    assert_eq!(again.manifest().pseudo_labelled_photos, 24);
}

#[test]
fn a_bad_domain_photo_set_is_one_error_and_no_catalog() {
    let s = settings();
    let models = models();
    let tmp = tempfile::tempdir().unwrap();
    let products = write_products(tmp.path());
    // Too few usable photos (12, and the default minimum is 50): one error naming the count.
    let domain = write_domain_photos(tmp.path(), 2, &[r#"{"image": "missing.jpg"}"#]);
    let out = tmp.path().join("catalog");
    let mut o = opts(&products, &out);
    o.domain_photos = Some(domain.clone());
    let e = build(&models, &s.catalog, &o).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("only 12 usable query-domain photos")
            && msg.contains("catalog.domain_min_photos is 50")
            && msg.contains("1 skipped")
            && msg.contains(&domain.display().to_string()),
        "{msg}"
    );
    assert!(!out.join("CURRENT").exists());
    // Malformed with --strict: the first bad line, by file and line.
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"image\": \"photos/x.jpg\"}\n{\"image\": [\n").unwrap();
    o.domain_photos = Some(bad.clone());
    o.strict = true;
    let e = build(&models, &s.catalog, &o).unwrap_err();
    assert!(matches!(e, CatalogError::Input { .. }), "{e}");
    assert!(
        e.to_string().starts_with(&format!("{}:2:", bad.display())),
        "{e}"
    );
    // A file that does not exist.
    o.domain_photos = Some(tmp.path().join("nope.jsonl"));
    let e = build(&models, &s.catalog, &o).unwrap_err();
    assert!(e.to_string().contains("nope.jsonl"), "{e}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(!left.iter().any(|n| n == "catalog"), "{left:?}");
}
