//! The recovery pages: `GET/POST /login/forgot` (ask for a link) and
//! `GET/POST /login/reset` (the link's page: set a new password).
//!
//! The Forgot-password answer is one page, one status and one duration
//! whatever the account is (unknown, pending, shadow, migrated, blocked):
//! the request is counted by the throttle first, the email is only queued
//! (the outbox sends it), and the answer is padded to the failed-login
//! floor (OWASP Forgot Password Cheat Sheet; ASVS 6.3.8). The reset page
//! enforces the password policy, writes the password back to the upstream
//! when `write_back` asks for it, signs the user in, and continues the
//! authorization request the reset started from, when this is the browser
//! that started it.

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;

use super::finish::{finish_login, open_session, session_cookie};
use super::{login_csp, pending_for};
use crate::auth::{MAX_IDENTIFIER, MAX_PASSWORD, pad_failure};
use crate::error::AppError;
use crate::oidc::params::Params;
use crate::password::ARGON2ID;
use crate::recovery::token_hash;
use crate::session::CsrfCookie;
use crate::session::{ClientIp, cookie_header, cookie_name, read_cookie};
use crate::state::AppState;
use crate::store::recovery::NewPassword;
use crate::store::{AuditEvent, SessionStoreExt, User, now};
use crate::templates::{self, Csp};
use crate::tokens::grants::{PendingAuthorization, pending_key};
use crate::upstream::management::write_back::Refusal;

#[derive(Deserialize)]
pub(super) struct ForgotQuery {
    authz: Option<String>,
    login_hint: Option<String>,
}

/// `GET /login/forgot[?authz=…&login_hint=…]`.
pub(super) async fn get_forgot(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ForgotQuery>,
) -> Response {
    let authz = q.authz.filter(|a| a.len() == 43);
    let username = q.login_hint.unwrap_or_default();
    ask_page(
        &state,
        &headers,
        Ask::Forgot,
        authz,
        &username,
        StatusCode::OK,
    )
}

/// Why the page asks for an identifier to email a link to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ask {
    /// The user followed "Forgot password?".
    Forgot,
}

/// The page that offers to email a link, with its CSRF cookie.
pub(super) fn ask_page(
    state: &AppState,
    headers: &HeaderMap,
    ask: Ask,
    authz: Option<String>,
    username: &str,
    status: StatusCode,
) -> Response {
    let csrf = CsrfCookie::read_or_new(state, headers);
    csrf.attach(
        state,
        forgot_page(ask, &authz, &csrf.value, username, None, status),
    )
}

fn forgot_page(
    ask: Ask,
    authz: &Option<String>,
    csrf: &str,
    username: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let (heading, intro) = match ask {
        Ask::Forgot => (
            "Reset your password",
            "Enter the email address or username of your account. We will email you a link to set a new password.",
        ),
    };
    templates::render(
        status,
        "forgot.html",
        minijinja::context! { title => heading, heading, intro, authz, csrf, username, error },
        &Csp::default(),
    )
}

