//! The refresh token grant (RFC 6749 §6) with rotation and reuse detection
//! (RFC 9700 §4.14.2).
//!
//! Every refresh spends the presented token and returns a new one of the
//! same family. The family is durable in the database
//! ([`crate::store::refresh`]), which is the authority: spending is one
//! conditional UPDATE that stores the successor with the claim, so two
//! uses of one token cannot both win, on one instance or many, and a token
//! is never spent without its successor being stored. The claim is the
//! last thing done before answering: the upstream refresh and the signing
//! come first, so an answer other than the new tokens spends nothing.
//!
//! A token presented again after it was spent revokes its whole family,
//! unless it comes back within the configured grace window: a client that
//! lost the response may retry, and receives the same successor (sealed at
//! rotation under a key derived from the spent token), so a retry never
//! forks the family into parallel chains.
//!
//! A session that logged in through the upstream also refreshes its
//! upstream tokens here when they near expiry, which is how an upstream
//! revocation ends the gateway session. A refresh token Switchyard never
//! issued may be one the upstream issued before the application was
//! repointed: see [`super::adoption`].

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;

use super::adoption;
use super::client_auth::Authenticated;
use super::issue::{Issue, Signed, active_user, has_scope, sign, token_response};
use super::params::Params;
use crate::crypto::sha256_b64;
use crate::error::{ErrorCode, OAuthError};
use crate::state::AppState;
use crate::store::refresh::{Family, Rotation};
use crate::store::{AuditEvent, SessionStoreExt, now};
use crate::tokens::grants::{
    Grant, RefreshParts, RefreshToken, load_grant, new_family_tag, new_refresh_token,
    open_successor, refresh_hash, refresh_key, revoke_grant, seal_successor,
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
    let (grant_id, tag) = match RefreshParts::parse(token) {
        Some(parts) => (parts.grant_id.to_string(), parts.tag.to_string()),
        None => match legacy_family(state, token).await? {
            Some(found) => found,
            None => return adoption::adopt(state, auth, token, params, ip).await,
        },
    };
    let grant = load_grant(&*state.sessions, &*state.db, &grant_id)
        .await?
        .ok_or_else(invalid)?;
    // RFC 6749 §6: the token must have been issued to this client.
    if grant.client_id != client.client_id {
        return Err(invalid());
    }
    let now = now();
    if grant.expires_at <= now {
        return Err(invalid());
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
    // A recent copy of the user is enough for the claims: whether they may
    // still have tokens is decided by the rotation, against their row. A
    // copy that says no is read again, so an unblock applies at once too.
    let user = match state.recent.user(&*state.db, &grant.user_id).await? {
        Some(u) if u.accepts_auth_time(grant.auth_time) => u,
        _ => {
            state.recent.users.forget(&grant.user_id);
            Arc::new(active_user(state, &grant.user_id, grant.auth_time).await?)
        }
    };
    let mut i = Issue {
        client,
        user: &user,
        grant_id: &grant_id,
        grant: &grant,
        scope: &scope,
        nonce: None,
        upstream: None,
    };
    // Switchyard's own JWTs do not depend on the upstream's answer unless
    // the client receives the upstream's access token, so they are signed
    // while the upstream refresh is in flight. Only the signing happens
    // early: the rotation is committed after the upstream has answered yes.
    let signed = if client.token_mode == crate::store::TokenMode::Upstream {
        i.upstream = fresh_upstream_tokens(state, auth, &grant_id, &grant).await?;
        sign(state, &i).await?
    } else {
        let (upstream, signed) = tokio::try_join!(
            fresh_upstream_tokens(state, auth, &grant_id, &grant),
            sign(state, &i)
        )?;
        i.upstream = upstream;
        signed
    };
    rotate(state, &i, signed, token, &tag, now).await
}

/// Spends `token` and answers with its successor; or, for a token spent
/// already, the successor it got within the grace window, else the
/// family revoked.
async fn rotate(
    state: &AppState,
    i: &Issue<'_>,
    signed: Signed,
    token: &str,
    tag: &str,
    now: i64,
) -> Result<Response, OAuthError> {
    let invalid = || OAuthError::invalid_grant("the refresh token is invalid, expired or revoked");
    let (next, next_hash) = new_refresh_token(i.grant_id, tag);
    let spent_hash = refresh_hash(token);
    let sealed = seal_successor(token, i.grant_id, &next);
    let rotation = Rotation {
        grant_id: i.grant_id.to_string(),
        spent_hash: spent_hash.clone(),
        new_hash: next_hash,
        sealed_successor: sealed,
        now,
        auth_time: i.grant.auth_time,
    };
    if state.rotations.rotate(rotation).await? {
        return Ok(token_response(i, signed, Some(next)));
    }
    // Not rotated: the user may have been blocked, deleted or reset since
    // the copy the tokens were signed from; that refuses the grant but is no
    // sign of a stolen token, so the family is left alone.
    active_user(state, &i.grant.user_id, i.grant.auth_time).await?;
    let family = state.db.family(i.grant_id).await?.ok_or_else(invalid)?;
    if family.revoked || family.expires_at <= now {
        return Err(invalid());
    }
    // A token that names the grant without the family's tag was made up
    // from an access token's `gid`: refused, but no proof of theft. One
    // from before families were durable was found in the session store
    // under its hash, so it was issued.
    let genuine = RefreshParts::parse(token)
        .is_none_or(|parts| parts.tag_matches(family.tag_hash.as_deref()));
    if !genuine {
        return Err(invalid());
    }
    let grace = state.settings.tokens.refresh_reuse_grace_secs as i64;
    let just_spent = family.previous_hash.as_deref() == Some(spent_hash.as_str())
        && family.rotated_at.is_some_and(|at| now - at < grace);
    if just_spent
        && let Some(successor) = family
            .successor
            .as_deref()
            .and_then(|s| open_successor(token, i.grant_id, s))
    {
        // The client lost our answer and retries: the same successor, so
        // the family stays one chain.
        return Ok(token_response(i, signed, Some(successor)));
    }
    revoke_grant(&*state.sessions, &*state.db, i.grant_id).await?;
    let event = AuditEvent::new(
        "refresh_token_reused",
        Some(&i.grant.user_id),
        Some(&i.client.client_id),
    )
    .with_detail(serde_json::json!({"family_revoked": true}));
    crate::auth::record(state, event).await;
    Err(invalid())
}

/// A refresh token issued before families were durable lives only in the
/// session store (`rt:<hash>`, its grant under `grant:<id>`): its family is
/// written to the database with it as the live token, so the rotation that
/// follows is the durable one. `None` when the session store does not know
/// the token.
async fn legacy_family(
    state: &AppState,
    token: &str,
) -> Result<Option<(String, String)>, OAuthError> {
    let Some(record) = state
        .sessions
        .get_json::<RefreshToken>(&refresh_key(token))
        .await?
    else {
        return Ok(None);
    };
    // The family's successors carry a tag like any other; a legacy token
    // presented again after its family was written keeps the old ways:
    // the rotation fails and a stale copy is refused.
    let tag = new_family_tag();
    if state.db.family(&record.grant_id).await?.is_none()
        && let Some(grant) = load_grant(&*state.sessions, &*state.db, &record.grant_id).await?
    {
        state
            .db
            .create_family(&Family {
                grant_id: record.grant_id.clone(),
                sid: grant.sid.clone(),
                user_id: grant.user_id.clone(),
                client_id: grant.client_id.clone(),
                record: serde_json::to_string(&grant).map_err(OAuthError::unexpected)?,
                tag_hash: Some(sha256_b64(tag.as_bytes())),
                current_hash: Some(refresh_hash(token)),
                previous_hash: None,
                rotated_at: None,
                successor: None,
                revoked: false,
                created_at: now(),
                expires_at: grant.expires_at,
            })
            .await?;
    }
    Ok(Some((record.grant_id, tag)))
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
    let mapping = up.mapping(&*state.sessions, &*state.db);
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
            state.metrics.upstream.count("refresh", "ended");
            revoke_grant(&*state.sessions, &*state.db, grant_id).await?;
            Err(OAuthError::invalid_grant("the upstream session has ended"))
        }
        Err(FreshError::Upstream(e)) => {
            state.metrics.upstream.count("refresh", e.kind());
            tracing::warn!(error = %e, "upstream refresh failed");
            Err(OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "the identity provider is temporarily unavailable",
            ))
        }
        Err(FreshError::Store(e)) => Err(e.into()),
    }
}
