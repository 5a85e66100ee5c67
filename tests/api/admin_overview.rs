//! The overview: the migration's figures from a store seeded with known
//! counts, through the API and on the page (in Chromium, at desktop and
//! phone width), the gauges at `/metrics`, and login events carrying their
//! route and result.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::{Value, json};
use switchyard::config::Cohort;
use switchyard::store::now;
use switchyard::store::sql::SqlStore;
use switchyard::store::stats::day_name;
use switchyard_kit::chrome::{self, Chrome};

use crate::admin_helpers::AdminScope;
use crate::helpers::*;

const DAY: i64 = 86_400;

/// A login event to seed: seconds ago, kind, route/result (None: an event
/// from before routes were recorded), user, client.
type Event = (
    i64,
    &'static str,
    Option<(&'static str, &'static str)>,
    Option<&'static str>,
    &'static str,
);

/// Oldest first, so the last event of a user has its highest id, as in
/// real life.
fn events() -> Vec<Event> {
    let mut e: Vec<Event> = vec![
        (40 * DAY, "login", Some(("local", "ok")), Some("l1"), "web"),
        (5 * DAY, "login", None, Some("m3"), "legacy"),
        (
            3 * DAY,
            "login",
            Some(("upstream_redirect", "ok")),
            Some("p1"),
            "web",
        ),
        (
            3 * DAY - 1,
            "login",
            Some(("upstream_redirect", "ok")),
            Some("p2"),
            "app",
        ),
        (
            3 * 3600,
            "login_failed",
            Some(("upstream_password", "locked")),
            None,
            "web",
        ),
        (
            2 * 3600,
            "login",
            Some(("upstream_password", "ok")),
            Some("m1"),
            "web",
        ),
        (
            2 * 3600 - 1,
            "login",
            Some(("upstream_password", "ok")),
            Some("m2"),
            "web",
        ),
        (
            30 * 60,
            "refresh_token_adopted",
            Some(("adopted_refresh", "ok")),
            Some("s1"),
            "app",
        ),
        (
            25 * 60,
            "login_failed",
            Some(("local", "failed")),
            None,
            "web",
        ),
        (20 * 60, "login", Some(("local", "ok")), Some("l1"), "web"),
        (10 * 60, "login", Some(("local", "ok")), Some("m1"), "app"),
        (5 * 60, "login", Some(("local", "ok")), Some("l2"), "web"),
    ];
    e.sort_by_key(|ev| -ev.0);
    e
}

