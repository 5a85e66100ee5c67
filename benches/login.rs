//! Password logins and the argon2id pool, in one run.
//!
//! 1. Raw argon2id: verifications per second of a stored hash at the default
//!    `PasswordSettings` (m = 19456 KiB, t = 2, p = 1), straight from the
//!    `argon2` crate, on as many OS threads as the hashing pool has permits,
//!    measured just before and just after (2) and averaged. A password login
//!    verifies exactly one such hash, so this is the ceiling of local
//!    logins. The same verifications through the app's `Passwords` (its
//!    semaphore and blocking threads, no HTTP) are shown next to it.
//! 2. Local password logins per second through HTTP: Switchyard in-process
//!    (SQLite in a temporary directory, the in-process session store, no
//!    upstream), each login a fresh browser doing `GET /authorize`,
//!    `GET /login`, `POST /login` with username and password in one form,
//!    and counted when it gets its 303 back to the client with a code (the
//!    code is not exchanged). Enough logins in flight to keep every permit
//!    busy, for one window. Target: ≥ 90 % of (1). Reported with it: the
//!    non-hash CPU per login, the server's CPU a login less the argon2id
//!    CPU of one `Passwords::verify` measured alone.
//! 3. Refresh-token grant latency while the same logins go on saturating
//!    the pool for a second window, against the same grants on the idle app
//!    a moment earlier. A light, paced probe: a few rotation chains, each
//!    presenting the refresh token the previous grant returned. Target:
//!    p99 ≤ 20 ms under load. The probe's grants sign tokens on the cores
//!    the logins use, so (2) is measured in the window before it starts;
//!    the logins of the second window are shown too.
//!
//!    (1) to (3) run once with the default pool (one permit per core) and
//!    once with a single permit, which leaves a core to the async runtime:
//!    the trade-off an operator tunes with `password.hashing_threads`. Each
//!    block also splits the CPU a login costs (argon2id, the rest of the
//!    server, the load generator) and counts page faults, to show
//!    where the time goes when a target is missed. The load generator runs
//!    on a runtime of its own so its threads can be told apart.
//! 4. First-login latency: Switchyard in front of the fake Auth0 of the test
//!    suite (password-realm grant), never-seen users logging in once each,
//!    one at a time, through the same password form; each is migrated. The
//!    phases (upstream verify, profile fetch, hash, commit) are the fields of
//!    the product's own "user migrated" event, recorded by a tracing layer
//!    installed here, so they time the real code path; the event carries
//!    whole milliseconds, so the same four steps are also called directly
//!    for as many other never-seen users and timed to the microsecond.
//!
//! Run with `cargo bench --bench login` (cargo sets the secrets the upstream
//! settings name from `.cargo/config.toml`). `SWITCHYARD_BENCH_SECS` sets
//! the measured login window (default 10 s), `SWITCHYARD_BENCH_IN_FLIGHT`
//! the concurrent logins (default 12) and `SWITCHYARD_BENCH_FIRST_LOGINS`
//! the migrated users (default 50). The exit status is non-zero when a login
//! or a grant fails; a missed target is reported in the summary, not turned
//! into a failure, because figures on a shared machine are noisy. Each block
//! says how much of the cores other processes took while it ran.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use reqwest::StatusCode;
use reqwest::header::COOKIE;
use serde::Deserialize;
use switchyard::config::{ClientSettings, PasswordSettings, Settings, UpstreamSettings};
use switchyard::crypto::hash_secret;
use switchyard::password::{ARGON2ID, Verified};
use switchyard::startup::Application;
use switchyard::state::AppState;
use switchyard::store::{ClientSource, Migration, NewUser};
use switchyard::upstream::profile;
use tokio::runtime::Handle;
use tokio::time::MissedTickBehavior;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

use switchyard_kit::cpu::{cpu_of, machine_cpu, process_cpu};
use switchyard_kit::fake::{AUTH0_DEFAULT_REALM, FakeUpstream, FakeUser, Flavor};
use switchyard_kit::http::{cookies_of, hidden_input, no_redirects, redirect_target};
use switchyard_kit::stats::{ms, percentile};

const CLIENT_ID: &str = "web";
const SECRET: &str = "web-client-secret-0123456789abcdef";
const REDIRECT: &str = "https://app.example.com/callback";
const SCOPE: &str = "openid profile email";
const PASSWORD: &str = "correct horse battery staple";
/// Switchyard's own client at the fake, as in tests/api/upstream.rs.
const UPSTREAM_CLIENT: &str = "switchyard";
const UPSTREAM_SECRET_ENV: &str = "SWITCHYARD_TEST_UPSTREAM_SECRET";
const TOKEN_KEYS_ENV: &str = "SWITCHYARD_TEST_TOKEN_KEYS";
/// Where the "user migrated" event comes from.
const LAZY_TARGET: &str = "switchyard::migrate::lazy";

/// Distinct accounts, so per-user rows (last login, throttle counters) are
/// not one hot spot the way a single shared account would be.
const LOCAL_USERS: usize = 64;
const REFRESH_CHAINS: usize = 4;
/// Per chain. Paced rather than back to back: a refresh signs two RS256
/// tokens, and an unpaced stream would be a second load competing with the
/// logins instead of a probe of what a client sees.
const REFRESH_INTERVAL: Duration = Duration::from_millis(100);
const RAW_SECS: Duration = Duration::from_secs(3);
const BASELINE_SECS: Duration = Duration::from_secs(4);
/// Excluded from every figure: connection set-up, the first SQLite page
/// reads and allocator growth are start-up costs, and the pool needs a
/// moment to fill.
const WARM_UP: Duration = Duration::from_secs(1);
/// First logins not counted: discovery, the JWKS and the connection to the
/// upstream are fetched once, on the first one.
const FIRST_LOGIN_WARM_UP: usize = 3;
/// Error messages printed in full; the rest are only counted.
const ERRORS_SHOWN: usize = 5;
/// Share of the cores other processes may take before the figures are
/// flagged as disturbed.
const NOISE_PERCENT: f64 = 5.0;

