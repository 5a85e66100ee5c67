//! Thin entry points for the fuzz targets in `tests/fuzz`, into parsers
//! that are private to their modules. Each runs the same code the server
//! runs on the same input, minus the I/O around it. Not an API.

use std::io::{BufRead, BufReader, Cursor};
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, header};
use serde_json::Value;

use crate::config::{Loaded, Settings};
use crate::error::{ErrorCode, OAuthError};
use crate::oidc::{authorize, client_auth, params::Params, redirect_uri};
use crate::store::{Client, KeyState};
use crate::tokens::grants::{PendingAuthorization, ResponseMode};
use crate::tokens::keys::{Alg, KeyError, KeySet, SigningKey};
use crate::upstream::management::{Item, mapping};
use crate::upstream::provider::ProviderDef;

/// `/authorize` on a raw query string for `client`, up to the point
/// where the request would be stored: the parameter parser, the
/// redirect-URI match and the checks answered to the client.
pub fn authorize(
    client: &Client,
    query: &[u8],
) -> Result<PendingAuthorization, (ErrorCode, &'static str)> {
    let params = Params::parse(query);
    let refused = (ErrorCode::InvalidRequest, "refused with a page");
    let redirect = params.get("redirect_uri").map_err(|_| refused)?;
    if !redirect.is_some_and(|r| redirect_uri::matches(&client.redirect_uris, r)) {
        return Err(refused);
    }
    let mode = params
        .get("response_mode")
        .ok()
        .and_then(ResponseMode::from_param)
        .ok_or((ErrorCode::InvalidRequest, "response_mode"))?;
    authorize::validate(client, &params, mode).map(|v| v.pending)
}

/// The token endpoint's request parser: the form body, then the client
/// credentials from it and the `Authorization` header. Returns the
/// grant type, client id, secret and whether Basic was used.
#[allow(clippy::type_complexity)]
pub fn token_request(
    body: &[u8],
    authorization: Option<&[u8]>,
) -> Result<(String, String, Option<String>, bool), OAuthError> {
    let mut headers = HeaderMap::new();
    if let Some(a) = authorization {
        // hyper refuses header values that are not valid on the wire.
        let Ok(v) = HeaderValue::from_bytes(a) else {
            return Err(OAuthError::invalid_client(true));
        };
        headers.insert(header::AUTHORIZATION, v);
    }
    let params = Params::parse(body);
    params.reject_repeats()?;
    let grant_type = params.require("grant_type")?.to_string();
    let p = client_auth::presented(&headers, &params)?;
    Ok((grant_type, p.client_id, p.secret, p.basic))
}

/// A signing key from its PKCS#8 DER, as the key ring loads one.
pub fn signing_key(kid: &str, alg: Alg, der: &[u8]) -> Result<Arc<SigningKey>, KeyError> {
    SigningKey::from_der(kid, alg, der, KeyState::Active, None).map(Arc::new)
}

/// The key set the ring would hold with `keys`.
pub fn key_set(keys: Vec<Arc<SigningKey>>) -> KeySet {
    KeySet::from_keys(keys)
}

/// An upstream token response (code exchange or refresh), read as the
/// OIDC client reads it.
pub fn upstream_token_response(body: &[u8]) -> Option<crate::upstream::client::UpstreamTokens> {
    let response: openidconnect::core::CoreTokenResponse = serde_json::from_slice(body).ok()?;
    Some(crate::upstream::client::tokens_from(&response, None))
}

/// Settings from a TOML text (defaults, then the text, as
/// [`Settings::load_all`] merges a file), and every problem
/// `config check` would list.
pub fn config(toml: &str) -> (Loaded, Vec<crate::config::Problem>) {
    use figment::Figment;
    use figment::providers::{Format, Serialized, Toml};
    let figment =
        Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(toml));
    let loaded = crate::config::extract_all(&figment);
    let problems = loaded.problems(&crate::upstream::provider::facts);
    (loaded, problems)
}

/// A provider definition from a TOML text, as a `.toml` provider file.
pub fn provider(toml: &str) -> Result<ProviderDef, String> {
    toml::from_str(toml).map_err(|e| e.to_string())
}

/// Auth0's export file as the export stream reads it: gunzipped,
/// line by line, each line mapped by the Auth0 definition.
pub fn auth0_export(gz: &[u8]) -> Result<Vec<Item>, String> {
    let def = ProviderDef::load("auth0")?;
    let mgmt = def.management.clone().ok_or("no management")?;
    let reader: Box<dyn BufRead + Send> = Box::new(BufReader::new(
        flate2::read::MultiGzDecoder::new(Cursor::new(gz.to_vec())),
    ));
    Ok(crate::jobs::files::Lines::new(reader)
        .map(|line| {
            let (n, bytes) = line?;
            let raw: Value =
                serde_json::from_slice(&bytes).map_err(|e| crate::store::jobs::Rejected {
                    line: Some(n),
                    user_id: None,
                    reason: e.to_string(),
                })?;
            mapping::map_record(&def, &mgmt, raw).map_err(|reason| crate::store::jobs::Rejected {
                line: Some(n),
                user_id: None,
                reason,
            })
        })
        .collect())
}
