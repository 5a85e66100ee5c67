//! `switchyard import FILE`: streams a file's users into the store as a
//! resumable job. A blocking thread reads and parses (see [`super::files`])
//! while the async side commits the previous batch, each batch together
//! with the number of records consumed so far, so `--resume` skips exactly
//! what was committed.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::json;

use super::files::{self, Format};
use super::progress::Progress;
use super::runner::{Claim, Runner};
use super::{CrashHook, Report, worker_id};
use crate::store::Database;
use crate::store::jobs::{Chunk, Counters, Issue, JobKind, JobState, PageCommit, Rejected};
use crate::store::position::ChunkPosition;
use crate::upstream::management::Item;

/// Records per transaction, by default. 5,000 gained 6 % in the import
/// bench and cost three times the memory (the reader runs four batches ahead).
pub const BATCH: usize = 1000;

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub path: String,
    pub format: Option<Format>,
    /// The provider the users are recorded as coming from; default: the
    /// format's, else the configured upstream's.
    pub provider: Option<String>,
    pub dry_run: bool,
    /// Stop at the first bad record (the batch holding it is not written).
    pub strict: bool,
    pub resume: bool,
    pub quiet: bool,
    /// Records per transaction (and per resumable step).
    pub batch: usize,
    /// A job queued from the admin API (an uploaded file), started by
    /// this run; its parameters name the same file, format and provider.
    pub queued: Option<crate::store::jobs::Job>,
}

pub async fn run(db: Arc<dyn Database>, opts: &ImportOptions) -> anyhow::Result<Report> {
    // The job names the file by its absolute path, so a resume from another
    // directory finds it.
    let file = std::fs::canonicalize(&opts.path)
        .map(|p| p.to_string_lossy().to_string())
        .unwrap_or_else(|_| opts.path.clone());

    // The unfinished job of this file, looked up first: a resume reads the
    // file the way the job began reading it.
    let resuming = if opts.dry_run || opts.queued.is_some() {
        None
    } else {
        match db.unfinished_job(JobKind::Import).await? {
            Some(job) if job.params["path"] == json!(file) => {
                // A job that failed before committing a single record has
                // no position worth keeping: a plain run starts afresh.
                let empty = job.state == JobState::Failed
                    && db.job_summary(&job.id, 0).await?.counters.total() == 0;
                match (opts.resume, empty) {
                    (true, _) => Some(job),
                    (false, true) => None,
                    (false, false) => bail!(
                        "job {} is importing this file and did not finish: run again with --resume",
                        job.id
                    ),
                }
            }
            Some(job) if opts.resume => bail!(
                "no unfinished import of {} to resume (the latest unfinished import, job {}, is of {})",
                opts.path,
                job.id,
                job.params["path"].as_str().unwrap_or("another file")
            ),
            _ if opts.resume => bail!("no unfinished import of {} to resume", opts.path),
            _ => None,
        }
    };
    let job_format = resuming
        .as_ref()
        .and_then(|j| serde_json::from_value::<Format>(j.params["format"].clone()).ok());

    let format = match (opts.format, job_format, &resuming) {
        // Its committed position counts records as the job's format read
        // them: another format would skip a different stretch of the file.
        (Some(asked), Some(began), Some(job)) if asked != began => bail!(
            "job {} imports this file as {}: resume it with --format {} (or without --format)",
            job.id,
            began.name(),
            began.name()
        ),
        (Some(f), ..) => f,
        (None, Some(f), _) => f,
        (None, None, _) => {
            let mut head = Vec::new();
            let mut reader =
                files::open(&opts.path).with_context(|| format!("opening {}", opts.path))?;
            let peek = reader.fill_buf()?;
            head.extend_from_slice(&peek[..peek.len().min(4096)]);
            Format::detect(&opts.path, &head).with_context(|| {
                format!("cannot tell the format of {}: pass --format", opts.path)
            })?
        }
    };
    let provider = opts
        .provider
        .clone()
        .or_else(|| format.provider().map(String::from))
        .unwrap_or_else(|| "import".into());
    if let Some(job) = &resuming
        && job.params["provider"] != json!(provider)
    {
        // Half the users recorded as coming from one provider and half
        // from another would send their logins to different upstreams.
        let began = job.params["provider"].as_str().unwrap_or("?");
        bail!(
            "job {} records its users as coming from {began}, not {provider}: resume it with --provider {began}",
            job.id
        );
    }

    // The header (CSV) is read before any job exists, so a file that is
    // not what it claims to be leaves nothing behind to resume.
    let reader = files::open(&opts.path).with_context(|| format!("opening {}", opts.path))?;
    let items = files::records(reader, format)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading {} as {}", opts.path, format.name()))?;

    // The job and how far it got.
    let worker = worker_id(0);
    let job = match (opts.dry_run, resuming) {
        (true, _) => None,
        (false, Some(job)) => Some(Runner::resume(db.clone(), &job).await?),
        (false, None) => Some(match &opts.queued {
            Some(queued) => {
                Runner::start(db.clone(), queued, &[ChunkPosition::File { records: 0 }]).await?
            }
            None => {
                Runner::create(
                    db.clone(),
                    JobKind::Import,
                    &json!({"path": file, "format": format, "provider": provider}),
                    &[ChunkPosition::File { records: 0 }],
                )
                .await?
            }
        }),
    };
    let Some(job) = job else {
        let report = import_items(db, opts, items, &provider, None).await?;
        return report.context("a dry run reports what it would do");
    };
    let chunk = match job.claim(&worker).await? {
        Claim::Chunk(chunk) => chunk,
        Claim::Wait | Claim::Done => {
            bail!("another worker is running this import; it cannot be shared")
        }
    };
    let _beat = job.heartbeat(&chunk, &worker);
    let result = import_items(db.clone(), opts, items, &provider, Some(&chunk)).await;
    job.finish(result.map(|_| ())).await
}

