//! `backfill`, `verify` and `status` against the fake upstream's
//! Management APIs (Auth0's export jobs and 1,000-result cap, Okta's Link
//! paging, Cognito's SigV4 `ListUsers`, Keycloak's first/max), run as the
//! real binary with a configuration file, as an operator runs them.
//!
//! The tests run on a multi-threaded runtime: the fake upstream must keep
//! serving while the test thread waits for the binary.

use reqwest::StatusCode;
use std::process::Output;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::upstream::{UPSTREAM_CLIENT, UPSTREAM_SECRET};
use switchyard_kit::fake::{
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, COGNITO_POOL_ID, ExportTiming, FakeUpstream,
    FakeUser, Flavor, OKTA_API_TOKEN,
};

const OKTA_TOKEN_ENV: &str = "SWITCHYARD_TEST_OKTA_API_TOKEN";

/// An operator's configuration for `fake`: the upstream, and where its
/// Management API lives (the fake serves it on the same host). The end
/// game's tests backfill through it too.
pub(crate) struct Operator {
    iso: Isolated,
    pub(crate) fake: FakeUpstream,
    _dir: tempfile::TempDir,
    config: String,
}

impl Operator {
    async fn new(flavor: Flavor) -> Self {
        Self::on(isolated().await, FakeUpstream::start(flavor).await)
    }

    pub(crate) fn on(iso: Isolated, fake: FakeUpstream) -> Self {
        fake.add_client(UPSTREAM_CLIENT, Some(UPSTREAM_SECRET), &[]);
        fake.set_export_timing(ExportTiming::default());
        let (provider, base, extra) = match fake.flavor {
            Flavor::Auth0 => (
                "auth0",
                fake.url("/api/v2/"),
                format!("audience = \"{}\"\n", fake.management_audience()),
            ),
            Flavor::Okta => (
                "okta",
                fake.url("/api/v1/"),
                format!("api_token_env = \"{OKTA_TOKEN_ENV}\"\n"),
            ),
            Flavor::Cognito => ("cognito", fake.url("/"), String::new()),
            Flavor::Keycloak => ("keycloak", fake.url("/admin/realms/acme/"), String::new()),
            Flavor::Generic => unreachable!("a plain OIDC provider has no Management API"),
        };
        let config = format!(
            "[upstream]\n\
             provider = \"{provider}\"\n\
             issuer = \"{issuer}\"\n\
             user_pool_id = \"{COGNITO_POOL_ID}\"\n\
             client_id = \"{UPSTREAM_CLIENT}\"\n\
             client_secret_env = \"SWITCHYARD_TEST_UPSTREAM_SECRET\"\n\
             token_keys_env = \"SWITCHYARD_TEST_TOKEN_KEYS\"\n\
             [upstream.management]\n\
             base = \"{base}\"\n\
             export_poll_secs = 0.05\n\
             {extra}",
            issuer = fake.issuer(),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchyard.toml");
        std::fs::write(&path, config).unwrap();
        Self {
            iso,
            fake,
            config: path.to_string_lossy().to_string(),
            _dir: dir,
        }
    }

    pub(crate) fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut all = vec!["--config", &self.config];
        all.extend_from_slice(args);
        // The test's own variables come last, and win.
        let mut all_env = vec![
            (OKTA_TOKEN_ENV, OKTA_API_TOKEN),
            ("AWS_ACCESS_KEY_ID", AWS_ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", AWS_SECRET_ACCESS_KEY),
            ("SWITCHYARD_LOG", "warn"),
        ];
        all_env.extend_from_slice(env);
        run_cli(&self.iso, &all, None, &all_env)
    }

    /// Runs a command that must succeed with `--json`, and parses it.
    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.run(&args, &[]);
        parsed(&out, true)
    }
}

