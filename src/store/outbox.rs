//! The write outbox: writes to the upstream that a local change owes it,
//! queued durably and delivered later, so the upstream, still the
//! primary during the migration, never lags silently behind.
//!
//! A row is inserted by the transaction that makes the local change
//! ([`super::outbox_queue::enqueue`]), so the two commit together or not at all. Workers claim
//! due rows — `FOR UPDATE SKIP LOCKED` on PostgreSQL, so several instances
//! share the queue without waiting on each other; SQLite has one writer —
//! under a lease (`claimed_at`): a worker that died mid-delivery leaves a
//! claim that another takes over once it is stale. Writes are idempotent
//! (they set a value), so a delivery repeated after such a takeover is
//! harmless. A row ends `done`, or `failed` once its attempts are spent,
//! where it stays, visible, until an operator retries or discards it.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

pub use super::outbox_queue::{OutboxKind, QueuedWrite, SealSecret};
use super::sql::SqlStore;
use super::sql_common::Dialect;
use super::{StoreError, StoreResult, now};

/// The longest `last_error` kept: enough for a vendor's message, never a
/// response body.
pub const MAX_ERROR_LEN: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    /// Waiting for its next attempt (or being delivered, when claimed).
    Pending,
    Done,
    /// Its attempts are spent, or the upstream refused it for good: kept
    /// until an operator retries or discards it.
    Failed,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "done" => Self::Done,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub kind: OutboxKind,
    pub user_id: String,
    /// Shown (`outbox list --json`, `status --json`) without a sealed
    /// secret: the worker alone reads that.
    #[serde(serialize_with = "without_secret")]
    pub payload: Value,
    pub state: OutboxState,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub claimed_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

fn without_secret<S: serde::Serializer>(payload: &Value, s: S) -> Result<S::Ok, S::Error> {
    match payload {
        Value::Object(map) if map.contains_key("sealed") => {
            let mut shown = map.clone();
            shown.remove("sealed");
            serde::Serialize::serialize(&shown, s)
        }
        other => serde::Serialize::serialize(other, s),
    }
}

/// How many rows are in each state, and the most recent failures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OutboxCounts {
    pub pending: u64,
    pub failed: u64,
    pub done: u64,
    pub recent_failures: Vec<OutboxRow>,
    /// Failed rows by kind among those last changed in the last day.
    pub failed_last_day: std::collections::BTreeMap<OutboxKind, u64>,
}

/// What an operator's `outbox retry` applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryTarget {
    One(i64),
    AllFailed,
}

#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Queues a row on its own, for an effect no local change comes with
    /// (an email asked for on a page).
    async fn enqueue_outbox(&self, write: &QueuedWrite) -> StoreResult<i64>;
    /// Claims up to `limit` due rows for `worker`: pending, due by `now`,
    /// and unclaimed or claimed before `stale_before`.
    async fn claim_outbox(
        &self,
        worker: &str,
        now: i64,
        stale_before: i64,
        limit: u32,
    ) -> StoreResult<Vec<OutboxRow>>;
    /// The write was delivered. False when the row is no longer this
    /// worker's (discarded, or taken over).
    async fn outbox_done(&self, id: i64, worker: &str) -> StoreResult<bool>;
    /// The attempt failed: the row counts it, keeps `error` (bounded), and
    /// waits until `next_attempt_at`, or turns `failed` when `give_up`.
    async fn outbox_failed(
        &self,
        id: i64,
        worker: &str,
        error: &str,
        next_attempt_at: i64,
        give_up: bool,
    ) -> StoreResult<bool>;
    /// Rows by state (all when `None`), newest first.
    async fn list_outbox(
        &self,
        state: Option<OutboxState>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxRow>>;
    /// Rows (of `state`), newest first, with ids below `before`: the
    /// admin API's pages.
    async fn list_outbox_before(
        &self,
        state: Option<OutboxState>,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxRow>>;
    async fn get_outbox(&self, id: i64) -> StoreResult<Option<OutboxRow>>;
    /// Makes failed rows (or the one named, if not done) pending again,
    /// due now, with their attempts reset. Returns how many.
    async fn retry_outbox(&self, target: RetryTarget) -> StoreResult<u64>;
    /// Deletes a row that is not done: the operator gives the write up.
    async fn discard_outbox(&self, id: i64) -> StoreResult<bool>;
    /// Counts by state and the `failures` most recent failed rows.
    async fn outbox_counts(&self, failures: u32) -> StoreResult<OutboxCounts>;
}

/// An error as stored: one line, no control characters, bounded.
pub fn bounded_error(error: &str) -> String {
    error
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_ERROR_LEN)
        .collect()
}

