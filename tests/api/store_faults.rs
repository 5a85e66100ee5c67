//! The database going away under a running Switchyard: refusing new
//! connections, its backends terminated, a role over its connection limit.
//! Clients get `503 temporarily_unavailable` (or a readable 503 page) with
//! `Retry-After`, never a 500, and the service recovers by itself when the
//! database is back.
//!
//! These need a PostgreSQL server of their own to misbehave: each test makes
//! a database (and a role owning it) for itself, since the schema a test
//! normally gets lives in a database other tests share, which must keep
//! accepting connections. On the embedded backend they return at once.

use reqwest::StatusCode;
use sqlx::Connection;
use switchyard_kit::isolation::{Backend, backend, postgres_base};

use crate::helpers::*;

/// A database and a login role of the test's own on the test server,
/// dropped when the test ends.
struct OwnDatabase {
    base: String,
    name: String,
    role: String,
    /// The role's URL for the app.
    url: String,
}

impl OwnDatabase {
    async fn create() -> Self {
        let base = postgres_base();
        let suffix = &switchyard_kit::random_token()[..12].to_lowercase();
        let suffix: String = suffix.chars().filter(char::is_ascii_alphanumeric).collect();
        let (name, role) = (format!("sy_faults_{suffix}"), format!("sy_faults_{suffix}"));
        let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
        for sql in [
            format!("CREATE ROLE {role} LOGIN"),
            format!("CREATE DATABASE {name} OWNER {role}"),
        ] {
            sqlx::query(&sql).execute(&mut admin).await.unwrap();
        }
        let mut url = url::Url::parse(&base).unwrap();
        url.set_username(&role).unwrap();
        url.set_path(&name);
        url.set_query(None);
        Self {
            base,
            url: url.to_string(),
            name,
            role,
        }
    }

    async fn admin(&self, sql: &str) {
        let mut admin = sqlx::PgConnection::connect(&self.base).await.unwrap();
        sqlx::query(sql).execute(&mut admin).await.unwrap();
    }

    /// Ends every session of the app on the database (SQLSTATE 57P01 at
    /// the app's side).
    async fn terminate_backends(&self) {
        self.admin(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            self.name
        ))
        .await;
    }
}

impl Drop for OwnDatabase {
    fn drop(&mut self) {
        let (base, name, role) = (self.base.clone(), self.name.clone(), self.role.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let Ok(mut admin) = sqlx::PgConnection::connect(&base).await else {
                        return;
                    };
                    for sql in [
                        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                        format!("DROP ROLE IF EXISTS {role}"),
                    ] {
                        if let Err(e) = sqlx::query(&sql).execute(&mut admin).await {
                            eprintln!("{sql}: {e}");
                        }
                    }
                })
        })
        .join();
    }
}

/// Switchyard on a database of its own, with alice and the client `web`.
async fn app_on_own_database() -> Option<(TestApp, OwnDatabase)> {
    if backend() != Backend::PostgresRedis {
        eprintln!("PostgreSQL faults: only on the postgres-redis backend");
        return None;
    }
    let db = OwnDatabase::create().await;
    let mut iso = isolated().await;
    iso.database_url = db.url.clone();
    let app = spawn_app_on(iso, |_| {}).await;
    app.with_alice_and_web().await;
    Some((app, db))
}

/// What a client of the token endpoint and a person at the login page get
/// while the database is not there: 503 in each protocol's shape, with
/// `Retry-After`.
async fn assert_unavailable(app: &TestApp, why: &str, rounds: usize) {
    // The endpoints serve the client from a copy at most RECENT old, so a
    // request just after the outage may still be answered without the
    // database; past that, every one of these requests needs it.
    tokio::time::sleep(switchyard::store::recent::RECENT).await;
    for _ in 0..rounds {
        let r = app
            .token(
                &[
                    ("grant_type", "authorization_code"),
                    ("code", "no-such-code"),
                    ("redirect_uri", REDIRECT),
                ],
                Some(("web", SECRET)),
            )
            .await;
        assert!(
            r.headers().contains_key("retry-after"),
            "{why}: token endpoint without Retry-After ({})",
            r.status()
        );
        assert_oauth_error(
            r,
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
        )
        .await;

        let page = app
            .authorize(&browser(), &AuthRequest::new("web", None))
            .await;
        assert_eq!(
            page.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{why}: the authorization page"
        );
        assert!(page.headers().contains_key("retry-after"), "{why}");
        let text = page.text().await.unwrap();
        assert!(text.contains("temporarily unavailable"), "{why}: {text}");
        assert!(!text.to_lowercase().contains("sqlx"), "{why}: {text}");
    }
}

