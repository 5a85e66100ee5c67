//! Typed settings: one TOML file plus `SWITCHYARD_*` environment overrides.
//!
//! Secrets never live in the file: the file names the environment variable
//! that holds each one (`client_secret_env`), so the file can be committed.
//! With no file at all every key has a default, which is the embedded mode
//! (SQLite file, in-process session store, loopback issuer).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use url::Url;

pub const DEFAULT_ISSUER: &str = "http://127.0.0.1:8080/";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://switchyard.db";

/// The top-level keys of [`Settings`], which `SWITCHYARD_*` variables may
/// set. Taken from the serialised defaults rather than written out, so a new
/// section can never be left out by accident (every field serialises, `None`
/// as null).
fn settings_keys() -> Vec<String> {
    match serde_json::to_value(Settings::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Every setting Switchyard reads. Field docs are the configuration reference.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The issuer applications are repointed at. Byte-identical in discovery
    /// and in every token (OIDC Discovery §3, §4.3).
    pub issuer: String,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// `sqlite://path` or `postgres://…`.
    pub database_url: String,
    /// `redis://…`; absent means the in-process session store.
    pub redis_url: Option<String>,
    /// Prefix of every session-store key, so several deployments (or tests)
    /// share one Redis without colliding.
    pub session_prefix: String,
    /// How long one Redis command may take before it fails (the request
    /// then answers 503 `temporarily_unavailable`), in milliseconds. A
    /// stalled Redis must not hold every request for long; `/readyz`
    /// answers within 1 s whatever this says. Default 1000.
    #[serde(default = "default_redis_timeout_ms")]
    pub redis_timeout_ms: u64,
    /// The proxies in front of Switchyard, as networks (`10.0.0.0/8`) or
    /// addresses. A request from one of them is counted against the
    /// right-most `X-Forwarded-For` hop that is not one of them: hops to its
    /// left were written by whoever sent the request, and can be anything.
    /// Empty (the default): the peer's address, and the header is ignored.
    pub trusted_proxies: Vec<String>,
    pub tokens: TokenSettings,
    pub password: PasswordSettings,
    pub throttle: ThrottleSettings,
    pub clients: Vec<ClientSettings>,
    /// The provider being migrated from; absent for a local-only provider.
    pub upstream: Option<UpstreamSettings>,
    pub cutover: CutoverSettings,
    pub email: EmailSettings,
    pub recovery: RecoverySettings,
    pub admin: AdminSettings,
    pub management_api: ManagementApiSettings,
}

/// `[management_api]`: the Auth0-compatible Management API (`/api/v2/`)
/// that backends call with a machine client's token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagementApiSettings {
    /// Requests per second each client may make, on average: the refill
    /// rate of its token bucket (Auth0 "Management API Rate Limits" meters
    /// per tenant and endpoint with a bucket too). Default 50.
    pub requests_per_second: f64,
    /// The bucket's size: how many requests a client may make at once
    /// after a quiet spell. Default 100.
    pub burst: u32,
    /// The largest request body accepted, in bytes (default 64 KiB): a
    /// user with its metadata is a few kilobytes (Auth0 caps
    /// `user_metadata` at 16 KB).
    pub max_body_bytes: usize,
}

impl Default for ManagementApiSettings {
    fn default() -> Self {
        Self {
            requests_per_second: 50.0,
            burst: 100,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// `[email]`: how messages to users (reset links, invitations) leave.
/// Without `smtp_url` they are written as `.eml` files to `drop_dir`, so
/// the embedded default shows the whole recovery flow with no mail server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailSettings {
    /// `smtp://host:port` (STARTTLS when the server offers it; add
    /// `?tls=required` to insist), `smtps://host:port` (TLS from the first
    /// byte, RFC 8314), or absent for the file drop.
    pub smtp_url: Option<String>,
    /// The `From` address (RFC 5322 mailbox, `Name <addr>` allowed).
    pub from: String,
    pub reply_to: Option<String>,
    /// Environment variables holding the SMTP username and password.
    pub username_env: Option<String>,
    pub password_env: Option<String>,
    /// Where messages are written when there is no `smtp_url`, one `.eml`
    /// file each (RFC 5322), named so that a listing sorts oldest first.
    pub drop_dir: PathBuf,
    /// Seconds before a send that failed for now (the server unreachable,
    /// a 4xx reply) is tried again, doubled for each further failure;
    /// default 30. A permanent refusal (a 5xx reply) is not retried.
    pub retry_secs: Option<f64>,
    /// Seconds between looks at the outbox for email to send; default 5.
    /// The one outbox worker looks as often as the shorter of this and
    /// `upstream.management.outbox_poll_secs`.
    pub poll_secs: Option<f64>,
}

impl Default for EmailSettings {
    fn default() -> Self {
        Self {
            smtp_url: None,
            from: "Switchyard <no-reply@localhost>".into(),
            reply_to: None,
            username_env: None,
            password_env: None,
            drop_dir: PathBuf::from("mail"),
            retry_secs: None,
            poll_secs: None,
        }
    }
}

/// `[admin]`: the operators' dashboard (`/admin`) and admin API
/// (`/admin/api/v1/`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Emails (or usernames) of users given the `admin` role at every
    /// start, beside those granted with `switchyard users grant-admin`.
    pub operators: Vec<String>,
    /// An admin session ends after this long without a request, in seconds.
    pub session_idle_secs: u64,
    /// The largest import file the admin API accepts, in bytes.
    pub max_upload_bytes: u64,
    /// Whether `serve` runs the queued jobs (backfill, verify, import,
    /// campaign) started from the dashboard or the admin API.
    pub run_jobs: bool,
    /// Where import files uploaded through the admin API are written
    /// before they are imported (shared storage when several instances
    /// run jobs: the instance whose disk holds the file runs the job).
    pub upload_dir: PathBuf,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            operators: Vec::new(),
            session_idle_secs: 15 * 60,
            max_upload_bytes: 512 * 1024 * 1024,
            run_jobs: true,
            upload_dir: PathBuf::from("uploads"),
        }
    }
}

