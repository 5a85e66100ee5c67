//! Jobs from the browser and the API: what runs and ran (progress, rate,
//! ETA, issues), starting a backfill, verify, import or reset campaign,
//! and cancelling one.
//!
//! A job started here is queued; a `serve` instance with `[admin]
//! run_jobs` starts it ([`crate::jobs::server`]) through the same code as
//! the CLI, so it is resumable the same way. An import's file is uploaded
//! first (streamed to `[admin] upload_dir`, at most `[admin]
//! max_upload_bytes`).

use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use clap::ValueEnum as _;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::API;
use super::access::{ApiOperator, CsrfForm, Operator, PageOperator};
use super::audit::record_change;
use super::pages::{Section, render};
use super::problem::{ApiJson, Problem};
use crate::jobs::files::{self, Format};
use crate::jobs::new_job_id;
use crate::state::AppState;
use crate::store::jobs::{Counters, Issue, Job, JobKind, JobState};

/// Jobs a list shows.
const LIST_LIMIT: u32 = 50;
/// Issues a job's page shows.
const ISSUES_SHOWN: u32 = 200;

/// A job to start, as `POST /jobs` takes it (an import is uploaded to
/// `POST /jobs/import` instead).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum NewJob {
    /// Every upstream user copied through its Management API.
    Backfill {
        /// Only users updated since this RFC 3339 time.
        #[serde(default)]
        since: Option<String>,
        /// Upstream requests a second.
        #[serde(default)]
        max_rate: Option<f64>,
        /// Workers (PostgreSQL; SQLite runs one).
        #[serde(default)]
        concurrency: Option<usize>,
    },
    /// Both sides compared record by record; the report is kept with the job.
    Verify {
        #[serde(default)]
        max_rate: Option<f64>,
        #[serde(default)]
        concurrency: Option<usize>,
    },
    /// Invitations to the users who have not moved yet.
    Campaign {
        /// Invitations a second.
        #[serde(default)]
        rate: Option<f64>,
        /// At most this many invitations.
        #[serde(default)]
        limit: Option<u64>,
        /// No user invited twice within this (`7d`, `12h`, `30m`, seconds).
        #[serde(default)]
        cooldown: Option<String>,
    },
    /// Refused with a pointer to the upload endpoint.
    Import {},
}

impl NewJob {
    fn kind(&self) -> JobKind {
        match self {
            Self::Backfill { .. } => JobKind::Backfill,
            Self::Verify { .. } => JobKind::Verify,
            Self::Campaign { .. } => JobKind::Campaign,
            Self::Import {} => JobKind::Import,
        }
    }

    /// The parameters stored with the queued job (what the runner reads).
    fn params(&self, state: &AppState) -> Result<Value, Problem> {
        let positive = |name: &str, v: Option<f64>| match v {
            Some(r) if !(r.is_finite() && r > 0.0) => Err(Problem::bad_request(format!(
                "{name} must be a positive number a second"
            ))),
            _ => Ok(()),
        };
        let workers = |c: Option<usize>| match c {
            Some(c) if !(1..=32).contains(&c) => {
                Err(Problem::bad_request("concurrency must be between 1 and 32"))
            }
            _ => Ok(()),
        };
        let upstream = || {
            state.settings.upstream.as_ref().map(|_| ()).ok_or_else(|| {
                Problem::conflict(
                    "no upstream is configured ([upstream]): there is nothing to read",
                )
            })
        };
        match self {
            Self::Backfill {
                since,
                max_rate,
                concurrency,
            } => {
                upstream()?;
                positive("max_rate", *max_rate)?;
                workers(*concurrency)?;
                if let Some(since) = since {
                    chrono::DateTime::parse_from_rfc3339(since).map_err(|_| {
                        Problem::bad_request(
                            "since must be an RFC 3339 time (2026-01-31T00:00:00Z)",
                        )
                    })?;
                }
                Ok(json!({"since": since, "max_rate": max_rate, "concurrency": concurrency}))
            }
            Self::Verify {
                max_rate,
                concurrency,
            } => {
                upstream()?;
                positive("max_rate", *max_rate)?;
                workers(*concurrency)?;
                Ok(json!({"max_rate": max_rate, "concurrency": concurrency}))
            }
            Self::Campaign {
                rate,
                limit,
                cooldown,
            } => {
                positive("rate", *rate)?;
                let cooldown = cooldown
                    .as_deref()
                    .map(crate::jobs::campaign::parse_duration)
                    .transpose()
                    .map_err(|e| Problem::bad_request(format!("cooldown: {e}")))?;
                Ok(json!({
                    "rate": rate,
                    "limit": limit,
                    "cooldown_secs": cooldown.map(|d| d.as_secs()),
                }))
            }
            Self::Import {} => Err(Problem::bad_request(format!(
                "an import's file is uploaded: POST {API}/jobs/import"
            ))),
        }
    }
}

