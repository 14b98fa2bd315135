//! `shopcue bench catalog-speed`: detector ms/frame, embedder ms/crop (batch 1 and 8), and
//! FAISS query latency for flat vs HNSW at 1k, 100k and 1M products (synthetic clustered
//! vectors), with HNSW recall@10 against the exact flat answer.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use shopcue::catalog::{IndexKind, IndexParams, VectorIndex};
use shopcue::config::Settings;
use shopcue::inference::image::resample;
use shopcue::inference::{Crop, Detector, Embedder, RgbImage};

#[derive(Debug, Clone, clap::Args)]
pub struct SpeedArgs {
    /// A picture to time the models on (default: a Grocery val photo).
    #[arg(
        long,
        default_value = "../shared/data/grocery/val/Packages/Milk/Arla-Standard-Milk/Arla-Standard-Milk_001.jpg"
    )]
    pub image: PathBuf,
    /// Catalog sizes for the index timings.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1_000usize, 100_000, 1_000_000])]
    pub sizes: Vec<usize>,
    /// Vector dimension of the index timings (the learned projection keeps about one per
    /// product up to this; the raw EfficientNet-Lite0 embedding has 1280).
    #[arg(long, default_value_t = 128)]
    pub dim: usize,
    /// Queries timed per index.
    #[arg(long, default_value_t = 300)]
    pub queries: usize,
    /// Model runs timed.
    #[arg(long, default_value_t = 30)]
    pub runs: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SpeedRow {
    pub what: String,
    pub value: String,
}

fn ms(d: std::time::Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1000.0 / n.max(1) as f64
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Deterministic clustered unit vectors: `n` points around `n / 50` centres.
fn synthetic(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_add(0x9E3779B97F4A7C15);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Sum of uniforms: roughly normal.
        ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let centres = (n / 50).max(1);
    let c: Vec<f32> = (0..centres * dim).map(|_| next()).collect();
    let mut out = Vec::with_capacity(n * dim);
    for i in 0..n {
        let k = i % centres;
        let mut v: Vec<f32> = (0..dim).map(|j| c[k * dim + j] + 0.35 * next()).collect();
        shopcue::inference::postprocess::l2_normalize(&mut v);
        out.extend(v);
    }
    out
}

fn time_models(
    settings: &Settings,
    args: &SpeedArgs,
    rows: &mut Vec<SpeedRow>,
) -> anyhow::Result<()> {
    let photo = RgbImage::open(&args.image)?;
    // A 640x360 frame, the pipeline's default analysis size.
    let frame = RgbImage::new(
        640,
        360,
        resample(&photo, photo.full_rect(), 640, 360)
            .iter()
            .map(|v| v.round().clamp(0.0, 255.0) as u8)
            .collect(),
    )?;
    let det = Detector::load(&settings.inference, None)?;
    let emb = Embedder::load(&settings.inference, None)?;
    let threads = settings.inference.intra_threads;
    det.detect(&frame)?;
    let mut samples = Vec::new();
    for _ in 0..args.runs {
        let t = Instant::now();
        det.detect(&frame)?;
        samples.push(ms(t.elapsed(), 1));
    }
    let med = percentile(&mut samples, 0.5);
    rows.push(SpeedRow {
        what: format!(
            "detector {} ms/frame (640x360, {} provider, {threads} intra-op thread(s)), median",
            det.name(),
            det.provider()
        ),
        value: format!("{med:.1}"),
    });
    for batch in [1usize, 8] {
        let crops: Vec<Crop<'_>> = (0..batch)
            .map(|i| Crop {
                image: &frame,
                rect: shopcue::inference::Rect {
                    x: (i * 20) as f32,
                    y: 10.0,
                    w: 200.0,
                    h: 300.0,
                },
            })
            .collect();
        emb.embed_batch(&crops)?;
        let runs = (args.runs * 8 / batch).max(4);
        let mut samples = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            emb.embed_batch(&crops)?;
            samples.push(ms(t.elapsed(), batch));
        }
        let med = percentile(&mut samples, 0.5);
        rows.push(SpeedRow {
            what: format!("embedder {} ms/crop at batch {batch} ({} provider, {threads} intra-op thread(s)), median", emb.name(), emb.provider()),
            value: format!("{med:.1}"),
        });
    }
    Ok(())
}

