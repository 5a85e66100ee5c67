//! The operators' trail: every change made through the dashboard or the
//! admin API is an audit event naming the operator, with the state before
//! and after. `/admin/audit` and `GET /admin/api/v1/audit` list the trail
//! (every event, logins' too), newest first, filtered and paged.

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::access::{ApiOperator, Operator, PageOperator};
use super::pages::{Section, render};
use super::problem::Problem;
use crate::error::AppError;
use crate::state::AppState;
use crate::store::AuditEvent;
use crate::store::audit_query::{AuditFilter, MAX_PAGE, StoredEvent};

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
        .route(&format!("{}/audit", super::API), get(get_audit_api))
        .route("/admin/audit", get(get_audit_page))
        .route(
            "/admin/assets/audit.css",
            get(|| async { crate::templates::asset("text/css; charset=utf-8", AUDIT_CSS) }),
        )
}

const AUDIT_CSS: &str = include_str!("../../templates/admin/audit.css");

/// A page of events when no `limit` is asked for.
const DEFAULT_PAGE: u32 = 50;

/// The filters as the query string spells them; every one optional, each
/// parsed by [`AuditQueryParams::filter`] so a bad value is answered in the
/// API's error shape rather than the framework's.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct AuditQueryParams {
    /// `user:<id>`, `client:<id>`, `cli` or `config`.
    #[serde(default)]
    pub actor: Option<String>,
    /// A prefix of the event kind (`admin.` for operators' changes).
    #[serde(default)]
    pub kind: Option<String>,
    /// The id of the user the event is about.
    #[serde(default)]
    pub user: Option<String>,
    /// From this instant on: Unix seconds, RFC 3339, or a date (`2026-12-01`, from its start, UTC).
    #[serde(default)]
    pub since: Option<String>,
    /// Before this instant: Unix seconds, RFC 3339, or a date (up to its end, UTC).
    #[serde(default)]
    pub until: Option<String>,
    #[serde(default)]
    pub limit: Option<String>,
    /// The `next_before` of the previous page.
    #[serde(default)]
    pub before: Option<String>,
}

/// Which end of a day a date names.
#[derive(Clone, Copy)]
enum DayEnd {
    Start,
    End,
}

/// Unix seconds, an RFC 3339 timestamp or a `YYYY-MM-DD` date (UTC).
fn parse_instant(value: &str, end: DayEnd) -> Option<i64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<i64>() {
        return Some(secs);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value) {
        return Some(t.timestamp());
    }
    let day = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()?;
    let day = match end {
        DayEnd::Start => day,
        DayEnd::End => day.succ_opt()?,
    };
    Some(day.and_hms_opt(0, 0, 0)?.and_utc().timestamp())
}

impl AuditQueryParams {
    fn filter(&self) -> Result<AuditFilter, String> {
        let text = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
        };
        let instant = |name: &str, v: &Option<String>, end: DayEnd| match text(v) {
            None => Ok(None),
            Some(s) => parse_instant(&s, end).map(Some).ok_or_else(|| {
                format!("{name} must be Unix seconds, an RFC 3339 timestamp or a YYYY-MM-DD date")
            }),
        };
        let limit = match text(&self.limit) {
            None => DEFAULT_PAGE,
            Some(s) => s
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| format!("limit must be a whole number from 1 to {MAX_PAGE}"))?,
        };
        let before = match text(&self.before) {
            None => None,
            Some(s) => Some(
                s.parse::<i64>()
                    .map_err(|_| "before must be an event id".to_string())?,
            ),
        };
        Ok(AuditFilter {
            actor: text(&self.actor),
            kind_prefix: text(&self.kind),
            user_id: text(&self.user),
            since: instant("since", &self.since, DayEnd::Start)?,
            until: instant("until", &self.until, DayEnd::End)?,
            before,
            limit,
        })
    }
}

/// One page of the trail, and the cursor of the next when there may be
/// one (a full page).
async fn page_of(
    state: &AppState,
    filter: &AuditFilter,
) -> crate::store::StoreResult<(Vec<StoredEvent>, Option<i64>)> {
    let events = state.db.query_events(filter).await?;
    let next = (events.len() as u32 >= filter.limit)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    Ok((events, next))
}

/// `GET /admin/api/v1/audit`.
async fn get_audit_api(
    State(state): State<AppState>,
    ApiOperator(_operator): ApiOperator,
    Query(params): Query<AuditQueryParams>,
) -> Result<Response, Problem> {
    let filter = params.filter().map_err(Problem::bad_request)?;
    let (events, next_before) = page_of(&state, &filter).await?;
    Ok(Json(json!({ "events": events, "next_before": next_before })).into_response())
}

/// An event as the page shows it.
#[derive(Serialize)]
struct EventRow {
    id: i64,
    /// `2026-12-06 17:04:05 UTC`.
    when: String,
    kind: String,
    actor: String,
    user_id: String,
    target: String,
    /// What changed, field by field, when the detail has a before and an
    /// after.
    changes: Vec<Change>,
    /// The rest of the detail, as indented JSON; empty when there is none.
    detail: String,
}

