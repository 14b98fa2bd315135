//! The similarity scale of a catalog of catalog images only, with and without query-domain
//! centring: how many val photos each pair of thresholds would let through as the matching
//! stage judges a region (best product at or above `min_similarity`, leading the second
//! product by at least `margin`), and how many photos of products missing from the catalog.

use shopcue::catalog::Snapshot;

/// One pair of thresholds on one kind of query.
#[derive(Debug, Clone)]
pub struct ScaleRow {
    pub queries: &'static str,
    pub thresholds: String,
    pub min_similarity: f32,
    pub margin: f32,
    /// Shares of the known products' val photos: confident and right, confident and wrong.
    pub right: f64,
    pub wrong: f64,
    pub precision: f64,
    /// Share of the photos of left-out products that pass.
    pub unknown: f64,
}

/// Per query: whether the best product is right, its score and its lead over the second.
pub struct Judged {
    pub right: bool,
    pub best: f32,
    pub lead: f32,
}

/// The best two products of each query (one vector each) and whether the first is its
/// class's product.
pub fn judge(
    snap: &Snapshot,
    queries: &[(usize, Vec<Vec<f32>>)],
    classes: &[String],
) -> anyhow::Result<Vec<Judged>> {
    let mut out = Vec::with_capacity(queries.len());
    for (class, vecs) in queries {
        let hits = snap.search_batch(vecs, 2, 8)?;
        let row = hits.first().map(Vec::as_slice).unwrap_or_default();
        let best = row.first().map_or(f32::MIN, |h| h.1);
        out.push(Judged {
            right: row.first().is_some_and(|h| h.0 == classes[*class]),
            best,
            lead: row.get(1).map_or(1.0, |h| best - h.1),
        });
    }
    Ok(out)
}

/// The shares for one pair of thresholds: `known` are the catalog's own products' photos,
/// `unknown` those of products left out of it (searched in the catalog without them).
pub fn row(
    queries: &'static str,
    thresholds: &str,
    (min_similarity, margin): (f32, f32),
    known: &[Judged],
    unknown: &[Judged],
) -> ScaleRow {
    let pass = |j: &&Judged| j.best >= min_similarity && j.lead >= margin;
    let right = known.iter().filter(pass).filter(|j| j.right).count();
    let wrong = known.iter().filter(pass).filter(|j| !j.right).count();
    let n = known.len().max(1) as f64;
    ScaleRow {
        queries,
        thresholds: thresholds.to_string(),
        min_similarity,
        margin,
        right: right as f64 / n,
        wrong: wrong as f64 / n,
        precision: if right + wrong == 0 {
            1.0
        } else {
            right as f64 / (right + wrong) as f64
        },
        unknown: unknown.iter().filter(pass).count() as f64 / unknown.len().max(1) as f64,
    }
}

/// The table, in markdown.
pub fn print(rows: &[ScaleRow], left_out: usize) {
    println!(
        "\nSimilarity scale, catalog images only (val photos, whole picture multi-crop; \"unknown\": the val photos of {left_out} products left out of the catalog):\n\n| queries | thresholds (min similarity / margin) | confident and right | precision | confident and wrong | unknown passing |\n|---|---|---|---|---|---|"
    );
    for r in rows {
        println!(
            "| {} | {} ({:.2} / {:.2}) | {:.3} | {:.3} | {:.3} | {:.3} |",
            r.queries,
            r.thresholds,
            r.min_similarity,
            r.margin,
            r.right,
            r.precision,
            r.wrong,
            r.unknown
        );
    }
}
