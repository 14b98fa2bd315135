//! Runs the shot benchmark until `shopcue bench shots` is wired:
//! `cargo run --release --example shots_bench [CLIPS_DIR]`.

fn main() -> anyhow::Result<()> {
    let dir = std::env::args_os().nth(1).map(std::path::PathBuf::from);
    shopcue::bench::shots::run_bench(dir.as_deref())?;
    Ok(())
}
