//! Token endpoint throughput and cost: `refresh_token` grants with
//! rotation, served in-process over real HTTP, on the embedded session store
//! and on Redis, set against the raw signing rate of the same algorithm on
//! the same cores.
//!
//! The server runs in this process; the load generator runs in a child
//! process (this same binary, started with `SWITCHYARD_BENCH_LOADGEN` set),
//! so the two never share a runtime and this process's CPU time over the
//! measured window, from /proc/self/stat, is the server's alone. Divided by
//! the grants served it is the **server CPU per grant**; minus the measured
//! CPU of its signatures (two per grant with `openid`: the access token and
//! the ID token) it is the **non-signing CPU per grant** — HTTP, client
//! authentication, the lookups, the rotation, JSON — which is what the
//! server itself decides. Targets on a 2-core machine: non-signing CPU
//! ≤ 60 µs per grant on both stores; RS256 grants/s ≥ 85 % of the signing
//! limit of the cores (raw signatures/s ÷ signatures per grant); ES256
//! ≥ 10,000 grants/s.
//!
//! Run with `cargo bench --bench token_endpoint`. Redis must be reachable
//! for the Redis runs (`SWITCHYARD_BENCH_REDIS_URL`, default
//! `redis://127.0.0.1:6379`); every key the bench writes lives under a
//! random prefix and is deleted at the end. Also read:
//! `SWITCHYARD_BENCH_SECS`, the measured duration (default 10);
//! `SWITCHYARD_BENCH_CONCURRENCY`, the number of refresh chains (default 64);
//! `SWITCHYARD_BENCH_ALGS`, the algorithms (default `RS256,ES256,EdDSA`);
//! `SWITCHYARD_BENCH_STORES`, the session stores (default `embedded,redis`).
//!
//! Each block also says how busy the cores were, by the server, the load
//! generator, redis-server and anything else: on a shared machine the
//! wall-clock figures drop, the CPU-time ones much less.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair};
use futures::StreamExt;
use reqwest::StatusCode;
use scraper::{Html, Selector};
use serde::{Deserialize, Serialize};
use switchyard::config::{ClientSettings, Settings, TokenSettings};
use switchyard::crypto::{hash_secret, random_token};
use switchyard::password::ARGON2ID;
use switchyard::startup::Application;
use switchyard::state::AppState;
use switchyard::store::{ClientSource, NewUser};
use switchyard::tokens::keys::Alg;

use switchyard_kit::cpu::{cpu_of, machine_cpu, process_cpu};
use switchyard_kit::http::{browser, pkce, redirect_target};
use switchyard_kit::isolation::delete_keys;
use switchyard_kit::stats::{ms, percentile};

// The allocator of the `switchyard` binary (src/main.rs), so the server's
// figures are the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLIENT_ID: &str = "bench";
const SECRET: &str = "bench-client-secret-0123456789abcdef";
const REDIRECT: &str = "https://app.example.com/callback";
const USERNAME: &str = "bench@example.com";
const PASSWORD: &str = "correct horse battery staple";
/// What a typical relying party asks for; the ID token then carries profile
/// claims, so its payload is the realistic size rather than the minimum.
const SCOPE: &str = "openid profile email";

/// Excluded from the figures: connection set-up, the first SQLite page
/// reads and allocator growth are start-up costs, not steady state.
const WARM_UP: Duration = Duration::from_secs(1);
const SIGNING_SECS: Duration = Duration::from_secs(3);
/// How many logins run at once while provisioning; argon2 runs on a pool
/// the size of the core count, so more would only queue.
const LOGIN_PARALLELISM: usize = 8;
/// Error responses printed in full; the rest are only counted.
const ERRORS_SHOWN: usize = 5;
/// Share of the cores other processes may take before the figures are
/// flagged as disturbed.
const NOISE_PERCENT: f64 = 5.0;

struct Config {
    redis_url: String,
    duration: Duration,
    concurrency: usize,
    threads: usize,
    algs: Vec<Alg>,
    stores: Vec<Store>,
}

/// Where the server keeps its sessions and the cache of grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    /// The embedded default: the in-process store.
    Embedded,
    Redis,
}

impl Store {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "embedded" => Some(Self::Embedded),
            "redis" => Some(Self::Redis),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Redis => "redis",
        }
    }
}

