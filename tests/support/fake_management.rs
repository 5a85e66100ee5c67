//! The vendors' user-listing Management APIs, as a backfill pages through
//! them: Auth0's `/api/v2/users` (with its 1,000-result cap) and its export
//! jobs, Okta's `/api/v1/users` (cursor only in the `Link` header), Cognito's
//! SigV4-signed `ListUsers`, and Keycloak's `/admin/realms/{realm}/users`;
//! and the writes that mark a user migrated: Auth0's `PATCH
//! /api/v2/users/{id}` (metadata merged at its first level), Okta's partial
//! `POST /api/v1/users/{id}` (only properties of its profile schema),
//! Cognito's `AdminUpdateUserAttributes` (only attributes of the pool's
//! schema) and Keycloak's `GET`/`PUT /admin/realms/{realm}/users/{id}` (the
//! PUT replaces attributes and profile fields). Each accepted write is kept
//! for [`FakeUpstream::management_writes`].
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
use axum::routing::patch;
use flate2::Compression;
use flate2::write::GzEncoder;

use super::*;

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
        }
    }
}

impl FakeUpstream {
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
    /// `admin_users_count`, and the writes `patch_user` (Auth0),
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
            .route("/api/v2/users", get(auth0_users))
            .route("/api/v2/users/{id}", patch(auth0_patch_user))
            .route("/api/v2/jobs/users-exports", post(auth0_create_export))
            .route("/api/v2/jobs/{id}", get(auth0_job))
            .route("/user-exports/{job}/{file}", get(export_download)),
        Flavor::Okta => app
            .route("/api/v1/users", get(okta_users))
            .route("/api/v1/users/{id}", post(okta_update_user)),
        Flavor::Keycloak => app
            .route("/admin/realms/{realm}/users", get(keycloak_users))
            .route(
                "/admin/realms/{realm}/users/count",
                get(keycloak_users_count),
            )
            .route(
                "/admin/realms/{realm}/users/{id}",
                get(keycloak_get_user).put(keycloak_put_user),
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

fn auth0_record(stored: &StoredUser) -> Value {
    let u = &stored.user;
    let m = &stored.meta;
    let local = u.sub.split_once('|').map_or(u.sub.as_str(), |(_, id)| id);
    let (given, family) = split_name(u.name.as_deref());
    let mut rec = json!({
        "user_id": u.sub,
        "email": u.email,
        "email_verified": u.email_verified,
        "name": u.name.clone().unwrap_or_else(|| u.email.clone()),
        "nickname": u.nickname,
        "picture": u.picture,
        "user_metadata": u.user_metadata,
        "app_metadata": u.app_metadata,
        "identities": [{
            "connection": AUTH0_DEFAULT_REALM,
            "provider": "auth0",
            "user_id": local,
            "isSocial": false,
        }],
        "created_at": iso_ms(m.created_ms),
        "updated_at": iso_ms(m.updated_ms),
        "logins_count": m.logins_count,
    });
    if let Some(t) = m.last_login_ms {
        rec["last_login"] = json!(iso_ms(t));
        rec["last_ip"] = json!("203.0.113.7");
    }
    if let Some(g) = given {
        rec["given_name"] = json!(g);
    }
    if let Some(f) = family {
        rec["family_name"] = json!(f);
    }
    if u.blocked {
        rec["blocked"] = json!(true);
    }
    rec
}

fn okta_status(stored: &StoredUser) -> &'static str {
    if let Some(r) = &stored.meta.record {
        return match r["status"].as_str() {
            Some("DEPROVISIONED") => "DEPROVISIONED",
            Some("STAGED") => "STAGED",
            Some("SUSPENDED") => "SUSPENDED",
            Some("LOCKED_OUT") => "LOCKED_OUT",
            Some("PROVISIONED") => "PROVISIONED",
            _ => "ACTIVE",
        };
    }
    match stored.meta.seq {
        _ if stored.user.blocked => "SUSPENDED",
        Some(seq) if seq % 40 == 7 => "DEPROVISIONED",
        Some(seq) if seq % 40 == 13 => "STAGED",
        _ => "ACTIVE",
    }
}

fn okta_record(s: &Shared, stored: &StoredUser) -> Value {
    let u = &stored.user;
    let m = &stored.meta;
    let status = okta_status(stored);
    let (first, last) = split_name(u.name.as_deref());
    let created = iso_ms(m.created_ms);
    let staged = status == "STAGED";
    json!({
        "id": u.sub,
        "status": status,
        "created": created,
        "activated": if staged { Value::Null } else { json!(iso_ms(m.created_ms + 1_000)) },
        "statusChanged": if status == "ACTIVE" { Value::Null } else { json!(iso_ms(m.updated_ms)) },
        "lastLogin": m.last_login_ms.filter(|_| !staged).map(iso_ms),
        "lastUpdated": iso_ms(m.updated_ms),
        "passwordChanged": if staged { Value::Null } else { json!(iso_ms(m.created_ms + 1_000)) },
        "type": {"id": "otyfakeupstreamdefault"},
        "profile": {
            "firstName": first.unwrap_or_else(|| u.nickname.clone().unwrap_or_default()),
            "lastName": last.unwrap_or_default(),
            "mobilePhone": Value::Null,
            "secondEmail": Value::Null,
            "login": u.email,
            "email": u.email,
            "locale": u.user_metadata.get("locale").cloned().unwrap_or(Value::Null),
        },
        "credentials": {
            "password": {},
            "emails": [{"value": u.email, "status": if u.email_verified { "VERIFIED" } else { "UNVERIFIED" }, "type": "PRIMARY"}],
            "provider": {"type": "OKTA", "name": "OKTA"},
        },
        "_links": {"self": {"href": s.url(&format!("/api/v1/users/{}", u.sub))}},
    })
}

fn cognito_record(state: &UpstreamState, stored: &StoredUser) -> Value {
    let u = &stored.user;
    let m = &stored.meta;
    let mut attributes = vec![json!({"Name": "sub", "Value": u.sub})];
    for (k, v) in cognito_attributes(u) {
        let value = match (k.as_str(), v) {
            ("cognito:username" | "cognito:groups", _) => continue,
            (_, Value::String(s)) => s,
            (_, other) => other.to_string(),
        };
        attributes.push(json!({"Name": k, "Value": value}));
    }
    let status = if state.new_password_required.contains(&u.sub) {
        "FORCE_CHANGE_PASSWORD"
    } else {
        "CONFIRMED"
    };
    json!({
        "Username": u.email,
        "Attributes": attributes,
        "UserCreateDate": m.created_ms as f64 / 1000.0,
        "UserLastModifiedDate": m.updated_ms as f64 / 1000.0,
        "Enabled": !u.blocked,
        "UserStatus": status,
    })
}

fn keycloak_record(stored: &StoredUser) -> Value {
    let u = &stored.user;
    let (first, last) = split_name(u.name.as_deref());
    let mut attributes = Map::new();
    for metadata in [&u.app_metadata, &u.user_metadata] {
        for (k, v) in metadata.as_object().into_iter().flatten() {
            let values: Vec<Value> = match v {
                Value::String(s) => vec![json!(s)],
                Value::Array(a) => a.iter().filter(|x| x.is_string()).cloned().collect(),
                _ => continue,
            };
            attributes.insert(k.clone(), Value::Array(values));
        }
    }
    let mut rec = json!({
        "id": u.sub,
        "username": keycloak_username(u).to_lowercase(),
        "firstName": first,
        "lastName": last,
        "email": u.email.to_lowercase(),
        "emailVerified": u.email_verified,
        "createdTimestamp": stored.meta.created_ms,
        "enabled": !u.blocked,
        "totp": u.mfa_required,
        "disableableCredentialTypes": [],
        "requiredActions": [],
        "notBefore": 0,
        "access": {"manageGroupMembership": true, "view": true, "mapRoles": true,
                   "impersonate": false, "manage": true},
    });
    if !attributes.is_empty() {
        rec["attributes"] = Value::Object(attributes);
    }
    rec
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

// ---------------------------------------------------------------------------
// Auth0: /api/v2/users
// ---------------------------------------------------------------------------

/// One clause of an Auth0 `q`.
enum Clause {
    /// `created_at` or `updated_at` within bounds (inclusive flags).
    Range {
        updated: bool,
        low: Option<(i64, bool)>,
        high: Option<(i64, bool)>,
    },
    Email(String),
    UserId(String),
}

impl Clause {
    fn matches(&self, u: &StoredUser) -> bool {
        match self {
            Clause::Range { updated, low, high } => {
                let t = if *updated {
                    u.meta.updated_ms
                } else {
                    u.meta.created_ms
                };
                low.is_none_or(|(l, inc)| if inc { t >= l } else { t > l })
                    && high.is_none_or(|(h, inc)| if inc { t <= h } else { t < h })
            }
            Clause::Email(e) => u.user.email.eq_ignore_ascii_case(e),
            Clause::UserId(id) => u.user.sub == *id,
        }
    }
}

/// Lucene as Auth0's v3 search takes it, the subset the fake serves:
/// `created_at`/`updated_at` ranges (`[ ]` inclusive, `{ }` exclusive, `*`
/// open) and exact `email`/`user_id`, joined by `AND`.
fn parse_q(q: &str) -> Result<Vec<Clause>, String> {
    let mut clauses = vec![];
    for part in q.split(" AND ") {
        let part = part.trim();
        let (field, value) = part
            .split_once(':')
            .ok_or_else(|| format!("unsupported query: {part}"))?;
        let unquote = |v: &str| v.trim().trim_matches('"').to_string();
        match field.trim() {
            f @ ("created_at" | "updated_at") => {
                let value = value.trim();
                let open = value.chars().next().ok_or("empty range")?;
                let close = value.chars().last().ok_or("empty range")?;
                if !matches!(open, '[' | '{') || !matches!(close, ']' | '}') || value.len() < 2 {
                    return Err(format!("unsupported query on {f}: {value}"));
                }
                let inner = &value[1..value.len() - 1];
                let (lo, hi) = inner
                    .split_once(" TO ")
                    .ok_or_else(|| format!("a range needs TO: {value}"))?;
                let bound = |b: &str, inclusive: bool| -> Result<Option<(i64, bool)>, String> {
                    let b = unquote(b);
                    if b == "*" {
                        return Ok(None);
                    }
                    parse_iso_ms(&b)
                        .map(|t| Some((t, inclusive)))
                        .ok_or_else(|| format!("not a date: {b}"))
                };
                clauses.push(Clause::Range {
                    updated: f == "updated_at",
                    low: bound(lo, open == '[')?,
                    high: bound(hi, close == ']')?,
                });
            }
            "email" => clauses.push(Clause::Email(unquote(value))),
            "user_id" => clauses.push(Clause::UserId(unquote(value))),
            other => return Err(format!("unsupported field in the fake: {other}")),
        }
    }
    Ok(clauses)
}

async fn auth0_users(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let info = match gate(&s, Api::Users) {
        Ok(info) => info,
        Err(r) => return r,
    };
    let response = auth0_users_page(&s, &headers, query_map(raw));
    with_rate_headers(&s, response, info)
}

fn auth0_users_page(s: &Shared, headers: &HeaderMap, q: HashMap<String, String>) -> Response {
    if let Err(r) = auth0_auth(s, headers) {
        return r;
    }
    let invalid = |message: String| {
        auth0_error(
            StatusCode::BAD_REQUEST,
            &format!("Query validation error: {message}"),
            Some("invalid_query_string"),
        )
    };
    let number = |name: &str, default: u64| -> Result<u64, Response> {
        match q.get(name) {
            None => Ok(default),
            Some(v) => v.parse::<u64>().map_err(|_| {
                invalid(format!(
                    "'Expected type integer but found type string' on property {name}."
                ))
            }),
        }
    };
    let per_page = match number("per_page", 50) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let page = match number("page", 0) {
        Ok(n) => n,
        Err(r) => return r,
    };
    if per_page > 100 {
        return invalid(format!(
            "'Too big: must be less than or equal to 100' on property per_page (Number of results per page. Paging is disabled if parameter not sent.). Value: {per_page}"
        ));
    }
    if let Some(engine) = q.get("search_engine").filter(|e| *e != "v3") {
        return auth0_error(
            StatusCode::BAD_REQUEST,
            &format!("You are not allowed to use search_engine={engine}."),
            Some("operation_not_supported"),
        );
    }
    // Auth0 serves no more than the first 1,000 results of any query.
    const CAP: u64 = 1000;
    if page * per_page >= CAP {
        return auth0_error(
            StatusCode::BAD_REQUEST,
            "You can only page through the first 1000 records. See https://auth0.com/docs/users/search/v3/view-search-results-by-page#limitation",
            Some("invalid_paging"),
        );
    }
    let clauses = match q.get("q").filter(|q| !q.trim().is_empty()) {
        None => vec![],
        Some(text) => match parse_q(text) {
            Ok(c) => c,
            Err(e) => return invalid(e),
        },
    };
    let (key, descending) = match q.get("sort").map(String::as_str) {
        None | Some("") => (Order::Id, false),
        Some(sort) => {
            let (field, dir) = sort.split_once(':').unwrap_or((sort, "1"));
            let key = match field {
                "created_at" => Order::Created,
                "updated_at" => Order::Updated,
                "user_id" => Order::Id,
                "email" => Order::Email,
                _ => return invalid(format!("sort by {field} is not served by the fake")),
            };
            match dir {
                "1" => (key, false),
                "-1" => (key, true),
                _ => {
                    return invalid(format!(
                        "'String does not match pattern ^(([a-zA-Z0-9_\\.]+))\\:(1|-1)$' on property sort. Value: {sort}"
                    ));
                }
            }
        }
    };
    let include_totals = q.get("include_totals").is_some_and(|v| v == "true");
    let mut state = s.lock();
    let idx = order(&mut state, key);
    let users = &state.users;
    let matching = |i: &&u32| clauses.iter().all(|c| c.matches(&users[**i as usize]));
    let start = page * per_page;
    let end = (start + per_page).min(CAP);
    let take = end.saturating_sub(start) as usize;
    let selected: Vec<u32> = if descending {
        idx.iter()
            .rev()
            .filter(matching)
            .skip(start as usize)
            .take(take)
            .copied()
            .collect()
    } else {
        idx.iter()
            .filter(matching)
            .skip(start as usize)
            .take(take)
            .copied()
            .collect()
    };
    let records: Vec<Value> = selected
        .iter()
        .map(|i| record(s, &state, &state.users[*i as usize], true))
        .collect();
    if !include_totals {
        return json_response(StatusCode::OK, &Value::Array(records));
    }
    let total = if clauses.is_empty() {
        idx.len()
    } else {
        idx.iter().filter(matching).count()
    };
    json_response(
        StatusCode::OK,
        &json!({
            "start": start, "limit": per_page, "length": records.len(),
            "total": total, "users": records,
        }),
    )
}

// ---------------------------------------------------------------------------
// Auth0: export jobs and the download
// ---------------------------------------------------------------------------

/// What an export holds when the request names no `fields`. Auth0 documents
/// only "a predefined set of fields"; the fake's set is the profile without
/// `app_metadata` and `user_metadata`, so a client that needs metadata has
/// to ask for it, as with Auth0.
const DEFAULT_EXPORT_FIELDS: [&str; 16] = [
    "user_id",
    "email",
    "email_verified",
    "username",
    "phone_number",
    "name",
    "given_name",
    "family_name",
    "nickname",
    "picture",
    "identities",
    "created_at",
    "updated_at",
    "last_login",
    "logins_count",
    "blocked",
];

/// The root attributes `PATCH /api/v2/users/{id}` takes (Management API
/// v2, "Update a User").
const AUTH0_PATCHABLE: [&str; 17] = [
    "app_metadata",
    "blocked",
    "email",
    "email_verified",
    "family_name",
    "given_name",
    "name",
    "nickname",
    "password",
    "phone_number",
    "phone_verified",
    "picture",
    "username",
    "user_metadata",
    "verify_email",
    "connection",
    "client_id",
];

/// Auth0's `PATCH /api/v2/users/{id}`: root attributes are replaced, but
/// `app_metadata` and `user_metadata` are merged at their first level only
/// (a nested object is replaced whole; `null` deletes a key).
async fn auth0_patch_user(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let info = match gate(&s, Api::PatchUser) {
        Ok(info) => info,
        Err(r) => return r,
    };
    if let Err(r) = auth0_auth(&s, &headers) {
        return r;
    }
    let invalid = |message: &str| {
        auth0_error(
            StatusCode::BAD_REQUEST,
            &format!("Payload validation error: '{message}'."),
            Some("invalid_body"),
        )
    };
    let Ok(Value::Object(patch)) = serde_json::from_slice::<Value>(&body) else {
        return invalid("Invalid JSON");
    };
    if let Some(extra) = patch
        .keys()
        .find(|k| !AUTH0_PATCHABLE.contains(&k.as_str()))
    {
        return invalid(&format!("Additional properties not allowed: {extra}"));
    }
    let mut state = s.lock();
    let Some(pos) = state.users.iter().position(|u| u.user.sub == id) else {
        return auth0_error(
            StatusCode::NOT_FOUND,
            "The user does not exist.",
            Some("inexistent_user"),
        );
    };
    let mut rec = record(&s, &state, &state.users[pos], true);
    for (key, value) in &patch {
        match (key.as_str(), value) {
            ("app_metadata" | "user_metadata", Value::Object(fields)) => {
                if !rec[key.as_str()].is_object() {
                    rec[key.as_str()] = json!({});
                }
                let metadata = rec[key.as_str()].as_object_mut().expect("object");
                for (k, v) in fields {
                    if v.is_null() {
                        metadata.remove(k);
                    } else {
                        metadata.insert(k.clone(), v.clone());
                    }
                }
            }
            ("connection" | "client_id" | "password" | "verify_email", _) => {}
            (_, Value::Null) => {
                rec.as_object_mut().expect("object").remove(key);
            }
            (_, v) => rec[key.as_str()] = v.clone(),
        }
    }
    commit_record(s.flavor, &mut state, pos, rec);
    record_write(&mut state, Api::PatchUser, &id, Value::Object(patch));
    let answer = record(&s, &state, &state.users[pos], true);
    drop(state);
    with_rate_headers(&s, json_response(StatusCode::OK, &answer), info)
}

async fn auth0_create_export(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let info = match gate(&s, Api::UsersExport) {
        Ok(info) => info,
        Err(r) => return r,
    };
    let response = create_export(&s, &headers, &body);
    with_rate_headers(&s, response, info)
}

fn create_export(s: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Err(r) = auth0_auth(s, headers) {
        return r;
    }
    let invalid = |message: &str| {
        auth0_error(
            StatusCode::BAD_REQUEST,
            &format!("Payload validation error: {message}"),
            Some("invalid_body"),
        )
    };
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        return invalid("'Expected type object' on property body.");
    };
    let format = match req.get("format") {
        None => "json".to_string(),
        Some(Value::String(f)) if f == "json" || f == "csv" => f.clone(),
        Some(other) => {
            return invalid(&format!(
                "'No enum match for: {other}' on property format (The format of the file. Valid values are: \"json\" and \"csv\".)."
            ));
        }
    };
    let connection_id = match req.get("connection_id") {
        None => None,
        Some(Value::String(c)) if c == AUTH0_CONNECTION_ID => Some(c.clone()),
        Some(Value::String(c)) => {
            return auth0_error(
                StatusCode::BAD_REQUEST,
                &format!("The connection does not exist: {c}"),
                Some("inexistent_connection"),
            );
        }
        Some(_) => return invalid("'Expected type string' on property connection_id."),
    };
    let limit = match req.get("limit") {
        None => None,
        Some(v) => match v.as_u64().filter(|n| *n >= 1) {
            Some(n) => Some(n as usize),
            None => {
                return invalid(
                    "'Too small: must be greater than or equal to 1' on property limit.",
                );
            }
        },
    };
    let fields = match req.get("fields") {
        None => None,
        Some(Value::Array(items)) => {
            let mut fields = vec![];
            for item in items {
                let Some(name) = item.get("name").and_then(Value::as_str) else {
                    return invalid("'Missing required property: name' on property fields.");
                };
                let export_as = item
                    .get("export_as")
                    .and_then(Value::as_str)
                    .map(String::from);
                fields.push((name.to_string(), export_as));
            }
            Some(fields)
        }
        Some(_) => return invalid("'Expected type array' on property fields."),
    };
    let id = format!(
        "job_{}",
        URL_SAFE_NO_PAD
            .encode(random_bytes(12))
            .replace(['-', '_'], "x")
    );
    let job = Job {
        id: id.clone(),
        created_ms: now_ms(),
        format,
        fields,
        connection_id,
        limit,
        polls: 0,
        file: None,
        location: None,
        expires_ms: 0,
    };
    let body = job_json(&job, "pending");
    s.lock().mgmt.jobs.insert(id, job);
    json_response(StatusCode::CREATED, &body)
}

fn job_json(job: &Job, status: &str) -> Value {
    let mut body = json!({
        "type": "users_export",
        "status": status,
        "id": job.id,
        "format": job.format,
        "created_at": iso_ms(job.created_ms),
    });
    if let Some(fields) = &job.fields {
        body["fields"] = fields
            .iter()
            .map(|(name, export_as)| match export_as {
                Some(a) => json!({"name": name, "export_as": a}),
                None => json!({"name": name}),
            })
            .collect();
    }
    if let Some(c) = &job.connection_id {
        body["connection_id"] = json!(c);
        body["connection"] = json!(AUTH0_DEFAULT_REALM);
    }
    if let Some(l) = job.limit {
        body["limit"] = json!(l);
    }
    body
}

async fn auth0_job(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let info = match gate(&s, Api::Job) {
        Ok(info) => info,
        Err(r) => return r,
    };
    let response = poll_job(&s, &headers, &id);
    with_rate_headers(&s, response, info)
}

fn poll_job(s: &Shared, headers: &HeaderMap, id: &str) -> Response {
    if let Err(r) = auth0_auth(s, headers) {
        return r;
    }
    let mut state = s.lock();
    let timing = state.mgmt.export_timing;
    let Some(job) = state.mgmt.jobs.get_mut(id) else {
        return auth0_error(
            StatusCode::NOT_FOUND,
            "The job does not exist.",
            Some("inexistent_job"),
        );
    };
    job.polls += 1;
    let polls = job.polls;
    if job.file.is_none() && polls <= timing.pending_polls {
        return json_response(StatusCode::OK, &job_json(job, "pending"));
    }
    if job.file.is_none() && polls <= timing.pending_polls + timing.processing_polls {
        let done = polls - timing.pending_polls;
        let mut body = job_json(job, "processing");
        body["percentage_done"] = json!(100 * done / (timing.processing_polls + 1));
        body["time_left_seconds"] = json!(timing.processing_polls + 1 - done);
        return json_response(StatusCode::OK, &body);
    }
    if job.file.is_none() {
        let (format, fields, limit) = (job.format.clone(), job.fields.clone(), job.limit);
        let file = export_file(s, &mut state, &format, fields.as_deref(), limit);
        let job = state.mgmt.jobs.get_mut(id).expect("job");
        let expires_ms = now_ms() + timing.link_ttl.as_millis() as i64;
        let expires = expires_ms.div_euclid(1000);
        let path = format!("/user-exports/{}/fake-tenant.{}.gz", job.id, job.format);
        let signature = link_signature(s, &path, expires);
        job.location = Some(format!(
            "{}{path}?Expires={expires}&Key-Pair-Id=APKAFAKEUPSTREAM0001&Signature={signature}",
            s.base
        ));
        job.expires_ms = expires_ms;
        job.file = Some(Arc::new(file));
    }
    let job = state.mgmt.jobs.get(id).expect("job");
    let mut body = job_json(job, "completed");
    body["location"] = json!(job.location);
    body["percentage_done"] = json!(100);
    body["time_left_seconds"] = json!(0);
    json_response(StatusCode::OK, &body)
}

/// The signature of a download link (CloudFront signs Auth0's), keyed by
/// something only this fake knows.
fn link_signature(s: &Shared, path: &str, expires: i64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, s.base.as_bytes());
    URL_SAFE_NO_PAD.encode(hmac::sign(&key, format!("{path}?{expires}").as_bytes()))
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

fn export_file(
    s: &Shared,
    state: &mut UpstreamState,
    format: &str,
    fields: Option<&[(String, Option<String>)]>,
    limit: Option<usize>,
) -> Vec<u8> {
    let default: Vec<(String, Option<String>)> = DEFAULT_EXPORT_FIELDS
        .iter()
        .map(|f| (f.to_string(), None))
        .collect();
    let fields = fields.unwrap_or(&default);
    let idx = order(state, Order::Created);
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    if format == "csv" {
        let header: Vec<String> = fields
            .iter()
            .map(|(n, a)| csv_cell(a.as_deref().unwrap_or(n)))
            .collect();
        let _ = writeln!(gz, "{}", header.join(","));
    }
    for i in idx.iter().take(limit.unwrap_or(usize::MAX)) {
        let rec = record(s, state, &state.users[*i as usize], true);
        if format == "csv" {
            let row: Vec<String> = fields
                .iter()
                .map(|(n, _)| match pick(&rec, n) {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(v)) => csv_cell(v),
                    Some(other) => csv_cell(&other.to_string()),
                })
                .collect();
            let _ = writeln!(gz, "{}", row.join(","));
        } else {
            let mut line = Map::new();
            for (name, export_as) in fields {
                if let Some(v) = pick(&rec, name).filter(|v| !v.is_null()) {
                    line.insert(export_as.clone().unwrap_or_else(|| name.clone()), v.clone());
                }
            }
            let _ = writeln!(gz, "{}", Value::Object(line));
        }
    }
    gz.finish().expect("gzip into memory")
}

