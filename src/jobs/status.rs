//! `switchyard status`: users by state, recent migrations, and the jobs
//! with their progress.

use serde::Serialize;

use crate::store::Database;
use crate::store::jobs::{JobSummary, UserCounts};

#[derive(Debug, Serialize)]
pub struct Status {
    pub users: UserCounts,
    pub jobs: Vec<JobSummary>,
}

/// The status, with the `jobs` most recent jobs (and `issues` of each).
pub async fn collect(db: &dyn Database, jobs: u32, issues: u32) -> anyhow::Result<Status> {
    let users = db.user_counts(crate::store::now()).await?;
    let mut summaries = Vec::new();
    for job in db.list_jobs(jobs).await? {
        summaries.push(db.job_summary(&job.id, issues).await?);
    }
    Ok(Status {
        users,
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
        if self.jobs.is_empty() {
            println!("no jobs");
        }
        for s in &self.jobs {
            let c = &s.counters;
            println!(
                "job {} ({}): {}{} — chunks {}/{}, records {} (created {}, updated {}, unchanged {}, conflicts {}, failed {})",
                s.job.id,
                s.job.kind,
                s.job.state,
                s.job
                    .error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default(),
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
