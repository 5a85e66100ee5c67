//! Users, as an operator finds and helps them: search
//! (`GET {API}/users?q=`), one user (`GET {API}/users/{id}`: state,
//! profile, identities, recent logins and the route their next login
//! would take, as `switchyard cutover explain` gives it), block and
//! unblock (the CLI's one block path, which owes the upstream its
//! write-back), and a password-reset email; the `/admin/users` pages.
//!
//! User ids contain `|` (`auth0|abc`) and other characters a path must
//! escape: the API takes them percent-encoded, and the pages link to them
//! that way.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::API;
use super::access::{ApiOperator, Operator, PageOperator};
use super::audit::record_change;
use super::cutover::{RouteView, path_segment, route_of, set_pin, user_by_id};
use super::pages::{Section, render};
use super::problem::Problem;
use crate::cutover::Pin;
use crate::error::AppError;
use crate::state::AppState;
use crate::store::user_search::{IdentityRecord, MAX_PAGE};
use crate::store::{AuditEvent, Profile, User, UserState};
use crate::upstream::management::write_back::Refusal;

/// Users per page when the request names no limit.
const DEFAULT_LIMIT: u32 = 25;
/// Recent logins shown for a user.
const LOGINS_SHOWN: u32 = 10;
/// The longest search accepted (an email is at most 320 characters).
const MAX_QUERY: usize = 320;

/// One user in a list.
#[derive(Debug, Serialize)]
pub struct UserSummary {
    pub id: String,
    pub email: Option<String>,
    pub username: Option<String>,
    pub name: Option<String>,
    pub state: UserState,
    pub blocked: bool,
    pub pin: Option<Pin>,
    pub last_login_at: Option<i64>,
}

impl UserSummary {
    fn of(u: &User) -> Self {
        Self {
            id: u.id.clone(),
            email: u.profile.email.clone(),
            username: u.profile.username.clone(),
            name: u.profile.name.clone(),
            state: u.state,
            blocked: u.blocked,
            pin: u.pin.as_deref().and_then(Pin::parse),
            last_login_at: u.last_login_at,
        }
    }
}

/// `GET {API}/users`.
#[derive(Debug, Serialize)]
pub struct UserList {
    pub users: Vec<UserSummary>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

async fn search(state: &AppState, q: &SearchQuery) -> Result<UserList, Problem> {
    let limit = match q.limit.as_deref() {
        None | Some("") => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| {
                Problem::bad_request(format!("limit: expected 1 to {MAX_PAGE}"))
                    .with("field", "limit")
            })?,
    };
    let text = q.q.as_deref().unwrap_or("").trim();
    if text.len() > MAX_QUERY {
        return Err(
            Problem::bad_request(format!("q: at most {MAX_QUERY} characters")).with("field", "q"),
        );
    }
    let after = q.after.as_deref().filter(|a| !a.is_empty());
    // One more than asked tells whether there is a next page.
    let mut users = state.db.search_users(text, after, limit + 1).await?;
    let next = if users.len() > limit as usize {
        users.truncate(limit as usize);
        users.last().map(|u| u.id.clone())
    } else {
        None
    };
    Ok(UserList {
        users: users.iter().map(UserSummary::of).collect(),
        next,
    })
}

/// One login, from the audit trail.
#[derive(Debug, Serialize)]
pub struct LoginView {
    pub at: i64,
    pub client_id: Option<String>,
    pub ip: Option<String>,
}

/// `GET {API}/users/{id}`.
#[derive(Debug, Serialize)]
pub struct UserDetail {
    pub id: String,
    pub state: UserState,
    pub blocked: bool,
    pub pin: Option<Pin>,
    pub profile: Profile,
    /// The provider the user came from, if any.
    pub upstream: Option<String>,
    /// How and when the user was migrated.
    pub migration_route: Option<String>,
    pub migrated_at: Option<i64>,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
    pub identities: Vec<IdentityRecord>,
    /// Newest first.
    pub recent_logins: Vec<LoginView>,
    /// Where the next login goes, and why.
    pub route: RouteView,
}

