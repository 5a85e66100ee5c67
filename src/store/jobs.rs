//! Jobs (backfill, import), their chunks, and the bulk upsert of users.
//!
//! A job is split into chunks (a page cursor, a time window, an offset, an
//! export file). A worker claims one chunk at a time — `FOR UPDATE SKIP
//! LOCKED` on PostgreSQL, so several processes share a job; SQLite has one
//! writer and one worker — and [`JobStore::commit_page`] writes a page's
//! users together with the chunk's new position in one transaction: after a
//! crash the page in flight is fetched again and nothing is applied twice.
//!
//! Users are upserted by their upstream id, a batch at a time: the batch is
//! inserted optimistically, then for the rows a uniqueness rule skipped a
//! few queries read what exists, the records are compared in Rust
//! ([`Record::diff`]), and only changed users are written, so a second run
//! over the same source writes nothing. A `migrated` or `local`
//! user is never downgraded, and a field changed locally after migration is
//! reported as a conflict rather than overwritten.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::page::{
    ASYNC_COMMIT, NEW_USER_COLUMNS, add_rejected, first_of_each_id, insert_chunks, write_position,
};
pub use super::page::{Applied, Chunk, Counters, PageCommit, Rejected};
use super::sql::{SqlStore, normalize_email};
use super::sql_common::{Dialect, to_json};
use super::{StoreError, StoreResult, now};
use crate::store::record::{Action, Note, Record};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Job {
    pub id: String,
    /// `backfill` or `import`.
    pub kind: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    pub params: Value,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

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
pub trait JobStore: Send + Sync {
    /// Creates a running job with its first chunks.
    async fn create_job(
        &self,
        id: &str,
        kind: &str,
        params: &Value,
        chunks: &[Value],
    ) -> StoreResult<()>;
    async fn get_job(&self, id: &str) -> StoreResult<Option<Job>>;
    /// The newest job of `kind` that is still running, was interrupted, or
    /// failed.
    async fn unfinished_job(&self, kind: &str) -> StoreResult<Option<Job>>;
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
    async fn fail_job(&self, job_id: &str, error: &str) -> StoreResult<()>;
    async fn job_summary(&self, job_id: &str, issues_limit: u32) -> StoreResult<JobSummary>;
    async fn user_counts(&self, now: i64) -> StoreResult<UserCounts>;
    /// The local users with these ids, as records (for verify).
    async fn local_records(&self, ids: &[String]) -> StoreResult<HashMap<String, LocalUser>>;
    /// Changes a user's profile and marks it changed locally (backfills
    /// then leave it alone); false when the user does not exist. The mark
    /// is after `migrated_at` even within the second of the migration.
    async fn edit_user(&self, id: &str, edit: &ProfileEdit) -> StoreResult<bool>;
    /// Ids of users that came from `provider`, in id order after `after`.
    async fn upstream_user_ids(
        &self,
        provider: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<String>>;
}

/// A profile change made in Switchyard (`users update`); `None` leaves a
/// field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProfileEdit {
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub nickname: Option<String>,
}

/// A local user as the jobs compare it.
#[derive(Debug, Clone)]
pub struct LocalUser {
    pub record: Record,
    pub state: String,
    /// Changed through Switchyard after migrating: the upstream no longer
    /// owns the profile.
    pub changed_locally: bool,
    /// The stored password hash, if any.
    pub password: Option<String>,
}

fn job_from_row(row: &AnyRow) -> StoreResult<Job> {
    let params: String = row.try_get("params")?;
    Ok(Job {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        state: row.try_get("state")?,
        params: serde_json::from_str(&params).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

fn chunk_from_row(row: &AnyRow) -> StoreResult<Chunk> {
    let spec: String = row.try_get("spec")?;
    Ok(Chunk {
        job_id: row.try_get("job_id")?,
        seq: row.try_get("seq")?,
        spec: serde_json::from_str(&spec).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

const JOB_COLUMNS: &str = "id, kind, state, params, error, created_at, updated_at, finished_at";

/// `$from, $from+1, …` for `n` binds.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn object(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

#[async_trait]
impl JobStore for SqlStore {
    async fn create_job(
        &self,
        id: &str,
        kind: &str,
        params: &Value,
        chunks: &[Value],
    ) -> StoreResult<()> {
        let now = now();
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO jobs (id, kind, state, params, counters, created_at, updated_at) \
             VALUES ($1, $2, 'running', $3, '{}', $4, $4)",
        )
        .bind(id)
        .bind(kind)
        .bind(to_json(params))
        .bind(now)
        .execute(&mut *tx)
        .await?;
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

    async fn unfinished_job(&self, kind: &str) -> StoreResult<Option<Job>> {
        sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE kind = $1 AND state IN ('running', 'failed') \
             ORDER BY created_at DESC, id DESC LIMIT 1"
        ))
        .bind(kind)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(job_from_row)
        .transpose()
    }

    async fn reopen_job(&self, id: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE jobs SET state = 'running', error = NULL, updated_at = $1 WHERE id = $2 AND state = 'failed'",
        )
        .bind(now())
        .bind(id)
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
            "UPDATE job_chunks SET state = 'claimed', claimed_by = $1, heartbeat = $2 \
             WHERE job_id = $3 AND seq = (SELECT seq FROM job_chunks WHERE job_id = $3 \
             AND (state = 'pending' OR (state = 'claimed' AND (heartbeat < $4{dead_list}))) \
             ORDER BY seq LIMIT 1{lock}) \
             RETURNING job_id, seq, spec"
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
            "SELECT DISTINCT claimed_by FROM job_chunks WHERE job_id = $1 AND state = 'claimed'",
        )
        .bind(job_id)
        .fetch_all(self.pool())
        .await?)
    }

    async fn heartbeat(&self, chunk: &Chunk, worker: &str) -> StoreResult<bool> {
        Ok(sqlx::query(
            "UPDATE job_chunks SET heartbeat = $1 WHERE job_id = $2 AND seq = $3 AND claimed_by = $4 \
             AND state = 'claimed'",
        )
        .bind(now())
        .bind(&chunk.job_id)
        .bind(chunk.seq)
        .bind(worker)
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
        let mut tx = self.pool().begin().await?;
        if self.dialect() == Dialect::Postgres && commit.chunk.is_some() {
            // A job's page need not wait for its WAL flush: if the database
            // itself crashes, the page and the job's position are lost
            // together (one transaction), and the resume writes them again
            // (PostgreSQL docs, "Asynchronous Commit"). The gateway's own
            // writes keep synchronous commits.
            sqlx::query(ASYNC_COMMIT).execute(&mut *tx).await?;
        }
        let mut applied = apply(&mut tx, self.dialect(), commit.records, commit.provider).await?;
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
            "UPDATE jobs SET state = 'done', finished_at = $1, updated_at = $1 \
             WHERE id = $2 AND state = 'running' \
             AND NOT EXISTS (SELECT 1 FROM job_chunks WHERE job_id = $2 AND state <> 'done')",
        )
        .bind(now)
        .bind(job_id)
        .execute(self.pool())
        .await?;
        Ok(self
            .get_job(job_id)
            .await?
            .is_some_and(|j| j.state == "done"))
    }

    async fn fail_job(&self, job_id: &str, error: &str) -> StoreResult<()> {
        sqlx::query("UPDATE jobs SET state = 'failed', error = $1, updated_at = $2 WHERE id = $3")
            .bind(error)
            .bind(now())
            .bind(job_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

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
            if state == "done" {
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

    async fn local_records(&self, ids: &[String]) -> StoreResult<HashMap<String, LocalUser>> {
        let mut conn = self.pool().acquire().await?;
        load_local(&mut conn, self.dialect(), ids).await
    }

    async fn edit_user(&self, id: &str, edit: &ProfileEdit) -> StoreResult<bool> {
        let now = now();
        Ok(sqlx::query(
            "UPDATE users SET email = COALESCE($2, email), \
             email_normalized = CASE WHEN $2 IS NULL THEN email_normalized ELSE $3 END, \
             email_verified = COALESCE($4, email_verified), name = COALESCE($5, name), \
             given_name = COALESCE($6, given_name), family_name = COALESCE($7, family_name), \
             nickname = COALESCE($8, nickname), updated_at = $9, \
             local_updated_at = CASE WHEN migrated_at >= $9 THEN migrated_at + 1 ELSE $9 END WHERE id = $1",
        )
        .bind(id)
        .bind(&edit.email)
        .bind(edit.email.as_deref().map(normalize_email))
        .bind(edit.email_verified.map(|v| v as i64))
        .bind(&edit.name)
        .bind(&edit.given_name)
        .bind(&edit.family_name)
        .bind(&edit.nickname)
        .bind(now)
        .execute(self.pool())
        .await?
        .rows_affected()
            > 0)
    }

    async fn upstream_user_ids(
        &self,
        provider: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM users WHERE upstream = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(provider)
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?)
    }
}

const LOCAL_COLUMNS: &str = "id, state, email, email_verified, username, name, given_name, family_name, nickname, \
    picture, phone_number, user_metadata, app_metadata, blocked, migrated_at, local_updated_at";

/// `column IN (…)` over one bind: the list travels as one JSON array and
/// the database expands it. A batch of a thousand ids is then one small
/// statement, prepared once, rather than a thousand bind parameters.
fn in_json_list(dialect: Dialect, column: &str) -> String {
    match dialect {
        Dialect::Postgres => format!("{column} IN (SELECT json_array_elements_text($1::json))"),
        Dialect::Sqlite => format!("{column} IN (SELECT value FROM json_each($1))"),
    }
}

/// `{select} column IN (list)`, the list one JSON array.
async fn select_in(
    conn: &mut sqlx::AnyConnection,
    dialect: Dialect,
    select: &str,
    column: &str,
    list: &str,
) -> StoreResult<Vec<AnyRow>> {
    Ok(
        sqlx::query(&format!("{select} {}", in_json_list(dialect, column)))
            .bind(list)
            .fetch_all(conn)
            .await?,
    )
}

async fn load_local(
    conn: &mut sqlx::AnyConnection,
    dialect: Dialect,
    ids: &[String],
) -> StoreResult<HashMap<String, LocalUser>> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let list = to_json(&ids);
    let select = format!("SELECT {LOCAL_COLUMNS} FROM users WHERE");
    for row in select_in(conn, dialect, &select, "id", &list).await? {
        let text = |c: &str| {
            row.try_get::<Option<String>, _>(c)
                .map_err(StoreError::from)
        };
        let id: String = row.try_get("id")?;
        let mut record = Record::new(id.clone());
        record.email = text("email")?;
        record.email_verified = row.try_get::<i64, _>("email_verified")? != 0;
        record.username = text("username")?;
        record.name = text("name")?;
        record.given_name = text("given_name")?;
        record.family_name = text("family_name")?;
        record.nickname = text("nickname")?;
        record.picture = text("picture")?;
        record.phone_number = text("phone_number")?;
        record.user_metadata = object(&text("user_metadata")?.unwrap_or_default());
        record.app_metadata = object(&text("app_metadata")?.unwrap_or_default());
        record.blocked = row.try_get::<i64, _>("blocked")? != 0;
        let state: String = row.try_get("state")?;
        let migrated_at: Option<i64> = row.try_get("migrated_at")?;
        let local_updated_at: Option<i64> = row.try_get("local_updated_at")?;
        let changed_locally = match (state.as_str(), migrated_at, local_updated_at) {
            ("local", _, _) => true,
            (_, Some(m), Some(l)) => l > m,
            (_, None, Some(_)) => true,
            _ => false,
        };
        out.insert(
            id,
            LocalUser {
                record,
                state,
                changed_locally,
                password: None,
            },
        );
    }
    if out.is_empty() {
        // A fresh import finds nobody: no identities or credentials to read.
        return Ok(out);
    }
    let select = "SELECT user_id, subject FROM identities WHERE";
    for row in select_in(conn, dialect, select, "user_id", &list).await? {
        let user_id: String = row.try_get("user_id")?;
        if let Some(u) = out.get_mut(&user_id) {
            u.record.add_identity(row.try_get("subject")?);
        }
    }
    let select = "SELECT user_id, hash FROM credentials WHERE kind = 'password' AND";
    for row in select_in(conn, dialect, select, "user_id", &list).await? {
        let user_id: String = row.try_get("user_id")?;
        if let Some(u) = out.get_mut(&user_id) {
            u.password = Some(row.try_get("hash")?);
        }
    }
    Ok(out)
}

/// Which of these login identifiers (normalised emails or usernames)
/// already belong to a user, and to whom.
async fn taken(
    conn: &mut sqlx::AnyConnection,
    dialect: Dialect,
    column: &str,
    wanted: &[String],
) -> StoreResult<HashMap<String, String>> {
    let mut owners = HashMap::new();
    if wanted.is_empty() {
        return Ok(owners);
    }
    let select = format!("SELECT id, {column} FROM users WHERE");
    for row in select_in(conn, dialect, &select, column, &to_json(&wanted)).await? {
        let id: String = row.try_get("id")?;
        let value: String = row.try_get(column)?;
        owners.insert(value, id);
    }
    Ok(owners)
}

/// The login identifiers a record may hold: an email or username another
/// user already holds stays on the record but cannot log in, because
/// linking accounts by email would let whoever controls one take over the
/// other (the same rule as an upstream login, `upsert_upstream_user`).
struct Logins {
    email: Option<String>,
    username: Option<String>,
}

/// A page's records, upserted. Most records of an import or a first
/// backfill are new, so they are inserted first, optimistically, with their
/// own email and username as logins: a row that any uniqueness rule skips
/// (the user exists, or another holds the email or username, or an earlier
/// record of the page does) goes through [`reconcile`], which reads what
/// exists and decides. A fresh page thus costs one statement instead of
/// four; a page of known users costs one index probe a row more.
async fn apply(
    tx: &mut Transaction<'_, Any>,
    dialect: Dialect,
    records: &[Record],
    provider: &str,
) -> StoreResult<Applied> {
    let now = now();
    let (actions, fresh) = first_of_each_id(records);
    let fresh: Vec<(&Record, Logins)> = fresh
        .into_iter()
        .map(|record| {
            (
                record,
                Logins {
                    email: record.email.as_deref().map(normalize_email),
                    username: record.username.clone(),
                },
            )
        })
        .collect();
    let skipped = insert_users(tx, dialect, &fresh, provider, now).await?;
    let rest: Vec<&Record> = fresh
        .iter()
        .filter(|(r, _)| skipped.contains(&r.id))
        .map(|(r, _)| *r)
        .collect();
    let reconciled = reconcile(tx, dialect, &rest, provider, now).await?;
    let mut reconciled_actions = reconciled.actions.into_iter();
    let mut applied = Applied {
        notes: reconciled.notes,
        ..Applied::default()
    };
    for (record, action) in records.iter().zip(actions) {
        let action = match action {
            Some(failed) => failed,
            None if skipped.contains(&record.id) => reconciled_actions
                .next()
                .ok_or_else(|| StoreError::Backend("a reconciled record went missing".into()))?,
            None => Action::Created,
        };
        applied.counters.count(&action);
        applied.actions.push(action);
    }
    Ok(applied)
}

/// Records the optimistic insert skipped: what exists is read with a few
/// queries and each record is compared with it ([`Record::diff`]).
async fn reconcile(
    tx: &mut Transaction<'_, Any>,
    dialect: Dialect,
    records: &[&Record],
    provider: &str,
    now: i64,
) -> StoreResult<Applied> {
    let mut applied = Applied::default();
    if records.is_empty() {
        return Ok(applied);
    }
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let existing = load_local(tx, dialect, &ids).await?;
    let emails: Vec<String> = records
        .iter()
        .filter_map(|r| r.email.as_deref().map(normalize_email))
        .collect();
    let usernames: Vec<String> = records.iter().filter_map(|r| r.username.clone()).collect();
    let mut email_owner = taken(tx, dialect, "email_normalized", &emails).await?;
    let mut username_owner = taken(tx, dialect, "username", &usernames).await?;

    let mut inserts: Vec<(&Record, Logins)> = Vec::new();
    for &record in records {
        let mut logins = Logins {
            email: None,
            username: None,
        };
        let mut note = |reason: String| {
            applied.notes.push(Note {
                user_id: record.id.clone(),
                line: record.line,
                reason,
            })
        };
        if let Some(e) = record.email.as_deref().map(normalize_email) {
            match email_owner.get(&e) {
                Some(owner) if owner != &record.id => note(format!(
                    "email is also the login of {owner}; kept on the record, not usable to log in"
                )),
                _ => {
                    email_owner.insert(e.clone(), record.id.clone());
                    logins.email = Some(e);
                }
            }
        }
        if let Some(u) = &record.username {
            match username_owner.get(u) {
                Some(owner) if owner != &record.id => note(format!(
                    "username is also the login of {owner}; kept in the profile only"
                )),
                _ => {
                    username_owner.insert(u.clone(), record.id.clone());
                    logins.username = Some(u.clone());
                }
            }
        }
        let action = match existing.get(&record.id) {
            None => {
                inserts.push((record, logins));
                Action::Created
            }
            Some(local) => update(tx, record, local, &logins, provider, now).await?,
        };
        applied.actions.push(action);
    }
    let skipped = insert_users(tx, dialect, &inserts, provider, now).await?;
    if !skipped.is_empty() {
        // Rows a uniqueness rule skipped: another worker inserted the same
        // user meanwhile (an offset page that shifted) — theirs stands — or
        // inserted someone holding the same email or username, which this
        // user then keeps on the record only.
        let ids: Vec<String> = skipped.iter().cloned().collect();
        let exists: HashSet<String> = select_in(
            tx,
            dialect,
            "SELECT id FROM users WHERE",
            "id",
            &to_json(&ids),
        )
        .await?
        .iter()
        .map(|row| row.try_get("id").map_err(StoreError::from))
        .collect::<StoreResult<_>>()?;
        let mut retry = Vec::new();
        for (&record, action) in records.iter().zip(applied.actions.iter_mut()) {
            if *action != Action::Created || !skipped.contains(&record.id) {
                continue;
            }
            let reason = if exists.contains(&record.id) {
                *action = Action::Unchanged;
                "written meanwhile by another worker; left as it was"
            } else {
                retry.push((
                    record,
                    Logins {
                        email: None,
                        username: None,
                    },
                ));
                "email or username was taken meanwhile by another user; kept on the record, not usable to log in"
            };
            applied.notes.push(Note {
                user_id: record.id.clone(),
                line: record.line,
                reason: reason.into(),
            });
        }
        let lost = insert_users(tx, dialect, &retry, provider, now).await?;
        for (&record, action) in records.iter().zip(applied.actions.iter_mut()) {
            if lost.contains(&record.id) && *action == Action::Created {
                *action = Action::Failed("could not be inserted; run the job again".into());
            }
        }
    }
    Ok(applied)
}

async fn update(
    tx: &mut Transaction<'_, Any>,
    record: &Record,
    local: &LocalUser,
    logins: &Logins,
    provider: &str,
    now: i64,
) -> StoreResult<Action> {
    let mut changed = record.diff(&local.record);
    // A username that is someone else's login stays as it was locally.
    if logins.username.is_none() && record.username.is_some() {
        changed.retain(|f| *f != "username");
    }
    let new_password = record.password.as_ref().filter(|(hash, _)| {
        local.password.is_none()
            || (local.state == "pending" && local.password.as_ref() != Some(hash))
    });
    if changed.is_empty() && new_password.is_none() {
        return Ok(Action::Unchanged);
    }
    let owns_profile = matches!(local.state.as_str(), "pending" | "shadow");
    if !changed.is_empty() && !owns_profile && local.changed_locally {
        return Ok(Action::Conflict(format!(
            "changed locally after migration, not overwritten: {}",
            changed.join(", ")
        )));
    }
    if !changed.is_empty() {
        let username = logins
            .username
            .clone()
            .or_else(|| local.record.username.clone());
        // Only a user who never logged in keeps the source's profile as
        // their claims; after a login the claims come from the upstream's
        // tokens and stay as they were.
        let profile = (local.state == "pending").then(|| record.profile.as_str());
        sqlx::query(
            "UPDATE users SET email = $2, email_normalized = $3, email_verified = $4, username = $5, \
             name = $6, given_name = $7, family_name = $8, nickname = $9, picture = $10, phone_number = $11, \
             user_metadata = $12, app_metadata = $13, blocked = $14, profile = COALESCE($15, profile), \
             upstream = COALESCE(upstream, $16), updated_at = $17 WHERE id = $1",
        )
        .bind(&record.id)
        .bind(&record.email)
        .bind(&logins.email)
        .bind(record.email_verified as i64)
        .bind(username)
        .bind(&record.name)
        .bind(&record.given_name)
        .bind(&record.family_name)
        .bind(&record.nickname)
        .bind(&record.picture)
        .bind(&record.phone_number)
        .bind(to_json(&record.user_metadata))
        .bind(to_json(&record.app_metadata))
        .bind(record.blocked as i64)
        .bind(profile)
        .bind(provider)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        if changed.contains(&"identities") && owns_profile {
            for subject in &record.identities {
                insert_identity(tx, provider, subject, &record.id, now).await?;
            }
        }
    }
    if let Some((hash, algorithm)) = new_password {
        sqlx::query(
            "INSERT INTO credentials (user_id, kind, hash, algorithm, created_at, updated_at) \
             VALUES ($1, 'password', $2, $3, $4, $4) \
             ON CONFLICT (user_id, kind) DO UPDATE SET hash = excluded.hash, algorithm = excluded.algorithm, \
             updated_at = excluded.updated_at",
        )
        .bind(&record.id)
        .bind(hash)
        .bind(algorithm)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(Action::Updated)
}

async fn insert_identity(
    tx: &mut Transaction<'_, Any>,
    provider: &str,
    subject: &str,
    user_id: &str,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO identities (provider, subject, user_id, profile, created_at) VALUES ($1, $2, $3, '{}', $4) \
         ON CONFLICT (provider, subject) DO NOTHING",
    )
    .bind(provider)
    .bind(subject)
    .bind(user_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `INSERT … SELECT` from one JSON array of row objects: PostgreSQL's
/// `json_populate_recordset`, SQLite's `json_each`. Rows that hit a
/// uniqueness rule are skipped (`ON CONFLICT DO NOTHING`); the inserted
/// rows' `key` column is returned.
fn insert_json_sql(dialect: Dialect, table: &str, columns: &[&str], key: &str) -> String {
    let list = columns.join(", ");
    match dialect {
        Dialect::Postgres => format!(
            "INSERT INTO {table} ({list}) SELECT {list} FROM json_populate_recordset(NULL::{table}, $1::json) \
             ON CONFLICT DO NOTHING RETURNING {key}"
        ),
        Dialect::Sqlite => {
            let values: Vec<String> = columns
                .iter()
                .map(|c| format!("json_extract(value, '$.{c}')"))
                .collect();
            // `WHERE true` keeps SQLite from reading ON CONFLICT as a join
            // clause (sqlite.org/lang_upsert.html, "Parsing Ambiguity").
            format!(
                "INSERT INTO {table} ({list}) SELECT {} FROM json_each($1) WHERE true \
                 ON CONFLICT DO NOTHING RETURNING {key}",
                values.join(", ")
            )
        }
    }
}

/// One new user as the bulk INSERT reads it. Text columns that hold JSON
/// are given as JSON objects where the record holds a map (the metadata):
/// both databases store an object's JSON text in a TEXT column. The
/// profile, already text, goes as a JSON string, whose contents both store
/// as they are (PostgreSQL's `json_populate_recordset` feeds a string's
/// contents to the column's input function; SQLite's `json_extract`
/// returns them).
#[derive(Serialize)]
struct NewRow<'a> {
    id: &'a str,
    email: Option<&'a str>,
    email_normalized: Option<&'a str>,
    email_verified: i64,
    username: Option<&'a str>,
    name: Option<&'a str>,
    given_name: Option<&'a str>,
    family_name: Option<&'a str>,
    nickname: Option<&'a str>,
    picture: Option<&'a str>,
    phone_number: Option<&'a str>,
    profile: &'a str,
    user_metadata: &'a Map<String, Value>,
    app_metadata: &'a Map<String, Value>,
    state: &'a str,
    blocked: i64,
    upstream: &'a str,
    created_at: i64,
    updated_at: i64,
}

/// New users, their linked identities and imported hashes: at most three
/// statements a batch whatever its size. Returns the ids a uniqueness rule
/// skipped.
async fn insert_users(
    tx: &mut Transaction<'_, Any>,
    dialect: Dialect,
    inserts: &[(&Record, Logins)],
    provider: &str,
    now: i64,
) -> StoreResult<HashSet<String>> {
    let mut raced = HashSet::new();
    if inserts.is_empty() {
        return Ok(raced);
    }
    let rows: Vec<NewRow> = inserts
        .iter()
        .map(|(r, logins)| NewRow {
            id: &r.id,
            email: r.email.as_deref(),
            email_normalized: logins.email.as_deref(),
            email_verified: r.email_verified as i64,
            username: logins.username.as_deref(),
            name: r.name.as_deref(),
            given_name: r.given_name.as_deref(),
            family_name: r.family_name.as_deref(),
            nickname: r.nickname.as_deref(),
            picture: r.picture.as_deref(),
            phone_number: r.phone_number.as_deref(),
            profile: r.profile.as_str(),
            user_metadata: &r.user_metadata,
            app_metadata: &r.app_metadata,
            state: "pending",
            blocked: r.blocked as i64,
            upstream: provider,
            created_at: now,
            updated_at: now,
        })
        .collect();
    let inserted: HashSet<String> =
        sqlx::query_scalar::<_, String>(&insert_json_sql(dialect, "users", NEW_USER_COLUMNS, "id"))
            .bind(to_json(&rows))
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
    for (r, _) in inserts {
        if !inserted.contains(&r.id) {
            raced.insert(r.id.clone());
        }
    }

    // The user's own id needs no identity row (a login finds the user by
    // id); linked identities do.
    let identities: Vec<Value> = inserts
        .iter()
        .filter(|(r, _)| inserted.contains(&r.id))
        .flat_map(|(r, _)| {
            r.identities.iter().filter(|s| **s != r.id).map(|subject| {
                serde_json::json!({"provider": provider, "subject": subject, "user_id": r.id,
                                   "profile": "{}", "created_at": now})
            })
        })
        .collect();
    if !identities.is_empty() {
        sqlx::query(&insert_json_sql(
            dialect,
            "identities",
            &["provider", "subject", "user_id", "profile", "created_at"],
            "subject",
        ))
        .bind(to_json(&identities))
        .execute(&mut **tx)
        .await?;
    }

    let hashes: Vec<Value> = inserts
        .iter()
        .filter(|(r, _)| inserted.contains(&r.id))
        .filter_map(|(r, _)| {
            r.password.as_ref().map(|(hash, algorithm)| {
                serde_json::json!({"user_id": r.id, "kind": "password", "hash": hash,
                                   "algorithm": algorithm, "created_at": now, "updated_at": now})
            })
        })
        .collect();
    if !hashes.is_empty() {
        sqlx::query(&insert_json_sql(
            dialect,
            "credentials",
            &[
                "user_id",
                "kind",
                "hash",
                "algorithm",
                "created_at",
                "updated_at",
            ],
            "user_id",
        ))
        .bind(to_json(&hashes))
        .execute(&mut **tx)
        .await?;
    }
    Ok(raced)
}
