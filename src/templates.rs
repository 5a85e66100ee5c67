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
        ("forgot.html", include_str!("../templates/forgot.html")),
        (
            "forgot_sent.html",
            include_str!("../templates/forgot_sent.html"),
        ),
        ("reset.html", include_str!("../templates/reset.html")),
        ("error.html", include_str!("../templates/error.html")),
        (
            "form_post.html",
            include_str!("../templates/form_post.html"),
        ),
        ("logout.html", include_str!("../templates/logout.html")),
        (
            "post_message.html",
            include_str!("../templates/post_message.html"),
        ),
        (
            "admin/layout.html",
            include_str!("../templates/admin/layout.html"),
        ),
        (
            "admin/overview.html",
            include_str!("../templates/admin/overview.html"),
        ),
        (
            "admin/cutover.html",
            include_str!("../templates/admin/cutover.html"),
        ),
        (
            "admin/users.html",
            include_str!("../templates/admin/users.html"),
        ),
        (
            "admin/user.html",
            include_str!("../templates/admin/user.html"),
        ),
        (
            "admin/jobs.html",
            include_str!("../templates/admin/jobs.html"),
        ),
        (
            "admin/job.html",
            include_str!("../templates/admin/job.html"),
        ),
        (
            "admin/outbox.html",
            include_str!("../templates/admin/outbox.html"),
        ),
        (
            "admin/audit.html",
            include_str!("../templates/admin/audit.html"),
        ),
        (
            "admin/signin.html",
            include_str!("../templates/admin/signin.html"),
        ),
    ] {
        env.add_template(name, source)
            .expect("templates are checked by the test suite");
    }
    env
});

pub const STYLE_CSS: &str = include_str!("../templates/style.css");
pub const ADMIN_CSS: &str = include_str!("../templates/admin/admin.css");
pub const FORM_POST_JS: &str = include_str!("../templates/form_post.js");
pub const POST_MESSAGE_JS: &str = include_str!("../templates/post_message.js");

/// What a page's `Content-Security-Policy` allows beyond its own origin.
/// The default allows nothing: forms post to Switchyard only and no site
/// may frame the page.
#[derive(Debug, Default, Clone)]
pub struct Csp {
    /// Where a form on the page may be sent. CSP Level 3 §6.4.1: browsers
    /// (Chromium among them) check `form-action` against every redirect
    /// that follows the submission too, so a login form whose answer is a
    /// 303 to the application's redirect URI, or to the upstream's login
    /// page, must name those origins or the browser stops at the form.
    pub form_action: Vec<String>,
    /// The one origin allowed to frame the page (`frame-ancestors`): the
    /// application that asked for a `web_message` response in a hidden
    /// iframe. `None`: no framing at all.
    pub frame_ancestor: Option<String>,
}

impl Csp {
    /// A page whose forms (or their redirects) may go to `targets`, each a
    /// URI or origin; a private-use scheme (RFC 8252 §7.1) is allowed as a
    /// scheme source, since its origin is opaque.
    pub fn form_targets<'a>(targets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut form_action: Vec<String> = Vec::new();
        for target in targets {
            let source = match url::Url::parse(target) {
                Ok(u) if u.origin().is_tuple() => u.origin().ascii_serialization(),
                Ok(u) => format!("{}:", u.scheme()),
                Err(_) => continue,
            };
            // A source expression is a space-separated token: nothing that
            // could add a directive gets in.
            if !source.contains([' ', ';', ',', '\'', '"']) && !form_action.contains(&source) {
                form_action.push(source);
            }
        }
        Self {
            form_action,
            frame_ancestor: None,
        }
    }

    fn header(&self) -> String {
        let mut form_action = String::from("'self'");
        for origin in &self.form_action {
            form_action.push(' ');
            form_action.push_str(origin);
        }
        let frame_ancestors = self.frame_ancestor.as_deref().unwrap_or("'none'");
        format!(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action {form_action}; \
             frame-ancestors {frame_ancestors}; base-uri 'none'"
        )
    }
}

/// Renders `name` with `context` under the policy `csp`.
pub fn render<S: Serialize>(status: StatusCode, name: &str, context: S, csp: &Csp) -> Response {
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
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp.header()) {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    // X-Frame-Options has no way to name one origin (ALLOW-FROM is gone
    // from every browser); where CSP allows a frame ancestor, browsers that
    // know `frame-ancestors` ignore this header, and older ones block.
    if csp.frame_ancestor.is_none() {
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// A stylesheet or script compiled into the binary.
pub fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    render(
        status,
        "error.html",
        minijinja::context! { title, message },
        &Csp::default(),
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
            message => "{}", target_origin => "https://app.example.com",
        };
        for name in [
            "identifier.html",
            "password.html",
            "form_post.html",
            "logout.html",
            "post_message.html",
        ] {
            TEMPLATES.get_template(name).unwrap().render(&ctx).unwrap();
        }
    }

    #[test]
    fn form_action_names_each_target_origin_once_and_nothing_else() {
        let csp = Csp::form_targets([
            "https://app.example.com/callback?x=1",
            "https://app.example.com/other",
            "http://127.0.0.1:3000/cb",
            "com.example.app:/oauth",
            "https://evil.example; script-src *",
            "not a uri",
        ]);
        let header = csp.header();
        assert!(
            header.contains(
                "form-action 'self' https://app.example.com http://127.0.0.1:3000 com.example.app:;"
            ),
            "{header}"
        );
        assert!(header.contains("frame-ancestors 'none'"));
        assert!(!header.contains("script-src *"));

        let framed = Csp {
            form_action: vec![],
            frame_ancestor: Some("https://spa.example.com".into()),
        };
        let response = render(
            StatusCode::OK,
            "error.html",
            minijinja::context! { title => "t", message => "m" },
            &framed,
        );
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("frame-ancestors https://spa.example.com;"));
        assert!(response.headers().get(header::X_FRAME_OPTIONS).is_none());
    }
}
