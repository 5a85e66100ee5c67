//! Who may call the API, and how often.
//!
//! A request carries a bearer token (RFC 6750 §2.1) from the client
//! credentials grant whose `aud` is this API's identifier
//! ([`super::audience`]) and whose `scope` holds what the endpoint needs
//! (Auth0's names, [`super::Scope`]). A login's access token names
//! another audience and is refused; so is a token of a client that was
//! deleted since.
//!
//! Each client has a token bucket, as Auth0 meters its Management API
//! (Auth0 docs, "Management API Endpoint Rate Limits"): every answer
//! carries `x-ratelimit-limit` (the bucket's size), `x-ratelimit-remaining`
//! and `x-ratelimit-reset` (the Unix time at which it is full again), and a
//! request finding it empty is answered 429 with `Retry-After`. The buckets
//! are per instance.
//!
//! A backend presents the same token for its whole life (Auth0's last a
//! day), so a verified token is remembered: its signature, audience and
//! client are checked again at most every [`RECHECK`], which is also how
//! long a client deleted on another instance may keep calling (the bound
//! cutover rules keep too); its expiry is checked at every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::Scope;
use super::error::ApiError;
use crate::state::AppState;
use crate::store::now;
use crate::tokens::jwt::{self, ACCESS_TOKEN_TYP, Expect};

/// How long a verified token is trusted before it is checked again.
pub const RECHECK: Duration = Duration::from_secs(2);
/// Tokens remembered at most; past this the memory starts again empty.
const REMEMBERED: usize = 10_000;

/// The caller, as the middleware found it.
#[derive(Debug, Clone)]
pub struct Backend {
    pub client_id: String,
    scope: String,
}

impl Backend {
    /// Refuses unless the token carries `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if crate::oidc::issue::has_scope(&self.scope, scope.as_str()) {
            Ok(())
        } else {
            Err(ApiError::insufficient_scope(scope.as_str()))
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    exp: i64,
    sub: String,
    client_id: String,
    #[serde(default)]
    scope: String,
}

/// The clients' token buckets, and the tokens verified lately.
pub struct Buckets {
    rate: f64,
    size: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
    verified: Mutex<HashMap<String, Verified>>,
}

struct Verified {
    backend: Backend,
    exp: i64,
    at: Instant,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What a bucket said of one request.
struct Metered {
    remaining: u64,
    /// Seconds until the bucket is full again.
    full_in: u64,
    /// Seconds until one token is there, when none was.
    refused_for: Option<u64>,
}

impl Buckets {
    pub fn new(rate: f64, size: u32) -> Self {
        Self {
            rate: rate.max(f64::MIN_POSITIVE),
            size: f64::from(size.max(1)),
            buckets: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
        }
    }

    fn take(&self, client: &str) -> Metered {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        // The client's name is copied only the first time it calls.
        if !buckets.contains_key(client) {
            buckets.insert(
                client.to_string(),
                Bucket {
                    tokens: self.size,
                    at: now,
                },
            );
        }
        let b = buckets.get_mut(client).expect("inserted above");
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.rate).min(self.size);
        b.at = now;
        let refused_for = if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            None
        } else {
            Some(((1.0 - b.tokens) / self.rate).ceil() as u64)
        };
        Metered {
            remaining: b.tokens.floor() as u64,
            full_in: ((self.size - b.tokens) / self.rate).ceil() as u64,
            refused_for,
        }
    }
}

/// Authenticates and meters every request of the API; the handlers find
/// the [`Backend`] in the request's extensions.
pub async fn middleware(
    State(state): State<AppState>,
    axum::Extension(buckets): axum::Extension<Arc<Buckets>>,
    mut request: Request,
    next: Next,
) -> Response {
    let backend = match buckets.authenticate(&state, request.headers()).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let metered = buckets.take(&backend.client_id);
    let mut response = match metered.refused_for {
        Some(secs) => ApiError::too_many_requests(secs).into_response(),
        None => {
            request.extensions_mut().insert(backend);
            next.run(request).await
        }
    };
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(buckets.size as u64));
    headers.insert(
        "x-ratelimit-remaining",
        HeaderValue::from(metered.remaining),
    );
    headers.insert(
        "x-ratelimit-reset",
        HeaderValue::from(now() as u64 + metered.full_in),
    );
    response
}

impl Buckets {
    /// The caller of a request: from a token verified within [`RECHECK`],
    /// or verified now.
    async fn authenticate(
        &self,
        state: &AppState,
        headers: &HeaderMap,
    ) -> Result<Backend, ApiError> {
        let token = bearer(headers)?;
        {
            let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(v) = verified.get(token)
                && v.at.elapsed() < RECHECK
                && v.exp > now()
            {
                return Ok(v.backend.clone());
            }
        }
        let (backend, exp) = authenticate(state, token).await?;
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= REMEMBERED {
            verified.clear();
        }
        verified.insert(
            token.to_string(),
            Verified {
                backend: backend.clone(),
                exp,
                at: Instant::now(),
            },
        );
        Ok(backend)
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("Missing authentication"))
}

/// Verifies the token and that its client still exists: the caller and
/// the token's expiry.
async fn authenticate(state: &AppState, token: &str) -> Result<(Backend, i64), ApiError> {
    let audience = super::audience(&state.settings.issuer);
    let expect = Expect {
        issuer: &state.settings.issuer,
        audience: Some(&audience),
        typ: Some(ACCESS_TOKEN_TYP),
        allow_expired: false,
    };
    let claims = match jwt::verify::<Claims>(&state.keys.current(), token, &expect) {
        Err(jwt::VerifyError::UnknownKey) if state.unknown_kid_reloads.ready() => {
            state.keys.reload().await.map_err(|e| {
                tracing::warn!(error = %e, "management API: key reload failed");
                ApiError::internal()
            })?;
            jwt::verify::<Claims>(&state.keys.current(), token, &expect)
        }
        other => other,
    }
    .map_err(|_| ApiError::unauthorized("Invalid token"))?;
    // A client credentials token is the client's own (RFC 9068 §2.2).
    if claims.sub != claims.client_id {
        return Err(ApiError::unauthorized("Invalid token"));
    }
    if state.db.get_client(&claims.client_id).await?.is_none() {
        return Err(ApiError::unauthorized("Invalid token"));
    }
    Ok((
        Backend {
            client_id: claims.client_id,
            scope: claims.scope,
        },
        claims.exp,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_and_says_when_it_refills() {
        let b = Buckets::new(1.0, 2);
        assert!(b.take("a").refused_for.is_none());
        let second = b.take("a");
        assert!(second.refused_for.is_none());
        assert_eq!(second.remaining, 0);
        let third = b.take("a");
        assert_eq!(third.refused_for, Some(1));
        assert_eq!(third.full_in, 2);
        // Another client has its own bucket.
        assert!(b.take("b").refused_for.is_none());
    }
}
