//! The upstream OIDC client.
//!
//! Discovery and the JWKS are cached and refreshed hourly, and again when an
//! ID token names a key the cache does not hold (at most once every
//! [`KEY_REFETCH_INTERVAL`], so forged `kid`s cannot make Switchyard hammer
//! the upstream). Every HTTP call goes through [`UpstreamClient::send`],
//! which bounds it in time, maps 429 and 5xx to errors that keep
//! `Retry-After`, and counts outcomes.
//!
//! ID tokens are validated in full (OIDC Core §3.1.3.7): signature against
//! the JWKS, `iss`, `aud`, `azp`, `exp` and `iat` with a bounded clock skew,
//! and `nonce`, by [`super::id_token`] on aws-lc-rs.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::http::{StatusCode, header};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreJsonWebKeySet};
use openidconnect::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, HttpRequest, HttpResponse,
    IssuerUrl, JsonWebKeySetUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse, TokenUrl, UserInfoUrl,
};
use serde_json::{Map, Value};

use super::UpstreamError;
use super::id_token::{self, Keys, NO_MATCHING_KEY};
use super::provider::{ClientIpCarrier, LogoutStyle, ProviderDef};
use crate::config::UpstreamSettings;
use crate::store::now;

/// How often discovery and the JWKS are re-read without a reason.
const METADATA_MAX_AGE: Duration = Duration::from_secs(3600);
/// The least time between two refetches caused by unknown keys.
pub const KEY_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// A client's credentials at the upstream: Switchyard's own, or an
/// application's (refresh-token adoption uses the app's own client).
#[derive(Clone)]
pub struct Creds {
    pub client_id: String,
    pub secret: Option<String>,
}

/// What a token request returned, the ID token already validated.
#[derive(Debug, Clone)]
pub struct UpstreamTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
    /// Unix seconds.
    pub expires_at: i64,
    pub scope: Option<String>,
    /// The validated ID token's claims, as the upstream spelled them.
    pub claims: Option<Map<String, Value>>,
}

/// Discovery fields Switchyard reads beyond the ones openidconnect models.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
pub struct ExtraMetadata {
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    /// RFC 9207 §3.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: Option<bool>,
}

impl openidconnect::AdditionalProviderMetadata for ExtraMetadata {}

type Metadata = openidconnect::ProviderMetadata<
    ExtraMetadata,
    openidconnect::core::CoreAuthDisplay,
    openidconnect::core::CoreClientAuthMethod,
    openidconnect::core::CoreClaimName,
    openidconnect::core::CoreClaimType,
    openidconnect::core::CoreGrantType,
    openidconnect::core::CoreJweContentEncryptionAlgorithm,
    openidconnect::core::CoreJweKeyManagementAlgorithm,
    openidconnect::core::CoreJsonWebKey,
    openidconnect::core::CoreResponseMode,
    openidconnect::core::CoreResponseType,
    openidconnect::core::CoreSubjectIdentifierType,
>;

struct Discovered {
    metadata: Metadata,
    /// The JWKS's signing keys, parsed once per fetch.
    keys: Keys,
    fetched: Instant,
}

/// Counters of upstream calls, read by `/metrics`.
#[derive(Default)]
pub struct CallCounts {
    pub ok: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
}

pub struct UpstreamClient {
    pub settings: UpstreamSettings,
    pub def: ProviderDef,
    pub issuer: String,
    /// Switchyard's own client at the upstream.
    pub creds: Creds,
    http: reqwest::Client,
    /// The discovered metadata with its JWKS; replaced whole on refetch.
    discovered: RwLock<Option<Arc<Discovered>>>,
    /// When the last refetch for an unknown key happened.
    last_key_refetch: Mutex<Option<Instant>>,
    /// Serialises discovery so a cold cache causes one fetch, not one per request.
    discovery_lock: tokio::sync::Mutex<()>,
    pub calls: CallCounts,
}

/// The transport error of [`UpstreamClient::send`]: what openidconnect
/// reports as a request error.
#[derive(Debug, thiserror::Error)]
pub enum Transport {
    #[error("{0}")]
    Unavailable(String),
    #[error("rate limited")]
    RateLimited(Option<Duration>),
}

impl From<Transport> for UpstreamError {
    fn from(t: Transport) -> Self {
        match t {
            Transport::Unavailable(m) => UpstreamError::Unavailable(m),
            Transport::RateLimited(retry_after) => UpstreamError::RateLimited { retry_after },
        }
    }
}

type SendFuture = Pin<Box<dyn Future<Output = Result<HttpResponse, Transport>> + Send>>;

