//! The redirect track: the user logs in on the upstream's own page and
//! comes back to `/login/callback`; Switchyard validates everything, creates
//! or refreshes the shadow user, keeps the upstream tokens mapped to the new
//! gateway session, and completes the application's pending request with its
//! own code. The application never talks to the upstream.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::finish::{UpstreamLogin, finish_login};
use crate::auth::audit_event;
use crate::crypto::{constant_time_eq, random_token, sha256_b64};
use crate::error::{AppError, ErrorCode};
use crate::metrics::Metrics;
use crate::oidc::params::Params;
use crate::oidc::response::{Redirect, error_response};
use crate::session::{ClientIp, cookie_name, read_cookie};
use crate::state::AppState;
use crate::store::stats::{LoginResult, LoginRoute, login_detail};
use crate::store::{SessionStoreExt, now};
use crate::throttle::Counted;
use crate::tokens::grants::{PENDING_TTL, PendingAuthorization, pending_key};
use crate::upstream::tokens::MappedTokens;
use crate::upstream::{UpstreamError, profile};

/// One trip to the upstream, named by the `state` sent with it.
#[derive(Debug, Serialize, Deserialize)]
struct UpstreamTransaction {
    /// The application's pending request this trip completes.
    authz: String,
    nonce: String,
    pkce_verifier: String,
    /// Same binding as the pending request: the browser's transaction cookie.
    browser_binding: String,
    created_at: i64,
    /// This trip asked the upstream for `prompt=login` after an earlier one
    /// came back with a login too old for the application's request.
    #[serde(default)]
    reauthenticate: bool,
    /// The login attempt counted before this trip (a redirect only this
    /// account gets, or an upstream MFA answer): given back once the
    /// upstream has signed the user in, as a right password's is.
    #[serde(default)]
    counted: Option<Counted>,
}

fn transaction_key(state: &str) -> String {
    format!("upstream-tx:{}", sha256_b64(state.as_bytes()))
}

pub fn callback_url(state: &AppState) -> String {
    format!("{}/login/callback", state.settings.issuer_base())
}

/// Sends the browser to the upstream's authorization endpoint with a fresh
/// `state`, `nonce` and PKCE verifier of our own (RFC 9700 §4.7), bound to
/// this browser, and the user's identifier as `login_hint`; `counted` is
/// the login attempt to give back when the upstream signs the user in.
pub async fn start(
    state: &AppState,
    authz: &str,
    pending: &PendingAuthorization,
    login_hint: Option<&str>,
    counted: Option<Counted>,
) -> Result<Response, AppError> {
    trip(state, authz, pending, login_hint, false, counted).await
}

/// One trip to the upstream; `reauthenticate` asks for `prompt=login`
/// whatever the application asked.
async fn trip(
    state: &AppState,
    authz: &str,
    pending: &PendingAuthorization,
    login_hint: Option<&str>,
    reauthenticate: bool,
    counted: Option<Counted>,
) -> Result<Response, AppError> {
    let upstream = state.upstream.as_ref().ok_or(AppError::NotFound)?;
    let tx_state = random_token();
    let tx = UpstreamTransaction {
        authz: authz.to_string(),
        nonce: random_token(),
        pkce_verifier: random_token(),
        browser_binding: pending.browser_binding.clone(),
        created_at: now(),
        reauthenticate,
        counted,
    };
    // The application's demand for a fresh login goes on to where the user
    // actually logs in (OIDC Core §3.1.2.1): otherwise the upstream's
    // session would answer it silently.
    let mut extra = Vec::new();
    if pending.prompt_login || reauthenticate {
        extra.push(("prompt".to_string(), "login".to_string()));
    }
    if let Some(max_age) = pending.max_age {
        extra.push(("max_age".to_string(), max_age.to_string()));
    }
    let url = upstream
        .client
        .authorize_url(
            &callback_url(state),
            &tx_state,
            &tx.nonce,
            &tx.pkce_verifier,
            login_hint,
            &extra,
        )
        .await
        .map_err(|e| unavailable(state, "authorize", &e))?;
    state
        .sessions
        .put_json(&transaction_key(&tx_state), &tx, PENDING_TTL)
        .await?;
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, url)]).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Where Switchyard's pages may send a browser at the upstream, unless the
/// upstream is switched off for `client_id` (`local_only` calls nothing,
/// not even discovery).
pub async fn browser_targets(state: &AppState, client_id: Option<&str>) -> Vec<String> {
    let Some(upstream) = &state.upstream else {
        return Vec::new();
    };
    match state.cutover.rules().await {
        Ok(rules)
            if crate::cutover::phase_for(&rules, client_id) != crate::config::Phase::LocalOnly =>
        {
            upstream.client.browser_targets().await
        }
        _ => Vec::new(),
    }
}

