//! The SQL store: one implementation for SQLite and PostgreSQL.
//!
//! Queries go through sqlx's `Any` driver with `$n` placeholders, which both
//! databases accept, and portable column types (TEXT, 64-bit integers), so
//! the two backends cannot drift apart: the same code and the same test
//! suite serve both. Only the DDL differs (`migrations/sqlite`,
//! `migrations/postgres`), in the types each database spells differently.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

use super::outbox_queue::{OutboxKind, enqueue};
pub use super::sql_common::Dialect;
use super::sql_common::{profile_from_row, to_json};
use super::transition::Transition;
use super::*;

#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
    url: std::sync::Arc<str>,
    /// PostgreSQL only, opened on first use by a job: a native pool for
    /// what the `Any` driver cannot do (COPY, [`super::pg_copy`]).
    native: std::sync::Arc<tokio::sync::OnceCell<sqlx::PgPool>>,
}

pub(crate) const USER_COLUMNS: &str = "id, email, email_verified, username, name, given_name, family_name, nickname, picture, \
    phone_number, user_metadata, app_metadata, state, blocked, upstream, profile, pin, route, migrated_at, created_at, updated_at, \
    last_login_at, sessions_valid_after, logins_count";

/// The user a login identifier names, from `users u`: its email
/// (normalised, bound as `$1`) before a username (`$2`), since an email
/// address may also have been taken as someone's username.
pub(crate) const BY_LOGIN: &str = "u.email_normalized = $1 OR u.username = $2 \
    ORDER BY CASE WHEN u.email_normalized = $1 THEN 0 ELSE 1 END LIMIT 1";

/// A successful login of user `$1` at `$2`.
pub(crate) const RECORD_LOGIN: &str =
    "UPDATE users SET last_login_at = $2, logins_count = logins_count + 1 WHERE id = $1";

const CLIENT_COLUMNS: &str = "client_id, name, secret_hash, public, redirect_uris, post_logout_redirect_uris, grant_types, token_mode, source, created_at, web_origins, scopes";

