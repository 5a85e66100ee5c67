//! The refresh token grant (RFC 6749 §6) with rotation and reuse detection
//! (RFC 9700 §4.14.2).
//!
//! Every refresh spends the presented token and returns a new one of the
//! same family. Spending is a set-if-absent claim in the session store, so
//! two concurrent uses of one token cannot both win, on one instance or
//! many. A token presented again after it was spent revokes its whole
//! family, unless it comes back within the configured grace window: a
//! client that lost the response to a network error may retry once.

use std::time::Duration;

use axum::response::Response;

use super::params::Params;
use super::token::{Issue, active_user, has_scope, issue};
use crate::error::{ErrorCode, OAuthError};
use crate::state::AppState;
use crate::store::{AuditEvent, Client, SessionStoreExt, now};
use crate::tokens::grants::{
    RefreshToken, RefreshUse, load_grant, refresh_key, refresh_used_key, revoke_grant,
};

pub async fn refresh(
    state: &AppState,
    client: &Client,
    params: &Params,
) -> Result<Response, OAuthError> {
    let token = params.require("refresh_token")?;
    let invalid = || OAuthError::invalid_grant("the refresh token is invalid, expired or revoked");
    let record: RefreshToken = state
        .sessions
        .get_json(&refresh_key(token))
        .await?
        .ok_or_else(invalid)?;
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
            let event = AuditEvent {
                at: now,
                kind: "refresh_token_reused".into(),
                user_id: Some(grant.user_id.clone()),
                client_id: Some(client.client_id.clone()),
                ip: None,
                detail: serde_json::json!({"family_revoked": true}),
            };
            if let Err(e) = state.db.record_event(&event).await {
                tracing::warn!(error = %e, "audit event not recorded");
            }
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
    let user = active_user(state, &grant.user_id).await?;
    issue(
        state,
        Issue {
            client,
            user: &user,
            grant_id: &record.grant_id,
            grant: &grant,
            scope: &scope,
            nonce: None,
        },
    )
    .await
}
