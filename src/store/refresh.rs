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
use super::sql_common::Dialect;
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
#[derive(Debug, Clone)]
pub struct Rotation {
    pub grant_id: String,
    pub spent_hash: String,
    pub new_hash: String,
    pub sealed_successor: String,
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
    async fn rotate(&self, rotation: &Rotation) -> StoreResult<bool> {
        Ok(self.rotate_many(std::slice::from_ref(rotation)).await?[0])
    }
    /// [`Self::rotate`] for rotations of distinct families, in one
    /// statement: whether each spent its token, in order.
    async fn rotate_many(&self, rotations: &[Rotation]) -> StoreResult<Vec<bool>>;
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

    async fn rotate_many(&self, rotations: &[Rotation]) -> StoreResult<Vec<bool>> {
        if rotations.is_empty() {
            return Ok(Vec::new());
        }
        if rotations.len() > BATCH {
            // One statement a batch of at most BATCH, in order.
            let mut rotated = Vec::with_capacity(rotations.len());
            for batch in rotations.chunks(BATCH) {
                rotated.extend(self.rotate_many(batch).await?);
            }
            return Ok(rotated);
        }
        // One statement: each claim and its new token commit together, so a
        // token is spent only if its successor is stored; and only if the
        // user's row still accepts the login (`User::accepts_auth_time`),
        // so blocking a user ends their refresh tokens at once on every
        // instance, whatever copy of the user the request was served from.
        // Padded to a power of two with rows that match no family, so a
        // connection caches at most seven forms of the statement rather
        // than one per batch size; each form's text is built once.
        let rows_bound = rotations.len().next_power_of_two();
        let sql = rotation_statement(self.dialect(), rows_bound);
        let mut query = sqlx::query(sql);
        for r in rotations {
            query = query
                .bind(&r.grant_id)
                .bind(&r.spent_hash)
                .bind(&r.new_hash)
                .bind(&r.sealed_successor)
                .bind(r.now)
                .bind(r.auth_time);
        }
        for _ in rotations.len()..rows_bound {
            // No family has an empty grant id.
            query = query
                .bind("")
                .bind("")
                .bind("")
                .bind("")
                .bind(0i64)
                .bind(0i64);
        }
        let spent: std::collections::HashSet<String> = query
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|row| row.try_get("grant_id"))
            .collect::<Result<_, _>>()?;
        Ok(rotations
            .iter()
            .map(|r| spent.contains(&r.grant_id))
            .collect())
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

/// Rotations from concurrent grants, committed together: while one
/// statement is in flight the next grants queue, and the next statement
/// carries all of them (at most 64). Each grant is answered only
/// once its own rotation is committed, so a crash loses nothing a client
/// was told; what it saves is a round trip to the database, and on SQLite
/// a hand-over to the connection's thread, per grant.
pub struct Rotations {
    queue: tokio::sync::mpsc::UnboundedSender<Queued>,
}

type Queued = (Rotation, tokio::sync::oneshot::Sender<StoreResult<bool>>);

/// Columns a rotation binds in [`rotation_statement`].
const ROTATION_COLUMNS: usize = 6;

/// The text of [`RefreshStore::rotate_many`]'s statement for `rows` (a
/// power of two, at most [`BATCH`]) rotations, made once per dialect and size:
/// it is the same for every batch of that size.
fn rotation_statement(dialect: Dialect, rows: usize) -> &'static str {
    use std::sync::OnceLock;
    const FORMS: usize = BATCH.trailing_zeros() as usize + 1;
    static SQLITE: [OnceLock<String>; FORMS] = [const { OnceLock::new() }; FORMS];
    static POSTGRES: [OnceLock<String>; FORMS] = [const { OnceLock::new() }; FORMS];
    debug_assert!(rows.is_power_of_two() && rows <= BATCH);
    let forms = match dialect {
        Dialect::Sqlite => &SQLITE,
        Dialect::Postgres => &POSTGRES,
    };
    forms[rows.trailing_zeros() as usize].get_or_init(|| {
        let rows: Vec<String> = (0..rows)
            .map(|r| {
                let p = |c: usize| r * ROTATION_COLUMNS + c + 1;
                match dialect {
                    Dialect::Postgres => format!(
                        "(${}::text, ${}::text, ${}::text, ${}::text, ${}::bigint, ${}::bigint)",
                        p(0), p(1), p(2), p(3), p(4), p(5)
                    ),
                    Dialect::Sqlite => format!(
                        "SELECT ${} AS gid, ${} AS spent_hash, ${} AS new_hash, ${} AS sealed, ${} AS at, ${} AS auth_time",
                        p(0), p(1), p(2), p(3), p(4), p(5)
                    ),
                }
            })
            .collect();
        // The rotations arrive as a derived table `v`: VALUES with typed
        // columns on PostgreSQL, a UNION ALL of SELECTs on SQLite, which
        // cannot name the columns of VALUES.
        let derived = match dialect {
            Dialect::Postgres => format!(
                "(VALUES {}) AS v (gid, spent_hash, new_hash, sealed, at, auth_time)",
                rows.join(", ")
            ),
            Dialect::Sqlite => format!("({}) AS v", rows.join(" UNION ALL ")),
        };
        format!(
            "UPDATE refresh_families SET current_hash = v.new_hash, previous_hash = v.spent_hash, \
             rotated_at = v.at, successor = v.sealed FROM {derived} \
             WHERE refresh_families.grant_id = v.gid AND refresh_families.current_hash = v.spent_hash \
             AND refresh_families.revoked = 0 AND refresh_families.expires_at > v.at \
             AND EXISTS (SELECT 1 FROM users WHERE users.id = refresh_families.user_id \
             AND users.blocked = 0 \
             AND (users.sessions_valid_after IS NULL OR users.sessions_valid_after <= v.auth_time)) \
             RETURNING refresh_families.grant_id"
        )
    })
}

