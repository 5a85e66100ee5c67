//! The client credentials grant (RFC 6749 §4.4): a confidential client
//! asks for an access token for itself, with no user, to call an API
//! Switchyard protects: the admin API (`switchyard:admin`,
//! `switchyard:admin:read`) or the Auth0-compatible Management API
//! (`read:users`, …, audience `https://{domain}/api/v2/`).
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
    let asked_scope = params.get("scope")?;
    let asked_audience = params.get(AUDIENCE_PARAM)?;
    let mut scopes = granted_scopes(&client.scopes, asked_scope)?;
    if let (None, Some(aud)) = (asked_scope, asked_audience) {
        // Auth0's clients name the API and no scope: they get every scope
        // the client is allowed on that API (its "client grant").
        let api = api_named(state, aud);
        scopes.retain(|s| api_of(s) == api);
        if scopes.is_empty() {
            return Err(OAuthError::new(
                ErrorCode::AccessDenied,
                "the client is not allowed any scope of the requested audience",
            ));
        }
    }
    let audience = audience(state, &scopes, asked_audience)?;
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

/// The API a token is for, from its scopes: each of Switchyard's APIs
/// has scopes of its own, and a token names one API (one `aud`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// `switchyard:admin`, `switchyard:admin:read`: `{issuer}admin`.
    Admin,
    /// Auth0's Management API scopes (`read:users`, …): `https://{domain}/api/v2/`.
    Management,
    /// Any other: the configured access token audience.
    Other,
}

fn api_of(scope: &str) -> Api {
    if is_admin_scope(scope) {
        Api::Admin
    } else if crate::api_v2::Scope::parse(scope).is_some() {
        Api::Management
    } else {
        Api::Other
    }
}

/// The API an `audience` parameter names.
fn api_named(state: &AppState, aud: &str) -> Api {
    let issuer = &state.settings.issuer;
    if crate::api_v2::names_this_api(issuer, aud) {
        Api::Management
    } else if aud == admin_audience(issuer) {
        Api::Admin
    } else {
        Api::Other
    }
}

/// The one place a client credentials token's `aud` is chosen: the API
/// its scopes belong to, which must be one. An `audience` parameter, when
/// sent, must name that API; Auth0 clients name the Management API as
/// `https://{domain}/api/v2/`, which is accepted.
fn audience(
    state: &AppState,
    scopes: &[String],
    asked: Option<&str>,
) -> Result<String, OAuthError> {
    let mut apis = scopes.iter().map(|s| api_of(s));
    let api = apis.next().unwrap_or(Api::Other);
    if apis.any(|a| a != api) {
        return Err(OAuthError::new(
            ErrorCode::InvalidScope,
            "the scopes asked for belong to different APIs; a token is for one",
        ));
    }
    let issuer = &state.settings.issuer;
    let (chosen, matches) = match api {
        Api::Admin => {
            let aud = admin_audience(issuer);
            let matches = asked.is_none_or(|a| a == aud);
            (aud, matches)
        }
        Api::Management => (
            crate::api_v2::audience(issuer),
            asked.is_none_or(|a| crate::api_v2::names_this_api(issuer, a)),
        ),
        Api::Other => {
            let aud = state.settings.access_token_audience();
            let matches = asked.is_none_or(|a| a == aud);
            (aud, matches)
        }
    };
    if matches {
        Ok(chosen)
    } else {
        // Auth0 answers an audience it does not serve with access_denied.
        Err(OAuthError::new(
            ErrorCode::AccessDenied,
            "the requested audience is not one this client's scopes are for",
        ))
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
