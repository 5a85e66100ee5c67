//! The operators' face: the dashboard (`/admin`, server-rendered pages)
//! and the JSON admin API (`/admin/api/v1/`, described by the OpenAPI 3.1
//! document at `/admin/api/v1/openapi.json`, errors as RFC 9457 problem
//! details).
//!
//! A face beside [`crate::oidc`] and [`crate::login`]: it reads and
//! steers what the layers below keep (users, cutover rules, jobs, the
//! outbox, the audit trail). Its one use of another face is the
//! dashboard's sign-in, which spends its authorization code through the
//! token endpoint's own exchange ([`crate::oidc::grant_authorization_code::redeem`])
//! rather than calling the server over HTTP.
//!
//! - [`access`]: who may operate (people with the `admin` role through an
//!   admin session; machines with an admin token) and the checks.
//! - [`problem`]: the API's one error shape.
//! - [`audit`]: every change recorded with its operator, before and after;
//!   the trail's page and API.
//! - [`pages`]: signing in and out of the dashboard, its layout.
//! - [`migration`]: where the migration stands (the overview, its charts).
//! - [`cutover`], [`users`], [`jobs`], [`outbox`]: steering.
//! - [`openapi`]: the API's document.

pub mod access;
pub mod audit;
pub mod charts;
pub mod cutover;
pub mod jobs;
pub mod migration;
pub mod openapi;
pub mod outbox;
pub mod pages;
pub mod problem;
pub mod users;

use axum::Router;

use crate::state::AppState;

/// The API's base path.
pub const API: &str = "/admin/api/v1";

/// Every admin route.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(pages::router())
        .merge(audit::router())
        .merge(migration::router())
        .merge(cutover::router())
        .merge(users::router())
        .merge(jobs::router())
        .merge(outbox::router())
        .merge(openapi::router())
}
