//! Authentication to the vendor's Management API, as the provider
//! definition's `[management] auth` names it:
//!
//! - `client_credentials`: an OAuth 2.0 access token by the client
//!   credentials grant (RFC 6749 §4.4) at the upstream's token endpoint,
//!   with the API's `audience` where the vendor asks for one (Auth0
//!   "Get Management API Access Tokens for Production"; Keycloak's
//!   service-account clients). The token is cached until shortly before
//!   `expires_in`, and renewed once on a 401.
//! - `ssws`: Okta's API token in `Authorization: SSWS {token}` (Okta
//!   "Create an API token").
//! - `sigv4`: AWS Signature Version 4 for the `cognito-idp` service in the
//!   pool's region (AWS "Signature Version 4 signing process").
//!
//! Secrets come from environment variables named in the settings, never
//! from the settings file itself.

use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow, bail};
use reqwest::Method;
use serde_json::Value;

use super::{ManagementClient, vendor_message};
use crate::upstream::provider::{ManagementAuth, fill};

pub(super) struct Credentials {
    pub(super) client_id: String,
    pub(super) client_secret: Option<String>,
    pub(super) api_token: Option<String>,
    pub(super) aws: Option<aws_credential_types::Credentials>,
}

impl ManagementClient {
    /// The client-credentials token endpoint: the operator's override, or
    /// the upstream's discovery document.
    async fn token_endpoint(&self) -> anyhow::Result<String> {
        if let Some(t) = &self.settings.endpoints.token {
            return Ok(t.clone());
        }
        let issuer = self
            .def
            .issuer(&self.settings)
            .map_err(anyhow::Error::msg)?;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .context("fetching the upstream's discovery document")?
            .error_for_status()
            .context("fetching the upstream's discovery document")?;
        let body = crate::upstream::read_body(response, crate::upstream::MAX_BODY_BYTES)
            .await
            .context("reading the upstream's discovery document")?;
        let doc: Value = serde_json::from_slice(&body)
            .context("the upstream's discovery document is not JSON")?;
        doc["token_endpoint"]
            .as_str()
            .map(String::from)
            .context("the upstream's discovery document names no token_endpoint")
    }

    /// A Management API bearer token by the client-credentials grant,
    /// cached until shortly before it expires.
    pub(super) async fn bearer(&self, renew: bool) -> anyhow::Result<String> {
        let mut cached = self.token.lock().await;
        if !renew
            && let Some((token, until)) = cached.as_ref()
            && std::time::Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let mut form = vec![("grant_type", "client_credentials".to_string())];
        let audience = match (&self.settings.management.audience, &self.mgmt.audience) {
            (Some(a), _) => Some(a.clone()),
            (None, Some(template)) => Some(
                fill(template, &self.settings.template_vars())
                    .map_err(|e| anyhow!("{e}, or upstream.management.audience"))?,
            ),
            (None, None) => None,
        };
        if let Some(audience) = audience {
            form.push(("audience", audience));
        }
        let endpoint = self.token_endpoint().await?;
        let mut request = self.http.post(&endpoint);
        request = match (
            self.def.oidc.token_auth_method.as_str(),
            &self.creds.client_secret,
        ) {
            ("client_secret_basic", Some(secret)) => request.basic_auth(
                form_urlencoded::byte_serialize(self.creds.client_id.as_bytes())
                    .collect::<String>(),
                Some(form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>()),
            ),
            (_, secret) => {
                form.push(("client_id", self.creds.client_id.clone()));
                if let Some(s) = secret {
                    form.push(("client_secret", s.clone()));
                }
                request
            }
        };
        let response = request
            .form(&form)
            .send()
            .await
            .context("requesting a Management API token")?;
        let status = response.status();
        let body = crate::upstream::read_body(response, crate::upstream::MAX_BODY_BYTES)
            .await
            .context("reading the Management API token answer")?;
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "the upstream refused a Management API token ({status}): {}",
                vendor_message(&body)
            );
        }
        let token = body["access_token"]
            .as_str()
            .context("the token response has no access_token")?
            .to_string();
        let ttl = body["expires_in"]
            .as_u64()
            .unwrap_or(300)
            .saturating_sub(30)
            .max(10);
        *cached = Some((
            token.clone(),
            std::time::Instant::now() + Duration::from_secs(ttl),
        ));
        Ok(token)
    }

    pub(super) async fn build(
        &self,
        method: &Method,
        url: &url::Url,
        body: Option<&Value>,
        target: Option<&str>,
    ) -> anyhow::Result<reqwest::Request> {
        let mut builder = self.http.request(method.clone(), url.clone());
        let payload = body.map(serde_json::to_vec).transpose()?;
        match self.mgmt.auth {
            ManagementAuth::ClientCredentials => {
                builder = builder.bearer_auth(self.bearer(false).await?);
            }
            ManagementAuth::Ssws => {
                let token = self.creds.api_token.as_deref().unwrap_or_default();
                builder = builder.header(http::header::AUTHORIZATION, format!("SSWS {token}"));
            }
            ManagementAuth::Sigv4 => {}
        }
        builder = builder.header(http::header::ACCEPT, "application/json");
        if let Some(target) = target {
            builder = builder
                .header(http::header::CONTENT_TYPE, "application/x-amz-json-1.1")
                .header("x-amz-target", target);
        } else if payload.is_some() {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        if let Some(p) = &payload {
            builder = builder.body(p.clone());
        }
        let mut request = builder.build()?;
        if self.mgmt.auth == ManagementAuth::Sigv4 {
            self.sign(&mut request, payload.as_deref().unwrap_or_default())?;
        }
        Ok(request)
    }

    /// AWS Signature Version 4 with the `aws-sigv4` crate, for the
    /// `cognito-idp` service in the pool's region.
    fn sign(&self, request: &mut reqwest::Request, payload: &[u8]) -> anyhow::Result<()> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        use aws_sigv4::sign::v4;
        let creds = self
            .creds
            .aws
            .clone()
            .context("AWS credentials are not set")?;
        let identity = aws_smithy_runtime_api::client::identity::Identity::from(creds);
        let region = self
            .settings
            .region
            .clone()
            .or_else(|| {
                self.settings
                    .user_pool_id
                    .as_deref()
                    .and_then(|p| p.split_once('_'))
                    .map(|(r, _)| r.to_string())
            })
            .context("set upstream.region (SigV4 signs for a region)")?;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&region)
            .name("cognito-idp")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()?
            .into();
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let signable = SignableRequest::new(
            request.method().as_str(),
            request.url().as_str(),
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(payload),
        )?;
        let (instructions, _) = sign(signable, &params)?.into_parts();
        let (new_headers, _) = instructions.into_parts();
        for header in new_headers {
            request.headers_mut().insert(
                http::HeaderName::from_bytes(header.name().as_bytes())?,
                http::HeaderValue::from_str(header.value())?,
            );
        }
        Ok(())
    }
}
