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
use crate::tokens::grants::{RefreshParts, RefreshToken, load_grant, refresh_key, revoke_grant};

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
    if let Some(grant_id) = refresh_token_grant(state, token).await? {
        if let Some(grant) = load_grant(&*state.sessions, &*state.db, &grant_id).await?
            && grant.client_id == client.client_id
        {
            revoke_grant(&*state.sessions, &*state.db, &grant_id).await?;
        }
    } else if let Ok(claims) = verify_access_token(state, token).await
        && claims.client_id == client.client_id
    {
        revoke_grant(&*state.sessions, &*state.db, &claims.gid).await?;
    }
    // RFC 7009 §2.2: 200 whether or not the token was known, so the
    // endpoint tells nothing about tokens of other clients.
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The grant a refresh token of ours belongs to: named in the token, and
/// proven by the family's tag (a token made up from an access token's
/// `gid` revokes nothing), or found in the session store for a token
/// issued before families were durable.
async fn refresh_token_grant(state: &AppState, token: &str) -> Result<Option<String>, OAuthError> {
    if let Some(parts) = RefreshParts::parse(token) {
        let family = state.db.family(parts.grant_id).await?;
        return Ok(family
            .filter(|f| parts.tag_matches(f.tag_hash.as_deref()))
            .map(|f| f.grant_id));
    }
    Ok(state
        .sessions
        .get_json::<RefreshToken>(&refresh_key(token))
        .await?
        .map(|r| r.grant_id))
}
