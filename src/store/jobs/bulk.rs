//! The bulk user writer: a job's page of records, upserted by upstream id.
//!
//! Users are upserted a batch at a time: the batch is inserted
//! optimistically, then for the rows a uniqueness rule skipped a few
//! queries read what exists, the records are compared in Rust
//! ([`Record::diff`]), and only changed users are written, so a second run
//! over the same source writes nothing. A `migrated` or `local` user is
//! never downgraded, and a field changed locally after migration is
//! reported as a conflict rather than overwritten. PostgreSQL's COPY path
//! for pages of new users is `store::pg_copy`.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::{Any, Row, Transaction};

use crate::store::page::{Applied, NEW_USER_COLUMNS, first_of_each_id};
use crate::store::record::{Action, Note, Record};
use crate::store::sql::normalize_email;
use crate::store::sql_common::{Dialect, to_json};
use crate::store::transition::Transition;
use crate::store::users::{LocalUser, load_local, select_in};
use crate::store::{StoreError, StoreResult, UserState, now};

/// Which of these login identifiers (normalised emails or usernames)
/// already belong to a user, and to whom.
async fn taken(
    conn: &mut sqlx::AnyConnection,
    dialect: Dialect,
    column: &str,
    wanted: &[String],
) -> StoreResult<HashMap<String, String>> {
    let mut owners = HashMap::new();
    if wanted.is_empty() {
        return Ok(owners);
    }
    let select = format!("SELECT id, {column} FROM users WHERE");
    for row in select_in(conn, dialect, &select, column, &to_json(&wanted)).await? {
        let id: String = row.try_get("id")?;
        let value: String = row.try_get(column)?;
        owners.insert(value, id);
    }
    Ok(owners)
}

/// The login identifiers a record may hold: an email or username another
/// user already holds stays on the record but cannot log in, because
/// linking accounts by email would let whoever controls one take over the
/// other (the same rule as an upstream login, `upsert_upstream_user`).
struct Logins {
    email: Option<String>,
    username: Option<String>,
}

/// A page's records, upserted. Most records of an import or a first
/// backfill are new, so they are inserted first, optimistically, with their
/// own email and username as logins: a row that any uniqueness rule skips
/// (the user exists, or another holds the email or username, or an earlier
/// record of the page does) goes through [`reconcile`], which reads what
/// exists and decides. A fresh page thus costs one statement instead of
/// four; a page of known users costs one index probe a row more.
pub(super) async fn apply(
    tx: &mut Transaction<'_, Any>,
    dialect: Dialect,
    records: &[Record],
    provider: &str,
) -> StoreResult<Applied> {
    let now = now();
    let (actions, fresh) = first_of_each_id(records);
    let fresh: Vec<(&Record, Logins)> = fresh
        .into_iter()
        .map(|record| {
            (
                record,
                Logins {
                    email: record.profile.email.as_deref().map(normalize_email),
                    username: record.profile.username.clone(),
                },
            )
        })
        .collect();
    let skipped = insert_users(tx, dialect, &fresh, provider, now).await?;
    let rest: Vec<&Record> = fresh
        .iter()
        .filter(|(r, _)| skipped.contains(&r.id))
        .map(|(r, _)| *r)
        .collect();
    let reconciled = reconcile(tx, dialect, &rest, provider, now).await?;
    let mut reconciled_actions = reconciled.actions.into_iter();
    let mut applied = Applied {
        notes: reconciled.notes,
        ..Applied::default()
    };
    for (record, action) in records.iter().zip(actions) {
        let action = match action {
            Some(failed) => failed,
            None if skipped.contains(&record.id) => reconciled_actions
                .next()
                .ok_or_else(|| StoreError::Backend("a reconciled record went missing".into()))?,
            None => Action::Created,
        };
        applied.counters.count(&action);
        applied.actions.push(action);
    }
    Ok(applied)
}

