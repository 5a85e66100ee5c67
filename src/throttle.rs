//! Failed-login throttling per account and per IP (ASVS 6.1.1, 6.3.1).
//!
//! Fixed windows in the session store: every instance shares the counts, a
//! window that fills up refuses further attempts until it ends, and it ends
//! by itself, so an attacker can hold a victim's account for one window at
//! a time at most. Every attempt is counted, atomically, before any password
//! is verified or any upstream called, and given back when it turns out not
//! to be a failure, so Switchyard can never be used to brute-force anything,
//! however many attempts arrive at once.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::ThrottleSettings;
use crate::crypto::sha256_b64;
use crate::store::{SessionStore, StoreResult};

pub struct Throttle {
    store: Arc<dyn SessionStore>,
    settings: ThrottleSettings,
    /// The latest upstream password checks' durations, on this instance.
    upstream_checks: Mutex<VecDeque<Duration>>,
}

/// Lets something happen at most once per interval, on this instance (the
/// upstream client paces its JWKS refetches the same way).
pub struct Pacer {
    every: Duration,
    last: Mutex<Option<std::time::Instant>>,
}

impl Pacer {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(None),
        }
    }

    /// True, and the interval restarts, when the last time was at least an
    /// interval ago (or never).
    pub fn ready(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < self.every) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        true
    }
}

/// How many upstream password checks the rolling p99 is taken over.
const UPSTREAM_CHECK_SAMPLES: usize = 200;

/// An attempt counted by [`Throttle::attempt`]; it stays counted unless
/// given back.
#[must_use = "an attempt is given back on success, or stays counted"]
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Counted {
    account: String,
    ip: String,
}

/// Attempts are refused for this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

impl Throttle {
    pub fn new(store: Arc<dyn SessionStore>, settings: ThrottleSettings) -> Self {
        Self {
            store,
            settings,
            upstream_checks: Mutex::new(VecDeque::with_capacity(UPSTREAM_CHECK_SAMPLES)),
        }
    }

    /// Records how long the upstream took to check a password (whatever it
    /// answered), for [`Throttle::upstream_check_p99`].
    pub fn record_upstream_check(&self, took: Duration) {
        let mut samples = self
            .upstream_checks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if samples.len() == UPSTREAM_CHECK_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(took);
    }

    /// The 99th percentile of the latest upstream password checks (nearest
    /// rank), or `None` before the first. A failed login must take at least
    /// this long wherever it was checked, or a local answer would be told
    /// from an upstream one by its speed.
    pub fn upstream_check_p99(&self) -> Option<Duration> {
        let mut sorted: Vec<Duration> = self
            .upstream_checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_unstable();
        let rank = (sorted.len() * 99).div_ceil(100);
        sorted.get(rank.saturating_sub(1)).copied()
    }

    /// The key an address's windows are counted under (its /64 for IPv6),
    /// for other per-address budgets.
    pub fn address_bucket(ip: IpAddr) -> String {
        Self::ip_key(ip)["throttle:ip:".len()..].to_string()
    }

    fn account_key(account: &str) -> String {
        // Hashed: identifiers are personal data and need not sit in Redis.
        format!(
            "throttle:acct:{}",
            sha256_b64(account.trim().to_lowercase().as_bytes())
        )
    }

    /// An IPv4 address, or the /64 an IPv6 address is in: one subscriber
    /// is usually given a whole /64, and counting its addresses one by one
    /// would give an attacker 2^64 windows.
    fn ip_key(ip: IpAddr) -> String {
        match ip {
            IpAddr::V4(v4) => format!("throttle:ip:{v4}"),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => format!("throttle:ip:{v4}"),
                None => {
                    let s = v6.segments();
                    let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                    format!("throttle:ip:{net}/64")
                }
            },
        }
    }

    /// Counts an attempt on `account` from `ip` before anything is
    /// verified or any upstream called: one atomic increment per window
    /// (the store's `incr` returns the new count), so concurrent attempts
    /// cannot all pass a check made before any of them is recorded. Refused
    /// once either window holds more than its limit; a refused attempt
    /// stays counted until its window ends.
    pub async fn attempt(
        &self,
        account: &str,
        ip: IpAddr,
    ) -> StoreResult<Result<Counted, Limited>> {
        let counted = Counted {
            account: Self::account_key(account),
            ip: Self::ip_key(ip),
        };
        // The address first: an address over its limit is refused without
        // touching the account's window, so a stuffing run that has used up
        // its own budget cannot go on filling its victims' windows.
        let windows = [
            (
                &counted.ip,
                self.settings.ip_failures,
                self.settings.ip_window_secs,
            ),
            (
                &counted.account,
                self.settings.account_failures,
                self.settings.account_window_secs,
            ),
        ];
        for (key, limit, window) in windows {
            let counter = self.store.incr(key, Duration::from_secs(window)).await?;
            if counter.count > limit {
                return Ok(Err(Limited {
                    retry_after: counter.resets_in,
                }));
            }
        }
        Ok(Ok(counted))
    }

    /// The attempt's password was right: the account's window is cleared
    /// (a right password ends a run of wrong ones) and the attempt is given
    /// back to the address's, which counts failures, not logins (an office
    /// behind one address signs in all day). A wrong password needs no
    /// call: its attempt stays counted.
    pub async fn succeeded(&self, counted: Counted) -> StoreResult<()> {
        self.store.delete(&counted.account).await?;
        self.store.decr(&counted.ip).await
    }

    /// The attempt checked no password after all (the redirect track took
    /// it, or the upstream could not be asked): given back to both windows.
    pub async fn give_back(&self, counted: Counted) -> StoreResult<()> {
        self.store.decr(&counted.account).await?;
        self.store.decr(&counted.ip).await
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
                format!("throttle:reset:{}", &Self::ip_key(ip)["throttle:".len()..]),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_count_per_64_and_mapped_ipv4_as_ipv4() {
        let key = |s: &str| Throttle::ip_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::2"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("2001:db8:1:2::1"), "throttle:ip:2001:db8:1:2::/64");
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }

    #[test]
    fn the_upstream_p99_is_the_nearest_rank_of_the_latest_samples() {
        let store: Arc<dyn SessionStore> = Arc::new(crate::store::memory::MemoryStore::new());
        let t = Throttle::new(store, ThrottleSettings::default());
        assert_eq!(t.upstream_check_p99(), None);
        for ms in 1..=100 {
            t.record_upstream_check(Duration::from_millis(ms));
        }
        assert_eq!(t.upstream_check_p99(), Some(Duration::from_millis(99)));
        // Only the latest samples count: old slow ones age out.
        t.record_upstream_check(Duration::from_secs(9));
        for _ in 0..UPSTREAM_CHECK_SAMPLES {
            t.record_upstream_check(Duration::from_millis(5));
        }
        assert_eq!(t.upstream_check_p99(), Some(Duration::from_millis(5)));
    }
}
