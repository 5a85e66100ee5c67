//! A fake upstream identity provider, faithful to the vendors' own API
//! documentation, started inside the test process on `127.0.0.1:0`.
//!
//! One [`FakeUpstream`] plays one vendor ([`Flavor`]): it serves that vendor's
//! paths and issuer spelling, its error bodies and status codes, its
//! rate-limit headers and its token shapes (Auth0's ISO-8601 `updated_at`,
//! Okta's `00u…` ids and JWT access tokens whose `sub` is the login,
//! Keycloak's `preferred_username` and refresh-token-always, Cognito's
//! `token_use` and `cognito:username` claims, refresh tokens that do not
//! rotate and its AWS JSON 1.1 `InitiateAuth`). It runs the
//! authorization-code flow with PKCE behind a small HTML login page, the
//! refresh-token grant with rotation, the password grant where the vendor
//! offers it, userinfo, RFC 7009 revocation and logout.
//!
//! Tests steer it with [`FakeUpstream::set_mode`] (slow, 500, 429, not JSON,
//! down), [`FakeUpstream::rotate_keys`] and [`FakeUpstream::set_id_token_tamper`],
//! and read back what it saw with [`FakeUpstream::calls`],
//! [`FakeUpstream::last_authorize_params`] and
//! [`FakeUpstream::revoked_refresh_tokens`].
//!
//! Where a vendor's real behaviour differs from the textbook (Auth0 answers
//! `invalid_grant` with 403, Keycloak answers a wrong password with 401), the
//! fake does what the vendor does, so a client that keys on the `error` field
//! rather than on the status code is what passes.

// Every test binary that includes the support module uses a different part
// of it.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, KeyPair, RsaKeyPair};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use scraper::{Html, Selector};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

#[path = "fake_management.rs"]
mod management;

// For the product's tests; a binary that uses only part of them must not
// warn.
#[allow(unused_imports)]
pub use management::{
    AUTH0_CONNECTION_ID, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    COGNITO_ADMIN_UPDATE_USER_ATTRIBUTES, COGNITO_LIST_USERS, COGNITO_REGION, COGNITO_SERVICE,
    ExportTiming, ManagementWrite, OKTA_API_TOKEN, SEEDED_USER_PASSWORD, aws_canonical_request,
    aws_sigv4_signature, sign_cognito_request, sign_cognito_request_at,
};

/// Auth0's password-realm grant (`realm` names the database connection).
pub const AUTH0_PASSWORD_REALM: &str = "http://auth0.com/oauth/grant-type/password-realm";
/// The name of Auth0's default database connection, for `realm`.
pub const AUTH0_DEFAULT_REALM: &str = "Username-Password-Authentication";
/// The namespaced claim the fake Auth0 copies `app_metadata.roles` into (as
/// an Auth0 Action would).
pub const AUTH0_ROLES_CLAIM: &str = "https://example.com/roles";

/// The user pool the fake Cognito plays; its issuer is `{base}/{COGNITO_POOL_ID}`.
pub const COGNITO_POOL_ID: &str = "eu-west-1_FakePool";
/// The scope of the access tokens Cognito's user-pool API (`InitiateAuth`)
/// issues; the hosted UI's `/oauth2/userInfo` refuses such tokens.
pub const COGNITO_ADMIN_SCOPE: &str = "aws.cognito.signin.user.admin";
/// The `X-Amz-Target` of Cognito's `InitiateAuth`.
pub const COGNITO_INITIATE_AUTH: &str = "AWSCognitoIdentityProviderService.InitiateAuth";

/// Which vendor the fake plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    Auth0,
    Okta,
    Keycloak,
    Generic,
    /// An AWS Cognito user pool ([`COGNITO_POOL_ID`]) with its hosted UI
    /// served from the same origin: the issuer is `{base}/eu-west-1_FakePool`
    /// (discovery and JWKS under it) while `/oauth2/authorize`,
    /// `/oauth2/token`, `/oauth2/userInfo`, `/oauth2/revoke`, `/login` and
    /// `/logout?client_id=&logout_uri=` sit at the root, and the user-pool
    /// API (AWS JSON 1.1) answers `POST {base}/`.
    ///
    /// As Cognito does: discovery lists no grant types and no
    /// `end_session_endpoint`; there is no password grant at the token
    /// endpoint (passwords go through `InitiateAuth` with
    /// `USER_PASSWORD_AUTH`, and `SECRET_HASH` when the client has a
    /// secret); token-endpoint errors are `{"error": …}` alone with 400;
    /// refresh tokens (JWE-shaped, opaque) do not rotate; `sub` is a UUID,
    /// `cognito:username` is the email, `email_verified` a boolean in the ID
    /// token but the string `"true"`/`"false"` from userInfo, every string in
    /// `app_metadata` becomes a `custom:*` attribute (and a `groups` array
    /// `cognito:groups`); `/oauth2/revoke` takes refresh tokens only (and ends
    /// the access tokens issued with them); userInfo needs an access token
    /// with `openid` in its scope (not one from `InitiateAuth`).
    ///
    /// Simplified: `InitiateAuth` needs no SigV4 (AWS does not ask for it
    /// with an app client either); `ListUsers` and `AdminUpdateUserAttributes`
    /// (SigV4-signed, see `fake_management.rs`) are the only other operations
    /// served: the other
    /// admin APIs (`AdminInitiateAuth`, …) and
    /// `RespondToAuthChallenge` answer `UnknownOperationException`, so the
    /// `NEW_PASSWORD_REQUIRED` and `SOFTWARE_TOKEN_MFA` challenges cannot be
    /// answered. `InitiateAuth` serves `USER_PASSWORD_AUTH` (on by default,
    /// see [`FakeUpstream::set_user_password_auth`]) and
    /// `REFRESH_TOKEN_AUTH`; SRP, custom and choice-based flows are refused
    /// as a client that does not enable them. The hosted UI completes the
    /// login of users with MFA or a required new password at once (as the
    /// other flavors' login pages do), takes any `logout_uri`, and throttling
    /// at the OAuth endpoints is a 429. No rate-limit headers (Cognito sends
    /// none).
    Cognito,
}

impl Flavor {
    /// The four OIDC-only flavors; [`Flavor::Cognito`] is left out (its
    /// discovery has no `end_session_endpoint` or `grant_types_supported`,
    /// which tests looping over these rely on).
    pub const ALL: [Flavor; 4] = [
        Flavor::Auth0,
        Flavor::Okta,
        Flavor::Keycloak,
        Flavor::Generic,
    ];

    /// A user id shaped like the vendor's, the same for the same `n`:
    /// `auth0|<24 hex>`, an Okta `00u…` id (20 characters), a UUID for
    /// Keycloak, an opaque id otherwise.
    pub fn sample_sub(self, n: u32) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &n.to_be_bytes());
        let bytes = digest.as_ref();
        match self {
            Flavor::Auth0 => format!("auth0|{}", hex(&bytes[..12])),
            Flavor::Okta => {
                const ALPHABET: &[u8] =
                    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
                let tail: String = bytes[..17]
                    .iter()
                    .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
                    .collect();
                format!("00u{tail}")
            }
            Flavor::Keycloak | Flavor::Cognito => uuid_from(bytes),
            Flavor::Generic => format!("usr_{}", hex(&bytes[..10])),
        }
    }

    /// Whether the vendor sends `iss` in the authorization response (RFC 9207).
    pub fn sends_iss_in_authorization_response(self) -> bool {
        !matches!(self, Flavor::Auth0 | Flavor::Cognito)
    }

    /// Whether the token endpoint takes `grant_type=password`.
    pub fn supports_password_grant(self) -> bool {
        !matches!(self, Flavor::Generic | Flavor::Cognito)
    }
}

/// Cognito's `SECRET_HASH`: Base64(HMAC-SHA256(key = client secret,
/// message = username + client id)).
pub fn cognito_secret_hash(username: &str, client_id: &str, client_secret: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, client_secret.as_bytes());
    STANDARD.encode(hmac::sign(
        &key,
        format!("{username}{client_id}").as_bytes(),
    ))
}

/// A user the fake upstream knows.
#[derive(Debug, Clone)]
pub struct FakeUser {
    pub sub: String,
    pub email: String,
    pub password: String,
    pub name: Option<String>,
    pub nickname: Option<String>,
    pub picture: Option<String>,
    pub email_verified: bool,
    pub app_metadata: Value,
    pub user_metadata: Value,
    pub blocked: bool,
    pub mfa_required: bool,
}

impl FakeUser {
    /// A verified, unblocked user without MFA. As Auth0 does for database
    /// users, `name` defaults to the email, `nickname` to its local part and
    /// `picture` to a Gravatar URL.
    pub fn new(sub: &str, email: &str, password: &str) -> Self {
        let local = email.split('@').next().unwrap_or(email).to_string();
        let initials: String = local.chars().take(2).collect::<String>().to_lowercase();
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            email.trim().to_lowercase().as_bytes(),
        );
        Self {
            sub: sub.into(),
            email: email.into(),
            password: password.into(),
            name: Some(email.into()),
            nickname: Some(local),
            picture: Some(format!(
                "https://s.gravatar.com/avatar/{}?s=480&r=pg&d=https%3A%2F%2Fcdn.auth0.com%2Favatars%2F{initials}.png",
                hex(&digest.as_ref()[..16])
            )),
            email_verified: true,
            app_metadata: json!({}),
            user_metadata: json!({}),
            blocked: false,
            mfa_required: false,
        }
    }
}

/// How the fake's back-channel endpoints (discovery, JWKS, token, userinfo,
/// revoke) answer. The browser-facing pages (authorize, login form, logout)
/// stay up in every mode but `Down`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Waits this long, then answers normally.
    Slow(Duration),
    /// 500 with the vendor's error body (JSON for Auth0, Okta and Keycloak;
    /// a proxy's HTML page for Generic).
    Fail500,
    /// 429 with `Retry-After`, and for Auth0 and Okta their rate-limit
    /// headers with `remaining` 0 and a reset `retry_after_secs` ahead.
    RateLimited {
        retry_after_secs: u64,
    },
    /// 200 with `Content-Type: application/json` and an HTML body.
    InvalidJson,
    /// Every connection is reset, open ones included: the client sees a
    /// transport error, never an HTTP response. The port stays bound (so
    /// nothing else can take it) but nothing is answered.
    Down,
}

/// What is wrong on purpose with the ID tokens issued from now on (until set
/// back to `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    None,
    /// Signed by a key that is not in the JWKS, under the published `kid`.
    BadSignature,
    /// `aud` names another client.
    WrongAudience,
    /// `nonce` is not the one the client sent (and is present on refresh).
    WrongNonce,
    /// `exp` ten minutes ago.
    Expired,
    /// `iss` is another issuer.
    WrongIssuer,
}

