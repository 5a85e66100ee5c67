//! Signing keys: RS256 by default, ES256 and EdDSA selectable.
//!
//! Each algorithm has at most one `active` key (it signs) and one `next` key
//! (published, not yet signing), so relying parties that cache the JWKS have
//! already seen a key before the first token signed with it reaches them.
//! `keys rotate` promotes `next`, retires `active` and keeps it published
//! until every token it signed has expired (OIDC Core §10.1.1).
//!
//! Keys live in the SQL store so every instance signs with the same ones;
//! each instance reloads them periodically and whenever a token names a
//! `kid` it does not know. Private keys are sealed with AES-256-GCM (the kid
//! as associated data) when `SWITCHYARD_KEY_ENCRYPTION_KEY` is set.
//!
//! Signing uses aws-lc-rs key pairs parsed once at load. jsonwebtoken (on the
//! same aws-lc-rs backend) verifies tokens and describes keys, but its
//! `encode` re-parses and re-validates the private key on every signature,
//! which would roughly halve the RS256 signing rate the token endpoint lives on.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use jsonwebtoken::DecodingKey;
use serde_json::{Value, json};

use crate::crypto::{self, Sealer, b64url};
use crate::store::{Database, KeyState, SigningKeyRecord, StoreError, now};

/// The JWS algorithms keys are kept for: one closed set with the settings,
/// so it is named below both.
pub use crate::store::SigningAlg as Alg;

impl Alg {
    pub fn jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            Alg::RS256 => jsonwebtoken::Algorithm::RS256,
            Alg::ES256 => jsonwebtoken::Algorithm::ES256,
            Alg::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }

    /// The hash of `at_hash` (OIDC Core §3.1.3.6): the one the signature
    /// uses; SHA-512 for Ed25519, as the OpenID Foundation's EdDSA
    /// clarification and certified libraries expect.
    pub fn at_hash_digest(self) -> &'static aws_lc_rs::digest::Algorithm {
        match self {
            Alg::RS256 | Alg::ES256 => &aws_lc_rs::digest::SHA256,
            Alg::EdDSA => &aws_lc_rs::digest::SHA512,
        }
    }
}

enum Signer {
    Rsa(signature::RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// RFC 9068 §2.1: access tokens are typed so one can never pass for an ID
/// token. Defined here, below [`super::jwt`], because each key encodes its
/// headers for it once.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// One loaded key: the parsed private half, its public JWK and a decoding key.
pub struct SigningKey {
    pub kid: String,
    pub alg: Alg,
    pub state: KeyState,
    pub publish_until: Option<i64>,
    signer: Signer,
    jwk: Value,
    decoding: DecodingKey,
    /// The encoded JOSE headers of the two token types this key signs on
    /// every grant, made once: `(typ, base64url(header))`.
    headers: [(&'static str, String); 2],
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("key {kid}: {reason}")]
    Invalid { kid: String, reason: String },
    #[error("signing failed")]
    Sign,
}

impl SigningKey {
    /// Signs `message` (the JWS signing input).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Rsa(kp) => {
                let mut sig = vec![0u8; kp.public_modulus_len()];
                kp.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .map_err(|_| KeyError::Sign)?;
                Ok(sig)
            }
            Signer::Ec(kp) => Ok(kp
                .sign(&rng, message)
                .map_err(|_| KeyError::Sign)?
                .as_ref()
                .to_vec()),
            Signer::Ed(kp) => Ok(kp.sign(message).as_ref().to_vec()),
        }
    }

