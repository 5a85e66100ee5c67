//! `switchyard status`: users by state, recent migrations, the write
//! outbox, and the jobs with their progress.

use serde::Serialize;

use std::collections::BTreeMap;

use crate::store::Database;
use crate::store::invitations::CampaignCounters;
use crate::store::jobs::{JobKind, JobSummary, UserCounts};
use crate::store::outbox::OutboxCounts;
use crate::upstream::management::write_back;

/// Failed outbox rows shown with their last error.
pub const OUTBOX_FAILURES_SHOWN: u32 = 5;

#[derive(Debug, Serialize)]
pub struct Status {
    pub users: UserCounts,
    /// Writes owed to the upstream: a failed one stays until an operator
    /// retries or discards it (`switchyard outbox`).
    pub outbox: OutboxCounts,
    pub jobs: Vec<JobSummary>,
    /// The counters of the campaign jobs among `jobs`, by job id: a
    /// campaign counts invitations, not records.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub campaigns: BTreeMap<String, CampaignCounters>,
}

/// The counters of the campaign jobs among `jobs`.
pub async fn campaign_counters(
    db: &dyn Database,
    jobs: &[JobSummary],
) -> anyhow::Result<BTreeMap<String, CampaignCounters>> {
    let mut campaigns = BTreeMap::new();
    for s in jobs.iter().filter(|s| s.job.kind == JobKind::Campaign) {
        campaigns.insert(s.job.id.clone(), db.campaign_counters(&s.job.id).await?);
    }
    Ok(campaigns)
}

/// The status, with the `jobs` most recent jobs (and `issues` of each).
pub async fn collect(db: &dyn Database, jobs: u32, issues: u32) -> anyhow::Result<Status> {
    let users = db.user_counts(crate::store::now()).await?;
    let outbox = db.outbox_counts(OUTBOX_FAILURES_SHOWN).await?;
    let mut summaries = Vec::new();
    for job in db.list_jobs(jobs).await? {
        summaries.push(db.job_summary(&job.id, issues).await?);
    }
    Ok(Status {
        users,
        outbox,
        campaigns: campaign_counters(db, &summaries).await?,
        jobs: summaries,
    })
}

impl Status {
    pub fn print(&self) {
        let u = &self.users;
        println!("users: {}", u.total);
        for state in ["pending", "shadow", "migrated", "local"] {
            println!(
                "  {state:<9} {}",
                u.by_state.get(state).copied().unwrap_or(0)
            );
        }
        println!("  blocked   {}", u.blocked);
        println!(
            "migrated in the last day: {}, in the last week: {}",
            u.migrated_last_day, u.migrated_last_week
        );
        let o = &self.outbox;
        println!(
            "outbox: {} pending, {} failed, {} done",
            o.pending, o.failed, o.done
        );
        for row in &o.recent_failures {
            println!(
                "  failed #{} {} {} after {} attempt(s): {}",
                row.id,
                row.kind,
                row.user_id,
                row.attempts,
                row.last_error.as_deref().unwrap_or("-")
            );
        }
        let write_backs: Vec<String> = o
            .failed_last_day
            .iter()
            .filter_map(|(kind, n)| {
                let kind = write_back::write_kind(*kind)?;
                Some(format!("{} {n}", kind.name()))
            })
            .collect();
        if !write_backs.is_empty() {
            println!(
                "write-back failures in the last day: {}",
                write_backs.join(", ")
            );
        }
        if o.failed > o.recent_failures.len() as u64 {
            println!("  … `switchyard outbox list --failed` shows them all");
        }
        if self.jobs.is_empty() {
            println!("no jobs");
        }
        for s in &self.jobs {
            let head = format!(
                "job {} ({}): {}{}",
                s.job.id,
                s.job.kind,
                s.job.state,
                s.job
                    .error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
            if let Some(c) = self.campaigns.get(&s.job.id) {
                println!(
                    "{head} — invited {}, skipped (cooldown) {}, skipped (no email) {}, skipped (blocked) {}",
                    c.invited, c.skipped_cooldown, c.skipped_no_email, c.skipped_blocked
                );
                continue;
            }
            let c = &s.counters;
            println!(
                "{head} — chunks {}/{}, records {} (created {}, updated {}, unchanged {}, conflicts {}, failed {})",
                s.chunks_done,
                s.chunks_total,
                c.total(),
                c.created,
                c.updated,
                c.unchanged,
                c.conflicts,
                c.failed
            );
            for issue in &s.issues {
                println!("    {issue}");
            }
        }
    }
}
