//! Token revocation (RFC 7009).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::client_auth;
use super::params::Params;
use super::userinfo::verify_access_token;
use crate::error::OAuthError;
use crate::state::AppState;
use crate::store::SessionStoreExt;
use crate::tokens::grants::{RefreshToken, refresh_key, revoke_grant};

/// `POST /oauth/revoke`. Revoking either token of a grant revokes the
/// grant: its refresh family and, at userinfo, its access tokens
/// (RFC 7009 §2.1 lets the server revoke related tokens).
pub async fn post_revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    revoke(&state, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn revoke(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, OAuthError> {
    let params = Params::from_form_body(headers, body).await?;
    params.reject_repeats()?;
    let client = client_auth::authenticate(state, headers, &params)
        .await?
        .client;
    let token = params.require("token")?;
    // The hint is only an optimisation (RFC 7009 §2.1): both kinds are tried.
    if let Some(record) = state
        .sessions
        .get_json::<RefreshToken>(&refresh_key(token))
        .await?
    {
        if record.client_id == client.client_id {
            revoke_grant(&*state.sessions, &record.grant_id).await?;
        }
    } else if let Ok(claims) = verify_access_token(state, token).await
        && claims.client_id == client.client_id
    {
        revoke_grant(&*state.sessions, &claims.gid).await?;
    }
    // RFC 7009 §2.2: 200 whether or not the token was known, so the
    // endpoint tells nothing about tokens of other clients.
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
