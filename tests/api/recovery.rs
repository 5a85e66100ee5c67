//! Account recovery, end to end over HTTP: "Forgot password?" on the login
//! pages, the email read from a real SMTP server (the kit's sink, which
//! speaks the protocol over a socket), the reset link, the new password,
//! and the application's authorization request completing; the same answer
//! for every kind of account; the token's life (expiry, single use,
//! supersession, tampering); throttling, CSRF, session revocation, and the
//! signed-in password change.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use switchyard::config::{Phase, Settings};
use switchyard::store::UserState;
use switchyard_kit::fake::{FakeUser, Flavor};
use switchyard_kit::smtp::SmtpSink;

use crate::helpers::*;
use crate::migration::password_login;
use crate::upstream::{UpstreamApp, spawn_with_upstream};

const NEW_PASSWORD: &str = "a brand new passphrase";
const CAROL_SUB: &str = "auth0|6a1b2c3d4e5f60718293a4b5";

/// What every recovery test sets: mail to the sink, a quick outbox, a
/// short failure floor.
fn mail_to(sink: &SmtpSink) -> impl Fn(&mut Settings) + '_ {
    move |s: &mut Settings| {
        send_to(sink, s);
        s.password.failure_floor_ms = 50;
    }
}

/// Mail to the sink, looked for often.
pub(crate) fn send_to(sink: &SmtpSink, s: &mut Settings) {
    s.email.smtp_url = Some(sink.url());
    s.email.poll_secs = Some(0.1);
    s.email.retry_secs = Some(0.5);
}

async fn app_with_mail() -> (TestApp, SmtpSink) {
    let sink = SmtpSink::start().await;
    let app = spawn_app_with(mail_to(&sink)).await;
    (app, sink)
}

/// The reset link of the `n`-th message (1-based) the sink received, as a
/// path on the app.
pub(crate) async fn link_in_message(app: &TestApp, sink: &SmtpSink, n: usize) -> String {
    let messages = sink.wait_for(n, Duration::from_secs(20)).await.unwrap();
    let link = messages[n - 1].reset_link().expect("a reset link");
    let prefix = format!("{}/", app.issuer.trim_end_matches('/'));
    assert!(link.starts_with(&prefix), "{link} is on the issuer");
    format!("/{}", &link[prefix.len()..])
}

/// From the application's login, through "Forgot password?" on the password
/// page, to the "check your email" page; returns that page's body.
async fn forgot_from_login(app: &TestApp, browser: &reqwest::Client, username: &str) -> String {
    let (action, mut fields) = app.identifier_form(browser, "web").await;
    fields.insert("username".into(), username.into());
    let password_page = browser
        .post(app.url(&action))
        .form(&fields)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let forgot = link_href(&password_page, "Forgot password?");
    let page = browser.get(app.url(&forgot)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let (action, fields) = form_fields(&html);
    assert_eq!(action, "/login/forgot");
    assert_eq!(fields["username"], username, "the login hint is kept");
    let sent = browser
        .post(app.url(&action))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), StatusCode::OK);
    sent.text().await.unwrap()
}

/// The `href` of the link whose text is `text`.
fn link_href(html: &str, text: &str) -> String {
    let doc = scraper::Html::parse_document(html);
    let a = scraper::Selector::parse("a").unwrap();
    doc.select(&a)
        .find(|e| e.text().collect::<String>().trim() == text)
        .unwrap_or_else(|| panic!("a link {text:?} in {html}"))
        .value()
        .attr("href")
        .unwrap()
        .replace("&amp;", "&")
}

/// Opens the link and sets `password` (twice); returns the answer.
pub(crate) async fn reset_with(
    app: &TestApp,
    browser: &reqwest::Client,
    link: &str,
    password: &str,
) -> reqwest::Response {
    let page = browser.get(app.url(link)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK, "the link's page");
    assert_eq!(page.headers()["cache-control"], "no-store");
    let (action, mut fields) = form_fields(&page.text().await.unwrap());
    fields.insert("password".into(), password.into());
    fields.insert("confirm".into(), password.into());
    browser
        .post(app.url(&action))
        .form(&fields)
        .send()
        .await
        .unwrap()
}