const TARGET_LOGIN_RATIO: f64 = 90.0;
const TARGET_REFRESH_P99_MS: f64 = 20.0;

/// The load generator's runtime threads, told apart from the server's in
/// the per-thread CPU times.
const CLIENT_THREAD: &str = "bench-client";

fn main() -> ExitCode {
    let phases = install_tracing();
    // Two runtimes: the server's, as `#[tokio::main]` builds it (one worker
    // per core), and the load generator's, so that the CPU the clients spend
    // can be told apart from what the server spends.
    let runtimes = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .and_then(|server| {
            let client = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name(CLIENT_THREAD)
                .enable_all()
                .build()?;
            Ok((server, client))
        });
    let (server, client) = match runtimes {
        Ok(r) => r,
        Err(e) => {
            eprintln!("login bench: building the runtimes: {e}");
            return ExitCode::FAILURE;
        }
    };
    match server.block_on(run(phases, client.handle().clone())) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("login bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Config {
    window: Duration,
    in_flight: usize,
    first_logins: usize,
    cores: usize,
}

async fn run(phases: PhaseLog, client: Handle) -> anyhow::Result<bool> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let config = Config {
        window: Duration::from_secs(env_number("SWITCHYARD_BENCH_SECS", 10)?),
        in_flight: env_number("SWITCHYARD_BENCH_IN_FLIGHT", 12)? as usize,
        first_logins: env_number("SWITCHYARD_BENCH_FIRST_LOGINS", 50)? as usize,
        cores,
    };
    ensure!(
        config.in_flight > 0 && config.first_logins > 0,
        "the in-flight logins and the first logins must be positive"
    );
    let p = PasswordSettings::default();
    println!(
        "login bench: argon2id m={} KiB t={} p={}, {} cores, {} logins in flight for {} s \
         (after {} s warm-up), {} refresh chains every {} ms\n",
        p.memory_kib,
        p.iterations,
        p.parallelism,
        cores,
        config.in_flight,
        config.window.as_secs(),
        WARM_UP.as_secs(),
        REFRESH_CHAINS,
        REFRESH_INTERVAL.as_millis(),
    );

    // The default first; one permit only where it differs from the default.
    let mut pools = vec![None];
    if cores > 1 {
        pools.push(Some(1));
    }
    let mut runs = Vec::new();
    for pool in pools {
        let run = local_logins(&config, &client, pool).await?;
        run.print(&config);
        runs.push(run);
    }
    let first = first_logins(&config, &phases).await?;
    first.print();

    summary(&runs, &first);
    let clean = runs.iter().all(|r| r.errors.is_empty()) && first.errors.is_empty();
    Ok(clean)
}

fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

// ---------------------------------------------------------------------------
// The app

struct App {
    base: String,
    state: AppState,
    _dir: tempfile::TempDir,
}

/// The app as the integration tests start it (tests/api/helpers.rs): SQLite
/// in a temporary directory, the in-process session store.
async fn spawn_app(configure: impl FnOnce(&mut Settings)) -> anyhow::Result<App> {
    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let mut settings = Settings {
        issuer: format!("http://127.0.0.1:{port}/"),
        database_url: format!("sqlite://{}", dir.path().join("switchyard.db").display()),
        redis_url: None,
        session_prefix: "bench:".into(),
        ..Settings::default()
    };
    configure(&mut settings);
    let app = Application::build_with_listener(settings, listener)
        .await
        .context("the application builds")?;
    let state = app.state();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    Ok(App {
        base: format!("http://127.0.0.1:{port}"),
        state,
        _dir: dir,
    })
}

/// A confidential client allowed the code and refresh grants.
async fn add_client(app: &App) -> anyhow::Result<()> {
    let client = ClientSettings {
        client_id: CLIENT_ID.into(),
        name: Some("Login bench".into()),
        redirect_uris: vec![REDIRECT.into()],
        ..ClientSettings::default()
    }
    .to_client(Some(hash_secret(SECRET)), ClientSource::Cli);
    app.state.db.create_client(&client).await?;
    Ok(())
}

fn email(kind: &str, n: usize) -> String {
    format!("{kind}{n}@example.com")
}

/// One password login through the pages; returns the code the client gets.
async fn login(http: &reqwest::Client, base: &str, username: &str) -> anyhow::Result<String> {
    let start = http
        .get(format!("{base}/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("scope", SCOPE),
            ("state", "bench"),
            ("nonce", "bench"),
        ])
        .send()
        .await?;
    let page_url = redirect_target(base, &start, "authorize")?;
    let cookies = cookies_of(&start);
    ensure!(!cookies.is_empty(), "authorize set no transaction cookie");

    let page = http.get(&page_url).header(COOKIE, &cookies).send().await?;
    ensure!(
        page.status() == StatusCode::OK,
        "the login page answered {}",
        page.status()
    );
    let html = page.text().await?;
    let authz = hidden_input(&html, "authz")?;
    let csrf = hidden_input(&html, "csrf")?;

    let done = http
        .post(format!("{base}/login"))
        .header(COOKIE, &cookies)
        .form(&[
            ("authz", authz.as_str()),
            ("csrf", csrf.as_str()),
            ("username", username),
            ("password", PASSWORD),
        ])
        .send()
        .await?;
    if done.status() != StatusCode::SEE_OTHER {
        let status = done.status();
        let body = done.text().await.unwrap_or_default();
        bail!(
            "POST /login for {username} answered {status}: {}",
            body.chars().take(200).collect::<String>()
        );
    }
    let back = redirect_target(base, &done, "login")?;
    ensure!(
        back.starts_with(REDIRECT),
        "login sent the browser to {back}"
    );
    url::Url::parse(&back)?
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .with_context(|| format!("no code in {back}"))
}

