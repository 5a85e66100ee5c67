//! Auth0's Management API v2: `/api/v2/users` (Lucene `q`, the 1,000-result
//! cap), one user's `GET`, `PATCH` and `DELETE /api/v2/users/{id}`, `POST
//! /api/v2/users`, `/api/v2/users-by-email`, and user-export jobs with their
//! gzipped NDJSON or CSV download.

use super::*;

pub(super) fn auth0_record(stored: &StoredUser) -> Value {
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

pub(super) async fn auth0_users(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    gated(&s, Api::Users, || {
        auth0_users_page(&s, &headers, query_map(raw))
    })
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
/// (a nested object is replaced whole; `null` deletes a key). A `password`
/// and `blocked` change the user the fake's own login sees.
pub(super) async fn auth0_patch_user(
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
    // A connection, if named, is the user's database connection, and a
    // password meets its policy (Management API v2, "Update a User";
    // "Password Strength in Auth0 Database Connections").
    let password = match patch.get("password") {
        None => None,
        Some(Value::String(p)) => Some(p.clone()),
        Some(_) => return invalid("Expected type string but found type other for password"),
    };
    if let Some(c) = patch.get("connection")
        && c.as_str() != Some(AUTH0_DEFAULT_REALM)
    {
        return auth0_error(
            StatusCode::BAD_REQUEST,
            "The connection does not exist.",
            Some("inexistent_connection"),
        );
    }
    if let Some(p) = &password
        && check_password_policy(&state, p).is_err()
    {
        return auth0_error(
            StatusCode::BAD_REQUEST,
            "PasswordStrengthError: Password is too weak",
            None,
        );
    }
    if let Some(b) = patch.get("blocked")
        && !b.is_boolean()
    {
        return invalid("Expected type boolean but found type other for blocked");
    }
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
    if let Some(p) = password {
        state.users[pos].user.password = p;
    }
    if let Some(b) = patch.get("blocked").and_then(Value::as_bool) {
        state.users[pos].user.blocked = b;
    }
    record_write(&mut state, Api::PatchUser, &id, Value::Object(patch));
    let answer = record(&s, &state, &state.users[pos], true);
    drop(state);
    with_rate_headers(&s, json_response(StatusCode::OK, &answer), info)
}

pub(super) async fn auth0_create_export(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    gated(&s, Api::UsersExport, || create_export(&s, &headers, &body))
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

pub(super) async fn auth0_job(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    gated(&s, Api::Job, || poll_job(&s, &headers, &id))
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
pub(super) async fn export_download(
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
// Auth0: one user (get, create, delete) and users-by-email
// ---------------------------------------------------------------------------

/// Auth0's `fields` and `include_fields` query parameters on user reads
/// (Management API v2, "Get a User", "Search Users by Email"): a
/// comma-separated list of root attributes to keep (`include_fields=true`,
/// the default) or to leave out (`include_fields=false`).
fn select_fields(rec: Value, q: &HashMap<String, String>) -> Value {
    let Some(fields) = q.get("fields").filter(|f| !f.trim().is_empty()) else {
        return rec;
    };
    let fields: HashSet<&str> = fields.split(',').map(str::trim).collect();
    let include = q.get("include_fields").is_none_or(|v| v != "false");
    match rec {
        Value::Object(obj) => Value::Object(
            obj.into_iter()
                .filter(|(k, _)| fields.contains(k.as_str()) == include)
                .collect(),
        ),
        other => other,
    }
}

/// Auth0's `GET /api/v2/users/{id}` (Management API v2, "Get a User"): the
/// record as `/api/v2/users` lists it, or 404 `inexistent_user`.
pub(super) async fn auth0_get_user(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    gated(&s, Api::GetUser, || {
        get_user(&s, &headers, &id, &query_map(raw))
    })
}

fn get_user(s: &Shared, headers: &HeaderMap, id: &str, q: &HashMap<String, String>) -> Response {
    if let Err(r) = auth0_auth(s, headers) {
        return r;
    }
    let state = s.lock();
    let Some(stored) = state.users.iter().find(|u| u.user.sub == id) else {
        return auth0_error(
            StatusCode::NOT_FOUND,
            "The user does not exist.",
            Some("inexistent_user"),
        );
    };
    let rec = record(s, &state, stored, true);
    drop(state);
    json_response(StatusCode::OK, &select_fields(rec, q))
}

/// Auth0's `GET /api/v2/users-by-email?email=…` (Management API v2, "Search
/// Users by Email"): every user with that email, compared without regard
/// to case as Auth0 stores emails lowercased; `[]` when none.
pub(super) async fn auth0_users_by_email(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    gated(&s, Api::UsersByEmail, || {
        users_by_email(&s, &headers, &query_map(raw))
    })
}

fn users_by_email(s: &Shared, headers: &HeaderMap, q: &HashMap<String, String>) -> Response {
    if let Err(r) = auth0_auth(s, headers) {
        return r;
    }
    let Some(email) = q.get("email").filter(|e| !e.is_empty()) else {
        return auth0_error(
            StatusCode::BAD_REQUEST,
            "Query validation error: 'Missing required property: email' on property email (Email address to search for (case-sensitive)).",
            Some("invalid_query_string"),
        );
    };
    let state = s.lock();
    let found: Vec<Value> = state
        .users
        .iter()
        .filter(|u| u.user.email.eq_ignore_ascii_case(email.trim()))
        .map(|u| select_fields(record(s, &state, u, true), q))
        .collect();
    drop(state);
    json_response(StatusCode::OK, &Value::Array(found))
}

/// The root attributes `POST /api/v2/users` takes (Management API v2,
/// "Create a User").
const AUTH0_CREATABLE: [&str; 17] = [
    "app_metadata",
    "blocked",
    "connection",
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
    "user_id",
    "user_metadata",
    "username",
    "verify_email",
];

/// Auth0's `POST /api/v2/users` (Management API v2, "Create a User") into
/// the fake's one database connection: 201 with the new record, whose
/// `user_id` is `auth0|` and 24 hex digits, or `auth0|{user_id}` when the
/// body names one. The user can then log in at the fake with the password.
pub(super) async fn auth0_create_user(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    gated(&s, Api::CreateUser, || create_user(&s, &headers, &body))
}

fn create_user(s: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Err(r) = auth0_auth(s, headers) {
        return r;
    }
    let invalid = |message: &str| {
        auth0_error(
            StatusCode::BAD_REQUEST,
            &format!("Payload validation error: '{message}'."),
            Some("invalid_body"),
        )
    };
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        return invalid("Invalid JSON");
    };
    if let Some(extra) = req.keys().find(|k| !AUTH0_CREATABLE.contains(&k.as_str())) {
        return invalid(&format!("Additional properties not allowed: {extra}"));
    }
    for (key, value) in &req {
        let expected = match key.as_str() {
            "blocked" | "email_verified" | "phone_verified" | "verify_email" => {
                (!value.is_boolean()).then_some("boolean")
            }
            "app_metadata" | "user_metadata" => (!value.is_object()).then_some("object"),
            _ => (!value.is_string()).then_some("string"),
        };
        if let Some(expected) = expected {
            return invalid(&format!(
                "Expected type {expected} but found type {} on property {key}",
                json_type(value)
            ));
        }
    }
    let text = |key: &str| req.get(key).and_then(Value::as_str).map(String::from);
    let flag = |key: &str| req.get(key).and_then(Value::as_bool);
    let Some(connection) = text("connection") else {
        return invalid("Missing required property: connection");
    };
    if connection != AUTH0_DEFAULT_REALM {
        return auth0_error(
            StatusCode::BAD_REQUEST,
            "The connection does not exist.",
            Some("inexistent_connection"),
        );
    }
    // A database connection needs an email (the fake's requires no
    // username) and a password.
    let Some(email) = text("email") else {
        return invalid("Missing required property: email");
    };
    if !email.contains('@') || email.trim() != email {
        return invalid(&format!(
            "Object didn't pass validation for format email: {email}"
        ));
    }
    let Some(password) = text("password") else {
        return invalid("Missing required property: password");
    };
    // Auth0 keeps a database user's email in lower case.
    let email = email.to_lowercase();
    let mut state = s.lock();
    // Auth0 answers a weak password without an errorCode ("Password
    // Strength in Auth0 Database Connections"), as the PATCH path does.
    if check_password_policy(&state, &password).is_err() {
        return auth0_error(
            StatusCode::BAD_REQUEST,
            "PasswordStrengthError: Password is too weak",
            None,
        );
    }
    let local = text("user_id").unwrap_or_else(|| hex(&random_bytes(12)));
    let sub = format!("auth0|{local}");
    let taken = state
        .users
        .iter()
        .any(|u| u.user.sub == sub || u.user.email.eq_ignore_ascii_case(&email));
    if taken {
        return auth0_error(
            StatusCode::CONFLICT,
            "The user already exists.",
            Some("auth0_idp_error"),
        );
    }
    let mut user = FakeUser::new(&sub, &email, &password);
    // Auth0 leaves a new database user's email unverified unless told.
    user.email_verified = flag("email_verified").unwrap_or(false);
    user.blocked = flag("blocked").unwrap_or(false);
    if let Some(name) = text("name") {
        user.name = Some(name);
    }
    if let Some(nickname) = text("nickname") {
        user.nickname = Some(nickname);
    }
    if let Some(picture) = text("picture") {
        user.picture = Some(picture);
    }
    for key in ["app_metadata", "user_metadata"] {
        if let Some(v) = req.get(key) {
            let target = if key == "app_metadata" {
                &mut user.app_metadata
            } else {
                &mut user.user_metadata
            };
            *target = v.clone();
        }
    }
    let mut stored = StoredUser {
        user,
        updated_at: now(),
        meta: UserMeta::now(),
    };
    // The record holds what was given: no names split out of `name`, and
    // the attributes `FakeUser` does not carry.
    let mut rec = auth0_record(&stored);
    let obj = rec.as_object_mut().expect("object");
    obj.remove("given_name");
    obj.remove("family_name");
    for key in [
        "given_name",
        "family_name",
        "username",
        "phone_number",
        "phone_verified",
    ] {
        if let Some(v) = req.get(key) {
            obj.insert(key.into(), v.clone());
        }
    }
    stored.meta.record = Some(Arc::new(rec.clone()));
    state.users.push(stored);
    state.mgmt.invalidate();
    record_write(&mut state, Api::CreateUser, &sub, Value::Object(req));
    drop(state);
    json_response(StatusCode::CREATED, &rec)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Auth0's `DELETE /api/v2/users/{id}` (Management API v2, "Delete a
/// User"): 204 with no body, whether or not the user existed.
pub(super) async fn auth0_delete_user(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    gated(&s, Api::DeleteUser, || delete_user(&s, &headers, &id))
}

fn delete_user(s: &Shared, headers: &HeaderMap, id: &str) -> Response {
    if let Err(r) = auth0_auth(s, headers) {
        return r;
    }
    let mut state = s.lock();
    let before = state.users.len();
    state.users.retain(|u| u.user.sub != id);
    if state.users.len() != before {
        state.mgmt.invalidate();
    }
    record_write(&mut state, Api::DeleteUser, id, Value::Null);
    StatusCode::NO_CONTENT.into_response()
}
