//! An Auth0-compatible Management API on Switchyard (`/api/v2/`), so that
//! an application's back end keeps working when its domain is repointed:
//! a machine client gets a token with the client credentials grant and
//! `audience=https://{domain}/api/v2/` (Auth0 Authentication API, "Client
//! Credentials Flow"), then reads and writes users with the requests,
//! answers and error bodies of Auth0's Management API v2 ("Users"
//! endpoints).
//!
//! While the upstream is the primary (phases `passthrough` and `lazy`, and
//! users pinned to it), the users adapter ([`adapter`]) reads a user who
//! is not local yet from the upstream's Management API and keeps them as a
//! pending user (read-through), and writes go to the upstream first
//! (`[upstream.management] api_writes = "blocking"`) or locally first with
//! the upstream's write queued (`"outbox"`). From `local_first` on, local
//! is the primary and the upstream a non-blocking secondary; in
//! `local_only` nothing calls the upstream.
//!
//! - [`access`]: the bearer token (audience, scopes) and each client's
//!   token bucket (`x-ratelimit-*` headers, 429 with `Retry-After`).
//! - [`error`]: Auth0's error body, `{statusCode, error, message, errorCode}`.
//! - [`search`]: the `q`, `sort`, paging and `fields` parameters.
//! - [`user_json`]: a user as Auth0 serialises one.
//! - [`users`]: the endpoints.

pub mod access;
pub mod adapter;
pub mod error;
pub mod search;
pub mod user_json;
pub mod users;

use axum::Router;

use crate::state::AppState;

/// Where the API is served.
pub const PREFIX: &str = "/api/v2";

/// The scopes of the users endpoints, as Auth0 names them (Management API
/// v2, "Scopes"). A client is granted them with `clients add --api
/// https://{domain}/api/v2/ --scope read:users …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    ReadUsers,
    UpdateUsers,
    CreateUsers,
    DeleteUsers,
    CreateUserTickets,
}

impl Scope {
    pub const ALL: &'static [Scope] = &[
        Scope::ReadUsers,
        Scope::UpdateUsers,
        Scope::CreateUsers,
        Scope::DeleteUsers,
        Scope::CreateUserTickets,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ReadUsers => "read:users",
            Scope::UpdateUsers => "update:users",
            Scope::CreateUsers => "create:users",
            Scope::DeleteUsers => "delete:users",
            Scope::CreateUserTickets => "create:user_tickets",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == s)
    }
}

/// The API's identifier, the `aud` of its tokens: `https://{domain}/api/v2/`
/// with the issuer's host (and port), as Auth0's SDKs build it from the
/// domain they are given. Always `https`, as at Auth0, whatever the
/// issuer's scheme (a development issuer on plain http keeps it).
pub fn audience(issuer: &str) -> String {
    let host = url::Url::parse(issuer)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_string();
            Some(match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        })
        .unwrap_or_default();
    format!("https://{host}/api/v2/")
}

/// Whether `asked` names this API: its identifier, or the issuer's own
/// `{issuer}api/v2/` (the same URL when the issuer is `https://{domain}/`).
pub fn names_this_api(issuer: &str, asked: &str) -> bool {
    asked == audience(issuer) || asked == format!("{}/api/v2/", issuer.trim_end_matches('/'))
}

pub fn router(state: &AppState) -> Router<AppState> {
    users::router(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identifier_is_the_https_url_of_the_issuer_host() {
        assert_eq!(
            audience("https://login.example.com/"),
            "https://login.example.com/api/v2/"
        );
        assert_eq!(
            audience("http://127.0.0.1:8080/"),
            "https://127.0.0.1:8080/api/v2/"
        );
        assert!(names_this_api(
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080/api/v2/"
        ));
        assert!(names_this_api(
            "http://127.0.0.1:8080",
            "https://127.0.0.1:8080/api/v2/"
        ));
        assert!(!names_this_api(
            "https://a.example/",
            "https://b.example/api/v2/"
        ));
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(*s));
        }
    }
}
