//! Lazy migration on login and per-user cutover, against the fake upstream.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use switchyard::config::{Cohort, Phase};
use switchyard::store::UserState;

use crate::helpers::*;
use crate::upstream::{UpstreamApp, spawn_with_upstream};
use switchyard_kit::fake::{FakeUser, Flavor, Mode};

const SUB: &str = "auth0|6a1b2c3d4e5f60718293a4b5";

fn carol() -> FakeUser {
    let mut u = FakeUser::new(SUB, "carol@example.com", PASSWORD);
    u.name = Some("Carol Danvers".into());
    u.app_metadata = serde_json::json!({"roles": ["pilot"]});
    u
}

/// Identifier, then password, on Switchyard's own pages.
pub(crate) async fn password_login(
    t: &UpstreamApp,
    client: &str,
    email: &str,
    password: &str,
) -> reqwest::Response {
    t.app.sign_in(&browser(), client, email, password).await
}

/// Password-grant calls at the upstream, plain or Auth0's password-realm.
fn password_calls(t: &UpstreamApp) -> usize {
    t.fake.calls("token:password")
        + t.fake
            .calls("token:http://auth0.com/oauth/grant-type/password-realm")
}

async fn id_token_after(t: &UpstreamApp, response: reqwest::Response) -> Value {
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "back to the client"
    );
    let code = query_of(&location(response.headers()))["code"].clone();
    let tokens: Value = t.app.exchange(&code, None).await.json().await.unwrap();
    jwt_claims(tokens["id_token"].as_str().unwrap())
}

async fn lazy() -> UpstreamApp {
    spawn_with_upstream(Flavor::Auth0, |s| {
        s.upstream.as_mut().unwrap().connection = Some("Username-Password-Authentication".into());
        s.password.failure_floor_ms = 50;
    })
    .await
}

#[tokio::test]
async fn the_first_login_migrates_and_the_second_is_local_with_zero_upstream_calls() {
    let t = lazy().await;
    t.fake.add_user(carol());
    let first = id_token_after(
        &t,
        password_login(&t, "web", "carol@example.com", PASSWORD).await,
    )
    .await;
    assert_eq!(first["sub"], SUB, "sub is the upstream id");
    assert_eq!(password_calls(&t), 1);

    let user = t
        .app
        .state
        .db
        .get_user(SUB)
        .await
        .unwrap()
        .expect("the user is local now");
    assert_eq!(user.state, UserState::Migrated);
    assert_eq!(user.route.as_deref(), Some("password"));
    assert!(user.migrated_at.is_some());
    let credential = t
        .app
        .state
        .db
        .get_password(SUB)
        .await
        .unwrap()
        .expect("a local credential");
    assert!(credential.hash.starts_with("$argon2id$"));
    let events = t.app.state.db.recent_events(20).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "user_migrated" && e.user_id.as_deref() == Some(SUB)),
        "audited"
    );

    let calls_before = t.fake.calls("token")
        + t.fake.calls("userinfo")
        + t.fake.calls("discovery")
        + t.fake.calls("jwks");
    let second = id_token_after(
        &t,
        password_login(&t, "web", "carol@example.com", PASSWORD).await,
    )
    .await;
    let calls_after = t.fake.calls("token")
        + t.fake.calls("userinfo")
        + t.fake.calls("discovery")
        + t.fake.calls("jwks");
    assert_eq!(
        calls_after, calls_before,
        "a migrated user's login makes zero upstream calls"
    );
    assert_eq!(second["sub"], first["sub"], "the same sub");
    assert_eq!(
        second["https://example.com/roles"], first["https://example.com/roles"],
        "the same claims"
    );
    assert_eq!(second["nickname"], first["nickname"]);
}