fn csv_cell(v: &str) -> String {
    format!("\"{}\"", v.replace('"', "\"\""))
}

/// The download link: no authentication, as a pre-signed storage URL; an
/// expired or altered link answers S3's 403.
async fn export_download(
    State(s): State<Arc<Shared>>,
    Path((job_id, file)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(r) = gate(&s, Api::ExportDownload) {
        return r;
    }
    let q = query_map(raw);
    let path = format!("/user-exports/{job_id}/{file}");
    let expires = q.get("Expires").and_then(|e| e.parse::<i64>().ok());
    let signed = expires.is_some_and(|e| {
        q.get("Signature")
            .is_some_and(|sig| *sig == link_signature(&s, &path, e))
    });
    let found = {
        let state = s.lock();
        state
            .mgmt
            .jobs
            .get(&job_id)
            .filter(|j| j.location.as_deref().is_some_and(|l| l.contains(&path)))
            .and_then(|j| Some((j.file.clone()?, j.expires_ms)))
    };
    let Some((file, expires_ms)) = found.filter(|_| signed) else {
        return s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Access Denied");
    };
    if now_ms() >= expires_ms {
        return s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired");
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/gzip")],
        Body::from((*file).clone()),
    )
        .into_response()
}

// ---------------------------------------------------------------------------
// Okta: /api/v1/users
// ---------------------------------------------------------------------------

/// One comparison of an Okta `search` (or `filter`) expression.
struct OktaCondition {
    field: String,
    op: String,
    value: String,
}

impl OktaCondition {
    fn matches(&self, rec: &Value) -> bool {
        let Some(actual) = pick(rec, &self.field).and_then(Value::as_str) else {
            return false;
        };
        let is_time = matches!(
            self.field.as_str(),
            "created"
                | "lastUpdated"
                | "statusChanged"
                | "activated"
                | "lastLogin"
                | "passwordChanged"
        );
        let ord = if is_time {
            match (parse_iso_ms(actual), parse_iso_ms(&self.value)) {
                (Some(a), Some(b)) => a.cmp(&b),
                _ => return false,
            }
        } else {
            actual.cmp(self.value.as_str())
        };
        match self.op.as_str() {
            "eq" => ord.is_eq(),
            "gt" => ord.is_gt(),
            "ge" => ord.is_ge(),
            "lt" => ord.is_lt(),
            "le" => ord.is_le(),
            "sw" => actual.starts_with(&self.value),
            _ => false,
        }
    }
}

/// `field op "value"` joined by `and`: `lastUpdated gt "…"`, `status eq
/// "ACTIVE"`, `profile.email sw "ali"`.
fn parse_okta_search(text: &str) -> Option<Vec<OktaCondition>> {
    let mut out = vec![];
    for part in text.split(" and ") {
        let part = part.trim().trim_start_matches('(').trim_end_matches(')');
        let mut words = part.splitn(3, ' ');
        let (field, op, value) = (words.next()?, words.next()?, words.next()?);
        let value = value.trim();
        if !["eq", "gt", "ge", "lt", "le", "sw"].contains(&op)
            || value.len() < 2
            || !value.starts_with('"')
            || !value.ends_with('"')
        {
            return None;
        }
        out.push(OktaCondition {
            field: field.into(),
            op: op.into(),
            value: value[1..value.len() - 1].into(),
        });
    }
    Some(out)
}

fn okta_error(status: StatusCode, code: &str, summary: &str) -> Response {
    json_response(
        status,
        &json!({
            "errorCode": code, "errorSummary": summary, "errorLink": code,
            "errorId": format!("oae{}", URL_SAFE_NO_PAD.encode(random_bytes(15))),
            "errorCauses": [],
        }),
    )
}

/// The properties of Okta's base user profile.
const OKTA_BASE_PROFILE: [&str; 31] = [
    "login",
    "email",
    "secondEmail",
    "firstName",
    "lastName",
    "middleName",
    "honorificPrefix",
    "honorificSuffix",
    "title",
    "displayName",
    "nickName",
    "profileUrl",
    "primaryPhone",
    "mobilePhone",
    "streetAddress",
    "city",
    "state",
    "zipCode",
    "postalAddress",
    "countryCode",
    "preferredLanguage",
    "locale",
    "timezone",
    "userType",
    "employeeNumber",
    "costCenter",
    "organization",
    "division",
    "department",
    "managerId",
    "manager",
];

fn okta_authorized(headers: &HeaderMap) -> Result<(), Response> {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("SSWS "))
        .is_some_and(|t| t.trim() == OKTA_API_TOKEN);
    if authorized {
        Ok(())
    } else {
        Err(okta_error(
            StatusCode::UNAUTHORIZED,
            "E0000011",
            "Invalid token provided",
        ))
    }
}

