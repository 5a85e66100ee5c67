//! Records behind codes, sessions and refresh-token families, kept in the
//! session store under the SHA-256 of the secret that names them, never the
//! secret itself (RFC 6819 §5.1.4.1.3).
//!
//! Key space (every key also carries the store's configured prefix):
//! - `authz:<id>`        a pending authorization request (10 min)
//! - `code:<hash>`       an authorization code (≤ 60 s, taken atomically)
//! - `code-used:<hash>`  a spent code, to revoke its grant on replay
//! - `session:<hash>`    a gateway session, named by its cookie
//! - `grant:<id>`        what a code exchange granted; the refresh family
//! - `rt:<hash>`         a refresh token of a family
//! - `rt-used:<hash>`    the rotation claim of a refresh token

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::crypto::sha256_b64;
use crate::store::{SessionStore, SessionStoreExt, StoreResult};

/// How long a user may take on the login pages.
pub const PENDING_TTL: Duration = Duration::from_secs(600);
/// A spent code is remembered this long so a replay can still be detected.
pub const USED_CODE_TTL: Duration = Duration::from_secs(600);

/// A validated `/authorize` request waiting for the user to log in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingAuthorization {
    pub client_id: String,
    pub redirect_uri: String,
    pub response_mode: ResponseMode,
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub max_age: Option<i64>,
    /// `prompt=login`: the user must authenticate again, here and at the
    /// upstream (OIDC Core §3.1.2.1).
    #[serde(default)]
    pub prompt_login: bool,
    pub login_hint: Option<String>,
    /// Sent in every login form and compared on post (CSRF).
    pub csrf: String,
    /// SHA-256 of the value in the browser's transaction cookie: the
    /// request can only be completed by the browser that started it.
    pub browser_binding: String,
    pub created_at: i64,
}

/// How the authorization response reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseMode {
    /// A 303 to the redirect URI with the response in its query (RFC 6749 §4.1.2).
    Query,
    /// An auto-submitted form (OAuth 2.0 Form Post Response Mode).
    FormPost,
    /// Auth0's `web_message`: a page that posts
    /// `{type: "authorization_response", response: {…}}` to the window
    /// that opened or framed it. Auth0's SPA SDK uses it for silent
    /// authentication in a hidden iframe (`prompt=none`) and for popups.
    WebMessage,
    /// Okta's `okta_post_message`: the same, with the response fields as
    /// the message itself. Okta's SDKs renew tokens with it in a hidden
    /// iframe.
    OktaPostMessage,
}

impl ResponseMode {
    /// The `response_mode` parameter's value; `None` when unknown.
    pub fn from_param(value: Option<&str>) -> Option<Self> {
        match value {
            None | Some("query") => Some(Self::Query),
            Some("form_post") => Some(Self::FormPost),
            Some("web_message") => Some(Self::WebMessage),
            Some("okta_post_message") => Some(Self::OktaPostMessage),
            Some(_) => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::FormPost => "form_post",
            Self::WebMessage => "web_message",
            Self::OktaPostMessage => "okta_post_message",
        }
    }

    /// Delivered by `postMessage` to the client's web origin.
    pub fn posts_message(self) -> bool {
        matches!(self, Self::WebMessage | Self::OktaPostMessage)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizationCode {
    pub client_id: String,
    pub redirect_uri: String,
    pub user_id: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub auth_time: i64,
    pub sid: String,
    pub session_key: String,
    /// The grant the exchange will create, known up front so a replayed
    /// code can revoke it.
    pub grant_id: String,
}

/// A logged-in browser.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub user_id: String,
    pub auth_time: i64,
    /// The public session id (`sid` claim); distinct from the cookie value.
    pub sid: String,
    pub created_at: i64,
}

/// What a code exchange granted: the refresh-token family.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub user_id: String,
    pub client_id: String,
    pub scope: String,
    pub auth_time: i64,
    pub sid: String,
    pub session_key: String,
    /// Absolute end of the family (RFC 9700 §4.14.2).
    pub expires_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshToken {
    pub grant_id: String,
    pub client_id: String,
    pub issued_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshUse {
    pub used_at: i64,
}

pub fn code_key(code: &str) -> String {
    format!("code:{}", sha256_b64(code.as_bytes()))
}

pub fn used_code_key(code: &str) -> String {
    format!("code-used:{}", sha256_b64(code.as_bytes()))
}

pub fn session_key(cookie_value: &str) -> String {
    format!("session:{}", sha256_b64(cookie_value.as_bytes()))
}

pub fn grant_key(grant_id: &str) -> String {
    format!("grant:{grant_id}")
}

pub fn refresh_key(token: &str) -> String {
    format!("rt:{}", sha256_b64(token.as_bytes()))
}

pub fn refresh_used_key(token: &str) -> String {
    format!("rt-used:{}", sha256_b64(token.as_bytes()))
}

pub fn pending_key(id: &str) -> String {
    format!("authz:{id}")
}

/// Revokes a grant: its refresh tokens stop working at once, and access
/// tokens that name it are refused at userinfo.
pub async fn revoke_grant(store: &dyn SessionStore, grant_id: &str) -> StoreResult<bool> {
    store.delete(&grant_key(grant_id)).await
}

pub async fn load_grant(store: &dyn SessionStore, grant_id: &str) -> StoreResult<Option<Grant>> {
    store.get_json(&grant_key(grant_id)).await
}
