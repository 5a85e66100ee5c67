//! Bad input gets the protocol's own error, never a 500, and changes nothing.

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn malformed_token_requests_get_rfc_6749_errors_and_leave_the_code_usable() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let params = app.alice_code(&browser(), None).await;
    let code = params["code"].as_str();
    let token = app.url("/oauth/token");
    let basic = |r: reqwest::RequestBuilder| r.basic_auth("web", Some(SECRET));
    let form = |pairs: &[(&str, &str)]| {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    };
    let good = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
    ];

    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            "missing grant_type",
            basic(app.api.post(&token)).form(&[("code", code)]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "repeated code",
            basic(app.api.post(&token))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("{}&code=other", form(&good))),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "JSON body",
            basic(app.api.post(&token))
                .json(&serde_json::json!({"grant_type": "authorization_code", "code": code})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "oversized body",
            basic(app.api.post(&token)).form(&[
                ("grant_type", "authorization_code"),
                ("padding", &"x".repeat(64 * 1024)),
            ]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "Basic that is not base64",
            app.api
                .post(&token)
                .header("authorization", "Basic !!!notbase64!!!")
                .form(&good),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "Basic without a colon",
            app.api
                .post(&token)
                .header("authorization", "Basic d2Vi")
                .form(&good),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "unknown client",
            app.api
                .post(&token)
                .basic_auth("nobody", Some(SECRET))
                .form(&good),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "wrong secret",
            app.api
                .post(&token)
                .basic_auth("web", Some("wrong"))
                .form(&good),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "no client authentication",
            app.api.post(&token).form(&good),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "confidential client without its secret",
            app.api
                .post(&token)
                .form(&[good[0], good[1], good[2], ("client_id", "web")]),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "two authentication methods",
            basic(app.api.post(&token)).form(&[
                good[0],
                good[1],
                good[2],
                ("client_secret", SECRET),
            ]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "unsupported grant type",
            basic(app.api.post(&token)).form(&[("grant_type", "urn:example:magic")]),
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            "password grant, not allowed for this client",
            basic(app.api.post(&token)).form(&[
                ("grant_type", "password"),
                ("username", "a"),
                ("password", "b"),
            ]),
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
        ),
        (
            "missing redirect_uri",
            basic(app.api.post(&token))
                .form(&[("grant_type", "authorization_code"), ("code", code)]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (name, request, status, error) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{name}");
        let challenge = response.headers().get("www-authenticate").is_some();
        let body: serde_json::Value = response
            .json()
            .await
            .unwrap_or_else(|_| panic!("{name}: JSON body"));
        assert_eq!(body["error"], error, "{name}: {body}");
        if name.starts_with("Basic") || name == "wrong secret" || name == "unknown client" {
            assert!(
                challenge,
                "{name}: 401 after Basic carries WWW-Authenticate"
            );
        }
    }
    // None of that consumed the code.
    assert_eq!(app.exchange(code, None).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_client_secret_in_basic_auth_is_form_decoded() {
    let app = spawn_app().await;
    app.add_user("alice@example.com", PASSWORD).await;
    // A secret with characters that RFC 6749 §2.3.1 requires to be encoded.
    let secret = "s3cret:with spaces&symbols=+/0123456789abcdef";
    let client = switchyard::store::Client {
        secret_hash: Some(switchyard::crypto::hash_secret(secret)),
        ..app.add_client("odd", true).await
    };
    app.state
        .db
        .upsert_client(&switchyard::store::Client {
            public: false,
            ..client
        })
        .await
        .unwrap();
    let params = app
        .code_for(
            &browser(),
            &AuthRequest::new("odd", None),
            "alice@example.com",
        )
        .await;
    let encoded = form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>();
    let response = app
        .api
        .post(app.url("/oauth/token"))
        .basic_auth("odd", Some(encoded))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &params["code"]),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn no_endpoint_answers_500_to_garbage() {
    let app = spawn_app().await;
    app.with_alice_and_web().await;
    let huge = "x".repeat(100 * 1024);
    let requests = vec![
        app.api.post(app.url("/oauth/token")).body(huge.clone()),
        app.api
            .post(app.url("/oauth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(vec![0xff, 0xfe, b'=', 0x80]),
        app.api
            .post(app.url("/oauth/revoke"))
            .header("content-type", "text/plain")
            .body("token=x"),
        app.api
            .post(app.url("/oauth/revoke"))
            .basic_auth("web", Some(SECRET))
            .form(&[("token_type_hint", "refresh_token")]),
        app.api
            .post(app.url("/userinfo"))
            .header("content-type", "application/json")
            .body("{}"),
        app.api
            .get(app.url("/userinfo"))
            .header("authorization", "Bearer"),
        app.api
            .get(app.url("/userinfo"))
            .header("authorization", "Bearer a.b.c"),
        app.api
            .post(app.url("/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(huge.clone()),
        app.api
            .post(app.url("/login"))
            .form(&[("authz", "x"), ("csrf", "y")]),
        app.api
            .post(app.url("/login/password"))
            .form(&[("username", "x")]),
        app.api
            .post(app.url("/authorize"))
            .header("content-type", "application/json")
            .body("{}"),
        app.api
            .get(app.url("/authorize"))
            .query(&[("client_id", &huge[..8 * 1024])]),
        app.api
            .get(app.url("/oidc/logout"))
            .query(&[("id_token_hint", "not-a-jwt")]),
        app.api.get(app.url("/login")),
    ];
    for (i, request) in requests.into_iter().enumerate() {
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i}: {}", e.without_url()));
        assert!(
            response.status().is_client_error(),
            "request {i}: status {}",
            response.status()
        );
    }
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    assert_eq!(
        app.api
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let ready = app.api.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["database"], "ok");
    assert_eq!(body["session_store"], "ok");
}

#[tokio::test]
async fn discovery_and_jwks_describe_the_provider_exactly() {
    let app = spawn_app().await;
    let discovery: serde_json::Value = app
        .api
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], app.issuer, "byte-identical issuer");
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        discovery["response_types_supported"],
        serde_json::json!(["code"])
    );
    assert_eq!(
        discovery["authorization_response_iss_parameter_supported"],
        true
    );
    let jwks: serde_json::Value = app
        .api
        .get(discovery["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "the active key and the next one");
    for key in keys {
        assert!(
            key.get("d").is_none() && key.get("p").is_none(),
            "no private parts"
        );
        assert_eq!(key["use"], "sig");
    }
}
