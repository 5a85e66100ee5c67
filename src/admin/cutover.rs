//! Steering the cutover: the rules in force (`GET/PUT {API}/cutover`,
//! with a preview of whom a change moves), the per-user pins
//! (`POST/DELETE {API}/users/{id}/pin`), and the dashboard's
//! `/admin/cutover` page.
//!
//! Rules are stored the one way `switchyard cutover set-phase` stores them
//! ([`crate::cutover::store`], a runtime setting), so every instance
//! follows a change within [`crate::cutover::RELOAD_INTERVAL`] without a
//! restart. Each change is refused to a read-only operator and recorded in
//! the audit trail with the rules before and after.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::API;
use super::access::{ApiOperator, Operator, PageOperator};
use super::audit::record_change;
use super::pages::{Section, render};
use super::problem::{ApiJson, Problem};
use crate::config::{Cohort, CutoverSettings, Phase};
use crate::cutover::{self, Pin, Preview, Track, UpstreamCaps};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::User;

/// Pinned users listed with the rules.
const PINS_SHOWN: u32 = 100;

/// What this instance's upstream offers, for routing outside a login.
pub fn caps(state: &AppState) -> UpstreamCaps {
    UpstreamCaps {
        configured: state.upstream.is_some(),
        password_grant: state
            .upstream
            .as_ref()
            .is_some_and(|u| u.client.def.password.is_some()),
    }
}

/// The rules as stored (the file's until an operator changed them): what
/// every instance follows within the reload interval.
async fn stored_rules(state: &AppState) -> Result<CutoverSettings, Problem> {
    Ok(cutover::load(&*state.db, &state.settings.cutover).await?)
}

/// `GET {API}/cutover`.
#[derive(Debug, Serialize)]
pub struct CutoverView {
    pub rules: CutoverSettings,
    /// Pinned users, in id order (the first [`PINS_SHOWN`]).
    pub pins: Vec<PinView>,
    /// How long an instance may follow older rules after a change.
    pub reload_interval_secs: u64,
}

#[derive(Debug, Serialize)]
pub struct PinView {
    pub user_id: String,
    pub email: Option<String>,
    pub track: Option<Pin>,
}

impl PinView {
    fn of(u: &User) -> Self {
        Self {
            user_id: u.id.clone(),
            email: u.profile.email.clone(),
            track: u.pin.as_deref().and_then(Pin::parse),
        }
    }
}

async fn view(state: &AppState) -> Result<CutoverView, Problem> {
    let pins = state.db.pinned_users(PINS_SHOWN).await?;
    Ok(CutoverView {
        rules: stored_rules(state).await?,
        pins: pins.iter().map(PinView::of).collect(),
        reload_interval_secs: cutover::RELOAD_INTERVAL.as_secs(),
    })
}

/// A rules body read and checked: a 400 naming the field that is wrong
/// (`phase`, `cohorts[0].percent`, `deny[2]`).
fn parse_rules(state: &AppState, body: Value) -> Result<CutoverSettings, Problem> {
    let rules: CutoverSettings = serde_path_to_error::deserialize(body).map_err(|e| {
        // The path of the value that failed (`cohorts[0].percent`); for a
        // member that should not be there, the message names it.
        let field = e.path().to_string();
        if field == "." {
            Problem::bad_request(e.inner().to_string())
        } else {
            Problem::bad_request(format!("{field}: {}", e.inner())).with("field", field)
        }
    })?;
    cutover::validate(&rules, caps(state)).map_err(|i| {
        Problem::bad_request(format!("{}: {}", i.field, i.message)).with("field", i.field)
    })?;
    Ok(rules)
}

/// What `rules` would do to every user's next login, against the rules
/// stored now.
pub async fn preview(state: &AppState, rules: &CutoverSettings) -> Result<Preview, Problem> {
    let before = stored_rules(state).await?;
    Ok(cutover::preview(&*state.db, &before, rules, caps(state)).await?)
}

