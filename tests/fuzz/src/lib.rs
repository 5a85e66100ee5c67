//! Fuzz targets for Switchyard's parsers.
//!
//! Each target takes arbitrary bytes, feeds them to the real parser through
//! `switchyard::fuzzing` (or the public function the server calls) and
//! checks what must hold whatever the input: no panic, and where it parses,
//! the properties below. The same functions run under AFL++ (`src/bin`,
//! with `--features afl`) and in the corpus replay test (`tests/replay.rs`).

use std::io::{BufRead, Cursor, Write};
use std::sync::{Arc, LazyLock};

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use switchyard::config::UpstreamSettings;
use switchyard::fuzzing;
use switchyard::jobs::files::{self, Format};
use switchyard::store::{Client, ClientSource, GrantType, TokenMode};
use switchyard::tokens::jwt::{self, Expect};
use switchyard::tokens::keys::{Alg, KeySet, SigningKey};
use switchyard::upstream::id_token::{self, Expected, Keys};

/// The issuer and client the token targets expect.
pub const ISSUER: &str = "https://fuzz.example";
pub const CLIENT_ID: &str = "fuzz-client";
pub const AUDIENCE: &str = "https://api.fuzz.example";
/// The nonce the upstream ID-token target expects.
pub const NONCE: &str = "n-0S6_WzA2Mj";
/// The upstream target's clock (Unix seconds) and skew.
pub const NOW: i64 = 1_700_000_000;
pub const SKEW: i64 = 60;
/// The redirect URI the `/authorize` target's clients registered.
pub const REDIRECT_URI: &str = "https://app.fuzz.example/callback";

/// Test keys (never used outside these tests), fixed so that corpus tokens
/// signed with them stay valid from run to run. `attacker` signs tokens no
/// validator may accept.
pub struct TestKeys {
    pub rs256: Arc<SigningKey>,
    pub es256: Arc<SigningKey>,
    pub eddsa: Arc<SigningKey>,
    pub attacker: Arc<SigningKey>,
    pub set: KeySet,
    pub upstream: Keys,
}

pub static KEYS: LazyLock<TestKeys> = LazyLock::new(|| {
    let key = |kid, alg, der: &[u8]| fuzzing::signing_key(kid, alg, der).expect("test key");
    let rs256 = key("rs", Alg::RS256, include_bytes!("../keys/rs256.pk8"));
    let es256 = key("es", Alg::ES256, include_bytes!("../keys/es256.pk8"));
    let eddsa = key("ed", Alg::EdDSA, include_bytes!("../keys/eddsa.pk8"));
    // The attacker's key claims the real key's kid.
    let attacker = key(
        "rs",
        Alg::RS256,
        include_bytes!("../keys/attacker_rs256.pk8"),
    );
    let set = fuzzing::key_set(vec![rs256.clone(), es256.clone(), eddsa.clone()]);
    let upstream = Keys::from_jwks(&json!({ "keys": [rs256.jwk()] }));
    TestKeys {
        rs256,
        es256,
        eddsa,
        attacker,
        set,
        upstream,
    }
});

/// Whether `token`'s signature verifies, by aws-lc-rs directly and with a
/// strict base64url reading, under the public half of `key`: a check
/// independent of the validators' own parsing (alg confusion, lenient
/// base64, a second dot).
pub fn signed_by(token: &str, key: &SigningKey) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, p, s] = parts[..] else {
        return false;
    };
    let (Ok(sig), Ok(header)) = (URL_SAFE_NO_PAD.decode(s), URL_SAFE_NO_PAD.decode(h)) else {
        return false;
    };
    let Ok(header) = serde_json::from_slice::<Value>(&header) else {
        return false;
    };
    if header["alg"] != key.alg.as_str() {
        return false;
    }
    let message = format!("{h}.{p}");
    let jwk = key.jwk();
    let field = |name: &str| {
        jwk[name]
            .as_str()
            .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
            .unwrap_or_default()
    };
    match key.alg {
        Alg::RS256 => RsaPublicKeyComponents {
            n: field("n"),
            e: field("e"),
        }
        .verify(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            message.as_bytes(),
            &sig,
        )
        .is_ok(),
        Alg::ES256 => {
            let mut point = vec![4u8];
            point.extend(field("x"));
            point.extend(field("y"));
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(message.as_bytes(), &sig)
                .is_ok()
        }
        Alg::EdDSA => UnparsedPublicKey::new(&signature::ED25519, field("x"))
            .verify(message.as_bytes(), &sig)
            .is_ok(),
    }
}

