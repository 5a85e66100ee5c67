//! A user as Auth0's Management API serialises one ("Get a User"): its
//! `user_id`, profile, metadata, `blocked`, `identities` (one per way in,
//! `{connection, provider, user_id, isSocial}`), `created_at` and
//! `updated_at` as ISO 8601 with milliseconds, `last_login` and
//! `logins_count`.

use serde_json::{Map, Value, json};

use crate::store::User;
use crate::store::user_search::IdentityRecord;

/// The database connection name Auth0 gives a tenant's first one, used
/// when `[upstream] connection` names none.
pub const DEFAULT_CONNECTION: &str = "Username-Password-Authentication";

/// Auth0's database users are `auth0|…`; Switchyard's own are `local|…`,
/// and both are the database connection's.
const DATABASE_PROVIDERS: [&str; 2] = ["auth0", "local"];

/// Epoch seconds as `2026-12-06T20:01:02.000Z`.
pub fn iso(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// One identity as Auth0 lists it, from a subject such as `auth0|abc` or
/// `google-oauth2|123`.
fn identity(subject: &str, connection: &str) -> Value {
    let (provider, id) = subject.split_once('|').unwrap_or(("auth0", subject));
    let database = DATABASE_PROVIDERS.contains(&provider);
    json!({
        "connection": if database { connection } else { provider },
        "provider": if database { "auth0" } else { provider },
        "user_id": id,
        "isSocial": !database,
    })
}

/// The user in Auth0's shape; `identities` are the user's linked ones
/// (none for a user made here, who has only their own id).
pub fn user_json(
    user: &User,
    identities: &[IdentityRecord],
    connection: &str,
) -> Map<String, Value> {
    let p = &user.profile;
    let mut out = Map::new();
    let mut put = |k: &str, v: Value| {
        out.insert(k.into(), v);
    };
    put("user_id", json!(user.id));
    if let Some(email) = &p.email {
        put("email", json!(email));
        put("email_verified", json!(p.email_verified));
    }
    for (k, v) in [
        ("username", &p.username),
        ("given_name", &p.given_name),
        ("family_name", &p.family_name),
        ("phone_number", &p.phone_number),
    ] {
        if let Some(v) = v {
            put(k, json!(v));
        }
    }
    // Auth0 always has a name, a nickname and a picture: the email when
    // nothing better is known, its local part for the nickname.
    let fallback = p
        .email
        .clone()
        .or(p.username.clone())
        .unwrap_or_else(|| user.id.clone());
    put(
        "name",
        json!(p.name.clone().unwrap_or_else(|| fallback.clone())),
    );
    put(
        "nickname",
        json!(
            p.nickname.clone().unwrap_or_else(|| fallback
                .split('@')
                .next()
                .unwrap_or_default()
                .to_string())
        ),
    );
    if let Some(picture) = &p.picture {
        put("picture", json!(picture));
    }
    put("user_metadata", object_or_empty(&user.user_metadata));
    put("app_metadata", object_or_empty(&user.app_metadata));
    put("blocked", json!(user.blocked));
    let mut ids: Vec<Value> = identities
        .iter()
        .map(|i| identity(&i.subject, connection))
        .collect();
    if ids.is_empty() {
        ids.push(identity(&user.id, connection));
    }
    put("identities", Value::Array(ids));
    put("created_at", json!(iso(user.created_at)));
    put("updated_at", json!(iso(user.updated_at)));
    if let Some(t) = user.last_login_at {
        put("last_login", json!(iso(t)));
    }
    put("logins_count", json!(user.logins_count));
    out
}

fn object_or_empty(v: &Value) -> Value {
    match v {
        Value::Object(_) => v.clone(),
        _ => json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_read_as_auth0_lists_them() {
        assert_eq!(
            identity("auth0|abc", "Users"),
            json!({"connection": "Users", "provider": "auth0", "user_id": "abc", "isSocial": false})
        );
        assert_eq!(
            identity("google-oauth2|123", "Users"),
            json!({"connection": "google-oauth2", "provider": "google-oauth2", "user_id": "123", "isSocial": true})
        );
        assert_eq!(iso(1_767_225_600), "2026-01-01T00:00:00.000Z");
    }
}
