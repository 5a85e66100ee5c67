//! The test harness cleans up after itself: a test's database (a SQLite
//! file's directory, or a PostgreSQL schema and its Redis keys) is gone
//! when it ends, and schemas earlier runs left behind are swept.

use crate::helpers::*;

async fn schema_exists(name: &str) -> bool {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&postgres_base()).await.unwrap();
    sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

async fn create_schema(name: &str, with_table: bool) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&postgres_base()).await.unwrap();
    sqlx::query(&format!("CREATE SCHEMA {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    if with_table {
        sqlx::query(&format!("CREATE TABLE {name}.t (id int PRIMARY KEY)"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

/// A schema named as the suite named them before names carried a time.
fn legacy_name() -> String {
    let random = switchyard::crypto::random_token()[..20]
        .to_lowercase()
        .replace(['-', '_'], "x");
    format!("t_{random}")
}

async fn keys_under(prefix: &str) -> usize {
    let url = std::env::var("SWITCHYARD_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis_keys(&mut conn, prefix).await.unwrap().len()
}

#[tokio::test]
async fn a_tests_database_is_gone_when_the_test_ends() {
    let iso = isolated().await;
    match backend() {
        Backend::Embedded => {
            let file = iso.database_url.strip_prefix("sqlite://").unwrap();
            let dir = std::path::Path::new(file).parent().unwrap().to_path_buf();
            let app = spawn_app_on(iso, |_| {}).await;
            app.with_alice_and_web().await;
            assert!(dir.exists());
            drop(app);
            assert!(!dir.exists(), "{} is removed", dir.display());
        }
        Backend::PostgresRedis => {
            let schema = iso.schema().expect("a schema of its own").to_string();
            let prefix = iso.prefix.clone();
            // An app on it, with a signed-in session: its pool and its
            // session keys are still there when the test ends.
            let app = spawn_app_on(iso, |_| {}).await;
            app.with_alice_and_web().await;
            app.tokens_for_alice().await;
            let second = app._isolated.same_database();
            assert!(schema_exists(&schema).await);
            assert!(keys_under(&prefix).await > 0, "the login left session keys");

            drop(second);
            assert!(
                schema_exists(&schema).await,
                "a second handle drops nothing"
            );
            drop(app);
            assert!(!schema_exists(&schema).await, "{schema} is dropped");
            assert_eq!(keys_under(&prefix).await, 0, "{prefix}* is deleted");
        }
    }
}

#[tokio::test]
async fn the_sweep_drops_schemas_named_older_than_a_day_and_no_newer_one() {
    if backend() != Backend::PostgresRedis {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let old = new_schema_name(now - 2 * 24 * 3600);
    let hours_old = new_schema_name(now - 20 * 3600);
    // Old-style names carry no time: an empty one is a leftover, one whose
    // tables were just written may be a running suite's.
    let (legacy_empty, legacy_in_use) = (legacy_name(), legacy_name());
    create_schema(&old, true).await;
    create_schema(&hours_old, true).await;
    create_schema(&legacy_empty, false).await;
    create_schema(&legacy_in_use, true).await;
    // A test of this run, running now.
    let running = isolated().await;

    let dropped = sweep_leftover_schemas(&postgres_base()).await.unwrap();
    assert!(dropped.contains(&old), "{dropped:?}");
    assert!(dropped.contains(&legacy_empty), "{dropped:?}");
    assert!(!schema_exists(&old).await);
    assert!(!schema_exists(&legacy_empty).await);
    for kept in [
        &hours_old,
        &legacy_in_use,
        &running.schema().unwrap().to_string(),
    ] {
        assert!(schema_exists(kept).await, "{kept} is kept");
    }

    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&postgres_base()).await.unwrap();
    for name in [&hours_old, &legacy_in_use] {
        sqlx::query(&format!("DROP SCHEMA {name} CASCADE"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}
