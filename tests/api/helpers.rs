//! `spawn_app()` and the `TestApp` whose methods drive each endpoint the
//! way an application or a browser does.

use std::collections::HashMap;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION};
use scraper::{Html, Selector};
use switchyard::config::Settings;
use switchyard::crypto::hash_secret;
use switchyard::crypto::{b64url, random_token, sha256};
use switchyard::password::ARGON2ID;
use switchyard::startup::Application;
use switchyard::state::AppState;
use switchyard::store::{Client, NewUser, User, now};

pub const PASSWORD: &str = "correct horse battery staple";
pub const SECRET: &str = "web-client-secret-0123456789abcdef";
pub const REDIRECT: &str = "https://app.example.com/callback";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    PostgresRedis,
}

pub fn backend() -> Backend {
    match std::env::var("SWITCHYARD_TEST_BACKEND").as_deref() {
        Ok("postgres-redis") => Backend::PostgresRedis,
        Ok("embedded") | Err(_) => Backend::Embedded,
        Ok(other) => panic!("SWITCHYARD_TEST_BACKEND={other:?}: use embedded or postgres-redis"),
    }
}

/// A database URL and a session-store setting for one test, plus whatever
/// must live as long as the test (the temporary directory), and what to
/// clean up when it ends.
pub struct Isolated {
    pub database_url: String,
    pub redis_url: Option<String>,
    pub prefix: String,
    _dir: Option<tempfile::TempDir>,
    /// The PostgreSQL schema this handle created (a second handle on the
    /// same database has none: it drops nothing).
    schema: Option<Schema>,
}

struct Schema {
    /// The server's URL, without the schema's search path.
    base: String,
    name: String,
}

impl Isolated {
    /// The same database, for a second handle (the CLI beside an app).
    pub fn same_database(&self) -> Isolated {
        Isolated {
            database_url: self.database_url.clone(),
            redis_url: self.redis_url.clone(),
            prefix: self.prefix.clone(),
            _dir: None,
            schema: None,
        }
    }

    /// The PostgreSQL schema of this test, if it created one.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_ref().map(|s| s.name.as_str())
    }
}

/// Without this every run of the PostgreSQL suite would leave a schema a
/// test (with its tables) and its Redis keys behind. Drop cannot await, and
/// a `#[tokio::test]` runtime cannot be blocked on from inside, so the
/// clean-up runs on a thread of its own with its own runtime.
impl Drop for Isolated {
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else {
            return;
        };
        let (redis, prefix) = (self.redis_url.clone(), self.prefix.clone());
        on_own_runtime(async move {
            if let Err(e) = drop_schema(&schema.base, &schema.name).await {
                eprintln!("could not drop schema {}: {e}", schema.name);
            }
            if let Some(url) = redis
                && let Err(e) = delete_keys(&url, &prefix).await
            {
                eprintln!("could not delete the Redis keys under {prefix}: {e}");
            }
        });
    }
}

/// Runs `work` to completion on a new thread and runtime, and waits for it.
fn on_own_runtime(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the clean-up")
            .block_on(work)
    })
    .join();
}

async fn connect_admin(base: &str) -> Result<sqlx::PgConnection, sqlx::Error> {
    use sqlx::Connection;
    sqlx::PgConnection::connect(base).await
}

/// `DROP SCHEMA … CASCADE`. The test's app may still hold connections:
/// idle ones hold no locks, but the app's tasks are frozen while this
/// waits, so one caught inside a transaction would hold its locks for
/// ever. A short lock timeout, then those sessions are ended and the drop
/// tried again.
async fn drop_schema(base: &str, schema: &str) -> Result<(), sqlx::Error> {
    let mut conn = connect_admin(base).await?;
    sqlx::query("SET lock_timeout = '2s'")
        .execute(&mut conn)
        .await?;
    let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    if sqlx::query(&drop).execute(&mut conn).await.is_ok() {
        return Ok(());
    }
    sqlx::query(
        "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
         JOIN pg_class c ON c.oid = l.relation \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND l.granted AND l.pid <> pg_backend_pid()",
    )
    .bind(schema)
    .execute(&mut conn)
    .await?;
    sqlx::query(&drop).execute(&mut conn).await?;
    Ok(())
}