/// `ALTER DATABASE … ALLOW_CONNECTIONS false` and the app's backends
/// terminated: its pooled connections die (57P01) and new ones are refused
/// (55000). Then the database is back, and so is the service.
#[tokio::test]
async fn a_database_refusing_connections_answers_503_and_recovers() {
    let Some((app, db)) = app_on_own_database().await else {
        return;
    };
    let before = app.tokens_for_alice().await;
    assert!(before["access_token"].is_string());

    db.admin(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS false",
        db.name
    ))
    .await;
    db.terminate_backends().await;
    assert_unavailable(&app, "connections refused", 3).await;

    db.admin(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS true",
        db.name
    ))
    .await;
    let after = app.tokens_for_alice().await;
    assert!(
        after["access_token"].is_string(),
        "recovered without a restart"
    );
}

/// The app's role over its connection limit (53300 too_many_connections):
/// 503, then back when the limit is lifted.
#[tokio::test]
async fn a_role_over_its_connection_limit_answers_503_and_recovers() {
    let Some((app, db)) = app_on_own_database().await else {
        return;
    };
    app.tokens_for_alice().await;

    db.admin(&format!("ALTER ROLE {} CONNECTION LIMIT 0", db.role))
        .await;
    db.terminate_backends().await;
    // The pool retries this one until its acquire timeout (sqlx counts it
    // transient), so a single round.
    assert_unavailable(&app, "connection limit", 1).await;

    db.admin(&format!("ALTER ROLE {} CONNECTION LIMIT -1", db.role))
        .await;
    let after = app.tokens_for_alice().await;
    assert!(
        after["access_token"].is_string(),
        "recovered without a restart"
    );
}

/// A password login of `email` at `app`, step by step: the first answer
/// that is not the flow's next step (its status, and whether it carries
/// `Retry-After`), or the final redirect to the client.
async fn try_login(app: &TestApp, email: &str) -> (StatusCode, bool) {
    let browser = browser();
    let answer = |r: &reqwest::Response| (r.status(), r.headers().contains_key("retry-after"));
    let start = app
        .authorize(&browser, &AuthRequest::new("web", None))
        .await;
    if start.status() != StatusCode::SEE_OTHER {
        return answer(&start);
    }
    let page = browser
        .get(app.url(&location(start.headers())))
        .send()
        .await
        .unwrap();
    if page.status() != StatusCode::OK {
        return answer(&page);
    }
    let (action, mut fields) = form_fields(&page.text().await.unwrap());
    fields.insert("username".into(), email.into());
    fields.insert("password".into(), PASSWORD.into());
    let done = browser
        .post(app.url(&action))
        .form(&fields)
        .send()
        .await
        .unwrap();
    if done.status() == StatusCode::SEE_OTHER {
        assert!(
            location(done.headers()).starts_with(REDIRECT),
            "{email}: back to the client"
        );
    }
    answer(&done)
}

