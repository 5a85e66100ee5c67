//! The end game's records: the dormant users (state `pending`: known from a
//! backfill or an import, never signed in here) and the invitations the
//! campaign sent them.
//!
//! An invitation is written with its outbox row (the email) and the
//! campaign chunk's new position and counters in one transaction, and the
//! cooldown is checked inside it by the insert itself (`ON CONFLICT … DO
//! UPDATE … WHERE` the earlier invitation is older than the cooldown): a
//! crash between two users never sends one twice, and of two campaigns
//! running at once only one finds the user invitable.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::jobs::{Chunk, ChunkState};
use super::outbox_queue::{QueuedWrite, enqueue_write};
use super::position::ChunkPosition;
use super::sql::SqlStore;
use super::sql_common::{Dialect, to_json};
use super::{StoreError, StoreResult, UserState};

/// A pending user, as the dormant report and the campaign read them.
#[derive(Debug, Clone, PartialEq)]
pub struct DormantUser {
    pub id: String,
    pub email: Option<String>,
    pub blocked: bool,
    /// The provider the user came from (`auth0`, `okta`, …).
    pub upstream: Option<String>,
    /// The upstream's last login (epoch seconds), as its listing last said.
    pub upstream_last_login: Option<i64>,
    pub created_at: i64,
    /// When the latest invitation was queued, if any.
    pub invited_at: Option<i64>,
}

/// What the campaign did with one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The invitation and its email were queued.
    Invited,
    /// Invited within the cooldown already.
    Cooldown,
    NoEmail,
    Blocked,
    /// No longer pending (signed in, or deleted, since the page was read):
    /// not dormant, so not counted.
    NotPending,
}

/// What a campaign has done, summed over its chunks (`job_chunks.counters`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignCounters {
    #[serde(default)]
    pub invited: u64,
    #[serde(default)]
    pub skipped_cooldown: u64,
    #[serde(default)]
    pub skipped_no_email: u64,
    #[serde(default)]
    pub skipped_blocked: u64,
}

impl CampaignCounters {
    pub fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Invited => self.invited += 1,
            Outcome::Cooldown => self.skipped_cooldown += 1,
            Outcome::NoEmail => self.skipped_no_email += 1,
            Outcome::Blocked => self.skipped_blocked += 1,
            Outcome::NotPending => {}
        }
    }

    pub fn add(&mut self, other: &CampaignCounters) {
        self.invited += other.invited;
        self.skipped_cooldown += other.skipped_cooldown;
        self.skipped_no_email += other.skipped_no_email;
        self.skipped_blocked += other.skipped_blocked;
    }

    pub fn total(&self) -> u64 {
        self.invited + self.skipped_cooldown + self.skipped_no_email + self.skipped_blocked
    }
}

/// One user's turn in a campaign.
pub struct Invite<'a> {
    /// The campaign's chunk (claimed by `worker`) and its position after
    /// this user.
    pub chunk: &'a Chunk,
    pub worker: &'a str,
    pub position: ChunkPosition,
    pub user_id: &'a str,
    /// An invitation queued at or after this instant is within the cooldown.
    pub cooldown_since: i64,
    pub now: i64,
    /// The outbox row that emails the invitation to this address (the
    /// store does not know how emails are spelled: `crate::email` does).
    pub email: &'a (dyn Fn(&str) -> QueuedWrite + Sync),
}

