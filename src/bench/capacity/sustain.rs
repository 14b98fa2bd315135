//! When a step counts as sustained: every channel keeps up, and analysing more channels
//! at once costs neither latency nor accuracy against the variant's first step.

use super::step::StepRow;

/// The thresholds of "sustained".
#[derive(Debug, Clone, Copy)]
pub struct Criteria {
    /// Largest share of samples any one channel may drop, %.
    pub max_drop_pct: f64,
    /// Largest lag behind the live edge, seconds: 2 segments of 2 s, plus 0.5 s for the
    /// playlist reload (as `bench ingest` allows).
    pub max_lag_s: f64,
    /// Glass-to-cue p95 may grow to this multiple of the first step's.
    pub glass_p95_ratio: f64,
    /// Grocery cue precision and recall may fall this far below the first step's.
    pub accuracy_tolerance: f64,
    /// Judge latency without the reload phase (origins out of phase): the p95 after
    /// discovery may grow by what `glass_p95_ratio` allows on the first step's
    /// glass-to-cue p95, no more.
    pub phase_free: bool,
}

impl Default for Criteria {
    fn default() -> Self {
        Self {
            max_drop_pct: 5.0,
            max_lag_s: 4.5,
            glass_p95_ratio: 1.25,
            accuracy_tolerance: 0.05,
            phase_free: false,
        }
    }
}

/// Why `row` is not sustained (empty: it is). `baseline` is the variant's first step
/// (`None` when `row` is that step).
pub fn failures(row: &StepRow, baseline: Option<&StepRow>, c: &Criteria) -> Vec<String> {
    let mut why = Vec::new();
    if row.worst_drop_pct > c.max_drop_pct {
        why.push(format!("{:.1} % samples dropped", row.worst_drop_pct));
    }
    if row.max_lag_s > c.max_lag_s {
        why.push(format!("lag {:.1} s", row.max_lag_s));
    }
    let Some(base) = baseline else {
        if row.glass_p95_s.is_none() {
            why.push("no cue events".into());
        }
        return why;
    };
    why.extend(latency_failure(row, base, c));
    for (what, now, then) in [
        ("precision", row.score.precision(), base.score.precision()),
        ("recall", row.score.recall(), base.score.recall()),
    ] {
        if let (Some(then), now) = (then, now.unwrap_or(0.0))
            && now < then - c.accuracy_tolerance
        {
            why.push(format!("{what} {now:.2} < {then:.2}"));
        }
    }
    why
}

/// The latency rule: glass-to-cue p95 within `glass_p95_ratio` of the first step's; with
/// `phase_free`, the p95 after discovery within the same allowance of the first step's.
fn latency_failure(row: &StepRow, base: &StepRow, c: &Criteria) -> Option<String> {
    let (Some(p), Some(b)) = (row.glass_p95_s, base.glass_p95_s) else {
        return (row.glass_p95_s.is_none() && base.glass_p95_s.is_some())
            .then(|| "no cue events".into());
    };
    let allowance = b * (c.glass_p95_ratio - 1.0);
    let (what, p, b) = if c.phase_free {
        let (Some(p), Some(b)) = (row.found_p95_s, base.found_p95_s) else {
            return Some("no discovery-to-cue figure".into());
        };
        ("p95 after discovery", p, b)
    } else {
        ("glass-to-cue p95", p, b)
    };
    let limit = b + allowance;
    (p > limit).then(|| format!("{what} {:.0} ms > {:.0} ms", p * 1e3, limit * 1e3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::capacity::truth::Score;

    fn row(drop: f64, lag: f64, p95: Option<f64>, correct: usize, recalled: usize) -> StepRow {
        StepRow {
            channels: 1,
            worst_drop_pct: drop,
            max_lag_s: lag,
            glass_p95_s: p95,
            score: Score {
                starts: 10,
                correct,
                shots: 10,
                recalled,
            },
            ..StepRow::default()
        }
    }

    #[test]
    fn each_criterion_is_named() {
        let c = Criteria::default();
        let base = row(0.0, 2.1, Some(1.6), 9, 9);
        assert!(failures(&base, None, &c).is_empty());
        assert!(failures(&row(4.0, 4.0, Some(1.9), 9, 9), Some(&base), &c).is_empty());
        let bad = failures(&row(6.0, 5.0, Some(2.5), 7, 7), Some(&base), &c);
        assert_eq!(bad.len(), 5, "{bad:?}");
        assert!(
            bad[0].contains("dropped") && bad[2].contains("p95"),
            "{bad:?}"
        );
        assert!(
            bad[3].contains("precision") && bad[4].contains("recall"),
            "{bad:?}"
        );
        assert_eq!(
            failures(&row(0.0, 2.0, None, 0, 0), None, &c),
            ["no cue events"]
        );
    }

    #[test]
    fn the_phase_free_rule_leaves_out_the_reload_phase_but_not_load() {
        let c = Criteria {
            phase_free: true,
            ..Criteria::default()
        };
        let with = |glass: f64, found: f64| StepRow {
            found_p95_s: Some(found),
            ..row(0.0, 2.0, Some(glass), 9, 9)
        };
        let base = with(2.4, 1.0);
        // Spread origins: glass-to-cue grows by the phase (1.5 s), the share after
        // discovery by 0.5 s, within the allowance of 0.25 x 2.4 s.
        assert!(failures(&with(3.9, 1.5), Some(&base), &c).is_empty());
        let slow = failures(&with(3.9, 1.7), Some(&base), &c);
        assert_eq!(slow, ["p95 after discovery 1700 ms > 1600 ms"]);
        // The same rows under the glass rule.
        let glass = failures(&with(3.9, 1.5), Some(&base), &Criteria::default());
        assert_eq!(glass, ["glass-to-cue p95 3900 ms > 3000 ms"]);
        let missing = StepRow {
            found_p95_s: None,
            ..with(2.4, 1.0)
        };
        assert_eq!(
            failures(&missing, Some(&base), &c),
            ["no discovery-to-cue figure"]
        );
    }
}
