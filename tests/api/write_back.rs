//! Write-back: a password, profile or blocked change made in Switchyard
//! reaches the upstream (`[upstream.management] write_back`), so a user
//! rolled back to it (`cutover pin --upstream`) finds their account as
//! they left it. Changes are made with the real binary, as an operator
//! makes them; the writes land on the fake vendors, whose own password
//! login then takes the new password.
//!
//! The worker is polled for with a deadline, never timed.

use std::process::Output;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Row;
use switchyard::config::{Settings, WriteBack, WriteKind, WriteMode};
use switchyard::store::outbox::{OutboxRow, OutboxState};
use switchyard::store::{Migration, UpstreamProfile};

use crate::helpers::*;
use crate::migration::password_login;
use crate::upstream::{UPSTREAM_CLIENT, UPSTREAM_SECRET, UpstreamApp};
use switchyard_kit::fake::{COGNITO_POOL_ID, FakeUpstream, FakeUser, Flavor};

const EMAIL: &str = "carol@example.com";
const NEW_PASSWORD: &str = "a brand new passphrase for the upstream";
const AUTH0_SUB: &str = "auth0|6a1b2c3d4e5f60718293a4b5";
const OKTA_SUB: &str = "00u1a2b3c4d5e6f7g8h9";
const COGNITO_SUB: &str = "7d3f1a2b-4c5d-4e6f-8a9b-0c1d2e3f4a5b";
const KEYCLOAK_SUB: &str = "3f2c1b0a-9d8e-4f7a-8b6c-5d4e3f2a1b0c";

const DEADLINE: Duration = Duration::from_secs(60);

fn all(mode: WriteMode) -> WriteBack {
    WriteBack(
        [WriteKind::Password, WriteKind::Profile, WriteKind::Blocked]
            .into_iter()
            .map(|k| (k, mode))
            .collect(),
    )
}

/// Switchyard in front of `flavor` in the lazy phase, its Management API
/// on the fake, writing back as `write_back` says.
async fn spawn(flavor: Flavor, write_back: WriteBack) -> UpstreamApp {
    spawn_and(flavor, write_back, |_| {}).await
}

/// [`spawn`], then `configure`: the outbox tests' app, with write-back on.
async fn spawn_and(
    flavor: Flavor,
    write_back: WriteBack,
    configure: impl FnOnce(&mut Settings),
) -> UpstreamApp {
    crate::outbox::spawn(flavor, false, |s| {
        s.upstream.as_mut().unwrap().management.write_back = write_back;
        configure(s);
    })
    .await
}

/// The operator's command line on the app's own settings and database.
struct Operator {
    config: String,
    database_url: String,
    _dir: tempfile::TempDir,
}

impl Operator {
    fn for_settings(settings: &Settings, database_url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchyard.toml");
        std::fs::write(&path, toml::to_string(settings).unwrap()).unwrap();
        Self {
            config: path.to_string_lossy().to_string(),
            database_url: database_url.into(),
            _dir: dir,
        }
    }

