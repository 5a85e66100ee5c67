//! The write outbox: a lazy migration marks the user at the upstream
//! (`[upstream.management] mark_migrated`) through a durable queue that a
//! background worker delivers, never inside the login.
//!
//! The worker is polled for with a deadline, never timed: each test waits
//! for the state it needs and fails with what it last saw.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use switchyard::config::Settings;
use switchyard::store::outbox::{OutboxRow, OutboxState};
use switchyard::store::sql::rfc3339;
use switchyard::store::{Migration, UpstreamProfile};

use crate::helpers::*;
use crate::migration::password_login;
use crate::upstream::{UpstreamApp, spawn_with_upstream};
use switchyard_kit::fake::{
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, COGNITO_POOL_ID, FakeUser, Flavor, OKTA_API_TOKEN,
};

const SUB: &str = "auth0|6a1b2c3d4e5f60718293a4b5";
const KEYCLOAK_SUB: &str = "3f2c1b0a-9d8e-4f7a-8b6c-5d4e3f2a1b0c";

/// Set for every test process by .cargo/config.toml, to the fake's secrets.
const OKTA_TOKEN_ENV: &str = "SWITCHYARD_TEST_OKTA_API_TOKEN";
const AWS_KEY_ENV: &str = "SWITCHYARD_TEST_AWS_ACCESS_KEY_ID";
const AWS_SECRET_ENV: &str = "SWITCHYARD_TEST_AWS_SECRET_ACCESS_KEY";

/// How long the worker may take before a test gives up on it.
const DEADLINE: Duration = Duration::from_secs(60);

fn carol(sub: &str) -> FakeUser {
    let mut u = FakeUser::new(sub, "carol@example.com", PASSWORD);
    u.name = Some("Carol Danvers".into());
    u.app_metadata = json!({"roles": ["pilot"], "plan": "gold"});
    u
}

/// Switchyard in front of `flavor` in the lazy phase, its Management API
/// on the fake, marking on or off; the worker looks at the outbox often
/// and retries after about a second.
pub(crate) async fn spawn(
    flavor: Flavor,
    mark: bool,
    configure: impl FnOnce(&mut Settings),
) -> UpstreamApp {
    spawn_with_upstream(flavor, |s| {
        s.password.failure_floor_ms = 50;
        let up = s.upstream.as_mut().unwrap();
        let issuer = up.issuer.clone().unwrap();
        match flavor {
            Flavor::Auth0 => {
                up.connection = Some("Username-Password-Authentication".into());
                up.management.base = Some(format!("{issuer}api/v2/"));
                up.management.audience = Some(format!("{issuer}api/v2/"));
            }
            Flavor::Keycloak => {
                up.management.base = Some(issuer.replace("/realms/", "/admin/realms/") + "/");
            }
            Flavor::Okta => {
                up.management.base = Some(issuer.replace("/oauth2/default", "/api/v1/"));
                up.management.api_token_env = Some(OKTA_TOKEN_ENV.into());
            }
            Flavor::Cognito => {
                up.management.base = Some(issuer.replace(COGNITO_POOL_ID, ""));
                up.user_pool_id = Some(COGNITO_POOL_ID.into());
                up.management.aws_access_key_id_env = Some(AWS_KEY_ENV.into());
                up.management.aws_secret_access_key_env = Some(AWS_SECRET_ENV.into());
                up.management.aws_session_token_env = Some("SWITCHYARD_TEST_NO_AWS_SESSION".into());
            }
            other => unreachable!("no Management API configured here for {other:?}"),
        }
        up.management.mark_migrated = mark;
        up.management.outbox_poll_secs = Some(0.05);
        up.management.outbox_retry_secs = Some(1.0);
        configure(s);
    })
    .await
}

async fn rows(t: &UpstreamApp) -> Vec<OutboxRow> {
    t.app.state.db.list_outbox(None, 100).await.unwrap()
}

