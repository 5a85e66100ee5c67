//! What the Management API (`/api/v2/`) reads and writes beyond the other
//! user stores: users filtered, sorted and paged as Auth0's user search
//! answers them, and a user deleted with what it owes the upstream.

use async_trait::async_trait;
use sqlx::Row;

use super::outbox_queue::{QueuedWrite, enqueue_write};
use super::sql::{
    SqlStore, USER_COLUMNS, delete_user_rows, insert_event, normalize_email, user_from_row,
};
use super::{AuditEvent, StoreResult, User};

/// One condition of a search; all of a query's must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The email, compared case-insensitively.
    Email(String),
    UserId(String),
    /// `created_at` within bounds (epoch seconds; `true` when inclusive).
    Created(Bound, Bound),
    Updated(Bound, Bound),
}

/// One end of a range: none is open.
pub type Bound = Option<(i64, bool)>;

/// What a search is ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortField {
    UserId,
    Email,
    CreatedAt,
    UpdatedAt,
    LastLogin,
}

impl SortField {
    fn column(self) -> &'static str {
        match self {
            SortField::UserId => "id",
            SortField::Email => "email_normalized",
            SortField::CreatedAt => "created_at",
            SortField::UpdatedAt => "updated_at",
            SortField::LastLogin => "last_login_at",
        }
    }
}

/// A search: conditions, order, and the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserQuery {
    pub conditions: Vec<Condition>,
    /// The field and whether descending; by id when absent.
    pub sort: Option<(SortField, bool)>,
    pub offset: u64,
    pub limit: u32,
    /// Count every match too.
    pub total: bool,
}

#[async_trait]
pub trait ApiUsers: Send + Sync {
    /// One page of the users matching the query, and how many match in
    /// all when asked.
    async fn query_users(&self, q: &UserQuery) -> StoreResult<(Vec<User>, Option<u64>)>;
    /// Deletes the user (and its credentials, identities, refresh-token
    /// families and recovery links) with the write it owes the upstream
    /// and `event`, in one transaction; false when there was no such user.
    async fn remove_user(
        &self,
        id: &str,
        write: Option<&QueuedWrite>,
        event: &AuditEvent,
    ) -> StoreResult<bool>;
}

/// The WHERE clause and its values, numbered from `$1`.
fn filter(conditions: &[Condition]) -> (String, Vec<Value>) {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    let mut push = |clauses: &mut Vec<String>, sql: String, v: Value| {
        values.push(v);
        clauses.push(sql.replace('?', &format!("${}", values.len())));
    };
    for c in conditions {
        match c {
            Condition::Email(e) => push(
                &mut clauses,
                "email_normalized = ?".into(),
                Value::Text(normalize_email(e)),
            ),
            Condition::UserId(id) => push(&mut clauses, "id = ?".into(), Value::Text(id.clone())),
            Condition::Created(low, high) | Condition::Updated(low, high) => {
                let column = if matches!(c, Condition::Created(..)) {
                    "created_at"
                } else {
                    "updated_at"
                };
                if let Some((t, inclusive)) = low {
                    let op = if *inclusive { ">=" } else { ">" };
                    push(&mut clauses, format!("{column} {op} ?"), Value::Int(*t));
                }
                if let Some((t, inclusive)) = high {
                    let op = if *inclusive { "<=" } else { "<" };
                    push(&mut clauses, format!("{column} {op} ?"), Value::Int(*t));
                }
            }
        }
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    (sql, values)
}

enum Value {
    Text(String),
    Int(i64),
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    values: &'q [Value],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for v in values {
        query = match v {
            Value::Text(s) => query.bind(s.as_str()),
            Value::Int(i) => query.bind(*i),
        };
    }
    query
}

#[async_trait]
impl ApiUsers for SqlStore {
    async fn query_users(&self, q: &UserQuery) -> StoreResult<(Vec<User>, Option<u64>)> {
        let (filter, values) = filter(&q.conditions);
        let order = match q.sort {
            None => "id".to_string(),
            // Users without the field (no login yet) last either way, as
            // Auth0 lists them; the id breaks ties so pages never overlap.
            Some((field, descending)) => {
                let column = field.column();
                let dir = if descending { "DESC" } else { "ASC" };
                format!("{column} IS NULL, {column} {dir}, id")
            }
        };
        let n = values.len();
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users{filter} ORDER BY {order} LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let rows = bind_all(sqlx::query(&sql), &values)
            .bind(i64::from(q.limit))
            .bind(q.offset as i64)
            .fetch_all(self.pool())
            .await?;
        let users = rows
            .iter()
            .map(user_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let total = if q.total {
            let sql = format!("SELECT COUNT(*) AS n FROM users{filter}");
            let row = bind_all(sqlx::query(&sql), &values)
                .fetch_one(self.pool())
                .await?;
            Some(row.try_get::<i64, _>("n")? as u64)
        } else {
            None
        };
        Ok((users, total))
    }

    async fn remove_user(
        &self,
        id: &str,
        write: Option<&QueuedWrite>,
        event: &AuditEvent,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        if !delete_user_rows(&mut tx, id).await? {
            return Ok(false);
        }
        if let Some(write) = write {
            enqueue_write(&mut tx, write, event.at).await?;
        }
        insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_number_their_values_in_order() {
        let (sql, values) = filter(&[
            Condition::Email("Ada@Example.com".into()),
            Condition::Created(Some((10, true)), Some((20, false))),
        ]);
        assert_eq!(
            sql,
            " WHERE email_normalized = $1 AND created_at >= $2 AND created_at < $3"
        );
        assert_eq!(values.len(), 3);
        assert!(matches!(&values[0], Value::Text(e) if e == "ada@example.com"));
        assert_eq!(filter(&[]).0, "");
    }
}
