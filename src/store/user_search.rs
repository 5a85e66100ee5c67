//! What the operators' user pages and the cutover preview read: search,
//! a user's identities and recent logins, the pinned users, and users in
//! pages with what routing needs to know of them.

use async_trait::async_trait;
use serde::Serialize;
use sqlx::Row;

use super::sql::{SqlStore, USER_COLUMNS, normalize_email, user_from_row};
use super::{AuditEvent, StoreResult, User};

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
    /// local password: what [`crate::cutover::decide`] needs of them.
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
             WHERE user_id = $1 AND kind = 'login' ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(user_id)
        .bind(i64::from(limit.clamp(1, MAX_PAGE)))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let detail: String = r.try_get("detail")?;
                Ok(AuditEvent {
                    at: r.try_get("at")?,
                    kind: r.try_get("kind")?,
                    user_id: r.try_get("user_id")?,
                    client_id: r.try_get("client_id")?,
                    ip: r.try_get("ip")?,
                    detail: serde_json::from_str(&detail).unwrap_or_default(),
                    actor: r.try_get("actor")?,
                })
            })
            .collect()
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
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, CAST(CASE WHEN EXISTS (SELECT 1 FROM credentials c \
             WHERE c.user_id = users.id AND c.kind = 'password') THEN 1 ELSE 0 END AS BIGINT) \
             AS has_password FROM users WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let has: i64 = r.try_get("has_password")?;
                Ok((user_from_row(r)?, has != 0))
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
