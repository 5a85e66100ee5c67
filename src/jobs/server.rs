//! The job runner inside `serve`: jobs queued from the admin API
//! (`POST /admin/api/v1/jobs`) are started here, through the same
//! functions the CLI runs ([`super::backfill::run`], [`super::import::run`],
//! [`super::campaign::run`], [`super::verify::run`]).
//!
//! Every instance polls; a queued job is started by the one whose
//! conditional UPDATE wins ([`crate::store::jobs::JobStore::start_queued_job`]),
//! and from then on it is an ordinary resumable job: its chunks are claimed
//! and kept alive by heartbeats, so when the instance dies another one
//! (see [`Worker::orphan`]) or `switchyard backfill|import|campaign reset
//! --resume` continues it from the last committed page.
//!
//! Verify commits no pages (it compares both sides and keeps an in-memory
//! set of the upstream ids it has seen, which the final only-local scan
//! needs), so it does not fit the chunk machinery: it runs as a job without
//! chunks whose report is stored with it ([`crate::store::jobs::Job::result`]).
//! A verify cut short by a dying instance stays `running` until cancelled
//! and started again; it changes nothing, so starting it again is safe.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::runner::{Cancelled, NotQueued};
use super::{STALE_AFTER, backfill, campaign, import, verify};
use crate::config::Settings;
use crate::store::Database;
use crate::store::jobs::{Job, JobKind, JobState};

/// How often an idle instance looks for queued jobs.
pub const POLL: Duration = Duration::from_secs(1);
/// How often a running verify checks whether it was cancelled.
const CANCEL_CHECK: Duration = Duration::from_secs(1);
/// The longest error text kept with a job: enough for the cause, never a
/// response body.
const MAX_ERROR_LEN: usize = 500;

/// The parameters the admin API stores with a queued job, read back here.
/// Unknown members are ignored so that a job queued by a newer release
/// still runs.
#[derive(Debug, Clone, Default, serde::Deserialize)]
struct Params {
    since: Option<String>,
    max_rate: Option<f64>,
    concurrency: Option<usize>,
    // Import.
    path: Option<String>,
    format: Option<super::files::Format>,
    provider: Option<String>,
    strict: Option<bool>,
    // Campaign.
    rate: Option<f64>,
    limit: Option<u64>,
    cooldown_secs: Option<u64>,
}

pub struct Worker {
    db: Arc<dyn Database>,
    settings: Settings,
}

impl Worker {
    pub fn new(db: Arc<dyn Database>, settings: Settings) -> Self {
        Self { db, settings }
    }

