//! `switchyard backfill`: every upstream user copied as a local user
//! (state `pending`: profile, identities, metadata, blocked state, no
//! password), through the Management API, as a resumable job.
//!
//! Workers (`--concurrency` in this process, plus any other process running
//! `backfill --resume` on the same PostgreSQL database) claim chunks and
//! commit page by page. A worker with nothing to claim waits while others
//! still hold chunks, so a chunk whose worker died (no heartbeat for
//! [`super::STALE_AFTER`], or a process of this host that is gone) is
//! taken over.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;

use super::progress::Progress;
use super::runner::{Claim, Runner, WAIT};
use super::source::{ExportFile, stream_export};
use super::{CrashHook, Report, worker_id};
use crate::config::Settings;
use crate::store::Database;
use crate::store::jobs::{Chunk, Counters, JobKind, PageCommit, Rejected};
use crate::store::position::ChunkPosition;
use crate::upstream::management::{Item, LinkExpired, ManagementClient, Page, initial_positions};
use crate::upstream::provider::Paging;

#[derive(Debug, Clone, Default)]
pub struct BackfillOptions {
    pub resume: bool,
    pub dry_run: bool,
    /// Only users updated since this RFC 3339 time.
    pub since: Option<String>,
    pub concurrency: Option<usize>,
    pub max_rate: Option<f64>,
    pub quiet: bool,
    /// How often an export job is polled.
    pub poll_interval: Option<Duration>,
    /// A job queued from the admin API, started by this run.
    pub queued: Option<crate::store::jobs::Job>,
}

/// Records per transaction when streaming an export file.
const EXPORT_BATCH: usize = 1000;

/// How pages are committed: to a job, or (a dry run) in transactions that
/// are rolled back, with the chunks kept in memory.
enum Sink {
    Job(Runner),
    Dry(std::sync::Mutex<Dry>),
}

#[derive(Default)]
struct Dry {
    queue: std::collections::VecDeque<ChunkPosition>,
    counters: Counters,
    issues: Vec<crate::store::jobs::Issue>,
    issues_total: u64,
}

struct Ctx {
    db: Arc<dyn Database>,
    client: Arc<ManagementClient>,
    sink: Sink,
    progress: tokio::sync::Mutex<Progress>,
    crash: std::sync::Mutex<CrashHook>,
    totals: std::sync::Mutex<Counters>,
    poll: Duration,
}

