//! The resource owner password grant (RFC 6749 §4.3), and Auth0's
//! `password-realm` variant, for legacy applications only.
//!
//! Refused by default (RFC 9700 §2.4): a client must list `password` among
//! its grant types. The same routing, the same lazy migration and the same
//! throttling as the login page apply, throttling first, so the grant can
//! never be used to brute-force Switchyard or the upstream.

use std::net::IpAddr;
use std::time::Duration;

use axum::response::Response;

use super::client_auth::Authenticated;
use super::issue::{Issue, issue, store_grant};
use super::params::Params;
use crate::auth::{Attempt, Outcome, Via};
use crate::crypto::random_token;
use crate::error::{ErrorCode, OAuthError};
use crate::state::AppState;
use crate::store::{SessionStoreExt, now};
use crate::tokens::grants::{Grant, Session, session_key};

/// Auth0's grant type for the password grant against a named connection.
pub const AUTH0_PASSWORD_REALM: &str = "http://auth0.com/oauth/grant-type/password-realm";

pub async fn password(
    state: &AppState,
    auth: &Authenticated,
    params: &Params,
    ip: IpAddr,
) -> Result<Response, OAuthError> {
    let client = &auth.client;
    let username = params.require("username")?.trim();
    let password = params.require("password")?;
    let attempt = Attempt {
        identifier: username,
        password,
        client_id: &client.client_id,
        ip,
        via: Via::PasswordGrant,
        routed: None,
    };
    let outcome = crate::auth::authenticate(state, attempt)
        .await
        .map_err(|_| OAuthError::unexpected("authentication failed"))?;
    let user = match outcome {
        Outcome::Authenticated(user, _) => user,
        // A reset is told on the login page only: here it is one more
        // failure, like every other.
        Outcome::Failed => {
            return Err(OAuthError::invalid_grant("wrong username or password"));
        }
        // RFC 6749 §5.2: the credentials cannot be used now.
        Outcome::Locked => {
            return Err(OAuthError::invalid_grant(
                "the account is temporarily locked after too many failed attempts",
            ));
        }
        Outcome::Invalid => {
            return Err(OAuthError::invalid_request(
                "username or password is empty or too long",
            ));
        }
        Outcome::Throttled { retry_after } => {
            return Err(OAuthError::new(
                ErrorCode::InvalidGrant,
                format!("too many attempts; retry in {} s", retry_after.as_secs()),
            ));
        }
        // A grant without a browser cannot take the redirect track.
        Outcome::NeedsRedirect(_) => {
            return Err(OAuthError::new(
                ErrorCode::AccessDenied,
                "the user must sign in interactively",
            ));
        }
        Outcome::Unavailable => {
            return Err(OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "the identity provider is temporarily unavailable",
            ));
        }
    };
    // Both tracks return only an unblocked user, read during this request:
    // no need to read it again.

    // A browserless session: the client's refresh family keeps it alive.
    let now = now();
    let ttl = Duration::from_secs(state.settings.tokens.refresh_token_ttl_secs);
    let key = session_key(&random_token());
    let session = Session {
        user_id: user.id.clone(),
        auth_time: now,
        sid: random_token(),
        created_at: now,
    };
    state.sessions.put_json(&key, &session, ttl).await?;
    let scope = params
        .get("scope")?
        .unwrap_or("openid profile email")
        .to_string();
    let grant_id = random_token();
    let grant = Grant {
        user_id: user.id.clone(),
        client_id: client.client_id.clone(),
        scope: scope.clone(),
        auth_time: now,
        sid: session.sid.clone(),
        session_key: key,
        expires_at: now + ttl.as_secs() as i64,
    };
    store_grant(state, &grant_id, &grant).await?;
    issue(
        state,
        Issue {
            client,
            user: &user,
            grant_id: &grant_id,
            grant: &grant,
            scope: &scope,
            nonce: None,
            upstream: None,
        },
    )
    .await
}
