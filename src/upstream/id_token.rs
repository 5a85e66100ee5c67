//! Upstream ID-token validation (OIDC Core §3.1.3.7), on aws-lc-rs.
//!
//! openidconnect checks signatures with the pure-Rust `rsa` crate: 0.2 to
//! 0.4 ms per ID token, the largest share of what a proxied refresh or
//! callback adds, and not constant-time (RUSTSEC-2023-0071, the Marvin
//! timing attack).
//! The checks are the ones its `IdTokenVerifier` makes with the defaults
//! Switchyard used, made here in the same order with the signature checked
//! by aws-lc-rs against keys parsed once per JWKS fetch:
//!
//! - header: `alg` on the allow-list (RS256, openidconnect's default and
//!   what every upstream in `providers/` signs with; no `none`, no MAC), `typ`
//!   absent or JWT / JOSE, no `cty`, no `crit`;
//! - `iss` equal to the discovered issuer; `aud` containing this client and
//!   no other audience; `azp`, when present or when there are several
//!   audiences, naming this client;
//! - the key: the JWKS's RSA signing keys with the token's `kid` (or all of
//!   them when it names none), exactly one; none is [`NO_MATCHING_KEY`], so
//!   the caller can refetch the keys once;
//! - `exp` after now − skew, `iat` before now + skew, `nonce` equal (in
//!   constant time) when one was sent.

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::crypto::{b64url_decode, constant_time_eq, sha256};

/// The reason given when no key of the JWKS can have signed a token: the
/// upstream may have rotated its keys since they were fetched.
pub const NO_MATCHING_KEY: &str = "no matching key";

/// Only RS256 is accepted (OIDC Core §3.1.3.7 step 7: the default).
const ALLOWED_ALG: &str = "RS256";

/// A public key of the upstream's JWKS that can verify RS256 ID tokens.
pub struct VerifyingKey {
    kid: Option<String>,
    key: ParsedPublicKey,
}

/// The RS256 signing keys of a JWKS. Keys of other types, other uses or
/// other algorithms are left out: no token signed with them is accepted.
pub struct Keys(Vec<VerifyingKey>);

#[derive(Deserialize)]
struct Jwks {
    #[serde(default)]
    keys: Vec<Value>,
}

#[derive(Deserialize)]
struct RsaJwk {
    kty: String,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

impl Keys {
    /// The usable keys of a JWKS document; keys that do not parse are
    /// skipped, like the key types openidconnect does not know.
    pub fn from_jwks(jwks: &Value) -> Self {
        let Ok(set) = Jwks::deserialize(jwks) else {
            return Self(Vec::new());
        };
        let keys = set
            .keys
            .into_iter()
            .filter_map(|k| serde_json::from_value::<RsaJwk>(k).ok())
            .filter(|k| {
                k.kty == "RSA"
                    && k.use_.as_deref().is_none_or(|u| u == "sig")
                    && k.alg.as_deref().is_none_or(|a| a == ALLOWED_ALG)
            })
            .filter_map(|k| {
                let n = strip_leading_zeros(b64url_decode(k.n.as_deref()?)?);
                let e = strip_leading_zeros(b64url_decode(k.e.as_deref()?)?);
                let components = RsaPublicKeyComponents { n, e };
                let key = components
                    .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
                    .ok()?;
                Some(VerifyingKey { kid: k.kid, key })
            })
            .collect();
        Self(keys)
    }

    fn for_kid(&self, kid: Option<&str>) -> Result<&VerifyingKey, String> {
        let mut matching = self
            .0
            .iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid);
        match (matching.next(), matching.next()) {
            (None, _) => Err(NO_MATCHING_KEY.into()),
            (Some(key), None) => Ok(key),
            // OIDC Core §10.1: a `kid` is required when the set holds
            // several keys.
            (Some(_), Some(_)) => Err("several keys could have signed the ID token".into()),
        }
    }
}

/// JWK `n` and `e` are unsigned big-endian integers; aws-lc-rs refuses a
/// leading zero byte, which some encoders leave in.
fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.drain(..zeros);
    bytes
}

