//! Queueing an outbox write inside another transaction: the one half of
//! the outbox the SQL store itself needs (a login that migrates a user owes
//! the upstream a mark, committed with the migration). It sits below both
//! the SQL store and the outbox's own store ([`super::outbox`]), which
//! delivers and manages the rows.

use serde_json::Value;
use sqlx::{Any, Transaction};

use super::StoreResult;
use super::sql_common::to_json;

/// Marks the user at the upstream as migrated (`[upstream.management]
/// mark_migrated`).
pub const MARK_MIGRATED: &str = "mark_migrated";

/// Queues a write inside the caller's transaction.
pub(crate) async fn enqueue(
    tx: &mut Transaction<'_, Any>,
    kind: &str,
    user_id: &str,
    payload: &Value,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO outbox (kind, user_id, payload, state, attempts, next_attempt_at, created_at, updated_at) \
         VALUES ($1, $2, $3, 'pending', 0, $4, $4, $4)",
    )
    .bind(kind)
    .bind(user_id)
    .bind(to_json(payload))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
