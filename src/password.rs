//! Password hashing: argon2id at OWASP's parameters (m = 19 MiB, t = 2,
//! p = 1 by default), on a bounded pool of blocking threads.
//!
//! A hash costs tens of milliseconds of CPU. Run on the async runtime it
//! would stall every request on that worker; run on an unbounded blocking
//! pool a login burst would queue hundreds of 19 MiB hashes at once. A
//! semaphore sized to the cores admits that many hashes, the rest wait their
//! turn, and token requests keep their latency.
//!
//! Imported hashes (bcrypt, PBKDF2, scrypt) verify too, and ask to be
//! replaced with argon2id on the next successful login.
//!
//! An unknown user is verified against a dummy hash made at start-up with
//! the same parameters, so it costs the same time as a wrong password
//! (ASVS 6.3.8).

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::config::PasswordSettings;

pub const ARGON2ID: &str = "argon2id";

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    #[error("hashing failed: {0}")]
    Hash(String),
}

/// The outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// The password matches; `rehash` asks for the hash to be replaced with
    /// one at today's parameters.
    Yes {
        rehash: bool,
    },
    No,
}

pub struct Passwords {
    params: Params,
    /// Admits at most `hashing_threads` hashes at once.
    permits: Arc<Semaphore>,
    dummy_hash: String,
    min_length: usize,
}

impl Passwords {
    pub fn new(settings: &PasswordSettings) -> Result<Self, PasswordError> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|e| PasswordError::Params(e.to_string()))?;
        let threads = settings
            .hashing_threads
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            })
            .max(1);
        let dummy_hash = hash_with(&params, "switchyard dummy password")?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(threads)),
            dummy_hash,
            min_length: settings.min_length,
        })
    }

    /// The policy for a password set through Switchyard. No maximum below
    /// 1,024 characters and no truncation (ASVS 6.2.x): long passphrases work.
    pub fn check_policy(&self, password: &str) -> Result<(), String> {
        let n = password.chars().count();
        if n < self.min_length {
            return Err(format!(
                "a password must be at least {} characters",
                self.min_length
            ));
        }
        if n > 1024 {
            return Err("a password must be at most 1,024 characters".into());
        }
        Ok(())
    }

    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let params = self.params.clone();
        self.run(move || hash_with(&params, &password)).await
    }

    /// Verifies `password` against `stored`, or against the dummy hash when
    /// there is nothing stored, so both paths take the same time.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<Verified, PasswordError> {
        let real = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy_hash.clone());
        let params = self.params.clone();
        let ok = self
            .run(move || {
                Ok(verify_with(&hash, &password)
                    .map(|rehash| (rehash, needs_rehash(&hash, &params))))
            })
            .await?;
        Ok(match ok {
            Some((_, rehash)) if real => Verified::Yes { rehash },
            _ => Verified::No,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| PasswordError::Hash(e.to_string()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| PasswordError::Hash(e.to_string()))?
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_with(params: &Params, password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2(params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// `Some(())` when the password matches: argon2id, or any format an import
/// brought in (bcrypt, PBKDF2, scrypt, other argon2 variants).
fn verify_with(stored: &str, password: &str) -> Option<()> {
    crate::migrate::hashes::verify(stored, password).then_some(())
}

fn needs_rehash(stored: &str, params: &Params) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return true;
    };
    if parsed.algorithm.as_str() != ARGON2ID {
        return true;
    }
    match Params::try_from(&parsed) {
        Ok(p) => {
            p.m_cost() < params.m_cost()
                || p.t_cost() < params.t_cost()
                || p.p_cost() < params.p_cost()
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> PasswordSettings {
        PasswordSettings {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            hashing_threads: Some(2),
            min_length: 8,
            failure_floor_ms: 0,
        }
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let p = Passwords::new(&fast()).unwrap();
        let hash = p.hash("correct horse battery staple".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert_eq!(
            p.verify("correct horse battery staple".into(), Some(hash.clone()))
                .await
                .unwrap(),
            Verified::Yes { rehash: false }
        );
        assert_eq!(
            p.verify("wrong".into(), Some(hash)).await.unwrap(),
            Verified::No
        );
    }

    #[tokio::test]
    async fn a_missing_hash_never_verifies_even_with_the_dummy_password() {
        let p = Passwords::new(&fast()).unwrap();
        assert_eq!(
            p.verify("switchyard dummy password".into(), None)
                .await
                .unwrap(),
            Verified::No
        );
    }

    #[tokio::test]
    async fn weaker_parameters_ask_for_a_rehash() {
        let p = Passwords::new(&fast()).unwrap();
        let weak = hash_with(
            &Params::new(8 * 1024, 1, 1, None).unwrap(),
            "hunter2hunter2",
        )
        .unwrap();
        assert_eq!(
            p.verify("hunter2hunter2".into(), Some(weak)).await.unwrap(),
            Verified::Yes { rehash: true }
        );
    }

    #[test]
    fn long_passphrases_are_accepted_whole() {
        let p = Passwords::new(&fast()).unwrap();
        assert!(p.check_policy(&"x".repeat(200)).is_ok());
        assert!(p.check_policy("short").is_err());
    }
}
