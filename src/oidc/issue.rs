//! The token response every grant ends with (RFC 6749 §5.1, OIDC Core
//! §3.1.3.3): the access token, the ID token when `openid` was granted, and
//! the next refresh token of the grant's family. Below the grant handlers,
//! which all end here, and below the token endpoint that dispatches to them.

use std::sync::Arc;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::userinfo::profile_claims;
use crate::crypto::{random_token, sha256_b64};
use crate::error::OAuthError;
use crate::state::AppState;
use crate::store::{Client, TokenMode, User, now};
use crate::tokens::grants::{Grant, create_grant, new_family_tag, new_refresh_token};
use crate::tokens::jwt::{self, ACCESS_TOKEN_TYP, AccessClaims, IdClaims};
use crate::tokens::keys::{Alg, SigningKey};
use crate::upstream::profile::carried_claims;
use crate::upstream::tokens::MappedTokens;

#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
}

/// What the grant handlers pass to [`issue`].
pub struct Issue<'a> {
    pub client: &'a Client,
    pub user: &'a User,
    pub grant_id: &'a str,
    pub grant: &'a Grant,
    /// The scope of this response: the grant's, or a narrower one asked
    /// for in a refresh (RFC 6749 §6).
    pub scope: &'a str,
    /// OIDC Core §3.1.3.6: echoed in the ID token of a code exchange.
    pub nonce: Option<&'a str>,
    /// The session's upstream tokens, already fresh, when it has any.
    pub upstream: Option<MappedTokens>,
}

pub fn has_scope(scope: &str, wanted: &str) -> bool {
    scope.split(' ').any(|s| s == wanted)
}

/// The JWTs of a token response, signed ahead of the rest of it.
pub struct Signed {
    access_token: String,
    /// Seconds.
    access_ttl: i64,
    id_token: Option<String>,
}

/// The JWTs of a response with their claims made and not yet signed: what
/// crosses to the signing pool.
struct Unsigned {
    key: Arc<SigningKey>,
    access: AccessToken,
    access_ttl: i64,
    /// `at_hash` is filled in once the access token is signed.
    id: Option<IdClaims>,
}

enum AccessToken {
    Jwt(Box<AccessClaims>),
    /// `token_mode = upstream`: the upstream's own.
    Upstream(String),
}

impl Unsigned {
    fn sign(self) -> Result<Signed, OAuthError> {
        let access_token = match self.access {
            AccessToken::Jwt(claims) => {
                jwt::sign(&self.key, ACCESS_TOKEN_TYP, &claims).map_err(OAuthError::unexpected)?
            }
            AccessToken::Upstream(token) => token,
        };
        let id_token = match self.id {
            Some(mut claims) => {
                claims.at_hash = Some(jwt::at_hash(self.key.alg, &access_token));
                Some(jwt::sign(&self.key, "JWT", &claims).map_err(OAuthError::unexpected)?)
            }
            None => None,
        };
        Ok(Signed {
            access_token,
            access_ttl: self.access_ttl,
            id_token,
        })
    }
}

/// Signs the access token and, when `openid` was granted, the ID token of
/// `i`. RS256 signatures (hundreds of microseconds each) run on the
/// signing pool so they never hold a request thread; ES256 and EdDSA ones
/// (tens) cost less than the hand-over and run here.
pub async fn sign(state: &AppState, i: &Issue<'_>) -> Result<Signed, OAuthError> {
    let unsigned = claims(state, i)?;
    if unsigned.key.alg == Alg::RS256 {
        state
            .signing
            .run(move || unsigned.sign())
            .await
            .map_err(OAuthError::unexpected)?
    } else {
        unsigned.sign()
    }
}

