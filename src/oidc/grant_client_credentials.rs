//! The client credentials grant (RFC 6749 §4.4): a confidential client
//! asks for an access token for itself, with no user, to call an API
//! Switchyard protects — today the admin API (`switchyard:admin`,
//! `switchyard:admin:read`).
//!
//! The token is an RFC 9068 JWT access token whose `sub` is the client
//! (RFC 9068 §2.2: "the client identifier" when no resource owner is
//! involved). No refresh token and no ID token: RFC 6749 §4.4.3 ("A
//! refresh token SHOULD NOT be included"), and there is no user for an ID
//! token to be about.

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::client_auth::Authenticated;
use super::params::Params;
use crate::admin::access::admin_audience;
use crate::crypto::random_token;
use crate::error::{ErrorCode, OAuthError};
use crate::state::AppState;
use crate::store::now;
use crate::store::{ADMIN_READ_SCOPE, ADMIN_SCOPE};
use crate::tokens::jwt::{self, ACCESS_TOKEN_TYP, ClientAccessClaims};

/// The request parameter naming the API a token is for, as Auth0 spells
/// it (`audience`, Auth0 Authentication API "Client Credentials Flow").
pub const AUDIENCE_PARAM: &str = "audience";

/// Whether `scope` is one of the admin API's.
pub fn is_admin_scope(scope: &str) -> bool {
    scope == ADMIN_SCOPE || scope == ADMIN_READ_SCOPE
}

pub async fn client_credentials(
    state: &AppState,
    auth: &Authenticated,
    params: &Params,
) -> Result<Response, OAuthError> {
    let client = &auth.client;
    // RFC 6749 §4.4: "MUST only be used by confidential clients"; a public
    // client proves nothing by presenting its id.
    if client.public || auth.secret.is_none() {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "the client credentials grant needs a confidential client",
        ));
    }
    let scopes = granted_scopes(&client.scopes, params.get("scope")?)?;
    let audience = audience(state, &scopes, params.get(AUDIENCE_PARAM)?)?;
    let scope = scopes.join(" ");

    let now = now();
    let ttl = state.settings.tokens.access_token_ttl_secs as i64;
    let claims = ClientAccessClaims {
        iss: state.settings.issuer.clone(),
        sub: client.client_id.clone(),
        aud: audience,
        exp: now + ttl,
        iat: now,
        jti: random_token(),
        client_id: client.client_id.clone(),
        scope: scope.clone(),
    };
    let keys = state.keys.current();
    let key = keys
        .active(state.signing_alg)
        .ok_or_else(|| OAuthError::unexpected("no active signing key"))?;
    let access_token = jwt::sign(key, ACCESS_TOKEN_TYP, &claims).map_err(OAuthError::unexpected)?;
    let mut response = Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ttl,
        "scope": scope,
    }))
    .into_response();
    // RFC 6749 §5.1.
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// The scopes granted: those asked for, each of which the client must be
/// allowed, or all it is allowed when it asks for none (RFC 6749 §3.3: the
/// server "MUST either process the request using a pre-defined default
/// value or fail the request indicating an invalid scope").
fn granted_scopes(allowed: &[String], asked: Option<&str>) -> Result<Vec<String>, OAuthError> {
    let asked: Vec<&str> = match asked {
        Some(s) => s.split(' ').filter(|t| !t.is_empty()).collect(),
        None => Vec::new(),
    };
    if asked.is_empty() {
        if allowed.is_empty() {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                "the client is allowed no scope to ask for",
            ));
        }
        return Ok(allowed.to_vec());
    }
    let mut granted: Vec<String> = Vec::new();
    for token in asked {
        if !allowed.iter().any(|a| a == token) {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                "a requested scope is not allowed for this client",
            ));
        }
        if !granted.iter().any(|g| g == token) {
            granted.push(token.to_string());
        }
    }
    Ok(granted)
}

/// The one place a client credentials token's `aud` is chosen. The admin
/// scopes are for the admin API alone, so they make the audience
/// `{issuer}admin` and cannot share a token with other scopes (a token
/// names one API). Other scopes get the configured access token audience.
/// An `audience` parameter, when sent, must name the audience the scopes
/// lead to; the APIs it may later name (Auth0's Management API,
/// `{issuer}api/v2/`) are added here.
fn audience(
    state: &AppState,
    scopes: &[String],
    asked: Option<&str>,
) -> Result<String, OAuthError> {
    let admin = scopes.iter().filter(|s| is_admin_scope(s)).count();
    let chosen = if admin == 0 {
        state.settings.access_token_audience()
    } else if admin == scopes.len() {
        admin_audience(&state.settings.issuer)
    } else {
        return Err(OAuthError::new(
            ErrorCode::InvalidScope,
            "the admin scopes cannot be asked for together with other scopes",
        ));
    };
    match asked {
        None => Ok(chosen),
        Some(a) if a == chosen => Ok(chosen),
        // Auth0 answers an audience it does not serve with access_denied.
        Some(_) => Err(OAuthError::new(
            ErrorCode::AccessDenied,
            "the requested audience is not one this client's scopes are for",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_default_to_the_allowed_and_must_be_allowed() {
        let allowed = vec![ADMIN_SCOPE.to_string()];
        assert_eq!(granted_scopes(&allowed, None).unwrap(), allowed);
        assert_eq!(granted_scopes(&allowed, Some(" ")).unwrap(), allowed);
        assert_eq!(
            granted_scopes(&allowed, Some("switchyard:admin switchyard:admin")).unwrap(),
            allowed
        );
        assert!(granted_scopes(&allowed, Some("switchyard:admin other")).is_err());
        let e = granted_scopes(&allowed, Some("switchyard:admin:read")).unwrap_err();
        assert_eq!(e.code.as_str(), "invalid_scope");
        assert!(granted_scopes(&[], None).is_err());
    }
}
