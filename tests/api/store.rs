//! The store contracts: the same suites run on every backend (SQLite and
//! in-process by default, PostgreSQL and Redis with
//! `SWITCHYARD_TEST_BACKEND=postgres-redis`).

use std::sync::Arc;
use std::time::Duration;

use switchyard::config::Settings;
use switchyard::state::{open_database, open_session_store};
use switchyard::store::{
    AuditEvent, Client, Database, KeyState, NewUser, SessionStore, StoreError, UpstreamProfile, now,
};
use switchyard::tokens::keys::{Alg, KeyRing};

use crate::helpers::*;

async fn stores() -> (Arc<dyn Database>, Arc<dyn SessionStore>, Isolated) {
    let iso = isolated().await;
    let settings = Settings {
        database_url: iso.database_url.clone(),
        redis_url: iso.redis_url.clone(),
        session_prefix: iso.prefix.clone(),
        ..Settings::default()
    };
    (
        open_database(&settings).await.unwrap(),
        open_session_store(&settings).await.unwrap(),
        iso,
    )
}

fn alice() -> NewUser {
    NewUser {
        profile: switchyard::store::Profile {
            email: Some("Alice@Example.com".into()),
            username: Some("alice".into()),
            name: Some("Alice".into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn user_store_creates_finds_lists_and_deletes_users_with_their_credentials() {
    let (db, _, _iso) = stores().await;
    let user = db
        .create_user(&alice(), Some(("$argon2id$hash", "argon2id")))
        .await
        .unwrap();
    assert!(user.id.starts_with("local|"));
    assert_eq!(
        user.profile.email.as_deref(),
        Some("Alice@Example.com"),
        "the user's spelling is kept"
    );

    for login in [
        "alice@example.com",
        "ALICE@EXAMPLE.COM",
        " alice@example.com ",
        "alice",
    ] {
        assert_eq!(
            db.find_user_by_login(login).await.unwrap().map(|u| u.id),
            Some(user.id.clone()),
            "{login:?}"
        );
    }
    assert!(
        db.find_user_by_login("Alice").await.unwrap().is_none(),
        "usernames are exact"
    );
    assert_eq!(
        db.get_password(&user.id).await.unwrap().unwrap().hash,
        "$argon2id$hash"
    );

    assert!(
        db.set_password(&user.id, "$argon2id$new", "argon2id")
            .await
            .unwrap()
    );
    assert_eq!(
        db.get_password(&user.id).await.unwrap().unwrap().hash,
        "$argon2id$new"
    );
    assert!(
        !db.set_password("nobody", "$argon2id$x", "argon2id")
            .await
            .unwrap()
    );

    let bob = db
        .create_user(
            &NewUser {
                id: Some("auth0|5f3a".into()),
                profile: switchyard::store::Profile {
                    email: Some("bob@example.com".into()),
                    ..Default::default()
                },
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        bob.id, "auth0|5f3a",
        "an upstream id is kept as the user id"
    );
    assert!(db.get_password(&bob.id).await.unwrap().is_none());

    let page1 = db.list_users(None, 1).await.unwrap();
    let page2 = db.list_users(Some(&page1[0].id), 10).await.unwrap();
    assert_eq!(page1.len() + page2.len(), 2);

    assert!(db.delete_user(&user.id).await.unwrap());
    assert!(db.get_user(&user.id).await.unwrap().is_none());
    assert!(
        db.get_password(&user.id).await.unwrap().is_none(),
        "credentials go with the user"
    );
    assert!(!db.delete_user(&user.id).await.unwrap());
}

#[tokio::test]
async fn user_store_refuses_duplicate_emails_and_usernames_and_writes_nothing() {
    let (db, _, _iso) = stores().await;
    db.create_user(&alice(), None).await.unwrap();
    let same_email = NewUser {
        profile: switchyard::store::Profile {
            email: Some("ALICE@example.COM".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(matches!(
        db.create_user(&same_email, Some(("h", "argon2id"))).await,
        Err(StoreError::Conflict("email"))
    ));
    let same_username = NewUser {
        profile: switchyard::store::Profile {
            username: Some("alice".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(matches!(
        db.create_user(&same_username, None).await,
        Err(StoreError::Conflict("username"))
    ));
    assert_eq!(
        db.list_users(None, 10).await.unwrap().len(),
        1,
        "nothing half-written"
    );
}

#[tokio::test]
async fn an_upstream_login_writes_the_user_its_login_time_and_both_events_together() {
    let (db, _, _iso) = stores().await;
    let profile = UpstreamProfile {
        id: "auth0|42".into(),
        profile: switchyard::store::Profile {
            email: Some("carol@example.com".into()),
            email_verified: true,
            name: Some("Carol".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let login = AuditEvent {
        at: now(),
        kind: "login".into(),
        user_id: None,
        client_id: Some("web".into()),
        ip: Some("127.0.0.1".into()),
        detail: serde_json::json!({}),
        actor: None,
    };
    let user = db
        .record_upstream_login("auth0", &profile, &login)
        .await
        .unwrap();
    assert_eq!(user.id, "auth0|42");
    assert_eq!(user.last_login_at, Some(login.at));
    let stored = db.get_user("auth0|42").await.unwrap().unwrap();
    assert_eq!(stored.last_login_at, Some(login.at));
    let events = db.recent_events(10).await.unwrap();
    let kinds: Vec<(&str, Option<&str>, Option<&str>)> = events
        .iter()
        .map(|e| {
            (
                e.kind.as_str(),
                e.user_id.as_deref(),
                e.client_id.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("login", Some("auth0|42"), Some("web")),
            ("shadow_user_created", Some("auth0|42"), None),
        ]
    );
}

#[tokio::test]
async fn client_store_creates_upserts_lists_and_deletes() {
    let (db, _, _iso) = stores().await;
    let client = Client {
        client_id: "web".into(),
        name: None,
        secret_hash: Some("sha256$a$b".into()),
        public: false,
        redirect_uris: vec![REDIRECT.into()],
        post_logout_redirect_uris: vec![],
        grant_types: vec![switchyard::store::GrantType::AuthorizationCode],
        web_origins: vec![],
        scopes: vec![],
        token_mode: switchyard::store::TokenMode::Gateway,
        source: switchyard::store::ClientSource::Cli,
        created_at: now(),
    };
    db.create_client(&client).await.unwrap();
    assert!(matches!(
        db.create_client(&client).await,
        Err(StoreError::Conflict("client_id"))
    ));
    let changed = Client {
        redirect_uris: vec!["https://other.example.com/cb".into()],
        ..client.clone()
    };
    db.upsert_client(&changed).await.unwrap();
    assert_eq!(
        db.get_client("web").await.unwrap().unwrap().redirect_uris,
        changed.redirect_uris
    );
    assert_eq!(db.list_clients().await.unwrap().len(), 1);
    assert!(db.delete_client("web").await.unwrap());
    assert!(db.get_client("web").await.unwrap().is_none());
}

#[tokio::test]
async fn key_rotation_promotes_next_and_keeps_the_old_key_published() {
    let (db, _, _iso) = stores().await;
    let ring = KeyRing::load(db.clone(), None, vec![Alg::RS256])
        .await
        .unwrap();
    let before = ring.current();
    let active = before.active(Alg::RS256).unwrap().kid.clone();
    let next = before
        .keys()
        .iter()
        .find(|k| k.state == KeyState::Next)
        .unwrap()
        .kid
        .clone();

    ring.rotate(Alg::RS256, 3600).await.unwrap();
    let after = ring.current();
    assert_eq!(
        after.active(Alg::RS256).unwrap().kid,
        next,
        "next becomes active"
    );
    let jwks = after.jwks(now());
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&active.as_str()),
        "the retired key stays published"
    );
    assert_eq!(kids.len(), 3);
    // Past its overlap the retired key leaves the JWKS.
    assert_eq!(
        after.jwks(now() + 3601)["keys"].as_array().unwrap().len(),
        2
    );

    // A second instance on the same database sees the same keys.
    let other = KeyRing::load(db, None, vec![Alg::RS256]).await.unwrap();
    assert_eq!(other.current().active(Alg::RS256).unwrap().kid, next);
}

#[tokio::test]
async fn private_keys_are_sealed_at_rest_when_a_key_encryption_key_is_given() {
    let (db, _, _iso) = stores().await;
    let sealer = switchyard::crypto::Sealer::new(&[9u8; 32]);
    KeyRing::load(db.clone(), sealer, vec![Alg::EdDSA])
        .await
        .unwrap();
    for record in db.list_keys().await.unwrap() {
        assert!(record.private_key.starts_with("sealed:"));
    }
    // Without the key-encryption key the keys cannot be loaded.
    assert!(
        KeyRing::load(db.clone(), None, vec![Alg::EdDSA])
            .await
            .is_err()
    );
    assert!(
        KeyRing::load(
            db,
            switchyard::crypto::Sealer::new(&[8u8; 32]),
            vec![Alg::EdDSA]
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn session_store_puts_gets_and_expires_records() {
    let (_, store, _iso) = stores().await;
    store
        .put("a", b"one", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(store.get("a").await.unwrap().as_deref(), Some(&b"one"[..]));
    store
        .put("short", b"x", Duration::from_millis(200))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(store.get("short").await.unwrap(), None, "expired");
    assert!(store.delete("a").await.unwrap());
    assert!(!store.delete("a").await.unwrap());
    assert_eq!(store.get("a").await.unwrap(), None);
}

#[tokio::test]
async fn session_store_take_is_atomic_under_concurrency() {
    let (_, store, _iso) = stores().await;
    store
        .put("code", b"secret", Duration::from_secs(60))
        .await
        .unwrap();
    let takes = futures::future::join_all((0..16).map(|_| store.take("code"))).await;
    let winners = takes
        .into_iter()
        .filter(|t| matches!(t, Ok(Some(_))))
        .count();
    assert_eq!(winners, 1);
}

#[tokio::test]
async fn session_store_put_if_absent_lets_one_writer_win() {
    let (_, store, _iso) = stores().await;
    let claims = futures::future::join_all(
        (0..16).map(|_| store.put_if_absent("claim", b"1", Duration::from_secs(60))),
    )
    .await;
    assert_eq!(
        claims.into_iter().filter(|c| matches!(c, Ok(true))).count(),
        1
    );
    store
        .put("gone", b"x", Duration::from_millis(100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        store
            .put_if_absent("gone", b"y", Duration::from_secs(1))
            .await
            .unwrap(),
        "an expired key is absent"
    );
}

#[tokio::test]
async fn session_store_counters_count_within_their_window() {
    let (_, store, _iso) = stores().await;
    let window = Duration::from_millis(400);
    assert_eq!(store.incr("n", window).await.unwrap().count, 1);
    let second = store.incr("n", window).await.unwrap();
    assert_eq!(second.count, 2);
    assert!(second.resets_in <= window && second.resets_in > Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        store.incr("n", window).await.unwrap().count,
        1,
        "a new window"
    );
}

#[tokio::test]
async fn session_store_counters_give_back_within_their_window_and_never_below_zero() {
    let (_, store, _iso) = stores().await;
    let window = Duration::from_millis(400);
    store.incr("n", window).await.unwrap();
    store.incr("n", window).await.unwrap();
    store.decr("n").await.unwrap();
    let after = store.incr("n", window).await.unwrap();
    assert_eq!(after.count, 2, "one given back");
    assert!(after.resets_in <= window, "the window did not restart");
    for _ in 0..5 {
        store.decr("n").await.unwrap();
    }
    assert_eq!(
        store.incr("n", window).await.unwrap().count,
        1,
        "floored at 0"
    );
    // A counter whose window ended is not brought back by a give-back.
    tokio::time::sleep(Duration::from_millis(600)).await;
    store.decr("n").await.unwrap();
    assert_eq!(store.get("n").await.unwrap(), None);
    store.decr("never").await.unwrap();
    assert_eq!(store.get("never").await.unwrap(), None);
}

#[tokio::test]
async fn session_store_namespaces_do_not_collide() {
    let (_, a, iso) = stores().await;
    let settings = Settings {
        redis_url: iso.redis_url.clone(),
        session_prefix: format!("{}other:", iso.prefix),
        ..Settings::default()
    };
    let b = open_session_store(&settings).await.unwrap();
    a.put("k", b"a", Duration::from_secs(60)).await.unwrap();
    if iso.redis_url.is_some() {
        assert_eq!(
            b.get("k").await.unwrap(),
            None,
            "another prefix sees nothing"
        );
    }
    assert_eq!(a.get("k").await.unwrap().as_deref(), Some(&b"a"[..]));
}

/// The SHA-384 a database recorded for migration 4 when its comments had
/// their first wording.
fn first_wording_of_migration_4(sqlite: bool) -> Vec<u8> {
    let hex = if sqlite {
        "a74b41244351b6d0e1a837462081206c3105457508a562c0fbcdfb3a8caa13cce5fdd0917281b96eed676dfaf24570ec"
    } else {
        "54514e8178bbab0c6248b1c81e07a31198122cb7ee6dfa9cc47867f01f24bd32a79ece704ca8ad65b66b9837d87fb318"
    };
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn a_migration_reworded_after_release_still_starts_and_any_other_change_does_not() {
    use sqlx::Connection as _;
    let (db, sessions, iso) = stores().await;
    drop((db, sessions));
    let settings = Settings {
        database_url: iso.database_url.clone(),
        redis_url: iso.redis_url.clone(),
        session_prefix: iso.prefix.clone(),
        ..Settings::default()
    };
    let sqlite = iso.database_url.starts_with("sqlite:");
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&iso.database_url)
        .await
        .unwrap();
    let checksum = "SELECT checksum FROM _sqlx_migrations WHERE version = 4";
    let current: Vec<u8> = sqlx::query_scalar(checksum)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let set = "UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 4";

    // A database migrated by a release with the first wording.
    sqlx::query(set)
        .bind(first_wording_of_migration_4(sqlite))
        .execute(&mut conn)
        .await
        .unwrap();
    open_database(&settings)
        .await
        .expect("a reworded comment is the same migration");
    let after: Vec<u8> = sqlx::query_scalar(checksum)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(after, current);

    // A migration that really differs still stops the start.
    sqlx::query(set)
        .bind(vec![0u8; 48])
        .execute(&mut conn)
        .await
        .unwrap();
    assert!(open_database(&settings).await.is_err());
}

#[tokio::test]
async fn a_created_user_keeps_every_profile_field_it_was_given() {
    let (db, _, _iso) = stores().await;
    let profile = switchyard::store::Profile {
        email: Some("carol@example.com".into()),
        email_verified: true,
        username: Some("carol".into()),
        name: Some("Carol Example".into()),
        given_name: Some("Carol".into()),
        family_name: Some("Example".into()),
        nickname: Some("caz".into()),
        picture: Some("https://example.com/carol.png".into()),
        phone_number: Some("+15555550100".into()),
    };
    let created = db
        .create_user(
            &NewUser {
                profile: profile.clone(),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(created.profile, profile);
    let read = db.get_user(&created.id).await.unwrap().unwrap();
    assert_eq!(read.profile, profile);
}

#[tokio::test]
async fn expired_refresh_families_and_upstream_tokens_are_purged_and_live_ones_kept() {
    let (db, _, _iso) = stores().await;
    let user = db.create_user(&alice(), None).await.unwrap();
    let now = now();
    let family = |grant_id: &str, expires_at: i64| switchyard::store::refresh::Family {
        grant_id: grant_id.into(),
        sid: format!("sid-{grant_id}"),
        user_id: user.id.clone(),
        client_id: "web".into(),
        record: "{}".into(),
        tag_hash: None,
        current_hash: None,
        previous_hash: None,
        rotated_at: None,
        successor: None,
        revoked: false,
        created_at: now - 100,
        expires_at,
    };
    db.create_family(&family("old", now - 1)).await.unwrap();
    db.create_family(&family("live", now + 3600)).await.unwrap();
    db.save_upstream_tokens("sid-old", "sealed", now - 1)
        .await
        .unwrap();
    db.save_upstream_tokens("sid-live", "sealed", now + 3600)
        .await
        .unwrap();

    assert_eq!(db.purge_expired(now).await.unwrap(), 2);
    assert!(db.family("old").await.unwrap().is_none());
    assert!(db.family("live").await.unwrap().is_some());
    assert_eq!(
        db.upstream_tokens("sid-live", now)
            .await
            .unwrap()
            .as_deref(),
        Some("sealed")
    );
    assert_eq!(db.purge_expired(now).await.unwrap(), 0, "nothing twice");
}

#[tokio::test]
async fn rotations_committed_together_each_spend_only_their_own_live_token() {
    use switchyard::store::refresh::{Family, Rotation, Rotations};
    let (db, _, _iso) = stores().await;
    let alice = db.create_user(&alice(), None).await.unwrap();
    let now = now();
    for n in 0..110 {
        db.create_family(&Family {
            grant_id: format!("g{n}"),
            sid: format!("sid-{n}"),
            user_id: alice.id.clone(),
            client_id: "web".into(),
            record: "{}".into(),
            tag_hash: None,
            current_hash: Some(format!("h{n}-0")),
            previous_hash: None,
            rotated_at: None,
            successor: None,
            revoked: false,
            created_at: now,
            expires_at: now + 3600,
        })
        .await
        .unwrap();
    }
    let rotation = |n: usize, spent: usize| Rotation {
        grant_id: format!("g{n}"),
        spent_hash: format!("h{n}-{spent}"),
        new_hash: format!("h{n}-{}", spent + 1),
        sealed_successor: format!("sealed-{n}-{}", spent + 1),
        now,
        auth_time: now,
    };
    // One statement: the live tokens are spent, a stale one is not.
    let spent = db
        .rotate_many(&[rotation(0, 0), rotation(1, 5), rotation(2, 0)])
        .await
        .unwrap();
    assert_eq!(spent, [true, false, true]);
    let family = db.family("g0").await.unwrap().unwrap();
    assert_eq!(family.current_hash.as_deref(), Some("h0-1"));
    assert_eq!(family.previous_hash.as_deref(), Some("h0-0"));
    assert_eq!(family.successor.as_deref(), Some("sealed-0-1"));
    assert_eq!(
        db.family("g1")
            .await
            .unwrap()
            .unwrap()
            .current_hash
            .as_deref(),
        Some("h1-0")
    );

    // Through the queue, concurrently: every family advances exactly once
    // per token, and two grants presenting one token get one win between
    // them, whichever statements they land in.
    let queue = Rotations::start(db.clone());
    let answers = futures::future::join_all(
        (3..40)
            .flat_map(|n| [rotation(n, 0), rotation(n, 0)])
            .map(|r| queue.rotate(r)),
    )
    .await;
    for pair in answers.chunks(2) {
        let wins = pair.iter().filter(|a| *a.as_ref().unwrap()).count();
        assert_eq!(wins, 1);
    }

    // More rotations in one call than a statement takes: one statement a
    // batch, the answers in the order asked.
    let many: Vec<Rotation> = (40..110)
        .map(|n| rotation(n, if n % 7 == 0 { 3 } else { 0 }))
        .collect();
    let spent = db.rotate_many(&many).await.unwrap();
    assert_eq!(spent, (40..110).map(|n| n % 7 != 0).collect::<Vec<_>>());

    // A blocked user's families rotate no more, whatever the caller knew.
    let edit = switchyard::store::users::ProfileEdit {
        blocked: Some(true),
        ..Default::default()
    };
    assert!(db.edit_user(&alice.id, &edit, &[]).await.unwrap());
    assert!(!queue.rotate(rotation(0, 1)).await.unwrap());
}
