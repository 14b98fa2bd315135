//! Stand-in for the `shopcue catalog …` and `shopcue bench catalog-*` subcommands until
//! `main.rs` wires them: `cargo run --release --example catalog_cli -- catalog query …`.

use clap::Parser;
use shopcue::bench::{catalog_accuracy, catalog_speed};
use shopcue::catalog::cli::{CatalogArgs, run};
use shopcue::config::Settings;

#[derive(Parser)]
struct Cli {
    /// Config file (TOML).
    #[arg(long, global = true)]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    Catalog(CatalogArgs),
    BenchCatalogAccuracy(catalog_accuracy::AccuracyArgs),
    BenchCatalogSpeed(catalog_speed::SpeedArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let settings = Settings::from_env(cli.config.as_deref())?;
    match cli.command {
        Command::Catalog(a) => run(a, &settings),
        Command::BenchCatalogAccuracy(a) => catalog_accuracy::run_bench(&settings, &a).map(|_| ()),
        Command::BenchCatalogSpeed(a) => catalog_speed::run_bench(&settings, &a).map(|_| ()),
    }
}
