//! What every SQL module of the store shares, below all of them: which
//! database is behind the pool, how sqlx errors become store errors (`From`, so `?` converts), and
//! how JSON goes into a TEXT column. The store's SQL modules (the main
//! store, jobs, the outbox, COPY) sit on top of it, so none of them has to
//! reach into another for these.

use super::{Profile, StoreError, StoreResult};

/// Which database sits behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Every sqlx error becomes a store error by `?`, classified once, here:
/// unique violations become [`StoreError::Conflict`] naming the field (the
/// one place constraint names become client errors), a pool or socket
/// failure [`StoreError::Unavailable`] (so the edges answer 503 rather than
/// 500), anything else [`StoreError::Backend`]. The text kept in the latter
/// two is for the log only: the edges (`error.rs`) never show it.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                let m = db.message().to_string() + db.constraint().unwrap_or("");
                if m.contains("email") {
                    StoreError::Conflict("email")
                } else if m.contains("username") {
                    StoreError::Conflict("username")
                } else if m.contains("client") {
                    StoreError::Conflict("client_id")
                } else if m.contains("kid") || m.contains("signing_keys") {
                    StoreError::Conflict("kid")
                } else {
                    StoreError::Conflict("id")
                }
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

/// The profile columns of a `users` row, which every query reading users
/// selects under their own names.
pub(crate) fn profile_from_row(row: &sqlx::any::AnyRow) -> Result<Profile, StoreError> {
    use sqlx::Row;
    Ok(Profile {
        email: row.try_get("email")?,
        email_verified: row.try_get::<i64, _>("email_verified")? != 0,
        username: row.try_get("username")?,
        name: row.try_get("name")?,
        given_name: row.try_get("given_name")?,
        family_name: row.try_get("family_name")?,
        nickname: row.try_get("nickname")?,
        picture: row.try_get("picture")?,
        phone_number: row.try_get("phone_number")?,
    })
}

/// A value as the JSON text a TEXT column holds.
pub(crate) fn to_json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Replaces the user's password credential (and marks the user changed
/// here); false when there is no such user. Recovery tokens are left
/// alone: a rehash at login is not a password change.
pub(crate) async fn upsert_credential(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user_id: &str,
    hash: &str,
    algorithm: &str,
    now: i64,
) -> StoreResult<bool> {
    let exists =
        sqlx::query("UPDATE users SET updated_at = $2, local_updated_at = $2 WHERE id = $1")
            .bind(user_id)
            .bind(now)
            .execute(&mut **tx)
            .await?
            .rows_affected()
            > 0;
    if exists {
        sqlx::query(
            "INSERT INTO credentials (user_id, kind, hash, algorithm, created_at, updated_at) \
             VALUES ($1, 'password', $2, $3, $4, $4) \
             ON CONFLICT (user_id, kind) DO UPDATE SET hash = excluded.hash, algorithm = excluded.algorithm, \
             updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(hash)
        .bind(algorithm)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(exists)
}