impl SqlStore {
    /// Connects and applies the embedded migrations.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let (url, dialect) = if url.starts_with("sqlite:") {
            (sqlite_url(url), Dialect::Sqlite)
        } else {
            (url.to_string(), Dialect::Postgres)
        };
        let options = AnyPoolOptions::new()
            .max_connections(if dialect == Dialect::Sqlite { 4 } else { 16 })
            .acquire_timeout(Duration::from_secs(5))
            // sqlx pings a connection before lending it out (and again when
            // it comes back). A SQLite connection is a file handle on a
            // thread of this process, which no server can drop, so the
            // ping before use is one more round trip to that thread per
            // statement for nothing; the ping on return still catches a
            // connection left mid-statement. A PostgreSQL connection can be
            // dropped by the server, so there it is still tested.
            .test_before_acquire(dialect != Dialect::Sqlite)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // WAL lets readers run beside the one writer, and
                        // with synchronous = NORMAL a commit no longer waits
                        // for an fsync (1.4 ms → 0.03 ms p50 in the
                        // upstream_proxy bench): in WAL mode the database
                        // cannot be corrupted that way; only the last commits
                        // before a power loss (not a process crash) can be
                        // lost (sqlite.org/pragma.html#pragma_synchronous).
                        // busy_timeout makes a second writer wait rather than
                        // fail; SQLite enforces foreign keys only when asked.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; \
                             PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            });
        // One connection first: when the database cannot be reached the pool
        // would retry until its acquire timeout and report only that it
        // timed out; a single attempt fails at once with the cause
        // (connection refused, unknown host, authentication failed).
        probe_url(&url).await?;
        let pool = options.connect(&url).await.map_err(unavailable)?;
        let store = Self {
            pool,
            dialect,
            url: url.into(),
            native: Default::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A write transaction. On SQLite it takes the one write lock at once
    /// (`BEGIN IMMEDIATE`), where a second writer waits out `busy_timeout`:
    /// a deferred transaction that reads first fails instead, with
    /// SQLITE_BUSY_SNAPSHOT, when another connection commits between its
    /// read and its first write (SQLite, "Write-Ahead Logging" §2.2 and
    /// "BEGIN TRANSACTION"). The outbox worker writes beside every request,
    /// so that interleaving is ordinary, not rare.
    pub async fn begin(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.pool.begin().await?,
        })
    }

    /// The native PostgreSQL pool, connected on first use. Jobs are its
    /// only users, with at most [`super::jobs::JobStore::parallel_pages`] pages in
    /// flight a process, so it stays small.
    pub(crate) async fn native_pg(&self) -> StoreResult<&sqlx::PgPool> {
        self.native
            .get_or_try_init(|| async {
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(&self.url)
                    .await
                    .map_err(unavailable)
            })
            .await
    }

    async fn migrate(&self) -> StoreResult<()> {
        let (migrator, reworded) = match self.dialect {
            Dialect::Sqlite => (
                sqlx::migrate!("src/store/migrations/sqlite"),
                REWORDED_SQLITE,
            ),
            Dialect::Postgres => (
                sqlx::migrate!("src/store/migrations/postgres"),
                REWORDED_POSTGRES,
            ),
        };
        let failed =
            |e: sqlx::migrate::MigrateError| StoreError::Backend(format!("migration failed: {e}"));
        // Each accepted rewording fixes one recorded checksum, so this ends.
        loop {
            match migrator.run(&self.pool).await {
                Err(sqlx::migrate::MigrateError::VersionMismatch(version))
                    if self.accept_reworded(&migrator, version, reworded).await? =>
                {
                    continue;
                }
                result => return result.map_err(failed),
            }
        }
    }

    /// sqlx refuses to start when an applied migration's file no longer
    /// has the checksum (SHA-384) recorded when it ran. A migration whose
    /// comments alone were reworded is the same migration: where the
    /// recorded checksum of `version` is exactly the old wording's, it is
    /// replaced by the new one, and true is returned. Any other difference
    /// still stops the start. Only a start that sqlx refused pays for this.
    async fn accept_reworded(
        &self,
        migrator: &sqlx::migrate::Migrator,
        version: i64,
        reworded: &[(i64, &str)],
    ) -> StoreResult<bool> {
        let old = reworded.iter().find(|(v, _)| *v == version);
        let current = migrator.iter().find(|m| m.version == version);
        let (Some((_, old)), Some(current)) = (old, current) else {
            return Ok(false);
        };
        let old: Vec<u8> = (0..old.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&old[i..i + 2], 16).ok())
            .collect();
        let done = sqlx::query(
            "UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2 AND checksum = $3",
        )
        .bind(current.checksum.to_vec())
        .bind(version)
        .bind(old)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}

/// Migrations whose comments were reworded after release: version, and the
/// SHA-384 of the wording databases recorded when they applied it.
const REWORDED_SQLITE: &[(i64, &str)] = &[(
    4,
    "a74b41244351b6d0e1a837462081206c3105457508a562c0fbcdfb3a8caa13cce5fdd0917281b96eed676dfaf24570ec",
)];
const REWORDED_POSTGRES: &[(i64, &str)] = &[(
    4,
    "54514e8178bbab0c6248b1c81e07a31198122cb7ee6dfa9cc47867f01f24bd32a79ece704ca8ad65b66b9837d87fb318",
)];