/// Polls the outbox until `done` holds for its one row; returns that row.
async fn until_row(t: &UpstreamApp, what: &str, done: impl Fn(&OutboxRow) -> bool) -> OutboxRow {
    let start = std::time::Instant::now();
    loop {
        let rows = rows(t).await;
        assert!(rows.len() <= 1, "one row per migrated user: {rows:?}");
        if let Some(row) = rows.first().filter(|r| done(r)) {
            return row.clone();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "waiting for {what}; the outbox holds {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn login_migrates(t: &UpstreamApp) {
    let r = password_login(t, "web", "carol@example.com", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "the login succeeds");
    assert!(
        location(r.headers()).starts_with(REDIRECT),
        "back to the client"
    );
}

/// The time the user was migrated, as the upstream is told it.
async fn migrated_at(t: &UpstreamApp, id: &str) -> String {
    let user = t.app.state.db.get_user(id).await.unwrap().unwrap();
    rfc3339(user.migrated_at.expect("migrated"))
}

#[tokio::test]
async fn a_lazy_migration_marks_the_auth0_user_and_keeps_their_other_app_metadata() {
    let t = spawn(Flavor::Auth0, true, |_| {}).await;
    t.fake.add_user(carol(SUB));
    login_migrates(&t).await;

    let row = until_row(&t, "the mark to be delivered", |r| {
        r.state == OutboxState::Done
    })
    .await;
    let at = migrated_at(&t, SUB).await;
    assert_eq!(row.kind.as_str(), "mark_migrated");
    assert_eq!(row.user_id, SUB);
    assert_eq!(row.attempts, 1);
    assert_eq!(row.last_error, None);
    assert_eq!(
        t.fake.management_user(SUB).unwrap()["app_metadata"],
        json!({"roles": ["pilot"], "plan": "gold", "migrated_at": at}),
        "Auth0 merged the key into the user's app_metadata"
    );
    let writes = t.fake.management_writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].endpoint, "patch_user");
    assert_eq!(
        writes[0].user_id, SUB,
        "the id arrived whole through its encoding"
    );
    assert_eq!(writes[0].body, json!({"app_metadata": {"migrated_at": at}}));
    assert!(
        t.app
            .metrics()
            .await
            .contains("switchyard_outbox_writes_total{what=\"mark_migrated\",result=\"done\"} 1"),
        "counted"
    );
}

#[tokio::test]
async fn with_marking_off_a_migration_queues_nothing() {
    let t = spawn(Flavor::Auth0, false, |_| {}).await;
    t.fake.add_user(carol(SUB));
    login_migrates(&t).await;
    assert!(
        t.app.state.db.get_user(SUB).await.unwrap().is_some(),
        "migrated"
    );
    assert_eq!(rows(&t).await, vec![], "nothing queued");
    let counts = t.app.state.db.outbox_counts(5).await.unwrap();
    assert_eq!((counts.pending, counts.failed, counts.done), (0, 0, 0));
    assert_eq!(t.fake.calls("patch_user"), 0);
    assert_eq!(
        t.fake.management_user(SUB).unwrap()["app_metadata"],
        json!({"roles": ["pilot"], "plan": "gold"})
    );
}

#[tokio::test]
async fn a_failing_management_api_never_fails_the_login_and_the_mark_arrives_after_retries() {
    let t = spawn(Flavor::Auth0, true, |_| {}).await;
    t.fake.add_user(carol(SUB));
    t.fake.fail_next("patch_user", 1_000_000);
    login_migrates(&t).await;

    let row = until_row(&t, "two failed attempts", |r| r.attempts >= 2).await;
    assert_eq!(row.state, OutboxState::Pending, "still to be retried");
    assert!(
        row.last_error.as_deref().is_some_and(|e| e.contains("503")),
        "the vendor's answer is kept: {row:?}"
    );
    assert_eq!(t.fake.management_writes(), vec![], "nothing written yet");
    assert!(
        t.app
            .metrics()
            .await
            .contains("switchyard_outbox_writes_total{what=\"mark_migrated\",result=\"retry\"}"),
        "counted as a sync error"
    );

    t.fake.fail_next("patch_user", 0);
    let row = until_row(&t, "the mark to be delivered", |r| {
        r.state == OutboxState::Done
    })
    .await;
    assert!(row.attempts >= 3, "{row:?}");
    assert_eq!(
        t.fake.management_user(SUB).unwrap()["app_metadata"]["migrated_at"],
        json!(migrated_at(&t, SUB).await)
    );
}

