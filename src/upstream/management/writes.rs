//! The writes the outbox and the write-back deliver to the upstream's
//! Management API, each described by the provider definition as data
//! ([`WriteDef`]: method, path and a JSON body template): marking a user
//! migrated (`[management.mark_migrated]`) and mirroring a local change
//! (`[management.write.*]`: the password, profile fields, blocked). Where
//! the vendor replaces a whole sub-object on update (Keycloak's
//! `UserRepresentation`, Keycloak "Admin REST API"), the definition asks to
//! read the user first and merge.

use std::collections::BTreeMap;

use anyhow::{Context, anyhow};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::{ManagementClient, Refused};
use crate::upstream::provider::{WriteDef, fill};

/// The values a body template is filled with, by name.
pub type Vars = BTreeMap<&'static str, Value>;

/// A local change to write to the upstream.
#[derive(Clone, Copy)]
pub enum Change<'a> {
    /// The new password, in plaintext only for the request's life.
    Password(&'a str),
    /// The profile fields the change set, under their local names
    /// (`email`, `email_verified`, `name`, `given_name`, `family_name`,
    /// `nickname`).
    Profile(&'a Map<String, Value>),
    Blocked(bool),
    /// The user deleted.
    Delete,
}

/// Never the password itself.
impl std::fmt::Debug for Change<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Password(_) => f.write_str("Password(..)"),
            Change::Profile(fields) => f.debug_tuple("Profile").field(fields).finish(),
            Change::Blocked(b) => f.debug_tuple("Blocked").field(b).finish(),
            Change::Delete => f.write_str("Delete"),
        }
    }
}

impl Change<'_> {
    /// The kind of change, as `write_back` names it.
    pub fn kind(&self) -> crate::config::WriteKind {
        use crate::config::WriteKind;
        match self {
            Change::Password(_) => WriteKind::Password,
            Change::Profile(_) => WriteKind::Profile,
            Change::Blocked(_) => WriteKind::Blocked,
            Change::Delete => WriteKind::Delete,
        }
    }

    /// The `[management.write.*]` section describing it.
    pub fn section(&self) -> &'static str {
        match self {
            Change::Password(_) => "password",
            Change::Profile(_) => "profile",
            Change::Blocked(true) => "block",
            Change::Blocked(false) => "unblock",
            Change::Delete => "delete",
        }
    }
}

/// A request ready to send: the definition, method, URL and body (before
/// any `read_first` merge).
pub struct Prepared<'a> {
    def: &'a WriteDef,
    method: Method,
    url: url::Url,
    body: Option<Value>,
}

impl ManagementClient {
    /// Marks a user migrated at the upstream, as the provider definition's
    /// `[management.mark_migrated]` describes. `payload` is the outbox
    /// row's (`upstream_id`, `username`, `migrated_at`); `attribute`
    /// overrides the definition's name. At most `attempts` tries.
    pub async fn mark_migrated(
        &self,
        payload: &Value,
        attribute: Option<&str>,
        attempts: u32,
    ) -> anyhow::Result<()> {
        let prepared = self.mark_request(payload, attribute)?;
        self.perform(prepared, attempts).await
    }

