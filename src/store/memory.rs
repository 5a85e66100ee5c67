//! The in-process session store: the embedded default.
//!
//! A `std::sync::Mutex` rather than tokio's: no lock is held across an
//! `.await`, and every critical section is a map lookup, so a blocking mutex
//! is both correct and cheaper (the reasoning of mini-redis's `db.rs`).
//! Expiry uses `tokio::time::Instant`, so tests can pause and advance time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Counter, SessionStore, StoreResult};

struct Entry {
    value: Vec<u8>,
    expires_at: Instant,
}

#[derive(Default)]
pub struct MemoryStore {
    /// Every record, keyed by its full name; guards the records and the
    /// write counter that schedules sweeps.
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    writes_since_sweep: usize,
}

/// Expired records are dropped lazily on access, and all of them every this
/// many writes, so memory stays bounded without a background task.
const SWEEP_EVERY: usize = 4096;

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written entry
        // (every update is a single map operation), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self.entries.get(key).is_some_and(|e| e.expires_at <= now) {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }

    fn insert(&mut self, key: &str, value: &[u8], ttl: Duration, now: Instant) {
        self.writes_since_sweep += 1;
        if self.writes_since_sweep >= SWEEP_EVERY {
            self.writes_since_sweep = 0;
            self.entries.retain(|_, e| e.expires_at > now);
        }
        self.entries.insert(
            key.to_string(),
            Entry {
                value: value.to_vec(),
                expires_at: now + ttl,
            },
        );
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> StoreResult<()> {
        self.lock().insert(key, value, ttl, Instant::now());
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> StoreResult<bool> {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.live(key, now).is_some() {
            return Ok(false);
        }
        inner.insert(key, value, ttl, now);
        Ok(true)
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .lock()
            .live(key, Instant::now())
            .map(|e| e.value.clone()))
    }

    async fn take(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.live(key, now);
        Ok(inner.entries.remove(key).map(|e| e.value))
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        let now = Instant::now();
        let mut inner = self.lock();
        Ok(inner.live(key, now).is_some() && inner.entries.remove(key).is_some())
    }

    async fn incr(&self, key: &str, window: Duration) -> StoreResult<Counter> {
        let now = Instant::now();
        let mut inner = self.lock();
        if let Some(entry) = inner.live(key, now) {
            let count = parse_count(&entry.value) + 1;
            entry.value = count.to_string().into_bytes();
            return Ok(Counter {
                count,
                resets_in: entry.expires_at.saturating_duration_since(now),
            });
        }
        inner.insert(key, b"1", window, now);
        Ok(Counter {
            count: 1,
            resets_in: window,
        })
    }

    async fn decr(&self, key: &str) -> StoreResult<()> {
        let now = Instant::now();
        let mut inner = self.lock();
        if let Some(entry) = inner.live(key, now) {
            let count = parse_count(&entry.value).saturating_sub(1);
            entry.value = count.to_string().into_bytes();
        }
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

fn parse_count(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
