//! The OpenID Connect provider facade that applications talk to, one file
//! per endpoint or grant.

pub mod adoption;
pub mod authorize;
pub mod client_auth;
pub mod discovery;
pub mod grant_authorization_code;
pub mod grant_client_credentials;
pub mod grant_password;
pub mod grant_refresh_token;
pub mod health;
pub mod issue;
pub mod logout;
pub mod params;
pub mod redirect_uri;
pub mod response;
pub mod revoke;
pub mod token;
pub mod userinfo;

use axum::Router;
use axum::routing::{MethodRouter, get, post};
use tower_http::cors::{Any, CorsLayer};

use crate::state::AppState;

/// Vendor path aliases, so an application using a vendor SDK only changes
/// its domain. Auth0's paths are Switchyard's own. These are mounted under
/// the issuer's path, where the SDKs look for them: Okta's `{issuer}/v1/…`
/// with an issuer such as `https://login.example.com/oauth2/default`,
/// Keycloak's `{issuer}/protocol/openid-connect/…` with `…/realms/acme`,
/// and Cognito's hosted-UI paths.
pub fn vendor_aliases() -> Router<AppState> {
    let api = Router::new()
        // Okta
        .route("/v1/userinfo", userinfo_route())
        .route("/v1/keys", get(discovery::get_jwks))
        .route("/v1/revoke", post(revoke::post_revoke))
        // Keycloak
        .route("/protocol/openid-connect/userinfo", userinfo_route())
        .route("/protocol/openid-connect/certs", get(discovery::get_jwks))
        .route("/protocol/openid-connect/revoke", post(revoke::post_revoke))
        // Cognito hosted UI
        .route("/oauth2/userInfo", userinfo_route())
        .layer(any_origin());
    Router::new()
        .merge(api)
        // Their CORS is per client (token.rs).
        .route("/v1/token", token_route())
        .route("/protocol/openid-connect/token", token_route())
        .route("/oauth2/token", token_route())
        .route("/v1/authorize", authorize_route())
        .route("/v1/logout", logout_route())
        .route("/protocol/openid-connect/auth", authorize_route())
        .route("/protocol/openid-connect/logout", logout_route())
        .route("/oauth2/authorize", authorize_route())
        .route("/logout", get(logout::get_logout))
}

/// The token endpoint, with its own CORS: per client, not for any origin.
fn token_route() -> MethodRouter<AppState> {
    post(token::post_token).options(token::preflight_token)
}

/// GET or POST, as OpenID Connect Core §3.1.2.1 requires of /authorize.
fn authorize_route() -> MethodRouter<AppState> {
    get(authorize::get_authorize).post(authorize::post_authorize)
}

/// RP-Initiated Logout 1.0 §2: GET or POST.
fn logout_route() -> MethodRouter<AppState> {
    get(logout::get_logout).post(logout::post_logout)
}

/// OpenID Connect Core §5.3.1: GET or POST.
fn userinfo_route() -> MethodRouter<AppState> {
    get(userinfo::get_userinfo).post(userinfo::post_userinfo)
}

/// Browser apps (public clients with PKCE) call the discovery, keys,
/// userinfo and revocation endpoints from their own origin. These take no
/// cookies and answer only to a bearer token, so any origin may read them;
/// /authorize and the login pages get no CORS at all, so no other site can
/// read a page that carries a CSRF token.
fn any_origin() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers(Any)
}

pub fn router() -> Router<AppState> {
    let api = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(discovery::get_openid_configuration),
        )
        .route("/.well-known/jwks.json", get(discovery::get_jwks))
        .route("/userinfo", userinfo_route())
        .route("/oauth/revoke", post(revoke::post_revoke))
        .layer(any_origin());
    Router::new()
        .merge(api)
        .route("/oauth/token", token_route())
        .route("/authorize", authorize_route())
        .route("/oidc/logout", logout_route())
        .route("/v2/logout", get(logout::get_auth0_logout))
        .route("/oidc/logged-out", get(logout::get_logged_out))
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(health::get_healthz))
        .route("/readyz", get(health::get_readyz))
}

/// `GET /metrics`: Prometheus text exposition.
async fn get_metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
