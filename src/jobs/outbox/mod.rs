//! The outbox worker: delivers the writes the migration owes the upstream
//! while it is still the primary, away from any request.
//!
//! `serve` runs one per instance. It claims due rows
//! ([`crate::store::outbox`]), delivers each by its kind — a write to the
//! upstream through the [`ManagementClient`] (its authentication, pacing and
//! `Retry-After` handling), an email through the mailer ([`crate::email`]) — and
//! records the result. A failure is retried
//! with exponential backoff and jitter (AWS Architecture Blog, "Exponential
//! Backoff And Jitter"); after `outbox_max_attempts`, or at once when the
//! upstream refuses the write outright (a 4xx: no such user, a missing
//! scope) or a mail server refuses a message for good (a 5xx reply), the
//! row turns `failed` and stays for an operator. Email is paced by
//! `[email] retry_secs` and `poll_secs`, the upstream writes by
//! `[upstream.management]`. Every result is counted in
//! `switchyard_outbox_writes`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::email::Undeliverable;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::store::now;
use crate::store::outbox::{OutboxKind, OutboxRow};
use crate::upstream::management::{ManagementClient, Refused};

/// Tries of one request within one delivery attempt: room for a renewed
/// token and one quick retry of a dropped connection; the outbox's own
/// schedule takes over after that.
const REQUEST_ATTEMPTS: u32 = 3;
/// Rows claimed at a time.
const BATCH: u32 = 4;
/// A claim older than this is taken over: its worker died mid-delivery. A
/// batch's deliveries, each bounded by the client's timeouts, end well
/// within it.
const LEASE: Duration = Duration::from_secs(600);
/// The longest wait between two attempts of a row.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// How rows are retried.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_attempts: u32,
    /// Before the first retry; doubled for each further one.
    pub retry: Duration,
    /// Between looks at an idle outbox.
    pub poll: Duration,
}

impl Policy {
    fn from_settings(m: &crate::config::ManagementSettings) -> Self {
        let secs = |v: Option<f64>, default: f64| Duration::from_secs_f64(v.unwrap_or(default));
        Self {
            max_attempts: m.outbox_max_attempts.unwrap_or(10).max(1),
            retry: secs(m.outbox_retry_secs, 30.0),
            poll: secs(m.outbox_poll_secs, 5.0),
        }
    }

    /// Email's: its own pace (`[email] retry_secs`, `poll_secs`), the
    /// upstream writes' number of attempts.
    fn for_email(e: &crate::config::EmailSettings, writes: &Policy) -> Self {
        let secs = |v: Option<f64>, default: f64| {
            // Nothing negative, and no zero wait that would spin.
            v.and_then(|v| Duration::try_from_secs_f64(v).ok())
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs_f64(default))
        };
        Self {
            max_attempts: writes.max_attempts,
            retry: secs(e.retry_secs, 30.0),
            poll: secs(e.poll_secs, 5.0),
        }
    }

    /// The wait after a row's `attempts`-th failure, jittered into its
    /// upper half so that rows failed together do not retry together.
    pub fn backoff(&self, attempts: i64) -> Duration {
        let doubled = self
            .retry
            .saturating_mul(1u32 << attempts.clamp(0, 20) as u32)
            .min(MAX_BACKOFF);
        let mut b = [0u8; 4];
        let _ = aws_lc_rs::rand::fill(&mut b);
        let f = f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX);
        doubled.mul_f64(0.5 + f / 2.0)
    }
}

mod email;
mod write_back;

pub struct Worker {
    state: AppState,
    /// The attribute name override, if any.
    attribute: Option<String>,
    policy: Policy,
    /// For `email` rows.
    email_policy: Policy,
    /// Names this worker's claims.
    id: String,
}

/// What one delivery came to.
enum Outcome {
    Done,
    Retry(String),
    /// The upstream refused the write outright (a 4xx).
    GiveUp(String),
}

impl Worker {
    /// The worker for `state`'s settings. Fails when they ask for a write
    /// that cannot be made (no Management API credentials).
    pub fn new(state: &AppState) -> anyhow::Result<Self> {
        let management = state.settings.upstream.as_ref().map(|up| &up.management);
        // The writes share the state's Management API client (one token,
        // one pacer for the upstream's quota) with the blocking writes and
        // the Management API on Switchyard.
        if let Some(up) = state.settings.upstream.as_ref()
            && (up.management.mark_migrated || !up.management.write_back.is_empty())
        {
            let client = match state.write_back.upstream() {
                Some(client) => client,
                // The writer could not build it: the same call says why.
                None => {
                    ManagementClient::new(up, None, None).context(
                        "upstream.management.mark_migrated and write_back need the Management API",
                    )?;
                    anyhow::bail!(
                        "upstream.management.mark_migrated and write_back need the Management API"
                    );
                }
            };
            if up.management.mark_migrated {
                let sample = serde_json::json!({
                    "upstream_id": "sample",
                    "username": "sample",
                    "migrated_at": "2026-01-01T00:00:00Z",
                });
                client
                    .mark_request(&sample, up.management.mark_migrated_attribute.as_deref())
                    .context("upstream.management.mark_migrated")?;
            }
        }
        let policy = Policy::from_settings(&management.cloned().unwrap_or_default());
        Ok(Self {
            state: state.clone(),
            attribute: management.and_then(|m| m.mark_migrated_attribute.clone()),
            email_policy: Policy::for_email(&state.settings.email, &policy),
            policy,
            id: format!(
                "outbox-{}-{}",
                std::process::id(),
                &crate::crypto::random_token()[..8]
            ),
        })
    }

