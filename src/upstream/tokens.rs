//! The session ↔ upstream-token mapping: what lets an application keep
//! calling APIs that still trust the old provider.
//!
//! A gateway session that went through the upstream keeps the upstream's
//! access, refresh and ID tokens in the session store under the session's
//! `sid`, sealed with AES-256-GCM: the `sid` is the associated data (a
//! record copied under another session does not open), the key id travels
//! in the record (keys rotate without dropping sessions), and the key lives
//! outside the store (RFC 6819 §5.1.4.1.4). No upstream token is ever
//! written to the store in plaintext.
//!
//! Refreshing the upstream tokens is single-flight across instances: a lock
//! in the session store lets one caller spend the upstream refresh token
//! while the others wait for its result, because a rotating upstream refresh
//! token spent twice would end the user's upstream session (RFC 9700
//! §4.14.2: reuse of a rotated refresh token revokes the family).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::UpstreamError;
use super::client::{Creds, UpstreamClient, UpstreamTokens};
use crate::crypto::{self, Sealer};
use crate::store::{Database, SessionStore, StoreError, now};

/// The upstream tokens of one gateway session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MappedTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
    /// Unix seconds.
    pub expires_at: i64,
    /// When the upstream issued them, Unix seconds.
    #[serde(default)]
    pub obtained_at: i64,
    /// The upstream client the tokens were issued to (Switchyard's own, or
    /// an application's for adopted refresh tokens).
    pub client_id: String,
}

impl MappedTokens {
    pub fn from_upstream(tokens: &UpstreamTokens, client_id: &str) -> Self {
        Self {
            access_token: tokens.access_token.clone(),
            refresh_token: tokens.refresh_token.clone(),
            id_token: tokens.id_token.clone(),
            expires_at: tokens.expires_at,
            obtained_at: now(),
            client_id: client_id.to_string(),
        }
    }

    /// Whether the access token is due for a refresh: within `margin` of
    /// its expiry, or within half its lifetime for tokens that live less
    /// than twice the margin (a token just issued is never refreshed again
    /// at once, however short-lived).
    pub fn needs_refresh(&self, margin: Duration) -> bool {
        let lifetime = (self.expires_at - self.obtained_at).max(0);
        let margin = (margin.as_secs() as i64).min(lifetime / 2);
        self.expires_at - now() < margin
    }
}

#[derive(Serialize, Deserialize)]
struct SealedRecord {
    kid: String,
    /// base64url of nonce || ciphertext || tag.
    ct: String,
}

/// The keys that seal mappings; the first seals, every one opens.
pub struct TokenSealer {
    keys: Vec<(String, Sealer)>,
}

impl TokenSealer {
    /// Reads the keys from the variable `var` (`kid=base64,kid=base64`).
    /// Without it, and only for the in-process store, a random key is made:
    /// the mappings live no longer than the process anyway.
    pub fn from_env(var: &str, ephemeral_allowed: bool) -> Result<Self, String> {
        match std::env::var(var) {
            Ok(spec) if !spec.trim().is_empty() => Self::parse(&spec),
            _ if ephemeral_allowed => {
                let sealer =
                    Sealer::new(&crypto::random_bytes(32)).ok_or("key generation failed")?;
                Ok(Self {
                    keys: vec![("ephemeral".into(), sealer)],
                })
            }
            _ => Err(format!(
                "{var} must be set to seal upstream tokens in a shared session store"
            )),
        }
    }

    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kid, key) = part
                .split_once('=')
                .ok_or_else(|| "upstream token keys: expected kid=base64key".to_string())?;
            let bytes = crypto::b64_decode(key)
                .or_else(|| crypto::b64url_decode(key))
                .ok_or_else(|| format!("upstream token keys: key {kid} is not base64"))?;
            let sealer = Sealer::new(&bytes)
                .ok_or_else(|| format!("upstream token keys: key {kid} must be 32 bytes"))?;
            keys.push((kid.to_string(), sealer));
        }
        if keys.is_empty() {
            return Err("the upstream token keys name no key".to_string());
        }
        Ok(Self { keys })
    }

    /// Seals `plain` under the first key, bound to `aad`: the key id and
    /// the base64url sealed bytes. Also seals the passwords the outbox
    /// queues for the upstream (`write_back`), which must open again only
    /// where they were sealed.
    pub fn seal_raw(&self, plain: &[u8], aad: &[u8]) -> (String, String) {
        let (kid, sealer) = &self.keys[0];
        (kid.clone(), crypto::b64url(&sealer.seal(plain, aad)))
    }

    /// Opens what [`TokenSealer::seal_raw`] sealed, if the key `kid` is
    /// still held and `aad` is the same.
    pub fn open_raw(&self, kid: &str, sealed: &str, aad: &[u8]) -> Option<Vec<u8>> {
        let (_, sealer) = self.keys.iter().find(|(k, _)| k == kid)?;
        sealer.open(&crypto::b64url_decode(sealed)?, aad).ok()
    }

    fn seal(&self, sid: &str, tokens: &MappedTokens) -> Result<Vec<u8>, StoreError> {
        let (kid, sealer) = &self.keys[0];
        let plain = serde_json::to_vec(tokens).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let record = SealedRecord {
            kid: kid.clone(),
            ct: crypto::b64url(&sealer.seal(&plain, sid.as_bytes())),
        };
        serde_json::to_vec(&record).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    fn open(&self, sid: &str, bytes: &[u8]) -> Option<MappedTokens> {
        let record: SealedRecord = serde_json::from_slice(bytes).ok()?;
        let (_, sealer) = self.keys.iter().find(|(kid, _)| *kid == record.kid)?;
        let plain = sealer
            .open(&crypto::b64url_decode(&record.ct)?, sid.as_bytes())
            .ok()?;
        serde_json::from_slice(&plain).ok()
    }
}