/// What the token must say.
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The nonce of the authorization request; `None` on refresh, where an
    /// ID token carries none (OIDC Core §12.2).
    pub nonce: Option<&'a str>,
    /// The bounded clock skew, in seconds, allowed each way.
    pub skew_secs: i64,
    /// Unix seconds.
    pub now: i64,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    cty: Option<Value>,
    #[serde(default)]
    crit: Option<Value>,
}

/// Validates `jwt` and returns its claims as the upstream spelled them.
/// The error is the reason, for logs only.
pub fn verify(
    jwt: &str,
    keys: &Keys,
    expected: &Expected<'_>,
) -> Result<Map<String, Value>, String> {
    let mut parts = jwt.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS".into());
    };
    let header: Header = b64url_decode(header_b64)
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or("unreadable header")?;
    check_header(&header)?;
    let claims: Map<String, Value> = b64url_decode(payload_b64)
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or("unreadable claims")?;

    // OIDC Core §3.1.3.7 step 2.
    match claims.get("iss").and_then(Value::as_str) {
        Some(iss) if iss == expected.issuer => {}
        Some(_) => return Err("iss names another issuer".into()),
        None => return Err("missing iss".into()),
    }
    // Step 3: this client, and no audience it does not trust.
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).collect(),
        _ => return Err("missing aud".into()),
    };
    if !audiences.contains(&expected.client_id) {
        return Err("aud does not name this client".into());
    }
    if audiences.iter().any(|aud| *aud != expected.client_id) {
        return Err("aud names another client".into());
    }
    // Steps 4–5: several audiences need an `azp`, and an `azp` must name
    // this client.
    let several = claims
        .get("aud")
        .and_then(Value::as_array)
        .is_some_and(|a| a.len() > 1);
    match claims.get("azp").and_then(Value::as_str) {
        Some(azp) if azp != expected.client_id => return Err("azp names another client".into()),
        None if several => return Err("several audiences and no azp".into()),
        _ => {}
    }
    // Steps 6–7: the signature, by the issuer's key, with the allowed alg.
    if header.alg != ALLOWED_ALG {
        return Err(format!("alg {} is not allowed", header.alg));
    }
    let key = keys.for_kid(header.kid.as_deref())?;
    let signature = b64url_decode(signature_b64).ok_or("unreadable signature")?;
    let signed = &jwt[..header_b64.len() + 1 + payload_b64.len()];
    key.key
        .verify_sig(signed.as_bytes(), &signature)
        .map_err(|_| "bad signature".to_string())?;

    if claims.get("sub").and_then(Value::as_str).is_none() {
        return Err("missing sub".into());
    }
    // Step 9: exp, with the skew.
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .ok_or("missing exp")?;
    if (expected.now - expected.skew_secs) as f64 >= exp {
        return Err("expired".into());
    }
    // Step 10: not issued in the future, with the skew.
    let iat = claims
        .get("iat")
        .and_then(Value::as_f64)
        .ok_or("missing iat")?;
    if iat > (expected.now + expected.skew_secs) as f64 {
        return Err("issued in the future".into());
    }
    // Step 11: compared as digests, in constant time.
    if let Some(nonce) = expected.nonce {
        let found = claims
            .get("nonce")
            .and_then(Value::as_str)
            .ok_or("missing nonce")?;
        if !constant_time_eq(&sha256(found.as_bytes()), &sha256(nonce.as_bytes())) {
            return Err("nonce mismatch".into());
        }
    }
    Ok(claims)
}

