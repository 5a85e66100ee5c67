//! `switchyard campaign reset`: the end game's invitations. Every pending
//! user (known from a backfill or an import, never signed in here) who is
//! not blocked and has an email is sent one `Invitation` email — a link to
//! set a password here — before the upstream is switched off.
//!
//! It runs as a resumable job ([`super::runner`]) with one chunk, a keyset
//! walk over the pending users by id ([`ChunkPosition::Campaign`]). Each
//! user's invitation, email (an outbox row) and the chunk's new position
//! are committed in one transaction, which also checks the cooldown
//! ([`crate::store::invitations`]): no user is emailed twice within it,
//! across resumes, crashes, and separate or concurrent campaigns.
//!
//! Invitations are paced at `--rate` a second by a ticking interval, which
//! sleeps between sends.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;
use serde_json::json;

use super::progress::Progress;
use super::runner::{Claim, Runner, WAIT};
use super::worker_id;
use crate::email::{EmailRequest, Message};
use crate::store::Database;
use crate::store::invitations::{CampaignCounters, DormantUser, Invite, Outcome};
use crate::store::jobs::{Chunk, Counters, Job, JobKind};
use crate::store::position::ChunkPosition;

/// Invitations a second unless `--rate` says otherwise: a pace most mail
/// relays accept without throttling.
pub const DEFAULT_RATE: f64 = 10.0;
/// No user is invited twice within this unless `--cooldown` says otherwise.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(7 * 86_400);
/// Pending users read per query.
const PAGE: u32 = 100;

#[derive(Debug, Clone, Default)]
pub struct CampaignOptions {
    pub resume: bool,
    pub dry_run: bool,
    /// Invitations a second; on `--resume`, the job's own when absent.
    pub rate: Option<f64>,
    /// At most this many invitations in this run.
    pub limit: Option<u64>,
    /// On `--resume`, the job's own when absent.
    pub cooldown: Option<Duration>,
    pub quiet: bool,
    /// A job queued from the admin API, started by this run.
    pub queued: Option<Job>,
}

/// `--cooldown`: `7d`, `12h`, `30m`, `90s`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a number of seconds, or 7d, 12h, 30m"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit is one of s, m, h, d")),
    };
    n.checked_mul(unit)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// What the campaign did: the job's counters over all its runs (this run's
/// only, for a dry run).
#[derive(Debug, Clone, Serialize)]
pub struct CampaignReport {
    pub job: Option<String>,
    pub dry_run: bool,
    #[serde(flatten)]
    pub counters: CampaignCounters,
    /// Invitations queued by this run.
    pub invited_this_run: u64,
    /// This run stopped at `--limit`; `--resume` continues.
    pub stopped_at_limit: bool,
}

impl CampaignReport {
    pub fn print(&self) {
        let c = &self.counters;
        let verb = if self.dry_run {
            "would be invited"
        } else {
            "invited"
        };
        println!(
            "{}{verb} {}, skipped (cooldown) {}, skipped (no email) {}, skipped (blocked) {}",
            self.job
                .as_ref()
                .map(|j| format!("job {j}: "))
                .unwrap_or_default(),
            c.invited,
            c.skipped_cooldown,
            c.skipped_no_email,
            c.skipped_blocked
        );
        if self.stopped_at_limit {
            println!(
                "stopped at --limit after {} invitations; continue with `switchyard campaign reset --resume`",
                self.invited_this_run
            );
        }
    }
}

/// How the campaign runs this time.
struct Plan {
    rate: f64,
    cooldown: Duration,
    limit: Option<u64>,
}

