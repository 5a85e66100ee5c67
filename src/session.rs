//! What the HTTP faces (the provider endpoints in `oidc`, the login pages
//! in `login`) share about a browser: the cookies Switchyard sets, the
//! gateway session a cookie names, and the address a request comes from.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use crate::crypto::{constant_time_eq, random_token};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::{SessionStoreExt, StoreResult, User};
use crate::tokens::grants::{Session, session_key};

/// `__Host-` prefixed on https, so the cookie is host-only, secure and
/// path-wide (RFC 6265bis §4.1.3.2); plain name on loopback http.
pub fn cookie_name(state: &AppState, base: &str) -> String {
    if state.settings.is_https() {
        format!("__Host-switchyard-{base}")
    } else {
        format!("switchyard-{base}")
    }
}

pub fn cookie_header(
    state: &AppState,
    name: &str,
    value: &str,
    max_age: u64,
) -> Result<HeaderValue, axum::http::header::InvalidHeaderValue> {
    let secure = if state.settings.is_https() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
}

pub fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The browser's gateway session, with the store key that names it.
pub async fn current_session(
    state: &AppState,
    headers: &HeaderMap,
) -> StoreResult<Option<(String, Session)>> {
    let Some(cookie) = read_cookie(headers, &cookie_name(state, "session")) else {
        return Ok(None);
    };
    let key = session_key(&cookie);
    Ok(state
        .sessions
        .get_json::<Session>(&key)
        .await?
        .map(|s| (key, s)))
}

/// The browser's gateway session, when it still stands: its user exists,
/// is not blocked, and has not voided their sessions since it began (a
/// password reset does). With the store key, the session and the user.
pub async fn live_session(
    state: &AppState,
    headers: &HeaderMap,
) -> StoreResult<Option<(String, Session, User)>> {
    let Some((key, session)) = current_session(state, headers).await? else {
        return Ok(None);
    };
    Ok(state
        .db
        .get_user(&session.user_id)
        .await?
        .filter(|u| u.accepts_auth_time(session.auth_time))
        .map(|u| (key, session, u)))
}

/// The address a request comes from, which throttling counts against: the
/// peer, or the first `X-Forwarded-For` hop when `trust_forwarded_for` says
/// a proxy in front sets it (and strips what clients send).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        if state.settings.trust_forwarded_for {
            let forwarded = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok());
            if let Some(ip) = forwarded {
                return Ok(Self(ip));
            }
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        Ok(Self(peer))
    }
}

/// The double-submit CSRF token of the recovery and account pages (OWASP
/// CSRF Prevention Cheat Sheet): a random value in a `SameSite=Lax`,
/// `HttpOnly` cookie, repeated in a hidden form field. A cross-site form
/// cannot read the cookie, so it cannot send the matching field. These
/// pages have no pending authorization request whose token could serve.
pub struct CsrfCookie {
    pub value: String,
    fresh: bool,
}

/// How long a recovery form may stay open.
const CSRF_COOKIE_SECS: u64 = 2 * 3600;

impl CsrfCookie {
    /// The browser's token, or a new one when it has none.
    pub fn read_or_new(state: &AppState, headers: &HeaderMap) -> Self {
        match read_cookie(headers, &cookie_name(state, "csrf")).filter(|v| v.len() == 43) {
            Some(value) => Self {
                value,
                fresh: false,
            },
            None => Self {
                value: random_token(),
                fresh: true,
            },
        }
    }

    /// `response`, setting the cookie when the token is new.
    pub fn attach(&self, state: &AppState, mut response: Response) -> Response {
        if self.fresh
            && let Ok(v) = cookie_header(
                state,
                &cookie_name(state, "csrf"),
                &self.value,
                CSRF_COOKIE_SECS,
            )
        {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
        response
    }

    /// The token, when the form's field matches the cookie.
    pub fn check(
        state: &AppState,
        headers: &HeaderMap,
        field: Option<&str>,
    ) -> Result<String, AppError> {
        let cookie = read_cookie(headers, &cookie_name(state, "csrf")).unwrap_or_default();
        match field {
            Some(field)
                if cookie.len() == 43 && constant_time_eq(field.as_bytes(), cookie.as_bytes()) =>
            {
                Ok(cookie)
            }
            _ => Err(AppError::bad_request(
                "Form refused",
                "The form was not sent by this page, or its cookie was lost. Open the page again and retry.",
            )),
        }
    }
}
