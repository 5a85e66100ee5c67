//! The upstream's Management API, as backfill and verify use it: one
//! authenticated, paced, retrying client, and one [`Source`] per paging
//! style (the provider definition's `[management] paging`).
//!
//! Retries: a 429 (or Cognito's `TooManyRequestsException`) waits
//! `Retry-After`, or until the reset header, plus jitter; a 5xx, a timeout
//! or a dropped connection backs off exponentially with full jitter (AWS
//! Architecture Blog, "Exponential Backoff And Jitter"), up to
//! [`MAX_ATTEMPTS`]. Other 4xx answers are the operator's to fix (wrong
//! credentials, missing scope) and stop the job with the vendor's message.
//! Secrets and tokens never appear in an error or a log line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow, bail};
use http::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore};

use super::files::Item;
use super::mapping::{self, flatten_cognito};
use super::pacer::{self, Model, Pacer};
use crate::config::UpstreamSettings;
use crate::store::jobs::Rejected;
use crate::upstream::provider::{
    ManagementAuth, ManagementDef, MarkDef, Paging, ProviderDef, fill,
};

pub const MAX_ATTEMPTS: u32 = 8;

/// A failure the job cannot retry its way out of.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub String);

/// The upstream refused the request with a 4xx other than 429: retrying
/// the same request cannot help (no such user, a missing scope, a schema
/// without the attribute). The message is the vendor's, bounded.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub status: StatusCode,
    pub message: String,
}

/// An export file's pre-signed link that no longer works (it lives
/// minutes): a fresh export job is needed.
#[derive(Debug, thiserror::Error)]
#[error("the export file's link answered {0}: it has expired")]
pub struct LinkExpired(pub StatusCode);

/// What the client has done, for the summary and the benchmark.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub throttled: AtomicU64,
    pub retried: AtomicU64,
}

struct Credentials {
    client_id: String,
    client_secret: Option<String>,
    api_token: Option<String>,
    aws: Option<aws_credential_types::Credentials>,
}

pub struct ManagementClient {
    pub def: ProviderDef,
    pub mgmt: ManagementDef,
    pub provider: String,
    settings: UpstreamSettings,
    base: url::Url,
    http: reqwest::Client,
    creds: Credentials,
    token: Mutex<Option<(String, std::time::Instant)>>,
    pacer: Pacer,
    permits: Semaphore,
    pub stats: Stats,
}

fn env_secret(var: &str, key: &str) -> anyhow::Result<String> {
    std::env::var(var).map_err(|_| anyhow!("{key}: the environment variable {var} is not set"))
}