/// How far a job has got.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// Records handled so far (users written or compared, invitations).
    pub done: u64,
    /// Records expected in all, where the source says.
    pub total: Option<u64>,
    /// `done / total`, 0 to 100.
    pub percent: Option<f64>,
    /// Records a second since the job started.
    pub rate_per_sec: Option<f64>,
    /// Seconds until the job ends at that rate.
    pub eta_secs: Option<u64>,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    pub kind: JobKind,
    pub state: JobState,
    /// What it was started with (an import's file by its uploaded name).
    pub params: Value,
    /// Why it stopped, when it failed.
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    pub progress: Progress,
    pub counters: Counters,
    pub chunks_total: u64,
    pub chunks_done: u64,
    pub issues_total: u64,
}

/// A job with its issues, workers and result.
#[derive(Debug, Clone, Serialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobView,
    /// Campaign jobs: invitations sent and users skipped, by reason.
    pub campaign: Option<crate::store::invitations::CampaignCounters>,
    /// The latest heartbeat of any of its workers (Unix seconds).
    pub heartbeat: Option<i64>,
    pub workers: Vec<String>,
    pub issues: Vec<Issue>,
    /// Verify's report.
    pub result: Option<Value>,
}

/// Reads a job's summary and works out its progress.
async fn detail(state: &AppState, job: Job, issues: u32) -> Result<JobDetail, Problem> {
    let summary = state.db.job_summary(&job.id, issues).await?;
    let campaign = match job.kind {
        JobKind::Campaign => Some(state.db.campaign_counters(&job.id).await?),
        _ => None,
    };
    let done = match (&campaign, job.kind) {
        (Some(c), _) => c.total(),
        (None, JobKind::Verify) => job
            .result
            .as_ref()
            .and_then(|r| r["upstream_users"].as_u64())
            .unwrap_or(0),
        _ => summary.counters.total(),
    };
    let now = crate::store::now();
    let total = job.total.map(|t| t.max(0) as u64);
    let started = job.started_at.unwrap_or(job.created_at);
    let until = job.finished_at.unwrap_or(now);
    // A job shorter than a second counts as one second long.
    let rate = (job.state != JobState::Queued && done > 0)
        .then(|| done as f64 / (until - started).max(1) as f64);
    let percent = total
        .filter(|t| *t > 0)
        .map(|t| (done as f64 * 100.0 / t as f64).min(100.0));
    let eta_secs = match (job.state, total, rate) {
        (JobState::Running, Some(t), Some(r)) if r > 0.0 => {
            Some((t.saturating_sub(done) as f64 / r).ceil() as u64)
        }
        _ => None,
    };
    let mut params = job.params.clone();
    if let Some(map) = params.as_object_mut() {
        // The server's own path of an uploaded file is no operator's concern.
        map.remove("path");
        map.retain(|_, v| !v.is_null());
    }
    Ok(JobDetail {
        job: JobView {
            id: job.id,
            kind: job.kind,
            state: job.state,
            params,
            error: job.error.as_deref().map(redact),
            created_at: job.created_at,
            started_at: job.started_at,
            updated_at: job.updated_at,
            finished_at: job.finished_at,
            progress: Progress {
                done,
                total,
                percent,
                rate_per_sec: rate.map(|r| (r * 10.0).round() / 10.0),
                eta_secs,
            },
            counters: summary.counters,
            chunks_total: summary.chunks_total,
            chunks_done: summary.chunks_done,
            issues_total: summary.issues_total,
        },
        campaign,
        heartbeat: summary.heartbeat,
        workers: summary.workers,
        issues: summary.issues,
        result: job.result,
    })
}