fn unavailable(state: &AppState, what: &str, e: &UpstreamError) -> AppError {
    tracing::warn!(error = %e, what, "upstream call failed");
    state.metrics.upstream.count(what, e.kind());
    match e {
        UpstreamError::Unavailable(_)
        | UpstreamError::RateLimited { .. }
        | UpstreamError::InvalidResponse(_) => AppError::Unavailable,
        UpstreamError::Rejected { .. } | UpstreamError::InvalidIdToken(_) => AppError::bad_request(
            "Sign-in failed",
            "The sign-in could not be completed with your identity provider. Go back to the application and try again.",
        ),
    }
}

/// `GET /login/callback`: the upstream's authorization response.
pub async fn get_callback(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    params.reject_repeats()?;
    let upstream = state.upstream.clone().ok_or(AppError::NotFound)?;
    let expired = || {
        AppError::bad_request(
            "Sign-in expired",
            "This sign-in has expired. Go back to the application and sign in again.",
        )
    };
    let tx_state = params.get("state")?.ok_or_else(expired)?;
    // Single use: a replayed callback finds nothing.
    let mut tx: UpstreamTransaction = state
        .sessions
        .take_json(&transaction_key(tx_state))
        .await?
        .ok_or_else(expired)?;
    let cookie = read_cookie(&headers, &cookie_name(&state, "tx")).unwrap_or_default();
    if !constant_time_eq(
        sha256_b64(cookie.as_bytes()).as_bytes(),
        tx.browser_binding.as_bytes(),
    ) {
        return Err(AppError::bad_request(
            "Sign-in interrupted",
            "This sign-in was started in another browser or its cookie was lost. Go back to the application and sign in again.",
        ));
    }
    let pending: PendingAuthorization = state
        .sessions
        .get_json(&pending_key(&tx.authz))
        .await?
        .ok_or_else(expired)?;

    // RFC 9207 §2.4: the response must come from the upstream we sent the
    // user to (mix-up defence); required when the upstream says it sends `iss`.
    match params.get("iss")? {
        Some(iss) if iss != upstream.client.issuer => {
            return Err(AppError::bad_request(
                "Sign-in refused",
                "The sign-in response came from an unexpected issuer.",
            ));
        }
        None if upstream.client.sends_iss().await => {
            return Err(AppError::bad_request(
                "Sign-in refused",
                "The sign-in response did not name its issuer.",
            ));
        }
        _ => {}
    }

    if let Some(error) = params.get("error")? {
        // The user cancelled, or the upstream could not log them in
        // silently: the application hears it in its own protocol.
        Metrics::count(
            &state.metrics.logins,
            "upstream_redirect",
            callback_error_label(error),
        );
        state.sessions.delete(&pending_key(&tx.authz)).await?;
        let code = match error {
            "login_required"
            | "interaction_required"
            | "consent_required"
            | "account_selection_required" => ErrorCode::LoginRequired,
            _ => ErrorCode::AccessDenied,
        };
        let to = Redirect {
            uri: &pending.redirect_uri,
            mode: pending.response_mode,
            state: pending.state.as_deref(),
        };
        return Ok(error_response(
            &state,
            &to,
            code,
            "the identity provider did not log the user in",
        ));
    }
    let code = params.get("code")?.ok_or_else(|| {
        AppError::bad_request("Sign-in failed", "The identity provider sent no code.")
    })?;

    let tokens = upstream
        .client
        .exchange_code(code, &callback_url(&state), &tx.pkce_verifier, &tx.nonce)
        .await
        .map_err(|e| unavailable(&state, "code_exchange", &e))?;
    let id_claims = tokens.claims.clone().unwrap_or_default();
    let userinfo = if upstream.client.def.oidc.userinfo_at_login {
        match upstream.client.userinfo(&tokens.access_token).await {
            Ok(info) => Some(info),
            Err(e) => {
                // The ID token already describes the user; userinfo only adds.
                tracing::warn!(error = %e, "upstream userinfo failed; using the ID token's claims");
                None
            }
        }
    } else {
        None
    };
    let profile = profile::from_claims(&upstream.client.def, &id_claims, userinfo.as_ref())
        .ok_or_else(|| {
            AppError::bad_request(
                "Sign-in failed",
                "The identity provider did not say who you are.",
            )
        })?;
    // The upstream has signed the user in: an attempt counted on the way
    // here was no failure.
    if let Some(counted) = tx.counted.take() {
        state.throttle.succeeded(counted).await?;
    }
    let skew = upstream.client.settings.clock_skew_secs as i64;
    let auth_time = upstream_auth_time(&id_claims, now());
    if !fresh_enough(&pending, &tx, auth_time, now(), skew) {
        // OIDC Core §3.1.3.7 item 13: a login older than the application
        // asked for is not passed on as if it were fresh. The upstream is
        // asked once more, with `prompt=login`; if it still answers with
        // an old login, the application is told it was refused.
        if !tx.reauthenticate {
            Metrics::count(&state.metrics.logins, "upstream_redirect", "reauthenticate");
            let hint = profile.profile.email.clone();
            return trip(&state, &tx.authz, &pending, hint.as_deref(), true, None).await;
        }
        Metrics::count(&state.metrics.logins, "upstream_redirect", "stale_login");
        state.sessions.delete(&pending_key(&tx.authz)).await?;
        let to = Redirect {
            uri: &pending.redirect_uri,
            mode: pending.response_mode,
            state: pending.state.as_deref(),
        };
        return Ok(error_response(
            &state,
            &to,
            ErrorCode::AccessDenied,
            "the identity provider did not authenticate the user again",
        ));
    }
    // The user, their identity, the login time and both events in one
    // commit; a blocked user gets no login recorded.
    let login = audit_event("login", None, &pending.client_id, ip)
        .with_detail(login_detail(LoginRoute::UpstreamRedirect, LoginResult::Ok));
    let user = state
        .db
        .record_upstream_login(&upstream.client.settings.provider, &profile, &login)
        .await?;
    if user.blocked {
        Metrics::count(&state.metrics.logins, "upstream_redirect", "blocked");
        return Err(AppError::bad_request(
            "Account blocked",
            "This account is blocked. Contact your administrator.",
        ));
    }
    Metrics::count(&state.metrics.logins, "upstream_redirect", "ok");
    let mapped = MappedTokens::from_upstream(&tokens, &upstream.client.creds.client_id);
    let login = UpstreamLogin {
        tokens: mapped,
        auth_time: auth_time.unwrap_or_else(now),
    };
    finish_login(&state, &headers, &tx.authz, &user, ip, Some(login), None).await
}

