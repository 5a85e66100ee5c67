//! The fake upstream identity provider (the kit's `fake` module)
//! checked against a real relying-party library: if `openidconnect` can
//! discover it, log in through it, validate its ID tokens and refresh with
//! it, then Switchyard's upstream client is tested against something that
//! behaves like the vendors, not like our own assumptions.

use std::collections::HashMap;
use std::time::Duration;

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreErrorResponseType, CoreProviderMetadata,
    CoreUserInfoClaims,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, RequestTokenError, Scope, TokenResponse,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use switchyard_kit::fake::*;
// No redirects followed: what `openidconnect` requires and what a back end
// talking to an upstream uses.
use switchyard_kit::http::{browser, form_fields, no_redirects, pkce, redirect_params};

const CLIENT_ID: &str = "app";
const SECRET: &str = "upstream-client-secret";
const REDIRECT: &str = "https://app.example.com/callback";
const PASSWORD: &str = "correct horse battery staple";

/// A client built from discovery, with the redirect URI set.
type Rp = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A fake of `flavor` with a confidential client `app` and alice.
async fn fake_with_alice(flavor: Flavor) -> (FakeUpstream, FakeUser) {
    let fake = FakeUpstream::start(flavor).await;
    fake.add_client(CLIENT_ID, Some(SECRET), &[REDIRECT]);
    let mut alice = FakeUser::new(&flavor.sample_sub(1), "alice@example.com", PASSWORD);
    alice.name = Some("Alice Example".into());
    alice.app_metadata = json!({"roles": ["admin", "billing"]});
    fake.add_user(alice.clone());
    (fake, alice)
}

async fn discover(fake: &FakeUpstream) -> Rp {
    let metadata = CoreProviderMetadata::discover_async(
        IssuerUrl::new(fake.issuer()).unwrap(),
        &no_redirects(),
    )
    .await
    .expect("discovery (and the JWKS it fetches)");
    CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(CLIENT_ID.into()),
        Some(ClientSecret::new(SECRET.into())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap())
}

/// What one login through the hosted page yields.
struct Login {
    tokens: openidconnect::core::CoreTokenResponse,
    nonce: Nonce,
}

/// Authorization URL → login form → callback → code exchange with PKCE.
async fn log_in(
    fake: &FakeUpstream,
    client: &Rp,
    browser: &reqwest::Client,
    user: &FakeUser,
    scopes: &[&str],
) -> Login {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    for scope in scopes {
        request = request.add_scope(Scope::new(scope.to_string()));
    }
    let (url, csrf, nonce) = request.url();
    let done = fake
        .browser_login(browser, url.as_str(), &user.email, &user.password)
        .await;
    assert_eq!(done.status(), StatusCode::FOUND, "back to the client");
    let back = redirect_params(&done);
    assert_eq!(back["state"], *csrf.secret(), "state round-trips");
    let tokens = client
        .exchange_code(AuthorizationCode::new(back["code"].clone()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&no_redirects())
        .await
        .expect("code exchange");
    Login { tokens, nonce }
}

/// The claims of a JWT, unverified (to look at vendor-specific claims after
/// `openidconnect` has verified the token, or when it cannot parse it).
fn payload(jwt: &str) -> Value {
    use base64::Engine;
    let part = jwt.split('.').nth(1).expect("a JWS");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// Verifies `jwt` with the fake's published JWKS using jsonwebtoken (for
/// tokens `openidconnect` refuses to parse).
async fn verify_with_jwks(fake: &FakeUpstream, jwt: &str, audience: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet = no_redirects()
        .get(fake.jwks_uri())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap();
    let jwk = jwks.find(&kid).expect("the kid is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[fake.issuer()]);
    jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .expect("signature, iss, aud and exp verify")
        .claims
}

async fn assert_oauth_error(response: reqwest::Response, status: StatusCode, error: &str) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["error"], error, "{body}");
    body
}

/// The whole relying-party round trip: discovery, login, ID-token
/// validation, userinfo, refresh with rotation and replay detection.
async fn relying_party_round_trip(flavor: Flavor, scopes: &[&str]) -> (FakeUpstream, Login) {
    let (fake, alice) = fake_with_alice(flavor).await;
    let client = discover(&fake).await;
    let login = log_in(&fake, &client, &browser(), &alice, scopes).await;

    let authorize = fake.last_authorize_params().expect("authorize was called");
    assert_eq!(authorize["code_challenge_method"], "S256");
    assert_eq!(authorize["nonce"], *login.nonce.secret());

    let id_token = login.tokens.id_token().expect("an ID token");
    let verifier = client.id_token_verifier();
    let claims = id_token
        .claims(&verifier, &login.nonce)
        .expect("the ID token validates (signature, iss, aud, exp, nonce)");
    assert_eq!(claims.subject().as_str(), alice.sub);
    assert_eq!(
        claims.email().map(|e| e.as_str()),
        Some("alice@example.com")
    );
    assert!(claims.auth_time().is_some());

    let info: CoreUserInfoClaims = client
        .user_info(login.tokens.access_token().clone(), None)
        .unwrap()
        .request_async(&no_redirects())
        .await
        .expect("userinfo");
    assert_eq!(info.subject().as_str(), alice.sub);
    assert_eq!(info.email().map(|e| e.as_str()), Some("alice@example.com"));

    let first = login.tokens.refresh_token().expect("a refresh token");
    let refreshed = client
        .exchange_refresh_token(first)
        .unwrap()
        .request_async(&no_redirects())
        .await
        .expect("refresh");
    let second = refreshed.refresh_token().expect("a new refresh token");
    assert_ne!(second.secret(), first.secret(), "rotated");
    refreshed
        .id_token()
        .expect("an ID token on refresh")
        .claims(&verifier, |_: Option<&Nonce>| Ok(()))
        .expect("the refreshed ID token validates");

    let replay = client
        .exchange_refresh_token(first)
        .unwrap()
        .request_async(&no_redirects())
        .await;
    match replay {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), CoreErrorResponseType::InvalidGrant)
        }
        other => panic!("a spent refresh token must be refused: {other:?}"),
    }

    assert_eq!(fake.calls("discovery"), 1);
    assert_eq!(fake.calls("jwks"), 1);
    assert_eq!(fake.calls("authorize"), 1);
    assert_eq!(fake.calls("token"), 3);
    assert_eq!(fake.calls("token:authorization_code"), 1);
    assert_eq!(fake.calls("token:refresh_token"), 2);
    assert_eq!(fake.calls("userinfo"), 1);
    (fake, login)
}

#[tokio::test]
async fn an_openidconnect_client_logs_in_through_the_fake_auth0_and_refreshes() {
    // No `profile`: Auth0's string `updated_at` is what the next test is about.
    let (fake, login) = relying_party_round_trip(Flavor::Auth0, &["email", "offline_access"]).await;
    assert!(fake.issuer().ends_with('/'), "Auth0's issuer ends with /");
    let claims = payload(login.tokens.id_token().unwrap().to_string().as_str());
    assert!(claims["sid"].is_string());
    assert_eq!(claims[AUTH0_ROLES_CLAIM], json!(["admin", "billing"]));
    assert!(claims["sub"].as_str().unwrap().starts_with("auth0|"));
    assert_eq!(
        login.tokens.access_token().secret().split('.').count(),
        5,
        "without an audience Auth0's access token is an opaque JWE"
    );
}

#[tokio::test]
async fn an_openidconnect_client_logs_in_through_the_fake_okta_and_refreshes() {
    let (fake, login) =
        relying_party_round_trip(Flavor::Okta, &["email", "profile", "offline_access"]).await;
    assert!(fake.issuer().ends_with("/oauth2/default"));
    let claims = payload(login.tokens.id_token().unwrap().to_string().as_str());
    assert_eq!(claims["preferred_username"], "alice@example.com");
    assert_eq!(claims["name"], "Alice Example");
    assert!(claims.get("nickname").is_none(), "Okta sends no nickname");
    assert!(claims["sub"].as_str().unwrap().starts_with("00u"));
    let access = payload(login.tokens.access_token().secret());
    assert_eq!(access["sub"], "alice@example.com", "Okta: sub is the login");
    assert_eq!(access["uid"], claims["sub"]);
}

#[tokio::test]
async fn an_openidconnect_client_logs_in_through_the_fake_keycloak_and_refreshes() {
    // Keycloak hands out a refresh token without offline_access.
    let (fake, login) = relying_party_round_trip(Flavor::Keycloak, &["email", "profile"]).await;
    assert!(fake.issuer().ends_with("/realms/acme"));
    let claims = payload(login.tokens.id_token().unwrap().to_string().as_str());
    assert_eq!(claims["preferred_username"], "alice");
    let sub = claims["sub"].as_str().unwrap();
    assert_eq!(sub.len(), 36, "a UUID: {sub}");
    assert_eq!(sub.matches('-').count(), 4);
}

#[tokio::test]
async fn an_openidconnect_client_logs_in_through_a_generic_provider_and_refreshes() {
    let (fake, _) =
        relying_party_round_trip(Flavor::Generic, &["email", "profile", "offline_access"]).await;
    assert_eq!(fake.issuer(), fake.base);
}

#[tokio::test]
async fn discovery_documents_advertise_each_vendors_endpoints_and_grants() {
    for flavor in Flavor::ALL {
        let fake = FakeUpstream::start(flavor).await;
        let url = format!(
            "{}/.well-known/openid-configuration",
            fake.issuer().trim_end_matches('/')
        );
        assert_eq!(url, fake.discovery_url());
        let doc: Value = no_redirects()
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["issuer"], fake.issuer());
        let path = |key: &str| {
            doc[key]
                .as_str()
                .unwrap()
                .strip_prefix(&fake.base)
                .unwrap()
                .to_string()
        };
        let expected = match flavor {
            Flavor::Auth0 => [
                "/authorize",
                "/oauth/token",
                "/userinfo",
                "/.well-known/jwks.json",
                "/oauth/revoke",
            ],
            Flavor::Okta => [
                "/oauth2/default/v1/authorize",
                "/oauth2/default/v1/token",
                "/oauth2/default/v1/userinfo",
                "/oauth2/default/v1/keys",
                "/oauth2/default/v1/revoke",
            ],
            Flavor::Keycloak => [
                "/realms/acme/protocol/openid-connect/auth",
                "/realms/acme/protocol/openid-connect/token",
                "/realms/acme/protocol/openid-connect/userinfo",
                "/realms/acme/protocol/openid-connect/certs",
                "/realms/acme/protocol/openid-connect/revoke",
            ],
            Flavor::Generic => ["/authorize", "/token", "/userinfo", "/jwks", "/revoke"],
            Flavor::Cognito => unreachable!("not in Flavor::ALL"),
        };
        let got = [
            "authorization_endpoint",
            "token_endpoint",
            "userinfo_endpoint",
            "jwks_uri",
            "revocation_endpoint",
        ]
        .map(path);
        assert_eq!(got, expected, "{flavor:?}");
        assert!(doc["end_session_endpoint"].is_string());
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(doc["response_types_supported"], json!(["code"]));
        let grants: Vec<&str> = doc["grant_types_supported"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap())
            .collect();
        assert_eq!(
            grants.contains(&"password"),
            flavor != Flavor::Generic,
            "{flavor:?}"
        );
        assert_eq!(
            grants.contains(&AUTH0_PASSWORD_REALM),
            flavor == Flavor::Auth0
        );
        assert_eq!(
            doc["authorization_response_iss_parameter_supported"] == json!(true),
            flavor != Flavor::Auth0,
            "{flavor:?}"
        );
    }
}

