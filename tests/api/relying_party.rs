//! The whole authorization-code + PKCE flow with the `openidconnect` crate
//! as the relying party: discovery, ID-token validation against the JWKS,
//! userinfo and refresh, exactly as an application would run them.

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreProviderMetadata, CoreUserInfoClaims,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn an_openidconnect_relying_party_logs_in_validates_calls_userinfo_and_refreshes() {
    let app = spawn_app().await;
    let alice = app.with_alice_and_web().await;
    let http = no_redirects();

    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(app.issuer.clone()).unwrap(), &http)
            .await
            .expect("discovery");
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new("web".into()),
        Some(ClientSecret::new(SECRET.into())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());

    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge)
        .url();

    // The browser part: follow the authorization URL through the login pages.
    let browser = browser();
    let start = browser.get(auth_url.as_str()).send().await.unwrap();
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let done = app
        .login(
            &browser,
            &location(start.headers()),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    let back = query_of(&location(done.headers()));
    assert_eq!(back["state"], *csrf.secret(), "state round-trips");
    assert_eq!(back["iss"], app.issuer, "RFC 9207 iss in the response");

    let tokens = client
        .exchange_code(AuthorizationCode::new(back["code"].clone()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange");
    let id_token = tokens.id_token().expect("an ID token");
    let verifier = client.id_token_verifier();
    let claims = id_token
        .claims(&verifier, &nonce)
        .expect("the ID token validates (signature, iss, aud, exp, nonce)");
    assert_eq!(claims.subject().as_str(), alice.id);
    assert_eq!(
        claims.email().map(|e| e.as_str()),
        Some("alice@example.com")
    );
    assert!(claims.auth_time().is_some());
    let expected_hash = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims.access_token_hash(),
        Some(&expected_hash),
        "at_hash binds the access token"
    );

    let info: CoreUserInfoClaims = client
        .user_info(tokens.access_token().clone(), None)
        .unwrap()
        .request_async(&http)
        .await
        .expect("userinfo");
    assert_eq!(info.subject().as_str(), alice.id);
    assert_eq!(info.email().map(|e| e.as_str()), Some("alice@example.com"));

    let refreshed = client
        .exchange_refresh_token(tokens.refresh_token().expect("a refresh token"))
        .unwrap()
        .request_async(&http)
        .await
        .expect("refresh");
    assert_ne!(
        refreshed.refresh_token().unwrap().secret(),
        tokens.refresh_token().unwrap().secret(),
        "rotated"
    );
    let refreshed_id = refreshed.id_token().expect("an ID token on refresh");
    // OIDC Core §12.2: no nonce on refresh; the claims must still validate.
    let claims = refreshed_id
        .claims(&verifier, |_: Option<&Nonce>| Ok(()))
        .expect("refreshed ID token validates");
    assert_eq!(claims.subject().as_str(), alice.id);
}

#[tokio::test]
async fn a_public_client_completes_the_flow_with_pkce_and_no_secret() {
    let app = spawn_app().await;
    app.add_client("spa", true).await;
    app.add_user("bob@example.com", PASSWORD).await;
    let (verifier, challenge) = pkce();
    let params = app
        .code_for(
            &browser(),
            &AuthRequest::new("spa", Some(&challenge)),
            "bob@example.com",
        )
        .await;
    let response = app
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &params["code"]),
                ("redirect_uri", REDIRECT),
                ("client_id", "spa"),
                ("code_verifier", &verifier),
            ],
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["access_token"].is_string() && body["id_token"].is_string());
}