/// Deletes the keys under a test's Redis prefix.
async fn delete_keys(url: &str, prefix: &str) -> redis::RedisResult<()> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    for key in redis_keys(&mut conn, prefix).await? {
        redis::cmd("DEL")
            .arg(&key)
            .query_async::<()>(&mut conn)
            .await?;
    }
    Ok(())
}

/// The keys under `prefix` (SCAN, so a large shared Redis is not blocked).
pub async fn redis_keys(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> redis::RedisResult<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// Schemas older than this are left over from earlier runs.
const LEFTOVER_AFTER_SECS: u64 = 24 * 3600;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A random schema-name part: lower case letters and digits only.
fn schema_token(len: usize) -> String {
    random_token()[..len]
        .to_lowercase()
        .replace(['-', '_'], "x")
}

/// A test's schema: `t_<unix seconds>_<random>`. PostgreSQL keeps no
/// creation time for a schema, so its name carries one for the sweep.
pub fn new_schema_name(created: u64) -> String {
    format!("t_{created}_{}", schema_token(16))
}

/// Whether `name` is a test schema an earlier run left behind.
/// `t_<secs>_<random>` is by its time; the older `t_<20 random>` names
/// carry none, and this run makes none of them, but a checkout of an older
/// revision running its suite at the same time may: those are left alone
/// while any of their files was written in the last day (`recent`).
fn is_leftover(name: &str, now: u64, recent: Option<bool>) -> bool {
    let Some(rest) = name.strip_prefix("t_") else {
        return false;
    };
    let lower_alnum = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    match rest.split_once('_') {
        Some((secs, random)) if lower_alnum(random) => secs
            .parse::<u64>()
            .is_ok_and(|secs| secs + LEFTOVER_AFTER_SECS < now),
        Some(_) => false,
        None => rest.len() == 20 && lower_alnum(rest) && recent != Some(true),
    }
}

/// Drops the test schemas earlier runs left behind (runs killed before
/// their clean-up, or from before it existed); returns their names. Those
/// of this run are at most hours old, so it never drops one a test of this
/// run is using.
pub async fn sweep_leftover_schemas(base: &str) -> Result<Vec<String>, sqlx::Error> {
    let mut conn = connect_admin(base).await?;
    let names = sqlx::query_as::<_, (String,)>(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 't\\_%'",
    )
    .fetch_all(&mut conn)
    .await?;
    // When any file of a schema's tables, indexes or sequences was last
    // written: reading it needs superuser (pg_stat_file); without it, no
    // old-style name counts as a leftover.
    let recent: HashMap<String, Option<bool>> = sqlx::query_as::<_, (String, Option<bool>)>(
        "SELECT n.nspname::text, \
           (SELECT max((pg_stat_file(pg_relation_filepath(c.oid), true)).modification) \
              FROM pg_class c \
             WHERE c.relnamespace = n.oid AND pg_relation_filepath(c.oid) IS NOT NULL) \
           > now() - interval '1 day' \
         FROM pg_namespace n WHERE n.nspname LIKE 't\\_%'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap_or_else(|e| {
        eprintln!("cannot tell when old test schemas were last written: {e}");
        names.iter().map(|(n,)| (n.clone(), Some(true))).collect()
    })
    .into_iter()
    .collect();
    let now = unix_now();
    let mut dropped = Vec::new();
    for (name,) in names {
        if is_leftover(&name, now, recent.get(&name).copied().flatten())
            && drop_schema(base, &name).await.is_ok()
        {
            dropped.push(name);
        }
    }
    Ok(dropped)
}

/// The first PostgreSQL test of a run sweeps; the others go on at once.
static SWEEP: std::sync::Once = std::sync::Once::new();

