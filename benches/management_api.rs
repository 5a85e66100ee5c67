//! Management API read throughput: `GET /api/v2/users/{id}` (Auth0
//! Management API v2, "Get a User") over random users, as a busy backend
//! calls it with one client credentials token, set against `GET /healthz`
//! measured the same way in the same run.
//!
//! The server is the real one (`switchyard::startup::Application`) on the
//! embedded store: a SQLite file in a temporary directory and the
//! in-process session store, holding `SWITCHYARD_BENCH_USERS` local users
//! (default 10,000), written through the store before the server takes
//! requests. The per-client rate limit (`[management_api]`) is raised out
//! of the way, so what is measured is the endpoint: the bearer token's
//! verification, the rate-limit bucket, one read by id, and the user
//! rendered as Auth0 renders it. `/healthz` answers a constant with no
//! store and no token: the floor of HTTP, routing and the middleware on
//! these cores, so the ratio says how much of that floor the API keeps.
//!
//! The load generator is a tokio multi-connection client in this process
//! (reqwest, as benches/token_endpoint.rs drives the token endpoint) on a
//! runtime of its own: `SWITCHYARD_BENCH_CONCURRENCY` tasks (default 64),
//! each with its own keep-alive connection and a request in flight at all
//! times, for `SWITCHYARD_BENCH_SECS` (default 10) after a 2 s warm-up,
//! once per endpoint. Reported: requests/s, p50 and p99 latency (the time
//! to the whole body), the ratio to the reference, and how busy the cores
//! were; the target is 10,000 requests/s. A missed target is reported, not
//! turned into a failure (figures on a shared machine are noisy); an
//! answer other than 200 makes the exit status non-zero.
//!
//! Run with `cargo bench --bench management_api`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use switchyard::config::{ClientSettings, ManagementApiSettings, Settings};
use switchyard::crypto::hash_secret;
use switchyard::startup::Application;
use switchyard::state::AppState;
use switchyard::store::{ClientSource, GrantType, NewUser, Profile};

use switchyard_kit::cpu::{machine_cpu, process_cpu};
use switchyard_kit::stats::{ms, percentile};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLIENT_ID: &str = "bench-backend";
const SECRET: &str = "bench-client-secret-0123456789abcdef";
/// Excluded from the figures: connection set-up, the first SQLite page
/// reads and allocator growth are start-up costs, not steady state.
const WARM_UP: Duration = Duration::from_secs(2);
/// Users written at once while seeding; SQLite takes one writer at a time,
/// so more would only queue.
const SEED_PARALLELISM: usize = 8;
/// Error responses printed in full; the rest are only counted.
const ERRORS_SHOWN: usize = 5;
/// Share of the cores other processes may take before the figures are
/// flagged as disturbed.
const NOISE_PERCENT: f64 = 5.0;
const TARGET_PER_SEC: f64 = 10_000.0;
/// The load generator's runtime threads.
const CLIENT_THREAD: &str = "bench-client";

