use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

// glibc's allocator spent a quarter of a bulk import's client time freeing
// records on another thread than the one that made them (perf, benches/import.rs);
// mimalloc keeps per-thread heaps.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How log lines are written (`SWITCHYARD_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    /// For a person: one readable line per event.
    Text,
    /// For a collector: one JSON object per line, with the request span's
    /// fields (`request_id`, `method`, `path`) on every line of a request.
    Json,
}

impl LogFormat {
    fn from_env() -> Result<Self, String> {
        match std::env::var("SWITCHYARD_LOG_FORMAT") {
            Err(_) => Ok(Self::Text),
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                "" | "text" => Ok(Self::Text),
                "json" => Ok(Self::Json),
                other => Err(format!(
                    "SWITCHYARD_LOG_FORMAT={other:?} is not a log format (text or json); logging as text"
                )),
            },
        }
    }
}

fn start_logging() {
    let filter =
        EnvFilter::try_from_env("SWITCHYARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let (format, complaint) = match LogFormat::from_env() {
        Ok(format) => (format, None),
        Err(complaint) => (LogFormat::Text, Some(complaint)),
    };
    match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            // Colour codes are for a person at a terminal; in a log file or a
            // collector they are noise that breaks grep and parsers.
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            // The innermost span's fields and every enclosing span's: a line
            // logged in a handler's own span still carries the request
            // span's `request_id`.
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
    if let Some(complaint) = complaint {
        tracing::warn!("{complaint}");
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    start_logging();
    let cli = switchyard::cli::Cli::parse();
    match switchyard::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