    /// The encoded JOSE header (RFC 7515 §4) of a token of type `typ`
    /// signed by this key.
    pub fn encoded_header(&self, typ: &str) -> std::borrow::Cow<'_, str> {
        match self.headers.iter().find(|(t, _)| *t == typ) {
            Some((_, encoded)) => std::borrow::Cow::Borrowed(encoded),
            None => std::borrow::Cow::Owned(encode_header(self.alg, &self.kid, typ)),
        }
    }

    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    pub(crate) fn from_der(
        kid: &str,
        alg: Alg,
        der: &[u8],
        state: KeyState,
        publish_until: Option<i64>,
    ) -> Result<Self, KeyError> {
        let invalid = |reason: String| KeyError::Invalid {
            kid: kid.to_string(),
            reason,
        };
        let (signer, jwk, decoding) = match alg {
            Alg::RS256 => {
                let kp =
                    signature::RsaKeyPair::from_pkcs8(der).map_err(|e| invalid(e.to_string()))?;
                let n = kp
                    .public_key()
                    .modulus()
                    .big_endian_without_leading_zero()
                    .to_vec();
                let e = kp
                    .public_key()
                    .exponent()
                    .big_endian_without_leading_zero()
                    .to_vec();
                let jwk = json!({"kty": "RSA", "n": b64url(&n), "e": b64url(&e)});
                (
                    Signer::Rsa(kp),
                    jwk,
                    DecodingKey::from_rsa_raw_components(&n, &e),
                )
            }
            Alg::ES256 => {
                let kp = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|e| invalid(e.to_string()))?;
                // Uncompressed SEC1 point: 0x04 || x || y.
                let point = kp.public_key().as_ref();
                if point.len() != 65 {
                    return Err(invalid("unexpected P-256 public key length".into()));
                }
                let (x, y) = (b64url(&point[1..33]), b64url(&point[33..]));
                let decoding =
                    DecodingKey::from_ec_components(&x, &y).map_err(|e| invalid(e.to_string()))?;
                (
                    Signer::Ec(kp),
                    json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
                    decoding,
                )
            }
            Alg::EdDSA => {
                let kp = Ed25519KeyPair::from_pkcs8(der).map_err(|e| invalid(e.to_string()))?;
                let x = b64url(kp.public_key().as_ref());
                let decoding =
                    DecodingKey::from_ed_components(&x).map_err(|e| invalid(e.to_string()))?;
                (
                    Signer::Ed(kp),
                    json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
                    decoding,
                )
            }
        };
        let mut jwk = jwk;
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(alg.as_str());
        jwk["use"] = json!("sig");
        let headers = [ACCESS_TOKEN_TYP, "JWT"].map(|typ| (typ, encode_header(alg, kid, typ)));
        Ok(Self {
            kid: kid.to_string(),
            alg,
            state,
            publish_until,
            signer,
            jwk,
            decoding,
            headers,
        })
    }
}

/// `{"alg":…,"kid":…,"typ":…}`, base64url.
fn encode_header(alg: Alg, kid: &str, typ: &str) -> String {
    let header = json!({"alg": alg.as_str(), "typ": typ, "kid": kid});
    b64url(header.to_string().as_bytes())
}

/// Generates a new PKCS#8 private key for `alg`.
pub fn generate_pkcs8(alg: Alg) -> Result<Vec<u8>, KeyError> {
    let failed = || KeyError::Invalid {
        kid: "(new)".into(),
        reason: "key generation failed".into(),
    };
    Ok(match alg {
        Alg::RS256 => {
            let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| failed())?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der = kp.as_der().map_err(|_| failed())?;
            der.as_ref().to_vec()
        }
        Alg::ES256 => EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
            .and_then(|kp| kp.to_pkcs8v1())
            .map_err(|_| failed())?
            .as_ref()
            .to_vec(),
        Alg::EdDSA => Ed25519KeyPair::generate()
            .and_then(|kp| kp.to_pkcs8())
            .map_err(|_| failed())?
            .as_ref()
            .to_vec(),
    })
}

/// The keys one instance currently holds.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<Arc<SigningKey>>,
    by_kid: HashMap<String, Arc<SigningKey>>,
    active: HashMap<Alg, Arc<SigningKey>>,
}

impl KeySet {
    /// A set of loaded keys, in creation order.
    pub(crate) fn from_keys(keys: Vec<Arc<SigningKey>>) -> Self {
        let mut set = Self::default();
        for key in keys {
            if key.state == KeyState::Active {
                // Two instances starting on an empty database at once can
                // both create an active key; the newest one (records are
                // ordered by creation) wins on every instance alike.
                set.active.insert(key.alg, key.clone());
            }
            set.by_kid.insert(key.kid.clone(), key.clone());
            set.keys.push(key);
        }
        set
    }

    pub fn active(&self, alg: Alg) -> Option<&Arc<SigningKey>> {
        self.active.get(&alg)
    }

    pub fn get(&self, kid: &str) -> Option<&Arc<SigningKey>> {
        self.by_kid.get(kid)
    }

    pub fn keys(&self) -> &[Arc<SigningKey>] {
        &self.keys
    }

    /// The published set: next, active, and retired keys still in their
    /// overlap window.
    pub fn jwks(&self, now: i64) -> Value {
        let keys: Vec<&Value> = self
            .keys
            .iter()
            .filter(|k| k.state != KeyState::Retired || k.publish_until.is_some_and(|t| t > now))
            .map(|k| k.jwk())
            .collect();
        json!({ "keys": keys })
    }
}

