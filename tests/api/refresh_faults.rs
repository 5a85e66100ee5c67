//! Refresh tokens under faults: Redis stalled, Redis restarted empty, two
//! instances on one database, an upstream failing its refresh. Each Redis
//! fault is done to a private `redis-server` the test starts on a free
//! port, so no other test sees it.

use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use switchyard::config::Settings;
use switchyard_kit::fake::{Flavor, Mode, Tamper};
use switchyard_kit::process::{Spawned, free_port};

use crate::helpers::*;
use crate::upstream::spawn_redirect_track;

/// A `redis-server` of the test's own, killed when dropped.
struct PrivateRedis {
    port: u16,
    server: Spawned,
}

impl PrivateRedis {
    async fn start() -> Self {
        let port = free_port();
        let server = Self::spawn(port).await;
        Self { port, server }
    }

    async fn spawn(port: u16) -> Spawned {
        let mut server = Spawned::start(Command::new("redis-server").args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]));
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        server
            .wait_until(Duration::from_secs(5), || async {
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                    return false;
                };
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            })
            .await;
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGSTOP: the server holds every connection and answers nothing.
    fn stall(&self) {
        self.server.signal("-STOP");
    }

    fn resume(&self) {
        self.server.signal("-CONT");
    }

    /// Killed and started again on the same port, empty.
    async fn restart_empty(&mut self) {
        self.server.kill();
        self.server = Self::spawn(self.port).await;
    }
}

fn on_redis(redis: &PrivateRedis, grace: u64) -> impl FnOnce(&mut Settings) {
    let url = redis.url();
    move |s: &mut Settings| {
        s.redis_url = Some(url);
        s.tokens.refresh_reuse_grace_secs = grace;
    }
}

async fn refresh_token_of(answer: reqwest::Response) -> String {
    assert_eq!(answer.status(), StatusCode::OK);
    let body: Value = answer.json().await.unwrap();
    body["refresh_token"].as_str().unwrap().to_string()
}

