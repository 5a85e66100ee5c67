//! The Auth0-compatible Management API on Switchyard with no upstream:
//! who may call it, the users endpoints' shapes and errors, paging and
//! its cap, the rate limit, and what a deletion does to the user's
//! tokens. Every request is made as a backend makes it, with a token from
//! the client credentials grant.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard::store::{NewUser, Profile};

use crate::helpers::*;
use crate::mgmt_helpers::ALL_SCOPES;

/// Auth0's error body: exactly these members.
pub fn assert_auth0_error(body: &Value, status: StatusCode, code: &str) {
    assert_eq!(body["statusCode"], status.as_u16(), "{body}");
    assert_eq!(body["error"], status.canonical_reason().unwrap(), "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(body["errorCode"], code, "{body}");
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4, "{body}");
}

#[tokio::test]
async fn tokens_name_the_api_and_scopes_gate_each_endpoint() {
    let app = spawn_app().await;
    let alice = app.with_alice_and_web().await;

    // The grant as an Auth0 SDK asks: audience, no scope → every scope
    // the client is allowed on that API, and the token's `aud` is the API.
    let client = app.management_client(&["read:users"]).await;
    let (status, body) = app
        .management_grant(&client, &app.management_audience())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "read:users");
    let claims = switchyard_kit::http::jwt_claims(body["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], app.management_audience());
    assert_eq!(claims["sub"], client);
    // The issuer's own spelling of the API names it too.
    let (status, _) = app.management_grant(&client, &app.url("/api/v2/")).await;
    assert_eq!(status, StatusCode::OK);
    // Another API's audience is refused.
    let (status, body) = app
        .management_grant(&client, "https://elsewhere.example/api/v2/")
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("access_denied")),
        "{body}"
    );

    let read = app.management_token(&["read:users"]).await;
    let (status, _, body) = app
        .mgmt(
            &read,
            Method::GET,
            &format!("/users/{}", enc(&alice.id)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Without update:users, no PATCH; nothing changed.
    let (status, _, body) = app
        .mgmt(
            &read,
            Method::PATCH,
            &format!("/users/{}", enc(&alice.id)),
            Some(json!({"name": "Mallory"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_auth0_error(&body, StatusCode::FORBIDDEN, "insufficient_scope");
    assert_eq!(
        app.state
            .db
            .get_user(&alice.id)
            .await
            .unwrap()
            .unwrap()
            .profile
            .name
            .as_deref(),
        Some("Alice Example")
    );

    // A login's access token (another audience) cannot call the API.
    let tokens = app.tokens_for_alice().await;
    let login_token = tokens["access_token"].as_str().unwrap();
    let (status, headers, body) = app.mgmt(login_token, Method::GET, "/users", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(headers.get("www-authenticate").is_some());
    // Nor an admin token, nor none, nor garbage.
    let admin = app
        .admin_token(crate::admin_helpers::AdminScope::Write)
        .await;
    assert_eq!(
        app.mgmt(&admin, Method::GET, "/users", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.mgmt("not-a-token", Method::GET, "/users", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    // A deleted client's tokens stop working within the recheck bound
    // (the token was verified moments ago, so it is remembered until then).
    assert_eq!(
        app.mgmt(&read, Method::GET, "/users", None).await.0,
        StatusCode::OK
    );
    app.state
        .db
        .delete_client(&app.management_client(&["read:users"]).await)
        .await
        .unwrap();
    let deleted = std::time::Instant::now();
    loop {
        let status = app.mgmt(&read, Method::GET, "/users", None).await.0;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            deleted.elapsed()
                < switchyard::api_v2::access::RECHECK + std::time::Duration::from_secs(1),
            "a deleted client's token still works after the recheck bound"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A user id as one path segment.
pub fn enc(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[tokio::test]
async fn users_are_created_read_updated_and_deleted_in_auth0s_shapes() {
    let app = spawn_app().await;
    let token = app.management_token(ALL_SCOPES).await;

    let (status, _, created) = app
        .mgmt(
            &token,
            Method::POST,
            "/users",
            Some(json!({
                "connection": "Username-Password-Authentication",
                "email": "dora@example.com",
                "password": "a long enough passphrase 42",
                "name": "Dora Explorer",
                "user_metadata": {"theme": "dark", "lang": "fr"},
                "app_metadata": {"plan": "gold"},
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["user_id"].as_str().unwrap().to_string();
    assert_eq!(created["email"], "dora@example.com");
    assert_eq!(created["email_verified"], false);
    assert_eq!(
        created["user_metadata"],
        json!({"theme": "dark", "lang": "fr"})
    );
    assert_eq!(created["app_metadata"], json!({"plan": "gold"}));
    assert_eq!(created["blocked"], false);
    assert_eq!(created["logins_count"], 0);
    assert_eq!(
        created["identities"][0]["connection"],
        "Username-Password-Authentication"
    );
    assert_eq!(created["identities"][0]["provider"], "auth0");
    assert_eq!(created["identities"][0]["isSocial"], false);
    let iso = regex_like_iso(created["created_at"].as_str().unwrap());
    assert!(iso, "{created}");
    assert!(created.get("password").is_none());
    // The password works on the login page.
    let stored = app.state.db.get_password(&id).await.unwrap().unwrap();
    let verified = app
        .state
        .passwords
        .verify(
            "a long enough passphrase 42".into(),
            Some(stored.hash.clone()),
        )
        .await
        .unwrap();
    assert!(matches!(
        verified,
        switchyard::password::Verified::Yes { .. }
    ));

    // Refusals, each in Auth0's shape and each changing nothing.
    for (body, status, code) in [
        (
            json!({"connection": "Username-Password-Authentication", "email": "dora@example.com", "password": "another long passphrase 42"}),
            StatusCode::CONFLICT,
            "auth0_idp_error",
        ),
        (
            json!({"connection": "Username-Password-Authentication", "email": "eve@example.com", "password": "short"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"connection": "Nope", "email": "eve@example.com", "password": "a long enough passphrase 42"}),
            StatusCode::BAD_REQUEST,
            "inexistent_connection",
        ),
        (
            json!({"email": "eve@example.com", "password": "a long enough passphrase 42"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"connection": "Username-Password-Authentication", "email": "eve@example.com", "password": "a long enough passphrase 42", "colour": "red"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ] {
        let (got, _, error) = app
            .mgmt(&token, Method::POST, "/users", Some(body.clone()))
            .await;
        assert_eq!(got, status, "{body} → {error}");
        assert_auth0_error(&error, status, code);
    }
    assert!(
        app.state
            .db
            .find_user_by_login("eve@example.com")
            .await
            .unwrap()
            .is_none()
    );

    // Read by id (with fields) and by email.
    let (status, _, read) = app
        .mgmt(
            &token,
            Method::GET,
            &format!("/users/{}?fields=email,user_id", enc(&id)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read, json!({"email": "dora@example.com", "user_id": id}));
    let (status, _, found) = app
        .mgmt(
            &token,
            Method::GET,
            "/users-by-email?email=DORA%40example.com",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["user_id"], id);
    let (_, _, none) = app
        .mgmt(
            &token,
            Method::GET,
            "/users-by-email?email=nobody%40example.com",
            None,
        )
        .await;
    assert_eq!(none, json!([]));
    let (status, _, error) = app
        .mgmt(&token, Method::GET, "/users/auth0%7Cnope", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_auth0_error(&error, StatusCode::NOT_FOUND, "inexistent_user");

    // PATCH merges metadata at the first level; null removes a key.
    let (status, _, updated) = app
        .mgmt(
            &token,
            Method::PATCH,
            &format!("/users/{}", enc(&id)),
            Some(json!({
                "name": "Dora the Explorer",
                "user_metadata": {"lang": null, "tz": "Europe/Paris"},
                "app_metadata": {"roles": ["admin"]},
                "blocked": true,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["name"], "Dora the Explorer");
    assert_eq!(
        updated["user_metadata"],
        json!({"theme": "dark", "tz": "Europe/Paris"})
    );
    assert_eq!(
        updated["app_metadata"],
        json!({"plan": "gold", "roles": ["admin"]})
    );
    assert_eq!(updated["blocked"], true);
    assert!(app.state.db.get_user(&id).await.unwrap().unwrap().blocked);
    // A weak password is refused and the old one stays.
    let (status, _, error) = app
        .mgmt(
            &token,
            Method::PATCH,
            &format!("/users/{}", enc(&id)),
            Some(json!({"password": "short"})),
        )
        .await;
    assert_auth0_error(&error, status, "invalid_body");
    let after = app.state.db.get_password(&id).await.unwrap().unwrap();
    assert_eq!(after.hash, stored.hash);

    // The list, as a page with totals, sorted.
    let (status, _, page) = app
        .mgmt(
            &token,
            Method::GET,
            "/users?include_totals=true&q=email%3A%22dora%40example.com%22",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        (
            page["total"].as_u64(),
            page["length"].as_u64(),
            page["start"].as_u64()
        ),
        (Some(1), Some(1), Some(0))
    );
    assert_eq!(page["users"][0]["user_id"], id);

    // The ticket is a link to the reset page.
    let (status, _, ticket) = app
        .mgmt(
            &token,
            Method::POST,
            "/tickets/password-change",
            Some(json!({"user_id": id})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ticket}");
    assert!(
        ticket["ticket"]
            .as_str()
            .unwrap()
            .starts_with(&app.url("/login/reset?token=")),
        "{ticket}"
    );

    // DELETE answers 204, twice; the user is gone.
    for _ in 0..2 {
        let (status, _, body) = app
            .mgmt(
                &token,
                Method::DELETE,
                &format!("/users/{}", enc(&id)),
                None,
            )
            .await;
        assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    }
    assert!(app.state.db.get_user(&id).await.unwrap().is_none());
    let events = app.state.db.recent_events(50).await.unwrap();
    for kind in ["api.user_created", "api.user_updated", "api.user_deleted"] {
        let e = events
            .iter()
            .find(|e| e.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} event"));
        assert_eq!(
            e.client_id.as_deref(),
            Some(app.management_client(ALL_SCOPES).await.as_str())
        );
    }
}

fn regex_like_iso(s: &str) -> bool {
    // 2026-12-06T20:01:02.000Z
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s.as_bytes()[19] == b'.'
}

#[tokio::test]
async fn a_deleted_users_refresh_tokens_stop_working() {
    let app = spawn_app().await;
    let alice = app.with_alice_and_web().await;
    let tokens = app.tokens_for_alice().await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let token = app.management_token(&["delete:users"]).await;
    let (status, _, _) = app
        .mgmt(
            &token,
            Method::DELETE,
            &format!("/users/{}", enc(&alice.id)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_oauth_error(
        app.refresh(&refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn paging_stops_at_the_first_1000_results_as_auth0_does() {
    let app = spawn_app().await;
    let hash = app.state.passwords.hash(PASSWORD.into()).await.unwrap();
    for i in 0..2500 {
        app.state
            .db
            .create_user(
                &NewUser {
                    id: None,
                    profile: Profile {
                        email: Some(format!("user{i:04}@example.com")),
                        ..Default::default()
                    },
                },
                (i == 0).then_some((hash.as_str(), "argon2id")),
            )
            .await
            .unwrap();
    }
    let token = app.management_token(&["read:users"]).await;
    let mut seen = std::collections::BTreeSet::new();
    for page in 0..10 {
        let (status, _, body) = app
            .mgmt(
                &token,
                Method::GET,
                &format!("/users?per_page=100&page={page}&include_totals=true&sort=email:1"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["total"], 2500);
        assert_eq!(body["start"], page * 100);
        assert_eq!(body["length"], 100);
        let emails: Vec<&str> = body["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["email"].as_str().unwrap())
            .collect();
        assert_eq!(emails[0], format!("user{:04}@example.com", page * 100));
        seen.extend(emails.iter().map(|e| e.to_string()));
    }
    assert_eq!(seen.len(), 1000);
    // The 11th page of 100 is past the cap.
    let (status, _, error) = app
        .mgmt(&token, Method::GET, "/users?per_page=100&page=10", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_auth0_error(&error, StatusCode::BAD_REQUEST, "invalid_paging");
    // More than 100 per page is refused; without totals the answer is a list.
    let (status, _, error) = app
        .mgmt(&token, Method::GET, "/users?per_page=101", None)
        .await;
    assert_auth0_error(&error, status, "invalid_query_string");
    let (_, _, list) = app
        .mgmt(&token, Method::GET, "/users?per_page=3&sort=email:-1", None)
        .await;
    let emails: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(
        emails,
        [
            "user2499@example.com",
            "user2498@example.com",
            "user2497@example.com"
        ]
    );
    // Unsupported query forms are refused by name, not answered wrongly.
    let (status, _, error) = app
        .mgmt(&token, Method::GET, "/users?q=name%3Aada*", None)
        .await;
    assert_auth0_error(&error, status, "invalid_query_string");
    // A created_at range.
    let (_, _, page) = app
        .mgmt(
            &token,
            Method::GET,
            "/users?include_totals=true&per_page=1&q=created_at%3A%5B2000-01-01%20TO%20*%5D",
            None,
        )
        .await;
    assert_eq!(page["total"], 2500);
    let (_, _, page) = app
        .mgmt(
            &token,
            Method::GET,
            "/users?include_totals=true&per_page=1&q=created_at%3A%7B*%20TO%202000-01-01%7D",
            None,
        )
        .await;
    assert_eq!(page["total"], 0);
}

#[tokio::test]
async fn each_client_has_a_token_bucket_with_auth0s_headers() {
    let app = spawn_app_with(|s| {
        s.management_api.burst = 3;
        s.management_api.requests_per_second = 0.5;
    })
    .await;
    let token = app.management_token(&["read:users"]).await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let (status, headers, _) = app.mgmt(&token, Method::GET, "/users", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-ratelimit-limit"], "3");
        let reset: i64 = headers["x-ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(reset >= switchyard::store::now());
        remaining.push(
            headers["x-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let (status, headers, error) = app.mgmt(&token, Method::GET, "/users", None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_auth0_error(&error, status, "too_many_requests");
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    // Another client has its own bucket.
    let other = app.management_token(&["read:users", "update:users"]).await;
    assert_eq!(
        app.mgmt(&other, Method::GET, "/users", None).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused_in_auth0s_shape() {
    let app = spawn_app_with(|s| s.management_api.max_body_bytes = 1024).await;
    let alice = app.with_alice_and_web().await;
    let token = app.management_token(&["update:users"]).await;
    let big = json!({"user_metadata": {"blob": "x".repeat(4096)}});
    let (status, _, error) = app
        .mgmt(
            &token,
            Method::PATCH,
            &format!("/users/{}", enc(&alice.id)),
            Some(big),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_auth0_error(&error, status, "payload_too_large");
    let (status, _, error) = app
        .mgmt(
            &token,
            Method::PATCH,
            &format!("/users/{}", enc(&alice.id)),
            None,
        )
        .await;
    assert_auth0_error(&error, status, "invalid_body");
}

#[tokio::test]
async fn a_backend_client_is_registered_with_the_cli_as_auth0_grants_an_api() {
    let app = spawn_app().await;
    let audience = app.management_audience();
    let env = [("SWITCHYARD_ISSUER", app.issuer.as_str())];
    let add = |extra: &[&str]| {
        let mut args = vec![
            "clients",
            "add",
            "--id",
            "backend",
            "--grant-type",
            "client_credentials",
        ];
        args.extend_from_slice(extra);
        run_cli(&app._isolated, &args, None, &env)
    };
    // A scope the API does not have, or another API, fails at once.
    let typo = add(&["--api", &audience, "--scope", "read:user"]);
    assert!(!typo.status.success());
    assert!(
        String::from_utf8_lossy(&typo.stderr).contains("read:users"),
        "{typo:?}"
    );
    let elsewhere = add(&[
        "--api",
        "https://elsewhere.example/api/v2/",
        "--scope",
        "read:users",
    ]);
    assert!(!elsewhere.status.success());
    let out = add(&[
        "--api",
        &audience,
        "--scope",
        "read:users",
        "--scope",
        "update:users",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .expect("a generated secret")
        .to_string();
    // The grant as Auth0's SDKs send it: a JSON body, the audience named.
    let response = app
        .api
        .post(app.url("/oauth/token"))
        .json(&json!({
            "grant_type": "client_credentials",
            "client_id": "backend",
            "client_secret": secret,
            "audience": audience,
            "organization": null,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["scope"], "read:users update:users");
    let token = body["access_token"].as_str().unwrap();
    let (status, _, _) = app.mgmt(token, Method::GET, "/users", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, error) = app.mgmt(token, Method::DELETE, "/users/x", None).await;
    assert_auth0_error(&error, status, "insufficient_scope");
}