/// `GET /authorize?…`: the parameter parser and the checks answered to the
/// client, for a confidential and a public client.
pub fn authorize(data: &[u8]) {
    for public in [false, true] {
        let client = Client {
            client_id: CLIENT_ID.into(),
            name: None,
            secret_hash: None,
            public,
            redirect_uris: vec![REDIRECT_URI.into(), "http://127.0.0.1/cb".into()],
            post_logout_redirect_uris: Vec::new(),
            grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            web_origins: vec!["https://app.fuzz.example".into()],
            scopes: Vec::new(),
            token_mode: TokenMode::Gateway,
            source: ClientSource::Config,
            created_at: 0,
        };
        if let Ok(pending) = fuzzing::authorize(&client, data) {
            // What is stored is what was checked: a registered redirect
            // URI, S256 challenges only, printable scopes, bounded texts.
            assert!(
                pending.redirect_uri == REDIRECT_URI
                    || pending.redirect_uri.starts_with("http://127.0.0.1")
            );
            assert!(!public || pending.code_challenge.is_some());
            if let Some(c) = &pending.code_challenge {
                assert_eq!(c.len(), 43);
            }
            assert!(
                pending
                    .scope
                    .bytes()
                    .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
            );
            assert!(!pending.scope.starts_with(' ') && !pending.scope.contains("  "));
            assert!(pending.state.as_ref().is_none_or(|s| s.len() <= 2048));
            assert!(pending.nonce.as_ref().is_none_or(|s| s.len() <= 512));
            assert!(pending.max_age.is_none_or(|m| m >= 0));
        }
    }
}

/// `POST /oauth/token`: the form body and the Basic header. The input is
/// the header value, a newline, then the body (no newline: no header).
/// Also: credentials encoded as RFC 6749 §2.3.1 says decode to themselves.
pub fn token_request(data: &[u8]) {
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (Some(&data[..i]), &data[i + 1..]),
        None => (None, data),
    };
    if let Ok((grant, id, secret, basic)) = fuzzing::token_request(body, header) {
        assert!(!grant.is_empty() && !id.is_empty());
        assert!(!basic || secret.is_some());
    }
    // Round trip: split the input in two as an id and a secret.
    let text = String::from_utf8_lossy(data);
    let half = (0..=text.len() / 2)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    let (id, secret) = text.split_at(half);
    if id.is_empty() || secret.is_empty() {
        return;
    }
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        encode(id),
        encode(secret)
    ));
    let got = fuzzing::token_request(
        b"grant_type=client_credentials",
        Some(format!("Basic {basic}").as_bytes()),
    )
    .expect("well-formed Basic credentials are read");
    assert_eq!((got.1.as_str(), got.2.as_deref()), (id, Some(secret)));
}

/// Our own JWT validator (ID tokens and RFC 9068 access tokens): a token it
/// accepts is signed by one of the test keys, with the expected issuer
/// and audience.
pub fn jwt(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let keys = &*KEYS;
    let expects = [
        Expect {
            issuer: ISSUER,
            audience: Some(AUDIENCE),
            typ: Some(jwt::ACCESS_TOKEN_TYP),
            allow_expired: false,
        },
        Expect {
            issuer: ISSUER,
            audience: None,
            typ: None,
            allow_expired: true,
        },
    ];
    for expect in expects {
        if let Ok(claims) = jwt::verify::<Value>(&keys.set, token, &expect) {
            assert!(
                [&keys.rs256, &keys.es256, &keys.eddsa]
                    .iter()
                    .any(|k| signed_by(token, k)),
                "accepted a token no test key signed: {token}"
            );
            assert!(!signed_by(token, &keys.attacker));
            assert_eq!(claims["iss"], ISSUER);
            if let Some(aud) = expect.audience {
                let ok = claims["aud"] == aud
                    || claims["aud"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|v| v == aud));
                assert!(ok, "accepted another audience: {token}");
            }
        }
    }
}

/// The upstream ID-token validator (OIDC Core §3.1.3.7): a token it
/// accepts is signed by the upstream's key, for this issuer and client,
/// unexpired, with the nonce when one was sent.
pub fn id_token(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let keys = &*KEYS;
    for nonce in [Some(NONCE), None] {
        let expected = Expected {
            issuer: ISSUER,
            client_id: CLIENT_ID,
            nonce,
            skew_secs: SKEW,
            now: NOW,
        };
        if let Ok(claims) = id_token::verify(token, &keys.upstream, &expected) {
            assert!(
                signed_by(token, &keys.rs256),
                "accepted a token the upstream key did not sign: {token}"
            );
            assert_eq!(claims["iss"], ISSUER);
            assert!(
                claims["exp"]
                    .as_f64()
                    .is_some_and(|e| e > (NOW - SKEW) as f64)
            );
            if nonce.is_some() {
                assert_eq!(claims["nonce"], NONCE);
            }
        }
    }
}

