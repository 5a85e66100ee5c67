//! Upstream claims → the local user, and → the claims of Switchyard's tokens.
//!
//! The local user's id is the upstream `sub` (`auth0|5f3…`, an Okta id, a
//! Cognito `sub`, a Keycloak UUID), so the `sub` of Switchyard's tokens is
//! the one applications already stored: their user ids stay valid.

use serde_json::{Map, Value};

use super::provider::ProviderDef;
use crate::config::UpstreamSettings;
pub use crate::store::UpstreamProfile;
use crate::store::{Profile, User};

/// Reads a profile from ID-token claims merged with userinfo (userinfo
/// wins where both speak: it is the fresher source, OIDC Core §5.3.2).
pub fn from_claims(
    def: &ProviderDef,
    id_token: &Map<String, Value>,
    userinfo: Option<&Map<String, Value>>,
) -> Option<UpstreamProfile> {
    let mut raw = id_token.clone();
    // An upstream without a userinfo endpoint answers an empty map.
    if let Some(info) = userinfo.filter(|info| !info.is_empty()) {
        // OIDC Core §5.3.2: the userinfo `sub` must be there and equal the
        // ID token's, or the userinfo answer must not be used.
        if info.get("sub").is_none() || info.get("sub") != id_token.get("sub") {
            tracing::warn!("upstream userinfo sub missing or not the ID token's; userinfo ignored");
        } else {
            raw.extend(info.clone());
        }
    }
    for protocol in [
        "iss",
        "aud",
        "exp",
        "iat",
        "nbf",
        "nonce",
        "at_hash",
        "c_hash",
        "azp",
        "auth_time",
        "sid",
        "jti",
        "acr",
        "amr",
    ] {
        raw.remove(protocol);
    }
    let p = &def.profile;
    let text = |claim: &str| raw.get(claim).and_then(Value::as_str).map(String::from);
    let id = text(&p.id)?;
    let email_verified = match raw.get(&p.email_verified) {
        Some(Value::Bool(b)) => *b,
        // Cognito and some others send booleans as strings.
        Some(Value::String(s)) => s == "true",
        _ => false,
    };
    Some(UpstreamProfile {
        profile: Profile {
            email: text(&p.email),
            email_verified,
            username: text(&p.username),
            name: text(&p.name),
            given_name: text(&p.given_name),
            family_name: text(&p.family_name),
            nickname: text(&p.nickname),
            picture: text(&p.picture),
            phone_number: text(&p.phone_number),
        },
        id,
        raw,
    })
}

/// The upstream claims Switchyard's tokens carry for `user`: those the
/// provider definition lists, as last seen from the upstream, plus the
/// operator's `[upstream.claims]` read from the profile by path.
pub fn carried_claims(
    def: &ProviderDef,
    settings: &UpstreamSettings,
    user: &User,
) -> Map<String, Value> {
    let mut out = Map::new();
    if let Value::Object(claims) = &user.claims {
        for (name, value) in claims {
            if def.claims.carries(name) {
                out.insert(name.clone(), value.clone());
            }
        }
    }
    for (claim, path) in &settings.claims {
        if let Some(value) = lookup(user, path) {
            out.insert(claim.clone(), value);
        }
    }
    out
}

/// `app_metadata.roles`, `user_metadata.plan`, or a profile claim.
fn lookup(user: &User, path: &str) -> Option<Value> {
    let mut parts = path.split('.');
    let mut current = match parts.next()? {
        "app_metadata" => &user.app_metadata,
        "user_metadata" => &user.user_metadata,
        first => {
            return user
                .claims
                .get(first)
                .cloned()
                .filter(|_| parts.next().is_none());
        }
    };
    for part in parts {
        current = current.get(part)?;
    }
    Some(current.clone())
}