/// A fake upstream running in the test process. Dropping it stops accepting
/// connections.
pub struct FakeUpstream {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base: String,
    pub flavor: Flavor,
    shared: Arc<Shared>,
    server: tokio::task::AbortHandle,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeUpstream {
    /// Binds `127.0.0.1:0` and serves `flavor`'s endpoints.
    pub async fn start(flavor: Flavor) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake upstream");
        let port = listener.local_addr().expect("local address").port();
        let base = format!("http://127.0.0.1:{port}");
        let shared = Arc::new(Shared {
            flavor,
            paths: Paths::of(flavor),
            base: base.clone(),
            state: Mutex::new(UpstreamState::new(flavor, RsaKey::generate(new_kid()))),
            kill_connections: Arc::new(Notify::new()),
        });
        let app = router(shared.clone());
        let listener = OutageListener {
            inner: listener,
            shared: shared.clone(),
        };
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })
        .abort_handle();
        Self {
            base,
            flavor,
            shared,
            server,
        }
    }

    /// The issuer exactly as the vendor spells it: `{base}/` for Auth0,
    /// `{base}/oauth2/default` for Okta, `{base}/realms/acme` for Keycloak,
    /// `{base}/eu-west-1_FakePool` for Cognito, `{base}` otherwise.
    pub fn issuer(&self) -> String {
        self.shared.issuer()
    }

    /// `{base}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn discovery_url(&self) -> String {
        self.url(&self.shared.paths.discovery)
    }

    pub fn authorization_endpoint(&self) -> String {
        self.url(&self.shared.paths.authorize)
    }

    pub fn token_endpoint(&self) -> String {
        self.url(&self.shared.paths.token)
    }

    pub fn userinfo_endpoint(&self) -> String {
        self.url(&self.shared.paths.userinfo)
    }

    pub fn jwks_uri(&self) -> String {
        self.url(&self.shared.paths.jwks)
    }

    pub fn revocation_endpoint(&self) -> String {
        self.url(&self.shared.paths.revoke)
    }

    /// The logout endpoint the discovery document advertises
    /// (`end_session_endpoint`; Auth0 also serves `/v2/logout`). Cognito
    /// advertises none: this is its `{base}/logout`, which takes `client_id`
    /// and `logout_uri`.
    pub fn end_session_endpoint(&self) -> String {
        self.url(&self.shared.paths.logout[0])
    }

    /// Where Cognito's user-pool API (AWS JSON 1.1, `X-Amz-Target`) is
    /// served: `{base}/`, as `https://cognito-idp.{region}.amazonaws.com/`.
    pub fn user_api_endpoint(&self) -> String {
        self.url("/")
    }

    /// Cognito: whether the app client allows `USER_PASSWORD_AUTH`
    /// (`ALLOW_USER_PASSWORD_AUTH`; on when a client is added). Off,
    /// `InitiateAuth` answers `InvalidParameterException`.
    pub fn set_user_password_auth(&self, client_id: &str, enabled: bool) {
        if let Some(client) = self.shared.lock().clients.get_mut(client_id) {
            client.user_password_auth = enabled;
        }
    }

    /// Cognito's PreventUserExistenceErrors (off by default): on,
    /// `InitiateAuth` and the hosted UI answer an unknown user exactly as a
    /// wrong password.
    pub fn set_prevent_user_existence_errors(&self, on: bool) {
        self.shared.lock().prevent_user_existence_errors = on;
    }

    /// Cognito: puts the user in `FORCE_CHANGE_PASSWORD` (as after
    /// `AdminCreateUser`): a correct password at `InitiateAuth` answers the
    /// `NEW_PASSWORD_REQUIRED` challenge instead of tokens.
    pub fn require_new_password(&self, sub: &str) {
        self.shared.lock().new_password_required.insert(sub.into());
    }

    /// Adds a user, or replaces the one with the same `sub`.
    pub fn add_user(&self, user: FakeUser) {
        let mut state = self.shared.lock();
        state.users.retain(|u| u.user.sub != user.sub);
        state.users.push(StoredUser {
            user,
            updated_at: now(),
            meta: management::UserMeta::now(),
        });
        state.mgmt.invalidate();
    }

    /// Registers a client: confidential with `secret`, public without.
    /// Redirect URIs are compared exactly.
    pub fn add_client(&self, client_id: &str, secret: Option<&str>, redirect_uris: &[&str]) {
        self.shared.lock().clients.insert(
            client_id.into(),
            FakeClient {
                client_id: client_id.into(),
                secret: secret.map(Into::into),
                redirect_uris: redirect_uris.iter().map(|u| u.to_string()).collect(),
                user_password_auth: true,
            },
        );
    }

    /// Changes how the back-channel endpoints answer, at once. Entering
    /// `Down` also resets every open connection.
    pub fn set_mode(&self, mode: Mode) {
        let down = mode == Mode::Down;
        {
            let mut state = self.shared.lock();
            if down {
                state.connection_epoch += 1;
            }
            state.mode = mode;
        }
        if down {
            self.shared.kill_connections.notify_waiters();
        }
    }

    /// A new signing key becomes current and the JWKS publishes only it: a
    /// client holding the old JWKS must refetch to validate new tokens.
    pub fn rotate_keys(&self) {
        let key = Arc::new(RsaKey::generate(new_kid()));
        self.shared.lock().key = key;
    }

    /// The `kid` of the current signing key.
    pub fn current_kid(&self) -> String {
        self.shared.lock().key.kid.clone()
    }

    /// How many requests reached an endpoint: `discovery`, `jwks`,
    /// `authorize`, `login` (form posts), `token`, `token:<grant_type>`,
    /// `userinfo`, `revoke`, `logout`; for Cognito also `user_api` (every
    /// `POST {base}/`) and `initiate_auth` (those whose `X-Amz-Target` is
    /// `InitiateAuth`). Requests answered by a failure mode count;
    /// connections reset by `Down` do not.
    ///
    /// The Management APIs: `mgmt_token` (a Management token issued: Auth0
    /// `client_credentials` for `{issuer}api/v2/`, any Keycloak
    /// `client_credentials`), Auth0 `users`, `users_export` (job creation),
    /// `job` (polls), `export_download`; Okta `okta_users`; Cognito
    /// `list_users`; Keycloak `admin_users`, `admin_users_count`; the writes
    /// Auth0 `patch_user`, Okta `okta_update_user`, Keycloak `admin_user`
    /// (GET and PUT of one user), Cognito `admin_update_user_attributes`. Every
    /// request counts, faults and throttled ones included.
    pub fn calls(&self, what: &str) -> usize {
        self.shared.lock().calls.get(what).copied().unwrap_or(0)
    }

    /// A refresh token the upstream "issued earlier" (a day ago) to
    /// `client_id` for `sub`, as an application being migrated holds.
    pub fn issue_refresh_token(&self, client_id: &str, sub: &str, scope: &str) -> String {
        let token = self.shared.new_refresh_token(sub, client_id);
        self.shared.lock().refresh_tokens.insert(
            token.clone(),
            RefreshGrant {
                client_id: client_id.into(),
                sub: sub.into(),
                scope: scope.into(),
                audience: None,
                auth_time: now() - 86_400,
                sid: self.shared.new_sid(),
                amr: vec!["pwd"],
            },
        );
        token
    }

    /// Ends every refresh token issued so far, as an upstream administrator
    /// revoking the user's sessions (or a password reset) would: the next
    /// refresh with any of them is `invalid_grant`. Not recorded in
    /// [`FakeUpstream::revoked_refresh_tokens`], which is what `/revoke`
    /// received.
    pub fn revoke_all_refresh_tokens(&self) {
        let mut state = self.shared.lock();
        let tokens: Vec<String> = state.refresh_tokens.drain().map(|(t, _)| t).collect();
        state.spent_refresh_tokens.extend(tokens);
    }

    /// ID tokens issued from now on are wrong in this way.
    pub fn set_id_token_tamper(&self, tamper: Tamper) {
        let forger =
            (tamper == Tamper::BadSignature).then(|| Arc::new(RsaKey::generate(new_kid())));
        let mut state = self.shared.lock();
        state.tamper = tamper;
        if forger.is_some() {
            state.forger = forger;
        }
    }

    /// Every token `/revoke` received that was not a known access token, in
    /// order.
    pub fn revoked_refresh_tokens(&self) -> Vec<String> {
        self.shared.lock().revoked.clone()
    }

    /// Lifetime of access tokens issued from now on (`expires_in`, `exp`,
    /// and when userinfo stops taking them; 0 issues tokens already
    /// expired). Defaults: Auth0 86400, Okta 3600, Keycloak 300, Generic and
    /// Cognito 3600 (Cognito's ID tokens follow it too).
    pub fn set_access_token_ttl(&self, secs: u64) {
        self.shared.lock().access_token_ttl = secs;
    }

    /// The query of the last `GET /authorize`.
    pub fn last_authorize_params(&self) -> Option<HashMap<String, String>> {
        self.shared.lock().last_authorize.clone()
    }

    /// Drives the hosted login page as a browser would: GETs
    /// `authorize_url` and, unless the upstream session completes it at once
    /// (or it fails), fills in `username` and `password` and posts the form.
    /// Returns the last response: normally a 302 to the client's
    /// `redirect_uri`, or the login page again with an error.
    pub async fn browser_login(
        &self,
        browser: &reqwest::Client,
        authorize_url: &str,
        username: &str,
        password: &str,
    ) -> reqwest::Response {
        let page = browser
            .get(authorize_url)
            .send()
            .await
            .expect("GET authorize");
        if page.status() != reqwest::StatusCode::OK {
            return page;
        }
        let html = page.text().await.expect("login page");
        let (action, mut fields) = login_form(&html);
        fields.insert("username".into(), username.into());
        fields.insert("password".into(), password.into());
        browser
            .post(action)
            .form(&fields)
            .send()
            .await
            .expect("POST login form")
    }
}

/// The query parameters of a redirect's `Location` (`code`, `state`, `iss`,
/// or `error`...).
pub fn redirect_params(response: &reqwest::Response) -> HashMap<String, String> {
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .unwrap_or_else(|| panic!("a redirect, got {}", response.status()))
        .to_str()
        .expect("ASCII Location");
    url::Url::parse(location)
        .expect("an absolute Location")
        .query_pairs()
        .into_owned()
        .collect()
}

/// The `action` (absolute URL) and the inputs of the login page's form.
pub fn login_form(html: &str) -> (String, HashMap<String, String>) {
    let doc = Html::parse_document(html);
    let form = doc
        .select(&Selector::parse("form").expect("selector"))
        .next()
        .expect("a form on the login page");
    let action = form.value().attr("action").unwrap_or("").to_string();
    let fields = form
        .select(&Selector::parse("input[name]").expect("selector"))
        .map(|input| {
            (
                input.value().attr("name").unwrap_or("").to_string(),
                input.value().attr("value").unwrap_or("").to_string(),
            )
        })
        .collect();
    (action, fields)
}

// ---------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------

/// What every handler, the listener and every connection share. Only
/// `state` changes; it sits behind one std mutex that is never held across
/// an `.await` (handlers copy what they need out, sign outside the lock,
/// and lock again to record what they issued).
struct Shared {
    flavor: Flavor,
    paths: Paths,
    base: String,
    state: Mutex<UpstreamState>,
    /// Wakes every open connection when the mode becomes `Down`, so idle
    /// keep-alive connections die at once (not only when next used).
    kill_connections: Arc<Notify>,
}

/// Guarded by [`Shared::state`]: the configuration tests set, everything
/// the fake has issued (transactions, codes, tokens, sessions) and what it
/// has observed (call counts, the last authorize query, revocations).
struct UpstreamState {
    mode: Mode,
    /// Bumped on entering `Down`: connections accepted in an older epoch
    /// are dead.
    connection_epoch: u64,
    users: Vec<StoredUser>,
    clients: HashMap<String, FakeClient>,
    /// The current signing key, the only one in the JWKS.
    key: Arc<RsaKey>,
    /// Signs under the current `kid` when tampering with `BadSignature`.
    forger: Option<Arc<RsaKey>>,
    tamper: Tamper,
    access_token_ttl: u64,
    /// Authorization requests waiting for the login form, by `tx`.
    transactions: HashMap<String, Transaction>,
    codes: HashMap<String, CodeGrant>,
    /// Live refresh tokens.
    refresh_tokens: HashMap<String, RefreshGrant>,
    /// Refresh tokens already exchanged (rotation) or revoked.
    spent_refresh_tokens: HashSet<String>,
    revoked: Vec<String>,
    access_tokens: HashMap<String, AccessGrant>,
    /// Upstream browser sessions, by cookie value.
    sessions: HashMap<String, Session>,
    calls: HashMap<String, usize>,
    last_authorize: Option<HashMap<String, String>>,
    /// The current rate-limit window (start, requests in it).
    rate_window: (i64, u64),
    /// Cognito's PreventUserExistenceErrors.
    prevent_user_existence_errors: bool,
    /// Cognito users in `FORCE_CHANGE_PASSWORD`, by `sub`.
    new_password_required: HashSet<String>,
    /// The Management APIs' tokens, limits, faults, jobs and orderings.
    mgmt: management::Management,
}

impl UpstreamState {
    fn new(flavor: Flavor, key: RsaKey) -> Self {
        Self {
            mode: Mode::Normal,
            connection_epoch: 0,
            users: vec![],
            clients: HashMap::new(),
            key: Arc::new(key),
            forger: None,
            tamper: Tamper::None,
            access_token_ttl: match flavor {
                Flavor::Auth0 => 86_400,
                Flavor::Okta | Flavor::Generic | Flavor::Cognito => 3_600,
                Flavor::Keycloak => 300,
            },
            transactions: HashMap::new(),
            codes: HashMap::new(),
            refresh_tokens: HashMap::new(),
            spent_refresh_tokens: HashSet::new(),
            revoked: vec![],
            access_tokens: HashMap::new(),
            sessions: HashMap::new(),
            calls: HashMap::new(),
            last_authorize: None,
            rate_window: (0, 0),
            prevent_user_existence_errors: false,
            new_password_required: HashSet::new(),
            mgmt: management::Management::default(),
        }
    }

    fn count(&mut self, what: &str) {
        *self.calls.entry(what.to_string()).or_default() += 1;
    }

    fn user_by_sub(&self, sub: &str) -> Option<StoredUser> {
        self.users.iter().find(|u| u.user.sub == sub).cloned()
    }

    /// Email (any case), or for Keycloak also the username (`nickname`).
    fn user_by_login(&self, flavor: Flavor, login: &str) -> Option<StoredUser> {
        let login = login.trim();
        self.users
            .iter()
            .find(|u| {
                u.user.email.eq_ignore_ascii_case(login)
                    || (flavor == Flavor::Keycloak && u.user.nickname.as_deref() == Some(login))
            })
            .cloned()
    }
}

#[derive(Debug, Clone)]
struct StoredUser {
    user: FakeUser,
    updated_at: i64,
    /// Creation and update instants, seed number, patched vendor record.
    meta: management::UserMeta,
}

#[derive(Debug, Clone)]
struct FakeClient {
    client_id: String,
    secret: Option<String>,
    redirect_uris: Vec<String>,
    /// Cognito's `ALLOW_USER_PASSWORD_AUTH`.
    user_password_auth: bool,
}

#[derive(Debug, Clone)]
struct Transaction {
    client_id: String,
    redirect_uri: String,
    /// `code`, or Cognito's implicit `token`.
    response_type: String,
    state: Option<String>,
    nonce: Option<String>,
    scope: String,
    challenge: Option<String>,
    audience: Option<String>,
    login_hint: Option<String>,
}

#[derive(Debug, Clone)]
struct CodeGrant {
    tx: Transaction,
    sub: String,
    auth_time: i64,
    sid: String,
    amr: Vec<&'static str>,
    expires_at: i64,
}

#[derive(Debug, Clone)]
struct RefreshGrant {
    client_id: String,
    sub: String,
    scope: String,
    audience: Option<String>,
    auth_time: i64,
    sid: String,
    amr: Vec<&'static str>,
}

#[derive(Debug, Clone)]
struct AccessGrant {
    sub: String,
    scope: String,
    expires_at: i64,
    /// The refresh token issued with it or that it was refreshed from
    /// (Cognito's revocation ends both).
    refresh_token: Option<String>,
}

#[derive(Debug, Clone)]
struct Session {
    sub: String,
    auth_time: i64,
    sid: String,
    amr: Vec<&'static str>,
}

