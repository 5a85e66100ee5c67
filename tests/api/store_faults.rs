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