    /// Runs queued jobs, one at a time, until the task is aborted.
    pub async fn run(self) {
        loop {
            match self.next().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "the job runner could not read the queue"),
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs one job if there is one: a queued job, else a job started by
    /// an instance that stopped. True when it ran one.
    pub async fn next(&self) -> anyhow::Result<bool> {
        for job in self.db.queued_jobs(20).await? {
            // An uploaded file is on the disk of the instance that took
            // it (or a shared `[admin] upload_dir`): others leave the job.
            if job.kind == JobKind::Import && !self.file_here(&job) {
                continue;
            }
            self.start(job, false).await;
            return Ok(true);
        }
        if let Some(job) = self.orphan().await? {
            self.start(job, true).await;
            return Ok(true);
        }
        Ok(false)
    }

    fn file_here(&self, job: &Job) -> bool {
        job.params["path"]
            .as_str()
            .is_some_and(|p| std::path::Path::new(p).is_file())
    }

    /// A running job queued from the API whose workers have all stopped
    /// (no heartbeat for [`STALE_AFTER`]): the instance that ran it died. Resuming is what `--resume` does; a live worker
    /// elsewhere would simply share the job.
    async fn orphan(&self) -> anyhow::Result<Option<Job>> {
        let stale = crate::store::now() - STALE_AFTER.as_secs() as i64;
        for job in self.db.list_jobs(50).await? {
            let from_api = job.started_at.is_some();
            if job.state != JobState::Running
                || !from_api
                || job.kind == JobKind::Verify
                || job.updated_at >= stale
                || (job.kind == JobKind::Import && !self.file_here(&job))
            {
                continue;
            }
            // Every chunk done but the job not marked so (the instance died
            // between its last page and the end) is resumed too: the resume
            // finds nothing to claim and ends it.
            let summary = self.db.job_summary(&job.id, 0).await?;
            if summary.heartbeat.is_none_or(|beat| beat < stale) {
                return Ok(Some(job));
            }
        }
        Ok(None)
    }

    /// Starts (or resumes) `job` and runs it to its end; what happened is
    /// the job's state, so errors are logged, not returned.
    async fn start(&self, job: Job, resume: bool) {
        let id = job.id.clone();
        tracing::info!(job = %id, kind = %job.kind, resume, "running a job");
        match self.execute(job, resume).await {
            Ok(()) => tracing::info!(job = %id, "job finished"),
            Err(e) if e.chain().any(|c| c.is::<NotQueued>()) => {
                tracing::debug!(job = %id, "another instance started the job")
            }
            Err(e) if e.chain().any(|c| c.is::<Cancelled>()) => {
                tracing::info!(job = %id, "job cancelled")
            }
            Err(e) => {
                let why = bounded(&format!("{e:#}"));
                tracing::warn!(job = %id, error = %why, "job failed");
                // The job's own runner marks it failed; this covers an
                // error before it began (a bad parameter, no upstream).
                if let Err(e) = self.db.fail_job(&id, &why).await {
                    tracing::warn!(job = %id, error = %e, "could not mark the job failed");
                }
            }
        }
    }

    async fn execute(&self, job: Job, resume: bool) -> anyhow::Result<()> {
        let params: Params = serde_json::from_value(job.params.clone()).unwrap_or_default();
        let db = self.db.clone();
        let queued = (!resume).then(|| job.clone());
        match job.kind {
            JobKind::Backfill => {
                let opts = backfill::BackfillOptions {
                    resume,
                    dry_run: false,
                    since: params.since,
                    concurrency: params.concurrency,
                    max_rate: params.max_rate,
                    quiet: true,
                    poll_interval: None,
                    queued,
                };
                backfill::run(db, &self.settings, &opts).await?;
            }
            JobKind::Import => {
                let path = params
                    .path
                    .ok_or_else(|| anyhow::anyhow!("the import job names no file"))?;
                let opts = import::ImportOptions {
                    path: path.clone(),
                    format: params.format,
                    provider: params.provider,
                    dry_run: false,
                    strict: params.strict.unwrap_or(false),
                    resume,
                    quiet: true,
                    batch: import::BATCH,
                    queued,
                };
                import::run(db, &opts).await?;
                self.remove_upload(&path);
            }
            JobKind::Campaign => {
                let opts = campaign::CampaignOptions {
                    resume,
                    dry_run: false,
                    rate: params.rate,
                    limit: params.limit,
                    cooldown: params.cooldown_secs.map(Duration::from_secs),
                    quiet: true,
                    queued,
                };
                campaign::run(db, &opts).await?;
            }
            JobKind::Verify => self.verify(&job, &params).await?,
        }
        Ok(())
    }

    /// An uploaded file whose import is done is no longer needed (a failed
    /// import keeps it for `--resume`).
    fn remove_upload(&self, path: &str) {
        let dir = std::fs::canonicalize(&self.settings.admin.upload_dir);
        let inside = dir.is_ok_and(|d| std::path::Path::new(path).starts_with(d));
        if inside && let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(error = %e, "could not remove an imported upload");
        }
    }

    /// Verify as a job: started by the conditional UPDATE like the others,
    /// its report stored with it; a cancel drops the walk.
    async fn verify(&self, job: &Job, params: &Params) -> anyhow::Result<()> {
        if !self.db.start_queued_job(&job.id, &[]).await? {
            return Err(NotQueued(job.id.clone()).into());
        }
        let opts = verify::VerifyOptions {
            max_rate: params.max_rate,
            concurrency: params.concurrency,
            quiet: true,
            poll_interval: None,
        };
        let walk = verify::run(self.db.clone(), &self.settings, &opts);
        let report = tokio::select! {
            report = walk => report,
            cancelled = self.until_cancelled(&job.id) => return cancelled,
        };
        match report {
            Ok(report) => {
                let value = serde_json::to_value(&report).unwrap_or(Value::Null);
                self.db.finish_job_with_result(&job.id, &value).await?;
                Ok(())
            }
            Err(e) => {
                self.db
                    .fail_job(&job.id, &bounded(&format!("{e:#}")))
                    .await?;
                Err(e)
            }
        }
    }

    /// Resolves with [`Cancelled`] once the job is cancelled.
    async fn until_cancelled(&self, id: &str) -> anyhow::Result<()> {
        loop {
            tokio::time::sleep(CANCEL_CHECK).await;
            super::runner::check_cancelled(&*self.db, id).await?;
        }
    }
}

/// An error as kept with a job: one line, bounded.
fn bounded(text: &str) -> String {
    let line = text.replace(['\n', '\r'], " ");
    match line.char_indices().nth(MAX_ERROR_LEN) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    }
}