/// `POST /login/forgot`.
pub(super) async fn post_forgot(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let form = Params::from_form_body(&headers, body).await?;
    let csrf = CsrfCookie::check(&state, &headers, form.get("csrf")?)?;
    let authz = form
        .get("authz")?
        .filter(|a| a.len() == 43)
        .map(str::to_string);
    let username = form.get("username")?.map(str::trim).unwrap_or_default();
    if username.is_empty() || username.len() > MAX_IDENTIFIER {
        return Ok(forgot_page(
            Ask::Forgot,
            &authz,
            &csrf,
            "",
            Some("Enter your email or username."),
            StatusCode::BAD_REQUEST,
        ));
    }
    if let Err(limited) = state.throttle.recovery_request(username, ip).await? {
        return Err(AppError::TooManyRequests {
            retry_after_secs: limited.retry_after.as_secs(),
        });
    }
    let started = tokio::time::Instant::now();
    // The sign-in the reset started from waits for the email's round trip:
    // its pending request is kept as long as the link works. Done whether
    // or not the account exists, so it costs the same either way.
    let mut continued = None;
    if let Some(authz) = &authz
        && let Ok(pending) = pending_for(&state, &headers, authz, None).await
    {
        keep_pending(&state, authz, &pending).await?;
        continued = Some(authz.as_str());
    }
    request_link(&state, username, continued, ip).await?;
    pad_failure(&state, started).await;
    let mut response = templates::render(
        StatusCode::OK,
        "forgot_sent.html",
        minijinja::context! {
            title => "Check your email", username, authz,
            minutes => state.settings.recovery.token_ttl_secs / 60,
        },
        &Csp::default(),
    );
    // The browser's binding to that request lasts as long, too.
    if continued.is_some()
        && let Some(tx) = read_cookie(&headers, &cookie_name(&state, "tx"))
        && let Ok(v) = cookie_header(
            &state,
            &cookie_name(&state, "tx"),
            &tx,
            state.settings.recovery.token_ttl_secs,
        )
    {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// Queues the reset email when `username` names an account that may
/// reset: one with an email address, not blocked. Nothing tells the caller
/// which it was.
async fn request_link(
    state: &AppState,
    username: &str,
    authz: Option<&str>,
    ip: IpAddr,
) -> Result<(), AppError> {
    let Some(user) = state.db.find_user_by_login(username).await? else {
        return Ok(());
    };
    if !crate::recovery::queue_reset(state, &user, authz).await? {
        return Ok(());
    }
    crate::auth::record(
        state,
        AuditEvent::new("password_reset_requested", Some(&user.id), None).with_ip(ip),
    )
    .await;
    Ok(())
}

async fn keep_pending(
    state: &AppState,
    authz: &str,
    pending: &PendingAuthorization,
) -> Result<(), AppError> {
    state
        .sessions
        .put_json(
            &pending_key(authz),
            pending,
            Duration::from_secs(state.settings.recovery.token_ttl_secs),
        )
        .await?;
    Ok(())
}

#[derive(Deserialize)]
pub(super) struct ResetQuery {
    token: Option<String>,
}

/// `GET /login/reset?token=…`: the link's page.
pub(super) async fn get_reset(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ResetQuery>,
) -> Result<Response, AppError> {
    let token = q.token.unwrap_or_default();
    let Some(link) = open_link(&state, &headers, &token).await? else {
        return Ok(link_dead());
    };
    let csrf = CsrfCookie::read_or_new(&state, &headers);
    let page = reset_page(&state, &link, &csrf.value, None, StatusCode::OK).await;
    Ok(csrf.attach(&state, page))
}

/// A live link: its token, its user, and the sign-in it continues when
/// this browser started that sign-in.
struct Link<'a> {
    token: &'a str,
    user: User,
    continues: Option<(String, PendingAuthorization)>,
}

/// The link `token` opens, if the token is live and its user may reset.
async fn open_link<'a>(
    state: &AppState,
    headers: &HeaderMap,
    token: &'a str,
) -> Result<Option<Link<'a>>, AppError> {
    // A token is 43 characters of base64url (256 bits); anything else is
    // not looked up.
    if token.len() != 43 {
        return Ok(None);
    }
    let Some(record) = state.db.recovery_token(&token_hash(token), now()).await? else {
        return Ok(None);
    };
    let Some(user) = state
        .db
        .get_user(&record.user_id)
        .await?
        .filter(|u| !u.blocked)
    else {
        return Ok(None);
    };
    let mut continues = None;
    if let Some(authz) = record.authz
        && let Ok(pending) = pending_for(state, headers, &authz, None).await
    {
        continues = Some((authz, pending));
    }
    Ok(Some(Link {
        token,
        user,
        continues,
    }))
}

fn link_dead() -> Response {
    templates::error_page(
        StatusCode::BAD_REQUEST,
        "This link no longer works",
        "The link has expired, was already used, or a newer one was sent. Ask for a new link from the sign-in page's \"Forgot password?\".",
    )
}