/// Exchanges a code; returns the refresh token.
async fn exchange(http: &reqwest::Client, base: &str, code: &str) -> anyhow::Result<String> {
    let response = http
        .post(format!("{base}/oauth/token"))
        .basic_auth(CLIENT_ID, Some(SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await?;
    let status = response.status();
    let body = response.bytes().await?;
    ensure!(
        status == StatusCode::OK,
        "code exchange answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice::<Rotated>(&body)
        .map(|t| t.refresh_token)
        .context("no refresh token in the code exchange")
}

#[derive(Deserialize)]
struct Rotated {
    refresh_token: String,
}

// ---------------------------------------------------------------------------
// (1)–(3): raw argon2id, local logins, refresh under load

struct PoolRun {
    configured: Option<usize>,
    permits: usize,
    /// Raw verifications per second on `permits` threads: the mean of
    /// `raw_each`, measured before and after the logins.
    raw: f64,
    raw_each: [f64; 2],
    raw_hashes: u64,
    raw_cpu: Option<Used>,
    /// The same verifications through the app's `Passwords` (its semaphore
    /// and blocking threads), with no HTTP: per second, count, CPU.
    pool: f64,
    pool_hashes: u64,
    pool_cpu: Option<Used>,
    logins: usize,
    /// Sorted.
    login_latencies: Vec<Duration>,
    load_cpu: Option<Used>,
    /// Sorted.
    baseline: Vec<Duration>,
    /// Sorted; in the second window.
    loaded: Vec<Duration>,
    /// Logins completed in the second window, beside the probe.
    logins_probed: usize,
    window: Duration,
    errors: Vec<String>,
}

impl PoolRun {
    fn logins_per_sec(&self) -> f64 {
        self.logins as f64 / self.window.as_secs_f64()
    }

    fn ratio(&self) -> f64 {
        self.logins_per_sec() / self.raw * 100.0
    }

    fn short_label(&self) -> String {
        match self.configured {
            None => format!("default ({} permits)", self.permits),
            Some(n) => format!("hashing_threads = {n}"),
        }
    }

    fn label(&self) -> String {
        match self.configured {
            None => format!("hashing_threads default ({} permits)", self.permits),
            Some(n) => format!("hashing_threads = {n}"),
        }
    }

    fn print(&self, config: &Config) {
        println!("{}", self.label());
        let per = |cpu: &Option<Used>, n: u64| match cpu {
            Some(c) if n > 0 => format!(
                "{:.1} ms cpu and {} page faults per hash",
                c.process.as_secs_f64() / n as f64 * 1e3,
                c.faults / n
            ),
            _ => String::new(),
        };
        println!(
            "  raw argon2id verify    {:>8.1} hashes/s on {} thread(s) ({:.1} before the logins, {:.1} after); {}",
            self.raw,
            self.permits,
            self.raw_each[0],
            self.raw_each[1],
            per(&self.raw_cpu, self.raw_hashes),
        );
        println!(
            "  Passwords::verify      {:>8.1} hashes/s through the app's pool; {}",
            self.pool,
            per(&self.pool_cpu, self.pool_hashes),
        );
        println!(
            "  logins over HTTP       {:>8.1} logins/s ({} in {} s)  p50 {:.0} ms  p99 {:.0} ms  \
             = {:.1} % of raw (target ≥ {TARGET_LOGIN_RATIO:.0} %)",
            self.logins_per_sec(),
            self.logins,
            self.window.as_secs(),
            ms(percentile(&self.login_latencies, 0.50)),
            ms(percentile(&self.login_latencies, 0.99)),
            self.ratio(),
        );
        println!(
            "  refresh, idle app       p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} grants)",
            ms(percentile(&self.baseline, 0.50)),
            ms(percentile(&self.baseline, 0.99)),
            ms(percentile(&self.baseline, 1.0)),
            self.baseline.len(),
        );
        println!(
            "  refresh, pool saturated p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} grants; target p99 ≤ {TARGET_REFRESH_P99_MS:.0} ms), \
             next {} s; logins meanwhile {:.1}/s = {:.1} % of raw",
            ms(percentile(&self.loaded, 0.50)),
            ms(percentile(&self.loaded, 0.99)),
            ms(percentile(&self.loaded, 1.0)),
            self.loaded.len(),
            self.window.as_secs(),
            self.logins_probed as f64 / self.window.as_secs_f64(),
            self.logins_probed as f64 / self.window.as_secs_f64() / self.raw * 100.0,
        );
        if let Some(b) = self.breakdown() {
            println!(
                "  cpu per login          argon2id through the pool {:.1} ms, rest of the server {:.1} ms, \
                 load generator {:.1} ms; {} page faults (by difference of measured totals: ±1–2 ms here)",
                b.hash, b.server, b.client, b.faults
            );
            println!(
                "  non-hash cpu per login {:.2} ms: the server's {:.2} ms a login less {:.2} ms of argon2id a \
                 verification (Passwords::verify alone; bare crate {:.2} ms)",
                b.server,
                b.server + b.hash,
                b.hash,
                b.raw_hash,
            );
            // Where the cores, not the pool, are the limit: logins/s ≤
            // cores ÷ CPU per login, against raw = permits ÷ bare argon2id.
            let ceiling = |per_login: f64| {
                (config.cores as f64 / self.permits as f64 * b.raw_hash / per_login * 100.0)
                    .min(100.0)
            };
            println!(
                "  ceiling from the cpu   {:.0} % of raw as measured here; {:.0} % for the server alone (clients elsewhere)",
                ceiling(b.hash + b.server + b.client),
                ceiling(b.hash + b.server),
            );
        }
        if let Some(cpu) = &self.load_cpu {
            println!(
                "  cores busy             this process {:.0} % (load generator {:.0} %), other processes {:.0} %",
                cpu.share(cpu.process, config.cores),
                cpu.share(cpu.client, config.cores),
                cpu.share(cpu.others, config.cores),
            );
        }
        let noise = |cpu: &Option<Used>| {
            cpu.as_ref()
                .map_or(0.0, |c| c.share(c.others, config.cores))
        };
        let (during_raw, during_load) = (noise(&self.raw_cpu), noise(&self.load_cpu));
        if during_raw > NOISE_PERCENT || during_load > NOISE_PERCENT {
            println!(
                "  warning: other processes took {during_raw:.0} % of the cores during the raw hashes and \
                 {during_load:.0} % during the logins; these figures are not clean"
            );
        }
        print_errors(&self.errors);
        println!();
    }
}

fn print_errors(errors: &[String]) {
    for e in errors.iter().take(ERRORS_SHOWN) {
        println!("  error: {e}");
    }
    if errors.len() > ERRORS_SHOWN {
        println!("  … and {} more errors", errors.len() - ERRORS_SHOWN);
    }
}

/// CPU per login, in milliseconds of one core.
struct Breakdown {
    /// Bare argon2id, as in the raw figure.
    raw_hash: f64,
    /// Through the app's pool.
    hash: f64,
    faults: u64,
    server: f64,
    client: f64,
}

impl PoolRun {
    fn breakdown(&self) -> Option<Breakdown> {
        let (load, raw, pool) = (
            self.load_cpu.as_ref()?,
            self.raw_cpu.as_ref()?,
            self.pool_cpu.as_ref()?,
        );
        if self.logins == 0 || self.raw_hashes == 0 || self.pool_hashes == 0 {
            return None;
        }
        // Measured rather than `permits / raw`: on a shared machine the
        // hashing threads do not get a whole core each.
        let raw_hash = raw.process.as_secs_f64() / self.raw_hashes as f64;
        let hash = pool.process.as_secs_f64() / self.pool_hashes as f64;
        let logins = self.logins as f64;
        let server = load.process.saturating_sub(load.client).as_secs_f64() - hash * logins;
        let client = load.client.as_secs_f64();
        Some(Breakdown {
            raw_hash: raw_hash * 1e3,
            hash: hash * 1e3,
            faults: load.faults / self.logins as u64,
            server: server / logins * 1e3,
            client: client / logins * 1e3,
        })
    }
}

/// The permits `Passwords::new` gives the pool for `configured`.
fn permits(configured: Option<usize>, cores: usize) -> usize {
    configured.unwrap_or(cores).max(1)
}

async fn local_logins(
    config: &Config,
    client: &Handle,
    configured: Option<usize>,
) -> anyhow::Result<PoolRun> {
    let app = spawn_app(|s| s.password.hashing_threads = configured).await?;
    add_client(&app).await?;
    // The cost of a verification depends on the parameters, not the salt, so
    // one hash serves every account and provisioning stays short.
    let stored = app.state.passwords.hash(PASSWORD.into()).await?;
    for n in 0..LOCAL_USERS {
        add_user(&app, &email("user", n), &stored).await?;
    }
    let refresher = email("refresher", 0);
    add_user(&app, &refresher, &stored).await?;

    let permits = permits(configured, config.cores);
    // With the app idle, so the hashing threads have the cores to themselves.
    let before = Snapshot::now();
    let (raw_before, hashes_before) = raw_verify_rate(stored.clone(), permits).await?;
    let raw_cpu_before = used(before, Snapshot::now());
    let before = Snapshot::now();
    let (pool, pool_hashes) = pool_verify_rate(&app.state, stored.clone(), permits).await?;
    let pool_cpu = used(before, Snapshot::now());

    // One grant family per chain, each bound to its own login.
    let http = no_redirects();
    let mut tokens = Vec::new();
    for _ in 0..REFRESH_CHAINS {
        let code = login(&http, &app.base, &refresher).await?;
        tokens.push(exchange(&http, &app.base, &code).await?);
    }

    let mut errors = Vec::new();
    let from = Instant::now() + WARM_UP / 2;
    let until = from + BASELINE_SECS;
    let chains = client.spawn(refresh_chains(app.base.clone(), tokens, from, until));
    tokio::time::sleep_until(until.into()).await;
    let (tokens, baseline, e) = chains.await?;
    errors.extend(e);

    // Two windows of saturating logins back to back: the first alone, for
    // the throughput figure; the second with the refresh probe, for its
    // latency under load. The probe's grants sign tokens on the same two
    // cores, so in one window they would be counted against the logins.
    let from = Instant::now() + WARM_UP;
    let mid = from + config.window;
    let until = mid + config.window;
    let workers: Vec<_> = (0..config.in_flight)
        .map(|w| client.spawn(login_worker(app.base.clone(), w, config.in_flight, until)))
        .collect();
    let base = app.base.clone();
    let chains = client.spawn(async move {
        tokio::time::sleep_until(mid.into()).await;
        refresh_chains(base, tokens, mid, until).await
    });
    let load_cpu = cpu_between(from, mid).await;

    let mut login_latencies = Vec::new();
    let mut logins_probed = 0;
    for worker in futures::future::join_all(workers).await {
        match worker {
            Ok((done, error)) => {
                for (at, latency) in done {
                    if (from..mid).contains(&at) {
                        login_latencies.push(latency);
                    } else if (mid..=until).contains(&at) {
                        logins_probed += 1;
                    }
                }
                errors.extend(error);
            }
            Err(e) => errors.push(format!("a login worker failed: {e}")),
        }
    }
    login_latencies.sort_unstable();
    let loaded = match chains.await {
        Ok((_, loaded, e)) => {
            errors.extend(e);
            loaded
        }
        Err(e) => {
            errors.push(format!("the refresh chains failed: {e}"));
            Vec::new()
        }
    };

    // Again after the load: this VM's speed drifts by 10–20 % from one
    // stretch of seconds to the next, so the ceiling is taken on both sides
    // of the window it is compared with.
    let before = Snapshot::now();
    let (raw_after, hashes_after) = raw_verify_rate(stored, permits).await?;
    let raw_cpu_after = used(before, Snapshot::now());
    Ok(PoolRun {
        configured,
        permits,
        raw: (raw_before + raw_after) / 2.0,
        raw_each: [raw_before, raw_after],
        raw_hashes: hashes_before + hashes_after,
        raw_cpu: Used::sum(raw_cpu_before, raw_cpu_after),
        pool,
        pool_hashes,
        pool_cpu,
        logins: login_latencies.len(),
        login_latencies,
        load_cpu,
        baseline,
        loaded,
        logins_probed,
        window: config.window,
        errors,
    })
}

/// The CPU spent from `from` to `until`, both in the future.
async fn cpu_between(from: Instant, until: Instant) -> Option<Used> {
    tokio::time::sleep_until(from.into()).await;
    let start = Snapshot::now();
    tokio::time::sleep_until(until.into()).await;
    used(start, Snapshot::now())
}

async fn add_user(app: &App, email: &str, hash: &str) -> anyhow::Result<()> {
    let user = NewUser {
        profile: switchyard::store::Profile {
            email: Some(email.into()),
            email_verified: true,
            name: Some("Bench Example".into()),
            ..Default::default()
        },
        ..NewUser::default()
    };
    app.state
        .db
        .create_user(&user, Some((hash, ARGON2ID)))
        .await?;
    Ok(())
}

/// Argon2id verifications per second of `stored` on `threads` OS threads,
/// the way `switchyard::migrate::hashes` verifies a login: the parameters
/// are read from the PHC string.
/// Returns the rate and the number of hashes.
async fn raw_verify_rate(stored: String, threads: usize) -> anyhow::Result<(f64, u64)> {
    tokio::task::spawn_blocking(move || {
        let hash = PasswordHash::new(&stored).map_err(|e| anyhow!("the stored hash: {e}"))?;
        let argon2 = Argon2::default();
        argon2
            .verify_password(PASSWORD.as_bytes(), &hash)
            .map_err(|e| anyhow!("the stored hash does not verify: {e}"))?;
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut n = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            let ok = argon2.verify_password(PASSWORD.as_bytes(), &hash).is_ok();
                            std::hint::black_box(ok);
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            std::thread::sleep(RAW_SECS);
            stop.store(true, Ordering::Relaxed);
            workers
                .into_iter()
                .map(|w| w.join().expect("a hashing thread panicked"))
                .sum()
        });
        // Hashes still running at the stop signal finish and count, so the
        // time is taken to the last one.
        Ok((total as f64 / started.elapsed().as_secs_f64(), total))
    })
    .await?
}

/// Verifications per second through `Passwords::verify`, with twice as many
/// callers as permits so the pool never waits for one; returns the rate and
/// the number of hashes.
async fn pool_verify_rate(
    state: &AppState,
    stored: String,
    permits: usize,
) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let until = started + RAW_SECS;
    let callers: Vec<_> = (0..permits * 2)
        .map(|_| {
            let (state, stored) = (state.clone(), stored.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < until {
                    let verified = state
                        .passwords
                        .verify(PASSWORD.into(), Some(stored.clone()))
                        .await?;
                    ensure!(
                        verified == Verified::Yes { rehash: false },
                        "the pool verified {verified:?}"
                    );
                    n += 1;
                }
                anyhow::Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for caller in futures::future::join_all(callers).await {
        total += caller??;
    }
    Ok((total as f64 / started.elapsed().as_secs_f64(), total))
}

/// Logs in until `until`, one login at a time, cycling through the accounts.
/// Returns when each login finished and how long it took, and the first
/// error, which ends the worker.
async fn login_worker(
    base: String,
    worker: usize,
    workers: usize,
    until: Instant,
) -> (Vec<(Instant, Duration)>, Option<String>) {
    // No cookie store: each login is a fresh browser whose cookies are
    // carried by hand, so a worker keeps its keep-alive connection from one
    // login to the next. A cookie-keeping client would present the previous
    // login's session and `/authorize` would answer from it without a
    // password.
    let http = no_redirects();
    let mut done = Vec::with_capacity(1024);
    let mut n = worker;
    while Instant::now() < until {
        let username = email("user", n % LOCAL_USERS);
        n += workers;
        let started = Instant::now();
        if let Err(e) = login(&http, &base, &username).await {
            return (done, Some(format!("{e:#}")));
        }
        let finished = Instant::now();
        done.push((finished, finished - started));
    }
    (done, None)
}

/// Runs every chain until `until`, each on its own schedule; returns the
/// tokens to continue with, the sorted latencies of the grants started in
/// `from..until`, and the errors.
async fn refresh_chains(
    base: String,
    tokens: Vec<String>,
    from: Instant,
    until: Instant,
) -> (Vec<String>, Vec<Duration>, Vec<String>) {
    // Built here, on the runtime that runs the chains, so its connections
    // are driven there too.
    let http = match reqwest::Client::builder()
        .pool_max_idle_per_host(tokens.len())
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(h) => h,
        Err(e) => return (Vec::new(), Vec::new(), vec![format!("HTTP client: {e}")]),
    };
    let url: Arc<str> = format!("{base}/oauth/token").into();
    let count = tokens.len().max(1) as u32;
    let tasks: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| {
            // Staggered, so the chains probe in turn rather than in bursts.
            let first = Instant::now() + REFRESH_INTERVAL * i as u32 / count;
            tokio::spawn(chain(http.clone(), url.clone(), token, first, from, until))
        })
        .collect();
    let mut tokens = Vec::new();
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for task in futures::future::join_all(tasks).await {
        match task {
            Ok((token, l, e)) => {
                tokens.extend(token);
                latencies.extend(l);
                errors.extend(e);
            }
            Err(e) => errors.push(format!("a refresh chain failed: {e}")),
        }
    }
    latencies.sort_unstable();
    (tokens, latencies, errors)
}

/// One rotation chain. Ends at the first failure: the presented token may be
/// spent, and presenting it again would count as reuse and revoke the family.
async fn chain(
    http: reqwest::Client,
    url: Arc<str>,
    mut token: String,
    first: Instant,
    from: Instant,
    until: Instant,
) -> (Option<String>, Vec<Duration>, Option<String>) {
    let mut tick = tokio::time::interval_at(first.into(), REFRESH_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut latencies = Vec::new();
    loop {
        tick.tick().await;
        let started = Instant::now();
        if started >= until {
            return (Some(token), latencies, None);
        }
        let sent = http
            .post(&*url)
            .basic_auth(CLIENT_ID, Some(SECRET))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", &token)])
            .send()
            .await;
        // The body is read and parsed inside the timed span: a client has no
        // token until it has done both.
        let result = match sent {
            Ok(response) => {
                let status = response.status();
                match response.bytes().await {
                    Ok(body) if status == StatusCode::OK => {
                        serde_json::from_slice::<Rotated>(&body)
                            .map_err(|e| format!("no refresh token in the response: {e}"))
                    }
                    Ok(body) => Err(format!(
                        "refresh answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    )),
                    Err(e) => Err(format!("reading the refresh response: {e}")),
                }
            }
            Err(e) => Err(format!("refresh transport: {e}")),
        };
        match result {
            Ok(rotated) => token = rotated.refresh_token,
            Err(e) => return (None, latencies, Some(e)),
        }
        if started >= from {
            latencies.push(started.elapsed());
        }
    }
}

// ---------------------------------------------------------------------------
// (4): first logins through the fake upstream

#[derive(Debug, Clone, Copy, Default)]
struct Phases {
    upstream_verify_ms: u64,
    profile_ms: u64,
    hash_ms: u64,
    commit_ms: u64,
}

/// The phase fields of every "user migrated" event since the last `take`.
#[derive(Clone, Default)]
struct PhaseLog(Arc<Mutex<Vec<Phases>>>);

impl PhaseLog {
    fn take(&self) -> Vec<Phases> {
        std::mem::take(&mut *self.0.lock().expect("the phase log"))
    }
}

impl<S: tracing::Subscriber> Layer<S> for PhaseLog {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: LayerContext<'_, S>) {
        #[derive(Default)]
        struct Fields {
            migrated: bool,
            phases: Phases,
        }
        impl Visit for Fields {
            fn record_u64(&mut self, field: &Field, value: u64) {
                match field.name() {
                    "upstream_verify_ms" => self.phases.upstream_verify_ms = value,
                    "profile_ms" => self.phases.profile_ms = value,
                    "hash_ms" => self.phases.hash_ms = value,
                    "commit_ms" => self.phases.commit_ms = value,
                    _ => {}
                }
            }
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.migrated = format!("{value:?}") == "user migrated";
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.migrated {
            self.0.lock().expect("the phase log").push(fields.phases);
        }
    }
}

/// Warnings to stderr (`SWITCHYARD_LOG` overrides), and the migration
/// events to the phase log. Both filter per layer, so the request spans the
/// server opens for every request are disabled rather than built and
/// dropped while the logins are measured.
fn install_tracing() -> PhaseLog {
    let phases = PhaseLog::default();
    let filter = std::env::var("SWITCHYARD_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(EnvFilter::new(filter)),
        )
        .with(
            phases
                .clone()
                .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                    meta.target() == LAZY_TARGET && *meta.level() == tracing::Level::INFO
                })),
        )
        .init();
    phases
}

struct FirstLogins {
    /// Sorted, each.
    whole: Vec<Duration>,
    upstream_verify: Vec<u64>,
    profile: Vec<u64>,
    hash: Vec<u64>,
    commit: Vec<u64>,
    /// Whole login minus the four phases: the pages, routing, the session
    /// and the code.
    rest: Vec<Duration>,
    /// The same four pieces called directly, for other never-seen users: the
    /// event's whole milliseconds read 0 for the sub-millisecond ones.
    direct: [Vec<Duration>; 4],
    errors: Vec<String>,
}

const PHASE_NAMES: [&str; 4] = [
    "upstream verify",
    "profile (userinfo)",
    "argon2id hash",
    "commit",
];

impl FirstLogins {
    fn print(&self) {
        println!(
            "first login through the fake Auth0 (password-realm), {} never-seen users one at a time \
             (after {FIRST_LOGIN_WARM_UP} warm-up), default pool",
            self.whole.len()
        );
        println!(
            "  whole login            p50 {:>6.1} ms  p90 {:>6.1} ms",
            ms(percentile(&self.whole, 0.5)),
            ms(percentile(&self.whole, 0.9)),
        );
        let event = [
            &self.upstream_verify,
            &self.profile,
            &self.hash,
            &self.commit,
        ];
        println!(
            "  {:<22} {:>26}   {:>26}",
            "", "\"user migrated\" event", "called directly"
        );
        for ((name, values), direct) in PHASE_NAMES.iter().zip(event).zip(&self.direct) {
            println!(
                "  {name:<22} p50 {:>5} ms  p90 {:>5} ms   p50 {:>6.2} ms  p90 {:>6.2} ms",
                percentile(values, 0.5),
                percentile(values, 0.9),
                ms(percentile(direct, 0.5)),
                ms(percentile(direct, 0.9)),
            );
        }
        println!(
            "  {:<22} p50 {:>5.1} ms  p90 {:>5.1} ms",
            "the rest",
            ms(percentile(&self.rest, 0.5)),
            ms(percentile(&self.rest, 0.9)),
        );
        println!(
            "  (the event's fields are whole milliseconds, truncated, so \"the rest\" (the whole login\n   \
             minus those four: pages, routing, session, code) reads up to 4 ms high)"
        );
        print_errors(&self.errors);
        println!();
    }
}

async fn first_logins(config: &Config, phases: &PhaseLog) -> anyhow::Result<FirstLogins> {
    let secret = std::env::var(UPSTREAM_SECRET_ENV).with_context(|| {
        format!("{UPSTREAM_SECRET_ENV} is unset: run through cargo, which sets it from .cargo/config.toml")
    })?;
    let fake = FakeUpstream::start(Flavor::Auth0).await;
    let issuer = fake.issuer();
    // tests/api/migration.rs `lazy()`, through tests/api/upstream.rs.
    let app = spawn_app(|s| {
        let mut up = UpstreamSettings::for_provider("auth0");
        up.issuer = Some(issuer);
        up.client_id = UPSTREAM_CLIENT.into();
        up.client_secret_env = Some(UPSTREAM_SECRET_ENV.into());
        up.token_keys_env = TOKEN_KEYS_ENV.into();
        up.timeout_secs = 2;
        up.connection = Some(AUTH0_DEFAULT_REALM.into());
        s.upstream = Some(up);
    })
    .await?;
    let callback = format!("{}/login/callback", app.base);
    fake.add_client(UPSTREAM_CLIENT, Some(&secret), &[&callback]);
    add_client(&app).await?;

    let total = FIRST_LOGIN_WARM_UP + config.first_logins;
    // The users timed directly come after the ones logging in over HTTP.
    let subs: Vec<String> = (0..total + config.first_logins)
        .map(|n| Flavor::Auth0.sample_sub(n as u32))
        .collect();
    for (n, sub) in subs.iter().enumerate() {
        fake.add_user(FakeUser::new(sub, &email("migrant", n), PASSWORD));
    }

    let http = no_redirects();
    let mut result = FirstLogins {
        whole: Vec::new(),
        upstream_verify: Vec::new(),
        profile: Vec::new(),
        hash: Vec::new(),
        commit: Vec::new(),
        rest: Vec::new(),
        direct: Default::default(),
        errors: Vec::new(),
    };
    phases.take();
    for n in 0..total {
        let started = Instant::now();
        let outcome = login(&http, &app.base, &email("migrant", n)).await;
        let whole = started.elapsed();
        let events = phases.take();
        if let Err(e) = outcome {
            result.errors.push(format!("{e:#}"));
            continue;
        }
        let [p] = events[..] else {
            result.errors.push(format!(
                "login {n}: {} \"user migrated\" events instead of one",
                events.len()
            ));
            continue;
        };
        if n < FIRST_LOGIN_WARM_UP {
            continue;
        }
        result.whole.push(whole);
        result.upstream_verify.push(p.upstream_verify_ms);
        result.profile.push(p.profile_ms);
        result.hash.push(p.hash_ms);
        result.commit.push(p.commit_ms);
        let phased =
            Duration::from_millis(p.upstream_verify_ms + p.profile_ms + p.hash_ms + p.commit_ms);
        result.rest.push(whole.saturating_sub(phased));
    }
    for n in total..total + config.first_logins {
        match migrate_directly(&app, &email("migrant", n)).await {
            Ok(took) => {
                for (series, d) in result.direct.iter_mut().zip(took) {
                    series.push(d);
                }
            }
            Err(e) => result.errors.push(format!("{e:#}")),
        }
    }
    for series in &mut result.direct {
        series.sort_unstable();
    }
    for sub in &subs {
        if app.state.db.get_user(sub).await?.is_none() {
            result.errors.push(format!("{sub} was not migrated"));
        }
    }
    result.whole.sort_unstable();
    result.upstream_verify.sort_unstable();
    result.profile.sort_unstable();
    result.hash.sort_unstable();
    result.commit.sort_unstable();
    result.rest.sort_unstable();
    Ok(result)
}

/// The steps of `switchyard::migrate::lazy::verify_and_migrate` for a
/// never-seen user, each timed; kept in step with it by hand.
async fn migrate_directly(app: &App, username: &str) -> anyhow::Result<[Duration; 4]> {
    let up = app
        .state
        .upstream
        .as_ref()
        .context("no upstream configured")?;
    let started = Instant::now();
    let tokens = up
        .client
        .password_login(username, PASSWORD, None)
        .await
        .map_err(|e| anyhow!("password login of {username} at the upstream: {e:?}"))?;
    let verified = started.elapsed();
    let userinfo = if up.client.def.oidc.userinfo_at_login {
        Some(up.client.userinfo(&tokens.access_token).await?)
    } else {
        None
    };
    let claims = tokens.claims.clone().unwrap_or_default();
    let profile = profile::from_claims(&up.client.def, &claims, userinfo.as_ref())
        .context("the upstream ID token names no user")?;
    let fetched = started.elapsed();
    let hash = app.state.passwords.hash(PASSWORD.into()).await?;
    let hashed = started.elapsed();
    let migration = Migration {
        hash,
        algorithm: ARGON2ID.into(),
        route: "password".into(),
        mark_upstream: false,
    };
    app.state
        .db
        .migrate_upstream_user(&up.client.settings.provider, &profile, &migration)
        .await?;
    Ok([
        verified,
        fetched - verified,
        hashed - fetched,
        started.elapsed() - hashed,
    ])
}

// ---------------------------------------------------------------------------
// Summary

fn summary(runs: &[PoolRun], first: &FirstLogins) {
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let row = |label: &str, cells: Vec<String>, target: &str| {
        let cells: String = cells.iter().map(|c| format!("{c:>24}")).collect();
        println!("  {label:<34}{cells}   {target}");
    };
    let each = |f: &dyn Fn(&PoolRun) -> String| runs.iter().map(f).collect::<Vec<_>>();
    println!("summary");
    row("", each(&|r| r.short_label()), "target");
    row(
        "raw argon2id verify",
        each(&|r| format!("{:.1} /s", r.raw)),
        "",
    );
    row(
        "Passwords::verify, no HTTP",
        each(&|r| format!("{:.1} /s", r.pool)),
        "",
    );
    row(
        "local logins over HTTP",
        each(&|r| format!("{:.1} /s", r.logins_per_sec())),
        "",
    );
    row(
        "  logins ÷ raw",
        each(&|r| {
            format!(
                "{:.1} % {}",
                r.ratio(),
                verdict(r.ratio() >= TARGET_LOGIN_RATIO)
            )
        }),
        &format!("≥ {TARGET_LOGIN_RATIO:.0} %"),
    );
    row(
        "non-hash cpu per login",
        each(&|r| {
            r.breakdown()
                .map_or_else(|| "-".into(), |b| format!("{:.2} ms", b.server))
        }),
        "",
    );
    row(
        "refresh p50 / p99, idle",
        each(&|r| {
            format!(
                "{:.1} / {:.1} ms",
                ms(percentile(&r.baseline, 0.5)),
                ms(percentile(&r.baseline, 0.99))
            )
        }),
        "",
    );
    row(
        "refresh p50 / p99, pool saturated",
        each(&|r| {
            format!(
                "{:.1} / {:.1} ms",
                ms(percentile(&r.loaded, 0.5)),
                ms(percentile(&r.loaded, 0.99))
            )
        }),
        &format!("p99 ≤ {TARGET_REFRESH_P99_MS:.0} ms"),
    );
    row(
        "  p99 ÷ target",
        each(&|r| {
            let p99 = ms(percentile(&r.loaded, 0.99));
            format!(
                "{:.2}× {}",
                p99 / TARGET_REFRESH_P99_MS,
                verdict(p99 <= TARGET_REFRESH_P99_MS)
            )
        }),
        "",
    );
    println!(
        "  first login, p50 / p90            {:.1} / {:.1} ms (loopback fake Auth0, default pool)",
        ms(percentile(&first.whole, 0.5)),
        ms(percentile(&first.whole, 0.9)),
    );
    let [verify, profile, hash, commit] = first.direct.each_ref().map(|d| ms(percentile(d, 0.5)));
    println!(
        "    p50 upstream verify {verify:.2} ms, profile {profile:.2} ms, hash {hash:.1} ms, \
         commit {commit:.2} ms, the rest {:.1} ms",
        ms(percentile(&first.rest, 0.5)),
    );
}

// ---------------------------------------------------------------------------
// CPU accounting: the machine is shared, so every figure says how much of it
// other processes took meanwhile.

/// Cumulative CPU times at one instant.
struct Snapshot {
    at: Instant,
    process: Duration,
    client: Duration,
    machine: Duration,
    faults: u64,
}

impl Snapshot {
    fn now() -> Option<Self> {
        Some(Snapshot {
            at: Instant::now(),
            process: process_cpu()?,
            client: client_cpu()?,
            machine: machine_cpu()?,
            faults: minor_faults()?,
        })
    }
}

struct Used {
    wall: Duration,
    /// All of this process: server, hashing threads and load generator.
    process: Duration,
    /// The load generator's threads alone.
    client: Duration,
    others: Duration,
    /// Minor page faults of this process.
    faults: u64,
}

impl Used {
    /// Two stretches of time together.
    fn sum(a: Option<Used>, b: Option<Used>) -> Option<Used> {
        let (a, b) = (a?, b?);
        Some(Used {
            wall: a.wall + b.wall,
            process: a.process + b.process,
            client: a.client + b.client,
            others: a.others + b.others,
            faults: a.faults + b.faults,
        })
    }

    /// `time` as a percentage of what `cores` could have done meanwhile.
    fn share(&self, time: Duration, cores: usize) -> f64 {
        time.as_secs_f64() / (cores as f64 * self.wall.as_secs_f64()) * 100.0
    }
}

fn used(start: Option<Snapshot>, end: Option<Snapshot>) -> Option<Used> {
    let (start, end) = (start?, end?);
    let process = end.process.saturating_sub(start.process);
    let machine = end.machine.saturating_sub(start.machine);
    Some(Used {
        wall: end.at - start.at,
        process,
        client: end.client.saturating_sub(start.client),
        others: machine.saturating_sub(process),
        faults: end.faults.saturating_sub(start.faults),
    })
}

/// Minor page faults of this process, from /proc/self/stat (Linux): a fresh
/// 19 MiB argon2 buffer costs ~4,900 of them.
fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // minflt is field 10 of the whole line.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(7)?
        .parse()
        .ok()
}

/// The load generator's threads together, from /proc/self/task (Linux).
/// Its runtime lives for the whole run, so no thread's time goes missing
/// with the thread.
fn client_cpu() -> Option<Duration> {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        // A thread that ended since the listing has no file any more.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some((name, time)) = cpu_of(&stat)
            && name == CLIENT_THREAD
        {
            total += time;
        }
    }
    Some(total)
}
