//! Users as the jobs read them ([`LocalUser`], for backfill and verify to
//! compare with a source) and profile edits made in Switchyard
//! (`users update`), which a later backfill must leave alone.

use std::collections::HashMap;
use std::sync::LazyLock;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::outbox_queue::{QueuedWrite, enqueue_write};
use super::record::Record;
use super::sql::{
    BY_LOGIN, RECORD_LOGIN, SqlStore, USER_COLUMNS, insert_event, normalize_email, user_from_row,
};
use super::sql_common::{Dialect, profile_from_row, to_json};
use super::{AuditEvent, StoreError, StoreResult, User, UserState, now};

#[async_trait]
pub trait UserEdits: Send + Sync {
    /// The local users with these ids, as records (for verify).
    async fn local_records(&self, ids: &[String]) -> StoreResult<HashMap<String, LocalUser>>;
    /// Changes a user's profile and marks it changed locally (backfills
    /// then leave it alone); false when the user does not exist. The mark
    /// is after `migrated_at` even within the second of the migration.
    /// `write` is the write-back row owed the upstream, queued with it.
    async fn edit_user(
        &self,
        id: &str,
        edit: &ProfileEdit,
        writes: &[QueuedWrite],
    ) -> StoreResult<bool>;
    /// Blocks or unblocks a user, with the write-back row owed the
    /// upstream and `event`, in one transaction; false when the user does
    /// not exist.
    async fn set_blocked(
        &self,
        id: &str,
        blocked: bool,
        write: Option<&QueuedWrite>,
        event: &AuditEvent,
    ) -> StoreResult<bool>;
    /// Ids of users that came from `provider`, in id order after `after`.
    async fn upstream_user_ids(
        &self,
        provider: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<String>>;
    /// The user a login identifier names (as
    /// [`super::UserStore::find_user_by_login`]) with their password hash,
    /// in one read: a login needs both, and a second round trip per login
    /// is CPU the hashing threads could have had.
    async fn find_login(&self, identifier: &str) -> StoreResult<Option<(User, Option<String>)>>;
    /// A successful login: `last_login_at`, the login count and its audit
    /// event, in one commit rather than one each.
    async fn record_login_with(
        &self,
        user_id: &str,
        at: i64,
        event: &AuditEvent,
    ) -> StoreResult<()>;
}

/// A profile change made in Switchyard (`users update`); `None` leaves a
/// field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProfileEdit {
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub nickname: Option<String>,
    /// Keys merged into the user's `user_metadata` and `app_metadata`
    /// (a `null` value removes the key): Auth0's first-level merge
    /// (Management API v2, "Update a User").
    pub user_metadata: Option<Map<String, Value>>,
    pub app_metadata: Option<Map<String, Value>>,
    /// Blocks or unblocks the user with the same commit.
    pub blocked: Option<bool>,
    /// A new password credential (hash, algorithm), with the same commit.
    pub password: Option<(String, String)>,
}

impl ProfileEdit {
    /// The fields the edit sets, under their local names: what a
    /// write-back of the profile carries.
    pub fn fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                fields.insert(k.into(), v);
            }
        };
        put("email", self.email.clone().map(Value::from));
        put("email_verified", self.email_verified.map(Value::from));
        put("name", self.name.clone().map(Value::from));
        put("given_name", self.given_name.clone().map(Value::from));
        put("family_name", self.family_name.clone().map(Value::from));
        put("nickname", self.nickname.clone().map(Value::from));
        put(
            "user_metadata",
            self.user_metadata.clone().map(Value::Object),
        );
        put("app_metadata", self.app_metadata.clone().map(Value::Object));
        fields
    }
}

/// A local user as the jobs compare it.
#[derive(Debug, Clone)]
pub struct LocalUser {
    pub record: Record,
    pub state: UserState,
    /// Changed through Switchyard after migrating: the upstream no longer
    /// owns the profile.
    pub changed_locally: bool,
    /// The stored password hash, if any.
    pub password: Option<String>,
}