fn time_index(args: &SpeedArgs, n: usize, rows: &mut Vec<SpeedRow>) -> anyhow::Result<()> {
    let dim = args.dim;
    let t = Instant::now();
    let data = synthetic(n, dim, n as u64);
    let labels: Vec<i64> = (0..n as i64).collect();
    eprintln!(
        "{n} x {dim}-d synthetic vectors in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // Queries: noisy copies of stored vectors (a photo near one product).
    let nq = args.queries.min(n);
    let noise = synthetic(nq, dim, 7);
    let mut queries = Vec::with_capacity(nq * dim);
    for i in 0..nq {
        let src = (i * 7919) % n;
        let mut v: Vec<f32> = (0..dim)
            .map(|j| data[src * dim + j] + 0.5 * noise[i * dim + j])
            .collect();
        shopcue::inference::postprocess::l2_normalize(&mut v);
        queries.extend(v);
    }
    let mut truth: Vec<Vec<i64>> = Vec::new();
    for kind in [IndexKind::Flat, IndexKind::Hnsw] {
        let params = IndexParams {
            kind,
            ..Default::default()
        };
        let t = Instant::now();
        let mut idx = VectorIndex::build(&params, dim, &data, &labels)?;
        let build_s = t.elapsed().as_secs_f64();
        let name = match kind {
            IndexKind::Flat => "flat".to_string(),
            _ => format!("HNSW{} efSearch {}", params.hnsw_m, params.hnsw_ef_search),
        };
        // Single queries, one OpenMP thread (the configured default).
        let mut lat = Vec::with_capacity(nq);
        let mut found = Vec::with_capacity(nq);
        for q in queries.chunks(dim) {
            let t = Instant::now();
            let r = idx.search(q, 10)?;
            lat.push(ms(t.elapsed(), 1));
            found.push(
                r.into_iter()
                    .next()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(l, _)| l)
                    .collect::<Vec<_>>(),
            );
        }
        let p50 = percentile(&mut lat, 0.5);
        let p99 = percentile(&mut lat, 0.99);
        let mut recall = String::new();
        if kind == IndexKind::Flat {
            truth = found;
        } else {
            let hit: usize = truth
                .iter()
                .zip(&found)
                .map(|(t, f)| t.iter().filter(|l| f.contains(l)).count())
                .sum();
            let total: usize = truth.iter().map(Vec::len).sum();
            recall = format!(
                ", recall@10 vs flat {:.3}",
                hit as f64 / total.max(1) as f64
            );
        }
        rows.push(SpeedRow {
            what: format!("{name}, {n} x {dim}-d: query p50 / p99 ms (k=10, 1 OpenMP thread){recall}; build {build_s:.1} s"),
            value: format!("{p50:.3} / {p99:.3}"),
        });
        // The same single queries with OpenMP on every core: what an unset
        // OMP_NUM_THREADS costs.
        if n >= 100_000 {
            let all = std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1);
            idx.set_omp_threads(all);
            let mut lat = Vec::with_capacity(nq);
            for q in queries.chunks(dim) {
                let t = Instant::now();
                idx.search(q, 10)?;
                lat.push(ms(t.elapsed(), 1));
            }
            let p50 = percentile(&mut lat, 0.5);
            let p99 = percentile(&mut lat, 0.99);
            rows.push(SpeedRow {
                what: format!(
                    "{name}, {n} x {dim}-d: query p50 / p99 ms (k=10, {all} OpenMP threads)"
                ),
                value: format!("{p50:.3} / {p99:.3}"),
            });
        }
    }
    Ok(())
}

pub fn run_bench(settings: &Settings, args: &SpeedArgs) -> anyhow::Result<Vec<SpeedRow>> {
    let mut rows = Vec::new();
    time_models(settings, args, &mut rows)?;
    for &n in &args.sizes {
        time_index(args, n, &mut rows)?;
    }
    println!("\n| measurement | value |\n|---|---|");
    for r in &rows {
        println!("| {} | {} |", r.what, r.value);
    }
    Ok(rows)
}