#[tokio::test]
async fn a_user_the_upstream_no_longer_has_fails_at_once_and_is_kept() {
    let t = spawn(Flavor::Auth0, true, |_| {}).await;
    t.fake.add_user(carol(SUB));
    t.fake.fail_next("patch_user", 1_000_000);
    login_migrates(&t).await;
    until_row(&t, "a failed attempt", |r| r.attempts >= 1).await;
    t.fake.remove_user(SUB);
    t.fake.fail_next("patch_user", 0);

    let row = until_row(&t, "the row to fail", |r| r.state == OutboxState::Failed).await;
    let error = row.last_error.clone().unwrap();
    assert!(
        error.contains("404") && error.contains("The user does not exist."),
        "a 4xx is not retried: {row:?}"
    );
    assert!(
        !error.to_lowercase().contains("bearer") && !error.contains("eyJ"),
        "no token in the error: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_past_its_attempts_is_failed_shown_by_status_and_sent_again_by_outbox_retry() {
    let t = spawn(Flavor::Auth0, true, |s| {
        s.upstream.as_mut().unwrap().management.outbox_max_attempts = Some(2);
    })
    .await;
    t.fake.add_user(carol(SUB));
    t.fake.fail_next("patch_user", 1_000_000);
    login_migrates(&t).await;

    let row = until_row(&t, "the row to fail", |r| r.state == OutboxState::Failed).await;
    assert_eq!(row.attempts, 2);
    let cli = t.app._isolated.same_database();

    let status = run_cli(&cli, &["status", "--json"], None, &[]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["outbox"]["failed"], 1, "{status}");
    assert_eq!(status["outbox"]["pending"], 0, "{status}");
    let failure = &status["outbox"]["recent_failures"][0];
    assert_eq!(failure["id"], row.id);
    assert!(
        failure["last_error"].as_str().unwrap().contains("503"),
        "{failure}"
    );

    let text = run_cli(&cli, &["status"], None, &[]);
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.contains("outbox: 0 pending, 1 failed, 0 done"),
        "{text}"
    );
    assert!(
        text.contains(&format!("failed #{} mark_migrated {SUB}", row.id)),
        "{text}"
    );

    let list = run_cli(&cli, &["outbox", "list", "--failed"], None, &[]);
    let list = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        list.contains(&format!("#{}", row.id)) && list.contains("failed"),
        "{list}"
    );

    assert_eq!(
        t.fake.management_writes(),
        vec![],
        "nothing written while failing"
    );
    t.fake.fail_next("patch_user", 0);
    let retry = run_cli(&cli, &["outbox", "retry", "--all-failed"], None, &[]);
    assert!(
        retry.status.success(),
        "{}",
        String::from_utf8_lossy(&retry.stderr)
    );
    assert!(String::from_utf8_lossy(&retry.stdout).contains("1 outbox row(s) pending again"));

    let row = until_row(&t, "the retried mark to be delivered", |r| {
        r.state == OutboxState::Done
    })
    .await;
    assert_eq!(row.last_error, None);
    assert_eq!(
        t.fake.management_user(SUB).unwrap()["app_metadata"]["migrated_at"],
        json!(migrated_at(&t, SUB).await)
    );
    let again = run_cli(&cli, &["outbox", "retry", &row.id.to_string()], None, &[]);
    assert!(!again.status.success(), "a done row is not sent again");
    let discard = run_cli(&cli, &["outbox", "discard", &row.id.to_string()], None, &[]);
    assert!(
        !discard.status.success(),
        "a done row is history, not discarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_discard_gives_a_failed_write_up() {
    let t = spawn(Flavor::Auth0, true, |s| {
        s.upstream.as_mut().unwrap().management.outbox_max_attempts = Some(1);
    })
    .await;
    t.fake.add_user(carol(SUB));
    t.fake.fail_next("patch_user", 1_000_000);
    login_migrates(&t).await;
    let row = until_row(&t, "the row to fail", |r| r.state == OutboxState::Failed).await;
    let cli = t.app._isolated.same_database();
    let out = run_cli(&cli, &["outbox", "discard", &row.id.to_string()], None, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rows(&t).await, vec![]);
    let list = run_cli(&cli, &["outbox", "list"], None, &[]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("no outbox rows"));
}

