//! Refresh-token adoption: the adopted grant's scope, and the per-address
//! budget inside the per-client one.

use reqwest::StatusCode;
use serde_json::Value;
use switchyard_kit::fake::{FakeUser, Flavor};

use crate::helpers::*;
use crate::upstream::spawn_redirect_track;

const SUB: &str = "auth0|0000000000000000000ad0b7";

fn erin() -> FakeUser {
    FakeUser::new(SUB, "erin@example.com", PASSWORD)
}

/// The application's back end, behind a proxy that says it saw `ip`.
fn app_backend_at(ip: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-forwarded-for", ip.parse().unwrap());
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .unwrap()
}

async fn adopt(
    app: &TestApp,
    client: &reqwest::Client,
    token: &str,
    scope: Option<&str>,
) -> reqwest::Response {
    let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", token)];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    client
        .post(app.url("/oauth/token"))
        .basic_auth("web", Some(SECRET))
        .form(&form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_adopted_grant_carries_no_more_scope_than_the_upstream_token() {
    let t = spawn_redirect_track(Flavor::Auth0, |_| {}).await;
    t.fake.add_user(erin());
    // The application's upstream token was granted without profile or email.
    let legacy = t
        .fake
        .issue_refresh_token("web", SUB, "openid offline_access");
    let r = adopt(&t.app, &t.app.api, &legacy, Some("openid profile email")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["scope"], "openid", "{body:#}");
    let access = jwt_claims(body["access_token"].as_str().unwrap());
    assert_eq!(access["scope"], "openid");
    let info: Value = t
        .app
        .userinfo(body["access_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], SUB);
    assert!(info.get("email").is_none(), "{info:#}");
    // Nor does the next refresh widen it.
    let next = t.app.refresh(body["refresh_token"].as_str().unwrap()).await;
    let next: Value = next.json().await.unwrap();
    assert_eq!(
        jwt_claims(next["access_token"].as_str().unwrap())["scope"],
        "openid"
    );
}

#[tokio::test]
async fn one_address_cannot_use_up_a_clients_adoption_budget() {
    let t = spawn_redirect_track(Flavor::Auth0, |s| {
        s.trusted_proxies = vec!["127.0.0.1".into()];
        let up = s.upstream.as_mut().unwrap();
        up.adoptions_per_minute = 5;
        up.adoptions_per_minute_per_address = 2;
    })
    .await;
    t.fake.add_user(erin());
    let attacker = app_backend_at("203.0.113.66");
    for i in 0..10 {
        let r = adopt(&t.app, &attacker, &format!("guess-{i}"), None).await;
        let expected = if i < 2 {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        assert_eq!(r.status(), expected, "guess {i}");
    }
    assert_eq!(
        t.fake.calls("token:refresh_token"),
        2,
        "only the address's own budget reached the upstream"
    );
    // The application's real users, from elsewhere, are still adopted.
    let legacy = t
        .fake
        .issue_refresh_token("web", SUB, "openid profile email offline_access");
    let r = adopt(&t.app, &app_backend_at("198.51.100.7"), &legacy, None).await;
    assert_eq!(r.status(), StatusCode::OK);
}

/// Cognito answers a refresh without `scope`; its access token names it.
#[tokio::test]
async fn a_cognito_token_keeps_the_scope_its_access_token_names() {
    let t = spawn_redirect_track(Flavor::Cognito, |_| {}).await;
    let sub = Flavor::Cognito.sample_sub(1);
    t.fake
        .add_user(FakeUser::new(&sub, "erin@example.com", PASSWORD));
    let legacy = t.fake.issue_refresh_token("web", &sub, "openid email");
    let r = adopt(&t.app, &t.app.api, &legacy, Some("openid email profile")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["scope"], "openid email", "{body:#}");
    let info: Value = t
        .app
        .userinfo(body["access_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["email"], "erin@example.com", "{info:#}");
}