async fn detail(state: &AppState, id: &str, client: Option<&str>) -> Result<UserDetail, Problem> {
    let user = user_by_id(state, id).await?;
    let identities = state.db.user_identities(&user.id).await?;
    let logins = state.db.recent_logins(&user.id, LOGINS_SHOWN).await?;
    let route = route_of(state, &user.id, client).await?;
    Ok(UserDetail {
        id: user.id.clone(),
        state: user.state,
        blocked: user.blocked,
        pin: user.pin.as_deref().and_then(Pin::parse),
        profile: user.profile.clone(),
        upstream: user.upstream.clone(),
        migration_route: user.route.clone(),
        migrated_at: user.migrated_at,
        created_at: user.created_at,
        last_login_at: user.last_login_at,
        identities,
        recent_logins: logins
            .into_iter()
            .map(|e: AuditEvent| LoginView {
                at: e.at,
                client_id: e.client_id,
                ip: e.ip,
            })
            .collect(),
        route,
    })
}

/// Blocks or unblocks a user through the CLI's one block path (the
/// write-back owed the upstream committed with the change), with the
/// operator's audit event.
pub async fn set_blocked(
    state: &AppState,
    operator: &Operator,
    id: &str,
    blocked: bool,
) -> Result<User, Problem> {
    operator.require_write()?;
    let user = user_by_id(state, id).await?;
    let kind = if blocked {
        "user_blocked"
    } else {
        "user_unblocked"
    };
    let event = AuditEvent::new(kind, Some(&user.id), None).with_actor(operator.actor.label());
    match state
        .write_back
        .set_blocked(&*state.db, &user, blocked, &event)
        .await?
    {
        Ok(true) => {}
        Ok(false) => return Err(Problem::not_found(format!("no user with id {id:?}"))),
        // The vendor's message is a policy's words, safe to show.
        Err(Refusal::Refused { message, .. }) => {
            return Err(Problem::conflict(format!(
                "the upstream refused the change, and nothing was changed: {message}"
            )));
        }
        Err(Refusal::Unavailable | Refusal::Throttled(_)) => {
            return Err(Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream-unavailable",
                "The upstream could not be reached",
                "the upstream could not be reached, and nothing was changed; try again later",
            ));
        }
    }
    let action = if blocked {
        "user.block"
    } else {
        "user.unblock"
    };
    record_change(
        state,
        operator,
        action,
        &user.id,
        json!({ "blocked": user.blocked }),
        json!({ "blocked": blocked }),
    )
    .await?;
    user_by_id(state, &user.id).await
}

/// Queues a password-reset email for the user (the Forgot-password
/// page's own queueing); a 409 when they have no email or are blocked.
pub async fn send_reset(state: &AppState, operator: &Operator, id: &str) -> Result<(), Problem> {
    operator.require_write()?;
    let user = user_by_id(state, id).await?;
    let queued = crate::recovery::queue_reset(state, &user, None)
        .await
        .map_err(|e| match e {
            AppError::Unavailable => Problem::unavailable(),
            other => Problem::internal(other),
        })?;
    if !queued {
        return Err(Problem::conflict(
            "the user has no email address or is blocked, so no reset email was queued",
        ));
    }
    record_change(
        state,
        operator,
        "user.reset",
        &user.id,
        json!({ "reset_email": null }),
        json!({ "reset_email": "queued" }),
    )
    .await?;
    Ok(())
}

async fn get_users(
    State(state): State<AppState>,
    ApiOperator(_): ApiOperator,
    Query(q): Query<SearchQuery>,
) -> Result<Json<UserList>, Problem> {
    Ok(Json(search(&state, &q).await?))
}

#[derive(Deserialize)]
struct DetailQuery {
    client: Option<String>,
}

async fn get_user(
    State(state): State<AppState>,
    ApiOperator(_): ApiOperator,
    Path(id): Path<String>,
    Query(q): Query<DetailQuery>,
) -> Result<Json<UserDetail>, Problem> {
    Ok(Json(detail(&state, &id, q.client.as_deref()).await?))
}

#[derive(Serialize)]
struct BlockedAnswer {
    user_id: String,
    blocked: bool,
}