/// RFC 7515 §4.1.9–4.1.11: `typ`, when present, says JWT (or JOSE); a
/// `cty` would mean a nested token and `crit` extensions nobody here
/// understands, so both are refused.
fn check_header(header: &Header) -> Result<(), String> {
    if let Some(typ) = &header.typ {
        let typ = typ.to_ascii_lowercase();
        let typ = typ.strip_prefix("application/").unwrap_or(&typ);
        if typ != "jwt" && typ != "jose" {
            return Err("unexpected typ".into());
        }
    }
    if header.cty.is_some() {
        return Err("unexpected cty".into());
    }
    if header.crit.is_some() {
        return Err("crit headers are not supported".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::b64url;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
    use serde_json::json;

    const ISSUER: &str = "https://upstream.example.com/";
    const CLIENT: &str = "switchyard";
    const NOW: i64 = 1_700_000_000;

    struct Signer {
        pair: RsaKeyPair,
        kid: String,
    }

    impl Signer {
        fn new(kid: &str) -> Self {
            let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
            Self {
                pair,
                kid: kid.into(),
            }
        }

        fn jwk(&self) -> Value {
            let public = self.pair.public_key();
            let components: RsaPublicKeyComponents<Vec<u8>> = public.into();
            json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                   "n": b64url(&components.n), "e": b64url(&components.e)})
        }

        fn sign(&self, header: &Value, claims: &Value) -> String {
            let input = format!(
                "{}.{}",
                b64url(header.to_string().as_bytes()),
                b64url(claims.to_string().as_bytes())
            );
            let mut sig = vec![0; self.pair.public_modulus_len()];
            self.pair
                .sign(
                    &signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    input.as_bytes(),
                    &mut sig,
                )
                .unwrap();
            format!("{input}.{}", b64url(&sig))
        }

        fn token(&self, claims: &Value) -> String {
            self.sign(
                &json!({"alg": "RS256", "typ": "JWT", "kid": self.kid}),
                claims,
            )
        }
    }

    fn claims() -> Value {
        json!({"iss": ISSUER, "aud": CLIENT, "sub": "auth0|1", "exp": NOW + 300,
               "iat": NOW, "nonce": "n-0S6_WzA2Mj"})
    }

    fn expected(nonce: Option<&str>) -> Expected<'_> {
        Expected {
            issuer: ISSUER,
            client_id: CLIENT,
            nonce,
            skew_secs: 60,
            now: NOW,
        }
    }

    fn keys(signers: &[&Signer]) -> Keys {
        Keys::from_jwks(&json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()}))
    }

    fn with<R>(change: impl FnOnce(&mut Map<String, Value>) -> R) -> Value {
        let mut c = claims();
        change(c.as_object_mut().unwrap());
        c
    }

    #[test]
    fn a_valid_token_gives_its_claims() {
        let s = Signer::new("k1");
        let claims = verify(
            &s.token(&claims()),
            &keys(&[&s]),
            &expected(Some("n-0S6_WzA2Mj")),
        )
        .unwrap();
        assert_eq!(claims["sub"], "auth0|1");
        // No nonce expected on refresh: a token without one passes.
        let refreshed = s.token(&with(|c| {
            c.remove("nonce");
        }));
        assert!(verify(&refreshed, &keys(&[&s]), &expected(None)).is_ok());
    }

    #[test]
    fn a_signature_by_another_key_under_the_published_kid_is_refused() {
        let (s, forger) = (Signer::new("k1"), Signer::new("k1"));
        let e = verify(&forger.token(&claims()), &keys(&[&s]), &expected(None)).unwrap_err();
        assert_eq!(e, "bad signature");
    }

    #[test]
    fn an_altered_payload_is_refused() {
        let s = Signer::new("k1");
        let token = s.token(&claims());
        let parts: Vec<&str> = token.split('.').collect();
        let other = b64url(
            with(|c| c.insert("sub".into(), json!("auth0|2")))
                .to_string()
                .as_bytes(),
        );
        let forged = format!("{}.{other}.{}", parts[0], parts[2]);
        assert_eq!(
            verify(&forged, &keys(&[&s]), &expected(None)).unwrap_err(),
            "bad signature"
        );
    }

    #[test]
    fn an_unknown_kid_asks_for_a_refetch() {
        let (s, rotated) = (Signer::new("k1"), Signer::new("k2"));
        assert_eq!(
            verify(&rotated.token(&claims()), &keys(&[&s]), &expected(None)).unwrap_err(),
            NO_MATCHING_KEY
        );
        assert!(
            verify(
                &rotated.token(&claims()),
                &keys(&[&s, &rotated]),
                &expected(None)
            )
            .is_ok()
        );
    }

    #[test]
    fn without_a_kid_exactly_one_key_must_fit() {
        let (s, other) = (Signer::new("k1"), Signer::new("k2"));
        let token = s.sign(&json!({"alg": "RS256"}), &claims());
        assert!(verify(&token, &keys(&[&s]), &expected(None)).is_ok());
        assert!(verify(&token, &keys(&[&s, &other]), &expected(None)).is_err());
    }

    #[test]
    fn algorithms_off_the_allow_list_are_refused() {
        let s = Signer::new("k1");
        for alg in ["none", "HS256", "RS512", "PS256", "ES256"] {
            let token = s.sign(&json!({"alg": alg, "kid": "k1"}), &claims());
            assert!(
                verify(&token, &keys(&[&s]), &expected(None)).is_err(),
                "{alg}"
            );
        }
        let unsigned = format!(
            "{}.{}.",
            b64url(json!({"alg": "none"}).to_string().as_bytes()),
            b64url(claims().to_string().as_bytes())
        );
        assert!(verify(&unsigned, &keys(&[&s]), &expected(None)).is_err());
    }

    #[test]
    fn odd_headers_are_refused() {
        let s = Signer::new("k1");
        for header in [
            json!({"alg": "RS256", "kid": "k1", "typ": "at+jwt"}),
            json!({"alg": "RS256", "kid": "k1", "cty": "JWT"}),
            json!({"alg": "RS256", "kid": "k1", "crit": ["exp"]}),
        ] {
            let token = s.sign(&header, &claims());
            assert!(
                verify(&token, &keys(&[&s]), &expected(None)).is_err(),
                "{header}"
            );
        }
        let jose = s.sign(
            &json!({"alg": "RS256", "kid": "k1", "typ": "JOSE"}),
            &claims(),
        );
        assert!(verify(&jose, &keys(&[&s]), &expected(None)).is_ok());
    }

    #[test]
    fn every_claim_check_refuses_its_case() {
        let s = Signer::new("k1");
        let k = keys(&[&s]);
        let nonce = Some("n-0S6_WzA2Mj");
        let cases: Vec<(&str, Value, Option<&str>)> = vec![
            (
                "other issuer",
                with(|c| c.insert("iss".into(), json!("https://evil.example.com/"))),
                None,
            ),
            (
                "no issuer",
                with(|c| {
                    c.remove("iss");
                }),
                None,
            ),
            (
                "other audience",
                with(|c| c.insert("aud".into(), json!("another-client"))),
                None,
            ),
            (
                "untrusted extra audience",
                with(|c| {
                    c.insert("aud".into(), json!([CLIENT, "another-client"]));
                    c.insert("azp".into(), json!(CLIENT));
                }),
                None,
            ),
            (
                "azp of another client",
                with(|c| c.insert("azp".into(), json!("another-client"))),
                None,
            ),
            (
                "no sub",
                with(|c| {
                    c.remove("sub");
                }),
                None,
            ),
            (
                "expired beyond the skew",
                with(|c| c.insert("exp".into(), json!(NOW - 61))),
                None,
            ),
            (
                "issued beyond the skew",
                with(|c| c.insert("iat".into(), json!(NOW + 61))),
                None,
            ),
            (
                "wrong nonce",
                with(|c| c.insert("nonce".into(), json!("another"))),
                nonce,
            ),
            (
                "missing nonce",
                with(|c| {
                    c.remove("nonce");
                }),
                nonce,
            ),
        ];
        for (case, claims, nonce) in cases {
            assert!(
                verify(&s.token(&claims), &k, &expected(nonce)).is_err(),
                "{case}"
            );
        }
        // Within the skew both ways.
        let edge = with(|c| {
            c.insert("exp".into(), json!(NOW - 59));
            c.insert("iat".into(), json!(NOW + 59));
        });
        assert!(verify(&s.token(&edge), &k, &expected(None)).is_ok());
    }

    #[test]
    fn keys_for_other_uses_or_algorithms_are_not_used() {
        let s = Signer::new("k1");
        for change in [
            ("use", json!("enc")),
            ("alg", json!("RS512")),
            ("kty", json!("EC")),
        ] {
            let mut jwk = s.jwk();
            jwk[change.0] = change.1.clone();
            let k = Keys::from_jwks(&json!({ "keys": [jwk] }));
            assert_eq!(
                verify(&s.token(&claims()), &k, &expected(None)).unwrap_err(),
                NO_MATCHING_KEY,
                "{change:?}"
            );
        }
    }
}