impl UpstreamClient {
    pub fn new(settings: UpstreamSettings) -> Result<Self, String> {
        let def = ProviderDef::load(&settings.provider)?;
        let issuer = def.issuer(&settings)?;
        let secret = match &settings.client_secret_env {
            Some(var) => Some(
                std::env::var(var)
                    .map_err(|_| format!("upstream.client_secret_env: {var} is not set"))?,
            ),
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.timeout_secs))
            .connect_timeout(Duration::from_secs(settings.timeout_secs.min(5)))
            // OIDC endpoints answer directly; following redirects would let a
            // compromised discovery document steer requests elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            creds: Creds {
                client_id: settings.client_id.clone(),
                secret,
            },
            settings,
            def,
            issuer,
            http,
            discovered: RwLock::new(None),
            last_key_refetch: Mutex::new(None),
            discovery_lock: tokio::sync::Mutex::new(()),
            calls: CallCounts::default(),
        })
    }

    /// The HTTP function handed to openidconnect.
    fn sender(&self) -> impl Fn(HttpRequest) -> SendFuture + '_ {
        move |request| {
            let http = self.http.clone();
            Box::pin(async move { send(&http, request).await })
        }
    }

    fn count(&self, ok: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        if ok {
            self.calls.ok.fetch_add(1, Relaxed)
        } else {
            self.calls.failed.fetch_add(1, Relaxed)
        };
    }

    /// The discovered metadata, fetched when missing or stale.
    async fn metadata(&self) -> Result<Arc<Discovered>, UpstreamError> {
        if let Some(d) = self.cached()
            && d.fetched.elapsed() < METADATA_MAX_AGE
        {
            return Ok(d);
        }
        let _guard = self.discovery_lock.lock().await;
        if let Some(d) = self.cached()
            && d.fetched.elapsed() < METADATA_MAX_AGE
        {
            return Ok(d);
        }
        match self.discover().await {
            Ok(d) => Ok(d),
            // A stale document beats none while the upstream is away.
            Err(e) => self.cached().ok_or(e),
        }
    }

    fn cached(&self) -> Option<Arc<Discovered>> {
        self.discovered
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether `[upstream.endpoints]` names all the password track needs:
    /// the keys, and the token endpoint unless passwords go through
    /// Cognito's user-pool API. Then discovery is not asked for at all:
    /// emulators (moto, LocalStack, cognito-local) serve the keys at a local
    /// address under the AWS issuer, and their discovery documents are
    /// missing or lack `authorization_endpoint`.
    fn discovery_skipped(&self) -> bool {
        let o = &self.settings.endpoints;
        let user_pool_api = self
            .def
            .password
            .as_ref()
            .is_some_and(|p| p.grant == "cognito:USER_PASSWORD_AUTH");
        o.jwks.is_some() && (o.token.is_some() || user_pool_api)
    }

    /// Metadata made from the issuer and `[upstream.endpoints]` alone. The
    /// redirect track needs `endpoints.authorization`; without it the
    /// authorization endpoint is the issuer's `/oauth2/authorize`.
    fn configured_metadata(&self) -> Result<Metadata, UpstreamError> {
        use openidconnect::core::{
            CoreJwsSigningAlgorithm, CoreResponseType, CoreSubjectIdentifierType,
        };
        let o = &self.settings.endpoints;
        let issuer = IssuerUrl::new(self.issuer.clone())
            .map_err(|e| UpstreamError::InvalidResponse(format!("issuer: {e}")))?;
        let authorization = o
            .authorization
            .clone()
            .unwrap_or_else(|| format!("{}/oauth2/authorize", self.issuer.trim_end_matches('/')));
        let jwks = o.jwks.clone().unwrap_or_default();
        Ok(Metadata::new(
            issuer,
            openidconnect::AuthUrl::new(authorization).map_err(bad_url)?,
            JsonWebKeySetUrl::new(jwks).map_err(bad_url)?,
            vec![openidconnect::ResponseTypes::new(vec![
                CoreResponseType::Code,
            ])],
            vec![CoreSubjectIdentifierType::Public],
            vec![CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256],
            ExtraMetadata {
                revocation_endpoint: None,
                end_session_endpoint: None,
                authorization_response_iss_parameter_supported: None,
            },
        ))
    }

    async fn discover(&self) -> Result<Arc<Discovered>, UpstreamError> {
        let mut metadata = if self.discovery_skipped() {
            self.configured_metadata()?
        } else {
            let issuer = IssuerUrl::new(self.issuer.clone())
                .map_err(|e| UpstreamError::InvalidResponse(format!("issuer: {e}")))?;
            let result = Metadata::discover_async(issuer, &self.sender()).await;
            self.count(result.is_ok());
            result.map_err(discovery_error)?
        };
        let o = &self.settings.endpoints;
        if let Some(u) = &o.authorization {
            metadata = metadata.set_authorization_endpoint(
                openidconnect::AuthUrl::new(u.clone()).map_err(bad_url)?,
            );
        }
        if let Some(u) = &o.token {
            metadata =
                metadata.set_token_endpoint(Some(TokenUrl::new(u.clone()).map_err(bad_url)?));
        }
        if let Some(u) = &o.userinfo {
            metadata =
                metadata.set_userinfo_endpoint(Some(UserInfoUrl::new(u.clone()).map_err(bad_url)?));
        }
        if let Some(u) = &o.jwks {
            let url = JsonWebKeySetUrl::new(u.clone()).map_err(bad_url)?;
            let jwks = CoreJsonWebKeySet::fetch_async(&url, &self.sender())
                .await
                .map_err(discovery_error)?;
            metadata = metadata.set_jwks_uri(url).set_jwks(jwks);
        }
        let keys = serde_json::to_value(metadata.jwks())
            .map(|jwks| Keys::from_jwks(&jwks))
            .map_err(|e| UpstreamError::InvalidResponse(format!("jwks: {e}")))?;
        let d = Arc::new(Discovered {
            metadata,
            keys,
            fetched: Instant::now(),
        });
        *self.discovered.write().unwrap_or_else(|p| p.into_inner()) = Some(d.clone());
        Ok(d)
    }

    /// Refetches discovery and keys after an unknown `kid`, at most once
    /// per [`KEY_REFETCH_INTERVAL`]. True when a refetch happened.
    async fn refetch_keys(&self) -> bool {
        {
            let mut last = self
                .last_key_refetch
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < KEY_REFETCH_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        let _guard = self.discovery_lock.lock().await;
        match self.discover().await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "refetching upstream keys failed");
                false
            }
        }
    }

    /// Makes sure discovery is loaded (readiness, start-up warm-up).
    pub async fn warm_up(&self) -> Result<(), UpstreamError> {
        self.metadata().await.map(|_| ())
    }

    /// Whether discovery lists `grant` in `grant_types_supported`.
    pub async fn supports_grant(&self, grant: &str) -> Result<bool, UpstreamError> {
        let d = self.metadata().await?;
        Ok(d.metadata
            .grant_types_supported()
            .is_some_and(|g| g.iter().any(|t| t.as_ref() == grant)))
    }

    fn oidc_client(
        &self,
        d: &Discovered,
        creds: &Creds,
        redirect_uri: Option<&str>,
    ) -> Result<OidcClient, UpstreamError> {
        let mut client = CoreClient::from_provider_metadata(
            d.metadata.clone(),
            ClientId::new(creds.client_id.clone()),
            creds.secret.clone().map(ClientSecret::new),
        )
        .set_auth_type(if self.def.oidc.token_auth_method == "client_secret_post" {
            AuthType::RequestBody
        } else {
            AuthType::BasicAuth
        });
        if let Some(uri) = redirect_uri {
            client = client.set_redirect_uri(RedirectUrl::new(uri.to_string()).map_err(bad_url)?);
        }
        Ok(client)
    }

    /// The upstream authorization URL for the redirect track: our own
    /// `state`, `nonce` and PKCE, and the user's `login_hint` passed on.
    pub async fn authorize_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        pkce_verifier: &str,
        login_hint: Option<&str>,
        extra: &[(String, String)],
    ) -> Result<String, UpstreamError> {
        let d = self.metadata().await?;
        let client = self.oidc_client(&d, &self.creds, Some(redirect_uri))?;
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
            pkce_verifier.to_string(),
        ));
        let (state, nonce) = (state.to_string(), nonce.to_string());
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .set_pkce_challenge(challenge);
        for scope in self.scopes() {
            if scope != "openid" {
                request = request.add_scope(Scope::new(scope));
            }
        }
        if let Some(hint) = login_hint {
            request = request.add_extra_param("login_hint", hint.to_string());
        }
        if let Some(connection) = &self.settings.connection {
            // Auth0 picks the database connection from this parameter.
            if self.settings.provider == "auth0" {
                request = request.add_extra_param("connection", connection.clone());
            }
        }
        for (k, v) in extra {
            request = request.add_extra_param(k.clone(), v.clone());
        }
        let (url, _, _) = request.url();
        Ok(url.to_string())
    }

    /// The URIs at the upstream a browser is sent to by Switchyard's own
    /// pages (its authorization endpoint, its logout), so those pages'
    /// `form-action` can allow the redirects their forms lead to.
    pub async fn browser_targets(&self) -> Vec<String> {
        let mut targets = Vec::new();
        if let Ok(d) = self.metadata().await {
            targets.push(d.metadata.authorization_endpoint().url().to_string());
        }
        if let Some(logout) = self.logout_url(None, &self.issuer).await {
            targets.push(logout);
        }
        targets
    }

    fn scopes(&self) -> Vec<String> {
        self.settings
            .scopes
            .clone()
            .unwrap_or_else(|| self.def.oidc.scopes.clone())
    }

    /// Whether the upstream sends `iss` in authorization responses (RFC 9207 §3).
    pub async fn sends_iss(&self) -> bool {
        match self.metadata().await {
            Ok(d) => {
                d.metadata
                    .additional_metadata()
                    .authorization_response_iss_parameter_supported
                    == Some(true)
            }
            Err(_) => false,
        }
    }

    /// Exchanges an authorization code and validates the ID token.
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<UpstreamTokens, UpstreamError> {
        let d = self.metadata().await?;
        let client = self.oidc_client(&d, &self.creds, Some(redirect_uri))?;
        let request = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| UpstreamError::InvalidResponse(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()));
        let response = request.request_async(&self.sender()).await;
        self.count(response.is_ok());
        let response = response.map_err(token_error)?;
        let id_token = response.id_token().ok_or_else(|| {
            UpstreamError::InvalidResponse("no id_token in the code exchange".into())
        })?;
        let claims = self
            .validate_id_token(&id_token.to_string(), &self.creds.client_id, Some(nonce))
            .await?;
        Ok(tokens_from(&response, Some(claims)))
    }

    /// Refreshes at the upstream with `creds`. A new ID token, when one
    /// comes back, is validated too (no nonce on refresh, OIDC Core §12.2).
    pub async fn refresh(
        &self,
        refresh_token: &str,
        creds: &Creds,
    ) -> Result<UpstreamTokens, UpstreamError> {
        let d = self.metadata().await?;
        let client = self.oidc_client(&d, creds, None)?;
        let token = RefreshToken::new(refresh_token.to_string());
        let request = client
            .exchange_refresh_token(&token)
            .map_err(|e| UpstreamError::InvalidResponse(e.to_string()))?;
        let response = request.request_async(&self.sender()).await;
        self.count(response.is_ok());
        let response = response.map_err(token_error)?;
        let claims = match response.id_token() {
            Some(id) => Some(
                self.validate_id_token(&id.to_string(), &creds.client_id, None)
                    .await?,
            ),
            None => None,
        };
        let mut tokens = tokens_from(&response, claims);
        // RFC 6749 §6: without a new refresh token, the old one stays valid.
        if tokens.refresh_token.is_none() {
            tokens.refresh_token = Some(refresh_token.to_string());
        }
        Ok(tokens)
    }

    async fn validate_id_token(
        &self,
        id_token: &str,
        client_id: &str,
        nonce: Option<&str>,
    ) -> Result<Map<String, Value>, UpstreamError> {
        match self.check_id_token(id_token, client_id, nonce).await {
            Err(UpstreamError::InvalidIdToken(reason)) if reason == NO_MATCHING_KEY => {
                // The upstream may have rotated its keys: OIDC Core §10.1.1
                // has a relying party refetch the JWKS on an unknown `kid`.
                if self.refetch_keys().await {
                    self.check_id_token(id_token, client_id, nonce).await
                } else {
                    Err(UpstreamError::InvalidIdToken(reason))
                }
            }
            other => other,
        }
    }

    async fn check_id_token(
        &self,
        id_token: &str,
        client_id: &str,
        nonce: Option<&str>,
    ) -> Result<Map<String, Value>, UpstreamError> {
        let d = self.metadata().await?;
        let expected = id_token::Expected {
            issuer: d.metadata.issuer().as_str(),
            client_id,
            nonce,
            skew_secs: self.settings.clock_skew_secs as i64,
            now: now(),
        };
        id_token::verify(id_token, &d.keys, &expected).map_err(UpstreamError::InvalidIdToken)
    }

    /// The userinfo claims for an access token, as JSON.
    pub async fn userinfo(&self, access_token: &str) -> Result<Map<String, Value>, UpstreamError> {
        let d = self.metadata().await?;
        let Some(url) = d.metadata.userinfo_endpoint() else {
            return Ok(Map::new());
        };
        let request = axum::http::Request::get(url.as_str())
            .header(header::AUTHORIZATION, format!("Bearer {access_token}"))
            .header(header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|e| UpstreamError::InvalidResponse(e.to_string()))?;
        let response = send(&self.http, request).await;
        self.count(response.is_ok());
        let response = response?;
        if !response.status().is_success() {
            return Err(UpstreamError::Rejected {
                error: format!("userinfo {}", response.status().as_u16()),
                description: String::new(),
            });
        }
        serde_json::from_slice(response.body())
            .map_err(|e| UpstreamError::InvalidResponse(format!("userinfo: {e}")))
    }

    /// RFC 7009 revocation of an upstream refresh token, where the upstream
    /// offers it. Errors are returned for logging; logout goes on anyway.
    pub async fn revoke(&self, refresh_token: &str, creds: &Creds) -> Result<bool, UpstreamError> {
        let d = self.metadata().await?;
        let url = self
            .settings
            .endpoints
            .revocation
            .clone()
            .or_else(|| d.metadata.additional_metadata().revocation_endpoint.clone());
        let Some(url) = url else { return Ok(false) };
        // form_urlencoded's serializer is not Send: the body is finished
        // before anything awaits.
        let (body, authorization) = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("token", refresh_token)
                .append_pair("token_type_hint", "refresh_token");
            let mut authorization = None;
            if self.def.oidc.token_auth_method == "client_secret_post" || creds.secret.is_none() {
                form.append_pair("client_id", &creds.client_id);
                if let Some(s) = &creds.secret {
                    form.append_pair("client_secret", s);
                }
            } else if let Some(s) = &creds.secret {
                authorization = Some(basic_auth(&creds.client_id, s));
            }
            (form.finish(), authorization)
        };
        let mut request = axum::http::Request::post(url.as_str())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(a) = authorization {
            request = request.header(header::AUTHORIZATION, a);
        }
        let request = request
            .body(body.into_bytes())
            .map_err(|e| UpstreamError::InvalidResponse(e.to_string()))?;
        let response = send(&self.http, request).await;
        self.count(response.is_ok());
        let response = response?;
        Ok(response.status().is_success())
    }

    /// Where to send the browser to end the upstream session too, returning
    /// to `return_to` afterwards.
    pub async fn logout_url(&self, id_token_hint: Option<&str>, return_to: &str) -> Option<String> {
        let d = self.metadata().await.ok()?;
        let origin = url::Url::parse(&self.issuer)
            .ok()?
            .origin()
            .ascii_serialization();
        let mut query = form_urlencoded::Serializer::new(String::new());
        let base = match self.def.logout.style {
            LogoutStyle::Auth0 => {
                query
                    .append_pair("client_id", &self.creds.client_id)
                    .append_pair("returnTo", return_to);
                format!(
                    "{origin}{}",
                    self.def.logout.path.as_deref().unwrap_or("/v2/logout")
                )
            }
            LogoutStyle::Cognito => {
                query
                    .append_pair("client_id", &self.creds.client_id)
                    .append_pair("logout_uri", return_to);
                format!(
                    "{origin}{}",
                    self.def.logout.path.as_deref().unwrap_or("/logout")
                )
            }
            LogoutStyle::Oidc => {
                let end = self.settings.endpoints.end_session.clone().or_else(|| {
                    d.metadata
                        .additional_metadata()
                        .end_session_endpoint
                        .clone()
                })?;
                if let Some(hint) = id_token_hint {
                    query.append_pair("id_token_hint", hint);
                }
                query
                    .append_pair("client_id", &self.creds.client_id)
                    .append_pair("post_logout_redirect_uri", return_to);
                end
            }
        };
        let sep = if base.contains('?') { '&' } else { '?' };
        Some(format!("{base}{sep}{}", query.finish()))
    }
}