struct Config {
    users: usize,
    duration: Duration,
    concurrency: usize,
    cores: usize,
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

fn main() -> ExitCode {
    let config = Config {
        users: env_number("SWITCHYARD_BENCH_USERS", 10_000).max(1) as usize,
        duration: Duration::from_secs(env_number("SWITCHYARD_BENCH_SECS", 10).max(1)),
        concurrency: env_number("SWITCHYARD_BENCH_CONCURRENCY", 64).max(1) as usize,
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    // Two runtimes: the server's, as `#[tokio::main]` builds it (one worker
    // per core), and the load generator's, so the clients do not queue
    // behind the server's tasks on the same workers.
    let runtimes = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .and_then(|server| {
            let client = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.cores.min(2))
                .thread_name(CLIENT_THREAD)
                .enable_all()
                .build()?;
            Ok((server, client))
        });
    let (server, client) = match runtimes {
        Ok(r) => r,
        Err(e) => {
            eprintln!("management_api bench: building the runtimes: {e}");
            return ExitCode::FAILURE;
        }
    };
    match server.block_on(run(&config, client.handle().clone())) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("management_api bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The whole run; the number of failed requests.
async fn run(config: &Config, client: tokio::runtime::Handle) -> anyhow::Result<usize> {
    let dir = tempfile::tempdir()?;
    let app = spawn_app(&dir).await?;
    println!(
        "management API: GET /api/v2/users/{{id}} over {} users, SQLite file, in-process session store\n\
         {} connections for {} s per endpoint (after {} s warm-up), {} cores; \
         load generator: tokio + reqwest in this process, on a runtime of its own\n",
        config.users,
        config.concurrency,
        config.duration.as_secs(),
        WARM_UP.as_secs(),
        config.cores,
    );

    let started = Instant::now();
    let ids = seed(&app.state, config.users).await?;
    println!(
        "seeded {} users in {:.1} s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
    let token = token(&app).await?;
    let paths: Vec<String> = api_ids(&app, &token, &ids)
        .await?
        .iter()
        .map(|id| format!("/api/v2/users/{}", encode_path(id)))
        .collect();

    let reference = measure(
        &client,
        config,
        &app.base,
        Arc::new(vec!["/healthz".to_string()]),
        None,
    )
    .await;
    report("reference GET /healthz", &reference, None);
    let api = measure(
        &client,
        config,
        &app.base,
        Arc::new(paths),
        Some(Arc::from(format!("Bearer {token}"))),
    )
    .await;
    report("GET /api/v2/users/{id}", &api, Some(&reference));
    let per_sec = api.per_sec();
    println!(
        "target ≥ 10,000 requests/s: {} ({per_sec:.0} requests/s)",
        if per_sec >= TARGET_PER_SEC {
            "met"
        } else {
            "missed"
        }
    );
    Ok(reference.failed + api.failed)
}

struct App {
    base: String,
    state: AppState,
    /// The Management API's identifier as Auth0's SDKs spell it,
    /// `https://{domain}/api/v2/`.
    audience: String,
}

/// The app as the integration tests start it (tests/api/helpers.rs) on
/// the embedded store, with the Management API's rate limit out of reach.
async fn spawn_app(dir: &tempfile::TempDir) -> anyhow::Result<App> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let settings = Settings {
        issuer: format!("http://127.0.0.1:{port}/"),
        database_url: format!("sqlite://{}", dir.path().join("switchyard.db").display()),
        management_api: ManagementApiSettings {
            // The bucket would otherwise hold the bench to 50 requests/s
            // (Auth0 "Management API Rate Limits"); it is still consulted.
            requests_per_second: 1e9,
            burst: 1_000_000,
            ..ManagementApiSettings::default()
        },
        ..Settings::default()
    };
    let app = Application::build_with_listener(settings, listener)
        .await
        .context("the application builds")?;
    let state = app.state();
    // The server lives as long as the process: the bench ends with it.
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    Ok(App {
        base: format!("http://127.0.0.1:{port}"),
        state,
        audience: format!("https://127.0.0.1:{port}/api/v2/"),
    })
}

/// `n` local users with profiles as a signup leaves them; their ids.
async fn seed(state: &AppState, n: usize) -> anyhow::Result<Vec<String>> {
    futures::stream::iter(0..n)
        .map(|i| async move {
            let user = NewUser {
                profile: Profile {
                    email: Some(format!("user{i:05}@example.com")),
                    email_verified: true,
                    name: Some(format!("User {i}")),
                    given_name: Some("User".into()),
                    family_name: Some(format!("{i}")),
                    ..Profile::default()
                },
                ..NewUser::default()
            };
            let created = state.db.create_user(&user, None).await?;
            anyhow::Ok(created.id)
        })
        .buffer_unordered(SEED_PARALLELISM)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// A machine client allowed `read:users`, and its token for the
/// Management API as an Auth0 SDK asks for it (client credentials,
/// `client_secret_post`, `audience=https://{domain}/api/v2/`).
async fn token(app: &App) -> anyhow::Result<String> {
    let client = ClientSettings {
        client_id: CLIENT_ID.into(),
        name: Some("Management API bench".into()),
        grant_types: vec![GrantType::ClientCredentials],
        scopes: vec!["read:users".into()],
        ..ClientSettings::default()
    }
    .to_client(Some(hash_secret(SECRET)), ClientSource::Cli);
    app.state.db.create_client(&client).await?;
    let response = reqwest::Client::new()
        .post(format!("{}/oauth/token", app.base))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("audience", &app.audience),
        ])
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    ensure!(
        status == StatusCode::OK,
        "the client credentials grant answered {status}: {body}"
    );
    body["access_token"]
        .as_str()
        .map(str::to_string)
        .context("no access_token in the token response")
}

/// The users' ids as the API spells them. A local user's `user_id` may be
/// its store id or carry a provider prefix (`auth0|…`, as Auth0's database
/// users do): one user is looked up by email (Management API v2, "Search
/// Users by Email") and the same spelling is applied to every id.
async fn api_ids(app: &App, token: &str, ids: &[String]) -> anyhow::Result<Vec<String>> {
    let sample = app
        .state
        .db
        .get_user(&ids[0])
        .await?
        .context("a seeded user is missing")?;
    let email = sample.profile.email.context("a seeded user has no email")?;
    let response = reqwest::Client::new()
        .get(format!("{}/api/v2/users-by-email", app.base))
        .query(&[("email", &email)])
        .bearer_auth(token)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status != StatusCode::OK {
        // Measured anyway: every request will fail the same way, and the
        // errors say how.
        println!("users-by-email answered {status} ({body}); the store's ids are used as they are");
        return Ok(ids.to_vec());
    }
    let api_id = body[0]["user_id"]
        .as_str()
        .with_context(|| format!("users-by-email for {email}: no user_id in {body}"))?;
    let Some(prefix) = api_id.strip_suffix(sample.id.as_str()) else {
        bail!(
            "the API's user_id {api_id:?} is not the store's id {:?} with a prefix",
            sample.id
        );
    };
    Ok(ids.iter().map(|id| format!("{prefix}{id}")).collect())
}

/// A user id as a path segment: SDKs percent-encode it (`auth0|…` holds
/// a `|`).
fn encode_path(id: &str) -> String {
    form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

struct Load {
    requests: usize,
    failed: usize,
    rate_limited: usize,
    elapsed: Duration,
    /// Sorted.
    latencies: Vec<Duration>,
    errors: Vec<String>,
    cpu: Option<Used>,
}

impl Load {
    fn per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// One endpoint under load: every task keeps one request in flight on its
/// own connection, over `paths` in a pseudo-random order of its own.
async fn measure(
    client: &tokio::runtime::Handle,
    config: &Config,
    base: &str,
    paths: Arc<Vec<String>>,
    authorization: Option<Arc<str>>,
) -> Load {
    // One client for all tasks, as one busy back end would have: keep-alive
    // connections, one per task, never re-opened during the run.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(config.concurrency)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client");
    let base: Arc<str> = base.into();
    let measure_from = Instant::now() + WARM_UP;
    let until = measure_from + config.duration;
    let tasks: Vec<_> = (0..config.concurrency)
        .map(|i| {
            client.spawn(requests(
                http.clone(),
                base.clone(),
                paths.clone(),
                authorization.clone(),
                0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1),
                measure_from,
                until,
            ))
        })
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_start = Snapshot::now();
    let mut load = Load {
        requests: 0,
        failed: 0,
        rate_limited: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        errors: Vec::new(),
        cpu: None,
    };
    for task in futures::future::join_all(tasks).await {
        match task {
            Ok(t) => {
                load.latencies.extend(t.latencies);
                load.failed += t.failed;
                load.rate_limited += t.rate_limited;
                load.errors.extend(t.errors);
            }
            Err(e) => {
                load.failed += 1;
                load.errors.push(format!("a load task failed: {e}"));
            }
        }
    }
    // Requests in flight at the deadline finish after it, so the rate is
    // taken over the time to the last answer, not the nominal duration.
    load.elapsed = measure_from.elapsed();
    load.cpu = used(cpu_start, Snapshot::now());
    load.latencies.sort_unstable();
    load.requests = load.latencies.len();
    load
}

/// What one load task saw.
struct Task {
    /// Of the answered requests started in the measured window.
    latencies: Vec<Duration>,
    failed: usize,
    rate_limited: usize,
    /// The first few failures.
    errors: Vec<String>,
}

async fn requests(
    http: reqwest::Client,
    base: Arc<str>,
    paths: Arc<Vec<String>>,
    authorization: Option<Arc<str>>,
    mut seed: u64,
    measure_from: Instant,
    until: Instant,
) -> Task {
    let mut task = Task {
        latencies: Vec::with_capacity(1 << 14),
        failed: 0,
        rate_limited: 0,
        errors: Vec::new(),
    };
    let mut checked = false;
    while Instant::now() < until {
        // xorshift64: a cheap spread over the users, different per task.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let path = &paths[(seed % paths.len() as u64) as usize];
        let started = Instant::now();
        let mut request = http.get(format!("{base}{path}"));
        if let Some(value) = &authorization {
            request = request.header(reqwest::header::AUTHORIZATION, &**value);
        }
        let outcome = match request.send().await {
            Ok(response) => {
                let status = response.status();
                // The body is read inside the timed span: a backend has no
                // user until it has it.
                match response.bytes().await {
                    Ok(body) if status == StatusCode::OK => Ok(body),
                    Ok(body) => Err((
                        Some(status),
                        format!("HTTP {status}: {}", String::from_utf8_lossy(&body)),
                    )),
                    Err(e) => Err((Some(status), format!("reading the body: {e}"))),
                }
            }
            Err(e) => Err((None, format!("transport: {e}"))),
        };
        match outcome {
            Ok(body) => {
                // The first answer of each task is looked at: a user whose
                // user_id names the requested one, not an empty 200.
                if !checked && authorization.is_some() {
                    checked = true;
                    if let Err(e) = check_user(&body, path) {
                        task.failed += 1;
                        task.errors.push(e);
                        continue;
                    }
                }
                if started >= measure_from {
                    task.latencies.push(started.elapsed());
                }
            }
            Err((status, message)) => {
                task.failed += 1;
                if status == Some(StatusCode::TOO_MANY_REQUESTS) {
                    task.rate_limited += 1;
                }
                if task.errors.len() < ERRORS_SHOWN {
                    task.errors.push(message);
                }
                if status.is_none() {
                    // The connection is gone; a new one would be measured
                    // as set-up, not as the endpoint.
                    break;
                }
            }
        }
    }
    task
}

/// The body is an Auth0 user object for the requested id.
fn check_user(body: &[u8], path: &str) -> Result<(), String> {
    let user: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let id = user["user_id"]
        .as_str()
        .ok_or_else(|| format!("no user_id in {user}"))?;
    if !path.ends_with(&encode_path(id)) {
        return Err(format!("{path} answered user {id}"));
    }
    Ok(())
}

fn report(name: &str, load: &Load, reference: Option<&Load>) {
    let ratio = reference
        .map(|r| {
            format!(
                " | {:.1} % of the reference",
                load.per_sec() / r.per_sec() * 100.0
            )
        })
        .unwrap_or_default();
    println!(
        "{name}: {:.0} requests/s  p50 {:.2} ms  p99 {:.2} ms  failed {}{ratio}",
        load.per_sec(),
        ms(percentile(&load.latencies, 0.50)),
        ms(percentile(&load.latencies, 0.99)),
        load.failed,
    );
    println!(
        "       {} requests in {:.2} s",
        load.requests,
        load.elapsed.as_secs_f64()
    );
    if let Some(cpu) = &load.cpu {
        let others = cpu.share(cpu.others);
        println!(
            "       cores busy: this process (server and load generator) {:.0} %, other processes {others:.0} %{}",
            cpu.share(cpu.process),
            if others > NOISE_PERCENT {
                "; the machine was shared, so requests/s are low"
            } else {
                ""
            },
        );
    }
    if load.rate_limited > 0 {
        println!(
            "       {} answers were 429: the [management_api] bucket throttled the bench",
            load.rate_limited
        );
    }
    for e in load.errors.iter().take(ERRORS_SHOWN) {
        println!("       error: {e}");
    }
    if load.failed > load.errors.len().min(ERRORS_SHOWN) {
        println!("       … {} failed requests in all", load.failed);
    }
    println!();
}

/// Cumulative CPU times at one instant.
struct Snapshot {
    at: Instant,
    process: Duration,
    machine: Duration,
}

impl Snapshot {
    fn now() -> Option<Self> {
        Some(Snapshot {
            at: Instant::now(),
            process: process_cpu()?,
            machine: machine_cpu()?,
        })
    }
}

/// CPU time spent between two snapshots by this process and by everything
/// else on the machine.
struct Used {
    wall: Duration,
    cores: usize,
    process: Duration,
    others: Duration,
}

fn used(start: Option<Snapshot>, end: Option<Snapshot>) -> Option<Used> {
    let (start, end) = (start?, end?);
    let process = end.process.saturating_sub(start.process);
    let machine = end.machine.saturating_sub(start.machine);
    Some(Used {
        wall: end.at - start.at,
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        process,
        others: machine.saturating_sub(process),
    })
}

impl Used {
    /// `time` as a percentage of what the cores could have done meanwhile.
    fn share(&self, time: Duration) -> f64 {
        time.as_secs_f64() / (self.cores as f64 * self.wall.as_secs_f64()) * 100.0
    }
}