fn parsed(out: &Output, must_succeed: bool) -> Value {
    assert!(
        !must_succeed || out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "not JSON: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth0_backfill_of_ten_thousand_users_survives_a_crash_and_verifies_clean() {
    let op = Operator::new(Flavor::Auth0).await;
    let ids = op.fake.seed_users(10_000);

    // Killed after three committed pages of the export file.
    let crashed = op.run(&["backfill"], &[("SWITCHYARD_TEST_CRASH_AFTER_PAGES", "3")]);
    assert!(!crashed.status.success(), "{}", stderr(&crashed));
    let status = op.json(&["status"]);
    assert_eq!(status["users"]["total"], 3000, "{status:#}");
    assert_eq!(status["jobs"][0]["job"]["state"], "running");

    let refused = op.run(&["backfill"], &[]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("--resume"),
        "{}",
        stderr(&refused)
    );

    // The job's report covers both runs: every user created once, none
    // applied twice.
    let resumed = op.json(&["backfill", "--resume"]);
    assert_eq!(resumed["report"]["created"], 10_000, "{resumed:#}");
    assert_eq!(
        resumed["report"]["unchanged"], 0,
        "no page is applied twice"
    );
    assert_eq!(
        op.fake.calls("users_export"),
        1,
        "the resume polls the export job it committed, not a new one"
    );
    assert_eq!(
        op.fake.calls("users"),
        0,
        "a full backfill never pages the capped search"
    );

    let status = op.json(&["status"]);
    assert_eq!(status["users"]["by_state"]["pending"], 10_000, "{status:#}");
    assert_eq!(status["jobs"][0]["job"]["state"], "done");

    // Ids, profile and metadata as the upstream has them.
    let first = &ids[0];
    let upstream = op.fake.management_user(first).unwrap();
    let local = parsed(&op.run(&["users", "show", first], &[]), true);
    assert_eq!(local["email"], upstream["email"]);
    assert_eq!(local["app_metadata"], upstream["app_metadata"]);
    assert_eq!(local["upstream"], "auth0");

    // Once more: nothing changes.
    let again = op.json(&["backfill"]);
    assert_eq!(again["report"]["created"], 0);
    assert_eq!(again["report"]["updated"], 0);
    assert_eq!(again["report"]["unchanged"], 10_000);

    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("verify.json");
    let report_arg = report_path.to_string_lossy().to_string();
    let clean = op.run(&["verify", "--report", &report_arg], &[]);
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["clean"], true);
    assert_eq!(report["upstream_users"], 10_000);

    // A user gone upstream, one changed upstream, one deleted here.
    op.fake.remove_user(&ids[1]);
    op.fake
        .update_management_user(&ids[2], json!({"email": "changed@example.com"}));
    assert!(op.run(&["users", "delete", &ids[3]], &[]).status.success());
    let dirty = op.run(&["verify", "--json"], &[]);
    assert!(
        !dirty.status.success(),
        "verify exits non-zero when anything differs"
    );
    let report = parsed(&dirty, false);
    assert_eq!(report["missing_locally"]["sample"], json!([ids[3]]));
    assert_eq!(report["only_local"]["sample"], json!([ids[1]]));
    assert_eq!(report["differing_users"], 1);
    assert_eq!(report["differences"]["sample"][0]["id"], json!(ids[2]));
    assert_eq!(report["differences"]["sample"][0]["field"], "email");
    assert_eq!(
        report["differences"]["sample"][0]["upstream"],
        "changed@example.com"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_auth0_backfill_slices_windows_under_the_search_cap() {
    let op = Operator::new(Flavor::Auth0).await;
    op.fake.seed_users(2_500);
    let since = (chrono::Utc::now() - chrono::Duration::days(3 * 365))
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let report = op.json(&["backfill", "--since", &since]);
    assert_eq!(report["report"]["created"], 2_500, "{report:#}");
    assert_eq!(op.fake.calls("users_export"), 0);
    let status = op.json(&["status"]);
    assert!(
        status["jobs"][0]["chunks_total"].as_u64().unwrap() >= 3,
        "2,500 users need at least three windows under 1,000: {status:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_paging_survives_429_bursts_and_failing_pages() {
    let op = Operator::new(Flavor::Okta).await;
    op.fake.seed_users(1_000);
    op.fake.set_management_rate_limit(200.0, 3);
    op.fake.fail_next("okta_users", 2);
    op.fake.rate_limit_next("okta_users", 2, 1);
    let report = op.json(&["backfill"]);
    assert_eq!(
        report["report"]["created"].as_u64(),
        Some(op.fake.user_count() as u64),
        "every user, deprovisioned ones too: {report:#}"
    );
    assert_eq!(report["report"]["failed"], 0);
    assert!(report["retried"].as_u64().unwrap() >= 4, "{report:#}");
    assert!(op.fake.management_429s() >= 2);
    assert!(op.run(&["verify"], &[]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cognito_users_are_listed_with_sigv4_and_verified() {
    let op = Operator::new(Flavor::Cognito).await;
    let ids = op.fake.seed_users(300);
    let dry = op.json(&["backfill", "--dry-run"]);
    assert_eq!(dry["report"]["created"], 300, "{dry:#}");
    assert_eq!(dry["report"]["dry_run"], true);
    assert_eq!(
        op.json(&["status"])["users"]["total"],
        0,
        "a dry run writes nothing"
    );
    let report = op.json(&["backfill"]);
    assert_eq!(report["report"]["created"], 300, "{report:#}");
    assert_eq!(
        op.fake.calls("list_users"),
        10,
        "60 users a page, dry run and real"
    );
    let user = parsed(&op.run(&["users", "show", &ids[0]], &[]), true);
    assert_eq!(user["id"], json!(ids[0]), "the Cognito sub is the id");
    assert!(user["profile"]["cognito:username"].is_string());
    let verify = op.run(&["verify"], &[]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // Wrong credentials: the signature is refused and the job says why.
    let bad = op.run(
        &["backfill"],
        &[("AWS_SECRET_ACCESS_KEY", "not-the-secret")],
    );
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("signature"), "{}", stderr(&bad));
    assert!(!stderr(&bad).contains("not-the-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloak_pages_are_shared_by_two_workers_on_postgres() {
    let op = Operator::new(Flavor::Keycloak).await;
    op.fake.seed_users(2_000);
    let shared = matches!(backend(), Backend::PostgresRedis);
    let report = if shared {
        // The first process creates the job; the second joins it.
        let first = op.spawn(&["backfill", "--max-rate", "10"]);
        // The second joins once the first has created the job (its 21
        // requests at 10 a second leave chunks to share for two seconds).
        let mut waited = 0;
        while op.json(&["status"])["jobs"].as_array().unwrap().is_empty() {
            assert!(waited < 100, "the first process never created its job");
            waited += 1;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let second = op.spawn(&["backfill", "--resume", "--max-rate", "10"]);
        let (a, b) = (
            first.wait_with_output().unwrap(),
            second.wait_with_output().unwrap(),
        );
        assert!(a.status.success(), "{}", stderr(&a));
        assert!(b.status.success(), "{}", stderr(&b));
        op.json(&["status"])
    } else {
        op.json(&["backfill"]);
        op.json(&["status"])
    };
    let job = &report["jobs"][0];
    assert_eq!(job["counters"]["created"], 2_000, "{report:#}");
    assert_eq!(job["counters"]["unchanged"], 0, "no page twice");
    assert_eq!(job["job"]["state"], "done");
    if shared {
        let processes: std::collections::HashSet<&str> = job["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().split('/').next().unwrap())
            .collect();
        assert_eq!(processes.len(), 2, "both processes took chunks: {job:#}");
    }
    assert!(op.run(&["verify"], &[]).status.success());
}

impl Operator {
    pub(crate) fn spawn(&self, args: &[&str]) -> std::process::Child {
        let mut all = vec!["--config", &self.config];
        all.extend_from_slice(args);
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(&all)
            .env("SWITCHYARD_DATABASE_URL", &self.iso.database_url)
            .env("SWITCHYARD_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_users_local_changes_survive_a_backfill() {
    let up = crate::upstream::spawn_with_upstream(Flavor::Auth0, |_| {}).await;
    let mut alice = FakeUser::new(
        "auth0|5f3a9b2c1d4e5f6a7b8c9d00",
        "alice@example.com",
        PASSWORD,
    );
    alice.name = Some("Alice Upstream".into());
    up.fake.add_user(alice);
    // The first login migrates Alice (lazy phase, password track).
    let (_, challenge) = pkce();
    up.app
        .code_for(
            &browser(),
            &AuthRequest::new("web", Some(&challenge)),
            "alice@example.com",
        )
        .await;

    let op = Operator::on(up.app._isolated.same_database(), up.fake);
    let edited = op.run(
        &[
            "users",
            "update",
            "alice@example.com",
            "--name",
            "Alice Here",
        ],
        &[],
    );
    assert!(edited.status.success(), "{}", stderr(&edited));
    op.fake.update_management_user(
        "auth0|5f3a9b2c1d4e5f6a7b8c9d00",
        json!({"name": "Alice Renamed Upstream"}),
    );
    op.fake.seed_users(20);

    let report = op.json(&["backfill"]);
    assert_eq!(report["report"]["conflicts"], 1, "{report:#}");
    assert_eq!(report["report"]["created"], 20);
    let conflict = &report["report"]["issues"][0];
    assert_eq!(conflict["kind"], "conflict");
    assert!(conflict["reason"].as_str().unwrap().contains("name"));
    let alice = parsed(&op.run(&["users", "show", "alice@example.com"], &[]), true);
    assert_eq!(alice["name"], "Alice Here", "the local change stands");
    assert_eq!(alice["state"], "migrated", "never downgraded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_export_link_is_replaced_by_a_new_export() {
    let op = Operator::new(Flavor::Auth0).await;
    op.fake.seed_users(1_500);
    // Links that are dead on arrival: the run tries one new export, then
    // stops and says why.
    op.fake.set_export_timing(ExportTiming {
        link_ttl: std::time::Duration::ZERO,
        ..ExportTiming::default()
    });
    let failed = op.run(&["backfill"], &[]);
    assert!(!failed.status.success());
    assert!(stderr(&failed).contains("expired"), "{}", stderr(&failed));
    assert_eq!(op.fake.calls("users_export"), 2);

    // Resumed later, when links live again: the stale job's link is dead,
    // so a new export is made and read.
    op.fake.set_export_timing(ExportTiming::default());
    let resumed = op.json(&["backfill", "--resume"]);
    assert_eq!(resumed["report"]["created"], 1_500, "{resumed:#}");
    assert_eq!(op.fake.calls("users_export"), 3);
    assert!(op.run(&["verify"], &[]).status.success());
}

/// Identifier and password on Switchyard's own pages, for `app`; the
/// client gets a code when the login succeeded.
async fn log_in(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.sign_in(&browser(), "web", email, password).await
}

/// A backfilled user with the fields an ID token does not carry (a phone
/// number, a nickname the vendor keeps only in its directory, a second
/// linked identity), then their first login (the lazy migration): the
/// migration merges what the login carried into the backfilled row, and
/// `verify` still finds nothing different, for each vendor's record shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_login_after_a_backfill_keeps_every_field_and_verifies_clean() {
    for flavor in [
        Flavor::Auth0,
        Flavor::Okta,
        Flavor::Cognito,
        Flavor::Keycloak,
    ] {
        let up = crate::upstream::spawn_with_upstream(flavor, |s| {
            s.password.failure_floor_ms = 50;
            if flavor == Flavor::Auth0 {
                s.upstream.as_mut().unwrap().connection =
                    Some("Username-Password-Authentication".into());
            }
        })
        .await;
        let sub = flavor.sample_sub(11);
        let email = "kim@example.com";
        let mut kim = FakeUser::new(&sub, email, PASSWORD);
        kim.name = Some("Kim Stanley".into());
        up.fake.add_user(kim);
        let patch = match flavor {
            Flavor::Auth0 => json!({
                "phone_number": "+15550100",
                "identities": [
                    {"connection": "Username-Password-Authentication", "provider": "auth0",
                     "user_id": sub.trim_start_matches("auth0|"), "isSocial": false},
                    {"connection": "google-oauth2", "provider": "google-oauth2",
                     "user_id": "109876543210", "isSocial": true}
                ]
            }),
            Flavor::Okta => json!({"profile": {"mobilePhone": "+15550100", "nickName": "kimmy"}}),
            Flavor::Cognito => json!({"phone_number": "+15550100", "nickname": "kimmy"}),
            Flavor::Keycloak => json!({"attributes": {"phone": ["+15550100"]}}),
            Flavor::Generic => unreachable!(),
        };
        up.fake.update_management_user(&sub, patch);
        let app = up.app;
        let op = Operator::on(app._isolated.same_database(), up.fake);

        let backfilled = op.json(&["backfill"]);
        assert_eq!(
            backfilled["report"]["created"], 1,
            "{flavor:?}: {backfilled:#}"
        );
        let before = parsed(&op.run(&["users", "show", &sub], &[]), true);
        assert_eq!(before["state"], "pending", "{flavor:?}");

        let login = log_in(&app, email, PASSWORD).await;
        assert_eq!(login.status(), StatusCode::SEE_OTHER, "{flavor:?}");
        assert!(
            location(login.headers()).starts_with(REDIRECT),
            "{flavor:?}: back to the client with a code"
        );
        let after = parsed(&op.run(&["users", "show", &sub], &[]), true);
        assert_eq!(after["state"], "migrated", "{flavor:?}: {after:#}");
        for field in ["nickname", "picture", "phone_number", "app_metadata"] {
            assert_eq!(
                after[field], before[field],
                "{flavor:?}: the login did not carry {field}, so it stays: {after:#}"
            );
        }

        let verified = op.run(&["verify", "--json"], &[]);
        assert!(
            verified.status.success(),
            "{flavor:?}: {}\n{}",
            String::from_utf8_lossy(&verified.stdout),
            stderr(&verified)
        );
        // A second backfill finds nothing new but what changed upstream
        // (Auth0: one more linked identity, which it adds), and verify
        // stays clean.
        if flavor == Flavor::Auth0 {
            op.fake.update_management_user(
                &sub,
                json!({"identities": [
                    {"connection": "Username-Password-Authentication", "provider": "auth0",
                     "user_id": sub.trim_start_matches("auth0|"), "isSocial": false},
                    {"connection": "google-oauth2", "provider": "google-oauth2",
                     "user_id": "109876543210", "isSocial": true},
                    {"connection": "github", "provider": "github", "user_id": "4242", "isSocial": true}
                ]}),
            );
        }
        let again = op.json(&["backfill"]);
        assert_eq!(again["report"]["created"], 0, "{flavor:?}: {again:#}");
        let verified = op.run(&["verify", "--json"], &[]);
        assert!(
            verified.status.success(),
            "{flavor:?} after a second backfill: {}",
            String::from_utf8_lossy(&verified.stdout)
        );
    }
}

/// `kill -9` of `switchyard backfill` at random points, several times over,
/// each run resuming the job the last one left: after every kill the users
/// written are exactly those of the pages the job committed (no page half
/// written), the committed count never goes back (a resume never
/// restarts), and the last run ends with every user created once and none
/// applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_killed_at_random_points_resumes_without_loss_or_duplicates() {
    let op = Operator::new(Flavor::Keycloak).await;
    op.fake.seed_users(1_000);
    // Random kill points, printed so a failure can be replayed.
    let seed = switchyard_kit::random_token();
    let delays: Vec<u64> = seed
        .bytes()
        .take(5)
        .map(|b| 100 + u64::from(b) * 3)
        .collect();
    eprintln!("kill after (ms): {delays:?}");
    let mut committed = 0u64;
    for delay in delays {
        let status = op.json(&["status"]);
        let args: &[&str] = match status["jobs"][0]["job"]["state"].as_str() {
            None => &["backfill", "--max-rate", "10"],
            Some("done") => break,
            Some(_) => &["backfill", "--resume", "--max-rate", "10"],
        };
        let mut child = op.spawn(args);
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        // SIGKILL: no clean-up of any kind runs.
        let _ = child.kill();
        let _ = child.wait();

        let status = op.json(&["status"]);
        let users = status["users"]["total"].as_u64().unwrap();
        let created = status["jobs"][0]["counters"]["created"]
            .as_u64()
            .unwrap_or(0);
        assert_eq!(
            users, created,
            "the users written are those of committed pages: {status:#}"
        );
        assert_eq!(users % 100, 0, "whole pages only: {status:#}");
        assert!(created >= committed, "a resume never goes back: {status:#}");
        eprintln!("killed with {created} users committed");
        committed = created;
    }
    match op.json(&["status"])["jobs"][0]["job"]["state"].as_str() {
        None => drop(op.json(&["backfill"])),
        Some("done") => {}
        Some(_) => drop(op.json(&["backfill", "--resume"])),
    }
    let status = op.json(&["status"]);
    let job = &status["jobs"][0];
    assert_eq!(job["job"]["state"], "done", "{status:#}");
    assert_eq!(job["counters"]["created"], 1_000, "{status:#}");
    assert_eq!(job["counters"]["unchanged"], 0, "no page applied twice");
    assert_eq!(status["users"]["total"], 1_000);
    assert!(op.run(&["verify"], &[]).status.success());
}
