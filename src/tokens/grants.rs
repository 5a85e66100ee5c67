//! Records behind codes, sessions and refresh-token families, kept under
//! the SHA-256 of the secret that names them, never the secret itself
//! (RFC 6819 §5.1.4.1.3).
//!
//! Key space of the session store (every key also carries the store's
//! configured prefix):
//! - `authz:<id>`        a pending authorization request (10 min)
//! - `code:<hash>`       an authorization code (≤ 60 s, taken atomically)
//! - `code-used:<hash>`  a spent code, to revoke its grant on replay
//! - `session:<hash>`    a gateway session, named by its cookie
//! - `grant:<id>`        cache of a refresh family's grant, or its revocation
//! - `rt:<hash>`         a refresh token issued before families were durable
//!
//! Refresh families are durable in the database ([`crate::store::refresh`]),
//! which decides every rotation and revocation; `grant:<id>` only saves the
//! database a read per request. A miss reads the database and refills the
//! cache, set-if-absent, and a revocation overwrites the entry with a
//! tombstone: whatever the order of a refill and a revocation on two
//! instances, a revoked grant is never cached as live. A refresh token is
//! `<grant id>.<secret>`, so the family is found (and a spent token
//! recognised, however old) from the database alone.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::crypto::{Sealer, b64url, b64url_decode, random_token, sha256, sha256_b64};
use crate::store::refresh::Family;
use crate::store::{Database, SessionStore, SessionStoreExt, StoreError, StoreResult, now};

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

pub fn pending_key(id: &str) -> String {
    format!("authz:{id}")
}

/// What `grant:<id>` holds: the grant, or the mark of its revocation.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Cached {
    Revoked { revoked: bool },
    Live(Grant),
}

/// Stores a new grant: durable first, then cached.
pub async fn create_grant(
    sessions: &dyn SessionStore,
    db: &dyn Database,
    grant_id: &str,
    grant: &Grant,
) -> StoreResult<()> {
    let record = serde_json::to_string(grant).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    db.create_family(&Family {
        grant_id: grant_id.to_string(),
        sid: grant.sid.clone(),
        user_id: grant.user_id.clone(),
        client_id: grant.client_id.clone(),
        record,
        tag_hash: None,
        current_hash: None,
        previous_hash: None,
        rotated_at: None,
        successor: None,
        revoked: false,
        created_at: now(),
        expires_at: grant.expires_at,
    })
    .await?;
    // Set-if-absent: a replayed code may have revoked the grant already.
    let bytes = serde_json::to_vec(&Cached::Live(grant.clone()))
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sessions
        .put_if_absent(&grant_key(grant_id), &bytes, ttl_of(grant.expires_at))
        .await?;
    Ok(())
}

fn ttl_of(expires_at: i64) -> Duration {
    Duration::from_secs((expires_at - now()).max(1) as u64)
}

/// Revokes a grant: its refresh tokens stop working at once, and access
/// tokens that name it are refused at userinfo. The tombstone outlives any
/// cached copy another instance may be refilling.
pub async fn revoke_grant(
    sessions: &dyn SessionStore,
    db: &dyn Database,
    grant_id: &str,
) -> StoreResult<bool> {
    let revoked = db.revoke_family(grant_id).await?;
    mark_revoked(sessions, grant_id).await?;
    Ok(revoked)
}

async fn mark_revoked(sessions: &dyn SessionStore, grant_id: &str) -> StoreResult<()> {
    let ttl = Duration::from_secs(REVOCATION_MEMORY_SECS);
    sessions
        .put_json(
            &grant_key(grant_id),
            &Cached::Revoked { revoked: true },
            ttl,
        )
        .await
}

/// How long a revocation is cached; after that a miss reads the database,
/// which remembers it for good.
const REVOCATION_MEMORY_SECS: u64 = 24 * 3600;

/// Revokes every grant of a gateway session (logout).
pub async fn revoke_session_grants(
    sessions: &dyn SessionStore,
    db: &dyn Database,
    sid: &str,
) -> StoreResult<()> {
    for grant_id in db.revoke_session_families(sid).await? {
        mark_revoked(sessions, &grant_id).await?;
    }
    Ok(())
}