/// Okta's partial update, `POST /api/v1/users/{id}`: the profile
/// properties sent are set, the others keep their values. A property the
/// profile schema does not declare is a 400 (E0000001).
async fn okta_update_user(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let info = match gate(&s, Api::OktaUpdateUser) {
        Ok(info) => info,
        Err(r) => return r,
    };
    if let Err(r) = okta_authorized(&headers) {
        return r;
    }
    let Ok(Value::Object(update)) = serde_json::from_slice::<Value>(&body) else {
        return okta_error(
            StatusCode::BAD_REQUEST,
            "E0000003",
            "The request body was not well-formed.",
        );
    };
    let mut state = s.lock();
    let Some(pos) = state.users.iter().position(|u| u.user.sub == id) else {
        return okta_error(
            StatusCode::NOT_FOUND,
            "E0000007",
            &format!("Not found: Resource not found: {id} (User)"),
        );
    };
    let profile = update.get("profile").and_then(Value::as_object);
    if let Some(unknown) = profile.into_iter().flatten().map(|(k, _)| k).find(|k| {
        !OKTA_BASE_PROFILE.contains(&k.as_str())
            && !OKTA_CUSTOM_PROFILE_ATTRIBUTES.contains(&k.as_str())
    }) {
        let body = json!({
            "errorCode": "E0000001", "errorSummary": "Api validation failed: profile",
            "errorLink": "E0000001", "errorId": format!("oae{}", URL_SAFE_NO_PAD.encode(random_bytes(15))),
            "errorCauses": [{"errorSummary": format!("Property name '{unknown}' is not defined in profile schema")}],
        });
        return json_response(StatusCode::BAD_REQUEST, &body);
    }
    let mut rec = record(&s, &state, &state.users[pos], true);
    for (k, v) in profile.into_iter().flatten() {
        rec["profile"][k.as_str()] = v.clone();
    }
    commit_record(s.flavor, &mut state, pos, rec);
    record_write(&mut state, Api::OktaUpdateUser, &id, Value::Object(update));
    let answer = record(&s, &state, &state.users[pos], true);
    drop(state);
    with_rate_headers(&s, json_response(StatusCode::OK, &answer), info)
}

