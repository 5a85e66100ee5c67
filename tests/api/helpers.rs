//! `spawn_app()` and the `TestApp` whose methods drive each endpoint the
//! way an application or a browser does.

use std::collections::HashMap;

use reqwest::StatusCode;
use switchyard::config::Settings;
use switchyard::crypto::hash_secret;
use switchyard::password::ARGON2ID;
use switchyard::startup::Application;
use switchyard::state::AppState;
use switchyard::store::{Client, NewUser, User};

// The kit's helpers, for the test modules that `use crate::helpers::*`.
pub use switchyard_kit::http::{
    browser, form_fields, jwt_claims, jwt_header, location, no_redirects, pkce, query_of,
};
pub use switchyard_kit::isolation::{
    Backend, Isolated, backend, isolated, new_schema_name, postgres_base, redis_keys,
    sweep_leftover_schemas,
};

pub const PASSWORD: &str = "correct horse battery staple";
pub const SECRET: &str = "web-client-secret-0123456789abcdef";
pub const REDIRECT: &str = "https://app.example.com/callback";

/// Runs the real `switchyard` binary as an operator would, on the test's
/// database, with `env` added and `stdin` fed to it.
pub fn run_cli(
    iso: &Isolated,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args(args)
        .env("SWITCHYARD_DATABASE_URL", &iso.database_url)
        .env_remove("SWITCHYARD_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the switchyard binary runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

pub struct TestApp {
    pub address: String,
    pub issuer: String,
    pub state: AppState,
    /// Follows no redirects and keeps cookies, like a browser tab that the
    /// test steps through by hand.
    pub browser: reqwest::Client,
    /// No cookies, no redirects: an application's back end.
    pub api: reqwest::Client,
    pub _isolated: Isolated,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on(isolated().await, configure).await
}

/// Switchyard on a database a test has already filled (with the CLI, say).
pub async fn spawn_app_on(isolated: Isolated, configure: impl FnOnce(&mut Settings)) -> TestApp {
    // Log lines are captured per test and shown when it fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("SWITCHYARD_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().unwrap().port();
    let mut settings = Settings {
        issuer: format!("http://127.0.0.1:{port}/"),
        database_url: isolated.database_url.clone(),
        redis_url: isolated.redis_url.clone(),
        session_prefix: isolated.prefix.clone(),
        ..Settings::default()
    };
    configure(&mut settings);
    let issuer = settings.issuer.clone();
    let app = Application::build_with_listener(settings, listener)
        .await
        .expect("application builds");
    let state = app.state();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        issuer,
        state,
        browser: browser(),
        api: no_redirects(),
        _isolated: isolated,
    }
}

/// What `authorize` sends; the defaults are a confidential client's
/// ordinary OIDC request with PKCE.
pub struct AuthRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub challenge: Option<String>,
    pub extra: Vec<(String, String)>,
}

impl AuthRequest {
    pub fn new(client_id: &str, challenge: Option<&str>) -> Self {
        Self {
            client_id: client_id.into(),
            redirect_uri: REDIRECT.into(),
            scope: "openid profile email".into(),
            state: Some("st-123".into()),
            nonce: Some("n-456".into()),
            challenge: challenge.map(Into::into),
            extra: vec![],
        }
    }