/// Stores `rules` for every instance, with its audit event.
pub async fn apply(
    state: &AppState,
    operator: &Operator,
    rules: &CutoverSettings,
) -> Result<(), Problem> {
    operator.require_write()?;
    let before = stored_rules(state).await?;
    cutover::store(&*state.db, rules).await?;
    record_change(
        state,
        operator,
        "cutover.update",
        "cutover",
        to_json(&before),
        to_json(rules),
    )
    .await?;
    Ok(())
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

async fn get_cutover(
    State(state): State<AppState>,
    ApiOperator(_): ApiOperator,
) -> Result<Json<CutoverView>, Problem> {
    Ok(Json(view(&state).await?))
}

#[derive(Deserialize)]
struct PutQuery {
    #[serde(default)]
    dry_run: Option<String>,
}

/// `PUT {API}/cutover`: the whole rules. With `?dry_run=true` nothing is
/// stored and the answer is the preview (a read, so a read-only operator
/// may ask for it).
async fn put_cutover(
    State(state): State<AppState>,
    ApiOperator(operator): ApiOperator,
    Query(q): Query<PutQuery>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, Problem> {
    let dry_run = match q.dry_run.as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(_) => {
            return Err(
                Problem::bad_request("dry_run: expected true or false").with("field", "dry_run")
            );
        }
    };
    if !dry_run {
        operator.require_write()?;
    }
    let rules = parse_rules(&state, body)?;
    if dry_run {
        return Ok(Json(preview(&state, &rules).await?).into_response());
    }
    apply(&state, &operator, &rules).await?;
    Ok(Json(view(&state).await?).into_response())
}

/// `POST {API}/cutover/preview`: the same as a dry run.
async fn post_preview(
    State(state): State<AppState>,
    ApiOperator(_): ApiOperator,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Preview>, Problem> {
    let rules = parse_rules(&state, body)?;
    Ok(Json(preview(&state, &rules).await?))
}

/// The route a login by `identifier` would take now, and why: the lines of
/// `switchyard cutover explain`.
#[derive(Debug, Serialize)]
pub struct RouteView {
    pub route: &'static str,
    pub track: Track,
    pub reason: String,
    /// `switchyard cutover explain`'s output, line by line.
    pub explain: Vec<String>,
}

pub async fn route_of(
    state: &AppState,
    identifier: &str,
    client_id: Option<&str>,
) -> Result<RouteView, Problem> {
    let rules = stored_rules(state).await?;
    let explained =
        cutover::explain(&*state.db, &rules, identifier, client_id, caps(state)).await?;
    Ok(RouteView {
        route: explained.decision.route.as_str(),
        track: explained.decision.route.track(),
        reason: explained.decision.reason.clone(),
        explain: explained.lines().to_vec(),
    })
}

/// A user the admin API names by id; 404 when there is none.
pub async fn user_by_id(state: &AppState, id: &str) -> Result<User, Problem> {
    state
        .db
        .get_user(id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no user with id {id:?}")))
}

/// Pins `user_id` to `pin`'s track (or unpins them), with its audit event.
pub async fn set_pin(
    state: &AppState,
    operator: &Operator,
    user_id: &str,
    pin: Option<Pin>,
) -> Result<User, Problem> {
    operator.require_write()?;
    let user = user_by_id(state, user_id).await?;
    let before = user.pin.as_deref().and_then(Pin::parse);
    if !state.db.set_pin(&user.id, pin.map(Pin::as_str)).await? {
        return Err(Problem::not_found(format!("no user with id {user_id:?}")));
    }
    let action = if pin.is_some() {
        "user.pin"
    } else {
        "user.unpin"
    };
    record_change(
        state,
        operator,
        action,
        &user.id,
        json!({ "pin": before }),
        json!({ "pin": pin }),
    )
    .await?;
    user_by_id(state, &user.id).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinBody {
    track: Pin,
}

/// The answer to a pin change: the pin and the route it gives.
#[derive(Serialize)]
struct PinAnswer {
    user_id: String,
    pin: Option<Pin>,
    route: RouteView,
}

async fn pin_answer(state: &AppState, user: &User) -> Result<Json<PinAnswer>, Problem> {
    Ok(Json(PinAnswer {
        user_id: user.id.clone(),
        pin: user.pin.as_deref().and_then(Pin::parse),
        route: route_of(state, &user.id, None).await?,
    }))
}

async fn post_pin(
    State(state): State<AppState>,
    ApiOperator(operator): ApiOperator,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<PinAnswer>, Problem> {
    operator.require_write()?;
    let body: PinBody = serde_path_to_error::deserialize(body).map_err(|e| {
        Problem::bad_request(format!("track: {}", e.inner())).with("field", "track")
    })?;
    let user = set_pin(&state, &operator, &id, Some(body.track)).await?;
    pin_answer(&state, &user).await
}

async fn delete_pin(
    State(state): State<AppState>,
    ApiOperator(operator): ApiOperator,
    Path(id): Path<String>,
) -> Result<Json<PinAnswer>, Problem> {
    let user = set_pin(&state, &operator, &id, None).await?;
    pin_answer(&state, &user).await
}

/// `id` as one path segment: everything but RFC 3986 §2.3's unreserved
/// characters percent-encoded, so `auth0|abc` becomes `auth0%7Cabc`.
pub fn path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---- The page ----

/// The phases as the form offers them.
const PHASES: [(Phase, &str); 4] = [
    (
        Phase::Passthrough,
        "passthrough: every login goes to the upstream",
    ),
    (
        Phase::Lazy,
        "lazy: users are moved at their first login (cohorts apply)",
    ),
    (
        Phase::LocalFirst,
        "local_first: local first; the upstream only for users still pending",
    ),
    (Phase::LocalOnly, "local_only: the upstream is never called"),
];

/// The form's fields, as text: one cohort per line (`30%`, `example.com`,
/// or both), one allow or deny entry per line, one `client = phase` per
/// line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RulesForm {
    #[serde(default)]
    phase: String,
    #[serde(default)]
    cohorts: String,
    #[serde(default)]
    allow: String,
    #[serde(default)]
    deny: String,
    #[serde(default)]
    clients: String,
}

impl RulesForm {
    fn of(rules: &CutoverSettings) -> Self {
        let cohorts = rules
            .cohorts
            .iter()
            .map(|c| {
                c.percent
                    .map(|p| format!("{p}%"))
                    .into_iter()
                    .chain(c.email_domains.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n");
        let clients = rules
            .clients
            .iter()
            .map(|(c, p)| format!("{c} = {}", p.name()))
            .collect::<Vec<_>>()
            .join("\n");
        Self {
            phase: rules.phase.name().into(),
            cohorts,
            allow: rules.allow.join("\n"),
            deny: rules.deny.join("\n"),
            clients,
        }
    }

    /// The rules the form describes, or what is wrong and where.
    fn rules(&self) -> Result<CutoverSettings, String> {
        let phase = |s: &str, field: &str| {
            PHASES
                .iter()
                .map(|(p, _)| *p)
                .find(|p| p.name() == s.trim())
                .ok_or_else(|| format!("{field}: {s:?} is not a phase"))
        };
        let lines = |s: &str| -> Vec<String> {
            s.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        };
        let mut cohorts = Vec::new();
        for (i, line) in lines(&self.cohorts).iter().enumerate() {
            let mut cohort = Cohort::default();
            for word in line.split([' ', ',', '\t']).filter(|w| !w.is_empty()) {
                match word.strip_suffix('%') {
                    Some(n) => {
                        let p = n.parse::<u8>().ok().filter(|p| *p <= 100).ok_or_else(|| {
                            format!(
                                "Cohorts, line {}: {word:?} is not a percentage (0% to 100%)",
                                i + 1
                            )
                        })?;
                        cohort.percent = Some(p);
                    }
                    None => cohort.email_domains.push(word.to_string()),
                }
            }
            cohorts.push(cohort);
        }
        let mut clients = BTreeMap::new();
        for (i, line) in lines(&self.clients).iter().enumerate() {
            let (client, p) = line.split_once('=').ok_or_else(|| {
                format!("Per-client phases, line {}: write client_id = phase", i + 1)
            })?;
            clients.insert(
                client.trim().to_string(),
                phase(p, &format!("Per-client phases, line {}", i + 1))?,
            );
        }
        Ok(CutoverSettings {
            phase: phase(&self.phase, "Phase")?,
            cohorts,
            allow: lines(&self.allow),
            deny: lines(&self.deny),
            clients,
        })
    }
}

#[derive(Serialize)]
struct PinRow {
    href: String,
    user_id: String,
    email: String,
    to: &'static str,
}

#[derive(Serialize)]
struct CutoverPage {
    phases: Vec<(&'static str, &'static str)>,
    form: RulesForm,
    rules: CutoverSettings,
    pins: Vec<PinRow>,
    preview: Option<Preview>,
    error: Option<String>,
    reload_interval_secs: u64,
}

#[derive(Deserialize)]
struct NoticeQuery {
    notice: Option<String>,
}

/// The page's notices after a change (Post/Redirect/Get): fixed texts, so
/// the address can never put words on the page.
fn notice_text(name: Option<&str>) -> Option<String> {
    match name? {
        "applied" => Some(format!(
            "The new rules are stored. Every instance follows them within {} s.",
            cutover::RELOAD_INTERVAL.as_secs()
        )),
        _ => None,
    }
}

async fn page(
    state: &AppState,
    operator: &PageOperator,
    status: StatusCode,
    form: Option<RulesForm>,
    preview: Option<Preview>,
    error: Option<String>,
    notice: Option<String>,
) -> Result<Response, AppError> {
    let current = view(state).await.map_err(AppError::from)?;
    let page = CutoverPage {
        phases: PHASES.iter().map(|(p, label)| (p.name(), *label)).collect(),
        form: form.unwrap_or_else(|| RulesForm::of(&current.rules)),
        rules: current.rules,
        pins: current
            .pins
            .into_iter()
            .map(|p| PinRow {
                href: format!("/admin/users/{}", path_segment(&p.user_id)),
                to: match p.track {
                    Some(Pin::Local) => "local",
                    Some(Pin::Upstream) => "the upstream",
                    None => "unknown",
                },
                user_id: p.user_id,
                email: p.email.unwrap_or_default(),
            })
            .collect(),
        preview,
        error,
        reload_interval_secs: current.reload_interval_secs,
    };
    Ok(render(
        status,
        "admin/cutover.html",
        operator,
        Section::Cutover,
        "Cutover",
        notice.as_deref(),
        page,
    ))
}

async fn get_page(
    State(state): State<AppState>,
    operator: PageOperator,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, AppError> {
    let notice = notice_text(q.notice.as_deref());
    page(&state, &operator, StatusCode::OK, None, None, None, notice).await
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum FormAction {
    Preview,
    Apply,
}

#[derive(Deserialize)]
struct PostedRules {
    #[serde(default)]
    csrf: String,
    action: FormAction,
    #[serde(flatten)]
    form: RulesForm,
}

/// `POST /admin/cutover`: Preview shows what the change would do, with an
/// Apply button; Apply stores it and redirects back with a notice.
async fn post_page(
    State(state): State<AppState>,
    operator: PageOperator,
    Form(posted): Form<PostedRules>,
) -> Result<Response, AppError> {
    operator.check_csrf(&posted.csrf)?;
    let parsed = posted.form.rules().and_then(|rules| {
        cutover::validate(&rules, caps(&state))
            .map(|()| rules)
            .map_err(|i| format!("{}: {}", i.field, i.message))
    });
    let rules = match parsed {
        Ok(rules) => rules,
        Err(error) => {
            return page(
                &state,
                &operator,
                StatusCode::BAD_REQUEST,
                Some(posted.form),
                None,
                Some(error),
                None,
            )
            .await;
        }
    };
    match posted.action {
        FormAction::Preview => {
            let preview = preview(&state, &rules).await.map_err(AppError::from)?;
            page(
                &state,
                &operator,
                StatusCode::OK,
                Some(posted.form),
                Some(preview),
                None,
                None,
            )
            .await
        }
        FormAction::Apply => {
            apply(&state, &operator.operator, &rules)
                .await
                .map_err(AppError::from)?;
            Ok(Redirect::to("/admin/cutover?notice=applied").into_response())
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(&format!("{API}/cutover"), get(get_cutover).put(put_cutover))
        .route(&format!("{API}/cutover/preview"), post(post_preview))
        .route(
            &format!("{API}/users/{{id}}/pin"),
            post(post_pin).delete(delete_pin),
        )
        .route("/admin/cutover", get(get_page).post(post_page))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_path_segment_escapes_everything_but_unreserved_characters() {
        assert_eq!(super::path_segment("auth0|a b/c"), "auth0%7Ca%20b%2Fc");
    }
}
