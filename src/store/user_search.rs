//! What the operators' user pages and the cutover preview read: search,
//! a user's identities and recent logins, the pinned users, and users in
//! pages with what routing needs to know of them.

use async_trait::async_trait;
use serde::Serialize;
use sqlx::Row;

use super::sql::{SqlStore, USER_COLUMNS, normalize_email, user_from_row};
use super::{AuditEvent, Profile, StoreError, StoreResult, User, UserState};

/// The most rows one call returns.
pub const MAX_PAGE: u32 = 100;

/// A user's identity at a provider (an upstream account, a social login).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityRecord {
    pub provider: String,
    pub subject: String,
    pub created_at: i64,
}

#[async_trait]
pub trait UserSearch: Send + Sync {
    /// Users matching `q` in id order after `after`: the user with that id
    /// or username, and users whose email starts with `q` (case-insensitive).
    /// An empty `q` lists every user.
    async fn search_users(
        &self,
        q: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<User>>;
    async fn user_identities(&self, user_id: &str) -> StoreResult<Vec<IdentityRecord>>;
    /// The user's latest `login` audit events, newest first.
    async fn recent_logins(&self, user_id: &str, limit: u32) -> StoreResult<Vec<AuditEvent>>;
    /// Pinned users in id order.
    async fn pinned_users(&self, limit: u32) -> StoreResult<Vec<User>>;
    /// Users in id order after `after`, each with whether they have a
    /// local password: what [`crate::cutover::decide`] needs of them, and
    /// only that (id, email, username, state, upstream, pin; the other
    /// fields are left empty).
    async fn routing_page(&self, after: Option<&str>, limit: u32)
    -> StoreResult<Vec<(User, bool)>>;
}

/// `q` as a LIKE prefix pattern, its wildcards escaped with `!`.
fn prefix_pattern(q: &str) -> String {
    let mut out = String::with_capacity(q.len() + 1);
    for c in normalize_email(q).chars() {
        if matches!(c, '%' | '_' | '!') {
            out.push('!');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[async_trait]
impl UserSearch for SqlStore {
    async fn search_users(
        &self,
        q: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<User>> {
        let q = q.trim();
        let limit = i64::from(limit.clamp(1, MAX_PAGE));
        let rows = if q.is_empty() {
            sqlx::query(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2"
            ))
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(self.pool())
            .await?
        } else {
            sqlx::query(&format!(
                "SELECT {USER_COLUMNS} FROM users \
                 WHERE (id = $1 OR username = $1 OR email_normalized LIKE $2 ESCAPE '!') \
                 AND id > $3 ORDER BY id LIMIT $4"
            ))
            .bind(q)
            .bind(prefix_pattern(q))
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(self.pool())
            .await?
        };
        rows.iter().map(user_from_row).collect()
    }

    async fn user_identities(&self, user_id: &str) -> StoreResult<Vec<IdentityRecord>> {
        let rows = sqlx::query(
            "SELECT provider, subject, created_at FROM identities WHERE user_id = $1 \
             ORDER BY provider, subject",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(IdentityRecord {
                    provider: r.try_get("provider")?,
                    subject: r.try_get("subject")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn recent_logins(&self, user_id: &str, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT at, kind, user_id, client_id, ip, detail, actor FROM audit_events \
             WHERE user_id = $1 AND kind = 'login' ORDER BY id DESC LIMIT $2",
        )
        .bind(user_id)
        .bind(i64::from(limit.clamp(1, MAX_PAGE)))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(super::sql::event_from_row).collect()
    }

    async fn pinned_users(&self, limit: u32) -> StoreResult<Vec<User>> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE pin IS NOT NULL ORDER BY id LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn routing_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<(User, bool)>> {
        // Only the columns routing reads: decoding the JSON columns of a
        // whole user would triple the time of a pass over a large store.
        let rows = sqlx::query(
            // At most one password row per user: (user_id, kind) is the key.
            "SELECT u.id, u.email, u.username, u.state, u.upstream, u.pin, \
             CAST(CASE WHEN c.user_id IS NULL THEN 0 ELSE 1 END AS BIGINT) AS has_password \
             FROM users u LEFT JOIN credentials c ON c.user_id = u.id AND c.kind = 'password' \
             WHERE u.id > $1 ORDER BY u.id LIMIT $2",
        )
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                let has: i64 = r.try_get("has_password")?;
                let user = User {
                    id: r.try_get("id")?,
                    profile: Profile {
                        email: r.try_get("email")?,
                        username: r.try_get("username")?,
                        ..Profile::default()
                    },
                    user_metadata: serde_json::Value::Null,
                    app_metadata: serde_json::Value::Null,
                    state: UserState::parse(&state)
                        .ok_or_else(|| StoreError::Corrupt(format!("user state {state:?}")))?,
                    blocked: false,
                    upstream: r.try_get("upstream")?,
                    pin: r.try_get("pin")?,
                    route: None,
                    migrated_at: None,
                    claims: serde_json::Value::Null,
                    created_at: 0,
                    updated_at: 0,
                    last_login_at: None,
                    sessions_valid_after: None,
                    logins_count: 0,
                };
                Ok((user, has != 0))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_prefix_pattern_escapes_like_wildcards() {
        assert_eq!(super::prefix_pattern("A_b%c!"), "a!_b!%c!!%");
    }
}