/// The paths one flavor serves.
struct Paths {
    discovery: String,
    authorize: String,
    /// Where the login form posts (the vendor's hosted page).
    login: String,
    token: String,
    userinfo: String,
    jwks: String,
    revoke: String,
    /// The first is `end_session_endpoint`.
    logout: Vec<String>,
    /// Cognito's user-pool API (`POST`).
    user_api: Option<String>,
}

impl Paths {
    fn of(flavor: Flavor) -> Self {
        let p = |s: &str| s.to_string();
        match flavor {
            Flavor::Auth0 => Self {
                discovery: p("/.well-known/openid-configuration"),
                authorize: p("/authorize"),
                login: p("/u/login"),
                token: p("/oauth/token"),
                userinfo: p("/userinfo"),
                jwks: p("/.well-known/jwks.json"),
                revoke: p("/oauth/revoke"),
                // OIDC RP-initiated logout is what discovery advertises;
                // `/v2/logout` (`returnTo`, `client_id`) is the legacy one
                // most Auth0 apps call.
                logout: vec![p("/oidc/logout"), p("/v2/logout")],
                user_api: None,
            },
            Flavor::Okta => {
                let s = "/oauth2/default";
                Self {
                    discovery: format!("{s}/.well-known/openid-configuration"),
                    authorize: format!("{s}/v1/authorize"),
                    login: p("/login/login.htm"),
                    token: format!("{s}/v1/token"),
                    userinfo: format!("{s}/v1/userinfo"),
                    jwks: format!("{s}/v1/keys"),
                    revoke: format!("{s}/v1/revoke"),
                    logout: vec![format!("{s}/v1/logout")],
                    user_api: None,
                }
            }
            Flavor::Keycloak => {
                let r = "/realms/acme";
                let oc = format!("{r}/protocol/openid-connect");
                Self {
                    discovery: format!("{r}/.well-known/openid-configuration"),
                    authorize: format!("{oc}/auth"),
                    login: format!("{r}/login-actions/authenticate"),
                    token: format!("{oc}/token"),
                    userinfo: format!("{oc}/userinfo"),
                    jwks: format!("{oc}/certs"),
                    revoke: format!("{oc}/revoke"),
                    logout: vec![format!("{oc}/logout")],
                    user_api: None,
                }
            }
            Flavor::Generic => Self {
                discovery: p("/.well-known/openid-configuration"),
                authorize: p("/authorize"),
                login: p("/login"),
                token: p("/token"),
                userinfo: p("/userinfo"),
                jwks: p("/jwks"),
                revoke: p("/revoke"),
                logout: vec![p("/logout")],
                user_api: None,
            },
            Flavor::Cognito => {
                let pool = format!("/{COGNITO_POOL_ID}");
                Self {
                    discovery: format!("{pool}/.well-known/openid-configuration"),
                    authorize: p("/oauth2/authorize"),
                    login: p("/login"),
                    token: p("/oauth2/token"),
                    userinfo: p("/oauth2/userInfo"),
                    jwks: format!("{pool}/.well-known/jwks.json"),
                    revoke: p("/oauth2/revoke"),
                    logout: vec![p("/logout")],
                    user_api: Some(p("/")),
                }
            }
        }
    }

    fn endpoint(&self, method: &Method, path: &str) -> Option<Endpoint> {
        Some(if path == self.discovery {
            Endpoint::Discovery
        } else if path == self.jwks {
            Endpoint::Jwks
        } else if path == self.authorize && method == Method::GET {
            Endpoint::Authorize
        } else if path == self.login {
            Endpoint::Login
        } else if path == self.token {
            Endpoint::Token
        } else if path == self.userinfo {
            Endpoint::Userinfo
        } else if path == self.revoke {
            Endpoint::Revoke
        } else if self.logout.iter().any(|l| l == path) {
            Endpoint::Logout
        } else if self.user_api.as_deref() == Some(path) && method == Method::POST {
            Endpoint::UserApi
        } else {
            return None;
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Discovery,
    Jwks,
    Authorize,
    Login,
    Token,
    Userinfo,
    Revoke,
    Logout,
    /// Cognito's user-pool API.
    UserApi,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Discovery => "discovery",
            Endpoint::Jwks => "jwks",
            Endpoint::Authorize => "authorize",
            Endpoint::Login => "login",
            Endpoint::Token => "token",
            Endpoint::Userinfo => "userinfo",
            Endpoint::Revoke => "revoke",
            Endpoint::Logout => "logout",
            Endpoint::UserApi => "user_api",
        }
    }

    /// The back-channel endpoints that `Mode` applies to.
    fn back_channel(self) -> bool {
        matches!(
            self,
            Endpoint::Discovery
                | Endpoint::Jwks
                | Endpoint::Token
                | Endpoint::Userinfo
                | Endpoint::Revoke
                | Endpoint::UserApi
        )
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, UpstreamState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn issuer(&self) -> String {
        match self.flavor {
            Flavor::Auth0 => format!("{}/", self.base),
            Flavor::Okta => format!("{}/oauth2/default", self.base),
            Flavor::Keycloak => format!("{}/realms/acme", self.base),
            Flavor::Generic => self.base.clone(),
            Flavor::Cognito => format!("{}/{COGNITO_POOL_ID}", self.base),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn session_cookie(&self) -> &'static str {
        match self.flavor {
            Flavor::Auth0 => "auth0",
            Flavor::Okta => "sid",
            Flavor::Keycloak => "KEYCLOAK_SESSION",
            Flavor::Generic => "upstream_session",
            Flavor::Cognito => "cognito",
        }
    }

    fn new_sid(&self) -> String {
        match self.flavor {
            // Cognito: the `origin_jti` of the authentication.
            Flavor::Keycloak | Flavor::Cognito => uuid_from(&random_bytes(16)),
            _ => URL_SAFE_NO_PAD.encode(random_bytes(24)),
        }
    }

    fn new_refresh_token(&self, sub: &str, client_id: &str) -> String {
        match self.flavor {
            Flavor::Auth0 => format!("v1.{}", URL_SAFE_NO_PAD.encode(random_bytes(64))),
            // Keycloak's refresh tokens are HS512 JWTs (typ Refresh) that
            // clients must treat as opaque.
            Flavor::Keycloak => {
                let header =
                    json!({"alg": "HS512", "typ": "JWT", "kid": uuid_from(&random_bytes(16))});
                let iat = now();
                let payload = json!({
                    "exp": iat + 1800, "iat": iat, "jti": uuid_from(&random_bytes(16)),
                    "iss": self.issuer(), "aud": self.issuer(), "sub": sub,
                    "typ": "Refresh", "azp": client_id,
                });
                format!(
                    "{}.{}.{}",
                    URL_SAFE_NO_PAD.encode(header.to_string()),
                    URL_SAFE_NO_PAD.encode(payload.to_string()),
                    URL_SAFE_NO_PAD.encode(random_bytes(64))
                )
            }
            // Cognito's refresh tokens are JWEs (RSA-OAEP, A256GCM) only
            // Cognito can read.
            Flavor::Cognito => {
                let header = json!({"cty": "JWT", "enc": "A256GCM", "alg": "RSA-OAEP"});
                format!(
                    "{}.{}.{}.{}.{}",
                    URL_SAFE_NO_PAD.encode(header.to_string()),
                    URL_SAFE_NO_PAD.encode(random_bytes(256)),
                    URL_SAFE_NO_PAD.encode(random_bytes(12)),
                    URL_SAFE_NO_PAD.encode(random_bytes(400)),
                    URL_SAFE_NO_PAD.encode(random_bytes(16))
                )
            }
            Flavor::Okta | Flavor::Generic => URL_SAFE_NO_PAD.encode(random_bytes(32)),
        }
    }
}

// ---------------------------------------------------------------------------
// Keys and JWTs
// ---------------------------------------------------------------------------

/// An RS256 key (2048 bits) and its public JWK.
struct RsaKey {
    kid: String,
    pair: RsaKeyPair,
    jwk: Value,
}

impl RsaKey {
    fn generate(kid: String) -> Self {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key generation");
        let public = pair.public_key();
        let n = public.modulus().big_endian_without_leading_zero().to_vec();
        let e = public.exponent().big_endian_without_leading_zero().to_vec();
        let jwk = json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(n),
            "e": URL_SAFE_NO_PAD.encode(e),
        });
        Self { kid, pair, jwk }
    }

    /// A JWS (compact) over `claims` with header `{alg: RS256, typ, kid}`.
    fn sign(&self, kid: &str, typ: &str, claims: &Value) -> String {
        self.sign_with_header(&json!({"alg": "RS256", "typ": typ, "kid": kid}), claims)
    }

    /// A JWS (compact, RS256) over `claims` with exactly `header`.
    fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let mut out = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                out.as_bytes(),
                &mut sig,
            )
            .expect("RS256 signature");
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig));
        out
    }
}

fn new_kid() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(16))
}

/// `at_hash` for RS256 (OIDC Core §3.1.3.6).
/// What a [`Tamper`] does to an ID token's claims (the signature is the
/// signer's business).
fn tamper_claims(claims: &mut Map<String, Value>, tamper: Tamper, iat: i64) {
    match tamper {
        Tamper::None | Tamper::BadSignature => {}
        Tamper::WrongAudience => {
            claims.insert("aud".into(), json!("some-other-client"));
        }
        Tamper::WrongNonce => {
            claims.insert("nonce".into(), json!("not-the-nonce-you-sent"));
        }
        Tamper::Expired => {
            claims.insert("iat".into(), json!(iat - 4_200));
            claims.insert("exp".into(), json!(iat - 600));
        }
        Tamper::WrongIssuer => {
            claims.insert("iss".into(), json!("https://evil.example.com/"));
        }
    }
}

fn at_hash(access_token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
}

// ---------------------------------------------------------------------------
// Router and the middleware that counts, applies modes and adds headers
// ---------------------------------------------------------------------------

fn router(shared: Arc<Shared>) -> Router {
    let p = &shared.paths;
    let mut app = Router::new()
        .route(&p.discovery, get(discovery))
        .route(&p.jwks, get(jwks))
        .route(&p.authorize, get(authorize))
        .route(&p.login, post(login))
        .route(&p.token, post(token))
        .route(&p.userinfo, get(userinfo).post(userinfo))
        .route(&p.revoke, post(revoke));
    for path in &p.logout {
        app = app.route(path, get(logout).post(logout));
    }
    if let Some(path) = &p.user_api {
        app = app.route(path, post(user_api));
    }
    app = management::routes(app, shared.flavor);
    app.layer(middleware::from_fn_with_state(shared.clone(), observe))
        .with_state(shared)
}

/// Counts the call, applies the failure mode to back-channel endpoints and
/// adds the vendor's rate-limit headers to every response.
async fn observe(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let endpoint = s.paths.endpoint(req.method(), req.uri().path());
    let (req, grant_type) = if endpoint == Some(Endpoint::Token) {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default();
        let grant_type = parse_params(&parts.headers, &bytes).remove("grant_type");
        (Request::from_parts(parts, Body::from(bytes)), grant_type)
    } else {
        (req, None)
    };
    let initiate_auth = endpoint == Some(Endpoint::UserApi)
        && req
            .headers()
            .get("x-amz-target")
            .is_some_and(|t| t.as_bytes() == COGNITO_INITIATE_AUTH.as_bytes());
    let mode = {
        let mut state = s.lock();
        if let Some(e) = endpoint {
            state.count(e.name());
        }
        if let Some(g) = &grant_type {
            state.count(&format!("token:{g}"));
        }
        if initiate_auth {
            state.count("initiate_auth");
        }
        state.mode.clone()
    };
    let mut response = match endpoint {
        // AWS answers throttling with 400 on its JSON APIs.
        Some(Endpoint::UserApi) if matches!(mode, Mode::Fail500 | Mode::RateLimited { .. }) => {
            match mode {
                Mode::Fail500 => aws_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalErrorException",
                    "Internal error",
                ),
                _ => aws_error(
                    StatusCode::BAD_REQUEST,
                    "TooManyRequestsException",
                    "Rate exceeded",
                ),
            }
        }
        Some(e) if e.back_channel() && mode != Mode::Normal => match mode {
            Mode::Slow(delay) => {
                tokio::time::sleep(delay).await;
                next.run(req).await
            }
            Mode::Fail500 => internal_error(s.flavor),
            Mode::RateLimited { retry_after_secs } => too_many_requests(&s, retry_after_secs),
            Mode::InvalidJson => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                "<!DOCTYPE html><html><head><title>Maintenance</title></head>\
                 <body><h1>We&rsquo;ll be right back</h1></body></html>",
            )
                .into_response(),
            // The connection is reset before this is written.
            Mode::Down | Mode::Normal => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        },
        _ if mode == Mode::Down => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        _ => next.run(req).await,
    };
    add_rate_limit_headers(&s, &mut response);
    response
}

/// The vendor's rate-limit header names (limit, remaining, reset), if any.
fn rate_limit_header_names(flavor: Flavor) -> Option<[&'static str; 3]> {
    match flavor {
        Flavor::Auth0 => Some([
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ]),
        Flavor::Okta => Some([
            "x-rate-limit-limit",
            "x-rate-limit-remaining",
            "x-rate-limit-reset",
        ]),
        Flavor::Keycloak | Flavor::Generic | Flavor::Cognito => None,
    }
}

