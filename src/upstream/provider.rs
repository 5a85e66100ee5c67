//! Provider definitions: `providers/<name>.toml`, one per kind of upstream.
//!
//! A definition says how to find the upstream (an issuer template filled
//! from the operator's `[upstream]` settings), how to authenticate to it, how
//! to end its session, and how its claims map onto the local user and onto
//! Switchyard's tokens. The five shipped definitions are compiled into the
//! binary; `provider = "path/to/custom.toml"` loads another one, so an
//! ordinary OIDC provider needs no code.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::{ProviderFacts, UpstreamSettings, WriteKind};

const BUILTIN: &[(&str, &str)] = &[
    ("auth0", include_str!("../../providers/auth0.toml")),
    ("okta", include_str!("../../providers/okta.toml")),
    ("cognito", include_str!("../../providers/cognito.toml")),
    ("keycloak", include_str!("../../providers/keycloak.toml")),
    ("oidc", include_str!("../../providers/oidc.toml")),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderDef {
    pub name: String,
    pub oidc: OidcDef,
    pub logout: LogoutDef,
    #[serde(default)]
    pub password: Option<PasswordDef>,
    #[serde(default)]
    pub management: Option<ManagementDef>,
    pub profile: ProfileDef,
    pub claims: ClaimsDef,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcDef {
    /// Issuer template: `{domain}`, `{realm}`, `{region}`, `{user_pool_id}`,
    /// `{authorization_server}`, `{issuer}` come from `[upstream]`.
    pub issuer: String,
    /// `client_secret_basic` or `client_secret_post`.
    pub token_auth_method: String,
    pub scopes: Vec<String>,
    pub userinfo_at_login: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogoutStyle {
    /// OIDC RP-Initiated Logout at the discovered `end_session_endpoint`.
    Oidc,
    /// Auth0's `/v2/logout?client_id=&returnTo=`.
    Auth0,
    /// Cognito's `/logout?client_id=&logout_uri=`.
    Cognito,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogoutDef {
    pub style: LogoutStyle,
    /// Path on the upstream's host, for the vendor styles.
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordDef {
    pub grant: String,
    #[serde(default)]
    pub realm_param: Option<String>,
    #[serde(default)]
    pub only_if_discovered: bool,
    /// How the end user's address goes with the password, so the vendor's
    /// brute-force protection counts the user's attempts and not
    /// Switchyard's (absent: the vendor has no such mechanism for a server).
    /// `[upstream] forward_client_ip = false` turns it off.
    #[serde(default)]
    pub client_ip: Option<ClientIpCarrier>,
}

/// Where a vendor documents a trusted server's end-user address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientIpCarrier {
    /// Auth0's `auth0-forwarded-for` header on the token endpoint, honoured
    /// for a confidential client with "Trust Token Endpoint IP Header" on
    /// (Auth0, "Avoid Common Issues with Resource Owner Password Flow and
    /// Attack Protection").
    Auth0ForwardedFor,
    /// `X-Forwarded-For`, honoured when the sender's address is a trusted
    /// proxy of a network zone (Okta, "X-Forwarded-For header usage").
    XForwardedFor,
    /// `UserContextData.IpAddress` in `InitiateAuth`, accepted when the app
    /// client has `EnablePropagateAdditionalUserContextData` (Cognito API
    /// reference, `UserContextDataType` and `UserPoolClientType`).
    CognitoUserContextData,
}

/// How the upstream's user-listing API is reached, paged and read (the
/// backfill and verify jobs, `src/jobs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementDef {
    /// Base URL template; `[upstream.management] base` overrides it.
    pub base: String,
    /// `audience` of the client-credentials token (Auth0).
    #[serde(default)]
    pub audience: Option<String>,
    pub auth: ManagementAuth,
    pub paging: Paging,
    /// Users per request: the vendor's maximum.
    pub page_size: u32,
    /// How the upstream's user record maps onto the local user.
    pub fields: FieldsDef,
    /// `record`: the record is shaped like the upstream's ID-token claims
    /// (Auth0) and becomes the stored profile, less `volatile` fields;
    /// `standard`: standard OIDC claims are built from the mapped fields.
    #[serde(default)]
    pub claims: ClaimsSource,
    /// Fields that change on every login and mean nothing to a backfill.
    #[serde(default)]
    pub volatile: Vec<String>,
    /// How a user is marked migrated at the upstream (`[upstream.management]
    /// mark_migrated`); absent when the provider cannot be written to.
    #[serde(default)]
    pub mark_migrated: Option<WriteDef>,
    /// How local changes are written back (`[upstream.management]
    /// write_back`): `[management.write.password]`, `….profile`, `….block`
    /// and `….unblock`; a change with no definition cannot be written back.
    #[serde(default)]
    pub write: WritesDef,
    /// How one user is read (`[management.read.user]`, `{id}`) or found by
    /// email (`[management.read.by_email]`, `{email}`, answering a list):
    /// what the Management API on Switchyard reads through while the
    /// upstream is the primary. Absent: no read-through.
    #[serde(default)]
    pub read: ReadsDef,
}

/// The reads of one user, as data like the writes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadsDef {
    #[serde(default)]
    pub user: Option<WriteDef>,
    #[serde(default)]
    pub by_email: Option<WriteDef>,
}

/// The write-back definitions of a provider, one per local change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WritesDef {
    /// `{password}` is the new password (never stored in plaintext).
    #[serde(default)]
    pub password: Option<WriteDef>,
    /// `{email?}`, `{email_verified?}`, `{name?}`, `{given_name?}`,
    /// `{family_name?}`, `{nickname?}`: the fields the change set.
    #[serde(default)]
    pub profile: Option<WriteDef>,
    #[serde(default)]
    pub block: Option<WriteDef>,
    #[serde(default)]
    pub unblock: Option<WriteDef>,
    /// Creates a user (the Management API's `POST users` while the
    /// upstream is the primary): the profile variables, `{password}`,
    /// `{connection}`, `{user_metadata?}`, `{app_metadata?}`,
    /// `{blocked?}`; it answers the new user's record.
    #[serde(default)]
    pub create: Option<WriteDef>,
    #[serde(default)]
    pub delete: Option<WriteDef>,
}

impl WritesDef {
    /// Whether the provider can write changes of `kind`.
    pub fn has(&self, kind: WriteKind) -> bool {
        match kind {
            WriteKind::Password => self.password.is_some(),
            WriteKind::Profile => self.profile.is_some(),
            WriteKind::Blocked => self.block.is_some() && self.unblock.is_some(),
            WriteKind::Delete => self.delete.is_some(),
        }
    }
}

/// One write of the Management API, described as data: `method` on `path`
/// (under the base) with `body`, whose keys and string values are
/// templates. `{id}` is the upstream user id (percent-encoded in the path),
/// `{username}` the upstream user name (the id when there is none), the
/// `[upstream]` values (`{user_pool_id}`, `{realm}`, `{connection}`, …),
/// and each write's own (the mark's `{attribute}` and `{at}`, the RFC 3339
/// migration time). A string that is one `{var}` whole takes the value's
/// JSON type (a boolean stays a boolean); `{var?}` is optional: an object
/// member whose variable is absent is left out, and so is an array element
/// holding one (Cognito's `UserAttributes`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteDef {
    pub method: String,
    pub path: String,
    /// `X-Amz-Target` of an AWS JSON 1.1 operation (Cognito).
    #[serde(default)]
    pub target: Option<String>,
    /// The write replaces the whole record (Keycloak's PUT): GET `path`
    /// first and send back what it returned with `body` merged in.
    #[serde(default)]
    pub read_first: bool,
    /// The mark's default attribute name; `[upstream.management]
    /// mark_migrated_attribute` overrides it.
    #[serde(default)]
    pub attribute: Option<String>,
    /// No body when absent (Okta's lifecycle operations).
    #[serde(default)]
    pub body: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManagementAuth {
    /// A bearer token from the client-credentials grant (Auth0, Keycloak).
    ClientCredentials,
    /// `Authorization: SSWS <api token>` (Okta).
    Ssws,
    /// AWS Signature Version 4 (Cognito's `cognito-idp` API).
    Sigv4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Paging {
    /// Auth0: an export job for a full run, `created_at`/`updated_at`
    /// windows under the 1,000-result cap for `--since`.
    Auth0,
    /// `Link: <…>; rel="next"` (Okta).
    Link,
    /// `ListUsers` with `PaginationToken` (Cognito).
    Cognito,
    /// `first`/`max` offsets and a `/count` endpoint (Keycloak).
    FirstMax,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimsSource {
    Record,
    #[default]
    Standard,
}

/// Dotted paths into the upstream's user record.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldsDef {
    pub id: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub given_name: Option<String>,
    #[serde(default)]
    pub family_name: Option<String>,
    #[serde(default)]
    pub nickname: Option<String>,
    #[serde(default)]
    pub picture: Option<String>,
    #[serde(default)]
    pub phone_number: Option<String>,
    #[serde(default)]
    pub user_metadata: Option<String>,
    #[serde(default)]
    pub app_metadata: Option<String>,
    /// The field that says whether the user is blocked …
    #[serde(default)]
    pub blocked: Option<String>,
    /// … and the values of it that mean blocked (default: `true`).
    #[serde(default)]
    pub blocked_values: Option<Vec<serde_json::Value>>,
    /// A list of linked identities, each `{provider, user_id}` (Auth0).
    #[serde(default)]
    pub identities: Option<String>,
    /// The upstream's last login, an RFC 3339 time (Auth0 `last_login`,
    /// Okta `lastLogin`); kept beside the profile for `report dormant`, and
    /// read before `volatile` fields are dropped from the claims.
    #[serde(default)]
    pub last_login: Option<String>,
}

impl FieldsDef {
    /// The top-level source fields the mapping reads (the first segment of
    /// each dotted path), in mapping order, each once.
    pub fn source_fields(&self) -> Vec<&str> {
        let paths = [
            Some(&self.id),
            self.email.as_ref(),
            self.email_verified.as_ref(),
            self.username.as_ref(),
            self.name.as_ref(),
            self.given_name.as_ref(),
            self.family_name.as_ref(),
            self.nickname.as_ref(),
            self.picture.as_ref(),
            self.phone_number.as_ref(),
            self.user_metadata.as_ref(),
            self.app_metadata.as_ref(),
            self.blocked.as_ref(),
            self.identities.as_ref(),
            self.last_login.as_ref(),
        ];
        let mut out: Vec<&str> = Vec::new();
        for path in paths.into_iter().flatten() {
            let top = path.split('.').next().unwrap_or(path);
            if !out.contains(&top) {
                out.push(top);
            }
        }
        out
    }
}

/// Claim names the local user's fields are read from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileDef {
    pub id: String,
    pub email: String,
    pub email_verified: String,
    pub username: String,
    pub name: String,
    pub given_name: String,
    pub family_name: String,
    pub nickname: String,
    pub picture: String,
    pub phone_number: String,
}

/// Which upstream claims Switchyard's tokens carry, spelled as the upstream
/// spelled them, so applications read what they always read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimsDef {
    pub copy: Vec<String>,
    /// Claims whose names are URLs (Auth0's namespaced custom claims).
    pub copy_namespaced: bool,
    #[serde(default)]
    pub copy_prefixes: Vec<String>,
}