impl SqlStore {
    /// Records an attempt's end and releases the claim, if the row is still
    /// this worker's: a done row forgets its last error; a pending one is
    /// due again at `next_attempt_at`.
    async fn settle(
        &self,
        id: i64,
        worker: &str,
        state: OutboxState,
        error: Option<&str>,
        next_attempt_at: Option<i64>,
    ) -> StoreResult<bool> {
        // A delivered row keeps no secret: its sealed password is erased in
        // the same statement that marks it done.
        let erase = match (state, self.dialect()) {
            (OutboxState::Done, Dialect::Postgres) => {
                ", payload = ((payload::jsonb) - 'sealed')::text"
            }
            (OutboxState::Done, Dialect::Sqlite) => ", payload = json_remove(payload, '$.sealed')",
            _ => "",
        };
        let sql = format!(
            "UPDATE outbox SET state = $3, attempts = attempts + 1, last_error = $4, \
             next_attempt_at = COALESCE($5, next_attempt_at), claimed_by = NULL, claimed_at = NULL, \
             updated_at = $6{erase} WHERE id = $1 AND claimed_by = $2 AND state = 'pending'"
        );
        let done = sqlx::query(&sql)
            .bind(id)
            .bind(worker)
            .bind(state.as_str())
            .bind(error)
            .bind(next_attempt_at)
            .bind(now())
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

const COLUMNS: &str = "id, kind, user_id, payload, state, attempts, next_attempt_at, last_error, claimed_by, \
    created_at, updated_at";

fn row_from(row: &AnyRow) -> StoreResult<OutboxRow> {
    let state: String = row.try_get("state")?;
    let payload: String = row.try_get("payload")?;
    Ok(OutboxRow {
        id: row.try_get("id")?,
        kind: {
            let kind: String = row.try_get("kind")?;
            OutboxKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("outbox kind {kind:?}")))?
        },
        user_id: row.try_get("user_id")?,
        payload: serde_json::from_str(&payload)
            .map_err(|e| StoreError::Corrupt(format!("outbox payload: {e}")))?,
        state: OutboxState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("outbox state {state:?}")))?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_error: row.try_get("last_error")?,
        claimed_by: row.try_get("claimed_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

#[async_trait]
impl OutboxStore for SqlStore {
    async fn enqueue_outbox(&self, write: &QueuedWrite) -> StoreResult<i64> {
        let mut tx = self.begin().await?;
        let id = super::outbox_queue::enqueue_write(&mut tx, write, now()).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn claim_outbox(
        &self,
        worker: &str,
        now: i64,
        stale_before: i64,
        limit: u32,
    ) -> StoreResult<Vec<OutboxRow>> {
        // SKIP LOCKED: a second instance passes over the rows the first is
        // claiming instead of waiting for them (PostgreSQL docs, "The
        // Locking Clause"). SQLite serialises writers, so the plain
        // subquery is safe there.
        let lock = match self.dialect() {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "UPDATE outbox SET claimed_by = $1, claimed_at = $2 \
             WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $2 \
             AND (claimed_at IS NULL OR claimed_at < $3) ORDER BY next_attempt_at, id LIMIT $4{lock}) \
             RETURNING {COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(worker)
            .bind(now)
            .bind(stale_before)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        let mut claimed = rows.iter().map(row_from).collect::<StoreResult<Vec<_>>>()?;
        claimed.sort_by_key(|r| (r.next_attempt_at, r.id));
        Ok(claimed)
    }

    async fn outbox_done(&self, id: i64, worker: &str) -> StoreResult<bool> {
        self.settle(id, worker, OutboxState::Done, None, None).await
    }

    async fn outbox_failed(
        &self,
        id: i64,
        worker: &str,
        error: &str,
        next_attempt_at: i64,
        give_up: bool,
    ) -> StoreResult<bool> {
        let state = if give_up {
            OutboxState::Failed
        } else {
            OutboxState::Pending
        };
        let error = bounded_error(error);
        self.settle(id, worker, state, Some(&error), Some(next_attempt_at))
            .await
    }

    async fn list_outbox(
        &self,
        state: Option<OutboxState>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxRow>> {
        let sql = match state {
            Some(_) => {
                format!("SELECT {COLUMNS} FROM outbox WHERE state = $2 ORDER BY id DESC LIMIT $1")
            }
            None => format!("SELECT {COLUMNS} FROM outbox ORDER BY id DESC LIMIT $1"),
        };
        let mut query = sqlx::query(&sql).bind(i64::from(limit));
        if let Some(state) = state {
            query = query.bind(state.as_str());
        }
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter().map(row_from).collect()
    }

    async fn list_outbox_before(
        &self,
        state: Option<OutboxState>,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxRow>> {
        let filter = match state {
            Some(_) => "state = $3 AND id < $2",
            None => "id < $2",
        };
        let sql = format!("SELECT {COLUMNS} FROM outbox WHERE {filter} ORDER BY id DESC LIMIT $1");
        let mut query = sqlx::query(&sql)
            .bind(i64::from(limit))
            .bind(before.unwrap_or(i64::MAX));
        if let Some(state) = state {
            query = query.bind(state.as_str());
        }
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter().map(row_from).collect()
    }

    async fn get_outbox(&self, id: i64) -> StoreResult<Option<OutboxRow>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM outbox WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(row_from).transpose()
    }

    async fn retry_outbox(&self, target: RetryTarget) -> StoreResult<u64> {
        // The claim is cleared too: a retried row is anyone's to deliver.
        const RESET: &str = "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = $1, \
             claimed_by = NULL, claimed_at = NULL, updated_at = $1";
        let (filter, id) = match target {
            RetryTarget::One(id) => ("id = $2 AND state <> 'done'", Some(id)),
            RetryTarget::AllFailed => ("state = 'failed'", None),
        };
        let sql = format!("{RESET} WHERE {filter}");
        let mut query = sqlx::query(&sql).bind(now());
        if let Some(id) = id {
            query = query.bind(id);
        }
        let done = query.execute(self.pool()).await?;
        Ok(done.rows_affected())
    }

    async fn discard_outbox(&self, id: i64) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM outbox WHERE id = $1 AND state <> 'done'")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn outbox_counts(&self, failures: u32) -> StoreResult<OutboxCounts> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state")
            .fetch_all(self.pool())
            .await?;
        let mut counts = OutboxCounts::default();
        for row in &rows {
            let state: String = row.try_get("state")?;
            let n: i64 = row.try_get("n")?;
            let n = n.max(0) as u64;
            match OutboxState::parse(&state) {
                Some(OutboxState::Pending) => counts.pending = n,
                Some(OutboxState::Failed) => counts.failed = n,
                Some(OutboxState::Done) => counts.done = n,
                None => return Err(StoreError::Corrupt(format!("outbox state {state:?}"))),
            }
        }
        let day_ago = now() - 24 * 3600;
        let rows = sqlx::query(
            "SELECT kind, COUNT(*) AS n FROM outbox WHERE state = 'failed' AND updated_at >= $1 GROUP BY kind",
        )
        .bind(day_ago)
        .fetch_all(self.pool())
        .await?;
        for row in &rows {
            let kind: String = row.try_get("kind")?;
            let kind = OutboxKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("outbox kind {kind:?}")))?;
            let n: i64 = row.try_get("n")?;
            counts.failed_last_day.insert(kind, n.max(0) as u64);
        }
        if counts.failed > 0 && failures > 0 {
            counts.recent_failures = self
                .list_outbox(Some(OutboxState::Failed), failures)
                .await?;
        }
        Ok(counts)
    }
}
