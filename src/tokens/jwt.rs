//! ID tokens (OIDC Core §2) and JWT access tokens (RFC 9068), minted and
//! verified.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::keys::{Alg, KeyError, KeySet, SigningKey};
use crate::crypto::{b64url, b64url_into};

pub use super::keys::ACCESS_TOKEN_TYP;

/// Claims of an RFC 9068 access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: String,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The grant (code exchange and its refresh family) the token belongs
    /// to: revoking the grant makes userinfo refuse the token. Empty in a
    /// client's own token ([`ClientAccessClaims`]), which has no user.
    #[serde(default)]
    pub gid: String,
    /// Claims carried over from the upstream (namespaced custom claims, …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Claims of an RFC 9068 access token from the client credentials grant
/// (RFC 6749 §4.4): the client acts for itself, so `sub` is its id
/// (RFC 9068 §2.2) and there is no grant, session or user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientAccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: String,
    pub scope: String,
}

/// Claims of an ID token; profile claims are flattened in beside them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(flatten)]
    pub profile: Map<String, Value>,
}

/// JWS compact serialisation (RFC 7515 §7.1) signed with `key`.
pub fn sign<T: Serialize>(key: &SigningKey, typ: &str, claims: &T) -> Result<String, KeyError> {
    let header = key.encoded_header(typ);
    let payload = serde_json::to_vec(claims).map_err(|_| KeyError::Sign)?;
    // Header, payload and signature (at most 512 bytes, RSA-4096) encoded
    // into one buffer sized once.
    let mut out = String::with_capacity(header.len() + 1 + payload.len().div_ceil(3) * 4 + 1 + 683);
    out.push_str(&header);
    out.push('.');
    b64url_into(&payload, &mut out);
    let signature = key.sign(out.as_bytes())?;
    out.push('.');
    b64url_into(&signature, &mut out);
    Ok(out)
}

/// `at_hash` (OIDC Core §3.1.3.6): the left half of the hash of the access
/// token's ASCII octets, base64url.
pub fn at_hash(alg: Alg, access_token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(alg.at_hash_digest(), access_token.as_bytes());
    let bytes = digest.as_ref();
    b64url(&bytes[..bytes.len() / 2])
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token names an unknown key")]
    UnknownKey,
    #[error("the token is not of the expected type")]
    WrongType,
    #[error("the token is invalid: {0}")]
    Invalid(String),
}

/// What to check beyond the signature.
pub struct Expect<'a> {
    pub issuer: &'a str,
    /// `None` skips the audience check (an `id_token_hint` names the client
    /// in `aud`, which the caller compares itself).
    pub audience: Option<&'a str>,
    pub typ: Option<&'a str>,
    /// Accept an expired token (OIDC RP-Initiated Logout §2 lets an
    /// `id_token_hint` be expired).
    pub allow_expired: bool,
}

/// Verifies a token signed with one of `keys`.
pub fn verify<T: DeserializeOwned>(
    keys: &KeySet,
    token: &str,
    expect: &Expect<'_>,
) -> Result<T, VerifyError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
    let kid = header.kid.as_deref().ok_or(VerifyError::UnknownKey)?;
    let key = keys.get(kid).ok_or(VerifyError::UnknownKey)?;
    if header.alg != key.alg.jsonwebtoken() {
        return Err(VerifyError::Invalid(
            "algorithm does not match the key".into(),
        ));
    }
    if let Some(typ) = expect.typ {
        // RFC 9068 §4: the `typ` header must be checked, case-insensitively
        // and with or without the `application/` prefix.
        let got = header.typ.as_deref().unwrap_or("");
        let got = got.strip_prefix("application/").unwrap_or(got);
        if !got.eq_ignore_ascii_case(typ) {
            return Err(VerifyError::WrongType);
        }
    }
    let mut validation = jsonwebtoken::Validation::new(key.alg.jsonwebtoken());
    validation.set_issuer(&[expect.issuer]);
    validation.leeway = 30;
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    match expect.audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    if expect.allow_expired {
        validation.validate_exp = false;
    }
    jsonwebtoken::decode::<T>(token, key.decoding_key(), &validation)
        .map(|data| data.claims)
        .map_err(|e| VerifyError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_matches_the_oidc_core_example() {
        // OIDC Core Appendix A.3: access token and at_hash for RS256.
        let token = "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y";
        assert_eq!(at_hash(Alg::RS256, token), "77QmUPtjPfzWtF2AnpK9RQ");
    }
}
