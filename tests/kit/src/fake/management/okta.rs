//! Okta's Users API: `/api/v1/users` (`search`, `filter`, the cursor only
//! in the `Link` header) and the partial profile update `POST
//! /api/v1/users/{id}`.

use super::*;

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

pub(super) fn okta_record(s: &Shared, stored: &StoredUser) -> Value {
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
pub(super) async fn okta_update_user(
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
    // `credentials.password.value`, checked against the org's password
    // policy (Okta Users API, "Update a User"; "Password policy").
    let password = match update.get("credentials") {
        None => None,
        Some(c) => match c["password"]["value"].as_str() {
            Some(p) if c.as_object().is_some_and(|o| o.len() == 1) => Some(p.to_string()),
            _ => {
                let body = json!({
                    "errorCode": "E0000001", "errorSummary": "Api validation failed: credentials",
                    "errorLink": "E0000001", "errorId": format!("oae{}", URL_SAFE_NO_PAD.encode(random_bytes(15))),
                    "errorCauses": [{"errorSummary": "credentials: The request body was not well-formed."}],
                });
                return json_response(StatusCode::BAD_REQUEST, &body);
            }
        },
    };
    if let Some(p) = &password
        && let Err(min) = check_password_policy(&state, p)
    {
        let body = json!({
            "errorCode": "E0000001", "errorSummary": "Api validation failed: password",
            "errorLink": "E0000001", "errorId": format!("oae{}", URL_SAFE_NO_PAD.encode(random_bytes(15))),
            "errorCauses": [{"errorSummary": format!(
                "password: Password requirements were not met. Password requirements: at least {min} characters."
            )}],
        });
        return json_response(StatusCode::BAD_REQUEST, &body);
    }
    let mut rec = record(&s, &state, &state.users[pos], true);
    for (k, v) in profile.into_iter().flatten() {
        rec["profile"][k.as_str()] = v.clone();
    }
    commit_record(s.flavor, &mut state, pos, rec);
    if let Some(p) = password {
        state.users[pos].user.password = p;
    }
    record_write(&mut state, Api::OktaUpdateUser, &id, Value::Object(update));
    let answer = record(&s, &state, &state.users[pos], true);
    drop(state);
    with_rate_headers(&s, json_response(StatusCode::OK, &answer), info)
}

pub(super) async fn okta_users(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    gated(&s, Api::OktaUsers, || okta_users_page(&s, &headers, raw))
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

/// `POST /api/v1/users/{id}/lifecycle/suspend` and `…/unsuspend` (Okta
/// Users API, "Suspend a User", "Unsuspend a User"): only an `ACTIVE` user
/// is suspended, only a `SUSPENDED` one unsuspended. Answers `{}`.
pub(super) async fn okta_lifecycle(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((id, operation)): Path<(String, String)>,
) -> Response {
    let info = match gate(&s, Api::OktaLifecycle) {
        Ok(info) => info,
        Err(r) => return r,
    };
    if let Err(r) = okta_authorized(&headers) {
        return r;
    }
    let (from, to, blocked) = match operation.as_str() {
        "suspend" => ("ACTIVE", "SUSPENDED", true),
        "unsuspend" => ("SUSPENDED", "ACTIVE", false),
        _ => {
            return okta_error(
                StatusCode::NOT_FOUND,
                "E0000022",
                "The endpoint does not support the provided HTTP method",
            );
        }
    };
    let mut state = s.lock();
    let Some(pos) = state.users.iter().position(|u| u.user.sub == id) else {
        return okta_error(
            StatusCode::NOT_FOUND,
            "E0000007",
            &format!("Not found: Resource not found: {id} (User)"),
        );
    };
    let mut rec = record(&s, &state, &state.users[pos], true);
    if rec["status"] != from {
        return okta_error(
            StatusCode::BAD_REQUEST,
            "E0000001",
            &format!("Api validation failed: cannot {operation} a user that is not {from}"),
        );
    }
    rec["status"] = json!(to);
    commit_record(s.flavor, &mut state, pos, rec);
    state.users[pos].user.blocked = blocked;
    record_write(
        &mut state,
        Api::OktaLifecycle,
        &id,
        json!({ "operation": operation }),
    );
    drop(state);
    with_rate_headers(&s, json_response(StatusCode::OK, &json!({})), info)
}
