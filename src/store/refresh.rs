//! Refresh-token families and the sealed upstream tokens of gateway
//! sessions, durable in SQL.
//!
//! The database is the authority; the session store (Redis or in-process)
//! is a read-through cache of what does not change (the grant) and of
//! revocations, so losing it logs nobody out. What decides is always here:
//! a rotation is one conditional `UPDATE … WHERE current_hash = $old AND
//! revoked = 0`, so of two instances spending one token exactly one sees
//! its row updated, whatever the cache says. Only hashes of refresh tokens
//! are stored (RFC 6819 §5.1.4.1.3); a successor kept for an idempotent
//! retry and the upstream tokens are sealed by the layer above, under keys
//! the database does not hold.

use async_trait::async_trait;
use sqlx::Row;

use super::sql::SqlStore;
use super::{StoreError, StoreResult};

/// A family as stored. `record` is the grant as the token layer
/// serialises it: the store does not read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub grant_id: String,
    pub sid: String,
    pub user_id: String,
    pub client_id: String,
    pub record: String,
    /// SHA-256 of the secret every refresh token of the family carries.
    pub tag_hash: Option<String>,
    /// SHA-256 of the live refresh token; `None` until the first is issued.
    pub current_hash: Option<String>,
    /// SHA-256 of the token spent by the last rotation.
    pub previous_hash: Option<String>,
    pub rotated_at: Option<i64>,
    /// The token that replaced `previous_hash`, sealed.
    pub successor: Option<String>,
    pub revoked: bool,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A rotation to commit: the presented token (by hash) is spent and the
/// new one becomes the family's live token.
#[derive(Debug, Clone, Copy)]
pub struct Rotation<'a> {
    pub grant_id: &'a str,
    pub spent_hash: &'a str,
    pub new_hash: &'a str,
    pub sealed_successor: &'a str,
    pub now: i64,
    /// When the grant's user authenticated: the rotation happens only if
    /// the user still accepts it (not blocked, no reset since), checked in
    /// the same statement so no copy of the user can let a token through.
    pub auth_time: i64,
}

