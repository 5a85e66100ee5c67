//! The operators' trail: every change made through the dashboard or the
//! admin API is an audit event naming the operator, with the state before
//! and after.

use axum::Router;
use serde_json::{Value, json};

use super::access::Operator;
use crate::state::AppState;
use crate::store::AuditEvent;

/// Records an operator's change: `action` (`cutover.update`, `user.pin`,
/// …) on `target` (a user id, a job id, `cutover`), with the state before
/// and after. Unlike a login's event, a change that cannot be audited is
/// refused: the write has already happened, so the failure is the
/// caller's to report.
pub async fn record_change(
    state: &AppState,
    operator: &Operator,
    action: &str,
    target: &str,
    before: Value,
    after: Value,
) -> crate::store::StoreResult<()> {
    let (user_id, client_id) = match &operator.actor {
        super::access::Actor::User(id) => (Some(id.as_str()), None),
        super::access::Actor::Client(id) => (None, Some(id.as_str())),
    };
    let event = AuditEvent::new(&format!("admin.{action}"), user_id, client_id)
        .with_actor(operator.actor.label())
        .with_detail(json!({ "target": target, "before": before, "after": after }));
    state.db.record_event(&event).await
}

pub fn router() -> Router<AppState> {
    Router::new()
}
