//! The users endpoints (Auth0 Management API v2, "Users", "Users by
//! Email", "Tickets"): what each needs of the token, what it reads and
//! writes, and the answers Auth0 gives.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::access::{Backend, Buckets};
use super::adapter::{self, Primary};
use super::error::ApiError;
use super::search::{self, Fields, ListParams};
use super::user_json::{DEFAULT_CONNECTION, user_json};
use super::{PREFIX, Scope};
use crate::state::AppState;
use crate::store::jobs::ProfileEdit;
use crate::store::{AuditEvent, NewUser, NewUserExtras, Profile, User};
use crate::upstream::management::writes::Change;

pub fn router(state: &AppState) -> Router<AppState> {
    let limits = &state.settings.management_api;
    let buckets = Arc::new(Buckets::new(limits.requests_per_second, limits.burst));
    Router::new()
        .route(&format!("{PREFIX}/users"), get(list).post(create))
        .route(
            &format!("{PREFIX}/users/{{id}}"),
            get(read).patch(update).delete(remove),
        )
        .route(&format!("{PREFIX}/users-by-email"), get(by_email))
        .route(&format!("{PREFIX}/tickets/password-change"), post(ticket))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::access::middleware,
        ))
        .layer(Extension(buckets))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
}

/// The database connection this API stands for: `[upstream] connection`,
/// or Auth0's default name.
fn connection(state: &AppState) -> &str {
    state
        .settings
        .upstream
        .as_ref()
        .and_then(|u| u.connection.as_deref())
        .unwrap_or(DEFAULT_CONNECTION)
}

/// A user as the answer shows it, with their linked identities.
async fn shown(state: &AppState, user: &User, fields: &Fields) -> Result<Value, ApiError> {
    // Only a user who came from an upstream can have linked identities.
    let identities = if user.upstream.is_some() {
        state.db.user_identities(&user.id).await?
    } else {
        Vec::new()
    };
    Ok(Value::Object(fields.apply(user_json(
        user,
        &identities,
        connection(state),
    ))))
}

async fn shown_all(
    state: &AppState,
    users: &[User],
    fields: &Fields,
) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::with_capacity(users.len());
    for user in users {
        out.push(shown(state, user, fields).await?);
    }
    Ok(out)
}

/// A JSON body, refused in Auth0's words when it is not the expected shape.
fn body<T: DeserializeOwned>(bytes: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = bytes.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request entity too large",
                "payload_too_large",
            )
        } else {
            ApiError::bad_request("Invalid request body", "invalid_body")
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            format!(
                "Payload validation error: '{}'.",
                without_values(&e.to_string())
            ),
            "invalid_body",
        )
    })
}

/// serde's message without the position and without the values it quotes
/// in backticks (a mistyped password must not come back in an answer):
/// "invalid type: integer `123`, expected a string" names the type only.
fn without_values(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or_default();
    if !message.starts_with("invalid ") {
        return message.to_string();
    }
    message
        .split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, part)| part)
        .collect::<Vec<_>>()
        .join("…")
}

fn event(kind: &str, backend: &Backend, user_id: &str) -> AuditEvent {
    AuditEvent::new(kind, Some(user_id), Some(&backend.client_id))
        .with_actor(format!("client:{}", backend.client_id))
}

#[derive(Deserialize)]
struct FieldParams {
    fields: Option<String>,
    include_fields: Option<String>,
}

impl FieldParams {
    fn fields(&self) -> Result<Fields, ApiError> {
        Fields::parse(self.fields.as_deref(), self.include_fields.as_deref())
    }
}

/// `GET /api/v2/users`: a page of the users matching `q`, as a list or,
/// with `include_totals=true`, as `{start, limit, length, total, users}`.
async fn list(
    State(state): State<AppState>,
    Extension(backend): Extension<Backend>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    backend.require(Scope::ReadUsers)?;
    let (query, totals) = search::query(&params)?;
    let fields = Fields::parse(params.fields.as_deref(), params.include_fields.as_deref())?;
    let (users, total) = state.db.query_users(&query).await?;
    let shown_users = shown_all(&state, &users, &fields).await?;
    Ok(if totals {
        Json(json!({
            "start": query.offset,
            "limit": query.limit,
            "length": shown_users.len(),
            "total": total.unwrap_or_default(),
            "users": shown_users,
        }))
        .into_response()
    } else {
        Json(shown_users).into_response()
    })
}

