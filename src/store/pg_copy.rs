//! PostgreSQL's fast path for a page of new users: binary `COPY … FROM
//! STDIN` straight into `users` (and `identities`, `credentials`), in one
//! transaction with the job's position.
//!
//! Most pages of an import or a first backfill hold only users the database
//! has never seen. For those the general path's `INSERT … SELECT FROM
//! json_populate_recordset(…) ON CONFLICT DO NOTHING` spends most of
//! PostgreSQL's time taking JSON apart again; COPY's binary format hands
//! the server each field as it is stored ("COPY", "Binary Format", in the
//! PostgreSQL docs) and costs about a third of the server CPU a row.
//!
//! COPY has no `ON CONFLICT`: a row that breaks a uniqueness rule (the user
//! exists, another holds the email or username, an identity is linked
//! elsewhere) aborts the COPY and the transaction. The page then goes
//! through the general path, which reads what exists and decides, so the
//! outcome is the same either way and only the cost differs. A page of
//! users that all exist fails on its first row, before COPY has done any
//! work to speak of.

use serde_json::{Map, Value};
use sqlx::{PgConnection, Postgres};

use super::page::{
    ASYNC_COMMIT, Applied, NEW_USER_COLUMNS, PageCommit, add_rejected, first_of_each_id,
    write_position,
};
use super::sql::{SqlStore, normalize_email};
use super::transition::Transition;
use super::{StoreResult, UserState, now};
use crate::store::record::{Action, Record};

/// Writes `commit` with COPY if none of its users exists yet. `None` when
/// a uniqueness rule stopped the COPY: nothing was written, and the caller
/// takes the general path.
pub(super) async fn commit_new_page(
    store: &SqlStore,
    commit: &PageCommit<'_>,
) -> StoreResult<Option<Applied>> {
    let (actions, fresh) = first_of_each_id(commit.records);
    let mut tx = store.native_pg().await?.begin().await?;
    if commit.chunk.is_some() {
        sqlx::query(ASYNC_COMMIT).execute(&mut *tx).await?;
    }
    match copy_new_users(&mut tx, &fresh, commit.provider, now()).await {
        Ok(()) => {}
        Err(e) if gives_way(&e) => {
            // Dropping the transaction rolls it back.
            tracing::debug!(
                records = commit.records.len(),
                "page not written by COPY (a user or login exists); upserting"
            );
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    }
    let mut applied = Applied::default();
    for action in actions {
        let action = action.unwrap_or(Action::Created);
        applied.counters.count(&action);
        applied.actions.push(action);
    }
    add_rejected(&mut applied, commit.rejected);
    write_position::<Postgres>(&mut tx, commit, &applied).await?;
    tx.commit().await?;
    tracing::debug!(records = commit.records.len(), "page written by COPY");
    Ok(Some(applied))
}

/// Errors after which the general path is tried: a uniqueness rule
/// (`23505`), or a deadlock with a concurrent page that holds the same
/// login (`40P01`), which PostgreSQL resolved by aborting this one.
fn gives_way(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("23505" | "40P01")),
        _ => false,
    }
}

/// COPY fills the columns the general path's INSERT names, in that order
/// ([`NEW_USER_COLUMNS`]); the rest keep their defaults.
const USER_FIELDS: i16 = NEW_USER_COLUMNS.len() as i16;