/// Signs `email` in with `password` in `browser`, from the application's
/// authorization request; the last answer (the redirect back, or a page).
async fn sign_in(
    app: &TestApp,
    browser: &reqwest::Client,
    email: &str,
    password: &str,
) -> reqwest::Response {
    let start = app.authorize(browser, &AuthRequest::new("web", None)).await;
    app.login(browser, &location(start.headers()), email, password)
        .await
}

/// The ID token's claims after the application exchanges its code.
async fn signed_in_as(app: &TestApp, response: reqwest::Response) -> Value {
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "back to the application: {:?}",
        response.text().await
    );
    let to = location(response.headers());
    assert!(to.starts_with(REDIRECT), "{to}");
    let tokens = app.exchange_ok(&query_of(&to)["code"], None).await;
    jwt_claims(tokens["id_token"].as_str().unwrap())
}

/// The whole flow from the login page, and the new password working after.
async fn recovers(app: &TestApp, sink: &SmtpSink, email: &str, n: usize) -> Value {
    let (browser, link) = asks_for_a_link(app, sink, email, n).await;
    sets_a_new_password(app, &browser, &link, email).await
}

/// From the login page to the link in the email.
async fn asks_for_a_link(
    app: &TestApp,
    sink: &SmtpSink,
    email: &str,
    n: usize,
) -> (reqwest::Client, String) {
    let browser = browser();
    let sent = forgot_from_login(app, &browser, email).await;
    assert!(sent.contains("Check your email"), "{sent}");
    let link = link_in_message(app, sink, n).await;
    (browser, link)
}

/// The link's page, the application's code, and then the new password
/// signing in from a fresh browser; the link is spent.
async fn sets_a_new_password(
    app: &TestApp,
    browser: &reqwest::Client,
    link: &str,
    email: &str,
) -> Value {
    let claims = signed_in_as(app, reset_with(app, browser, link, NEW_PASSWORD).await).await;
    let other = crate::helpers::browser();
    let done = sign_in(app, &other, email, NEW_PASSWORD).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER, "new password works");
    let again = browser.get(app.url(link)).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::BAD_REQUEST, "the link is spent");
    claims
}

fn carol() -> FakeUser {
    FakeUser::new(CAROL_SUB, "carol@example.com", PASSWORD)
}

async fn upstream_with_mail(phase: Phase) -> (UpstreamApp, SmtpSink) {
    let sink = SmtpSink::start().await;
    let t = spawn_with_upstream(Flavor::Auth0, |s| {
        mail_to(&sink)(s);
        s.cutover.phase = phase;
        s.upstream.as_mut().unwrap().connection = Some("Username-Password-Authentication".into());
    })
    .await;
    (t, sink)
}

/// Every request the fake upstream served.
fn upstream_calls(t: &UpstreamApp) -> usize {
    [
        "discovery",
        "jwks",
        "authorize",
        "token",
        "userinfo",
        "revoke",
        "token:password",
        "token:http://auth0.com/oauth/grant-type/password-realm",
    ]
    .iter()
    .map(|w| t.fake.calls(w))
    .sum()
}

/// Imports `email` as a pending user (a backfilled account that never
/// signed in here), as `switchyard import` does.
fn import_pending(iso: &switchyard_kit::isolation::Isolated, id: &str, email: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.ndjson");
    let line = json!({"user_id": id, "email": email, "email_verified": true,
        "identities": [{"provider": "auth0", "user_id": id.trim_start_matches("auth0|"), "connection": "Username-Password-Authentication", "isSocial": false}]});
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let out = run_cli(iso, &["import", path.to_str().unwrap()], None, &[]);
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test]
async fn a_local_user_resets_from_the_password_page_and_the_application_continues() {
    let (app, sink) = app_with_mail().await;
    let alice = app.with_alice_and_web().await;
    let claims = recovers(&app, &sink, "alice@example.com", 1).await;
    assert_eq!(claims["sub"], alice.id.as_str());
    let messages = sink.wait_for(1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(messages[0].rcpt_to, ["alice@example.com"]);
    let events: Vec<String> = app
        .state
        .db
        .recent_events(20)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(events.contains(&"password_reset".to_string()), "{events:?}");
}

#[tokio::test]
async fn a_migrated_user_resets_and_the_old_password_stops_working() {
    let (t, sink) = upstream_with_mail(Phase::Lazy).await;
    t.fake.add_user(carol());
    let first = password_login(&t, "web", "carol@example.com", PASSWORD).await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER, "migrated by login");
    let user = t.app.state.db.get_user(CAROL_SUB).await.unwrap().unwrap();
    assert_eq!(user.state, UserState::Migrated);

    let claims = recovers(&t.app, &sink, "carol@example.com", 1).await;
    assert_eq!(claims["sub"], CAROL_SUB);
    let old = password_login(&t, "web", "carol@example.com", PASSWORD).await;
    assert_eq!(
        old.status(),
        StatusCode::UNAUTHORIZED,
        "old password refused"
    );
}