/// `GET /api/v2/users/{id}`.
async fn read(
    State(state): State<AppState>,
    Extension(backend): Extension<Backend>,
    Path(id): Path<String>,
    Query(params): Query<FieldParams>,
) -> Result<Json<Value>, ApiError> {
    backend.require(Scope::ReadUsers)?;
    let fields = params.fields()?;
    let user = adapter::find(&state, &backend.client_id, &id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(shown(&state, &user, &fields).await?))
}

#[derive(Deserialize)]
struct EmailParams {
    email: Option<String>,
    fields: Option<String>,
    include_fields: Option<String>,
}

/// `GET /api/v2/users-by-email?email=`: every user with that email
/// (exact, case-insensitive), as a list.
async fn by_email(
    State(state): State<AppState>,
    Extension(backend): Extension<Backend>,
    Query(params): Query<EmailParams>,
) -> Result<Json<Vec<Value>>, ApiError> {
    backend.require(Scope::ReadUsers)?;
    let fields = Fields::parse(params.fields.as_deref(), params.include_fields.as_deref())?;
    let email = params
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(
                "Query validation error: 'Missing required property: email' on property email.",
                "invalid_query_string",
            )
        })?;
    let users = adapter::find_by_email(&state, &backend.client_id, email).await?;
    Ok(Json(shown_all(&state, &users, &fields).await?))
}

/// The properties of a user that `POST` and `PATCH` take (Auth0 "Create a
/// User", "Update a User"); any other is refused, as Auth0 refuses
/// additional properties.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    connection: Option<String>,
    email: Option<String>,
    email_verified: Option<bool>,
    name: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    nickname: Option<String>,
    username: Option<String>,
    picture: Option<String>,
    user_metadata: Option<Map<String, Value>>,
    app_metadata: Option<Map<String, Value>>,
    blocked: Option<bool>,
    password: Option<String>,
    /// Accepted and ignored: Switchyard sends no verification email here.
    #[serde(rename = "verify_email")]
    _verify_email: Option<bool>,
    /// Accepted and ignored (Auth0 uses it to pick an email template).
    #[serde(rename = "client_id")]
    _client_id: Option<String>,
}

impl UserBody {
    fn edit(&self) -> ProfileEdit {
        ProfileEdit {
            email: self.email.clone(),
            email_verified: self.email_verified,
            name: self.name.clone(),
            given_name: self.given_name.clone(),
            family_name: self.family_name.clone(),
            nickname: self.nickname.clone(),
            user_metadata: self.user_metadata.clone(),
            app_metadata: self.app_metadata.clone(),
            blocked: self.blocked,
            password: None,
        }
    }

    /// What Switchyard cannot change on a user, refused by name.
    fn unsupported_on_update(&self) -> Option<&'static str> {
        [
            ("username", self.username.is_some()),
            ("picture", self.picture.is_some()),
        ]
        .into_iter()
        .find_map(|(name, set)| set.then_some(name))
    }
}

fn weak_password(reason: String) -> ApiError {
    ApiError::bad_request(format!("PasswordStrengthError: {reason}"), "invalid_body")
}

/// The password checked against the policy and hashed, before anything
/// is written anywhere.
async fn hashed(
    state: &AppState,
    password: &str,
    identifiers: &[&str],
) -> Result<String, ApiError> {
    state
        .passwords
        .check_policy_for(password, identifiers)
        .map_err(weak_password)?;
    state
        .passwords
        .hash(password.to_string())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "management API: password hashing failed");
            ApiError::internal()
        })
}

