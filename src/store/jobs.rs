//! The job queue: jobs (backfill, import), their chunks, claims and
//! heartbeats, and each chunk's position.
//!
//! A job is split into chunks (a page cursor, a time window, an offset, an
//! export file). A worker claims one chunk at a time — `FOR UPDATE SKIP
//! LOCKED` on PostgreSQL, so several processes share a job; SQLite has one
//! writer and one worker — and [`JobStore::commit_page`] writes a page's
//! users ([`bulk`]) together with the chunk's new position in one
//! transaction: after a crash the page in flight is fetched again and
//! nothing is applied twice.
//!
//! What a job did is read back by [`reports`]; the local users a job
//! compares with, and edits made in Switchyard, are `store::users`.

mod bulk;
pub mod reports;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Any;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::page::{ASYNC_COMMIT, add_rejected, insert_chunks, write_position};
pub use super::page::{Applied, Chunk, ChunkState, Counters, PageCommit, Rejected};
use super::position::ChunkPosition;
use super::sql::SqlStore;
use super::sql_common::{Dialect, to_json};
use super::{StoreError, StoreResult, now};
pub use reports::{Issue, JobSummary, UserCounts};
// Where callers have always found them; they are the users store's.
pub use super::users::{LocalUser, ProfileEdit};

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Users read from the upstream's management API or export.
    Backfill,
    /// Users read from a file.
    Import,
    /// The end game's invitations to pending users (`campaign reset`).
    Campaign,
    /// Both sides compared record by record (`verify`), its report kept
    /// with the job ([`Job::result`]).
    Verify,
}

text_names!(JobKind {
    Backfill => "backfill",
    Import => "import",
    Campaign => "campaign",
    Verify => "verify",
});

/// Where a job stands. A job whose process stopped stays `running` until a
/// worker resumes it; a `failed` one runs again only when asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Started from the admin API, waiting for a `serve` instance to claim
    /// it ([`JobStore::start_queued_job`]); it has no chunks yet.
    Queued,
    Running,
    Done,
    Failed,
    /// Stopped by an operator: its workers stop at their next page or
    /// chunk, and nothing resumes it.
    Cancelled,
}

text_names!(JobState {
    Queued => "queued",
    Running => "running",
    Done => "done",
    Failed => "failed",
    Cancelled => "cancelled",
});

