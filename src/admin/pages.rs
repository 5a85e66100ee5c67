//! The dashboard's frame: signing in and out, the layout every page
//! shares, its assets.
//!
//! Signing in is an ordinary OpenID Connect login by Switchyard's own
//! first-party client, `switchyard-admin` (public, PKCE S256, the
//! authorization code grant): `/admin/login` sends the browser to
//! `/authorize`, so an operator goes through the same pages, throttling
//! and upstream routing as everyone; `/admin/callback` spends the code in
//! this process (no HTTP call to itself) and opens an admin session if the
//! user is an operator. The admin session is separate from the gateway
//! session: signing out of the dashboard signs no one out of applications.

use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::access::{AdminSession, PageOperator, idle_timeout};
use crate::config::{ADMIN_CLIENT_ID, admin_redirect_uri};
use crate::crypto::{b64url, constant_time_eq, random_token, sha256, sha256_b64};
use crate::error::AppError;
use crate::oidc::grant_authorization_code::redeem;
use crate::session::read_cookie;
use crate::state::AppState;
use crate::store::{AuditEvent, SessionStoreExt, now};
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
    let operator_name = &operator.name;
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
    Router::new()
        .route(
            "/admin/assets/admin.css",
            get(|| async { templates::asset("text/css; charset=utf-8", templates::ADMIN_CSS) }),
        )
        .route("/admin/login", get(get_login))
        .route("/admin/callback", get(get_callback))
        .route("/admin/logout", post(post_logout))
}

/// How long a sign-in may take between `/admin/login` and the callback.
const SIGN_IN_TTL: Duration = Duration::from_secs(600);

/// A sign-in under way, in the session store under [`pending_key`] of the
/// sign-in cookie's value: what the callback checks and where it goes.
#[derive(Debug, Serialize, Deserialize)]
struct PendingSignIn {
    /// RFC 6749 §10.12: binds the callback to this browser's request.
    state: String,
    /// RFC 7636: the PKCE verifier of the request's challenge.
    verifier: String,
    return_to: String,
}

fn pending_key(cookie: &str) -> String {
    format!("admin-sign-in:{}", sha256_b64(cookie.as_bytes()))
}

fn sign_in_cookie_name(state: &AppState) -> String {
    crate::session::cookie_name(state, "admin-sign-in")
}

/// The admin cookies' `Path` and `Secure`. On https the names carry the
/// `__Host-` prefix, which RFC 6265bis §4.1.3.2 grants only to a cookie
/// that is `Secure`, host-only and `Path=/`: that the cookie cannot be set
/// or shadowed by a sibling subdomain or plain http is worth more than
/// scoping it to `/admin`, which is no security boundary within one origin
/// (RFC 6265bis §8.5). On loopback http (development, tests) there is no
/// prefix, and the cookie is kept to `/admin`.
fn cookie_attributes(state: &AppState) -> &'static str {
    if state.settings.is_https() {
        "Path=/; Secure"
    } else {
        "Path=/admin"
    }
}

/// A cookie of the dashboard. `SameSite=Strict` for the session: no
/// request another site starts carries it, a second line behind the CSRF
/// token. `Lax` for the sign-in under way: the callback is a navigation
/// that may come back from the upstream's login pages, another site.
fn admin_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    same_site: &str,
    max_age: Option<u64>,
) -> Option<HeaderValue> {
    let max_age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    HeaderValue::from_str(&format!(
        "{name}={value}; {}; HttpOnly; SameSite={same_site}{max_age}",
        cookie_attributes(state)
    ))
    .ok()
}

/// A local dashboard path to come back to, or `/admin`: an open redirect
/// is refused (RFC 9700 §4.11), and the sign-in's own paths would loop.
fn safe_return_to(asked: Option<&str>) -> String {
    match asked {
        Some(p)
            if (p == "/admin" || p.starts_with("/admin/") || p.starts_with("/admin?"))
                && !p.starts_with("/admin/login")
                && !p.starts_with("/admin/callback")
                && !p.starts_with("/admin/logout")
                && !p.starts_with("/admin/api/")
                && p.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'\\') =>
        {
            p.to_string()
        }
        _ => "/admin".into(),
    }
}

