//! The Management API while a migration runs: the users adapter reads
//! through to the upstream's Management API (the fake Auth0, which counts
//! its calls) while the upstream is the primary, and writes each change
//! where the phase and `api_writes` say, with the upstream's refusals
//! answered in Auth0's shape and nothing half-written.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use switchyard::config::{Phase, WriteMode};
use switchyard::store::UserState;
use switchyard::store::outbox::{OutboxKind, OutboxRow, OutboxState};
use switchyard_kit::fake::Flavor;

use crate::mgmt_api::{assert_auth0_error, enc};
use crate::mgmt_helpers::ALL_SCOPES;
use crate::upstream::UpstreamApp;

const PASSPHRASE: &str = "a long enough passphrase 42";

async fn spawn(phase: Phase, api_writes: WriteMode) -> UpstreamApp {
    crate::outbox::spawn(Flavor::Auth0, false, |s| {
        s.cutover.phase = phase;
        s.upstream.as_mut().unwrap().management.api_writes = Some(api_writes);
        s.password.failure_floor_ms = 0;
    })
    .await
}

async fn rows(t: &UpstreamApp) -> Vec<OutboxRow> {
    t.app.state.db.list_outbox(None, 100).await.unwrap()
}

/// Polls until `done` holds of the fake upstream, with a deadline; the
/// outbox is shown when it does not.
async fn until(
    t: &UpstreamApp,
    what: &str,
    done: impl Fn(&switchyard_kit::fake::FakeUpstream) -> bool,
) {
    let start = Instant::now();
    while !done(&t.fake) {
        if start.elapsed() > Duration::from_secs(30) {
            panic!("timed out waiting for {what}; outbox: {:?}", rows(t).await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_user_known_only_upstream_is_read_through_once_and_kept_pending() {
    let t = spawn(Phase::Lazy, WriteMode::Blocking).await;
    let ids = t.fake.seed_users(2);
    let token = t.app.management_token(&["read:users"]).await;
    let upstream = t.fake.management_user(&ids[0]).unwrap();

    let (status, _, user) = t
        .app
        .mgmt(
            &token,
            Method::GET,
            &format!("/users/{}", enc(&ids[0])),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{user}");
    for field in [
        "user_id",
        "email",
        "email_verified",
        "name",
        "user_metadata",
        "app_metadata",
    ] {
        assert_eq!(
            user[field], upstream[field],
            "{field}: {user} vs {upstream}"
        );
    }
    assert_eq!(user["identities"][0]["provider"], "auth0");
    let local = t.app.state.db.get_user(&ids[0]).await.unwrap().unwrap();
    assert_eq!(local.state, UserState::Pending);
    assert_eq!(t.fake.calls("get_user"), 1);
    // The next read is local.
    let (status, _, again) = t
        .app
        .mgmt(
            &token,
            Method::GET,
            &format!("/users/{}", enc(&ids[0])),
            None,
        )
        .await;
    assert_eq!(
        (status, &again["email"]),
        (StatusCode::OK, &upstream["email"])
    );
    assert_eq!(t.fake.calls("get_user"), 1);

    // By email, likewise.
    let email = t.fake.management_user(&ids[1]).unwrap()["email"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _, found) = t
        .app
        .mgmt(
            &token,
            Method::GET,
            &format!("/users-by-email?email={}", enc(&email)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found[0]["user_id"], ids[1]);
    assert_eq!(t.fake.calls("users_by_email"), 1);
    t.app
        .mgmt(
            &token,
            Method::GET,
            &format!("/users-by-email?email={}", enc(&email)),
            None,
        )
        .await;
    assert_eq!(t.fake.calls("users_by_email"), 1);

    // Unknown there too: 404, asked once.
    let (status, _, error) = t
        .app
        .mgmt(
            &token,
            Method::GET,
            "/users/auth0%7C000000000000000000000000",
            None,
        )
        .await;
    assert_auth0_error(&error, status, "inexistent_user");
    assert_eq!(t.fake.calls("get_user"), 2);

    // The upstream down or throttling: Auth0's shapes, nothing stored.
    t.fake.fail_next("get_user", 10);
    let ghost = t.fake.seed_users(3)[2].clone();
    let (status, headers, error) = t
        .app
        .mgmt(
            &token,
            Method::GET,
            &format!("/users/{}", enc(&ghost)),
            None,
        )
        .await;
    assert_auth0_error(&error, status, "upstream_unavailable");
    assert!(headers.get("retry-after").is_some());
    t.fake.fail_next("get_user", 0);
    t.fake.rate_limit_next("get_user", 10, 3);
    let (status, headers, error) = t
        .app
        .mgmt(
            &token,
            Method::GET,
            &format!("/users/{}", enc(&ghost)),
            None,
        )
        .await;
    assert_auth0_error(&error, status, "too_many_requests");
    assert_eq!(headers["retry-after"], "3");
    assert!(t.app.state.db.get_user(&ghost).await.unwrap().is_none());
    assert!(
        t.app
            .metrics()
            .await
            .contains("what=\"api_read\",result=\"unavailable\"")
    );
}

#[tokio::test]
async fn once_local_is_the_primary_nothing_is_read_from_the_upstream() {
    for phase in [Phase::LocalFirst, Phase::LocalOnly] {
        let t = spawn(phase, WriteMode::Blocking).await;
        let ids = t.fake.seed_users(1);
        let token = t.app.management_token(&["read:users"]).await;
        let (status, _, _) = t
            .app
            .mgmt(
                &token,
                Method::GET,
                &format!("/users/{}", enc(&ids[0])),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{phase:?}");
        assert_eq!(t.fake.calls("get_user"), 0, "{phase:?}");
    }
}

#[tokio::test]
async fn blocking_writes_reach_the_upstream_first_and_its_refusals_change_nothing() {
    let t = spawn(Phase::Lazy, WriteMode::Blocking).await;
    let ids = t.fake.seed_users(2);
    let id = &ids[0];
    let path = format!("/users/{}", enc(id));
    let token = t.app.management_token(ALL_SCOPES).await;

    let (status, _, user) = t
        .app
        .mgmt(
            &token,
            Method::PATCH,
            &path,
            Some(json!({"name": "Ada Renamed", "app_metadata": {"plan": "gold"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["name"], "Ada Renamed");
    let upstream = t.fake.management_user(id).unwrap();
    assert_eq!(upstream["name"], "Ada Renamed");
    assert_eq!(upstream["app_metadata"]["plan"], "gold");
    assert_eq!(
        t.app
            .state
            .db
            .get_user(id)
            .await
            .unwrap()
            .unwrap()
            .profile
            .name
            .as_deref(),
        Some("Ada Renamed")
    );
    assert!(rows(&t).await.is_empty());

    // Refused by the upstream's password policy, throttled, down: the
    // upstream's refusal is the answer and nothing local changes.
    t.fake.set_password_policy(64);
    let (status, _, error) = t
        .app
        .mgmt(
            &token,
            Method::PATCH,
            &path,
            Some(json!({"password": PASSPHRASE})),
        )
        .await;
    assert_auth0_error(&error, status, "invalid_body");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("PasswordStrengthError"),
        "{error}"
    );
    t.fake.set_password_policy(0);
    t.fake.rate_limit_next("patch_user", 10, 2);
    let (status, headers, error) = t
        .app
        .mgmt(
            &token,
            Method::PATCH,
            &path,
            Some(json!({"name": "Throttled"})),
        )
        .await;
    assert_auth0_error(&error, status, "too_many_requests");
    assert_eq!(headers["retry-after"], "2");
    t.fake.rate_limit_next("patch_user", 0, 0);
    t.fake.fail_next("patch_user", 10);
    let (status, _, error) = t
        .app
        .mgmt(&token, Method::PATCH, &path, Some(json!({"blocked": true})))
        .await;
    assert_auth0_error(&error, status, "upstream_unavailable");
    t.fake.fail_next("patch_user", 0);
    let local = t.app.state.db.get_user(id).await.unwrap().unwrap();
    assert_eq!(
        (local.profile.name.as_deref(), local.blocked),
        (Some("Ada Renamed"), false)
    );
    assert!(t.app.state.db.get_password(id).await.unwrap().is_none());
    assert_eq!(t.fake.management_user(id).unwrap()["name"], "Ada Renamed");
    assert!(rows(&t).await.is_empty());

    // A new user is created at the upstream and kept here as pending.
    let (status, _, created) = t.app.mgmt(&token, Method::POST, "/users", Some(json!({
        "connection": "Username-Password-Authentication", "email": "newbie@example.com", "password": PASSPHRASE,
        "user_metadata": {"source": "api"},
    }))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let new_id = created["user_id"].as_str().unwrap().to_string();
    assert!(new_id.starts_with("auth0|"), "{new_id}");
    assert_eq!(
        t.fake.management_user(&new_id).unwrap()["user_metadata"]["source"],
        "api"
    );
    assert_eq!(
        t.app
            .state
            .db
            .get_user(&new_id)
            .await
            .unwrap()
            .unwrap()
            .state,
        UserState::Pending
    );
    // An email the upstream already has: its 409, nothing here.
    let taken = t.fake.management_user(&ids[1]).unwrap()["email"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _, error) = t.app.mgmt(&token, Method::POST, "/users", Some(json!({
        "connection": "Username-Password-Authentication", "email": taken, "password": PASSPHRASE,
    }))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_auth0_error(&error, status, "auth0_idp_error");
    assert!(
        t.app
            .state
            .db
            .find_user_by_login(&taken)
            .await
            .unwrap()
            .is_none()
    );

    // Deleted at the upstream, then here.
    let (status, _, _) = t.app.mgmt(&token, Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(t.fake.management_user(id).is_none());
    assert!(t.app.state.db.get_user(id).await.unwrap().is_none());
    assert_eq!(t.fake.calls("delete_user"), 1);
}

#[tokio::test]
async fn outbox_writes_change_here_first_and_reach_the_upstream_after() {
    for phase in [Phase::Lazy, Phase::LocalFirst] {
        // In lazy the outbox is asked for; from local_first on it is how
        // the secondary is kept.
        let t = spawn(phase, WriteMode::Outbox).await;
        let ids = t.fake.seed_users(1);
        let id = ids[0].clone();
        // Known here (a backfill's pending user), so no read-through is needed.
        let token = t.app.management_token(ALL_SCOPES).await;
        if phase == Phase::LocalFirst {
            adopt(&t, &id).await;
        }
        let path = format!("/users/{}", enc(&id));
        // The upstream is down: the change is made here and its write waits.
        t.fake.fail_next("patch_user", 2);
        let (status, _, user) = t
            .app
            .mgmt(
                &token,
                Method::PATCH,
                &path,
                Some(json!({"nickname": "queued"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{phase:?}: {user}");
        assert_eq!(user["nickname"], "queued");
        let row = rows(&t)
            .await
            .into_iter()
            .find(|r| r.kind == OutboxKind::WriteProfile)
            .expect("a queued profile write");
        assert_eq!(row.user_id, id);
        until(&t, "the profile at the upstream", |fake| {
            fake.management_user(&id).unwrap()["nickname"] == "queued"
        })
        .await;
        let (status, _, _) = t.app.mgmt(&token, Method::DELETE, &path, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(t.app.state.db.get_user(&id).await.unwrap().is_none());
        until(&t, "the deletion at the upstream", |fake| {
            fake.management_user(&id).is_none()
        })
        .await;
        // The upstream has the deletion as soon as the worker's request
        // lands; the row is marked done by the worker's next commit, a
        // moment later.
        let start = Instant::now();
        while !rows(&t)
            .await
            .iter()
            .any(|r| r.kind == OutboxKind::WriteDelete && r.state == OutboxState::Done)
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{phase:?}: the delivered delete is not marked done: {:?}",
                rows(&t).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The upstream's user kept here as pending, as a backfill would.
async fn adopt(t: &UpstreamApp, id: &str) {
    let up = t.app.state.write_back.upstream().unwrap();
    let raw = t.fake.management_user(id).unwrap();
    switchyard::api_v2::adapter::adopt(&t.app.state, up, &raw)
        .await
        .unwrap();
}

#[tokio::test]
async fn in_local_only_nothing_reaches_the_upstream() {
    let t = spawn(Phase::LocalOnly, WriteMode::Blocking).await;
    let ids = t.fake.seed_users(1);
    adopt(&t, &ids[0]).await;
    let token = t.app.management_token(ALL_SCOPES).await;
    let path = format!("/users/{}", enc(&ids[0]));
    let before = t.fake.management_user(&ids[0]).unwrap();
    let (status, _, _) = t
        .app
        .mgmt(
            &token,
            Method::PATCH,
            &path,
            Some(json!({"name": "Only Here", "blocked": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, created) = t.app.mgmt(&token, Method::POST, "/users", Some(json!({
        "connection": "Username-Password-Authentication", "email": "late@example.com", "password": PASSPHRASE,
    }))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        t.app
            .state
            .db
            .get_user(created["user_id"].as_str().unwrap())
            .await
            .unwrap()
            .unwrap()
            .state,
        UserState::Local
    );
    assert!(rows(&t).await.is_empty());
    assert!(t.fake.management_writes().is_empty());
    assert_eq!(t.fake.management_user(&ids[0]).unwrap(), before);
}
