//! The vendors' user-listing Management APIs, as a backfill pages through
//! them: Auth0's `/api/v2/users` (with its 1,000-result cap) and its export
//! jobs, Okta's `/api/v1/users` (cursor only in the `Link` header), Cognito's
//! SigV4-signed `ListUsers`, and Keycloak's `/admin/realms/{realm}/users`;
//! Auth0's one-user reads (`GET /api/v2/users/{id}`,
//! `/api/v2/users-by-email`); the writes that mark a user migrated: Auth0's
//! `PATCH /api/v2/users/{id}` (metadata merged at its first level), Okta's
//! partial `POST /api/v1/users/{id}` (only properties of its profile
//! schema), Cognito's `AdminUpdateUserAttributes` (only attributes of the
//! pool's schema) and Keycloak's `GET`/`PUT
//! /admin/realms/{realm}/users/{id}` (the PUT replaces attributes and
//! profile fields); and Auth0's `POST /api/v2/users` (a user who can then
//! log in) and `DELETE /api/v2/users/{id}`. Each accepted write is kept for
//! [`FakeUpstream::management_writes`].
//!
//! The write-back's writes land on the same user: a password (Auth0
//! `password`, Okta `credentials.password.value`, Cognito
//! `AdminSetUserPassword`, Keycloak `reset-password`), checked against
//! [`FakeUpstream::set_password_policy`], is what the fake's password login
//! takes from then on; blocking (Auth0 `blocked`, Okta's lifecycle
//! `suspend`/`unsuspend`, Cognito `AdminDisableUser`/`AdminEnableUser`,
//! Keycloak `enabled`) stops that login.
//!
//! Every Management request passes one gate ([`gate`]): it is counted under
//! its [`Api::name`], answers an injected fault ([`FakeUpstream::fail_next`],
//! [`FakeUpstream::rate_limit_next`]) if one is queued, then takes a token
//! from the bucket set by [`FakeUpstream::set_management_rate_limit`].
//!
//! Users live in the fake's one user list; their vendor records are built on
//! demand from [`FakeUser`] plus [`UserMeta`] (timestamps, seed number), or,
//! once [`FakeUpstream::update_management_user`] has patched them, stored.
//! Listings walk orderings that are sorted once per change and cached, so a
//! page costs its own size (plus, for filtered queries, the scan to fill it).

// The checks here return the vendor's finished answer as their error: a
// `Response` is large, but boxing it in test support would only add noise.
#![allow(clippy::result_large_err)]

use std::io::Write;
use std::time::Instant;

use axum::extract::{Path, RawQuery};
use flate2::Compression;
use flate2::write::GzEncoder;

use super::*;

mod auth0;
pub(super) mod cognito;
mod keycloak;
mod okta;

use auth0::*;
use cognito::*;
use keycloak::*;
use okta::*;

/// The Okta API token (`Authorization: SSWS <token>`) the fake accepts.
pub const OKTA_API_TOKEN: &str = "00FakeOktaApiToken_0123456789abcdefABCDEF";
/// The AWS access key the fake Cognito accepts on SigV4-signed requests.
pub const AWS_ACCESS_KEY_ID: &str = "AKIAFAKEUPSTREAM7EXA";
/// The secret of [`AWS_ACCESS_KEY_ID`].
pub const AWS_SECRET_ACCESS_KEY: &str = "fAkE/Secret+AccessKey/K7MDENGbPxRfiCYEXAMPLE";
/// The region of [`COGNITO_POOL_ID`], the SigV4 credential scope's region.
pub const COGNITO_REGION: &str = "eu-west-1";
/// The SigV4 service name of Cognito user pools.
pub const COGNITO_SERVICE: &str = "cognito-idp";
/// The `X-Amz-Target` of Cognito's `ListUsers`.
pub const COGNITO_LIST_USERS: &str = "AWSCognitoIdentityProviderService.ListUsers";
/// The `X-Amz-Target` of Cognito's `AdminUpdateUserAttributes`.
pub const COGNITO_ADMIN_UPDATE_USER_ATTRIBUTES: &str =
    "AWSCognitoIdentityProviderService.AdminUpdateUserAttributes";
/// The `X-Amz-Target` of Cognito's `AdminSetUserPassword`.
pub const COGNITO_ADMIN_SET_USER_PASSWORD: &str =
    "AWSCognitoIdentityProviderService.AdminSetUserPassword";