/// Reads `items` (the rest of the file past the job's position) into the
/// store, batch by batch; a dry run's report (a job's is the job's own).
async fn import_items(
    db: Arc<dyn Database>,
    opts: &ImportOptions,
    items: Box<dyn Iterator<Item = Item> + Send>,
    provider: &str,
    chunk: Option<&Chunk>,
) -> anyhow::Result<Option<Report>> {
    let provider = provider.to_string();
    let chunk = chunk.cloned();
    let skip = match chunk.as_ref().map(|c| &c.position) {
        Some(ChunkPosition::File { records }) => *records,
        Some(other) => bail!("an import chunk cannot be at {other:?}"),
        None => 0,
    };
    // Reading and parsing on a blocking thread, a batch ahead.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Item>>(4);
    let size = opts.batch.max(1);
    let reading = tokio::task::spawn_blocking(move || {
        let mut items = items.skip(skip as usize);
        loop {
            let batch: Vec<Item> = items.by_ref().take(size).collect();
            if batch.is_empty() || tx.blocking_send(batch).is_err() {
                return;
            }
        }
    });

    let label = chunk
        .as_ref()
        .map_or_else(|| "import (dry run)".into(), |c| c.job_id.clone());
    let mut tally = Tally {
        progress: Progress::new(&label, None, opts.quiet),
        crash: CrashHook::from_env(),
        totals: Counters::default(),
        dry_issues: Vec::new(),
    };
    // Duplicate ids across batches, as 64-bit fingerprints (8 bytes a
    // record; a collision between two ids is ~1 in 10^7 at a billion users).
    let hasher = RandomState::new();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut consumed = skip;
    let parallel = db.parallel_pages();
    let mut in_flight: tokio::task::JoinSet<anyhow::Result<Done>> = tokio::task::JoinSet::new();
    let (order_tx, order_rx) = tokio::sync::watch::channel(0u64);
    let mut seq = 0u64;
    let mut in_flight_keys: std::collections::VecDeque<HashSet<u64>> = Default::default();
    while let Some(batch) = rx.recv().await {
        let n = batch.len() as u64;
        let mut records = Vec::with_capacity(batch.len());
        let mut rejected = Vec::new();
        for item in batch {
            match item {
                Ok(r) if !seen.insert(hasher.hash_one(&r.id)) => rejected.push(Rejected {
                    line: r.line,
                    user_id: Some(r.id),
                    reason: "duplicate id: the same user appears earlier in the file".into(),
                }),
                Ok(r) => records.push(r),
                Err(e) => rejected.push(e),
            }
        }
        if opts.strict
            && let Some(bad) = rejected.first()
        {
            let why = format!(
                "line {}: {} (--strict: nothing from this batch was written)",
                bad.line.unwrap_or(0),
                bad.reason
            );
            // The batches before it commit; the caller marks the job failed.
            while in_flight.join_next().await.is_some() {}
            bail!(why);
        }
        if let Some(c) = &chunk {
            super::runner::check_cancelled(&*db, &c.job_id).await?;
        }
        consumed += n;
        seq += 1;
        // On PostgreSQL the next batch is applied while this one commits;
        // positions still commit in order (`PageCommit::order`), so a crash
        // never leaves a later batch committed behind an earlier one.
        // Two batches in flight that insert the same email, username or
        // linked identity would wait on each other's unique-index entry
        // while the later one waits for the earlier to commit: such a
        // batch waits for those in flight instead.
        let keys = login_keys(&hasher, &records);
        if in_flight_keys
            .iter()
            .any(|earlier| !earlier.is_disjoint(&keys))
        {
            tally.settle(&mut in_flight, true, opts).await?;
            in_flight_keys.clear();
        }
        while in_flight.len() >= parallel {
            // Batches commit in order, so when any has finished the oldest
            // has committed: its keys can no longer be waited on.
            in_flight_keys.pop_front();
            tally.settle(&mut in_flight, false, opts).await?;
        }
        let (db, chunk, provider, order) = (
            db.clone(),
            chunk.clone(),
            provider.clone(),
            order_rx.clone(),
        );
        let (order_tx, dry_run) = (order_tx.clone(), opts.dry_run);
        in_flight_keys.push_back(keys);
        in_flight.spawn(async move {
            let position = ChunkPosition::File { records: consumed };
            let applied = db
                .commit_page(&PageCommit {
                    chunk: chunk.as_ref().map(|c| (c, position)),
                    done: false,
                    split: Vec::new(),
                    records: &records,
                    rejected: &rejected,
                    provider: &provider,
                    dry_run,
                    order: Some((&order, seq)),
                })
                .await?;
            order_tx.send_modify(|v| *v = (*v).max(seq));
            anyhow::Ok(Done {
                n,
                records,
                rejected,
                applied,
            })
        });
    }
    tally.settle(&mut in_flight, true, opts).await?;
    reading.await.context("the file reader stopped")?;
    tally.progress.finish();
    match &chunk {
        Some(c) => {
            db.commit_page(&PageCommit {
                chunk: Some((c, ChunkPosition::File { records: consumed })),
                done: true,
                split: Vec::new(),
                records: &[],
                rejected: &[],
                provider: &provider,
                dry_run: false,
                order: None,
            })
            .await?;
            // The report is the job's, read back when it finishes.
            Ok(None)
        }
        None => Ok(Some(Report {
            job: None,
            dry_run: true,
            counters: tally.totals,
            issues_total: tally.dry_issues.len() as u64,
            issues: tally.dry_issues.into_iter().take(50).collect(),
        })),
    }
}

