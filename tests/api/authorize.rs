//! The authorization endpoint: validation, error redirects, prompt, max_age,
//! session reuse and response modes.

use reqwest::StatusCode;

use crate::helpers::*;

/// Sends `req` and returns the parameters of the error redirect.
async fn error_redirect(
    app: &TestApp,
    req: &AuthRequest,
) -> std::collections::HashMap<String, String> {
    let response = app.authorize(&browser(), req).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let target = location(response.headers());
    assert!(target.starts_with(REDIRECT), "{target}");
    let params = query_of(&target);
    assert_eq!(
        params.get("iss"),
        Some(&app.issuer),
        "RFC 9207 iss on errors too"
    );
    params
}

#[tokio::test]
async fn once_the_redirect_uri_is_trusted_errors_go_back_to_the_client_with_state() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    app.add_client("spa", true).await;
    let cases: Vec<(AuthRequest, &str)> = vec![
        (
            {
                let mut r = AuthRequest::new("web", None);
                r.extra.push(("response_type".into(), "token".into()));
                r
            },
            "invalid_request",
        ),
        (
            {
                let mut r = AuthRequest::new("web", None);
                r.extra = vec![
                    ("code_challenge".into(), "x".repeat(43)),
                    ("code_challenge_method".into(), "plain".into()),
                ];
                r
            },
            "invalid_request",
        ),
        (
            {
                let mut r = AuthRequest::new("web", None);
                r.extra = vec![("code_challenge".into(), "x".repeat(43))];
                r
            },
            "invalid_request",
        ),
        (AuthRequest::new("spa", None), "invalid_request"),
        (
            {
                let mut r = AuthRequest::new("web", None);
                r.extra.push(("request".into(), "eyJ.x.y".into()));
                r
            },
            "request_not_supported",
        ),
        (
            {
                let mut r = AuthRequest::new("web", None);
                r.extra.push(("max_age".into(), "-1".into()));
                r
            },
            "invalid_request",
        ),
        (
            {
                let mut r = AuthRequest::new("web", None);
                r.extra.push(("prompt".into(), "none login".into()));
                r
            },
            "invalid_request",
        ),
        (
            {
                let mut r = AuthRequest::new("web", None);
                r.scope = "openid \"quoted\"".into();
                r
            },
            "invalid_scope",
        ),
    ];
    for (req, expected) in cases {
        let params = error_redirect(&app, &req).await;
        assert_eq!(params["error"], expected, "{:?}", req.pairs());
        assert_eq!(params["state"], "st-123");
        assert!(!params.contains_key("code"));
    }
}

#[tokio::test]
async fn only_the_code_flow_is_served_no_implicit_grant() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    for response_type in ["token", "id_token", "code id_token", "code token"] {
        let response = app
            .browser
            .get(app.url("/authorize"))
            .query(&[
                ("response_type", response_type),
                ("client_id", "web"),
                ("redirect_uri", REDIRECT),
                ("state", "s"),
            ])
            .send()
            .await
            .unwrap();
        let params = query_of(&location(response.headers()));
        assert_eq!(
            params["error"], "unsupported_response_type",
            "{response_type}"
        );
        assert!(!params.contains_key("access_token") && !params.contains_key("id_token"));
    }
}

#[tokio::test]
async fn prompt_none_without_a_session_answers_login_required() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let req = AuthRequest::new("web", None).with("prompt", "none");
    let params = error_redirect(&app, &req).await;
    assert_eq!(params["error"], "login_required");
    assert_eq!(params["state"], "st-123");
}

#[tokio::test]
async fn an_existing_session_is_reused_unless_prompt_login_or_max_age_asks_for_a_new_login() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let browser = browser();
    app.code_for(
        &browser,
        &AuthRequest::new("web", None),
        "alice@example.com",
    )
    .await;

    // prompt=none with a session: straight back with a code.
    let silent = AuthRequest::new("web", None).with("prompt", "none");
    let response = app.authorize(&browser, &silent).await;
    let params = query_of(&location(response.headers()));
    assert!(params.contains_key("code"), "{params:?}");

    // No prompt: reused too.
    let response = app
        .authorize(&browser, &AuthRequest::new("web", None))
        .await;
    assert!(query_of(&location(response.headers())).contains_key("code"));

    // prompt=login: back to the login page.
    let mut fresh = AuthRequest::new("web", None);
    fresh.extra.push(("prompt".into(), "login".into()));
    let response = app.authorize(&browser, &fresh).await;
    assert!(location(response.headers()).starts_with("/login?authz="));

    // max_age=0 with prompt=none: the session is too old to count.
    let mut too_old = AuthRequest::new("web", None);
    too_old.extra = vec![
        ("max_age".into(), "0".into()),
        ("prompt".into(), "none".into()),
    ];
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let params = error_redirect(&app, &too_old).await;
    assert_eq!(params["error"], "login_required");
}

