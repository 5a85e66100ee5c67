//! `GET/POST /account/password`: a signed-in user changes their password.
//!
//! The gateway session says who; the current password is asked again
//! (ASVS 6.2.3), through the login throttle, so a session left open is not
//! a way to guess it. The new password passes the same policy, and the
//! same write-back to the upstream, as a reset.

use std::net::IpAddr;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::forgot::{new_password, refusal_message};
use crate::auth::{Account, authenticate_local, pad_failure};
use crate::error::AppError;
use crate::oidc::params::Params;
use crate::password::ARGON2ID;
use crate::session::CsrfCookie;
use crate::session::{ClientIp, live_session};
use crate::state::AppState;
use crate::store::recovery::NewPassword;
use crate::store::{AuditEvent, User};
use crate::templates::{self, Csp};

/// `GET /account/password`.
pub(super) async fn get_password(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let user = signed_in(&state, &headers).await?;
    let csrf = CsrfCookie::read_or_new(&state, &headers);
    let page = page(&state, &csrf.value, &user, None, StatusCode::OK);
    Ok(csrf.attach(&state, page))
}

/// The signed-in user, or the page that says to sign in first.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<User, AppError> {
    match live_session(state, headers).await? {
        Some((_, _, user)) => Ok(user),
        None => Err(AppError::Unauthorized {
            title: "Sign in first",
            message: "Your session has ended. Sign in to your application again, then come back to change your password.",
        }),
    }
}

fn page(
    state: &AppState,
    csrf: &str,
    user: &User,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let account = user.profile.account_name();
    templates::render(
        status,
        "reset.html",
        minijinja::context! {
            title => "Change your password", heading => "Change your password",
            action => "/account/password", button => "Change password", csrf, account,
            current => true, error, min_length => state.settings.password.min_length,
        },
        &Csp::default(),
    )
}

/// `POST /account/password`.
pub(super) async fn post_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let form = Params::from_form_body(&headers, body).await?;
    let csrf = CsrfCookie::check(&state, &headers, form.get("csrf")?)?;
    let user = signed_in(&state, &headers).await?;
    let again = |error: &str| {
        Ok(page(
            &state,
            &csrf,
            &user,
            Some(error),
            StatusCode::BAD_REQUEST,
        ))
    };
    let current = form.get("current")?.unwrap_or_default();
    if !current_password_ok(&state, &user, current, ip).await? {
        return again("Your current password is not right.");
    }
    let password = form.get("password")?.unwrap_or_default();
    let confirm = form.get("confirm")?.unwrap_or_default();
    let hash = match new_password(&state, &user, password, confirm).await? {
        Ok(hash) => hash,
        Err(problem) => return again(&problem),
    };
    let write = match state.write_back.password(&user, password).await? {
        Ok(write) => write,
        Err(refusal) => return again(&refusal_message(refusal)),
    };
    let new = NewPassword {
        hash: &hash,
        algorithm: ARGON2ID,
        write: write.as_ref(),
    };
    let event = AuditEvent::new("password_changed", Some(&user.id), None).with_ip(ip);
    state.db.change_password(&user.id, &new, &event).await?;
    Ok(templates::error_page(
        StatusCode::OK,
        "Your password is changed",
        "Use the new password the next time you sign in.",
    ))
}

/// Verifies the current password through the login throttle, padded like
/// a failed login when wrong.
async fn current_password_ok(
    state: &AppState,
    user: &User,
    password: &str,
    ip: IpAddr,
) -> Result<bool, AppError> {
    let counted = match state.throttle.attempt(&user.id, ip).await? {
        Ok(counted) => counted,
        Err(limited) => {
            return Err(AppError::TooManyRequests {
                retry_after_secs: limited.retry_after.as_secs(),
            });
        }
    };
    let started = tokio::time::Instant::now();
    let account = Account {
        user: Some(user.clone()),
        password_hash: state.db.get_password(&user.id).await?.map(|c| c.hash),
    };
    if authenticate_local(state, account, password)
        .await?
        .is_some()
    {
        state.throttle.succeeded(counted).await?;
        return Ok(true);
    }
    pad_failure(state, started).await;
    Ok(false)
}
