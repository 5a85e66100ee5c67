//! What one page of a job commits, and the part of its transaction that is
//! the same on every path: the chunk's new position, counters and issues.
//!
//! Both the general path ([`super::jobs`]) and PostgreSQL's COPY path
//! ([`super::pg_copy`]) commit pages; the pieces they share live here, below
//! both, so that the jobs store can call the COPY path without the COPY path
//! reaching back into the jobs store.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::position::ChunkPosition;
use super::sql_common::to_json;
use super::{StoreError, StoreResult, now};
use crate::store::record::{Action, Note, Record};

/// Where a chunk stands: waiting, held by a worker (who keeps its
/// heartbeat), or finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkState {
    Pending,
    Claimed,
    Done,
}

text_names!(ChunkState {
    Pending => "pending",
    Claimed => "claimed",
    Done => "done",
});

#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub job_id: String,
    pub seq: i64,
    pub position: ChunkPosition,
}

/// What a job has done so far, summed over its chunks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub updated: u64,
    #[serde(default)]
    pub unchanged: u64,
    #[serde(default)]
    pub conflicts: u64,
    #[serde(default)]
    pub failed: u64,
}

impl Counters {
    pub fn add(&mut self, other: &Counters) {
        self.created += other.created;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.conflicts += other.conflicts;
        self.failed += other.failed;
    }

    pub fn count(&mut self, action: &Action) {
        match action {
            Action::Created => self.created += 1,
            Action::Updated => self.updated += 1,
            Action::Unchanged => self.unchanged += 1,
            Action::Conflict(_) => self.conflicts += 1,
            Action::Failed(_) => self.failed += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.created + self.updated + self.unchanged + self.conflicts + self.failed
    }
}

/// A record that could not even be read (a malformed line): reported with
/// the job's other failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub line: Option<u64>,
    pub user_id: Option<String>,
    pub reason: String,
}

/// Everything one page commits, in one transaction.
pub struct PageCommit<'a> {
    /// The chunk the page belongs to and its position after the page; none
    /// for a dry run or a job-less apply.
    pub chunk: Option<(&'a Chunk, ChunkPosition)>,
    /// The chunk is finished.
    pub done: bool,
    /// Chunks this one splits into (time windows, offset pages).
    pub split: Vec<ChunkPosition>,
    pub records: &'a [Record],
    pub rejected: &'a [Rejected],
    /// The provider the users come from (`auth0`, …).
    pub provider: &'a str,
    /// Roll everything back: what would happen, without it happening.
    pub dry_run: bool,
    /// Pages applied concurrently commit in order: this page (number `n`)
    /// writes its position only once the watch says page `n - 1` has.
    pub order: Option<(&'a tokio::sync::watch::Receiver<u64>, u64)>,
}

/// What a page did, record by record (in the order given).
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub actions: Vec<Action>,
    pub notes: Vec<Note>,
    pub counters: Counters,
}

/// `SET LOCAL` for a job page's transaction: see [`super::jobs::JobStore::commit_page`].
pub(super) const ASYNC_COMMIT: &str = "SET LOCAL synchronous_commit = off";

/// A page's records that reach the database: the first of each id. A later
/// record with the same id fails (its action is set), so a page never
/// writes one user twice.
pub(super) fn first_of_each_id(records: &[Record]) -> (Vec<Option<Action>>, Vec<&Record>) {
    let mut seen = HashSet::new();
    let mut actions = Vec::with_capacity(records.len());
    let mut fresh = Vec::with_capacity(records.len());
    for record in records {
        if seen.insert(record.id.as_str()) {
            actions.push(None);
            fresh.push(record);
        } else {
            actions.push(Some(Action::Failed(
                "duplicate id: the same user appears earlier in this page".into(),
            )));
        }
    }
    (actions, fresh)
}

/// Lines that could not be read are the page's failures too.
pub(super) fn add_rejected(applied: &mut Applied, rejected: &[Rejected]) {
    for r in rejected {
        applied.actions.push(Action::Failed(r.reason.clone()));
        applied.counters.failed += 1;
    }
}

