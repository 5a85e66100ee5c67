//! The authorization response (RFC 6749 §4.1.2 and §4.1.2.1): a code or an
//! error, with `state` and `iss` (RFC 9207), delivered the way the request
//! asked — redirect, form post, or a message posted to the application's
//! window. Below both the authorization endpoint and the login pages, which
//! each end a request here.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::redirect_uri;
use crate::crypto::random_token;
use crate::error::{AppError, ErrorCode};
use crate::state::AppState;
use crate::store::SessionStoreExt;
use crate::templates::Csp;
use crate::tokens::grants::{
    AuthorizationCode, PendingAuthorization, ResponseMode, Session, code_key,
};

/// Where an error for a trusted redirect URI goes.
pub struct Redirect<'a> {
    pub uri: &'a str,
    pub mode: ResponseMode,
    pub state: Option<&'a str>,
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
