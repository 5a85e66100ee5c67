//! What the fuzz targets (tests/fuzz) found, each kept as a test of the
//! behaviour an application or a user sees.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;
use crate::migration::password_login;
use crate::upstream::{spawn_redirect_track, spawn_with_upstream};
use switchyard_kit::fake::{FakeUser, Flavor};

fn dora() -> FakeUser {
    FakeUser::new(
        "auth0|64b0c1d2e3f4a5b6c7d8e9f0",
        "dora@example.com",
        PASSWORD,
    )
}

/// RFC 6749 §5.1 leaves `expires_in` unbounded: an upstream answering a
/// lifetime past the end of the clock (here i64::MAX seconds) still
/// signs the user in on the redirect track (the code exchange) …
#[tokio::test]
async fn an_upstream_token_lifetime_past_the_end_of_the_clock_signs_in_on_the_redirect_track() {
    let t = spawn_redirect_track(Flavor::Auth0, |_| {}).await;
    t.fake.add_user(dora());
    t.fake.set_access_token_ttl(i64::MAX as u64);
    let tokens = t.tokens("dora@example.com").await;
    let refreshed = t
        .app
        .refresh(tokens["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
}

/// … and on the password track (the upstream's password grant).
#[tokio::test]
async fn an_upstream_token_lifetime_past_the_end_of_the_clock_signs_in_with_a_password() {
    let t = spawn_with_upstream(Flavor::Auth0, |s| {
        s.upstream.as_mut().unwrap().connection = Some("Username-Password-Authentication".into());
    })
    .await;
    t.fake.add_user(dora());
    t.fake.set_access_token_ttl(i64::MAX as u64);
    let done = password_login(&t, "web", "dora@example.com", PASSWORD).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER, "back to the client");
    let code = query_of(&location(done.headers()))["code"].clone();
    let tokens: Value = t.app.exchange(&code, None).await.json().await.unwrap();
    assert!(tokens["id_token"].is_string(), "{tokens}");
}

/// Basic credentials name the client they authenticate: an id with a raw
/// `&` (not form-encoded, as RFC 6749 §2.3.1 asks) was cut at the `&`, so
/// `web&anything` with web's secret was taken as `web` (and `&…` as an
/// empty id).
#[tokio::test]
async fn a_basic_client_id_with_a_raw_ampersand_is_not_cut_to_another_client() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let params = app.alice_code(&browser(), None).await;
    let response = app
        .api
        .post(app.url("/oauth/token"))
        .basic_auth("web&someone-else", Some(SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", params["code"].as_str()),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .unwrap();
    assert_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
}
