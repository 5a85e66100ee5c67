//! Imported password hashes.
//!
//! Auth0 hands out bcrypt (`$2a$`, `$2b$`; PHP's `$2y$` is the same
//! algorithm) on a support ticket, Keycloak exports PBKDF2-SHA256/512 as a
//! credential JSON, other systems give PHC strings (argon2, scrypt,
//! pbkdf2). They are stored as they come and verified here; a successful
//! login replaces them with argon2id at today's parameters (OWASP Password
//! Storage Cheat Sheet: upgrade legacy hashes at the next login).

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use serde::Deserialize;

use crate::crypto::{b64_decode, constant_time_eq};

/// The algorithm family of a stored hash, as recorded in `credentials.algorithm`.
pub fn algorithm_of(stored: &str) -> &'static str {
    if stored.starts_with("$argon2id$") {
        "argon2id"
    } else if stored.starts_with("$argon2") {
        "argon2"
    } else if stored.starts_with("$2a$")
        || stored.starts_with("$2b$")
        || stored.starts_with("$2y$")
        || stored.starts_with("$2x$")
    {
        "bcrypt"
    } else if stored.starts_with("$pbkdf2") || stored.trim_start().starts_with('{') {
        "pbkdf2"
    } else if stored.starts_with("$scrypt$") {
        "scrypt"
    } else {
        "unknown"
    }
}

/// Whether `password` matches `stored`, whatever its format. An unknown
/// format never matches.
pub fn verify(stored: &str, password: &str) -> bool {
    match algorithm_of(stored) {
        "argon2id" | "argon2" => phc(stored, password, &argon2::Argon2::default()),
        "bcrypt" => bcrypt::verify(password, stored).unwrap_or(false),
        "scrypt" => phc(stored, password, &scrypt::Scrypt),
        "pbkdf2" if stored.starts_with('$') => phc(stored, password, &pbkdf2::Pbkdf2),
        "pbkdf2" => keycloak(stored, password),
        _ => false,
    }
}

fn phc(stored: &str, password: &str, algorithm: &dyn PasswordVerifier) -> bool {
    PasswordHash::new(stored)
        .is_ok_and(|h| algorithm.verify_password(password.as_bytes(), &h).is_ok())
}

/// Keycloak's credential as exported in a realm file, kept as one JSON
/// document: `{"value": b64, "salt": b64, "hashIterations": n, "algorithm":
/// "pbkdf2-sha256" | "pbkdf2-sha512" | "pbkdf2"}` (Keycloak's realm export,
/// `credentials[].secretData` and `credentialData`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeycloakCredential {
    value: String,
    salt: String,
    hash_iterations: u32,
    algorithm: String,
}

fn keycloak(stored: &str, password: &str) -> bool {
    let Ok(c) = serde_json::from_str::<KeycloakCredential>(stored) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (b64_decode(&c.value), b64_decode(&c.salt)) else {
        return false;
    };
    if c.hash_iterations == 0 || expected.is_empty() || expected.len() > 128 {
        return false;
    }
    let mut derived = vec![0u8; expected.len()];
    match c.algorithm.as_str() {
        "pbkdf2-sha256" => pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
            password.as_bytes(),
            &salt,
            c.hash_iterations,
            &mut derived,
        ),
        "pbkdf2-sha512" => pbkdf2::pbkdf2_hmac::<sha2::Sha512>(
            password.as_bytes(),
            &salt,
            c.hash_iterations,
            &mut derived,
        ),
        // Keycloak's oldest provider: PBKDF2 with HMAC-SHA1.
        "pbkdf2" => pbkdf2::pbkdf2_hmac::<sha1::Sha1>(
            password.as_bytes(),
            &salt,
            c.hash_iterations,
            &mut derived,
        ),
        _ => return false,
    }
    constant_time_eq(&derived, &expected)
}

/// Builds Keycloak's credential JSON from a realm export's `secretData` and
/// `credentialData` strings.
pub fn keycloak_credential(secret_data: &str, credential_data: &str) -> Option<String> {
    let secret: serde_json::Value = serde_json::from_str(secret_data).ok()?;
    let data: serde_json::Value = serde_json::from_str(credential_data).ok()?;
    let out = serde_json::json!({
        "value": secret.get("value")?,
        "salt": secret.get("salt")?,
        "hashIterations": data.get("hashIterations")?,
        "algorithm": data.get("algorithm")?,
    });
    Some(out.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, SaltString};
    use base64::Engine;

    const PASSWORD: &str = "legacy password 1";

    #[test]
    fn bcrypt_hashes_verify_in_every_prefix() {
        let h = bcrypt::hash(PASSWORD, 4).unwrap();
        assert!(verify(&h, PASSWORD));
        assert!(!verify(&h, "wrong"));
        for prefix in ["$2a$", "$2y$"] {
            let other = format!("{prefix}{}", &h[4..]);
            assert_eq!(algorithm_of(&other), "bcrypt");
            assert!(verify(&other, PASSWORD), "{prefix}");
        }
    }

    #[test]
    fn phc_pbkdf2_scrypt_and_argon2_verify() {
        let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap();
        let pbkdf2 = pbkdf2::Pbkdf2
            .hash_password(PASSWORD.as_bytes(), &salt)
            .unwrap()
            .to_string();
        let scrypt = scrypt::Scrypt
            .hash_password_customized(
                PASSWORD.as_bytes(),
                None,
                None,
                scrypt::Params::new(10, 8, 1, 32).unwrap(),
                &salt,
            )
            .unwrap()
            .to_string();
        let argon2i = argon2::Argon2::new(
            argon2::Algorithm::Argon2i,
            argon2::Version::V0x13,
            argon2::Params::default(),
        )
        .hash_password(PASSWORD.as_bytes(), &salt)
        .unwrap()
        .to_string();
        for h in [pbkdf2, scrypt, argon2i] {
            assert!(verify(&h, PASSWORD), "{h}");
            assert!(!verify(&h, "wrong"), "{h}");
        }
    }

    #[test]
    fn keycloak_pbkdf2_credentials_verify() {
        let salt = b"0123456789abcdef";
        for (alg, len) in [("pbkdf2-sha256", 64), ("pbkdf2-sha512", 64)] {
            let mut out = vec![0u8; len];
            if alg == "pbkdf2-sha256" {
                pbkdf2::pbkdf2_hmac::<sha2::Sha256>(PASSWORD.as_bytes(), salt, 27500, &mut out);
            } else {
                pbkdf2::pbkdf2_hmac::<sha2::Sha512>(PASSWORD.as_bytes(), salt, 27500, &mut out);
            }
            let b64 = base64::engine::general_purpose::STANDARD;
            let secret = serde_json::json!({"value": b64.encode(&out), "salt": b64.encode(salt)})
                .to_string();
            let data = serde_json::json!({"hashIterations": 27500, "algorithm": alg}).to_string();
            let stored = keycloak_credential(&secret, &data).unwrap();
            assert_eq!(algorithm_of(&stored), "pbkdf2");
            assert!(verify(&stored, PASSWORD), "{alg}");
            assert!(!verify(&stored, "wrong"), "{alg}");
        }
    }

    #[test]
    fn unknown_formats_never_match() {
        assert!(!verify("md5$abc", PASSWORD));
        assert!(!verify("", ""));
    }
}