async fn okta_users(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let info = match gate(&s, Api::OktaUsers) {
        Ok(info) => info,
        Err(r) => return r,
    };
    let response = okta_users_page(&s, &headers, raw);
    with_rate_headers(&s, response, info)
}

fn okta_users_page(s: &Shared, headers: &HeaderMap, raw: Option<String>) -> Response {
    if let Err(r) = okta_authorized(headers) {
        return r;
    }
    let self_url = match &raw {
        Some(q) if !q.is_empty() => s.url(&format!("/api/v1/users?{q}")),
        _ => s.url("/api/v1/users"),
    };
    let q = query_map(raw);
    // Okta clamps `limit` to its maximum rather than refusing it.
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(200)
        .min(200);
    let expression = q.get("search").or_else(|| q.get("filter"));
    let conditions = match expression {
        None => None,
        Some(text) => match parse_okta_search(text) {
            Some(c) => Some(c),
            None => {
                return okta_error(
                    StatusCode::BAD_REQUEST,
                    "E0000031",
                    "Invalid search criteria.",
                );
            }
        },
    };
    let mut state = s.lock();
    let idx = order(&mut state, Order::Id);
    let users = &state.users;
    // `q` matches the start of first name, last name or email, returns at
    // most 10 and does not page.
    if let Some(prefix) = q.get("q").map(|p| p.to_lowercase()) {
        let found: Vec<Value> = idx
            .iter()
            .map(|i| &users[*i as usize])
            .filter(|u| okta_status(u) != "DEPROVISIONED")
            .map(|u| record(s, &state, u, true))
            .filter(|r| {
                ["firstName", "lastName", "email"].iter().any(|f| {
                    r["profile"][f]
                        .as_str()
                        .is_some_and(|v| v.to_lowercase().starts_with(&prefix))
                })
            })
            .take(limit.min(10))
            .collect();
        return json_response(StatusCode::OK, &Value::Array(found));
    }
    let start = match q.get("after") {
        Some(after) => {
            idx.partition_point(|i| users[*i as usize].user.sub.as_str() <= after.as_str())
        }
        None => 0,
    };
    let mut page = vec![];
    let mut more = false;
    for i in &idx[start..] {
        let u = &users[*i as usize];
        let keep = match &conditions {
            // A plain list leaves deprovisioned users out; a search sees
            // every status.
            None => okta_status(u) != "DEPROVISIONED",
            Some(conditions) => {
                let rec = record(s, &state, u, true);
                conditions.iter().all(|c| c.matches(&rec))
            }
        };
        if !keep {
            continue;
        }
        if page.len() == limit {
            more = true;
            break;
        }
        page.push(u);
    }
    let records: Vec<Value> = page.iter().map(|u| record(s, &state, u, true)).collect();
    let next = more.then(|| {
        let mut url = url::Url::parse(&s.url("/api/v1/users")).expect("users URL");
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("after", &page.last().expect("a full page").user.sub);
            pairs.append_pair("limit", &limit.to_string());
            if let Some(search) = q.get("search") {
                pairs.append_pair("search", search);
            } else if let Some(filter) = q.get("filter") {
                pairs.append_pair("filter", filter);
            }
        }
        url.to_string()
    });
    drop(state);
    let mut response = json_response(StatusCode::OK, &Value::Array(records));
    let links = response.headers_mut();
    links.append(
        header::LINK,
        HeaderValue::from_str(&format!("<{self_url}>; rel=\"self\"")).expect("link header"),
    );
    if let Some(next) = next {
        links.append(
            header::LINK,
            HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")).expect("link header"),
        );
    }
    response
}