impl JobState {
    /// Whether the job may still change (and be cancelled).
    pub fn is_active(self) -> bool {
        matches!(self, Self::Queued | Self::Running)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Job {
    pub id: String,
    pub kind: JobKind,
    pub state: JobState,
    pub params: Value,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    /// What a job that commits no pages found (verify's report).
    pub result: Option<Value>,
    /// The records the job expects, where its source says.
    pub total: Option<i64>,
    /// When a queued job was started (a CLI job starts when created).
    pub started_at: Option<i64>,
}

#[async_trait]
pub trait JobStore: Send + Sync {
    /// Creates a running job with its first chunks.
    async fn create_job(
        &self,
        id: &str,
        kind: JobKind,
        params: &Value,
        chunks: &[ChunkPosition],
    ) -> StoreResult<()>;
    async fn get_job(&self, id: &str) -> StoreResult<Option<Job>>;
    /// The newest job of `kind` that is still running, was interrupted, or
    /// failed.
    async fn unfinished_job(&self, kind: JobKind) -> StoreResult<Option<Job>>;
    /// A failed job runs again (`--resume`).
    async fn reopen_job(&self, id: &str) -> StoreResult<()>;
    async fn list_jobs(&self, limit: u32) -> StoreResult<Vec<Job>>;
    /// Claims the first chunk that is pending, or claimed by a worker that
    /// stopped (heartbeat before `stale_before`, or named in `dead`).
    async fn claim_chunk(
        &self,
        job_id: &str,
        worker: &str,
        stale_before: i64,
        dead: &[String],
    ) -> StoreResult<Option<Chunk>>;
    /// Workers holding claimed chunks of the job.
    async fn chunk_owners(&self, job_id: &str) -> StoreResult<Vec<String>>;
    /// Keeps a claim alive; false when the chunk was taken over.
    async fn heartbeat(&self, chunk: &Chunk, worker: &str) -> StoreResult<bool>;
    async fn commit_page(&self, commit: &PageCommit<'_>) -> StoreResult<Applied>;
    /// How many pages of one job may be applied at once: PostgreSQL takes
    /// concurrent writers, SQLite has one.
    fn parallel_pages(&self) -> usize;
    /// Marks the job done when every chunk is; true when it is done.
    async fn finish_job_if_done(&self, job_id: &str) -> StoreResult<bool>;
    /// Marks a running job failed; a cancelled one stays cancelled.
    async fn fail_job(&self, job_id: &str, error: &str) -> StoreResult<()>;
    /// Queues a job (no chunks: the instance that starts it computes them).
    async fn queue_job(&self, id: &str, kind: JobKind, params: &Value) -> StoreResult<()>;
    /// Queued jobs, oldest first.
    async fn queued_jobs(&self, limit: u32) -> StoreResult<Vec<Job>>;
    /// Starts a queued job with its first chunks, in one transaction whose
    /// conditional UPDATE only one instance wins: false when another
    /// started it first or it was cancelled.
    async fn start_queued_job(&self, id: &str, chunks: &[ChunkPosition]) -> StoreResult<bool>;
    /// Cancels a queued or running job; false when it was neither.
    async fn cancel_job(&self, id: &str) -> StoreResult<bool>;
    /// Ends a running job without chunks (verify) as done, with its result.
    async fn finish_job_with_result(&self, id: &str, result: &Value) -> StoreResult<bool>;
    /// Records how many records the job expects in all.
    async fn set_job_total(&self, id: &str, total: u64) -> StoreResult<()>;
}

fn job_from_row(row: &AnyRow) -> StoreResult<Job> {
    let params: String = row.try_get("params")?;
    let kind: String = row.try_get("kind")?;
    let state: String = row.try_get("state")?;
    Ok(Job {
        id: row.try_get("id")?,
        kind: JobKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("job kind {kind:?}")))?,
        state: JobState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("job state {state:?}")))?,
        params: serde_json::from_str(&params).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
        result: row
            .try_get::<Option<String>, _>("result")?
            .map(|r| serde_json::from_str(&r).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()?,
        total: row.try_get("total")?,
        started_at: row.try_get("started_at")?,
    })
}

fn chunk_from_row(row: &AnyRow) -> StoreResult<Chunk> {
    let spec: String = row.try_get("spec")?;
    Ok(Chunk {
        job_id: row.try_get("job_id")?,
        seq: row.try_get("seq")?,
        position: serde_json::from_str(&spec)
            .map_err(|e| e.to_string())
            .and_then(|v| ChunkPosition::from_stored(&v))
            .map_err(StoreError::Corrupt)?,
    })
}

const JOB_COLUMNS: &str = "id, kind, state, params, error, created_at, updated_at, finished_at, result, total, started_at";

/// `$from, $from+1, …` for `n` binds.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A new job row, created now with no counters yet: running (with its
/// chunks, in the caller's transaction) or queued for `serve`'s runner.
async fn insert_job<'e, E>(
    executor: E,
    id: &str,
    kind: JobKind,
    state: JobState,
    params: &Value,
) -> StoreResult<()>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    sqlx::query(
        "INSERT INTO jobs (id, kind, state, params, counters, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, '{}', $5, $5)",
    )
    .bind(id)
    .bind(kind.as_str())
    .bind(state.as_str())
    .bind(to_json(params))
    .bind(now())
    .execute(executor)
    .await?;
    Ok(())
}

#[async_trait]
impl JobStore for SqlStore {
    async fn create_job(
        &self,
        id: &str,
        kind: JobKind,
        params: &Value,
        chunks: &[ChunkPosition],
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        insert_job(&mut *tx, id, kind, JobState::Running, params).await?;
        insert_chunks::<Any>(&mut tx, id, 0, chunks).await?;
        Ok(tx.commit().await?)
    }

