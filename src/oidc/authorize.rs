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
use std::time::Duration;

use super::params::Params;
use super::redirect_uri;
use crate::config::Phase;
use crate::crypto::{random_token, sha256_b64};
use crate::error::{AppError, ErrorCode};
use crate::login;
use crate::state::AppState;
use crate::store::{Client, SessionStoreExt, now};
use crate::templates::Csp;
use crate::tokens::grants::{
    AuthorizationCode, PENDING_TTL, PendingAuthorization, ResponseMode, Session, code_key,
    pending_key,
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

/// Where an error for a trusted redirect URI goes.
pub struct Redirect<'a> {
    pub uri: &'a str,
    pub mode: ResponseMode,
    pub state: Option<&'a str>,
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
        .db
        .get_client(client_id)
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
            let session = if prompt_login {
                None
            } else {
                login::current_session(state, headers).await?
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

struct Validated {
    pending: PendingAuthorization,
    prompt_none: bool,
    prompt_login: bool,
}

type Refusal = (ErrorCode, &'static str);

/// The checks whose failures go back to the client.
fn validate(client: &Client, params: &Params, mode: ResponseMode) -> Result<Validated, Refusal> {
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
    if !client.allows_grant("authorization_code") {
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
    let tx_name = login::cookie_name(state, "tx");
    let tx_value = login::read_cookie(headers, &tx_name)
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
        login::upstream::start(state, &id, &pending, pending.login_hint.as_deref()).await?
    } else {
        let location = format!("/login?authz={id}");
        (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
    };
    if let Ok(v) = login::cookie_header(state, &tx_name, &tx_value, PENDING_TTL.as_secs()) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Issues the authorization code for a logged-in session and returns the
/// user to the client (RFC 6749 §4.1.2).
pub async fn complete(
    state: &AppState,
    pending: &PendingAuthorization,
    session_key: &str,
    session: &Session,
) -> Result<Response, AppError> {
    let code = random_token();
    let record = AuthorizationCode {
        client_id: pending.client_id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        user_id: session.user_id.clone(),
        scope: pending.scope.clone(),
        nonce: pending.nonce.clone(),
        code_challenge: pending.code_challenge.clone(),
        auth_time: session.auth_time,
        sid: session.sid.clone(),
        session_key: session_key.to_string(),
        grant_id: random_token(),
    };
    let ttl = Duration::from_secs(state.settings.tokens.code_ttl_secs);
    state
        .sessions
        .put_json(&code_key(&code), &record, ttl)
        .await?;
    let to = Redirect {
        uri: &pending.redirect_uri,
        mode: pending.response_mode,
        state: pending.state.as_deref(),
    };
    Ok(respond(state, &to, vec![("code", code)]))
}

/// An error response on a trusted redirect URI (RFC 6749 §4.1.2.1).
pub fn error_response(
    state: &AppState,
    to: &Redirect<'_>,
    code: ErrorCode,
    description: &str,
) -> Response {
    respond(
        state,
        to,
        vec![
            ("error", code.as_str().to_string()),
            ("error_description", description.to_string()),
        ],
    )
}

/// Sends `fields` plus `state` and `iss` (RFC 9207 §2) to the client, by
/// redirect (303: RFC 9700 §4.12 forbids 307 after credentials are posted)
/// or as an auto-submitted form (OAuth 2.0 Form Post Response Mode).
fn respond(
    state: &AppState,
    to: &Redirect<'_>,
    mut fields: Vec<(&'static str, String)>,
) -> Response {
    if let Some(s) = to.state {
        fields.push(("state", s.to_string()));
    }
    fields.push(("iss", state.settings.issuer.clone()));
    match to.mode {
        ResponseMode::Query => {
            // The registered URI is kept byte for byte; parameters are appended.
            let mut location = to.uri.to_string();
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &fields {
                query.append_pair(k, v);
            }
            location.push(if to.uri.contains('?') { '&' } else { '?' });
            location.push_str(&query.finish());
            let mut response =
                (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        ResponseMode::FormPost => {
            let fields: Vec<(String, String)> = fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            crate::templates::render(
                StatusCode::OK,
                "form_post.html",
                minijinja::context! { title => "Signing you in", action => to.uri, fields },
                &Csp::form_targets([to.uri]),
            )
        }
        ResponseMode::WebMessage | ResponseMode::OktaPostMessage => {
            // Checked against the client's web origins at /authorize.
            let Some(origin) = redirect_uri::origin_of(to.uri) else {
                return AppError::NotFound.into_response();
            };
            let fields: serde_json::Map<String, serde_json::Value> = fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.into()))
                .collect();
            let message = if to.mode == ResponseMode::WebMessage {
                serde_json::json!({ "type": "authorization_response", "response": fields })
            } else {
                serde_json::Value::Object(fields)
            };
            crate::templates::render(
                StatusCode::OK,
                "post_message.html",
                minijinja::context! {
                    title => "Signing you in",
                    target_origin => &origin,
                    message => message.to_string(),
                },
                &Csp {
                    form_action: Vec::new(),
                    frame_ancestor: Some(origin),
                },
            )
        }
    }
}
