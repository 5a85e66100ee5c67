//! The overview's cost on a large migration: `GET /admin/api/v1/migration`
//! and `GET /admin` against PostgreSQL holding 1,000,000 users and
//! 300,000 login events.
//!
//! The users are spread as a migration midway looks: 5 % local, 40 %
//! migrated (over the last 90 days), 40 % pending, 15 % shadow, 0.5 %
//! blocked, a third of those left active within 30 days; the events over
//! the last 30 days across five clients and every route, one in ten a
//! failure. Both are written by `INSERT … SELECT generate_series` in the
//! database, then `ANALYZE`d. The server is the real one (`Application`,
//! with its 15 s gauge refresh running beside the requests), the operator
//! a signed-in admin session.
//!
//! Reported: the cost of one reading of the figures from the database
//! (uncached, `read_figures`, p50 and max of a few), then p50 and p95 of
//! each page over sequential requests after a warm-up, as operators see
//! them: a reading is reused for 15 s and then read again in the
//! background (src/admin/migration.rs), so a request never waits for it
//! after the first. Targets: API p50 ≤ 200 ms, page p50 ≤ 300 ms.
//!
//! Then the steering reads on the same store: a user search, a user's
//! page, and the cutover preview.
//!
//! Run with `cargo bench --bench admin_overview`. PostgreSQL comes from
//! `SWITCHYARD_BENCH_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), in a schema of its own
//! dropped at the end. `SWITCHYARD_BENCH_USERS` (default 1,000,000),
//! `SWITCHYARD_BENCH_EVENTS` (default 300,000) and
//! `SWITCHYARD_BENCH_SAMPLES` (default 40) change the setting.

use std::time::{Duration, Instant};

use anyhow::Context;
use switchyard::admin::access::AdminSession;
use switchyard::config::Settings;
use switchyard::crypto::random_token;
use switchyard::startup::Application;
use switchyard::store::sql::SqlStore;
use switchyard::store::{NewUser, Profile, SessionStoreExt, now};
use switchyard_kit::stats::{ms, percentile};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SCHEMA: &str = "bench_admin_overview";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn admin(base: &str, sql: &str) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(base)
        .await
        .context("PostgreSQL must be reachable for this benchmark")?;
    sqlx::query(sql).execute(&pool).await?;
    pool.close().await;
    Ok(())
}

async fn seed(store: &SqlStore, users: u64, events: u64, at: i64) -> anyhow::Result<()> {
    const DAY: i64 = 86_400;
    sqlx::query(&format!(
        "INSERT INTO users (id, email, email_normalized, state, blocked, migrated_at, last_login_at, \
           upstream_last_login_at, created_at, updated_at) \
         SELECT 'u' || g, 'user' || g || '@example.com', 'user' || g || '@example.com', \
           CASE WHEN g % 100 < 5 THEN 'local' WHEN g % 100 < 45 THEN 'migrated' \
                WHEN g % 100 < 85 THEN 'pending' ELSE 'shadow' END, \
           CASE WHEN g % 200 = 0 THEN 1 ELSE 0 END, \
           CASE WHEN g % 100 >= 5 AND g % 100 < 45 THEN {at} - (g * 7919) % (90 * {DAY}) END, \
           CASE WHEN g % 3 = 0 THEN {at} - (g * 104729) % (60 * {DAY}) END, \
           CASE WHEN g % 5 = 0 THEN {at} - (g * 15485863) % (120 * {DAY}) END, \
           {at} - 200 * {DAY}, {at} - 200 * {DAY} \
         FROM generate_series(1::bigint, {users}) AS g"
    ))
    .execute(store.pool())
    .await?;
    sqlx::query(&format!(
        "INSERT INTO audit_events (at, kind, user_id, client_id, ip, detail) \
         SELECT {at} - (g * 7919) % (30 * {DAY}), \
           CASE WHEN g % 10 = 0 THEN 'login_failed' WHEN g % 10 = 1 THEN 'refresh_token_adopted' ELSE 'login' END, \
           CASE WHEN g % 10 = 0 THEN NULL ELSE 'u' || ((g * 31) % {users} + 1) END, \
           'client-' || (g % 5), '127.0.0.1', \
           '{{\"route\":\"' || (CASE WHEN g % 10 = 1 THEN 'adopted_refresh' \
                WHEN g % 4 = 0 THEN 'local' WHEN g % 4 = 1 THEN 'upstream_password' \
                ELSE 'upstream_redirect' END) || \
           '\",\"result\":\"' || (CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'ok' END) || '\"}}' \
         FROM generate_series(1::bigint, {events}) AS g"
    ))
    .execute(store.pool())
    .await?;
    sqlx::query("ANALYZE").execute(store.pool()).await?;
    Ok(())
}

