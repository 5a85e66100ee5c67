//! Everything that talks to the upstream provider.
//!
//! - [`provider`]: the provider definitions in `providers/`.
//! - [`client`]: the OIDC client (discovery, authorization URL, code
//!   exchange, ID-token validation, refresh, userinfo, revocation, logout)
//!   on the `openidconnect` crate, with every HTTP call bounded in time.
//! - [`id_token`]: upstream ID-token validation on aws-lc-rs.
//! - [`profile`]: upstream claims → local user, and → Switchyard's claims.
//! - [`tokens`]: the sealed session ↔ upstream-token mapping, and the
//!   single-flight refresh of it.
//! - [`management`]: the upstream's Management API (users listed, exported
//!   and written), for the jobs and the outbox.
//! - [`rate_limit`]: what an upstream says about its rate limit.

pub mod client;
pub mod id_token;
pub mod management;
pub mod profile;
pub mod provider;
pub mod rate_limit;
pub mod tokens;

use std::time::Duration;

pub use client::{Creds, UpstreamClient, UpstreamTokens};

/// The largest body read from an upstream answer (discovery, JWKS, token,
/// userinfo, Management API pages): 1 MiB, far above any real one (an
/// Auth0 page of 100 users is a few hundred KiB), so a broken or hostile
/// upstream cannot make Switchyard buffer without bound. Export files are
/// streamed line by line and are not read through this.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the upstream's answer is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("the upstream's answer could not be read")]
    Unreadable,
}

/// Reads `response`'s body, refusing it as soon as it passes `limit`
/// bytes (a declared `Content-Length` over the limit is refused before
/// anything is read).
pub async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|_| BodyError::Unreadable)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Why an upstream call did not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Timeout, refused connection, 5xx: the upstream is not serving.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// 429, with how long to wait when the upstream said so.
    #[error("upstream rate limit reached")]
    RateLimited { retry_after: Option<Duration> },
    /// A protocol answer: `invalid_grant`, `mfa_required`, …
    #[error("upstream refused: {error}")]
    Rejected { error: String, description: String },
    /// A body that is not what the protocol says (not JSON, missing fields).
    #[error("upstream answered something unexpected: {0}")]
    InvalidResponse(String),
    /// The ID token failed validation.
    #[error("upstream ID token rejected: {0}")]
    InvalidIdToken(String),
}

impl UpstreamError {
    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::RateLimited { .. } => "rate_limited",
            Self::Rejected { .. } => "rejected",
            Self::InvalidResponse(_) => "invalid_response",
            Self::InvalidIdToken(_) => "invalid_id_token",
        }
    }
}

/// The upstream track's parts, wired once.
pub struct Upstream {
    pub client: UpstreamClient,
    pub sealer: tokens::TokenSealer,
}

impl Upstream {
    pub fn new(settings: &crate::config::Settings) -> Result<Option<Self>, String> {
        let Some(up) = &settings.upstream else {
            return Ok(None);
        };
        let client = UpstreamClient::new(up.clone())?;
        let sealer =
            tokens::TokenSealer::from_env(&up.token_keys_env, settings.redis_url.is_none())?;
        Ok(Some(Self { client, sealer }))
    }

    pub fn mapping<'a>(
        &'a self,
        store: &'a dyn crate::store::SessionStore,
        db: &'a dyn crate::store::Database,
    ) -> tokens::Mapping<'a> {
        tokens::Mapping {
            store,
            db,
            sealer: &self.sealer,
        }
    }

    /// Credentials for tokens held by `client_id`: Switchyard's own, or the
    /// application's with the secret it presented on this request.
    pub fn creds_for(&self, client_id: &str, presented_secret: Option<&str>) -> Creds {
        if client_id == self.client.creds.client_id {
            self.client.creds.clone()
        } else {
            Creds {
                client_id: client_id.to_string(),
                secret: presented_secret.map(String::from),
            }
        }
    }
}
