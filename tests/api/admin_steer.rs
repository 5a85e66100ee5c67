//! Steering from the admin API and the dashboard: the cutover rules (with
//! a dry run that moves nobody), pins, user search and detail, block and
//! unblock, a reset email. Every change is checked on a real login that
//! follows it, and in the audit trail with its operator, before and after.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard::config::{Settings, WriteBack, WriteKind, WriteMode};
use switchyard::store::outbox::OutboxKind;
use switchyard::store::{NewUser, Profile};

use crate::admin_helpers::AdminScope;
use crate::helpers::*;
use crate::migration::password_login;
use crate::upstream::{UpstreamApp, spawn_with_upstream};
use switchyard_kit::chrome::{self, Chrome};
use switchyard_kit::fake::{FakeUser, Flavor};

const SUB: &str = "auth0|5f3a9b2c1d4e5f6a7b8c9d0e";
const EMAIL: &str = "carol@example.com";

/// `SUB` as one path segment.
fn sub_path() -> String {
    SUB.replace('|', "%7C")
}

/// Switchyard in front of a fake Auth0 in the lazy phase (password grant
/// on), carol at the upstream.
async fn lazy_with(configure: impl FnOnce(&mut Settings)) -> UpstreamApp {
    let t = spawn_with_upstream(Flavor::Auth0, |s| {
        s.upstream.as_mut().unwrap().connection = Some("Username-Password-Authentication".into());
        s.password.failure_floor_ms = 50;
        configure(s);
    })
    .await;
    t.fake.add_user(FakeUser::new(SUB, EMAIL, PASSWORD));
    t
}

/// The lazy app with carol migrated by her first login.
async fn carol_migrated() -> UpstreamApp {
    let t = lazy_with(|_| {}).await;
    assert!(logs_in(&t).await, "the first login migrates carol");
    t
}

fn password_calls(t: &UpstreamApp) -> usize {
    t.fake.calls("token:password")
        + t.fake
            .calls("token:http://auth0.com/oauth/grant-type/password-realm")
}

/// Whether carol's login through Switchyard's pages ends back at the client.
async fn logs_in(t: &UpstreamApp) -> bool {
    let r = password_login(t, "web", EMAIL, PASSWORD).await;
    r.status() == StatusCode::SEE_OTHER && location(r.headers()).starts_with(REDIRECT)
}

/// Where carol's next login goes, seen from outside: `local` (no upstream
/// call), `upstream_password` (one password-grant call) or
/// `upstream_redirect` (sent to the upstream's own page).
async fn next_login_route(t: &UpstreamApp) -> &'static str {
    let calls = password_calls(t);
    let r = password_login(t, "web", EMAIL, PASSWORD).await;
    let to = location(r.headers());
    if to.starts_with(&t.fake.base) {
        return "upstream_redirect";
    }
    assert!(to.starts_with(REDIRECT), "the login succeeded: {to}");
    if password_calls(t) > calls {
        "upstream_password"
    } else {
        "local"
    }
}

/// The admin events of `action`, oldest first.
async fn admin_events(app: &TestApp, action: &str) -> Vec<switchyard::store::AuditEvent> {
    let mut events: Vec<_> = app
        .state
        .db
        .recent_events(500)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == format!("admin.{action}"))
        .collect();
    events.reverse();
    events
}

async fn add_user_with_id(app: &TestApp, id: &str, email: &str, username: Option<&str>) {
    let new = NewUser {
        id: Some(id.into()),
        profile: Profile {
            email: Some(email.into()),
            username: username.map(Into::into),
            ..Default::default()
        },
    };
    app.state.db.create_user(&new, None).await.unwrap();
}