/// Records the optimistic insert skipped: what exists is read with a few
/// queries and each record is compared with it ([`Record::diff`]).
async fn reconcile(
    tx: &mut Transaction<'_, Any>,
    dialect: Dialect,
    records: &[&Record],
    provider: &str,
    now: i64,
) -> StoreResult<Applied> {
    let mut applied = Applied::default();
    if records.is_empty() {
        return Ok(applied);
    }
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let existing = load_local(tx, dialect, &ids).await?;
    let emails: Vec<String> = records
        .iter()
        .filter_map(|r| r.profile.email.as_deref().map(normalize_email))
        .collect();
    let usernames: Vec<String> = records
        .iter()
        .filter_map(|r| r.profile.username.clone())
        .collect();
    let mut email_owner = taken(tx, dialect, "email_normalized", &emails).await?;
    let mut username_owner = taken(tx, dialect, "username", &usernames).await?;

    let mut inserts: Vec<(&Record, Logins)> = Vec::new();
    for &record in records {
        let mut logins = Logins {
            email: None,
            username: None,
        };
        let mut note = |reason: String| {
            applied.notes.push(Note {
                user_id: record.id.clone(),
                line: record.line,
                reason,
            })
        };
        if let Some(e) = record.profile.email.as_deref().map(normalize_email) {
            match email_owner.get(&e) {
                Some(owner) if owner != &record.id => note(format!(
                    "email is also the login of {owner}; kept on the record, not usable to log in"
                )),
                _ => {
                    email_owner.insert(e.clone(), record.id.clone());
                    logins.email = Some(e);
                }
            }
        }
        if let Some(u) = &record.profile.username {
            match username_owner.get(u) {
                Some(owner) if owner != &record.id => note(format!(
                    "username is also the login of {owner}; kept in the profile only"
                )),
                _ => {
                    username_owner.insert(u.clone(), record.id.clone());
                    logins.username = Some(u.clone());
                }
            }
        }
        let action = match existing.get(&record.id) {
            None => {
                inserts.push((record, logins));
                Action::Created
            }
            Some(local) => update(tx, record, local, &logins, provider, now).await?,
        };
        applied.actions.push(action);
    }
    let skipped = insert_users(tx, dialect, &inserts, provider, now).await?;
    if !skipped.is_empty() {
        // Rows a uniqueness rule skipped: another worker inserted the same
        // user meanwhile (an offset page that shifted) — theirs stands — or
        // inserted someone holding the same email or username, which this
        // user then keeps on the record only.
        let ids: Vec<String> = skipped.iter().cloned().collect();
        let exists: HashSet<String> = select_in(
            tx,
            dialect,
            "SELECT id FROM users WHERE",
            "id",
            &to_json(&ids),
        )
        .await?
        .iter()
        .map(|row| row.try_get("id").map_err(StoreError::from))
        .collect::<StoreResult<_>>()?;
        let mut retry = Vec::new();
        for (&record, action) in records.iter().zip(applied.actions.iter_mut()) {
            if *action != Action::Created || !skipped.contains(&record.id) {
                continue;
            }
            let reason = if exists.contains(&record.id) {
                *action = Action::Unchanged;
                "written meanwhile by another worker; left as it was"
            } else {
                retry.push((
                    record,
                    Logins {
                        email: None,
                        username: None,
                    },
                ));
                "email or username was taken meanwhile by another user; kept on the record, not usable to log in"
            };
            applied.notes.push(Note {
                user_id: record.id.clone(),
                line: record.line,
                reason: reason.into(),
            });
        }
        let lost = insert_users(tx, dialect, &retry, provider, now).await?;
        for (&record, action) in records.iter().zip(applied.actions.iter_mut()) {
            if lost.contains(&record.id) && *action == Action::Created {
                *action = Action::Failed("could not be inserted; run the job again".into());
            }
        }
    }
    Ok(applied)
}