/// A standalone page of the sign-in (no dashboard frame: there is no
/// operator yet, or any more).
fn sign_in_page(
    status: StatusCode,
    title: &str,
    message: &str,
    link: Option<(&str, &str)>,
) -> Response {
    sign_in_page_onward(status, title, message, link, false)
}

/// [`sign_in_page`]; with `onward`, the page also moves on to its link by
/// itself (a same-site navigation of its own).
fn sign_in_page_onward(
    status: StatusCode,
    title: &str,
    message: &str,
    link: Option<(&str, &str)>,
    onward: bool,
) -> Response {
    let (link_href, link_text) = link.unzip();
    let refresh_to = link_href.filter(|_| onward);
    let mut response = templates::render(
        status,
        "admin/signin.html",
        minijinja::context! { title, message, link_href, link_text, refresh_to },
        &Csp::default(),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Deserialize)]
struct LoginQuery {
    return_to: Option<String>,
}

/// `GET /admin/login`: starts an authorization code request of the
/// dashboard's client. `prompt=login`: the dashboard asks for the password
/// even when the browser is already signed in to applications, since an
/// application's session is not meant to open the control room.
async fn get_login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Result<Response, AppError> {
    let return_to = safe_return_to(query.return_to.as_deref());
    if AdminSession::current(&state, &headers)
        .await
        .map_err(AppError::from)?
        .is_some()
    {
        return Ok(Redirect::to(&return_to).into_response());
    }
    let pending = PendingSignIn {
        state: random_token(),
        verifier: random_token(),
        return_to,
    };
    let cookie = random_token();
    state
        .sessions
        .put_json(&pending_key(&cookie), &pending, SIGN_IN_TTL)
        .await?;
    let challenge = b64url(&sha256(pending.verifier.as_bytes()));
    let redirect_uri = admin_redirect_uri(&state.settings);
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", ADMIN_CLIENT_ID)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", "openid")
        .append_pair("state", &pending.state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("prompt", "login")
        .finish();
    let mut response = Redirect::to(&format!("/authorize?{query}")).into_response();
    if let Some(v) = admin_cookie(
        &state,
        &sign_in_cookie_name(&state),
        &cookie,
        "Lax",
        Some(SIGN_IN_TTL.as_secs()),
    ) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(response)
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    iss: Option<String>,
}