#[async_trait]
pub trait InvitationStore: Send + Sync {
    /// Pending users ordered by id, after the given id (keyset paging).
    async fn dormant_users(&self, after: Option<&str>, limit: u32)
    -> StoreResult<Vec<DormantUser>>;
    /// One user's turn, in one transaction: the user re-read (still
    /// pending, not blocked, with an email), the cooldown checked and the
    /// invitation recorded, its email queued, and the chunk's position and
    /// counters moved past the user. `Backend` error when another worker
    /// took the chunk over (nothing is written then).
    async fn invite(&self, invite: &Invite<'_>) -> StoreResult<Outcome>;
    /// Marks a campaign chunk done (every pending user was seen).
    async fn finish_campaign_chunk(&self, chunk: &Chunk, worker: &str) -> StoreResult<()>;
    /// A campaign's counters, summed over its chunks.
    async fn campaign_counters(&self, job_id: &str) -> StoreResult<CampaignCounters>;
}

#[async_trait]
impl InvitationStore for SqlStore {
    async fn dormant_users(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<DormantUser>> {
        let rows = sqlx::query(
            "SELECT u.id, u.email, u.blocked, u.upstream, u.upstream_last_login_at, u.created_at, i.sent_at \
             FROM users u LEFT JOIN invitations i ON i.user_id = u.id \
             WHERE u.state = $1 AND u.id > $2 ORDER BY u.id LIMIT $3",
        )
        .bind(UserState::Pending.as_str())
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DormantUser {
                    id: r.try_get("id")?,
                    email: r.try_get("email")?,
                    blocked: r.try_get::<i64, _>("blocked")? != 0,
                    upstream: r.try_get("upstream")?,
                    upstream_last_login: r.try_get("upstream_last_login_at")?,
                    created_at: r.try_get("created_at")?,
                    invited_at: r.try_get("sent_at")?,
                })
            })
            .collect()
    }

    async fn invite(&self, invite: &Invite<'_>) -> StoreResult<Outcome> {
        let lock = match self.dialect() {
            Dialect::Postgres => " FOR UPDATE",
            Dialect::Sqlite => "",
        };
        // A write transaction from the start (see `SqlStore::begin`): the
        // cooldown is read and the invitation written under one lock.
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT state, blocked, email FROM users WHERE id = $1{lock}"
        ))
        .bind(invite.user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match row {
            None => Outcome::NotPending,
            Some(row) => {
                let state: String = row.try_get("state")?;
                let email: Option<String> = row.try_get("email")?;
                if UserState::parse(&state) != Some(UserState::Pending) {
                    Outcome::NotPending
                } else if row.try_get::<i64, _>("blocked")? != 0 {
                    Outcome::Blocked
                } else if let Some(email) = email.filter(|e| !e.is_empty()) {
                    // The row lock of the conflicting insert makes a second
                    // campaign wait for the first's commit, then see its
                    // invitation (PostgreSQL docs, "INSERT … ON CONFLICT");
                    // SQLite has one writer.
                    let inserted = sqlx::query(
                        "INSERT INTO invitations (user_id, sent_at, job_id) VALUES ($1, $2, $3) \
                         ON CONFLICT (user_id) DO UPDATE SET sent_at = excluded.sent_at, \
                         job_id = excluded.job_id WHERE invitations.sent_at < $4 \
                         RETURNING user_id",
                    )
                    .bind(invite.user_id)
                    .bind(invite.now)
                    .bind(&invite.chunk.job_id)
                    .bind(invite.cooldown_since)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if inserted.is_some() {
                        enqueue_write(&mut tx, &(invite.email)(&email), invite.now).await?;
                        Outcome::Invited
                    } else {
                        Outcome::Cooldown
                    }
                } else {
                    Outcome::NoEmail
                }
            }
        };
        let counters: Option<String> = sqlx::query_scalar(
            "SELECT counters FROM job_chunks WHERE job_id = $1 AND seq = $2 AND claimed_by = $3 \
             AND state = $4",
        )
        .bind(&invite.chunk.job_id)
        .bind(invite.chunk.seq)
        .bind(invite.worker)
        .bind(ChunkState::Claimed.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(counters) = counters else {
            tx.rollback().await?;
            return Err(StoreError::Backend(
                "the campaign's chunk was taken over by another worker".into(),
            ));
        };
        let mut total: CampaignCounters = serde_json::from_str(&counters).unwrap_or_default();
        total.count(outcome);
        sqlx::query(
            "UPDATE job_chunks SET spec = $1, counters = $2, heartbeat = $3 \
             WHERE job_id = $4 AND seq = $5",
        )
        .bind(to_json(&invite.position.to_stored()))
        .bind(to_json(&total))
        .bind(invite.now)
        .bind(&invite.chunk.job_id)
        .bind(invite.chunk.seq)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn finish_campaign_chunk(&self, chunk: &Chunk, worker: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE job_chunks SET state = $1, heartbeat = $2 \
             WHERE job_id = $3 AND seq = $4 AND claimed_by = $5",
        )
        .bind(ChunkState::Done.as_str())
        .bind(super::now())
        .bind(&chunk.job_id)
        .bind(chunk.seq)
        .bind(worker)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn campaign_counters(&self, job_id: &str) -> StoreResult<CampaignCounters> {
        let mut total = CampaignCounters::default();
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT counters FROM job_chunks WHERE job_id = $1")
                .bind(job_id)
                .fetch_all(self.pool())
                .await?;
        for counters in rows {
            total.add(&serde_json::from_str(&counters).unwrap_or_default());
        }
        Ok(total)
    }
}