/// What a batch inserts into unique indexes besides user ids (which are
/// unique across batches already), as 64-bit fingerprints: a collision
/// only makes a batch wait for the ones in flight.
fn login_keys(hasher: &RandomState, records: &[crate::store::record::Record]) -> HashSet<u64> {
    let mut keys = HashSet::with_capacity(records.len() * 2);
    for r in records {
        if let Some(e) = &r.profile.email {
            keys.insert(hasher.hash_one(("e", crate::store::sql::normalize_email(e))));
        }
        if let Some(u) = &r.profile.username {
            keys.insert(hasher.hash_one(("u", u)));
        }
        for i in r.identities.iter().filter(|i| **i != r.id) {
            keys.insert(hasher.hash_one(("i", i)));
        }
    }
    keys
}

/// A batch applied, with what it was made of (for a dry run's report).
struct Done {
    n: u64,
    records: Vec<crate::store::record::Record>,
    rejected: Vec<Rejected>,
    applied: crate::store::jobs::Applied,
}

/// What the batches have done so far.
struct Tally {
    progress: Progress,
    crash: CrashHook,
    totals: Counters,
    dry_issues: Vec<Issue>,
}

impl Tally {
    /// Waits for the next batch in flight (or for all of them) and adds
    /// it to the totals, the report and the progress.
    async fn settle(
        &mut self,
        in_flight: &mut tokio::task::JoinSet<anyhow::Result<Done>>,
        all: bool,
        opts: &ImportOptions,
    ) -> anyhow::Result<()> {
        while let Some(done) = in_flight.join_next().await {
            let done = done.context("an import batch panicked")??;
            if opts.strict
                && done
                    .applied
                    .actions
                    .iter()
                    .any(|a| matches!(a, crate::store::record::Action::Failed(_)))
            {
                bail!("a record failed while applying (--strict)");
            }
            self.totals.add(&done.applied.counters);
            if opts.dry_run {
                collect_issues(
                    &mut self.dry_issues,
                    &done.records,
                    &done.rejected,
                    &done.applied,
                );
            } else {
                self.crash.page_committed();
            }
            self.progress.page(done.n, &self.totals);
            if !all {
                break;
            }
        }
        Ok(())
    }
}

/// A dry run writes nothing, so its issues are kept in memory (the first
/// few hundred are enough for a report).
pub(super) fn collect_issues(
    into: &mut Vec<Issue>,
    records: &[crate::store::record::Record],
    rejected: &[Rejected],
    applied: &crate::store::jobs::Applied,
) {
    use crate::store::record::Action;
    if into.len() > 500 {
        return;
    }
    for (r, a) in records.iter().zip(&applied.actions) {
        let (kind, reason) = match a {
            Action::Conflict(why) => ("conflict", why),
            Action::Failed(why) => ("failed", why),
            _ => continue,
        };
        into.push(Issue {
            kind: kind.into(),
            user_id: Some(r.id.clone()),
            line: r.line.map(|l| l as i64),
            reason: reason.clone(),
        });
    }
    for r in rejected {
        into.push(Issue {
            kind: "failed".into(),
            user_id: r.user_id.clone(),
            line: r.line.map(|l| l as i64),
            reason: r.reason.clone(),
        });
    }
    for n in &applied.notes {
        into.push(Issue {
            kind: "note".into(),
            user_id: Some(n.user_id.clone()),
            line: n.line.map(|l| l as i64),
            reason: n.reason.clone(),
        });
    }
}
