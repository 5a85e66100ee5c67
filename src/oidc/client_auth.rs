//! Client authentication at the token and revocation endpoints
//! (RFC 6749 §2.3): `client_secret_basic`, `client_secret_post`, and `none`
//! for public clients (which still identify themselves with `client_id`).

use std::sync::Arc;

use axum::http::{HeaderMap, header};

use super::params::Params;
use crate::crypto::{self, verify_secret};
use crate::error::OAuthError;
use crate::state::AppState;
use crate::store::Client;

/// The client a request names, before its credentials are checked: for
/// decisions that reveal nothing, such as which origin may read the answer.
pub fn claimed_client_id(headers: &HeaderMap, params: &Params) -> Option<String> {
    presented(headers, params).ok().map(|p| p.client_id)
}

/// Credentials as presented, before they are checked.
pub(crate) struct Presented {
    pub(crate) client_id: String,
    pub(crate) secret: Option<String>,
    pub(crate) basic: bool,
}

pub(crate) fn presented(headers: &HeaderMap, params: &Params) -> Result<Presented, OAuthError> {
    let body_id = params.get("client_id")?;
    let body_secret = params.get("client_secret")?;
    let Some(auth) = headers.get(header::AUTHORIZATION) else {
        let client_id = body_id.ok_or_else(|| OAuthError::invalid_client(false))?;
        return Ok(Presented {
            client_id: client_id.into(),
            secret: body_secret.map(Into::into),
            basic: false,
        });
    };
    let auth = auth
        .to_str()
        .map_err(|_| OAuthError::invalid_client(true))?;
    let (scheme, encoded) = auth
        .split_once(' ')
        .ok_or_else(|| OAuthError::invalid_client(true))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(true));
    }
    // RFC 6749 §2.3: one authentication method per request.
    if body_secret.is_some() {
        return Err(OAuthError::invalid_request(
            "more than one client authentication method was used",
        ));
    }
    let decoded = crypto::b64_decode(encoded)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| OAuthError::invalid_client(true))?;
    let (id, secret) = decoded
        .split_once(':')
        .ok_or_else(|| OAuthError::invalid_client(true))?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded before Base64.
    let id = form_decode(id).ok_or_else(|| OAuthError::invalid_client(true))?;
    let secret = form_decode(secret).ok_or_else(|| OAuthError::invalid_client(true))?;
    if body_id.is_some_and(|b| b != id) {
        return Err(OAuthError::invalid_client(true));
    }
    Ok(Presented {
        client_id: id,
        secret: Some(secret),
        basic: true,
    })
}

fn form_decode(s: &str) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    // The whole part is one value: a raw `&` (a client that skipped the
    // encoding) is part of it, never the end of it.
    let value = format!("x={}", s.replace('&', "%26"));
    let decoded: String = form_urlencoded::parse(value.as_bytes())
        .next()?
        .1
        .into_owned();
    Some(decoded)
}

/// Authenticates the client of a token or revocation request.
/// An authenticated client, with the secret it presented: the upstream
/// track forwards it when it acts at the upstream on the client's behalf
/// (the application kept its client id and secret when it was repointed).
pub struct Authenticated {
    pub client: Arc<Client>,
    pub secret: Option<String>,
}

pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
) -> Result<Authenticated, OAuthError> {
    let p = presented(headers, params)?;
    let client = state.recent.client(&*state.db, &p.client_id).await?;
    let Some(client) = client else {
        // Same work as a known client, so timing does not reveal which ids exist.
        if let Some(secret) = &p.secret {
            verify_secret(&state.dummy_secret_hash, secret);
        }
        return Err(OAuthError::invalid_client(p.basic));
    };
    let ok = match (&client.secret_hash, &p.secret) {
        (Some(stored), Some(secret)) => verify_secret(stored, secret),
        // A public client has no secret to present (RFC 6749 §2.1).
        (None, None) => client.public,
        _ => false,
    };
    if !ok {
        return Err(OAuthError::invalid_client(p.basic));
    }
    Ok(Authenticated {
        client,
        secret: p.secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        assert_eq!(form_decode("a%3Ab+c").as_deref(), Some("a:b c"));
        assert_eq!(form_decode("web&x=1").as_deref(), Some("web&x=1"));
    }
}
