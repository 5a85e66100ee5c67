//! [`AppState`]: the one place dependencies are wired.

use std::sync::Arc;

use anyhow::Context;

use crate::config::Settings;
use crate::crypto::Sealer;
use crate::crypto::hash_secret;
use crate::cutover::Cutover;
use crate::email::Mailer;
use crate::metrics::Metrics;
use crate::password::Passwords;
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;
use crate::store::sql::SqlStore;
use crate::store::{ClientSource, Database, SessionStore};
use crate::throttle::Throttle;
use crate::tokens::keys::{Alg, KeyRing};
use crate::upstream::Upstream;

/// At most one signing-key reload per this long for tokens naming an
/// unknown `kid`: forged `kid`s must not make every request read the keys
/// table. A rotation is picked up sooner anyway, since the key that becomes
/// active is published (and loaded) as the next key first.
pub const UNKNOWN_KID_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Shared by every request; cheap to clone.
pub type AppState = Arc<State>;

pub struct State {
    pub settings: Settings,
    /// Users, clients, keys, audit events.
    pub db: Arc<dyn Database>,
    /// Pending requests, codes, sessions, refresh families, counters.
    pub sessions: Arc<dyn SessionStore>,
    /// Clients and users as recently read: what the token endpoint reads
    /// on every request, without a database read each time.
    pub recent: crate::store::recent::Recents,
    pub keys: KeyRing,
    /// Refresh-token rotations, committed together when they coincide.
    pub rotations: crate::store::refresh::Rotations,
    /// Where RS256 signatures run, off the request threads.
    pub signing: crate::tokens::pool::SigningPool,
    pub passwords: Passwords,
    pub throttle: Throttle,
    /// The algorithm ID and access tokens are signed with.
    pub signing_alg: Alg,
    /// Verified against when a client id is unknown, so the miss costs the
    /// same as a wrong secret.
    pub dummy_secret_hash: String,
    /// The provider being migrated from, when one is configured.
    pub upstream: Option<Arc<Upstream>>,
    /// The cutover rules in force.
    pub cutover: Cutover,
    pub metrics: Metrics,
    /// `trusted_proxies`, parsed once.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Sends the email the outbox owes users (`[email]`).
    pub mailer: Mailer,
    /// Local changes mirrored to the upstream (`write_back`): its sealing
    /// key, and the Management API client of its blocking writes.
    pub write_back: crate::upstream::management::write_back::Writer,
    /// Paces the signing-key reloads an unknown `kid` in a presented token
    /// asks for.
    pub unknown_kid_reloads: crate::throttle::Pacer,
}

/// Opens the SQL store named by the settings.
pub async fn open_database(settings: &Settings) -> anyhow::Result<Arc<dyn Database>> {
    let db = SqlStore::connect(&settings.database_url)
        .await
        .with_context(|| {
            format!(
                "opening the database ({})",
                redact_url(&settings.database_url)
            )
        })?;
    Ok(Arc::new(db))
}

/// Opens the session store: Redis when `redis_url` is set, else in-process.
pub async fn open_session_store(settings: &Settings) -> anyhow::Result<Arc<dyn SessionStore>> {
    Ok(match &settings.redis_url {
        Some(url) => Arc::new(
            RedisStore::connect_with_timeout(
                url,
                &settings.session_prefix,
                std::time::Duration::from_millis(settings.redis_timeout_ms),
            )
            .await
            .with_context(|| format!("connecting to Redis ({})", redact_url(url)))?,
        ),
        None => Arc::new(MemoryStore::new()),
    })
}

/// The key-encryption key from `SWITCHYARD_KEY_ENCRYPTION_KEY` (32 bytes,
/// base64), when set.
pub fn key_sealer() -> anyhow::Result<Option<Sealer>> {
    match std::env::var("SWITCHYARD_KEY_ENCRYPTION_KEY") {
        Ok(v) if !v.trim().is_empty() => {
            let bytes = crate::crypto::b64_decode(&v)
                .or_else(|| crate::crypto::b64url_decode(v.trim()))
                .context("SWITCHYARD_KEY_ENCRYPTION_KEY is not base64")?;
            let sealer = Sealer::new(&bytes)
                .context("SWITCHYARD_KEY_ENCRYPTION_KEY must decode to exactly 32 bytes")?;
            Ok(Some(sealer))
        }
        _ => Ok(None),
    }
}

/// The algorithms keys are kept for: the configured one, and RS256 always
/// (OIDC Discovery §3 requires it to be offered).
pub fn key_algorithms(settings: &Settings) -> anyhow::Result<(Alg, Vec<Alg>)> {
    let alg = settings.tokens.signing_alg;
    let mut algs = vec![Alg::RS256];
    if alg != Alg::RS256 {
        algs.push(alg);
    }
    Ok((alg, algs))
}

