//! HTML pages, rendered by minijinja with auto-escaping on.
//!
//! The templates are compiled into the binary (the image needs no files
//! beside it) and parsed once. Every page goes out with a
//! `Content-Security-Policy` that allows no inline script and no framing,
//! plus `X-Frame-Options: DENY` for older browsers (RFC 9700 §4.16).

use std::sync::LazyLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::Environment;
use serde::Serialize;

/// Parsed once: the templates are constants of the binary, so this is a
/// cache of immutable data, not shared mutable state.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in [
        ("base.html", include_str!("../templates/base.html")),
        (
            "identifier.html",
            include_str!("../templates/identifier.html"),
        ),
        ("password.html", include_str!("../templates/password.html")),
        ("error.html", include_str!("../templates/error.html")),
        (
            "form_post.html",
            include_str!("../templates/form_post.html"),
        ),
        ("logout.html", include_str!("../templates/logout.html")),
    ] {
        env.add_template(name, source)
            .expect("templates are checked by the test suite");
    }
    env
});

pub const STYLE_CSS: &str = include_str!("../templates/style.css");
pub const FORM_POST_JS: &str = include_str!("../templates/form_post.js");

/// Renders `name` with `context`; `form_action` widens the CSP's
/// `form-action` to one more origin (the client, for form_post responses).
pub fn render<S: Serialize>(
    status: StatusCode,
    name: &str,
    context: S,
    form_action: Option<&str>,
) -> Response {
    let body = TEMPLATES.get_template(name).and_then(|t| t.render(context));
    let html = match body {
        Ok(html) => html,
        Err(e) => {
            tracing::error!(error = %e, template = name, "template failed to render");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page could not be shown.",
            )
                .into_response();
        }
    };
    let mut response = (status, Html(html)).into_response();
    let form_action = match form_action {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_string(),
    };
    let csp = format!(
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action {form_action}; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    render(
        status,
        "error.html",
        minijinja::context! { title, message },
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_escapes_its_input() {
        let response = error_page(StatusCode::BAD_REQUEST, "t", "<script>alert(1)</script>");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = TEMPLATES
            .get_template("error.html")
            .unwrap()
            .render(minijinja::context! { title => "t", message => "<script>" })
            .unwrap();
        assert!(body.contains("&lt;script&gt;"));
        let ctx = minijinja::context! {
            title => "t", authz => "a b", csrf => "c", username => "u", login_hint => "h", error => "e",
            action => "https://app.example.com/cb", fields => vec![("code", "x")], confirm => true,
        };
        for name in [
            "identifier.html",
            "password.html",
            "form_post.html",
            "logout.html",
        ] {
            TEMPLATES.get_template(name).unwrap().render(&ctx).unwrap();
        }
    }
}