#[tokio::test]
async fn auth_time_is_the_time_of_the_login_not_of_the_token() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let browser = browser();
    let params = app.alice_code(&browser, None).await;
    let first = app.exchange_ok(&params["code"], None).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let response = app
        .authorize(&browser, &AuthRequest::new("web", None))
        .await;
    let params = query_of(&location(response.headers()));
    let second = app.exchange_ok(&params["code"], None).await;
    let claims = |t: &serde_json::Value| jwt_claims(t["id_token"].as_str().unwrap());
    assert_eq!(claims(&first)["auth_time"], claims(&second)["auth_time"]);
    assert_ne!(claims(&first)["iat"], claims(&second)["iat"]);
}

#[tokio::test]
async fn form_post_response_mode_posts_the_code_to_the_client() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let browser = browser();
    let mut req = AuthRequest::new("web", None);
    req.extra.push(("response_mode".into(), "form_post".into()));
    let start = app.authorize(&browser, &req).await;
    let done = app
        .login(
            &browser,
            &location(start.headers()),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    let csp = done.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("form-action 'self' https://app.example.com"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"));
    let (action, fields) = form_fields(&done.text().await.unwrap());
    assert_eq!(action, REDIRECT);
    assert!(fields.contains_key("code"));
    assert_eq!(fields["state"], "st-123");
    assert_eq!(fields["iss"], app.issuer);
}

#[tokio::test]
async fn post_to_authorize_is_served_like_get() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let req = AuthRequest::new("web", None);
    let response = app
        .browser
        .post(app.url("/authorize"))
        .form(&req.pairs())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(location(response.headers()).starts_with("/login?authz="));
}

#[tokio::test]
async fn login_pages_refuse_framing_and_inline_scripts_and_authorize_has_no_cors() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let browser = browser();
    let start = browser
        .get(app.url("/authorize"))
        .header("origin", "https://evil.com")
        .query(&AuthRequest::new("web", None).pairs())
        .send()
        .await
        .unwrap();
    assert!(
        start.headers().get("access-control-allow-origin").is_none(),
        "no CORS on /authorize"
    );
    let page = browser
        .get(app.url(&location(start.headers())))
        .send()
        .await
        .unwrap();
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
    let body = page.text().await.unwrap();
    assert!(!body.contains("<script>"), "no inline script");
}

#[tokio::test]
async fn login_hint_prefills_the_identifier() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let browser = browser();
    let mut req = AuthRequest::new("web", None);
    req.extra
        .push(("login_hint".into(), "alice@example.com".into()));
    let start = app.authorize(&browser, &req).await;
    let page = browser
        .get(app.url(&location(start.headers())))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (_, fields) = form_fields(&page);
    assert_eq!(fields["username"], "alice@example.com");
}

/// `web` with the application's origin registered as a web origin.
async fn with_web_origin(app: &TestApp) {
    let mut client = app.add_client("web", false).await;
    client.web_origins = vec!["https://app.example.com".into()];
    app.state.db.upsert_client(&client).await.unwrap();
    app.add_user("alice@example.com", PASSWORD).await;
}

/// The element the post_message page hands its script.
fn posted_message(html: &str) -> (String, serde_json::Value) {
    let doc = scraper::Html::parse_document(html);
    let el = doc
        .select(&scraper::Selector::parse("#post-message").unwrap())
        .next()
        .expect("the message element");
    (
        el.value().attr("data-target-origin").unwrap().to_string(),
        serde_json::from_str(el.value().attr("data-message").unwrap()).unwrap(),
    )
}