#[tokio::test]
async fn a_keycloak_migration_is_marked_by_a_put_of_the_whole_representation() {
    let t = spawn(Flavor::Keycloak, true, |_| {}).await;
    t.fake.add_user(carol(KEYCLOAK_SUB));
    let before = t.fake.management_user(KEYCLOAK_SUB).unwrap();
    login_migrates(&t).await;

    until_row(&t, "the mark to be delivered", |r| {
        r.state == OutboxState::Done
    })
    .await;
    let at = migrated_at(&t, KEYCLOAK_SUB).await;
    let after = t.fake.management_user(KEYCLOAK_SUB).unwrap();
    assert_eq!(
        after["attributes"],
        json!({"roles": ["pilot"], "plan": ["gold"], "migrated_at": [at]}),
        "the other attributes survive the PUT"
    );
    for kept in ["firstName", "lastName", "email", "username", "enabled"] {
        assert_eq!(after[kept], before[kept], "{kept} survives the PUT");
    }
    assert_eq!(t.fake.calls("admin_user"), 2, "one GET, one PUT");
    let writes = t.fake.management_writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].endpoint, "admin_user");
    assert_eq!(writes[0].body["attributes"]["migrated_at"], json!([at]));
}

#[tokio::test]
async fn a_claim_is_one_workers_until_its_lease_ends_and_a_migrated_user_is_queued_once() {
    // Marking off, and the test plays the workers. The app's own worker
    // also runs (it sends email), and may claim the row or fail it for
    // want of a client at any moment: the test's workers act at a time far
    // ahead, where that worker's claim is stale and its retry is due.
    let t = spawn(Flavor::Auth0, false, |_| {}).await;
    let db = &t.app.state.db;
    let profile = UpstreamProfile {
        id: SUB.into(),
        profile: switchyard::store::Profile {
            email: Some("carol@example.com".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let migration = Migration {
        hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
        algorithm: "argon2id".into(),
        route: "password".into(),
        mark_upstream: true,
    };
    db.migrate_upstream_user("auth0", &profile, &migration)
        .await
        .unwrap();
    db.migrate_upstream_user("auth0", &profile, &migration)
        .await
        .unwrap();
    let queued = rows(&t).await;
    assert_eq!(
        queued.len(),
        1,
        "queued with the migration, once: {queued:?}"
    );
    assert_eq!(queued[0].payload["upstream_id"], SUB);

    let now = switchyard::store::now() + 100_000;
    let a = db.claim_outbox("a", now, now - 600, 4).await.unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(
        db.claim_outbox("b", now, now - 600, 4).await.unwrap(),
        vec![],
        "claimed rows are passed over"
    );
    // `a` is presumed dead once its claim is older than the lease.
    let b = db.claim_outbox("b", now + 1, now + 1, 4).await.unwrap();
    assert_eq!(b.len(), 1, "taken over");
    assert!(
        !db.outbox_done(a[0].id, "a").await.unwrap(),
        "no longer a's"
    );
    assert!(db.outbox_done(b[0].id, "b").await.unwrap());
    assert_eq!(rows(&t).await[0].state, OutboxState::Done);
}

#[tokio::test]
async fn an_okta_migration_is_marked_by_a_partial_profile_update() {
    assert_eq!(std::env::var(OKTA_TOKEN_ENV).as_deref(), Ok(OKTA_API_TOKEN));
    let t = spawn(Flavor::Okta, true, |_| {}).await;
    let sub = Flavor::Okta.sample_sub(7);
    t.fake.add_user(carol(&sub));
    let before = t.fake.management_user(&sub).unwrap();
    login_migrates(&t).await;

    until_row(&t, "the mark to be delivered", |r| {
        r.state == OutboxState::Done
    })
    .await;
    let at = migrated_at(&t, &sub).await;
    let after = t.fake.management_user(&sub).unwrap();
    assert_eq!(after["profile"]["switchyardMigratedAt"], json!(at));
    for kept in ["firstName", "lastName", "login", "email"] {
        assert_eq!(
            after["profile"][kept], before["profile"][kept],
            "{kept} keeps its value"
        );
    }
    let writes = t.fake.management_writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].endpoint, "okta_update_user");
    assert_eq!(
        writes[0].body,
        json!({"profile": {"switchyardMigratedAt": at}})
    );
}

#[tokio::test]
async fn a_cognito_migration_is_marked_by_a_signed_update_of_a_custom_attribute() {
    assert_eq!(std::env::var(AWS_KEY_ENV).as_deref(), Ok(AWS_ACCESS_KEY_ID));
    assert_eq!(
        std::env::var(AWS_SECRET_ENV).as_deref(),
        Ok(AWS_SECRET_ACCESS_KEY)
    );
    let t = spawn(Flavor::Cognito, true, |_| {}).await;
    let sub = Flavor::Cognito.sample_sub(7);
    t.fake.add_user(carol(&sub));
    login_migrates(&t).await;

    until_row(&t, "the mark to be delivered", |r| {
        r.state == OutboxState::Done
    })
    .await;
    let at = migrated_at(&t, &sub).await;
    let writes = t.fake.management_writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].endpoint, "admin_update_user_attributes");
    assert_eq!(writes[0].user_id, sub);
    assert_eq!(
        writes[0].body,
        json!({"UserPoolId": COGNITO_POOL_ID, "Username": "carol@example.com",
               "UserAttributes": [{"Name": "custom:migrated_at", "Value": at}]}),
        "addressed by the pool's user name"
    );
    let attributes = t.fake.management_user(&sub).unwrap()["Attributes"].clone();
    assert!(
        attributes
            .as_array()
            .unwrap()
            .contains(&json!({"Name": "custom:migrated_at", "Value": at})),
        "{attributes}"
    );
}

