//! The capacity bench's markdown: per variant, the ramp and where the CPU went; then the
//! summary across variants.

use super::procfs::ThreadGroup;
use super::step::{SCORE_MARGIN_S, StepRow};
use super::variant::Variant;

/// One variant's ramp, each step with why it was not sustained (empty: it was).
pub struct VariantResult {
    pub variant: Variant,
    pub steps: Vec<(StepRow, Vec<String>)>,
}

impl VariantResult {
    /// The channels of the last step before the first one not sustained (steps run after
    /// it, with `--keep-going`, do not count).
    pub fn max_sustained(&self) -> usize {
        self.steps
            .iter()
            .take_while(|(_, why)| why.is_empty())
            .map(|(r, _)| r.channels)
            .max()
            .unwrap_or(0)
    }
    /// Sidecar CPU ms per channel-second of the first step, and its channel count.
    pub fn first_cost(&self) -> Option<(usize, f64)> {
        let (r, _) = self.steps.first()?;
        Some((r.channels, r.per_channel_ms(r.cpu.sidecar_s())))
    }
}

fn opt(v: Option<f64>, scale: f64, digits: usize) -> String {
    v.map_or("–".into(), |x| format!("{:.*}", digits, x * scale))
}

pub fn print_variant(v: &VariantResult) {
    println!("\n### Variant {}\n", v.variant.describe());
    println!(
        "| channels | cores used | core-ms per channel-s | samples: taken / analysed / reused / dropped | dropped, worst channel | segments skipped/lost | max lag s | glass-to-cue p50 / p95 ms | segment discovery mean ms | p95 after discovery ms | grocery cue precision / recall | cue starts on Intel channels | RSS MiB | sustained |"
    );
    println!("|---:|---:|---:|---|---:|---:|---:|---|---:|---:|---|---:|---:|---|");
    for (r, why) in &v.steps {
        let cpu = r.cpu.sidecar_s();
        println!(
            "| {} | {:.2} | {:.0} | {:.0} / {:.0} / {} / {:.0} | {:.1} % | {:.0} | {:.1} | {} / {} | {} | {} | {} / {} | {} | {} | {} |",
            r.channels,
            cpu / r.window_s.max(1e-9),
            r.per_channel_ms(cpu),
            r.samples,
            r.analysed,
            opt(r.reused, 1.0, 0),
            r.dropped,
            r.worst_drop_pct,
            r.segments_missed,
            r.max_lag_s,
            opt(r.glass_p50_s, 1e3, 0),
            opt(r.glass_p95_s, 1e3, 0),
            opt(r.discovery_mean_s, 1e3, 0),
            opt(r.found_p95_s, 1e3, 0),
            opt(r.score.precision(), 1.0, 2),
            opt(r.score.recall(), 1.0, 2),
            r.intel_cues,
            opt(r.rss_mib, 1.0, 0),
            if why.is_empty() {
                "yes".to_string()
            } else {
                format!("no: {}", why.join("; "))
            }
        );
    }
    print_split(v);
}

/// Where the CPU went, in core-ms per channel-second.
fn print_split(v: &VariantResult) {
    println!("\nCPU by thread group and stage time, ms per channel-second:\n");
    println!(
        "| channels | sidecar CPU | inference threads | frame threads | runtime threads | other live threads | ended threads (per-segment decoding) | fetch (wall) | decode (wall) | detect (wall) | embed (wall) | search (wall) | rest of analysis (wall) | other (CPU − wall stages) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (r, _) in &v.steps {
        let ms = |s: f64| format!("{:.0}", r.per_channel_ms(s));
        let st = &r.stages;
        let rest = st.analysis - st.detect - st.embed - st.search;
        let other = r.cpu.sidecar_s() - st.fetch - st.decode - st.analysis;
        let groups: Vec<String> = ThreadGroup::SIDECAR
            .iter()
            .map(|g| ms(r.cpu.group(*g)))
            .collect();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.channels,
            ms(r.cpu.sidecar_s()),
            groups.join(" | "),
            ms(r.cpu.ended_s),
            ms(st.fetch),
            ms(st.decode),
            ms(st.detect),
            ms(st.embed),
            ms(st.search),
            ms(rest),
            ms(other),
        );
    }
}

pub fn print_notes(secs: f64, warmup_s: f64) {
    println!(
        "\nEach step: a {warmup_s:.0} s warm-up, then {secs:.0} s measured. CPU is the process's \
         user + system time (/proc) without the bench's own origin threads. Thread groups are \
         CPU: inference = `infer-<channel>` (colour conversion, detect, embed, search, matching, \
         cues); frame = `frames-<channel>` (shot detection, sampling); runtime = tokio (fetch, \
         HTTP, bus, blocking calls driving GStreamer); other = every other live thread; \
         ended = threads gone by the window's end, mostly GStreamer's: each segment is decoded \
         by a pipeline of its own. The stage columns are \
         **wall-time** sums of the sidecar's histograms (fetch and decode per segment; detect, \
         embed, search per analysed sample, including any wait for a model session), so \
         \"other\" = CPU − fetch − decode − analysis can go negative when stages wait. \
         Glass-to-cue is the `glass_to_cue_seconds` histogram (bucket-interpolated); segment \
         discovery is how long after its end by the origin's clock each segment was first \
         listed (`segment_discovery_seconds`: packaging and reload phase); the p95 after \
         discovery is `discovered_to_cue_seconds`, glass-to-cue less the channel's latest \
         discovery delay. RSS is \
         the whole process's VmRSS at the window's end; steps run one after another in one \
         process, so it includes what the allocator kept from earlier steps. \
         Precision/recall: grocery channels' cue starts against ground_truth.json, shots wholly \
         inside the window less its last {SCORE_MARGIN_S:.0} s."
    );
}

pub fn print_summary(results: &[VariantResult]) {
    let Some(first) = results.first() else {
        return;
    };
    let base = first.first_cost();
    println!("\n### Summary\n");
    println!(
        "| variant | max sustained channels | core-ms per channel-s (first step) | CPU per channel vs `{}` |",
        first.variant.name
    );
    println!("|---|---:|---:|---:|");
    for v in results {
        let cost = v.first_cost();
        let ratio = match (cost, base) {
            (Some((_, c)), Some((_, b))) if b > 0.0 => format!("{:.2}×", c / b),
            _ => "–".into(),
        };
        println!(
            "| {} | {} | {} | {} |",
            v.variant.describe(),
            v.max_sustained(),
            cost.map_or("–".into(), |(n, c)| format!("{c:.0} (N={n})")),
            ratio
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_sustained_ends_at_the_first_step_not_sustained() {
        let step = |channels: usize, ok: bool| {
            let row = StepRow {
                channels,
                ..StepRow::default()
            };
            (row, if ok { vec![] } else { vec!["p95".to_string()] })
        };
        let mut v = VariantResult {
            variant: "after:".parse().unwrap(),
            steps: vec![step(1, true), step(2, true), step(4, false), step(6, true)],
        };
        // Steps after a failure (`--keep-going`) do not count, even when they pass.
        assert_eq!(v.max_sustained(), 2);
        v.steps[0].1.push("dropped".into());
        assert_eq!(v.max_sustained(), 0);
        v.steps.clear();
        assert_eq!(v.max_sustained(), 0);
    }
}
