//! The Management API as a backend uses it: Auth0's own Python SDK
//! (auth0-python 6.8.0, `tests/api/auth0_sdk.py`) gets a token with the
//! client credentials grant and creates, reads, pages, searches, updates,
//! tickets and deletes users on Switchyard. The script checks each answer
//! through the SDK's own models and errors; this test then checks
//! Switchyard's store, which the script cannot see.

use std::path::Path;
use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::json;
use switchyard::store::{NewUser, Profile};
use switchyard_kit::process::python_module;

use crate::helpers::*;
use crate::mgmt_helpers::ALL_SCOPES;

/// More than two of the script's pages (50 users each), so its pager
/// goes through several.
const SEEDED: usize = 120;
/// Auth0's default database connection: what Switchyard's users belong to
/// when it has no upstream.
const CONNECTION: &str = "Username-Password-Authentication";
const PREFIX: &str = "sdk-";

fn seeded_email(i: usize) -> String {
    format!("{PREFIX}seed-{i:03}@example.com")
}

#[tokio::test]
async fn auth0_python_sdk_manages_users() {
    if !python_module("auth0.management", "auth0-python") {
        return;
    }
    let app = spawn_app().await;
    for i in 0..SEEDED {
        // No password: the listing does not need one, and hashing 120
        // would only slow the test.
        let new = NewUser {
            profile: Profile {
                email: Some(seeded_email(i)),
                email_verified: true,
                name: Some(format!("Seeded {i}")),
                ..Default::default()
            },
            ..Default::default()
        };
        app.state.db.create_user(&new, None).await.unwrap();
    }
    let before = app.state.db.list_users(None, 10_000).await.unwrap().len();
    assert_eq!(before, SEEDED);
    let client_id = app.management_client(ALL_SCOPES).await;
    // The SDK is given the domain and builds the audience from it, as
    // Auth0's SDKs do: `https://{domain}/api/v2/`.
    let audience = app.management_audience();
    let domain = audience
        .strip_prefix("https://")
        .and_then(|d| d.strip_suffix("/api/v2/"))
        .unwrap()
        .to_string();
    let kept = seeded_email(7);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/auth0_sdk.py");
    // The SDK is synchronous: a blocking thread waits for it while the
    // test's runtime goes on serving the app.
    let mut command = Command::new("python3");
    command
        .arg(script)
        .args(["--domain", &domain])
        .args(["--client-id", &client_id])
        .args(["--client-secret", SECRET])
        .args(["--connection", CONNECTION])
        .args(["--email-prefix", PREFIX])
        .args(["--expected-users", &before.to_string()])
        .args(["--updated-email", &kept])
        .env("PYTHONUNBUFFERED", "1");
    let output = tokio::task::spawn_blocking(move || command.output().expect("python3 runs"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "auth0_sdk.py failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    println!("{stdout}");
    assert!(stdout.contains("all steps passed"), "{stdout}");

    // The created user is gone, the refused one never existed.
    let db = &app.state.db;
    for gone in [
        format!("{PREFIX}created@example.com"),
        format!("{PREFIX}weak@example.com"),
    ] {
        assert!(
            db.find_user_by_login(&gone).await.unwrap().is_none(),
            "{gone} is in the store"
        );
    }
    assert_eq!(db.list_users(None, 10_000).await.unwrap().len(), SEEDED);

    // The kept user carries both updates, merged at the first level.
    let user = db.find_user_by_login(&kept).await.unwrap().unwrap();
    assert_eq!(
        user.user_metadata,
        json!({"theme": "dark", "locale": "fr"}),
        "{user:?}"
    );
    assert_eq!(user.app_metadata, json!({"plan": "pro"}), "{user:?}");
    // And nothing else of it changed.
    assert_eq!(user.profile.name.as_deref(), Some("Seeded 7"));
    assert!(!user.blocked);
    // The API reads back what the store holds.
    let token = app.management_token(&["read:users"]).await;
    let (status, _, body) = app
        .mgmt(
            &token,
            Method::GET,
            &format!("/users-by-email?email={kept}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body[0]["user_metadata"], user.user_metadata, "{body}");
    assert_eq!(body[0]["app_metadata"], user.app_metadata, "{body}");
    let untouched = db
        .find_user_by_login(&seeded_email(8))
        .await
        .unwrap()
        .unwrap();
    assert!(
        untouched.user_metadata.is_null() || untouched.user_metadata == json!({}),
        "{untouched:?}"
    );
}