#[tokio::test]
async fn users_are_found_by_email_prefix_username_and_id_a_page_at_a_time() {
    let app = spawn_app().await;
    let token = app.admin_token(AdminScope::Read).await;
    add_user_with_id(&app, "auth0|abc", "Alice.Smith@Example.com", Some("alice")).await;
    add_user_with_id(&app, "auth0|abd", "alina@example.com", None).await;
    add_user_with_id(&app, "okta|zzz", "bob@example.com", Some("bobby")).await;
    add_user_with_id(&app, "auth0|w_x", "w%x@example.com", None).await;

    let ids = |body: &Value| -> Vec<String> {
        body["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (status, body) = app.admin_get(&token, "/users?q=ALI").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        ids(&body),
        ["auth0|abc", "auth0|abd"],
        "email prefix, any case"
    );
    let (_, body) = app.admin_get(&token, "/users?q=bobby").await;
    assert_eq!(ids(&body), ["okta|zzz"], "username");
    let (_, body) = app.admin_get(&token, "/users?q=okta%7Czzz").await;
    assert_eq!(ids(&body), ["okta|zzz"], "id");
    assert_eq!(body["users"][0]["email"], "bob@example.com");
    let (_, body) = app.admin_get(&token, "/users?q=w%25").await;
    assert_eq!(
        ids(&body),
        ["auth0|w_x"],
        "a % in the query is a character, not a wildcard"
    );
    let (_, body) = app.admin_get(&token, "/users?q=a_").await;
    assert!(ids(&body).is_empty(), "nor is _: {body}");

    // Paging: one at a time, following `next`.
    let mut seen = Vec::new();
    let mut path = "/users?q=al&limit=1".to_string();
    loop {
        let (status, body) = app.admin_get(&token, &path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        seen.extend(ids(&body));
        match body["next"].as_str() {
            Some(next) => {
                let after: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
                path = format!("/users?q=al&limit=1&after={after}");
            }
            None => break,
        }
    }
    assert_eq!(seen, ["auth0|abc", "auth0|abd"]);
    let (_, body) = app.admin_get(&token, "/users?limit=100").await;
    assert_eq!(ids(&body).len(), 4, "no query lists everyone");

    let (status, body) = app.admin_get(&token, "/users?limit=101").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "limit", "{body}");
    let (status, _) = app.admin_get(&token, "/users/nobody%7Chere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_users_detail_has_their_logins_and_the_route_cutover_explain_gives() {
    let t = carol_migrated().await;
    let token = t.app.admin_token(AdminScope::Read).await;
    // `|` percent-encoded, and as it is (the URL crate leaves it).
    for path in [format!("/users/{}", sub_path()), format!("/users/{SUB}")] {
        let (status, body) = t.app.admin_get(&token, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body["id"], SUB);
    }
    let (_, body) = t
        .app
        .admin_get(&token, &format!("/users/{}", sub_path()))
        .await;
    assert_eq!(body["state"], "migrated", "{body}");
    assert_eq!(body["blocked"], false);
    assert_eq!(body["pin"], Value::Null);
    assert_eq!(body["profile"]["email"], EMAIL);
    assert_eq!(body["migration_route"], "password");
    let logins = body["recent_logins"].as_array().unwrap();
    assert_eq!(logins.len(), 1, "{body}");
    assert_eq!(logins[0]["client_id"], "web");
    assert_eq!(body["route"]["route"], "local");
    assert_eq!(body["route"]["track"], "local");

    // The same lines `switchyard cutover explain` prints.
    let rules = switchyard::cutover::load(&*t.app.state.db, &t.app.state.settings.cutover)
        .await
        .unwrap();
    let caps = switchyard::cutover::UpstreamCaps {
        configured: true,
        password_grant: true,
    };
    let explained = switchyard::cutover::explain(&*t.app.state.db, &rules, SUB, None, caps)
        .await
        .unwrap();
    assert_eq!(body["route"]["explain"], json!(explained.lines()));
    assert_eq!(body["route"]["reason"], explained.decision.reason);
    assert!(
        body["route"]["explain"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("user {SUB} (state migrated, pin none)")),
        "{body}"
    );
}

#[tokio::test]
async fn a_pin_and_an_unpin_change_the_route_of_the_next_real_login() {
    let t = carol_migrated().await;
    let token = t.app.admin_token(AdminScope::Write).await;
    assert_eq!(next_login_route(&t).await, "local");

    let (status, body) = t
        .app
        .admin_send(
            &token,
            Method::POST,
            &format!("/users/{}/pin", sub_path()),
            Some(json!({"track": "upstream"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["pin"], "upstream");
    assert_eq!(body["route"]["route"], "upstream_password", "{body}");
    assert_eq!(
        next_login_route(&t).await,
        "upstream_password",
        "rolled back"
    );

    let (status, body) = t
        .app
        .admin_send(
            &token,
            Method::DELETE,
            &format!("/users/{}/pin", sub_path()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["pin"], Value::Null);
    assert_eq!(next_login_route(&t).await, "local", "unpinned");

    let (status, body) = t
        .app
        .admin_send(
            &token,
            Method::POST,
            &format!("/users/{}/pin", sub_path()),
            Some(json!({"track": "sideways"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a closed set: {body}");
    assert_eq!(body["field"], "track");

    let pins = admin_events(&t.app, "user.pin").await;
    assert_eq!(pins.len(), 1, "{pins:?}");
    assert_eq!(
        pins[0].actor.as_deref(),
        Some("client:ops-switchyard-admin")
    );
    assert_eq!(pins[0].detail["target"], SUB);
    assert_eq!(pins[0].detail["before"], json!({"pin": null}));
    assert_eq!(pins[0].detail["after"], json!({"pin": "upstream"}));
    let unpins = admin_events(&t.app, "user.unpin").await;
    assert_eq!(unpins.len(), 1);
    assert_eq!(unpins[0].detail["before"], json!({"pin": "upstream"}));
    assert_eq!(unpins[0].detail["after"], json!({"pin": null}));
}

#[tokio::test]
async fn a_phase_change_through_put_takes_the_next_login_and_a_dry_run_moves_nobody() {
    let t = carol_migrated().await;
    let token = t.app.admin_token(AdminScope::Write).await;
    let (status, before) = t.app.admin_get(&token, "/cutover").await;
    assert_eq!(status, StatusCode::OK, "{before}");
    assert_eq!(before["rules"]["phase"], "lazy");
    assert_eq!(before["reload_interval_secs"], 2);
    let mut rules = before["rules"].clone();
    rules["phase"] = json!("passthrough");

    // A dry run answers with what would move, and stores nothing.
    let (status, preview) = t
        .app
        .admin_send(
            &token,
            Method::PUT,
            "/cutover?dry_run=true",
            Some(rules.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["users"], 1);
    assert_eq!(preview["to_upstream"], 1, "{preview}");
    assert_eq!(preview["to_local"], 0);
    assert_eq!(preview["before"]["local"], 1);
    assert_eq!(preview["after"]["upstream_redirect"], 1);
    let (_, same) = t
        .app
        .admin_send(
            &token,
            Method::POST,
            "/cutover/preview",
            Some(rules.clone()),
        )
        .await;
    assert_eq!(same, preview, "POST preview is the same as a dry run");
    tokio::time::sleep(switchyard::cutover::RELOAD_INTERVAL + Duration::from_millis(200)).await;
    assert_eq!(
        t.app.admin_get(&token, "/cutover").await.1["rules"],
        before["rules"]
    );
    assert_eq!(
        next_login_route(&t).await,
        "local",
        "the dry run changed nothing"
    );
    assert!(admin_events(&t.app, "cutover.update").await.is_empty());

    // Invalid rules: a 400 naming the field.
    for (bad, field) in [
        (json!({"phase": "sideways"}), "phase"),
        (
            json!({"phase": "lazy", "cohorts": [{"percent": 101}]}),
            "cohorts[0].percent",
        ),
        (
            json!({"phase": "lazy", "cohorts": [{"percent": 300}]}),
            "cohorts[0].percent",
        ),
        (
            json!({"phase": "lazy", "cohorts": [{"email_domains": ["not a domain"]}]}),
            "cohorts[0].email_domains[0]",
        ),
        (
            json!({"phase": "lazy", "deny": ["ok@example.com", "@bad_domain"]}),
            "deny[1]",
        ),
        (
            json!({"phase": "lazy", "clients": {"web": "nowhere"}}),
            "clients.web",
        ),
    ] {
        let (status, body) = t
            .app
            .admin_send(&token, Method::PUT, "/cutover", Some(bad.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["field"], field, "{bad}: {body}");
        assert_eq!(body["type"], "urn:switchyard:problem:bad-request");
    }

    // The change itself: the next login takes the new route within the
    // reload interval.
    let (status, after) = t
        .app
        .admin_send(&token, Method::PUT, "/cutover", Some(rules.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["rules"]["phase"], "passthrough");
    let start = std::time::Instant::now();
    loop {
        let route = next_login_route(&t).await;
        if route == "upstream_redirect" {
            break;
        }
        assert!(
            start.elapsed() < switchyard::cutover::RELOAD_INTERVAL + Duration::from_secs(2),
            "still {route} after the reload interval"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let updates = admin_events(&t.app, "cutover.update").await;
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert_eq!(
        updates[0].actor.as_deref(),
        Some("client:ops-switchyard-admin")
    );
    assert_eq!(updates[0].detail["target"], "cutover");
    assert_eq!(updates[0].detail["before"]["phase"], "lazy");
    assert_eq!(updates[0].detail["after"]["phase"], "passthrough");
}

fn blocked_write_back(mode: WriteMode) -> WriteBack {
    WriteBack([(WriteKind::Blocked, mode)].into_iter().collect())
}

#[tokio::test]
async fn a_block_refuses_the_next_login_and_queues_the_write_back() {
    let t = crate::outbox::spawn(Flavor::Auth0, false, |s| {
        s.upstream.as_mut().unwrap().management.write_back = blocked_write_back(WriteMode::Outbox);
    })
    .await;
    t.fake.add_user(FakeUser::new(SUB, EMAIL, PASSWORD));
    assert!(logs_in(&t).await, "migrated");
    let token = t.app.admin_token(AdminScope::Write).await;

    let (status, body) = t
        .app
        .admin_send(
            &token,
            Method::POST,
            &format!("/users/{}/block", sub_path()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["blocked"], true);
    assert!(!logs_in(&t).await, "a blocked user cannot log in");
    let rows = t.app.state.db.list_outbox(None, 100).await.unwrap();
    assert!(
        rows.iter()
            .any(|r| r.kind == OutboxKind::WriteBlocked && r.user_id == SUB),
        "the block is owed the upstream: {rows:?}"
    );
    let start = std::time::Instant::now();
    while t.fake.is_blocked(SUB) != Some(true) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the worker writes the block back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (status, body) = t
        .app
        .admin_send(&token, Method::POST, &format!("/users/{SUB}/unblock"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["blocked"], false);
    assert!(logs_in(&t).await, "unblocked");

    let blocks = admin_events(&t.app, "user.block").await;
    assert_eq!(blocks.len(), 1);
    assert_eq!(
        blocks[0].actor.as_deref(),
        Some("client:ops-switchyard-admin")
    );
    assert_eq!(blocks[0].detail["before"], json!({"blocked": false}));
    assert_eq!(blocks[0].detail["after"], json!({"blocked": true}));
    let unblocks = admin_events(&t.app, "user.unblock").await;
    assert_eq!(unblocks[0].detail["after"], json!({"blocked": false}));

    // A reset email, queued as the Forgot-password page queues it.
    let (status, body) = t
        .app
        .admin_send(
            &token,
            Method::POST,
            &format!("/users/{}/reset", sub_path()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let rows = t.app.state.db.list_outbox(None, 100).await.unwrap();
    assert!(
        rows.iter()
            .any(|r| r.kind == OutboxKind::Email && r.user_id == SUB),
        "{rows:?}"
    );
    let resets = admin_events(&t.app, "user.reset").await;
    assert_eq!(resets.len(), 1);
    assert_eq!(resets[0].detail["after"], json!({"reset_email": "queued"}));
}

#[tokio::test]
async fn a_read_only_token_may_look_and_preview_but_changes_nothing() {
    let t = carol_migrated().await;
    let read = t.app.admin_token(AdminScope::Read).await;
    let (_, before) = t.app.admin_get(&read, "/cutover").await;
    let mut rules = before["rules"].clone();
    rules["phase"] = json!("passthrough");
    let user = sub_path();
    for (method, path, body) in [
        (Method::PUT, "/cutover".to_string(), Some(rules.clone())),
        (
            Method::POST,
            format!("/users/{user}/pin"),
            Some(json!({"track": "upstream"})),
        ),
        (Method::DELETE, format!("/users/{user}/pin"), None),
        (Method::POST, format!("/users/{user}/block"), None),
        (Method::POST, format!("/users/{user}/unblock"), None),
        (Method::POST, format!("/users/{user}/reset"), None),
    ] {
        let (status, problem) = t.app.admin_send(&read, method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {problem}");
        assert_eq!(problem["type"], "urn:switchyard:problem:forbidden");
    }
    let (status, _) = t
        .app
        .admin_send(&read, Method::PUT, "/cutover?dry_run=true", Some(rules))
        .await;
    assert_eq!(status, StatusCode::OK, "a dry run is a read");

    let (_, after) = t.app.admin_get(&read, "/cutover").await;
    assert_eq!(after, before);
    let user = t.app.state.db.get_user(SUB).await.unwrap().unwrap();
    assert!(!user.blocked);
    assert_eq!(user.pin, None);
    assert!(
        t.app
            .state
            .db
            .list_outbox(None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let events = t.app.state.db.recent_events(500).await.unwrap();
    assert!(
        !events.iter().any(|e| e.kind.starts_with("admin.")),
        "{events:?}"
    );
    assert_eq!(next_login_route(&t).await, "local");
}

/// Waits until the page shows `text` anywhere.
async fn wait_for_text(chrome: &Chrome, text: &str) {
    let script = format!(
        "return document.body.innerText.includes({})",
        serde_json::to_string(text).unwrap()
    );
    chrome
        .wait_for(text, &script, Duration::from_secs(10))
        .await;
}

async fn no_placeholders(chrome: &Chrome, page: &str) {
    let text = chrome.text("main").await;
    for bad in ["None", "null", "undefined"] {
        assert!(
            !text
                .split_whitespace()
                .any(|w| w.trim_matches(|c: char| !c.is_alphanumeric()) == bad),
            "{page} shows {bad}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_a_user_pins_them_and_changes_the_phase_in_chromium() {
    if !chrome::available("an_operator_finds_a_user_pins_them_and_changes_the_phase_in_chromium") {
        return;
    }
    let t = carol_migrated().await;
    let chrome = &Chrome::start(env!("CARGO_TARGET_TMPDIR"), "admin_steer").await;
    // The operator signs in through Switchyard's own login pages.
    t.app.admin_sign_in(chrome, "operator@example.com").await;

    // Search.
    chrome.goto(&t.app.url("/admin/users")).await;
    assert_eq!(chrome.title().await, "Users · Switchyard admin");
    chrome.type_into("#q", "carol").await;
    chrome.click("form[role=search] button").await;
    // The page before the search may already list carol: wait for the
    // search's own answer.
    chrome
        .wait_for(
            "the search's answer",
            "return location.search.includes('q=carol') && document.readyState === 'complete'",
            std::time::Duration::from_secs(10),
        )
        .await;
    wait_for_text(chrome, EMAIL).await;
    no_placeholders(chrome, "search").await;
    chrome.screenshot("search").await;

    // Open carol: local, migrated.
    chrome.click("tbody a").await;
    wait_for_text(chrome, "The route of their next login").await;
    assert_eq!(
        chrome.attribute("#route", "data-route").await.as_deref(),
        Some("local")
    );
    assert!(
        chrome
            .text("#reason")
            .await
            .contains("the user is migrated")
    );
    assert!(chrome.text("main").await.contains("Recent logins"));
    no_placeholders(chrome, "user").await;
    chrome.screenshot("user").await;
    chrome
        .eval("document.getElementById('actions').scrollIntoView(); return true")
        .await;
    chrome.screenshot("user-actions").await;

    // Pin to the upstream: the notice, the new route, and the real login.
    chrome.click("button[value=pin_upstream]").await;
    wait_for_text(chrome, "Pinned to the upstream").await;
    assert_eq!(
        chrome.attribute("#route", "data-route").await.as_deref(),
        Some("upstream_password")
    );
    assert!(
        chrome
            .text("#reason")
            .await
            .contains("pinned to the upstream")
    );
    chrome.screenshot("pinned").await;
    assert_eq!(next_login_route(&t).await, "upstream_password");
    let pins = admin_events(&t.app, "user.pin").await;
    assert_eq!(pins.len(), 1);
    let operator = t
        .app
        .state
        .db
        .find_user_by_login("operator@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pins[0].actor, Some(format!("user:{}", operator.id)));
    chrome.click("button[value=unpin]").await;
    wait_for_text(chrome, "Unpinned").await;
    assert_eq!(
        chrome.attribute("#route", "data-route").await.as_deref(),
        Some("local")
    );

    // The phase, previewed, then applied.
    chrome.goto(&t.app.url("/admin/cutover")).await;
    assert_eq!(chrome.title().await, "Cutover · Switchyard admin");
    assert_eq!(
        chrome
            .eval("return document.querySelector('button[value=apply]') === null")
            .await,
        json!(true),
        "no Apply before a preview"
    );
    chrome
        .eval("document.getElementById('phase').value = 'local_first'; return true")
        .await;
    chrome.click("button[value=preview]").await;
    wait_for_text(chrome, "This change moves").await;
    let preview = chrome.text("#preview").await;
    assert!(
        preview.contains("This change moves 0 users to the local track and 0 to the upstream"),
        "{preview}"
    );
    chrome
        .eval("document.getElementById('phase').value = 'passthrough'; return true")
        .await;
    chrome.click("button[value=preview]").await;
    // Carol and the operator, both local now, would go to the upstream.
    wait_for_text(chrome, "and 2 to the upstream").await;
    assert_eq!(
        chrome.value("#phase").await,
        "passthrough",
        "the form keeps the proposal"
    );
    no_placeholders(chrome, "preview").await;
    chrome
        .eval("document.getElementById('preview').scrollIntoView(); return true")
        .await;
    chrome.screenshot("preview").await;
    chrome.click("button[value=apply]").await;
    wait_for_text(chrome, "The new rules are stored").await;
    assert_eq!(chrome.text(".figures dd").await, "passthrough");
    chrome.screenshot("applied").await;
    let stored = switchyard::cutover::load(&*t.app.state.db, &t.app.state.settings.cutover)
        .await
        .unwrap();
    assert_eq!(stored.phase, switchyard::config::Phase::Passthrough);

    // A phone's width.
    chrome.set_window_size(390, 844).await;
    chrome
        .goto(&t.app.url(&format!("/admin/users/{}", sub_path())))
        .await;
    wait_for_text(chrome, "The route of their next login").await;
    chrome.screenshot("user-phone").await;
    chrome.goto(&t.app.url("/admin/cutover")).await;
    chrome.screenshot("cutover-phone").await;
    chrome
        .eval("document.getElementById('change').scrollIntoView(); return true")
        .await;
    chrome.screenshot("cutover-form-phone").await;
}

#[tokio::test]
async fn a_page_form_without_the_sessions_csrf_token_changes_nothing() {
    let t = carol_migrated().await;
    let (name, value) = t.app.admin_session("operator@example.com").await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = format!("{name}={value}");
    for (path, form) in [
        (
            format!("/admin/users/{}/action", sub_path()),
            vec![("csrf", "forged"), ("action", "pin_upstream")],
        ),
        (
            "/admin/cutover".to_string(),
            vec![
                ("csrf", "forged"),
                ("action", "apply"),
                ("phase", "passthrough"),
            ],
        ),
    ] {
        let r = client
            .post(t.app.url(&path))
            .header("cookie", &cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    let user = t.app.state.db.get_user(SUB).await.unwrap().unwrap();
    assert_eq!(user.pin, None);
    let rules = switchyard::cutover::load(&*t.app.state.db, &t.app.state.settings.cutover)
        .await
        .unwrap();
    assert_eq!(rules.phase, switchyard::config::Phase::Lazy);

    // Without a session, a page sends the browser to sign in.
    let r = client
        .get(t.app.url(&format!("/admin/users/{}", sub_path())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(r.headers()).starts_with("/admin/login?return_to="));
}
