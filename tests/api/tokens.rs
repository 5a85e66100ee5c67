//! The token endpoint's grants: codes, PKCE, refresh rotation, revocation.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn tokens_carry_the_claims_oidc_core_and_rfc_9068_require() {
    let app = spawn_app().await;
    let alice = app.with_alice_and_web().await;
    let tokens = app.tokens_for_alice().await;
    let id = jwt_claims(tokens["id_token"].as_str().unwrap());
    assert_eq!(id["iss"], app.issuer);
    assert_eq!(id["sub"], alice.id);
    assert_eq!(id["aud"], "web");
    assert_eq!(id["nonce"], "n-456");
    for claim in ["exp", "iat", "auth_time", "at_hash", "sid"] {
        assert!(id.get(claim).is_some(), "ID token has {claim}");
    }
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(jwt_header(access)["typ"], "at+jwt");
    let at = jwt_claims(access);
    assert_eq!(at["aud"], app.issuer, "audience defaults to the issuer");
    assert_eq!(at["client_id"], "web");
    assert_eq!(at["sub"], alice.id);
    assert!(at["jti"].is_string());
    assert_eq!(tokens["token_type"], "Bearer");
}

#[tokio::test]
async fn access_token_audience_is_configurable() {
    let app = spawn_app_with(|s| s.tokens.audience = Some("https://api.example.com".into())).await;
    app.with_alice_and_web().await;
    let tokens = app.tokens_for_alice().await;
    assert_eq!(
        jwt_claims(tokens["access_token"].as_str().unwrap())["aud"],
        "https://api.example.com"
    );
    assert_eq!(
        app.userinfo(tokens["access_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_replayed_code_is_refused_and_revokes_the_tokens_it_issued() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let (verifier, challenge) = pkce();
    let params = app.alice_code(&browser(), Some(&challenge)).await;
    let first: Value = app
        .exchange(&params["code"], Some(&verifier))
        .await
        .json()
        .await
        .unwrap();
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(app.userinfo(access).await.status(), StatusCode::OK);

    assert_oauth_error(
        app.exchange(&params["code"], Some(&verifier)).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // RFC 6749 §4.1.2: what the code issued is revoked.
    assert_eq!(
        app.userinfo(access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_oauth_error(
        app.refresh(first["refresh_token"].as_str().unwrap()).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // The replay is in the audit trail, with the client and what was done.
    let events = app.state.db.recent_events(20).await.unwrap();
    let replay = events
        .iter()
        .find(|e| e.kind == "code_replayed")
        .expect("a code_replayed event");
    assert_eq!(replay.client_id.as_deref(), Some("web"));
    assert_eq!(replay.detail["grant_revoked"], true);
}

#[tokio::test]
async fn two_concurrent_exchanges_of_one_code_yield_one_token_response() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let (verifier, challenge) = pkce();
    let params = app.alice_code(&browser(), Some(&challenge)).await;
    let (a, b) = tokio::join!(
        app.exchange(&params["code"], Some(&verifier)),
        app.exchange(&params["code"], Some(&verifier))
    );
    let ok = [a.status(), b.status()]
        .iter()
        .filter(|s| **s == StatusCode::OK)
        .count();
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn pkce_missing_wrong_or_downgraded_verifiers_are_refused() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let (verifier, challenge) = pkce();

    let params = app.alice_code(&browser(), Some(&challenge)).await;
    assert_oauth_error(
        app.exchange(&params["code"], None).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;

    let params = app.alice_code(&browser(), Some(&challenge)).await;
    let (other, _) = pkce();
    assert_oauth_error(
        app.exchange(&params["code"], Some(&other)).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;

    // RFC 9700 §4.8.2: a verifier without a challenge in the request is a downgrade.
    let params = app.alice_code(&browser(), None).await;
    assert_oauth_error(
        app.exchange(&params["code"], Some(&verifier)).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;

    // A confidential client without PKCE at all is still served.
    let params = app.alice_code(&browser(), None).await;
    assert_eq!(
        app.exchange(&params["code"], None).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_code_is_bound_to_its_client_and_redirect_uri() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    app.add_client("other", false).await;
    let params = app.alice_code(&browser(), None).await;
    let stolen = app
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &params["code"]),
                ("redirect_uri", REDIRECT),
            ],
            Some(("other", SECRET)),
        )
        .await;
    assert_oauth_error(stolen, StatusCode::BAD_REQUEST, "invalid_grant").await;

    let params = app.alice_code(&browser(), None).await;
    let wrong_uri = app
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &params["code"]),
                ("redirect_uri", "http://127.0.0.1/native"),
            ],
            Some(("web", SECRET)),
        )
        .await;
    assert_oauth_error(wrong_uri, StatusCode::BAD_REQUEST, "invalid_grant").await;
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_whole_family() {
    let app = spawn_app_with(|s| s.tokens.refresh_reuse_grace_secs = 0).await;
    app.with_alice_and_web().await;
    let first = app.tokens_for_alice().await;
    let rt1 = first["refresh_token"].as_str().unwrap();

    let second: Value = app.refresh(rt1).await.json().await.unwrap();
    let rt2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(rt1, rt2);
    let third: Value = app.refresh(rt2).await.json().await.unwrap();
    let rt3 = third["refresh_token"].as_str().unwrap().to_string();

    // rt1 was spent: presenting it again is reuse.
    assert_oauth_error(
        app.refresh(rt1).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // The whole family is gone, including the newest token and its access tokens.
    assert_oauth_error(
        app.refresh(&rt3).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(
        app.userinfo(third["access_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_retry_within_the_grace_window_is_not_treated_as_reuse() {
    let app = spawn_app_with(|s| s.tokens.refresh_reuse_grace_secs = 30).await;
    app.with_alice_and_web().await;
    let first = app.tokens_for_alice().await;
    let rt1 = first["refresh_token"].as_str().unwrap();
    assert_eq!(app.refresh(rt1).await.status(), StatusCode::OK);
    let retry = app.refresh(rt1).await;
    assert_eq!(retry.status(), StatusCode::OK);
    let retried: Value = retry.json().await.unwrap();
    assert_eq!(
        app.refresh(retried["refresh_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_let_exactly_one_through() {
    let app = spawn_app_with(|s| s.tokens.refresh_reuse_grace_secs = 0).await;
    app.with_alice_and_web().await;
    let first = app.tokens_for_alice().await;
    let rt = first["refresh_token"].as_str().unwrap();
    let results = futures::future::join_all((0..8).map(|_| app.refresh(rt))).await;
    let ok = results
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .count();
    assert_eq!(ok, 1, "one refresh wins the rotation claim");
}

#[tokio::test]
async fn a_refresh_may_narrow_the_scope_but_never_widen_it() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let first = app.tokens_for_alice().await;
    let rt = first["refresh_token"].as_str().unwrap();
    let wider = app
        .token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("scope", "openid admin"),
            ],
            Some(("web", SECRET)),
        )
        .await;
    assert_oauth_error(wider, StatusCode::BAD_REQUEST, "invalid_scope").await;
    let second = app.tokens_for_alice().await;
    let narrower = app
        .token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", second["refresh_token"].as_str().unwrap()),
                ("scope", "openid"),
            ],
            Some(("web", SECRET)),
        )
        .await;
    let body: Value = narrower.json().await.unwrap();
    assert_eq!(body["scope"], "openid");
    assert!(
        jwt_claims(body["id_token"].as_str().unwrap())
            .get("email")
            .is_none()
    );
}

#[tokio::test]
async fn a_refresh_token_belongs_to_its_client() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    app.add_client("other", false).await;
    let first = app.tokens_for_alice().await;
    let stolen = app
        .token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", first["refresh_token"].as_str().unwrap()),
            ],
            Some(("other", SECRET)),
        )
        .await;
    assert_oauth_error(stolen, StatusCode::BAD_REQUEST, "invalid_grant").await;
}

#[tokio::test]
async fn revoking_a_refresh_token_ends_its_grant_rfc_7009() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let tokens = app.tokens_for_alice().await;
    let revoke = app
        .api
        .post(app.url("/oauth/revoke"))
        .basic_auth("web", Some(SECRET))
        .form(&[
            ("token", tokens["refresh_token"].as_str().unwrap()),
            ("token_type_hint", "refresh_token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), StatusCode::OK);
    assert_oauth_error(
        app.refresh(tokens["refresh_token"].as_str().unwrap()).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(
        app.userinfo(tokens["access_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // RFC 7009 §2.2: an unknown token is answered 200 as well.
    let unknown = app
        .api
        .post(app.url("/oauth/revoke"))
        .basic_auth("web", Some(SECRET))
        .form(&[("token", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::OK);
}

#[tokio::test]
async fn revoking_an_access_token_ends_its_grant_and_needs_client_authentication() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let tokens = app.tokens_for_alice().await;
    let access = tokens["access_token"].as_str().unwrap();
    let anonymous = app
        .api
        .post(app.url("/oauth/revoke"))
        .form(&[("token", access)])
        .send()
        .await
        .unwrap();
    assert_oauth_error(anonymous, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let revoke = app
        .api
        .post(app.url("/oauth/revoke"))
        .basic_auth("web", Some(SECRET))
        .form(&[("token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), StatusCode::OK);
    assert_eq!(
        app.userinfo(access).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn userinfo_refuses_missing_forged_and_id_tokens() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let tokens = app.tokens_for_alice().await;
    let missing = app.api.get(app.url("/userinfo")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert!(
        missing.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    // An ID token is signed by the same key but is not an access token (RFC 9068 §4).
    assert_eq!(
        app.userinfo(tokens["id_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let access = tokens["access_token"].as_str().unwrap();
    let mut forged = access.to_string();
    forged.replace_range(forged.len() - 4.., "AAAA");
    assert_eq!(
        app.userinfo(&forged).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.userinfo(access).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn token_responses_are_never_cached() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let params = app.alice_code(&browser(), None).await;
    let response = app.exchange(&params["code"], None).await;
    assert_eq!(response.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn signing_algorithms_es256_and_eddsa_issue_verifiable_tokens() {
    for alg in ["ES256", "EdDSA"] {
        let app = spawn_app_with(|s| {
            s.tokens.signing_alg = switchyard::store::SigningAlg::parse(alg).unwrap()
        })
        .await;
        app.with_alice_and_web().await;
        let tokens = app.tokens_for_alice().await;
        assert_eq!(jwt_header(tokens["id_token"].as_str().unwrap())["alg"], alg);
        assert_eq!(
            app.userinfo(tokens["access_token"].as_str().unwrap())
                .await
                .status(),
            StatusCode::OK
        );
        let discovery: Value = app
            .api
            .get(app.url("/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let algs = discovery["id_token_signing_alg_values_supported"]
            .as_array()
            .unwrap();
        assert!(
            algs.contains(&Value::from("RS256")),
            "RS256 is always offered"
        );
        assert!(algs.contains(&Value::from(alg)));
    }
}

#[tokio::test]
async fn the_token_endpoint_answers_cors_only_for_the_clients_own_origins() {
    let app = spawn_app().await;
    let mut client = app.add_client("web", false).await;
    client.web_origins = vec!["https://spa.example.com".into()];
    app.state.db.upsert_client(&client).await.unwrap();
    app.add_user("alice@example.com", PASSWORD).await;

    // The preflight names no client: it allows the request's method and
    // headers from any origin, and decides nothing else.
    let preflight = app
        .api
        .request(reqwest::Method::OPTIONS, app.url("/oauth/token"))
        .header("origin", "https://spa.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "auth0-client, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://spa.example.com"
    );
    assert_eq!(
        preflight.headers()["access-control-allow-headers"],
        "auth0-client, content-type"
    );

    let refresh = |origin: &'static str| {
        let app = &app;
        async move {
            app.api
                .post(app.url("/oauth/token"))
                .header("origin", origin)
                .basic_auth("web", Some(SECRET))
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", "unknown"),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    // A web origin and the origin of a redirect URI may read the answer,
    // an error included; another site may not.
    for (origin, allowed) in [
        ("https://spa.example.com", true),
        ("https://app.example.com", true),
        ("https://evil.example", false),
    ] {
        let answer = refresh(origin).await;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            answer
                .headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap().to_string()),
            allowed.then(|| origin.to_string()),
            "{origin}"
        );
        assert!(
            answer.headers()["vary"]
                .to_str()
                .unwrap()
                .contains("origin")
        );
    }
    // The Okta alias has the same rule.
    let okta = app
        .api
        .post(app.url("/v1/token"))
        .header("origin", "https://evil.example")
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
            ("client_id", "web"),
        ])
        .send()
        .await
        .unwrap();
    assert!(okta.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn replays_within_the_grace_window_get_the_same_successor_so_the_family_stays_one_chain() {
    let app = spawn_app_with(|s| s.tokens.refresh_reuse_grace_secs = 30).await;
    app.with_alice_and_web().await;
    let first = app.tokens_for_alice().await;
    let rt1 = first["refresh_token"].as_str().unwrap();
    let mut successors = Vec::new();
    for _ in 0..3 {
        let answer = app.refresh(rt1).await;
        assert_eq!(answer.status(), StatusCode::OK);
        let body: Value = answer.json().await.unwrap();
        successors.push(body["refresh_token"].as_str().unwrap().to_string());
    }
    assert!(
        successors.iter().all(|s| *s == successors[0]),
        "a retry receives the successor the first refresh got, not a parallel chain"
    );
    // The one chain goes on.
    let next = app.refresh(&successors[0]).await;
    assert_eq!(next.status(), StatusCode::OK);
    let next: Value = next.json().await.unwrap();
    assert_eq!(
        app.refresh(next["refresh_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn logout_revokes_the_sessions_grants_at_userinfo_and_at_the_token_endpoint() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let browser = browser();
    let params = app.alice_code(&browser, None).await;
    let tokens = app.exchange_ok(&params["code"], None).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(app.userinfo(access).await.status(), StatusCode::OK);

    let response = browser
        .get(app.url("/oidc/logout"))
        .query(&[("id_token_hint", tokens["id_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success() || response.status().is_redirection());

    // RFC 6750 §3.1: a revoked access token is invalid_token, with its challenge.
    let answer = app.userinfo(access).await;
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let challenge = answer.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    assert_oauth_error(
        app.refresh(tokens["refresh_token"].as_str().unwrap()).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn a_refresh_token_made_up_from_an_access_tokens_grant_id_revokes_nothing() {
    let app = spawn_app_with(|s| s.tokens.refresh_reuse_grace_secs = 0).await;
    app.with_alice_and_web().await;
    let tokens = app.tokens_for_alice().await;
    // Access tokens name their grant (`gid`); refresh tokens name it too.
    let gid = jwt_claims(tokens["access_token"].as_str().unwrap())["gid"]
        .as_str()
        .unwrap()
        .to_string();
    let forged = format!("{gid}.{}.{}", "A".repeat(43), "B".repeat(43));
    assert_oauth_error(
        app.refresh(&forged).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    let revoke = app
        .api
        .post(app.url("/oauth/revoke"))
        .basic_auth("web", Some(SECRET))
        .form(&[("token", forged.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), StatusCode::OK);
    // The real family is untouched.
    assert_eq!(
        app.userinfo(tokens["access_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.refresh(tokens["refresh_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::OK
    );
}

/// A refresh token the previous release issued lives only in the session
/// store, as `rt:<hash>` beside its grant: it keeps working after the
/// upgrade, its family moves into the database, and a replay is reuse.
#[tokio::test]
async fn a_refresh_token_from_before_durable_families_keeps_working_and_moves_to_the_database() {
    let app = spawn_app_with(|s| s.tokens.refresh_reuse_grace_secs = 0).await;
    let alice = app.with_alice_and_web().await;
    let legacy = switchyard_kit::random_token();
    let grant_id = switchyard_kit::random_token();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ttl = std::time::Duration::from_secs(3600);
    let hash = switchyard::crypto::sha256_b64(legacy.as_bytes());
    let record = serde_json::json!({"grant_id": grant_id, "client_id": "web", "issued_at": now});
    let grant = serde_json::json!({
        "user_id": alice.id, "client_id": "web", "scope": "openid profile email",
        "auth_time": now, "sid": "legacy-sid", "session_key": "session:gone",
        "expires_at": now + 3600,
    });
    let sessions = &app.state.sessions;
    sessions
        .put(&format!("rt:{hash}"), record.to_string().as_bytes(), ttl)
        .await
        .unwrap();
    sessions
        .put(
            &format!("grant:{grant_id}"),
            grant.to_string().as_bytes(),
            ttl,
        )
        .await
        .unwrap();

    let answer = app.refresh(&legacy).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let body: Value = answer.json().await.unwrap();
    let next = body["refresh_token"].as_str().unwrap().to_string();
    // The family is durable now: the cache may go.
    sessions.delete(&format!("grant:{grant_id}")).await.unwrap();
    let answer = app.refresh(&next).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let body: Value = answer.json().await.unwrap();
    let newest = body["refresh_token"].as_str().unwrap().to_string();
    // The legacy token was spent: presenting it again revokes the family.
    assert_oauth_error(
        app.refresh(&legacy).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_oauth_error(
        app.refresh(&newest).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}
