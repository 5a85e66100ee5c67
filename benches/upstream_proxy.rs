//! Latency Switchyard adds in front of an upstream identity provider, set
//! against the same calls made straight to that upstream, in one run.
//!
//! Everything runs in this process over real loopback HTTP: the fake Auth0
//! of the test suite (the kit's `fake` module, `tests/kit`), Switchyard in front
//! of it, and a sequential client (one request in flight at a time, after a
//! warm-up, the series interleaved request by request) so that both sides of
//! each comparison see the same machine at the same moment.
//!
//! - Refresh. Direct: a chain of refresh-token grants at the fake's token
//!   endpoint, each using the refresh token the previous one returned.
//!   Through Switchyard: gateway refresh-token grants for a session that
//!   logged in through the fake, with the session's mapped upstream token
//!   made due before every request, so every measured gateway refresh
//!   refreshes at the upstream (checked: the fake's `token:refresh_token`
//!   count goes up by exactly one per gateway refresh). A second session
//!   whose upstream token is long-lived shows the gateway refresh that needs
//!   no upstream call.
//! - Code exchange. Direct: the fake's authorization-code grant plus its
//!   userinfo, the two calls an application made at login before it was
//!   repointed. Through Switchyard: `/login/callback`, which makes those two
//!   calls itself and adds ID-token validation, the shadow-user upsert and
//!   the gateway session; then Switchyard's own `/oauth/token` code
//!   exchange. Logins are driven to the point of the timed request outside
//!   the timed section.
//! - Single flight. N concurrent gateway refreshes of one browser session
//!   (N grants from N silent `/authorize` calls) whose upstream token is due:
//!   exactly one upstream refresh call is allowed.
//! - Where the time goes. The pieces of Switchyard's own work timed alone:
//!   the upstream calls through Switchyard's upstream client against plain
//!   HTTP, the upstream ID-token check (openidconnect's against aws-lc-rs),
//!   one signature, one SQLite commit (with `synchronous` FULL, as the
//!   product runs, and NORMAL, measured in the same rounds as the
//!   callbacks), the upstream-token mapping; then the end-to-end means split
//!   into those pieces.
//!
//! Run with `cargo bench --bench upstream_proxy` (cargo sets the secrets the
//! settings name from `.cargo/config.toml`). The session store is the
//! in-process one and the database a SQLite file in a temporary directory,
//! unless `SWITCHYARD_BENCH_REDIS_URL` names a Redis (a random key prefix,
//! deleted at the end). `SWITCHYARD_BENCH_SAMPLES` sets the measured
//! requests per series (default 2000, after 100 warm-up rounds) and
//! `SWITCHYARD_BENCH_SIGNING_ALG` Switchyard's signing algorithm (default
//! RS256, the product default). The exit status is non-zero when a
//! correctness check fails (an error response, an upstream call count that
//! is not the one expected); a latency target that is missed is reported
//! in the summary, not turned into a failure, because latency on a shared
//! machine is noisy.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use openidconnect::core::{CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet};
use openidconnect::{ClientId, IssuerUrl, Nonce};
use reqwest::header::{ACCEPT, COOKIE, HeaderMap, LOCATION, SET_COOKIE};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::Value;
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use switchyard::config::{ClientSettings, Cohort, Settings, UpstreamSettings};
use switchyard::crypto::hash_secret;
use switchyard::crypto::{b64url_decode, random_token};
use switchyard::startup::Application;
use switchyard::state::AppState;
use switchyard::store::{AuditEvent, ClientSource, now};
use switchyard::tokens::keys::Alg;
use tokio::sync::oneshot;

use switchyard_kit::fake::{FakeUpstream, FakeUser, Flavor};
use switchyard_kit::http::{form_fields, no_redirects, pkce, try_location};
use switchyard_kit::isolation::delete_keys;
use switchyard_kit::stats;

/// Switchyard's own client at the fake, as in tests/api/upstream.rs.
const UPSTREAM_CLIENT: &str = "switchyard";
const UPSTREAM_SECRET_ENV: &str = "SWITCHYARD_TEST_UPSTREAM_SECRET";
/// Named even for the in-process store: with Redis the check requires it.
const TOKEN_KEYS_ENV: &str = "SWITCHYARD_TEST_TOKEN_KEYS";

const CLIENT_ID: &str = "web";
const SECRET: &str = "web-client-secret-0123456789abcdef";
const REDIRECT: &str = "https://app.example.com/callback";
const APP_SCOPE: &str = "openid profile email";
const EMAIL: &str = "alice@example.com";
const SUB: &str = "auth0|5f3a9b2c1d4e5f6a7b8c9d0e";
const PASSWORD: &str = "correct horse battery staple";

/// Rounds run before the measured ones: connection pools, discovery and
/// JWKS caches, SQLite page cache and allocator growth are start-up costs.
const WARM_UP: usize = 100;
const CONCURRENT_REFRESHES: usize = 50;
/// Samples of each isolated phase in "where the time goes".
const PHASE_SAMPLES: usize = 500;