fn object(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

#[async_trait]
impl UserEdits for SqlStore {
    async fn local_records(&self, ids: &[String]) -> StoreResult<HashMap<String, LocalUser>> {
        let mut conn = self.pool().acquire().await?;
        load_local(&mut conn, self.dialect(), ids).await
    }

    async fn edit_user(
        &self,
        id: &str,
        edit: &ProfileEdit,
        writes: &[QueuedWrite],
    ) -> StoreResult<bool> {
        let now = now();
        let mut tx = self.begin().await?;
        // Metadata merges into what is stored, read in the same transaction.
        let (mut user_metadata, mut app_metadata) = (None, None);
        if edit.user_metadata.is_some() || edit.app_metadata.is_some() {
            let Some(row) =
                sqlx::query("SELECT user_metadata, app_metadata FROM users WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
            else {
                return Ok(false);
            };
            let merged =
                |column: &str, patch: &Option<Map<String, Value>>| -> StoreResult<Option<String>> {
                    let Some(patch) = patch else { return Ok(None) };
                    let text: Option<String> = row.try_get(column)?;
                    let mut current = object(text.as_deref().unwrap_or("{}"));
                    for (k, v) in patch {
                        if v.is_null() {
                            current.remove(k);
                        } else {
                            current.insert(k.clone(), v.clone());
                        }
                    }
                    Ok(Some(to_json(&current)))
                };
            user_metadata = merged("user_metadata", &edit.user_metadata)?;
            app_metadata = merged("app_metadata", &edit.app_metadata)?;
        }
        let changed = sqlx::query(
            "UPDATE users SET email = COALESCE($2, email), \
             email_normalized = CASE WHEN $2 IS NULL THEN email_normalized ELSE $3 END, \
             email_verified = COALESCE($4, email_verified), name = COALESCE($5, name), \
             given_name = COALESCE($6, given_name), family_name = COALESCE($7, family_name), \
             nickname = COALESCE($8, nickname), updated_at = $9, \
             user_metadata = COALESCE($10, user_metadata), app_metadata = COALESCE($11, app_metadata), \
             blocked = COALESCE($12, blocked), \
             local_updated_at = CASE WHEN migrated_at >= $9 THEN migrated_at + 1 ELSE $9 END WHERE id = $1",
        )
        .bind(id)
        .bind(&edit.email)
        .bind(edit.email.as_deref().map(normalize_email))
        .bind(edit.email_verified.map(|v| v as i64))
        .bind(&edit.name)
        .bind(&edit.given_name)
        .bind(&edit.family_name)
        .bind(&edit.nickname)
        .bind(now)
        .bind(user_metadata)
        .bind(app_metadata)
        .bind(edit.blocked.map(i64::from))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !changed {
            return Ok(false);
        }
        if let Some((hash, algorithm)) = &edit.password {
            super::sql_common::upsert_credential(&mut tx, id, hash, algorithm, now).await?;
        }
        for write in writes {
            enqueue_write(&mut tx, write, now).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn set_blocked(
        &self,
        id: &str,
        blocked: bool,
        write: Option<&QueuedWrite>,
        event: &AuditEvent,
    ) -> StoreResult<bool> {
        let now = event.at;
        let mut tx = self.begin().await?;
        let changed = sqlx::query(
            "UPDATE users SET blocked = $2, updated_at = $3, local_updated_at = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(blocked as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !changed {
            return Ok(false);
        }
        if let Some(write) = write {
            enqueue_write(&mut tx, write, now).await?;
        }
        insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn upstream_user_ids(
        &self,
        provider: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM users WHERE upstream = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(provider)
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?)
    }

    async fn find_login(&self, identifier: &str) -> StoreResult<Option<(User, Option<String>)>> {
        static QUERY: LazyLock<String> = LazyLock::new(|| {
            // The users' columns qualified: `credentials` has an
            // `updated_at` of its own.
            let columns: Vec<String> = USER_COLUMNS.split(", ").map(|c| format!("u.{c}")).collect();
            format!(
                "SELECT {}, c.hash AS password_hash FROM users u \
                 LEFT JOIN credentials c ON c.user_id = u.id AND c.kind = 'password' \
                 WHERE {BY_LOGIN}",
                columns.join(", ")
            )
        });
        let identifier = identifier.trim();
        let row = sqlx::query(&QUERY)
            .bind(normalize_email(identifier))
            .bind(identifier)
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| Ok((user_from_row(&row)?, row.try_get("password_hash")?)))
            .transpose()
    }

    async fn record_login_with(
        &self,
        user_id: &str,
        at: i64,
        event: &AuditEvent,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(RECORD_LOGIN)
            .bind(user_id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(())
    }
}

const LOCAL_COLUMNS: &str = "id, state, email, email_verified, username, name, given_name, family_name, nickname, \
    picture, phone_number, user_metadata, app_metadata, blocked, migrated_at, local_updated_at, \
    upstream_last_login_at";

/// `column IN (…)` over one bind: the list travels as one JSON array and
/// the database expands it. A batch of a thousand ids is then one small
/// statement, prepared once, rather than a thousand bind parameters.
pub(super) fn in_json_list(dialect: Dialect, column: &str) -> String {
    match dialect {
        Dialect::Postgres => format!("{column} IN (SELECT json_array_elements_text($1::json))"),
        Dialect::Sqlite => format!("{column} IN (SELECT value FROM json_each($1))"),
    }
}

/// `{select} column IN (list)`, the list one JSON array.
pub(super) async fn select_in(
    conn: &mut sqlx::AnyConnection,
    dialect: Dialect,
    select: &str,
    column: &str,
    list: &str,
) -> StoreResult<Vec<AnyRow>> {
    Ok(
        sqlx::query(&format!("{select} {}", in_json_list(dialect, column)))
            .bind(list)
            .fetch_all(conn)
            .await?,
    )
}

pub(super) async fn load_local(
    conn: &mut sqlx::AnyConnection,
    dialect: Dialect,
    ids: &[String],
) -> StoreResult<HashMap<String, LocalUser>> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let list = to_json(&ids);
    let select = format!("SELECT {LOCAL_COLUMNS} FROM users WHERE");
    for row in select_in(conn, dialect, &select, "id", &list).await? {
        let text = |c: &str| {
            row.try_get::<Option<String>, _>(c)
                .map_err(StoreError::from)
        };
        let id: String = row.try_get("id")?;
        let mut record = Record::new(id.clone());
        record.profile = profile_from_row(&row)?;
        record.user_metadata = object(&text("user_metadata")?.unwrap_or_default());
        record.app_metadata = object(&text("app_metadata")?.unwrap_or_default());
        record.blocked = row.try_get::<i64, _>("blocked")? != 0;
        record.upstream_last_login = row.try_get("upstream_last_login_at")?;
        let state: String = row.try_get("state")?;
        let state = UserState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("user state {state:?}")))?;
        let migrated_at: Option<i64> = row.try_get("migrated_at")?;
        let local_updated_at: Option<i64> = row.try_get("local_updated_at")?;
        let changed_locally = match (state, migrated_at, local_updated_at) {
            (UserState::Local, _, _) => true,
            (_, Some(m), Some(l)) => l > m,
            (_, None, Some(_)) => true,
            _ => false,
        };
        out.insert(
            id,
            LocalUser {
                record,
                state,
                changed_locally,
                password: None,
            },
        );
    }
    if out.is_empty() {
        // A fresh import finds nobody: no identities or credentials to read.
        return Ok(out);
    }
    let select = "SELECT user_id, subject FROM identities WHERE";
    for row in select_in(conn, dialect, select, "user_id", &list).await? {
        let user_id: String = row.try_get("user_id")?;
        if let Some(u) = out.get_mut(&user_id) {
            u.record.add_identity(row.try_get("subject")?);
        }
    }
    let select = "SELECT user_id, hash FROM credentials WHERE kind = 'password' AND";
    for row in select_in(conn, dialect, select, "user_id", &list).await? {
        let user_id: String = row.try_get("user_id")?;
        if let Some(u) = out.get_mut(&user_id) {
            u.password = Some(row.try_get("hash")?);
        }
    }
    Ok(out)
}
