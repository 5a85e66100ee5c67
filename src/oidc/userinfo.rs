//! The UserInfo endpoint (OIDC Core §5.3), with Bearer tokens (RFC 6750).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::params::Params;
use crate::error::OAuthError;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::store::User;
use crate::tokens::grants::load_grant;
use crate::tokens::jwt::{self, ACCESS_TOKEN_TYP, AccessClaims, Expect};

/// The standard claims a scope releases (OIDC Core §5.4).
pub fn profile_claims(user: &User, scope: &str) -> Map<String, Value> {
    let mut claims = Map::new();
    let scopes: Vec<&str> = scope.split(' ').collect();
    let mut released: Vec<(&str, Option<Value>)> = Vec::new();
    if scopes.contains(&"profile") {
        released.extend([
            ("name", user.profile.name.as_ref().map(|v| json!(v))),
            (
                "given_name",
                user.profile.given_name.as_ref().map(|v| json!(v)),
            ),
            (
                "family_name",
                user.profile.family_name.as_ref().map(|v| json!(v)),
            ),
            ("nickname", user.profile.nickname.as_ref().map(|v| json!(v))),
            (
                "preferred_username",
                user.profile.username.as_ref().map(|v| json!(v)),
            ),
            ("picture", user.profile.picture.as_ref().map(|v| json!(v))),
            ("updated_at", Some(json!(user.updated_at))),
        ]);
    }
    if scopes.contains(&"email") && user.profile.email.is_some() {
        released.extend([
            ("email", user.profile.email.as_ref().map(|v| json!(v))),
            ("email_verified", Some(json!(user.profile.email_verified))),
        ]);
    }
    if scopes.contains(&"phone") {
        released.push((
            "phone_number",
            user.profile.phone_number.as_ref().map(|v| json!(v)),
        ));
    }
    for (name, value) in released {
        if let Some(value) = value {
            claims.insert(name.into(), value);
        }
    }
    claims
}

/// `GET /userinfo`.
pub async fn get_userinfo(State(state): State<AppState>, headers: HeaderMap) -> Response {
    userinfo(&state, bearer(&headers))
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /userinfo`: the token in the header, or in the form body
/// (RFC 6750 §2.2), never both.
pub async fn post_userinfo(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let header_token = bearer(&headers);
    let has_form = headers.get(header::CONTENT_TYPE).is_some();
    let token = if has_form {
        match Params::from_form_body(&headers, body)
            .await
            .and_then(|p| p.get("access_token").map(|t| t.map(String::from)))
        {
            Ok(Some(_)) if header_token.is_some() => {
                return OAuthError::invalid_request(
                    "more than one method was used to send the access token",
                )
                .into_response();
            }
            Ok(Some(t)) => Some(t),
            Ok(None) => header_token,
            Err(e) => return OAuthError::from(e).into_response(),
        }
    } else {
        header_token
    };
    userinfo(&state, token)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

async fn userinfo(state: &AppState, token: Option<String>) -> Result<Response, OAuthError> {
    let token = token.ok_or_else(|| OAuthError::invalid_token("an access token is required"))?;
    let claims = verify_access_token(state, &token).await?;
    // A client credentials token (RFC 6749 §4.4) has no user to describe.
    if claims.gid.is_empty() {
        return Err(OAuthError::invalid_token(
            "the access token was issued to a client for itself, not for a user",
        ));
    }
    // A revoked grant (logout, code replay, refresh reuse) ends its access
    // tokens here, before their expiry.
    // The grant is read through its cache from the database, which keeps
    // revocations for good (a flushed cache forgets none).
    if load_grant(&*state.sessions, &*state.db, &claims.gid)
        .await?
        .is_none()
    {
        return Err(OAuthError::invalid_token(
            "the access token has been revoked",
        ));
    }
    let user = match state.db.get_user(&claims.sub).await? {
        Some(u) if !u.blocked => u,
        _ => return Err(OAuthError::invalid_token("the user is no longer active")),
    };
    let mut body = profile_claims(&user, &claims.scope);
    body.insert("sub".into(), json!(user.id));
    let mut response = Json(Value::Object(body)).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// Verifies one of Switchyard's own access tokens, reloading the keys
/// when it names a key this instance has not loaded yet (another instance
/// rotated) — at most once per [`crate::state::UNKNOWN_KID_RELOAD_INTERVAL`], since
/// anyone can send a token with a made-up `kid`.
pub async fn verify_access_token(
    state: &AppState,
    token: &str,
) -> Result<AccessClaims, OAuthError> {
    let audience = state.settings.access_token_audience();
    let expect = Expect {
        issuer: &state.settings.issuer,
        audience: Some(&audience),
        typ: Some(ACCESS_TOKEN_TYP),
        allow_expired: false,
    };
    match jwt::verify::<AccessClaims>(&state.keys.current(), token, &expect) {
        Err(jwt::VerifyError::UnknownKey) if state.unknown_kid_reloads.ready() => {
            Metrics::count(&state.metrics.keys, "unknown_kid", "reloaded");
            state.keys.reload().await.map_err(OAuthError::unexpected)?;
            jwt::verify(&state.keys.current(), token, &expect)
        }
        other => other,
    }
    .map_err(|e| {
        OAuthError::invalid_token(match e {
            jwt::VerifyError::Invalid(_) => "the access token is invalid or expired",
            _ => "the access token is not one this server issued",
        })
    })
}
