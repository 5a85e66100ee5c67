//! A database and a session namespace per test, on the backend
//! `SWITCHYARD_TEST_BACKEND` selects: `embedded` (the default: a SQLite file
//! in a temporary directory, the in-process session store) or
//! `postgres-redis` (a fresh PostgreSQL schema and a fresh Redis key prefix
//! on the servers `SWITCHYARD_TEST_DATABASE_URL` and
//! `SWITCHYARD_TEST_REDIS_URL` name). Each is gone when its test ends, and
//! schemas earlier runs left behind are swept.

use std::collections::HashMap;

use crate::random_token;

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

/// Deletes every key under `prefix` (a test's or a bench's own namespace):
/// SCAN, so a large shared Redis is not blocked, and UNLINK, so it frees
/// the memory in the background.
pub async fn delete_keys(url: &str, prefix: &str) -> redis::RedisResult<()> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<()>(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
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
