//! The users adapter: which side is the primary for a request, and the
//! upstream's part of each read and write.
//!
//! | phase (or pin)                | primary  | upstream's part                        |
//! |-------------------------------|----------|----------------------------------------|
//! | `passthrough`, `lazy`, pinned to the upstream | upstream | reads through; writes per `api_writes` |
//! | `local_first`, pinned local   | local    | writes queued in the outbox            |
//! | `local_only`, no upstream     | local    | none                                   |
//!
//! The phase is the calling client's (a per-client override applies).
//! Without a usable upstream Management API the API is local only.

use serde_json::Value;

use super::error::ApiError;
use crate::config::{Phase, WriteKind, WriteMode};
use crate::cutover::{Pin, phase_for};
use crate::state::AppState;
use crate::store::User;
use crate::store::jobs::PageCommit;
use crate::store::outbox::QueuedWrite;
use crate::store::record::Action;
use crate::upstream::management::ManagementClient;
use crate::upstream::management::write_back::Refusal;
use crate::upstream::management::writes::Change;

/// Tries of a read the caller waits for.
const READ_ATTEMPTS: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primary {
    /// The upstream; its writes in this mode.
    Upstream(WriteMode),
    /// Local; `mirror`: the upstream is kept as a non-blocking secondary.
    Local { mirror: bool },
}

/// Who is the primary for a request of `client_id` about `user` (or a
/// user not known here).
pub async fn primary(
    state: &AppState,
    client_id: &str,
    user: Option<&User>,
) -> Result<Primary, ApiError> {
    let Some(up) = state
        .settings
        .upstream
        .as_ref()
        .filter(|_| state.write_back.upstream().is_some())
    else {
        return Ok(Primary::Local { mirror: false });
    };
    let rules = state.cutover.rules().await?;
    let phase = phase_for(&rules, Some(client_id));
    // local_only is the upstream switched off: not even a pin calls it.
    if phase == Phase::LocalOnly {
        return Ok(Primary::Local { mirror: false });
    }
    let api_writes = up.management.api_writes();
    match user.and_then(|u| u.pin.as_deref()).and_then(Pin::parse) {
        Some(Pin::Upstream) => return Ok(Primary::Upstream(api_writes)),
        Some(Pin::Local) => return Ok(Primary::Local { mirror: true }),
        None => {}
    }
    Ok(match phase {
        Phase::Passthrough | Phase::Lazy => Primary::Upstream(api_writes),
        Phase::LocalFirst | Phase::LocalOnly => Primary::Local { mirror: true },
    })
}

fn client(state: &AppState) -> Result<&ManagementClient, ApiError> {
    state.write_back.upstream().ok_or_else(ApiError::internal)
}

/// The user with this id: local, or read through from the upstream while
/// it is the primary and kept as a pending user, so the next read is
/// local.
pub async fn find(state: &AppState, client_id: &str, id: &str) -> Result<Option<User>, ApiError> {
    if let Some(user) = state.db.get_user(id).await? {
        return Ok(Some(user));
    }
    if !matches!(primary(state, client_id, None).await?, Primary::Upstream(_)) {
        return Ok(None);
    }
    let up = client(state)?;
    if up.mgmt.read.user.is_none() {
        return Ok(None);
    }
    match up.read_user(id, READ_ATTEMPTS).await {
        Ok(None) => {
            state.metrics.upstream.count("api_read", "not_found");
            Ok(None)
        }
        Ok(Some(raw)) => {
            state.metrics.upstream.count("api_read", "ok");
            adopt(state, up, &raw).await.map(Some)
        }
        Err(e) => Err(upstream_error(state, "api_read", &e)),
    }
}

/// The users with this email: local ones, or those the upstream knows
/// while it is the primary, kept as pending users.
pub async fn find_by_email(
    state: &AppState,
    client_id: &str,
    email: &str,
) -> Result<Vec<User>, ApiError> {
    let local = by_email(state, email).await?;
    if !local.is_empty() || !matches!(primary(state, client_id, None).await?, Primary::Upstream(_))
    {
        return Ok(local);
    }
    let up = client(state)?;
    if up.mgmt.read.by_email.is_none() {
        return Ok(local);
    }
    let found = up
        .read_by_email(email, READ_ATTEMPTS)
        .await
        .map_err(|e| upstream_error(state, "api_read", &e))?;
    state.metrics.upstream.count("api_read", "ok");
    for raw in &found {
        adopt(state, up, raw).await?;
    }
    by_email(state, email).await
}

