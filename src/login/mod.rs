//! The login pages and the gateway session cookie.
//!
//! Identifier first, then password: plain HTML forms with the standard
//! field names `username` and `password`, which work without JavaScript and
//! with any form-filling client. The identifier form also accepts a
//! `password` field, so a client that posts both at once is served too.
//!
//! Every form carries the pending request's CSRF token, and the pending
//! request is bound to the browser that started it by the transaction
//! cookie. A successful login always creates a new session id and deletes
//! the previous session record (fixation, ASVS 7.2.4).

use std::net::IpAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use crate::auth::{self, Attempt, Identified, Outcome, Routed, Via};
use crate::crypto::{constant_time_eq, sha256_b64};
use crate::error::AppError;
use crate::oidc::params::Params;
use crate::session::{ClientIp, cookie_name, read_cookie};
use crate::state::AppState;
use crate::store::SessionStoreExt;
use crate::templates;
use crate::tokens::grants::{PendingAuthorization, pending_key};

mod account;
pub mod finish;
mod forgot;
pub mod upstream;

pub use finish::finish_login;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(get_login).post(post_login))
        .route("/login/callback", get(upstream::get_callback))
        .route("/login/password", axum::routing::post(post_password))
        .route(
            "/login/forgot",
            get(forgot::get_forgot).post(forgot::post_forgot),
        )
        .route(
            "/login/reset",
            get(forgot::get_reset).post(forgot::post_reset),
        )
        .route(
            "/account/password",
            get(account::get_password).post(account::post_password),
        )
        .route(
            "/assets/style.css",
            get(|| async { templates::asset("text/css; charset=utf-8", templates::STYLE_CSS) }),
        )
        .route(
            "/assets/form_post.js",
            get(|| async {
                templates::asset("text/javascript; charset=utf-8", templates::FORM_POST_JS)
            }),
        )
        .route(
            "/assets/post_message.js",
            get(|| async {
                templates::asset("text/javascript; charset=utf-8", templates::POST_MESSAGE_JS)
            }),
        )
}

/// The one message for every failed password login: unknown user, wrong
/// password, no password on file (ASVS 6.3.8). A user whose account moved
/// here without its password is among them, so the hint is for everyone.
const LOGIN_FAILED: &str = "Wrong email, username or password. If you have not set a password here yet, use \u{201c}Forgot password?\u{201d} below.";
/// The upstream's brute-force protection locked the account: it answers so
/// whatever the password, so this tells no more than a failure does.
const ACCOUNT_LOCKED: &str =
    "This account is temporarily locked after too many failed sign-in attempts. Try again later.";

#[derive(Deserialize)]
struct LoginQuery {
    authz: Option<String>,
}

/// The pending request named by a form, checked against the CSRF token it
/// carries and the browser's transaction cookie.
pub async fn pending_for(
    state: &AppState,
    headers: &HeaderMap,
    authz: &str,
    csrf: Option<&str>,
) -> Result<PendingAuthorization, AppError> {
    let expired = || {
        AppError::bad_request(
            "Sign-in expired",
            "This sign-in page has expired. Go back to the application and sign in again.",
        )
    };
    if authz.len() != 43 {
        return Err(expired());
    }
    let pending: PendingAuthorization = state
        .sessions
        .get_json(&pending_key(authz))
        .await?
        .ok_or_else(expired)?;
    let tx = read_cookie(headers, &cookie_name(state, "tx")).unwrap_or_default();
    if !constant_time_eq(
        sha256_b64(tx.as_bytes()).as_bytes(),
        pending.browser_binding.as_bytes(),
    ) {
        return Err(AppError::bad_request(
            "Sign-in interrupted",
            "This sign-in was started in another browser or its cookie was lost. Go back to the application and sign in again.",
        ));
    }
    if let Some(csrf) = csrf
        && !constant_time_eq(csrf.as_bytes(), pending.csrf.as_bytes())
    {
        return Err(AppError::bad_request(
            "Sign-in refused",
            "The form was not sent by this sign-in page. Please try again.",
        ));
    }
    Ok(pending)
}

/// `GET /login?authz=…`: the identifier page.
async fn get_login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Result<Response, AppError> {
    let authz = q.authz.unwrap_or_default();
    let pending = pending_for(&state, &headers, &authz, None).await?;
    identifier_page(&state, &authz, &pending, None, StatusCode::OK).await
}

