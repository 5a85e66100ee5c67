//! An upstream's user record (Management API JSON, an export line, a realm
//! export) → a [`Record`], by the dotted paths of the provider definition's
//! `[management.fields]`. The vendor shapes that paths cannot describe are
//! flattened first: Cognito's `Attributes: [{Name, Value}]`.

use serde_json::{Map, Value};

use crate::store::record::{COMPARED, Claims, Record};
use crate::upstream::provider::{ClaimsSource, ManagementDef, ProviderDef};

/// The value at a dotted path (`profile.email`). A key that itself
/// contains dots (`custom:a.b`) is found when the whole path names it.
pub fn lookup<'a>(record: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(v) = record.get(path) {
        return Some(v);
    }
    let mut at = record;
    for part in path.split('.') {
        at = at.get(part)?;
    }
    Some(at)
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Booleans as vendors send them: JSON booleans, or Cognito's and CSV
/// files' `"true"`/`"false"` strings.
pub fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true") || s == "1",
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        _ => false,
    }
}

/// An RFC 3339 time (Auth0 `2024-01-01T00:00:00.000Z`, Okta the same
/// shape) as epoch seconds; anything else is no time at all (an upstream
/// that never saw a login sends `null` or leaves the field out).
pub fn epoch_seconds(v: Option<&Value>) -> Option<i64> {
    let Some(Value::String(s)) = v else {
        return None;
    };
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp())
}

fn object(v: Option<&Value>) -> Map<String, Value> {
    match v {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    }
}

/// Maps one upstream record; `Err` names what is missing. The record is
/// taken by value: where the provider's claims are the record itself
/// (Auth0), it becomes the profile as it is, rather than a deep copy of it
/// (an import makes a million of them).
pub fn map_record(def: &ProviderDef, m: &ManagementDef, raw: Value) -> Result<Record, String> {
    let f = &m.fields;
    let get = |path: &Option<String>| path.as_deref().and_then(|p| lookup(&raw, p));
    let id = text(lookup(&raw, &f.id)).ok_or_else(|| format!("the record has no {}", f.id))?;
    let mut r = Record::new(id);
    r.profile.email = text(get(&f.email));
    r.profile.email_verified = truthy(get(&f.email_verified));
    r.profile.username = text(get(&f.username));
    r.profile.name = text(get(&f.name));
    r.profile.given_name = text(get(&f.given_name));
    r.profile.family_name = text(get(&f.family_name));
    r.profile.nickname = text(get(&f.nickname));
    r.profile.picture = text(get(&f.picture));
    r.profile.phone_number = text(get(&f.phone_number));
    r.user_metadata = object(get(&f.user_metadata));
    r.app_metadata = object(get(&f.app_metadata));
    // Read here, before the claims below leave out the volatile fields it
    // is one of.
    r.upstream_last_login = epoch_seconds(get(&f.last_login));
    r.blocked = match get(&f.blocked) {
        None | Some(Value::Null) => false,
        Some(v) => match &f.blocked_values {
            Some(values) => values.contains(v),
            None => truthy(Some(v)),
        },
    };
    if let Some(Value::Array(identities)) = get(&f.identities) {
        // Auth0: `{provider, user_id}`; the subject an upstream login would
        // present for that identity is `provider|user_id`.
        for identity in identities {
            if let (Some(provider), Some(user_id)) = (
                text(identity.get("provider")),
                text(identity.get("user_id")),
            ) {
                r.add_identity(format!("{provider}|{user_id}"));
            }
        }
    }
    let claims = match m.claims {
        ClaimsSource::Record => {
            let mut claims = match raw {
                Value::Object(fields) => fields,
                _ => Map::new(),
            };
            for volatile in &m.volatile {
                claims.remove(volatile);
            }
            claims.remove(&f.id);
            claims.insert("sub".into(), Value::String(r.id.clone()));
            claims
        }
        ClaimsSource::Standard => {
            let mut claims = r.standard_claims();
            // Claims the provider's tokens carry and the record holds under
            // the same name (Cognito's `custom:*`, `cognito:username`).
            if let Value::Object(fields) = raw {
                for (k, v) in fields {
                    if def.claims.carries(&k) && !claims.contains_key(&k) {
                        claims.insert(k, v);
                    }
                }
            }
            claims
        }
    };
    r.claims = Claims::new(&claims);
    Ok(r)
}

