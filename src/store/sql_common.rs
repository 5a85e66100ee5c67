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
            sqlx::Error::Database(db) if db.code().is_some_and(|c| not_there_now(&c)) => {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

/// Whether a PostgreSQL SQLSTATE (PostgreSQL manual, Appendix A "Error
/// Codes") says the database is not there right now rather than that the
/// request was wrong: class 08 (connection exception), 53300
/// too_many_connections, 55000 object_not_in_prerequisite_state (what a
/// database with `ALLOW_CONNECTIONS false` answers a new connection),
/// 57P01 admin_shutdown (a terminated backend), 57P02 crash_shutdown and
/// 57P03 cannot_connect_now (starting up, or a standby being promoted).
/// A client can retry these later, so they are 503, never 500. SQLite has
/// no such states: its codes are numbers, none of which match.
pub(crate) fn not_there_now(sqlstate: &str) -> bool {
    sqlstate.starts_with("08")
        || matches!(sqlstate, "53300" | "55000" | "57P01" | "57P02" | "57P03")
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

#[cfg(test)]
mod tests {
    use super::not_there_now;

    #[test]
    fn the_states_of_a_database_that_is_not_there_now() {
        // Forced end to end in `store_faults`: 55000, 57P01, 53300. The
        // others cannot be forced on a running test server.
        for code in [
            "55000", "57P01", "57P02", "57P03", "53300", "08000", "08003", "08006", "08001",
            "08004",
        ] {
            assert!(not_there_now(code), "{code}");
        }
        // A wrong request, a constraint, a missing table, a lock timeout,
        // SQLite's busy: not an outage of the database.
        for code in ["23505", "42P01", "22P02", "55P03", "40001", "5", "517"] {
            assert!(!not_there_now(code), "{code}");
        }
    }
}
