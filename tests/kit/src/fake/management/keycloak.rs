//! Keycloak's Admin REST API: `/admin/realms/{realm}/users` (paged with
//! `first` and `max`, `briefRepresentation`), its `count`, and `GET`/`PUT`
//! of one user.

use super::*;

pub(super) fn keycloak_record(stored: &StoredUser) -> Value {
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

pub(super) async fn keycloak_users(
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
pub(super) async fn keycloak_get_user(
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
pub(super) async fn keycloak_put_user(
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
    if let Some(enabled) = rep.get("enabled").and_then(Value::as_bool) {
        state.users[pos].user.blocked = !enabled;
    }
    record_write(&mut state, Api::AdminUser, &id, Value::Object(rep));
    StatusCode::NO_CONTENT.into_response()
}

/// `PUT /admin/realms/{realm}/users/{id}/reset-password` (Keycloak Admin
/// REST API, "Users"): a CredentialRepresentation of `type` `password`;
/// the realm's password policy refuses a short one with 400. 204 without a
/// body.
pub(super) async fn keycloak_reset_password(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((realm, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Err(r) = gate(&s, Api::AdminResetPassword) {
        return r;
    }
    if let Err(r) = keycloak_auth(&s, &headers, &realm) {
        return r;
    }
    let bad = |error: &str, description: &str| {
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": error, "error_description": description}),
        )
    };
    let Ok(Value::Object(cred)) = serde_json::from_slice::<Value>(&body) else {
        return bad("unknown_error", "Unrecognized request body");
    };
    let (Some("password"), Some(value)) = (cred["type"].as_str(), cred["value"].as_str()) else {
        return bad(
            "invalid_request",
            "Credential type must be password and have a value",
        );
    };
    let mut state = s.lock();
    let Some(pos) = state.users.iter().position(|u| u.user.sub == id) else {
        return keycloak_user_not_found();
    };
    if let Err(min) = check_password_policy(&state, value) {
        return bad(
            "invalidPasswordMinLengthMessage",
            &format!("Invalid password: minimum length {min}."),
        );
    }
    state.users[pos].user.password = value.to_string();
    record_write(
        &mut state,
        Api::AdminResetPassword,
        &id,
        Value::Object(cred),
    );
    StatusCode::NO_CONTENT.into_response()
}

pub(super) async fn keycloak_users_count(
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
