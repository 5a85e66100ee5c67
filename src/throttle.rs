//! Failed-login throttling per account and per IP (ASVS 6.1.1, 6.3.1).
//!
//! Fixed windows in the session store: every instance shares the counts, a
//! window that fills up refuses further attempts until it ends, and it ends
//! by itself, so an attacker can hold a victim's account for one window at
//! a time at most. The check runs before any password is verified (and, in
//! later issues, before any upstream call), so Switchyard can never be used
//! to brute-force anything.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::ThrottleSettings;
use crate::crypto::sha256_b64;
use crate::store::{SessionStore, StoreResult};

pub struct Throttle {
    store: Arc<dyn SessionStore>,
    settings: ThrottleSettings,
}

/// Attempts are refused for this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

impl Throttle {
    pub fn new(store: Arc<dyn SessionStore>, settings: ThrottleSettings) -> Self {
        Self { store, settings }
    }

    fn account_key(account: &str) -> String {
        // Hashed: identifiers are personal data and need not sit in Redis.
        format!(
            "throttle:acct:{}",
            sha256_b64(account.trim().to_lowercase().as_bytes())
        )
    }

    fn ip_key(ip: IpAddr) -> String {
        format!("throttle:ip:{ip}")
    }

    /// Refuses when either window is full.
    pub async fn check(
        &self,
        account: &str,
        ip: Option<IpAddr>,
    ) -> StoreResult<Result<(), Limited>> {
        let mut checks = vec![(Self::account_key(account), self.settings.account_failures)];
        if let Some(ip) = ip {
            checks.push((Self::ip_key(ip), self.settings.ip_failures));
        }
        for (key, limit) in checks {
            if let Some(bytes) = self.store.get(&key).await? {
                let count: u64 = std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if count >= limit {
                    // The window's end is not readable through a plain get;
                    // the full window is a safe upper bound to announce.
                    let window = if key.starts_with("throttle:ip") {
                        self.settings.ip_window_secs
                    } else {
                        self.settings.account_window_secs
                    };
                    return Ok(Err(Limited {
                        retry_after: Duration::from_secs(window),
                    }));
                }
            }
        }
        Ok(Ok(()))
    }

    pub async fn record_failure(&self, account: &str, ip: Option<IpAddr>) -> StoreResult<()> {
        self.store
            .incr(
                &Self::account_key(account),
                Duration::from_secs(self.settings.account_window_secs),
            )
            .await?;
        if let Some(ip) = ip {
            self.store
                .incr(
                    &Self::ip_key(ip),
                    Duration::from_secs(self.settings.ip_window_secs),
                )
                .await?;
        }
        Ok(())
    }

    /// Counts a recovery request (Forgot password) for `account` from `ip`,
    /// and refuses it once either window holds its limit. The count is
    /// taken before anything is looked up, and whether the account exists
    /// or not, so the answer reveals nothing; its own keys, so that asking
    /// for links never locks anyone out of signing in.
    pub async fn recovery_request(
        &self,
        account: &str,
        ip: IpAddr,
    ) -> StoreResult<Result<(), Limited>> {
        let checks = [
            (
                format!(
                    "throttle:reset:{}",
                    &Self::account_key(account)["throttle:".len()..]
                ),
                self.settings.reset_account_requests,
                self.settings.account_window_secs,
            ),
            (
                format!("throttle:reset:ip:{ip}"),
                self.settings.reset_ip_requests,
                self.settings.ip_window_secs,
            ),
        ];
        for (key, limit, window) in checks {
            let counter = self.store.incr(&key, Duration::from_secs(window)).await?;
            if counter.count > limit {
                return Ok(Err(Limited {
                    retry_after: counter.resets_in,
                }));
            }
        }
        Ok(Ok(()))
    }

    /// A successful login clears the account's window (not the IP's: one
    /// good password must not reset a stuffing run from that address).
    pub async fn record_success(&self, account: &str) -> StoreResult<()> {
        self.store.delete(&Self::account_key(account)).await?;
        Ok(())
    }
}