/// The claims of `i`'s tokens, and the key that signs them.
fn claims(state: &AppState, i: &Issue<'_>) -> Result<Unsigned, OAuthError> {
    let now = now();
    let settings = &state.settings;
    let key = state
        .keys
        .current()
        .active(state.signing_alg)
        .cloned()
        .ok_or_else(|| OAuthError::unexpected("no active signing key"))?;

    // Claims the application used to get from the upstream, spelled as the
    // upstream spelled them.
    let carried = match &state.upstream {
        Some(up) if i.user.upstream.is_some() => {
            carried_claims(&up.client.def, &up.client.settings, i.user)
        }
        _ => serde_json::Map::new(),
    };
    // token_mode = upstream: the application's APIs still trust the old
    // provider, so it gets the upstream's access token.
    let (access, access_ttl) = match (&i.upstream, i.client.token_mode) {
        (Some(up), TokenMode::Upstream) => (
            AccessToken::Upstream(up.access_token.clone()),
            (up.expires_at - now).max(0),
        ),
        _ => {
            let ttl = settings.tokens.access_token_ttl_secs as i64;
            let claims = AccessClaims {
                iss: settings.issuer.clone(),
                sub: i.user.id.clone(),
                aud: settings.access_token_audience(),
                exp: now + ttl,
                iat: now,
                jti: random_token(),
                client_id: i.client.client_id.clone(),
                scope: i.scope.to_string(),
                auth_time: Some(i.grant.auth_time),
                sid: Some(i.grant.sid.clone()),
                gid: i.grant_id.to_string(),
                extra: carried.clone(),
            };
            (AccessToken::Jwt(Box::new(claims)), ttl)
        }
    };

    let id = has_scope(i.scope, "openid").then(|| IdClaims {
        iss: settings.issuer.clone(),
        sub: i.user.id.clone(),
        aud: i.client.client_id.clone(),
        exp: now + settings.tokens.id_token_ttl_secs as i64,
        iat: now,
        auth_time: i.grant.auth_time,
        nonce: i.nonce.map(Into::into),
        at_hash: None,
        sid: Some(i.grant.sid.clone()),
        profile: {
            let mut profile = profile_claims(i.user, i.scope);
            profile.extend(carried);
            profile
        },
    });
    Ok(Unsigned {
        key,
        access,
        access_ttl,
        id,
    })
}

/// Mints the access token, the ID token when `openid` was granted, and a
/// new refresh token of the grant's family when the client may refresh.
pub async fn issue(state: &AppState, i: Issue<'_>) -> Result<Response, OAuthError> {
    let signed = sign(state, &i).await?;
    respond(state, &i, signed).await
}

/// The token response of `i` with the JWTs [`sign`] made for it, for a
/// grant just created: its family's first refresh token, when the client
/// may refresh.
pub async fn respond(
    state: &AppState,
    i: &Issue<'_>,
    signed: Signed,
) -> Result<Response, OAuthError> {
    let refresh_token = if may_refresh(i) {
        let tag = new_family_tag();
        let (token, hash) = new_refresh_token(i.grant_id, &tag);
        // Refused only when the family was revoked meanwhile (its code
        // replayed): this exchange did win the code, so it is answered,
        // with tokens that are already dead (RFC 6749 §4.1.2).
        state
            .db
            .set_first_token(i.grant_id, &hash, &sha256_b64(tag.as_bytes()))
            .await?;
        Some(token)
    } else {
        None
    };
    Ok(token_response(i, signed, refresh_token))
}

/// Whether the response to `i` carries a refresh token.
pub fn may_refresh(i: &Issue<'_>) -> bool {
    i.client.allows_grant(crate::store::GrantType::RefreshToken) && i.grant.expires_at > now()
}

/// The JSON token response (RFC 6749 §5.1), uncacheable.
pub fn token_response(i: &Issue<'_>, signed: Signed, refresh_token: Option<String>) -> Response {
    let Signed {
        access_token,
        access_ttl,
        id_token,
    } = signed;
    let body = TokenResponse {
        access_token: &access_token,
        token_type: "Bearer",
        expires_in: access_ttl as u64,
        scope: i.scope,
        id_token: id_token.as_deref(),
        refresh_token: refresh_token.as_deref(),
    };
    // Written once into a buffer of the right size: the tokens are most of
    // it, and none of their characters needs escaping.
    let size = 128
        + access_token.len()
        + i.scope.len()
        + id_token.as_ref().map_or(0, String::len)
        + refresh_token.as_ref().map_or(0, String::len);
    let mut json = Vec::with_capacity(size);
    if let Err(e) = serde_json::to_writer(&mut json, &body) {
        return OAuthError::unexpected(e).into_response();
    }
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response();
    // RFC 6749 §5.1.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// Stores the grant created by a code exchange, a password grant or an
/// adoption: durable in the database, cached in the session store.
pub async fn store_grant(
    state: &AppState,
    grant_id: &str,
    grant: &Grant,
) -> Result<(), OAuthError> {
    create_grant(&*state.sessions, &*state.db, grant_id, grant).await?;
    Ok(())
}

/// The user a grant is for, if they may still receive tokens: not blocked,
/// and not having voided the login at `auth_time` since (a password reset
/// revokes every earlier session and refresh token).
pub async fn active_user(
    state: &AppState,
    user_id: &str,
    auth_time: i64,
) -> Result<User, OAuthError> {
    match state.db.get_user(user_id).await? {
        Some(u) if u.accepts_auth_time(auth_time) => Ok(u),
        _ => Err(OAuthError::invalid_grant("the user is no longer active")),
    }
}