/// The `X-Amz-Target` of Cognito's `AdminDisableUser`.
pub const COGNITO_ADMIN_DISABLE_USER: &str = "AWSCognitoIdentityProviderService.AdminDisableUser";
/// The `X-Amz-Target` of Cognito's `AdminEnableUser`.
pub const COGNITO_ADMIN_ENABLE_USER: &str = "AWSCognitoIdentityProviderService.AdminEnableUser";
/// The custom attributes the fake Okta's user profile schema declares (the
/// operator added them in the Profile Editor); others are refused.
pub const OKTA_CUSTOM_PROFILE_ATTRIBUTES: [&str; 1] = ["switchyardMigratedAt"];
/// The custom attributes the fake Cognito pool declares beyond those its
/// users already carry.
pub const COGNITO_CUSTOM_ATTRIBUTES: [&str; 1] = ["custom:migrated_at"];

/// One write a Management API accepted: the endpoint's
/// [`FakeUpstream::calls`] name, the user's id and the request body.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagementWrite {
    pub endpoint: String,
    pub user_id: String,
    pub body: Value,
}
/// The id of the fake Auth0 tenant's one database connection
/// ([`AUTH0_DEFAULT_REALM`]), for export jobs' `connection_id`.
pub const AUTH0_CONNECTION_ID: &str = "con_FakeUpstream0001";
/// The password every user from [`FakeUpstream::seed_users`] shares.
pub const SEEDED_USER_PASSWORD: &str = "seeded user password";

/// How an Auth0 export job progresses: `GET /api/v2/jobs/{id}` answers
/// `pending` for the first `pending_polls` polls, `processing` for the next
/// `processing_polls`, then `completed` with a `location` that stops working
/// `link_ttl` after completion (`Duration::ZERO`: expired at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportTiming {
    pub pending_polls: u32,
    pub processing_polls: u32,
    pub link_ttl: Duration,
}

impl Default for ExportTiming {
    fn default() -> Self {
        Self {
            pending_polls: 1,
            processing_polls: 2,
            link_ttl: Duration::from_secs(60),
        }
    }
}

/// What the Management APIs know of a user beyond [`FakeUser`].
#[derive(Debug, Clone)]
pub(super) struct UserMeta {
    created_ms: i64,
    updated_ms: i64,
    last_login_ms: Option<i64>,
    logins_count: u32,
    /// The seed number for users from `seed_users` (picks their status and
    /// history); `None` for users from `add_user`.
    seq: Option<u64>,
    /// The vendor record once `update_management_user` has patched it.
    record: Option<Arc<Value>>,
}

impl UserMeta {
    pub(super) fn now() -> Self {
        let t = now_ms();
        Self {
            created_ms: t,
            updated_ms: t,
            last_login_ms: None,
            logins_count: 0,
            seq: None,
            record: None,
        }
    }
}

/// Guarded by [`Shared::state`] with the rest: the Management APIs' tokens,
/// limits, queued faults, export jobs and cached orderings.
#[derive(Default)]
pub(super) struct Management {
    /// Users seeded so far (numbers `user{i}@example.com`).
    seeded: u64,
    /// Orderings of `users` by key, dropped on any change to `users`.
    orders: HashMap<Order, Arc<Vec<u32>>>,
    /// Bearer tokens the Management APIs take (Auth0 `api/v2` audience,
    /// Keycloak service accounts), with their expiry (epoch seconds).
    tokens: HashMap<String, i64>,
    bucket: Option<Bucket>,
    /// Queued 5xx answers, by endpoint name.
    failures: HashMap<String, usize>,
    /// Queued 429 answers (count, `Retry-After`), by endpoint name.
    throttles: HashMap<String, (usize, u64)>,
    throttled: usize,
    jobs: HashMap<String, Job>,
    export_timing: ExportTiming,
    /// Writes accepted, in order.
    writes: Vec<ManagementWrite>,
    /// The password policy's minimum length, for passwords written through
    /// the Management APIs ([`FakeUpstream::set_password_policy`]).
    password_min_length: Option<usize>,
}

impl Management {
    pub(super) fn invalidate(&mut self) {
        self.orders.clear();
    }
}

/// A token bucket: `burst` tokens, refilled at `per_second`.
struct Bucket {
    per_second: f64,
    burst: u32,
    tokens: f64,
    last: Instant,
}

/// The bucket after one request: what the rate-limit headers say.
#[derive(Debug, Clone, Copy)]
struct RateInfo {
    limit: u32,
    remaining: u32,
    /// Epoch seconds when the bucket is full again.
    reset: i64,
}

