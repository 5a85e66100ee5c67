//! Queueing an outbox row inside another transaction: the one half of the
//! outbox the SQL store itself needs (a login that migrates a user owes the
//! upstream a mark, a password change owes it the new password, a reset
//! request owes the user an email, each committed with the change that
//! caused it). It sits below both the SQL store and the outbox's own store
//! ([`super::outbox`]), which delivers and manages the rows.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Any, Row, Transaction};

use super::StoreResult;
use super::sql_common::to_json;

/// What an outbox row delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxKind {
    /// Marks the user at the upstream as migrated (`[upstream.management]
    /// mark_migrated`).
    MarkMigrated,
    /// An email to the user (a reset link, an invitation).
    Email,
    /// The user's new password, written to the upstream (`write_back`).
    WritePassword,
    /// Profile fields changed here, written to the upstream.
    WriteProfile,
    /// The user was blocked or unblocked here.
    WriteBlocked,
    /// The user was deleted here (through the Management API).
    WriteDelete,
}

text_names!(OutboxKind {
    MarkMigrated => "mark_migrated",
    Email => "email",
    WritePassword => "write_password",
    WriteProfile => "write_profile",
    WriteBlocked => "write_blocked",
    WriteDelete => "write_delete",
});

/// Seals a secret into a row once the row's id is known: the id is the
/// sealing's associated data, so a sealed value copied into another row
/// does not open there.
pub trait SealSecret: Send + Sync {
    /// The sealed form stored at `payload.sealed`.
    fn seal(&self, row_id: i64) -> Value;
}

/// A row to queue with a local change, in its transaction.
pub struct QueuedWrite {
    pub kind: OutboxKind,
    pub user_id: String,
    /// Plain data; never a secret.
    pub payload: Value,
    /// A secret (a new password) the row carries sealed, if any.
    pub secret: Option<Box<dyn SealSecret>>,
}

impl std::fmt::Debug for QueuedWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedWrite")
            .field("kind", &self.kind)
            .field("user_id", &self.user_id)
            .field("payload", &self.payload)
            .field("secret", &self.secret.as_ref().map(|_| "sealed"))
            .finish()
    }
}

/// Queues a row inside the caller's transaction; returns its id.
pub(crate) async fn enqueue(
    tx: &mut Transaction<'_, Any>,
    kind: OutboxKind,
    user_id: &str,
    payload: &Value,
    now: i64,
) -> StoreResult<i64> {
    let row = sqlx::query(
        "INSERT INTO outbox (kind, user_id, payload, state, attempts, next_attempt_at, created_at, updated_at) \
         VALUES ($1, $2, $3, 'pending', 0, $4, $4, $4) RETURNING id",
    )
    .bind(kind.as_str())
    .bind(user_id)
    .bind(to_json(payload))
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get::<i64, _>(0)?)
}

/// Queues `write` inside the caller's transaction, sealing its secret with
/// the new row's id.
pub(crate) async fn enqueue_write(
    tx: &mut Transaction<'_, Any>,
    write: &QueuedWrite,
    now: i64,
) -> StoreResult<i64> {
    let id = enqueue(tx, write.kind, &write.user_id, &write.payload, now).await?;
    if let Some(secret) = &write.secret {
        let mut payload = write.payload.clone();
        if let Value::Object(map) = &mut payload {
            map.insert("sealed".into(), secret.seal(id));
        }
        sqlx::query("UPDATE outbox SET payload = $1 WHERE id = $2")
            .bind(to_json(&payload))
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(id)
}