/// `[recovery]`: password reset links and invitations.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoverySettings {
    /// How long a Forgot-password link works.
    pub token_ttl_secs: u64,
    /// How long the link in a campaign's invitation works.
    pub invite_ttl_secs: u64,
    /// Completing a reset ends the user's sessions and revokes their
    /// refresh tokens everywhere.
    pub revoke_sessions_on_reset: bool,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        Self {
            token_ttl_secs: 30 * 60,
            invite_ttl_secs: 14 * 24 * 3600,
            revoke_sessions_on_reset: true,
        }
    }
}

/// A local change that can be written back to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteKind {
    Password,
    Profile,
    Blocked,
    /// The user deleted (through the Management API, `/api/v2/`).
    Delete,
}

impl WriteKind {
    pub const ALL: &'static [WriteKind] = &[
        WriteKind::Password,
        WriteKind::Profile,
        WriteKind::Blocked,
        WriteKind::Delete,
    ];

    /// As the settings, metrics and messages spell it.
    pub fn name(self) -> &'static str {
        match self {
            WriteKind::Password => "password",
            WriteKind::Profile => "profile",
            WriteKind::Blocked => "blocked",
            WriteKind::Delete => "delete",
        }
    }
}

/// How a local change reaches the upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Queued with the local change and delivered by the outbox worker: the
    /// request never waits on the upstream.
    #[default]
    Outbox,
    /// Sent before the local change is committed; a refusal (an upstream
    /// password policy, say) refuses the change.
    Blocking,
}

/// `write_back`: which local changes are mirrored to the upstream, and how.
/// Written as a list (`["password", "blocked"]`, each through the outbox)
/// or a table (`{ password = "blocking", profile = "outbox" }`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WriteBack(pub std::collections::BTreeMap<WriteKind, WriteMode>);

impl WriteBack {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How `kind` is written back, if it is.
    pub fn mode(&self, kind: WriteKind) -> Option<WriteMode> {
        self.0.get(&kind).copied()
    }
}

impl<'de> Deserialize<'de> for WriteBack {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            List(Vec<WriteKind>),
            Table(std::collections::BTreeMap<WriteKind, WriteMode>),
        }
        Ok(Self(match Form::deserialize(d)? {
            Form::List(kinds) => kinds.into_iter().map(|k| (k, WriteMode::Outbox)).collect(),
            Form::Table(table) => table,
        }))
    }
}

/// `[upstream]`: the provider applications used before, described by a
/// provider definition (`providers/*.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    /// A built-in provider (`auth0`, `okta`, `cognito`, `keycloak`, `oidc`)
    /// or the path of a provider TOML file.
    pub provider: String,
    /// Auth0 or Okta tenant domain (a custom domain works the same), or
    /// Keycloak's host.
    #[serde(default)]
    pub domain: Option<String>,
    /// Keycloak realm.
    #[serde(default)]
    pub realm: Option<String>,
    /// Cognito region and user pool.
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub user_pool_id: Option<String>,
    /// Okta authorization server id.
    #[serde(default = "default_authorization_server")]
    pub authorization_server: String,
    /// Overrides the issuer the provider definition derives (custom
    /// domains, private clouds, emulators); required for `oidc`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Overrides of discovered endpoints.
    #[serde(default)]
    pub endpoints: EndpointOverrides,
    /// Switchyard's own client at the upstream (for the redirect track).
    pub client_id: String,
    /// Environment variable holding that client's secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Auth0 connection (database) used by the password track.
    #[serde(default)]
    pub connection: Option<String>,
    /// Scopes asked of the upstream; default: the provider definition's.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// End the upstream session too when a user logs out of Switchyard.
    #[serde(default = "yes")]
    pub chain_logout: bool,
    /// Bound on every upstream call.
    #[serde(default = "default_upstream_timeout")]
    pub timeout_secs: u64,
    /// Tolerated clock difference when checking upstream ID tokens.
    #[serde(default = "default_clock_skew")]
    pub clock_skew_secs: u64,
    /// Refresh an upstream access token this long before it expires.
    #[serde(default = "default_refresh_margin")]
    pub refresh_margin_secs: u64,
    /// Extra claims for Switchyard's tokens, read from the user's profile
    /// by path: `"https://example.com/roles" = "app_metadata.roles"`.
    #[serde(default)]
    pub claims: std::collections::BTreeMap<String, String>,
    /// Refresh-token adoptions allowed per client and minute.
    #[serde(default = "default_adoption_rate")]
    pub adoptions_per_minute: u64,
    /// Refresh-token adoptions allowed per client, client address (IPv6:
    /// per /64) and minute, within `adoptions_per_minute`: one caller
    /// cannot use up a client's budget for its real users.
    #[serde(default = "default_adoption_rate_per_address")]
    pub adoptions_per_minute_per_address: u64,
    /// Environment variable holding the keys that seal upstream tokens in
    /// the session store: `kid=base64key,…`, the first one sealing.
    #[serde(default = "default_token_keys_env")]
    pub token_keys_env: String,
    /// The user-listing API used by `backfill` and `verify`.
    #[serde(default)]
    pub management: ManagementSettings,
    /// Send the end user's address with the password on the lazy-migration
    /// track, the way the provider definition says (`[password] client_ip`:
    /// Auth0's `auth0-forwarded-for`, Okta's `X-Forwarded-For`, Cognito's
    /// `UserContextData`), so the upstream's brute-force protection blocks
    /// the attacker's address and not Switchyard's. On where the provider
    /// definition has a way; `false` turns it off.
    #[serde(default = "yes")]
    pub forward_client_ip: bool,
    /// Where Cognito's user-pool API (`InitiateAuth`, and the Management
    /// API's `ListUsers`, `AdminSetUserPassword`, …) is reached, like the
    /// AWS SDKs' `endpoint_url`: a FIPS or VPC endpoint, or an emulator
    /// (moto, LocalStack) whose tokens still carry the AWS issuer. Default:
    /// the issuer's origin (`https://cognito-idp.{region}.amazonaws.com`).
    #[serde(default)]
    pub api_endpoint: Option<String>,
}

