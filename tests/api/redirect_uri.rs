//! Redirect URI attacks (RFC 9700 §4.1, §4.11): every one is refused with
//! a page, never a redirect.

use reqwest::StatusCode;

use crate::helpers::*;

/// Registered for `web`: `https://app.example.com/callback` and
/// `http://127.0.0.1/native`.
const ATTACKS: &[&str] = &[
    // Prefix and suffix rules.
    "https://app.example.com/callback/extra",
    "https://app.example.com/callbackx",
    "https://app.example.com/callback/../evil",
    "https://app.example.com/callback/..;/evil",
    "https://app.example.com/callback/%2e%2e/evil",
    "https://app.example.com/callback%2F..%2Fevil",
    "https://app.example.com/callback?next=https://evil.com",
    "https://app.example.com/callback#fragment",
    "https://app.example.com/callback/",
    "https://app.example.com/Callback",
    "https://app.example.com/callback%20",
    "https://app.example.com/callback ",
    "https://app.example.com/callback%00",
    // Look-alike and suffix hosts.
    "https://app.example.com.evil.com/callback",
    "https://evil-example.com/callback",
    "https://evilapp.example.com/callback",
    "https://app.example.co/callback",
    "https://APP.EXAMPLE.COM/callback",
    "https://xn--pp-7ka.example.com/callback",
    "https://аpp.example.com/callback",
    // Userinfo and several @.
    "https://app.example.com@evil.com/callback",
    "https://evil.com@app.example.com/callback",
    "https://app.example.com:443@evil.com/callback",
    "https://a@b@app.example.com/callback",
    // Scheme, port, authority tricks.
    "http://app.example.com/callback",
    "https://app.example.com:8443/callback",
    "https://app.example.com:443/callback",
    "//evil.com/callback",
    "///evil.com/callback",
    "https:/\\evil.com/callback",
    "https:\\\\evil.com/callback",
    "https://app.example.com\\@evil.com/callback",
    "https://app.example.com/\\evil.com",
    "https:// /evil.com",
    "https://app.example.com\t/callback",
    "javascript:alert(1)//https://app.example.com/callback",
    "data:text/html,<script>alert(1)</script>",
    // Loopback: only the port may change, and never the host.
    "http://localhost/native",
    "http://localhost:8080/native",
    "http://127.0.0.1.evil.com/native",
    "http://127.0.0.1:8080@evil.com/native",
    "http://127.0.0.2/native",
    "http://127.0.0.1:8080/native/x",
    "https://127.0.0.1/native",
    "http://[::1]/native",
];

#[tokio::test]
async fn every_redirect_uri_attack_is_refused_with_a_page_and_no_redirect() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    assert!(ATTACKS.len() >= 30);
    for attack in ATTACKS {
        let mut req = AuthRequest::new("web", None);
        req.redirect_uri = attack.to_string();
        let response = app.authorize(&browser(), &req).await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{attack:?} must be refused"
        );
        assert!(
            response.headers().get("location").is_none(),
            "{attack:?} must not redirect"
        );
        let body = response.text().await.unwrap();
        assert!(
            body.contains("redirect_uri is not registered"),
            "{attack:?}: a readable page"
        );
    }
}

#[tokio::test]
async fn a_native_app_loopback_redirect_may_use_any_port() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let mut req = AuthRequest::new("web", None);
    req.redirect_uri = "http://127.0.0.1:49152/native".into();
    let params = app.code_for(&browser(), &req, "alice@example.com").await;
    assert!(params.contains_key("code"));
}

#[tokio::test]
async fn errors_before_the_redirect_uri_is_trusted_never_redirect() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("response_type", "code"), ("redirect_uri", REDIRECT)],
        vec![
            ("response_type", "code"),
            ("client_id", "unknown"),
            ("redirect_uri", REDIRECT),
        ],
        vec![("response_type", "code"), ("client_id", "web")],
        vec![
            ("response_type", "code"),
            ("client_id", "web"),
            ("client_id", "web"),
            ("redirect_uri", REDIRECT),
        ],
        vec![
            ("response_type", "code"),
            ("client_id", "web"),
            ("redirect_uri", REDIRECT),
            ("redirect_uri", "https://evil.com/"),
        ],
    ];
    for query in cases {
        let response = app
            .browser
            .get(app.url("/authorize"))
            .query(&query)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query:?}");
        assert!(response.headers().get("location").is_none(), "{query:?}");
    }
}

#[tokio::test]
async fn logout_redirects_only_to_registered_uris_post_logout_redirect_uri_and_return_to() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    for target in [
        "https://evil.com/",
        "https://app.example.com/bye/x",
        "https://app.example.com/bye.evil.com",
        "//evil.com",
        REDIRECT,
    ] {
        let oidc = app
            .api
            .get(app.url("/oidc/logout"))
            .query(&[("client_id", "web"), ("post_logout_redirect_uri", target)])
            .send()
            .await
            .unwrap();
        assert_eq!(
            oidc.status(),
            StatusCode::BAD_REQUEST,
            "post_logout_redirect_uri {target:?}"
        );
        assert!(oidc.headers().get("location").is_none());
        let auth0 = app
            .api
            .get(app.url("/v2/logout"))
            .query(&[("client_id", "web"), ("returnTo", target)])
            .send()
            .await
            .unwrap();
        assert_eq!(
            auth0.status(),
            StatusCode::BAD_REQUEST,
            "returnTo {target:?}"
        );
        assert!(auth0.headers().get("location").is_none());
    }
    // Without a client to check against, no return address is followed.
    let anonymous = app
        .api
        .get(app.url("/v2/logout"))
        .query(&[("returnTo", "https://app.example.com/bye")])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::BAD_REQUEST);
    // The registered one is followed.
    let ok = app
        .api
        .get(app.url("/v2/logout"))
        .query(&[
            ("client_id", "web"),
            ("returnTo", "https://app.example.com/bye"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(ok.headers()), "https://app.example.com/bye");
}
