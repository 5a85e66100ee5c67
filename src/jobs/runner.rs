//! The one way a resumable job runs, for `import` and `backfill` alike:
//! create it or resume the unfinished one, claim its chunks (taking over
//! those of workers that stopped), keep each claim alive, and end the job
//! as done or failed with its report. Pages are committed by the store
//! with the chunk's new position in the same transaction
//! ([`crate::store::jobs::JobStore::commit_page`]), so a resume after a
//! crash continues from the last committed page.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{Heartbeat, Report, STALE_AFTER, dead_owners, new_job_id};
use crate::store::Database;
use crate::store::jobs::{Chunk, Job, JobKind, JobState};
use crate::store::position::ChunkPosition;

/// A job this process works on.
pub struct Runner {
    db: Arc<dyn Database>,
    pub id: String,
}

/// What a worker gets when it asks for work.
pub enum Claim {
    Chunk(Chunk),
    /// Other workers hold the remaining chunks: ask again shortly, and
    /// take them over if those workers stop.
    Wait,
    /// Every chunk is done, or the job stopped.
    Done,
}

/// How long a worker with nothing to claim waits before asking again.
pub const WAIT: Duration = Duration::from_millis(500);

impl Runner {
    /// Resumes an unfinished job (a failed one runs again).
    pub async fn resume(db: Arc<dyn Database>, job: &Job) -> anyhow::Result<Self> {
        db.reopen_job(&job.id).await?;
        Ok(Self {
            db,
            id: job.id.clone(),
        })
    }

    /// Starts a job queued from the admin API with its first chunks; none
    /// when another instance started it first, or it was cancelled.
    pub async fn start(
        db: Arc<dyn Database>,
        job: &Job,
        chunks: &[ChunkPosition],
    ) -> anyhow::Result<Self> {
        if !db.start_queued_job(&job.id, chunks).await? {
            return Err(NotQueued(job.id.clone()).into());
        }
        Ok(Self {
            db,
            id: job.id.clone(),
        })
    }

    /// Stops a worker whose job was cancelled, between two pages.
    pub async fn check_cancelled(&self) -> anyhow::Result<()> {
        check_cancelled(&*self.db, &self.id).await
    }

    /// Creates a job with its first chunks.
    pub async fn create(
        db: Arc<dyn Database>,
        kind: JobKind,
        params: &Value,
        chunks: &[ChunkPosition],
    ) -> anyhow::Result<Self> {
        let id = new_job_id(kind.as_str());
        db.create_job(&id, kind, params, chunks).await?;
        Ok(Self { db, id })
    }

    /// Claims the next chunk: a pending one, or one whose worker stopped
    /// (no heartbeat for [`STALE_AFTER`], or a process of this host that is
    /// gone).
    pub async fn claim(&self, worker: &str) -> anyhow::Result<Claim> {
        let owners = self.db.chunk_owners(&self.id).await?;
        let stale = crate::store::now() - STALE_AFTER.as_secs() as i64;
        if let Some(chunk) = self
            .db
            .claim_chunk(&self.id, worker, stale, &dead_owners(&owners))
            .await?
        {
            return Ok(Claim::Chunk(chunk));
        }
        if self.db.finish_job_if_done(&self.id).await? {
            return Ok(Claim::Done);
        }
        let running = self
            .db
            .get_job(&self.id)
            .await?
            .is_some_and(|j| j.state == JobState::Running);
        Ok(if running { Claim::Wait } else { Claim::Done })
    }

    /// Keeps a claimed chunk's heartbeat fresh until the guard is dropped.
    pub fn heartbeat(&self, chunk: &Chunk, worker: &str) -> Heartbeat {
        Heartbeat::start(self.db.clone(), chunk.clone(), worker.to_string())
    }

    /// Ends the job: failed with the error (it can be resumed), or done
    /// when every chunk is, with the job's report.
    pub async fn finish(&self, result: anyhow::Result<()>) -> anyhow::Result<Report> {
        if let Err(e) = result {
            // Left `running`, the job would look interrupted: its state
            // says it stopped, and why (`switchyard status`).
            if let Err(fail) = self.db.fail_job(&self.id, &format!("{e:#}")).await {
                tracing::warn!(job = %self.id, error = %fail, "could not mark the job failed");
            }
            return Err(e);
        }
        self.db.finish_job_if_done(&self.id).await?;
        let summary = self.db.job_summary(&self.id, 50).await?;
        Ok(Report {
            job: Some(self.id.clone()),
            dry_run: false,
            counters: summary.counters,
            issues: summary.issues,
            issues_total: summary.issues_total,
        })
    }

    /// Committed records so far (a resumed job's progress bar starts there).
    pub async fn committed(&self) -> anyhow::Result<u64> {
        Ok(self.db.job_summary(&self.id, 0).await?.counters.total())
    }
}

/// A queued job another instance started first, or that was cancelled
/// before it started: nothing to do here.
#[derive(Debug)]
pub struct NotQueued(pub String);

impl std::fmt::Display for NotQueued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "job {} is no longer queued", self.0)
    }
}

impl std::error::Error for NotQueued {}

/// A job an operator cancelled while it ran: its workers stop.
#[derive(Debug)]
pub struct Cancelled(pub String);

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "job {} was cancelled", self.0)
    }
}

impl std::error::Error for Cancelled {}

/// Fails with [`Cancelled`] when the job was cancelled: checked before
/// each page, so a job whose one chunk is the whole walk (a cursor, a
/// file) stops within a page rather than at its end.
pub async fn check_cancelled(db: &dyn Database, job_id: &str) -> anyhow::Result<()> {
    match db.get_job(job_id).await? {
        Some(job) if job.state == JobState::Cancelled => Err(Cancelled(job_id.into()).into()),
        _ => Ok(()),
    }
}

/// Refuses a command-line run while a job of `kind` waits in the queue for
/// `serve`: both would walk the same users.
pub async fn refuse_if_queued(db: &dyn Database, kind: JobKind) -> anyhow::Result<()> {
    if let Some(job) = db
        .queued_jobs(100)
        .await?
        .into_iter()
        .find(|j| j.kind == kind)
    {
        anyhow::bail!(
            "{kind} job {} is queued for `serve` to run (started from the admin API): \
             let it run, or cancel it first",
            job.id
        );
    }
    Ok(())
}
