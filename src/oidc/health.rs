//! Liveness and readiness for orchestrators.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use std::time::Duration;

use crate::state::AppState;
use crate::store::{StoreError, StoreResult};

/// `GET /healthz`: the process serves requests.
pub async fn get_healthz() -> &'static str {
    "ok"
}

/// How long `/readyz` waits for a store: an orchestrator's probe must get
/// an answer even when a store hangs rather than fails.
const READY_WITHIN: Duration = Duration::from_millis(900);

/// `GET /readyz`: both stores answer, within [`READY_WITHIN`] together.
/// Failures are named, not explained: the cause goes to the log.
pub async fn get_readyz(State(state): State<AppState>) -> Response {
    let (db, sessions) = tokio::join!(within(state.db.ping()), within(state.sessions.ping()));
    if let Err(e) = &db {
        tracing::warn!(error = %e, "readiness: database check failed");
    }
    if let Err(e) = &sessions {
        tracing::warn!(error = %e, "readiness: session store check failed");
    }
    let ok = db.is_ok() && sessions.is_ok();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |r: bool| if r { "ok" } else { "unavailable" };
    (
        status,
        Json(json!({"database": word(db.is_ok()), "session_store": word(sessions.is_ok())})),
    )
        .into_response()
}

async fn within(check: impl Future<Output = StoreResult<()>>) -> StoreResult<()> {
    tokio::time::timeout(READY_WITHIN, check)
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("no answer in time".into())))
}
