//! Who may operate Switchyard, and how a request proves it.
//!
//! Two kinds of operator:
//! - **People**: users with the `admin` role ([`crate::store::operators`]),
//!   signed in to `/admin` through Switchyard's own login with the
//!   built-in first-party client, holding an admin session: a cookie of
//!   its own (`__Host-` prefixed on https, `SameSite=Strict`) naming a
//!   record in the session store that ends after
//!   `[admin] session_idle_secs` without a request. Every form repeats the
//!   session's CSRF token.
//! - **Machines**: clients allowed the scope `switchyard:admin` (or the
//!   read-only `switchyard:admin:read`), calling the JSON API with an RFC
//!   9068 access token from the client credentials grant (RFC 6749 §4.4)
//!   whose audience is `{issuer}admin`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::{Deserialize, Serialize};

use super::problem::Problem;
use crate::crypto::{constant_time_eq, sha256_b64};
use crate::state::AppState;
use crate::store::SessionStoreExt;
use crate::tokens::jwt::{self, ACCESS_TOKEN_TYP, Expect};

/// `switchyard:admin` (every read and every change) and
/// `switchyard:admin:read` (every read, no change), kept with the clients
/// they are allowed to.
pub use crate::store::{ADMIN_READ_SCOPE, ADMIN_SCOPE};

/// The `aud` of admin access tokens: `{issuer}admin` (the issuer with one
/// trailing slash), a resource no application token names.
pub fn admin_audience(issuer: &str) -> String {
    format!("{}/admin", issuer.trim_end_matches('/'))
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum Actor {
    /// An operator signed in to the dashboard (a user id).
    User(String),
    /// A machine with an admin token (a client id).
    Client(String),
}

impl Actor {
    /// As the audit trail's `actor` column spells it.
    pub fn label(&self) -> String {
        match self {
            Actor::User(id) => format!("user:{id}"),
            Actor::Client(id) => format!("client:{id}"),
        }
    }
}

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Read,
    Write,
}

#[derive(Debug, Clone)]
pub struct Operator {
    pub actor: Actor,
    pub access: Access,
}

impl Operator {
    /// Refuses a change to a read-only operator.
    pub fn require_write(&self) -> Result<(), Problem> {
        match self.access {
            Access::Write => Ok(()),
            Access::Read => Err(Problem::forbidden(
                "this token may only read; changes need the switchyard:admin scope",
                ADMIN_SCOPE,
            )),
        }
    }
}

/// The claims an admin token is checked for.
#[derive(Deserialize)]
struct AdminClaims {
    client_id: String,
    #[serde(default)]
    scope: String,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A request to the JSON API by an operator: a machine's Bearer token, or
/// a person's admin session (the dashboard's live refresh reads the API
/// with its cookie; changes through a session also need the CSRF header,
/// [`CSRF_HEADER`]).
pub struct ApiOperator(pub Operator);

/// The header a page's script repeats the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

impl FromRequestParts<AppState> for ApiOperator {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        if let Some(token) = bearer(&parts.headers) {
            return verify_admin_token(state, token).await.map(Self);
        }
        match AdminSession::current(state, &parts.headers).await? {
            Some((_, session)) => {
                let safe = parts.method.is_safe();
                let sent = parts
                    .headers
                    .get(CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !safe && !constant_time_eq(sent.as_bytes(), session.csrf.as_bytes()) {
                    return Err(Problem::forbidden(
                        "a change through the dashboard's session must carry its CSRF token",
                        ADMIN_SCOPE,
                    ));
                }
                Ok(Self(Operator {
                    actor: Actor::User(session.user_id),
                    access: Access::Write,
                }))
            }
            None => Err(Problem::unauthorized("an admin access token is required")),
        }
    }
}

/// Checks an admin access token: ours, unexpired, typed `at+jwt`, for the
/// admin audience, from a client that still exists and may still have
/// the scope it carries.
pub async fn verify_admin_token(state: &AppState, token: &str) -> Result<Operator, Problem> {
    let audience = admin_audience(&state.settings.issuer);
    let expect = Expect {
        issuer: &state.settings.issuer,
        audience: Some(&audience),
        typ: Some(ACCESS_TOKEN_TYP),
        allow_expired: false,
    };
    let claims = match jwt::verify::<AdminClaims>(&state.keys.current(), token, &expect) {
        Err(jwt::VerifyError::UnknownKey) if state.unknown_kid_reloads.ready() => {
            state.keys.reload().await.map_err(Problem::internal)?;
            jwt::verify(&state.keys.current(), token, &expect)
        }
        other => other,
    }
    .map_err(|_| {
        Problem::unauthorized("the access token is invalid, expired or not an admin token")
    })?;
    let Some(client) = state.db.get_client(&claims.client_id).await? else {
        return Err(Problem::unauthorized("the token's client no longer exists"));
    };
    let granted = |scope: &str| {
        crate::oidc::issue::has_scope(&claims.scope, scope)
            && client.scopes.iter().any(|s| s == scope)
    };
    let access = if granted(ADMIN_SCOPE) {
        Access::Write
    } else if granted(ADMIN_READ_SCOPE) {
        Access::Read
    } else {
        return Err(Problem::forbidden(
            "the token carries no admin scope",
            ADMIN_READ_SCOPE,
        ));
    };
    Ok(Operator {
        actor: Actor::Client(client.client_id),
        access,
    })
}

/// A person's admin session, in the session store under
/// [`AdminSession::key`] of the cookie's value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminSession {
    pub user_id: String,
    /// Repeated by every form (`csrf`) and script (`x-csrf-token`).
    pub csrf: String,
    pub created_at: i64,
}