/// Per-minute windows; `remaining` counts down but never reaches 0 outside
/// `Mode::RateLimited` (the fake does not limit by itself).
fn add_rate_limit_headers(s: &Shared, response: &mut Response) {
    let Some(names) = rate_limit_header_names(s.flavor) else {
        return;
    };
    if response.headers().contains_key(names[0]) {
        return;
    }
    let limit: u64 = if s.flavor == Flavor::Auth0 { 100 } else { 600 };
    let t = now();
    let (start, used) = {
        let mut state = s.lock();
        let window = t - t % 60;
        if state.rate_window.0 != window {
            state.rate_window = (window, 0);
        }
        state.rate_window.1 += 1;
        state.rate_window
    };
    let remaining = limit.saturating_sub(used).max(1);
    let headers = response.headers_mut();
    for (name, value) in names
        .iter()
        .zip([limit as i64, remaining as i64, start + 60])
    {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    }
}

fn too_many_requests(s: &Shared, retry_after_secs: u64) -> Response {
    let mut response = match s.flavor {
        Flavor::Auth0 => json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"error": "too_many_requests", "error_description": "Global limit has been reached"}),
        ),
        Flavor::Okta => json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({
                "errorCode": "E0000047",
                "errorSummary": "API call exceeded rate limit due to too many requests.",
                "errorLink": "E0000047",
                "errorId": format!("oae{}", URL_SAFE_NO_PAD.encode(random_bytes(15))),
                "errorCauses": [],
            }),
        ),
        // Keycloak has no rate limiting of its own; what answers is the
        // reverse proxy in front of it.
        Flavor::Keycloak => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::CONTENT_TYPE, "text/html")],
            "<html>\r\n<head><title>429 Too Many Requests</title></head>\r\n<body>\r\n\
             <center><h1>429 Too Many Requests</h1></center>\r\n<hr><center>nginx</center>\r\n\
             </body>\r\n</html>\r\n",
        )
            .into_response(),
        Flavor::Generic => json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"error": "too_many_requests", "error_description": "Rate limit exceeded"}),
        ),
        Flavor::Cognito => json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"error": "too_many_requests"}),
        ),
    };
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    if let Some(names) = rate_limit_header_names(s.flavor) {
        let limit: u64 = if s.flavor == Flavor::Auth0 { 100 } else { 600 };
        let reset = now() + retry_after_secs as i64;
        for (name, value) in names.iter().zip([limit as i64, 0, reset]) {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
    response
}

fn internal_error(flavor: Flavor) -> Response {
    match flavor {
        Flavor::Auth0 => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": "server_error", "error_description": "Internal Server Error"}),
        ),
        Flavor::Okta => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({
                "errorCode": "E0000009",
                "errorSummary": "Internal Server Error",
                "errorLink": "E0000009",
                "errorId": format!("oae{}", URL_SAFE_NO_PAD.encode(random_bytes(15))),
                "errorCauses": [],
            }),
        ),
        Flavor::Keycloak => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": "unknown_error"}),
        ),
        Flavor::Cognito => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": "server_error"}),
        ),
        Flavor::Generic => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><head><title>500 Internal Server Error</title></head>\
             <body><h1>Internal Server Error</h1></body></html>",
        )
            .into_response(),
    }
}

// ---------------------------------------------------------------------------
// Discovery and JWKS
// ---------------------------------------------------------------------------

async fn discovery(State(s): State<Arc<Shared>>) -> Response {
    let p = &s.paths;
    if s.flavor == Flavor::Cognito {
        // Cognito's document, field for field: no grant types, no PKCE
        // methods, no `end_session_endpoint`.
        return json_response(
            StatusCode::OK,
            &json!({
                "authorization_endpoint": s.url(&p.authorize),
                "id_token_signing_alg_values_supported": ["RS256"],
                "issuer": s.issuer(),
                "jwks_uri": s.url(&p.jwks),
                "response_types_supported": ["code", "token"],
                "revocation_endpoint": s.url(&p.revoke),
                "scopes_supported": ["openid", "email", "phone", "profile"],
                "subject_types_supported": ["public"],
                "token_endpoint": s.url(&p.token),
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "userinfo_endpoint": s.url(&p.userinfo),
            }),
        );
    }
    let mut grant_types = vec!["authorization_code", "refresh_token"];
    match s.flavor {
        Flavor::Auth0 => {
            grant_types.extend(["client_credentials", "password", AUTH0_PASSWORD_REALM])
        }
        Flavor::Okta | Flavor::Keycloak => grant_types.extend(["client_credentials", "password"]),
        Flavor::Generic | Flavor::Cognito => {}
    }
    let mut doc = json!({
        "issuer": s.issuer(),
        "authorization_endpoint": s.url(&p.authorize),
        "token_endpoint": s.url(&p.token),
        "userinfo_endpoint": s.url(&p.userinfo),
        "jwks_uri": s.url(&p.jwks),
        "revocation_endpoint": s.url(&p.revoke),
        "end_session_endpoint": s.url(&p.logout[0]),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": grant_types,
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": match s.flavor {
            Flavor::Auth0 => json!(["aud", "auth_time", "email", "email_verified", "exp", "iat",
                "iss", "name", "nickname", "picture", "sid", "sub", "updated_at"]),
            Flavor::Okta => json!(["aud", "auth_time", "email", "email_verified", "exp", "iat",
                "iss", "name", "preferred_username", "sub", "updated_at", "ver", "jti", "amr", "idp"]),
            Flavor::Keycloak => json!(["aud", "sub", "iss", "auth_time", "name", "given_name",
                "family_name", "preferred_username", "email", "email_verified", "acr"]),
            Flavor::Generic | Flavor::Cognito => json!(["aud", "auth_time", "email", "email_verified", "exp", "iat",
                "iss", "name", "picture", "sub", "updated_at"]),
        },
        "request_uri_parameter_supported": false,
    });
    if s.flavor.sends_iss_in_authorization_response() {
        doc["authorization_response_iss_parameter_supported"] = json!(true);
    }
    if s.flavor == Flavor::Auth0 {
        doc["mfa_challenge_endpoint"] = json!(s.url("/mfa/challenge"));
        doc["device_authorization_endpoint"] = json!(s.url("/oauth/device/code"));
    }
    json_response(StatusCode::OK, &doc)
}

async fn jwks(State(s): State<Arc<Shared>>) -> Response {
    let key = s.lock().key.clone();
    json_response(StatusCode::OK, &json!({"keys": [key.jwk]}))
}

// ---------------------------------------------------------------------------
// Authorization endpoint and the hosted login page
// ---------------------------------------------------------------------------

async fn authorize(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let session_cookie = read_cookie(&headers, s.session_cookie());
    let (client, session) = {
        let mut state = s.lock();
        state.last_authorize = Some(q.clone());
        let client = q
            .get("client_id")
            .and_then(|id| state.clients.get(id).cloned());
        let session = session_cookie.and_then(|c| state.sessions.get(&c).cloned());
        (client, session)
    };
    // Before the redirect URI is known good, errors are a page, never a
    // redirect (RFC 6749 §4.1.2.1).
    let Some(client) = client else {
        let message = match s.flavor {
            Flavor::Auth0 => "Unknown client",
            Flavor::Okta => "Invalid value for 'client_id' parameter.",
            Flavor::Keycloak => "Client not found.",
            Flavor::Generic => "Unknown client_id",
            Flavor::Cognito => "An error was encountered with the requested page. (invalid_client)",
        };
        return error_page(&s, StatusCode::BAD_REQUEST, message);
    };
    let redirect_uri = q.get("redirect_uri").cloned().unwrap_or_default();
    if !client.redirect_uris.contains(&redirect_uri) {
        let message = match s.flavor {
            Flavor::Auth0 => "Callback URL mismatch.",
            Flavor::Okta => {
                "The 'redirect_uri' parameter must be a Login redirect URI in the client app settings"
            }
            Flavor::Keycloak => "Invalid parameter: redirect_uri",
            Flavor::Generic => "redirect_uri is not registered for this client",
            Flavor::Cognito => {
                "An error was encountered with the requested page. (redirect_mismatch)"
            }
        };
        return error_page(&s, StatusCode::BAD_REQUEST, message);
    }
    let tx = Transaction {
        client_id: client.client_id.clone(),
        redirect_uri,
        response_type: q.get("response_type").cloned().unwrap_or_default(),
        state: q.get("state").cloned(),
        nonce: q.get("nonce").cloned(),
        scope: q.get("scope").cloned().unwrap_or_default(),
        challenge: q.get("code_challenge").cloned(),
        audience: q.get("audience").cloned(),
        login_hint: q.get("login_hint").cloned(),
    };
    let fail = |error: &str, description: &str| error_redirect(&s, &tx, error, description);
    let implicit = s.flavor == Flavor::Cognito && tx.response_type == "token";
    if tx.response_type != "code" && !implicit {
        return fail(
            "unsupported_response_type",
            "Unsupported response_type; only code is supported",
        );
    }
    if tx.challenge.is_some() && q.get("code_challenge_method").map(String::as_str) != Some("S256")
    {
        return fail(
            "invalid_request",
            "code_challenge_method must be S256 (plain is not supported)",
        );
    }
    // Cognito does not insist on PKCE.
    if tx.challenge.is_none() && client.secret.is_none() && s.flavor != Flavor::Cognito {
        return fail(
            "invalid_request",
            "PKCE code challenge is required when the token endpoint authentication method is 'NONE'.",
        );
    }
    if s.flavor == Flavor::Okta && tx.state.is_none() {
        return fail(
            "invalid_request",
            "The authorization request is missing a required parameter: 'state'.",
        );
    }
    let prompt = q.get("prompt").cloned().unwrap_or_default();
    let prompts: Vec<&str> = prompt.split(' ').collect();
    if prompts.contains(&"none") {
        return match session {
            Some(session) => complete_authorization(&s, tx, &session),
            None => fail("login_required", "Login required"),
        };
    }
    if let Some(session) = session
        && !prompts.contains(&"login")
    {
        return complete_authorization(&s, tx, &session);
    }
    let id = random_token();
    s.lock().transactions.insert(id.clone(), tx.clone());
    login_page(&s, &id, tx.login_hint.as_deref().unwrap_or(""), None)
}

async fn login(
    State(s): State<Arc<Shared>>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let tx_id = form.get("tx").cloned().unwrap_or_default();
    let username = form.get("username").cloned().unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let (tx, user) = {
        let state = s.lock();
        (
            state.transactions.get(&tx_id).cloned(),
            state.user_by_login(s.flavor, &username),
        )
    };
    let Some(tx) = tx else {
        return error_page(
            &s,
            StatusCode::BAD_REQUEST,
            "Your login session has expired. Go back to the application and try again.",
        );
    };
    let user = match user {
        Some(u) if u.user.password == password => u.user,
        // Cognito's hosted UI tells an unknown user apart unless
        // PreventUserExistenceErrors is on.
        None if s.flavor == Flavor::Cognito && !s.lock().prevent_user_existence_errors => {
            return login_page(&s, &tx_id, &username, Some("User does not exist."));
        }
        _ => {
            let message = match s.flavor {
                Flavor::Auth0 => "Wrong email or password",
                Flavor::Okta => "Unable to sign in",
                Flavor::Keycloak | Flavor::Generic => "Invalid username or password.",
                Flavor::Cognito => "Incorrect username or password.",
            };
            return login_page(&s, &tx_id, &username, Some(message));
        }
    };
    if user.blocked {
        let message = match s.flavor {
            Flavor::Auth0 => "Your account has been blocked. Contact your administrator.",
            Flavor::Okta => "Unable to sign in",
            Flavor::Keycloak => "Account is disabled, contact your administrator.",
            Flavor::Generic => "Account disabled.",
            Flavor::Cognito => "User is disabled.",
        };
        return login_page(&s, &tx_id, &username, Some(message));
    }
    // A user with MFA passes the (simulated) second factor here: the
    // browser track is how such users migrate.
    let session = Session {
        sub: user.sub.clone(),
        auth_time: now(),
        sid: s.new_sid(),
        amr: if user.mfa_required {
            vec!["pwd", "mfa"]
        } else {
            vec!["pwd"]
        },
    };
    let cookie = random_token();
    {
        let mut state = s.lock();
        state.transactions.remove(&tx_id);
        state.sessions.insert(cookie.clone(), session.clone());
    }
    let mut response = complete_authorization(&s, tx, &session);
    let set_cookie = format!(
        "{}={cookie}; Path=/; HttpOnly; SameSite=Lax",
        s.session_cookie()
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_str(&set_cookie).expect("cookie header"),
    );
    response
}

/// Issues a code and redirects back to the client.
fn complete_authorization(s: &Shared, tx: Transaction, session: &Session) -> Response {
    if tx.response_type == "token" {
        return complete_implicit(s, tx, session);
    }
    let code = match s.flavor {
        Flavor::Keycloak => format!(
            "{}.{}.{}",
            uuid_from(&random_bytes(16)),
            session.sid,
            uuid_from(&random_bytes(16))
        ),
        Flavor::Cognito => uuid_from(&random_bytes(16)),
        _ => random_token(),
    };
    let mut params = vec![("code", code.clone())];
    if let Some(state) = &tx.state {
        params.push(("state", state.clone()));
    }
    if s.flavor == Flavor::Keycloak {
        params.push(("session_state", session.sid.clone()));
    }
    if s.flavor.sends_iss_in_authorization_response() {
        params.push(("iss", s.issuer()));
    }
    let location = with_query(&tx.redirect_uri, &params);
    s.lock().codes.insert(
        code,
        CodeGrant {
            tx,
            sub: session.sub.clone(),
            auth_time: session.auth_time,
            sid: session.sid.clone(),
            amr: session.amr.clone(),
            expires_at: now() + 60,
        },
    );
    redirect(&location)
}