#[async_trait]
pub trait RefreshStore: Send + Sync {
    /// Stores a new family (no token yet); a second call for the same
    /// grant changes nothing.
    async fn create_family(&self, family: &Family) -> StoreResult<()>;
    async fn family(&self, grant_id: &str) -> StoreResult<Option<Family>>;
    /// Sets the first token of a family that has none, and the hash of the
    /// tag its tokens carry: false when it already has one or is revoked.
    async fn set_first_token(
        &self,
        grant_id: &str,
        hash: &str,
        tag_hash: &str,
    ) -> StoreResult<bool>;
    /// The rotation claim: true when this call spent the token, false when
    /// it was not the family's live token (spent already, or revoked), or
    /// its user no longer accepts the grant's login (blocked, deleted, or
    /// a password reset since `auth_time`).
    async fn rotate(&self, rotation: &Rotation<'_>) -> StoreResult<bool>;
    /// Revokes a family; true when it was live.
    async fn revoke_family(&self, grant_id: &str) -> StoreResult<bool>;
    /// Revokes every live family of a session; the grants revoked.
    async fn revoke_session_families(&self, sid: &str) -> StoreResult<Vec<String>>;
    /// The sealed upstream tokens of a session, unless expired at `now`.
    async fn upstream_tokens(&self, sid: &str, now: i64) -> StoreResult<Option<String>>;
    async fn save_upstream_tokens(
        &self,
        sid: &str,
        sealed: &str,
        expires_at: i64,
    ) -> StoreResult<()>;
    async fn delete_upstream_tokens(&self, sid: &str) -> StoreResult<()>;
    /// Deletes the families and upstream tokens that expired before `now`
    /// (nothing reads them again: an expired family refuses every token);
    /// the rows deleted.
    async fn purge_expired(&self, now: i64) -> StoreResult<u64>;
}

const FAMILY_COLUMNS: &str = "grant_id, sid, user_id, client_id, record, tag_hash, current_hash, previous_hash, \
    rotated_at, successor, revoked, created_at, expires_at";

fn family_from_row(r: &sqlx::any::AnyRow) -> Result<Family, StoreError> {
    Ok(Family {
        grant_id: r.try_get("grant_id")?,
        sid: r.try_get("sid")?,
        user_id: r.try_get("user_id")?,
        client_id: r.try_get("client_id")?,
        record: r.try_get("record")?,
        tag_hash: r.try_get("tag_hash")?,
        current_hash: r.try_get("current_hash")?,
        previous_hash: r.try_get("previous_hash")?,
        rotated_at: r.try_get("rotated_at")?,
        successor: r.try_get("successor")?,
        revoked: r.try_get::<i64, _>("revoked")? != 0,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
    })
}

#[async_trait]
impl RefreshStore for SqlStore {
    async fn create_family(&self, f: &Family) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO refresh_families ({FAMILY_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (grant_id) DO NOTHING"
        ))
        .bind(&f.grant_id)
        .bind(&f.sid)
        .bind(&f.user_id)
        .bind(&f.client_id)
        .bind(&f.record)
        .bind(&f.tag_hash)
        .bind(&f.current_hash)
        .bind(&f.previous_hash)
        .bind(f.rotated_at)
        .bind(&f.successor)
        .bind(i64::from(f.revoked))
        .bind(f.created_at)
        .bind(f.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn family(&self, grant_id: &str) -> StoreResult<Option<Family>> {
        sqlx::query(&format!(
            "SELECT {FAMILY_COLUMNS} FROM refresh_families WHERE grant_id = $1"
        ))
        .bind(grant_id)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(family_from_row)
        .transpose()
    }

    async fn set_first_token(
        &self,
        grant_id: &str,
        hash: &str,
        tag_hash: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE refresh_families SET current_hash = $2, tag_hash = $3 \
             WHERE grant_id = $1 AND current_hash IS NULL AND revoked = 0",
        )
        .bind(grant_id)
        .bind(hash)
        .bind(tag_hash)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn rotate(&self, r: &Rotation<'_>) -> StoreResult<bool> {
        // One statement: the claim and the new token commit together, so
        // the token is spent only if its successor is stored; and only if
        // the user's row still accepts the login (`User::accepts_auth_time`),
        // so blocking a user ends their refresh tokens at once on every
        // instance, whatever copy of the user the request was served from.
        let done = sqlx::query(
            "UPDATE refresh_families SET current_hash = $3, previous_hash = $2, \
             rotated_at = $5, successor = $4 \
             WHERE grant_id = $1 AND current_hash = $2 AND revoked = 0 AND expires_at > $5 \
             AND EXISTS (SELECT 1 FROM users WHERE users.id = refresh_families.user_id \
             AND users.blocked = 0 \
             AND (users.sessions_valid_after IS NULL OR users.sessions_valid_after <= $6))",
        )
        .bind(r.grant_id)
        .bind(r.spent_hash)
        .bind(r.new_hash)
        .bind(r.sealed_successor)
        .bind(r.now)
        .bind(r.auth_time)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_family(&self, grant_id: &str) -> StoreResult<bool> {
        // The token hashes and the sealed successor go too: a revoked
        // family needs none of them.
        let done = sqlx::query(
            "UPDATE refresh_families SET revoked = 1, successor = NULL \
             WHERE grant_id = $1 AND revoked = 0",
        )
        .bind(grant_id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_session_families(&self, sid: &str) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "UPDATE refresh_families SET revoked = 1, successor = NULL \
             WHERE sid = $1 AND revoked = 0 RETURNING grant_id",
        )
        .bind(sid)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| r.try_get("grant_id").map_err(StoreError::from))
            .collect()
    }

    async fn upstream_tokens(&self, sid: &str, now: i64) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT sealed FROM upstream_session_tokens WHERE sid = $1 AND expires_at > $2",
        )
        .bind(sid)
        .bind(now)
        .fetch_optional(self.pool())
        .await?)
    }

    async fn save_upstream_tokens(
        &self,
        sid: &str,
        sealed: &str,
        expires_at: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO upstream_session_tokens (sid, sealed, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (sid) DO UPDATE SET sealed = excluded.sealed, expires_at = excluded.expires_at",
        )
        .bind(sid)
        .bind(sealed)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn delete_upstream_tokens(&self, sid: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM upstream_session_tokens WHERE sid = $1")
            .bind(sid)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn purge_expired(&self, now: i64) -> StoreResult<u64> {
        let mut deleted = 0;
        for table in ["refresh_families", "upstream_session_tokens"] {
            deleted += sqlx::query(&format!("DELETE FROM {table} WHERE expires_at < $1"))
                .bind(now)
                .execute(self.pool())
                .await?
                .rows_affected();
        }
        Ok(deleted)
    }
}
