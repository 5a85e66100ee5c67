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

// ---------------------------------------------------------------------------
// Nothing told before a password is checked, and failures as slow as the
// upstream's
// ---------------------------------------------------------------------------

mod enumeration {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use reqwest::StatusCode;
    use switchyard::config::Phase;
    use switchyard::store::UserState;
    use switchyard_kit::fake::{FakeUser, Flavor, Mode};

    use crate::helpers::*;
    use crate::migration::password_login;
    use crate::upstream::{UpstreamApp, spawn_with_upstream};

    /// A user imported from an Auth0 export with the CLI, as an operator
    /// does: a pending user, returned.
    async fn imported(t: &UpstreamApp, id: &str, email: &str) -> switchyard::store::User {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.ndjson");
        let line = serde_json::json!({ "user_id": id, "email": email });
        std::fs::write(&path, format!("{line}\n")).unwrap();
        let out = run_cli(
            &t.app._isolated,
            &["import", path.to_str().unwrap(), "--format", "auth0-export"],
            None,
            &[],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let user = t
            .app
            .state
            .db
            .find_user_by_login(email)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(user.state, UserState::Pending);
        user
    }

    async fn post(
        t: &UpstreamApp,
        browser: &reqwest::Client,
        action: &str,
        fields: &HashMap<String, String>,
        username: &str,
    ) -> (StatusCode, String) {
        let mut fields = fields.clone();
        fields.insert("username".into(), username.into());
        fields.insert("password".into(), "a wrong password".into());
        let r = browser
            .post(t.app.url(action))
            .form(&fields)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    #[tokio::test]
    async fn in_local_only_unknown_local_pending_and_shadow_identifiers_get_one_page_and_all_count()
    {
        let t = spawn_with_upstream(Flavor::Auth0, |s| {
            s.cutover.phase = Phase::LocalOnly;
            s.password.failure_floor_ms = 50;
            s.throttle.account_failures = 1;
            s.throttle.ip_failures = 1000;
        })
        .await;
        t.app.add_user("local@example.com", PASSWORD).await;
        imported(&t, "auth0|00000000000000000000beef", "pending@example.com").await;
        t.shadow("auth0|00000000000000000000cafe", "shadow@example.com")
            .await;

        // One sign-in, four identifiers, one wrong password each: the same
        // form, so the same CSRF token and request in every answer.
        let browser = browser();
        let (action, fields) = t.app.identifier_form(&browser, "web").await;
        let who = [
            "nobody@example.com",
            "local@example.com",
            "pending@example.com",
            "shadow@example.com",
        ];
        let mut pages = Vec::new();
        for username in who {
            let (status, body) = post(&t, &browser, &action, &fields, username).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{username}");
            // The identifier is echoed back (and in the reset link).
            let page = body
                .replace(&username.replace('@', "%40"), "WHO")
                .replace(username, "WHO");
            pages.push(page);
        }
        for (page, username) in pages.iter().zip(who).skip(1) {
            assert_eq!(page, &pages[0], "{username} gets the unknown user's page");
        }
        assert!(pages[0].contains("Forgot password?"), "{}", pages[0]);
        // Each attempt counted against its account: the second is refused.
        for username in who {
            let (status, _) = post(&t, &browser, &action, &fields, username).await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{username}");
        }
    }

    /// The same holds where local_only comes from a client's override or a
    /// user's `force_local` pin rather than the phase.
    #[tokio::test]
    async fn a_client_override_and_a_local_pin_answer_like_a_wrong_password() {
        let t = spawn_with_upstream(Flavor::Auth0, |s| {
            s.upstream.as_mut().unwrap().connection =
                Some("Username-Password-Authentication".into());
            s.cutover.clients.insert("web".into(), Phase::LocalOnly);
            s.password.failure_floor_ms = 50;
            s.throttle.account_failures = 1000;
        })
        .await;
        t.app.add_client("pinned-app", false).await;
        t.app.add_user("local@example.com", PASSWORD).await;
        let pending = imported(&t, "auth0|0000000000000000000000aa", "pending@example.com").await;
        t.app
            .state
            .db
            .set_pin(&pending.id, Some("force_local"))
            .await
            .unwrap();
        for (client, username) in [
            ("web", "nobody@example.com"),
            ("web", "local@example.com"),
            ("web", "pending@example.com"),
            // Lazy for this client: only the pin keeps her local.
            ("pinned-app", "pending@example.com"),
        ] {
            let r = password_login(&t, client, username, "a wrong password").await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{client} {username}");
            let page = r.text().await.unwrap();
            assert!(
                page.contains("Wrong email, username or password.")
                    && page.contains("Forgot password?"),
                "{client} {username}: {page}"
            );
        }
        assert_eq!(t.fake.calls("token"), 0, "no upstream call");
    }

    /// The count taken at the identifier step is given back once the
    /// upstream's page has signed the user in, as a right password's is:
    /// federated users are not throttled for signing in often, alone or
    /// many behind one address.
    #[tokio::test]
    async fn a_federated_users_counted_redirect_is_given_back_once_the_upstream_signs_them_in() {
        let t = spawn_with_upstream(Flavor::Auth0, |s| {
            s.upstream.as_mut().unwrap().connection =
                Some("Username-Password-Authentication".into());
            s.password.failure_floor_ms = 50;
            s.throttle.account_failures = 2;
            s.throttle.ip_failures = 2;
        })
        .await;
        let id = "google-oauth2|104827365018273645";
        imported(&t, id, "social@example.com").await;
        t.fake.add_user(FakeUser::new(
            id,
            "social@example.com",
            crate::helpers::PASSWORD,
        ));
        for n in 0..4 {
            let done = t
                .login(
                    &browser(),
                    &AuthRequest::new("web", None),
                    "social@example.com",
                    crate::helpers::PASSWORD,
                )
                .await;
            assert_eq!(done.status(), StatusCode::SEE_OTHER, "login {n}");
            assert!(
                location(done.headers()).starts_with(REDIRECT),
                "login {n} reaches the application"
            );
        }
    }

    #[tokio::test]
    async fn a_federated_users_redirect_at_the_identifier_step_is_counted_and_padded() {
        let t = spawn_with_upstream(Flavor::Auth0, |s| {
            s.upstream.as_mut().unwrap().connection =
                Some("Username-Password-Authentication".into());
            s.password.failure_floor_ms = 300;
            s.throttle.account_failures = 2;
            s.throttle.ip_failures = 1000;
        })
        .await;
        // Backfilled from a social connection: no password can move them.
        imported(&t, "google-oauth2|104827365018273645", "social@example.com").await;
        for _ in 0..2 {
            let browser = browser();
            let start = t
                .app
                .authorize(&browser, &AuthRequest::new("web", None))
                .await;
            let page = browser
                .get(t.app.url(&location(start.headers())))
                .send()
                .await
                .unwrap();
            let (action, mut fields) = form_fields(&page.text().await.unwrap());
            fields.insert("username".into(), "social@example.com".into());
            let started = Instant::now();
            let r = browser
                .post(t.app.url(&action))
                .form(&fields)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::SEE_OTHER);
            assert!(
                location(r.headers()).starts_with(&t.fake.base),
                "to the upstream's page"
            );
            assert!(
                started.elapsed() >= Duration::from_millis(300),
                "padded like a failure"
            );
        }
        let third = browser();
        let (action, mut fields) = t.app.identifier_form(&third, "web").await;
        fields.insert("username".into(), "social@example.com".into());
        let r = third
            .post(t.app.url(&action))
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "counted");
        // An unknown identifier is asked for its password, as before.
        let other = browser();
        let (action, mut fields) = t.app.identifier_form(&other, "web").await;
        fields.insert("username".into(), "nobody@example.com".into());
        let r = other
            .post(t.app.url(&action))
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_local_wrong_password_takes_at_least_as_long_as_the_upstreams_password_check() {
        let t = spawn_with_upstream(Flavor::Auth0, |s| {
            s.upstream.as_mut().unwrap().connection =
                Some("Username-Password-Authentication".into());
            s.password.failure_floor_ms = 50;
            s.throttle.account_failures = 1000;
            s.throttle.ip_failures = 1000;
        })
        .await;
        t.fake.add_user(FakeUser::new(
            "auth0|0000000000000000000000ab",
            "upstream@example.com",
            PASSWORD,
        ));
        t.app.add_user("local@example.com", PASSWORD).await;
        // Discovery and keys fetched while the upstream is quick.
        let r = password_login(&t, "web", "upstream@example.com", "a wrong password").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

        let upstream_latency = Duration::from_millis(1200);
        t.fake.set_mode(Mode::Slow(upstream_latency));
        for _ in 0..3 {
            let r = password_login(&t, "web", "upstream@example.com", "a wrong password").await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        t.fake.set_mode(Mode::Normal);

        let started = Instant::now();
        let r = password_login(&t, "web", "local@example.com", "a wrong password").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(
            started.elapsed() >= upstream_latency,
            "a local failure is as slow as an upstream one: {:?}",
            started.elapsed()
        );
    }
}