pub async fn run(
    db: Arc<dyn Database>,
    settings: &Settings,
    opts: &BackfillOptions,
) -> anyhow::Result<(Report, (u64, u64, u64))> {
    let upstream = settings
        .upstream
        .as_ref()
        .context("backfill copies users from the upstream: configure [upstream] first")?;
    let client = Arc::new(ManagementClient::new(
        upstream,
        opts.max_rate,
        opts.concurrency,
    )?);
    if let Some(since) = &opts.since {
        chrono::DateTime::parse_from_rfc3339(since)
            .with_context(|| format!("--since {since}: expected an RFC 3339 time"))?;
        if matches!(client.mgmt.paging, Paging::Cognito | Paging::FirstMax) {
            bail!(
                "--since: {} cannot list users by update time; run a full backfill",
                client.def.name
            );
        }
    }
    let chunks = initial_positions(client.mgmt.paging, opts.since.as_deref());
    let sink = if opts.dry_run {
        Sink::Dry(std::sync::Mutex::new(Dry {
            queue: chunks.into(),
            ..Dry::default()
        }))
    } else if let Some(job) = &opts.queued {
        Sink::Job(Runner::start(db.clone(), job, &chunks).await?)
    } else {
        super::runner::refuse_if_queued(&*db, JobKind::Backfill).await?;
        Sink::Job(match db.unfinished_job(JobKind::Backfill).await? {
            Some(job) if opts.resume => Runner::resume(db.clone(), &job).await?,
            Some(job) => bail!(
                "backfill job {} did not finish: resume it with --resume (from any instance)",
                job.id
            ),
            None if opts.resume => bail!("there is no unfinished backfill job to resume"),
            None => {
                Runner::create(
                    db.clone(),
                    JobKind::Backfill,
                    &json!({"provider": client.provider, "since": opts.since}),
                    &chunks,
                )
                .await?
            }
        })
    };
    let label = match &sink {
        Sink::Job(job) => job.id.clone(),
        Sink::Dry(_) => "backfill (dry run)".into(),
    };
    // SQLite has one writer: one worker. PostgreSQL: as many as asked.
    let workers = if settings.database_url.starts_with("sqlite:") || opts.dry_run {
        1
    } else {
        opts.concurrency.unwrap_or(2).max(1)
    };
    let ctx = Arc::new(Ctx {
        db: db.clone(),
        client: client.clone(),
        sink,
        progress: tokio::sync::Mutex::new(Progress::new(&label, None, opts.quiet)),
        crash: std::sync::Mutex::new(CrashHook::from_env()),
        totals: std::sync::Mutex::new(Counters::default()),
        poll: opts.poll_interval.unwrap_or(client.poll_interval()),
    });
    let has_bar = ctx.progress.lock().await.has_bar();
    // A queued job's total is kept with it for the dashboard's progress
    // and ETA (a CLI run asks only for its bar).
    let is_job = opts.queued.is_some();
    if (has_bar || is_job)
        && opts.since.is_none()
        && let Some(total) = client.total_users().await
    {
        if let Sink::Job(job) = &ctx.sink {
            db.set_job_total(&job.id, total).await?;
        }
        let done = match &ctx.sink {
            Sink::Job(job) => job.committed().await?,
            Sink::Dry(_) => 0,
        };
        ctx.progress.lock().await.set_total(total, done);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..workers {
        let ctx = ctx.clone();
        tasks.spawn(async move { ctx.work(worker_id(n)).await });
    }
    let mut failure = None;
    while let Some(result) = tasks.join_next().await {
        if let Err(e) = result.context("a backfill worker panicked").and_then(|r| r) {
            failure.get_or_insert(e);
            tasks.abort_all();
        }
    }
    ctx.progress.lock().await.finish();
    let report = match &ctx.sink {
        Sink::Job(job) => job.finish(failure.map_or(Ok(()), Err)).await.map_err(|e| {
            e.context(format!(
                "backfill job {} stopped; fix the cause and run backfill --resume",
                job.id
            ))
        })?,
        Sink::Dry(dry) => {
            if let Some(e) = failure {
                return Err(e);
            }
            let dry = dry.lock().unwrap_or_else(|p| p.into_inner());
            Report {
                job: None,
                dry_run: true,
                counters: dry.counters,
                issues: dry.issues.clone(),
                issues_total: dry.issues_total,
            }
        }
    };
    Ok((report, client.stats()))
}

impl Ctx {
    /// One worker: claim, process, repeat; wait while other workers hold
    /// the rest; stop when the job is done.
    async fn work(&self, worker: String) -> anyhow::Result<()> {
        loop {
            let chunk = match &self.sink {
                Sink::Dry(dry) => {
                    let next = dry
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .queue
                        .pop_front();
                    match next {
                        Some(position) => Chunk {
                            job_id: String::new(),
                            seq: 0,
                            position,
                        },
                        None => return Ok(()),
                    }
                }
                Sink::Job(job) => match job.claim(&worker).await? {
                    Claim::Chunk(chunk) => chunk,
                    Claim::Wait => {
                        tokio::time::sleep(WAIT).await;
                        continue;
                    }
                    Claim::Done => return Ok(()),
                },
            };
            let _beat = match &self.sink {
                Sink::Job(job) => Some(job.heartbeat(&chunk, &worker)),
                Sink::Dry(_) => None,
            };
            match &chunk.position {
                ChunkPosition::Auth0Export { job, records } => {
                    self.export(&chunk, job.clone(), *records).await?
                }
                _ => self.pages(&chunk).await?,
            }
        }
    }

    /// Commits a page with the chunk's next position.
    async fn commit(
        &self,
        chunk: &Chunk,
        position: ChunkPosition,
        done: bool,
        split: Vec<ChunkPosition>,
        items: Vec<Item>,
    ) -> anyhow::Result<()> {
        let n = items.len() as u64;
        let mut records = Vec::with_capacity(items.len());
        let mut rejected: Vec<Rejected> = Vec::new();
        for item in items {
            match item {
                Ok(r) => records.push(r),
                Err(e) => rejected.push(e),
            }
        }
        let dry = match &self.sink {
            Sink::Dry(dry) => Some(dry),
            Sink::Job(job) => {
                job.check_cancelled().await?;
                None
            }
        };
        let applied = self
            .db
            .commit_page(&PageCommit {
                chunk: dry.is_none().then_some((chunk, position)),
                done,
                split: if dry.is_some() {
                    Vec::new()
                } else {
                    split.clone()
                },
                records: &records,
                rejected: &rejected,
                provider: &self.client.provider,
                dry_run: dry.is_some(),
                order: None,
            })
            .await?;
        if let Some(dry) = dry {
            let mut dry = dry.lock().unwrap_or_else(|p| p.into_inner());
            dry.queue.extend(split);
            dry.counters.add(&applied.counters);
            let before = dry.issues.len();
            super::import::collect_issues(&mut dry.issues, &records, &rejected, &applied);
            dry.issues_total += (dry.issues.len() - before) as u64;
        } else if n > 0 {
            self.crash
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .page_committed();
        }
        let totals = {
            let mut t = self.totals.lock().unwrap_or_else(|p| p.into_inner());
            t.add(&applied.counters);
            *t
        };
        if n > 0 {
            self.progress.lock().await.page(n, &totals);
        }
        Ok(())
    }

    async fn pages(&self, chunk: &Chunk) -> anyhow::Result<()> {
        let mut at = chunk.position.clone();
        loop {
            let Page { items, next, split } = self.client.page(&at).await?;
            let done = next.is_none();
            if let Some(next) = next {
                at = next;
            }
            self.commit(chunk, at.clone(), done, split, items).await?;
            if done {
                return Ok(());
            }
        }
    }

    /// Auth0's full backfill: a users-export job (its id is committed
    /// first, so a resume polls the same job rather than starting another),
    /// its file downloaded and streamed in batches, each committed with the
    /// number of records consumed.
    async fn export(
        &self,
        chunk: &Chunk,
        mut job: Option<String>,
        mut records: u64,
    ) -> anyhow::Result<()> {
        let mut fresh = false;
        loop {
            let id = match &job {
                Some(j) => j.clone(),
                None => {
                    let j = self.client.start_export().await?;
                    job = Some(j.clone());
                    let at = ChunkPosition::Auth0Export {
                        job: job.clone(),
                        records,
                    };
                    self.commit(chunk, at, false, vec![], vec![]).await?;
                    j
                }
            };
            self.progress
                .lock()
                .await
                .note(&format!("waiting for the upstream's export job {id}"));
            let Some(location) = self.client.wait_for_export(&id, self.poll).await? else {
                // The next resume starts a fresh export.
                let at = ChunkPosition::Auth0Export {
                    job: None,
                    records: 0,
                };
                self.commit(chunk, at, false, vec![], vec![]).await?;
                bail!("the upstream's export job {id} failed");
            };
            let result = match ExportFile::download(&self.client, &id, &location).await {
                Ok(file) => self.stream_export(chunk, &id, records, file.path()).await,
                Err(e) => Err(e),
            };
            match result {
                Err(e) if e.is::<LinkExpired>() && !fresh => {
                    // The file's link lives minutes, so a resume long after
                    // the export finished finds it expired: a new export,
                    // read from its first record (a record applied twice
                    // changes nothing).
                    tracing::info!(job = id, "the export link expired; starting a new export");
                    fresh = true;
                    (job, records) = (None, 0);
                }
                result => return result,
            }
        }
    }

    async fn stream_export(
        &self,
        chunk: &Chunk,
        job: &str,
        skip: u64,
        path: &std::path::Path,
    ) -> anyhow::Result<()> {
        let (mut rx, reading) = stream_export(&self.client, path, skip, EXPORT_BATCH)?;
        let mut consumed = skip;
        let at = |records| ChunkPosition::Auth0Export {
            job: Some(job.to_string()),
            records,
        };
        while let Some(batch) = rx.recv().await {
            consumed += batch.len() as u64;
            self.commit(chunk, at(consumed), false, vec![], batch)
                .await?;
        }
        reading.await?;
        self.commit(chunk, at(consumed), true, vec![], vec![]).await
    }
}