    /// The mark's request for one outbox payload. A template naming a
    /// value the settings do not have is an error here, so `serve` checks
    /// it once with a sample before it starts.
    pub fn mark_request(
        &self,
        payload: &Value,
        attribute: Option<&str>,
    ) -> anyhow::Result<Prepared<'_>> {
        let mark = self.defined(
            self.mgmt.mark_migrated.as_ref(),
            "[management.mark_migrated] write",
        )?;
        let at = payload["migrated_at"]
            .as_str()
            .context("the outbox row has no migrated_at")?;
        let attribute = attribute
            .or(mark.attribute.as_deref())
            .context("[management.mark_migrated] names no attribute")?;
        let mut vars = Vars::new();
        vars.insert("attribute", Value::from(attribute));
        vars.insert("at", Value::from(at));
        self.prepare(mark, "[management.mark_migrated]", Some(payload), vars)
    }

    /// Writes a local change to the upstream user named by `user`
    /// (`upstream_id`, `username`), as `[management.write.*]` describes.
    pub async fn write_back(
        &self,
        user: &Value,
        change: Change<'_>,
        attempts: u32,
    ) -> anyhow::Result<()> {
        let prepared = self.write_request(user, change)?;
        self.perform(prepared, attempts).await
    }

    /// The request writing `change`; an error when the provider has no
    /// definition for it or its template cannot be filled.
    pub fn write_request(&self, user: &Value, change: Change<'_>) -> anyhow::Result<Prepared<'_>> {
        let section = change.section();
        let w = &self.mgmt.write;
        let def = match change {
            Change::Password(_) => &w.password,
            Change::Profile(_) => &w.profile,
            Change::Blocked(true) => &w.block,
            Change::Blocked(false) => &w.unblock,
            Change::Delete => &w.delete,
        };
        let def = self.defined(def.as_ref(), &format!("[management.write.{section}] write"))?;
        let mut vars = Vars::new();
        match change {
            Change::Password(p) => {
                vars.insert("password", Value::from(p));
            }
            Change::Profile(fields) => profile_vars(fields, &mut vars),
            Change::Blocked(_) | Change::Delete => {}
        }
        self.prepare(
            def,
            &format!("[management.write.{section}]"),
            Some(user),
            vars,
        )
    }

    /// Creates a user at the upstream (`[management.write.create]`) from
    /// `fields` (the profile variables, `user_metadata`, `app_metadata`,
    /// `blocked`) and `password`: the upstream's record of the new user.
    /// One try: the caller is waiting, and a retried create could make two.
    pub async fn create_user(
        &self,
        fields: &Map<String, Value>,
        password: &str,
    ) -> anyhow::Result<Value> {
        let def = self.defined(
            self.mgmt.write.create.as_ref(),
            "[management.write.create] write",
        )?;
        let mut vars = Vars::new();
        profile_vars(fields, &mut vars);
        if let Some(b) = fields.get("blocked").filter(|v| v.is_boolean()) {
            vars.insert("blocked", b.clone());
        }
        if let Some(c) = fields.get("connection").filter(|v| v.is_string()) {
            vars.insert("connection", c.clone());
        }
        vars.insert("password", Value::from(password));
        let p = self.prepare(def, "[management.write.create]", None, vars)?;
        self.send(p, 1).await
    }

    /// One user's record at the upstream (`[management.read.user]`), or
    /// `None` when the upstream does not know the id.
    pub async fn read_user(&self, id: &str, attempts: u32) -> anyhow::Result<Option<Value>> {
        let def = self.defined(self.mgmt.read.user.as_ref(), "[management.read.user] read")?;
        let p = self.prepare(
            def,
            "[management.read.user]",
            Some(&json!({ "upstream_id": id })),
            Vars::new(),
        )?;
        match self.send(p, attempts).await {
            Ok(record) => Ok(Some(record)),
            Err(e)
                if e.downcast_ref::<Refused>()
                    .is_some_and(|r| r.status == StatusCode::NOT_FOUND) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The upstream's users with this email (`[management.read.by_email]`,
    /// which answers a list).
    pub async fn read_by_email(&self, email: &str, attempts: u32) -> anyhow::Result<Vec<Value>> {
        let def = self.defined(
            self.mgmt.read.by_email.as_ref(),
            "[management.read.by_email] read",
        )?;
        let mut vars = Vars::new();
        vars.insert("email", Value::from(email));
        let p = self.prepare(def, "[management.read.by_email]", None, vars)?;
        match self.send(p, attempts).await? {
            Value::Array(users) => Ok(users),
            _ => anyhow::bail!("[management.read.by_email] did not answer a list"),
        }
    }

    /// The definition `def` of `section`, or an error naming what the
    /// provider lacks.
    fn defined<'a>(
        &self,
        def: Option<&'a WriteDef>,
        section: &str,
    ) -> anyhow::Result<&'a WriteDef> {
        def.with_context(|| format!("provider {} describes no {section}", self.provider))
    }

    /// Sends a prepared request as it is: the upstream's answer.
    async fn send(&self, p: Prepared<'_>, attempts: u32) -> anyhow::Result<Value> {
        let (answer, _) = self
            .call_with(
                p.method,
                p.url,
                p.body.as_ref(),
                p.def.target.as_deref(),
                attempts,
            )
            .await?;
        Ok(answer)
    }

    /// Fills `def` with `vars`, the `[upstream]` values and, when the
    /// request is about one user, that user (`upstream_id`, `username`).
    fn prepare<'a>(
        &'a self,
        def: &'a WriteDef,
        section: &str,
        user: Option<&Value>,
        mut vars: Vars,
    ) -> anyhow::Result<Prepared<'a>> {
        for (k, v) in self.settings.template_vars() {
            vars.entry(k).or_insert(Value::String(v));
        }
        if let Some(c) = &self.settings.connection {
            vars.entry("connection").or_insert(Value::from(c.as_str()));
        }
        let id = match user {
            Some(user) => {
                let id = user["upstream_id"]
                    .as_str()
                    .context("the write names no upstream_id")?;
                vars.insert("id", Value::from(id));
                vars.insert(
                    "username",
                    Value::from(user["username"].as_str().unwrap_or(id)),
                );
                Some(id)
            }
            None => None,
        };
        let template = |e: String| anyhow!("{section}: {e}");
        let mut path_vars: BTreeMap<&'static str, String> = vars
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (*k, encode_segment(s))))
            .collect();
        if let Some(id) = id {
            path_vars.insert("id", encode_segment(id));
        }
        let url = self.url(&fill(&def.path, &path_vars).map_err(template)?)?;
        let method = Method::from_bytes(def.method.as_bytes())
            .with_context(|| format!("{section} method"))?;
        let body = def
            .body
            .as_ref()
            .map(|b| fill_json(b, &vars))
            .transpose()
            .map_err(template)?;
        Ok(Prepared {
            def,
            method,
            url,
            body,
        })
    }

    /// Sends a prepared write, reading the record first when the
    /// definition asks.
    async fn perform(&self, p: Prepared<'_>, attempts: u32) -> anyhow::Result<()> {
        let body = match (p.def.read_first, p.body) {
            (true, Some(patch)) => {
                // Keycloak has no ETag on users: an admin edit landing
                // between this GET and the PUT would be overwritten. The
                // window is one round trip.
                let (mut current, _) = self
                    .call_with(Method::GET, p.url.clone(), None, None, attempts)
                    .await?;
                merge(&mut current, &patch);
                Some(current)
            }
            (_, body) => body,
        };
        self.call_with(
            p.method,
            p.url,
            body.as_ref(),
            p.def.target.as_deref(),
            attempts,
        )
        .await?;
        Ok(())
    }
}

