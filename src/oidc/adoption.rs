//! Refresh-token adoption: nobody is logged out by the repointing.
//!
//! An application that held an upstream refresh token before it was pointed
//! at Switchyard presents it here. Switchyard spends it once at the upstream
//! with the application's own client credentials (the application kept its
//! client id and secret), validates what comes back, creates a gateway
//! session with the new upstream tokens mapped to it, and answers with
//! Switchyard's own tokens. The presented token is never stored: only the
//! rotated upstream tokens, sealed in the mapping.
//!
//! Adoption attempts are limited per client, so Switchyard cannot be used to
//! test stolen or guessed tokens against the upstream at volume, and per
//! address within that, so one caller cannot spend a client's budget and
//! lock its real users out of adoption.
//!
//! The adopted grant carries no more than the upstream token did: the
//! scope the upstream's answer names (RFC 6749 §5.1), narrowed to what the
//! application asks for (§6).

use std::net::IpAddr;
use std::time::Duration;

use axum::response::Response;

use super::client_auth::Authenticated;
use super::issue::{Issue, issue, store_grant};
use super::params::Params;
use crate::config::Phase;
use crate::crypto::random_token;
use crate::error::{ErrorCode, OAuthError};
use crate::state::AppState;
use crate::store::stats::{LoginResult, LoginRoute};
use crate::store::{AuditEvent, SessionStoreExt, now};
use crate::throttle::Throttle;
use crate::tokens::grants::{Grant, Session, session_key};
use crate::upstream::tokens::MappedTokens;
use crate::upstream::{Creds, UpstreamError, profile};

pub async fn adopt(
    state: &AppState,
    auth: &Authenticated,
    token: &str,
    params: &Params,
    ip: IpAddr,
) -> Result<Response, OAuthError> {
    let invalid = || OAuthError::invalid_grant("the refresh token is invalid, expired or revoked");
    let Some(up) = &state.upstream else {
        return Err(invalid());
    };
    if state.settings.cutover.phase == Phase::LocalOnly {
        return Err(invalid());
    }
    let client = &auth.client;
    let throttled = || {
        state.metrics.upstream.count("adoption", "throttled");
        OAuthError::new(
            ErrorCode::TemporarilyUnavailable,
            "too many refresh tokens to adopt; retry later",
        )
    };
    // The address first: one over its own budget is refused without
    // touching the client's, so it cannot use that up for everyone else.
    let budgets = [
        (
            format!(
                "adopt:ip:{}:{}",
                client.client_id,
                Throttle::address_bucket(ip)
            ),
            up.client.settings.adoptions_per_minute_per_address,
        ),
        (
            format!("adopt:{}", client.client_id),
            up.client.settings.adoptions_per_minute,
        ),
    ];
    for (key, limit) in budgets {
        let counter = state.sessions.incr(&key, Duration::from_secs(60)).await?;
        if counter.count > limit {
            return Err(throttled());
        }
    }

    let creds = Creds {
        client_id: client.client_id.clone(),
        secret: auth.secret.clone(),
    };
    let tokens = match up.client.refresh(token, &creds).await {
        Ok(t) => t,
        Err(UpstreamError::Rejected { .. }) | Err(UpstreamError::InvalidIdToken(_)) => {
            state.metrics.upstream.count("adoption", "refused");
            return Err(invalid());
        }
        Err(e) => {
            state.metrics.upstream.count("adoption", e.kind());
            tracing::warn!(error = %e, "refresh-token adoption: upstream failed");
            return Err(OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "the identity provider is temporarily unavailable",
            ));
        }
    };
    let claims = match &tokens.claims {
        Some(c) => c.clone(),
        // Without a new ID token, userinfo says who the token belongs to.
        None => up
            .client
            .userinfo(&tokens.access_token)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "refresh-token adoption: upstream userinfo failed");
                OAuthError::new(
                    ErrorCode::TemporarilyUnavailable,
                    "the identity provider is temporarily unavailable",
                )
            })?,
    };
    let profile = profile::from_claims(&up.client.def, &claims, None).ok_or_else(invalid)?;
    let user = state
        .db
        .upsert_upstream_user(&up.client.settings.provider, &profile)
        .await?;
    if user.blocked {
        return Err(OAuthError::invalid_grant("the user is no longer active"));
    }

    // A gateway session without a browser: the application's refresh
    // family is what keeps it alive.
    let now = now();
    let ttl = Duration::from_secs(state.settings.tokens.refresh_token_ttl_secs);
    let session_key = session_key(&random_token());
    let auth_time = claims
        .get("auth_time")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(now);
    let session = Session {
        user_id: user.id.clone(),
        auth_time,
        sid: random_token(),
        created_at: now,
    };
    state.sessions.put_json(&session_key, &session, ttl).await?;
    let mapped = MappedTokens::from_upstream(&tokens, &client.client_id);
    up.mapping(&*state.sessions, &*state.db)
        .save(&session.sid, &mapped, ttl)
        .await?;

    let carried = tokens
        .scope
        .clone()
        .or_else(|| access_token_scope(&tokens.access_token));
    let scope = adopted_scope(params.get("scope")?, carried.as_deref())?;
    let grant_id = random_token();
    let grant = Grant {
        user_id: user.id.clone(),
        client_id: client.client_id.clone(),
        scope: scope.clone(),
        auth_time,
        sid: session.sid.clone(),
        session_key,
        expires_at: now + ttl.as_secs() as i64,
    };
    store_grant(state, &grant_id, &grant).await?;
    let event = AuditEvent::new(
        "refresh_token_adopted",
        Some(&user.id),
        Some(&client.client_id),
    )
    // The route and result, as every login event carries them.
    .with_detail(serde_json::json!({
        "provider": up.client.settings.provider,
        "route": LoginRoute::AdoptedRefresh.as_str(),
        "result": LoginResult::Ok.as_str(),
    }));
    crate::auth::record(state, event).await;
    state.metrics.upstream.count("adoption", "ok");
    issue(
        state,
        Issue {
            client,
            user: &user,
            grant_id: &grant_id,
            grant: &grant,
            scope: &scope,
            nonce: None,
            upstream: Some(mapped),
        },
    )
    .await
}