/// Words of an error that could be a credential (a JWT, a `token=`
/// value) are blanked before an operator sees it: errors are kept as the
/// jobs reported them, and a vendor's message may quote a request.
pub fn redact(text: &str) -> String {
    const KEYS: [&str; 5] = ["token=", "secret=", "password=", "assertion=", "code="];
    text.split(' ')
        .map(|word| {
            let lower = word.to_ascii_lowercase();
            if let Some(i) = KEYS
                .iter()
                .filter_map(|k| lower.find(k).map(|i| i + k.len()))
                .min()
            {
                format!("{}[redacted]", &word[..i])
            } else if word.trim_start_matches(['"', '\'', '(']).starts_with("eyJ")
                && word.matches('.').count() >= 2
            {
                "[redacted]".into()
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn list(state: &AppState) -> Result<Vec<JobView>, Problem> {
    let mut views = Vec::new();
    for job in state.db.list_jobs(LIST_LIMIT).await? {
        views.push(detail(state, job, 0).await?.job);
    }
    Ok(views)
}

async fn find(state: &AppState, id: &str) -> Result<Job, Problem> {
    state
        .db
        .get_job(id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no job {id}")))
}

/// Queues `new`, audited.
async fn start(state: &AppState, operator: &Operator, new: &NewJob) -> Result<Job, Problem> {
    operator.require_write()?;
    let kind = new.kind();
    let params = new.params(state)?;
    refuse_second(state, kind).await?;
    let id = new_job_id(kind.as_str());
    state.db.queue_job(&id, kind, &params).await?;
    let job = find(state, &id).await?;
    record_change(
        state,
        operator,
        "job.start",
        &id,
        Value::Null,
        json!({"kind": kind, "state": job.state, "params": params}),
    )
    .await?;
    Ok(job)
}

/// One backfill, verify or campaign at a time: two would walk the same
/// users twice (the CLI refuses a second the same way).
async fn refuse_second(state: &AppState, kind: JobKind) -> Result<(), Problem> {
    if kind == JobKind::Import {
        return Ok(());
    }
    let active = state
        .db
        .list_jobs(LIST_LIMIT)
        .await?
        .into_iter()
        .find(|j| j.kind == kind && j.state.is_active());
    match active {
        Some(j) => Err(Problem::conflict(format!(
            "{kind} job {} is {}: cancel it or wait for it to end",
            j.id, j.state
        ))
        .with("job", j.id)),
        None => Ok(()),
    }
}

/// Cancels a queued or running job, audited.
async fn cancel(state: &AppState, operator: &Operator, id: &str) -> Result<Job, Problem> {
    operator.require_write()?;
    let before = find(state, id).await?;
    if !state.db.cancel_job(id).await? {
        return Err(Problem::conflict(format!(
            "job {id} is {}: only a queued or running job can be cancelled",
            before.state
        )));
    }
    let after = find(state, id).await?;
    record_change(
        state,
        operator,
        "job.cancel",
        id,
        json!({"state": before.state}),
        json!({"state": after.state}),
    )
    .await?;
    Ok(after)
}

/// What an upload is imported as.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImportQuery {
    /// The file's format; detected from its name and first bytes when absent.
    pub format: Option<Format>,
    /// The provider its users are recorded as coming from.
    pub provider: Option<String>,
    /// Stop at the first bad record.
    #[serde(default)]
    pub strict: bool,
    /// The file's name (a raw upload has none of its own).
    pub name: Option<String>,
}

fn too_large(limit: u64) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-large",
        "The upload is too large",
        format!("an import file may be at most {limit} bytes ([admin] max_upload_bytes)"),
    )
    .with("max_upload_bytes", limit)
}

/// A file name safe on any disk: its letters, digits, `.`, `-`, `_`.
fn safe_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = base
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(80)
        .collect();
    let clean = clean.trim_start_matches('.').to_string();
    if clean.is_empty() {
        "upload".into()
    } else {
        clean
    }
}

/// An upload being written to the upload directory; removed unless kept.
struct Upload {
    path: std::path::PathBuf,
    file: Option<tokio::fs::File>,
    bytes: u64,
    limit: u64,
    kept: bool,
}

impl Upload {
    async fn create(state: &AppState, id: &str, name: &str) -> Result<Self, Problem> {
        let dir = &state.settings.admin.upload_dir;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(Problem::internal)?;
        let path = dir.join(format!("{id}-{}", safe_name(name)));
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(Problem::internal)?;
        Ok(Self {
            path,
            file: Some(file),
            bytes: 0,
            limit: state.settings.admin.max_upload_bytes,
            kept: false,
        })
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), Problem> {
        self.bytes += chunk.len() as u64;
        if self.bytes > self.limit {
            return Err(too_large(self.limit));
        }
        match &mut self.file {
            Some(f) => f.write_all(chunk).await.map_err(Problem::internal),
            None => Ok(()),
        }
    }

    async fn finish(&mut self) -> Result<(), Problem> {
        if let Some(mut f) = self.file.take() {
            f.flush().await.map_err(Problem::internal)?;
            f.sync_all().await.map_err(Problem::internal)?;
        }
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Streams an import file (multipart `file` part, or the raw body) to the
/// upload directory, then queues its import, audited. A multipart form's
/// other fields (`format`, `provider`, `strict`, and a page's `csrf`)
/// come before the file, as a form lays them out.
async fn upload(
    state: &AppState,
    operator: &Operator,
    mut query: ImportQuery,
    request: Request,
    csrf: Option<&str>,
) -> Result<Job, Problem> {
    operator.require_write()?;
    let limit = state.settings.admin.max_upload_bytes;
    // A declared length over the limit is refused before a byte is read.
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(64 * 1024)) {
        return Err(too_large(limit));
    }
    let id = new_job_id(JobKind::Import.as_str());
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let mut upload = None;
    if multipart {
        let mut form = Multipart::from_request(request, state)
            .await
            .map_err(|e| Problem::bad_request(e.body_text()))?;
        let mut form_csrf = String::new();
        while let Some(mut field) = form.next_field().await.map_err(field_error)? {
            let name = field.name().unwrap_or("").to_string();
            if name == "file" {
                if csrf.is_some_and(|expected| {
                    !crate::crypto::constant_time_eq(form_csrf.as_bytes(), expected.as_bytes())
                }) {
                    return Err(Problem::forbidden(
                        "this form has expired: reload the page and try again",
                        super::access::ADMIN_SCOPE,
                    ));
                }
                let file_name = field
                    .file_name()
                    .map(str::to_string)
                    .or(query.name.clone())
                    .unwrap_or_else(|| "upload".into());
                if file_name.is_empty() {
                    return Err(Problem::bad_request("choose a file to import"));
                }
                query.name = Some(file_name.clone());
                let mut up = Upload::create(state, &id, &file_name).await?;
                while let Some(chunk) = field.chunk().await.map_err(field_error)? {
                    up.write(&chunk).await?;
                }
                up.finish().await?;
                upload = Some(up);
                break;
            }
            let text = field.text().await.map_err(field_error)?;
            let text = text.trim().to_string();
            match name.as_str() {
                "csrf" => form_csrf = text,
                "format" if !text.is_empty() => {
                    query.format = Some(
                        serde_json::from_value(Value::String(text.clone())).map_err(|_| {
                            Problem::bad_request(format!(
                                "format {text:?} is not one Switchyard reads"
                            ))
                        })?,
                    )
                }
                "provider" if !text.is_empty() => query.provider = Some(text),
                "strict" => query.strict = matches!(text.as_str(), "on" | "true" | "1"),
                _ => {}
            }
        }
    } else {
        if csrf.is_some() {
            return Err(Problem::bad_request("the upload form must be multipart"));
        }
        let name = query.name.clone().unwrap_or_else(|| "upload".into());
        let mut up = Upload::create(state, &id, &name).await?;
        let mut body = request.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Problem::bad_request("the upload was cut short"))?;
            if let Some(chunk) = frame.data_ref() {
                up.write(chunk).await?;
            }
        }
        up.finish().await?;
        upload = Some(up);
    }
    let Some(mut upload) = upload else {
        return Err(Problem::bad_request(
            "the form carries no file part named `file`",
        ));
    };
    if upload.bytes == 0 {
        return Err(Problem::bad_request("the file is empty"));
    }
    let path = std::fs::canonicalize(&upload.path).map_err(Problem::internal)?;
    let path_text = path.to_string_lossy().to_string();
    let format = match query.format {
        Some(f) => f,
        None => detect(&path_text, query.name.as_deref().unwrap_or(""))?,
    };
    let provider = query
        .provider
        .clone()
        .or_else(|| format.provider().map(String::from))
        .or_else(|| state.settings.upstream.as_ref().map(|u| u.provider.clone()))
        .unwrap_or_else(|| "import".into());
    let params = json!({
        "path": path_text,
        "format": format,
        "provider": provider,
        "strict": query.strict,
        "file_name": query.name,
        "bytes": upload.bytes,
    });
    state.db.queue_job(&id, JobKind::Import, &params).await?;
    upload.kept = true;
    let job = find(state, &id).await?;
    let mut shown = params.clone();
    if let Some(m) = shown.as_object_mut() {
        m.remove("path");
    }
    record_change(
        state,
        operator,
        "job.start",
        &id,
        Value::Null,
        json!({"kind": JobKind::Import, "state": job.state, "params": shown}),
    )
    .await?;
    Ok(job)
}