impl ClaimsDef {
    /// True when `name` is a claim to carry into Switchyard's tokens.
    pub fn carries(&self, name: &str) -> bool {
        self.copy.iter().any(|c| c == name)
            || (self.copy_namespaced
                && (name.starts_with("https://") || name.starts_with("http://")))
            || self
                .copy_prefixes
                .iter()
                .any(|p| name.starts_with(p.as_str()))
    }
}

impl ProviderDef {
    /// The built-in definition `name`, or a TOML file when `name` is a path.
    pub fn load(name: &str) -> Result<Self, String> {
        let source = match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((_, s)) => s.to_string(),
            None if name.ends_with(".toml") => std::fs::read_to_string(name)
                .map_err(|e| format!("cannot read provider file {name}: {e}"))?,
            None => {
                let known: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "unknown provider {name:?}: use one of {} or a path to a .toml file",
                    known.join(", ")
                ));
            }
        };
        toml::from_str(&source).map_err(|e| format!("provider {name}: {e}"))
    }

    /// The upstream issuer: the operator's override, or the template filled in.
    pub fn issuer(&self, settings: &UpstreamSettings) -> Result<String, String> {
        if let Some(issuer) = &settings.issuer {
            return Ok(issuer.clone());
        }
        fill(&self.oidc.issuer, &settings.template_vars())
    }
}