/// Set in the load generator's environment: the file its chains' refresh
/// tokens are in, one a line.
const LOADGEN_ENV: &str = "SWITCHYARD_BENCH_LOADGEN";

fn list<T>(name: &str, default: &str, parse: impl Fn(&str) -> Option<T>) -> Vec<T> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|v| parse(v.trim()).unwrap_or_else(|| panic!("{name}: {v:?} is not one of {default}")))
        .collect()
}

#[tokio::main]
async fn main() -> ExitCode {
    if let Ok(tokens) = std::env::var(LOADGEN_ENV) {
        return loadgen::main(&tokens).await;
    }
    let config = Config {
        redis_url: std::env::var("SWITCHYARD_BENCH_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        duration: Duration::from_secs(env_number("SWITCHYARD_BENCH_SECS", 10)),
        concurrency: env_number("SWITCHYARD_BENCH_CONCURRENCY", 64).max(1) as usize,
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        algs: list("SWITCHYARD_BENCH_ALGS", "RS256,ES256,EdDSA", Alg::parse),
        stores: list("SWITCHYARD_BENCH_STORES", "embedded,redis", Store::parse),
    };
    if config.stores.contains(&Store::Redis)
        && let Err(e) = check_redis(&config.redis_url).await
    {
        eprintln!(
            "token_endpoint bench: Redis at {} is not reachable: {e:#}",
            config.redis_url
        );
        eprintln!(
            "start Redis, point SWITCHYARD_BENCH_REDIS_URL at one, or set SWITCHYARD_BENCH_STORES=embedded"
        );
        return ExitCode::FAILURE;
    }
    println!(
        "token endpoint: refresh_token grants with rotation, scope \"{SCOPE}\", SQLite database\n\
         {} chains for {} s (after {} s warm-up) from a load generator in its own process, {} cores\n",
        config.concurrency,
        config.duration.as_secs(),
        WARM_UP.as_secs(),
        config.threads,
    );

    let mut failed = false;
    let mut rows = Vec::new();
    for &store in &config.stores {
        for &alg in &config.algs {
            match run(&config, store, alg).await {
                Ok(row) => {
                    failed |= row.errors > 0;
                    rows.push(row);
                }
                Err(e) => {
                    eprintln!("{} {}: {e:#}", store.as_str(), alg.as_str());
                    failed = true;
                }
            }
        }
    }
    summary(&rows);
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

async fn check_redis(url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    tokio::time::timeout(Duration::from_secs(3), ping)
        .await
        .context("no answer within 3 s")??;
    Ok(())
}

/// One line of the summary table.
struct Row {
    store: Store,
    alg: Alg,
    grants_per_sec: f64,
    /// Grants/s the raw signing rate allows: raw signatures/s ÷ signatures
    /// per grant.
    signing_limit: f64,
    /// Server CPU per grant, and the part of it that is not signing, µs.
    cpu: Option<(f64, f64)>,
    errors: usize,
}

fn summary(rows: &[Row]) {
    println!(
        "summary (targets: non-signing CPU ≤ 60 µs/grant; RS256 ≥ 85 % of the signing limit; ES256 ≥ 10,000 grants/s)"
    );
    println!(
        "| store | alg | grants/s | % of signing limit | server CPU/grant | non-signing CPU/grant | targets |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        let share = r.grants_per_sec / r.signing_limit * 100.0;
        let mut verdict = Vec::new();
        if let Some((_, rest)) = r.cpu {
            verdict.push(if rest <= 60.0 {
                "cpu met"
            } else {
                "cpu missed"
            });
        }
        match r.alg {
            Alg::RS256 => verdict.push(if share >= 85.0 {
                "rate met"
            } else {
                "rate missed"
            }),
            Alg::ES256 => verdict.push(if r.grants_per_sec >= 10_000.0 {
                "rate met"
            } else {
                "rate missed"
            }),
            Alg::EdDSA => {}
        }
        let (cpu, rest) = r.cpu.map_or(("?".into(), "?".into()), |(c, n)| {
            (format!("{c:.0} µs"), format!("{n:.0} µs"))
        });
        println!(
            "| {} | {} | {:.0} | {share:.1} % | {cpu} | {rest} | {} |",
            r.store.as_str(),
            r.alg.as_str(),
            r.grants_per_sec,
            verdict.join(", "),
        );
    }
}

/// One store and algorithm: a fresh app, the load, the signing rates, one
/// block of output.
async fn run(config: &Config, store: Store, alg: Alg) -> anyhow::Result<Row> {
    let prefix = format!("bench:{}:{}:", &random_token()[..12], alg.as_str());
    let dir = tempfile::tempdir()?;
    let app = spawn_app(config, store, alg, &prefix, &dir).await?;
    let result = measure(config, store, alg, &app, &dir).await;
    // Keys are deleted even when the run failed half-way.
    if store == Store::Redis
        && let Err(e) = delete_keys(&config.redis_url, &prefix).await
    {
        eprintln!("warning: could not delete the bench's Redis keys under {prefix}: {e:#}");
    }
    result
}

async fn measure(
    config: &Config,
    store: Store,
    alg: Alg,
    app: &App,
    dir: &tempfile::TempDir,
) -> anyhow::Result<Row> {
    let first = provision(app, config.concurrency).await?;
    let signatures_per_grant = 1 + usize::from(first[0].id_token.is_some());
    // The real signing input of an access token the app just issued, so the
    // raw rate hashes the same number of bytes the endpoint does.
    let signing_input = first[0]
        .access_token
        .rsplit_once('.')
        .context("the access token is not a JWS")?
        .0
        .as_bytes()
        .to_vec();
    let chains = first
        .into_iter()
        .map(|t| {
            t.refresh_token
                .context("no refresh token in the code exchange")
        })
        .collect::<Result<Vec<_>, _>>()?;

    let redis = (store == Store::Redis).then_some(config.redis_url.as_str());
    let load = load(app, chains, config, redis, dir).await?;

    // The app is idle now, so the signing threads have the cores to themselves.
    let before = Snapshot::now(None, None).await;
    let raw = raw_signing_rate(alg, signing_input.clone(), config.threads).await?;
    let raw_cpu = used(before, Snapshot::now(None, None).await);
    let key = app
        .state
        .keys
        .current()
        .active(alg)
        .cloned()
        .context("no active key")?;
    let product = signing_rate(config.threads, move || {
        key.sign(&signing_input)
            .map(drop)
            .map_err(anyhow::Error::from)
    })
    .await?;

    let grants_per_sec = load.grants as f64 / load.elapsed.as_secs_f64();
    let signing_limit = raw.per_sec / signatures_per_grant as f64;
    println!(
        "{} {}: {:.0} grants/s  p50 {:.1} ms  p99 {:.1} ms  errors {} | raw signing {:.0} sig/s ({} threads): \
         limit {:.0} grants/s, reached {:.1} %",
        store.as_str(),
        alg.as_str(),
        grants_per_sec,
        load.p50_ms,
        load.p99_ms,
        load.errors.len(),
        raw.per_sec,
        config.threads,
        signing_limit,
        grants_per_sec / signing_limit * 100.0,
    );
    println!(
        "       {} grants in {:.2} s; switchyard's own signer on its active key: {:.0} sig/s",
        load.grants,
        load.elapsed.as_secs_f64(),
        product.per_sec,
    );
    let mut cpu_row = None;
    if let Some(cpu) = &load.cpu {
        let per_signature = raw
            .cpu_per_signature
            .map_or(config.threads as f64 / raw.per_sec * 1e6, |d| {
                d.as_secs_f64() * 1e6
            });
        let signing = signatures_per_grant as f64 * per_signature;
        let per_grant = |d: Duration| d.as_secs_f64() / load.grants.max(1) as f64 * 1e6;
        let server = per_grant(cpu.server);
        cpu_row = Some((server, server - signing));
        println!(
            "       server CPU per grant {server:.0} µs: signing {signatures_per_grant} × {per_signature:.0} µs, \
             the rest {:.0} µs | load generator {:.0} µs, redis-server {:.0} µs",
            server - signing,
            per_grant(cpu.loadgen),
            per_grant(cpu.redis),
        );
    }
    // Load and signing are measured one after the other, so anything else
    // running on the machine skews the wall-clock ratio either way.
    let others = |cpu: &Option<Used>| cpu.as_ref().map(|c| c.share(c.others, config.threads));
    if let (Some(cpu), Some(during_load), Some(during_signing)) =
        (&load.cpu, others(&load.cpu), others(&raw_cpu))
    {
        println!(
            "       cores busy: server {:.0} %, load generator {:.0} %, redis-server {:.0} %, other processes {during_load:.0} % \
             (and {during_signing:.0} % while signing){}",
            cpu.share(cpu.server, config.threads),
            cpu.share(cpu.loadgen, config.threads),
            cpu.share(cpu.redis, config.threads),
            if during_load.max(during_signing) > NOISE_PERCENT {
                "; the machine was shared, so grants/s and the wall-clock ratio are low or off"
            } else {
                ""
            },
        );
    }
    for e in load.errors.iter().take(ERRORS_SHOWN) {
        println!("       error: {e}");
    }
    if load.errors.len() > ERRORS_SHOWN {
        println!(
            "       … and {} more errors",
            load.errors.len() - ERRORS_SHOWN
        );
    }
    println!();
    Ok(Row {
        store,
        alg,
        grants_per_sec,
        signing_limit,
        cpu: cpu_row,
        errors: load.errors.len(),
    })
}

struct App {
    base: String,
    state: AppState,
    /// Dropping it stops the server, so one algorithm's app does not keep
    /// its Redis connection and key reloader through the next one's run.
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The app as the integration tests start it (tests/api/helpers.rs), with
/// the session store asked for and its own key prefix.
async fn spawn_app(
    config: &Config,
    store: Store,
    alg: Alg,
    prefix: &str,
    dir: &tempfile::TempDir,
) -> anyhow::Result<App> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let settings = Settings {
        issuer: format!("http://127.0.0.1:{port}/"),
        database_url: format!("sqlite://{}", dir.path().join("switchyard.db").display()),
        redis_url: (store == Store::Redis).then(|| config.redis_url.clone()),
        session_prefix: prefix.to_string(),
        tokens: TokenSettings {
            signing_alg: alg,
            // Each chain presents every token exactly once; no grace needed.
            refresh_reuse_grace_secs: 0,
            // Bounds what a crashed run leaves in Redis; the work per grant
            // does not depend on it.
            refresh_token_ttl_secs: 3600,
            ..TokenSettings::default()
        },
        ..Settings::default()
    };
    let app = Application::build_with_listener(settings, listener)
        .await
        .context("the application builds")?;
    let state = app.state();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Ok(App {
        base: format!("http://127.0.0.1:{port}"),
        state,
        _stop: stop,
    })
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    id_token: Option<String>,
    refresh_token: Option<String>,
}

/// A confidential client, a user, and one login per chain through the real
/// pages, so every chain is its own grant family bound to its own session.
async fn provision(app: &App, chains: usize) -> anyhow::Result<Vec<TokenResponse>> {
    let client = ClientSettings {
        client_id: CLIENT_ID.into(),
        name: Some("Token endpoint bench".into()),
        redirect_uris: vec![REDIRECT.into()],
        ..ClientSettings::default()
    }
    .to_client(Some(hash_secret(SECRET)), ClientSource::Cli);
    app.state.db.create_client(&client).await?;
    let hash = app.state.passwords.hash(PASSWORD.into()).await?;
    let user = NewUser {
        profile: switchyard::store::Profile {
            email: Some(USERNAME.into()),
            email_verified: true,
            name: Some("Bench Example".into()),
            given_name: Some("Bench".into()),
            family_name: Some("Example".into()),
            ..Default::default()
        },
        ..NewUser::default()
    };
    app.state
        .db
        .create_user(&user, Some((&hash, ARGON2ID)))
        .await?;

    futures::stream::iter(0..chains)
        .map(|_| login(app))
        .buffer_unordered(LOGIN_PARALLELISM)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Authorize, sign in with username and password in one form, exchange the code.
async fn login(app: &App) -> anyhow::Result<TokenResponse> {
    let browser = browser();
    let (verifier, challenge) = pkce();
    let start = browser
        .get(format!("{}/authorize", app.base))
        .query(&[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("scope", SCOPE),
            ("state", "bench"),
            ("nonce", "bench"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await?;
    let login_page = redirect_target(&app.base, &start, "authorize")?;

    let page = browser.get(&login_page).send().await?;
    if page.status() != StatusCode::OK {
        bail!("login page answered {}", page.status());
    }
    let (authz, csrf) = hidden_fields(&page.text().await?)?;
    let form = [
        ("authz", authz.as_str()),
        ("csrf", csrf.as_str()),
        ("username", USERNAME),
        ("password", PASSWORD),
    ];
    let done = browser
        .post(format!("{}/login", app.base))
        .form(&form)
        .send()
        .await?;
    let back = redirect_target(&app.base, &done, "login")?;
    let back = url::Url::parse(&back)?;
    let code = back
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .with_context(|| format!("no code in {back}"))?;

    let response = browser
        .post(format!("{}/oauth/token", app.base))
        .basic_auth(CLIENT_ID, Some(SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ])
        .send()
        .await?;
    if response.status() != StatusCode::OK {
        bail!(
            "code exchange answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    Ok(response.json().await?)
}

/// The `authz` and `csrf` hidden inputs of the identifier page.
fn hidden_fields(html: &str) -> anyhow::Result<(String, String)> {
    let doc = Html::parse_document(html);
    let field = |name: &str| {
        let selector =
            Selector::parse(&format!("input[name=\"{name}\"]")).expect("a valid selector");
        doc.select(&selector)
            .next()
            .and_then(|input| input.value().attr("value"))
            .map(str::to_string)
            .with_context(|| format!("no {name} input on the login page"))
    };
    Ok((field("authz")?, field("csrf")?))
}

/// What the load generator reports.
#[derive(Serialize, Deserialize)]
struct Report {
    grants: usize,
    elapsed_secs: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: Vec<String>,
}

struct Load {
    grants: usize,
    elapsed: Duration,
    p50_ms: f64,
    p99_ms: f64,
    errors: Vec<String>,
    /// `None` where /proc or Redis's INFO cannot be read.
    cpu: Option<Used>,
}

/// Cumulative CPU times at one instant.
struct Snapshot {
    at: Instant,
    server: Duration,
    loadgen: Duration,
    redis: Duration,
    machine: Duration,
}

impl Snapshot {
    /// `loadgen`: the load generator's pid; `redis`: the URL of the Redis
    /// the server uses.
    async fn now(loadgen: Option<u32>, redis: Option<&str>) -> Option<Self> {
        let loadgen = match loadgen {
            Some(pid) => cpu_of(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?.1,
            None => Duration::ZERO,
        };
        let redis = match redis {
            Some(url) => redis_cpu(url).await?,
            None => Duration::ZERO,
        };
        Some(Snapshot {
            at: Instant::now(),
            server: process_cpu()?,
            loadgen,
            redis,
            machine: machine_cpu()?,
        })
    }
}

/// CPU time spent between two snapshots: by this process (the server), by
/// the load generator, by redis-server, and by everything else.
struct Used {
    wall: Duration,
    server: Duration,
    loadgen: Duration,
    redis: Duration,
    others: Duration,
}

fn used(start: Option<Snapshot>, end: Option<Snapshot>) -> Option<Used> {
    let (start, end) = (start?, end?);
    let server = end.server.saturating_sub(start.server);
    let loadgen = end.loadgen.saturating_sub(start.loadgen);
    let redis = end.redis.saturating_sub(start.redis);
    let machine = end.machine.saturating_sub(start.machine);
    Some(Used {
        wall: end.at - start.at,
        server,
        loadgen,
        redis,
        others: machine.saturating_sub(server + loadgen + redis),
    })
}

impl Used {
    /// `time` as a percentage of what `cores` could have done meanwhile.
    fn share(&self, time: Duration, cores: usize) -> f64 {
        time.as_secs_f64() / (cores as f64 * self.wall.as_secs_f64()) * 100.0
    }
}

/// redis-server's user plus system time, from `INFO cpu`.
async fn redis_cpu(url: &str) -> Option<Duration> {
    let mut conn = redis::Client::open(url)
        .ok()?
        .get_multiplexed_async_connection()
        .await
        .ok()?;
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut conn)
        .await
        .ok()?;
    let seconds = |name: &str| -> Option<f64> {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
    };
    Some(Duration::from_secs_f64(
        seconds("used_cpu_user")? + seconds("used_cpu_sys")?,
    ))
}

/// Runs the load generator in its own process over `chains` and reads the
/// CPU times at the start and the end of its measured window, which it
/// announces on its standard output.
async fn load(
    app: &App,
    chains: Vec<String>,
    config: &Config,
    redis: Option<&str>,
    dir: &tempfile::TempDir,
) -> anyhow::Result<Load> {
    use std::io::BufRead;

    let tokens = dir.path().join("chains.txt");
    std::fs::write(&tokens, chains.join("\n"))?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .env(LOADGEN_ENV, &tokens)
        .env("SWITCHYARD_BENCH_URL", format!("{}/oauth/token", app.base))
        .env(
            "SWITCHYARD_BENCH_SECS",
            config.duration.as_secs().to_string(),
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting the load generator")?;
    let pid = Some(child.id());
    // Its lines are read on a thread of their own and handed over as they
    // come, so the snapshots are taken the moment they are announced.
    let stdout = child.stdout.take().context("its stdout")?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut start = None;
    let mut report = None;
    let mut end = None;
    while let Some(line) = rx.recv().await {
        if line == loadgen::MEASURING {
            start = Snapshot::now(pid, redis).await;
        } else if let Some(json) = line.strip_prefix(loadgen::DONE) {
            end = Snapshot::now(pid, redis).await;
            report = Some(serde_json::from_str::<Report>(json)?);
        }
    }
    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    let report =
        report.with_context(|| format!("the load generator reported nothing ({status})"))?;
    Ok(Load {
        grants: report.grants,
        elapsed: Duration::from_secs_f64(report.elapsed_secs),
        p50_ms: report.p50_ms,
        p99_ms: report.p99_ms,
        errors: report.errors,
        cpu: used(start, end),
    })
}

/// The load generator, in its own process: every chain runs its own
/// rotation in a loop, each grant spending the token it presents and
/// continuing with the one it receives, as a client does.
mod loadgen {
    use super::*;

    /// Printed when the measured window starts.
    pub const MEASURING: &str = "measuring";
    /// Printed before the report when the last grant has been answered.
    pub const DONE: &str = "done ";

    pub async fn main(tokens: &str) -> ExitCode {
        match run(tokens).await {
            Ok(report) => {
                println!(
                    "{DONE}{}",
                    serde_json::to_string(&report).expect("a report serialises")
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("load generator: {e:#}");
                ExitCode::FAILURE
            }
        }
    }

    async fn run(tokens: &str) -> anyhow::Result<Report> {
        let chains: Vec<String> = std::fs::read_to_string(tokens)?
            .lines()
            .map(Into::into)
            .collect();
        let url: Arc<str> = std::env::var("SWITCHYARD_BENCH_URL")?.into();
        let duration = Duration::from_secs(env_number("SWITCHYARD_BENCH_SECS", 10));
        // One client for all chains, as one busy back end would have:
        // keep-alive connections, one per chain, never re-opened during the
        // run.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(chains.len())
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let measure_from = Instant::now() + WARM_UP;
        let until = measure_from + duration;
        let tasks: Vec<_> = chains
            .into_iter()
            .map(|token| tokio::spawn(chain(http.clone(), url.clone(), token, measure_from, until)))
            .collect();
        tokio::time::sleep_until(measure_from.into()).await;
        println!("{MEASURING}");
        let mut latencies = Vec::new();
        let mut errors = Vec::new();
        for task in futures::future::join_all(tasks).await {
            match task {
                Ok((l, e)) => {
                    latencies.extend(l);
                    errors.extend(e);
                }
                Err(e) => errors.push(format!("chain task failed: {e}")),
            }
        }
        // Grants still in flight at the deadline finish after it, so the
        // rate is taken over the time to the last answer, not the nominal
        // duration.
        let elapsed = measure_from.elapsed();
        latencies.sort_unstable();
        Ok(Report {
            grants: latencies.len(),
            elapsed_secs: elapsed.as_secs_f64(),
            p50_ms: ms(percentile(&latencies, 0.50)),
            p99_ms: ms(percentile(&latencies, 0.99)),
            errors,
        })
    }

    async fn chain(
        http: reqwest::Client,
        url: Arc<str>,
        mut token: String,
        measure_from: Instant,
        until: Instant,
    ) -> (Vec<Duration>, Option<String>) {
        #[derive(Deserialize)]
        struct Rotated {
            refresh_token: String,
        }
        let mut latencies = Vec::with_capacity(4096);
        while Instant::now() < until {
            let started = Instant::now();
            let sent = http
                .post(&*url)
                .basic_auth(CLIENT_ID, Some(SECRET))
                .form(&[("grant_type", "refresh_token"), ("refresh_token", &token)])
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => return (latencies, Some(format!("transport: {e}"))),
            };
            let status = response.status();
            // The body is read and parsed inside the timed span: a client
            // has no token until it has done both.
            let body = match response.bytes().await {
                Ok(b) => b,
                Err(e) => return (latencies, Some(format!("reading the body: {e}"))),
            };
            if status != StatusCode::OK {
                // The presented token may be spent; presenting it again
                // would count as reuse and revoke the family, so the chain
                // ends here.
                return (
                    latencies,
                    Some(format!("HTTP {status}: {}", String::from_utf8_lossy(&body))),
                );
            }
            match serde_json::from_slice::<Rotated>(&body) {
                Ok(r) => token = r.refresh_token,
                Err(e) => {
                    return (
                        latencies,
                        Some(format!("no refresh token in the response: {e}")),
                    );
                }
            }
            if started >= measure_from {
                latencies.push(started.elapsed());
            }
        }
        (latencies, None)
    }
}

/// The algorithm's signatures per second straight from aws-lc-rs, with a key
/// generated here: the ceiling the endpoint is measured against.
async fn raw_signing_rate(alg: Alg, message: Vec<u8>, threads: usize) -> anyhow::Result<Signing> {
    let rng = SystemRandom::new();
    let sign: Box<dyn Fn() -> anyhow::Result<()> + Send + Sync> = match alg {
        Alg::RS256 => {
            let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)?;
            Box::new(move || {
                let mut sig = vec![0u8; key.public_modulus_len()];
                key.sign(&signature::RSA_PKCS1_SHA256, &rng, &message, &mut sig)?;
                Ok(())
            })
        }
        Alg::ES256 => {
            let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)?;
            Box::new(move || {
                key.sign(&rng, &message)
                    .map(drop)
                    .map_err(anyhow::Error::from)
            })
        }
        Alg::EdDSA => {
            let key = Ed25519KeyPair::generate()?;
            Box::new(move || {
                // Infallible, and FFI the optimiser cannot drop; the
                // signature itself is not needed.
                std::hint::black_box(key.sign(&message));
                Ok(())
            })
        }
    };
    signing_rate(threads, sign).await
}

/// What the signing threads achieved.
struct Signing {
    /// Signatures per second of wall time, all threads together.
    per_sec: f64,
    /// CPU time one signature took, from the threads' own clocks: unlike
    /// `per_sec`, it holds when other processes take some of the cores.
    cpu_per_signature: Option<Duration>,
}

/// Calls `sign` on `threads` OS threads at once for [`SIGNING_SECS`].
async fn signing_rate(
    threads: usize,
    sign: impl Fn() -> anyhow::Result<()> + Send + Sync + 'static,
) -> anyhow::Result<Signing> {
    tokio::task::spawn_blocking(move || {
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        let per_thread = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let cpu_start = thread_cpu();
                        let mut n = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            sign()?;
                            n += 1;
                        }
                        let cpu = thread_cpu()
                            .zip(cpu_start)
                            .map(|(end, start)| end.saturating_sub(start));
                        anyhow::Ok((n, cpu))
                    })
                })
                .collect();
            std::thread::sleep(SIGNING_SECS);
            stop.store(true, Ordering::Relaxed);
            workers
                .into_iter()
                .map(|w| w.join().expect("a signing thread panicked"))
                .collect::<anyhow::Result<Vec<_>>>()
        })?;
        let elapsed = started.elapsed();
        let signatures: u64 = per_thread.iter().map(|(n, _)| n).sum();
        let cpu: Option<Duration> = per_thread.iter().map(|(_, cpu)| *cpu).sum();
        Ok(Signing {
            per_sec: signatures as f64 / elapsed.as_secs_f64(),
            cpu_per_signature: cpu.map(|c| c / signatures.max(1) as u32),
        })
    })
    .await?
}

/// CPU time of the calling thread, from /proc/thread-self/schedstat (Linux),
/// in nanoseconds rather than /proc/…/stat's ticks.
fn thread_cpu() -> Option<Duration> {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(
        schedstat.split_whitespace().next()?.parse().ok()?,
    ))
}