/// Lazy migrations running while every backend of the app is terminated
/// again and again: each login ends in a code (migrated) or a 503 the user
/// can retry, never a 500; no user is left half-migrated (a migrated state
/// without its credential or identity, or a credential on an unmigrated
/// user); and once the database stays, every retry migrates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_while_the_database_drops_connections_end_migrated_or_503() {
    if backend() != Backend::PostgresRedis {
        eprintln!("PostgreSQL faults: only on the postgres-redis backend");
        return;
    }
    let db = OwnDatabase::create().await;
    let url = db.url.clone();
    let t = crate::upstream::spawn_with_upstream(switchyard_kit::fake::Flavor::Auth0, |s| {
        s.database_url = url;
        s.upstream.as_mut().unwrap().connection = Some("Username-Password-Authentication".into());
        s.password.failure_floor_ms = 50;
    })
    .await;
    let users: Vec<(String, String)> = (0..16)
        .map(|i| {
            let sub = switchyard_kit::fake::Flavor::Auth0.sample_sub(1_000 + i);
            let email = format!("faulty{i}@example.com");
            t.fake
                .add_user(switchyard_kit::fake::FakeUser::new(&sub, &email, PASSWORD));
            (sub, email)
        })
        .collect();
    let t = std::sync::Arc::new(t);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let terminator = {
        let (base, name, stop) = (db.base.clone(), db.name.clone(), stop.clone());
        tokio::spawn(async move {
            let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                )
                .bind(&name)
                .execute(&mut admin)
                .await
                .unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(120)).await;
            }
        })
    };
    let mut logins = tokio::task::JoinSet::new();
    for (sub, email) in users.clone() {
        let t = t.clone();
        logins.spawn(async move {
            let (status, retry_after) = try_login(&t.app, &email).await;
            (sub, status, retry_after)
        });
    }
    let mut unavailable = Vec::new();
    while let Some(done) = logins.join_next().await {
        let (sub, status, retry_after) = done.unwrap();
        match status {
            StatusCode::SEE_OTHER => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(retry_after, "{sub}: a 503 says when to retry");
                unavailable.push(sub);
            }
            other => panic!("{sub}: {other}: a login answers a code or 503, nothing else"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    terminator.await.unwrap();
    eprintln!(
        "{} of {} logins answered 503 while connections were dropped",
        unavailable.len(),
        users.len()
    );

    let half_migrated = |db: &OwnDatabase| {
        let url = db.url.clone();
        async move {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM users u WHERE \
                 (u.state = 'migrated' AND (NOT EXISTS (SELECT 1 FROM credentials c WHERE c.user_id = u.id) \
                   OR NOT EXISTS (SELECT 1 FROM identities i WHERE i.user_id = u.id))) \
                 OR (u.state <> 'migrated' AND EXISTS (SELECT 1 FROM credentials c WHERE c.user_id = u.id))",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            n
        }
    };
    assert_eq!(half_migrated(&db).await, 0, "no user half-migrated");

    // The database stays now: every user migrates on their next try.
    for (sub, email) in &users {
        let r = crate::migration::password_login(&t, "web", email, PASSWORD).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{sub}");
        let user = t.app.state.db.get_user(sub).await.unwrap().unwrap();
        assert_eq!(user.state, switchyard::store::UserState::Migrated, "{sub}");
    }
    assert_eq!(half_migrated(&db).await, 0);
}

/// `switchyard serve` as a process on a port of its own, killed by the test.
struct Serve {
    child: std::process::Child,
    base: String,
}

impl Serve {
    async fn start(config: &std::path::Path, port: u16) -> Self {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("--config")
            .arg(config)
            .arg("serve")
            .env("SWITCHYARD_LISTEN", format!("127.0.0.1:{port}"))
            .env("SWITCHYARD_LOG", "warn")
            .env_remove("SWITCHYARD_DATABASE_URL")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the switchyard binary runs");
        // Killed and reaped by `Drop` whatever happens next.
        let serve = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{}/readyz", serve.base)).send().await
                && r.status().is_success()
            {
                return serve;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("serve never became ready");
    }

    /// `kill -9`: nothing of the process's own clean-up runs.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nobody listens on now, for a process the test starts.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A password login of `email` at the `serve` process at `base`: the
/// status of its last step, or `None` when the process went away under it.
async fn login_at(base: &str, email: &str) -> Option<StatusCode> {
    let browser = browser();
    let start = browser
        .get(format!("{base}/authorize"))
        .query(&AuthRequest::new("web", None).pairs())
        .send()
        .await
        .ok()?;
    if start.status() != StatusCode::SEE_OTHER {
        return Some(start.status());
    }
    let page = browser
        .get(format!("{base}{}", location(start.headers())))
        .send()
        .await
        .ok()?;
    let (action, mut fields) = form_fields(&page.text().await.ok()?);
    fields.insert("username".into(), email.into());
    fields.insert("password".into(), PASSWORD.into());
    let done = browser
        .post(format!("{base}{action}"))
        .form(&fields)
        .send()
        .await
        .ok()?;
    Some(done.status())
}

/// Users in a state no migration leaves behind: migrated without their
/// credential or identity, or holding a credential while not migrated.
async fn half_migrated_users(database_url: &str) -> Vec<String> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(database_url).await.unwrap();
    let ids = sqlx::query_scalar(
        "SELECT u.id FROM users u WHERE \
         (u.state = 'migrated' AND (NOT EXISTS (SELECT 1 FROM credentials c WHERE c.user_id = u.id) \
           OR NOT EXISTS (SELECT 1 FROM identities i WHERE i.user_id = u.id))) \
         OR (u.state <> 'migrated' AND EXISTS (SELECT 1 FROM credentials c WHERE c.user_id = u.id))",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    ids
}

/// `kill -9` of `serve` at a random point of concurrent lazy migrations,
/// twice over: no user is left half-migrated, and after a restart every
/// user migrates on their next login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_during_lazy_migrations_leaves_no_user_half_migrated() {
    use switchyard_kit::fake::{FakeUpstream, FakeUser, Flavor};
    let iso = isolated().await;
    let fake = FakeUpstream::start(Flavor::Auth0).await;
    fake.add_client(
        crate::upstream::UPSTREAM_CLIENT,
        Some(crate::upstream::UPSTREAM_SECRET),
        &[],
    );
    let emails: Vec<String> = (0..12)
        .map(|i| {
            let email = format!("killed{i}@example.com");
            fake.add_user(FakeUser::new(
                &Flavor::Auth0.sample_sub(2_000 + i),
                &email,
                PASSWORD,
            ));
            email
        })
        .collect();
    let port = free_port();
    let sessions = match &iso.redis_url {
        Some(url) => format!(
            "redis_url = \"{url}\"\nsession_prefix = \"{}\"\n",
            iso.prefix
        ),
        None => String::new(),
    };
    let config = format!(
        "issuer = \"http://127.0.0.1:{port}/\"\n\
         database_url = \"{db}\"\n\
         {sessions}\
         [password]\n\
         failure_floor_ms = 50\n\
         [upstream]\n\
         provider = \"auth0\"\n\
         issuer = \"{issuer}\"\n\
         client_id = \"{client}\"\n\
         client_secret_env = \"SWITCHYARD_TEST_UPSTREAM_SECRET\"\n\
         token_keys_env = \"SWITCHYARD_TEST_TOKEN_KEYS\"\n\
         connection = \"Username-Password-Authentication\"\n",
        db = iso.database_url,
        issuer = fake.issuer(),
        client = crate::upstream::UPSTREAM_CLIENT,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, config).unwrap();
    let added = run_cli(
        &iso,
        &[
            "clients",
            "add",
            "--id",
            "web",
            "--secret",
            SECRET,
            "--redirect-uri",
            REDIRECT,
        ],
        None,
        &[],
    );
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );

    let seed = switchyard_kit::random_token();
    for (round, b) in seed.bytes().take(2).enumerate() {
        let mut serve = Serve::start(&path, port).await;
        let mut logins = tokio::task::JoinSet::new();
        for email in emails.clone() {
            let base = serve.base.clone();
            logins.spawn(async move { login_at(&base, &email).await });
        }
        // Somewhere in the hashing and commits of the migrations.
        let delay = 50 + u64::from(b) * 2;
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        serve.kill();
        while let Some(status) = logins.join_next().await {
            if let Some(status) = status.unwrap() {
                assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "round {round}");
            }
        }
        let half = half_migrated_users(&iso.database_url).await;
        assert!(
            half.is_empty(),
            "round {round}, killed after {delay} ms: {half:?}"
        );
        eprintln!(
            "round {round}: killed after {delay} ms with {} users migrated",
            migrated_users(&iso.database_url).await
        );
    }

    let serve = Serve::start(&path, port).await;
    for email in &emails {
        assert_eq!(
            login_at(&serve.base, email).await,
            Some(StatusCode::SEE_OTHER),
            "{email} migrates after the restart"
        );
    }
    assert!(half_migrated_users(&iso.database_url).await.is_empty());
    assert_eq!(migrated_users(&iso.database_url).await, emails.len() as i64);
}