/// Cognito's implicit grant: the tokens (no refresh token) in the
/// fragment of the redirect.
fn complete_implicit(s: &Shared, tx: Transaction, session: &Session) -> Response {
    let issue = Issue {
        client_id: tx.client_id.clone(),
        sub: session.sub.clone(),
        scope: tx.scope.clone(),
        nonce: tx.nonce.clone(),
        audience: None,
        auth_time: session.auth_time,
        sid: session.sid.clone(),
        amr: session.amr.clone(),
        refresh: None,
    };
    let Some(tokens) = cognito_tokens(s, &issue, CognitoGrant::Implicit) else {
        return error_redirect(s, &tx, "server_error", "The user no longer exists");
    };
    let mut fragment = form_urlencoded::Serializer::new(String::new());
    if let Some(id_token) = &tokens.id_token {
        fragment.append_pair("id_token", id_token);
    }
    fragment
        .append_pair("access_token", &tokens.access_token)
        .append_pair("expires_in", &tokens.expires_in.to_string())
        .append_pair("token_type", "Bearer");
    if let Some(state) = &tx.state {
        fragment.append_pair("state", state);
    }
    let mut url = url::Url::parse(&tx.redirect_uri).expect("an absolute redirect URI");
    url.set_fragment(Some(&fragment.finish()));
    redirect(url.as_str())
}

fn error_redirect(s: &Shared, tx: &Transaction, error: &str, description: &str) -> Response {
    let mut params = vec![
        ("error", error.to_string()),
        ("error_description", description.to_string()),
    ];
    if let Some(state) = &tx.state {
        params.push(("state", state.clone()));
    }
    if s.flavor.sends_iss_in_authorization_response() {
        params.push(("iss", s.issuer()));
    }
    redirect(&with_query(&tx.redirect_uri, &params))
}

fn login_page(s: &Shared, tx: &str, username: &str, error: Option<&str>) -> Response {
    let (title, heading) = match s.flavor {
        Flavor::Auth0 => ("Log in | Acme", "Welcome"),
        Flavor::Okta => ("Acme - Sign In", "Sign In"),
        Flavor::Keycloak => ("Sign in to acme", "Sign in to your account"),
        Flavor::Generic => ("Sign in", "Sign in"),
        Flavor::Cognito => ("Signin", "Sign in with your email and password"),
    };
    let error = error
        .map(|e| {
            format!(
                r#"<div class="error" id="error" role="alert">{}</div>"#,
                escape(e)
            )
        })
        .unwrap_or_default();
    let html = format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title></head>
<body>
<h1>{heading}</h1>
{error}
<form method="post" action="{action}">
  <input type="hidden" name="tx" value="{tx}">
  <label>Email address <input type="text" name="username" value="{username}" autocomplete="username"></label>
  <label>Password <input type="password" name="password" autocomplete="current-password"></label>
  <button type="submit" name="action" value="default">Continue</button>
</form>
</body>
</html>
"#,
        action = escape(&s.url(&s.paths.login)),
        tx = escape(tx),
        username = escape(username),
    );
    html_response(StatusCode::OK, html)
}

fn error_page(s: &Shared, status: StatusCode, message: &str) -> Response {
    let title = match s.flavor {
        Flavor::Keycloak => "We are sorry...",
        _ => "Error",
    };
    html_response(
        status,
        format!(
            "<!DOCTYPE html><html><head><title>{title}</title></head>\
             <body><h1>{title}</h1><p id=\"error\">{}</p></body></html>",
            escape(message)
        ),
    )
}

// ---------------------------------------------------------------------------
// Token endpoint
// ---------------------------------------------------------------------------

/// Why a token request failed; rendered in each vendor's words and status.
enum Problem {
    WrongCredentials,
    Blocked,
    MfaRequired,
    InvalidCode,
    RedirectMismatch,
    PkceFailed,
    InvalidRefreshToken,
    UnsupportedGrant(String),
    InvalidClient { basic: bool },
    MissingParameter(&'static str),
    MissingScope,
}

fn problem(s: &Shared, p: Problem) -> Response {
    use Flavor::*;
    let f = s.flavor;
    if f == Cognito {
        // Cognito's token and revocation endpoints: 400 and the code alone.
        let error = match p {
            Problem::WrongCredentials
            | Problem::Blocked
            | Problem::MfaRequired
            | Problem::InvalidCode
            | Problem::RedirectMismatch
            | Problem::PkceFailed
            | Problem::InvalidRefreshToken => "invalid_grant",
            Problem::UnsupportedGrant(_) => "unsupported_grant_type",
            Problem::InvalidClient { .. } => "invalid_client",
            Problem::MissingParameter(_) => "invalid_request",
            Problem::MissingScope => "invalid_scope",
        };
        return no_store(json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": error}),
        ));
    }
    // Cognito has answered above; it sits in Generic's arms below only to
    // keep the matches exhaustive.
    // Auth0 answers invalid_grant with 403.
    let grant_status = if f == Auth0 {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::BAD_REQUEST
    };
    let (status, error, description): (StatusCode, &str, String) = match p {
        Problem::WrongCredentials => match f {
            Auth0 => (grant_status, "invalid_grant", "Wrong email or password.".into()),
            Okta => (grant_status, "invalid_grant", "The credentials provided were invalid.".into()),
            Keycloak => (StatusCode::UNAUTHORIZED, "invalid_grant", "Invalid user credentials".into()),
            Generic | Cognito => (grant_status, "invalid_grant", "Invalid username or password".into()),
        },
        Problem::Blocked => match f {
            Auth0 => (StatusCode::UNAUTHORIZED, "unauthorized", "user is blocked".into()),
            Okta => (grant_status, "invalid_grant", "The credentials provided were invalid.".into()),
            Keycloak => (grant_status, "invalid_grant", "Account disabled".into()),
            Generic | Cognito => (grant_status, "invalid_grant", "Account disabled".into()),
        },
        Problem::MfaRequired => match f {
            Auth0 => {
                let body = json!({
                    "error": "mfa_required",
                    "error_description": "Multifactor authentication required",
                    "mfa_token": URL_SAFE_NO_PAD.encode(random_bytes(32)),
                });
                return no_store(json_response(StatusCode::FORBIDDEN, &body));
            }
            Okta => (
                StatusCode::FORBIDDEN,
                "access_denied",
                "Policy evaluation failed for this request, please check the policy configurations.".into(),
            ),
            // The direct grant cannot complete the OTP step.
            Keycloak => (StatusCode::UNAUTHORIZED, "invalid_grant", "Invalid user credentials".into()),
            Generic | Cognito => (grant_status, "invalid_grant", "Multi-factor authentication required".into()),
        },
        Problem::InvalidCode => match f {
            Auth0 => (grant_status, "invalid_grant", "Invalid authorization code".into()),
            Okta => (grant_status, "invalid_grant", "The authorization code is invalid or has expired.".into()),
            Keycloak => (grant_status, "invalid_grant", "Code not valid".into()),
            Generic | Cognito => (grant_status, "invalid_grant", "invalid or expired authorization code".into()),
        },
        Problem::RedirectMismatch => match f {
            Auth0 => (grant_status, "invalid_grant", "Invalid redirect_uri".into()),
            Okta => (
                grant_status,
                "invalid_grant",
                "The 'redirect_uri' does not match the redirection URI used in the authorization request.".into(),
            ),
            Keycloak => (grant_status, "invalid_grant", "Incorrect redirect_uri".into()),
            Generic | Cognito => (grant_status, "invalid_grant", "redirect_uri mismatch".into()),
        },
        Problem::PkceFailed => match f {
            Auth0 => (grant_status, "invalid_grant", "Failed to verify code verifier".into()),
            Okta => (grant_status, "invalid_grant", "PKCE verification failed.".into()),
            Keycloak => (grant_status, "invalid_grant", "PKCE verification failed: Invalid code verifier".into()),
            Generic | Cognito => (grant_status, "invalid_grant", "PKCE verification failed".into()),
        },
        Problem::InvalidRefreshToken => match f {
            Auth0 => (grant_status, "invalid_grant", "Unknown or invalid refresh token.".into()),
            Okta => (grant_status, "invalid_grant", "The refresh token is invalid or expired.".into()),
            Keycloak => (grant_status, "invalid_grant", "Invalid refresh token".into()),
            Generic | Cognito => (grant_status, "invalid_grant", "invalid refresh token".into()),
        },
        Problem::UnsupportedGrant(g) => (
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            match f {
                Auth0 => format!("Unsupported grant type: {g}"),
                Okta => "The authorization grant type is not supported by the authorization server. Configured grant types: [authorization_code, refresh_token, password, client_credentials].".into(),
                Keycloak => "Unsupported grant_type".into(),
                Generic | Cognito => format!("grant_type {g} is not supported"),
            },
        ),
        Problem::InvalidClient { basic } => {
            let description = match f {
                Auth0 => "Client authentication failed",
                Okta => "Client authentication failed. Either the client or the client credentials are invalid.",
                Keycloak => "Invalid client or Invalid client credentials",
                Generic | Cognito => "client authentication failed",
            };
            let mut response = no_store(json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "invalid_client", "error_description": description}),
            ));
            if basic {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"token\""),
                );
            }
            return response;
        }
        Problem::MissingParameter(name) => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            match f {
                Okta => format!("The request is missing a required parameter: {name}."),
                Keycloak => format!("Missing parameter: {name}"),
                Auth0 | Generic | Cognito => format!("Missing required parameter: {name}"),
            },
        ),
        Problem::MissingScope => (
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "The authorization server resource does not have any configured default scopes, 'scope' must be provided.".into(),
        ),
    };
    no_store(json_response(
        status,
        &json!({"error": error, "error_description": description}),
    ))
}

async fn token(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let params = parse_params(&headers, &body);
    let client = match authenticate_client(&s, &headers, &params) {
        Ok(c) => c,
        Err(p) => return problem(&s, p),
    };
    let grant_type = params.get("grant_type").cloned().unwrap_or_default();
    match grant_type.as_str() {
        "" => problem(&s, Problem::MissingParameter("grant_type")),
        "authorization_code" => authorization_code_grant(&s, &client, &params),
        "refresh_token" => refresh_token_grant(&s, &client, &params),
        "password" if s.flavor.supports_password_grant() => password_grant(&s, &client, &params),
        AUTH0_PASSWORD_REALM if s.flavor == Flavor::Auth0 => {
            if params.get("realm").is_none_or(|r| r.is_empty()) {
                return problem(&s, Problem::MissingParameter("realm"));
            }
            password_grant(&s, &client, &params)
        }
        "client_credentials" if s.flavor == Flavor::Cognito && client.secret.is_some() => {
            cognito_client_credentials_grant(&s, &client, &params)
        }
        "client_credentials" if s.flavor != Flavor::Generic && client.secret.is_some() => {
            client_credentials_grant(&s, &client, &params)
        }
        other => problem(&s, Problem::UnsupportedGrant(other.to_string())),
    }
}

/// Basic (RFC 6749 §2.3.1, form-encoded id and secret), `client_secret_post`,
/// or a public client's bare `client_id`.
fn authenticate_client(
    s: &Shared,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<FakeClient, Problem> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .map(|b| {
            let decoded = STANDARD
                .decode(b.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .unwrap_or_default();
            let (id, secret) = decoded.split_once(':').unwrap_or((&decoded, ""));
            (form_decode(id), Some(form_decode(secret)))
        });
    let used_basic = basic.is_some();
    let (id, secret) = match basic {
        Some(pair) => pair,
        None => match params.get("client_id") {
            Some(id) => (id.clone(), params.get("client_secret").cloned()),
            None => return Err(Problem::InvalidClient { basic: false }),
        },
    };
    let client = s.lock().clients.get(&id).cloned();
    let invalid = || Problem::InvalidClient { basic: used_basic };
    let Some(client) = client else {
        return Err(invalid());
    };
    match (&client.secret, &secret) {
        (Some(expected), Some(given)) if expected == given => Ok(client),
        (Some(_), _) => Err(invalid()),
        (None, _) => Ok(client),
    }
}

fn authorization_code_grant(
    s: &Shared,
    client: &FakeClient,
    params: &HashMap<String, String>,
) -> Response {
    let Some(code) = params.get("code") else {
        return problem(s, Problem::MissingParameter("code"));
    };
    // Single use: the code is gone whatever happens next.
    let grant = s.lock().codes.remove(code);
    let Some(grant) = grant else {
        return problem(s, Problem::InvalidCode);
    };
    if grant.tx.client_id != client.client_id || grant.expires_at < now() {
        return problem(s, Problem::InvalidCode);
    }
    if params.get("redirect_uri") != Some(&grant.tx.redirect_uri) {
        return problem(s, Problem::RedirectMismatch);
    }
    if let Some(challenge) = &grant.tx.challenge {
        let verified = params.get("code_verifier").is_some_and(|v| {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, v.as_bytes());
            URL_SAFE_NO_PAD.encode(digest.as_ref()) == *challenge
        });
        if !verified {
            return problem(s, Problem::PkceFailed);
        }
    }
    issue_tokens(
        s,
        Issue {
            client_id: client.client_id.clone(),
            sub: grant.sub,
            scope: grant.tx.scope,
            nonce: grant.tx.nonce,
            audience: grant.tx.audience,
            auth_time: grant.auth_time,
            sid: grant.sid,
            amr: grant.amr,
            refresh: None,
        },
    )
}