impl Bucket {
    fn refill(&mut self) {
        let t = Instant::now();
        let elapsed = t.duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(f64::from(self.burst));
        self.last = t;
    }

    fn info(&self) -> RateInfo {
        let missing = f64::from(self.burst) - self.tokens;
        let reset = now_ms() as f64 / 1000.0 + missing / self.per_second;
        RateInfo {
            limit: self.burst,
            remaining: self.tokens.max(0.0).floor() as u32,
            reset: reset.ceil() as i64,
        }
    }

    /// Takes a token, or says how many seconds until one is there.
    fn take(&mut self) -> Result<RateInfo, (RateInfo, u64)> {
        self.refill();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(self.info())
        } else {
            let wait = ((1.0 - self.tokens) / self.per_second).ceil().max(1.0) as u64;
            Err((self.info(), wait))
        }
    }
}

struct Job {
    id: String,
    created_ms: i64,
    format: String,
    fields: Option<Vec<(String, Option<String>)>>,
    connection_id: Option<String>,
    limit: Option<usize>,
    polls: u32,
    /// Set on the poll that completes the job.
    file: Option<Arc<Vec<u8>>>,
    location: Option<String>,
    expires_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Order {
    Id,
    Created,
    Updated,
    Email,
    Username,
}

/// One Management endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Users,
    UsersExport,
    Job,
    ExportDownload,
    OktaUsers,
    ListUsers,
    AdminUsers,
    AdminUsersCount,
    PatchUser,
    OktaUpdateUser,
    AdminUser,
    AdminUpdateUserAttributes,
    OktaLifecycle,
    AdminResetPassword,
    AdminSetUserPassword,
    AdminDisableUser,
    AdminEnableUser,
    GetUser,
    UsersByEmail,
    CreateUser,
    DeleteUser,
}

impl Api {
    /// The name [`FakeUpstream::calls`], `fail_next` and `rate_limit_next`
    /// know it by.
    fn name(self) -> &'static str {
        match self {
            Api::Users => "users",
            Api::UsersExport => "users_export",
            Api::Job => "job",
            Api::ExportDownload => "export_download",
            Api::OktaUsers => "okta_users",
            Api::ListUsers => "list_users",
            Api::AdminUsers => "admin_users",
            Api::AdminUsersCount => "admin_users_count",
            Api::PatchUser => "patch_user",
            Api::OktaUpdateUser => "okta_update_user",
            Api::AdminUser => "admin_user",
            Api::AdminUpdateUserAttributes => "admin_update_user_attributes",
            Api::OktaLifecycle => "okta_lifecycle",
            Api::AdminResetPassword => "admin_reset_password",
            Api::AdminSetUserPassword => "admin_set_user_password",
            Api::AdminDisableUser => "admin_disable_user",
            Api::AdminEnableUser => "admin_enable_user",
            Api::GetUser => "get_user",
            Api::UsersByEmail => "users_by_email",
            Api::CreateUser => "create_user",
            Api::DeleteUser => "delete_user",
        }
    }
}

impl FakeUpstream {
    /// A password policy for passwords written through the Management APIs
    /// (Auth0 `PATCH users`, Okta credentials, Cognito
    /// `AdminSetUserPassword`, Keycloak `reset-password`): shorter than
    /// `min_length` is refused with the vendor's policy error.
    pub fn set_password_policy(&self, min_length: usize) {
        self.shared.lock().mgmt.password_min_length = Some(min_length);
    }

    /// Whether the user is blocked (Auth0 `blocked`, Okta `SUSPENDED`,
    /// Cognito disabled, Keycloak not enabled); `None` for no such user.
    pub fn is_blocked(&self, id: &str) -> Option<bool> {
        let state = self.shared.lock();
        state
            .users
            .iter()
            .find(|u| u.user.sub == id)
            .map(|u| u.user.blocked)
    }

    /// A token bucket over every Management API request (the export
    /// download aside, which is a storage URL): `burst` tokens refilled at
    /// `per_second`. Auth0 and Okta answers then carry `limit` = `burst`,
    /// `remaining` = whole tokens left after the request, `reset` = epoch
    /// seconds when the bucket is full again; an empty bucket answers 429
    /// (Cognito: `TooManyRequestsException`, 400) with `Retry-After`.
    pub fn set_management_rate_limit(&self, per_second: f64, burst: u32) {
        assert!(per_second > 0.0, "a positive refill rate");
        self.shared.lock().mgmt.bucket = Some(Bucket {
            per_second,
            burst,
            tokens: f64::from(burst),
            last: Instant::now(),
        });
    }