async fn sample(
    http: &reqwest::Client,
    url: &str,
    cookie: &str,
    warmup: usize,
    n: usize,
) -> anyhow::Result<(f64, f64, usize)> {
    let mut times = Vec::with_capacity(n);
    let mut bytes = 0;
    for i in 0..warmup + n {
        let started = Instant::now();
        let response = http.get(url).header("cookie", cookie).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        bytes = response.bytes().await?.len();
        if i >= warmup {
            times.push(started.elapsed());
        }
    }
    times.sort();
    Ok((
        ms(percentile(&times, 0.50)),
        ms(percentile(&times, 0.95)),
        bytes,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base = std::env::var("SWITCHYARD_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let users: u64 = env_or("SWITCHYARD_BENCH_USERS", 1_000_000);
    let events: u64 = env_or("SWITCHYARD_BENCH_EVENTS", 300_000);
    let samples: usize = env_or("SWITCHYARD_BENCH_SAMPLES", 40);

    admin(&base, &format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")).await?;
    admin(&base, &format!("CREATE SCHEMA {SCHEMA}")).await?;
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{SCHEMA}");

    println!("admin overview benchmark: {users} users, {events} login events, PostgreSQL ({base})");
    let store = SqlStore::connect(&url).await?;
    let started = Instant::now();
    seed(&store, users, events, now()).await?;
    println!("seeded in {:.1} s", started.elapsed().as_secs_f64());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let settings = Settings {
        issuer: format!("http://127.0.0.1:{port}/"),
        database_url: url.clone(),
        ..Settings::default()
    };
    let app = Application::build_with_listener(settings, listener).await?;
    let state = app.state();
    tokio::spawn(app.run_until_stopped(std::future::pending()));

    let operator = state
        .db
        .create_user(
            &NewUser {
                id: None,
                profile: Profile {
                    email: Some("ops@example.com".into()),
                    ..Profile::default()
                },
            },
            None,
        )
        .await?;
    state.db.grant_operator(&operator.id, now()).await?;
    let value = random_token();
    let session = AdminSession {
        user_id: operator.id.clone(),
        csrf: random_token(),
        created_at: now(),
    };
    state
        .sessions
        .put_json(
            &AdminSession::key(&value),
            &session,
            Duration::from_secs(3600),
        )
        .await?;
    let cookie = format!("{}={value}", AdminSession::cookie_name(&state));

    let mut cold = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        switchyard::admin::migration::read_figures(&state)
            .await
            .map_err(|p| anyhow::anyhow!("reading the figures: {}", p.detail))?;
        cold.push(started.elapsed());
    }
    cold.sort();
    println!(
        "one reading of the figures from the database (uncached, 5 runs): p50 {:.1} ms, max {:.1} ms",
        ms(percentile(&cold, 0.5)),
        ms(percentile(&cold, 1.0))
    );

    let http = reqwest::Client::new();
    let origin = format!("http://127.0.0.1:{port}");
    let (api50, api95, api_bytes) = sample(
        &http,
        &format!("{origin}/admin/api/v1/migration"),
        &cookie,
        3,
        samples,
    )
    .await?;
    println!(
        "GET /admin/api/v1/migration: p50 {api50:.1} ms, p95 {api95:.1} ms ({api_bytes} bytes; target p50 ≤ 200 ms: {})",
        if api50 <= 200.0 { "met" } else { "missed" }
    );
    let (page50, page95, page_bytes) =
        sample(&http, &format!("{origin}/admin"), &cookie, 3, samples).await?;
    println!(
        "GET /admin: p50 {page50:.1} ms, p95 {page95:.1} ms ({page_bytes} bytes; target p50 ≤ 300 ms: {})",
        if page50 <= 300.0 { "met" } else { "missed" }
    );

    // The steering reads on the same store: a search (an email prefix,
    // an index range), a user's page (the user, identities, recent logins
    // by the audit trail's index by user) and the cutover preview (one
    // pass deciding every user's route under the rules now and proposed).
    let (search50, search95, _) = sample(
        &http,
        &format!("{origin}/admin/api/v1/users?q=user12345"),
        &cookie,
        3,
        samples,
    )
    .await?;
    println!("GET /admin/api/v1/users?q=: p50 {search50:.1} ms, p95 {search95:.1} ms");
    let (user50, user95, _) = sample(
        &http,
        &format!("{origin}/admin/api/v1/users/u12345"),
        &cookie,
        3,
        samples,
    )
    .await?;
    println!("GET /admin/api/v1/users/{{id}}: p50 {user50:.1} ms, p95 {user95:.1} ms");
    let mut previews = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let response = http
            .post(format!("{origin}/admin/api/v1/cutover/preview"))
            .header("cookie", &cookie)
            .header(switchyard::admin::access::CSRF_HEADER, &session.csrf)
            .json(&serde_json::json!({ "phase": "local_only" }))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "preview: {}",
            response.status()
        );
        response.bytes().await?;
        previews.push(started.elapsed());
    }
    previews.sort();
    println!(
        "POST /admin/api/v1/cutover/preview ({users} users decided twice, 3 runs): p50 {:.0} ms",
        ms(percentile(&previews, 0.5))
    );

    store.pool().close().await;
    admin(&base, &format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")).await?;
    Ok(())
}