/// What checking the settings needs of the provider `[upstream]` names (see
/// `Settings::check`): found here, where definitions are read, and handed
/// down to the plain settings.
pub fn facts(settings: &UpstreamSettings) -> Result<ProviderFacts, String> {
    let def = ProviderDef::load(&settings.provider)?;
    let write_back = match &def.management {
        Some(m) => WriteKind::ALL
            .iter()
            .copied()
            .filter(|k| m.write.has(*k))
            .collect(),
        None => Vec::new(),
    };
    Ok(ProviderFacts {
        issuer: def.issuer(settings).map(drop),
        mark_migrated: def.management.map(|m| m.mark_migrated.is_some()),
        write_back,
    })
}

/// Replaces `{var}` in `template`; a variable that is not set is an error
/// naming the `[upstream]` key to set.
pub fn fill(template: &str, vars: &BTreeMap<&'static str, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| format!("unclosed {{ in {template:?}"))?
            + start;
        let var = &rest[start + 1..end];
        let value = vars.get(var).ok_or_else(|| {
            format!("set upstream.{var} (the provider's template is {template:?})")
        })?;
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth0_exports_every_field_its_mapping_reads_once() {
        let auth0 = ProviderDef::load("auth0").unwrap().management.unwrap();
        // Its id, every field verify compares, and the last login.
        let expected: Vec<&str> = std::iter::once("user_id")
            .chain(crate::store::record::COMPARED.iter().copied())
            .chain(["last_login"])
            .collect();
        assert_eq!(auth0.fields.source_fields(), expected);
        // Okta's dotted paths name one top-level field each.
        let okta = ProviderDef::load("okta").unwrap().management.unwrap();
        let fields = okta.fields.source_fields();
        assert!(fields.contains(&"profile") && fields.contains(&"id"));
        assert_eq!(fields.iter().filter(|f| **f == "profile").count(), 1);
    }

    #[test]
    fn every_builtin_provider_parses() {
        for (name, _) in BUILTIN {
            let def = ProviderDef::load(name).unwrap();
            assert!(def.oidc.scopes.contains(&"openid".to_string()), "{name}");
        }
    }

    #[test]
    fn issuer_templates_are_filled_from_the_operator_settings() {
        let mut s = UpstreamSettings::for_provider("auth0");
        s.domain = Some("acme.eu.auth0.com".into());
        assert_eq!(
            ProviderDef::load("auth0").unwrap().issuer(&s).unwrap(),
            "https://acme.eu.auth0.com/"
        );
        let mut s = UpstreamSettings::for_provider("cognito");
        s.region = Some("eu-west-1".into());
        assert!(
            ProviderDef::load("cognito")
                .unwrap()
                .issuer(&s)
                .unwrap_err()
                .contains("upstream.user_pool_id")
        );
        s.user_pool_id = Some("eu-west-1_AbC".into());
        assert_eq!(
            ProviderDef::load("cognito").unwrap().issuer(&s).unwrap(),
            "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC"
        );
        let mut s = UpstreamSettings::for_provider("okta");
        s.domain = Some("acme.okta.com".into());
        assert_eq!(
            ProviderDef::load("okta").unwrap().issuer(&s).unwrap(),
            "https://acme.okta.com/oauth2/default"
        );
    }

    #[test]
    fn namespaced_and_prefixed_claims_are_carried() {
        let auth0 = ProviderDef::load("auth0").unwrap().claims;
        assert!(auth0.carries("https://example.com/roles"));
        assert!(auth0.carries("nickname"));
        assert!(!auth0.carries("sub"));
        let cognito = ProviderDef::load("cognito").unwrap().claims;
        assert!(cognito.carries("custom:tenant"));
    }
}
