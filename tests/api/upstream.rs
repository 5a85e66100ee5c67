//! The upstream track against the fake upstream (the kit's `fake` module): the
//! redirect track, shadow users and `sub` continuity, claim shape, the
//! sealed token mapping, refresh through it, adoption, token_mode upstream,
//! logout, vendor path aliases and every failure mode.

use std::time::Duration;

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use reqwest::StatusCode;
use serde_json::Value;
use switchyard::config::{Cohort, Phase, Settings, UpstreamSettings};

use crate::helpers::*;
use switchyard_kit::fake::{FakeUpstream, FakeUser, Flavor, Mode, Tamper, UserinfoTamper};

/// Switchyard's own client at the fake upstream.
pub const UPSTREAM_CLIENT: &str = "switchyard";
pub const UPSTREAM_SECRET: &str = "switchyard-at-the-fake-upstream-0123456789";

pub struct UpstreamApp {
    pub app: TestApp,
    pub fake: FakeUpstream,
}

fn provider(flavor: &Flavor) -> &'static str {
    match flavor {
        Flavor::Auth0 => "auth0",
        Flavor::Okta => "okta",
        Flavor::Keycloak => "keycloak",
        Flavor::Generic => "oidc",
        Flavor::Cognito => "cognito",
    }
}

/// Switchyard in front of a fake upstream of `flavor`, with the confidential
/// client `web` registered on both sides under the same id and secret (an
/// application that was repointed keeps its credentials).
pub async fn spawn_with_upstream(
    flavor: Flavor,
    configure: impl FnOnce(&mut Settings),
) -> UpstreamApp {
    let fake = FakeUpstream::start(flavor).await;
    let provider = provider(&fake_flavor(&fake));
    let issuer = fake.issuer();
    let app = spawn_app_with(|s| {
        let mut up = UpstreamSettings::for_provider(provider);
        up.issuer = Some(issuer);
        up.client_id = UPSTREAM_CLIENT.into();
        // Set for every test process by .cargo/config.toml.
        up.client_secret_env = Some("SWITCHYARD_TEST_UPSTREAM_SECRET".into());
        up.token_keys_env = "SWITCHYARD_TEST_TOKEN_KEYS".into();
        up.timeout_secs = 2;
        s.upstream = Some(up);
        configure(s);
    })
    .await;
    let callback = format!("{}/login/callback", app.address);
    fake.add_client(UPSTREAM_CLIENT, Some(UPSTREAM_SECRET), &[&callback]);
    fake.add_client("web", Some(SECRET), &[REDIRECT]);
    app.add_client("web", false).await;
    UpstreamApp { app, fake }
}

/// Switchyard in front of the fake with the password track out of the way:
/// an empty cohort in the lazy phase sends everyone without a local password
/// to the upstream's own login page (the redirect track these tests are about).
pub async fn spawn_redirect_track(
    flavor: Flavor,
    configure: impl FnOnce(&mut Settings),
) -> UpstreamApp {
    spawn_with_upstream(flavor, |s| {
        s.cutover.cohorts = vec![Cohort {
            percent: Some(0),
            email_domains: vec![],
        }];
        configure(s);
    })
    .await
}

fn fake_flavor(fake: &FakeUpstream) -> Flavor {
    fake.flavor
}

fn alice() -> FakeUser {
    let mut u = FakeUser::new(
        "auth0|5f3a9b2c1d4e5f6a7b8c9d0e",
        "alice@example.com",
        PASSWORD,
    );
    u.name = Some("Alice Liddell".into());
    u.picture = Some("https://cdn.example.com/alice.png".into());
    u.app_metadata = serde_json::json!({"roles": ["admin", "editor"]});
    u
}

/// Upstream access tokens of 4 s are refreshed in their second half: wait
/// until the ones just issued are there.
async fn age_upstream_tokens() {
    tokio::time::sleep(Duration::from_millis(3100)).await;
}

impl UpstreamApp {
    /// Posts `email` on Switchyard's identifier page at `login_path`;
    /// returns where Switchyard sends the browser (the upstream, here).
    pub async fn identifier_step(
        &self,
        browser: &reqwest::Client,
        login_path: &str,
        email: &str,
    ) -> String {
        let page = browser.get(self.app.url(login_path)).send().await.unwrap();
        let (action, mut fields) = form_fields(&page.text().await.unwrap());
        fields.insert("username".into(), email.into());
        let to_upstream = browser
            .post(self.app.url(&action))
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(
            to_upstream.status(),
            StatusCode::SEE_OTHER,
            "the identifier step sends the user upstream"
        );
        location(to_upstream.headers())
    }

    /// Drives the browser through Switchyard's identifier page and the
    /// upstream's login form; returns what the client receives.
    pub async fn login(
        &self,
        browser: &reqwest::Client,
        req: &AuthRequest,
        email: &str,
        password: &str,
    ) -> reqwest::Response {
        let app = &self.app;
        let start = app.authorize(browser, req).await;
        assert_eq!(start.status(), StatusCode::SEE_OTHER);
        let mut next = location(start.headers());
        if next.starts_with("/login") {
            let page = browser.get(app.url(&next)).send().await.unwrap();
            let (action, mut fields) = form_fields(&page.text().await.unwrap());
            fields.insert("username".into(), email.into());
            let to_upstream = browser
                .post(app.url(&action))
                .form(&fields)
                .send()
                .await
                .unwrap();
            assert_eq!(
                to_upstream.status(),
                StatusCode::SEE_OTHER,
                "the identifier step sends the user upstream"
            );
            next = location(to_upstream.headers());
        }
        assert!(next.starts_with(&self.fake.base), "to the upstream: {next}");
        self.upstream_login(browser, &next, email, password).await
    }

