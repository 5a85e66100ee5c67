//! Where state lives: durable records in SQL, short-lived ones in the
//! session store.
//!
//! - [`Database`]: durable records (users, credentials, identities, clients,
//!   signing keys, audit events, and the job and outbox tables the migration
//!   issues fill) in SQL through sqlx: [`sql::SqlStore`] serves both SQLite
//!   and PostgreSQL from one set of queries.
//! - [`SessionStore`]: short-lived records with a TTL (pending authorization
//!   requests, codes, sessions, refresh families, throttle counters):
//!   [`memory::MemoryStore`] in-process, [`redis::RedisStore`] shared.
//!
//! Both are object-safe traits used as `Arc<dyn …>`, and each has one test
//! suite that every implementation passes (tests/api/store.rs).

/// A closed set the store and the settings spell as text: `ALL`, `as_str`
/// and `parse` from one table of names, so the spellings cannot drift apart.
/// Defined before the submodules so that they can use it too.
macro_rules! text_names {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub mod api_users;
pub mod audit_query;
pub mod invitations;
pub mod jobs;
pub mod memory;
pub mod operators;
pub mod outbox;
mod outbox_queue;
mod page;
mod pg_copy;
pub mod position;
pub mod recent;
pub mod record;
pub mod recovery;
pub mod redis;
pub mod refresh;
pub mod sql;
mod sql_common;
pub mod stats;
pub mod transition;
pub mod user_search;
pub mod users;

use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The profile fields a user has wherever they come from: the stored user
/// ([`User`]), an upstream login ([`UpstreamProfile`]) and a job's source
/// record ([`record::Record`]) all hold this one struct, so the fields are
/// declared, copied and compared once. Most are OIDC standard claims (OIDC
/// Core §5.1); `username` is the login name (`preferred_username`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub email: Option<String>,
    pub email_verified: bool,
    pub username: Option<String>,
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub nickname: Option<String>,
    pub picture: Option<String>,
    pub phone_number: Option<String>,
}

impl Profile {
    /// The names the user signs in with (email, username), which a new
    /// password must not be.
    pub fn login_names(&self) -> Vec<&str> {
        self.email
            .iter()
            .chain(&self.username)
            .map(String::as_str)
            .collect()
    }

    /// How a page names the account: its email, else its username.
    pub fn account_name(&self) -> &str {
        self.email
            .as_deref()
            .or(self.username.as_deref())
            .unwrap_or_default()
    }
}

/// A user as the upstream describes them. Plain data the store persists;
/// reading one from an upstream's claims is `upstream::profile`'s job, so
/// the store needs nothing from the layers above it.
#[derive(Debug, Clone, Default)]
pub struct UpstreamProfile {
    pub id: String,
    pub profile: Profile,
    /// Every claim, as the upstream spelled it.
    pub raw: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule refused the write; the string names the field.
    #[error("{0} is already taken")]
    Conflict(&'static str),
    /// The backend could not be reached.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Backend(String),
    #[error("stored record could not be decoded: {0}")]
    Corrupt(String),
    /// An upstream identity would land on a user that is not linked to
    /// that upstream (its `sub` equals the id of a user made here, or of
    /// one another upstream listed): refused, never merged.
    #[error("the upstream identity is not linked to the user with its id")]
    NotLinked,
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The grant types the token endpoint implements, and so the only ones a
/// client may be allowed: a client registered for any other would be
/// answered `unsupported_grant_type` (RFC 6749 §5.2) at every request.
/// Discovery's `grant_types_supported` lists exactly these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum GrantType {
    /// RFC 6749 §4.1.
    AuthorizationCode,
    /// RFC 6749 §6.
    RefreshToken,
    /// RFC 6749 §4.3, for clients that list it (RFC 9700 §2.4).
    Password,
    /// RFC 6749 §4.4: a confidential client acting for itself (a machine
    /// calling the admin API), with no user.
    ClientCredentials,
}

text_names!(GrantType {
    AuthorizationCode => "authorization_code",
    RefreshToken => "refresh_token",
    Password => "password",
    ClientCredentials => "client_credentials",
});

/// The JWS algorithms (RFC 7518 §3, RFC 8037 §3.1) Switchyard signs ID and
/// access tokens with; the names are the `alg` header values, as the
/// settings (`tokens.signing_alg`) and `keys rotate --alg` spell them.
/// Signing itself is `tokens::keys`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
pub enum SigningAlg {
    #[value(name = "RS256")]
    RS256,
    #[value(name = "ES256")]
    ES256,
    #[value(name = "EdDSA")]
    EdDSA,
}

text_names!(SigningAlg {
    RS256 => "RS256",
    ES256 => "ES256",
    EdDSA => "EdDSA",
});

/// Who signs the access tokens a client receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TokenMode {
    /// Switchyard signs them (RFC 9068 JWTs).
    #[default]
    Gateway,
    /// The client receives the upstream's access token of its session:
    /// its APIs still trust the old provider.
    Upstream,
}