/// Why the upstream did not verify a password.
#[derive(Debug)]
pub enum PasswordRefusal {
    /// Wrong password or unknown user: the upstream does not say which.
    WrongCredentials,
    /// Blocked, suspended or disabled at the upstream.
    Blocked,
    /// Locked for now by the upstream's brute-force protection (too many
    /// failed attempts). The vendors say so whether or not the password
    /// was right, so saying it reveals nothing about the password.
    Locked,
    /// The user exists but cannot be verified by password alone (MFA, a
    /// required password change, a social identity, no password grant):
    /// the redirect track can still log them in.
    NeedsRedirect(String),
    /// The upstream could not answer.
    Unavailable(UpstreamError),
}

impl UpstreamClient {
    /// Verifies a password at the upstream with the password grant the
    /// provider definition names (Auth0's password-realm with the configured
    /// connection, or the plain password grant), validating the ID token
    /// that comes back. Each vendor's answers are mapped to
    /// [`PasswordRefusal`] ([`classify_password_error`]).
    ///
    /// `client_ip` is the end user's address (after trusted proxies): it
    /// goes to the upstream where the provider definition says how
    /// ([`ClientIpCarrier`]) and `[upstream] forward_client_ip` allows.
    pub async fn password_login(
        &self,
        username: &str,
        password: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<UpstreamTokens, PasswordRefusal> {
        let Some(def) = self.def.password.clone() else {
            return Err(PasswordRefusal::NeedsRedirect(
                "the provider offers no password grant".into(),
            ));
        };
        let forward = def
            .client_ip
            .filter(|_| self.settings.forward_client_ip)
            .zip(client_ip);
        if def.grant == "cognito:USER_PASSWORD_AUTH" {
            let ip = forward
                .filter(|(c, _)| *c == ClientIpCarrier::CognitoUserContextData)
                .map(|(_, ip)| ip);
            return self.cognito_password_login(username, password, ip).await;
        }
        if def.only_if_discovered
            && !self
                .supports_grant(&def.grant)
                .await
                .map_err(PasswordRefusal::Unavailable)?
        {
            return Err(PasswordRefusal::NeedsRedirect(
                "discovery does not list the password grant".into(),
            ));
        }
        let d = self
            .metadata()
            .await
            .map_err(PasswordRefusal::Unavailable)?;
        let Some(token_url) = d.metadata.token_endpoint().map(|u| u.to_string()) else {
            return Err(PasswordRefusal::NeedsRedirect(
                "the upstream has no token endpoint".into(),
            ));
        };
        let scopes = self
            .scopes()
            .into_iter()
            .filter(|s| s != "offline_access")
            .collect::<Vec<_>>()
            .join(" ");
        // form_urlencoded's serializer is not Send: finish it before awaiting.
        let (body, authorization) = {
            // Auth0: password-realm names the connection; without one, the
            // plain password grant uses the tenant's default directory.
            let grant = match (&def.realm_param, &self.settings.connection) {
                (Some(_), None) => "password",
                _ => def.grant.as_str(),
            };
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", grant)
                .append_pair("username", username)
                .append_pair("password", password)
                .append_pair("scope", &scopes);
            if let (Some(param), Some(connection)) = (&def.realm_param, &self.settings.connection) {
                form.append_pair(param, connection);
            }
            let mut authorization = None;
            if self.def.oidc.token_auth_method == "client_secret_post"
                || self.creds.secret.is_none()
            {
                form.append_pair("client_id", &self.creds.client_id);
                if let Some(secret) = &self.creds.secret {
                    form.append_pair("client_secret", secret);
                }
            } else if let Some(secret) = &self.creds.secret {
                authorization = Some(basic_auth(&self.creds.client_id, secret));
            }
            (form.finish(), authorization)
        };
        let mut request = axum::http::Request::post(token_url.as_str())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json");
        if let Some(a) = authorization {
            request = request.header(header::AUTHORIZATION, a);
        }
        match forward {
            Some((ClientIpCarrier::Auth0ForwardedFor, ip)) => {
                request = request.header("auth0-forwarded-for", ip.to_string());
            }
            Some((ClientIpCarrier::XForwardedFor, ip)) => {
                request = request.header("x-forwarded-for", ip.to_string());
            }
            Some((ClientIpCarrier::CognitoUserContextData, _)) | None => {}
        }
        let request = request.body(body.into_bytes()).map_err(|e| {
            PasswordRefusal::Unavailable(UpstreamError::InvalidResponse(e.to_string()))
        })?;
        let response = send_keeping(&self.http, request, true).await;
        self.count(response.is_ok());
        let response = response.map_err(|t| PasswordRefusal::Unavailable(t.into()))?;
        let json: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            // Auth0's brute-force protection answers 429 `too_many_attempts`
            // (Authentication API, Resource Owner Password "Get Token"
            // errors); any other 429 is a rate limit on Switchyard.
            if json.get("error").and_then(Value::as_str) == Some("too_many_attempts") {
                return Err(PasswordRefusal::Locked);
            }
            let retry_after =
                super::rate_limit::retry_after(response.headers(), std::time::SystemTime::now());
            return Err(PasswordRefusal::Unavailable(UpstreamError::RateLimited {
                retry_after,
            }));
        }
        if json.is_null() {
            return Err(PasswordRefusal::Unavailable(
                UpstreamError::InvalidResponse("the token response is not JSON".into()),
            ));
        }
        if !response.status().is_success() {
            let error = json
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let description = json
                .get("error_description")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Err(classify_password_error(error, description));
        }
        let invalid =
            |m: &str| PasswordRefusal::Unavailable(UpstreamError::InvalidResponse(m.into()));
        let access_token = json
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("no access_token"))?;
        let id_token = json
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("no id_token"))?;
        let claims = self
            .validate_id_token(id_token, &self.creds.client_id, None)
            .await
            .map_err(PasswordRefusal::Unavailable)?;
        Ok(UpstreamTokens {
            access_token: access_token.to_string(),
            refresh_token: json
                .get("refresh_token")
                .and_then(Value::as_str)
                .map(String::from),
            id_token: Some(id_token.to_string()),
            expires_at: expires_at(json.get("expires_in").and_then(Value::as_i64)),
            scope: json.get("scope").and_then(Value::as_str).map(String::from),
            claims: Some(claims),
        })
    }
}

