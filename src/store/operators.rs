//! Operators: the users with the `admin` role, who may sign in to the
//! dashboard (`switchyard users grant-admin`, `[admin] operators`).

use async_trait::async_trait;
use sqlx::Row;

use super::StoreResult;
use super::sql::SqlStore;

#[async_trait]
pub trait OperatorStore: Send + Sync {
    /// Gives `user_id` the admin role; false when the user does not exist
    /// (true when they already had it).
    async fn grant_operator(&self, user_id: &str, at: i64) -> StoreResult<bool>;
    /// Takes the role away; false when the user did not have it.
    async fn revoke_operator(&self, user_id: &str) -> StoreResult<bool>;
    async fn is_operator(&self, user_id: &str) -> StoreResult<bool>;
    /// The operators' user ids, in id order.
    async fn list_operators(&self) -> StoreResult<Vec<String>>;
}

#[async_trait]
impl OperatorStore for SqlStore {
    async fn grant_operator(&self, user_id: &str, at: i64) -> StoreResult<bool> {
        // Only an existing user can be granted: the insert selects the row.
        let done = sqlx::query(
            "INSERT INTO operators (user_id, granted_at) SELECT id, $2 FROM users WHERE id = $1 \
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(at)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0 || self.is_operator(user_id).await?)
    }

    async fn revoke_operator(&self, user_id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM operators WHERE user_id = $1")
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn is_operator(&self, user_id: &str) -> StoreResult<bool> {
        Ok(sqlx::query("SELECT 1 FROM operators WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?
            .is_some())
    }

    async fn list_operators(&self) -> StoreResult<Vec<String>> {
        let rows = sqlx::query("SELECT user_id FROM operators ORDER BY user_id")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| r.try_get("user_id").map_err(Into::into))
            .collect()
    }
}
