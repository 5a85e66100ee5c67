//! The upstream's Management API: one authenticated, paced, retrying
//! client, used by the jobs (backfill, verify) and by `serve`'s outbox
//! worker (the writes to the upstream).
//!
//! - [`auth`]: how each vendor's API is authenticated — an OAuth 2.0
//!   client-credentials token (Auth0, Keycloak; RFC 6749 §4.4), Okta's
//!   `SSWS` API token, or AWS Signature Version 4 (Cognito).
//! - [`pacer`]: requests run at the upstream's rate limit, not into it.
//! - [`paging`]: one page of users per vendor's paging style (the provider
//!   definition's `[management] paging`), from a typed
//!   [`ChunkPosition`](crate::store::position::ChunkPosition).
//! - [`export`]: Auth0's bulk users export, the full backfill's source.
//! - [`writes`]: the writes the outbox delivers (marking a user migrated,
//!   and the password, profile and blocked changes written back).
//! - [`mapping`]: a vendor's user JSON → a [`Record`], by the provider
//!   definition's `[management.fields]`.
//!
//! Retries: a 429 (or Cognito's `TooManyRequestsException`) waits
//! `Retry-After`, or until the reset header, plus jitter
//! ([`crate::upstream::rate_limit`]); a 5xx, a timeout or a dropped
//! connection backs off exponentially with full jitter (AWS Architecture
//! Blog, "Exponential Backoff And Jitter"), up to [`MAX_ATTEMPTS`]. Other
//! 4xx answers are the operator's to fix (wrong credentials, missing scope)
//! and stop the job with the vendor's message. Secrets and tokens never
//! appear in an error or a log line.

pub mod auth;
pub mod export;
pub mod mapping;
pub mod pacer;
pub mod paging;
pub mod write_back;
pub mod writes;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow, bail};
use http::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::{Mutex, Semaphore};

use self::auth::Credentials;
use self::mapping::flatten_cognito;
use self::pacer::{Model, Outcome, Pacer};
use crate::config::UpstreamSettings;
use crate::store::jobs::Rejected;
use crate::store::record::Record;
use crate::upstream::provider::{ManagementAuth, ManagementDef, Paging, ProviderDef, fill};
use crate::upstream::rate_limit;

pub use self::paging::{Page, initial_positions};

/// One user as a source gives it: a record, or why it was not one.
pub type Item = Result<Record, Rejected>;

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
    /// The vendor's own words alone (a password policy's), which a
    /// blocking write-back shows the user.
    pub vendor: String,
}

/// The upstream still answered 429 (rate limited) at the last try; how
/// long it asked to wait, when it said.
#[derive(Debug, thiserror::Error)]
#[error("the upstream is rate limiting these requests")]
pub struct Throttled {
    pub retry_after: Option<Duration>,
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
        // An AWS JSON API's base is where `[upstream] api_endpoint` points
        // (an SDK's `endpoint_url`: FIPS, VPC, an emulator), unless the
        // Management API has a base of its own.
        let api_endpoint = settings
            .api_endpoint
            .clone()
            .filter(|_| mgmt.auth == ManagementAuth::Sigv4);
        let base = match (&m.base, api_endpoint) {
            (Some(b), _) => b.clone(),
            (None, Some(endpoint)) => endpoint,
            (None, None) => {
                fill(&mgmt.base, &settings.template_vars()).map_err(anyhow::Error::msg)?
            }
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
        let mut throttled_for = None;
        for attempt in 0..attempts {
            let _permit = self.permits.acquire().await?;
            // Dropped unanswered (an error below, a cancelled job), the
            // ticket gives its slot back as a failed request.
            let ticket = self.pacer.acquire().await;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let request = self.build(&method, &url, body, target).await?;
            let response = match self.http.execute(request).await {
                Ok(r) => r,
                Err(e) => {
                    drop(ticket);
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
            // Capped: a page is never near 1 MiB, and an answer that is
            // cannot be worked with (retrying would read it again).
            let bytes = match super::read_body(response, super::MAX_BODY_BYTES).await {
                Ok(bytes) => bytes,
                Err(super::BodyError::TooLarge) => {
                    return Err(Fatal(format!(
                        "{} {} answered {status} with {}",
                        method,
                        redact(&url),
                        super::BodyError::TooLarge
                    ))
                    .into());
                }
                Err(super::BodyError::Unreadable) => Vec::new(),
            };
            let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let throttled = status == StatusCode::TOO_MANY_REQUESTS
                || json["__type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("TooManyRequestsException"));
            ticket.observe(
                &headers,
                if throttled {
                    Outcome::Throttled
                } else if status.is_server_error() {
                    Outcome::Failed
                } else {
                    Outcome::Served
                },
            );
            if throttled || status.is_server_error() {
                last = format!("answered {status}: {}", vendor_message(&json));
            }
            throttled_for = None;
            if throttled {
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                let pause = rate_limit::retry_after(&headers, SystemTime::now())
                    .unwrap_or_else(|| backoff_delay(attempt));
                throttled_for = Some(pause);
                if attempt + 1 == attempts {
                    // A caller who is waiting hears of it at once.
                    break;
                }
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
                    vendor: writes::human_message(&json),
                }
                .into());
            }
            if json.is_null() && !bytes.is_empty() {
                bail!("{} answered something that is not JSON", redact(&url));
            }
            return Ok((json, headers));
        }
        if let Some(pause) = throttled_for {
            return Err(Throttled {
                retry_after: Some(pause),
            }
            .into());
        }
        Err(Fatal(format!(
            "{} {}: still failing after {attempts} attempts (last {last})",
            method,
            redact(&url)
        ))
        .into())
    }

    async fn backoff(&self, attempt: u32) {
        tokio::time::sleep(jitter(backoff_delay(attempt))).await;
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
pub(crate) fn redact(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

/// The message of a vendor's error body, bounded and without control
/// characters: Auth0 `message`, Okta `errorSummary`, AWS `message`,
/// OAuth `error_description`.
pub(crate) fn vendor_message(body: &Value) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