fn mapping_key(sid: &str) -> String {
    format!("upstream-tokens:{sid}")
}

fn lock_key(sid: &str) -> String {
    format!("upstream-refresh-lock:{sid}")
}

/// Why fresh upstream tokens could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FreshError {
    /// The upstream refused the refresh token: its session is over.
    #[error("the upstream session has ended")]
    Ended,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The mappings, durable in the database (sealed: the key is not there)
/// and cached in the session store, so a session store restarted empty
/// does not end the upstream sessions the refresh families need.
pub struct Mapping<'a> {
    pub store: &'a dyn SessionStore,
    pub db: &'a dyn Database,
    pub sealer: &'a TokenSealer,
}

impl Mapping<'_> {
    pub async fn save(
        &self,
        sid: &str,
        tokens: &MappedTokens,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let sealed = self.sealer.seal(sid, tokens)?;
        let text = String::from_utf8(sealed).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.db
            .save_upstream_tokens(sid, &text, now() + ttl.as_secs() as i64)
            .await?;
        self.store
            .put(&mapping_key(sid), text.as_bytes(), ttl)
            .await
    }

    /// The mapping, or `None` when absent or sealed with a retired key:
    /// from the session store, else from the database (refilling the
    /// session store).
    pub async fn load(&self, sid: &str) -> Result<Option<MappedTokens>, StoreError> {
        if let Some(bytes) = self.store.get(&mapping_key(sid)).await? {
            return Ok(self.sealer.open(sid, &bytes));
        }
        let Some(sealed) = self.db.upstream_tokens(sid, now()).await? else {
            return Ok(None);
        };
        let tokens = self.sealer.open(sid, sealed.as_bytes());
        // A refill never overwrites what a concurrent refresh just saved.
        let ttl = Duration::from_secs(CACHE_TTL_SECS);
        self.store
            .put_if_absent(&mapping_key(sid), sealed.as_bytes(), ttl)
            .await?;
        Ok(tokens)
    }

    pub async fn delete(&self, sid: &str) -> Result<(), StoreError> {
        self.db.delete_upstream_tokens(sid).await?;
        self.store.delete(&mapping_key(sid)).await?;
        Ok(())
    }

    /// The session's upstream tokens, refreshed at the upstream first when
    /// the access token expires within `margin`. Of concurrent callers for
    /// one session, one refreshes and the others wait for its result.
    pub async fn fresh(
        &self,
        client: &UpstreamClient,
        sid: &str,
        creds: &Creds,
        margin: Duration,
        ttl: Duration,
    ) -> Result<MappedTokens, FreshError> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(client.settings.timeout_secs + 5);
        let lock_ttl = Duration::from_secs(client.settings.timeout_secs + 5);
        let mut seen: Option<String> = None;
        loop {
            let current = self.load(sid).await?.ok_or(FreshError::Ended)?;
            // Fresh enough, or refreshed by the caller we waited for.
            let refreshed_meanwhile = seen.as_deref().is_some_and(|t| t != current.access_token);
            if refreshed_meanwhile || !current.needs_refresh(margin) {
                return Ok(current);
            }
            seen.get_or_insert_with(|| current.access_token.clone());
            if self
                .store
                .put_if_absent(&lock_key(sid), b"1", lock_ttl)
                .await?
            {
                let seen = seen.as_deref().unwrap_or(&current.access_token);
                let result = self.refresh_locked(client, sid, creds, seen, ttl).await;
                self.store.delete(&lock_key(sid)).await?;
                return result;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(FreshError::Upstream(UpstreamError::Unavailable(
                    "waiting for a concurrent refresh timed out".into(),
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn refresh_locked(
        &self,
        client: &UpstreamClient,
        sid: &str,
        creds: &Creds,
        seen: &str,
        ttl: Duration,
    ) -> Result<MappedTokens, FreshError> {
        // Another caller may have refreshed between our read and the lock.
        let current = self.load(sid).await?.ok_or(FreshError::Ended)?;
        if current.access_token != seen {
            return Ok(current);
        }
        let Some(refresh_token) = &current.refresh_token else {
            return Err(FreshError::Ended);
        };
        match client.refresh(refresh_token, creds).await {
            Ok(tokens) => {
                // OIDC Core §12.2: a refreshed ID token's `sub` is the
                // original one's. Another user's tokens must not continue
                // this session: it ends, and they are not kept.
                let original = current.id_token.as_deref().and_then(subject_of);
                let refreshed = tokens
                    .claims
                    .as_ref()
                    .and_then(|c| c.get("sub"))
                    .and_then(serde_json::Value::as_str);
                if let (Some(original), Some(refreshed)) = (original.as_deref(), refreshed)
                    && original != refreshed
                {
                    tracing::warn!("the upstream refreshed a session into another subject");
                    self.delete(sid).await?;
                    return Err(FreshError::Ended);
                }
                let mut next = MappedTokens::from_upstream(&tokens, &current.client_id);
                if next.id_token.is_none() {
                    next.id_token = current.id_token.clone();
                }
                self.save(sid, &next, ttl).await?;
                Ok(next)
            }
            Err(UpstreamError::Rejected { error, .. }) if error == "invalid_grant" => {
                self.delete(sid).await?;
                Err(FreshError::Ended)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// How long a mapping read back from the database stays cached; a save
/// caches it for the session's whole life.
const CACHE_TTL_SECS: u64 = 3600;

/// The `sub` of an ID token the upstream issued earlier, validated when it
/// was received: only its payload is read.
fn subject_of(id_token: &str) -> Option<String> {
    let payload = id_token.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&crypto::b64url_decode(payload)?).ok()?;
    claims.get("sub")?.as_str().map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> MappedTokens {
        MappedTokens {
            access_token: "upstream-access".into(),
            refresh_token: Some("upstream-refresh".into()),
            id_token: None,
            expires_at: 0,
            obtained_at: 0,
            client_id: "c".into(),
        }
    }

    #[test]
    fn a_sealed_mapping_opens_only_under_its_own_session_and_holds_no_plaintext() {
        let sealer = TokenSealer::parse(&format!("k1={}", crypto::b64url(&[1u8; 32]))).unwrap();
        let sealed = sealer.seal("sid-1", &tokens()).unwrap();
        let text = String::from_utf8_lossy(&sealed);
        assert!(!text.contains("upstream-access") && !text.contains("upstream-refresh"));
        assert_eq!(
            sealer.open("sid-1", &sealed).unwrap().access_token,
            "upstream-access"
        );
        assert!(sealer.open("sid-2", &sealed).is_none());
    }

    #[test]
    fn keys_rotate_without_dropping_sealed_mappings() {
        let old = TokenSealer::parse(&format!("k1={}", crypto::b64url(&[1u8; 32]))).unwrap();
        let sealed = old.seal("sid", &tokens()).unwrap();
        let rotated = TokenSealer::parse(&format!(
            "k2={},k1={}",
            crypto::b64url(&[2u8; 32]),
            crypto::b64url(&[1u8; 32])
        ))
        .unwrap();
        assert!(rotated.open("sid", &sealed).is_some());
        assert!(
            String::from_utf8_lossy(&rotated.seal("sid", &tokens()).unwrap()).contains("\"k2\"")
        );
    }
}