// ---------------------------------------------------------------------------
// Keycloak: /admin/realms/{realm}/users
// ---------------------------------------------------------------------------

fn keycloak_auth(s: &Shared, headers: &HeaderMap, realm: &str) -> Result<(), Response> {
    if realm != "acme" {
        return Err(json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "Realm not found."}),
        ));
    }
    if valid_token(s, bearer(headers)) {
        return Ok(());
    }
    let mut response = json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"error": "HTTP 401 Unauthorized"}),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"acme\""),
    );
    Err(response)
}

async fn keycloak_users(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(realm): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(r) = gate(&s, Api::AdminUsers) {
        return r;
    }
    if let Err(r) = keycloak_auth(&s, &headers, &realm) {
        return r;
    }
    let q = query_map(raw);
    let first = q
        .get("first")
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0)
        .max(0) as usize;
    let max = q
        .get("max")
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(100)
        .max(0) as usize;
    // Only `briefRepresentation=false` brings `attributes`.
    let full = q.get("briefRepresentation").is_some_and(|b| b == "false");
    let mut state = s.lock();
    let idx = order(&mut state, Order::Username);
    let records: Vec<Value> = idx
        .iter()
        .skip(first)
        .take(max)
        .map(|i| record(&s, &state, &state.users[*i as usize], full))
        .collect();
    json_response(StatusCode::OK, &Value::Array(records))
}