#[tokio::test]
async fn every_upstream_answer_gives_its_outcome_and_no_half_made_user() {
    // Wrong password, unknown user, blocked: the same failure page.
    let t = lazy().await;
    let mut blocked = FakeUser::new(
        "auth0|000000000000000000000b10",
        "blocked@example.com",
        PASSWORD,
    );
    blocked.blocked = true;
    t.fake.add_user(blocked);
    t.fake.add_user(carol());
    for (email, password) in [
        ("carol@example.com", "wrong"),
        ("nobody@example.com", PASSWORD),
        ("blocked@example.com", PASSWORD),
    ] {
        let r = password_login(&t, "web", email, password).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{email}");
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("Wrong email, username or password.")
        );
    }
    assert!(
        t.app
            .state
            .db
            .list_users(None, 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing half-made"
    );

    // MFA required upstream: the redirect track, the user stays unmigrated.
    let mut mfa = FakeUser::new(
        "auth0|0000000000000000000000f0",
        "mfa@example.com",
        PASSWORD,
    );
    mfa.mfa_required = true;
    t.fake.add_user(mfa);
    let r = password_login(&t, "web", "mfa@example.com", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let target = location(r.headers());
    assert!(
        target.starts_with(&t.fake.base),
        "sent to the upstream's own page: {target}"
    );
    assert_eq!(query_of(&target)["login_hint"], "mfa@example.com");
    assert!(
        t.app
            .state
            .db
            .get_user("auth0|0000000000000000000000f0")
            .await
            .unwrap()
            .is_none()
    );

    // Rate limited and down: a clear page, no user.
    for mode in [
        Mode::RateLimited {
            retry_after_secs: 10,
        },
        Mode::Down,
        Mode::Fail500,
    ] {
        t.fake.set_mode(mode);
        let r = password_login(&t, "web", "carol@example.com", PASSWORD).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.text().await.unwrap().contains("temporarily unavailable"));
        assert!(t.app.state.db.get_user(SUB).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn a_crash_between_the_migration_steps_leaves_nothing_half_made() {
    let t = lazy().await;
    t.fake.add_user(carol());
    // Fail the credential write, after the user row was written in the
    // same transaction.
    let pool = sqlx::AnyPool::connect(&t.app._isolated.database_url)
        .await
        .unwrap();
    let ddl: &[&str] = match backend() {
        Backend::Embedded => &[
            "CREATE TRIGGER crash BEFORE INSERT ON credentials BEGIN SELECT RAISE(ABORT, 'injected crash'); END",
        ],
        Backend::PostgresRedis => &[
            "CREATE FUNCTION crash() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected crash'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER crash BEFORE INSERT ON credentials FOR EACH ROW EXECUTE FUNCTION crash()",
        ],
    };
    for statement in ddl {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let r = password_login(&t, "web", "carol@example.com", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = r.text().await.unwrap();
    assert!(
        !body.contains("injected crash"),
        "no internal text reaches the page"
    );
    assert!(
        t.app.state.db.get_user(SUB).await.unwrap().is_none(),
        "no user without its credential"
    );
    let identities: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM identities")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(identities, 0);
}

#[tokio::test]
async fn imported_bcrypt_pbkdf2_argon2_and_scrypt_hashes_verify_and_are_upgraded() {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let t = lazy().await;
    let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap();
    let keycloak = {
        let mut out = vec![0u8; 64];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
            PASSWORD.as_bytes(),
            b"0123456789abcdef",
            27500,
            &mut out,
        );
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        switchyard::password::imported::keycloak_credential(
            &serde_json::json!({"value": b64.encode(&out), "salt": b64.encode(b"0123456789abcdef")}).to_string(),
            r#"{"hashIterations":27500,"algorithm":"pbkdf2-sha256"}"#,
        )
        .unwrap()
    };
    let hashes = [
        (
            "bcrypt@example.com",
            bcrypt::hash(PASSWORD, 4)
                .unwrap()
                .replacen("$2b$", "$2y$", 1),
        ),
        ("keycloak@example.com", keycloak),
        (
            "pbkdf2@example.com",
            pbkdf2::Pbkdf2
                .hash_password(PASSWORD.as_bytes(), &salt)
                .unwrap()
                .to_string(),
        ),
        (
            "scrypt@example.com",
            scrypt::Scrypt
                .hash_password_customized(
                    PASSWORD.as_bytes(),
                    None,
                    None,
                    scrypt::Params::new(10, 8, 1, 32).unwrap(),
                    &salt,
                )
                .unwrap()
                .to_string(),
        ),
        (
            "argon2i@example.com",
            argon2::Argon2::new(
                argon2::Algorithm::Argon2i,
                argon2::Version::V0x13,
                argon2::Params::default(),
            )
            .hash_password(PASSWORD.as_bytes(), &salt)
            .unwrap()
            .to_string(),
        ),
    ];
    for (email, hash) in hashes {
        let algorithm = switchyard::password::imported::algorithm_of(&hash);
        let new = switchyard::store::NewUser {
            profile: switchyard::store::Profile {
                email: Some(email.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let user = t
            .app
            .state
            .db
            .create_user(&new, Some((&hash, algorithm)))
            .await
            .unwrap();
        let wrong = password_login(&t, "web", email, "not it").await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{email}");
        let ok = password_login(&t, "web", email, PASSWORD).await;
        assert_eq!(ok.status(), StatusCode::SEE_OTHER, "{email} ({algorithm})");
        let stored = t
            .app
            .state
            .db
            .get_password(&user.id)
            .await
            .unwrap()
            .unwrap();
        assert!(
            stored.hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{email}: upgraded to argon2id"
        );
    }
    assert_eq!(
        t.fake.calls("token"),
        0,
        "imported users never reach the upstream"
    );
}

#[tokio::test]
async fn local_only_never_touches_the_upstream_and_pending_users_are_told_to_reset() {
    let t = spawn_with_upstream(Flavor::Auth0, |s| {
        s.cutover.phase = Phase::LocalOnly;
        s.password.failure_floor_ms = 50;
    })
    .await;
    t.fake.add_user(carol());
    // Carol is known (a backfilled shadow) but has no local password.
    t.shadow(SUB, "carol@example.com").await;
    t.app.add_user("local@example.com", PASSWORD).await;

    let r = password_login(&t, "web", "carol@example.com", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The answer of a wrong password, which offers the reset link to all.
    let page = r.text().await.unwrap();
    assert!(
        page.contains("Wrong email, username or password.") && page.contains("Forgot password?"),
        "{page}"
    );
    let r = password_login(&t, "web", "local@example.com", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let total: usize = [
        "discovery",
        "jwks",
        "authorize",
        "token",
        "userinfo",
        "revoke",
    ]
    .iter()
    .map(|w| t.fake.calls(w))
    .sum();
    assert_eq!(total, 0, "no upstream call at all in local_only");
}

#[tokio::test]
async fn phases_pins_cohorts_and_client_overrides_route_as_documented() {
    let t = lazy().await;
    t.fake.add_user(carol());
    // Migrate carol, then pin her back to the upstream: her next login goes there.
    id_token_after(
        &t,
        password_login(&t, "web", "carol@example.com", PASSWORD).await,
    )
    .await;
    assert_eq!(password_calls(&t), 1);
    assert!(
        t.app
            .state
            .db
            .set_pin(SUB, Some("force_upstream"))
            .await
            .unwrap()
    );
    id_token_after(
        &t,
        password_login(&t, "web", "carol@example.com", PASSWORD).await,
    )
    .await;
    assert_eq!(
        password_calls(&t),
        2,
        "rollback: the pinned user is verified upstream again"
    );
    t.app.state.db.set_pin(SUB, None).await.unwrap();
    id_token_after(
        &t,
        password_login(&t, "web", "carol@example.com", PASSWORD).await,
    )
    .await;
    assert_eq!(password_calls(&t), 2, "unpinned: local again");

    // A cohort that excludes the user's domain: passed through (redirect track).
    let mut rules = (*t.app.state.cutover.rules().await.unwrap()).clone();
    rules.cohorts = vec![Cohort {
        percent: None,
        email_domains: vec!["example.org".into()],
    }];
    switchyard::cutover::store(&*t.app.state.db, &rules)
        .await
        .unwrap();
    tokio::time::sleep(switchyard::cutover::RELOAD_INTERVAL + Duration::from_millis(200)).await;
    t.fake.add_user(FakeUser::new(
        "auth0|00000000000000000000d0e1",
        "dave@example.com",
        PASSWORD,
    ));
    let r = password_login(&t, "web", "dave@example.com", PASSWORD).await;
    assert!(
        location(r.headers()).starts_with(&t.fake.base),
        "not in a cohort: redirect track"
    );
    t.fake.add_user(FakeUser::new(
        "auth0|00000000000000000000e0e1",
        "erin@example.org",
        PASSWORD,
    ));
    let r = password_login(&t, "web", "erin@example.org", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        !location(r.headers()).starts_with(&t.fake.base),
        "in the cohort: migrated at login"
    );

    // A per-client override puts one application in passthrough.
    rules.cohorts.clear();
    rules.clients.insert("legacy".into(), Phase::Passthrough);
    switchyard::cutover::store(&*t.app.state.db, &rules)
        .await
        .unwrap();
    t.app.add_client("legacy", false).await;
    tokio::time::sleep(switchyard::cutover::RELOAD_INTERVAL + Duration::from_millis(200)).await;
    let r = password_login(&t, "legacy", "dave@example.com", PASSWORD).await;
    assert!(
        location(r.headers()).starts_with(&t.fake.base),
        "the legacy client passes through"
    );
}

#[tokio::test]
async fn a_runtime_phase_change_is_seen_by_a_second_instance() {
    let t = lazy().await;
    t.fake.add_user(carol());
    let iso = &t.app._isolated;
    let (url, redis, prefix, issuer) = (
        iso.database_url.clone(),
        iso.redis_url.clone(),
        iso.prefix.clone(),
        t.fake.issuer(),
    );
    let second = spawn_app_with(move |s| {
        s.database_url = url;
        s.redis_url = redis;
        s.session_prefix = prefix;
        let mut up = switchyard::config::UpstreamSettings::for_provider("auth0");
        up.issuer = Some(issuer);
        up.client_secret_env = Some("SWITCHYARD_TEST_UPSTREAM_SECRET".into());
        up.token_keys_env = "SWITCHYARD_TEST_TOKEN_KEYS".into();
        s.upstream = Some(up);
        s.password.failure_floor_ms = 50;
    })
    .await;
    let second = UpstreamApp {
        app: second,
        fake: switchyard_kit::fake::FakeUpstream::start(Flavor::Auth0).await,
    };
    // Both serve the same database: the CLI's write is what they share.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["cutover", "set-phase", "local_only"])
        .env("SWITCHYARD_DATABASE_URL", &t.app._isolated.database_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(switchyard::cutover::RELOAD_INTERVAL + Duration::from_millis(300)).await;
    // In local_only carol, who has no password here, is refused like a
    // wrong password instead of being migrated.
    let r = password_login(&second, "web", "carol@example.com", PASSWORD).await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "the second instance follows the new phase"
    );
    assert!(r.text().await.unwrap().contains("Forgot password?"));
    assert_eq!(t.fake.calls("token"), 0);
}

#[tokio::test]
async fn explain_prints_the_route_and_why() {
    let t = lazy().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["cutover", "explain", "someone@example.com"])
        .env("SWITCHYARD_DATABASE_URL", &t.app._isolated.database_url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("route: local") && text.contains("no upstream is configured"),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_user_wrong_password_and_upstream_failure_take_the_same_time() {
    // The product's default floor: above the slowest track (an argon2id
    // verification) even while the rest of the suite, browsers included,
    // loads the machine.
    let t = spawn_with_upstream(Flavor::Auth0, |s| {
        s.password.failure_floor_ms = 400;
        s.throttle.account_failures = 1000;
        s.throttle.ip_failures = 1000;
    })
    .await;
    t.fake.add_user(carol());
    id_token_after(
        &t,
        password_login(&t, "web", "carol@example.com", PASSWORD).await,
    )
    .await; // migrated: local hash
    t.fake.add_user(FakeUser::new(
        "auth0|00000000000000000000f00d",
        "upstream@example.com",
        PASSWORD,
    ));
    let cases = [
        "nobody@example.com",
        "carol@example.com",
        "upstream@example.com",
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for c in interleaved(cases.len(), 12) {
        let browser = browser();
        let (action, mut fields) = t.app.identifier_form(&browser, "web").await;
        fields.insert("username".into(), cases[c].into());
        fields.insert("password".into(), "a wrong password".into());
        let started = std::time::Instant::now();
        let r = browser
            .post(t.app.url(&action))
            .form(&fields)
            .send()
            .await
            .unwrap();
        samples[c].push(started.elapsed().as_secs_f64());
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert_p50s_within(samples, 1.05);
}

#[tokio::test]
async fn a_legacy_client_uses_the_password_grant_with_lazy_migration() {
    let t = lazy().await;
    t.fake.add_user(carol());
    let mut legacy = t.app.add_client("legacy", false).await;
    legacy
        .grant_types
        .push(switchyard::store::GrantType::Password);
    t.app.state.db.upsert_client(&legacy).await.unwrap();
    for grant in [
        "password",
        "http://auth0.com/oauth/grant-type/password-realm",
    ] {
        let r = t
            .app
            .token(
                &[
                    ("grant_type", grant),
                    ("username", "carol@example.com"),
                    ("password", PASSWORD),
                    ("realm", "Username-Password-Authentication"),
                    ("scope", "openid profile"),
                ],
                Some(("legacy", SECRET)),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK, "{grant}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(jwt_claims(body["id_token"].as_str().unwrap())["sub"], SUB);
    }
    assert_eq!(
        password_calls(&t),
        1,
        "migrated by the first grant, local for the second"
    );
    let wrong = t
        .app
        .token(
            &[
                ("grant_type", "password"),
                ("username", "carol@example.com"),
                ("password", "nope"),
            ],
            Some(("legacy", SECRET)),
        )
        .await;
    assert_oauth_error(wrong, StatusCode::BAD_REQUEST, "invalid_grant").await;
    // Off by default: `web` does not list the grant.
    let refused = t
        .app
        .token(
            &[
                ("grant_type", "password"),
                ("username", "carol@example.com"),
                ("password", PASSWORD),
            ],
            Some(("web", SECRET)),
        )
        .await;
    assert_oauth_error(refused, StatusCode::BAD_REQUEST, "unauthorized_client").await;
}

#[tokio::test]
async fn okta_and_keycloak_users_migrate_on_first_login_and_wrong_passwords_fail() {
    for flavor in [Flavor::Okta, Flavor::Keycloak] {
        let t = spawn_with_upstream(flavor, |s| s.password.failure_floor_ms = 50).await;
        let sub = flavor.sample_sub(7);
        t.fake
            .add_user(FakeUser::new(&sub, "frank@example.com", PASSWORD));
        let wrong = password_login(&t, "web", "frank@example.com", "wrong").await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{flavor:?}");
        assert!(t.app.state.db.get_user(&sub).await.unwrap().is_none());
        let id = id_token_after(
            &t,
            password_login(&t, "web", "frank@example.com", PASSWORD).await,
        )
        .await;
        assert_eq!(id["sub"], sub.as_str(), "{flavor:?}");
        let user = t.app.state.db.get_user(&sub).await.unwrap().unwrap();
        assert_eq!(user.state, UserState::Migrated, "{flavor:?}");
        let before = t.fake.calls("token");
        id_token_after(
            &t,
            password_login(&t, "web", "frank@example.com", PASSWORD).await,
        )
        .await;
        assert_eq!(
            t.fake.calls("token"),
            before,
            "{flavor:?}: local from now on"
        );
    }
}

#[tokio::test]
async fn a_generic_provider_without_a_password_grant_keeps_the_redirect_track() {
    let t = spawn_with_upstream(Flavor::Generic, |s| s.password.failure_floor_ms = 50).await;
    t.fake
        .add_user(FakeUser::new("usr_1", "gina@example.com", PASSWORD));
    let r = password_login(&t, "web", "gina@example.com", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        location(r.headers()).starts_with(&t.fake.base),
        "discovery lists no password grant: redirect track"
    );
    assert_eq!(t.fake.calls("token"), 0);
}

#[tokio::test]
async fn cognito_users_migrate_through_initiate_auth_with_a_secret_hash() {
    let t = spawn_with_upstream(Flavor::Cognito, |s| s.password.failure_floor_ms = 50).await;
    let sub = Flavor::Cognito.sample_sub(3);
    let mut henry = FakeUser::new(&sub, "henry@example.com", PASSWORD);
    henry.app_metadata = serde_json::json!({"tenant": "acme"});
    t.fake.add_user(henry);
    let mut disabled = FakeUser::new(&Flavor::Cognito.sample_sub(4), "off@example.com", PASSWORD);
    disabled.blocked = true;
    t.fake.add_user(disabled);

    for (email, password) in [
        ("henry@example.com", "wrong"),
        ("nobody@example.com", PASSWORD),
        ("off@example.com", PASSWORD),
    ] {
        let r = password_login(&t, "web", email, password).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{email}");
    }
    let id = id_token_after(
        &t,
        password_login(&t, "web", "henry@example.com", PASSWORD).await,
    )
    .await;
    assert_eq!(id["sub"], sub.as_str(), "Cognito's sub is kept");
    assert_eq!(id["custom:tenant"], "acme", "custom attributes are carried");
    assert_eq!(id["cognito:username"], "henry@example.com");
    assert_eq!(
        t.app.state.db.get_user(&sub).await.unwrap().unwrap().state,
        UserState::Migrated
    );
    let calls = t.fake.calls("initiate_auth");
    id_token_after(
        &t,
        password_login(&t, "web", "henry@example.com", PASSWORD).await,
    )
    .await;
    assert_eq!(t.fake.calls("initiate_auth"), calls, "local from now on");

    // A required new password is a challenge: the hosted UI handles it.
    let ivy_sub = Flavor::Cognito.sample_sub(5);
    t.fake
        .add_user(FakeUser::new(&ivy_sub, "ivy@example.com", PASSWORD));
    t.fake.require_new_password(&ivy_sub);
    let r = password_login(&t, "web", "ivy@example.com", PASSWORD).await;
    assert!(
        location(r.headers()).starts_with(&t.fake.base),
        "NEW_PASSWORD_REQUIRED: redirect track"
    );

    // An SRP-only app client: the password track is not possible.
    t.fake.set_user_password_auth("switchyard", false);
    t.fake.add_user(FakeUser::new(
        &Flavor::Cognito.sample_sub(6),
        "jay@example.com",
        PASSWORD,
    ));
    let r = password_login(&t, "web", "jay@example.com", PASSWORD).await;
    assert!(
        location(r.headers()).starts_with(&t.fake.base),
        "SRP-only client: redirect track"
    );
}

/// Two hundred wrong passwords posted at once with one set of cookies: the
/// attempt is counted before the upstream is asked, so no more than the
/// account's limit ever reach it, and the rest are told to wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_wrong_passwords_reach_the_upstream_no_more_than_the_limit() {
    let t = spawn_with_upstream(Flavor::Auth0, |s| {
        s.upstream.as_mut().unwrap().connection = Some("Username-Password-Authentication".into());
        s.password.failure_floor_ms = 50;
        s.throttle.account_failures = 10;
        s.throttle.ip_failures = 10_000;
    })
    .await;
    t.fake.add_user(carol());
    let browser = browser();
    let (action, mut fields) = t.app.identifier_form(&browser, "web").await;
    fields.insert("username".into(), "carol@example.com".into());
    fields.insert("password".into(), "not her password".into());
    let posts = (0..200).map(|_| {
        let (browser, url, fields) = (browser.clone(), t.app.url(&action), fields.clone());
        tokio::spawn(async move {
            browser
                .post(url)
                .form(&fields)
                .send()
                .await
                .unwrap()
                .status()
        })
    });
    let statuses = futures::future::join_all(posts).await;
    let refused = statuses
        .iter()
        .filter(|s| *s.as_ref().unwrap() == StatusCode::TOO_MANY_REQUESTS)
        .count();
    let checked = statuses
        .iter()
        .filter(|s| *s.as_ref().unwrap() == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(refused + checked, 200, "{statuses:?}");
    assert!(checked <= 10, "{checked} wrong passwords were checked");
    assert!(
        password_calls(&t) <= 10,
        "{} reached the upstream",
        password_calls(&t)
    );
    // The right password waits out the window too.
    let r = password_login(&t, "web", "carol@example.com", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// An upstream that asks for MFA has just said the password was right. That
/// answer is padded like a failure and counted by the throttle before the
/// browser is sent to the upstream's page, so it cannot serve as an oracle.
#[tokio::test]
async fn an_mfa_answer_is_padded_and_counted_like_a_failure() {
    let t = spawn_with_upstream(Flavor::Auth0, |s| {
        s.upstream.as_mut().unwrap().connection = Some("Username-Password-Authentication".into());
        s.password.failure_floor_ms = 300;
        s.throttle.account_failures = 2;
    })
    .await;
    let mut mfa = FakeUser::new(
        "auth0|0000000000000000000000f1",
        "mfa@example.com",
        PASSWORD,
    );
    mfa.mfa_required = true;
    t.fake.add_user(mfa);
    for _ in 0..2 {
        let started = std::time::Instant::now();
        let r = password_login(&t, "web", "mfa@example.com", PASSWORD).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert!(
            location(r.headers()).starts_with(&t.fake.base),
            "to the upstream"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "padded to the failure floor"
        );
    }
    let r = password_login(&t, "web", "mfa@example.com", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "counted");
}

/// An upstream whose `sub` happens to equal the id of a user made here
/// (ids are the apps' `sub` on both sides): the upstream's user logging in
/// must not be merged into the local one, whose credential and profile
/// stay exactly as they were, and the local user still signs in.
#[tokio::test]
async fn an_upstream_sub_equal_to_a_local_id_never_touches_the_local_user() {
    let t = lazy().await;
    let dave = t
        .app
        .add_user("dave@example.com", "dave's own passphrase")
        .await;
    let before = t
        .app
        .state
        .db
        .get_password(&dave.id)
        .await
        .unwrap()
        .unwrap();
    // The upstream's user has the local user's id as its sub.
    t.fake
        .add_user(FakeUser::new(&dave.id, "mallory@example.com", PASSWORD));

    let r = password_login(&t, "web", "mallory@example.com", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "a readable refusal");
    let page = r.text().await.unwrap();
    assert!(page.contains("cannot sign in here"), "{page}");
    assert_eq!(
        password_calls(&t),
        1,
        "the upstream did verify the password"
    );

    let after = t
        .app
        .state
        .db
        .get_password(&dave.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.hash, before.hash, "the local credential is untouched");
    let user = t.app.state.db.get_user(&dave.id).await.unwrap().unwrap();
    assert_eq!(user.state, UserState::Local);
    assert_eq!(user.profile, dave.profile, "the local profile is untouched");
    assert_eq!(user.upstream, None, "not linked to the upstream");
    assert!(
        t.app
            .state
            .db
            .find_user_by_login("mallory@example.com")
            .await
            .unwrap()
            .is_none()
    );
    // Dave still signs in with his own password, locally.
    let id = id_token_after(
        &t,
        password_login(&t, "web", "dave@example.com", "dave's own passphrase").await,
    )
    .await;
    assert_eq!(id["sub"], dave.id.as_str());

    // Nor does an upstream get a user made under the local ids' prefix,
    // where a local user could later be minted with the same id.
    let squatted = format!(
        "{}0123456789abcdef01234567",
        switchyard::store::sql::LOCAL_ID_PREFIX
    );
    t.fake
        .add_user(FakeUser::new(&squatted, "trudy@example.com", PASSWORD));
    let r = password_login(&t, "web", "trudy@example.com", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(t.app.state.db.get_user(&squatted).await.unwrap().is_none());
}

/// An upstream user whose email the upstream has not verified migrates,
/// but the address is no login identifier for them: a second user who does
/// own the address is not blocked by it, and the first cannot sign in by it.
#[tokio::test]
async fn an_unverified_upstream_email_squats_no_address() {
    let t = lazy().await;
    let mut squatter = FakeUser::new(SUB, "sam@example.com", PASSWORD);
    squatter.email_verified = false;
    t.fake.add_user(squatter);
    id_token_after(
        &t,
        password_login(&t, "web", "sam@example.com", PASSWORD).await,
    )
    .await;
    let migrated = t.app.state.db.get_user(SUB).await.unwrap().unwrap();
    assert_eq!(migrated.state, UserState::Migrated);
    assert_eq!(
        migrated.profile.email.as_deref(),
        Some("sam@example.com"),
        "kept on the record"
    );

    // The address's owner, with it verified, is not blocked by the first.
    let hash = t
        .app
        .state
        .passwords
        .hash("sam's real passphrase".into())
        .await
        .unwrap();
    let owner = t
        .app
        .state
        .db
        .create_user(
            &switchyard::store::NewUser {
                profile: switchyard::store::Profile {
                    email: Some("Sam@Example.com".into()),
                    email_verified: true,
                    ..Default::default()
                },
                ..Default::default()
            },
            Some((&hash, switchyard::password::ARGON2ID)),
        )
        .await
        .expect("the address is free for its owner");
    assert_eq!(
        t.app
            .state
            .db
            .find_user_by_login("sam@example.com")
            .await
            .unwrap()
            .map(|u| u.id),
        Some(owner.id.clone())
    );
    // The unverified user's password at that address is no way in.
    let r = password_login(&t, "web", "sam@example.com", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let id = id_token_after(
        &t,
        password_login(&t, "web", "sam@example.com", "sam's real passphrase").await,
    )
    .await;
    assert_eq!(id["sub"], owner.id.as_str());
}