impl State {
    /// Wires every dependency for serving.
    pub async fn build(settings: Settings) -> anyhow::Result<AppState> {
        let problems = settings.check(&crate::upstream::provider::facts);
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            anyhow::bail!("the configuration has problems:\n  {}", list.join("\n  "));
        }
        let db = open_database(&settings).await?;
        let sessions = open_session_store(&settings).await?;
        let (signing_alg, algs) = key_algorithms(&settings)?;
        let keys = KeyRing::load(db.clone(), key_sealer()?, algs)
            .await
            .context("loading signing keys")?;
        sync_config_clients(&*db, &settings).await?;
        sync_builtin_clients(&*db, &settings).await?;
        sync_operators(&*db, &settings.admin.operators).await?;
        let passwords = Passwords::new(&settings.password)?;
        let throttle = Throttle::new(sessions.clone(), settings.throttle.clone());
        let upstream = Upstream::new(&settings)
            .map_err(anyhow::Error::msg)?
            .map(Arc::new);
        let mailer = Mailer::new(&settings.email)?;
        let trusted_proxies = settings
            .trusted_proxies
            .iter()
            .map(|p| {
                crate::config::parse_network(p).with_context(|| {
                    format!("trusted_proxies: {p:?} is not a network or an address")
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let metrics = Metrics::default();
        let write_back = crate::upstream::management::write_back::Writer::from_settings(
            &settings,
            Some(metrics.writeback.clone()),
        )?;
        Ok(Arc::new(State {
            mailer,
            cutover: Cutover::new(db.clone(), settings.cutover.clone()),
            upstream,
            metrics,
            trusted_proxies,
            write_back,
            recent: Default::default(),
            rotations: crate::store::refresh::Rotations::start(db.clone()),
            signing: crate::tokens::pool::SigningPool::per_core(),
            dummy_secret_hash: hash_secret("switchyard dummy client secret"),
            settings,
            db,
            sessions,
            keys,
            passwords,
            throttle,
            signing_alg,
            unknown_kid_reloads: crate::throttle::Pacer::new(UNKNOWN_KID_RELOAD_INTERVAL),
        }))
    }
}

/// Makes the clients table agree with the `[[clients]]` of the file: each is
/// inserted or updated, and file clients no longer in the file are removed.
/// Clients added with the CLI are left alone.
async fn sync_config_clients(db: &dyn Database, settings: &Settings) -> anyhow::Result<()> {
    for c in &settings.clients {
        let secret_hash = match &c.client_secret_env {
            Some(var) => {
                let secret = std::env::var(var)
                    .with_context(|| format!("client {}: {var} is not set", c.client_id))?;
                Some(hash_secret(&secret))
            }
            None => None,
        };
        let client = c.to_client(secret_hash, ClientSource::Config);
        db.upsert_client(&client).await?;
    }
    for existing in db.list_clients().await? {
        if existing.source == ClientSource::Config
            && !settings
                .clients
                .iter()
                .any(|c| c.client_id == existing.client_id)
        {
            db.delete_client(&existing.client_id).await?;
        }
    }
    Ok(())
}

/// Writes Switchyard's own first-party clients (the dashboard's sign-in)
/// as this start's issuer makes them: their redirect URI follows the
/// issuer, and an edit to them in the database does not survive a restart.
async fn sync_builtin_clients(db: &dyn Database, settings: &Settings) -> anyhow::Result<()> {
    db.upsert_client(&crate::config::admin_client(settings))
        .await?;
    Ok(())
}

/// Gives the admin role to the users `[admin] operators` names (by email
/// or username). A name with no user yet is a warning, not a failure: the
/// file may name an operator before their first login creates them, and
/// the next start grants it. Operators granted with the CLI and not in the
/// list keep the role: the list adds, it does not take away.
async fn sync_operators(db: &dyn Database, operators: &[String]) -> anyhow::Result<()> {
    for name in operators {
        match db.find_user_by_login(name).await? {
            Some(user) => {
                grant_admin(db, &user.id, "config").await?;
            }
            None => tracing::warn!(
                operator = %name,
                "[admin] operators names no existing user; granted once they exist"
            ),
        }
    }
    Ok(())
}

/// Gives `user_id` the admin role and, when it is new, records
/// `admin.operator.grant` by `actor` (`cli`, `config`). True when it is new.
pub async fn grant_admin(db: &dyn Database, user_id: &str, actor: &str) -> anyhow::Result<bool> {
    if db.is_operator(user_id).await? {
        return Ok(false);
    }
    if !db.grant_operator(user_id, crate::store::now()).await? {
        anyhow::bail!("no user {user_id}");
    }
    let event = crate::store::AuditEvent::new("admin.operator.grant", Some(user_id), None)
        .with_actor(actor)
        .with_detail(serde_json::json!({
            "target": user_id, "before": {"operator": false}, "after": {"operator": true},
        }));
    db.record_event(&event).await?;
    Ok(true)
}

/// Takes the admin role from `user_id`, recording `admin.operator.revoke`
/// by `actor`. False when they did not have it.
pub async fn revoke_admin(db: &dyn Database, user_id: &str, actor: &str) -> anyhow::Result<bool> {
    if !db.revoke_operator(user_id).await? {
        return Ok(false);
    }
    let event = crate::store::AuditEvent::new("admin.operator.revoke", Some(user_id), None)
        .with_actor(actor)
        .with_detail(serde_json::json!({
            "target": user_id, "before": {"operator": true}, "after": {"operator": false},
        }));
    db.record_event(&event).await?;
    Ok(true)
}

/// Drops the userinfo (user and password) from a connection URL before it
/// is shown anywhere: Redis URLs carry an ACL password as the user
/// (`redis://:secret@…`), and a user name is more than a message needs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_password(None);
            let _ = u.set_username("***");
            u.to_string()
        }
        Ok(u) => u.to_string(),
        // Unparsable, so its userinfo cannot be found: show nothing of it.
        Err(_) => "(not a URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn urls_are_shown_without_their_userinfo() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db.internal:5432/switchyard"),
            "postgres://***@db.internal:5432/switchyard"
        );
        assert_eq!(
            redact_url("redis://:hunter2@cache:6379"),
            "redis://***@cache:6379"
        );
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
        assert!(!redact_url("postgres://a:hunter2@[bad").contains("hunter2"));
    }
}