/// `PATCH /api/v2/users/{id}`: profile fields, metadata (merged at the
/// first level; `null` removes a key), `blocked` and `password`. The
/// upstream's part is made first (blocking) or queued with the local
/// change (outbox), so a refusal leaves both sides as they were.
async fn update(
    State(state): State<AppState>,
    Extension(backend): Extension<Backend>,
    Path(id): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    backend.require(Scope::UpdateUsers)?;
    let patch: UserBody = body(bytes)?;
    if let Some(name) = patch.unsupported_on_update() {
        return Err(ApiError::bad_request(
            format!("Payload validation error: '{name}' cannot be changed through Switchyard."),
            "operation_not_supported",
        ));
    }
    if patch.password.is_some() && patch.email.is_some() {
        // Auth0: "Cannot update password and email simultaneously".
        return Err(ApiError::bad_request(
            "Cannot update password and email simultaneously",
            "invalid_body",
        ));
    }
    let user = adapter::find(&state, &backend.client_id, &id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let mut edit = patch.edit();
    if let Some(password) = &patch.password {
        let hash = hashed(&state, password, &user.profile.login_names()).await?;
        edit.password = Some((hash, crate::password::ARGON2ID.into()));
    }
    let fields = edit.fields();
    let mut changes = Vec::new();
    if let Some(password) = &patch.password {
        changes.push(Change::Password(password));
    }
    if !fields.is_empty() {
        changes.push(Change::Profile(&fields));
    }
    if let Some(blocked) = patch.blocked {
        changes.push(Change::Blocked(blocked));
    }
    let primary = adapter::primary(&state, &backend.client_id, Some(&user)).await?;
    let queued = adapter::owe(&state, primary, &user, &changes).await?;
    if !state.db.edit_user(&user.id, &edit, &queued).await? {
        return Err(ApiError::not_found());
    }
    // The next token issued here carries the new profile at once.
    state.recent.users.forget(&user.id);
    let changed: Vec<&str> = fields
        .keys()
        .map(String::as_str)
        .chain(patch.password.as_ref().map(|_| "password"))
        .chain(patch.blocked.map(|_| "blocked"))
        .collect();
    crate::auth::record(
        &state,
        event("api.user_updated", &backend, &user.id).with_detail(json!({ "fields": changed })),
    )
    .await;
    let user = state
        .db
        .get_user(&user.id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(shown(&state, &user, &Fields::default()).await?))
}

/// `POST /api/v2/users`: a user of the database connection with a
/// password. While the upstream is the primary the user is created there
/// first (whatever `api_writes` says: the id is the upstream's to give)
/// and kept here as a pending user, who moves on their first login like
/// any other; once local is the primary, the user is created here.
async fn create(
    State(state): State<AppState>,
    Extension(backend): Extension<Backend>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    backend.require(Scope::CreateUsers)?;
    let new: UserBody = body(bytes)?;
    let missing = |name: &str| {
        ApiError::bad_request(
            format!("Payload validation error: 'Missing required property: {name}'."),
            "invalid_body",
        )
    };
    let conn = new
        .connection
        .as_deref()
        .ok_or_else(|| missing("connection"))?;
    if conn != connection(&state) {
        return Err(ApiError::bad_request(
            "The connection does not exist.",
            "inexistent_connection",
        ));
    }
    let email = new.email.clone().ok_or_else(|| missing("email"))?;
    if !email.contains('@') || email.len() > 254 {
        return Err(ApiError::bad_request(
            "Payload validation error: 'Object didn't pass validation for format email: ' on property email (The user's email).",
            "invalid_body",
        ));
    }
    let password = new.password.as_deref().ok_or_else(|| missing("password"))?;
    let mut logins = vec![email.as_str()];
    logins.extend(new.username.as_deref());
    let hash = hashed(&state, password, &logins).await?;
    if state.db.find_user_by_login(&email).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "The user already exists.",
            "auth0_idp_error",
        ));
    }
    let user = match adapter::primary(&state, &backend.client_id, None).await? {
        Primary::Upstream(_) => {
            let up = state.write_back.upstream().ok_or_else(ApiError::internal)?;
            if up.mgmt.write.create.is_none() {
                return Err(ApiError::bad_request(
                    format!(
                        "The upstream provider {} cannot be written a new user through Switchyard while it is the primary.",
                        up.provider
                    ),
                    "operation_not_supported",
                ));
            }
            let mut fields = new.edit().fields();
            fields.insert("connection".into(), Value::from(conn));
            if let Some(b) = new.blocked {
                fields.insert("blocked".into(), Value::Bool(b));
            }
            let raw = up
                .create_user(&fields, password)
                .await
                .map_err(|e| adapter::upstream_error(&state, "api_write", &e))?;
            state.metrics.upstream.count("api_write", "ok");
            adapter::adopt(&state, up, &raw).await?
        }
        Primary::Local { .. } => {
            let profile = Profile {
                email: Some(email),
                email_verified: new.email_verified.unwrap_or(false),
                username: new.username.clone(),
                name: new.name.clone(),
                given_name: new.given_name.clone(),
                family_name: new.family_name.clone(),
                nickname: new.nickname.clone(),
                picture: new.picture.clone(),
                phone_number: None,
            };
            let extras = NewUserExtras {
                user_metadata: new.user_metadata.clone().unwrap_or_default(),
                app_metadata: new.app_metadata.clone().unwrap_or_default(),
                blocked: new.blocked.unwrap_or(false),
            };
            state
                .db
                .create_user_with(
                    &NewUser { id: None, profile },
                    &extras,
                    Some((&hash, crate::password::ARGON2ID)),
                )
                .await?
        }
    };
    crate::auth::record(&state, event("api.user_created", &backend, &user.id)).await;
    let shown_user = shown(&state, &user, &Fields::default()).await?;
    Ok((StatusCode::CREATED, Json(shown_user)).into_response())
}

