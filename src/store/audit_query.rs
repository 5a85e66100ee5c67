//! Reading the audit trail back, filtered and paged: the operators' trail
//! (`/admin/audit`, `GET /admin/api/v1/audit`).

use async_trait::async_trait;
use serde::Serialize;
use sqlx::Row;

use super::sql::SqlStore;
use super::{AuditEvent, StoreResult};

/// The most events one page holds.
pub const MAX_PAGE: u32 = 200;

/// An event as stored, with its id: ids grow with every event, so the
/// oldest id of a page is the cursor of the next (`before`).
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    pub id: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// Which events to list; every filter that is set must hold.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// The operator, as the `actor` column spells it (`user:<id>`,
    /// `client:<id>`, `cli`).
    pub actor: Option<String>,
    /// A prefix of the kind: `admin.` for every operator's change.
    pub kind_prefix: Option<String>,
    /// The user the event is about.
    pub user_id: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, exclusive.
    pub until: Option<i64>,
    /// Only events older than this id (the previous page's last).
    pub before: Option<i64>,
    /// At most this many, capped at [`MAX_PAGE`].
    pub limit: u32,
}

#[async_trait]
pub trait AuditQuery: Send + Sync {
    /// The events `filter` selects, newest first.
    async fn query_events(&self, filter: &AuditFilter) -> StoreResult<Vec<StoredEvent>>;
}

/// `LIKE` treats `%` and `_` as wildcards: a kind prefix is matched as
/// typed, so they are escaped (with `\`, named by `ESCAPE` on both
/// backends).
fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[async_trait]
impl AuditQuery for SqlStore {
    async fn query_events(&self, filter: &AuditFilter) -> StoreResult<Vec<StoredEvent>> {
        // Built from fixed fragments only; every value is a bind.
        enum Bind {
            Text(String),
            Int(i64),
        }
        let mut clauses: Vec<String> = Vec::new();
        let mut binds: Vec<Bind> = Vec::new();
        let mut push = |clause: &str, bind: Bind, binds: &mut Vec<Bind>| {
            binds.push(bind);
            clauses.push(clause.replace('?', &format!("${}", binds.len())));
        };
        if let Some(actor) = &filter.actor {
            push("actor = ?", Bind::Text(actor.clone()), &mut binds);
        }
        if let Some(prefix) = &filter.kind_prefix {
            push(
                "kind LIKE ? ESCAPE '\\'",
                Bind::Text(like_prefix(prefix)),
                &mut binds,
            );
        }
        if let Some(user) = &filter.user_id {
            push("user_id = ?", Bind::Text(user.clone()), &mut binds);
        }
        if let Some(since) = filter.since {
            push("at >= ?", Bind::Int(since), &mut binds);
        }
        if let Some(until) = filter.until {
            push("at < ?", Bind::Int(until), &mut binds);
        }
        if let Some(before) = filter.before {
            push("id < ?", Bind::Int(before), &mut binds);
        }
        let limit = filter.limit.clamp(1, MAX_PAGE) as i64;
        binds.push(Bind::Int(limit));
        let sql = format!(
            "SELECT id, at, kind, user_id, client_id, ip, detail, actor FROM audit_events{}{} \
             ORDER BY id DESC LIMIT ${}",
            if clauses.is_empty() { "" } else { " WHERE " },
            clauses.join(" AND "),
            binds.len()
        );
        let mut query = sqlx::query(&sql);
        for b in binds {
            query = match b {
                Bind::Text(s) => query.bind(s),
                Bind::Int(i) => query.bind(i),
            };
        }
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| {
                Ok(StoredEvent {
                    id: r.try_get("id")?,
                    event: super::sql::event_from_row(r)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::like_prefix;

    #[test]
    fn kind_prefixes_match_as_typed() {
        assert_eq!(like_prefix("admin."), "admin.%");
        assert_eq!(like_prefix("a_b%"), "a\\_b\\%%");
    }
}