async fn post_block(
    State(state): State<AppState>,
    ApiOperator(operator): ApiOperator,
    Path(id): Path<String>,
) -> Result<Json<BlockedAnswer>, Problem> {
    let user = set_blocked(&state, &operator, &id, true).await?;
    Ok(Json(BlockedAnswer {
        user_id: user.id,
        blocked: user.blocked,
    }))
}

async fn post_unblock(
    State(state): State<AppState>,
    ApiOperator(operator): ApiOperator,
    Path(id): Path<String>,
) -> Result<Json<BlockedAnswer>, Problem> {
    let user = set_blocked(&state, &operator, &id, false).await?;
    Ok(Json(BlockedAnswer {
        user_id: user.id,
        blocked: user.blocked,
    }))
}

async fn post_reset(
    State(state): State<AppState>,
    ApiOperator(operator): ApiOperator,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    send_reset(&state, &operator, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "user_id": id, "reset_email": "queued" })),
    )
        .into_response())
}

// ---- The pages ----

/// Seconds since the epoch as the pages show them (UTC).
fn when(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| at.to_string())
}

#[derive(Serialize)]
struct Row {
    href: String,
    id: String,
    email: String,
    username: String,
    state: &'static str,
    blocked: bool,
    pin: &'static str,
    last_login: String,
}

/// A route as the user page names it.
fn route_label(route: &str) -> &'static str {
    match route {
        "local" => "local",
        "upstream_password" => "upstream password",
        "upstream_redirect" => "upstream page",
        "reset_password" => "password reset",
        _ => "unknown",
    }
}

fn pin_text(pin: Option<Pin>) -> &'static str {
    match pin {
        Some(Pin::Local) => "pinned to local",
        Some(Pin::Upstream) => "pinned to the upstream",
        None => "",
    }
}

#[derive(Serialize)]
struct UsersPage {
    q: String,
    searched: bool,
    rows: Vec<Row>,
    next_href: Option<String>,
    error: Option<String>,
}

async fn users_page(
    State(state): State<AppState>,
    operator: PageOperator,
    Query(q): Query<SearchQuery>,
) -> Result<Response, AppError> {
    let text = q.q.clone().unwrap_or_default();
    let (list, error, status) = match search(&state, &q).await {
        Ok(list) => (list, None, StatusCode::OK),
        Err(p) if p.status == StatusCode::BAD_REQUEST => (
            UserList {
                users: vec![],
                next: None,
            },
            Some(p.detail),
            StatusCode::BAD_REQUEST,
        ),
        Err(p) => return Err(p.into()),
    };
    let rows = list
        .users
        .iter()
        .map(|u| Row {
            href: format!("/admin/users/{}", path_segment(&u.id)),
            id: u.id.clone(),
            email: u.email.clone().unwrap_or_default(),
            username: u.username.clone().unwrap_or_default(),
            state: u.state.as_str(),
            blocked: u.blocked,
            pin: pin_text(u.pin),
            last_login: u.last_login_at.map(when).unwrap_or_else(|| "never".into()),
        })
        .collect();
    let next_href = list.next.map(|after| {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("q", &text)
            .append_pair("after", &after)
            .finish();
        format!("/admin/users?{query}")
    });
    Ok(render(
        status,
        "admin/users.html",
        &operator,
        Section::Users,
        "Users",
        None,
        UsersPage {
            searched: q.q.is_some(),
            q: text,
            rows,
            next_href,
            error,
        },
    ))
}

/// What the user page's action buttons do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    PinLocal,
    PinUpstream,
    Unpin,
    Block,
    Unblock,
    Reset,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::PinLocal => "pin_local",
            Action::PinUpstream => "pin_upstream",
            Action::Unpin => "unpin",
            Action::Block => "block",
            Action::Unblock => "unblock",
            Action::Reset => "reset",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Action::PinLocal,
            Action::PinUpstream,
            Action::Unpin,
            Action::Block,
            Action::Unblock,
            Action::Reset,
        ]
        .into_iter()
        .find(|a| a.name() == s)
    }

    /// The notice shown after it was done (fixed texts: the address can
    /// never put words on the page).
    fn done(self) -> &'static str {
        match self {
            Action::PinLocal => "Pinned to local: the user's next logins stay in Switchyard.",
            Action::PinUpstream => {
                "Pinned to the upstream: the user's next logins go to the upstream."
            }
            Action::Unpin => "Unpinned: the user's logins follow the cutover rules again.",
            Action::Block => "Blocked: the user cannot log in.",
            Action::Unblock => "Unblocked: the user can log in again.",
            Action::Reset => "A password-reset email is on its way to the user.",
        }
    }
}

