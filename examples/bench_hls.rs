//! `cargo run --release --example bench_hls [seconds] [connections]`: the HLS proxy bench
//! until `shopcue bench hls` is wired (src/bench/hls.rs).
fn main() -> anyhow::Result<()> {
    let mut a = shopcue::bench::hls::HlsBenchArgs::default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(s) = args.first() {
        a.seconds = s.parse()?;
    }
    if let Some(c) = args.get(1) {
        a.connections = c.parse()?;
    }
    shopcue::bench::hls::run_bench(&a)?;
    Ok(())
}
