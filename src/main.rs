use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

// glibc's allocator spent a quarter of a bulk import's client time freeing
// records on another thread than the one that made them (perf, benches/import.rs);
// mimalloc keeps per-thread heaps.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SWITCHYARD_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes are for a person at a terminal; in a log file or a
        // collector they are noise that breaks grep and parsers.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = switchyard::cli::Cli::parse();
    match switchyard::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