/// `[upstream.management]`: credentials and pace for the upstream's
/// Management API. Secrets are named by environment variable, never written
/// in the file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementSettings {
    /// Overrides the provider definition's base URL (custom domains,
    /// regional endpoints, an emulator).
    #[serde(default)]
    pub base: Option<String>,
    /// The client-credentials token's `audience` (Auth0): always the
    /// tenant's canonical `https://TENANT.auth0.com/api/v2/`, also behind a
    /// custom domain; default: the provider definition's, from `domain`.
    #[serde(default)]
    pub audience: Option<String>,
    /// Seconds between polls of an export job (Auth0).
    #[serde(default)]
    pub export_poll_secs: Option<f64>,
    /// Client for the client-credentials token (Auth0, Keycloak); default:
    /// `[upstream] client_id` and its secret.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Environment variable holding Okta's API token (SSWS).
    #[serde(default)]
    pub api_token_env: Option<String>,
    /// Environment variables holding AWS credentials (Cognito); default:
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
    #[serde(default)]
    pub aws_access_key_id_env: Option<String>,
    #[serde(default)]
    pub aws_secret_access_key_env: Option<String>,
    #[serde(default)]
    pub aws_session_token_env: Option<String>,
    /// A ceiling on requests per second, below what the upstream's headers
    /// allow (leave room for the login traffic that shares the quota).
    #[serde(default)]
    pub max_rate: Option<f64>,
    /// Requests in flight at once.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Mark every user the lazy migration moves as migrated at the upstream
    /// too (Auth0 `app_metadata.migrated_at`, …), through the durable
    /// outbox: a login never waits for it. Off by default.
    #[serde(default)]
    pub mark_migrated: bool,
    /// The attribute that holds the mark, when the provider definition's
    /// default does not fit (an Okta profile attribute, a Cognito
    /// `custom:` attribute, …).
    #[serde(default)]
    pub mark_migrated_attribute: Option<String>,
    /// Attempts before an outbox write turns `failed` (default 10).
    #[serde(default)]
    pub outbox_max_attempts: Option<u32>,
    /// Seconds before the first retry of an outbox write; each further
    /// retry waits twice as long, up to an hour (default 30).
    #[serde(default)]
    pub outbox_retry_secs: Option<f64>,
    /// Seconds between looks at the outbox when it is idle (default 5).
    #[serde(default)]
    pub outbox_poll_secs: Option<f64>,
    /// Local changes mirrored to the upstream, so that a user rolled back
    /// to it finds their account as they left it (empty by default).
    #[serde(default)]
    pub write_back: WriteBack,
    /// How a write through the Management API (`/api/v2/`) reaches the
    /// upstream while it is still the primary (phases `passthrough` and
    /// `lazy`): `blocking` (the default) writes there first and then
    /// locally, in the same request, so a refusal is the caller's answer;
    /// `outbox` writes locally first and queues the upstream write.
    #[serde(default)]
    pub api_writes: Option<WriteMode>,
}

impl ManagementSettings {
    /// `api_writes`, `blocking` when unset.
    pub fn api_writes(&self) -> WriteMode {
        self.api_writes.unwrap_or(WriteMode::Blocking)
    }
}

/// The variable holding the keys that seal upstream tokens:
/// `kid1=base64key,kid2=base64key`; the first seals, all open. It is the
/// default of a setting, so it lives with the settings.
pub const TOKEN_KEYS_ENV: &str = "SWITCHYARD_UPSTREAM_TOKEN_KEYS";

fn default_token_keys_env() -> String {
    TOKEN_KEYS_ENV.into()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointOverrides {
    pub authorization: Option<String>,
    pub token: Option<String>,
    pub userinfo: Option<String>,
    pub jwks: Option<String>,
    pub revocation: Option<String>,
    pub end_session: Option<String>,
}

fn default_authorization_server() -> String {
    "default".into()
}
fn yes() -> bool {
    true
}
fn default_redis_timeout_ms() -> u64 {
    1000
}

fn default_upstream_timeout() -> u64 {
    10
}
fn default_clock_skew() -> u64 {
    60
}
fn default_refresh_margin() -> u64 {
    60
}
fn default_adoption_rate() -> u64 {
    60
}

fn default_adoption_rate_per_address() -> u64 {
    10
}

impl UpstreamSettings {
    /// Settings with only the provider named, for tests and examples.
    pub fn for_provider(provider: &str) -> Self {
        Self {
            provider: provider.into(),
            domain: None,
            realm: None,
            region: None,
            user_pool_id: None,
            authorization_server: default_authorization_server(),
            issuer: None,
            endpoints: EndpointOverrides::default(),
            client_id: "switchyard".into(),
            client_secret_env: None,
            connection: None,
            scopes: None,
            chain_logout: true,
            timeout_secs: default_upstream_timeout(),
            clock_skew_secs: default_clock_skew(),
            refresh_margin_secs: default_refresh_margin(),
            claims: Default::default(),
            adoptions_per_minute: default_adoption_rate(),
            adoptions_per_minute_per_address: default_adoption_rate_per_address(),
            token_keys_env: default_token_keys_env(),
            management: ManagementSettings::default(),
            forward_client_ip: true,
            api_endpoint: None,
        }
    }

    /// The values a provider's templates may use.
    pub fn template_vars(&self) -> std::collections::BTreeMap<&'static str, String> {
        let mut vars = std::collections::BTreeMap::new();
        let mut set = |k: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                vars.insert(k, v.clone());
            }
        };
        set("domain", &self.domain);
        set("realm", &self.realm);
        set("region", &self.region);
        set("user_pool_id", &self.user_pool_id);
        set("issuer", &self.issuer);
        vars.insert("authorization_server", self.authorization_server.clone());
        vars
    }
}

/// Which track a user takes: phases, cohorts, allow and deny lists,
/// per-client phases (the README's migration runbook). The file gives the starting rules; `switchyard cutover …`
/// changes them at runtime for every instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CutoverSettings {
    pub phase: Phase,
    /// In `lazy`, who is migrated at login: users matching any cohort. No
    /// cohorts means everyone.
    pub cohorts: Vec<Cohort>,
    /// Identifiers (emails, usernames, user ids) always migrated in `lazy`.
    pub allow: Vec<String>,
    /// Identifiers or `@domain`s never migrated: they stay on the redirect track.
    pub deny: Vec<String>,
    /// Per-client phase: `{ legacy-app = "passthrough" }`.
    pub clients: std::collections::BTreeMap<String, Phase>,
}