fn field_error(e: axum::extract::multipart::MultipartError) -> Problem {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return Problem::bad_request("the upload is too large");
    }
    Problem::bad_request(format!("the form could not be read: {}", e.body_text()))
}

/// The format of an uploaded file, from its name and first bytes (the
/// rules `switchyard import` applies).
fn detect(path: &str, name: &str) -> Result<Format, Problem> {
    use std::io::BufRead;
    let mut reader = files::open(path).map_err(Problem::internal)?;
    let head = reader
        .fill_buf()
        .map_err(|_| Problem::bad_request("the file could not be read (a damaged .gz?)"))?;
    let head = &head[..head.len().min(4096)];
    Format::detect(name, head)
        .or_else(|| Format::detect(path, head))
        .ok_or_else(|| {
            Problem::bad_request(
                "cannot tell the file's format from its name and first bytes: pass format",
            )
        })
}

// ---------------------------------------------------------------- API

#[derive(Serialize)]
struct JobList {
    jobs: Vec<JobView>,
}

async fn api_list(
    axum::extract::State(state): axum::extract::State<AppState>,
    ApiOperator(_): ApiOperator,
) -> Result<Json<JobList>, Problem> {
    Ok(Json(JobList {
        jobs: list(&state).await?,
    }))
}

async fn api_get(
    axum::extract::State(state): axum::extract::State<AppState>,
    ApiOperator(_): ApiOperator,
    Path(id): Path<String>,
) -> Result<Json<JobDetail>, Problem> {
    let job = find(&state, &id).await?;
    Ok(Json(detail(&state, job, ISSUES_SHOWN).await?))
}