async fn identifier_page(
    state: &AppState,
    authz: &str,
    pending: &PendingAuthorization,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let client_name = state
        .recent
        .client(&*state.db, &pending.client_id)
        .await?
        .and_then(|c| c.name.clone());
    // An absent hint is an empty field, never the text of a null.
    let login_hint = pending.login_hint.as_deref().unwrap_or_default();
    Ok(templates::render(
        status,
        "identifier.html",
        minijinja::context! {
            title => "Sign in", authz, csrf => &pending.csrf, login_hint, client_name, error,
        },
        &login_csp(state, pending).await,
    ))
}

async fn password_page(
    state: &AppState,
    authz: &str,
    pending: &PendingAuthorization,
    username: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    templates::render(
        status,
        "password.html",
        minijinja::context! { title => "Enter your password", authz, csrf => &pending.csrf, username, error },
        &login_csp(state, pending).await,
    )
}

/// The login forms are answered with a redirect to the application (the
/// pending request's redirect URI) or to the upstream's own login page, and
/// browsers hold those redirects to the form's `form-action`.
pub(super) async fn login_csp(state: &AppState, pending: &PendingAuthorization) -> templates::Csp {
    let mut targets = vec![pending.redirect_uri.clone()];
    targets.extend(upstream::browser_targets(state, Some(&pending.client_id)).await);
    templates::Csp::form_targets(targets.iter().map(String::as_str))
}

/// `POST /login`: the identifier form.
async fn post_login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let form = Params::from_form_body(&headers, body).await?;
    let authz = form.require("authz")?;
    let pending = pending_for(&state, &headers, authz, Some(form.require("csrf")?)).await?;
    let Some(username) = form
        .get("username")?
        .map(str::trim)
        .filter(|u| !u.is_empty() && u.len() <= 320)
    else {
        return identifier_page(
            &state,
            authz,
            &pending,
            Some("Enter your email or username."),
            StatusCode::BAD_REQUEST,
        )
        .await;
    };
    let routed = match auth::identify(&state, username, &pending.client_id, ip).await? {
        Identified::Password(routed) => *routed,
        Identified::Redirect(counted) => {
            return upstream::start(&state, authz, &pending, Some(username), counted).await;
        }
        Identified::Throttled { retry_after } => {
            return Err(AppError::TooManyRequests {
                retry_after_secs: retry_after.as_secs(),
            });
        }
    };
    match form.get("password")? {
        Some(password) => {
            verify_and_complete(
                &state,
                ip,
                &headers,
                authz,
                &pending,
                username,
                password,
                Some(routed),
            )
            .await
        }
        // Every local identifier gets the password page: whether the user
        // exists is not revealed here (ASVS 6.3.8).
        None => Ok(password_page(&state, authz, &pending, username, None, StatusCode::OK).await),
    }
}

/// `POST /login/password`.
async fn post_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let form = Params::from_form_body(&headers, body).await?;
    let authz = form.require("authz")?;
    let pending = pending_for(&state, &headers, authz, Some(form.require("csrf")?)).await?;
    let username = form.require("username")?.trim();
    let password = form.get("password")?.unwrap_or("");
    verify_and_complete(
        &state, ip, &headers, authz, &pending, username, password, None,
    )
    .await
}

/// Checks the password (src/auth) and answers as the login page does.
#[allow(clippy::too_many_arguments)]
async fn verify_and_complete(
    state: &AppState,
    ip: IpAddr,
    headers: &HeaderMap,
    authz: &str,
    pending: &PendingAuthorization,
    username: &str,
    password: &str,
    routed: Option<Routed>,
) -> Result<Response, AppError> {
    let attempt = Attempt {
        identifier: username,
        password,
        client_id: &pending.client_id,
        ip,
        via: Via::LoginPage,
        routed,
    };
    match auth::authenticate(state, attempt).await? {
        Outcome::Authenticated(user, route) => {
            finish_login(state, headers, authz, &user, ip, None, Some(route)).await
        }
        Outcome::Failed | Outcome::Invalid => Ok(password_page(
            state,
            authz,
            pending,
            username,
            Some(LOGIN_FAILED),
            StatusCode::UNAUTHORIZED,
        )
        .await),
        Outcome::Locked => Ok(password_page(
            state,
            authz,
            pending,
            username,
            Some(ACCOUNT_LOCKED),
            StatusCode::UNAUTHORIZED,
        )
        .await),
        Outcome::Throttled { retry_after } => Err(AppError::TooManyRequests {
            retry_after_secs: retry_after.as_secs(),
        }),
        Outcome::NeedsRedirect(counted) => {
            upstream::start(state, authz, pending, Some(username), counted).await
        }
        Outcome::Unavailable => Err(AppError::Unavailable),
    }
}