/// Rotations per statement at most (six parameters each: well under
/// SQLite's 32,766 and PostgreSQL's 65,535); a power of two, see
/// [`RefreshStore::rotate_many`].
const BATCH: usize = 64;

impl Rotations {
    /// Starts the committing task on the current runtime; it ends when the
    /// last handle is dropped.
    pub fn start(db: std::sync::Arc<dyn super::Database>) -> Self {
        let (queue, mut rx) = tokio::sync::mpsc::unbounded_channel::<Queued>();
        tokio::spawn(async move {
            // Two rotations of one family never share a statement (only one
            // of them can win, and the loser must see the winner's row):
            // the second waits for the next one.
            let mut held: Vec<Queued> = Vec::new();
            loop {
                let mut batch: Vec<Queued> = Vec::new();
                let admit = |batch: &mut Vec<Queued>, held: &mut Vec<Queued>, q: Queued| {
                    if batch.iter().any(|(r, _)| r.grant_id == q.0.grant_id) {
                        held.push(q);
                    } else {
                        batch.push(q);
                    }
                };
                for q in std::mem::take(&mut held) {
                    admit(&mut batch, &mut held, q);
                }
                if batch.is_empty() {
                    match rx.recv().await {
                        Some(first) => batch.push(first),
                        None => return,
                    }
                }
                while batch.len() < BATCH {
                    let Ok(next) = rx.try_recv() else { break };
                    admit(&mut batch, &mut held, next);
                }
                let (rotations, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                match db.rotate_many(&rotations).await {
                    Ok(spent) => {
                        for (reply, spent) in replies.into_iter().zip(spent) {
                            let _ = reply.send(Ok(spent));
                        }
                    }
                    // Each is tried alone, so each gets its own answer (or
                    // error) and one bad row cannot fail the others.
                    Err(_) => {
                        for (r, reply) in rotations.iter().zip(replies) {
                            let _ = reply.send(db.rotate(r).await);
                        }
                    }
                }
            }
        });
        Self { queue }
    }

    /// Commits `rotation` with whatever else is waiting; see
    /// [`RefreshStore::rotate`].
    pub async fn rotate(&self, rotation: Rotation) -> StoreResult<bool> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue
            .send((rotation, reply))
            .map_err(|_| StoreError::Unavailable("the rotation queue has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the rotation queue has stopped".into()))?
    }
}