    async fn get_job(&self, id: &str) -> StoreResult<Option<Job>> {
        sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(job_from_row)
            .transpose()
    }

    async fn unfinished_job(&self, kind: JobKind) -> StoreResult<Option<Job>> {
        sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE kind = $1 AND state IN ($2, $3) \
             ORDER BY created_at DESC, id DESC LIMIT 1"
        ))
        .bind(kind.as_str())
        .bind(JobState::Running.as_str())
        .bind(JobState::Failed.as_str())
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(job_from_row)
        .transpose()
    }

    async fn reopen_job(&self, id: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE jobs SET state = $3, error = NULL, updated_at = $1 WHERE id = $2 AND state = $4",
        )
        .bind(now())
        .bind(id)
        .bind(JobState::Running.as_str())
        .bind(JobState::Failed.as_str())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn list_jobs(&self, limit: u32) -> StoreResult<Vec<Job>> {
        sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, id DESC LIMIT $1"
        ))
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(job_from_row)
        .collect()
    }

    async fn claim_chunk(
        &self,
        job_id: &str,
        worker: &str,
        stale_before: i64,
        dead: &[String],
    ) -> StoreResult<Option<Chunk>> {
        // SKIP LOCKED: a second worker passes over the row the first is
        // claiming instead of waiting for it (PostgreSQL docs, "The Locking
        // Clause"). SQLite serialises writers, so the plain subquery is safe.
        let lock = match self.dialect() {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let dead_list = if dead.is_empty() {
            String::new()
        } else {
            format!(" OR claimed_by IN ({})", placeholders(5, dead.len()))
        };
        let sql = format!(
            "UPDATE job_chunks SET state = '{claimed}', claimed_by = $1, heartbeat = $2 \
             WHERE job_id = $3 AND seq = (SELECT seq FROM job_chunks WHERE job_id = $3 \
             AND (state = '{pending}' OR (state = '{claimed}' AND (heartbeat < $4{dead_list}))) \
             ORDER BY seq LIMIT 1{lock}) \
             RETURNING job_id, seq, spec",
            claimed = ChunkState::Claimed,
            pending = ChunkState::Pending,
        );
        let mut query = sqlx::query(&sql)
            .bind(worker)
            .bind(now())
            .bind(job_id)
            .bind(stale_before);
        for d in dead {
            query = query.bind(d);
        }
        query
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(chunk_from_row)
            .transpose()
    }

    async fn chunk_owners(&self, job_id: &str) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT claimed_by FROM job_chunks WHERE job_id = $1 AND state = $2",
        )
        .bind(job_id)
        .bind(ChunkState::Claimed.as_str())
        .fetch_all(self.pool())
        .await?)
    }

    async fn heartbeat(&self, chunk: &Chunk, worker: &str) -> StoreResult<bool> {
        Ok(sqlx::query(
            "UPDATE job_chunks SET heartbeat = $1 WHERE job_id = $2 AND seq = $3 AND claimed_by = $4 \
             AND state = $5",
        )
        .bind(now())
        .bind(&chunk.job_id)
        .bind(chunk.seq)
        .bind(worker)
        .bind(ChunkState::Claimed.as_str())
        .execute(self.pool())
        .await?
        .rows_affected()
            > 0)
    }

    async fn commit_page(&self, commit: &PageCommit<'_>) -> StoreResult<Applied> {
        // A page of users none of whom exists yet (an import, a first
        // backfill) is written by COPY; anything else, or a page COPY finds
        // a conflict in, takes the general path below.
        if self.dialect() == Dialect::Postgres
            && !commit.dry_run
            && !commit.records.is_empty()
            && let Some(applied) = super::pg_copy::commit_new_page(self, commit).await?
        {
            return Ok(applied);
        }
        let mut tx = self.begin().await?;
        if self.dialect() == Dialect::Postgres && commit.chunk.is_some() {
            // A job's page need not wait for its WAL flush: if the database
            // itself crashes, the page and the job's position are lost
            // together (one transaction), and the resume writes them again
            // (PostgreSQL docs, "Asynchronous Commit"). The gateway's own
            // writes keep synchronous commits.
            sqlx::query(ASYNC_COMMIT).execute(&mut *tx).await?;
        }
        let mut applied =
            bulk::apply(&mut tx, self.dialect(), commit.records, commit.provider).await?;
        add_rejected(&mut applied, commit.rejected);
        if commit.dry_run {
            tx.rollback().await?;
            return Ok(applied);
        }
        write_position::<Any>(&mut tx, commit, &applied).await?;
        tx.commit().await?;
        Ok(applied)
    }

    fn parallel_pages(&self) -> usize {
        match self.dialect() {
            Dialect::Postgres => 3,
            Dialect::Sqlite => 1,
        }
    }

    async fn finish_job_if_done(&self, job_id: &str) -> StoreResult<bool> {
        let now = now();
        sqlx::query(
            "UPDATE jobs SET state = $3, finished_at = $1, updated_at = $1 \
             WHERE id = $2 AND state = $4 \
             AND NOT EXISTS (SELECT 1 FROM job_chunks WHERE job_id = $2 AND state <> $5)",
        )
        .bind(now)
        .bind(job_id)
        .bind(JobState::Done.as_str())
        .bind(JobState::Running.as_str())
        .bind(ChunkState::Done.as_str())
        .execute(self.pool())
        .await?;
        Ok(self
            .get_job(job_id)
            .await?
            .is_some_and(|j| j.state == JobState::Done))
    }

    async fn fail_job(&self, job_id: &str, error: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE jobs SET state = $4, error = $1, updated_at = $2 WHERE id = $3 AND state <> $5",
        )
        .bind(error)
        .bind(now())
        .bind(job_id)
        .bind(JobState::Failed.as_str())
        .bind(JobState::Cancelled.as_str())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn queue_job(&self, id: &str, kind: JobKind, params: &Value) -> StoreResult<()> {
        insert_job(self.pool(), id, kind, JobState::Queued, params).await
    }

    async fn queued_jobs(&self, limit: u32) -> StoreResult<Vec<Job>> {
        sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state = $1 ORDER BY created_at, id LIMIT $2"
        ))
        .bind(JobState::Queued.as_str())
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(job_from_row)
        .collect()
    }

    async fn start_queued_job(&self, id: &str, chunks: &[ChunkPosition]) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let won = sqlx::query(
            "UPDATE jobs SET state = $1, updated_at = $2, started_at = $2 WHERE id = $3 AND state = $4",
        )
        .bind(JobState::Running.as_str())
        .bind(now())
        .bind(id)
        .bind(JobState::Queued.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !won {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_chunks::<Any>(&mut tx, id, 0, chunks).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn cancel_job(&self, id: &str) -> StoreResult<bool> {
        let now = now();
        Ok(sqlx::query(
            "UPDATE jobs SET state = $1, finished_at = $2, updated_at = $2 \
             WHERE id = $3 AND state IN ($4, $5)",
        )
        .bind(JobState::Cancelled.as_str())
        .bind(now)
        .bind(id)
        .bind(JobState::Queued.as_str())
        .bind(JobState::Running.as_str())
        .execute(self.pool())
        .await?
        .rows_affected()
            > 0)
    }

    async fn set_job_total(&self, id: &str, total: u64) -> StoreResult<()> {
        sqlx::query("UPDATE jobs SET total = $1 WHERE id = $2")
            .bind(total as i64)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn finish_job_with_result(&self, id: &str, result: &Value) -> StoreResult<bool> {
        let now = now();
        Ok(sqlx::query(
            "UPDATE jobs SET state = $1, result = $2, finished_at = $3, updated_at = $3 \
             WHERE id = $4 AND state = $5",
        )
        .bind(JobState::Done.as_str())
        .bind(to_json(result))
        .bind(now)
        .bind(id)
        .bind(JobState::Running.as_str())
        .execute(self.pool())
        .await?
        .rows_affected()
            > 0)
    }
}
