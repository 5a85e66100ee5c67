//! Liveness and readiness for orchestrators.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

/// `GET /healthz`: the process serves requests.
pub async fn get_healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: both stores answer. Failures are named, not explained:
/// the cause goes to the log.
pub async fn get_readyz(State(state): State<AppState>) -> Response {
    let db = state.db.ping().await;
    let sessions = state.sessions.ping().await;
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
