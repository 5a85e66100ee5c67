//! The migration step of a login on the upstream-password track.
//!
//! The password is verified once at the upstream; on success the profile
//! (ID token, then userinfo) is mapped with the provider definition, the
//! password is hashed with argon2id, and user, credential, identity and an
//! audit event are written in one transaction. From then on the user logs
//! in locally and the upstream is never called for them again.
//! Legacy passwords that today's policy would refuse still migrate: the user
//! has just proved they know it.

use crate::error::AppError;
use crate::password::ARGON2ID;
use crate::state::AppState;
use crate::store::{Migration, User};
use crate::upstream::client::PasswordRefusal;
use crate::upstream::profile;

pub enum Outcome {
    Migrated(Box<User>),
    /// Wrong password or unknown user.
    Failed,
    Blocked,
    /// Locked for now by the upstream's brute-force protection.
    Locked,
    /// The upstream cannot verify this user by password: redirect track.
    Redirect(String),
}

pub async fn verify_and_migrate(
    state: &AppState,
    username: &str,
    password: &str,
    client_ip: std::net::IpAddr,
) -> Result<Outcome, AppError> {
    let Some(up) = &state.upstream else {
        return Ok(Outcome::Failed);
    };
    let started = std::time::Instant::now();
    let tokens = match up
        .client
        .password_login(username, password, Some(client_ip))
        .await
    {
        Ok(tokens) => tokens,
        Err(PasswordRefusal::WrongCredentials) => {
            state
                .metrics
                .upstream
                .count("password", "wrong_credentials");
            return Ok(Outcome::Failed);
        }
        Err(PasswordRefusal::Blocked) => {
            state.metrics.upstream.count("password", "blocked");
            return Ok(Outcome::Blocked);
        }
        Err(PasswordRefusal::Locked) => {
            state.metrics.upstream.count("password", "locked");
            return Ok(Outcome::Locked);
        }
        Err(PasswordRefusal::NeedsRedirect(why)) => {
            state.metrics.upstream.count("password", "needs_redirect");
            return Ok(Outcome::Redirect(why));
        }
        Err(PasswordRefusal::Unavailable(e)) => {
            state.metrics.upstream.count("password", e.kind());
            tracing::warn!(error = %e, "upstream password verification failed");
            return Err(AppError::Unavailable);
        }
    };
    let verified = started.elapsed();
    let claims = tokens.claims.clone().unwrap_or_default();
    let userinfo = if up.client.def.oidc.userinfo_at_login {
        up.client
            .userinfo(&tokens.access_token)
            .await
            .map_err(|e| tracing::warn!(error = %e, "upstream userinfo failed"))
            .ok()
    } else {
        None
    };
    let profile =
        profile::from_claims(&up.client.def, &claims, userinfo.as_ref()).ok_or_else(|| {
            AppError::Unexpected(anyhow::anyhow!("the upstream ID token names no user"))
        })?;
    let fetched = started.elapsed();
    let hash = state
        .passwords
        .hash(password.to_string())
        .await
        .map_err(anyhow::Error::from)?;
    let hashed = started.elapsed();
    let migration = Migration {
        hash,
        algorithm: ARGON2ID.into(),
        route: "password".into(),
        mark_upstream: up.client.settings.management.mark_migrated,
    };
    let user = state
        .db
        .migrate_upstream_user(&up.client.settings.provider, &profile, &migration)
        .await?;
    tracing::info!(
        user = %user.id,
        upstream_verify_ms = verified.as_millis() as u64,
        profile_ms = (fetched - verified).as_millis() as u64,
        hash_ms = (hashed - fetched).as_millis() as u64,
        commit_ms = (started.elapsed() - hashed).as_millis() as u64,
        "user migrated"
    );
    state.metrics.upstream.count("password", "migrated");
    if user.blocked {
        return Ok(Outcome::Blocked);
    }
    Ok(Outcome::Migrated(Box::new(user)))
}