/// The profile fields a `[management.write.profile]` template may name.
/// The metadata objects are Auth0's (Management API v2, "Update a User":
/// the first level of each is merged into what the user has).
pub const PROFILE_VARS: [&str; 8] = [
    "email",
    "email_verified",
    "name",
    "given_name",
    "family_name",
    "nickname",
    "user_metadata",
    "app_metadata",
];

/// The profile variables `fields` sets, for a template.
fn profile_vars(fields: &Map<String, Value>, vars: &mut Vars) {
    for name in PROFILE_VARS {
        if let Some(v) = fields.get(name).filter(|v| !v.is_null()) {
            vars.insert(name, v.clone());
        }
    }
}

/// A path segment with everything but RFC 3986's unreserved characters
/// percent-encoded: Auth0 asks for its ids (`auth0|…`) encoded, and the
/// WHATWG path set `url` applies leaves `|` as it is.
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The message of a vendor's refusal as a person reads it: Okta's first
/// `errorCauses` entry says which password rule failed where its summary
/// says only "Api validation failed"; Keycloak answers `error_description`
/// or `errorMessage`; Auth0 and AWS `message`. Bounded, without control
/// characters.
pub(crate) fn human_message(body: &Value) -> String {
    let m = body["errorCauses"][0]["errorSummary"]
        .as_str()
        .or_else(|| {
            [
                "message",
                "errorMessage",
                "error_description",
                "errorSummary",
                "Message",
                "error",
            ]
            .iter()
            .find_map(|k| body.get(*k).and_then(Value::as_str))
        })
        .unwrap_or("the upstream refused the change");
    m.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// A filled template value, or nothing when an optional variable is absent.
fn fill_value(template: &Value, vars: &Vars, in_array: bool) -> Result<Option<Value>, String> {
    Ok(match template {
        Value::String(s) => {
            // A whole `{var}` keeps the value's type; `{var?}` may be absent.
            if let Some(name) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}'))
                && !name.contains(['{', '}'])
            {
                let (name, optional) = match name.strip_suffix('?') {
                    Some(n) => (n, true),
                    None => (name, false),
                };
                return match vars.get(name) {
                    Some(v) => Ok(Some(v.clone())),
                    None if optional => Ok(None),
                    None => Err(format!(
                        "set upstream.{name} (the provider's template is {s:?})"
                    )),
                };
            }
            let strings: BTreeMap<&'static str, String> = vars
                .iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (*k, text)
                })
                .collect();
            Some(Value::String(fill(s, &strings)?))
        }
        Value::Array(a) => {
            let mut out = Vec::new();
            for v in a {
                if let Some(v) = fill_value(v, vars, true)? {
                    out.push(v);
                }
            }
            Some(Value::Array(out))
        }
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, v) in o {
                let key = match fill_value(&Value::String(k.clone()), vars, false)? {
                    Some(Value::String(k)) => k,
                    _ => return Err(format!("the key {k:?} must fill to a string")),
                };
                match fill_value(v, vars, false)? {
                    Some(v) => {
                        out.insert(key, v);
                    }
                    // An array element missing a member is left out whole.
                    None if in_array => return Ok(None),
                    None => {}
                }
            }
            Some(Value::Object(out))
        }
        other => Some(other.clone()),
    })
}