impl UpstreamClient {
    /// Where Cognito's user-pool API answers: `[upstream] api_endpoint`
    /// (an SDK's `endpoint_url`: FIPS, VPC, an emulator), else the issuer's
    /// origin, `https://cognito-idp.{region}.amazonaws.com/`.
    pub fn user_pool_api(&self) -> Result<String, url::ParseError> {
        match &self.settings.api_endpoint {
            Some(endpoint) => Ok(url::Url::parse(endpoint)?.to_string()),
            None => Ok(format!(
                "{}/",
                url::Url::parse(&self.issuer)?
                    .origin()
                    .ascii_serialization()
            )),
        }
    }

    /// Cognito has no password grant at its token endpoint: `InitiateAuth`
    /// with `USER_PASSWORD_AUTH` on the user-pool API (AWS JSON 1.1; no SigV4
    /// is needed with an app client), with `SECRET_HASH` =
    /// Base64(HMAC-SHA256(client secret, username + client id)) when the
    /// client has a secret (Amazon Cognito API Reference, `InitiateAuth`,
    /// and "Computing secret hash values").
    ///
    /// With `client_ip`, `UserContextData` carries it as `IpAddress` (and no
    /// `EncodedData`, which only Cognito's browser library can compute), for
    /// the pool's threat protection (API reference, `UserContextDataType`).
    async fn cognito_password_login(
        &self,
        username: &str,
        password: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<UpstreamTokens, PasswordRefusal> {
        let unavailable =
            |m: &str| PasswordRefusal::Unavailable(UpstreamError::InvalidResponse(m.into()));
        let endpoint = self
            .user_pool_api()
            .map_err(|_| unavailable("the issuer is not a URL"))?;
        let mut parameters = serde_json::json!({ "USERNAME": username, "PASSWORD": password });
        if let Some(secret) = &self.creds.secret {
            use base64::Engine;
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
            let tag = aws_lc_rs::hmac::sign(
                &key,
                format!("{username}{}", self.creds.client_id).as_bytes(),
            );
            parameters["SECRET_HASH"] =
                Value::String(base64::engine::general_purpose::STANDARD.encode(tag.as_ref()));
        }
        let mut body = serde_json::json!({
            "AuthFlow": "USER_PASSWORD_AUTH",
            "ClientId": self.creds.client_id,
            "AuthParameters": parameters,
        });
        if let Some(ip) = client_ip {
            body["UserContextData"] = serde_json::json!({ "IpAddress": ip.to_string() });
        }
        let request = axum::http::Request::post(endpoint)
            .header(header::CONTENT_TYPE, "application/x-amz-json-1.1")
            .header(
                "x-amz-target",
                "AWSCognitoIdentityProviderService.InitiateAuth",
            )
            .body(body.to_string().into_bytes())
            .map_err(|e| unavailable(&e.to_string()))?;
        let response = send(&self.http, request).await;
        self.count(response.is_ok());
        let response = response.map_err(|t| PasswordRefusal::Unavailable(t.into()))?;
        let json: Value = serde_json::from_slice(response.body())
            .map_err(|_| unavailable("InitiateAuth answered something that is not JSON"))?;
        if !response.status().is_success() {
            let kind = json
                .get("__type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            // The type may carry a namespace prefix ("…#NotAuthorizedException").
            let kind = kind.rsplit('#').next().unwrap_or(kind);
            let message = json
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Err(classify_cognito_error(kind, message));
        }
        if let Some(challenge) = json.get("ChallengeName").and_then(Value::as_str) {
            // NEW_PASSWORD_REQUIRED, SMS_MFA, SOFTWARE_TOKEN_MFA: not by password alone.
            return Err(PasswordRefusal::NeedsRedirect(format!(
                "Cognito challenge {challenge}"
            )));
        }
        let result = json
            .get("AuthenticationResult")
            .ok_or_else(|| unavailable("no AuthenticationResult"))?;
        let text = |k: &str| result.get(k).and_then(Value::as_str).map(String::from);
        let access_token = text("AccessToken").ok_or_else(|| unavailable("no AccessToken"))?;
        let id_token = text("IdToken").ok_or_else(|| unavailable("no IdToken"))?;
        let claims = self
            .validate_id_token(&id_token, &self.creds.client_id, None)
            .await
            .map_err(PasswordRefusal::Unavailable)?;
        Ok(UpstreamTokens {
            access_token,
            refresh_token: text("RefreshToken"),
            id_token: Some(id_token),
            expires_at: expires_at(result.get("ExpiresIn").and_then(Value::as_i64)),
            scope: None,
            claims: Some(claims),
        })
    }
}

/// Maps Cognito's `__type` errors: `NotAuthorizedException` (wrong password,
/// "User is disabled.", or "Password attempts exceeded": the pool's
/// temporary lockout after repeated failures, Cognito Developer Guide,
/// "User sign-in lockout behavior for failed attempts"),
/// `TooManyFailedAttemptsException` (the same for other sign-in steps),
/// `UserNotFoundException` (answered like a wrong
/// password: no enumeration), `PasswordResetRequiredException` and
/// `UserNotConfirmedException` (the hosted UI handles them),
/// `InvalidParameterException` (the client allows only SRP),
/// `TooManyRequestsException`.
pub fn classify_cognito_error(kind: &str, message: &str) -> PasswordRefusal {
    let m = message.to_ascii_lowercase();
    match kind {
        "NotAuthorizedException" if m.contains("attempts exceeded") => PasswordRefusal::Locked,
        "TooManyFailedAttemptsException" => PasswordRefusal::Locked,
        "NotAuthorizedException" if m.contains("disabled") => PasswordRefusal::Blocked,
        // "Unable to verify secret hash…", "…configured for secret but secret was not received".
        "NotAuthorizedException" if m.contains("secret") => {
            PasswordRefusal::Unavailable(UpstreamError::Rejected {
                error: kind.into(),
                description: "the upstream client secret does not match".into(),
            })
        }
        "NotAuthorizedException" | "UserNotFoundException" => PasswordRefusal::WrongCredentials,
        "PasswordResetRequiredException" | "UserNotConfirmedException" => {
            PasswordRefusal::NeedsRedirect(kind.into())
        }
        "InvalidParameterException" => PasswordRefusal::NeedsRedirect(
            "the Cognito client does not allow USER_PASSWORD_AUTH".into(),
        ),
        "TooManyRequestsException" | "LimitExceededException" => {
            PasswordRefusal::Unavailable(UpstreamError::RateLimited { retry_after: None })
        }
        other => PasswordRefusal::Unavailable(UpstreamError::Rejected {
            error: other.into(),
            description: message.into(),
        }),
    }
}

/// Maps a vendor's refusal of the password grant, as each documents its
/// token endpoint's errors (Auth0 Authentication API, Okta OpenID Connect
/// API, Keycloak Server Admin guide): Auth0's
/// `invalid_grant` "Wrong email or password.", 403 `mfa_required`,
/// `unauthorized` / `too_many_attempts` for blocked users; Okta's
/// `invalid_grant` and `access_denied` (MFA); Keycloak's `invalid_grant`
/// with "Invalid user credentials", "Account disabled", "Account is not
/// fully set up" (a required action), and "Account temporarily disabled"
/// from its brute-force detection (Server Administration guide,
/// "Brute force detection"). Auth0's brute-force block,
/// `too_many_attempts`, comes with a 429 and is read before this. Okta's
/// password grant answers a locked-out user like a wrong password.
pub fn classify_password_error(error: &str, description: &str) -> PasswordRefusal {
    let d = description.to_ascii_lowercase();
    let says = |words: &[&str]| words.iter().any(|w| d.contains(w));
    match error {
        "too_many_attempts" => PasswordRefusal::Locked,
        "invalid_grant" if says(&["temporarily disabled", "temporarily locked"]) => {
            PasswordRefusal::Locked
        }
        "invalid_grant" if says(&["blocked", "disabled", "locked", "suspended", "deactivated"]) => {
            PasswordRefusal::Blocked
        }
        "invalid_grant"
            if says(&[
                "expired",
                "change",
                "not fully set up",
                "reset",
                "required action",
            ]) =>
        {
            PasswordRefusal::NeedsRedirect("the upstream requires a password change".into())
        }
        "invalid_grant" | "invalid_user_password" => PasswordRefusal::WrongCredentials,
        "unauthorized" | "user_blocked" | "account_locked" => PasswordRefusal::Blocked,
        "mfa_required"
        | "interaction_required"
        | "access_denied"
        | "password_leaked"
        | "consent_required" => {
            PasswordRefusal::NeedsRedirect(format!("the upstream answered {error}"))
        }
        "unsupported_grant_type" | "unauthorized_client" => PasswordRefusal::NeedsRedirect(
            "the upstream refuses the password grant for this client".into(),
        ),
        other => PasswordRefusal::Unavailable(UpstreamError::Rejected {
            error: other.to_string(),
            description: description.to_string(),
        }),
    }
}

type OidcClient = openidconnect::core::CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

fn basic_auth(id: &str, secret: &str) -> String {
    use base64::Engine;
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

fn bad_url(e: impl std::fmt::Display) -> UpstreamError {
    UpstreamError::InvalidResponse(format!("bad URL: {e}"))
}

/// Sends one request with the client's timeouts. 429 and 5xx become errors
/// that keep the wait the upstream asked for; everything else is returned
/// for the protocol layer to read, its body capped at
/// [`super::MAX_BODY_BYTES`].
async fn send(http: &reqwest::Client, request: HttpRequest) -> Result<HttpResponse, Transport> {
    send_keeping(http, request, false).await
}

/// [`send`], but with `keep_429` a 429 is returned as an answer: Auth0
/// says "too many attempts" for one user with a 429 whose body names it
/// (`too_many_attempts`), which is not a rate limit on Switchyard.
async fn send_keeping(
    http: &reqwest::Client,
    request: HttpRequest,
    keep_429: bool,
) -> Result<HttpResponse, Transport> {
    let request = reqwest::Request::try_from(request)
        .map_err(|e| Transport::Unavailable(format!("request: {e}")))?;
    let url = request.url().clone();
    let response = http.execute(request).await.map_err(|e| {
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else {
            "transport error"
        };
        Transport::Unavailable(format!(
            "{kind}: {} {}",
            url.host_str().unwrap_or(""),
            url.path()
        ))
    })?;
    let status = response.status();
    let rate_limited = status == StatusCode::TOO_MANY_REQUESTS;
    let retry_after = rate_limited
        .then(|| super::rate_limit::retry_after(response.headers(), std::time::SystemTime::now()))
        .flatten();
    if rate_limited && !keep_429 {
        return Err(Transport::RateLimited(retry_after));
    }
    if status.is_server_error() {
        return Err(Transport::Unavailable(format!(
            "HTTP {} from {}",
            status.as_u16(),
            url.path()
        )));
    }
    let mut builder = axum::http::Response::builder().status(status);
    for (k, v) in response.headers() {
        builder = builder.header(k, v);
    }
    let body = super::read_body(response, super::MAX_BODY_BYTES)
        .await
        .map_err(|e| Transport::Unavailable(format!("{e}: {}", url.path())))?;
    builder
        .body(body)
        .map_err(|e| Transport::Unavailable(e.to_string()))
}

fn discovery_error(e: openidconnect::DiscoveryError<Transport>) -> UpstreamError {
    match e {
        openidconnect::DiscoveryError::Request(t) => t.into(),
        other => UpstreamError::InvalidResponse(format!("discovery: {other}")),
    }
}

fn token_error(
    e: RequestTokenError<
        Transport,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
) -> UpstreamError {
    match e {
        RequestTokenError::ServerResponse(r) => UpstreamError::Rejected {
            error: r.error().as_ref().to_string(),
            description: r.error_description().cloned().unwrap_or_default(),
        },
        RequestTokenError::Request(t) => t.into(),
        RequestTokenError::Parse(_, _) => {
            UpstreamError::InvalidResponse("the token response is not valid JSON".into())
        }
        RequestTokenError::Other(m) => UpstreamError::InvalidResponse(m),
    }
}

/// When a token the upstream says lives `expires_in` seconds expires
/// (RFC 6749 §5.1; an hour when it does not say). The number is the
/// upstream's: one past the end of the clock must not overflow, and a
/// negative one means already expired.
fn expires_at(expires_in: Option<i64>) -> i64 {
    now().saturating_add(expires_in.unwrap_or(3600).max(0))
}

pub(crate) fn tokens_from(
    response: &openidconnect::core::CoreTokenResponse,
    claims: Option<Map<String, Value>>,
) -> UpstreamTokens {
    let expires_in = response
        .expires_in()
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    UpstreamTokens {
        access_token: response.access_token().secret().clone(),
        refresh_token: response.refresh_token().map(|t| t.secret().clone()),
        id_token: response.id_token().map(|t| t.to_string()),
        expires_at: expires_at(expires_in),
        scope: response
            .scopes()
            .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")),
        claims,
    }
}
