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
//!
//! The code is split as the vendors are: this module holds what every
//! flavor shares (the public handle, the state, keys and JWTs, the router
//! and its middleware); `oidc` the OpenID Connect endpoints, with the
//! vendors' differences as arms of one `match`; `cognito` Cognito's token
//! answers and user-pool API; `management` the vendors' Management APIs,
//! one module per vendor; `transport` the listener that [`Mode::Down`]
//! resets.

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
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

use crate::http::form_fields;
use crate::random_token;

mod cognito;
mod management;
mod oidc;
mod transport;

use cognito::*;
use oidc::*;
use transport::*;

pub use management::cognito::{
    amz_date_now, aws_canonical_request, aws_sigv4_signature, sign_cognito_request,
    sign_cognito_request_at,
};
pub use management::{
    AUTH0_CONNECTION_ID, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, COGNITO_ADMIN_DISABLE_USER,
    COGNITO_ADMIN_ENABLE_USER, COGNITO_ADMIN_SET_USER_PASSWORD,
    COGNITO_ADMIN_UPDATE_USER_ATTRIBUTES, COGNITO_LIST_USERS, COGNITO_REGION, COGNITO_SERVICE,
    ExportTiming, ManagementWrite, OKTA_API_TOKEN, SEEDED_USER_PASSWORD,
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
    /// (SigV4-signed, see `management::cognito`) are the only other operations
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
    /// `sub` names another user (a refreshed ID token must keep the
    /// original `sub`, OIDC Core §12.2).
    OtherSubject,
}

/// What a userinfo answer does wrong on purpose (OIDC Core §5.3.2 has the
/// relying party refuse both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserinfoTamper {
    None,
    /// No `sub` at all; `email` and `name` are someone else's.
    NoSub,
    /// Another user's `sub`, `email` and `name`.
    OtherSub,
}

/// The end-user address a password request carried, in each place a
/// vendor documents for it: Auth0's `auth0-forwarded-for` header, the
/// `X-Forwarded-For` header (Okta; Keycloak behind its proxy), Cognito's
/// `UserContextData.IpAddress` (`InitiateAuth`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardedAddress {
    pub auth0_forwarded_for: Option<String>,
    pub x_forwarded_for: Option<String>,
    pub user_context_ip: Option<String>,
}

impl ForwardedAddress {
    /// The address the vendor this fake plays would read, if any.
    pub fn as_read_by(&self, flavor: Flavor) -> Option<&str> {
        match flavor {
            Flavor::Auth0 => self.auth0_forwarded_for.as_deref(),
            Flavor::Cognito => self.user_context_ip.as_deref(),
            Flavor::Okta | Flavor::Keycloak | Flavor::Generic => self.x_forwarded_for.as_deref(),
        }
    }

    /// Whether the request carried an address anywhere at all.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
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

    /// Locks the user as the vendor's brute-force protection does after too
    /// many failures: every password attempt, right or wrong, gets the
    /// vendor's lockout answer (Auth0 429 `too_many_attempts`; Keycloak
    /// `invalid_grant` "Account temporarily disabled"; Cognito
    /// `NotAuthorizedException` "Password attempts exceeded"; Okta's
    /// password grant answers as for a wrong password).
    pub fn lock_out(&self, sub: &str) {
        self.shared.lock().locked_out.insert(sub.into());
    }

    /// The end-user address each password request (the password grant, or
    /// Cognito's `InitiateAuth`) carried, in order.
    pub fn forwarded_addresses(&self) -> Vec<ForwardedAddress> {
        self.shared.lock().forwarded.clone()
    }

    /// Userinfo answers are wrong in this way from now on.
    pub fn set_userinfo_tamper(&self, tamper: UserinfoTamper) {
        self.shared.lock().userinfo_tamper = tamper;
    }