/// The upstream ID token's `auth_time` (OIDC Core §2), never later than
/// `now`: a clock ahead of ours must not make a login look younger than it
/// is to the next `max_age` check.
fn upstream_auth_time(
    claims: &serde_json::Map<String, serde_json::Value>,
    now: i64,
) -> Option<i64> {
    claims
        .get("auth_time")
        .and_then(serde_json::Value::as_i64)
        .map(|t| t.min(now))
}

/// Whether the upstream's login satisfies the application's request: with
/// `max_age`, `auth_time` must be present (OIDC Core §3.1.2.1 makes it
/// required then) and no older than `max_age`; with `prompt=login`, the
/// login must have happened after this trip began.
fn fresh_enough(
    pending: &PendingAuthorization,
    tx: &UpstreamTransaction,
    auth_time: Option<i64>,
    now: i64,
    skew: i64,
) -> bool {
    if pending.max_age.is_none() && !pending.prompt_login && !tx.reauthenticate {
        return true;
    }
    let Some(auth_time) = auth_time else {
        return false;
    };
    let within_max_age = pending.max_age.is_none_or(|m| now - auth_time <= m + skew);
    let after_the_ask =
        !(pending.prompt_login || tx.reauthenticate) || auth_time + skew >= tx.created_at;
    within_max_age && after_the_ask
}

/// An authorization error as a metric label: one of the codes RFC 6749
/// §4.1.2.1 and OIDC Core §3.1.2.6 define, or `other`. The value comes from
/// the query string, so anything else would let whoever crafts a callback
/// mint label values without end.
fn callback_error_label(error: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "invalid_request",
        "unauthorized_client",
        "access_denied",
        "unsupported_response_type",
        "invalid_scope",
        "server_error",
        "temporarily_unavailable",
        "interaction_required",
        "login_required",
        "account_selection_required",
        "consent_required",
        "invalid_request_uri",
        "invalid_request_object",
        "request_not_supported",
        "request_uri_not_supported",
        "registration_not_supported",
    ];
    KNOWN
        .iter()
        .copied()
        .find(|known| *known == error)
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::callback_error_label;

    #[test]
    fn callback_errors_become_a_fixed_set_of_labels() {
        assert_eq!(callback_error_label("access_denied"), "access_denied");
        assert_eq!(callback_error_label("login_required"), "login_required");
        assert_eq!(callback_error_label("x\"} 1\nevil"), "other");
        assert_eq!(callback_error_label(""), "other");
    }
}