text_names!(TokenMode {
    Gateway => "gateway",
    Upstream => "upstream",
});

/// Where a client was registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientSource {
    /// Declared in the configuration file: re-synchronised at every start,
    /// and deleted when the file no longer declares it.
    Config,
    /// Added with `switchyard clients add`: left alone by the sync.
    Cli,
    /// Switchyard's own first-party client (the dashboard's sign-in):
    /// rewritten at every start, never deleted by the file sync.
    Builtin,
}

text_names!(ClientSource {
    Config => "config",
    Cli => "cli",
    Builtin => "builtin",
});

/// Where a user stands in the migration. Only `local` is produced by the
/// core; the upstream tracks add the others. Every move from one to another
/// is decided by [`UserState::next`] ([`transition`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserState {
    /// Created in Switchyard; never had an upstream account.
    Local,
    /// Known from a backfill, never logged in through Switchyard.
    Pending,
    /// Logged in through the upstream redirect track; no local credential.
    Shadow,
    /// Has a local credential copied or verified from the upstream.
    Migrated,
}

text_names!(UserState {
    Local => "local",
    Pending => "pending",
    Shadow => "shadow",
    Migrated => "migrated",
});

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct User {
    /// The `sub` of every token: the upstream id for users who came from
    /// upstream, a generated id for local ones.
    pub id: String,
    #[serde(flatten)]
    pub profile: Profile,
    pub user_metadata: serde_json::Value,
    pub app_metadata: serde_json::Value,
    pub state: UserState,
    pub blocked: bool,
    /// The provider the user came from (`[upstream] provider`), if any.
    pub upstream: Option<String>,
    /// A per-user cutover pin: `force_upstream` (rollback) or `force_local`.
    pub pin: Option<String>,
    /// How the user was migrated (`password`, `import`, …) and when.
    pub route: Option<String>,
    pub migrated_at: Option<i64>,
    /// The upstream's claims as last seen, spelled as the upstream spells
    /// them (the `profile` column).
    #[serde(rename = "profile")]
    pub claims: serde_json::Value,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_login_at: Option<i64>,
    /// Sessions and refresh tokens authenticated before this instant are
    /// void (set by a password reset).
    pub sessions_valid_after: Option<i64>,
    /// Logins through Switchyard (Auth0's `logins_count`).
    pub logins_count: i64,
}

impl User {
    /// Whether a session or grant authenticated at `auth_time` still
    /// stands for this user.
    pub fn accepts_auth_time(&self, auth_time: i64) -> bool {
        !self.blocked
            && self
                .sessions_valid_after
                .is_none_or(|after| auth_time >= after)
    }
}

/// What `users add` (and later the migration) supplies for a new user.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    /// When absent a local id is generated.
    pub id: Option<String>,
    pub profile: Profile,
}