/// The keys in use, shared by every request, reloaded from the store.
pub struct KeyRing {
    db: Arc<dyn Database>,
    sealer: Option<Sealer>,
    /// The current key set; swapped whole on reload so a reader never sees
    /// a half-updated set.
    current: RwLock<Arc<KeySet>>,
    /// Algorithms that must always have an active and a next key.
    algs: Vec<Alg>,
}

impl KeyRing {
    /// Loads the keys, creating an active and a next key for each algorithm
    /// that lacks them (the first start of a fresh database).
    pub async fn load(
        db: Arc<dyn Database>,
        sealer: Option<Sealer>,
        algs: Vec<Alg>,
    ) -> Result<Self, KeyError> {
        let ring = Self {
            db,
            sealer,
            current: RwLock::new(Arc::new(KeySet::default())),
            algs,
        };
        let records = ring.db.list_keys().await?;
        for alg in &ring.algs {
            for state in [KeyState::Active, KeyState::Next] {
                if !records
                    .iter()
                    .any(|r| r.alg == alg.as_str() && r.state == state)
                {
                    let record = ring.new_record(*alg, state)?;
                    ring.db.insert_key(&record).await?;
                }
            }
        }
        ring.reload().await?;
        Ok(ring)
    }

    pub fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the keys from the store.
    pub async fn reload(&self) -> Result<(), KeyError> {
        let records = self.db.list_keys().await?;
        let mut keys = Vec::with_capacity(records.len());
        for r in records {
            let Some(alg) = Alg::parse(&r.alg) else {
                continue;
            };
            let der = self.open_private_key(&r)?;
            keys.push(Arc::new(SigningKey::from_der(
                &r.kid,
                alg,
                &der,
                r.state,
                r.publish_until,
            )?));
        }
        let set = KeySet::from_keys(keys);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        Ok(())
    }

    /// Promotes the next key of `alg`; the retired key stays published for
    /// `overlap_secs`.
    pub async fn rotate(&self, alg: Alg, overlap_secs: i64) -> Result<String, KeyError> {
        let record = self.new_record(alg, KeyState::Next)?;
        let now = now();
        self.db
            .rotate_keys(alg.as_str(), &record, now + overlap_secs, now)
            .await?;
        self.reload().await?;
        Ok(record.kid)
    }

    fn new_record(&self, alg: Alg, state: KeyState) -> Result<SigningKeyRecord, KeyError> {
        let kid = crypto::b64url(&crypto::random_bytes(12));
        let der = generate_pkcs8(alg)?;
        let private_key = match &self.sealer {
            Some(s) => format!("sealed:{}", crypto::b64url(&s.seal(&der, kid.as_bytes()))),
            None => crypto::b64url(&der),
        };
        Ok(SigningKeyRecord {
            kid,
            alg: alg.as_str().into(),
            private_key,
            state,
            created_at: now(),
            publish_until: None,
        })
    }

    fn open_private_key(&self, r: &SigningKeyRecord) -> Result<Vec<u8>, KeyError> {
        let invalid = |reason: &str| KeyError::Invalid {
            kid: r.kid.clone(),
            reason: reason.into(),
        };
        match r.private_key.strip_prefix("sealed:") {
            Some(sealed) => {
                let sealer = self
                    .sealer
                    .as_ref()
                    .ok_or_else(|| invalid("is encrypted: set SWITCHYARD_KEY_ENCRYPTION_KEY"))?;
                let bytes =
                    crypto::b64url_decode(sealed).ok_or_else(|| invalid("is not base64"))?;
                sealer
                    .open(&bytes, r.kid.as_bytes())
                    .map_err(|_| invalid("does not open with SWITCHYARD_KEY_ENCRYPTION_KEY"))
            }
            None => crypto::b64url_decode(&r.private_key).ok_or_else(|| invalid("is not base64")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_generates_a_key_that_signs_and_describes_itself() {
        for alg in [Alg::RS256, Alg::ES256, Alg::EdDSA] {
            let der = generate_pkcs8(alg).unwrap();
            let key = SigningKey::from_der("k1", alg, &der, KeyState::Active, None).unwrap();
            let sig = key.sign(b"header.payload").unwrap();
            assert!(!sig.is_empty());
            assert_eq!(key.jwk()["alg"], alg.as_str());
            assert_eq!(key.jwk()["kid"], "k1");
            assert!(
                key.jwk().get("d").is_none(),
                "no private part in a published JWK"
            );
        }
    }
}