pub async fn run(db: Arc<dyn Database>, opts: &CampaignOptions) -> anyhow::Result<CampaignReport> {
    if let Some(rate) = opts.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        bail!("--rate must be a positive number of messages a second");
    }
    if opts.dry_run {
        let plan = Plan {
            rate: opts.rate.unwrap_or(DEFAULT_RATE),
            cooldown: opts.cooldown.unwrap_or(DEFAULT_COOLDOWN),
            limit: opts.limit,
        };
        return dry_run(&*db, &plan).await;
    }
    let unfinished = match &opts.queued {
        Some(_) => None,
        None => {
            super::runner::refuse_if_queued(&*db, JobKind::Campaign).await?;
            db.unfinished_job(JobKind::Campaign).await?
        }
    };
    let (runner, plan) = match unfinished {
        Some(job) if opts.resume => {
            let plan = resumed_plan(&job, opts);
            (Runner::resume(db.clone(), &job).await?, plan)
        }
        Some(job) => bail!(
            "campaign job {} did not finish: continue it with --resume",
            job.id
        ),
        None if opts.resume => bail!("there is no unfinished campaign to resume"),
        None => {
            let plan = Plan {
                rate: opts.rate.unwrap_or(DEFAULT_RATE),
                cooldown: opts.cooldown.unwrap_or(DEFAULT_COOLDOWN),
                limit: opts.limit,
            };
            let params = json!({"rate": plan.rate, "cooldown_secs": plan.cooldown.as_secs()});
            let first = ChunkPosition::Campaign { after: None };
            let runner = match &opts.queued {
                Some(queued) => Runner::start(db.clone(), queued, &[first]).await?,
                None => Runner::create(db.clone(), JobKind::Campaign, &params, &[first]).await?,
            };
            (runner, plan)
        }
    };
    let pending = db
        .user_counts(crate::store::now())
        .await?
        .by_state
        .get("pending")
        .copied()
        .unwrap_or(0);
    let done_before = db.campaign_counters(&runner.id).await?.total();
    db.set_job_total(&runner.id, pending + done_before).await?;
    let mut progress = Progress::new(&runner.id, Some(pending + done_before), opts.quiet);
    progress.set_total(pending + done_before, done_before);
    let mut run = Run {
        db: db.clone(),
        plan,
        ticker: None,
        invited: 0,
        progress: &mut progress,
    };
    let result = run.work(&runner).await;
    let invited_this_run = run.invited;
    progress.finish();
    let stopped_at_limit = match result {
        Ok(stopped) => stopped,
        Err(e) => {
            // Marks the job failed (it can be resumed) and returns the error.
            runner.finish(Err(e)).await?;
            bail!("the campaign failed");
        }
    };
    if !stopped_at_limit {
        runner.finish(Ok(())).await?;
    }
    Ok(CampaignReport {
        counters: db.campaign_counters(&runner.id).await?,
        job: Some(runner.id.clone()),
        dry_run: false,
        invited_this_run,
        stopped_at_limit,
    })
}

/// A resumed campaign keeps the rate and cooldown it began with, unless
/// given again.
fn resumed_plan(job: &Job, opts: &CampaignOptions) -> Plan {
    Plan {
        rate: opts
            .rate
            .or_else(|| job.params["rate"].as_f64())
            .unwrap_or(DEFAULT_RATE),
        cooldown: opts
            .cooldown
            .or_else(|| {
                job.params["cooldown_secs"]
                    .as_u64()
                    .map(Duration::from_secs)
            })
            .unwrap_or(DEFAULT_COOLDOWN),
        limit: opts.limit,
    }
}

/// What would happen now, from the users' rows alone; nothing is written.
async fn dry_run(db: &dyn Database, plan: &Plan) -> anyhow::Result<CampaignReport> {
    let since = crate::store::now() - plan.cooldown.as_secs() as i64;
    let mut counters = CampaignCounters::default();
    let mut after: Option<String> = None;
    let mut stopped_at_limit = false;
    'pages: loop {
        let page = db.dormant_users(after.as_deref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        for user in &page {
            if plan.limit.is_some_and(|l| counters.invited >= l) {
                stopped_at_limit = true;
                break 'pages;
            }
            counters.count(expected(user, since));
        }
    }
    Ok(CampaignReport {
        job: None,
        dry_run: true,
        invited_this_run: counters.invited,
        counters,
        stopped_at_limit,
    })
}

/// The outcome the user's row as read predicts; the transaction decides.
fn expected(user: &DormantUser, cooldown_since: i64) -> Outcome {
    if user.blocked {
        Outcome::Blocked
    } else if user.email.as_deref().is_none_or(str::is_empty) {
        Outcome::NoEmail
    } else if user.invited_at.is_some_and(|t| t >= cooldown_since) {
        Outcome::Cooldown
    } else {
        Outcome::Invited
    }
}