#[tokio::test]
async fn a_pending_user_in_lazy_becomes_migrated_by_reset_with_no_upstream_call() {
    let (t, sink) = upstream_with_mail(Phase::Lazy).await;
    let id = "auth0|60425da93519d90068f82961";
    import_pending(&t.app._isolated, id, "dora@example.com");
    let (browser, link) = asks_for_a_link(&t.app, &sink, "dora@example.com", 1).await;
    let before = upstream_calls(&t);
    let claims = sets_a_new_password(&t.app, &browser, &link, "dora@example.com").await;
    assert_eq!(claims["sub"], id, "the upstream id is kept");
    assert_eq!(upstream_calls(&t), before, "not one upstream call");
    let user = t.app.state.db.get_user(id).await.unwrap().unwrap();
    assert_eq!(user.state, UserState::Migrated);
    assert_eq!(user.route.as_deref(), Some("reset"));
    let events = t.app.state.db.recent_events(50).await.unwrap();
    let migrated: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "migrated_by_reset")
        .collect();
    assert_eq!(migrated.len(), 1, "{events:?}");
    assert_eq!(migrated[0].user_id.as_deref(), Some(id));
    assert_eq!(migrated[0].detail["from"], "pending");
}

#[tokio::test]
async fn a_shadow_user_resets_and_becomes_migrated() {
    let (t, sink) = upstream_with_mail(Phase::Lazy).await;
    t.shadow(CAROL_SUB, "carol@example.com").await;
    let (browser, link) = asks_for_a_link(&t.app, &sink, "carol@example.com", 1).await;
    let before = upstream_calls(&t);
    sets_a_new_password(&t.app, &browser, &link, "carol@example.com").await;
    assert_eq!(upstream_calls(&t), before, "not one upstream call");
    let user = t.app.state.db.get_user(CAROL_SUB).await.unwrap().unwrap();
    assert_eq!(user.state, UserState::Migrated);
}

#[tokio::test]
async fn in_local_only_a_pending_user_is_offered_the_link_and_signs_in_after() {
    let (t, sink) = upstream_with_mail(Phase::LocalOnly).await;
    let id = "auth0|60425da93519d90068f82962";
    import_pending(&t.app._isolated, id, "erin@example.com");
    let browser = browser();
    let (action, mut fields) = t.app.identifier_form(&browser, "web").await;
    fields.insert("username".into(), "erin@example.com".into());
    fields.insert("password".into(), "whatever she remembers".into());
    let moved = browser
        .post(t.app.url(&action))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), StatusCode::UNAUTHORIZED);
    let html = moved.text().await.unwrap();
    // The answer of a wrong password (nothing tells a moved account
    // apart), whose reset link she follows.
    assert!(
        html.contains("Wrong email, username or password."),
        "{html}"
    );
    let forgot = html
        .split("href=\"")
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .find(|href| href.starts_with("/login/forgot"))
        .expect("a reset link")
        .replace("&amp;", "&");
    let page = browser.get(t.app.url(&forgot)).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(html.contains("Email me a link"), "{html}");
    let (action, fields) = form_fields(&html);
    assert_eq!(action, "/login/forgot");
    assert_eq!(fields["username"], "erin@example.com");
    let sent = browser
        .post(t.app.url(&action))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), StatusCode::OK);
    let link = link_in_message(&t.app, &sink, 1).await;
    let claims = signed_in_as(
        &t.app,
        reset_with(&t.app, &browser, &link, NEW_PASSWORD).await,
    )
    .await;
    assert_eq!(claims["sub"], id);
    assert_eq!(upstream_calls(&t), 0, "local_only calls no upstream");
}