/// The rest of a page's transaction: its issues, the chunk's new position
/// and counters, the chunks it splits into. Generic over the driver because
/// PostgreSQL's COPY path ([`super::pg_copy`]) runs on a native connection
/// (sqlx's `Any` driver cannot COPY) and must write the position in the
/// same transaction as the users.
pub(super) async fn write_position<DB: Database>(
    conn: &mut DB::Connection,
    commit: &PageCommit<'_>,
    applied: &Applied,
) -> StoreResult<()>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB>,
    for<'r> i64: Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
{
    let Some((chunk, position)) = &commit.chunk else {
        return Ok(());
    };
    if let Some((order, n)) = commit.order {
        let mut order = order.clone();
        order
            .wait_for(|committed| *committed + 1 >= n)
            .await
            .map_err(|_| StoreError::Backend("the job stopped".into()))?;
    }
    let now = now();
    record_issues::<DB>(&mut *conn, &chunk.job_id, commit, applied, now).await?;
    let counters: Option<String> =
        sqlx::query_scalar("SELECT counters FROM job_chunks WHERE job_id = $1 AND seq = $2")
            .bind(chunk.job_id.as_str())
            .bind(chunk.seq)
            .fetch_optional(&mut *conn)
            .await?;
    let mut total: Counters = counters
        .and_then(|c| serde_json::from_str(&c).ok())
        .unwrap_or_default();
    total.add(&applied.counters);
    sqlx::query(
        "UPDATE job_chunks SET spec = $1, counters = $2, heartbeat = $3, \
         state = CASE WHEN $4 = 1 THEN $7 ELSE state END WHERE job_id = $5 AND seq = $6",
    )
    .bind(to_json(position))
    .bind(to_json(&total))
    .bind(now)
    .bind(commit.done as i64)
    .bind(chunk.job_id.as_str())
    .bind(chunk.seq)
    .bind(ChunkState::Done.as_str())
    .execute(&mut *conn)
    .await?;
    if !commit.split.is_empty() {
        let next: Option<i64> =
            sqlx::query_scalar("SELECT MAX(seq) FROM job_chunks WHERE job_id = $1")
                .bind(chunk.job_id.as_str())
                .fetch_one(&mut *conn)
                .await?;
        insert_chunks::<DB>(
            &mut *conn,
            &chunk.job_id,
            next.unwrap_or(0) + 1,
            &commit.split,
        )
        .await?;
    }
    sqlx::query("UPDATE jobs SET updated_at = $1 WHERE id = $2")
        .bind(now)
        .bind(chunk.job_id.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(super) async fn insert_chunks<DB: Database>(
    conn: &mut DB::Connection,
    job_id: &str,
    first_seq: i64,
    chunks: &[ChunkPosition],
) -> StoreResult<()>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    for (i, spec) in chunks.iter().enumerate() {
        sqlx::query(
            "INSERT INTO job_chunks (job_id, seq, spec, state, counters) VALUES ($1, $2, $3, $4, '{}')",
        )
        .bind(job_id)
        .bind(first_seq + i as i64)
        .bind(to_json(spec))
        .bind(ChunkState::Pending.as_str())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn record_issues<DB: Database>(
    conn: &mut DB::Connection,
    job_id: &str,
    commit: &PageCommit<'_>,
    applied: &Applied,
    now: i64,
) -> StoreResult<()>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut issues: Vec<(&str, Option<&str>, Option<i64>, &str)> = Vec::new();
    for (record, action) in commit.records.iter().zip(&applied.actions) {
        let line = record.line.map(|l| l as i64);
        match action {
            Action::Conflict(why) => issues.push(("conflict", Some(&record.id), line, why)),
            Action::Failed(why) => issues.push(("failed", Some(&record.id), line, why)),
            _ => {}
        }
    }
    for r in commit.rejected {
        issues.push((
            "failed",
            r.user_id.as_deref(),
            r.line.map(|l| l as i64),
            &r.reason,
        ));
    }
    for n in &applied.notes {
        issues.push((
            "note",
            Some(&n.user_id),
            n.line.map(|l| l as i64),
            &n.reason,
        ));
    }
    for (kind, user_id, line, reason) in issues {
        sqlx::query(
            "INSERT INTO job_issues (job_id, kind, user_id, line, reason, at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(job_id)
        .bind(kind)
        .bind(user_id)
        .bind(line)
        .bind(reason)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The columns a new user's row fills, in order: the bulk INSERT's and
/// COPY's ([`super::pg_copy`]).
pub(super) const NEW_USER_COLUMNS: &[&str] = &[
    "id",
    "email",
    "email_normalized",
    "email_verified",
    "username",
    "name",
    "given_name",
    "family_name",
    "nickname",
    "picture",
    "phone_number",
    "profile",
    "user_metadata",
    "app_metadata",
    "state",
    "blocked",
    "upstream",
    "created_at",
    "updated_at",
    "upstream_last_login_at",
];
