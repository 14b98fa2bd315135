//! The sidecar's metrics read back from their OpenMetrics text (`/metrics`,
//! `Metrics::encode`), so the bench reads exactly what an operator's Prometheus would,
//! and a family the running build lacks (e.g. `samples_reused`) is just absent.

/// One sample line: `name{k="v",...} value`.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Every sample of one exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    lines: Vec<Line>,
}

fn parse_line(line: &str) -> Option<Line> {
    let (head, value) = line.rsplit_once(' ')?;
    let value = value.trim().parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
        None => (head, Vec::new()),
    };
    Some(Line {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `k="v",k2="v2"` (the sidecar's label values hold no quotes or commas).
fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.to_string(), v.trim_matches('"').to_string()))
        })
        .collect()
}

impl Exposition {
    pub fn parse(text: &str) -> Self {
        let lines = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_line)
            .collect();
        Self { lines }
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        filter: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Line> + 'a {
        self.lines.iter().filter(move |l| {
            l.name == name
                && filter
                    .iter()
                    .all(|(k, v)| l.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
    }

    /// Sum of the samples of `name` whose labels include `filter`; `None` when none has.
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, filter)
            .map(|l| l.value)
            .reduce(|a, b| a + b)
    }

    /// Cumulative buckets `(le, count)` of histogram `name`, summed over the label sets
    /// that include `filter`, ascending by `le`.
    pub fn buckets(&self, name: &str, filter: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut out: Vec<(f64, f64)> = Vec::new();
        for l in self.matching(&bucket, filter) {
            let Some(le) = l.labels.iter().find(|(k, _)| k == "le") else {
                continue;
            };
            let le: f64 = if le.1 == "+Inf" {
                f64::INFINITY
            } else {
                match le.1.parse() {
                    Ok(v) => v,
                    Err(_) => continue,
                }
            };
            match out.iter_mut().find(|(b, _)| *b == le) {
                Some(slot) => slot.1 += l.value,
                None => out.push((le, l.value)),
            }
        }
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }
}

/// `after − before`, bucket by bucket (both from [`Exposition::buckets`]).
pub fn bucket_delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|(le, n)| {
            let was = before.iter().find(|(b, _)| b == le).map_or(0.0, |b| b.1);
            (*le, (n - was).max(0.0))
        })
        .collect()
}

/// Quantile `q` of cumulative buckets, interpolated inside its bucket as Prometheus's
/// `histogram_quantile` does; `None` without observations.
pub fn quantile(cumulative: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = cumulative.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, n) in cumulative {
        if n >= rank && n > below {
            if !le.is_finite() {
                return Some(lower);
            }
            return Some(lower + (le - lower) * (rank - below) / (n - below));
        }
        (lower, below) = (le, n);
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP shopcue_samples Frames sent to inference.
# TYPE shopcue_samples counter
shopcue_samples_total{channel="a"} 10
shopcue_samples_total{channel="b"} 5
shopcue_dropped_total{channel="a",kind="samples"} 2
shopcue_dropped_total{channel="a",kind="frames"} 7
shopcue_g_bucket{channel="a",le="1.0"} 3
shopcue_g_bucket{channel="a",le="2.0"} 4
shopcue_g_bucket{channel="a",le="+Inf"} 4
shopcue_g_bucket{channel="b",le="1.0"} 1
shopcue_g_bucket{channel="b",le="2.0"} 4
shopcue_g_bucket{channel="b",le="+Inf"} 4
# EOF
"#;

    #[test]
    fn sums_filter_by_label() {
        let e = Exposition::parse(TEXT);
        assert_eq!(e.sum("shopcue_samples_total", &[]), Some(15.0));
        assert_eq!(
            e.sum("shopcue_samples_total", &[("channel", "b")]),
            Some(5.0)
        );
        assert_eq!(
            e.sum("shopcue_dropped_total", &[("kind", "samples")]),
            Some(2.0)
        );
        assert_eq!(e.sum("shopcue_samples_reused_total", &[]), None);
    }

    #[test]
    fn histogram_buckets_add_up_and_give_quantiles() {
        let e = Exposition::parse(TEXT);
        let b = e.buckets("shopcue_g", &[]);
        assert_eq!(b, vec![(1.0, 4.0), (2.0, 8.0), (f64::INFINITY, 8.0)]);
        assert_eq!(quantile(&b, 0.5), Some(1.0));
        assert_eq!(quantile(&b, 0.75), Some(1.5));
        let d = bucket_delta(&e.buckets("shopcue_g", &[("channel", "a")]), &b);
        assert_eq!(d, vec![(1.0, 1.0), (2.0, 4.0), (f64::INFINITY, 4.0)]);
        assert_eq!(quantile(&d, 1.0), Some(2.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[(1.0, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
    }
}