async fn update(
    tx: &mut Transaction<'_, Any>,
    record: &Record,
    local: &LocalUser,
    logins: &Logins,
    provider: &str,
    now: i64,
) -> StoreResult<Action> {
    // The upstream's last login is its own fact, not the profile: it is
    // refreshed whatever the user's state or local edits, and alone it
    // changes nothing a job reports. A source that does not carry it
    // leaves the known one.
    if record.upstream_last_login.is_some()
        && record.upstream_last_login != local.record.upstream_last_login
    {
        sqlx::query("UPDATE users SET upstream_last_login_at = $2 WHERE id = $1")
            .bind(&record.id)
            .bind(record.upstream_last_login)
            .execute(&mut **tx)
            .await?;
    }
    let mut changed = record.diff(&local.record);
    // A username that is someone else's login stays as it was locally.
    if logins.username.is_none() && record.profile.username.is_some() {
        changed.retain(|f| *f != "username");
    }
    let new_password = record.password.as_ref().filter(|(hash, _)| {
        local.password.is_none()
            || (local.state == UserState::Pending && local.password.as_ref() != Some(hash))
    });
    if changed.is_empty() && new_password.is_none() {
        return Ok(Action::Unchanged);
    }
    let owns_profile = local.state.upstream_owns_profile();
    if !changed.is_empty() && !owns_profile && local.changed_locally {
        return Ok(Action::Conflict(format!(
            "changed locally after migration, not overwritten: {}",
            changed.join(", ")
        )));
    }
    if !changed.is_empty() {
        let username = logins
            .username
            .clone()
            .or_else(|| local.record.profile.username.clone());
        // Only a user who never logged in keeps the source's profile as
        // their claims; after a login the claims come from the upstream's
        // tokens and stay as they were.
        let profile = (local.state == UserState::Pending).then(|| record.claims.as_str());
        // The decisions above rest on the state as read; the write holds
        // only if it is still that state (a login may have migrated the
        // user since), and carries the state the table gives a listing.
        let state = UserState::next(Some(local.state), Transition::Listed);
        let written = sqlx::query(
            "UPDATE users SET email = $2, email_normalized = $3, email_verified = $4, username = $5, \
             name = $6, given_name = $7, family_name = $8, nickname = $9, picture = $10, phone_number = $11, \
             user_metadata = $12, app_metadata = $13, blocked = $14, profile = COALESCE($15, profile), \
             upstream = COALESCE(upstream, $16), updated_at = $17, state = $18 WHERE id = $1 AND state = $19",
        )
        .bind(&record.id)
        .bind(&record.profile.email)
        .bind(&logins.email)
        .bind(record.profile.email_verified as i64)
        .bind(username)
        .bind(&record.profile.name)
        .bind(&record.profile.given_name)
        .bind(&record.profile.family_name)
        .bind(&record.profile.nickname)
        .bind(&record.profile.picture)
        .bind(&record.profile.phone_number)
        .bind(to_json(&record.user_metadata))
        .bind(to_json(&record.app_metadata))
        .bind(record.blocked as i64)
        .bind(profile)
        .bind(provider)
        .bind(now)
        .bind(state.as_str())
        .bind(local.state.as_str())
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if written == 0 {
            return Ok(Action::Failed(
                "changed meanwhile by a login; run the job again".into(),
            ));
        }
        // Links are only ever added, whoever owns the profile: an identity
        // the upstream linked after the user migrated is one more way
        // they arrive, and without it verify reports them different for
        // ever.
        if changed.contains(&"identities") {
            for subject in &record.identities {
                insert_identity(tx, provider, subject, &record.id, now).await?;
            }
        }
    }
    if let Some((hash, algorithm)) = new_password {
        sqlx::query(
            "INSERT INTO credentials (user_id, kind, hash, algorithm, created_at, updated_at) \
             VALUES ($1, 'password', $2, $3, $4, $4) \
             ON CONFLICT (user_id, kind) DO UPDATE SET hash = excluded.hash, algorithm = excluded.algorithm, \
             updated_at = excluded.updated_at",
        )
        .bind(&record.id)
        .bind(hash)
        .bind(algorithm)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(Action::Updated)
}

async fn insert_identity(
    tx: &mut Transaction<'_, Any>,
    provider: &str,
    subject: &str,
    user_id: &str,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO identities (provider, subject, user_id, profile, created_at) VALUES ($1, $2, $3, '{}', $4) \
         ON CONFLICT (provider, subject) DO NOTHING",
    )
    .bind(provider)
    .bind(subject)
    .bind(user_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `INSERT … SELECT` from one JSON array of row objects: PostgreSQL's
/// `json_populate_recordset`, SQLite's `json_each`. Rows that hit a
/// uniqueness rule are skipped (`ON CONFLICT DO NOTHING`); the inserted
/// rows' `key` column is returned.
fn insert_json_sql(dialect: Dialect, table: &str, columns: &[&str], key: &str) -> String {
    let list = columns.join(", ");
    match dialect {
        Dialect::Postgres => format!(
            "INSERT INTO {table} ({list}) SELECT {list} FROM json_populate_recordset(NULL::{table}, $1::json) \
             ON CONFLICT DO NOTHING RETURNING {key}"
        ),
        Dialect::Sqlite => {
            let values: Vec<String> = columns
                .iter()
                .map(|c| format!("json_extract(value, '$.{c}')"))
                .collect();
            // `WHERE true` keeps SQLite from reading ON CONFLICT as a join
            // clause (sqlite.org/lang_upsert.html, "Parsing Ambiguity").
            format!(
                "INSERT INTO {table} ({list}) SELECT {} FROM json_each($1) WHERE true \
                 ON CONFLICT DO NOTHING RETURNING {key}",
                values.join(", ")
            )
        }
    }
}

/// One new user as the bulk INSERT reads it. Text columns that hold JSON
/// are given as JSON objects where the record holds a map (the metadata):
/// both databases store an object's JSON text in a TEXT column. The
/// profile, already text, goes as a JSON string, whose contents both store
/// as they are (PostgreSQL's `json_populate_recordset` feeds a string's
/// contents to the column's input function; SQLite's `json_extract`
/// returns them).
#[derive(Serialize)]
struct NewRow<'a> {
    id: &'a str,
    email: Option<&'a str>,
    email_normalized: Option<&'a str>,
    email_verified: i64,
    username: Option<&'a str>,
    name: Option<&'a str>,
    given_name: Option<&'a str>,
    family_name: Option<&'a str>,
    nickname: Option<&'a str>,
    picture: Option<&'a str>,
    phone_number: Option<&'a str>,
    profile: &'a str,
    user_metadata: &'a Map<String, Value>,
    app_metadata: &'a Map<String, Value>,
    state: &'a str,
    blocked: i64,
    upstream: &'a str,
    created_at: i64,
    updated_at: i64,
    upstream_last_login_at: Option<i64>,
}

/// New users, their linked identities and imported hashes: at most three
/// statements a batch whatever its size. Returns the ids a uniqueness rule
/// skipped.
async fn insert_users(
    tx: &mut Transaction<'_, Any>,
    dialect: Dialect,
    inserts: &[(&Record, Logins)],
    provider: &str,
    now: i64,
) -> StoreResult<HashSet<String>> {
    let mut raced = HashSet::new();
    if inserts.is_empty() {
        return Ok(raced);
    }
    let rows: Vec<NewRow> = inserts
        .iter()
        .map(|(r, logins)| NewRow {
            id: &r.id,
            email: r.profile.email.as_deref(),
            email_normalized: logins.email.as_deref(),
            email_verified: r.profile.email_verified as i64,
            username: logins.username.as_deref(),
            name: r.profile.name.as_deref(),
            given_name: r.profile.given_name.as_deref(),
            family_name: r.profile.family_name.as_deref(),
            nickname: r.profile.nickname.as_deref(),
            picture: r.profile.picture.as_deref(),
            phone_number: r.profile.phone_number.as_deref(),
            profile: r.claims.as_str(),
            user_metadata: &r.user_metadata,
            app_metadata: &r.app_metadata,
            state: UserState::next(None, Transition::Listed).as_str(),
            blocked: r.blocked as i64,
            upstream: provider,
            created_at: now,
            updated_at: now,
            upstream_last_login_at: r.upstream_last_login,
        })
        .collect();
    let inserted: HashSet<String> =
        sqlx::query_scalar::<_, String>(&insert_json_sql(dialect, "users", NEW_USER_COLUMNS, "id"))
            .bind(to_json(&rows))
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
    for (r, _) in inserts {
        if !inserted.contains(&r.id) {
            raced.insert(r.id.clone());
        }
    }

    // The user's own id needs no identity row (a login finds the user by
    // id); linked identities do.
    let identities: Vec<Value> = inserts
        .iter()
        .filter(|(r, _)| inserted.contains(&r.id))
        .flat_map(|(r, _)| {
            r.identities.iter().filter(|s| **s != r.id).map(|subject| {
                serde_json::json!({"provider": provider, "subject": subject, "user_id": r.id,
                                   "profile": "{}", "created_at": now})
            })
        })
        .collect();
    if !identities.is_empty() {
        sqlx::query(&insert_json_sql(
            dialect,
            "identities",
            &["provider", "subject", "user_id", "profile", "created_at"],
            "subject",
        ))
        .bind(to_json(&identities))
        .execute(&mut **tx)
        .await?;
    }

    let hashes: Vec<Value> = inserts
        .iter()
        .filter(|(r, _)| inserted.contains(&r.id))
        .filter_map(|(r, _)| {
            r.password.as_ref().map(|(hash, algorithm)| {
                serde_json::json!({"user_id": r.id, "kind": "password", "hash": hash,
                                   "algorithm": algorithm, "created_at": now, "updated_at": now})
            })
        })
        .collect();
    if !hashes.is_empty() {
        sqlx::query(&insert_json_sql(
            dialect,
            "credentials",
            &[
                "user_id",
                "kind",
                "hash",
                "algorithm",
                "created_at",
                "updated_at",
            ],
            "user_id",
        ))
        .bind(to_json(&hashes))
        .execute(&mut **tx)
        .await?;
    }
    Ok(raced)
}