fn refresh_token_grant(
    s: &Shared,
    client: &FakeClient,
    params: &HashMap<String, String>,
) -> Response {
    let Some(presented) = params.get("refresh_token") else {
        return problem(s, Problem::MissingParameter("refresh_token"));
    };
    let grant = {
        let mut state = s.lock();
        match state.refresh_tokens.get(presented) {
            // Cognito does not rotate: the token stays valid.
            Some(g) if g.client_id == client.client_id && s.flavor == Flavor::Cognito => {
                Some(g.clone())
            }
            Some(g) if g.client_id == client.client_id => {
                // Rotation: the presented token is spent.
                let g = state.refresh_tokens.remove(presented);
                state.spent_refresh_tokens.insert(presented.clone());
                g
            }
            _ => None,
        }
    };
    let Some(grant) = grant else {
        return problem(s, Problem::InvalidRefreshToken);
    };
    let user = s.lock().user_by_sub(&grant.sub);
    match user {
        None => return problem(s, Problem::InvalidRefreshToken),
        Some(u) if u.user.blocked => return problem(s, Problem::Blocked),
        Some(_) => {}
    }
    if s.flavor == Flavor::Cognito {
        let issue = Issue {
            client_id: client.client_id.clone(),
            sub: grant.sub,
            scope: grant.scope,
            nonce: None,
            audience: None,
            auth_time: grant.auth_time,
            sid: grant.sid,
            amr: grant.amr,
            refresh: None,
        };
        return cognito_token_response(s, &issue, CognitoGrant::Refresh(presented.clone()));
    }
    issue_tokens(
        s,
        Issue {
            client_id: client.client_id.clone(),
            sub: grant.sub,
            scope: grant.scope.clone(),
            nonce: None,
            audience: grant.audience,
            auth_time: grant.auth_time,
            sid: grant.sid,
            amr: grant.amr,
            refresh: Some(grant.scope),
        },
    )
}

fn password_grant(s: &Shared, client: &FakeClient, params: &HashMap<String, String>) -> Response {
    let (Some(username), Some(password)) = (params.get("username"), params.get("password")) else {
        let missing = if params.contains_key("username") {
            "password"
        } else {
            "username"
        };
        return problem(s, Problem::MissingParameter(missing));
    };
    let scope = match (params.get("scope"), s.flavor) {
        (Some(scope), _) => scope.clone(),
        (None, Flavor::Okta) => return problem(s, Problem::MissingScope),
        (None, Flavor::Keycloak) => "profile email".into(),
        (None, _) => "openid".into(),
    };
    let user = s.lock().user_by_login(s.flavor, username);
    let user = match user {
        Some(u) if u.user.password == *password => u.user,
        _ => return problem(s, Problem::WrongCredentials),
    };
    if user.blocked {
        return problem(s, Problem::Blocked);
    }
    if user.mfa_required {
        return problem(s, Problem::MfaRequired);
    }
    issue_tokens(
        s,
        Issue {
            client_id: client.client_id.clone(),
            sub: user.sub,
            scope,
            nonce: None,
            audience: params.get("audience").cloned(),
            auth_time: now(),
            sid: s.new_sid(),
            amr: vec!["pwd"],
            refresh: None,
        },
    )
}

fn client_credentials_grant(
    s: &Shared,
    client: &FakeClient,
    params: &HashMap<String, String>,
) -> Response {
    let for_management = match management::client_credentials_audience(s, params) {
        Ok(m) => m,
        Err(refusal) => return refusal,
    };
    let (key, ttl) = {
        let state = s.lock();
        (state.key.clone(), state.access_token_ttl)
    };
    let iat = now();
    let audience = params
        .get("audience")
        .cloned()
        .unwrap_or_else(|| s.issuer());
    let scope = params.get("scope").cloned().unwrap_or_default();
    let access_token = key.sign(
        &key.kid,
        "JWT",
        &json!({
            "iss": s.issuer(), "sub": format!("{}@clients", client.client_id),
            "aud": audience, "iat": iat, "exp": iat + ttl as i64,
            "scope": scope, "gty": "client-credentials", "azp": client.client_id,
        }),
    );
    if for_management {
        management::record_management_token(s, &access_token, ttl);
    }
    no_store(json_response(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": scope,
        }),
    ))
}

/// What one successful grant hands out.
struct Issue {
    client_id: String,
    sub: String,
    scope: String,
    nonce: Option<String>,
    audience: Option<String>,
    auth_time: i64,
    sid: String,
    amr: Vec<&'static str>,
    /// `Some(scope)` on the refresh grant: always rotate.
    refresh: Option<String>,
}

fn issue_tokens(s: &Shared, issue: Issue) -> Response {
    if s.flavor == Flavor::Cognito {
        return cognito_token_response(s, &issue, CognitoGrant::Code);
    }
    let (user, key, forger, tamper, ttl) = {
        let state = s.lock();
        (
            state.user_by_sub(&issue.sub),
            state.key.clone(),
            state.forger.clone(),
            state.tamper,
            state.access_token_ttl,
        )
    };
    let Some(user) = user else {
        return problem(s, Problem::InvalidCode);
    };
    let scopes: Vec<&str> = issue.scope.split_whitespace().collect();
    let iat = now();
    let exp = iat + ttl as i64;
    let issuer = s.issuer();

    let access_token = match s.flavor {
        Flavor::Auth0 => match &issue.audience {
            Some(audience) => key.sign(
                &key.kid,
                "JWT",
                &json!({
                    "iss": issuer, "sub": issue.sub,
                    "aud": [audience, s.url("/userinfo")],
                    "iat": iat, "exp": exp, "scope": issue.scope, "azp": issue.client_id,
                }),
            ),
            // Without an audience Auth0 hands out an encrypted token the
            // client cannot read (JWE compact, `dir` + A256GCM).
            None => format!(
                "{}..{}.{}.{}",
                URL_SAFE_NO_PAD
                    .encode(json!({"alg": "dir", "enc": "A256GCM", "iss": issuer}).to_string()),
                URL_SAFE_NO_PAD.encode(random_bytes(12)),
                URL_SAFE_NO_PAD.encode(random_bytes(96)),
                URL_SAFE_NO_PAD.encode(random_bytes(16))
            ),
        },
        // Okta's access token names the login in `sub` and the id in `uid`.
        Flavor::Okta => key.sign(
            &key.kid,
            "application/okta-internal-at+jwt",
            &json!({
                "ver": 1, "jti": format!("AT.{}", URL_SAFE_NO_PAD.encode(random_bytes(24))),
                "iss": issuer, "aud": "api://default", "iat": iat, "exp": exp,
                "cid": issue.client_id, "uid": issue.sub, "scp": scopes,
                "auth_time": issue.auth_time, "sub": user.user.email,
            }),
        ),
        Flavor::Keycloak => key.sign(
            &key.kid,
            "JWT",
            &json!({
                "exp": exp, "iat": iat, "auth_time": issue.auth_time,
                "jti": uuid_from(&random_bytes(16)), "iss": issuer, "aud": "account",
                "sub": issue.sub, "typ": "Bearer", "azp": issue.client_id,
                "sid": issue.sid, "scope": issue.scope,
                "preferred_username": keycloak_username(&user.user),
                "email": user.user.email, "email_verified": user.user.email_verified,
            }),
        ),
        Flavor::Generic => URL_SAFE_NO_PAD.encode(random_bytes(32)),
        Flavor::Cognito => unreachable!("Cognito issues through cognito_tokens"),
    };

    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ttl,
        "scope": issue.scope,
    });

    if scopes.contains(&"openid") {
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(issuer));
        claims.insert("sub".into(), json!(issue.sub));
        claims.insert("aud".into(), json!(issue.client_id));
        claims.insert("iat".into(), json!(iat));
        let id_ttl = match s.flavor {
            Flavor::Auth0 => 36_000,
            Flavor::Keycloak | Flavor::Cognito => ttl as i64,
            Flavor::Okta | Flavor::Generic => 3_600,
        };
        claims.insert("exp".into(), json!(iat + id_ttl));
        claims.insert("auth_time".into(), json!(issue.auth_time));
        if let Some(nonce) = &issue.nonce {
            claims.insert("nonce".into(), json!(nonce));
        }
        match s.flavor {
            Flavor::Auth0 => {
                claims.insert("sid".into(), json!(issue.sid));
            }
            Flavor::Okta => {
                claims.insert("ver".into(), json!(1));
                claims.insert(
                    "jti".into(),
                    json!(format!("ID.{}", URL_SAFE_NO_PAD.encode(random_bytes(24)))),
                );
                claims.insert("amr".into(), json!(issue.amr));
                claims.insert("idp".into(), json!("00o1a2b3c4d5e6f7g8h9"));
                claims.insert("at_hash".into(), json!(at_hash(&access_token)));
            }
            Flavor::Keycloak => {
                claims.insert("jti".into(), json!(uuid_from(&random_bytes(16))));
                claims.insert("typ".into(), json!("ID"));
                claims.insert("azp".into(), json!(issue.client_id));
                claims.insert("sid".into(), json!(issue.sid));
                claims.insert("session_state".into(), json!(issue.sid));
                claims.insert("acr".into(), json!("1"));
                claims.insert("at_hash".into(), json!(at_hash(&access_token)));
            }
            Flavor::Generic => {
                claims.insert("sid".into(), json!(issue.sid));
                claims.insert("amr".into(), json!(issue.amr));
                claims.insert("at_hash".into(), json!(at_hash(&access_token)));
            }
            Flavor::Cognito => unreachable!("Cognito issues through cognito_tokens"),
        }
        claims.extend(profile_claims(s.flavor, &user, &scopes));
        tamper_claims(&mut claims, tamper, iat);
        let signer = match (tamper, &forger) {
            (Tamper::BadSignature, Some(forger)) => forger.clone(),
            _ => key.clone(),
        };
        body["id_token"] = json!(signer.sign(&key.kid, "JWT", &Value::Object(claims)));
    }

    let refresh_token = match &issue.refresh {
        Some(_) => true,
        None => s.flavor == Flavor::Keycloak || scopes.contains(&"offline_access"),
    }
    .then(|| s.new_refresh_token(&issue.sub, &issue.client_id));
    if let Some(rt) = &refresh_token {
        body["refresh_token"] = json!(rt);
        if s.flavor == Flavor::Keycloak {
            body["refresh_expires_in"] = json!(1800);
            body["session_state"] = json!(issue.sid);
            body["not-before-policy"] = json!(0);
        }
    }

    {
        let mut state = s.lock();
        state.access_tokens.insert(
            access_token,
            AccessGrant {
                sub: issue.sub.clone(),
                scope: issue.scope.clone(),
                expires_at: exp,
                refresh_token: refresh_token.clone(),
            },
        );
        if let Some(rt) = refresh_token {
            state.refresh_tokens.insert(
                rt,
                RefreshGrant {
                    client_id: issue.client_id,
                    sub: issue.sub,
                    scope: issue.scope,
                    audience: issue.audience,
                    auth_time: issue.auth_time,
                    sid: issue.sid,
                    amr: issue.amr,
                },
            );
        }
    }
    no_store(json_response(StatusCode::OK, &body))
}

fn keycloak_username(user: &FakeUser) -> String {
    user.nickname.clone().unwrap_or_else(|| user.email.clone())
}

/// The profile claims a vendor puts in ID tokens and userinfo for `scopes`.
fn profile_claims(flavor: Flavor, stored: &StoredUser, scopes: &[&str]) -> Map<String, Value> {
    let user = &stored.user;
    let profile = scopes.contains(&"profile");
    let email = scopes.contains(&"email");
    let mut c = Map::new();
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            c.insert(k.into(), v);
        }
    };
    match flavor {
        Flavor::Auth0 => {
            if profile {
                put("nickname", json!(user.nickname));
                put("name", json!(user.name));
                put("picture", json!(user.picture));
                // Auth0 sends `updated_at` as an ISO-8601 string, not the
                // number OIDC Core §5.1 specifies.
                put("updated_at", json!(iso8601(stored.updated_at)));
            }
            if email {
                put("email", json!(user.email));
                put("email_verified", json!(user.email_verified));
            }
            if let Some(roles) = user.app_metadata.get("roles") {
                put(AUTH0_ROLES_CLAIM, roles.clone());
            }
        }
        Flavor::Okta => {
            if profile {
                put("name", json!(user.name));
                put("preferred_username", json!(user.email));
                put("updated_at", json!(stored.updated_at));
            }
            if email {
                put("email", json!(user.email));
                put("email_verified", json!(user.email_verified));
            }
        }
        // Keycloak's default client scopes put these in whatever is asked.
        Flavor::Keycloak => {
            put("email_verified", json!(user.email_verified));
            if let Some(name) = &user.name {
                put("name", json!(name));
                let mut parts = name.splitn(2, ' ');
                put("given_name", json!(parts.next()));
                put("family_name", json!(parts.next()));
            }
            put("preferred_username", json!(keycloak_username(user)));
            put("email", json!(user.email));
        }
        Flavor::Generic => {
            if profile {
                put("name", json!(user.name));
                put("nickname", json!(user.nickname));
                put("picture", json!(user.picture));
                put("updated_at", json!(stored.updated_at));
            }
            if email {
                put("email", json!(user.email));
                put("email_verified", json!(user.email_verified));
            }
        }
        // Every readable attribute, whatever the scopes.
        Flavor::Cognito => c.extend(cognito_attributes(user)),
    }
    c
}

// ---------------------------------------------------------------------------
// Cognito: tokens, the token endpoint's answers and the user-pool API
// ---------------------------------------------------------------------------

/// A Cognito user's attributes as ID-token claims (`sub` aside):
/// `cognito:username` (the email), `email`, `email_verified` (boolean),
/// `name` when set, `cognito:groups` from an `app_metadata.groups` array of
/// strings, and `custom:k` for every string `app_metadata.k`.
fn cognito_attributes(user: &FakeUser) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("cognito:username".into(), json!(user.email));
    c.insert("email".into(), json!(user.email));
    c.insert("email_verified".into(), json!(user.email_verified));
    if let Some(name) = &user.name {
        c.insert("name".into(), json!(name));
    }
    if let Some(metadata) = user.app_metadata.as_object() {
        for (k, v) in metadata {
            if let Value::String(v) = v {
                c.insert(format!("custom:{k}"), json!(v));
            }
        }
        if let Some(groups) = metadata.get("groups").and_then(Value::as_array)
            && groups.iter().all(Value::is_string)
        {
            c.insert("cognito:groups".into(), json!(groups));
        }
    }
    c
}