#[tokio::test]
async fn serve_refuses_to_start_a_mark_its_settings_cannot_fill() {
    // Cognito's write names the pool, and none is configured.
    let iso = isolated().await;
    let mut up = switchyard::config::UpstreamSettings::for_provider("cognito");
    up.issuer = Some("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_FakePool".into());
    up.client_secret_env = Some("SWITCHYARD_TEST_UPSTREAM_SECRET".into());
    up.token_keys_env = "SWITCHYARD_TEST_TOKEN_KEYS".into();
    up.region = Some("eu-west-1".into());
    up.management.mark_migrated = true;
    up.management.aws_access_key_id_env = Some(AWS_KEY_ENV.into());
    up.management.aws_secret_access_key_env = Some(AWS_SECRET_ENV.into());
    let settings = Settings {
        database_url: iso.database_url.clone(),
        redis_url: iso.redis_url.clone(),
        session_prefix: iso.prefix.clone(),
        upstream: Some(up),
        ..Settings::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = switchyard::startup::Application::build_with_listener(settings, listener)
        .await
        .err()
        .expect("the build fails");
    let error = format!("{error:#}");
    assert!(
        error.contains("mark_migrated") && error.contains("set upstream.user_pool_id"),
        "{error}"
    );
}

#[tokio::test]
async fn an_attribute_override_the_okta_schema_lacks_fails_at_once_with_oktas_reason() {
    let t = spawn(Flavor::Okta, true, |s| {
        s.upstream
            .as_mut()
            .unwrap()
            .management
            .mark_migrated_attribute = Some("movedAt".into());
    })
    .await;
    let sub = Flavor::Okta.sample_sub(8);
    t.fake.add_user(carol(&sub));
    login_migrates(&t).await;

    let row = until_row(&t, "the row to fail", |r| r.state == OutboxState::Failed).await;
    assert_eq!(row.attempts, 1, "a 400 is not retried");
    let error = row.last_error.unwrap();
    assert!(
        error.contains("400") && error.contains("Api validation failed: profile"),
        "{error}"
    );
    assert_eq!(t.fake.calls("okta_update_user"), 1);
    assert_eq!(t.fake.management_writes(), vec![]);
    assert!(
        t.app
            .metrics()
            .await
            .contains("switchyard_outbox_writes_total{what=\"mark_migrated\",result=\"failed\"} 1")
    );
}