/// The `scope` claim of an upstream access token that is a JWT. Cognito's
/// token endpoint answers a refresh without `scope`, but its access tokens
/// name theirs in this claim. The token came in the upstream's own answer
/// to Switchyard's back-channel request, so its claims are as trustworthy
/// as that answer's fields; its signature is the resource servers' to check.
fn access_token_scope(access_token: &str) -> Option<String> {
    let payload = access_token.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&crate::crypto::b64url_decode(payload)?).ok()?;
    claims.get("scope")?.as_str().map(str::to_string)
}

/// The scope of an adopted grant: what the upstream's answer says the
/// token carries (RFC 6749 §5.1), narrowed to the scope the application
/// asks for (§6: never more than was granted). A scope beyond the token's
/// is dropped rather than refused, since the upstream token is already
/// spent and refusing would log the user out; the answer's `scope` says
/// what was granted (§5.1). An answer that names its scope nowhere (nor in
/// its access token) grants what the upstream was asked for, and the
/// upstream refresh asked for the original grant, which Switchyard does not
/// know: then only `openid` is granted, the one scope every OpenID Connect
/// token carries.
fn adopted_scope(asked: Option<&str>, granted: Option<&str>) -> Result<String, OAuthError> {
    let granted: Vec<&str> = granted
        .map(|g| g.split(' ').filter(|s| !s.is_empty()).collect())
        .unwrap_or_else(|| vec!["openid"]);
    let Some(asked) = asked else {
        return Ok(granted.join(" "));
    };
    let kept: Vec<&str> = asked
        .split(' ')
        .filter(|s| !s.is_empty() && granted.contains(s))
        .collect();
    if kept.is_empty() {
        return Err(OAuthError::new(
            ErrorCode::InvalidScope,
            "the scope asked for is beyond what the refresh token carries",
        ));
    }
    Ok(kept.join(" "))
}