/// The compared fields ([`COMPARED`]) this provider's records carry: a
/// field the mapping has no path for is absent from every upstream record,
/// while a login may well fill it locally (Okta's ID token has
/// `email_verified`, its user object does not), so comparing it would
/// report every logged-in user as different.
pub fn compared_fields(m: &ManagementDef) -> Vec<&'static str> {
    let f = &m.fields;
    COMPARED
        .iter()
        .copied()
        .filter(|field| match *field {
            "email" => f.email.is_some(),
            "email_verified" => f.email_verified.is_some(),
            "username" => f.username.is_some(),
            "name" => f.name.is_some(),
            "given_name" => f.given_name.is_some(),
            "family_name" => f.family_name.is_some(),
            "nickname" => f.nickname.is_some(),
            "picture" => f.picture.is_some(),
            "phone_number" => f.phone_number.is_some(),
            "user_metadata" => f.user_metadata.is_some(),
            "app_metadata" => f.app_metadata.is_some(),
            "blocked" => f.blocked.is_some(),
            // The user's own id is always one of them.
            _ => true,
        })
        .collect()
}

/// Cognito's `ListUsers` user → one flat object: each attribute by name,
/// beside `Username`, `Enabled`, `UserStatus` and the dates, with
/// `cognito:username` as the ID token spells it.
pub fn flatten_cognito(user: &Value) -> Value {
    let mut flat = Map::new();
    if let Value::Object(fields) = user {
        for (k, v) in fields {
            if k != "Attributes" {
                flat.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(Value::Array(attributes)) = user.get("Attributes") {
        for a in attributes {
            if let (Some(Value::String(name)), Some(value)) = (a.get("Name"), a.get("Value")) {
                flat.insert(name.clone(), value.clone());
            }
        }
    }
    if let Some(username) = user.get("Username") {
        flat.insert("cognito:username".into(), username.clone());
    }
    Value::Object(flat)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn def(name: &str) -> ProviderDef {
        ProviderDef::load(name).unwrap()
    }

    fn map(name: &str, raw: Value) -> Record {
        let d = def(name);
        let m = d.management.clone().unwrap();
        map_record(&d, &m, raw).unwrap()
    }

    #[test]
    fn auth0_records_keep_ids_identities_and_metadata() {
        let r = map(
            "auth0",
            json!({
                "user_id": "auth0|5f1", "email": "a@example.com", "email_verified": true,
                "nickname": "a", "app_metadata": {"roles": ["admin"]}, "blocked": true,
                "identities": [
                    {"provider": "auth0", "user_id": "5f1", "connection": "Username-Password-Authentication"},
                    {"provider": "google-oauth2", "user_id": 1234, "connection": "google-oauth2"}
                ],
                "logins_count": 7, "updated_at": "2024-01-01T00:00:00.000Z"
            }),
        );
        assert_eq!(r.id, "auth0|5f1");
        assert!(r.profile.email_verified && r.blocked);
        assert_eq!(r.identities, ["auth0|5f1", "google-oauth2|1234"]);
        assert_eq!(r.app_metadata["roles"], json!(["admin"]));
        let profile: Value = serde_json::from_str(r.claims.as_str()).unwrap();
        assert_eq!(profile["sub"], "auth0|5f1");
        assert_eq!(profile["updated_at"], "2024-01-01T00:00:00.000Z");
        assert!(profile.get("logins_count").is_none());
        // No login yet: no last login.
        assert_eq!(r.upstream_last_login, None);
    }

    #[test]
    fn the_last_login_is_kept_out_of_the_claims_but_on_the_record() {
        let r = map(
            "auth0",
            json!({"user_id": "auth0|5f1", "last_login": "2024-03-01T12:00:00.000Z",
                   "last_ip": "203.0.113.7", "logins_count": 3}),
        );
        assert_eq!(r.upstream_last_login, Some(1_709_294_400));
        let profile: Value = serde_json::from_str(r.claims.as_str()).unwrap();
        assert!(profile.get("last_login").is_none(), "{profile}");
        // Okta: top-level, beside `profile`; an offset is honoured.
        let r = map(
            "okta",
            json!({"id": "00u1", "status": "ACTIVE", "lastLogin": "2024-03-01T13:00:00.000+01:00",
                   "profile": {"login": "ann"}}),
        );
        assert_eq!(r.upstream_last_login, Some(1_709_294_400));
        // Never logged in (`null`), or the other vendor's spelling.
        let r = map(
            "okta",
            json!({"id": "00u2", "lastLogin": null, "last_login": "2024-03-01T12:00:00Z", "profile": {}}),
        );
        assert_eq!(r.upstream_last_login, None);
        // Keycloak's representation and Cognito's ListUsers carry none;
        // Cognito's `UserLastModifiedDate` is not a login.
        let flat = flatten_cognito(
            &json!({"Username": "ann", "UserLastModifiedDate": "2024-03-01T12:00:00Z",
            "Attributes": [{"Name": "sub", "Value": "9f1c"}]}),
        );
        assert_eq!(map("cognito", flat).upstream_last_login, None);
    }

    #[test]
    fn last_login_times_are_rfc3339_or_nothing() {
        let t = |v: Value| epoch_seconds(Some(&v));
        assert_eq!(t(json!("1970-01-01T00:00:01.999Z")), Some(1));
        assert_eq!(t(json!("2024-01-01T00:00:00Z")), Some(1_704_067_200));
        assert_eq!(t(json!("2024-01-01")), None);
        assert_eq!(t(json!("yesterday")), None);
        assert_eq!(t(json!(1_704_067_200)), None);
        assert_eq!(epoch_seconds(None), None);
    }

    #[test]
    fn okta_status_and_profile_paths() {
        let r = map(
            "okta",
            json!({"id": "00u1", "status": "SUSPENDED",
                   "profile": {"login": "ann", "email": "ann@example.com", "firstName": "Ann"}}),
        );
        assert_eq!(r.profile.username.as_deref(), Some("ann"));
        assert_eq!(r.profile.given_name.as_deref(), Some("Ann"));
        assert!(r.blocked);
        let active = map(
            "okta",
            json!({"id": "00u2", "status": "ACTIVE", "profile": {}}),
        );
        assert!(!active.blocked);
    }

    #[test]
    fn cognito_attributes_are_read_by_name() {
        let flat = flatten_cognito(&json!({
            "Username": "ann", "Enabled": false, "UserStatus": "CONFIRMED",
            "Attributes": [{"Name": "sub", "Value": "9f1c"}, {"Name": "email_verified", "Value": "true"},
                           {"Name": "custom:tenant", "Value": "acme"}]
        }));
        let r = map("cognito", flat);
        assert_eq!(r.id, "9f1c");
        assert!(r.profile.email_verified && r.blocked);
        let profile: Value = serde_json::from_str(r.claims.as_str()).unwrap();
        assert_eq!(profile["cognito:username"], "ann");
        assert_eq!(profile["custom:tenant"], "acme");
    }

    #[test]
    fn a_record_without_an_id_is_refused() {
        let d = def("keycloak");
        let m = d.management.clone().unwrap();
        assert!(map_record(&d, &m, json!({"username": "x"})).is_err());
    }
}