#[tokio::test]
async fn web_message_posts_auth0s_shape_to_the_web_origin_only_and_may_be_framed_by_it() {
    let app = spawn_app().await;
    with_web_origin(&app).await;
    let browser = browser();
    // No session yet: prompt=none answers login_required, by message.
    let silent = AuthRequest::new("web", None)
        .with("prompt", "none")
        .with("response_mode", "web_message");
    let page = app.authorize(&browser, &silent).await;
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("frame-ancestors https://app.example.com;"),
        "{csp}"
    );
    assert!(page.headers().get("x-frame-options").is_none());
    let (origin, message) = posted_message(&page.text().await.unwrap());
    assert_eq!(origin, "https://app.example.com");
    assert_eq!(message["type"], "authorization_response");
    assert_eq!(message["response"]["error"], "login_required");
    assert_eq!(message["response"]["state"], "st-123");

    // Signed in: the code, with state and iss (RFC 9207).
    app.code_for(
        &browser,
        &AuthRequest::new("web", None),
        "alice@example.com",
    )
    .await;
    let page = app.authorize(&browser, &silent).await;
    let (_, message) = posted_message(&page.text().await.unwrap());
    let response = &message["response"];
    assert!(response["code"].as_str().is_some_and(|c| c.len() == 43));
    assert_eq!(response["state"], "st-123");
    assert_eq!(response["iss"], app.issuer);
    let exchanged = app.exchange(response["code"].as_str().unwrap(), None).await;
    assert_eq!(exchanged.status(), StatusCode::OK);

    // Okta's shape: the fields themselves.
    let okta = AuthRequest::new("web", None)
        .with("prompt", "none")
        .with("response_mode", "okta_post_message");
    let page = app.authorize(&browser, &okta).await;
    let (origin, message) = posted_message(&page.text().await.unwrap());
    assert_eq!(origin, "https://app.example.com");
    assert!(message["code"].is_string() && message.get("type").is_none());
    assert_eq!(message["state"], "st-123");
}

#[tokio::test]
async fn a_posted_message_needs_the_redirect_origin_registered_as_a_web_origin() {
    let app = spawn_app().await;
    app.with_alice_and_web().await; // no web origins
    let browser = browser();
    for mode in ["web_message", "okta_post_message"] {
        let page = app
            .authorize(
                &browser,
                &AuthRequest::new("web", None)
                    .with("prompt", "none")
                    .with("response_mode", mode),
            )
            .await;
        assert_eq!(page.status(), StatusCode::BAD_REQUEST, "{mode}");
        let body = page.text().await.unwrap();
        assert!(body.contains("not registered as a web origin"), "{body}");
        assert!(!body.contains("post-message"));
    }
    // An unknown mode goes back as an error on the trusted redirect URI.
    let back = app
        .authorize(
            &browser,
            &AuthRequest::new("web", None).with("response_mode", "fragment"),
        )
        .await;
    let q = query_of(&location(back.headers()));
    assert_eq!(q["error"], "invalid_request");
    assert!(q["error_description"].contains("web_message"));
}

#[tokio::test]
async fn discovery_lists_the_post_message_response_modes() {
    let app = spawn_app().await;
    let meta: serde_json::Value = app
        .api
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["response_modes_supported"],
        serde_json::json!(["query", "form_post", "web_message", "okta_post_message"])
    );
}

// ---------------------------------------------------------------------------
// prompt=login and max_age on the redirect track (OIDC Core §3.1.2.1)
// ---------------------------------------------------------------------------

mod redirect_track {
    use reqwest::StatusCode;
    use switchyard_kit::fake::{FakeUser, Flavor};

    use crate::helpers::*;
    use crate::upstream::{UpstreamApp, spawn_redirect_track};

    const DANA: &str = "dana@example.com";

    async fn with_dana() -> UpstreamApp {
        let t = spawn_redirect_track(Flavor::Auth0, |_| {}).await;
        t.fake.add_user(FakeUser::new(
            "auth0|00000000000000000000da0a",
            DANA,
            PASSWORD,
        ));
        t
    }

    /// Signs Dana in at the upstream directly (another application of the
    /// same tenant did), so `browser` holds an upstream session and no
    /// Switchyard session.
    async fn upstream_session(t: &UpstreamApp, browser: &reqwest::Client) {
        let url = reqwest::Url::parse_with_params(
            &t.fake.authorization_endpoint(),
            &[
                ("client_id", "web"),
                ("redirect_uri", REDIRECT),
                ("response_type", "code"),
                ("scope", "openid"),
                ("state", "elsewhere"),
            ],
        )
        .unwrap();
        let done = t
            .fake
            .browser_login(browser, url.as_str(), DANA, PASSWORD)
            .await;
        assert!(done.status().is_redirection(), "{}", done.status());
    }