async fn reset_page(
    state: &AppState,
    link: &Link<'_>,
    csrf: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let account = link.user.profile.account_name();
    // The form's answer may be a redirect to the application the sign-in
    // continues, which the browser holds to `form-action` too.
    let csp = match &link.continues {
        Some((_, pending)) => login_csp(state, pending).await,
        None => Csp::default(),
    };
    let mut response = templates::render(
        status,
        "reset.html",
        minijinja::context! {
            title => "Set a new password", heading => "Set a new password", action => "/login/reset",
            button => "Set password and sign in", token => link.token, csrf, account, error,
            current => false, min_length => state.settings.password.min_length,
        },
        &csp,
    );
    // The link's token is in this page's URL and form: kept out of caches.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `POST /login/reset`.
pub(super) async fn post_reset(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let form = Params::from_form_body(&headers, body).await?;
    let csrf = CsrfCookie::check(&state, &headers, form.get("csrf")?)?;
    let token = form.get("token")?.unwrap_or_default();
    let Some(link) = open_link(&state, &headers, token).await? else {
        return Ok(link_dead());
    };
    let password = form.get("password")?.unwrap_or_default();
    let confirm = form.get("confirm")?.unwrap_or_default();
    let hash = match new_password(&state, &link.user, password, confirm).await? {
        Ok(hash) => hash,
        Err(problem) => {
            return Ok(reset_page(
                &state,
                &link,
                &csrf,
                Some(&problem),
                StatusCode::BAD_REQUEST,
            )
            .await);
        }
    };
    let write = match state.write_back.password(&link.user, password).await? {
        Ok(write) => write,
        Err(refusal) => {
            let problem = refusal_message(refusal);
            return Ok(reset_page(
                &state,
                &link,
                &csrf,
                Some(&problem),
                StatusCode::BAD_REQUEST,
            )
            .await);
        }
    };
    let new = NewPassword {
        hash: &hash,
        algorithm: ARGON2ID,
        write: write.as_ref(),
    };
    let event = AuditEvent::new("password_reset", Some(&link.user.id), None).with_ip(ip);
    let Some(user) = state
        .db
        .complete_reset(
            &token_hash(token),
            &new,
            &event,
            state.settings.recovery.revoke_sessions_on_reset,
        )
        .await?
    else {
        return Ok(link_dead());
    };
    // Signed in: the application's request continues when this browser
    // started it; otherwise the user lands on a page that says it is done.
    if let Some((authz, _)) = &link.continues {
        let route = Some(crate::store::stats::LoginRoute::ResetPassword);
        return finish_login(&state, &headers, authz, &user, ip, None, route).await;
    }
    let (cookie, _, session) = open_session(&state, &headers, &user).await?;
    state.db.record_login(&user.id, session.auth_time).await?;
    let mut response = templates::error_page(
        StatusCode::OK,
        "Your password is set",
        "You are signed in. Go back to your application and continue there.",
    );
    response
        .headers_mut()
        .append(header::SET_COOKIE, session_cookie(&state, &cookie)?);
    Ok(response)
}

/// Checks a new password (both fields, the policy) and hashes it; the
/// problem to show otherwise.
pub(super) async fn new_password(
    state: &AppState,
    user: &User,
    password: &str,
    confirm: &str,
) -> Result<Result<String, String>, AppError> {
    if password.len() > MAX_PASSWORD {
        return Ok(Err("That password is too long.".into()));
    }
    if password != confirm {
        return Ok(Err("The two passwords are not the same.".into()));
    }
    if let Err(problem) = state
        .passwords
        .check_policy_for(password, &user.profile.login_names())
    {
        return Ok(Err(problem));
    }
    let hash = state
        .passwords
        .hash(password.to_string())
        .await
        .map_err(anyhow::Error::from)?;
    Ok(Ok(hash))
}

/// What the user is told when the upstream would not take the password.
pub(super) fn refusal_message(refusal: Refusal) -> String {
    match refusal {
        Refusal::Refused { message, .. } => {
            format!("Your password could not be set: {message}")
        }
        Refusal::Unavailable | Refusal::Throttled(_) => {
            "Your password cannot be changed right now. Please try again in a few minutes.".into()
        }
    }
}
