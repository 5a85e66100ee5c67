//! The end of every successful browser login, whatever its track (local
//! password, lazy migration, the upstream's own page): a new gateway
//! session, the upstream tokens kept for it, the audit trail, and the
//! application's pending request answered with a code.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use crate::auth::audit_event;
use crate::crypto::random_token;
use crate::error::AppError;
use crate::session::{cookie_header, cookie_name, current_session};
use crate::state::AppState;
use crate::store::stats::{LoginResult, LoginRoute, login_detail};
use crate::store::{SessionStoreExt, User, now};
use crate::tokens::grants::{PendingAuthorization, Session, pending_key, session_key};
use crate::upstream::tokens::MappedTokens;

/// What a login through the upstream's own page brings: its tokens, and
/// when the user authenticated there.
pub struct UpstreamLogin {
    pub tokens: MappedTokens,
    /// The upstream ID token's `auth_time`: the session's (and so our ID
    /// tokens') `auth_time` is when the user last authenticated, not when
    /// the callback arrived (OIDC Core §2).
    pub auth_time: i64,
}

/// Ends a successful login, whatever the route: spends the pending request,
/// replaces the browser's session with a new one, stores the upstream
/// tokens when the login went through the upstream, and returns the user to
/// the client with a code. `record` is the route of the login, whose
/// `last_login_at` and `login` event this writes; `None` when the caller
/// already wrote them, in its own transaction.
pub async fn finish_login(
    state: &AppState,
    headers: &HeaderMap,
    authz: &str,
    user: &User,
    ip: IpAddr,
    upstream_login: Option<UpstreamLogin>,
    record: Option<LoginRoute>,
) -> Result<Response, AppError> {
    // The pending request is single use: of two concurrent submissions one
    // completes and the other finds it gone.
    let Some(pending) = state
        .sessions
        .take_json::<PendingAuthorization>(&pending_key(authz))
        .await?
    else {
        return Err(AppError::bad_request(
            "Sign-in expired",
            "This sign-in page has expired. Go back to the application and sign in again.",
        ));
    };

    let auth_time = upstream_login.as_ref().map_or_else(now, |u| u.auth_time);
    let (cookie, key, session) = open_session_at(state, headers, user, auth_time).await?;
    let ttl = state.settings.tokens.session_ttl_secs;
    if let (Some(login), Some(upstream)) = (upstream_login, &state.upstream) {
        upstream
            .mapping(&*state.sessions, &*state.db)
            .save(&session.sid, &login.tokens, Duration::from_secs(ttl))
            .await?;
    }
    if let Some(route) = record {
        // The login time and its event in one commit: a login is then one
        // write transaction, not two. (An audit write on its own never fails
        // a request; here it can fail only with the update beside it.)
        let event = audit_event("login", Some(&user.id), &pending.client_id, ip)
            .with_detail(login_detail(route, LoginResult::Ok));
        state
            .db
            .record_login_with(&user.id, session.auth_time, &event)
            .await?;
    }

    let mut response = crate::oidc::response::complete(state, &pending, &key, &session).await?;
    let jar = response.headers_mut();
    jar.append(header::SET_COOKIE, session_cookie(state, &cookie)?);
    // The transaction cookie has done its job.
    if let Ok(v) = cookie_header(state, &cookie_name(state, "tx"), "", 0) {
        jar.append(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// Opens a new gateway session for `user` in this browser: a new session
/// id at every login, and the browser's previous session record deleted
/// (fixation, ASVS 7.2.4). Returns the cookie value, the store key and the
/// session; the caller sets the cookie ([`session_cookie`]).
pub async fn open_session(
    state: &AppState,
    headers: &HeaderMap,
    user: &User,
) -> Result<(String, String, Session), AppError> {
    open_session_at(state, headers, user, now()).await
}

/// [`open_session`] for a user who authenticated at `auth_time`.
async fn open_session_at(
    state: &AppState,
    headers: &HeaderMap,
    user: &User,
    auth_time: i64,
) -> Result<(String, String, Session), AppError> {
    if let Some((old_key, _)) = current_session(state, headers).await? {
        state.sessions.delete(&old_key).await?;
    }
    let cookie = random_token();
    let key = session_key(&cookie);
    let session = Session {
        user_id: user.id.clone(),
        auth_time,
        sid: random_token(),
        created_at: now(),
    };
    state
        .sessions
        .put_json(
            &key,
            &session,
            Duration::from_secs(state.settings.tokens.session_ttl_secs),
        )
        .await?;
    Ok((cookie, key, session))
}

/// The `Set-Cookie` value of a session cookie.
pub fn session_cookie(state: &AppState, cookie: &str) -> Result<HeaderValue, AppError> {
    cookie_header(
        state,
        &cookie_name(state, "session"),
        cookie,
        state.settings.tokens.session_ttl_secs,
    )
    .map_err(|e| AppError::Unexpected(e.into()))
}