    /// The next `n` requests to the Management endpoint `endpoint` (a
    /// [`FakeUpstream::calls`] name: `users`, `users_export`, `job`,
    /// `export_download`, `okta_users`, `list_users`, `admin_users`,
    /// `admin_users_count`, Auth0's `get_user` and `users_by_email`, and the
    /// writes `patch_user`, `create_user`, `delete_user` (Auth0),
    /// `okta_update_user`, `admin_user` (Keycloak's GET and PUT of one user),
    /// `admin_update_user_attributes` (Cognito)) answer the vendor's 5xx.
    pub fn fail_next(&self, endpoint: &str, n: usize) {
        self.shared
            .lock()
            .mgmt
            .failures
            .insert(endpoint.to_string(), n);
    }

    /// The next `n` requests to `endpoint` answer the vendor's 429 with
    /// `Retry-After: retry_after_secs` (Cognito: `TooManyRequestsException`).
    pub fn rate_limit_next(&self, endpoint: &str, n: usize, retry_after_secs: u64) {
        self.shared
            .lock()
            .mgmt
            .throttles
            .insert(endpoint.to_string(), (n, retry_after_secs));
    }

    /// How many Management requests were throttled (bucket or
    /// `rate_limit_next`), whatever the status code the vendor uses.
    pub fn management_429s(&self) -> usize {
        self.shared.lock().mgmt.throttled
    }

    /// The writes the Management APIs accepted, in order.
    pub fn management_writes(&self) -> Vec<ManagementWrite> {
        self.shared.lock().mgmt.writes.clone()
    }

    /// How Auth0 export jobs progress from now on.
    pub fn set_export_timing(&self, timing: ExportTiming) {
        self.shared.lock().mgmt.export_timing = timing;
    }

    /// The `audience` of Auth0's Management API: `{issuer}api/v2/`.
    pub fn management_audience(&self) -> String {
        format!("{}api/v2/", self.issuer())
    }

