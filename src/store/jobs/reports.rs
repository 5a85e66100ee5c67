//! What a job did and where the users stand: the summaries `switchyard
//! status`, `backfill` and `import` print.

use async_trait::async_trait;
use serde::Serialize;
use sqlx::Row;

use super::{ChunkState, Counters, Job, JobStore};
use crate::store::sql::SqlStore;
use crate::store::{StoreError, StoreResult};

#[derive(Debug, Clone, Serialize)]
pub struct Issue {
    pub kind: String,
    pub user_id: Option<String>,
    pub line: Option<i64>,
    pub reason: String,
}

/// `conflict line 12 auth0|…: why`, as the summaries print it.
impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<8} ", self.kind)?;
        if let Some(line) = self.line {
            write!(f, "line {line} ")?;
        }
        write!(
            f,
            "{}: {}",
            self.user_id.as_deref().unwrap_or("-"),
            self.reason
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub job: Job,
    pub counters: Counters,
    pub chunks_total: u64,
    pub chunks_done: u64,
    /// The latest heartbeat of any chunk (Unix seconds).
    pub heartbeat: Option<i64>,
    /// Every worker (`host:pid/n`) that has claimed a chunk of the job.
    pub workers: Vec<String>,
    /// Up to `issues_limit` issues, oldest first.
    pub issues: Vec<Issue>,
    pub issues_total: u64,
}

/// Users by state, for `switchyard status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UserCounts {
    pub by_state: std::collections::BTreeMap<String, u64>,
    pub blocked: u64,
    pub migrated_last_day: u64,
    pub migrated_last_week: u64,
    pub total: u64,
}

#[async_trait]
pub trait JobReports: Send + Sync {
    async fn job_summary(&self, job_id: &str, issues_limit: u32) -> StoreResult<JobSummary>;
    async fn user_counts(&self, now: i64) -> StoreResult<UserCounts>;
}

#[async_trait]
impl JobReports for SqlStore {
    async fn job_summary(&self, job_id: &str, issues_limit: u32) -> StoreResult<JobSummary> {
        let job = self
            .get_job(job_id)
            .await?
            .ok_or_else(|| StoreError::Backend(format!("no job {job_id}")))?;
        let rows = sqlx::query(
            "SELECT state, counters, heartbeat, claimed_by FROM job_chunks WHERE job_id = $1",
        )
        .bind(job_id)
        .fetch_all(self.pool())
        .await?;
        let mut counters = Counters::default();
        let (mut total, mut done, mut heartbeat) = (0, 0, None::<i64>);
        let mut workers = std::collections::BTreeSet::new();
        for row in &rows {
            total += 1;
            if let Some(w) = row.try_get::<Option<String>, _>("claimed_by")? {
                workers.insert(w);
            }
            let state: String = row.try_get("state")?;
            if ChunkState::parse(&state) == Some(ChunkState::Done) {
                done += 1;
            }
            let c: String = row.try_get("counters")?;
            counters.add(&serde_json::from_str(&c).unwrap_or_default());
            let beat: Option<i64> = row.try_get("heartbeat")?;
            heartbeat = heartbeat.max(beat);
        }
        let issues = sqlx::query(
            "SELECT kind, user_id, line, reason FROM job_issues WHERE job_id = $1 ORDER BY id LIMIT $2",
        )
        .bind(job_id)
        .bind(issues_limit as i64)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(Issue {
                kind: r.try_get("kind")?,
                user_id: r.try_get("user_id")?,
                line: r.try_get("line")?,
                reason: r.try_get("reason")?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
        let issues_total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM job_issues WHERE job_id = $1")
                .bind(job_id)
                .fetch_one(self.pool())
                .await?;
        Ok(JobSummary {
            job,
            counters,
            chunks_total: total,
            chunks_done: done,
            heartbeat,
            workers: workers.into_iter().collect(),
            issues,
            issues_total: issues_total as u64,
        })
    }

    async fn user_counts(&self, now: i64) -> StoreResult<UserCounts> {
        let mut counts = UserCounts::default();
        for row in sqlx::query("SELECT state, COUNT(*) AS n FROM users GROUP BY state")
            .fetch_all(self.pool())
            .await?
        {
            let state: String = row.try_get("state")?;
            let n: i64 = row.try_get("n")?;
            counts.total += n as u64;
            counts.by_state.insert(state, n as u64);
        }
        let count = |sql: &'static str, bind: i64| async move {
            let n: i64 = sqlx::query_scalar(sql)
                .bind(bind)
                .fetch_one(self.pool())
                .await?;
            StoreResult::Ok(n as u64)
        };
        counts.blocked = count("SELECT COUNT(*) FROM users WHERE blocked = $1", 1).await?;
        counts.migrated_last_day = count(
            "SELECT COUNT(*) FROM users WHERE migrated_at >= $1",
            now - 86_400,
        )
        .await?;
        counts.migrated_last_week = count(
            "SELECT COUNT(*) FROM users WHERE migrated_at >= $1",
            now - 7 * 86_400,
        )
        .await?;
        Ok(counts)
    }
}