fn keycloak_user_not_found() -> Response {
    json_response(StatusCode::NOT_FOUND, &json!({"error": "User not found"}))
}

/// `GET /admin/realms/{realm}/users/{id}`: the full representation.
async fn keycloak_get_user(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((realm, id)): Path<(String, String)>,
) -> Response {
    if let Err(r) = gate(&s, Api::AdminUser) {
        return r;
    }
    if let Err(r) = keycloak_auth(&s, &headers, &realm) {
        return r;
    }
    let state = s.lock();
    match state.users.iter().find(|u| u.user.sub == id) {
        Some(u) => json_response(StatusCode::OK, &record(&s, &state, u, true)),
        None => keycloak_user_not_found(),
    }
}

/// `PUT /admin/realms/{realm}/users/{id}`: there is no PATCH. `attributes`
/// is replaced whole, and since Keycloak 24 `firstName`, `lastName` and
/// `email` are cleared when the representation leaves them out
/// (keycloak/keycloak#28220); other fields left out keep their values.
/// 204 without a body.
async fn keycloak_put_user(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((realm, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Err(r) = gate(&s, Api::AdminUser) {
        return r;
    }
    if let Err(r) = keycloak_auth(&s, &headers, &realm) {
        return r;
    }
    let Ok(Value::Object(rep)) = serde_json::from_slice::<Value>(&body) else {
        return json_response(StatusCode::BAD_REQUEST, &json!({"error": "unknown_error"}));
    };
    let mut state = s.lock();
    let Some(pos) = state.users.iter().position(|u| u.user.sub == id) else {
        return keycloak_user_not_found();
    };
    let mut rec = record(&s, &state, &state.users[pos], true);
    let obj = rec.as_object_mut().expect("object");
    for replaced in ["attributes", "firstName", "lastName", "email"] {
        match rep.get(replaced) {
            Some(v) if !v.is_null() => {
                obj.insert(replaced.into(), v.clone());
            }
            _ => {
                obj.remove(replaced);
            }
        }
    }
    for (k, v) in &rep {
        let kept = [
            "id",
            "createdTimestamp",
            "access",
            "attributes",
            "firstName",
            "lastName",
            "email",
        ];
        if !kept.contains(&k.as_str()) && !v.is_null() {
            obj.insert(k.clone(), v.clone());
        }
    }
    commit_record(s.flavor, &mut state, pos, rec);
    record_write(&mut state, Api::AdminUser, &id, Value::Object(rep));
    StatusCode::NO_CONTENT.into_response()
}

async fn keycloak_users_count(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(realm): Path<String>,
) -> Response {
    if let Err(r) = gate(&s, Api::AdminUsersCount) {
        return r;
    }
    if let Err(r) = keycloak_auth(&s, &headers, &realm) {
        return r;
    }
    let n = s.lock().users.len();
    json_response(StatusCode::OK, &json!(n))
}

// ---------------------------------------------------------------------------
// Cognito: ListUsers and SigV4
// ---------------------------------------------------------------------------

fn sha256_hex(data: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

/// RFC 3986 unreserved characters stay, everything else is `%XX` (SigV4's
/// `UriEncode`).
fn aws_uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// SigV4's canonical request (AWS General Reference, "Create a canonical
/// request"): method, URI-encoded path (encoded twice for services other
/// than S3), sorted and encoded query, `name:value` lines for the signed
/// headers (lower-case names, values trimmed with inner runs of spaces
/// collapsed), the signed-header list, and the hex SHA-256 of the body.
/// `headers` are (name, value) pairs, a name given more than once has its
/// values joined with commas.
pub fn aws_canonical_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    signed_headers: &[&str],
    body: &[u8],
) -> String {
    let path = if path.is_empty() { "/" } else { path };
    let uri = aws_uri_encode(&aws_uri_encode(path, true), true);
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (aws_uri_encode(&k, false), aws_uri_encode(&v, false)))
        .collect();
    pairs.sort();
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut canonical_headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    format!(
        "{method}\n{uri}\n{query}\n{canonical_headers}\n{}\n{}",
        signed_headers.join(";"),
        sha256_hex(body)
    )
}

/// SigV4's signature over a canonical request: the string to sign
/// (`AWS4-HMAC-SHA256`, the request time, the credential scope, the hex
/// SHA-256 of the canonical request) HMAC'd with the key derived from the
/// secret through the date, region, service and `aws4_request`.
pub fn aws_sigv4_signature(
    secret: &str,
    amz_date: &str,
    region: &str,
    service: &str,
    canonical_request: &str,
) -> String {
    let date = &amz_date[..8.min(amz_date.len())];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    let k_signing = hmac_sha256(&k_service, b"aws4_request");
    hex(&hmac_sha256(&k_signing, string_to_sign.as_bytes()))
}

/// The headers of a SigV4-signed AWS JSON 1.1 `POST {url}` to Cognito with
/// `target` and `body` (`X-Amz-Date` now): `Content-Type`, `X-Amz-Target`,
/// `X-Amz-Date`, `Authorization`. `Host` is signed as reqwest sends it.
pub fn sign_cognito_request(url: &str, target: &str, body: &[u8]) -> Vec<(String, String)> {
    let amz_date = {
        let iso = iso8601(now());
        format!(
            "{}{}{}T{}{}{}Z",
            &iso[0..4],
            &iso[5..7],
            &iso[8..10],
            &iso[11..13],
            &iso[14..16],
            &iso[17..19]
        )
    };
    sign_cognito_request_at(url, target, body, &amz_date, AWS_SECRET_ACCESS_KEY)
}

/// [`sign_cognito_request`] at a given `X-Amz-Date` with a given secret.
pub fn sign_cognito_request_at(
    url: &str,
    target: &str,
    body: &[u8],
    amz_date: &str,
    secret: &str,
) -> Vec<(String, String)> {
    let url = url::Url::parse(url).expect("an absolute URL");
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let mut headers = vec![
        (
            "content-type".to_string(),
            "application/x-amz-json-1.1".to_string(),
        ),
        ("host".to_string(), host),
        ("x-amz-date".to_string(), amz_date.to_string()),
        ("x-amz-target".to_string(), target.to_string()),
    ];
    let signed = ["content-type", "host", "x-amz-date", "x-amz-target"];
    let canonical = aws_canonical_request(
        "POST",
        url.path(),
        url.query().unwrap_or(""),
        &headers,
        &signed,
        body,
    );
    let signature = aws_sigv4_signature(
        secret,
        amz_date,
        COGNITO_REGION,
        COGNITO_SERVICE,
        &canonical,
    );
    headers.push((
        "authorization".to_string(),
        format!(
            "AWS4-HMAC-SHA256 Credential={AWS_ACCESS_KEY_ID}/{}/{COGNITO_REGION}/{COGNITO_SERVICE}/aws4_request, SignedHeaders={}, Signature={signature}",
            &amz_date[..8],
            signed.join(";")
        ),
    ));
    headers.retain(|(n, _)| n != "host");
    headers
}

/// `YYYYMMDDTHHMMSSZ` → epoch seconds.
fn parse_amz_date(d: &str) -> Option<i64> {
    if d.len() != 16 || !d.ends_with('Z') || d.as_bytes()[8] != b'T' {
        return None;
    }
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &d[9..11],
        &d[11..13],
        &d[13..15]
    );
    parse_iso_ms(&iso).map(|ms| ms / 1000)
}

