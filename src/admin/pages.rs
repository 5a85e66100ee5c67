//! The dashboard's frame: signing in and out, the layout every page
//! shares, its assets.

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;

use super::access::{Actor, PageOperator};
use crate::state::AppState;
use crate::templates::{self, Csp};

/// The dashboard's sections, as the layout's navigation names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    Overview,
    Cutover,
    Users,
    Jobs,
    Outbox,
    Audit,
}

/// Renders the dashboard page `name` (a template extending
/// `admin/layout.html`) for `operator`, with the layout's own context
/// (title, section, the operator's name, the CSRF token of the forms)
/// beside the page's.
pub fn render<S: Serialize>(
    status: StatusCode,
    name: &str,
    operator: &PageOperator,
    section: Section,
    title: &str,
    notice: Option<&str>,
    page: S,
) -> Response {
    let operator_name = match &operator.operator.actor {
        Actor::User(id) | Actor::Client(id) => id.clone(),
    };
    templates::render(
        status,
        name,
        minijinja::context! {
            title,
            section,
            notice,
            operator_name,
            csrf => operator.csrf,
            ..minijinja::Value::from_serialize(&page)
        },
        &Csp::default(),
    )
}

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/admin/assets/admin.css",
        get(|| async { templates::asset("text/css; charset=utf-8", templates::ADMIN_CSS) }),
    )
}