/// The body template filled.
fn fill_json(template: &Value, vars: &Vars) -> Result<Value, String> {
    Ok(fill_value(template, vars, false)?.unwrap_or(Value::Null))
}

/// Objects merged key by key, anything else replaced: `patch`'s values win.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_percent_encoded_as_one_path_segment() {
        assert_eq!(encode_segment("auth0|5f3a/b c"), "auth0%7C5f3a%2Fb%20c");
        assert_eq!(encode_segment("00u1-a_b.c~"), "00u1-a_b.c~");
    }

    #[test]
    fn body_templates_fill_keys_and_values_and_merge_into_a_record() {
        let mut vars = Vars::new();
        vars.insert("attribute", json!("migrated_at"));
        vars.insert("at", json!("2026-11-26T17:30:56Z"));
        let patch = fill_json(
            &json!({"attributes": {"{attribute}": ["{at}"]}, "n": 1}),
            &vars,
        )
        .unwrap();
        assert_eq!(
            patch,
            json!({"attributes": {"migrated_at": ["2026-11-26T17:30:56Z"]}, "n": 1})
        );
        let mut record =
            json!({"id": "u1", "attributes": {"plan": ["gold"], "migrated_at": ["old"]}});
        merge(&mut record, &patch);
        assert_eq!(
            record,
            json!({"id": "u1", "n": 1, "attributes": {"plan": ["gold"], "migrated_at": ["2026-11-26T17:30:56Z"]}})
        );
        assert!(fill_json(&json!("{nope}"), &vars).is_err());
    }

    #[test]
    fn whole_variables_keep_their_type_and_absent_optional_ones_are_left_out() {
        let mut vars = Vars::new();
        vars.insert("email_verified", json!(false));
        vars.insert("name", json!("Ada"));
        vars.insert("pool", json!("p1"));
        let body = fill_json(
            &json!({
                "email_verified": "{email_verified?}",
                "email": "{email?}",
                "name": "{name?}",
                "label": "user {name} verified {email_verified}",
                "blocked": true,
                "attrs": [
                    {"Name": "email", "Value": "{email?}"},
                    {"Name": "name", "Value": "{name?}"},
                ],
            }),
            &vars,
        )
        .unwrap();
        assert_eq!(
            body,
            json!({
                "email_verified": false,
                "name": "Ada",
                "label": "user Ada verified false",
                "blocked": true,
                "attrs": [{"Name": "name", "Value": "Ada"}],
            })
        );
        // A required variable that is absent is an error, naming it.
        assert!(
            fill_json(&json!({"p": "{password}"}), &vars)
                .unwrap_err()
                .contains("password")
        );
    }

    #[test]
    fn refusals_read_as_the_vendor_words_them() {
        let okta = json!({"errorCode": "E0000001", "errorSummary": "Api validation failed: password",
            "errorCauses": [{"errorSummary": "password: Password requirements were not met."}]});
        assert_eq!(
            human_message(&okta),
            "password: Password requirements were not met."
        );
        assert_eq!(
            human_message(
                &json!({"error": "invalidPasswordMinLengthMessage", "error_description": "Invalid password: minimum length 12."})
            ),
            "Invalid password: minimum length 12."
        );
        assert_eq!(
            human_message(
                &json!({"__type": "InvalidPasswordException", "message": "Password did not conform with policy"})
            ),
            "Password did not conform with policy"
        );
    }
}