/// Checks a request's SigV4 `Authorization` as AWS does, with AWS's error
/// for each way it can be wrong (400 for these on its JSON APIs, 403 for a
/// missing one, as AWS's common errors list `MissingAuthenticationToken`).
fn verify_sigv4(
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Response> {
    let bad = |kind: &str, message: &str| aws_error(StatusCode::BAD_REQUEST, kind, message);
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(aws_error(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    let Some(rest) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return Err(bad(
            "IncompleteSignatureException",
            &format!(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization={auth}"
            ),
        ));
    };
    let mut parts: HashMap<&str, &str> = HashMap::new();
    for part in rest.split(',') {
        if let Some((k, v)) = part.trim().split_once('=') {
            parts.insert(k.trim(), v.trim());
        }
    }
    for required in ["Credential", "SignedHeaders", "Signature"] {
        if !parts.contains_key(required) {
            return Err(bad(
                "IncompleteSignatureException",
                &format!(
                    "Authorization header requires '{required}' parameter. Authorization={auth}"
                ),
            ));
        }
    }
    let Some(amz_date) = headers.get("x-amz-date").and_then(|v| v.to_str().ok()) else {
        return Err(bad(
            "IncompleteSignatureException",
            &format!(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization={auth}"
            ),
        ));
    };
    let credential: Vec<&str> = parts["Credential"].split('/').collect();
    if credential.len() != 5 {
        return Err(bad(
            "IncompleteSignatureException",
            &format!(
                "Credential should have at least 5 slash-separated parts: {}",
                parts["Credential"]
            ),
        ));
    }
    let (key_id, date, region, service, terminator) = (
        credential[0],
        credential[1],
        credential[2],
        credential[3],
        credential[4],
    );
    if key_id != AWS_ACCESS_KEY_ID {
        return Err(bad(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    if terminator != "aws4_request" {
        return Err(bad(
            "InvalidSignatureException",
            &format!(
                "Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'."
            ),
        ));
    }
    if region != COGNITO_REGION {
        return Err(bad(
            "InvalidSignatureException",
            &format!("Credential should be scoped to a valid region, not '{region}'. "),
        ));
    }
    if service != COGNITO_SERVICE {
        return Err(bad(
            "InvalidSignatureException",
            &format!("Credential should be scoped to correct service: '{COGNITO_SERVICE}'. "),
        ));
    }
    if !amz_date.starts_with(date) {
        return Err(bad(
            "InvalidSignatureException",
            &format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{date}' != '{}', from '{amz_date}'.",
                &amz_date[..8.min(amz_date.len())]
            ),
        ));
    }
    let Some(signed_at) = parse_amz_date(amz_date) else {
        return Err(bad(
            "IncompleteSignatureException",
            &format!("Date must be in ISO-8601 'basic format'. Got '{amz_date}'."),
        ));
    };
    // A signature is good for five minutes either side of the server's clock.
    if (now() - signed_at).abs() > 300 {
        return Err(bad(
            "InvalidSignatureException",
            &format!(
                "Signature expired: {amz_date} is now earlier or later than the server time by more than 5 min."
            ),
        ));
    }
    let signed: Vec<&str> = parts["SignedHeaders"].split(';').collect();
    if !signed.contains(&"host") {
        return Err(bad(
            "InvalidSignatureException",
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    let pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let canonical = aws_canonical_request(
        method.as_str(),
        uri.path(),
        uri.query().unwrap_or(""),
        &pairs,
        &signed,
        body,
    );
    let expected =
        aws_sigv4_signature(AWS_SECRET_ACCESS_KEY, amz_date, region, service, &canonical);
    let given = parts["Signature"];
    if !subtle_eq(expected.as_bytes(), given.as_bytes()) {
        return Err(bad(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        ));
    }
    Ok(())
}

/// A constant-time comparison, as a signature check should be.
fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `ListUsers`, after SigV4 and the gate.
pub(super) fn list_users(
    s: &Shared,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let info = match gate(s, Api::ListUsers) {
        Ok(info) => info,
        Err(r) => return r,
    };
    if let Err(r) = verify_sigv4(&Method::POST, uri, headers, body) {
        return r;
    }
    with_rate_headers(s, list_users_page(s, headers, body), info)
}

/// `AdminUpdateUserAttributes`, after the gate and SigV4: `Username` is the
/// user name or an alias (here the email, which is also the user name, or
/// the `sub`); every attribute must be in the pool's schema (standard, or
/// a declared `custom:` one). Answers `{}`.
pub(super) fn admin_update_user_attributes(
    s: &Shared,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if let Err(r) = gate(s, Api::AdminUpdateUserAttributes) {
        return r;
    }
    if let Err(r) = verify_sigv4(&Method::POST, uri, headers, body) {
        return r;
    }
    let bad = |kind: &str, message: &str| aws_error(StatusCode::BAD_REQUEST, kind, message);
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return bad("SerializationException", "");
    };
    if request["UserPoolId"].as_str() != Some(COGNITO_POOL_ID) {
        return bad(
            "ResourceNotFoundException",
            &format!("User pool {} does not exist.", request["UserPoolId"]),
        );
    }
    let (Some(username), Some(updates)) = (
        request["Username"].as_str(),
        request["UserAttributes"].as_array(),
    ) else {
        return bad(
            "InvalidParameterException",
            "1 validation error detected: Value null at 'userAttributes' failed to satisfy constraint: Member must not be null",
        );
    };
    let mut state = s.lock();
    let Some(pos) = state
        .users
        .iter()
        .position(|u| u.user.sub == username || u.user.email.eq_ignore_ascii_case(username))
    else {
        return bad("UserNotFoundException", "User does not exist.");
    };
    let mut rec = record(s, &state, &state.users[pos], true);
    let attrs = rec["Attributes"].as_array_mut().expect("attributes");
    for update in updates {
        let (Some(name), value) = (update["Name"].as_str(), update["Value"].as_str()) else {
            return bad("InvalidParameterException", "Attribute name is missing.");
        };
        let known = !name.starts_with("custom:")
            || COGNITO_CUSTOM_ATTRIBUTES.contains(&name)
            || attrs.iter().any(|a| a["Name"] == name);
        if !known || name == "sub" {
            return bad(
                "InvalidParameterException",
                "Attribute does not exist in the schema.\n",
            );
        }
        attrs.retain(|a| a["Name"] != name);
        // A blank value deletes the attribute.
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            attrs.push(json!({"Name": name, "Value": v}));
        }
    }
    let sub = state.users[pos].user.sub.clone();
    commit_record(s.flavor, &mut state, pos, rec);
    record_write(&mut state, Api::AdminUpdateUserAttributes, &sub, request);
    aws_json(StatusCode::OK, &json!({}))
}

fn list_users_page(s: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    let bad = |kind: &str, message: &str| aws_error(StatusCode::BAD_REQUEST, kind, message);
    let invalid = |message: &str| bad("InvalidParameterException", message);
    let json_1_1 = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-amz-json-1.1"));
    let request = serde_json::from_slice::<Value>(body);
    let Some(request) = request.ok().filter(|_| json_1_1).filter(Value::is_object) else {
        return bad("SerializationException", "");
    };
    let Some(pool) = request.get("UserPoolId").and_then(Value::as_str) else {
        return invalid(
            "1 validation error detected: Value null at 'userPoolId' failed to satisfy constraint: Member must not be null",
        );
    };
    if pool != COGNITO_POOL_ID {
        return bad(
            "ResourceNotFoundException",
            &format!("User pool {pool} does not exist."),
        );
    }
    let limit = match request.get("Limit") {
        None | Some(Value::Null) => 60,
        Some(v) => match v.as_i64() {
            Some(n) if n > 60 => {
                return invalid(&format!(
                    "1 validation error detected: Value '{n}' at 'limit' failed to satisfy constraint: Member must have value less than or equal to 60"
                ));
            }
            Some(n) if n < 0 => {
                return invalid(&format!(
                    "1 validation error detected: Value '{n}' at 'limit' failed to satisfy constraint: Member must have value greater than or equal to 0"
                ));
            }
            Some(0) => 60,
            Some(n) => n as usize,
            None => return bad("SerializationException", ""),
        },
    };
    let filter = match request
        .get("Filter")
        .and_then(Value::as_str)
        .filter(|f| !f.trim().is_empty())
    {
        None => None,
        Some(f) => match parse_cognito_filter(f) {
            Some(parsed) => Some(parsed),
            None => return invalid("Invalid search filter."),
        },
    };
    let after = match request.get("PaginationToken").and_then(Value::as_str) {
        None => None,
        Some(token) => match URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| t.strip_prefix("v1:").map(String::from))
        {
            Some(sub) => Some(sub),
            None => return invalid("Invalid pagination token."),
        },
    };
    let wanted: Option<HashSet<String>> = request
        .get("AttributesToGet")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        });
    let mut state = s.lock();
    let idx = order(&mut state, Order::Id);
    let users = &state.users;
    let start = match &after {
        Some(sub) => idx.partition_point(|i| users[*i as usize].user.sub.as_str() <= sub.as_str()),
        None => 0,
    };
    let mut page: Vec<Value> = vec![];
    let mut last_sub = None;
    let mut more = false;
    for i in &idx[start..] {
        let u = &users[*i as usize];
        let rec = record(s, &state, u, true);
        if let Some(f) = &filter
            && !f.matches(&rec)
        {
            continue;
        }
        if page.len() == limit {
            more = true;
            break;
        }
        last_sub = Some(u.user.sub.clone());
        page.push(rec);
    }
    if let Some(wanted) = &wanted {
        for rec in &mut page {
            if let Some(attrs) = rec["Attributes"].as_array_mut() {
                attrs.retain(|a| a["Name"].as_str().is_some_and(|n| wanted.contains(n)));
            }
        }
    }
    let mut body = json!({"Users": page});
    if more && let Some(sub) = last_sub {
        body["PaginationToken"] = json!(URL_SAFE_NO_PAD.encode(format!("v1:{sub}")));
    }
    aws_json(StatusCode::OK, &body)
}

/// A `ListUsers` filter: `attribute = "value"` or `attribute ^= "prefix"`.
struct CognitoFilter {
    attribute: String,
    prefix: bool,
    value: String,
}

fn parse_cognito_filter(f: &str) -> Option<CognitoFilter> {
    let (attribute, prefix, value) = if let Some((a, v)) = f.split_once("^=") {
        (a, true, v)
    } else {
        let (a, v) = f.split_once('=')?;
        (a, false, v)
    };
    let attribute = attribute.trim().trim_matches('"').to_string();
    const SEARCHABLE: [&str; 10] = [
        "username",
        "email",
        "phone_number",
        "name",
        "given_name",
        "family_name",
        "preferred_username",
        "cognito:user_status",
        "status",
        "sub",
    ];
    if !SEARCHABLE.contains(&attribute.as_str()) {
        return None;
    }
    let value = value.trim();
    if value.len() < 2 || !value.starts_with('"') || !value.ends_with('"') {
        return None;
    }
    Some(CognitoFilter {
        attribute,
        prefix,
        value: value[1..value.len() - 1].to_string(),
    })
}

impl CognitoFilter {
    fn matches(&self, rec: &Value) -> bool {
        let actual = match self.attribute.as_str() {
            "username" => rec["Username"].as_str().map(String::from),
            "cognito:user_status" => rec["UserStatus"].as_str().map(String::from),
            "status" => Some(
                if rec["Enabled"] == json!(true) {
                    "Enabled"
                } else {
                    "Disabled"
                }
                .to_string(),
            ),
            name => rec["Attributes"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["Name"] == name))
                .and_then(|x| x["Value"].as_str())
                .map(String::from),
        };
        actual.is_some_and(|a| {
            if self.prefix {
                a.starts_with(&self.value)
            } else {
                a == self.value
            }
        })
    }
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
