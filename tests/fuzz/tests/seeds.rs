//! Writes the seed inputs of each target's corpus (`corpus/<target>/seed-*`):
//! tokens signed with the fixed test keys, sample files in each import
//! format, the README's configuration and the built-in provider files.
//! Run once with `cargo test -p switchyard-fuzz --test seeds -- --ignored`
//! before a fuzzing campaign; the corpora kept in the repository are
//! minimised from those campaigns.

use std::path::Path;

use serde_json::{Value, json};
use switchyard::tokens::jwt;
use switchyard_fuzz::{AUDIENCE, CLIENT_ID, ISSUER, KEYS, NONCE, NOW, REDIRECT_URI};

fn write(target: &str, seeds: &[Vec<u8>]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), s).unwrap();
    }
}

fn b(s: impl Into<String>) -> Vec<u8> {
    s.into().into_bytes()
}

#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_seed_corpus() {
    let redirect: String = form_urlencoded::byte_serialize(REDIRECT_URI.as_bytes()).collect();
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    write(
        "authorize",
        &[
            b(format!(
                "response_type=code&client_id={CLIENT_ID}&redirect_uri={redirect}&scope=openid%20profile%20email&state=xyz&nonce=n1&code_challenge={challenge}&code_challenge_method=S256"
            )),
            b(format!(
                "response_type=code&client_id={CLIENT_ID}&redirect_uri={redirect}&prompt=login%20consent&max_age=0&login_hint=a%40b.c&response_mode=form_post"
            )),
            b(format!(
                "response_type=code&client_id={CLIENT_ID}&redirect_uri=http%3A%2F%2F127.0.0.1%3A5555%2Fcb&response_mode=web_message&prompt=none"
            )),
            b(format!(
                "response_type=token&client_id={CLIENT_ID}&redirect_uri={redirect}&request=x&request_uri=y&scope=a+b"
            )),
        ],
    );
    write(
        "token_request",
        &[
            b(
                "grant_type=authorization_code&code=abc&redirect_uri=https%3A%2F%2Fapp%2Fcb&client_id=c&code_verifier=v",
            ),
            b("Basic Zm9vJTNBYmFyOnNlY3JldCtwYXNz\ngrant_type=refresh_token&refresh_token=r1"),
            b("basic Zm9vOg==\ngrant_type=password&username=u&password=p&client_id=foo"),
            b("Bearer x\ngrant_type=client_credentials&client_secret=s&client_id=c&client_id=d"),
        ],
    );

    let keys = &*KEYS;
    let far = 4_000_000_000i64;
    let access = |exp: i64| {
        json!({"iss": ISSUER, "sub": "u1", "aud": AUDIENCE, "exp": exp, "iat": 1_700_000_000,
               "jti": "j1", "client_id": CLIENT_ID, "scope": "openid", "gid": "g1"})
    };
    let id = json!({"iss": ISSUER, "sub": "u1", "aud": CLIENT_ID, "exp": far, "iat": 1_700_000_000,
                    "auth_time": 1_700_000_000, "nonce": "n", "email": "a@b.c"});
    let sign = |k, typ, c: &Value| b(jwt::sign(k, typ, c).unwrap());
    let none_header = base64_url(br#"{"alg":"none","kid":"rs","typ":"at+jwt"}"#);
    let hs_header = base64_url(br#"{"alg":"HS256","kid":"rs","typ":"at+jwt"}"#);
    let payload = base64_url(access(far).to_string().as_bytes());
    write(
        "jwt",
        &[
            sign(&keys.rs256, "at+jwt", &access(far)),
            sign(&keys.es256, "at+jwt", &access(far)),
            sign(&keys.eddsa, "at+jwt", &access(far)),
            sign(&keys.rs256, "JWT", &id),
            sign(&keys.es256, "JWT", &id),
            sign(&keys.attacker, "at+jwt", &access(far)),
            sign(&keys.rs256, "at+jwt", &access(1_000)),
            b(format!("{none_header}.{payload}.")),
            b(format!("{hs_header}.{payload}.AAAA")),
        ],
    );
    let upstream = |c: Value| b(jwt::sign(&keys.rs256, "JWT", &c).unwrap());
    let claims = json!({"iss": ISSUER, "aud": CLIENT_ID, "sub": "auth0|1", "exp": NOW + 600,
                        "iat": NOW, "nonce": NONCE, "email": "a@b.c", "email_verified": true});
    let mut several = claims.clone();
    several["aud"] = json!([CLIENT_ID, "other"]);
    several["azp"] = json!(CLIENT_ID);
    let mut expired = claims.clone();
    expired["exp"] = json!(NOW - 61);
    write(
        "id_token",
        &[
            upstream(claims.clone()),
            upstream(several),
            upstream(expired),
            b(jwt::sign(&keys.attacker, "JWT", &claims).unwrap()),
            b(jwt::sign(&keys.es256, "JWT", &claims).unwrap()),
        ],
    );
    let jwk = keys.rs256.jwk().clone();
    let mut padded = jwk.clone();
    let n = padded["n"].as_str().unwrap().to_string();
    padded["n"] = json!(format!("AA{n}"));
    write(
        "jwks",
        &[
            b(json!({"keys": [jwk]}).to_string()),
            b(json!({"keys": [keys.es256.jwk(), keys.eddsa.jwk(), {"kty": "RSA", "kid": "rs", "n": "AQAB", "e": "AQAB"}]}).to_string()),
            b(json!({"keys": [{"kty": "RSA", "kid": "rs", "use": "enc", "n": n, "e": "AQAB"}]}).to_string()),
            b(json!({"keys": [padded]}).to_string()),
        ],
    );
    write(
        "upstream_token_response",
        &[
            b(
                r#"{"access_token":"at","token_type":"Bearer","expires_in":86400,"refresh_token":"rt","id_token":"a.b.c","scope":"openid profile"}"#,
            ),
            b(r#"{"access_token":"at","token_type":"bearer","expires_in":9223372036854775807}"#),
            b(
                r#"{"access_token":"at","token_type":"Bearer","expires_in":18446744073709551615,"scope":""}"#,
            ),
            b(r#"{"access_token":"at","token_type":"N_A"}"#),
        ],
    );

    let export = [
        json!({"user_id": "auth0|60425da93519d90068f82961", "email": "ann@example.com", "email_verified": true,
               "name": "Ann", "nickname": "ann", "app_metadata": {"roles": ["admin"]},
               "identities": [{"provider": "auth0", "user_id": "60425da93519d90068f82961", "connection": "Username-Password-Authentication", "isSocial": false}],
               "created_at": "2021-03-05T16:34:49.502Z", "updated_at": "2024-01-01T00:00:00.000Z", "last_login": "2024-02-02T10:00:00.000Z"}).to_string(),
        json!({"_id": {"$oid": "60425da93519d90068f82962"}, "email": "bob@example.com", "email_verified": false,
               "passwordHash": "$2b$04$abcdefghijklmnopqrstuu0123456789012345678901234567890", "tenant": "acme"}).to_string(),
        "{\"user_id\": \"auth0|broken\", \"email\": ".to_string(),
        json!({"user_id": "google-oauth2|1234", "blocked": true,
               "identities": [{"provider": "google-oauth2", "user_id": "1234", "isSocial": true}]}).to_string(),
        json!({"_id": {"$oid": "x"}, "passwordHash": "5f4dcc3b5aa765d61d8327deb882cf99"}).to_string(),
    ]
    .join("\n");
    write("import_auth0_export", &[b(export.clone())]);
    write("auth0_export_stream", &[b(export)]);
    write(
        "import_auth0_bulk",
        &[b(json!([
            {"user_id": "b1", "email": "b1@example.com", "given_name": "Bea",
             "custom_password_hash": {"algorithm": "bcrypt", "hash": {"value": "$2b$04$abcdefghijklmnopqrstuu0123456789012345678901234567890"}}},
            {"email": "no-id@example.com"},
            {"user_id": "b3", "custom_password_hash": {"algorithm": "md5", "hash": {"value": "x", "encoding": "hex"}}},
            {"user_id": "b4", "custom_password_hash": {"algorithm": "pbkdf2", "hash": {"value": "$pbkdf2-sha256$i=1000,l=32$c2FsdA$aGFzaA"}}},
            {"user_id": "b5", "password_hash": "$2a$10$x", "app_metadata": {"a": [1, 2]}}
        ]).to_string())],
    );
    write(
        "import_okta_csv",
        &[
            b(
                "id,login,email,firstName,lastName,status,user_metadata\n00u1,olga,olga@example.com,Olga,O,ACTIVE,\"{\"\"a\"\":1}\"\n00u2,otto,otto@example.com,Otto,O,SUSPENDED,\n,nobody,n@example.com,No,Body,ACTIVE\n",
            ),
            b(
                "id,given_name,family_name,email_verified,blocked,password_hash\nu1,A,B,true,false,$2b$04$abcdefghijklmnopqrstuu0123456789012345678901234567890\n",
            ),
        ],
    );
    write(
        "import_cognito_csv",
        &[b(
            "sub,cognito:username,email,email_verified,given_name,custom:tenant,enabled\n5a1f0c7e-1111-4d2e-8f00-0000000000c1,cleo,cleo@example.com,TRUE,Cleo,acme,false\n,x,y,z\n",
        )],
    );
    let secret = json!({"value": "aGFzaA==", "salt": "c2FsdA=="}).to_string();
    let data = json!({"hashIterations": 1000, "algorithm": "pbkdf2-sha256"}).to_string();
    write(
        "import_keycloak",
        &[b(serde_json::to_string_pretty(&json!({
            "realm": "acme",
            "users": [
                {"id": "8f6c2a0e-0b7a-4c1e-9a53-6f2d7f1c0a11", "username": "kay", "email": "kay@example.com",
                 "emailVerified": true, "firstName": "Kay", "enabled": false, "attributes": {"plan": ["gold"]},
                 "credentials": [{"type": "password", "secretData": secret, "credentialData": data}]},
                {"username": "no-id"},
                {"id": "8f6c2a0e-0b7a-4c1e-9a53-6f2d7f1c0a13", "username": "argon",
                 "credentials": [{"type": "password", "secretData": "{}", "credentialData": "{\"algorithm\":\"argon2\"}"}]}
            ],
            "clients": [{"id": "not-a-user"}]
        })).unwrap())],
    );

    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let mut configs: Vec<Vec<u8>> = readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .filter(|t| t.contains("issuer") || t.contains("[upstream]") || t.contains("[tokens]"))
        .map(b)
        .collect();
    configs.push(b("issuer = \"https://login.example.com/\"\n[upstream]\nprovider = \"auth0\"\ndomain = \"acme.eu.auth0.com\"\nclient_id = \"x\"\nclient_secret_env = \"X\"\n[cutover]\nphase = \"lazy\"\n"));
    configs.push(b(
        "issuer = 1\nlisten = \"nope\"\n[tokens]\ncode_ttl_secs = -1\n[[clients]]\nclient_id = 3\n",
    ));
    write("config", &configs);
    let providers: Vec<Vec<u8>> = ["auth0", "okta", "cognito", "keycloak", "oidc"]
        .iter()
        .map(|p| {
            std::fs::read(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../providers/{p}.toml")),
            )
            .unwrap()
        })
        .collect();
    write("provider", &providers);
}

fn base64_url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// Writes the fixed test keys (`keys/*.pk8`) the targets load; run once.
#[test]
#[ignore = "writes the test keys; run by hand"]
fn write_test_keys() {
    use switchyard::tokens::keys::{Alg, generate_pkcs8};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("keys");
    for (name, alg) in [
        ("rs256", Alg::RS256),
        ("es256", Alg::ES256),
        ("eddsa", Alg::EdDSA),
        ("attacker_rs256", Alg::RS256),
    ] {
        std::fs::write(
            dir.join(format!("{name}.pk8")),
            generate_pkcs8(alg).unwrap(),
        )
        .unwrap();
    }
}