    /// Requests to the endpoint named as in [`FakeUpstream::calls`]
    /// (`discovery`, `token`, `userinfo`, …) or to this exact path (a
    /// Management API's, e.g. `/api/v2/users`) are answered 200 with a JSON
    /// body of 2 MiB, more than any real answer; `None` stops it.
    pub fn set_oversized(&self, what: Option<&str>) {
        self.shared.lock().oversized = what.map(String::from);
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

    /// Every upstream browser session now says the user authenticated at
    /// `auth_time` (a login that happened long ago).
    pub fn set_sessions_auth_time(&self, auth_time: i64) {
        for session in self.shared.lock().sessions.values_mut() {
            session.auth_time = auth_time;
        }
    }

    /// With `true`, `/authorize` answers from an existing session whatever
    /// `prompt=login` and `max_age` ask: an upstream (or a misconfigured
    /// tenant) that does not re-authenticate when told to.
    pub fn set_ignore_reauthentication(&self, ignore: bool) {
        self.shared.lock().ignore_reauthentication = ignore;
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
        let (action, mut fields) = form_fields(&html);
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
    /// `/authorize` ignores `prompt=login` and `max_age`.
    ignore_reauthentication: bool,
    /// The current rate-limit window (start, requests in it).
    rate_window: (i64, u64),
    /// Cognito's PreventUserExistenceErrors.
    prevent_user_existence_errors: bool,
    /// Cognito users in `FORCE_CHANGE_PASSWORD`, by `sub`.
    new_password_required: HashSet<String>,
    /// The Management APIs' tokens, limits, faults, jobs and orderings.
    mgmt: management::Management,
    /// Users locked by brute-force protection, by `sub`.
    locked_out: HashSet<String>,
    /// The end-user address of each password request.
    forwarded: Vec<ForwardedAddress>,
    userinfo_tamper: UserinfoTamper,
    /// The endpoint name or path answered with an oversized body.
    oversized: Option<String>,
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
            ignore_reauthentication: false,
            rate_window: (0, 0),
            prevent_user_existence_errors: false,
            new_password_required: HashSet::new(),
            mgmt: management::Management::default(),
            locked_out: HashSet::new(),
            forwarded: vec![],
            userinfo_tamper: UserinfoTamper::None,
            oversized: None,
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

impl RefreshGrant {
    /// What the refresh grant issues. Cognito keeps the presented refresh
    /// token and its tokens name no API audience; the others rotate it,
    /// with the same scope.
    fn reissue(self, client_id: &str, cognito: bool) -> Issue {
        Issue {
            client_id: client_id.to_string(),
            sub: self.sub,
            refresh: (!cognito).then(|| self.scope.clone()),
            scope: self.scope,
            nonce: None,
            audience: if cognito { None } else { self.audience },
            auth_time: self.auth_time,
            sid: self.sid,
            amr: self.amr,
        }
    }
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

/// Keycloak's `username`: the nickname if set, else the email.
fn keycloak_username(user: &FakeUser) -> String {
    user.nickname.clone().unwrap_or_else(|| user.email.clone())
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
        Tamper::OtherSubject => {
            claims.insert("sub".into(), json!("auth0|someone-else"));
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
    let mut forwarded = {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        ForwardedAddress {
            auth0_forwarded_for: header("auth0-forwarded-for"),
            x_forwarded_for: header("x-forwarded-for"),
            user_context_ip: None,
        }
    };
    let password_request = grant_type
        .as_deref()
        .is_some_and(|g| g == "password" || g == AUTH0_PASSWORD_REALM);
    let req = if initiate_auth {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default();
        forwarded.user_context_ip = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["UserContextData"]["IpAddress"].as_str().map(String::from));
        Request::from_parts(parts, Body::from(bytes))
    } else {
        req
    };
    let path = req.uri().path().to_string();
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
        if password_request || initiate_auth {
            state.forwarded.push(forwarded);
        }
        let oversized = state
            .oversized
            .as_deref()
            .is_some_and(|o| o == path || endpoint.is_some_and(|e| e.name() == o));
        (state.mode.clone(), oversized)
    };
    let (mode, oversized) = mode;
    if oversized {
        return oversized_answer(next.run(req).await).await;
    }
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

/// Applies a [`UserinfoTamper`] to a userinfo answer's claims.
fn tamper_userinfo(tamper: UserinfoTamper, claims: &mut Map<String, Value>) {
    let someone_else = |claims: &mut Map<String, Value>| {
        claims.insert("email".into(), json!("someone-else@example.com"));
        claims.insert("name".into(), json!("Someone Else"));
    };
    match tamper {
        UserinfoTamper::None => {}
        UserinfoTamper::NoSub => {
            claims.remove("sub");
            someone_else(claims);
        }
        UserinfoTamper::OtherSub => {
            claims.insert("sub".into(), json!("someone-else"));
            someone_else(claims);
        }
    }
}

/// The answer as it was, but 2 MiB long: a JSON object gains a `padding`
/// member (so it stays valid and would otherwise be used), a JSON array a
/// last element of padding.
async fn oversized_answer(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let padding = json!("x".repeat(2 << 20));
    let padded = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut o)) => {
            o.insert("padding".into(), padding);
            Value::Object(o)
        }
        Ok(Value::Array(mut a)) => {
            a.push(json!({ "padding": padding }));
            Value::Array(a)
        }
        _ => json!({ "padding": padding }),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(padded.to_string()))
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
