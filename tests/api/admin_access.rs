//! Who may operate: machines through the client credentials grant (RFC
//! 6749 §4.4) and the admin API's Bearer tokens, people through the
//! dashboard's sign-in and its admin session; and everyone else refused —
//! a user's token, a token without the scope, a read-only token asked to
//! change, a deleted client, an expired token or session, a cross-site
//! form post. The operators' trail (`/admin/audit`) with its filters.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use switchyard::admin::access::{
    ADMIN_READ_SCOPE, ADMIN_SCOPE, Access, Actor, AdminSession, Operator, admin_audience,
    verify_admin_token,
};
use switchyard::admin::audit::record_change;
use switchyard::crypto::random_token;
use switchyard::store::{ClientSource, GrantType, SessionStoreExt};
use switchyard_kit::chrome::{self, Chrome};

use crate::admin_helpers::AdminScope;
use crate::helpers::*;

/// A confidential client allowed the client credentials grant and `scopes`.
async fn machine(app: &TestApp, client_id: &str, scopes: &[&str]) {
    let client = switchyard::config::ClientSettings {
        client_id: client_id.into(),
        grant_types: vec![GrantType::ClientCredentials],
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
    .to_client(
        Some(switchyard::crypto::hash_secret(SECRET)),
        ClientSource::Cli,
    );
    app.state.db.create_client(&client).await.unwrap();
}

/// `GET {API}/audit` with the given headers only: the status, the headers
/// and the body.
async fn audit_without_token(app: &TestApp) -> reqwest::Response {
    app.api
        .get(app.url(&format!("{}/audit", switchyard::admin::API)))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_client_credentials_grant_issues_an_rfc_9068_admin_token() {
    let app = spawn_app().await;
    let client_id = app.admin_client(AdminScope::Write).await;
    let (status, body) = app.client_credentials(&client_id, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], ADMIN_SCOPE);
    assert!(body["expires_in"].as_i64().unwrap() > 0);
    // RFC 6749 §4.4.3: no refresh token; no user, so no ID token.
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert!(body.get("id_token").is_none(), "{body}");

    let token = body["access_token"].as_str().unwrap();
    assert_eq!(jwt_header(token)["typ"], "at+jwt");
    let claims = jwt_claims(token);
    assert_eq!(claims["aud"], admin_audience(&app.issuer));
    assert_eq!(claims["aud"], format!("{}admin", app.issuer));
    assert_eq!(claims["sub"], client_id.as_str());
    assert_eq!(claims["client_id"], client_id.as_str());
    assert_eq!(claims["iss"], app.issuer.as_str());
    assert_eq!(claims["scope"], ADMIN_SCOPE);
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 20));
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!(exp > iat);
    assert!(claims.get("gid").is_none(), "no user grant: {claims}");

    // The admin API takes it.
    let (status, body) = app.admin_get(token, "/audit").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Discovery lists the grant.
    let metadata: Value = app
        .api
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        metadata["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("client_credentials")),
        "{metadata}"
    );
}