    fn for_app(t: &UpstreamApp) -> Self {
        Self::for_settings(&t.app.state.settings, &t.app.state.settings.database_url)
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("SWITCHYARD_DATABASE_URL", &self.database_url)
            .env("SWITCHYARD_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the switchyard binary runs");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed; returns its standard output.
    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "{args:?}: exit {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Everything a command printed, both streams.
fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn rows(t: &UpstreamApp) -> Vec<OutboxRow> {
    t.app.state.db.list_outbox(None, 100).await.unwrap()
}

/// Waits until every row is done; returns them.
async fn until_all_done(t: &UpstreamApp, what: &str) -> Vec<OutboxRow> {
    let start = std::time::Instant::now();
    loop {
        let rows = rows(t).await;
        if !rows.is_empty() && rows.iter().all(|r| r.state == OutboxState::Done) {
            return rows;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "waiting for {what}; the outbox holds {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a login through Switchyard's pages ended back at the client.
async fn logs_in(t: &UpstreamApp, password: &str) -> bool {
    let r = password_login(t, "web", EMAIL, password).await;
    r.status() == StatusCode::SEE_OTHER && location(r.headers()).starts_with(REDIRECT)
}

/// The given name as the vendor's record holds it.
fn given_name(flavor: Flavor, record: &Value) -> Option<String> {
    let v = match flavor {
        Flavor::Auth0 => &record["given_name"],
        Flavor::Okta => &record["profile"]["firstName"],
        Flavor::Keycloak => &record["firstName"],
        Flavor::Cognito => {
            return record["Attributes"]
                .as_array()?
                .iter()
                .find(|a| a["Name"] == "given_name")
                .and_then(|a| a["Value"].as_str())
                .map(String::from);
        }
        _ => unreachable!(),
    };
    v.as_str().map(String::from)
}

/// A migrated user's password, profile and blocked changes, made with the
/// CLI, reach `flavor`; rolled back, the user logs in at the upstream with
/// the new password and not the old one.
async fn changes_reach(flavor: Flavor, sub: &str) {
    let t = spawn(flavor, all(WriteMode::Outbox)).await;
    t.fake.add_user(FakeUser::new(sub, EMAIL, PASSWORD));
    assert!(logs_in(&t, PASSWORD).await, "the lazy migration");
    let op = Operator::for_app(&t);

    op.ok(
        &["users", "set-password", sub, "--password-stdin"],
        Some(NEW_PASSWORD),
    );
    let done = until_all_done(&t, "the password to be written back").await;
    assert!(
        done.iter().any(|r| r.kind.as_str() == "write_password"),
        "{done:?}"
    );
    op.ok(&["cutover", "pin", sub, "--upstream"], None);
    assert!(
        logs_in(&t, NEW_PASSWORD).await,
        "rolled back, the upstream takes the password set in Switchyard"
    );
    assert!(!logs_in(&t, PASSWORD).await, "and refuses the old one");

    op.ok(
        &[
            "users",
            "update",
            sub,
            "--given-name",
            "Carolyn",
            "--family-name",
            "Danvers",
        ],
        None,
    );
    until_all_done(&t, "the profile to be written back").await;
    let record = t.fake.management_user(sub).unwrap();
    assert_eq!(
        given_name(flavor, &record).as_deref(),
        Some("Carolyn"),
        "{record}"
    );

    op.ok(&["users", "block", sub], None);
    until_all_done(&t, "the block to be written back").await;
    assert_eq!(t.fake.is_blocked(sub), Some(true));
    assert!(
        !logs_in(&t, NEW_PASSWORD).await,
        "blocked at the upstream too"
    );
    op.ok(&["users", "unblock", sub], None);
    until_all_done(&t, "the unblock to be written back").await;
    assert_eq!(t.fake.is_blocked(sub), Some(false));
    assert!(logs_in(&t, NEW_PASSWORD).await, "unblocked at the upstream");

    let metrics = t.app.metrics().await;
    for what in ["password", "profile", "blocked"] {
        let line = format!("switchyard_writeback_total{{what=\"{what}\",result=\"done\"}}");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    assert!(!metrics.contains(NEW_PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth0_takes_the_password_profile_and_block_set_here() {
    changes_reach(Flavor::Auth0, AUTH0_SUB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_takes_the_password_profile_and_block_set_here() {
    changes_reach(Flavor::Okta, OKTA_SUB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cognito_takes_the_password_profile_and_block_set_here() {
    changes_reach(Flavor::Cognito, COGNITO_SUB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloak_takes_the_password_profile_and_block_set_here() {
    changes_reach(Flavor::Keycloak, KEYCLOAK_SUB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_write_refused_by_the_upstream_policy_changes_nothing_here() {
    let mut modes = WriteBack::default();
    modes.0.insert(WriteKind::Password, WriteMode::Blocking);
    let t = spawn(Flavor::Okta, modes).await;
    t.fake.add_user(FakeUser::new(OKTA_SUB, EMAIL, PASSWORD));
    assert!(logs_in(&t, PASSWORD).await, "the lazy migration");
    t.fake.set_password_policy(NEW_PASSWORD.len() + 1);
    let op = Operator::for_app(&t);

    let out = op.run(
        &["users", "set-password", OKTA_SUB, "--password-stdin"],
        Some(NEW_PASSWORD),
    );
    assert!(!out.status.success(), "the change is refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Password requirements were not met"),
        "the vendor's words reach the operator: {stderr}"
    );
    assert!(!stderr.contains(NEW_PASSWORD), "{stderr}");
    assert!(rows(&t).await.is_empty(), "nothing queued");
    assert!(
        logs_in(&t, PASSWORD).await,
        "the old password still works here"
    );
    assert!(!logs_in(&t, NEW_PASSWORD).await);

    // Within the policy, the upstream takes it first, then Switchyard.
    t.fake.set_password_policy(8);
    op.ok(
        &["users", "set-password", OKTA_SUB, "--password-stdin"],
        Some(NEW_PASSWORD),
    );
    assert!(rows(&t).await.is_empty(), "written at once, not queued");
    assert!(logs_in(&t, NEW_PASSWORD).await, "here");
    op.ok(&["cutover", "pin", OKTA_SUB, "--upstream"], None);
    assert!(logs_in(&t, NEW_PASSWORD).await, "and at the upstream");
}

/// Every value of every column of every table, as text.
async fn every_value(database_url: &str) -> Vec<(String, String)> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(database_url).await.unwrap();
    let postgres = database_url.starts_with("postgres");
    let columns = if postgres {
        "SELECT table_name::text AS t, column_name::text AS c FROM information_schema.columns \
         WHERE table_schema = current_schema()"
    } else {
        "SELECT m.name AS t, p.name AS c FROM sqlite_master m JOIN pragma_table_info(m.name) p \
         WHERE m.type = 'table'"
    };
    let mut out = Vec::new();
    for row in sqlx::query(columns).fetch_all(&pool).await.unwrap() {
        let (table, column): (String, String) = (row.get("t"), row.get("c"));
        // As bytes: a binary column's value need not be UTF-8.
        let sql = if postgres {
            format!("SELECT convert_to(CAST(\"{column}\" AS TEXT), 'UTF8') AS v FROM \"{table}\"")
        } else {
            format!("SELECT CAST(\"{column}\" AS BLOB) AS v FROM \"{table}\"")
        };
        for value in sqlx::query(&sql).fetch_all(&pool).await.unwrap() {
            if let Some(v) = value.get::<Option<Vec<u8>>, _>("v") {
                out.push((
                    format!("{table}.{column}"),
                    String::from_utf8_lossy(&v).into_owned(),
                ));
            }
        }
    }
    pool.close().await;
    assert!(
        out.iter().any(|(c, _)| c == "outbox.payload"),
        "the scan reads the outbox"
    );
    out
}

async fn assert_no_plaintext(database_url: &str, when: &str) {
    for (column, value) in every_value(database_url).await {
        assert!(
            !value.contains(NEW_PASSWORD),
            "{when}: {column} holds the password in plaintext"
        );
    }
}

/// `switchyard serve` as a process, killed by the test.
struct Serve(std::process::Child);

impl Serve {
    fn start(op: &Operator) -> Self {
        use std::process::{Command, Stdio};
        Self(
            Command::new(env!("CARGO_BIN_EXE_switchyard"))
                .arg("--config")
                .arg(&op.config)
                .arg("serve")
                .env("SWITCHYARD_DATABASE_URL", &op.database_url)
                .env("SWITCHYARD_LISTEN", "127.0.0.1:0")
                .env("SWITCHYARD_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("the switchyard binary runs"),
        )
    }

    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_password_survives_a_killed_serve_sealed_and_is_erased_once_delivered() {
    let iso = isolated().await;
    let fake = FakeUpstream::start(Flavor::Auth0).await;
    fake.add_client(UPSTREAM_CLIENT, Some(UPSTREAM_SECRET), &[]);
    fake.add_user(FakeUser::new(AUTH0_SUB, EMAIL, PASSWORD));
    let config = format!(
        "database_url = \"{db}\"\n\
         [upstream]\n\
         provider = \"auth0\"\n\
         issuer = \"{issuer}\"\n\
         client_id = \"{UPSTREAM_CLIENT}\"\n\
         client_secret_env = \"SWITCHYARD_TEST_UPSTREAM_SECRET\"\n\
         token_keys_env = \"SWITCHYARD_TEST_TOKEN_KEYS\"\n\
         connection = \"Username-Password-Authentication\"\n\
         [upstream.management]\n\
         base = \"{base}\"\n\
         audience = \"{audience}\"\n\
         outbox_poll_secs = 0.05\n\
         outbox_retry_secs = 1.0\n\
         write_back = [\"password\"]\n",
        db = iso.database_url,
        issuer = fake.issuer(),
        base = fake.url("/api/v2/"),
        audience = fake.management_audience(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("operator.toml");
    std::fs::write(&path, config).unwrap();
    let (settings, _) = Settings::load(Some(&path)).unwrap();
    let op = Operator::for_settings(&settings, &iso.database_url);
    let db = switchyard::state::open_database(&settings).await.unwrap();
    let profile = UpstreamProfile {
        id: AUTH0_SUB.into(),
        profile: switchyard::store::Profile {
            email: Some(EMAIL.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let migration = Migration {
        hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
        algorithm: "argon2id".into(),
        route: "password".into(),
        mark_upstream: false,
    };
    db.migrate_upstream_user("auth0", &profile, &migration)
        .await
        .unwrap();

    // Queued with no server running; the upstream fails for now.
    fake.fail_next("patch_user", 10_000);
    op.ok(
        &["users", "set-password", AUTH0_SUB, "--password-stdin"],
        Some(NEW_PASSWORD),
    );
    let queued = db.list_outbox(None, 10).await.unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    let id = queued[0].id;
    let sealed = queued[0].payload["sealed"]["ct"]
        .as_str()
        .expect("the password is sealed in the row")
        .to_string();
    assert_no_plaintext(&iso.database_url, "queued").await;
    for args in [
        &["outbox", "list"][..],
        &["outbox", "list", "--json"],
        &["status"],
        &["status", "--json"],
    ] {
        let shown = op.ok(args, None);
        assert!(
            !shown.contains(NEW_PASSWORD) && !shown.contains(&sealed) && !shown.contains("sealed"),
            "{args:?} shows no secret: {shown}"
        );
    }

    // A serve that tries, fails and is killed between attempts.
    let serve = Serve::start(&op);
    let start = std::time::Instant::now();
    loop {
        let row = db.get_outbox(id).await.unwrap().unwrap();
        if row.attempts >= 1 && row.claimed_by.is_none() {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "waiting for a failed attempt: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    serve.kill();
    let row = db.get_outbox(id).await.unwrap().unwrap();
    assert_eq!(row.state, OutboxState::Pending, "{row:?}");
    assert!(
        row.payload["sealed"].is_object(),
        "still sealed, still owed"
    );
    assert_no_plaintext(&iso.database_url, "after the kill").await;

    // Restarted, with the upstream back, it delivers.
    fake.fail_next("patch_user", 0);
    let serve = Serve::start(&op);
    let start = std::time::Instant::now();
    let row = loop {
        let row = db.get_outbox(id).await.unwrap().unwrap();
        if row.state == OutboxState::Done {
            break row;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "waiting for the delivery: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    serve.kill();
    assert_eq!(
        row.payload,
        json!({"upstream_id": AUTH0_SUB, "username": AUTH0_SUB}),
        "the sealed password is erased once delivered"
    );
    let writes = fake.management_writes();
    assert_eq!(
        writes.last().map(|w| w.body.clone()),
        Some(json!({"password": NEW_PASSWORD, "connection": "Username-Password-Authentication"})),
        "{writes:?}"
    );
    assert_no_plaintext(&iso.database_url, "delivered").await;
    assert!(
        every_value(&iso.database_url)
            .await
            .iter()
            .all(|(_, v)| !v.contains(&sealed)),
        "no trace of the sealed value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_write_the_upstream_refuses_fails_at_once_and_is_counted_by_kind() {
    let t = spawn(Flavor::Cognito, all(WriteMode::Outbox)).await;
    t.fake.add_user(FakeUser::new(COGNITO_SUB, EMAIL, PASSWORD));
    assert!(logs_in(&t, PASSWORD).await, "the lazy migration");
    t.fake.set_password_policy(NEW_PASSWORD.len() + 1);
    let op = Operator::for_app(&t);
    op.ok(
        &["users", "set-password", COGNITO_SUB, "--password-stdin"],
        Some(NEW_PASSWORD),
    );
    let start = std::time::Instant::now();
    let row = loop {
        let rows = rows(&t).await;
        if let Some(row) = rows.iter().find(|r| r.state == OutboxState::Failed) {
            break row.clone();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "waiting for the refusal: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(row.attempts, 1, "a policy refusal is not retried");
    let error = row.last_error.unwrap_or_default();
    assert!(
        error.contains("Password did not conform with policy"),
        "{error}"
    );
    assert!(!error.contains(NEW_PASSWORD));

    let status = op.ok(&["status"], None);
    assert!(
        status.contains("write-back failures in the last day: password 1"),
        "{status}"
    );
    assert!(
        !status.contains(NEW_PASSWORD) && !status.contains("sealed"),
        "{status}"
    );
    let metrics = t.app.metrics().await;
    let line = "switchyard_writeback_total{what=\"password\",result=\"refused\"} 1";
    assert!(metrics.contains(line), "{line} in {metrics}");
}

#[tokio::test]
async fn passwords_written_back_without_a_sealing_key_stop_config_check_and_serve() {
    let iso = isolated().await;
    let config = "[upstream]\n\
         provider = \"okta\"\n\
         domain = \"acme.okta.com\"\n\
         client_id = \"switchyard\"\n\
         token_keys_env = \"SWITCHYARD_TEST_NO_SUCH_KEYS\"\n\
         [upstream.management]\n\
         api_token_env = \"SWITCHYARD_TEST_OKTA_API_TOKEN\"\n\
         write_back = { password = \"outbox\", blocked = \"blocking\" }\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, config).unwrap();
    let (settings, _) = Settings::load(Some(&path)).unwrap();
    let op = Operator::for_settings(&settings, &iso.database_url);
    for args in [&["config", "check"][..], &["serve"]] {
        let out = op.run(args, None);
        assert!(!out.status.success(), "{args:?} refuses to start");
        let said = said(&out);
        assert!(
            said.contains("upstream.management.write_back")
                && said.contains("SWITCHYARD_TEST_NO_SUCH_KEYS"),
            "{args:?}: {said}"
        );
    }
}

/// The fakes refuse a write of the wrong shape as the vendor does, so a
/// provider definition that drifted from the vendor's API fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fakes_refuse_writes_of_the_wrong_shape_with_the_vendors_errors() {
    let okta = FakeUpstream::start(Flavor::Okta).await;
    okta.add_user(FakeUser::new(OKTA_SUB, EMAIL, PASSWORD));
    let http = reqwest::Client::new();
    let r = http
        .post(okta.url(&format!("/api/v1/users/{OKTA_SUB}")))
        .header(
            "Authorization",
            format!("SSWS {}", switchyard_kit::fake::OKTA_API_TOKEN),
        )
        .json(&json!({"credentials": {"password": NEW_PASSWORD}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errorCode"], "E0000001", "{body}");
    assert!(
        body["errorCauses"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );
    let r = http
        .post(okta.url(&format!("/api/v1/users/{OKTA_SUB}/lifecycle/unsuspend")))
        .header(
            "Authorization",
            format!("SSWS {}", switchyard_kit::fake::OKTA_API_TOKEN),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "an active user is not unsuspended"
    );
    assert_eq!(okta.is_blocked(OKTA_SUB), Some(false));

    let cognito = FakeUpstream::start(Flavor::Cognito).await;
    cognito.add_user(FakeUser::new(COGNITO_SUB, EMAIL, PASSWORD));
    let url = cognito.url("/");
    let body = serde_json::to_vec(&json!({
        "UserPoolId": COGNITO_POOL_ID, "Username": COGNITO_SUB, "Password": NEW_PASSWORD,
    }))
    .unwrap();
    let mut request = http.post(&url).body(body.clone());
    for (k, v) in switchyard_kit::fake::sign_cognito_request(
        &url,
        switchyard_kit::fake::COGNITO_ADMIN_SET_USER_PASSWORD,
        &body,
    ) {
        request = request.header(k, v);
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["__type"], "InvalidParameterException", "{answer}");
    // Refused, so the old password is still the one.
    let writes = cognito.management_writes();
    assert!(writes.is_empty(), "{writes:?}");
}

#[tokio::test]
async fn config_check_names_a_write_back_the_provider_cannot_make() {
    let iso = isolated().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(
        &path,
        "[upstream]\n\
         provider = \"oidc\"\n\
         issuer = \"https://login.example.com\"\n\
         client_id = \"switchyard\"\n\
         [upstream.management]\n\
         write_back = [\"profile\"]\n",
    )
    .unwrap();
    let (settings, _) = Settings::load(Some(&path)).unwrap();
    let out = Operator::for_settings(&settings, &iso.database_url).run(&["config", "check"], None);
    assert!(!out.status.success());
    let said = said(&out);
    assert!(
        said.contains("upstream.management.write_back")
            && said.contains("provider oidc describes no profile write"),
        "{said}"
    );
}

/// The password a user sets through the emailed reset link is the one the
/// upstream holds after: rolled back, they sign in there with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reset_by_email_is_written_back_and_a_rollback_finds_it() {
    let sink = switchyard_kit::smtp::SmtpSink::start().await;
    let t = spawn_and(Flavor::Auth0, all(WriteMode::Outbox), |s| {
        crate::recovery::send_to(&sink, s)
    })
    .await;
    t.fake.add_user(FakeUser::new(AUTH0_SUB, EMAIL, PASSWORD));
    assert!(logs_in(&t, PASSWORD).await, "the lazy migration");
    let (status, _, _) = crate::recovery::forgot_answer(&t.app, EMAIL).await;
    assert_eq!(status, StatusCode::OK);
    let link = crate::recovery::link_in_message(&t.app, &sink, 1).await;
    let done = crate::recovery::reset_with(&t.app, &browser(), &link, NEW_PASSWORD).await;
    assert_eq!(done.status(), StatusCode::OK, "password set");
    let rows = until_all_done(&t, "the reset password to be written back").await;
    assert!(
        rows.iter().any(|r| r.kind.as_str() == "write_password"),
        "{rows:?}"
    );
    Operator::for_app(&t).ok(&["cutover", "pin", AUTH0_SUB, "--upstream"], None);
    assert!(logs_in(&t, NEW_PASSWORD).await, "the upstream has it");
    assert!(!logs_in(&t, PASSWORD).await, "and not the old one");
}

/// In blocking mode the reset page shows the upstream policy's words, sets
/// nothing, and the link still works for a password both accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_refusal_on_the_reset_page_is_shown_and_sets_nothing() {
    let sink = switchyard_kit::smtp::SmtpSink::start().await;
    let mut modes = WriteBack::default();
    modes.0.insert(WriteKind::Password, WriteMode::Blocking);
    let t = spawn_and(Flavor::Okta, modes, |s| crate::recovery::send_to(&sink, s)).await;
    t.fake.add_user(FakeUser::new(OKTA_SUB, EMAIL, PASSWORD));
    assert!(logs_in(&t, PASSWORD).await, "the lazy migration");
    t.fake.set_password_policy(NEW_PASSWORD.len() + 1);
    crate::recovery::forgot_answer(&t.app, EMAIL).await;
    let link = crate::recovery::link_in_message(&t.app, &sink, 1).await;
    let browser = browser();
    let refused = crate::recovery::reset_with(&t.app, &browser, &link, NEW_PASSWORD).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let html = refused.text().await.unwrap();
    assert!(
        html.contains("Password requirements were not met"),
        "the vendor's words: {html}"
    );
    assert!(logs_in(&t, PASSWORD).await, "nothing changed here");
    t.fake.set_password_policy(8);
    let done = crate::recovery::reset_with(&t.app, &browser, &link, NEW_PASSWORD).await;
    assert_eq!(done.status(), StatusCode::OK, "the same link, accepted now");
    assert!(logs_in(&t, NEW_PASSWORD).await);
    Operator::for_app(&t).ok(&["cutover", "pin", OKTA_SUB, "--upstream"], None);
    assert!(logs_in(&t, NEW_PASSWORD).await, "and at the upstream");
}
