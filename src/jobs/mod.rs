//! Jobs that copy users in bulk: `backfill` (the upstream's Management
//! API), `import` (export files), `verify` (both sides, record by record)
//! and `status`.
//!
//! - [`crate::store::record`]: one user as a source describes them, and the
//!   comparison; in the store, which writes records and must not reach up here.
//! - [`files`]: the import formats, streamed.
//! - [`runner`]: the resumable job both `import` and `backfill` run as.
//! - [`source`]: Auth0's export file streamed, and the walk `verify` makes.
//! - [`import`], [`backfill`], [`verify`]: the jobs. The upstream's
//!   Management API client they read through is
//!   [`crate::upstream::management`].
//! - [`progress`]: a progress bar, or a log line per page.
//! - [`outbox`]: the worker that delivers the write outbox to the upstream.
//! - [`server`]: the runner inside `serve` that starts jobs queued from the
//!   admin API.
//! - [`report`] and [`campaign`]: the end game — the dormant users, and
//!   the invitations that bring them over before the upstream goes away.
//!
//! Backfill and import run as resumable jobs (`jobs` and `job_chunks`,
//! [`crate::store::jobs`]): each page of users is committed with the job's
//! new position, so `--resume` after a crash continues from the last page.

pub mod backfill;
pub mod campaign;
pub mod files;
pub mod import;
pub mod outbox;
pub mod progress;
pub mod report;
pub mod runner;
pub mod server;
pub mod source;
pub mod status;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::store::Database;
use crate::store::jobs::{Chunk, Counters, Issue};

/// A claim is taken over when its worker has not been heard of for this
/// long (a worker beats every [`HEARTBEAT`], even while it waits out a rate
/// limit).
pub const STALE_AFTER: Duration = Duration::from_secs(30);
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Fault injection for the crash-and-resume tests: the process aborts, as
/// `kill -9` would stop it, after this many committed pages.
const CRASH_AFTER_PAGES: &str = "SWITCHYARD_TEST_CRASH_AFTER_PAGES";

/// This process: `host:pid`.
pub fn process_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Worker `n` of this process, as named in the chunks it claims:
/// `host:pid/n`.
pub fn worker_id(n: usize) -> String {
    format!("{}/{n}", process_id())
}

/// Owners that are processes of this host that no longer run: their
/// chunks can be taken over at once rather than after [`STALE_AFTER`].
pub fn dead_owners(owners: &[String]) -> Vec<String> {
    let me = process_id();
    let Some((host, _)) = me.rsplit_once(':') else {
        return Vec::new();
    };
    owners
        .iter()
        .filter(|o| {
            let process = o.split_once('/').map_or(o.as_str(), |(p, _)| p);
            process.rsplit_once(':').is_some_and(|(h, pid)| {
                h == host
                    && pid.parse::<u32>().is_ok()
                    && std::path::Path::new("/proc/self").exists()
                    && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            })
        })
        .cloned()
        .collect()
}

/// Keeps a claimed chunk's heartbeat fresh until dropped.
pub struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    pub fn start(db: Arc<dyn Database>, chunk: Chunk, worker: String) -> Self {
        Self(tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                if let Err(e) = db.heartbeat(&chunk, &worker).await {
                    tracing::warn!(error = %e, "job heartbeat failed");
                }
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Counts committed pages and aborts the process when the crash-injection
/// variable says so.
#[derive(Default)]
pub struct CrashHook {
    after: Option<u64>,
    pages: u64,
}

impl CrashHook {
    pub fn from_env() -> Self {
        Self {
            after: std::env::var(CRASH_AFTER_PAGES)
                .ok()
                .and_then(|v| v.parse().ok()),
            pages: 0,
        }
    }

    pub fn page_committed(&mut self) {
        self.pages += 1;
        if self.after.is_some_and(|n| self.pages >= n) {
            eprintln!("crash injected after {} pages", self.pages);
            std::process::abort();
        }
    }
}

/// What a backfill or import did, for the summary and `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub job: Option<String>,
    pub dry_run: bool,
    #[serde(flatten)]
    pub counters: Counters,
    /// Records that were not applied or carry a note, with reasons.
    pub issues: Vec<Issue>,
    pub issues_total: u64,
}

impl Report {
    /// The human summary: counts, then failures by reason with lines.
    pub fn print(&self) {
        let c = &self.counters;
        let verb = if self.dry_run { "would be " } else { "" };
        println!(
            "{}created {verb}{}, updated {verb}{}, unchanged {}, conflicts {}, failed {}",
            self.job
                .as_ref()
                .map(|j| format!("job {j}: "))
                .unwrap_or_default(),
            c.created,
            c.updated,
            c.unchanged,
            c.conflicts,
            c.failed
        );
        for issue in &self.issues {
            println!("  {issue}");
        }
        if self.issues_total > self.issues.len() as u64 {
            println!(
                "  … and {} more (switchyard status --job {})",
                self.issues_total - self.issues.len() as u64,
                self.job.as_deref().unwrap_or("")
            );
        }
    }
}

/// A new job id: the kind, the time, and some randomness.
pub fn new_job_id(kind: &str) -> String {
    format!(
        "{kind}-{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        &crate::crypto::random_token()[..6]
    )
}