#[tokio::test]
async fn the_client_credentials_grant_refuses_what_rfc_6749_refuses() {
    let app = spawn_app().await;
    let client_id = app.admin_client(AdminScope::Read).await;

    // A scope the client is not allowed.
    let response = app
        .token(
            &[("grant_type", "client_credentials"), ("scope", ADMIN_SCOPE)],
            Some((&client_id, SECRET)),
        )
        .await;
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_scope").await;

    // The wrong secret.
    let response = app
        .token(
            &[("grant_type", "client_credentials")],
            Some((&client_id, "not-the-secret-0123456789abcdefgh")),
        )
        .await;
    assert_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;

    // A client not allowed the grant (the default grants).
    app.add_client("web", false).await;
    let response = app
        .token(
            &[("grant_type", "client_credentials")],
            Some(("web", SECRET)),
        )
        .await;
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "unauthorized_client").await;

    // A public client, even one registered with the grant (the config
    // check refuses that registration; the endpoint refuses it too).
    let public = switchyard::config::ClientSettings {
        client_id: "spa".into(),
        public: true,
        grant_types: vec![GrantType::ClientCredentials],
        scopes: vec![ADMIN_SCOPE.into()],
        ..Default::default()
    }
    .to_client(None, ClientSource::Cli);
    app.state.db.create_client(&public).await.unwrap();
    let response = app
        .token(
            &[("grant_type", "client_credentials"), ("client_id", "spa")],
            None,
        )
        .await;
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "unauthorized_client").await;

    // Admin scopes do not share a token with another API's.
    machine(&app, "mixed", &[ADMIN_SCOPE, "reports:read"]).await;
    let (status, body) = app.client_credentials("mixed", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_scope");
    let (status, body) = app.client_credentials("mixed", Some("reports:read")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // An audience the scopes are not for.
    let response = app
        .token(
            &[
                ("grant_type", "client_credentials"),
                ("audience", "https://elsewhere.example/api/v2/"),
            ],
            Some((&client_id, SECRET)),
        )
        .await;
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "access_denied").await;
    // The audience the scopes are for is accepted.
    let audience = admin_audience(&app.issuer);
    let response = app
        .token(
            &[
                ("grant_type", "client_credentials"),
                ("audience", &audience),
            ],
            Some((&client_id, SECRET)),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_client_credentials_token_is_refused_at_userinfo() {
    let app = spawn_app().await;
    let admin = app.admin_token(AdminScope::Write).await;
    let refused = app.userinfo(&admin).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(
        refused
            .headers()
            .get("www-authenticate")
            .is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")),
    );

    // A token for the ordinary audience: it verifies, but names no user.
    machine(&app, "reports", &["reports:read"]).await;
    let (status, body) = app.client_credentials("reports", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(jwt_claims(token)["aud"], app.issuer.as_str());
    let refused = app.userinfo(token).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("not for a user"),
        "{body}"
    );
    // Nor does the admin API take it.
    let (status, _) = app.admin_get(token, "/audit").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_admin_api_refuses_users_tokens_and_tokens_without_the_scope() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;

    // No token: 401, a Bearer challenge, a problem+json body.
    let response = audit_without_token(&app).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response
        .headers()
        .get("www-authenticate")
        .expect("a challenge")
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 401);
    assert!(problem["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(problem["detail"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(problem["type"].as_str().is_some(), "{problem}");

    // A user's access token (the application audience): 401.
    let tokens = app.tokens_for_alice().await;
    let user_token = tokens["access_token"].as_str().unwrap();
    let (status, problem) = app.admin_get(user_token, "/audit").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");

    // Garbage: 401.
    let (status, _) = app.admin_get("not.a.token", "/audit").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // An admin token whose client has since lost the admin scope: 403.
    let token = app.admin_token(AdminScope::Read).await;
    let client_id = app.admin_client(AdminScope::Read).await;
    let mut client = app.state.db.get_client(&client_id).await.unwrap().unwrap();
    client.scopes = vec!["reports:read".into()];
    app.state.db.upsert_client(&client).await.unwrap();
    let (status, problem) = app.admin_get(&token, "/audit").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["status"], 403);
}

#[tokio::test]
async fn a_read_only_token_reads_but_cannot_change() {
    let app = spawn_app().await;
    let read = app.admin_token(AdminScope::Read).await;
    let (status, _) = app.admin_get(&read, "/audit").await;
    assert_eq!(status, StatusCode::OK);
    let operator = verify_admin_token(&app.state, &read).await.unwrap();
    assert_eq!(operator.access, Access::Read);
    let refused = operator.require_write().unwrap_err();
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let write = app.admin_token(AdminScope::Write).await;
    let operator = verify_admin_token(&app.state, &write).await.unwrap();
    assert_eq!(operator.access, Access::Write);
    assert!(operator.require_write().is_ok());
    assert_eq!(
        operator.actor,
        Actor::Client(app.admin_client(AdminScope::Write).await)
    );
}

#[tokio::test]
async fn a_deleted_clients_token_and_an_expired_token_are_refused() {
    let app = spawn_app().await;
    let token = app.admin_token(AdminScope::Write).await;
    let client_id = app.admin_client(AdminScope::Write).await;
    assert!(app.state.db.delete_client(&client_id).await.unwrap());
    let (status, problem) = app.admin_get(&token, "/audit").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");

    // Expired a while ago, otherwise as the grant makes it.
    let client_id = app.admin_client(AdminScope::Read).await;
    let keys = app.state.keys.current();
    let key = keys.active(app.state.signing_alg).unwrap();
    let now = switchyard::store::now();
    let claims = json!({
        "iss": app.issuer, "sub": client_id, "client_id": client_id,
        "aud": admin_audience(&app.issuer),
        "exp": now - 600, "iat": now - 900, "jti": random_token(), "scope": ADMIN_READ_SCOPE,
    });
    let expired =
        switchyard::tokens::jwt::sign(key, switchyard::tokens::jwt::ACCESS_TOKEN_TYP, &claims)
            .unwrap();
    let (status, _) = app.admin_get(&expired, "/audit").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// The `Location` of a page request with the admin cookie.
async fn page_with_cookie(
    app: &TestApp,
    path: &str,
    cookie: &(String, String),
) -> reqwest::Response {
    app.api
        .get(app.url(path))
        .header("cookie", format!("{}={}", cookie.0, cookie.1))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_expired_admin_session_is_sent_to_sign_in() {
    let app = spawn_app().await;
    let cookie = app.admin_session("ops@example.com").await;
    let page = page_with_cookie(&app, "/admin/audit", &cookie).await;
    assert_eq!(page.status(), StatusCode::OK);

    // Idle past its timeout: the store forgot it.
    app.state
        .sessions
        .delete(&AdminSession::key(&cookie.1))
        .await
        .unwrap();
    let page = page_with_cookie(&app, "/admin/audit?kind=admin.", &cookie).await;
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(page.headers()),
        "/admin/login?return_to=%2Fadmin%2Faudit%3Fkind%3Dadmin."
    );
    // The API answers 401 in its own shape.
    let response = app
        .api
        .get(app.url(&format!("{}/audit", switchyard::admin::API)))
        .header("cookie", format!("{}={}", cookie.0, cookie.1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // An operator whose role was revoked loses the open session too.
    let cookie = app.admin_session("ops@example.com").await;
    let user = app
        .state
        .db
        .find_user_by_login("ops@example.com")
        .await
        .unwrap()
        .unwrap();
    app.state.db.revoke_operator(&user.id).await.unwrap();
    let page = page_with_cookie(&app, "/admin/audit", &cookie).await;
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_cross_site_form_post_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let cookie = app.admin_session("ops@example.com").await;
    let key = AdminSession::key(&cookie.1);
    for form in [vec![], vec![("csrf", "forged")]] {
        let response = app
            .api
            .post(app.url("/admin/logout"))
            .header("cookie", format!("{}={}", cookie.0, cookie.1))
            .header("origin", "https://evil.example")
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{form:?}");
        assert!(
            app.state
                .sessions
                .get_json::<AdminSession>(&key)
                .await
                .unwrap()
                .is_some(),
            "the session survives a forged sign-out"
        );
    }
    // The session's own token signs out.
    let session: AdminSession = app.state.sessions.get_json(&key).await.unwrap().unwrap();
    let response = app
        .api
        .post(app.url("/admin/logout"))
        .header("cookie", format!("{}={}", cookie.0, cookie.1))
        .form(&[("csrf", session.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cleared = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert!(cleared.contains("SameSite=Strict"), "{cleared}");
    assert!(
        app.state
            .sessions
            .get_json::<AdminSession>(&key)
            .await
            .unwrap()
            .is_none()
    );
}

/// Signs `email` in to the dashboard over HTTP, as a browser without
/// JavaScript would: `/admin/login`, the login pages, the callback. The
/// callback's answer.
async fn sign_in_over_http(
    app: &TestApp,
    browser: &reqwest::Client,
    email: &str,
) -> reqwest::Response {
    sign_in_over_http_from(app, browser, email, "same-origin").await
}

/// [`sign_in_over_http`], the callback arriving with `Sec-Fetch-Site:
/// {fetch_site}`.
async fn sign_in_over_http_from(
    app: &TestApp,
    browser: &reqwest::Client,
    email: &str,
    fetch_site: &str,
) -> reqwest::Response {
    let start = browser
        .get(app.url("/admin/login?return_to=%2Fadmin%2Faudit"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let set = start.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("SameSite=Lax") && set.contains("HttpOnly"),
        "{set}"
    );
    let authorize = location(start.headers());
    assert!(authorize.starts_with("/authorize?"), "{authorize}");
    let query = query_of(&app.url(&authorize));
    assert_eq!(query["client_id"], "switchyard-admin");
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["redirect_uri"], app.url("/admin/callback"));
    let to_login = browser.get(app.url(&authorize)).send().await.unwrap();
    assert_eq!(to_login.status(), StatusCode::SEE_OTHER);
    let done = app
        .login(browser, &location(to_login.headers()), email, PASSWORD)
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let callback = location(done.headers());
    assert!(
        callback.starts_with(&app.url("/admin/callback?")),
        "{callback}"
    );
    browser
        .get(&callback)
        .header("sec-fetch-site", fetch_site)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn only_operators_get_an_admin_session() {
    let app = spawn_app().await;
    app.add_user("bob@example.com", PASSWORD).await;
    let browser = browser();
    let refused = sign_in_over_http(&app, &browser, "bob@example.com").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let set_cookies: Vec<String> = refused
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let admin_cookie = AdminSession::cookie_name(&app.state);
    assert!(
        !set_cookies
            .iter()
            .any(|c| c.starts_with(&format!("{admin_cookie}="))),
        "{set_cookies:?}"
    );
    let page = refused.text().await.unwrap();
    assert!(page.contains("This account is not an operator"), "{page}");
    let page = browser.get(app.url("/admin/audit")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER, "no session");

    // An operator signs in and lands where they were going.
    let ops = app.add_user("ops@example.com", PASSWORD).await;
    app.state
        .db
        .grant_operator(&ops.id, switchyard::store::now())
        .await
        .unwrap();
    let browser = switchyard_kit::http::browser();
    let signed_in = sign_in_over_http(&app, &browser, "ops@example.com").await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(signed_in.headers()), "/admin/audit");
    let session_cookie = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with(&format!("{admin_cookie}=")))
        .expect("the admin session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(session_cookie.contains(attribute), "{session_cookie}");
    }
    let page = browser.get(app.url("/admin/audit")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("admin_signed_in"),
        "the sign-in is on the trail"
    );
    assert!(
        html.contains("admin_sign_in_refused"),
        "so is bob's refusal"
    );

    // Through another site (the upstream's pages), the callback answers
    // with a page of its own that moves on, so the next request is
    // same-site and carries the SameSite=Strict cookie.
    let browser = switchyard_kit::http::browser();
    let signed_in = sign_in_over_http_from(&app, &browser, "ops@example.com", "cross-site").await;
    assert_eq!(signed_in.status(), StatusCode::OK);
    assert!(
        signed_in
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with(&format!("{admin_cookie}=")))
    );
    let html = signed_in.text().await.unwrap();
    // (The template escapes `/` as `&#x2f;`, which the browser reads back.)
    let html = html.replace("&#x2f;", "/");
    assert!(
        html.contains(r#"<meta http-equiv="refresh" content="0; url=/admin/audit">"#),
        "{html}"
    );
    assert!(html.contains(r#"<a href="/admin/audit">Continue to the dashboard</a>"#));

    // A replayed callback opens nothing.
    let again = browser
        .get(app.url("/admin/callback?code=x&state=y"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_audit_trail_filters_and_pages() {
    let app = spawn_app().await;
    let person = Operator {
        actor: Actor::User("local|ops".into()),
        access: Access::Write,
    };
    let machine = Operator {
        actor: Actor::Client("ops-bot".into()),
        access: Access::Write,
    };
    for i in 0..5 {
        record_change(
            &app.state,
            &person,
            "user.pin",
            &format!("local|u{i}"),
            json!({"pinned": null}),
            json!({"pinned": "local"}),
        )
        .await
        .unwrap();
    }
    record_change(
        &app.state,
        &machine,
        "cutover.update",
        "cutover",
        json!({"phase": "shadow"}),
        json!({"phase": "local"}),
    )
    .await
    .unwrap();
    let token = app.admin_token(AdminScope::Read).await;

    let (status, body) = app.admin_get(&token, "/audit?kind=admin.").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 6);
    assert_eq!(events[0]["kind"], "admin.cutover.update", "newest first");
    assert_eq!(events[0]["actor"], "client:ops-bot");
    assert_eq!(events[0]["detail"]["after"]["phase"], "local");
    assert!(events[0]["id"].as_i64().unwrap() > events[1]["id"].as_i64().unwrap());
    assert_eq!(body["next_before"], Value::Null);

    let (_, body) = app
        .admin_get(&token, "/audit?actor=user%3Alocal%7Cops&limit=2")
        .await;
    let first = body["events"].as_array().unwrap().clone();
    assert_eq!(first.len(), 2);
    let cursor = body["next_before"].as_i64().expect("a next page");
    let (_, body) = app
        .admin_get(
            &token,
            &format!("/audit?actor=user%3Alocal%7Cops&limit=2&before={cursor}"),
        )
        .await;
    let second = body["events"].as_array().unwrap();
    assert_eq!(second.len(), 2);
    assert!(second[0]["id"].as_i64().unwrap() < cursor);

    let (_, body) = app.admin_get(&token, "/audit?kind=admin%25").await;
    assert_eq!(
        body["events"].as_array().unwrap().len(),
        0,
        "% is no wildcard"
    );
    let (_, body) = app.admin_get(&token, "/audit?user=local%7Cops").await;
    assert_eq!(body["events"].as_array().unwrap().len(), 5);
    let (_, body) = app.admin_get(&token, "/audit?until=2000-01-01").await;
    assert_eq!(body["events"].as_array().unwrap().len(), 0);
    let (_, body) = app
        .admin_get(&token, "/audit?since=2000-01-01&kind=admin.user")
        .await;
    assert_eq!(body["events"].as_array().unwrap().len(), 5);

    for bad in [
        "limit=0",
        "limit=201",
        "limit=x",
        "since=yesterday",
        "before=x",
    ] {
        let (status, problem) = app.admin_get(&token, &format!("/audit?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(problem["status"], 400, "{bad}: {problem}");
    }

    // The page shows a change as before → after.
    let cookie = app.admin_session("ops@example.com").await;
    let page = page_with_cookie(&app, "/admin/audit?kind=admin.cutover", &cookie).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("admin.cutover.update"));
    assert!(
        html.contains("<span class=\"before\">shadow</span>"),
        "{html}"
    );
    assert!(html.contains("<span class=\"after\">local</span>"));
    assert!(!html.contains("admin.user.pin"));
    assert!(!html.contains("None") && !html.contains("null"), "{html}");
}

#[tokio::test]
async fn operators_are_granted_by_the_cli_and_the_config_file() {
    let iso = isolated().await;
    let cli = |args: &[&str]| {
        let out = run_cli(&iso, args, None, &[]);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    for email in [
        "cli-ops@example.com",
        "file-ops@example.com",
        "gone@example.com",
    ] {
        cli(&["users", "add", "--email", email]);
    }
    cli(&["users", "grant-admin", "cli-ops@example.com"]);
    cli(&["users", "grant-admin", "gone@example.com"]);
    assert!(cli(&["users", "revoke-admin", "gone@example.com"]).contains("no longer"));
    let again = run_cli(
        &iso,
        &["users", "revoke-admin", "gone@example.com"],
        None,
        &[],
    );
    assert!(!again.status.success(), "revoking a non-operator fails");
    // A machine client with only the client credentials grant needs no
    // redirect URI.
    let added = cli(&[
        "clients",
        "add",
        "--id",
        "ops-machine",
        "--grant-type",
        "client_credentials",
        "--scope",
        ADMIN_READ_SCOPE,
    ]);
    let secret = added
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .expect("a generated secret")
        .to_string();
    let bad = run_cli(
        &iso,
        &[
            "clients",
            "add",
            "--id",
            "bad",
            "--scope",
            "a\"b",
            "--redirect-uri",
            REDIRECT,
        ],
        None,
        &[],
    );
    assert!(!bad.status.success());
    let typo = run_cli(
        &iso,
        &[
            "clients",
            "add",
            "--id",
            "typo",
            "--grant-type",
            "client_credentials",
            "--scope",
            "switchyard:admin:write",
        ],
        None,
        &[],
    );
    assert!(!typo.status.success());
    assert!(String::from_utf8_lossy(&typo.stderr).contains("not a Switchyard scope"));
    let no_redirect = run_cli(&iso, &["clients", "add", "--id", "web2"], None, &[]);
    assert!(
        !no_redirect.status.success(),
        "a sign-in client needs a redirect URI"
    );

    let app = spawn_app_on(iso, |s| {
        s.admin.operators = vec!["file-ops@example.com".into(), "later@example.com".into()];
    })
    .await;
    let db = &app.state.db;
    let id = |email: &'static str| async move {
        db.find_user_by_login(email).await.unwrap().unwrap().id
    };
    assert!(
        db.is_operator(&id("cli-ops@example.com").await)
            .await
            .unwrap()
    );
    assert!(
        db.is_operator(&id("file-ops@example.com").await)
            .await
            .unwrap()
    );
    assert!(!db.is_operator(&id("gone@example.com").await).await.unwrap());

    let token = app.admin_token(AdminScope::Read).await;
    let (_, body) = app.admin_get(&token, "/audit?kind=admin.operator").await;
    let events = body["events"].as_array().unwrap();
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("admin.operator.grant", "config"),
            ("admin.operator.revoke", "cli"),
            ("admin.operator.grant", "cli"),
            ("admin.operator.grant", "cli"),
        ]
        .map(|(k, a)| (k.to_string(), a.to_string()))
    );

    // The CLI's machine client gets a read-only admin token.
    let response = app
        .token(
            &[("grant_type", "client_credentials")],
            Some(("ops-machine", &secret)),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["scope"], ADMIN_READ_SCOPE);

    // The dashboard's client is there, and a restart's file sync keeps it.
    let builtin = db.get_client("switchyard-admin").await.unwrap().unwrap();
    assert_eq!(builtin.source, ClientSource::Builtin);
    assert!(builtin.public);
    assert_eq!(builtin.redirect_uris, vec![app.url("/admin/callback")]);
}

#[tokio::test]
async fn an_operator_signs_in_and_out_in_chromium() {
    if !chrome::available("an_operator_signs_in_and_out_in_chromium") {
        return;
    }
    let app = spawn_app().await;
    let chrome = &Chrome::start(env!("CARGO_TARGET_TMPDIR"), "admin_sign_in").await;
    // Going to a dashboard page without a session starts the sign-in.
    chrome.goto(&app.url("/admin/audit")).await;
    chrome.wait_for_url(&app.url("/login?")).await;
    chrome
        .wait_for(
            "the identifier page",
            "return document.querySelector('#username')",
            Duration::from_secs(20),
        )
        .await;
    chrome.screenshot("identifier").await;

    app.admin_sign_in_to(chrome, "ops@example.com", "/admin/audit")
        .await;
    chrome
        .wait_for(
            "the audit trail",
            "return document.querySelector('table.audit')",
            Duration::from_secs(20),
        )
        .await;
    chrome.screenshot("audit").await;
    assert_eq!(chrome.text("h1").await, "Audit trail");
    let trail = chrome.text("table.audit").await;
    assert!(trail.contains("admin_signed_in"), "{trail}");
    assert!(
        !trail.contains("None") && !trail.contains("null"),
        "{trail}"
    );
    assert_eq!(chrome.text(".who").await, "ops@example.com");

    // Filtering by a kind keeps the value in the form.
    chrome.type_into("#f-kind", "admin_signed").await;
    chrome.click(".filters button[type=submit]").await;
    chrome.wait_for_url(&app.url("/admin/audit?")).await;
    assert_eq!(chrome.value("#f-kind").await, "admin_signed");
    chrome.screenshot("filtered").await;

    chrome.click(".signout button[type=submit]").await;
    chrome
        .wait_for(
            "the signed-out page",
            "return document.title === 'Signed out'",
            Duration::from_secs(20),
        )
        .await;
    chrome.screenshot("signed-out").await;
    assert_eq!(chrome.text("h1").await, "Signed out");

    // The dashboard asks for the password again.
    chrome.click("a[href='/admin/login']").await;
    chrome.wait_for_url(&app.url("/login?")).await;
    chrome
        .wait_for(
            "the identifier page again",
            "return document.querySelector('#username')",
            Duration::from_secs(20),
        )
        .await;
    chrome.screenshot("signed-out-then-login").await;

    // Someone who is not an operator gets through the login pages and no
    // further.
    app.add_user("bob@example.com", PASSWORD).await;
    chrome.type_into("#username", "bob@example.com").await;
    chrome.click("button[type=submit]").await;
    chrome
        .wait_for(
            "the password page",
            "return document.querySelector('#password')",
            Duration::from_secs(20),
        )
        .await;
    chrome.type_into("#password", PASSWORD).await;
    chrome.click("button[type=submit]").await;
    chrome
        .wait_for(
            "the refusal",
            "return document.title === 'Not an operator'",
            Duration::from_secs(20),
        )
        .await;
    chrome.screenshot("not-an-operator").await;
    let message = chrome.text("main").await;
    assert!(
        message.contains("This account is not an operator"),
        "{message}"
    );
    chrome.goto(&app.url("/admin/audit")).await;
    chrome.wait_for_url(&app.url("/login?")).await;
}
