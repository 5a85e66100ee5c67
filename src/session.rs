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
/// peer, or, when the peer is one of `trusted_proxies`, the right-most
/// `X-Forwarded-For` hop that is not a trusted proxy. Each proxy appends the
/// address it received the request from, so the hops to the right of the
/// first untrusted one are ours and everything to its left was written by
/// the client (MDN, "X-Forwarded-For: Selecting an IP address").
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        Ok(Self(client_address(
            peer,
            &parts.headers,
            &state.trusted_proxies,
        )))
    }
}

/// See [`ClientIp`]. Several `X-Forwarded-For` lines count as one list, in
/// order (RFC 9110 §5.3); an entry that is not an address ends the walk at
/// the last hop that was one.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
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

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        list.iter()
            .map(|s| crate::config::parse_network(s).unwrap())
            .collect()
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("x-forwarded-for", HeaderValue::from_str(l).unwrap());
        }
        h
    }

    #[test]
    fn trusted_proxies_are_networks_or_addresses() {
        use crate::config::parse_network;
        assert!(parse_network("10.0.0.0/8").is_some());
        assert!(parse_network("fd00::/8").is_some());
        assert_eq!(
            parse_network("192.0.2.1").unwrap().to_string(),
            "192.0.2.1/32"
        );
        for bad in ["10.0.0.0/33", "proxy.internal", "", "10.0.0/8"] {
            assert!(parse_network(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "192.0.2.1"]);
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        // The client wrote 6.6.6.6 itself; the edge proxy appended the
        // address it saw, then an inner proxy its own.
        let h = xff(&["6.6.6.6, 203.0.113.9, 192.0.2.1"]);
        assert_eq!(client_address(proxy, &h, &trusted), ip("203.0.113.9"));
        // Split over two lines, the same list.
        let h = xff(&["6.6.6.6", "203.0.113.9, 10.9.9.9"]);
        assert_eq!(client_address(proxy, &h, &trusted), ip("203.0.113.9"));
        // Every hop trusted: the left-most.
        let h = xff(&["10.0.0.5, 10.0.0.6"]);
        assert_eq!(client_address(proxy, &h, &trusted), ip("10.0.0.5"));
        // Garbage ends the walk at the last address.
        let h = xff(&["unknown, 10.0.0.6"]);
        assert_eq!(client_address(proxy, &h, &trusted), ip("10.0.0.6"));
        // No header: the proxy itself.
        assert_eq!(client_address(proxy, &HeaderMap::new(), &trusted), proxy);
        // From a peer that is not a trusted proxy the header is ignored.
        let h = xff(&["203.0.113.9"]);
        assert_eq!(
            client_address(ip("198.51.100.1"), &h, &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(client_address(proxy, &h, &[]), proxy);
    }
}
