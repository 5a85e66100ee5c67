use std::io::IsTerminal;

use clap::Parser;
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

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
            .event_format(RequestIdOnTop(
                tracing_subscriber::fmt::format()
                    .json()
                    // The innermost span's fields and every enclosing
                    // span's: a line logged in a handler's own span still
                    // carries the request span's.
                    .with_current_span(true)
                    .with_span_list(true),
            ))
            .init(),
    }
    if let Some(complaint) = complaint {
        tracing::warn!("{complaint}");
    }
}

/// tracing-subscriber's JSON lines with the request span's `request_id`
/// repeated as a top-level member, where a collector's filter
/// (`request_id = "…"`) finds it without knowing how spans nest.
struct RequestIdOnTop(Format<Json>);

impl<S, N> FormatEvent<S, N> for RequestIdOnTop
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let Ok(serde_json::Value::Object(mut object)) = serde_json::from_str(&line) else {
            return writer.write_str(&line);
        };
        let request_id = object
            .get("spans")
            .and_then(|spans| spans.as_array())
            .and_then(|spans| spans.iter().find_map(|s| s.get("request_id")))
            .cloned();
        match request_id {
            Some(id) => {
                object.insert("request_id".into(), id);
                writeln!(writer, "{}", serde_json::Value::Object(object))
            }
            None => writer.write_str(&line),
        }
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