impl Default for CutoverSettings {
    fn default() -> Self {
        Self {
            phase: Phase::Lazy,
            cohorts: Vec::new(),
            allow: Vec::new(),
            deny: Vec::new(),
            clients: Default::default(),
        }
    }
}

/// One cohort: a stable percentage of users, and/or email domains.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cohort {
    pub percent: Option<u8>,
    pub email_domains: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Phase {
    /// Every login goes to the upstream.
    Passthrough,
    /// Local users log in locally; everyone else is moved on first login.
    Lazy,
    /// Local first; the upstream only for users still pending.
    LocalFirst,
    /// No upstream calls at all.
    LocalOnly,
}

impl Phase {
    /// The phase as the settings spell it, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Passthrough => "passthrough",
            Phase::Lazy => "lazy",
            Phase::LocalFirst => "local_first",
            Phase::LocalOnly => "local_only",
        }
    }

    /// Whether the phase only has a meaning with an upstream. Without one
    /// every login is local whatever the phase, so choosing `passthrough` or
    /// `local_first` there is a mistake to point out, not to take silently.
    /// `lazy` is the default, which a local-only provider runs with too.
    pub fn needs_upstream(self) -> bool {
        matches!(self, Phase::Passthrough | Phase::LocalFirst)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSettings {
    /// Signing algorithm of ID and access tokens: `RS256`, `ES256` or
    /// `EdDSA`. RS256 keys are always kept too, because OIDC Discovery §3
    /// requires RS256 to be offered.
    pub signing_alg: crate::store::SigningAlg,
    /// `aud` of access tokens (RFC 9068 §3). Defaults to the issuer.
    pub audience: Option<String>,
    pub access_token_ttl_secs: u64,
    pub id_token_ttl_secs: u64,
    /// Absolute lifetime of a refresh-token family (RFC 9700 §4.14.2).
    pub refresh_token_ttl_secs: u64,
    /// How long a just-rotated refresh token may be presented again by a
    /// client retrying the same request before it counts as reuse.
    pub refresh_reuse_grace_secs: u64,
    /// Authorization codes live at most this long; capped at 60 s.
    pub code_ttl_secs: u64,
    /// Lifetime of a gateway (browser) session.
    pub session_ttl_secs: u64,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            signing_alg: crate::store::SigningAlg::RS256,
            audience: None,
            access_token_ttl_secs: 3600,
            id_token_ttl_secs: 3600,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            refresh_reuse_grace_secs: 10,
            code_ttl_secs: 60,
            session_ttl_secs: 14 * 24 * 3600,
        }
    }
}

/// argon2id parameters; the defaults are OWASP's minimum (m = 19 MiB, t = 2, p = 1).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Threads that may hash at once; defaults to the number of cores.
    pub hashing_threads: Option<usize>,
    /// Shortest password accepted when one is set through Switchyard.
    pub min_length: usize,
    /// Every failed password login lasts at least this long, whatever track
    /// it took, so timing reveals nothing (set above the upstream's latency).
    pub failure_floor_ms: u64,
}

impl Default for PasswordSettings {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            hashing_threads: None,
            min_length: 8,
            failure_floor_ms: 400,
        }
    }
}

/// Failed-login limits (ASVS 6.1.1, 6.3.1). Counters are fixed windows in the
/// session store, so every instance shares them and a locked account frees
/// itself when the window ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleSettings {
    pub account_failures: u64,
    pub account_window_secs: u64,
    pub ip_failures: u64,
    pub ip_window_secs: u64,
    /// Password-reset emails one account may ask for per account window.
    pub reset_account_requests: u64,
    /// Password-reset requests one address may make per IP window.
    pub reset_ip_requests: u64,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            account_failures: 10,
            account_window_secs: 900,
            ip_failures: 100,
            ip_window_secs: 900,
            reset_account_requests: 5,
            reset_ip_requests: 30,
        }
    }
}

/// A client declared in the configuration file; synchronised into the
/// database at start-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    pub client_id: String,
    /// Environment variable that holds the secret; absent for public clients.
    pub client_secret_env: Option<String>,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub name: Option<String>,
    /// Required unless the only grant type is `client_credentials`.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    #[serde(default = "default_grant_types")]
    pub grant_types: Vec<crate::store::GrantType>,
    /// Origins the application's browser code runs on (Auth0's "Allowed Web
    /// Origins"): `web_message` responses and token-endpoint CORS.
    #[serde(default)]
    pub web_origins: Vec<String>,
    /// Scopes beyond the OpenID ones the client may be granted:
    /// `switchyard:admin` or `switchyard:admin:read` for a machine that
    /// calls the admin API with the client credentials grant.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `gateway` (Switchyard signs access tokens) or `upstream` (the
    /// client receives the upstream's access token).
    #[serde(default)]
    pub token_mode: crate::store::TokenMode,
}

/// A confidential client with the default grants and nothing else: the
/// base a registration is written from in code (`..Default::default()`).
impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            client_id: String::new(),
            client_secret_env: None,
            public: false,
            name: None,
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            grant_types: default_grant_types(),
            web_origins: Vec::new(),
            scopes: Vec::new(),
            token_mode: crate::store::TokenMode::default(),
        }
    }
}

impl ClientSettings {
    /// The client this registration describes: the one way a
    /// [`crate::store::Client`] is made, for the file's clients and for
    /// `switchyard clients add` alike.
    pub fn to_client(
        &self,
        secret_hash: Option<String>,
        source: crate::store::ClientSource,
    ) -> crate::store::Client {
        crate::store::Client {
            client_id: self.client_id.clone(),
            name: self.name.clone(),
            secret_hash,
            public: self.public,
            redirect_uris: self.redirect_uris.clone(),
            post_logout_redirect_uris: self.post_logout_redirect_uris.clone(),
            grant_types: self.grant_types.clone(),
            web_origins: self.web_origins.clone(),
            scopes: self.scopes.clone(),
            token_mode: self.token_mode,
            source,
            created_at: crate::store::now(),
        }
    }
}

/// The client id of the dashboard's sign-in: Switchyard's own first-party
/// client, written at every start (never declared in the file).
pub const ADMIN_CLIENT_ID: &str = "switchyard-admin";

