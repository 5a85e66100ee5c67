//! RP-initiated logout and Auth0's /v2/logout.

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn logout_with_id_token_hint_ends_the_session_and_its_refresh_tokens() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let browser = browser();
    let params = app.alice_code(&browser, None).await;
    let tokens = app.exchange_ok(&params["code"], None).await;
    let response = browser
        .get(app.url("/oidc/logout"))
        .query(&[
            ("id_token_hint", tokens["id_token"].as_str().unwrap()),
            ("post_logout_redirect_uri", "https://app.example.com/bye"),
            ("state", "after-logout"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(response.headers()),
        "https://app.example.com/bye?state=after-logout"
    );

    // The session is gone: prompt=none now needs a login, and the refresh family died with it.
    let silent = AuthRequest::new("web", None).with("prompt", "none");
    let back = app.authorize(&browser, &silent).await;
    assert_eq!(
        query_of(&location(back.headers()))["error"],
        "login_required"
    );
    assert_oauth_error(
        app.refresh(tokens["refresh_token"].as_str().unwrap()).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn logout_without_a_hint_asks_for_confirmation_first() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let browser = browser();
    app.code_for(
        &browser,
        &AuthRequest::new("web", None),
        "alice@example.com",
    )
    .await;
    let page = browser.get(app.url("/oidc/logout")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let (action, fields) = form_fields(&page.text().await.unwrap());
    assert_eq!(action, "/oidc/logout");

    // A forged confirmation does nothing.
    let mut forged = fields.clone();
    forged.insert("csrf".into(), "forged".into());
    let again = browser
        .post(app.url(&action))
        .form(&forged)
        .send()
        .await
        .unwrap();
    assert!(again.text().await.unwrap().contains("Sign out?"));

    let done = browser
        .post(app.url(&action))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert!(done.text().await.unwrap().contains("You are signed out"));
    let silent = AuthRequest::new("web", None).with("prompt", "none");
    let back = app.authorize(&browser, &silent).await;
    assert_eq!(
        query_of(&location(back.headers()))["error"],
        "login_required"
    );
}

#[tokio::test]
async fn auth0_v2_logout_signs_out_and_returns_to_the_registered_url() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let browser = browser();
    app.code_for(
        &browser,
        &AuthRequest::new("web", None),
        "alice@example.com",
    )
    .await;
    let response = browser
        .get(app.url("/v2/logout"))
        .query(&[
            ("client_id", "web"),
            ("returnTo", "https://app.example.com/bye"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(location(response.headers()), "https://app.example.com/bye");
    let silent = AuthRequest::new("web", None).with("prompt", "none");
    let back = app.authorize(&browser, &silent).await;
    assert_eq!(
        query_of(&location(back.headers()))["error"],
        "login_required"
    );
}

#[tokio::test]
async fn an_id_token_hint_for_another_client_is_refused() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    app.add_client("other", false).await;
    let tokens = app.tokens_for_alice().await;
    let response = app
        .api
        .get(app.url("/oidc/logout"))
        .query(&[
            ("id_token_hint", tokens["id_token"].as_str().unwrap()),
            ("client_id", "other"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

/// A `/v2/logout` with no application or return address can be any site's
/// link or image: it asks, and signs out only once confirmed.
#[tokio::test]
async fn a_plain_v2_logout_asks_for_confirmation_and_signs_out_only_when_confirmed() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let browser = browser();
    app.alice_code(&browser, None).await;
    let silent = AuthRequest::new("web", None).with("prompt", "none");
    for query in [vec![], vec![("client_id", "web")]] {
        let page = browser
            .get(app.url("/v2/logout"))
            .query(&query)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.headers().get("location").is_none());
        let html = page.text().await.unwrap();
        assert!(html.contains("Sign out?"), "{html}");
        let back = app.authorize(&browser, &silent).await;
        assert!(
            query_of(&location(back.headers())).contains_key("code"),
            "still signed in after {query:?}"
        );
    }
    // The person confirms.
    let page = browser.get(app.url("/v2/logout")).send().await.unwrap();
    let (action, fields) = form_fields(&page.text().await.unwrap());
    let done = browser
        .post(app.url(&action))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    assert!(done.text().await.unwrap().contains("You are signed out"));
    let back = app.authorize(&browser, &silent).await;
    assert_eq!(
        query_of(&location(back.headers()))["error"],
        "login_required"
    );
}
