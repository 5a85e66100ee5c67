//! Account recovery links: the tokens behind "Forgot password" and the
//! end-game invitations. The pages are `login::forgot`'s.
//!
//! A link carries a 256-bit random token; the database keeps only its
//! SHA-256 ([`crate::store::recovery`]). The token is minted when the email
//! is *delivered*, by the outbox worker, not when it is asked for: the
//! queued row then holds nothing that could open an account, and a later
//! request, which mints a newer token, invalidates the earlier link
//! (OWASP Forgot Password Cheat Sheet).

use crate::crypto::{random_token, sha256_b64};
use crate::email::{EmailRequest, Message};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::recovery::Purpose;
use crate::store::{User, now};

/// A fresh link for `user_id`: the token is stored (as its hash), and every
/// earlier link of theirs stops working. `authz` is the pending
/// authorization request the reset continues.
pub async fn mint_link(
    state: &AppState,
    user_id: &str,
    purpose: Purpose,
    authz: Option<&str>,
) -> Result<String, AppError> {
    let token = random_token();
    let ttl = match purpose {
        Purpose::Reset => state.settings.recovery.token_ttl_secs,
        Purpose::Invite => state.settings.recovery.invite_ttl_secs,
    };
    let now = now();
    state
        .db
        .issue_recovery_token(
            &token_hash(&token),
            user_id,
            purpose,
            authz,
            now,
            now + ttl as i64,
        )
        .await?;
    Ok(format!(
        "{}/login/reset?token={token}",
        state.settings.issuer_base()
    ))
}

/// How a token is stored.
pub fn token_hash(token: &str) -> String {
    sha256_b64(token.as_bytes())
}

/// Queues the password-reset email for `user` when they may reset: they
/// have an email address and are not blocked. The link is minted when the
/// outbox delivers it ([`mint_link`]). `authz` is the pending
/// authorization request the reset continues. Whether it was queued: the
/// Forgot-password page never tells, an operator is told.
pub async fn queue_reset(
    state: &AppState,
    user: &User,
    authz: Option<&str>,
) -> Result<bool, AppError> {
    let Some(to) = user.profile.email.clone().filter(|_| !user.blocked) else {
        return Ok(false);
    };
    let request = EmailRequest {
        message: Message::PasswordReset,
        to,
        authz: authz.map(str::to_string),
    };
    state.db.enqueue_outbox(&request.queued(&user.id)).await?;
    Ok(true)
}