    /// Logs in on the fake upstream's page and follows the redirect back to
    /// Switchyard's callback; returns Switchyard's answer.
    pub async fn upstream_login(
        &self,
        browser: &reqwest::Client,
        authorize_url: &str,
        email: &str,
        password: &str,
    ) -> reqwest::Response {
        let page = browser.get(authorize_url).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK, "the upstream login page");
        let page_url = page.url().clone();
        let (action, mut fields) = form_fields(&page.text().await.unwrap());
        fields.insert("username".into(), email.into());
        fields.insert("password".into(), password.into());
        let action = page_url.join(&action).unwrap();
        let back = browser.post(action).form(&fields).send().await.unwrap();
        assert!(
            back.status().is_redirection(),
            "the upstream redirects back: {}",
            back.status()
        );
        let callback = location(back.headers());
        browser.get(callback).send().await.unwrap()
    }

    /// Alice signed in through the redirect track with upstream access
    /// tokens of 4 s, returned once those are due for a refresh at the
    /// upstream.
    pub async fn alice_due_for_upstream_refresh(&self) -> Value {
        self.fake.add_user(alice());
        self.fake.set_access_token_ttl(4);
        let tokens = self.tokens("alice@example.com").await;
        age_upstream_tokens().await;
        tokens
    }

    /// A user the upstream's page signed in (a shadow: no password here),
    /// by the Auth0 `id` and a verified `email`, which makes it a login
    /// identifier.
    pub async fn shadow(&self, id: &str, email: &str) -> switchyard::store::User {
        let profile = switchyard::store::UpstreamProfile {
            id: id.into(),
            profile: switchyard::store::Profile {
                email: Some(email.into()),
                email_verified: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let user = self
            .app
            .state
            .db
            .upsert_upstream_user("auth0", &profile)
            .await
            .unwrap();
        assert_eq!(user.state, switchyard::store::UserState::Shadow);
        user
    }

    pub async fn tokens(&self, email: &str) -> Value {
        let (verifier, challenge) = pkce();
        let done = self
            .login(
                &browser(),
                &AuthRequest::new("web", Some(&challenge)),
                email,
                PASSWORD,
            )
            .await;
        assert_eq!(done.status(), StatusCode::SEE_OTHER, "back to the client");
        let params = query_of(&location(done.headers()));
        let response = self.app.exchange(&params["code"], Some(&verifier)).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn user_count(&self) -> usize {
        self.app
            .state
            .db
            .list_users(None, 1000)
            .await
            .unwrap()
            .len()
    }
}

#[tokio::test]
async fn a_never_seen_auth0_user_logs_in_through_the_redirect_track_with_the_same_sub_and_claims() {
    let t = spawn_redirect_track(Flavor::Auth0, |_| {}).await;
    t.fake.add_user(alice());
    let http = no_redirects();
    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(t.app.issuer.clone()).unwrap(), &http)
            .await
            .unwrap();
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new("web".into()),
        Some(ClientSecret::new(SECRET.into())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, _csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        .url();
    let browser = browser();
    let start = browser.get(url.as_str()).send().await.unwrap();
    let upstream_url = t
        .identifier_step(&browser, &location(start.headers()), "alice@example.com")
        .await;
    assert!(
        t.fake.last_authorize_params().is_none(),
        "nothing reaches the upstream before the browser does"
    );
    let done = t
        .upstream_login(&browser, &upstream_url, "alice@example.com", PASSWORD)
        .await;
    let sent = t.fake.last_authorize_params().unwrap();
    assert_eq!(
        sent["login_hint"], "alice@example.com",
        "login_hint passed on"
    );
    assert_eq!(
        sent["code_challenge_method"], "S256",
        "our own PKCE toward the upstream"
    );
    let back = query_of(&location(done.headers()));

    let tokens = client
        .exchange_code(AuthorizationCode::new(back["code"].clone()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange with Switchyard");
    let id_token = tokens.id_token().unwrap();
    let claims = id_token
        .claims(&client.id_token_verifier(), &nonce)
        .expect("Switchyard's ID token validates");
    assert_eq!(
        claims.subject().as_str(),
        "auth0|5f3a9b2c1d4e5f6a7b8c9d0e",
        "sub is the upstream user id"
    );
    assert_eq!(
        claims.issuer().as_str(),
        t.app.issuer,
        "issued by Switchyard"
    );

    let raw = jwt_claims(&id_token.to_string());
    assert_eq!(raw["nickname"], "alice");
    assert_eq!(raw["picture"], "https://cdn.example.com/alice.png");
    assert!(
        raw["updated_at"].is_string(),
        "Auth0's updated_at stays an ISO-8601 string: {}",
        raw["updated_at"]
    );
    assert_eq!(
        raw["https://example.com/roles"],
        serde_json::json!(["admin", "editor"]),
        "namespaced custom claim carried"
    );
    let access = jwt_claims(tokens.access_token().secret());
    assert_eq!(
        access["https://example.com/roles"],
        serde_json::json!(["admin", "editor"])
    );

    // The shadow user exists once, with its identity.
    let user = t
        .app
        .state
        .db
        .get_user("auth0|5f3a9b2c1d4e5f6a7b8c9d0e")
        .await
        .unwrap()
        .expect("shadow user");
    assert_eq!(user.state, switchyard::store::UserState::Shadow);
    assert_eq!(user.profile.email.as_deref(), Some("alice@example.com"));
    let again = t.tokens("alice@example.com").await;
    assert_eq!(
        jwt_claims(again["id_token"].as_str().unwrap())["sub"],
        "auth0|5f3a9b2c1d4e5f6a7b8c9d0e"
    );
    assert_eq!(
        t.user_count().await,
        1,
        "the same user again is not duplicated"
    );
}

#[tokio::test]
async fn okta_keycloak_and_generic_oidc_upstreams_log_in_refresh_and_log_out() {
    for flavor in [Flavor::Okta, Flavor::Keycloak, Flavor::Generic] {
        let t = spawn_redirect_track(flavor, |_| {}).await;
        let sub = flavor.sample_sub(1);
        t.fake
            .add_user(FakeUser::new(&sub, "bob@example.com", PASSWORD));
        let browser = browser();
        let done = t
            .login(
                &browser,
                &AuthRequest::new("web", None),
                "bob@example.com",
                PASSWORD,
            )
            .await;
        assert_eq!(done.status(), StatusCode::SEE_OTHER, "{flavor:?}");
        let code = query_of(&location(done.headers()))["code"].clone();
        let tokens: Value = t.app.exchange(&code, None).await.json().await.unwrap();
        let id = jwt_claims(tokens["id_token"].as_str().unwrap());
        assert_eq!(id["sub"], sub.as_str(), "{flavor:?}: the upstream's own id");
        assert_eq!(id["iss"], t.app.issuer);
        assert_eq!(
            t.app
                .userinfo(tokens["access_token"].as_str().unwrap())
                .await
                .status(),
            StatusCode::OK
        );
        let refreshed = t
            .app
            .refresh(tokens["refresh_token"].as_str().unwrap())
            .await;
        assert_eq!(refreshed.status(), StatusCode::OK, "{flavor:?}");

        // RP-initiated logout chains through the upstream's end_session endpoint.
        let out = browser
            .get(t.app.url("/oidc/logout"))
            .query(&[
                ("id_token_hint", tokens["id_token"].as_str().unwrap()),
                ("post_logout_redirect_uri", "https://app.example.com/bye"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(out.status(), StatusCode::SEE_OTHER);
        let target = location(out.headers());
        assert!(
            target.starts_with(&t.fake.end_session_endpoint()),
            "{flavor:?}: {target}"
        );
        assert_eq!(
            query_of(&target)["post_logout_redirect_uri"],
            "https://app.example.com/bye"
        );
        assert_eq!(
            t.fake.revoked_refresh_tokens().len(),
            1,
            "{flavor:?}: upstream refresh token revoked"
        );
    }
}

#[tokio::test]
async fn passthrough_sends_authorize_straight_to_the_upstream_with_the_login_hint() {
    let t = spawn_redirect_track(Flavor::Auth0, |s| s.cutover.phase = Phase::Passthrough).await;
    t.fake.add_user(alice());
    let mut req = AuthRequest::new("web", None);
    req.extra
        .push(("login_hint".into(), "alice@example.com".into()));
    let start = t.app.authorize(&browser(), &req).await;
    let target = location(start.headers());
    assert!(target.starts_with(&t.fake.base), "{target}");
    let params = query_of(&target);
    assert_eq!(params["login_hint"], "alice@example.com");
    assert_eq!(
        params["client_id"], UPSTREAM_CLIENT,
        "Switchyard's own client at the upstream"
    );
    assert_ne!(
        params.get("state").map(String::as_str),
        Some("st-123"),
        "our own state, not the application's"
    );
    assert_eq!(
        params["redirect_uri"],
        format!("{}/login/callback", t.app.address)
    );
}

#[tokio::test]
async fn local_users_stay_local_while_others_take_the_redirect_track() {
    let t = spawn_redirect_track(Flavor::Auth0, |_| {}).await;
    t.app.add_user("local@example.com", PASSWORD).await;
    let params = t
        .app
        .code_for(
            &browser(),
            &AuthRequest::new("web", None),
            "local@example.com",
        )
        .await;
    assert!(params.contains_key("code"));
    assert_eq!(
        t.fake.calls("token"),
        0,
        "a local login makes no upstream call"
    );
}

#[tokio::test]
async fn refresh_goes_upstream_only_when_the_upstream_token_nears_expiry() {
    let t = spawn_redirect_track(Flavor::Auth0, |_| {}).await;
    t.fake.add_user(alice());
    let tokens = t.tokens("alice@example.com").await;
    let rt = tokens["refresh_token"].as_str().unwrap();
    let refreshed = t.app.refresh(rt).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    assert_eq!(
        t.fake.calls("token:refresh_token"),
        0,
        "a long-lived upstream token is not refreshed"
    );

    let t = spawn_redirect_track(Flavor::Auth0, |_| {}).await;
    let tokens = t.alice_due_for_upstream_refresh().await;
    let refreshed = t
        .app
        .refresh(tokens["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    assert_eq!(
        t.fake.calls("token:refresh_token"),
        1,
        "an upstream token about to expire is refreshed"
    );
}

#[tokio::test]
async fn concurrent_refreshes_of_one_session_make_exactly_one_upstream_call() {
    let t = spawn_redirect_track(Flavor::Auth0, |_| {}).await;
    t.fake.add_user(alice());
    t.fake.set_access_token_ttl(4);
    // Ten grants of one browser session: the first login, then nine silent ones.
    let browser = browser();
    let done = t
        .login(
            &browser,
            &AuthRequest::new("web", None),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    let mut codes = vec![query_of(&location(done.headers()))["code"].clone()];
    for _ in 0..9 {
        let again = t
            .app
            .authorize(&browser, &AuthRequest::new("web", None))
            .await;
        codes.push(query_of(&location(again.headers()))["code"].clone());
    }
    let mut refresh_tokens = Vec::new();
    for code in &codes {
        let body: Value = t.app.exchange(code, None).await.json().await.unwrap();
        refresh_tokens.push(body["refresh_token"].as_str().unwrap().to_string());
    }
    age_upstream_tokens().await;
    let results =
        futures::future::join_all(refresh_tokens.iter().map(|rt| t.app.refresh(rt))).await;
    assert!(results.iter().all(|r| r.status() == StatusCode::OK));
    assert_eq!(
        t.fake.calls("token:refresh_token"),
        1,
        "one upstream refresh for ten concurrent gateway refreshes"
    );
}

#[tokio::test]
async fn an_upstream_that_ended_the_session_ends_the_gateway_refresh() {
    let t = spawn_redirect_track(Flavor::Auth0, |_| {}).await;
    let tokens = t.alice_due_for_upstream_refresh().await;
    // The user's upstream session ends (signed out elsewhere, deleted,
    // revoked by an administrator): the upstream refuses the refresh token.
    t.fake.revoke_all_refresh_tokens();
    assert_oauth_error(
        t.app
            .refresh(tokens["refresh_token"].as_str().unwrap())
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn an_upstream_refresh_token_held_by_an_application_is_adopted_and_a_forged_one_refused() {
    let t = spawn_redirect_track(Flavor::Auth0, |_| {}).await;
    t.fake.add_user(alice());
    let legacy = t.fake.issue_refresh_token(
        "web",
        "auth0|5f3a9b2c1d4e5f6a7b8c9d0e",
        "openid profile email offline_access",
    );
    let adopted = t.app.refresh(&legacy).await;
    assert_eq!(
        adopted.status(),
        StatusCode::OK,
        "no one is logged out by the repointing"
    );
    let body: Value = adopted.json().await.unwrap();
    assert_eq!(
        jwt_claims(body["id_token"].as_str().unwrap())["sub"],
        "auth0|5f3a9b2c1d4e5f6a7b8c9d0e"
    );
    assert_eq!(
        jwt_claims(body["id_token"].as_str().unwrap())["iss"],
        t.app.issuer
    );
    // From now on the application holds a Switchyard refresh token.
    let next = t.app.refresh(body["refresh_token"].as_str().unwrap()).await;
    assert_eq!(next.status(), StatusCode::OK);
    // The legacy token was spent at the upstream (rotation); replaying it fails.
    assert_oauth_error(
        t.app.refresh(&legacy).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_oauth_error(
        t.app.refresh("forged-refresh-token").await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn adoption_is_rate_limited_per_client() {
    let t = spawn_redirect_track(Flavor::Auth0, |s| {
        s.upstream.as_mut().unwrap().adoptions_per_minute = 3
    })
    .await;
    for _ in 0..3 {
        assert_oauth_error(
            t.app.refresh("guess").await,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        )
        .await;
    }
    assert_oauth_error(
        t.app.refresh("guess").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
    )
    .await;
    assert_eq!(
        t.fake.calls("token:refresh_token"),
        3,
        "the fourth guess never reached the upstream"
    );
}

#[tokio::test]
async fn a_client_in_upstream_token_mode_receives_the_upstream_access_token() {
    let t = spawn_redirect_track(Flavor::Auth0, |_| {}).await;
    t.fake.add_user(alice());
    let mut web = t.app.state.db.get_client("web").await.unwrap().unwrap();
    web.token_mode = switchyard::store::TokenMode::Upstream;
    t.app.state.db.upsert_client(&web).await.unwrap();
    let tokens = t.tokens("alice@example.com").await;
    let access = tokens["access_token"].as_str().unwrap();
    // The upstream's own userinfo accepts it: APIs that trust the old provider keep working.
    let info = reqwest::Client::new()
        .get(format!("{}{}", t.fake.base, userinfo_path(&t.fake)))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), StatusCode::OK);
    assert_eq!(
        jwt_claims(tokens["id_token"].as_str().unwrap())["iss"],
        t.app.issuer,
        "the ID token is still Switchyard's"
    );
}

fn userinfo_path(fake: &FakeUpstream) -> &'static str {
    match fake_flavor(fake) {
        Flavor::Auth0 => "/userinfo",
        Flavor::Okta => "/oauth2/default/v1/userinfo",
        Flavor::Keycloak => "/realms/acme/protocol/openid-connect/userinfo",
        Flavor::Generic => "/userinfo",
        Flavor::Cognito => "/oauth2/userInfo",
    }
}

#[tokio::test]
async fn no_upstream_token_is_ever_stored_in_plaintext() {
    let t = spawn_redirect_track(Flavor::Auth0, |_| {}).await;
    t.fake.add_user(alice());
    let mut web = t.app.state.db.get_client("web").await.unwrap().unwrap();
    web.token_mode = switchyard::store::TokenMode::Upstream;
    t.app.state.db.upsert_client(&web).await.unwrap();
    let tokens = t.tokens("alice@example.com").await;
    let upstream_access = tokens["access_token"].as_str().unwrap().to_string();
    let legacy = t.fake.issue_refresh_token(
        "web",
        "auth0|5f3a9b2c1d4e5f6a7b8c9d0e",
        "openid offline_access",
    );
    assert_eq!(t.app.refresh(&legacy).await.status(), StatusCode::OK);

    let Some(redis_url) = t.app._isolated.redis_url.clone() else {
        // The in-process store never leaves the process; the scan is Redis's.
        return;
    };
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", t.app._isolated.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        keys.iter().any(|k| k.contains("upstream-tokens:")),
        "the mapping is in Redis"
    );
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if kind != "string" {
            continue;
        }
        let value: Vec<u8> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&value);
        assert!(
            !text.contains(&upstream_access),
            "{key} holds the upstream access token in plaintext"
        );
        assert!(
            !text.contains(&legacy),
            "{key} holds the adopted refresh token in plaintext"
        );
    }
}

#[tokio::test]
async fn logout_revokes_the_upstream_refresh_token_and_chains_to_the_upstream_logout() {
    let t = spawn_redirect_track(Flavor::Auth0, |_| {}).await;
    t.fake.add_user(alice());
    let browser = browser();
    let done = t
        .login(
            &browser,
            &AuthRequest::new("web", None),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let out = browser
        .get(t.app.url("/v2/logout"))
        .query(&[
            ("client_id", "web"),
            ("returnTo", "https://app.example.com/bye"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let target = location(out.headers());
    assert!(
        target.starts_with(&format!("{}/v2/logout", t.fake.base)),
        "chained to Auth0's logout: {target}"
    );
    assert_eq!(query_of(&target)["returnTo"], "https://app.example.com/bye");
    assert_eq!(
        t.fake.revoked_refresh_tokens().len(),
        1,
        "the upstream refresh token was revoked"
    );
}

#[tokio::test]
async fn upstream_failures_at_the_callback_show_a_clear_page_and_create_no_user() {
    for mode in [
        Mode::Fail500,
        Mode::RateLimited {
            retry_after_secs: 30,
        },
        Mode::InvalidJson,
        Mode::Slow(Duration::from_secs(4)),
    ] {
        let t = spawn_redirect_track(Flavor::Auth0, |_| {}).await;
        t.fake.add_user(alice());
        let browser = browser();
        let start = t
            .app
            .authorize(&browser, &AuthRequest::new("web", None))
            .await;
        let upstream_url = t
            .identifier_step(&browser, &location(start.headers()), "alice@example.com")
            .await;
        t.fake.set_mode(mode);
        let done = t
            .upstream_login(&browser, &upstream_url, "alice@example.com", PASSWORD)
            .await;
        assert_eq!(done.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = done.text().await.unwrap();
        assert!(body.contains("temporarily unavailable"), "{body}");
        assert_eq!(t.user_count().await, 0, "no half-created user");
    }
}

#[tokio::test]
async fn a_tampered_upstream_id_token_is_refused_and_creates_no_user() {
    for tamper in [
        Tamper::BadSignature,
        Tamper::WrongAudience,
        Tamper::WrongNonce,
        Tamper::Expired,
        Tamper::WrongIssuer,
    ] {
        let t = spawn_redirect_track(Flavor::Auth0, |_| {}).await;
        t.fake.add_user(alice());
        t.fake.set_id_token_tamper(tamper);
        let done = t
            .login(
                &browser(),
                &AuthRequest::new("web", None),
                "alice@example.com",
                PASSWORD,
            )
            .await;
        assert_eq!(done.status(), StatusCode::BAD_REQUEST);
        assert!(
            done.text()
                .await
                .unwrap()
                .contains("could not be completed")
        );
        assert_eq!(t.user_count().await, 0);
    }
}

#[tokio::test]
async fn rotated_upstream_keys_are_fetched_again_on_an_unknown_kid() {
    let t = spawn_redirect_track(Flavor::Auth0, |_| {}).await;
    t.fake.add_user(alice());
    t.tokens("alice@example.com").await;
    let jwks_before = t.fake.calls("jwks");
    t.fake.rotate_keys();
    t.tokens("alice@example.com").await;
    assert_eq!(
        t.fake.calls("jwks"),
        jwks_before + 1,
        "one refetch for the new kid"
    );
}

#[tokio::test]
async fn a_down_upstream_gives_temporarily_unavailable_on_refresh() {
    let t = spawn_redirect_track(Flavor::Auth0, |_| {}).await;
    let tokens = t.alice_due_for_upstream_refresh().await;
    t.fake.set_mode(Mode::Down);
    assert_oauth_error(
        t.app
            .refresh(tokens["refresh_token"].as_str().unwrap())
            .await,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
    )
    .await;
}

/// Bob through the redirect track: the identifier page, then his password on
/// the upstream's own page; returns the upstream's answer (the redirect to
/// Switchyard's callback).
async fn bob_at_the_upstreams_page(
    t: &UpstreamApp,
    browser: &reqwest::Client,
) -> reqwest::Response {
    let (action, mut fields) = t.app.identifier_form(browser, "web").await;
    fields.insert("username".into(), "bob@example.com".into());
    let upstream_url = location(
        browser
            .post(t.app.url(&action))
            .form(&fields)
            .send()
            .await
            .unwrap()
            .headers(),
    );
    let page = browser.get(&upstream_url).send().await.unwrap();
    let page_url = page.url().clone();
    let (action, mut fields) = form_fields(&page.text().await.unwrap());
    fields.insert("username".into(), "bob@example.com".into());
    fields.insert("password".into(), PASSWORD.into());
    browser
        .post(page_url.join(&action).unwrap())
        .form(&fields)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_callback_from_another_issuer_is_refused() {
    let t = spawn_redirect_track(Flavor::Okta, |_| {}).await;
    t.fake
        .add_user(FakeUser::new("00u1", "bob@example.com", PASSWORD));
    let browser = browser();
    let back = bob_at_the_upstreams_page(&t, &browser).await;
    let mut callback = url::Url::parse(&location(back.headers())).unwrap();
    let pairs: Vec<(String, String)> = callback
        .query_pairs()
        .map(|(k, v)| {
            if k == "iss" {
                (k.into_owned(), "https://evil.example.com".into())
            } else {
                (k.into_owned(), v.into_owned())
            }
        })
        .collect();
    callback.query_pairs_mut().clear().extend_pairs(pairs);
    let done = browser.get(callback).send().await.unwrap();
    assert_eq!(
        done.status(),
        StatusCode::BAD_REQUEST,
        "RFC 9207 mix-up defence"
    );
}

#[tokio::test]
async fn okta_sdk_paths_work_under_an_okta_shaped_issuer() {
    let t = spawn_redirect_track(Flavor::Okta, |s| {
        s.issuer = format!("{}oauth2/default", s.issuer);
    })
    .await;
    let discovery: Value = t
        .app
        .api
        .get(format!("{}/.well-known/openid-configuration", t.app.issuer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], t.app.issuer);
    for path in ["/v1/keys", "/.well-known/openid-configuration"] {
        let r = t
            .app
            .api
            .get(format!("{}{path}", t.app.issuer))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let authorize = t
        .app
        .browser
        .get(format!("{}/v1/authorize", t.app.issuer))
        .query(&AuthRequest::new("web", None).pairs())
        .send()
        .await
        .unwrap();
    assert_eq!(authorize.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn metrics_count_logins_and_upstream_calls() {
    let t = spawn_redirect_track(Flavor::Auth0, |_| {}).await;
    t.fake.add_user(alice());
    t.tokens("alice@example.com").await;
    let text = t.app.metrics().await;
    assert!(
        text.contains("switchyard_logins_total{what=\"upstream_redirect\",result=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "switchyard_token_requests_total{what=\"authorization_code\",result=\"ok\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_crafted_callback_error_is_counted_under_a_fixed_label() {
    let t = spawn_redirect_track(Flavor::Okta, |_| {}).await;
    t.fake
        .add_user(FakeUser::new("00u1", "bob@example.com", PASSWORD));
    let browser = browser();
    let back = bob_at_the_upstreams_page(&t, &browser).await;
    // The callback as someone crafts it: the code swapped for an error
    // code of their own choosing.
    let mut callback = url::Url::parse(&location(back.headers())).unwrap();
    let pairs: Vec<(String, String)> = callback
        .query_pairs()
        .filter(|(k, _)| k != "code")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .chain([("error".to_string(), "made_up_label_7f3a".to_string())])
        .collect();
    callback.query_pairs_mut().clear().extend_pairs(pairs);
    let done = browser.get(callback).send().await.unwrap();
    assert_eq!(
        done.status(),
        StatusCode::SEE_OTHER,
        "the application hears access_denied"
    );
    assert_eq!(
        query_of(&location(done.headers()))["error"],
        "access_denied"
    );
    let metrics = t.app.metrics().await;
    assert!(!metrics.contains("made_up_label_7f3a"), "{metrics}");
    assert!(
        metrics.contains("what=\"upstream_redirect\",result=\"other\""),
        "{metrics}"
    );
}

// ---------------------------------------------------------------------------
// The edge: what goes to the upstream with a password, and what comes back
// ---------------------------------------------------------------------------

/// An end user's address and the proxy chain in front of Switchyard: the
/// left-most hop is whatever the client wrote, the right-most untrusted
/// one is the address the trusted proxy (127.0.0.0/8 here) saw.
const FORGED_HOP: &str = "198.51.100.7";
pub(crate) const END_USER: &str = "203.0.113.9";

/// Switchyard behind a trusted proxy in front of `flavor`, on the
/// password track, failures padded to `floor_ms`.
async fn behind_a_proxy(
    flavor: Flavor,
    floor_ms: u64,
    configure: impl FnOnce(&mut Settings),
) -> UpstreamApp {
    spawn_with_upstream(flavor, |s| {
        s.trusted_proxies = vec!["127.0.0.0/8".into()];
        s.password.failure_floor_ms = floor_ms;
        let up = s.upstream.as_mut().unwrap();
        if flavor == Flavor::Auth0 {
            up.connection = Some("Username-Password-Authentication".into());
        }
        configure(s);
    })
    .await
}

/// Identifier and password on Switchyard's pages, every request arriving
/// through the proxy with `X-Forwarded-For: FORGED_HOP, END_USER`.
async fn login_through_proxy(t: &UpstreamApp, email: &str, password: &str) -> reqwest::Response {
    login_through_proxy_at(&t.app, email, password).await
}

/// [`login_through_proxy`] at any Switchyard, for the client `web`.
pub(crate) async fn login_through_proxy_at(
    app: &TestApp,
    email: &str,
    password: &str,
) -> reqwest::Response {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "x-forwarded-for",
        format!("{FORGED_HOP}, {END_USER}").parse().unwrap(),
    );
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .unwrap();
    app.sign_in(&browser, "web", email, password).await
}

/// The user with `n`'s vendor-shaped id, known to the fake.
fn upstream_user(t: &UpstreamApp, n: u32, email: &str) -> String {
    let sub = t.fake.flavor.sample_sub(n);
    t.fake.add_user(FakeUser::new(&sub, email, PASSWORD));
    sub
}

#[tokio::test]
async fn the_upstream_sees_the_end_users_address_the_way_each_vendor_documents() {
    for flavor in [
        Flavor::Auth0,
        Flavor::Okta,
        Flavor::Cognito,
        Flavor::Keycloak,
    ] {
        let t = behind_a_proxy(flavor, 10, |_| {}).await;
        upstream_user(&t, 1, "dora@example.com");
        let r = login_through_proxy(&t, "dora@example.com", "wrong").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{flavor:?}");
        let seen = t.fake.forwarded_addresses();
        assert_eq!(seen.len(), 1, "{flavor:?}: one password request");
        let seen = &seen[0];
        match flavor {
            // Keycloak has no way for a client to name the user's address.
            Flavor::Keycloak => assert!(seen.is_empty(), "{flavor:?}: {seen:?}"),
            _ => {
                assert_eq!(
                    seen.as_read_by(flavor),
                    Some(END_USER),
                    "{flavor:?}: the right-most untrusted hop, where the vendor reads it"
                );
                // Only where the vendor reads it.
                let places = [
                    &seen.auth0_forwarded_for,
                    &seen.x_forwarded_for,
                    &seen.user_context_ip,
                ];
                assert_eq!(
                    places.iter().filter(|p| p.is_some()).count(),
                    1,
                    "{flavor:?}: {seen:?}"
                );
            }
        }
        // The right password migrates with the address sent again.
        let r = login_through_proxy(&t, "dora@example.com", PASSWORD).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{flavor:?}");
        assert_eq!(
            t.fake.forwarded_addresses()[1].as_read_by(flavor),
            (flavor != Flavor::Keycloak).then_some(END_USER),
            "{flavor:?}"
        );
    }
}

#[tokio::test]
async fn the_address_is_the_peers_without_trusted_proxies_and_none_when_turned_off() {
    // No trusted proxy: the header is the client's own writing, ignored.
    let t = behind_a_proxy(Flavor::Auth0, 10, |s| s.trusted_proxies.clear()).await;
    upstream_user(&t, 1, "dora@example.com");
    login_through_proxy(&t, "dora@example.com", "wrong").await;
    assert_eq!(
        t.fake.forwarded_addresses()[0]
            .auth0_forwarded_for
            .as_deref(),
        Some("127.0.0.1"),
        "the peer's address, not a forged one"
    );

    // Turned off by the operator: nothing is sent.
    let t = behind_a_proxy(Flavor::Okta, 10, |s| {
        s.upstream.as_mut().unwrap().forward_client_ip = false;
    })
    .await;
    upstream_user(&t, 1, "dora@example.com");
    login_through_proxy(&t, "dora@example.com", "wrong").await;
    let seen = t.fake.forwarded_addresses();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].is_empty(), "{seen:?}");
}

#[tokio::test]
async fn a_vendor_lockout_gives_the_locked_page_whatever_the_password() {
    const LOCKED: &str = "temporarily locked";
    const FLOOR_MS: u64 = 300;
    for flavor in [Flavor::Auth0, Flavor::Keycloak, Flavor::Cognito] {
        let t = behind_a_proxy(flavor, FLOOR_MS, |_| {}).await;
        let sub = upstream_user(&t, 2, "erin@example.com");
        t.fake.lock_out(&sub);
        for password in [PASSWORD, "wrong"] {
            let started = std::time::Instant::now();
            let r = login_through_proxy(&t, "erin@example.com", password).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{flavor:?}");
            let page = r.text().await.unwrap();
            assert!(page.contains(LOCKED), "{flavor:?}: {page}");
            assert!(!page.contains("unavailable"), "{flavor:?}");
            // Padded like a failure: at least the floor, right password or not.
            assert!(
                started.elapsed() >= Duration::from_millis(FLOOR_MS),
                "{flavor:?}"
            );
        }
        assert!(
            t.app.state.db.get_user(&sub).await.unwrap().is_none(),
            "{flavor:?}: nothing migrated"
        );
        // Another user's wrong password is still a plain failure.
        upstream_user(&t, 3, "finn@example.com");
        let r = login_through_proxy(&t, "finn@example.com", "wrong").await;
        let page = r.text().await.unwrap();
        assert!(page.contains("Wrong email, username or password."));
        assert!(!page.contains(LOCKED));
    }

    // Okta's password grant answers a locked-out user like a wrong
    // password: the login page cannot say more.
    let t = behind_a_proxy(Flavor::Okta, 10, |_| {}).await;
    let sub = upstream_user(&t, 2, "erin@example.com");
    t.fake.lock_out(&sub);
    let r = login_through_proxy(&t, "erin@example.com", PASSWORD).await;
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Wrong email, username or password.")
    );
}

#[tokio::test]
async fn a_userinfo_answer_without_sub_or_with_another_sub_is_not_used() {
    for tamper in [UserinfoTamper::NoSub, UserinfoTamper::OtherSub] {
        let t = behind_a_proxy(Flavor::Auth0, 10, |_| {}).await;
        t.fake.add_user(alice());
        t.fake.set_userinfo_tamper(tamper);
        let r = login_through_proxy(&t, "alice@example.com", PASSWORD).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{tamper:?}");
        assert!(
            t.fake.calls("userinfo") >= 1,
            "{tamper:?}: userinfo was asked"
        );
        let user = t
            .app
            .state
            .db
            .get_user("auth0|5f3a9b2c1d4e5f6a7b8c9d0e")
            .await
            .unwrap()
            .expect("migrated from the ID token");
        assert_eq!(
            user.profile.email.as_deref(),
            Some("alice@example.com"),
            "{tamper:?}"
        );
        let claims = serde_json::to_string(&user).unwrap();
        assert!(!claims.contains("someone-else"), "{tamper:?}: {claims}");
        assert!(!claims.contains("Someone Else"), "{tamper:?}: {claims}");
    }
}

#[tokio::test]
async fn an_oversized_upstream_answer_is_refused_cleanly() {
    for what in ["discovery", "token"] {
        let t = behind_a_proxy(Flavor::Okta, 10, |_| {}).await;
        upstream_user(&t, 1, "gus@example.com");
        t.fake.set_oversized(Some(what));
        let r = login_through_proxy(&t, "gus@example.com", PASSWORD).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
        let page = r.text().await.unwrap();
        assert!(page.contains("temporarily unavailable"), "{what}");
        assert!(
            !page.contains("padding") && !page.contains("1048576"),
            "{what}"
        );
        // Once the upstream answers sensibly again, the login goes through.
        t.fake.set_oversized(None);
        let r = login_through_proxy(&t, "gus@example.com", PASSWORD).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{what}");
    }

    // A userinfo answer that large is not used; the ID token suffices.
    let t = behind_a_proxy(Flavor::Auth0, 10, |_| {}).await;
    t.fake.add_user(alice());
    t.fake.set_oversized(Some("userinfo"));
    let r = login_through_proxy(&t, "alice@example.com", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_management_page_stops_the_backfill_with_a_clear_error() {
    let op =
        crate::backfill::Operator::on(isolated().await, FakeUpstream::start(Flavor::Okta).await);
    op.fake.add_user(FakeUser::new(
        &Flavor::Okta.sample_sub(1),
        "hal@example.com",
        PASSWORD,
    ));
    op.fake.set_oversized(Some("/api/v1/users"));
    let out = op.run(&["backfill"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("larger than 1048576 bytes"), "{stderr}");
    assert!(!stderr.contains("padding"), "{stderr}");
}

#[tokio::test]
async fn cognito_at_an_api_endpoint_with_configured_keys_needs_no_discovery() {
    // `api_endpoint` is where InitiateAuth goes, and with the keys named
    // discovery is never asked for (emulators have none worth reading).
    let configure = |api: Option<&str>| {
        let api = api.map(String::from);
        move |s: &mut Settings| {
            let up = s.upstream.as_mut().unwrap();
            let issuer = up.issuer.clone().unwrap();
            let base = issuer.trim_end_matches(switchyard_kit::fake::COGNITO_POOL_ID);
            up.api_endpoint = Some(api.unwrap_or_else(|| base.to_string()));
            up.endpoints.jwks = Some(format!("{issuer}/.well-known/jwks.json"));
        }
    };
    let t = behind_a_proxy(Flavor::Cognito, 10, configure(None)).await;
    let sub = upstream_user(&t, 4, "kim@example.com");
    let r = login_through_proxy(&t, "kim@example.com", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(t.app.state.db.get_user(&sub).await.unwrap().is_some());
    assert_eq!(t.fake.calls("initiate_auth"), 1);
    assert_eq!(t.fake.calls("discovery"), 0, "no discovery");
    assert!(t.fake.calls("jwks") >= 1, "the configured keys");

    // An api_endpoint where nothing answers: the password cannot be
    // checked, and the issuer's origin is not tried instead.
    let t = behind_a_proxy(Flavor::Cognito, 10, configure(Some("http://127.0.0.1:1/"))).await;
    upstream_user(&t, 4, "kim@example.com");
    let r = login_through_proxy(&t, "kim@example.com", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(t.fake.calls("initiate_auth"), 0);
}

#[tokio::test]
async fn a_vendor_lockout_is_invalid_grant_saying_so_at_the_password_grant() {
    let t = behind_a_proxy(Flavor::Auth0, 10, |_| {}).await;
    let sub = upstream_user(&t, 2, "erin@example.com");
    t.fake.lock_out(&sub);
    let mut legacy = t.app.add_client("legacy", false).await;
    legacy
        .grant_types
        .push(switchyard::store::GrantType::Password);
    t.app.state.db.upsert_client(&legacy).await.unwrap();
    for password in [PASSWORD, "wrong"] {
        let r = t
            .app
            .token(
                &[
                    ("grant_type", "password"),
                    ("username", "erin@example.com"),
                    ("password", password),
                ],
                Some(("legacy", SECRET)),
            )
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant", "{body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("temporarily locked"),
            "{body}"
        );
    }
    // The upstream's 429 is about this user, not a rate limit on Switchyard.
    assert!(t.app.state.db.get_user(&sub).await.unwrap().is_none());
}