#[derive(Serialize)]
struct Change {
    field: String,
    before: String,
    after: String,
}

fn show(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "—".into(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

fn when(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| at.to_string())
}

/// Before and after side by side: the fields that differ when both are
/// objects, or the two values whole.
fn changes(before: Option<&Value>, after: Option<&Value>) -> Vec<Change> {
    match (before, after) {
        (None, None) => Vec::new(),
        (Some(Value::Object(b)), Some(Value::Object(a))) => {
            let mut fields: Vec<&String> = b.keys().chain(a.keys()).collect();
            fields.sort();
            fields.dedup();
            fields
                .into_iter()
                .filter(|f| b.get(*f) != a.get(*f))
                .map(|f| Change {
                    field: f.clone(),
                    before: show(b.get(f)),
                    after: show(a.get(f)),
                })
                .collect()
        }
        (b, a) => vec![Change {
            field: String::new(),
            before: show(b),
            after: show(a),
        }],
    }
}

impl From<StoredEvent> for EventRow {
    fn from(stored: StoredEvent) -> Self {
        let e = stored.event;
        let mut detail = match e.detail {
            Value::Object(m) => m,
            Value::Null => Default::default(),
            other => [("detail".to_string(), other)].into_iter().collect(),
        };
        let before = detail.remove("before");
        let after = detail.remove("after");
        let target = detail
            .remove("target")
            .map(|t| show(Some(&t)))
            .unwrap_or_default();
        // Only an operator's change has an actor; a login's client and
        // address are part of what happened, shown with its details.
        let actor = e.actor.unwrap_or_default();
        if let Some(client) = e.client_id.filter(|_| actor.is_empty()) {
            detail.insert("client".into(), Value::String(client));
        }
        if let Some(ip) = e.ip {
            detail.insert("ip".into(), Value::String(ip));
        }
        EventRow {
            id: stored.id,
            when: when(e.at),
            kind: e.kind,
            actor,
            user_id: e.user_id.unwrap_or_default(),
            target,
            changes: changes(before.as_ref(), after.as_ref()),
            detail: if detail.is_empty() {
                String::new()
            } else {
                serde_json::to_string_pretty(&Value::Object(detail)).unwrap_or_default()
            },
        }
    }
}

/// `GET /admin/audit`: the filters as a GET form, the events as a table.
async fn get_audit_page(
    State(state): State<AppState>,
    operator: PageOperator,
    Query(params): Query<AuditQueryParams>,
) -> Result<Response, AppError> {
    let (rows, next, error) = match params.filter() {
        Ok(filter) => {
            let (events, next) = page_of(&state, &filter).await?;
            (
                events.into_iter().map(EventRow::from).collect::<Vec<_>>(),
                next,
                None,
            )
        }
        Err(message) => (Vec::new(), None, Some(message)),
    };
    // The next page keeps the filters and moves the cursor.
    let next_href = next.map(|before| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("actor", &params.actor),
            ("kind", &params.kind),
            ("user", &params.user),
            ("since", &params.since),
            ("until", &params.until),
            ("limit", &params.limit),
        ] {
            if let Some(v) = value.as_deref().filter(|v| !v.trim().is_empty()) {
                q.append_pair(name, v);
            }
        }
        q.append_pair("before", &before.to_string());
        format!("/admin/audit?{}", q.finish())
    });
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(render(
        status,
        "admin/audit.html",
        &operator,
        Section::Audit,
        "Audit trail",
        None,
        json!({
            "filters": params,
            "events": rows,
            "next_href": next_href,
            "error": error,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_seconds_timestamps_or_days() {
        assert_eq!(
            parse_instant("1700000000", DayEnd::Start),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_instant("2026-12-01T00:00:00Z", DayEnd::Start),
            Some(1_796_083_200)
        );
        assert_eq!(
            parse_instant("2026-12-01", DayEnd::Start),
            Some(1_796_083_200)
        );
        assert_eq!(
            parse_instant("2026-12-01", DayEnd::End),
            Some(1_796_083_200 + 86_400)
        );
        assert_eq!(parse_instant("yesterday", DayEnd::Start), None);
    }

    #[test]
    fn before_and_after_show_only_what_changed() {
        let c = changes(
            Some(&json!({"phase": "shadow", "cohorts": 2})),
            Some(&json!({"phase": "local", "cohorts": 2})),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(
            (
                c[0].field.as_str(),
                c[0].before.as_str(),
                c[0].after.as_str()
            ),
            ("phase", "shadow", "local")
        );
        let whole = changes(Some(&Value::Null), Some(&json!(true)));
        assert_eq!(
            (whole[0].before.as_str(), whole[0].after.as_str()),
            ("—", "true")
        );
    }
}
