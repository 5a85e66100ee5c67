//! How close `switchyard backfill` runs to an upstream's rate limit, without
//! running into it.
//!
//! The fake Auth0 of the test suite (the kit's `fake` module, `tests/kit`)
//! limits its Management API with a token bucket of `B` requests refilled
//! at `R` a second, and answers `x-ratelimit-{limit,remaining,reset}` on
//! every response and 429 with `Retry-After` over the limit, as Auth0 does.
//! An incremental backfill (`--since`, so the users are paged through the
//! search API, 100 a request, in `updated_at` windows under the 1,000-result
//! cap) then copies `N` users into a SQLite file, through the same code as
//! the CLI.
//!
//! Reported: requests the upstream served per second over the run (the
//! fake's count, so nothing the client believes is trusted), against `R`
//! and against the most the bucket allowed (`R` plus the initial burst
//! spread over the run), and the share of responses that were 429.
//! Targets: ≥ 95 % of `R`, ≤ 1 % 429.
//!
//! Run with `cargo bench --bench backfill_rate`. `SWITCHYARD_BENCH_RATE`
//! (default 20), `SWITCHYARD_BENCH_BURST` (default 10) and
//! `SWITCHYARD_BENCH_USERS` (default 50,000) change the setting.

use std::sync::Arc;
use std::time::Instant;

use switchyard::config::{Settings, UpstreamSettings};
use switchyard::jobs::backfill::{BackfillOptions, run};
use switchyard::store::Database;
use switchyard::store::sql::SqlStore;

use switchyard_kit::fake::{FakeUpstream, Flavor};

const CLIENT: &str = "switchyard";
const SECRET: &str = "switchyard-at-the-fake-upstream-0123456789";

// The allocator of the `switchyard` binary (src/main.rs), so the figures are
// the CLI's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rate: f64 = env_or("SWITCHYARD_BENCH_RATE", 20.0);
    let burst: u32 = env_or("SWITCHYARD_BENCH_BURST", 10);
    let users: usize = env_or("SWITCHYARD_BENCH_USERS", 50_000);

    let fake = FakeUpstream::start(Flavor::Auth0).await;
    fake.add_client(CLIENT, Some(SECRET), &[]);
    fake.seed_users(users);
    fake.set_management_rate_limit(rate, burst);

    let dir = tempfile::tempdir()?;
    let mut upstream = UpstreamSettings::for_provider("auth0");
    upstream.issuer = Some(fake.issuer());
    upstream.client_id = CLIENT.into();
    // Set for cargo's processes by .cargo/config.toml.
    upstream.client_secret_env = Some("SWITCHYARD_TEST_UPSTREAM_SECRET".into());
    upstream.token_keys_env = "SWITCHYARD_TEST_TOKEN_KEYS".into();
    upstream.management.base = Some(fake.url("/api/v2/"));
    upstream.management.audience = Some(fake.management_audience());
    let settings = Settings {
        database_url: format!("sqlite://{}", dir.path().join("bench.db").display()),
        upstream: Some(upstream),
        ..Settings::default()
    };
    let db: Arc<dyn Database> = Arc::new(SqlStore::connect(&settings.database_url).await?);
    let since = (chrono::Utc::now() - chrono::Duration::days(3 * 365))
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    println!(
        "backfill rate benchmark: fake Auth0, token bucket of {burst} refilled at {rate}/s, {users} users, --since paging"
    );
    let started = Instant::now();
    let (report, (requests, throttled, retried)) = run(
        db,
        &settings,
        &BackfillOptions {
            since: Some(since),
            quiet: true,
            ..BackfillOptions::default()
        },
    )
    .await?;
    let took = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        report.counters.created as usize == users,
        "backfill created {} of {users}",
        report.counters.created
    );
    let calls = fake.calls("users") as f64;
    let refused = fake.management_429s() as f64;
    let served = calls - refused;
    let achieved = served / took;
    let ceiling = (rate * took + burst as f64) / took;
    println!(
        "{users} users in {took:.1} s: {served:.0} search requests served, {refused:.0} answered 429 \
         (client saw {requests} requests, {throttled} throttled, {retried} retried)"
    );
    println!(
        "summary: {achieved:.2} requests/s = {:.1} % of R (target ≥ 95 %: {}), {:.1} % of the bucket's ceiling \
         {ceiling:.2}/s; 429s {:.2} % of responses (target ≤ 1 %: {})",
        100.0 * achieved / rate,
        if achieved >= 0.95 * rate {
            "met"
        } else {
            "missed"
        },
        100.0 * achieved / ceiling,
        100.0 * refused / calls.max(1.0),
        if refused <= 0.01 * calls {
            "met"
        } else {
            "missed"
        },
    );
    Ok(())
}
