//! The writes the outbox delivers to the upstream's Management API: today,
//! marking a user migrated, as the provider definition's
//! `[management.mark_migrated]` describes it (method, path and a JSON body
//! template with `{id}`, `{username}`, `{attribute}`, `{at}`). Where the
//! vendor replaces a whole sub-object on update (Keycloak's
//! `UserRepresentation.attributes`, Keycloak "Admin REST API"), the
//! definition asks to read the user first and merge.

use anyhow::{Context, anyhow};
use reqwest::Method;
use serde_json::Value;

use super::ManagementClient;
use crate::upstream::provider::{MarkDef, fill};

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
        let (mark, method, url, patch) = self.mark_request(payload, attribute)?;
        let body = if mark.read_first {
            // Keycloak has no ETag on users: an admin edit landing between
            // this GET and the PUT would be overwritten. The window is one
            // round trip, and the mark is written once per user.
            let (mut current, _) = self
                .call_with(Method::GET, url.clone(), None, None, attempts)
                .await?;
            merge(&mut current, &patch);
            current
        } else {
            patch
        };
        self.call_with(method, url, Some(&body), mark.target.as_deref(), attempts)
            .await?;
        Ok(())
    }

    /// The mark's definition, method, URL and body (before any
    /// `read_first` merge) for one outbox payload. A template naming a
    /// value the settings do not have is an error here, so `serve` checks
    /// it once with a sample before it starts.
    pub fn mark_request(
        &self,
        payload: &Value,
        attribute: Option<&str>,
    ) -> anyhow::Result<(&MarkDef, Method, url::Url, Value)> {
        let mark = self.mgmt.mark_migrated.as_ref().with_context(|| {
            format!(
                "provider {} describes no [management.mark_migrated] write",
                self.provider
            )
        })?;
        let id = payload["upstream_id"]
            .as_str()
            .context("the outbox row names no upstream_id")?;
        let at = payload["migrated_at"]
            .as_str()
            .context("the outbox row has no migrated_at")?;
        let mut vars = self.settings.template_vars();
        vars.insert("id", id.to_string());
        vars.insert(
            "username",
            payload["username"].as_str().unwrap_or(id).to_string(),
        );
        vars.insert(
            "attribute",
            attribute.unwrap_or(&mark.attribute).to_string(),
        );
        vars.insert("at", at.to_string());
        let mut path_vars = vars.clone();
        path_vars.insert("id", encode_segment(id));
        let template = |e: String| anyhow!("[management.mark_migrated]: {e}");
        let url = self.url(&fill(&mark.path, &path_vars).map_err(template)?)?;
        let method = Method::from_bytes(mark.method.as_bytes())
            .context("[management.mark_migrated] method")?;
        let body = fill_json(&mark.body, &vars).map_err(template)?;
        Ok((mark, method, url, body))
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

/// The body template with `{var}`s filled in its keys and string values.
fn fill_json(
    template: &Value,
    vars: &std::collections::BTreeMap<&'static str, String>,
) -> Result<Value, String> {
    Ok(match template {
        Value::String(s) => Value::String(fill(s, vars)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|v| fill_json(v, vars))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| Ok((fill(k, vars)?, fill_json(v, vars)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
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
        let mut vars = std::collections::BTreeMap::new();
        vars.insert("attribute", "migrated_at".to_string());
        vars.insert("at", "2026-11-26T17:30:56Z".to_string());
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
}