    /// Adds `n` users quickly and returns their `sub`s: emails
    /// `user{i}@example.com` (numbering continues across calls and skips
    /// emails already taken), names, `app_metadata` (`plan`, `roles`) and
    /// `user_metadata` (`locale`), created at distinct instants over the
    /// past two years and updated some time after. They share
    /// [`SEEDED_USER_PASSWORD`]. For Okta, one in forty is `DEPROVISIONED`
    /// and one in forty `STAGED`; for Cognito the `Username` is the email.
    pub fn seed_users(&self, n: usize) -> Vec<String> {
        const FIRST: [&str; 12] = [
            "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia",
            "Tim", "Margaret", "Dennis",
        ];
        const LAST: [&str; 12] = [
            "Lovelace",
            "Hopper",
            "Turing",
            "Dijkstra",
            "Liskov",
            "Knuth",
            "Allen",
            "Thompson",
            "Perlman",
            "Berners-Lee",
            "Hamilton",
            "Ritchie",
        ];
        const PLANS: [&str; 3] = ["free", "pro", "team"];
        const LOCALES: [&str; 3] = ["en", "fr", "de"];
        // Two years, one slot per seed number: distinct, increasing
        // creation instants for the first 100,000 seeds, interleaved after.
        const SPAN_MS: i64 = 730 * 86_400_000;
        const SLOTS: u64 = 100_000;
        let now = now_ms();
        let start = now - SPAN_MS;
        let mut state = self.shared.lock();
        let mut emails: HashSet<String> = state
            .users
            .iter()
            .map(|u| u.user.email.to_lowercase())
            .collect();
        let mut subs: HashSet<String> = state.users.iter().map(|u| u.user.sub.clone()).collect();
        let mut out = Vec::with_capacity(n);
        state.users.reserve(n);
        while out.len() < n {
            let seq = state.mgmt.seeded;
            state.mgmt.seeded += 1;
            let email = format!("user{seq}@example.com");
            let sub = self
                .flavor
                .sample_sub(0x4000_0000u32.wrapping_add(seq as u32));
            if emails.contains(&email) || subs.contains(&sub) {
                continue;
            }
            let first = FIRST[(seq % 12) as usize];
            let last = LAST[(seq / 12 % 12) as usize];
            let slot = (seq % SLOTS) as i64;
            let lap = (seq / SLOTS) as i64;
            let created_ms = start + slot * (SPAN_MS / SLOTS as i64) + lap * 7 + (seq % 997) as i64;
            // Updated somewhere between creation and now; the seed number in
            // the milliseconds keeps the instants apart.
            let age = now - created_ms;
            let fraction = (seq.wrapping_mul(2_654_435_761) % 1_000) as i64;
            let updated_ms =
                (created_ms + age / 1_000 * fraction) / 1_000 * 1_000 + (seq % 1_000) as i64;
            let updated_ms = updated_ms.clamp(created_ms, now);
            let mut roles = vec!["user"];
            if seq.is_multiple_of(10) {
                roles.push("admin");
            }
            let user = FakeUser {
                sub: sub.clone(),
                email: email.clone(),
                password: SEEDED_USER_PASSWORD.into(),
                name: Some(format!("{first} {last}")),
                nickname: Some(format!("user{seq}")),
                picture: Some(format!(
                    "https://s.gravatar.com/avatar/{}?s=480&r=pg&d=https%3A%2F%2Fcdn.auth0.com%2Favatars%2Fus.png",
                    hex(
                        &aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, email.as_bytes())
                            .as_ref()[..16]
                    )
                )),
                email_verified: seq % 7 != 3,
                app_metadata: json!({"plan": PLANS[(seq % 3) as usize], "roles": roles}),
                user_metadata: json!({"locale": LOCALES[(seq / 3 % 3) as usize]}),
                blocked: false,
                mfa_required: false,
            };
            let never_logged_in = seq % 5 == 4;
            state.users.push(StoredUser {
                user,
                updated_at: updated_ms.div_euclid(1000),
                meta: UserMeta {
                    created_ms,
                    updated_ms,
                    last_login_ms: (!never_logged_in).then_some(updated_ms),
                    logins_count: if never_logged_in {
                        0
                    } else {
                        (seq % 40) as u32 + 1
                    },
                    seq: Some(seq),
                    record: None,
                },
            });
            emails.insert(email);
            subs.insert(sub.clone());
            out.push(sub);
        }
        state.mgmt.invalidate();
        out
    }

    /// The user's record exactly as the vendor's Management API lists it
    /// (Keycloak: the full representation, `attributes` included).
    pub fn management_user(&self, id: &str) -> Option<Value> {
        let state = self.shared.lock();
        let stored = state.users.iter().find(|u| u.user.sub == id)?;
        Some(record(&self.shared, &state, stored, true))
    }

    /// The record of the first user with this email (any case), exactly as
    /// the vendor's Management API lists it; `None` when there is none.
    pub fn management_user_by_email(&self, email: &str) -> Option<Value> {
        let state = self.shared.lock();
        let stored = state
            .users
            .iter()
            .find(|u| u.user.email.eq_ignore_ascii_case(email.trim()))?;
        Some(record(&self.shared, &state, stored, true))
    }

    /// Merges `patch` into the vendor record (RFC 7396 JSON merge patch;
    /// for Cognito an object of attribute names to values, `null` removing
    /// one) and bumps its last-modified time. A changed email also changes
    /// the login.
    pub fn update_management_user(&self, id: &str, patch: Value) {
        let mut state = self.shared.lock();
        let Some(pos) = state.users.iter().position(|u| u.user.sub == id) else {
            panic!("no user {id}");
        };
        let mut rec = record(&self.shared, &state, &state.users[pos], true);
        match self.flavor {
            Flavor::Cognito => {
                let attrs = rec["Attributes"].as_array_mut().expect("attributes");
                for (name, value) in patch.as_object().into_iter().flatten() {
                    attrs.retain(|a| a["Name"] != *name);
                    if let Some(v) = value.as_str() {
                        attrs.push(json!({"Name": name, "Value": v}));
                    }
                }
            }
            _ => merge_patch(&mut rec, &patch),
        }
        commit_record(self.flavor, &mut state, pos, rec);
    }

    /// Deletes the user: gone from logins and listings alike.
    pub fn remove_user(&self, id: &str) {
        let mut state = self.shared.lock();
        state.users.retain(|u| u.user.sub != id);
        state.mgmt.invalidate();
    }

    /// How many users the upstream holds (every status).
    pub fn user_count(&self) -> usize {
        self.shared.lock().users.len()
    }
}

