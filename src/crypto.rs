//! Small cryptographic helpers shared by every module.
//!
//! Everything here delegates to `aws-lc-rs`, the same constant-time backend
//! jsonwebtoken uses, so the product carries one cryptographic library.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// Fills `len` bytes from the operating system's CSPRNG.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut buf).expect("the system CSPRNG is unavailable");
    buf
}

/// A 256-bit random value, base64url without padding (43 characters).
///
/// Used for session ids, codes, refresh tokens and CSRF tokens: ASVS 7.2.3
/// asks for at least 128 bits from a CSPRNG.
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(32))
}

/// SHA-256, base64url without padding.
///
/// Tokens Switchyard issues are stored only under this digest
/// (RFC 6819 §5.1.4.1.3): a store dump yields nothing a client could replay.
pub fn sha256_b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, data))
}

/// Raw SHA-256.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, data).as_ref().to_vec()
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

pub fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// [`b64url`] appended to `out`, without a string of its own.
pub fn b64url_into(data: &[u8], out: &mut String) {
    URL_SAFE_NO_PAD.encode_string(data, out);
}

pub fn b64url_decode(data: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(data).ok()
}

pub fn b64_decode(data: &str) -> Option<Vec<u8>> {
    STANDARD.decode(data.trim()).ok()
}

/// AES-256-GCM with a random 96-bit nonce per message.
///
/// The associated data binds a ciphertext to the record it belongs to (a key
/// id, a session id), so a sealed value copied into another record does not
/// open.
pub struct Sealer {
    key: LessSafeKey,
}

#[derive(Debug, thiserror::Error)]
#[error("the sealed value could not be opened")]
pub struct OpenError;

impl Sealer {
    /// `key` must be exactly 32 bytes.
    pub fn new(key: &[u8]) -> Option<Self> {
        let unbound = UnboundKey::new(&AES_256_GCM, key).ok()?;
        Some(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Returns `nonce || ciphertext || tag`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let nonce_bytes = random_bytes(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&nonce_bytes).expect("nonce length");
        let mut in_out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(nonce, Aad::from(aad), &mut in_out)
            .expect("AES-GCM sealing cannot fail for in-memory buffers");
        let mut out = nonce_bytes;
        out.extend_from_slice(&in_out);
        out
    }

    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (nonce_bytes, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce_bytes).map_err(|_| OpenError)?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut in_out)
            .map_err(|_| OpenError)?;
        Ok(plain.to_vec())
    }
}

/// Hashes a client secret for storage: `sha256$<salt>$<digest>`. Here
/// rather than in client authentication because wiring (the dummy hash) and
/// the CLI (provisioning clients) hash secrets too, below the HTTP layer.
///
/// Client secrets are high-entropy (at least 32 characters, 256 random bits
/// when generated), for which a salted SHA-256 is as strong as a slow hash,
/// and a slow hash would cost every token request tens of milliseconds.
pub fn hash_secret(secret: &str) -> String {
    let salt = random_bytes(16);
    let digest = salted_digest(&salt, secret);
    format!("sha256${}${}", b64url(&salt), b64url(&digest))
}

fn salted_digest(salt: &[u8], secret: &str) -> Vec<u8> {
    let mut input = salt.to_vec();
    input.extend_from_slice(secret.as_bytes());
    sha256(&input)
}

/// Constant-time check of `secret` against a stored hash.
pub fn verify_secret(stored: &str, secret: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some("sha256"), Some(salt), Some(digest), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Some(salt), Some(digest)) = (b64url_decode(salt), b64url_decode(digest)) else {
        return false;
    };
    constant_time_eq(&salted_digest(&salt, secret), &digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_hash_verifies_only_its_secret() {
        let h = hash_secret("s3cret-s3cret-s3cret-s3cret-s3cret");
        assert!(verify_secret(&h, "s3cret-s3cret-s3cret-s3cret-s3cret"));
        assert!(!verify_secret(&h, "s3cret-s3cret-s3cret-s3cret-s3creT"));
        assert!(!verify_secret("plain", "plain"));
    }

    #[test]
    fn sealed_value_opens_only_with_the_same_associated_data() {
        let sealer = Sealer::new(&[7u8; 32]).unwrap();
        let sealed = sealer.seal(b"secret", b"kid-1");
        assert_eq!(sealer.open(&sealed, b"kid-1").unwrap(), b"secret");
        assert!(sealer.open(&sealed, b"kid-2").is_err());
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn random_tokens_carry_256_bits_and_differ() {
        let a = random_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token());
    }
}