#[tokio::test]
async fn auth0_id_tokens_carry_profile_claims_with_updated_at_as_an_iso_string() {
    // Checked with jsonwebtoken and the JWKS rather than openidconnect,
    // which rejects a string `updated_at` unless its
    // `accept-rfc3339-timestamps` feature is on: Auth0 sends one.
    let (fake, alice) = fake_with_alice(Flavor::Auth0).await;
    let (verifier, challenge) = pkce();
    let url = reqwest::Url::parse_with_params(
        &fake.authorization_endpoint(),
        &[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("scope", "openid profile email"),
            ("state", "s1"),
            ("nonce", "n1"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ],
    )
    .unwrap();
    let done = fake
        .browser_login(&browser(), url.as_str(), &alice.email, PASSWORD)
        .await;
    assert_eq!(done.status(), StatusCode::FOUND);
    let back = redirect_params(&done);
    assert!(
        !back.contains_key("iss"),
        "Auth0 does not send RFC 9207 iss"
    );
    let body: Value = no_redirects()
        .post(fake.token_endpoint())
        .basic_auth(CLIENT_ID, Some(SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", back["code"].as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        body.get("refresh_token").is_none(),
        "no offline_access, no refresh token"
    );
    let claims = verify_with_jwks(&fake, body["id_token"].as_str().unwrap(), CLIENT_ID).await;
    assert_eq!(claims["nonce"], "n1");
    assert_eq!(claims["nickname"], "alice");
    assert_eq!(claims["name"], "Alice Example");
    assert!(claims["picture"].as_str().unwrap().starts_with("https://"));
    assert_eq!(claims["email_verified"], true);
    let updated_at = claims["updated_at"].as_str().expect("an ISO-8601 string");
    assert!(
        updated_at.len() == 24 && updated_at.ends_with('Z'),
        "{updated_at}"
    );
    assert_eq!(claims[AUTH0_ROLES_CLAIM], json!(["admin", "billing"]));
}

#[tokio::test]
async fn after_a_key_rotation_new_id_tokens_validate_only_after_rediscovery() {
    for flavor in Flavor::ALL {
        key_rotation_needs_rediscovery(flavor).await;
    }
}

async fn key_rotation_needs_rediscovery(flavor: Flavor) {
    let (fake, alice) = fake_with_alice(flavor).await;
    let stale = discover(&fake).await;
    let scopes = ["email", "offline_access"];
    let login = log_in(&fake, &stale, &browser(), &alice, &scopes).await;
    let old_kid = fake.current_kid();

    fake.rotate_keys();
    assert_ne!(fake.current_kid(), old_kid);
    let jwks: Value = no_redirects()
        .get(fake.jwks_uri())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        jwks["keys"].as_array().unwrap().len(),
        1,
        "the old key is gone"
    );
    assert_eq!(jwks["keys"][0]["kid"], fake.current_kid());

    let refreshed = stale
        .exchange_refresh_token(login.tokens.refresh_token().unwrap())
        .unwrap()
        .request_async(&no_redirects())
        .await
        .expect("refresh");
    let fresh = refreshed.id_token().unwrap();
    let no_nonce = |_: Option<&Nonce>| Ok(());
    let with_old_jwks = fresh.claims(&stale.id_token_verifier(), no_nonce);
    assert!(
        matches!(
            with_old_jwks,
            Err(ClaimsVerificationError::SignatureVerification(_))
        ),
        "{flavor:?}: {with_old_jwks:?}"
    );

    let rediscovered = discover(&fake).await;
    fresh
        .claims(&rediscovered.id_token_verifier(), no_nonce)
        .expect("validates with the refetched JWKS");
    assert_eq!(fake.calls("jwks"), 3, "{flavor:?}");
}

#[tokio::test]
async fn each_id_token_tamper_is_caught_by_relying_party_validation() {
    let (fake, alice) = fake_with_alice(Flavor::Generic).await;
    let client = discover(&fake).await;
    let verifier = client.id_token_verifier();
    // One browser: after the first login the upstream session completes
    // each authorization at once.
    let browser = browser();
    for tamper in [
        Tamper::None,
        Tamper::BadSignature,
        Tamper::WrongAudience,
        Tamper::WrongNonce,
        Tamper::Expired,
        Tamper::WrongIssuer,
        Tamper::None,
    ] {
        fake.set_id_token_tamper(tamper);
        let login = log_in(&fake, &client, &browser, &alice, &["email"]).await;
        let id_token = login.tokens.id_token().unwrap();
        let result = id_token.claims(&verifier, &login.nonce);
        let caught = matches!(
            (&tamper, &result),
            (Tamper::None, Ok(_))
                | (
                    Tamper::BadSignature,
                    Err(ClaimsVerificationError::SignatureVerification(_))
                )
                | (
                    Tamper::WrongAudience,
                    Err(ClaimsVerificationError::InvalidAudience(_))
                )
                | (
                    Tamper::WrongNonce,
                    Err(ClaimsVerificationError::InvalidNonce(_))
                )
                | (Tamper::Expired, Err(ClaimsVerificationError::Expired(_)))
                | (
                    Tamper::WrongIssuer,
                    Err(ClaimsVerificationError::InvalidIssuer(_))
                )
        );
        assert!(caught, "{tamper:?}: {result:?}");
        if tamper == Tamper::BadSignature {
            let header = id_token.to_string();
            let header = jsonwebtoken::decode_header(&header).unwrap();
            assert_eq!(
                header.kid.as_deref(),
                Some(fake.current_kid().as_str()),
                "forged under the published kid"
            );
        }
    }
    assert_eq!(fake.calls("login"), 1, "one form post, then SSO");
}

#[tokio::test]
async fn the_auth0_password_realm_grant_answers_exactly_as_auth0_does() {
    let (fake, alice) = fake_with_alice(Flavor::Auth0).await;
    let mut blocked = FakeUser::new("auth0|blocked", "blocked@example.com", PASSWORD);
    blocked.blocked = true;
    fake.add_user(blocked);
    let mut mfa = FakeUser::new("auth0|mfa", "mfa@example.com", PASSWORD);
    mfa.mfa_required = true;
    fake.add_user(mfa);
    let realm = |username: &str, password: &str| {
        no_redirects()
            .post(fake.token_endpoint())
            .form(&[
                ("grant_type", AUTH0_PASSWORD_REALM),
                ("realm", AUTH0_DEFAULT_REALM),
                ("client_id", CLIENT_ID),
                ("client_secret", SECRET),
                ("username", username),
                ("password", password),
                ("scope", "openid email offline_access"),
            ])
            .send()
    };

    for (username, password) in [
        ("alice@example.com", "wrong"),
        ("nobody@example.com", PASSWORD),
    ] {
        let response = realm(username, password).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "Auth0 answers invalid_grant with 403"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"error": "invalid_grant", "error_description": "Wrong email or password."}),
            "unknown user and wrong password look the same"
        );
    }

    let response = realm("blocked@example.com", PASSWORD).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "unauthorized", "error_description": "user is blocked"})
    );

    let body = assert_oauth_error(
        realm("mfa@example.com", PASSWORD).await.unwrap(),
        StatusCode::FORBIDDEN,
        "mfa_required",
    )
    .await;
    assert!(body["mfa_token"].is_string());

    let response = realm("ALICE@example.com", PASSWORD).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let claims = verify_with_jwks(&fake, body["id_token"].as_str().unwrap(), CLIENT_ID).await;
    assert_eq!(claims["sub"], alice.sub.as_str());
    assert!(body["refresh_token"].is_string());
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 86_400);

    // The plain password grant (tenant default directory) as well.
    let response = no_redirects()
        .post(fake.token_endpoint())
        .basic_auth(CLIENT_ID, Some(SECRET))
        .form(&[
            ("grant_type", "password"),
            ("username", "alice@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    assert_eq!(fake.calls(&format!("token:{AUTH0_PASSWORD_REALM}")), 5);
    assert_eq!(fake.calls("token:password"), 1);
    assert_eq!(fake.calls("token"), 6);
}

#[tokio::test]
async fn okta_and_keycloak_password_grants_use_their_own_error_bodies() {
    for (flavor, status, description) in [
        (
            Flavor::Okta,
            StatusCode::BAD_REQUEST,
            "The credentials provided were invalid.",
        ),
        (
            Flavor::Keycloak,
            StatusCode::UNAUTHORIZED,
            "Invalid user credentials",
        ),
    ] {
        let (fake, alice) = fake_with_alice(flavor).await;
        let grant = |password: &str| {
            no_redirects()
                .post(fake.token_endpoint())
                .basic_auth(CLIENT_ID, Some(SECRET))
                .form(&[
                    ("grant_type", "password"),
                    ("username", alice.email.as_str()),
                    ("password", password),
                    ("scope", "openid email"),
                ])
                .send()
        };
        let body = assert_oauth_error(grant("wrong").await.unwrap(), status, "invalid_grant").await;
        assert_eq!(body["error_description"], description, "{flavor:?}");
        let ok: Value = grant(PASSWORD).await.unwrap().json().await.unwrap();
        assert!(ok["id_token"].is_string(), "{flavor:?}: {ok}");
        assert_eq!(
            ok.get("refresh_token").is_some(),
            flavor == Flavor::Keycloak,
            "only Keycloak refreshes without offline_access"
        );
    }
}

#[tokio::test]
async fn a_generic_provider_refuses_the_password_grant() {
    let (fake, alice) = fake_with_alice(Flavor::Generic).await;
    let response = no_redirects()
        .post(fake.token_endpoint())
        .basic_auth(CLIENT_ID, Some(SECRET))
        .form(&[
            ("grant_type", "password"),
            ("username", alice.email.as_str()),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "unsupported_grant_type").await;
    assert_eq!(fake.calls("token:password"), 1);
}

#[tokio::test]
async fn a_rate_limited_upstream_answers_429_with_retry_after_and_the_vendors_headers() {
    for (flavor, prefix, body) in [
        (
            Flavor::Auth0,
            "x-ratelimit",
            json!({"error": "too_many_requests", "error_description": "Global limit has been reached"}),
        ),
        (
            Flavor::Okta,
            "x-rate-limit",
            json!({"errorCode": "E0000047", "errorSummary": "API call exceeded rate limit due to too many requests."}),
        ),
    ] {
        let (fake, _) = fake_with_alice(flavor).await;
        let header = |r: &reqwest::Response, name: &str| -> i64 {
            r.headers()
                .get(format!("{prefix}-{name}"))
                .unwrap_or_else(|| panic!("{flavor:?}: {prefix}-{name}"))
                .to_str()
                .unwrap()
                .parse()
                .unwrap()
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;

        let normal = no_redirects().get(fake.jwks_uri()).send().await.unwrap();
        assert_eq!(normal.status(), StatusCode::OK);
        assert!(header(&normal, "remaining") > 0);
        assert!(header(&normal, "limit") >= header(&normal, "remaining"));

        fake.set_mode(Mode::RateLimited {
            retry_after_secs: 30,
        });
        let limited = no_redirects()
            .post(fake.token_endpoint())
            .form(&[("grant_type", "client_credentials")])
            .basic_auth(CLIENT_ID, Some(SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.headers()["retry-after"], "30");
        assert_eq!(header(&limited, "remaining"), 0);
        let reset = header(&limited, "reset");
        assert!(
            reset >= now + 29 && reset <= now + 32,
            "reset is epoch seconds: {reset}"
        );
        let got: Value = limited.json().await.unwrap();
        for (key, value) in body.as_object().unwrap() {
            assert_eq!(&got[key], value, "{flavor:?}: {got}");
        }
        assert_eq!(fake.calls("token"), 1, "a refused call still counts");
        assert_eq!(fake.calls("token:client_credentials"), 1);
    }
}

#[tokio::test]
async fn failure_modes_hit_the_back_channel_while_the_login_page_stays_up() {
    let (fake, alice) = fake_with_alice(Flavor::Keycloak).await;
    let client = discover(&fake).await;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, _, _) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge)
        .url();

    fake.set_mode(Mode::Fail500);
    let done = fake
        .browser_login(&browser(), url.as_str(), &alice.email, PASSWORD)
        .await;
    assert_eq!(
        done.status(),
        StatusCode::FOUND,
        "the login page still works"
    );
    let code = redirect_params(&done)["code"].clone();
    let exchange = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&no_redirects())
        .await;
    assert!(exchange.is_err(), "the token call fails: {exchange:?}");
    let response = no_redirects().get(fake.jwks_uri()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);

    fake.set_mode(Mode::InvalidJson);
    let response = no_redirects()
        .get(fake.discovery_url())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.json::<Value>().await.is_err(), "not JSON");

    fake.set_mode(Mode::Slow(Duration::from_millis(400)));
    let hurried = no_redirects()
        .get(fake.discovery_url())
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(hurried.is_err_and(|e| e.is_timeout()));
    let patient = no_redirects()
        .get(fake.discovery_url())
        .send()
        .await
        .unwrap();
    assert_eq!(patient.status(), StatusCode::OK);

    fake.set_mode(Mode::Normal);
    discover(&fake).await;
}

#[tokio::test]
async fn a_down_upstream_fails_at_the_transport_level_and_recovers() {
    let (fake, _) = fake_with_alice(Flavor::Auth0).await;
    let pooled = no_redirects();
    let warm = pooled.get(fake.jwks_uri()).send().await.unwrap();
    assert_eq!(warm.status(), StatusCode::OK);
    warm.bytes().await.unwrap();

    fake.set_mode(Mode::Down);
    // A kept-alive connection is reset too, not only new ones.
    let on_pooled = pooled.get(fake.jwks_uri()).send().await;
    assert!(on_pooled.is_err(), "{on_pooled:?}");
    let fresh = no_redirects().get(fake.discovery_url()).send().await;
    assert!(fresh.is_err(), "{fresh:?}");
    let page = no_redirects()
        .get(fake.authorization_endpoint())
        .send()
        .await;
    assert!(page.is_err(), "the login page is down too");
    assert_eq!(fake.calls("jwks"), 1, "nothing reached the fake");

    fake.set_mode(Mode::Normal);
    let back = pooled.get(fake.jwks_uri()).send().await.unwrap();
    assert_eq!(back.status(), StatusCode::OK);
    assert_eq!(fake.calls("jwks"), 2);
}

#[tokio::test]
async fn the_authorize_page_prefills_login_hint_and_records_the_request() {
    let (fake, _) = fake_with_alice(Flavor::Okta).await;
    let (_, challenge) = pkce();
    let url = reqwest::Url::parse_with_params(
        &fake.authorization_endpoint(),
        &[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
            ("state", "st"),
            ("nonce", "nn"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("login_hint", "alice@example.com"),
        ],
    )
    .unwrap();
    let page = browser().get(url).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let (action, fields) = form_fields(&page.text().await.unwrap());
    assert!(action.starts_with(&fake.base), "{action}");
    assert_eq!(fields["username"], "alice@example.com");
    assert_eq!(fields["password"], "");
    assert!(fields.contains_key("tx"), "the transaction rides along");
    let params = fake.last_authorize_params().unwrap();
    assert_eq!(params["login_hint"], "alice@example.com");
    assert_eq!(params["code_challenge"], challenge);
    assert_eq!(params["state"], "st");
    assert_eq!(params["nonce"], "nn");
}

#[tokio::test]
async fn wrong_credentials_re_render_the_login_page_with_an_error() {
    let (fake, alice) = fake_with_alice(Flavor::Auth0).await;
    let url = authorize_url(&fake, &[]);
    let page = fake
        .browser_login(&browser(), &url, &alice.email, "wrong")
        .await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("Wrong email or password"), "{html}");
    let (_, fields) = form_fields(&html);
    assert_eq!(fields["username"], alice.email, "the username is kept");
}

/// An authorization URL for `app` with PKCE and the given extra parameters.
fn authorize_url(fake: &FakeUpstream, extra: &[(&str, &str)]) -> String {
    let (_, challenge) = pkce();
    let mut params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", CLIENT_ID),
        ("redirect_uri", REDIRECT),
        ("scope", "openid email"),
        ("state", "st"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    params.extend_from_slice(extra);
    reqwest::Url::parse_with_params(&fake.authorization_endpoint(), &params)
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn prompt_none_needs_an_upstream_session_which_logout_ends() {
    let (fake, alice) = fake_with_alice(Flavor::Keycloak).await;
    let browser = browser();
    let silent = authorize_url(&fake, &[("prompt", "none")]);

    let refused = browser.get(&silent).send().await.unwrap();
    let back = redirect_params(&refused);
    assert_eq!(back["error"], "login_required");
    assert_eq!(back["state"], "st");
    assert_eq!(back["iss"], fake.issuer());

    let done = fake
        .browser_login(&browser, &authorize_url(&fake, &[]), &alice.email, PASSWORD)
        .await;
    assert!(redirect_params(&done).contains_key("code"));
    let again = browser.get(&silent).send().await.unwrap();
    assert!(
        redirect_params(&again).contains_key("code"),
        "silent login works with the session"
    );

    let logout = browser
        .get(fake.end_session_endpoint())
        .query(&[
            ("post_logout_redirect_uri", "https://app.example.com/bye"),
            ("state", "bye-state"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::FOUND);
    assert_eq!(redirect_params(&logout)["state"], "bye-state");
    assert_eq!(fake.calls("logout"), 1);

    let after = browser.get(&silent).send().await.unwrap();
    assert_eq!(redirect_params(&after)["error"], "login_required");
}

#[tokio::test]
async fn auth0_v2_logout_returns_to_the_given_url() {
    let (fake, _) = fake_with_alice(Flavor::Auth0).await;
    let response = no_redirects()
        .get(fake.url("/v2/logout"))
        .query(&[
            ("returnTo", "https://app.example.com/bye"),
            ("client_id", CLIENT_ID),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(
        response.headers()["location"],
        "https://app.example.com/bye"
    );
    let plain = no_redirects()
        .get(fake.url("/v2/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
    assert_eq!(fake.calls("logout"), 2);
}

#[tokio::test]
async fn authorize_refuses_unknown_clients_and_redirect_uris_with_a_page() {
    let (fake, _) = fake_with_alice(Flavor::Generic).await;
    let url = authorize_url(&fake, &[]);
    for (from, to) in [
        ("client_id=app", "client_id=nope"),
        ("app.example.com", "evil.example.com"),
    ] {
        let response = no_redirects()
            .get(url.replace(from, to))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get("location").is_none());
    }
    // Once the redirect URI is trusted, errors go back to the client.
    let response = no_redirects()
        .get(url.replace("response_type=code", "response_type=token"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        redirect_params(&response)["error"],
        "unsupported_response_type"
    );
}

#[tokio::test]
async fn codes_are_single_use_and_bound_to_the_pkce_verifier_and_the_client() {
    let (fake, alice) = fake_with_alice(Flavor::Okta).await;
    fake.add_client("other", Some("other-secret"), &[REDIRECT]);
    let browser = browser();
    let (verifier, challenge) = pkce();
    let url = reqwest::Url::parse_with_params(
        &fake.authorization_endpoint(),
        &[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
            ("state", "st"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ],
    )
    .unwrap();
    let exchange = |code: String, verifier: String, client: (&'static str, &'static str)| {
        let token_endpoint = fake.token_endpoint();
        async move {
            no_redirects()
                .post(token_endpoint)
                .basic_auth(client.0, Some(client.1))
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", REDIRECT),
                    ("code_verifier", &verifier),
                ])
                .send()
                .await
                .unwrap()
        }
    };

    let code = |done: reqwest::Response| redirect_params(&done)["code"].clone();
    let first = code(
        fake.browser_login(&browser, url.as_str(), &alice.email, PASSWORD)
            .await,
    );
    let wrong = exchange(first, "not-the-verifier".into(), (CLIENT_ID, SECRET)).await;
    let body = assert_oauth_error(wrong, StatusCode::BAD_REQUEST, "invalid_grant").await;
    assert_eq!(body["error_description"], "PKCE verification failed.");

    let second = code(browser.get(url.as_str()).send().await.unwrap());
    let stolen = exchange(second, verifier.clone(), ("other", "other-secret")).await;
    assert_oauth_error(stolen, StatusCode::BAD_REQUEST, "invalid_grant").await;

    let third = code(browser.get(url.as_str()).send().await.unwrap());
    let bad_secret = exchange(third.clone(), verifier.clone(), (CLIENT_ID, "nope")).await;
    assert!(bad_secret.headers().contains_key("www-authenticate"));
    assert_oauth_error(bad_secret, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let ok = exchange(third.clone(), verifier.clone(), (CLIENT_ID, SECRET)).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()["cache-control"], "no-store");
    let replay = exchange(third, verifier, (CLIENT_ID, SECRET)).await;
    assert_oauth_error(replay, StatusCode::BAD_REQUEST, "invalid_grant").await;
}

#[tokio::test]
async fn revoking_a_refresh_token_stops_it_and_is_recorded() {
    let (fake, alice) = fake_with_alice(Flavor::Auth0).await;
    let adopted = fake.issue_refresh_token(CLIENT_ID, &alice.sub, "openid email offline_access");
    let refresh = |token: String| {
        let token_endpoint = fake.token_endpoint();
        async move {
            no_redirects()
                .post(token_endpoint)
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", token.as_str()),
                    ("client_id", CLIENT_ID),
                    ("client_secret", SECRET),
                ])
                .send()
                .await
                .unwrap()
        }
    };

    let response = refresh(adopted.clone()).await;
    assert_eq!(response.status(), StatusCode::OK, "an adopted token works");
    let body: Value = response.json().await.unwrap();
    let claims = verify_with_jwks(&fake, body["id_token"].as_str().unwrap(), CLIENT_ID).await;
    assert_eq!(claims["sub"], alice.sub.as_str());
    let current = body["refresh_token"].as_str().unwrap().to_string();

    let revoked = no_redirects()
        .post(fake.revocation_endpoint())
        .basic_auth(CLIENT_ID, Some(SECRET))
        .form(&[
            ("token", current.as_str()),
            ("token_type_hint", "refresh_token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(fake.revoked_refresh_tokens(), vec![current.clone()]);
    assert_eq!(fake.calls("revoke"), 1);

    let body = assert_oauth_error(
        refresh(current).await,
        StatusCode::FORBIDDEN,
        "invalid_grant",
    )
    .await;
    assert_eq!(
        body["error_description"],
        "Unknown or invalid refresh token."
    );
    assert_oauth_error(
        refresh(adopted).await,
        StatusCode::FORBIDDEN,
        "invalid_grant",
    )
    .await;
    assert_eq!(fake.calls("token:refresh_token"), 3);
}

#[tokio::test]
async fn an_expired_access_token_is_refused_by_userinfo() {
    let (fake, alice) = fake_with_alice(Flavor::Generic).await;
    let client = discover(&fake).await;
    fake.set_access_token_ttl(0);
    let login = log_in(&fake, &client, &browser(), &alice, &["email"]).await;
    assert_eq!(
        login.tokens.expires_in(),
        Some(Duration::ZERO),
        "expires_in follows the TTL"
    );
    let response = no_redirects()
        .get(fake.userinfo_endpoint())
        .bearer_auth(login.tokens.access_token().secret())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\""),
        "{challenge}"
    );

    fake.set_access_token_ttl(600);
    let login = log_in(&fake, &client, &browser(), &alice, &["email"]).await;
    assert_eq!(login.tokens.expires_in(), Some(Duration::from_secs(600)));
    let info: HashMap<String, Value> = no_redirects()
        .get(fake.userinfo_endpoint())
        .bearer_auth(login.tokens.access_token().secret())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], alice.sub.as_str());
}

// ---------------------------------------------------------------------------
// AWS Cognito
// ---------------------------------------------------------------------------

/// The `SECRET_HASH` of alice at `app` with `SECRET`, computed independently
/// (Python's `hmac`): Base64(HMAC-SHA256(secret, username + client id)).
const ALICE_SECRET_HASH: &str = "WiiLH6qpPdW7ObkVieyhYauPDlA2Z21qNqEvKVNE9RU=";

/// A fake Cognito with the confidential client `app` and alice, whose
/// `app_metadata` strings become `custom:*` attributes.
async fn cognito_with_alice() -> (FakeUpstream, FakeUser) {
    let fake = FakeUpstream::start(Flavor::Cognito).await;
    fake.add_client(CLIENT_ID, Some(SECRET), &[REDIRECT]);
    let mut alice = FakeUser::new(
        &Flavor::Cognito.sample_sub(1),
        "alice@example.com",
        PASSWORD,
    );
    alice.name = Some("Alice Example".into());
    alice.app_metadata = json!({
        "tenant": "acme",
        "plan": "pro",
        "roles": ["admin"],
        "groups": ["admins"],
    });
    fake.add_user(alice.clone());
    (fake, alice)
}

/// What Cognito's user-pool API answered.
#[derive(Debug)]
struct AwsAnswer {
    status: StatusCode,
    /// `x-amzn-ErrorType`.
    error_type: Option<String>,
    content_type: String,
    body: Value,
}

async fn call_user_api(fake: &FakeUpstream, target: &str, body: &Value) -> AwsAnswer {
    let response = no_redirects()
        .post(fake.user_api_endpoint())
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", target)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let error_type = header("x-amzn-errortype");
    let content_type = header("content-type").unwrap_or_default();
    assert!(
        header("x-amzn-requestid").is_some(),
        "AWS names every request"
    );
    let status = response.status();
    let body = response.json().await.expect("a JSON body");
    AwsAnswer {
        status,
        error_type,
        content_type,
        body,
    }
}

/// `InitiateAuth` with `USER_PASSWORD_AUTH` for `app`, with the secret hash
/// computed from `secret` when given.
async fn password_auth(
    fake: &FakeUpstream,
    username: &str,
    password: &str,
    secret: Option<&str>,
) -> AwsAnswer {
    let mut parameters = json!({"USERNAME": username, "PASSWORD": password});
    if let Some(secret) = secret {
        parameters["SECRET_HASH"] = json!(cognito_secret_hash(username, CLIENT_ID, secret));
    }
    call_user_api(
        fake,
        COGNITO_INITIATE_AUTH,
        &json!({
            "AuthFlow": "USER_PASSWORD_AUTH",
            "ClientId": CLIENT_ID,
            "AuthParameters": parameters,
        }),
    )
    .await
}

/// Asserts an AWS error: `status`, the exact body (`message` left out when
/// empty) and `x-amzn-ErrorType` naming the same type.
fn assert_aws_error(answer: &AwsAnswer, status: StatusCode, kind: &str, message: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    let expected = match message {
        "" => json!({"__type": kind}),
        _ => json!({"__type": kind, "message": message}),
    };
    assert_eq!(answer.body, expected, "{answer:?}");
    assert_eq!(answer.error_type.as_deref(), Some(kind), "{answer:?}");
    assert_eq!(answer.content_type, "application/x-amz-json-1.1");
}

/// Verifies a Cognito access token (no `aud`) with the published JWKS.
async fn verify_access_token_with_jwks(fake: &FakeUpstream, jwt: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet = no_redirects()
        .get(fake.jwks_uri())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    validation.set_issuer(&[fake.issuer()]);
    jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .expect("signature, iss and exp verify")
        .claims
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[tokio::test]
async fn an_openidconnect_client_logs_in_through_the_fake_cognito_hosted_ui_and_refresh_does_not_rotate()
 {
    let (fake, alice) = cognito_with_alice().await;
    assert_eq!(fake.issuer(), format!("{}/eu-west-1_FakePool", fake.base));
    let client = discover(&fake).await;
    let login = log_in(&fake, &client, &browser(), &alice, &["email", "profile"]).await;

    let verifier = client.id_token_verifier();
    let id_token = login.tokens.id_token().expect("an ID token with openid");
    let claims = id_token
        .claims(&verifier, &login.nonce)
        .expect("the ID token validates (signature, iss, aud, exp, nonce)");
    assert_eq!(claims.subject().as_str(), alice.sub);
    assert!(is_uuid(&alice.sub), "a UUID: {}", alice.sub);
    assert_eq!(claims.email_verified(), Some(true));
    let raw = payload(&id_token.to_string());
    assert_eq!(raw["token_use"], "id");
    assert_eq!(raw["cognito:username"], "alice@example.com");
    assert_eq!(raw["custom:tenant"], "acme");
    assert_eq!(raw["custom:plan"], "pro");
    assert!(
        raw.get("custom:roles").is_none(),
        "only strings are attributes"
    );
    assert_eq!(raw["cognito:groups"], json!(["admins"]));
    assert_eq!(raw["email_verified"], true, "a boolean in the ID token");
    assert_eq!(raw["aud"], CLIENT_ID);
    assert!(raw["at_hash"].is_string());

    let access = payload(login.tokens.access_token().secret());
    assert_eq!(access["token_use"], "access");
    assert_eq!(access["client_id"], CLIENT_ID);
    assert_eq!(access["username"], "alice@example.com");
    assert_eq!(access["scope"], "openid email profile");
    assert!(
        access.get("aud").is_none(),
        "Cognito access tokens have no aud"
    );
    assert!(
        login.tokens.scopes().is_none(),
        "Cognito's token response has no scope"
    );

    // userInfo: openidconnect copes with Cognito's string booleans.
    let info: CoreUserInfoClaims = client
        .user_info(login.tokens.access_token().clone(), None)
        .unwrap()
        .request_async(&no_redirects())
        .await
        .expect("userInfo");
    assert_eq!(info.subject().as_str(), alice.sub);
    assert_eq!(info.email_verified(), Some(true));
    let raw_info: Value = no_redirects()
        .get(fake.userinfo_endpoint())
        .bearer_auth(login.tokens.access_token().secret())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw_info["email_verified"], "true", "a string from userInfo");
    assert_eq!(raw_info["username"], "alice@example.com");
    assert_eq!(raw_info["custom:tenant"], "acme");

    let original = login.tokens.refresh_token().expect("a refresh token");
    assert_eq!(
        original.secret().split('.').count(),
        5,
        "Cognito refresh tokens are JWEs"
    );
    for _ in 0..2 {
        let refreshed = client
            .exchange_refresh_token(original)
            .unwrap()
            .request_async(&no_redirects())
            .await
            .expect("the same refresh token works again");
        assert!(
            refreshed.refresh_token().is_none(),
            "no rotation: no new refresh token"
        );
        let again = refreshed
            .id_token()
            .expect("an ID token on refresh")
            .claims(&verifier, |_: Option<&Nonce>| Ok(()))
            .expect("the refreshed ID token validates");
        assert_eq!(again.subject().as_str(), alice.sub);
        assert_eq!(
            again.auth_time(),
            claims.auth_time(),
            "auth_time is the login's"
        );
    }
    assert_eq!(fake.calls("token:refresh_token"), 2);
    assert_eq!(fake.calls("discovery"), 1);
    assert_eq!(fake.calls("jwks"), 1);
    assert_eq!(fake.calls("userinfo"), 2);
}

#[tokio::test]
async fn cognito_discovery_lists_the_hosted_ui_endpoints_and_neither_a_password_grant_nor_end_session()
 {
    let fake = FakeUpstream::start(Flavor::Cognito).await;
    assert_eq!(
        fake.discovery_url(),
        format!("{}/.well-known/openid-configuration", fake.issuer())
    );
    let doc: Value = no_redirects()
        .get(fake.discovery_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b = &fake.base;
    let i = fake.issuer();
    assert_eq!(
        doc,
        json!({
            "authorization_endpoint": format!("{b}/oauth2/authorize"),
            "id_token_signing_alg_values_supported": ["RS256"],
            "issuer": i,
            "jwks_uri": format!("{i}/.well-known/jwks.json"),
            "response_types_supported": ["code", "token"],
            "revocation_endpoint": format!("{b}/oauth2/revoke"),
            "scopes_supported": ["openid", "email", "phone", "profile"],
            "subject_types_supported": ["public"],
            "token_endpoint": format!("{b}/oauth2/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "userinfo_endpoint": format!("{b}/oauth2/userInfo"),
        })
    );
    assert_eq!(
        fake.authorization_endpoint(),
        format!("{b}/oauth2/authorize")
    );
    assert_eq!(fake.token_endpoint(), format!("{b}/oauth2/token"));
    assert_eq!(fake.userinfo_endpoint(), format!("{b}/oauth2/userInfo"));
    assert_eq!(fake.revocation_endpoint(), format!("{b}/oauth2/revoke"));
    assert_eq!(fake.jwks_uri(), format!("{i}/.well-known/jwks.json"));
    assert_eq!(fake.end_session_endpoint(), format!("{b}/logout"));
    assert_eq!(fake.user_api_endpoint(), format!("{b}/"));
    assert!(!Flavor::Cognito.supports_password_grant());
    assert!(!Flavor::Cognito.sends_iss_in_authorization_response());
    assert!(!Flavor::ALL.contains(&Flavor::Cognito));
}

#[tokio::test]
async fn cognito_initiate_auth_with_a_correct_secret_hash_returns_tokens_that_validate_against_the_jwks()
 {
    let (fake, alice) = cognito_with_alice().await;
    assert_eq!(
        cognito_secret_hash("alice@example.com", CLIENT_ID, SECRET),
        ALICE_SECRET_HASH
    );
    let answer = call_user_api(
        &fake,
        COGNITO_INITIATE_AUTH,
        &json!({
            "AuthFlow": "USER_PASSWORD_AUTH",
            "ClientId": CLIENT_ID,
            "AuthParameters": {
                "USERNAME": "alice@example.com",
                "PASSWORD": PASSWORD,
                "SECRET_HASH": ALICE_SECRET_HASH,
            },
        }),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.error_type, None);
    assert_eq!(answer.content_type, "application/x-amz-json-1.1");
    assert_eq!(answer.body["ChallengeParameters"], json!({}));
    let result = answer.body["AuthenticationResult"].as_object().unwrap();
    let mut keys: Vec<&str> = result.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "AccessToken",
            "ExpiresIn",
            "IdToken",
            "RefreshToken",
            "TokenType"
        ]
    );
    assert_eq!(result["ExpiresIn"], 3600);
    assert_eq!(result["TokenType"], "Bearer");

    let id = verify_with_jwks(&fake, result["IdToken"].as_str().unwrap(), CLIENT_ID).await;
    assert_eq!(id["sub"], alice.sub.as_str());
    assert_eq!(id["token_use"], "id");
    assert_eq!(id["cognito:username"], "alice@example.com");
    assert_eq!(id["email"], "alice@example.com");
    assert_eq!(id["email_verified"], true);
    assert_eq!(id["custom:tenant"], "acme");
    assert!(id["auth_time"].is_i64() && id["iat"].is_i64());
    assert!(id.get("nonce").is_none(), "no nonce without a request");

    let access_token = result["AccessToken"].as_str().unwrap();
    let access = verify_access_token_with_jwks(&fake, access_token).await;
    assert_eq!(access["token_use"], "access");
    assert_eq!(access["client_id"], CLIENT_ID);
    assert_eq!(access["username"], "alice@example.com");
    assert_eq!(access["scope"], COGNITO_ADMIN_SCOPE);
    assert!(access.get("aud").is_none());
    assert_eq!(fake.calls("initiate_auth"), 1);
    assert_eq!(fake.calls("token"), 0, "not the token endpoint");

    // AWS: userInfo refuses access tokens from InitiateAuth (no openid).
    let info = no_redirects()
        .get(fake.userinfo_endpoint())
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        info.headers()["www-authenticate"],
        "error=\"invalid_token\", error_description=\"Access token is expired, disabled, or deleted, or the user has globally signed out.\""
    );

    // REFRESH_TOKEN_AUTH: new tokens, the same refresh token.
    let refresh_token = result["RefreshToken"].as_str().unwrap();
    for _ in 0..2 {
        let refreshed = call_user_api(
            &fake,
            COGNITO_INITIATE_AUTH,
            &json!({
                "AuthFlow": "REFRESH_TOKEN_AUTH",
                "ClientId": CLIENT_ID,
                "AuthParameters": {
                    "REFRESH_TOKEN": refresh_token,
                    "SECRET_HASH": cognito_secret_hash(&alice.sub, CLIENT_ID, SECRET),
                },
            }),
        )
        .await;
        assert_eq!(refreshed.status, StatusCode::OK, "{refreshed:?}");
        let result = &refreshed.body["AuthenticationResult"];
        assert!(result.get("RefreshToken").is_none(), "no rotation");
        let id = verify_with_jwks(&fake, result["IdToken"].as_str().unwrap(), CLIENT_ID).await;
        assert_eq!(id["sub"], alice.sub.as_str());
    }
    assert_eq!(fake.calls("initiate_auth"), 3);
}

#[tokio::test]
async fn cognito_initiate_auth_answers_each_error_and_challenge_exactly_as_aws_does() {
    let (fake, _) = cognito_with_alice().await;
    let mut disabled = FakeUser::new(
        &Flavor::Cognito.sample_sub(2),
        "disabled@example.com",
        PASSWORD,
    );
    disabled.blocked = true;
    fake.add_user(disabled);
    let mut mfa = FakeUser::new(&Flavor::Cognito.sample_sub(3), "mfa@example.com", PASSWORD);
    mfa.mfa_required = true;
    fake.add_user(mfa);
    let mut fresh = FakeUser::new(&Flavor::Cognito.sample_sub(4), "new@example.com", PASSWORD);
    fresh.app_metadata = json!({"tenant": "acme"});
    fake.add_user(fresh.clone());
    fake.require_new_password(&fresh.sub);
    let bad = StatusCode::BAD_REQUEST;
    let auth = |username: &'static str, password: &'static str| {
        let fake = &fake;
        async move { password_auth(fake, username, password, Some(SECRET)).await }
    };

    let wrong = auth("alice@example.com", "wrong").await;
    assert_aws_error(
        &wrong,
        bad,
        "NotAuthorizedException",
        "Incorrect username or password.",
    );
    let unknown = auth("nobody@example.com", PASSWORD).await;
    assert_aws_error(
        &unknown,
        bad,
        "UserNotFoundException",
        "User does not exist.",
    );
    assert_aws_error(
        &auth("disabled@example.com", PASSWORD).await,
        bad,
        "NotAuthorizedException",
        "User is disabled.",
    );

    fake.set_prevent_user_existence_errors(true);
    let hidden = auth("nobody@example.com", PASSWORD).await;
    assert_eq!(
        (hidden.status, &hidden.body, &hidden.error_type),
        (wrong.status, &wrong.body, &wrong.error_type),
        "an unknown user looks exactly like a wrong password"
    );
    fake.set_prevent_user_existence_errors(false);

    let challenge = auth("mfa@example.com", PASSWORD).await;
    assert_eq!(challenge.status, StatusCode::OK);
    assert_eq!(challenge.error_type, None);
    let session = challenge.body["Session"].as_str().unwrap().to_string();
    assert!(session.len() > 100, "an opaque session");
    assert_eq!(
        challenge.body,
        json!({"ChallengeName": "SOFTWARE_TOKEN_MFA", "Session": session, "ChallengeParameters": {}})
    );

    let challenge = auth("new@example.com", PASSWORD).await;
    assert_eq!(challenge.status, StatusCode::OK);
    let body = &challenge.body;
    assert_eq!(body["ChallengeName"], "NEW_PASSWORD_REQUIRED");
    assert!(body["Session"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(body.get("AuthenticationResult").is_none());
    let parameters = body["ChallengeParameters"].as_object().unwrap();
    assert_eq!(parameters.len(), 3, "{parameters:?}");
    assert_eq!(parameters["USER_ID_FOR_SRP"], "new@example.com");
    assert_eq!(parameters["requiredAttributes"], "[]");
    let attributes: Value =
        serde_json::from_str(parameters["userAttributes"].as_str().unwrap()).unwrap();
    assert_eq!(attributes["email"], "new@example.com");
    assert_eq!(attributes["email_verified"], "true");
    assert_eq!(attributes["custom:tenant"], "acme");
    assert!(attributes.get("sub").is_none(), "sub is not an attribute");
    // The wrong password still comes first.
    assert_aws_error(
        &auth("new@example.com", "wrong").await,
        bad,
        "NotAuthorizedException",
        "Incorrect username or password.",
    );

    let unknown_client = call_user_api(
        &fake,
        COGNITO_INITIATE_AUTH,
        &json!({
            "AuthFlow": "USER_PASSWORD_AUTH",
            "ClientId": "nope",
            "AuthParameters": {"USERNAME": "alice@example.com", "PASSWORD": PASSWORD},
        }),
    )
    .await;
    assert_aws_error(
        &unknown_client,
        bad,
        "ResourceNotFoundException",
        "User pool client nope does not exist.",
    );
    let srp = call_user_api(
        &fake,
        COGNITO_INITIATE_AUTH,
        &json!({
            "AuthFlow": "USER_SRP_AUTH",
            "ClientId": CLIENT_ID,
            "AuthParameters": {"USERNAME": "alice@example.com", "SRP_A": "abc"},
        }),
    )
    .await;
    assert_aws_error(
        &srp,
        bad,
        "InvalidParameterException",
        "USER_SRP_AUTH is not enabled for the client.",
    );
    let missing = call_user_api(
        &fake,
        COGNITO_INITIATE_AUTH,
        &json!({
            "AuthFlow": "USER_PASSWORD_AUTH",
            "ClientId": CLIENT_ID,
            "AuthParameters": {"USERNAME": "alice@example.com", "SECRET_HASH": ALICE_SECRET_HASH},
        }),
    )
    .await;
    assert_aws_error(
        &missing,
        bad,
        "InvalidParameterException",
        "Missing required parameter PASSWORD",
    );
    let admin = call_user_api(
        &fake,
        "AWSCognitoIdentityProviderService.AdminGetUser",
        &json!({"UserPoolId": COGNITO_POOL_ID, "Username": "alice@example.com"}),
    )
    .await;
    assert_aws_error(&admin, bad, "UnknownOperationException", "");
    let untyped = no_redirects()
        .post(fake.user_api_endpoint())
        .header("x-amz-target", COGNITO_INITIATE_AUTH)
        .json(&json!({"AuthFlow": "USER_PASSWORD_AUTH", "ClientId": CLIENT_ID}))
        .send()
        .await
        .unwrap();
    assert_eq!(untyped.status(), bad);
    assert_eq!(
        untyped.headers()["x-amzn-errortype"],
        "SerializationException"
    );
    assert_eq!(
        untyped.json::<Value>().await.unwrap(),
        json!({"__type": "SerializationException"}),
        "AWS JSON 1.1 wants its own content type"
    );

    fake.set_mode(Mode::RateLimited {
        retry_after_secs: 1,
    });
    assert_aws_error(
        &auth("alice@example.com", PASSWORD).await,
        bad,
        "TooManyRequestsException",
        "Rate exceeded",
    );
    fake.set_mode(Mode::Fail500);
    let failed = auth("alice@example.com", PASSWORD).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(failed.body["__type"], "InternalErrorException");
    assert_eq!(failed.error_type.as_deref(), Some("InternalErrorException"));
    fake.set_mode(Mode::Normal);
    assert_eq!(
        auth("alice@example.com", PASSWORD).await.status,
        StatusCode::OK
    );

    assert_eq!(fake.calls("initiate_auth"), 14);
    assert_eq!(
        fake.calls("user_api"),
        15,
        "AdminGetUser reached the API too"
    );
}

#[tokio::test]
async fn cognito_refuses_a_missing_or_wrong_secret_hash() {
    let (fake, _) = cognito_with_alice().await;
    let bad = StatusCode::BAD_REQUEST;
    assert_aws_error(
        &password_auth(&fake, "alice@example.com", PASSWORD, None).await,
        bad,
        "NotAuthorizedException",
        "Client app is configured for secret but secret was not received",
    );
    assert_aws_error(
        &password_auth(&fake, "alice@example.com", PASSWORD, Some("not-the-secret")).await,
        bad,
        "NotAuthorizedException",
        "Unable to verify secret hash for client app",
    );
    // Over another username: refused, even with the right password.
    let other_users_hash = call_user_api(
        &fake,
        COGNITO_INITIATE_AUTH,
        &json!({
            "AuthFlow": "USER_PASSWORD_AUTH",
            "ClientId": CLIENT_ID,
            "AuthParameters": {
                "USERNAME": "alice@example.com",
                "PASSWORD": PASSWORD,
                "SECRET_HASH": cognito_secret_hash("bob@example.com", CLIENT_ID, SECRET),
            },
        }),
    )
    .await;
    assert_aws_error(
        &other_users_hash,
        bad,
        "NotAuthorizedException",
        "Unable to verify secret hash for client app",
    );
    // The hash is checked before the user is looked up.
    assert_aws_error(
        &password_auth(
            &fake,
            "nobody@example.com",
            PASSWORD,
            Some("not-the-secret"),
        )
        .await,
        bad,
        "NotAuthorizedException",
        "Unable to verify secret hash for client app",
    );

    // A client without a secret needs no hash.
    fake.add_client("public", None, &[REDIRECT]);
    let public = call_user_api(
        &fake,
        COGNITO_INITIATE_AUTH,
        &json!({
            "AuthFlow": "USER_PASSWORD_AUTH",
            "ClientId": "public",
            "AuthParameters": {"USERNAME": "alice@example.com", "PASSWORD": PASSWORD},
        }),
    )
    .await;
    assert_eq!(public.status, StatusCode::OK, "{public:?}");
    let id_token = public.body["AuthenticationResult"]["IdToken"]
        .as_str()
        .unwrap();
    assert_eq!(
        verify_with_jwks(&fake, id_token, "public").await["aud"],
        "public"
    );
}

#[tokio::test]
async fn cognito_refuses_user_password_auth_for_a_client_that_does_not_enable_it() {
    let (fake, _) = cognito_with_alice().await;
    fake.set_user_password_auth(CLIENT_ID, false);
    let refused = password_auth(&fake, "alice@example.com", PASSWORD, Some(SECRET)).await;
    assert_aws_error(
        &refused,
        StatusCode::BAD_REQUEST,
        "InvalidParameterException",
        "USER_PASSWORD_AUTH flow not enabled for this client",
    );
    fake.set_user_password_auth(CLIENT_ID, true);
    let allowed = password_auth(&fake, "alice@example.com", PASSWORD, Some(SECRET)).await;
    assert_eq!(allowed.status, StatusCode::OK, "{allowed:?}");
    assert_eq!(fake.calls("initiate_auth"), 2);
}

#[tokio::test]
async fn cognito_token_endpoint_errors_carry_the_code_alone_and_there_is_no_password_grant() {
    let (fake, alice) = cognito_with_alice().await;
    let post = |form: Vec<(&'static str, String)>, secret: &'static str| {
        no_redirects()
            .post(fake.token_endpoint())
            .basic_auth(CLIENT_ID, Some(secret))
            .form(&form)
            .send()
    };
    let exact = |response: reqwest::Response, error: &'static str| async move {
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"error": error})
        );
    };
    exact(
        post(
            vec![
                ("grant_type", "password".into()),
                ("username", alice.email.clone()),
                ("password", PASSWORD.into()),
            ],
            SECRET,
        )
        .await
        .unwrap(),
        "unsupported_grant_type",
    )
    .await;
    exact(
        post(
            vec![
                ("grant_type", "authorization_code".into()),
                ("code", "not-a-code".into()),
                ("redirect_uri", REDIRECT.into()),
            ],
            SECRET,
        )
        .await
        .unwrap(),
        "invalid_grant",
    )
    .await;
    exact(
        post(
            vec![
                ("grant_type", "refresh_token".into()),
                ("refresh_token", "not-a-token".into()),
            ],
            "not-the-secret",
        )
        .await
        .unwrap(),
        "invalid_client",
    )
    .await;
    assert_eq!(fake.calls("token:password"), 1);
}

#[tokio::test]
async fn revoking_a_cognito_refresh_token_ends_it_and_its_access_tokens() {
    let (fake, alice) = cognito_with_alice().await;
    let client = discover(&fake).await;
    let login = log_in(&fake, &client, &browser(), &alice, &["email"]).await;
    let refresh_token = login.tokens.refresh_token().unwrap().secret().clone();
    let userinfo = |token: String| {
        let endpoint = fake.userinfo_endpoint();
        async move {
            no_redirects()
                .get(endpoint)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let access_token = login.tokens.access_token().secret().clone();
    assert_eq!(userinfo(access_token.clone()).await, StatusCode::OK);

    let revoke = |token: String| {
        no_redirects()
            .post(fake.revocation_endpoint())
            .basic_auth(CLIENT_ID, Some(SECRET))
            .form(&[("token", token)])
            .send()
    };
    // Cognito revokes refresh tokens only.
    let refused = revoke(access_token.clone()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        refused.json::<Value>().await.unwrap(),
        json!({"error": "unsupported_token_type"})
    );
    let revoked = revoke(refresh_token.clone()).await.unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(fake.revoked_refresh_tokens(), vec![refresh_token.clone()]);
    assert_eq!(
        userinfo(access_token).await,
        StatusCode::UNAUTHORIZED,
        "the access token issued with it ends too"
    );
    let refresh = no_redirects()
        .post(fake.token_endpoint())
        .basic_auth(CLIENT_ID, Some(SECRET))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        refresh.json::<Value>().await.unwrap(),
        json!({"error": "invalid_grant"})
    );
    let api = call_user_api(
        &fake,
        COGNITO_INITIATE_AUTH,
        &json!({
            "AuthFlow": "REFRESH_TOKEN_AUTH",
            "ClientId": CLIENT_ID,
            "AuthParameters": {
                "REFRESH_TOKEN": refresh_token,
                "SECRET_HASH": cognito_secret_hash(&alice.sub, CLIENT_ID, SECRET),
            },
        }),
    )
    .await;
    assert_aws_error(
        &api,
        StatusCode::BAD_REQUEST,
        "NotAuthorizedException",
        "Refresh Token has been revoked",
    );
}

#[tokio::test]
async fn cognito_logout_redirects_to_logout_uri_and_ends_the_hosted_ui_session() {
    let (fake, alice) = cognito_with_alice().await;
    let browser = browser();
    let done = fake
        .browser_login(&browser, &authorize_url(&fake, &[]), &alice.email, PASSWORD)
        .await;
    let back = redirect_params(&done);
    assert!(back.contains_key("code"));
    assert!(is_uuid(&back["code"]), "Cognito codes are UUIDs");
    assert!(
        !back.contains_key("iss"),
        "Cognito does not send RFC 9207 iss"
    );
    let silent = authorize_url(&fake, &[("prompt", "none")]);
    let again = browser.get(&silent).send().await.unwrap();
    assert!(redirect_params(&again).contains_key("code"), "SSO");

    let logout = browser
        .get(fake.url("/logout"))
        .query(&[
            ("client_id", CLIENT_ID),
            ("logout_uri", "https://app.example.com/bye"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::FOUND);
    assert_eq!(
        logout.headers()["location"],
        "https://app.example.com/bye",
        "nothing added"
    );
    assert_eq!(fake.calls("logout"), 1);
    let after = browser.get(&silent).send().await.unwrap();
    assert_eq!(redirect_params(&after)["error"], "login_required");

    let unknown = no_redirects()
        .get(fake.url("/logout"))
        .query(&[
            ("client_id", "nope"),
            ("logout_uri", "https://app.example.com/bye"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    assert!(unknown.headers().get("location").is_none());
}

#[tokio::test]
async fn the_cognito_hosted_ui_names_unknown_users_unless_existence_errors_are_prevented() {
    let (fake, alice) = cognito_with_alice().await;
    let page = |username: &'static str, password: &'static str| {
        let fake = &fake;
        async move {
            let page = fake
                .browser_login(&browser(), &authorize_url(fake, &[]), username, password)
                .await;
            assert_eq!(page.status(), StatusCode::OK);
            page.text().await.unwrap()
        }
    };
    assert!(
        page("nobody@example.com", PASSWORD)
            .await
            .contains("User does not exist.")
    );
    assert!(
        page("alice@example.com", "wrong")
            .await
            .contains("Incorrect username or password.")
    );
    fake.set_prevent_user_existence_errors(true);
    assert!(
        page("nobody@example.com", PASSWORD)
            .await
            .contains("Incorrect username or password.")
    );
    let mut disabled = alice.clone();
    disabled.blocked = true;
    fake.add_user(disabled);
    assert!(
        page("alice@example.com", PASSWORD)
            .await
            .contains("User is disabled.")
    );
}

#[tokio::test]
async fn the_cognito_implicit_grant_returns_tokens_in_the_fragment() {
    let (fake, alice) = cognito_with_alice().await;
    let url = reqwest::Url::parse_with_params(
        &fake.authorization_endpoint(),
        &[
            ("response_type", "token"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("scope", "openid email"),
            ("state", "st"),
            ("nonce", "nn"),
        ],
    )
    .unwrap();
    let done = fake
        .browser_login(&browser(), url.as_str(), &alice.email, PASSWORD)
        .await;
    assert_eq!(done.status(), StatusCode::FOUND);
    let location = url::Url::parse(done.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(location.query(), None);
    let fragment: HashMap<String, String> =
        url::form_urlencoded::parse(location.fragment().unwrap().as_bytes())
            .into_owned()
            .collect();
    assert_eq!(fragment["state"], "st");
    assert_eq!(fragment["token_type"], "Bearer");
    assert_eq!(fragment["expires_in"], "3600");
    assert!(!fragment.contains_key("refresh_token"));
    let id = verify_with_jwks(&fake, &fragment["id_token"], CLIENT_ID).await;
    assert_eq!(id["nonce"], "nn");
    assert_eq!(id["sub"], alice.sub.as_str());
}

#[tokio::test]
async fn after_a_key_rotation_new_cognito_id_tokens_validate_only_after_rediscovery() {
    key_rotation_needs_rediscovery(Flavor::Cognito).await;
}

// ---------------------------------------------------------------------------
// Management APIs: listing users the way a backfill does
// ---------------------------------------------------------------------------

/// A fake of `flavor` with the confidential client `app` and `n` seeded
/// users plus alice (from `add_user`); returns the seeded subs and alice's.
async fn fake_with_users(flavor: Flavor, n: usize) -> (FakeUpstream, Vec<String>) {
    let (fake, alice) = fake_with_alice(flavor).await;
    let mut subs = fake.seed_users(n);
    subs.push(alice.sub);
    (fake, subs)
}

/// A Management API token by `client_credentials` (Auth0: for the
/// `api/v2/` audience; Keycloak: the service account's).
async fn management_token(fake: &FakeUpstream) -> String {
    let mut form = vec![("grant_type", "client_credentials".to_string())];
    if fake.flavor == Flavor::Auth0 {
        form.push(("audience", fake.management_audience()));
    }
    let response = no_redirects()
        .post(fake.token_endpoint())
        .basic_auth(CLIENT_ID, Some(SECRET))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

async fn get_json(
    url: &str,
    authorization: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = no_redirects()
        .get(url)
        .header("authorization", authorization)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

fn header_str<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("a {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn a_naive_auth0_pager_hits_the_1000_cap_and_never_sees_user_1001() {
    let (fake, subs) = fake_with_users(Flavor::Auth0, 1_200).await;
    let token = format!("Bearer {}", management_token(&fake).await);
    assert_eq!(fake.calls("mgmt_token"), 1);

    let mut seen = std::collections::HashSet::new();
    let mut refusal = None;
    for page in 0.. {
        let url = fake.url(&format!(
            "/api/v2/users?page={page}&per_page=100&search_engine=v3"
        ));
        let (status, _, body) = get_json(&url, &token).await;
        if status != StatusCode::OK {
            refusal = Some((page, status, body));
            break;
        }
        let users = body
            .as_array()
            .expect("a bare array without include_totals");
        if users.is_empty() {
            break;
        }
        for user in users {
            assert!(seen.insert(user["user_id"].as_str().unwrap().to_string()));
        }
    }
    let (page, status, body) = refusal.expect("the naive pager is stopped");
    assert_eq!((page, status), (10, StatusCode::BAD_REQUEST));
    assert_eq!(
        body,
        json!({
            "statusCode": 400,
            "error": "Bad Request",
            "message": "You can only page through the first 1000 records. See https://auth0.com/docs/users/search/v3/view-search-results-by-page#limitation",
            "errorCode": "invalid_paging",
        })
    );
    assert_eq!(seen.len(), 1_000, "user 1,001 is out of reach");

    // Slicing by `created_at` windows of fewer than 1,000 reaches everyone.
    let mut created: Vec<String> = subs
        .iter()
        .map(|s| {
            fake.management_user(s).unwrap()["created_at"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    created.sort();
    let cut = &created[700];
    let mut everyone = std::collections::HashSet::new();
    for q in [
        format!("created_at:[* TO {cut}}}"),
        format!("created_at:[{cut} TO *]"),
    ] {
        let mut page = 0;
        loop {
            let mut url = url::Url::parse(&fake.url("/api/v2/users")).unwrap();
            url.query_pairs_mut()
                .append_pair("q", &q)
                .append_pair("search_engine", "v3")
                .append_pair("per_page", "100")
                .append_pair("page", &page.to_string())
                .append_pair("include_totals", "true")
                .append_pair("sort", "created_at:1");
            let (status, _, body) = get_json(url.as_str(), &token).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["start"], page * 100);
            assert_eq!(body["limit"], 100);
            let users = body["users"].as_array().unwrap();
            assert_eq!(body["length"], users.len());
            assert!(body["total"].as_u64().unwrap() < 1_000);
            let times: Vec<&str> = users
                .iter()
                .map(|u| u["created_at"].as_str().unwrap())
                .collect();
            assert!(
                times.windows(2).all(|w| w[0] < w[1]),
                "sorted by created_at"
            );
            for user in users {
                assert!(everyone.insert(user["user_id"].as_str().unwrap().to_string()));
            }
            if users.len() < 100 {
                break;
            }
            page += 1;
        }
    }
    assert_eq!(
        everyone.len(),
        subs.len(),
        "the windows cover every user once"
    );

    // The shape of one record.
    let alice = &subs[1_200];
    let (_, _, body) = get_json(
        &fake.url(&format!(
            "/api/v2/users?q=user_id:%22{}%22",
            alice.replace('|', "%7C")
        )),
        &token,
    )
    .await;
    let record = &body[0];
    assert_eq!(record["user_id"], *alice);
    assert_eq!(record["identities"][0]["provider"], "auth0");
    assert_eq!(record["identities"][0]["isSocial"], false);
    assert_eq!(
        format!(
            "auth0|{}",
            record["identities"][0]["user_id"].as_str().unwrap()
        ),
        *alice
    );
    assert_eq!(record["app_metadata"]["roles"], json!(["admin", "billing"]));
    let created_at = record["created_at"].as_str().unwrap();
    assert_eq!(
        created_at.len(),
        24,
        "ISO-8601 with milliseconds: {created_at}"
    );
    assert!(created_at.ends_with('Z'));
    assert_eq!(fake.management_user(alice).unwrap(), *record);

    // `per_page` above 100, no token, a bad token, a wrong audience.
    let (status, _, body) = get_json(&fake.url("/api/v2/users?per_page=101"), &token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errorCode"], "invalid_query_string");
    let (status, _, body) = get_json(&fake.url("/api/v2/users"), "Bearer nope").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body,
        json!({"statusCode": 401, "error": "Unauthorized", "message": "Invalid token",
               "attributes": {"error": "Invalid token"}})
    );
    let wrong = no_redirects()
        .post(fake.token_endpoint())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("audience", "https://elsewhere.example/api/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        wrong.json::<Value>().await.unwrap()["error"],
        "access_denied"
    );
}

/// Creates an export job and polls it to completion; returns the job's
/// answers in order.
async fn run_export(fake: &FakeUpstream, token: &str, request: Value) -> Vec<Value> {
    let created = no_redirects()
        .post(fake.url("/api/v2/jobs/users-exports"))
        .header("authorization", token)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let job: Value = created.json().await.unwrap();
    assert_eq!(job["type"], "users_export");
    assert_eq!(job["status"], "pending");
    assert!(job["id"].as_str().unwrap().starts_with("job_"));
    let mut answers = vec![job.clone()];
    for _ in 0..20 {
        let (status, _, body) = get_json(
            &fake.url(&format!("/api/v2/jobs/{}", job["id"].as_str().unwrap())),
            token,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let done = body["status"] == "completed";
        answers.push(body);
        if done {
            return answers;
        }
    }
    panic!("the job never completed: {answers:?}");
}

fn gunzip_lines(bytes: &[u8]) -> Vec<Value> {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .expect("gzip");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[tokio::test]
async fn the_auth0_export_job_goes_pending_processing_completed_and_exports_every_user_once() {
    let (fake, subs) = fake_with_users(Flavor::Auth0, 250).await;
    let token = format!("Bearer {}", management_token(&fake).await);
    let answers = run_export(
        &fake,
        &token,
        json!({
            "connection_id": AUTH0_CONNECTION_ID,
            "format": "json",
            "fields": [
                {"name": "user_id"},
                {"name": "email"},
                {"name": "user_metadata.locale", "export_as": "locale"},
                {"name": "identities[0].connection", "export_as": "connection"},
            ],
        }),
    )
    .await;
    let statuses: Vec<&str> = answers
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "pending",
            "pending",
            "processing",
            "processing",
            "completed"
        ]
    );
    assert!(answers[2]["time_left_seconds"].is_u64());
    let location = answers[4]["location"].as_str().unwrap();
    assert!(location.starts_with(&fake.base), "{location}");

    // The link is pre-signed: no Authorization header.
    let download = no_redirects().get(location).send().await.unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    let lines = gunzip_lines(&download.bytes().await.unwrap());
    let ids: Vec<String> = lines
        .iter()
        .map(|l| l["user_id"].as_str().unwrap().to_string())
        .collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), subs.len(), "one line per user");
    assert_eq!(unique.len(), subs.len(), "no user twice");
    assert!(subs.iter().all(|s| unique.contains(s)));
    let line = lines
        .iter()
        .find(|l| l["email"] == "user0@example.com")
        .unwrap();
    assert_eq!(line["locale"], "en");
    assert_eq!(line["connection"], AUTH0_DEFAULT_REALM);
    assert_eq!(
        line.as_object().unwrap().len(),
        4,
        "only the fields asked for: {line}"
    );
    assert_eq!(fake.calls("export_download"), 1);

    // Without `fields`: the predefined profile fields, no metadata.
    let answers = run_export(&fake, &token, json!({"format": "json"})).await;
    let location = answers.last().unwrap()["location"]
        .as_str()
        .unwrap()
        .to_string();
    let lines = gunzip_lines(
        &no_redirects()
            .get(&location)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    );
    assert_eq!(lines.len(), subs.len());
    assert!(lines[0].get("created_at").is_some() && lines[0].get("identities").is_some());
    assert!(lines.iter().all(|l| l.get("app_metadata").is_none()));

    // An altered link, and one that has expired, answer as S3 does.
    let tampered = location.replace("Expires=", "Expires=9");
    let refused = no_redirects().get(&tampered).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("<Code>AccessDenied</Code>")
    );
    fake.set_export_timing(ExportTiming {
        pending_polls: 0,
        processing_polls: 0,
        link_ttl: Duration::ZERO,
    });
    let answers = run_export(&fake, &token, json!({"format": "json"})).await;
    assert_eq!(answers.len(), 2, "completed at the first poll");
    let expired = no_redirects()
        .get(answers[1]["location"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), StatusCode::FORBIDDEN);
    let body = expired.text().await.unwrap();
    assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
    assert!(
        body.contains("<Message>Request has expired</Message>"),
        "{body}"
    );

    let (status, _, _) = get_json(&fake.url("/api/v2/jobs/job_doesnotexist00"), &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The target of `Link: <…>; rel="<rel>"`, if any.
fn link(headers: &reqwest::header::HeaderMap, rel: &str) -> Option<String> {
    headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find(|l| l.contains(&format!("rel=\"{rel}\"")))
        .map(|l| {
            let l = l.trim();
            l[l.find('<').unwrap() + 1..l.find('>').unwrap()].to_string()
        })
}

/// Follows `rel="next"` from `first`; returns the ids and the page count.
async fn okta_pages(first: &str) -> (Vec<String>, usize) {
    let auth = format!("SSWS {OKTA_API_TOKEN}");
    let mut url = Some(first.to_string());
    let mut ids = vec![];
    let mut pages = 0;
    while let Some(u) = url {
        let (status, headers, body) = get_json(&u, &auth).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(link(&headers, "self").is_some());
        pages += 1;
        for user in body.as_array().unwrap() {
            ids.push(user["id"].as_str().unwrap().to_string());
        }
        url = link(&headers, "next");
        assert!(pages < 100, "the next links never stop");
    }
    (ids, pages)
}

#[tokio::test]
async fn okta_link_paging_returns_every_listable_user_once_and_stops() {
    let (fake, subs) = fake_with_users(Flavor::Okta, 450).await;
    let status = |s: &String| {
        fake.management_user(s).unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let listable: std::collections::HashSet<String> = subs
        .iter()
        .filter(|s| status(s) != "DEPROVISIONED")
        .cloned()
        .collect();
    assert!(listable.len() < subs.len(), "some users are deprovisioned");

    // 500 is clamped to 200.
    let (ids, pages) = okta_pages(&fake.url("/api/v1/users?limit=500")).await;
    assert_eq!(pages, listable.len().div_ceil(200));
    let unique: std::collections::HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), unique.len(), "nobody twice");
    assert_eq!(unique, listable);
    assert!(ids.iter().all(|id| id.starts_with("00u") && id.len() == 20));

    // A search sees every status and pages the same way.
    let (gone, _) =
        okta_pages(&fake.url("/api/v1/users?limit=5&search=status%20eq%20%22DEPROVISIONED%22"))
            .await;
    assert_eq!(gone.len(), subs.len() - listable.len());
    let mut times: Vec<String> = subs
        .iter()
        .map(|s| {
            fake.management_user(s).unwrap()["lastUpdated"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    times.sort();
    let mut url = url::Url::parse(&fake.url("/api/v1/users")).unwrap();
    url.query_pairs_mut()
        .append_pair("limit", "50")
        .append_pair("search", &format!("lastUpdated gt \"{}\"", times[299]));
    let (recent, pages) = okta_pages(url.as_str()).await;
    assert_eq!(recent.len(), subs.len() - 300);
    assert_eq!(pages, (subs.len() - 300).div_ceil(50));

    // The record, and the refusals.
    let user = fake.management_user(&subs[0]).unwrap();
    assert_eq!(user["profile"]["login"], "user0@example.com");
    assert_eq!(
        user["credentials"]["provider"],
        json!({"type": "OKTA", "name": "OKTA"})
    );
    let (status, _, body) = get_json(&fake.url("/api/v1/users"), "Bearer whatever").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errorCode"], "E0000011");
    assert_eq!(body["errorSummary"], "Invalid token provided");
    assert_eq!(
        fake.calls("okta_users"),
        listable.len().div_ceil(200) + gone.len().div_ceil(5) + pages + 1
    );
}

/// `ListUsers` signed with `secret` (the right one by default).
async fn list_users(fake: &FakeUpstream, body: &Value, secret: &str) -> (StatusCode, Value) {
    let payload = body.to_string();
    let amz_date = amz_date_now();
    let mut request = no_redirects()
        .post(fake.user_api_endpoint())
        .body(payload.clone());
    for (name, value) in sign_cognito_request_at(
        &fake.user_api_endpoint(),
        COGNITO_LIST_USERS,
        payload.as_bytes(),
        &amz_date,
        secret,
    ) {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

#[test]
fn the_sigv4_verifier_reproduces_aws_published_example() {
    // AWS General Reference, "Examples of the complete Signature Version 4
    // signing process": IAM ListUsers, 2015-08-30T12:36:00Z, us-east-1.
    let headers = [
        (
            "Content-Type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        ),
        ("Host".to_string(), "iam.amazonaws.com".to_string()),
        ("X-Amz-Date".to_string(), "20150830T123600Z".to_string()),
    ];
    let canonical = aws_canonical_request(
        "GET",
        "/",
        "Version=2010-05-08&Action=ListUsers",
        &headers,
        &["content-type", "host", "x-amz-date"],
        b"",
    );
    assert_eq!(
        canonical,
        "GET\n/\nAction=ListUsers&Version=2010-05-08\n\
         content-type:application/x-www-form-urlencoded; charset=utf-8\n\
         host:iam.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
         content-type;host;x-amz-date\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        aws_sigv4_signature(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20150830T123600Z",
            "us-east-1",
            "iam",
            &canonical,
        ),
        "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    );
}

#[tokio::test]
async fn cognito_list_users_pages_by_token_when_signed_and_refuses_bad_signatures() {
    let (fake, alice) = cognito_with_alice().await;
    let mut subs = fake.seed_users(130);
    subs.push(alice.sub.clone());

    let mut seen = vec![];
    let mut token: Option<String> = None;
    let mut sizes = vec![];
    loop {
        let mut body = json!({"UserPoolId": COGNITO_POOL_ID, "Limit": 60});
        if let Some(t) = &token {
            body["PaginationToken"] = json!(t);
        }
        let (status, page) = list_users(&fake, &body, AWS_SECRET_ACCESS_KEY).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let users = page["Users"].as_array().unwrap();
        sizes.push(users.len());
        for user in users {
            let sub = user["Attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["Name"] == "sub")
                .unwrap()["Value"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(user["UserCreateDate"].is_f64(), "{user}");
            assert!(user["Username"].is_string());
            assert_eq!(user["Enabled"], true);
            seen.push(sub);
        }
        match page.get("PaginationToken") {
            Some(t) => token = Some(t.as_str().unwrap().to_string()),
            None => break,
        }
    }
    assert_eq!(sizes, [60, 60, 11]);
    let unique: std::collections::HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), subs.len());
    assert!(subs.iter().all(|s| unique.contains(s)));
    let record = fake.management_user(&alice.sub).unwrap();
    assert!(
        record["Attributes"]
            .as_array()
            .unwrap()
            .contains(&json!({"Name": "custom:tenant", "Value": "acme"}))
    );

    let (status, found) = list_users(
        &fake,
        &json!({"UserPoolId": COGNITO_POOL_ID, "Filter": "email = \"user7@example.com\""}),
        AWS_SECRET_ACCESS_KEY,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["Users"].as_array().unwrap().len(), 1);

    let (status, too_many) = list_users(
        &fake,
        &json!({"UserPoolId": COGNITO_POOL_ID, "Limit": 61}),
        AWS_SECRET_ACCESS_KEY,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(too_many["__type"], "InvalidParameterException");

    let (status, bad) = list_users(
        &fake,
        &json!({"UserPoolId": COGNITO_POOL_ID}),
        "not-the-secret",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(bad["__type"], "InvalidSignatureException");

    // Signed, then the body changed on the way.
    let signed = sign_cognito_request(
        &fake.user_api_endpoint(),
        COGNITO_LIST_USERS,
        json!({"UserPoolId": COGNITO_POOL_ID, "Limit": 1})
            .to_string()
            .as_bytes(),
    );
    let mut request = no_redirects()
        .post(fake.user_api_endpoint())
        .body(json!({"UserPoolId": COGNITO_POOL_ID, "Limit": 2}).to_string());
    for (name, value) in &signed {
        request = request.header(name, value);
    }
    let answer = request.send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        answer.json::<Value>().await.unwrap()["__type"],
        "InvalidSignatureException"
    );

    let unsigned = call_user_api(
        &fake,
        COGNITO_LIST_USERS,
        &json!({"UserPoolId": COGNITO_POOL_ID}),
    )
    .await;
    assert_aws_error(
        &unsigned,
        StatusCode::FORBIDDEN,
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
    );
    let stranger = signed
        .iter()
        .map(|(n, v)| {
            (
                n.clone(),
                v.replace(AWS_ACCESS_KEY_ID, "AKIASOMEONEELSE00000"),
            )
        })
        .fold(
            no_redirects().post(fake.user_api_endpoint()),
            |r, (n, v)| r.header(n, v),
        )
        .body(json!({"UserPoolId": COGNITO_POOL_ID, "Limit": 1}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        stranger.json::<Value>().await.unwrap()["__type"],
        "UnrecognizedClientException"
    );
    assert_eq!(
        fake.calls("list_users"),
        3 + 1 + 5,
        "three pages, a filtered list, five refusals"
    );
}

#[tokio::test]
async fn keycloak_first_and_max_cover_everyone_in_username_order_and_count_matches() {
    let (fake, subs) = fake_with_users(Flavor::Keycloak, 230).await;
    let token = format!("Bearer {}", management_token(&fake).await);
    let mut seen = vec![];
    let mut usernames = vec![];
    for first in (0..).step_by(100) {
        let (status, _, body) = get_json(
            &fake.url(&format!(
                "/admin/realms/acme/users?first={first}&max=100&briefRepresentation=false"
            )),
            &token,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let users = body.as_array().unwrap();
        for user in users {
            seen.push(user["id"].as_str().unwrap().to_string());
            usernames.push(user["username"].as_str().unwrap().to_string());
            assert!(user["createdTimestamp"].is_i64());
        }
        if users.len() < 100 {
            break;
        }
    }
    let unique: std::collections::HashSet<&String> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (subs.len(), subs.len()));
    assert!(
        usernames.windows(2).all(|w| w[0] < w[1]),
        "ordered by username"
    );

    let (status, _, count) = get_json(&fake.url("/admin/realms/acme/users/count"), &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count, json!(subs.len()));
    assert_eq!(fake.user_count(), subs.len());

    let (_, _, full) = get_json(
        &fake.url("/admin/realms/acme/users?max=1&briefRepresentation=false"),
        &token,
    )
    .await;
    assert!(full[0]["attributes"].is_object(), "{full}");
    let (_, _, brief) = get_json(&fake.url("/admin/realms/acme/users?max=1"), &token).await;
    assert!(brief[0].get("attributes").is_none(), "{brief}");

    let (status, _, body) = get_json(&fake.url("/admin/realms/acme/users"), "Bearer nope").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({"error": "HTTP 401 Unauthorized"}));
}

#[tokio::test]
async fn the_management_token_bucket_answers_429_with_retry_after_once_empty() {
    let (auth0, _) = fake_with_users(Flavor::Auth0, 10).await;
    let token = format!("Bearer {}", management_token(&auth0).await);
    auth0.set_management_rate_limit(0.5, 3);
    let url = auth0.url("/api/v2/users?per_page=5");
    for remaining in ["2", "1", "0"] {
        let (status, headers, _) = get_json(&url, &token).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header_str(&headers, "x-ratelimit-limit"), "3");
        assert_eq!(header_str(&headers, "x-ratelimit-remaining"), remaining);
    }
    let (status, headers, body) = get_json(&url, &token).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["statusCode"], 429);
    let retry: u64 = header_str(&headers, "retry-after").parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(header_str(&headers, "x-ratelimit-remaining"), "0");
    let reset: i64 = header_str(&headers, "x-ratelimit-reset").parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(reset > now && reset <= now + 7, "{reset} vs {now}");
    assert_eq!(auth0.management_429s(), 1);

    let (okta, _) = fake_with_users(Flavor::Okta, 10).await;
    okta.set_management_rate_limit(0.5, 1);
    let auth = format!("SSWS {OKTA_API_TOKEN}");
    let (status, headers, _) = get_json(&okta.url("/api/v1/users"), &auth).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header_str(&headers, "x-rate-limit-limit"), "1");
    assert_eq!(header_str(&headers, "x-rate-limit-remaining"), "0");
    let (status, headers, body) = get_json(&okta.url("/api/v1/users"), &auth).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["errorCode"], "E0000047");
    assert!(headers.contains_key("retry-after"));
    assert!(headers.contains_key("x-rate-limit-reset"));

    let (cognito, _) = cognito_with_alice().await;
    cognito.set_management_rate_limit(0.5, 1);
    let body = json!({"UserPoolId": COGNITO_POOL_ID});
    assert_eq!(
        list_users(&cognito, &body, AWS_SECRET_ACCESS_KEY).await.0,
        StatusCode::OK
    );
    let (status, throttled) = list_users(&cognito, &body, AWS_SECRET_ACCESS_KEY).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        throttled,
        json!({"__type": "TooManyRequestsException", "message": "Rate exceeded"})
    );
    assert_eq!(cognito.management_429s(), 1);
}

#[tokio::test]
async fn fail_next_and_rate_limit_next_answer_exactly_n_times_then_succeed() {
    let (auth0, _) = fake_with_users(Flavor::Auth0, 5).await;
    let token = format!("Bearer {}", management_token(&auth0).await);
    auth0.fail_next("users", 2);
    let url = auth0.url("/api/v2/users");
    for _ in 0..2 {
        let (status, _, body) = get_json(&url, &token).await;
        assert!(status.is_server_error(), "{status}");
        assert_eq!(body["statusCode"], status.as_u16());
    }
    let (status, _, body) = get_json(&url, &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_array().unwrap().len(), 6);
    assert_eq!(auth0.calls("users"), 3);

    let (okta, _) = fake_with_users(Flavor::Okta, 5).await;
    let auth = format!("SSWS {OKTA_API_TOKEN}");
    okta.fail_next("okta_users", 1);
    okta.rate_limit_next("okta_users", 2, 7);
    let (status, _, body) = get_json(&okta.url("/api/v1/users"), &auth).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["errorCode"], "E0000009");
    for _ in 0..2 {
        let (status, headers, _) = get_json(&okta.url("/api/v1/users"), &auth).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header_str(&headers, "retry-after"), "7");
    }
    let (status, _, _) = get_json(&okta.url("/api/v1/users"), &auth).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(okta.management_429s(), 2);
    assert_eq!(okta.calls("okta_users"), 4);
}

#[tokio::test]
async fn management_records_follow_updates_and_removals() {
    let (fake, subs) = fake_with_users(Flavor::Auth0, 50).await;
    let token = format!("Bearer {}", management_token(&fake).await);
    let target = &subs[3];
    let before = fake.management_user(target).unwrap();
    fake.update_management_user(
        target,
        json!({"email": "moved@example.com", "user_metadata": {"locale": "nl"}}),
    );
    let after = fake.management_user(target).unwrap();
    assert_eq!(after["email"], "moved@example.com");
    assert_eq!(after["user_metadata"]["locale"], "nl");
    assert!(after["updated_at"].as_str() > before["updated_at"].as_str());
    let (_, _, newest) = get_json(
        &fake.url("/api/v2/users?sort=updated_at:-1&per_page=1"),
        &token,
    )
    .await;
    assert_eq!(
        newest[0]["user_id"], *target,
        "the latest update sorts first"
    );

    fake.remove_user(target);
    assert_eq!(fake.user_count(), subs.len() - 1);
    assert!(fake.management_user(target).is_none());
    let (_, _, all) = get_json(&fake.url("/api/v2/users?per_page=100"), &token).await;
    assert_eq!(all.as_array().unwrap().len(), subs.len() - 1);

    let okta = FakeUpstream::start(Flavor::Okta).await;
    let id = okta.seed_users(1).remove(0);
    okta.update_management_user(&id, json!({"profile": {"firstName": "Renamed"}}));
    assert_eq!(
        okta.management_user(&id).unwrap()["profile"]["firstName"],
        "Renamed"
    );
    let cognito = FakeUpstream::start(Flavor::Cognito).await;
    let id = cognito.seed_users(1).remove(0);
    cognito.update_management_user(&id, json!({"custom:plan": "enterprise"}));
    assert!(
        cognito.management_user(&id).unwrap()["Attributes"]
            .as_array()
            .unwrap()
            .contains(&json!({"Name": "custom:plan", "Value": "enterprise"}))
    );
}

#[tokio::test]
async fn seeding_ten_thousand_users_gives_distinct_users_and_instants() {
    let fake = FakeUpstream::start(Flavor::Keycloak).await;
    let subs = fake.seed_users(10_000);
    assert_eq!(subs.len(), 10_000);
    assert_eq!(fake.user_count(), 10_000);
    let created: std::collections::HashSet<i64> = subs
        .iter()
        .take(500)
        .map(|s| {
            fake.management_user(s).unwrap()["createdTimestamp"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(created.len(), 500, "distinct creation instants");
}

#[tokio::test]
async fn okta_partial_updates_keep_other_profile_properties_and_refuse_undeclared_ones() {
    let fake = FakeUpstream::start(Flavor::Okta).await;
    let sub = Flavor::Okta.sample_sub(1);
    let mut dana = FakeUser::new(&sub, "dana@example.com", "pw");
    dana.name = Some("Dana Scully".into());
    fake.add_user(dana);
    let before = fake.management_user(&sub).unwrap();
    let auth = format!("SSWS {OKTA_API_TOKEN}");
    let post = |id: &str, body: Value, auth: Option<&str>| {
        let mut request = no_redirects()
            .post(fake.url(&format!("/api/v1/users/{id}")))
            .json(&body);
        if let Some(a) = auth {
            request = request.header("authorization", a);
        }
        async move {
            let r = request.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let mark = json!({"profile": {"switchyardMigratedAt": "2026-11-26T17:30:56Z"}});

    let (status, body) = post(&sub, mark.clone(), None).await;
    assert_eq!(
        (status, body["errorCode"].clone()),
        (StatusCode::UNAUTHORIZED, json!("E0000011"))
    );
    let (status, body) = post(
        &sub,
        json!({"profile": {"favouriteColour": "red"}}),
        Some(&auth),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errorCode"], "E0000001");
    assert!(
        body["errorCauses"][0]["errorSummary"]
            .as_str()
            .unwrap()
            .contains("favouriteColour")
    );
    let (status, body) = post("00uNoSuchUser0000000", mark.clone(), Some(&auth)).await;
    assert_eq!(
        (status, body["errorCode"].clone()),
        (StatusCode::NOT_FOUND, json!("E0000007"))
    );
    assert_eq!(
        fake.management_writes(),
        vec![],
        "refused writes are not recorded"
    );

    let (status, body) = post(&sub, mark.clone(), Some(&auth)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = fake.management_user(&sub).unwrap();
    assert_eq!(
        after["profile"]["switchyardMigratedAt"],
        "2026-11-26T17:30:56Z"
    );
    for kept in ["firstName", "lastName", "login", "email"] {
        assert_eq!(
            after["profile"][kept], before["profile"][kept],
            "{kept} keeps its value"
        );
    }
    assert_ne!(after["lastUpdated"], before["lastUpdated"]);
    assert_eq!(body, after, "the answer is the updated user");
    let writes = fake.management_writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(
        (writes[0].endpoint.as_str(), writes[0].user_id.as_str()),
        ("okta_update_user", sub.as_str())
    );
    assert_eq!(fake.calls("okta_update_user"), 4);
}

#[tokio::test]
async fn cognito_admin_update_user_attributes_is_signed_and_held_to_the_pool_schema() {
    let (fake, alice) = cognito_with_alice().await;
    let update = |body: Value, signed: bool| {
        let payload = body.to_string();
        let mut request = no_redirects()
            .post(fake.user_api_endpoint())
            .body(payload.clone());
        if signed {
            for (name, value) in sign_cognito_request(
                &fake.user_api_endpoint(),
                COGNITO_ADMIN_UPDATE_USER_ATTRIBUTES,
                payload.as_bytes(),
            ) {
                request = request.header(name, value);
            }
        } else {
            request = request
                .header("content-type", "application/x-amz-json-1.1")
                .header("x-amz-target", COGNITO_ADMIN_UPDATE_USER_ATTRIBUTES);
        }
        async move {
            let r = request.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let body = |username: &str, name: &str| {
        json!({"UserPoolId": COGNITO_POOL_ID, "Username": username,
               "UserAttributes": [{"Name": name, "Value": "2026-11-26T17:30:56Z"}]})
    };

    let (status, answer) = update(body(&alice.email, "custom:migrated_at"), false).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(answer["__type"], "MissingAuthenticationTokenException");
    let (status, answer) = update(body(&alice.email, "custom:undeclared"), true).await;
    assert_eq!(
        (status, answer["__type"].clone()),
        (StatusCode::BAD_REQUEST, json!("InvalidParameterException"))
    );
    let (status, answer) = update(body("nobody@example.com", "custom:migrated_at"), true).await;
    assert_eq!(
        (status, answer["__type"].clone()),
        (StatusCode::BAD_REQUEST, json!("UserNotFoundException"))
    );
    assert_eq!(fake.management_writes(), vec![]);

    let (status, answer) = update(body(&alice.email, "custom:migrated_at"), true).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({})));
    let attributes = fake.management_user(&alice.sub).unwrap()["Attributes"].clone();
    let value = |name: &str| {
        attributes
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["Name"] == name)
            .map(|a| a["Value"].clone())
    };
    assert_eq!(
        value("custom:migrated_at"),
        Some(json!("2026-11-26T17:30:56Z"))
    );
    assert_eq!(
        value("email"),
        Some(json!(alice.email)),
        "other attributes stay"
    );
    assert_eq!(fake.management_writes()[0].user_id, alice.sub);
    assert_eq!(fake.calls("admin_update_user_attributes"), 4);
}