/// Where the dashboard's sign-in comes back to: `/admin/callback` on the
/// issuer's origin.
pub fn admin_redirect_uri(settings: &Settings) -> String {
    let origin = url::Url::parse(&settings.issuer)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| settings.issuer_base().to_string());
    format!("{origin}/admin/callback")
}

/// The dashboard's client: public (it is this process, with nothing to
/// keep a secret from), PKCE S256 (required of public clients at
/// `/authorize`), the authorization code grant only, no refresh.
pub fn admin_client(settings: &Settings) -> crate::store::Client {
    ClientSettings {
        client_id: ADMIN_CLIENT_ID.into(),
        public: true,
        name: Some("Switchyard dashboard".into()),
        redirect_uris: vec![admin_redirect_uri(settings)],
        grant_types: vec![crate::store::GrantType::AuthorizationCode],
        ..ClientSettings::default()
    }
    .to_client(None, crate::store::ClientSource::Builtin)
}

/// What a client's grant types require of the rest of its registration:
/// redirect URIs for any grant that starts at `/authorize` (a client with
/// only the client credentials grant never redirects), and a confidential
/// client for the client credentials grant (RFC 6749 §4.4: "MUST only be
/// used by confidential clients").
/// A refusal names the field at fault (`grant_types`, `redirect_uris`).
pub fn check_client_grants(
    grant_types: &[crate::store::GrantType],
    public: bool,
    redirect_uris: &[String],
) -> Result<(), (&'static str, String)> {
    use crate::store::GrantType;
    if public && grant_types.contains(&GrantType::ClientCredentials) {
        return Err((
            "grant_types",
            "a public client cannot use client_credentials".into(),
        ));
    }
    let redirects = grant_types
        .iter()
        .any(|g| *g != GrantType::ClientCredentials);
    if redirects && redirect_uris.is_empty() {
        return Err((
            "redirect_uris",
            "these grant types need at least one redirect URI (only client_credentials needs none)"
                .into(),
        ));
    }
    Ok(())
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`, so a
/// scope has no space, quote or backslash and is printable ASCII; and one
/// in Switchyard's namespace (`switchyard:`) must be one Switchyard knows.
pub fn check_scope_token(scope: &str) -> Result<(), String> {
    let ok = !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
    if !ok {
        return Err(
            "a scope is printable ASCII with no space, quote or backslash (RFC 6749 §3.3)".into(),
        );
    }
    if scope.starts_with("switchyard:") && !crate::store::SWITCHYARD_SCOPES.contains(&scope) {
        return Err(format!(
            "not a Switchyard scope; they are {}",
            crate::store::SWITCHYARD_SCOPES.join(", ")
        ));
    }
    Ok(())
}

pub fn default_grant_types() -> Vec<crate::store::GrantType> {
    vec![
        crate::store::GrantType::AuthorizationCode,
        crate::store::GrantType::RefreshToken,
    ]
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            issuer: DEFAULT_ISSUER.into(),
            listen: "127.0.0.1:8080".parse().expect("static address"),
            database_url: DEFAULT_DATABASE_URL.into(),
            redis_url: None,
            session_prefix: "switchyard:".into(),
            redis_timeout_ms: default_redis_timeout_ms(),
            trusted_proxies: Vec::new(),
            tokens: TokenSettings::default(),
            password: PasswordSettings::default(),
            throttle: ThrottleSettings::default(),
            clients: Vec::new(),
            upstream: None,
            cutover: CutoverSettings::default(),
            email: EmailSettings::default(),
            recovery: RecoverySettings::default(),
            admin: AdminSettings::default(),
            management_api: ManagementApiSettings::default(),
        }
    }
}

/// A network (`10.0.0.0/8`) or a single address (`10.0.0.1`, a /32 or
/// /128) as `trusted_proxies` spells them.
pub fn parse_network(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// What checking `[upstream]` needs from the named provider's definition.
/// Definitions are read by `upstream::provider`, a layer above the plain
/// settings, so whoever checks the settings looks them up and passes them
/// in, and config depends on nothing above it.
#[derive(Debug, Clone)]
pub struct ProviderFacts {
    /// Whether the definition can name the issuer from these settings.
    pub issuer: Result<(), String>,
    /// `None` when the provider has no Management API; otherwise whether
    /// its definition describes the mark-migrated write.
    pub mark_migrated: Option<bool>,
    /// The local changes its definition can write back (`[management.write.*]`).
    pub write_back: Vec<WriteKind>,
}

/// Looks up the provider named by `[upstream]`: its facts, or why it is
/// not a provider.
pub type ProviderLookup<'a> = &'a dyn Fn(&UpstreamSettings) -> Result<ProviderFacts, String>;

/// One problem found by [`Settings::check`], with the key that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Where the settings came from, for the start-up banner.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    Defaults,
}

impl Settings {
    /// Loads defaults, then the file (when given and present), then the
    /// environment. A file named explicitly must exist. Every unknown key
    /// and wrong value is reported, not only the first.
    pub fn load(path: Option<&Path>) -> Result<(Self, Source), anyhow::Error> {
        let (loaded, source) = Self::load_all(path)?;
        match loaded.into_valid() {
            Ok(settings) => Ok((settings, source)),
            Err(problems) => {
                let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
                anyhow::bail!("the configuration has problems:\n  {}", list.join("\n  "))
            }
        }
    }

    /// Like [`Settings::load`], but an unreadable key does not stop the
    /// reading: each is recorded as a [`Problem`] and the rest is read, for
    /// `config check`. Errors only when there is no file to read.
    pub fn load_all(path: Option<&Path>) -> Result<(Loaded, Source), anyhow::Error> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        let source = match path {
            Some(p) => {
                if !p.exists() {
                    anyhow::bail!("configuration file {} does not exist", p.display());
                }
                // figment reads a directory as an empty file, which would
                // quietly run on the defaults instead of the intended file.
                if p.is_dir() {
                    anyhow::bail!(
                        "configuration file {} is a directory; name the TOML file in it",
                        p.display()
                    );
                }
                figment = figment.merge(Toml::file(p));
                Source::File(p.to_path_buf())
            }
            None => Source::Defaults,
        };
        // `SWITCHYARD_TOKENS__SIGNING_ALG` → `tokens.signing_alg`. Only
        // variables that name a settings key are read: others such as
        // SWITCHYARD_CONFIG or SWITCHYARD_LOG are not settings, and
        // `deny_unknown_fields` would refuse them.
        let keys = settings_keys();
        figment = figment.merge(
            Env::prefixed("SWITCHYARD_")
                .filter(move |key| {
                    let top = key
                        .as_str()
                        .split("__")
                        .next()
                        .unwrap_or("")
                        .to_ascii_lowercase();
                    keys.contains(&top)
                })
                .split("__"),
        );
        Ok((extract_all(&figment), source))
    }

    /// Every problem in the settings, each with the key that holds it.
    /// `providers` tells what the `[upstream]` provider's definition says
    /// (`upstream::provider::facts` outside tests).
    pub fn check(&self, providers: ProviderLookup) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| {
            problems.push(Problem {
                key: key.into(),
                message,
            })
        };

        for (i, proxy) in self.trusted_proxies.iter().enumerate() {
            if parse_network(proxy).is_none() {
                problem(
                    &format!("trusted_proxies[{i}]"),
                    format!("{proxy:?} is not a network (10.0.0.0/8, fd00::/8) or an address"),
                );
            }
        }
        match Url::parse(&self.issuer) {
            Ok(url) => {
                if url.scheme() != "https" && !(url.scheme() == "http" && is_loopback_host(&url)) {
                    problem(
                        "issuer",
                        "must use https unless the host is loopback (OIDC Core §2, iss)".into(),
                    );
                }
                if url.query().is_some() || url.fragment().is_some() {
                    problem(
                        "issuer",
                        "must not have a query or fragment (OIDC Discovery §4.3)".into(),
                    );
                }
            }
            Err(e) => problem("issuer", format!("is not a URL: {e}")),
        }
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            problem(
                "database_url",
                "must start with sqlite: or postgres://".into(),
            );
        }
        if let Some(r) = &self.redis_url
            && !(r.starts_with("redis://") || r.starts_with("rediss://"))
        {
            problem("redis_url", "must start with redis:// or rediss://".into());
        }
        if self.redis_timeout_ms == 0 || self.redis_timeout_ms > 60_000 {
            problem(
                "redis_timeout_ms",
                "must be between 1 and 60000 milliseconds".into(),
            );
        }
        if self.tokens.code_ttl_secs == 0 || self.tokens.code_ttl_secs > 60 {
            problem(
                "tokens.code_ttl_secs",
                "must be between 1 and 60 (ASVS 10.4.2)".into(),
            );
        }
        for (key, v) in [
            (
                "tokens.access_token_ttl_secs",
                self.tokens.access_token_ttl_secs,
            ),
            ("tokens.id_token_ttl_secs", self.tokens.id_token_ttl_secs),
            (
                "tokens.refresh_token_ttl_secs",
                self.tokens.refresh_token_ttl_secs,
            ),
            ("tokens.session_ttl_secs", self.tokens.session_ttl_secs),
        ] {
            if v == 0 {
                problem(key, "must be greater than 0".into());
            }
        }
        if self.password.memory_kib < 19 * 1024
            || self.password.iterations < 2
            || self.password.parallelism < 1
        {
            problem("password", "argon2id parameters below OWASP's minimum (memory_kib ≥ 19456, iterations ≥ 2, parallelism ≥ 1)".into());
        }
        if self.throttle.account_failures == 0 || self.throttle.ip_failures == 0 {
            problem("throttle", "failure limits must be greater than 0".into());
        }
        if let Some(up) = &self.upstream {
            let facts = providers(up);
            match &facts {
                Ok(facts) => {
                    if let Err(m) = &facts.issuer {
                        problem("upstream.issuer", m.clone());
                    }
                }
                Err(m) => problem("upstream.provider", m.clone()),
            }
            if let Some(var) = &up.client_secret_env
                && std::env::var(var).is_err()
            {
                problem(
                    "upstream.client_secret_env",
                    format!("environment variable {var} is not set"),
                );
            }
            let m = &up.management;
            if m.mark_migrated
                && let Ok(facts) = &facts
            {
                let why = match facts.mark_migrated {
                    Some(true) => None,
                    Some(false) => Some("describes no [management.mark_migrated] write"),
                    None => Some("has no Management API to write to"),
                };
                if let Some(why) = why {
                    problem(
                        "upstream.management.mark_migrated",
                        format!("provider {} {why}", up.provider),
                    );
                }
            }
            if m.mark_migrated_attribute
                .as_ref()
                .is_some_and(|a| a.trim().is_empty())
            {
                problem(
                    "upstream.management.mark_migrated_attribute",
                    "must not be empty".into(),
                );
            }
            if let Ok(facts) = &facts {
                for kind in m.write_back.0.keys() {
                    if !facts.write_back.contains(kind) {
                        problem(
                            "upstream.management.write_back",
                            format!(
                                "provider {} describes no {} write ([management.write.*])",
                                up.provider,
                                kind.name()
                            ),
                        );
                    }
                }
            }
            if m.write_back.mode(WriteKind::Password).is_some()
                && std::env::var(&up.token_keys_env).map_or(true, |v| v.trim().is_empty())
            {
                problem(
                    "upstream.management.write_back",
                    format!(
                        "passwords written back wait in the outbox sealed with keys from ${}, which is not set",
                        up.token_keys_env
                    ),
                );
            }
            if m.outbox_max_attempts == Some(0) {
                problem(
                    "upstream.management.outbox_max_attempts",
                    "must be at least 1".into(),
                );
            }
            for (key, v) in [
                ("upstream.management.outbox_retry_secs", m.outbox_retry_secs),
                ("upstream.management.outbox_poll_secs", m.outbox_poll_secs),
            ] {
                if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                    problem(key, "must be a positive number of seconds".into());
                }
            }
            if up.timeout_secs == 0 || up.timeout_secs > 120 {
                problem("upstream.timeout_secs", "must be between 1 and 120".into());
            }
            if self.redis_url.is_some() && std::env::var(&up.token_keys_env).is_err() {
                problem(
                    "upstream.token_keys_env",
                    format!(
                        "with Redis, upstream tokens are sealed with keys from ${}, which is not set",
                        up.token_keys_env
                    ),
                );
            }
        }
        if self.upstream.is_none() {
            let why = |p: Phase| {
                format!(
                    "{} routes logins to the upstream, and no [upstream] is configured",
                    p.name()
                )
            };
            if self.cutover.phase.needs_upstream() {
                problem("cutover.phase", why(self.cutover.phase));
            }
            for (client, p) in &self.cutover.clients {
                if p.needs_upstream() {
                    problem(&format!("cutover.clients.{client}"), why(*p));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.clients.iter().enumerate() {
            let key = |field: &str| format!("clients[{i}].{field}");
            if !seen.insert(c.client_id.clone()) {
                problem(
                    &key("client_id"),
                    format!("{:?} is declared twice", c.client_id),
                );
            }
            if let Err(m) = crate::store::validate_client_id(&c.client_id) {
                problem(&key("client_id"), m);
            }
            if c.client_id == ADMIN_CLIENT_ID {
                problem(
                    &key("client_id"),
                    format!("{ADMIN_CLIENT_ID:?} is the dashboard's built-in client"),
                );
            }
            match (&c.client_secret_env, c.public) {
                (Some(_), true) => problem(
                    &key("client_secret_env"),
                    "a public client has no secret".into(),
                ),
                (None, false) => problem(
                    &key("client_secret_env"),
                    "a confidential client needs one (or set public = true)".into(),
                ),
                (Some(var), false) => match std::env::var(var) {
                    Ok(s) => {
                        if let Err(m) = crate::store::validate_client_secret(&s) {
                            problem(&key("client_secret_env"), format!("${var}: {m}"));
                        }
                    }
                    Err(_) => problem(
                        &key("client_secret_env"),
                        format!("environment variable {var} is not set"),
                    ),
                },
                (None, true) => {}
            }
            // Told at `grant_types`, what asks for redirect URIs: a
            // `redirect_uris` that did not read has its own problem already.
            if let Err((_, m)) = check_client_grants(&c.grant_types, c.public, &c.redirect_uris) {
                problem(&key("grant_types"), m);
            }
            for (j, scope) in c.scopes.iter().enumerate() {
                if let Err(m) = check_scope_token(scope) {
                    problem(&format!("clients[{i}].scopes[{j}]"), m);
                }
            }
            for (j, uri) in c.redirect_uris.iter().enumerate() {
                if let Err(m) = crate::store::validate_registration(uri) {
                    problem(&format!("clients[{i}].redirect_uris[{j}]"), m);
                }
            }
            for (j, uri) in c.post_logout_redirect_uris.iter().enumerate() {
                if let Err(m) = crate::store::validate_registration(uri) {
                    problem(&format!("clients[{i}].post_logout_redirect_uris[{j}]"), m);
                }
            }
            for (j, origin) in c.web_origins.iter().enumerate() {
                if let Err(m) = crate::store::validate_web_origin(origin) {
                    problem(&format!("clients[{i}].web_origins[{j}]"), m);
                }
            }
        }
        problems
    }

    /// The issuer with no trailing slash, for building endpoint URLs.
    pub fn issuer_base(&self) -> &str {
        self.issuer.trim_end_matches('/')
    }

    pub fn is_https(&self) -> bool {
        self.issuer.starts_with("https://")
    }

    pub fn access_token_audience(&self) -> String {
        self.tokens
            .audience
            .clone()
            .unwrap_or_else(|| self.issuer.clone())
    }
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The outcome of reading the settings.
#[derive(Debug)]
pub struct Loaded {
    /// Without read problems, the settings. With them, the settings read
    /// with the bad keys at their defaults (or the table that holds them
    /// left out), when that much could be read, so that the other keys can
    /// still be checked.
    settings: Option<Settings>,
    read_problems: Vec<Problem>,
    /// Array elements left out, by the array's path in the file.
    removed: Vec<(Vec<String>, usize)>,
}

impl Loaded {
    /// The settings read, if any could be (see the field).
    pub fn settings(&self) -> Option<&Settings> {
        self.settings.as_ref()
    }
    /// The settings, or every key that could not be read.
    pub fn into_valid(self) -> Result<Settings, Vec<Problem>> {
        match self.settings {
            Some(s) if self.read_problems.is_empty() => Ok(s),
            _ => Err(self.read_problems),
        }
    }

    /// Every problem: the keys that could not be read, then what
    /// [`Settings::check`] finds in the rest, at the file's indices.
    pub fn problems(&self, providers: ProviderLookup) -> Vec<Problem> {
        let mut problems = self.read_problems.clone();
        if let Some(settings) = &self.settings {
            problems.extend(settings.check(providers).into_iter().map(|p| Problem {
                key: key_of(&original_path(&path_of(&p.key), &self.removed)),
                message: p.message,
            }));
        }
        problems
    }
}

/// Deserialises the merged settings, and at each error records it, takes
/// the offending key out (back to its default when it has one) and tries
/// again: serde stops at the first error, and an operator fixing a file
/// wants every problem at once.
pub(crate) fn extract_all(figment: &Figment) -> Loaded {
    use figment::value::{Dict, Tag, Value};

    let mut loaded = Loaded {
        settings: None,
        read_problems: Vec::new(),
        removed: Vec::new(),
    };
    let first = match figment.extract::<Settings>() {
        Ok(settings) => {
            loaded.settings = Some(settings);
            return loaded;
        }
        Err(e) => e,
    };
    let mut root = match figment.extract::<Dict>() {
        Ok(d) => Value::Dict(Tag::Default, d),
        // Not even a table: nothing to go on.
        Err(_) => {
            loaded.read_problems = first.into_iter().map(|e| problem_of(&e, &e.path)).collect();
            return loaded;
        }
    };
    let defaults = Figment::from(Serialized::defaults(Settings::default()))
        .extract::<Dict>()
        .map(|d| Value::Dict(Tag::Default, d))
        .unwrap_or(Value::Dict(Tag::Default, Dict::new()));
    // Each round takes a key out, so this ends; the bound is a backstop.
    for _ in 0..1000 {
        let errors = match Figment::from(Serialized::defaults(&root)).extract::<Settings>() {
            Ok(settings) => {
                loaded.settings = Some(settings);
                return loaded;
            }
            Err(e) => e,
        };
        for e in errors {
            let original = original_path(&e.path, &loaded.removed);
            let problem = problem_of(&e, &original);
            // A required key taken out for its wrong value comes back as
            // missing: it is reported once.
            if !loaded.read_problems.iter().any(|p| p.key == problem.key) {
                loaded.read_problems.push(problem);
            }
            // The error's path is the bad key, or for a missing field the
            // table that lacks it, which then goes as a whole.
            if e.path.is_empty() || !take_out(&mut root, &defaults, &e.path) {
                return loaded;
            }
            if let (Some((index, array)), Ok(_)) = (
                original.split_last(),
                e.path[e.path.len() - 1].parse::<usize>(),
            ) && let Ok(index) = index.parse()
            {
                loaded.removed.push((array.to_vec(), index));
            }
        }
    }
    loaded
}

/// Puts the default back at `path`, or removes the key (or array element)
/// when it has none; false when there is nothing there.
fn take_out(
    root: &mut figment::value::Value,
    defaults: &figment::value::Value,
    path: &[String],
) -> bool {
    use figment::value::Value;
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut default = Some(defaults);
    let mut here = root;
    for key in parents {
        default = default.and_then(|d| match d {
            Value::Dict(_, d) => d.get(key),
            _ => None,
        });
        here = match here {
            Value::Dict(_, d) => match d.get_mut(key) {
                Some(v) => v,
                None => return false,
            },
            Value::Array(_, a) => match key.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    let default = default.and_then(|d| match d {
        Value::Dict(_, d) => d.get(last).cloned(),
        _ => None,
    });
    match here {
        Value::Dict(_, d) => match default {
            Some(v) => d.insert(last.clone(), v).is_some(),
            None => d.remove(last).is_some(),
        },
        Value::Array(_, a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// `path` (as deserialised, after removals) in the indices of the file.
fn original_path(path: &[String], removed: &[(Vec<String>, usize)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(path.len());
    for segment in path {
        let segment = match segment.parse::<usize>() {
            Ok(mut index) => {
                let mut gone: Vec<usize> = removed
                    .iter()
                    .filter(|(array, _)| *array == out)
                    .map(|(_, i)| *i)
                    .collect();
                gone.sort_unstable();
                for g in gone {
                    if g <= index {
                        index += 1;
                    }
                }
                index.to_string()
            }
            Err(_) => segment.clone(),
        };
        out.push(segment);
    }
    out
}

/// `["clients", "0", "redirect_uris"]` → `clients[0].redirect_uris`, the
/// form [`Settings::check`] names keys in.
fn key_of(path: &[String]) -> String {
    let mut key = String::new();
    for segment in path {
        if segment.parse::<usize>().is_ok() {
            key.push_str(&format!("[{segment}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(segment);
        }
    }
    key
}

/// The inverse of [`key_of`].
fn path_of(key: &str) -> Vec<String> {
    key.split(['.', '['])
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches(']').to_string())
        .collect()
}

/// One deserialisation error as a [`Problem`]: the key as written in the
/// file (`clients[0].redirect_uris`), and the variable when the value came
/// from the environment.
fn problem_of(e: &figment::Error, path: &[String]) -> Problem {
    let mut key = key_of(path);
    let mut message = e.kind.to_string();
    if let figment::error::Kind::MissingField(field) = &e.kind {
        if !key.is_empty() {
            key.push('.');
        }
        key.push_str(field);
        message = "is required".into();
    }
    if !path.is_empty() {
        let var = format!("SWITCHYARD_{}", path.join("__").to_ascii_uppercase());
        if std::env::var_os(&var).is_some() {
            message.push_str(&format!(" (from ${var})"));
        }
    }
    if key.is_empty() {
        key = "(file)".into();
    }
    Problem { key, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_embedded_mode_and_pass_the_check() {
        let s = Settings::default();
        assert_eq!(s.database_url, DEFAULT_DATABASE_URL);
        assert!(s.redis_url.is_none());
        assert_eq!(s.check(&crate::upstream::provider::facts), vec![]);
    }

    #[test]
    fn https_is_required_unless_the_issuer_is_loopback() {
        let mut s = Settings {
            issuer: "http://login.example.com/".into(),
            ..Settings::default()
        };
        assert_eq!(s.check(&crate::upstream::provider::facts)[0].key, "issuer");
        s.issuer = "https://login.example.com/".into();
        assert!(s.check(&crate::upstream::provider::facts).is_empty());
        s.issuer = "http://localhost:9000".into();
        assert!(s.check(&crate::upstream::provider::facts).is_empty());
    }

    #[test]
    fn mark_migrated_needs_a_provider_that_describes_the_write() {
        let with = |provider: &str| {
            let mut up = UpstreamSettings::for_provider(provider);
            up.issuer = Some("https://upstream.example.com/".into());
            up.management.mark_migrated = true;
            let s = Settings {
                upstream: Some(up),
                ..Settings::default()
            };
            s.check(&crate::upstream::provider::facts)
                .into_iter()
                .filter(|p| p.key.starts_with("upstream.management"))
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
        };
        for provider in ["auth0", "okta", "cognito", "keycloak"] {
            assert_eq!(with(provider), Vec::<String>::new(), "{provider}");
        }
        assert_eq!(
            with("oidc"),
            vec![
                "upstream.management.mark_migrated: provider oidc has no Management API to write to"
            ]
        );
    }

    #[test]
    fn check_names_the_key_of_each_problem() {
        let mut s = Settings::default();
        s.tokens.code_ttl_secs = 600;
        s.clients.push(ClientSettings {
            client_id: "web".into(),
            client_secret_env: None,
            public: false,
            name: None,
            redirect_uris: vec!["https://app.example.com/cb#frag".into()],
            post_logout_redirect_uris: vec![],
            web_origins: vec![],
            scopes: vec![],
            grant_types: default_grant_types(),
            token_mode: Default::default(),
        });
        let keys: Vec<_> = s
            .check(&crate::upstream::provider::facts)
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert!(keys.contains(&"tokens.code_ttl_secs".to_string()));
        assert!(keys.contains(&"clients[0].client_secret_env".to_string()));
        assert!(keys.contains(&"clients[0].redirect_uris[0]".to_string()));
    }
}
