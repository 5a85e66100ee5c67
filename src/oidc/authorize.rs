//! The authorization endpoint (RFC 6749 §4.1.1, OIDC Core §3.1.2).
//!
//! Errors found before the client and its redirect URI are trusted are shown
//! as a page: redirecting them would make Switchyard an open redirector
//! (RFC 6749 §4.1.2.1, RFC 9700 §4.11). Once they are trusted, errors go
//! back to the client as `error=` parameters with `state` and `iss`.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::params::Params;
use super::redirect_uri;
use super::response::{Redirect, complete, error_response};
use crate::config::Phase;
use crate::crypto::{random_token, sha256_b64};
use crate::error::{AppError, ErrorCode};
use crate::login;
use crate::session::{cookie_header, cookie_name, live_session, read_cookie};
use crate::state::AppState;
use crate::store::{Client, SessionStoreExt, now};
use crate::tokens::grants::{
    PENDING_TTL, PendingAuthorization, ResponseMode, Session, pending_key,
};

/// `GET /authorize`.
pub async fn get_authorize(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    authorize(&state, &headers, params)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /authorize`: OIDC Core §3.1.2.1 requires the form-encoded POST too.
pub async fn post_authorize(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match Params::from_form_body(&headers, body).await {
        Ok(params) => authorize(&state, &headers, params)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Err(e) => AppError::from(e).into_response(),
    }
}

async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    params: Params,
) -> Result<Response, AppError> {
    // Step 1: the client and the redirect URI, answered with a page.
    let client_id = params
        .get("client_id")?
        .ok_or_else(|| bad("The request has no client_id."))?;
    let client = state
        .recent
        .client(&*state.db, client_id)
        .await?
        .ok_or_else(|| bad("The application is not known here."))?;
    let redirect = params
        .get("redirect_uri")?
        .ok_or_else(|| bad("The request has no redirect_uri."))?;
    if !redirect_uri::matches(&client.redirect_uris, redirect) {
        return Err(bad(
            "The redirect_uri is not registered for this application.",
        ));
    }

    // From here the redirect URI is trusted. A repeated state is ambiguous,
    // so the error goes back without one.
    let client_state = params.get("state").unwrap_or(None);
    let Some(mode) = params
        .get("response_mode")
        .ok()
        .and_then(ResponseMode::from_param)
    else {
        let to = Redirect {
            uri: redirect,
            mode: ResponseMode::Query,
            state: client_state,
        };
        return Ok(error_response(
            state,
            &to,
            ErrorCode::InvalidRequest,
            "response_mode must be query, form_post, web_message or okta_post_message",
        ));
    };
    // A posted message goes to the redirect URI's origin, which must be one
    // the client registered as a web origin (Auth0's "Allowed Web Origins"):
    // otherwise the page could hand the code to whatever site framed it.
    if mode.posts_message()
        && !redirect_uri::origin_of(redirect).is_some_and(|o| client.web_origins.contains(&o))
    {
        return Err(bad(
            "The application's origin is not registered as a web origin, so the response cannot be posted to it.",
        ));
    }
    let to = Redirect {
        uri: redirect,
        mode,
        state: client_state,
    };
    match validate(&client, &params, mode) {
        Ok(Validated {
            pending,
            prompt_none,
            prompt_login,
        }) => {
            // An existing session is reused unless the client asks for a
            // fresh login or the login is older than max_age (OIDC Core
            // §3.1.2.1).
            // A session whose user was blocked or reset their password since
            // it began does not count.
            let session = if prompt_login {
                None
            } else {
                live_session(state, headers)
                    .await?
                    .map(|(key, session, _)| (key, session))
            };
            let fresh = |s: &Session| pending.max_age.is_none_or(|m| now() - s.auth_time <= m);
            match session {
                Some((key, s)) if fresh(&s) => complete(state, &pending, &key, &s).await,
                _ if prompt_none => Ok(error_response(
                    state,
                    &to,
                    ErrorCode::LoginRequired,
                    "the user is not logged in",
                )),
                _ => start_login(state, headers, pending).await,
            }
        }
        Err((code, description)) => Ok(error_response(state, &to, code, description)),
    }
}

fn bad(message: &str) -> AppError {
    AppError::bad_request("Sign-in request refused", message)
}

pub(crate) struct Validated {
    pub(crate) pending: PendingAuthorization,
    pub(crate) prompt_none: bool,
    pub(crate) prompt_login: bool,
}

pub(crate) type Refusal = (ErrorCode, &'static str);

/// The checks whose failures go back to the client.
pub(crate) fn validate(
    client: &Client,
    params: &Params,
    mode: ResponseMode,
) -> Result<Validated, Refusal> {
    let invalid = |d| (ErrorCode::InvalidRequest, d);
    if let Err(e) = params.reject_repeats() {
        tracing::debug!(error = %e, "authorize: repeated parameter");
        return Err(invalid("a parameter is repeated"));
    }
    // RFC 9700 §2.1.2: the authorization code flow only.
    match params.get("response_type").ok().flatten() {
        Some("code") => {}
        Some(_) => {
            return Err((
                ErrorCode::UnsupportedResponseType,
                "only response_type=code is supported",
            ));
        }
        None => return Err(invalid("response_type is missing")),
    }
    if !client.allows_grant(crate::store::GrantType::AuthorizationCode) {
        return Err((
            ErrorCode::UnauthorizedClient,
            "the client may not use the authorization code grant",
        ));
    }
    // OIDC Core §6: request objects are not supported.
    if params.get("request").ok().flatten().is_some() {
        return Err((
            ErrorCode::RequestNotSupported,
            "request objects are not supported",
        ));
    }
    if params.get("request_uri").ok().flatten().is_some() {
        return Err((ErrorCode::InvalidRequestUri, "request_uri is not supported"));
    }
    let scope = params.get("scope").ok().flatten().unwrap_or("");
    // RFC 6749 §3.3: scope tokens are printable ASCII without `"` or `\`.
    if !scope
        .bytes()
        .all(|b| b == b' ' || (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
    {
        return Err((ErrorCode::InvalidScope, "the scope is malformed"));
    }
    let scope = scope
        .split(' ')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");

    // PKCE (RFC 7636; RFC 9700 §2.1.1): S256 only; required of public clients.
    let challenge = params.get("code_challenge").ok().flatten();
    let method = params.get("code_challenge_method").ok().flatten();
    match (challenge, method) {
        (Some(c), Some("S256")) => {
            if c.len() != 43
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    "code_challenge must be the base64url SHA-256 of the verifier",
                ));
            }
        }
        // RFC 7636 §4.3: an absent method means plain, which is refused.
        (Some(_), _) => return Err(invalid("code_challenge_method must be S256")),
        (None, Some(_)) => return Err(invalid("code_challenge_method without code_challenge")),
        (None, None) if client.public => {
            return Err(invalid("PKCE (code_challenge with S256) is required"));
        }
        (None, None) => {}
    }
    let prompt = params.get("prompt").ok().flatten().unwrap_or("");
    let prompts: Vec<&str> = prompt.split(' ').filter(|p| !p.is_empty()).collect();
    // OIDC Core §3.1.2.1: `none` stands alone.
    if prompts.contains(&"none") && prompts.len() > 1 {
        return Err(invalid("prompt=none cannot be combined with other values"));
    }
    if let Some(p) = prompts
        .iter()
        .find(|p| !matches!(**p, "none" | "login" | "consent" | "select_account"))
    {
        tracing::debug!(prompt = %p, "authorize: unknown prompt value");
        return Err(invalid("prompt has an unknown value"));
    }
    let max_age = match params.get("max_age").ok().flatten() {
        Some(v) => Some(
            v.parse::<i64>()
                .ok()
                .filter(|v| *v >= 0)
                .ok_or(invalid("max_age must be a non-negative integer"))?,
        ),
        None => None,
    };
    let text = |name: &str, max: usize| -> Result<Option<String>, Refusal> {
        match params.get(name).ok().flatten() {
            Some(v) if v.len() > max => Err(invalid("a parameter is too long")),
            v => Ok(v.map(Into::into)),
        }
    };
    let state_param = text("state", 2048)?;
    let nonce = text("nonce", 512)?;
    let login_hint = text("login_hint", 320)?;
    Ok(Validated {
        pending: PendingAuthorization {
            client_id: client.client_id.clone(),
            redirect_uri: params
                .get("redirect_uri")
                .ok()
                .flatten()
                .unwrap_or_default()
                .to_string(),
            response_mode: mode,
            scope,
            state: state_param,
            nonce,
            code_challenge: challenge.map(Into::into),
            max_age,
            prompt_login: prompts.contains(&"login"),
            login_hint,
            csrf: random_token(),
            browser_binding: String::new(),
            created_at: now(),
        },
        prompt_none: prompts.contains(&"none"),
        prompt_login: prompts.contains(&"login"),
    })
}

/// Stores the pending request, binds it to this browser with the
/// transaction cookie, and sends the user to the login page.
async fn start_login(
    state: &AppState,
    headers: &HeaderMap,
    mut pending: PendingAuthorization,
) -> Result<Response, AppError> {
    let tx_name = cookie_name(state, "tx");
    let tx_value = read_cookie(headers, &tx_name)
        .filter(|v| v.len() == 43)
        .unwrap_or_else(random_token);
    pending.browser_binding = sha256_b64(tx_value.as_bytes());
    let id = random_token();
    state
        .sessions
        .put_json(&pending_key(&id), &pending, PENDING_TTL)
        .await?;
    // In passthrough every login is the upstream's: nobody types a
    // password into Switchyard yet.
    let passthrough =
        state.upstream.is_some() && state.settings.cutover.phase == Phase::Passthrough;
    let mut response = if passthrough {
        login::upstream::start(state, &id, &pending, pending.login_hint.as_deref(), None).await?
    } else {
        let location = format!("/login?authz={id}");
        (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
    };
    if let Ok(v) = cookie_header(state, &tx_name, &tx_value, PENDING_TTL.as_secs()) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
