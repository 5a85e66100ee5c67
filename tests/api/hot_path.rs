//! The token endpoint serves clients and users from recent copies
//! (`store::recent`): what an operator changes with the CLI, another
//! process, applies within 2 s, and whether a user may have tokens at all
//! is never decided from a copy.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use switchyard_kit::http::jwt_claims;

use crate::helpers::*;

/// The bound within which a change made elsewhere must apply here.
const BOUND: Duration = Duration::from_secs(2);

fn cli_ok(app: &TestApp, args: &[&str]) -> String {
    let out = run_cli(&app._isolated, args, None, &[]);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn refreshed(app: &TestApp, token: &str) -> Value {
    let response = app.refresh(token).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// Alice signed in to `web` and refreshed once, which leaves copies of
/// her and of the client in memory: her refresh token.
async fn refreshed_once(app: &TestApp) -> String {
    let tokens = app.tokens_for_alice().await;
    refreshed(app, tokens["refresh_token"].as_str().unwrap()).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_user_blocked_by_the_cli_is_refused_at_the_very_next_refresh_and_unblocked_at_once() {
    let app = spawn_app().await;
    let alice = app.with_alice_and_web().await;
    let token = &refreshed_once(&app).await;

    cli_ok(&app, &["users", "block", &alice.id]);
    assert_oauth_error(
        app.refresh(token).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // Refused, not spent: the family is whole, so unblocking gives the
    // same token its grant back — at once, though the last copy said
    // blocked.
    cli_ok(&app, &["users", "unblock", &alice.id]);
    refreshed(&app, token).await;
}

#[tokio::test]
async fn a_profile_edit_shows_in_the_next_id_token_at_once_here_and_within_two_seconds_from_the_cli()
 {
    let app = spawn_app().await;
    let alice = app.with_alice_and_web().await;
    let mut token = refreshed_once(&app).await;

    // Through the Management API of this instance: at once.
    let management = app.management_token(&["update:users"]).await;
    let (status, _, _) = app
        .mgmt(
            &management,
            reqwest::Method::PATCH,
            &format!("/users/{}", crate::mgmt_api::enc(&alice.id)),
            Some(serde_json::json!({"name": "Alice Here"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let next = refreshed(&app, &token).await;
    assert_eq!(
        jwt_claims(next["id_token"].as_str().unwrap())["name"],
        "Alice Here"
    );
    token = next["refresh_token"].as_str().unwrap().to_string();

    // Through the CLI, another process: within the bound.
    cli_ok(
        &app,
        &["users", "update", &alice.id, "--name", "Alice Elsewhere"],
    );
    let changed = Instant::now();
    loop {
        let next = refreshed(&app, &token).await;
        token = next["refresh_token"].as_str().unwrap().to_string();
        if jwt_claims(next["id_token"].as_str().unwrap())["name"] == "Alice Elsewhere" {
            break;
        }
        assert!(
            changed.elapsed() < BOUND,
            "the new name did not reach the ID token within {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_client_deleted_by_the_cli_is_refused_within_two_seconds_and_one_added_works_at_once() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let mut token = refreshed_once(&app).await;

    // A client the endpoint has never seen, then added by the CLI: its
    // first request works, however recently the unknown id was refused.
    let unknown = app
        .token(
            &[("grant_type", "client_credentials")],
            Some(("late", "late-secret-0123456789abcdef0123456789")),
        )
        .await;
    assert_oauth_error(unknown, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let added = cli_ok(
        &app,
        &[
            "clients",
            "add",
            "--id",
            "late",
            "--grant-type",
            "client_credentials",
            "--scope",
            "switchyard:admin:read",
        ],
    );
    let secret = added
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .expect("a generated secret");
    let response = app
        .token(
            &[("grant_type", "client_credentials")],
            Some(("late", secret)),
        )
        .await;
    let status = response.status();
    assert_eq!(status, StatusCode::OK, "{}", response.text().await.unwrap());

    cli_ok(&app, &["clients", "delete", "web"]);
    let deleted = Instant::now();
    loop {
        let response = app.refresh(&token).await;
        if response.status() == StatusCode::UNAUTHORIZED {
            assert_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
            break;
        }
        assert_eq!(response.status(), StatusCode::OK);
        token = response.json::<Value>().await.unwrap()["refresh_token"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            deleted.elapsed() < BOUND,
            "the deleted client still got tokens after {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