const TARGET_P50_MS: f64 = 1.0;
const TARGET_P99_MS: f64 = 3.0;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("upstream_proxy bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<bool> {
    let samples = match std::env::var("SWITCHYARD_BENCH_SAMPLES") {
        Ok(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("SWITCHYARD_BENCH_SAMPLES={v:?} is not a positive number"))?,
        Err(_) => 2000,
    };
    let alg = std::env::var("SWITCHYARD_BENCH_SIGNING_ALG").unwrap_or_else(|_| "RS256".into());
    let redis_url = std::env::var("SWITCHYARD_BENCH_REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty());
    let bench = Bench::start(redis_url, &alg).await?;
    let result = measure(&bench, samples, &alg).await;
    bench.stop().await;
    result
}

async fn measure(bench: &Bench, samples: usize, alg: &str) -> anyhow::Result<bool> {
    let started = Instant::now();
    println!(
        "upstream proxy: Switchyard in front of a fake Auth0, both in this process on loopback\n\
         stores: {}; signing: {alg}; {} cores\n\
         {samples} measured requests per series after {WARM_UP} warm-up rounds, one request in flight at a time\n",
        bench.stores(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );

    let refresh = refresh_series(bench, samples).await?;
    refresh.print();
    let code = code_series(bench, samples).await?;
    code.print();
    let flight = single_flight(bench).await?;
    flight.print();
    let phases = phases(bench, alg).await?;
    phases.print();

    let refresh_added = Added::between(&refresh.through_upstream, &refresh.direct);
    let callback_added = Added {
        p50: percentile(&code.callback, 0.5)
            - percentile(&code.direct_exchange, 0.5)
            - percentile(&code.direct_userinfo, 0.5),
        p99: percentile(&code.callback, 0.99)
            - percentile(&code.direct_exchange, 0.99)
            - percentile(&code.direct_userinfo, 0.99),
    };
    let round_trip_added = Added {
        p50: percentile(&code.callback_and_exchange, 0.5)
            - percentile(&code.direct_exchange_and_userinfo, 0.5),
        p99: percentile(&code.callback_and_exchange, 0.99)
            - percentile(&code.direct_exchange_and_userinfo, 0.99),
    };
    println!("decomposition (means in ms, which add up where percentiles do not)");
    println!(
        "  gateway refresh {:.2} = Switchyard without an upstream call {:.2} (of which 2 signatures {:.2}) + upstream leg {:.2}",
        mean(&refresh.through_upstream),
        mean(&refresh.no_upstream),
        2.0 * mean(&phases.signature),
        mean(&refresh.through_upstream) - mean(&refresh.no_upstream),
    );
    let client_over_http = mean(&phases.client_refresh) - mean(&phases.direct_refresh);
    println!(
        "  upstream leg {:.2} = direct upstream refresh {:.2} + upstream client over plain HTTP {:.2} (of which ID-token check {:.2}) + the rest {:.2}",
        mean(&refresh.through_upstream) - mean(&refresh.no_upstream),
        mean(&refresh.direct),
        client_over_http,
        mean(&phases.id_token_check),
        mean(&refresh.through_upstream)
            - mean(&refresh.no_upstream)
            - mean(&refresh.direct)
            - client_over_http,
    );
    // The upstream's own time as the direct series saw it, plus what
    // Switchyard's upstream client adds over plain HTTP.
    let upstream_part =
        mean(&code.direct_exchange) + mean(&code.direct_userinfo) + mean(&phases.client_exchange)
            - mean(&phases.direct_exchange);
    println!(
        "  /login/callback {:.2} = upstream code grant + userinfo through the upstream client {:.2} + 3 SQLite commits {:.2} + the rest {:.2}\n",
        mean(&code.callback),
        upstream_part,
        3.0 * mean(&code.commit),
        mean(&code.callback) - upstream_part - 3.0 * mean(&code.commit),
    );

    let checks_ok = refresh.checks_ok() && flight.upstream_calls == 1 && flight.ok == flight.n;

    println!("== summary ({}, {alg}) ==", bench.stores());
    println!(
        "refresh added:        {}   [gateway refresh that refreshes upstream − direct upstream refresh]",
        refresh_added.against_targets()
    );
    println!(
        "  for context:        {}   [gateway refresh with no upstream call − direct upstream refresh]",
        Added::between(&refresh.no_upstream, &refresh.direct).plain()
    );
    println!(
        "code exchange added:  {}   [/login/callback − direct upstream code exchange − direct upstream userinfo]",
        callback_added.against_targets()
    );
    println!(
        "  for context:        {}   [/login/callback + gateway code exchange − direct code exchange + userinfo]",
        round_trip_added.plain()
    );
    println!(
        "single flight:        {} concurrent refreshes of one session → {} upstream refresh call{} (target 1) {}, {}/{} succeeded",
        flight.n,
        flight.upstream_calls,
        if flight.upstream_calls == 1 { "" } else { "s" },
        verdict(flight.upstream_calls == 1),
        flight.ok,
        flight.n,
    );
    println!(
        "upstream calls:       {}/{} measured gateway refreshes of the due session refreshed upstream {}; {} of {} of the long-lived one did {}",
        refresh.upstream_calls_when_due,
        refresh.through_upstream.len(),
        verdict(refresh.upstream_calls_when_due == refresh.through_upstream.len()),
        refresh.upstream_calls_when_fresh,
        refresh.no_upstream.len(),
        verdict(refresh.upstream_calls_when_fresh == 0),
    );
    println!(
        "run time {:.0} s; command: cargo bench --bench upstream_proxy",
        started.elapsed().as_secs_f64()
    );
    Ok(checks_ok)
}

/// Nearest-rank percentile of a sample, in milliseconds.
fn percentile(sample: &[Duration], q: f64) -> f64 {
    let mut ms: Vec<f64> = sample.iter().copied().map(stats::ms).collect();
    ms.sort_by(f64::total_cmp);
    stats::percentile(&ms, q)
}

fn mean(sample: &[Duration]) -> f64 {
    sample.iter().map(Duration::as_secs_f64).sum::<f64>() / sample.len() as f64 * 1e3
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "FAILED" }
}

fn print_series(label: &str, sample: &[Duration]) {
    println!(
        "  {label:<58} n {:>5}  p50 {:>6.3}  p90 {:>6.3}  p99 {:>6.3}  max {:>7.3}  mean {:>6.3} ms",
        sample.len(),
        percentile(sample, 0.5),
        percentile(sample, 0.9),
        percentile(sample, 0.99),
        percentile(sample, 1.0),
        mean(sample),
    );
}

/// A difference of percentiles, in milliseconds.
struct Added {
    p50: f64,
    p99: f64,
}

impl Added {
    fn between(through: &[Duration], direct: &[Duration]) -> Self {
        Self {
            p50: percentile(through, 0.5) - percentile(direct, 0.5),
            p99: percentile(through, 0.99) - percentile(direct, 0.99),
        }
    }

    fn against_targets(&self) -> String {
        format!(
            "p50 {:.2} ms (target ≤ {TARGET_P50_MS} ms) {:<6}  p99 {:.2} ms (target ≤ {TARGET_P99_MS} ms) {:<6}",
            self.p50,
            if self.p50 <= TARGET_P50_MS {
                "ok"
            } else {
                "MISSED"
            },
            self.p99,
            if self.p99 <= TARGET_P99_MS {
                "ok"
            } else {
                "MISSED"
            },
        )
    }

    fn plain(&self) -> String {
        format!("p50 {:.2} ms  p99 {:.2} ms", self.p50, self.p99)
    }
}

// ---------------------------------------------------------------------------
// The apps
// ---------------------------------------------------------------------------

struct Bench {
    fake: FakeUpstream,
    state: AppState,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    base: String,
    callback: String,
    upstream_secret: String,
    /// No cookie store and no redirects: cookies are carried by hand so one
    /// pooled connection serves every login, as a browser's would.
    http: reqwest::Client,
    redis: Option<(String, String)>,
    shutdown: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    dir: tempfile::TempDir,
}

impl Bench {
    async fn start(redis_url: Option<String>, alg: &str) -> anyhow::Result<Self> {
        let upstream_secret = std::env::var(UPSTREAM_SECRET_ENV).with_context(|| {
            format!(
                "{UPSTREAM_SECRET_ENV} is not set: run the bench through cargo, which sets it from .cargo/config.toml"
            )
        })?;
        ensure!(
            Alg::parse(alg).is_some(),
            "SWITCHYARD_BENCH_SIGNING_ALG={alg:?} is not RS256, ES256 or EdDSA"
        );
        let fake = FakeUpstream::start(Flavor::Auth0).await;
        let dir = tempfile::tempdir()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        let prefix = format!("bench:upstream_proxy:{}:", &random_token()[..12]);
        let mut up = UpstreamSettings::for_provider("auth0");
        up.issuer = Some(fake.issuer());
        up.client_id = UPSTREAM_CLIENT.into();
        up.client_secret_env = Some(UPSTREAM_SECRET_ENV.into());
        up.token_keys_env = TOKEN_KEYS_ENV.into();
        let mut settings = Settings {
            issuer: format!("{base}/"),
            database_url: format!("sqlite://{}", dir.path().join("switchyard.db").display()),
            redis_url: redis_url.clone(),
            session_prefix: prefix.clone(),
            upstream: Some(up),
            ..Settings::default()
        };
        settings.tokens.signing_alg = Alg::parse(alg).context("unknown algorithm")?;
        // As tests/api/upstream.rs's `spawn_redirect_track`: an empty cohort
        // keeps the lazy phase's password track out of the way, so a user
        // without a local password takes the redirect track measured here.
        settings.cutover.cohorts = vec![Cohort {
            percent: Some(0),
            email_domains: vec![],
        }];
        let app = Application::build_with_listener(settings, listener)
            .await
            .context("starting Switchyard")?;
        let state = app.state();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));

        let callback = format!("{base}/login/callback");
        fake.add_client(UPSTREAM_CLIENT, Some(&upstream_secret), &[&callback]);
        fake.add_user(FakeUser::new(SUB, EMAIL, PASSWORD));
        state
            .db
            .create_client(
                &ClientSettings {
                    client_id: CLIENT_ID.into(),
                    name: Some("Bench App".into()),
                    redirect_uris: vec![REDIRECT.into()],
                    ..ClientSettings::default()
                }
                .to_client(Some(hash_secret(SECRET)), ClientSource::Cli),
            )
            .await?;
        Ok(Self {
            fake,
            state,
            base,
            callback,
            upstream_secret,
            http: no_redirects(),
            redis: redis_url.map(|u| (u, prefix)),
            shutdown,
            server,
            dir,
        })
    }

    async fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
        if let Some((url, prefix)) = &self.redis
            && let Err(e) = delete_keys(url, prefix).await
        {
            eprintln!("warning: the bench's Redis keys under {prefix} were not deleted: {e:#}");
        }
    }

    fn stores(&self) -> String {
        match &self.redis {
            Some((url, _)) => format!("SQLite file + Redis session store at {url}"),
            None => "SQLite file + in-process session store".into(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The gateway refresh grant, as the application's back end sends it.
    fn gateway_refresh(&self, refresh_token: &str) -> RequestBuilder {
        self.http
            .post(self.url("/oauth/token"))
            .basic_auth(CLIENT_ID, Some(SECRET))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
    }

    fn gateway_exchange(&self, code: &str, verifier: &str) -> RequestBuilder {
        self.http
            .post(self.url("/oauth/token"))
            .basic_auth(CLIENT_ID, Some(SECRET))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier),
            ])
    }

    /// A call at the fake's token endpoint exactly as Switchyard's upstream
    /// client makes it for Auth0 (client_secret_post, JSON accepted), so
    /// the direct series and the proxied one send the upstream the same
    /// request.
    fn upstream_token(&self, form: &[(&str, &str)]) -> RequestBuilder {
        let mut form = form.to_vec();
        form.push(("client_id", UPSTREAM_CLIENT));
        form.push(("client_secret", &self.upstream_secret));
        self.http
            .post(self.fake.token_endpoint())
            .header(ACCEPT, "application/json")
            .form(&form)
    }

    fn upstream_userinfo(&self, access_token: &str) -> RequestBuilder {
        self.http
            .get(self.fake.userinfo_endpoint())
            .header(ACCEPT, "application/json")
            .bearer_auth(access_token)
    }

    /// Drives a browser from the application's `/authorize` through
    /// Switchyard's identifier page and the fake's login form, up to (not
    /// including) the redirect back to `/login/callback`.
    async fn login_until_callback(&self) -> anyhow::Result<PendingCallback> {
        let (verifier, challenge) = pkce();
        let mut jar = Cookies::default();
        let start = self
            .http
            .get(self.url("/authorize"))
            .query(&[
                ("response_type", "code"),
                ("client_id", CLIENT_ID),
                ("redirect_uri", REDIRECT),
                ("scope", APP_SCOPE),
                ("state", &random_token()),
                ("nonce", &random_token()),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .await?;
        ensure!(
            start.status() == StatusCode::SEE_OTHER,
            "/authorize answered {}",
            start.status()
        );
        jar.absorb(start.headers());
        let mut upstream_url = try_location(start.headers()).context("no Location header")?;
        if upstream_url.starts_with("/login") {
            upstream_url = self.identifier_step(&upstream_url, &mut jar).await?;
        }
        ensure!(
            upstream_url.starts_with(&self.fake.base),
            "the login did not go to the upstream: {upstream_url}"
        );
        let back = self
            .fake
            .browser_login(&self.http, &upstream_url, EMAIL, PASSWORD)
            .await;
        ensure!(
            back.status().is_redirection(),
            "the fake's login answered {}",
            back.status()
        );
        let callback = try_location(back.headers()).context("no Location header")?;
        ensure!(
            callback.starts_with(&self.callback),
            "the fake redirected elsewhere: {callback}"
        );
        Ok(PendingCallback {
            callback,
            jar,
            verifier,
        })
    }

    /// Switchyard's identifier page, filled in; returns where it sends the
    /// browser.
    async fn identifier_step(&self, page: &str, jar: &mut Cookies) -> anyhow::Result<String> {
        let page = self
            .http
            .get(self.url(page))
            .header(COOKIE, jar.header())
            .send()
            .await?;
        ensure!(
            page.status() == StatusCode::OK,
            "the identifier page answered {}",
            page.status()
        );
        jar.absorb(page.headers());
        let (action, mut fields) = form_fields(&page.text().await?);
        fields.insert("username".into(), EMAIL.into());
        let action = url::Url::parse(&self.base)?.join(&action)?;
        let next = self
            .http
            .post(action)
            .header(COOKIE, jar.header())
            .form(&fields)
            .send()
            .await?;
        let status = next.status();
        jar.absorb(next.headers());
        let to = next.headers().get(LOCATION).cloned();
        match to {
            Some(to) if status == StatusCode::SEE_OTHER => Ok(to.to_str()?.to_string()),
            _ => bail!(
                "the identifier step answered {status} instead of sending the user upstream: {}",
                next.text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect::<String>()
            ),
        }
    }

    /// A whole login through the redirect track and the code exchange,
    /// untimed; returns the token response and the browser's cookies.
    async fn gateway_tokens(&self) -> anyhow::Result<(Value, Cookies)> {
        let mut pending = self.login_until_callback().await?;
        let done = self
            .http
            .get(&pending.callback)
            .header(COOKIE, pending.jar.header())
            .send()
            .await?;
        ensure!(
            done.status() == StatusCode::SEE_OTHER,
            "/login/callback answered {}",
            done.status()
        );
        pending.jar.absorb(done.headers());
        let code = code_of(&try_location(done.headers()).context("no Location header")?)?;
        let tokens = json_ok(
            send(self.gateway_exchange(&code, &pending.verifier)).await?,
            "gateway code exchange",
        )?;
        Ok((tokens, pending.jar))
    }

    /// A code from the fake for Switchyard's client, as the upstream would
    /// hand it to Switchyard's callback, with the PKCE verifier it needs.
    async fn upstream_code(&self, scope: &str) -> anyhow::Result<UpstreamCode> {
        let (verifier, challenge) = pkce();
        let nonce = random_token();
        let url = url::Url::parse_with_params(
            &self.fake.authorization_endpoint(),
            &[
                ("response_type", "code"),
                ("client_id", UPSTREAM_CLIENT),
                ("redirect_uri", self.callback.as_str()),
                ("scope", scope),
                ("state", &random_token()),
                ("nonce", &nonce),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
        )?;
        let back = self
            .fake
            .browser_login(&self.http, url.as_str(), EMAIL, PASSWORD)
            .await;
        ensure!(
            back.status().is_redirection(),
            "the fake's login answered {}",
            back.status()
        );
        Ok(UpstreamCode {
            code: code_of(&try_location(back.headers()).context("no Location header")?)?,
            verifier,
            nonce,
        })
    }

    /// The fake's authorization-code grant, timed, as the direct series
    /// sends it.
    async fn direct_exchange(&self, c: &UpstreamCode) -> anyhow::Result<Timed> {
        send(self.upstream_token(&[
            ("grant_type", "authorization_code"),
            ("code", &c.code),
            ("redirect_uri", &self.callback),
            ("code_verifier", &c.verifier),
        ]))
        .await
    }

    /// Marks the session's upstream access token as expired a second ago,
    /// so the next gateway refresh of the session must refresh upstream.
    async fn make_upstream_token_due(&self, sid: &str) -> anyhow::Result<()> {
        let up = self
            .state
            .upstream
            .as_ref()
            .context("no upstream configured")?;
        let mapping = up.mapping(&*self.state.sessions, &*self.state.db);
        let mut tokens = mapping
            .load(sid)
            .await?
            .context("no upstream tokens are mapped to the session")?;
        tokens.expires_at = now() - 1;
        mapping
            .save(sid, &tokens, Duration::from_secs(24 * 3600))
            .await?;
        Ok(())
    }

    /// The scope Switchyard asked the fake for at its last login, so the
    /// direct calls ask for the same and the fake issues the same tokens
    /// (an ID token, a refresh token) on both paths.
    fn upstream_scope(&self) -> anyhow::Result<String> {
        self.fake
            .last_authorize_params()
            .and_then(|p| p.get("scope").cloned())
            .context("the fake saw no authorization request")
    }

    fn upstream_refreshes(&self) -> usize {
        self.fake.calls("token:refresh_token")
    }
}

struct UpstreamCode {
    code: String,
    verifier: String,
    nonce: String,
}

struct PendingCallback {
    /// Where the fake sends the browser: `/login/callback?code=…&state=…`.
    callback: String,
    jar: Cookies,
    verifier: String,
}

/// The cookies of one browser at Switchyard.
#[derive(Default)]
struct Cookies(HashMap<String, String>);

impl Cookies {
    fn absorb(&mut self, headers: &HeaderMap) {
        for value in headers.get_all(SET_COOKIE) {
            let Some((name, rest)) = value.to_str().ok().and_then(|v| v.split_once('=')) else {
                continue;
            };
            let mut attributes = rest.split(';');
            let value = attributes.next().unwrap_or("").trim();
            let expired = attributes.any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
            if value.is_empty() || expired {
                self.0.remove(name.trim());
            } else {
                self.0.insert(name.trim().into(), value.into());
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn code_of(redirect: &str) -> anyhow::Result<String> {
    let url = url::Url::parse(redirect)?;
    let mut error = None;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "code" => return Ok(v.into_owned()),
            "error" => error = Some(v.into_owned()),
            _ => {}
        }
    }
    bail!("no code in the redirect (error {error:?}): {redirect}")
}

/// The `sid` claim of one of Switchyard's access tokens.
fn sid_of(access_token: &str) -> anyhow::Result<String> {
    let payload = access_token
        .split('.')
        .nth(1)
        .context("the access token is not a JWS")?;
    let claims: Value = serde_json::from_slice(
        &b64url_decode(payload).context("the access token payload is not base64url")?,
    )?;
    Ok(claims["sid"]
        .as_str()
        .context("no sid in the access token")?
        .to_string())
}

/// One response, read to its last byte.
struct Timed {
    elapsed: Duration,
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Sends `request` and reads the whole body; only that is timed, so
/// building the request and decoding the answer stay outside.
async fn send(request: RequestBuilder) -> anyhow::Result<Timed> {
    let start = Instant::now();
    let response = request.send().await?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await?;
    let elapsed = start.elapsed();
    Ok(Timed {
        elapsed,
        status,
        headers,
        body: body.to_vec(),
    })
}

fn json_ok(t: Timed, what: &str) -> anyhow::Result<Value> {
    ensure!(
        t.status == StatusCode::OK,
        "{what} answered {}: {}",
        t.status,
        String::from_utf8_lossy(&t.body)
    );
    serde_json::from_slice(&t.body).with_context(|| format!("{what}: the body is not JSON"))
}

fn refresh_token_of(tokens: &Value, what: &str) -> anyhow::Result<String> {
    Ok(tokens["refresh_token"]
        .as_str()
        .with_context(|| format!("{what}: no refresh_token"))?
        .to_string())
}

// ---------------------------------------------------------------------------
// Refresh
// ---------------------------------------------------------------------------

struct RefreshSeries {
    direct: Vec<Duration>,
    through_upstream: Vec<Duration>,
    no_upstream: Vec<Duration>,
    upstream_calls_when_due: usize,
    upstream_calls_when_fresh: usize,
}

impl RefreshSeries {
    fn checks_ok(&self) -> bool {
        self.upstream_calls_when_due == self.through_upstream.len()
            && self.upstream_calls_when_fresh == 0
    }

    fn print(&self) {
        println!("refresh (request sent → last byte of the response read)");
        print_series("direct: refresh_token grant at the fake", &self.direct);
        print_series(
            "Switchyard: gateway refresh that refreshes upstream",
            &self.through_upstream,
        );
        print_series(
            "Switchyard: gateway refresh, upstream token still fresh",
            &self.no_upstream,
        );
        println!(
            "  upstream refresh calls made by the measured gateway refreshes: {} of {} when due, {} of {} when fresh\n",
            self.upstream_calls_when_due,
            self.through_upstream.len(),
            self.upstream_calls_when_fresh,
            self.no_upstream.len(),
        );
    }
}

async fn refresh_series(bench: &Bench, samples: usize) -> anyhow::Result<RefreshSeries> {
    // Two gateway sessions logged in through the fake: one whose upstream
    // token is made due before each refresh, one whose token (Auth0's 24 h
    // default) never is.
    let (due_tokens, _) = bench.gateway_tokens().await?;
    let due_sid = sid_of(due_tokens["access_token"].as_str().unwrap_or(""))?;
    let mut due_rt = refresh_token_of(&due_tokens, "gateway code exchange")?;
    let (fresh_tokens, _) = bench.gateway_tokens().await?;
    let mut fresh_rt = refresh_token_of(&fresh_tokens, "gateway code exchange")?;
    let scope = bench.upstream_scope()?;
    let first = json_ok(
        bench
            .direct_exchange(&bench.upstream_code(&scope).await?)
            .await?,
        "direct code exchange",
    )?;
    let mut direct_rt = refresh_token_of(&first, "direct code exchange")?;

    let mut series = RefreshSeries {
        direct: Vec::with_capacity(samples),
        through_upstream: Vec::with_capacity(samples),
        no_upstream: Vec::with_capacity(samples),
        upstream_calls_when_due: 0,
        upstream_calls_when_fresh: 0,
    };
    for round in 0..WARM_UP + samples {
        let measured = round >= WARM_UP;
        // The order rotates so that none of the three always follows the
        // same one (caches, connection reuse, scheduler wake-ups).
        for step in 0..3 {
            match (round + step) % 3 {
                0 => {
                    let t = send(bench.upstream_token(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", &direct_rt),
                    ]))
                    .await?;
                    let elapsed = t.elapsed;
                    direct_rt = refresh_token_of(&json_ok(t, "direct refresh")?, "direct refresh")?;
                    if measured {
                        series.direct.push(elapsed);
                    }
                }
                1 => {
                    bench.make_upstream_token_due(&due_sid).await?;
                    let before = bench.upstream_refreshes();
                    let t = send(bench.gateway_refresh(&due_rt)).await?;
                    let calls = bench.upstream_refreshes() - before;
                    let elapsed = t.elapsed;
                    due_rt = refresh_token_of(&json_ok(t, "gateway refresh")?, "gateway refresh")?;
                    if measured {
                        series.through_upstream.push(elapsed);
                        series.upstream_calls_when_due += calls;
                    }
                }
                _ => {
                    let before = bench.upstream_refreshes();
                    let t = send(bench.gateway_refresh(&fresh_rt)).await?;
                    let calls = bench.upstream_refreshes() - before;
                    let elapsed = t.elapsed;
                    fresh_rt =
                        refresh_token_of(&json_ok(t, "gateway refresh")?, "gateway refresh")?;
                    if measured {
                        series.no_upstream.push(elapsed);
                        series.upstream_calls_when_fresh += calls;
                    }
                }
            }
        }
    }
    Ok(series)
}

// ---------------------------------------------------------------------------
// Code exchange
// ---------------------------------------------------------------------------

struct CodeSeries {
    direct_exchange: Vec<Duration>,
    direct_userinfo: Vec<Duration>,
    direct_exchange_and_userinfo: Vec<Duration>,
    callback: Vec<Duration>,
    gateway_exchange: Vec<Duration>,
    callback_and_exchange: Vec<Duration>,
    /// Commits measured in the same rounds as the callbacks, since what a
    /// commit costs changes with whatever else is writing to the disk.
    commit: Vec<Duration>,
    commit_full: Vec<Duration>,
    commit_normal: Vec<Duration>,
}

impl CodeSeries {
    fn print(&self) {
        println!("code exchange (request sent → last byte of the response read)");
        print_series(
            "direct: authorization_code grant at the fake",
            &self.direct_exchange,
        );
        print_series("direct: userinfo at the fake", &self.direct_userinfo);
        print_series(
            "direct: code grant + userinfo (per login)",
            &self.direct_exchange_and_userinfo,
        );
        print_series(
            "Switchyard: /login/callback (upstream code grant, ID-token",
            &self.callback,
        );
        println!("    check, upstream userinfo, user upsert, session, own code)");
        print_series(
            "Switchyard: gateway authorization_code grant",
            &self.gateway_exchange,
        );
        print_series(
            "Switchyard: callback + gateway code grant (per login)",
            &self.callback_and_exchange,
        );
        print_series(
            "one commit to Switchyard's SQLite (the callback makes 3)",
            &self.commit,
        );
        print_series(
            "one commit, scratch SQLite, WAL + synchronous=FULL (as now)",
            &self.commit_full,
        );
        print_series(
            "one commit, scratch SQLite, WAL + synchronous=NORMAL",
            &self.commit_normal,
        );
        println!();
    }
}

async fn code_series(bench: &Bench, samples: usize) -> anyhow::Result<CodeSeries> {
    let scope = bench.upstream_scope()?;
    let mut series = CodeSeries {
        direct_exchange: Vec::with_capacity(samples),
        direct_userinfo: Vec::with_capacity(samples),
        direct_exchange_and_userinfo: Vec::with_capacity(samples),
        callback: Vec::with_capacity(samples),
        gateway_exchange: Vec::with_capacity(samples),
        callback_and_exchange: Vec::with_capacity(samples),
        commit: Vec::with_capacity(samples),
        commit_full: Vec::with_capacity(samples),
        commit_normal: Vec::with_capacity(samples),
    };
    let mut full = scratch_db(bench, SqliteSynchronous::Full).await?;
    let mut normal = scratch_db(bench, SqliteSynchronous::Normal).await?;
    for round in 0..WARM_UP + samples {
        let measured = round >= WARM_UP;
        let code = bench.upstream_code(&scope).await?;
        let pending = bench.login_until_callback().await?;
        let direct_first = round % 2 == 0;
        let mut direct = (Duration::ZERO, Duration::ZERO);
        let mut gateway = (Duration::ZERO, Duration::ZERO);
        for side in 0..2 {
            if (side == 0) == direct_first {
                let t = bench.direct_exchange(&code).await?;
                direct.0 = t.elapsed;
                let tokens = json_ok(t, "direct code exchange")?;
                let access = tokens["access_token"]
                    .as_str()
                    .context("direct code exchange: no access_token")?;
                let info = send(bench.upstream_userinfo(access)).await?;
                direct.1 = info.elapsed;
                json_ok(info, "direct userinfo")?;
            } else {
                let t = send(
                    bench
                        .http
                        .get(&pending.callback)
                        .header(COOKIE, pending.jar.header()),
                )
                .await?;
                ensure!(
                    t.status == StatusCode::SEE_OTHER,
                    "/login/callback answered {}: {}",
                    t.status,
                    String::from_utf8_lossy(&t.body)
                );
                gateway.0 = t.elapsed;
                let code = code_of(&try_location(&t.headers).context("no Location header")?)?;
                let t = send(bench.gateway_exchange(&code, &pending.verifier)).await?;
                gateway.1 = t.elapsed;
                json_ok(t, "gateway code exchange")?;
            }
        }
        if measured {
            series.direct_exchange.push(direct.0);
            series.direct_userinfo.push(direct.1);
            series
                .direct_exchange_and_userinfo
                .push(direct.0 + direct.1);
            series.callback.push(gateway.0);
            series.gateway_exchange.push(gateway.1);
            series.callback_and_exchange.push(gateway.0 + gateway.1);
        }
        // The audit record is one of the callback's three commits.
        let event = AuditEvent {
            at: now(),
            kind: "login".into(),
            user_id: Some(SUB.into()),
            client_id: Some(CLIENT_ID.into()),
            ip: Some("127.0.0.1".into()),
            detail: serde_json::json!({}),
            actor: None,
        };
        let start = Instant::now();
        bench.state.db.record_event(&event).await?;
        let commit = start.elapsed();
        let commit_full = scratch_commit(&mut full).await?;
        let commit_normal = scratch_commit(&mut normal).await?;
        if measured {
            series.commit.push(commit);
            series.commit_full.push(commit_full);
            series.commit_normal.push(commit_normal);
        }
    }
    full.close().await?;
    normal.close().await?;
    Ok(series)
}

// ---------------------------------------------------------------------------
// Single flight
// ---------------------------------------------------------------------------

struct SingleFlight {
    n: usize,
    ok: usize,
    upstream_calls: usize,
    statuses: HashMap<u16, usize>,
    elapsed: Duration,
}

impl SingleFlight {
    fn print(&self) {
        let mut statuses: Vec<_> = self.statuses.iter().collect();
        statuses.sort();
        println!(
            "single flight: {} concurrent gateway refreshes of one session, upstream token due\n  \
             upstream refresh calls {}; responses {:?}; all answered in {:.1} ms\n",
            self.n,
            self.upstream_calls,
            statuses,
            self.elapsed.as_secs_f64() * 1e3,
        );
    }
}

async fn single_flight(bench: &Bench) -> anyhow::Result<SingleFlight> {
    let (first, jar) = bench.gateway_tokens().await?;
    let sid = sid_of(first["access_token"].as_str().unwrap_or(""))?;
    let mut refresh_tokens = vec![refresh_token_of(&first, "gateway code exchange")?];
    // The other grants come from silent authorizations in the same browser
    // session, so all of them share one sid and one upstream mapping.
    while refresh_tokens.len() < CONCURRENT_REFRESHES {
        let (verifier, challenge) = pkce();
        let again = bench
            .http
            .get(bench.url("/authorize"))
            .query(&[
                ("response_type", "code"),
                ("client_id", CLIENT_ID),
                ("redirect_uri", REDIRECT),
                ("scope", APP_SCOPE),
                ("state", &random_token()),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ])
            .header(COOKIE, jar.header())
            .send()
            .await?;
        ensure!(
            again.status() == StatusCode::SEE_OTHER,
            "silent /authorize answered {}",
            again.status()
        );
        let code = code_of(&try_location(again.headers()).context("no Location header")?)?;
        let tokens = json_ok(
            send(bench.gateway_exchange(&code, &verifier)).await?,
            "gateway code exchange",
        )?;
        ensure!(
            sid_of(tokens["access_token"].as_str().unwrap_or(""))? == sid,
            "a silent authorization started another session"
        );
        refresh_tokens.push(refresh_token_of(&tokens, "gateway code exchange")?);
    }
    bench.make_upstream_token_due(&sid).await?;
    let before = bench.upstream_refreshes();
    let start = Instant::now();
    let responses = futures::future::join_all(
        refresh_tokens
            .iter()
            .map(|rt| send(bench.gateway_refresh(rt))),
    )
    .await;
    let elapsed = start.elapsed();
    let upstream_calls = bench.upstream_refreshes() - before;
    let mut statuses = HashMap::new();
    for r in &responses {
        let code = r.as_ref().map_or(0, |t| t.status.as_u16());
        *statuses.entry(code).or_insert(0) += 1;
    }
    Ok(SingleFlight {
        n: refresh_tokens.len(),
        ok: statuses.get(&200).copied().unwrap_or(0),
        upstream_calls,
        statuses,
        elapsed,
    })
}

// ---------------------------------------------------------------------------
// Where the time goes
// ---------------------------------------------------------------------------

/// The pieces of Switchyard's own work, each timed alone in this process
/// with no gateway request around it: what the "added" figures are made of.
struct Phases {
    alg: String,
    direct_refresh: Vec<Duration>,
    client_refresh: Vec<Duration>,
    direct_exchange: Vec<Duration>,
    client_exchange: Vec<Duration>,
    client_userinfo: Vec<Duration>,
    signature: Vec<Duration>,
    id_token_check: Vec<Duration>,
    id_token_check_aws_lc: Vec<Duration>,
    mapping_rewrite: Vec<Duration>,
}

impl Phases {
    fn print(&self) {
        println!("where the time goes (each piece alone, no gateway request around it)");
        print_series(
            "upstream refresh, plain HTTP client (as the direct series)",
            &self.direct_refresh,
        );
        print_series(
            "upstream refresh, Switchyard's upstream client + ID-token check",
            &self.client_refresh,
        );
        print_series(
            "upstream code grant, plain HTTP client",
            &self.direct_exchange,
        );
        print_series(
            "upstream code grant, Switchyard's upstream client + ID-token check",
            &self.client_exchange,
        );
        print_series(
            "upstream userinfo, Switchyard's upstream client",
            &self.client_userinfo,
        );
        print_series(
            &format!(
                "one {} signature (a gateway token response makes 2)",
                self.alg
            ),
            &self.signature,
        );
        print_series(
            "upstream ID-token check as the upstream client does it (openidconnect)",
            &self.id_token_check,
        );
        print_series(
            "the same RS256 check with aws-lc-rs + claims parsed with serde_json",
            &self.id_token_check_aws_lc,
        );
        print_series(
            "upstream-token mapping load + unseal + seal + save",
            &self.mapping_rewrite,
        );
        println!();
    }
}

async fn phases(bench: &Bench, alg: &str) -> anyhow::Result<Phases> {
    let up = bench
        .state
        .upstream
        .clone()
        .context("no upstream configured")?;
    let scope = bench.upstream_scope()?;
    let mut p = Phases {
        alg: alg.into(),
        direct_refresh: Vec::with_capacity(PHASE_SAMPLES),
        client_refresh: Vec::with_capacity(PHASE_SAMPLES),
        direct_exchange: Vec::with_capacity(PHASE_SAMPLES),
        client_exchange: Vec::with_capacity(PHASE_SAMPLES),
        client_userinfo: Vec::with_capacity(PHASE_SAMPLES),
        signature: Vec::with_capacity(PHASE_SAMPLES),
        id_token_check: Vec::with_capacity(PHASE_SAMPLES),
        id_token_check_aws_lc: Vec::with_capacity(PHASE_SAMPLES),
        mapping_rewrite: Vec::with_capacity(PHASE_SAMPLES),
    };

    // Two refresh chains of Switchyard's client at the fake: one spent by
    // plain HTTP, one by the product's upstream client, request by request.
    let mut chains = Vec::new();
    for _ in 0..2 {
        let c = bench.upstream_code(&scope).await?;
        let tokens = json_ok(bench.direct_exchange(&c).await?, "direct code exchange")?;
        chains.push(refresh_token_of(&tokens, "direct code exchange")?);
    }
    for round in 0..WARM_UP + PHASE_SAMPLES {
        let measured = round >= WARM_UP;
        for side in 0..2 {
            if (round + side) % 2 == 0 {
                let t = send(bench.upstream_token(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &chains[0]),
                ]))
                .await?;
                let elapsed = t.elapsed;
                chains[0] = refresh_token_of(&json_ok(t, "direct refresh")?, "direct refresh")?;
                if measured {
                    p.direct_refresh.push(elapsed);
                }
            } else {
                let start = Instant::now();
                let tokens = up.client.refresh(&chains[1], &up.client.creds).await?;
                let elapsed = start.elapsed();
                chains[1] = tokens
                    .refresh_token
                    .context("the upstream client returned no refresh token")?;
                if measured {
                    p.client_refresh.push(elapsed);
                }
            }
        }
    }

    for round in 0..WARM_UP + PHASE_SAMPLES {
        let measured = round >= WARM_UP;
        let for_direct = bench.upstream_code(&scope).await?;
        let for_client = bench.upstream_code(&scope).await?;
        for side in 0..2 {
            if (round + side) % 2 == 0 {
                let t = bench.direct_exchange(&for_direct).await?;
                let elapsed = t.elapsed;
                json_ok(t, "direct code exchange")?;
                if measured {
                    p.direct_exchange.push(elapsed);
                }
            } else {
                let start = Instant::now();
                let tokens = up
                    .client
                    .exchange_code(
                        &for_client.code,
                        &bench.callback,
                        &for_client.verifier,
                        &for_client.nonce,
                    )
                    .await?;
                let exchange = start.elapsed();
                let start = Instant::now();
                up.client.userinfo(&tokens.access_token).await?;
                let userinfo = start.elapsed();
                if measured {
                    p.client_exchange.push(exchange);
                    p.client_userinfo.push(userinfo);
                }
            }
        }
    }

    let key = bench
        .state
        .keys
        .current()
        .active(Alg::parse(alg).context("unknown algorithm")?)
        .cloned()
        .context("no active signing key")?;
    // A signing input the size of a real access token's.
    let (tokens, _) = bench.gateway_tokens().await?;
    let access = tokens["access_token"].as_str().unwrap_or("");
    let sid = sid_of(access)?;
    let input = access
        .rsplit_once('.')
        .context("the access token is not a JWS")?
        .0
        .as_bytes()
        .to_vec();
    for _ in 0..PHASE_SAMPLES {
        let start = Instant::now();
        key.sign(&input)?;
        p.signature.push(start.elapsed());
    }
    (p.id_token_check, p.id_token_check_aws_lc) = id_token_checks(bench, &scope).await?;
    for _ in 0..PHASE_SAMPLES {
        let start = Instant::now();
        bench.make_upstream_token_due(&sid).await?;
        p.mapping_rewrite.push(start.elapsed());
    }
    Ok(p)
}

/// One of the fake's ID tokens checked the way the upstream client checks
/// it on refresh (openidconnect's verifier, whose RS256 runs on the `rsa`
/// crate), and by aws-lc-rs, which Switchyard already signs with.
async fn id_token_checks(
    bench: &Bench,
    scope: &str,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let tokens = json_ok(
        bench
            .direct_exchange(&bench.upstream_code(scope).await?)
            .await?,
        "direct code exchange",
    )?;
    let id_token = tokens["id_token"]
        .as_str()
        .context("no id_token from the fake")?
        .to_string();
    let jwks = bench
        .http
        .get(bench.fake.jwks_uri())
        .send()
        .await?
        .bytes()
        .await?;
    let set: CoreJsonWebKeySet = serde_json::from_slice(&jwks)?;
    let verifier = CoreIdTokenVerifier::new_public_client(
        ClientId::new(UPSTREAM_CLIENT.into()),
        IssuerUrl::new(bench.fake.issuer())?,
        set,
    );
    let parsed: CoreIdToken = serde_json::from_value(Value::String(id_token.clone()))?;
    let mut openidconnect = Vec::with_capacity(PHASE_SAMPLES);
    for _ in 0..PHASE_SAMPLES {
        let start = Instant::now();
        parsed
            .claims(&verifier, |_: Option<&Nonce>| Ok(()))
            .map_err(|e| anyhow::anyhow!("openidconnect refused the fake's ID token: {e}"))?;
        openidconnect.push(start.elapsed());
    }

    let jwks: Value = serde_json::from_slice(&jwks)?;
    let component = |name: &str| {
        jwks["keys"][0][name]
            .as_str()
            .and_then(b64url_decode)
            .with_context(|| format!("the fake's JWK has no {name}"))
    };
    let (n, e) = (component("n")?, component("e")?);
    let (signing_input, signature) = id_token
        .rsplit_once('.')
        .context("the ID token is not a JWS")?;
    let signature = b64url_decode(signature).context("the signature is not base64url")?;
    let payload = signing_input.split_once('.').map_or("", |(_, p)| p);
    let mut aws_lc = Vec::with_capacity(PHASE_SAMPLES);
    for _ in 0..PHASE_SAMPLES {
        let start = Instant::now();
        RsaPublicKeyComponents { n: &n, e: &e }
            .verify(
                &RSA_PKCS1_2048_8192_SHA256,
                signing_input.as_bytes(),
                &signature,
            )
            .map_err(|_| anyhow::anyhow!("aws-lc-rs refused the fake's ID token"))?;
        let claims: serde_json::Map<String, Value> =
            serde_json::from_slice(&b64url_decode(payload).context("bad payload")?)?;
        std::hint::black_box(claims);
        aws_lc.push(start.elapsed());
    }
    Ok((openidconnect, aws_lc))
}

/// A scratch SQLite file beside Switchyard's, with the pragmas the product
/// sets and the given `synchronous`: what a commit costs on this disk, and
/// what the setting changes.
async fn scratch_db(
    bench: &Bench,
    synchronous: SqliteSynchronous,
) -> anyhow::Result<SqliteConnection> {
    let options = SqliteConnectOptions::new()
        .filename(
            bench
                .dir
                .path()
                .join(format!("scratch-{}.db", random_token())),
        )
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5))
        .synchronous(synchronous);
    let mut conn = SqliteConnection::connect_with(&options).await?;
    sqlx::query("CREATE TABLE events (at INTEGER NOT NULL, detail TEXT NOT NULL)")
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// One single-row commit, timed.
async fn scratch_commit(conn: &mut SqliteConnection) -> anyhow::Result<Duration> {
    let start = Instant::now();
    sqlx::query("INSERT INTO events (at, detail) VALUES ($1, $2)")
        .bind(now())
        .bind("{}")
        .execute(conn)
        .await?;
    Ok(start.elapsed())
}