fn created(job: JobDetail) -> Response {
    let location = format!("{API}/jobs/{}", job.job.id);
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(job),
    )
        .into_response()
}

async fn api_start(
    axum::extract::State(state): axum::extract::State<AppState>,
    ApiOperator(operator): ApiOperator,
    ApiJson(new): ApiJson<NewJob>,
) -> Result<Response, Problem> {
    let job = start(&state, &operator, &new).await?;
    Ok(created(detail(&state, job, 0).await?))
}

async fn api_import(
    axum::extract::State(state): axum::extract::State<AppState>,
    ApiOperator(operator): ApiOperator,
    query: Result<Query<ImportQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Result<Response, Problem> {
    let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let job = upload(&state, &operator, query, request, None).await?;
    Ok(created(detail(&state, job, 0).await?))
}

async fn api_cancel(
    axum::extract::State(state): axum::extract::State<AppState>,
    ApiOperator(operator): ApiOperator,
    Path(id): Path<String>,
) -> Result<Json<JobDetail>, Problem> {
    let job = cancel(&state, &operator, &id).await?;
    Ok(Json(detail(&state, job, 0).await?))
}

// -------------------------------------------------------------- pages

/// What a redirect after a change tells the operator (a closed set: no
/// text from the query string reaches the page).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    Started,
    Uploaded,
    Cancelled,
}

impl Notice {
    fn text(self) -> &'static str {
        match self {
            Self::Started => "Job queued: it starts within seconds.",
            Self::Uploaded => "File uploaded: its import is queued.",
            Self::Cancelled => "Job cancelled: its workers stop at their next page.",
        }
    }
}

#[derive(Deserialize)]
struct NoticeQuery {
    notice: Option<Notice>,
}