struct Run<'a> {
    db: Arc<dyn Database>,
    plan: Plan,
    /// Made at the first send, so that the first invitation goes at once.
    ticker: Option<tokio::time::Interval>,
    invited: u64,
    progress: &'a mut Progress,
}

impl Run<'_> {
    /// Works the job's chunks; true when stopped at `--limit`.
    async fn work(&mut self, runner: &Runner) -> anyhow::Result<bool> {
        let worker = worker_id(0);
        loop {
            match runner.claim(&worker).await? {
                Claim::Chunk(chunk) => {
                    let _beat = runner.heartbeat(&chunk, &worker);
                    if self.chunk(&chunk, &worker).await? {
                        return Ok(true);
                    }
                }
                Claim::Wait => tokio::time::sleep(WAIT).await,
                Claim::Done => return Ok(false),
            }
        }
    }

    /// Walks one chunk to its end; true when stopped at `--limit`.
    async fn chunk(&mut self, chunk: &Chunk, worker: &str) -> anyhow::Result<bool> {
        let ChunkPosition::Campaign { after } = &chunk.position else {
            bail!("campaign job {} has a chunk of another kind", chunk.job_id);
        };
        let mut after = after.clone();
        let mut so_far = self.db.campaign_counters(&chunk.job_id).await?;
        loop {
            super::runner::check_cancelled(&*self.db, &chunk.job_id).await?;
            let page = self.db.dormant_users(after.as_deref(), PAGE).await?;
            if page.is_empty() {
                self.db.finish_campaign_chunk(chunk, worker).await?;
                return Ok(false);
            }
            let mut handled = 0;
            for user in &page {
                if self.plan.limit.is_some_and(|l| self.invited >= l) {
                    self.show(handled, &so_far);
                    return Ok(true);
                }
                let now = crate::store::now();
                let cooldown_since = now - self.plan.cooldown.as_secs() as i64;
                if expected(user, cooldown_since) == Outcome::Invited {
                    self.pace().await;
                }
                let email = |to: &str| {
                    EmailRequest {
                        message: Message::Invitation,
                        to: to.to_string(),
                        authz: None,
                    }
                    .queued(&user.id)
                };
                let outcome = self
                    .db
                    .invite(&Invite {
                        chunk,
                        worker,
                        position: ChunkPosition::Campaign {
                            after: Some(user.id.clone()),
                        },
                        user_id: &user.id,
                        cooldown_since,
                        now: crate::store::now(),
                        email: &email,
                    })
                    .await?;
                if outcome == Outcome::Invited {
                    self.invited += 1;
                }
                so_far.count(outcome);
                after = Some(user.id.clone());
                handled += 1;
            }
            self.show(handled, &so_far);
        }
    }

    /// `n` more users handled: the bar moves on, with the job's counters
    /// (a log line per page without a terminal).
    fn show(&mut self, n: u64, so_far: &CampaignCounters) {
        if self.progress.has_bar() {
            // The bar's own message counts records; the note replaces it.
            self.progress.page(n, &Counters::default());
        }
        self.progress.note(&format!(
            "invited {}, skipped: cooldown {}, no email {}, blocked {}",
            so_far.invited,
            so_far.skipped_cooldown,
            so_far.skipped_no_email,
            so_far.skipped_blocked
        ));
    }

    /// Waits for the next send's turn: one every `1 / rate` seconds. The
    /// interval sleeps (no busy loop), and after a slow send it does not
    /// burst to catch up (`MissedTickBehavior::Delay`).
    async fn pace(&mut self) {
        let ticker = self.ticker.get_or_insert_with(|| {
            let period =
                Duration::from_secs_f64(1.0 / self.plan.rate).max(Duration::from_micros(1));
            let mut t = tokio::time::interval(period);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        ticker.tick().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooldowns_are_read_in_days_hours_minutes_or_seconds() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("3600"), Ok(Duration::from_secs(3_600)));
        for bad in ["", "d", "7w", "7 d", "-1", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