/// A user to seed: id, email, state, blocked, migrated (days ago), last
/// login here (days ago), last login at the upstream (days ago).
type Seed = (
    &'static str,
    &'static str,
    &'static str,
    bool,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

const USERS: &[Seed] = &[
    ("l1", "l1@example.com", "local", false, None, Some(0), None),
    ("l2", "l2@example.com", "local", false, None, Some(0), None),
    (
        "m1",
        "m1@example.org",
        "migrated",
        false,
        Some(0),
        Some(0),
        None,
    ),
    (
        "m2",
        "m2@example.org",
        "migrated",
        false,
        Some(0),
        Some(0),
        None,
    ),
    (
        "m3",
        "m3@example.com",
        "migrated",
        false,
        Some(0),
        None,
        None,
    ),
    (
        "m4",
        "m4@example.com",
        "migrated",
        false,
        Some(1),
        None,
        None,
    ),
    (
        "m5",
        "m5@example.com",
        "migrated",
        false,
        Some(1),
        None,
        None,
    ),
    (
        "m6",
        "m6@example.com",
        "migrated",
        false,
        Some(5),
        None,
        None,
    ),
    (
        "m7",
        "m7@example.com",
        "migrated",
        false,
        Some(5),
        None,
        None,
    ),
    (
        "m8",
        "m8@example.com",
        "migrated",
        false,
        Some(5),
        None,
        None,
    ),
    (
        "m9",
        "m9@example.com",
        "migrated",
        false,
        Some(5),
        None,
        None,
    ),
    (
        "m10",
        "m10@example.com",
        "migrated",
        false,
        Some(100),
        None,
        None,
    ),
    // Pending: two active here, one active at the upstream, one active but
    // blocked (dormant), two dormant.
    (
        "p1",
        "p1@example.org",
        "pending",
        false,
        None,
        Some(1),
        None,
    ),
    (
        "p2",
        "p2@example.com",
        "pending",
        false,
        None,
        Some(1),
        None,
    ),
    (
        "p3",
        "p3@example.com",
        "pending",
        false,
        None,
        None,
        Some(10),
    ),
    ("p4", "p4@example.com", "pending", true, None, Some(1), None),
    (
        "p5",
        "p5@example.com",
        "pending",
        false,
        None,
        Some(60),
        None,
    ),
    ("p6", "p6@example.com", "pending", false, None, None, None),
    // Shadow: one active, two dormant.
    ("s1", "s1@example.com", "shadow", false, None, Some(2), None),
    (
        "s2",
        "s2@example.com",
        "shadow",
        false,
        None,
        Some(45),
        None,
    ),
    (
        "s3",
        "s3@example.com",
        "shadow",
        false,
        None,
        None,
        Some(31),
    ),
];

async fn seed(app: &TestApp, at: i64) {
    let store = SqlStore::connect(&app._isolated.database_url)
        .await
        .unwrap();
    let ago = |d: Option<i64>| d.map(|d| at - d * DAY);
    for (id, email, state, blocked, migrated, here, upstream) in USERS {
        sqlx::query(
            "INSERT INTO users (id, email, email_normalized, state, blocked, migrated_at, last_login_at, \
             upstream_last_login_at, created_at, updated_at) VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(*id)
        .bind(*email)
        .bind(*state)
        .bind(i64::from(*blocked))
        .bind(ago(*migrated))
        .bind(ago(*here))
        .bind(ago(*upstream))
        .bind(at - 200 * DAY)
        .execute(store.pool())
        .await
        .unwrap();
    }
    for (secs, kind, detail, user, client) in events() {
        let detail = match detail {
            Some((route, result)) => json!({ "route": route, "result": result }),
            None => json!({}),
        };
        sqlx::query(
            "INSERT INTO audit_events (at, kind, user_id, client_id, ip, detail) VALUES ($1, $2, $3, $4, '127.0.0.1', $5)",
        )
        .bind(at - secs)
        .bind(kind)
        .bind(user)
        .bind(client)
        .bind(detail.to_string())
        .execute(store.pool())
        .await
        .unwrap();
    }
    // A running import: two chunks of three done, 172 records handled.
    sqlx::query(
        "INSERT INTO jobs (id, kind, state, created_at, updated_at) VALUES ('job-1', 'import', 'running', $1, $1)",
    )
    .bind(at)
    .execute(store.pool())
    .await
    .unwrap();
    for (seq, state, counters) in [
        (0, "done", r#"{"created":100,"updated":20}"#),
        (1, "done", r#"{"created":50,"failed":2}"#),
        (2, "pending", "{}"),
    ] {
        sqlx::query(
            "INSERT INTO job_chunks (job_id, seq, spec, state, counters) VALUES ('job-1', $1, '{}', $2, $3)",
        )
        .bind(seq as i64)
        .bind(state)
        .bind(counters)
        .execute(store.pool())
        .await
        .unwrap();
    }
    // Two writes the upstream has not taken: one due, one failed.
    for state in ["pending", "failed"] {
        sqlx::query(
            "INSERT INTO outbox (kind, payload, next_attempt_at, created_at, user_id, state, updated_at) \
             VALUES ('mark_migrated', '{}', $1, $1, 'm1', $2, $1)",
        )
        .bind(at)
        .bind(state)
        .execute(store.pool())
        .await
        .unwrap();
    }
}

async fn seeded_app() -> (TestApp, i64) {
    let app = spawn_app_with(|s| {
        s.cutover.cohorts = vec![
            Cohort {
                percent: Some(50),
                email_domains: vec![],
            },
            Cohort {
                percent: None,
                email_domains: vec!["@Example.org".into()],
            },
        ];
    })
    .await;
    let at = now();
    seed(&app, at).await;
    (app, at)
}

/// What the seeded events say about logins per day, computed the way the
/// overview is meant to: successful logins (and adoptions) of the last 14
/// UTC days, by the day of their timestamp.
fn expected_daily(at: i64) -> Vec<Value> {
    let today = at / DAY;
    let first = today - 13;
    let mut days: Vec<BTreeMap<String, u64>> = (first..=today)
        .map(|_| {
            [
                "local",
                "upstream_password",
                "upstream_redirect",
                "adopted_refresh",
                "reset_password",
            ]
            .iter()
            .map(|r| (r.to_string(), 0))
            .collect()
        })
        .collect();
    for (secs, kind, detail, _, _) in events() {
        let day = (at - secs) / DAY;
        if kind == "login_failed" || day < first {
            continue;
        }
        let route = detail.map_or("unknown", |d| d.0);
        *days[(day - first) as usize]
            .entry(route.to_string())
            .or_default() += 1;
    }
    (first..=today)
        .zip(days)
        .map(|(d, by_route)| json!({ "day": day_name(d), "by_route": by_route }))
        .collect()
}

fn expected_migrated(at: i64) -> Vec<Value> {
    let today = at / DAY;
    let first = today - 89;
    let mut cumulative = 1; // migrated 100 days ago
    (first..=today)
        .map(|d| {
            let count = match today - d {
                0 => 3,
                1 => 2,
                5 => 4,
                _ => 0,
            };
            cumulative += count;
            json!({ "day": day_name(d), "count": count, "cumulative": cumulative })
        })
        .collect()
}

#[tokio::test]
async fn admin_overview_api_counts_the_seeded_migration_exactly() {
    let (app, at) = seeded_app().await;
    let token = app.admin_token(AdminScope::Read).await;
    let (status, body) = app.admin_get(&token, "/migration").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    assert_eq!(
        body["users"],
        json!({
            "total": 21,
            "by_state": {"local": 2, "pending": 6, "shadow": 3, "migrated": 10},
            "blocked": 1, "moved": 10, "left": 9, "active": 4, "dormant": 5,
        })
    );
    assert_eq!(body["active_days"], 30);
    let progress = body["progress"].as_f64().unwrap();
    assert!((progress - 10.0 / 19.0).abs() < 1e-9, "{progress}");

    // 9 migrated in 7 days: 4 active left take ⌈4 / (9/7)⌉ = 4 days.
    assert_eq!(
        body["projection"],
        json!({
            "migrated_last_7_days": 9, "per_day": 9.0 / 7.0, "remaining_active": 4,
            "days_left": 4, "projected_end": day_name(at / DAY + 4), "done": false,
        })
    );
    assert_eq!(
        body["cohorts"],
        json!([
            {"index": 0, "percent": 50, "email_domains": [], "users": 9, "migrated": 5, "estimated": true},
            {"index": 1, "percent": null, "email_domains": ["example.org"], "users": 3, "migrated": 2, "estimated": false},
        ])
    );
    assert_eq!(
        body["clients"],
        json!([
            {"client_id": "web", "users": 4},
            {"client_id": "app", "users": 3},
            {"client_id": "legacy", "users": 1},
        ])
    );
    assert_eq!(
        body["logins_last_hour"],
        json!([
            {"route": "adopted_refresh", "result": "ok", "count": 1},
            {"route": "local", "result": "failed", "count": 1},
            {"route": "local", "result": "ok", "count": 3},
        ])
    );
    assert_eq!(
        body["logins_last_day"],
        json!([
            {"route": "adopted_refresh", "result": "ok", "count": 1},
            {"route": "local", "result": "failed", "count": 1},
            {"route": "local", "result": "ok", "count": 3},
            {"route": "upstream_password", "result": "locked", "count": 1},
            {"route": "upstream_password", "result": "ok", "count": 2},
        ])
    );
    assert_eq!(body["logins_daily"], json!(expected_daily(at)));
    assert_eq!(body["migrated_daily"], json!(expected_migrated(at)));
    let up = &body["upstream"];
    assert_eq!(
        [
            &up["configured"],
            &up["status"],
            &up["calls"],
            &up["errors"]
        ],
        [&json!(false), &json!("none"), &json!(0), &json!(0)]
    );

    // The same figures for the dashboard's session at the second address,
    // and nothing without an operator.
    let (name, value) = app.admin_session("ops@example.com").await;
    let same: Value = app
        .api
        .get(app.url("/admin/migration-status"))
        .header("cookie", format!("{name}={value}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Read within 15 s of the first: the same reading, although the
    // operator's own user was added since.
    assert_eq!(same["users"], body["users"]);
    assert_eq!(same["at"], body["at"]);
    let anonymous = app
        .api
        .get(app.url("/admin/migration-status"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = app.admin_get("not-a-token", "/migration").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn admin_overview_gauges_show_users_outbox_and_running_jobs() {
    let (app, _) = seeded_app().await;
    switchyard::admin::migration::refresh_gauges(&app.state)
        .await
        .unwrap();
    let metrics = app.metrics().await;
    for line in [
        r#"switchyard_users{state="local"} 2"#,
        r#"switchyard_users{state="pending"} 6"#,
        r#"switchyard_users{state="shadow"} 3"#,
        r#"switchyard_users{state="migrated"} 10"#,
        "switchyard_users_blocked 1",
        r#"switchyard_outbox_rows{state="pending"} 1"#,
        r#"switchyard_outbox_rows{state="failed"} 1"#,
        r#"switchyard_outbox_rows{state="done"} 0"#,
        r#"switchyard_job_progress{job="job-1",kind="import",what="chunks_done"} 2"#,
        r#"switchyard_job_progress{job="job-1",kind="import",what="chunks_total"} 3"#,
        r#"switchyard_job_progress{job="job-1",kind="import",what="records_done"} 172"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing from:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn admin_overview_login_events_carry_route_and_result() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let req = AuthRequest::new("web", None);
    // A wrong password, then the right one.
    let start = app.authorize(&app.browser, &req).await;
    let login_path = location(start.headers());
    let refused = app
        .login(
            &app.browser,
            &login_path,
            "alice@example.com",
            "wrong password",
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    app.code_for(&app.browser, &req, "alice@example.com").await;

    let events = app.state.db.recent_events(10).await.unwrap();
    let detail = |kind: &str| {
        events
            .iter()
            .find(|e| e.kind == kind)
            .map(|e| e.detail.clone())
            .unwrap_or_else(|| panic!("no {kind} event in {events:?}"))
    };
    assert_eq!(detail("login"), json!({"route": "local", "result": "ok"}));
    assert_eq!(
        detail("login_failed"),
        json!({"route": "local", "result": "failed"})
    );
    let token = app.admin_token(AdminScope::Read).await;
    let (_, body) = app.admin_get(&token, "/migration").await;
    assert_eq!(
        body["logins_last_hour"],
        json!([
            {"route": "local", "result": "failed", "count": 1},
            {"route": "local", "result": "ok", "count": 1},
        ])
    );
}

#[tokio::test]
async fn admin_overview_page_shows_the_figures_in_chromium() {
    let test = "admin_overview_page_shows_the_figures_in_chromium";
    let (app, at) = seeded_app().await;

    // Without a session the page sends the browser to sign in.
    let anonymous = app.api.get(app.url("/admin")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);

    let (name, value) = app.admin_session("ops@example.com").await;
    let html = app
        .api
        .get(app.url("/admin"))
        .header("cookie", format!("{name}={value}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        r#"<dd id="fig-moved">10</dd>"#,
        r#"<dd id="fig-left">9</dd>"#,
        r#"<dd id="fig-active">4</dd>"#,
        r#"<dd id="fig-dormant">5</dd>"#,
        &format!(r#"<dd id="fig-end">{}</dd>"#, day_name(at / DAY + 4)),
        r#"<span id="fig-progress">52.6</span>"#,
        r#"role="img""#,
        "Users migrated per day, and progress toward 100 %",
    ] {
        assert!(html.contains(needle), "{needle} not on the page");
    }
    assert!(!html.contains("style="), "CSP blocks style attributes");
    assert!(!html.contains("None") && !html.contains("null"));

    // The live refresh is a script of our own origin (script-src 'self').
    let script = app
        .api
        .get(app.url("/admin/assets/admin.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(html.contains(r#"<script src="/admin/assets/admin.js" defer></script>"#));

    if !chrome::available(test) {
        return;
    }
    let chrome = &Chrome::start(env!("CARGO_TARGET_TMPDIR"), "admin_overview").await;
    // The operator signs in through Switchyard's own login pages.
    app.admin_sign_in(chrome, "ops@example.com").await;
    assert_eq!(chrome.text("#fig-moved").await, "10");
    assert_eq!(chrome.text("#fig-dormant").await, "5");
    // The charts are drawn: their bars have a size, so their colours were
    // not blocked by the page's CSP.
    let drawn = chrome
        .eval("return document.querySelector('svg.chart rect[fill=\"#2563eb\"]').getBoundingClientRect().height > 0")
        .await;
    assert_eq!(drawn, json!(true));
    let console = chrome.console().await;
    assert!(
        !console
            .iter()
            .any(|m| m.contains("Content Security Policy") || m.contains("Refused")),
        "{console:?}"
    );
    chrome.set_window_size(1200, 2600).await;
    chrome.screenshot("desktop").await;
    chrome.set_window_size(390, 2400).await;
    chrome.goto(&app.url("/admin")).await;
    let fits = chrome
        .eval("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        .await;
    chrome.screenshot("phone").await;
    assert_eq!(fits, json!(true), "the page scrolls sideways at 390 px");
}

#[tokio::test]
async fn admin_overview_upstream_health_is_the_share_of_failed_upstream_calls() {
    let up =
        crate::upstream::spawn_with_upstream(switchyard_kit::fake::Flavor::Auth0, |_| {}).await;
    let app = &up.app;
    let token = app.admin_token(AdminScope::Read).await;
    let counted = |what: &str, result: &str, n: usize| {
        for _ in 0..n {
            app.state.metrics.upstream.count(what, result);
        }
    };
    // Calls made at start, if any, are the baseline.
    let (_, before) = app.admin_get(&token, "/migration").await;
    let calls = before["upstream"]["calls"].as_u64().unwrap();
    let errors = before["upstream"]["errors"].as_u64().unwrap();
    // A wrong password is the upstream working; unavailable is not.
    counted("password", "wrong_credentials", 2);
    counted("password", "migrated", 1);
    counted("password", "unavailable", 1);
    let (_, body) = app.admin_get(&token, "/migration").await;
    let upstream = &body["upstream"];
    assert_eq!(upstream["configured"], true);
    assert_eq!(upstream["calls"].as_u64().unwrap(), calls + 4);
    assert_eq!(upstream["errors"].as_u64().unwrap(), errors + 1);
    assert_eq!(upstream["status"], "degraded", "{upstream}");
    counted("code_exchange", "rate_limited", 5);
    let (_, body) = app.admin_get(&token, "/migration").await;
    assert_eq!(body["upstream"]["status"], "down", "{}", body["upstream"]);
}