/// A row of the jobs page.
#[derive(Serialize)]
struct JobRow {
    #[serde(flatten)]
    job: JobView,
    active: bool,
    done_text: String,
    rate_text: String,
    eta_text: String,
    started_text: String,
    /// `<progress>`'s value and max, when the total is known.
    bar: Option<(u64, u64)>,
}

fn when(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        3600..86_400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600),
    }
}

fn row(job: JobView) -> JobRow {
    let p = &job.progress;
    let done_text = match p.total {
        Some(t) => format!("{} of {} ({:.0} %)", p.done, t, p.percent.unwrap_or(0.0)),
        None => p.done.to_string(),
    };
    let rate_text = match (job.state, p.rate_per_sec) {
        (JobState::Queued, _) => "waiting for a server to start it".into(),
        (_, Some(r)) => format!("{r:.1} records/s"),
        (_, None) => "—".into(),
    };
    let eta_text = match (job.state, p.eta_secs) {
        (JobState::Running, Some(s)) => format!("about {}", duration(s)),
        (JobState::Running, None) => "unknown".into(),
        (JobState::Queued, _) => "waiting to start".into(),
        _ => "—".into(),
    };
    JobRow {
        active: job.state.is_active(),
        bar: p.total.map(|t| (p.done.min(t), t.max(1))),
        done_text,
        rate_text,
        eta_text,
        started_text: when(job.started_at.unwrap_or(job.created_at)),
        job,
    }
}

#[derive(Serialize)]
struct JobsPage {
    jobs: Vec<JobRow>,
    any_active: bool,
    has_upstream: bool,
    formats: Vec<&'static str>,
    error: Option<String>,
    max_upload_mb: u64,
}

async fn jobs_page(
    state: &AppState,
    operator: &PageOperator,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<String>,
) -> Response {
    let jobs = match list(state).await {
        Ok(jobs) => jobs,
        Err(p) => return crate::error::AppError::from(p).into_response(),
    };
    let jobs: Vec<JobRow> = jobs.into_iter().map(row).collect();
    render(
        status,
        "admin/jobs.html",
        operator,
        Section::Jobs,
        "Jobs",
        notice,
        JobsPage {
            any_active: jobs.iter().any(|j| j.active),
            jobs,
            has_upstream: state.settings.upstream.is_some(),
            formats: Format::value_variants().iter().map(|f| f.name()).collect(),
            error,
            max_upload_mb: state.settings.admin.max_upload_bytes / (1024 * 1024),
        },
    )
}

async fn page_jobs(
    axum::extract::State(state): axum::extract::State<AppState>,
    operator: PageOperator,
    Query(q): Query<NoticeQuery>,
) -> Response {
    jobs_page(
        &state,
        &operator,
        StatusCode::OK,
        q.notice.map(Notice::text),
        None,
    )
    .await
}

/// The start form: every field a kind may use, blank when not given.
#[derive(Deserialize)]
struct StartForm {
    csrf: String,
    kind: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    max_rate: String,
    #[serde(default)]
    rate: String,
    #[serde(default)]
    limit: String,
    #[serde(default)]
    cooldown: String,
}

impl StartForm {
    fn job(&self) -> Result<NewJob, Problem> {
        fn opt(v: &str) -> Option<String> {
            let v = v.trim();
            (!v.is_empty()).then(|| v.to_string())
        }
        fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<Option<T>, Problem> {
            opt(v)
                .map(|v| v.parse::<T>())
                .transpose()
                .map_err(|_| Problem::bad_request(format!("{name} must be a number")))
        }
        Ok(match self.kind.as_str() {
            "backfill" => NewJob::Backfill {
                since: opt(&self.since),
                max_rate: num("Requests a second", &self.max_rate)?,
                concurrency: None,
            },
            "verify" => NewJob::Verify {
                max_rate: num("Requests a second", &self.max_rate)?,
                concurrency: None,
            },
            "campaign" => NewJob::Campaign {
                rate: num("Invitations a second", &self.rate)?,
                limit: num("Limit", &self.limit)?,
                cooldown: opt(&self.cooldown),
            },
            _ => return Err(Problem::bad_request("choose a kind of job")),
        })
    }
}