async fn migrated_users(database_url: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(database_url).await.unwrap();
    let n = sqlx::query_scalar("SELECT count(*) FROM users WHERE state = 'migrated'")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// A backfill while every backend of the database is terminated again and
/// again (the database going away mid-page): whatever the run does, a
/// resume once the database stays ends with every user written once,
/// whole pages only, and `verify` clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_while_the_database_drops_connections_resumes_to_a_clean_copy() {
    if backend() != Backend::PostgresRedis {
        eprintln!("PostgreSQL faults: only on the postgres-redis backend");
        return;
    }
    let db = OwnDatabase::create().await;
    let mut iso = isolated().await;
    iso.database_url = db.url.clone();
    let op = crate::backfill::Operator::on(
        iso,
        switchyard_kit::fake::FakeUpstream::start(switchyard_kit::fake::Flavor::Keycloak).await,
    );
    op.fake.seed_users(1_000);

    let child = op.spawn(&["backfill", "--max-rate", "10"]);
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        db.terminate_backends().await;
    }
    let run = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&run.stderr);
    assert!(
        !out.contains("panicked"),
        "a lost database is an error, not a crash: {out}"
    );
    let status = op.json(&["status"]);
    let users = status["users"]["total"].as_u64().unwrap();
    eprintln!(
        "the run under faults: {}, {users} users, job {}",
        run.status, status["jobs"][0]["job"]["state"]
    );
    assert_eq!(users % 100, 0, "whole pages only: {status:#}");
    match status["jobs"][0]["job"]["state"].as_str() {
        Some("done") => {}
        None => drop(op.json(&["backfill"])),
        Some(_) => drop(op.json(&["backfill", "--resume"])),
    }
    let status = op.json(&["status"]);
    assert_eq!(status["users"]["total"], 1_000, "{status:#}");
    assert_eq!(status["jobs"][0]["job"]["state"], "done");
    assert!(op.run(&["verify"], &[]).status.success());
}