impl AdminSession {
    pub fn key(cookie_value: &str) -> String {
        format!("admin-session:{}", sha256_b64(cookie_value.as_bytes()))
    }

    pub fn cookie_name(state: &AppState) -> String {
        crate::session::cookie_name(state, "admin")
    }

    /// The session the request's cookie names, when it stands: not idle
    /// past its timeout, its user still an operator and not blocked. Each
    /// read extends it by the idle timeout. With the store key.
    pub async fn current(
        state: &AppState,
        headers: &HeaderMap,
    ) -> Result<Option<(String, AdminSession)>, Problem> {
        Ok(Self::current_with_user(state, headers)
            .await?
            .map(|(key, session, _)| (key, session)))
    }

    /// [`Self::current`], with the operator's user as read for the check.
    pub async fn current_with_user(
        state: &AppState,
        headers: &HeaderMap,
    ) -> Result<Option<(String, AdminSession, crate::store::User)>, Problem> {
        let Some(cookie) = crate::session::read_cookie(headers, &Self::cookie_name(state)) else {
            return Ok(None);
        };
        let key = Self::key(&cookie);
        let Some(session) = state.sessions.get_json::<AdminSession>(&key).await? else {
            return Ok(None);
        };
        let user = if state.db.is_operator(&session.user_id).await? {
            state
                .db
                .get_user(&session.user_id)
                .await?
                .filter(|u| !u.blocked)
        } else {
            None
        };
        let Some(user) = user else {
            state.sessions.delete(&key).await?;
            return Ok(None);
        };
        state
            .sessions
            .put_json(&key, &session, idle_timeout(state))
            .await?;
        Ok(Some((key, session, user)))
    }
}

pub fn idle_timeout(state: &AppState) -> std::time::Duration {
    std::time::Duration::from_secs(state.settings.admin.session_idle_secs)
}

/// A dashboard page's operator: a person with a standing admin session.
/// Without one, a page answers with a redirect to `/admin/login`.
pub struct PageOperator {
    pub operator: Operator,
    /// The session's CSRF token, for the page's forms.
    pub csrf: String,
    /// How the layout names the operator: their email, username or id.
    pub name: String,
}

impl PageOperator {
    /// Checks a submitted form's `csrf` field against the session's.
    pub fn check_csrf(&self, sent: &str) -> Result<(), crate::error::AppError> {
        if constant_time_eq(sent.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(crate::error::AppError::bad_request(
                "Form expired",
                "This form has expired. Go back, reload the page and try again.",
            ))
        }
    }
}

/// A form that carries nothing but its CSRF token (a button).
#[derive(Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}

/// Where a page request without a session is sent.
pub struct SignInFirst(pub String);

impl axum::response::IntoResponse for SignInFirst {
    fn into_response(self) -> axum::response::Response {
        let target = format!(
            "/admin/login?return_to={}",
            form_urlencoded::byte_serialize(self.0.as_bytes()).collect::<String>()
        );
        axum::response::Redirect::to(&target).into_response()
    }
}

impl FromRequestParts<AppState> for PageOperator {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, axum::response::Response> {
        use axum::response::IntoResponse;
        match AdminSession::current_with_user(state, &parts.headers).await {
            Ok(Some((_, session, user))) => Ok(Self {
                name: user
                    .profile
                    .email
                    .or(user.profile.username)
                    .unwrap_or_else(|| user.id.clone()),
                operator: Operator {
                    actor: Actor::User(session.user_id),
                    access: Access::Write,
                },
                csrf: session.csrf,
            }),
            Ok(None) => {
                let path = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_else(|| "/admin".into());
                Err(SignInFirst(path).into_response())
            }
            Err(p) => Err(crate::error::AppError::from(p).into_response()),
        }
    }
}