/// The upstream JWKS parser: whatever the document, the keys it yields
/// verify a token signed by the upstream's key only when the document
/// holds that key's modulus.
pub fn jwks(data: &[u8]) {
    static TOKEN: LazyLock<String> = LazyLock::new(|| {
        let claims = json!({"iss": ISSUER, "aud": CLIENT_ID, "sub": "u1",
            "exp": NOW + 600, "iat": NOW, "nonce": NONCE});
        jwt::sign(&KEYS.rs256, "JWT", &claims).expect("sign")
    });
    let Ok(doc) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let keys = Keys::from_jwks(&doc);
    let expected = Expected {
        issuer: ISSUER,
        client_id: CLIENT_ID,
        nonce: None,
        skew_secs: SKEW,
        now: NOW,
    };
    if id_token::verify(&TOKEN, &keys, &expected).is_ok() {
        let n = KEYS.rs256.jwk()["n"].clone();
        let holds = doc["keys"].as_array().is_some_and(|ks| {
            ks.iter().any(|k| {
                k["n"]
                    .as_str()
                    .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
                    .map(|b| b.into_iter().skip_while(|x| *x == 0).collect::<Vec<_>>())
                    == n.as_str().and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
            })
        });
        assert!(holds, "a JWKS without the key verified its token");
    }
}

/// The upstream's token response (code exchange and refresh).
pub fn upstream_token_response(data: &[u8]) {
    if let Some(tokens) = fuzzing::upstream_token_response(data) {
        let body: Value = serde_json::from_slice(data).expect("it parsed");
        assert_eq!(tokens.access_token, body["access_token"].as_str().unwrap());
    }
}

fn import(data: &[u8], format: Format) {
    let reader: Box<dyn BufRead + Send> = Box::new(Cursor::new(data.to_vec()));
    let Ok(records) = files::records(reader, format) else {
        return;
    };
    for r in records.take(100_000).flatten() {
        assert!(!r.id.is_empty(), "a record without an id");
        assert!(r.identities.windows(2).all(|w| w[0] <= w[1]));
    }
}

/// `switchyard import --format auth0-export`.
pub fn import_auth0_export(data: &[u8]) {
    import(data, Format::Auth0Export)
}
/// `switchyard import --format auth0-bulk`.
pub fn import_auth0_bulk(data: &[u8]) {
    import(data, Format::Auth0Bulk)
}
/// `switchyard import --format okta-csv` (and the plain `csv`).
pub fn import_okta_csv(data: &[u8]) {
    import(data, Format::OktaCsv);
    import(data, Format::Csv)
}
/// `switchyard import --format cognito-csv`.
pub fn import_cognito_csv(data: &[u8]) {
    import(data, Format::CognitoCsv)
}
/// `switchyard import --format keycloak`.
pub fn import_keycloak(data: &[u8]) {
    import(data, Format::Keycloak)
}

/// The configuration file: every problem is found without a panic, and a
/// valid configuration written back out reads as the same settings.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (loaded, problems) = fuzzing::config(text);
    let Some(settings) = loaded.settings() else {
        return;
    };
    if !problems.is_empty() {
        return;
    }
    let Ok(written) = toml::to_string(settings) else {
        return;
    };
    let (again, problems) = fuzzing::config(&written);
    assert!(problems.is_empty(), "{written}\n{problems:?}");
    let again = toml::to_string(again.settings().expect("settings")).expect("toml");
    assert_eq!(written, again);
}

/// A provider definition file, and the issuer template it fills in.
pub fn provider(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(def) = fuzzing::provider(text) {
        let mut settings = UpstreamSettings::for_provider("fuzz.toml");
        settings.domain = Some("tenant.example".into());
        settings.realm = Some("realm".into());
        settings.region = Some("eu-west-1".into());
        let _ = def.issuer(&settings);
        if let Some(m) = &def.management {
            let _ = m.fields.source_fields();
        }
    }
}

/// Auth0's user export as the backfill streams it: gzipped NDJSON. Input
/// starting with the gzip magic is read as is; other input is gzipped
/// first so the fuzzer works on the lines.
pub fn auth0_export_stream(data: &[u8]) {
    let gz = if data.starts_with(&[0x1f, 0x8b]) {
        data.to_vec()
    } else {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    };
    if let Ok(items) = fuzzing::auth0_export(&gz) {
        for r in items.into_iter().flatten() {
            assert!(!r.id.is_empty(), "a record without an id");
        }
    }
}

/// A target: bytes in, a panic on a broken invariant.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus folder and binary.
pub const TARGETS: &[(&str, Target)] = &[
    ("authorize", authorize),
    ("token_request", token_request),
    ("jwt", jwt),
    ("id_token", id_token),
    ("jwks", jwks),
    ("upstream_token_response", upstream_token_response),
    ("import_auth0_export", import_auth0_export),
    ("import_auth0_bulk", import_auth0_bulk),
    ("import_okta_csv", import_okta_csv),
    ("import_cognito_csv", import_cognito_csv),
    ("import_keycloak", import_keycloak),
    ("config", config),
    ("provider", provider),
    ("auth0_export_stream", auth0_export_stream),
];