/// `sqlite://switchyard.db` → create the file when missing.
fn sqlite_url(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// The longest a single connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens one connection to the database `url` names and closes it: whether
/// the database can be reached, and if not, why.
pub async fn probe(url: &str) -> StoreResult<()> {
    sqlx::any::install_default_drivers();
    if url.starts_with("sqlite:") {
        probe_url(&sqlite_url(url)).await
    } else {
        probe_url(url).await
    }
}

async fn probe_url(url: &str) -> StoreResult<()> {
    use sqlx::Connection as _;
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, sqlx::AnyConnection::connect(url))
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!(
                "no connection within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(unavailable)?;
    let _ = conn.close().await;
    Ok(())
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn json_col(row: &AnyRow, col: &str) -> StoreResult<serde_json::Value> {
    let s: String = row.try_get(col)?;
    serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

fn list_col<T: DeserializeOwned>(row: &AnyRow, col: &str) -> StoreResult<Vec<T>> {
    let s: String = row.try_get(col)?;
    serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

pub(crate) fn user_from_row(row: &AnyRow) -> StoreResult<User> {
    let state: String = row.try_get("state")?;
    Ok(User {
        id: row.try_get("id")?,
        profile: profile_from_row(row)?,
        user_metadata: json_col(row, "user_metadata")?,
        app_metadata: json_col(row, "app_metadata")?,
        state: UserState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("user state {state:?}")))?,
        blocked: row.try_get::<i64, _>("blocked")? != 0,
        upstream: row.try_get("upstream")?,
        claims: json_col(row, "profile")?,
        pin: row.try_get("pin")?,
        route: row.try_get("route")?,
        migrated_at: row.try_get("migrated_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        last_login_at: row.try_get("last_login_at")?,
        sessions_valid_after: row.try_get("sessions_valid_after")?,
        logins_count: row.try_get("logins_count")?,
    })
}

fn client_from_row(row: &AnyRow) -> StoreResult<Client> {
    let token_mode: String = row.try_get("token_mode")?;
    let source: String = row.try_get("source")?;
    Ok(Client {
        client_id: row.try_get("client_id")?,
        name: row.try_get("name")?,
        secret_hash: row.try_get("secret_hash")?,
        public: row.try_get::<i64, _>("public")? != 0,
        redirect_uris: list_col(row, "redirect_uris")?,
        post_logout_redirect_uris: list_col(row, "post_logout_redirect_uris")?,
        grant_types: list_col(row, "grant_types")?,
        token_mode: TokenMode::parse(&token_mode)
            .ok_or_else(|| StoreError::Corrupt(format!("client token_mode {token_mode:?}")))?,
        source: ClientSource::parse(&source)
            .ok_or_else(|| StoreError::Corrupt(format!("client source {source:?}")))?,
        created_at: row.try_get("created_at")?,
        web_origins: list_col(row, "web_origins")?,
        scopes: list_col(row, "scopes")?,
    })
}

fn key_from_row(row: &AnyRow) -> StoreResult<SigningKeyRecord> {
    let state: String = row.try_get("state")?;
    Ok(SigningKeyRecord {
        kid: row.try_get("kid")?,
        alg: row.try_get("alg")?,
        private_key: row.try_get("private_key")?,
        state: KeyState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("key state {state:?}")))?,
        created_at: row.try_get("created_at")?,
        publish_until: row.try_get("publish_until")?,
    })
}

/// Emails compare case-insensitively for login; the stored `email` keeps the
/// user's spelling.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The prefix of every id minted here. Upstream ids never take it: an
/// upstream login presenting a `sub` under it is refused
/// ([`StoreError::NotLinked`]), so the two namespaces cannot meet however
/// the upstream names its users. (Ids already held keep working: upstream
/// users keep their upstream ids, and local ones always had this prefix.)
pub const LOCAL_ID_PREFIX: &str = "local|";

fn new_local_id() -> String {
    // 96 random bits as 24 lowercase hex digits, the shape Auth0 gives its
    // database users, so applications that parse ids see a familiar format.
    let bytes = crate::crypto::random_bytes(12);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{LOCAL_ID_PREFIX}{hex}")
}

/// Unix seconds as RFC 3339 UTC (`2026-11-26T17:30:56Z`), the form the
/// vendors' profile attributes take.
pub fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[async_trait]
impl UserStore for SqlStore {
    async fn create_user_with(
        &self,
        user: &NewUser,
        extras: &NewUserExtras,
        password: Option<(&str, &str)>,
    ) -> StoreResult<User> {
        let now = now();
        let id = user.id.clone().unwrap_or_else(new_local_id);
        let p = &user.profile;
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO users (id, email, email_normalized, email_verified, username, name, given_name, family_name, \
             nickname, picture, phone_number, state, created_at, updated_at, local_updated_at, \
             user_metadata, app_metadata, blocked) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $13, $14, $15, $16)",
        )
        .bind(&id)
        .bind(&p.email)
        .bind(p.email.as_deref().map(normalize_email))
        .bind(p.email_verified as i64)
        .bind(&p.username)
        .bind(&p.name)
        .bind(&p.given_name)
        .bind(&p.family_name)
        .bind(&p.nickname)
        .bind(&p.picture)
        .bind(&p.phone_number)
        .bind(UserState::next(None, Transition::Created).as_str())
        .bind(now)
        .bind(to_json(&extras.user_metadata))
        .bind(to_json(&extras.app_metadata))
        .bind(extras.blocked as i64)
        .execute(&mut *tx)
        .await?;
        if let Some((hash, algorithm)) = password {
            sqlx::query(
                "INSERT INTO credentials (user_id, kind, hash, algorithm, created_at, updated_at) \
                 VALUES ($1, 'password', $2, $3, $4, $4)",
            )
            .bind(&id)
            .bind(hash)
            .bind(algorithm)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        let created = user_from_row(&row)?;
        tx.commit().await?;
        Ok(created)
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn find_user_by_login(&self, identifier: &str) -> StoreResult<Option<User>> {
        let identifier = identifier.trim();
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE {BY_LOGIN}"
        ))
        .bind(normalize_email(identifier))
        .bind(identifier)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn list_users(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<User>> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = delete_user_rows(&mut tx, id).await?;
        tx.commit().await?;
        Ok(done)
    }

    async fn get_password(&self, user_id: &str) -> StoreResult<Option<PasswordCredential>> {
        let row = sqlx::query("SELECT user_id, hash, algorithm, updated_at FROM credentials WHERE user_id = $1 AND kind = 'password'")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(PasswordCredential {
                user_id: r.try_get("user_id")?,
                hash: r.try_get("hash")?,
                algorithm: r.try_get("algorithm")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .transpose()
    }

    async fn set_password(&self, user_id: &str, hash: &str, algorithm: &str) -> StoreResult<bool> {
        let now = now();
        let mut tx = self.begin().await?;
        let exists =
            super::sql_common::upsert_credential(&mut tx, user_id, hash, algorithm, now).await?;
        tx.commit().await?;
        Ok(exists)
    }

    async fn upsert_upstream_user(&self, provider: &str, p: &UpstreamProfile) -> StoreResult<User> {
        self.upsert_upstream(provider, p, None, None).await
    }

    async fn record_upstream_login(
        &self,
        provider: &str,
        p: &UpstreamProfile,
        login: &AuditEvent,
    ) -> StoreResult<User> {
        self.upsert_upstream(provider, p, None, Some(login)).await
    }

    async fn migrate_upstream_user(
        &self,
        provider: &str,
        p: &UpstreamProfile,
        migration: &Migration,
    ) -> StoreResult<User> {
        self.upsert_upstream(provider, p, Some(migration), None)
            .await
    }

    async fn set_pin(&self, user_id: &str, pin: Option<&str>) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE users SET pin = $2, updated_at = $3 WHERE id = $1")
            .bind(user_id)
            .bind(pin)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_login(&self, user_id: &str, at: i64) -> StoreResult<()> {
        sqlx::query(RECORD_LOGIN)
            .bind(user_id)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl SqlStore {
    async fn upsert_upstream(
        &self,
        provider: &str,
        p: &UpstreamProfile,
        migration: Option<&Migration>,
        login: Option<&AuditEvent>,
    ) -> StoreResult<User> {
        let now = now();
        let raw = to_json(&p.raw);
        let email_normalized = p.profile.email.as_deref().map(normalize_email);
        let mut tx = self.begin().await?;
        let linked: Option<String> = sqlx::query_scalar(
            "SELECT user_id FROM identities WHERE provider = $1 AND subject = $2",
        )
        .bind(provider)
        .bind(&p.id)
        .fetch_optional(&mut *tx)
        .await?;
        if linked.is_none() && p.id.starts_with(LOCAL_ID_PREFIX) {
            return Err(StoreError::NotLinked);
        }
        let user_id = linked.clone().unwrap_or_else(|| p.id.clone());
        // The state is read and the next one written in this transaction;
        // on PostgreSQL the row stays locked until the commit (`FOR
        // UPDATE`), so a concurrent login or migration of the same user
        // waits instead of having its state replaced by one computed from
        // a stale read. SQLite runs one writer at a time.
        let lock = match self.dialect {
            Dialect::Postgres => " FOR UPDATE",
            Dialect::Sqlite => "",
        };
        let row = sqlx::query(&format!(
            "SELECT state, upstream, profile FROM users WHERE id = $1{lock}"
        ))
        .bind(&user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let existing = match &row {
            Some(row) => {
                let s: String = row.try_get("state")?;
                let state = UserState::parse(&s)
                    .ok_or_else(|| StoreError::Corrupt(format!("user state {s:?}")))?;
                let upstream: Option<String> = row.try_get("upstream")?;
                // A row with the upstream's `sub` as its id that is not
                // linked to this upstream (a user made here, or one another
                // upstream listed) is someone else: the namespaces met by
                // chance or by design, and adopting the row would hand its
                // credential and profile to the upstream's user.
                if linked.is_none() && upstream.as_deref() != Some(provider) {
                    return Err(StoreError::NotLinked);
                }
                Some((state, json_col(row, "profile")?))
            }
            None => None,
        };
        let (existing, stored_claims) = match existing {
            Some((state, claims)) => (Some(state), Some(claims)),
            None => (None, None),
        };
        // The claims the login carried, over those already stored (a
        // backfill's record, an earlier login's): a login that leaves a
        // claim out says nothing about it, so it must not erase it.
        let raw = match stored_claims {
            Some(serde_json::Value::Object(mut stored)) => {
                stored.extend(p.raw.iter().map(|(k, v)| (k.clone(), v.clone())));
                to_json(&stored)
            }
            _ => raw,
        };
        // An email another user already holds is kept on the record but not
        // made a login identifier: linking accounts by email would let
        // whoever controls one account take over the other. Nor is one the
        // upstream has not verified (OpenID Connect Core §5.1
        // `email_verified`): anyone can type any address at sign-up, and
        // the address would then be taken from its real owner.
        let email_taken: Option<String> = match &email_normalized {
            Some(e) => {
                sqlx::query_scalar("SELECT id FROM users WHERE email_normalized = $1 AND id <> $2")
                    .bind(e)
                    .bind(&user_id)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            None => None,
        };
        let login_email = if email_taken.is_some() || !p.profile.email_verified {
            None
        } else {
            email_normalized
        };
        let after_login = UserState::next(existing, Transition::UpstreamLogin);
        let shadow_write = match existing {
            None => Some((
                "INSERT INTO users (id, email, email_normalized, email_verified, username, name, given_name, family_name, \
                 nickname, picture, phone_number, profile, state, upstream, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $15, $13, $14, $14)",
                "shadow_user_created",
            )),
            Some(state) if state.upstream_owns_profile() => Some((
                // A merge: a login carries only what its tokens hold, and a
                // field it leaves out (a phone number or a second identity
                // only the directory lists) is not thereby removed.
                "UPDATE users SET email = COALESCE($2, email), \
                 email_normalized = CASE WHEN $2 IS NULL THEN email_normalized ELSE $3 END, \
                 email_verified = CASE WHEN $2 IS NULL THEN email_verified ELSE $4 END, \
                 username = COALESCE($5, username), name = COALESCE($6, name), \
                 given_name = COALESCE($7, given_name), family_name = COALESCE($8, family_name), \
                 nickname = COALESCE($9, nickname), picture = COALESCE($10, picture), \
                 phone_number = COALESCE($11, phone_number), profile = $12, state = $15, upstream = $13, \
                 updated_at = $14 WHERE id = $1",
                "shadow_user_updated",
            )),
            Some(_) => None,
        };
        let kind = match shadow_write {
            Some((sql, kind)) => {
                sqlx::query(sql)
                    .bind(&user_id)
                    .bind(&p.profile.email)
                    .bind(&login_email)
                    .bind(p.profile.email_verified as i64)
                    .bind(&p.profile.username)
                    .bind(&p.profile.name)
                    .bind(&p.profile.given_name)
                    .bind(&p.profile.family_name)
                    .bind(&p.profile.nickname)
                    .bind(&p.profile.picture)
                    .bind(&p.profile.phone_number)
                    .bind(&raw)
                    .bind(provider)
                    .bind(now)
                    .bind(after_login.as_str())
                    .execute(&mut *tx)
                    .await?;
                kind
            }
            None => {
                // Local and migrated users own their profile; the upstream
                // only fills what is missing, and its claims are refreshed.
                sqlx::query(
                    "UPDATE users SET name = COALESCE(name, $2), given_name = COALESCE(given_name, $3), \
                     family_name = COALESCE(family_name, $4), nickname = COALESCE(nickname, $5), \
                     picture = COALESCE(picture, $6), profile = $7, upstream = COALESCE(upstream, $8), updated_at = $9, \
                     state = $10 WHERE id = $1",
                )
                .bind(&user_id)
                .bind(&p.profile.name)
                .bind(&p.profile.given_name)
                .bind(&p.profile.family_name)
                .bind(&p.profile.nickname)
                .bind(&p.profile.picture)
                .bind(&raw)
                .bind(provider)
                .bind(now)
                .bind(after_login.as_str())
                .execute(&mut *tx)
                .await?;
                "upstream_login"
            }
        };
        sqlx::query(
            "INSERT INTO identities (provider, subject, user_id, profile, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (provider, subject) DO UPDATE SET profile = excluded.profile",
        )
        .bind(provider)
        .bind(&p.id)
        .bind(&user_id)
        .bind(&raw)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let kind = match migration {
            Some(m) => {
                sqlx::query(
                    "INSERT INTO credentials (user_id, kind, hash, algorithm, created_at, updated_at) \
                     VALUES ($1, 'password', $2, $3, $4, $4) \
                     ON CONFLICT (user_id, kind) DO UPDATE SET hash = excluded.hash, algorithm = excluded.algorithm, \
                     updated_at = excluded.updated_at",
                )
                .bind(&user_id)
                .bind(&m.hash)
                .bind(&m.algorithm)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let migrated = UserState::next(Some(after_login), Transition::PasswordCaptured);
                sqlx::query(
                    "UPDATE users SET state = $4, \
                     migrated_at = COALESCE(migrated_at, $2), route = COALESCE(route, $3), local_updated_at = $2 \
                     WHERE id = $1",
                )
                .bind(&user_id)
                .bind(now)
                .bind(&m.route)
                .bind(migrated.as_str())
                .execute(&mut *tx)
                .await?;
                // Only a user this login migrates is marked: one already
                // local or migrated was marked then, or never came from
                // the upstream.
                let migrated_now =
                    migrated == UserState::Migrated && existing != Some(UserState::Migrated);
                if m.mark_upstream && migrated_now {
                    let payload = serde_json::json!({
                        "upstream_id": p.id,
                        "username": p.profile.username,
                        "migrated_at": rfc3339(now),
                    });
                    enqueue(&mut tx, OutboxKind::MarkMigrated, &user_id, &payload, now).await?;
                }
                "user_migrated"
            }
            None => kind,
        };
        let detail = serde_json::json!({
            "provider": provider,
            "email_conflict": email_taken.is_some(),
            "route": migration.map(|m| m.route.as_str()),
        });
        sqlx::query("INSERT INTO audit_events (at, kind, user_id, detail) VALUES ($1, $2, $3, $4)")
            .bind(now)
            .bind(kind)
            .bind(&user_id)
            .bind(to_json(&detail))
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(&user_id)
            .fetch_one(&mut *tx)
            .await?;
        let mut user = user_from_row(&row)?;
        if let Some(login) = login.filter(|_| !user.blocked) {
            sqlx::query(RECORD_LOGIN)
                .bind(&user_id)
                .bind(login.at)
                .execute(&mut *tx)
                .await?;
            user.last_login_at = Some(login.at);
            user.logins_count += 1;
            let mut login = login.clone();
            login.user_id = Some(user_id.clone());
            insert_event(&mut *tx, &login).await?;
        }
        tx.commit().await?;
        Ok(user)
    }
}

impl SqlStore {
    async fn write_client(&self, client: &Client, upsert: bool) -> StoreResult<()> {
        let conflict = if upsert {
            " ON CONFLICT (client_id) DO UPDATE SET name = excluded.name, secret_hash = excluded.secret_hash, \
             public = excluded.public, redirect_uris = excluded.redirect_uris, \
             post_logout_redirect_uris = excluded.post_logout_redirect_uris, grant_types = excluded.grant_types, \
             token_mode = excluded.token_mode, source = excluded.source, web_origins = excluded.web_origins, \
             scopes = excluded.scopes"
        } else {
            ""
        };
        sqlx::query(&format!(
            "INSERT INTO clients ({CLIENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12){conflict}"
        ))
        .bind(&client.client_id)
        .bind(&client.name)
        .bind(&client.secret_hash)
        .bind(client.public as i64)
        .bind(to_json(&client.redirect_uris))
        .bind(to_json(&client.post_logout_redirect_uris))
        .bind(to_json(&client.grant_types))
        .bind(client.token_mode.as_str())
        .bind(client.source.as_str())
        .bind(client.created_at)
        .bind(to_json(&client.web_origins))
        .bind(to_json(&client.scopes))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl ClientStore for SqlStore {
    async fn create_client(&self, client: &Client) -> StoreResult<()> {
        self.write_client(client, false).await
    }

    async fn upsert_client(&self, client: &Client) -> StoreResult<()> {
        self.write_client(client, true).await
    }

    async fn get_client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        let row = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = $1"
        ))
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(client_from_row).transpose()
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        let rows = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM clients ORDER BY client_id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(client_from_row).collect()
    }

    async fn delete_client(&self, client_id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM clients WHERE client_id = $1")
            .bind(client_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl KeyStore for SqlStore {
    async fn list_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        let rows = sqlx::query("SELECT kid, alg, private_key, state, created_at, publish_until FROM signing_keys ORDER BY created_at, kid")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn insert_key(&self, key: &SigningKeyRecord) -> StoreResult<()> {
        sqlx::query("INSERT INTO signing_keys (kid, alg, private_key, state, created_at, publish_until) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&key.kid)
            .bind(&key.alg)
            .bind(&key.private_key)
            .bind(key.state.as_str())
            .bind(key.created_at)
            .bind(key.publish_until)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn rotate_keys(
        &self,
        alg: &str,
        new_next: &SigningKeyRecord,
        publish_until: i64,
        now: i64,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM signing_keys WHERE state = 'retired' AND publish_until < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE signing_keys SET state = 'retired', publish_until = $2 WHERE alg = $1 AND state = 'active'")
            .bind(alg)
            .bind(publish_until)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE signing_keys SET state = 'active' WHERE alg = $1 AND state = 'next'")
            .bind(alg)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO signing_keys (kid, alg, private_key, state, created_at, publish_until) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&new_next.kid)
            .bind(&new_next.alg)
            .bind(&new_next.private_key)
            .bind(KeyState::Next.as_str())
            .bind(new_next.created_at)
            .bind(None::<i64>)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Appends `event` to the audit trail, in a transaction or not.
/// An audit event as a row of `audit_events` holds it (the columns
/// `at, kind, user_id, client_id, ip, detail, actor`).
pub(crate) fn event_from_row(r: &AnyRow) -> StoreResult<AuditEvent> {
    Ok(AuditEvent {
        at: r.try_get("at")?,
        kind: r.try_get("kind")?,
        user_id: r.try_get("user_id")?,
        client_id: r.try_get("client_id")?,
        ip: r.try_get("ip")?,
        detail: json_col(r, "detail")?,
        actor: r.try_get("actor")?,
    })
}

/// Deletes a user and every row that belongs to them, children first:
/// the schema cascades, but SQLite honours foreign keys only on
/// connections that ask. Deleting the refresh families is what makes the
/// user's refresh tokens stop working at once. False when there was no
/// such user.
pub(crate) async fn delete_user_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
) -> StoreResult<bool> {
    for table in [
        "refresh_families",
        "recovery_tokens",
        "invitations",
        "operators",
        "credentials",
        "identities",
    ] {
        sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1"))
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    let done = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub(crate) async fn insert_event<'e, E>(executor: E, event: &AuditEvent) -> StoreResult<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query("INSERT INTO audit_events (at, kind, user_id, client_id, ip, detail, actor) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(event.at)
        .bind(&event.kind)
        .bind(&event.user_id)
        .bind(&event.client_id)
        .bind(&event.ip)
        .bind(to_json(&event.detail))
        .bind(&event.actor)
        .execute(executor)
        .await?;
    Ok(())
}

#[async_trait]
impl AuditLog for SqlStore {
    async fn record_event(&self, event: &AuditEvent) -> StoreResult<()> {
        insert_event(&self.pool, event).await
    }

    async fn recent_events(&self, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        let rows = sqlx::query("SELECT at, kind, user_id, client_id, ip, detail, actor FROM audit_events ORDER BY id DESC LIMIT $1")
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }
}

#[async_trait]
impl RuntimeSettings for SqlStore {
    async fn get_setting(&self, name: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM runtime_settings WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn put_setting(&self, name: &str, value: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO runtime_settings (name, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(value)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Database for SqlStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
