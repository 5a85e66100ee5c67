//! The authorization code grant (RFC 6749 §4.1.3, OIDC Core §3.1.3.2).

use axum::response::Response;
use std::time::Duration;

use super::client_auth::Authenticated;
use super::issue::{Issue, active_user, issue, store_grant};
use super::params::Params;
use crate::crypto::{b64url, constant_time_eq, sha256};
use crate::error::OAuthError;
use crate::state::AppState;
use crate::store::{AuditEvent, Client, SessionStoreExt, User, now};
use crate::tokens::grants::{
    AuthorizationCode, Grant, USED_CODE_TTL, code_key, revoke_grant, used_code_key,
};
use crate::upstream::tokens::MappedTokens;

pub async fn exchange(
    state: &AppState,
    auth: &Authenticated,
    params: &Params,
) -> Result<Response, OAuthError> {
    let client = &auth.client;
    let code = params.require("code")?;
    let redirect_uri = params.require("redirect_uri")?;
    let verifier = params.get("code_verifier")?;
    let (record, user) = redeem(state, client, code, redirect_uri, verifier).await?;
    let grant = Grant {
        user_id: user.id.clone(),
        client_id: client.client_id.clone(),
        scope: record.scope.clone(),
        auth_time: record.auth_time,
        sid: record.sid.clone(),
        session_key: record.session_key.clone(),
        expires_at: now()
            + Duration::from_secs(state.settings.tokens.refresh_token_ttl_secs).as_secs() as i64,
    };
    store_grant(state, &record.grant_id, &grant).await?;
    issue(
        state,
        Issue {
            client,
            user: &user,
            grant_id: &record.grant_id,
            grant: &grant,
            scope: &record.scope,
            nonce: record.nonce.as_deref(),
            upstream: upstream_tokens(state, &grant.sid).await?,
        },
    )
    .await
}

/// Spends `code` for `client`: every check of the exchange (one use, the
/// client, the redirect URI, PKCE, the user still active, the browser
/// session still open), without the tokens. The token endpoint issues
/// tokens from it; the dashboard's sign-in, a first-party client served by
/// this same process, only needs to know who signed in.
pub async fn redeem(
    state: &AppState,
    client: &Client,
    code: &str,
    redirect_uri: &str,
    verifier: Option<&str>,
) -> Result<(AuthorizationCode, User), OAuthError> {
    // Taken atomically: of two concurrent exchanges only one sees the code.
    let Some(record) = state
        .sessions
        .take_json::<AuthorizationCode>(&code_key(code))
        .await?
    else {
        // A code that was already spent: RFC 6749 §4.1.2 and RFC 6819
        // §5.1.5.4 say to revoke what it issued.
        if let Some(grant_id) = state
            .sessions
            .get_json::<String>(&used_code_key(code))
            .await?
        {
            revoke_grant(&*state.sessions, &*state.db, &grant_id).await?;
            let event = AuditEvent::new("code_replayed", None, Some(&client.client_id))
                .with_detail(serde_json::json!({"grant_revoked": true}));
            crate::auth::record(state, event).await;
        }
        return Err(OAuthError::invalid_grant(
            "the authorization code is invalid, expired or already used",
        ));
    };
    state
        .sessions
        .put_json(&used_code_key(code), &record.grant_id, USED_CODE_TTL)
        .await?;

    if record.client_id != client.client_id {
        return Err(OAuthError::invalid_grant(
            "the authorization code was issued to another client",
        ));
    }
    // RFC 6749 §4.1.3: identical to the redirect_uri of the request.
    if record.redirect_uri != redirect_uri {
        return Err(OAuthError::invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    check_pkce(record.code_challenge.as_deref(), verifier)?;

    let user = active_user(state, &record.user_id, record.auth_time).await?;
    // The browser session must still exist: a logout between the redirect
    // and the exchange ends the grant before it starts.
    if state.sessions.get(&record.session_key).await?.is_none() {
        return Err(OAuthError::invalid_grant("the session has ended"));
    }
    Ok((record, user))
}

/// RFC 7636 §4.6 with S256, plus the downgrade rule of RFC 9700 §4.8.2: a
/// verifier is refused when the request carried no challenge.
fn check_pkce(challenge: Option<&str>, verifier: Option<&str>) -> Result<(), OAuthError> {
    match (challenge, verifier) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(OAuthError::invalid_grant(
            "code_verifier sent but the authorization request had no code_challenge",
        )),
        (Some(_), None) => Err(OAuthError::invalid_grant("code_verifier is required")),
        (Some(challenge), Some(verifier)) => {
            // RFC 7636 §4.1: 43 to 128 unreserved characters.
            let well_formed = (43..=128).contains(&verifier.len())
                && verifier
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            let computed = b64url(&sha256(verifier.as_bytes()));
            if well_formed && constant_time_eq(computed.as_bytes(), challenge.as_bytes()) {
                Ok(())
            } else {
                Err(OAuthError::invalid_grant(
                    "code_verifier does not match the code_challenge",
                ))
            }
        }
    }
}

/// The upstream tokens of a session that logged in through the upstream;
/// they were stored moments ago at the callback, so no refresh is needed.
async fn upstream_tokens(state: &AppState, sid: &str) -> Result<Option<MappedTokens>, OAuthError> {
    match &state.upstream {
        Some(up) => Ok(up.mapping(&*state.sessions, &*state.db).load(sid).await?),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_accepts_the_rfc_7636_appendix_b_example() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(check_pkce(Some(challenge), Some(verifier)).is_ok());
        assert!(check_pkce(Some(challenge), Some(&verifier.replace('d', "e"))).is_err());
        assert!(check_pkce(None, Some(verifier)).is_err());
        assert!(check_pkce(Some(challenge), None).is_err());
    }
}