    /// Starts `req` at Switchyard and sends Dana's identifier; returns the
    /// upstream authorization URL Switchyard sends the browser to.
    async fn to_upstream(t: &UpstreamApp, browser: &reqwest::Client, req: &AuthRequest) -> String {
        let start = t.app.authorize(browser, req).await;
        assert_eq!(start.status(), StatusCode::SEE_OTHER);
        let url = t
            .identifier_step(browser, &location(start.headers()), DANA)
            .await;
        assert!(url.starts_with(&t.fake.base), "to the upstream: {url}");
        url
    }

    async fn get(browser: &reqwest::Client, url: &str) -> reqwest::Response {
        browser.get(url).send().await.unwrap()
    }

    async fn auth_time_of(t: &UpstreamApp, done: reqwest::Response) -> i64 {
        assert_eq!(done.status(), StatusCode::SEE_OTHER);
        let back = query_of(&location(done.headers()));
        let tokens = t.app.exchange_ok(&back["code"], None).await;
        jwt_claims(tokens["id_token"].as_str().unwrap())["auth_time"]
            .as_i64()
            .expect("auth_time")
    }

    #[tokio::test]
    async fn max_age_reaches_the_upstream_and_auth_time_is_the_upstream_login() {
        let t = with_dana().await;
        let browser = browser();
        upstream_session(&t, &browser).await;
        // Dana logged in at the upstream two minutes ago.
        let upstream_login = switchyard::store::now() - 120;
        t.fake.set_sessions_auth_time(upstream_login);

        let url = to_upstream(
            &t,
            &browser,
            &AuthRequest::new("web", None).with("max_age", "600"),
        )
        .await;
        // Within max_age, the upstream answers from its session at once.
        let back = get(&browser, &url).await;
        assert!(back.status().is_redirection(), "{}", back.status());
        assert_eq!(t.fake.last_authorize_params().unwrap()["max_age"], "600");
        let done = get(&browser, &location(back.headers())).await;
        assert_eq!(
            auth_time_of(&t, done).await,
            upstream_login,
            "our auth_time is when the user logged in at the upstream"
        );
    }

    #[tokio::test]
    async fn prompt_login_reaches_the_upstream_which_asks_for_the_password_again() {
        let t = with_dana().await;
        let browser = browser();
        upstream_session(&t, &browser).await;
        t.fake
            .set_sessions_auth_time(switchyard::store::now() - 120);
        let asked = switchyard::store::now();

        let url = to_upstream(
            &t,
            &browser,
            &AuthRequest::new("web", None).with("prompt", "login"),
        )
        .await;
        // upstream_login insists on the upstream's login page: the session
        // there must not answer silently.
        let done = t.upstream_login(&browser, &url, DANA, PASSWORD).await;
        assert_eq!(t.fake.last_authorize_params().unwrap()["prompt"], "login");
        assert!(auth_time_of(&t, done).await >= asked, "a fresh login");
    }

    #[tokio::test]
    async fn an_upstream_that_ignores_max_age_is_asked_again_and_then_refused() {
        let t = with_dana().await;
        let browser = browser();
        upstream_session(&t, &browser).await;
        t.fake
            .set_sessions_auth_time(switchyard::store::now() - 3600);
        t.fake.set_ignore_reauthentication(true);

        let url = to_upstream(
            &t,
            &browser,
            &AuthRequest::new("web", None).with("max_age", "600"),
        )
        .await;
        let back = get(&browser, &url).await;
        assert!(
            back.status().is_redirection(),
            "answered from the old session"
        );
        let again = get(&browser, &location(back.headers())).await;
        assert_eq!(again.status(), StatusCode::SEE_OTHER);
        let reask = location(again.headers());
        assert!(
            reask.starts_with(&t.fake.base),
            "a login an hour old is not passed on: the upstream is asked again: {reask}"
        );
        let sent = query_of(&reask);
        assert_eq!(sent["prompt"], "login");
        assert_eq!(sent["max_age"], "600");

        // The upstream ignores that too: the application is told, with no code.
        let back = get(&browser, &reask).await;
        assert!(back.status().is_redirection());
        let done = get(&browser, &location(back.headers())).await;
        assert_eq!(done.status(), StatusCode::SEE_OTHER);
        let to = location(done.headers());
        assert!(to.starts_with(REDIRECT), "{to}");
        let params = query_of(&to);
        assert_eq!(params["error"], "access_denied");
        assert!(!params.contains_key("code"));
        assert_eq!(params["state"], "st-123");
    }
}
