//! Progress of a job: a bar with rate and ETA on a terminal, one structured
//! log line per page otherwise (a CI log or a container's output).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::store::jobs::Counters;

pub struct Progress {
    bar: Option<ProgressBar>,
    job: String,
    started: Instant,
    seen: u64,
    pages: u64,
}

impl Progress {
    /// `quiet` (tests, `--json`) shows neither bar nor lines.
    pub fn new(job: &str, total: Option<u64>, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = match total {
                Some(n) => ProgressBar::new(n),
                None => ProgressBar::new_spinner(),
            };
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {prefix} [{bar:30}] {pos}/{len} users  {per_sec}  ETA {eta}  {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(job.to_string());
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Self {
            bar,
            job: job.to_string(),
            started: Instant::now(),
            seen: 0,
            pages: 0,
        }
    }

    /// Whether a bar is shown (a terminal): only then is a total worth a
    /// request to the upstream.
    pub fn has_bar(&self) -> bool {
        self.bar.is_some()
    }

    /// The bar's length, and what earlier runs of the job already did.
    pub fn set_total(&self, total: u64, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    }

    /// One page done: `n` records, and the job's counters so far.
    pub fn page(&mut self, n: u64, so_far: &Counters) {
        self.seen += n;
        self.pages += 1;
        let rate = self.seen as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        match &self.bar {
            Some(bar) => {
                bar.inc(n);
                bar.set_message(format!(
                    "created {} updated {} unchanged {} conflicts {} failed {}",
                    so_far.created,
                    so_far.updated,
                    so_far.unchanged,
                    so_far.conflicts,
                    so_far.failed
                ));
            }
            None => tracing::info!(
                job = %self.job,
                page = self.pages,
                records = self.seen,
                rate = format_args!("{rate:.0}/s"),
                created = so_far.created,
                updated = so_far.updated,
                unchanged = so_far.unchanged,
                conflicts = so_far.conflicts,
                failed = so_far.failed,
                "page committed"
            ),
        }
    }

    pub fn note(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(message.to_string()),
            None => tracing::info!(job = %self.job, "{message}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