    /// The Management API client, for a row that writes to the upstream.
    fn upstream(&self) -> anyhow::Result<&ManagementClient> {
        self.state.write_back.upstream().context(
            "this row writes to the upstream, and no [upstream.management] write is configured",
        )
    }

    /// Delivers due rows until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        loop {
            match self.run_once().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "the outbox could not be read"),
            }
            tokio::time::sleep(self.policy.poll.min(self.email_policy.poll)).await;
        }
    }

    /// Claims one batch of due rows and delivers it; returns how many.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let now = now();
        let rows = self
            .state
            .db
            .claim_outbox(&self.id, now, now - LEASE.as_secs() as i64, BATCH)
            .await?;
        for row in &rows {
            let outcome = self.deliver(row).await;
            self.record(row, outcome).await?;
        }
        Ok(rows.len())
    }

    fn policy(&self, kind: OutboxKind) -> &Policy {
        match kind {
            OutboxKind::Email => &self.email_policy,
            _ => &self.policy,
        }
    }

    async fn deliver(&self, row: &OutboxRow) -> Outcome {
        let result = match row.kind {
            OutboxKind::MarkMigrated => match self.upstream() {
                Ok(client) => {
                    client
                        .mark_migrated(&row.payload, self.attribute.as_deref(), REQUEST_ATTEMPTS)
                        .await
                }
                Err(e) => Err(e),
            },
            OutboxKind::Email => self.deliver_email(row).await,
            OutboxKind::WritePassword
            | OutboxKind::WriteProfile
            | OutboxKind::WriteBlocked
            | OutboxKind::WriteDelete => self.deliver_write(row).await,
        };
        match result {
            Ok(()) => Outcome::Done,
            Err(e)
                if e.downcast_ref::<Refused>().is_some()
                    || e.downcast_ref::<Undeliverable>().is_some() =>
            {
                Outcome::GiveUp(format!("{e:#}"))
            }
            Err(e) => Outcome::Retry(format!("{e:#}")),
        }
    }

    async fn record(&self, row: &OutboxRow, outcome: Outcome) -> anyhow::Result<()> {
        let db = &self.state.db;
        let policy = self.policy(row.kind);
        let refused = matches!(outcome, Outcome::GiveUp(_));
        let (result, kept) = match outcome {
            Outcome::Done => ("done", db.outbox_done(row.id, &self.id).await?),
            Outcome::Retry(error) if row.attempts + 1 < i64::from(policy.max_attempts) => {
                let wait = policy.backoff(row.attempts);
                tracing::warn!(
                    outbox = row.id, kind = %row.kind, user = %row.user_id, attempt = row.attempts + 1,
                    retry_in_s = wait.as_secs(), %error, "outbox write failed; will retry"
                );
                let at = now() + wait.as_secs_f64().ceil() as i64;
                (
                    "retry",
                    db.outbox_failed(row.id, &self.id, &error, at, false)
                        .await?,
                )
            }
            Outcome::Retry(error) | Outcome::GiveUp(error) => {
                tracing::error!(
                    outbox = row.id, kind = %row.kind, user = %row.user_id, attempts = row.attempts + 1,
                    %error, "outbox write failed for good; `switchyard outbox retry` sends it again"
                );
                (
                    "failed",
                    db.outbox_failed(row.id, &self.id, &error, now(), true)
                        .await?,
                )
            }
        };
        if kept {
            Metrics::count(&self.state.metrics.outbox, row.kind.as_str(), result);
            if let Some(kind) = crate::upstream::management::write_back::write_kind(row.kind) {
                let result = if refused { "refused" } else { result };
                Metrics::count(&self.state.metrics.writeback, kind.name(), result);
            }
        } else {
            // An operator discarded or retried the row meanwhile: theirs wins.
            tracing::info!(outbox = row.id, "outbox row changed while it was delivered");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_jitter_and_is_capped() {
        let p = Policy {
            max_attempts: 10,
            retry: Duration::from_secs(30),
            poll: Duration::from_secs(5),
        };
        for attempts in 0..4 {
            let full = Duration::from_secs(30 << attempts);
            let b = p.backoff(attempts);
            assert!(b >= full / 2 && b <= full, "{attempts}: {b:?}");
        }
        assert!(p.backoff(40) <= MAX_BACKOFF);
        assert!(p.backoff(40) >= MAX_BACKOFF / 2);
    }
}