/// What a user created through the Management API carries beyond
/// [`NewUser`].
#[derive(Debug, Clone, Default)]
pub struct NewUserExtras {
    pub user_metadata: serde_json::Map<String, serde_json::Value>,
    pub app_metadata: serde_json::Map<String, serde_json::Value>,
    pub blocked: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PasswordCredential {
    pub user_id: String,
    /// A PHC string (`$argon2id$…`), or an imported hash in its own format.
    pub hash: String,
    pub algorithm: String,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Client {
    pub client_id: String,
    pub name: Option<String>,
    /// `sha256$<salt>$<digest>`; `None` for public clients.
    #[serde(skip_serializing)]
    pub secret_hash: Option<String>,
    pub public: bool,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    /// The origins (`scheme://host[:port]`) the application's browser code
    /// runs on, Auth0's "Allowed Web Origins": a `web_message` or
    /// `okta_post_message` response is posted only to one of these, and the
    /// token endpoint answers CORS for them (and for the origins of the
    /// redirect URIs).
    pub web_origins: Vec<String>,
    /// Scopes beyond the OpenID ones this client may be granted; the
    /// admin scopes (`switchyard:admin`, `switchyard:admin:read`) among
    /// them, for the client credentials grant.
    pub scopes: Vec<String>,
    pub token_mode: TokenMode,
    pub source: ClientSource,
    pub created_at: i64,
}

/// The scope of the admin API: every read and every change.
pub const ADMIN_SCOPE: &str = "switchyard:admin";
/// The scope of the admin API: every read, no change.
pub const ADMIN_READ_SCOPE: &str = "switchyard:admin:read";
/// The prefix of Switchyard's own scopes: a client allowed one that is not
/// among these is a typo that would fail only at the first token request.
pub const SWITCHYARD_SCOPES: &[&str] = &[ADMIN_SCOPE, ADMIN_READ_SCOPE];

impl Client {
    pub fn allows_grant(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Published in the JWKS, not yet signing: relying parties learn it
    /// before the first token signed with it arrives.
    Next,
    /// Signs new tokens.
    Active,
    /// No longer signs; published until `publish_until`.
    Retired,
}

text_names!(KeyState {
    Next => "next",
    Active => "active",
    Retired => "retired",
});

#[derive(Debug, Clone, PartialEq)]
pub struct SigningKeyRecord {
    pub kid: String,
    /// `RS256`, `ES256` or `EdDSA` ([`SigningAlg`]), kept as the stored
    /// text: a key of an algorithm this release does not know (written by
    /// a newer one sharing the database) is skipped when the key ring
    /// loads, rather than making every key unreadable.
    pub alg: String,
    /// PKCS#8 DER, base64; or `sealed:` + base64 of an AES-GCM sealing when
    /// a key-encryption key is configured.
    pub private_key: String,
    pub state: KeyState,
    pub created_at: i64,
    pub publish_until: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    pub at: i64,
    pub kind: String,
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub ip: Option<String>,
    pub detail: serde_json::Value,
    /// The operator who made the change (`user:<id>` or `client:<id>`),
    /// for changes made through the dashboard or the admin API.
    pub actor: Option<String>,
}

impl AuditEvent {
    /// An event of `kind` now, about `user_id` through `client_id`, with no
    /// address and no detail yet.
    pub fn new(kind: &str, user_id: Option<&str>, client_id: Option<&str>) -> Self {
        Self {
            at: now(),
            kind: kind.into(),
            user_id: user_id.map(Into::into),
            client_id: client_id.map(Into::into),
            ip: None,
            detail: serde_json::Value::Object(Default::default()),
            actor: None,
        }
    }

    pub fn with_ip(mut self, ip: std::net::IpAddr) -> Self {
        self.ip = Some(ip.to_string());
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }

    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates the user and, when given, the password credential in one
    /// transaction: a user never exists half-made.
    async fn create_user(
        &self,
        user: &NewUser,
        password: Option<(&str, &str)>,
    ) -> StoreResult<User> {
        self.create_user_with(user, &NewUserExtras::default(), password)
            .await
    }
    /// [`UserStore::create_user`] with metadata and a blocked flag (a user
    /// created through the Management API).
    async fn create_user_with(
        &self,
        user: &NewUser,
        extras: &NewUserExtras,
        password: Option<(&str, &str)>,
    ) -> StoreResult<User>;
    async fn get_user(&self, id: &str) -> StoreResult<Option<User>>;
    /// Looks a login identifier up as an email (case-insensitively) or a username.
    async fn find_user_by_login(&self, identifier: &str) -> StoreResult<Option<User>>;
    /// Users ordered by id, after the given id.
    async fn list_users(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<User>>;
    /// Deletes the user with its credentials and identities.
    async fn delete_user(&self, id: &str) -> StoreResult<bool>;
    async fn get_password(&self, user_id: &str) -> StoreResult<Option<PasswordCredential>>;
    /// Replaces the password credential; false when the user does not exist.
    async fn set_password(&self, user_id: &str, hash: &str, algorithm: &str) -> StoreResult<bool>;
    async fn record_login(&self, user_id: &str, at: i64) -> StoreResult<()>;
    /// Creates or refreshes the user an upstream login describes, with its
    /// identity and an audit event, in one transaction. The user is found by
    /// the identity first, so a user arriving through a linked identity is
    /// not duplicated. A new user is a `shadow`; a `local` or `migrated`
    /// user keeps its own values and only gains the fields it lacks.
    async fn upsert_upstream_user(
        &self,
        provider: &str,
        profile: &UpstreamProfile,
    ) -> StoreResult<User>;
    /// An upstream login, in one transaction: the upsert of
    /// [`UserStore::upsert_upstream_user`] and then, unless the user is
    /// blocked, `last_login_at` and the `login` event (whose `user_id` is
    /// set to the user's). One commit instead of three on the callback path.
    async fn record_upstream_login(
        &self,
        provider: &str,
        profile: &UpstreamProfile,
        login: &AuditEvent,
    ) -> StoreResult<User>;
    /// The migration step of a lazy-migration login: the same upsert, plus
    /// the local credential, state `migrated`, `migrated_at` and the route,
    /// and, when asked and the user was not already local or migrated, the
    /// outbox row that marks them at the upstream, all in one transaction.
    /// A crash leaves the user fully migrated or untouched, never with a
    /// local credential but no record of where it came from.
    async fn migrate_upstream_user(
        &self,
        provider: &str,
        profile: &UpstreamProfile,
        migration: &Migration,
    ) -> StoreResult<User>;
    /// Sets or clears a user's cutover pin; false when the user does not exist.
    async fn set_pin(&self, user_id: &str, pin: Option<&str>) -> StoreResult<bool>;
}

/// What a migration stores beside the profile.
#[derive(Debug, Clone)]
pub struct Migration {
    pub hash: String,
    pub algorithm: String,
    /// `password` (verified at the upstream), `import`, …
    pub route: String,
    /// Queue a write marking the user migrated at the upstream
    /// (`[upstream.management] mark_migrated`), in the same transaction.
    pub mark_upstream: bool,
}

/// Named runtime settings shared by every instance.
#[async_trait]
pub trait RuntimeSettings: Send + Sync {
    async fn get_setting(&self, name: &str) -> StoreResult<Option<String>>;
    async fn put_setting(&self, name: &str, value: &str) -> StoreResult<()>;
}

#[async_trait]
pub trait ClientStore: Send + Sync {
    /// Inserts a new client; `Conflict("client_id")` when it exists.
    async fn create_client(&self, client: &Client) -> StoreResult<()>;
    /// Inserts or replaces (used to synchronise clients from the file).
    async fn upsert_client(&self, client: &Client) -> StoreResult<()>;
    async fn get_client(&self, client_id: &str) -> StoreResult<Option<Client>>;
    async fn list_clients(&self) -> StoreResult<Vec<Client>>;
    async fn delete_client(&self, client_id: &str) -> StoreResult<bool>;
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn list_keys(&self) -> StoreResult<Vec<SigningKeyRecord>>;
    async fn insert_key(&self, key: &SigningKeyRecord) -> StoreResult<()>;
    /// In one transaction: the active key of `alg` retires (published until
    /// `publish_until`), the `next` one becomes active, `new_next` is
    /// inserted, and retired keys past their date are deleted.
    async fn rotate_keys(
        &self,
        alg: &str,
        new_next: &SigningKeyRecord,
        publish_until: i64,
        now: i64,
    ) -> StoreResult<()>;
}

#[async_trait]
pub trait AuditLog: Send + Sync {
    async fn record_event(&self, event: &AuditEvent) -> StoreResult<()>;
    async fn recent_events(&self, limit: u32) -> StoreResult<Vec<AuditEvent>>;
}

/// The durable store, as the application sees it.
#[async_trait]
pub trait Database:
    UserStore
    + ClientStore
    + KeyStore
    + AuditLog
    + RuntimeSettings
    + jobs::JobStore
    + jobs::reports::JobReports
    + users::UserEdits
    + outbox::OutboxStore
    + recovery::RecoveryStore
    + invitations::InvitationStore
    + refresh::RefreshStore
    + operators::OperatorStore
    + audit_query::AuditQuery
    + user_search::UserSearch
    + stats::MigrationStats
    + api_users::ApiUsers
{
    async fn ping(&self) -> StoreResult<()>;
}

/// A counter in a fixed window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub count: u64,
    pub resets_in: Duration,
}

/// Short-lived key/value records with a TTL, shared by every gateway
/// instance. Implementations prefix every key with their namespace.
#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> StoreResult<()>;
    /// Writes only when the key is absent; true when written. Used for
    /// single-use claims (refresh rotation) and locks.
    async fn put_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> StoreResult<bool>;
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Reads and deletes atomically: of two concurrent takes only one sees
    /// the value (single-use authorization codes, ASVS 10.4.2).
    async fn take(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    async fn delete(&self, key: &str) -> StoreResult<bool>;
    /// Increments a counter whose window starts at its first increment.
    async fn incr(&self, key: &str, window: Duration) -> StoreResult<Counter>;
    /// Takes one back from a live counter (never below zero); its window
    /// stays, and an expired counter stays gone.
    async fn decr(&self, key: &str) -> StoreResult<()>;
    async fn ping(&self) -> StoreResult<()>;
}

/// JSON helpers over any [`SessionStore`]; kept out of the trait so it stays
/// object-safe.
#[async_trait]
pub trait SessionStoreExt {
    async fn put_json<T: Serialize + Sync>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> StoreResult<()>;
    async fn get_json<T: DeserializeOwned>(&self, key: &str) -> StoreResult<Option<T>>;
    async fn take_json<T: DeserializeOwned>(&self, key: &str) -> StoreResult<Option<T>>;
}

#[async_trait]
impl<S: SessionStore + ?Sized> SessionStoreExt for S {
    async fn put_json<T: Serialize + Sync>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> StoreResult<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.put(key, &bytes, ttl).await
    }

    async fn get_json<T: DeserializeOwned>(&self, key: &str) -> StoreResult<Option<T>> {
        decode(self.get(key).await?)
    }

    async fn take_json<T: DeserializeOwned>(&self, key: &str) -> StoreResult<Option<T>> {
        decode(self.take(key).await?)
    }
}

fn decode<T: DeserializeOwned>(bytes: Option<Vec<u8>>) -> StoreResult<Option<T>> {
    bytes
        .map(|b| serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

/// Checks a redirect URI before it is registered for a client. With the
/// other client registration rules, below both the settings check and the
/// token endpoint; matching at request time is `oidc::redirect_uri`'s.
pub fn validate_registration(uri: &str) -> Result<(), String> {
    if uri
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return Err("must not contain whitespace, control characters or backslashes".into());
    }
    let url = url::Url::parse(uri).map_err(|e| format!("is not an absolute URI: {e}"))?;
    // RFC 6749 §3.1.2: the endpoint URI must not include a fragment.
    if url.fragment().is_some() || uri.contains('#') {
        return Err("must not contain a fragment (RFC 6749 §3.1.2)".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain user information".into());
    }
    match url.scheme() {
        "https" => {}
        "http" => {
            // RFC 8252 §7.3 and §8.3: plain http only for loopback IP
            // literals; `localhost` can be pointed elsewhere by DNS or a
            // hosts file, so it is refused (RFC 9700 §2.1).
            if !is_loopback_literal(&url) {
                return Err("http is allowed only for the loopback IP literals 127.0.0.1 and [::1] (RFC 8252 §7.3)".into());
            }
        }
        "javascript" | "data" | "file" | "vbscript" | "about" | "blob" => {
            return Err(format!(
                "the {} scheme cannot be a redirect target",
                url.scheme()
            ));
        }
        scheme => {
            // RFC 8252 §7.1: private-use schemes are reverse domain names.
            if !scheme.contains('.') {
                return Err("a custom scheme must be a reverse domain name such as com.example.app (RFC 8252 §7.1)".into());
            }
        }
    }
    Ok(())
}

/// Checks a web origin before it is registered for a client: exactly an
/// origin as a browser serializes it in the `Origin` header (RFC 6454 §6.2,
/// `scheme://host[:port]`, no path, no trailing slash), since it is
/// compared as a string with that header and with `postMessage` targets.
/// The same transport rule as redirect URIs: https, or http on a loopback
/// IP literal.
pub fn validate_web_origin(origin: &str) -> Result<(), String> {
    let url = url::Url::parse(origin).map_err(|e| format!("is not an origin: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err("must be an http or https origin".into());
    }
    if url.scheme() == "http" && !is_loopback_literal(&url) {
        return Err(
            "http is allowed only for the loopback IP literals 127.0.0.1 and [::1] (RFC 8252 §7.3)"
                .into(),
        );
    }
    let serialized = url.origin().ascii_serialization();
    if serialized != origin {
        return Err(format!(
            "must be an origin as browsers send it (RFC 6454 §6.2): {serialized}"
        ));
    }
    Ok(())
}

fn is_loopback_literal(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// Client ids are printable ASCII without spaces or the characters Basic
/// authentication and URLs treat specially, so they survive every encoding
/// (RFC 6749 §2.2, Appendix A.1).
pub fn validate_client_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err("must be 1 to 128 characters".into());
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    {
        return Err("may contain only letters, digits and - . _ ~".into());
    }
    Ok(())
}

/// Client secrets are stored as a salted SHA-256, which is sound only for
/// high-entropy secrets; 32 characters is the floor (a generated one is 43).
pub fn validate_client_secret(secret: &str) -> Result<(), String> {
    if secret.chars().count() < 32 {
        return Err("a client secret must be at least 32 characters (generate one with `switchyard clients add` without --secret)".into());
    }
    Ok(())
}

/// Unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