/// Stores `rec` as the user's vendor record, as a write through the API
/// leaves it: its last-modified time moves on, and a changed email changes
/// the login.
fn commit_record(flavor: Flavor, state: &mut UpstreamState, pos: usize, mut rec: Value) {
    let t = now_ms().max(state.users[pos].meta.updated_ms + 1);
    let email = match flavor {
        Flavor::Cognito => {
            rec["UserLastModifiedDate"] = json!(t as f64 / 1000.0);
            rec["Attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["Name"] == "email")
                .and_then(|a| a["Value"].as_str())
                .map(String::from)
        }
        Flavor::Okta => {
            rec["lastUpdated"] = json!(iso_ms(t));
            rec["profile"]["email"].as_str().map(String::from)
        }
        Flavor::Auth0 => {
            rec["updated_at"] = json!(iso_ms(t));
            rec["email"].as_str().map(String::from)
        }
        _ => rec["email"].as_str().map(String::from),
    };
    let stored = &mut state.users[pos];
    if let Some(email) = email {
        stored.user.email = email;
    }
    stored.meta.updated_ms = t;
    stored.updated_at = t.div_euclid(1000);
    stored.meta.record = Some(Arc::new(rec));
    state.mgmt.invalidate();
}

/// Checks a written password against the policy; `Err(min_length)` when
/// it is too short.
fn check_password_policy(state: &UpstreamState, password: &str) -> Result<(), usize> {
    match state.mgmt.password_min_length {
        Some(min) if password.chars().count() < min => Err(min),
        _ => Ok(()),
    }
}

fn record_write(state: &mut UpstreamState, api: Api, user_id: &str, body: Value) {
    state.mgmt.writes.push(ManagementWrite {
        endpoint: api.name().into(),
        user_id: user_id.into(),
        body,
    });
}

// ---------------------------------------------------------------------------
// Routes, the gate and the vendors' error answers
// ---------------------------------------------------------------------------

/// Adds the flavor's Management routes (Cognito's `ListUsers` goes through
/// the user-pool API handler instead).
pub(super) fn routes(app: Router<Arc<Shared>>, flavor: Flavor) -> Router<Arc<Shared>> {
    match flavor {
        Flavor::Auth0 => app
            .route("/api/v2/users", get(auth0_users).post(auth0_create_user))
            .route(
                "/api/v2/users/{id}",
                get(auth0_get_user)
                    .patch(auth0_patch_user)
                    .delete(auth0_delete_user),
            )
            .route("/api/v2/users-by-email", get(auth0_users_by_email))
            .route("/api/v2/jobs/users-exports", post(auth0_create_export))
            .route("/api/v2/jobs/{id}", get(auth0_job))
            .route("/user-exports/{job}/{file}", get(export_download)),
        Flavor::Okta => app
            .route("/api/v1/users", get(okta_users))
            .route("/api/v1/users/{id}", post(okta_update_user))
            .route(
                "/api/v1/users/{id}/lifecycle/{operation}",
                post(okta_lifecycle),
            ),
        Flavor::Keycloak => app
            .route("/admin/realms/{realm}/users", get(keycloak_users))
            .route(
                "/admin/realms/{realm}/users/count",
                get(keycloak_users_count),
            )
            .route(
                "/admin/realms/{realm}/users/{id}",
                get(keycloak_get_user).put(keycloak_put_user),
            )
            .route(
                "/admin/realms/{realm}/users/{id}/reset-password",
                axum::routing::put(keycloak_reset_password),
            ),
        Flavor::Generic | Flavor::Cognito => app,
    }
}

/// Counts the request, answers a queued fault, then takes a token from the
/// bucket (none for the export download, a storage URL).
fn gate(s: &Shared, api: Api) -> Result<Option<RateInfo>, Response> {
    let mut state = s.lock();
    state.count(api.name());
    let m = &mut state.mgmt;
    if let Some(n) = m.failures.get_mut(api.name()).filter(|n| **n > 0) {
        *n -= 1;
        return Err(server_error(s.flavor, api));
    }
    if let Some((n, retry)) = m.throttles.get_mut(api.name()).filter(|(n, _)| *n > 0) {
        *n -= 1;
        let retry = *retry;
        m.throttled += 1;
        // Without a bucket, the limit the rest of the fake reports.
        let info = m.bucket.as_ref().map(Bucket::info).unwrap_or(RateInfo {
            limit: if s.flavor == Flavor::Auth0 { 100 } else { 600 },
            remaining: 0,
            reset: now() + retry as i64,
        });
        let info = RateInfo {
            remaining: 0,
            reset: info.reset.max(now() + retry as i64),
            ..info
        };
        return Err(throttled(s, api, info, retry));
    }
    if api == Api::ExportDownload {
        return Ok(None);
    }
    match m.bucket.as_mut().map(Bucket::take) {
        None => Ok(None),
        Some(Ok(info)) => Ok(Some(info)),
        Some(Err((info, retry))) => {
            m.throttled += 1;
            Err(throttled(s, api, info, retry))
        }
    }
}

/// The vendor's rate-limit headers, when a bucket is set (otherwise the
/// per-minute window of the rest of the fake applies).
/// An endpoint's answer behind its gate (failures, throttling, counting),
/// with the bucket's headers.
fn gated(s: &Shared, api: Api, answer: impl FnOnce() -> Response) -> Response {
    match gate(s, api) {
        Ok(info) => with_rate_headers(s, answer(), info),
        Err(r) => r,
    }
}

fn with_rate_headers(s: &Shared, mut response: Response, info: Option<RateInfo>) -> Response {
    if let (Some(info), Some(names)) = (info, rate_limit_header_names(s.flavor)) {
        let headers = response.headers_mut();
        for (name, value) in
            names
                .iter()
                .zip([i64::from(info.limit), i64::from(info.remaining), info.reset])
        {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
    response
}

fn server_error(flavor: Flavor, api: Api) -> Response {
    if api == Api::ExportDownload {
        return s3_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "We encountered an internal error. Please try again.",
        );
    }
    match flavor {
        Flavor::Auth0 => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"statusCode": 503, "error": "Service Unavailable",
                    "message": "The service is unavailable. Please try again later."}),
        ),
        Flavor::Cognito => aws_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalErrorException",
            "Internal server error",
        ),
        other => internal_error(other),
    }
}

