//! The login pages: enumeration, throttling, CSRF, browser binding and
//! session fixation.

use reqwest::StatusCode;

use crate::helpers::*;

async fn password_page(
    app: &TestApp,
    browser: &reqwest::Client,
    username: &str,
) -> (String, std::collections::HashMap<String, String>) {
    let start = app.authorize(browser, &AuthRequest::new("web", None)).await;
    let page = browser
        .get(app.url(&location(start.headers())))
        .send()
        .await
        .unwrap();
    let (action, mut fields) = form_fields(&page.text().await.unwrap());
    fields.insert("username".into(), username.into());
    let page = browser
        .post(app.url(&action))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    form_fields(&page.text().await.unwrap())
}

async fn attempt(
    app: &TestApp,
    browser: &reqwest::Client,
    username: &str,
    password: &str,
) -> (StatusCode, String) {
    let (action, mut fields) = password_page(app, browser, username).await;
    fields.insert("password".into(), password.into());
    let response = browser
        .post(app.url(&action))
        .form(&fields)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn unknown_user_and_wrong_password_get_the_same_answer() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let (s1, b1) = attempt(&app, &browser(), "alice@example.com", "wrong password").await;
    let (s2, b2) = attempt(&app, &browser(), "nobody@example.com", "wrong password").await;
    assert_eq!(s1, StatusCode::UNAUTHORIZED);
    assert_eq!(s1, s2);
    let message = "Wrong email, username or password.";
    assert!(b1.contains(message) && b2.contains(message));
    // The pages differ only in the echoed identifier and the per-request tokens.
    let strip = |b: &str, who: &str| {
        let doc = b.replace(who, "WHO");
        doc.lines()
            .filter(|l| {
                !l.contains("name=\"authz\"")
                    && !l.contains("name=\"csrf\"")
                    && !l.contains("authz=")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        strip(&b1, "alice@example.com"),
        strip(&b2, "nobody@example.com")
    );
}

#[tokio::test]
async fn the_identifier_step_does_not_reveal_whether_a_user_exists() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let (_, known) = password_page(&app, &browser(), "alice@example.com").await;
    let (_, unknown) = password_page(&app, &browser(), "nobody@example.com").await;
    assert_eq!(
        known.keys().collect::<std::collections::BTreeSet<_>>(),
        unknown.keys().collect()
    );
}

#[tokio::test]
async fn an_account_is_throttled_after_repeated_failures_with_a_clear_page() {
    let app = spawn_app_with(|s| s.throttle.account_failures = 3).await;
    app.with_alice_and_web().await;
    for _ in 0..3 {
        let (status, _) = attempt(&app, &browser(), "alice@example.com", "wrong password").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // Even the right password is refused while the window lasts.
    let (status, body) = attempt(&app, &browser(), "alice@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body.contains("Too many sign-in attempts"));
    // Another account from another... the same IP is still under its own limit.
    app.add_user("bob@example.com", PASSWORD).await;
    let (status, _) = attempt(&app, &browser(), "bob@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn an_ip_is_throttled_across_accounts() {
    let app = spawn_app_with(|s| {
        s.throttle.ip_failures = 4;
        s.throttle.account_failures = 100;
    })
    .await;
    app.with_alice_and_web().await;
    for i in 0..4 {
        attempt(
            &app,
            &browser(),
            &format!("user{i}@example.com"),
            "wrong password",
        )
        .await;
    }
    let (status, _) = attempt(&app, &browser(), "alice@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn an_address_over_its_limit_does_not_fill_its_victims_account_window() {
    let app = spawn_app_with(|s| {
        s.trusted_proxies = vec!["127.0.0.1".into()];
        s.throttle.ip_failures = 2;
        s.throttle.account_failures = 3;
    })
    .await;
    app.with_alice_and_web().await;
    let attacker = || browser_behind("203.0.113.66");
    for _ in 0..2 {
        let (status, _) = attempt(&app, &attacker(), "alice@example.com", "guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    for _ in 0..10 {
        let (status, _) = attempt(&app, &attacker(), "alice@example.com", "guess").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    }
    // Two failures on Alice's window, not twelve: she still signs in.
    let (status, _) = attempt(
        &app,
        &browser_behind("198.51.100.7"),
        "alice@example.com",
        PASSWORD,
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn right_passwords_do_not_use_up_the_addresses_failure_budget() {
    let app = spawn_app_with(|s| {
        s.throttle.ip_failures = 2;
        s.throttle.account_failures = 100;
    })
    .await;
    app.with_alice_and_web().await;
    // An office behind one address signs in all day.
    for _ in 0..6 {
        let (status, _) = attempt(&app, &browser(), "alice@example.com", PASSWORD).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
    }
    // Failures still count: two pass, the third is refused.
    for expected in [StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED] {
        let (status, _) = attempt(&app, &browser(), "bob@example.com", "wrong").await;
        assert_eq!(status, expected);
    }
    let (status, _) = attempt(&app, &browser(), "alice@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

/// A browser behind the app's trusted proxy, which sent `xff` on.
fn browser_behind(xff: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-forwarded-for", xff.parse().unwrap());
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .unwrap()
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_right_most_untrusted_hop_is_throttled_and_a_forged_one_is_not()
{
    let app = spawn_app_with(|s| {
        s.trusted_proxies = vec!["127.0.0.1".into()];
        s.throttle.ip_failures = 2;
        s.throttle.account_failures = 100;
    })
    .await;
    app.with_alice_and_web().await;
    // The client forges a different left-most hop each time; the proxy
    // appends the address it really saw.
    for forged in ["6.6.6.6", "7.7.7.7"] {
        let b = browser_behind(&format!("{forged}, 203.0.113.9"));
        let (status, _) = attempt(&app, &b, "bob@example.com", "wrong").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let b = browser_behind("8.8.8.8, 203.0.113.9");
    let (status, _) = attempt(&app, &b, "alice@example.com", PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "203.0.113.9 is counted"
    );
    let b = browser_behind("203.0.113.10");
    let (status, _) = attempt(&app, &b, "alice@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "another client is not");
}

#[tokio::test]
async fn without_trusted_proxies_a_forwarded_for_header_is_ignored() {
    let app = spawn_app_with(|s| {
        s.throttle.ip_failures = 2;
        s.throttle.account_failures = 100;
    })
    .await;
    app.with_alice_and_web().await;
    for i in 0..2 {
        let b = browser_behind(&format!("198.51.100.{i}"));
        attempt(&app, &b, "bob@example.com", "wrong").await;
    }
    let b = browser_behind("198.51.100.99");
    let (status, _) = attempt(&app, &b, "alice@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the peer is counted");
}

#[tokio::test]
async fn a_successful_login_issues_a_new_session_cookie() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let browser = browser();
    let cookie_of = |r: &reqwest::Response| {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|c| {
                c.starts_with("switchyard-session=") && !c.starts_with("switchyard-session=;")
            })
    };
    let start = app
        .authorize(&browser, &AuthRequest::new("web", None))
        .await;
    let first = app
        .login(
            &browser,
            &location(start.headers()),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    let c1 = cookie_of(&first).expect("a session cookie");
    assert!(c1.contains("HttpOnly") && c1.contains("SameSite=Lax"));
    let mut again = AuthRequest::new("web", None);
    again.extra.push(("prompt".into(), "login".into()));
    let start = app.authorize(&browser, &again).await;
    let second = app
        .login(
            &browser,
            &location(start.headers()),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    let c2 = cookie_of(&second).expect("a new session cookie");
    assert_ne!(
        c1.split(';').next(),
        c2.split(';').next(),
        "new session id at every login (ASVS 7.2.4)"
    );
}

#[tokio::test]
async fn a_form_without_the_right_csrf_token_is_refused() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let browser = browser();
    let (action, mut fields) = password_page(&app, &browser, "alice@example.com").await;
    fields.insert("password".into(), PASSWORD.into());
    fields.insert("csrf".into(), "forged".into());
    let response = browser
        .post(app.url(&action))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get("location").is_none());
}

#[tokio::test]
async fn a_sign_in_started_in_one_browser_cannot_be_finished_in_another() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let (action, mut fields) = password_page(&app, &browser(), "alice@example.com").await;
    fields.insert("password".into(), PASSWORD.into());
    let response = browser()
        .post(app.url(&action))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn username_and_password_posted_together_log_in() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let browser = browser();
    let start = app
        .authorize(&browser, &AuthRequest::new("web", None))
        .await;
    let page = browser
        .get(app.url(&location(start.headers())))
        .send()
        .await
        .unwrap();
    let (action, mut fields) = form_fields(&page.text().await.unwrap());
    fields.insert("username".into(), "ALICE@example.com".into());
    fields.insert("password".into(), PASSWORD.into());
    let done = browser
        .post(app.url(&action))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(
        done.status(),
        StatusCode::SEE_OTHER,
        "emails match case-insensitively"
    );
    assert!(query_of(&location(done.headers())).contains_key("code"));
}

#[tokio::test]
async fn long_passphrases_work_whole() {
    let app = spawn_app().await;
    app.add_client("web", false).await;
    let long = "a passphrase that is much longer than seventy-two bytes, which bcrypt would silently truncate!";
    app.add_user("long@example.com", long).await;
    let (status, _) = attempt(&app, &browser(), "long@example.com", &long[..72]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no truncation");
    let (status, _) = attempt(&app, &browser(), "long@example.com", long).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn the_login_page_of_an_expired_or_unknown_request_explains_itself() {
    let app = spawn_app().await;
    let page = app
        .browser
        .get(app.url("/login?authz=unknown"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    assert!(page.text().await.unwrap().contains("sign in again"));
}