/// The page, status and (within the test below) time of the answer to a
/// Forgot-password request for `username`, from a fresh browser.
pub(crate) async fn forgot_answer(app: &TestApp, username: &str) -> (StatusCode, String, f64) {
    let browser = browser();
    let page = browser.get(app.url("/login/forgot")).send().await.unwrap();
    let (action, mut fields) = form_fields(&page.text().await.unwrap());
    fields.insert("username".into(), username.into());
    let started = std::time::Instant::now();
    let r = browser
        .post(app.url(&action))
        .form(&fields)
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let status = r.status();
    (status, r.text().await.unwrap(), elapsed)
}

#[tokio::test]
async fn unknown_blocked_and_existing_accounts_get_the_same_page_status_and_time() {
    let sink = SmtpSink::start().await;
    let app = spawn_app_with(|s| {
        mail_to(&sink)(s);
        // Above a database write and a queue insert, even on a loaded machine.
        s.password.failure_floor_ms = 300;
        s.throttle.reset_account_requests = 1000;
        s.throttle.reset_ip_requests = 1000;
    })
    .await;
    app.add_user("someone@example.com", PASSWORD).await;
    let blocked = app.add_user("blocked@example.com", PASSWORD).await;
    let out = run_cli(&app._isolated, &["users", "block", &blocked.id], None, &[]);
    assert!(out.status.success(), "{out:?}");
    let cases = [
        "someone@example.com",
        "nobody@example.com",
        "blocked@example.com",
    ];
    // The page names what was typed; apart from it, byte-identical.
    let mut pages = Vec::new();
    for case in cases {
        let (status, html, _) = forgot_answer(&app, case).await;
        assert_eq!(status, StatusCode::OK, "{case}");
        pages.push(html.replace(case, "IDENTIFIER"));
    }
    assert_eq!(pages[0], pages[1]);
    assert_eq!(pages[0], pages[2]);

    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for c in interleaved(cases.len(), 12) {
        samples[c].push(forgot_answer(&app, cases[c]).await.2);
    }
    assert_p50s_within(samples, 1.05);
    // Only the existing, unblocked account was sent anything.
    let messages = sink.wait_for(13, Duration::from_secs(30)).await.unwrap();
    assert!(
        messages
            .iter()
            .all(|m| m.rcpt_to == ["someone@example.com".to_string()]),
        "only someone@example.com is mailed"
    );
}