fn throttled(s: &Shared, api: Api, info: RateInfo, retry_after: u64) -> Response {
    let mut response = match (s.flavor, api) {
        (_, Api::ExportDownload) => s3_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "Please reduce your request rate.",
        ),
        (Flavor::Auth0, _) => json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"statusCode": 429, "error": "Too Many Requests",
                    "message": "Global limit has been reached", "errorCode": "too_many_requests"}),
        ),
        // AWS throttles with 400 on its JSON APIs.
        (Flavor::Cognito, _) => aws_error(
            StatusCode::BAD_REQUEST,
            "TooManyRequestsException",
            "Rate exceeded",
        ),
        _ => too_many_requests(s, retry_after),
    };
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    if api == Api::ExportDownload {
        return response;
    }
    with_rate_headers(s, response, Some(info))
}

/// Auth0's Management API error body.
fn auth0_error(status: StatusCode, message: &str, error_code: Option<&str>) -> Response {
    let mut body = json!({
        "statusCode": status.as_u16(),
        "error": status.canonical_reason().unwrap_or(""),
        "message": message,
    });
    if let Some(code) = error_code {
        body["errorCode"] = json!(code);
    }
    json_response(status, &body)
}

fn s3_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>\
         <RequestId>{}</RequestId><HostId>{}</HostId></Error>",
        hex(&random_bytes(8)).to_uppercase(),
        STANDARD.encode(random_bytes(48))
    );
    (status, [(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn valid_token(s: &Shared, token: Option<&str>) -> bool {
    token.is_some_and(|t| {
        s.lock()
            .mgmt
            .tokens
            .get(t)
            .is_some_and(|expires| *expires > now())
    })
}

/// Auth0 Management API authentication, with its two 401 bodies.
fn auth0_auth(s: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = bearer(headers) else {
        return Err(auth0_error(
            StatusCode::UNAUTHORIZED,
            "Missing authentication",
            None,
        ));
    };
    if valid_token(s, Some(token)) {
        return Ok(());
    }
    Err(json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"statusCode": 401, "error": "Unauthorized", "message": "Invalid token",
                "attributes": {"error": "Invalid token"}}),
    ))
}

/// Called by the token endpoint's `client_credentials` grant before it
/// issues: whether the token will be a Management token, or Auth0's refusal
/// of an audience it does not serve.
pub(super) fn client_credentials_audience(
    s: &Shared,
    params: &HashMap<String, String>,
) -> Result<bool, Response> {
    match s.flavor {
        Flavor::Auth0 => {
            let management = format!("{}api/v2/", s.issuer());
            match params.get("audience") {
                Some(aud) if *aud == management => Ok(true),
                None => Ok(false),
                Some(aud) if *aud == s.issuer() => Ok(false),
                Some(aud) => Err(no_store(json_response(
                    StatusCode::FORBIDDEN,
                    &json!({"error": "access_denied",
                            "error_description": format!("Service not enabled within domain: {aud}")}),
                ))),
            }
        }
        // A service account's token is what the admin API takes.
        Flavor::Keycloak => Ok(true),
        _ => Ok(false),
    }
}