/// The PostgreSQL server of the postgres-redis tests.
pub fn postgres_base() -> String {
    std::env::var("SWITCHYARD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh database and session namespace on the selected backend. On
/// `postgres-redis` the services must be reachable: the test fails, never
/// skips.
pub async fn isolated() -> Isolated {
    let prefix = format!("test:{}:", &random_token()[..16]);
    match backend() {
        Backend::Embedded => {
            let dir = tempfile::tempdir().expect("temporary directory");
            let path = dir.path().join("switchyard.db");
            Isolated {
                database_url: format!("sqlite://{}", path.display()),
                redis_url: None,
                prefix,
                _dir: Some(dir),
                schema: None,
            }
        }
        Backend::PostgresRedis => {
            let base = postgres_base();
            let redis = std::env::var("SWITCHYARD_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            SWEEP.call_once(|| {
                let base = base.clone();
                on_own_runtime(async move {
                    if let Err(e) = sweep_leftover_schemas(&base).await {
                        eprintln!("sweeping old test schemas: {e}");
                    }
                })
            });
            let schema = new_schema_name(unix_now());
            let mut conn = connect_admin(&base)
                .await
                .expect("PostgreSQL must be reachable for postgres-redis tests");
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&mut conn)
                .await
                .expect("create schema");
            drop(conn);
            let sep = if base.contains('?') { '&' } else { '?' };
            Isolated {
                database_url: format!("{base}{sep}options=-c%20search_path%3D{schema}"),
                redis_url: Some(redis),
                prefix,
                _dir: None,
                schema: Some(Schema { base, name: schema }),
            }
        }
    }
}

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
        api: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        _isolated: isolated,
    }
}

pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let verifier = random_token();
    let challenge = b64url(&sha256(verifier.as_bytes()));
    (verifier, challenge)
}

/// The query parameters of a URL.
pub fn query_of(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .expect("absolute URL")
        .query_pairs()
        .into_owned()
        .collect()
}

pub fn location(headers: &HeaderMap) -> String {
    headers
        .get(LOCATION)
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_string()
}

/// The hidden and visible inputs of the first form on a page.
pub fn form_fields(html: &str) -> (String, HashMap<String, String>) {
    let doc = Html::parse_document(html);
    let form = doc
        .select(&Selector::parse("form").unwrap())
        .next()
        .expect("a form on the page");
    let action = form.value().attr("action").unwrap_or("").to_string();
    let mut fields = HashMap::new();
    for input in form.select(&Selector::parse("input").unwrap()) {
        if let Some(name) = input.value().attr("name") {
            fields.insert(
                name.to_string(),
                input.value().attr("value").unwrap_or("").to_string(),
            );
        }
    }
    (action, fields)
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

    pub async fn add_user(&self, email: &str, password: &str) -> User {
        let hash = self
            .state
            .passwords
            .hash(password.to_string())
            .await
            .unwrap();
        let new = NewUser {
            email: Some(email.into()),
            email_verified: true,
            name: Some("Alice Example".into()),
            ..Default::default()
        };
        self.state
            .db
            .create_user(&new, Some((&hash, ARGON2ID)))
            .await
            .unwrap()
    }

    pub async fn add_client(&self, client_id: &str, public: bool) -> Client {
        let client = Client {
            client_id: client_id.into(),
            name: Some("Example App".into()),
            secret_hash: (!public).then(|| hash_secret(SECRET)),
            public,
            redirect_uris: vec![REDIRECT.into(), "http://127.0.0.1/native".into()],
            post_logout_redirect_uris: vec!["https://app.example.com/bye".into()],
            grant_types: vec![
                switchyard::store::GrantType::AuthorizationCode,
                switchyard::store::GrantType::RefreshToken,
            ],
            web_origins: vec![],
            token_mode: switchyard::store::TokenMode::Gateway,
            source: switchyard::store::ClientSource::Cli,
            created_at: now(),
        };
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
        let params = self
            .code_for(
                &browser(),
                &AuthRequest::new("web", Some(&challenge)),
                "alice@example.com",
            )
            .await;
        let response = self.exchange(&params["code"], Some(&verifier)).await;
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

/// The claims of a JWT, unverified (the tests check what was issued).
pub fn jwt_claims(jwt: &str) -> serde_json::Value {
    jwt_part(jwt, 1)
}

/// The JOSE header of a JWT.
pub fn jwt_header(jwt: &str) -> serde_json::Value {
    jwt_part(jwt, 0)
}

fn jwt_part(jwt: &str, i: usize) -> serde_json::Value {
    let part = jwt.split('.').nth(i).expect("a JWT");
    serde_json::from_slice(&switchyard::crypto::b64url_decode(part).expect("base64url"))
        .expect("JSON")
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