/// `DELETE /api/v2/users/{id}`: 204 whether or not the user existed, as
/// Auth0 answers. The user's refresh tokens stop working with it.
async fn remove(
    State(state): State<AppState>,
    Extension(backend): Extension<Backend>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    backend.require(Scope::DeleteUsers)?;
    let Some(user) = adapter::find(&state, &backend.client_id, &id).await? else {
        return Ok(StatusCode::NO_CONTENT);
    };
    let primary = adapter::primary(&state, &backend.client_id, Some(&user)).await?;
    let queued = adapter::owe(&state, primary, &user, &[Change::Delete]).await?;
    state
        .db
        .remove_user(
            &user.id,
            queued.first(),
            &event("api.user_deleted", &backend, &user.id),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct TicketBody {
    user_id: Option<String>,
    email: Option<String>,
    #[serde(flatten)]
    _rest: Map<String, Value>,
}

/// `POST /api/v2/tickets/password-change`: a link to Switchyard's own
/// reset page for the user (by `user_id`, or `email`), valid for
/// `[recovery] token_ttl_secs`.
async fn ticket(
    State(state): State<AppState>,
    Extension(backend): Extension<Backend>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    backend.require(Scope::CreateUserTickets)?;
    let asked: TicketBody = body(bytes)?;
    let user = match (&asked.user_id, &asked.email) {
        (Some(id), _) => adapter::find(&state, &backend.client_id, id).await?,
        (None, Some(email)) => adapter::find_by_email(&state, &backend.client_id, email)
            .await?
            .into_iter()
            .next(),
        (None, None) => {
            return Err(ApiError::bad_request(
                "Payload validation error: 'Missing required property: user_id'.",
                "invalid_body",
            ));
        }
    }
    .ok_or_else(ApiError::not_found)?;
    let link = crate::recovery::mint_link(
        &state,
        &user.id,
        crate::store::recovery::Purpose::Reset,
        None,
    )
    .await
    .map_err(|_| ApiError::internal())?;
    crate::auth::record(&state, event("api.password_ticket", &backend, &user.id)).await;
    Ok((StatusCode::CREATED, Json(json!({ "ticket": link }))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_of_a_body_name_types_not_values() {
        let e = serde_json::from_str::<UserBody>(r#"{"password": 12345678}"#).unwrap_err();
        let m = without_values(&e.to_string());
        assert!(!m.contains("12345678"), "{m}");
        assert!(m.contains("expected a string"), "{m}");
        let e = serde_json::from_str::<UserBody>(r#"{"colour": "red"}"#).unwrap_err();
        assert!(without_values(&e.to_string()).contains("colour"));
    }
}