#[tokio::test]
async fn expired_reused_tampered_and_superseded_links_do_not_work() {
    let (app, sink) = app_with_mail().await;
    app.with_alice_and_web().await;
    let browser = browser();
    for _ in 0..2 {
        let (status, _, _) = forgot_answer(&app, "alice@example.com").await;
        assert_eq!(status, StatusCode::OK);
    }
    let first = link_in_message(&app, &sink, 1).await;
    let second = link_in_message(&app, &sink, 2).await;
    assert_ne!(first, second);
    let dead = |r: reqwest::Response| async move {
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("This link no longer works")
        );
    };
    // Superseded by the newer link.
    dead(browser.get(app.url(&first)).send().await.unwrap()).await;
    // Tampered: one character changed, or cut short.
    let mut tampered = second.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    dead(browser.get(app.url(&tampered)).send().await.unwrap()).await;
    dead(
        browser
            .get(app.url(&second[..second.len() - 2]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    // Used once, then dead.
    let done = reset_with(&app, &browser, &second, NEW_PASSWORD).await;
    assert_eq!(
        done.status(),
        StatusCode::OK,
        "signed in, no pending request"
    );
    dead(browser.get(app.url(&second)).send().await.unwrap()).await;

    // Expired: a link past its lifetime.
    forgot_answer(&app, "alice@example.com").await;
    let third = link_in_message(&app, &sink, 3).await;
    let page = browser.get(app.url(&third)).send().await.unwrap();
    let (action, mut fields) = form_fields(&page.text().await.unwrap());
    expire_tokens(&app).await;
    fields.insert("password".into(), "yet another passphrase".into());
    fields.insert("confirm".into(), "yet another passphrase".into());
    dead(
        browser
            .post(app.url(&action))
            .form(&fields)
            .send()
            .await
            .unwrap(),
    )
    .await;
    dead(browser.get(app.url(&third)).send().await.unwrap()).await;
}

/// Moves every stored token past its expiry, as the clock would.
async fn expire_tokens(app: &TestApp) {
    let store = switchyard::store::sql::SqlStore::connect(&app._isolated.database_url)
        .await
        .unwrap();
    sqlx::query("UPDATE recovery_tokens SET expires_at = created_at - 1")
        .execute(store.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_link_signs_in_its_own_user_only_and_continues_only_its_own_request() {
    let (app, sink) = app_with_mail().await;
    let alice = app.with_alice_and_web().await;
    let bob = app.add_user("bob@example.com", PASSWORD).await;
    // Bob is signed in in this browser, with a login of his own pending.
    let browser = browser();
    let done = sign_in(&app, &browser, "bob@example.com", PASSWORD).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    // Alice asks for a link in another browser, mid-login.
    let alices = crate::helpers::browser();
    forgot_from_login(&app, &alices, "alice@example.com").await;
    let link = link_in_message(&app, &sink, 1).await;
    // Opened in Bob's browser: it resets Alice's password and signs in
    // Alice, but does not continue Alice's pending request (it was started
    // in the other browser), and Bob's session is replaced.
    let r = reset_with(&app, &browser, &link, NEW_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("Your password is set"));
    let start = app
        .authorize(&browser, &AuthRequest::new("web", None))
        .await;
    let to = location(start.headers());
    assert!(to.starts_with(REDIRECT), "silent sign-in: {to}");
    let tokens = app.exchange_ok(&query_of(&to)["code"], None).await;
    let claims = jwt_claims(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["sub"], alice.id.as_str());
    assert_ne!(claims["sub"], bob.id.as_str());
    // Bob's password is untouched.
    let bobs = app
        .state
        .db
        .get_password(&bob.id)
        .await
        .unwrap()
        .map(|c| c.hash);
    assert!(matches!(
        app.state
            .passwords
            .verify(PASSWORD.to_string(), bobs)
            .await
            .unwrap(),
        switchyard::password::Verified::Yes { .. }
    ));
}

#[tokio::test]
async fn forgot_requests_are_throttled_per_account_and_need_the_pages_csrf_token() {
    let sink = SmtpSink::start().await;
    let app = spawn_app_with(|s| {
        mail_to(&sink)(s);
        s.throttle.reset_account_requests = 3;
    })
    .await;
    app.with_alice_and_web().await;
    for _ in 0..3 {
        assert_eq!(
            forgot_answer(&app, "alice@example.com").await.0,
            StatusCode::OK
        );
    }
    let (status, html, _) = forgot_answer(&app, "alice@example.com").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(html.contains("Too many"), "{html}");
    // Throttled whether the account exists or not: an unknown one too.
    for _ in 0..3 {
        forgot_answer(&app, "ghost@example.com").await;
    }
    assert_eq!(
        forgot_answer(&app, "ghost@example.com").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Signing in is not affected by asking for links.
    let browser = browser();
    let done = sign_in(&app, &browser, "alice@example.com", PASSWORD).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);

    // A form posted from elsewhere (no cookie, or a field that does not
    // match it) is refused and sends nothing.
    let stranger = no_redirects();
    let r = stranger
        .post(app.url("/login/forgot"))
        .form(&[
            ("username", "bob@example.com"),
            ("csrf", "x".repeat(43).as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let messages = sink.wait_for(3, Duration::from_secs(20)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(messages.len(), 3, "only the three allowed requests mailed");
    assert_eq!(sink.messages().len(), 3, "and nothing after");
}

#[tokio::test]
async fn a_reset_ends_every_earlier_session_and_refresh_token() {
    let (app, sink) = app_with_mail().await;
    app.with_alice_and_web().await;
    // A refresh token and a browser session from before the reset.
    let tokens = app.tokens_for_alice().await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let old_browser = browser();
    sign_in(&app, &old_browser, "alice@example.com", PASSWORD).await;
    // A second wait: the reset's instant is after these logins'.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    recovers(&app, &sink, "alice@example.com", 1).await;

    assert_oauth_error(
        app.refresh(&refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    let again = app
        .authorize(&old_browser, &AuthRequest::new("web", None))
        .await;
    assert!(
        location(again.headers()).contains("/login?authz="),
        "the old session no longer signs in silently"
    );
}

#[tokio::test]
async fn the_reset_page_enforces_the_policy_and_both_fields() {
    let (app, sink) = app_with_mail().await;
    app.with_alice_and_web().await;
    forgot_answer(&app, "alice@example.com").await;
    let link = link_in_message(&app, &sink, 1).await;
    let browser = browser();
    let page = browser.get(app.url(&link)).send().await.unwrap();
    let (action, fields) = form_fields(&page.text().await.unwrap());
    for (password, confirm, says) in [
        ("short", "short", "at least"),
        ("password123", "password123", "common"),
        ("alice@example.com", "alice@example.com", "email"),
        (NEW_PASSWORD, "something else entirely", "not the same"),
    ] {
        let mut f = fields.clone();
        f.insert("password".into(), password.into());
        f.insert("confirm".into(), confirm.into());
        let r = browser
            .post(app.url(&action))
            .form(&f)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{password}");
        let html = r.text().await.unwrap().to_lowercase();
        assert!(html.contains(says), "{password}: {html}");
    }
    // Still usable after the refusals.
    let r = reset_with(&app, &browser, &link, NEW_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_signed_in_user_changes_their_password_with_the_current_one() {
    let app = spawn_app_with(|s| s.password.failure_floor_ms = 50).await;
    app.with_alice_and_web().await;
    let anonymous = browser();
    let r = anonymous
        .get(app.url("/account/password"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let browser = browser();
    sign_in(&app, &browser, "alice@example.com", PASSWORD).await;
    let page = browser
        .get(app.url("/account/password"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let (action, fields) = form_fields(&page.text().await.unwrap());
    assert_eq!(action, "/account/password");
    let mut wrong = fields.clone();
    wrong.insert("current".into(), "not my password".into());
    wrong.insert("password".into(), NEW_PASSWORD.into());
    wrong.insert("confirm".into(), NEW_PASSWORD.into());
    let r = browser
        .post(app.url(&action))
        .form(&wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("current password is not right")
    );
    // Without the page's CSRF field: refused.
    let mut forged = wrong.clone();
    forged.insert("current".into(), PASSWORD.into());
    forged.remove("csrf");
    let r = browser
        .post(app.url(&action))
        .form(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let mut right = wrong.clone();
    right.insert("current".into(), PASSWORD.into());
    let r = browser
        .post(app.url(&action))
        .form(&right)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("Your password is changed"));
    let other = crate::helpers::browser();
    let old = sign_in(&app, &other, "alice@example.com", PASSWORD).await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    let new = sign_in(&app, &other, "alice@example.com", NEW_PASSWORD).await;
    assert_eq!(new.status(), StatusCode::SEE_OTHER);
}

/// A legacy application's users (the password grant) reset on the same
/// page, with the same email, and the grant takes the new password.
#[tokio::test]
async fn a_password_grant_user_resets_on_the_same_page_and_the_grant_takes_the_new_password() {
    let (t, sink) = upstream_with_mail(Phase::LocalOnly).await;
    let id = "auth0|60425da93519d90068f82963";
    import_pending(&t.app._isolated, id, "fay@example.com");
    let mut legacy = t.app.add_client("legacy", false).await;
    legacy
        .grant_types
        .push(switchyard::store::GrantType::Password);
    t.app.state.db.upsert_client(&legacy).await.unwrap();
    let grant = |password: &'static str| {
        let app = &t.app;
        async move {
            app.token(
                &[
                    ("grant_type", "password"),
                    ("username", "fay@example.com"),
                    ("password", password),
                    ("scope", "openid"),
                ],
                Some(("legacy", SECRET)),
            )
            .await
        }
    };
    assert_oauth_error(
        grant(PASSWORD).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;

    let (status, _, _) = forgot_answer(&t.app, "fay@example.com").await;
    assert_eq!(status, StatusCode::OK);
    let link = link_in_message(&t.app, &sink, 1).await;
    let done = reset_with(&t.app, &browser(), &link, NEW_PASSWORD).await;
    assert_eq!(done.status(), StatusCode::OK);
    assert!(done.text().await.unwrap().contains("Your password is set"));

    let r = grant(NEW_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(jwt_claims(body["id_token"].as_str().unwrap())["sub"], id);
    assert_eq!(upstream_calls(&t), 0, "local_only calls no upstream");
}