#[derive(Serialize)]
struct UserPage {
    action: String,
    user: UserDetail,
    created: String,
    last_login: String,
    migrated: Option<String>,
    pin_text: &'static str,
    route_label: &'static str,
    logins: Vec<(String, String, String)>,
    identities: Vec<(String, String, String)>,
}

#[derive(Deserialize)]
struct UserPageQuery {
    notice: Option<String>,
}

async fn user_page(
    State(state): State<AppState>,
    operator: PageOperator,
    Path(id): Path<String>,
    Query(q): Query<UserPageQuery>,
) -> Result<Response, AppError> {
    let user = detail(&state, &id, None).await.map_err(AppError::from)?;
    let notice = q
        .notice
        .as_deref()
        .and_then(Action::parse)
        .map(Action::done);
    let page = UserPage {
        action: format!("/admin/users/{}/action", path_segment(&user.id)),
        created: when(user.created_at),
        last_login: user
            .last_login_at
            .map(when)
            .unwrap_or_else(|| "never".into()),
        migrated: user.migrated_at.map(|at| match &user.migration_route {
            Some(route) => format!("{} (by {route})", when(at)),
            None => when(at),
        }),
        pin_text: pin_text(user.pin),
        route_label: route_label(user.route.route),
        logins: user
            .recent_logins
            .iter()
            .map(|l| {
                (
                    when(l.at),
                    l.client_id.clone().unwrap_or_else(|| "-".into()),
                    l.ip.clone().unwrap_or_else(|| "-".into()),
                )
            })
            .collect(),
        identities: user
            .identities
            .iter()
            .map(|i| (i.provider.clone(), i.subject.clone(), when(i.created_at)))
            .collect(),
        user,
    };
    let title = page
        .user
        .profile
        .email
        .clone()
        .or_else(|| page.user.profile.username.clone())
        .unwrap_or_else(|| page.user.id.clone());
    Ok(render(
        StatusCode::OK,
        "admin/user.html",
        &operator,
        Section::Users,
        &title,
        notice,
        page,
    ))
}

#[derive(Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
    action: Action,
}

/// `POST /admin/users/{id}/action`: one of the page's buttons, then back
/// to the page with a notice (Post/Redirect/Get).
async fn post_action(
    State(state): State<AppState>,
    operator: PageOperator,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Response, AppError> {
    operator.check_csrf(&form.csrf)?;
    let op = &operator.operator;
    let done = match form.action {
        Action::PinLocal => set_pin(&state, op, &id, Some(Pin::Local)).await.map(drop),
        Action::PinUpstream => set_pin(&state, op, &id, Some(Pin::Upstream))
            .await
            .map(drop),
        Action::Unpin => set_pin(&state, op, &id, None).await.map(drop),
        Action::Block => set_blocked(&state, op, &id, true).await.map(drop),
        Action::Unblock => set_blocked(&state, op, &id, false).await.map(drop),
        Action::Reset => send_reset(&state, op, &id).await,
    };
    done.map_err(AppError::from)?;
    Ok(Redirect::to(&format!(
        "/admin/users/{}?notice={}",
        path_segment(&id),
        form.action.name()
    ))
    .into_response())
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(&format!("{API}/users"), get(get_users))
        .route(&format!("{API}/users/{{id}}"), get(get_user))
        .route(&format!("{API}/users/{{id}}/block"), post(post_block))
        .route(&format!("{API}/users/{{id}}/unblock"), post(post_unblock))
        .route(&format!("{API}/users/{{id}}/reset"), post(post_reset))
        .route("/admin/users", get(users_page))
        .route("/admin/users/{id}", get(user_page))
        .route("/admin/users/{id}/action", post(post_action))
}