    /// The same request with one more parameter.
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.extra.push((name.into(), value.into()));
        self
    }

    pub fn pairs(&self) -> Vec<(String, String)> {
        let mut p = vec![
            ("response_type".to_string(), "code".to_string()),
            ("client_id".into(), self.client_id.clone()),
            ("redirect_uri".into(), self.redirect_uri.clone()),
            ("scope".into(), self.scope.clone()),
        ];
        if let Some(s) = &self.state {
            p.push(("state".into(), s.clone()));
        }
        if let Some(n) = &self.nonce {
            p.push(("nonce".into(), n.clone()));
        }
        if let Some(c) = &self.challenge {
            p.push(("code_challenge".into(), c.clone()));
            p.push(("code_challenge_method".into(), "S256".into()));
        }
        p.extend(self.extra.iter().cloned());
        p
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Starts `client_id`'s sign-in in `browser` and returns the identifier
    /// page's form (its action and fields).
    pub async fn identifier_form(
        &self,
        browser: &reqwest::Client,
        client_id: &str,
    ) -> (String, HashMap<String, String>) {
        let start = self
            .authorize(browser, &AuthRequest::new(client_id, None))
            .await;
        let page = browser
            .get(self.url(&location(start.headers())))
            .send()
            .await
            .unwrap();
        form_fields(&page.text().await.unwrap())
    }

    /// Identifier and password posted together on Switchyard's login page
    /// for `client_id`, in `browser`; the answer (a code for the client
    /// when the login succeeded).
    pub async fn sign_in(
        &self,
        browser: &reqwest::Client,
        client_id: &str,
        email: &str,
        password: &str,
    ) -> reqwest::Response {
        let (action, mut fields) = self.identifier_form(browser, client_id).await;
        fields.insert("username".into(), email.into());
        fields.insert("password".into(), password.into());
        browser
            .post(self.url(&action))
            .form(&fields)
            .send()
            .await
            .unwrap()
    }

    pub async fn add_user(&self, email: &str, password: &str) -> User {
        let hash = self
            .state
            .passwords
            .hash(password.to_string())
            .await
            .unwrap();
        let new = NewUser {
            profile: switchyard::store::Profile {
                email: Some(email.into()),
                email_verified: true,
                name: Some("Alice Example".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        self.state
            .db
            .create_user(&new, Some((&hash, ARGON2ID)))
            .await
            .unwrap()
    }

    pub async fn add_client(&self, client_id: &str, public: bool) -> Client {
        let client = switchyard::config::ClientSettings {
            client_id: client_id.into(),
            name: Some("Example App".into()),
            public,
            redirect_uris: vec![REDIRECT.into(), "http://127.0.0.1/native".into()],
            post_logout_redirect_uris: vec!["https://app.example.com/bye".into()],
            ..Default::default()
        }
        .to_client(
            (!public).then(|| hash_secret(SECRET)),
            switchyard::store::ClientSource::Cli,
        );
        self.state.db.create_client(&client).await.unwrap();
        client
    }

    /// The standard fixture: alice and a confidential client `web`.
    pub async fn with_alice_and_web(&self) -> User {
        self.add_client("web", false).await;
        self.add_user("alice@example.com", PASSWORD).await
    }

    pub async fn authorize(
        &self,
        browser: &reqwest::Client,
        req: &AuthRequest,
    ) -> reqwest::Response {
        browser
            .get(self.url("/authorize"))
            .query(&req.pairs())
            .send()
            .await
            .unwrap()
    }

    /// Steps through the login pages; returns the final response (the
    /// redirect back to the client, or the page that refused).
    pub async fn login(
        &self,
        browser: &reqwest::Client,
        login_path: &str,
        username: &str,
        password: &str,
    ) -> reqwest::Response {
        let page = browser.get(self.url(login_path)).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK, "login page");
        let (action, mut fields) = form_fields(&page.text().await.unwrap());
        fields.insert("username".into(), username.into());
        let page = browser
            .post(self.url(&action))
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK, "password page");
        let (action, mut fields) = form_fields(&page.text().await.unwrap());
        fields.insert("password".into(), password.into());
        browser
            .post(self.url(&action))
            .form(&fields)
            .send()
            .await
            .unwrap()
    }

    /// Authorize, log in, and return the parameters the client receives.
    pub async fn code_for(
        &self,
        browser: &reqwest::Client,
        req: &AuthRequest,
        username: &str,
    ) -> HashMap<String, String> {
        let start = self.authorize(browser, req).await;
        assert_eq!(
            start.status(),
            StatusCode::SEE_OTHER,
            "authorize redirects to the login page"
        );
        let login_path = location(start.headers());
        let done = self.login(browser, &login_path, username, PASSWORD).await;
        assert_eq!(
            done.status(),
            StatusCode::SEE_OTHER,
            "login redirects to the client"
        );
        let back = location(done.headers());
        assert!(
            back.starts_with(&req.redirect_uri),
            "back to the client: {back}"
        );
        query_of(&back)
    }

    pub async fn token(
        &self,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> reqwest::Response {
        let mut req = self.api.post(self.url("/oauth/token")).form(form);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        req.send().await.unwrap()
    }

    /// Exchanges a code for `web` with its secret.
    pub async fn exchange(&self, code: &str, verifier: Option<&str>) -> reqwest::Response {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
        ];
        if let Some(v) = verifier {
            form.push(("code_verifier", v));
        }
        self.token(&form, Some(("web", SECRET))).await
    }

    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
            Some(("web", SECRET)),
        )
        .await
    }

    /// A full login of alice for `web`; returns the token response.
    pub async fn tokens_for_alice(&self) -> serde_json::Value {
        let (verifier, challenge) = pkce();
        let params = self.alice_code(&browser(), Some(&challenge)).await;
        self.exchange_ok(&params["code"], Some(&verifier)).await
    }

    /// The standard fixture's login: alice through client `web`, with a
    /// PKCE `challenge` or none; the parameters the client receives.
    pub async fn alice_code(
        &self,
        browser: &reqwest::Client,
        challenge: Option<&str>,
    ) -> HashMap<String, String> {
        self.code_for(
            browser,
            &AuthRequest::new("web", challenge),
            "alice@example.com",
        )
        .await
    }

    /// Exchanges a code that must succeed: the token response.
    pub async fn exchange_ok(&self, code: &str, verifier: Option<&str>) -> serde_json::Value {
        let response = self.exchange(code, verifier).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// The Prometheus text at `/metrics`.
    pub async fn metrics(&self) -> String {
        self.api
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn userinfo(&self, access_token: &str) -> reqwest::Response {
        self.api
            .get(self.url("/userinfo"))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap()
    }
}

/// Asserts an RFC 6749 §5.2 error response.
pub async fn assert_oauth_error(response: reqwest::Response, status: StatusCode, error: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("no-store")
    );
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["error"], error, "{body}");
    let description = body["error_description"].as_str().unwrap_or("");
    assert!(
        !description.to_lowercase().contains("sqlx") && !description.contains("redis"),
        "no internal text: {description}"
    );
}

/// The order in which a timing test runs its `cases`, `rounds` times each:
/// a fixed-seed shuffle, so no case always runs first or last and a failure
/// replays the same order.
pub fn interleaved(cases: usize, rounds: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..cases * rounds).map(|i| i % cases).collect();
    let mut seed: u64 = 0x5eed;
    for i in (1..order.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        order.swap(i, (seed >> 33) as usize % (i + 1));
    }
    order
}

/// Fails unless the medians of every case's durations (seconds) lie
/// within `ratio` of each other.
pub fn assert_p50s_within(mut samples: Vec<Vec<f64>>, ratio: f64) {
    let medians: Vec<f64> = samples
        .iter_mut()
        .map(|v| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        })
        .collect();
    let lo = medians.iter().cloned().fold(f64::MAX, f64::min);
    let hi = medians.iter().cloned().fold(0.0, f64::max);
    assert!(hi / lo < ratio, "p50s within {ratio}: {medians:?}");
}