impl ManagementClient {
    pub fn new(
        settings: &UpstreamSettings,
        max_rate: Option<f64>,
        concurrency: Option<usize>,
    ) -> anyhow::Result<Self> {
        let def = ProviderDef::load(&settings.provider).map_err(anyhow::Error::msg)?;
        let mgmt = def.management.clone().with_context(|| {
            format!(
                "provider {} has no [management] section: backfill and verify need one",
                settings.provider
            )
        })?;
        let m = &settings.management;
        let base = match &m.base {
            Some(b) => b.clone(),
            None => fill(&mgmt.base, &settings.template_vars()).map_err(anyhow::Error::msg)?,
        };
        let mut base = url::Url::parse(&base).context("upstream.management.base is not a URL")?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let client_secret = match m
            .client_secret_env
            .as_ref()
            .or(settings.client_secret_env.as_ref())
        {
            Some(var) => Some(env_secret(var, "upstream.management.client_secret_env")?),
            None => None,
        };
        let api_token = match (mgmt.auth, &m.api_token_env) {
            (ManagementAuth::Ssws, Some(var)) => {
                Some(env_secret(var, "upstream.management.api_token_env")?)
            }
            (ManagementAuth::Ssws, None) => {
                bail!("upstream.management.api_token_env: Okta's Users API needs an API token")
            }
            _ => None,
        };
        let aws = if mgmt.auth == ManagementAuth::Sigv4 {
            let var =
                |v: &Option<String>, default: &str| v.clone().unwrap_or_else(|| default.into());
            let id_var = var(&m.aws_access_key_id_env, "AWS_ACCESS_KEY_ID");
            let secret_var = var(&m.aws_secret_access_key_env, "AWS_SECRET_ACCESS_KEY");
            let token_var = var(&m.aws_session_token_env, "AWS_SESSION_TOKEN");
            Some(aws_credential_types::Credentials::new(
                env_secret(&id_var, "upstream.management.aws_access_key_id_env")?,
                env_secret(&secret_var, "upstream.management.aws_secret_access_key_env")?,
                std::env::var(&token_var).ok(),
                None,
                "switchyard",
            ))
        } else {
            None
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.timeout_secs.max(30)))
            .connect_timeout(Duration::from_secs(settings.timeout_secs.min(10)))
            // A redirect could carry the bearer token to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let model = match mgmt.paging {
            Paging::Auth0 => Model::Bucket,
            _ => Model::Window,
        };
        let concurrency = concurrency.or(m.concurrency).unwrap_or(4).max(1);
        Ok(Self {
            provider: settings.provider.clone(),
            creds: Credentials {
                client_id: m
                    .client_id
                    .clone()
                    .unwrap_or_else(|| settings.client_id.clone()),
                client_secret,
                api_token,
                aws,
            },
            settings: settings.clone(),
            def,
            mgmt,
            base,
            http,
            token: Mutex::new(None),
            pacer: Pacer::new(model, max_rate.or(m.max_rate)),
            permits: Semaphore::new(concurrency),
            stats: Stats::default(),
        })
    }

    /// How often an export job is polled.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs_f64(
            self.settings
                .management
                .export_poll_secs
                .unwrap_or(2.0)
                .clamp(0.01, 60.0),
        )
    }

    pub fn url(&self, path: &str) -> anyhow::Result<url::Url> {
        Ok(self.base.join(path)?)
    }

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
        let doc: Value = self
            .http
            .get(&url)
            .send()
            .await
            .context("fetching the upstream's discovery document")?
            .error_for_status()
            .context("fetching the upstream's discovery document")?
            .json()
            .await
            .context("the upstream's discovery document is not JSON")?;
        doc["token_endpoint"]
            .as_str()
            .map(String::from)
            .context("the upstream's discovery document names no token_endpoint")
    }

    /// A Management API bearer token by the client-credentials grant,
    /// cached until shortly before it expires.
    async fn bearer(&self, renew: bool) -> anyhow::Result<String> {
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
        let body: Value = response.json().await.unwrap_or(Value::Null);
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

    /// Sends one request through the pacer, with retries. `body` is JSON
    /// for POSTs; `target` is the AWS JSON 1.1 operation.
    pub async fn call(
        &self,
        method: Method,
        url: url::Url,
        body: Option<&Value>,
        target: Option<&str>,
    ) -> anyhow::Result<(Value, HeaderMap)> {
        self.call_with(method, url, body, target, MAX_ATTEMPTS)
            .await
    }

    /// [`ManagementClient::call`] with at most `attempts` tries: the outbox
    /// keeps its own, much longer, schedule of retries.
    pub async fn call_with(
        &self,
        method: Method,
        url: url::Url,
        body: Option<&Value>,
        target: Option<&str>,
        attempts: u32,
    ) -> anyhow::Result<(Value, HeaderMap)> {
        let mut renewed = false;
        // What the last failed try saw, for the error once tries run out.
        let mut last = String::from("no answer");
        for attempt in 0..attempts {
            let _permit = self.permits.acquire().await?;
            self.pacer.acquire().await;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let request = self.build(&method, &url, body, target).await?;
            let response = match self.http.execute(request).await {
                Ok(r) => r,
                Err(e) => {
                    self.pacer.observe(&HeaderMap::new(), false);
                    let why = if e.is_timeout() {
                        "timed out"
                    } else {
                        "connection failed"
                    };
                    tracing::warn!(url = %redact(&url), attempt, "management request {why}");
                    last = why.to_string();
                    self.backoff(attempt).await;
                    continue;
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.bytes().await.unwrap_or_default();
            let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let throttled = status == StatusCode::TOO_MANY_REQUESTS
                || json["__type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("TooManyRequestsException"));
            self.pacer.observe(&headers, throttled);
            if throttled || status.is_server_error() {
                last = format!("answered {status}: {}", vendor_message(&json));
            }
            if throttled {
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                let pause = pacer::retry_after(&headers, SystemTime::now())
                    .or_else(|| {
                        pacer::observed(&headers, pacer::epoch_now()).map(|o| {
                            Duration::from_secs_f64((o.reset - pacer::epoch_now()).max(0.0))
                        })
                    })
                    .unwrap_or_else(|| backoff_delay(attempt));
                let pause = pause + jitter(Duration::from_millis(250));
                tracing::info!(url = %redact(&url), pause_ms = pause.as_millis() as u64, "rate limited; waiting");
                self.pacer.throttled(pause);
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if status.is_server_error() {
                tracing::warn!(url = %redact(&url), %status, attempt, "management request failed; retrying");
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                self.backoff(attempt).await;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED
                && self.mgmt.auth == ManagementAuth::ClientCredentials
                && !renewed
            {
                // The cached token expired early or was revoked: one new one.
                renewed = true;
                self.bearer(true).await?;
                continue;
            }
            if !status.is_success() {
                return Err(Refused {
                    status,
                    message: format!(
                        "{} {} answered {status}: {}",
                        method,
                        redact(&url),
                        vendor_message(&json)
                    ),
                }
                .into());
            }
            if json.is_null() && !bytes.is_empty() {
                bail!("{} answered something that is not JSON", redact(&url));
            }
            return Ok((json, headers));
        }
        Err(Fatal(format!(
            "{} {}: still failing after {attempts} attempts (last {last})",
            method,
            redact(&url)
        ))
        .into())
    }

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

    async fn backoff(&self, attempt: u32) {
        tokio::time::sleep(jitter(backoff_delay(attempt))).await;
    }

    async fn build(
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

    /// The body of a download URL (Auth0's export file): no credentials are
    /// sent, the URL itself is the authorisation (a pre-signed URL), and
    /// it must not go through the Management API's bearer token.
    pub async fn download(&self, location: &str, into: &std::path::Path) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        let url = url::Url::parse(location).context("the export location is not a URL")?;
        for attempt in 0..MAX_ATTEMPTS {
            let response = match self.http.get(url.clone()).send().await {
                Ok(r) if r.status().is_server_error() => None,
                Ok(r) => Some(r),
                Err(_) => None,
            };
            let Some(mut response) = response else {
                self.backoff(attempt).await;
                continue;
            };
            let status = response.status();
            if matches!(
                status,
                StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::GONE
            ) {
                return Err(LinkExpired(status).into());
            }
            if !status.is_success() {
                return Err(Fatal(format!("downloading the export answered {status}")).into());
            }
            let mut file = tokio::fs::File::create(into).await?;
            while let Some(chunk) = response.chunk().await? {
                file.write_all(&chunk).await?;
            }
            file.flush().await?;
            return Ok(());
        }
        Err(Fatal("the export download kept failing".into()).into())
    }

    pub fn record(&self, raw: &Value, line: Option<u64>) -> Item {
        let raw = if self.mgmt.paging == Paging::Cognito {
            flatten_cognito(raw)
        } else {
            raw.clone()
        };
        mapping::map_record(&self.def, &self.mgmt, raw)
            .map(|mut r| {
                r.line = line;
                r
            })
            .map_err(|reason| Rejected {
                line,
                user_id: None,
                reason,
            })
    }

    pub fn stats(&self) -> (u64, u64, u64) {
        (
            self.stats.requests.load(Ordering::Relaxed),
            self.stats.throttled.load(Ordering::Relaxed),
            self.stats.retried.load(Ordering::Relaxed),
        )
    }
}

impl ManagementClient {
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

fn backoff_delay(attempt: u32) -> Duration {
    Duration::from_millis((250u64 << attempt.min(7)).min(30_000))
}

/// Full jitter: a uniformly random share of `d`.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut b);
    let f = u32::from_le_bytes(b) as f64 / u32::MAX as f64;
    d.mul_f64(0.5 + f / 2.0)
}

/// A URL without its query (pagination cursors and searches are not
/// secrets, but they are noise, and some vendors put tokens there).
fn redact(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

/// The message of a vendor's error body, bounded and without control
/// characters: Auth0 `message`, Okta `errorSummary`, AWS `message`,
/// OAuth `error_description`.
fn vendor_message(body: &Value) -> String {
    let m = [
        "message",
        "errorSummary",
        "error_description",
        "Message",
        "error",
    ]
    .iter()
    .find_map(|k| body.get(*k).and_then(Value::as_str))
    .unwrap_or("no error message");
    m.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// One page of a source: its records, where the chunk continues (none: it
/// is finished), and chunks it splits into.
pub struct Page {
    pub items: Vec<Item>,
    pub next: Option<Value>,
    pub split: Vec<Value>,
}

/// The chunks a job starts with.
pub fn initial_chunks(paging: Paging, since: Option<&str>) -> Vec<Value> {
    match (paging, since) {
        (Paging::Auth0, None) => vec![json!({"export": {"job": null, "records": 0}})],
        (Paging::Auth0, Some(since)) => vec![json!({
            "window": [since, chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()],
            "page": 0
        })],
        // A plain list leaves out deprovisioned users; a search includes
        // every status (Okta, "List users").
        (Paging::Link, None) => vec![
            json!({"next": null, "search": null}),
            json!({"next": null, "search": "status eq \"DEPROVISIONED\""}),
        ],
        (Paging::Link, Some(since)) => {
            vec![json!({"next": null, "search": format!("lastUpdated gt \"{since}\"")})]
        }
        (Paging::Cognito, _) => vec![json!({"token": null})],
        (Paging::FirstMax, _) => vec![json!({"count": true})],
    }
}

impl ManagementClient {
    /// Fetches the page a chunk's spec points at. (Auth0's export chunk is
    /// streamed by the backfill itself, see `backfill::export`.)
    pub async fn page(&self, spec: &Value) -> anyhow::Result<Page> {
        match self.mgmt.paging {
            Paging::Auth0 => self.auth0_window(spec).await,
            Paging::Link => self.link_page(spec).await,
            Paging::Cognito => self.cognito_page(spec).await,
            Paging::FirstMax => self.first_max_page(spec).await,
        }
    }

    /// An `updated_at` window of Auth0's user search: split in two while
    /// it holds more than the 1,000 results a query may page through.
    async fn auth0_window(&self, spec: &Value) -> anyhow::Result<Page> {
        let from = spec["window"][0].as_str().context("window")?;
        let to = spec["window"][1].as_str().context("window")?;
        let page = spec["page"].as_u64().unwrap_or(0);
        let per_page = self.mgmt.page_size as u64;
        let mut url = self.url("users")?;
        url.query_pairs_mut()
            .append_pair("q", &format!("updated_at:[\"{from}\" TO \"{to}\"}}"))
            .append_pair("search_engine", "v3")
            .append_pair("per_page", &per_page.to_string())
            .append_pair("page", &page.to_string())
            .append_pair("include_totals", "true")
            .append_pair("sort", "updated_at:1");
        let (body, _) = self.call(Method::GET, url, None, None).await?;
        let total = body["total"].as_u64().unwrap_or(0);
        if page == 0 && total > 1000 {
            let (a, b) = (parse_time(from)?, parse_time(to)?);
            if b - a <= chrono::Duration::milliseconds(1) {
                bail!(
                    "more than 1,000 users were updated within one millisecond ({from}); \
                     run a full backfill (an export job) instead of --since"
                );
            }
            let mid = a + (b - a) / 2;
            let mid = mid.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
            return Ok(Page {
                items: Vec::new(),
                next: None,
                split: vec![
                    json!({"window": [from, mid], "page": 0}),
                    json!({"window": [mid, to], "page": 0}),
                ],
            });
        }
        let users = body["users"].as_array().cloned().unwrap_or_default();
        let items = users.iter().map(|u| self.record(u, None)).collect();
        let next = ((page + 1) * per_page < total && !users.is_empty())
            .then(|| json!({"window": [from, to], "page": page + 1}));
        Ok(Page {
            items,
            next,
            split: Vec::new(),
        })
    }

    /// Okta: `limit=200`, then whatever `Link: <…>; rel="next"` says.
    async fn link_page(&self, spec: &Value) -> anyhow::Result<Page> {
        let url = match spec["next"].as_str() {
            Some(next) => {
                let next = url::Url::parse(next)?;
                // The cursor URL comes from the upstream's header: it must
                // stay on the upstream, where the API token may go.
                if next.origin() != self.base.origin() {
                    bail!("the upstream's next-page link points to another host");
                }
                next
            }
            None => {
                let mut url = self.url("users")?;
                url.query_pairs_mut()
                    .append_pair("limit", &self.mgmt.page_size.to_string());
                if let Some(search) = spec["search"].as_str() {
                    url.query_pairs_mut().append_pair("search", search);
                }
                url
            }
        };
        let (body, headers) = self.call(Method::GET, url, None, None).await?;
        let users = body.as_array().cloned().unwrap_or_default();
        let next = next_link(&headers).map(|n| json!({"next": n, "search": spec["search"]}));
        Ok(Page {
            items: users.iter().map(|u| self.record(u, None)).collect(),
            next,
            split: Vec::new(),
        })
    }

    /// Cognito `ListUsers`: `Limit` ≤ 60 and `PaginationToken`.
    async fn cognito_page(&self, spec: &Value) -> anyhow::Result<Page> {
        let pool = self
            .settings
            .user_pool_id
            .clone()
            .context("set upstream.user_pool_id")?;
        let mut body = json!({"UserPoolId": pool, "Limit": self.mgmt.page_size.min(60)});
        if let Some(token) = spec["token"].as_str() {
            body["PaginationToken"] = Value::String(token.into());
        }
        let (answer, _) = self
            .call(
                Method::POST,
                self.base.clone(),
                Some(&body),
                Some("AWSCognitoIdentityProviderService.ListUsers"),
            )
            .await?;
        let users = answer["Users"].as_array().cloned().unwrap_or_default();
        let next = answer["PaginationToken"]
            .as_str()
            .map(|t| json!({"token": t}));
        Ok(Page {
            items: users.iter().map(|u| self.record(u, None)).collect(),
            next,
            split: Vec::new(),
        })
    }

    /// Keycloak: `users/count` once, then one chunk per `first`/`max` page,
    /// and a tail chunk that pages on until empty for users added meanwhile.
    async fn first_max_page(&self, spec: &Value) -> anyhow::Result<Page> {
        let max = self.mgmt.page_size as u64;
        if spec["count"].as_bool() == Some(true) {
            let (count, _) = self
                .call(Method::GET, self.url("users/count")?, None, None)
                .await?;
            let count = count.as_u64().context("users/count is not a number")?;
            let mut split: Vec<Value> = (0..count.div_ceil(max))
                .map(|i| json!({"first": i * max}))
                .collect();
            split.push(json!({"first": count.div_ceil(max) * max, "tail": true}));
            return Ok(Page {
                items: Vec::new(),
                next: None,
                split,
            });
        }
        let first = spec["first"].as_u64().unwrap_or(0);
        let mut url = self.url("users")?;
        url.query_pairs_mut()
            .append_pair("first", &first.to_string())
            .append_pair("max", &max.to_string())
            .append_pair("briefRepresentation", "false");
        let (body, _) = self.call(Method::GET, url, None, None).await?;
        let users = body.as_array().cloned().unwrap_or_default();
        let tail = spec["tail"].as_bool() == Some(true);
        let next = (tail && users.len() as u64 == max)
            .then(|| json!({"first": first + max, "tail": true}));
        Ok(Page {
            items: users.iter().map(|u| self.record(u, None)).collect(),
            next,
            split: Vec::new(),
        })
    }

    /// How many users the upstream holds, where one request tells
    /// (Auth0's `include_totals`, Keycloak's `users/count`): the progress
    /// bar's length. `None` elsewhere, or when the request fails.
    pub async fn total_users(&self) -> Option<u64> {
        let url = match self.mgmt.paging {
            Paging::Auth0 => {
                let mut url = self.url("users").ok()?;
                url.query_pairs_mut()
                    .append_pair("per_page", "1")
                    .append_pair("include_totals", "true")
                    .append_pair("search_engine", "v3");
                url
            }
            Paging::FirstMax => self.url("users/count").ok()?,
            Paging::Link | Paging::Cognito => return None,
        };
        let (body, _) = self.call(Method::GET, url, None, None).await.ok()?;
        body.as_u64().or_else(|| body["total"].as_u64())
    }

    /// Auth0: starts a users-export job of every field the mapping reads.
    pub async fn start_export(&self) -> anyhow::Result<String> {
        // Plus the dates, which the stored profile (the record, as Auth0
        // spells its claims) carries beside the mapped fields.
        let fields: Vec<Value> = self
            .mgmt
            .fields
            .source_fields()
            .into_iter()
            .chain(["created_at", "updated_at"])
            .map(|f| json!({"name": f}))
            .collect();
        let body = json!({"format": "json", "fields": fields});
        let (job, _) = self
            .call(
                Method::POST,
                self.url("jobs/users-exports")?,
                Some(&body),
                None,
            )
            .await?;
        job["id"]
            .as_str()
            .map(String::from)
            .context("the export job has no id")
    }

    /// Auth0: the export job's state, and its file's location once completed.
    pub async fn export_status(&self, job: &str) -> anyhow::Result<(String, Option<String>)> {
        let (body, _) = self
            .call(Method::GET, self.url(&format!("jobs/{job}"))?, None, None)
            .await?;
        Ok((
            body["status"].as_str().unwrap_or("unknown").to_string(),
            body["location"].as_str().map(String::from),
        ))
    }
}

impl ManagementClient {
    /// Auth0: waits for an export job to complete and returns its file's
    /// location; `None` when the job failed.
    pub async fn wait_for_export(
        &self,
        job: &str,
        poll: Duration,
    ) -> anyhow::Result<Option<String>> {
        loop {
            match self.export_status(job).await? {
                (status, Some(location)) if status == "completed" => return Ok(Some(location)),
                (status, _) if status == "failed" => return Ok(None),
                _ => tokio::time::sleep(poll).await,
            }
        }
    }

    /// Reads a downloaded export file on a blocking thread, `batch` records
    /// at a time after skipping `skip`.
    pub fn stream_export(
        self: &Arc<Self>,
        path: &std::path::Path,
        skip: u64,
        batch: usize,
    ) -> anyhow::Result<(
        tokio::sync::mpsc::Receiver<Vec<Item>>,
        tokio::task::JoinHandle<()>,
    )> {
        let reader = super::files::open(&path.to_string_lossy())?;
        let client = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Item>>(4);
        let reading = tokio::task::spawn_blocking(move || {
            let lines = super::files::Lines::new(reader).skip(skip as usize);
            let mut items = Vec::with_capacity(batch);
            for line in lines {
                items.push(line.and_then(|(n, bytes)| {
                    let raw: Value = serde_json::from_slice(&bytes).map_err(|e| Rejected {
                        line: Some(n),
                        user_id: None,
                        reason: format!("malformed JSON in the export: {e}"),
                    })?;
                    client.record(&raw, Some(n))
                }));
                if items.len() == batch && tx.blocking_send(std::mem::take(&mut items)).is_err() {
                    return;
                }
            }
            if !items.is_empty() {
                let _ = tx.blocking_send(items);
            }
        });
        Ok((rx, reading))
    }

    /// Every user the upstream lists, a page (or an export batch) at a
    /// time, without a job: what `verify` reads.
    pub async fn walk(
        self: &Arc<Self>,
        poll: Duration,
        mut each: impl FnMut(Vec<Item>),
    ) -> anyhow::Result<()> {
        let mut queue: std::collections::VecDeque<Value> =
            initial_chunks(self.mgmt.paging, None).into();
        while let Some(mut spec) = queue.pop_front() {
            if spec.get("export").is_some() {
                let job = self.start_export().await?;
                let location = self
                    .wait_for_export(&job, poll)
                    .await?
                    .with_context(|| format!("the upstream's export job {job} failed"))?;
                let path = std::env::temp_dir().join(format!(
                    "switchyard-verify-{}-{job}.ndjson.gz",
                    std::process::id()
                ));
                let result = async {
                    self.download(&location, &path).await?;
                    let (mut rx, reading) = self.stream_export(&path, 0, 1000)?;
                    while let Some(items) = rx.recv().await {
                        each(items);
                    }
                    reading.await?;
                    anyhow::Ok(())
                }
                .await;
                let _ = std::fs::remove_file(&path);
                result?;
                continue;
            }
            loop {
                let Page { items, next, split } = self.page(&spec).await?;
                each(items);
                queue.extend(split);
                match next {
                    Some(n) => spec = n,
                    None => break,
                }
            }
        }
        Ok(())
    }
}

/// `Link: <https://…?after=…>; rel="next"` (RFC 8288).
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|link| {
            let (target, params) = link.split_once(';')?;
            let is_next = params.split(';').any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            is_next.then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
        })
}

fn parse_time(t: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    Ok(chrono::DateTime::parse_from_rfc3339(t)
        .with_context(|| format!("{t} is not an RFC 3339 time"))?
        .with_timezone(&chrono::Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::LINK,
            "<https://x.okta.com/api/v1/users?limit=200>; rel=\"self\""
                .parse()
                .unwrap(),
        );
        h.append(
            http::header::LINK,
            "<https://x.okta.com/api/v1/users?after=00u2&limit=200>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://x.okta.com/api/v1/users?after=00u2&limit=200")
        );
        h.remove(http::header::LINK);
        assert_eq!(next_link(&h), None);
    }

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

    #[test]
    fn vendor_messages_are_bounded_and_clean() {
        assert_eq!(
            vendor_message(&json!({"errorSummary": "Invalid token\nprovided"})),
            "Invalid tokenprovided"
        );
        assert_eq!(
            vendor_message(&json!({"message": "x".repeat(1000)})).len(),
            300
        );
    }
}