async fn by_email(state: &AppState, email: &str) -> Result<Vec<User>, ApiError> {
    use crate::store::api_users::{Condition, UserQuery};
    let (users, _) = state
        .db
        .query_users(&UserQuery {
            conditions: vec![Condition::Email(email.to_string())],
            sort: None,
            offset: 0,
            limit: super::search::MAX_PER_PAGE,
            total: false,
        })
        .await?;
    Ok(users)
}

/// An upstream record kept as a pending user, by the backfill's own
/// writer: the same mapping, the same rules for a taken email.
pub async fn adopt(state: &AppState, up: &ManagementClient, raw: &Value) -> Result<User, ApiError> {
    let record = up.record(raw, None).map_err(|r| {
        tracing::warn!(reason = %r.reason, "management API: the upstream's user record could not be mapped");
        ApiError::upstream_unavailable()
    })?;
    let applied = state
        .db
        .commit_page(&PageCommit {
            chunk: None,
            done: false,
            split: Vec::new(),
            records: std::slice::from_ref(&record),
            rejected: &[],
            provider: &up.provider,
            dry_run: false,
            order: None,
        })
        .await?;
    if let Some(Action::Failed(reason)) = applied.actions.first() {
        tracing::warn!(user = %record.id, %reason, "management API: the upstream's user could not be kept here");
    }
    state
        .db
        .get_user(&record.id)
        .await?
        .ok_or_else(ApiError::internal)
}

/// What `changes` owe the upstream for `user` with `primary`: the rows
/// to queue with the local change (`outbox`), after the writes already
/// made (`blocking`). A refusal refuses the whole request before anything
/// local changes.
pub async fn owe(
    state: &AppState,
    primary: Primary,
    user: &User,
    changes: &[Change<'_>],
) -> Result<Vec<QueuedWrite>, ApiError> {
    let mode = match primary {
        Primary::Upstream(mode) => mode,
        Primary::Local { mirror: true } => WriteMode::Outbox,
        Primary::Local { mirror: false } => return Ok(Vec::new()),
    };
    let up = client(state)?;
    let mut queued = Vec::new();
    for change in changes {
        let kind = change.kind();
        if !up.mgmt.write.has(kind) {
            if matches!(primary, Primary::Upstream(_)) {
                return Err(not_writable(&up.provider, kind));
            }
            // A secondary that cannot take this change is left behind on
            // it, and the log says so.
            tracing::warn!(user = %user.id, what = kind.name(), provider = %up.provider, "the upstream cannot be written this change; it is made here only");
            continue;
        }
        match state.write_back.owe_in(mode, user, *change).await {
            Ok(Ok(Some(row))) => queued.push(row),
            Ok(Ok(None)) => {
                if mode == WriteMode::Blocking {
                    state.metrics.upstream.count("api_write", "ok");
                }
            }
            Ok(Err(refusal)) => return Err(refusal_error(state, "api_write", refusal)),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "management API: the upstream write could not be prepared");
                return Err(ApiError::internal());
            }
        }
    }
    Ok(queued)
}

fn not_writable(provider: &str, kind: WriteKind) -> ApiError {
    ApiError::bad_request(
        format!(
            "The upstream provider {provider} cannot be written a {} change through Switchyard while it is the primary.",
            kind.name()
        ),
        "operation_not_supported",
    )
}

/// A refused upstream write in Auth0's shape, counted under `what`.
pub fn refusal_error(state: &AppState, what: &str, refusal: Refusal) -> ApiError {
    use axum::http::StatusCode;
    let retry = |wait: Option<std::time::Duration>| {
        wait.map_or(crate::error::RETRY_AFTER_SECS, |d| {
            d.as_secs_f64().ceil() as u64
        })
    };
    match refusal {
        // A 4xx is the caller's to fix, in the upstream's words (a
        // password policy, an email taken).
        Refusal::Refused { status, message } if (400..500).contains(&status) => {
            state.metrics.upstream.count(what, "refused");
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            let code = match status {
                StatusCode::NOT_FOUND => "inexistent_user",
                StatusCode::CONFLICT => "auth0_idp_error",
                StatusCode::BAD_REQUEST => "invalid_body",
                _ => "upstream_refused",
            };
            ApiError::new(status, message, code)
        }
        Refusal::Throttled(wait) => {
            state.metrics.upstream.count(what, "rate_limited");
            ApiError::too_many_requests(retry(wait))
        }
        Refusal::Refused { .. } | Refusal::Unavailable => {
            state.metrics.upstream.count(what, "unavailable");
            ApiError::upstream_unavailable()
        }
    }
}

/// An upstream call's error in Auth0's shape, logged and counted.
pub fn upstream_error(state: &AppState, what: &str, e: &anyhow::Error) -> ApiError {
    tracing::warn!(error = %format!("{e:#}"), what, "management API: upstream call failed");
    refusal_error(state, what, Refusal::of(e))
}