/// `GET /admin/callback`: the authorization response (RFC 6749 §4.1.2).
async fn get_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Result<Response, AppError> {
    let start_again = Some(("/admin/login", "Sign in again"));
    let expired = || {
        sign_in_page(
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "This sign-in has expired or was started in another browser.",
            start_again,
        )
    };
    let Some(cookie) = read_cookie(&headers, &sign_in_cookie_name(&state)) else {
        return Ok(expired());
    };
    // Taken: a callback is answered once.
    let Some(pending) = state
        .sessions
        .take_json::<PendingSignIn>(&pending_key(&cookie))
        .await?
    else {
        return Ok(expired());
    };
    let clear = admin_cookie(&state, &sign_in_cookie_name(&state), "", "Lax", Some(0));
    let with_clear = |mut r: Response| {
        if let Some(v) = clear.clone() {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
        r
    };
    let sent_state = query.state.as_deref().unwrap_or("");
    if !constant_time_eq(sent_state.as_bytes(), pending.state.as_bytes()) {
        return Ok(with_clear(expired()));
    }
    // RFC 9207 §2.4: the response names the issuer it came from.
    if query
        .iss
        .as_deref()
        .is_some_and(|iss| iss != state.settings.issuer)
    {
        return Ok(with_clear(expired()));
    }
    if query.error.is_some() {
        return Ok(with_clear(sign_in_page(
            StatusCode::BAD_REQUEST,
            "Sign-in not completed",
            "The sign-in was not completed.",
            start_again,
        )));
    }
    let Some(code) = query.code.as_deref() else {
        return Ok(with_clear(expired()));
    };
    let Some(client) = state.db.get_client(ADMIN_CLIENT_ID).await? else {
        return Err(AppError::Unexpected(anyhow::anyhow!(
            "the dashboard's built-in client is missing"
        )));
    };
    let redirect_uri = admin_redirect_uri(&state.settings);
    let (_, user) = match redeem(
        &state,
        &client,
        code,
        &redirect_uri,
        Some(&pending.verifier),
    )
    .await
    {
        Ok(done) => done,
        Err(e) => {
            tracing::info!(error = %e.description, "admin sign-in: the code was refused");
            return Ok(with_clear(expired()));
        }
    };
    if !state.db.is_operator(&user.id).await? {
        let event = AuditEvent::new(
            "admin_sign_in_refused",
            Some(&user.id),
            Some(ADMIN_CLIENT_ID),
        );
        crate::auth::record(&state, event).await;
        return Ok(with_clear(sign_in_page(
            StatusCode::FORBIDDEN,
            "Not an operator",
            "This account is not an operator. An administrator can make it one with the \
             command switchyard users grant-admin.",
            None,
        )));
    }
    let session_cookie = random_token();
    let session = AdminSession {
        user_id: user.id.clone(),
        csrf: random_token(),
        created_at: now(),
    };
    state
        .sessions
        .put_json(
            &AdminSession::key(&session_cookie),
            &session,
            idle_timeout(&state),
        )
        .await?;
    let event = AuditEvent::new("admin_signed_in", Some(&user.id), Some(ADMIN_CLIENT_ID));
    crate::auth::record(&state, event).await;
    // A sign-in that went through another site (the upstream's login
    // pages) reaches here as a cross-site navigation, and a redirect would
    // carry that on: the next request would go without the SameSite=Strict
    // cookie just set, back to the sign-in. A page of our own that moves
    // on by itself starts a same-site navigation (Fetch Metadata,
    // `Sec-Fetch-Site`, tells which case this is).
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site");
    let onward = if cross_site {
        sign_in_page_onward(
            StatusCode::OK,
            "Signed in",
            "You are signed in to the Switchyard dashboard.",
            Some((&pending.return_to, "Continue to the dashboard")),
            true,
        )
    } else {
        Redirect::to(&pending.return_to).into_response()
    };
    let mut response = with_clear(onward);
    // No Max-Age: the cookie ends with the browser, the session with the
    // idle timeout the store enforces.
    if let Some(v) = admin_cookie(
        &state,
        &AdminSession::cookie_name(&state),
        &session_cookie,
        "Strict",
        None,
    ) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(response)
}

#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /admin/logout`: ends the admin session (only it: the gateway
/// session and the applications' stay), after checking the form's CSRF
/// token.
async fn post_logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Result<Response, AppError> {
    let signed_out = || {
        sign_in_page(
            StatusCode::OK,
            "Signed out",
            "You have signed out of the Switchyard dashboard.",
            Some(("/admin/login", "Sign in again")),
        )
    };
    let Some((key, session)) = AdminSession::current(&state, &headers)
        .await
        .map_err(AppError::from)?
    else {
        return Ok(signed_out());
    };
    if !constant_time_eq(form.csrf.as_bytes(), session.csrf.as_bytes()) {
        return Err(AppError::bad_request(
            "Form expired",
            "This form has expired. Go back, reload the page and try again.",
        ));
    }
    state.sessions.delete(&key).await?;
    let mut response = signed_out();
    if let Some(v) = admin_cookie(
        &state,
        &AdminSession::cookie_name(&state),
        "",
        "Strict",
        Some(0),
    ) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::safe_return_to;

    #[test]
    fn only_local_dashboard_paths_are_returned_to() {
        assert_eq!(safe_return_to(Some("/admin/users?q=a")), "/admin/users?q=a");
        assert_eq!(safe_return_to(Some("/admin")), "/admin");
        for bad in [
            "https://evil.example/admin",
            "//evil.example/admin",
            "/administrator",
            "/admin/login?return_to=/admin",
            "/admin/callback",
            "/admin/\\evil",
            "/oauth/token",
        ] {
            assert_eq!(safe_return_to(Some(bad)), "/admin", "{bad}");
        }
        assert_eq!(safe_return_to(None), "/admin");
    }
}