async fn page_start(
    axum::extract::State(state): axum::extract::State<AppState>,
    operator: PageOperator,
    Form(form): Form<StartForm>,
) -> Response {
    if let Err(e) = operator.check_csrf(&form.csrf) {
        return e.into_response();
    }
    let result = match form.job() {
        Ok(new) => start(&state, &operator.operator, &new).await,
        Err(p) => Err(p),
    };
    match result {
        Ok(_) => Redirect::to("/admin/jobs?notice=started").into_response(),
        Err(p) if p.status.is_client_error() => {
            jobs_page(&state, &operator, p.status, None, Some(p.detail)).await
        }
        Err(p) => crate::error::AppError::from(p).into_response(),
    }
}

async fn page_upload(
    axum::extract::State(state): axum::extract::State<AppState>,
    operator: PageOperator,
    request: Request,
) -> Response {
    let csrf = operator.csrf.clone();
    let result = upload(
        &state,
        &operator.operator,
        ImportQuery::default(),
        request,
        Some(&csrf),
    )
    .await;
    match result {
        Ok(_) => Redirect::to("/admin/jobs?notice=uploaded").into_response(),
        Err(p) if p.status.is_client_error() => {
            jobs_page(&state, &operator, p.status, None, Some(p.detail)).await
        }
        Err(p) => crate::error::AppError::from(p).into_response(),
    }
}

async fn page_cancel(
    axum::extract::State(state): axum::extract::State<AppState>,
    operator: PageOperator,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(e) = operator.check_csrf(&form.csrf) {
        return e.into_response();
    }
    match cancel(&state, &operator.operator, &id).await {
        Ok(_) => Redirect::to(&format!(
            "/admin/jobs/{}?notice=cancelled",
            form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
        ))
        .into_response(),
        Err(p) if p.status == StatusCode::CONFLICT => {
            jobs_page(&state, &operator, p.status, None, Some(p.detail)).await
        }
        Err(p) => crate::error::AppError::from(p).into_response(),
    }
}

#[derive(Serialize)]
struct JobPage {
    job: JobRow,
    detail: JobDetailExtra,
}

#[derive(Serialize)]
struct JobDetailExtra {
    campaign: Option<crate::store::invitations::CampaignCounters>,
    heartbeat_text: Option<String>,
    workers: Vec<String>,
    issues: Vec<Issue>,
    result: Option<String>,
    params: Vec<(String, String)>,
    finished_text: Option<String>,
}

async fn page_job(
    axum::extract::State(state): axum::extract::State<AppState>,
    operator: PageOperator,
    Path(id): Path<String>,
    Query(q): Query<NoticeQuery>,
) -> Response {
    let job = match find(&state, &id).await {
        Ok(job) => job,
        Err(p) => return crate::error::AppError::from(p).into_response(),
    };
    let d = match detail(&state, job, ISSUES_SHOWN).await {
        Ok(d) => d,
        Err(p) => return crate::error::AppError::from(p).into_response(),
    };
    let params = d
        .job
        .params
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.replace('_', " "), v)
                })
                .collect()
        })
        .unwrap_or_default();
    let extra = JobDetailExtra {
        campaign: d.campaign,
        heartbeat_text: d.heartbeat.map(when),
        workers: d.workers,
        issues: d.issues,
        result: d
            .result
            .as_ref()
            .and_then(|r| serde_json::to_string_pretty(r).ok()),
        params,
        finished_text: d.job.finished_at.map(when),
    };
    let title = format!("Job {}", d.job.id);
    render(
        StatusCode::OK,
        "admin/job.html",
        &operator,
        Section::Jobs,
        &title,
        q.notice.map(Notice::text),
        JobPage {
            job: row(d.job),
            detail: extra,
        },
    )
}

pub fn router() -> Router<AppState> {
    // The upload streams its body itself, bounded by `[admin]
    // max_upload_bytes`, not by the small limit every other route has.
    let unbounded = DefaultBodyLimit::disable();
    Router::new()
        .route(&format!("{API}/jobs"), get(api_list).post(api_start))
        .route(
            &format!("{API}/jobs/import"),
            post(api_import).layer(unbounded),
        )
        .route(&format!("{API}/jobs/{{id}}"), get(api_get))
        .route(&format!("{API}/jobs/{{id}}/cancel"), post(api_cancel))
        .route("/admin/jobs", get(page_jobs).post(page_start))
        .route("/admin/jobs/import", post(page_upload).layer(unbounded))
        .route("/admin/jobs/{id}", get(page_job))
        .route("/admin/jobs/{id}/cancel", post(page_cancel))
}
