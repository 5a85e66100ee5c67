//! OpenID Provider metadata (OIDC Discovery §3, §4) and the JWKS.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::state::AppState;
use crate::store::now;

/// The metadata document. `issuer` is the configured issuer byte for byte,
/// the same string every token carries (OIDC Discovery §4.3).
pub fn metadata(state: &AppState) -> Value {
    let issuer = &state.settings.issuer;
    let base = state.settings.issuer_base();
    let mut algs = vec!["RS256"];
    if state.signing_alg != crate::tokens::keys::Alg::RS256 {
        algs.insert(0, state.signing_alg.as_str());
    }
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/oauth/token"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "end_session_endpoint": format!("{base}/oidc/logout"),
        "scopes_supported": ["openid", "profile", "email", "phone", "offline_access"],
        // RFC 9700 §2.1.2: no implicit or hybrid flows.
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "form_post", "web_message", "okta_post_message"],
        // `password` only for clients that list it (RFC 9700 §2.4).
        "grant_types_supported": crate::store::GrantType::ALL.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": [
            "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "sid",
            "name", "given_name", "family_name", "nickname", "preferred_username", "picture",
            "email", "email_verified", "phone_number", "updated_at"
        ],
        "prompt_values_supported": ["none", "login"],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
        "frontchannel_logout_supported": false,
        "backchannel_logout_supported": false,
    })
}

/// `GET /.well-known/openid-configuration` (OIDC Discovery §4).
pub async fn get_openid_configuration(State(state): State<AppState>) -> Response {
    cacheable(Json(metadata(&state)).into_response(), 3600)
}

/// `GET /.well-known/jwks.json` (RFC 7517 §5): next, active and still
/// published retired keys. Cached briefly, so a rotation reaches relying
/// parties well before the next key starts signing.
pub async fn get_jwks(State(state): State<AppState>) -> Response {
    cacheable(Json(state.keys.current().jwks(now())).into_response(), 300)
}

fn cacheable(mut response: Response, secs: u32) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={secs}")) {
        response.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    response
}
