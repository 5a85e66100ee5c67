//! The token endpoint (RFC 6749 §3.2): client authentication, CORS for
//! browser applications, then one grant handler per grant type; the token
//! response they share is [`super::issue`].

use std::net::IpAddr;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::client_auth;
use super::params::Params;
use super::{
    grant_authorization_code, grant_client_credentials, grant_password, grant_refresh_token,
};
use crate::error::{ErrorCode, OAuthError};
use crate::metrics::Metrics;
use crate::session::ClientIp;
use crate::state::AppState;
use crate::store::GrantType;

/// `POST /oauth/token`.
pub async fn post_token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let params = match Params::from_token_body(&headers, body).await {
        Ok(params) => params,
        Err(e) => return OAuthError::from(e).into_response(),
    };
    let mut response = token(&state, &headers, &params, ip)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    allow_origin(&state, &headers, &params, &mut response).await;
    response
}

/// CORS for browser applications (Fetch Standard §3.2): the answer may be
/// read by a page on one of the calling client's web origins or
/// redirect-URI origins, and by no other, errors included (an SDK reads
/// `invalid_grant` to fall back to a new login).
async fn allow_origin(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    response: &mut Response,
) {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return;
    };
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static("origin"));
    let (Ok(origin_str), Some(client_id)) = (
        origin.to_str(),
        client_auth::claimed_client_id(headers, params),
    ) else {
        return;
    };
    let allowed = match state.recent.client(&*state.db, &client_id).await {
        Ok(Some(client)) => super::redirect_uri::cors_allowed(&client, origin_str),
        _ => false,
    };
    if allowed {
        response
            .headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
}

/// `OPTIONS /oauth/token`: the CORS preflight. It names no client, so it
/// allows the method and headers to any origin; whether the page may read
/// the answer is decided on the POST, for the client it names.
pub async fn preflight_token(headers: HeaderMap) -> Response {
    let mut response = axum::http::StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    if let Some(origin) = headers.get(header::ORIGIN) {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        out.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST"),
        );
        if let Some(asked) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        out.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    out.insert(
        header::VARY,
        HeaderValue::from_static("origin, access-control-request-headers"),
    );
    response
}

async fn token(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    ip: IpAddr,
) -> Result<Response, OAuthError> {
    // RFC 6749 §3.2: parameters must not be repeated.
    params.reject_repeats()?;
    let grant_type = params.require("grant_type")?;
    let auth = client_auth::authenticate(state, headers, params).await?;
    let client = &auth.client;
    // Auth0's password-realm is the password grant against a connection.
    let grant = if grant_type == grant_password::AUTH0_PASSWORD_REALM {
        Some(GrantType::Password)
    } else {
        GrantType::parse(grant_type)
    };
    let Some(grant) = grant else {
        return Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            "the grant type is not supported",
        ));
    };
    if !client.allows_grant(grant) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "the client may not use this grant type",
        ));
    }
    let result = match grant {
        GrantType::AuthorizationCode => {
            grant_authorization_code::exchange(state, &auth, params).await
        }
        GrantType::Password => grant_password::password(state, &auth, params, ip).await,
        GrantType::RefreshToken => grant_refresh_token::refresh(state, &auth, params, ip).await,
        GrantType::ClientCredentials => {
            grant_client_credentials::client_credentials(state, &auth, params).await
        }
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code.as_str(),
    };
    Metrics::count(&state.metrics.grants, grant_type, outcome);
    result
}