/// A refresh, retried with the same token while the answer is 503 (a
/// reconnecting session store), as a client honouring `Retry-After` would.
async fn refresh_retrying_503(app: &TestApp, token: &str) -> reqwest::Response {
    for _ in 0..40 {
        let answer = app.refresh(token).await;
        if answer.status() != StatusCode::SERVICE_UNAVAILABLE {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("still 503 after the session store came back");
}

#[tokio::test]
async fn refresh_families_survive_redis_restarted_empty_and_reuse_is_still_caught() {
    let mut redis = PrivateRedis::start().await;
    let app = spawn_app_with(on_redis(&redis, 0)).await;
    app.with_alice_and_web().await;
    let mut chains = Vec::new();
    for _ in 0..4 {
        let tokens = app.tokens_for_alice().await;
        let first = tokens["refresh_token"].as_str().unwrap().to_string();
        let second = refresh_token_of(app.refresh(&first).await).await;
        chains.push((first, second, tokens["access_token"].clone()));
    }

    redis.restart_empty().await;

    // Every chain goes on (the first command after the restart may meet
    // the dropped connection: a 503 is retried, as a client would).
    let mut logged_out = 0;
    for (_, current, access) in &mut chains {
        let answer = refresh_retrying_503(&app, current).await;
        if answer.status() != StatusCode::OK {
            logged_out += 1;
            continue;
        }
        *current = refresh_token_of(answer).await;
        assert_eq!(
            app.userinfo(access.as_str().unwrap()).await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(logged_out, 0, "chains logged out by the restart");

    // A token spent before the restart is still known as spent.
    let (spent, current, access) = &chains[0];
    assert_oauth_error(
        app.refresh(spent).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_oauth_error(
        app.refresh(current).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(
        app.userinfo(access.as_str().unwrap()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // The other families are untouched.
    assert_eq!(app.refresh(&chains[1].1).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_stalled_redis_gets_quick_503s_and_a_retry_after_it_spends_nothing() {
    let redis = PrivateRedis::start().await;
    let app = spawn_app_with(on_redis(&redis, 0)).await;
    app.with_alice_and_web().await;
    let tokens = app.tokens_for_alice().await;
    let rt = tokens["refresh_token"].as_str().unwrap();
    // A hang would outlast this: the stores must answer (or give up) first.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(4))
        .build()
        .unwrap();

    redis.stall();
    let ready = client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("/readyz answers while Redis is stalled");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["session_store"], "unavailable");
    let answer = client
        .post(app.url("/oauth/token"))
        .basic_auth("web", Some(SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", rt)])
        .send()
        .await
        .expect("the token endpoint answers while Redis is stalled");
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers().contains_key("retry-after"));
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    redis.resume();

    // No grace window here: had the 503 spent the token, this would be reuse.
    let answer = refresh_retrying_503(&app, rt).await;
    let next = refresh_token_of(answer).await;
    assert_eq!(app.refresh(&next).await.status(), StatusCode::OK);
    let ready = client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

/// Several chains refresh in a loop while Redis is stalled, then restarted
/// empty; a chain retries a 503 with the same token, as clients do. None
/// may be logged out.
#[tokio::test]
async fn under_refresh_load_a_redis_stall_and_an_empty_restart_log_nobody_out() {
    let mut redis = PrivateRedis::start().await;
    let app = std::sync::Arc::new(spawn_app_with(on_redis(&redis, 10)).await);
    app.with_alice_and_web().await;
    let mut firsts = Vec::new();
    for _ in 0..6 {
        firsts.push(
            app.tokens_for_alice().await["refresh_token"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let chains: Vec<_> = firsts
        .into_iter()
        .map(|first| {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move {
                let mut current = first;
                let mut refreshed = 0u32;
                loop {
                    let answer = app.refresh(&current).await;
                    match answer.status() {
                        StatusCode::OK => {
                            current = refresh_token_of(answer).await;
                            refreshed += 1;
                        }
                        StatusCode::SERVICE_UNAVAILABLE => {}
                        _ => return Err(answer.text().await.unwrap()),
                    }
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        return Ok(refreshed);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.stall();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.resume();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart_empty().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut logged_out = Vec::new();
    for chain in chains {
        match chain.await.unwrap() {
            Ok(n) => assert!(n > 0, "every chain made progress"),
            Err(body) => logged_out.push(body),
        }
    }
    assert!(logged_out.is_empty(), "chains logged out: {logged_out:?}");
}

#[tokio::test]
async fn two_instances_on_one_database_alternate_refreshes_and_catch_reuse_across() {
    let redis = PrivateRedis::start().await;
    let isolated = isolated().await;
    let second = isolated.same_database();
    let a = spawn_app_on(isolated, on_redis(&redis, 0)).await;
    let b = spawn_app_on(second, on_redis(&redis, 0)).await;
    a.with_alice_and_web().await;
    let mut chains = Vec::new();
    for _ in 0..3 {
        chains.push(
            a.tokens_for_alice().await["refresh_token"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let mut failures = 0;
    for round in 0..10 {
        for current in &mut chains {
            let app = if round % 2 == 0 { &b } else { &a };
            let answer = app.refresh(current).await;
            if answer.status() == StatusCode::OK {
                *current = refresh_token_of(answer).await;
            } else {
                failures += 1;
            }
        }
    }
    assert_eq!(failures, 0);

    // Spent on one instance, replayed on the other: the family is revoked on both.
    let spent = chains[0].clone();
    let next = refresh_token_of(a.refresh(&spent).await).await;
    assert_oauth_error(
        b.refresh(&spent).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_oauth_error(
        a.refresh(&next).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // And the same with no shared session store: the database alone decides.
    let iso = crate::helpers::isolated().await;
    let other = iso.same_database();
    let c = spawn_app_on(iso, |s| s.tokens.refresh_reuse_grace_secs = 0).await;
    let d = spawn_app_on(other, |s| s.tokens.refresh_reuse_grace_secs = 0).await;
    c.with_alice_and_web().await;
    let rt = c.tokens_for_alice().await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let from_d = refresh_token_of(d.refresh(&rt).await).await;
    assert_oauth_error(
        c.refresh(&rt).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_oauth_error(
        d.refresh(&from_d).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn a_gateway_refresh_the_upstream_fails_spends_nothing() {
    let t = spawn_redirect_track(Flavor::Auth0, |s| s.tokens.refresh_reuse_grace_secs = 0).await;
    let tokens = t.alice_due_for_upstream_refresh().await;
    let rt = tokens["refresh_token"].as_str().unwrap();

    t.fake.set_mode(Mode::Fail500);
    let answer = t.app.refresh(rt).await;
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");

    // Past the (zero) grace window: a spent token would now be reuse.
    t.fake.set_mode(Mode::Normal);
    let next = refresh_token_of(t.app.refresh(rt).await).await;
    assert_eq!(t.app.refresh(&next).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_upstream_refresh_answering_for_another_user_ends_the_grant() {
    let t = spawn_redirect_track(Flavor::Auth0, |_| {}).await;
    let tokens = t.alice_due_for_upstream_refresh().await;
    t.fake.set_id_token_tamper(Tamper::OtherSubject);
    assert_oauth_error(
        t.app
            .refresh(tokens["refresh_token"].as_str().unwrap())
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(
        t.app
            .userinfo(tokens["access_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}
