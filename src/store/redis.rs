//! The Redis session store, shared by every gateway instance.
//!
//! One multiplexed connection (`ConnectionManager`, which reconnects by
//! itself) carries every command; each operation is a single atomic Redis
//! command or script, so no cross-instance race needs a lock.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, ExistenceCheck, Script, SetExpiry, SetOptions};

use super::{Counter, SessionStore, StoreError, StoreResult};

#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    incr_script: Script,
    decr_script: Script,
}

/// INCR, and start the window on the first increment; returns the count and
/// the window's remaining milliseconds. A script keeps the two atomic, so a
/// crash between them cannot leave a counter that never expires.
const INCR_SCRIPT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}
";

/// DECR a counter that still exists and is above zero; its window (TTL)
/// stays. An expired counter is not brought back as -1 without a TTL.
const DECR_SCRIPT: &str = r"
local v = tonumber(redis.call('GET', KEYS[1]))
if v and v > 0 then return redis.call('DECR', KEYS[1]) end
return 0
";

/// `redis_timeout_ms`'s default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

impl RedisStore {
    pub async fn connect(url: &str, prefix: &str) -> StoreResult<Self> {
        Self::connect_with_timeout(url, prefix, DEFAULT_TIMEOUT).await
    }

    /// Every command fails after `timeout` rather than wait for a stalled
    /// server: a request then answers 503 at once instead of holding a
    /// worker (and the client) for the length of the stall.
    pub async fn connect_with_timeout(
        url: &str,
        prefix: &str,
        timeout: Duration,
    ) -> StoreResult<Self> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Unavailable(redact(&e)))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| StoreError::Unavailable(redact(&e)))?;
        Ok(Self {
            conn,
            prefix: prefix.to_string(),
            incr_script: Script::new(INCR_SCRIPT),
            decr_script: Script::new(DECR_SCRIPT),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }
}

/// Redis errors can echo the connection URL, password included; keep only
/// the kind, the server's own message, and for an I/O error its cause
/// (`Connection refused`), which names no URL.
fn redact(e: &redis::RedisError) -> String {
    // The source of an I/O error is the `std::io::Error` (behind an `Arc`,
    // so it cannot be downcast); other sources are left out.
    let cause = e.detail().map(str::to_string).or_else(|| {
        e.is_io_error()
            .then(|| std::error::Error::source(e).map(ToString::to_string))
            .flatten()
    });
    match cause {
        Some(cause) if !cause.is_empty() => format!("{:?}: {cause}", e.kind()),
        _ => format!("{:?}", e.kind()),
    }
}

fn map_err(e: redis::RedisError) -> StoreError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::Unavailable(redact(&e))
    } else {
        StoreError::Backend(redact(&e))
    }
}

fn millis(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> StoreResult<()> {
        let opts = SetOptions::default().with_expiration(SetExpiry::PX(millis(ttl)));
        let _: () = self
            .conn
            .clone()
            .set_options(self.key(key), value, opts)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> StoreResult<bool> {
        let opts = SetOptions::default()
            .conditional_set(ExistenceCheck::NX)
            .with_expiration(SetExpiry::PX(millis(ttl)));
        let written: Option<String> = self
            .conn
            .clone()
            .set_options(self.key(key), value, opts)
            .await
            .map_err(map_err)?;
        Ok(written.is_some())
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.conn.clone().get(self.key(key)).await.map_err(map_err)
    }

    async fn take(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.conn
            .clone()
            .get_del(self.key(key))
            .await
            .map_err(map_err)
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        let n: u64 = self
            .conn
            .clone()
            .del(self.key(key))
            .await
            .map_err(map_err)?;
        Ok(n > 0)
    }

    async fn incr(&self, key: &str, window: Duration) -> StoreResult<Counter> {
        let (count, pttl): (u64, i64) = self
            .incr_script
            .key(self.key(key))
            .arg(millis(window))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        Ok(Counter {
            count,
            resets_in: Duration::from_millis(pttl.max(0) as u64),
        })
    }

    async fn decr(&self, key: &str) -> StoreResult<()> {
        let _: i64 = self
            .decr_script
            .key(self.key(key))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
