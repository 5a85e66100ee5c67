//! Jobs and the outbox through the admin API and the dashboard: a
//! backfill and a verify queued through the API and run by `serve`'s job
//! runner against the fake upstream, a running job cancelled, an import
//! uploaded (and one over the limit refused), failed writes retried and
//! discarded, a read-only token refused every change, and the same from
//! Chromium.
//!
//! The runner and the outbox worker are polled for with a deadline, never
//! timed.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard::store::outbox::OutboxState;
use switchyard_kit::chrome::{self, Chrome};
use switchyard_kit::fake::{ExportTiming, FakeUser, Flavor};

use crate::admin_helpers::AdminScope;
use crate::helpers::*;
use crate::upstream::UpstreamApp;

const DEADLINE: Duration = Duration::from_secs(90);

fn auth0_sub(i: usize) -> String {
    format!("auth0|{i:024x}")
}

fn keycloak_sub(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// Switchyard in front of `flavor`'s Management API (the outbox tests'
/// app), with `n` users at the upstream and the export polled quickly.
async fn upstream_with_users(
    flavor: Flavor,
    n: usize,
    mark: bool,
    configure: impl FnOnce(&mut switchyard::config::Settings),
) -> UpstreamApp {
    let t = crate::outbox::spawn(flavor, mark, |s| {
        s.upstream.as_mut().unwrap().management.export_poll_secs = Some(0.05);
        configure(s);
    })
    .await;
    t.fake.set_export_timing(ExportTiming::default());
    for i in 0..n {
        let sub = match flavor {
            Flavor::Keycloak => keycloak_sub(i),
            _ => auth0_sub(i),
        };
        t.fake.add_user(FakeUser::new(
            &sub,
            &format!("user{i}@example.com"),
            PASSWORD,
        ));
    }
    t
}

/// Polls `GET /jobs/{id}` until `done` holds; returns the job.
async fn until_job(
    app: &TestApp,
    token: &str,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let start = std::time::Instant::now();
    loop {
        let (status, job) = app.admin_get(token, &format!("/jobs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        if done(&job) {
            return job;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "waiting for {what}; the job is {job:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_job(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, job) = app
        .admin_send(token, Method::POST, "/jobs", Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    job
}

async fn audit_kinds(app: &TestApp) -> Vec<(String, Value)> {
    app.state
        .db
        .recent_events(200)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.starts_with("admin."))
        .map(|e| (e.kind, e.detail))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_queued_through_the_api_runs_in_serve_and_verifies_clean() {
    let t = upstream_with_users(Flavor::Keycloak, 240, false, |_| {}).await;
    let token = t.app.admin_token(AdminScope::Write).await;

    let queued = start_job(&t.app, &token, json!({"kind": "backfill"})).await;
    assert_eq!(queued["kind"], "backfill");
    assert!(
        ["queued", "running"].contains(&queued["state"].as_str().unwrap()),
        "{queued}"
    );
    let id = queued["id"].as_str().unwrap().to_string();

    let job = until_job(&t.app, &token, &id, "the backfill to finish", |j| {
        j["state"] != "queued" && j["state"] != "running"
    })
    .await;
    assert_eq!(job["state"], "done", "{job:#}");
    assert_eq!(job["counters"]["created"], 240, "{job:#}");
    assert_eq!(job["progress"]["done"], 240);
    assert_eq!(job["progress"]["total"], 240, "Keycloak counts its users");
    assert_eq!(job["progress"]["percent"], 100.0);
    assert!(job["started_at"].is_i64() && job["finished_at"].is_i64());
    assert_eq!(job["chunks_done"], job["chunks_total"]);
    let counts = t
        .app
        .state
        .db
        .user_counts(switchyard::store::now())
        .await
        .unwrap();
    assert_eq!(counts.by_state.get("pending"), Some(&240), "{counts:?}");

    // The list shows it with its progress.
    let (status, list) = t.app.admin_get(&token, "/jobs").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["jobs"][0]["id"], json!(id), "{list:#}");

    // Verify runs as a job too, its report kept with it.
    let verify = start_job(&t.app, &token, json!({"kind": "verify"})).await;
    let verify_id = verify["id"].as_str().unwrap().to_string();
    let verify = until_job(&t.app, &token, &verify_id, "the verify to finish", |j| {
        j["state"] == "done" || j["state"] == "failed"
    })
    .await;
    assert_eq!(verify["state"], "done", "{verify:#}");
    assert_eq!(verify["result"]["clean"], true, "{verify:#}");
    assert_eq!(verify["result"]["upstream_users"], 240);
    assert_eq!(verify["progress"]["done"], 240);

    // A second backfill while none runs is fine; two at once are not.
    let events = audit_kinds(&t.app).await;
    let starts = events
        .iter()
        .filter(|(k, _)| k == "admin.job.start")
        .count();
    assert_eq!(starts, 2, "{events:?}");
    assert!(
        events
            .iter()
            .any(|(_, d)| d["target"] == json!(id) && d["after"]["kind"] == "backfill"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_backfill_is_cancelled_and_stops() {
    let t = upstream_with_users(Flavor::Keycloak, 1000, false, |_| {}).await;
    let token = t.app.admin_token(AdminScope::Write).await;

    // Two requests a second: ten pages take several seconds.
    let job = start_job(&t.app, &token, json!({"kind": "backfill", "max_rate": 2.0})).await;
    let id = job["id"].as_str().unwrap().to_string();
    let (status, again) = t
        .app
        .admin_send(
            &token,
            Method::POST,
            "/jobs",
            Some(json!({"kind": "backfill"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "one backfill at a time: {again}"
    );
    assert_eq!(again["job"], json!(id));

    until_job(&t.app, &token, &id, "the first pages", |j| {
        j["state"] == "running" && j["progress"]["done"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let (status, cancelled) = t
        .app
        .admin_send(&token, Method::POST, &format!("/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");

    // The workers stop at their next page: the count settles below the total.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, settled) = t.app.admin_get(&token, &format!("/jobs/{id}")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, later) = t.app.admin_get(&token, &format!("/jobs/{id}")).await;
    assert_eq!(later["state"], "cancelled", "{later:#}");
    assert_eq!(
        settled["progress"]["done"], later["progress"]["done"],
        "nothing is written after the cancel settles"
    );
    assert!(
        later["progress"]["done"].as_u64().unwrap() < 1000,
        "{later:#}"
    );

    let (status, twice) = t
        .app
        .admin_send(&token, Method::POST, &format!("/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{twice}");
    let (status, _) = t
        .app
        .admin_send(&token, Method::POST, "/jobs/nope/cancel", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let events = audit_kinds(&t.app).await;
    let cancel = events
        .iter()
        .find(|(k, _)| k == "admin.job.cancel")
        .expect("the cancel is audited");
    assert_eq!(cancel.1["before"]["state"], "running");
    assert_eq!(cancel.1["after"]["state"], "cancelled");
}

fn export_lines(n: usize) -> String {
    (0..n)
        .map(|i| {
            json!({"user_id": auth0_sub(i), "email": format!("imported{i}@example.com"), "email_verified": true})
                .to_string()
                + "\n"
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_file_is_imported_and_one_over_the_limit_is_refused() {
    let uploads = tempfile::tempdir().unwrap();
    let dir = uploads.path().to_path_buf();
    let app = spawn_app_with(|s| {
        s.admin.max_upload_bytes = 64 * 1024;
        s.admin.upload_dir = dir.clone();
    })
    .await;
    let token = app.admin_token(AdminScope::Write).await;
    let url = |q: &str| app.url(&format!("{}/jobs/import{q}", switchyard::admin::API));

    // A raw body, its format detected from the name it is given.
    let response = app
        .api
        .post(url("?name=users.ndjson"))
        .bearer_auth(&token)
        .body(export_lines(120))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let job: Value = response.json().await.unwrap();
    assert_eq!(job["kind"], "import");
    assert_eq!(job["params"]["format"], "auth0-export", "{job}");
    assert_eq!(job["params"]["file_name"], "users.ndjson");
    assert!(
        job["params"].get("path").is_none(),
        "the server's path is not shown"
    );
    let id = job["id"].as_str().unwrap().to_string();
    let done = until_job(&app, &token, &id, "the import", |j| {
        j["state"] == "done" || j["state"] == "failed"
    })
    .await;
    assert_eq!(done["state"], "done", "{done:#}");
    assert_eq!(done["counters"]["created"], 120);
    assert!(
        app.state
            .db
            .find_user_by_login("imported7@example.com")
            .await
            .unwrap()
            .is_some()
    );

    // A multipart form, as the dashboard's upload sends it.
    let boundary = "----switchyard-test-boundary";
    let file = export_lines(3).replace("imported", "form");
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"format\"\r\n\r\nauth0-export\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"more.json\"\r\n\
         Content-Type: application/json\r\n\r\n{file}\r\n--{boundary}--\r\n"
    );
    let response = app
        .api
        .post(url(""))
        .bearer_auth(&token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let job: Value = response.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    let done = until_job(&app, &token, &id, "the second import", |j| {
        j["state"] == "done" || j["state"] == "failed"
    })
    .await;
    assert_eq!(
        done["counters"]["updated"], 3,
        "the same users, new emails: {done:#}"
    );

    // Over the limit: 413, as a problem, and nothing left on the disk.
    let big = export_lines(2000);
    assert!(big.len() > 64 * 1024);
    let response = app
        .api
        .post(url("?name=big.ndjson"))
        .bearer_auth(&token)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:switchyard:problem:too-large");
    assert_eq!(problem["max_upload_bytes"], 64 * 1024);
    // Streamed without a declared length, it is cut off at the limit.
    let status = chunked_post(
        &app,
        &format!("{}/jobs/import?name=big.ndjson", switchyard::admin::API),
        &token,
        big.as_bytes(),
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    let files = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert!(
        !files(&dir).iter().any(|f| f.ends_with("big.ndjson")),
        "a refused upload leaves no file: {:?}",
        files(&dir)
    );
    // An imported upload is removed once its import is done.
    let start = std::time::Instant::now();
    while !files(&dir).is_empty() {
        assert!(
            start.elapsed() < DEADLINE,
            "imported uploads are removed: {:?}",
            files(&dir)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A file of no known format is refused, not queued.
    let response = app
        .api
        .post(url("?name=notes.txt"))
        .bearer_auth(&token)
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

/// POSTs `body` in chunks of 8 KiB (`Transfer-Encoding: chunked`, no
/// declared length); the response's status line.
async fn chunked_post(app: &TestApp, path: &str, token: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(8192) {
        let sent = async {
            stream
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            stream.write_all(chunk).await?;
            stream.write_all(b"\r\n").await
        };
        // The server may answer and close before the whole body is sent.
        if sent.await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Migrates `n` users lazily, each of whose marks the upstream refuses
/// until the attempts are spent: `n` failed rows.
async fn failed_marks(t: &UpstreamApp, n: usize) -> Vec<i64> {
    t.fake.fail_next("patch_user", 1_000_000);
    for i in 0..n {
        let r =
            crate::migration::password_login(t, "web", &format!("user{i}@example.com"), PASSWORD)
                .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "the login succeeds");
    }
    let start = std::time::Instant::now();
    loop {
        let rows = t.app.state.db.list_outbox(None, 100).await.unwrap();
        if rows.len() == n && rows.iter().all(|r| r.state == OutboxState::Failed) {
            return rows.iter().map(|r| r.id).collect();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "waiting for the rows to fail: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_are_listed_with_the_vendors_message_retried_and_discarded() {
    let t = upstream_with_users(Flavor::Auth0, 3, true, |s| {
        s.upstream.as_mut().unwrap().management.outbox_max_attempts = Some(1);
    })
    .await;
    let token = t.app.admin_token(AdminScope::Write).await;
    let ids = failed_marks(&t, 3).await;

    let (status, page) = t
        .app
        .admin_get(&token, "/outbox?state=failed&limit=2")
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["counts"]["failed"], 3);
    let rows = page["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "a page of two");
    let error = rows[0]["last_error"].as_str().unwrap();
    assert!(error.contains("503"), "the vendor's answer: {error}");
    assert!(!error.contains("eyJ") && !error.to_lowercase().contains("bearer"));
    let next = page["next_before"].as_i64().expect("a second page");
    let (_, second) = t
        .app
        .admin_get(
            &token,
            &format!("/outbox?state=failed&limit=2&before={next}"),
        )
        .await;
    assert_eq!(second["rows"].as_array().unwrap().len(), 1);
    assert_eq!(second["next_before"], Value::Null);
    let (status, _) = t.app.admin_get(&token, "/outbox?state=sideways").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The upstream takes writes again: one row retried reaches it.
    t.fake.fail_next("patch_user", 0);
    let (status, retried) = t
        .app
        .admin_send(
            &token,
            Method::POST,
            &format!("/outbox/{}/retry", ids[0]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["state"], "pending");
    assert_eq!(retried["attempts"], 0);
    let start = std::time::Instant::now();
    while t
        .app
        .state
        .db
        .get_outbox(ids[0])
        .await
        .unwrap()
        .unwrap()
        .state
        != OutboxState::Done
    {
        assert!(start.elapsed() < DEADLINE, "waiting for the retried write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, done) = t
        .app
        .admin_send(
            &token,
            Method::POST,
            &format!("/outbox/{}/retry", ids[0]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "a done row: {done}");

    // One discarded; the last by retry-failed.
    let (status, discarded) = t
        .app
        .admin_send(
            &token,
            Method::POST,
            &format!("/outbox/{}/discard", ids[1]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{discarded}");
    assert!(t.app.state.db.get_outbox(ids[1]).await.unwrap().is_none());
    let (status, _) = t
        .app
        .admin_send(
            &token,
            Method::POST,
            &format!("/outbox/{}/discard", ids[1]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, all) = t
        .app
        .admin_send(&token, Method::POST, "/outbox/retry-failed", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["retried"], 1);
    let start = std::time::Instant::now();
    while t
        .app
        .state
        .db
        .get_outbox(ids[2])
        .await
        .unwrap()
        .unwrap()
        .state
        != OutboxState::Done
    {
        assert!(start.elapsed() < DEADLINE, "waiting for the last write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let events = audit_kinds(&t.app).await;
    for kind in [
        "admin.outbox.retry",
        "admin.outbox.discard",
        "admin.outbox.retry_failed",
    ] {
        assert!(events.iter().any(|(k, _)| k == kind), "{kind}: {events:?}");
    }
    let discard = events
        .iter()
        .find(|(k, _)| k == "admin.outbox.discard")
        .unwrap();
    assert_eq!(discard.1["before"]["state"], "failed");
    assert_eq!(discard.1["after"], Value::Null);
}

#[tokio::test]
async fn a_read_only_token_reads_jobs_and_the_outbox_and_changes_nothing() {
    let app = spawn_app().await;
    let read = app.admin_token(AdminScope::Read).await;
    let (status, _) = app.admin_get(&read, "/jobs").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.admin_get(&read, "/outbox?state=failed").await;
    assert_eq!(status, StatusCode::OK);
    for (path, body) in [
        ("/jobs", Some(json!({"kind": "campaign"}))),
        ("/jobs/any/cancel", None),
        ("/outbox/1/retry", None),
        ("/outbox/1/discard", None),
        ("/outbox/retry-failed", None),
    ] {
        let (status, problem) = app.admin_send(&read, Method::POST, path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {problem}");
        assert_eq!(problem["type"], "urn:switchyard:problem:forbidden");
    }
    let response = app
        .api
        .post(app.url(&format!(
            "{}/jobs/import?name=u.ndjson",
            switchyard::admin::API
        )))
        .bearer_auth(&read)
        .body(export_lines(1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(app.state.db.list_jobs(10).await.unwrap().is_empty());
    assert!(audit_kinds(&app).await.is_empty());

    // No token at all.
    let response = app
        .api
        .get(app.url(&format!("{}/jobs", switchyard::admin::API)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Typed parameters: an unknown kind or member is a 400 saying why.
    let write = app.admin_token(AdminScope::Write).await;
    for body in [
        json!({"kind": "reindex"}),
        json!({"kind": "campaign", "speed": 3}),
        json!({"kind": "campaign", "rate": -1}),
        json!({"kind": "campaign", "cooldown": "soon"}),
        json!({"kind": "import"}),
    ] {
        let (status, problem) = app
            .admin_send(&write, Method::POST, "/jobs", Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
    }
    let (status, _) = app
        .admin_send(
            &write,
            Method::POST,
            "/jobs",
            Some(json!({"kind": "backfill"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "no upstream to backfill from");
}

/// Waits until the page's text holds `text`; the page refreshes itself
/// while a job runs.
async fn until_page_says(chrome: &Chrome, text: &str) {
    chrome
        .wait_for(
            text,
            &format!(
                "return document.body && document.body.innerText.includes({})",
                json!(text)
            ),
            DEADLINE,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_a_backfill_and_retries_a_failed_write_in_chromium() {
    if !chrome::available("an_operator_runs_a_backfill_and_retries_a_failed_write_in_chromium") {
        return;
    }
    let t = upstream_with_users(Flavor::Auth0, 150, true, |s| {
        s.upstream.as_mut().unwrap().management.outbox_max_attempts = Some(1);
    })
    .await;
    let chrome = &Chrome::start(env!("CARGO_TARGET_TMPDIR"), "admin_jobs").await;
    // The operator signs in through Switchyard's own login pages.
    t.app.admin_sign_in(chrome, "ops@example.com").await;

    chrome.goto(&t.app.url("/admin/jobs")).await;
    assert_eq!(chrome.title().await, "Jobs · Switchyard admin");
    assert_eq!(chrome.text("main h1").await, "Jobs");
    assert_eq!(
        chrome.value("#kind").await,
        "backfill",
        "with an upstream, a backfill is what the form starts"
    );
    chrome.screenshot("jobs-empty").await;
    chrome
        .click("form[action='/admin/jobs'] button[type=submit]")
        .await;
    chrome
        .wait_for_url(&t.app.url("/admin/jobs?notice=started"))
        .await;
    until_page_says(chrome, "Job queued").await;
    // The page refreshes itself until the job is done.
    chrome
        .wait_for(
            "the backfill to be done",
            "return [...document.querySelectorAll('.state')].some(e => e.textContent.trim() === 'done')",
            DEADLINE,
        )
        .await;
    let body = chrome.text("main").await;
    assert!(body.contains("150 of 150 (100 %)"), "{body}");
    assert!(!body.contains("None") && !body.contains("null"), "{body}");
    chrome.screenshot("jobs-done").await;

    chrome.click("main article a").await;
    until_page_says(chrome, "Counters").await;
    let body = chrome.text("main").await;
    assert!(
        body.contains("Created\t150") || body.contains("Created 150"),
        "{body}"
    );
    chrome.screenshot("job").await;

    // A write the upstream refuses, then retried from the outbox page.
    let ids = failed_marks(&t, 1).await;
    t.fake.fail_next("patch_user", 0);
    chrome.goto(&t.app.url("/admin/outbox")).await;
    let body = chrome.text("main").await;
    assert!(body.contains("Mark migrated"), "{body}");
    assert!(body.contains("503"), "the vendor's message: {body}");
    chrome.screenshot("outbox-failed").await;
    chrome.set_window_size(390, 844).await;
    chrome.screenshot("outbox-phone").await;
    chrome
        .eval("document.getElementById('rows').scrollIntoView(); return true")
        .await;
    chrome.screenshot("outbox-phone-rows").await;
    chrome.goto(&t.app.url("/admin/jobs")).await;
    chrome.screenshot("jobs-phone").await;
    chrome.set_window_size(1200, 900).await;
    chrome.goto(&t.app.url("/admin/outbox")).await;
    chrome
        .click(&format!(
            "form[action='/admin/outbox/{}/retry'] button",
            ids[0]
        ))
        .await;
    chrome
        .wait_for_url(&t.app.url("/admin/outbox?notice=retried"))
        .await;
    until_page_says(chrome, "Write queued again").await;
    let start = std::time::Instant::now();
    while t
        .app
        .state
        .db
        .get_outbox(ids[0])
        .await
        .unwrap()
        .unwrap()
        .state
        != OutboxState::Done
    {
        assert!(start.elapsed() < DEADLINE, "waiting for the retried write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    chrome.refresh().await;
    until_page_says(chrome, "No failed writes").await;
    chrome.screenshot("outbox-retried").await;

    // An import uploaded through the page's multipart form.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("people.ndjson");
    std::fs::write(&file, export_lines(5).replace("imported", "uploaded")).unwrap();
    chrome.goto(&t.app.url("/admin/jobs")).await;
    chrome.type_into("#file", file.to_str().unwrap()).await;
    chrome
        .click("form[action='/admin/jobs/import'] button[type=submit]")
        .await;
    chrome
        .wait_for_url(&t.app.url("/admin/jobs?notice=uploaded"))
        .await;
    until_page_says(chrome, "File uploaded").await;
    chrome
        .wait_for(
            "the import to be done",
            "return [...document.querySelectorAll('article')].some(a => a.innerText.startsWith('Import') && a.innerText.includes('done'))",
            DEADLINE,
        )
        .await;
    chrome.screenshot("jobs-imported").await;

    // A slow backfill (half a request a second), cancelled from its card.
    chrome.type_into("#max_rate", "0.5").await;
    chrome
        .click("form[action='/admin/jobs'] button[type=submit]")
        .await;
    chrome
        .wait_for_url(&t.app.url("/admin/jobs?notice=started"))
        .await;
    let body = chrome.text("main").await;
    assert!(body.contains("refreshes every few seconds"), "{body}");
    chrome.screenshot("jobs-running").await;
    chrome.click("article form[action$='/cancel'] button").await;
    until_page_says(chrome, "Job cancelled").await;
    let body = chrome.text("main").await;
    assert!(body.contains("cancelled"), "{body}");
    assert!(!body.contains("None") && !body.contains("null"), "{body}");
    chrome.screenshot("job-cancelled").await;
    assert!(
        t.app
            .state
            .db
            .find_user_by_login("uploaded4@example.com")
            .await
            .unwrap()
            .is_some()
    );
}

/// Queues a backfill of `n` Keycloak users on an instance that runs no
/// jobs, then plays an instance that started it and died: the job is
/// running, its first chunk claimed by a worker last heard of two minutes
/// ago. The job's id.
async fn cut_short(t: &UpstreamApp, token: &str) -> String {
    let id = queue_idle(t, token).await;
    cut(t, &id).await;
    id
}

/// Queues a backfill on the instance that runs no jobs; it stays queued.
async fn queue_idle(t: &UpstreamApp, token: &str) -> String {
    let job = start_job(&t.app, token, json!({"kind": "backfill"})).await;
    let id = job["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, still) = t.app.admin_get(token, &format!("/jobs/{id}")).await;
    assert_eq!(still["state"], "queued", "run_jobs = false runs nothing");
    id
}

/// Plays the instance that started `id` and died.
async fn cut(t: &UpstreamApp, id: &str) {
    let id = id.to_string();
    let db = &t.app.state.db;
    let first = [switchyard::store::position::ChunkPosition::FirstMaxCount];
    assert!(db.start_queued_job(&id, &first).await.unwrap());
    assert!(
        !db.start_queued_job(&id, &first).await.unwrap(),
        "one instance wins the start"
    );
    let now = switchyard::store::now();
    db.claim_chunk(&id, "gone-host:1/0", now - 30, &[])
        .await
        .unwrap()
        .expect("the dead instance's claim");
    let pool = sqlx::AnyPool::connect(&t.app._isolated.database_url)
        .await
        .unwrap();
    sqlx::query("UPDATE job_chunks SET heartbeat = $1 WHERE job_id = $2")
        .bind(now - 120)
        .bind(&id)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE jobs SET updated_at = $1 WHERE id = $2")
        .bind(now - 120)
        .bind(&id)
        .execute(&pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_instance_died_is_continued_by_another_instance() {
    let t = upstream_with_users(Flavor::Keycloak, 130, false, |s| s.admin.run_jobs = false).await;
    let token = t.app.admin_token(AdminScope::Write).await;
    let id = cut_short(&t, &token).await;

    let upstream = t.app.state.settings.upstream.clone();
    let _other = spawn_app_on(t.app._isolated.same_database(), move |s| {
        s.upstream = upstream;
        s.admin.run_jobs = true;
    })
    .await;
    let job = until_job(
        &t.app,
        &token,
        &id,
        "the other instance to finish it",
        |j| j["state"] == "done" || j["state"] == "failed",
    )
    .await;
    assert_eq!(job["state"], "done", "{job:#}");
    assert_eq!(job["counters"]["created"], 130, "{job:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_started_through_the_api_is_continued_by_the_cli_resume() {
    let t = upstream_with_users(Flavor::Keycloak, 130, false, |s| s.admin.run_jobs = false).await;
    let token = t.app.admin_token(AdminScope::Write).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(&config, toml::to_string(&t.app.state.settings).unwrap()).unwrap();
    let cli = t.app._isolated.same_database();

    // While it waits for `serve`, the command line does not start a second.
    let id = queue_idle(&t, &token).await;
    let out = run_cli(
        &cli,
        &["--config", config.to_str().unwrap(), "backfill"],
        None,
        &[("SWITCHYARD_LOG", "warn")],
    );
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&id) && said.contains("queued"), "{said}");

    cut(&t, &id).await;
    let out = run_cli(
        &cli,
        &[
            "--config",
            config.to_str().unwrap(),
            "backfill",
            "--resume",
            "--json",
        ],
        None,
        &[("SWITCHYARD_LOG", "warn")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["report"]["job"], json!(id), "{report}");
    assert_eq!(report["report"]["created"], 130, "{report}");
    let (_, job) = t.app.admin_get(&token, &format!("/jobs/{id}")).await;
    assert_eq!(job["state"], "done", "{job:#}");
}