/// Records a Management token the token endpoint has issued.
pub(super) fn record_management_token(s: &Shared, token: &str, ttl: u64) {
    let mut state = s.lock();
    state.count("mgmt_token");
    state
        .mgmt
        .tokens
        .insert(token.to_string(), now() + ttl as i64);
}

// ---------------------------------------------------------------------------
// Records and orderings
// ---------------------------------------------------------------------------

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// `2024-05-01T10:00:00.123Z`.
fn iso_ms(ms: i64) -> String {
    let s = iso8601(ms.div_euclid(1000));
    format!("{}{:03}Z", &s[..20], ms.rem_euclid(1000))
}

/// `YYYY-MM-DD[THH:MM[:SS[.fff]]][Z]` → epoch milliseconds (UTC).
fn parse_iso_ms(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches('Z');
    let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00"));
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm) = (t.next()??, t.next()??);
    let ss = t.next().unwrap_or(Some(0))?;
    let frac_ms = format!("{frac:0<3}")[..3].parse::<i64>().ok()?;
    // Days from civil (proleptic Gregorian), the inverse of `iso8601`.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3_600 + mm * 60 + ss) * 1000) + frac_ms)
}

fn order(state: &mut UpstreamState, key: Order) -> Arc<Vec<u32>> {
    if let Some(o) = state.mgmt.orders.get(&key) {
        return o.clone();
    }
    let users = &state.users;
    let mut idx: Vec<u32> = (0..users.len() as u32).collect();
    let u = |i: &u32| &users[*i as usize];
    match key {
        Order::Id => idx.sort_by(|a, b| u(a).user.sub.cmp(&u(b).user.sub)),
        Order::Created => idx.sort_by(|a, b| {
            (u(a).meta.created_ms, &u(a).user.sub).cmp(&(u(b).meta.created_ms, &u(b).user.sub))
        }),
        Order::Updated => idx.sort_by(|a, b| {
            (u(a).meta.updated_ms, &u(a).user.sub).cmp(&(u(b).meta.updated_ms, &u(b).user.sub))
        }),
        Order::Email => idx.sort_by_cached_key(|i| u(i).user.email.to_lowercase()),
        Order::Username => {
            idx.sort_by_cached_key(|i| (keycloak_username(&u(i).user).to_lowercase(), *i))
        }
    }
    let idx = Arc::new(idx);
    state.mgmt.orders.insert(key, idx.clone());
    idx
}

/// The vendor record of `stored`; `full` keeps Keycloak's `attributes`.
fn record(s: &Shared, state: &UpstreamState, stored: &StoredUser, full: bool) -> Value {
    let mut rec = match &stored.meta.record {
        Some(r) => (**r).clone(),
        None => match s.flavor {
            Flavor::Auth0 | Flavor::Generic => auth0_record(stored),
            Flavor::Okta => okta_record(s, stored),
            Flavor::Cognito => cognito_record(state, stored),
            Flavor::Keycloak => keycloak_record(stored),
        },
    };
    if s.flavor == Flavor::Keycloak
        && !full
        && let Some(obj) = rec.as_object_mut()
    {
        obj.remove("attributes");
    }
    rec
}

fn split_name(name: Option<&str>) -> (Option<String>, Option<String>) {
    match name.and_then(|n| n.split_once(' ')) {
        Some((first, last)) if !first.contains('@') => (Some(first.into()), Some(last.into())),
        _ => (None, None),
    }
}

/// A value by Auth0's field path: `user_metadata.plan`, `identities[0].connection`.
fn pick<'a>(record: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = record;
    for segment in path.split('.') {
        let (name, indices) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        if !name.is_empty() {
            v = v.get(name)?;
        }
        for index in indices.split('[').filter(|x| !x.is_empty()) {
            v = v.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(v)
}

/// RFC 7396.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let obj = target.as_object_mut().expect("object");
    for (k, v) in patch {
        if v.is_null() {
            obj.remove(k);
        } else {
            merge_patch(obj.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn query_map(raw: Option<String>) -> HashMap<String, String> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_iso_ms_inverts_iso_ms() {
        for t in [0, 951_782_400_123, 1_714_557_600_999, 1_700_000_000_000] {
            assert_eq!(parse_iso_ms(&iso_ms(t)), Some(t));
        }
        assert_eq!(parse_iso_ms("2024-05-01"), Some(1_714_521_600_000));
    }
}