/// The grant, if live: from the cache, else from the database (refilling
/// the cache).
pub async fn load_grant(
    sessions: &dyn SessionStore,
    db: &dyn Database,
    grant_id: &str,
) -> StoreResult<Option<Grant>> {
    match sessions.get_json::<Cached>(&grant_key(grant_id)).await? {
        Some(Cached::Live(grant)) => return Ok(Some(grant)),
        Some(Cached::Revoked { .. }) => return Ok(None),
        None => {}
    }
    let Some(family) = db.family(grant_id).await? else {
        return Ok(None);
    };
    let cached = if family.revoked {
        Cached::Revoked { revoked: true }
    } else {
        Cached::Live(
            serde_json::from_str(&family.record).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        )
    };
    let ttl = match &cached {
        Cached::Live(g) => ttl_of(g.expires_at),
        Cached::Revoked { .. } => Duration::from_secs(REVOCATION_MEMORY_SECS),
    };
    let bytes = serde_json::to_vec(&cached).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sessions
        .put_if_absent(&grant_key(grant_id), &bytes, ttl)
        .await?;
    Ok(match cached {
        Cached::Live(g) => Some(g),
        Cached::Revoked { .. } => None,
    })
}

/// A new refresh token of `grant_id` carrying the family's `tag`: the
/// token and its hash.
pub fn new_refresh_token(grant_id: &str, tag: &str) -> (String, String) {
    let token = format!("{grant_id}.{tag}.{}", random_token());
    let hash = refresh_hash(&token);
    (token, hash)
}

/// The secret every refresh token of a new family carries.
pub fn new_family_tag() -> String {
    random_token()
}

pub fn refresh_hash(token: &str) -> String {
    sha256_b64(token.as_bytes())
}

/// What a refresh token of the form Switchyard issues names: its grant and
/// its family's tag.
pub struct RefreshParts<'a> {
    pub grant_id: &'a str,
    pub tag: &'a str,
}

impl<'a> RefreshParts<'a> {
    /// `None` for any other shape (an upstream's token, say Auth0's `v1.…`
    /// or Cognito's JWE): each of the three parts is a `random_token`, 43
    /// base64url characters.
    pub fn parse(token: &'a str) -> Option<Self> {
        let mut parts = token.split('.');
        let (grant_id, tag, secret) = (parts.next()?, parts.next()?, parts.next()?);
        let b64 = |s: &str| {
            s.len() == 43
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        (parts.next().is_none() && b64(grant_id) && b64(tag) && b64(secret))
            .then_some(Self { grant_id, tag })
    }

    /// Whether the tag is the family's: a token without it names the grant
    /// (as access tokens do) but was never issued.
    pub fn tag_matches(&self, family_tag_hash: Option<&str>) -> bool {
        family_tag_hash.is_some_and(|h| {
            crate::crypto::constant_time_eq(
                sha256_b64(self.tag.as_bytes()).as_bytes(),
                h.as_bytes(),
            )
        })
    }
}

/// Seals the successor of a spent token under a key only the holder of the
/// spent token can derive: the database keeps the token's SHA-256, and the
/// key is SHA-256 of the token in another domain, so it cannot be computed
/// from what is stored.
pub fn seal_successor(spent: &str, grant_id: &str, successor: &str) -> String {
    let sealer = successor_sealer(spent);
    b64url(&sealer.seal(successor.as_bytes(), grant_id.as_bytes()))
}

/// Opens what [`seal_successor`] sealed, with the spent token.
pub fn open_successor(spent: &str, grant_id: &str, sealed: &str) -> Option<String> {
    let bytes = b64url_decode(sealed)?;
    let plain = successor_sealer(spent)
        .open(&bytes, grant_id.as_bytes())
        .ok()?;
    String::from_utf8(plain).ok()
}

fn successor_sealer(spent: &str) -> Sealer {
    let key = sha256(format!("switchyard refresh successor\0{spent}").as_bytes());
    Sealer::new(&key).expect("a SHA-256 digest is an AES-256 key")
}
