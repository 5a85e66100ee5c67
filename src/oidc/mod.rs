//! The OpenID Connect provider facade that applications talk to, one file
//! per endpoint or grant.

pub mod authorize;
pub mod client_auth;
pub mod discovery;
pub mod grant_authorization_code;
pub mod grant_refresh_token;
pub mod health;
pub mod logout;
pub mod params;
pub mod redirect_uri;
pub mod revoke;
pub mod token;
pub mod userinfo;

use axum::Router;
use axum::routing::{get, post};
use tower_http::cors::{Any, CorsLayer};

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    // Browser apps (public clients with PKCE) call these from their own
    // origin. They take no cookies, so any origin may read them; /authorize
    // and the login pages get no CORS at all (SECURITY.md).
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers(Any);
    let api = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(discovery::get_openid_configuration),
        )
        .route("/.well-known/jwks.json", get(discovery::get_jwks))
        .route("/oauth/token", post(token::post_token))
        .route(
            "/userinfo",
            get(userinfo::get_userinfo).post(userinfo::post_userinfo),
        )
        .route("/oauth/revoke", post(revoke::post_revoke))
        .layer(cors);
    Router::new()
        .merge(api)
        .route(
            "/authorize",
            get(authorize::get_authorize).post(authorize::post_authorize),
        )
        .route(
            "/oidc/logout",
            get(logout::get_logout).post(logout::post_logout),
        )
        .route("/v2/logout", get(logout::get_auth0_logout))
        .route("/healthz", get(health::get_healthz))
        .route("/readyz", get(health::get_readyz))
}
