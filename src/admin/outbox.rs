//! The write outbox from the browser and the API: the writes the upstream
//! is owed (and the emails), the vendor's message of those that failed,
//! and an operator's retry or discard — the store methods `switchyard
//! outbox` uses.
//!
//! A row is shown without its sealed secret (a new password on its way
//! to the upstream) or the pending authorization request an email
//! continues; its last error is the one the worker stored (one line, at
//! most [`crate::store::outbox::MAX_ERROR_LEN`] characters, the vendor's
//! message rather than its body), with anything token-like blanked.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::API;
use super::access::{ApiOperator, CsrfForm, Operator, PageOperator};
use super::audit::record_change;
use super::jobs::redact;
use super::pages::{Section, render};
use super::problem::Problem;
use crate::state::AppState;
use crate::store::outbox::{OutboxKind, OutboxRow, OutboxState, RetryTarget};

/// Rows a page holds unless `limit` says otherwise.
const PAGE: u32 = 50;
/// The most rows one page may hold.
const MAX_PAGE: u32 = 500;

/// A row as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxView {
    pub id: i64,
    pub kind: OutboxKind,
    pub user_id: String,
    pub state: OutboxState,
    pub attempts: i64,
    /// When a pending row is next tried (Unix seconds).
    pub next_attempt_at: i64,
    /// The last attempt's error: the vendor's message where it gave one.
    pub last_error: Option<String>,
    /// A worker is delivering it right now.
    pub in_delivery: bool,
    /// What is written, without secrets.
    pub payload: Value,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<OutboxRow> for OutboxView {
    fn from(row: OutboxRow) -> Self {
        let mut payload = row.payload;
        if let Some(map) = payload.as_object_mut() {
            map.remove("sealed");
            map.remove("authz");
        }
        Self {
            id: row.id,
            kind: row.kind,
            user_id: row.user_id,
            state: row.state,
            attempts: row.attempts,
            next_attempt_at: row.next_attempt_at,
            last_error: row.last_error.as_deref().map(redact),
            in_delivery: row.claimed_by.is_some(),
            payload,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// `GET /outbox`'s query.
#[derive(Debug, Clone, Deserialize)]
pub struct ListQuery {
    /// Only rows in this state (all when absent).
    pub state: Option<OutboxState>,
    /// Rows with ids below this (the previous page's `next_before`).
    pub before: Option<i64>,
    pub limit: Option<u32>,
}

/// A page of rows, newest first, with the counts by state.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxPage {
    pub rows: Vec<OutboxView>,
    /// Pass as `before` for the next page; absent on the last.
    pub next_before: Option<i64>,
    pub counts: Counts,
}

#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    pub pending: u64,
    pub failed: u64,
    pub done: u64,
}

async fn page_of(state: &AppState, q: &ListQuery) -> Result<OutboxPage, Problem> {
    let limit = q.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    // One more than asked tells whether there is a next page.
    let mut rows = state
        .db
        .list_outbox_before(q.state, q.before, limit + 1)
        .await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_before = more.then(|| rows.last().map(|r| r.id)).flatten();
    let counts = state.db.outbox_counts(0).await?;
    Ok(OutboxPage {
        rows: rows.into_iter().map(OutboxView::from).collect(),
        next_before,
        counts: Counts {
            pending: counts.pending,
            failed: counts.failed,
            done: counts.done,
        },
    })
}

async fn find(state: &AppState, id: i64) -> Result<OutboxRow, Problem> {
    state
        .db
        .get_outbox(id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no outbox row {id}")))
}

fn audited(row: &OutboxRow) -> Value {
    json!({"state": row.state, "attempts": row.attempts, "kind": row.kind, "user_id": row.user_id})
}

/// Sends a row again now (its attempts start over), audited.
async fn retry(state: &AppState, operator: &Operator, id: i64) -> Result<OutboxRow, Problem> {
    operator.require_write()?;
    let before = find(state, id).await?;
    if state.db.retry_outbox(RetryTarget::One(id)).await? == 0 {
        return Err(Problem::conflict(format!(
            "outbox row {id} is done: there is nothing to retry"
        )));
    }
    let after = find(state, id).await?;
    record_change(
        state,
        operator,
        "outbox.retry",
        &id.to_string(),
        audited(&before),
        audited(&after),
    )
    .await?;
    Ok(after)
}

/// Sends every failed row again, audited; how many.
async fn retry_failed(state: &AppState, operator: &Operator) -> Result<u64, Problem> {
    operator.require_write()?;
    let before = state.db.outbox_counts(0).await?;
    let n = state.db.retry_outbox(RetryTarget::AllFailed).await?;
    record_change(
        state,
        operator,
        "outbox.retry_failed",
        "outbox",
        json!({"failed": before.failed, "pending": before.pending}),
        json!({"retried": n}),
    )
    .await?;
    Ok(n)
}

/// Drops a row that is not done (the upstream will never get that
/// write), audited.
async fn discard(state: &AppState, operator: &Operator, id: i64) -> Result<OutboxRow, Problem> {
    operator.require_write()?;
    let before = find(state, id).await?;
    if !state.db.discard_outbox(id).await? {
        return Err(Problem::conflict(format!(
            "outbox row {id} is done: there is nothing to discard"
        )));
    }
    record_change(
        state,
        operator,
        "outbox.discard",
        &id.to_string(),
        audited(&before),
        Value::Null,
    )
    .await?;
    Ok(before)
}

// ---------------------------------------------------------------- API

async fn api_list(
    State(state): State<AppState>,
    ApiOperator(_): ApiOperator,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<OutboxPage>, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    Ok(Json(page_of(&state, &q).await?))
}

/// A row id from the path; anything else is a problem, not plain text.
fn row_id(path: Result<Path<i64>, PathRejection>) -> Result<i64, Problem> {
    path.map(|Path(id)| id)
        .map_err(|_| Problem::bad_request("an outbox row's id is a number"))
}

async fn api_retry(
    State(state): State<AppState>,
    ApiOperator(operator): ApiOperator,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Json<OutboxView>, Problem> {
    let id = row_id(path)?;
    Ok(Json(retry(&state, &operator, id).await?.into()))
}

#[derive(Serialize)]
struct Retried {
    retried: u64,
}

async fn api_retry_failed(
    State(state): State<AppState>,
    ApiOperator(operator): ApiOperator,
) -> Result<Json<Retried>, Problem> {
    Ok(Json(Retried {
        retried: retry_failed(&state, &operator).await?,
    }))
}

async fn api_discard(
    State(state): State<AppState>,
    ApiOperator(operator): ApiOperator,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Json<OutboxView>, Problem> {
    let id = row_id(path)?;
    Ok(Json(discard(&state, &operator, id).await?.into()))
}

// -------------------------------------------------------------- pages

/// What a redirect after a change tells the operator.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    Retried,
    RetriedAll,
    Discarded,
}

impl Notice {
    fn text(self) -> &'static str {
        match self {
            Self::Retried => "Write queued again: it is sent within seconds.",
            Self::RetriedAll => "Every failed write is queued again.",
            Self::Discarded => "Write discarded: the upstream will not get it.",
        }
    }
}

/// The page's query: the state shown (failed by default), paging, notice.
#[derive(Deserialize)]
struct PageQuery {
    state: Option<OutboxState>,
    before: Option<i64>,
    notice: Option<Notice>,
}

#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    row: OutboxView,
    updated_text: String,
    next_text: String,
    what: String,
    /// The message with break opportunities in its long words (a URL).
    message: Option<String>,
    user_id_text: String,
}

#[derive(Serialize)]
struct Page {
    rows: Vec<Row>,
    counts: Counts,
    shown: OutboxState,
    states: Vec<(OutboxState, &'static str)>,
    next_before: Option<i64>,
    error: Option<String>,
}

fn when(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// `text` with a zero-width space after each `/`, `?`, `&` and `|`, so a
/// URL in a vendor's message wraps on a phone instead of widening the page.
fn breakable(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        out.push(c);
        if matches!(c, '/' | '?' | '&' | '|') {
            out.push('\u{200B}');
        }
    }
    out
}

/// A row's write in words.
fn what(row: &OutboxView) -> String {
    match row.kind {
        OutboxKind::MarkMigrated => "Mark migrated",
        OutboxKind::Email => "Email",
        OutboxKind::WritePassword => "Password",
        OutboxKind::WriteProfile => "Profile",
        OutboxKind::WriteBlocked => "Blocked state",
        OutboxKind::WriteDelete => "Deletion",
    }
    .into()
}

async fn outbox_page(
    state: &AppState,
    operator: &PageOperator,
    q: PageQuery,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let shown = q.state.unwrap_or(OutboxState::Failed);
    let list = ListQuery {
        state: Some(shown),
        before: q.before,
        limit: None,
    };
    let page = match page_of(state, &list).await {
        Ok(p) => p,
        Err(p) => return crate::error::AppError::from(p).into_response(),
    };
    let rows = page
        .rows
        .into_iter()
        .map(|row| Row {
            updated_text: when(row.updated_at),
            next_text: when(row.next_attempt_at),
            what: what(&row),
            message: row.last_error.as_deref().map(breakable),
            user_id_text: breakable(&row.user_id),
            row,
        })
        .collect();
    render(
        status,
        "admin/outbox.html",
        operator,
        Section::Outbox,
        "Outbox",
        q.notice.map(Notice::text),
        Page {
            rows,
            counts: page.counts,
            shown,
            states: vec![
                (OutboxState::Failed, "Failed"),
                (OutboxState::Pending, "Pending"),
                (OutboxState::Done, "Done"),
            ],
            next_before: page.next_before,
            error,
        },
    )
}

async fn page_list(
    State(state): State<AppState>,
    operator: PageOperator,
    Query(q): Query<PageQuery>,
) -> Response {
    outbox_page(&state, &operator, q, StatusCode::OK, None).await
}

/// After a change: back to the failed rows with a notice, or the page
/// with the refusal.
async fn after(
    state: &AppState,
    operator: &PageOperator,
    result: Result<(), Problem>,
    notice: &str,
) -> Response {
    match result {
        Ok(()) => Redirect::to(&format!("/admin/outbox?notice={notice}")).into_response(),
        Err(p) if p.status.is_client_error() => {
            let q = PageQuery {
                state: None,
                before: None,
                notice: None,
            };
            outbox_page(state, operator, q, p.status, Some(p.detail)).await
        }
        Err(p) => crate::error::AppError::from(p).into_response(),
    }
}

async fn page_retry(
    State(state): State<AppState>,
    operator: PageOperator,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(e) = operator.check_csrf(&form.csrf) {
        return e.into_response();
    }
    let result = retry(&state, &operator.operator, id).await.map(|_| ());
    after(&state, &operator, result, "retried").await
}

async fn page_retry_failed(
    State(state): State<AppState>,
    operator: PageOperator,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(e) = operator.check_csrf(&form.csrf) {
        return e.into_response();
    }
    let result = retry_failed(&state, &operator.operator).await.map(|_| ());
    after(&state, &operator, result, "retried_all").await
}

async fn page_discard(
    State(state): State<AppState>,
    operator: PageOperator,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(e) = operator.check_csrf(&form.csrf) {
        return e.into_response();
    }
    let result = discard(&state, &operator.operator, id).await.map(|_| ());
    after(&state, &operator, result, "discarded").await
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(&format!("{API}/outbox"), get(api_list))
        .route(
            &format!("{API}/outbox/retry-failed"),
            post(api_retry_failed),
        )
        .route(&format!("{API}/outbox/{{id}}/retry"), post(api_retry))
        .route(&format!("{API}/outbox/{{id}}/discard"), post(api_discard))
        .route("/admin/outbox", get(page_list))
        .route("/admin/outbox/retry-failed", post(page_retry_failed))
        .route("/admin/outbox/{id}/retry", post(page_retry))
        .route("/admin/outbox/{id}/discard", post(page_discard))
}
