//! Tokens naming a signing key nobody has: the keys are reloaded for them
//! at most once per interval, whoever sends them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;

use crate::helpers::*;

/// `token` with its header's `kid` replaced (its signature no longer
/// matters: the key lookup comes first).
fn with_kid(token: &str, kid: &str) -> String {
    let mut header = jwt_header(token);
    header["kid"] = kid.into();
    let rest = token.split_once('.').unwrap().1;
    let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
    format!("{header}.{rest}")
}

fn reloads(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("switchyard_signing_key_reloads_total")
                && l.contains("what=\"unknown_kid\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn many_tokens_with_unknown_kids_reload_the_keys_at_most_once() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let tokens = app.tokens_for_alice().await;
    let access = tokens["access_token"].as_str().unwrap();
    for i in 0..50 {
        let forged = with_kid(access, &format!("made-up-{i}"));
        let r = app.userinfo(&forged).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "token {i}");
    }
    assert_eq!(reloads(&app.metrics().await), 1, "{}", app.metrics().await);
    // The real token is unaffected.
    assert_eq!(app.userinfo(access).await.status(), StatusCode::OK);
}
