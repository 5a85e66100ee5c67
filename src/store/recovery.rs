//! Recovery tokens and password changes: the records behind "Forgot
//! password", the end-game invitations and a signed-in user's password
//! change.
//!
//! A token is kept only as the SHA-256 of the value its link carries, is
//! bound to one user, and is spent by deleting its row in the transaction
//! that sets the new password, so of two concurrent uses one finds it gone.
//! Issuing a token, or changing the password, deletes the user's other
//! tokens: only the latest link works (OWASP Forgot Password Cheat Sheet).

use async_trait::async_trait;
use sqlx::Row;

use super::outbox_queue::{QueuedWrite, enqueue_write};
use super::sql::{SqlStore, insert_event, user_from_row};
use super::sql_common::{Dialect, upsert_credential};
use super::transition::Transition;
use super::{AuditEvent, StoreError, StoreResult, User, UserState};

/// What a recovery link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Asked for on the Forgot-password page.
    Reset,
    /// Sent by the end-game campaign to a user who never signed in here.
    Invite,
}

text_names!(Purpose {
    Reset => "reset",
    Invite => "invite",
});

/// A live token, as its link's page needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryToken {
    pub user_id: String,
    pub purpose: Purpose,
    /// The pending authorization request the reset continues, if any.
    pub authz: Option<String>,
    pub expires_at: i64,
}

/// A new password to store, and what it owes the upstream.
#[derive(Debug)]
pub struct NewPassword<'a> {
    /// The PHC string.
    pub hash: &'a str,
    pub algorithm: &'a str,
    /// The write-back row queued with it (`write_back` includes passwords).
    pub write: Option<&'a QueuedWrite>,
}

#[async_trait]
pub trait RecoveryStore: Send + Sync {
    /// Stores a token (by its hash) for `user_id`, replacing every other
    /// token of theirs.
    async fn issue_recovery_token(
        &self,
        token_hash: &str,
        user_id: &str,
        purpose: Purpose,
        authz: Option<&str>,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<()>;
    /// The token with this hash, unless spent or expired at `now`.
    async fn recovery_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<RecoveryToken>>;
    /// Spends the token and sets the new password in one transaction: the
    /// credential, the move of a `pending` or `shadow` user to `migrated`
    /// (with their identity and a `migrated_by_reset` event), the
    /// `password_reset` event, the user's other tokens deleted, and the
    /// write-back row, and, when `revoke_sessions`, every session and
    /// refresh token of the user made void. `None` when the token is spent,
    /// expired or its user blocked or gone; nothing is changed then but the
    /// token spent.
    async fn complete_reset(
        &self,
        token_hash: &str,
        password: &NewPassword<'_>,
        event: &AuditEvent,
        revoke_sessions: bool,
    ) -> StoreResult<Option<User>>;
    /// A password change (`/account/password`, `users set-password`): the
    /// credential, the user's tokens deleted, the write-back row and
    /// `event`, in one transaction. False when the user does not exist.
    async fn change_password(
        &self,
        user_id: &str,
        password: &NewPassword<'_>,
        event: &AuditEvent,
    ) -> StoreResult<bool>;
}

#[async_trait]
impl RecoveryStore for SqlStore {
    async fn issue_recovery_token(
        &self,
        token_hash: &str,
        user_id: &str,
        purpose: Purpose,
        authz: Option<&str>,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM recovery_tokens WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO recovery_tokens (token_hash, user_id, purpose, authz, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(purpose.as_str())
        .bind(authz)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn recovery_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<RecoveryToken>> {
        let row = sqlx::query(
            "SELECT user_id, purpose, authz, expires_at FROM recovery_tokens \
             WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            let purpose: String = r.try_get("purpose")?;
            Ok(RecoveryToken {
                user_id: r.try_get("user_id")?,
                purpose: Purpose::parse(&purpose)
                    .ok_or_else(|| StoreError::Corrupt(format!("token purpose {purpose:?}")))?,
                authz: r.try_get("authz")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    async fn complete_reset(
        &self,
        token_hash: &str,
        password: &NewPassword<'_>,
        event: &AuditEvent,
        revoke_sessions: bool,
    ) -> StoreResult<Option<User>> {
        let now = event.at;
        let mut tx = self.begin().await?;
        let user_id: Option<String> = sqlx::query_scalar(
            "DELETE FROM recovery_tokens WHERE token_hash = $1 AND expires_at > $2 RETURNING user_id",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(user_id) = user_id else {
            return Ok(None);
        };
        let lock = match self.dialect() {
            Dialect::Postgres => " FOR UPDATE",
            Dialect::Sqlite => "",
        };
        let row = sqlx::query(&format!(
            "SELECT state, blocked, upstream FROM users WHERE id = $1{lock}"
        ))
        .bind(&user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        if row.try_get::<i64, _>("blocked")? != 0 {
            // The token is spent all the same: a blocked user's link is dead.
            tx.commit().await?;
            return Ok(None);
        }
        let state: String = row.try_get("state")?;
        let state = UserState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("user state {state:?}")))?;
        let upstream: Option<String> = row.try_get("upstream")?;
        let next = UserState::next(Some(state), Transition::PasswordReset);
        if next != state {
            sqlx::query(
                "UPDATE users SET state = $2, migrated_at = $3, route = 'reset', updated_at = $3 WHERE id = $1",
            )
            .bind(&user_id)
            .bind(next.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if let Some(provider) = &upstream {
                sqlx::query(
                    "INSERT INTO identities (provider, subject, user_id, created_at) VALUES ($1, $2, $2, $3) \
                     ON CONFLICT (provider, subject) DO NOTHING",
                )
                .bind(provider)
                .bind(&user_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            let mut migrated = event.clone();
            migrated.kind = "migrated_by_reset".into();
            migrated.user_id = Some(user_id.clone());
            migrated.detail = serde_json::json!({ "from": state.as_str() });
            insert_event(&mut *tx, &migrated).await?;
        }
        store_password(&mut tx, &user_id, password, now).await?;
        if revoke_sessions {
            sqlx::query("UPDATE users SET sessions_valid_after = $2 WHERE id = $1")
                .bind(&user_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        let mut reset = event.clone();
        reset.user_id = Some(user_id.clone());
        insert_event(&mut *tx, &reset).await?;
        let user = sqlx::query(&format!(
            "SELECT {} FROM users WHERE id = $1",
            super::sql::USER_COLUMNS
        ))
        .bind(&user_id)
        .fetch_one(&mut *tx)
        .await?;
        let user = user_from_row(&user)?;
        tx.commit().await?;
        Ok(Some(user))
    }

    async fn change_password(
        &self,
        user_id: &str,
        password: &NewPassword<'_>,
        event: &AuditEvent,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        if !store_password(&mut tx, user_id, password, event.at).await? {
            return Ok(false);
        }
        insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// The credential, the user's tokens dropped, and the write-back row;
/// false (and nothing written) when there is no such user.
async fn store_password(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user_id: &str,
    password: &NewPassword<'_>,
    now: i64,
) -> StoreResult<bool> {
    if !upsert_credential(tx, user_id, password.hash, password.algorithm, now).await? {
        return Ok(false);
    }
    sqlx::query("DELETE FROM recovery_tokens WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    if let Some(write) = password.write {
        enqueue_write(tx, write, now).await?;
    }
    Ok(true)
}