/// How Cognito tokens are being handed out.
enum CognitoGrant {
    /// Authorization code at `/oauth2/token`: a refresh token; an ID token
    /// (with `at_hash`) when `openid` was asked.
    Code,
    /// Hosted-UI implicit grant: no refresh token.
    Implicit,
    /// A refresh (token endpoint or `REFRESH_TOKEN_AUTH`) with this token,
    /// which stays valid: no new refresh token.
    Refresh(String),
    /// `InitiateAuth` `USER_PASSWORD_AUTH`: always an ID token (no
    /// `at_hash`), a refresh token, scope `aws.cognito.signin.user.admin`.
    InitiateAuth,
}

struct CognitoTokens {
    access_token: String,
    id_token: Option<String>,
    refresh_token: Option<String>,
    expires_in: u64,
}

/// Signs and records Cognito's tokens; `None` when the user is gone.
fn cognito_tokens(s: &Shared, issue: &Issue, grant: CognitoGrant) -> Option<CognitoTokens> {
    let (user, key, forger, tamper, ttl) = {
        let state = s.lock();
        (
            state.user_by_sub(&issue.sub)?,
            state.key.clone(),
            state.forger.clone(),
            state.tamper,
            state.access_token_ttl,
        )
    };
    let user = user.user;
    let iat = now();
    let exp = iat + ttl as i64;
    let issuer = s.issuer();
    let attributes = cognito_attributes(&user);
    let scope = match grant {
        CognitoGrant::InitiateAuth => COGNITO_ADMIN_SCOPE.to_string(),
        _ => issue.scope.clone(),
    };
    let event_id = uuid_from(&random_bytes(16));
    let header = json!({"kid": key.kid, "alg": "RS256"});

    let mut access = Map::new();
    access.insert("sub".into(), json!(issue.sub));
    if let Some(groups) = attributes.get("cognito:groups") {
        access.insert("cognito:groups".into(), groups.clone());
    }
    for (k, v) in [
        ("iss", json!(issuer)),
        ("version", json!(2)),
        ("client_id", json!(issue.client_id)),
        ("origin_jti", json!(issue.sid)),
        ("event_id", json!(event_id)),
        ("token_use", json!("access")),
        ("scope", json!(scope)),
        ("auth_time", json!(issue.auth_time)),
        ("exp", json!(exp)),
        ("iat", json!(iat)),
        ("jti", json!(uuid_from(&random_bytes(16)))),
        ("username", json!(user.email)),
    ] {
        access.insert(k.into(), v);
    }
    let access_token = key.sign_with_header(&header, &Value::Object(access));

    // Tokens from the user-pool API (and their refreshes) always carry an
    // ID token, without `at_hash`; the hosted UI's only with `openid`.
    let sdk = scope == COGNITO_ADMIN_SCOPE;
    let with_id_token = sdk || scope.split_whitespace().any(|s| s == "openid");
    let id_token = with_id_token.then(|| {
        let mut claims = attributes.clone();
        for (k, v) in [
            ("sub", json!(issue.sub)),
            ("iss", json!(issuer)),
            ("aud", json!(issue.client_id)),
            ("origin_jti", json!(issue.sid)),
            ("event_id", json!(event_id)),
            ("token_use", json!("id")),
            ("auth_time", json!(issue.auth_time)),
            ("exp", json!(exp)),
            ("iat", json!(iat)),
            ("jti", json!(uuid_from(&random_bytes(16)))),
        ] {
            claims.insert(k.into(), v);
        }
        if !sdk {
            claims.insert("at_hash".into(), json!(at_hash(&access_token)));
        }
        if let Some(nonce) = &issue.nonce {
            claims.insert("nonce".into(), json!(nonce));
        }
        tamper_claims(&mut claims, tamper, iat);
        let signer = match (tamper, &forger) {
            (Tamper::BadSignature, Some(forger)) => forger.clone(),
            _ => key.clone(),
        };
        signer.sign_with_header(&header, &Value::Object(claims))
    });

    let (refresh_token, origin) = match &grant {
        CognitoGrant::Code | CognitoGrant::InitiateAuth => {
            let rt = s.new_refresh_token(&issue.sub, &issue.client_id);
            (Some(rt.clone()), Some(rt))
        }
        CognitoGrant::Implicit => (None, None),
        CognitoGrant::Refresh(presented) => (None, Some(presented.clone())),
    };
    {
        let mut state = s.lock();
        state.access_tokens.insert(
            access_token.clone(),
            AccessGrant {
                sub: issue.sub.clone(),
                scope: scope.clone(),
                expires_at: exp,
                refresh_token: origin,
            },
        );
        if let Some(rt) = &refresh_token {
            state.refresh_tokens.insert(
                rt.clone(),
                RefreshGrant {
                    client_id: issue.client_id.clone(),
                    sub: issue.sub.clone(),
                    scope,
                    audience: None,
                    auth_time: issue.auth_time,
                    sid: issue.sid.clone(),
                    amr: issue.amr.clone(),
                },
            );
        }
    }
    Some(CognitoTokens {
        access_token,
        id_token,
        refresh_token,
        expires_in: ttl,
    })
}

/// The token endpoint's answer: `id_token` (when `openid`),
/// `access_token`, `refresh_token` (not on refresh), `expires_in`,
/// `token_type`; no `scope`.
fn cognito_token_response(s: &Shared, issue: &Issue, grant: CognitoGrant) -> Response {
    let Some(tokens) = cognito_tokens(s, issue, grant) else {
        return problem(s, Problem::InvalidCode);
    };
    let mut body = json!({
        "access_token": tokens.access_token,
        "expires_in": tokens.expires_in,
        "token_type": "Bearer",
    });
    if let Some(id_token) = tokens.id_token {
        body["id_token"] = json!(id_token);
    }
    if let Some(rt) = tokens.refresh_token {
        body["refresh_token"] = json!(rt);
    }
    no_store(json_response(StatusCode::OK, &body))
}

/// Machine-to-machine: an access token whose `sub` is the client.
fn cognito_client_credentials_grant(
    s: &Shared,
    client: &FakeClient,
    params: &HashMap<String, String>,
) -> Response {
    let (key, ttl) = {
        let state = s.lock();
        (state.key.clone(), state.access_token_ttl)
    };
    let iat = now();
    let scope = params.get("scope").cloned().unwrap_or_default();
    let access_token = key.sign_with_header(
        &json!({"kid": key.kid, "alg": "RS256"}),
        &json!({
            "sub": client.client_id, "token_use": "access", "scope": scope,
            "auth_time": iat, "iss": s.issuer(), "exp": iat + ttl as i64, "iat": iat,
            "version": 2, "jti": uuid_from(&random_bytes(16)), "client_id": client.client_id,
        }),
    );
    no_store(json_response(
        StatusCode::OK,
        &json!({"access_token": access_token, "expires_in": ttl, "token_type": "Bearer"}),
    ))
}

/// An AWS JSON 1.1 error: `{"__type", "message"}` (no `message` when
/// empty, as for the protocol-level errors) and `x-amzn-ErrorType`.
fn aws_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut body = json!({"__type": kind});
    if !message.is_empty() {
        body["message"] = json!(message);
    }
    let mut response = aws_json(status, &body);
    response.headers_mut().insert(
        HeaderName::from_static("x-amzn-errortype"),
        HeaderValue::from_str(kind).expect("error type header"),
    );
    response
}

fn aws_json(status: StatusCode, body: &Value) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response();
    response.headers_mut().insert(
        HeaderName::from_static("x-amzn-requestid"),
        HeaderValue::from_str(&uuid_from(&random_bytes(16))).expect("request id header"),
    );
    response
}

/// Cognito's user-pool API: `InitiateAuth`, and the signed `ListUsers` and
/// `AdminUpdateUserAttributes` (see [`Flavor::Cognito`]).
async fn user_api(
    State(s): State<Arc<Shared>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bad = |kind: &str, message: &str| aws_error(StatusCode::BAD_REQUEST, kind, message);
    let invalid = |message: &str| bad("InvalidParameterException", message);
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if target == COGNITO_LIST_USERS {
        return management::list_users(&s, &uri, &headers, &body);
    }
    if target == COGNITO_ADMIN_UPDATE_USER_ATTRIBUTES {
        return management::admin_update_user_attributes(&s, &uri, &headers, &body);
    }
    if target != COGNITO_INITIATE_AUTH {
        return bad("UnknownOperationException", "");
    }
    let json_1_1 = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-amz-json-1.1"));
    let request = serde_json::from_slice::<Value>(&body);
    let Some(request) = request.ok().filter(|_| json_1_1).filter(Value::is_object) else {
        return bad("SerializationException", "");
    };
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    const FLOWS: [&str; 8] = [
        "USER_SRP_AUTH",
        "REFRESH_TOKEN_AUTH",
        "REFRESH_TOKEN",
        "CUSTOM_AUTH",
        "ADMIN_NO_SRP_AUTH",
        "USER_PASSWORD_AUTH",
        "ADMIN_USER_PASSWORD_AUTH",
        "USER_AUTH",
    ];
    let (Some(flow), Some(client_id)) = (text(&request, "AuthFlow"), text(&request, "ClientId"))
    else {
        let field = if request.get("AuthFlow").is_none() {
            "authFlow"
        } else {
            "clientId"
        };
        return invalid(&format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: \
             Member must not be null"
        ));
    };
    if !FLOWS.contains(&flow.as_str()) {
        return invalid(&format!(
            "1 validation error detected: Value '{flow}' at 'authFlow' failed to satisfy \
             constraint: Member must satisfy enum value set: [{}]",
            FLOWS.join(", ")
        ));
    }
    let params: HashMap<String, String> = request
        .get("AuthParameters")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let client = s.lock().clients.get(&client_id).cloned();
    let Some(client) = client else {
        return bad(
            "ResourceNotFoundException",
            &format!("User pool client {client_id} does not exist."),
        );
    };
    match flow.as_str() {
        "USER_PASSWORD_AUTH" if !client.user_password_auth => {
            invalid("USER_PASSWORD_AUTH flow not enabled for this client")
        }
        "USER_PASSWORD_AUTH" => initiate_password_auth(&s, &client, &params),
        "REFRESH_TOKEN_AUTH" | "REFRESH_TOKEN" => initiate_refresh_auth(&s, &client, &params),
        "ADMIN_NO_SRP_AUTH" | "ADMIN_USER_PASSWORD_AUTH" => {
            invalid("Initiate Auth method not supported.")
        }
        "USER_SRP_AUTH" => invalid("USER_SRP_AUTH is not enabled for the client."),
        "CUSTOM_AUTH" => invalid("Custom auth lambda trigger is not configured for the user pool."),
        _ => invalid(&format!("{flow} flow not enabled for this client")),
    }
}

/// Why `SECRET_HASH` is refused, if it is: a client with a secret needs
/// one computed over any of `usernames` (the one sent, the user's own).
fn secret_hash_refusal(
    client: &FakeClient,
    params: &HashMap<String, String>,
    usernames: &[&str],
) -> Option<Response> {
    let secret = client.secret.as_ref()?;
    let id = &client.client_id;
    let message = match params.get("SECRET_HASH") {
        None => format!("Client {id} is configured for secret but secret was not received"),
        Some(given) => {
            let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
            let tag = STANDARD.decode(given.trim()).unwrap_or_default();
            if usernames
                .iter()
                .any(|u| hmac::verify(&key, format!("{u}{id}").as_bytes(), &tag).is_ok())
            {
                return None;
            }
            format!("Unable to verify secret hash for client {id}")
        }
    };
    Some(aws_error(
        StatusCode::BAD_REQUEST,
        "NotAuthorizedException",
        &message,
    ))
}

fn initiate_password_auth(
    s: &Shared,
    client: &FakeClient,
    params: &HashMap<String, String>,
) -> Response {
    let bad = |kind: &str, message: &str| aws_error(StatusCode::BAD_REQUEST, kind, message);
    let Some(username) = params.get("USERNAME").filter(|u| !u.is_empty()) else {
        return bad(
            "InvalidParameterException",
            "Missing required parameter USERNAME",
        );
    };
    let Some(password) = params.get("PASSWORD").filter(|p| !p.is_empty()) else {
        return bad(
            "InvalidParameterException",
            "Missing required parameter PASSWORD",
        );
    };
    let (user, prevent, new_password) = {
        let state = s.lock();
        let user = state.user_by_login(s.flavor, username).map(|u| u.user);
        let new_password = user
            .as_ref()
            .is_some_and(|u| state.new_password_required.contains(&u.sub));
        (user, state.prevent_user_existence_errors, new_password)
    };
    let mut usernames = vec![username.as_str()];
    if let Some(u) = &user {
        usernames.push(&u.email);
    }
    if let Some(refused) = secret_hash_refusal(client, params, &usernames) {
        return refused;
    }
    let user = match user {
        Some(u) if u.password == *password => u,
        None if !prevent => return bad("UserNotFoundException", "User does not exist."),
        _ => return bad("NotAuthorizedException", "Incorrect username or password."),
    };
    if user.blocked {
        return bad("NotAuthorizedException", "User is disabled.");
    }
    let session = || STANDARD.encode(random_bytes(192));
    if new_password {
        let mut attributes = Map::new();
        for (k, v) in cognito_attributes(&user) {
            match v {
                Value::String(v) => {
                    attributes.insert(k, json!(v));
                }
                Value::Bool(b) => {
                    attributes.insert(k, json!(b.to_string()));
                }
                _ => {}
            }
        }
        attributes.remove("cognito:username");
        attributes.remove("cognito:groups");
        return aws_json(
            StatusCode::OK,
            &json!({
                "ChallengeName": "NEW_PASSWORD_REQUIRED",
                "Session": session(),
                "ChallengeParameters": {
                    "USER_ID_FOR_SRP": user.email,
                    "requiredAttributes": "[]",
                    "userAttributes": Value::Object(attributes).to_string(),
                },
            }),
        );
    }
    if user.mfa_required {
        return aws_json(
            StatusCode::OK,
            &json!({
                "ChallengeName": "SOFTWARE_TOKEN_MFA",
                "Session": session(),
                "ChallengeParameters": {},
            }),
        );
    }
    let issue = Issue {
        client_id: client.client_id.clone(),
        sub: user.sub.clone(),
        scope: COGNITO_ADMIN_SCOPE.into(),
        nonce: None,
        audience: None,
        auth_time: now(),
        sid: s.new_sid(),
        amr: vec!["pwd"],
        refresh: None,
    };
    authentication_result(s, &issue, CognitoGrant::InitiateAuth)
}