async fn copy_new_users(
    conn: &mut PgConnection,
    records: &[&Record],
    provider: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    if records.is_empty() {
        return Ok(());
    }
    let new_state = UserState::next(None, Transition::Listed).as_str();
    let mut users = BinaryCopy::with_capacity(records.len() * 640);
    let mut identities = BinaryCopy::with_capacity(0);
    let mut credentials = BinaryCopy::with_capacity(0);
    for r in records {
        users.row(USER_FIELDS);
        users.text(Some(&r.id));
        users.text(r.profile.email.as_deref());
        users.text(r.profile.email.as_deref().map(normalize_email).as_deref());
        users.int8(r.profile.email_verified as i64);
        users.text(r.profile.username.as_deref());
        users.text(r.profile.name.as_deref());
        users.text(r.profile.given_name.as_deref());
        users.text(r.profile.family_name.as_deref());
        users.text(r.profile.nickname.as_deref());
        users.text(r.profile.picture.as_deref());
        users.text(r.profile.phone_number.as_deref());
        users.text(Some(r.claims.as_str()));
        users.json(&r.user_metadata);
        users.json(&r.app_metadata);
        users.text(Some(new_state));
        users.int8(r.blocked as i64);
        users.text(Some(provider));
        users.int8(now);
        users.int8(now);
        users.opt_int8(r.upstream_last_login);
        // The user's own id needs no identity row (a login finds the user
        // by id); linked identities do.
        for subject in r.identities.iter().filter(|s| **s != r.id) {
            identities.row(5);
            identities.text(Some(provider));
            identities.text(Some(subject));
            identities.text(Some(&r.id));
            identities.text(Some("{}"));
            identities.int8(now);
        }
        if let Some((hash, algorithm)) = &r.password {
            credentials.row(6);
            credentials.text(Some(&r.id));
            credentials.text(Some("password"));
            credentials.text(Some(hash));
            credentials.text(Some(algorithm));
            credentials.int8(now);
            credentials.int8(now);
        }
    }
    copy(
        conn,
        &format!("users ({})", NEW_USER_COLUMNS.join(", ")),
        users,
    )
    .await?;
    copy(
        conn,
        "identities (provider, subject, user_id, profile, created_at)",
        identities,
    )
    .await?;
    copy(
        conn,
        "credentials (user_id, kind, hash, algorithm, created_at, updated_at)",
        credentials,
    )
    .await
}

/// Bytes a CopyData message.
const COPY_CHUNK: usize = 64 * 1024;

async fn copy(conn: &mut PgConnection, target: &str, data: BinaryCopy) -> Result<(), sqlx::Error> {
    if data.rows == 0 {
        return Ok(());
    }
    let mut copy = conn
        .copy_in_raw(&format!("COPY {target} FROM STDIN (FORMAT binary)"))
        .await?;
    // sqlx encodes each CopyData message into the connection's write
    // buffer and shrinks the buffer back after the flush: one message for
    // the whole page regrew it to the page's size for every page (a
    // realloc chain and fresh pages to fault in). Slices keep it small.
    for chunk in data.finish().chunks(COPY_CHUNK) {
        copy.send(chunk).await?;
    }
    copy.finish().await?;
    Ok(())
}

/// PostgreSQL's binary COPY format: a signature and two zero words, then
/// per row a field count and each field as a length (`-1` for NULL) and
/// its bytes in the type's binary form, then `-1` as the trailer. `text`
/// is its UTF-8 bytes, `bigint` eight big-endian bytes.
struct BinaryCopy {
    buf: Vec<u8>,
    rows: usize,
}

impl BinaryCopy {
    const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

    fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes + 19);
        buf.extend_from_slice(Self::SIGNATURE);
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        buf.extend_from_slice(&0i32.to_be_bytes()); // no header extension
        Self { buf, rows: 0 }
    }

    fn row(&mut self, fields: i16) {
        self.rows += 1;
        self.buf.extend_from_slice(&fields.to_be_bytes());
    }

    fn text(&mut self, value: Option<&str>) {
        match value {
            Some(v) => {
                self.buf.extend_from_slice(&(v.len() as i32).to_be_bytes());
                self.buf.extend_from_slice(v.as_bytes());
            }
            None => self.buf.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }

    fn int8(&mut self, value: i64) {
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    fn opt_int8(&mut self, value: Option<i64>) {
        match value {
            Some(v) => self.int8(v),
            None => self.buf.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }

    /// A JSON object into a TEXT column, written in place: the same text
    /// the general path stores (`serde_json`'s compact form).
    fn json(&mut self, value: &Map<String, Value>) {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        serde_json::to_writer(&mut self.buf, value).expect("a JSON map serializes into memory");
        let len = (self.buf.len() - at - 4) as i32;
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_copy_frames_rows_as_postgresql_reads_them() {
        let mut copy = BinaryCopy::with_capacity(0);
        copy.row(3);
        copy.text(Some("é"));
        copy.text(None);
        copy.int8(-2);
        copy.row(2);
        copy.opt_int8(Some(1));
        copy.opt_int8(None);
        let mut map = Map::new();
        map.insert("a".into(), Value::from(1));
        copy.row(1);
        copy.json(&map);
        assert_eq!(copy.rows, 3);
        let mut expected = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        expected.extend_from_slice(&[0, 3, 0, 0, 0, 2, 0xc3, 0xa9, 0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        expected.extend_from_slice(&[0, 2, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0, 1, 0, 0, 0, 7]);
        expected.extend_from_slice(b"{\"a\":1}");
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(copy.finish(), expected);
    }
}
