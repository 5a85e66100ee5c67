//! One user as a source describes them (a Management API page, an export
//! line, an import file), mapped onto the local user's fields, and the
//! field-by-field comparison that backfill (is anything new?) and verify
//! (does anything differ?) share.

use serde::Serialize;
use serde_json::{Map, Value};

use super::Profile;

/// A user read from a source, already mapped onto local fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Record {
    /// The upstream user id: the local id and the `sub` apps stored.
    pub id: String,
    #[serde(flatten)]
    pub profile: Profile,
    pub user_metadata: Map<String, Value>,
    pub app_metadata: Map<String, Value>,
    pub blocked: bool,
    /// Every identity the user can arrive through, as the subject an upstream
    /// login would present (`auth0|…`, `google-oauth2|…`), sorted; the
    /// user's own id is always one of them.
    pub identities: Vec<String>,
    /// The upstream's last login (epoch seconds), when its record has one.
    /// Not one of the [`COMPARED`] fields: it moves with every login at the
    /// upstream, which is no difference for verify to report; a backfill
    /// refreshes it whenever it lists the user.
    #[serde(skip)]
    pub upstream_last_login: Option<i64>,
    /// The upstream's claims for Switchyard's tokens, spelled as the upstream
    /// spells them (stored for users who have not logged in yet).
    #[serde(skip)]
    pub claims: Claims,
    /// A password hash the source carried, in its own format, with its
    /// algorithm name (`bcrypt`, `pbkdf2-sha256`, `keycloak`, …).
    #[serde(skip)]
    pub password: Option<(String, String)>,
    /// Where the record came from in its file (1-based), for reports.
    #[serde(skip)]
    pub line: Option<u64>,
}

/// A record's claims as the JSON text the store keeps. It is written once,
/// where the record is made: the thread that parsed the source frees the
/// claims' map while it is still in its cache, and the page writer only
/// copies text. (An import holds a few thousand records in flight; as maps,
/// freeing them on another thread cost as much as parsing them.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims(String);

impl Claims {
    pub fn new(claims: &Map<String, Value>) -> Self {
        // Sized for a typical profile, so the text is not regrown from empty.
        let mut text = Vec::with_capacity(1024);
        serde_json::to_writer(&mut text, claims).expect("a JSON map serializes into memory");
        // serde_json writes UTF-8 only.
        Self(String::from_utf8(text).expect("serde_json writes UTF-8"))
    }

    /// The JSON object's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Claims {
    fn default() -> Self {
        Self("{}".into())
    }
}

/// The fields compared between a source and the local user, in report order.
pub const COMPARED: &[&str] = &[
    "email",
    "email_verified",
    "username",
    "name",
    "given_name",
    "family_name",
    "nickname",
    "picture",
    "phone_number",
    "user_metadata",
    "app_metadata",
    "blocked",
    "identities",
];

impl Record {
    /// A record with only an id; the identity list starts with the id.
    pub fn new(id: impl Into<String>) -> Self {
        let id = id.into();
        Self {
            identities: vec![id.clone()],
            id,
            ..Self::default()
        }
    }

    /// Adds an identity subject, keeping the list sorted and unique.
    pub fn add_identity(&mut self, subject: String) {
        if let Err(at) = self.identities.binary_search(&subject) {
            self.identities.insert(at, subject);
        }
    }

    /// The value of a compared field, as JSON (for diffs and reports).
    pub fn field(&self, name: &str) -> Value {
        let text = |v: &Option<String>| v.clone().map(Value::String).unwrap_or(Value::Null);
        match name {
            "email" => text(&self.profile.email),
            "email_verified" => Value::Bool(self.profile.email_verified),
            "username" => text(&self.profile.username),
            "name" => text(&self.profile.name),
            "given_name" => text(&self.profile.given_name),
            "family_name" => text(&self.profile.family_name),
            "nickname" => text(&self.profile.nickname),
            "picture" => text(&self.profile.picture),
            "phone_number" => text(&self.profile.phone_number),
            "user_metadata" => Value::Object(self.user_metadata.clone()),
            "app_metadata" => Value::Object(self.app_metadata.clone()),
            "blocked" => Value::Bool(self.blocked),
            "identities" => Value::from(self.identities.clone()),
            _ => Value::Null,
        }
    }

    /// The compared fields where `local` differs from this record.
    pub fn diff(&self, local: &Record) -> Vec<&'static str> {
        self.diff_in(local, COMPARED)
    }

    /// The fields among `fields` where `local` differs from this record.
    pub fn diff_in(&self, local: &Record, fields: &[&'static str]) -> Vec<&'static str> {
        fields
            .iter()
            .copied()
            .filter(|f| match *f {
                // Emails compare as login identifiers do: case-insensitively.
                "email" => {
                    self.profile.email.as_deref().map(str::to_lowercase)
                        != local.profile.email.as_deref().map(str::to_lowercase)
                }
                f => self.field(f) != local.field(f),
            })
            .collect()
    }

    /// A claims-shaped profile from the mapped fields, for sources whose own
    /// record is not shaped like the upstream's tokens.
    pub fn standard_claims(&self) -> Map<String, Value> {
        let mut claims = Map::new();
        claims.insert("sub".into(), Value::String(self.id.clone()));
        for (claim, field) in [
            ("email", "email"),
            ("email_verified", "email_verified"),
            ("preferred_username", "username"),
            ("name", "name"),
            ("given_name", "given_name"),
            ("family_name", "family_name"),
            ("nickname", "nickname"),
            ("picture", "picture"),
            ("phone_number", "phone_number"),
        ] {
            let value = self.field(field);
            if !value.is_null() {
                claims.insert(claim.into(), value);
            }
        }
        claims
    }
}

/// What applying one record did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Unchanged,
    /// Not written: the local user changed these fields after migrating.
    Conflict(String),
    /// Not written, with the reason.
    Failed(String),
}

/// A note on a record that was written, for the report (a shared email
/// that could not become a login identifier, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub user_id: String,
    pub line: Option<u64>,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_stay_sorted_and_unique() {
        let mut r = Record::new("auth0|b");
        r.add_identity("google-oauth2|1".into());
        r.add_identity("auth0|b".into());
        r.add_identity("a|0".into());
        assert_eq!(
            r.identities,
            ["auth0|b", "a|0", "google-oauth2|1"],
            "byte order"
        );
    }

    #[test]
    fn diff_names_each_changed_field_and_ignores_email_case() {
        let mut a = Record::new("auth0|1");
        a.profile.email = Some("Ann@Example.com".into());
        a.app_metadata.insert("plan".into(), "pro".into());
        let mut b = a.clone();
        b.profile.email = Some("ann@example.com".into());
        assert!(a.diff(&b).is_empty());
        b.profile.name = Some("Ann".into());
        b.app_metadata.insert("plan".into(), "free".into());
        b.blocked = true;
        assert_eq!(a.diff(&b), ["name", "app_metadata", "blocked"]);
    }
}