fn initiate_refresh_auth(
    s: &Shared,
    client: &FakeClient,
    params: &HashMap<String, String>,
) -> Response {
    let bad = |kind: &str, message: &str| aws_error(StatusCode::BAD_REQUEST, kind, message);
    let Some(token) = params.get("REFRESH_TOKEN").filter(|t| !t.is_empty()) else {
        return bad(
            "InvalidParameterException",
            "Missing required parameter REFRESH_TOKEN",
        );
    };
    let (grant, user, revoked) = {
        let state = s.lock();
        let grant = state
            .refresh_tokens
            .get(token)
            .filter(|g| g.client_id == client.client_id)
            .cloned();
        let user = grant.as_ref().and_then(|g| state.user_by_sub(&g.sub));
        (grant, user, state.spent_refresh_tokens.contains(token))
    };
    let (Some(grant), Some(user)) = (grant, user) else {
        let message = if revoked {
            "Refresh Token has been revoked"
        } else {
            "Invalid Refresh Token"
        };
        return bad("NotAuthorizedException", message);
    };
    let given = params.get("USERNAME").map(String::as_str).unwrap_or("");
    if let Some(refused) =
        secret_hash_refusal(client, params, &[given, &user.user.email, &grant.sub])
    {
        return refused;
    }
    if user.user.blocked {
        return bad("NotAuthorizedException", "User is disabled.");
    }
    let issue = Issue {
        client_id: client.client_id.clone(),
        sub: grant.sub,
        scope: grant.scope,
        nonce: None,
        audience: None,
        auth_time: grant.auth_time,
        sid: grant.sid,
        amr: grant.amr,
        refresh: None,
    };
    authentication_result(s, &issue, CognitoGrant::Refresh(token.clone()))
}

/// `{"AuthenticationResult": {…}, "ChallengeParameters": {}}`.
fn authentication_result(s: &Shared, issue: &Issue, grant: CognitoGrant) -> Response {
    let Some(tokens) = cognito_tokens(s, issue, grant) else {
        return aws_error(
            StatusCode::BAD_REQUEST,
            "UserNotFoundException",
            "User does not exist.",
        );
    };
    let mut result = json!({
        "AccessToken": tokens.access_token,
        "ExpiresIn": tokens.expires_in,
        "TokenType": "Bearer",
    });
    if let Some(id_token) = tokens.id_token {
        result["IdToken"] = json!(id_token);
    }
    if let Some(rt) = tokens.refresh_token {
        result["RefreshToken"] = json!(rt);
    }
    aws_json(
        StatusCode::OK,
        &json!({"AuthenticationResult": result, "ChallengeParameters": {}}),
    )
}

// ---------------------------------------------------------------------------
// Userinfo, revocation, logout
// ---------------------------------------------------------------------------

async fn userinfo(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
        .or_else(|| parse_params(&headers, &body).remove("access_token"));
    if s.flavor == Flavor::Cognito {
        return cognito_userinfo(&s, bearer);
    }
    let Some(token) = bearer else {
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"userinfo\""),
        );
        return response;
    };
    let found = {
        let state = s.lock();
        state
            .access_tokens
            .get(&token)
            .filter(|g| g.expires_at > now())
            .and_then(|g| Some((g.clone(), state.user_by_sub(&g.sub)?)))
    };
    let Some((grant, user)) = found else {
        let description = match s.flavor {
            Flavor::Auth0 => "Invalid token",
            Flavor::Okta => "The access token is invalid.",
            Flavor::Keycloak => "Token verification failed",
            Flavor::Generic => "The access token is invalid or expired",
            Flavor::Cognito => unreachable!("Cognito answers in cognito_userinfo"),
        };
        let mut response = match s.flavor {
            Flavor::Auth0 => (StatusCode::UNAUTHORIZED, "Unauthorized").into_response(),
            _ => json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "invalid_token", "error_description": description}),
            ),
        };
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&format!(
                "Bearer error=\"invalid_token\", error_description=\"{description}\""
            ))
            .expect("header"),
        );
        return response;
    };
    let scopes: Vec<&str> = grant.scope.split_whitespace().collect();
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(grant.sub));
    claims.extend(profile_claims(s.flavor, &user, &scopes));
    json_response(StatusCode::OK, &Value::Object(claims))
}

/// Cognito's userInfo: a token from the token endpoint with `openid`, and
/// the attributes with `email_verified` as a string; errors only in
/// `WWW-Authenticate` (no `Bearer` scheme, as Cognito writes it).
fn cognito_userinfo(s: &Shared, bearer: Option<String>) -> Response {
    let refuse = |status: StatusCode, error: &str, description: &str| {
        let mut response = status.into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&format!(
                "error=\"{error}\", error_description=\"{description}\""
            ))
            .expect("header"),
        );
        response
    };
    let Some(token) = bearer.filter(|t| !t.is_empty()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Bad OAuth2 request at UserInfo Endpoint",
        );
    };
    let found = {
        let state = s.lock();
        state
            .access_tokens
            .get(&token)
            .filter(|g| g.expires_at > now())
            .filter(|g| g.scope.split_whitespace().any(|s| s == "openid"))
            .and_then(|g| state.user_by_sub(&g.sub).map(|u| (g.sub.clone(), u)))
    };
    let Some((sub, user)) = found else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "Access token is expired, disabled, or deleted, or the user has globally signed out.",
        );
    };
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(sub));
    for (k, v) in cognito_attributes(&user.user) {
        match (k.as_str(), v) {
            ("cognito:username", v) => {
                claims.insert("username".into(), v);
            }
            ("cognito:groups", _) => {}
            (_, Value::Bool(b)) => {
                claims.insert(k, json!(b.to_string()));
            }
            (_, v) => {
                claims.insert(k, v);
            }
        }
    }
    let mut response = json_response(StatusCode::OK, &Value::Object(claims));
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, max-age=0, must-revalidate"),
    );
    response
}

async fn revoke(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let params = parse_params(&headers, &body);
    let client = match authenticate_client(&s, &headers, &params) {
        Ok(c) => c,
        Err(p) => return problem(&s, p),
    };
    let Some(token) = params.get("token").filter(|t| !t.is_empty()) else {
        return problem(&s, Problem::MissingParameter("token"));
    };
    let mut state = s.lock();
    if s.flavor == Flavor::Cognito {
        // Cognito revokes refresh tokens only, and with one every access
        // token issued with it or refreshed from it.
        if state.access_tokens.contains_key(token) {
            drop(state);
            return no_store(json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "unsupported_token_type"}),
            ));
        }
        state.revoked.push(token.clone());
        if state
            .refresh_tokens
            .get(token)
            .is_some_and(|g| g.client_id == client.client_id)
        {
            state.refresh_tokens.remove(token);
            state.spent_refresh_tokens.insert(token.clone());
            state
                .access_tokens
                .retain(|_, g| g.refresh_token.as_deref() != Some(token.as_str()));
        }
        return StatusCode::OK.into_response();
    }
    if state.access_tokens.remove(token).is_some() {
        return StatusCode::OK.into_response();
    }
    state.revoked.push(token.clone());
    // RFC 7009 §2.1: a token of another client is left alone, and the
    // answer is the same.
    if state
        .refresh_tokens
        .get(token)
        .is_some_and(|g| g.client_id == client.client_id)
    {
        state.refresh_tokens.remove(token);
        state.spent_refresh_tokens.insert(token.clone());
    }
    StatusCode::OK.into_response()
}

async fn logout(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if s.flavor == Flavor::Cognito {
        return cognito_logout(&s, &headers, &q);
    }
    if let Some(cookie) = read_cookie(&headers, s.session_cookie()) {
        s.lock().sessions.remove(&cookie);
    }
    let target = q
        .get("returnTo")
        .or_else(|| q.get("post_logout_redirect_uri"))
        .filter(|t| !t.is_empty());
    let mut response = match target {
        Some(target) => {
            let mut params = vec![];
            if let Some(state) = q.get("state")
                && !q.contains_key("returnTo")
            {
                params.push(("state", state.clone()));
            }
            redirect(&with_query(target, &params))
        }
        None => html_response(
            StatusCode::OK,
            "<!DOCTYPE html><html><head><title>Signed out</title></head>\
             <body><p>You are signed out.</p></body></html>"
                .into(),
        ),
    };
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax",
            s.session_cookie()
        ))
        .expect("cookie header"),
    );
    response
}

/// Cognito's `/logout`: `client_id` (required) and `logout_uri` (redirected
/// to, nothing added), or `redirect_uri` and `response_type` (…) to sign in
/// again through `/oauth2/authorize`.
fn cognito_logout(s: &Shared, headers: &HeaderMap, q: &HashMap<String, String>) -> Response {
    let known = q
        .get("client_id")
        .is_some_and(|id| s.lock().clients.contains_key(id));
    let target = match (q.get("logout_uri"), q.get("redirect_uri")) {
        _ if !known => None,
        (Some(logout_uri), _) if url::Url::parse(logout_uri).is_ok() => Some(logout_uri.clone()),
        (None, Some(_)) => {
            let mut url = url::Url::parse(&s.url(&s.paths.authorize)).expect("authorize URL");
            url.query_pairs_mut().extend_pairs(q.iter());
            Some(url.to_string())
        }
        _ => None,
    };
    let Some(target) = target else {
        return error_page(
            s,
            StatusCode::BAD_REQUEST,
            "An error was encountered with the requested page.",
        );
    };
    if let Some(cookie) = read_cookie(headers, s.session_cookie()) {
        s.lock().sessions.remove(&cookie);
    }
    let mut response = redirect(&target);
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax",
            s.session_cookie()
        ))
        .expect("cookie header"),
    );
    response
}

// ---------------------------------------------------------------------------
// The transport: a listener and connections that `Mode::Down` resets
// ---------------------------------------------------------------------------

struct OutageListener {
    inner: TcpListener,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for OutageListener {
    type Io = Killable;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            };
            let epoch = {
                let state = self.shared.lock();
                (state.mode != Mode::Down).then_some(state.connection_epoch)
            };
            // Down: close at once; the client's request meets a reset.
            let Some(epoch) = epoch else {
                drop(stream);
                continue;
            };
            let killed = Box::pin(self.shared.kill_connections.clone().notified_owned());
            return (
                Killable {
                    io: stream,
                    shared: self.shared.clone(),
                    epoch,
                    killed,
                    dead: false,
                },
                addr,
            );
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that fails every read and write once the fake goes down,
/// which makes the server drop (reset) it.
struct Killable {
    io: TcpStream,
    shared: Arc<Shared>,
    epoch: u64,
    /// Ready when the fake goes down; polling it registers this
    /// connection's task to be woken then.
    killed: Pin<Box<OwnedNotified>>,
    dead: bool,
}

impl Killable {
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.dead {
            let notified = self.killed.as_mut().poll(cx).is_ready();
            let state = self.shared.lock();
            self.dead =
                notified || state.mode == Mode::Down || state.connection_epoch != self.epoch;
        }
        if self.dead {
            Err(io::ErrorKind::ConnectionReset.into())
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for Killable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Killable {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).expect("random bytes");
    bytes
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(32))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A version-4-shaped UUID from the first 16 bytes.
fn uuid_from(bytes: &[u8]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `2024-05-01T10:00:00.000Z` (days-from-civil inverse, proleptic Gregorian).
fn iso8601(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Percent-decodes one `application/x-www-form-urlencoded` value.
fn form_decode(s: &str) -> String {
    form_urlencoded::parse(format!("v={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A form body, or (as Auth0 accepts) a JSON object.
fn parse_params(headers: &HeaderMap, body: &[u8]) -> HashMap<String, String> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
            return HashMap::new();
        };
        return map
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect();
    }
    form_urlencoded::parse(body).into_owned().collect()
}

fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_string())
}

fn with_query(base: &str, params: &[(&str, String)]) -> String {
    let mut url = url::Url::parse(base).expect("an absolute redirect URI");
    if !params.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in params {
            pairs.append_pair(k, v);
        }
    }
    url.to_string()
}

fn redirect(location: &str) -> Response {
    Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, location)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::empty())
        .expect("redirect response")
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

fn html_response(status: StatusCode, html: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

/// RFC 6749 §5.1: token responses are not cached.
fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_formats_known_instants() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(1_714_557_600), "2024-05-01T10:00:00.000Z");
    }
}
