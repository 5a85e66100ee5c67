//! The refresh token grant (RFC 6749 §6) with rotation and reuse detection
//! (RFC 9700 §4.14.2).
//!
//! Every refresh spends the presented token and returns a new one of the
//! same family. Spending is a set-if-absent claim in the session store, so
//! two concurrent uses of one token cannot both win, on one instance or
//! many. A token presented again after it was spent revokes its whole
//! family, unless it comes back within the configured grace window: a
//! client that lost the response to a network error may retry once.
//!
//! A session that logged in through the upstream also refreshes its
//! upstream tokens here when they near expiry, which is how an upstream
//! revocation ends the gateway session. A refresh token Switchyard never
//! issued may be one the upstream issued before the application was
//! repointed: see [`super::adoption`].

use std::time::Duration;

use axum::response::Response;

use super::adoption;
use super::client_auth::Authenticated;
use super::issue::{Issue, active_user, has_scope, respond, sign};
use super::params::Params;
use crate::error::{ErrorCode, OAuthError};
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::store::{AuditEvent, SessionStoreExt, now};
use crate::tokens::grants::{
    Grant, RefreshToken, RefreshUse, load_grant, refresh_key, refresh_used_key, revoke_grant,
};
use crate::upstream::tokens::{FreshError, MappedTokens};

pub async fn refresh(
    state: &AppState,
    auth: &Authenticated,
    params: &Params,
    ip: std::net::IpAddr,
) -> Result<Response, OAuthError> {
    let client = &auth.client;
    let token = params.require("refresh_token")?;
    let invalid = || OAuthError::invalid_grant("the refresh token is invalid, expired or revoked");
    let Some(record) = state
        .sessions
        .get_json::<RefreshToken>(&refresh_key(token))
        .await?
    else {
        return adoption::adopt(state, auth, token, params, ip).await;
    };
    // RFC 6749 §6: the token must have been issued to this client.
    if record.client_id != client.client_id {
        return Err(invalid());
    }
    let grant = load_grant(&*state.sessions, &record.grant_id)
        .await?
        .ok_or_else(invalid)?;
    let now = now();
    if grant.expires_at <= now {
        return Err(invalid());
    }

    let claim = serde_json::to_vec(&RefreshUse { used_at: now }).map_err(OAuthError::unexpected)?;
    let ttl = Duration::from_secs((grant.expires_at - now).max(1) as u64);
    if !state
        .sessions
        .put_if_absent(&refresh_used_key(token), &claim, ttl)
        .await?
    {
        let used: Option<RefreshUse> = state.sessions.get_json(&refresh_used_key(token)).await?;
        let grace = state.settings.tokens.refresh_reuse_grace_secs as i64;
        let within_grace = used.is_some_and(|u| now - u.used_at < grace);
        if !within_grace {
            revoke_grant(&*state.sessions, &record.grant_id).await?;
            let event = AuditEvent::new(
                "refresh_token_reused",
                Some(&grant.user_id),
                Some(&client.client_id),
            )
            .with_detail(serde_json::json!({"family_revoked": true}));
            crate::auth::record(state, event).await;
            return Err(invalid());
        }
    }

    // The family lives as long as the browser session it came from.
    if state.sessions.get(&grant.session_key).await?.is_none() {
        revoke_grant(&*state.sessions, &record.grant_id).await?;
        return Err(OAuthError::invalid_grant("the session has ended"));
    }

    // RFC 6749 §6: a narrower scope may be asked for, never a wider one.
    let scope = match params.get("scope")? {
        Some(requested) => {
            let requested: Vec<&str> = requested.split(' ').filter(|s| !s.is_empty()).collect();
            if !requested.iter().all(|s| has_scope(&grant.scope, s)) {
                return Err(OAuthError::new(
                    ErrorCode::InvalidScope,
                    "the scope exceeds what was granted",
                ));
            }
            requested.join(" ")
        }
        None => grant.scope.clone(),
    };
    let user = active_user(state, &grant.user_id, grant.auth_time).await?;
    // Switchyard's own JWTs do not depend on the upstream's answer unless
    // the client receives the upstream's access token, so they are signed
    // on a blocking thread while the upstream refresh is in flight. Only the
    // signing happens early: the new refresh token is stored (the rotation
    // committed) after the upstream has answered yes.
    let presigned = (state.upstream.is_some()
        && client.token_mode != crate::store::TokenMode::Upstream)
        .then(|| {
            let (state, client, user, grant, grant_id, scope) = (
                state.clone(),
                client.clone(),
                user.clone(),
                grant.clone(),
                record.grant_id.clone(),
                scope.clone(),
            );
            tokio::task::spawn_blocking(move || {
                sign(
                    &state,
                    &Issue {
                        client: &client,
                        user: &user,
                        grant_id: &grant_id,
                        grant: &grant,
                        scope: &scope,
                        nonce: None,
                        upstream: None,
                    },
                )
            })
        });
    let upstream = fresh_upstream_tokens(state, auth, &record.grant_id, &grant).await?;
    let i = Issue {
        client,
        user: &user,
        grant_id: &record.grant_id,
        grant: &grant,
        scope: &scope,
        nonce: None,
        upstream,
    };
    let signed = match presigned {
        Some(signing) => signing.await.map_err(OAuthError::unexpected)??,
        None => sign(state, &i)?,
    };
    respond(state, &i, signed).await
}

/// The session's upstream tokens, refreshed at the upstream when they are
/// about to expire (one upstream call however many refreshes race for it).
/// An upstream that refuses the refresh has ended the session: the grant
/// ends too.
async fn fresh_upstream_tokens(
    state: &AppState,
    auth: &Authenticated,
    grant_id: &str,
    grant: &Grant,
) -> Result<Option<MappedTokens>, OAuthError> {
    let Some(up) = &state.upstream else {
        return Ok(None);
    };
    let mapping = up.mapping(&*state.sessions);
    let Some(current) = mapping.load(&grant.sid).await? else {
        return Ok(None);
    };
    let creds = up.creds_for(&current.client_id, auth.secret.as_deref());
    let margin = Duration::from_secs(up.client.settings.refresh_margin_secs);
    let ttl = Duration::from_secs((grant.expires_at - now()).max(1) as u64);
    match mapping
        .fresh(&up.client, &grant.sid, &creds, margin, ttl)
        .await
    {
        Ok(tokens) => Ok(Some(tokens)),
        Err(FreshError::Ended) => {
            Metrics::count(&state.metrics.upstream, "refresh", "ended");
            revoke_grant(&*state.sessions, grant_id).await?;
            Err(OAuthError::invalid_grant("the upstream session has ended"))
        }
        Err(FreshError::Upstream(e)) => {
            Metrics::count(&state.metrics.upstream, "refresh", e.kind());
            tracing::warn!(error = %e, "upstream refresh failed");
            Err(OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "the identity provider is temporarily unavailable",
            ))
        }
        Err(FreshError::Store(e)) => Err(e.into()),
    }
}
